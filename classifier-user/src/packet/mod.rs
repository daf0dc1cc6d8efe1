//! Test packet builders: Ethernet, IPv4/IPv6, TCP/UDP/ICMPv6 frames and TLS/HTTP payloads.
//!
//! Everything here writes bytes; the reference model (`crate::model`) has its own parser and
//! never reads these structures. Checksums are correct unless a test breaks them on purpose.

pub mod h2c;
pub mod hpack;
pub mod http;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// EtherTypes used by the builders.
pub mod ether_type {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
}

/// IP protocol numbers used by the builders.
pub mod ip_proto {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
    pub const SCTP: u8 = 132;
}

/// An 802.1Q (or 802.1ad) tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vlan {
    /// Tag protocol identifier: 0x8100 or 0x88a8.
    pub tpid: u16,
    /// Priority, DEI and VLAN id.
    pub tci: u16,
}

/// The Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ethernet {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub vlan: Option<Vlan>,
    /// EtherType override (for non-IP frames); `None` derives it from the IP version.
    pub ether_type: Option<u16>,
}

impl Default for Ethernet {
    fn default() -> Self {
        Self {
            dst: [0x02, 0, 0, 0, 0, 0x01],
            src: [0x02, 0, 0, 0, 0, 0x02],
            vlan: None,
            ether_type: None,
        }
    }
}

/// IPv4 header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub tos: u8,
    pub id: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// Fragment offset in 8-byte units.
    pub fragment_offset: u16,
    /// Options, padded with zeros (end of options) to a multiple of 4 bytes; at most 40.
    pub options: Vec<u8>,
}

/// An IPv6 extension header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtHeader {
    /// Hop-by-hop options; the data is padded to make the header a multiple of 8 bytes.
    HopByHop(Vec<u8>),
    /// Routing header: type, segments left and type-specific data.
    Routing {
        routing_type: u8,
        segments_left: u8,
        data: Vec<u8>,
    },
    /// Destination options; padded like hop-by-hop.
    DestOpts(Vec<u8>),
    /// Fragment header; offset in 8-byte units.
    Fragment { offset: u16, more: bool, id: u32 },
}

impl ExtHeader {
    /// The protocol number that announces this header.
    pub fn number(&self) -> u8 {
        match self {
            ExtHeader::HopByHop(_) => ip_proto::HOP_BY_HOP,
            ExtHeader::Routing { .. } => ip_proto::ROUTING,
            ExtHeader::DestOpts(_) => ip_proto::DEST_OPTS,
            ExtHeader::Fragment { .. } => ip_proto::FRAGMENT,
        }
    }

    fn write(&self, next: u8, out: &mut Vec<u8>) {
        match self {
            ExtHeader::HopByHop(data) | ExtHeader::DestOpts(data) => {
                write_options_header(next, data, out)
            }
            ExtHeader::Routing {
                routing_type,
                segments_left,
                data,
            } => {
                let mut body = vec![*routing_type, *segments_left];
                body.extend_from_slice(data);
                let total = (body.len() + 2).div_ceil(8) * 8;
                body.resize(total - 2, 0);
                out.push(next);
                out.push((total / 8 - 1) as u8);
                out.extend_from_slice(&body);
            }
            ExtHeader::Fragment { offset, more, id } => {
                out.push(next);
                out.push(0);
                out.extend_from_slice(&((offset << 3) | u16::from(*more)).to_be_bytes());
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
    }
}

/// Writes a hop-by-hop or destination options header, padded with PadN to 8-byte multiples.
fn write_options_header(next: u8, data: &[u8], out: &mut Vec<u8>) {
    let total = (data.len() + 2).div_ceil(8) * 8;
    out.push(next);
    out.push((total / 8 - 1) as u8);
    out.extend_from_slice(data);
    let pad = total - 2 - data.len();
    match pad {
        0 => {}
        1 => out.push(0),
        n => {
            out.push(1);
            out.push((n - 2) as u8);
            out.extend(std::iter::repeat_n(0, n - 2));
        }
    }
}

/// IPv6 header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
    pub ext: Vec<ExtHeader>,
}

/// The network layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ip {
    V4(Ipv4),
    V6(Ipv6),
}

/// A TCP segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// [`tcp_flags`] bits.
    pub flags: u8,
    pub window: u16,
    pub urgent: u16,
    /// Options, padded with zeros (end of option list) to a multiple of 4 bytes; at most 40.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

/// A UDP datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Udp {
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
    /// Send a zero checksum (IPv4 only: "no checksum").
    pub zero_checksum: bool,
}

/// The transport layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp(Tcp),
    Udp(Udp),
    /// ICMP (IPv4) or ICMPv6 (IPv6) with the given type, code and body after the checksum.
    Icmp {
        icmp_type: u8,
        code: u8,
        body: Vec<u8>,
    },
    /// Any other protocol number with raw bytes.
    Other {
        proto: u8,
        payload: Vec<u8>,
    },
}

impl Transport {
    /// The protocol number for a given IP version.
    pub fn number(&self, v6: bool) -> u8 {
        match self {
            Transport::Tcp(_) => ip_proto::TCP,
            Transport::Udp(_) => ip_proto::UDP,
            Transport::Icmp { .. } if v6 => ip_proto::ICMPV6,
            Transport::Icmp { .. } => ip_proto::ICMP,
            Transport::Other { proto, .. } => *proto,
        }
    }
}

/// A whole frame, built with [`Packet::build`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub eth: Ethernet,
    pub ip: Ip,
    pub transport: Transport,
}

/// Makes the IP layer for a pair of addresses (an IPv4 address beside an IPv6 one is mapped).
pub fn ip_layer(src: IpAddr, dst: IpAddr) -> Ip {
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => Ip::V4(Ipv4 {
            src,
            dst,
            ttl: 64,
            tos: 0,
            id: 0x1234,
            dont_fragment: true,
            more_fragments: false,
            fragment_offset: 0,
            options: Vec::new(),
        }),
        (src, dst) => Ip::V6(Ipv6 {
            src: to_v6(src),
            dst: to_v6(dst),
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
            ext: Vec::new(),
        }),
    }
}

fn to_v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

impl Packet {
    /// A TCP segment with the given flags, sequence 1000 and no payload.
    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Self {
        Self {
            eth: Ethernet::default(),
            ip: ip_layer(src, dst),
            transport: Transport::Tcp(Tcp {
                sport,
                dport,
                seq: 1000,
                ack: if flags & tcp_flags::ACK != 0 { 1 } else { 0 },
                flags,
                window: 64240,
                urgent: 0,
                options: Vec::new(),
                payload: Vec::new(),
            }),
        }
    }

    /// A UDP datagram.
    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Self {
        Self {
            eth: Ethernet::default(),
            ip: ip_layer(src, dst),
            transport: Transport::Udp(Udp {
                sport,
                dport,
                payload: payload.to_vec(),
                zero_checksum: false,
            }),
        }
    }

    /// An ICMP (IPv4) or ICMPv6 (IPv6) message.
    pub fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8, body: &[u8]) -> Self {
        Self {
            eth: Ethernet::default(),
            ip: ip_layer(src, dst),
            transport: Transport::Icmp {
                icmp_type,
                code,
                body: body.to_vec(),
            },
        }
    }

    /// Any other IP protocol with raw payload bytes.
    pub fn other(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Self {
        Self {
            eth: Ethernet::default(),
            ip: ip_layer(src, dst),
            transport: Transport::Other {
                proto,
                payload: payload.to_vec(),
            },
        }
    }

    /// Sets the TCP payload (no effect on other transports).
    pub fn payload(mut self, data: &[u8]) -> Self {
        match &mut self.transport {
            Transport::Tcp(t) => t.payload = data.to_vec(),
            Transport::Udp(u) => u.payload = data.to_vec(),
            Transport::Icmp { body, .. } => *body = data.to_vec(),
            Transport::Other { payload, .. } => *payload = data.to_vec(),
        }
        self
    }

    /// Sets the TCP sequence and acknowledgement numbers.
    pub fn seq_ack(mut self, seq: u32, ack: u32) -> Self {
        if let Transport::Tcp(t) = &mut self.transport {
            t.seq = seq;
            t.ack = ack;
        }
        self
    }

    /// Sets TCP options (padded to a multiple of 4 when built).
    pub fn tcp_options(mut self, options: &[u8]) -> Self {
        if let Transport::Tcp(t) = &mut self.transport {
            t.options = options.to_vec();
        }
        self
    }

    /// Adds one VLAN tag (0x8100 or 0x88a8).
    pub fn vlan(mut self, tpid: u16, tci: u16) -> Self {
        self.eth.vlan = Some(Vlan { tpid, tci });
        self
    }

    /// Sets IPv4 options (no effect on IPv6).
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        if let Ip::V4(ip) = &mut self.ip {
            ip.options = options.to_vec();
        }
        self
    }

    /// Sets IPv4 fragment fields (offset in 8-byte units).
    pub fn ipv4_fragment(mut self, more: bool, offset: u16) -> Self {
        if let Ip::V4(ip) = &mut self.ip {
            ip.dont_fragment = false;
            ip.more_fragments = more;
            ip.fragment_offset = offset;
        }
        self
    }

    /// Appends an IPv6 extension header (no effect on IPv4).
    pub fn ext(mut self, header: ExtHeader) -> Self {
        if let Ip::V6(ip) = &mut self.ip {
            ip.ext.push(header);
        }
        self
    }

    /// The frame's bytes with lengths and checksums filled in.
    pub fn build(&self) -> Vec<u8> {
        let v6 = matches!(self.ip, Ip::V6(_));
        let proto = self.transport.number(v6);
        let l4 = self.transport_bytes(v6);
        let mut out = Vec::with_capacity(64 + l4.len());
        out.extend_from_slice(&self.eth.dst);
        out.extend_from_slice(&self.eth.src);
        if let Some(vlan) = self.eth.vlan {
            out.extend_from_slice(&vlan.tpid.to_be_bytes());
            out.extend_from_slice(&vlan.tci.to_be_bytes());
        }
        let ether_type = self.eth.ether_type.unwrap_or(if v6 {
            ether_type::IPV6
        } else {
            ether_type::IPV4
        });
        out.extend_from_slice(&ether_type.to_be_bytes());
        match &self.ip {
            Ip::V4(ip) => {
                let mut options = ip.options.clone();
                options.resize(options.len().div_ceil(4) * 4, 0);
                let ihl = 5 + options.len() / 4;
                let total = ihl * 4 + l4.len();
                let start = out.len();
                out.push(0x40 | (ihl as u8 & 0x0f));
                out.push(ip.tos);
                out.extend_from_slice(&(total as u16).to_be_bytes());
                out.extend_from_slice(&ip.id.to_be_bytes());
                let frag = (u16::from(ip.dont_fragment) << 14)
                    | (u16::from(ip.more_fragments) << 13)
                    | (ip.fragment_offset & 0x1fff);
                out.extend_from_slice(&frag.to_be_bytes());
                out.push(ip.ttl);
                out.push(proto);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&ip.src.octets());
                out.extend_from_slice(&ip.dst.octets());
                out.extend_from_slice(&options);
                let sum = checksum(&out[start..], 0);
                out[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
            }
            Ip::V6(ip) => {
                let mut ext = Vec::new();
                for (i, h) in ip.ext.iter().enumerate() {
                    let next = ip.ext.get(i + 1).map_or(proto, ExtHeader::number);
                    h.write(next, &mut ext);
                }
                let first = ip.ext.first().map_or(proto, ExtHeader::number);
                let word =
                    (6u32 << 28) | (u32::from(ip.traffic_class) << 20) | (ip.flow_label & 0xf_ffff);
                out.extend_from_slice(&word.to_be_bytes());
                out.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
                out.push(first);
                out.push(ip.hop_limit);
                out.extend_from_slice(&ip.src.octets());
                out.extend_from_slice(&ip.dst.octets());
                out.extend_from_slice(&ext);
            }
        }
        out.extend_from_slice(&l4);
        out
    }

    /// The transport header and payload with its checksum.
    fn transport_bytes(&self, v6: bool) -> Vec<u8> {
        let proto = self.transport.number(v6);
        let (mut bytes, sum_at) = match &self.transport {
            Transport::Tcp(t) => {
                let mut options = t.options.clone();
                options.resize(options.len().div_ceil(4) * 4, 0);
                let offset = (20 + options.len()) / 4;
                let mut b = Vec::with_capacity(20 + options.len() + t.payload.len());
                b.extend_from_slice(&t.sport.to_be_bytes());
                b.extend_from_slice(&t.dport.to_be_bytes());
                b.extend_from_slice(&t.seq.to_be_bytes());
                b.extend_from_slice(&t.ack.to_be_bytes());
                b.push((offset as u8) << 4);
                b.push(t.flags);
                b.extend_from_slice(&t.window.to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(&t.urgent.to_be_bytes());
                b.extend_from_slice(&options);
                b.extend_from_slice(&t.payload);
                (b, Some(16))
            }
            Transport::Udp(u) => {
                let mut b = Vec::with_capacity(8 + u.payload.len());
                b.extend_from_slice(&u.sport.to_be_bytes());
                b.extend_from_slice(&u.dport.to_be_bytes());
                b.extend_from_slice(&((8 + u.payload.len()) as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(&u.payload);
                (
                    b,
                    if u.zero_checksum && !v6 {
                        None
                    } else {
                        Some(6)
                    },
                )
            }
            Transport::Icmp {
                icmp_type,
                code,
                body,
            } => {
                let mut b = vec![*icmp_type, *code, 0, 0];
                b.extend_from_slice(body);
                (b, Some(2))
            }
            Transport::Other { payload, .. } => (payload.clone(), None),
        };
        if let Some(at) = sum_at {
            let initial = match (&self.ip, &self.transport) {
                (Ip::V4(_), Transport::Icmp { .. }) => 0,
                (Ip::V4(ip), _) => {
                    pseudo_sum(&ip.src.octets(), &ip.dst.octets(), proto, bytes.len())
                }
                (Ip::V6(ip), _) => {
                    pseudo_sum(&ip.src.octets(), &ip.dst.octets(), proto, bytes.len())
                }
            };
            let mut sum = checksum(&bytes, initial);
            if sum == 0 && matches!(self.transport, Transport::Udp(_)) {
                sum = 0xffff;
            }
            bytes[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        bytes
    }
}

/// Ones' complement sum of the pseudo-header (not folded, not inverted).
fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    let mut sum = add_words(src, 0);
    sum = add_words(dst, sum);
    sum += u32::from(proto);
    sum += (len as u32) >> 16;
    sum += (len as u32) & 0xffff;
    sum
}

fn add_words(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

/// The Internet checksum (RFC 1071) of `data`, starting from a partial sum.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = add_words(data, initial);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Verifies the IPv4 header checksum and the TCP/UDP/ICMP checksum of a built frame.
///
/// Returns `false` for frames it cannot walk (it knows only what the builders write).
pub fn checksums_ok(frame: &[u8]) -> bool {
    let mut at = 12;
    let mut et = u16::from_be_bytes([frame[at], frame[at + 1]]);
    if et == ether_type::VLAN || et == ether_type::QINQ {
        at += 4;
        et = u16::from_be_bytes([frame[at], frame[at + 1]]);
    }
    at += 2;
    let ip = &frame[at..];
    match et {
        ether_type::IPV4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if checksum(&ip[..ihl], 0) != 0 {
                return false;
            }
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let proto = ip[9];
            let l4 = &ip[ihl..total];
            match proto {
                ip_proto::ICMP => checksum(l4, 0) == 0,
                ip_proto::TCP | ip_proto::UDP => {
                    checksum(l4, pseudo_sum(&ip[12..16], &ip[16..20], proto, l4.len())) == 0
                }
                _ => true,
            }
        }
        ether_type::IPV6 => {
            let mut next = ip[6];
            let mut off = 40;
            while matches!(
                next,
                ip_proto::HOP_BY_HOP | ip_proto::ROUTING | ip_proto::DEST_OPTS | ip_proto::FRAGMENT
            ) {
                let len = if next == ip_proto::FRAGMENT {
                    8
                } else {
                    (usize::from(ip[off + 1]) + 1) * 8
                };
                next = ip[off];
                off += len;
            }
            let l4 = &ip[off..];
            match next {
                ip_proto::TCP | ip_proto::UDP | ip_proto::ICMPV6 => {
                    checksum(l4, pseudo_sum(&ip[8..24], &ip[24..40], next, l4.len())) == 0
                }
                _ => true,
            }
        }
        _ => false,
    }
}

/// Cuts a byte stream into segments at the given offsets (sorted, deduplicated, inside).
pub fn split_at(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < data.len())
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for p in points {
        out.push(data[start..p].to_vec());
        start = p;
    }
    out.push(data[start..].to_vec());
    out
}

/// A client's TCP connection as a sequence of frames: SYN, then data segments in order.
#[derive(Clone, Debug)]
pub struct TcpFlow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// The client's initial sequence number.
    pub isn: u32,
    /// The sequence number of the next payload byte.
    pub next_seq: u32,
}

impl TcpFlow {
    /// A new flow with the given initial sequence number.
    pub fn new(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, isn: u32) -> Self {
        Self {
            src,
            dst,
            sport,
            dport,
            isn,
            next_seq: isn.wrapping_add(1),
        }
    }

    /// The SYN.
    pub fn syn(&self) -> Packet {
        Packet::tcp(self.src, self.dst, self.sport, self.dport, tcp_flags::SYN)
            .seq_ack(self.isn, 0)
            .tcp_options(&[2, 4, 0x05, 0xb4, 4, 2, 1, 1])
    }

    /// A SYN carrying `data` (TCP Fast Open); the data's sequence numbers follow the SYN's,
    /// so the flow's next one moves past both.
    pub fn syn_with(&mut self, data: &[u8]) -> Packet {
        self.next_seq = self.isn.wrapping_add(1).wrapping_add(data.len() as u32);
        self.syn().payload(data)
    }

    /// The handshake's final ACK (no payload).
    pub fn ack(&self) -> Packet {
        Packet::tcp(self.src, self.dst, self.sport, self.dport, tcp_flags::ACK)
            .seq_ack(self.next_seq, 1)
    }

    /// A data segment carrying `data` at the current sequence number; advances it.
    pub fn data(&mut self, data: &[u8]) -> Packet {
        let p = Packet::tcp(
            self.src,
            self.dst,
            self.sport,
            self.dport,
            tcp_flags::ACK | tcp_flags::PSH,
        )
        .seq_ack(self.next_seq, 1)
        .payload(data);
        self.next_seq = self.next_seq.wrapping_add(data.len() as u32);
        p
    }

    /// A data segment at an explicit sequence number; does not advance the flow.
    pub fn data_at(&self, seq: u32, data: &[u8]) -> Packet {
        Packet::tcp(
            self.src,
            self.dst,
            self.sport,
            self.dport,
            tcp_flags::ACK | tcp_flags::PSH,
        )
        .seq_ack(seq, 1)
        .payload(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_tcp_checksums_are_correct() {
        let p = Packet::tcp(v4("10.0.0.1"), v4("10.0.0.2"), 40000, 443, tcp_flags::SYN)
            .tcp_options(&[2, 4, 5, 0xb4, 1])
            .ipv4_options(&[1, 1, 1])
            .payload(b"hello")
            .build();
        assert!(checksums_ok(&p));
        assert_eq!(p.len(), 14 + 24 + 28 + 5);
        // A known header: version 4, IHL 6.
        assert_eq!(p[14], 0x46);
        let mut broken = p.clone();
        let last = broken.len() - 1;
        broken[last] ^= 1;
        assert!(!checksums_ok(&broken));
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // Example header from RFC 1071 style hand computation.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr, 0), 0xb861);
    }

    #[test]
    fn ipv6_with_extension_headers_and_vlan() {
        let src: IpAddr = "fd00::1".parse().unwrap();
        let dst: IpAddr = "fd00::2".parse().unwrap();
        let p = Packet::udp(src, dst, 5353, 53, b"query")
            .vlan(ether_type::VLAN, 42)
            .ext(ExtHeader::HopByHop(vec![]))
            .ext(ExtHeader::Routing {
                routing_type: 0,
                segments_left: 0,
                data: vec![0; 4],
            })
            .ext(ExtHeader::Fragment {
                offset: 0,
                more: true,
                id: 7,
            })
            .ext(ExtHeader::DestOpts(vec![1, 3, 0, 0, 0]))
            .build();
        assert!(checksums_ok(&p));
        assert_eq!(&p[12..14], &[0x81, 0x00]);
        assert_eq!(&p[16..18], &[0x86, 0xdd]);
        // Payload length: 8 + 8 + 8 + 8 headers + 8 UDP + 5.
        assert_eq!(u16::from_be_bytes([p[18 + 4], p[18 + 5]]), 45);
        assert_eq!(p[18 + 6], ip_proto::HOP_BY_HOP);
    }

    #[test]
    fn icmp_checksums_are_correct() {
        let p = Packet::icmp(v4("10.0.0.1"), v4("10.0.0.2"), 8, 0, b"ping").build();
        assert!(checksums_ok(&p));
        let src: IpAddr = "fd00::1".parse().unwrap();
        let p = Packet::icmp(src, "ff02::1".parse().unwrap(), 135, 0, &[0; 20]).build();
        assert!(checksums_ok(&p));
    }

    #[test]
    fn flows_advance_sequence_numbers() {
        let mut f = TcpFlow::new(v4("10.0.0.1"), v4("10.0.0.2"), 1, 2, 0xffff_fff0);
        let syn = f.syn().build();
        assert!(checksums_ok(&syn));
        let d = f.data(&[0; 20]);
        if let Transport::Tcp(t) = &d.transport {
            assert_eq!(t.seq, 0xffff_fff1);
        }
        assert_eq!(f.next_seq, 5);
        assert_eq!(
            split_at(b"abcdef", &[4, 2, 2, 0, 9]),
            vec![b"ab".to_vec(), b"cd".to_vec(), b"ef".to_vec()]
        );
    }
}
