//! Differential test: the TC program (through `BPF_PROG_TEST_RUN`) against the reference model,
//! over random registries and generated packets. Zero disagreements in verdict and stage (and
//! service where both name one) are allowed.
//!
//! `MESHCLASS_DIFF_SEED` replays a run, `MESHCLASS_DIFF_PACKETS` resizes it (default 1,000,000),
//! `MESHCLASS_DIFF_NO_NAMES=1` leaves name entries out of the registries, and
//! `MESHCLASS_DIFF_NO_SPLIT=1` sends every first payload in one segment (both narrow a hunt).
//! Run as root: `cargo test -p tests --release --test differential -- --test-threads=1`.
//! The full run (`kernel_and_model_agree`) has every stage, names and split ClientHellos
//! included; the run without names (`kernel_and_model_agree_without_names`, 300,000 packets by
//! default) puts every packet through the address stages, the flow table and the policy.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use classifier_common::{capacity, stage, verdict, NO_SERVICE};
use meshclass::{
    model::{Model, ModelDecision},
    packet::{
        ether_type, h2c, hpack, http, ip_proto, tcp_flags, tls, ExtHeader, Ip, Packet, Transport,
    },
    plan::{
        Cidr, Entry, Location, Match, Plan, Service, ServiceKind, ServicePort, Verdict, L4 as Proto,
    },
    settings::{Blocked, OutboundPolicy, Settings},
};

/// The TC program, through the dataplane's BPF_PROG_TEST_RUN.
mod kernel {
    use meshclass::{
        dataplane::{Capacities, Dataplane},
        plan::Plan,
        settings::Settings,
    };

    /// The loaded classifier.
    pub struct Kernel(Dataplane);

    impl Kernel {
        /// Loads the program with room for `flows` connections and hash seeds from `seed`;
        /// fails the test loudly without root or BPF.
        pub fn load(flows: u32, seed: u64) -> Self {
            tests::require_privileges();
            let caps = Capacities {
                flows,
                ..Capacities::default()
            };
            match Dataplane::load_seeded(&caps, Some(seed)) {
                Ok(d) => Self(d),
                Err(e) => panic!(
                    "cannot load the classifier (this test needs root and BPF, and the eBPF \
                     program built: run it without AYA_BUILD_SKIP): {e}"
                ),
            }
        }

        /// The flow table's bucket mask and hash seed, for the model to mirror.
        pub fn flow_layout(&self) -> (u32, u64) {
            let l = self.0.layout().expect("reading LAYOUT");
            (l.flow_mask, l.flow_seed)
        }

        /// Writes a registry generation.
        pub fn apply(&mut self, plan: &Plan, settings: &Settings) {
            if let Err(e) = self.0.apply(plan, settings) {
                panic!("the dataplane refused a generated plan: {e}\n{plan:#?}");
            }
        }

        /// Runs the inbound program (§10) on a frame toward the workload; false if refused.
        pub fn run_inbound(&mut self, frame: &[u8]) -> bool {
            match self.0.test_run_inbound(frame) {
                Ok(_) => true,
                Err(_) if frame.len() < 64 => false,
                Err(e) => panic!(
                    "BPF_PROG_TEST_RUN (inbound) failed on a {}-byte frame: {e}",
                    frame.len()
                ),
            }
        }

        /// (verdict, stage, service id) the program gives a frame; `None` when
        /// BPF_PROG_TEST_RUN refuses the frame itself (some very short frames).
        pub fn run(&mut self, frame: &[u8], gso: bool) -> Option<(u8, u8, u32)> {
            let r = if gso {
                self.0.test_run_gso(frame, 1400, 8)
            } else {
                self.0.test_run(frame)
            };
            match r {
                Ok(k) => Some((k.verdict, k.stage, k.service_id)),
                Err(_) if frame.len() < 64 => None,
                Err(e) => panic!(
                    "BPF_PROG_TEST_RUN failed on a {}-byte frame: {e}",
                    frame.len()
                ),
            }
        }
    }
}

/// Largest frame sent (BPF_PROG_TEST_RUN copies the frame into one page with head room).
const MAX_FRAME: usize = 3000;

/// A small, fast, seedable generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `p` percent.
    fn pct(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const NAME_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";

/// A DNS-like name of exactly `len` bytes (labels of 1..=63).
fn random_name(r: &mut Rng, len: usize) -> String {
    let mut s = String::with_capacity(len);
    let mut left = len;
    while left > 0 {
        let mut l = r.range(1, 63.min(left));
        // Never leave exactly one byte: it would have to be a dot alone.
        if left - l == 1 {
            if l > 1 {
                l -= 1;
            } else {
                l += 1;
            }
        }
        for _ in 0..l {
            s.push(char::from(*r.pick(NAME_CHARS)));
        }
        left -= l;
        if left > 0 {
            s.push('.');
            left -= 1;
        }
    }
    s
}

/// A name length: short ones often, every length up to 253 sometimes.
fn name_len(r: &mut Rng) -> usize {
    if r.pct(60) {
        r.range(1, 40)
    } else {
        r.range(1, 253)
    }
}

/// The world a registry is drawn from: a few client and server addresses, and ports.
struct World {
    clients: Vec<IpAddr>,
    servers: Vec<IpAddr>,
    ports: Vec<u16>,
}

impl World {
    fn new(r: &mut Rng) -> Self {
        let mut servers = Vec::new();
        for i in 0..48 {
            servers.push(IpAddr::V4(Ipv4Addr::new(
                10,
                r.range(1, 3) as u8,
                r.below(4) as u8,
                (i * 5) as u8,
            )));
            let mut v6 = [0u8; 16];
            v6[0] = 0xfd;
            v6[1] = r.below(3) as u8;
            v6[7] = r.below(4) as u8;
            v6[15] = (i * 5) as u8;
            servers.push(IpAddr::V6(Ipv6Addr::from(v6)));
        }
        Self {
            clients: vec![
                "10.200.0.1".parse().unwrap(),
                "10.200.0.2".parse().unwrap(),
                "fd99::1".parse().unwrap(),
                "fd99::2".parse().unwrap(),
            ],
            servers,
            ports: vec![80, 443, 8080, 8443, 53, 5432, 9000, 15001],
        }
    }
}

fn mask(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(v4) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

/// A random registry, and the names packets should try.
struct Registry {
    plan: Plan,
    settings: Settings,
    /// Names worth sending: registered ones, names under wildcards, and strangers.
    names: Vec<String>,
    /// The same, by the port of the entry they came from.
    names_by_port: std::collections::HashMap<u16, Vec<String>>,
}

fn random_registry(r: &mut Rng, w: &World, with_names: bool) -> Registry {
    let mut plan = Plan::default();
    let mut names = Vec::new();
    let mut names_by_port: std::collections::HashMap<u16, Vec<String>> = Default::default();
    let services = r.range(1, 40);
    for id in 0..services {
        plan.services.push(Service {
            id: id as u32,
            kind: ServiceKind::ServiceEntry,
            namespace: "diff".into(),
            name: format!("svc{id}"),
            host: format!("svc{id}.example"),
            location: Location::MeshExternal,
            resolution: "STATIC".into(),
            ports: vec![ServicePort {
                number: 443,
                name: "p".into(),
                protocol: "TLS".into(),
                target_port: None,
            }],
            addresses: Vec::new(),
        });
    }
    let n_entries = r.range(0, 120);
    for _ in 0..n_entries {
        let service_id = r.below(services) as u32;
        let port = if r.pct(90) {
            *r.pick(&w.ports)
        } else {
            r.range(1, 65535) as u16
        };
        let protocol = if r.pct(75) { Proto::Tcp } else { Proto::Udp };
        let matcher = match r.below(10) {
            0..=2 => Match::Ip {
                addr: *r.pick(&w.servers),
                port,
                protocol,
            },
            3..=4 => {
                let a = *r.pick(&w.servers);
                let max = if a.is_ipv4() { 32 } else { 128 };
                let len = if r.pct(70) {
                    r.range(max - 24, max) as u8
                } else {
                    r.range(0, max) as u8
                };
                Match::Cidr {
                    cidr: Cidr {
                        addr: mask(a, len),
                        len,
                    },
                    port,
                    protocol,
                }
            }
            5..=8 if with_names => {
                let wildcard = r.pct(35);
                let len = name_len(r).min(if wildcard { 251 } else { 253 });
                let base = random_name(r, len);
                let before = names.len();
                let name = if wildcard {
                    let n = r.range(1, 20);
                    let label = random_name(r, n);
                    names.push(format!("{label}.{base}"));
                    names.push(base.clone());
                    format!("*.{base}")
                } else {
                    names.push(base.clone());
                    base
                };
                names_by_port
                    .entry(port)
                    .or_default()
                    .extend(names[before..].iter().cloned());
                if r.pct(50) {
                    Match::Sni { name, port }
                } else {
                    Match::Host { name, port }
                }
            }
            _ => Match::Port {
                port,
                protocol: if r.pct(80) { Proto::Tcp } else { Proto::Udp },
            },
        };
        let entry = Entry {
            matcher,
            service_id,
            service: plan.services[service_id as usize].key(),
            verdict: if r.pct(50) {
                Verdict::Pass
            } else {
                Verdict::Redirect
            },
        };
        // Sometimes the same match twice, for another service: the first must win.
        if r.pct(5) {
            let mut dup = entry.clone();
            dup.service_id = ((service_id as usize + 1) % services) as u32;
            dup.service = plan.services[dup.service_id as usize].key();
            plan.entries.push(entry);
            plan.entries.push(dup);
        } else {
            plan.entries.push(entry);
        }
    }
    for _ in 0..8 {
        let len = name_len(r);
        names.push(random_name(r, len));
    }
    let settings = Settings {
        outbound_policy: if r.pct(50) {
            OutboundPolicy::AllowAny
        } else {
            OutboundPolicy::RegistryOnly
        },
        blocked: if r.pct(50) {
            Blocked::Drop
        } else {
            Blocked::Reject
        },
        ech_outer_sni: r.pct(30),
        ..Settings::default()
    };
    Registry {
        plan,
        settings,
        names,
        names_by_port,
    }
}

/// One client connection: addresses, ports and where its stream is.
#[derive(Clone)]
struct Conn {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    udp: bool,
    next_seq: u32,
}

/// Real ClientHellos from rustls, made once; names are written into copies.
struct Hellos {
    bases: Vec<Vec<u8>>,
}

impl Hellos {
    fn new() -> Self {
        let plain = tls::HelloOptions::default();
        let alpn = tls::HelloOptions {
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            ..Default::default()
        };
        let ech_first = tls::HelloOptions {
            ech_at: Some(0),
            ..Default::default()
        };
        let ech_last = tls::HelloOptions {
            ech_at: Some(usize::MAX),
            ..Default::default()
        };
        let mut bases = Vec::new();
        for o in [&plain, &alpn, &plain, &alpn, &ech_first, &ech_last] {
            bases.push(tls::client_hello(Some("placeholder.example"), o).expect("rustls hello"));
        }
        Self { bases }
    }

    fn make(&self, r: &mut Rng, name: Option<&[u8]>) -> Vec<u8> {
        let base = r.pick(&self.bases);
        let mut h = tls::with_server_name(base, name).expect("hello edit");
        if r.pct(3) {
            // Many extensions: some past the 64th.
            let mut exts = tls::extensions(&h).expect("hello");
            for i in 0..r.range(50, 80) {
                exts.insert(
                    r.below(exts.len() + 1),
                    (0x7a00 + i as u16, vec![0; r.below(3)]),
                );
            }
            if r.pct(50) {
                exts.push((tls::EXT_ECH, tls::ech_outer_body()));
            }
            h = tls::with_extensions(&h, &exts).unwrap_or(h);
        }
        if r.pct(3) {
            // A malformed server_name first, the real one after it.
            h = tls::insert_extension(&h, 0, 0, &[0, 3, 1, 0, 0]).expect("hello edit");
        }
        h
    }
}

/// Names as a client might send them: registered, under wildcards, upper case, trailing dot.
fn client_name(r: &mut Rng, reg: &Registry, port: u16) -> Vec<u8> {
    let on_port = reg.names_by_port.get(&port).filter(|v| !v.is_empty());
    let mut n = if let (Some(v), true) = (on_port, r.pct(70)) {
        r.pick(v).clone()
    } else if reg.names.is_empty() || r.pct(10) {
        let len = if r.pct(3) {
            r.range(254, 300)
        } else {
            name_len(r)
        };
        random_name(r, len)
    } else {
        r.pick(&reg.names).clone()
    }
    .into_bytes();
    if r.pct(10) {
        for b in n.iter_mut() {
            if r.pct(30) {
                *b = b.to_ascii_uppercase();
            }
        }
    }
    if r.pct(5) {
        n.push(b'.');
    }
    if r.pct(1) {
        n.clear();
        n.push(b'.');
    }
    n
}

/// A first payload of some kind.
fn payload(r: &mut Rng, reg: &Registry, hellos: &Hellos, port: u16) -> Vec<u8> {
    match r.below(10) {
        0..=4 => {
            let name = if r.pct(95) {
                Some(client_name(r, reg, port))
            } else {
                None
            };
            hellos.make(r, name.as_deref())
        }
        5..=6 => {
            let method = *r.pick(&["GET", "POST", "HEAD", "CONNECT", "PATCH", "BREW", "get"]);
            let mut host = client_name(r, reg, port);
            if r.pct(20) {
                host.extend_from_slice(b":8080");
            }
            if r.pct(5) {
                host = [b"[".as_slice(), &host, b"]:80"].concat();
            }
            let mut o = http::RequestOptions::default();
            if r.pct(20) {
                o.host_header = (*r.pick(&["host", "HOST", "Host ", "X-Host", "hOsT"])).into();
            }
            if r.pct(15) {
                for i in 0..r.range(1, 30) {
                    o.before
                        .push((format!("X-Pad-{i}"), "y".repeat(r.range(0, 60))));
                }
            } else if r.pct(10) {
                // A long request line (a signed URL), putting the Host near either side of the
                // end of the window read (`PAYLOAD_WINDOW`, 2 KiB).
                o.path = format!("/{}", "s".repeat(r.range(900, 2100)));
            }
            o.lf_only = r.pct(10);
            let h = if r.pct(95) {
                Some(host.as_slice())
            } else {
                None
            };
            http::request(method, h, &o)
        }
        7..=8 => {
            let mut name = client_name(r, reg, port);
            // With a port, as clients send it for a port that is not the scheme's: mostly the
            // connection's own, sometimes another.
            if r.pct(30) {
                let p = if r.pct(80) {
                    port
                } else {
                    r.range(1, 65535) as u16
                };
                name.extend_from_slice(format!(":{p}").as_bytes());
            }
            if r.pct(3) {
                name = [b"[".as_slice(), &name, b"]:80"].concat();
            }
            if r.pct(3) {
                // Any byte: symbols with the code's longest codes.
                let at = r.below(name.len() + 1);
                name.insert(at, r.below(256) as u8);
            }
            let huffman = r.pct(50);
            // A coding that is not the encoder's: a bit flipped (another symbol, or EOS), a
            // byte of ones more (padding too long), a byte less, bytes more.
            let coded = (huffman && r.pct(15)).then(|| {
                let mut c = hpack::huffman_encode(&name);
                match r.below(4) {
                    0 if !c.is_empty() => {
                        let bit = r.below(c.len() * 8);
                        c[bit / 8] ^= 0x80 >> (bit % 8);
                    }
                    1 => c.push(0xff),
                    2 => {
                        c.pop();
                    }
                    _ => {
                        let n = r.range(1, 5);
                        c.extend(r.bytes(n));
                    }
                }
                c
            });
            let o = h2c::H2Options {
                representation: *r.pick(&[
                    h2c::Representation::Incremental,
                    h2c::Representation::WithoutIndexing,
                    h2c::Representation::NeverIndexed,
                ]),
                pseudo_first: r.pct(50),
                window_update: r.pct(30),
                padding: if r.pct(15) {
                    Some(r.below(40) as u8)
                } else {
                    None
                },
                priority: r.pct(15),
                before: if r.pct(10) {
                    vec![(b"x-a".to_vec(), b"b".to_vec())]
                } else {
                    Vec::new()
                },
                coded,
            };
            let mut p = h2c::request_with(&name, huffman, &o);
            if r.pct(5) {
                // A Huffman value written by hand, maybe not canonical.
                let coded = hpack::huffman_encode(&name);
                p.extend_from_slice(&coded);
            }
            p
        }
        _ => {
            let n = r.range(1, 300);
            r.bytes(n)
        }
    }
}

/// Randomly dresses a packet: VLAN tag, IPv4 options, IPv6 extension headers.
fn dress(r: &mut Rng, mut p: Packet) -> Packet {
    if r.pct(8) {
        p = p.vlan(
            if r.pct(70) {
                ether_type::VLAN
            } else {
                ether_type::QINQ
            },
            r.below(4096) as u16,
        );
    }
    match &p.ip {
        Ip::V4(_) if r.pct(8) => {
            let n = r.range(1, 40);
            let opts = r.bytes(n);
            p = p.ipv4_options(&opts);
        }
        Ip::V6(_) if r.pct(10) => {
            for _ in 0..r.range(1, 9) {
                let h = match r.below(4) {
                    0 => ExtHeader::HopByHop(vec![]),
                    1 => ExtHeader::Routing {
                        routing_type: 0,
                        segments_left: 0,
                        data: vec![0; r.below(3) * 8 + 4],
                    },
                    2 => ExtHeader::DestOpts(vec![]),
                    _ => ExtHeader::Fragment {
                        offset: if r.pct(80) { 0 } else { r.range(1, 100) as u16 },
                        more: r.pct(50),
                        id: 1,
                    },
                };
                p = p.ext(h);
            }
        }
        _ => {}
    }
    p
}

/// Damages a frame: truncation, trailing bytes, flipped header bytes, bad lengths.
fn mutate(r: &mut Rng, mut f: Vec<u8>) -> Vec<u8> {
    match r.below(5) {
        0 => {
            let n = r.below(f.len() + 1);
            f.truncate(n);
        }
        1 => {
            let n = r.range(1, 40);
            f.extend(r.bytes(n));
        }
        2 => {
            for _ in 0..r.range(1, 4) {
                let i = r.below(f.len().min(100));
                f[i] = r.next() as u8;
            }
        }
        3 => {
            // IP length fields.
            if let Some(at) = ip_len_at(&f) {
                let v = r.below(f.len() + 20) as u16;
                f[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
        }
        _ => {
            // TCP data offset or flags.
            let i = r.range(40, 70).min(f.len().saturating_sub(1));
            f[i] ^= 1 << r.below(8);
        }
    }
    f
}

/// `f` with the IP length field (IPv4 total length, IPv6 payload length) set to 0, as a BIG
/// TCP packet of more than 64 KiB carries it.
fn big_tcp(mut f: Vec<u8>) -> Vec<u8> {
    if let Some(at) = ip_len_at(&f) {
        f[at..at + 2].fill(0);
    }
    f
}

/// Where frame `f`'s IP length field is (IPv4 total length, IPv6 payload length), if the
/// frame reaches it: behind one 802.1Q tag or none.
fn ip_len_at(f: &[u8]) -> Option<usize> {
    let l3 = if f.len() > 14 && f[12..14] == [0x81, 0] {
        18
    } else {
        14
    };
    (f.len() > l3 + 6).then(|| if f[l3] >> 4 == 6 { l3 + 4 } else { l3 + 2 })
}

/// Frames a test step sends, each with its direction (`true`: toward the workload, through
/// the inbound program of §10).
struct Frames {
    out: Vec<(bool, Vec<u8>)>,
}

fn tcp(c: &Conn, flags: u8, seq: u32, data: &[u8]) -> Packet {
    Packet::tcp(c.src, c.dst, c.sport, c.dport, flags)
        .seq_ack(seq, 1)
        .payload(data)
}

/// Where the frames of an HTTP/2 prior-knowledge stream `data` begin (the end of the preface,
/// then each frame's end), or nothing for other data.
fn h2_frame_bounds(data: &[u8]) -> Vec<usize> {
    use h2c::PREFACE;
    if !data.starts_with(PREFACE) {
        return Vec::new();
    }
    let mut at = vec![PREFACE.len()];
    let mut off = PREFACE.len();
    while off + 9 <= data.len() {
        let len = usize::from(data[off]) << 16
            | usize::from(data[off + 1]) << 8
            | usize::from(data[off + 2]);
        off += 9 + len;
        if off <= data.len() {
            at.push(off);
        }
    }
    at
}

/// Generates the frames of one step of the run.
fn step(r: &mut Rng, reg: &Registry, conns: &mut [Conn], hellos: &Hellos, split: bool) -> Frames {
    let ci = r.below(conns.len());
    let mut out = Vec::new();
    let c = &mut conns[ci];
    match r.below(100) {
        // A TCP connection: SYN, maybe the ACK, a first payload in segments.
        0..=39 if !c.udp => {
            let isn = r.next() as u32;
            let data = payload(r, reg, hellos, c.dport);
            let pieces = if !split || r.pct(40) {
                1
            } else {
                r.range(2, 5)
            };
            let bounds = h2_frame_bounds(&data);
            let cuts: Vec<usize> = if !bounds.is_empty() && r.pct(50) {
                // An HTTP/2 stream cut where clients cut it: between preface and frames.
                (1..pieces).map(|_| *r.pick(&bounds)).collect()
            } else {
                (1..pieces).map(|_| r.below(data.len() + 1)).collect()
            };
            let mut segs = meshclass::packet::split_at(&data, &cuts);
            // TCP Fast Open: the SYN carries the first segment, whose bytes follow the SYN's
            // sequence number.
            let tfo = r.pct(5) && !segs.is_empty();
            let syn_data = if tfo { segs.remove(0) } else { Vec::new() };
            out.push(dress(r, tcp(c, tcp_flags::SYN, isn, &syn_data)).build());
            c.next_seq = isn.wrapping_add(1).wrapping_add(syn_data.len() as u32);
            if r.pct(70) {
                out.push(tcp(c, tcp_flags::ACK, c.next_seq, &[]).build());
            }
            let mut seq = c.next_seq;
            for (i, s) in segs.iter().enumerate() {
                let mut at = seq;
                if r.pct(3) {
                    at = at.wrapping_add(r.range(1, 50) as u32); // a gap
                }
                let f = dress(r, tcp(c, tcp_flags::ACK | tcp_flags::PSH, at, s)).build();
                out.push(f.clone());
                if r.pct(5) {
                    out.push(f); // a retransmission
                }
                if i == 0 && r.pct(5) {
                    out.push(tcp(c, tcp_flags::ACK, seq, &[]).build());
                }
                seq = seq.wrapping_add(s.len() as u32);
            }
            c.next_seq = seq;
            if r.pct(30) {
                out.push(tcp(c, tcp_flags::ACK | tcp_flags::FIN, seq, &[]).build());
            }
        }
        // One TCP packet with random flags, maybe a payload.
        40..=54 if !c.udp => {
            let any = r.next() as u8;
            let flags = *r.pick(&[
                tcp_flags::SYN,
                tcp_flags::ACK,
                tcp_flags::SYN | tcp_flags::ACK,
                tcp_flags::RST,
                tcp_flags::FIN | tcp_flags::ACK,
                tcp_flags::ACK | tcp_flags::PSH,
                any,
            ]);
            let data = if r.pct(50) {
                payload(r, reg, hellos, c.dport)
            } else {
                Vec::new()
            };
            let seq = if r.pct(50) {
                c.next_seq
            } else {
                r.next() as u32
            };
            out.push(dress(r, tcp(c, flags, seq, &data)).build());
        }
        // UDP.
        0..=59 => {
            let n = r.below(100);
            let data = r.bytes(n);
            let p = Packet::udp(c.src, c.dst, c.sport, c.dport, &data);
            out.push(dress(r, p).build());
        }
        // Other protocols, ICMP, neighbour discovery.
        60..=66 => {
            let p = match r.below(4) {
                0 => Packet::icmp(
                    c.src,
                    c.dst,
                    *r.pick(&[8, 0, 3, 133, 134, 135, 136, 137, 128]),
                    0,
                    &[0; 20],
                ),
                1 => Packet::other(c.src, c.dst, ip_proto::SCTP, &r.bytes(20)),
                2 => Packet::other(c.src, c.dst, ip_proto::ICMPV6, &[]),
                _ => Packet::other(c.src, c.dst, r.next() as u8, &r.bytes(8)),
            };
            out.push(dress(r, p).build());
        }
        // Non-IP frames and odd tags.
        67..=69 => {
            let mut p = tcp(c, tcp_flags::SYN, 1, &[]);
            p.eth.ether_type =
                Some(*r.pick(&[ether_type::ARP, 0x88cc, ether_type::VLAN, 0x0800, 0x86dd]));
            out.push(p.build());
        }
        // Fragments.
        70..=76 => {
            let data = payload(r, reg, hellos, c.dport);
            let mut p = if c.udp {
                Packet::udp(c.src, c.dst, c.sport, c.dport, &data)
            } else {
                tcp(c, tcp_flags::ACK, c.next_seq, &data)
            };
            let offset = if r.pct(50) {
                0
            } else {
                r.range(1, 8000) as u16
            };
            let more = r.pct(60);
            p = match p.ip {
                Ip::V4(_) => p.ipv4_fragment(more, offset),
                Ip::V6(_) => p.ext(ExtHeader::Fragment {
                    offset,
                    more,
                    id: 9,
                }),
            };
            if offset != 0 && r.pct(50) {
                // A later fragment carries no transport header.
                let n = r.range(0, 60);
                let bytes = r.bytes(n);
                p.transport = Transport::Other {
                    proto: if c.udp { ip_proto::UDP } else { ip_proto::TCP },
                    payload: bytes,
                };
            }
            out.push(p.build());
        }
        // Damaged frames.
        77..=89 => {
            let data = if r.pct(50) {
                payload(r, reg, hellos, c.dport)
            } else {
                Vec::new()
            };
            let p = if c.udp {
                Packet::udp(c.src, c.dst, c.sport, c.dport, &data)
            } else {
                tcp(
                    c,
                    *r.pick(&[tcp_flags::SYN, tcp_flags::ACK]),
                    c.next_seq,
                    &data,
                )
            };
            let f = dress(r, p).build();
            out.push(mutate(r, f));
        }
        // A connection the workload accepts: the peer's SYN (or datagram) inbound, replies out.
        90..=93 => {
            let inbound = if c.udp {
                Packet::udp(c.dst, c.src, c.dport, c.sport, b"hello").build()
            } else {
                Packet::tcp(c.dst, c.src, c.dport, c.sport, tcp_flags::SYN).build()
            };
            let reply = if c.udp {
                Packet::udp(c.src, c.dst, c.sport, c.dport, b"reply").build()
            } else {
                tcp(c, tcp_flags::SYN | tcp_flags::ACK, c.next_seq, &[]).build()
            };
            return Frames {
                out: vec![(true, inbound), (false, reply)],
            };
        }
        // The payload of a connection in progress, in order or not.
        _ => {
            if c.udp {
                out.push(Packet::udp(c.src, c.dst, c.sport, c.dport, b"again").build());
            } else {
                let data = payload(r, reg, hellos, c.dport);
                let cut = if split {
                    r.below(data.len() + 1)
                } else {
                    data.len()
                };
                out.push(tcp(c, tcp_flags::ACK, c.next_seq, &data[..cut]).build());
                c.next_seq = c.next_seq.wrapping_add(cut as u32);
            }
        }
    }
    Frames {
        out: out.into_iter().map(|f| (false, f)).collect(),
    }
}

/// A fresh connection toward the registry's destinations (or elsewhere).
fn new_conn(r: &mut Rng, w: &World, reg: &Registry) -> Conn {
    let v6 = r.pct(40);
    let clients: Vec<IpAddr> = w
        .clients
        .iter()
        .copied()
        .filter(|a| a.is_ipv6() == v6)
        .collect();
    let servers: Vec<IpAddr> = w
        .servers
        .iter()
        .copied()
        .filter(|a| a.is_ipv6() == v6)
        .collect();
    let mut dst = *r.pick(&servers);
    let mut dport = *r.pick(&w.ports);
    let mut udp = r.pct(20);
    // Often exactly what an entry names.
    if r.pct(60) && !reg.plan.entries.is_empty() {
        let e = r.pick(&reg.plan.entries);
        match &e.matcher {
            Match::Ip {
                addr,
                port,
                protocol,
            } if addr.is_ipv6() == v6 => {
                dst = *addr;
                dport = *port;
                udp = *protocol == Proto::Udp;
            }
            Match::Cidr {
                cidr,
                port,
                protocol,
            } if cidr.addr.is_ipv6() == v6 => {
                let host = match cidr.addr {
                    IpAddr::V4(a) => {
                        let span = if cidr.len >= 32 {
                            0
                        } else {
                            u32::MAX >> cidr.len
                        };
                        IpAddr::V4(Ipv4Addr::from(u32::from(a) | (r.next() as u32 & span)))
                    }
                    IpAddr::V6(a) => {
                        let span = if cidr.len >= 128 {
                            0
                        } else {
                            u128::MAX >> cidr.len
                        };
                        IpAddr::V6(Ipv6Addr::from(
                            u128::from(a) | (u128::from(r.next()) & span),
                        ))
                    }
                };
                dst = host;
                dport = *port;
                udp = *protocol == Proto::Udp;
            }
            Match::Sni { port, .. } | Match::Host { port, .. } => {
                dport = *port;
                udp = r.pct(5);
            }
            Match::Port { port, protocol } => {
                dport = *port;
                udp = *protocol == Proto::Udp;
            }
            _ => {}
        }
    }
    Conn {
        src: *r.pick(&clients),
        dst,
        sport: r.range(1024, 65535) as u16,
        dport,
        udp,
        next_seq: r.next() as u32,
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

fn show(v: u8, st: u8, svc: u32) -> String {
    let svc = if svc == NO_SERVICE {
        "-".to_string()
    } else {
        svc.to_string()
    };
    format!("{}/{} service {svc}", verdict::name(v), stage::name(st))
}

/// Every stage but the name stages: registries without SNI/Host entries (so no port waits for
/// a payload), everything else as in the full run.
#[test]
fn kernel_and_model_agree_without_names() {
    differential(false, 300_000, capacity::FLOWS);
}

/// A flow table of 512 slots under hundreds of live connections: buckets overflow all the
/// time, and the model must forget exactly the flows the program evicts (docs/decision.md §3).
#[test]
fn kernel_and_model_agree_when_the_flow_table_overflows() {
    differential(true, 100_000, 512);
}

/// The full run, name stages and split ClientHellos included.
#[test]
fn kernel_and_model_agree() {
    differential(
        env_u64("MESHCLASS_DIFF_NO_NAMES").unwrap_or(0) == 0,
        1_000_000,
        capacity::FLOWS,
    );
}

/// Runs the generated packets through both; `with_names` puts SNI/Host entries in registries;
/// `flows` sizes the flow table.
fn differential(with_names: bool, default_packets: u64, flows: u32) {
    let seed = env_u64("MESHCLASS_DIFF_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let total = env_u64("MESHCLASS_DIFF_PACKETS").unwrap_or(default_packets);
    let split = env_u64("MESHCLASS_DIFF_NO_SPLIT").unwrap_or(0) == 0;
    println!(
        "differential: seed {seed:#x} ({seed}), {total} packets (MESHCLASS_DIFF_SEED / \
         MESHCLASS_DIFF_PACKETS), names {with_names}, split hellos {split}"
    );
    // The tables' hash seeds follow the run's seed, so that a run replays exactly.
    let mut kernel = kernel::Kernel::load(flows, seed);
    let (flow_mask, flow_seed) = kernel.flow_layout();
    let mut r = Rng(seed);
    let world = World::new(&mut r);
    let hellos = Hellos::new();
    let mut reg = random_registry(&mut r, &world, with_names);
    kernel.apply(&reg.plan, &reg.settings);
    let mut model = Model::with_flow_table(&reg.plan, &reg.settings, flow_mask, flow_seed);
    let mut conns: Vec<Conn> = (0..512).map(|_| new_conn(&mut r, &world, &reg)).collect();
    // New connections keep coming (the model mirrors the table's evictions), up to a bound
    // that keeps the run's memory small.
    let max_conns_made = (capacity::FLOWS / 4) as usize;
    let mut conns_made = conns.len();
    let mut sent: u64 = 0;
    let mut disagreements = 0u64;
    let mut refused = 0u64;
    let mut pairs: std::collections::BTreeMap<(u8, u8), u64> = Default::default();
    let mut first_report = String::new();
    let mut by_stage = [0u64; stage::COUNT];
    let mut sweep = Sweep::new();
    let started = Instant::now();
    let mut next_progress = 100_000;
    let mut next_registry = 5_000 + r.below(20_000) as u64;
    while sent < total {
        if sent >= next_registry {
            next_registry = sent + 5_000 + r.below(40_000) as u64;
            reg = random_registry(&mut r, &world, with_names);
            kernel.apply(&reg.plan, &reg.settings);
            model.update(&reg.plan, &reg.settings);
            for _ in 0..r.range(16, 256) {
                if conns_made >= max_conns_made {
                    break;
                }
                let i = r.below(conns.len());
                conns[i] = new_conn(&mut r, &world, &reg);
                conns_made += 1;
            }
        }
        let frames = match sweep.next(&mut r, &hellos, &reg, &world) {
            Some(f) if split && r.pct(20) => f.into_iter().map(|f| (false, f)).collect(),
            _ => step(&mut r, &reg, &mut conns, &hellos, split).out,
        };
        for (inbound, f) in frames {
            // BPF_PROG_TEST_RUN takes whole Ethernet headers and at most about a page.
            if f.len() < 14 || f.len() > MAX_FRAME {
                continue;
            }
            if inbound {
                if kernel.run_inbound(&f) {
                    model.inbound(&f);
                }
                continue;
            }
            // Now and then a GSO packet (as a workload's TCP stack hands its interface), half
            // of them with the IP length field of 0 that BIG TCP packets carry.
            let gso = r.pct(3);
            let f = if gso && r.pct(50) { big_tcp(f) } else { f };
            let Some(k) = kernel.run(&f, gso) else {
                refused += 1;
                if refused <= 3 {
                    println!(
                        "  BPF_PROG_TEST_RUN refused a {}-byte frame: {}",
                        f.len(),
                        hex(&f)
                    );
                }
                continue;
            };
            sent += 1;
            let m: ModelDecision = model.classify_gso(&f, gso);
            by_stage[usize::from(m.stage).min(stage::COUNT - 1)] += 1;
            let service_differs =
                k.2 != NO_SERVICE && m.service_id != NO_SERVICE && k.2 != m.service_id;
            if k.0 != m.verdict || k.1 != m.stage || service_differs {
                disagreements += 1;
                *pairs.entry((k.1, m.stage)).or_default() += 1;
                if disagreements <= 5 {
                    let report = format!(
                        "DISAGREEMENT #{disagreements} at packet {sent} (seed {seed:#x}):\n  kernel: {}\n  model:  {} ({})\n  packet ({} bytes): {}\n",
                        show(k.0, k.1, k.2),
                        show(m.verdict, m.stage, m.service_id),
                        m.explain,
                        f.len(),
                        hex(&f)
                    );
                    println!("{report}");
                    if first_report.is_empty() {
                        first_report = report;
                    }
                }
            }
        }
        if sent >= next_progress {
            next_progress += 100_000;
            println!(
                "  {sent} packets, {disagreements} disagreements, {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let stages: Vec<String> = (1..stage::COUNT)
        .map(|s| format!("{}={}", stage::name(s as u8), by_stage[s]))
        .collect();
    println!(
        "differential: {sent} packets ({refused} frames refused by BPF_PROG_TEST_RUN), {disagreements} disagreements, seed {seed:#x}, {:.1}s; model stages: {}; flow table of {flows}: {} flows evicted",
        started.elapsed().as_secs_f64(),
        stages.join(" "),
        model.flow_evictions()
    );
    for ((ks, ms), n) in &pairs {
        println!(
            "  disagreements with kernel stage {} and model stage {}: {n}",
            stage::name(*ks),
            stage::name(*ms)
        );
    }
    assert_eq!(
        disagreements, 0,
        "kernel and model disagree (seed {seed:#x}); first:\n{first_report}"
    );
    if flows < 4096 {
        assert!(
            model.flow_evictions() > 1000,
            "a small flow table must overflow often for this run to test eviction"
        );
    }
}

/// A systematic sweep: ClientHellos with names of every length 1..=253, each split into two
/// segments at every position, on a registered SNI port, through fresh connections.
struct Sweep {
    len: usize,
    cut: usize,
    hello: Vec<u8>,
    name: Vec<u8>,
    sport: u16,
}

impl Sweep {
    fn new() -> Self {
        Self {
            len: 0,
            cut: 0,
            hello: Vec::new(),
            name: Vec::new(),
            sport: 20000,
        }
    }

    fn next(
        &mut self,
        r: &mut Rng,
        hellos: &Hellos,
        reg: &Registry,
        w: &World,
    ) -> Option<Vec<Vec<u8>>> {
        if self.cut >= self.hello.len() {
            self.len += 1;
            if self.len > 253 {
                self.len = 1;
            }
            // A registered name of this length if there is one, else a fresh one.
            let fitting: Vec<&String> = reg.names.iter().filter(|n| n.len() == self.len).collect();
            self.name = if fitting.is_empty() || r.pct(30) {
                random_name(r, self.len).into_bytes()
            } else {
                r.pick(&fitting).as_bytes().to_vec()
            };
            self.hello = hellos.make(r, Some(&self.name));
            self.cut = 1;
        }
        // The SNI port of the registry, if any.
        let port = reg
            .plan
            .entries
            .iter()
            .find_map(|e| match e.matcher {
                Match::Sni { port, .. } => Some(port),
                _ => None,
            })
            .unwrap_or(443);
        self.sport = if self.sport >= 24000 {
            20000
        } else {
            self.sport + 1
        };
        let c = Conn {
            src: w.clients[0],
            dst: "10.250.0.1".parse().unwrap(),
            sport: self.sport,
            dport: port,
            udp: false,
            next_seq: 0,
        };
        let isn = r.next() as u32;
        let s1 = isn.wrapping_add(1);
        let cut = self.cut;
        self.cut += if self.len.is_multiple_of(17) {
            1
        } else {
            r.range(1, 24)
        };
        let a = &self.hello[..cut];
        let b = &self.hello[cut..];
        Some(vec![
            tcp(&c, tcp_flags::SYN, isn, &[]).build(),
            tcp(&c, tcp_flags::ACK | tcp_flags::PSH, s1, a).build(),
            tcp(
                &c,
                tcp_flags::ACK | tcp_flags::PSH,
                s1.wrapping_add(a.len() as u32),
                b,
            )
            .build(),
        ])
    }
}
