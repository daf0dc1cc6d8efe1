//! TLS ClientHello server name (docs/decision.md §6, TLS).

use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::TcContext, EbpfContext};
use classifier_common::MAX_NAME_LEN;

use super::{
    maps::{launder, Scratch},
    pkt::{opaque, Pkt, Window},
};

/// Most extensions walked.
const MAX_EXTENSIONS: u32 = 64;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ECH: u16 = 0xfe0d;
/// Offsets in a frame stay below this.
const OFF_MASK: usize = 0xffff;

/// What a first payload says as a ClientHello.
#[expect(clippy::enum_variant_names, reason = "NotHello reads better than Not")]
pub enum Hello {
    /// Not a TLS handshake record holding a ClientHello, or unparseable.
    NotHello,
    /// A ClientHello that continues past this segment.
    Incomplete,
    /// A complete ClientHello; `name_len` bytes of server name in `Scratch::name` (0: none).
    Complete { name_len: usize, ech: bool },
}

/// Parses a ClientHello that starts at the payload of `p`.
#[inline(always)]
pub fn parse(ctx: &TcContext, p: &Pkt, s: &mut Scratch) -> Hello {
    let w = Window::of(ctx);
    let u8_at = |off| w.rd::<u8>(ctx, off);
    let be16_at = |off| w.rd::<[u8; 2]>(ctx, off).map(u16::from_be_bytes);
    let start = p.payload_off as usize;
    let end = start + p.payload_len as usize;
    let (Some(rec), Some(major), Some(minor)) = (u8_at(start), u8_at(start + 1), u8_at(start + 2))
    else {
        return Hello::NotHello;
    };
    if rec != 0x16 || major != 3 || minor > 4 {
        return Hello::NotHello;
    }
    let Some(rec_len) = be16_at(start + 3) else {
        return Hello::NotHello;
    };
    let Some(hs_type) = u8_at(start + 5) else {
        return Hello::Incomplete;
    };
    if hs_type != 1 {
        return Hello::NotHello;
    }
    let (Some(l_hi), Some(l_lo)) = (u8_at(start + 6), be16_at(start + 7)) else {
        return Hello::Incomplete;
    };
    let hs_len = ((l_hi as usize) << 16) | l_lo as usize;
    let hello_end = start + 9 + hs_len;
    let rec_end = start + 5 + rec_len as usize;
    if hello_end > end {
        return Hello::Incomplete;
    }
    if hello_end > rec_end {
        // A ClientHello fragmented over several records: not followed.
        return Hello::NotHello;
    }
    // Version (2) and random (32).
    let mut off = start + 9 + 34;
    let Some(sid) = u8_at(off) else {
        return Hello::NotHello;
    };
    off += 1 + sid as usize;
    let Some(cs) = be16_at(off) else {
        return Hello::NotHello;
    };
    off += 2 + cs as usize;
    let Some(comp) = u8_at(off) else {
        return Hello::NotHello;
    };
    off += 1 + comp as usize;
    if off > hello_end {
        return Hello::NotHello;
    }
    if off == hello_end {
        // No extensions.
        return Hello::Complete {
            name_len: 0,
            ech: false,
        };
    }
    let Some(ext_total) = be16_at(off) else {
        return Hello::NotHello;
    };
    off += 2;
    let ext_end = off + ext_total as usize;
    if ext_end > hello_end {
        return Hello::NotHello;
    }
    let mut ech = false;
    let mut name_at = 0usize;
    let mut name_len = 0usize;
    let ext_end = launder(s, 3, ext_end, OFF_MASK);
    for _ in 0..MAX_EXTENSIONS {
        // Bounded ranges let the verifier see one state per loop turn.
        off = opaque(off) & OFF_MASK;
        name_at = opaque(name_at) & OFF_MASK;
        name_len = opaque(name_len) & (MAX_NAME_LEN - 1);
        if off + 4 > ext_end {
            break;
        }
        // Type and length in one read.
        let Some(tl) = w.rd::<u32>(ctx, off) else {
            return Hello::NotHello;
        };
        let tl = u32::from_be(tl);
        let (ty, len) = ((tl >> 16) as u16, tl as u16);
        let body = off + 4;
        off = body + len as usize;
        if off > ext_end {
            return Hello::NotHello;
        }
        if ty == EXT_ECH {
            ech = true;
        } else if ty == EXT_SERVER_NAME && name_len == 0 && len >= 5 {
            let (Some(nt), Some(nl)) = (u8_at(body + 2), be16_at(body + 3)) else {
                return Hello::NotHello;
            };
            let nl = nl as usize;
            if nt == 0 && (1..MAX_NAME_LEN).contains(&nl) && body + 5 + nl <= off {
                name_at = body + 5;
                name_len = nl;
            }
        }
    }
    if name_len > 0 && !copy_name(ctx, w, s, name_at, name_len) {
        return Hello::NotHello;
    }
    Hello::Complete { name_len, ech }
}

/// Copies `len` (1..=255) packet bytes at `off` into `Scratch::name`: 8 bytes a load while
/// they are in the linear data (the bytes past the name's end that the last word brings along
/// are zeroed by `names::normalize`), else with `bpf_skb_load_bytes`. The helper call and the
/// kernel's byte copy behind it cost about three times the word loads of a 64-byte name.
#[inline(always)]
pub fn copy_name(ctx: &TcContext, win: Window, s: &mut Scratch, off: usize, len: usize) -> bool {
    let n = (opaque(len.wrapping_sub(1) & (MAX_NAME_LEN - 1)) + 1) as u32;
    let w = s.name.as_mut_ptr() as *mut u64;
    let mut direct = true;
    for c in 0..MAX_NAME_LEN / 8 {
        if c * 8 >= n as usize {
            break;
        }
        let Some(x) = win.rd::<u64>(ctx, off + c * 8) else {
            direct = false;
            break;
        };
        // SAFETY: c < 32: an aligned word of the 8-aligned, 520-byte buffer.
        unsafe { *w.add(c) = x };
    }
    if direct {
        return true;
    }
    // SAFETY: n is in 1..=256 and the destination holds 520 bytes.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr() as *const _,
            off as u32,
            s.name.as_mut_ptr() as *mut _,
            n,
        )
    };
    r == 0
}
