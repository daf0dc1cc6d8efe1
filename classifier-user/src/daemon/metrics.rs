//! Prometheus metrics, read from the maps at scrape time.

use std::sync::Arc;

use classifier_common::{counter, stage, verdict};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use super::Shared;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    map: String,
}

/// Renders every metric in the OpenMetrics text format.
pub fn render(shared: &Shared) -> String {
    let mut reg = Registry::with_prefix("meshclass");
    let by_verdict = Family::<VerdictLabel, Counter>::default();
    let by_stage = Family::<StageLabel, Counter>::default();
    let by_service = Family::<ServiceLabel, Counter>::default();
    let fill = Family::<MapLabel, Gauge>::default();
    let reloads = Counter::<u64>::default();
    let reload_errors = Counter::<u64>::default();
    let last_error = Gauge::<i64>::default();
    let new_flows = Counter::<u64>::default();
    let ech = Counter::<u64>::default();
    let malformed = Counter::<u64>::default();
    let events_lost = Counter::<u64>::default();
    let dns_ok = Counter::<u64>::default();
    let dns_failed = Counter::<u64>::default();
    let interfaces = Gauge::<i64>::default();
    let unattached = Gauge::<i64>::default();
    let attach_failures = Counter::<u64>::default();
    {
        let dp = shared.dataplane.lock().unwrap_or_else(|p| p.into_inner());
        let state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(c) = dp.counters() {
            let get = |i: u32| c.get(i as usize).copied().unwrap_or(0);
            for v in 1..verdict::COUNT as u8 {
                by_verdict
                    .get_or_create(&VerdictLabel {
                        verdict: verdict::name(v).into(),
                    })
                    .inc_by(get(counter::BY_VERDICT + u32::from(v)));
            }
            for s in 1..stage::COUNT as u8 {
                by_stage
                    .get_or_create(&StageLabel {
                        stage: stage::name(s).into(),
                    })
                    .inc_by(get(counter::BY_STAGE + u32::from(s)));
            }
            new_flows.inc_by(get(counter::NEW_FLOWS));
            ech.inc_by(get(counter::ECH_SEEN));
            malformed.inc_by(get(counter::MALFORMED));
            events_lost.inc_by(get(counter::EVENTS_LOST));
        }
        if let Ok(hits) = dp.entry_hits() {
            for ((service, verdict), n) in state.service_hits(&hits) {
                if n > 0 {
                    by_service
                        .get_or_create(&ServiceLabel {
                            service,
                            verdict: verdict.name().into(),
                        })
                        .inc_by(n);
                }
            }
        }
        if let Ok(levels) = dp.fill_levels() {
            for (name, used) in levels {
                fill.get_or_create(&MapLabel { map: name }).set(used as i64);
            }
        }
        interfaces.set(state.interfaces.len() as i64);
        unattached.set(state.unattached.len() as i64);
        attach_failures.inc_by(state.attach_failures);
        dns_ok.inc_by(state.dns_resolutions);
        dns_failed.inc_by(state.dns_failures);
        reloads.inc_by(state.reloads);
        reload_errors.inc_by(state.reload_errors);
        last_error.set(i64::from(state.last_error.is_some()));
    }
    reg.register("packets", "Packets classified, by verdict", by_verdict);
    reg.register(
        "packets_by_stage",
        "Packets classified, by deciding stage",
        by_stage,
    );
    reg.register(
        "decisions",
        "New connections decided by a registry entry, by service",
        by_service,
    );
    reg.register("new_flows", "New connections decided", new_flows);
    reg.register(
        "ech_hellos",
        "ClientHellos carrying Encrypted Client Hello",
        ech,
    );
    reg.register(
        "malformed_packets",
        "Packets too short or malformed to classify",
        malformed,
    );
    reg.register(
        "events_lost",
        "Decision events lost to a full ring buffer",
        events_lost,
    );
    reg.register("dns_resolutions", "DNS names resolved", dns_ok);
    reg.register("dns_failures", "DNS resolutions that failed", dns_failed);
    reg.register("map_entries", "Entries held in each map", fill);
    reg.register(
        "interfaces",
        "Interfaces the classifier is attached to",
        interfaces,
    );
    reg.register(
        "interfaces_unattached",
        "Interfaces named or matched by --iface that could not be attached (not classified)",
        unattached,
    );
    reg.register(
        "interface_attach_failures",
        "Attaches that failed (each interface and index once)",
        attach_failures,
    );
    reg.register("registry_reloads", "Registry reloads applied", reloads);
    reg.register("registry_errors", "Registry reloads refused", reload_errors);
    reg.register(
        "registry_last_reload_failed",
        "1 while the last reload was refused (the previous registry stays in force)",
        last_error,
    );
    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

/// Serves `GET /metrics` on `listener` in the background.
pub fn serve(listener: TcpListener, shared: Arc<Shared>) {
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if req.starts_with("GET /metrics") {
                    let s = shared.clone();
                    let body = tokio::task::spawn_blocking(move || render(&s))
                        .await
                        .unwrap_or_default();
                    ("200 OK", body)
                } else {
                    ("404 Not Found", "try /metrics\n".to_string())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
            });
        }
    });
}
