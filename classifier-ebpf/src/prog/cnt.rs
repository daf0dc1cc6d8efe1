//! Per-CPU counters (`classifier_common::counter`) and entry hits, both in this CPU's
//! `CpuCounts` (`COUNTERS[0]`).

use classifier_common::{counter, hit_holds, hit_parts, hit_slot, hit_value, CpuCounts};

use super::maps::{COUNTERS, ENTRY_HITS};

/// This CPU's counts. The key is a constant, so the lookup need not wait for what is counted.
#[inline(always)]
pub fn cpu() -> Option<*mut CpuCounts> {
    COUNTERS.get_ptr_mut(0)
}

/// Adds one to counter `idx`.
#[inline(always)]
pub fn inc(idx: u32) {
    if let Some(c) = cpu() {
        inc_in(c, idx);
    }
}

/// Adds one to counter `idx` of counts `c` (this CPU's, from [`cpu`]).
#[inline(always)]
pub fn inc_in(c: *mut CpuCounts, idx: u32) {
    // SAFETY: `c` is this CPU's element; nothing else on this CPU writes it meanwhile.
    if let Some(n) = unsafe { (*c).counters.get_mut(idx as usize) } {
        *n += 1;
    }
}

/// Counts the packet, its verdict and its deciding stage: exactly once per packet, one
/// increment (`counter::DECIDED`; user space derives PACKETS, BY_VERDICT and BY_STAGE).
#[inline(always)]
pub fn decided(verdict: u8, stage: u8) {
    inc(counter::decided(verdict, stage));
}

/// Counts a decision by entry `id` in counts `c` (this CPU's, from [`cpu`]): one plain add
/// to its hit cache slot when the slot holds `id`; else the slot's count goes to `ENTRY_HITS`
/// of the id it held (one atomic add, where every hit used to pay one: a `lock add` waits for
/// this CPU's earlier stores, and a popular entry's word moved between the CPUs that hit it)
/// and the slot takes `id`. The add comes before the slot changes, so that a reader sees the
/// count in the slot, in `ENTRY_HITS`, or, for a moment, in both; user space reads
/// `ENTRY_HITS` around the slots and reads again an id whose word changed meanwhile.
#[inline(always)]
pub fn entry_hit_in(c: *mut CpuCounts, id: u32) {
    // SAFETY: `c` is this CPU's element; nothing else on this CPU writes it meanwhile (user
    // space only reads it).
    let Some(s) = (unsafe { (*c).hits.get_mut(hit_slot(id) as usize) }) else {
        return;
    };
    let v = *s;
    if hit_holds(v, id) {
        *s = v + 1;
        return;
    }
    if let Some((old, n)) = hit_parts(v) {
        if let Some(h) = ENTRY_HITS.get_ptr_mut(old) {
            // SAFETY: a map value pointer; the add is atomic, shared by all CPUs.
            unsafe {
                core::intrinsics::atomic_xadd::<
                    u64,
                    u64,
                    { core::intrinsics::AtomicOrdering::Relaxed },
                >(h, n as u64);
            }
        }
    }
    *s = hit_value(id, 1);
}
