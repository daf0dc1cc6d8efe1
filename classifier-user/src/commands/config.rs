//! `meshclass run --config FILE`: the same settings as the flags, in YAML. Flags win.
//!
//! ```yaml
//! registry: [/etc/meshclass/registry]
//! iface: [veth1234]
//! outbound-policy: REGISTRY_ONLY
//! blocked: reject
//! metrics-addr: 127.0.0.1:9464
//! ```

use std::{ffi::OsString, path::Path};

use crate::registry::yaml::{parse_documents, Limits, Node, Value};

/// Keys a config file may hold: the long flags of `run` that take a value.
const VALUE_KEYS: &[&str] = &[
    "registry",
    "iface",
    "outbound-policy",
    "blocked",
    "external",
    "proxy-port",
    "proxy-mark",
    "route-table",
    "pin-dir",
    "metrics-addr",
    "dns-server",
    "attach",
    "poll-ms",
    "max-exact",
    "max-cidr",
    "max-names",
    "max-flows",
    "max-pending",
    "max-entry-ids",
    "events-bytes",
];
/// Keys that are switches.
const SWITCH_KEYS: &[&str] = &[
    "events-all",
    "ech-outer-sni",
    "bind-names-to-dns",
    "json-logs",
];

fn scalar(n: &Node) -> Option<String> {
    match &n.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

/// Reads `path` into `run` arguments, in the order the file gives them; the values of the keys
/// in `overridden` (flags given on the command line, which win) are not checked.
pub fn args_from_file(
    path: &Path,
    overridden: &[String],
) -> Result<Vec<(String, Vec<String>)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut docs = Vec::new();
    parse_documents(&text, &Limits::default(), 0, |d| docs.push(d));
    let root = match docs.into_iter().next() {
        None => return Ok(Vec::new()),
        Some(Err((mark, e))) => {
            return Err(format!(
                "{}:{}:{}: {e}",
                path.display(),
                mark.line,
                mark.col
            ))
        }
        Some(Ok(root)) => root,
    };
    let Value::Map(entries) = &root.value else {
        return Err(format!(
            "{}: a config file is a mapping of flag names to values",
            path.display()
        ));
    };
    use clap::Args as _;
    // `run`'s flags alone, none required: one at a time, each value is parsed as given.
    let cmd = crate::commands::run::RunArgs::augment_args(clap::Command::new("run"))
        .mut_args(|a| a.required(false));
    let mut out = Vec::new();
    for (k, v) in entries {
        let at = format!("{}:{}:{}", path.display(), k.mark.line, k.mark.col);
        let key = scalar(k).ok_or_else(|| format!("{at}: a key must be a flag name"))?;
        let list = matches!(v.value, Value::Seq(_));
        let nodes: Vec<&Node> = match &v.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![v],
        };
        let mut values = Vec::new();
        for n in &nodes {
            let at = format!("{}:{}:{}", path.display(), n.mark.line, n.mark.col);
            let value = scalar(n).ok_or_else(|| {
                if list {
                    format!("{at}: {key}: list items must be scalars")
                } else {
                    format!("{at}: {key}: expected a value")
                }
            })?;
            // Checked here as the flag would be, so that the error names the file and line.
            if VALUE_KEYS.contains(&key.as_str()) && !overridden.contains(&key) {
                let flag = format!("--{key}");
                if let Err(e) =
                    cmd.clone()
                        .try_get_matches_from(["run", flag.as_str(), value.as_str()])
                {
                    let msg = e.to_string();
                    let first = msg.lines().next().unwrap_or_default();
                    return Err(format!(
                        "{at}: {key}: {}",
                        first.strip_prefix("error: ").unwrap_or(first)
                    ));
                }
            }
            values.push(value);
        }
        if VALUE_KEYS.contains(&key.as_str()) {
            let repeatable = cmd.get_arguments().any(|a| {
                a.get_long() == Some(key.as_str())
                    && matches!(a.get_action(), clap::ArgAction::Append)
            });
            if list && !repeatable {
                return Err(format!("{at}: {key}: takes one value, not a list"));
            }
            out.push((key, values));
        } else if SWITCH_KEYS.contains(&key.as_str()) {
            if values.iter().any(|v| v == "true") {
                out.push((key, Vec::new()));
            }
        } else {
            return Err(format!("{at}: `{key}` is not a setting of meshclass run"));
        }
    }
    Ok(out)
}

/// Rewrites the process arguments of `meshclass run ... --config FILE ...` so that the file's
/// settings come first and every flag given on the command line replaces the file's value.
pub fn expand(argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    if argv.get(1).and_then(|a| a.to_str()) != Some("run") {
        return Ok(argv);
    }
    let mut config = None;
    let mut rest = Vec::new();
    let mut it = argv.iter().skip(2);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            config = it.next().cloned();
        } else if let Some(v) = s.strip_prefix("--config=") {
            config = Some(OsString::from(v));
        } else {
            rest.push(a.clone());
        }
    }
    let Some(config) = config else {
        return Ok(argv);
    };
    let given: Vec<String> = rest
        .iter()
        .filter_map(|a| a.to_str())
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .collect();
    let mut out = vec![argv[0].clone(), OsString::from("run")];
    for (key, values) in args_from_file(Path::new(&config), &given)? {
        if given.contains(&key) {
            continue;
        }
        if values.is_empty() {
            out.push(OsString::from(format!("--{key}")));
        }
        for v in values {
            out.push(OsString::from(format!("--{key}")));
            out.push(OsString::from(v));
        }
    }
    out.extend(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of `run` (but `--config` itself) can be set from the file, as the switch or
    /// value it is.
    #[test]
    fn every_run_flag_is_a_key() {
        use clap::{Args, Command};
        let cmd = crate::commands::run::RunArgs::augment_args(Command::new("run"));
        let mut flags = 0;
        for a in cmd.get_arguments() {
            let Some(long) = a.get_long() else { continue };
            if long == "config" {
                continue;
            }
            flags += 1;
            let switch = matches!(a.get_action(), clap::ArgAction::SetTrue);
            let keys = if switch { SWITCH_KEYS } else { VALUE_KEYS };
            assert!(keys.contains(&long), "--{long} is not a config key");
        }
        assert_eq!(flags, VALUE_KEYS.len() + SWITCH_KEYS.len());
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("meshclass-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yaml");
        std::fs::write(
            &f,
            "registry: [/a, /b]\niface: eth9\noutbound-policy: REGISTRY_ONLY\nevents-all: true\n",
        )
        .unwrap();
        let argv: Vec<OsString> = [
            "meshclass",
            "run",
            "--config",
            f.to_str().unwrap(),
            "--iface",
            "veth0",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let out: Vec<String> = expand(argv)
            .unwrap()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            out,
            [
                "meshclass",
                "run",
                "--registry",
                "/a",
                "--registry",
                "/b",
                "--outbound-policy",
                "REGISTRY_ONLY",
                "--events-all",
                "--iface",
                "veth0"
            ]
        );
        // The error reading a file of `text`.
        let error_of = |text: &str| {
            std::fs::write(&f, text).unwrap();
            args_from_file(&f, &[]).unwrap_err()
        };
        let err = error_of("registy: /a\n");
        assert!(err.contains(":1:1:") && err.contains("registy"), "{err}");
        // Values are checked as the flags would be, at their line.
        let err = error_of("registry: /a\npoll-ms: fast\n");
        assert!(
            err.contains("c.yaml:2:10: poll-ms: invalid value 'fast'"),
            "{err}"
        );
        let err = error_of("outbound-policy: REGISTRY_ONL\n");
        assert!(
            err.contains("c.yaml:1:18: outbound-policy: ") && err.contains("REGISTRY_ONL"),
            "{err}"
        );
        let err = error_of("blocked: [drop]\n");
        assert!(
            err.contains("c.yaml:1:1: blocked: takes one value, not a list"),
            "{err}"
        );
        std::fs::write(&f, "iface: [a, b]\nblocked: drop\n").unwrap();
        assert!(args_from_file(&f, &[]).is_ok());
        // A value a flag replaces is not checked: the flag wins.
        std::fs::write(&f, "poll-ms: fast\n").unwrap();
        assert!(args_from_file(&f, &["poll-ms".into()]).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
