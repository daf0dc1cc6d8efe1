//! The ports table's writer. `PORTS` is an array of `PortSlot`s, one per (generation,
//! protocol, port), created `BPF_F_MMAPABLE`; user space writes a slot through a shared mapping
//! in the order the program's reader expects (classifier-ebpf `prog/ports.rs`, docs/decision.md
//! §5): the meta word cleared, the value, then the meta word with the slot's version bumped (a
//! removal bumps the version with the in-use bit clear).

use std::sync::atomic::Ordering;

use aya::maps::MapData;
use classifier_common::{maps, port_slot, PortKey, PortSlot, PortValue, PORT_SLOTS};

use super::{shared::Shared, DataplaneError};

/// Words of a slot: the meta word, then the value's three.
const SLOT_WORDS: usize = size_of::<PortSlot>() / 8;
const VALUE_WORDS: usize = size_of::<PortValue>() / 8;

/// The shared mapping of `PORTS`.
pub(crate) struct PortTable {
    mem: Shared,
}

impl PortTable {
    /// Maps `PORTS`.
    pub fn map(data: &MapData) -> Result<Self, DataplaneError> {
        let mem = Shared::map(data, maps::PORTS, size_of::<PortSlot>())?;
        Self::over(mem)
    }

    fn over(mem: Shared) -> Result<Self, DataplaneError> {
        if mem.words() < PORT_SLOTS as usize * SLOT_WORDS {
            return Err(DataplaneError::MissingMap(maps::PORTS));
        }
        Ok(Self { mem })
    }

    fn slot(k: &PortKey) -> Result<usize, DataplaneError> {
        port_slot(k.generation, k.proto, k.port)
            .map(|i| i as usize * SLOT_WORDS)
            .ok_or(DataplaneError::PortProtocol(k.proto))
    }

    fn write(&mut self, at: usize, v: Option<&PortValue>) {
        let version = self.mem.word(at).load(Ordering::Relaxed) >> 8;
        self.mem.clear_meta(at);
        let in_use = match v {
            Some(v) => {
                for (i, w) in words(v).iter().enumerate() {
                    self.mem.word(at + 1 + i).store(*w, Ordering::Relaxed);
                }
                1
            }
            None => 0,
        };
        self.mem
            .word(at)
            .store((version.wrapping_add(1) << 8) | in_use, Ordering::Release);
    }

    /// Sets the value of `k` (generation included).
    pub fn set(&mut self, k: &PortKey, v: &PortValue) -> Result<(), DataplaneError> {
        let at = Self::slot(k)?;
        self.write(at, Some(v));
        Ok(())
    }

    /// Removes the value of `k` (generation included).
    pub fn remove(&mut self, k: &PortKey) -> Result<(), DataplaneError> {
        let at = Self::slot(k)?;
        self.write(at, None);
        Ok(())
    }

    /// Ports with a value, with their generations.
    pub fn entries(&self) -> Vec<(PortKey, PortValue)> {
        let mut out = Vec::new();
        for i in 0..PORT_SLOTS {
            let at = i as usize * SLOT_WORDS;
            if self.mem.word(at).load(Ordering::Acquire) & 1 == 0 {
                continue;
            }
            let mut w = [0u64; VALUE_WORDS];
            for (j, x) in w.iter_mut().enumerate() {
                *x = self.mem.word(at + 1 + j).load(Ordering::Relaxed);
            }
            out.push((
                PortKey {
                    generation: (i >> 17) as u8,
                    proto: if (i >> 16) & 1 == 0 {
                        classifier_common::proto::TCP
                    } else {
                        classifier_common::proto::UDP
                    },
                    port: i as u16,
                },
                value(w),
            ));
        }
        out
    }

    /// What the program's read (prog/ports.rs) gives for `k`.
    #[cfg(test)]
    fn get(&self, k: &PortKey) -> PortValue {
        let at = Self::slot(k).unwrap();
        let m = self.mem.word(at).load(Ordering::Acquire);
        if m & 1 == 0 {
            return PortValue::default();
        }
        value([1, 2, 3].map(|j| self.mem.word(at + j).load(Ordering::Relaxed)))
    }
}

/// A value as the words the program copies.
fn words(v: &PortValue) -> [u64; VALUE_WORDS] {
    // SAFETY: PortValue is plain data of three 8-byte words (size asserted in
    // classifier-common; repr(C), 8-aligned).
    unsafe { std::mem::transmute::<PortValue, [u64; VALUE_WORDS]>(*v) }
}

fn value(w: [u64; VALUE_WORDS]) -> PortValue {
    // SAFETY: as in `words`; every bit pattern is a valid PortValue.
    unsafe { std::mem::transmute::<[u64; VALUE_WORDS], PortValue>(w) }
}

#[cfg(test)]
mod tests {
    use classifier_common::{proto, EntryValue};

    use super::*;

    #[test]
    fn values_are_read_back_per_generation_protocol_and_port() {
        let mut t = PortTable::over(Shared::in_memory(PORT_SLOTS as usize * SLOT_WORDS)).unwrap();
        let key = |generation, proto, port: u16| PortKey {
            generation,
            proto,
            port: port.to_be(),
        };
        let v = |n: u32| PortValue {
            capture: EntryValue {
                service_id: n,
                entry_id: n + 1,
                verdict: 2,
                _pad: [0; 3],
            },
            has_capture: 1,
            name_kinds: 3,
            has_cidr: (n % 2) as u8,
            _pad: 0,
            suffix_labels: 1 << n,
        };
        t.set(&key(0, proto::TCP, 443), &v(1)).unwrap();
        t.set(&key(1, proto::TCP, 443), &v(2)).unwrap();
        t.set(&key(0, proto::UDP, 443), &v(3)).unwrap();
        t.set(&key(1, proto::UDP, 65535), &v(4)).unwrap();
        assert_eq!(t.get(&key(0, proto::TCP, 443)), v(1));
        assert_eq!(t.get(&key(1, proto::TCP, 443)), v(2));
        assert_eq!(t.get(&key(0, proto::UDP, 443)), v(3));
        assert_eq!(t.get(&key(1, proto::UDP, 65535)), v(4));
        assert_eq!(t.get(&key(0, proto::TCP, 80)), PortValue::default());
        t.set(&key(0, proto::TCP, 443), &v(5)).unwrap();
        t.remove(&key(1, proto::TCP, 443)).unwrap();
        assert_eq!(t.get(&key(0, proto::TCP, 443)), v(5));
        assert_eq!(t.get(&key(1, proto::TCP, 443)), PortValue::default());
        let mut e = t.entries();
        e.sort_by_key(|(k, _)| (k.generation, k.proto, k.port));
        let mut want = vec![
            (key(0, proto::TCP, 443), v(5)),
            (key(0, proto::UDP, 443), v(3)),
            (key(1, proto::UDP, 65535), v(4)),
        ];
        want.sort_by_key(|(k, _)| (k.generation, k.proto, k.port));
        assert_eq!(e, want);
        // Every write bumps the slot's version; a removal leaves it not in use.
        let at = PortTable::slot(&key(1, proto::TCP, 443)).unwrap();
        assert_eq!(t.mem.word(at).load(Ordering::Relaxed), 2 << 8);
        assert!(t.set(&key(0, 1, 1), &v(1)).is_err());
    }
}
