//! The CLI documents itself: help for every command, shell completions, a man page.

use std::process::Command;

fn meshclass(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshclass"))
        .args(args)
        .output()
        .expect("running meshclass");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

const COMMANDS: &[&str] = &[
    "validate", "compile", "run", "detach", "inspect", "explain", "flows",
];

#[test]
fn every_command_has_help() {
    for c in COMMANDS {
        let (code, text) = meshclass(&[c, "--help"]);
        assert_eq!(code, 0, "{c} --help");
        assert!(text.contains("Usage: meshclass"), "{c}: {text}");
    }
    let (_, run) = meshclass(&["run", "--help"]);
    for flag in [
        "--registry",
        "--iface",
        "--outbound-policy",
        "--blocked",
        "--pin-dir",
        "--metrics-addr",
    ] {
        assert!(run.contains(flag), "run --help lists {flag}");
    }
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let (code, bash) = meshclass(&["completions", "bash"]);
    assert_eq!(code, 0);
    for c in COMMANDS {
        assert!(bash.contains(c), "bash completion knows {c}");
    }
    let (code, man) = meshclass(&["man"]);
    assert_eq!(code, 0);
    assert!(man.starts_with(".ie") || man.contains(".TH"), "a roff page");
    for c in COMMANDS {
        assert!(
            man.contains(&format!("meshclass\\-{c}")),
            "the man page documents {c}"
        );
    }
}
