//! Where a running dataplane lives in bpffs, and the daemon's own state beside it.

use std::path::{Path, PathBuf};

/// Default pin directory.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/meshclass";
/// Directory of the daemon's state files, one subdirectory per pin directory.
pub const STATE_ROOT: &str = "/run/meshclass";

/// The lock of a pin directory ([`Pins::lock`]), released when dropped.
#[derive(Debug)]
pub struct PinLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl PinLock {
    /// Removes the lock file, then releases the lock: for when nothing stays pinned (a
    /// `detach`, a start that stopped before pinning). Removed while held, so that no other
    /// process holds a lock on a file that is gone while a third takes a new one.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why a pin directory's lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another meshclass process{} manages the dataplane pinned at {}: stop it first",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        .dir.display()
    )]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error("locking {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The paths of one pinned dataplane.
#[derive(Clone, Debug)]
pub struct Pins {
    pub dir: PathBuf,
}

impl Pins {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Why the pin directory cannot be in bpffs, when the nearest of it and its ancestors that
    /// exists is on another file system: pins are only found, and can only be made, in a bpffs
    /// mount. `ip netns exec` is the usual cause: it remounts /sys, without the bpffs that was
    /// mounted at /sys/fs/bpf.
    pub fn not_in_bpffs(&self) -> Option<String> {
        const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
        let there = self.dir.ancestors().find(|p| p.exists())?;
        let path = std::ffi::CString::new(there.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: a NUL-terminated path and a statfs the call fills.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
            return None;
        }
        #[allow(
            clippy::unnecessary_cast,
            reason = "f_type's type differs between C libraries"
        )]
        let bpffs = st.f_type as i64 == BPF_FS_MAGIC;
        (!bpffs).then(|| {
            format!(
                "{} is not in a bpffs mount ({} is on another file system): mount one \
                 (`mount -t bpf bpf /sys/fs/bpf`) or give a --pin-dir inside one; in a network \
                 namespace, enter it with `nsenter --net=/run/netns/NAME` rather than `ip netns \
                 exec`, which remounts /sys without bpffs",
                self.dir.display(),
                there.display()
            )
        })
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

    /// The interfaces that have a link pinned (either direction), by name.
    pub fn linked_ifaces(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.links())
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let f = e.file_name().to_string_lossy().into_owned();
                        let (_, iface) = f.split_once(':')?;
                        Some(unescape(iface))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.dedup();
        v
    }

    /// Whether a dataplane is pinned here.
    pub fn exists(&self) -> bool {
        self.map(classifier_common::maps::LAYOUT).exists()
    }

    /// For the commands that read a running dataplane: why none is found here, when none is
    /// ([`Self::not_in_bpffs`], or nothing pinned).
    pub fn missing(&self) -> Option<String> {
        if self.exists() {
            return None;
        }
        Some(self.not_in_bpffs().unwrap_or_else(|| {
            format!(
                "no meshclass dataplane is pinned at {} (is `meshclass run` started, or was \
                 --pin-dir another?)",
                self.dir.display()
            )
        }))
    }

    /// The daemon's state directory for this pin directory (not in bpffs: it holds files).
    pub fn state_dir(&self) -> PathBuf {
        Path::new(STATE_ROOT).join(self.tag())
    }

    /// The lock file of this pin directory: beside its state directory, which `detach`
    /// removes, so that the lock outlives it.
    pub fn lock_file(&self) -> PathBuf {
        Path::new(STATE_ROOT).join(format!("{}.lock", self.tag()))
    }

    /// Takes this pin directory's lock, held until the returned value is dropped (or the
    /// process ends): one daemon or `detach` at a time. Two daemons on one dataplane undo
    /// each other's settings at every reload; a `detach` under a running daemon leaves it
    /// reporting interfaces that nothing classifies any more.
    pub fn lock(&self) -> Result<PinLock, LockError> {
        use std::io::{Read as _, Seek as _, Write as _};
        use std::os::{fd::AsRawFd as _, unix::fs::MetadataExt as _};
        let path = self.lock_file();
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(STATE_ROOT).map_err(io)?;
        // A holder removes the file before it lets go (`PinLock::remove`): a lock taken on a
        // file opened before that removal is on a file no longer there, and another process
        // could take one on its successor. Such a lock is let go and taken again.
        let mut file = loop {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                    return Err(io(err));
                }
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    dir: self.dir.clone(),
                    pid: text.trim().parse().ok(),
                });
            }
            let held = file.metadata().map_err(io)?;
            match std::fs::metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => break file,
                _ => continue,
            }
        };
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(PinLock { _file: file, path })
    }

    /// The pin directory as one file name.
    fn tag(&self) -> String {
        self.dir
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
            .collect()
    }

    /// The state file.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }
}

/// An interface name from its escaped form in a link pin's name (`Pins::link`).
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_dir_outside_bpffs_is_named_with_the_way_out() {
        // /proc is never bpffs; a directory that does not exist is judged by its ancestor.
        let why = Pins::new("/proc/meshclass-nowhere/x")
            .not_in_bpffs()
            .unwrap();
        assert!(
            why.contains("/proc/meshclass-nowhere/x is not in a bpffs mount"),
            "{why}"
        );
        assert!(why.contains("(/proc is on another file system)"), "{why}");
        assert!(why.contains("nsenter --net="), "{why}");
        // bpffs, where the machine has it mounted (it has wherever the daemon runs).
        let bpffs = Path::new("/sys/fs/bpf");
        if Pins::new(bpffs).not_in_bpffs().is_none() {
            assert_eq!(Pins::new(bpffs.join("a/b")).not_in_bpffs(), None);
        }
    }

    #[test]
    fn link_pins_give_back_their_interface_names() {
        let dir = std::env::temp_dir().join(format!("meshclass-pins-test-{}", std::process::id()));
        let pins = Pins::new(&dir);
        std::fs::create_dir_all(pins.links()).unwrap();
        let names = ["eth0", "vlan.10", "a%2e", "x%", "lxc.1.2"];
        for n in names {
            for d in ["ingress", "egress"] {
                std::fs::write(pins.link(n, d), b"").unwrap();
            }
        }
        let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(pins.linked_ifaces(), want);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
