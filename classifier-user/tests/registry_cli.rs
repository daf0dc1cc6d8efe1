//! The `validate` and `compile` commands: exit codes, stderr lines, JSON on stdout.

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

fn meshclass() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshclass"))
}

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/registry")
        .join(rel)
}

#[test]
fn validate_exit_codes() {
    let ok = meshclass()
        .arg("validate")
        .arg(fixture("examples"))
        .output()
        .expect("runs");
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");

    let bad = meshclass()
        .arg("validate")
        .arg(fixture("invalid"))
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error: ")).count(),
        3,
        "{stderr}"
    );

    let missing = meshclass()
        .arg("validate")
        .arg(fixture("does-not-exist.yaml"))
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn warnings_start_with_warning() {
    let mut child = meshclass()
        .args(["validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: pg}\nspec:\n  hosts: [pg.lab]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n")
        .expect("writes");
    let out = child.wait_with_output().expect("waits");
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.starts_with("warning: -:6:")),
        "{stderr}"
    );
}

#[test]
fn compile_json() {
    let out = meshclass()
        .args(["compile", "--json"])
        .arg(fixture("examples"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let kinds: Vec<&str> = plan["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["match"]["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"ip") && kinds.contains(&"sni") && kinds.contains(&"host"));
    assert_eq!(plan["services"].as_array().map(Vec::len), Some(2));

    let invalid = meshclass()
        .arg("compile")
        .arg(fixture("invalid"))
        .output()
        .expect("runs");
    assert_eq!(invalid.status.code(), Some(1));
}
