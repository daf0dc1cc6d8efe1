//! The exact table's writer. `EXACT` is an array of `ExactBucket`s created `BPF_F_MMAPABLE`:
//! user space maps it and writes slots with ordered stores, as the program's reader expects
//! (classifier-ebpf `prog/exact.rs`, docs/decision.md §4):
//! - a new key: its words, then its meta word (release);
//! - a changed value: the meta word cleared, the words, the meta word;
//! - a removed key: the meta word cleared;
//! - a key moved (cuckoo, `cuckoo.rs`) only ever from its first bucket to its second: stored
//!   there first, then cleared in the first.
//!
//! Both generations live in the one table (the generation is in the hash and the meta word),
//! `cuckoo::buckets_for` the capacity.

use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::MapData;
use classifier_common::{
    exact_buckets, exact_entry, exact_hash, exact_meta, maps, EntryValue, ExactBucket, ExactKey,
    ExactSlot, EXACT_WAYS,
};

use super::{
    cuckoo::{self, Cuckoo},
    desired::FastMap,
    shared::Shared,
    DataplaneError,
};

/// The shared mapping of `EXACT`, and where each key is.
pub(crate) struct ExactTable {
    mem: Shared,
    n: u32,
    seed: u64,
    /// Slot index (bucket * EXACT_WAYS + way) of each key, by key with its generation.
    at: FastMap<ExactKey, u32>,
}

/// Words of a slot.
const SLOT_WORDS: usize = size_of::<ExactSlot>() / 8;

impl ExactTable {
    /// Maps `EXACT` (`n` buckets, hash seed `seed`, from `Layout`) and reads back the keys it
    /// holds.
    pub fn map(data: &MapData, n: u32, seed: u64) -> Result<Self, DataplaneError> {
        let mem = Shared::map(data, maps::EXACT, size_of::<ExactBucket>())?;
        let have = mem.words() / (EXACT_WAYS * SLOT_WORDS);
        if n < 2 || n as usize > have {
            return Err(DataplaneError::Exact(format!(
                "the layout says {n} buckets, the map has {have}"
            )));
        }
        Ok(Self::over(mem, n, seed))
    }

    /// The table in `mem`, with the keys it holds.
    fn over(mem: Shared, n: u32, seed: u64) -> Self {
        let mut t = Self {
            mem,
            n,
            seed,
            at: FastMap::default(),
        };
        for i in 0..n * EXACT_WAYS as u32 {
            if let Some((k, _)) = t.read(i) {
                t.at.insert(k, i);
            }
        }
        t
    }

    /// Word `w` of slot `i` (0: the meta word, 1-3: the key words).
    fn word(&self, i: u32, w: usize) -> &AtomicU64 {
        debug_assert!(i < self.n * EXACT_WAYS as u32 && w < SLOT_WORDS);
        self.mem.word(i as usize * SLOT_WORDS + w)
    }

    /// The key (with its generation) and entry in slot `i`, if in use.
    fn read(&self, i: u32) -> Option<(ExactKey, EntryValue)> {
        let m = self.word(i, 0).load(Ordering::Acquire);
        if m & 0xff != 1 {
            return None;
        }
        let w = [1, 2, 3].map(|j| self.word(i, j).load(Ordering::Relaxed));
        let mut addr = [0u8; 16];
        addr[..8].copy_from_slice(&w[0].to_le_bytes());
        addr[8..].copy_from_slice(&w[1].to_le_bytes());
        let k = ExactKey {
            generation: (m >> 8) as u8,
            family: w[2] as u8,
            proto: (w[2] >> 8) as u8,
            _pad: 0,
            port: (w[2] >> 16) as u16,
            _pad2: 0,
            addr,
        };
        Some((k, exact_entry(m, w[2])))
    }

    fn buckets(&self, k: &ExactKey) -> (u32, u32) {
        exact_buckets(exact_hash(&k.words(), k.generation, self.seed), self.n)
    }

    /// Stores `k` (generation included) and `v` in free slot `i`: words first, meta last.
    fn store(&mut self, i: u32, k: &ExactKey, v: &EntryValue) {
        let mut w = k.words();
        w[2] |= (v.entry_id as u64) << 32;
        for (j, x) in w.iter().enumerate() {
            self.word(i, j + 1).store(*x, Ordering::Relaxed);
        }
        self.word(i, 0).store(
            exact_meta(k.generation, v.verdict, v.service_id),
            Ordering::Release,
        );
        self.at.insert(*k, i);
    }

    fn clear(&mut self, i: u32) {
        self.mem.clear_meta(i as usize * SLOT_WORDS);
    }

    /// Entries in use, with their generations.
    pub fn entries(&self) -> Vec<(ExactKey, EntryValue)> {
        let mut v: Vec<_> = self.at.values().filter_map(|&i| self.read(i)).collect();
        v.sort_by_key(|(k, _)| (k.generation, k.family, k.proto, k.port, k.addr));
        v
    }

    /// Sets `k`'s entry (`k.generation` included): in place if it has a slot, else in a free
    /// slot of its two buckets, else after moving keys to their other buckets (at most
    /// [`MAX_MOVES`]).
    pub fn set(&mut self, k: &ExactKey, v: &EntryValue) -> Result<(), DataplaneError> {
        if let Some(&i) = self.at.get(k) {
            if self.read(i).map(|(_, e)| e) == Some(*v) {
                return Ok(());
            }
            self.clear(i);
            self.store(i, k, v);
            return Ok(());
        }
        let (a, b) = self.buckets(k);
        let i = cuckoo::make_room(self, a, b).ok_or_else(|| {
            DataplaneError::Exact(format!(
                "no room for {k:?} within {} moves: the table is too full for this plan \
                 (raise it with meshclass run --max-exact)",
                cuckoo::MAX_MOVES
            ))
        })?;
        self.store(i, k, v);
        Ok(())
    }

    /// Removes `k`'s entry (`k.generation` included), if any.
    pub fn remove(&mut self, k: &ExactKey) {
        if let Some(i) = self.at.remove(k) {
            self.clear(i);
        }
    }

    /// A table of `n` buckets in process memory (unit tests).
    #[cfg(test)]
    fn in_memory(n: u32, seed: u64) -> Self {
        Self::over(
            Shared::in_memory(n as usize * EXACT_WAYS * SLOT_WORDS),
            n,
            seed,
        )
    }

    /// What the program's lookup (prog/exact.rs) finds for `k`: its first bucket, then its
    /// second, slot by slot.
    #[cfg(test)]
    fn lookup(&self, k: &ExactKey) -> Option<EntryValue> {
        let (a, b) = self.buckets(k);
        let w = k.words();
        [a, b].into_iter().find_map(|bucket| {
            (0..EXACT_WAYS as u32).find_map(|way| {
                let i = bucket * EXACT_WAYS as u32 + way;
                let m = self.word(i, 0).load(Ordering::Acquire);
                let s = [1, 2, 3].map(|j| self.word(i, j).load(Ordering::Relaxed));
                (classifier_common::exact_meta_is(m, k.generation)
                    && s[0] == w[0]
                    && s[1] == w[1]
                    && (s[2] ^ w[2]) & 0xffff_ffff == 0)
                    .then(|| exact_entry(m, s[2]))
            })
        })
    }
}

impl Cuckoo for ExactTable {
    const WAYS: u32 = EXACT_WAYS as u32;

    fn is_free(&self, i: u32) -> bool {
        self.word(i, 0).load(Ordering::Relaxed) == 0
    }

    fn buckets_of(&self, i: u32) -> Option<(u32, u32)> {
        self.read(i).map(|(k, _)| self.buckets(&k))
    }

    fn move_slot(&mut self, from: u32, to: u32) {
        let (k, v) = self.read(from).expect("a slot on the move path is in use");
        self.store(to, &k, &v);
        self.clear(from);
    }
}

#[cfg(test)]
mod tests {
    use classifier_common::{family, proto};

    use super::*;

    fn key(i: u32, generation: u8) -> ExactKey {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&(0x0a00_0000 + i / 3).to_be_bytes());
        ExactKey {
            generation,
            family: family::V4,
            proto: if i.is_multiple_of(2) {
                proto::TCP
            } else {
                proto::UDP
            },
            _pad: 0,
            port: (8000 + (i % 3) as u16).to_be(),
            _pad2: 0,
            addr,
        }
    }

    fn value(i: u32, round: u32) -> EntryValue {
        EntryValue {
            service_id: i ^ round,
            entry_id: i + round,
            verdict: (i % 4) as u8,
            _pad: [0; 3],
        }
    }

    /// Both generations filled to the capacity the table is sized for (three slots in four):
    /// every key placed, keys moved on the way, and after every write each key in the table
    /// is found where the program looks, with its value; removed and changed keys too.
    #[test]
    fn a_full_table_places_every_key_and_the_reader_finds_each_after_every_write() {
        let cap = 300u32;
        let mut t = ExactTable::in_memory(cuckoo::buckets_for(cap), 0x5eed_1234);
        assert_eq!(cuckoo::capacity_of(cuckoo::buckets_for(cap)), cap);
        let mut want: std::collections::HashMap<ExactKey, EntryValue> = Default::default();
        let check = |t: &ExactTable, want: &std::collections::HashMap<ExactKey, EntryValue>| {
            for (k, v) in want {
                assert_eq!(t.lookup(k), Some(*v), "{k:?}");
            }
            assert_eq!(t.at.len(), want.len());
        };
        for g in 0..2u8 {
            for i in 0..cap {
                let (k, v) = (key(i, g), value(i, 0));
                t.set(&k, &v).unwrap();
                want.insert(k, v);
                if i % 37 == 0 {
                    check(&t, &want);
                }
            }
        }
        check(&t, &want);
        assert_eq!(t.entries().len(), 2 * cap as usize);
        // Keys in their second bucket: some were placed or moved there.
        let second = want
            .keys()
            .filter(|k| t.at[k] / EXACT_WAYS as u32 != t.buckets(k).0)
            .count();
        assert!(second > 50, "{second} keys in their second bucket");
        // Remove a third of one generation, change another third, add new keys in their
        // place; the other generation is untouched.
        for i in 0..cap {
            let k = key(i, 1);
            match i % 3 {
                0 => {
                    t.remove(&k);
                    want.remove(&k);
                    assert_eq!(t.lookup(&k), None);
                }
                1 => {
                    t.set(&k, &value(i, 7)).unwrap();
                    want.insert(k, value(i, 7));
                }
                _ => {}
            }
        }
        for i in cap..cap + cap / 3 {
            let k = key(i, 1);
            t.set(&k, &value(i, 0)).unwrap();
            want.insert(k, value(i, 0));
        }
        check(&t, &want);
        // The same memory read back from scratch holds the same entries.
        let copy = Shared::in_memory(t.mem.words());
        for i in 0..t.mem.words() {
            copy.word(i)
                .store(t.mem.word(i).load(Ordering::Relaxed), Ordering::Relaxed);
        }
        let again = ExactTable::over(copy, t.n, t.seed);
        assert_eq!(again.entries(), t.entries());
        // Past what the table can hold, `set` refuses instead of losing a key.
        let mut refused = 0;
        for i in 0..2 * cap {
            if t.set(&key(10_000 + i, 0), &value(i, 0)).is_err() {
                refused += 1;
            } else {
                want.insert(key(10_000 + i, 0), value(i, 0));
            }
        }
        assert!(refused > 0);
        check(&t, &want);
    }
}
