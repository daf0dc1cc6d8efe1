//! HTTP/1.x `Host` and HTTP/2 (prior knowledge) `:authority` (docs/decision.md §6).

use core::hint::black_box;

use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::TcContext, EbpfContext};
use classifier_common::MAX_NAME_LEN;

use super::{
    maps::{Scratch, WINDOW},
    pkt::Pkt,
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
    let n = black_box(((len as u32 - 1) & (WINDOW as u32 - 1)) + 1);
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

/// Finds the HTTP/1.x Host of a window of `n` bytes; copies it (port stripped, not yet
/// lower-cased) to `Scratch::name` and returns its length (0: none).
#[inline(always)]
pub fn host(s: &mut Scratch, n: usize) -> usize {
    let w = &s.window;
    let mut is_http = false;
    for m in METHODS {
        if starts_with(w, n, m) {
            is_http = true;
            break;
        }
    }
    if !black_box(is_http) {
        return 0;
    }
    // One verifier state from here on, whichever method matched.
    let n = black_box(n) & (WINDOW * 2 - 1);
    // Find "\nhost:" at a line start; stop at the empty line that ends the headers.
    let mut value = 0usize;
    for i in 0..WINDOW {
        if i + 1 >= n {
            break;
        }
        if w[i & WMASK] != b'\n' {
            continue;
        }
        let a = w[(i + 1) & WMASK];
        if a == b'\r' || a == b'\n' {
            break;
        }
        if i + 6 <= n
            && lower(a) == b'h'
            && lower(w[(i + 2) & WMASK]) == b'o'
            && lower(w[(i + 3) & WMASK]) == b's'
            && lower(w[(i + 4) & WMASK]) == b't'
            && w[(i + 5) & WMASK] == b':'
        {
            value = i + 6;
            break;
        }
    }
    let value = black_box(value) & WMASK;
    if value == 0 {
        return 0;
    }
    // Trim leading blanks, find the end of the line, trim trailing blanks.
    let mut start = value;
    for _ in 0..WINDOW {
        if start >= n {
            break;
        }
        let b = w[start & WMASK];
        if b != b' ' && b != b'\t' {
            break;
        }
        start += 1;
    }
    let mut end = start;
    for _ in 0..WINDOW {
        if end >= n {
            break;
        }
        let b = w[end & WMASK];
        if b == b'\r' || b == b'\n' {
            break;
        }
        end += 1;
    }
    for _ in 0..WINDOW {
        if end <= start {
            break;
        }
        let b = w[(end - 1) & WMASK];
        if b != b' ' && b != b'\t' {
            break;
        }
        end -= 1;
    }
    if end <= start {
        return 0;
    }
    // Strip the port: `[v6]:port` keeps what is inside the brackets, `name:port` the name.
    if w[start & WMASK] == b'[' {
        start += 1;
        let mut close = start;
        for _ in 0..WINDOW {
            if close >= end || w[close & WMASK] == b']' {
                break;
            }
            close += 1;
        }
        end = close;
    } else {
        let mut colon = start;
        for _ in 0..WINDOW {
            if colon >= end || w[colon & WMASK] == b':' {
                break;
            }
            colon += 1;
        }
        end = colon;
    }
    copy_to_name(s, start, end)
}

/// Copies `window[start..end]` to `name`; returns the length (0 when empty or too long).
#[inline(always)]
fn copy_to_name(s: &mut Scratch, start: usize, end: usize) -> usize {
    if end <= start || end - start >= MAX_NAME_LEN {
        return 0;
    }
    let len = end - start;
    for i in 0..MAX_NAME_LEN {
        if i >= len {
            break;
        }
        s.name[i] = s.window[(start + i) & WMASK];
    }
    len
}

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Most frames skipped before the first HEADERS frame.
const MAX_FRAMES: usize = 8;
/// Most header fields walked in the HEADERS frame.
const MAX_FIELDS: usize = 16;

/// Decodes an HPACK integer with an `bits`-bit prefix at `*pos`; advances `*pos`.
#[inline(always)]
fn hpack_int(w: &[u8], n: usize, pos: &mut usize, bits: u32) -> Option<usize> {
    if *pos >= n {
        return None;
    }
    let max = (1usize << bits) - 1;
    let mut v = w[*pos & WMASK] as usize & max;
    *pos += 1;
    if v < max {
        return Some(v);
    }
    let mut shift = 0;
    for _ in 0..2 {
        if *pos >= n {
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

/// Finds the `:authority` of the first HEADERS frame after the HTTP/2 preface. Copies the value
/// to `Scratch::name`; returns `(len, huffman)` (len 0: none).
#[inline(always)]
pub fn authority(s: &mut Scratch, n: usize) -> (usize, bool) {
    let w = &s.window;
    if n < PREFACE.len() {
        return (0, false);
    }
    for i in 0..PREFACE.len() {
        if w[i] != PREFACE[i] {
            return (0, false);
        }
    }
    let mut off = PREFACE.len();
    let mut block = 0usize;
    let mut block_end = 0usize;
    for _ in 0..MAX_FRAMES {
        off = black_box(off) & 0xffffff;
        if off + 9 > n {
            return (0, false);
        }
        let len = ((w[off & WMASK] as usize) << 16)
            | ((w[(off + 1) & WMASK] as usize) << 8)
            | w[(off + 2) & WMASK] as usize;
        let ty = w[(off + 3) & WMASK];
        let flags = w[(off + 4) & WMASK];
        let body = off + 9;
        off = body + len;
        if ty == 1 {
            let mut start = body;
            let mut end = off;
            if flags & 0x08 != 0 {
                if start >= n {
                    return (0, false);
                }
                let pad = w[start & WMASK] as usize;
                start += 1;
                if pad > end - start {
                    return (0, false);
                }
                end -= pad;
            }
            if flags & 0x20 != 0 {
                start += 5;
            }
            block = start;
            block_end = if end < n { end } else { n };
            break;
        }
    }
    if block == 0 {
        return (0, false);
    }
    let mut pos = block;
    let block_end = black_box(block_end) & 0x7ff;
    for _ in 0..MAX_FIELDS {
        // Bounded ranges let the verifier see one state per loop turn.
        pos = black_box(pos) & 0xfff;
        if pos >= block_end {
            return (0, false);
        }
        let b = w[pos & WMASK];
        let bits = if b & 0x80 != 0 {
            // Indexed field.
            if hpack_int(w, block_end, &mut pos, 7).is_none() {
                return (0, false);
            }
            continue;
        } else if b & 0xc0 == 0x40 {
            6
        } else if b & 0xe0 == 0x20 {
            // Dynamic table size update.
            if hpack_int(w, block_end, &mut pos, 5).is_none() {
                return (0, false);
            }
            continue;
        } else {
            4
        };
        let Some(index) = hpack_int(w, block_end, &mut pos, bits) else {
            return (0, false);
        };
        let index = black_box(index) & 0xffff;
        if index == 0 {
            // Literal name: skip it.
            let Some(nl) = hpack_int(w, block_end, &mut pos, 7) else {
                return (0, false);
            };
            pos += nl & 0xffff;
        }
        if pos >= block_end {
            return (0, false);
        }
        let huffman = w[pos & WMASK] & 0x80 != 0;
        let Some(vl) = hpack_int(w, block_end, &mut pos, 7) else {
            return (0, false);
        };
        let vl = black_box(vl) & 0xffff;
        if index == 1 {
            if pos + vl > block_end {
                return (0, false);
            }
            return (copy_to_name(s, pos, pos + vl), huffman);
        }
        pos += vl;
    }
    (0, false)
}
