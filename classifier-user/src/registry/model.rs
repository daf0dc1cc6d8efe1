//! Validated registry resources: what the compiler works from.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use crate::plan::{Cidr, Location, L4};

use super::yaml::Mark;

/// A small map kept as one sorted vector: far smaller than a `BTreeMap` for a few entries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SmallMap<V>(Vec<(String, V)>);

impl<V> Default for SmallMap<V> {
    fn default() -> Self {
        SmallMap(Vec::new())
    }
}

impl<V> SmallMap<V> {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Sets `key` to `value`, replacing an older value.
    pub fn insert(&mut self, key: String, value: V) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<V> From<BTreeMap<String, V>> for SmallMap<V> {
    fn from(map: BTreeMap<String, V>) -> Self {
        let mut v: Vec<(String, V)> = map.into_iter().collect();
        v.shrink_to_fit();
        SmallMap(v)
    }
}

/// Labels of a resource or selector.
pub type Labels = SmallMap<String>;

/// Ports by name.
pub type NamedPorts = SmallMap<u16>;

/// Where a resource was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    pub mark: Mark,
}

/// Metadata shared by every resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// RFC 3339, as nanoseconds since the Unix epoch (UTC); `None` sorts as the newest.
    pub creation_timestamp: Option<i128>,
    pub origin: Origin,
}

/// Istio's port protocol names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// Not declared: Istio sniffs it (HTTP and TLS capable).
    Unset,
    Tcp,
    Udp,
    Grpc,
    GrpcWeb,
    Http,
    HttpProxy,
    Http2,
    Https,
    Tls,
    Mongo,
    Redis,
    Mysql,
}

impl Protocol {
    /// Parses a protocol name, ignoring case; `None` for an unknown name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "" => Protocol::Unset,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http" => Protocol::Http,
            "http_proxy" => Protocol::HttpProxy,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => return None,
        })
    }

    /// The canonical upper-case name; empty for [`Protocol::Unset`].
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Unset => "",
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-WEB",
            Protocol::Http => "HTTP",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Http2 => "HTTP2",
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
            Protocol::Mongo => "MONGO",
            Protocol::Redis => "REDIS",
            Protocol::Mysql => "MYSQL",
        }
    }

    /// True for protocols carried over HTTP.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    /// True for protocols on top of TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// True for protocols Istio counts as plain TCP transport.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Tcp
                | Protocol::Https
                | Protocol::Tls
                | Protocol::Mongo
                | Protocol::Redis
                | Protocol::Mysql
        )
    }

    /// True for the ports whose every destination a ServiceEntry of resolution NONE without
    /// addresses or endpoints captures: those Istio serves with a TCP listener on the port
    /// that matches no name (TCP, MONGO, REDIS, MYSQL), and undeclared ones.
    pub fn captured_whole(self) -> bool {
        matches!(
            self,
            Protocol::Unset | Protocol::Tcp | Protocol::Mongo | Protocol::Redis | Protocol::Mysql
        )
    }

    /// The transport protocol of entries for this port.
    pub fn l4(self) -> L4 {
        if self == Protocol::Udp {
            L4::Udp
        } else {
            L4::Tcp
        }
    }
}

/// Istio's resolution modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resolution {
    None,
    Static,
    Dns,
    DnsRoundRobin,
    DynamicDns,
}

impl Resolution {
    /// Parses the exact upper-case name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "NONE" => Resolution::None,
            "STATIC" => Resolution::Static,
            "DNS" => Resolution::Dns,
            "DNS_ROUND_ROBIN" => Resolution::DnsRoundRobin,
            "DYNAMIC_DNS" => Resolution::DynamicDns,
            _ => return None,
        })
    }

    /// The upper-case name.
    pub fn name(self) -> &'static str {
        match self {
            Resolution::None => "NONE",
            Resolution::Static => "STATIC",
            Resolution::Dns => "DNS",
            Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
            Resolution::DynamicDns => "DYNAMIC_DNS",
        }
    }
}

/// A service address: one IP (also a /32 or /128) or a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceAddress {
    Ip(IpAddr),
    Cidr(Cidr),
}

/// A ServiceEntry port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SePort {
    pub number: u16,
    pub name: String,
    pub protocol: Protocol,
    pub target_port: Option<u16>,
}

/// Where a workload is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadAddress {
    Ip(IpAddr),
    /// A DNS name, lower case.
    Name(String),
    /// A unix socket path (`unix://` stripped).
    Unix(String),
    /// No address (only a network).
    Unset,
}

/// A workload: a WorkloadEntry's spec or a ServiceEntry's inline endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub address: WorkloadAddress,
    pub ports: NamedPorts,
    pub labels: Labels,
    pub network: Option<String>,
    pub locality: Option<String>,
    pub weight: Option<u32>,
    pub service_account: Option<String>,
}

/// A validated ServiceEntry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub meta: Meta,
    /// As written (case kept); the compiler lower-cases them.
    pub hosts: Vec<String>,
    pub addresses: Vec<ServiceAddress>,
    /// `spec.addresses` as written.
    pub address_text: Vec<String>,
    pub ports: Vec<SePort>,
    pub location: Location,
    pub resolution: Resolution,
    pub endpoints: Vec<Workload>,
    pub selector: Option<Labels>,
    pub export_to: Vec<String>,
    pub subject_alt_names: Vec<String>,
}

/// A validated WorkloadEntry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadEntry {
    pub meta: Meta,
    /// `labels` here are `spec.labels` merged with `metadata.labels` (metadata wins).
    pub workload: Workload,
}

/// A Kubernetes Pod, as an endpoint candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub meta: Meta,
    pub ips: Vec<IpAddr>,
    pub ready: bool,
    /// Named TCP container ports (what a ServiceEntry's port name and a Service's TCP
    /// `targetPort` name resolve to).
    pub ports: NamedPorts,
    /// Named UDP container ports (a Service's UDP `targetPort` name).
    pub udp_ports: NamedPorts,
}

/// A Kubernetes Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubePort {
    pub name: String,
    pub port: u16,
    pub l4: L4,
    /// Istio protocol from `appProtocol` or the name prefix; empty when unknown.
    pub protocol: &'static str,
    /// Where its endpoints receive it: `targetPort`, a number or a named port of theirs
    /// (`None`: the port's own number).
    pub target: Option<KubeTarget>,
}

/// A Service port's `targetPort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeTarget {
    Number(u16),
    Name(String),
}

/// A Kubernetes Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeService {
    pub meta: Meta,
    /// None for a headless Service (`clusterIP: None`).
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<KubePort>,
    /// Selects its endpoints among the namespace's Pods and WorkloadEntries; `None` when it
    /// has none (or an empty one): its endpoints are kept elsewhere.
    pub selector: Option<Labels>,
}

/// Every resource read, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registry {
    pub service_entries: Vec<ServiceEntry>,
    pub workload_entries: Vec<WorkloadEntry>,
    pub pods: Vec<Pod>,
    pub services: Vec<KubeService>,
}

impl Registry {
    /// Number of resources held.
    pub fn len(&self) -> usize {
        self.service_entries.len()
            + self.workload_entries.len()
            + self.pods.len()
            + self.services.len()
    }

    /// True when no resource is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
