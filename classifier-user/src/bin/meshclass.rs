//! The `meshclass` command: daemon and CLI.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use meshclass::{
    commands,
    daemon::pins::DEFAULT_PIN_DIR,
    plan::{CompileOptions, Verdict},
};

#[derive(Parser)]
#[command(
    name = "meshclass",
    version,
    about = "Classifies a node's outbound traffic in the kernel against an Istio service registry",
    long_about = "meshclass compiles an Istio service registry (ServiceEntry, WorkloadEntry, Pod, \
                  Service) into BPF maps and classifies every outbound packet of the node's \
                  workloads in a TC program: mesh-internal services are redirected to the node's \
                  proxy, registered external services pass, and unknown destinations pass \
                  (ALLOW_ANY) or are dropped or rejected (REGISTRY_ONLY)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check registry files the way Istio's admission webhook does.
    Validate {
        /// Files or directories (*.yaml, *.yml, recursively); `-` reads standard input.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Compile the registry into the dataplane plan and print it.
    Compile {
        /// Files or directories (*.yaml, *.yml, recursively); `-` reads standard input.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Verdict for MESH_EXTERNAL services.
        #[arg(long, default_value = "pass", value_parser = ["pass", "redirect"])]
        external: String,
        /// As `run --bind-names-to-dns`: hosts DNS resolves are matched by their addresses only.
        #[arg(long)]
        bind_names_to_dns: bool,
    },
    /// Run the daemon: load (or re-adopt) the dataplane, attach it, enforce the registry.
    Run(Box<commands::run::RunArgs>),
    /// Remove the programs, links, pins and routing that `run` left.
    Detach {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Detach from another network namespace than the one the daemon ran in, for when
        /// that one is gone (its interfaces and routing went with it).
        #[arg(long)]
        any_netns: bool,
    },
    /// Show what the pinned maps hold (works while the daemon is down).
    Inspect {
        /// What to show.
        #[arg(value_enum, default_value = "counters")]
        what: commands::inspect::What,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Run a connection's packets through the live program and the reference model.
    Explain {
        /// Destination address and port.
        #[arg(long)]
        dst: std::net::SocketAddr,
        /// Source address (default: a benchmark-range address of the destination's family).
        #[arg(long)]
        src: Option<std::net::IpAddr>,
        /// Transport protocol.
        #[arg(long, default_value = "tcp", value_parser = ["tcp", "udp"])]
        proto: String,
        /// Send a TLS ClientHello with this server name.
        #[arg(long, conflicts_with_all = ["host", "h2c"])]
        sni: Option<String>,
        /// Send an HTTP/1.1 request with this Host.
        #[arg(long, conflicts_with = "h2c")]
        host: Option<String>,
        /// Send an HTTP/2 prior-knowledge request with this `:authority` (Huffman-coded), as
        /// curl does: the preface and SETTINGS in one segment, HEADERS in the next.
        #[arg(long)]
        h2c: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Decision events as they happen: blocked connections, or every new one with
    /// `run --events-all`.
    Flows {
        /// Keep printing new events.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), generated from this command line definition.
    Man,
}

fn main() -> ExitCode {
    // `run --config FILE`: the file's settings, then the flags, which win.
    let argv = match commands::config::expand(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    let code = match cli.command {
        Command::Completions { shell } => completions(shell),
        Command::Man => man(),
        Command::Validate { paths } => commands::validate::run(&paths),
        Command::Compile {
            paths,
            json,
            external,
            bind_names_to_dns,
        } => {
            let options = CompileOptions {
                external: if external == "redirect" {
                    Verdict::Redirect
                } else {
                    Verdict::Pass
                },
                bind_names_to_dns,
            };
            commands::compile::run(&paths, json, options)
        }
        Command::Run(args) => commands::run::run(*args),
        Command::Detach { pin_dir, any_netns } => commands::detach::run(&pin_dir, any_netns),
        Command::Inspect {
            what,
            json,
            pin_dir,
        } => commands::inspect::run(&pin_dir, what, json),
        Command::Explain {
            dst,
            src,
            proto,
            sni,
            host,
            h2c,
            json,
            pin_dir,
        } => commands::explain::run(&commands::explain::ExplainArgs {
            dst,
            src,
            proto: if proto == "udp" {
                meshclass::plan::L4::Udp
            } else {
                meshclass::plan::L4::Tcp
            },
            sni,
            host,
            h2c,
            json,
            pin_dir,
        }),
        Command::Flows {
            follow,
            json,
            pin_dir,
        } => commands::flows::run(&pin_dir, follow, json),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn completions(shell: clap_complete::Shell) -> i32 {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "meshclass", &mut std::io::stdout());
    0
}

fn man() -> i32 {
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut out = std::io::stdout();
    let page = clap_mangen::Man::new(cmd.clone());
    if let Err(e) = page.render(&mut out) {
        return write_failed(e);
    }
    // One section per subcommand, so the page documents every command's flags.
    for sub in cmd.get_subcommands() {
        let name = format!("meshclass-{}", sub.get_name());
        let page = clap_mangen::Man::new(
            sub.clone()
                .name(clap::builder::Str::from(name.leak() as &str)),
        );
        if let Err(e) = page.render(&mut out) {
            return write_failed(e);
        }
    }
    0
}

/// A write to standard output that failed: a reader that went away (`meshclass man | head`)
/// is no error.
fn write_failed(e: std::io::Error) -> i32 {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return 0;
    }
    eprintln!("error: {e}");
    2
}
