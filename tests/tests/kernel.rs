//! Kernel unit tests: the real program, run with BPF_PROG_TEST_RUN on crafted frames.
//! Root only; run with `cargo test -p tests -- --test-threads=1`.

#[path = "kernel_common.rs"]
mod common;

use classifier_common::{counter, stage, verdict, NO_SERVICE};
use common::*;
use meshclass::{
    packet::{tcp_flags, Packet, TcpFlow},
    plan::{Verdict, L4},
    settings::Blocked,
};

#[test]
fn program_loads_and_counts_every_packet() {
    let mut dp = dataplane();
    dp.apply(&plan(vec![]), &allow_any()).unwrap();
    let before = dp.counters().unwrap();
    let f = Packet::tcp(ip("10.0.0.1"), ip("10.0.0.2"), 40000, 80, tcp_flags::SYN).build();
    let d = run(&mut dp, &f);
    expect(&d, verdict::PASS, stage::POLICY);
    assert_eq!(d.retval, TC_ACT_UNSPEC);
    assert_eq!(d.service_id, NO_SERVICE);
    let after = dp.counters().unwrap();
    assert_eq!(
        after[counter::PACKETS as usize] - before[counter::PACKETS as usize],
        1
    );
    assert_eq!(
        after[counter::NEW_FLOWS as usize] - before[counter::NEW_FLOWS as usize],
        1
    );
}

#[test]
fn exact_ip_decides_and_the_flow_keeps_it() {
    let mut dp = dataplane();
    let p = plan(vec![entry(
        exact("10.1.0.5", 443, L4::Tcp),
        7,
        Verdict::Pass,
    )]);
    dp.apply(&p, &registry_only(Blocked::Drop)).unwrap();
    let mut flow = TcpFlow::new(ip("10.0.0.1"), ip("10.1.0.5"), 40001, 443, 1000);
    let d = run(&mut dp, &flow.syn().build());
    expect(&d, verdict::PASS, stage::EXACT);
    assert_eq!(d.service_id, 7);
    let id = dp.entry_ids(&p)[0];
    assert_eq!(dp.entry_hit(id).unwrap(), 1);
    let d = run(&mut dp, &flow.data(b"hello").build());
    expect(&d, verdict::PASS, stage::FLOW);
    // Another port of the same address is not the entry's.
    let f = Packet::tcp(ip("10.0.0.1"), ip("10.1.0.5"), 40002, 444, tcp_flags::SYN).build();
    let d = run(&mut dp, &f);
    expect(&d, verdict::DROP, stage::POLICY);
    assert_eq!(d.retval, TC_ACT_SHOT);
}

#[test]
fn exact_ipv6_and_udp() {
    let mut dp = dataplane();
    let p = plan(vec![
        entry(exact("fd00::5", 53, L4::Udp), 3, Verdict::Pass),
        entry(exact("fd00::6", 80, L4::Tcp), 4, Verdict::Pass),
    ]);
    dp.apply(&p, &registry_only(Blocked::Drop)).unwrap();
    let d = run(
        &mut dp,
        &Packet::udp(ip("fd00::1"), ip("fd00::5"), 5353, 53, b"q").build(),
    );
    expect(&d, verdict::PASS, stage::EXACT);
    assert_eq!(d.service_id, 3);
    let f = Packet::tcp(ip("fd00::1"), ip("fd00::6"), 5000, 80, tcp_flags::SYN).build();
    let d = run(&mut dp, &f);
    expect(&d, verdict::PASS, stage::EXACT);
    assert_eq!(d.service_id, 4);
    // UDP to the TCP entry's port is not it.
    let d = run(
        &mut dp,
        &Packet::udp(ip("fd00::1"), ip("fd00::6"), 5353, 80, b"q").build(),
    );
    expect(&d, verdict::DROP, stage::POLICY);
}

/// The exact table (a cuckoo hash written by user space, docs/decision.md §4) at the capacity
/// it was sized for, both generations full: every entry is found by the program with its
/// service, across a second plan that removes, changes and adds entries (keys move between
/// buckets on the way), and a removed entry is no longer found. Entries of both families and
/// protocols, three ports per address.
#[test]
fn a_full_exact_table_finds_every_entry_across_a_changed_plan() {
    let mut dp = dataplane();
    let cap = dp.capacities().exact;
    let dest = |i: u32| -> (String, u16, L4) {
        let a = if i.is_multiple_of(5) {
            format!("fd00:70::{:x}", i / 3 + 1)
        } else {
            format!("10.70.{}.{}", i / 3 / 250, i / 3 % 250 + 1)
        };
        let l4 = if i.is_multiple_of(2) {
            L4::Tcp
        } else {
            L4::Udp
        };
        (a, 8000 + (i % 3) as u16, l4)
    };
    let packet = |i: u32| {
        let (a, port, l4) = dest(i);
        let src = if a.contains(':') {
            ip("fd00::1")
        } else {
            ip("10.0.0.1")
        };
        match l4 {
            L4::Tcp => Packet::tcp(src, ip(&a), 40000, port, tcp_flags::SYN).build(),
            _ => Packet::udp(src, ip(&a), 40000, port, b"q").build(),
        }
    };
    let entries = |ids: &mut dyn Iterator<Item = (u32, u32)>| {
        plan(
            ids.map(|(i, service)| {
                let (a, port, l4) = dest(i);
                entry(exact(&a, port, l4), service, Verdict::Pass)
            })
            .collect(),
        )
    };
    let first = entries(&mut (0..cap).map(|i| (i, i)));
    dp.apply(&first, &allow_any()).unwrap();
    for i in 0..cap {
        let d = run(&mut dp, &packet(i));
        expect(&d, verdict::PASS, stage::EXACT);
        assert_eq!(d.service_id, i, "entry {i} of the first plan");
    }
    // A third removed, a third moved to other services, new entries in their place.
    let kept = (0..cap)
        .filter(|i| i % 3 != 0)
        .map(|i| (i, if i % 3 == 1 { i + 50_000 } else { i }));
    let added = (cap..cap + cap / 3).map(|i| (i, i));
    let second = entries(&mut kept.chain(added));
    dp.apply(&second, &allow_any()).unwrap();
    dp.clear_flows().unwrap();
    for i in 0..cap + cap / 3 {
        let d = run(&mut dp, &packet(i));
        if i < cap && i % 3 == 0 {
            expect(&d, verdict::PASS, stage::POLICY);
            continue;
        }
        expect(&d, verdict::PASS, stage::EXACT);
        let service = if i < cap && i % 3 == 1 { i + 50_000 } else { i };
        assert_eq!(d.service_id, service, "entry {i} of the second plan");
    }
}

#[test]
fn longest_cidr_wins() {
    let mut dp = dataplane();
    let p = plan(vec![
        entry(cidr("10.2.0.0", 16, 8080, L4::Tcp), 1, Verdict::Pass),
        entry(cidr("10.2.3.0", 24, 8080, L4::Tcp), 2, Verdict::Pass),
    ]);
    dp.apply(&p, &registry_only(Blocked::Drop)).unwrap();
    let f = Packet::tcp(ip("10.0.0.1"), ip("10.2.3.4"), 1, 8080, tcp_flags::SYN).build();
    let d = run(&mut dp, &f);
    expect(&d, verdict::PASS, stage::CIDR);
    assert_eq!(d.service_id, 2);
    let f = Packet::tcp(ip("10.0.0.1"), ip("10.2.4.4"), 1, 8080, tcp_flags::SYN).build();
    let d = run(&mut dp, &f);
    expect(&d, verdict::PASS, stage::CIDR);
    assert_eq!(d.service_id, 1);
    let f = Packet::tcp(ip("10.0.0.1"), ip("10.3.0.1"), 1, 8080, tcp_flags::SYN).build();
    expect(&run(&mut dp, &f), verdict::DROP, stage::POLICY);
}

#[test]
fn reapplying_a_changed_plan_switches_generation() {
    let mut dp = dataplane();
    let a = plan(vec![entry(
        exact("10.1.0.5", 443, L4::Tcp),
        7,
        Verdict::Pass,
    )]);
    let r = dp.apply(&a, &registry_only(Blocked::Drop)).unwrap();
    let g = r.generation;
    let b = plan(vec![entry(
        exact("10.1.0.6", 443, L4::Tcp),
        8,
        Verdict::Pass,
    )]);
    let r = dp.apply(&b, &registry_only(Blocked::Drop)).unwrap();
    assert_ne!(r.generation, g);
    assert_eq!(r.written, 2, "{r:?}");
    let f = Packet::tcp(ip("10.0.0.1"), ip("10.1.0.5"), 1, 443, tcp_flags::SYN).build();
    expect(&run(&mut dp, &f), verdict::DROP, stage::POLICY);
    let f = Packet::tcp(ip("10.0.0.1"), ip("10.1.0.6"), 1, 443, tcp_flags::SYN).build();
    let d = run(&mut dp, &f);
    expect(&d, verdict::PASS, stage::EXACT);
    assert_eq!(d.service_id, 8);
}

#[test]
fn redirect_without_a_proxy_socket_drops_and_counts() {
    let mut dp = dataplane();
    let p = plan(vec![entry(
        exact("10.9.0.1", 9080, L4::Tcp),
        5,
        Verdict::Redirect,
    )]);
    dp.apply(&p, &allow_any()).unwrap();
    let before = dp.counters().unwrap();
    let f = Packet::tcp(ip("10.0.0.1"), ip("10.9.0.1"), 1234, 9080, tcp_flags::SYN).build();
    let d = run(&mut dp, &f);
    expect(&d, verdict::REDIRECT, stage::EXACT);
    assert_eq!(d.service_id, 5);
    let after = dp.counters().unwrap();
    let i = counter::REDIRECT_NO_SOCKET as usize;
    if after[i] > before[i] {
        assert_eq!(d.retval, TC_ACT_SHOT);
    } else {
        assert_eq!(d.retval, TC_ACT_OK);
    }
}
