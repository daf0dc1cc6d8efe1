//! The flow table (docs/decision.md §3): `FLOWS`, an array of buckets of `FLOW_WAYS` slots,
//! owned by this program. An array element is found by the verifier's inlined lookup (no
//! helper call, no kernel hash), and a slot is claimed by plain stores, where an LRU hash map
//! spent ~200 ns a new connection in its free lists.
//!
//! Concurrency: CPUs read and write slots without locks. What the established path needs
//! (state, verdict) lives in the slot's meta word beside the key's 32-bit tag, stored and
//! loaded as one 8-byte word; a reader accepts a slot only if the meta word carries its tag,
//! the key words are its own, and the meta word is unchanged after the key was compared. A
//! writer clears the meta word first and stores it last. A slot torn by two writers thus holds
//! a key and a tag that do not belong together and matches nobody: its flow is looked up as
//! new, which §3 already provides for. `service_id`, `entry_id` and `decided_ns` are
//! informational (inspect, events) and may be torn.

use core::ptr::{read_volatile, write_volatile};

use classifier_common::{
    flow_bucket, flow_hash, flow_meta, flow_meta_is, FlowBucket, FlowKey, FlowWords, FLOW_WAYS,
};

use super::maps::{FLOWS, FLOW_MASK, FLOW_SEED};

/// The bucket of `w`, with the key's hash.
#[inline(always)]
fn bucket(w: &FlowWords) -> Option<(*mut FlowBucket, u64)> {
    let (mask, seed) = (FLOW_MASK.load(), FLOW_SEED.load());
    let h = flow_hash(w, seed);
    let b = FLOWS.get_ptr_mut(flow_bucket(h, mask))?;
    Some((b, h))
}

/// Whether slot `i` of `b` holds key `w` (hash `h`); its meta word if so.
#[inline(always)]
fn holds(b: *mut FlowBucket, i: usize, w: &FlowWords, h: u64) -> Option<u64> {
    // SAFETY: `b` is a map value pointer and `i < FLOW_WAYS`; the loads are volatile so that
    // they happen in this order and once each.
    unsafe {
        let s = &(*b).slots[i];
        let m = read_volatile(&s.meta);
        if !flow_meta_is(m, h) {
            return None;
        }
        let k = &s.key.0;
        if read_volatile(&k[0]) != w.0[0] || read_volatile(&k[1]) != w.0[1] {
            return None;
        }
        if !w.is_v4()
            && (read_volatile(&k[2]) != w.0[2]
                || read_volatile(&k[3]) != w.0[3]
                || read_volatile(&k[4]) != w.0[4])
        {
            return None;
        }
        if read_volatile(&s.meta) != m {
            return None;
        }
        Some(m)
    }
}

/// Marks slot `i` as used (the clock's reference bit), or as not used for a packet that closes
/// its connection (`closing`: TCP FIN or RST), so that the clock takes a closed connection's
/// slot before an idle live one's; writes only when the bit changes.
#[inline(always)]
fn touch(b: *mut FlowBucket, i: usize, closing: bool) {
    let want = u8::from(!closing);
    // SAFETY: as in `holds`.
    unsafe {
        let r = &mut (*b).refs[i];
        if read_volatile(r) != want {
            write_volatile(r, want);
        }
    }
}

/// The meta word of flow `k`'s entry (state in byte 0, verdict in byte 1), if it has one;
/// `closing`: the packet is a TCP FIN or RST (`touch`).
#[inline(always)]
pub fn get(k: &FlowKey, closing: bool) -> Option<u64> {
    get_words(&k.words(), closing)
}

/// `get` for a key in the table's form.
#[inline(always)]
pub fn get_words(w: &FlowWords, closing: bool) -> Option<u64> {
    let (b, h) = bucket(w)?;
    for i in 0..FLOW_WAYS {
        if let Some(m) = holds(b, i, w, h) {
            touch(b, i, closing);
            return Some(m);
        }
    }
    None
}

/// A flow entry's head word: state, verdict, stage and generation in bytes 0-3 (the low half
/// of the slot's meta word, `flow_meta`), the service id in the high half.
#[inline(always)]
pub const fn head(state: u8, verdict: u8, stage: u8, generation: u8, service_id: u32) -> u64 {
    flow_meta(0, state, verdict, stage, generation) | (service_id as u64) << 32
}

/// `put` as a function of its own, for the callers whose stack frames must stay small (the
/// key words stay off them).
#[inline(never)]
pub fn insert(k: &FlowKey, head: u64, entry_id: u32, decided_ns: u64, only_new: bool) {
    put(k, head, entry_id, decided_ns, only_new);
}

/// Stores flow `k`'s entry (`head`, entry id, decision time): in place if `k` has one (unless
/// `only_new`: then nothing changes), else in the bucket's first empty slot, else in the slot
/// the clock picks. The entry goes by value, in registers: a `FlowValue` built in memory cost
/// a `memset` call. Inlined into the decision, whose call of `insert` and its return (through
/// this CPU's return thunk) cost ~10 ns of every new connection.
#[inline(always)]
pub fn put(k: &FlowKey, head: u64, entry_id: u32, decided_ns: u64, only_new: bool) {
    put_words(&k.words(), head, entry_id, decided_ns, only_new);
}

/// `put` for a key in the table's form.
#[inline(always)]
pub fn put_words(w: &FlowWords, head: u64, entry_id: u32, decided_ns: u64, only_new: bool) {
    let w = *w;
    let Some((b, h)) = bucket(&w) else {
        return;
    };
    let mut at = FLOW_WAYS;
    for i in 0..FLOW_WAYS {
        if holds(b, i, &w, h).is_some() {
            if only_new {
                return;
            }
            at = i;
            break;
        }
    }
    if at == FLOW_WAYS {
        at = victim(b);
    }
    // SAFETY: as in `holds`; `at < FLOW_WAYS`.
    unsafe {
        let s = &mut (*b).slots[at & (FLOW_WAYS - 1)];
        write_volatile(&mut s.meta, 0);
        for (d, x) in s.key.0.iter_mut().zip(w.0) {
            write_volatile(d, x);
        }
        write_volatile(&mut s.service_id, (head >> 32) as u32);
        write_volatile(&mut s.entry_id, entry_id);
        write_volatile(&mut s.decided_ns, decided_ns);
        write_volatile(
            &mut s.meta,
            (h & 0xffff_ffff_0000_0000) | (head & 0xffff_ffff),
        );
        write_volatile(&mut (*b).refs[at & (FLOW_WAYS - 1)], 1);
    }
}

/// The slot a new key takes: the first empty one; else, from the hand on, the first whose
/// reference bit is clear, clearing the set bits it passes (all set: the hand's own slot). The
/// hand then moves past the slot taken.
#[inline(always)]
fn victim(b: *mut FlowBucket) -> usize {
    // SAFETY: as in `holds`.
    unsafe {
        for i in 0..FLOW_WAYS {
            if read_volatile(&(*b).slots[i].meta) as u8 == 0 {
                return i;
            }
        }
        let hand = read_volatile(&(*b).hand) as usize & (FLOW_WAYS - 1);
        let mut at = hand;
        for j in 0..FLOW_WAYS {
            let i = (hand + j) & (FLOW_WAYS - 1);
            let r = &mut (*b).refs[i];
            if read_volatile(r) == 0 {
                at = i;
                break;
            }
            write_volatile(r, 0);
        }
        write_volatile(&mut (*b).hand, ((at + 1) & (FLOW_WAYS - 1)) as u8);
        at
    }
}
