//! The exact table (docs/decision.md §4): `EXACT`, an array of buckets of `EXACT_WAYS` slots,
//! a cuckoo hash written by user space through a shared mapping. The program finds a key's
//! two buckets by its own hash and compares the slots itself: the verifier inlines the array
//! lookups, where the kernel's hash map cost a jhash and a bucket walk, each a call whose
//! return pays this CPU's return thunk (~25 ns a new connection).
//!
//! Concurrency: user space stores a slot's key words before its meta word and clears the
//! meta word first; a key moves (cuckoo) only from its first bucket to its second, stored
//! there before it leaves the first, and the program looks in the first bucket first, so it
//! never misses a key being moved. A reader accepts a
//! slot only if its meta word is in use for the generation, the key words are its own, and
//! the meta word is unchanged after the key was read.

use core::ptr::read_volatile;

use classifier_common::{
    exact_buckets, exact_entry, exact_hash, exact_meta_is, EntryValue, ExactBucket, EXACT_WAYS,
};

use super::maps::{EXACT, EXACT_BUCKETS, EXACT_SEED};

/// The entry of generation `generation` for key words `w` (`ExactKey::words`), if any.
#[inline(always)]
pub fn lookup(w: &[u64; 3], generation: u8) -> Option<EntryValue> {
    let (n, seed) = (EXACT_BUCKETS.load(), EXACT_SEED.load());
    let (a, b) = exact_buckets(exact_hash(w, generation, seed), n);
    if let Some(e) = in_bucket(EXACT.get_ptr(a)?, w, generation) {
        return Some(e);
    }
    in_bucket(EXACT.get_ptr(b)?, w, generation)
}

#[inline(always)]
fn in_bucket(b: *const ExactBucket, w: &[u64; 3], generation: u8) -> Option<EntryValue> {
    for i in 0..EXACT_WAYS {
        // SAFETY: `b` is a map value pointer and `i < EXACT_WAYS`; the loads are volatile so
        // that they happen in this order and once each.
        unsafe {
            let s = &(*b).slots[i];
            let m = read_volatile(&s.meta);
            if !exact_meta_is(m, generation) {
                continue;
            }
            let w2 = read_volatile(&s.key[2]);
            if (w2 ^ w[2]) & 0xffff_ffff != 0
                || read_volatile(&s.key[0]) != w[0]
                || read_volatile(&s.key[1]) != w[1]
            {
                continue;
            }
            if read_volatile(&s.meta) != m {
                continue;
            }
            return Some(exact_entry(m, w2));
        }
    }
    None
}
