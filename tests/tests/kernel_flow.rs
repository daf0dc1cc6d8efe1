//! Kernel unit tests of flows: the inbound program's reply entries, decision times, and
//! eviction from a full bucket.

#[path = "kernel_common.rs"]
mod common;

use classifier_common::{flow_state, stage, verdict, NO_SERVICE};
use common::*;
use meshclass::{
    packet::{tcp_flags, Packet},
    plan::{Verdict, L4},
    settings::Blocked,
};

#[test]
fn inbound_connections_let_their_replies_pass() {
    let mut dp = dataplane();
    dp.apply(&plan(vec![]), &registry_only(Blocked::Drop))
        .unwrap();
    // A client elsewhere opens a connection to the workload (10.0.0.1:8080).
    let syn = Packet::tcp(ip("10.8.0.2"), ip("10.0.0.1"), 50000, 8080, tcp_flags::SYN).build();
    assert_eq!(dp.test_run_inbound(&syn).unwrap(), TC_ACT_UNSPEC);
    let flows = dp.flows().unwrap();
    let (k, v) = flows
        .iter()
        .find(|(k, _)| k.sport == 8080u16.to_be())
        .expect("reply entry");
    assert_eq!(k.dport, 50000u16.to_be());
    assert_eq!(
        (v.state, v.verdict, v.stage, v.service_id),
        (flow_state::DECIDED, verdict::PASS, stage::FLOW, NO_SERVICE)
    );
    // The workload's SYN-ACK passes by that entry although the policy blocks.
    let synack = Packet::tcp(
        ip("10.0.0.1"),
        ip("10.8.0.2"),
        8080,
        50000,
        tcp_flags::SYN | tcp_flags::ACK,
    )
    .build();
    let d = run(&mut dp, &synack);
    expect(&d, verdict::PASS, stage::FLOW);
    // An outbound packet of an unknown connection is blocked.
    let other = Packet::tcp(ip("10.0.0.1"), ip("10.8.0.2"), 8081, 50000, tcp_flags::ACK).build();
    expect(&run(&mut dp, &other), verdict::DROP, stage::POLICY);
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the call to fill.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The program times decisions by the jiffy clock converted with the tick measured at load
/// (`Layout::tick_ns`): CLOCK_MONOTONIC to one tick, for the outbound and the inbound program.
#[test]
fn decisions_are_timed_by_the_monotonic_clock_to_one_tick() {
    let mut dp = dataplane();
    dp.apply(
        &plan(vec![entry(
            exact("10.61.0.1", 443, L4::Tcp),
            1,
            Verdict::Pass,
        )]),
        &allow_any(),
    )
    .unwrap();
    let l = dp.layout().unwrap();
    eprintln!("tick {} ns", l.tick_ns);
    // The kernel's HZ is between 24 and 1024.
    assert!(
        (976_000..=41_700_000).contains(&l.tick_ns),
        "tick of {} ns",
        l.tick_ns
    );
    for round in 0..3u16 {
        if round > 0 {
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        let sport = 41000 + round;
        let syn = Packet::tcp(ip("10.0.0.1"), ip("10.61.0.1"), sport, 443, tcp_flags::SYN).build();
        let inbound =
            Packet::tcp(ip("10.9.0.2"), ip("10.0.0.1"), sport, 8080, tcp_flags::SYN).build();
        let before = monotonic_ns();
        expect(&run(&mut dp, &syn), verdict::PASS, stage::EXACT);
        assert_eq!(dp.test_run_inbound(&inbound).unwrap(), TC_ACT_UNSPEC);
        let after = monotonic_ns();
        let flows = dp.flows().unwrap();
        for (what, from, to) in [("outbound", sport, 443u16), ("inbound reply", 8080, sport)] {
            let (_, v) = flows
                .iter()
                .find(|(k, _)| k.sport == from.to_be() && k.dport == to.to_be())
                .unwrap_or_else(|| panic!("{what} flow of round {round}"));
            // The start of the decision's jiffy: up to a tick early (one more for the grid's
            // phase against the samples taken at load).
            assert!(
                v.decided_ns + 2 * l.tick_ns >= before && v.decided_ns <= after + l.tick_ns,
                "{what} decided at {} ns, outside {before}..{after} by more than a tick of {} ns",
                v.decided_ns,
                l.tick_ns
            );
        }
    }
}

/// A full bucket makes room by the clock (docs/decision.md §3): a flow used since the hand last
/// passed keeps its slot, an idle one goes, and a packet of the evicted flow is then looked up
/// as new. The model, laid out like the program's table, forgets the same flows.
/// `n` source ports from `from` whose connections (their SYN: `syn(port)`) fall into one
/// bucket of the flow table laid out as `layout` says.
fn same_bucket(
    layout: &classifier_common::Layout,
    syn: impl Fn(u16) -> Vec<u8>,
    from: u16,
    n: usize,
) -> Vec<u16> {
    use classifier_common::{flow_bucket, flow_hash};
    let bucket_of = |sport: u16| {
        let k = meshclass::dataplane::flow_key(&syn(sport)).unwrap();
        flow_bucket(flow_hash(&k.words(), layout.flow_seed), layout.flow_mask)
    };
    let target = bucket_of(from);
    let ports: Vec<u16> = (from..u16::MAX)
        .filter(|&s| bucket_of(s) == target)
        .take(n)
        .collect();
    assert_eq!(ports.len(), n, "{n} ports into one bucket");
    ports
}

#[test]
fn a_full_bucket_evicts_by_the_clock_and_the_model_forgets_the_same_flows() {
    use classifier_common::FLOW_WAYS;
    use meshclass::{model::Model, packet::TcpFlow};

    let mut dp = dataplane();
    let p = plan(vec![entry(
        exact("10.1.0.5", 8080, L4::Tcp),
        1,
        Verdict::Pass,
    )]);
    let settings = allow_any();
    dp.apply(&p, &settings).unwrap();
    let layout = dp.layout().unwrap();
    let mut model = Model::with_flow_table(&p, &settings, layout.flow_mask, layout.flow_seed);
    // Seven connections whose keys fall into one bucket.
    let conn = |sport: u16| TcpFlow::new(ip("10.0.0.1"), ip("10.1.0.5"), sport, 8080, 7000);
    let sports = same_bucket(&layout, |s| conn(s).syn().build(), 30000, FLOW_WAYS + 3);
    let mut send = |dp: &mut meshclass::dataplane::Dataplane, f: Vec<u8>, want: u8| {
        let k = run(dp, &f);
        let m = model.classify(&f);
        assert_eq!(
            (k.verdict, k.stage),
            (m.verdict, m.stage),
            "kernel and model"
        );
        assert_eq!(k.stage, want, "stage: {}", m.explain);
    };
    let syn = |i: usize| conn(sports[i]).syn().build();
    let ack = |i: usize| conn(sports[i]).ack().build();
    // Four connections fill the bucket; each is then established.
    for i in 0..FLOW_WAYS {
        send(&mut dp, syn(i), stage::EXACT);
        send(&mut dp, ack(i), stage::FLOW);
    }
    // All four used: the clock clears every bit and takes the hand's slot (the first).
    send(&mut dp, syn(4), stage::EXACT);
    // Connection 2 is used again; connection 1 is not.
    send(&mut dp, ack(2), stage::FLOW);
    // The hand moved past slot 0: slot 1 (connection 1, idle) goes.
    send(&mut dp, syn(5), stage::EXACT);
    // Next, slot 2 (connection 2) was used: it keeps its slot; slot 3 (connection 3) goes.
    send(&mut dp, syn(6), stage::EXACT);
    let kept: Vec<u16> = {
        let flows = dp.flows().unwrap();
        let mut v: Vec<u16> = flows
            .iter()
            .map(|(k, _)| u16::from_be(k.sport))
            .filter(|s| sports.contains(s))
            .collect();
        v.sort();
        v
    };
    let mut want = vec![sports[2], sports[4], sports[5], sports[6]];
    want.sort();
    assert_eq!(kept, want, "flows left in the bucket");
    // The kept connection's next packet is established; an evicted one's is looked up as new
    // (stage EXACT) and takes a slot again: every bit is set by then, so the hand's (slot 0,
    // connection 4), in the program and in the model alike.
    send(&mut dp, ack(2), stage::FLOW);
    send(&mut dp, ack(0), stage::EXACT);
    send(&mut dp, ack(0), stage::FLOW);
    send(&mut dp, ack(4), stage::EXACT);
    assert!(model.flow_evictions() >= 3);
}

/// Every decision by an entry counts one hit for it (docs/decision.md §8), however the hits
/// are split between a CPU's hit cache slot and `ENTRY_HITS`: two entries whose ids share a
/// slot take it from each other, each time moving the other's count to `ENTRY_HITS`, and an
/// entry's hits read the same by id and in the whole list.
#[test]
fn entry_hits_count_every_decision_through_the_per_cpu_slots() {
    use classifier_common::{hit_slot, HIT_CACHE_SLOTS};
    use meshclass::dataplane::{Capacities, Dataplane};

    let n = HIT_CACHE_SLOTS as usize + 8;
    let caps = Capacities {
        exact: 2 * n as u32,
        cidr: 256,
        names: 1024,
        flows: 4096,
        pending: 256,
        entry_ids: 2 * n as u32,
        events_bytes: 1 << 16,
    };
    let mut dp = Dataplane::load(&caps).expect("loading the classifier");
    let addr = |i: usize| format!("10.72.{}.{}", i / 250, i % 250 + 1);
    let p = plan(
        (0..n)
            .map(|i| entry(exact(&addr(i), 443, L4::Tcp), i as u32, Verdict::Pass))
            .collect(),
    );
    dp.apply(&p, &allow_any()).unwrap();
    let ids = dp.entry_ids(&p);
    assert_eq!(ids.len(), n);
    // Two entries whose ids share a slot, and a third entry never hit.
    let a = 3;
    let b = (0..n)
        .find(|&j| j != a && hit_slot(ids[j]) == hit_slot(ids[a]))
        .expect("two ids in one slot");
    let c = (0..n).find(|&j| j != a && j != b).unwrap();
    let mut sport = 42000u16;
    let mut hit = |dp: &mut Dataplane, i: usize, times: usize| {
        for _ in 0..times {
            sport += 1;
            let syn = Packet::tcp(ip("10.0.0.1"), ip(&addr(i)), sport, 443, tcp_flags::SYN).build();
            expect(&run(dp, &syn), verdict::PASS, stage::EXACT);
        }
    };
    let hits = |dp: &Dataplane, i: usize| {
        let one = dp.entry_hit(ids[i]).unwrap();
        let all = dp.entry_hits().unwrap()[ids[i] as usize];
        assert_eq!(one, all, "entry {i}: by id and in the list");
        one
    };
    hit(&mut dp, a, 3);
    assert_eq!((hits(&dp, a), hits(&dp, b)), (3, 0));
    hit(&mut dp, b, 2);
    assert_eq!((hits(&dp, a), hits(&dp, b)), (3, 2));
    hit(&mut dp, a, 4);
    hit(&mut dp, b, 1);
    hit(&mut dp, a, 1);
    assert_eq!((hits(&dp, a), hits(&dp, b), hits(&dp, c)), (8, 3, 0));
    // An established packet is no new decision: no hit.
    let ack = Packet::tcp(ip("10.0.0.1"), ip(&addr(a)), sport, 443, tcp_flags::ACK).build();
    expect(&run(&mut dp, &ack), verdict::PASS, stage::FLOW);
    assert_eq!(hits(&dp, a), 8);
}

/// A classifier with small maps, for the tests of entry ids and hits.
fn small_dataplane() -> meshclass::dataplane::Dataplane {
    let caps = meshclass::dataplane::Capacities {
        exact: 64,
        cidr: 256,
        names: 1024,
        flows: 4096,
        pending: 256,
        entry_ids: 64,
        events_bytes: 1 << 16,
    };
    meshclass::dataplane::Dataplane::load(&caps).expect("loading the classifier")
}

/// Runs the SYN of a new connection from 10.0.0.1 (source port: the next `sport`) to `dst`:443.
fn new_connection(
    dp: &mut meshclass::dataplane::Dataplane,
    sport: &mut u16,
    dst: &str,
) -> meshclass::dataplane::KernelDecision {
    *sport += 1;
    let syn = Packet::tcp(ip("10.0.0.1"), ip(dst), *sport, 443, tcp_flags::SYN).build();
    run(dp, &syn)
}

/// An entry id freed by one apply is given to a new entry by a later one (docs/decision.md §8):
/// the new entry's hits start at 0, not at its predecessor's, while its predecessor's last
/// counts may still sit in this CPU's hit cache slot; entries kept across the apply keep theirs.
#[test]
fn a_reused_entry_id_starts_with_no_hits() {
    use meshclass::dataplane::Dataplane;

    let mut dp = small_dataplane();
    let (a, b, c) = ("10.73.0.1", "10.73.0.2", "10.73.0.3");
    let first = plan(vec![
        entry(exact(a, 443, L4::Tcp), 1, Verdict::Pass),
        entry(exact(b, 443, L4::Tcp), 2, Verdict::Pass),
    ]);
    dp.apply(&first, &allow_any()).unwrap();
    let old = dp.entry_ids(&first);
    let mut sport = 43000u16;
    let mut hit = |dp: &mut Dataplane, dst: &str, times: usize| {
        for _ in 0..times {
            expect(
                &new_connection(dp, &mut sport, dst),
                verdict::PASS,
                stage::EXACT,
            );
        }
    };
    let hits = |dp: &Dataplane, id: u32| {
        let one = dp.entry_hit(id).unwrap();
        assert_eq!(
            one,
            dp.entry_hits().unwrap()[id as usize],
            "id {id}: by id, in the list"
        );
        one
    };
    hit(&mut dp, a, 5);
    hit(&mut dp, b, 2);
    assert_eq!((hits(&dp, old[0]), hits(&dp, old[1])), (5, 2));

    // a goes, c comes and takes a's id.
    let second = plan(vec![
        entry(exact(b, 443, L4::Tcp), 2, Verdict::Pass),
        entry(exact(c, 443, L4::Tcp), 3, Verdict::Pass),
    ]);
    let report = dp.apply(&second, &allow_any()).unwrap();
    let new = dp.entry_ids(&second);
    assert_eq!(new, vec![old[1], old[0]], "b keeps its id, c takes a's");
    assert_eq!(report.retired, [(old[0], 5)], "a's count leaves with it");
    assert_eq!((hits(&dp, new[0]), hits(&dp, new[1])), (2, 0));
    hit(&mut dp, c, 3);
    hit(&mut dp, b, 1);
    assert_eq!((hits(&dp, new[0]), hits(&dp, new[1])), (3, 3));

    // Applied again unchanged: nothing is new, nothing is reset.
    let report = dp.apply(&second, &allow_any()).unwrap();
    assert_eq!((hits(&dp, new[0]), hits(&dp, new[1])), (3, 3));
    assert_eq!(report.retired, []);
}

/// An entry whose slot stays but decides for another service or with another verdict starts
/// at 0 hits, and an apply reports the final count of every entry that leaves (its slot given
/// to another owner, or removed) by the id it had: what the daemon keeps so that its counts
/// by service never go down.
#[test]
fn an_apply_reports_the_hits_of_the_entries_that_leave() {
    use meshclass::dataplane::Dataplane;

    let mut dp = small_dataplane();
    let (a, b, c, d) = ("10.74.0.1", "10.74.0.2", "10.74.0.3", "10.74.0.4");
    let first = plan(vec![
        entry(exact(a, 443, L4::Tcp), 1, Verdict::Pass),
        entry(exact(b, 443, L4::Tcp), 1, Verdict::Pass),
        entry(exact(c, 443, L4::Tcp), 2, Verdict::Pass),
        entry(exact(d, 443, L4::Tcp), 2, Verdict::Pass),
    ]);
    dp.apply(&first, &allow_any()).unwrap();
    let ids = dp.entry_ids(&first);
    let mut sport = 44000u16;
    let mut hit = |dp: &mut Dataplane, dst: &str, times: usize| {
        for _ in 0..times {
            new_connection(dp, &mut sport, dst);
        }
    };
    hit(&mut dp, a, 3);
    hit(&mut dp, b, 2);
    hit(&mut dp, c, 4);
    hit(&mut dp, d, 1);

    // a goes to service 2, b is removed, c now redirects, d stays as it was.
    let second = plan(vec![
        entry(exact(a, 443, L4::Tcp), 2, Verdict::Pass),
        entry(exact(c, 443, L4::Tcp), 2, Verdict::Redirect),
        entry(exact(d, 443, L4::Tcp), 2, Verdict::Pass),
    ]);
    let report = dp.apply(&second, &allow_any()).unwrap();
    assert_eq!(
        dp.entry_ids(&second),
        [ids[0], ids[2], ids[3]],
        "kept slots keep their ids"
    );
    let mut retired = report.retired.clone();
    retired.sort_unstable();
    assert_eq!(retired, [(ids[0], 3), (ids[1], 2), (ids[2], 4)]);
    let hits = |dp: &Dataplane| [ids[0], ids[2], ids[3]].map(|id| dp.entry_hit(id).unwrap());
    assert_eq!(
        hits(&dp),
        [0, 0, 1],
        "a and c start again; d keeps its count"
    );
    hit(&mut dp, a, 2);
    hit(&mut dp, c, 1);
    assert_eq!(hits(&dp), [2, 1, 1]);
}

/// BIG TCP: a GSO packet of more than 64 KiB, as a workload's stack hands it to its interface
/// with a large `gso_max_size`, carries an IPv4 total length (IPv6 payload length) of 0. It
/// belongs to its flow and gets the flow's verdict; without GSO the same header is malformed.
/// Kernel and model agree on both.
#[test]
fn a_big_tcp_packet_gets_its_flows_verdict() {
    let mut dp = dataplane();
    let p = plan(vec![
        entry(exact("10.30.0.1", 443, L4::Tcp), 1, Verdict::Pass),
        entry(exact("fd00:30::1", 443, L4::Tcp), 2, Verdict::Pass),
    ]);
    let settings = registry_only(Blocked::Drop);
    dp.apply(&p, &settings).unwrap();
    let mut model = meshclass::model::Model::new(&p, &settings);
    for (dst, len_at) in [("10.30.0.1", 14 + 2), ("fd00:30::1", 14 + 4)] {
        let src = if dst.contains(':') {
            "fd00::1"
        } else {
            "10.0.0.1"
        };
        let mut f = meshclass::packet::TcpFlow::new(ip(src), ip(dst), 47000, 443, 9);
        let syn = f.syn().build();
        let (k, m) = (run(&mut dp, &syn), model.classify(&syn));
        expect(&k, verdict::PASS, stage::EXACT);
        assert_eq!((k.verdict, k.stage), (m.verdict, m.stage));
        let mut big = f.data(&[0x5a; 1400]).build();
        big[len_at..len_at + 2].fill(0);
        let k = dp.test_run_gso(&big, 1400, 47).unwrap();
        let m = model.classify_gso(&big, true);
        expect(&k, verdict::PASS, stage::FLOW);
        assert_eq!((k.verdict, k.stage), (m.verdict, m.stage), "{dst}: {m:?}");
        // The same header without GSO: malformed, blocked under REGISTRY_ONLY.
        let (k, m) = (run(&mut dp, &big), model.classify(&big));
        expect(&k, verdict::DROP, stage::OTHER);
        assert_eq!((k.verdict, k.stage), (m.verdict, m.stage), "{dst}: {m:?}");
    }
}

/// A packet that closes its connection (FIN, RST) clears its slot's reference bit instead of
/// setting it: when a bucket is full, the clock takes a closed connection's slot before an idle
/// live one's, which then keeps its verdict. Kernel and model alike.
#[test]
fn closed_connections_are_evicted_before_idle_live_ones() {
    use classifier_common::FLOW_WAYS;
    use meshclass::{model::Model, packet::TcpFlow};

    let mut dp = dataplane();
    let p = plan(vec![entry(
        exact("10.1.0.6", 8080, L4::Tcp),
        1,
        Verdict::Pass,
    )]);
    let settings = allow_any();
    dp.apply(&p, &settings).unwrap();
    let layout = dp.layout().unwrap();
    let mut model = Model::with_flow_table(&p, &settings, layout.flow_mask, layout.flow_seed);
    let conn = |sport: u16| TcpFlow::new(ip("10.0.0.1"), ip("10.1.0.6"), sport, 8080, 7000);
    let sports = same_bucket(&layout, |s| conn(s).syn().build(), 31000, FLOW_WAYS + 1);
    let mut send = |dp: &mut meshclass::dataplane::Dataplane, f: Vec<u8>, want: u8| {
        let (k, m) = (run(dp, &f), model.classify(&f));
        assert_eq!((k.verdict, k.stage), (m.verdict, m.stage), "{}", m.explain);
        assert_eq!(k.stage, want, "stage: {}", m.explain);
    };
    // Four connections fill the bucket and are established; the first then idles, the other
    // three close (a FIN from the workload, or a RST).
    for (i, &s) in sports[..FLOW_WAYS].iter().enumerate() {
        send(&mut dp, conn(s).syn().build(), stage::EXACT);
        send(&mut dp, conn(s).ack().build(), stage::FLOW);
        if i > 0 {
            let flags = if i == 3 {
                tcp_flags::RST
            } else {
                tcp_flags::FIN | tcp_flags::ACK
            };
            let close = Packet::tcp(ip("10.0.0.1"), ip("10.1.0.6"), s, 8080, flags)
                .seq_ack(7001, 1)
                .build();
            send(&mut dp, close, stage::FLOW);
        }
    }
    // A fifth connection takes a closed one's slot: the idle live one is still known.
    send(&mut dp, conn(sports[4]).syn().build(), stage::EXACT);
    send(&mut dp, conn(sports[0]).ack().build(), stage::FLOW);
    assert_eq!(model.flow_evictions(), 1);
}

/// A UDP flow has no first packet after which its verdict is settled: a reload decides it anew
/// at its next datagram, so registering a destination lets a socket that was blocked through,
/// and removing it blocks one that passed. The inbound program's reply entries stay. Kernel
/// and model alike.
#[test]
fn a_reload_decides_udp_flows_anew() {
    use meshclass::model::Model;

    let mut dp = dataplane();
    let settings = registry_only(Blocked::Drop);
    let empty = plan(vec![]);
    let with_dns = plan(vec![entry(
        exact("10.9.0.53", 53, L4::Udp),
        1,
        Verdict::Pass,
    )]);
    dp.apply(&empty, &settings).unwrap();
    let mut model = Model::new(&empty, &settings);
    let q = Packet::udp(ip("10.0.0.1"), ip("10.9.0.53"), 40053, 53, b"query").build();
    // A reply entry: a client elsewhere sent the workload a datagram.
    let inbound = Packet::udp(ip("10.8.0.7"), ip("10.0.0.1"), 5000, 6000, b"hi").build();
    dp.test_run_inbound(&inbound).unwrap();
    model.inbound(&inbound);
    let reply = Packet::udp(ip("10.0.0.1"), ip("10.8.0.7"), 6000, 5000, b"re").build();
    let check =
        |dp: &mut meshclass::dataplane::Dataplane, model: &mut Model, f: &[u8], v: u8, st: u8| {
            let (k, m) = (run(dp, f), model.classify(f));
            assert_eq!((k.verdict, k.stage), (m.verdict, m.stage), "{}", m.explain);
            expect(&k, v, st);
        };
    check(&mut dp, &mut model, &q, verdict::DROP, stage::POLICY);
    check(&mut dp, &mut model, &q, verdict::DROP, stage::FLOW);
    check(&mut dp, &mut model, &reply, verdict::PASS, stage::FLOW);
    dp.apply(&with_dns, &settings).unwrap();
    model.update(&with_dns, &settings);
    check(&mut dp, &mut model, &q, verdict::PASS, stage::EXACT);
    check(&mut dp, &mut model, &q, verdict::PASS, stage::FLOW);
    check(&mut dp, &mut model, &reply, verdict::PASS, stage::FLOW);
    dp.apply(&empty, &settings).unwrap();
    model.update(&empty, &settings);
    check(&mut dp, &mut model, &q, verdict::DROP, stage::POLICY);
    // A TCP connection keeps the verdict it started with.
    let conn = meshclass::packet::TcpFlow::new(ip("10.0.0.1"), ip("10.9.0.53"), 40054, 53, 1);
    dp.apply(
        &plan(vec![entry(
            exact("10.9.0.53", 53, L4::Tcp),
            1,
            Verdict::Pass,
        )]),
        &settings,
    )
    .unwrap();
    expect(
        &run(&mut dp, &conn.syn().build()),
        verdict::PASS,
        stage::EXACT,
    );
    dp.apply(&empty, &settings).unwrap();
    expect(
        &run(&mut dp, &conn.ack().build()),
        verdict::PASS,
        stage::FLOW,
    );
}
