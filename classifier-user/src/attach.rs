//! Attaching the classifier to interfaces: TCX where the kernel has it, clsact otherwise.

use aya::programs::{
    tc::{self, NlOptions, TcAttachOptions, TcAttachType},
    LinkOrder, ProgramError, SchedClassifier,
};

/// The ingress (workload outbound) program's name in the object.
pub const CLASSIFY_PROGRAM: &str = "meshclass";
/// The egress (toward the workload) program's name in the object.
pub const INBOUND_PROGRAM: &str = "meshclass_inbound";

/// How to attach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// TCX when the kernel has it, clsact otherwise.
    #[default]
    Auto,
    /// TCX links only (Linux 6.6+).
    Tcx,
    /// A clsact qdisc and a direct-action filter.
    Clsact,
}

/// What an attach used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    Tcx,
    Clsact,
}

/// Errors of attaching.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("attaching to {iface} with TCX: {source}")]
    Tcx {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("adding a clsact qdisc to {iface}: {source}")]
    Clsact {
        iface: String,
        #[source]
        source: tc::TcError,
    },
    #[error("attaching to {iface} with clsact: {source}")]
    Netlink {
        iface: String,
        #[source]
        source: ProgramError,
    },
}

/// Attaches `prog` to `iface` in the calling thread's network namespace, first in the TCX
/// chain so that the node's network plugin runs after it. Returns the link id and the mode.
pub fn attach(
    prog: &mut SchedClassifier,
    iface: &str,
    kind: TcAttachType,
    mode: AttachMode,
) -> Result<(tc::SchedClassifierLinkId, Attached), AttachError> {
    if mode != AttachMode::Clsact {
        match prog.attach_with_options(iface, kind, TcAttachOptions::TcxOrder(LinkOrder::first())) {
            Ok(id) => return Ok((id, Attached::Tcx)),
            Err(source) if mode == AttachMode::Tcx => {
                return Err(AttachError::Tcx {
                    iface: iface.to_string(),
                    source,
                })
            }
            Err(_) => {}
        }
    }
    if let Err(source) = tc::qdisc_add_clsact(iface) {
        // A clsact qdisc that is already there is what we want.
        let exists = matches!(&source, tc::TcError::NetlinkError(e) if e.raw_os_error() == Some(libc::EEXIST));
        if !exists {
            return Err(AttachError::Clsact {
                iface: iface.to_string(),
                source,
            });
        }
    }
    prog.attach_with_options(iface, kind, TcAttachOptions::Netlink(NlOptions::default()))
        .map(|id| (id, Attached::Clsact))
        .map_err(|source| AttachError::Netlink {
            iface: iface.to_string(),
            source,
        })
}
