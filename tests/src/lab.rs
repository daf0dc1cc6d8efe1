//! The lab: a workload, a node running meshclass and a transparent proxy, and a "world" of
//! servers (two customer VMs, a pod, an external HTTPS API, unknown hosts), each in network
//! namespaces made for the run, on private addresses that exist only inside them.
//!
//! ```text
//!  workload (10.77.1.2, fd77:1::2)
//!     │ veth — meshclass at ingress of the node's end
//!  node (daemon, proxy on :15001, forwarding)
//!     │ veth
//!  world (VMs, pod, external API, unknown hosts: TLS, HTTP, TCP, UDP servers)
//! ```

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{forwarding, ip, link, link_named, route, unique_name, NetNs};

/// Lab addresses.
pub mod addr {
    pub const WORKLOAD: &str = "10.77.1.2";
    pub const WORKLOAD6: &str = "fd77:1::2";
    pub const VM1: &str = "10.77.130.11";
    pub const VM2: &str = "10.77.130.12";
    pub const POD: &str = "10.77.131.21";
    pub const CUSTOMERS_VIP: &str = "10.77.140.1";
    pub const API: &str = "10.77.150.10";
    pub const API6: &str = "fd77:150::10";
    pub const UDP_EXTERNAL: &str = "10.77.150.53";
    pub const UNKNOWN: &str = "10.77.160.66";
    pub const UNKNOWN6: &str = "fd77:160::66";
    /// The lab's DNS server (answers for api.external-svc.com).
    pub const DNS: &str = "10.77.150.54";
    /// Every address a world server listens on.
    pub const WORLD: &[&str] = &[VM1, VM2, POD, API, API6, UDP_EXTERNAL, UNKNOWN, UNKNOWN6];
}

/// TCP port of the plain servers (answers `server <addr>`).
pub const TCP_PORT: u16 = 9000;
/// A second port of the HTTP servers, which answer HTTP/1.x (`server <addr> http host=..`)
/// and HTTP/2 with prior knowledge (`server <addr> h2c authority=..`, the body of the first
/// stream) on it as on port 80.
pub const H2C_PORT: u16 = 8080;
/// The proxy's transparent listener.
pub const PROXY_PORT: u16 = 15001;
/// Names the world's TLS servers have certificates for.
pub const TLS_NAMES: &[&str] = &["api.external-svc.com", "unknown.example", "evil.example"];

/// The node's addresses on the workload's link: the workload's gateways.
const NODE_GW: &str = "10.77.1.1";
const NODE_GW6: &str = "fd77:1::1";

/// The addresses of the workload's link: its end, and the node's.
fn workload_end() -> [(IpAddr, u8); 2] {
    [(ip(addr::WORKLOAD), 24), (ip(addr::WORKLOAD6), 64)]
}
fn node_end() -> [(IpAddr, u8); 2] {
    [(ip(NODE_GW), 24), (ip(NODE_GW6), 64)]
}

/// The workload's default routes, through the node.
fn workload_routes(workload: &NetNs) -> Result<()> {
    route(workload, ip("0.0.0.0"), 0, ip(NODE_GW))?;
    route(workload, ip("::"), 0, ip(NODE_GW6))
}

/// What a connection attempt saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Reached the real server, which answered this.
    Server(String),
    /// Reached the node's proxy, which saw this original destination.
    Proxy(SocketAddr),
    /// The connection or handshake was reset / refused / ICMP unreachable, after this long.
    Rejected(Duration),
    /// Nothing came back in time.
    Timeout,
    /// Something else went wrong.
    Error(String),
}

impl Outcome {
    /// A short word for tables.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Server(_) => "pass",
            Outcome::Proxy(_) => "redirect",
            Outcome::Rejected(_) => "reject",
            Outcome::Timeout => "drop",
            Outcome::Error(_) => "error",
        }
    }
}

struct Stoppable {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Stoppable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The running lab. Everything it made goes away on drop: daemon (by its pid), servers,
/// namespaces, pins.
pub struct Lab {
    pub workload: NetNs,
    pub node: NetNs,
    pub world: NetNs,
    /// The node's end of the workload link: where meshclass attaches.
    pub node_if: String,
    world_if: String,
    pub pin_dir: PathBuf,
    pub proxy_seen: Arc<Mutex<Vec<SocketAddr>>>,
    /// Connections the TLS and HTTP servers saw reset by the client's side before they could
    /// answer (a REJECT after the handshake resets the server too).
    pub server_resets: Arc<AtomicU64>,
    daemon: Mutex<Option<Child>>,
    servers: Option<Stoppable>,
    tls_root: Vec<u8>,
}

impl Lab {
    /// Builds the namespaces, links, routes, servers and the proxy.
    pub fn new(tag: &str, progress: &dyn Fn(&str)) -> Result<Self> {
        progress("namespaces");
        let workload = NetNs::new(&format!("{tag}-wl"))?;
        let node = NetNs::new(&format!("{tag}-node"))?;
        let world = NetNs::new(&format!("{tag}-world"))?;
        progress("links");
        let (_w_end, n_end) = link(&workload, &workload_end(), &node, &node_end())?;
        let (n2, world_end) = link(
            &node,
            &[(ip("10.77.0.1"), 24), (ip("fd77::1"), 64)],
            &world,
            &[(ip("10.77.0.2"), 24), (ip("fd77::2"), 64)],
        )?;
        // Packets leave the node as through a NIC: checksums completed on the way out, and
        // verified by the servers' stacks (a RST the node builds must carry a valid one).
        crate::software_tx_checksums(&node, &n2.ifname)?;
        progress("routes");
        forwarding(&node)?;
        workload_routes(&workload)?;
        route(&node, ip("10.77.128.0"), 17, ip("10.77.0.2"))?;
        route(&node, ip("fd77:100::"), 24, ip("fd77::2"))?;
        route(&world, ip("0.0.0.0"), 0, ip("10.77.0.1"))?;
        route(&world, ip("::"), 0, ip("fd77::1"))?;
        let wif = world_end.ifname.clone();
        world.block_on(|nl| async move {
            for a in addr::WORLD {
                let a: IpAddr = a.parse()?;
                nl.add_address(&wif, a, if a.is_ipv4() { 32 } else { 128 })
                    .await?;
            }
            Ok(())
        })?;
        let pin_dir =
            PathBuf::from("/sys/fs/bpf").join(unique_name(&format!("meshclass-{tag}-"), 60));
        let mut lab = Self {
            workload,
            node,
            world,
            node_if: n_end.ifname,
            world_if: world_end.ifname.clone(),
            pin_dir,
            proxy_seen: Arc::default(),
            server_resets: Arc::default(),
            daemon: Mutex::new(None),
            servers: None,
            tls_root: Vec::new(),
        };
        progress("servers");
        lab.start_servers()?;
        Ok(lab)
    }

    /// Replaces the workload's link by a new one (another device: a pod that restarts) whose
    /// node-side end is named `node_if` (the old name, or another), addresses and routes as
    /// before.
    pub fn relink_workload(&mut self, node_if: &str) -> Result<()> {
        let old = self.node_if.clone();
        self.node.block_on(|nl| async move {
            nl.del_link(&old).await?;
            Ok(())
        })?;
        let w_if = unique_name("va", 15);
        link_named(
            &self.workload,
            &w_if,
            &workload_end(),
            &self.node,
            node_if,
            &node_end(),
        )?;
        workload_routes(&self.workload)?;
        self.node_if = node_if.to_string();
        Ok(())
    }

    /// Renames the node-side end of the workload's link to `new` (the same device).
    pub fn rename_node_if(&mut self, new: &str) -> Result<()> {
        let (old, new2) = (self.node_if.clone(), new.to_string());
        self.node.block_on(|nl| async move {
            nl.rename(&old, &new2).await?;
            Ok(())
        })?;
        self.node_if = new.to_string();
        Ok(())
    }

    fn start_servers(&mut self) -> Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let cert = rcgen::generate_simple_self_signed(
            TLS_NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .context("making the lab certificate")?;
        self.tls_root = cert.cert.der().to_vec();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.cert.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(
                        cert.signing_key.serialize_der().into(),
                    ),
                )?,
        );
        for a in addr::WORLD {
            let a: IpAddr = a.parse()?;
            for (port, kind) in [
                (443u16, "tls"),
                (80, "http"),
                (TCP_PORT, "tcp"),
                (H2C_PORT, "http"),
            ] {
                let l = self
                    .world
                    .run(|| retry_bind(|| TcpListener::bind(SocketAddr::new(a, port))))
                    .with_context(|| format!("binding {a}:{port}"))?;
                l.set_nonblocking(true)?;
                let stop = stop.clone();
                let cfg = tls_config.clone();
                let resets = self.server_resets.clone();
                threads.push(std::thread::spawn(move || {
                    serve_tcp(l, kind, a, cfg, &resets, &stop)
                }));
            }
            let u = self
                .world
                .run(|| retry_bind(|| UdpSocket::bind(SocketAddr::new(a, 53))))
                .with_context(|| format!("binding udp {a}:53"))?;
            u.set_read_timeout(Some(Duration::from_millis(100)))?;
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || serve_udp(u, a, &stop)));
        }
        // The lab's DNS server.
        let dns: IpAddr = addr::DNS.parse()?;
        let wif_dns = self.world_if.clone();
        self.world.block_on(|nl| async move {
            nl.add_address(&wif_dns, dns, 32).await?;
            Ok(())
        })?;
        let u = self
            .world
            .run(|| UdpSocket::bind(SocketAddr::new(dns, 53)))
            .context("binding the lab DNS server")?;
        u.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop2 = stop.clone();
        threads.push(std::thread::spawn(move || serve_dns(u, &stop2)));
        // The node's transparent proxy: accepts what meshclass assigns to it and says which
        // original destination it saw (its socket's local address).
        for any in ["0.0.0.0", "::"] {
            let l = self
                .node
                .run(|| transparent_listener(any.parse().expect("literal"), PROXY_PORT))?;
            let stop = stop.clone();
            let seen = self.proxy_seen.clone();
            threads.push(std::thread::spawn(move || serve_proxy(l, &seen, &stop)));
        }
        self.servers = Some(Stoppable { stop, threads });
        Ok(())
    }

    /// Starts `meshclass run` in the node namespace on the workload link and waits until it
    /// has applied the registry.
    pub fn start_daemon(
        &mut self,
        meshclass: &Path,
        registry: &Path,
        extra: &[&str],
    ) -> Result<()> {
        let node_fd = self.node.fd();
        let log = std::fs::File::create(self.log_path()).context("creating the daemon log")?;
        let mut cmd = Command::new(meshclass);
        cmd.arg("run")
            .arg("--registry")
            .arg(registry)
            .args(["--iface", &self.node_if])
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .args(["--proxy-port", &PROXY_PORT.to_string(), "--poll-ms", "200"])
            .args(["--dns-server", &format!("{}:53", addr::DNS)])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: setns is async-signal-safe; it moves only the child into the node namespace.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(move || {
                if libc::setns(node_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting meshclass run")?;
        *self.daemon.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        self.wait_for_log("registry applied", Duration::from_secs(30))
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> PathBuf {
        std::env::temp_dir().join(format!(
            "{}.log",
            self.pin_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("meshclass")
        ))
    }

    /// How many times the daemon's log has `needle` so far.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .matches(needle)
            .count()
    }

    /// Waits until the daemon's log has `needle` `count` times in all.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, within: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if log.matches(needle).count() >= count {
                return Ok(());
            }
            {
                let mut d = self.daemon.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(child) = d.as_mut() {
                    if let Some(status) = child.try_wait()? {
                        *d = None;
                        bail!("meshclass run exited ({status}) before `{needle}`:\n{log}");
                    }
                }
            }
            if start.elapsed() > within {
                bail!("no `{needle}` in the daemon log within {within:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the daemon's log has `needle`.
    pub fn wait_for_log(&mut self, needle: &str, within: Duration) -> Result<()> {
        self.wait_for_log_count(needle, 1, within)
    }

    /// Stops the daemon: SIGTERM (`kill9` false) or SIGKILL, by its pid.
    pub fn stop_daemon(&self, kill9: bool) -> Result<()> {
        let child = self.daemon.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut child) = child {
            let pid = child.id() as i32;
            // SAFETY: signalling the child we started, by its pid.
            unsafe { libc::kill(pid, if kill9 { libc::SIGKILL } else { libc::SIGTERM }) };
            child.wait()?;
        }
        Ok(())
    }

    /// Runs `meshclass` with `args` in the node namespace (pin dir appended where it fits).
    pub fn meshclass(&self, meshclass: &Path, args: &[&str]) -> Result<std::process::Output> {
        let node_fd = self.node.fd();
        let mut cmd = Command::new(meshclass);
        cmd.args(args);
        // SAFETY: as in start_daemon.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(move || {
                if libc::setns(node_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.output().context("running meshclass")
    }

    /// A TCP connection from the workload: what answered.
    pub fn tcp(&self, dst: SocketAddr, timeout: Duration) -> Outcome {
        self.workload.run(|| {
            let start = Instant::now();
            match TcpStream::connect_timeout(&dst, timeout) {
                Ok(mut s) => read_reply(&mut s, start, timeout),
                Err(e) => classify_err(&e, start),
            }
        })
    }

    /// A TCP connection from the workload whose packets carry IPv4 options (three NOPs and an
    /// end of list) or an IPv6 hop-by-hop header (a PadN option), sending `request` if any:
    /// what answered.
    pub fn tcp_with_ip_options(
        &self,
        dst: SocketAddr,
        request: Option<&[u8]>,
        timeout: Duration,
    ) -> Outcome {
        self.workload.run(|| {
            let start = Instant::now();
            match connect_with_ip_options(dst, timeout) {
                Ok(mut s) => {
                    if let Some(r) = request {
                        if let Err(e) = s.write_all(r) {
                            return classify_err(&e, start);
                        }
                    }
                    read_reply(&mut s, start, timeout)
                }
                Err(e) => classify_err(&e, start),
            }
        })
    }

    /// A TCP connection from the workload's source port `sport` (which a connection just
    /// closed may have used): what answered, and how long the connect took. The client closes
    /// only after the other end has (its end of file), so that the other end's socket is the
    /// one left in TIME_WAIT: closing on the reply's line raced the proxy's close, and on a
    /// loaded machine the client's socket was sometimes the one that waited.
    pub fn tcp_from_port(
        &self,
        dst: SocketAddr,
        sport: u16,
        timeout: Duration,
    ) -> (Outcome, Duration) {
        self.workload.run(|| {
            let start = Instant::now();
            match connect_from_port(dst, sport, timeout) {
                Ok(mut s) => {
                    let took = start.elapsed();
                    let o = read_reply(&mut s, start, timeout);
                    let mut rest = [0u8; 512];
                    while matches!(s.read(&mut rest), Ok(n) if n > 0) {}
                    (o, took)
                }
                Err(e) => (classify_err(&e, start), start.elapsed()),
            }
        })
    }

    /// An HTTP/1.1 request for `/` with `host` from the workload: what answered.
    pub fn http(&self, dst: SocketAddr, host: &str, timeout: Duration) -> Outcome {
        self.http_path(dst, host, "/", timeout)
    }

    /// An HTTP/1.1 request for `path` with `host` from the workload, written at once: what
    /// answered.
    pub fn http_path(&self, dst: SocketAddr, host: &str, path: &str, timeout: Duration) -> Outcome {
        self.workload.run(|| {
            let start = Instant::now();
            match TcpStream::connect_timeout(&dst, timeout) {
                Ok(mut s) => {
                    let req =
                        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
                    if let Err(e) = s.write_all(req.as_bytes()) {
                        return classify_err(&e, start);
                    }
                    read_reply(&mut s, start, timeout)
                }
                Err(e) => classify_err(&e, start),
            }
        })
    }

    /// A TLS handshake with `sni` from the workload (a real rustls client): what answered.
    pub fn tls(&self, dst: SocketAddr, sni: &str, timeout: Duration) -> Outcome {
        let root = self.tls_root.clone();
        let sni = sni.to_string();
        self.workload.run(move || {
            let start = Instant::now();
            let mut roots = rustls::RootCertStore::empty();
            if let Err(e) = roots.add(rustls::pki_types::CertificateDer::from(root)) {
                return Outcome::Error(e.to_string());
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = match rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
            {
                Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
                Err(e) => return Outcome::Error(e.to_string()),
            };
            let name = match rustls::pki_types::ServerName::try_from(sni) {
                Ok(n) => n,
                Err(e) => return Outcome::Error(e.to_string()),
            };
            let conn = match rustls::ClientConnection::new(Arc::new(config), name) {
                Ok(c) => c,
                Err(e) => return Outcome::Error(e.to_string()),
            };
            let sock = match TcpStream::connect_timeout(&dst, timeout) {
                Ok(s) => s,
                Err(e) => return classify_err(&e, start),
            };
            let _ = sock.set_read_timeout(Some(timeout));
            let mut tls = rustls::StreamOwned::new(conn, sock);
            // The servers speak first after the handshake; a proxy answers in clear text,
            // which fails the handshake: tell those apart by peeking at the raw reply.
            let mut buf = [0u8; 256];
            match tls.read(&mut buf) {
                Ok(n) => Outcome::Server(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        // Not TLS: the proxy answered in clear text.
                        return Outcome::Error(format!("not a TLS server: {e}"));
                    }
                    classify_err(&e, start)
                }
            }
        })
    }

    /// An HTTP/2 prior-knowledge request by curl (a real client: nghttp2 Huffman-codes the
    /// headers) from the workload to `http://{host}:{port of dst}/`, `host` resolved to `dst`'s
    /// address: what answered. Its `:authority` is `host`, with `:port` unless port 80.
    pub fn curl_h2c(&self, dst: SocketAddr, host: &str, timeout: Duration) -> Outcome {
        let port = dst.port();
        let ip = match dst.ip() {
            IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        };
        let resolve = format!("{host}:{port}:{ip}");
        let url = if port == 80 {
            format!("http://{host}/")
        } else {
            format!("http://{host}:{port}/")
        };
        let secs = format!("{:.1}", timeout.as_secs_f64());
        self.workload.run(|| {
            let start = Instant::now();
            // `-q`: no ~/.curlrc; no proxy from the environment (the lab's addresses only).
            let out = Command::new("curl")
                .args(["-q", "-sS", "--noproxy", "*", "--http2-prior-knowledge"])
                .args(["--max-time", &secs, "--resolve", &resolve, &url])
                .env_remove("http_proxy")
                .env_remove("HTTP_PROXY")
                .env_remove("all_proxy")
                .env_remove("ALL_PROXY")
                .output();
            let took = start.elapsed();
            match out {
                Err(e) => Outcome::Error(format!("running curl: {e}")),
                Ok(o) if o.status.success() => parse_reply(&String::from_utf8_lossy(&o.stdout)),
                // Couldn't connect (refused, unreachable), send or receive failure (reset).
                Ok(o) if matches!(o.status.code(), Some(7 | 55 | 56)) => Outcome::Rejected(took),
                Ok(o) if o.status.code() == Some(28) => Outcome::Timeout,
                Ok(o) => Outcome::Error(format!(
                    "curl {}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
            }
        })
    }

    /// A UDP datagram from the workload (connected socket): what answered.
    pub fn udp(&self, dst: SocketAddr, timeout: Duration) -> Outcome {
        self.workload.run(|| {
            let start = Instant::now();
            let bind: SocketAddr = if dst.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            let s = match UdpSocket::bind(bind) {
                Ok(s) => s,
                Err(e) => return Outcome::Error(e.to_string()),
            };
            if let Err(e) = s.connect(dst) {
                return Outcome::Error(e.to_string());
            }
            let _ = s.set_read_timeout(Some(timeout));
            if let Err(e) = s.send(b"ping") {
                return classify_err(&e, start);
            }
            let mut buf = [0u8; 256];
            match s.recv(&mut buf) {
                Ok(n) => Outcome::Server(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
                Err(e) => classify_err(&e, start),
            }
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.stop_daemon(false);
        self.servers = None;
        // Whatever the daemon pinned goes with the lab, even if a test failed half-way.
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        let pins = meshclass::daemon::pins::Pins::new(&self.pin_dir);
        let _ = std::fs::remove_dir_all(pins.state_dir());
        let _ = std::fs::remove_file(pins.lock_file());
        let _ = std::fs::remove_file(self.log_path());
    }
}

/// Binding right after an address was added can meet it still tentative: try for a while.
fn retry_bind<T>(f: impl Fn() -> std::io::Result<T>) -> std::io::Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrNotAvailable
                    && start.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn read_reply(s: &mut TcpStream, start: Instant, timeout: Duration) -> Outcome {
    let _ = s.set_read_timeout(Some(timeout));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 4096 || buf.ends_with(b"\n") {
                    break;
                }
            }
            Err(e) if buf.is_empty() => return classify_err(&e, start),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    parse_reply(&text)
}

fn parse_reply(text: &str) -> Outcome {
    for line in text.lines() {
        if let Some(rest) = line.trim().strip_prefix("proxy orig-dst=") {
            if let Ok(a) = rest.trim().parse() {
                return Outcome::Proxy(a);
            }
        }
        if let Some(rest) = line.trim().strip_prefix("server ") {
            return Outcome::Server(rest.trim().to_string());
        }
    }
    if text.is_empty() {
        Outcome::Error("closed without a reply".into())
    } else {
        Outcome::Server(text.lines().last().unwrap_or_default().to_string())
    }
}

/// Connects a TCP socket to `dst` whose packets carry IP options (see
/// [`Lab::tcp_with_ip_options`]); a connect that takes longer than `timeout` is `TimedOut`.
fn connect_with_ip_options(dst: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let (level, name, opts): (i32, i32, &[u8]) = match dst {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_OPTIONS, &[1, 1, 1, 0]),
        // Next header (filled in by the kernel), length 0 (8 bytes), PadN of 4 bytes.
        SocketAddr::V6(_) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_HOPOPTS,
            &[0, 0, 1, 4, 0, 0, 0, 0],
        ),
    };
    connect_prepared(dst, timeout, |fd| setsockopt(fd, level, name, opts))
}

/// Connects a TCP socket to `dst` from source port `sport` (`SO_REUSEADDR`: the port of a
/// connection just closed); a connect that takes longer than `timeout` is `TimedOut`.
fn connect_from_port(dst: SocketAddr, sport: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    connect_prepared(dst, timeout, |fd| {
        setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &1i32.to_ne_bytes(),
        )?;
        let any = match dst {
            SocketAddr::V4(_) => SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), sport),
            SocketAddr::V6(_) => SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), sport),
        };
        let (ss, len) = sockaddr(any);
        // SAFETY: `ss` holds a socket address of `len` bytes.
        if unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
}

fn setsockopt(fd: i32, level: i32, name: i32, value: &[u8]) -> std::io::Result<()> {
    // SAFETY: `value` outlives the call, which reads `value.len()` bytes of it.
    let r = unsafe { libc::setsockopt(fd, level, name, value.as_ptr().cast(), value.len() as u32) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `a` as a `sockaddr_storage` and its length.
fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid `sockaddr_storage`, and it is large and aligned
    // enough for either family's address.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let len = match a {
            SocketAddr::V4(a) => {
                let sin =
                    &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 =
                    &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                size_of::<libc::sockaddr_in6>()
            }
        };
        (ss, len as libc::socklen_t)
    }
}

/// A TCP socket for `dst`'s family, set up by `prepare`, connected to `dst` (blocking, giving
/// up after `timeout` as `TimedOut`).
fn connect_prepared(
    dst: SocketAddr,
    timeout: Duration,
    prepare: impl FnOnce(i32) -> std::io::Result<()>,
) -> std::io::Result<TcpStream> {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    let domain = match dst {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: a plain socket call; the descriptor is owned from here on.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    prepare(fd)?;
    // A blocking connect gives up after the send timeout.
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` is a `timeval`, read during the call.
    let tv = unsafe {
        std::slice::from_raw_parts(
            (&tv as *const libc::timeval).cast::<u8>(),
            size_of::<libc::timeval>(),
        )
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, tv)?;
    let (ss, len) = sockaddr(dst);
    // SAFETY: `ss` holds a socket address of `len` bytes.
    if unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EINPROGRESS) | Some(libc::EAGAIN) => {
                std::io::Error::from(std::io::ErrorKind::TimedOut)
            }
            _ => e,
        });
    }
    Ok(TcpStream::from(sock))
}

fn classify_err(e: &std::io::Error, start: Instant) -> Outcome {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
            Outcome::Rejected(start.elapsed())
        }
        K::TimedOut | K::WouldBlock => Outcome::Timeout,
        _ => Outcome::Error(e.to_string()),
    }
}

/// The `:authority` of an HTTP/2 prior-knowledge request's first HEADERS frame, decoded, as
/// the client wrote it (port included).
fn h2c_authority(buf: &[u8]) -> Option<String> {
    use meshclass::packet::h2c::PREFACE;
    let mut off = PREFACE.len();
    if buf.len() < off || &buf[..off] != PREFACE {
        return None;
    }
    // Frames until the first HEADERS (unpadded, no priority: what curl sends).
    while off + 9 <= buf.len() {
        let len = usize::from(buf[off]) << 16
            | usize::from(buf[off + 1]) << 8
            | usize::from(buf[off + 2]);
        let (ty, body) = (buf[off + 3], off + 9);
        if body + len > buf.len() {
            return None;
        }
        if ty == 1 {
            return hpack_authority(&buf[body..body + len]);
        }
        off = body + len;
    }
    None
}

/// The `:authority` of an HPACK header block (first request of a connection: static table
/// only), decoded.
fn hpack_authority(block: &[u8]) -> Option<String> {
    let int = |pos: &mut usize, bits: u32| -> Option<usize> {
        let max = (1usize << bits) - 1;
        let mut v = usize::from(*block.get(*pos)?) & max;
        *pos += 1;
        if v == max {
            let mut shift = 0;
            loop {
                let b = *block.get(*pos)?;
                *pos += 1;
                v += usize::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        Some(v)
    };
    let mut pos = 0;
    while pos < block.len() {
        let b = block[pos];
        if b & 0x80 != 0 {
            int(&mut pos, 7)?;
            continue;
        }
        if b & 0xe0 == 0x20 {
            int(&mut pos, 5)?;
            continue;
        }
        let index = int(&mut pos, if b & 0x40 != 0 { 6 } else { 4 })?;
        if index == 0 {
            let n = int(&mut pos, 7)?;
            pos += n;
        }
        let huffman = *block.get(pos)? & 0x80 != 0;
        let n = int(&mut pos, 7)?;
        let v = block.get(pos..pos + n)?;
        pos += n;
        if index == 1 {
            let v = if huffman {
                meshclass::packet::hpack::huffman_decode(v)?
            } else {
                v.to_vec()
            };
            return Some(String::from_utf8_lossy(&v).into_owned());
        }
    }
    None
}

/// An HTTP/2 server's answer to stream 1: SETTINGS, the ACK of the client's, HEADERS
/// (`:status: 200`) and the DATA `body`, which ends the stream.
fn h2c_response(body: &str) -> Vec<u8> {
    use meshclass::packet::h2c::{frame, frame_type};
    let mut out = Vec::new();
    frame(&mut out, frame_type::SETTINGS, 0, 0, &[]);
    // ACK.
    frame(&mut out, frame_type::SETTINGS, 1, 0, &[]);
    // END_HEADERS; 0x88: indexed field 8, `:status: 200`.
    frame(&mut out, frame_type::HEADERS, 4, 1, &[0x88]);
    // END_STREAM.
    frame(&mut out, frame_type::DATA, 1, 1, body.as_bytes());
    out
}

fn serve_tcp(
    l: TcpListener,
    kind: &'static str,
    me: IpAddr,
    tls: Arc<rustls::ServerConfig>,
    resets: &Arc<AtomicU64>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let tls = tls.clone();
                let resets = resets.clone();
                let count = move |r: std::io::Result<usize>| match r {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        resets.fetch_add(1, Ordering::SeqCst);
                        0
                    }
                    r => r.unwrap_or(0),
                };
                std::thread::spawn(move || match kind {
                    "tls" => {
                        if let Ok(conn) = rustls::ServerConnection::new(tls) {
                            let mut t = rustls::StreamOwned::new(conn, s);
                            // The handshake: reads the ClientHello first.
                            if count(t.conn.complete_io(&mut t.sock).map(|(n, _)| n)) == 0
                                && t.conn.is_handshaking()
                            {
                                return;
                            }
                            let _ = t.write_all(format!("server {me} tls\n").as_bytes());
                            let _ = t.flush();
                            t.conn.send_close_notify();
                            let _ = t.flush();
                        }
                    }
                    "http" => {
                        let mut buf = [0u8; 2048];
                        let n = count(s.read(&mut buf));
                        if buf[..n].starts_with(&meshclass::packet::h2c::PREFACE[..14]) {
                            // HTTP/2 with prior knowledge: until the request's `:authority`
                            // has come (or the client stops).
                            let mut got = buf[..n].to_vec();
                            let authority = loop {
                                if let Some(a) = h2c_authority(&got) {
                                    break Some(a);
                                }
                                match count(s.read(&mut buf)) {
                                    0 => break None,
                                    n if got.len() < 8192 => got.extend_from_slice(&buf[..n]),
                                    _ => break None,
                                }
                            };
                            let Some(authority) = authority else {
                                return;
                            };
                            let _ = s.write_all(&h2c_response(&format!(
                                "server {me} h2c authority={authority}\n"
                            )));
                            // Let the client read it all before the close.
                            std::thread::sleep(Duration::from_millis(100));
                            let _ = s.shutdown(Shutdown::Write);
                            return;
                        }
                        let req = String::from_utf8_lossy(&buf[..n]);
                        let host = req
                            .lines()
                            .find_map(|l| l.strip_prefix("Host: "))
                            .unwrap_or("-")
                            .to_string();
                        let body = format!("server {me} http host={host}\n");
                        let _ = s.write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        );
                        let _ = s.shutdown(Shutdown::Write);
                    }
                    _ => {
                        let _ = s.write_all(format!("server {me} tcp\n").as_bytes());
                        let _ = s.shutdown(Shutdown::Write);
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve_udp(u: UdpSocket, me: IpAddr, stop: &AtomicBool) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((_, from)) = u.recv_from(&mut buf) {
            let _ = u.send_to(format!("server {me} udp\n").as_bytes(), from);
        }
    }
}

/// Answers A and AAAA questions for api.external-svc.com (TTL 30 s); NXDOMAIN otherwise.
fn serve_dns(u: UdpSocket, stop: &AtomicBool) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = u.recv_from(&mut buf) else {
            continue;
        };
        let q = &buf[..n];
        if n < 12 {
            continue;
        }
        // The question: labels, then type and class.
        let mut i = 12;
        let mut name = Vec::new();
        while i < n && q[i] != 0 {
            let l = q[i] as usize;
            if i + 1 + l > n {
                break;
            }
            name.push(String::from_utf8_lossy(&q[i + 1..i + 1 + l]).to_lowercase());
            i += 1 + l;
        }
        let qend = i + 5;
        if qend > n {
            continue;
        }
        let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
        let name = name.join(".");
        let rdata: Option<Vec<u8>> = match (name.as_str(), qtype) {
            ("api.external-svc.com", 1) => Some(
                addr::API
                    .parse::<std::net::Ipv4Addr>()
                    .expect("literal")
                    .octets()
                    .to_vec(),
            ),
            ("api.external-svc.com", 28) => Some(
                addr::API6
                    .parse::<std::net::Ipv6Addr>()
                    .expect("literal")
                    .octets()
                    .to_vec(),
            ),
            _ => None,
        };
        let mut r = q[..qend].to_vec();
        r[2] = 0x81;
        r[3] = if rdata.is_some() || name == "api.external-svc.com" {
            0x80
        } else {
            0x83
        };
        r[6] = 0;
        r[7] = u8::from(rdata.is_some());
        r[8..12].fill(0);
        if let Some(d) = rdata {
            r.extend_from_slice(&[0xc0, 12]);
            r.extend_from_slice(&qtype.to_be_bytes());
            r.extend_from_slice(&[0, 1, 0, 0, 0, 30]);
            r.extend_from_slice(&(d.len() as u16).to_be_bytes());
            r.extend_from_slice(&d);
        }
        let _ = u.send_to(&r, from);
    }
}

fn transparent_listener(any: IpAddr, port: u16) -> Result<TcpListener> {
    let domain = if any.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls on a descriptor we own.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let l = <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd);
        let set = |level, opt| setsockopt(fd, level, opt, &1i32.to_ne_bytes());
        let _ = set(libc::SOL_SOCKET, libc::SO_REUSEADDR);
        if any.is_ipv4() {
            set(libc::SOL_IP, libc::IP_TRANSPARENT).context("IP_TRANSPARENT")?;
        } else {
            let _ = set(libc::SOL_IPV6, libc::IPV6_V6ONLY);
            set(libc::SOL_IPV6, libc::IPV6_TRANSPARENT).context("IPV6_TRANSPARENT")?;
        }
        let (ss, len) = sockaddr(SocketAddr::new(any, port));
        if libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) != 0 {
            bail!("bind {any}:{port}: {}", std::io::Error::last_os_error());
        }
        if libc::listen(fd, 1024) != 0 {
            bail!("listen: {}", std::io::Error::last_os_error());
        }
        l.set_nonblocking(true)?;
        let _ = l.as_raw_fd();
        Ok(l)
    }
}

fn serve_proxy(l: TcpListener, seen: &Mutex<Vec<SocketAddr>>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((mut s, _)) => {
                // With IP_TRANSPARENT, the accepted socket's local address is the original
                // destination the workload connected to.
                if let Ok(orig) = s.local_addr() {
                    seen.lock().unwrap_or_else(|p| p.into_inner()).push(orig);
                    let _ = s.set_nonblocking(false);
                    let _ = s.write_all(format!("proxy orig-dst={orig}\n").as_bytes());
                    let _ = s.shutdown(Shutdown::Write);
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
