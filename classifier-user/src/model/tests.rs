use std::net::IpAddr;

use classifier_common::{stage, verdict, NO_SERVICE};

use super::*;
use crate::{
    packet::{h2c, http, tcp_flags, tls, ExtHeader, Packet, TcpFlow},
    plan::{Cidr, Entry, Verdict, L4 as Proto},
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn entry(matcher: Match, service_id: u32, v: Verdict) -> Entry {
    Entry {
        matcher,
        service_id,
        service: format!("ns/svc{service_id}/host"),
        verdict: v,
    }
}

fn plan() -> Plan {
    Plan {
        entries: vec![
            entry(
                Match::Ip {
                    addr: ip("10.1.0.5"),
                    port: 80,
                    protocol: Proto::Tcp,
                },
                1,
                Verdict::Redirect,
            ),
            entry(
                Match::Cidr {
                    cidr: Cidr {
                        addr: ip("10.2.0.0"),
                        len: 16,
                    },
                    port: 80,
                    protocol: Proto::Tcp,
                },
                2,
                Verdict::Redirect,
            ),
            entry(
                Match::Cidr {
                    cidr: Cidr {
                        addr: ip("10.2.3.0"),
                        len: 24,
                    },
                    port: 80,
                    protocol: Proto::Tcp,
                },
                3,
                Verdict::Pass,
            ),
            entry(
                Match::Sni {
                    name: "api.external-svc.com".into(),
                    port: 443,
                },
                4,
                Verdict::Pass,
            ),
            entry(
                Match::Sni {
                    name: "*.example.com".into(),
                    port: 443,
                },
                5,
                Verdict::Pass,
            ),
            entry(
                Match::Sni {
                    name: "*.b.example.com".into(),
                    port: 443,
                },
                6,
                Verdict::Pass,
            ),
            entry(
                Match::Host {
                    name: "customers.com".into(),
                    port: 8080,
                },
                7,
                Verdict::Redirect,
            ),
            entry(
                Match::Port {
                    port: 5432,
                    protocol: Proto::Tcp,
                },
                8,
                Verdict::Pass,
            ),
            entry(
                Match::Ip {
                    addr: ip("fd00::53"),
                    port: 53,
                    protocol: Proto::Udp,
                },
                9,
                Verdict::Pass,
            ),
        ],
        ..Plan::default()
    }
}

fn registry_only() -> Settings {
    Settings {
        outbound_policy: OutboundPolicy::RegistryOnly,
        blocked: Blocked::Reject,
        ..Settings::default()
    }
}

fn syn(dst: &str, dport: u16) -> Vec<u8> {
    Packet::tcp(ip("10.0.0.1"), ip(dst), 40000, dport, tcp_flags::SYN).build()
}

#[test]
fn exact_then_flow() {
    let mut m = Model::new(&plan(), &Settings::default());
    let d = m.classify(&syn("10.1.0.5", 80));
    assert_eq!(
        (d.verdict, d.stage, d.service_id),
        (verdict::REDIRECT, stage::EXACT, 1)
    );
    let ack = Packet::tcp(ip("10.0.0.1"), ip("10.1.0.5"), 40000, 80, tcp_flags::ACK).build();
    let d = m.classify(&ack);
    assert_eq!(
        (d.verdict, d.stage, d.service_id),
        (verdict::REDIRECT, stage::FLOW, 1)
    );
    // Another port of the same address is not the entry.
    let d = m.classify(&syn("10.1.0.5", 81));
    assert_eq!(
        (d.verdict, d.stage, d.service_id),
        (verdict::PASS, stage::POLICY, NO_SERVICE)
    );
}

#[test]
fn longest_cidr_wins() {
    let mut m = Model::new(&plan(), &Settings::default());
    let d = m.classify(&syn("10.2.3.4", 80));
    assert_eq!(
        (d.verdict, d.stage, d.service_id),
        (verdict::PASS, stage::CIDR, 3)
    );
    let d = m.classify(&syn("10.2.4.4", 80));
    assert_eq!(
        (d.verdict, d.stage, d.service_id),
        (verdict::REDIRECT, stage::CIDR, 2)
    );
}

#[test]
fn sni_exact_and_wildcards_longest_first() {
    let cases = [
        ("api.external-svc.com", Some(4)),
        ("API.External-Svc.COM.", Some(4)),
        ("x.example.com", Some(5)),
        ("x.y.b.example.com", Some(6)),
        ("b.example.com", Some(5)),
        ("example.com", None),
        ("other.org", None),
    ];
    for (name, want) in cases {
        let mut m = Model::new(&plan(), &registry_only());
        let mut f = TcpFlow::new(ip("10.0.0.1"), ip("93.184.216.34"), 40001, 443, 7);
        let d = m.classify(&f.syn().build());
        assert_eq!(
            (d.verdict, d.stage),
            (verdict::PASS, stage::PENDING),
            "{name}"
        );
        let hello = tls::client_hello(Some(name), &tls::HelloOptions::default()).unwrap();
        let d = m.classify(&f.data(&hello).build());
        match want {
            Some(s) => assert_eq!(
                (d.verdict, d.stage, d.service_id),
                (verdict::PASS, stage::SNI, s),
                "{name}"
            ),
            None => assert_eq!(
                (d.verdict, d.stage),
                (verdict::REJECT, stage::POLICY),
                "{name}"
            ),
        }
        let d = m.classify(&f.data(b"more").build());
        assert_eq!(d.stage, stage::FLOW);
    }
}

#[test]
fn split_hello_at_every_position() {
    let hello =
        tls::client_hello(Some("api.external-svc.com"), &tls::HelloOptions::default()).unwrap();
    for cut in 1..hello.len() {
        let mut m = Model::new(&plan(), &registry_only());
        let mut f = TcpFlow::new(
            ip("10.0.0.1"),
            ip("93.184.216.34"),
            40001,
            443,
            u32::MAX - 3,
        );
        m.classify(&f.syn().build());
        let first = f.data(&hello[..cut]).build();
        let d = m.classify(&first);
        assert_eq!(
            (d.verdict, d.stage),
            (verdict::PASS, stage::PENDING),
            "cut {cut}"
        );
        // A retransmission changes nothing.
        assert_eq!(m.classify(&first).stage, stage::PENDING);
        let d = m.classify(&f.data(&hello[cut..]).build());
        assert_eq!(
            (d.verdict, d.stage, d.service_id),
            (verdict::PASS, stage::SNI, 4),
            "cut {cut}"
        );
    }
}

#[test]
fn gap_makes_the_hello_not_inspectable() {
    let hello =
        tls::client_hello(Some("api.external-svc.com"), &tls::HelloOptions::default()).unwrap();
    let mut m = Model::new(&plan(), &registry_only());
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("93.184.216.34"), 40001, 443, 1);
    m.classify(&f.syn().build());
    m.classify(&f.data(&hello[..50]).build());
    let late = f.data_at(f.next_seq + 10, &hello[60..]).build();
    let d = m.classify(&late);
    assert_eq!((d.verdict, d.stage), (verdict::REJECT, stage::POLICY));
}

#[test]
fn ech_is_not_inspectable_unless_configured() {
    let opts = tls::HelloOptions {
        ech_at: Some(3),
        ..Default::default()
    };
    let hello = tls::client_hello(Some("api.external-svc.com"), &opts).unwrap();
    let pkt = TcpFlow::new(ip("10.0.0.1"), ip("1.1.1.1"), 1, 443, 1)
        .data(&hello)
        .build();
    let mut m = Model::new(&plan(), &registry_only());
    assert_eq!(m.classify(&pkt).stage, stage::POLICY);
    let mut s = registry_only();
    s.ech_outer_sni = true;
    let mut m = Model::new(&plan(), &s);
    assert_eq!(m.classify(&pkt).stage, stage::SNI);
}

#[test]
fn http_host_and_late_redirect() {
    let mut m = Model::new(&plan(), &registry_only());
    let req = http::request(
        "GET",
        Some(b" Customers.com:8080 "),
        &http::RequestOptions::default(),
    );
    let pkt = TcpFlow::new(ip("10.0.0.1"), ip("1.1.1.1"), 1, 8080, 1)
        .data(&req)
        .build();
    let d = m.classify(&pkt);
    assert_eq!(
        (d.verdict, d.stage, d.service_id),
        (verdict::PASS, stage::HOST, 7)
    );
    // No Host: policy.
    let req = http::request("GET", None, &http::RequestOptions::default());
    let pkt = TcpFlow::new(ip("10.0.0.1"), ip("1.1.1.1"), 2, 8080, 1)
        .data(&req)
        .build();
    assert_eq!(m.classify(&pkt).stage, stage::POLICY);
}

#[test]
fn h2_raw_and_huffman_authority() {
    for huffman in [false, true] {
        let mut m = Model::new(&plan(), &registry_only());
        let req = h2c::request("customers.com", huffman);
        let pkt = TcpFlow::new(ip("10.0.0.1"), ip("1.1.1.1"), 1, 8080, 1)
            .data(&req)
            .build();
        let d = m.classify(&pkt);
        assert_eq!(
            (d.stage, d.service_id),
            (stage::HOST, 7),
            "huffman {huffman}"
        );
        // A Huffman-coded value is decoded, then matched as a raw one: case does not matter.
        let req = h2c::request("Customers.com.", huffman);
        let pkt = TcpFlow::new(ip("10.0.0.1"), ip("1.1.1.1"), 2, 8080, 1)
            .data(&req)
            .build();
        assert_eq!(m.classify(&pkt).stage, stage::HOST, "huffman {huffman}");
        let req = h2c::request("customers.co", huffman);
        let pkt = TcpFlow::new(ip("10.0.0.1"), ip("1.1.1.1"), 3, 8080, 1)
            .data(&req)
            .build();
        assert_eq!(m.classify(&pkt).stage, stage::POLICY, "huffman {huffman}");
    }
}

/// An `:authority` with a port, as HTTP/2 clients send it for a port that is not the scheme's
/// (curl, gRPC): raw or Huffman-coded, the port is stripped as a Host's, whatever it is.
#[test]
fn h2_authority_with_port() {
    let mut m = Model::new(&plan(), &registry_only());
    let cases = [
        ("customers.com:8080", stage::HOST),
        ("Customers.com:9", stage::HOST),
        (":8080", stage::POLICY),
        ("[customers.com]:8080", stage::HOST),
        ("[customers.com", stage::HOST),
        ("customers.com]:8080", stage::POLICY),
    ];
    let cases = cases
        .into_iter()
        .flat_map(|(a, want)| [(a, false, want), (a, true, want)]);
    for (i, (authority, huffman, want)) in cases.enumerate() {
        let req = h2c::request(authority, huffman);
        let pkt = TcpFlow::new(ip("10.0.0.1"), ip("1.1.1.1"), 10 + i as u16, 8080, 1)
            .data(&req)
            .build();
        let d = m.classify(&pkt);
        assert_eq!(
            d.stage, want,
            "{authority} huffman {huffman}: {}",
            d.explain
        );
        if want == stage::HOST {
            assert_eq!(d.service_id, 7);
        }
    }
}

#[test]
fn port_capture_and_policy() {
    let mut m = Model::new(&plan(), &registry_only());
    let d = m.classify(&syn("8.8.8.8", 5432));
    assert_eq!(
        (d.verdict, d.stage, d.service_id),
        (verdict::PASS, stage::PORT, 8)
    );
    let d = m.classify(&syn("8.8.8.8", 5433));
    assert_eq!((d.verdict, d.stage), (verdict::REJECT, stage::POLICY));
    let udp = Packet::udp(ip("fd00::1"), ip("fd00::53"), 5353, 53, b"q").build();
    assert_eq!(m.classify(&udp).stage, stage::EXACT);
    let icmp = Packet::icmp(ip("10.0.0.1"), ip("8.8.8.8"), 8, 0, b"x").build();
    let d = m.classify(&icmp);
    assert_eq!((d.verdict, d.stage), (verdict::DROP, stage::POLICY));
}

/// A port captured with REDIRECT that also carries names: the capture decides at the SYN (a
/// redirect is possible only there); a flow that waited for a name when a reload made the
/// capture redirect gets it as PASS after the payload.
#[test]
fn a_redirecting_capture_decides_at_the_first_packet() {
    let names_only = Plan {
        entries: vec![entry(
            Match::Sni {
                name: "api.example.com".into(),
                port: 9000,
            },
            1,
            Verdict::Pass,
        )],
        ..Plan::default()
    };
    let mut with_capture = names_only.clone();
    with_capture.entries.push(entry(
        Match::Port {
            port: 9000,
            protocol: Proto::Tcp,
        },
        2,
        Verdict::Redirect,
    ));
    let hello = tls::client_hello(Some("api.example.com"), &tls::HelloOptions::default()).unwrap();
    let mut m = Model::new(&with_capture, &registry_only());
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("192.0.2.7"), 40100, 9000, 7);
    let d = m.classify(&f.syn().build());
    assert_eq!(
        (d.verdict, d.stage, d.service_id),
        (verdict::REDIRECT, stage::PORT, 2)
    );
    let d = m.classify(&f.data(&hello).build());
    assert_eq!((d.verdict, d.stage), (verdict::REDIRECT, stage::FLOW));

    // Waiting for a name, then the capture arrives: too late to redirect.
    let mut m = Model::new(&names_only, &registry_only());
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("192.0.2.7"), 40101, 9000, 7);
    let d = m.classify(&f.syn().build());
    assert_eq!((d.verdict, d.stage), (verdict::PASS, stage::PENDING));
    m.update(&with_capture, &registry_only());
    let other =
        tls::client_hello(Some("other.example.org"), &tls::HelloOptions::default()).unwrap();
    let d = m.classify(&f.data(&other).build());
    assert_eq!(
        (d.verdict, d.stage, d.service_id),
        (verdict::PASS, stage::PORT, 2)
    );
}

#[test]
fn layer_2_and_3_edge_cases() {
    let mut m = Model::new(&plan(), &registry_only());
    let frag = Packet::udp(ip("10.0.0.1"), ip("8.8.8.8"), 1, 2, b"x")
        .ipv4_fragment(false, 3)
        .build();
    assert_eq!(m.classify(&frag).stage, stage::OTHER);
    let v6frag = Packet::udp(ip("fd00::1"), ip("fd00::2"), 1, 2, b"x")
        .ext(ExtHeader::Fragment {
            offset: 1,
            more: false,
            id: 1,
        })
        .build();
    assert_eq!(m.classify(&v6frag).stage, stage::OTHER);
    let nd = Packet::icmp(ip("fd00::1"), ip("ff02::1"), 135, 0, &[0; 20]).build();
    assert_eq!(m.classify(&nd).verdict, verdict::PASS);
    let mut arp = syn("8.8.8.8", 80);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(m.classify(&arp).stage, stage::OTHER);
    let s = syn("10.1.0.5", 80);
    let d = m.classify(&s[..s.len() - 1]);
    assert_eq!((d.verdict, d.stage), (verdict::DROP, stage::OTHER));
    let tagged = Packet::tcp(ip("10.0.0.1"), ip("10.1.0.5"), 1, 80, tcp_flags::SYN)
        .vlan(0x88a8, 5)
        .build();
    assert_eq!(m.classify(&tagged).stage, stage::EXACT);
    // Nine extension headers are more than the bound.
    let mut p = Packet::udp(ip("fd00::1"), ip("fd00::53"), 1, 53, b"x");
    for _ in 0..9 {
        p = p.ext(ExtHeader::DestOpts(vec![]));
    }
    assert_eq!(m.classify(&p.build()).stage, stage::OTHER);
    // Ethernet padding after the IP datagram is not payload.
    let mut padded = Packet::tcp(ip("10.0.0.1"), ip("9.9.9.9"), 7, 443, tcp_flags::SYN).build();
    padded.extend_from_slice(&[0; 6]);
    assert_eq!(m.classify(&padded).stage, stage::PENDING);
}

#[test]
fn inbound_connections_pass_their_replies() {
    let mut m = Model::new(&plan(), &registry_only());
    let syn_in = Packet::tcp(ip("8.8.8.8"), ip("10.0.0.1"), 5555, 22, tcp_flags::SYN).build();
    m.inbound(&syn_in);
    let reply = Packet::tcp(
        ip("10.0.0.1"),
        ip("8.8.8.8"),
        22,
        5555,
        tcp_flags::SYN | tcp_flags::ACK,
    )
    .build();
    let d = m.classify(&reply);
    assert_eq!((d.verdict, d.stage), (verdict::PASS, stage::FLOW));
}

#[test]
fn update_keeps_flows() {
    let mut m = Model::new(&plan(), &registry_only());
    m.classify(&syn("10.1.0.5", 80));
    m.update(&Plan::default(), &registry_only());
    let ack = Packet::tcp(ip("10.0.0.1"), ip("10.1.0.5"), 40000, 80, tcp_flags::ACK).build();
    assert_eq!(m.classify(&ack).verdict, verdict::REDIRECT);
    assert_eq!(m.classify(&syn("10.1.0.5", 80)).verdict, verdict::REJECT);
}

#[test]
fn explain_names_the_stage_and_the_entry() {
    let mut m = Model::new(&plan(), &registry_only());
    let d = m.classify(&syn("10.2.3.4", 80));
    assert_eq!(
        d.explain,
        "cidr matched entry #2 10.2.3.0/24:80/tcp of service ns/svc3/host → pass"
    );
    let d = m.classify(&syn("8.8.8.8", 81));
    assert_eq!(
        d.explain,
        "nothing in the registry matched: outbound policy REGISTRY_ONLY → reject"
    );
    let req = http::request(
        "GET",
        Some(b"customers.com"),
        &http::RequestOptions::default(),
    );
    let pkt = TcpFlow::new(ip("10.0.0.1"), ip("1.1.1.1"), 9, 8080, 1)
        .data(&req)
        .build();
    let d = m.classify(&pkt);
    assert_eq!(
        d.explain,
        "name `customers.com`: redirect entry applied as pass (too late to redirect); host \
         matched entry #6 host customers.com:8080 of service ns/svc7/host → pass"
    );
    assert_eq!(
        d.matched,
        Some(Match::Host {
            name: "customers.com".into(),
            port: 8080
        })
    );
}
