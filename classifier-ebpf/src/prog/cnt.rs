//! Per-CPU counters (`classifier_common::counter`) and entry hits.

use classifier_common::{counter, hit_holds, hit_parts, hit_slot, hit_value};

use super::maps::{COUNTERS, ENTRY_HITS, HIT_CACHE};

/// Adds one to counter `idx`.
#[inline(always)]
pub fn inc(idx: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: a per-CPU slot; nothing else on this CPU writes it meanwhile.
        unsafe { *c += 1 };
    }
}

/// Counts the packet, its verdict and its deciding stage: exactly once per packet, one
/// increment (`counter::DECIDED`; user space derives PACKETS, BY_VERDICT and BY_STAGE).
#[inline(always)]
pub fn decided(verdict: u8, stage: u8) {
    inc(counter::decided(verdict, stage));
}

/// Counts a decision by entry `id`: one plain add to this CPU's `HIT_CACHE` slot when the slot
/// holds `id`; else the slot's count goes to `ENTRY_HITS` of the id it held (one atomic add,
/// where every hit used to pay one: a `lock add` waits for this CPU's earlier stores, and a
/// popular entry's word moved between the CPUs that hit it) and the slot takes `id`. The add
/// comes before the slot changes, so that a reader sees the count in the slot, in
/// `ENTRY_HITS`, or, for a moment, in both; user space reads `ENTRY_HITS` around the slots and
/// reads again an id whose word changed meanwhile.
#[inline(always)]
pub fn entry_hit(id: u32) {
    let Some(c) = HIT_CACHE.get_ptr_mut(hit_slot(id)) else {
        return;
    };
    // SAFETY: a per-CPU slot; nothing else on this CPU writes it meanwhile (user space only
    // reads it).
    unsafe {
        let v = *c;
        if hit_holds(v, id) {
            *c = v + 1;
            return;
        }
        if let Some((old, n)) = hit_parts(v) {
            if let Some(h) = ENTRY_HITS.get_ptr_mut(old) {
                core::intrinsics::atomic_xadd::<
                    u64,
                    u64,
                    { core::intrinsics::AtomicOrdering::Relaxed },
                >(h, n as u64);
            }
        }
        *c = hit_value(id, 1);
    }
}
