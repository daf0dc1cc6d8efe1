//! `meshclass detach`: removes the programs, links, pins and routing that `run` left.

use std::path::Path;

use crate::{
    attach::{detach_clsact, detach_pinned_link, Attached, HOOKS},
    daemon::{
        pins::Pins,
        state::{current_netns, State},
    },
    netlink::Netlink,
};

/// Detaches and unpins everything under `pin_dir`: 0 done, 1 something could not be removed.
/// From another network namespace than the daemon's only with `any_netns`.
pub fn run(pin_dir: &Path, any_netns: bool) -> i32 {
    let pins = Pins::new(pin_dir);
    // Not under a running daemon: it would go on reporting interfaces nothing classifies.
    let lock = match pins.lock() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let state_file = pins.state_file();
    if let Some(why) = pins.not_in_bpffs() {
        lock.remove();
        eprintln!("error: {why}");
        return 1;
    }
    if !pins.dir.exists() && !state_file.exists() {
        lock.remove();
        eprintln!(
            "nothing is pinned at {}: nothing to detach",
            pins.dir.display()
        );
        return 0;
    }
    let state = State::read(&state_file).unwrap_or_default();
    // Interfaces and routing belong to the namespace the daemon ran in: from another, they
    // would be left behind while the pins that name them go.
    if let (Some(ran), Some(here)) = (state.netns, current_netns()) {
        if ran != here && !any_netns {
            lock.remove();
            eprintln!(
                "error: the dataplane pinned at {} was run in another network namespace \
                 (net:[{}]), which holds its interfaces' filters and its redirect routing: \
                 run `meshclass detach` there (`nsenter --net=/run/netns/NAME meshclass \
                 detach ...`), or, if that namespace is gone, add --any-netns",
                pins.dir.display(),
                ran.1
            );
            return 1;
        }
    }
    let mut failed = false;
    // TCX links: the pin holds the link; unpinning and dropping it detaches the program.
    if let Ok(rd) = std::fs::read_dir(pins.links()) {
        for e in rd.flatten() {
            // Detached at once, not when the kernel's deferred work drops the pin's reference:
            // traffic is unclassified when `detach` returns.
            if let Err(err) = detach_pinned_link(&e.path()) {
                eprintln!("error: detaching {}: {err}", e.path().display());
                failed = true;
            }
        }
    }
    // clsact filters live in the kernel until removed by name.
    for (iface, mode) in &state.interfaces {
        if mode == Attached::Clsact.as_str() {
            for (name, kind, _) in HOOKS {
                if let Err(err) = detach_clsact(iface, kind, name) {
                    eprintln!("warning: removing the {name} filter from {iface}: {err}");
                }
            }
        }
    }
    if let Some((mark, table)) = state.routing {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match rt {
            Ok(rt) => {
                let r: Result<(), crate::netlink::NetlinkError> = rt.block_on(async {
                    let nl = Netlink::connect()?;
                    nl.remove_redirect_routing(mark, table, false).await?;
                    nl.remove_redirect_routing(mark, table, true).await
                });
                if let Err(err) = r {
                    eprintln!("error: removing the redirect routing: {err}");
                    failed = true;
                }
            }
            Err(err) => {
                eprintln!("error: {err}");
                failed = true;
            }
        }
    }
    if pins.dir.exists() {
        if let Err(err) = std::fs::remove_dir_all(&pins.dir) {
            eprintln!("error: removing {}: {err}", pins.dir.display());
            failed = true;
        }
    }
    let _ = std::fs::remove_dir_all(pins.state_dir());
    if !pins.dir.exists() {
        lock.remove();
    }
    if failed {
        1
    } else {
        eprintln!("detached: {}", pins.dir.display());
        0
    }
}
