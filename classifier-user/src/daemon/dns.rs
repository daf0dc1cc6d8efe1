//! Resolving the names the plan lists (resolution DNS / DNS_ROUND_ROBIN), re-resolving them when
//! their TTL runs out, and turning their addresses into exact entries of their service.
//!
//! A small stub resolver over UDP: one A and one AAAA question per name to the configured
//! server. A failure keeps the addresses last learned (they are withdrawn only when the server
//! answers without them) and never holds up the rest of the registry.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use crate::plan::{Entry, Match, Plan};

/// Shortest and longest time an answer is kept, whatever its TTL says.
const MIN_TTL: Duration = Duration::from_secs(5);
const MAX_TTL: Duration = Duration::from_secs(3600);
/// Retry after a failure.
const RETRY: Duration = Duration::from_secs(5);

/// Errors of one resolution.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("asking {server} about {name}: {source}")]
    Io {
        server: SocketAddr,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}: the answer from {server} is malformed")]
    Malformed { server: SocketAddr, name: String },
    #[error("{name}: {server} answered with error code {rcode}")]
    Rcode {
        server: SocketAddr,
        name: String,
        rcode: u8,
    },
}

/// The first `nameserver` of /etc/resolv.conf, on port 53.
pub fn system_resolver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next() == Some("nameserver"))
            .then(|| f.next())
            .flatten()
            .and_then(|a| a.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

fn question(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    q
}

fn skip_name(b: &[u8], mut i: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *b.get(i)?;
        if len == 0 {
            return Some(i + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(i + 2);
        }
        i += 1 + len as usize;
    }
    None
}

/// Parses an answer: (addresses, smallest TTL) or the response code.
fn parse_answer(b: &[u8], id: u16) -> Result<(Vec<IpAddr>, u32), Option<u8>> {
    if b.len() < 12 || u16::from_be_bytes([b[0], b[1]]) != id || b[2] & 0x80 == 0 {
        return Err(None);
    }
    let rcode = b[3] & 0x0f;
    if rcode == 3 {
        // NXDOMAIN: the name has no addresses.
        return Ok((Vec::new(), 60));
    }
    if rcode != 0 {
        return Err(Some(rcode));
    }
    let qd = u16::from_be_bytes([b[4], b[5]]);
    let an = u16::from_be_bytes([b[6], b[7]]);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(b, i).ok_or(None)? + 4;
    }
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    for _ in 0..an {
        i = skip_name(b, i).ok_or(None)?;
        let h = b.get(i..i + 10).ok_or(None)?;
        let rtype = u16::from_be_bytes([h[0], h[1]]);
        let rttl = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let rdlen = u16::from_be_bytes([h[8], h[9]]) as usize;
        let data = b.get(i + 10..i + 10 + rdlen).ok_or(None)?;
        match (rtype, rdlen) {
            (1, 4) => addrs.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (28, 16) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(data);
                addrs.push(IpAddr::V6(Ipv6Addr::from(o)));
            }
            _ => {}
        }
        if rtype == 1 || rtype == 28 {
            ttl = ttl.min(rttl);
        }
        i += 10 + rdlen;
    }
    Ok((addrs, if ttl == u32::MAX { 60 } else { ttl }))
}

/// Resolves `name` (A and AAAA) at `server`: the addresses and how long to keep them.
pub fn resolve(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<(Vec<IpAddr>, Duration), DnsError> {
    let io = |source| DnsError::Io {
        server,
        name: name.to_string(),
        source,
    };
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).map_err(io)?;
    sock.connect(server).map_err(io)?;
    sock.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut all = Vec::new();
    let mut ttl = u32::MAX;
    for qtype in [1u16, 28] {
        let id = (std::process::id() as u16) ^ qtype ^ (name.len() as u16).rotate_left(7);
        let q = question(id, name, qtype);
        let mut answer = None;
        for _ in 0..2 {
            sock.send(&q).map_err(io)?;
            let mut buf = [0u8; 1500];
            match sock.recv(&mut buf) {
                Ok(n) => {
                    answer = Some(buf[..n].to_vec());
                    break;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(io(e)),
            }
        }
        let answer = answer.ok_or_else(|| io(std::io::ErrorKind::TimedOut.into()))?;
        match parse_answer(&answer, id) {
            Ok((a, t)) => {
                all.extend(a);
                ttl = ttl.min(t);
            }
            Err(Some(rcode)) => {
                return Err(DnsError::Rcode {
                    server,
                    name: name.to_string(),
                    rcode,
                })
            }
            Err(None) => {
                return Err(DnsError::Malformed {
                    server,
                    name: name.to_string(),
                })
            }
        }
    }
    all.sort();
    all.dedup();
    let keep = Duration::from_secs(u64::from(ttl)).clamp(MIN_TTL, MAX_TTL);
    Ok((all, keep))
}

/// What the daemon has learned: per name, its addresses and when to ask again.
#[derive(Debug, Default)]
pub struct Learned {
    names: BTreeMap<String, (Vec<IpAddr>, Instant)>,
    pub resolutions: u64,
    pub failures: u64,
}

impl Learned {
    /// Resolves every name of `plan` that is due; returns whether any address set changed.
    pub fn refresh(&mut self, plan: &Plan, server: SocketAddr, now: Instant) -> bool {
        let mut changed = false;
        let wanted: std::collections::BTreeSet<&str> =
            plan.dns.iter().map(|d| d.name.as_str()).collect();
        let before = self.names.len();
        self.names.retain(|n, _| wanted.contains(n.as_str()));
        changed |= before != self.names.len();
        for name in wanted {
            let due = self.names.get(name).is_none_or(|(_, at)| *at <= now);
            if !due {
                continue;
            }
            match resolve(server, name, Duration::from_secs(2)) {
                Ok((addrs, keep)) => {
                    self.resolutions += 1;
                    tracing::info!(%name, addresses = ?addrs, ttl_s = keep.as_secs(), "resolved");
                    let old = self
                        .names
                        .insert(name.to_string(), (addrs.clone(), now + keep));
                    changed |= old.map(|(a, _)| a) != Some(addrs);
                }
                Err(e) => {
                    self.failures += 1;
                    tracing::warn!(error = %e, "DNS resolution failed; keeping what was learned before");
                    let entry = self
                        .names
                        .entry(name.to_string())
                        .or_insert_with(|| (Vec::new(), now));
                    entry.1 = now + RETRY;
                }
            }
        }
        changed
    }

    /// Whether a name of `plan` is due at `now`: one never asked about (a reload added it) or
    /// one whose answer has run out.
    pub fn due(&self, plan: &Plan, now: Instant) -> bool {
        plan.dns
            .iter()
            .any(|d| self.names.get(&d.name).is_none_or(|(_, at)| *at <= now))
    }

    /// Takes up the addresses a previous run learned, from the plan it left in force (`old`:
    /// the state file's), for the names of `base` (the registry compiled now): the exact
    /// entries of a name's service on its ports that `base` itself does not have. They stay in
    /// force until the name is asked again (due at once), and through failures, as any learned
    /// address; a restart then withdraws nothing that DNS still gives.
    pub fn seed(&mut self, old: &Plan, base: &Plan, now: Instant) {
        let own: std::collections::BTreeSet<&Match> =
            base.entries.iter().map(|e| &e.matcher).collect();
        for d in &base.dns {
            let mut addrs: Vec<IpAddr> = old
                .entries
                .iter()
                .filter(|e| e.service == d.service && !own.contains(&e.matcher))
                .filter_map(|e| match e.matcher {
                    Match::Ip {
                        addr,
                        port,
                        protocol,
                    } if d.ports.contains(&(port, protocol)) => Some(addr),
                    _ => None,
                })
                .collect();
            addrs.sort();
            addrs.dedup();
            if !addrs.is_empty() {
                self.names.insert(d.name.clone(), (addrs, now));
            }
        }
    }

    /// `plan` with the learned addresses added as exact entries of their services.
    pub fn apply_to(&self, plan: &Plan) -> Plan {
        let mut out = plan.clone();
        let mut seen: std::collections::BTreeSet<Match> =
            out.entries.iter().map(|e| e.matcher.clone()).collect();
        for d in &plan.dns {
            let Some((addrs, _)) = self.names.get(&d.name) else {
                continue;
            };
            for addr in addrs {
                for (port, protocol) in &d.ports {
                    let m = Match::Ip {
                        addr: *addr,
                        port: *port,
                        protocol: *protocol,
                    };
                    // An address the registry itself gives decides; DNS only adds.
                    if seen.insert(m.clone()) {
                        out.entries.push(Entry {
                            matcher: m,
                            service_id: d.service_id,
                            service: d.service.clone(),
                            verdict: d.verdict.on(*protocol),
                        });
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DnsName, Verdict, L4};

    fn dns_plan(static_addr: Option<&str>) -> Plan {
        let mut p = Plan {
            dns: vec![DnsName {
                name: "db.example.com".into(),
                service_id: 0,
                service: "default/db/db.example.com".into(),
                ports: vec![(5432, L4::Tcp)],
                verdict: Verdict::Pass,
            }],
            ..Plan::default()
        };
        if let Some(a) = static_addr {
            p.entries.push(Entry {
                matcher: Match::Ip {
                    addr: a.parse().unwrap(),
                    port: 5432,
                    protocol: L4::Tcp,
                },
                service_id: 0,
                service: "default/db/db.example.com".into(),
                verdict: Verdict::Pass,
            });
        }
        p
    }

    #[test]
    fn learned_addresses_of_a_redirecting_service_pass_on_udp() {
        let mut plan = dns_plan(None);
        plan.dns[0].verdict = Verdict::Redirect;
        plan.dns[0].ports = vec![(53, L4::Udp), (53, L4::Tcp)];
        let mut learned = Learned::default();
        learned.names.insert(
            "db.example.com".into(),
            (vec!["10.9.0.1".parse().unwrap()], Instant::now()),
        );
        let got: Vec<(L4, Verdict)> = learned
            .apply_to(&plan)
            .entries
            .iter()
            .map(|e| (e.matcher.l4(), e.verdict))
            .collect();
        assert_eq!(
            got,
            vec![(L4::Udp, Verdict::Pass), (L4::Tcp, Verdict::Redirect)]
        );
    }

    #[test]
    fn a_restart_keeps_the_addresses_learned_before() {
        let base = dns_plan(None);
        let now = Instant::now();
        let mut before = Learned::default();
        before.names.insert(
            "db.example.com".into(),
            (
                vec!["10.9.0.1".parse().unwrap(), "10.9.0.2".parse().unwrap()],
                now,
            ),
        );
        // What the previous run left in force, plus an address the registry gives itself now.
        let old = before.apply_to(&base);
        let base = dns_plan(Some("10.9.0.2"));
        let mut after = Learned::default();
        assert!(after.due(&base, now), "a name never asked is due");
        after.seed(&old, &base, now);
        assert_eq!(
            after.names["db.example.com"].0,
            vec!["10.9.0.1".parse::<IpAddr>().unwrap()],
            "learned addresses are taken up, the registry's own are not"
        );
        let effective = after.apply_to(&base);
        assert_eq!(effective.entries.len(), 2);
        assert!(
            after.due(&base, now),
            "seeded names are asked again at once"
        );
        assert!(!after.due(&base, now - Duration::from_secs(1)));
        // A name of the new plan that the old one did not have stays unlearned, and due.
        let mut other = base.clone();
        other.dns[0].name = "db2.example.com".into();
        other.dns[0].service = "default/db/db2.example.com".into();
        let mut fresh = Learned::default();
        fresh.seed(&old, &other, now);
        assert!(fresh.names.is_empty());
        assert!(fresh.due(&other, now - Duration::from_secs(1)));
    }

    #[test]
    fn answers_with_addresses_and_ttl_parse() {
        let q = question(7, "api.example.com", 1);
        let mut a = q.clone();
        a[2] |= 0x80;
        a[7] = 1; // one answer
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 1, 2, 3]);
        let (addrs, ttl) = parse_answer(&a, 7).unwrap();
        assert_eq!(addrs, vec![IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))]);
        assert_eq!(ttl, 30);
        assert!(parse_answer(&a, 8).is_err(), "another id is not our answer");
        assert!(
            parse_answer(&a[..20], 7).is_err() || parse_answer(&a[..20], 7).unwrap().0.is_empty()
        );
    }
}
