//! Decision times. `bpf_jiffies64` is inlined by the verifier as one load, where
//! `bpf_ktime_get_coarse_ns` is a helper call whose return goes through this CPU's return thunk
//! (~15 ns of every new connection, measured); user space measured the tick and the time of a
//! jiffy's start at load (`Layout::tick_ns`, `Layout::clock_base`, copied into every
//! `Config`), so that the jiffies give CLOCK_MONOTONIC to one tick.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    programs::TcContext,
};

use classifier_common::Config;

/// CLOCK_MONOTONIC now, to one tick, by the clock `cfg` carries.
#[inline(always)]
pub fn now(cfg: &Config) -> u64 {
    // SAFETY: a helper without arguments.
    cfg.clock_ns(unsafe { bpf_jiffies64() })
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
