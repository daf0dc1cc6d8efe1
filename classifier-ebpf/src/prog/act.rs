//! Acting on a verdict (docs/decision.md §9): PASS, DROP, REJECT (TCP RST / ICMP port
//! unreachable) and REDIRECT (socket assignment to the proxy).

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    bindings::{
        bpf_sock, bpf_sock_tuple, BPF_F_CURRENT_NETNS, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT,
        TC_ACT_UNSPEC,
    },
    helpers::{
        bpf_clone_redirect, bpf_l4_csum_replace, bpf_redirect, bpf_sk_assign, bpf_sk_lookup_tcp,
        bpf_sk_lookup_udp, bpf_sk_release, bpf_skb_adjust_room, bpf_skb_change_tail,
        bpf_skb_load_bytes, bpf_skb_store_bytes, bpf_skc_lookup_tcp,
    },
    programs::TcContext,
    EbpfContext,
};
use classifier_common::{counter, family, proto, verdict, Config};

use super::{
    cnt,
    maps::{Scratch, WINDOW},
    pkt::{opaque, Pkt, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// Where the IP header is built in `Scratch::window`; the Ethernet header goes right before it.
const IP_AT: usize = 32;
/// Longest quote of the offending packet in an ICMP error.
const MAX_QUOTE: usize = 256;
const BPF_TCP_LISTEN: u32 = 10;

/// Applies `v` to the packet. `after_handshake`: the decision came from a TCP payload. PASS
/// and DROP are decided inline: a call and its return cost more than they do.
#[inline(always)]
pub fn act(ctx: &TcContext, p: &Pkt, cfg: &Config, v: u8, after_handshake: bool) -> i32 {
    if needs_packet(v) {
        act_slow(ctx, p, cfg, v, after_handshake)
    } else {
        code(v)
    }
}

/// Whether acting on verdict `v` needs the packet described (`Pkt`): REJECT and REDIRECT.
#[inline(always)]
pub fn needs_packet(v: u8) -> bool {
    v == verdict::REJECT || v == verdict::REDIRECT
}

/// The TC code of a verdict that needs no action beyond it: DROP, else PASS.
#[inline(always)]
pub fn code(v: u8) -> i32 {
    if v == verdict::DROP {
        TC_ACT_SHOT
    } else {
        TC_ACT_UNSPEC
    }
}

/// REJECT and REDIRECT: a function of its own (the reply builders are large).
#[inline(never)]
fn act_slow(ctx: &TcContext, p: &Pkt, cfg: &Config, v: u8, after_handshake: bool) -> i32 {
    match v {
        verdict::REJECT => {
            let s = match super::maps::SCRATCH.get_ptr_mut(0) {
                // SAFETY: per-CPU scratch, used by this program run only.
                Some(s) => unsafe { &mut *s },
                None => return TC_ACT_SHOT,
            };
            if p.key.proto == proto::TCP {
                reject_tcp(ctx, p, s, after_handshake)
            } else if p.key.proto == proto::UDP {
                reject_udp(ctx, p, s)
            } else {
                TC_ACT_SHOT
            }
        }
        verdict::REDIRECT => redirect(ctx, p, cfg),
        _ => TC_ACT_UNSPEC,
    }
}

/// Folds a 32-bit one's-complement sum into a 16-bit checksum.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Sums `len` bytes (even) of the window at `at` as big-endian 16-bit words.
#[inline(always)]
fn sum_words(w: &[u8], at: usize, len: usize, mut sum: u32) -> u32 {
    for i in 0..(MAX_QUOTE + 64) / 2 {
        if i * 2 >= len {
            break;
        }
        let j = (at + i * 2) & (WINDOW - 1);
        sum += u16::from_be_bytes([w[j], w[j + 1]]) as u32;
    }
    sum
}

/// Writes the Ethernet header (and VLAN tag) before `IP_AT`, swapping the MACs when
/// `reverse`; returns the frame's start in the window.
#[inline(always)]
fn eth(ctx: &TcContext, p: &Pkt, s: &mut Scratch, reverse: bool) -> Option<usize> {
    let l2 = p.l3_off as usize;
    let at = IP_AT - if l2 == 18 { 18 } else { 14 };
    let macs: [u8; 12] = super::pkt::rd(ctx, 0)?;
    let w = &mut s.window;
    if reverse {
        w[at..at + 6].copy_from_slice(&macs[6..12]);
        w[at + 6..at + 12].copy_from_slice(&macs[0..6]);
    } else {
        w[at..at + 12].copy_from_slice(&macs);
    }
    if l2 == 18 {
        let tag: [u8; 4] = super::pkt::rd(ctx, 12)?;
        w[at + 12..at + 16].copy_from_slice(&tag);
    }
    let et: [u8; 2] = if p.key.family == family::V4 {
        [0x08, 0x00]
    } else {
        [0x86, 0xdd]
    };
    w[IP_AT - 2..IP_AT].copy_from_slice(&et);
    Some(at)
}

/// Writes an IP header at `IP_AT` from `src` to `dst` carrying `l4_len` bytes of `proto`;
/// returns its length and the pseudo-header sum for the layer-4 checksum.
#[inline(always)]
fn ip(
    s: &mut Scratch,
    p: &Pkt,
    src: &[u8; 16],
    dst: &[u8; 16],
    l4proto: u8,
    l4_len: usize,
) -> (usize, u32) {
    let w = &mut s.window;
    if p.key.family == family::V4 {
        let h = &mut w[IP_AT..IP_AT + 20];
        h[0] = 0x45;
        h[1] = 0;
        h[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&[0, 0]);
        h[6..8].copy_from_slice(&[0x40, 0]);
        h[8] = 64;
        h[9] = l4proto;
        h[10..12].copy_from_slice(&[0, 0]);
        h[12..16].copy_from_slice(&src[..4]);
        h[16..20].copy_from_slice(&dst[..4]);
        let c = fold(sum_words(w, IP_AT, 20, 0));
        w[IP_AT + 10..IP_AT + 12].copy_from_slice(&c.to_be_bytes());
        let pseudo = sum_words(w, IP_AT + 12, 8, 0) + l4proto as u32 + l4_len as u32;
        (20, pseudo)
    } else {
        let h = &mut w[IP_AT..IP_AT + 40];
        h[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
        h[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        h[6] = l4proto;
        h[7] = 64;
        h[8..24].copy_from_slice(src);
        h[24..40].copy_from_slice(dst);
        let pseudo = sum_words(w, IP_AT + 8, 32, 0) + l4proto as u32 + l4_len as u32;
        (40, pseudo)
    }
}

/// Replaces the packet with `len` bytes of the window from `at`.
#[inline(always)]
fn emit(ctx: &TcContext, s: &Scratch, at: usize, len: usize) -> bool {
    let skb = ctx.as_ptr() as *mut _;
    let n = (opaque(len.wrapping_sub(1) & 511) + 1) as u32;
    // SAFETY: helpers on the program's own skb; the source lies inside the scratch window
    // (at < 32, n <= 512, window > 544 bytes).
    unsafe {
        if bpf_skb_change_tail(skb, n, 0) != 0 {
            return false;
        }
        bpf_skb_store_bytes(
            skb,
            0,
            s.window.as_ptr().add(at & 31) as *const c_void,
            n,
            0,
        ) == 0
    }
}

/// Builds a bare TCP segment (RST) at `IP_AT + iph`, its checksum field 0; returns the sum of
/// its header, for `tcp_csum` to complete the checksum with once the frame is emitted.
#[inline(always)]
fn tcp(s: &mut Scratch, iph: usize, sport: u16, dport: u16, seq: u32, ack: u32, flags: u8) -> u32 {
    let w = &mut s.window;
    let at = IP_AT + if iph == 20 { 20 } else { 40 };
    let t = &mut w[at..at + 20];
    t[0..2].copy_from_slice(&sport.to_ne_bytes());
    t[2..4].copy_from_slice(&dport.to_ne_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..20].copy_from_slice(&[0; 6]);
    sum_words(w, at, 20, 0)
}

/// Completes the TCP checksum at `off` in the emitted frame (its field 0) from the sums of the
/// header and the pseudo-header (big-endian words), with the kernel's incremental helper,
/// which knows how the packet is checksummed. A workload's packets reach its interface
/// partially checksummed (CHECKSUM_PARTIAL): a device, or the stack, completes the checksum on
/// the way out from what the field holds, which must then be the pseudo-header's sum alone
/// (a whole checksum there comes out wrong, and the server drops the RST). Any other packet
/// needs the whole checksum. The helper adds a header difference only to a whole checksum, and
/// a pseudo-header one to either: from 0, the two calls leave what each case needs.
#[inline(always)]
fn tcp_csum(ctx: &TcContext, off: usize, header: u32, pseudo: u32) -> bool {
    let skb = ctx.as_ptr() as *mut _;
    // The kernel's sums are of words as loaded in host order: the folded sum byte-swapped.
    let native = |sum: u32| (!fold(sum)).swap_bytes() as u64;
    // SAFETY: helper calls on the program's own skb; `off` is inside the frame just emitted.
    unsafe {
        bpf_l4_csum_replace(skb, off as u32, 0, native(header), 0) == 0
            && bpf_l4_csum_replace(skb, off as u32, 0, native(pseudo), BPF_F_PSEUDO_HDR as u64) == 0
    }
}

/// Replaces the packet with the RST built in the window from `at` (IP header of `iph` bytes;
/// `header` and `pseudo`: the sums `tcp` and `ip` returned) and completes its checksum.
#[inline(always)]
fn emit_rst(ctx: &TcContext, s: &Scratch, at: usize, iph: usize, header: u32, pseudo: u32) -> bool {
    let l4 = (IP_AT - at) + iph;
    emit(ctx, s, at, l4 + 20) && tcp_csum(ctx, l4 + 16, header, pseudo)
}

/// TCP REJECT: a RST back to the client out of the same interface; after a handshake, a RST
/// on to the server as well (the packet itself becomes it and continues).
#[inline(always)]
fn reject_tcp(ctx: &TcContext, p: &Pkt, s: &mut Scratch, after_handshake: bool) -> i32 {
    if p.tcp_flags & TCP_RST != 0 {
        // A RST is never answered with one (RFC 9293 3.10.7.1): dropped.
        return TC_ACT_SHOT;
    }
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // The RST to the client (RFC 9293 3.10.7.1).
    let (seq, ack, flags) = if p.tcp_flags & TCP_ACK != 0 {
        (p.ack, 0, TCP_RST)
    } else {
        let mut n = p.payload_len;
        if p.tcp_flags & TCP_SYN != 0 {
            n += 1;
        }
        if p.tcp_flags & TCP_FIN != 0 {
            n += 1;
        }
        (0, p.seq.wrapping_add(n), TCP_RST | TCP_ACK)
    };
    drop_ip_options(ctx, p);
    let Some(at) = eth(ctx, p, s, true) else {
        return TC_ACT_SHOT;
    };
    let (iph, pseudo) = ip(s, p, &p.key.daddr, &p.key.saddr, proto::TCP, 20);
    let header = tcp(s, iph, p.key.dport, p.key.sport, seq, ack, flags);
    if !emit_rst(ctx, s, at, iph, header, pseudo) {
        return TC_ACT_SHOT;
    }
    if !after_handshake {
        // SAFETY: plain helper call.
        return unsafe { bpf_redirect(ifindex, 0) } as i32;
    }
    // SAFETY: a helper call on the program's own skb.
    if unsafe { bpf_clone_redirect(ctx.as_ptr() as *mut _, ifindex, 0) } != 0 {
        return TC_ACT_SHOT;
    }
    // The RST on to the server, at the sequence number it expects next. The frame now holds
    // the client's RST, whose addresses are the packet's reversed: reversed again, they are
    // the packet's own.
    let Some(at) = eth(ctx, p, s, true) else {
        return TC_ACT_SHOT;
    };
    let (iph, pseudo) = ip(s, p, &p.key.saddr, &p.key.daddr, proto::TCP, 20);
    let header = tcp(
        s,
        iph,
        p.key.sport,
        p.key.dport,
        p.seq,
        p.ack,
        TCP_RST | TCP_ACK,
    );
    if !emit_rst(ctx, s, at, iph, header, pseudo) {
        return TC_ACT_SHOT;
    }
    TC_ACT_UNSPEC
}

/// Removes the packet's IPv4 options or IPv6 extension headers (the bytes between the fixed IP
/// header and TCP), so that it can become a RST: a packet the workload's stack left to be
/// checksummed by the device (CHECKSUM_PARTIAL) cannot be cut short of its checksum field,
/// which they put past the end of a bare RST. The layer-4 header stays where it was, and the
/// packet's checksum start with it. When the kernel refuses (a VLAN tag still in the frame,
/// more than 4 KiB of extension headers), the packet goes on as it is: cutting it short then
/// fails only if it is partially checksummed (the REJECT becomes a DROP).
#[inline(always)]
fn drop_ip_options(ctx: &TcContext, p: &Pkt) {
    let base = if p.key.family == family::V4 { 20 } else { 40 };
    let extra = (p.l4_off - p.l3_off) as i32 - base;
    if extra > 0 {
        // SAFETY: a helper call on the program's own skb (mode 0: BPF_ADJ_ROOM_NET).
        unsafe { bpf_skb_adjust_room(ctx.as_ptr() as *mut _, -extra, 0, 0) };
    }
}

/// UDP REJECT: ICMP / ICMPv6 port unreachable quoting the packet's IP and UDP headers.
#[inline(always)]
fn reject_udp(ctx: &TcContext, p: &Pkt, s: &mut Scratch) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let mut q = (p.l4_off - p.l3_off) as usize + 8;
    if q > MAX_QUOTE {
        q = MAX_QUOTE;
    }
    let Some(at) = eth(ctx, p, s, true) else {
        return TC_ACT_SHOT;
    };
    let v4 = p.key.family == family::V4;
    let (icmp_proto, ty, code) = if v4 { (1u8, 3u8, 3u8) } else { (58, 1, 4) };
    let (iph, pseudo) = ip(s, p, &p.key.daddr, &p.key.saddr, icmp_proto, 8 + q);
    let icmp_at = IP_AT + if iph == 20 { 20 } else { 40 };
    let qn = (opaque(q.wrapping_sub(1) & (MAX_QUOTE - 1)) + 1) as u32;
    // SAFETY: the destination lies inside the window (icmp_at + 8 + 256 < WINDOW).
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr() as *const _,
            p.l3_off,
            s.window.as_mut_ptr().add(icmp_at + 8) as *mut c_void,
            qn,
        )
    };
    if r != 0 {
        return TC_ACT_SHOT;
    }
    let w = &mut s.window;
    w[icmp_at..icmp_at + 8].copy_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
    let seed = if v4 { 0 } else { pseudo };
    let c = fold(sum_words(w, icmp_at, 8 + q, seed));
    w[icmp_at + 2..icmp_at + 4].copy_from_slice(&c.to_be_bytes());
    if !emit(ctx, s, at, (IP_AT - at) + iph + 8 + q) {
        return TC_ACT_SHOT;
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(ifindex, 0) as i32 }
}

/// REDIRECT: assigns the packet to the proxy's socket and marks it.
#[inline(always)]
fn redirect(ctx: &TcContext, p: &Pkt, cfg: &Config) -> i32 {
    let Some(st) = super::maps::PKT_STATE.get_ptr_mut(0) else {
        return TC_ACT_SHOT;
    };
    // SAFETY: per-CPU state, used by this program run only.
    let tuple: &mut bpf_sock_tuple = unsafe { &mut (*st).tuple };
    // Zeroed word by word: `zeroed()` compiles to a call of a byte-by-byte memset (the BPF
    // backend does not inline it), on every redirected packet.
    const WORDS: usize = size_of::<bpf_sock_tuple>() / 4;
    const _: () = assert!(size_of::<bpf_sock_tuple>() == 4 * WORDS);
    let w = tuple as *mut bpf_sock_tuple as *mut u32;
    for i in 0..WORDS {
        // SAFETY: the tuple is WORDS 4-byte words, 4-aligned (u32 fields).
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
    }
    let v4 = p.key.family == family::V4;
    let size = if v4 {
        // SAFETY: writing the union's IPv4 variant.
        unsafe {
            let t = &mut tuple.__bindgen_anon_1.ipv4;
            t.saddr = u32::from_ne_bytes([
                p.key.saddr[0],
                p.key.saddr[1],
                p.key.saddr[2],
                p.key.saddr[3],
            ]);
            t.daddr = u32::from_ne_bytes([
                p.key.daddr[0],
                p.key.daddr[1],
                p.key.daddr[2],
                p.key.daddr[3],
            ]);
            t.sport = p.key.sport;
            t.dport = p.key.dport;
        }
        12u32
    } else {
        // SAFETY: writing the union's IPv6 variant.
        unsafe {
            let t = &mut tuple.__bindgen_anon_1.ipv6;
            t.saddr = core::mem::transmute::<[u8; 16], [u32; 4]>(p.key.saddr);
            t.daddr = core::mem::transmute::<[u8; 16], [u32; 4]>(p.key.daddr);
            t.sport = p.key.sport;
            t.dport = p.key.dport;
        }
        size_of::<[u32; 8]>() as u32 + 4
    };
    let skb = ctx.as_ptr();
    let tcp = p.key.proto == proto::TCP;
    let netns = BPF_F_CURRENT_NETNS as u64;
    // SAFETY: socket lookups with a tuple on the stack; every socket found is released.
    unsafe {
        if tcp {
            let sk = bpf_skc_lookup_tcp(skb, tuple, size, netns, 0);
            if !sk.is_null() {
                if (*sk).state != BPF_TCP_LISTEN {
                    return assign(ctx, sk, cfg);
                }
                bpf_sk_release(sk as *mut c_void);
            }
        }
        // The proxy's listener: its address (or the original one, for a wildcard listener).
        if v4 {
            let t = &mut tuple.__bindgen_anon_1.ipv4;
            if cfg.proxy_addr4 != [0; 4] {
                t.daddr = u32::from_ne_bytes(cfg.proxy_addr4);
            }
            t.dport = cfg.proxy_port;
        } else {
            let t = &mut tuple.__bindgen_anon_1.ipv6;
            if cfg.proxy_addr6 != [0; 16] {
                t.daddr = core::mem::transmute::<[u8; 16], [u32; 4]>(cfg.proxy_addr6);
            }
            t.dport = cfg.proxy_port;
        }
        let sk = if tcp {
            bpf_sk_lookup_tcp(skb, tuple, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(skb, tuple, size, netns, 0)
        };
        if sk.is_null() {
            return no_socket();
        }
        if tcp && (*sk).state != BPF_TCP_LISTEN {
            bpf_sk_release(sk as *mut c_void);
            return no_socket();
        }
        assign(ctx, sk, cfg)
    }
}

/// Assigns `sk` to the packet (and releases it).
#[inline(always)]
unsafe fn assign(ctx: &TcContext, sk: *mut bpf_sock, cfg: &Config) -> i32 {
    // SAFETY: sk is a referenced socket from a lookup, released right after.
    let r = unsafe {
        let r = bpf_sk_assign(ctx.as_ptr(), sk as *mut c_void, 0);
        bpf_sk_release(sk as *mut c_void);
        r
    };
    if r != 0 {
        return no_socket();
    }
    ctx.set_mark(cfg.proxy_mark);
    TC_ACT_OK
}

#[inline(always)]
fn no_socket() -> i32 {
    cnt::inc(counter::REDIRECT_NO_SOCKET);
    TC_ACT_SHOT
}
