//! Where a running dataplane lives in bpffs, and the daemon's own state beside it.

use std::path::{Path, PathBuf};

/// Default pin directory.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/meshclass";
/// Directory of the daemon's state files, one subdirectory per pin directory.
pub const STATE_ROOT: &str = "/run/meshclass";

/// The paths of one pinned dataplane.
#[derive(Clone, Debug)]
pub struct Pins {
    pub dir: PathBuf,
}

impl Pins {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Directory of the pinned maps.
    pub fn maps(&self) -> PathBuf {
        self.dir.join("maps")
    }

    /// The pin of map `name`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    /// Directory of the pinned programs.
    pub fn programs(&self) -> PathBuf {
        self.dir.join("programs")
    }

    /// The pin of program `name`.
    pub fn program(&self, name: &str) -> PathBuf {
        self.programs().join(name)
    }

    /// Directory of the pinned TCX links.
    pub fn links(&self) -> PathBuf {
        self.dir.join("links")
    }

    /// The pin of the link of `iface` in `direction` (`ingress` or `egress`). bpffs refuses
    /// names with a dot, which interface names may have: dots are written `%2e`, and `:` (never
    /// in an interface name) separates the direction.
    pub fn link(&self, iface: &str, direction: &str) -> PathBuf {
        let iface = iface.replace('%', "%25").replace('.', "%2e");
        self.links().join(format!("{direction}:{iface}"))
    }

    /// Whether a dataplane is pinned here.
    pub fn exists(&self) -> bool {
        self.map(classifier_common::maps::LAYOUT).exists()
    }

    /// The daemon's state directory for this pin directory (not in bpffs: it holds files).
    pub fn state_dir(&self) -> PathBuf {
        let tag: String = self
            .dir
            .to_string_lossy()
            .trim_matches('/')
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Path::new(STATE_ROOT).join(tag)
    }

    /// The state file.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }
}
