//! ClientHellos split over TCP segments (docs/decision.md §6 and §11, "Split ClientHello").
//!
//! A streaming, field-level parser: its state is a `PendingValue` (the flow's `PENDING`
//! entry, copied into per-CPU `SPLIT` memory while a segment is parsed). Each segment's bytes
//! of the hello are copied into `SplitWork::buf` and parsed from where the state left off, one
//! field or one skip per `bpf_loop` turn, so the verifier checks one callback body. Skips over
//! the random, session id, cipher suites, compression methods and extension bodies advance by
//! arithmetic; fixed-size fields that straddle a segment boundary are accumulated in
//! `PendingValue::acc`; the server name is copied into `PendingValue::name`.
//!
//! The rules are those of the single-segment parser (tls.rs) and of the model's
//! `names::client_hello`: the hello is judged when `9 + handshake length` bytes have arrived,
//! as if it had come in one segment; a header byte inconsistent with a ClientHello, or a hello
//! longer than 16384 bytes, makes it not inspectable at once.

use core::{ffi::c_void, hint::black_box, ptr::read_unaligned};

use aya_ebpf::{
    helpers::{bpf_loop, bpf_skb_load_bytes},
    programs::TcContext,
    EbpfContext,
};
use classifier_common::PendingValue;

use super::{
    maps::{SplitWork, HELLO_LIMIT, SPLIT},
    pkt::{rd, u8_at, Pkt, TCP_SYN},
};

/// What a segment says about the hello being followed.
pub const NOT_HELLO: u8 = 0;
/// The hello continues past this segment.
pub const NEED_MORE: u8 = 1;
/// The hello is complete: the name (if any) is in `SplitWork::pv`.
pub const COMPLETE: u8 = 2;

/// `PendingValue::flags`: an ECH extension was read.
pub const F_ECH: u8 = 1;
/// `PendingValue::flags`: not a ClientHello (decided at once, not at the hello's end).
const F_NOT: u8 = 2;

// Parser phases. Reads of a field (`need` bytes into `acc`):
const REC: u8 = 0;
const MAJOR: u8 = 1;
const MINOR: u8 = 2;
const REC_LEN: u8 = 3;
const HS_TYPE: u8 = 4;
const HS_LEN: u8 = 5;
const SID: u8 = 6;
const CS: u8 = 7;
const COMP: u8 = 8;
const EXT_LEN: u8 = 9;
const EXT_HDR: u8 = 10;
const SNI: u8 = 11;
// Skips to `skip_to` (phases from SKIPS on):
const SKIPS: u8 = 16;
const RANDOM: u8 = 16;
const SID_SKIP: u8 = 17;
const CS_SKIP: u8 = 18;
const COMP_SKIP: u8 = 19;
const EXT_SKIP: u8 = 20;
const SNI_SKIP: u8 = 21;
/// The hello parsed (extension walk over): skip to its end.
const DONE: u8 = 22;
/// The hello is not inspectable, known before its end: skip to its end.
const BAD: u8 = 23;
// Neither:
/// Before an extension header: is there one?
const EXT: u8 = 32;
/// Copying the server name.
const NAME: u8 = 33;

/// `PendingValue::phase` of an HTTP/2 prior-knowledge stream followed to its first HEADERS
/// frame (http.rs, not this parser): `next_seq` as for a hello, `acc` how far into the next
/// segment the next frame starts, `count` the segments seen.
pub const H2_STREAM: u8 = 64;
/// Most segments of an HTTP/2 stream that may end before its first HEADERS frame.
pub const H2_MAX_SEGMENTS: u8 = 8;

/// Most extensions read.
const MAX_EXTENSIONS: u8 = 64;
const EXT_SERVER_NAME: u32 = 0;
const EXT_ECH: u32 = 0xfe0d;
/// Turns per segment: far more than the fields of a 16384-byte hello (64 extensions of at
/// most 3 turns, or 5 for a `server_name`, the name in 8-byte chunks, the header).
const MAX_TURNS: u32 = 1024;
const BUF_MASK: u32 = HELLO_LIMIT as u32 - 1;

/// `starts`: not the start of a split ClientHello (left to the name stages).
pub const OTHER: u8 = 0;
/// `starts`: a ClientHello that continues past this segment, or too short to tell.
pub const SPLIT_START: u8 = 1;
/// `starts`: a ClientHello longer than 16384 bytes: not inspectable, even whole in this
/// segment (and, starting with 0x16, no HTTP request either).
pub const TOO_LONG: u8 = 2;

/// What the first payload of a connection is: the start of a ClientHello that continues past
/// this segment (consistent so far, at most 16384 bytes) or too short to tell, a hello too
/// long to inspect, or anything else (a whole hello, not a hello: left to the name stages).
#[inline(always)]
pub fn starts(ctx: &TcContext, p: &Pkt) -> u8 {
    let n = p.payload_len as usize;
    if n == 0 {
        return OTHER;
    }
    if n < 9 {
        return SPLIT_START;
    }
    let Some((h, last)) = hello_header(ctx, p.payload_off as usize) else {
        return OTHER;
    };
    // Bytes 0-2: record type 0x16, version 3.x (x <= 4); byte 5: ClientHello (1).
    let (rec, major, minor, ty) = (h as u8, (h >> 8) as u8, (h >> 16) as u8, (h >> 40) as u8);
    if rec != 0x16 || major != 3 || minor > 4 || ty != 1 {
        return OTHER;
    }
    // Bytes 6-8: the handshake length, big-endian.
    let end = 9 + (((h >> 48) as usize & 0xff) << 16 | ((h >> 56) as usize) << 8 | last as usize);
    if end > HELLO_LIMIT {
        TOO_LONG
    } else if end > n {
        SPLIT_START
    } else {
        OTHER
    }
}

/// The first nine bytes of a payload at `at` (a TLS record header and a handshake header):
/// bytes 0-7 as a little-endian word and byte 8, in two reads.
#[inline(always)]
pub fn hello_header(ctx: &TcContext, at: usize) -> Option<(u64, u8)> {
    Some((rd::<u64>(ctx, at)?, u8_at(ctx, at + 8)?))
}

/// Parses this segment's payload as the continuation of the stream whose state is `prev`
/// (the flow's `PENDING` entry), or, without one, as the start of a new stream; returns
/// `NOT_HELLO`, `NEED_MORE` or `COMPLETE`. The state ends in `SPLIT[0].pv` (with `next_seq`
/// past the segment), and is written back to `prev` on `NEED_MORE`.
#[inline(never)]
pub fn follow(ctx: &TcContext, p: &Pkt, prev: Option<&mut PendingValue>) -> u8 {
    let Some(w) = SPLIT.get_ptr_mut(0) else {
        return NOT_HELLO;
    };
    // SAFETY: per-CPU memory, used by this program run only.
    let w = unsafe { &mut *w };
    match prev {
        Some(pv) => {
            w.pv = *pv;
            let r = segment(ctx, p, w);
            if r == NEED_MORE {
                *pv = w.pv;
            }
            r
        }
        None => {
            let v = &mut w.pv;
            v.next_seq = 0;
            v.acc = 0;
            v.pos = 0;
            v.end = 0;
            v.skip_to = 0;
            v.ext_end = 0;
            v.ext_off = 0;
            v.phase = REC;
            v.need = 1;
            v.count = 0;
            v.flags = 0;
            v.name_len = 0;
            v.name_got = 0;
            segment(ctx, p, w)
        }
    }
}

/// Parses the segment's bytes of the hello with the state in `w.pv`.
#[inline(always)]
fn segment(ctx: &TcContext, p: &Pkt, w: &mut SplitWork) -> u8 {
    let base = w.pv.pos as u32;
    let cap = if w.pv.end != 0 {
        w.pv.end as u32
    } else {
        HELLO_LIMIT as u32
    };
    let len = p.payload_len;
    if len == 0 || base >= cap {
        return NOT_HELLO;
    }
    let n = if len < cap - base { len } else { cap - base };
    // 1..=HELLO_LIMIT, provably to the verifier.
    let n = (black_box(n).wrapping_sub(1) & BUF_MASK) + 1;
    // SAFETY: n is in 1..=HELLO_LIMIT and the buffer holds HELLO_LIMIT + 8 bytes.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr() as *const _,
            p.payload_off,
            w.buf.as_mut_ptr() as *mut _,
            n,
        )
    };
    if r != 0 {
        return NOT_HELLO;
    }
    w.base = base;
    w.lim = base + n;
    // A SYN (TCP Fast Open data) takes one sequence number before its payload.
    let syn = (p.tcp_flags & TCP_SYN != 0) as u32;
    w.pv.next_seq = p.seq.wrapping_add(len).wrapping_add(syn);
    // SAFETY: a callback of the signature bpf_loop expects, no context.
    unsafe { bpf_loop(MAX_TURNS, turn as *mut c_void, core::ptr::null_mut(), 0) };
    let v = &w.pv;
    if v.flags & F_NOT != 0 {
        return NOT_HELLO;
    }
    let end = v.end as u32;
    if end != 0 && base + len >= end {
        if v.phase == DONE && v.pos as u32 == end {
            return COMPLETE;
        }
        return NOT_HELLO;
    }
    NEED_MORE
}

/// One turn of the parser: one field, one skip or one name chunk. Returns 1 to stop (bytes
/// needed, or the outcome known).
#[inline(never)]
extern "C" fn turn(_i: u64, _ctx: *mut c_void) -> i64 {
    let Some(w) = SPLIT.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU memory, used by this program run only.
    let w = unsafe { &mut *w };
    step(w)
}

#[inline(always)]
fn step(w: &mut SplitWork) -> i64 {
    let lim = w.lim;
    let base = w.base;
    let v = &mut w.pv;
    let pos = v.pos as u32;
    let phase = v.phase;
    if (SKIPS..EXT).contains(&phase) {
        let to = v.skip_to as u32;
        if pos < to {
            if pos >= lim {
                return 1;
            }
            let np = if to < lim { to } else { lim };
            v.pos = np as u16;
            if np < to {
                return 1;
            }
        }
        return arrived(v);
    }
    if phase == EXT {
        if v.count >= MAX_EXTENSIONS || pos + 4 > v.ext_end as u32 {
            done(v);
        } else {
            read(v, EXT_HDR, 4);
        }
        return 0;
    }
    if pos >= lim {
        return 1;
    }
    let i = (pos.wrapping_sub(base) & BUF_MASK) as usize;
    let avail = lim - pos;
    if phase == NAME {
        let got = v.name_got as u32;
        let left = (v.name_len as u32).wrapping_sub(got);
        let mut m = if left < 8 { left } else { 8 };
        if avail < m {
            m = avail;
        }
        for j in 0..8usize {
            if (j as u32) < m {
                v.name[(got as usize + j) & 0xff] = w.buf[i + j];
            }
        }
        v.pos = (pos + m) as u16;
        let got = got + m;
        v.name_got = got as u8;
        if got >= v.name_len as u32 {
            let to = v.ext_off;
            skip(v, EXT_SKIP, to as u32);
        }
        return 0;
    }
    let need = v.need as u32 & 7;
    let mut acc = v.acc;
    let took;
    if (1..=4).contains(&need) && need <= avail {
        // SAFETY: i < HELLO_LIMIT and the buffer has 8 bytes beyond it.
        let raw =
            u32::from_be_bytes(unsafe { read_unaligned(w.buf.as_ptr().add(i) as *const [u8; 4]) });
        let val = raw >> ((4 - need) * 8);
        acc = (((acc as u64) << (need * 8)) as u32) | val;
        took = need;
    } else {
        acc = (acc << 8) | w.buf[i] as u32;
        took = 1;
    }
    let pos = pos + took;
    v.pos = pos as u16;
    v.acc = acc;
    let need = need.wrapping_sub(took);
    v.need = need as u8;
    if need != 0 {
        return 0;
    }
    field(v, phase, acc, pos)
}

/// A whole field has been read: checks it and moves on.
#[inline(always)]
fn field(v: &mut PendingValue, phase: u8, acc: u32, pos: u32) -> i64 {
    match phase {
        REC => {
            if acc != 0x16 {
                return not_hello(v);
            }
            read(v, MAJOR, 1);
        }
        MAJOR => {
            if acc != 3 {
                return not_hello(v);
            }
            read(v, MINOR, 1);
        }
        MINOR => {
            if acc > 4 {
                return not_hello(v);
            }
            read(v, REC_LEN, 2);
        }
        REC_LEN => {
            // Kept until the handshake length is known.
            v.ext_end = acc as u16;
            read(v, HS_TYPE, 1);
        }
        HS_TYPE => {
            if acc != 1 {
                return not_hello(v);
            }
            read(v, HS_LEN, 3);
        }
        HS_LEN => {
            let end = 9 + (acc & 0xff_ffff);
            if end > HELLO_LIMIT as u32 {
                return not_hello(v);
            }
            v.end = end as u16;
            if end > 5 + v.ext_end as u32 {
                // A hello spread over several records: not inspectable.
                bad(v);
            } else {
                // Version (2) and random (32).
                skip(v, RANDOM, 9 + 34);
            }
        }
        SID => skip(v, SID_SKIP, pos + acc),
        CS => skip(v, CS_SKIP, pos + acc),
        COMP => skip(v, COMP_SKIP, pos + acc),
        EXT_LEN => {
            let e = pos + acc;
            if e > v.end as u32 {
                bad(v);
            } else {
                v.ext_end = e as u16;
                v.count = 0;
                v.phase = EXT;
            }
        }
        EXT_HDR => {
            let ty = acc >> 16;
            let len = acc & 0xffff;
            v.count += 1;
            let off = pos + len;
            if off > v.ext_end as u32 {
                bad(v);
                return 0;
            }
            v.ext_off = off as u16;
            if ty == EXT_ECH {
                v.flags |= F_ECH;
                skip(v, EXT_SKIP, off);
            } else if ty == EXT_SERVER_NAME && v.name_len == 0 && len >= 5 {
                // The list length (2), then type and length of the first entry.
                skip(v, SNI_SKIP, pos + 2);
            } else {
                skip(v, EXT_SKIP, off);
            }
        }
        SNI => {
            let nt = acc >> 16;
            let nl = acc & 0xffff;
            let off = v.ext_off as u32;
            if nt == 0 && (1..256).contains(&nl) && pos + nl <= off {
                v.name_len = nl as u8;
                v.name_got = 0;
                v.phase = NAME;
            } else {
                skip(v, EXT_SKIP, off);
            }
        }
        _ => return not_hello(v),
    }
    0
}

/// A skip reached its end: the next step.
#[inline(always)]
fn arrived(v: &mut PendingValue) -> i64 {
    match v.phase {
        RANDOM => read_in(v, SID, 1),
        SID_SKIP => read_in(v, CS, 2),
        CS_SKIP => read_in(v, COMP, 1),
        COMP_SKIP => {
            if v.pos == v.end {
                // No extensions.
                done(v);
            } else {
                read_in(v, EXT_LEN, 2);
            }
        }
        EXT_SKIP => v.phase = EXT,
        SNI_SKIP => read_in(v, SNI, 3),
        _ => return 1,
    }
    0
}

/// Starts reading a `k`-byte field of the header.
#[inline(always)]
fn read(v: &mut PendingValue, phase: u8, k: u8) {
    v.phase = phase;
    v.need = k;
    v.acc = 0;
}

/// Starts reading a `k`-byte field that must end inside the hello.
#[inline(always)]
fn read_in(v: &mut PendingValue, phase: u8, k: u8) {
    if v.pos as u32 + k as u32 > v.end as u32 {
        bad(v);
    } else {
        read(v, phase, k);
    }
}

/// Starts a skip to `to`, which must not pass the end of the hello.
#[inline(always)]
fn skip(v: &mut PendingValue, phase: u8, to: u32) {
    if to > v.end as u32 {
        bad(v);
    } else {
        v.phase = phase;
        v.skip_to = to as u16;
    }
}

#[inline(always)]
fn done(v: &mut PendingValue) {
    v.phase = DONE;
    v.skip_to = v.end;
}

#[inline(always)]
fn bad(v: &mut PendingValue) {
    v.phase = BAD;
    v.skip_to = v.end;
}

#[inline(always)]
fn not_hello(v: &mut PendingValue) -> i64 {
    v.flags |= F_NOT;
    1
}
