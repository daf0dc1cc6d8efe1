//! `meshclass run`: the daemon.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::{
    attach::AttachMode,
    daemon::{self, RunOptions},
    dataplane::Capacities,
    plan::Verdict,
    settings::{Blocked, OutboundPolicy, Settings},
};

/// The flags of `meshclass run`.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// Registry files or directories (*.yaml, *.yml, recursively), watched for changes.
    #[arg(long = "registry", required = true, num_args = 1..)]
    pub registry: Vec<PathBuf>,
    /// Interfaces to classify: the node-side ends of the workloads' links, by name or by
    /// pattern (`*`, `?`: `lxc*`), followed while the daemon runs (a pod's new interface is
    /// attached as it appears).
    #[arg(long = "iface", required = true, num_args = 1..)]
    pub ifaces: Vec<String>,
    /// What unknown destinations get (Istio's spellings, any case).
    #[arg(long, default_value = "ALLOW_ANY")]
    pub outbound_policy: OutboundPolicy,
    /// What blocked traffic gets under REGISTRY_ONLY.
    #[arg(long, default_value = "reject")]
    pub blocked: Blocked,
    /// What MESH_EXTERNAL services get.
    #[arg(long, default_value = "pass", value_parser = ["pass", "redirect"])]
    pub external: String,
    /// The proxy's transparent listener port.
    #[arg(long, default_value_t = crate::settings::DEFAULT_PROXY_PORT)]
    pub proxy_port: u16,
    /// Mark put on redirected packets (routed to the local table by an fwmark rule); decimal
    /// or 0x-prefixed hexadecimal.
    #[arg(long, default_value = "0x4d43", value_parser = parse_mark)]
    pub proxy_mark: u32,
    /// Routing table (and rule priority) for redirected packets.
    #[arg(long, default_value_t = daemon::DEFAULT_ROUTE_TABLE)]
    pub route_table: u32,
    /// Where the program, maps and links are pinned.
    #[arg(long, default_value = daemon::pins::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Serve Prometheus metrics here.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Emit a decision event for every new connection, not only blocked ones.
    #[arg(long)]
    pub events_all: bool,
    /// Match a ClientHello that offers Encrypted Client Hello by its outer SNI (by default it is
    /// not inspectable: the outer name is a public name, unless the extension is GREASE, as
    /// Chrome sends on every connection).
    #[arg(long)]
    pub ech_outer_sni: bool,
    /// Match a service whose host DNS resolves (resolution DNS, no endpoints) by the addresses
    /// DNS returned only, not by its TLS SNI or HTTP Host: a name sent to any other address is
    /// not its (no SNI/Host spoofing). Off by default: a client given other addresses by its
    /// resolver (a CDN's) would be refused.
    #[arg(long)]
    pub bind_names_to_dns: bool,
    /// Attach with TCX, clsact, or whichever the kernel has.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tcx", "clsact"])]
    pub attach: String,
    /// How often the registry files are checked for changes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// DNS server for names with resolution DNS: an address, port 53 unless given
    /// (`10.96.0.10`, `[fd00::a]:5353`; default: the first in /etc/resolv.conf).
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_dns_server)]
    pub dns_server: Option<SocketAddr>,
    /// Exact (address, port, protocol) entries the maps hold per generation. The sizes (this
    /// and the next `--max-*` and `--events-bytes`) are set when the dataplane is loaded; a
    /// daemon that re-adopts pinned maps keeps theirs (`meshclass detach` first to change them).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_SIZE))]
    pub max_exact: Option<u32>,
    /// CIDR entries per generation.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_SIZE))]
    pub max_cidr: Option<u32>,
    /// Name entries (TLS SNI, HTTP Host; exact and `*.` wildcard) per generation.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_SIZE))]
    pub max_names: Option<u32>,
    /// Connections tracked in the flow table (rounded up: buckets of four, a power of two).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(4..=MAX_SIZE))]
    pub max_flows: Option<u32>,
    /// ClientHellos and HTTP/2 streams followed across segments at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_SIZE))]
    pub max_pending: Option<u32>,
    /// Entry ids (each registry entry's hit counter), both generations together.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_SIZE))]
    pub max_entry_ids: Option<u32>,
    /// Bytes of the decision event ring buffer: a power of two, 4096 or more.
    #[arg(long, value_name = "BYTES", value_parser = parse_ring_bytes)]
    pub events_bytes: Option<u32>,
    /// A YAML file with the same settings (keys are the flag names); flags given here win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    pub json_logs: bool,
}

/// A packet mark: decimal, or hexadecimal after `0x` (as `ip rule` and `iptables` write them).
fn parse_mark(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    match r {
        // The fwmark rule of mark 0 would send every packet of the node to the local table.
        Ok(0) => Err(format!(
            "{s:?}: the mark must not be 0, which every packet carries"
        )),
        Ok(m) => Ok(m),
        Err(e) => Err(format!(
            "{s:?} is not a 32-bit mark (decimal or 0x hexadecimal): {e}"
        )),
    }
}

/// A DNS server: `IP`, `IP:PORT`, `IPv6` or `[IPv6]:PORT`; port 53 when not given.
fn parse_dns_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not an address, with or without a port (10.96.0.10, 10.96.0.10:53, [fd00::a]:53)"))
}

/// The largest map size a flag takes (the CIDR trie is created twice as large).
const MAX_SIZE: i64 = 1 << 30;

/// A ring buffer's size: a power of two of at least a page.
fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if n < 4096 || !n.is_power_of_two() || i64::from(n) > MAX_SIZE {
        return Err(format!("{n} is not a power of two from 4096 to 2^30"));
    }
    Ok(n)
}

/// The map sizes the flags ask for, the defaults for those not given; and whether any was.
fn capacities(args: &RunArgs) -> (Capacities, bool) {
    let d = Capacities::default();
    let given = [
        args.max_exact,
        args.max_cidr,
        args.max_names,
        args.max_flows,
        args.max_pending,
        args.max_entry_ids,
        args.events_bytes,
    ]
    .iter()
    .any(Option::is_some);
    let caps = Capacities {
        exact: args.max_exact.unwrap_or(d.exact),
        cidr: args.max_cidr.unwrap_or(d.cidr),
        names: args.max_names.unwrap_or(d.names),
        flows: args.max_flows.unwrap_or(d.flows),
        pending: args.max_pending.unwrap_or(d.pending),
        entry_ids: args.max_entry_ids.unwrap_or(d.entry_ids),
        events_bytes: args.events_bytes.unwrap_or(d.events_bytes),
    };
    (caps, given)
}

/// Runs the daemon: 0 after a clean stop, 1 when it could not start.
pub fn run(args: RunArgs) -> i32 {
    init_logging(args.json_logs);
    if args.registry.iter().any(|p| p.as_os_str() == "-") {
        eprintln!(
            "error: --registry -: the daemon reads its registry again on every change and \
             SIGHUP, and standard input can be read only once; give files or directories"
        );
        return 1;
    }
    let (capacities, sizes_given) = capacities(&args);
    let opts = RunOptions {
        registry: args.registry,
        ifaces: args.ifaces,
        settings: Settings {
            outbound_policy: args.outbound_policy,
            blocked: args.blocked,
            proxy_port: args.proxy_port,
            proxy_mark: args.proxy_mark,
            events_all: args.events_all,
            ech_outer_sni: args.ech_outer_sni,
        },
        external: if args.external == "redirect" {
            Verdict::Redirect
        } else {
            Verdict::Pass
        },
        pin_dir: args.pin_dir,
        metrics_addr: args.metrics_addr,
        attach_mode: match args.attach.as_str() {
            "tcx" => AttachMode::Tcx,
            "clsact" => AttachMode::Clsact,
            _ => AttachMode::Auto,
        },
        route_table: args.route_table,
        poll_interval: Duration::from_millis(args.poll_ms.max(50)),
        capacities,
        sizes_given,
        dns_server: args.dns_server,
        bind_names_to_dns: args.bind_names_to_dns,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match rt.block_on(daemon::run(opts)) {
        Ok(()) => 0,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                // Errors whose message already says their cause are not told it twice.
                let text = s.to_string();
                if !msg.ends_with(&text) {
                    msg.push_str(": ");
                    msg.push_str(&text);
                }
                src = s.source();
            }
            tracing::error!(error = %msg, "meshclass run failed");
            eprintln!("error: {msg}");
            1
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHCLASS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        let _ = b.json().try_init();
    } else {
        let _ = b.try_init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_read_in_decimal_or_hexadecimal() {
        assert_eq!(
            parse_mark("0x4d43"),
            Ok(crate::settings::DEFAULT_PROXY_MARK)
        );
        assert_eq!(parse_mark("0X4D43"), Ok(0x4d43));
        assert_eq!(parse_mark("19779"), Ok(0x4d43));
        assert!(parse_mark("0x1_0000_0000").is_err());
        assert!(parse_mark("mark").unwrap_err().contains("\"mark\""));
        assert!(parse_mark("0").unwrap_err().contains("must not be 0"));
    }

    #[test]
    fn dns_servers_take_port_53_unless_given() {
        let a = |s: &str| parse_dns_server(s).map(|a| a.to_string());
        assert_eq!(a("10.96.0.10"), Ok("10.96.0.10:53".into()));
        assert_eq!(a("10.96.0.10:5353"), Ok("10.96.0.10:5353".into()));
        assert_eq!(a("fd00::a"), Ok("[fd00::a]:53".into()));
        assert_eq!(a("[fd00::a]"), Ok("[fd00::a]:53".into()));
        assert_eq!(a("[fd00::a]:5353"), Ok("[fd00::a]:5353".into()));
        assert!(a("dns.local").unwrap_err().contains("\"dns.local\""));
    }

    /// The map sizes: the flags given, the defaults for the others; the ring buffer a power
    /// of two of a page or more.
    #[test]
    fn map_sizes_from_the_flags() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let parse = |extra: &[&str]| {
            let argv = [&["run", "--registry", "r", "--iface", "i"], extra].concat();
            Cli::try_parse_from(argv).map(|c| capacities(&c.run))
        };
        let (caps, given) = parse(&[]).unwrap();
        assert_eq!((caps, given), (Capacities::default(), false));
        let (caps, given) = parse(&["--max-flows", "8", "--max-names", "1000"]).unwrap();
        assert!(given);
        assert_eq!((caps.flows, caps.names), (8, 1000));
        assert_eq!(caps.exact, Capacities::default().exact);
        assert_eq!(
            parse(&["--events-bytes", "65536"]).unwrap().0.events_bytes,
            65536
        );
        for bad in [
            &["--events-bytes", "5000"][..],
            &["--events-bytes", "2048"],
            &["--max-flows", "2"],
            &["--max-names", "0"],
            &["--max-cidr", "2147483649"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
