//! Name matching against `NAMES` (docs/decision.md §6): the exact name, then `*.` wildcard
//! suffixes longest first; a stored name must equal the looked-up one byte for byte.

use core::ptr::read_unaligned;

use classifier_common::{
    name_hash_step, name_match, EntryValue, NameKey, NameValue, MAX_NAME_LEN, NAME_HASH_INIT,
};

use super::maps::{launder, Scratch, NAMES, NAME_BUF};

/// Lengths stay below this (a mask).
const NAME_BUF_MASK: usize = 511;

/// Whether `*.` wildcard suffixes are looked up .
const SUFFIXES: bool = true;

const MASK: usize = NAME_BUF.next_power_of_two() / 2 - 1;

/// Lower-cases `s.name[..len]` (ASCII) unless `raw`, removes one trailing dot, zeroes the 8
/// bytes after the end, and returns the new length (0: no name).
#[inline(always)]
pub fn normalize(s: &mut Scratch, len: usize, raw: bool) -> usize {
    let mut len = launder(s, 0, len, NAME_BUF_MASK);
    if len == 0 || len >= MAX_NAME_LEN {
        return 0;
    }
    if !raw {
        for i in 0..MAX_NAME_LEN {
            if i >= len {
                break;
            }
            let b = s.name[i];
            if b.is_ascii_uppercase() {
                s.name[i] = b + 32;
            }
        }
        if s.name[core::hint::black_box(len.wrapping_sub(1)) & MASK] == b'.' {
            len -= 1;
        }
    }
    let end = core::hint::black_box(len) & MASK;
    // SAFETY: end < 512 and the buffer has 8 bytes beyond 512.
    unsafe { (s.name.as_mut_ptr().add(end) as *mut u64).write_unaligned(0) };
    len
}

/// Whether the stored name equals `s.name[off..len]`.
#[inline(always)]
fn equal(s: &Scratch, off: usize, len: usize, v: &NameValue) -> bool {
    let slen = len - off;
    if v.len as usize != slen {
        return false;
    }
    for c in 0..MAX_NAME_LEN / 8 {
        if c * 8 >= slen {
            break;
        }
        let i = (off + c * 8) & MASK;
        // SAFETY: i < 512 and the buffer is 520 bytes; c * 8 + 8 <= MAX_NAME_LEN.
        let (a, b) = unsafe {
            (
                read_unaligned(s.name.as_ptr().add(i) as *const u64),
                read_unaligned(v.name.as_ptr().add(c * 8) as *const u64),
            )
        };
        if a != b {
            return false;
        }
    }
    true
}

/// Looks up `s.name[..len]` (normalized): the whole name in `kind` (EXACT or HUFFMAN), then,
/// if `suffix_labels` allows, its `*.` suffixes in SUFFIX, longest first.
#[inline(always)]
pub fn lookup(
    s: &mut Scratch,
    len: usize,
    generation: u8,
    kind: u8,
    port: u16,
    suffix_labels: u64,
) -> Option<EntryValue> {
    let len = launder(s, 0, len, NAME_BUF_MASK);
    if len == 0 || len >= MAX_NAME_LEN {
        return None;
    }
    // Hash from the last byte to the first; remember every suffix's hash and which suffixes
    // (starting with a dot) have a label count registered on this port.
    let mut h = NAME_HASH_INIT;
    let mut dots: u32 = 0;
    for j in 0..MAX_NAME_LEN {
        if j >= len {
            break;
        }
        let i = (len - 1 - j) & (MAX_NAME_LEN - 1);
        let b = s.name[i];
        h = name_hash_step(h, b);
        s.hash_at[i] = h;
        let mut c = 0u8;
        if b == b'.' && i > 0 {
            dots += 1;
            if SUFFIXES && dots < 64 && (suffix_labels >> (dots & 63)) & 1 == 1 {
                c = 1;
            }
        }
        s.cand[i] = c;
    }
    let key = NameKey {
        hash: h,
        generation,
        kind,
        port,
        _pad: 0,
    };
    if let Some(v) = NAMES.get_ptr(key) {
        // SAFETY: a map value pointer, valid for this program run.
        let v = unsafe { &*v };
        if equal(s, 0, len, v) {
            return Some(v.entry);
        }
    }
    if !SUFFIXES || kind != name_match::EXACT || suffix_labels == 0 {
        return None;
    }
    let len = launder(s, 1, len, NAME_BUF_MASK);
    // Longest suffix first: the smallest start.
    for i in 1..MAX_NAME_LEN {
        if i >= len {
            break;
        }
        if s.cand[i] == 0 {
            continue;
        }
        let key = NameKey {
            hash: s.hash_at[i],
            generation,
            kind: name_match::SUFFIX,
            port,
            _pad: 0,
        };
        if let Some(v) = NAMES.get_ptr(key) {
            // SAFETY: as above.
            let v = unsafe { &*v };
            if equal(s, i, len, v) {
                return Some(v.entry);
            }
        }
    }
    None
}
