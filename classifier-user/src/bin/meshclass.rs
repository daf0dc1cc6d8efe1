//! The `meshclass` command: daemon and CLI.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use meshclass::{commands, plan::CompileOptions};

#[derive(Parser)]
#[command(
    name = "meshclass",
    version,
    about = "Classifies a node's outbound traffic in the kernel against an Istio service registry"
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Validate { paths } => commands::validate::run(&paths),
        Command::Compile {
            paths,
            json,
            external,
        } => {
            let options = CompileOptions {
                external: if external == "redirect" {
                    meshclass::plan::Verdict::Redirect
                } else {
                    meshclass::plan::Verdict::Pass
                },
            };
            commands::compile::run(&paths, json, options)
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
