//! Shared helpers of the kernel unit tests (included with `#[path]`).

#![allow(dead_code, reason = "each test file uses a part of the helpers")]

use std::net::IpAddr;

use classifier_common::{stage, verdict};
use meshclass::{
    dataplane::{Capacities, Dataplane, KernelDecision},
    plan::{Cidr, Entry, Match, Plan, Verdict, L4},
    settings::{Blocked, OutboundPolicy, Settings},
};

pub const TC_ACT_UNSPEC: i32 = -1;
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;
pub const TC_ACT_REDIRECT: i32 = 7;

/// Loads the program with small maps; fails loudly when the test cannot run.
pub fn dataplane() -> Dataplane {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "kernel tests need root (BPF_PROG_TEST_RUN): run them with sudo"
    );
    let caps = Capacities {
        exact: 1024,
        cidr: 256,
        names: 1024,
        flows: 4096,
        pending: 256,
        entry_ids: 8192,
        events_bytes: 1 << 16,
    };
    match Dataplane::load(&caps) {
        Ok(d) => d,
        Err(e) => panic!("loading the classifier failed: {e:#?}"),
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP address")
}

pub fn entry(matcher: Match, service_id: u32, verdict: Verdict) -> Entry {
    Entry {
        matcher,
        service_id,
        service: format!("ns/svc{service_id}/host"),
        verdict,
    }
}

pub fn exact(addr: &str, port: u16, protocol: L4) -> Match {
    Match::Ip {
        addr: ip(addr),
        port,
        protocol,
    }
}

pub fn cidr(addr: &str, len: u8, port: u16, protocol: L4) -> Match {
    Match::Cidr {
        cidr: Cidr {
            addr: ip(addr),
            len,
        },
        port,
        protocol,
    }
}

pub fn sni(name: &str, port: u16) -> Match {
    Match::Sni {
        name: name.into(),
        port,
    }
}

pub fn host(name: &str, port: u16) -> Match {
    Match::Host {
        name: name.into(),
        port,
    }
}

pub fn plan(entries: Vec<Entry>) -> Plan {
    Plan {
        entries,
        ..Plan::default()
    }
}

pub fn registry_only(blocked: Blocked) -> Settings {
    Settings {
        outbound_policy: OutboundPolicy::RegistryOnly,
        blocked,
        ..Settings::default()
    }
}

pub fn allow_any() -> Settings {
    Settings::default()
}

pub fn run(dp: &mut Dataplane, frame: &[u8]) -> KernelDecision {
    dp.test_run(frame).expect("BPF_PROG_TEST_RUN")
}

/// Asserts verdict and stage by name, for readable failures.
pub fn expect(d: &KernelDecision, v: u8, s: u8) {
    assert_eq!(
        (verdict::name(d.verdict), stage::name(d.stage)),
        (verdict::name(v), stage::name(s)),
        "decision {d:?}"
    );
}
