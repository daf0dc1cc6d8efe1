//! What the daemon keeps beside the pins so that `inspect` can decode the maps while the
//! daemon is down: the applied plan and settings, interfaces, routing, the last error.

use std::{fs, io, path::Path};

use serde::{Deserialize, Serialize};

use crate::{plan::Plan, settings::Settings};

/// The state file's contents.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The plan in force (its entry order gives the entry ids the writer reports).
    pub plan: Plan,
    /// Kernel entry id of each plan entry, same order as `plan.entries`.
    pub entry_ids: Vec<u32>,
    pub settings: Option<Settings>,
    /// Interfaces attached, with the mode used (`tcx` or `clsact`).
    pub interfaces: Vec<(String, String)>,
    /// fwmark rule and local route table installed for redirects.
    pub routing: Option<(u32, u32)>,
    /// The registry paths being enforced.
    pub registry: Vec<String>,
    /// Unix time of the last applied registry.
    pub applied_at: u64,
    /// Reloads applied and refused since the daemon started.
    pub reloads: u64,
    pub reload_errors: u64,
    /// The last registry error, if the last reload was refused (the previous one stays).
    pub last_error: Option<String>,
    /// DNS resolutions done and failed since the daemon started.
    pub dns_resolutions: u64,
    pub dns_failures: u64,
    /// Generation in force.
    pub generation: u32,
}

impl State {
    /// Reads the state file; a missing file is an empty state.
    pub fn read(path: &Path) -> io::Result<Self> {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the state file atomically (write a temporary file, then rename).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec(self).map_err(io::Error::other)?)?;
        fs::rename(&tmp, path)
    }
}
