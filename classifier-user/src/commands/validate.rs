//! `meshclass validate PATH...`.

use std::path::PathBuf;

/// Validates the registry at `paths`: 0 valid, 1 invalid, 2 usage or I/O error.
pub fn run(paths: &[PathBuf]) -> i32 {
    let _ = paths;
    eprintln!("error: validate is not built yet");
    2
}
