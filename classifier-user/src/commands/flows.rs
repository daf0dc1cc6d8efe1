//! `meshclass flows`: decision events from the pinned ring buffer, one line each.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::maps::{Map, MapData, RingBuf};
use classifier_common::{family, maps, proto, stage, verdict, Event, NO_SERVICE};
use serde_json::json;

use crate::daemon::{pins::Pins, state::State};

fn addr(fam: u8, a: &[u8; 16]) -> IpAddr {
    if fam == family::V4 {
        Ipv4Addr::new(a[0], a[1], a[2], a[3]).into()
    } else {
        Ipv6Addr::from(*a).into()
    }
}

/// The kernel's monotonic clock (`bpf_ktime_get_ns`), in ns.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall-clock offset of the kernel's monotonic clock, to print event times.
fn mono_to_unix_ns() -> i128 {
    let mono = i128::from(monotonic_ns());
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    wall - mono
}

/// Prints events: buffered ones, and with `follow` new ones as they come. 0 ok, 2 no dataplane.
pub fn run(pin_dir: &Path, follow: bool, json_out: bool) -> i32 {
    let pins = Pins::new(pin_dir);
    if let Some(why) = pins.missing() {
        eprintln!("error: {why}");
        return 2;
    }
    let data = match MapData::from_pin(pins.map(maps::EVENTS)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: opening the event ring buffer: {e}");
            return 2;
        }
    };
    let mut ring = match RingBuf::try_from(Map::RingBuf(data)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let offset = mono_to_unix_ns();
    let mut state = State::read(&pins.state_file()).unwrap_or_default();
    let mut state_read = std::time::Instant::now();
    if !json_out {
        println!(
            "{:<12} {:<45} {:<45} {:<5} {:<30} {:<9} {:<8} SERVICE",
            "TIME", "SOURCE", "DESTINATION", "PROTO", "NAME", "VERDICT", "STAGE"
        );
    }
    loop {
        while let Some(item) = ring.next() {
            if item.len() < size_of::<Event>() {
                continue;
            }
            // SAFETY: the program writes whole `Event`s; read_unaligned copes with alignment.
            let ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) };
            let when = (i128::from(ev.ts_ns) + offset).max(0) as u128;
            let secs = (when / 1_000_000_000) as u64;
            let time = format!(
                "{:02}:{:02}:{:02}.{:03}",
                (secs / 3600) % 24,
                (secs / 60) % 60,
                secs % 60,
                (when / 1_000_000) % 1000
            );
            let src = SocketAddr::new(
                addr(ev.flow.family, &ev.flow.saddr),
                u16::from_be(ev.flow.sport),
            );
            let dst = SocketAddr::new(
                addr(ev.flow.family, &ev.flow.daddr),
                u16::from_be(ev.flow.dport),
            );
            let p = match ev.flow.proto {
                proto::TCP => "tcp",
                proto::UDP => "udp",
                _ => "other",
            };
            let n = (ev.name_len as usize).min(ev.name.len());
            let name = String::from_utf8_lossy(&ev.name[..n]).to_string();
            let service = if ev.service_id == NO_SERVICE {
                "-".to_string()
            } else {
                state
                    .plan
                    .services
                    .get(ev.service_id as usize)
                    .map(|s| s.key())
                    .unwrap_or_else(|| format!("#{}", ev.service_id))
            };
            if json_out {
                println!(
                    "{}",
                    json!({"time_unix_ns": when.to_string(), "src": src.to_string(), "dst": dst.to_string(),
                           "protocol": p, "name": if name.is_empty() { None } else { Some(&name) },
                           "verdict": verdict::name(ev.verdict), "stage": stage::name(ev.stage),
                           "service": service})
                );
            } else {
                println!(
                    "{:<12} {:<45} {:<45} {:<5} {:<30} {:<9} {:<8} {}",
                    time,
                    src.to_string(),
                    dst.to_string(),
                    p,
                    if name.is_empty() { "-" } else { &name },
                    verdict::name(ev.verdict),
                    stage::name(ev.stage),
                    service
                );
            }
        }
        if !follow {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(50));
        // Reloads add services: keep the names current.
        if state_read.elapsed() > Duration::from_secs(1) {
            state = State::read(&pins.state_file()).unwrap_or(state);
            state_read = std::time::Instant::now();
        }
    }
}
