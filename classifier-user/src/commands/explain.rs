//! `meshclass explain`: builds the packets of a connection, runs them through the loaded program
//! against the live maps (BPF_PROG_TEST_RUN) and through the reference model, and shows both.

use std::net::{IpAddr, SocketAddr};

use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
use classifier_common::{flow_state, stage, verdict, FlowKey, NO_SERVICE};
use serde_json::json;

use crate::{
    attach::CLASSIFY_PROGRAM,
    daemon::{pins::Pins, state::State},
    dataplane::PinnedFlows,
    model::Model,
    packet::{self, tls::HelloOptions, Packet, TcpFlow},
    plan::L4,
};

/// What to explain.
#[derive(Clone, Debug)]
pub struct ExplainArgs {
    pub dst: SocketAddr,
    pub src: Option<IpAddr>,
    pub proto: L4,
    pub sni: Option<String>,
    pub host: Option<String>,
    pub h2c: Option<String>,
    pub json: bool,
    pub pin_dir: std::path::PathBuf,
}

/// One side's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    verdict: u8,
    stage: u8,
    service: u32,
}

/// Source ports tried for one whose flow bucket has a free slot.
const EXPLAIN_PORT_TRIES: u32 = 256;

fn flow_key(src: SocketAddr, dst: SocketAddr, proto: u8) -> FlowKey {
    let mut k = FlowKey {
        family: if dst.is_ipv4() {
            classifier_common::family::V4
        } else {
            classifier_common::family::V6
        },
        proto,
        sport: src.port().to_be(),
        dport: dst.port().to_be(),
        ..Default::default()
    };
    let put = |a: IpAddr, out: &mut [u8; 16]| match a {
        IpAddr::V4(v) => out[..4].copy_from_slice(&v.octets()),
        IpAddr::V6(v) => *out = v.octets(),
    };
    put(src.ip(), &mut k.saddr);
    put(dst.ip(), &mut k.daddr);
    k
}

/// Runs explain: 0 the kernel and the model agree, 3 they disagree, 2 could not run.
pub fn run(args: &ExplainArgs) -> i32 {
    match explain(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn explain(args: &ExplainArgs) -> Result<i32, String> {
    let pins = Pins::new(&args.pin_dir);
    if let Some(why) = pins.missing() {
        return Err(why);
    }
    let state = State::read(&pins.state_file()).map_err(|e| format!("reading the state: {e}"))?;
    let settings = state.settings.unwrap_or_default();
    let src_ip = args.src.unwrap_or_else(|| {
        if args.dst.is_ipv4() {
            "198.18.0.1".parse().expect("literal")
        } else {
            "fd00:198:18::1".parse().expect("literal")
        }
    });
    if src_ip.is_ipv4() != args.dst.is_ipv4() {
        return Err("--src and --dst must be of the same address family".into());
    }
    let proto = match args.proto {
        L4::Tcp => classifier_common::proto::TCP,
        L4::Udp => classifier_common::proto::UDP,
    };
    let mut flows = PinnedFlows::open(|name| pins.map(name))?;
    // A source port of its own, so that the connection never meets a real one in the flow
    // table, and one whose bucket has a free slot, so that its entry replaces no live flow.
    let ports =
        (0..EXPLAIN_PORT_TRIES).map(|i| 40000 + ((std::process::id() + i * 7919) % 20000) as u16);
    let roomy = ports
        .clone()
        .find(|&p| flows.has_room(&flow_key(SocketAddr::new(src_ip, p), args.dst, proto)));
    let sport = match roomy {
        Some(p) => p,
        None => {
            eprintln!(
                "warning: the flow table's buckets tried are full: the explained connection's \
                 entry replaces a flow, as a new connection would"
            );
            ports.clone().next().unwrap_or(40000)
        }
    };
    let src = SocketAddr::new(src_ip, sport);

    let mut frames: Vec<(String, Vec<u8>)> = Vec::new();
    match args.proto {
        L4::Udp => frames.push((
            "datagram".into(),
            Packet::udp(
                src_ip,
                args.dst.ip(),
                sport,
                args.dst.port(),
                b"meshclass-explain",
            )
            .build(),
        )),
        L4::Tcp => {
            let mut flow = TcpFlow::new(src_ip, args.dst.ip(), sport, args.dst.port(), 0x1000_0000);
            frames.push(("SYN".into(), flow.syn().build()));
            if let Some(sni) = &args.sni {
                let hello = packet::tls::client_hello(Some(sni), &HelloOptions::default())
                    .map_err(|e| format!("building a ClientHello: {e}"))?;
                frames.push((format!("ClientHello sni={sni}"), flow.data(&hello).build()));
            } else if let Some(host) = &args.host {
                let req = packet::http::request("GET", Some(host.as_bytes()), &Default::default());
                frames.push((format!("HTTP request host={host}"), flow.data(&req).build()));
            } else if let Some(authority) = &args.h2c {
                let [start, headers] = packet::h2c::request_in_two(authority.as_bytes());
                frames.push(("h2c preface, SETTINGS".into(), flow.data(&start).build()));
                frames.push((
                    format!("h2c HEADERS :authority={authority}"),
                    flow.data(&headers).build(),
                ));
            }
        }
    }
    let key = flow_key(src, args.dst, proto);

    let prog = SchedClassifier::from_pin(pins.program(CLASSIFY_PROGRAM))
        .map_err(|e| format!("opening the pinned program: {e}"))?;
    flows.remove(&key);

    let mut model = Model::new(&state.plan, &settings);
    let mut rows = Vec::new();
    let mut disagree = false;
    for (what, frame) in &frames {
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        // A packet of a connection already decided gets the connection's verdict at stage FLOW.
        let decided_before = matches!(flows.get(&key), Some(f) if f.state == flow_state::DECIDED);
        let result = prog
            .test_run(opts)
            .map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
        let kernel = match flows.get(&key) {
            Some(f) if f.state == flow_state::PENDING || f.state == flow_state::FOLLOWING => {
                Answer {
                    verdict: verdict::PASS,
                    stage: stage::PENDING,
                    service: NO_SERVICE,
                }
            }
            Some(f) if decided_before => Answer {
                verdict: f.verdict,
                stage: stage::FLOW,
                service: f.service_id,
            },
            Some(f) => Answer {
                verdict: f.verdict,
                stage: f.stage,
                service: f.service_id,
            },
            None => Answer {
                verdict: verdict::NONE,
                stage: stage::NONE,
                service: NO_SERVICE,
            },
        };
        let m = model.classify(frame);
        let model_answer = Answer {
            verdict: m.verdict,
            stage: m.stage,
            service: m.service_id,
        };
        let agree = kernel == model_answer;
        disagree |= !agree;
        rows.push((
            what.clone(),
            result.return_value,
            kernel,
            model_answer,
            m.explain,
            agree,
        ));
    }
    flows.remove(&key);

    let service_name = |id: u32| {
        if id == NO_SERVICE {
            "-".to_string()
        } else {
            state
                .plan
                .services
                .get(id as usize)
                .map(|s| s.key())
                .unwrap_or_else(|| format!("#{id}"))
        }
    };
    // The connection's decision: the packet that decided it (not a FLOW or PENDING one).
    let last = rows
        .iter()
        .find(|r| r.2.stage != stage::FLOW && r.2.stage != stage::PENDING)
        .or(rows.last())
        .cloned();
    if args.json {
        let (_, _, k, m, why, agree) = last.ok_or("no packets")?;
        let v = json!({
            "dst": args.dst.to_string(), "src": src.to_string(),
            "protocol": format!("{:?}", args.proto).to_lowercase(),
            "verdict": verdict::name(k.verdict), "stage": stage::name(k.stage),
            "service": service_name(k.service),
            "model": {"verdict": verdict::name(m.verdict), "stage": stage::name(m.stage), "service": service_name(m.service), "why": why},
            "agree": agree,
            "packets": rows.iter().map(|(w, rv, k, m, _, a)| json!({
                "packet": w, "retval": rv,
                "kernel": {"verdict": verdict::name(k.verdict), "stage": stage::name(k.stage), "service": service_name(k.service)},
                "model": {"verdict": verdict::name(m.verdict), "stage": stage::name(m.stage), "service": service_name(m.service)},
                "agree": a})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("{} -> {} ({:?})", src, args.dst, args.proto);
        let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let sw = rows
            .iter()
            .map(|r| service_name(r.2.service).len())
            .max()
            .unwrap_or(0);
        for (what, _, k, m, why, agree) in &rows {
            println!(
                "  {what:<w$} kernel: {:<8} {:<8} {:<sw$} model: {:<8} {:<8}{}",
                verdict::name(k.verdict),
                stage::name(k.stage),
                service_name(k.service),
                verdict::name(m.verdict),
                stage::name(m.stage),
                if *agree {
                    String::new()
                } else {
                    "   <-- DISAGREE".into()
                }
            );
            println!("  {:<w$} why: {why}", "");
        }
    }
    if disagree {
        eprintln!("warning: the kernel program and the reference model DISAGREE on this connection: this is a bug, please report it with the lines above");
        Ok(3)
    } else {
        Ok(0)
    }
}
