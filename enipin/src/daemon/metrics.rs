//! What `enipin watch --metrics-listen` serves: `GET /metrics` (the datapath's counters and the
//! control plane's) and `GET /healthz`, from the watcher's own process.
//!
//! The control-plane metrics live in a registry the watch loop updates after every reconcile;
//! the datapath's counters and attachments are read per scrape (they live in the kernel). The
//! health answer is computed per request too: the last reconcile's result, and the same cheap
//! check the loop runs every 250 ms ([`datapath::missing`]).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use hyper::{Method, StatusCode};
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    proto::{self, Metric, MetricFamily, MetricType},
};

use crate::{
    datapath,
    engine::apply::{ReconcileError, Reconciled},
    metadata::View,
    model::objects::{self, InPlace},
    model::{ManagedInterface, fmt_mac},
    observe::http::Reply,
    observe::metrics,
    settings::config::{Config, Paths},
};

/// How long a rendered exposition serves scrapes: a scrape interval is 15-60 s, so 100 ms of
/// age in the datapath's counters is nothing to Prometheus, while 1,000 scrapes a second render
/// 10 times instead of 1,000. A reconcile's own figures are never stale: it renders anew.
const FRESH: Duration = Duration::from_millis(100);

/// Kinds of restored and drifted objects, so that every series exists from the first scrape.
const KINDS: [&str; 8] = [
    "rule",
    "address",
    "route",
    "sysctl",
    "datapath_link",
    "datapath_program",
    "datapath_map",
    "connmark",
];

/// The watcher's metrics and what its health depends on; shared with the HTTP server.
pub(crate) struct Telemetry {
    registry: Registry,
    reconciles: IntCounterVec,
    failures: IntCounterVec,
    restored: IntCounterVec,
    duration: Histogram,
    last_success: Gauge,
    metadata: MetadataMetrics,
    reloads: IntCounterVec,
    drift: IntGaugeVec,
    interfaces: IntGauge,
    addresses: IntGauge,
    rules_installed: IntGauge,
    build: IntGaugeVec,
    rules: AtomicBool,
    ebpf: AtomicBool,
    paths: Paths,
    last: Mutex<Last>,
    /// The last exposition: scrapes within [`FRESH`] of it share it while no reconcile has
    /// happened since.
    rendered: Mutex<Option<Rendered>>,
    /// Bumped by every change to what the registry says. An atomic, not a lock: a reconcile
    /// records while holding `last`, and a scrape renders (reading `last`) while holding
    /// `rendered`, so taking `rendered` there would deadlock the two.
    generation: AtomicU64,
}

/// One rendering of the exposition.
struct Rendered {
    at: Instant,
    /// [`Telemetry::generation`] when the rendering began.
    generation: u64,
    text: String,
}

/// The last reconcile, for `/healthz` and the per-scrape datapath metrics.
#[derive(Default)]
struct Last {
    /// `None` before the first reconcile; `Some(Err)` holds its error in one line.
    result: Option<Result<(), String>>,
    managed: Vec<ManagedInterface>,
    /// What the last success left in place: what a later pass puts back of it is a restore.
    in_place: InPlace,
    /// The interfaces named in `--interfaces` that the last success left out, with why.
    left_out: Vec<String>,
    /// The ENIs whose metadata is unknown now, with why: their last known stands in.
    metadata_unknown: Vec<String>,
}

/// `enipin_drift_objects{kind,state}`, every kind both ways.
fn drift_gauges(r: &Reg<'_>) -> Result<IntGaugeVec> {
    let drift = r.register(IntGaugeVec::new(
        Opts::new(
            "enipin_drift_objects",
            "Objects the last successful reconcile found missing or extra, by kind, before \
             it put them right.",
        ),
        &["kind", "state"],
    )?)?;
    for kind in KINDS {
        for state in ["missing", "extra"] {
            drift.with_label_values(&[kind, state]);
        }
    }
    Ok(drift)
}

/// Creates series in a registry; every label value of a vector is listed at once, so that each
/// series exists (at 0) from the first scrape.
struct Reg<'a>(&'a Registry);

impl Reg<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> Result<C> {
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn counters(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: &[&str],
    ) -> Result<IntCounterVec> {
        let v = self.register(IntCounterVec::new(Opts::new(name, help), &[label])?)?;
        for value in values {
            v.with_label_values(&[value]);
        }
        Ok(v)
    }

    fn gauge(&self, name: &str, help: &str) -> Result<IntGauge> {
        self.register(IntGauge::new(name, help)?)
    }
}

/// The metadata client's series (0 without `--metadata`).
struct MetadataMetrics {
    requests: IntCounterVec,
    unknown: IntGauge,
    last_success: Gauge,
    refused: IntGauge,
}

impl MetadataMetrics {
    fn new(r: &Reg<'_>) -> Result<Self> {
        Ok(Self {
            requests: r.counters(
                "enipin_metadata_requests_total",
                "Requests to the metadata service by result: ok (2xx, or 404 for a key an ENI \
                 lacks), error (another status), no_answer (refused, timed out).",
                "result",
                &["ok", "error", "no_answer"],
            )?,
            unknown: r.gauge(
                "enipin_metadata_unknown_enis",
                "ENIs whose metadata the last refresh could not learn: their last known metadata \
                 stands in (nothing is removed for it).",
            )?,
            last_success: r.register(Gauge::new(
                "enipin_metadata_last_success_timestamp_seconds",
                "Unix time of the last refresh that learned every ENI's metadata (0: none yet).",
            )?)?,
            refused: r.gauge(
                "enipin_metadata_refused_entries",
                "Addresses and prefixes the last metadata lookup listed that no ENI can own (the \
                 service's own, outside the subnet, reserved or special): left out, never \
                 configured.",
            )?,
        })
    }

    fn observe(&self, v: &View) {
        let o = v.outcomes;
        for (result, n) in [("ok", o.ok), ("error", o.error), ("no_answer", o.no_answer)] {
            self.requests.with_label_values(&[result]).inc_by(n);
        }
        self.unknown.set(v.unknown.len() as i64);
        self.refused.set(v.refused as i64);
        if v.requests > 0 && v.unknown.is_empty() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.last_success.set(now.as_secs_f64());
        }
    }
}

impl Telemetry {
    pub(crate) fn new(cfg: &Config, paths: &Paths) -> Result<Arc<Self>> {
        let registry = Registry::new();
        let r = Reg(&registry);
        let reconciles = r.counters(
            "enipin_reconciles_total",
            "Reconciles by result: changed (something was applied), unchanged, failed.",
            "result",
            &["changed", "unchanged", "failed"],
        )?;
        let failures = r.counters(
            "enipin_reconcile_failures_total",
            "Failed reconciles by the phase that failed: state (reading the state file), \
             discover, plan (a conflict, the datapath's plan), commit (rolled back), rules \
             (the rules layer refused, the datapath applied alone).",
            "phase",
            &ReconcileError::PHASES,
        )?;
        let restored = r.counters(
            "enipin_restored_total",
            "Objects put back after someone else removed or changed them, by kind: those \
             the last successful reconcile left in place.",
            "kind",
            &KINDS,
        )?;
        // 1 ms to about 4 s: a reconcile of 15 x 50 addresses with nothing to do takes ~10 ms.
        let duration = r.register(Histogram::with_opts(
            HistogramOpts::new(
                "enipin_reconcile_duration_seconds",
                "Time of one reconcile (discover, plan, apply), failed ones included.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 13)?),
        )?)?;
        let last_success = r.register(Gauge::new(
            "enipin_last_success_timestamp_seconds",
            "Unix time of the last successful reconcile (0: none yet).",
        )?)?;
        let reloads = r.counters(
            "enipin_config_reloads_total",
            "SIGHUPs by result: ok (the settings read again), rejected (a bad file, or an \
             interface name this namespace never had: the running settings kept).",
            "result",
            &["ok", "rejected"],
        )?;
        let metadata = MetadataMetrics::new(&r)?;
        let drift = drift_gauges(&r)?;
        let interfaces = r.gauge(
            "enipin_managed_interfaces",
            "Interfaces enipin manages now.",
        )?;
        let addresses = r.gauge(
            "enipin_managed_addresses",
            "Addresses and delegated prefixes on the managed interfaces.",
        )?;
        // The alert on misrouted packets needs it: with rules installed, the datapath should have
        // nothing left to redirect, so any misrouted packet means something bypassed the rules.
        let rules_installed = r.gauge(
            "enipin_rules_installed",
            "1 when enipin's policy rules and routes are installed (0: --no-rules, or nothing to \
             manage).",
        )?;
        let build = r.register(IntGaugeVec::new(
            Opts::new(
                "enipin_build_info",
                "Always 1: this binary's version and its datapath program's tag (\"none\" \
                 without the datapath).",
            ),
            &["version", "program_tag"],
        )?)?;
        Ok(Arc::new(Self {
            registry,
            reconciles,
            failures,
            restored,
            duration,
            last_success,
            metadata,
            reloads,
            drift,
            interfaces,
            addresses,
            rules_installed,
            build,
            rules: AtomicBool::new(cfg.rules),
            ebpf: AtomicBool::new(cfg.ebpf),
            paths: paths.clone(),
            last: Mutex::new(Last::default()),
            rendered: Mutex::new(None),
            generation: AtomicU64::new(0),
        }))
    }

    /// Which layers are expected from now on (a SIGHUP reloaded `layers.rules`/`layers.ebpf`).
    pub(crate) fn set_layers(&self, cfg: &Config) {
        self.rules.store(cfg.rules, Ordering::Relaxed);
        self.ebpf.store(cfg.ebpf, Ordering::Relaxed);
        self.stale();
    }

    /// What a metadata view says: its requests by outcome, the ENIs unknown (named by
    /// `/healthz`), the entries refused, the time of the last refresh that knew every ENI.
    pub(crate) fn metadata(&self, v: &View) {
        self.metadata.observe(v);
        let unknown = (v.unknown.iter())
            .map(|(mac, why)| format!("{} ({why})", fmt_mac(mac)))
            .collect();
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .metadata_unknown = unknown;
        self.stale();
    }

    /// A SIGHUP's outcome: `ok` when the settings were taken.
    pub(crate) fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.reloads.with_label_values(&[result]).inc();
        self.stale();
    }

    /// A reconcile changed what the registry says: the next scrape renders anew.
    fn stale(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The exposition, rendered at most once per [`FRESH`] (and after every reconcile): at
    /// 800-1,100 scrapes a second, rendering each (the datapath's per-CPU counters read from
    /// the pinned maps, the registry encoded) took 55-78 % of a CPU and a repair 4.6 times as
    /// long (bench `--only watch`).
    fn shared_exposition(&self) -> Result<String> {
        let mut rendered = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(r) = rendered.as_ref()
            && r.generation == generation
            && r.at.elapsed() < FRESH
        {
            return Ok(r.text.clone());
        }
        let text = self.exposition()?;
        *rendered = Some(Rendered {
            at: Instant::now(),
            generation,
            text: text.clone(),
        });
        Ok(text)
    }

    /// Records a successful reconcile. `repinned`: link pins put back before it.
    pub(crate) fn succeeded(&self, r: &Reconciled, repinned: usize, took: Duration) {
        if let Some(v) = &r.metadata {
            self.metadata(v);
        }
        self.duration.observe(took.as_secs_f64());
        let result = if r.changes.is_empty() {
            "unchanged"
        } else {
            "changed"
        };
        self.reconciles.with_label_values(&[result]).inc();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        for kind in KINDS {
            for (state, missing) in [("missing", true), ("extra", false)] {
                let n = r.drift.get(&(kind, missing)).copied().unwrap_or(0);
                self.drift.with_label_values(&[kind, state]).set(n as i64);
            }
        }
        // What was in place at the last success and is put back now was removed by someone
        // else, whatever else changed in the same pass (a gateway's source, an address).
        for o in objects::restored(&last.in_place, &r.added) {
            self.restored.with_label_values(&[o.kind()]).inc();
        }
        self.restored
            .with_label_values(&["datapath_link"])
            .inc_by(repinned as u64);
        self.interfaces.set(r.managed.len() as i64);
        let addrs: usize = r
            .managed
            .iter()
            .map(|m| m.addrs.len() + m.prefixes.len())
            .sum();
        self.addresses.set(addrs as i64);
        self.rules_installed.set(i64::from(
            self.rules.load(Ordering::Relaxed) && !r.managed.is_empty(),
        ));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success.set(now.as_secs_f64());
        // The tag is known once a plan has run (it takes a load, done once per process).
        let tag = if self.ebpf.load(Ordering::Relaxed) {
            datapath::our_tag(&self.paths.pin_dir)
                .map_or_else(|_| "unknown".to_owned(), |t| format!("{t:016x}"))
        } else {
            "none".to_owned()
        };
        self.build.reset();
        self.build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), &tag])
            .set(1);
        self.stale();
        last.result = Some(Ok(()));
        last.managed.clone_from(&r.managed);
        last.in_place.clone_from(&r.in_place);
        last.left_out = r.left_out.iter().map(|(_, why)| why.clone()).collect();
    }

    /// Records a failed reconcile (the installed state was left as it was).
    pub(crate) fn failed(&self, e: &ReconcileError, took: Duration) {
        self.duration.observe(took.as_secs_f64());
        self.reconciles.with_label_values(&["failed"]).inc();
        self.failures.with_label_values(&[e.phase()]).inc();
        self.stale();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.result = Some(Err(format!("{e:#}").replace('\n', " ")));
    }

    /// What of the datapath is missing for the interfaces managed at the last success.
    fn datapath_missing(&self, managed: &[ManagedInterface]) -> Vec<String> {
        if !self.ebpf.load(Ordering::Relaxed) {
            return Vec::new();
        }
        datapath::missing(managed, &self.paths).unwrap_or_else(|e| vec![format!("{e:#}")])
    }

    /// `GET /healthz`: 200 when the last reconcile succeeded, the datapath is in place on every
    /// managed interface and every interface named in `--interfaces` is managed, else 503, each
    /// with a one-line reason.
    pub(crate) fn health(&self) -> Reply {
        let (result, managed, left_out, unknown) = {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let l = &*last;
            let (r, m, o, u) = (&l.result, &l.managed, &l.left_out, &l.metadata_unknown);
            (r.clone(), m.clone(), o.clone(), u.clone())
        };
        let bad = |why: String| Reply::text(StatusCode::SERVICE_UNAVAILABLE, why + "\n");
        match result {
            None => bad("no reconcile yet".to_owned()),
            Some(Err(e)) => bad(format!("the last reconcile failed: {e}")),
            Some(Ok(())) => {
                let gone = self.datapath_missing(&managed);
                let n = managed.len();
                if !gone.is_empty() {
                    bad(format!("datapath missing: {}", gone.join(", ")))
                } else if !left_out.is_empty() {
                    bad(format!(
                        "degraded: managing {n} interface(s); left out until it is back: {}",
                        left_out.join("; ")
                    ))
                } else if !unknown.is_empty() {
                    // Still 200: what was known is enforced, and nothing is removed for it.
                    Reply::text(
                        StatusCode::OK,
                        format!(
                            "ok: managing {n} interface(s); metadata unknown for {}: its last \
                             known metadata stands in\n",
                            unknown.join(", ")
                        ),
                    )
                } else {
                    Reply::text(StatusCode::OK, format!("ok: managing {n} interface(s)\n"))
                }
            }
        }
    }

    /// `GET /metrics`: the control plane's registry, the datapath's counters (when pinned) and
    /// whether the datapath is attached on each managed interface.
    pub(crate) fn exposition(&self) -> Result<String> {
        let managed = self
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .managed
            .clone();
        let mut families = self.registry.gather();
        if self.ebpf.load(Ordering::Relaxed) {
            // Nothing pinned (nothing to manage yet) is no error: no datapath series.
            if let Ok(rows) = metrics::rows(&self.paths) {
                families.extend(metrics::datapath(&rows));
            }
            families.push(self.attached(&managed));
        }
        metrics::encode(&families)
    }

    /// `enipin_datapath_attached{interface}`: 1 when the datapath is in place on it. The check
    /// per interface runs only when the check of all of them found something missing.
    fn attached(&self, managed: &[ManagedInterface]) -> MetricFamily {
        let all_in_place = self.datapath_missing(managed).is_empty();
        let mut f = MetricFamily::default();
        f.set_name("enipin_datapath_attached".to_owned());
        f.set_help(
            "1 when the datapath is attached and pinned on the managed interface.".to_owned(),
        );
        f.set_field_type(MetricType::GAUGE);
        f.set_metric(
            managed
                .iter()
                .map(|m| {
                    let up =
                        all_in_place || self.datapath_missing(std::slice::from_ref(m)).is_empty();
                    let mut g = proto::Gauge::default();
                    g.set_value(if up { 1.0 } else { 0.0 });
                    let mut metric = Metric::default();
                    metric.set_label(vec![metrics::label("interface", &m.name)]);
                    metric.set_gauge(g);
                    metric
                })
                .collect(),
        );
        f
    }

    /// The routes of the watcher's endpoint.
    pub(crate) fn route(&self, method: &Method, path: &str) -> Reply {
        if method != Method::GET && method != Method::HEAD {
            return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match path {
            "/healthz" => self.health(),
            _ => crate::observe::http::route_metrics(method, path, || self.shared_exposition()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        engine::{applied::Applied, apply::Drift},
        model::{objects::Object, sysctl},
    };

    /// Without the datapath: nothing here loads a program or reads a pin.
    fn telemetry() -> Arc<Telemetry> {
        let cfg = Config {
            ebpf: false,
            ..Config::default()
        };
        let paths = Paths {
            pin_dir: "/nonexistent/enipin-pins".into(),
            state_dir: "/nonexistent/enipin-state".into(),
        };
        Telemetry::new(&cfg, &paths).unwrap()
    }

    fn reconciled(changes: usize, drift: &[((&'static str, bool), u64)]) -> Reconciled {
        Reconciled {
            changes: vec![Applied::PinBack("/sys/fs/bpf/enipin/link_3".into()); changes],
            drift: drift.iter().copied().collect(),
            ..Reconciled::default()
        }
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// What the last metadata lookup left out is a gauge: 0 until a lookup refuses something.
    #[test]
    fn refused_metadata_entries_are_a_gauge() {
        let t = telemetry();
        let gauge = |t: &Telemetry| {
            let text = t.exposition().unwrap();
            value(&text, "enipin_metadata_refused_entries")
        };
        assert_eq!(gauge(&t), Some(0.0));
        let mut r = reconciled(0, &[]);
        r.metadata = Some(crate::metadata::View {
            refused: 2,
            ..Default::default()
        });
        t.succeeded(&r, 0, Duration::ZERO);
        assert_eq!(gauge(&t), Some(2.0));
    }

    /// Scrapes within [`FRESH`] share one rendering; a reconcile's figures show at once.
    #[test]
    fn scrapes_share_a_fresh_rendering_and_a_reconcile_renders_anew() {
        let t = telemetry();
        let first = t.shared_exposition().unwrap();
        let at = t.rendered.lock().unwrap().as_ref().unwrap().at;
        assert_eq!(t.shared_exposition().unwrap(), first);
        assert_eq!(
            t.rendered.lock().unwrap().as_ref().unwrap().at,
            at,
            "rendered again"
        );
        t.succeeded(&reconciled(1, &[]), 0, Duration::ZERO);
        let after = t.shared_exposition().unwrap();
        let changed = |text: &str| value(text, "enipin_reconciles_total{result=\"changed\"}");
        assert_eq!((changed(&first), changed(&after)), (Some(0.0), Some(1.0)));
    }

    /// A reconcile recorded while a scrape renders never blocks either. Before: `succeeded`
    /// held `last` and waited for `rendered`, while a scrape held `rendered` and waited for
    /// `last`; the watcher then hung, every scrape timing out (a CI run's footprint bench).
    #[test]
    fn a_reconcile_and_a_scrape_at_once_never_deadlock() {
        let t = telemetry();
        let (done, finished) = std::sync::mpsc::channel();
        for scraper in [false, true] {
            let (t, done) = (Arc::clone(&t), done.clone());
            std::thread::spawn(move || {
                for _ in 0..300 {
                    if scraper {
                        t.shared_exposition().unwrap();
                    } else {
                        t.succeeded(&reconciled(1, &[]), 0, Duration::ZERO);
                    }
                }
                done.send(()).unwrap();
            });
        }
        for _ in 0..2 {
            finished
                .recv_timeout(Duration::from_secs(20))
                .expect("a reconcile and a scrape deadlocked");
        }
    }

    /// A metadata outage is seen (issue 28, item 1): requests by outcome, the ENIs unknown, the
    /// last refresh that knew them all, and `/healthz` naming it while enforcement goes on (200).
    /// Reloads are counted by result. Before: none of these series, and `200 ok` alone.
    #[test]
    fn a_metadata_outage_and_reloads_are_seen() {
        use crate::metadata::{Outcomes, View};
        let t = telemetry();
        t.succeeded(&reconciled(0, &[]), 0, Duration::ZERO);
        let known = View {
            requests: 20,
            outcomes: Outcomes {
                ok: 20,
                error: 0,
                no_answer: 0,
            },
            ..View::default()
        };
        t.metadata(&known);
        let text = t.exposition().unwrap();
        let last_ok = value(&text, "enipin_metadata_last_success_timestamp_seconds").unwrap();
        assert!(last_ok > 1.7e9, "{text}");
        let mut down = View {
            requests: 3,
            outcomes: Outcomes {
                ok: 0,
                error: 1,
                no_answer: 2,
            },
            ..View::default()
        };
        down.unknown
            .insert([2, 0, 0, 0, 0, 0x11], "GET /x: HTTP 500".into());
        t.metadata(&down);
        t.reloaded(true);
        t.reloaded(false);
        let text = t.exposition().unwrap();
        let v = |series: &str| value(&text, series).unwrap_or_else(|| panic!("{series}: {text}"));
        assert_eq!(v("enipin_metadata_requests_total{result=\"ok\"}"), 20.0);
        assert_eq!(v("enipin_metadata_requests_total{result=\"error\"}"), 1.0);
        assert_eq!(
            v("enipin_metadata_requests_total{result=\"no_answer\"}"),
            2.0
        );
        assert_eq!(v("enipin_metadata_unknown_enis"), 1.0);
        assert_eq!(
            v("enipin_metadata_last_success_timestamp_seconds"),
            last_ok,
            "kept"
        );
        assert_eq!(v("enipin_config_reloads_total{result=\"ok\"}"), 1.0);
        assert_eq!(v("enipin_config_reloads_total{result=\"rejected\"}"), 1.0);
        let r = t.health();
        assert_eq!(r.status, StatusCode::OK, "enforcement goes on");
        assert_eq!(
            r.body,
            "ok: managing 0 interface(s); metadata unknown for 02:00:00:00:00:11 (GET /x: HTTP \
             500): its last known metadata stands in\n"
        );
        t.metadata(&known);
        assert_eq!(t.health().body, "ok: managing 0 interface(s)\n");
    }

    #[test]
    fn health_follows_the_last_reconcile() {
        let t = telemetry();
        let r = t.health();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.body, "no reconcile yet\n");
        t.failed(
            &ReconcileError::Discover(anyhow::anyhow!("discovering links\nnetlink: EPERM")),
            Duration::from_millis(3),
        );
        let r = t.health();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.body,
            "the last reconcile failed: discovering links netlink: EPERM\n"
        );
        // Counted by the phase that failed; every phase's series is there from the start.
        let text = t.exposition().unwrap();
        let failures = |phase: &str| {
            value(
                &text,
                &format!("enipin_reconcile_failures_total{{phase=\"{phase}\"}}"),
            )
        };
        assert_eq!(failures("discover"), Some(1.0), "{text}");
        for phase in ["state", "plan", "commit", "rules"] {
            assert_eq!(failures(phase), Some(0.0), "{phase} in\n{text}");
        }
        assert_eq!(r.body.lines().count(), 1);
        t.succeeded(&reconciled(0, &[]), 0, Duration::from_millis(2));
        let r = t.health();
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        // A named interface missing: enipin does what it can, and says it is not all.
        let mut left = reconciled(0, &[]);
        left.left_out = vec![("eth9".into(), "unknown interface \"eth9\"".into())];
        t.succeeded(&left, 0, Duration::from_millis(2));
        let r = t.health();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.body,
            "degraded: managing 0 interface(s); left out until it is back: unknown interface \
             \"eth9\"\n"
        );
    }

    fn rule(priority: u32) -> Object {
        Object::Rule(crate::model::route::Rule {
            v6: false,
            priority,
            from: None,
            table: 20002,
            suppress_prefixlen: None,
            fwmark: None,
        })
    }

    /// A pass that put `added` in place and left `in_place`, with its drift.
    fn pass(added: &[Object], in_place: &[Object]) -> Reconciled {
        let mut drift = Drift::new();
        for o in added {
            *drift.entry((o.kind(), true)).or_default() += 1;
        }
        Reconciled {
            changes: vec![Applied::PinBack("/sys/fs/bpf/enipin/link_3".into()); added.len()],
            drift,
            added: added.to_vec(),
            in_place: in_place.iter().cloned().collect(),
            ..Reconciled::default()
        }
    }

    #[test]
    fn restores_count_what_was_put_back_of_what_was_in_place() {
        let t = telemetry();
        let rp = Object::Sysctl(sysctl::Key::new("eth1", sysctl::Knob::RpFilter).unwrap());
        let before = [rule(20000), rule(20002), rp.clone()];
        // The first success installs everything: drift, but no restore.
        t.succeeded(&pass(&before, &before), 0, Duration::ZERO);
        // Someone deleted a rule, reverted a sysctl and removed a link pin (pinned back); a rule
        // new in this pass (an address added, a gateway's source changed) is no restore.
        let now = [rule(20000), rule(20002), rule(20004), rp.clone()];
        t.succeeded(
            &pass(&[rule(20002), rule(20004), rp], &now),
            1,
            Duration::ZERO,
        );
        t.succeeded(&pass(&[], &now), 0, Duration::ZERO);
        let text = t.exposition().unwrap();
        for (series, want) in [
            ("enipin_restored_total{kind=\"rule\"}", 1.0),
            ("enipin_restored_total{kind=\"sysctl\"}", 1.0),
            ("enipin_restored_total{kind=\"datapath_link\"}", 1.0),
            ("enipin_restored_total{kind=\"route\"}", 0.0),
            ("enipin_reconciles_total{result=\"changed\"}", 2.0),
            ("enipin_reconciles_total{result=\"unchanged\"}", 1.0),
            ("enipin_reconciles_total{result=\"failed\"}", 0.0),
            ("enipin_reconcile_duration_seconds_count", 3.0),
            // The last reconcile found nothing out of place.
            ("enipin_drift_objects{kind=\"rule\",state=\"missing\"}", 0.0),
            ("enipin_managed_interfaces", 0.0),
        ] {
            assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
        }
        let build = format!(
            "enipin_build_info{{program_tag=\"none\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{build} in\n{text}");
        assert!(value(&text, "enipin_last_success_timestamp_seconds") > Some(1.7e9));
    }

    #[test]
    fn rules_installed_follows_the_rules_layer_and_what_is_managed() {
        let installed = |rules: bool, managed: usize| {
            let cfg = Config {
                ebpf: false,
                rules,
                ..Config::default()
            };
            let paths = Paths {
                pin_dir: "/nonexistent/enipin-pins".into(),
                state_dir: "/nonexistent/enipin-state".into(),
            };
            let t = Telemetry::new(&cfg, &paths).unwrap();
            let before = value(&t.exposition().unwrap(), "enipin_rules_installed");
            assert_eq!(before, Some(0.0), "nothing installed before a reconcile");
            let r = Reconciled {
                managed: (1..=managed as u32)
                    .map(|i| ManagedInterface::fixture(i, &format!("eth{i}"), Vec::new()))
                    .collect(),
                ..Reconciled::default()
            };
            t.succeeded(&r, 0, Duration::ZERO);
            value(&t.exposition().unwrap(), "enipin_rules_installed")
        };
        assert_eq!(installed(true, 2), Some(1.0));
        assert_eq!(installed(true, 0), Some(0.0), "nothing to manage");
        assert_eq!(installed(false, 2), Some(0.0), "--no-rules");
    }

    #[test]
    fn the_endpoint_routes_metrics_and_health_and_refuses_the_rest() {
        let t = telemetry();
        assert_eq!(
            t.route(&Method::GET, "/healthz").status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let m = t.route(&Method::GET, "/metrics");
        assert_eq!(m.status, StatusCode::OK);
        assert!(
            m.body.contains("# TYPE enipin_reconciles_total counter\n"),
            "{}",
            m.body
        );
        assert_eq!(t.route(&Method::GET, "/").status, StatusCode::NOT_FOUND);
        assert_eq!(
            t.route(&Method::POST, "/healthz").status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
