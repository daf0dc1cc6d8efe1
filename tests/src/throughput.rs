//! Throughput through veth pairs between namespaces, for `cargo xtask bench`.
//!
//! Four copies of the same topology, one per configuration, built once and measured in turns:
//!
//! ```text
//!  client (10.88.1.2) ──veth── node (10.88.1.1 | 10.88.2.1, forwarding) ──veth── server (10.88.2.2)
//! ```
//!
//! - `none`: the node only forwards.
//! - `meshclass`: `meshclass run` in the node namespace, attached to the node's end of the client
//!   link (TC ingress: the workload's outbound packets; TC egress: the way back), under
//!   `REGISTRY_ONLY`, with a registry of [`ENTRIES`] address/port entries.
//! - `iptables`: the same entries as a linear FORWARD chain of `-d ADDR -p PROTO --dport PORT -j
//!   ACCEPT` rules, the three the traffic needs at its end, policy DROP (the way back is accepted
//!   by a first rule on the server-side interface).
//! - `nftables`: the same entries in one `ipv4_addr . inet_proto . inet_service` set, one lookup
//!   rule in a forward chain, policy drop (the way back accepted first, as for iptables).
//!
//! All three classifiers sit in the node namespace and see exactly the same packets: every
//! packet the client sends crosses the node's client-side interface and is forwarded.
//!
//! Measured in each: iperf3 TCP (one stream), iperf3 UDP with 64-byte payloads at unlimited rate
//! (packets per second received, and sent), and new TCP connections per second (a connect/close
//! loop of our own). Rounds alternate the configurations (rotating which one goes first) so
//! drift of the shared machine hits all of them alike.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::{forwarding, ip, link, route, unique_name, NetNs, PinDir};

/// Entries in the registry / rule sets.
pub const ENTRIES: usize = 10_000;
const CLIENT: &str = "10.88.1.2";
const NODE_C: &str = "10.88.1.1";
const NODE_S: &str = "10.88.2.1";
const SERVER: &str = "10.88.2.2";
/// iperf3's port (TCP for the data and control connections, UDP for the UDP test).
const IPERF_PORT: u16 = 5201;
/// The connection-rate listener.
const CPS_PORT: u16 = 5202;
/// A listener that is in no registry: every classifier must block it.
const BLOCKED_PORT: u16 = 5203;
/// UDP payload of the small-packet test.
const UDP_LEN: usize = 64;

/// The configurations, in their table order; the first is the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    None,
    Meshclass,
    Iptables,
    Nftables,
}

impl Config {
    pub const ALL: [Config; 4] = [
        Config::None,
        Config::Meshclass,
        Config::Iptables,
        Config::Nftables,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Config::None => "no program",
            Config::Meshclass => "meshclass (REGISTRY_ONLY)",
            Config::Iptables => "iptables, linear chain",
            Config::Nftables => "nftables, one set",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Config::None => "none",
            Config::Meshclass => "meshclass",
            Config::Iptables => "iptables",
            Config::Nftables => "nftables",
        }
    }
}

/// What to run.
pub struct Options {
    pub quick: bool,
    /// The `meshclass` binary.
    pub meshclass: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

/// The entries: fillers first, then the three the measured traffic needs (at the end, so that a
/// linear chain walks all the others first).
fn entries() -> Vec<(Ipv4Addr, Proto, u16)> {
    let server: Ipv4Addr = SERVER.parse().expect("literal");
    let mut v = Vec::with_capacity(ENTRIES);
    let base = u32::from(Ipv4Addr::new(10, 64, 0, 0));
    for i in 0..ENTRIES - 3 {
        v.push((
            Ipv4Addr::from(base + i as u32),
            Proto::Tcp,
            8000 + (i % 50) as u16,
        ));
    }
    v.push((server, Proto::Tcp, IPERF_PORT));
    v.push((server, Proto::Udp, IPERF_PORT));
    v.push((server, Proto::Tcp, CPS_PORT));
    v
}

/// The registry for meshclass: one ServiceEntry per filler entry, one for the server's ports.
fn registry_yaml(entries: &[(Ipv4Addr, Proto, u16)]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(entries.len() * 260);
    let (fill, server) = entries.split_at(entries.len() - 3);
    for (i, (a, _, port)) in fill.iter().enumerate() {
        let _ = write!(
            s,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: f{i}\n  \
             namespace: bench\nspec:\n  hosts: [f{i}.bench.lab]\n  addresses: [{a}]\n  ports:\n  \
             - number: {port}\n    name: tcp-{port}\n    protocol: TCP\n  resolution: STATIC\n  \
             location: MESH_EXTERNAL\n---\n"
        );
    }
    // Istio refuses a port number twice in one ServiceEntry: one for TCP, one for UDP.
    for (kind, proto) in [(Proto::Tcp, "TCP"), (Proto::Udp, "UDP")] {
        let name = proto.to_ascii_lowercase();
        let _ = write!(
            s,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: server-{name}\n  \
             namespace: bench\nspec:\n  hosts: [server-{name}.bench.lab]\n  addresses: [{SERVER}]\n  \
             ports:\n"
        );
        for (_, _, port) in server.iter().filter(|e| e.1 == kind) {
            let _ = write!(
                s,
                "  - number: {port}\n    name: {name}-{port}\n    protocol: {proto}\n"
            );
        }
        s.push_str("  resolution: STATIC\n  location: MESH_EXTERNAL\n---\n");
    }
    s
}

fn iptables_rules(entries: &[(Ipv4Addr, Proto, u16)], back_if: &str) -> String {
    use std::fmt::Write as _;
    let mut s =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    let _ = writeln!(s, "-A FORWARD -i {back_if} -j ACCEPT");
    for (a, p, port) in entries {
        let p = match p {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        let _ = writeln!(
            s,
            "-A FORWARD -d {a}/32 -p {p} -m {p} --dport {port} -j ACCEPT"
        );
    }
    s.push_str("COMMIT\n");
    s
}

fn nft_rules(entries: &[(Ipv4Addr, Proto, u16)], back_if: &str) -> String {
    use std::fmt::Write as _;
    let mut s = String::from(
        "table ip meshbench {\n  set allowed {\n    type ipv4_addr . inet_proto . inet_service\n    elements = {\n",
    );
    for (i, (a, p, port)) in entries.iter().enumerate() {
        let p = match p {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        let sep = if i + 1 == entries.len() { "" } else { "," };
        let _ = writeln!(s, "      {a} . {p} . {port}{sep}");
    }
    let _ = write!(
        s,
        "    }}\n  }}\n  chain forward {{\n    type filter hook forward priority filter; policy drop;\n    \
         iifname \"{back_if}\" accept\n    ip daddr . meta l4proto . th dport @allowed accept\n  }}\n}}\n"
    );
    s
}

/// Runs `cmd` inside `ns` (the child enters the namespace before exec).
fn in_ns<'a>(cmd: &'a mut Command, ns: &NetNs) -> &'a mut Command {
    let fd = ns.fd();
    // SAFETY: setns is async-signal-safe; it moves only the child into the namespace.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Feeds `input` to `cmd` on stdin and fails with its stderr unless it succeeds.
fn run_with_input(cmd: &mut Command, input: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    {
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A child process we started, stopped by its pid on drop (SIGTERM, then SIGKILL).
struct Proc(Option<Child>);

impl Proc {
    fn alive(&mut self) -> Result<()> {
        if let Some(c) = self.0.as_mut() {
            if let Some(st) = c.try_wait()? {
                self.0 = None;
                bail!("exited early ({st})");
            }
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let pid = c.id() as i32;
            // SAFETY: signalling a child we started, by its pid.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A directory or file removed on drop.
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// A listener thread that accepts and closes at once, stopped on drop.
struct Acceptor {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn acceptor(ns: &NetNs, addrs: &[SocketAddr]) -> Result<Acceptor> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for &a in addrs {
        let l = ns
            .run(|| TcpListener::bind(a))
            .with_context(|| format!("binding {a}"))?;
        l.set_nonblocking(true)?;
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut pfd = libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            while !stop.load(Ordering::SeqCst) {
                // SAFETY: one pollfd for a descriptor we hold.
                unsafe { libc::poll(&mut pfd, 1, 100) };
                while let Ok((s, _)) = l.accept() {
                    drop(s);
                }
            }
        }));
    }
    Ok(Acceptor { stop, threads })
}

/// One copy of the topology with its classifier. Drop order: processes and threads first, then
/// pins and files, then the namespaces.
struct Topology {
    config: Config,
    iperf: Proc,
    daemon: Proc,
    _acceptor: Acceptor,
    _pins: Option<PinDir>,
    /// The daemon's state directory and its pin directory's lock file.
    _state_dir: Option<[TempPath; 2]>,
    _files: Vec<TempPath>,
    client: NetNs,
    _node: NetNs,
    _server: NetNs,
}

impl Topology {
    fn new(config: Config, opts: &Options, entries: &[(Ipv4Addr, Proto, u16)]) -> Result<Self> {
        let tag = match config {
            Config::None => "tp-none",
            Config::Meshclass => "tp-mc",
            Config::Iptables => "tp-ipt",
            Config::Nftables => "tp-nft",
        };
        let client = NetNs::new(&format!("{tag}-c"))?;
        let node = NetNs::new(&format!("{tag}-n"))?;
        let server = NetNs::new(&format!("{tag}-s"))?;
        let (_c_end, node_end) = link(&client, &[(ip(CLIENT), 24)], &node, &[(ip(NODE_C), 24)])?;
        let (node_back, _s_end) = link(&node, &[(ip(NODE_S), 24)], &server, &[(ip(SERVER), 24)])?;
        forwarding(&node)?;
        route(&client, ip("0.0.0.0"), 0, ip(NODE_C))?;
        route(&server, ip("0.0.0.0"), 0, ip(NODE_S))?;
        // The connection-rate loop makes many short connections: give it ports, and let it reuse
        // ones in TIME_WAIT (as busy clients do).
        client.sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
        client.sysctl("net.ipv4.tcp_tw_reuse", "1")?;

        let server_ip: IpAddr = ip(SERVER);
        let acc = acceptor(
            &server,
            &[
                SocketAddr::new(server_ip, CPS_PORT),
                SocketAddr::new(server_ip, BLOCKED_PORT),
            ],
        )?;
        let iperf = Proc(Some(
            in_ns(
                Command::new("iperf3").args(["-s", "-B", SERVER, "-p", &IPERF_PORT.to_string()]),
                &server,
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s (is iperf3 installed? `cargo xtask setup`)")?,
        ));

        let mut me = Self {
            config,
            iperf,
            daemon: Proc(None),
            _acceptor: acc,
            _pins: None,
            _state_dir: None,
            _files: Vec::new(),
            client,
            _node: node,
            _server: server,
        };
        match config {
            Config::None => {}
            Config::Meshclass => me.start_meshclass(opts, entries, &node_end.ifname)?,
            Config::Iptables => run_with_input(
                in_ns(&mut Command::new("iptables-restore"), &me._node),
                &iptables_rules(entries, &node_back.ifname),
            )
            .context("loading the iptables rules")?,
            Config::Nftables => run_with_input(
                in_ns(Command::new("nft").args(["-f", "-"]), &me._node),
                &nft_rules(entries, &node_back.ifname),
            )
            .context("loading the nftables rules")?,
        }
        Ok(me)
    }

    fn start_meshclass(
        &mut self,
        opts: &Options,
        entries: &[(Ipv4Addr, Proto, u16)],
        iface: &str,
    ) -> Result<()> {
        let dir = std::env::temp_dir().join(unique_name("meshclass-bench-", 60));
        std::fs::create_dir_all(&dir)?;
        self._files.push(TempPath(dir.clone()));
        let registry = dir.join("registry.yaml");
        std::fs::write(&registry, registry_yaml(entries))?;
        let log_path = dir.join("daemon.log");
        let pins = PinDir::new("bench")?;
        // The daemon's state directory, named after the pin directory (see the daemon's Pins).
        // The daemon's state directory for this pin directory goes with the run.
        let daemon_pins = meshclass::daemon::pins::Pins::new(&pins.path);
        self._state_dir = Some([
            TempPath(daemon_pins.state_dir()),
            TempPath(daemon_pins.lock_file()),
        ]);
        let pin_path = pins.path.clone();
        self._pins = Some(pins);
        let log = std::fs::File::create(&log_path)?;
        let child = in_ns(
            Command::new(&opts.meshclass)
                .arg("run")
                .arg("--registry")
                .arg(&registry)
                .args(["--iface", iface])
                .arg("--pin-dir")
                .arg(&pin_path)
                .args(["--outbound-policy", "REGISTRY_ONLY"])
                .args(["--poll-ms", "1000", "--json-logs"])
                // Nothing is resolved (every entry is STATIC); a server inside the node
                // namespace keeps even a stray query there.
                .args(["--dns-server", &format!("{NODE_C}:53")]),
            &self._node,
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", opts.meshclass.display()))?;
        self.daemon = Proc(Some(child));
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let applied = text.lines().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                let f = v.get("fields")?;
                (f.get("message")?.as_str()? == "registry applied")
                    .then(|| f.get("entries").and_then(Value::as_u64).unwrap_or(0))
            });
            if let Some(n) = applied {
                if n as usize != entries.len() {
                    bail!(
                        "meshclass applied {n} entries, expected {}:\n{text}",
                        entries.len()
                    );
                }
                return Ok(());
            }
            if let Err(e) = self.daemon.alive() {
                bail!("meshclass run {e}:\n{text}");
            }
            if start.elapsed() > Duration::from_secs(120) {
                bail!("meshclass did not apply the registry within 120 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether a connection to an unregistered port gets through (it must not, but for `none`).
    fn unregistered_passes(&self) -> bool {
        let dst = SocketAddr::new(ip(SERVER), BLOCKED_PORT);
        self.client
            .run(|| TcpStream::connect_timeout(&dst, Duration::from_secs(1)).is_ok())
    }

    fn iperf(&mut self, args: &[&str]) -> Result<Value> {
        let mut last = String::new();
        for attempt in 0..4 {
            self.iperf.alive().context("iperf3 -s")?;
            if let Config::Meshclass = self.config {
                self.daemon.alive().context("meshclass run")?;
            }
            let out = in_ns(
                Command::new("iperf3")
                    .args(["-c", SERVER, "-p", &IPERF_PORT.to_string(), "-J"])
                    .args(args),
                &self.client,
            )
            .stdin(Stdio::null())
            .output()
            .context("running iperf3 -c")?;
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if out.status.success() && v.get("error").is_none() {
                return Ok(v);
            }
            last = format!(
                "{}{}",
                v.get("error").and_then(Value::as_str).unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr)
            );
            // The server may still be finishing the previous test, or not listening yet.
            std::thread::sleep(Duration::from_millis(300 * (attempt + 1)));
        }
        bail!(
            "iperf3 -c {} failed under {}: {last}",
            args.join(" "),
            self.config.name()
        )
    }

    /// TCP, one stream: bits per second received.
    fn tcp(&mut self, secs: u32) -> Result<f64> {
        let v = self.iperf(&["-t", &secs.to_string()])?;
        v.pointer("/end/sum_received/bits_per_second")
            .and_then(Value::as_f64)
            .context("no end.sum_received.bits_per_second in iperf3's output")
    }

    /// UDP, small packets at unlimited rate: (packets per second received, sent).
    fn udp(&mut self, secs: u32) -> Result<(f64, f64)> {
        let v = self.iperf(&[
            "-u",
            "-b",
            "0",
            "-l",
            &UDP_LEN.to_string(),
            "-t",
            &secs.to_string(),
        ])?;
        let f = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_f64)
                .with_context(|| format!("no {p} in iperf3's output"))
        };
        let rx_secs = f("/end/sum_received/seconds")?.max(1e-3);
        let received =
            (f("/end/sum_received/packets")? - f("/end/sum_received/lost_packets")?) / rx_secs;
        let sent = f("/end/sum_sent/packets")? / f("/end/sum_sent/seconds")?.max(1e-3);
        Ok((received, sent))
    }

    /// New TCP connections per second: connect, close, again, for `secs` seconds.
    fn cps(&mut self, secs: u32) -> Result<f64> {
        if let Config::Meshclass = self.config {
            self.daemon.alive().context("meshclass run")?;
        }
        let dst = SocketAddr::new(ip(SERVER), CPS_PORT);
        let dur = Duration::from_secs(u64::from(secs));
        let name = self.config.name();
        self.client.run(move || {
            let start = Instant::now();
            let mut n = 0u64;
            let mut failures = 0u32;
            while start.elapsed() < dur {
                match TcpStream::connect_timeout(&dst, Duration::from_secs(1)) {
                    Ok(s) => {
                        drop(s);
                        n += 1;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures > 10 {
                            bail!("connections to {dst} fail under {name}: {e}");
                        }
                    }
                }
            }
            Ok(n as f64 / start.elapsed().as_secs_f64())
        })
    }
}

/// Median and spread of samples.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

fn stat(v: &[f64]) -> Stat {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stat {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

/// The measured quantities.
const METRICS: [(&str, &str); 4] = [
    ("tcp_bps", "TCP, one stream (Gbit/s)"),
    ("udp_rx_pps", "UDP 64 B, received (kpps)"),
    ("udp_tx_pps", "UDP 64 B, sent (kpps)"),
    ("cps", "new TCP connections (per s)"),
];

fn scaled(metric: &str, x: f64) -> f64 {
    match metric {
        "tcp_bps" => x / 1e9,
        "udp_rx_pps" | "udp_tx_pps" => x / 1e3,
        _ => x,
    }
}

/// Runs the throughput benchmark: returns its Markdown section and its JSON.
pub fn run(opts: &Options, progress: &dyn Fn(&str)) -> Result<(String, Value)> {
    for tool in ["iperf3", "iptables-restore", "nft"] {
        let ok = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            bail!("{tool} is missing: `cargo xtask setup` installs it");
        }
    }
    let (rounds, secs) = if opts.quick { (3, 2u32) } else { (7, 5u32) };
    let started = Instant::now();
    let entries = entries();
    let mut tops = Vec::new();
    for c in Config::ALL {
        progress(&format!("setting up `{}`", c.name()));
        let t = Instant::now();
        tops.push(Topology::new(c, opts, &entries).with_context(|| c.name())?);
        progress(&format!("  ready in {:.1} s", t.elapsed().as_secs_f64()));
    }
    // Each classifier must be in force: the unregistered port passes only without one.
    let mut blocks = Vec::new();
    for t in &tops {
        let passes = t.unregistered_passes();
        if passes != (t.config == Config::None) {
            bail!(
                "under {}, a connection to an unregistered port {}",
                t.config.name(),
                if passes { "passed" } else { "was blocked" }
            );
        }
        blocks.push(!passes);
    }
    // Let iperf3's servers settle before the first test.
    std::thread::sleep(Duration::from_millis(300));

    // samples[config][metric]
    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); METRICS.len()]; tops.len()];
    for r in 0..rounds {
        progress(&format!("round {}/{rounds}", r + 1));
        let order: Vec<usize> = (0..tops.len()).map(|i| (i + r) % tops.len()).collect();
        for &i in &order {
            let x = tops[i].tcp(secs)?;
            samples[i][0].push(x);
        }
        for &i in &order {
            let (rx, tx) = tops[i].udp(secs)?;
            samples[i][1].push(rx);
            samples[i][2].push(tx);
        }
        for &i in &order {
            let x = tops[i].cps(secs)?;
            samples[i][3].push(x);
        }
    }
    let measured_s = started.elapsed().as_secs_f64();
    drop(tops);

    // Tables.
    let stats: Vec<Vec<Stat>> = samples
        .iter()
        .map(|m| m.iter().map(|v| stat(v)).collect())
        .collect();
    let base = &stats[0];
    let ratio = |c: usize, m: usize| stats[c][m].median / base[m].median.max(1e-9);
    // Per-round ratios to the baseline's sample of the same round: their spread.
    let paired = |c: usize, m: usize| -> Stat {
        let v: Vec<f64> = samples[c][m]
            .iter()
            .zip(&samples[0][m])
            .map(|(x, b)| x / b.max(1e-9))
            .collect();
        stat(&v)
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mut md = String::new();
    md.push_str(&format!(
        "\n### Throughput through veth pairs ({ENTRIES} entries, {rounds} rounds of {secs} s per test, \
         median and min-max; ratio = median / no-program median)\n\n"
    ));
    md.push_str("| configuration | blocks unregistered |");
    for (_, h) in METRICS {
        md.push_str(&format!(" {h} | ratio |"));
    }
    md.push_str("\n|---|---|");
    for _ in METRICS {
        md.push_str("---:|---:|");
    }
    md.push('\n');
    for (c, cfg) in Config::ALL.iter().enumerate() {
        md.push_str(&format!(
            "| {} | {} |",
            cfg.name(),
            if blocks[c] { "yes" } else { "no (baseline)" }
        ));
        for (m, (key, _)) in METRICS.iter().enumerate() {
            let s = stats[c][m];
            let digits = if *key == "tcp_bps" { 2 } else { 0 };
            md.push_str(&format!(
                " {:.d$} ({:.d$}-{:.d$}) |",
                scaled(key, s.median),
                scaled(key, s.min),
                scaled(key, s.max),
                d = digits
            ));
            if c == 0 {
                md.push_str(" 1.00 |");
            } else {
                let p = paired(c, m);
                md.push_str(&format!(
                    " {:.2} ({:.2}-{:.2}) |",
                    ratio(c, m),
                    p.min,
                    p.max
                ));
            }
        }
        md.push('\n');
    }
    let mc = 1;
    let ipt = 2;
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    md.push_str("\nTargets (meshclass under REGISTRY_ONLY with 10,000 entries):\n\n");
    for (m, what) in [(0usize, "TCP"), (1, "UDP small packets (received)")] {
        let r = ratio(mc, m);
        md.push_str(&format!(
            "- {what} within 5% of no program: {:.1}% of it, {}.\n",
            100.0 * r,
            verdict(r >= 0.95)
        ));
    }
    for (m, what) in [(0usize, "TCP"), (1, "UDP small packets (received)")] {
        let r = stats[mc][m].median / stats[ipt][m].median.max(1e-9);
        md.push_str(&format!(
            "- {what} ahead of iptables at 10,000 entries: {r:.2}x iptables, {}.\n",
            verdict(r > 1.0)
        ));
    }
    md.push_str(&format!(
        "- New TCP connections per second: {:.0} with meshclass, {:.0} without ({:.2}x; no target).\n",
        stats[mc][3].median,
        stats[0][3].median,
        ratio(mc, 3)
    ));
    md.push_str(&format!(
        "\nTopology: client namespace → node namespace (forwarding) → server namespace, one veth \
         pair each side, a separate copy of it per configuration. meshclass is attached at TC \
         ingress (and egress) of the node's end of the client link, iptables and nftables hook \
         FORWARD in the node namespace, so all three see exactly the packets the client sends \
         (and the replies). The three entries the traffic needs are the last of the {ENTRIES}: \
         the iptables chain (iptables {} backend) walks all the others for every outbound packet \
         (no conntrack shortcut); nftables looks them up in one hashed set; meshclass in its maps \
         (and then in its flow table). Ratios in parentheses: min-max of the per-round ratio to \
         the no-program run of the same round. UDP: iperf3 -u -b 0 -l {UDP_LEN}; received \
         packets are bounded by the single iperf3 receiver, sent packets by the sender's CPU, \
         which also runs the forwarding path. Connections: one thread connect()/close() in a \
         loop. Machine: {cpus} vCPU (shared), kernel {kernel}. Took {measured_s:.0} s.\n",
        iptables_backend()
    ));
    let mut js = serde_json::Map::new();
    for (c, cfg) in Config::ALL.iter().enumerate() {
        let mut o = serde_json::Map::new();
        for (m, (key, _)) in METRICS.iter().enumerate() {
            o.insert(
                key.to_string(),
                json!({"samples": samples[c][m], "median": stats[c][m].median,
                       "min": stats[c][m].min, "max": stats[c][m].max,
                       "ratio_to_none": ratio(c, m)}),
            );
        }
        o.insert("blocks_unregistered".into(), json!(blocks[c]));
        js.insert(cfg.key().into(), Value::Object(o));
    }
    let v = json!({
        "entries": ENTRIES,
        "rounds": rounds,
        "seconds_per_test": secs,
        "udp_payload": UDP_LEN,
        "kernel": kernel,
        "cpus": cpus,
        "iptables_backend": iptables_backend(),
        "wall_s": measured_s,
        "configs": js,
    });
    Ok((md, v))
}

fn iptables_backend() -> String {
    let out = Command::new("iptables").arg("--version").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    if text.contains("nf_tables") {
        "nf_tables".into()
    } else if text.contains("legacy") {
        "legacy".into()
    } else {
        text.trim().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_sets_hold_every_entry_with_the_server_last() {
        let e = entries();
        assert_eq!(e.len(), ENTRIES);
        assert_eq!(e.last().map(|x| x.2), Some(CPS_PORT));
        let ipt = iptables_rules(&e, "vb0");
        assert_eq!(ipt.matches("-j ACCEPT").count(), ENTRIES + 1);
        let nft = nft_rules(&e, "vb0");
        assert_eq!(nft.matches(" . ").count(), 2 * ENTRIES + 4);
        let y = registry_yaml(&e);
        assert_eq!(y.matches("kind: ServiceEntry").count(), ENTRIES - 1);
    }
}
