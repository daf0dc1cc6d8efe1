//! Name matching (docs/decision.md §6): the exact name, then `*.` wildcard suffixes longest
//! first; a stored name must equal the looked-up one byte for byte. The name index
//! (`NAME_INDEX`) is a cuckoo hash of the program's own, like the exact table: buckets of
//! four (hash, meta) slots in a shared array that user space writes, the names and entries
//! in `NAMES` beside it. The kernel's hash map it replaced cost a jhash and a bucket walk,
//! calls whose returns pay this CPU's return thunk, on every name looked up.
//!
//! It runs in `meshclass_lookup`, a program of its own that is entered in one state (the name
//! in `Scratch::name`), so its loops are plain bounded loops the verifier walks once each: no
//! `bpf_loop` turn per byte. Loop counters that branches change (dots, candidates) live in
//! `Scratch::lp` (map memory, not tracked), so the paths of one turn leave equal states.

use core::{ffi::c_void, ptr::read_volatile};

use aya_ebpf::helpers::bpf_loop;
use classifier_common::{
    exact_buckets, name_hash_mix, name_hash_partial_mask, name_hash_tail, name_index_hash,
    name_match, name_meta_key, EntryValue, NameBucket, NameValue, MAX_NAME_LEN, NAME_HASH_INIT,
    NAME_META_KEY_MASK, NAME_WAYS,
};

use super::{
    maps::{
        launder, vget, vset, Scratch, MAX_CANDIDATES, NAMES, NAME_BUCKETS, NAME_BUF, NAME_INDEX,
        NAME_SEED, SCRATCH,
    },
    pkt::opaque,
};

/// Lengths stay below this (a mask).
const NAME_BUF_MASK: usize = 511;

const MASK: usize = NAME_BUF.next_power_of_two() / 2 - 1;

/// The per-CPU scratch from inside a `bpf_loop` callback.
#[inline(always)]
pub(super) fn scratch() -> Option<&'static mut Scratch> {
    let s = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, used by this program run only.
    Some(unsafe { &mut *s })
}

/// Runs `cb` for turns `0..n` (n < 8192) with `bpf_loop`.
#[inline(always)]
pub(super) fn run_loop(n: usize, cb: extern "C" fn(u64, *mut c_void) -> i64) {
    let n = opaque(n) as u32 & 8191;
    // SAFETY: a callback of the signature bpf_loop expects, no context.
    unsafe { bpf_loop(n, cb as *mut c_void, core::ptr::null_mut(), 0) };
}

/// Loads 8 bytes at `p` with one BPF instruction, aligned or not (`pkt::ld64`). The caller
/// guarantees `[p, p + 8)` lies inside one map value.
#[inline(always)]
pub(super) unsafe fn load64(p: *const u8) -> u64 {
    // SAFETY: the caller's bound.
    unsafe { super::pkt::ld64::<0>(p as usize) }
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

/// Stores 8 bytes at `p` with one BPF instruction, aligned or not. The caller guarantees
/// `[p, p + 8)` lies inside one map value.
#[inline(always)]
unsafe fn store64(p: *mut u8, v: u64) {
    // SAFETY: the caller's bound.
    unsafe {
        core::arch::asm!("*(u64 *)({p} + 0) = {v}", p = in(reg) p, v = in(reg) v,
            options(nostack, preserves_flags));
    }
}

/// Removes one trailing dot from `s.name[..len]`, zeroes the 8 bytes after the
/// end, and returns the new length (0: no name). The letters are lower-cased by the hash
/// pass (`lookup`), which reads every word of the name anyway.
#[inline(always)]
pub fn normalize(s: &mut Scratch, len: usize) -> usize {
    let mut len = launder(s, 0, len, NAME_BUF_MASK);
    if len == 0 || len >= MAX_NAME_LEN {
        return 0;
    }
    if vget(&s.name[opaque(len.wrapping_sub(1)) & MASK]) == b'.' {
        len -= 1;
    }
    let end = opaque(len) & MASK;
    // Zero the word that holds the end and the next one, so that 8-byte reads of the name see
    // zeros past its end.
    let w = s.name.as_mut_ptr() as *mut u64;
    let e = end / 8;
    // SAFETY: e + 1 < 65 words of the 520-byte buffer; keeps the bytes below `end`.
    unsafe {
        let keep = (end % 8) * 8;
        let mask = if keep == 0 {
            0
        } else {
            u64::MAX >> (64 - keep)
        };
        *w.add(e) &= mask;
        *w.add(e + 1) = 0;
    }
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
        // SAFETY: i < 512 and the buffer is 520 bytes; c * 8 + 8 <= MAX_NAME_LEN, inside the
        // stored name.
        let (a, b) = unsafe {
            (
                load64(s.name.as_ptr().add(i)),
                load64(v.name.as_ptr().add(c * 8)),
            )
        };
        if a != b {
            return false;
        }
    }
    true
}

/// The 0x80 bit of every byte of `x` that is a dot (exact: no false positives).
#[inline(always)]
fn dots_in(x: u64) -> u64 {
    bytes_eq(x, b'.')
}

/// The high bit of each byte of `x` that equals `c`, and no other bit (SWAR, exact).
#[inline(always)]
pub(super) fn bytes_eq(x: u64, c: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let y = x ^ (0x0101_0101_0101_0101 * c as u64);
    !(((y & LOW7) + LOW7) | y | LOW7)
}

/// Counts the dots of the word read at `off` (its bytes `off..off + 8`, right to left) and
/// lists each that starts a suffix with a label count `labels` registers.
#[inline(always)]
fn list_dots(s: &mut Scratch, x: u64, off: usize, labels: u64) {
    let d = dots_in(x);
    if d == 0 {
        return;
    }
    for jj in 0..8 {
        let j = 7 - jj;
        if (d >> (8 * j + 7)) & 1 == 0 {
            continue;
        }
        let i = off + j;
        if i == 0 {
            continue;
        }
        let dots = vget(&s.lp.dots) + 1;
        vset(&mut s.lp.dots, dots);
        if dots < MAX_CANDIDATES as u64 && (labels >> dots) & 1 == 1 {
            let n = vget(&s.lp.ncand);
            s.cand[n as usize & (MAX_CANDIDATES - 1)] = i as u64;
            vset(&mut s.lp.ncand, n + 1);
        }
    }
}

/// The hash pass (`classifier_common::name_hash`), 8 bytes a step from the end: lower-cases
/// each word in place and keeps the hash state after each step in
/// `chunk_h`. The letters' work is off the hash's chain of multiplies, which it overlaps; a
/// pass of its own before cost a tenth of the lookup program.
#[inline(always)]
fn hash_pass(s: &mut Scratch, len: usize) {
    let mut h = NAME_HASH_INIT;
    s.chunk_h[0] = h;
    for k in 0..MAX_NAME_LEN / 8 {
        if 8 * (k + 1) > len {
            break;
        }
        let off = word_from_end(len, k);
        // SAFETY: off + 8 <= len < MAX_NAME_LEN, inside the buffer.
        let x = unsafe { lower8(load64(s.name.as_ptr().add(off))) };
        // SAFETY: as the load.
        unsafe { store64(s.name.as_mut_ptr().add(off), x) };
        h = name_hash_mix(h, x);
        s.chunk_h[(k + 1) & (MAX_NAME_LEN / 8 - 1)] = h;
    }
    if len & 7 != 0 {
        // The first `len % 8` bytes. Their word's other bytes are lower-cased already, or the
        // zeros past the end (`normalize`): lower-casing again leaves them.
        let w = s.name.as_mut_ptr() as *mut u64;
        // SAFETY: the buffer's first word, 8-aligned.
        unsafe { *w = lower8(*w) };
    }
}

/// The offset of the `k`th whole word of a `len`-byte name counted from its end. Opaque, then
/// masked: the verifier must see the mask applied to the value it adds.
#[inline(always)]
fn word_from_end(len: usize, k: usize) -> usize {
    opaque(len - 8 * (k + 1)) & (MAX_NAME_LEN - 1)
}

/// Lists (in `cand`, longest last) every suffix of the hashed name that starts with a dot and
/// has a label count `labels` registers. Run only when the whole name did not match: most
/// names are registered whole, and the per-dot work of this pass cost them a sixth of the
/// lookup program when it ran inside the hash pass.
#[inline(always)]
fn dots_pass(s: &mut Scratch, len: usize, labels: u64) {
    vset(&mut s.lp.dots, 0);
    vset(&mut s.lp.ncand, 0);
    for k in 0..MAX_NAME_LEN / 8 {
        if 8 * (k + 1) > len {
            break;
        }
        let off = word_from_end(len, k);
        // SAFETY: off + 8 <= len < MAX_NAME_LEN, inside the buffer.
        let x = unsafe { load64(s.name.as_ptr().add(off)) };
        list_dots(s, x, off, labels);
    }
    let r = len & 7;
    if r != 0 {
        // SAFETY: the buffer's first word.
        let x = unsafe { load64(s.name.as_ptr()) } & name_hash_partial_mask(r);
        list_dots(s, x, 0, labels);
    }
}

/// The hash of `s.name[i..len]` from the hash pass's states.
#[inline(always)]
fn hash_from(s: &Scratch, i: usize, len: usize) -> u64 {
    let l = len.wrapping_sub(i) & (MAX_NAME_LEN - 1);
    let i = opaque(i) & (MAX_NAME_LEN - 1);
    // SAFETY: i < MAX_NAME_LEN; the buffer holds NAME_BUF > MAX_NAME_LEN + 8 bytes.
    let first = unsafe { load64(s.name.as_ptr().add(i)) };
    name_hash_tail(s.chunk_h[(l / 8) & (MAX_NAME_LEN / 8 - 1)], first, l)
}

/// The entry of key (`hash`, meta key `mk`: [`name_meta_key`]) if the name it points at equals
/// `s.name[off..len]`. The key's first bucket, then its second (a key moves only from the
/// first to the second, stored there before it leaves the first). The record's stamp (its
/// key) is read before and after its name and entry: unchanged, they are those of one write
/// of this key's record (user space clears the stamp before it rewrites a record, and only
/// records of the generation not in force change). The index's size and seed are read-only
/// globals, constants to the verifier.
#[inline(always)]
fn find(s: &Scratch, hash: u64, mk: u64, off: usize, len: usize) -> Option<EntryValue> {
    let (n, seed) = (NAME_BUCKETS.load(), NAME_SEED.load());
    let (a, b) = exact_buckets(name_index_hash(hash, mk, seed), n);
    let m = match in_bucket(NAME_INDEX.get_ptr(a)?, hash, mk) {
        Some(m) => m,
        None => in_bucket(NAME_INDEX.get_ptr(b)?, hash, mk)?,
    };
    let r = NAMES.get_ptr((m >> 40) as u32)?;
    // SAFETY: a map value pointer, valid for this program run; volatile loads, in order.
    unsafe {
        if read_volatile(&(*r).key) != mk || read_volatile(&(*r).hash) != hash {
            return None;
        }
        let v = &(*r).value;
        if !equal(s, off, len, v) {
            return None;
        }
        let e = v.entry;
        // A compiler barrier (an empty asm that may touch memory): the reads above happen
        // before the stamp's second read. (The BPF backend has no fence instruction to select
        // for `compiler_fence`.)
        core::arch::asm!("", options(nostack, preserves_flags));
        if read_volatile(&(*r).key) != mk {
            return None;
        }
        Some(e)
    }
}

/// The meta word of the slot of bucket `b` that holds key (`hash`, `mk`).
#[inline(always)]
fn in_bucket(b: *const NameBucket, hash: u64, mk: u64) -> Option<u64> {
    for i in 0..NAME_WAYS {
        // SAFETY: `b` is a map value pointer and `i < NAME_WAYS`; the loads are volatile so
        // that they happen in this order and once each.
        unsafe {
            let s = &(*b).slots[i];
            let m = read_volatile(&s.meta);
            if m & NAME_META_KEY_MASK != mk || read_volatile(&s.hash) != hash {
                continue;
            }
            return Some(m);
        }
    }
    None
}

/// Looks up `s.name[..len]` (`normalize`d; its letters are lower-cased here, in the hash
/// pass): the whole name in EXACT, then, if `suffix_labels` allows, its `*.` suffixes in
/// SUFFIX, longest first.
#[inline(always)]
pub fn lookup(
    s: &mut Scratch,
    len: usize,
    generation: u8,
    port: u16,
    suffix_labels: u64,
) -> Option<EntryValue> {
    let len = launder(s, 0, len, NAME_BUF_MASK);
    if len == 0 || len >= MAX_NAME_LEN {
        return None;
    }
    hash_pass(s, len);
    // The length as the verifier knew it before the pass: each turn of the pass's loop learns
    // a bound of its own, and carried on they would make the rest be verified once for each.
    let len = launder(s, 0, len, NAME_BUF_MASK);
    let h = hash_from(s, 0, len);
    if let Some(e) = find(
        s,
        h,
        name_meta_key(generation, name_match::EXACT, port),
        0,
        len,
    ) {
        return Some(e);
    }
    if suffix_labels == 0 {
        return None;
    }
    dots_pass(s, len, suffix_labels);
    let len = launder(s, 0, len, NAME_BUF_MASK);
    let mk = name_meta_key(generation, name_match::SUFFIX, port);
    let n = vget(&s.lp.ncand) as usize;
    for t in 0..MAX_CANDIDATES {
        if t >= n {
            break;
        }
        let k = (n - 1 - t) & (MAX_CANDIDATES - 1);
        let i = s.cand[k] as usize & (MAX_NAME_LEN - 1);
        let h = hash_from(s, i, len);
        if let Some(e) = find(s, h, mk, i, len) {
            return Some(e);
        }
    }
    None
}
