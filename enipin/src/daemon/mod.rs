//! `enipin watch`: keeps the desired state installed.
//!
//! Other tools remove rules they did not create (systemd-networkd and `netplan apply` drop
//! "foreign" rules, nm-cloud-setup wiped the VPC CNI's), ENIs and secondary addresses come and go
//! at runtime. The watcher subscribes to rtnetlink's link, address, rule, route and netconf
//! groups in its namespace ([`crate::kernel::events`]: a forwarding change, which decides the
//! datapath's next hops, sends only a netconf message), and on the first event of a burst (then
//! once more for the rest of it: see [`crate::daemon::pace`]), or every `--interval` as a safety
//! net, runs the same plan/apply as `enipin attach` ([`crate::engine::apply::reconcile`]): discover, diff, apply
//! only the difference. Every reconcile re-reads the kernel's state, so a lost event (a socket
//! overrun) costs nothing but a resync. The kernel announces enipin's own changes too: a rule or
//! route it added or just removed, an rp_filter it wrote, needs no reconcile
//! ([`crate::daemon::report::describe`]), so a restore is one reconcile, not one and then another
//! that finds nothing to do.
//!
//! Each reconcile that changed something is one log line ([`crate::daemon::report`]): why, how
//! long, counts by kind and a few of the changes. What stays true across reconciles (an
//! interface left out, of `--interfaces` or of the connmark mask) is said when it changes.
//!
//! A reconcile that fails (discovery, a conflict, a step) changes nothing, is logged, and is
//! retried with exponential backoff: an error is never read as "nothing to manage".
//!
//! What sends no netlink event is checked every `check` (250 ms): the datapath's pins and links
//! ([`datapath::missing`]) and the managed interfaces' sysctls. Anything missing or reverted starts
//! a reconcile at once, so a removed link pin or pin directory, or a sysctl set back by another
//! tool, is restored within about 300 ms instead of at the next periodic pass. Between
//! reconciles the watcher holds its TCX links open ([`datapath::HeldLinks`]): a removed pin does not
//! detach the link, and is pinned back before the reconcile.
//!
//! With `--connmark`, nf_tables' change notifications for enipin's table start a reconcile too
//! ([`crate::kernel::nft_events`]): nft sends no rtnetlink event.
//!
//! SIGHUP reads the config file again (the same path, the same flags over it) and asks for a
//! full reconcile: what the new settings select is installed through the same plan, what they
//! no longer select is removed. A bad file is logged and the running settings kept.
//!
//! With `--metadata`, the first reconcile asks the metadata service; from then on a task of its
//! own asks every [`Pacing::metadata`] (it sends no event), and about a new ENI at once
//! ([`crate::metadata::Refresher`]). A reconcile plans with the last view it sent, so a repair
//! never waits for the service; a view that would plan differently starts one. An ENI whose
//! metadata is unknown keeps its last known metadata for as long as the service fails
//! ([`crate::metadata::Tracker`]).
//!
//! SIGTERM / SIGINT stop the watcher between reconciles and leave the state installed, as
//! `attach` does; `enipin detach` removes it.

mod metrics;
mod pace;
mod report;
mod watcher;

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::sleep_until,
};

use tracing::{debug, error, info, warn};

use watcher::{Metadata, Trigger, Watcher};

use crate::{
    daemon::metrics::Telemetry,
    daemon::report::{Reasons, changed_line},
    datapath,
    engine::apply::Reconciled,
    engine::{snapshot::Snapshot, state},
    kernel::caps::{self, Cap},
    kernel::nft_events::NftEvents,
    kernel::sysctl,
    model::connmark::LeftOutSaid,
    model::{ManagedInterface, discovery::Discovery, fmt_mac},
    observe::http,
    routing::select,
    settings::config::{Config, Paths},
    settings::{Loader, Settings},
};

/// How the watcher paces itself.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    /// Reconcile anyway this long after the last one (a safety net for missed events).
    pub(crate) interval: Duration,
    /// The quiet period that makes the first event of a burst reconcile at once (none since the
    /// last reconcile ended), and the one the follow-up for the rest of a burst waits for.
    pub(crate) debounce: Duration,
    /// Upper bound on the follow-up's wait for a quiet period under a constant stream of events.
    pub(crate) max_delay: Duration,
    /// First retry delay after a failed reconcile; doubles up to `max_backoff`.
    pub backoff: Duration,
    /// The longest retry delay after failed reconciles.
    pub max_backoff: Duration,
    /// Between the cheap checks of what sends no event (datapath pins and links, sysctls).
    pub check: Duration,
    /// With `--metadata`: a refresh of every ENI's metadata this often, since the metadata
    /// service sends no event.
    pub metadata: Duration,
}

impl Pacing {
    /// Reconciles at least every `interval`; the quiet period and backoff are fixed.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            // 400 addresses from one `ip -batch` are announced within a few ms of each other.
            debounce: Duration::from_millis(10),
            max_delay: Duration::from_secs(2),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            // Restored within a second (check + reconcile, about 50 ms); each check costs a few
            // stats, a TCX query per managed interface and one link request per interface (its
            // sysctls) and a read of all/rp_filter.
            check: Duration::from_millis(250),
            metadata: Duration::from_secs(crate::settings::config::DEFAULT_METADATA_INTERVAL),
        }
    }
}

/// nftables' change notifications, when connmark keeps a table (`None` without it, or when the
/// kernel refuses them: then a changed table waits for the periodic reconcile, as it is said).
fn nft_events(cfg: &Config) -> Option<NftEvents> {
    if !cfg.connmark {
        return None;
    }
    NftEvents::subscribe()
        .map_err(|e| {
            warn!(
                "{e:#}; a change to enipin's nftables table is seen at the periodic reconcile only"
            )
        })
        .ok()
}

/// The next changes to enipin's nftables table; never ready without a subscription.
async fn next_nft(nft: &mut Option<NftEvents>) -> Result<Vec<&'static str>> {
    match nft {
        Some(n) => n.next().await,
        None => std::future::pending().await,
    }
}

/// Passes the datapath's aya-log records (`--debug`) on as events of the `datapath` target, at
/// their own level.
struct DatapathLog;

impl log::Log for DatapathLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let args = record.args();
        match record.level() {
            log::Level::Error => error!(target: "datapath", "datapath: {args}"),
            log::Level::Warn => warn!(target: "datapath", "datapath: {args}"),
            log::Level::Info => info!(target: "datapath", "datapath: {args}"),
            log::Level::Debug => debug!(target: "datapath", "datapath: {args}"),
            log::Level::Trace => tracing::trace!(target: "datapath", "datapath: {args}"),
        }
    }
    fn flush(&self) {}
}

/// The reader of the pinned classifier's log ring buffer, and the program it belongs to.
struct Logger {
    prog_id: u32,
    fd: AsyncFd<aya_log::EbpfLogger<DatapathLog>>,
}

/// Follows the pinned program: a reconcile may have loaded a new one (or removed it).
fn follow_program(logger: &mut Option<Logger>, paths: &Paths) {
    let id = match datapath::pinned_program(paths) {
        Ok(p) => p.map(|p| p.id),
        Err(e) => {
            warn!("--debug: {e:#}");
            return;
        }
    };
    if logger.as_ref().map(|l| l.prog_id) == id {
        return;
    }
    *logger = None;
    let Some(prog_id) = id else { return };
    let opened = aya_log::EbpfLogger::init_from_id_with_logger(prog_id, DatapathLog)
        .context("opening the datapath's log ring buffer")
        .and_then(|l| {
            // SAFETY: the ring buffer's fd is owned by `l`, which the AsyncFd owns from now on and
            // which never changes its descriptor.
            unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) }.map_err(|e| {
                anyhow::anyhow!(
                    "registering the log ring buffer: {}",
                    std::io::Error::from(e)
                )
            })
        });
    match opened {
        Ok(fd) => {
            info!("reading the datapath's log (program id {prog_id})");
            *logger = Some(Logger { prog_id, fd });
        }
        Err(e) => warn!("--debug: {e:#}"),
    }
}

/// Waits for log records and prints them; never returns without a logger.
async fn drain(logger: &mut Option<Logger>) {
    let Some(l) = logger else {
        return std::future::pending().await;
    };
    match l.fd.readable_mut().await {
        Ok(mut guard) => {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
        Err(e) => {
            warn!("reading the datapath's log: {e}");
            *logger = None;
        }
    }
}

/// What the watcher last said of what stays true across reconciles, so it is said once.
#[derive(Default)]
struct Said {
    /// Why nothing is managed.
    idle: Option<String>,
    /// The interfaces named in `--interfaces` that are left out.
    left_out: Vec<(String, String)>,
    /// The managed interfaces connmark leaves out.
    connmark: LeftOutSaid,
    /// The interfaces without an address whose grace holds the selection.
    blinking: Vec<String>,
}

/// The log line of one reconcile: one line when it changed something, nothing otherwise (but
/// once when the watcher becomes idle: an operator should see why it manages nothing).
fn report(r: &Reconciled, why: &Reasons, took: Duration, said: &mut Said) {
    let Said {
        idle,
        left_out,
        connmark,
        blinking,
    } = said;
    if r.blinking != *blinking {
        say_blinking(&r.blinking, blinking);
        blinking.clone_from(&r.blinking);
    }
    for (warning, line) in connmark.update(&r.connmark_left_out, &r.managed) {
        if warning {
            warn!("{line}");
        } else {
            info!("{line}");
        }
    }
    // A named interface that went away (an ENI detached) or came back: said once, not per pass.
    // Coming back, an ENI goes through "unknown", "down" and "no address" within tens of ms
    // (link created, set up, addressed), each seen by a prompt reconcile: a new reason for an
    // interface already left out is only a debug line.
    if r.left_out != *left_out {
        for (sel, note) in r.left_out.iter().filter(|n| !left_out.contains(n)) {
            if left_out.iter().any(|(s, _)| s == sel) {
                debug!("still left out: {note}");
            } else {
                info!("left out until it is back: {note}");
            }
        }
        if r.left_out.is_empty() {
            info!("every interface named in --interfaces is back");
        }
        left_out.clone_from(&r.left_out);
    }
    if !r.changes.is_empty() {
        info!("{}", changed_line(r, why, took.as_millis()));
    } else if r.idle.is_some() && r.idle != *idle {
        info!(
            "nothing to manage: {}",
            r.idle.as_deref().unwrap_or_default()
        );
    }
    idle.clone_from(&r.idle);
}

/// Says when interfaces start or stop holding the selection without an address (`was`: the
/// last pass's).
fn say_blinking(now: &[String], was: &[String]) {
    let secs = crate::routing::grace::GRACE.as_secs_f32();
    for name in now.iter().filter(|n| !was.contains(n)) {
        info!(
            "{name} has no address: everything managed stays for up to {secs}s (an address \
             removed and added back, as networkd's reconfigure does, changes nothing else)"
        );
    }
    if now.is_empty() {
        info!("no managed interface is without an address any more (or its grace is over)");
    }
}

/// What of the desired state for `managed` is gone without a netlink event: datapath pins and
/// links, sysctls set back. Empty when all is in place (or cannot be told: the reconcile reports
/// errors, the check does not).
fn missing(cfg: &Config, paths: &Paths, managed: &[ManagedInterface]) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.ebpf {
        out.extend(datapath::missing(managed, paths).unwrap_or_default());
    }
    if cfg.sysctls {
        for m in managed {
            out.extend(sysctl::drifted(&m.name).unwrap_or_default());
        }
    }
    out
}

/// Tells systemd (`Type=notify`) that the first reconcile succeeded, so units ordered after
/// enipin (`network-online.target`) start with its state in place. Nothing outside systemd
/// (no `$NOTIFY_SOCKET`).
fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!("telling systemd READY=1 failed: {e}");
    }
}

/// Binds `listen` (before anything is changed: a taken port is an error at start) and serves
/// the watcher's `/metrics` and `/healthz` on it.
async fn serve_metrics(listen: Option<SocketAddr>, telemetry: &Arc<Telemetry>) -> Result<()> {
    let Some(addr) = listen else { return Ok(()) };
    let listener = http::bind(addr).await?;
    info!(
        "serving GET /metrics and GET /healthz on http://{}",
        listener.local_addr()?
    );
    let t = Arc::clone(telemetry);
    tokio::spawn(http::serve(
        listener,
        http::Limits::default(),
        move |m, p| t.route(m, p),
    ));
    Ok(())
}

/// The names and (lower-case) MACs of `managed`: what `--interfaces` may name while it is gone.
fn names_of(managed: &[ManagedInterface]) -> impl Iterator<Item = String> + '_ {
    managed
        .iter()
        .flat_map(|m| [m.name.clone(), fmt_mac(&m.mac)])
}

/// An error when `--interfaces` names what this namespace has never had (`seen`: what enipin
/// managed here): `interfaces = ["eht1"]` would otherwise unmanage every ENI, each check
/// passing, while an ENI that left is only left out until it is back.
fn typos(d: &Discovery, cfg: &Config, seen: &BTreeSet<String>) -> Result<()> {
    let typos = select::never_seen(d, cfg, seen);
    if typos.is_empty() {
        return Ok(());
    }
    let each: Vec<String> = typos.iter().map(ToString::to_string).collect();
    bail!(
        "--interfaces (or the config file's interfaces) names what this namespace has never \
         had: {}. Fix the name; an interface enipin managed and that left is left out until it \
         is back",
        each.join("; ")
    )
}

/// SIGHUP: the settings `reload` loads now, or `None` (logged) when the file is bad. Logs what
/// changed; a new metrics address waits for a restart (the server keeps its socket).
fn reload(reload: &Loader, running: &Settings) -> Option<Settings> {
    let file = reload.path.path.display();
    let new = match reload.load() {
        Ok(new) => new,
        Err(e) => {
            error!("SIGHUP: {e:#}; keeping the running configuration");
            return None;
        }
    };
    let changes = new.changes_from(running);
    if changes.is_empty() {
        info!("SIGHUP: read {file}: no setting changed");
    } else {
        info!("SIGHUP: read {file}: {}", changes.join(", "));
    }
    if new.listen != running.listen {
        warn!(
            "SIGHUP: metrics.listen {} takes effect when the watcher restarts; still serving on {}",
            new.listen, running.listen
        );
    }
    Some(new)
}

/// Runs until SIGTERM or SIGINT; the state stays installed when it returns. `settings.listen`:
/// where to serve metrics and health; `loader` reads them again on SIGHUP.
pub async fn watch(
    settings: Settings,
    loader: &Loader,
    paths: &Paths,
    pacing: Pacing,
) -> Result<()> {
    let cfg: Config = settings.config.clone();
    caps::require("enipin watch", Cap::needed(cfg.ebpf))?;
    // One changer per state directory: attach and detach refuse to run beside the watcher.
    let _lock = state::lock(paths)?;
    let telemetry = Telemetry::new(&cfg, paths)?;
    serve_metrics(settings.listen.0, &telemetry).await?;
    let found = if settings.found {
        ""
    } else {
        " (not found: built-in defaults)"
    };
    info!(
        "config file {}{found}; SIGHUP reads it again",
        settings.file.display()
    );
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // SIGHUP's default action ends the process (exit 129): a terminal closing or an operator's
    // `systemctl reload` must not stop enforcement. It asks for a full reconcile instead.
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // What may be named while it is gone: what the last run managed.
    let seen: BTreeSet<String> = match state::load(paths) {
        Ok(Some(st)) => names_of(&st.managed).collect(),
        _ => BTreeSet::new(),
    };
    match Snapshot::take().await {
        Ok(snap) => {
            typos(&snap.discovery, &cfg, &seen)?;
            crate::doctor::warn_conflicts(&snap, &cfg, paths).await;
        }
        Err(e) => warn!("`enipin doctor`'s checks failed: {e:#}"),
    }
    let interval = pacing.interval.as_secs();
    let mut w = Watcher::new(settings, loader, paths, pacing, telemetry, seen)?;
    info!(
        "watching (interval {interval}s); SIGTERM/SIGINT stop the watcher and leave the state \
         installed"
    );
    loop {
        let wake = w.wake();
        let trigger = tokio::select! {
            _ = term.recv() => Trigger::Stop("SIGTERM"),
            _ = int.recv() => Trigger::Stop("SIGINT"),
            _ = hup.recv() => Trigger::Reload,
            ev = w.events.next() => Trigger::Netlink(ev.map(|(msg, _)| msg)),
            ev = next_nft(&mut w.nft) => Trigger::Nft(ev),
            () = drain(&mut w.logger) => continue,
            view = Metadata::next(&mut w.metadata) => Trigger::Metadata(view),
            _ = w.check.tick(), if !w.edges.is_pending() => Trigger::Check,
            () = sleep_until(wake.at.into()) => Trigger::Due(wake),
        };
        if !w.on(trigger).await? {
            return Ok(());
        }
    }
}
