//! `meshclass validate PATH...`.

use std::path::PathBuf;

use crate::registry::{self, Limits, Severity};

/// Validates the registry at `paths`: 0 valid, 1 invalid, 2 usage or I/O error.
pub fn run(paths: &[PathBuf]) -> i32 {
    let loaded = match registry::load_paths(paths, &Limits::default()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    for d in &loaded.diagnostics {
        eprintln!("{}: {d}", d.severity);
    }
    let errors = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .count();
    if errors > 0 {
        eprintln!(
            "invalid: {errors} error(s), {warnings} warning(s) in {} valid resource(s)",
            loaded.registry.len()
        );
        1
    } else {
        println!(
            "valid: {} ServiceEntries, {} WorkloadEntries, {} Pods, {} Services; {warnings} warning(s)",
            loaded.registry.service_entries.len(),
            loaded.registry.workload_entries.len(),
            loaded.registry.pods.len(),
            loaded.registry.services.len()
        );
        0
    }
}
