//! Reading and compiling the registry for the daemon, and noticing when its files change.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

use crate::{
    plan::{CompileOptions, Plan},
    registry::{self, Limits, Severity},
};

/// A registry that was refused: every error, one line each (file:line:col: resource: field).
#[derive(Debug, thiserror::Error)]
#[error("registry refused ({} error(s)): {}", errors.len(), errors.first().map(String::as_str).unwrap_or(""))]
pub struct Rejected {
    pub errors: Vec<String>,
}

/// Reads, validates and compiles the registry at `paths`; any error refuses it whole.
pub fn load_plan(paths: &[PathBuf], options: CompileOptions) -> Result<Plan, Rejected> {
    let loaded = registry::load_paths(paths, &Limits::default()).map_err(|e| Rejected {
        errors: vec![e.to_string()],
    })?;
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    if !errors.is_empty() {
        return Err(Rejected { errors });
    }
    // Notes (a skipped document of another kind or version) are logged here: a typo in an
    // apiVersion would otherwise take a resource out of enforcement without a word.
    for d in loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Note)
    {
        tracing::info!(note = %d, "registry");
    }
    let mut plan = registry::compile(&loaded.registry, options);
    let mut warnings: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.to_string())
        .collect();
    warnings.append(&mut plan.warnings);
    plan.warnings = warnings;
    Ok(plan)
}

/// What the registry files look like now: path → (modification time, size).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint(BTreeMap<PathBuf, (Option<SystemTime>, u64)>);

impl Fingerprint {
    /// Takes the fingerprint of every registry file under `paths` (`-` is never re-read).
    pub fn take(paths: &[PathBuf]) -> Self {
        let mut map = BTreeMap::new();
        for p in paths {
            if p.as_os_str() == "-" {
                continue;
            }
            walk(p, &mut map);
        }
        Self(map)
    }
}

fn walk(p: &Path, map: &mut BTreeMap<PathBuf, (Option<SystemTime>, u64)>) {
    let Ok(meta) = fs::metadata(p) else {
        map.insert(p.to_path_buf(), (None, 0));
        return;
    };
    if meta.is_dir() {
        map.insert(p.to_path_buf(), (meta.modified().ok(), 0));
        if let Ok(rd) = fs::read_dir(p) {
            let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            entries.sort();
            for e in entries {
                let is_yaml = e.extension().is_some_and(|x| x == "yaml" || x == "yml");
                if e.is_dir() || is_yaml {
                    walk(&e, map);
                }
            }
        }
    } else {
        map.insert(p.to_path_buf(), (meta.modified().ok(), meta.len()));
    }
}
