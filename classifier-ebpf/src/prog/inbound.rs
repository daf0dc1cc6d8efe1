//! `meshclass_inbound` (docs/decision.md §10): at TC egress of the workload's interface,
//! records connections that others open to the workload so that its replies pass.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, programs::TcContext};
use classifier_common::{flow_state, proto, stage, verdict, FlowKey, NO_SERVICE};

use super::{
    flows,
    maps::PKT_STATE,
    pkt::{self, Parsed, TCP_ACK, TCP_SYN},
};

/// Stores a PASS entry for the reply key of a new inbound connection; never changes the verdict.
#[inline(always)]
pub fn try_inbound(ctx: &TcContext) -> Result<i32, i32> {
    let Some(st) = PKT_STATE.get_ptr_mut(0) else {
        return Ok(TC_ACT_UNSPEC);
    };
    // SAFETY: per-CPU state, used by this program run only.
    let st = unsafe { &mut *st };
    let p = &mut st.pkt;
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
