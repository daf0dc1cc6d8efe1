//! Compiling a validated registry into the dataplane plan: a pure function.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::plan::{
    CompileOptions, DnsName, Entry, Location, Match, Plan, Service, ServiceKind, ServicePort,
    Verdict, L4,
};

use super::{
    diag::{Diagnostic, Problem, Severity},
    model::{
        KubeTarget, Labels, Meta, NamedPorts, Protocol, Registry, Resolution, SePort,
        ServiceAddress, ServiceEntry, Workload, WorkloadAddress,
    },
    path::FieldPath,
};

/// How a service ranks when two claim the same match: lower wins.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// Kubernetes Services (0) before ServiceEntries (1).
    kind: u8,
    /// Missing timestamps sort last (newest).
    missing_timestamp: bool,
    /// Nanoseconds since the epoch, UTC: instants compare, not their spellings.
    timestamp: i128,
    namespace: String,
    name: String,
    /// Position of the host in the ServiceEntry's `hosts`.
    host_index: usize,
}

struct Builder<'r> {
    options: CompileOptions,
    services: Vec<Service>,
    ranks: Vec<Rank>,
    origins: Vec<&'r Meta>,
    /// Best claim of each match: (rank index = service id).
    claims: BTreeMap<Match, u32>,
    /// Losing claims, reported as warnings: (match, winner, loser).
    conflicts: Vec<(Match, u32, u32)>,
    /// Matches a Kubernetes Service's endpoints claimed: shared without a warning.
    quiet: BTreeSet<Match>,
    dns: BTreeMap<(String, u32), BTreeSet<(u16, L4)>>,
    warnings: Vec<Diagnostic>,
}

impl<'r> Builder<'r> {
    /// The verdict of service `id`'s entries (before `Verdict::on` their protocol).
    fn verdict_of(&self, id: u32) -> Verdict {
        verdict_for(&self.services[id as usize], self.options)
    }

    fn add_service(&mut self, service: Service, rank: Rank, meta: &'r Meta) -> u32 {
        let id = u32::try_from(self.services.len()).unwrap_or(u32::MAX);
        let mut service = service;
        service.id = id;
        self.services.push(service);
        self.ranks.push(rank);
        self.origins.push(meta);
        id
    }

    fn claim(&mut self, m: Match, id: u32) {
        match self.claims.get(&m).copied() {
            None => {
                self.claims.insert(m, id);
            }
            Some(current) if current == id => {}
            // Two hosts of one ServiceEntry share its addresses, endpoints and captures: the
            // first host keeps them, as in Istio, and that is no conflict to report.
            Some(current)
                if std::ptr::eq(self.origins[current as usize], self.origins[id as usize]) => {}
            Some(current) => {
                let (winner, loser) = if self.rank(id) < self.rank(current) {
                    (id, current)
                } else {
                    (current, id)
                };
                self.claims.insert(m.clone(), winner);
                if !self.quiet.contains(&m) {
                    self.conflicts.push((m, winner, loser));
                }
            }
        }
    }

    /// As [`Self::claim`], without a conflict to report: a Kubernetes Service's endpoints,
    /// which other Services (a StatefulSet's headless one beside its ClusterIP one) and
    /// ServiceEntries that select the same pods share as a matter of course.
    fn claim_quietly(&mut self, m: Match, id: u32) {
        self.quiet.insert(m.clone());
        self.claim(m, id);
    }

    fn rank(&self, id: u32) -> &Rank {
        &self.ranks[id as usize]
    }

    fn warn(&mut self, meta: &Meta, resource: String, path: FieldPath, problem: Problem) {
        self.warnings.push(Diagnostic {
            severity: Severity::Warning,
            file: meta.origin.file.clone(),
            mark: Some(meta.origin.mark),
            resource: Some(resource),
            path,
            problem,
        });
    }
}

fn rank_of(kind: u8, meta: &Meta, host_index: usize) -> Rank {
    Rank {
        kind,
        missing_timestamp: meta.creation_timestamp.is_none(),
        timestamp: meta.creation_timestamp.unwrap_or_default(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        host_index,
    }
}

/// Workloads that a selector picks: (labels, addresses, named ports).
struct Candidate<'r> {
    labels: &'r Labels,
    address: &'r WorkloadAddress,
    ports: &'r NamedPorts,
    /// The named ports a UDP `targetPort` name resolves to (a pod's UDP container ports; a
    /// WorkloadEntry's one map).
    udp_ports: &'r NamedPorts,
}

/// The workloads of one namespace, indexed by label for selectors.
struct NamespaceIndex<'r> {
    candidates: Vec<Candidate<'r>>,
    by_label: HashMap<(&'r str, &'r str), Vec<usize>>,
}

impl<'r> NamespaceIndex<'r> {
    fn new(candidates: Vec<Candidate<'r>>) -> Self {
        let mut by_label: HashMap<(&'r str, &'r str), Vec<usize>> = HashMap::new();
        for (i, c) in candidates.iter().enumerate() {
            for (k, v) in c.labels.iter() {
                by_label
                    .entry((k.as_str(), v.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        NamespaceIndex {
            candidates,
            by_label,
        }
    }

    /// The workloads whose labels include all of `selector`'s, in a stable order.
    fn select(&self, selector: &Labels) -> Vec<(&'r WorkloadAddress, &'r NamedPorts)> {
        self.select_with(selector, |c| (c.address, c.ports))
    }

    /// As [`Self::select`], each workload given as `pick` takes it.
    fn select_with<T>(&self, selector: &Labels, pick: impl Fn(&Candidate<'r>) -> T) -> Vec<T> {
        if selector.is_empty() {
            return self.candidates.iter().map(&pick).collect();
        }
        // Start from the rarest label of the selector, then check the others.
        let mut smallest: Option<&Vec<usize>> = None;
        for (k, v) in selector.iter() {
            match self.by_label.get(&(k.as_str(), v.as_str())) {
                None => return Vec::new(),
                Some(list) => {
                    if smallest.map(|s| list.len() < s.len()).unwrap_or(true) {
                        smallest = Some(list);
                    }
                }
            }
        }
        smallest
            .into_iter()
            .flatten()
            .map(|&i| &self.candidates[i])
            .filter(|c| selects(selector, c.labels))
            .map(pick)
            .collect()
    }
}

fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The port a workload receives a service port's traffic on.
fn endpoint_port(port: &SePort, workload_ports: &NamedPorts) -> u16 {
    workload_ports
        .get(&port.name)
        .copied()
        .or(port.target_port)
        .unwrap_or(port.number)
}

/// Compiles `registry` into the plan; deterministic for a given registry.
pub fn compile(registry: &Registry, options: CompileOptions) -> Plan {
    let mut b = Builder {
        options,
        services: Vec::new(),
        ranks: Vec::new(),
        origins: Vec::new(),
        claims: BTreeMap::new(),
        conflicts: Vec::new(),
        quiet: BTreeSet::new(),
        dns: BTreeMap::new(),
        warnings: Vec::new(),
    };

    // Workloads by namespace, in a stable order, for selectors.
    let mut by_namespace: HashMap<&str, Vec<Candidate<'_>>> = HashMap::new();
    let mut workload_entries: Vec<_> = registry.workload_entries.iter().collect();
    workload_entries
        .sort_by(|a, b| (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)));
    for we in &workload_entries {
        by_namespace
            .entry(we.meta.namespace.as_str())
            .or_default()
            .push(Candidate {
                labels: &we.workload.labels,
                address: &we.workload.address,
                ports: &we.workload.ports,
                udp_ports: &we.workload.ports,
            });
    }
    let mut pods: Vec<_> = registry.pods.iter().filter(|p| p.ready).collect();
    pods.sort_by(|a, b| (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)));
    let pod_addresses: Vec<Vec<WorkloadAddress>> = pods
        .iter()
        .map(|p| p.ips.iter().map(|ip| WorkloadAddress::Ip(*ip)).collect())
        .collect();
    for (p, addrs) in pods.iter().zip(&pod_addresses) {
        for a in addrs {
            by_namespace
                .entry(p.meta.namespace.as_str())
                .or_default()
                .push(Candidate {
                    labels: &p.meta.labels,
                    address: a,
                    ports: &p.ports,
                    udp_ports: &p.udp_ports,
                });
        }
    }

    let index: HashMap<&str, NamespaceIndex<'_>> = by_namespace
        .into_iter()
        .map(|(ns, candidates)| (ns, NamespaceIndex::new(candidates)))
        .collect();

    // Kubernetes Services first, then ServiceEntries, each in namespace/name order.
    let mut kube: Vec<_> = registry.services.iter().collect();
    kube.sort_by(|a, b| (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)));
    for svc in kube {
        let host = format!("{}.{}.svc.cluster.local", svc.meta.name, svc.meta.namespace);
        let service = Service {
            id: 0,
            kind: ServiceKind::KubernetesService,
            namespace: svc.meta.namespace.clone(),
            name: svc.meta.name.clone(),
            host,
            location: Location::MeshInternal,
            resolution: "STATIC".to_owned(),
            ports: svc
                .ports
                .iter()
                .map(|p| ServicePort {
                    number: p.port,
                    name: p.name.clone(),
                    protocol: p.protocol.to_owned(),
                    target_port: match p.target {
                        Some(KubeTarget::Number(n)) => Some(n),
                        _ => None,
                    },
                })
                .collect(),
            addresses: svc.cluster_ips.iter().map(|ip| ip.to_string()).collect(),
        };
        let id = b.add_service(service, rank_of(0, &svc.meta, 0), &svc.meta);
        for ip in &svc.cluster_ips {
            for p in &svc.ports {
                b.claim(
                    Match::Ip {
                        addr: *ip,
                        port: p.port,
                        protocol: p.l4,
                    },
                    id,
                );
            }
        }
        // Its endpoints, as its EndpointSlices list them: the namespace's workloads its
        // selector picks, on the target port (a name: the workload's port of that name; one
        // without it is no endpoint of that port). A headless Service has these only.
        let selected = svc
            .selector
            .as_ref()
            .and_then(|sel| {
                index
                    .get(svc.meta.namespace.as_str())
                    .map(|ns| ns.select_with(sel, |c| (c.address, c.ports, c.udp_ports)))
            })
            .unwrap_or_default();
        for (address, tcp_ports, udp_ports) in selected {
            let WorkloadAddress::Ip(addr) = address else {
                continue;
            };
            for p in &svc.ports {
                let port = match &p.target {
                    None => Some(p.port),
                    Some(KubeTarget::Number(n)) => Some(*n),
                    // A name resolves among the container ports of the port's protocol.
                    Some(KubeTarget::Name(name)) => match p.l4 {
                        L4::Udp => udp_ports.get(name).copied(),
                        L4::Tcp => tcp_ports.get(name).copied(),
                    },
                };
                if let Some(port) = port {
                    b.claim_quietly(
                        Match::Ip {
                            addr: *addr,
                            port,
                            protocol: p.l4,
                        },
                        id,
                    );
                }
            }
        }
    }

    let mut entries: Vec<&ServiceEntry> = registry.service_entries.iter().collect();
    entries
        .sort_by(|a, b| (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)));
    for se in entries {
        let selected: Vec<(&WorkloadAddress, &NamedPorts)> = match &se.selector {
            // With resolution NONE too: Istio selects workloads whatever the resolution, and
            // gives a NONE entry with a selector a listener per selected workload, not the
            // whole port.
            Some(selector) => index
                .get(se.meta.namespace.as_str())
                .map(|ns| ns.select(selector))
                .unwrap_or_default(),
            None => se
                .endpoints
                .iter()
                .map(|w: &Workload| (&w.address, &w.ports))
                .collect(),
        };
        compile_service_entry(&mut b, se, &selected);
    }

    // Conflicts become warnings; each pair of services is reported once per match kind.
    let conflicts = std::mem::take(&mut b.conflicts);
    let mut reported: BTreeSet<(u32, u32, &'static str, u16)> = BTreeSet::new();
    for (m, winner, loser) in conflicts {
        let (what, port) = describe(&m);
        if !reported.insert((winner, loser, what.0, port)) {
            continue;
        }
        let loser_meta = b.origins[loser as usize];
        let resource = resource_name(&b.services[loser as usize]);
        let problem = Problem::Conflict {
            what: what.1,
            port,
            winner: b.services[winner as usize].key(),
            loser: b.services[loser as usize].key(),
        };
        b.warn(loser_meta, resource, FieldPath::default(), problem);
    }

    let claims = std::mem::take(&mut b.claims);
    let mut entries: Vec<Entry> = claims
        .into_iter()
        .map(|(m, id)| Entry {
            verdict: b.verdict_of(id).on(m.l4()),
            matcher: m,
            service_id: id,
            service: b.services[id as usize].key(),
        })
        .collect();
    entries.sort_by(|a, b| (&a.matcher, a.service_id).cmp(&(&b.matcher, b.service_id)));
    // In the order in which services win conflicts: where two names resolve to one address
    // on one port, the address goes to the first (`daemon::dns::Learned::apply_to`), as a
    // conflict between addresses the registry gives would.
    let mut dns: Vec<DnsName> = b
        .dns
        .into_iter()
        .map(|((name, id), ports)| DnsName {
            name,
            service_id: id,
            service: b.services[id as usize].key(),
            ports: ports.into_iter().collect(),
            verdict: verdict_for(&b.services[id as usize], options),
        })
        .collect();
    dns.sort_by(|x, y| {
        (&b.ranks[x.service_id as usize], &x.name).cmp(&(&b.ranks[y.service_id as usize], &y.name))
    });
    Plan {
        services: b.services,
        entries,
        dns,
        warnings: b.warnings.iter().map(|d| d.to_string()).collect(),
    }
}

fn verdict_for(service: &Service, options: CompileOptions) -> Verdict {
    match service.location {
        Location::MeshInternal => Verdict::Redirect,
        Location::MeshExternal => options.external,
    }
}

fn resource_name(s: &Service) -> String {
    match s.kind {
        ServiceKind::ServiceEntry => format!("ServiceEntry {}/{}", s.namespace, s.name),
        ServiceKind::KubernetesService => format!("Service {}/{}", s.namespace, s.name),
    }
}

fn describe(m: &Match) -> ((&'static str, String), u16) {
    match m {
        Match::Ip {
            addr,
            port,
            protocol,
        } => (("ip", format!("{protocol:?} {addr}").to_lowercase()), *port),
        Match::Cidr {
            cidr,
            port,
            protocol,
        } => (
            (
                "cidr",
                format!("{:?} {}/{}", protocol, cidr.addr, cidr.len).to_lowercase(),
            ),
            *port,
        ),
        Match::Sni { name, port } => (("sni", format!("SNI {name}")), *port),
        Match::Host { name, port } => (("host", format!("HTTP host {name}")), *port),
        Match::Port { port, protocol } => (
            (
                "port",
                format!(
                    "every {} destination",
                    format!("{protocol:?}").to_uppercase()
                ),
            ),
            *port,
        ),
    }
}

fn compile_service_entry<'r>(
    b: &mut Builder<'r>,
    se: &'r ServiceEntry,
    selected: &[(&WorkloadAddress, &NamedPorts)],
) {
    let resource = format!("ServiceEntry {}/{}", se.meta.namespace, se.meta.name);
    let ports: Vec<ServicePort> = se
        .ports
        .iter()
        .map(|p| ServicePort {
            number: p.number,
            name: p.name.clone(),
            protocol: p.protocol.name().to_owned(),
            target_port: p.target_port,
        })
        .collect();
    let dns_resolution = matches!(se.resolution, Resolution::Dns | Resolution::DnsRoundRobin);
    // Neither inline endpoints nor a selector (a selector that picks none still counts).
    let no_endpoints = se.selector.is_none() && se.endpoints.is_empty();
    let mut warned_capture = BTreeSet::new();
    let mut warned_by_name = BTreeSet::new();
    for (host_index, raw_host) in se.hosts.iter().enumerate() {
        let host = raw_host.trim_end_matches('.').to_ascii_lowercase();
        let service = Service {
            id: 0,
            kind: ServiceKind::ServiceEntry,
            namespace: se.meta.namespace.clone(),
            name: se.meta.name.clone(),
            host: host.clone(),
            location: se.location,
            resolution: se.resolution.name().to_owned(),
            ports: ports.clone(),
            addresses: se.address_text.clone(),
        };
        let id = b.add_service(service, rank_of(1, &se.meta, host_index), &se.meta);

        let name_ok = !host.contains('*') || (host.starts_with("*.") && !host[2..].contains('*'));
        if !name_ok {
            b.warn(
                &se.meta,
                resource.clone(),
                FieldPath::root("spec").key("hosts").index(host_index),
                Problem::NameSkipped {
                    host: raw_host.clone(),
                },
            );
        }
        // A DNS service without endpoints resolves its own host (not a wildcard).
        let resolves_itself = dns_resolution && no_endpoints && !host.contains('*');
        // Bound to DNS: a host resolved itself is known by the addresses DNS returned (exact
        // entries the daemon adds), never by its name alone.
        let bound = b.options.bind_names_to_dns && resolves_itself;
        let by_name = se.addresses.is_empty() && !bound;
        // Known by name only: no address, endpoint, selector or resolved host to redirect by.
        let only_by_name = se.addresses.is_empty() && no_endpoints && !dns_resolution;
        for p in &se.ports {
            let l4 = p.protocol.l4();
            // Service addresses, with the service port number.
            for a in &se.addresses {
                let m = match a {
                    ServiceAddress::Ip(ip) => Match::Ip {
                        addr: *ip,
                        port: p.number,
                        protocol: l4,
                    },
                    ServiceAddress::Cidr(c) => Match::Cidr {
                        cidr: *c,
                        port: p.number,
                        protocol: l4,
                    },
                };
                b.claim(m, id);
            }
            // Names. TLS (and undeclared) ports match by SNI only when the entry has no
            // addresses: Istio binds their listener to the addresses when there are some, and
            // matches server names only on a listener without one (or on a CIDR, where it
            // asks for both, which one entry cannot say: the CIDR decides). HTTP ports match by
            // Host whatever the addresses, as Istio's HTTP listener is the port's, on every
            // address. An undeclared port with addresses is the addresses'.
            let tcp_names = name_ok && l4 == L4::Tcp;
            let sni =
                tcp_names && by_name && (p.protocol.is_tls() || p.protocol == Protocol::Unset);
            let http_host = tcp_names
                && !bound
                && (p.protocol.is_http() || (by_name && p.protocol == Protocol::Unset));
            if (sni || http_host)
                && only_by_name
                && se.location == Location::MeshInternal
                && warned_by_name.insert(host_index)
            {
                b.warn(
                    &se.meta,
                    resource.clone(),
                    FieldPath::root("spec").key("hosts").index(host_index),
                    Problem::InternalByName {
                        host: host.clone(),
                        port: p.number,
                    },
                );
            }
            if sni {
                b.claim(
                    Match::Sni {
                        name: host.clone(),
                        port: p.number,
                    },
                    id,
                );
            }
            if http_host {
                b.claim(
                    Match::Host {
                        name: host.clone(),
                        port: p.number,
                    },
                    id,
                );
            }
            // Whole-port capture: resolution NONE with neither addresses nor endpoints, on a
            // port Istio serves with a TCP listener and no name (TCP, undeclared, and the TCP
            // protocols it proxies as TCP).
            if se.resolution == Resolution::None
                && se.addresses.is_empty()
                && no_endpoints
                && p.protocol.captured_whole()
            {
                b.claim(
                    Match::Port {
                        port: p.number,
                        protocol: l4,
                    },
                    id,
                );
                if warned_capture.insert(p.number) {
                    b.warn(
                        &se.meta,
                        resource.clone(),
                        FieldPath::root("spec").key("ports"),
                        Problem::PortCapture {
                            port: p.number,
                            protocol: if p.protocol == Protocol::Unset {
                                "undeclared-protocol"
                            } else {
                                p.protocol.name()
                            },
                        },
                    );
                }
            }
            // Endpoints.
            for (address, wports) in selected {
                let eport = endpoint_port(p, wports);
                match address {
                    WorkloadAddress::Ip(ip) => b.claim(
                        Match::Ip {
                            addr: *ip,
                            port: eport,
                            protocol: l4,
                        },
                        id,
                    ),
                    WorkloadAddress::Name(name) if dns_resolution => {
                        b.dns
                            .entry((name.clone(), id))
                            .or_default()
                            .insert((eport, l4));
                    }
                    WorkloadAddress::Name(_)
                    | WorkloadAddress::Unix(_)
                    | WorkloadAddress::Unset => {}
                }
            }
            if resolves_itself {
                let set = b.dns.entry((host.clone(), id)).or_default();
                set.insert((p.number, l4));
                if let Some(t) = p.target_port {
                    set.insert((t, l4));
                }
            }
        }
    }
    if !dns_resolution {
        for (address, _) in selected {
            if let WorkloadAddress::Name(name) = address {
                b.warn(
                    &se.meta,
                    resource.clone(),
                    FieldPath::root("spec"),
                    Problem::NameEndpointNotResolved {
                        address: name.clone(),
                        resolution: se.resolution.name(),
                    },
                );
            }
        }
    }
}
