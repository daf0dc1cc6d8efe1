//! Project tasks. Run `cargo xtask --help`.

mod setup;
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup => {
            setup::setup(false)?;
        }
    }
    Ok(())
}
