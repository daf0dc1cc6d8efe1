//! The model's flow table: the program's (docs/decision.md §3) as a plain data structure, so
//! that a flow the kernel forgot to make room for another is one the model forgot too.
//!
//! Written from the document, not from the program: buckets of `FLOW_WAYS` slots picked by
//! `flow_hash` under the table's seed and mask; a found slot gets its reference bit; a new key
//! takes the first empty slot, else the clock's choice.

use std::collections::HashMap;

use classifier_common::{capacity, flow_bucket, flow_hash, FlowKey, FLOW_WAYS};

use super::parse::Key;

/// One bucket: its slots, their reference bits and the clock hand.
#[derive(Clone, Debug)]
struct Bucket<F> {
    slots: [Option<(Key, F)>; FLOW_WAYS],
    refs: [bool; FLOW_WAYS],
    hand: usize,
}

impl<F> Default for Bucket<F> {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| None),
            refs: [false; FLOW_WAYS],
            hand: 0,
        }
    }
}

/// A flow table of `mask + 1` buckets (only those in use are kept) hashed with `seed`.
#[derive(Clone, Debug)]
pub struct FlowTable<F> {
    buckets: HashMap<u32, Bucket<F>>,
    mask: u32,
    seed: u64,
    evictions: u64,
}

impl<F> Default for FlowTable<F> {
    /// The geometry of a table of the default capacity, seed 0.
    fn default() -> Self {
        Self::new(capacity::FLOWS / FLOW_WAYS as u32 - 1, 0)
    }
}

impl<F> FlowTable<F> {
    /// A table like the program's whose `LAYOUT` says `mask` and `seed`.
    pub fn new(mask: u32, seed: u64) -> Self {
        Self {
            buckets: HashMap::new(),
            mask,
            seed,
            evictions: 0,
        }
    }

    fn index(&self, k: &Key) -> u32 {
        let fk = FlowKey {
            family: k.family,
            proto: k.proto,
            _pad: 0,
            sport: k.sport.to_be(),
            dport: k.dport.to_be(),
            saddr: k.saddr,
            daddr: k.daddr,
        };
        flow_bucket(flow_hash(&fk.words(), self.seed), self.mask)
    }

    /// The entry of `k`, marking its slot as used, or as not used for a packet that closes its
    /// connection (`closing`: TCP FIN or RST), which the clock then takes first.
    pub fn get(&mut self, k: &Key, closing: bool) -> Option<&F> {
        let b = self.buckets.entry(self.index(k)).or_default();
        let i = b
            .slots
            .iter()
            .position(|s| matches!(s, Some((sk, _)) if sk == k))?;
        b.refs[i] = !closing;
        b.slots[i].as_ref().map(|(_, f)| f)
    }

    /// Stores `f` as `k`'s entry: in place if `k` has one (unless `only_new`), else in the
    /// first empty slot, else in the slot the clock picks.
    pub fn insert(&mut self, k: Key, f: F, only_new: bool) {
        let b = self.buckets.entry(self.index(&k)).or_default();
        let at = match b
            .slots
            .iter()
            .position(|s| matches!(s, Some((sk, _)) if *sk == k))
        {
            Some(_) if only_new => return,
            Some(i) => i,
            None => match b.slots.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.evictions += 1;
                    // The clock: the first slot from the hand whose bit is clear, clearing the
                    // bits it passes; all set, the hand's own.
                    let mut at = b.hand;
                    for j in 0..FLOW_WAYS {
                        let i = (b.hand + j) % FLOW_WAYS;
                        if !b.refs[i] {
                            at = i;
                            break;
                        }
                        b.refs[i] = false;
                    }
                    b.hand = (at + 1) % FLOW_WAYS;
                    at
                }
            },
        };
        b.slots[at] = Some((k, f));
        b.refs[at] = true;
    }

    /// Replaces the value of `k`'s entry, if it has one, leaving its slot's reference bit.
    pub fn replace(&mut self, k: &Key, f: F) {
        let b = self.buckets.entry(self.index(k)).or_default();
        if let Some(s) = b
            .slots
            .iter_mut()
            .find(|s| matches!(s, Some((sk, _)) if sk == k))
        {
            *s = Some((*k, f));
        }
    }

    /// Entries replaced to make room for another key so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Forgets every flow.
    pub fn clear(&mut self) {
        self.buckets.clear();
    }

    /// Entries in use.
    pub fn len(&self) -> usize {
        self.buckets
            .values()
            .map(|b| b.slots.iter().filter(|s| s.is_some()).count())
            .sum()
    }

    /// Whether no flow has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
