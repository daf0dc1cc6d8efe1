//! The flow table (docs/decision.md §3), split by family: IPv4 flows in `FLOWS4` under a
//! 16-byte key, IPv6 flows in `FLOWS6` under the whole `FlowKey`.

use classifier_common::{family, FlowKey, FlowValue};

use super::maps::{FLOWS4, FLOWS6};

/// The entry of flow `k`.
#[inline(always)]
pub fn get(k: &FlowKey) -> Option<*const FlowValue> {
    if k.family == family::V4 {
        FLOWS4.get_ptr(&k.v4())
    } else {
        FLOWS6.get_ptr(k)
    }
}

/// Stores the entry of flow `k` (`flags`: BPF_ANY, BPF_NOEXIST).
#[inline(always)]
pub fn insert(k: &FlowKey, v: &FlowValue, flags: u64) {
    let _ = if k.family == family::V4 {
        FLOWS4.insert(&k.v4(), v, flags)
    } else {
        FLOWS6.insert(k, v, flags)
    };
}
