//! `cargo xtask setup`: makes a fresh machine ready to build, load and test meshclass.
//!
//! Every step checks before it acts, so a second run on a ready machine takes a second or two.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::util::{cmd_output, is_root, run};

/// The toolchain the eBPF crate is built with (aya-build runs `rustup run nightly cargo`).
pub const NIGHTLY: &str = "nightly";
/// The bpf-linker release that builds against the nightly's LLVM (see docs/architecture.md).
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages used by the tests, the demo and the benchmarks.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("curl", "curl"),
    ("ip", "iproute2"),
    ("iperf3", "iperf3"),
    ("iptables", "iptables"),
    ("nft", "nftables"),
    ("openssl", "openssl"),
];

/// What `setup` found or made, for the commands that run after it.
pub struct Ready {
    /// Directory holding the `bpf-linker` binary; put first on PATH for cargo.
    pub linker_bin_dir: PathBuf,
}

impl Ready {
    /// PATH with the bpf-linker directory first.
    pub fn path_env(&self) -> std::ffi::OsString {
        let mut paths = vec![self.linker_bin_dir.clone()];
        if let Some(p) = env::var_os("PATH") {
            paths.extend(env::split_paths(&p));
        }
        env::join_paths(paths).expect("PATH entries contain no separator")
    }

    /// A cargo command with the environment the eBPF build needs.
    pub fn cargo(&self) -> Command {
        let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        c.env("PATH", self.path_env());
        c
    }
}

pub fn setup(quiet: bool) -> Result<Ready> {
    let say = |s: &str| {
        if !quiet {
            eprintln!("setup: {s}");
        }
    };
    ensure_nightly_rust_src(&say)?;
    let linker_bin_dir = ensure_bpf_linker(&say)?;
    link_into_cargo_bin(&linker_bin_dir, &say);
    if is_root() {
        ensure_debian_packages(&say)?;
        ensure_bpffs(&say)?;
    } else {
        say("not root: skipping Debian packages and bpffs (building works; loading and the privileged tests need root)");
    }
    check_kernel(&say);
    Ok(Ready { linker_bin_dir })
}

fn ensure_nightly_rust_src(say: &dyn Fn(&str)) -> Result<()> {
    let sysroot =
        cmd_output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"])).ok();
    let has_src = sysroot
        .as_deref()
        .map(|s| {
            Path::new(s.trim())
                .join("lib/rustlib/src/rust/library/core")
                .is_dir()
        })
        .unwrap_or(false);
    if sysroot.is_none() {
        say("installing the nightly toolchain");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
        ]))?;
    }
    if !has_src {
        say("adding rust-src to the nightly toolchain (needed for -Z build-std=core)");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    }
    Ok(())
}

/// Facts about the nightly that decide which bpf-linker build fits it.
struct NightlyLlvm {
    major: String,
    commit: String,
    lib: PathBuf,
}

fn nightly_llvm() -> Result<NightlyLlvm> {
    let vv = cmd_output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "-vV"]))?;
    let field = |k: &str| {
        vv.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("`rustc +{NIGHTLY} -vV` has no `{k}` line"))
    };
    let llvm = field("LLVM version:")?;
    let major = llvm.split('.').next().unwrap_or_default().to_string();
    let commit = field("commit-hash:")?;
    let sysroot =
        cmd_output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?;
    let libdir = Path::new(sysroot.trim()).join("lib");
    let lib = fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", libdir.display()))?;
    Ok(NightlyLlvm { major, commit, lib })
}

/// The durable home of tools that setup builds: survives reboots, not tied to a checkout.
fn tools_home() -> PathBuf {
    if let Some(d) = env::var_os("MESHCLASS_TOOLS_DIR") {
        return PathBuf::from(d);
    }
    let base = env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    base.join("meshclass-tools")
}

/// Builds bpf-linker against the nightly's own libLLVM, into a prefix named after the nightly,
/// so that a new nightly gets a new build and an old build is never run against the wrong LLVM.
fn ensure_bpf_linker(say: &dyn Fn(&str)) -> Result<PathBuf> {
    let llvm = nightly_llvm()?;
    let short = &llvm.commit[..llvm.commit.len().min(12)];
    let prefix = tools_home().join(format!(
        "bpf-linker-{BPF_LINKER_VERSION}-llvm{}-{short}",
        llvm.major
    ));
    let bin = prefix.join("bin/bpf-linker");
    if bin.is_file() {
        let works = Command::new(&bin)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if works {
            return Ok(prefix.join("bin"));
        }
        say("bpf-linker is present but does not run; rebuilding it");
    }
    let libdir = prefix.join("lib");
    fs::create_dir_all(&libdir).with_context(|| format!("creating {}", libdir.display()))?;
    let own_name = llvm
        .lib
        .file_name()
        .context("libLLVM path has no file name")?;
    for name in [Path::new("libLLVM.so"), Path::new(own_name)] {
        let link = libdir.join(name);
        let _ = fs::remove_file(&link);
        symlink(&llvm.lib, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    say(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {} (about a minute)",
        llvm.major
    ));
    run(
        Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{}", llvm.major),
            ])
            .arg("--root")
            .arg(&prefix)
            .env("LLVM_PREFIX", &prefix),
    )
    .context("building bpf-linker")?;
    if !bin.is_file() {
        bail!("bpf-linker was built but {} is missing", bin.display());
    }
    Ok(prefix.join("bin"))
}

/// Makes a plain `cargo build` find bpf-linker: a symlink in cargo's bin directory, unless a
/// bpf-linker of someone else's is already there.
fn link_into_cargo_bin(linker_bin_dir: &Path, say: &dyn Fn(&str)) {
    let Some(cargo_home) = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
    else {
        return;
    };
    let bin = cargo_home.join("bin");
    if !bin.is_dir() {
        return;
    }
    let link = bin.join("bpf-linker");
    let target = linker_bin_dir.join("bpf-linker");
    match fs::read_link(&link) {
        Ok(current) if current == target => return,
        Ok(current) if current.starts_with(tools_home()) => {
            let _ = fs::remove_file(&link);
        }
        Ok(_) => return,
        Err(_) if link.exists() => return,
        Err(_) => {}
    }
    if symlink(&target, &link).is_ok() {
        say(&format!(
            "linked {} -> {}",
            link.display(),
            target.display()
        ));
    }
}

fn ensure_debian_packages(say: &dyn Fn(&str)) -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(bin, _)| !has_command(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    say(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

pub fn has_command(name: &str) -> bool {
    env::var_os("PATH")
        .map(|p| env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(name).is_file())
}

fn ensure_bpffs(say: &dyn Fn(&str)) -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, at, kind) = (f.next(), f.next(), f.next());
        at == Some("/sys/fs/bpf") && kind == Some("bpf")
    }) {
        return Ok(());
    }
    say("mounting bpffs at /sys/fs/bpf");
    fs::create_dir_all("/sys/fs/bpf").ok();
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

/// Says plainly which kernel features are missing; loading decides for real.
fn check_kernel(say: &dyn Fn(&str)) {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let (major, minor) = {
        let mut it = release
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|s| s.parse::<u32>().ok());
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    };
    let mut missing = Vec::new();
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        missing.push("BTF (/sys/kernel/btf/vmlinux): needed for CO-RE and good verifier errors");
    }
    if (major, minor) < (6, 6) {
        missing.push("TCX (Linux 6.6+): meshclass falls back to clsact");
    }
    if (major, minor) < (5, 7) {
        missing.push("bpf_sk_assign at TC ingress (Linux 5.7+): REDIRECT will not work");
    }
    if missing.is_empty() {
        say(&format!(
            "kernel {release}: BTF, TCX, clsact and sk_assign available"
        ));
    } else {
        for m in missing {
            eprintln!("setup: kernel {release} lacks {m}");
        }
    }
}
