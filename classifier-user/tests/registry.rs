//! Registry reading, validation and compilation, on the project's own fixtures.

use std::{net::IpAddr, path::PathBuf, sync::Arc};

use meshclass::{
    plan::{CompileOptions, Location, Match, Plan, Verdict, L4},
    registry::{self, Limits, Loaded, Severity},
};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/registry")
        .join(rel)
}

fn load(paths: &[&str]) -> Loaded {
    let paths: Vec<PathBuf> = paths.iter().map(|p| fixture(p)).collect();
    registry::load_paths(&paths, &Limits::default()).expect("fixtures are readable")
}

fn load_text(text: &str) -> Loaded {
    let mut loaded = Loaded::default();
    registry::load_str(
        &mut loaded,
        &Arc::from("mem.yaml"),
        text,
        &Limits::default(),
    );
    loaded
}

fn compile(loaded: &Loaded) -> Plan {
    assert!(
        !loaded.has_errors(),
        "unexpected errors: {:#?}",
        loaded.diagnostics
    );
    registry::compile(&loaded.registry, CompileOptions::default())
}

/// Whether a warning of `plan` contains `needle`.
fn warned(plan: &Plan, needle: &str) -> bool {
    plan.warnings.iter().any(|w| w.contains(needle))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn errors(loaded: &Loaded) -> Vec<String> {
    loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn external_api_example_is_an_sni_name_resolved_by_dns() {
    let plan = compile(&load(&["examples/external-svc.yaml"]));
    assert_eq!(plan.services.len(), 1);
    let svc = &plan.services[0];
    assert_eq!(svc.key(), "default/external-svc/api.external-svc.com");
    assert_eq!(svc.location, Location::MeshExternal);
    assert_eq!(svc.resolution, "DNS");
    assert_eq!(
        plan.entries
            .iter()
            .map(|e| (&e.matcher, e.verdict))
            .collect::<Vec<_>>(),
        vec![(
            &Match::Sni {
                name: "api.external-svc.com".into(),
                port: 443
            },
            Verdict::Pass
        )]
    );
    assert_eq!(plan.dns.len(), 1);
    assert_eq!(plan.dns[0].name, "api.external-svc.com");
    assert_eq!(plan.dns[0].ports, vec![(443, L4::Tcp)]);
    assert_eq!(plan.dns[0].verdict, Verdict::Pass);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn external_verdict_is_configurable() {
    let loaded = load(&["examples/external-svc.yaml"]);
    let plan = registry::compile(
        &loaded.registry,
        CompileOptions {
            external: Verdict::Redirect,
            ..CompileOptions::default()
        },
    );
    assert!(plan.entries.iter().all(|e| e.verdict == Verdict::Redirect));
    assert!(plan.dns.iter().all(|d| d.verdict == Verdict::Redirect));
}

#[test]
fn customers_example_spans_vms_and_ready_pods_of_its_namespace() {
    let plan = compile(&load(&["examples/customers.yaml"]));
    assert_eq!(plan.services.len(), 1);
    assert_eq!(
        plan.services[0].key(),
        "default/customers-svc/customers.com"
    );
    let got: Vec<(Match, Verdict)> = plan
        .entries
        .iter()
        .map(|e| (e.matcher.clone(), e.verdict))
        .collect();
    let tcp = |a: &str, port| Match::Ip {
        addr: ip(a),
        port,
        protocol: L4::Tcp,
    };
    let want = vec![
        (tcp("10.10.0.1", 80), Verdict::Redirect),
        (tcp("10.10.0.2", 80), Verdict::Redirect),
        // The pod's container port named like the service port.
        (tcp("10.244.1.7", 3000), Verdict::Redirect),
        (tcp("fd00:10:244:1::7", 3000), Verdict::Redirect),
        (
            Match::Host {
                name: "customers.com".into(),
                port: 80,
            },
            Verdict::Redirect,
        ),
    ];
    assert_eq!(got, want);
    // Neither the pod that is not ready nor the VM of another namespace.
    assert!(!plan.entries.iter().any(|e| matches!(
        e.matcher,
        Match::Ip { addr, .. } if addr == ip("10.244.1.8") || addr == ip("10.20.0.9")
    )));
}

#[test]
fn kubectl_list_output_with_status_and_managed_fields_is_read() {
    let loaded = load(&["kubectl/list.yaml"]);
    assert!(errors(&loaded).is_empty(), "{:?}", errors(&loaded));
    assert_eq!(loaded.registry.services.len(), 1);
    assert_eq!(loaded.registry.service_entries.len(), 1);
    let notes: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Note)
        .map(|d| d.to_string())
        .collect();
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains("Deployment"), "{notes:?}");
    let plan = compile(&loaded);
    assert!(plan.entries.iter().any(|e| e.matcher
        == Match::Ip {
            addr: ip("fd00:96::1234"),
            port: 53,
            protocol: L4::Udp
        }
        && e.service == "shop/ratings/ratings.shop.svc.cluster.local"));
    assert!(plan.entries.iter().any(|e| matches!(
        &e.matcher,
        Match::Cidr { cidr, port: 5432, protocol: L4::Tcp } if cidr.addr == ip("10.30.0.0") && cidr.len == 24
    )));
    // A /32 is an exact address.
    assert!(plan.entries.iter().any(|e| e.matcher
        == Match::Ip {
            addr: ip("10.30.1.5"),
            port: 5432,
            protocol: L4::Tcp
        }));
}

#[test]
fn errors_name_file_line_column_resource_and_field() {
    let loaded = load(&["invalid/typos.yaml"]);
    let file = fixture("invalid/typos.yaml").display().to_string();
    assert_eq!(
        errors(&loaded),
        vec![
            format!("{file}:13:13: ServiceEntry default/external-svc: spec.ports[1].number: 99999 is not a port (1-65535)"),
            format!("{file}:26:5: ServiceEntry default/typo: spec.ports[0].nmber: unknown field `nmber`, expected one of `number`, `protocol`, `name`, `targetPort`"),
            format!("{file}:37:13: ServiceEntry default/wrong-type: spec.ports[0].number: invalid type: string \"eighty\", expected u64"),
        ]
    );
    assert!(loaded.registry.service_entries.is_empty());
}

#[test]
fn every_problem_of_every_file_is_reported() {
    let loaded = load(&["invalid", "examples"]);
    assert_eq!(errors(&loaded).len(), 3);
    // The valid files are still read.
    assert_eq!(loaded.registry.workload_entries.len(), 3);
}

#[test]
fn istio_rules_in_memory() {
    let cases: &[(&str, &str)] = &[
        (
            "spec:\n  hosts: ['*']\n",
            "mem.yaml:6:11: ServiceEntry default/x: spec.hosts[0]: `*` alone is not a valid host",
        ),
        (
            "spec:\n  hosts: [a.example]\n  addresses: [10.0.0.0/8]\n  resolution: DNS\n",
            "mem.yaml:7:14: ServiceEntry default/x: spec.addresses: CIDR addresses are allowed only with resolution NONE or STATIC",
        ),
        (
            "spec:\n  hosts: [a.example]\n  workloadSelector: {labels: {app: x}}\n  endpoints: [{address: 10.0.0.1}]\n  resolution: STATIC\n",
            "mem.yaml:8:14: ServiceEntry default/x: spec.endpoints: only one of workloadSelector and endpoints may be set",
        ),
        (
            "spec:\n  hosts: [a.example, b.example]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n  resolution: DNS\n",
            "mem.yaml:7:10: ServiceEntry default/x: spec.ports: several hosts with a non-HTTP, non-TLS port need resolution NONE",
        ),
        (
            "spec:\n  hosts: [a.example]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: a.example}]\n",
            "mem.yaml:9:25: ServiceEntry default/x: spec.endpoints[0].address: endpoint address \"a.example\" is not a valid IP address",
        ),
        (
            "spec:\n  hosts: [a.example]\n  exportTo: [default, .]\n",
            "mem.yaml:7:23: ServiceEntry default/x: spec.exportTo[1]: exportTo has both `.` and the current namespace default",
        ),
    ];
    for (spec, want) in cases {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: x\n{spec}"
        );
        let loaded = load_text(&text);
        assert_eq!(errors(&loaded), vec![want.to_string()], "for {spec}");
    }
}

#[test]
fn missing_spec_and_unknown_spec_fields_are_errors() {
    let loaded = load_text(
        "apiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\nmetadata: {name: w, namespace: lab}\n---\napiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\nmetadata: {name: v, namespace: lab}\nspec:\n  address: 10.0.0.1\n  lables: {app: x}\n",
    );
    assert_eq!(
        errors(&loaded),
        vec![
            "mem.yaml:1:1: WorkloadEntry lab/w: spec: is required".to_string(),
            "mem.yaml:10:3: WorkloadEntry lab/v: spec.lables: unknown field `lables`, expected one of `address`, `ports`, `labels`, `network`, `locality`, `weight`, `serviceAccount`".to_string(),
        ]
    );
}

#[test]
fn whole_port_capture_is_compiled_and_warned() {
    let loaded = load_text(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: any-pg}\nspec:\n  hosts: [pg.example]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n",
    );
    // Istio warns at validation time already.
    assert!(loaded
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Warning));
    let plan = compile(&loaded);
    assert_eq!(
        plan.entries.iter().map(|e| &e.matcher).collect::<Vec<_>>(),
        vec![&Match::Port {
            port: 5432,
            protocol: L4::Tcp
        }]
    );
    assert!(
        warned(&plan, "every destination on this port"),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn conflicts_have_one_deterministic_winner_and_a_warning() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: newer, namespace: a, creationTimestamp: '2026-02-01T00:00:00Z'}
spec:
  hosts: [newer.example]
  addresses: [10.1.0.1]
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: older, namespace: z, creationTimestamp: '2026-01-01T00:00:00Z'}
spec:
  hosts: [older.example]
  addresses: [10.1.0.1]
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: v1
kind: Service
metadata: {name: kube, namespace: z, creationTimestamp: '2026-03-01T00:00:00Z'}
spec:
  clusterIP: 10.1.0.2
  ports: [{port: 443, name: https}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shadow, namespace: a, creationTimestamp: '2025-01-01T00:00:00Z'}
spec:
  hosts: [shadow.example]
  addresses: [10.1.0.2]
  ports: [{number: 443, name: tls, protocol: TLS}]
";
    let plan = compile(&load_text(text));
    let owner = |a: &str| {
        plan.entries
            .iter()
            .find(|e| matches!(e.matcher, Match::Ip { addr, port: 443, .. } if addr == ip(a)))
            .map(|e| e.service.clone())
    };
    assert_eq!(owner("10.1.0.1").as_deref(), Some("z/older/older.example"));
    assert_eq!(
        owner("10.1.0.2").as_deref(),
        Some("z/kube/kube.z.svc.cluster.local")
    );
    assert_eq!(
        plan.warnings.iter().filter(|w| w.contains("wins")).count(),
        2,
        "{:?}",
        plan.warnings
    );
}

/// Names to resolve are listed in the order in which their services win conflicts (not by
/// name): where two resolve to one address on one port, the first takes it, as the older
/// resource takes an address two of them give.
#[test]
fn dns_names_come_in_conflict_order() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: newer, namespace: a, creationTimestamp: '2026-02-01T00:00:00Z'}
spec:
  hosts: [a.example.com]
  resolution: DNS
  ports: [{number: 5432, name: pg, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: older, namespace: z, creationTimestamp: '2026-01-01T00:00:00Z'}
spec:
  hosts: [z.example.com]
  resolution: DNS
  ports: [{number: 5432, name: pg, protocol: TCP}]
";
    let plan = compile(&load_text(text));
    let names: Vec<&str> = plan.dns.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["z.example.com", "a.example.com"]);
}

#[test]
fn output_does_not_depend_on_input_order() {
    let a = compile(&load(&[
        "examples/customers.yaml",
        "examples/external-svc.yaml",
        "kubectl/list.yaml",
    ]));
    let b = compile(&load(&[
        "kubectl/list.yaml",
        "examples/external-svc.yaml",
        "examples/customers.yaml",
    ]));
    assert_eq!(a.services, b.services);
    assert_eq!(a.entries, b.entries);
    assert_eq!(a.dns, b.dns);
}

#[test]
fn plan_json_shape() {
    let plan = compile(&load(&[
        "examples/customers.yaml",
        "examples/external-svc.yaml",
    ]));
    let v = serde_json::to_value(&plan).expect("serializes");
    let entries = v["entries"].as_array().expect("entries");
    assert!(!entries.is_empty());
    for e in entries {
        assert!(e["match"]["kind"].is_string());
        assert!(e["match"]["port"].is_number());
        assert!(e["service"].is_string());
        assert!(matches!(e["verdict"].as_str(), Some("redirect" | "pass")));
    }
    assert!(v["services"].is_array());
    assert!(v["warnings"].is_array());
}

#[test]
fn unix_and_dns_endpoints() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: uds}
spec:
  hosts: [uds.lab.internal]
  ports: [{number: 8001, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 'unix:///var/run/app.sock'}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns-ep}
spec:
  hosts: [api.lab.internal]
  ports: [{number: 8000, name: http, protocol: HTTP, targetPort: 8443}]
  resolution: DNS
  endpoints:
  - address: us.api.lab.internal
    ports: {http: 8080}
  - address: 10.40.0.1
";
    let plan = compile(&load_text(text));
    // The unix endpoint makes no address entry.
    assert!(!plan
        .entries
        .iter()
        .any(|e| e.service.starts_with("default/uds/") && matches!(e.matcher, Match::Ip { .. })));
    assert_eq!(plan.dns.len(), 1);
    assert_eq!(plan.dns[0].name, "us.api.lab.internal");
    assert_eq!(plan.dns[0].ports, vec![(8080, L4::Tcp)]);
    // The IP endpoint without its own port gets the target port.
    assert!(plan.entries.iter().any(|e| e.matcher
        == Match::Ip {
            addr: ip("10.40.0.1"),
            port: 8443,
            protocol: L4::Tcp
        }));
}

#[test]
fn hostile_yaml_is_an_error_not_a_crash() {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let loaded = load_text(&bomb);
    assert!(errors(&loaded)[0].contains("limit of 1000000 nodes"));
    let loaded = load_text(&"- ".repeat(5000));
    assert!(errors(&loaded)[0].contains("limit of 64 levels"));
    let loaded = load_text("a: [1, 2\n");
    assert!(errors(&loaded)[0].starts_with("mem.yaml:"));
    let mut loaded = Loaded::default();
    registry::load_bytes(
        &mut loaded,
        "bin.yaml",
        &[0xff, 0xfe, 0x00],
        &Limits::default(),
    );
    assert!(errors(&loaded)[0].contains("not UTF-8"));
}

#[test]
fn a_resource_defined_twice_is_an_error_but_a_file_named_twice_is_read_once() {
    let loaded = load(&["examples", "examples/customers.yaml"]);
    assert!(errors(&loaded).is_empty(), "{:?}", errors(&loaded));
    let dir = std::env::temp_dir().join(format!("registry-dup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let body = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm, namespace: lab}\nspec: {address: 10.0.0.1}\n";
    std::fs::write(dir.join("a.yaml"), body).expect("write");
    std::fs::write(dir.join("b.yml"), body).expect("write");
    std::fs::write(dir.join("ignored.txt"), "not: yaml: at: all").expect("write");
    let loaded =
        registry::load_paths(std::slice::from_ref(&dir), &Limits::default()).expect("readable");
    let errs = errors(&loaded);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .contains("b.yml:3:18: WorkloadEntry lab/vm: metadata.name: defined twice; first at"),
        "{errs:?}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn ipv6_networks_udp_ports_and_wildcards() {
    let text = "\
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: v6, namespace: lab}
spec:
  hosts: ['*.V6.Lab.', 'dns.v6.lab']
  addresses: ['fd00:60::/64', 'fd00:61::1/128']
  location: MESH_INTERNAL
  resolution: NONE
  ports:
  - {number: 53, name: dns, protocol: UDP}
  - {number: 443, name: tls, protocol: tls}
  - {number: 80, name: http, protocol: HTTP}
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: byname, namespace: lab}
spec:
  hosts: ['*.Names.Lab.']
  location: MESH_EXTERNAL
  resolution: NONE
  ports:
  - {number: 443, name: tls, protocol: tls}
";
    let plan = compile(&load_text(text));
    let hosts: Vec<&str> = plan.services.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(hosts, vec!["*.names.lab", "*.v6.lab", "dns.v6.lab"]);
    let first = |m: &Match| {
        plan.entries
            .iter()
            .find(|e| &e.matcher == m)
            .map(|e| (e.service.as_str(), e.verdict))
    };
    let net = meshclass::plan::Cidr {
        addr: ip("fd00:60::"),
        len: 64,
    };
    // A mesh-internal service's UDP port passes: the proxy has no UDP listener.
    assert_eq!(
        first(&Match::Cidr {
            cidr: net,
            port: 53,
            protocol: L4::Udp
        }),
        Some(("lab/v6/*.v6.lab", Verdict::Pass))
    );
    assert_eq!(
        first(&Match::Ip {
            addr: ip("fd00:61::1"),
            port: 443,
            protocol: L4::Tcp
        }),
        Some(("lab/v6/*.v6.lab", Verdict::Redirect))
    );
    // A TLS port of an entry with addresses is its addresses': no SNI entry, which would let
    // the name reach any address. Its HTTP port matches by Host on every address, as Istio's
    // HTTP listener does.
    assert!(first(&Match::Sni {
        name: "*.v6.lab".into(),
        port: 443
    })
    .is_none());
    assert_eq!(
        first(&Match::Host {
            name: "*.v6.lab".into(),
            port: 80
        }),
        Some(("lab/v6/*.v6.lab", Verdict::Redirect))
    );
    // Without addresses, the TLS port matches by SNI; the wildcard is kept as written,
    // lower-cased, without the root dot.
    assert_eq!(
        first(&Match::Sni {
            name: "*.names.lab".into(),
            port: 443
        }),
        Some(("lab/byname/*.names.lab", Verdict::Pass))
    );
    assert!(first(&Match::Sni {
        name: "dns.v6.lab".into(),
        port: 53
    })
    .is_none());
    // Both hosts share the entry's addresses: the first host keeps them, and one entry's own
    // hosts are no conflict to warn about.
    assert!(!warned(&plan, "wins"), "{:?}", plan.warnings);
}

/// Resolution NONE: a workloadSelector's workloads are the service's endpoints and nothing
/// is captured whole (Istio's listener per selected workload); without addresses or
/// endpoints, TCP, MONGO, REDIS, MYSQL and undeclared ports are captured whole, the others
/// not.
#[test]
fn resolution_none_captures_whole_ports_only_without_endpoints() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy-db, namespace: ns1}
spec:
  hosts: [legacy-db.internal]
  location: MESH_INTERNAL
  resolution: NONE
  ports:
  - {number: 5432, name: tcp-pg, protocol: TCP, targetPort: 15432}
  workloadSelector: {labels: {app: legacy-db}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db-vm, namespace: ns1}
spec: {address: 10.1.0.50, labels: {app: legacy-db}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: stores, namespace: ns2}
spec:
  hosts: [stores.example.com]
  resolution: NONE
  ports:
  - {number: 27017, name: mongo, protocol: MONGO}
  - {number: 6379, name: redis, protocol: REDIS}
  - {number: 3306, name: mysql, protocol: MYSQL}
  - {number: 7000, name: any}
  - {number: 8443, name: tls, protocol: TLS}
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 9125, name: statsd, protocol: UDP}
";
    let loaded = load_text(text);
    let plan = compile(&loaded);
    let ports: Vec<(u16, &str)> = plan
        .entries
        .iter()
        .filter_map(|e| match e.matcher {
            Match::Port { port, .. } => Some((port, e.service.as_str())),
            _ => None,
        })
        .collect();
    let stores = "ns2/stores/stores.example.com";
    assert_eq!(
        ports,
        vec![
            (3306, stores),
            (6379, stores),
            (7000, stores),
            (27017, stores)
        ]
    );
    let vm = plan
        .entries
        .iter()
        .find(|e| {
            e.matcher
                == Match::Ip {
                    addr: ip("10.1.0.50"),
                    port: 15432,
                    protocol: L4::Tcp,
                }
        })
        .expect("the selected VM is an endpoint");
    assert_eq!(vm.service, "ns1/legacy-db/legacy-db.internal");
    assert_eq!(vm.verdict, Verdict::Redirect);
    let warnings = loaded
        .diagnostics
        .iter()
        .map(|d| d.to_string())
        .chain(plan.warnings.iter().cloned())
        .collect::<Vec<_>>();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("spec.workloadSelector") && w.contains("endpoints")),
        "{warnings:?}"
    );
    for p in ["MONGO port 27017", "undeclared-protocol port 7000"] {
        assert!(warnings.iter().any(|w| w.contains(p)), "{p}: {warnings:?}");
    }
}

/// A resource that looks like one of the registry's but is not read (its apiVersion missing
/// or not Istio's, its kind in another case) is an error at the field, not a note: skipped,
/// it would leave its services out. Another group's kind of the same name, and Istio's other
/// kinds, are skipped with a note; a typed list's items take its kind and apiVersion.
#[test]
fn a_mistyped_kind_or_api_version_is_an_error() {
    let text = "\
kind: ServiceEntry
metadata: {name: a}
spec: {hosts: [a.com], ports: [{number: 443, name: tls, protocol: TLS}]}
---
apiVersion: networking.istio.io/v1beta2
kind: WorkloadEntry
metadata: {name: b}
spec: {address: 10.0.0.1}
---
apiVersion: v1
kind: pod
metadata: {name: c}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: k}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntryList
items:
- metadata: {name: listed}
  spec: {hosts: [l.com], ports: [{number: 443, name: tls, protocol: TLS}]}
";
    let loaded = load_text(text);
    let errs = errors(&loaded);
    assert_eq!(errs.len(), 3, "{errs:?}");
    // Each error at its field, saying what it should have been.
    for (err, at, says) in [
        (
            &errs[0],
            "mem.yaml:1:1: apiVersion: kind \"ServiceEntry\" of apiVersion \"\"",
            "apiVersion: networking.istio.io/v1",
        ),
        (
            &errs[1],
            "mem.yaml:5:13: apiVersion: ",
            "\"networking.istio.io/v1beta2\"",
        ),
        (
            &errs[2],
            "mem.yaml:11:7: kind: kind \"pod\"",
            "`kind: Pod` with `apiVersion: v1`",
        ),
    ] {
        assert!(err.starts_with(at) && err.contains(says), "{errs:?}");
    }
    let notes = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Note)
        .count();
    assert_eq!(notes, 2, "{:?}", loaded.diagnostics);
    assert_eq!(loaded.registry.service_entries.len(), 1);
    assert_eq!(loaded.registry.service_entries[0].meta.name, "listed");
}

/// Pods as Istio takes them for endpoints: named ports of TCP only, and no pod that
/// terminates or has ended. Creation times compare as instants, whatever their offsets; a time
/// that is not RFC 3339 is an error at its field.
#[test]
fn pods_ports_and_creation_times_as_istio_reads_them() {
    let pod = |name: &str, ip: &str, extra_meta: &str, phase: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: ns1, labels: {{app: dns}}{extra_meta}}}
spec:
  containers:
  - ports:
    - {{name: dns, containerPort: 5353, protocol: UDP}}
    - {{name: dns, containerPort: 1053, protocol: TCP}}
status:
  podIP: {ip}
  phase: {phase}
  conditions: [{{type: Ready, status: 'True'}}]
---
"
        )
    };
    let mut text = pod("up", "10.2.0.9", "", "Running");
    text += &pod(
        "going",
        "10.2.0.10",
        ", deletionTimestamp: '2024-01-01T00:00:00Z'",
        "Running",
    );
    text += &pod("done", "10.2.0.11", "", "Succeeded");
    text += "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns, namespace: ns1}
spec:
  hosts: [dns.internal]
  addresses: [10.3.0.1]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 53, name: dns, protocol: TCP}]
  workloadSelector: {labels: {app: dns}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: new-int, namespace: aaa, creationTimestamp: '2024-01-01T09:00:00Z'}
spec:
  hosts: [shared.example.com]
  addresses: [10.4.0.1]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: old-ext, namespace: zzz, creationTimestamp: '2024-01-01T10:00:00+02:00'}
spec:
  hosts: [shared2.example.com]
  addresses: [10.4.0.1]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
";
    let plan = compile(&load_text(&text));
    let ips: Vec<(IpAddr, u16)> = plan
        .entries
        .iter()
        .filter(|e| e.service.starts_with("ns1/dns/"))
        .filter_map(|e| match e.matcher {
            Match::Ip { addr, port, .. } => Some((addr, port)),
            _ => None,
        })
        .collect();
    assert_eq!(ips, vec![(ip("10.2.0.9"), 1053), (ip("10.3.0.1"), 53)]);
    // 10:00+02:00 is 08:00Z, the older: it wins the address.
    let shared = plan
        .entries
        .iter()
        .find(|e| {
            e.matcher
                == Match::Ip {
                    addr: ip("10.4.0.1"),
                    port: 80,
                    protocol: L4::Tcp,
                }
        })
        .expect("the shared address");
    assert_eq!(shared.service, "zzz/old-ext/shared2.example.com");
    assert_eq!(shared.verdict, Verdict::Pass);

    let loaded = load_text(
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, creationTimestamp: yesterday}
spec: {address: 10.0.0.1}
",
    );
    let errs = errors(&loaded);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("metadata.creationTimestamp: \"yesterday\" is not an RFC 3339 time"),
        "{errs:?}"
    );
}

/// A Kubernetes Service's endpoints are the workloads its selector picks in its namespace, on
/// its target port (a number, or the workload's port of that name; a workload without that
/// name is no endpoint of the port); a headless Service has these only.
#[test]
fn kubernetes_services_select_their_endpoints() {
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: kafka, namespace: data}
spec:
  clusterIP: None
  selector: {app: kafka}
  ports: [{name: tcp-kafka, port: 9092, targetPort: broker}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: data}
spec:
  clusterIP: 10.96.5.5
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: manual, namespace: data}
spec:
  clusterIP: 10.96.5.6
  ports: [{name: tcp, port: 5000}]
---
apiVersion: v1
kind: Pod
metadata: {name: kafka-0, namespace: data, labels: {app: kafka}}
spec: {containers: [{ports: [{name: broker, containerPort: 29092}]}]}
status: {podIP: 10.244.1.5, conditions: [{type: Ready, status: 'True'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: kafka-1, namespace: data, labels: {app: kafka}}
spec: {containers: [{ports: [{name: other, containerPort: 1234}]}]}
status: {podIP: 10.244.1.6, conditions: [{type: Ready, status: 'True'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: kafka-x, namespace: elsewhere, labels: {app: kafka}}
spec: {containers: [{ports: [{name: broker, containerPort: 29092}]}]}
status: {podIP: 10.244.9.9, conditions: [{type: Ready, status: 'True'}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-vm, namespace: data}
spec: {address: 10.50.0.7, labels: {app: web}}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: sys}
spec:
  clusterIP: None
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: dns}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: dns-tcp}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns-2, namespace: sys}
spec:
  clusterIP: None
  selector: {k8s-app: kube-dns}
  ports: [{name: dns, port: 53, protocol: UDP, targetPort: dns}]
---
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: sys, labels: {k8s-app: kube-dns}}
spec:
  containers:
  - ports:
    - {name: dns, containerPort: 1053, protocol: UDP}
    - {name: dns-tcp, containerPort: 1054, protocol: TCP}
status: {podIP: 10.244.2.2, conditions: [{type: Ready, status: 'True'}]}
";
    let plan = compile(&load_text(text));
    // A pod two Services select is no conflict to warn about.
    assert!(!warned(&plan, "wins"), "{:?}", plan.warnings);
    let got: Vec<(String, IpAddr, u16, L4, Verdict)> = plan
        .entries
        .iter()
        .filter_map(|e| match e.matcher {
            Match::Ip {
                addr,
                port,
                protocol,
            } => Some((e.service.clone(), addr, port, protocol, e.verdict)),
            _ => None,
        })
        .collect();
    let want = |svc: &str, a: &str, port: u16, l4: L4, v: Verdict| {
        (
            format!("data/{svc}/{svc}.data.svc.cluster.local"),
            ip(a),
            port,
            l4,
            v,
        )
    };
    assert_eq!(
        got,
        vec![
            want("web", "10.50.0.7", 53, L4::Udp, Verdict::Pass),
            want("web", "10.50.0.7", 8080, L4::Tcp, Verdict::Redirect),
            want("web", "10.96.5.5", 53, L4::Udp, Verdict::Pass),
            want("web", "10.96.5.5", 80, L4::Tcp, Verdict::Redirect),
            want("manual", "10.96.5.6", 5000, L4::Tcp, Verdict::Redirect),
            want("kafka", "10.244.1.5", 29092, L4::Tcp, Verdict::Redirect),
            (
                "sys/kube-dns/kube-dns.sys.svc.cluster.local".into(),
                ip("10.244.2.2"),
                1053,
                L4::Udp,
                Verdict::Pass
            ),
            (
                "sys/kube-dns/kube-dns.sys.svc.cluster.local".into(),
                ip("10.244.2.2"),
                1054,
                L4::Tcp,
                Verdict::Redirect
            ),
        ]
    );
}

/// `bind_names_to_dns`: a host that resolves itself by DNS gets no name entries (the daemon
/// adds the addresses DNS returns), while hosts with endpoints, wildcards and other
/// resolutions keep theirs.
#[test]
fn names_bound_to_dns_are_matched_by_address_only() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}, {number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild}
spec:
  hosts: ['*.cdn.example.com']
  resolution: NONE
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: fronted}
spec:
  hosts: [front.example.com]
  resolution: DNS
  endpoints: [{address: backend.example.com}]
  ports: [{number: 443, name: tls, protocol: TLS}]
";
    let loaded = load_text(text);
    let names = |bind: bool| -> Vec<String> {
        let plan = registry::compile(
            &loaded.registry,
            CompileOptions {
                bind_names_to_dns: bind,
                ..CompileOptions::default()
            },
        );
        plan.entries
            .iter()
            .filter_map(|e| match &e.matcher {
                Match::Sni { name, port } => Some(format!("sni {name} {port}")),
                Match::Host { name, port } => Some(format!("host {name} {port}")),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        names(false),
        [
            "sni *.cdn.example.com 443",
            "sni api.example.com 443",
            "sni front.example.com 443",
            "host api.example.com 80"
        ]
    );
    assert_eq!(
        names(true),
        ["sni *.cdn.example.com 443", "sni front.example.com 443"]
    );
    let plan = registry::compile(
        &loaded.registry,
        CompileOptions {
            bind_names_to_dns: true,
            ..CompileOptions::default()
        },
    );
    assert!(
        plan.dns.iter().any(|d| d.name == "api.example.com"),
        "{:?}",
        plan.dns
    );
}

/// A MESH_INTERNAL host with neither addresses nor endpoints is matched by name only, after
/// the handshake, too late for the proxy: said at compile time. One with addresses, or one
/// that DNS resolves, is not warned about.
#[test]
fn a_mesh_internal_host_known_by_name_only_is_warned_about() {
    let entry = |name: &str, extra: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.mesh]
  location: MESH_INTERNAL
  ports: [{{number: 443, name: tls, protocol: TLS}}, {{number: 80, name: http, protocol: HTTP}}]
{extra}---
"
        )
    };
    let text = entry("byname", "  resolution: NONE\n")
        + &entry(
            "addressed",
            "  resolution: STATIC\n  addresses: [10.9.0.1]\n  endpoints: [{address: 10.9.0.1}]\n",
        )
        + &entry("resolved", "  resolution: DNS\n");
    let plan = compile(&load_text(&text));
    let warned: Vec<&String> = plan
        .warnings
        .iter()
        .filter(|w| w.contains("matched by name only"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", plan.warnings);
    assert!(
        warned[0].contains(
            "ServiceEntry default/byname: spec.hosts[0]: MESH_INTERNAL host \"byname.mesh\""
        ),
        "{warned:?}"
    );
}
