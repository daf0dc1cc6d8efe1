//! Name matching against `NAMES` (docs/decision.md §6): the exact name, then `*.` wildcard
//! suffixes longest first; a stored name must equal the looked-up one byte for byte.
//!
//! The per-byte loops run as `bpf_loop` callbacks: the verifier checks each callback body
//! once instead of every unrolled turn, and their state lives in `Scratch::lp` (map memory,
//! not tracked), so turns do not multiply verifier states.

use core::{ffi::c_void, ptr::read_unaligned};

use aya_ebpf::helpers::bpf_loop;
use classifier_common::{
    name_hash_step, name_match, EntryValue, NameKey, NameValue, MAX_NAME_LEN, NAME_HASH_INIT,
};

use super::maps::{launder, vget, vset, Scratch, NAMES, NAME_BUF, SCRATCH};

/// Lengths stay below this (a mask).
const NAME_BUF_MASK: usize = 511;

/// Whether `*.` wildcard suffixes are looked up .
const SUFFIXES: bool = true;

const MASK: usize = NAME_BUF.next_power_of_two() / 2 - 1;

/// The per-CPU scratch from inside a `bpf_loop` callback.
#[inline(always)]
pub(super) fn scratch() -> Option<&'static mut Scratch> {
    let s = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, used by this program run only.
    Some(unsafe { &mut *s })
}

/// Runs `cb` for turns `0..n` (n <= 256) with `bpf_loop`.
#[inline(always)]
fn run_loop(n: usize, cb: extern "C" fn(u64, *mut c_void) -> i64) {
    let n = core::hint::black_box(n as u32) & (MAX_NAME_LEN as u32 * 2 - 1);
    // SAFETY: a callback of the signature bpf_loop expects, no context.
    unsafe { bpf_loop(n, cb as *mut c_void, core::ptr::null_mut(), 0) };
}

/// Runs `cb` for turns `0..n` (n <= 2048) with `bpf_loop`.
#[inline(always)]
pub(super) fn run_loop_2k(n: usize, cb: extern "C" fn(u64, *mut c_void) -> i64) {
    let n = core::hint::black_box(n as u32) & 2047;
    // SAFETY: a callback of the signature bpf_loop expects, no context.
    unsafe { bpf_loop(n, cb as *mut c_void, core::ptr::null_mut(), 0) };
}

/// Turn `i` of the lower-casing.
#[inline(never)]
extern "C" fn lower_turn(i: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let i = i as usize & (MAX_NAME_LEN - 1);
    let b = s.name[i];
    if b.is_ascii_uppercase() {
        s.name[i] = b + 32;
    }
    0
}

/// Lower-cases `s.name[..len]` (ASCII) unless `raw`, removes one trailing dot, zeroes the 8
/// bytes after the end, and returns the new length (0: no name).
#[inline(always)]
pub fn normalize(s: &mut Scratch, len: usize, raw: bool) -> usize {
    let mut len = launder(s, 0, len, NAME_BUF_MASK);
    if len == 0 || len >= MAX_NAME_LEN {
        return 0;
    }
    if !raw {
        run_loop(len, lower_turn);
        if vget(&s.name[core::hint::black_box(len.wrapping_sub(1)) & MASK]) == b'.' {
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
    let slen = len.wrapping_sub(off);
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

/// Turn `j` of the hash pass: from the last byte to the first, remembers every suffix's hash
/// and which suffixes (starting with a dot) have a label count registered on this port.
#[inline(never)]
extern "C" fn hash_turn(j: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let len = s.lp.len as usize & (MAX_NAME_LEN - 1);
    let j = j as usize & (MAX_NAME_LEN - 1);
    if j >= len {
        return 1;
    }
    let i = (len - 1 - j) & (MAX_NAME_LEN - 1);
    let b = s.name[i];
    let h = name_hash_step(s.lp.hash, b);
    s.lp.hash = h;
    s.hash_at[i] = h;
    let mut c = 0u8;
    if b == b'.' && i > 0 {
        let dots = s.lp.dots + 1;
        s.lp.dots = dots;
        if SUFFIXES && dots < 64 && (s.lp.labels >> (dots & 63)) & 1 == 1 {
            c = 1;
        }
    }
    s.cand[i] = c;
    0
}

/// Turn `i` of the suffix pass (longest first: the smallest start); stops at the first hit,
/// left in `lp.entry` with `lp.found` = 1.
#[inline(never)]
extern "C" fn suffix_turn(i: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let len = s.lp.len as usize & (MAX_NAME_LEN - 1);
    let i = i as usize & (MAX_NAME_LEN - 1);
    if i >= len {
        return 1;
    }
    if i == 0 || s.cand[i] == 0 {
        return 0;
    }
    let key = NameKey {
        hash: s.hash_at[i],
        generation: s.lp.generation as u8,
        kind: name_match::SUFFIX,
        port: s.lp.port as u16,
        _pad: 0,
    };
    if let Some(v) = NAMES.get_ptr(key) {
        // SAFETY: a map value pointer, valid for this program run.
        let v = unsafe { &*v };
        if equal(s, i, len, v) {
            s.lp.entry = v.entry;
            s.lp.found = 1;
            return 1;
        }
    }
    0
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
    vset(&mut s.lp.len, len as u64);
    vset(&mut s.lp.hash, NAME_HASH_INIT);
    vset(&mut s.lp.dots, 0);
    vset(&mut s.lp.labels, suffix_labels);
    vset(&mut s.lp.port, port as u64);
    vset(&mut s.lp.generation, generation as u64);
    vset(&mut s.lp.found, 0);
    run_loop(len, hash_turn);
    let key = NameKey {
        hash: vget(&s.lp.hash),
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
    run_loop(len, suffix_turn);
    if vget(&s.lp.found) == 1 {
        return Some(vget(&s.lp.entry));
    }
    None
}
