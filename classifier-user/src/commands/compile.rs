//! `meshclass compile PATH... [--json]`.

use std::path::PathBuf;

use crate::plan::CompileOptions;

/// Compiles the registry at `paths` and prints the plan: 0 ok, 1 invalid, 2 usage or I/O error.
pub fn run(paths: &[PathBuf], json: bool, options: CompileOptions) -> i32 {
    let _ = (paths, json, options);
    eprintln!("error: compile is not built yet");
    2
}
