//! End to end, as a platform engineer runs it: `meshclass run` in the node namespace of the lab,
//! real connections from the workload, and the CLI and metrics checked against what was sent.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tests::{
    lab::{addr, Lab, Outcome, H2C_PORT, TCP_PORT},
    require_privileges,
    scenarios::{self, Kind},
};

fn meshclass_bin() -> PathBuf {
    let p = std::env::var_os("MESHCLASS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/meshclass")
        });
    assert!(
        p.exists(),
        "no meshclass binary at {} (cargo xtask test builds it first)",
        p.display()
    );
    p
}

fn example_registry() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab-registry")
}

fn no_progress(_: &str) {}

/// A lab named `name` whose daemon runs the example registry with `args`, and the binary.
fn example_lab(name: &str, args: &[&str]) -> (Lab, PathBuf) {
    require_privileges();
    let bin = meshclass_bin();
    let mut lab = Lab::new(name, &no_progress).unwrap();
    lab.start_daemon(&bin, &example_registry(), args).unwrap();
    (lab, bin)
}

/// Every probe behaved as expected.
fn assert_rows(rows: &[scenarios::Row]) {
    let bad: Vec<_> = rows.iter().filter(|r| !r.ok()).collect();
    assert!(
        bad.is_empty(),
        "connections that did not behave as expected:\n{}",
        scenarios::table(rows)
    );
}

#[test]
fn example_registry_under_allow_any() {
    let (lab, bin) = example_lab("e2e-allow", &["--outbound-policy", "allow_any"]);
    let rows = scenarios::run(&lab, &bin, false);
    assert_rows(&rows);
    // Redirected connections reached the proxy with their original destinations.
    let seen = lab.proxy_seen.lock().unwrap().clone();
    for a in [addr::CUSTOMERS_VIP, addr::VM1, addr::VM2, addr::POD] {
        let dst = SocketAddr::new(a.parse().unwrap(), 80);
        assert!(
            seen.contains(&dst),
            "the proxy saw {dst} as an original destination: {seen:?}"
        );
    }
}

#[test]
fn example_registry_under_registry_only_with_reject() {
    let (lab, bin) = example_lab(
        "e2e-only",
        &["--outbound-policy", "REGISTRY_ONLY", "--blocked", "reject"],
    );
    let rows = scenarios::run(&lab, &bin, true);
    assert_rows(&rows);
    // The three connections rejected by name (TLS, HTTP and h2c) had reached their servers:
    // each server got a RST too, and did not wait for its read to time out.
    let named = rows
        .iter()
        .filter(|r| {
            r.expected == "reject"
                && matches!(r.probe.kind, Kind::Tls(_) | Kind::Http(_) | Kind::H2c(_))
        })
        .count();
    assert_eq!(named, 3, "{}", scenarios::table(&rows));
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while lab.server_resets.load(Ordering::SeqCst) < named as u64
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        lab.server_resets.load(Ordering::SeqCst),
        named as u64,
        "servers reset"
    );
}

/// Under REGISTRY_ONLY, connections that only a TLS SNI or HTTP Host name allows pass, and
/// their flows record the name stage.
#[test]
fn names_decide_under_registry_only() {
    let (lab, bin) = example_lab("e2e-names", &["--outbound-policy", "REGISTRY_ONLY"]);
    let rows: Vec<_> = scenarios::run(&lab, &bin, true)
        .into_iter()
        .filter(|r| scenarios::needs_names(&r.probe, true))
        .collect();
    let kinds = |http: bool| {
        rows.iter()
            .filter(|r| matches!(r.probe.kind, Kind::Http(_) | Kind::H2c(_)) == http)
            .count()
    };
    assert!(
        kinds(true) > 0 && kinds(false) > 0,
        "{}",
        scenarios::table(&rows)
    );
    let bad: Vec<_> = rows
        .iter()
        .filter(|r| {
            let want = match r.probe.kind {
                Kind::Http(_) | Kind::H2c(_) => "host",
                _ => "sni",
            };
            !r.ok() || r.stage != want
        })
        .collect();
    assert!(bad.is_empty(), "{}", scenarios::table(&rows));
}

/// `--bind-names-to-dns`: a host that DNS resolves is known by the addresses DNS returned, so
/// its TLS SNI or HTTP Host sent to another address is refused under REGISTRY_ONLY (without
/// the flag, the scenarios' "by SNI, other IP" rows pass: Istio's spoofable behaviour).
#[test]
fn names_bound_to_dns_refuse_their_name_at_other_addresses() {
    let (lab, _bin) = example_lab(
        "e2e-bind",
        &[
            "--outbound-policy",
            "REGISTRY_ONLY",
            "--blocked",
            "reject",
            "--bind-names-to-dns",
        ],
    );
    // The registry, then the addresses DNS gave api.external-svc.com.
    lab.wait_for_log_count("registry applied", 2, Duration::from_secs(10))
        .unwrap();
    let t = Duration::from_secs(2);
    let name = "api.external-svc.com";
    let api = |port| SocketAddr::new(addr::API.parse().unwrap(), port);
    let other = |port| SocketAddr::new(addr::UNKNOWN.parse().unwrap(), port);
    let o = lab.tls(api(443), name, t);
    assert_eq!(o.word(), "pass", "TLS to the address DNS gave: {o:?}");
    let o = lab.http(api(80), name, t);
    assert_eq!(o.word(), "pass", "HTTP to the address DNS gave: {o:?}");
    let o = lab.tls(other(443), name, t);
    assert_eq!(o.word(), "reject", "the SNI at another address: {o:?}");
    let o = lab.http(other(80), name, t);
    assert_eq!(o.word(), "reject", "the Host at another address: {o:?}");
}

/// A real client's request whose long request line (a signed URL) puts its Host well past the
/// first segment's MSS: written at once, it reaches the program as one packet (the veth
/// keeps the client's GSO packet whole), and its Host is read while it lies inside the first
/// `PAYLOAD_WINDOW` bytes (2 KiB). The name is the only thing that allows it here (an address
/// that has no entry, under REGISTRY_ONLY): inside the window it passes, past it it is refused,
/// and so is another name that the window cuts to the registered one. (Its lab then serves a
/// `detach` from outside the daemon's network namespace.)
#[test]
fn a_long_request_line_is_decided_by_its_host() {
    use classifier_common::PAYLOAD_WINDOW;
    let (lab, bin) = example_lab(
        "e2e-longurl",
        &["--outbound-policy", "REGISTRY_ONLY", "--blocked", "reject"],
    );
    let t = Duration::from_secs(2);
    let other = SocketAddr::new(addr::UNKNOWN.parse().unwrap(), 80);
    let name = "api.external-svc.com";
    // "GET " + path + " HTTP/1.1\r\n" + "Host: " + name + "\r\n" must fit the window.
    let inside = format!(
        "/sig?{}",
        "s".repeat(PAYLOAD_WINDOW - 4 - 11 - 6 - name.len() - 2 - 5 - 8)
    );
    let past = format!("/sig?{}", "s".repeat(PAYLOAD_WINDOW));
    let o = lab.http_path(other, name, &inside, t);
    assert_eq!(o.word(), "pass", "a {}-byte path: {o:?}", inside.len());
    let o = lab.http_path(other, name, &past, t);
    assert_eq!(o.word(), "reject", "a {}-byte path: {o:?}", past.len());
    let o = lab.http_path(other, "unknown.example", "/", t);
    assert_eq!(o.word(), "reject", "an unknown Host: {o:?}");
    // Another name, of which the window holds the registered one's bytes only: the Host line
    // starts 15 bytes after the path, its value 6 after that.
    let cut = format!(
        "/sig?{}",
        "s".repeat(PAYLOAD_WINDOW - 15 - 6 - name.len() - 5)
    );
    let spoof = format!("{name}.evil.example");
    let o = lab.http_path(other, &spoof, &cut, t);
    assert_eq!(
        o.word(),
        "reject",
        "{spoof} cut to {name} by the window: {o:?}"
    );
    // `detach` from this test's network namespace, not the daemon's: refused, then done with
    // --any-netns (for when the daemon's namespace is gone), the pins going.
    lab.stop_daemon(false).unwrap();
    let pin_dir = lab.pin_dir.display().to_string();
    let detach = |extra: &[&str]| {
        std::process::Command::new(&bin)
            .args(["detach", "--pin-dir", &pin_dir])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = detach(&[]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--any-netns"),
        "{out:?}"
    );
    assert!(lab.pin_dir.exists(), "refused, the pins stay");
    let out = detach(&["--any-netns"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!lab.pin_dir.exists(), "detached, the pins are gone");
}

/// Removes a test's registry directory however the test ends.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A lab whose daemon (started with `args`) enforces a registry directory of the test's own:
/// `registry_dir(dir, unknown_port, false)` plus the `extra` files (name, contents). The guard
/// removes the directory however the test ends; its `.0` is the directory.
fn registry_dir_lab(
    name: &str,
    unknown_port: Option<u16>,
    extra: &[(&str, &str)],
    args: &[&str],
) -> (Lab, PathBuf, RemoveDir) {
    require_privileges();
    let bin = meshclass_bin();
    let mut lab = Lab::new(name, &no_progress).unwrap();
    let dir = std::env::temp_dir().join(tests::unique_name(&format!("meshclass-{name}-"), 60));
    let guard = RemoveDir(dir.clone());
    registry_dir(&dir, unknown_port, false);
    for (file, text) in extra {
        std::fs::write(dir.join(file), text).unwrap();
    }
    lab.start_daemon(&bin, &dir, args).unwrap();
    (lab, bin, guard)
}

/// Writes a registry directory with the example plus, optionally, a service that makes the
/// unknown host a registered external one on port `unknown_port`.
fn registry_dir(dir: &Path, unknown_port: Option<u16>, broken: bool) {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["external-svc.yaml", "customers.yaml"] {
        std::fs::copy(example_registry().join(f), dir.join(f)).unwrap();
    }
    let extra = dir.join("unknown.yaml");
    if let Some(port) = unknown_port {
        std::fs::write(
            &extra,
            format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: now-known\nspec:\n  hosts: [now-known.lab]\n  addresses: [{}]\n  ports:\n  - number: {port}\n    name: tcp\n    protocol: TCP\n  resolution: STATIC\n  location: MESH_EXTERNAL\n  endpoints:\n  - address: {}\n",
                addr::UNKNOWN,
                addr::UNKNOWN
            ),
        )
        .unwrap();
    } else {
        let _ = std::fs::remove_file(&extra);
    }
    let bad = dir.join("broken.yaml");
    if broken {
        std::fs::write(
            &bad,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: broken\nspec:\n  hosts: [broken.lab]\n  ports:\n  - number: 99999\n    name: http\n",
        )
        .unwrap();
    } else {
        let _ = std::fs::remove_file(&bad);
    }
}

/// A steady stream of new connections to the unknown host while `during` runs; returns the
/// outcomes in order.
fn stream_while(lab: &Lab, during: impl FnOnce()) -> Vec<Outcome> {
    let stop = Arc::new(AtomicBool::new(false));
    let dst = SocketAddr::new(addr::UNKNOWN.parse().unwrap(), TCP_PORT);
    let outcomes = std::thread::scope(|s| {
        let stop2 = stop.clone();
        let h = s.spawn(move || {
            // Paced, and bounded only as a safeguard: a rejected connection takes a fraction
            // of a millisecond, and a bound of 5,000 once ended the stream before the change
            // it was there to watch.
            let mut v = Vec::new();
            while !stop2.load(Ordering::SeqCst) && v.len() < 200_000 {
                v.push(lab.tcp(dst, Duration::from_millis(1500)));
                std::thread::sleep(Duration::from_micros(200));
            }
            v
        });
        during();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        h.join().unwrap()
    });
    assert!(
        outcomes.len() < 200_000,
        "the stream of connections ended before the change it watches"
    );
    outcomes
}

#[test]
fn reloads_are_atomic_and_bad_input_changes_nothing() {
    let (lab, bin, guard) = registry_dir_lab(
        "e2e-reload",
        None,
        &[],
        &[
            "--outbound-policy",
            "REGISTRY_ONLY",
            "--metrics-addr",
            "127.0.0.1:9465",
        ],
    );
    let dir = &guard.0;

    // Old registry: the unknown host is rejected; the new one registers it: pass. Every
    // connection gets one or the other, and once the new one is seen, never the old again.
    let outcomes = stream_while(&lab, || {
        std::thread::sleep(Duration::from_millis(300));
        registry_dir(dir, Some(TCP_PORT), false);
        // The reload's own apply: DNS answers also apply the registry, so counting
        // `registry applied` lines could end the wait before the reload.
        lab_wait(&lab, "reloading the registry", 1);
        lab_wait_after(&lab, "reloading the registry", "registry applied");
    });
    let words: Vec<&str> = outcomes.iter().map(|o| o.word()).collect();
    assert!(
        words.iter().all(|w| *w == "reject" || *w == "pass"),
        "only old or new verdicts: {outcomes:?}"
    );
    let Some(first_pass) = words.iter().position(|w| *w == "pass") else {
        panic!(
            "the new registry did not take effect: {words:?}\ndaemon log:\n{}",
            std::fs::read_to_string(lab.log_path()).unwrap_or_default()
        );
    };
    assert!(first_pass > 0, "the old registry was in force first");
    assert!(
        words[first_pass..].iter().all(|w| *w == "pass"),
        "never the old verdict after the new: {words:?}"
    );

    // An invalid change under traffic: nothing changes, and the error is visible.
    let outcomes = stream_while(&lab, || {
        registry_dir(dir, Some(TCP_PORT), true);
        lab_wait(&lab, "registry refused", 1);
    });
    assert!(
        outcomes.iter().all(|o| o.word() == "pass"),
        "an invalid registry changes nothing: {outcomes:?}"
    );
    let v = inspect_json(&lab, &bin, "counters");
    let err = v["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("broken.yaml") && err.contains("99999"),
        "inspect shows the error with file and value: {v}"
    );

    // The service moves to another port: the entry that decided its connections is removed,
    // and the service's count of decisions keeps them (a counter never goes down).
    let decided = || {
        metrics(&lab, "127.0.0.1:9465")
            .lines()
            .find(|l| l.starts_with("meshclass_decisions_total") && l.contains("now-known.lab"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    let before = decided().expect("decisions counted for now-known.lab");
    assert!(before > 0);
    let n = lab.log_count("reloading the registry");
    registry_dir(dir, Some(TCP_PORT + 1), false);
    lab_wait(&lab, "reloading the registry", n + 1);
    lab_wait_after(&lab, "reloading the registry", "registry applied");
    let pass = lab.tcp(
        SocketAddr::new(addr::UNKNOWN.parse().unwrap(), TCP_PORT),
        Duration::from_secs(1),
    );
    assert_eq!(
        pass.word(),
        "reject",
        "the old port is unknown now: {pass:?}"
    );
    assert_eq!(
        decided(),
        Some(before),
        "the service's decisions are kept when its entry goes"
    );
    let services = inspect_json(&lab, &bin, "services");
    let known = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["service"]
                .as_str()
                .is_some_and(|k| k.ends_with("/now-known.lab"))
        })
        .expect("now-known.lab in inspect services");
    assert_eq!(
        known["hits"].as_u64(),
        Some(before),
        "inspect agrees: {known}"
    );

    // A document that looks like a ServiceEntry but would not be read (no apiVersion) is
    // refused at its field, not skipped with a note: the registry in force stays.
    let refused = lab.log_count("registry refused");
    let typo = dir.join("typo.yaml");
    std::fs::write(
        &typo,
        "kind: ServiceEntry\nmetadata: {name: typo}\nspec: {hosts: [typo.lab]}\n",
    )
    .unwrap();
    lab_wait(&lab, "registry refused", refused + 1);
    let v = inspect_json(&lab, &bin, "counters");
    let err = v["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("typo.yaml:1:1: apiVersion: "),
        "the error names the file, line and field: {v}"
    );
    std::fs::remove_file(&typo).unwrap();
    // Emptied, the registry is applied like any other, and said loudly.
    let n = lab.log_count("reloading the registry");
    for e in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    lab_wait(&lab, "reloading the registry", n + 1);
    lab_wait_after(
        &lab,
        "reloading the registry",
        "the registry has no services",
    );
    let o = lab.tcp(
        SocketAddr::new(addr::CUSTOMERS_VIP.parse().unwrap(), 80),
        Duration::from_secs(1),
    );
    assert_eq!(o.word(), "reject", "nothing is registered now: {o:?}");
}

/// `meshclass inspect <what> --json` on the lab's pins, parsed.
fn inspect_json(lab: &Lab, bin: &Path, what: &str) -> serde_json::Value {
    let pin = lab.pin_dir.display().to_string();
    let out = lab
        .meshclass(bin, &["inspect", what, "--json", "--pin-dir", &pin])
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `meshclass explain ARGS --json` against the lab's pins (null when it printed no JSON, for
/// the caller's assertion to show).
fn explain_json(lab: &Lab, bin: &Path, args: &[&str]) -> serde_json::Value {
    let pin = lab.pin_dir.display().to_string();
    let args = [&["explain"], args, &["--json", "--pin-dir", &pin]].concat();
    let out = lab.meshclass(bin, &args).unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The daemon's metrics page, scraped at `addr` from inside the node namespace.
fn metrics(lab: &Lab, addr: &str) -> String {
    lab.node.run(|| {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(addr).expect("metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    })
}

/// Waits until the daemon's log has `needle` after the last `mark`.
fn lab_wait_after(lab: &Lab, mark: &str, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(lab.log_path()).unwrap_or_default();
        if log.rfind(mark).is_some_and(|at| log[at..].contains(needle)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle} after {mark} in:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lab_wait(lab: &Lab, needle: &str, count: usize) {
    lab.wait_for_log_count(needle, count, Duration::from_secs(20))
        .unwrap();
}

/// The entry counts of the daemon log's "registry applied" lines, in order.
fn applied_entries(lab: &Lab) -> Vec<usize> {
    let log = std::fs::read_to_string(lab.log_path()).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("registry applied"))
        .filter_map(|l| {
            let at = l.find(" entries=")? + " entries=".len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn kill_9_and_restart_change_no_verdict() {
    let (mut lab, bin) = example_lab("e2e-restart", &["--outbound-policy", "REGISTRY_ONLY"]);
    // The registry, then the addresses DNS gave api.external-svc.com.
    lab.wait_for_log_count("registry applied", 2, Duration::from_secs(10))
        .unwrap();
    let before = *applied_entries(&lab).last().unwrap();
    let outcomes = stream_while(&lab, || {
        std::thread::sleep(Duration::from_millis(200));
        lab.stop_daemon(true).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    });
    assert!(outcomes.len() > 3);
    assert!(
        outcomes.iter().all(|o| o.word() == "reject"),
        "the pinned program kept classifying: {outcomes:?}"
    );
    // The next run re-adopts the pins without detaching.
    lab.start_daemon(
        &bin,
        &example_registry(),
        &["--outbound-policy", "REGISTRY_ONLY"],
    )
    .unwrap();
    let log = std::fs::read_to_string(lab.log_path()).unwrap_or_default();
    assert!(log.contains("re-adopting the pinned dataplane"), "{log}");
    // The first apply of the new run keeps what DNS gave the previous one: nothing is
    // withdrawn until the name is asked again.
    assert_eq!(applied_entries(&lab).first(), Some(&before), "{log}");
    let rows = scenarios::run(&lab, &bin, true);
    assert_rows(&rows);

    // A restart whose registry is refused keeps the pinned registry, under the settings it
    // was given: only the registry was bad. `inspect` says what the kernel enforces.
    let enforcing = |lab: &Lab| inspect_json(lab, &bin, "counters")["enforcing"].clone();
    assert_eq!(enforcing(&lab)["outbound_policy"], "REGISTRY_ONLY");
    lab.stop_daemon(false).unwrap();
    let bad = std::env::temp_dir().join(tests::unique_name("meshclass-e2e-bad-", 60));
    let _guard = RemoveDir(bad.clone());
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("bad.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: bad}\nspec: {hosts: [bad.lab], ports: [{number: 99999, name: http}]}\n",
    )
    .unwrap();
    lab.start_daemon(&bin, &bad, &["--outbound-policy", "ALLOW_ANY"])
        .unwrap();
    assert_eq!(enforcing(&lab)["outbound_policy"], "ALLOW_ANY");
    let unknown = SocketAddr::new(addr::UNKNOWN.parse().unwrap(), TCP_PORT);
    let o = lab.tcp(unknown, Duration::from_secs(2));
    assert_eq!(o.word(), "pass", "ALLOW_ANY is in force: {o:?}");
    let vip = SocketAddr::new(addr::CUSTOMERS_VIP.parse().unwrap(), 80);
    let o = lab.tcp(vip, Duration::from_secs(2));
    assert_eq!(o.word(), "redirect", "the pinned registry is: {o:?}");
    let err = inspect_json(&lab, &bin, "counters")["last_error"].clone();
    assert!(
        err.as_str().is_some_and(|e| e.contains("bad.yaml")),
        "{err}"
    );
}

/// `inspect flows` names a connection's service as the registry it was decided under
/// numbered it: a reload that adds a ServiceEntry ahead of the others in the registry's order
/// renumbers every service after it, and a connection decided before keeps its name.
#[test]
fn flows_keep_their_service_through_a_renumbering_reload() {
    let (lab, bin, guard) = registry_dir_lab(
        "e2e-renum",
        Some(TCP_PORT),
        &[],
        &["--outbound-policy", "REGISTRY_ONLY"],
    );
    let dir = &guard.0;
    let dst = SocketAddr::new(addr::UNKNOWN.parse().unwrap(), TCP_PORT);
    let o = lab.tcp(dst, Duration::from_secs(1));
    assert!(matches!(o, Outcome::Server(_)), "{o:?}");
    let (_, before) = scenarios::flow_of(&lab, &bin, dst, false);
    assert!(before.contains("now-known"), "{before}");
    // A ServiceEntry whose name sorts first: every other service's id moves up by one.
    std::fs::write(
        dir.join("aaa.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: aaa-first\nspec:\n  hosts: [aaa-first.lab]\n  addresses: [192.0.2.77]\n  ports:\n  - number: 7\n    name: tcp\n    protocol: TCP\n  resolution: STATIC\n  location: MESH_EXTERNAL\n  endpoints:\n  - address: 192.0.2.77\n",
    )
    .unwrap();
    lab_wait(&lab, "reloading the registry", 1);
    lab_wait_after(&lab, "reloading the registry", "registry applied");
    let v = inspect_json(&lab, &bin, "services");
    assert!(v.to_string().contains("aaa-first"), "the reload took: {v}");
    let (_, after) = scenarios::flow_of(&lab, &bin, dst, false);
    assert_eq!(after, before, "the connection decided before the reload");
    // A connection decided after it, by the new numbering.
    let o = lab.tcp(dst, Duration::from_secs(1));
    assert!(matches!(o, Outcome::Server(_)), "{o:?}");
    let (_, new) = scenarios::flow_of(&lab, &bin, dst, false);
    assert_eq!(new, before, "the connection decided after the reload");
}

/// The daemon sizes its maps as asked (`--max-flows 8`: two buckets of four slots), and
/// `explain`, whose connection takes a flow slot while it runs, takes a free one: with one
/// bucket full, live flows all stay through explains that would otherwise have replaced one
/// about every other time.
#[test]
fn explain_takes_no_live_flows_slot() {
    let (lab, bin) = example_lab(
        "e2e-slots",
        &["--outbound-policy", "allow_any", "--max-flows", "8"],
    );
    let dst = SocketAddr::new(addr::UNKNOWN.parse().unwrap(), TCP_PORT);
    let live = || -> Vec<String> {
        let mut v: Vec<String> = inspect_json(&lab, &bin, "flows")
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["src"].as_str().unwrap_or_default().to_string())
            .collect();
        v.sort();
        v
    };
    // Connections until the table holds `n` flows (a connection to a full bucket replaces one).
    let fill = |n: usize| {
        let mut tries = 0;
        while live().len() < n {
            tries += 1;
            assert!(
                tries <= 60,
                "the flow table never held {n} flows: {:?}",
                live()
            );
            let o = lab.tcp(dst, Duration::from_secs(1));
            assert!(matches!(o, Outcome::Server(_)), "{o:?}");
        }
    };
    // 7: one bucket full, the other with a free slot.
    fill(7);
    let before = live();
    assert_eq!(before.len(), 7, "{before:?}");
    for i in 0..8 {
        let v = explain_json(&lab, &bin, &["--dst", &dst.to_string()]);
        assert_eq!(v["agree"].as_bool(), Some(true), "{v}");
        assert_eq!(live(), before, "explain {i} replaced a live flow");
    }
    // And the table holds no more than it was sized for: connections fill the last slot, and
    // more replace flows.
    fill(8);
    for _ in 0..4 {
        assert!(matches!(
            lab.tcp(dst, Duration::from_secs(1)),
            Outcome::Server(_)
        ));
    }
    assert_eq!(live().len(), 8);
}

/// A workload whose interface comes back as another device (a restarted pod, a new pod under a
/// pattern) is classified again: `--iface` names and patterns are followed while the daemon
/// runs, and a daemon that starts after the device changed replaces the pinned links of the
/// device gone. Without that the new device carried the workload's traffic unclassified.
#[test]
fn workload_interfaces_that_come_back_are_classified_again() {
    let pattern = "mcnew*";
    let args = [
        "--outbound-policy",
        "REGISTRY_ONLY",
        "--blocked",
        "reject",
        "--iface",
        pattern,
        "--metrics-addr",
        "127.0.0.1:19465",
    ];
    let (mut lab, bin) = example_lab("e2e-relink", &args);
    let original = lab.node_if.clone();
    let attached = |lab: &Lab, n: usize| {
        let m = metrics(lab, "127.0.0.1:19465");
        assert!(m.contains(&format!("meshclass_interfaces {n}\n")), "{m}");
        assert!(m.contains("meshclass_interfaces_unattached 0\n"), "{m}");
        let c = inspect_json(lab, &bin, "counters");
        let names: Vec<&str> = c["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec![lab.node_if.as_str()], "{c}");
        assert_eq!(c["unattached"].as_array().map(Vec::len), Some(0), "{c}");
    };
    let unknown = SocketAddr::new(addr::UNKNOWN.parse().unwrap(), TCP_PORT);
    let vm = SocketAddr::new(addr::VM1.parse().unwrap(), 80);
    let classified = |lab: &Lab, when: &str| {
        let o = lab.tcp(unknown, Duration::from_secs(2));
        assert!(
            matches!(o, Outcome::Rejected(_)),
            "{when}: {unknown} gave {o:?}"
        );
        let o = lab.tcp(vm, Duration::from_secs(2));
        assert_eq!(o, Outcome::Proxy(vm), "{when}: {vm}");
    };
    classified(&lab, "at start");
    let links = |lab: &Lab| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(lab.pin_dir.join("links"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };

    // A new device under a name the pattern matches; the named one is gone.
    let renamed = tests::unique_name("mcnew", 15);
    lab.relink_workload(&renamed).unwrap();
    lab_wait(&lab, "interface gone", 1);
    lab_wait(&lab, "daemon: attached", 2);
    classified(&lab, "under the pattern");
    attached(&lab, 1);

    // The same device renamed: out of the pattern it is no longer classified (its links go),
    // and back under it, it is again.
    let other = tests::unique_name("mcout", 15);
    lab.rename_node_if(&other).unwrap();
    lab_wait(&lab, "interface renamed", 1);
    assert!(links(&lab).is_empty(), "{:?}", links(&lab));
    let o = lab.tcp(unknown, Duration::from_secs(2));
    assert!(
        matches!(o, Outcome::Server(_)),
        "renamed out of --iface: {o:?}"
    );
    lab.rename_node_if(&renamed).unwrap();
    lab_wait(&lab, "daemon: attached", 3);
    classified(&lab, "renamed back under the pattern");
    attached(&lab, 1);
    assert_eq!(
        links(&lab),
        vec![format!("egress:{renamed}"), format!("ingress:{renamed}")]
    );

    // Back under the name given, as another device again.
    lab.relink_workload(&original).unwrap();
    lab_wait(&lab, "interface gone", 2);
    lab_wait(&lab, "daemon: attached", 4);
    classified(&lab, "back under its name");
    assert_eq!(
        links(&lab),
        vec![format!("egress:{original}"), format!("ingress:{original}")]
    );

    // The device changes while no daemon runs: the pinned links hold a device gone, and the
    // next daemon replaces them.
    lab.stop_daemon(false).unwrap();
    lab.relink_workload(&original).unwrap();
    let o = lab.tcp(unknown, Duration::from_secs(2));
    assert!(
        matches!(o, Outcome::Server(_)),
        "no daemon and a new device: nothing classifies it ({o:?})"
    );
    lab.start_daemon(&bin, &example_registry(), &args).unwrap();
    let log = std::fs::read_to_string(lab.log_path()).unwrap_or_default();
    assert!(
        log.contains("the pinned links are not both of this device"),
        "{log}"
    );
    classified(&lab, "after a restart");

    // The interface goes while no daemon runs, and the workload comes back under another
    // name: the next daemon removes the links of the one gone.
    lab.stop_daemon(false).unwrap();
    let again = tests::unique_name("mcnew", 15);
    lab.relink_workload(&again).unwrap();
    lab.start_daemon(&bin, &example_registry(), &args).unwrap();
    let log = std::fs::read_to_string(lab.log_path()).unwrap_or_default();
    assert!(log.contains("interface gone while no daemon ran"), "{log}");
    classified(&lab, "under a new name after a restart");
    assert_eq!(
        links(&lab),
        vec![format!("egress:{again}"), format!("ingress:{again}")]
    );
}

/// With clsact (kernels before 6.6), filters outlive the daemon: a restarted daemon gives its
/// program to the filter it finds, at meshclass's own priority and handle, rather than adding
/// a second one (which made every passing packet classified twice, once more per restart).
#[test]
fn clsact_filters_and_fwmark_rules_are_not_doubled_by_a_restart_and_one_process_runs_a_dataplane() {
    let args = [
        "--attach",
        "clsact",
        "--outbound-policy",
        "REGISTRY_ONLY",
        "--blocked",
        "reject",
    ];
    let (mut lab, bin) = example_lab("e2e-clsact", &args);
    // The lines of a command run in the node namespace that contain `needle`.
    let node_lines = |lab: &Lab, cmd: &[&str], needle: &str| -> Vec<String> {
        let out = lab.node.run(|| {
            std::process::Command::new(cmd[0])
                .args(&cmd[1..])
                .output()
                .expect("running a command in the node namespace")
        });
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    };
    let filters = |lab: &Lab, dir: &str| {
        node_lines(
            lab,
            &["tc", "filter", "show", "dev", &lab.node_if, dir],
            "direct-action",
        )
    };
    // The redirect routing's fwmark rules, one family: the kernel keeps equal rules side by
    // side, so an add on every start would stack them.
    let fwmark_rules =
        |lab: &Lab, family: &str| node_lines(lab, &["ip", family, "rule", "show"], "fwmark 0x4d43");
    let unknown = SocketAddr::new(addr::UNKNOWN.parse().unwrap(), TCP_PORT);
    for round in 0..3 {
        for dir in ["ingress", "egress"] {
            let f = filters(&lab, dir);
            assert_eq!(f.len(), 1, "round {round}, {dir}: {f:?}");
            assert!(f[0].contains("pref 1 "), "{f:?}");
        }
        for family in ["-4", "-6"] {
            let r = fwmark_rules(&lab, family);
            assert_eq!(r.len(), 1, "round {round}, ip {family} rule: {r:?}");
        }
        let o = lab.tcp(unknown, Duration::from_secs(2));
        assert!(matches!(o, Outcome::Rejected(_)), "round {round}: {o:?}");
        if round == 0 {
            // One process at a time on a dataplane: a second daemon and a `detach` are refused
            // while the daemon runs, naming it, and change nothing.
            let pin_dir = lab.pin_dir.display().to_string();
            let registry = example_registry().display().to_string();
            let second = [
                "run",
                "--registry",
                &registry,
                "--iface",
                &lab.node_if,
                "--pin-dir",
                &pin_dir,
                "--outbound-policy",
                "ALLOW_ANY",
            ];
            for cmd in [&second[..], &["detach", "--pin-dir", &pin_dir]] {
                let out = lab.meshclass(&bin, cmd).unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(!out.status.success(), "{cmd:?}: {out:?}");
                assert!(
                    err.contains("another meshclass process (pid ") && err.contains(&pin_dir),
                    "{cmd:?}: {err}"
                );
            }
            let o = lab.tcp(unknown, Duration::from_secs(2));
            assert!(matches!(o, Outcome::Rejected(_)), "still enforced: {o:?}");
        }
        lab.stop_daemon(false).unwrap();
        lab.start_daemon(&bin, &example_registry(), &args).unwrap();
    }
    // Renamed out of `--iface`, the device loses its filters (they have no pins to go with);
    // back under its name, it has one again.
    let named = lab.node_if.clone();
    lab.rename_node_if(&tests::unique_name("mcout", 15))
        .unwrap();
    lab_wait(&lab, "interface renamed", 1);
    for dir in ["ingress", "egress"] {
        assert_eq!(filters(&lab, dir), Vec::<String>::new(), "{dir}");
    }
    lab.rename_node_if(&named).unwrap();
    lab_wait(&lab, "daemon: attached", 2);
    for dir in ["ingress", "egress"] {
        assert_eq!(filters(&lab, dir).len(), 1, "{dir}");
    }
    let o = lab.tcp(unknown, Duration::from_secs(2));
    assert!(matches!(o, Outcome::Rejected(_)), "renamed back: {o:?}");
    // `detach` removes both filters (the egress one is named `meshclass_inbou` in the kernel).
    lab.stop_daemon(false).unwrap();
    let pin_dir = lab.pin_dir.display().to_string();
    // Not from another network namespace (this test's own), where the filters and the routing
    // are not: refused, and nothing goes.
    let out = std::process::Command::new(&bin)
        .args(["detach", "--pin-dir", &pin_dir])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains("was run in another network namespace") && err.contains("nsenter --net="),
        "{err}"
    );
    assert!(lab.pin_dir.join("links").exists(), "pins kept");
    assert_eq!(fwmark_rules(&lab, "-4").len(), 1, "routing kept");
    // A pin directory outside bpffs (as under `ip netns exec`, which remounts /sys without
    // it) is refused before anything is loaded, naming the way out.
    let elsewhere = std::env::temp_dir().join(tests::unique_name("mcnobpf", 15));
    let elsewhere_s = elsewhere.display().to_string();
    let registry = example_registry().display().to_string();
    let run = [
        "run",
        "--registry",
        &registry,
        "--iface",
        &lab.node_if,
        "--pin-dir",
        &elsewhere_s,
    ];
    for cmd in [
        &run[..],
        &["inspect", "counters", "--pin-dir", &elsewhere_s],
    ] {
        let out = lab.meshclass(&bin, cmd).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd:?}: {out:?}");
        assert!(err.contains("is not in a bpffs mount"), "{cmd:?}: {err}");
    }
    assert!(!elsewhere.exists(), "{} made", elsewhere.display());
    let out = lab
        .meshclass(&bin, &["detach", "--pin-dir", &pin_dir])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for dir in ["ingress", "egress"] {
        assert_eq!(
            filters(&lab, dir),
            Vec::<String>::new(),
            "after detach, {dir}"
        );
    }
    for family in ["-4", "-6"] {
        let r = fwmark_rules(&lab, family);
        assert_eq!(r, Vec::<String>::new(), "after detach, ip {family} rule");
    }
    let lock = meshclass::daemon::pins::Pins::new(&lab.pin_dir).lock_file();
    assert!(!lock.exists(), "after detach, {} left", lock.display());
    let o = lab.tcp(unknown, Duration::from_secs(2));
    assert!(matches!(o, Outcome::Server(_)), "detached: {o:?}");
}

/// A client that reuses the source port of a connection the proxy closed first (the proxy's
/// socket of it is in TIME_WAIT) reaches the proxy again, with its original destination, in
/// well under a second (docs/decision.md §9: the TIME_WAIT socket gets the SYN and the
/// client's RST; assigning the SYN to the listener instead made this connect time out).
#[test]
fn a_reused_port_reaches_the_proxy_past_its_time_wait_socket() {
    let inside6 = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: inside6\nspec:\n  hosts: [inside6.lab]\n  addresses: [\"{ip}\"]\n  ports:\n  - number: {TCP_PORT}\n    name: tcp\n    protocol: TCP\n  resolution: STATIC\n  location: MESH_INTERNAL\n  endpoints:\n  - address: \"{ip}\"\n",
        ip = addr::UNKNOWN6
    );
    let (lab, _bin, _dir) =
        registry_dir_lab("e2e-tw", None, &[("inside6.yaml", inside6.as_str())], &[]);
    let sport = 45_001;
    for dst in [
        SocketAddr::new(addr::VM1.parse().unwrap(), 80),
        SocketAddr::new(addr::UNKNOWN6.parse().unwrap(), TCP_PORT),
    ] {
        let timeout = Duration::from_secs(3);
        let (o, _) = lab.tcp_from_port(dst, sport, timeout);
        assert_eq!(o, Outcome::Proxy(dst), "the first connection to {dst}");
        // The proxy wrote and closed first: its socket waits in TIME_WAIT.
        let client = SocketAddr::new(
            match dst {
                SocketAddr::V4(_) => addr::WORKLOAD,
                SocketAddr::V6(_) => addr::WORKLOAD6,
            }
            .parse()
            .unwrap(),
            sport,
        );
        let waiting = || {
            let out = lab.node.run(|| {
                std::process::Command::new("ss")
                    .args(["-Htan", "state", "time-wait"])
                    .output()
                    .expect("running ss in the node namespace")
            });
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.contains(&dst.to_string().as_str())
                    && cols.contains(&client.to_string().as_str())
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !waiting() {
            assert!(
                std::time::Instant::now() < deadline,
                "no TIME_WAIT socket {dst} <- {client} in the node namespace"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (o, took) = lab.tcp_from_port(dst, sport, timeout);
        assert_eq!(o, Outcome::Proxy(dst), "the second connection to {dst}");
        assert!(
            took < Duration::from_millis(500),
            "the second connection to {dst} from port {sport} took {took:?}"
        );
    }
}

/// Starts that fail stop before anything stays pinned, and say why: map sizes the kernel
/// cannot give (naming the flag out of reach), a mistyped interface, a metrics address in use.
#[test]
fn failed_starts_are_refused_with_their_cause_and_leave_nothing_pinned() {
    require_privileges();
    let bin = meshclass_bin();
    // In a namespace of the test's own: a start that went too far would attach to its `lo`.
    let ns = tests::NetNs::new("fail").unwrap();
    let pin = tests::PinDir::new("fail").unwrap();
    let run = |iface: &str, extra: &[&str]| {
        let out = ns.run(|| {
            std::process::Command::new(&bin)
                .args(["run", "--registry"])
                .arg(example_registry())
                .args(["--iface", iface, "--pin-dir"])
                .arg(&pin.path)
                .args(extra)
                .output()
                .unwrap()
        });
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{iface} {extra:?}: {err}");
        assert!(
            !pin.path.exists(),
            "{iface} {extra:?}: nothing pinned at {}",
            pin.path.display()
        );
        let lock = meshclass::daemon::pins::Pins::new(&pin.path).lock_file();
        assert!(!lock.exists(), "{iface} {extra:?}: {} left", lock.display());
        err
    };
    let err = run("lo", &["--max-names", "8388605"]);
    assert!(
        err.contains("map sizes asked for") && err.contains("--max-names"),
        "{err}"
    );
    // Mistakes of the command line are found before the dataplane is loaded.
    let err = run("nonexistent0", &[]);
    assert!(err.contains("no interface named `nonexistent0`"), "{err}");
    let taken = ns.run(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = taken.local_addr().unwrap().to_string();
    let err = run("lo", &["--metrics-addr", &addr]);
    assert!(err.contains(&format!("serving metrics on {addr}")), "{err}");
}

/// REJECT of packets whose IP header carries options (IPv4) or extension headers (IPv6), as a
/// workload's stack sends them (checksum left to the device): the client still learns at once,
/// for a SYN to an unknown address and for an HTTP request by an unknown Host (the server then
/// gets its RST too).
#[test]
fn reject_with_ip_options_and_extension_headers() {
    let (lab, _bin) = example_lab(
        "e2e-ipopt",
        &["--outbound-policy", "REGISTRY_ONLY", "--blocked", "reject"],
    );
    let timeout = Duration::from_secs(3);
    for ip in [addr::UNKNOWN, addr::UNKNOWN6] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let syn = SocketAddr::new(ip, TCP_PORT);
        match lab.tcp_with_ip_options(syn, None, timeout) {
            Outcome::Rejected(t) => assert!(t < Duration::from_secs(1), "{syn}: {t:?}"),
            o => panic!("a SYN with IP options to {syn}: {o:?}"),
        }
        let http = SocketAddr::new(ip, 80);
        let req = b"GET / HTTP/1.1\r\nHost: unknown.example\r\nConnection: close\r\n\r\n";
        let resets = lab.server_resets.load(Ordering::SeqCst);
        match lab.tcp_with_ip_options(http, Some(req), timeout) {
            Outcome::Rejected(t) => assert!(t < Duration::from_secs(1), "{http}: {t:?}"),
            o => panic!("an HTTP request with IP options to {http}: {o:?}"),
        }
        // The server's RST, its checksum valid (the lab's servers verify them).
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while lab.server_resets.load(Ordering::SeqCst) == resets
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            lab.server_resets.load(Ordering::SeqCst),
            resets + 1,
            "the server of {http} got its RST"
        );
    }
}

#[test]
fn inspect_explain_flows_and_metrics_agree_with_the_traffic() {
    let (lab, bin) = example_lab(
        "e2e-cli",
        &[
            "--outbound-policy",
            "REGISTRY_ONLY",
            "--metrics-addr",
            "127.0.0.1:9464",
            "--events-all",
        ],
    );
    let pin = lab.pin_dir.display().to_string();
    let vm1 = SocketAddr::new(addr::VM1.parse().unwrap(), 80);
    let unknown = SocketAddr::new(addr::UNKNOWN.parse().unwrap(), TCP_PORT);
    assert!(matches!(lab.tcp(vm1, Duration::from_secs(1)), Outcome::Proxy(d) if d == vm1));
    assert!(matches!(
        lab.tcp(unknown, Duration::from_secs(1)),
        Outcome::Rejected(_)
    ));
    // A name that no entry has, on a port that carries names: refused after the request.
    let by_name = SocketAddr::new(addr::UNKNOWN.parse().unwrap(), 80);
    let o = lab.http(by_name, "Refused.Example.Test", Duration::from_secs(2));
    assert!(matches!(o, Outcome::Rejected(_)), "{o:?}");

    // inspect entries: the VM's entry was hit once.
    let entries = inspect_json(&lab, &bin, "entries");
    let vm_entry = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["match"]["address"].as_str() == Some(addr::VM1))
        .expect("an entry for the VM");
    assert_eq!(vm_entry["hits"].as_u64(), Some(1), "{vm_entry}");

    // explain agrees with what the traffic saw.
    for (dst, want) in [
        (vm1.to_string(), "redirect"),
        (unknown.to_string(), "reject"),
    ] {
        let v = explain_json(&lab, &bin, &["--dst", &dst]);
        assert_eq!(v["verdict"].as_str(), Some(want), "explain {dst}: {v}");
        assert_eq!(
            v["agree"].as_bool(),
            Some(true),
            "kernel and model agree on {dst}: {v}"
        );
    }
    let v = explain_json(
        &lab,
        &bin,
        &[
            "--dst",
            &format!("{}:443", addr::UNKNOWN),
            "--sni",
            "api.external-svc.com",
        ],
    );
    assert_eq!(
        v["model"]["stage"].as_str(),
        Some("sni"),
        "the model decides by SNI: {v}"
    );
    assert_eq!(
        (
            v["verdict"].as_str(),
            v["stage"].as_str(),
            v["agree"].as_bool()
        ),
        (Some("pass"), Some("sni"), Some(true)),
        "{v}"
    );
    // The same for an HTTP request by its Host header, port stripped and case folded.
    let unknown80 = SocketAddr::new(addr::UNKNOWN.parse().unwrap(), 80).to_string();
    let v = explain_json(
        &lab,
        &bin,
        &["--dst", &unknown80, "--host", "API.External-Svc.com:80"],
    );
    assert_eq!(
        (
            v["verdict"].as_str(),
            v["stage"].as_str(),
            v["agree"].as_bool(),
            v["model"]["stage"].as_str()
        ),
        (Some("pass"), Some("host"), Some(true), Some("host")),
        "{v}"
    );
    // And an h2c request by its `:authority` (with the port, Huffman-coded), in two segments:
    // the first waits, the second decides.
    let v = explain_json(
        &lab,
        &bin,
        &["--dst", &unknown80, "--h2c", "api.external-svc.com:80"],
    );
    let stages: Vec<&str> = v["packets"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["kernel"]["stage"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(stages, ["pending", "pending", "host"], "{v}");
    assert_eq!(
        (v["verdict"].as_str(), v["agree"].as_bool()),
        (Some("pass"), Some(true)),
        "{v}"
    );

    // flows: the two connections are there with their verdicts.
    let out = lab
        .meshclass(&bin, &["flows", "--json", "--pin-dir", &pin])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(&vm1.to_string()) && l.contains("\"redirect\"")),
        "flows shows the redirected connection:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(&unknown.to_string()) && l.contains("\"reject\"")),
        "flows shows the rejected connection:\n{text}"
    );
    // The refused name is said, lower-cased, so that one knows what to register.
    assert!(
        text.lines().any(|l| l.contains(&by_name.to_string())
            && l.contains("\"name\":\"refused.example.test\"")
            && l.contains("\"reject\"")
            && l.contains("\"policy\"")),
        "flows shows the refused name:\n{text}"
    );

    // metrics: decisions by verdict and by service, scraped from inside the node namespace.
    let body = metrics(&lab, "127.0.0.1:9464");
    assert!(
        body.contains("meshclass_packets_total{verdict=\"reject\"}"),
        "{body}"
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with("meshclass_decisions_total")
                && l.contains("customers.com")
                // The connection, and explain's run of the same packets through the live program.
                && l.ends_with(" 2")),
        "two decisions for customers.com:\n{body}"
    );
    // The registry was applied once; the DNS answers applied after it are not a reload.
    assert!(
        body.contains("meshclass_registry_reloads_total 1"),
        "{body}"
    );
}

/// HTTP/2 with prior knowledge from a real client (curl: nghttp2 Huffman-codes the headers, and
/// a port that is not the scheme's is part of the `:authority`), under REGISTRY_ONLY: the
/// registered name, and a name under a registered `*.` wildcard (in capitals: the kernel decodes
/// the coded value and matches it as a Host), pass to the server by the HOST stage, v4 and v6;
/// another name is reset in well under a second (curl's own start included).
#[test]
fn h2c_by_authority_from_a_real_client() {
    let grpc = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: external-grpc\nspec:\n  hosts: [grpc.external-svc.com, \"*.wild.external-svc.com\"]\n  ports:\n  - number: {H2C_PORT}\n    name: grpc\n    protocol: GRPC\n  resolution: NONE\n  location: MESH_EXTERNAL\n"
    );
    let (lab, bin, _guard) = registry_dir_lab(
        "e2e-h2c",
        None,
        &[("grpc.yaml", &grpc)],
        &["--outbound-policy", "REGISTRY_ONLY"],
    );
    let timeout = Duration::from_secs(2);
    for ip in [addr::UNKNOWN, addr::UNKNOWN6] {
        let dst = SocketAddr::new(ip.parse().unwrap(), H2C_PORT);
        for name in ["grpc.external-svc.com", "Api.Wild.External-Svc.com"] {
            let authority = format!("{name}:{H2C_PORT}");
            let o = lab.curl_h2c(dst, name, timeout);
            // What the server was sent, as curl wrote it (it may lower-case the host).
            let sent = match &o {
                Outcome::Server(s) => s.rsplit("authority=").next().unwrap_or_default(),
                _ => "",
            };
            assert!(
                sent.eq_ignore_ascii_case(&authority),
                "{authority} to {dst}: {o:?}"
            );
            assert_eq!(
                o,
                Outcome::Server(format!("{ip} h2c authority={sent}")),
                "{authority} to {dst}"
            );
            let (stage, service) = scenarios::flow_of(&lab, &bin, dst, false);
            assert_eq!(stage, "host", "{authority} to {dst}: service {service}");
            assert!(service.contains("external-grpc"), "{service}");
        }

        let other = "other.example";
        match lab.curl_h2c(dst, other, timeout) {
            Outcome::Rejected(t) => assert!(t < Duration::from_secs(1), "{other}: {t:?}"),
            o => panic!("{other} to {dst}: {o:?}"),
        }
    }
}
