//! A real Prometheus server (Debian's `prometheus`) scrapes `enipin watch` inside the lab's host
//! namespace every second, with deploy/prometheus/enipin-rules.yml loaded, under a static job's
//! label (`enipin`) or a PodMonitor's (`kube-system/enipin`), and the tests read its query API: misrouted packets of an eBPF-only run are there within two scrape intervals,
//! a rule deleted by hand is there as a restore, and the server evaluates the alert rules on
//! what it scraped. `/healthz` turns 503 while the datapath is removed and 200 once watch put
//! it back. The rule files themselves pass `promtool check rules` and `promtool test rules`, the
//! latter under the three job labels a scrape gives (static, PodMonitor, annotations). Every query
//! of the Grafana dashboard (deploy/grafana/enipin.json) has data there after lab traffic, a
//! restore, metadata lookups and reloads, and the dashboard names only its data source variable.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use enipin_tests::{
    Enipin, Netns, TempDir, Topology,
    http_client::{self, get_with},
    imds::{FakeEni, Imds},
    in_ns, require,
};
use serde_json::Value;

/// Prometheus scrapes and evaluates the rules this often.
const SCRAPE: Duration = Duration::from_secs(1);
/// Where watch serves its metrics inside the namespace (its default port; the namespace is ours).
const WATCH: &str = "127.0.0.1:9717";
/// Where Prometheus serves its API inside the namespace.
const PROMETHEUS: &str = "127.0.0.1:9090";
/// eth1's address in the lab: sent by eth0 when no rule says otherwise.
const SECONDARY: &str = "198.18.0.11";
const PEER: &str = "198.18.0.100";

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// Polls `f` every 20 ms until it gives a value; panics with `what` and `log()` after `limit`.
fn until<T>(
    what: &str,
    limit: Duration,
    log: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < limit, "no {what} within {limit:?}\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `prometheus` in a namespace, its config and TSDB in a temporary directory; killed, and the
/// directory removed, when dropped (a failing test included).
struct Prometheus<'a> {
    child: Child,
    ns: &'a Netns,
    dir: TempDir,
    /// The scrape job's name, the `job` label of every series scraped.
    job: &'static str,
}

impl<'a> Prometheus<'a> {
    /// Starts it scraping `WATCH` as the job `job` and waits until it is ready (bounded).
    fn start(ns: &'a Netns, job: &'static str) -> Self {
        let version = Command::new("prometheus").arg("--version").output();
        assert!(
            version.is_ok_and(|o| o.status.success()),
            "the prometheus server is missing: `cargo xtask setup` installs Debian's prometheus \
             package (/usr/bin/prometheus)"
        );
        let dir = TempDir::new("enipin-prometheus-").expect("a temporary directory");
        let config = format!(
            "global:\n  scrape_interval: {s}s\n  scrape_timeout: {s}s\n  evaluation_interval: {s}s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['{WATCH}']\n",
            s = SCRAPE.as_secs(),
            rules = rules_dir().join("enipin-rules.yml").display(),
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        // `ip netns exec` execs prometheus: the child is the server itself, killed by pid.
        let child = ns
            .command("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning prometheus");
        let p = Self {
            child,
            ns,
            dir,
            job,
        };
        in_ns(ns, || {
            let agent = http_client::agent();
            let url = format!("http://{PROMETHEUS}/-/ready");
            until(
                "ready Prometheus",
                Duration::from_secs(20),
                || p.log(),
                || get_with(&agent, &url).ok().filter(|(s, _)| *s == 200),
            )
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>?<params>` from inside the namespace: the `data` of a success.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let url = format!("http://{PROMETHEUS}/api/v1/{path}");
        let body = in_ns(self.ns, || {
            let mut req = http_client::agent().get(&url);
            for (k, v) in params {
                req = req.query(*k, *v);
            }
            let mut resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
            resp.body_mut().read_to_string().unwrap()
        });
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["status"], "success", "{path} {params:?}: {body}");
        v["data"].clone()
    }

    /// An instant query: each series' labels and value.
    fn query(&self, q: &str) -> Vec<(Value, f64)> {
        let data = self.api("query", &[("query", q)]);
        data["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{q}: {data}"))
            .iter()
            .map(|s| {
                let v = s["value"][1].as_str().and_then(|v| v.parse().ok());
                (s["metric"].clone(), v.unwrap_or(f64::NAN))
            })
            .collect()
    }

    /// The value of a query that selects one series, `None` while it selects none.
    fn value(&self, q: &str) -> Option<f64> {
        let r = self.query(q);
        assert!(r.len() <= 1, "{q} selects more than one series: {r:?}");
        r.first().map(|(_, v)| *v)
    }
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("prometheus' log:\n{}", self.log());
        }
    }
}

/// `enipin watch --metrics-listen WATCH`, its output kept; SIGTERM and reaped when dropped
/// (the state stays installed, and goes with the namespace).
struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn start(e: &Enipin, args: &[&str]) -> Self {
        let mut child = e
            .command(&[&["watch", "--metrics-listen", WATCH], args].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning enipin watch");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [out, err] {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let w = Self { child, lines };
        until(
            "watch's first reconcile",
            Duration::from_secs(10),
            || w.log(),
            || w.log().contains("reconciled after start").then_some(()),
        );
        w
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// SIGTERM, and the exit (bounded).
    fn stop(&mut self) {
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "watch ignores SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: as in stop().
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("watch's log:\n{}", self.log());
        }
    }
}

/// Waits (bounded) until Prometheus has scraped watch and evaluated the rules once; checks the
/// server loaded every alert of enipin-rules.yml and evaluates them without error.
fn scraping(p: &Prometheus) {
    until(
        "a successful scrape",
        20 * SCRAPE,
        || p.log(),
        || (p.value(&format!(r#"up{{job="{}"}}"#, p.job)) == Some(1.0)).then_some(()),
    );
    let alerts = until(
        "evaluated rules",
        10 * SCRAPE,
        || p.log(),
        || {
            let groups = p.api("rules", &[("type", "alert")]);
            let rules = groups["groups"][0]["rules"].as_array()?.clone();
            rules
                .iter()
                .all(|r| r["health"] == "ok" && r["lastEvaluation"] != "0001-01-01T00:00:00Z")
                .then_some(rules)
        },
    );
    let mut names: Vec<&str> = alerts.iter().filter_map(|r| r["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "EnipinAbsent",
            "EnipinDatapathMissing",
            "EnipinMetadataUnknown",
            "EnipinMisroutedDespiteRules",
            "EnipinReconcilesFailing",
            "EnipinWatcherDown"
        ]
    );
}

/// Pings the peer `n` times from eth1's address with no rule installed (`--no-rules`): each
/// leaves by eth0 and the datapath counts it misrouted on eth0 and redirects it. Returns when
/// the last was answered.
fn misroute(topo: &Topology, n: u32) -> Instant {
    // Without rules, a packet from eth1's address leaves by eth0 (the main table's first
    // route), and the datapath redirects it. Prime eth0's neighbour entry for the peer from
    // eth0's own address (an ARP request from eth1's address would be dropped by the vpc).
    assert!(
        topo.host().ping(PEER, 1).unwrap(),
        "the peer does not answer"
    );
    let (sent, received) = topo.host().pings(&["-I", SECONDARY, PEER], n).unwrap();
    let sent_at = Instant::now();
    assert_eq!(
        (sent, received),
        (n, n),
        "the datapath fixes what it counts"
    );
    sent_at
}

#[test]
fn misrouted_packets_of_an_ebpf_only_run_are_in_prometheus_within_two_scrapes() {
    require();
    let topo = Topology::build().expect("topology");
    let e = Enipin::in_ns(topo.host());
    let mut watch = Watch::start(&e, &["--no-rules", "--interval", "60"]);
    // A PodMonitor's job label: the watcher-down alert below must not depend on it.
    let p = Prometheus::start(topo.host(), "kube-system/enipin");
    scraping(&p);
    let eth0 = r#"enipin_misrouted_packets_total{job="kube-system/enipin",interface="eth0"}"#;
    assert_eq!(p.value(eth0), Some(0.0));
    assert_eq!(p.value("enipin_rules_installed"), Some(0.0), "--no-rules");

    let n = 5;
    let sent_at = misroute(&topo, n);
    let seen = until(
        "the misrouted packets in Prometheus",
        10 * SCRAPE,
        || format!("{}\n{}", e.ok(&["stats"]), p.log()),
        || (p.value(eth0) == Some(f64::from(n))).then(|| sent_at.elapsed()),
    );
    eprintln!("{n} misrouted packets in Prometheus {seen:?} after the last was sent");
    assert!(seen <= 2 * SCRAPE, "seen after {seen:?}");
    assert_eq!(
        p.value(r#"enipin_misrouted_packets_total{job="kube-system/enipin",interface="eth1"}"#),
        Some(0.0)
    );
    // With --no-rules, redirecting is the datapath's job: no alert for it.
    assert!(p.query("ALERTS").is_empty(), "{:?}", p.query("ALERTS"));

    // The watcher stops: its target is down at the next scrape, and the alert is pending
    // (it fires after its `for`, a minute).
    watch.stop();
    until(
        "the watcher-down alert pending",
        10 * SCRAPE,
        || p.log(),
        || {
            let pending = r#"ALERTS{alertname="EnipinWatcherDown",alertstate="pending"}"#;
            (p.value(pending) == Some(1.0)).then_some(())
        },
    );
    assert_eq!(p.value(r#"up{job="kube-system/enipin"}"#), Some(0.0));
    e.ok(&["detach"]);
}

#[test]
fn a_rule_deleted_by_hand_is_a_restore_in_prometheus_and_healthz_follows_the_datapath() {
    require();
    let topo = Topology::build().expect("topology");
    let e = Enipin::in_ns(topo.host());
    let watch = Watch::start(&e, &["--interval", "60"]);
    let p = Prometheus::start(topo.host(), "enipin");
    scraping(&p);
    assert_eq!(p.value("enipin_rules_installed"), Some(1.0));
    let restored = |kind: &str| p.value(&format!(r#"enipin_restored_total{{kind="{kind}"}}"#));
    assert_eq!(restored("rule"), Some(0.0));

    // Someone deletes the rule for eth1's address: watch puts it back, and Prometheus has it
    // as a restored rule.
    let rule = topo
        .host()
        .ip(&["rule", "show", "from", SECONDARY])
        .unwrap();
    let pref = rule
        .lines()
        .find_map(|l| l.split(':').next()?.trim().parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no rule from {SECONDARY}:\n{rule}"));
    let pref = pref.to_string();
    let deleted_at = Instant::now();
    topo.host()
        .ip(&["rule", "del", "from", SECONDARY, "pref", &pref])
        .unwrap();
    let seen = until(
        "a restored rule in Prometheus",
        10 * SCRAPE,
        || watch.log(),
        || (restored("rule") >= Some(1.0)).then(|| deleted_at.elapsed()),
    );
    eprintln!("the restore in Prometheus {seen:?} after the rule was deleted");
    let back = topo.host().ip(&["rule", "show", "pref", &pref]).unwrap();
    assert!(back.contains(SECONDARY), "not restored: {back}");

    // Someone removes eth1's link pin: /healthz is 503 (naming it) until watch pins it back
    // (its check runs every 250 ms), then 200; the restore reaches Prometheus.
    let healthz = format!("http://{WATCH}/healthz");
    let eth1 = topo.host().ifindex("eth1").unwrap();
    let pin = e.pins.path().join(format!("link-{eth1}"));
    let statuses = in_ns(topo.host(), || {
        let agent = http_client::agent();
        let (status, body) = get_with(&agent, &healthz).unwrap();
        assert_eq!(status, 200, "{body}");
        // The repair can beat the first poll (a check due right after the removal): try again.
        for _ in 0..3 {
            std::fs::remove_file(&pin).unwrap();
            let t = Instant::now();
            let mut seen = Vec::new();
            while t.elapsed() < Duration::from_secs(3) {
                let (status, body) = get_with(&agent, &healthz).unwrap();
                if seen.last().is_none_or(|(s, _, _)| *s != status) {
                    seen.push((status, body, t.elapsed()));
                }
                if status == 200 && seen.len() > 1 {
                    break;
                }
            }
            if seen.len() > 1 {
                return seen;
            }
        }
        panic!("no 503 seen in three removals of {}", pin.display());
    });
    eprintln!("/healthz after the link pin was removed: {statuses:?}");
    let (status, body, _) = &statuses[0];
    assert_eq!(*status, 503);
    assert!(
        body.starts_with("datapath missing:") && body.contains("link on eth1"),
        "{body}"
    );
    let (status, _, after) = statuses.last().unwrap();
    assert_eq!(*status, 200, "{statuses:?}");
    assert!(*after < Duration::from_secs(1), "{statuses:?}");
    assert!(pin.exists(), "pinned back");
    until(
        "a restored link in Prometheus",
        10 * SCRAPE,
        || watch.log(),
        || (restored("datapath_link") >= Some(1.0)).then_some(()),
    );
    drop(watch);
    e.ok(&["detach"]);
}

/// `promtool check rules` and `promtool test rules`: the alert rules parse, and each fires
/// when it should and not when it should not (deploy/prometheus/enipin-rules.test.yml), under
/// the job label of a static scrape (`enipin`, as written), of a PodMonitor
/// (`kube-system/enipin`) and of annotation scraping (`kubernetes-pods`): the test file is
/// rewritten for each, beside a copy of the rules.
#[test]
fn the_alert_rules_pass_promtool_check_and_test_under_every_job_label() {
    let promtool = |dir: &Path, args: [&str; 3]| {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .expect(
                "running promtool (Debian's prometheus package: cargo xtask setup installs it)",
            );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("SUCCESS"),
            "promtool {} in {}:\n{text}",
            args.join(" "),
            dir.display()
        );
    };
    promtool(&rules_dir(), ["check", "rules", "enipin-rules.yml"]);
    promtool(&rules_dir(), ["test", "rules", "enipin-rules.test.yml"]);
    let tests = std::fs::read_to_string(rules_dir().join("enipin-rules.test.yml")).unwrap();
    for job in ["kube-system/enipin", "kubernetes-pods"] {
        let series = tests.matches(r#"job="enipin""#).count();
        let expected = tests.matches("job: enipin\n").count();
        assert!(
            series > 10 && expected > 5,
            "{series} series, {expected} alerts"
        );
        let rewritten = tests
            .replace(r#"job="enipin""#, &format!(r#"job="{job}""#))
            .replace("job: enipin\n", &format!("job: {job}\n"));
        assert!(!rewritten.contains(r#"job="enipin""#) && !rewritten.contains("job: enipin\n"));
        let tmp = TempDir::new("enipin-promtool-").unwrap();
        std::fs::copy(
            rules_dir().join("enipin-rules.yml"),
            tmp.path().join("enipin-rules.yml"),
        )
        .unwrap();
        std::fs::write(tmp.path().join("enipin-rules.test.yml"), rewritten).unwrap();
        promtool(tmp.path(), ["test", "rules", "enipin-rules.test.yml"]);
    }
}

// The Grafana dashboard, deploy/grafana/enipin.json. Grafana's dashboard JSON schema is not
// available offline (the schema is CUE in Grafana's tree; npm's @grafana/schema ships TypeScript
// types, no JSON schema), so what Grafana would refuse or mis-draw is checked here instead: the
// structure below, and every query run against a real Prometheus that scraped a watcher.

/// The data source every panel and target names: the dashboard's `datasource` variable.
const DATASOURCE: &str = "${datasource}";
/// `schemaVersion` of the Grafana the dashboard was written for (Grafana 12/13's, as
/// @grafana/schema 13.2's `defaultDashboard` has it).
const SCHEMA_VERSION: u64 = 42;

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/enipin.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, rows included, and the panels of collapsed rows (Grafana nests those).
fn panels(d: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// The query Grafana sends for `expr`, its variables replaced as Grafana does: `$instance` set
/// to All (its `allValue`), the intervals to `window` (`$__rate_interval`, `$__range`) and to
/// the scrape interval (`$__interval`).
fn substituted(expr: &str, window: &str) -> String {
    let q = expr
        .replace("$__rate_interval", window)
        .replace("$__range", window)
        .replace("$__interval", &format!("{}s", SCRAPE.as_secs()))
        .replace("$instance", ".+");
    assert!(!q.contains('$'), "a variable left in {q}");
    q
}

/// Every panel has a title and a type, names the `datasource` variable as its data source (and
/// so does each target), has a unique id, a place on the grid that overlaps no other and a
/// unit; every query selects on the `instance` variable and never on a job; the variables are
/// the data source and the instance, the latter listed from enipin's own metric.
#[test]
fn the_grafana_dashboard_names_its_data_source_and_enipins_metrics_only() {
    let d = dashboard();
    assert_eq!(d["schemaVersion"], SCHEMA_VERSION);
    assert_eq!(d["uid"], "enipin");
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let instance = var("instance");
    assert_eq!(instance["type"], "query");
    assert_eq!(
        instance["query"]["query"],
        "label_values(enipin_build_info, instance)"
    );
    assert_eq!(instance["allValue"], ".+", "what substituted() gives");
    assert_eq!(vars.len(), 2, "{vars:?}");
    let datasource = serde_json::json!({"type": "prometheus", "uid": DATASOURCE});
    assert_eq!(instance["datasource"], datasource);

    let all = panels(&d);
    let mut ids: Vec<u64> = all
        .iter()
        .map(|p| p["id"].as_u64().unwrap_or_else(|| panic!("no id: {p}")))
        .collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "ids repeat");
    let mut cells = std::collections::BTreeMap::new();
    let mut queries = 0;
    for p in &all {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.trim().is_empty(), "a panel without a title: {p}");
        let kind = p["type"]
            .as_str()
            .unwrap_or_else(|| panic!("{title}: no type"));
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64(),
            g["y"].as_u64(),
            g["w"].as_u64(),
            g["h"].as_u64(),
        );
        let (Some(x), Some(y), Some(w), Some(h)) = (x, y, w, h) else {
            panic!("{title}: gridPos {g}");
        };
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: gridPos {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title) {
                    panic!("{title} overlaps {other} at ({cx}, {cy})");
                }
            }
        }
        if kind == "row" {
            continue;
        }
        assert_eq!(p["datasource"], datasource, "{title}");
        assert!(
            p["description"].as_str().is_some_and(|s| s.len() > 20),
            "{title}: no description"
        );
        if ["timeseries", "stat", "bargauge"].contains(&kind) {
            let unit = p["fieldConfig"]["defaults"]["unit"].as_str();
            assert!(unit.is_some_and(|u| !u.is_empty()), "{title}: no unit");
        }
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            assert_eq!(t["datasource"], datasource, "{title}");
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: no expr"));
            assert!(expr.contains("enipin_"), "{title}: {expr}");
            assert!(!expr.contains("job"), "{title} selects on a job: {expr}");
            assert!(
                expr.contains(r#"{instance=~"$instance"}"#),
                "{title}: {expr}"
            );
            queries += 1;
        }
    }
    assert!(
        all.iter().filter(|p| p["type"] == "row").count() >= 4,
        "rows"
    );
    assert!(queries >= 25, "{queries} queries");
}

/// Every query of every panel has data in a real Prometheus that scraped a watcher through what
/// each panel shows: lab traffic misrouted (`--no-rules`, so the datapath redirects it), a link
/// pin removed and put back (a restore), a metadata server in the namespace answering
/// (`--metadata aws`, refreshed every second), a SIGHUP taken and one rejected (a bad file).
/// The scrape job is annotation scraping's `kubernetes-pods`: nothing depends on the job's name.
/// The panels' time windows (`$__rate_interval`, `$__range`) cover the events.
#[test]
fn every_query_of_the_grafana_dashboard_has_data_from_a_watcher_in_the_lab() {
    require();
    let d = dashboard();
    let topo = Topology::build().expect("topology");
    let e = Enipin::in_ns(topo.host());
    let imds = Imds::start(
        topo.host(),
        vec![
            FakeEni::new("02:e0:00:00:00:10", 0, &["198.18.0.10"], "198.18.0.0/24"),
            FakeEni::new("02:e0:00:00:00:11", 1, &[SECONDARY], "198.18.0.0/24"),
        ],
    )
    .expect("starting the metadata server");
    let conf = TempDir::new("enipin-grafana-").unwrap();
    let file = conf.path().join("enipin.toml");
    std::fs::write(&file, "# the lab's watcher: flags only\n").unwrap();
    let url = imds.url();
    let watch = Watch::start(
        &e,
        &[
            "--no-rules",
            "--interval",
            "60",
            "--config",
            file.to_str().unwrap(),
            "--metadata",
            "aws",
            "--metadata-endpoint",
            &url,
            "--metadata-interval",
            "1",
        ],
    );
    let p = Prometheus::start(topo.host(), "kubernetes-pods");
    let started = Instant::now();
    scraping(&p);
    let log = || format!("{}\n{}", watch.log(), p.log());
    // The instance variable's query, as Grafana runs it (label values of a metric).
    let instances = p.api("label/instance/values", &[("match[]", "enipin_build_info")]);
    assert_eq!(instances, serde_json::json!([WATCH]));

    let n = 5;
    misroute(&topo, n);
    let eth1 = topo.host().ifindex("eth1").unwrap();
    std::fs::remove_file(e.pins.path().join(format!("link-{eth1}"))).unwrap();
    let hup = || {
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(watch.child.id() as i32, libc::SIGHUP) };
    };
    hup();
    until("a reload taken in Prometheus", 10 * SCRAPE, log, || {
        (p.value(r#"enipin_config_reloads_total{result="ok"}"#) >= Some(1.0)).then_some(())
    });
    std::fs::write(&file, "[select\n").unwrap();
    hup();
    let misrouted = format!(r#"enipin_misrouted_packets_total{{interface="eth0"}} >= {n}"#);
    for (what, q) in [
        (
            "a rejected reload",
            r#"enipin_config_reloads_total{result="rejected"} >= 1"#,
        ),
        (
            "the restored link",
            r#"enipin_restored_total{kind="datapath_link"} >= 1"#,
        ),
        ("the misrouted packets", &misrouted),
        // Without --metadata this stays 0, and the panel of its age shows no value.
        (
            "a full metadata refresh",
            "enipin_metadata_last_success_timestamp_seconds > 0",
        ),
    ] {
        until(what, 10 * SCRAPE, log, || {
            (!p.query(q).is_empty()).then_some(())
        });
    }
    // One scrape more, so that every counter has a sample after its last change.
    std::thread::sleep(2 * SCRAPE);
    let window = format!("{}s", started.elapsed().as_secs() + 2);

    let mut answers = std::collections::BTreeMap::new();
    for panel in panels(&d) {
        let title = panel["title"].as_str().unwrap();
        for t in panel["targets"].as_array().into_iter().flatten() {
            let q = substituted(t["expr"].as_str().unwrap(), &window);
            let r = p.query(&q);
            assert!(!r.is_empty(), "{title}: no series for {q}\n{}", log());
            assert!(
                r.iter().any(|(_, v)| v.is_finite()),
                "{title}: no number in {r:?} for {q}"
            );
            answers
                .entry(title.to_owned())
                .or_insert_with(Vec::new)
                .push((t["legendFormat"].as_str().unwrap_or("").to_owned(), r));
        }
    }
    let with_queries = panels(&d).iter().filter(|p| p["type"] != "row").count();
    assert_eq!(answers.len(), with_queries, "panels answered");
    eprintln!("{} panels answered over {window}", answers.len());
    // What each panel must show of what happened: the series by one label, or the only one.
    let series = |title: &str, label: &str, value: &str| -> f64 {
        let all = answers
            .get(title)
            .unwrap_or_else(|| panic!("no panel {title}"));
        let found: Vec<f64> = all
            .iter()
            .flat_map(|(_, r)| r)
            .filter(|(m, _)| label.is_empty() || m[label] == value)
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(found.len(), 1, "{title} {label}={value}: {all:?}");
        found[0]
    };
    let target = |title: &str, legend: &str| -> f64 {
        let all = answers
            .get(title)
            .unwrap_or_else(|| panic!("no panel {title}"));
        let (_, r) = all
            .iter()
            .find(|(l, _)| l == legend)
            .unwrap_or_else(|| panic!("{title}: no target {legend}: {all:?}"));
        assert_eq!(r.len(), 1, "{title} {legend}: {r:?}");
        r[0].1
    };
    assert!(series("Misrouted packets by interface", "interface", "eth0") > 0.0);
    assert_eq!(
        series("Misrouted packets by interface", "interface", "eth1"),
        0.0
    );
    assert!(series("Misrouted bytes by interface", "interface", "eth0") > 0.0);
    assert!(series("Misrouted packets in the time range", "", "") >= f64::from(n));
    assert!(target("Packets by verdict", "misrouted") > 0.0);
    let unchanged = &answers["Misrouted but passed unchanged"];
    assert!(
        unchanged
            .iter()
            .flat_map(|(_, r)| r)
            .all(|(_, v)| *v == 0.0),
        "{unchanged:?}"
    );
    for eth in ["eth0", "eth1"] {
        assert_eq!(series("Datapath attached", "interface", eth), 1.0, "{eth}");
    }
    assert_eq!(series("Policy rules installed", "", ""), 0.0, "--no-rules");
    assert_eq!(series("Watchers answering", "", ""), 1.0);
    assert_eq!(series("Managed interfaces", "", ""), 2.0);
    assert_eq!(series("Datapath missing", "", ""), 0.0);
    assert!(series("Since the last successful reconcile", "", "") < 60.0);
    assert!(series("Restores in the time range", "kind", "datapath_link") >= 1.0);
    assert!(series("Restores by kind", "kind", "datapath_link") > 0.0);
    assert_eq!(series("Restores in the time range", "kind", "rule"), 0.0);
    assert!(
        series("Reconciles by result", "result", "unchanged")
            + series("Reconciles by result", "result", "changed")
            > 0.0
    );
    let p50 = target("Reconcile duration", "p50");
    assert!(p50 > 0.0 && p50 < 4.1, "p50 {p50}");
    assert!(series("Metadata requests by result", "result", "ok") > 0.0);
    assert_eq!(
        series("Metadata requests by result", "result", "no_answer"),
        0.0
    );
    assert_eq!(series("ENIs with unknown metadata", "", ""), 0.0);
    let refreshed = series("Since the last full metadata refresh", "", "");
    assert!((0.0..5.0).contains(&refreshed), "{refreshed} s");
    assert!(series("Config reloads by result", "result", "ok") >= 1.0);
    assert!(series("Config reloads by result", "result", "rejected") >= 1.0);
    let build = &answers["Build"][0].1;
    assert_eq!(build.len(), 1, "{build:?}");
    assert!(
        build[0].0["program_tag"]
            .as_str()
            .is_some_and(|t| t.len() == 16),
        "{build:?}"
    );
    drop(watch);
    e.ok(&["detach"]);
}
