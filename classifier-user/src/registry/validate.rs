//! Istio's admission rules for ServiceEntry and WorkloadEntry, and the conversion of the raw
//! serde types into the validated model.
//!
//! The rules follow Istio's webhook (`pkg/config/validation`) and the checks of its CRD schema;
//! errors make a resource invalid, warnings do not.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
    sync::Arc,
};

use crate::plan::{Cidr, Location, L4};

use super::{
    diag::{Diagnostic, HostError, Problem, Severity},
    model::{
        KubePort, KubeService, KubeTarget, Labels, Meta, Pod, Protocol, Resolution, SePort,
        ServiceAddress, ServiceEntry, Workload, WorkloadAddress, WorkloadEntry,
    },
    path::FieldPath,
    raw::{RawIntOrString, RawMeta, RawPod, RawService, RawServiceEntrySpec, RawWorkloadEntrySpec},
    yaml::Node,
};

const UNIX_PREFIX: &str = "unix://";
const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";
const ALWAYS_REJECT_ANNOTATION: &str = "internal.istio.io/webhook-always-reject";
const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
const AUTO_ALLOCATE_LABEL: &str = "networking.istio.io/enable-autoallocate-ip";

/// Collects the diagnostics of one resource, placing each at its field.
pub struct Ctx<'a> {
    pub file: &'a Arc<str>,
    /// The resource's node: field paths are found from here.
    pub root: &'a Node,
    pub resource: String,
    pub out: Vec<Diagnostic>,
}

impl<'a> Ctx<'a> {
    /// A context for the resource at `root`.
    pub fn new(file: &'a Arc<str>, root: &'a Node, resource: String) -> Self {
        Ctx {
            file,
            root,
            resource,
            out: Vec::new(),
        }
    }

    fn push(&mut self, severity: Severity, path: FieldPath, problem: Problem) {
        let d = Diagnostic {
            severity,
            file: self.file.clone(),
            mark: Some(path.locate(self.root)),
            resource: Some(self.resource.clone()),
            path,
            problem,
        };
        if !self.out.contains(&d) {
            self.out.push(d);
        }
    }

    /// Records an error.
    pub fn error(&mut self, path: FieldPath, problem: Problem) {
        self.push(Severity::Error, path, problem);
    }

    /// Records a warning.
    pub fn warn(&mut self, path: FieldPath, problem: Problem) {
        self.push(Severity::Warning, path, problem);
    }

    /// True when an error was recorded.
    pub fn has_errors(&self) -> bool {
        self.out.iter().any(Diagnostic::is_error)
    }
}

/// A DNS-1123 label: 1 to 63 letters, digits and `-`, starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn is_wildcard_label(s: &str) -> bool {
    if s.len() > 63 {
        return false;
    }
    if s == "*" {
        return true;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    is_dns1123_label(rest)
}

fn is_go_int(s: &str) -> bool {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) && s.parse::<i64>().is_ok()
}

fn check_dns_labels(domain: &str) -> Result<(), HostError> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts.last().copied().unwrap_or("");
    if is_go_int(tld) {
        return Err(HostError::NumericTld {
            tld: tld.to_owned(),
        });
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(HostError::BadLabel {
                label: (*label).to_owned(),
            });
        }
    }
    Ok(())
}

fn check_name_length(name: &str) -> Result<(), HostError> {
    if name.len() > 255 {
        Err(HostError::TooLong)
    } else if name.is_empty() {
        Err(HostError::Empty)
    } else {
        Ok(())
    }
}

/// Checks a fully qualified domain name (no wildcard).
pub fn check_fqdn(name: &str) -> Result<(), HostError> {
    check_name_length(name)?;
    check_dns_labels(name)
}

/// Checks a domain name whose first label may be a wildcard.
pub fn check_wildcard_domain(name: &str) -> Result<(), HostError> {
    check_name_length(name)?;
    let (first, rest) = match name.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (name, None),
    };
    if !is_wildcard_label(first) {
        return Err(HostError::BadLabel {
            label: first.to_owned(),
        });
    }
    match rest {
        Some(rest) => check_dns_labels(rest),
        None => Ok(()),
    }
}

/// Parses an IP address written without zone or leading zeros.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// Parses an IP or a CIDR block; a /32 or /128 is an IP; host bits are cleared.
pub fn parse_service_address(s: &str) -> Option<ServiceAddress> {
    if s.matches('/').count() != 1 {
        return parse_ip(s).map(ServiceAddress::Ip);
    }
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    if len.is_empty()
        || !len.bytes().all(|c| c.is_ascii_digit())
        || (len.len() > 1 && len.starts_with('0'))
    {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return None;
    }
    if len == max {
        return Some(ServiceAddress::Ip(ip));
    }
    Some(ServiceAddress::Cidr(Cidr {
        addr: mask(ip, len),
        len,
    }))
}

/// Clears the host bits of `ip` beyond prefix length `len`.
pub fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

fn is_qualified_name(s: &str) -> bool {
    // (?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if p.len() > 253 || !p.split('.').all(is_dns1123_label) {
            return false;
        }
    }
    is_qualified_name(name) && name.len() <= 63
}

fn is_label_value(v: &str) -> bool {
    v.is_empty() || is_qualified_name(v)
}

fn check_labels(ctx: &mut Ctx<'_>, path: &FieldPath, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        if !is_label_key(k) {
            ctx.error(path.key(k), Problem::InvalidLabelKey { key: k.clone() });
        }
        if !is_label_value(v) {
            ctx.error(path.key(k), Problem::InvalidLabelValue { value: v.clone() });
        }
    }
}

fn check_port(ctx: &mut Ctx<'_>, path: FieldPath, value: u64) -> Option<u16> {
    match u16::try_from(value) {
        Ok(p) if p != 0 => Some(p),
        _ => {
            ctx.error(path, Problem::PortOutOfRange { value });
            None
        }
    }
}

fn check_count<T>(ctx: &mut Ctx<'_>, path: &FieldPath, items: &[T], max: usize) {
    if items.len() > max {
        ctx.error(path.clone(), Problem::TooManyItems { max });
    }
}

fn check_len(ctx: &mut Ctx<'_>, path: FieldPath, s: &str, max: usize) {
    if s.len() > max {
        ctx.error(path, Problem::TooLong { max });
    }
}

/// Checks annotations that Istio's webhook applies to every kind it validates.
pub fn check_meta_annotations(ctx: &mut Ctx<'_>, meta: &RawMeta) {
    if let Some(ann) = &meta.annotations {
        let path = FieldPath::root("metadata").key("annotations");
        if ann.contains_key(DRY_RUN_ANNOTATION) {
            ctx.error(
                path.key(DRY_RUN_ANNOTATION),
                Problem::UnsupportedAnnotation {
                    annotation: DRY_RUN_ANNOTATION.to_owned(),
                },
            );
        }
        if ann.contains_key(ALWAYS_REJECT_ANNOTATION) {
            ctx.error(
                path.key(ALWAYS_REJECT_ANNOTATION),
                Problem::AlwaysReject {
                    annotation: ALWAYS_REJECT_ANNOTATION.to_owned(),
                },
            );
        }
    }
}

/// How an endpoint address must look.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AddressRule {
    /// A WorkloadEntry: IP, FQDN or unix socket.
    IpOrName,
    /// A STATIC endpoint: IP or unix socket.
    IpOnly,
}

/// Converts a workload spec, checking it as Istio does for WorkloadEntries and STATIC endpoints.
fn workload(
    ctx: &mut Ctx<'_>,
    path: &FieldPath,
    raw: &RawWorkloadEntrySpec,
    service_ports: Option<&BTreeSet<String>>,
    rule: AddressRule,
) -> Option<Workload> {
    let before = ctx.out.len();
    let addr = raw.address.as_deref().unwrap_or("");
    let network = raw.network.as_deref().unwrap_or("");
    let apath = path.key("address");
    check_len(ctx, apath.clone(), addr, 256);
    let mut address = WorkloadAddress::Unset;
    if addr.is_empty() {
        if network.is_empty() {
            ctx.error(apath.clone(), Problem::AddressRequired);
            return None;
        }
        ctx.warn(
            apath.clone(),
            Problem::AddressUnsetWithNetwork {
                network: network.to_owned(),
            },
        );
    }
    let ports = raw.ports.clone().unwrap_or_default();
    if let Some(socket) = addr.strip_prefix(UNIX_PREFIX) {
        check_unix(ctx, &apath, socket);
        if raw.ports.is_some() {
            ctx.error(
                path.key("ports"),
                Problem::UnixWithPorts {
                    address: addr.to_owned(),
                },
            );
        }
        address = WorkloadAddress::Unix(socket.to_owned());
    } else if !addr.is_empty() {
        match parse_ip(addr) {
            Some(ip) => address = WorkloadAddress::Ip(ip),
            None if rule == AddressRule::IpOnly => ctx.error(
                apath.clone(),
                Problem::EndpointNotIp {
                    address: addr.to_owned(),
                },
            ),
            None => match check_fqdn(addr) {
                Ok(()) => address = WorkloadAddress::Name(addr.to_ascii_lowercase()),
                Err(_) => ctx.error(
                    apath.clone(),
                    Problem::EndpointNotIpOrFqdn {
                        address: addr.to_owned(),
                    },
                ),
            },
        }
    }
    let converted_ports = endpoint_ports(ctx, path, &ports, service_ports);
    let labels = raw.labels.clone().unwrap_or_default();
    check_labels(ctx, &path.key("labels"), &labels);
    if matches!(address, WorkloadAddress::Unix(_)) {
        if let Some(sp) = service_ports {
            if sp.len() != 1 {
                ctx.error(apath.clone(), Problem::UnixNeedsOneServicePort);
            }
        }
    }
    let weight = match raw.weight {
        Some(w) => match u32::try_from(w) {
            Ok(w) => Some(w),
            Err(_) => {
                ctx.error(
                    path.key("weight"),
                    Problem::NumberTooLarge {
                        value: w,
                        max: u64::from(u32::MAX),
                    },
                );
                None
            }
        },
        None => None,
    };
    if let Some(n) = &raw.network {
        check_len(ctx, path.key("network"), n, 2048);
    }
    if let Some(l) = &raw.locality {
        check_len(ctx, path.key("locality"), l, 2048);
    }
    if let Some(s) = &raw.service_account {
        check_len(ctx, path.key("serviceAccount"), s, 253);
    }
    if ctx.out[before..].iter().any(Diagnostic::is_error) {
        return None;
    }
    Some(Workload {
        address,
        ports: converted_ports.into(),
        labels: labels.into(),
        network: raw.network.clone(),
        locality: raw.locality.clone(),
        weight,
        service_account: raw.service_account.clone(),
    })
}

fn check_unix(ctx: &mut Ctx<'_>, apath: &FieldPath, socket: &str) {
    let ok = if socket.is_empty() {
        false
    } else if socket.starts_with('@') {
        true
    } else {
        socket.starts_with('/') && !socket.ends_with('/')
    };
    if !ok {
        ctx.error(
            apath.clone(),
            Problem::InvalidUnixPath {
                path: socket.to_owned(),
            },
        );
    }
}

fn endpoint_ports(
    ctx: &mut Ctx<'_>,
    path: &FieldPath,
    ports: &BTreeMap<String, u64>,
    service_ports: Option<&BTreeSet<String>>,
) -> BTreeMap<String, u16> {
    let ppath = path.key("ports");
    if ports.len() > 128 {
        ctx.error(ppath.clone(), Problem::TooManyItems { max: 128 });
    }
    let mut out = BTreeMap::new();
    for (name, value) in ports {
        let p = ppath.key(name);
        if let Some(sp) = service_ports {
            if !sp.contains(name) {
                ctx.error(
                    p.clone(),
                    Problem::UndefinedEndpointPort { name: name.clone() },
                );
            }
        }
        if !is_dns1123_label(name) {
            ctx.error(p.clone(), Problem::InvalidPortName { name: name.clone() });
        }
        if let Some(port) = check_port(ctx, p, *value) {
            out.insert(name.clone(), port);
        }
    }
    out
}

fn check_export_to(ctx: &mut Ctx<'_>, path: &FieldPath, namespace: &str, export_to: &[String]) {
    if export_to.is_empty() {
        return;
    }
    let mut set: HashSet<&str> = HashSet::new();
    for (i, e) in export_to.iter().enumerate() {
        let key = if e == "." { namespace } else { e.as_str() };
        if set.contains(key) {
            if key != e {
                ctx.error(
                    path.index(i),
                    Problem::ExportToDotAndNamespace {
                        namespace: namespace.to_owned(),
                    },
                );
            } else {
                ctx.error(
                    path.index(i),
                    Problem::ExportToDuplicate { entry: e.clone() },
                );
            }
        } else if e == "~" || e == "." || e == "*" || is_dns1123_label(key) {
            set.insert(key);
        } else {
            ctx.error(path.index(i), Problem::ExportToInvalid { entry: e.clone() });
        }
    }
    if set.contains("*") && export_to.len() > 1 {
        ctx.error(path.clone(), Problem::ExportToPublicAndOthers);
    }
    if set.contains("~") && export_to.len() > 1 {
        ctx.error(path.clone(), Problem::ExportToNoneAndOthers);
    }
}

fn uses_waypoint(labels: &Labels) -> bool {
    labels
        .get(USE_WAYPOINT_LABEL)
        .map(|v| !v.is_empty() && !v.eq_ignore_ascii_case("none"))
        .unwrap_or(false)
}

fn auto_allocates(labels: &Labels, resolution: Resolution, has_addresses: bool) -> bool {
    if resolution == Resolution::None || has_addresses {
        return false;
    }
    !labels
        .get(AUTO_ALLOCATE_LABEL)
        .map(|v| v.eq_ignore_ascii_case("false"))
        .unwrap_or(false)
}

/// Validates a ServiceEntry spec and converts it; `None` when it has errors.
pub fn service_entry(
    ctx: &mut Ctx<'_>,
    meta: Meta,
    spec: &RawServiceEntrySpec,
) -> Option<ServiceEntry> {
    let sp = FieldPath::root("spec");

    // Enumerations first: later rules depend on them.
    let resolution = match spec.resolution.as_deref() {
        None => Resolution::None,
        Some(r) => match Resolution::parse(r) {
            Some(r) => r,
            None => {
                ctx.error(
                    sp.key("resolution"),
                    Problem::InvalidResolution {
                        value: r.to_owned(),
                    },
                );
                Resolution::None
            }
        },
    };
    let location = match spec.location.as_deref() {
        None | Some("MESH_EXTERNAL") => Location::MeshExternal,
        Some("MESH_INTERNAL") => Location::MeshInternal,
        Some(other) => {
            ctx.error(
                sp.key("location"),
                Problem::InvalidLocation {
                    value: other.to_owned(),
                },
            );
            Location::MeshExternal
        }
    };

    // Workload selector.
    let selector_map = spec
        .workload_selector
        .as_ref()
        .map(|s| s.labels.clone().unwrap_or_default());
    if let Some(labels) = &selector_map {
        let lpath = sp.key("workloadSelector").key("labels");
        for (k, v) in labels {
            if k.is_empty() {
                ctx.error(lpath.key(k), Problem::SelectorEmptyKey);
            }
            if k.contains('*') || v.contains('*') {
                ctx.error(
                    lpath.key(k),
                    Problem::SelectorWildcard {
                        key: k.clone(),
                        value: v.clone(),
                    },
                );
            }
            check_len(ctx, lpath.key(k), v, 63);
        }
        if labels.is_empty() {
            ctx.warn(sp.key("workloadSelector"), Problem::SelectorWithoutLabels);
        }
        if labels.len() > 256 {
            ctx.error(lpath, Problem::TooManyItems { max: 256 });
        }
    }
    if spec.workload_selector.is_some() && spec.endpoints.is_some() {
        ctx.error(sp.key("endpoints"), Problem::SelectorAndEndpoints);
    }

    // Hosts.
    let hosts = spec.hosts.clone().unwrap_or_default();
    let hpath = sp.key("hosts");
    if hosts.is_empty() {
        ctx.error(hpath.clone(), Problem::NoHosts);
    }
    check_count(ctx, &hpath, &hosts, 256);
    for (i, h) in hosts.iter().enumerate() {
        if h == "*" {
            ctx.error(hpath.index(i), Problem::FullWildcardHost);
            continue;
        }
        if let Err(reason) = check_wildcard_domain(h) {
            ctx.error(
                hpath.index(i),
                Problem::InvalidHost {
                    host: h.clone(),
                    reason,
                },
            );
        }
        if resolution != Resolution::DynamicDns
            && h.contains('*')
            && h.len() != 1
            && !h.starts_with("*.")
        {
            ctx.warn(hpath.index(i), Problem::PartialWildcard { host: h.clone() });
        }
    }

    // Addresses.
    let address_text = spec.addresses.clone().unwrap_or_default();
    let apath = sp.key("addresses");
    check_count(ctx, &apath, &address_text, 256);
    let mut addresses = Vec::new();
    let mut cidr_found = false;
    for (i, a) in address_text.iter().enumerate() {
        cidr_found |= a.contains('/');
        check_len(ctx, apath.index(i), a, 64);
        match parse_service_address(a) {
            Some(addr) => addresses.push(addr),
            None => ctx.error(
                apath.index(i),
                Problem::InvalidAddress { address: a.clone() },
            ),
        }
    }
    if cidr_found && !matches!(resolution, Resolution::None | Resolution::Static) {
        ctx.error(apath.clone(), Problem::CidrNeedsNoneOrStatic);
    }

    // Ports.
    let raw_ports = spec.ports.clone().unwrap_or_default();
    let ppath = sp.key("ports");
    check_count(ctx, &ppath, &raw_ports, 256);
    let auto_allocation = auto_allocates(&meta.labels, resolution, !address_text.is_empty());
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut numbers: BTreeSet<u64> = BTreeSet::new();
    let mut ports = Vec::new();
    for (i, p) in raw_ports.iter().enumerate() {
        let path = ppath.index(i);
        let Some(p) = p else {
            ctx.error(path, Problem::NullPort);
            continue;
        };
        let name = p.name.clone().unwrap_or_default();
        let number = p.number.unwrap_or(0);
        let raw_protocol = p.protocol.clone().unwrap_or_default();
        if !names.insert(name.clone()) {
            ctx.error(
                path.key("name"),
                Problem::DuplicatePortName { name: name.clone() },
            );
        }
        if !numbers.insert(number) {
            ctx.error(path.key("number"), Problem::DuplicatePortNumber { number });
        }
        let target_port = match p.target_port {
            Some(0) | None => None,
            Some(t) => check_port(ctx, path.key("targetPort"), t),
        };
        if address_text.is_empty()
            && !auto_allocation
            && (raw_protocol.is_empty() || raw_protocol == "TCP")
        {
            ctx.warn(path.clone(), Problem::TcpPortWithoutAddresses);
        }
        if p.name.is_none() {
            ctx.error(path.key("name"), Problem::Required);
        } else if !is_dns1123_label(&name) {
            ctx.error(
                path.key("name"),
                Problem::InvalidPortName { name: name.clone() },
            );
        }
        let protocol = Protocol::parse(&raw_protocol);
        if protocol.is_none() {
            ctx.error(
                path.key("protocol"),
                Problem::UnsupportedProtocol {
                    protocol: raw_protocol.clone(),
                },
            );
        }
        let number16 = if p.number.is_none() {
            ctx.error(path.key("number"), Problem::Required);
            None
        } else {
            check_port(ctx, path.key("number"), number)
        };
        if let (Some(number), Some(protocol)) = (number16, protocol) {
            ports.push(SePort {
                number,
                name,
                protocol,
                target_port,
            });
        }
    }

    // Endpoints, and the rules of each resolution.
    let raw_endpoints = spec.endpoints.clone().unwrap_or_default();
    let epath = sp.key("endpoints");
    check_count(ctx, &epath, &raw_endpoints, 4096);
    let mut endpoints = Vec::new();
    match resolution {
        Resolution::None => {
            if !raw_endpoints.is_empty() {
                ctx.error(epath.clone(), Problem::EndpointsWithResolutionNone);
            }
            if spec.workload_selector.is_some() {
                ctx.warn(
                    sp.key("workloadSelector"),
                    Problem::SelectorWithResolutionNone,
                );
            }
        }
        Resolution::Static => {
            for (i, e) in raw_endpoints.iter().enumerate() {
                match e {
                    None => ctx.error(epath.index(i), Problem::NullEndpoint),
                    Some(e) => {
                        if let Some(w) =
                            workload(ctx, &epath.index(i), e, Some(&names), AddressRule::IpOnly)
                        {
                            endpoints.push(w);
                        }
                    }
                }
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            if raw_endpoints.is_empty() {
                for (i, h) in hosts.iter().enumerate() {
                    if let Err(reason) = check_fqdn(h) {
                        ctx.error(
                            hpath.index(i),
                            Problem::HostNotFqdn {
                                resolution: resolution.name(),
                                host: h.clone(),
                                reason,
                            },
                        );
                        break;
                    }
                }
            }
            if resolution == Resolution::DnsRoundRobin && raw_endpoints.len() > 1 {
                ctx.error(epath.clone(), Problem::RoundRobinEndpoints);
            }
            for (i, e) in raw_endpoints.iter().enumerate() {
                match e {
                    None => ctx.error(epath.index(i), Problem::NullEndpoint),
                    Some(e) => {
                        if let Some(w) = dns_endpoint(ctx, &epath.index(i), e, &names) {
                            endpoints.push(w);
                        }
                    }
                }
            }
            if !address_text.is_empty() && hosts.len() > 1 {
                let tcp = raw_ports.iter().flatten().any(|p| {
                    Protocol::parse(p.protocol.as_deref().unwrap_or(""))
                        .map(Protocol::is_tcp)
                        .unwrap_or(false)
                });
                if tcp {
                    ctx.warn(hpath.clone(), Problem::ManyHostsWithAddressAndTcp);
                }
            }
        }
        Resolution::DynamicDns => {
            if hosts.is_empty() {
                ctx.error(hpath.clone(), Problem::DynamicDnsNoHosts);
            }
            for (i, h) in hosts.iter().enumerate() {
                if !h.starts_with('*') {
                    ctx.error(
                        hpath.index(i),
                        Problem::DynamicDnsHostNotWildcard { host: h.clone() },
                    );
                }
            }
            if !address_text.is_empty() {
                ctx.error(apath.clone(), Problem::DynamicDnsAddresses);
            }
            if !raw_endpoints.is_empty() {
                ctx.error(epath.clone(), Problem::DynamicDnsEndpoints);
            }
            for (i, p) in raw_ports.iter().enumerate() {
                let Some(p) = p else { continue };
                let raw = p.protocol.as_deref().unwrap_or("");
                let ok = matches!(
                    Protocol::parse(raw),
                    Some(Protocol::Http | Protocol::Tls | Protocol::Grpc | Protocol::Http2)
                );
                if !ok {
                    ctx.error(
                        ppath.index(i).key("protocol"),
                        Problem::DynamicDnsProtocol {
                            protocol: raw.to_owned(),
                        },
                    );
                }
            }
            if location == Location::MeshInternal && uses_waypoint(&meta.labels) {
                ctx.error(sp.key("location"), Problem::DynamicDnsInternalWaypoint);
            }
        }
    }
    // CRD rules that hold whatever the resolution.
    if resolution != Resolution::Static
        && resolution != Resolution::Dns
        && resolution != Resolution::DnsRoundRobin
    {
        for (i, e) in raw_endpoints.iter().enumerate() {
            if let Some(e) = e {
                crd_endpoint_checks(ctx, &epath.index(i), e);
            }
        }
    }

    if resolution != Resolution::None && hosts.len() > 1 {
        let bad = raw_ports.iter().flatten().any(|p| {
            let proto = Protocol::parse(p.protocol.as_deref().unwrap_or(""));
            !matches!(proto, Some(pr) if pr.is_http() || pr.is_tls())
        });
        if bad {
            ctx.error(ppath.clone(), Problem::ManyHostsNonHttpTls);
        }
    }

    let export_to = spec.export_to.clone().unwrap_or_default();
    check_export_to(ctx, &sp.key("exportTo"), &meta.namespace, &export_to);

    if ctx.has_errors() {
        return None;
    }
    Some(ServiceEntry {
        meta,
        hosts,
        addresses,
        address_text,
        ports,
        location,
        resolution,
        endpoints,
        selector: selector_map.map(Labels::from),
        export_to,
        subject_alt_names: spec.subject_alt_names.clone().unwrap_or_default(),
    })
}

/// The CRD schema's checks of an endpoint (unix path syntax, address or network, ports).
fn crd_endpoint_checks(ctx: &mut Ctx<'_>, path: &FieldPath, e: &RawWorkloadEntrySpec) {
    let apath = path.key("address");
    if e.address.is_none() && e.network.is_none() {
        ctx.error(apath.clone(), Problem::AddressRequired);
    }
    let addr = e.address.as_deref().unwrap_or("");
    if let Some(socket) = addr.strip_prefix(UNIX_PREFIX) {
        check_unix(ctx, &apath, socket);
        if e.ports.is_some() {
            ctx.error(
                path.key("ports"),
                Problem::UnixWithPorts {
                    address: addr.to_owned(),
                },
            );
        }
    }
    let ports = e.ports.clone().unwrap_or_default();
    endpoint_ports(ctx, path, &ports, None);
    if let Some(w) = e.weight {
        if u32::try_from(w).is_err() {
            ctx.error(
                path.key("weight"),
                Problem::NumberTooLarge {
                    value: w,
                    max: u64::from(u32::MAX),
                },
            );
        }
    }
}

/// Converts an endpoint of a DNS or DNS_ROUND_ROBIN ServiceEntry.
fn dns_endpoint(
    ctx: &mut Ctx<'_>,
    path: &FieldPath,
    e: &RawWorkloadEntrySpec,
    service_ports: &BTreeSet<String>,
) -> Option<Workload> {
    let before = ctx.out.len();
    crd_endpoint_checks(ctx, path, e);
    let addr = e.address.as_deref().unwrap_or("");
    let address = match parse_ip(addr) {
        Some(ip) => WorkloadAddress::Ip(ip),
        None => {
            if check_fqdn(addr).is_err() {
                ctx.error(
                    path.key("address"),
                    Problem::EndpointNotIpOrFqdn {
                        address: addr.to_owned(),
                    },
                );
            }
            WorkloadAddress::Name(addr.to_ascii_lowercase())
        }
    };
    let labels = e.labels.clone().unwrap_or_default();
    check_labels(ctx, &path.key("labels"), &labels);
    let ports = endpoint_ports(
        ctx,
        path,
        &e.ports.clone().unwrap_or_default(),
        Some(service_ports),
    );
    if ctx.out[before..].iter().any(Diagnostic::is_error) {
        return None;
    }
    Some(Workload {
        address,
        ports: ports.into(),
        labels: labels.into(),
        network: e.network.clone(),
        locality: e.locality.clone(),
        weight: e.weight.and_then(|w| u32::try_from(w).ok()),
        service_account: e.service_account.clone(),
    })
}

/// Validates a WorkloadEntry spec and converts it; `None` when it has errors.
pub fn workload_entry(
    ctx: &mut Ctx<'_>,
    meta: Meta,
    spec: &RawWorkloadEntrySpec,
) -> Option<WorkloadEntry> {
    let sp = FieldPath::root("spec");
    let mut w = workload(ctx, &sp, spec, None, AddressRule::IpOrName)?;
    if ctx.has_errors() {
        return None;
    }
    // Metadata labels win over spec labels.
    for (k, v) in meta.labels.iter() {
        w.labels.insert(k.clone(), v.clone());
    }
    Some(WorkloadEntry { meta, workload: w })
}

/// An RFC 3339 time (`2024-01-01T10:00:00+02:00`, `...Z`, with or without a fraction) as
/// nanoseconds since the Unix epoch, UTC; `None` when it is not one.
pub fn rfc3339_ns(text: &str) -> Option<i128> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i128> {
        let d = b.get(r)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0i128, |n, c| n * 10 + i128::from(c - b'0')))
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > days_in[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || s > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac = 0i128;
    if sep(i, b".") {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        // Nanoseconds: the first nine digits, the rest dropped.
        let n = digits.min(9);
        frac = num(start..start + n)? * 10i128.pow((9 - n) as u32);
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        b'+' | b'-' if i + 6 == b.len() && sep(i + 3, b":") => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if b[i] == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian), from 1970-01-01.
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset;
    Some(secs * 1_000_000_000 + frac)
}

/// Converts a Pod; `None` when it has errors. A pod that terminates (`terminating`: its
/// `deletionTimestamp` is set) or has ended (phase `Succeeded` or `Failed`) is not ready: no
/// endpoint, as in Istio.
pub fn pod(ctx: &mut Ctx<'_>, meta: Meta, raw: &RawPod, terminating: bool) -> Option<Pod> {
    let status = raw.status.clone().unwrap_or_default();
    let mut ips = Vec::new();
    let spath = FieldPath::root("status");
    let mut texts: Vec<(FieldPath, String)> = Vec::new();
    if let Some(list) = &status.pod_ips {
        for (i, p) in list.iter().enumerate() {
            if let Some(ip) = &p.ip {
                texts.push((spath.key("podIPs").index(i).key("ip"), ip.clone()));
            }
        }
    }
    if texts.is_empty() {
        if let Some(ip) = &status.pod_ip {
            texts.push((spath.key("podIP"), ip.clone()));
        }
    }
    for (path, text) in texts {
        if text.is_empty() {
            continue;
        }
        match parse_ip(&text) {
            Some(ip) if !ips.contains(&ip) => ips.push(ip),
            Some(_) => {}
            None => ctx.error(path, Problem::InvalidIp { value: text }),
        }
    }
    let ready = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|c| c.kind.as_deref() == Some("Ready") && c.status.as_deref() == Some("True"))
        && !terminating
        && !matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    let (mut ports, mut udp_ports) = (BTreeMap::new(), BTreeMap::new());
    let cpath = FieldPath::root("spec").key("containers");
    for (ci, c) in raw
        .spec
        .as_ref()
        .and_then(|s| s.containers.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        for (pi, p) in c.ports.as_deref().unwrap_or_default().iter().enumerate() {
            let (Some(name), Some(number)) = (&p.name, p.container_port) else {
                continue;
            };
            // By protocol (TCP the default), as Istio's port map and Kubernetes do: a UDP
            // port of the same name would give a TCP service port the wrong number.
            let map = match p.protocol.as_deref() {
                None | Some("TCP") => &mut ports,
                Some("UDP") => &mut udp_ports,
                Some(_) => continue,
            };
            if let Some(port) = check_port(
                ctx,
                cpath.index(ci).key("ports").index(pi).key("containerPort"),
                number,
            ) {
                map.entry(name.clone()).or_insert(port);
            }
        }
    }
    if ctx.has_errors() {
        return None;
    }
    Some(Pod {
        meta,
        ips,
        ready,
        ports: ports.into(),
        udp_ports: udp_ports.into(),
    })
}

fn kube_protocol(name: &str, app_protocol: Option<&str>) -> &'static str {
    let candidate = app_protocol.unwrap_or_else(|| name.split('-').next().unwrap_or(""));
    match Protocol::parse(candidate) {
        Some(p) if p != Protocol::Udp => p.name(),
        _ => "",
    }
}

/// Converts a Kubernetes Service; `None` when it has errors.
pub fn kube_service(ctx: &mut Ctx<'_>, meta: Meta, raw: &RawService) -> Option<KubeService> {
    let spec = raw.spec.clone().unwrap_or_default();
    let sp = FieldPath::root("spec");
    let mut texts: Vec<(FieldPath, String)> = Vec::new();
    if let Some(list) = &spec.cluster_ips {
        for (i, ip) in list.iter().enumerate() {
            texts.push((sp.key("clusterIPs").index(i), ip.clone()));
        }
    }
    if texts.is_empty() {
        if let Some(ip) = &spec.cluster_ip {
            texts.push((sp.key("clusterIP"), ip.clone()));
        }
    }
    let mut cluster_ips = Vec::new();
    for (path, text) in texts {
        if text.is_empty() || text == "None" {
            continue;
        }
        match parse_ip(&text) {
            Some(ip) if !cluster_ips.contains(&ip) => cluster_ips.push(ip),
            Some(_) => {}
            None => ctx.error(path, Problem::InvalidIp { value: text }),
        }
    }
    let mut ports = Vec::new();
    for (i, p) in spec.ports.as_deref().unwrap_or_default().iter().enumerate() {
        let path = sp.key("ports").index(i);
        let Some(number) = p.port else {
            ctx.error(path.key("port"), Problem::Required);
            continue;
        };
        let Some(port) = check_port(ctx, path.key("port"), number) else {
            continue;
        };
        let l4 = match p.protocol.as_deref() {
            Some("UDP") => L4::Udp,
            _ => L4::Tcp,
        };
        let name = p.name.clone().unwrap_or_default();
        let protocol = kube_protocol(&name, p.app_protocol.as_deref());
        let target = match &p.target_port {
            None => None,
            // A negative number reads as 0: not a port either.
            Some(RawIntOrString::Int(n)) => {
                check_port(ctx, path.key("targetPort"), u64::try_from(*n).unwrap_or(0))
                    .map(KubeTarget::Number)
            }
            Some(RawIntOrString::Str(s)) if s.is_empty() => None,
            Some(RawIntOrString::Str(s)) => match s.parse::<u64>() {
                Ok(n) => check_port(ctx, path.key("targetPort"), n).map(KubeTarget::Number),
                Err(_) => Some(KubeTarget::Name(s.clone())),
            },
        };
        ports.push(KubePort {
            name,
            port,
            l4,
            protocol,
            target,
        });
    }
    if ctx.has_errors() {
        return None;
    }
    let selector = spec
        .selector
        .filter(|m| !m.is_empty())
        .map(|m| m.into_iter().collect::<BTreeMap<_, _>>().into());
    Some(KubeService {
        meta,
        cluster_ips,
        ports,
        selector,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(check_wildcard_domain("*.example.com").is_ok());
        assert!(check_wildcard_domain("*x").is_ok());
        assert!(check_wildcard_domain("foo").is_ok());
        assert!(check_wildcard_domain("-").is_err());
        assert!(check_wildcard_domain("a.*.com").is_err());
        assert!(matches!(
            check_fqdn("1.2.3.4"),
            Err(HostError::NumericTld { .. })
        ));
        assert!(check_fqdn("istio.io.").is_ok());
        assert!(check_fqdn("*.google.com").is_err());
        assert!(check_fqdn("invaliddns.com:9443").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_service_address("172.1.2.16/16"),
            Some(ServiceAddress::Cidr(Cidr {
                addr: "172.1.0.0".parse().expect("ip"),
                len: 16
            }))
        );
        assert_eq!(
            parse_service_address("10.0.0.1/32"),
            Some(ServiceAddress::Ip("10.0.0.1".parse().expect("ip")))
        );
        assert!(parse_service_address("001:db8::").is_some());
        assert!(parse_service_address("10.0.0.1/33").is_none());
        assert!(parse_service_address("a/b/c").is_none());
    }

    #[test]
    fn labels() {
        assert!(is_label_key("security.istio.io/tlsMode"));
        assert!(is_label_key("app"));
        assert!(!is_label_key(""));
        assert!(!is_label_key("-x"));
        assert!(is_label_value(""));
        assert!(!is_label_value("*"));
    }

    #[test]
    fn rfc3339_times_are_instants() {
        let t = |s: &str| rfc3339_ns(s);
        assert_eq!(t("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(t("2000-03-01T00:00:00Z"), Some(951_868_800 * 1_000_000_000));
        assert_eq!(
            t("2024-02-29T12:34:56.5Z"),
            Some(1_709_210_096 * 1_000_000_000 + 500_000_000)
        );
        // The same instant in two spellings; a later one written earlier in text.
        assert_eq!(t("2024-01-01T10:00:00+02:00"), t("2024-01-01T08:00:00Z"));
        assert!(t("2024-01-01T10:00:00+02:00") < t("2024-01-01T09:00:00Z"));
        assert_eq!(t("1969-12-31T23:59:59.123456789123z"), Some(-876_543_211));
        for bad in [
            "yesterday",
            "",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0200",
            "2024-01-01T00:00:00Zjunk",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }
}
