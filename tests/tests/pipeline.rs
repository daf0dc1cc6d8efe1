//! The pipeline works end to end: the embedded program loads, attaches at ingress of a veth in
//! a test namespace (TCX, and clsact as the fallback), and counts exactly the packets sent.

use std::{net::UdpSocket, time::Duration};

use aya::{
    maps::PerCpuArray,
    programs::{tc::TcAttachType, SchedClassifier},
    Ebpf,
};
use classifier_common::counter;
use meshclass::attach::{attach, AttachMode, Attached, CLASSIFY_PROGRAM};
use tests::{ip, link, require_privileges, NetNs};

fn packets_counted(ebpf: &Ebpf) -> u64 {
    let map = ebpf
        .map(classifier_common::maps::COUNTERS)
        .expect("COUNTERS map");
    let counters = PerCpuArray::<_, u64>::try_from(map).expect("per-CPU array");
    counters
        .get(&counter::PACKETS, 0)
        .expect("read counter")
        .iter()
        .sum()
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

    // A permanent neighbour entry: no ARP crosses the link while we count.
    let node_if = n_end.ifname.clone();
    let mac = node
        .block_on(|nl| async move { Ok(nl.link_mac(&node_if).await?) })
        .unwrap();
    let client_if = c_end.ifname.clone();
    client
        .block_on(|nl| async move {
            nl.add_neighbour(&client_if, ip("10.201.0.2"), &mac).await?;
            Ok(())
        })
        .unwrap();

    let node_if = n_end.ifname.clone();
    let ebpf = node.run(move || {
        let mut ebpf = Ebpf::load(meshclass::CLASSIFIER_OBJECT).expect("load the object");
        let prog: &mut SchedClassifier = ebpf
            .program_mut(CLASSIFY_PROGRAM)
            .expect("program in object")
            .try_into()
            .expect("a TC program");
        prog.load().expect("the verifier accepts the program");
        let (_, used) = attach(prog, &node_if, TcAttachType::Ingress, mode).expect("attach");
        assert_eq!(used, want, "attached with the expected mode");
        ebpf
    });

    let before = packets_counted(&ebpf);
    const SENT: u64 = 64;
    client.run(|| {
        let s = UdpSocket::bind("10.201.0.1:0").unwrap();
        for i in 0..SENT {
            s.send_to(&i.to_be_bytes(), "10.201.0.2:9").unwrap();
        }
    });
    // The veth delivers synchronously, but give softirq processing a moment.
    std::thread::sleep(Duration::from_millis(100));
    let after = packets_counted(&ebpf);
    assert_eq!(
        after - before,
        SENT,
        "the program saw each packet sent exactly once"
    );
    drop(ebpf);
}

#[test]
fn tcx_attach_counts_exactly_the_packets_sent() {
    counts_exactly_the_packets_sent(AttachMode::Tcx, Attached::Tcx);
}

#[test]
fn clsact_fallback_counts_exactly_the_packets_sent() {
    counts_exactly_the_packets_sent(AttachMode::Clsact, Attached::Clsact);
}
