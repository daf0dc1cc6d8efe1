//! `cargo xtask demo`: builds the lab, runs meshclass on the example registry under ALLOW_ANY
//! and REGISTRY_ONLY, sends real traffic, and prints what Istio's semantics expect beside what
//! happened. Exits non-zero if anything differs. Cleans up everything it made.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use tests::{lab::Lab, scenarios};

fn meshclass_bin() -> PathBuf {
    std::env::var_os("MESHCLASS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/meshclass")
        })
}

fn progress(step: &str) {
    eprint!("\r\x1b[2Kbuilding the lab: {step} ...");
    let _ = std::io::stderr().flush();
}

fn show(lab: &Lab, bin: &Path, title: &str, args: &[&str]) {
    let pin = lab.pin_dir.display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--pin-dir", &pin]);
    match lab.meshclass(bin, &all) {
        Ok(o) => {
            println!("\n$ meshclass {}", args.join(" "));
            print!("{}", String::from_utf8_lossy(&o.stdout));
            if !o.status.success() {
                print!("{}", String::from_utf8_lossy(&o.stderr));
            }
        }
        Err(e) => println!("{title}: {e}"),
    }
}

fn main() -> ExitCode {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the demo builds network namespaces and loads BPF programs: run it as root");
        return ExitCode::from(2);
    }
    let bin = meshclass_bin();
    if !bin.exists() {
        eprintln!(
            "no meshclass binary at {} (cargo xtask demo builds it)",
            bin.display()
        );
        return ExitCode::from(2);
    }
    let registry = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab-registry");
    let mut lab = match Lab::new("demo", &progress) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("\nbuilding the lab failed: {e:#}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "\r\x1b[2Klab ready: namespaces {}, {}, {}",
        lab.workload.name(),
        lab.node.name(),
        lab.world.name()
    );
    let mut mismatches = 0;
    for (policy, registry_only) in [("ALLOW_ANY", false), ("REGISTRY_ONLY", true)] {
        println!("\n=== outbound policy {policy} (blocked: reject) ===\n");
        if let Err(e) = lab.start_daemon(
            &bin,
            &registry,
            &["--outbound-policy", policy, "--blocked", "reject"],
        ) {
            eprintln!("starting meshclass failed: {e:#}");
            return ExitCode::from(1);
        }
        let rows = scenarios::run(&lab, &bin, registry_only);
        print!("{}", scenarios::table(&rows));
        mismatches += rows.iter().filter(|r| !r.ok()).count();
        show(&lab, &bin, "inspect", &["inspect", "counters"]);
        if registry_only {
            show(&lab, &bin, "inspect", &["inspect", "entries"]);
            // The live program and the reference model, side by side.
            let explains: [&[&str]; 6] = [
                &["--dst", "10.77.130.11:80"],
                &["--dst", "10.77.160.66:9000"],
                &["--dst", "10.77.160.66:53", "--proto", "udp"],
                &["--dst", "10.77.160.66:443", "--sni", "api.external-svc.com"],
                &["--dst", "10.77.160.66:80", "--host", "api.external-svc.com"],
                &["--dst", "10.77.160.66:80", "--h2c", "api.external-svc.com"],
            ];
            for args in explains {
                show(&lab, &bin, "explain", &[&["explain"], args].concat());
            }
        }
        let _ = lab.stop_daemon(false);
        let pin = lab.pin_dir.display().to_string();
        let _ = lab.meshclass(&bin, &["detach", "--pin-dir", &pin]);
    }
    drop(lab);
    if mismatches == 0 {
        println!("\nevery connection behaved as Istio's semantics say; the lab is cleaned up");
        ExitCode::SUCCESS
    } else {
        println!("\n{mismatches} connection(s) did NOT behave as expected (see MISMATCH above)");
        ExitCode::from(1)
    }
}
