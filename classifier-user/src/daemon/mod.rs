//! `meshclass run`: load or re-adopt the pinned dataplane, attach it, apply the registry, and
//! keep applying it as it changes. The dataplane never depends on the daemon being up.

pub mod dns;
pub mod ifaces;
pub mod metrics;
pub mod pins;
pub mod source;
pub mod state;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::programs::{tc::TcAttachType, SchedClassifier};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::{
    attach::{
        attach, detach_clsact, pinned_link_ifindex, AttachError, AttachMode, Attached, HOOKS,
    },
    dataplane::{Capacities, Dataplane, DataplaneError},
    netlink::{LinkChanges, Netlink, NetlinkError},
    plan::{CompileOptions, Verdict},
    settings::Settings,
};
use pins::Pins;
use source::{load_plan, Fingerprint, Rejected};
use state::State;

/// Default routing table (and rule priority) for redirected packets.
pub const DEFAULT_ROUTE_TABLE: u32 = 15001;

/// Everything `meshclass run` is told.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub registry: Vec<PathBuf>,
    pub ifaces: Vec<String>,
    pub settings: Settings,
    pub external: Verdict,
    /// [`CompileOptions::bind_names_to_dns`].
    pub bind_names_to_dns: bool,
    pub pin_dir: PathBuf,
    pub metrics_addr: Option<SocketAddr>,
    pub attach_mode: AttachMode,
    pub route_table: u32,
    pub poll_interval: Duration,
    pub capacities: Capacities,
    /// Whether the sizes were asked for (not all defaults): a daemon that re-adopts pinned
    /// maps of other sizes, which they keep, says so.
    pub sizes_given: bool,
    /// DNS server for names with resolution DNS; `None` reads /etc/resolv.conf.
    pub dns_server: Option<SocketAddr>,
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("the registry is invalid and no earlier registry is pinned to keep enforcing: {0}")]
    Registry(Rejected),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("program `{0}` is not in the embedded object")]
    NoProgram(&'static str),
    /// Loading with map sizes that were asked for failed (memory, the kernel's limits).
    #[error(
        "the dataplane could not be loaded with the map sizes asked for ({caps:?}; smaller \
         --max-* / --events-bytes, or none for the defaults)"
    )]
    Sizes {
        caps: Capacities,
        #[source]
        source: DataplaneError,
    },
    #[error(transparent)]
    Lock(#[from] pins::LockError),
    #[error("{0}")]
    NotInBpffs(String),
    #[error("{0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("link: {0}")]
    Link(#[from] aya::programs::links::LinkError),
    #[error("pinning {}", .0.display())]
    PinAt(PathBuf, #[source] aya::pin::PinError),
    #[error("pinning: {0}")]
    Pin(#[from] aya::pin::PinError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Shared between the reload loop and the metrics endpoint.
pub struct Shared {
    pub dataplane: Mutex<Dataplane>,
    pub state: Mutex<State>,
    pub pins: Pins,
    /// The registry as compiled, before DNS-learned addresses are added.
    pub base_plan: Mutex<Option<crate::plan::Plan>>,
    pub learned: Mutex<dns::Learned>,
}

/// Runs the daemon until SIGTERM or SIGINT; the pinned dataplane keeps classifying after.
pub async fn run(opts: RunOptions) -> Result<(), DaemonError> {
    let pins = Pins::new(&opts.pin_dir);
    // Held to the end: one daemon per dataplane.
    let lock = pins.lock()?;
    let r = run_locked(opts, pins.clone()).await;
    if r.is_err() && !pins.exists() {
        // A start that stopped before pinning leaves nothing, its lock file neither.
        lock.remove();
    }
    r
}

/// [`run`], with the pin directory's lock held.
async fn run_locked(opts: RunOptions, pins: Pins) -> Result<(), DaemonError> {
    info!(
        registry = ?opts.registry,
        interfaces = ?opts.ifaces,
        outbound_policy = %opts.settings.outbound_policy,
        blocked = %opts.settings.blocked,
        external = ?opts.external,
        proxy_port = opts.settings.proxy_port,
        proxy_mark = opts.settings.proxy_mark,
        pin_dir = %opts.pin_dir.display(),
        metrics_addr = ?opts.metrics_addr,
        "meshclass starting"
    );
    if !cfg!(target_arch = "x86_64") {
        warn!(
            arch = std::env::consts::ARCH,
            "the lock-free tables the program reads while user space or other CPUs write them \
             rely on x86-64 memory ordering (docs/decision.md §4): on this CPU a packet racing \
             a write may, rarely, read a slot being rewritten"
        );
    }
    // What can fail for a mistake in the command line fails before anything is loaded and
    // pinned: a start that stops leaves no dataplane behind.
    let nl = Netlink::connect()?;
    // A name (not a pattern) must be there at start: a mistyped one would classify nothing.
    let links = nl.links().await?;
    for spec in opts.ifaces.iter().filter(|s| !ifaces::is_pattern(s)) {
        if !links.iter().any(|(n, _)| n == spec) {
            return Err(NetlinkError::NoSuchLink(spec.clone()).into());
        }
    }
    let metrics_listener = match opts.metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(io(format!("serving metrics on {addr}")))?,
        ),
        None => None,
    };
    if let Some(why) = pins.not_in_bpffs() {
        return Err(DaemonError::NotInBpffs(why));
    }
    let compile_options = CompileOptions {
        external: opts.external,
        bind_names_to_dns: opts.bind_names_to_dns,
    };
    let first = load_plan(&opts.registry, compile_options);
    let adopting = pins.exists();
    if let Err(rejected) = &first {
        if !adopting {
            return Err(DaemonError::Registry(Rejected {
                errors: rejected.errors.clone(),
            }));
        }
        for e in &rejected.errors {
            error!(error = %e, "registry refused; the pinned registry stays in force");
        }
    }

    let mut dataplane = if adopting {
        info!(pin_dir = %pins.dir.display(), "re-adopting the pinned dataplane");
        let dp = Dataplane::from_pins(&pins.maps())?;
        let (pinned, asked) = (dp.capacities(), opts.capacities.as_loaded());
        if opts.sizes_given && pinned != asked {
            warn!(
                ?pinned,
                ?asked,
                "the pinned maps keep the sizes they were loaded with: --max-* and \
                 --events-bytes apply when the dataplane is loaded (`meshclass detach` first)"
            );
        }
        dp
    } else {
        let mut dp = Dataplane::load(&opts.capacities).map_err(|e| {
            if opts.sizes_given {
                DaemonError::Sizes {
                    caps: opts.capacities,
                    source: e,
                }
            } else {
                e.into()
            }
        })?;
        pin_fresh(&mut dp, &pins)?;
        dp
    };

    let mut state = State::read(&pins.state_file()).unwrap_or_default();
    if adopting {
        dataplane.writer_mut().adopt_services(&state.plan.services);
    } else {
        // Fresh maps count from 0: a previous run's totals would no longer add up, and hold
        // none of its flows.
        state.retired_hits.clear();
        state.forget_numberings();
    }
    state.registry = opts
        .registry
        .iter()
        .map(|p| p.display().to_string())
        .collect();

    // Link notifications: an interface that appears (or comes back) is attached at once.
    // Subscribed after the load (whose seconds would queue them unread) and before the look
    // that attaches, so that none falls between the two.
    let link_changes = match LinkChanges::subscribe() {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(error = %e, "no link notifications: interfaces are looked at every --poll-ms");
            None
        }
    };
    let links = nl.links().await?;
    forget_gone_pins(&pins, &links, &mut state);
    let mut attachments = Attachments::default();
    // At start an attach that fails for an interface given by name stops the daemon, as any
    // other setup error does (one a pattern matched may be going away: it is tried again).
    sync_interfaces(
        &pins,
        opts.ifaces.as_slice(),
        opts.attach_mode,
        &links,
        &mut attachments,
        &mut state,
        true,
    )?;
    for v6 in [false, true] {
        nl.install_redirect_routing(opts.settings.proxy_mark, opts.route_table, v6)
            .await?;
    }
    state.routing = Some((opts.settings.proxy_mark, opts.route_table));
    state.netns = state::current_netns();

    let mut base_plan = None;
    let mut learned = dns::Learned::default();
    match first {
        Ok(plan) => {
            // The addresses DNS gave the previous run stay in force until asked again.
            learned.seed(&state.plan, &plan, std::time::Instant::now());
            let effective = learned.apply_to(&plan);
            base_plan = Some(plan);
            apply(&mut dataplane, &mut state, effective, &opts.settings)?;
            state.reloads += 1;
            state.last_error = None;
        }
        Err(rejected) => {
            // The registry pinned stays in force, under the settings this start was given:
            // only the registry was refused, not the command line. Only from a state file that
            // says which settings the pins hold: without one the plan read is empty, and
            // applying it would wipe the pinned registry.
            if state.settings.is_some_and(|s| s != opts.settings) {
                let plan = state.plan.clone();
                apply(&mut dataplane, &mut state, plan, &opts.settings)?;
                info!("the pinned registry is enforced with this start's settings");
            }
            state.reload_errors += 1;
            state.last_error = Some(rejected.errors.join("\n"));
        }
    }
    state
        .write(&pins.state_file())
        .map_err(io("writing the state file"))?;

    let shared = Arc::new(Shared {
        dataplane: Mutex::new(dataplane),
        state: Mutex::new(state),
        pins: pins.clone(),
        base_plan: Mutex::new(base_plan),
        learned: Mutex::new(learned),
    });
    let dns_server = opts.dns_server.or_else(dns::system_resolver);
    match dns_server {
        Some(server) => info!(%server, "DNS names are resolved here"),
        None => {
            warn!("no DNS server (none given, none in /etc/resolv.conf): DNS names stay unresolved")
        }
    }
    if let (Some(addr), Some(listener)) = (opts.metrics_addr, metrics_listener) {
        metrics::serve(listener, shared.clone());
        info!(%addr, "metrics endpoint up");
    }

    // Interfaces are followed by a task of their own: a slow reload or DNS answer does not
    // hold up attaching a new one.
    tokio::spawn(follow_interfaces(
        shared.clone(),
        nl,
        opts.ifaces.clone(),
        opts.attach_mode,
        opts.poll_interval,
        attachments,
        link_changes,
    ));
    let mut hup = signal(SignalKind::hangup()).map_err(io("SIGHUP handler"))?;
    let mut term = signal(SignalKind::terminate()).map_err(io("SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io("SIGINT handler"))?;
    let mut tick = tokio::time::interval(opts.poll_interval);
    let mut seen = Fingerprint::take(&opts.registry);
    loop {
        let reason = tokio::select! {
            _ = hup.recv() => "SIGHUP",
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                if let Some(server) = dns_server {
                    let s = shared.clone();
                    let settings = opts.settings;
                    let _ = tokio::task::spawn_blocking(move || refresh_dns(&s, server, &settings)).await;
                }
                let now = Fingerprint::take(&opts.registry);
                if now == seen {
                    continue;
                }
                seen = now;
                "registry changed"
            }
        };
        info!(reason, "reloading the registry");
        // Off the runtime's thread, so that the interfaces' task goes on meanwhile.
        let (s, o) = (shared.clone(), opts.clone());
        let _ = tokio::task::spawn_blocking(move || reload(&s, &o, compile_options)).await;
    }
    info!("stopping; the pinned dataplane keeps classifying (`meshclass detach` removes it)");
    Ok(())
}

/// Resolves the names that are due and, when an address set changed, applies the registry with
/// the new addresses.
fn refresh_dns(shared: &Shared, server: SocketAddr, settings: &Settings) {
    let Some(base) = shared
        .base_plan
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    else {
        return;
    };
    let now = std::time::Instant::now();
    let mut learned = shared.learned.lock().unwrap_or_else(|p| p.into_inner());
    if !learned.due(&base, now) {
        return;
    }
    let changed = learned.refresh(&base, server, now);
    let effective = learned.apply_to(&base);
    let (resolutions, failures) = (learned.resolutions, learned.failures);
    drop(learned);
    let mut dp = shared.dataplane.lock().unwrap_or_else(|p| p.into_inner());
    let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    state.dns_resolutions = resolutions;
    state.dns_failures = failures;
    if changed {
        info!("DNS answers changed");
        // Not a reload: a refused reload's error stays shown.
        if let Err(e) = apply(&mut dp, &mut state, effective, settings) {
            error!(error = %e, "applying DNS-learned addresses failed");
        }
    }
    if let Err(e) = state.write(&shared.pins.state_file()) {
        warn!(error = %e, "writing the state file");
    }
}

fn reload(shared: &Shared, opts: &RunOptions, options: CompileOptions) {
    let result = load_plan(&opts.registry, options);
    let mut dp = shared.dataplane.lock().unwrap_or_else(|p| p.into_inner());
    let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(plan) => {
            let effective = shared
                .learned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .apply_to(&plan);
            match apply(&mut dp, &mut state, effective, &opts.settings) {
                Ok(()) => {
                    state.reloads += 1;
                    state.last_error = None;
                    // Only a registry in force is the base of DNS updates.
                    *shared.base_plan.lock().unwrap_or_else(|p| p.into_inner()) = Some(plan);
                }
                Err(e) => {
                    error!(error = %e, "applying the registry failed; the previous one stays in force");
                    state.reload_errors += 1;
                    state.last_error = Some(e.to_string());
                }
            }
        }
        Err(rejected) => {
            for e in &rejected.errors {
                error!(error = %e, "registry refused; the previous one stays in force");
            }
            state.reload_errors += 1;
            state.last_error = Some(rejected.errors.join("\n"));
        }
    }
    if let Err(e) = state.write(&shared.pins.state_file()) {
        warn!(error = %e, "writing the state file");
    }
}

/// Applies `plan` and records it as the one in force. The callers that apply a registry
/// (not only new DNS answers) count it as a reload.
fn apply(
    dp: &mut Dataplane,
    state: &mut State,
    plan: crate::plan::Plan,
    settings: &Settings,
) -> Result<(), DaemonError> {
    for w in &plan.warnings {
        warn!(warning = %w, "registry");
    }
    if plan.services.is_empty() {
        // An emptied directory (files moved away, a ConfigMap mounted empty) is a registry
        // like any other, and applied; said loudly, since it changes every verdict.
        warn!(
            outbound_policy = %settings.outbound_policy,
            "the registry has no services: every destination now takes the outbound policy \
             (under REGISTRY_ONLY, blocked)"
        );
    }
    let mut report = dp.apply(&plan, settings)?;
    let retired = std::mem::take(&mut report.retired);
    info!(
        services = plan.services.len(),
        entries = plan.entries.len(),
        dns_names = plan.dns.len(),
        report = ?report,
        "registry applied"
    );
    let ids = dp.entry_ids(&plan);
    state.replace_plan(plan, ids, &retired);
    state.settings = Some(*settings);
    state.applied_at = now_unix();
    Ok(())
}

/// Pins a freshly loaded dataplane's maps and programs.
fn pin_fresh(dp: &mut Dataplane, pins: &Pins) -> Result<(), DaemonError> {
    for dir in [pins.maps(), pins.programs(), pins.links()] {
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    dp.pin_maps(&pins.maps())?;
    let ebpf = dp.ebpf_mut();
    for (name, _, _) in HOOKS {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or(DaemonError::NoProgram(name))?
            .try_into()?;
        prog.pin(pins.program(name))
            .map_err(|e| DaemonError::PinAt(pins.program(name), e))?;
    }
    Ok(())
}

/// Interfaces attached (name to index), and those whose attach failed at an index (said once,
/// tried again at each look).
#[derive(Default)]
struct Attachments {
    known: BTreeMap<String, u32>,
    failed: BTreeMap<String, u32>,
}

/// The next link notification; never, without them.
async fn next_link_change(changes: &mut Option<LinkChanges>) {
    match changes {
        Some(c) => {
            if c.next().await.is_none() {
                warn!("link notifications ended: interfaces are looked at every --poll-ms");
                *changes = None;
            }
        }
        None => std::future::pending().await,
    }
}

/// Keeps the attachments in step with the namespace's interfaces (`sync_interfaces`): at each
/// link notification (those that came meanwhile taken as one) and each `poll`.
async fn follow_interfaces(
    shared: Arc<Shared>,
    nl: Netlink,
    specs: Vec<String>,
    mode: AttachMode,
    poll: Duration,
    mut at: Attachments,
    mut changes: Option<LinkChanges>,
) {
    let mut tick = tokio::time::interval(poll);
    loop {
        tokio::select! {
            _ = next_link_change(&mut changes) => {}
            _ = tick.tick() => {}
        }
        let links = match nl.links().await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "listing interfaces");
                continue;
            }
        };
        let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        match sync_interfaces(
            &shared.pins,
            &specs,
            mode,
            &links,
            &mut at,
            &mut state,
            false,
        ) {
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = state.write(&shared.pins.state_file()) {
                    warn!(error = %e, "writing the state file");
                }
            }
            Err(e) => error!(error = %e, "keeping the interfaces attached"),
        }
    }
}

/// At start: removes the link pins of interfaces gone or renamed while no daemon ran (no
/// interface has the name now; a renamed one that `--iface` matches is attached anew as
/// itself), and forgets the interfaces the state lists that are no longer there.
fn forget_gone_pins(pins: &Pins, links: &[(String, u32)], state: &mut State) {
    state
        .interfaces
        .retain(|(i, _)| links.iter().any(|(n, _)| n == i));
    for iface in pins.linked_ifaces() {
        if links.iter().any(|(n, _)| *n == iface) {
            continue;
        }
        match remove_link_pins(pins, &iface) {
            Ok(()) => info!(%iface, "interface gone while no daemon ran; its links are removed"),
            Err(e) => warn!(%iface, error = %e, "removing the links of an interface gone"),
        }
    }
}

/// Attaches to the interfaces of `links` that `specs` name or match and that are not attached
/// at their index yet, and forgets those gone, their link pins removed (docs in `ifaces`).
/// Returns whether anything changed; an attach that fails is the error if `strict`, else said
/// (once per index) and tried again at the next look.
fn sync_interfaces(
    pins: &Pins,
    specs: &[String],
    mode: AttachMode,
    links: &[(String, u32)],
    at: &mut Attachments,
    state: &mut State,
    strict: bool,
) -> Result<bool, DaemonError> {
    let now = ifaces::wanted(specs, links);
    let changes = ifaces::changes(&at.known, &now);
    let mut changed = false;
    for iface in changes.gone {
        // No interface has the name now. Its device is there under another name (renamed: it
        // is ours no longer, or, if the new name is wanted, attached anew as itself), or gone,
        // or the dump missed it: then its pinned link still holds a live index, and it stays.
        let index = at.known[&iface];
        let renamed_to = links.iter().find(|(_, i)| *i == index).map(|(n, _)| n);
        let renamed = renamed_to.is_some();
        if !renamed
            && matches!(pinned_link_ifindex(&pins.link(&iface, "ingress")), Some(i) if i != 0)
            && index_here(index)
        {
            continue;
        }
        if let Err(e) = remove_link_pins(pins, &iface) {
            warn!(%iface, error = %e, "removing the links of an interface gone; trying again");
            continue;
        }
        // A clsact filter has no pin: one on a device renamed out of `--iface` is removed
        // under its new name (one renamed to a wanted name is attached to again below).
        let clsact = state
            .interfaces
            .iter()
            .any(|(i, m)| *i == iface && m == Attached::Clsact.as_str());
        if let (true, Some(new_name)) = (clsact, renamed_to) {
            if !now.contains_key(new_name) {
                for (name, kind, _) in HOOKS {
                    if let Err(e) = detach_clsact(new_name, kind, name) {
                        warn!(iface = %new_name, error = %e, "removing a clsact filter");
                    }
                }
            }
        }
        at.known.remove(&iface);
        state.interfaces.retain(|(i, _)| *i != iface);
        changed = true;
        if renamed {
            info!(%iface, "interface renamed; its links are removed");
        } else {
            info!(%iface, "interface gone; its links are removed");
        }
    }
    at.failed.retain(|name, _| now.contains_key(name));
    for (iface, index) in changes.attach {
        match attach_iface(pins, &iface, index, mode) {
            Ok(used) => {
                at.known.insert(iface.clone(), index);
                at.failed.remove(&iface);
                if let Some(used) = used {
                    info!(%iface, ifindex = index, mode = ?used, "attached");
                    state.interfaces.retain(|(i, _)| *i != iface);
                    state.interfaces.push((iface.clone(), used.as_str().into()));
                    changed = true;
                } else {
                    info!(%iface, ifindex = index, "already attached (pinned link)");
                    if !state.interfaces.iter().any(|(i, _)| *i == iface) {
                        state
                            .interfaces
                            .push((iface.clone(), Attached::Tcx.as_str().into()));
                        changed = true;
                    }
                }
            }
            Err(e) if strict && specs.contains(&iface) => return Err(e),
            Err(e) => {
                // Not attached at this index, whatever it was at another.
                if at.known.remove(&iface).is_some() {
                    state.interfaces.retain(|(i, _)| *i != iface);
                    changed = true;
                }
                if at.failed.insert(iface.clone(), index) != Some(index) {
                    state.attach_failures += 1;
                    changed = true;
                    error!(%iface, ifindex = index, error = %e, "attaching failed; trying again at the next look");
                }
            }
        }
    }
    let unattached: Vec<String> = at.failed.keys().cloned().collect();
    if state.unattached != unattached {
        state.unattached = unattached;
        changed = true;
    }
    Ok(changed)
}

/// Whether this namespace has an interface of index `index` (a dump may miss one that is being
/// changed; a device moved to another namespace is not here).
fn index_here(index: u32) -> bool {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes `if_indextoname` may write.
    !unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) }.is_null()
}

/// Removes the link pins of `iface` (not there: nothing to do).
fn remove_link_pins(pins: &Pins, iface: &str) -> Result<(), DaemonError> {
    for (_, _, dir) in HOOKS {
        let p = pins.link(iface, dir);
        crate::attach::detach_pinned_link(&p).map_err(io(format!("removing {}", p.display())))?;
    }
    Ok(())
}

/// Attaches both programs to `iface` (index `ifindex`) unless pinned links already hold them
/// there. Links pinned for a device gone (or another that had the name), or for one direction
/// only, are replaced. If the second program cannot be attached the first is detached again,
/// so that the next try starts clean. Returns the mode used, or `None` when it was attached
/// already.
fn attach_iface(
    pins: &Pins,
    iface: &str,
    ifindex: u32,
    mode: AttachMode,
) -> Result<Option<Attached>, DaemonError> {
    let [ingress_hook, egress_hook] = HOOKS;
    let (ingress, egress) = (
        pins.link(iface, ingress_hook.2),
        pins.link(iface, egress_hook.2),
    );
    if ingress.exists() || egress.exists() {
        let held = (pinned_link_ifindex(&ingress), pinned_link_ifindex(&egress));
        if held == (Some(ifindex), Some(ifindex)) {
            return Ok(None);
        }
        info!(%iface, ifindex, pinned = ?held, "the pinned links are not both of this device; attaching anew");
        remove_link_pins(pins, iface)?;
    }
    let used = attach_one(pins, iface, ingress_hook, mode)?;
    if let Err(e) = attach_one(pins, iface, egress_hook, mode) {
        match used {
            Attached::Tcx => {
                let _ = remove_link_pins(pins, iface);
            }
            Attached::Clsact => {
                let _ = detach_clsact(iface, ingress_hook.1, ingress_hook.0);
            }
        }
        return Err(e);
    }
    Ok(Some(used))
}

/// Attaches program `name` to `iface` at hook `kind` (one of `HOOKS`); a TCX link is pinned.
fn attach_one(
    pins: &Pins,
    iface: &str,
    (name, kind, dir): (&str, TcAttachType, &str),
    mode: AttachMode,
) -> Result<Attached, DaemonError> {
    let mut prog = SchedClassifier::from_pin(pins.program(name))?;
    let (id, used) = attach(&mut prog, iface, kind, mode)?;
    let link = prog.take_link(id)?;
    match used {
        Attached::Tcx => {
            let fd: aya::programs::links::FdLink = link.try_into()?;
            fd.pin(pins.link(iface, dir))
                .map_err(|e| DaemonError::PinAt(pins.link(iface, dir), e))?;
        }
        // A clsact filter stays in the kernel until removed; `detach` removes it.
        Attached::Clsact => std::mem::forget(link),
    }
    Ok(used)
}
