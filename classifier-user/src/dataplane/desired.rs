//! What the maps must hold for a plan, per generation (keys carry generation 0 here), and the
//! entry ids given to its entries.
//!
//! The writer keeps a [`Slots`] table between applies: every map slot the last plan occupied,
//! with its entry id and the value written for it. [`Slots::plan`] walks a new plan once (one
//! hash probe per entry, no allocation for entries whose slot already exists) and returns only
//! the map elements whose value changes ([`Changes`]); [`Slots::commit`] records them once they
//! are written. The cost of an apply beyond that one pass grows with the size of the change.

use std::collections::HashMap;
use std::net::IpAddr;

use classifier_common::{
    family, name_hash, name_kind, name_match, proto, CidrData, EntryValue, ExactKey, NameKey,
    NameValue, PortKey, PortValue, CIDR_FIXED_BITS, MAX_NAME_LEN,
};

use super::DataplaneError;
use crate::plan::{Cidr, Match, Plan, Service, L4};

/// A hash map with a fast (per-process seeded) hasher: the registry tables hold up to millions
/// of small fixed-size keys.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The content of one generation, keys with generation 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content {
    pub exact: FastMap<ExactKey, EntryValue>,
    pub cidr: FastMap<(u32, CidrData), EntryValue>,
    pub ports: FastMap<PortKey, PortValue>,
    pub names: FastMap<NameKey, NameValue>,
}

/// Map elements to write into a generation: `Some` to insert, `None` to delete.
#[derive(Debug, Default)]
pub struct Changes {
    pub exact: FastMap<ExactKey, Option<EntryValue>>,
    pub cidr: FastMap<(u32, CidrData), Option<EntryValue>>,
    pub ports: FastMap<PortKey, Option<PortValue>>,
    pub names: FastMap<NameKey, Option<NameValue>>,
}

impl Changes {
    /// Adds a deletion for every element of `c` not already in the changes (a full rewrite).
    pub fn delete_rest(&mut self, c: &Content) {
        for k in c.exact.keys() {
            self.exact.entry(*k).or_insert(None);
        }
        for k in c.cidr.keys() {
            self.cidr.entry(*k).or_insert(None);
        }
        for k in c.ports.keys() {
            self.ports.entry(*k).or_insert(None);
        }
        for k in c.names.keys() {
            self.names.entry(*k).or_insert(None);
        }
    }

    /// Elements per map (exact, cidr, ports, names) once the changes are applied to `c`.
    pub fn lens_after(&self, c: &Content) -> [usize; 4] {
        fn after<K: Eq + std::hash::Hash, V, W>(
            have: &FastMap<K, V>,
            ch: &FastMap<K, Option<W>>,
        ) -> usize {
            let mut n = have.len() as isize;
            for (k, w) in ch {
                n += isize::from(w.is_some()) - isize::from(have.contains_key(k));
            }
            n as usize
        }
        [
            after(&c.exact, &self.exact),
            after(&c.cidr, &self.cidr),
            after(&c.ports, &self.ports),
            after(&c.names, &self.names),
        ]
    }
}

/// A slot: the map key an entry occupies; entries in one slot share its entry id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Exact(ExactKey),
    Cidr(u32, CidrData),
    Name(NameKey),
    Port(PortKey),
}

/// A slot of the last plan applied.
#[derive(Clone, Copy, Debug)]
struct Rec {
    /// The value written for it (its entry id included).
    value: EntryValue,
    /// The plan pass that last met it, and the entry that decided it in that pass.
    seen: u64,
    first: u32,
}

#[derive(Clone, Debug)]
struct NameRec {
    rec: Rec,
    bytes: Box<[u8]>,
}

/// Every slot of the last plan applied, the entry ids in use, and what the ports map holds
/// because of names.
#[derive(Debug, Default)]
pub struct Slots {
    exact: FastMap<ExactKey, Rec>,
    cidr: FastMap<(u32, CidrData), Rec>,
    names: FastMap<NameKey, NameRec>,
    ports: FastMap<PortKey, Rec>,
    /// Name kinds and wildcard label bits per port (network order).
    port_names: FastMap<u16, (u8, u64)>,
    /// (protocol, port in network order) of every CIDR entry: `PortValue::has_cidr`.
    cidr_ports: FastMap<(u8, u16), ()>,
    /// Free entry ids below `next`, largest first.
    free: Vec<u32>,
    next: u32,
    pass: u64,
    /// A hash of the key (`service_hash`) of each service of the last plan, by service id:
    /// whose a kept slot was. Empty when the table was rebuilt from the maps (`from_content`)
    /// and not told (`set_services`).
    services: Vec<u64>,
}

/// A hash of a service's key (namespace, name, host), without formatting it.
fn service_hash(s: &Service) -> u64 {
    use std::hash::BuildHasher as _;
    foldhash::fast::FixedState::with_seed(0x6d65_7368_636c_6173).hash_one((
        &s.namespace,
        &s.name,
        &s.host,
    ))
}

/// A slot the plan adds.
struct NewSlot {
    key: Key,
    first: u32,
    bytes: Option<Box<[u8]>>,
    value: EntryValue,
}

/// The outcome of [`Slots::plan`]: the elements to write, and what [`Slots::commit`] records.
pub struct Planned {
    pub changes: Changes,
    /// The entry id of each plan entry (index into `Plan::entries`).
    pub entry_ids: Vec<u32>,
    /// Entries that lost to an earlier entry of the same slot.
    pub shadowed: Vec<String>,
    pass: u64,
    new: Vec<NewSlot>,
    updated: Vec<(Key, EntryValue)>,
    removed: Vec<Key>,
    port_names: FastMap<u16, (u8, u64)>,
    cidr_ports: FastMap<(u8, u16), ()>,
    free: Vec<u32>,
    next: u32,
    /// Ids of kept slots that now decide for another service or with another verdict.
    owner_changed: Vec<u32>,
    /// Ids of the slots this plan removes (some of them reused by `new`).
    freed: Vec<u32>,
    services: Vec<u64>,
}

impl Planned {
    /// The ids this plan gives to slots that had none. An id is reused once its slot is gone,
    /// so whatever hits one holds were counted for another entry.
    pub fn new_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.new.iter().map(|s| s.value.entry_id)
    }

    /// The ids of kept slots whose entry now belongs to another service (by its key, not its
    /// id, which moves when services are added before it) or has another verdict: hits counted
    /// until now were the previous owner's.
    pub fn owner_changed(&self) -> &[u32] {
        &self.owner_changed
    }

    /// The ids of the slots this plan removes. Those that `new_ids` does not list again stay
    /// free.
    pub fn freed(&self) -> &[u32] {
        &self.freed
    }
}

fn addr16(ip: &IpAddr) -> (u8, [u8; 16]) {
    let mut a = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            a[..4].copy_from_slice(&v4.octets());
            (family::V4, a)
        }
        IpAddr::V6(v6) => (family::V6, v6.octets()),
    }
}

/// The `EXACT` key (generation 0) of an IP entry.
pub(super) fn exact_key(addr: &IpAddr, port: u16, protocol: L4) -> ExactKey {
    let (fam, a) = addr16(addr);
    ExactKey {
        generation: 0,
        family: fam,
        proto: protocol.number(),
        _pad: 0,
        port: port.to_be(),
        _pad2: 0,
        addr: a,
    }
}

/// The `CIDR` key (prefix length in bits, data with generation 0) of a CIDR entry.
pub(super) fn cidr_key(cidr: &Cidr, port: u16, protocol: L4) -> (u32, CidrData) {
    let (fam, a) = addr16(&cidr.addr);
    (
        CIDR_FIXED_BITS + cidr.len as u32,
        CidrData {
            generation: 0,
            family: fam,
            proto: protocol.number(),
            _pad: 0,
            port: port.to_be(),
            _pad2: 0,
            addr: a,
        },
    )
}

/// Normalizes `name` into `buf` (see [`normalize_name`]); returns (kind, length).
fn normalize_into(name: &str, buf: &mut [u8; MAX_NAME_LEN]) -> Result<(u8, usize), DataplaneError> {
    let mut n = name.as_bytes();
    if let Some(rest) = n.strip_suffix(b".") {
        n = rest;
    }
    let (kind, bytes) = match n.strip_prefix(b"*") {
        Some(rest) => (name_match::SUFFIX, rest),
        None => (name_match::EXACT, n),
    };
    if bytes.is_empty() || bytes.len() >= MAX_NAME_LEN {
        return Err(DataplaneError::NameTooLong {
            name: name.to_owned(),
            len: bytes.len(),
            max: MAX_NAME_LEN - 1,
        });
    }
    for (d, s) in buf.iter_mut().zip(bytes) {
        *d = s.to_ascii_lowercase();
    }
    Ok((kind, bytes.len()))
}

/// A name as the kernel matches it: lower case, one trailing dot removed; `*.x.y` as the
/// suffix `.x.y`. Returns (kind, bytes).
pub fn normalize_name(name: &str) -> Result<(u8, Vec<u8>), DataplaneError> {
    let mut buf = [0u8; MAX_NAME_LEN];
    let (kind, len) = normalize_into(name, &mut buf)?;
    Ok((kind, buf[..len].to_vec()))
}

fn name_key(kind: u8, port: u16, bytes: &[u8]) -> NameKey {
    NameKey {
        hash: name_hash(bytes),
        generation: 0,
        kind,
        port,
        _pad: 0,
    }
}

fn name_value(bytes: &[u8], ev: EntryValue) -> NameValue {
    let mut nv = NameValue {
        entry: ev,
        len: bytes.len() as u16,
        ..NameValue::default()
    };
    nv.name[..bytes.len()].copy_from_slice(bytes);
    nv
}

/// A hash collision found while planning: (entry index that met it, earlier name, later name,
/// port in network order). The one met first in plan order is reported.
type Collision = (usize, Vec<u8>, Vec<u8>, u16);

/// The collision of name `n` (its entry first met at `first`) with `other` (at `other_first`)
/// on `port`: met at the later of the two, the earlier name first.
fn collision_of(first: u32, n: &[u8], other_first: u32, other: &[u8], port: u16) -> Collision {
    if other_first < first {
        (first as usize, other.to_vec(), n.to_vec(), port)
    } else {
        (other_first as usize, n.to_vec(), other.to_vec(), port)
    }
}

fn keep_first(c: &mut Option<Collision>, new: Collision) {
    if c.as_ref().is_none_or(|o| new.0 < o.0) {
        *c = Some(new);
    }
}

fn collision_error(c: Collision) -> DataplaneError {
    DataplaneError::HashCollision {
        a: String::from_utf8_lossy(&c.1).into_owned(),
        b: String::from_utf8_lossy(&c.2).into_owned(),
        port: u16::from_be(c.3),
    }
}

impl Slots {
    /// Rebuilds the table from the content of the generation in force (read back from pins).
    pub fn from_content(c: &Content) -> Self {
        let rec = |value: EntryValue| Rec {
            value,
            seen: 0,
            first: 0,
        };
        let mut s = Slots::default();
        let mut used = Vec::new();
        for (k, v) in &c.exact {
            s.exact.insert(*k, rec(*v));
            used.push(v.entry_id);
        }
        for (k, v) in &c.cidr {
            s.cidr.insert(*k, rec(*v));
            s.cidr_ports.insert((k.1.proto, k.1.port), ());
            used.push(v.entry_id);
        }
        for (k, v) in &c.names {
            let bytes: Box<[u8]> = v.name[..(v.len as usize).min(v.name.len())].into();
            s.names.insert(
                *k,
                NameRec {
                    rec: rec(v.entry),
                    bytes,
                },
            );
            used.push(v.entry.entry_id);
        }
        for (k, v) in &c.ports {
            if v.has_capture == 1 {
                s.ports.insert(*k, rec(v.capture));
                used.push(v.capture.entry_id);
            }
            if k.proto == proto::TCP && (v.name_kinds != 0 || v.suffix_labels != 0) {
                s.port_names.insert(k.port, (v.name_kinds, v.suffix_labels));
            }
        }
        used.sort_unstable();
        used.dedup();
        s.next = used.last().map_or(0, |m| m + 1);
        let mut it = used.iter().peekable();
        for id in 0..s.next {
            if it.peek() == Some(&&id) {
                it.next();
            } else {
                s.free.push(id);
            }
        }
        s.free.reverse();
        s
    }

    /// Names the services of the plan whose content the table was rebuilt from, so that the
    /// next plan tells a kept slot's owner by its service's key.
    pub fn set_services(&mut self, services: &[Service]) {
        self.services = services.iter().map(service_hash).collect();
    }

    /// Walks `plan` and works out what changes against the last plan committed. With `full`,
    /// every element the plan needs is in the changes (to rewrite maps whose content is not
    /// known to match the table). Changes nothing that a later `plan` relies on: until
    /// [`Slots::commit`], the table stays that of the last plan committed.
    pub fn plan(&mut self, plan: &Plan, full: bool) -> Result<Planned, DataplaneError> {
        self.pass += 1;
        let pass = self.pass;
        let n = plan.entries.len();
        let mut entry_ids: Vec<u32> = Vec::with_capacity(n);
        let mut shadowed_at: Vec<(usize, usize)> = Vec::new();
        let mut new: Vec<NewSlot> = Vec::new();
        let mut new_at: FastMap<Key, usize> = FastMap::default();
        // Entries of new slots, whose ids are known once the removed slots are freed.
        let mut fix: Vec<(usize, usize)> = Vec::new();
        let mut updated: Vec<(Key, EntryValue)> = Vec::new();
        let mut kinds: FastMap<u16, (u8, u64)> = FastMap::default();
        let mut cidr_ports: FastMap<(u8, u16), ()> = FastMap::default();
        let mut seen = [0usize; 4];
        let mut collision: Option<Collision> = None;
        let mut buf = [0u8; MAX_NAME_LEN];
        let mut owner_changed: Vec<u32> = Vec::new();
        // The id each service of the last plan has in this one (by key; u32::MAX: gone), or
        // nothing when every service kept its id (most reloads: no map to build).
        let services: Vec<u64> = plan.services.iter().map(service_hash).collect();
        let remap: Vec<u32> = if services.starts_with(&self.services) {
            Vec::new()
        } else {
            let now: FastMap<u64, u32> = services
                .iter()
                .zip(&plan.services)
                .map(|(h, s)| (*h, s.id))
                .collect();
            self.services
                .iter()
                .map(|h| now.get(h).copied().unwrap_or(u32::MAX))
                .collect()
        };

        for (i, e) in plan.entries.iter().enumerate() {
            let value = |id: u32| EntryValue {
                service_id: e.service_id,
                entry_id: id,
                verdict: e.verdict.code(),
                _pad: [0; 3],
            };
            let mut name: &[u8] = &[];
            let key = match &e.matcher {
                Match::Ip {
                    addr,
                    port,
                    protocol,
                } => Key::Exact(exact_key(addr, *port, *protocol)),
                Match::Cidr {
                    cidr,
                    port,
                    protocol,
                } => {
                    let (len, d) = cidr_key(cidr, *port, *protocol);
                    cidr_ports.insert((d.proto, d.port), ());
                    Key::Cidr(len, d)
                }
                Match::Sni { name: n, port } | Match::Host { name: n, port } => {
                    let (kind, len) = normalize_into(n, &mut buf)?;
                    name = &buf[..len];
                    let pk = port.to_be();
                    let k = kinds.entry(pk).or_default();
                    if matches!(e.matcher, Match::Sni { .. }) {
                        k.0 |= name_kind::TLS;
                    } else {
                        k.0 |= name_kind::HTTP | name_kind::H2;
                    }
                    if kind == name_match::SUFFIX {
                        let labels = name.iter().filter(|&&b| b == b'.').count();
                        if labels < 64 {
                            k.1 |= 1u64 << labels;
                        }
                    }
                    Key::Name(name_key(kind, pk, name))
                }
                Match::Port { port, protocol } => Key::Port(PortKey {
                    generation: 0,
                    proto: protocol.number(),
                    port: port.to_be(),
                }),
            };
            // A slot of the last plan: its id stays.
            let rec = match &key {
                Key::Exact(k) => self.exact.get_mut(k).map(|r| (r, 0)),
                Key::Cidr(l, d) => self.cidr.get_mut(&(*l, *d)).map(|r| (r, 1)),
                Key::Name(k) => self
                    .names
                    .get_mut(k)
                    .filter(|r| *r.bytes == *name)
                    .map(|r| (&mut r.rec, 2)),
                Key::Port(k) => self.ports.get_mut(k).map(|r| (r, 3)),
            };
            if let Some((r, t)) = rec {
                let id = r.value.entry_id;
                entry_ids.push(id);
                if r.seen == pass {
                    shadowed_at.push((i, r.first as usize));
                    continue;
                }
                r.seen = pass;
                r.first = i as u32;
                seen[t] += 1;
                let v = value(id);
                let owner = remap
                    .get(r.value.service_id as usize)
                    .copied()
                    .unwrap_or(r.value.service_id);
                if v.verdict != r.value.verdict || v.service_id != owner {
                    owner_changed.push(id);
                }
                if full || v != r.value {
                    updated.push((key, v));
                }
                continue;
            }
            // A new slot: its id is assigned below.
            entry_ids.push(u32::MAX);
            match new_at.get(&key) {
                Some(&j) => {
                    let s: &NewSlot = &new[j];
                    if let Some(b) = s.bytes.as_deref().filter(|b| *b != name) {
                        keep_first(
                            &mut collision,
                            (i, b.to_vec(), name.to_vec(), port_of(&key)),
                        );
                        continue;
                    }
                    shadowed_at.push((i, s.first as usize));
                    fix.push((i, j));
                }
                None => {
                    new_at.insert(key, new.len());
                    fix.push((i, new.len()));
                    new.push(NewSlot {
                        key,
                        first: i as u32,
                        bytes: matches!(key, Key::Name(_)).then(|| name.into()),
                        value: value(u32::MAX),
                    });
                }
            }
        }

        // A new name whose key an existing name of this plan holds.
        for s in &new {
            if let (Key::Name(k), Some(b)) = (&s.key, &s.bytes) {
                if let Some(r) = self.names.get(k).filter(|r| r.rec.seen == pass) {
                    let c = collision_of(s.first, b, r.rec.first, &r.bytes, k.port);
                    keep_first(&mut collision, c);
                }
            }
        }
        if let Some(c) = collision {
            return Err(collision_error(c));
        }

        // Slots of the last plan that this one does not have.
        let mut removed: Vec<Key> = Vec::new();
        let mut freed: Vec<u32> = Vec::new();
        if seen[0] < self.exact.len() {
            for (k, r) in &self.exact {
                if r.seen != pass {
                    removed.push(Key::Exact(*k));
                    freed.push(r.value.entry_id);
                }
            }
        }
        if seen[1] < self.cidr.len() {
            for (k, r) in &self.cidr {
                if r.seen != pass {
                    removed.push(Key::Cidr(k.0, k.1));
                    freed.push(r.value.entry_id);
                }
            }
        }
        if seen[2] < self.names.len() {
            for (k, r) in &self.names {
                if r.rec.seen != pass {
                    removed.push(Key::Name(*k));
                    freed.push(r.rec.value.entry_id);
                }
            }
        }
        if seen[3] < self.ports.len() {
            for (k, r) in &self.ports {
                if r.seen != pass {
                    removed.push(Key::Port(*k));
                    freed.push(r.value.entry_id);
                }
            }
        }

        // Ids: kept slots keep theirs; new slots, in plan order, take the smallest free one.
        let mut free = self.free.clone();
        free.extend_from_slice(&freed);
        free.sort_unstable_by(|a, b| b.cmp(a));
        let mut next = self.next;
        for s in &mut new {
            let id = free.pop().unwrap_or_else(|| {
                next += 1;
                next - 1
            });
            s.value.entry_id = id;
        }
        for (i, j) in fix {
            entry_ids[i] = new[j].value.entry_id;
        }

        let mut changes = Changes::default();

        // The elements that change.
        for k in &removed {
            match k {
                Key::Exact(k) => {
                    changes.exact.insert(*k, None);
                }
                Key::Cidr(l, d) => {
                    changes.cidr.insert((*l, *d), None);
                }
                Key::Name(k) => {
                    changes.names.insert(*k, None);
                }
                Key::Port(_) => {}
            }
        }
        let mut touched_ports: Vec<PortKey> = Vec::new();
        let mut capture: FastMap<PortKey, EntryValue> = FastMap::default();
        let slots = updated
            .iter()
            .map(|(k, v)| (k, *v, None))
            .chain(new.iter().map(|s| (&s.key, s.value, Some(s))));
        for (k, v, s) in slots {
            match k {
                Key::Exact(k) => {
                    changes.exact.insert(*k, Some(v));
                }
                Key::Cidr(l, d) => {
                    changes.cidr.insert((*l, *d), Some(v));
                }
                Key::Name(nk) => {
                    let bytes = match s {
                        Some(s) => s.bytes.as_deref().unwrap_or_default(),
                        None => &*self.names[nk].bytes,
                    };
                    changes.names.insert(*nk, Some(name_value(bytes, v)));
                }
                Key::Port(pk) => {
                    capture.insert(*pk, v);
                    touched_ports.push(*pk);
                }
            }
        }

        // Ports: capture and name kinds of every port whose either changes.
        for k in &removed {
            if let Key::Port(pk) = k {
                touched_ports.push(*pk);
            }
        }
        let tcp = |port: u16| PortKey {
            generation: 0,
            proto: proto::TCP,
            port,
        };
        for (port, k) in &kinds {
            if full || self.port_names.get(port) != Some(k) {
                touched_ports.push(tcp(*port));
            }
        }
        for port in self.port_names.keys() {
            if !kinds.contains_key(port) {
                touched_ports.push(tcp(*port));
            }
        }
        let port_key = |&(proto, port): &(u8, u16)| PortKey {
            generation: 0,
            proto,
            port,
        };
        for k in cidr_ports.keys() {
            if full || !self.cidr_ports.contains_key(k) {
                touched_ports.push(port_key(k));
            }
        }
        for k in self.cidr_ports.keys() {
            if !cidr_ports.contains_key(k) {
                touched_ports.push(port_key(k));
            }
        }
        for pk in touched_ports {
            let cap = capture.get(&pk).copied().or_else(|| {
                self.ports
                    .get(&pk)
                    .filter(|r| r.seen == pass)
                    .map(|r| r.value)
            });
            let names = (pk.proto == proto::TCP)
                .then(|| kinds.get(&pk.port))
                .flatten();
            let has_cidr = cidr_ports.contains_key(&(pk.proto, pk.port));
            let v = (cap.is_some() || names.is_some() || has_cidr).then(|| {
                let mut pv = PortValue {
                    has_cidr: has_cidr.into(),
                    ..PortValue::default()
                };
                if let Some(c) = cap {
                    pv.capture = c;
                    pv.has_capture = 1;
                }
                if let Some((k, labels)) = names {
                    pv.name_kinds = *k;
                    pv.suffix_labels = *labels;
                }
                pv
            });
            changes.ports.insert(pk, v);
        }

        let mut shadowed = Vec::with_capacity(shadowed_at.len());
        for (i, first) in shadowed_at {
            shadowed.push(format!(
                "entry {i} ({}) has the same match as entry {first} and is shadowed by it",
                plan.entries[i].service
            ));
        }
        Ok(Planned {
            changes,
            entry_ids,
            shadowed,
            pass,
            new,
            updated,
            removed,
            port_names: kinds,
            cidr_ports,
            free,
            next,
            owner_changed,
            freed,
            services,
        })
    }

    /// Records a plan whose changes are now written in both generations.
    pub fn commit(&mut self, p: Planned) {
        let pass = p.pass;
        for k in p.removed {
            match k {
                Key::Exact(k) => {
                    self.exact.remove(&k);
                }
                Key::Cidr(l, d) => {
                    self.cidr.remove(&(l, d));
                }
                Key::Name(k) => {
                    self.names.remove(&k);
                }
                Key::Port(k) => {
                    self.ports.remove(&k);
                }
            }
        }
        for (k, v) in p.updated {
            match k {
                Key::Exact(k) => self.exact.get_mut(&k).map(|r| r.value = v),
                Key::Cidr(l, d) => self.cidr.get_mut(&(l, d)).map(|r| r.value = v),
                Key::Name(k) => self.names.get_mut(&k).map(|r| r.rec.value = v),
                Key::Port(k) => self.ports.get_mut(&k).map(|r| r.value = v),
            };
        }
        for s in p.new {
            let rec = Rec {
                value: s.value,
                seen: pass,
                first: s.first,
            };
            match s.key {
                Key::Exact(k) => {
                    self.exact.insert(k, rec);
                }
                Key::Cidr(l, d) => {
                    self.cidr.insert((l, d), rec);
                }
                Key::Name(k) => {
                    let bytes = s.bytes.unwrap_or_default();
                    self.names.insert(k, NameRec { rec, bytes });
                }
                Key::Port(k) => {
                    self.ports.insert(k, rec);
                }
            }
        }
        self.port_names = p.port_names;
        self.cidr_ports = p.cidr_ports;
        self.free = p.free;
        self.next = p.next;
        self.services = p.services;
    }
}

fn port_of(k: &Key) -> u16 {
    match k {
        Key::Name(k) => k.port,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::dataplane::desired_ref;
    use crate::plan::{Cidr, Entry, Verdict, L4};

    /// Applies `ch` to `c` as the writer does to a generation; returns the operations.
    fn write(c: &mut Content, ch: &Changes) -> usize {
        fn one<K: Eq + std::hash::Hash + Clone, V: PartialEq + Clone>(
            have: &mut FastMap<K, V>,
            want: &FastMap<K, Option<V>>,
        ) -> usize {
            let mut n = 0;
            for (k, v) in want {
                match v {
                    None if have.remove(k).is_some() => n += 1,
                    Some(v) if have.get(k) != Some(v) => {
                        have.insert(k.clone(), v.clone());
                        n += 1;
                    }
                    _ => {}
                }
            }
            n
        }
        one(&mut c.exact, &ch.exact)
            + one(&mut c.cidr, &ch.cidr)
            + one(&mut c.ports, &ch.ports)
            + one(&mut c.names, &ch.names)
    }

    fn fast<K: Eq + std::hash::Hash, V>(m: HashMap<K, V>) -> FastMap<K, V> {
        m.into_iter().collect()
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// One of a small pool of matches, so that plans share, shadow and drop slots.
    fn matcher(r: &mut Rng) -> Match {
        let a = r.below(12);
        let port = [80u16, 443, 8080][r.below(3)];
        let protocol = [L4::Tcp, L4::Udp][r.below(2)];
        match r.below(6) {
            0 => Match::Ip {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, a as u8)),
                port,
                protocol,
            },
            1 => Match::Ip {
                addr: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, a as u16)),
                port,
                protocol,
            },
            2 => Match::Cidr {
                cidr: Cidr {
                    addr: IpAddr::V4(Ipv4Addr::new(10, a as u8, 0, 0)),
                    len: [16u8, 24][r.below(2)],
                },
                port,
                protocol,
            },
            3 => Match::Sni {
                name: [
                    "a.example.com",
                    "*.Example.com",
                    "B.example.com.",
                    "*.x.y.z",
                ][a % 4]
                    .into(),
                port,
            },
            4 => Match::Host {
                name: ["a.example.com", "*.example.com", "c.example.org", "api.lab"][a % 4].into(),
                port,
            },
            _ => Match::Port { port, protocol },
        }
    }

    fn plan(r: &mut Rng) -> Plan {
        let mut p = Plan::default();
        for _ in 0..r.below(40) {
            let service_id = r.below(4) as u32;
            p.entries.push(Entry {
                matcher: matcher(r),
                service_id,
                service: format!("ns/svc-{service_id}/h"),
                verdict: [Verdict::Pass, Verdict::Redirect][r.below(2)],
            });
        }
        p
    }

    /// A kept slot changes owner when the service it decides for changes, known by the
    /// service's key: a service added before it moves its id and changes nothing.
    #[test]
    fn a_kept_slot_changes_owner_by_service_key_not_by_id() {
        use crate::plan::{Location, ServiceKind};
        let service = |name: &str| Service {
            id: 0,
            kind: ServiceKind::ServiceEntry,
            namespace: "ns".into(),
            name: name.into(),
            host: format!("{name}.example"),
            location: Location::MeshExternal,
            resolution: "STATIC".into(),
            ports: Vec::new(),
            addresses: Vec::new(),
        };
        // Each service has one entry, 10.0.0.<n>:443, n from the entry's list.
        let plan = |owners: &[(&str, u8, Verdict)]| {
            let mut p = Plan::default();
            for (name, n, verdict) in owners {
                let mut s = service(name);
                if !p.services.iter().any(|x: &Service| x.name == *name) {
                    s.id = p.services.len() as u32;
                    p.services.push(s);
                }
                let s = p.services.iter().find(|x| x.name == *name).expect("added");
                p.entries.push(Entry {
                    matcher: Match::Ip {
                        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, *n)),
                        port: 443,
                        protocol: L4::Tcp,
                    },
                    service_id: s.id,
                    service: s.key(),
                    verdict: *verdict,
                });
            }
            p
        };
        fn step(slots: &mut Slots, have: &mut Content, p: &Plan) -> (Vec<u32>, Vec<u32>) {
            let planned = slots.plan(p, false).expect("plan");
            write(have, &planned.changes);
            let out = (planned.entry_ids.clone(), planned.owner_changed().to_vec());
            slots.commit(planned);
            out
        }
        let (mut slots, mut have) = (Slots::default(), Content::default());
        let first = plan(&[("b", 1, Verdict::Pass), ("c", 2, Verdict::Pass)]);
        let (ids, _) = step(&mut slots, &mut have, &first);
        let content = have.clone();
        // A service before both: their ids move, their owners do not.
        let shifted = plan(&[
            ("a", 3, Verdict::Pass),
            ("b", 1, Verdict::Pass),
            ("c", 2, Verdict::Pass),
        ]);
        let (again, changed) = step(&mut slots, &mut have, &shifted);
        assert_eq!((&again[1..], changed), (&ids[..], vec![]));
        // Rebuilt from the maps (a restarted daemon), the table knows owners by id only, unless
        // told the services of the plan the maps hold.
        let mut adopted = Slots::from_content(&content);
        let by_id = adopted.plan(&shifted, true).expect("plan");
        assert_eq!(by_id.owner_changed(), &ids[..]);
        adopted.set_services(&first.services);
        let by_key = adopted.plan(&shifted, true).expect("plan");
        assert_eq!(by_key.owner_changed(), &[] as &[u32]);
        let mut step = |p: Plan| step(&mut slots, &mut have, &p);
        // 10.0.0.1 goes to c; 10.0.0.2 stays c's but redirects.
        let (now, changed) = step(plan(&[
            ("a", 3, Verdict::Pass),
            ("c", 1, Verdict::Pass),
            ("c", 2, Verdict::Redirect),
        ]));
        assert_eq!(&now[1..], &ids[..]);
        assert_eq!(changed, ids);
    }

    /// Plan after plan, the incremental writer leaves the maps, entry ids and warnings exactly
    /// as the full rebuild-and-diff did; re-adopting the content (full mode) writes nothing.
    #[test]
    fn incremental_apply_matches_the_full_rebuild() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let mut slots = Slots::default();
        let mut have = Content::default();
        let mut ids = desired_ref::Ids::default();
        let mut last = Plan::default();
        let mut last_ids: Vec<u32> = Vec::new();
        // The (service, verdict) each id decides for: its first entry's.
        let owners = |p: &Plan, ids: &[u32]| {
            let mut m: HashMap<u32, (String, Verdict)> = HashMap::new();
            for (e, id) in p.entries.iter().zip(ids) {
                m.entry(*id).or_insert((e.service.clone(), e.verdict));
            }
            m
        };
        for step in 0..3000 {
            // Mostly small edits of the last plan, sometimes a new one.
            let p = if step % 7 == 0 {
                plan(&mut r)
            } else {
                let mut p = last.clone();
                for _ in 0..=r.below(3) {
                    let extra = plan(&mut r).entries;
                    match r.below(3) {
                        0 if !p.entries.is_empty() => {
                            let i = r.below(p.entries.len());
                            p.entries.remove(i);
                        }
                        1 if !extra.is_empty() => {
                            let i = r.below(p.entries.len() + 1);
                            p.entries.insert(i, extra[0].clone());
                        }
                        _ if !p.entries.is_empty() => {
                            let i = r.below(p.entries.len());
                            p.entries[i].verdict = [Verdict::Pass, Verdict::Redirect][r.below(2)];
                        }
                        _ => {}
                    }
                }
                p
            };
            let mut next_ids = ids.clone();
            let want = desired_ref::build(&p, &mut next_ids).expect("reference build");
            let full = step % 11 == 0;
            let mut planned = slots.plan(&p, full).expect("plan");
            if full {
                planned.changes.delete_rest(&have);
            }
            let lens = planned.changes.lens_after(&have);
            write(&mut have, &planned.changes);
            assert_eq!(planned.entry_ids, want.entry_ids, "step {step}");
            assert_eq!(planned.shadowed, want.shadowed, "step {step}");
            // The ids whose entry leaves: freed (gone, or freed and given again), or kept by a
            // slot whose owner changes.
            let (before, after) = (owners(&last, &last_ids), owners(&p, &want.entry_ids));
            let taken: Vec<u32> = planned.new_ids().collect();
            let mut want_freed: Vec<u32> = before
                .keys()
                .copied()
                .filter(|id| !after.contains_key(id) || taken.contains(id))
                .collect();
            let mut want_changed: Vec<u32> = before
                .iter()
                .filter(|(id, o)| !taken.contains(id) && after.get(id).is_some_and(|n| n != *o))
                .map(|(id, _)| *id)
                .collect();
            let (mut freed, mut changed) =
                (planned.freed().to_vec(), planned.owner_changed().to_vec());
            for v in [&mut want_freed, &mut want_changed, &mut freed, &mut changed] {
                v.sort_unstable();
            }
            assert_eq!(freed, want_freed, "step {step}");
            assert_eq!(changed, want_changed, "step {step}");
            assert_eq!(have.exact, fast(want.content.exact.clone()), "step {step}");
            assert_eq!(have.cidr, fast(want.content.cidr.clone()), "step {step}");
            assert_eq!(have.ports, fast(want.content.ports.clone()), "step {step}");
            assert_eq!(have.names, fast(want.content.names.clone()), "step {step}");
            assert_eq!(
                lens,
                [
                    have.exact.len(),
                    have.cidr.len(),
                    have.ports.len(),
                    have.names.len()
                ]
            );
            // A plan refused before commit changes nothing: plan it, drop it, go on.
            if step % 5 == 0 {
                let _ = slots.plan(&plan(&mut r), false).expect("plan");
            }
            slots.commit(planned);
            ids = next_ids;
            last = p;
            last_ids = want.entry_ids.clone();
            // Re-adopted from the maps, the same plan writes nothing and keeps every id.
            if step % 13 == 0 {
                let mut again = Slots::from_content(&have);
                let mut planned = again.plan(&last, true).expect("plan");
                planned.changes.delete_rest(&have);
                assert_eq!(write(&mut have.clone(), &planned.changes), 0, "step {step}");
                assert_eq!(planned.entry_ids, want.entry_ids, "step {step}");
            }
        }
    }

    #[test]
    fn too_long_names_are_refused_and_change_nothing() {
        let mut slots = Slots::default();
        let long = format!("{}.lab", "a".repeat(300));
        let p = Plan {
            entries: vec![Entry {
                matcher: Match::Sni {
                    name: long,
                    port: 443,
                },
                service_id: 0,
                service: "ns/s/h".into(),
                verdict: Verdict::Pass,
            }],
            ..Plan::default()
        };
        assert!(matches!(
            slots.plan(&p, false),
            Err(DataplaneError::NameTooLong { .. })
        ));
        assert!(slots.names.is_empty() && slots.next == 0);
    }
}
