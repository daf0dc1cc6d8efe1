//! Project tasks. Run `cargo xtask --help`.

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
        Cmd::Lint => {
            let ready = setup::setup(true)?;
            test::lint(&ready)?;
        }
    }
    Ok(())
}
