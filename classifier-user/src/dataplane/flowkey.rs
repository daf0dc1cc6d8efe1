//! The flow key of a frame, as the program computes it (for reading back its flow entry).

use classifier_common::{family, maps, FlowKey, FlowValue};

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

/// The pinned flow tables of a running daemon (`FLOWS4`, `FLOWS6`), addressed by `FlowKey`.
pub struct PinnedFlows {
    v4: aya::maps::HashMap<aya::maps::MapData, classifier_common::FlowKey4, FlowValue>,
    v6: aya::maps::HashMap<aya::maps::MapData, FlowKey, FlowValue>,
}

impl PinnedFlows {
    /// Opens both tables from their pins (`pin(map name)` gives a map's pin path).
    pub fn open(pin: impl Fn(&str) -> std::path::PathBuf) -> Result<Self, String> {
        use aya::maps::{HashMap, Map, MapData};
        let open = |name: &str| {
            MapData::from_pin(pin(name))
                .map(Map::LruHashMap)
                .map_err(|e| format!("opening {name}: {e}"))
        };
        Ok(Self {
            v4: HashMap::try_from(open(maps::FLOWS4)?).map_err(|e| format!("FLOWS4: {e}"))?,
            v6: HashMap::try_from(open(maps::FLOWS6)?).map_err(|e| format!("FLOWS6: {e}"))?,
        })
    }

    /// The entry of flow `k`, if any.
    pub fn get(&self, k: &FlowKey) -> Option<FlowValue> {
        if k.family == family::V4 {
            self.v4.get(&k.v4(), 0).ok()
        } else {
            self.v6.get(k, 0).ok()
        }
    }

    /// Forgets flow `k` (absent is fine).
    pub fn remove(&mut self, k: &FlowKey) {
        let _ = if k.family == family::V4 {
            self.v4.remove(&k.v4())
        } else {
            self.v6.remove(k)
        };
    }
}
