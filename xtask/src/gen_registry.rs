//! `cargo xtask gen-registry`: writes a deterministic synthetic registry for scale tests.
//!
//! The registry mixes exact service addresses (IPv4 and IPv6), CIDR blocks, TLS and HTTP names,
//! wildcard hosts, DNS names, and workload selectors with WorkloadEntries to select. Every
//! address is private lab space (10.0.0.0/8, fd00::/8) and every name ends in `.lab`.

use std::{
    fmt::Write as _,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// Resources per file.
const PER_FILE: usize = 5_000;
/// Namespaces the resources are spread over.
const NAMESPACES: usize = 100;

/// SplitMix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// The `n`-th address of 10.0.0.0/8 after `base` (an offset into the block).
fn v4(base: u32, n: u64) -> String {
    let x = (10u32 << 24) | (base.wrapping_add(n as u32) & 0x00ff_ffff);
    format!(
        "{}.{}.{}.{}",
        x >> 24,
        (x >> 16) & 255,
        (x >> 8) & 255,
        x & 255
    )
}

fn namespace(i: usize) -> String {
    format!("ns-{:03}", i % NAMESPACES)
}

struct Writer {
    dir: PathBuf,
    /// One file for everything (when `out` names a `.yaml` file).
    single: Option<fs::File>,
    prefix: &'static str,
    buf: String,
    in_file: usize,
    files: usize,
}

impl Writer {
    fn new(dir: &Path, single: Option<fs::File>, prefix: &'static str) -> Self {
        Writer {
            dir: dir.to_path_buf(),
            single,
            prefix,
            buf: String::new(),
            in_file: 0,
            files: 0,
        }
    }

    fn doc(&mut self, text: &str) -> Result<()> {
        self.buf.push_str("---\n");
        self.buf.push_str(text);
        self.in_file += 1;
        if self.in_file == PER_FILE {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.in_file == 0 {
            return Ok(());
        }
        if let Some(f) = &mut self.single {
            f.write_all(self.buf.as_bytes())
                .context("writing the registry")?;
            self.buf.clear();
            self.in_file = 0;
            return Ok(());
        }
        let path = self
            .dir
            .join(format!("{}-{:04}.yaml", self.prefix, self.files));
        let mut f =
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        f.write_all(self.buf.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        self.buf.clear();
        self.in_file = 0;
        self.files += 1;
        Ok(())
    }
}

/// Writes `services` ServiceEntries and `workloads` WorkloadEntries to `out` (a `.yaml` file, or a directory of files).
pub fn run(out: &Path, services: usize, workloads: usize, seed: u64) -> Result<()> {
    let single = matches!(
        out.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let file = if single {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        Some(fs::File::create(out).with_context(|| format!("creating {}", out.display()))?)
    } else {
        fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        None
    };
    let mut rng = Rng(seed);
    let mut ses = Writer::new(
        out,
        file.as_ref().map(fs::File::try_clone).transpose()?,
        "service-entries",
    );
    // Indexes of ServiceEntries that select workloads by `app` label.
    let mut selectors: Vec<usize> = Vec::new();
    let mut text = String::new();
    for i in 0..services {
        let ns = namespace(i);
        text.clear();
        let _ = write!(
            text,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se-{i}\n  namespace: {ns}\nspec:\n"
        );
        match rng.below(10) {
            0..=2 => {
                selectors.push(i);
                let _ = write!(
                    text,
                    "  hosts: [svc-{i}.{ns}.lab]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: HTTP, targetPort: 8080}}\n  - {{number: 9000, name: grpc, protocol: GRPC}}\n  workloadSelector:\n    labels: {{app: app-{i}}}\n"
                );
            }
            3 | 4 => {
                let six = if i % 4 == 0 {
                    format!(", 'fd00:1::{:x}:{:x}'", (i + 1) >> 16, (i + 1) & 0xffff)
                } else {
                    String::new()
                };
                let _ = write!(
                    text,
                    "  hosts: [db-{i}.{ns}.lab]\n  addresses: [{}{six}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 5432, name: tcp-pg, protocol: TCP}}\n  endpoints:\n  - address: {}\n",
                    v4(0x01_0000, i as u64),
                    v4(0x20_0000, i as u64)
                );
            }
            5 => {
                // Disjoint /28 blocks of 10.128.0.0/9.
                let base = 0x80_0000u32.wrapping_add((i as u32).wrapping_mul(16)) & 0x00ff_fff0;
                let _ = write!(
                    text,
                    "  hosts: [range-{i}.{ns}.lab]\n  addresses: ['{}/28']\n  ports:\n  - {{number: 443, name: tls, protocol: TLS}}\n",
                    v4(base, 0)
                );
            }
            6 | 7 => {
                let _ = write!(
                    text,
                    "  hosts: [api-{i}.ext-{}.lab]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports:\n  - {{number: 443, name: https, protocol: TLS}}\n",
                    i % 1000
                );
            }
            8 => {
                let _ = write!(
                    text,
                    "  hosts: ['*.zone-{i}.lab']\n  location: MESH_EXTERNAL\n  resolution: NONE\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  - {{number: 443, name: https, protocol: HTTPS}}\n"
                );
            }
            _ => {
                let _ = write!(
                    text,
                    "  hosts: [web-{i}.{ns}.lab]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports:\n  - {{number: 8080, name: http, protocol: HTTP}}\n  endpoints:\n  - address: origin-{i}.cdn.lab\n    ports: {{http: 80}}\n  - address: {}\n",
                    v4(0x30_0000, i as u64)
                );
            }
        }
        ses.doc(&text)?;
    }
    ses.flush()?;

    let mut wes = Writer::new(out, file, "workload-entries");
    for j in 0..workloads {
        // Each workload belongs to one selecting ServiceEntry, in its namespace.
        let (ns, app) = match selectors.len() {
            0 => (namespace(j), format!("unselected-{j}")),
            n => {
                let k = selectors[rng.below(n as u64) as usize];
                (namespace(k), format!("app-{k}"))
            }
        };
        let ports = if rng.below(3) == 0 {
            "\n  ports: {http: 18080}"
        } else {
            ""
        };
        text.clear();
        let _ = write!(
            text,
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: we-{j}\n  namespace: {ns}\n  labels: {{app: {app}}}\nspec:\n  address: {}\n  serviceAccount: {app}\n  labels: {{version: v{}}}{ports}\n",
            v4(0x40_0000, j as u64),
            j % 3
        );
        wes.doc(&text)?;
    }
    wes.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic() -> Result<()> {
        let base = std::env::temp_dir().join(format!("gen-registry-{}", std::process::id()));
        run(&base.join("a"), 50, 80, 7)?;
        run(&base.join("b"), 50, 80, 7)?;
        for name in ["service-entries-0000.yaml", "workload-entries-0000.yaml"] {
            let a = fs::read(base.join("a").join(name))?;
            let b = fs::read(base.join("b").join(name))?;
            assert_eq!(a, b, "{name}");
        }
        run(&base.join("one.yaml"), 50, 80, 7)?;
        let one = fs::read_to_string(base.join("one.yaml"))?;
        assert_eq!(one.matches("\n---\n").count() + 1, 130);
        fs::remove_dir_all(&base)?;
        Ok(())
    }
}
