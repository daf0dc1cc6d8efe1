//! The dataplane plan: what the maps must hold, compiled from the registry.
//!
//! A plan is plain data with nothing left to decide in the kernel. The registry compiler
//! (`crate::registry`) produces it; the map writer (`crate::dataplane`) and the reference model
//! (`crate::model`) consume it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Layer-4 protocol of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            L4::Tcp => classifier_common::proto::TCP,
            L4::Udp => classifier_common::proto::UDP,
        }
    }
}

/// What an entry does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Deliver the connection to the node's proxy (mesh-internal services).
    Redirect,
    /// Let it through (registered external services).
    Pass,
}

impl Verdict {
    /// As labels, tables and the plan's JSON spell it (`redirect`, `pass`).
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Redirect => "redirect",
            Verdict::Pass => "pass",
        }
    }

    /// The verdict a service's `self` gives its destinations of protocol `l4`: UDP is never
    /// redirected. The node's proxy, like Istio's sidecar (whose capture is TCP's), has no
    /// transparent UDP listener, and a REDIRECT that finds no socket drops the datagram: a
    /// mesh-internal service's UDP port (a cluster's DNS Service among them) would go dark.
    /// It passes, still known as the service's.
    pub fn on(self, l4: L4) -> Verdict {
        match (self, l4) {
            (Verdict::Redirect, L4::Udp) => Verdict::Pass,
            (v, _) => v,
        }
    }

    /// The kernel's verdict code.
    pub fn code(self) -> u8 {
        match self {
            Verdict::Redirect => classifier_common::verdict::REDIRECT,
            Verdict::Pass => classifier_common::verdict::PASS,
        }
    }
}

/// Where a service lives, as Istio's `location`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    MeshExternal,
    MeshInternal,
}

impl Location {
    /// As Istio, the plan's JSON and `compile` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Location::MeshExternal => "MESH_EXTERNAL",
            Location::MeshInternal => "MESH_INTERNAL",
        }
    }
}

/// Where a service came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ServiceKind {
    ServiceEntry,
    KubernetesService,
}

/// One logical service: one (ServiceEntry, host), or one Kubernetes Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Index of this service in [`Plan::services`]; the kernel's service id.
    pub id: u32,
    pub kind: ServiceKind,
    pub namespace: String,
    /// The resource's `metadata.name`.
    pub name: String,
    /// The host (ServiceEntry) or `<name>.<namespace>.svc.cluster.local` (Kubernetes Service).
    pub host: String,
    pub location: Location,
    /// Istio's resolution, upper case (`NONE`, `STATIC`, `DNS`, ...).
    pub resolution: String,
    pub ports: Vec<ServicePort>,
    /// `spec.addresses` (or cluster IPs), as written.
    pub addresses: Vec<String>,
}

impl Service {
    /// `namespace/name/host`, how entries and events name their service.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.name, self.host)
    }
}

/// A service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub number: u16,
    pub name: String,
    /// Istio protocol, upper case; empty when undeclared.
    pub protocol: String,
    pub target_port: Option<u16>,
}

/// An IP network: address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cidr {
    /// Network address, host bits zero.
    #[serde(rename = "address")]
    pub addr: IpAddr,
    pub len: u8,
}

/// What an entry matches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Match {
    /// Exact destination IP, port and protocol.
    Ip {
        #[serde(rename = "address")]
        addr: IpAddr,
        port: u16,
        protocol: L4,
    },
    /// Destination in a CIDR, on a port and protocol.
    Cidr { cidr: Cidr, port: u16, protocol: L4 },
    /// TLS SNI, lower case, exact or `*.` wildcard, on a TCP port.
    Sni { name: String, port: u16 },
    /// HTTP Host (HTTP/1.x) or `:authority` (HTTP/2), lower case, exact or `*.` wildcard.
    Host { name: String, port: u16 },
    /// Every destination on a port (resolution NONE, no addresses or endpoints; TCP, MONGO,
    /// REDIS, MYSQL or undeclared).
    Port { port: u16, protocol: L4 },
}

impl Match {
    /// The transport protocol the match is on (names are TCP's).
    pub fn l4(&self) -> L4 {
        match self {
            Match::Ip { protocol, .. }
            | Match::Cidr { protocol, .. }
            | Match::Port { protocol, .. } => *protocol,
            Match::Sni { .. } | Match::Host { .. } => L4::Tcp,
        }
    }
}

/// One map entry and what it decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "match")]
    pub matcher: Match,
    /// Service id (index into [`Plan::services`]).
    pub service_id: u32,
    /// `namespace/name/host` of the service, for people and scripts.
    pub service: String,
    pub verdict: Verdict,
}

/// A name the daemon must resolve, whose addresses become exact entries of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsName {
    pub name: String,
    pub service_id: u32,
    pub service: String,
    /// (port, protocol) pairs the resolved addresses get entries for.
    pub ports: Vec<(u16, L4)>,
    pub verdict: Verdict,
}

/// A compiled registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub services: Vec<Service>,
    pub entries: Vec<Entry>,
    pub dns: Vec<DnsName>,
    /// Warnings from validation and compilation, one line each (file:line:col: ...).
    pub warnings: Vec<String>,
}

/// Settings that shape the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    /// Verdict for MESH_EXTERNAL services (Istio's: pass straight out).
    pub external: Verdict,
    /// A service whose own host is resolved by DNS (resolution DNS or DNS_ROUND_ROBIN, no
    /// endpoints or selector) is matched by the addresses DNS returned only, not by its name:
    /// a TLS SNI or HTTP Host of it sent to any other address is not its (SEMANTICS.md, "where
    /// the project goes beyond Istio": SNI and Host spoofing).
    pub bind_names_to_dns: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            external: Verdict::Pass,
            bind_names_to_dns: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Verdict;

    /// `Verdict::name` is the plan's JSON spelling.
    #[test]
    fn a_verdict_is_named_as_the_plan_spells_it() {
        for v in [Verdict::Redirect, Verdict::Pass] {
            assert_eq!(
                serde_json::to_string(&v).unwrap(),
                format!("\"{}\"", v.name())
            );
        }
    }
}
