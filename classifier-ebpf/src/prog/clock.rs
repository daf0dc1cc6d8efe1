//! Decision times. `bpf_jiffies64` is inlined by the verifier as one load, where
//! `bpf_ktime_get_coarse_ns` is a helper call whose return goes through this CPU's return thunk
//! (~15 ns of every new connection, measured); user space measured the tick and the time of a
//! jiffy's start at load (`Layout::tick_ns`, `Layout::clock_base`), so that the jiffies give
//! CLOCK_MONOTONIC to one tick.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    programs::TcContext,
};

use super::maps::LAYOUT;

/// CLOCK_MONOTONIC now, to one tick (0 if the layout is missing).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments.
    let j = unsafe { bpf_jiffies64() };
    match LAYOUT.get(0) {
        Some(l) => l.clock_ns(j),
        None => 0,
    }
}

/// The `meshclass_clock` program, run by user space with BPF_PROG_TEST_RUN at load (never
/// attached): writes the jiffies and CLOCK_MONOTONIC, read at the same moment, over the first
/// 16 bytes of the packet it is given.
#[inline(always)]
pub fn sample(ctx: &TcContext) -> i32 {
    // SAFETY: helpers without arguments.
    let (j, ns) = unsafe { (bpf_jiffies64(), bpf_ktime_get_ns()) };
    let _ = ctx.store(0, &[j, ns], 0);
    TC_ACT_UNSPEC
}
