//! Kernel unit tests of blocking: DROP, TCP RST and ICMP port unreachable replies, and the
//! packets the program does not classify.

#[path = "kernel_common.rs"]
mod common;

use classifier_common::{counter, stage, verdict};
use common::*;
use meshclass::{
    packet::{checksums_ok, ether_type, tcp_flags, ExtHeader, Packet},
    settings::Blocked,
};

#[test]
fn registry_only_reject_answers_a_syn_with_a_rst() {
    let mut dp = dataplane();
    dp.apply(&plan(vec![]), &registry_only(Blocked::Reject))
        .unwrap();
    let f = Packet::tcp(ip("10.0.0.1"), ip("10.7.0.9"), 40000, 443, tcp_flags::SYN)
        .seq_ack(1000, 0)
        .build();
    let d = run(&mut dp, &f);
    expect(&d, verdict::REJECT, stage::POLICY);
    assert_eq!(d.retval, TC_ACT_REDIRECT);
    let o = &d.data_out;
    assert_eq!(o.len(), 54, "{o:02x?}");
    assert_eq!(&o[0..6], &f[6..12], "dst MAC is the client's");
    assert_eq!(&o[6..12], &f[0..6]);
    assert_eq!(&o[26..30], &f[30..34], "src IP is the server's");
    assert_eq!(&o[30..34], &f[26..30]);
    assert_eq!(&o[34..36], &f[36..38], "ports swapped");
    assert_eq!(&o[36..38], &f[34..36]);
    assert_eq!(u32::from_be_bytes(o[38..42].try_into().unwrap()), 0, "seq");
    assert_eq!(
        u32::from_be_bytes(o[42..46].try_into().unwrap()),
        1001,
        "ack = seq + SYN"
    );
    assert_eq!(o[47], tcp_flags::RST | tcp_flags::ACK);
    assert!(checksums_ok(o), "checksums of {o:02x?}");
}

/// A packet with IPv4 options or IPv6 extension headers becomes the same bare RST as one
/// without (the program removes them first: in real traffic, a partially checksummed packet
/// could not be cut short of its checksum field otherwise; see the e2e test).
#[test]
fn reject_of_a_packet_with_ip_options_or_extension_headers() {
    let mut dp = dataplane();
    dp.apply(&plan(vec![]), &registry_only(Blocked::Reject))
        .unwrap();
    for (src, dst, vlan) in [
        ("10.0.0.1", "10.7.0.9", false),
        ("fd00::1", "fd00::9", false),
        // A VLAN tag in the frame: the kernel keeps the options (it removes them only from
        // untagged IP), and the RST is built all the same.
        ("10.0.0.1", "10.7.0.9", true),
    ] {
        let mut plain = Packet::tcp(ip(src), ip(dst), 40000, 443, tcp_flags::SYN).seq_ack(1000, 0);
        if vlan {
            plain = plain.vlan(ether_type::VLAN, 5);
        }
        let dressed = if src.contains(':') {
            plain
                .clone()
                .ext(ExtHeader::HopByHop(vec![1, 2, 0, 0]))
                .ext(ExtHeader::DestOpts(vec![
                    1, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ]))
        } else {
            plain
                .clone()
                .ipv4_options(&[1, 1, 1, 1, 7, 7, 4, 0, 0, 0, 0, 0])
        };
        let want = run(&mut dp, &plain.build());
        let d = run(&mut dp, &dressed.build());
        expect(&d, verdict::REJECT, stage::POLICY);
        assert_eq!(d.retval, TC_ACT_REDIRECT, "{dst}");
        assert_eq!(d.data_out, want.data_out, "{dst}");
        assert!(
            checksums_ok(&d.data_out),
            "checksums of {:02x?}",
            d.data_out
        );
    }
}

#[test]
fn reject_of_an_ack_uses_its_ack_number_ipv6() {
    let mut dp = dataplane();
    dp.apply(&plan(vec![]), &registry_only(Blocked::Reject))
        .unwrap();
    let f = Packet::tcp(ip("fd00::1"), ip("fd00::9"), 40000, 443, tcp_flags::ACK)
        .seq_ack(5, 777)
        .build();
    let d = run(&mut dp, &f);
    expect(&d, verdict::REJECT, stage::POLICY);
    assert_eq!(d.retval, TC_ACT_REDIRECT);
    let o = &d.data_out;
    assert_eq!(o.len(), 74, "{o:02x?}");
    assert_eq!(&o[22..38], &f[38..54], "src IP is the server's");
    assert_eq!(&o[38..54], &f[22..38]);
    assert_eq!(
        u32::from_be_bytes(o[58..62].try_into().unwrap()),
        777,
        "seq = ack"
    );
    assert_eq!(o[67], tcp_flags::RST);
    assert!(checksums_ok(o), "checksums of {o:02x?}");
}

#[test]
fn udp_reject_is_an_icmp_port_unreachable_quoting_the_datagram() {
    let mut dp = dataplane();
    dp.apply(&plan(vec![]), &registry_only(Blocked::Reject))
        .unwrap();
    let f = Packet::udp(ip("10.0.0.1"), ip("10.7.0.9"), 5000, 53, b"query").build();
    let d = run(&mut dp, &f);
    expect(&d, verdict::REJECT, stage::POLICY);
    assert_eq!(d.retval, TC_ACT_REDIRECT);
    let o = &d.data_out;
    assert_eq!(o.len(), 14 + 20 + 8 + 28, "{o:02x?}");
    assert_eq!(o[23], 1, "ICMP");
    assert_eq!(&o[26..30], &f[30..34]);
    assert_eq!(&o[30..34], &f[26..30]);
    assert_eq!((o[34], o[35]), (3, 3), "port unreachable");
    assert_eq!(&o[42..70], &f[14..42], "quote: IP header and UDP header");
    assert!(checksums_ok(o), "checksums of {o:02x?}");

    let f = Packet::udp(ip("fd00::1"), ip("fd00::9"), 5000, 53, b"query").build();
    let d = run(&mut dp, &f);
    expect(&d, verdict::REJECT, stage::POLICY);
    let o = &d.data_out;
    assert_eq!(o.len(), 14 + 40 + 8 + 48, "{o:02x?}");
    assert_eq!(o[20], 58, "ICMPv6");
    assert_eq!((o[54], o[55]), (1, 4), "port unreachable");
    assert_eq!(&o[62..110], &f[14..62]);
    assert!(checksums_ok(o), "checksums of {o:02x?}");
}

#[test]
fn drop_policy_and_other_protocols() {
    let mut dp = dataplane();
    dp.apply(&plan(vec![]), &registry_only(Blocked::Reject))
        .unwrap();
    // ICMP under REGISTRY_ONLY + REJECT: applied as DROP, stage POLICY, and no flow starts.
    let f = Packet::icmp(ip("10.0.0.1"), ip("10.7.0.9"), 8, 0, b"ping").build();
    let c0 = dp.counters().unwrap();
    let d = run(&mut dp, &f);
    expect(&d, verdict::DROP, stage::POLICY);
    assert_eq!(d.retval, TC_ACT_SHOT);
    let c1 = dp.counters().unwrap();
    let delta = |i: u32| c1[i as usize] - c0[i as usize];
    assert_eq!(delta(counter::NEW_FLOWS), 0);
    assert_eq!(delta(counter::BY_STAGE + u32::from(stage::POLICY)), 1);
    // A UDP datagram the policy decides (rejects) starts one.
    let u = Packet::udp(ip("10.0.0.1"), ip("10.7.0.9"), 5000, 5353, b"q").build();
    expect(&run(&mut dp, &u), verdict::REJECT, stage::POLICY);
    let c2 = dp.counters().unwrap();
    assert_eq!(
        c2[counter::NEW_FLOWS as usize] - c1[counter::NEW_FLOWS as usize],
        1
    );
    dp.apply(&plan(vec![]), &allow_any()).unwrap();
    let d = run(&mut dp, &f);
    expect(&d, verdict::PASS, stage::POLICY);
    assert_eq!(d.retval, TC_ACT_UNSPEC);
}

#[test]
fn fragments_malformed_and_non_ip() {
    let mut dp = dataplane();
    dp.apply(&plan(vec![]), &registry_only(Blocked::Drop))
        .unwrap();
    let c0 = dp.counters().unwrap();
    let frag = Packet::udp(ip("10.0.0.1"), ip("10.7.0.9"), 5000, 53, b"12345678")
        .ipv4_fragment(false, 8)
        .build();
    let d = run(&mut dp, &frag);
    expect(&d, verdict::PASS, stage::OTHER);
    let mut short = Packet::tcp(ip("10.0.0.1"), ip("10.7.0.9"), 1, 2, tcp_flags::SYN).build();
    short.truncate(14 + 20 + 10);
    let d = run(&mut dp, &short);
    expect(&d, verdict::DROP, stage::OTHER);
    assert_eq!(d.retval, TC_ACT_SHOT);
    let mut arp = vec![0xffu8; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    let d = run(&mut dp, &arp);
    expect(&d, verdict::PASS, stage::OTHER);
    let c1 = dp.counters().unwrap();
    assert_eq!(
        c1[counter::FRAGMENTS as usize] - c0[counter::FRAGMENTS as usize],
        1
    );
    assert_eq!(
        c1[counter::MALFORMED as usize] - c0[counter::MALFORMED as usize],
        1
    );
}

#[test]
fn a_plan_that_does_not_fit_is_refused_whole() {
    let mut dp = dataplane();
    let entries = (0..1100u32)
        .map(|i| {
            let a = format!("10.50.{}.{}", i / 256, i % 256);
            entry(
                exact(&a, 80, meshclass::plan::L4::Tcp),
                i,
                meshclass::plan::Verdict::Pass,
            )
        })
        .collect();
    let e = dp.apply(&plan(entries), &allow_any()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("EXACT") && msg.contains("1100") && msg.contains("1024"),
        "{msg}"
    );
    assert_eq!(dp.fill_levels().unwrap()[0].1, 0, "nothing written");
}

/// No ICMP error answers a datagram to a multicast or the broadcast address (RFC 1122 3.2.2,
/// RFC 4443 2.4), and no RST answers a RST (RFC 9293 3.10.7.1): REGISTRY_ONLY's REJECT drops
/// them, and the model says so.
#[test]
fn reject_answers_neither_groups_nor_resets() {
    let mut dp = dataplane();
    let p = plan(vec![]);
    let settings = registry_only(Blocked::Reject);
    dp.apply(&p, &settings).unwrap();
    let mut model = meshclass::model::Model::new(&p, &settings);
    for (src, dst) in [
        ("10.0.0.1", "224.0.0.251"),
        ("10.0.0.1", "239.1.2.3"),
        ("10.0.0.1", "255.255.255.255"),
        ("fd00::1", "ff02::fb"),
    ] {
        let f = Packet::udp(ip(src), ip(dst), 5353, 5353, b"mdns").build();
        let (d, m) = (run(&mut dp, &f), model.classify(&f));
        expect(&d, verdict::DROP, stage::POLICY);
        assert_eq!((d.verdict, d.stage), (m.verdict, m.stage), "{dst}: {m:?}");
        assert_eq!(d.retval, TC_ACT_SHOT, "{dst}");
    }
    // A unicast datagram still gets its ICMP error.
    let f = Packet::udp(ip("10.0.0.1"), ip("10.7.0.9"), 5353, 5353, b"x").build();
    expect(&run(&mut dp, &f), verdict::REJECT, stage::POLICY);

    let rst = Packet::tcp(ip("10.0.0.1"), ip("10.7.0.9"), 40001, 443, tcp_flags::RST)
        .seq_ack(1000, 0)
        .build();
    let (d, m) = (run(&mut dp, &rst), model.classify(&rst));
    expect(&d, verdict::REJECT, stage::POLICY);
    assert_eq!((d.verdict, d.stage), (m.verdict, m.stage));
    assert_eq!(d.retval, TC_ACT_SHOT, "a RST is dropped, not answered");
    assert_eq!(d.data_out, rst, "no reply built");
}
