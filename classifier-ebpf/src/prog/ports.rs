//! The ports table (docs/decision.md §5): `PORTS`, one slot per (generation, protocol, port),
//! found by index (the verifier inlines the array lookup; the hash map it replaced cost a
//! jhash and a bucket walk, each a call whose return pays this CPU's return thunk). User space
//! writes a slot through a shared mapping: meta word cleared, value, meta word with a new
//! version. A value read between two equal meta words that say in use is whole; a packet that
//! keeps meeting a slot being written (only one that read the generation before a flip, while
//! user space brings that generation up to date) takes the port as unregistered.

use core::ptr::{read_volatile, write_volatile};

use classifier_common::{port_slot, PortValue};

use super::maps::PORTS;

/// Reads the value of (generation, protocol, port) into `out` (zero if the port has none).
#[inline(always)]
pub fn get(generation: u8, protocol: u8, port: u16, out: &mut PortValue) {
    let d = out as *mut PortValue as *mut u64;
    if let Some(s) = port_slot(generation, protocol, port).and_then(|i| PORTS.get_ptr(i)) {
        for _ in 0..3 {
            // SAFETY: a map value pointer, valid for this run, and `out`: both hold a
            // `PortValue` of three aligned words; the loads are volatile so that they happen
            // in this order and once each.
            unsafe {
                let m = read_volatile(&(*s).meta);
                if m & 1 == 0 {
                    break;
                }
                let v = &(*s).value as *const PortValue as *const u64;
                for i in 0..3 {
                    write_volatile(d.add(i), read_volatile(v.add(i)));
                }
                if read_volatile(&(*s).meta) == m {
                    return;
                }
            }
        }
    }
    for i in 0..3 {
        // SAFETY: as above.
        unsafe { write_volatile(d.add(i), 0) };
    }
}
