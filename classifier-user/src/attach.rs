//! Attaching the classifier to interfaces: TCX where the kernel has it, clsact otherwise.

use aya::programs::{
    tc::{self, NlOptions, TcAttachOptions, TcAttachType, TcError, TcHandle},
    LinkOrder, ProgramError, SchedClassifier,
};

/// The ingress (workload outbound) program's name in the object.
pub const CLASSIFY_PROGRAM: &str = crate::dataplane::PROGRAM;
/// The egress (toward the workload) program's name in the object.
pub const INBOUND_PROGRAM: &str = crate::dataplane::INBOUND_PROGRAM;

/// The two hooks of an interface: the program, where it attaches, and the direction's name in
/// link pins (`Pins::link`).
pub const HOOKS: [(&str, TcAttachType, &str); 2] = [
    (CLASSIFY_PROGRAM, TcAttachType::Ingress, "ingress"),
    (INBOUND_PROGRAM, TcAttachType::Egress, "egress"),
];

/// Where a clsact filter of meshclass goes: priority 1 (the first to run, as a TCX link is put
/// first), and a handle of its own, so that a filter already there (clsact filters outlive the
/// daemon) is given the program instead of doubled.
pub const CLSACT_PRIORITY: u16 = 1;
pub const CLSACT_HANDLE: TcHandle = TcHandle::new(0x4d43, 1);

/// Removes the clsact filters of program `name` from `iface`'s hook `kind`. Filters carry the
/// name the kernel keeps for a program, its first 15 bytes (`meshclass_inbou`): by the whole
/// name none would be found.
pub fn detach_clsact(iface: &str, kind: TcAttachType, name: &str) -> Result<(), TcError> {
    tc::qdisc_detach_program(iface, kind, &name[..name.len().min(15)])
}

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

impl Attached {
    /// The mode as the state file names it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Attached::Tcx => "tcx",
            Attached::Clsact => "clsact",
        }
    }
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
        source: TcError,
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
        let exists =
            matches!(&source, TcError::NetlinkError(e) if e.raw_os_error() == Some(libc::EEXIST));
        if !exists {
            return Err(AttachError::Clsact {
                iface: iface.to_string(),
                source,
            });
        }
    }
    let ours = NlOptions {
        priority: CLSACT_PRIORITY,
        handle: CLSACT_HANDLE,
        ..NlOptions::default()
    };
    let source = match prog.attach_with_options(iface, kind, TcAttachOptions::Netlink(ours)) {
        Ok(id) => return Ok((id, Attached::Clsact)),
        Err(ProgramError::TcError(TcError::NetlinkError(e)))
            if e.raw_os_error() == Some(libc::EEXIST) =>
        {
            // Ours from before: it takes this program (a replace, no moment without a filter).
            let netlink = |source| AttachError::Netlink {
                iface: iface.to_string(),
                source,
            };
            let link = tc::SchedClassifierLink::attached(
                iface,
                kind,
                CLSACT_PRIORITY,
                CLSACT_HANDLE,
                None,
            )
            .map_err(|e| netlink(ProgramError::from(TcError::IoError(e))))?;
            let id = prog.attach_to_link(link).map_err(netlink)?;
            return Ok((id, Attached::Clsact));
        }
        Err(e) => e,
    };
    // Priority 1 held by a filter of another kind: after the others, as the kernel places it,
    // in place of the one an earlier attach put there (none: a moment without).
    tracing::warn!(%iface, error = %source, "no clsact filter at priority 1; attaching after the filters there");
    if let Some(name) = prog
        .info()
        .ok()
        .and_then(|i| i.name_as_str().map(str::to_string))
    {
        let _ = detach_clsact(iface, kind, &name);
    }
    prog.attach_with_options(iface, kind, TcAttachOptions::Netlink(NlOptions::default()))
        .map(|id| (id, Attached::Clsact))
        .map_err(|source| AttachError::Netlink {
            iface: iface.to_string(),
            source,
        })
}

/// Opens the BPF object pinned at `path`.
fn obj_get(path: &std::path::Path) -> Option<std::os::fd::OwnedFd> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    const BPF_OBJ_GET: libc::c_long = 7;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // `union bpf_attr` for BPF_OBJ_GET: pathname (u64), bpf_fd, file_flags, path_fd.
    let mut attr = [0u64; 16];
    attr[0] = c_path.as_ptr() as u64;
    // SAFETY: the bpf syscall reads `attr` (128 bytes) and the path it points to, both live.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, attr.as_ptr(), 128usize) };
    // SAFETY: a new descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Detaches the link pinned at `path` from its hook at once (`BPF_LINK_DETACH`), then
/// removes the pin. Removing the pin alone lets go of the link only when the kernel's deferred
/// work drops its last reference, a moment later: until then the device stays classified. A
/// pin that is gone already is fine.
pub fn detach_pinned_link(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    const BPF_LINK_DETACH: libc::c_long = 34;
    if let Some(fd) = obj_get(path) {
        let mut attr = [0u64; 16];
        attr[0] = fd.as_raw_fd() as u32 as u64;
        // SAFETY: the bpf syscall reads `attr` (128 bytes); the descriptor is open.
        let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_DETACH, attr.as_ptr(), 128usize) };
        if r != 0 {
            // A link type without it: the pin's removal does the work, a moment later.
            let e = std::io::Error::last_os_error();
            tracing::debug!(path = %path.display(), error = %e, "BPF_LINK_DETACH");
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The interface index of the TCX link pinned at `path`: 0 once the device it was attached to
/// is gone (a pinned link outlives its device); `None` when the pin cannot be read as a TCX
/// link.
pub fn pinned_link_ifindex(path: &std::path::Path) -> Option<u32> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_TYPE_TCX: u32 = 11;
    let fd = obj_get(path)?;
    // `struct bpf_link_info`: type, id, prog_id, then (8-aligned) the union; for TCX its first
    // two words are ifindex and attach_type.
    let mut info = [0u64; 32];
    let mut attr = [0u64; 16];
    use std::os::fd::AsRawFd as _;
    attr[0] = fd.as_raw_fd() as u32 as u64 | (size_of_val(&info) as u64) << 32;
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: the kernel writes at most `info_len` bytes to `info`, which is that large.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_ptr(),
            128usize,
        )
    };
    if r != 0 || info[0] as u32 != BPF_LINK_TYPE_TCX {
        return None;
    }
    Some(info[2] as u32)
}
