//! Builds the eBPF program (classifier-ebpf) for the BPF target and leaves it in OUT_DIR, where
//! `crate::dataplane` embeds it.

use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR not set")?;
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // Builds that never load the program (docs, quick host-only checks) get an empty object;
        // loading it fails with a clear error.
        let path = std::path::Path::new(&out_dir).join("classifier");
        std::fs::write(&path, b"").with_context(|| format!("writing {}", path.display()))?;
        return Ok(());
    }
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("classifier-user has no parent directory"))?
        .join("classifier-ebpf");
    let root = root.to_str().context("non-UTF-8 path")?;
    println!("cargo:rerun-if-changed=../classifier-common/src");
    aya_build::build_ebpf(
        [Package {
            name: "classifier-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context(
        "building the eBPF program failed; run `cargo xtask setup` (it installs bpf-linker and the \
         nightly's rust-src), then look for `error` among the cargo:warning lines above",
    )
}
