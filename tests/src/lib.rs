//! Support for meshclass's privileged end-to-end tests: network namespaces joined by veth
//! pairs, built through netlink, named uniquely per test, removed on drop (on panic too).
//!
//! Tests only ever attach to interfaces inside namespaces they created, and use addresses in
//! 10.0.0.0/8 and fd00::/8 that exist only inside those namespaces.

use std::{
    ffi::CString,
    fs::File,
    net::IpAddr,
    os::fd::{AsRawFd as _, RawFd},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

pub mod baseline;
pub mod lab;
pub mod scenarios;
pub mod throughput;

use anyhow::{bail, Context as _, Result};
use meshclass::netlink::Netlink;

const NETNS_DIR: &str = "/run/netns";

/// Fails the test with a clear message unless it runs as root with BPF available.
pub fn require_privileges() {
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "this privileged test needs root (BPF, network namespaces): run `cargo xtask test` as root"
    );
}

/// A name unique to this process and call, at most `max` bytes, starting with `prefix`.
pub fn unique_name(prefix: &str, max: usize) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let tail = format!("{:x}{n:x}", pid & 0xfffff);
    let keep = max.saturating_sub(tail.len()).min(prefix.len());
    format!("{}{tail}", &prefix[..keep])
}

/// A network namespace made by the test, bound at /run/netns/NAME, removed on drop.
pub struct NetNs {
    name: String,
    path: PathBuf,
    file: File,
}

impl NetNs {
    /// Creates a namespace (with `lo` up) named after `tag` and unique to this test run.
    pub fn new(tag: &str) -> Result<Self> {
        let name = unique_name(&format!("mc-{tag}-"), 40);
        std::fs::create_dir_all(NETNS_DIR).context("creating /run/netns")?;
        let path = Path::new(NETNS_DIR).join(&name);
        File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let target = path.clone();
        let made = thread::spawn(move || -> Result<()> {
            // SAFETY: unshare affects only this short-lived thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
            }
            let src = CString::new("/proc/thread-self/ns/net")?;
            let dst = CString::new(target.as_os_str().as_encoded_bytes())?;
            // SAFETY: valid C strings; a bind mount of this thread's namespace file.
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                bail!(
                    "bind-mounting the namespace: {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?;
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let ns = Self { name, path, file };
        // Interfaces made here get addresses usable at once (no duplicate address detection).
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.block_on(|nl| async move { nl.set_up("lo").await.map_err(Into::into) })?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A file descriptor of the namespace.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` on a new thread inside the namespace and waits for it.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let fd = self.fd();
        thread::scope(|s| {
            s.spawn(move || {
                enter(fd);
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Starts `f` on a thread inside the namespace and returns its handle.
    pub fn spawn<F, R>(&self, f: F) -> thread::JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let fd = self.file.try_clone().expect("dup namespace fd");
        thread::spawn(move || {
            enter(fd.as_raw_fd());
            drop(fd);
            f()
        })
    }

    /// Runs an async netlink job inside the namespace on a single-threaded runtime.
    pub fn block_on<F, Fut, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce(Netlink) -> Fut + Send,
        Fut: std::future::Future<Output = Result<R>>,
        R: Send,
    {
        self.run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a runtime")?;
            rt.block_on(async move {
                let nl = Netlink::connect()?;
                f(nl).await
            })
        })
    }

    /// Sets a sysctl inside the namespace (`net.ipv6.conf.all.forwarding` style key).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        self.run(|| {
            std::fs::write(&path, value).with_context(|| format!("writing {}", path.display()))
        })
    }
}

fn enter(fd: RawFd) {
    // SAFETY: setns on this thread only, with a namespace fd we hold open.
    let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(c) = CString::new(self.path.as_os_str().as_encoded_bytes()) {
            // SAFETY: unmounting our own bind mount.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One end of a veth link: its namespace, interface name and addresses.
#[derive(Clone, Debug)]
pub struct End {
    pub ifname: String,
    pub addrs: Vec<(IpAddr, u8)>,
}

/// Joins `a` and `b` with a veth pair, gives each end its addresses and brings both up.
/// Returns the two ends' interface names.
pub fn link(
    a: &NetNs,
    a_addrs: &[(IpAddr, u8)],
    b: &NetNs,
    b_addrs: &[(IpAddr, u8)],
) -> Result<(End, End)> {
    link_named(
        a,
        &unique_name("va", 15),
        a_addrs,
        b,
        &unique_name("vb", 15),
        b_addrs,
    )
}

/// `link` with the ends named `an` (in `a`) and `bn` (in `b`).
pub fn link_named(
    a: &NetNs,
    an: &str,
    a_addrs: &[(IpAddr, u8)],
    b: &NetNs,
    bn: &str,
    b_addrs: &[(IpAddr, u8)],
) -> Result<(End, End)> {
    let (an, bn) = (an.to_string(), bn.to_string());
    let b_fd = b.fd();
    {
        let (an, bn) = (an.clone(), bn.clone());
        a.block_on(|nl| async move {
            nl.add_veth(&an, &bn).await?;
            nl.move_to_netns(&bn, b_fd).await?;
            Ok(())
        })?;
    }
    for (ns, name, addrs) in [(a, &an, a_addrs), (b, &bn, b_addrs)] {
        let name = name.clone();
        let v6 = addrs.iter().any(|(ip, _)| ip.is_ipv6());
        if v6 {
            // No duplicate address detection: addresses are usable at once.
            ns.sysctl(&format!("net.ipv6.conf.{name}.accept_dad"), "0")?;
        } else {
            // No router solicitations or MLD noise on a v4-only link.
            ns.sysctl(&format!("net.ipv6.conf.{name}.disable_ipv6"), "1")?;
        }
        let addrs = addrs.to_vec();
        ns.block_on(|nl| async move {
            for (ip, p) in addrs {
                nl.add_address(&name, ip, p).await?;
            }
            nl.set_up(&name).await?;
            Ok(())
        })?;
    }
    Ok((
        End {
            ifname: an,
            addrs: a_addrs.to_vec(),
        },
        End {
            ifname: bn,
            addrs: b_addrs.to_vec(),
        },
    ))
}

/// Adds a route inside `ns`.
pub fn route(ns: &NetNs, dst: IpAddr, prefix: u8, via: IpAddr) -> Result<()> {
    ns.block_on(|nl| async move {
        nl.add_route(dst, prefix, Some(via), None).await?;
        Ok(())
    })
}

/// Turns on forwarding inside `ns`.
pub fn forwarding(ns: &NetNs) -> Result<()> {
    ns.sysctl("net.ipv4.ip_forward", "1")?;
    ns.sysctl("net.ipv6.conf.all.forwarding", "1")
}

/// Turns transmit checksum offload of `ifname` (in `ns`) off: the stack then completes the
/// checksum of every partially checksummed packet it sends there in software, from what its
/// checksum field holds, as a NIC does in hardware, and the receiver verifies it (a veth left
/// as it is hands partially checksummed packets on unverified).
pub fn software_tx_checksums(ns: &NetNs, ifname: &str) -> Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_STXCSUM: u32 = 0x17;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    let name = ifname.as_bytes();
    anyhow::ensure!(name.len() < 16, "interface name {ifname} too long");
    ns.run(|| {
        let mut v = EthtoolValue {
            cmd: ETHTOOL_STXCSUM,
            data: 0,
        };
        let mut ifr = IfReq {
            name: [0; 16],
            data: &mut v,
            _pad: [0; 16],
        };
        ifr.name[..name.len()].copy_from_slice(name);
        // SAFETY: a socket of our own and an ioctl on a valid, initialized request.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            if fd < 0 {
                bail!("socket: {}", std::io::Error::last_os_error());
            }
            let r = libc::ioctl(fd, SIOCETHTOOL as _, &mut ifr);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if r != 0 {
                bail!("turning tx checksumming off on {ifname}: {err}");
            }
        }
        Ok(())
    })
}

/// Shorthand for an address literal in tests.
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

/// A per-test pin directory under /sys/fs/bpf, removed on drop.
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    /// Creates `/sys/fs/bpf/meshclass-test-<tag>-<unique>`.
    pub fn new(tag: &str) -> Result<Self> {
        let path =
            PathBuf::from("/sys/fs/bpf").join(unique_name(&format!("meshclass-test-{tag}-"), 60));
        Ok(Self { path })
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
