//! The model's own frame parser (decision.md §2 and §11), over raw bytes.

use classifier_common::{family, proto};

/// TCP SYN flag.
pub const SYN: u8 = 0x02;
/// TCP FIN flag.
pub const FIN: u8 = 0x01;
/// TCP RST flag.
pub const RST: u8 = 0x04;
/// TCP ACK flag.
pub const ACK: u8 = 0x10;

/// A flow as the client sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub family: u8,
    pub proto: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

impl Key {
    /// The key of the reply direction.
    pub fn reversed(&self) -> Self {
        Self {
            family: self.family,
            proto: self.proto,
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

/// A TCP or UDP packet the classifier looks at.
#[derive(Clone, Debug)]
pub struct L4<'a> {
    pub key: Key,
    pub tcp_flags: u8,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// What the frame is, as far as classification goes.
#[derive(Clone, Debug)]
pub enum Parsed<'a> {
    /// Not IPv4/IPv6 (or too short for Ethernet).
    NotIp,
    /// A non-first fragment.
    Fragment,
    /// ICMPv6 neighbour discovery.
    NeighbourDiscovery,
    /// Too short or inconsistent headers.
    Malformed,
    /// IP with a protocol other than TCP and UDP.
    OtherProto { proto: u8 },
    /// TCP or UDP.
    Ip(L4<'a>),
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses a frame as the TC program sees it.
pub fn parse(f: &[u8]) -> Parsed<'_> {
    parse_gso(f, false)
}

/// [`parse`] for a frame that is a GSO packet (`gso`), as a TCP stack hands a workload's
/// interface: with BIG TCP, one of more than 64 KiB has an IPv4 total length or IPv6 payload
/// length of 0, and its datagram runs to the end of the frame.
pub fn parse_gso(f: &[u8], gso: bool) -> Parsed<'_> {
    if f.len() < 14 {
        return Parsed::NotIp;
    }
    let mut et = be16(f, 12);
    let mut l3 = 14;
    if et == 0x8100 || et == 0x88a8 {
        if f.len() < 18 {
            return Parsed::NotIp;
        }
        et = be16(f, 16);
        l3 = 18;
    }
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    let (fam, next, l4, ip_end) = match et {
        0x0800 => {
            let Some(&vihl) = f.get(l3) else {
                return Parsed::Malformed;
            };
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 || l3 + ihl > f.len() {
                return Parsed::Malformed;
            }
            let h = &f[l3..l3 + ihl];
            let total = match usize::from(be16(h, 2)) {
                0 if gso => f.len() - l3,
                t => t,
            };
            if total < ihl {
                return Parsed::Malformed;
            }
            if be16(h, 6) & 0x1fff != 0 {
                return Parsed::Fragment;
            }
            saddr[..4].copy_from_slice(&h[12..16]);
            daddr[..4].copy_from_slice(&h[16..20]);
            (family::V4, h[9], l3 + ihl, (l3 + total).min(f.len()))
        }
        0x86dd => {
            if f.len() < l3 + 40 {
                return Parsed::Malformed;
            }
            let h = &f[l3..l3 + 40];
            if h[0] >> 4 != 6 {
                return Parsed::Malformed;
            }
            let plen = match usize::from(be16(h, 4)) {
                0 if gso => f.len() - l3 - 40,
                p => p,
            };
            let ip_end = (l3 + 40 + plen).min(f.len());
            saddr.copy_from_slice(&h[8..24]);
            daddr.copy_from_slice(&h[24..40]);
            let mut next = h[6];
            let mut off = l3 + 40;
            let mut seen = 0;
            while matches!(next, 0 | 43 | 60 | 44) {
                if seen == 8 || off + 8 > ip_end {
                    return Parsed::Malformed;
                }
                seen += 1;
                let e = &f[off..off + 8];
                if next == 44 {
                    if be16(e, 2) >> 3 != 0 {
                        return Parsed::Fragment;
                    }
                    off += 8;
                } else {
                    off += (usize::from(e[1]) + 1) * 8;
                }
                next = e[0];
            }
            if off > ip_end {
                return Parsed::Malformed;
            }
            if next == 58 && off < ip_end && (133..=137).contains(&f[off]) {
                return Parsed::NeighbourDiscovery;
            }
            (family::V6, next, off, ip_end)
        }
        _ => return Parsed::NotIp,
    };
    let mut key = Key {
        family: fam,
        proto: next,
        saddr,
        daddr,
        sport: 0,
        dport: 0,
    };
    match next {
        proto::TCP => {
            if l4 + 20 > ip_end {
                return Parsed::Malformed;
            }
            let t = &f[l4..l4 + 20];
            let doff = usize::from(t[12] >> 4) * 4;
            if doff < 20 || l4 + doff > ip_end {
                return Parsed::Malformed;
            }
            key.sport = be16(t, 0);
            key.dport = be16(t, 2);
            Parsed::Ip(L4 {
                key,
                tcp_flags: t[13],
                seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
                payload: &f[l4 + doff..ip_end],
            })
        }
        proto::UDP => {
            if l4 + 8 > ip_end {
                return Parsed::Malformed;
            }
            key.sport = be16(f, l4);
            key.dport = be16(f, l4 + 2);
            Parsed::Ip(L4 {
                key,
                tcp_flags: 0,
                seq: 0,
                payload: &f[l4 + 8..ip_end],
            })
        }
        p => Parsed::OtherProto { proto: p },
    }
}
