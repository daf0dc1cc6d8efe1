//! Layer 2-4 parsing (docs/decision.md §2) and packet reads.

use core::{mem::size_of, ptr::read_unaligned};

use aya_ebpf::programs::TcContext;
use classifier_common::{family, proto, FlowKey, FlowWords};

/// Offsets below this are read with direct packet access; others with `bpf_skb_load_bytes`.
const DIRECT_LIMIT: usize = 2048;

/// Reads a `T` at `off` bytes into the packet.
#[inline(always)]
pub fn rd<T: Copy>(ctx: &TcContext, off: usize) -> Option<T> {
    Window::of(ctx).rd(ctx, off)
}

/// The packet's linear data as two pointers read once: a loop that reads the packet through
/// a `Window` keeps them in registers, where reading them from the context each time (as
/// `rd` does) reloads both after every path that may call a helper.
#[derive(Clone, Copy)]
pub struct Window {
    start: usize,
    end: usize,
}

impl Window {
    #[inline(always)]
    pub fn of(ctx: &TcContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// Reads a `T` at `off` bytes into the packet: with one load while it lies in the linear
    /// data below `DIRECT_LIMIT`, else with `bpf_skb_load_bytes` (which leaves the data where
    /// it is, so the window stays valid).
    #[inline(always)]
    pub fn rd<T: Copy>(self, ctx: &TcContext, off: usize) -> Option<T> {
        // One opaque value for the test and the address: else LLVM may test one register and
        // address with another that holds the same offset, and the verifier, which does not
        // know they are equal, sees an unbounded packet offset.
        let off = opaque(off);
        if off < DIRECT_LIMIT {
            let p = opaque(self.start + (off & (DIRECT_LIMIT - 1)));
            if opaque(p + size_of::<T>()) <= self.end {
                // SAFETY: [p, p + size_of::<T>()) lies inside the packet's linear data.
                return Some(unsafe { load::<T>(p) });
            }
        }
        ctx.load::<T>(off).ok()
    }
}

/// Reads a `T` at packet pointer `p`: one load instruction for 1, 2, 4 and 8 bytes (see
/// `ld16`), bytewise otherwise. The caller guarantees `[p, p + size_of::<T>())` is in the
/// packet's linear data, checked against `data_end` so that the verifier sees it.
#[inline(always)]
unsafe fn load<T: Copy>(p: usize) -> T {
    // SAFETY (all arms): the caller's bound; T is plain data of the size loaded.
    unsafe {
        match size_of::<T>() {
            1 => core::mem::transmute_copy::<u8, T>(&(ld8::<0>(p) as u8)),
            2 => core::mem::transmute_copy::<u16, T>(&(ld16::<0>(p) as u16)),
            4 => core::mem::transmute_copy::<u32, T>(&(ld32::<0>(p) as u32)),
            8 => core::mem::transmute_copy::<u64, T>(&ld64::<0>(p)),
            _ => read_unaligned(p as *const T),
        }
    }
}

/// Reads a byte.
#[inline(always)]
pub fn u8_at(ctx: &TcContext, off: usize) -> Option<u8> {
    rd::<u8>(ctx, off)
}

/// Reads a big-endian u16.
#[inline(always)]
pub fn be16_at(ctx: &TcContext, off: usize) -> Option<u16> {
    rd::<[u8; 2]>(ctx, off).map(u16::from_be_bytes)
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A parsed IP packet.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Pkt {
    /// Offset of the IP header (14, or 18 behind a VLAN tag).
    pub l3_off: u32,
    /// Offset of the layer-4 header.
    pub l4_off: u32,
    /// Offset of the TCP/UDP payload.
    pub payload_off: u32,
    /// Bytes of TCP/UDP payload (to the end of the IP datagram).
    pub payload_len: u32,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// TCP sequence and acknowledgement numbers, host order.
    pub seq: u32,
    pub ack: u32,
    /// The flow key as the client sent it.
    pub key: FlowKey,
}

/// What layers 2-4 say about a packet.
pub enum Parsed {
    /// Not IP (ARP, ...): PASS, stage OTHER.
    NotIp,
    /// A non-first fragment: PASS, stage OTHER, counted.
    Fragment,
    /// ICMPv6 neighbour discovery: PASS, stage OTHER.
    NeighbourDiscovery,
    /// Malformed headers.
    Malformed,
    /// An IP packet: TCP, UDP, or another protocol (then ports are zero); fields in the `Pkt`.
    Ip,
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// Most IPv6 extension headers walked.
const MAX_EXT_HEADERS: u32 = 8;

/// Parses Ethernet, one VLAN tag, IPv4/IPv6 and the TCP/UDP header.
#[inline(always)]
pub fn parse(ctx: &TcContext, p: &mut Pkt) -> Parsed {
    let s = simple(ctx);
    if s.ok() {
        s.store(ctx, p);
        return Parsed::Ip;
    }
    parse_general(ctx, p)
}

/// `parse` for any packet: the walk for the headers `simple` does not take.
#[inline(always)]
#[expect(
    clippy::explicit_counter_loop,
    reason = "the extension-header walk keeps its own count beside the verifier-bounded loop"
)]
pub fn parse_general(ctx: &TcContext, p: &mut Pkt) -> Parsed {
    let Some(mut ethertype) = be16_at(ctx, 12) else {
        return Parsed::NotIp;
    };
    let mut l3: u32 = 14;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        match be16_at(ctx, 16) {
            Some(t) => ethertype = t,
            None => return Parsed::NotIp,
        }
        l3 = 18;
    }
    let skb_len = ctx.len();
    zero_key(&mut p.key);
    let key = &mut p.key;
    let l4: u32;
    let ip_end: u32;
    let mut nexthdr: u8;
    if ethertype == ETH_P_IP {
        let Some(vihl) = u8_at(ctx, l3 as usize) else {
            return Parsed::Malformed;
        };
        let ihl = (vihl & 0x0f) as u32 * 4;
        if vihl >> 4 != 4 || ihl < 20 || l3 + ihl > skb_len {
            return Parsed::Malformed;
        }
        let Some(hdr) = rd::<[u8; 20]>(ctx, l3 as usize) else {
            return Parsed::Malformed;
        };
        let tot_len = u16::from_be_bytes([hdr[2], hdr[3]]) as u32;
        // BIG TCP: a GSO packet of more than 64 KiB has a total length of 0 (the kernel's
        // `iph_totlen`); its datagram runs to the end of the frame.
        let tot_len = if tot_len == 0 && is_gso(ctx) {
            skb_len - l3
        } else {
            tot_len
        };
        if tot_len < ihl {
            return Parsed::Malformed;
        }
        let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
        if frag & 0x1fff != 0 {
            return Parsed::Fragment;
        }
        nexthdr = hdr[9];
        key.family = family::V4;
        key.saddr[..4].copy_from_slice(&hdr[12..16]);
        key.daddr[..4].copy_from_slice(&hdr[16..20]);
        l4 = l3 + ihl;
        ip_end = min(l3 + tot_len, skb_len);
    } else if ethertype == ETH_P_IPV6 {
        let Some(hdr) = rd::<[u8; 8]>(ctx, l3 as usize) else {
            return Parsed::Malformed;
        };
        if hdr[0] >> 4 != 6 {
            return Parsed::Malformed;
        }
        let plen = u16::from_be_bytes([hdr[4], hdr[5]]) as u32;
        // BIG TCP, as for IPv4 (the kernel's `ipv6_payload_len`; a hop-by-hop jumbo option,
        // where a kernel adds one, is walked as any hop-by-hop header).
        let plen = if plen == 0 && is_gso(ctx) {
            skb_len.saturating_sub(l3 + 40)
        } else {
            plen
        };
        nexthdr = hdr[6];
        key.family = family::V6;
        let (Some(sa), Some(da)) = (
            rd::<[u8; 16]>(ctx, l3 as usize + 8),
            rd::<[u8; 16]>(ctx, l3 as usize + 24),
        ) else {
            return Parsed::Malformed;
        };
        key.saddr = sa;
        key.daddr = da;
        ip_end = min(l3 + 40 + plen, skb_len);
        let mut off = l3 + 40;
        let mut seen = 0;
        let mut done = false;
        for _ in 0..=MAX_EXT_HEADERS {
            match nexthdr {
                0 | 43 | 60 | 44 => {}
                _ => {
                    done = true;
                    break;
                }
            }
            if seen == MAX_EXT_HEADERS {
                return Parsed::Malformed;
            }
            seen += 1;
            let Some(eh) = rd::<[u8; 4]>(ctx, off as usize) else {
                return Parsed::Malformed;
            };
            if off + 8 > ip_end {
                return Parsed::Malformed;
            }
            if nexthdr == 44 {
                if u16::from_be_bytes([eh[2], eh[3]]) >> 3 != 0 {
                    return Parsed::Fragment;
                }
                off += 8;
            } else {
                off += (eh[1] as u32 + 1) * 8;
            }
            nexthdr = eh[0];
        }
        if !done {
            return Parsed::Malformed;
        }
        if off > ip_end {
            return Parsed::Malformed;
        }
        l4 = off;
        if nexthdr == 58 {
            if let Some(t) = u8_at(ctx, l4 as usize) {
                if l4 < ip_end && (133..=137).contains(&t) {
                    return Parsed::NeighbourDiscovery;
                }
            }
        }
    } else {
        return Parsed::NotIp;
    }
    key.proto = nexthdr;
    p.l3_off = l3;
    p.l4_off = l4;
    p.payload_off = l4;
    p.payload_len = 0;
    p.tcp_flags = 0;
    p.seq = 0;
    p.ack = 0;
    if nexthdr == proto::TCP {
        if l4 + 20 > ip_end {
            return Parsed::Malformed;
        }
        let Some(th) = rd::<[u8; 16]>(ctx, l4 as usize) else {
            return Parsed::Malformed;
        };
        let doff = (th[12] >> 4) as u32 * 4;
        if doff < 20 || l4 + doff > ip_end {
            return Parsed::Malformed;
        }
        p.key.sport = u16::from_ne_bytes([th[0], th[1]]);
        p.key.dport = u16::from_ne_bytes([th[2], th[3]]);
        p.seq = u32::from_be_bytes([th[4], th[5], th[6], th[7]]);
        p.ack = u32::from_be_bytes([th[8], th[9], th[10], th[11]]);
        p.tcp_flags = th[13];
        p.payload_off = l4 + doff;
        p.payload_len = ip_end - p.payload_off;
    } else if nexthdr == proto::UDP {
        if l4 + 8 > ip_end {
            return Parsed::Malformed;
        }
        let Some(uh) = rd::<[u8; 4]>(ctx, l4 as usize) else {
            return Parsed::Malformed;
        };
        p.key.sport = u16::from_ne_bytes([uh[0], uh[1]]);
        p.key.dport = u16::from_ne_bytes([uh[2], uh[3]]);
        p.payload_off = l4 + 8;
        p.payload_len = ip_end - p.payload_off;
    }
    Parsed::Ip
}

/// A packet `simple_v4` or `simple_v6` parsed: the flow table's form of its key and what the
/// rest of its `Pkt` is made from, few words in registers, so that the established path
/// (classify.rs) looks the flow up without writing the packet to memory and reading it back.
/// A plain value, never an `Option` (whose `None` LLVM may leave undefined where the verifier
/// reads it): `Simple::NONE` says the packet is not simple.
#[derive(Clone, Copy)]
pub struct Simple {
    /// The flow key as the flow table has it (`FlowKey::words`): IPv4 addresses packed into
    /// word 1, words 2-4 zero. Family 0: not a simple packet.
    pub words: FlowWords,
    /// The end of the IP datagram in the packet.
    ip_end: u64,
    /// TCP: the header's data offset and flags bytes as loaded (little-endian); UDP: 0.
    off_flags: u64,
}

impl Simple {
    /// Not a simple packet.
    pub const NONE: Simple = Simple {
        words: FlowWords([0; 5]),
        ip_end: 0,
        off_flags: 0,
    };

    /// Whether the packet is simple (and this its parse).
    #[inline(always)]
    pub fn ok(&self) -> bool {
        self.words.0[0] as u8 != 0
    }

    /// The TCP flags (0 for UDP).
    #[inline(always)]
    pub fn tcp_flags(&self) -> u8 {
        (self.off_flags >> 8) as u8
    }

    /// Whether the packet is TCP.
    #[inline(always)]
    pub fn tcp(&self) -> bool {
        (self.words.0[0] >> 8) as u8 == proto::TCP
    }

    /// A TCP packet that closes its connection ([`closing`]); UDP's flags read 0.
    #[inline(always)]
    pub fn closing(&self) -> bool {
        closing(self.tcp_flags())
    }

    /// A TCP packet with SYN and not ACK: the first of a connection, never an established one.
    #[inline(always)]
    pub fn syn_only(&self) -> bool {
        self.tcp() && self.tcp_flags() & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    /// Writes the packet as `parse` describes it; reads the TCP sequence numbers, which the
    /// established path does not need.
    #[inline(always)]
    pub fn store(&self, ctx: &TcContext, p: &mut Pkt) {
        let v4 = self.words.is_v4();
        let k = &mut p.key as *mut FlowKey as *mut u64;
        for (i, x) in self.words.key_words().iter().enumerate() {
            // SAFETY: FlowKey is 40 bytes and 8-aligned (classifier_common asserts both);
            // volatile keeps the stores apart (merged, they become a `memcpy` call).
            unsafe { core::ptr::write_volatile(k.add(i), *x) };
        }
        let l4: u32 = if v4 { 14 + 20 } else { 14 + 40 };
        let (payload_off, seq, ack) = if self.tcp() {
            let (seq, ack) = match rd::<[u32; 2]>(ctx, l4 as usize + 4) {
                Some([s, a]) => (u32::from_be(s), u32::from_be(a)),
                None => (0, 0),
            };
            (l4 + ((self.off_flags & 0xf0) >> 2) as u32, seq, ack)
        } else {
            (l4 + 8, 0, 0)
        };
        p.l3_off = 14;
        p.l4_off = l4;
        p.payload_off = payload_off;
        p.payload_len = self.ip_end as u32 - payload_off;
        p.tcp_flags = self.tcp_flags();
        p.seq = seq;
        p.ack = ack;
    }
}

/// The common cases, in one bounds check each: `simple_v4` or `simple_v6`.
#[inline(always)]
pub fn simple(ctx: &TcContext) -> Simple {
    let s = simple_v4(ctx);
    if s.ok() {
        return s;
    }
    simple_v6(ctx)
}

/// Whether TCP flags `f` close the connection (FIN or RST), for the flow table's clock.
#[inline(always)]
pub fn closing(f: u8) -> bool {
    f & (TCP_FIN | TCP_RST) != 0
}

/// Whether the packet is a GSO packet (segmented later, as a workload's TCP stack hands them
/// to its interface).
#[inline(always)]
fn is_gso(ctx: &TcContext) -> bool {
    // SAFETY: the context's own `__sk_buff`, valid for this program run.
    unsafe { (*ctx.skb.skb).gso_size != 0 }
}

/// Untagged Ethernet, IPv4 without options and not a later fragment, then TCP or UDP with its
/// whole header inside the datagram; `Simple::NONE` for anything else, which `parse` walks in
/// general.
#[inline(always)]
pub fn simple_v4(ctx: &TcContext) -> Simple {
    const L3: usize = 14;
    const L4: usize = L3 + 20;
    let start = ctx.data();
    // Ethernet + IPv4 + a UDP header; a TCP header is checked for in `simple_l4`.
    if start + L4 + 8 > ctx.data_end() {
        return Simple::NONE;
    }
    // SAFETY: [start, start + 42) is inside the packet's linear data (checked above). Source
    // and destination address are adjacent: one 8-byte load gives the flow table's word 1
    // (source in the low half).
    let (ethertype, vihl, tot_len, frag, nexthdr, addrs) = unsafe {
        (
            ld16::<12>(start),
            ld8::<{ L3 as i16 }>(start),
            ld16::<{ L3 as i16 + 2 }>(start),
            ld16::<{ L3 as i16 + 6 }>(start),
            ld8::<{ L3 as i16 + 9 }>(start),
            ld64::<{ L3 as i16 + 12 }>(start),
        )
    };
    // The fragment offset is the low 13 bits in network order.
    if ethertype != ETH_P_IP.to_be() as u64 || vihl != 0x45 || frag & 0xff1f != 0 {
        return Simple::NONE;
    }
    let tot_len = u16::from_be(tot_len as u16) as u64;
    if tot_len < 20 {
        return Simple::NONE;
    }
    let ip_end = min(L3 as u64 + tot_len, ctx.len() as u64);
    simple_l4(
        ctx,
        L4,
        nexthdr,
        ip_end,
        [family::V4 as u64, addrs, 0, 0, 0],
    )
}

/// Untagged Ethernet, IPv6 without extension headers, then TCP or UDP with its whole header
/// inside the datagram; `Simple::NONE` for anything else.
#[inline(always)]
pub fn simple_v6(ctx: &TcContext) -> Simple {
    const L3: usize = 14;
    const L4: usize = L3 + 40;
    let start = ctx.data();
    if start + L4 + 8 > ctx.data_end() {
        return Simple::NONE;
    }
    // SAFETY: [start, start + 62) is inside the packet's linear data (checked above).
    let (ethertype, v, plen, nexthdr, s0, s1, d0, d1) = unsafe {
        (
            ld16::<12>(start),
            ld8::<{ L3 as i16 }>(start),
            ld16::<{ L3 as i16 + 4 }>(start),
            ld8::<{ L3 as i16 + 6 }>(start),
            ld64::<{ L3 as i16 + 8 }>(start),
            ld64::<{ L3 as i16 + 16 }>(start),
            ld64::<{ L3 as i16 + 24 }>(start),
            ld64::<{ L3 as i16 + 32 }>(start),
        )
    };
    if ethertype != ETH_P_IPV6.to_be() as u64 || v >> 4 != 6 {
        return Simple::NONE;
    }
    let plen = u16::from_be(plen as u16) as u64;
    let ip_end = min(L4 as u64 + plen, ctx.len() as u64);
    simple_l4(
        ctx,
        L4,
        nexthdr,
        ip_end,
        [family::V6 as u64, s0, s1, d0, d1],
    )
}

/// The TCP or UDP header at `L4` for `simple_v4` and `simple_v6`; `words` holds the flow
/// table's key words without protocol and ports.
#[inline(always)]
fn simple_l4(ctx: &TcContext, l4: usize, nexthdr: u64, ip_end: u64, mut words: [u64; 5]) -> Simple {
    let start = ctx.data();
    let end = ctx.data_end();
    let h = start + l4;
    if h + 8 > end {
        return Simple::NONE;
    }
    // SAFETY: [h, h + 8) is inside the packet's linear data (checked above).
    let ports = unsafe { ld32::<0>(h) };
    let l4 = l4 as u64;
    let off_flags = if nexthdr == proto::TCP as u64 {
        if h + 20 > end || l4 + 20 > ip_end {
            return Simple::NONE;
        }
        // SAFETY: [h, h + 20) is inside the packet's linear data (checked above).
        let off_flags = unsafe { ld16::<12>(h) };
        let doff = (off_flags & 0xf0) >> 2;
        if doff < 20 || l4 + doff > ip_end {
            return Simple::NONE;
        }
        off_flags
    } else if nexthdr == proto::UDP as u64 {
        if l4 + 8 > ip_end {
            return Simple::NONE;
        }
        0
    } else {
        return Simple::NONE;
    };
    // Word 0: family, protocol, two zero padding bytes and both ports as they are on the
    // wire (FlowKey's first word, little-endian).
    words[0] |= nexthdr << 8 | ports << 32;
    Simple {
        words: FlowWords(words),
        ip_end,
        off_flags,
    }
}

// One BPF load each, at a constant offset from a pointer into the packet (or a map value).
// `read_unaligned` would make LLVM's BPF backend split a 2- or 4-byte load into single bytes
// (it assumes the target cannot load misaligned), and a plain `ptr::read` of a misaligned
// pointer is undefined behaviour in Rust; the BPF instruction itself has no alignment
// requirement there (the verifier checks alignment only in strict mode, which loaders do not
// ask for), so the load is written as the instruction. Callers guarantee that
// [base + OFF, base + OFF + size) lies inside the packet's linear data, checked against
// `data_end` so that the verifier sees it, or inside one map value.

/// `x`, as a value the compiler knows nothing about: one register move it cannot see
/// through. `core::hint::black_box` does the same through a stack slot, a store and a load
/// (about 5 cycles of latency each time, on the critical path of every packet read).
#[inline(always)]
pub fn opaque(x: usize) -> usize {
    let mut v = x as u64;
    // SAFETY: a register-to-register move.
    unsafe {
        core::arch::asm!("{v} = {v}", v = inout(reg) v, options(pure, nomem, nostack, preserves_flags));
    }
    v as usize
}

// Each result is a u64, as the instruction leaves it (zero-extended): a `u8` or `u16` result
// makes LLVM mask the register again before every comparison, as it cannot see that the load
// already cleared the upper bits. Callers that want the narrow type cast.
macro_rules! loads {
    ($($(#[$doc:meta])* $name:ident = $insn:literal;)*) => {$(
        $(#[$doc])*
        #[inline(always)]
        pub(super) unsafe fn $name<const OFF: i16>(base: usize) -> u64 {
            let v: u64;
            // SAFETY: the caller's bound (see above).
            unsafe {
                core::arch::asm!($insn, v = lateout(reg) v, b = in(reg) base, o = const OFF,
                    options(pure, readonly, nostack, preserves_flags));
            }
            v
        }
    )*};
}

loads! {
    /// Loads the byte at `base + OFF`.
    ld8 = "{v} = *(u8 *)({b} + {o})";
    /// Loads the 2 bytes at `base + OFF` as they are in memory (little-endian load).
    ld16 = "{v} = *(u16 *)({b} + {o})";
    /// Loads the 4 bytes at `base + OFF` as they are in memory (little-endian load).
    ld32 = "{v} = *(u32 *)({b} + {o})";
    /// Loads the 8 bytes at `base + OFF` as they are in memory (little-endian load).
    ld64 = "{v} = *(u64 *)({b} + {o})";
}

/// Zeroes a flow key with five 8-byte stores. `p.key = FlowKey::default()` compiles to a call
/// of a byte-by-byte `memset` (the BPF backend does not inline it), a third of the
/// established-flow path; volatile keeps the optimizer from merging the stores back into one.
#[inline(always)]
fn zero_key(k: &mut FlowKey) {
    const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
    let w = k as *mut FlowKey as *mut u64;
    for i in 0..5 {
        // SAFETY: FlowKey is 40 bytes and 8-aligned (classifier_common asserts both).
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
    }
}

#[inline(always)]
pub fn min<T: PartialOrd>(a: T, b: T) -> T {
    if a < b {
        a
    } else {
        b
    }
}
