//! Project tasks. Run `cargo xtask --help`.

mod gen_registry;
mod lab;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "meshclass project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make this machine ready: nightly rust-src, bpf-linker, Debian packages, bpffs, kernel check.
    Setup,
    /// Run every test: unit tests, then the privileged end-to-end tests (needs root).
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
        /// Run only the unit tests (no root needed); says loudly that the rest did not run.
        #[arg(long)]
        unit_only: bool,
    },
    /// rustfmt check and clippy with warnings as errors (the eBPF crate included).
    Lint,
    /// The main job: a lab of network namespaces, the example registry, real traffic (root).
    Demo,
    /// Build meshclass and run the daemon on this machine's interfaces (root).
    BuildAndLoad {
        /// Interfaces to classify (required: nothing is attached without being named).
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// Registry files or directories.
        #[arg(long = "registry", required = true)]
        registry: Vec<std::path::PathBuf>,
        /// Further `meshclass run` flags, e.g. --outbound-policy REGISTRY_ONLY.
        #[arg(last = true)]
        rest: Vec<String>,
    },
    /// Benchmarks: per-packet cost against an empty program, scaling, control plane, and
    /// throughput through veth pairs against iptables and nftables (root).
    Bench {
        /// A shorter run (a few minutes).
        #[arg(long)]
        quick: bool,
        /// Only one part: `per-packet` or `throughput` (BENCHMARKS.md then holds only that part).
        #[arg(long)]
        only: Option<String>,
        /// Further flags for the bench binary, e.g. `-- --path "exact IP" --sizes 1000
        /// --repeat 100000` (one path, one size: partial tables, for working on that path).
        #[arg(last = true)]
        rest: Vec<String>,
    },
    /// Write a deterministic synthetic registry for scale measurements.
    GenRegistry {
        /// Output file.
        #[arg(long, default_value = "target/gen-registry.yaml")]
        out: std::path::PathBuf,
        /// ServiceEntries to write.
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// WorkloadEntries to write.
        #[arg(long, default_value_t = 1000)]
        workloads: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup => {
            setup::setup(false)?;
        }
        Cmd::Test { filter, unit_only } => {
            let ready = setup::setup(true)?;
            test::test(&ready, filter.as_deref(), unit_only)?;
        }
        Cmd::Bench { quick, only, rest } => {
            let ready = setup::setup(true)?;
            lab::bench(&ready, quick, only.as_deref(), &rest)?;
        }
        Cmd::Demo => {
            let ready = setup::setup(true)?;
            lab::demo(&ready)?;
        }
        Cmd::BuildAndLoad {
            ifaces,
            registry,
            rest,
        } => {
            let ready = setup::setup(true)?;
            lab::build_and_load(&ready, &ifaces, &registry, &rest)?;
        }
        Cmd::GenRegistry {
            out,
            services,
            workloads,
            seed,
        } => {
            gen_registry::run(&out, services, workloads, seed)?;
            eprintln!(
                "wrote {} ({services} ServiceEntries, {workloads} WorkloadEntries)",
                out.display()
            );
        }
        Cmd::Lint => {
            let ready = setup::setup(true)?;
            test::lint(&ready)?;
        }
    }
    Ok(())
}
