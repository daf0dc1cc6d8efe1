//! The apply algorithm as it was before the slot table (a full rebuild and a full diff per
//! apply), kept for tests: the incremental one must write exactly what it would have.

use std::collections::HashMap;

use classifier_common::{
    name_hash, name_kind, name_match, CidrData, EntryValue, ExactKey, NameKey, NameValue, PortKey,
    PortValue,
};

use super::desired::{cidr_key, exact_key, normalize_name};
use super::DataplaneError;
use crate::plan::{Match, Plan};

/// The map slot an entry occupies; entries in one slot share its entry id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    Exact(ExactKey),
    Cidr(u32, CidrData),
    /// (kind, port in network order, name)
    Name(u8, u16, Vec<u8>),
    Port(PortKey),
}

/// The content of one generation, keys with generation 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content {
    pub exact: HashMap<ExactKey, EntryValue>,
    pub cidr: HashMap<(u32, CidrData), EntryValue>,
    pub ports: HashMap<PortKey, PortValue>,
    pub names: HashMap<NameKey, NameValue>,
}

/// Entry ids by slot, with a free list so that unchanged entries keep theirs.
#[derive(Clone, Debug, Default)]
pub struct Ids {
    pub by_slot: HashMap<Slot, u32>,
    free: Vec<u32>,
    next: u32,
}

impl Ids {
    /// Keeps the ids of `slots` that already have one, frees the rest, assigns new ones.
    fn assign(&mut self, slots: &[Slot]) -> HashMap<Slot, u32> {
        let wanted: std::collections::HashSet<&Slot> = slots.iter().collect();
        let mut kept = HashMap::new();
        let mut freed = Vec::new();
        for (slot, id) in self.by_slot.drain() {
            if wanted.contains(&slot) {
                kept.insert(slot, id);
            } else {
                freed.push(id);
            }
        }
        freed.sort_unstable_by(|a, b| b.cmp(a));
        self.free.extend(freed);
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        for slot in slots {
            if !kept.contains_key(slot) {
                let id = self.free.pop().unwrap_or_else(|| {
                    self.next += 1;
                    self.next - 1
                });
                kept.insert(slot.clone(), id);
            }
        }
        self.by_slot = kept.clone();
        kept
    }
}

/// A plan compiled down to map content.
pub struct Desired {
    pub content: Content,
    /// The entry id of each plan entry (index into `Plan::entries`).
    pub entry_ids: Vec<u32>,
    /// Entries that lost to an earlier entry of the same slot.
    pub shadowed: Vec<String>,
}

/// Builds what the maps must hold for `plan`, assigning entry ids through `ids`.
pub fn build(plan: &Plan, ids: &mut Ids) -> Result<Desired, DataplaneError> {
    // Slots in plan order; the first entry of a slot decides it.
    let mut slots: Vec<Slot> = Vec::with_capacity(plan.entries.len());
    let mut first: HashMap<Slot, usize> = HashMap::new();
    let mut entry_slot: Vec<Slot> = Vec::with_capacity(plan.entries.len());
    let mut kinds: HashMap<u16, (u8, u64)> = HashMap::new();
    for (i, e) in plan.entries.iter().enumerate() {
        let slot = match &e.matcher {
            Match::Ip {
                addr,
                port,
                protocol,
            } => Slot::Exact(exact_key(addr, *port, *protocol)),
            Match::Cidr {
                cidr,
                port,
                protocol,
            } => {
                let (len, d) = cidr_key(cidr, *port, *protocol);
                Slot::Cidr(len, d)
            }
            Match::Sni { name, port } | Match::Host { name, port } => {
                let (kind, bytes) = normalize_name(name)?;
                let pk = port.to_be();
                let k = kinds.entry(pk).or_default();
                if matches!(e.matcher, Match::Sni { .. }) {
                    k.0 |= name_kind::TLS;
                } else {
                    k.0 |= name_kind::HTTP | name_kind::H2;
                }
                if kind == name_match::SUFFIX {
                    let labels = bytes.iter().filter(|&&b| b == b'.').count();
                    if labels < 64 {
                        k.1 |= 1u64 << labels;
                    }
                }
                Slot::Name(kind, pk, bytes)
            }
            Match::Port { port, protocol } => Slot::Port(PortKey {
                generation: 0,
                proto: protocol.number(),
                port: port.to_be(),
            }),
        };
        if !first.contains_key(&slot) {
            first.insert(slot.clone(), i);
            slots.push(slot.clone());
        }
        entry_slot.push(slot);
    }
    let by_slot = ids.assign(&slots);

    let mut content = Content::default();
    let mut shadowed = Vec::new();
    let mut entry_ids = Vec::with_capacity(plan.entries.len());
    let value = |i: usize, id: u32| {
        let e = &plan.entries[i];
        EntryValue {
            service_id: e.service_id,
            entry_id: id,
            verdict: e.verdict.code(),
            _pad: [0; 3],
        }
    };
    let mut name_owner: HashMap<NameKey, Vec<u8>> = HashMap::new();
    let mut put_name = |content: &mut Content,
                        kind: u8,
                        port: u16,
                        bytes: &[u8],
                        ev: EntryValue|
     -> Result<(), DataplaneError> {
        let key = NameKey {
            hash: name_hash(bytes),
            generation: 0,
            kind,
            port,
            _pad: 0,
        };
        if let Some(other) = name_owner.get(&key) {
            if other.as_slice() != bytes {
                return Err(DataplaneError::HashCollision {
                    a: String::from_utf8_lossy(other).into_owned(),
                    b: String::from_utf8_lossy(bytes).into_owned(),
                    port: u16::from_be(port),
                });
            }
            return Ok(());
        }
        name_owner.insert(key, bytes.to_vec());
        let mut nv = NameValue {
            entry: ev,
            len: bytes.len() as u16,
            ..NameValue::default()
        };
        nv.name[..bytes.len()].copy_from_slice(bytes);
        content.names.insert(key, nv);
        Ok(())
    };
    for (i, slot) in entry_slot.iter().enumerate() {
        let id = by_slot[slot];
        entry_ids.push(id);
        if first[slot] != i {
            shadowed.push(format!(
                "entry {i} ({}) has the same match as entry {} and is shadowed by it",
                plan.entries[i].service, first[slot]
            ));
            continue;
        }
        let ev = value(i, id);
        match slot {
            Slot::Exact(k) => {
                content.exact.insert(*k, ev);
            }
            Slot::Cidr(len, d) => {
                content.cidr.insert((*len, *d), ev);
            }
            Slot::Name(kind, port, bytes) => put_name(&mut content, *kind, *port, bytes, ev)?,
            Slot::Port(pk) => {
                let pv = content.ports.entry(*pk).or_default();
                pv.capture = ev;
                pv.has_capture = 1;
            }
        }
    }
    let cidr_ports: Vec<PortKey> = content
        .cidr
        .keys()
        .map(|(_, d)| PortKey {
            generation: 0,
            proto: d.proto,
            port: d.port,
        })
        .collect();
    for pk in cidr_ports {
        content.ports.entry(pk).or_default().has_cidr = 1;
    }
    for (port, (k, labels)) in kinds {
        let pv = content.ports.entry(PortKey {
            generation: 0,
            proto: classifier_common::proto::TCP,
            port,
        });
        let pv = pv.or_default();
        pv.name_kinds |= k;
        pv.suffix_labels |= labels;
    }
    Ok(Desired {
        content,
        entry_ids,
        shadowed,
    })
}
