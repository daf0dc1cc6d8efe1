//! Property tests of the registry compiler's invariants.

use std::{collections::BTreeMap, fmt::Write, net::IpAddr, sync::Arc};

use meshclass::{
    plan::{CompileOptions, Match, L4},
    registry::{self, Limits, Loaded},
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Workload {
    namespace: usize,
    app: usize,
    tier: usize,
    /// Named port for the service's `http` port, if any.
    http_port: Option<u16>,
    pod: bool,
    ready: bool,
}

#[derive(Clone, Debug)]
struct Case {
    workloads: Vec<Workload>,
    selector_tier: Option<usize>,
    target_port: Option<u16>,
}

const NAMESPACES: [&str; 2] = ["lab", "other"];
const APPS: [&str; 2] = ["shop", "cart"];
const TIERS: [&str; 2] = ["web", "db"];

fn workload() -> impl Strategy<Value = Workload> {
    (
        0..2usize,
        0..2usize,
        0..2usize,
        proptest::option::of(1024..2048u16),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(namespace, app, tier, http_port, pod, ready)| Workload {
            namespace,
            app,
            tier,
            http_port,
            pod,
            ready,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(workload(), 0..40),
        proptest::option::of(0..2usize),
        proptest::option::of(3000..3100u16),
    )
        .prop_map(|(workloads, selector_tier, target_port)| Case {
            workloads,
            selector_tier,
            target_port,
        })
}

fn ip_of(i: usize) -> IpAddr {
    // Distinct lab addresses, IPv4 for even and IPv6 for odd workloads.
    if i.is_multiple_of(2) {
        IpAddr::from([10, 50, (i / 250) as u8, (i % 250) as u8 + 1])
    } else {
        format!("fd00:50::{:x}", i + 1).parse().expect("ipv6")
    }
}

fn render(case: &Case) -> String {
    let mut y = String::new();
    for (i, w) in case.workloads.iter().enumerate() {
        let ns = NAMESPACES[w.namespace];
        let ports = match w.http_port {
            Some(p) => format!("{{http: {p}}}"),
            None => "{}".to_owned(),
        };
        if w.pod {
            let named = match w.http_port {
                Some(p) => format!("[{{name: http, containerPort: {p}}}]"),
                None => "[]".to_owned(),
            };
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\n  namespace: {ns}\n  labels: {{app: {}, tier: {}}}\nspec:\n  containers: [{{name: c, ports: {named}}}]\nstatus:\n  podIP: '{}'\n  conditions: [{{type: Ready, status: '{}'}}]\n",
                APPS[w.app],
                TIERS[w.tier],
                ip_of(i),
                if w.ready { "True" } else { "False" }
            );
        } else {
            // Half the labels in spec, the app label in metadata: they are merged.
            let _ = write!(
                y,
                "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: w{i}\n  namespace: {ns}\n  labels: {{app: {}}}\nspec:\n  address: '{}'\n  labels: {{tier: {}, app: overridden}}\n  ports: {ports}\n",
                APPS[w.app],
                ip_of(i),
                TIERS[w.tier]
            );
        }
    }
    let selector = match case.selector_tier {
        Some(t) => format!("{{app: shop, tier: {}}}", TIERS[t]),
        None => "{app: shop}".to_owned(),
    };
    let target = match case.target_port {
        Some(t) => format!(", targetPort: {t}"),
        None => String::new(),
    };
    let _ = write!(
        y,
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: shop\n  namespace: lab\nspec:\n  hosts: [shop.lab.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: HTTP{target}}}\n  - {{number: 5432, name: pg, protocol: TCP}}\n  workloadSelector:\n    labels: {selector}\n"
    );
    y
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn selected_workloads_appear_once_with_their_port(case in case()) {
        let text = render(&case);
        let mut loaded = Loaded::default();
        registry::load_str(&mut loaded, &Arc::from("gen.yaml"), &text, &Limits::default());
        prop_assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let plan = registry::compile(&loaded.registry, CompileOptions::default());

        let mut expected: BTreeMap<(IpAddr, u16), usize> = BTreeMap::new();
        for (i, w) in case.workloads.iter().enumerate() {
            let selected = w.namespace == 0
                && w.app == 0
                && case.selector_tier.map(|t| t == w.tier).unwrap_or(true)
                && (!w.pod || w.ready);
            if !selected {
                continue;
            }
            let http = w.http_port.or(case.target_port).unwrap_or(80);
            *expected.entry((ip_of(i), http)).or_default() += 1;
            *expected.entry((ip_of(i), 5432)).or_default() += 1;
        }
        let mut got: BTreeMap<(IpAddr, u16), usize> = BTreeMap::new();
        for e in &plan.entries {
            if let Match::Ip { addr, port, protocol } = e.matcher {
                prop_assert_eq!(protocol, L4::Tcp);
                prop_assert_eq!(&e.service, "lab/shop/shop.lab.internal");
                *got.entry((addr, port)).or_default() += 1;
            }
        }
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn nothing_from_another_namespace_is_selected(case in case()) {
        let text = render(&case);
        let mut loaded = Loaded::default();
        registry::load_str(&mut loaded, &Arc::from("gen.yaml"), &text, &Limits::default());
        let plan = registry::compile(&loaded.registry, CompileOptions::default());
        for (i, w) in case.workloads.iter().enumerate() {
            if w.namespace != 0 {
                let addr = ip_of(i);
                let hit = plan.entries.iter().any(|e| matches!(e.matcher, Match::Ip { addr: a, .. } if a == addr));
                prop_assert!(!hit, "workload {} of another namespace selected", i);
            }
        }
    }

    #[test]
    fn compiling_is_deterministic(case in case()) {
        let text = render(&case);
        let mut loaded = Loaded::default();
        registry::load_str(&mut loaded, &Arc::from("gen.yaml"), &text, &Limits::default());
        let a = registry::compile(&loaded.registry, CompileOptions::default());
        loaded.registry.workload_entries.reverse();
        loaded.registry.pods.reverse();
        let b = registry::compile(&loaded.registry, CompileOptions::default());
        prop_assert_eq!(a, b);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut loaded = Loaded::default();
        registry::load_bytes(&mut loaded, "fuzz.yaml", &bytes, &Limits::default());
        let _ = registry::compile(&loaded.registry, CompileOptions::default());
    }
}
