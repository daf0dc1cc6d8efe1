//! The map writer: applies a plan to the two generations of the registry maps so that no
//! packet is ever classified against a half-written registry.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
};

use aya::maps::{lpm_trie::Key, Array, HashMap as BpfHashMap, LpmTrie, Map, MapData, PerCpuArray};
use classifier_common::{
    config_flags, counter, hit_parts, hit_slot, maps, stage, verdict, CidrData, Control, CpuCounts,
    EntryValue, ExactKey, FlowBucket, FlowKey, FlowValue, Layout, NameKey, PortKey, FLOW_WAYS,
    LAYOUT_VERSION,
};

use super::{
    cuckoo,
    desired::{Changes, Content, FastMap, Slots},
    exact::ExactTable,
    names::NameTable,
    ports::PortTable,
    shared::Shared,
    Capacities, DataplaneError,
};
use crate::{plan::Plan, settings::Settings};

/// Every map the writer and the test tools use.
pub(crate) const MAP_NAMES: [&str; 14] = [
    maps::CONTROL,
    maps::LAYOUT,
    maps::EXACT,
    maps::CIDR,
    maps::PORTS,
    maps::NAMES,
    maps::NAME_INDEX,
    maps::FLOWS,
    maps::PENDING,
    maps::COUNTERS,
    maps::ENTRY_HITS,
    maps::EVENTS,
    maps::JUMP,
    maps::PKT_STATE,
];

/// What one `apply` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// The generation now in force.
    pub generation: u32,
    /// Map elements written or deleted in the generation made active.
    pub written: usize,
    /// Map elements written or deleted to bring the other generation up to date.
    pub synced: usize,
    /// Elements per generation after the apply: exact, cidr, ports, names.
    pub exact: usize,
    pub cidr: usize,
    pub ports: usize,
    pub names: usize,
    /// Plan entries that lost to an earlier entry with the same match.
    pub shadowed: Vec<String>,
    /// (entry id, hits) of every entry of the previous plan that this apply removed or gave
    /// to another service or verdict: the counts that leave the live ones (`entry_hits`),
    /// for whoever keeps totals by service (the daemon's metrics). An id of the previous
    /// plan, decoded with its entry ids.
    pub retired: Vec<(u32, u64)>,
}

/// Where the maps are: in the loaded object, or opened from pins.
pub(crate) enum Store {
    Loaded(Box<aya::Ebpf>),
    Pinned(HashMap<&'static str, Map>),
}

impl Store {
    fn get(&self, name: &str) -> Option<&Map> {
        match self {
            Store::Loaded(e) => e.map(name),
            Store::Pinned(m) => m.get(name),
        }
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Map> {
        match self {
            Store::Loaded(e) => e.map_mut(name),
            Store::Pinned(m) => m.get_mut(name),
        }
    }
}

/// Writes plans into the registry maps (those of a loaded object, or opened from pins).
pub struct MapWriter {
    pub(crate) store: Store,
    caps: Capacities,
    /// What each generation holds.
    gens: [Content; 2],
    /// The slots of the last plan applied, with their entry ids.
    slots: Slots,
    /// Whether `gens` may differ from `slots` (read back from pins, or a write failed): the
    /// next apply then compares every element instead of only those the plan changes.
    full: bool,
    /// Entry id of each entry of the last plan applied.
    entry_ids: Vec<u32>,
    /// The exact table's shared mapping.
    exact: ExactTable,
    /// The ports table's shared mapping.
    ports: PortTable,
    /// The name table's shared mappings.
    names: NameTable,
    /// `ENTRY_HITS`, mapped (user space only reads it; the program adds to it).
    hits: Shared,
}

impl MapWriter {
    /// A writer over freshly created maps: stamps `layout` (the one the program's globals were
    /// set from, with the clock measured) and starts at generation 0.
    pub(crate) fn new_fresh(
        ebpf: aya::Ebpf,
        caps: Capacities,
        layout: Layout,
    ) -> Result<Self, DataplaneError> {
        let (exact, ports, names, hits) = shared_tables(|n| ebpf.map(n), &layout)?;
        let mut w = Self {
            store: Store::Loaded(Box::new(ebpf)),
            caps,
            gens: [Content::default(), Content::default()],
            slots: Slots::default(),
            full: false,
            entry_ids: Vec::new(),
            exact,
            ports,
            names,
            hits,
        };
        w.array::<Layout>(maps::LAYOUT, |a| a.set(0, layout, 0))?;
        let cfg = Settings::default().to_config(&layout);
        w.set_control(Control {
            generation: 0,
            _pad: 0,
            config: [cfg, cfg],
            _pad2: [0; 3],
        })?;
        Ok(w)
    }

    /// Opens the maps pinned in `dir` (by `Dataplane::pin_maps`), checks their layout, and reads
    /// back what both generations hold, so that the next `apply` writes only the difference.
    pub fn open_pinned(dir: &Path) -> Result<Self, DataplaneError> {
        let mut maps = HashMap::new();
        for name in MAP_NAMES {
            let data = MapData::from_pin(dir.join(name)).map_err(DataplaneError::map(name))?;
            let map = Map::from_map_data(data).map_err(DataplaneError::map(name))?;
            maps.insert(name, map);
        }
        let layout: Layout = {
            let m = maps
                .get(maps::LAYOUT)
                .ok_or(DataplaneError::MissingMap(maps::LAYOUT))?;
            Array::<&MapData, Layout>::try_from(m)
                .and_then(|a| a.get(&0, 0))
                .map_err(DataplaneError::map(maps::LAYOUT))?
        };
        if layout.version != LAYOUT_VERSION {
            return Err(DataplaneError::Layout {
                found: layout.version,
                expected: LAYOUT_VERSION,
            });
        }
        let (exact, ports, names, hits) = shared_tables(|n| maps.get(n), &layout)?;
        let mut w = Self {
            store: Store::Pinned(maps),
            caps: Capacities::default(),
            gens: [Content::default(), Content::default()],
            slots: Slots::default(),
            full: true,
            entry_ids: Vec::new(),
            exact,
            ports,
            names,
            hits,
        };
        w.caps = w.read_capacities()?;
        w.reload()?;
        Ok(w)
    }

    fn read_capacities(&self) -> Result<Capacities, DataplaneError> {
        let max = |name: &'static str| -> Result<u32, DataplaneError> {
            let m = self
                .store
                .get(name)
                .ok_or(DataplaneError::MissingMap(name))?;
            let data = map_data(m).ok_or(DataplaneError::MissingMap(name))?;
            Ok(data
                .info()
                .map_err(DataplaneError::map(name))?
                .max_entries())
        };
        Ok(Capacities {
            exact: cuckoo::capacity_of(max(maps::EXACT)?),
            cidr: max(maps::CIDR)? / 2,
            names: Capacities::names_of(max(maps::NAMES)?),
            flows: max(maps::FLOWS)? * FLOW_WAYS as u32,
            pending: max(maps::PENDING)?,
            entry_ids: max(maps::ENTRY_HITS)?,
            events_bytes: max(maps::EVENTS)?,
        })
    }

    /// Re-reads both generations (and the entry ids of the active one) from the maps.
    pub fn reload(&mut self) -> Result<(), DataplaneError> {
        let mut gens = [Content::default(), Content::default()];
        for (mut k, v) in self.exact.entries() {
            let g = (k.generation & 1) as usize;
            k.generation = 0;
            gens[g].exact.insert(k, v);
        }
        {
            let m = self.map_ref(maps::CIDR)?;
            let t = LpmTrie::<&MapData, CidrData, EntryValue>::try_from(m)
                .map_err(DataplaneError::map(maps::CIDR))?;
            for kv in t.iter() {
                let (k, v) = kv.map_err(DataplaneError::map(maps::CIDR))?;
                let mut d = k.data();
                let g = (d.generation & 1) as usize;
                d.generation = 0;
                gens[g].cidr.insert((k.prefix_len(), d), v);
            }
        }
        for (mut k, v) in self.ports.entries() {
            let g = (k.generation & 1) as usize;
            k.generation = 0;
            gens[g].ports.insert(k, v);
        }
        for (mut k, v) in self.names.entries() {
            let g = (k.generation & 1) as usize;
            k.generation = 0;
            gens[g].names.insert(k, v);
        }
        let active = self.active_generation()?;
        self.slots = Slots::from_content(&gens[active as usize]);
        self.gens = gens;
        // What the maps hold may not be what the table would write (another version wrote
        // them, or an apply stopped half-way): the next apply compares every element.
        self.full = true;
        Ok(())
    }

    fn map_ref(&self, name: &'static str) -> Result<&Map, DataplaneError> {
        self.store.get(name).ok_or(DataplaneError::MissingMap(name))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, DataplaneError> {
        self.store
            .get_mut(name)
            .ok_or(DataplaneError::MissingMap(name))
    }

    fn array<V: aya::Pod>(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&mut Array<&mut MapData, V>) -> Result<(), aya::maps::MapError>,
    ) -> Result<(), DataplaneError> {
        let m = self.map_mut(name)?;
        let mut a = Array::<&mut MapData, V>::try_from(m).map_err(DataplaneError::map(name))?;
        f(&mut a).map_err(DataplaneError::map(name))
    }

    fn array_get<V: aya::Pod>(&self, name: &'static str, i: u32) -> Result<V, DataplaneError> {
        let m = self.map_ref(name)?;
        let a = Array::<&MapData, V>::try_from(m).map_err(DataplaneError::map(name))?;
        a.get(&i, 0).map_err(DataplaneError::map(name))
    }

    /// The generation in force.
    pub fn active_generation(&self) -> Result<u32, DataplaneError> {
        Ok(self.control()?.generation & 1)
    }

    /// The registry epoch in force: the count of applies modulo 256, which every flow entry
    /// records beside its decision (`FlowValue::generation`).
    pub fn epoch(&self) -> Result<u8, DataplaneError> {
        Ok(self.control()?.generation as u8)
    }

    /// The settings in force: the config of the generation the program reads.
    pub fn config_in_force(&self) -> Result<classifier_common::Config, DataplaneError> {
        let c = self.control()?;
        Ok(c.config[(c.generation & 1) as usize])
    }

    /// `CONTROL[0]`: the generation in force and both generations' settings.
    fn control(&self) -> Result<Control, DataplaneError> {
        self.array_get(maps::CONTROL, 0)
    }

    /// Writes `CONTROL[0]` whole (see `Control` for why a reader never sees it torn).
    fn set_control(&mut self, c: Control) -> Result<(), DataplaneError> {
        self.array::<Control>(maps::CONTROL, |a| a.set(0, c, 0))
    }

    /// The entry id of each entry of the last plan applied (index into `Plan::entries`).
    pub fn entry_ids(&self) -> &[u32] {
        &self.entry_ids
    }

    /// After re-adopting pinned maps: the services of the plan they hold (the daemon's state
    /// file has it), so that the next apply tells a kept entry's owner by its service's key
    /// rather than by its id.
    pub fn adopt_services(&mut self, services: &[crate::plan::Service]) {
        self.slots.set_services(services);
    }

    /// The capacities of the maps.
    pub fn capacities(&self) -> &Capacities {
        &self.caps
    }

    /// Applies `plan` and `settings`: the inactive generation is brought to the plan (only the
    /// difference is written), `CONTROL` flips to it in one write, then the other generation is
    /// brought to the same content. A plan that does not fit is refused before any write.
    pub fn apply(
        &mut self,
        plan: &Plan,
        settings: &Settings,
    ) -> Result<ApplyReport, DataplaneError> {
        let full = self.full;
        let mut p = self.slots.plan(plan, full)?;
        if full {
            for g in &self.gens {
                p.changes.delete_rest(g);
            }
        }
        let mut cfg = settings.to_config(&self.layout()?);
        let mut control = self.control()?;
        let active = control.generation & 1;
        let next = active ^ 1;
        // One byte, so that the flip stays a one-byte change of the element.
        let count = control.generation.wrapping_add(1) & 0xff;
        cfg.flags |= count << config_flags::EPOCH_SHIFT;
        let [exact, cidr, _ports, names] = p.changes.lens_after(&self.gens[next as usize]);
        for (map, needed, available) in [
            (maps::EXACT, exact, self.caps.exact),
            (maps::CIDR, cidr, self.caps.cidr),
            (maps::NAMES, names, self.caps.names),
        ] {
            if needed > available as usize {
                return Err(DataplaneError::Capacity {
                    map,
                    needed,
                    available: available as usize,
                });
            }
        }
        let max_id = p
            .entry_ids
            .iter()
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1);
        if max_id > self.caps.entry_ids as usize {
            return Err(DataplaneError::Capacity {
                map: maps::ENTRY_HITS,
                needed: max_id,
                available: self.caps.entry_ids as usize,
            });
        }
        // From here on the maps change: should anything fail, the generations no longer match
        // the table, and the next apply compares everything.
        self.full = true;
        let written = self.sync(next as u8, &p.changes)?;
        // Right before the flip: hits an id holds until then were its previous entry's. Those
        // of an entry that leaves in this apply (its id freed and taken again, or kept by a
        // slot that changes owner) are its final count.
        let freed: HashSet<u32> = p.freed().iter().copied().collect();
        let reset: Vec<u32> = p
            .new_ids()
            .chain(p.owner_changed().iter().copied())
            .collect();
        let taken: HashSet<u32> = p.new_ids().collect();
        let mut retired: Vec<(u32, u64)> = reset
            .iter()
            .zip(self.reset_hits(&reset)?)
            .filter(|(id, n)| *n != 0 && (!taken.contains(id) || freed.contains(id)))
            .map(|(id, n)| (*id, n))
            .collect();
        control.config[next as usize] = cfg;
        self.set_control(control)?;
        control.generation = count;
        self.set_control(control)?;
        // After the flip, the removed entries that no new one replaced have their final count.
        let gone: Vec<u32> = p
            .freed()
            .iter()
            .copied()
            .filter(|id| !taken.contains(id))
            .collect();
        retired.extend(
            gone.iter()
                .copied()
                .zip(self.hits_of(&gone)?)
                .filter(|(_, n)| *n != 0),
        );
        let synced = self.sync(active as u8, &p.changes)?;
        control.config[active as usize] = cfg;
        self.set_control(control)?;
        let shadowed = std::mem::take(&mut p.shadowed);
        self.entry_ids = std::mem::take(&mut p.entry_ids);
        self.slots.commit(p);
        self.full = false;
        let c = &self.gens[next as usize];
        Ok(ApplyReport {
            generation: next,
            written,
            synced,
            exact: c.exact.len(),
            cidr: c.cidr.len(),
            ports: c.ports.len(),
            names: c.names.len(),
            shadowed,
            retired,
        })
    }

    /// Writes `want` into generation `g`; returns the number of elements written or deleted.
    fn sync(&mut self, g: u8, want: &Changes) -> Result<usize, DataplaneError> {
        let mut have = std::mem::take(&mut self.gens[g as usize]);
        let r = self.sync_inner(g, &mut have, want);
        self.gens[g as usize] = have;
        r
    }

    fn sync_inner(
        &mut self,
        g: u8,
        have: &mut Content,
        want: &Changes,
    ) -> Result<usize, DataplaneError> {
        let mut n = 0;
        {
            let t = &mut self.exact;
            n += diff(&mut have.exact, &want.exact, |k, v| {
                let k = ExactKey {
                    generation: g,
                    ..*k
                };
                match v {
                    Some(v) => t.set(&k, v),
                    None => {
                        t.remove(&k);
                        Ok(())
                    }
                }
            })?;
        }
        {
            let m = self.map_mut(maps::CIDR)?;
            let mut t = LpmTrie::<&mut MapData, CidrData, EntryValue>::try_from(m)
                .map_err(DataplaneError::map(maps::CIDR))?;
            n += diff(&mut have.cidr, &want.cidr, |(len, d), v| {
                let k = Key::new(
                    *len,
                    CidrData {
                        generation: g,
                        ..*d
                    },
                );
                match v {
                    Some(v) => t.insert(&k, v, 0),
                    None => t.remove(&k),
                }
            })
            .map_err(DataplaneError::map(maps::CIDR))?;
        }
        {
            let t = &mut self.names;
            n += diff(&mut have.names, &want.names, |k, v| {
                let k = NameKey {
                    generation: g,
                    ..*k
                };
                match v {
                    Some(v) => t.set(&k, v),
                    None => {
                        t.remove(&k);
                        Ok(())
                    }
                }
            })?;
        }
        {
            let t = &mut self.ports;
            n += diff(&mut have.ports, &want.ports, |k, v| {
                let k = PortKey {
                    generation: g,
                    ..*k
                };
                match v {
                    Some(v) => t.set(&k, v),
                    None => t.remove(&k),
                }
            })?;
        }
        Ok(n)
    }

    /// Per-CPU counters summed, indexed by `classifier_common::counter` (the first
    /// `counter::REPORTED`, with PACKETS, BY_VERDICT and BY_STAGE derived; see [`report`]).
    pub fn counters(&self) -> Result<Vec<u64>, DataplaneError> {
        let cpus = self.cpu_counts()?;
        let raw: Vec<u64> = (0..counter::COUNT as usize)
            .map(|i| cpus.iter().map(|c| c.counters[i]).sum())
            .collect();
        Ok(report(&raw))
    }

    /// Hits of entry `id`: its `ENTRY_HITS` word and its count in every CPU's hit cache slot
    /// (`CpuCounts::hits`, docs/decision.md §8). The word is read before and after the slots: a
    /// slot's count that moved to the word meanwhile (the word changed) is read again, so that
    /// it is counted once.
    pub fn entry_hits(&self, id: u32) -> Result<u64, DataplaneError> {
        if id as usize >= self.hits.words() {
            return Ok(0);
        }
        let word = self.hits.word(id as usize);
        let mut last = word.load(Ordering::Acquire);
        let mut cached = 0;
        for _ in 0..HIT_READS {
            let cpus = self.cpu_counts()?;
            let now = word.load(Ordering::Acquire);
            cached = cached_of(cpus.iter().map(|c| c.hits[hit_slot(id) as usize]), id);
            if now == last {
                return Ok(now.wrapping_add(cached));
            }
            last = now;
        }
        // The slot kept moving: the last read's word and slots, which may take a count that
        // moved between them twice (the word alone can read below zero after `reset_hits`).
        Ok(last.wrapping_add(cached))
    }

    /// Makes the hits of entries `ids` read 0 from now on: subtracts what each holds (its
    /// `ENTRY_HITS` word and its counts in every CPU's slot, `hits_of`) from its word, which the
    /// program only ever adds to. A count still in a slot reaches the word later and cancels
    /// out; until then the word reads below zero, so every reader adds with wrap-around. Hits
    /// counted between the read and the subtraction stay (the apply flips right after, so they
    /// are few and late).
    /// Returns what each held.
    fn reset_hits(&self, ids: &[u32]) -> Result<Vec<u64>, DataplaneError> {
        let held = self.hits_of(ids)?;
        for (&id, &n) in ids.iter().zip(&held) {
            if n != 0 {
                self.hits.word(id as usize).fetch_sub(n, Ordering::AcqRel);
            }
        }
        Ok(held)
    }

    /// Hits of every entry id (`hits_of` all of them).
    pub fn all_entry_hits(&self) -> Result<Vec<u64>, DataplaneError> {
        self.hits_of(&(0..self.hits.words() as u32).collect::<Vec<_>>())
    }

    /// Hits of each of `ids` (0 for an id past `ENTRY_HITS`), read as `entry_hits` reads one,
    /// with one read of every CPU's slots for all of them: the words, the slots, the words
    /// again; an id whose word changed meanwhile is read again alone.
    fn hits_of(&self, ids: &[u32]) -> Result<Vec<u64>, DataplaneError> {
        let n = self.hits.words();
        let word = |id: u32| {
            ((id as usize) < n).then(|| self.hits.word(id as usize).load(Ordering::Acquire))
        };
        let before: Vec<Option<u64>> = ids.iter().map(|&id| word(id)).collect();
        let cpus = self.cpu_counts()?;
        ids.iter()
            .zip(before)
            .map(|(&id, w)| match w {
                None => Ok(0),
                Some(w) if word(id) != Some(w) => self.entry_hits(id),
                Some(w) => {
                    let slots = cpus.iter().map(|c| c.hits[hit_slot(id) as usize]);
                    Ok(w.wrapping_add(cached_of(slots, id)))
                }
            })
            .collect()
    }

    /// Every CPU's counts (`COUNTERS[0]`), read at once.
    fn cpu_counts(&self) -> Result<aya::maps::PerCpuValues<CpuCounts>, DataplaneError> {
        PerCpuArray::<&MapData, CpuCounts>::try_from(self.map_ref(maps::COUNTERS)?)
            .and_then(|a| a.get(&0, 0))
            .map_err(DataplaneError::map(maps::COUNTERS))
    }

    /// The layout stamp (`LAYOUT[0]`): the flow table's bucket mask and hash seed.
    pub fn layout(&self) -> Result<Layout, DataplaneError> {
        self.array_get(maps::LAYOUT, 0)
    }

    fn flow_buckets(&self) -> Result<Array<&MapData, FlowBucket>, DataplaneError> {
        Array::try_from(self.map_ref(maps::FLOWS)?).map_err(DataplaneError::map(maps::FLOWS))
    }

    /// Every entry of the flow table.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, DataplaneError> {
        let mut out = Vec::new();
        for b in self.flow_buckets()?.iter() {
            let b = b.map_err(DataplaneError::map(maps::FLOWS))?;
            out.extend(b.slots.iter().filter_map(|s| s.entry()));
        }
        Ok(out)
    }

    /// One flow entry.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, DataplaneError> {
        let found = super::flowkey::find(&self.flow_buckets()?, &self.layout()?, key)
            .map_err(DataplaneError::map(maps::FLOWS))?;
        Ok(found
            .and_then(|(_, b, i)| b.slots[i].entry())
            .map(|(_, v)| v))
    }

    /// Empties the flow table and the split-ClientHello state.
    pub fn clear_flows(&mut self) -> Result<(), DataplaneError> {
        {
            let m = self.map_mut(maps::FLOWS)?;
            let mut a = Array::<&mut MapData, FlowBucket>::try_from(m)
                .map_err(DataplaneError::map(maps::FLOWS))?;
            for i in 0..a.len() {
                a.set(i, FlowBucket::default(), 0)
                    .map_err(DataplaneError::map(maps::FLOWS))?;
            }
        }
        let m = self.map_mut(maps::PENDING)?;
        let mut h =
            BpfHashMap::<&mut MapData, FlowKey, classifier_common::PendingValue>::try_from(m)
                .map_err(DataplaneError::map(maps::PENDING))?;
        clear(&mut h).map_err(DataplaneError::map(maps::PENDING))
    }

    /// Pins every map in `dir` (one file per map name).
    pub fn pin(&self, dir: &Path) -> Result<(), DataplaneError> {
        for name in MAP_NAMES {
            let m = self.map_ref(name)?;
            let path: PathBuf = dir.join(name);
            m.pin(&path).map_err(|source| DataplaneError::Pin {
                map: name,
                path,
                source: Box::new(source),
            })?;
        }
        Ok(())
    }

    /// Elements per map: registry maps per generation (the active one), and the flow table.
    pub fn fill_levels(&self) -> Result<Vec<(String, usize)>, DataplaneError> {
        let g = self.active_generation()? as usize;
        let c = &self.gens[g];
        let flows = self.flows()?.len();
        Ok(vec![
            (maps::EXACT.to_owned(), c.exact.len()),
            (maps::CIDR.to_owned(), c.cidr.len()),
            (maps::PORTS.to_owned(), c.ports.len()),
            (maps::NAMES.to_owned(), c.names.len()),
            (maps::FLOWS.to_owned(), flows),
        ])
    }
}

/// Writes the elements of `want` that `have` does not already hold through `op` (Some:
/// insert, None: delete), deletions first, updating `have` as it goes; returns the number of
/// operations.
fn diff<K: Hash + Eq + Clone, V: PartialEq + Clone, E: Gone>(
    have: &mut FastMap<K, V>,
    want: &FastMap<K, Option<V>>,
    mut op: impl FnMut(&K, Option<&V>) -> Result<(), E>,
) -> Result<usize, E> {
    let mut n = 0;
    for (k, _) in want.iter().filter(|(_, v)| v.is_none()) {
        if !have.contains_key(k) {
            continue;
        }
        match op(k, None) {
            Ok(()) => {}
            Err(e) if e.gone() => {}
            Err(e) => return Err(e),
        }
        have.remove(k);
        n += 1;
    }
    for (k, v) in want {
        let Some(v) = v else { continue };
        if have.get(k) != Some(v) {
            op(k, Some(v))?;
            have.insert(k.clone(), v.clone());
            n += 1;
        }
    }
    Ok(n)
}

/// Errors of [`diff`]'s writes: whether one says the key to remove was already gone.
trait Gone {
    fn gone(&self) -> bool;
}

impl Gone for aya::maps::MapError {
    fn gone(&self) -> bool {
        matches!(self, aya::maps::MapError::KeyNotFound)
    }
}

impl Gone for DataplaneError {
    fn gone(&self) -> bool {
        false
    }
}

/// The tables written through shared mappings (`EXACT`, `PORTS`, `NAME_INDEX` and `NAMES`),
/// mapped from the maps that `get` finds, as `layout` describes them; and `ENTRY_HITS`, read
/// through one.
fn shared_tables<'m>(
    get: impl Fn(&'static str) -> Option<&'m Map>,
    layout: &Layout,
) -> Result<(ExactTable, PortTable, NameTable, Shared), DataplaneError> {
    let data = |name| {
        get(name)
            .and_then(map_data)
            .ok_or(DataplaneError::MissingMap(name))
    };
    Ok((
        ExactTable::map(data(maps::EXACT)?, layout.exact_buckets, layout.exact_seed)?,
        PortTable::map(data(maps::PORTS)?)?,
        NameTable::map(
            data(maps::NAME_INDEX)?,
            data(maps::NAMES)?,
            layout.name_buckets,
            layout.name_seed,
        )?,
        Shared::map(data(maps::ENTRY_HITS)?, maps::ENTRY_HITS, 8)?,
    ))
}

/// Reads of one entry's hits before `MapWriter::entry_hits` settles for its last read.
const HIT_READS: usize = 8;

/// The count of entry `id` among a slot's values on every CPU.
fn cached_of(values: impl Iterator<Item = u64>, id: u32) -> u64 {
    values
        .filter_map(hit_parts)
        .filter(|&(i, _)| i == id)
        .map(|(_, c)| u64::from(c))
        .sum()
}

/// The `MapData` of a map of any type the writer uses.
fn map_data(m: &Map) -> Option<&MapData> {
    match m {
        Map::HashMap(d) | Map::LruHashMap(d) | Map::LpmTrie(d) | Map::Array(d) => Some(d),
        Map::PerCpuArray(d) | Map::RingBuf(d) | Map::ProgramArray(d) => Some(d),
        _ => None,
    }
}

/// A seed for a table's hash (flows, exact, names), from the kernel's random source (the clock if that
/// fails: the seed guards against aimed collisions, nothing depends on it being secret).
pub(crate) fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == b.len() as isize {
        return u64::from_le_bytes(b);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed)
}

/// Deletes every key of a hash map.
fn clear<K: aya::Pod, V: aya::Pod>(
    h: &mut BpfHashMap<&mut MapData, K, V>,
) -> Result<(), aya::maps::MapError> {
    let keys: Vec<K> = h.keys().collect::<Result<_, _>>()?;
    for k in keys {
        match h.remove(&k) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The reported counters from the raw counters (`CpuCounts::counters`, summed over the CPUs): the program counts each packet once,
/// by (verdict, stage) at `counter::DECIDED`; PACKETS, BY_VERDICT and BY_STAGE are its sums.
pub fn report(raw: &[u64]) -> Vec<u64> {
    let mut out = raw[..counter::REPORTED as usize].to_vec();
    out[counter::PACKETS as usize] = 0;
    for v in 0..verdict::COUNT as u8 {
        out[(counter::BY_VERDICT + u32::from(v)) as usize] = 0;
    }
    for s in 0..stage::COUNT as u8 {
        out[(counter::BY_STAGE + u32::from(s)) as usize] = 0;
    }
    out[counter::NEW_FLOWS as usize] = 0;
    for v in 0..8u8 {
        for s in 0..16u8 {
            let n = raw[counter::decided(v, s) as usize];
            if n == 0 {
                continue;
            }
            out[counter::PACKETS as usize] += n;
            if usize::from(v) < verdict::COUNT {
                out[(counter::BY_VERDICT + u32::from(v)) as usize] += n;
            }
            if counter::starts_flow(s) {
                out[counter::NEW_FLOWS as usize] += n;
            }
            let s = if s == counter::POLICY_NO_FLOW {
                stage::POLICY
            } else {
                s
            };
            if usize::from(s) < stage::COUNT {
                out[(counter::BY_STAGE + u32::from(s)) as usize] += n;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_counters_are_the_sums_of_the_decided_matrix() {
        let mut raw = vec![0u64; counter::COUNT as usize];
        raw[counter::decided(verdict::PASS, stage::FLOW) as usize] = 5;
        raw[counter::decided(verdict::PASS, stage::EXACT) as usize] = 2;
        raw[counter::decided(verdict::DROP, stage::POLICY) as usize] = 3;
        raw[counter::decided(verdict::DROP, counter::POLICY_NO_FLOW) as usize] = 4;
        raw[counter::decided(verdict::PASS, stage::PENDING) as usize] = 6;
        raw[counter::NEW_FLOWS as usize] = 70;
        // Stale values in the derived slots (an older layout) are not reported.
        raw[counter::PACKETS as usize] = 99;
        let r = report(&raw);
        assert_eq!(r.len(), counter::REPORTED as usize);
        assert_eq!(r[counter::PACKETS as usize], 20);
        assert_eq!(
            r[(counter::BY_VERDICT + u32::from(verdict::PASS)) as usize],
            13
        );
        assert_eq!(
            r[(counter::BY_VERDICT + u32::from(verdict::DROP)) as usize],
            7
        );
        assert_eq!(r[(counter::BY_STAGE + u32::from(stage::FLOW)) as usize], 5);
        assert_eq!(r[(counter::BY_STAGE + u32::from(stage::EXACT)) as usize], 2);
        // Both policy cells are POLICY; new flows are the decisions of the stages that start
        // one (EXACT and the flow-starting POLICY cell), whatever the raw slot held.
        assert_eq!(
            r[(counter::BY_STAGE + u32::from(stage::POLICY)) as usize],
            7
        );
        assert_eq!(r[counter::NEW_FLOWS as usize], 5);
    }
}
