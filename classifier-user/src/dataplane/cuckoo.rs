//! Placement in the cuckoo tables user space writes through shared mappings (`EXACT`,
//! `NAME_INDEX`: docs/decision.md §4 and §6). A key lives in one of its two buckets; the
//! program looks in the first, then the second. To make room, keys move only from their
//! first bucket to their second, each stored there before it leaves the first, so a reader
//! never misses a key being moved (a move the other way could pass it unseen).

/// Longest chain of keys moved to place a new one.
pub const MAX_MOVES: usize = 5;

/// A table of buckets of `WAYS` slots, numbered `bucket * WAYS + way`.
pub(crate) trait Cuckoo {
    /// Slots per bucket.
    const WAYS: u32;
    /// Whether slot `i` is free.
    fn is_free(&self, i: u32) -> bool;
    /// The two buckets (first, second) of the key in slot `i`, if in use.
    fn buckets_of(&self, i: u32) -> Option<(u32, u32)>;
    /// Stores the key of slot `from` in free slot `to` (meta word last), then clears `from`.
    fn move_slot(&mut self, from: u32, to: u32);
}

/// The first free slot of bucket `b`.
pub(crate) fn free_way<C: Cuckoo>(t: &C, b: u32) -> Option<u32> {
    (0..C::WAYS)
        .map(|w| b * C::WAYS + w)
        .find(|&i| t.is_free(i))
}

/// A free slot in bucket `a` or `b` (a key's two buckets): one that is free, else one freed by
/// moving keys to their second buckets (at most [`MAX_MOVES`]); None when there is none.
pub(crate) fn make_room<C: Cuckoo>(t: &mut C, a: u32, b: u32) -> Option<u32> {
    if let Some(i) = free_way(t, a).or_else(|| free_way(t, b)) {
        return Some(i);
    }
    let (slots, mut free) = move_path(t, a, b)?;
    // Move from the end of the path: each key is stored in its other bucket before its slot
    // is cleared and taken by the key before it.
    for &i in slots.iter().rev() {
        t.move_slot(i, free);
        free = i;
    }
    Some(free)
}

/// A breadth-first search for the shortest chain of slots, starting in bucket `a` or `b`,
/// whose keys are in their first bucket and can each move to their second, the last one into
/// a free slot: the chain (first to last) and that free slot.
fn move_path<C: Cuckoo>(t: &C, a: u32, b: u32) -> Option<(Vec<u32>, u32)> {
    // (slot, index of the step it came from)
    let mut steps: Vec<(u32, usize)> = Vec::new();
    let mut level: Vec<usize> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for bucket in [a, b] {
        for w in 0..C::WAYS {
            let i = bucket * C::WAYS + w;
            seen.insert(i);
            steps.push((i, usize::MAX));
            level.push(steps.len() - 1);
        }
    }
    for _ in 0..MAX_MOVES {
        let mut next = Vec::new();
        for &s in &level {
            let (i, _) = steps[s];
            let (first, other) = t.buckets_of(i)?;
            if i / C::WAYS != first {
                continue;
            }
            if let Some(free) = free_way(t, other) {
                let mut slots = Vec::new();
                let mut at = s;
                while at != usize::MAX {
                    slots.push(steps[at].0);
                    at = steps[at].1;
                }
                slots.reverse();
                return Some((slots, free));
            }
            for w in 0..C::WAYS {
                let j = other * C::WAYS + w;
                if seen.insert(j) {
                    steps.push((j, s));
                    next.push(steps.len() - 1);
                }
            }
        }
        level = next;
    }
    None
}

/// Buckets of a table for `capacity` keys per generation, both generations in it: with both
/// full, three slots in four are in use, where a cuckoo table of four-slot buckets still
/// places keys with short move paths.
pub fn buckets_for(capacity: u32) -> u32 {
    (capacity as u64 * 2).div_ceil(3).clamp(2, u32::MAX as u64) as u32
}

/// Keys per generation a table of `buckets` buckets is sized for (the inverse of
/// [`buckets_for`], rounded down).
pub fn capacity_of(buckets: u32) -> u32 {
    (buckets as u64 * 3 / 2).min(u32::MAX as u64) as u32
}
