//! The pipeline works end to end: the embedded program loads, attaches at ingress of a veth in
//! a test namespace (TCX, and clsact as the fallback), and counts exactly the packets sent.

use std::{net::UdpSocket, time::Duration};

use aya::programs::{tc::TcAttachType, SchedClassifier};
use classifier_common::counter;
use meshclass::{
    attach::{attach, AttachMode, Attached, CLASSIFY_PROGRAM},
    dataplane::{Capacities, Dataplane},
};
use tests::{ip, link, require_privileges, NetNs};

fn packets_counted(dp: &Dataplane) -> u64 {
    dp.counters().expect("read the counters")[counter::PACKETS as usize]
}

fn static_neighbours(a: &NetNs, a_if: &str, a_ip: &str, b: &NetNs, b_if: &str, b_ip: &str) {
    let mac_of = |ns: &NetNs, ifname: &str| {
        let ifname = ifname.to_string();
        ns.block_on(|nl| async move { Ok(nl.link_mac(&ifname).await?) })
            .unwrap()
    };
    let (a_mac, b_mac) = (mac_of(a, a_if), mac_of(b, b_if));
    for (ns, ifname, peer_ip, peer_mac) in [(a, a_if, b_ip, b_mac), (b, b_if, a_ip, a_mac)] {
        let ifname = ifname.to_string();
        ns.block_on(|nl| async move {
            nl.add_neighbour(&ifname, ip(peer_ip), &peer_mac).await?;
            Ok(())
        })
        .unwrap();
    }
}

fn counts_exactly_the_packets_sent(mode: AttachMode, want: Attached) {
    require_privileges();
    let client = NetNs::new("pipe-client").unwrap();
    let node = NetNs::new("pipe-node").unwrap();
    let (c_end, n_end) = link(
        &client,
        &[(ip("10.201.0.1"), 24)],
        &node,
        &[(ip("10.201.0.2"), 24)],
    )
    .unwrap();

    // Permanent neighbour entries both ways: no ARP crosses the link while we count (the
    // node answers each datagram with an ICMP port unreachable, which needs the client's MAC).
    static_neighbours(
        &client,
        &c_end.ifname,
        "10.201.0.1",
        &node,
        &n_end.ifname,
        "10.201.0.2",
    );

    let node_if = n_end.ifname.clone();
    let dp = node.run(move || {
        let mut dp =
            Dataplane::load(&Capacities::default()).expect("the verifier accepts the programs");
        let prog: &mut SchedClassifier = dp
            .ebpf_mut()
            .program_mut(CLASSIFY_PROGRAM)
            .expect("program in object")
            .try_into()
            .expect("a TC program");
        let (_, used) = attach(prog, &node_if, TcAttachType::Ingress, mode).expect("attach");
        assert_eq!(used, want, "attached with the expected mode");
        dp
    });

    let before = packets_counted(&dp);
    const SENT: u64 = 64;
    client.run(|| {
        let s = UdpSocket::bind("10.201.0.1:0").unwrap();
        for i in 0..SENT {
            s.send_to(&i.to_be_bytes(), "10.201.0.2:9").unwrap();
        }
    });
    // The veth delivers synchronously, but give softirq processing a moment.
    std::thread::sleep(Duration::from_millis(100));
    let after = packets_counted(&dp);
    assert_eq!(
        after - before,
        SENT,
        "the program saw each packet sent exactly once"
    );
    drop(dp);
}

#[test]
fn tcx_attach_counts_exactly_the_packets_sent() {
    counts_exactly_the_packets_sent(AttachMode::Tcx, Attached::Tcx);
}

#[test]
fn clsact_fallback_counts_exactly_the_packets_sent() {
    counts_exactly_the_packets_sent(AttachMode::Clsact, Attached::Clsact);
}

#[test]
fn baseline_empty_program_loads_and_runs() {
    require_privileges();
    let empty = tests::baseline::EmptyProgram::load().expect("load the empty program");
    let packet = [0u8; 64];
    let run = empty.test_run(&packet, 1000).expect("test run");
    assert!(
        run.kernel_ns < 1_000_000 && run.ns > 0.0 && run.ns < 1_000_000.0,
        "an empty program runs in well under a millisecond ({run:?})"
    );
}
