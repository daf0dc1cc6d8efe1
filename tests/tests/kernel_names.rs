//! Kernel unit tests of the name stages: TLS SNI, HTTP/1.x Host, HTTP/2 `:authority`.

#[path = "kernel_common.rs"]
mod common;

use classifier_common::{counter, stage, verdict, NO_SERVICE};
use common::*;
use meshclass::{
    dataplane::{Dataplane, KernelDecision},
    model::Model,
    packet::{h2c, hpack, http, tls, TcpFlow},
    plan::{Match, Verdict, L4},
    settings::Blocked,
};

fn hello(name: &str) -> Vec<u8> {
    tls::client_hello(Some(name), &tls::HelloOptions::default()).expect("a ClientHello")
}

/// A ClientHello whose server_name is its last extension: the name ends at the packet's end.
fn hello_name_last(name: &str) -> Vec<u8> {
    let h = hello(name);
    let mut exts = tls::extensions(&h).expect("extensions");
    let i = exts
        .iter()
        .position(|(t, _)| *t == 0)
        .expect("a server_name");
    let sn = exts.remove(i);
    exts.push(sn);
    let h = tls::with_extensions(&h, &exts).expect("a ClientHello");
    assert!(h.ends_with(name.as_bytes()));
    h
}

#[test]
fn tls_sni_exact_and_wildcard() {
    let mut dp = dataplane();
    let p = plan(vec![
        entry(sni("api.example.com", 443), 1, Verdict::Pass),
        entry(sni("*.svc.example.org", 443), 2, Verdict::Pass),
    ]);
    dp.apply(&p, &registry_only(Blocked::Drop)).unwrap();
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 41000, 443, 100);
    let d = run(&mut dp, &f.syn().build());
    expect(&d, verdict::PASS, stage::PENDING);
    expect(
        &run(&mut dp, &f.ack().build()),
        verdict::PASS,
        stage::PENDING,
    );
    let d = run(&mut dp, &f.data(&hello("API.Example.com")).build());
    expect(&d, verdict::PASS, stage::SNI);
    assert_eq!(d.service_id, 1);
    expect(
        &run(&mut dp, &f.data(b"more").build()),
        verdict::PASS,
        stage::FLOW,
    );

    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 41001, 443, 100);
    run(&mut dp, &f.syn().build());
    let d = run(&mut dp, &f.data(&hello("a.b.svc.example.org")).build());
    expect(&d, verdict::PASS, stage::SNI);
    assert_eq!(d.service_id, 2);

    // The wildcard does not match the bare domain; unknown names fall to the policy.
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 41002, 443, 100);
    run(&mut dp, &f.syn().build());
    let d = run(&mut dp, &f.data(&hello("svc.example.org")).build());
    expect(&d, verdict::DROP, stage::POLICY);
}

/// A name of exactly `len` bytes ending in `suffix`, its labels cut so that the dots fall at
/// every offset within the kernel's 8-byte hash steps as `len` grows.
fn name_of(len: usize, suffix: &str, seed: usize) -> String {
    let mut body = String::new();
    let want = len - suffix.len();
    let mut label = 1 + seed % 7;
    while body.len() < want {
        if !body.is_empty() && body.len() + 1 < want {
            body.push('.');
        }
        let take = label.min(want - body.len());
        body.extend(std::iter::repeat_n('a', take));
        label = label % 13 + 2;
    }
    let n = format!("{body}{suffix}");
    assert_eq!(n.len(), len, "{n}");
    n
}

#[test]
fn names_of_every_length_hash_and_match_as_user_space_stores_them() {
    let mut dp = dataplane();
    let mut entries = vec![
        entry(sni("*.w.example.org", 443), 2, Verdict::Pass),
        entry(sni("*.example.org", 443), 3, Verdict::Pass),
    ];
    // Exact names of every length, in upper and lower case on the wire.
    for len in 1..=253usize {
        entries.push(entry(
            sni(&name_of(len, "", len), 443),
            1000 + len as u32,
            Verdict::Pass,
        ));
    }
    dp.apply(&plan(entries), &registry_only(Blocked::Drop))
        .unwrap();
    let mut port = 20000u16;
    let mut check = |dp: &mut Dataplane, name: &str, service: Option<u32>| {
        // The name inside the hello, and at its very end (where reading it in 8-byte words
        // would run past the packet).
        for last in [false, true] {
            port += 1;
            let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), port, 443, 100);
            run(dp, &f.syn().build());
            let h = if last {
                hello_name_last(name)
            } else {
                hello(name)
            };
            let d = run(dp, &f.data(&h).build());
            match service {
                Some(id) => {
                    expect(&d, verdict::PASS, stage::SNI);
                    assert_eq!(d.service_id, id, "{name} (last: {last})");
                }
                None => expect(&d, verdict::DROP, stage::POLICY),
            }
        }
    };
    for len in 1..=253usize {
        let exact = name_of(len, "", len);
        check(&mut dp, &exact.to_uppercase(), Some(1000 + len as u32));
        if len > 16 {
            // Longest suffix first: *.w.example.org, else *.example.org.
            check(&mut dp, &name_of(len, ".w.example.org", len + 3), Some(2));
            check(&mut dp, &name_of(len, ".z.example.org", len + 5), Some(3));
            // Same length, no registered suffix.
            check(&mut dp, &name_of(len, ".example.net", len), None);
        }
    }
}

#[test]
fn ech_hello_is_not_inspectable() {
    let mut dp = dataplane();
    dp.apply(
        &plan(vec![entry(sni("api.example.com", 443), 1, Verdict::Pass)]),
        &registry_only(Blocked::Drop),
    )
    .unwrap();
    let c0 = dp.counters().unwrap();
    let opts = tls::HelloOptions {
        ech_at: Some(1),
        ..Default::default()
    };
    let h = tls::client_hello(Some("api.example.com"), &opts).unwrap();
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 41003, 443, 100);
    run(&mut dp, &f.syn().build());
    let d = run(&mut dp, &f.data(&h).build());
    expect(&d, verdict::DROP, stage::POLICY);
    let c1 = dp.counters().unwrap();
    assert_eq!(
        c1[counter::ECH_SEEN as usize] - c0[counter::ECH_SEEN as usize],
        1
    );
}

#[test]
fn tls_redirect_entry_is_applied_as_pass() {
    let mut dp = dataplane();
    dp.apply(
        &plan(vec![entry(sni("mesh.local", 443), 4, Verdict::Redirect)]),
        &registry_only(Blocked::Drop),
    )
    .unwrap();
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 41004, 443, 100);
    run(&mut dp, &f.syn().build());
    let c0 = dp.counters().unwrap();
    let d = run(&mut dp, &f.data(&hello("mesh.local")).build());
    expect(&d, verdict::PASS, stage::SNI);
    let c1 = dp.counters().unwrap();
    assert_eq!(
        c1[counter::LATE_REDIRECT as usize] - c0[counter::LATE_REDIRECT as usize],
        1
    );
}

#[test]
fn blocked_name_after_handshake_resets_both_sides() {
    let mut dp = dataplane();
    dp.apply(
        &plan(vec![entry(sni("api.example.com", 443), 1, Verdict::Pass)]),
        &registry_only(Blocked::Reject),
    )
    .unwrap();
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 41005, 443, 100);
    run(&mut dp, &f.syn().build());
    let pkt = f
        .data(&hello("evil.example.net"))
        .seq_ack(101, 5000)
        .build();
    let d = run(&mut dp, &pkt);
    expect(&d, verdict::REJECT, stage::POLICY);
    // The client got its RST as a clone; the packet itself became the RST to the server.
    assert_eq!(d.retval, TC_ACT_UNSPEC);
    let o = &d.data_out;
    assert_eq!(o.len(), 54);
    assert_eq!(
        &o[26..34],
        &pkt[26..34],
        "same direction as the client's packet"
    );
    assert_eq!(u32::from_be_bytes(o[38..42].try_into().unwrap()), 101);
    assert_eq!(u32::from_be_bytes(o[42..46].try_into().unwrap()), 5000);
    assert_eq!(o[47], 0x14, "RST|ACK");
    assert_eq!(
        &o[0..12],
        &pkt[0..12],
        "the packet's own Ethernet addresses"
    );
    assert!(meshclass::packet::checksums_ok(o));
}

#[test]
fn http_host_and_h2_authority() {
    let mut dp = dataplane();
    dp.apply(
        &plan(vec![entry(host("web.example.com", 80), 9, Verdict::Pass)]),
        &registry_only(Blocked::Drop),
    )
    .unwrap();
    let req = http::request(
        "GET",
        Some(b"Web.Example.com:80"),
        &http::RequestOptions::default(),
    );
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.2"), 42000, 80, 1);
    run(&mut dp, &f.syn().build());
    let d = run(&mut dp, &f.data(&req).build());
    expect(&d, verdict::PASS, stage::HOST);
    assert_eq!(d.service_id, 9);

    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.2"), 42001, 80, 1);
    run(&mut dp, &f.syn().build());
    let d = run(
        &mut dp,
        &f.data(&h2c::request("web.example.com", false)).build(),
    );
    expect(&d, verdict::PASS, stage::HOST);
    assert_eq!(d.service_id, 9);

    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.2"), 42002, 80, 1);
    run(&mut dp, &f.syn().build());
    let d = run(
        &mut dp,
        &f.data(&h2c::request("web.example.com", true)).build(),
    );
    expect(&d, verdict::PASS, stage::HOST);
    assert_eq!(d.service_id, 9);
}

/// A request whose line is long (a signed or redirect URL) before its Host: found while the
/// Host line, up to its CR, lies inside the first `PAYLOAD_WINDOW` bytes of the payload
/// (2 KiB), refused by the policy as not inspectable once it does not. A value that runs to the
/// window's end, or to the payload's, is no name, whatever it starts with: the bytes not read
/// may go on with it (`web.example.com` + `.evil.test`). The model agrees on every one.
#[test]
fn http_host_after_a_long_request_line() {
    use classifier_common::PAYLOAD_WINDOW;
    let mut dp = dataplane();
    let p = plan(vec![entry(host("web.example.com", 80), 9, Verdict::Pass)]);
    let settings = registry_only(Blocked::Drop);
    dp.apply(&p, &settings).unwrap();
    let mut model = Model::new(&p, &settings);
    let mut sport = 43000;
    let mut send = |req: &[u8], want: (u8, u8), what: &str| {
        sport += 1;
        let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.2"), sport, 80, 1);
        agree(&mut dp, &mut model, &f.syn().build(), what);
        let d = agree(&mut dp, &mut model, &f.data(req).build(), what);
        expect(&d, want.0, want.1);
        if want.0 == verdict::PASS {
            assert_eq!(d.service_id, 9, "{what}");
        }
    };
    // The Host line at `host_at`: "GET " + path + " HTTP/1.1\r\n" puts it 15 bytes after the
    // path; "Host: web.example.com" has its CR at host_at + 21.
    let request = |host_at: usize, host: &[u8]| {
        let o = http::RequestOptions {
            path: format!("/{}", "q".repeat(host_at - 16)),
            ..Default::default()
        };
        let req = http::request("GET", Some(host), &o);
        assert_eq!(&req[host_at..host_at + 6], b"Host: ");
        req
    };
    let name = b"web.example.com".as_slice();
    for host_at in [1000, 1500, PAYLOAD_WINDOW - 22] {
        let what = format!("Host line at {host_at}");
        send(&request(host_at, name), (verdict::PASS, stage::HOST), &what);
    }
    // The CR just past the window, the value cut by it, `Host:` not inside, the line after it.
    for host_at in [
        PAYLOAD_WINDOW - 21,
        PAYLOAD_WINDOW - 20,
        PAYLOAD_WINDOW - 4,
        PAYLOAD_WINDOW + 100,
    ] {
        let what = format!("Host line at {host_at}");
        send(
            &request(host_at, name),
            (verdict::DROP, stage::POLICY),
            &what,
        );
    }
    // Another name whose first bytes, all the window holds of it, are the registered one.
    let spoof = request(PAYLOAD_WINDOW - 22, b"web.example.com.evil.test");
    send(
        &spoof,
        (verdict::DROP, stage::POLICY),
        "a name cut by the window",
    );
    // A request whose Host value ends the segment: its next segment may go on with the name.
    send(
        b"GET / HTTP/1.1\r\nHost: web.example.com",
        (verdict::DROP, stage::POLICY),
        "a Host value that ends the segment",
    );
    send(
        b"GET / HTTP/1.1\r\nHost: web.example.com\r",
        (verdict::PASS, stage::HOST),
        "a Host line whose CR ends the segment",
    );
}

/// An h2c `:authority` with a port, as curl and gRPC send it for a port that is not the
/// scheme's, raw or Huffman-coded (as clients send it): the kernel decodes a coded value, so
/// both lose their port as a Host does and match as names do, case-insensitively and by `*.`
/// wildcard. A coding that is not valid up to the host's end (EOS, a padding of a zero bit or of
/// eight bits) gives no name. The model agrees on every one.
#[test]
fn h2_authority_with_port() {
    let mut dp = dataplane();
    let p = plan(vec![
        entry(host("web.example.com", 8080), 9, Verdict::Pass),
        entry(host("*.svc.example.org", 8080), 5, Verdict::Pass),
        entry(host("fd00::7", 8080), 6, Verdict::Pass),
    ]);
    let settings = registry_only(Blocked::Drop);
    dp.apply(&p, &settings).unwrap();
    let mut model = Model::new(&p, &settings);
    let cases: [(&str, u8, u32); 10] = [
        ("web.example.com:8080", stage::HOST, 9),
        ("web.example.com", stage::HOST, 9),
        ("Web.Example.COM.:8081", stage::HOST, 9),
        ("a.svc.example.org:8080", stage::HOST, 5),
        ("B.a.Svc.example.org", stage::HOST, 5),
        ("[fd00::7]:8080", stage::HOST, 6),
        ("svc.example.org:8080", stage::POLICY, 0),
        ("web.example.co:8080", stage::POLICY, 0),
        (":8080", stage::POLICY, 0),
        ("[:8080", stage::POLICY, 0),
    ];
    let mut port = 42100;
    let mut check = |o: &h2c::H2Options, authority: &str, huffman: bool, want: u8, service: u32| {
        let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.2"), port, 8080, 1);
        port += 1;
        let what = format!("{authority} huffman {huffman} coded {:02x?}", o.coded);
        agree(&mut dp, &mut model, &f.syn().build(), &what);
        let req = h2c::request_with(authority.as_bytes(), huffman, o);
        let d = agree(&mut dp, &mut model, &f.data(&req).build(), &what);
        let v = if want == stage::HOST {
            verdict::PASS
        } else {
            verdict::DROP
        };
        assert_eq!(
            (verdict::name(d.verdict), stage::name(d.stage)),
            (verdict::name(v), stage::name(want)),
            "{what}"
        );
        if want == stage::HOST {
            assert_eq!(d.service_id, service, "{what}");
        }
    };
    let plain = h2c::H2Options::default();
    for (authority, want, service) in cases {
        for huffman in [false, true] {
            check(&plain, authority, huffman, want, service);
        }
    }
    let coded = |c: Vec<u8>| h2c::H2Options {
        coded: Some(c),
        ..h2c::H2Options::default()
    };
    let code = |s: &str| hpack::huffman_encode(s.as_bytes());
    // A byte of ones more: padding of more than seven bits, no name; after a port it is not read.
    let mut c = code("web.example.com");
    c.push(0xff);
    check(&coded(c), "", true, stage::POLICY, 0);
    let mut c = code("web.example.com:8080");
    c.push(0xff);
    check(&coded(c), "", true, stage::HOST, 9);
    // EOS (thirty ones) inside the host.
    let mut c = code("web");
    c.extend([0xff; 4]);
    c.extend(code(".example.com"));
    check(&coded(c), "", true, stage::POLICY, 0);
    // A padding with a zero bit: "web.example.com" takes 86 bits, 2 of padding.
    let mut c = code("web.example.com");
    *c.last_mut().unwrap() &= 0xfe;
    check(&coded(c), "", true, stage::POLICY, 0);
    // 255 bytes decoded pass, 256 do not.
    let long = |n: usize| format!("{}.svc.example.org", "a".repeat(n - 16));
    check(&plain, &long(255), true, stage::HOST, 5);
    check(&plain, &format!("{}:8080", long(255)), true, stage::HOST, 5);
    check(&plain, &long(256), true, stage::POLICY, 0);
}

/// Sends `segs` (consecutive, from the flow's next sequence number) after a SYN; returns the
/// decisions of the data segments.
fn send_split(dp: &mut Dataplane, f: &mut TcpFlow, segs: &[&[u8]]) -> Vec<KernelDecision> {
    expect(&run(dp, &f.syn().build()), verdict::PASS, stage::PENDING);
    segs.iter().map(|s| run(dp, &f.data(s).build())).collect()
}

fn split_plan() -> meshclass::plan::Plan {
    plan(vec![
        entry(sni("api.example.com", 443), 1, Verdict::Pass),
        entry(sni("*.svc.example.org", 443), 2, Verdict::Pass),
        entry(sni("mesh.local", 443), 4, Verdict::Redirect),
    ])
}

/// Offset of the server name bytes in a hello (the model's parser knows it).
fn name_offset(h: &[u8], name: &[u8]) -> usize {
    h.windows(name.len())
        .position(|w| w == name)
        .expect("the name is in the hello")
}

/// Runs `frame` through the program and the model; asserts that they agree on verdict, stage
/// and, where the kernel's decision names one (not for stage FLOW), service (`what` names the
/// case); returns the kernel's decision.
fn agree(dp: &mut Dataplane, model: &mut Model, frame: &[u8], what: &str) -> KernelDecision {
    let (k, m) = (run(dp, frame), model.classify(frame));
    let service = |s: u32| (k.service_id != NO_SERVICE).then_some(s);
    assert_eq!(
        (k.verdict, k.stage, service(k.service_id)),
        (m.verdict, m.stage, service(m.service_id)),
        "{what}: kernel {k:?}, model {m:?}"
    );
    k
}

/// A dataplane and a model, both holding `split_plan` under REGISTRY_ONLY with drop.
fn split_pair() -> (Dataplane, Model) {
    let mut dp = dataplane();
    let p = split_plan();
    let settings = registry_only(Blocked::Drop);
    dp.apply(&p, &settings).unwrap();
    (dp, Model::new(&p, &settings))
}

#[test]
fn split_hello_every_cut_agrees_with_the_model() {
    let (mut dp, mut model) = split_pair();
    let h = hello("a.b.svc.example.org");
    let mut sport = 30000u16;
    for cut in 1..h.len() {
        sport += 1;
        let mut f = TcpFlow::new(
            ip("10.0.0.1"),
            ip("10.20.0.1"),
            sport,
            443,
            cut as u32 * 7919,
        );
        for frame in [
            f.syn().build(),
            f.data(&h[..cut]).build(),
            f.data(&h[cut..]).build(),
        ] {
            agree(&mut dp, &mut model, &frame, &format!("cut {cut}"));
        }
    }
    // The last decision of every cut: PASS by the wildcard, in the second segment.
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 29999, 443, 1);
    let d = send_split(&mut dp, &mut f, &[&h[..100], &h[100..]]);
    expect(&d[0], verdict::PASS, stage::PENDING);
    expect(&d[1], verdict::PASS, stage::SNI);
    assert_eq!(d[1].service_id, 2);
}

/// A ClientHello that starts in the SYN (TCP Fast Open): the SYN takes a sequence number, so
/// the next segment follows on at `isn + 1 + first part`, not as a gap.
#[test]
fn a_split_hello_that_starts_in_the_syn_is_followed() {
    let (mut dp, mut model) = split_pair();
    let h = hello("a.b.svc.example.org");
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 28001, 443, 4242);
    let frames = [
        f.syn_with(&h[..150]).build(),
        f.ack().build(),
        f.data(&h[150..]).build(),
    ];
    let d = frames
        .iter()
        .map(|f| agree(&mut dp, &mut model, f, "fast open"))
        .last()
        .unwrap();
    expect(&d, verdict::PASS, stage::SNI);
    assert_eq!(d.service_id, 2);
}

/// A port captured with REDIRECT that also carries names decides at the SYN: a redirect is
/// possible only there. A flow that waited for a name when a reload made the capture redirect
/// gets it as PASS after the payload (counted as a late redirect).
#[test]
fn a_redirecting_capture_decides_at_the_first_packet() {
    let names_only = plan(vec![entry(sni("api.example.com", 9000), 1, Verdict::Pass)]);
    let mut with_capture = names_only.clone();
    with_capture.entries.push(entry(
        Match::Port {
            port: 9000,
            protocol: L4::Tcp,
        },
        2,
        Verdict::Redirect,
    ));
    let settings = registry_only(Blocked::Drop);
    let mut dp = dataplane();
    dp.apply(&with_capture, &settings).unwrap();
    let mut model = Model::new(&with_capture, &settings);
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.9"), 28002, 9000, 7);
    for frame in [f.syn().build(), f.data(&hello("api.example.com")).build()] {
        agree(&mut dp, &mut model, &frame, "capture");
    }
    let f2 = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.9"), 28003, 9000, 7);
    let d = run(&mut dp, &f2.syn().build());
    expect(&d, verdict::REDIRECT, stage::PORT);
    assert_eq!(d.service_id, 2);

    dp.apply(&names_only, &settings).unwrap();
    model.update(&names_only, &settings);
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.9"), 28004, 9000, 7);
    let syn = f.syn().build();
    expect(&run(&mut dp, &syn), verdict::PASS, stage::PENDING);
    model.classify(&syn);
    dp.apply(&with_capture, &settings).unwrap();
    model.update(&with_capture, &settings);
    let c0 = dp.counters().unwrap();
    let data = f.data(&hello("other.example.org")).build();
    let k = agree(&mut dp, &mut model, &data, "late capture");
    expect(&k, verdict::PASS, stage::PORT);
    let c1 = dp.counters().unwrap();
    assert_eq!(
        c1[counter::LATE_REDIRECT as usize] - c0[counter::LATE_REDIRECT as usize],
        1
    );
}

#[test]
fn split_hello_at_chosen_positions() {
    let mut dp = dataplane();
    dp.apply(&split_plan(), &registry_only(Blocked::Drop))
        .unwrap();
    let name = b"API.example.com";
    let h = hello("API.example.com");
    let at = name_offset(&h, name);
    // Inside the record header, inside the handshake header, just before byte 9, inside the
    // server_name extension header (type, length), inside the name, and three-way splits.
    let cuts: Vec<Vec<usize>> = vec![
        vec![1],
        vec![3],
        vec![5],
        vec![8],
        vec![9],
        vec![at - 8],
        vec![at - 6],
        vec![at - 2],
        vec![at + 4],
        vec![at + name.len() - 1],
        vec![2, 7],
        vec![at - 7, at + 3],
        vec![4, at + 1, h.len() - 1],
    ];
    for (i, c) in cuts.iter().enumerate() {
        let segs = meshclass::packet::split_at(&h, c);
        let segs: Vec<&[u8]> = segs.iter().map(|s| s.as_slice()).collect();
        let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 31000 + i as u16, 443, 5);
        let c0 = dp.counters().unwrap();
        let d = send_split(&mut dp, &mut f, &segs);
        for x in &d[..d.len() - 1] {
            expect(x, verdict::PASS, stage::PENDING);
        }
        let last = d.last().unwrap();
        expect(last, verdict::PASS, stage::SNI);
        assert_eq!(last.service_id, 1, "cuts {c:?}");
        let c1 = dp.counters().unwrap();
        assert_eq!(
            c1[counter::SPLIT_HELLOS as usize] - c0[counter::SPLIT_HELLOS as usize],
            1,
            "cuts {c:?}"
        );
        // The flow is decided.
        expect(
            &run(&mut dp, &f.data(b"more").build()),
            verdict::PASS,
            stage::FLOW,
        );
    }
}

#[test]
fn split_hello_retransmission_and_gap() {
    let mut dp = dataplane();
    dp.apply(&split_plan(), &registry_only(Blocked::Drop))
        .unwrap();
    let h = hello("api.example.com");
    let cut = 60;

    // A retransmission of the first segment changes nothing; a bare ACK waits.
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 32000, 443, 900);
    run(&mut dp, &f.syn().build());
    let first_seq = f.next_seq;
    expect(
        &run(&mut dp, &f.data(&h[..cut]).build()),
        verdict::PASS,
        stage::PENDING,
    );
    expect(
        &run(&mut dp, &f.data_at(first_seq, &h[..cut]).build()),
        verdict::PASS,
        stage::PENDING,
    );
    expect(
        &run(&mut dp, &f.ack().build()),
        verdict::PASS,
        stage::PENDING,
    );
    let d = run(&mut dp, &f.data(&h[cut..]).build());
    expect(&d, verdict::PASS, stage::SNI);
    assert_eq!(d.service_id, 1);

    // A gap: the hello is not inspectable; the segment after the gap goes to the policy.
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 32001, 443, 0xffff_fff0);
    run(&mut dp, &f.syn().build());
    run(&mut dp, &f.data(&h[..cut]).build());
    let d = run(
        &mut dp,
        &f.data_at(f.next_seq.wrapping_add(10), &h[cut..]).build(),
    );
    expect(&d, verdict::DROP, stage::POLICY);
    expect(
        &run(&mut dp, &f.data(&h[cut..]).build()),
        verdict::DROP,
        stage::FLOW,
    );

    // A new connection (SYN) on the same key forgets the hello being followed.
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 32002, 443, 77);
    run(&mut dp, &f.syn().build());
    run(&mut dp, &f.data(&h[..cut]).build());
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 32002, 443, 5000);
    let d = send_split(&mut dp, &mut f, &[&h[..30], &h[30..]]);
    expect(&d[0], verdict::PASS, stage::PENDING);
    expect(&d[1], verdict::PASS, stage::SNI);

    // The parse state an abandoned hello left is never taken for a new connection's, even
    // when the new one's first payload starts at the very sequence number it expects.
    let mut old = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 32003, 443, 77);
    run(&mut dp, &old.syn().build());
    expect(
        &run(&mut dp, &old.data(&h[..cut]).build()),
        verdict::PASS,
        stage::PENDING,
    );
    let mut f = TcpFlow::new(
        ip("10.0.0.1"),
        ip("10.20.0.1"),
        32003,
        443,
        old.next_seq.wrapping_sub(1),
    );
    assert_eq!(f.next_seq, old.next_seq);
    let d = send_split(&mut dp, &mut f, &[&hello("a.svc.example.org")]);
    expect(&d[0], verdict::PASS, stage::SNI);
    assert_eq!(d[0].service_id, 2);
}

/// A ClientHello padded (extension 21) to `total` bytes in all.
fn padded_hello(name: &str, total: usize) -> Vec<u8> {
    let base = hello(name).len();
    let opts = tls::HelloOptions {
        extra: vec![(0, 21, vec![0; total - base - 4])],
        ..Default::default()
    };
    let h = tls::client_hello(Some(name), &opts).unwrap();
    assert_eq!(h.len(), total);
    h
}

#[test]
fn split_hello_up_to_16_kib() {
    let mut dp = dataplane();
    dp.apply(&split_plan(), &registry_only(Blocked::Drop))
        .unwrap();
    // Exactly 16384 bytes of hello (9 + handshake length), in 1400-byte segments.
    let h = padded_hello("api.example.com", 16384);
    let segs: Vec<&[u8]> = h.chunks(1400).collect();
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 33000, 443, 1);
    let d = send_split(&mut dp, &mut f, &segs);
    for x in &d[..d.len() - 1] {
        expect(x, verdict::PASS, stage::PENDING);
    }
    expect(d.last().unwrap(), verdict::PASS, stage::SNI);

    // One byte more: not inspectable as soon as byte 9 is known.
    let h = padded_hello("api.example.com", 16385);
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 33001, 443, 1);
    let d = send_split(&mut dp, &mut f, &[&h[..5], &h[5..1400]]);
    expect(&d[0], verdict::PASS, stage::PENDING);
    expect(&d[1], verdict::DROP, stage::POLICY);
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 33002, 443, 1);
    let d = send_split(&mut dp, &mut f, &[&h[..1400]]);
    expect(&d[0], verdict::DROP, stage::POLICY);
}

#[test]
fn split_hello_blocked_name_resets_both_sides_and_redirect_is_late() {
    let mut dp = dataplane();
    dp.apply(&split_plan(), &registry_only(Blocked::Reject))
        .unwrap();
    let h = hello("evil.example.net");
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 34000, 443, 100);
    run(&mut dp, &f.syn().build());
    expect(
        &run(&mut dp, &f.data(&h[..50]).build()),
        verdict::PASS,
        stage::PENDING,
    );
    let pkt = f.data(&h[50..]).build();
    let d = run(&mut dp, &pkt);
    expect(&d, verdict::REJECT, stage::POLICY);
    assert_eq!(d.retval, TC_ACT_UNSPEC);
    let o = &d.data_out;
    assert_eq!(o.len(), 54);
    assert_eq!(&o[26..34], &pkt[26..34], "toward the server");
    assert_eq!(o[47], 0x14, "RST|ACK");
    assert!(meshclass::packet::checksums_ok(o));

    let h = hello("mesh.local");
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 34001, 443, 100);
    let c0 = dp.counters().unwrap();
    let d = send_split(&mut dp, &mut f, &[&h[..200], &h[200..]]);
    expect(&d[1], verdict::PASS, stage::SNI);
    assert_eq!(d[1].service_id, 4);
    let c1 = dp.counters().unwrap();
    assert_eq!(
        c1[counter::LATE_REDIRECT as usize] - c0[counter::LATE_REDIRECT as usize],
        1
    );

    // ECH in a split hello: not inspectable, counted.
    let opts = tls::HelloOptions {
        ech_at: Some(1),
        ..Default::default()
    };
    let h = tls::client_hello(Some("api.example.com"), &opts).unwrap();
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 34002, 443, 100);
    let c0 = dp.counters().unwrap();
    let d = send_split(&mut dp, &mut f, &[&h[..20], &h[20..]]);
    expect(&d[1], verdict::REJECT, stage::POLICY);
    let c1 = dp.counters().unwrap();
    assert_eq!(
        c1[counter::ECH_SEEN as usize] - c0[counter::ECH_SEEN as usize],
        1
    );
}

/// The decision events a run left in the ring buffer, oldest first.
fn drain_events(dp: &mut Dataplane) -> Vec<classifier_common::Event> {
    use aya::maps::RingBuf;
    let map = dp
        .ebpf_mut()
        .map_mut(classifier_common::maps::EVENTS)
        .expect("the EVENTS map");
    let mut ring = RingBuf::try_from(map).expect("a ring buffer");
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), size_of::<classifier_common::Event>());
        // SAFETY: a record of exactly one Event, written by the program.
        out.push(unsafe {
            std::ptr::read_unaligned(item.as_ptr() as *const classifier_common::Event)
        });
    }
    out
}

#[test]
fn decision_events_carry_the_flow_the_verdict_and_the_name() {
    let mut dp = dataplane();
    let settings = meshclass::settings::Settings {
        events_all: true,
        ..registry_only(Blocked::Drop)
    };
    let p = plan(vec![
        entry(sni("api.example.com", 443), 7, Verdict::Pass),
        entry(exact("10.30.0.1", 80, L4::Tcp), 8, Verdict::Pass),
    ]);
    dp.apply(&p, &settings).unwrap();
    drain_events(&mut dp);

    // A name decision: the event names the (lower-cased) name.
    let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.1"), 42000, 443, 100);
    run(&mut dp, &f.syn().build());
    let d = run(&mut dp, &f.data(&hello("API.Example.COM")).build());
    expect(&d, verdict::PASS, stage::SNI);
    // An address decision after it: no name, whatever the scratch still holds.
    let g = TcpFlow::new(ip("10.0.0.1"), ip("10.30.0.1"), 42001, 80, 100);
    expect(&run(&mut dp, &g.syn().build()), verdict::PASS, stage::EXACT);
    // A blocked connection.
    let b = TcpFlow::new(ip("10.0.0.1"), ip("10.31.0.9"), 42002, 81, 100);
    expect(
        &run(&mut dp, &b.syn().build()),
        verdict::DROP,
        stage::POLICY,
    );

    let ev = drain_events(&mut dp);
    assert_eq!(ev.len(), 3, "{ev:?}");
    let key = meshclass::dataplane::flow_key(&f.syn().build()).unwrap();
    assert_eq!(ev[0].flow, key);
    assert_eq!(
        (ev[0].verdict, ev[0].stage, ev[0].service_id),
        (verdict::PASS, stage::SNI, 7)
    );
    assert_eq!(&ev[0].name[..ev[0].name_len as usize], b"api.example.com");
    assert!(ev[0].ts_ns > 0);
    assert_eq!(
        ev[1].flow,
        meshclass::dataplane::flow_key(&g.syn().build()).unwrap()
    );
    assert_eq!(
        (ev[1].verdict, ev[1].stage, ev[1].service_id, ev[1].name_len),
        (verdict::PASS, stage::EXACT, 8, 0)
    );
    assert_eq!(
        (ev[2].verdict, ev[2].stage, ev[2].name_len),
        (verdict::DROP, stage::POLICY, 0)
    );
    assert_eq!(ev[2].service_id, NO_SERVICE);
    assert!(ev[0].ts_ns <= ev[1].ts_ns && ev[1].ts_ns <= ev[2].ts_ns);
}

/// One segment of a followed HTTP/2 stream: the bytes, and whether they are sent at the flow's
/// next sequence number (`Next`), again at the previous segment's (`Again`), or past a gap.
enum Seg {
    Next(Vec<u8>),
    Again,
    Gap(Vec<u8>),
}

/// HTTP/2 prior-knowledge streams whose HEADERS frame comes in a later segment than the
/// preface, as curl (preface and SETTINGS, then HEADERS), Go and gRPC (preface, SETTINGS,
/// HEADERS) write them: the stream is followed to its first HEADERS frame, each segment before
/// it PASS at stage PENDING. A segment ending inside a frame, a retransmission, a gap, and more
/// segments than are followed; kernel and model agree at every packet.
#[test]
fn h2_stream_followed_to_its_headers_frame() {
    let mut dp = dataplane();
    let p = plan(vec![entry(host("web.example.com", 8080), 9, Verdict::Pass)]);
    let settings = registry_only(Blocked::Reject);
    dp.apply(&p, &settings).unwrap();
    let mut model = Model::new(&p, &settings);

    let frame = |ty: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut v = Vec::new();
        h2c::frame(&mut v, ty, flags, stream, payload);
        v
    };
    let settings_frame = frame(h2c::frame_type::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    let window_update = frame(h2c::frame_type::WINDOW_UPDATE, 0, 0, &[0, 0xef, 0, 1]);
    let headers = |authority: &str| {
        let block = h2c::header_block(authority.as_bytes(), true, &Default::default());
        frame(h2c::frame_type::HEADERS, 0x4, 1, &block)
    };
    let preface = h2c::PREFACE.to_vec();
    let good = headers("web.example.com:8080");
    let cat = |parts: &[&[u8]]| parts.concat();
    use Seg::*;
    let pending = (verdict::PASS, stage::PENDING);
    let host_pass = (verdict::PASS, stage::HOST);
    let rejected = (verdict::REJECT, stage::POLICY);
    /// What a case is, its segments, and the (verdict, stage) of each.
    type Case = (&'static str, Vec<Seg>, Vec<(u8, u8)>);
    let cases: Vec<Case> = vec![
        (
            "curl: preface and SETTINGS, then HEADERS",
            vec![
                Next(cat(&[&preface, &settings_frame, &window_update])),
                Next(good.clone()),
            ],
            vec![pending, host_pass],
        ),
        (
            "gRPC: preface, SETTINGS, HEADERS",
            vec![
                Next(preface.clone()),
                Next(cat(&[&settings_frame, &window_update])),
                Next(good.clone()),
            ],
            vec![pending, pending, host_pass],
        ),
        (
            "a segment ending inside SETTINGS",
            vec![
                Next(cat(&[&preface, &settings_frame[..11]])),
                Next(cat(&[&settings_frame[11..], &good])),
            ],
            vec![pending, host_pass],
        ),
        (
            "a segment inside SETTINGS as a whole",
            vec![
                Next(cat(&[&preface, &settings_frame[..10]])),
                Next(settings_frame[10..12].to_vec()),
                Next(cat(&[&settings_frame[12..], &good])),
            ],
            vec![pending, pending, host_pass],
        ),
        (
            "a retransmission waits",
            vec![
                Next(preface.clone()),
                Again,
                Next(cat(&[&settings_frame, &good])),
            ],
            vec![pending, pending, host_pass],
        ),
        (
            "an unregistered name is rejected after the handshake",
            vec![
                Next(cat(&[&preface, &settings_frame])),
                Next(headers("other.example:8080")),
            ],
            vec![pending, rejected],
        ),
        (
            "a gap is not inspectable",
            vec![Next(preface.clone()), Gap(good.clone())],
            vec![pending, rejected],
        ),
        (
            "a frame header split between segments is not inspectable",
            vec![
                Next(cat(&[&preface, &settings_frame[..4]])),
                Next(cat(&[&settings_frame[4..], &good])),
            ],
            vec![rejected, (verdict::REJECT, stage::FLOW)],
        ),
        (
            "seven segments before HEADERS are followed",
            std::iter::once(Next(preface.clone()))
                .chain((0..6).map(|_| Next(window_update.clone())))
                .chain(std::iter::once(Next(good.clone())))
                .collect(),
            [vec![pending; 7], vec![host_pass]].concat(),
        ),
        (
            "the eighth that ends before HEADERS is not",
            std::iter::once(Next(preface.clone()))
                .chain((0..7).map(|_| Next(window_update.clone())))
                .chain(std::iter::once(Next(good.clone())))
                .collect(),
            [
                vec![pending; 7],
                vec![rejected, (verdict::REJECT, stage::FLOW)],
            ]
            .concat(),
        ),
    ];
    let split_h2 = |dp: &Dataplane| dp.counters().unwrap()[counter::SPLIT_H2 as usize];
    let c0 = split_h2(&dp);
    // The cases whose `:authority` comes in a later segment and is looked up: all but the gap,
    // the split frame header and the eighth segment.
    let looked_up = cases.len() as u64 - 3;
    for (i, (what, segs, want)) in cases.into_iter().enumerate() {
        let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.2"), 43000 + i as u16, 8080, 1);
        let syn = agree(&mut dp, &mut model, &f.syn().build(), what);
        expect(&syn, verdict::PASS, stage::PENDING);
        let mut last = Vec::new();
        for (j, (seg, want)) in segs.into_iter().zip(want).enumerate() {
            let frame = match seg {
                Next(b) => {
                    last = f.data(&b).build();
                    last.clone()
                }
                Again => last.clone(),
                Gap(b) => f.data_at(f.next_seq.wrapping_add(7), &b).build(),
            };
            let d = agree(&mut dp, &mut model, &frame, &format!("{what}, segment {j}"));
            assert_eq!(
                (verdict::name(d.verdict), stage::name(d.stage)),
                (verdict::name(want.0), stage::name(want.1)),
                "{what}, segment {j}"
            );
            if want == host_pass {
                assert_eq!(d.service_id, 9, "{what}");
            }
        }
    }
    assert_eq!(split_h2(&dp) - c0, looked_up, "SPLIT_H2");
}

/// A reload while an h2c stream is followed that takes every Host entry of its port: the
/// stream is followed to its end all the same, and its HEADERS frame's `:authority`
/// (Huffman-coded, decoded in the kernel) is matched against the port's names in force then
/// (names are per port): a TLS name of the port matches, a name the reload removed does not.
/// The kernel and the model agree.
#[test]
fn h2_stream_followed_across_a_reload() {
    for keep_name in [false, true] {
        let mut dp = dataplane();
        let before = plan(vec![
            entry(host("a.example.com", 8080), 1, Verdict::Pass),
            entry(sni("b.example.com", 8080), 2, Verdict::Pass),
        ]);
        let kept = if keep_name { "b" } else { "c" };
        let after = plan(vec![entry(
            sni(&format!("{kept}.example.com"), 8080),
            2,
            Verdict::Pass,
        )]);
        let settings = registry_only(Blocked::Drop);
        dp.apply(&before, &settings).unwrap();
        let mut model = Model::new(&before, &settings);
        let [start, headers] = h2c::request_in_two(b"b.example.com:8080");
        let mut f = TcpFlow::new(ip("10.0.0.1"), ip("10.20.0.2"), 44000, 8080, 1);
        let what = format!("keep_name {keep_name}");
        let frames = [f.syn().build(), f.data(&start).build()];
        for fr in &frames {
            let d = agree(&mut dp, &mut model, fr, &what);
            expect(&d, verdict::PASS, stage::PENDING);
        }
        dp.apply(&after, &settings).unwrap();
        model.update(&after, &settings);
        let d = agree(&mut dp, &mut model, &f.data(&headers).build(), &what);
        let want = if keep_name {
            (verdict::PASS, stage::HOST)
        } else {
            (verdict::DROP, stage::POLICY)
        };
        assert_eq!(
            (verdict::name(d.verdict), stage::name(d.stage)),
            (verdict::name(want.0), stage::name(want.1)),
            "{what}"
        );
    }
}
