//! The name table's writer. Two arrays created `BPF_F_MMAPABLE`, mapped and written with
//! ordered stores as the program's reader expects (classifier-ebpf `prog/names.rs`,
//! docs/decision.md §6):
//! - `NAME_INDEX`: buckets of `NAME_WAYS` (hash, meta) slots, a cuckoo hash (`cuckoo.rs`) of
//!   the keys of both generations; the meta word holds the rest of the key and the index of
//!   the key's record in `NAMES`. A new key: its hash, then its meta word (release); a removed
//!   key: the meta word cleared; a changed entry: a new record, then the meta word pointed at
//!   it in one store, the old record freed.
//! - `NAMES`: the records (the name, its entry and its key as a stamp). A record is written
//!   into a free slot: its stamp cleared, the name and entry, the stamp (release). Free slots
//!   are reused oldest first, so that a slot freed a moment ago is not rewritten at once.
//!
//! Only the generation not in force changes (the writer's two-generation apply), so a reader
//! of the generation in force never sees a record of its own rewritten or a meta word change,
//! other than a key moving between its buckets.

use std::{
    collections::VecDeque,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use classifier_common::{
    exact_buckets, maps, name_index_hash, name_meta, NameBucket, NameKey, NameRecord, NameSlot,
    NameValue, NAME_VALUES_MAX, NAME_WAYS,
};

use super::{
    cuckoo::{self, Cuckoo},
    desired::FastMap,
    shared::Shared,
    DataplaneError,
};

/// Words of an index slot and of a record.
const SLOT_WORDS: usize = size_of::<NameSlot>() / 8;
const RECORD_WORDS: usize = size_of::<NameRecord>() / 8;

/// The shared mappings of `NAME_INDEX` and `NAMES`, where each key is and which records are
/// free.
pub(crate) struct NameTable {
    index: Shared,
    records: Shared,
    /// Buckets in use, records available.
    n: u32,
    nrecords: u32,
    seed: u64,
    /// Slot of each key (generation included).
    at: FastMap<NameKey, u32>,
    /// Records no key points at, oldest freed first.
    free: VecDeque<u32>,
}

impl NameTable {
    /// Maps `NAME_INDEX` (`n` buckets, hash seed `seed`, from `Layout`) and `NAMES`, and reads
    /// back the keys they hold.
    pub fn map(
        index: &MapData,
        records: &MapData,
        n: u32,
        seed: u64,
    ) -> Result<Self, DataplaneError> {
        let index = Shared::map(index, maps::NAME_INDEX, size_of::<NameBucket>())?;
        let records = Shared::map(records, maps::NAMES, size_of::<NameRecord>())?;
        let have = index.words() / (NAME_WAYS * SLOT_WORDS);
        if n < 2 || n as usize > have {
            return Err(DataplaneError::Names(format!(
                "the layout says {n} buckets, the index has {have}"
            )));
        }
        let nrecords = (records.words() / RECORD_WORDS).min(NAME_VALUES_MAX as usize) as u32;
        Ok(Self::over(index, records, n, nrecords, seed))
    }

    /// The table in `index` and `records`, with the keys it holds.
    fn over(index: Shared, records: Shared, n: u32, nrecords: u32, seed: u64) -> Self {
        let mut t = Self {
            index,
            records,
            n,
            nrecords,
            seed,
            at: FastMap::default(),
            free: VecDeque::new(),
        };
        let mut used = vec![false; nrecords as usize];
        for i in 0..n * NAME_WAYS as u32 {
            if let Some((k, r)) = t.key(i) {
                if r < nrecords && !used[r as usize] && t.record(r).is_some_and(|(rk, _)| rk == k) {
                    used[r as usize] = true;
                    t.at.insert(k, i);
                } else {
                    // Not a key this writer could have left: drop it.
                    t.index.clear_meta(i as usize * SLOT_WORDS + 1);
                }
            }
        }
        t.free = (0..nrecords).filter(|&r| !used[r as usize]).collect();
        t
    }

    fn slot_word(&self, i: u32, w: usize) -> &AtomicU64 {
        self.index.word(i as usize * SLOT_WORDS + w)
    }

    fn record_word(&self, r: u32, w: usize) -> &AtomicU64 {
        self.records.word(r as usize * RECORD_WORDS + w)
    }

    /// The key in slot `i` and the record it points at, if in use.
    fn key(&self, i: u32) -> Option<(NameKey, u32)> {
        let m = self.slot_word(i, 1).load(Ordering::Acquire);
        if m & 0xff != 1 {
            return None;
        }
        let k = NameKey::from_meta(self.slot_word(i, 0).load(Ordering::Relaxed), m);
        Some((k, (m >> 40) as u32))
    }

    /// Record `r`'s key (from its stamp) and value, if stamped.
    fn record(&self, r: u32) -> Option<(NameKey, NameValue)> {
        let mut w = [0u64; RECORD_WORDS];
        for (j, x) in w.iter_mut().enumerate() {
            *x = self.record_word(r, j).load(Ordering::Acquire);
        }
        // SAFETY: NameRecord is repr(C) of integers and byte arrays, RECORD_WORDS words, every
        // bit pattern valid.
        let rec: NameRecord = unsafe { std::mem::transmute(w) };
        if rec.key & 0xff != 1 {
            return None;
        }
        Some((NameKey::from_meta(rec.hash, rec.key), rec.value))
    }

    /// Writes record `r` for `k`: the stamp cleared, the value, the stamp.
    fn write_record(&self, r: u32, k: &NameKey, v: &NameValue) {
        let rec = NameRecord {
            key: k.meta_key(),
            hash: k.hash,
            value: *v,
        };
        // SAFETY: as in `record`.
        let w: [u64; RECORD_WORDS] = unsafe { std::mem::transmute(rec) };
        self.records.clear_meta(r as usize * RECORD_WORDS);
        for (j, x) in w.iter().enumerate().skip(1) {
            self.record_word(r, j).store(*x, Ordering::Relaxed);
        }
        self.record_word(r, 0).store(w[0], Ordering::Release);
    }

    fn buckets(&self, k: &NameKey) -> (u32, u32) {
        exact_buckets(name_index_hash(k.hash, k.meta_key(), self.seed), self.n)
    }

    fn meta(k: &NameKey, r: u32) -> u64 {
        name_meta(k.generation, k.kind, k.port, r)
    }

    /// A free record, oldest freed first.
    fn take_record(&mut self) -> Result<u32, DataplaneError> {
        self.free.pop_front().ok_or_else(|| {
            DataplaneError::Names(format!(
                "all {} records in use (raise it with meshclass run --max-names)",
                self.nrecords
            ))
        })
    }

    /// Sets `k`'s entry (`k.generation` included): a new record, then the key's slot pointed
    /// at it (a new slot placed as in the exact table).
    pub fn set(&mut self, k: &NameKey, v: &NameValue) -> Result<(), DataplaneError> {
        // The key's slot and the record it points at, if the key is in the table.
        let old = self
            .at
            .get(k)
            .map(|&i| (i, self.key(i).expect("a key's slot is in use").1));
        if let Some((_, r)) = old {
            if self.record(r).is_some_and(|(_, have)| have == *v) {
                return Ok(());
            }
        }
        let r = self.take_record()?;
        self.write_record(r, k, v);
        let i = match old {
            Some((i, _)) => i,
            None => {
                let (a, b) = self.buckets(k);
                match cuckoo::make_room(self, a, b) {
                    Some(i) => i,
                    None => {
                        self.free.push_front(r);
                        return Err(DataplaneError::Names(format!(
                            "no room for {k:?} within {} moves: the index is too full for \
                             this plan (raise it with meshclass run --max-names)",
                            cuckoo::MAX_MOVES
                        )));
                    }
                }
            }
        };
        self.slot_word(i, 0).store(k.hash, Ordering::Relaxed);
        self.slot_word(i, 1)
            .store(Self::meta(k, r), Ordering::Release);
        self.at.insert(*k, i);
        if let Some((_, before)) = old {
            self.free.push_back(before);
        }
        Ok(())
    }

    /// Removes `k`'s entry (`k.generation` included), if any.
    pub fn remove(&mut self, k: &NameKey) {
        if let Some(i) = self.at.remove(k) {
            let (_, r) = self.key(i).expect("a key's slot is in use");
            self.index.clear_meta(i as usize * SLOT_WORDS + 1);
            self.free.push_back(r);
        }
    }

    /// Entries in use, with their generations.
    pub fn entries(&self) -> Vec<(NameKey, NameValue)> {
        let mut v: Vec<_> = self
            .at
            .values()
            .filter_map(|&i| self.key(i).and_then(|(_, r)| self.record(r)))
            .collect();
        v.sort_by_key(|(k, _)| (k.generation, k.kind, k.port, k.hash));
        v
    }

    /// A table of `n` buckets and `nrecords` records in process memory (unit tests).
    #[cfg(test)]
    fn in_memory(n: u32, nrecords: u32, seed: u64) -> Self {
        Self::over(
            Shared::in_memory(n as usize * NAME_WAYS * SLOT_WORDS),
            Shared::in_memory(nrecords as usize * RECORD_WORDS),
            n,
            nrecords,
            seed,
        )
    }

    /// What the program's lookup (prog/names.rs `find`) finds for `k` and `name`: its first
    /// bucket, then its second, the record's stamp and name checked.
    #[cfg(test)]
    fn lookup(&self, k: &NameKey, name: &[u8]) -> Option<classifier_common::EntryValue> {
        let mk = k.meta_key();
        let (a, b) = self.buckets(k);
        let m = [a, b].into_iter().find_map(|bucket| {
            (0..NAME_WAYS as u32).find_map(|way| {
                let i = bucket * NAME_WAYS as u32 + way;
                let m = self.slot_word(i, 1).load(Ordering::Acquire);
                (m & classifier_common::NAME_META_KEY_MASK == mk
                    && self.slot_word(i, 0).load(Ordering::Relaxed) == k.hash)
                    .then_some(m)
            })
        })?;
        let (rk, v) = self.record((m >> 40) as u32)?;
        (rk == *k && &v.name[..v.len as usize] == name).then_some(v.entry)
    }
}

impl Cuckoo for NameTable {
    const WAYS: u32 = NAME_WAYS as u32;

    fn is_free(&self, i: u32) -> bool {
        self.slot_word(i, 1).load(Ordering::Relaxed) == 0
    }

    fn buckets_of(&self, i: u32) -> Option<(u32, u32)> {
        self.key(i).map(|(k, _)| self.buckets(&k))
    }

    fn move_slot(&mut self, from: u32, to: u32) {
        let (k, r) = self.key(from).expect("a slot on the move path is in use");
        self.slot_word(to, 0).store(k.hash, Ordering::Relaxed);
        self.slot_word(to, 1)
            .store(Self::meta(&k, r), Ordering::Release);
        self.at.insert(k, to);
        self.index.clear_meta(from as usize * SLOT_WORDS + 1);
    }
}

#[cfg(test)]
mod tests {
    use classifier_common::{name_match, EntryValue};

    use super::*;

    fn key(i: u32, generation: u8) -> (NameKey, Vec<u8>) {
        let name = format!("host-{i}.example");
        let k = NameKey {
            hash: classifier_common::name_hash(name.as_bytes()),
            generation,
            kind: if i.is_multiple_of(5) {
                name_match::SUFFIX
            } else {
                name_match::EXACT
            },
            port: (443 + (i % 3) as u16).to_be(),
            _pad: 0,
        };
        (k, name.into_bytes())
    }

    fn value(name: &[u8], i: u32, round: u32) -> NameValue {
        let mut v = NameValue {
            entry: EntryValue {
                service_id: i ^ round,
                entry_id: i + round,
                verdict: (i % 4) as u8,
                _pad: [0; 3],
            },
            len: name.len() as u16,
            ..NameValue::default()
        };
        v.name[..name.len()].copy_from_slice(name);
        v
    }

    /// Both generations filled to the capacity the table is sized for: every key placed
    /// (keys moved on the way), found where the program looks after every write, with its
    /// name and entry; changed entries get new records and the old ones are reused; the
    /// memory read back from scratch holds the same entries; past the capacity `set` refuses.
    #[test]
    fn a_full_table_places_every_key_and_the_reader_finds_each_after_every_write() {
        let cap = 300u32;
        let mut t = NameTable::in_memory(cuckoo::buckets_for(cap), 2 * cap, 0x5eed_4321);
        let mut want: std::collections::HashMap<NameKey, (Vec<u8>, NameValue)> = Default::default();
        let check = |t: &NameTable, want: &std::collections::HashMap<_, (Vec<u8>, NameValue)>| {
            for (k, (name, v)) in want {
                assert_eq!(t.lookup(k, name), Some(v.entry), "{k:?}");
                // Another name with the same key never matches.
                assert_eq!(t.lookup(k, b"other.example"), None);
            }
            assert_eq!(t.at.len(), want.len());
            assert_eq!(t.free.len() + want.len(), t.nrecords as usize);
        };
        for g in 0..2u8 {
            for i in 0..cap {
                let (k, name) = key(i, g);
                let v = value(&name, i, 0);
                t.set(&k, &v).unwrap();
                want.insert(k, (name, v));
                if i % 37 == 0 {
                    check(&t, &want);
                }
            }
        }
        check(&t, &want);
        let second = want
            .keys()
            .filter(|k| t.at[k] / NAME_WAYS as u32 != t.buckets(k).0)
            .count();
        assert!(second > 50, "{second} keys in their second bucket");
        // The table is full of records: a change needs a free one.
        let (k0, n0) = key(0, 1);
        assert!(t.set(&k0, &value(&n0, 0, 9)).is_err());
        check(&t, &want);
        // Remove a third of generation 1, then change another third (new records, from
        // those just freed), add new keys.
        for i in 0..cap {
            let (k, name) = key(i, 1);
            if i % 3 == 0 {
                t.remove(&k);
                want.remove(&k);
                assert_eq!(t.lookup(&k, &name), None);
            }
        }
        for i in 0..cap {
            let (k, name) = key(i, 1);
            if i % 3 == 1 {
                let v = value(&name, i, 7);
                t.set(&k, &v).unwrap();
                want.insert(k, (name, v));
            }
        }
        for i in cap..cap + cap / 4 {
            let (k, name) = key(i, 1);
            let v = value(&name, i, 0);
            t.set(&k, &v).unwrap();
            want.insert(k, (name, v));
        }
        check(&t, &want);
        let copy = |s: &Shared| {
            let c = Shared::in_memory(s.words());
            for i in 0..s.words() {
                c.word(i)
                    .store(s.word(i).load(Ordering::Relaxed), Ordering::Relaxed);
            }
            c
        };
        let again = NameTable::over(copy(&t.index), copy(&t.records), t.n, t.nrecords, t.seed);
        assert_eq!(again.entries(), t.entries());
        assert_eq!(again.free.len(), t.free.len());
    }
}
