//! HTTP/1.x `Host` and HTTP/2 (prior knowledge) `:authority` (docs/decision.md §6).

//!
//! The scans run as `bpf_loop` callbacks (see names.rs): one callback body to verify instead of
//! every turn of a walk over the window (`PAYLOAD_WINDOW`, 2 KiB). The long ones (the header
//! lines, the value's end, the port's colon) take 8 bytes a turn, a turn costing about as much
//! as a dozen bytes' work.

use core::{ffi::c_void, hint::black_box, ptr::read_unaligned};

use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::TcContext, EbpfContext};
use classifier_common::{
    hpack::{DFA_ACCEPT, DFA_EMIT, DFA_FAIL, DFA_STATE, HUFFMAN_DFA},
    MAX_NAME_LEN,
};

use super::{
    maps::{vget, vset, Scratch, WINDOW},
    names::{bytes_eq, load64, run_loop, scratch},
    pkt::{opaque, Pkt},
};

const WMASK: usize = WINDOW - 1;

/// Copies the first up to `WINDOW` payload bytes into `Scratch::window`; returns how many.
#[inline(always)]
pub fn load_window(ctx: &TcContext, p: &Pkt, s: &mut Scratch) -> usize {
    let len = p.payload_len as usize;
    if len == 0 {
        return 0;
    }
    let len = if len > WINDOW { WINDOW } else { len };
    let n = (opaque(len.wrapping_sub(1) & (WINDOW - 1)) + 1) as u32;
    // SAFETY: n is in 1..=WINDOW and the window holds WINDOW + 16 bytes.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr() as *const _,
            p.payload_off,
            s.window.as_mut_ptr() as *mut _,
            n,
        )
    };
    if r != 0 {
        return 0;
    }
    n as usize
}

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

#[inline(always)]
fn starts_with(w: &[u8], n: usize, m: &[u8]) -> bool {
    if n < m.len() {
        return false;
    }
    let mut i = 0;
    while i < m.len() {
        if w[i] != m[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[inline(always)]
fn lower(b: u8) -> u8 {
    if b.is_ascii_uppercase() {
        b + 32
    } else {
        b
    }
}

#[inline(always)]
fn blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `HttpLoop::done` values.
const FOUND: u64 = 1;
const FAILED: u64 = 2;
/// The frame walk reached the segment's end before a HEADERS frame (the skip into the next
/// segment in `hl.a`).
const MORE: u64 = 3;

/// The 8 window bytes at `i`, in one load (the window has 16 bytes beyond `WINDOW`).
#[inline(always)]
fn word_at(w: &[u8; WINDOW + 16], i: usize) -> u64 {
    // SAFETY: i & WMASK < WINDOW, so the 8 bytes lie inside the window.
    unsafe { load64(w.as_ptr().add(i & WMASK)) }
}

/// Turn `k` of the header scan, over window bytes `8k..8k + 8` (one turn a word: a line
/// feed is looked for in all 8 at once): a line starting after a line feed at `i` that is
/// `host:` leaves the value's start in `hl.a`; an empty line ends the headers. Line feeds at
/// `i + 1 >= n` end the scan.
#[inline(never)]
extern "C" fn line_turn(k: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let n = s.hl.n as usize;
    let base = (k as usize * 8) & WMASK;
    if base + 1 >= n {
        return 1;
    }
    let w = &s.window;
    if bytes_eq(word_at(w, base), b'\n') == 0 {
        return 0;
    }
    for j in 0..8 {
        let i = base + j;
        if i + 1 >= n {
            return 1;
        }
        if w[i & WMASK] != b'\n' {
            continue;
        }
        let a = w[(i + 1) & WMASK];
        if a == b'\r' || a == b'\n' {
            return 1;
        }
        if i + 6 <= n
            && lower(a) == b'h'
            && lower(w[(i + 2) & WMASK]) == b'o'
            && lower(w[(i + 3) & WMASK]) == b's'
            && lower(w[(i + 4) & WMASK]) == b't'
            && w[(i + 5) & WMASK] == b':'
        {
            s.hl.a = (i + 6) as u64;
            s.hl.done = FOUND;
            return 1;
        }
    }
    0
}

/// Turn `k` of a search from `hl.pos` for the first byte equal to either byte of `hl.arg`
/// (low two bytes), below `hl.b`: 8 bytes a turn; leaves the position found (else `hl.b`) in
/// `hl.a`.
#[inline(never)]
extern "C" fn find_turn(k: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let limit = s.hl.b as usize & (WINDOW * 2 - 1);
    let p = (s.hl.pos as usize & (WINDOW * 2 - 1)) + (k as usize & (WINDOW - 1)) * 8;
    if p >= limit {
        s.hl.a = limit as u64;
        return 1;
    }
    let (c1, c2) = (s.hl.arg as u8, (s.hl.arg >> 8) as u8);
    let x = word_at(&s.window, p);
    if bytes_eq(x, c1) | bytes_eq(x, c2) == 0 {
        return 0;
    }
    for j in 0..8 {
        let i = p + j;
        let b = s.window[i & WMASK];
        if i >= limit || b == c1 || b == c2 {
            s.hl.a = if i < limit { i } else { limit } as u64;
            return 1;
        }
    }
    0
}

/// The first position in `pos..limit` holding `c1` or `c2`, else `limit`.
#[inline(always)]
fn find(s: &mut Scratch, pos: usize, limit: usize, c1: u8, c2: u8) -> usize {
    if pos >= limit {
        return limit;
    }
    vset(&mut s.hl.pos, pos as u64);
    vset(&mut s.hl.b, limit as u64);
    vset(&mut s.hl.arg, c1 as u64 | (c2 as u64) << 8);
    vset(&mut s.hl.a, limit as u64);
    run_loop(WINDOW / 8 + 2, find_turn);
    vget(&s.hl.a) as usize
}

/// What `scan_turn` does with the cursor `hl.pos`.
const SKIP_BLANKS: u64 = 0;
const TRIM_BACK: u64 = 2;

/// One turn of a cursor walk over the window: by `hl.arg`, skip blanks forward (up to `n`) or
/// step back over blanks (down to `hl.a`). (Blanks run short; longer searches use
/// `find_turn`, 8 bytes a turn.)
#[inline(never)]
extern "C" fn scan_turn(_i: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let pos = s.hl.pos as usize;
    let w = &s.window;
    match s.hl.arg {
        SKIP_BLANKS => {
            if pos >= s.hl.n as usize || !blank(w[pos & WMASK]) {
                return 1;
            }
            s.hl.pos = pos as u64 + 1;
        }
        _ => {
            if pos <= s.hl.a as usize || !blank(w[(pos - 1) & WMASK]) {
                return 1;
            }
            s.hl.pos = pos as u64 - 1;
        }
    }
    0
}

/// Walks the cursor from `pos` by `mode`; returns where it stopped.
#[inline(always)]
fn walk(s: &mut Scratch, pos: usize, mode: u64) -> usize {
    vset(&mut s.hl.pos, pos as u64);
    vset(&mut s.hl.arg, mode);
    run_loop(WINDOW + 1, scan_turn);
    vget(&s.hl.pos) as usize
}

/// Finds the HTTP/1.x Host of a window of `n` bytes; copies it (port stripped, not yet
/// lower-cased) to `Scratch::name` and returns its length (0: none).
#[inline(always)]
pub fn host(s: &mut Scratch, n: usize) -> usize {
    let mut is_http = false;
    for m in METHODS {
        if starts_with(&s.window, n, m) {
            is_http = true;
            break;
        }
    }
    if !black_box(is_http) || n < 2 {
        return 0;
    }
    let n = n & (WINDOW * 2 - 1);
    vset(&mut s.hl.n, n as u64);
    vset(&mut s.hl.done, 0);
    run_loop((n - 1).div_ceil(8), line_turn);
    if vget(&s.hl.done) != FOUND {
        return 0;
    }
    // Trim blanks both sides of the line's value, which must end inside the window: a value
    // running to its end may go on in bytes not read (`api.example.com` of
    // `api.example.com.evil.test`).
    let start = walk(s, vget(&s.hl.a) as usize, SKIP_BLANKS);
    let end = find(s, start, n, b'\r', b'\n');
    if end >= n {
        return 0;
    }
    vset(&mut s.hl.a, start as u64);
    let end = walk(s, end, TRIM_BACK);
    if end <= start {
        return 0;
    }
    copy_host(s, start, end)
}

/// Copies the host of the authority `window[start..end]` (non-empty) to `name`, its port
/// stripped: `[v6]:port` keeps what is inside the brackets, `name:port` the name. Returns the
/// length (0: none).
#[inline(always)]
fn copy_host(s: &mut Scratch, start: usize, end: usize) -> usize {
    let (start, end) = if s.window[start & WMASK] == b'[' {
        (start + 1, find(s, start + 1, end, b']', b']'))
    } else {
        (start, find(s, start, end, b':', b':'))
    };
    copy_to_name(s, start, end)
}

/// Copies `window[start..end]` to `name`; returns the length (0 when empty or too long).
#[inline(always)]
fn copy_to_name(s: &mut Scratch, start: usize, end: usize) -> usize {
    if end <= start || end - start >= MAX_NAME_LEN {
        return 0;
    }
    let len = end - start;
    for c in 0..MAX_NAME_LEN / 8 {
        if c * 8 >= len {
            break;
        }
        let i = (start + c * 8) & WMASK;
        // SAFETY: i < WINDOW and the window has 16 bytes beyond it; c * 8 + 8 <= MAX_NAME_LEN.
        unsafe {
            let v = read_unaligned(s.window.as_ptr().add(i) as *const u64);
            (s.name.as_mut_ptr().add(c * 8) as *mut u64).write_unaligned(v);
        }
    }
    len
}

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Most frames read, the HEADERS frame included.
const MAX_FRAMES: usize = 8;
/// Most header fields walked in the HEADERS frame.
const MAX_FIELDS: usize = 16;

/// Decodes an HPACK integer with a `bits`-bit prefix at `*pos`, reading below `limit`;
/// advances `*pos`.
#[inline(always)]
fn hpack_int(w: &[u8], limit: usize, pos: &mut usize, bits: u32) -> Option<usize> {
    if *pos >= limit {
        return None;
    }
    let max = (1usize << bits) - 1;
    let mut v = w[*pos & WMASK] as usize & max;
    *pos += 1;
    if v < max {
        return Some(v);
    }
    let mut shift = 0;
    for _ in 0..3 {
        if *pos >= limit {
            return None;
        }
        let b = w[*pos & WMASK] as usize;
        *pos += 1;
        v += (b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Turn of the frame walk: reads the frame header at `hl.pos`; a HEADERS frame leaves its
/// header block in `hl.a..hl.b`. A walk that ends with the segment (`hl.seg` bytes of
/// payload) at a frame boundary, or in a frame other than HEADERS, ends MORE, with how far
/// into the next segment the next frame starts in `hl.a`.
#[inline(never)]
extern "C" fn frame_turn(_i: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let n = s.hl.n as usize & (WINDOW * 2 - 1);
    let seg = s.hl.seg as usize & 0xf_ffff;
    let off = s.hl.pos as usize & 0x1ff_ffff;
    if off == seg {
        s.hl.a = 0;
        s.hl.done = MORE;
        return 1;
    }
    if off + 9 > n {
        s.hl.done = FAILED;
        return 1;
    }
    let w = &s.window;
    let len = ((w[off & WMASK] as usize) << 16)
        | ((w[(off + 1) & WMASK] as usize) << 8)
        | w[(off + 2) & WMASK] as usize;
    let ty = w[(off + 3) & WMASK];
    let flags = w[(off + 4) & WMASK];
    let body = off + 9;
    let next = body + len;
    s.hl.pos = next as u64;
    if ty != 1 {
        if next > seg {
            let skip = next - seg;
            if skip > H2_SKIP_LIMIT {
                s.hl.done = FAILED;
            } else {
                s.hl.a = skip as u64;
                s.hl.done = MORE;
            }
            return 1;
        }
        return 0;
    }
    let mut start = body;
    let mut end = next;
    if flags & 0x08 != 0 {
        if start >= n {
            s.hl.done = FAILED;
            return 1;
        }
        let pad = w[start & WMASK] as usize;
        start += 1;
        if end < start || pad > end - start {
            s.hl.done = FAILED;
            return 1;
        }
        end -= pad;
    }
    if flags & 0x20 != 0 {
        start += 5;
    }
    s.hl.a = start as u64;
    s.hl.b = if end < n { end } else { n } as u64;
    s.hl.done = FOUND;
    1
}

/// What one header field of the block says.
enum Field {
    /// Not `:authority`: the next field starts here.
    Next(usize),
    /// The `:authority` value: start, length, Huffman-coded.
    Authority(usize, usize, bool),
    /// Malformed: no name.
    Bad,
}

/// Reads the header field at `pos` of a block ending at `end`.
#[inline(always)]
fn field(w: &[u8], end: usize, mut pos: usize) -> Field {
    if pos >= end {
        return Field::Bad;
    }
    let b = w[pos & WMASK];
    let bits = if b & 0x80 != 0 {
        // Indexed field.
        return match hpack_int(w, end, &mut pos, 7) {
            Some(_) => Field::Next(pos),
            None => Field::Bad,
        };
    } else if b & 0xc0 == 0x40 {
        6
    } else if b & 0xe0 == 0x20 {
        // Dynamic table size update.
        return match hpack_int(w, end, &mut pos, 5) {
            Some(_) => Field::Next(pos),
            None => Field::Bad,
        };
    } else {
        4
    };
    let Some(index) = hpack_int(w, end, &mut pos, bits) else {
        return Field::Bad;
    };
    if index == 0 {
        // Literal name: skip it.
        let Some(nl) = hpack_int(w, end, &mut pos, 7) else {
            return Field::Bad;
        };
        pos += nl;
    }
    if pos >= end {
        return Field::Bad;
    }
    let huffman = w[pos & WMASK] & 0x80 != 0;
    let Some(vl) = hpack_int(w, end, &mut pos, 7) else {
        return Field::Bad;
    };
    if index != 1 {
        return Field::Next(pos + vl);
    }
    if pos + vl > end {
        return Field::Bad;
    }
    Field::Authority(pos, vl, huffman)
}

/// Turn of the field walk over the header block `hl.pos..hl.b`: the first literal field
/// whose name is static index 1 (`:authority`) leaves its value at `hl.a`, length `hl.arg`.
#[inline(never)]
extern "C" fn field_turn(_i: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let end = s.hl.b as usize & (WINDOW * 2 - 1);
    let pos = s.hl.pos as usize & 0xff_ffff;
    match field(&s.window, end, pos) {
        Field::Next(p) => {
            s.hl.pos = p as u64;
            0
        }
        Field::Authority(p, len, huffman) => {
            s.hl.a = p as u64;
            s.hl.arg = len as u64;
            s.hl.huffman = huffman as u64;
            s.hl.done = FOUND;
            1
        }
        Field::Bad => {
            s.hl.done = FAILED;
            1
        }
    }
}

/// Most bytes of a frame before the first HEADERS frame that the next segment may still hold
/// (docs/decision.md §11).
pub const H2_SKIP_LIMIT: usize = 16384;

/// What a segment of an HTTP/2 prior-knowledge stream says about its `:authority`.
pub enum H2 {
    /// Nothing to match: not such a stream as followed, or no `:authority`.
    Not,
    /// The segment ends before the first HEADERS frame, whose search goes on this many bytes
    /// into the next segment (where the next frame starts).
    More(u32),
    /// The value's host, in `Scratch::name` (decoded when Huffman-coded): its length.
    Name(usize),
}

/// Finds the `:authority` of the first HEADERS frame of an HTTP/2 stream in a segment whose
/// first `n` payload bytes (of `seg`) are in the window: the stream's first segment (`from`
/// `None`: it starts with the preface) or a later one whose next frame starts at `from`
/// (below `seg`). Copies the value's host to `Scratch::name`, its port stripped as a Host's,
/// decoding a Huffman-coded value first (`huffman_turn`).
#[inline(always)]
pub fn authority(s: &mut Scratch, n: usize, seg: usize, from: Option<usize>) -> H2 {
    let start = match from {
        Some(f) => f,
        None => {
            if n < PREFACE.len() {
                return H2::Not;
            }
            for (i, &c) in PREFACE.iter().enumerate() {
                if s.window[i] != c {
                    return H2::Not;
                }
            }
            PREFACE.len()
        }
    };
    vset(&mut s.hl.n, n as u64);
    vset(&mut s.hl.seg, seg as u64);
    vset(&mut s.hl.pos, start as u64);
    vset(&mut s.hl.done, 0);
    run_loop(MAX_FRAMES, frame_turn);
    match vget(&s.hl.done) {
        FOUND => {}
        MORE => return H2::More(vget(&s.hl.a) as u32),
        _ => return H2::Not,
    }
    vset(&mut s.hl.pos, vget(&s.hl.a));
    vset(&mut s.hl.done, 0);
    run_loop(MAX_FIELDS, field_turn);
    if vget(&s.hl.done) != FOUND {
        return H2::Not;
    }
    let start = vget(&s.hl.a) as usize & (WINDOW * 2 - 1);
    let len = vget(&s.hl.arg) as usize & 0xffff;
    let n = if vget(&s.hl.huffman) == 1 {
        decode_host(s, start, len)
    } else if len == 0 {
        0
    } else {
        copy_host(s, start, start + len)
    };
    if n == 0 {
        return H2::Not;
    }
    H2::Name(n)
}

/// Decodes the Huffman-coded value `window[start..start + len]` into `Scratch::name` up to the
/// end of its host (`huffman_turn`); returns the host's length, 0 when empty, too long, or the
/// coding is invalid before the host's end (EOS) or at the value's end (padding).
#[inline(always)]
fn decode_host(s: &mut Scratch, start: usize, len: usize) -> usize {
    vset(&mut s.hl.pos, start as u64);
    vset(&mut s.hl.arg, (start + len) as u64);
    vset(&mut s.hl.a, 0);
    vset(&mut s.hl.b, 0);
    vset(&mut s.hl.mode, 0);
    vset(&mut s.hl.accept, 1);
    vset(&mut s.hl.done, 0);
    run_loop(len, huffman_turn);
    let found = match vget(&s.hl.done) {
        FOUND => true,
        // The value's end (all of it read): a valid padding, or the coding is not valid.
        0 => vget(&s.hl.pos) == (start + len) as u64 && vget(&s.hl.accept) == 1,
        _ => false,
    };
    if found {
        vget(&s.hl.b) as usize
    } else {
        0
    }
}

/// Turn of the Huffman decode of the `:authority` value `hl.pos..hl.arg`: one coded byte, two
/// nibbles through the decoder (`classifier_common::hpack::HUFFMAN_DFA`, state in `hl.a`),
/// each symbol going to `Scratch::name` (length `hl.b`) as a Host's value would: a value whose
/// first symbol is `[` keeps what follows up to `]`, any other is cut at its first `:`. Ends
/// FOUND at that cut (what follows is not read), FAILED on EOS or a host of `MAX_NAME_LEN`
/// bytes or more; at the value's end the caller checks the padding (`hl.accept`).
#[inline(never)]
extern "C" fn huffman_turn(_i: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let pos = s.hl.pos as usize;
    if pos >= s.hl.arg as usize {
        return 1;
    }
    let byte = s.window[pos & WMASK] as u32;
    let mut state = s.hl.a as u32;
    let mut out = s.hl.b as usize;
    for nibble in [byte >> 4, byte & 15] {
        let e = HUFFMAN_DFA[((state << 4) | nibble) as usize & (HUFFMAN_DFA.len() - 1)];
        if e & DFA_FAIL != 0 {
            s.hl.done = FAILED;
            return 1;
        }
        state = e & DFA_STATE;
        s.hl.accept = u64::from(e & DFA_ACCEPT != 0);
        if e & DFA_EMIT == 0 {
            continue;
        }
        let c = (e >> 8) as u8;
        if s.hl.mode == 0 {
            s.hl.mode = if c == b'[' { 2 } else { 1 };
            if c == b'[' {
                continue;
            }
        }
        if c == if s.hl.mode == 2 { b']' } else { b':' } {
            s.hl.b = out as u64;
            s.hl.done = FOUND;
            return 1;
        }
        if out >= MAX_NAME_LEN - 1 {
            s.hl.done = FAILED;
            return 1;
        }
        // Masked behind `opaque`: LLVM knows `out < 255` and would drop a plain mask, leaving
        // the verifier a bound it must carry through a stack reload.
        s.name[opaque(out) & (MAX_NAME_LEN - 1)] = c;
        out += 1;
    }
    s.hl.pos = pos as u64 + 1;
    s.hl.a = state as u64;
    s.hl.b = out as u64;
    0
}
