//! The flow key of a frame, as the program computes it (for reading back its flow entry).

use classifier_common::{
    family, flow_bucket, flow_hash, flow_meta_is, maps, FlowBucket, FlowKey, FlowValue, Layout,
};

/// Parses Ethernet (one VLAN tag), IPv4/IPv6 (extension headers) and TCP/UDP ports.
pub fn flow_key(frame: &[u8]) -> Option<FlowKey> {
    let mut et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let mut l3 = 14;
    if et == 0x8100 || et == 0x88a8 {
        et = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
        l3 = 18;
    }
    let mut key = FlowKey::default();
    let (mut nh, mut off);
    match et {
        0x0800 => {
            let h = frame.get(l3..l3 + 20)?;
            nh = h[9];
            off = l3 + (h[0] & 0x0f) as usize * 4;
            key.family = family::V4;
            key.saddr[..4].copy_from_slice(&h[12..16]);
            key.daddr[..4].copy_from_slice(&h[16..20]);
        }
        0x86dd => {
            let h = frame.get(l3..l3 + 40)?;
            nh = h[6];
            off = l3 + 40;
            key.family = family::V6;
            key.saddr.copy_from_slice(&h[8..24]);
            key.daddr.copy_from_slice(&h[24..40]);
            for _ in 0..8 {
                match nh {
                    0 | 43 | 60 => {
                        let e = frame.get(off..off + 2)?;
                        nh = e[0];
                        off += (e[1] as usize + 1) * 8;
                    }
                    44 => {
                        nh = *frame.get(off)?;
                        off += 8;
                    }
                    _ => break,
                }
            }
        }
        _ => return None,
    }
    key.proto = nh;
    if nh == 6 || nh == 17 {
        let p = frame.get(off..off + 4)?;
        key.sport = u16::from_ne_bytes([p[0], p[1]]);
        key.dport = u16::from_ne_bytes([p[2], p[3]]);
    }
    Some(key)
}

/// The bucket of `key` in a flow table laid out as `layout` says, with the slot holding it:
/// (bucket index, bucket, slot), or None when the flow has no entry.
pub(crate) fn find<T: std::borrow::Borrow<aya::maps::MapData>>(
    table: &aya::maps::Array<T, FlowBucket>,
    layout: &Layout,
    key: &FlowKey,
) -> Result<Option<(u32, FlowBucket, usize)>, aya::maps::MapError> {
    let w = key.words();
    let h = flow_hash(&w, layout.flow_seed);
    let i = flow_bucket(h, layout.flow_mask);
    let b = table.get(&i, 0)?;
    Ok(b.slots
        .iter()
        .position(|s| flow_meta_is(s.meta, h) && s.key == w)
        .map(|at| (i, b, at)))
}

/// The pinned flow table of a running daemon (`FLOWS`, laid out as `LAYOUT` says).
pub struct PinnedFlows {
    table: aya::maps::Array<aya::maps::MapData, FlowBucket>,
    layout: Layout,
}

impl PinnedFlows {
    /// Opens the table from its pins (`pin(map name)` gives a map's pin path).
    pub fn open(pin: impl Fn(&str) -> std::path::PathBuf) -> Result<Self, String> {
        use aya::maps::{Array, Map, MapData};
        let open = |name: &str| {
            MapData::from_pin(pin(name))
                .map(Map::Array)
                .map_err(|e| format!("opening {name}: {e}"))
        };
        let layout = Array::<MapData, Layout>::try_from(open(maps::LAYOUT)?)
            .and_then(|a| a.get(&0, 0))
            .map_err(|e| format!("{}: {e}", maps::LAYOUT))?;
        Ok(Self {
            table: Array::try_from(open(maps::FLOWS)?).map_err(|e| format!("FLOWS: {e}"))?,
            layout,
        })
    }

    /// The entry of flow `k`, if any.
    pub fn get(&self, k: &FlowKey) -> Option<FlowValue> {
        let (_, b, at) = find(&self.table, &self.layout, k).ok()??;
        b.slots[at].entry().map(|(_, v)| v)
    }

    /// Whether flow `k` would take no other flow's slot: its bucket has an empty slot and does
    /// not hold `k` (a live connection of that key, when the source is a real one) — or cannot
    /// be read (nothing to spare then).
    pub fn has_room(&self, k: &FlowKey) -> bool {
        let h = flow_hash(&k.words(), self.layout.flow_seed);
        match self.table.get(&flow_bucket(h, self.layout.flow_mask), 0) {
            Ok(b) => {
                let held = b
                    .slots
                    .iter()
                    .any(|s| flow_meta_is(s.meta, h) && s.key == k.words());
                !held && b.slots.iter().any(|s| s.meta as u8 == 0)
            }
            Err(_) => true,
        }
    }

    /// Forgets flow `k` (absent is fine). The bucket is written back whole: a flow the
    /// program stores in the same bucket at that moment may be lost (and is then looked up as
    /// new, docs/decision.md §3).
    pub fn remove(&mut self, k: &FlowKey) {
        if let Ok(Some((i, mut b, at))) = find(&self.table, &self.layout, k) {
            b.slots[at] = Default::default();
            let _ = self.table.set(i, b, 0);
        }
    }
}
