//! `meshclass inspect`: reads the pinned maps directly (the daemon may be down) and decodes
//! them with the state the daemon keeps beside the pins.

use std::{collections::BTreeMap, io::Write as _, path::Path};

use classifier_common::{counter, stage, verdict};
use serde_json::json;

use crate::{
    daemon::{pins::Pins, state::State},
    dataplane::Dataplane,
    plan::Match,
};

/// What to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    Services,
    Entries,
    Flows,
    Counters,
}

fn addr_of(family: u8, a: &[u8; 16]) -> std::net::IpAddr {
    if family == classifier_common::family::V4 {
        std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).into()
    } else {
        std::net::Ipv6Addr::from(*a).into()
    }
}

/// A readable form of a match.
pub fn describe(m: &Match) -> String {
    match m {
        Match::Ip {
            addr,
            port,
            protocol,
        } => format!("ip {addr} {port}/{protocol:?}").to_lowercase(),
        Match::Cidr {
            cidr,
            port,
            protocol,
        } => format!("cidr {}/{} {port}/{protocol:?}", cidr.addr, cidr.len).to_lowercase(),
        Match::Sni { name, port } => format!("sni {name} {port}/tcp"),
        Match::Host { name, port } => format!("host {name} {port}/tcp"),
        Match::Port { port, protocol } => format!("port * {port}/{protocol:?}").to_lowercase(),
    }
}

/// Prints what is asked: 0 ok, 2 nothing pinned or unreadable.
pub fn run(pin_dir: &Path, what: What, json_out: bool) -> i32 {
    let pins = Pins::new(pin_dir);
    if let Some(why) = pins.missing() {
        eprintln!("error: {why}");
        return 2;
    }
    let state = match State::read(&pins.state_file()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: reading {}: {e}", pins.state_file().display());
            return 2;
        }
    };
    let dp = match Dataplane::from_pins(&pins.maps()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: opening the pinned maps: {e}");
            return 2;
        }
    };
    // Per plan entry (a shadowed entry decides nothing: 0).
    let raw_hits = dp.entry_hits().unwrap_or_default();
    let hits = state.entry_hits(&raw_hits);
    let shadowed = state.shadowed();
    let mut out = std::io::stdout().lock();
    let r = match what {
        What::Services => {
            // Entries, and hits as the metrics count them (those of entries that left too).
            let mut per: BTreeMap<u32, (usize, u64)> = BTreeMap::new();
            for e in &state.plan.entries {
                per.entry(e.service_id).or_default().0 += 1;
            }
            let mut by_key: BTreeMap<String, u64> = BTreeMap::new();
            for ((service, _), n) in state.service_hits(&raw_hits) {
                *by_key.entry(service).or_default() += n;
            }
            for svc in &state.plan.services {
                if let Some(n) = by_key.get(&svc.key()) {
                    per.entry(svc.id).or_default().1 = *n;
                }
            }
            if json_out {
                let v: Vec<_> = state
                    .plan
                    .services
                    .iter()
                    .map(|s| {
                        let (entries, hits) = per.get(&s.id).copied().unwrap_or_default();
                        json!({"service": s.key(), "location": s.location, "resolution": s.resolution,
                               "entries": entries, "hits": hits})
                    })
                    .collect();
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                )
            } else {
                let _ = writeln!(
                    out,
                    "{:<60} {:<14} {:<10} {:>7} {:>10}",
                    "SERVICE", "LOCATION", "RESOLUTION", "ENTRIES", "HITS"
                );
                let mut r = Ok(());
                for s in &state.plan.services {
                    let (entries, hits) = per.get(&s.id).copied().unwrap_or_default();
                    r = writeln!(
                        out,
                        "{:<60} {:<14} {:<10} {:>7} {:>10}",
                        s.key(),
                        s.location.name(),
                        s.resolution,
                        entries,
                        hits
                    );
                }
                r
            }
        }
        What::Entries => {
            if json_out {
                let v: Vec<_> = state
                    .plan
                    .entries
                    .iter()
                    .zip(&state.entry_ids)
                    .zip(hits.iter().zip(&shadowed))
                    .map(|((e, id), (n, sh))| {
                        json!({"match": e.matcher, "service": e.service, "verdict": e.verdict,
                                         "entry_id": id, "hits": n, "shadowed": sh})
                    })
                    .collect();
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                )
            } else {
                let _ = writeln!(
                    out,
                    "{:<50} {:<9} {:>8} SERVICE",
                    "MATCH", "VERDICT", "HITS"
                );
                let mut r = Ok(());
                for ((e, n), sh) in state.plan.entries.iter().zip(&hits).zip(&shadowed) {
                    r = writeln!(
                        out,
                        "{:<50} {:<9} {:>8} {}{}",
                        describe(&e.matcher),
                        e.verdict.name(),
                        n,
                        e.service,
                        if *sh { " (shadowed)" } else { "" }
                    );
                }
                r
            }
        }
        What::Flows => {
            let mut flows = dp.flows().unwrap_or_default();
            // Newest decision first; pending flows (no decision yet) last.
            flows.sort_by_key(|(_, f)| {
                std::cmp::Reverse((
                    f.state == classifier_common::flow_state::DECIDED,
                    f.decided_ns,
                ))
            });
            let now = super::flows::monotonic_ns();
            // A flow is labelled with the service ids of the registry it was decided under
            // (a reload may have renumbered them since).
            let epoch = dp.writer().epoch().unwrap_or(0);
            let flow_service = |f: &classifier_common::FlowValue| {
                state.service_label(f.service_id, f.generation, epoch)
            };
            let age_ms = |f: &classifier_common::FlowValue| {
                (f.state == classifier_common::flow_state::DECIDED)
                    .then(|| now.saturating_sub(f.decided_ns) / 1_000_000)
            };
            if json_out {
                let v: Vec<_> = flows
                    .iter()
                    .map(|(k, f)| json!({
                        "src": format!("{}", std::net::SocketAddr::new(addr_of(k.family, &k.saddr), u16::from_be(k.sport))),
                        "dst": format!("{}", std::net::SocketAddr::new(addr_of(k.family, &k.daddr), u16::from_be(k.dport))),
                        "protocol": if k.proto == classifier_common::proto::TCP { "tcp" } else { "udp" },
                        "verdict": verdict::name(f.verdict), "stage": stage::name(f.stage),
                        "service": flow_service(f), "age_ms": age_ms(f)}))
                    .collect();
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                )
            } else {
                let _ = writeln!(
                    out,
                    "{:<45} {:<45} {:<5} {:<9} {:<8} {:>9} SERVICE",
                    "SOURCE", "DESTINATION", "PROTO", "VERDICT", "STAGE", "AGE"
                );
                let mut r = Ok(());
                for (k, f) in &flows {
                    r = writeln!(
                        out,
                        "{:<45} {:<45} {:<5} {:<9} {:<8} {:>9} {}",
                        std::net::SocketAddr::new(
                            addr_of(k.family, &k.saddr),
                            u16::from_be(k.sport)
                        )
                        .to_string(),
                        std::net::SocketAddr::new(
                            addr_of(k.family, &k.daddr),
                            u16::from_be(k.dport)
                        )
                        .to_string(),
                        if k.proto == classifier_common::proto::TCP {
                            "tcp"
                        } else {
                            "udp"
                        },
                        verdict::name(f.verdict),
                        stage::name(f.stage),
                        age_ms(f).map_or("-".to_string(), |ms| format!("{:.1}s", ms as f64 / 1e3)),
                        flow_service(f)
                    );
                }
                r
            }
        }
        What::Counters => {
            let c = dp.counters().unwrap_or_default();
            let get = |i: u32| c.get(i as usize).copied().unwrap_or(0);
            let verdicts: BTreeMap<_, _> = (1..verdict::COUNT as u8)
                .map(|v| (verdict::name(v), get(counter::BY_VERDICT + u32::from(v))))
                .collect();
            let stages: BTreeMap<_, _> = (1..stage::COUNT as u8)
                .map(|s| (stage::name(s), get(counter::BY_STAGE + u32::from(s))))
                .collect();
            let fill = dp.fill_levels().unwrap_or_default();
            // What the kernel enforces now, read from its config in force (not from what a
            // daemon was told).
            let enforcing = dp
                .writer()
                .config_in_force()
                .ok()
                .map(|c| crate::settings::Settings::from_config(&c));
            let other = json!({
                "packets": get(counter::PACKETS), "new_flows": get(counter::NEW_FLOWS),
                "malformed": get(counter::MALFORMED), "fragments": get(counter::FRAGMENTS),
                "ech_seen": get(counter::ECH_SEEN), "split_hellos": get(counter::SPLIT_HELLOS), "split_h2": get(counter::SPLIT_H2),
                "redirect_no_socket": get(counter::REDIRECT_NO_SOCKET), "late_redirect": get(counter::LATE_REDIRECT),
                "events_lost": get(counter::EVENTS_LOST)});
            if json_out {
                let enforcing = enforcing.map(|e| {
                    json!({
                        "outbound_policy": e.outbound_policy.to_string(),
                        "blocked": e.blocked.to_string(),
                        "proxy_port": e.proxy_port,
                        "proxy_mark": format!("{:#x}", e.proxy_mark),
                        "events_all": e.events_all,
                        "ech_outer_sni": e.ech_outer_sni,
                    })
                });
                let v = json!({"enforcing": enforcing, "by_verdict": verdicts, "by_stage": stages, "other": other,
                    "maps": fill.iter().map(|(n, u)| (n.clone(), *u)).collect::<BTreeMap<_, _>>(),
                    "generation": state.generation, "reloads": state.reloads, "reload_errors": state.reload_errors,
                    "last_error": state.last_error,
                    "interfaces": state.interfaces.iter().map(|(i, m)| json!({"name": i, "mode": m})).collect::<Vec<_>>(),
                    "unattached": state.unattached});
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                )
            } else {
                if let Some(e) = &enforcing {
                    let _ =
                        writeln!(
                        out,
                        "enforcing:  outbound policy {}, blocked {}, proxy port {}, mark {:#x}{}{}",
                        e.outbound_policy,
                        e.blocked,
                        e.proxy_port,
                        e.proxy_mark,
                        if e.events_all { ", events for all" } else { "" },
                        if e.ech_outer_sni { ", ECH by outer SNI" } else { "" },
                    );
                }
                let _ = writeln!(
                    out,
                    "by verdict: {}",
                    verdicts
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                let _ = writeln!(
                    out,
                    "by stage:   {}",
                    stages
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                let _ = writeln!(out, "other:      {other}");
                let _ = writeln!(
                    out,
                    "maps:       {}",
                    fill.iter()
                        .map(|(n, u)| format!("{n}={u}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                let _ = writeln!(
                    out,
                    "interfaces: {}",
                    state
                        .interfaces
                        .iter()
                        .map(|(i, m)| format!("{i} ({m})"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                if !state.unattached.is_empty() {
                    let _ = writeln!(
                        out,
                        "NOT ATTACHED (not classified): {}",
                        state.unattached.join(" ")
                    );
                }
                let _ = writeln!(
                    out,
                    "registry:   {} reloads, {} refused",
                    state.reloads, state.reload_errors
                );
                match &state.last_error {
                    Some(e) => writeln!(out, "last error: {e}"),
                    None => writeln!(out, "last error: none"),
                }
            }
        }
    };
    match r {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
