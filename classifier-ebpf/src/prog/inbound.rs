//! `meshclass_inbound` (docs/decision.md §10): at TC egress of the workload's interface,
//! records connections that others open to the workload so that its replies pass.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, programs::TcContext};
use classifier_common::{flow_state, proto, stage, verdict, FlowKey, NO_SERVICE};

use super::{
    flows,
    pkt::{self, Parsed, Pkt, TCP_ACK, TCP_SYN},
};

/// Stores a PASS entry for the reply key of a new inbound connection; never changes the verdict.
///
/// The packet is parsed on this program's stack, not into `PKT_STATE`: this program also runs
/// inside `meshclass`, when a REJECT after a handshake sends the client's RST out of this
/// interface with `bpf_clone_redirect` (a synchronous transmit, on the same CPU), and
/// `meshclass` goes on to build the server's RST from the packet it holds in `PKT_STATE`.
#[inline(always)]
pub fn try_inbound(ctx: &TcContext) -> Result<i32, i32> {
    // SAFETY: `Pkt` is plain data, for which all zeros is a value; `parse` fills it.
    let mut pkt: Pkt = unsafe { core::mem::zeroed() };
    let p = &mut pkt;
    let Parsed::Ip = pkt::parse(ctx, p) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let new = if p.key.proto == proto::TCP {
        p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    } else {
        p.key.proto == proto::UDP
    };
    if !new {
        return Ok(TC_ACT_UNSPEC);
    }
    let reply = FlowKey {
        family: p.key.family,
        proto: p.key.proto,
        _pad: 0,
        sport: p.key.dport,
        dport: p.key.sport,
        saddr: p.key.daddr,
        daddr: p.key.saddr,
    };
    let Some((cfg, generation)) = super::classify::config() else {
        return Ok(TC_ACT_UNSPEC);
    };
    let head = flows::head(
        flow_state::DECIDED,
        verdict::PASS,
        stage::FLOW,
        generation,
        NO_SERVICE,
    );
    flows::insert(&reply, head, 0, super::clock::now(cfg), true);
    Ok(TC_ACT_UNSPEC)
}
