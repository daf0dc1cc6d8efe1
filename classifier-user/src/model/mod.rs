//! The reference model of docs/decision.md, computed over a [`Plan`] and raw packet bytes.
//!
//! It shares no parsing or lookup code with the TC program: it parses frames itself
//! ([`parse`]), extracts names itself ([`names`]) and looks entries up in plain Rust
//! collections built from the plan. The differential test holds the two to each other, and
//! `meshclass explain` prints its answer beside the kernel's.

pub mod flows;
pub mod names;
pub mod parse;

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use classifier_common::{family, name_kind, proto, stage, verdict, NO_SERVICE};

use crate::{
    plan::{Match, Plan},
    settings::{Blocked, OutboundPolicy, Settings},
};
use flows::FlowTable;
use names::Hello;
use parse::{Key, Parsed, ACK, FIN, L4, RST, SYN};

/// The model's answer for one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelDecision {
    /// A `classifier_common::verdict` code.
    pub verdict: u8,
    /// A `classifier_common::stage` code.
    pub stage: u8,
    /// The deciding entry's service, or `NO_SERVICE`.
    pub service_id: u32,
    /// The deciding entry's match, if an entry decided.
    pub matched: Option<Match>,
    /// Why, in a few words.
    pub explain: String,
}

/// An entry of the plan as the tables hold it.
#[derive(Clone, Debug)]
struct Hit {
    index: usize,
    service_id: u32,
    verdict: u8,
}

/// What the plan says about one (protocol, port).
#[derive(Clone, Debug, Default)]
struct PortInfo {
    capture: Option<Hit>,
    kinds: u8,
}

/// Name table kinds (as `classifier_common::name_match`).
const EXACT: u8 = 0;
const SUFFIX: u8 = 1;

/// Longest wildcard (in labels) that can be matched: `PortValue::suffix_labels` has 64 bits.
const MAX_SUFFIX_LABELS: usize = 63;

/// A network of the CIDR table: prefix length, address with host bits zero, and its entry.
type CidrEntry = (u8, [u8; 16], Hit);

/// The plan compiled into lookup tables.
#[derive(Clone, Debug, Default)]
struct Tables {
    exact: HashMap<(u8, u8, u16, [u8; 16]), Hit>,
    /// (family, proto, port) → networks, longest first, plan order within.
    cidr: HashMap<(u8, u8, u16), Vec<CidrEntry>>,
    ports: HashMap<(u8, u16), PortInfo>,
    names: HashMap<(u16, u8, Vec<u8>), Hit>,
}

fn addr16(a: IpAddr) -> (u8, [u8; 16]) {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            (family::V4, out)
        }
        IpAddr::V6(v6) => (family::V6, v6.octets()),
    }
}

fn masked(mut a: [u8; 16], len: u8) -> [u8; 16] {
    for (i, b) in a.iter_mut().enumerate() {
        let keep = (usize::from(len)).saturating_sub(i * 8).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    a
}

impl Tables {
    fn build(plan: &Plan) -> Self {
        let mut t = Tables::default();
        for (index, e) in plan.entries.iter().enumerate() {
            let hit = Hit {
                index,
                service_id: e.service_id,
                verdict: e.verdict.code(),
            };
            match &e.matcher {
                Match::Ip {
                    addr,
                    port,
                    protocol,
                } => {
                    let (fam, a) = addr16(*addr);
                    t.exact
                        .entry((fam, protocol.number(), *port, a))
                        .or_insert(hit);
                }
                Match::Cidr {
                    cidr,
                    port,
                    protocol,
                } => {
                    let (fam, a) = addr16(cidr.addr);
                    let max = if fam == family::V4 { 32 } else { 128 };
                    let len = cidr.len.min(max);
                    let net = masked(a, len);
                    let list = t.cidr.entry((fam, protocol.number(), *port)).or_default();
                    if !list.iter().any(|(l, n, _)| *l == len && *n == net) {
                        list.push((len, net, hit));
                        list.sort_by_key(|c| std::cmp::Reverse(c.0));
                    }
                }
                Match::Port { port, protocol } => {
                    let p = t.ports.entry((protocol.number(), *port)).or_default();
                    if p.capture.is_none() {
                        p.capture = Some(hit);
                    }
                }
                Match::Sni { name, port } | Match::Host { name, port } => {
                    let bits = if matches!(e.matcher, Match::Sni { .. }) {
                        name_kind::TLS
                    } else {
                        name_kind::HTTP | name_kind::H2
                    };
                    t.ports.entry((proto::TCP, *port)).or_default().kinds |= bits;
                    let lower = name.to_ascii_lowercase().into_bytes();
                    if let Some(suffix) = lower.strip_prefix(b"*") {
                        let labels = suffix.iter().filter(|&&c| c == b'.').count();
                        if suffix.first() == Some(&b'.')
                            && labels <= MAX_SUFFIX_LABELS
                            && suffix.len() < names::NAME_LIMIT
                        {
                            t.names
                                .entry((*port, SUFFIX, suffix.to_vec()))
                                .or_insert(hit);
                        }
                    } else if !lower.is_empty() && lower.len() < names::NAME_LIMIT {
                        t.names.entry((*port, EXACT, lower)).or_insert(hit);
                    }
                }
            }
        }
        t
    }

    fn cidr(&self, k: &Key) -> Option<&Hit> {
        let list = self.cidr.get(&(k.family, k.proto, k.dport))?;
        list.iter()
            .find(|(len, net, _)| masked(k.daddr, *len) == *net)
            .map(|(_, _, h)| h)
    }

    /// Exact name, then `*.` suffixes longest first.
    fn name(&self, port: u16, name: &[u8]) -> Option<&Hit> {
        if let Some(h) = self.names.get(&(port, EXACT, name.to_vec())) {
            return Some(h);
        }
        (1..name.len())
            .filter(|&i| name[i] == b'.')
            .find_map(|i| self.names.get(&(port, SUFFIX, name[i..].to_vec())))
    }
}

/// A stream followed across segments: a ClientHello (its bytes so far), or an HTTP/2
/// prior-knowledge stream before its first HEADERS frame (`h2`: how far into the next segment
/// the next frame starts, and the segments seen).
#[derive(Clone, Debug)]
struct Stream {
    next_seq: u32,
    bytes: Vec<u8>,
    h2: Option<(usize, u8)>,
}

/// The sequence number after the payload of `p` (a SYN, with TCP Fast Open data, takes one).
fn next_seq(p: &L4<'_>) -> u32 {
    p.seq
        .wrapping_add(p.payload.len() as u32)
        .wrapping_add(u32::from(p.tcp_flags & SYN != 0))
}

#[derive(Clone, Debug)]
enum Flow {
    Decided {
        verdict: u8,
        stage: u8,
        service_id: u32,
        matched: Option<Match>,
        /// The registry epoch of the decision (a UDP flow's is decided anew after a reload).
        epoch: u8,
    },
    Pending(Option<Stream>),
}

/// The reference classifier: tables from the plan, settings, and flow state.
#[derive(Clone, Debug)]
pub struct Model {
    plan: Plan,
    tables: Tables,
    settings: Settings,
    flows: FlowTable<Flow>,
    /// Counts updates, as the program's `Config::epoch` counts applies.
    epoch: u8,
}

/// What step 6 concluded.
enum NameOutcome {
    /// A name entry decided (stage SNI or HOST).
    Hit(u8, Hit, Vec<u8>),
    /// Wait for more of the ClientHello.
    Wait(Stream),
    /// Nothing decided: step 7, with a note why.
    Fallthrough(String),
}

impl Model {
    /// A model of the dataplane holding `plan` under `settings`, with no flows, and a flow
    /// table of the default capacity.
    pub fn new(plan: &Plan, settings: &Settings) -> Self {
        Self {
            plan: plan.clone(),
            tables: Tables::build(plan),
            settings: *settings,
            flows: FlowTable::default(),
            epoch: 0,
        }
    }

    /// The same, with a flow table laid out as the program's `LAYOUT` says (bucket mask and
    /// hash seed), so that the model forgets the flows the program evicts.
    pub fn with_flow_table(plan: &Plan, settings: &Settings, mask: u32, seed: u64) -> Self {
        Self {
            flows: FlowTable::new(mask, seed),
            ..Self::new(plan, settings)
        }
    }

    /// Switches to a new generation of the registry; flows are kept (UDP flows are decided
    /// anew at their next packet).
    pub fn update(&mut self, plan: &Plan, settings: &Settings) {
        self.epoch = self.epoch.wrapping_add(1);
        self.plan = plan.clone();
        self.tables = Tables::build(plan);
        self.settings = *settings;
    }

    /// Forgets every flow.
    pub fn clear_flows(&mut self) {
        self.flows.clear();
    }

    /// Flow entries replaced to make room for others (docs/decision.md §3).
    pub fn flow_evictions(&self) -> u64 {
        self.flows.evictions()
    }

    /// Number of flow entries (decided and pending).
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    fn plain(&self, v: u8, st: u8, why: impl Into<String>) -> ModelDecision {
        ModelDecision {
            verdict: v,
            stage: st,
            service_id: NO_SERVICE,
            matched: None,
            explain: why.into(),
        }
    }

    fn blocked(&self, no_reject: bool) -> u8 {
        match (self.settings.outbound_policy, self.settings.blocked) {
            (OutboundPolicy::AllowAny, _) => verdict::PASS,
            (OutboundPolicy::RegistryOnly, Blocked::Drop) => verdict::DROP,
            (OutboundPolicy::RegistryOnly, Blocked::Reject) if no_reject => verdict::DROP,
            (OutboundPolicy::RegistryOnly, Blocked::Reject) => verdict::REJECT,
        }
    }

    /// Classifies one outbound frame (TC ingress of the workload's interface).
    pub fn classify(&mut self, frame: &[u8]) -> ModelDecision {
        self.classify_gso(frame, false)
    }

    /// [`Model::classify`] for a frame that is a GSO packet or not (`gso`: the kernel's
    /// `gso_size` is not 0), which decides how a length field of 0 reads (`parse::parse_gso`).
    pub fn classify_gso(&mut self, frame: &[u8], gso: bool) -> ModelDecision {
        match parse::parse_gso(frame, gso) {
            Parsed::NotIp => self.plain(verdict::PASS, stage::OTHER, "not IP"),
            Parsed::Fragment => self.plain(verdict::PASS, stage::OTHER, "non-first fragment"),
            Parsed::NeighbourDiscovery => {
                self.plain(verdict::PASS, stage::OTHER, "ICMPv6 neighbour discovery")
            }
            Parsed::Malformed => {
                let v = match self.settings.outbound_policy {
                    OutboundPolicy::AllowAny => verdict::PASS,
                    OutboundPolicy::RegistryOnly => verdict::DROP,
                };
                self.plain(v, stage::OTHER, "malformed headers")
            }
            Parsed::OtherProto { proto } => {
                let v = self.blocked(true);
                self.plain(
                    v,
                    stage::POLICY,
                    format!(
                        "protocol {proto} is not in the registry: outbound policy {}",
                        self.settings.outbound_policy
                    ),
                )
            }
            Parsed::Ip(p) => self.classify_l4(&p),
        }
    }

    fn classify_l4(&mut self, p: &L4<'_>) -> ModelDecision {
        let tcp = p.key.proto == proto::TCP;
        let syn_only = tcp && p.tcp_flags & (SYN | ACK) == SYN;
        let epoch = self.epoch;
        // A SYN is not looked up: the decision below replaces any entry of its key.
        if syn_only {
        } else if let Some(flow) = self.flows.get(&p.key, p.tcp_flags & (FIN | RST) != 0) {
            match flow {
                // A UDP flow decided before the last reload is decided anew (the inbound
                // program's reply entries, stage FLOW, stay).
                Flow::Decided {
                    stage: st,
                    epoch: e,
                    ..
                } if !tcp && *st != stage::FLOW && *e != epoch => {}
                Flow::Decided {
                    verdict,
                    stage: st,
                    service_id,
                    matched,
                    ..
                } => {
                    return ModelDecision {
                        verdict: *verdict,
                        stage: stage::FLOW,
                        service_id: *service_id,
                        matched: matched.clone(),
                        explain: format!(
                            "connection already decided by stage {}",
                            stage::name(*st)
                        ),
                    }
                }
                Flow::Pending(stream) => {
                    let stream = stream.clone();
                    return self.pending(p, stream);
                }
            }
        }
        // §4 Address stages.
        let (fam, addr, dport, pr) = (p.key.family, p.key.daddr, p.key.dport, p.key.proto);
        if let Some(h) = self.tables.exact.get(&(fam, pr, dport, addr)).cloned() {
            return self.decide(p, h.verdict, stage::EXACT, Some(&h), String::new());
        }
        if let Some(h) = self.tables.cidr(&p.key).cloned() {
            return self.decide(p, h.verdict, stage::CIDR, Some(&h), String::new());
        }
        // §5 Is there a name to wait for?
        let kinds = self.kinds(p);
        if kinds != 0 {
            // A port captured with REDIRECT decides at the first packet, before its names:
            // once the first payload has gone to the server, the connection cannot be moved.
            if let Some(h) = self.capture(p).filter(|h| h.verdict == verdict::REDIRECT) {
                return self.decide(
                    p,
                    h.verdict,
                    stage::PORT,
                    Some(&h),
                    "the port's capture redirects, which only the first packet can: ".into(),
                );
            }
            if p.payload.is_empty() {
                self.flows.insert(p.key, Flow::Pending(None), false);
                return self.plain(
                    verdict::PASS,
                    stage::PENDING,
                    "port carries names: waiting for the first payload",
                );
            }
            return self.first_payload(p, kinds);
        }
        self.step7(p, String::new(), false)
    }

    /// The whole-port capture of the packet's port and protocol, if any.
    fn capture(&self, p: &L4<'_>) -> Option<Hit> {
        self.tables
            .ports
            .get(&(p.key.proto, p.key.dport))
            .and_then(|i| i.capture.clone())
    }

    fn kinds(&self, p: &L4<'_>) -> u8 {
        if p.key.proto != proto::TCP {
            return 0;
        }
        self.tables
            .ports
            .get(&(proto::TCP, p.key.dport))
            .map_or(0, |i| i.kinds)
    }

    /// A packet of a PENDING flow.
    fn pending(&mut self, p: &L4<'_>, stream: Option<Stream>) -> ModelDecision {
        if p.payload.is_empty() {
            return self.plain(verdict::PASS, stage::PENDING, "no payload yet");
        }
        let Some(mut s) = stream else {
            let kinds = self.kinds(p);
            return self.first_payload(p, kinds);
        };
        let d = p.seq.wrapping_sub(s.next_seq) as i32;
        if d < 0 {
            return self.plain(verdict::PASS, stage::PENDING, "retransmitted segment");
        }
        if d > 0 {
            return self.step7(
                p,
                "gap in the stream followed: not inspectable; ".into(),
                true,
            );
        }
        if let Some((skip, count)) = s.h2 {
            let len = p.payload.len();
            let seg = if skip >= len {
                names::H2::More(skip - len)
            } else {
                names::h2_segment(p.payload, Some(skip))
            };
            return match self.h2_outcome(p, seg, count + 1) {
                // The stream's state moves on in place, as the program's `PENDING` entry.
                Some(NameOutcome::Wait(s)) => {
                    self.flows.replace(&p.key, Flow::Pending(Some(s)));
                    self.h2_continues()
                }
                Some(o) => self.conclude(p, o),
                None => self.step7(
                    p,
                    "HTTP/2 stream without a registered `:authority` in its first HEADERS \
                     frame as followed; "
                        .into(),
                    true,
                ),
            };
        }
        s.bytes.extend_from_slice(p.payload);
        s.next_seq = s.next_seq.wrapping_add(p.payload.len() as u32);
        match self.tls_outcome(p, s) {
            // Still more to come: the parse state moves on in the flow's slot, as the program
            // keeps it in its `PENDING` map without writing the flow table (the slot's reference
            // bit stays as the lookup left it).
            NameOutcome::Wait(s) => {
                let have = s.bytes.len();
                self.flows.replace(&p.key, Flow::Pending(Some(s)));
                self.hello_continues(have)
            }
            outcome => self.conclude(p, outcome),
        }
    }

    fn first_payload(&mut self, p: &L4<'_>, kinds: u8) -> ModelDecision {
        let outcome = self.names_stage(p, kinds);
        self.conclude(p, outcome)
    }

    fn conclude(&mut self, p: &L4<'_>, outcome: NameOutcome) -> ModelDecision {
        match outcome {
            NameOutcome::Hit(st, h, name) => {
                let mut v = h.verdict;
                let mut why = format!("name `{}`: ", String::from_utf8_lossy(&name));
                if v == verdict::REDIRECT {
                    v = verdict::PASS;
                    why.push_str("redirect entry applied as pass (too late to redirect); ");
                }
                self.decide(p, v, st, Some(&h), why)
            }
            NameOutcome::Wait(s) => {
                let have = s.bytes.len();
                let h2 = s.h2.is_some();
                self.flows.insert(p.key, Flow::Pending(Some(s)), false);
                if h2 {
                    self.h2_continues()
                } else {
                    self.hello_continues(have)
                }
            }
            NameOutcome::Fallthrough(why) => self.step7(p, why, true),
        }
    }

    /// The answer for a segment of an HTTP/2 stream that ends before its first HEADERS frame.
    fn h2_continues(&self) -> ModelDecision {
        self.plain(
            verdict::PASS,
            stage::PENDING,
            "HTTP/2 stream: no HEADERS frame yet, following it into the next segment",
        )
    }

    /// The answer for a segment after which the ClientHello (`have` bytes so far) goes on.
    fn hello_continues(&self, have: usize) -> ModelDecision {
        self.plain(
            verdict::PASS,
            stage::PENDING,
            format!("ClientHello continues past this segment ({have} bytes so far)"),
        )
    }

    /// Judges the reassembled stream as a ClientHello.
    fn tls_outcome(&self, p: &L4<'_>, s: Stream) -> NameOutcome {
        match names::client_hello(&s.bytes) {
            Hello::NeedMore => NameOutcome::Wait(s),
            Hello::NotHello => NameOutcome::Fallthrough("not an inspectable ClientHello; ".into()),
            Hello::Complete { name, ech } => self.hello_name(p, name, ech),
        }
    }

    fn hello_name(&self, p: &L4<'_>, name: Option<Vec<u8>>, ech: bool) -> NameOutcome {
        if ech && !self.settings.ech_outer_sni {
            return NameOutcome::Fallthrough("ClientHello offers ECH: not inspectable; ".into());
        }
        let Some(raw) = name else {
            return NameOutcome::Fallthrough("ClientHello without server name; ".into());
        };
        match names::normalize(&raw).and_then(|n| {
            let h = self.tables.name(p.key.dport, &n)?.clone();
            Some((h, n))
        }) {
            Some((h, n)) => NameOutcome::Hit(stage::SNI, h, n),
            None => NameOutcome::Fallthrough(format!(
                "SNI `{}` not registered on this port; ",
                String::from_utf8_lossy(&raw)
            )),
        }
    }

    /// Step 6 on a first payload.
    fn names_stage(&self, p: &L4<'_>, kinds: u8) -> NameOutcome {
        if kinds & name_kind::TLS != 0 {
            match names::client_hello(p.payload) {
                Hello::NeedMore => {
                    return NameOutcome::Wait(Stream {
                        next_seq: next_seq(p),
                        bytes: p.payload.to_vec(),
                        h2: None,
                    });
                }
                Hello::Complete { name, ech } => return self.hello_name(p, name, ech),
                Hello::NotHello => {}
            }
        }
        if kinds & name_kind::HTTP != 0 {
            if let Some(host) = names::http_host(p.payload) {
                return match names::normalize(host)
                    .and_then(|n| Some((self.tables.name(p.key.dport, &n)?.clone(), n)))
                {
                    Some((h, n)) => NameOutcome::Hit(stage::HOST, h, n),
                    None => NameOutcome::Fallthrough(format!(
                        "Host `{}` not registered on this port; ",
                        String::from_utf8_lossy(host)
                    )),
                };
            }
        }
        if kinds & name_kind::H2 != 0 {
            let seg = names::h2_segment(p.payload, None);
            if let Some(o) = self.h2_outcome(p, seg, 1) {
                return o;
            }
        }
        NameOutcome::Fallthrough("no registered name in the first payload; ".into())
    }

    /// What segment `seg` of an HTTP/2 stream (the `count`th) concludes: its `:authority`
    /// registered (a hit), the stream going on into the next segment (wait), or `None` when
    /// neither.
    fn h2_outcome(&self, p: &L4<'_>, seg: names::H2<'_>, count: u8) -> Option<NameOutcome> {
        let host = match seg {
            names::H2::Authority(host) => host,
            names::H2::More(skip) => {
                return (count < names::H2_MAX_SEGMENTS).then(|| {
                    NameOutcome::Wait(Stream {
                        next_seq: next_seq(p),
                        bytes: Vec::new(),
                        h2: Some((skip, count)),
                    })
                });
            }
            names::H2::Not => return None,
        };
        let n = names::normalize(&host)?;
        let h = self.tables.name(p.key.dport, &n)?.clone();
        Some(NameOutcome::Hit(stage::HOST, h, n))
    }

    /// §7 port capture and policy; `after`: a payload has gone by (the connection reached its
    /// server), too late for a capture's REDIRECT, which is applied as PASS.
    fn step7(&mut self, p: &L4<'_>, mut why: String, after: bool) -> ModelDecision {
        if let Some(h) = self.capture(p) {
            let mut v = h.verdict;
            if after && v == verdict::REDIRECT {
                v = verdict::PASS;
                why.push_str("redirecting capture applied as pass (too late to redirect); ");
            }
            return self.decide(p, v, stage::PORT, Some(&h), why);
        }
        let v = self.blocked(to_group(&p.key));
        let why = format!(
            "{why}nothing in the registry matched: outbound policy {}",
            self.settings.outbound_policy
        );
        self.decide(p, v, stage::POLICY, None, why)
    }

    /// §8: records a decision of steps 4-7 as a DECIDED flow.
    fn decide(
        &mut self,
        p: &L4<'_>,
        v: u8,
        st: u8,
        hit: Option<&Hit>,
        mut why: String,
    ) -> ModelDecision {
        let matched = hit.map(|h| self.plan.entries[h.index].matcher.clone());
        if let Some(h) = hit {
            let e = &self.plan.entries[h.index];
            let _ = write!(
                why,
                "{} matched entry #{} {} of service {}",
                stage::name(st),
                h.index,
                describe(&e.matcher),
                e.service
            );
        }
        let _ = write!(why, " → {}", verdict::name(v));
        let service_id = hit.map_or(NO_SERVICE, |h| h.service_id);
        self.flows.insert(
            p.key,
            Flow::Decided {
                verdict: v,
                stage: st,
                service_id,
                matched: matched.clone(),
                epoch: self.epoch,
            },
            false,
        );
        ModelDecision {
            verdict: v,
            stage: st,
            service_id,
            matched,
            explain: why,
        }
    }

    /// §10: a packet toward the workload (TC egress); records replies of inbound connections.
    pub fn inbound(&mut self, frame: &[u8]) {
        let Parsed::Ip(p) = parse::parse(frame) else {
            return;
        };
        let new = match p.key.proto {
            proto::TCP => p.tcp_flags & (SYN | ACK) == SYN,
            proto::UDP => true,
            _ => false,
        };
        if !new {
            return;
        }
        self.flows.insert(
            p.key.reversed(),
            Flow::Decided {
                verdict: verdict::PASS,
                stage: stage::FLOW,
                service_id: NO_SERVICE,
                matched: None,
                epoch: self.epoch,
            },
            true,
        );
    }
}

/// Whether `k` goes to a multicast or the limited broadcast address, which no ICMP error may
/// answer (RFC 1122 3.2.2, RFC 4443 2.4): the policy's REJECT is a DROP there.
fn to_group(k: &Key) -> bool {
    let d = &k.daddr;
    if k.family == family::V4 {
        d[0] & 0xf0 == 0xe0 || d[..4] == [0xff; 4]
    } else {
        d[0] == 0xff
    }
}

fn show_addr(fam: u8, a: &[u8; 16]) -> String {
    if fam == family::V4 {
        Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
    } else {
        Ipv6Addr::from(*a).to_string()
    }
}

/// A short description of a match.
pub fn describe(m: &Match) -> String {
    match m {
        Match::Ip {
            addr,
            port,
            protocol,
        } => {
            let (f, a) = addr16(*addr);
            format!("{}:{port}/{protocol:?}", show_addr(f, &a)).to_lowercase()
        }
        Match::Cidr {
            cidr,
            port,
            protocol,
        } => format!("{}/{}:{port}/{protocol:?}", cidr.addr, cidr.len).to_lowercase(),
        Match::Sni { name, port } => format!("sni {name}:{port}"),
        Match::Host { name, port } => format!("host {name}:{port}"),
        Match::Port { port, protocol } => format!("port {port}/{protocol:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests;
