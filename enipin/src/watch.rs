//! `enipin watch`: keeps the desired state installed.
//!
//! Other tools remove rules they did not create (systemd-networkd and `netplan apply` drop
//! "foreign" rules, nm-cloud-setup wiped the VPC CNI's), ENIs and secondary addresses come and go
//! at runtime. The watcher subscribes to rtnetlink's link, address, rule and route groups in its
//! namespace, and after every burst of events (debounced), or every `--interval` as a safety net,
//! runs the same plan/apply as `enipin attach` ([`apply::reconcile`]): discover, diff, apply only
//! the difference. Every event triggers a full re-read of the kernel's state, so a lost event (a
//! socket overrun) costs nothing but a resync.
//!
//! A reconcile that fails (discovery, a conflict, a step) changes nothing, is logged, and is
//! retried with exponential backoff: an error is never read as "nothing to manage".
//!
//! What sends no netlink event is checked every `check` (250 ms): the datapath's pins and links
//! ([`ebpf::missing`]) and the managed interfaces' sysctls. Anything missing or reverted starts
//! a reconcile at once, so a removed link pin or pin directory, or a sysctl set back by another
//! tool, is restored within about 300 ms instead of at the next periodic pass. Between
//! reconciles the watcher holds its TCX links open ([`ebpf::HeldLinks`]): a removed pin does not
//! detach the link, and is pinned back before the reconcile.
//!
//! With `--metadata`, every reconcile also asks the metadata service (at least every
//! [`Pacing::metadata`], as it sends no event); an ENI whose metadata is unknown keeps its last
//! known metadata for as long as the service fails ([`Tracker`]).
//!
//! SIGHUP asks for a full reconcile. SIGTERM / SIGINT stop the watcher between reconciles and
//! leave the state installed, as `attach` does; `enipin detach` removes it.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use futures::{StreamExt as _, channel::mpsc::UnboundedReceiver};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::sleep_until,
};

use crate::{
    apply::{self, Reconciled},
    config::{Config, Paths},
    ebpf, http,
    metadata::Tracker,
    model::ManagedInterface,
    netlink, state, sysctl,
    watch_metrics::Telemetry,
};

/// How the watcher paces itself.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    /// Reconcile anyway this long after the last one (a safety net for missed events).
    pub(crate) interval: Duration,
    /// Quiet period after an event before reconciling: one reconcile per burst.
    pub(crate) debounce: Duration,
    /// Upper bound on the wait for a quiet period under a constant stream of events.
    pub(crate) max_delay: Duration,
    /// First retry delay after a failed reconcile; doubles up to `max_backoff`.
    pub backoff: Duration,
    /// The longest retry delay after failed reconciles.
    pub max_backoff: Duration,
    /// Between the cheap checks of what sends no event (datapath pins and links, sysctls).
    pub check: Duration,
    /// With `--metadata`: a reconcile (and so a metadata lookup) at least this often, since the
    /// metadata service sends no event.
    pub metadata: Duration,
}

impl Pacing {
    /// Reconciles at least every `interval`; the debounce and backoff are fixed.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            debounce: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            // Restored within a second (check + reconcile, about 50 ms); each check costs a few
            // stats, a TCX query per managed interface and three sysctl reads per interface.
            check: Duration::from_millis(250),
            metadata: Duration::from_secs(10),
        }
    }
}

type Events = UnboundedReceiver<(
    NetlinkMessage<RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

/// A socket on the multicast groups of everything the desired state is computed from.
fn subscribe() -> Result<Events> {
    let (conn, _handle, events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Rule,
        MulticastGroup::Ipv6Rule,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ])
    .context("subscribing to rtnetlink link/address/rule/route events")?;
    tokio::spawn(conn);
    Ok(events)
}

fn ifname(ifindex: u32) -> String {
    ebpf::ifname(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}"))
}

/// One event in words, for the log line of the reconcile it caused, with a rank: lower ranks
/// come first in the line. `None` for the echo of enipin's own work (a rule or route with its
/// protocol added): it still triggers a reconcile, which then finds nothing to do.
fn describe(msg: &NetlinkMessage<RouteNetlinkMessage>) -> Option<(u8, String)> {
    use RouteNetlinkMessage as M;
    use netlink_packet_route::address::AddressAttribute as A;
    let verb = |new: bool| if new { "added" } else { "deleted" };
    let m = match &msg.payload {
        NetlinkPayload::InnerMessage(m) => m,
        NetlinkPayload::Overrun(_) => {
            return Some((0, "event buffer overrun (full resync)".to_owned()));
        }
        _ => return Some((3, "netlink event".to_owned())),
    };
    Some(match m {
        M::NewLink(l) | M::DelLink(l) => {
            let what = if matches!(m, M::DelLink(_)) {
                "removed"
            } else {
                "changed"
            };
            // The message names the link: it may be gone by now.
            let name = l.attributes.iter().find_map(|a| match a {
                netlink_packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            (
                0,
                format!(
                    "link {} {what}",
                    name.unwrap_or_else(|| ifname(l.header.index))
                ),
            )
        }
        M::NewAddress(a) | M::DelAddress(a) => {
            let ip = a.attributes.iter().find_map(|x| match x {
                A::Local(ip) | A::Address(ip) => Some(ip.to_string()),
                _ => None,
            });
            // IPv4 addresses carry their interface's name (the label).
            let dev = a.attributes.iter().find_map(|x| match x {
                A::Label(l) => Some(l.split(':').next().unwrap_or(l).to_owned()),
                _ => None,
            });
            let on = if matches!(m, M::NewAddress(_)) {
                "added on"
            } else {
                "deleted from"
            };
            let ip = ip.unwrap_or_else(|| "?".to_owned());
            let dev = dev.unwrap_or_else(|| ifname(a.header.index));
            (
                0,
                format!("address {ip}/{} {on} {dev}", a.header.prefix_len),
            )
        }
        M::NewRule(r) | M::DelRule(r) => {
            let new = matches!(m, M::NewRule(_));
            let r = netlink::decode_rule(r);
            if new && r.is_enipin() {
                return None;
            }
            let proto = r.protocol;
            let rule = r.rule.ip_args();
            let rule = rule
                .rsplit_once(" proto ")
                .map_or(rule.as_str(), |(a, _)| a);
            (1, format!("rule {} `{rule} proto {proto}`", verb(new)))
        }
        M::NewRoute(r) | M::DelRoute(r) => {
            let new = matches!(m, M::NewRoute(_));
            let r = netlink::decode_route(r);
            if new && r.is_enipin() {
                return None;
            }
            let rt = r.route;
            (
                2,
                format!("route {} `{} table {}`", verb(new), rt.dst, rt.table),
            )
        }
        _ => (3, "netlink event".to_owned()),
    })
}

/// Why a reconcile is due: distinct event descriptions, most telling first (links and addresses,
/// then rules, then routes), in arrival order within a rank.
#[derive(Default)]
struct Reasons {
    seen: Vec<(u8, String)>,
    /// Events that were enipin's own echo.
    echoes: usize,
}

impl Reasons {
    fn add(&mut self, why: Option<(u8, String)>) {
        match why {
            Some(w) if !self.seen.contains(&w) => self.seen.push(w),
            Some(_) => {}
            None => self.echoes += 1,
        }
    }

    fn text(&self) -> String {
        const SHOWN: usize = 3;
        if self.seen.is_empty() {
            return format!("{} netlink event(s)", self.echoes);
        }
        let mut sorted: Vec<_> = self.seen.iter().collect();
        sorted.sort_by_key(|(rank, _)| *rank);
        let mut s = sorted
            .iter()
            .take(SHOWN)
            .map(|(_, w)| w.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if sorted.len() > SHOWN {
            s += &format!(" and {} more", sorted.len() - SHOWN);
        }
        s
    }
}

/// Prints the datapath's aya-log records (`--debug`) on stderr.
struct DatapathLog;

impl log::Log for DatapathLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        eprintln!("datapath {}: {}", record.level(), record.args());
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
    let id = match ebpf::program_id(paths) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("enipin watch: --debug: {e:#}");
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
            println!("reading the datapath's log (program id {prog_id})");
            *logger = Some(Logger { prog_id, fd });
        }
        Err(e) => eprintln!("enipin watch: --debug: {e:#}"),
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
            eprintln!("enipin watch: reading the datapath's log: {e}");
            *logger = None;
        }
    }
}

/// The log line of one reconcile: one line when it changed something, nothing otherwise (but
/// once when the watcher becomes idle: an operator should see why it manages nothing).
fn report(
    r: &Reconciled,
    why: &Reasons,
    took: Duration,
    idle: &mut Option<String>,
    left_out: &mut Vec<String>,
) {
    // A named interface that went away (an ENI detached) or came back: said once, not per pass.
    if r.left_out != *left_out {
        for note in r.left_out.iter().filter(|n| !left_out.contains(n)) {
            println!("left out until it is back: {note}");
        }
        if r.left_out.is_empty() {
            println!("every interface named in --interfaces is back");
        }
        left_out.clone_from(&r.left_out);
    }
    if !r.changes.is_empty() {
        let names: Vec<_> = r.managed.iter().map(|m| m.name.as_str()).collect();
        let scope = match &r.idle {
            Some(why) => format!("nothing to manage ({why}): removed enipin's state"),
            None => format!("managing {}", names.join(", ")),
        };
        let metadata = r
            .metadata
            .as_ref()
            .map(|v| format!(" ({} metadata request(s))", v.requests))
            .unwrap_or_default();
        println!(
            "reconciled after {} in {} ms{metadata}: {} change(s), {scope}: {}",
            why.text(),
            took.as_millis(),
            r.changes.len(),
            r.changes.join("; ")
        );
    } else if r.idle.is_some() && r.idle != *idle {
        println!(
            "nothing to manage: {}",
            r.idle.as_deref().unwrap_or_default()
        );
    }
    idle.clone_from(&r.idle);
}

/// What of the desired state for `managed` is gone without a netlink event: datapath pins and
/// links, sysctls set back. Empty when all is in place (or cannot be told: the reconcile reports
/// errors, the check does not).
fn missing(cfg: &Config, paths: &Paths, managed: &[ManagedInterface]) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.ebpf {
        out.extend(ebpf::missing(managed, paths).unwrap_or_default());
    }
    if cfg.rules && cfg.sysctls {
        for m in managed {
            let want = sysctl::desired(&m.name).unwrap_or_default();
            out.extend(
                want.into_iter()
                    .filter(|(key, v)| sysctl::read(key).is_ok_and(|now| now != *v))
                    .map(|(key, v)| format!("{key} != {v}")),
            );
        }
    }
    out
}

/// Tells systemd (`Type=notify`) that the first reconcile succeeded, so units ordered after
/// enipin (`network-online.target`) start with its state in place. Nothing outside systemd
/// (no `$NOTIFY_SOCKET`).
fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        eprintln!("enipin watch: telling systemd READY=1 failed: {e}");
    }
}

/// Binds `listen` (before anything is changed: a taken port is an error at start) and serves
/// the watcher's `/metrics` and `/healthz` on it.
async fn serve_metrics(listen: Option<SocketAddr>, telemetry: &Arc<Telemetry>) -> Result<()> {
    let Some(addr) = listen else { return Ok(()) };
    let listener = http::bind(addr).await?;
    println!(
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

/// Runs until SIGTERM or SIGINT; the state stays installed when it returns. `listen`: where to
/// serve metrics and health (`None`: nowhere).
pub async fn watch(
    cfg: &Config,
    paths: &Paths,
    pacing: Pacing,
    listen: Option<SocketAddr>,
) -> Result<()> {
    // One changer per state directory: attach and detach refuse to run beside the watcher.
    let _lock = state::lock(paths)?;
    let telemetry = Telemetry::new(cfg, paths)?;
    serve_metrics(listen, &telemetry).await?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // SIGHUP's default action ends the process (exit 129): a terminal closing or an operator's
    // `systemctl reload` must not stop enforcement. It asks for a full reconcile instead.
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // Subscribe before the first reconcile: nothing that happens after it goes unseen.
    let mut events = subscribe()?;
    let mut logger: Option<Logger> = None;

    let mut why = Reasons::default();
    why.add(Some((0, "start".to_owned())));
    let now = Instant::now();
    // When the next reconcile is due because of events (None: only the periodic one).
    let mut due = Some(now);
    let mut burst_start: Option<Instant> = None;
    let mut periodic = now + pacing.interval;
    // No reconcile before this (backoff after a failure).
    let mut hold = now;
    let mut failures = 0u32;
    let mut ready = false;
    // Why nothing is managed, as last reported.
    let mut idle: Option<String> = None;
    let mut left_out: Vec<String> = Vec::new();
    // What the last successful reconcile manages, for the cheap check, and its links held open.
    let mut managed: Vec<ManagedInterface> = Vec::new();
    let mut held = ebpf::HeldLinks::default();
    // Held links whose pins are gone for good, kept until a reconcile has attached anew.
    let mut orphans = ebpf::HeldLinks::default();
    // The metadata client, its token and every ENI's last known metadata, across reconciles.
    let mut tracker = Tracker::new(cfg);
    let mut metadata_poll =
        tokio::time::interval_at((Instant::now() + pacing.metadata).into(), pacing.metadata);
    metadata_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(pacing.check);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    println!(
        "watching (interval {}s); SIGTERM/SIGINT stop the watcher and leave the state installed",
        pacing.interval.as_secs()
    );
    loop {
        let deadline = due.unwrap_or(periodic).min(periodic).max(hold);
        tokio::select! {
            _ = term.recv() => {
                println!("SIGTERM: stopped watching; enipin's state stays installed (`enipin detach` removes it)");
                return Ok(());
            }
            _ = int.recv() => {
                println!("SIGINT: stopped watching; enipin's state stays installed (`enipin detach` removes it)");
                return Ok(());
            }
            _ = hup.recv() => {
                println!("SIGHUP: reconciling now (SIGHUP never stops the watcher)");
                why.add(Some((0, "SIGHUP".to_owned())));
                due = Some(Instant::now());
            }
            ev = events.next() => {
                let now = Instant::now();
                match ev {
                    Some((msg, _)) => why.add(describe(&msg)),
                    None => {
                        // The kernel closed the socket: take a new one, then resync.
                        eprintln!("enipin watch: the netlink event socket closed; subscribing again");
                        events = subscribe()?;
                        why.add(Some((0, "event socket reopened (full resync)".to_owned())));
                    }
                }
                let start = *burst_start.get_or_insert(now);
                due = Some((now + pacing.debounce).min(start + pacing.max_delay));
            }
            () = drain(&mut logger) => {}
            _ = metadata_poll.tick(), if tracker.is_some() && due.is_none() => {
                why.add(Some((0, "metadata refresh".to_owned())));
                due = Some(Instant::now());
            }
            _ = check.tick(), if due.is_none() => {
                let gone = missing(cfg, paths, &managed);
                if !gone.is_empty() {
                    why.add(Some((0, format!("gone without an event: {}", gone.join(", ")))));
                    due = Some(Instant::now());
                }
            }
            () = sleep_until(deadline.into()) => {
                if due.is_none() {
                    why.add(Some((0, "periodic check".to_owned())));
                }
                let started = Instant::now();
                // The reconcile must be able to detach or replace links: let go of them first
                // (those that lost their pin for good keep enforcing until it attached anew).
                let (repinned, lost) = std::mem::take(&mut held).repin(paths);
                orphans.extend(lost);
                let result = apply::reconcile(cfg, paths, tracker.as_mut()).await;
                if cfg.ebpf {
                    held = ebpf::HeldLinks::hold(paths);
                }
                if result.is_ok() {
                    orphans = ebpf::HeldLinks::default();
                }
                match result {
                    Ok(mut r) => {
                        telemetry.succeeded(&r, repinned.len(), started.elapsed());
                        r.changes.splice(0..0, repinned);
                        report(&r, &why, started.elapsed(), &mut idle, &mut left_out);
                        managed.clone_from(&r.managed);
                        if failures > 0 {
                            println!("reconcile succeeded after {failures} failed attempt(s)");
                        }
                        failures = 0;
                        if !ready {
                            ready = true;
                            notify_ready();
                        }
                        why = Reasons::default();
                        due = None;
                    }
                    Err(e) => {
                        telemetry.failed(&e, started.elapsed());
                        failures += 1;
                        let delay = pacing.backoff.saturating_mul(1 << (failures - 1).min(16)).min(pacing.max_backoff);
                        eprintln!(
                            "enipin watch: reconcile after {} failed (attempt {failures}, retrying in {}s); \
                             the installed state is left as it was: {e:#}",
                            why.text(),
                            delay.as_secs_f32()
                        );
                        hold = Instant::now() + delay;
                        due = Some(hold);
                    }
                }
                burst_start = None;
                periodic = Instant::now() + pacing.interval;
                if cfg.debug && cfg.ebpf {
                    follow_program(&mut logger, paths);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_put_links_and_addresses_first_and_count_echoes() {
        let mut r = Reasons::default();
        assert_eq!(r.text(), "0 netlink event(s)");
        r.add(None);
        assert_eq!(r.text(), "1 netlink event(s)");
        r.add(Some((
            2,
            "route deleted `198.18.0.0/24 table 20003`".into(),
        )));
        r.add(Some((
            1,
            "rule deleted `from 198.18.0.11/32 lookup 20003 pref 20002 proto 229`".into(),
        )));
        r.add(Some((0, "link eth1 removed".into())));
        r.add(Some((0, "link eth1 removed".into())));
        assert_eq!(
            r.text(),
            "link eth1 removed, rule deleted `from 198.18.0.11/32 lookup 20003 pref 20002 proto 229`, \
             route deleted `198.18.0.0/24 table 20003`"
        );
        r.add(Some((0, "address 198.18.0.21/24 deleted from eth1".into())));
        assert!(
            r.text()
                .starts_with("link eth1 removed, address 198.18.0.21/24"),
            "{}",
            r.text()
        );
        assert!(r.text().ends_with(" and 1 more"), "{}", r.text());
    }
}
