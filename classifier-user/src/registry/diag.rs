//! Problems found in a registry, and where they are.

use std::{fmt, sync::Arc};

use super::{de::ShapeError, path::FieldPath, yaml::Mark, yaml::YamlError};

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The registry is invalid.
    Error,
    /// Valid, but probably not what was meant (Istio warns here too).
    Warning,
    /// Information, such as a skipped document.
    Note,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        })
    }
}

/// Why a host name is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty name")]
    Empty,
    #[error("longer than 255 characters")]
    TooLong,
    #[error("label {label:?} is not a DNS-1123 label")]
    BadLabel { label: String },
    #[error("top-level domain {tld:?} is all-numeric")]
    NumericTld { tld: String },
}

/// Everything the reader, the validator and the compiler can report.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(transparent)]
    Yaml(#[from] YamlError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("document is not a mapping")]
    NotAMapping,
    #[error("skipped: kind {kind:?} of apiVersion {api_version:?} is not part of the registry")]
    SkippedKind { kind: String, api_version: String },
    #[error("kind {kind:?} of apiVersion {api_version:?} is not read, and would leave its services out: {expected}")]
    MistypedKind {
        kind: String,
        api_version: String,
        expected: String,
    },
    #[error("is required")]
    Required,
    #[error("expected a string")]
    NotAString,
    #[error("{value} is not a port (1-65535)")]
    PortOutOfRange { value: u64 },
    #[error("more than {max} items")]
    TooManyItems { max: usize },
    #[error("{value} is larger than {max}")]
    NumberTooLarge { value: u64, max: u64 },
    #[error("longer than {max} characters")]
    TooLong { max: usize },
    #[error("annotation {annotation} is not supported on this kind")]
    UnsupportedAnnotation { annotation: String },
    #[error("annotation {annotation} asks to reject this resource")]
    AlwaysReject { annotation: String },

    #[error("a ServiceEntry needs at least one host")]
    NoHosts,
    #[error("`*` alone is not a valid host")]
    FullWildcardHost,
    #[error("{host:?} is not a valid host: {reason}")]
    InvalidHost { host: String, reason: HostError },
    #[error("partial wildcard {host:?}: only `*.` prefixes match as wildcards")]
    PartialWildcard { host: String },
    #[error("{address:?} is not an IP address or CIDR block")]
    InvalidAddress { address: String },
    #[error("CIDR addresses are allowed only with resolution NONE or STATIC")]
    CidrNeedsNoneOrStatic,
    #[error("a port may not be null")]
    NullPort,
    #[error("port name {name:?} is used twice")]
    DuplicatePortName { name: String },
    #[error("port {number} is used twice")]
    DuplicatePortNumber { number: u64 },
    #[error("{name:?} is not a valid port name (DNS-1123 label)")]
    InvalidPortName { name: String },
    #[error("unsupported protocol {protocol:?}")]
    UnsupportedProtocol { protocol: String },
    #[error("addresses are required for ports serving TCP (or unset) protocol when IP auto-allocation does not apply (resolution NONE)")]
    TcpPortWithoutAddresses,
    #[error("only one of workloadSelector and endpoints may be set")]
    SelectorAndEndpoints,
    #[error("no endpoints may be given with resolution NONE")]
    EndpointsWithResolutionNone,
    #[error("workloadSelector should not be set with resolution NONE (Istio warns too): the workloads it selects are the service's endpoints, and its ports are not captured whole")]
    SelectorWithResolutionNone,
    #[error("workload selector without labels: it selects every workload in the namespace")]
    SelectorWithoutLabels,
    #[error("empty key is not allowed in a selector")]
    SelectorEmptyKey,
    #[error("wildcard is not supported in selector: {key}={value}")]
    SelectorWildcard { key: String, value: String },
    #[error("invalid label key {key:?}")]
    InvalidLabelKey { key: String },
    #[error("invalid label value {value:?}")]
    InvalidLabelValue { value: String },
    #[error("an endpoint may not be null")]
    NullEndpoint,
    #[error("address is required (or network)")]
    AddressRequired,
    #[error("address is unset with network {network:?}")]
    AddressUnsetWithNetwork { network: String },
    #[error("{path:?} is not an absolute path to a socket file or an abstract socket (@name)")]
    InvalidUnixPath { path: String },
    #[error("unix endpoint {address} must not include ports")]
    UnixWithPorts { address: String },
    #[error("exactly one service port is required with unix endpoints")]
    UnixNeedsOneServicePort,
    #[error("endpoint address {address:?} is not a valid IP address")]
    EndpointNotIp { address: String },
    #[error("endpoint address {address:?} is not a valid FQDN or IP address")]
    EndpointNotIpOrFqdn { address: String },
    #[error("endpoint port name {name:?} is not a port of the service entry")]
    UndefinedEndpointPort { name: String },
    #[error("hosts must be FQDNs when no endpoints are given with resolution {resolution}: {host:?}: {reason}")]
    HostNotFqdn {
        resolution: &'static str,
        host: String,
        reason: HostError,
    },
    #[error("resolution DNS_ROUND_ROBIN takes at most one endpoint")]
    RoundRobinEndpoints,
    #[error("more than one host with addresses and a TCP port: the hosts cannot be told apart")]
    ManyHostsWithAddressAndTcp,
    #[error("resolution DYNAMIC_DNS needs at least one wildcard host")]
    DynamicDnsNoHosts,
    #[error("host {host:?} must be a wildcard with resolution DYNAMIC_DNS")]
    DynamicDnsHostNotWildcard { host: String },
    #[error("addresses cannot be set with resolution DYNAMIC_DNS")]
    DynamicDnsAddresses,
    #[error("endpoints cannot be set with resolution DYNAMIC_DNS")]
    DynamicDnsEndpoints,
    #[error("only HTTP, TLS, GRPC and HTTP2 ports are supported with resolution DYNAMIC_DNS, not {protocol:?}")]
    DynamicDnsProtocol { protocol: String },
    #[error(
        "location MESH_INTERNAL with resolution DYNAMIC_DNS is not supported when using waypoints"
    )]
    DynamicDnsInternalWaypoint,
    #[error("several hosts with a non-HTTP, non-TLS port need resolution NONE")]
    ManyHostsNonHttpTls,
    #[error("{value:?} is not a location (MESH_EXTERNAL, MESH_INTERNAL)")]
    InvalidLocation { value: String },
    #[error("{value:?} is not a resolution (NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS)")]
    InvalidResolution { value: String },
    #[error("duplicate entry {entry:?} in exportTo")]
    ExportToDuplicate { entry: String },
    #[error("exportTo has both `.` and the current namespace {namespace}")]
    ExportToDotAndNamespace { namespace: String },
    #[error("{entry:?} is not `.`, `*`, `~` or a namespace name")]
    ExportToInvalid { entry: String },
    #[error("exportTo cannot mix `*` with other entries")]
    ExportToPublicAndOthers,
    #[error("exportTo cannot mix `~` (no one) with other entries")]
    ExportToNoneAndOthers,
    #[error("defined twice; first at {first}")]
    Duplicate { first: String },
    #[error("{value:?} is not an IP address")]
    InvalidIp { value: String },
    #[error("{value:?} is not an RFC 3339 time (2024-01-31T08:00:00Z)")]
    InvalidTimestamp { value: String },

    #[error("resolution NONE without addresses on {protocol} port {port}: every destination on this port belongs to this service (Istio does the same)")]
    PortCapture { port: u16, protocol: &'static str },
    #[error("{what} on port {port} is claimed by {winner} and by {loser}; {winner} wins")]
    Conflict {
        what: String,
        port: u16,
        winner: String,
        loser: String,
    },
    #[error("MESH_INTERNAL host {host:?} has neither addresses nor endpoints, so it is matched by name only (port {port}): a connection is known by its name only after its handshake, too late to move it to the proxy, and passes straight to the address it went to (addresses, endpoints or a selector let it be redirected)")]
    InternalByName { host: String, port: u16 },
    #[error("host {host:?} has a partial wildcard: no name entry is made for it")]
    NameSkipped { host: String },
    #[error("endpoint address {address:?} is a name, which resolution {resolution} does not resolve: no entry is made for it")]
    NameEndpointNotResolved {
        address: String,
        resolution: &'static str,
    },
}

/// One problem, where it is and how serious it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: Arc<str>,
    pub mark: Option<Mark>,
    /// `Kind namespace/name` of the resource, when known.
    pub resource: Option<String>,
    pub path: FieldPath,
    pub problem: Problem,
}

impl Diagnostic {
    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(m) = self.mark {
            write!(f, ":{m}")?;
        }
        f.write_str(": ")?;
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.problem)
    }
}
