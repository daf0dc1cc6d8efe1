//! Kernel unit tests of the name stages: TLS SNI, HTTP/1.x Host, HTTP/2 `:authority`.

#[path = "kernel_common.rs"]
mod common;

use classifier_common::{counter, stage, verdict};
use common::*;
use meshclass::{
    packet::{h2c, http, tls, TcpFlow},
    plan::Verdict,
    settings::Blocked,
};

fn hello(name: &str) -> Vec<u8> {
    tls::client_hello(Some(name), &tls::HelloOptions::default()).expect("a ClientHello")
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
    assert_eq!(o[47], 0x14, "RST|ACK");
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
