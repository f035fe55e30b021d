//! The watcher's state across passes, and what it does on each [`Trigger`]: the one `select!`
//! in [`super::watch`] turns whatever woke it into a trigger, and [`Watcher::on`] handles it.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use rtnetlink::packet_core::NetlinkMessage;
use tracing::{error, info, warn};

use super::{
    Logger, Pacing, Said, follow_program, missing, nft_events, notify_ready, reload, report,
};
use crate::{
    daemon::{
        metrics::Telemetry,
        pace::Edges,
        report::{OwnRemovals, Reasons, describe},
    },
    datapath::HeldLinks,
    engine::{
        applied::Applied,
        apply::{self, ReconcileError, Reconciled},
        snapshot::Snapshot,
        state::{self, State},
    },
    kernel::{
        events::{Event, Events, subscribe},
        nft_events::NftEvents,
    },
    metadata::{Refresher, Tracker, Use, View},
    model::ManagedInterface,
    routing::grace::Grace,
    settings::{
        Loader, Settings,
        config::{Config, Paths},
    },
};

/// The soonest retry after a failed attempt when something changed: the backoff's first step. It
/// bounds the rate of attempts when the failing reconcile's own rollback is what changed (one a
/// second, as a failure's first retry).
const RETRY_ON_NEWS: Duration = Duration::from_secs(1);

/// What woke the watcher: one arm of its `select!` each.
pub(super) enum Trigger {
    /// SIGTERM or SIGINT: stop, leaving the state installed.
    Stop(&'static str),
    /// SIGHUP: read the settings again, and reconcile.
    Reload,
    /// A netlink event (`None`: the kernel closed the socket).
    Netlink(Option<NetlinkMessage<Event>>),
    /// nftables' notifications of enipin's table.
    Nft(Result<Vec<&'static str>>),
    /// The metadata task's latest view.
    Metadata(View),
    /// The cheap check of what sends no event (pins, links, sysctls).
    Check,
    /// A reconcile is due, as [`Watcher::wake`] said before the `select!`.
    Due(Wake),
}

/// The watcher's metadata: asked inline by the first pass (the start's), then by a task of its
/// own, so a repair never waits for the service.
pub(super) enum Metadata {
    /// No pass has succeeded yet: the next one asks the service itself. (Boxed: the client
    /// and its HTTP pool are 432 bytes, the task's handle a few words.)
    Starting(Box<Tracker>),
    /// The refresh task, and the last view it sent (what passes plan with).
    Running { refresher: Refresher, view: View },
}

impl Metadata {
    /// Where a pass takes its metadata from.
    fn used(&mut self) -> Use<'_> {
        match self {
            Self::Starting(t) => Use::Ask(t),
            Self::Running { view, .. } => Use::Last(view),
        }
    }

    /// After a successful pass that saw `view`: the task takes over from the first, or learns
    /// which ENIs the pass wanted (a new one is asked about at once).
    fn passed(self, view: &View, period: Duration) -> Self {
        match self {
            Self::Starting(t) => Self::Running {
                refresher: Refresher::spawn(*t, view.wanted.clone(), period),
                view: view.clone(),
            },
            Self::Running {
                refresher,
                view: last,
            } => {
                refresher.want(&view.wanted);
                Self::Running {
                    refresher,
                    view: last,
                }
            }
        }
    }

    /// The task's next view; never ready before it runs.
    pub(super) async fn next(this: &mut Option<Self>) -> View {
        match this {
            Some(Self::Running { refresher, .. }) => refresher.next().await,
            _ => std::future::pending().await,
        }
    }
}

/// When the next reconcile is due, and why.
#[derive(Clone, Copy, Debug)]
pub(super) struct Wake {
    pub(super) at: Instant,
    /// Events are waiting (else: the periodic check, or a grace's end).
    events: bool,
    /// A grace ends then: no event says so.
    grace_end: Option<Instant>,
}

/// Everything the watcher keeps from one pass to the next.
pub(super) struct Watcher<'a> {
    settings: Settings,
    loader: &'a Loader,
    paths: &'a Paths,
    pacing: Pacing,
    pub(super) cfg: Config,
    telemetry: Arc<Telemetry>,
    pub(super) events: Events,
    pub(super) nft: Option<NftEvents>,
    pub(super) logger: Option<Logger>,
    /// The events (and signals, checks) not reconciled yet, in words.
    why: Reasons,
    pub(super) edges: Edges,
    /// The rules and routes the last reconcile removed, whose announcements are no news.
    own: OwnRemovals,
    periodic: Instant,
    /// No reconcile before this (backoff after a failure).
    hold: Instant,
    /// When the last attempt failed (`None` after a success).
    failed_at: Option<Instant>,
    failures: u32,
    ready: bool,
    said: Said,
    /// What the last successful reconcile manages, for the cheap check.
    managed: Vec<ManagedInterface>,
    /// The datapath's links held open between passes.
    held: HeldLinks,
    /// Held links whose pins are gone for good, kept until a reconcile has attached anew.
    orphans: HeldLinks,
    /// With `--metadata`: the client, or the task it moved into after the first pass.
    pub(super) metadata: Option<Metadata>,
    /// Interfaces seen without an address, and since when: they hold the selection a while.
    grace: Grace,
    /// The state the last successful pass recorded: written back should its file go.
    remembered: Option<State>,
    /// The names and MACs of every interface managed here: `--interfaces` may name them while
    /// they are gone, and nothing else that is not there.
    seen: BTreeSet<String>,
    pub(super) check: tokio::time::Interval,
}

impl<'a> Watcher<'a> {
    pub(super) fn new(
        settings: Settings,
        loader: &'a Loader,
        paths: &'a Paths,
        pacing: Pacing,
        telemetry: Arc<Telemetry>,
        seen: BTreeSet<String>,
    ) -> Result<Self> {
        let cfg = settings.config.clone();
        let now = Instant::now();
        let mut why = Reasons::default();
        why.add(Some((0, "start".to_owned())));
        // The first reconcile is due at once.
        let mut edges = Edges::default();
        edges.event(now);
        let mut check = tokio::time::interval(pacing.check);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Self {
            // Subscribed before the first reconcile: nothing after it goes unseen.
            events: subscribe()?,
            nft: nft_events(&cfg),
            logger: None,
            why,
            edges,
            own: OwnRemovals::default(),
            periodic: now + pacing.interval,
            hold: now,
            failed_at: None,
            failures: 0,
            ready: false,
            said: Said::default(),
            managed: Vec::new(),
            held: HeldLinks::default(),
            orphans: HeldLinks::default(),
            metadata: Tracker::new(&cfg).map(|t| Metadata::Starting(Box::new(t))),
            grace: Grace::default(),
            seen,
            remembered: None,
            check,
            settings,
            loader,
            paths,
            pacing,
            cfg,
            telemetry,
        })
    }

    /// When the next reconcile is due: after a burst's quiet period, at the periodic check or a
    /// grace's end, never before a failure's backoff is over.
    pub(super) fn wake(&self) -> Wake {
        let due = self.edges.due(self.pacing.debounce, self.pacing.max_delay);
        let grace_end = self.grace.deadline(Instant::now());
        let periodic = self.periodic;
        let at = (due.unwrap_or(periodic).min(periodic))
            .min(grace_end.unwrap_or(periodic))
            .max(self.hold);
        Wake {
            at,
            events: due.is_some(),
            grace_end,
        }
    }

    /// Handles `t`; false once the watcher is to stop.
    pub(super) async fn on(&mut self, t: Trigger) -> Result<bool> {
        match t {
            Trigger::Stop(signal) => {
                info!(
                    "{signal}: stopped watching; enipin's state stays installed (`enipin detach` \
                     removes it)"
                );
                return Ok(false);
            }
            Trigger::Reload => self.reload().await,
            Trigger::Netlink(msg) => self.netlink(msg)?,
            Trigger::Nft(changes) => self.nft_changed(changes),
            Trigger::Metadata(view) => self.metadata_view(view),
            Trigger::Check => {
                let mut gone = missing(&self.cfg, self.paths, &self.managed);
                if self.remembered.is_some() && !state::file(self.paths).exists() {
                    gone.push("the state file".to_owned());
                }
                if !gone.is_empty() {
                    self.wanted(format!("gone without an event: {}", gone.join(", ")));
                }
            }
            Trigger::Due(wake) => self.reconcile(wake).await,
        }
        Ok(true)
    }

    /// A reason to reconcile, said in the reconcile's line.
    fn wanted(&mut self, why: String) {
        self.why.add(Some((0, why)));
        self.news(Instant::now());
    }

    /// Something changed that a reconcile should see. While a failure's backoff runs, the change
    /// may have removed its cause: the retry comes [`RETRY_ON_NEWS`] after the failed attempt
    /// rather than when the backoff ends (after a fourth failure, 8 s; the watch test
    /// `a_change_ends_a_failures_backoff` measures 1.0 s from the removal of the cause).
    fn news(&mut self, now: Instant) {
        self.edges.event(now);
        if let Some(at) = self.failed_at {
            self.hold = self.hold.min(at + RETRY_ON_NEWS);
        }
    }

    async fn reload(&mut self) {
        let new = match reload(self.loader, &self.settings) {
            Some(new) => match self.typos(&new.config).await {
                Ok(()) => Some(new),
                Err(e) => {
                    error!("SIGHUP: {e:#}; keeping the running configuration");
                    None
                }
            },
            None => None,
        };
        self.telemetry.reloaded(new.is_some());
        if let Some(new) = new {
            // Another service or endpoint starts afresh; the same one keeps what it knows (an
            // ENI's last known metadata survives a reload during an outage).
            let service = |c: &Config| (c.metadata, c.metadata_endpoint.clone());
            if service(&new.config) != service(&self.cfg) {
                self.metadata = Tracker::new(&new.config).map(|t| Metadata::Starting(Box::new(t)));
            }
            self.cfg = new.config.clone();
            if self.cfg.connmark != self.nft.is_some() {
                self.nft = nft_events(&self.cfg);
            }
            self.pacing.interval = Duration::from_secs(new.interval);
            self.pacing.metadata = Duration::from_secs(new.metadata_interval);
            self.telemetry.set_layers(&self.cfg);
            if !(self.cfg.debug && self.cfg.ebpf) {
                self.logger = None;
            }
            self.settings = new;
        }
        if let Some(Metadata::Running { refresher, .. }) = &self.metadata {
            refresher.refresh_now(self.pacing.metadata);
        }
        info!("SIGHUP: reconciling now (SIGHUP never stops the watcher)");
        self.wanted("SIGHUP".to_owned());
    }

    /// [`super::typos`] of `cfg` in the namespace as it is now.
    async fn typos(&self, cfg: &Config) -> Result<()> {
        let snap = Snapshot::take().await?;
        super::typos(&snap.discovery, cfg, &self.seen)
    }

    fn netlink(&mut self, msg: Option<NetlinkMessage<Event>>) -> Result<()> {
        let described = match msg {
            Some(msg) => describe(&msg, &mut self.own, &self.managed),
            None => {
                // The kernel closed the socket: take a new one, then resync.
                warn!("the netlink event socket closed; subscribing again");
                self.events = subscribe()?;
                Some((0, "event socket reopened (full resync)".to_owned()))
            }
        };
        // An echo of enipin's own change needs no reconcile: a reconcile after one would find
        // nothing to do, and its own echoes would start the next.
        if described.is_some() {
            self.news(Instant::now());
        }
        self.why.add(described);
        Ok(())
    }

    fn nft_changed(&mut self, changes: Result<Vec<&'static str>>) {
        match changes {
            Ok(changes) if !changes.is_empty() => {
                let table = crate::model::connmark::TABLE;
                self.wanted(format!("nftables: {table} {}", changes.join(", ")));
            }
            Ok(_) => {}
            Err(e) => {
                warn!(
                    "{e:#}; a change to enipin's nftables table is now seen at the periodic \
                     reconcile only"
                );
                self.nft = None;
            }
        }
    }

    async fn reconcile(&mut self, wake: Wake) {
        if wake.grace_end.is_some_and(|end| end <= Instant::now()) {
            self.why
                .add(Some((0, "an address's grace is over".to_owned())));
        } else if !wake.events {
            self.why.add(Some((0, "periodic check".to_owned())));
        }
        let started = Instant::now();
        // The reconcile must be able to detach or replace links: let go of them first (those
        // that lost their pin for good keep enforcing until it attached anew).
        let (repinned, lost) = std::mem::take(&mut self.held).repin(self.paths);
        self.orphans.extend(lost);
        let (cfg, paths) = (&self.cfg, self.paths);
        let metadata = self.metadata.as_mut().map(Metadata::used);
        let remembered = self.remembered.as_ref();
        let result = apply::reconcile(cfg, paths, metadata, &mut self.grace, remembered).await;
        if self.cfg.ebpf {
            self.held = HeldLinks::hold(self.paths);
        }
        match result {
            Ok(mut r) => {
                self.orphans = HeldLinks::default();
                self.telemetry
                    .succeeded(&r, repinned.len(), started.elapsed());
                r.changes
                    .splice(0..0, repinned.into_iter().map(Applied::PinBack));
                // Moved, not cloned: at 15 x 50 the record is every address of every interface.
                self.remembered = Some(std::mem::take(&mut r.state));
                self.succeeded(&r, started);
            }
            Err(e) => self.failed(&e, started),
        }
        self.periodic = Instant::now() + self.pacing.interval;
        if self.cfg.debug && self.cfg.ebpf {
            follow_program(&mut self.logger, self.paths);
        }
    }

    /// The metadata task's view: a reconcile when it would plan differently.
    fn metadata_view(&mut self, new: View) {
        self.telemetry.metadata(&new);
        let Some(Metadata::Running { view, .. }) = &mut self.metadata else {
            return;
        };
        let (differs, requests) = (new.differs(view), new.requests);
        *view = new;
        if differs {
            self.wanted(format!("metadata changed ({requests} request(s))"));
        }
    }

    fn succeeded(&mut self, r: &Reconciled, started: Instant) {
        if r.state_rewritten {
            warn!(
                "{} was gone: written back from the last pass's record (the sysctls' values \
                 from before enipin, which detach restores, are known from it only)",
                state::file(self.paths).display()
            );
        }
        report(r, &self.why, started.elapsed(), &mut self.said);
        self.seen.extend(super::names_of(&r.managed));
        if let Some(view) = &r.metadata {
            let period = self.pacing.metadata;
            self.metadata = self.metadata.take().map(|m| m.passed(view, period));
        }
        self.own.expect(&r.changes);
        self.managed.clone_from(&r.managed);
        if self.failures > 0 {
            info!(
                "reconcile succeeded after {} failed attempt(s)",
                self.failures
            );
        }
        self.failures = 0;
        self.failed_at = None;
        if !self.ready {
            self.ready = true;
            notify_ready();
        }
        self.why = Reasons::default();
        self.edges.reconciled(started, Instant::now());
    }

    fn failed(&mut self, e: &ReconcileError, started: Instant) {
        self.telemetry.failed(e, started.elapsed());
        self.failures += 1;
        let delay = (self.pacing.backoff)
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(self.pacing.max_backoff);
        // A refused rules layer did not stop the datapath (it needs no priority).
        let left = if matches!(e, ReconcileError::RulesRefused(_)) {
            "the datapath is in place; the rules layer refused and is left as it was"
        } else {
            "the installed state is left as it was"
        };
        error!(
            "reconcile after {} failed (attempt {}, retrying in {}s); {left}: {e:#}",
            self.why.text(),
            self.failures,
            delay.as_secs_f32()
        );
        let now = Instant::now();
        self.hold = now + delay;
        self.failed_at = Some(now);
        self.edges.failed(now);
    }
}
