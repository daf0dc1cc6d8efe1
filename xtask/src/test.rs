//! `cargo xtask test` and `cargo xtask lint`.

use anyhow::{bail, Result};

use crate::{
    setup::{Ready, NIGHTLY},
    util::{is_root, run},
};

/// Unit tests (no privileges), then the privileged end-to-end tests as root, one at a time.
pub fn test(ready: &Ready, filter: Option<&str>, unit_only: bool) -> Result<()> {
    eprintln!("xtask test: unit tests (no privileges needed)");
    let mut unit = ready.cargo();
    unit.args(["test", "--release", "--workspace", "--exclude", "tests"]);
    if let Some(f) = filter {
        unit.args(["--", f]);
    }
    run(&mut unit)?;
    if unit_only {
        eprintln!("xtask test: --unit-only: the privileged tests were NOT run");
        return Ok(());
    }
    if !is_root() {
        bail!(
            "the privileged tests (BPF loading, network namespaces, real traffic) need root and \
             were NOT run: run `sudo -E cargo xtask test`, or `cargo xtask test --unit-only` to \
             run the unit tests alone"
        );
    }
    // The end-to-end tests run the real binary, as a user would.
    let bin = crate::lab::build_meshclass(ready)?;
    eprintln!("xtask test: privileged tests (root, one test thread: they share kernel state)");
    let mut e2e = ready.cargo();
    e2e.env("MESHCLASS_BIN", &bin);
    e2e.args([
        "test",
        "--release",
        "--package",
        "tests",
        "--",
        "--test-threads=1",
    ]);
    if let Some(f) = filter {
        e2e.arg(f);
    }
    run(&mut e2e)
}

/// rustfmt check and clippy with warnings as errors, host crates and the eBPF crate for BPF.
pub fn lint(ready: &Ready) -> Result<()> {
    run(ready.cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(ready.cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The program's code is compiled only for the BPF target; lint it there too.
    let mut ebpf = std::process::Command::new("rustup");
    ebpf.env("PATH", ready.path_env())
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO")
        .current_dir("classifier-ebpf")
        .args(["run", NIGHTLY, "cargo", "clippy", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args([
            "--target-dir",
            "../target/ebpf-clippy",
            "--",
            "-D",
            "warnings",
        ]);
    run(&mut ebpf)
}
