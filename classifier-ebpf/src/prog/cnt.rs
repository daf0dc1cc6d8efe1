//! Per-CPU counters (`classifier_common::counter`).

use classifier_common::counter;

use super::maps::COUNTERS;

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
