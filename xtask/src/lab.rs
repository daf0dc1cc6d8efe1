//! `cargo xtask demo` and `cargo xtask build-and-load`.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    setup::Ready,
    util::{is_root, run},
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// Builds the `meshclass` binary (release) and returns its path.
pub fn build_meshclass(ready: &Ready) -> Result<PathBuf> {
    run(ready.cargo().args([
        "build",
        "--release",
        "--package",
        "classifier-user",
        "--bin",
        "meshclass",
    ]))?;
    Ok(workspace().join("target/release/meshclass"))
}

/// Builds and runs the demo lab.
pub fn demo(ready: &Ready) -> Result<()> {
    if !is_root() {
        bail!("the demo creates network namespaces and loads BPF programs: run it as root");
    }
    let bin = build_meshclass(ready)?;
    run(ready
        .cargo()
        .args(["build", "--release", "--package", "tests", "--bin", "demo"]))?;
    let status = Command::new(workspace().join("target/release/demo"))
        .env("MESHCLASS_BIN", &bin)
        .status()
        .context("running the demo")?;
    if !status.success() {
        bail!("the demo saw behaviour that differs from what was expected ({status})");
    }
    Ok(())
}

/// Builds meshclass and runs the daemon on this machine's interfaces; never returns on success.
pub fn build_and_load(
    ready: &Ready,
    ifaces: &[String],
    registry: &[PathBuf],
    rest: &[String],
) -> Result<()> {
    if ifaces.is_empty() {
        bail!(
            "name the interfaces to classify with --iface: build-and-load never picks them itself"
        );
    }
    if !is_root() {
        bail!("loading and attaching BPF programs needs root (or CAP_BPF + CAP_NET_ADMIN)");
    }
    let bin = build_meshclass(ready)?;
    let mut cmd = Command::new(&bin);
    cmd.arg("run");
    for i in ifaces {
        cmd.args(["--iface", i]);
    }
    for r in registry {
        cmd.arg("--registry").arg(r);
    }
    cmd.args(rest);
    eprintln!("build-and-load: exec {cmd:?}");
    Err(cmd.exec()).context("starting meshclass run")
}

/// Builds and runs the benchmarks; results land in `bench-results/`.
pub fn bench(ready: &Ready, quick: bool, only: Option<&str>, rest: &[String]) -> Result<()> {
    if !is_root() {
        bail!("the benchmarks load BPF programs and build namespaces: run them as root");
    }
    // The throughput part runs the daemon itself (`meshclass run`), as the lab does.
    let bin = build_meshclass(ready)?;
    run(ready
        .cargo()
        .args(["build", "--release", "--package", "tests", "--bin", "bench"]))?;
    let mut cmd = Command::new(workspace().join("target/release/bench"));
    cmd.current_dir(workspace()).env("MESHCLASS_BIN", &bin);
    if quick {
        cmd.arg("--quick");
    }
    if let Some(part) = only {
        cmd.args(["--only", part]);
    }
    cmd.args(rest);
    let status = cmd.status().context("running the benchmarks")?;
    if !status.success() {
        bail!("the benchmarks failed ({status})");
    }
    Ok(())
}
