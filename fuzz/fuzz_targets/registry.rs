//! Any bytes, read as a registry file, then compiled: must never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshclass::{
    plan::CompileOptions,
    registry::{self, Limits, Loaded},
};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_file_bytes: 1 << 20,
        max_depth: 64,
        max_nodes: 100_000,
    };
    let mut loaded = Loaded::default();
    registry::load_bytes(&mut loaded, "fuzz.yaml", data, &limits);
    for d in &loaded.diagnostics {
        let _ = d.to_string();
    }
    let plan = registry::compile(&loaded.registry, CompileOptions::default());
    let _ = serde_json::to_string(&plan);
});
