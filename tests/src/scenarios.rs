//! The connections the demo and the end-to-end tests make through the lab, with what Istio's
//! semantics say should happen to each under each outbound policy.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use crate::lab::{addr, Lab, Outcome, TCP_PORT};

/// How a probe talks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Tls(&'static str),
    Http(&'static str),
    /// HTTP/2 with prior knowledge by curl, with this authority.
    H2c(&'static str),
    Udp,
}

/// One probe and its expected verdicts.
#[derive(Clone, Debug)]
pub struct Probe {
    pub what: &'static str,
    pub dst: SocketAddr,
    pub kind: Kind,
    /// Expected verdict word under ALLOW_ANY and under REGISTRY_ONLY (reject).
    pub allow_any: &'static str,
    pub registry_only: &'static str,
}

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("literal"), port)
}

/// The probes, in the order they are shown.
pub fn probes() -> Vec<Probe> {
    use Kind::*;
    vec![
        Probe {
            what: "customers.com VIP",
            dst: sa(addr::CUSTOMERS_VIP, 80),
            kind: Tcp,
            allow_any: "redirect",
            registry_only: "redirect",
        },
        Probe {
            what: "customers-vm-1",
            dst: sa(addr::VM1, 80),
            kind: Tcp,
            allow_any: "redirect",
            registry_only: "redirect",
        },
        Probe {
            what: "customers-vm-2",
            dst: sa(addr::VM2, 80),
            kind: Tcp,
            allow_any: "redirect",
            registry_only: "redirect",
        },
        Probe {
            what: "customers pod",
            dst: sa(addr::POD, 80),
            kind: Tcp,
            allow_any: "redirect",
            registry_only: "redirect",
        },
        Probe {
            what: "api.external-svc.com (TLS)",
            dst: sa(addr::API, 443),
            kind: Tls("api.external-svc.com"),
            allow_any: "pass",
            registry_only: "pass",
        },
        Probe {
            what: "api.external-svc.com (TLS, v6)",
            dst: sa(addr::API6, 443),
            kind: Tls("api.external-svc.com"),
            allow_any: "pass",
            registry_only: "pass",
        },
        Probe {
            what: "api.external-svc.com (HTTP Host)",
            dst: sa(addr::API, 80),
            kind: Http("api.external-svc.com"),
            allow_any: "pass",
            registry_only: "pass",
        },
        Probe {
            what: "dns.external.lab (UDP)",
            dst: sa(addr::UDP_EXTERNAL, 53),
            kind: Udp,
            allow_any: "pass",
            registry_only: "pass",
        },
        Probe {
            what: "unknown name (TLS)",
            dst: sa(addr::UNKNOWN, 443),
            kind: Tls("unknown.example"),
            allow_any: "pass",
            registry_only: "reject",
        },
        Probe {
            what: "api.external-svc.com by SNI, other IP",
            dst: sa(addr::UNKNOWN, 443),
            kind: Tls("api.external-svc.com"),
            allow_any: "pass",
            registry_only: "pass",
        },
        Probe {
            what: "api.external-svc.com by Host, other IP",
            dst: sa(addr::UNKNOWN, 80),
            kind: Http("api.external-svc.com"),
            allow_any: "pass",
            registry_only: "pass",
        },
        Probe {
            what: "unknown host (HTTP Host)",
            dst: sa(addr::UNKNOWN, 80),
            kind: Http("unknown.example"),
            allow_any: "pass",
            registry_only: "reject",
        },
        Probe {
            what: "api.external-svc.com by h2c, other IP",
            dst: sa(addr::UNKNOWN, 80),
            kind: H2c("api.external-svc.com"),
            allow_any: "pass",
            registry_only: "pass",
        },
        Probe {
            what: "unknown host (h2c, curl)",
            dst: sa(addr::UNKNOWN, 80),
            kind: H2c("unknown.example"),
            allow_any: "pass",
            registry_only: "reject",
        },
        Probe {
            what: "unknown IP (TCP)",
            dst: sa(addr::UNKNOWN, TCP_PORT),
            kind: Tcp,
            allow_any: "pass",
            registry_only: "reject",
        },
        Probe {
            what: "unknown IP (TCP, v6)",
            dst: sa(addr::UNKNOWN6, TCP_PORT),
            kind: Tcp,
            allow_any: "pass",
            registry_only: "reject",
        },
        Probe {
            what: "unknown IP (UDP)",
            dst: sa(addr::UNKNOWN, 53),
            kind: Udp,
            allow_any: "pass",
            registry_only: "reject",
        },
        Probe {
            what: "unknown IP (UDP, v6)",
            dst: sa(addr::UNKNOWN6, 53),
            kind: Udp,
            allow_any: "pass",
            registry_only: "reject",
        },
    ]
}

/// Whether only a name stage can give this probe its expected verdict.
pub fn needs_names(p: &Probe, registry_only: bool) -> bool {
    let exact_by_dns = [addr::API, addr::API6]
        .iter()
        .any(|a| a.parse::<std::net::IpAddr>().ok() == Some(p.dst.ip()));
    registry_only
        && matches!(p.kind, Kind::Tls(_) | Kind::Http(_) | Kind::H2c(_))
        && p.registry_only == "pass"
        && !exact_by_dns
}

/// What one probe did.
#[derive(Clone, Debug)]
pub struct Row {
    pub probe: Probe,
    pub expected: &'static str,
    pub outcome: Outcome,
    pub took: Duration,
    pub stage: String,
    pub service: String,
}

impl Row {
    /// Whether what happened is what Istio's semantics say.
    pub fn ok(&self) -> bool {
        if self.outcome.word() != self.expected {
            return false;
        }
        match &self.outcome {
            // A redirected connection must reach the proxy with its original destination.
            Outcome::Proxy(orig) => *orig == self.probe.dst,
            // A rejected one must fail fast.
            Outcome::Rejected(t) => *t < Duration::from_secs(1),
            _ => true,
        }
    }
}

/// Runs every probe from the workload; stage and service come from the daemon's flow table.
pub fn run(lab: &Lab, meshclass: &Path, registry_only: bool) -> Vec<Row> {
    let timeout = Duration::from_millis(1500);
    let mut rows = Vec::new();
    for p in probes() {
        let start = Instant::now();
        let outcome = match p.kind {
            Kind::Tcp => lab.tcp(p.dst, timeout),
            Kind::Tls(sni) => lab.tls(p.dst, sni, timeout),
            Kind::Http(host) => lab.http(p.dst, host, timeout),
            Kind::H2c(authority) => lab.curl_h2c(p.dst, authority, timeout),
            Kind::Udp => lab.udp(p.dst, timeout),
        };
        let took = start.elapsed();
        let (stage, service) = flow_of(lab, meshclass, p.dst, matches!(p.kind, Kind::Udp));
        rows.push(Row {
            expected: if registry_only {
                p.registry_only
            } else {
                p.allow_any
            },
            probe: p,
            outcome,
            took,
            stage,
            service,
        });
    }
    rows
}

/// The stage and service of the newest flow to `dst` in the pinned flow table.
pub fn flow_of(lab: &Lab, meshclass: &Path, dst: SocketAddr, udp: bool) -> (String, String) {
    let pin = lab.pin_dir.display().to_string();
    let out = match lab.meshclass(
        meshclass,
        &["inspect", "flows", "--json", "--pin-dir", &pin],
    ) {
        Ok(o) => o,
        Err(_) => return ("?".into(), "?".into()),
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let proto = if udp { "udp" } else { "tcp" };
    // `inspect flows` lists the newest decision first.
    let found = v.as_array().and_then(|flows| {
        flows.iter().find(|f| {
            f["dst"].as_str() == Some(&dst.to_string()) && f["protocol"].as_str() == Some(proto)
        })
    });
    match found {
        Some(f) => (
            f["stage"].as_str().unwrap_or("?").to_string(),
            f["service"].as_str().unwrap_or("?").to_string(),
        ),
        None => ("-".into(), "-".into()),
    }
}

/// The rows as an aligned table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<40} {:<22} {:<9} {:<10} {:<8} {:<46} {}\n",
        "DESTINATION", "ADDRESS", "EXPECTED", "OBSERVED", "STAGE", "SERVICE", ""
    );
    for r in rows {
        let observed = match &r.outcome {
            Outcome::Rejected(t) => format!("reject {}ms", t.as_millis()),
            o => o.word().to_string(),
        };
        out.push_str(&format!(
            "{:<40} {:<22} {:<9} {:<10} {:<8} {:<46} {}\n",
            r.probe.what,
            r.probe.dst.to_string(),
            r.expected,
            observed,
            r.stage,
            r.service,
            if r.ok() { "ok" } else { "MISMATCH" }
        ));
        if !r.ok() {
            out.push_str(&format!("    observed: {:?}\n", r.outcome));
        }
    }
    out
}
