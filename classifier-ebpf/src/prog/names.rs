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

/// Lower-cases the ASCII letters of 8 bytes at once (bytes >= 0x80 unchanged).
#[inline(always)]
fn lower8(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let h = x & (0x7f * ONES);
    let ge_a = h + (0x80 - b'A' as u64) * ONES;
    let gt_z = h + (0x80 - b'Z' as u64 - 1) * ONES;
    let upper = ge_a & !gt_z & !x & (0x80 * ONES);
    x | (upper >> 2)
}

/// Turn `c` of the lower-casing: bytes `8c..8c+8`.
#[inline(never)]
extern "C" fn lower_turn(c: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let at = (c as usize * 8) & (MAX_NAME_LEN - 8);
    // SAFETY: at + 8 <= MAX_NAME_LEN, inside the buffer.
    unsafe {
        let p = s.name.as_mut_ptr().add(at) as *mut u64;
        p.write_unaligned(lower8(p.read_unaligned()));
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
        run_loop(len.div_ceil(8), lower_turn);
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

/// Bytes hashed per turn of the hash pass. One: the verifier checks the callback again for
/// every distinct state that reaches `bpf_loop` (the TLS walk leaves many), so a bigger body
/// multiplies into the program's one-million-instruction budget (4 bytes a turn exceed it).
const HASH_STEP: usize = 1;

/// Turn `t` of the hash pass: bytes `8t..8t+8` counted from the end of the name, last to
/// first. Remembers every suffix's hash, and lists (longest last) the suffixes that start
/// with a dot and have a label count registered on this port.
#[inline(never)]
extern "C" fn hash_turn(t: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let len = s.lp.len as usize & (MAX_NAME_LEN - 1);
    let mut h = s.lp.hash;
    let mut dots = s.lp.dots;
    let mut n = s.lp.ncand;
    let j0 = (t as usize & (MAX_NAME_LEN - 1)) * HASH_STEP;
    let mut end = 0;
    for k in 0..HASH_STEP {
        let j = j0 + k;
        if j >= len {
            end = 1;
            break;
        }
        let i = (len - 1 - j) & (MAX_NAME_LEN - 1);
        let b = s.name[i];
        h = name_hash_step(h, b);
        s.hash_at[i] = h;
        if b == b'.' && i > 0 {
            dots += 1;
            if SUFFIXES && dots < 64 && (s.lp.labels >> (dots & 63)) & 1 == 1 {
                s.cand[n as usize & (MAX_NAME_LEN - 1)] = i as u8;
                n += 1;
            }
        }
    }
    s.lp.hash = h;
    s.lp.dots = dots;
    s.lp.ncand = n;
    end
}

/// Turn `t` of the suffix pass over the listed candidates, longest first; stops at the first
/// hit, left in `lp.entry` with `lp.found` = 1.
#[inline(never)]
extern "C" fn suffix_turn(t: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let len = s.lp.len as usize & (MAX_NAME_LEN - 1);
    let n = s.lp.ncand;
    if t >= n {
        return 1;
    }
    let i = s.cand[(n - 1 - t) as usize & (MAX_NAME_LEN - 1)] as usize;
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
    vset(&mut s.lp.ncand, 0);
    run_loop(len.div_ceil(HASH_STEP), hash_turn);
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
    let n = vget(&s.lp.ncand) as usize;
    if n == 0 {
        return None;
    }
    run_loop(n, suffix_turn);
    if vget(&s.lp.found) == 1 {
        return Some(vget(&s.lp.entry));
    }
    None
}
