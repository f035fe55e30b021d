//! `enipin watch` as a child process in the lab topology: it restores a rule deleted by hand,
//! follows a secondary address added and removed at runtime without touching anyone else's rule,
//! tears its state down when the last ENI sharing the subnet goes, and on SIGTERM exits 0
//! leaving the state installed (detach then restores the namespace).
//!
//! Every wait is bounded; the watcher is killed and reaped on drop (also when a test panics),
//! before the namespaces go.

use std::{
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    process::{Child, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use enipin_tests::{
    Enipin, Snapshot, Spec, Topology, http_client,
    imds::{FakeEni, Imds},
    rules,
};

const DEADLINE: Duration = Duration::from_secs(5);
const SECONDARY: &str = "198.18.0.11";
/// Allowed for eth1 by the vpc's source check, but not on the host until a test adds it.
const EXTRA: &str = "198.18.0.21";

/// The seed topology, with EXTRA allowed on eth1 by the vpc and absent from the host.
fn topology() -> Topology {
    let mut spec = Spec::default();
    spec.enis[1].v4.push(EXTRA.parse::<Ipv4Addr>().unwrap());
    let topo = Topology::build_with(spec).expect("building the lab topology");
    topo.host()
        .ip(&["addr", "del", &format!("{EXTRA}/24"), "dev", "eth1"])
        .unwrap();
    topo
}

/// A running `enipin watch`, its stdout and stderr collected line by line.
struct Watcher {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    fn start(e: &Enipin, args: &[&str]) -> Self {
        let mut cmd = e.command(&[&["watch"], args].concat());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning enipin watch");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [out, err] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Self { child, lines }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Number of log lines so far: `since` in [`Watcher::line`] looks only at newer ones.
    fn mark(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// The first line after `since` that contains every one of `parts`, waiting up to DEADLINE.
    fn line(&self, since: usize, parts: &[&str]) -> String {
        eventually(
            &format!("a watch log line with {parts:?}"),
            || {
                self.lines.lock().unwrap()[since..]
                    .iter()
                    .find(|l| parts.iter().all(|p| l.contains(p)))
                    .cloned()
            },
            || self.log(),
        )
        .0
    }

    /// The lines so far that contain `part`.
    fn count(&self, part: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(part))
            .count()
    }

    /// `http://ADDR/metrics` of a watcher started with `--metrics-listen 127.0.0.1:0`.
    fn metrics_url(&self) -> String {
        let banner = self.line(0, &["serving GET /metrics and GET /healthz on http://"]);
        let addr = banner.rsplit_once("http://").unwrap().1;
        format!("http://{addr}/metrics")
    }

    /// Sends `sig` and waits up to `limit` for the exit.
    fn signal(&mut self, sig: i32, limit: Duration) -> (ExitStatus, Duration) {
        let t = Instant::now();
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, t.elapsed());
            }
            assert!(
                t.elapsed() < limit,
                "enipin watch still runs {limit:?} after signal {sig}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `f` every 20 ms until it returns Some, for at most DEADLINE; panics with `what` and
/// `context()` otherwise. Returns the value and how long it took.
fn eventually<T>(
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> (T, Duration) {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, t.elapsed());
        }
        assert!(
            t.elapsed() < DEADLINE,
            "no {what} within {DEADLINE:?}; watch log:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The reconciles the watcher counted (`enipin_reconciles_total`, every result), once the
/// count has stayed the same for 600 ms (two checks of what sends no event, and every follow-up
/// of a burst, have run).
fn reconciles(topo: &Topology, url: &str) -> u64 {
    let now = || {
        let (status, text) = http_client::get(topo.host(), url).unwrap();
        assert_eq!(status, 200, "{text}");
        text.lines()
            .filter(|l| l.starts_with("enipin_reconciles_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let mut last = now();
    eventually(
        "a settled reconcile count",
        || {
            std::thread::sleep(Duration::from_millis(600));
            let n = now();
            let settled = n == last;
            last = n;
            settled.then_some(n)
        },
        String::new,
    )
    .0
}

/// A third ENI on the same subnet, eth2 with 198.18.0.12 (its vpc port has no source check: only
/// its own traffic).
fn add_eth2(topo: &Topology) {
    enipin_tests::veth(
        topo.vpc(),
        "eni2",
        "02:e1:00:00:00:02",
        topo.host(),
        "eth2",
        "02:e0:00:00:00:12",
    )
    .unwrap();
    topo.vpc()
        .ip(&["link", "set", "eni2", "master", "br0"])
        .unwrap();
    topo.host()
        .ip(&["addr", "add", "198.18.0.12/24", "dev", "eth2"])
        .unwrap();
}

/// `ip rule` lines (both families) of the namespace that contain `needle`.
fn rules_with(topo: &Topology, needle: &str) -> Vec<String> {
    rules(topo.host())
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// enipin's two source rules for `addr` (P and P+2), once both are installed.
fn own_rules(topo: &Topology, addr: &str) -> Option<Vec<String>> {
    let r = rules_with(topo, &format!("from {addr} lookup"));
    let ours: Vec<_> = r.into_iter().filter(|l| l.contains("proto 229")).collect();
    (ours.len() == 2).then_some(ours)
}

/// Adds or deletes (`op`) someone else's rule at enipin's first priority (20000): every
/// reconcile refuses the rules layer while it is there.
fn foreign_rule(topo: &Topology, op: &str) {
    let rule = ["from", "198.18.0.50", "lookup", "100", "pref", "20000"];
    topo.host()
        .ip(&[&["rule", op][..], &rule].concat())
        .unwrap();
}

#[test]
fn watch_restores_deleted_rules_and_follows_addresses() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let w = Watcher::start(&e, &["--interval", "60"]);
    w.line(0, &["reconciled after start", "+ rule from 198.18.0.11/32"]);
    assert!(
        topo.peer().ping(SECONDARY, 3).unwrap(),
        "the secondary does not answer under watch:\n{}",
        w.log()
    );

    // 1. Someone (networkd, netplan) deletes one of enipin's rules: it comes back.
    let victim = rules_with(&topo, &format!("from {SECONDARY} lookup"))
        .into_iter()
        .find(|l| l.starts_with("20002:"))
        .unwrap_or_else(|| {
            panic!(
                "no rule at 20002 for {SECONDARY}:\n{}",
                rules(topo.host()).unwrap()
            )
        });
    let table = victim
        .split_whitespace()
        .skip_while(|w| *w != "lookup")
        .nth(1)
        .unwrap()
        .to_owned();
    let since = w.mark();
    topo.host()
        .ip(&[
            "rule", "del", "from", SECONDARY, "pref", "20002", "table", &table,
        ])
        .unwrap();
    let t = Instant::now();
    let (_, latency) = eventually(
        "restored rule",
        || {
            rules_with(&topo, &format!("from {SECONDARY} lookup {table}"))
                .iter()
                .any(|l| l.starts_with("20002:"))
                .then_some(())
        },
        || w.log(),
    );
    let line = w.line(
        since,
        &[
            "rule deleted `from 198.18.0.11/32",
            "+ rule from 198.18.0.11/32 lookup",
        ],
    );
    eprintln!(
        "rule restored {latency:?} after its deletion ({:?} until the log line): {line}",
        t.elapsed()
    );
    assert!(
        topo.peer().ping(SECONDARY, 3).unwrap(),
        "the secondary does not answer after the restore:\n{}",
        w.log()
    );

    // 2. A secondary address appears on eth1 at runtime: its rules follow, and it answers.
    let since = w.mark();
    topo.host()
        .ip(&["addr", "add", &format!("{EXTRA}/24"), "dev", "eth1"])
        .unwrap();
    let (added, took) = eventually(
        "rules for the new address",
        || own_rules(&topo, EXTRA),
        || w.log(),
    );
    assert!(
        added.iter().all(|l| l.contains(&format!("lookup {table}"))),
        "{added:?} do not use eth1's table {table}"
    );
    w.line(
        since,
        &[
            "address 198.18.0.21/24 added on eth1",
            "+ rule from 198.18.0.21/32",
        ],
    );
    eprintln!("new address's rules installed after {took:?}");
    assert!(
        topo.peer().ping(EXTRA, 3).unwrap(),
        "the new secondary address does not answer:\n{}",
        w.log()
    );

    // Someone else's rule: no change, so no log line.
    topo.host()
        .ip(&[
            "rule", "add", "from", EXTRA, "lookup", "100", "pref", "30000",
        ])
        .unwrap();
    let foreign = rules_with(&topo, "lookup 100");
    assert_eq!(foreign.len(), 1, "{foreign:?}");
    let since = w.mark();
    std::thread::sleep(Duration::from_millis(600));
    let quiet: Vec<_> = w.lines.lock().unwrap()[since..].to_vec();
    assert!(
        quiet.iter().all(|l| !l.contains("reconciled")),
        "a no-op reconcile logged: {quiet:?}"
    );

    // 3. The address goes: its rules go, the foreign rule stays as it was.
    let since = w.mark();
    topo.host()
        .ip(&["addr", "del", &format!("{EXTRA}/24"), "dev", "eth1"])
        .unwrap();
    eventually(
        "removal of the address's rules",
        || {
            rules_with(&topo, &format!("from {EXTRA} lookup {table}"))
                .is_empty()
                .then_some(())
        },
        || w.log(),
    );
    w.line(
        since,
        &[
            "address 198.18.0.21/24 deleted from eth1",
            "- rule from 198.18.0.21/32",
        ],
    );
    assert_eq!(
        rules_with(&topo, "lookup 100"),
        foreign,
        "the foreign rule changed"
    );
    assert!(
        own_rules(&topo, SECONDARY).is_some(),
        "the other secondary lost its rules:\n{}",
        rules(topo.host()).unwrap()
    );
    assert!(topo.peer().ping(SECONDARY, 3).unwrap(), "{}", w.log());
}

#[test]
fn watch_exits_on_sigterm_leaving_the_state_and_detach_restores() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let before = Snapshot::take(topo.host(), &["eth0", "eth1"], e.pins.path()).unwrap();
    let mut w = Watcher::start(&e, &[]);
    w.line(0, &["reconciled after start"]);
    // While it runs, attach and detach are refused (it holds the state lock).
    let out = e.cmd(&["detach"]);
    assert!(!out.status.success(), "detach ran beside the watcher");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lock"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 4. SIGTERM: exit 0 within 2 s, state left installed and without drift.
    let (st, took) = w.signal(libc::SIGTERM, Duration::from_secs(2));
    assert!(
        st.success(),
        "enipin watch exited with {st} on SIGTERM:\n{}",
        w.log()
    );
    eprintln!("exited {took:?} after SIGTERM");
    w.line(0, &["SIGTERM", "stays installed"]);
    assert!(
        own_rules(&topo, SECONDARY).is_some(),
        "rules gone after SIGTERM:\n{}",
        rules(topo.host()).unwrap()
    );
    let status = e.ok(&["status"]);
    assert!(
        status.contains("state: attached") && status.contains("drift: none"),
        "{status}"
    );
    assert!(status.contains("datapath: eth1"), "{status}");
    assert!(
        topo.peer().ping(SECONDARY, 3).unwrap(),
        "the secondary stopped answering after SIGTERM"
    );

    e.ok(&["detach"]);
    let after = Snapshot::take(topo.host(), &["eth0", "eth1"], e.pins.path()).unwrap();
    assert_eq!(
        before.diff(&after),
        Vec::<String>::new(),
        "detach after watch left residue"
    );
}

#[test]
fn watch_removes_stale_state_when_an_eni_goes() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let w = Watcher::start(&e, &["--interval", "60"]);
    w.line(0, &["reconciled after start"]);
    let since = w.mark();
    // eth1 is detached: eth0 is alone in its subnet, so nothing needs pinning any more.
    topo.host().ip(&["link", "del", "eth1"]).unwrap();
    eventually(
        "removal of enipin's rules",
        || rules_with(&topo, "proto 229").is_empty().then_some(()),
        || w.log(),
    );
    let line = w.line(
        since,
        &["link", "nothing to manage", "- rule from 198.18.0.10/32"],
    );
    eprintln!("{line}");
    eventually(
        "removal of the pins",
        || (!e.pins.path().exists()).then_some(()),
        || w.log(),
    );
    let routes = topo
        .host()
        .ip(&["route", "show", "table", "all", "proto", "229"])
        .unwrap();
    assert!(routes.trim().is_empty(), "enipin's routes left: {routes}");
}

/// The seed's two ENIs with IPv4 only: eth0's address is its only one.
fn v4_topology() -> Topology {
    Topology::build_with(Spec {
        ipv6: false,
        ..Spec::default()
    })
    .expect("building the lab topology")
}

/// The id of the pinned datapath program.
fn program_id(e: &Enipin) -> u32 {
    aya::programs::ProgramInfo::from_pin(e.pins.path().join("prog"))
        .expect("reading the pinned program")
        .id()
}

/// `owned_here` of `ifname` in `enipin stats --json`.
fn owned_here(e: &Enipin, ifname: &str) -> u64 {
    let stats: serde_json::Value = serde_json::from_str(&e.ok(&["stats", "--json"])).unwrap();
    stats["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["interface"] == ifname)
        .and_then(|row| row["owned_here"].as_u64())
        .unwrap_or_else(|| panic!("no counters for {ifname}: {stats}"))
}

/// What networkd's `reconfigure` does to a link (issue 24): its address removed and added back
/// 30 ms later, then its default route. The watcher keeps the datapath (the same program, its
/// counters) and eth1's rules, puts eth0's rules back, and neither detaches nor tears down.
#[test]
fn an_address_removed_and_added_back_tears_nothing_down() {
    let topo = v4_topology();
    let e = Enipin::in_ns(topo.host());
    let w = Watcher::start(&e, &["--interval", "60"]);
    w.line(0, &["reconciled after start", "+ rule from 198.18.0.11/32"]);
    assert!(topo.peer().ping(SECONDARY, 3).unwrap(), "{}", w.log());
    let (id, owned) = (program_id(&e), owned_here(&e, "eth1"));
    assert!(owned > 0, "no packet counted on eth1");
    // Sorted: a rule added back comes after the others of its priority in `ip rule`.
    let sorted = || {
        let mut r = rules_with(&topo, "proto 229");
        r.sort();
        r
    };
    let ours = sorted();
    let since = w.mark();
    let t = Instant::now();
    topo.host()
        .sh("ip addr del 198.18.0.10/24 dev eth0; sleep 0.03; \
             ip addr add 198.18.0.10/24 dev eth0; \
             ip route add default via 198.18.0.1 dev eth0 metric 100")
        .unwrap();
    let (_, back) = eventually(
        "enipin's rules as before",
        || (sorted() == ours).then_some(()),
        || w.log(),
    );
    eprintln!(
        "rules as before {:?} after the address came back ({:?} after it went)",
        back,
        t.elapsed()
    );
    // Past the grace: a pass that would tear down has run by then.
    std::thread::sleep(Duration::from_millis(2500));
    let log = w.lines.lock().unwrap()[since..].join("\n");
    for word in [
        "nothing to manage",
        "detach",
        "remove pins",
        "load enipin",
        "- rule from 198.18.0.11",
    ] {
        assert!(
            !log.contains(word),
            "{word:?} after an address blinked:\n{log}"
        );
    }
    assert_eq!(sorted(), ours, "{log}");
    assert_eq!(program_id(&e), id, "the program was loaded anew:\n{log}");
    assert!(
        owned_here(&e, "eth1") >= owned,
        "the counters restarted:\n{log}"
    );
    assert!(topo.peer().ping(SECONDARY, 3).unwrap(), "{log}");
}

/// `enipin_restored_total{kind="rule"}` of the watcher at `url`.
fn restored_rules(topo: &Topology, url: &str) -> u64 {
    let (status, text) = http_client::get(topo.host(), url).unwrap();
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("enipin_restored_total{kind=\"rule\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no restored rules in:\n{text}")) as u64
}

/// networkd deletes enipin's rules while it has the main table's default route deleted too: the
/// pass that puts the rule back also sees eth0's gateway come from another source (eth1's
/// default route, the same router). The rule put back is counted all the same (issue 24: 100
/// deletions counted 0 restores).
#[test]
fn a_restore_is_counted_whatever_else_changed_in_the_same_pass() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let w = Watcher::start(&e, &["--interval", "60", "--metrics-listen", "127.0.0.1:0"]);
    w.line(0, &["reconciled after start"]);
    let url = w.metrics_url();
    reconciles(&topo, &url);
    let before = restored_rules(&topo, &url);
    let since = w.mark();
    // One `ip -batch`: both deletions are in the namespace before the watcher's pass reads it.
    topo.host()
        .sh(&format!(
            "ip -batch - <<'EOF'\nroute del default dev eth0\nrule del from {SECONDARY} pref 20002\nEOF"
        ))
        .unwrap();
    let line = w.line(since, &["+ rule from 198.18.0.11/32", "pref 20002"]);
    eprintln!("{line}");
    reconciles(&topo, &url);
    assert_eq!(
        restored_rules(&topo, &url),
        before + 1,
        "the rule put back is not counted:\n{}",
        w.log()
    );
}

/// Someone else's rule at enipin's priority from the start: the rules layer is refused (and
/// retried), but the datapath, which needs no rule priority, is attached all the same and keeps
/// the secondary answering; `/healthz` says the reconcile failed.
#[test]
fn a_rules_conflict_does_not_take_the_datapath_with_it() {
    let topo = topology();
    foreign_rule(&topo, "add");
    let e = Enipin::in_ns(topo.host());
    let w = Watcher::start(&e, &["--interval", "60", "--metrics-listen", "127.0.0.1:0"]);
    let line = w.line(0, &["failed (attempt 1", "not enipin's"]);
    assert!(line.contains("the datapath is in place"), "{line}");
    assert!(
        e.pins.path().join("prog").exists(),
        "no datapath:\n{}",
        w.log()
    );
    assert!(rules_with(&topo, "proto 229").is_empty(), "{}", w.log());
    let health = w.metrics_url().replace("/metrics", "/healthz");
    let (status, body) = http_client::get(topo.host(), &health).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not enipin's"), "{body}");
    // Counted as the rules layer's failure, not as the whole pass's.
    let (_, metrics) = http_client::get(topo.host(), &w.metrics_url()).unwrap();
    let failed = |phase: &str| {
        let series = format!("enipin_reconcile_failures_total{{phase=\"{phase}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {series}in\n{metrics}"))
    };
    assert!(failed("rules") >= 1.0, "{metrics}");
    assert_eq!(failed("plan") + failed("commit"), 0.0, "{metrics}");
    assert!(topo.peer().ping(SECONDARY, 3).unwrap(), "{}", w.log());
}

/// `attach --no-rules` after a full attach removes enipin's rules and routes and keeps the
/// datapath; a rule of enipin's left while the layer is off is drift for `status`.
#[test]
fn switching_the_rules_layer_off_removes_exactly_its_objects() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    e.ok(&["attach"]);
    assert!(!rules_with(&topo, "proto 229").is_empty());
    let out = e.ok(&["attach", "--no-rules"]);
    let routes = || {
        let r = topo
            .host()
            .ip(&["route", "show", "table", "all", "proto", "229"]);
        r.unwrap().trim().to_owned()
    };
    assert!(rules_with(&topo, "proto 229").is_empty(), "{out}");
    assert_eq!(routes(), "", "{out}");
    assert!(e.pins.path().join("prog").exists(), "{out}");
    assert!(topo.peer().ping(SECONDARY, 3).unwrap(), "{out}");
    let table = 20000 + topo.host().ifindex("eth1").unwrap();
    topo.host()
        .ip(&[
            "rule",
            "add",
            "from",
            SECONDARY,
            "lookup",
            &table.to_string(),
            "pref",
            "20002",
            "proto",
            "229",
        ])
        .unwrap();
    let status = e.cmd(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(!status.status.success(), "{text}");
    assert!(
        text.contains(&format!("- rule from {SECONDARY}/32")),
        "{text}"
    );
    e.ok(&["detach"]);
    assert!(rules_with(&topo, "proto 229").is_empty());
}

/// The layers switched through the config file and SIGHUP, as an operator moves a running
/// watcher to eBPF-only and back: each switch removes exactly the layer switched off, keeps the
/// other running (the program is not reloaded: same id), and `status` agrees (no drift).
#[test]
fn sighup_switches_one_layer_off_and_keeps_the_other() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let dir = enipin_tests::TempDir::new("enipin-config-").unwrap();
    let file = dir.path().join("enipin.toml");
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    write("[layers]\nrules = true\nebpf = true\n");
    let w = Watcher::start(
        &e,
        &["--config", file.to_str().unwrap(), "--interval", "60"],
    );
    w.line(0, &["reconciled after start"]);
    assert!(!rules_with(&topo, "proto 229").is_empty(), "{}", w.log());
    let id = program_id(&e);
    let sighup = |text: &str, change: &str| {
        write(text);
        let since = w.mark();
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(w.child.id() as i32, libc::SIGHUP) };
        w.line(since, &["SIGHUP: read", change]);
        w.line(since, &["reconciled after SIGHUP"]);
    };
    let routes = || {
        let r = topo
            .host()
            .ip(&["route", "show", "table", "all", "proto", "229"]);
        r.unwrap().trim().to_owned()
    };
    let no_drift = |when: &str| {
        let out = e.cmd(&["status"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{when}: status\n{text}\n{}", w.log());
    };

    // 1. eBPF only: the rules and their routes go, the same program keeps enforcing.
    sighup(
        "[layers]\nrules = false\nebpf = true\n",
        "layers.rules true -> false",
    );
    assert!(rules_with(&topo, "proto 229").is_empty(), "{}", w.log());
    assert_eq!(routes(), "", "{}", w.log());
    assert_eq!(program_id(&e), id, "the program was reloaded:\n{}", w.log());
    no_drift("eBPF only");
    topo.peer().ip(&["neigh", "flush", "all"]).unwrap();
    assert!(topo.peer().ping(SECONDARY, 3).unwrap(), "{}", w.log());

    // 2. Rules only: the rules come back, the program and its links go.
    sighup(
        "[layers]\nrules = true\nebpf = false\n",
        "layers.ebpf true -> false",
    );
    assert!(!rules_with(&topo, "proto 229").is_empty(), "{}", w.log());
    assert!(!e.pins.path().join("prog").exists(), "{}", w.log());
    let pinned: Vec<_> = std::fs::read_dir(e.pins.path())
        .map(|d| d.flatten().map(|f| f.file_name()).collect())
        .unwrap_or_default();
    assert!(pinned.is_empty(), "left pinned: {pinned:?}\n{}", w.log());
    no_drift("rules only");
    assert!(topo.peer().ping(SECONDARY, 3).unwrap(), "{}", w.log());
}

#[test]
fn watch_debug_prints_the_datapaths_log_records() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    // A smaller MTU on eth1: a redirect of a bigger packet onto it fails the MTU check, a rare
    // path the program logs when --debug is on.
    topo.host()
        .ip(&["link", "set", "eth1", "mtu", "1280"])
        .unwrap();
    let w = Watcher::start(&e, &["--no-rules", "--debug", "--interval", "60"]);
    w.line(0, &["reading the datapath's log"]);
    // Without rules, a packet from eth1's address leaves by eth0 (the main table's first route).
    // Prime eth0's neighbour entry for the peer from eth0's own address (an ARP request sent from
    // eth1's address would be dropped by the vpc).
    assert!(
        topo.host().ping("198.18.0.100", 1).unwrap(),
        "the peer does not answer eth0's primary"
    );
    let since = w.mark();
    let _ = topo
        .host()
        .ping_command(&["-s", "1400", "-I", SECONDARY, "198.18.0.100"], 1)
        .output()
        .expect("spawning ping");
    let line = w.line(since, &["datapath", "not redirecting", "check_mtu"]);
    eprintln!("{line}");
    let stats = e.ok(&["stats", "--json"]);
    assert!(
        stats.contains("\"mtu_exceeded\": 1") || stats.contains("\"mtu_exceeded\":1"),
        "{stats}"
    );
}

/// Issue 26, item 3: a failure's backoff listens to the world. After four failed attempts (a
/// conflicting rule) the backoff is 8 s; removing the rule is a netlink event, and the retry
/// comes within a second of the failed attempt instead of when the backoff ends.
#[test]
fn a_change_ends_a_failures_backoff() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let w = Watcher::start(&e, &["--interval", "60"]);
    w.line(0, &["reconciled after start"]);
    let since = w.mark();
    foreign_rule(&topo, "add");
    for attempt in 1..4 {
        w.line(since, &[&format!("failed (attempt {attempt}, ")]);
    }
    w.line(since, &["failed (attempt 4, retrying in 8s)"]);
    let t = Instant::now();
    foreign_rule(&topo, "del");
    w.line(since, &["reconcile succeeded after"]);
    let took = t.elapsed();
    eprintln!("backoff 8 s: the retry came {took:?} after the conflicting rule was removed");
    assert!(
        took < Duration::from_secs(3),
        "the retry waited out the backoff: {took:?}\n{}",
        w.log()
    );
}

#[test]
fn a_failing_reconcile_changes_nothing_and_is_retried() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let w = Watcher::start(&e, &["--interval", "60"]);
    w.line(0, &["reconciled after start"]);
    let ours = rules_with(&topo, "proto 229");
    let since = w.mark();
    // Someone else's rule at enipin's priority: every reconcile refuses (conflict) until it goes.
    foreign_rule(&topo, "add");
    w.line(
        since,
        &[
            "reconcile after",
            "failed (attempt 1",
            "left as it was",
            "not enipin's",
        ],
    );
    assert_eq!(
        rules_with(&topo, "proto 229"),
        ours,
        "a failed reconcile changed enipin's rules"
    );
    assert!(
        e.pins.path().join("prog").exists(),
        "a failed reconcile removed the datapath"
    );
    // One of enipin's rules goes meanwhile: restored once the conflict is resolved.
    topo.host()
        .ip(&["rule", "del", "from", SECONDARY, "pref", "20002"])
        .unwrap();
    foreign_rule(&topo, "del");
    w.line(since, &["reconcile succeeded after"]);
    w.line(since, &["+ rule from 198.18.0.11/32", "pref 20002"]);
    assert_eq!(rules_with(&topo, "proto 229"), ours);
    assert!(topo.peer().ping(SECONDARY, 3).unwrap(), "{}", w.log());
}

#[test]
fn watch_adopts_an_eni_attached_at_runtime() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let w = Watcher::start(&e, &["--interval", "60"]);
    w.line(0, &["reconciled after start"]);
    let since = w.mark();
    add_eth2(&topo);
    let (rules, took) = eventually(
        "rules for eth2",
        || own_rules(&topo, "198.18.0.12"),
        || w.log(),
    );
    let line = w.line(
        since,
        &[
            "managing eth0, eth1, eth2",
            "+ attach enipin_egress to eth2",
        ],
    );
    eprintln!("eth2 adopted after {took:?}: {rules:?}\n{line}");
    let ifindex = topo.host().ifindex("eth2").unwrap();
    // A TCX link pin, or the marker of a netlink filter on kernels before 6.6.
    let pins = enipin_tests::pins(e.pins.path()).unwrap();
    assert!(
        pins.iter()
            .any(|p| p.ends_with(&format!("/link-{ifindex}"))
                || p.contains(&format!("/nl-{ifindex}-"))),
        "no attachment pinned for eth2: {pins:?}"
    );
    assert!(
        topo.peer().ping("198.18.0.12", 3).unwrap(),
        "eth2's address does not answer:\n{}",
        w.log()
    );
    assert!(topo.peer().ping(SECONDARY, 3).unwrap(), "{}", w.log());
}

/// Kernels without TCX (< 6.6) take a clsact filter, which another tool can delete without a
/// trace (`tc filter del`, a qdisc replaced): watch sees the filter gone, attaches a new one and
/// records it; detach then leaves no filter and no qdisc. Before, watch took the record for the
/// filter and left the interface without enforcement.
#[test]
fn watch_puts_back_a_deleted_netlink_filter() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let dir = enipin_tests::TempDir::new("enipin-config-").unwrap();
    let file = dir.path().join("enipin.toml");
    std::fs::write(&file, "[datapath]\nattach = \"netlink\"\n").unwrap();
    let w = Watcher::start(&e, &["--config", file.to_str().unwrap(), "--interval", "1"]);
    w.line(0, &["reconciled after start", "links +2"]);
    let filter = |dev: &str| {
        topo.host()
            .sh(&format!("tc filter show dev {dev} egress"))
            .unwrap()
            .lines()
            .find(|l| l.contains(enipin_ebpf::PROGRAM))
            .map(str::to_owned)
    };
    let line = filter("eth1").expect("enipin's filter on eth1");
    // `filter protocol all pref 49152 bpf chain 0 handle 0x1 enipin_egress ...`
    let word = |key: &str| {
        let mut words = line.split_whitespace().skip_while(|w| *w != key);
        words.nth(1).unwrap().to_owned()
    };
    let (pref, handle) = (word("pref"), word("handle"));
    let since = w.mark();
    topo.host()
        .sh(&format!(
            "tc filter del dev eth1 egress pref {pref} handle {handle} bpf"
        ))
        .unwrap();
    assert_eq!(filter("eth1"), None, "deleted");
    let (_, took) = eventually(
        "enipin's filter back on eth1",
        || filter("eth1"),
        || w.log(),
    );
    w.line(since, &["+ attach enipin_egress to eth1"]);
    eprintln!("filter back after {took:?}");
    assert!(topo.peer().ping(SECONDARY, 3).unwrap(), "{}", w.log());
    drop(w);
    e.ok(&["detach"]);
    for dev in ["eth0", "eth1"] {
        let qdiscs = topo.host().sh(&format!("tc qdisc show dev {dev}")).unwrap();
        assert!(!qdiscs.contains("clsact"), "{dev}: {qdiscs}");
    }
}

/// An ENI named in `--interfaces` that is detached does not freeze the watcher: it is left out
/// (its state removed, said once), the others keep being reconciled, and it is taken back when it
/// returns.
#[test]
fn watch_leaves_out_a_named_eni_while_it_is_gone() {
    let topo = topology();
    add_eth2(&topo);
    let e = Enipin::in_ns(topo.host());
    let w = Watcher::start(
        &e,
        &[
            "--interfaces",
            "eth0,eth1,eth2",
            "--interval",
            "60",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    w.line(0, &["reconciled after start", "managing eth0, eth1, eth2"]);
    let health = w.metrics_url().replace("/metrics", "/healthz");
    let healthz = || http_client::get(topo.host(), &health).unwrap();
    assert_eq!(healthz().0, 200, "{}", healthz().1);

    let since = w.mark();
    topo.host().ip(&["link", "del", "eth2"]).unwrap();
    w.line(since, &["left out until it is back", "\"eth2\""]);
    // Not all that was asked for is managed: /healthz says so (before: 200 ok).
    let (status, body) = healthz();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("degraded: managing 2 interface(s)"),
        "{body}"
    );
    assert!(body.contains("\"eth2\""), "{body}");
    eventually(
        "removal of eth2's rules",
        || own_rules(&topo, "198.18.0.12").is_none().then_some(()),
        || w.log(),
    );
    w.line(
        since,
        &["managing eth0, eth1", "- rule from 198.18.0.12/32"],
    );

    // Still reconciling the others: a new address on eth1 is pinned.
    topo.host()
        .ip(&["addr", "add", &format!("{EXTRA}/24"), "dev", "eth1"])
        .unwrap();
    eventually(
        "rules for the new address",
        || own_rules(&topo, EXTRA),
        || w.log(),
    );
    assert!(topo.peer().ping(EXTRA, 2).unwrap(), "{}", w.log());

    // eth2 is back (a new ifindex): taken back.
    let since = w.mark();
    add_eth2(&topo);
    w.line(since, &["every interface named in --interfaces is back"]);
    eventually(
        "rules for eth2 again",
        || own_rules(&topo, "198.18.0.12"),
        || w.log(),
    );
    w.line(since, &["managing eth0, eth1, eth2"]);
    assert_eq!(healthz().0, 200, "{}", healthz().1);
    assert!(
        topo.peer().ping("198.18.0.12", 3).unwrap(),
        "eth2's address does not answer:\n{}",
        w.log()
    );
    // Each reason said once, not on every pass (a second line only when the reason changed:
    // eth2 can be seen between its creation and `ip link set up`, "down" rather than "unknown").
    let log = w.log();
    let notes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("left out until it is back"))
        .collect();
    let distinct: std::collections::BTreeSet<&str> = notes.iter().copied().collect();
    assert_eq!(notes.len(), distinct.len(), "{log}");
    assert!(!notes.is_empty() && notes.len() <= 2, "{log}");
}

/// A name this namespace never had is a typo (issue 26, item 4): `watch` refuses it at start,
/// and a reload that brings one in is rejected with the running configuration kept. Before,
/// `--interfaces eht1` unmanaged everything while `/healthz` said `200 ok: managing 0`.
#[test]
fn a_name_never_seen_is_refused_at_start_and_on_reload() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let err = fails_within(
        &e,
        &["watch", "--interfaces", "eth0,eht1", "--interval", "60"],
        DEADLINE,
    );
    assert!(
        err.contains("never had") && err.contains("\"eht1\""),
        "{err}"
    );
    assert!(
        err.contains("eth1 (02:e0:00:00:00:11)"),
        "what there is: {err}"
    );
    assert!(
        rules_with(&topo, "proto 229").is_empty(),
        "changed something"
    );

    let dir = enipin_tests::TempDir::new("enipin-config-").unwrap();
    let file = dir.path().join("enipin.toml");
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    write("[select]\ninterfaces = [\"eth0\", \"eth1\"]\n");
    let w = Watcher::start(
        &e,
        &["--config", file.to_str().unwrap(), "--interval", "60"],
    );
    w.line(0, &["reconciled after start", "managing eth0, eth1"]);
    write("[select]\ninterfaces = [\"eht1\"]\n");
    let since = w.mark();
    // SAFETY: plain syscall on our own child's pid.
    unsafe { libc::kill(w.child.id() as i32, libc::SIGHUP) };
    w.line(
        since,
        &["SIGHUP", "\"eht1\"", "keeping the running configuration"],
    );
    w.line(since, &["SIGHUP: reconciling now"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(own_rules(&topo, SECONDARY).is_some(), "{}", w.log());
    assert!(
        !w.log().lines().skip(since).any(|l| l.contains("- rule")),
        "the typo removed rules:\n{}",
        w.log()
    );

    // The same name once it exists is taken (it is there now, not a typo).
    let since = w.mark();
    topo.host()
        .ip(&["link", "set", "eth1", "name", "eht1"])
        .unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(w.child.id() as i32, libc::SIGHUP) };
    w.line(since, &["SIGHUP: read", "select.interfaces"]);
    assert!(
        !w.log()
            .lines()
            .skip(since)
            .any(|l| l.contains("keeping the running")),
        "{}",
        w.log()
    );
}

/// Runs `enipin ARGS`, which must exit unsuccessfully within `limit` (a watcher that starts
/// instead is killed, and the test fails); returns its stderr.
fn fails_within(e: &Enipin, args: &[&str], limit: Duration) -> String {
    let mut child = e
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning enipin");
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "enipin {args:?} still ran after {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "enipin {args:?} succeeded:\n{err}");
    err
}

/// One enipin per network namespace (issue 26, items 5 and 11): a second watcher or attach with
/// other state and pin directories and another priority refuses at start, naming the first
/// (its PID and directories), and changes nothing. Before, two such watchers deleted each
/// other's rules: 9,936 rule events in 10 s.
#[test]
fn a_second_enipin_in_the_namespace_refuses_naming_the_first() {
    let topo = topology();
    let first = Enipin::in_ns(topo.host());
    let w = Watcher::start(&first, &["--interval", "60"]);
    w.line(0, &["reconciled after start"]);
    let rules_before = rules_with(&topo, "proto 229");
    let second = Enipin::in_ns(topo.host());
    let pid = format!("pid {}", w.child.id());
    let state_dir = first.paths().state_dir.display().to_string();
    for args in [
        &[
            "watch",
            "--priority",
            "30000",
            "--interval",
            "60",
            "--metrics-listen",
            "127.0.0.1:9718",
        ][..],
        &["attach", "--priority", "30000"][..],
    ] {
        let err = fails_within(&second, args, DEADLINE);
        assert!(
            err.contains("another enipin runs in this network namespace")
                && err.contains(&pid)
                && err.contains(&state_dir),
            "{args:?}: {err}"
        );
    }
    assert_eq!(rules_with(&topo, "proto 229"), rules_before, "{}", w.log());
    // status says which enipin runs here (issue 28's summary).
    let status = first.ok(&["status"]);
    assert!(
        status.contains(&format!(
            "running: enipin watch, {pid}, state dir {state_dir}"
        )),
        "{status}"
    );
    assert!(
        !w.log().contains("reconciled after") || w.count("reconciled after") == 1,
        "the first had to repair something:\n{}",
        w.log()
    );
    // Once the first is gone, the namespace is free (the kernel released the claim).
    drop(w);
    first.ok(&["detach"]);
    second.ok(&["attach", "--priority", "30000"]);
    second.ok(&["detach"]);
}

/// The state file removed under watch (issue 26, item 8) is written back within a check
/// (250 ms) from the watcher's record, so `detach` restores the sysctls as they were before
/// enipin. Without a watcher, `status` says the file is missing (exit 1), and `detach` removes
/// what is tagged as enipin's and says which sysctls it could not set back. Before: not
/// rewritten, `status` 0, and detach left arp_ignore=1, arp_announce=2.
#[test]
fn a_removed_state_file_is_written_back_and_detach_restores_everything() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let before = Snapshot::take(topo.host(), &["eth0", "eth1"], e.pins.path()).unwrap();
    let w = Watcher::start(&e, &["--interval", "60"]);
    w.line(0, &["reconciled after start"]);
    let arp_ignore = || {
        topo.host()
            .sh("cat /proc/sys/net/ipv4/conf/eth1/arp_ignore")
            .unwrap()
    };
    assert_eq!(arp_ignore().trim(), "1", "enipin sets it");
    let since = w.mark();
    std::fs::remove_file(e.state_file()).unwrap();
    w.line(since, &["was gone: written back"]);
    let (_, took) = eventually(
        "the state file back",
        || e.state_file().exists().then_some(()),
        || w.log(),
    );
    eprintln!("the state file was back after {took:?}");
    drop(w);
    e.ok(&["detach"]);
    let after = Snapshot::take(topo.host(), &["eth0", "eth1"], e.pins.path()).unwrap();
    assert_eq!(
        before.diff(&after),
        Vec::<String>::new(),
        "detach left residue"
    );

    // Without a watcher to write it back: status says so, detach says what it cannot restore.
    e.ok(&["attach"]);
    std::fs::remove_file(e.state_file()).unwrap();
    let out = e.cmd(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("state file missing"), "{text}");
    let out = e.cmd(&["detach"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("is missing") && err.contains("arp_ignore"),
        "{err}"
    );
    assert!(rules_with(&topo, "proto 229").is_empty(), "rules left");
}

#[test]
fn watch_takes_sighup_as_a_reconcile_not_an_exit() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let mut w = Watcher::start(&e, &[]);
    w.line(0, &["reconciled after start"]);
    let since = w.mark();
    // SAFETY: plain syscall on our own child's pid.
    unsafe { libc::kill(w.child.id() as i32, libc::SIGHUP) };
    w.line(since, &["SIGHUP", "reconciling now"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        w.child.try_wait().unwrap(),
        None,
        "enipin watch exited on SIGHUP:\n{}",
        w.log()
    );
    let (st, _) = w.signal(libc::SIGTERM, Duration::from_secs(2));
    assert!(
        st.success(),
        "exit {st} on SIGTERM after SIGHUP:\n{}",
        w.log()
    );
    e.ok(&["detach"]);
}

/// enipin's rules (proto 229) for `addr`, by priority.
fn own_prefs(topo: &Topology, addr: &str) -> Vec<String> {
    let mut prefs: Vec<_> = rules_with(topo, &format!("from {addr} lookup"))
        .into_iter()
        .filter(|l| l.contains("proto 229"))
        .filter_map(|l| l.split(':').next().map(str::to_owned))
        .collect();
    prefs.sort();
    prefs
}

/// SIGHUP re-reads `--config`: dropping eth2 from the selection removes its rules, a new
/// priority moves the others, through the same plan; a broken file is logged and the running
/// configuration kept (a deleted rule comes back at the priority still in force).
#[test]
fn sighup_reloads_the_config_file_and_a_bad_one_keeps_the_running_configuration() {
    let topo = topology();
    add_eth2(&topo);
    let e = Enipin::in_ns(topo.host());
    let dir = enipin_tests::TempDir::new("enipin-config-").unwrap();
    let file = dir.path().join("enipin.toml");
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    write("[select]\ninterfaces = [\"eth0\", \"eth1\", \"eth2\"]\n");
    let mut w = Watcher::start(
        &e,
        &["--config", file.to_str().unwrap(), "--interval", "60"],
    );
    w.line(
        0,
        &[
            "config file ",
            file.to_str().unwrap(),
            "; SIGHUP reads it again",
        ],
    );
    w.line(0, &["reconciled after start", "managing eth0, eth1, eth2"]);
    assert_eq!(own_prefs(&topo, SECONDARY), ["20000", "20002"]);
    assert_eq!(own_prefs(&topo, "198.18.0.12"), ["20000", "20002"]);

    // 1. eth2 leaves the selection and the priority moves.
    write("[select]\ninterfaces = [\"eth0\", \"eth1\"]\npriority = 30000\n");
    let since = w.mark();
    // SAFETY: plain syscall on our own child's pid.
    unsafe { libc::kill(w.child.id() as i32, libc::SIGHUP) };
    w.line(
        since,
        &[
            "SIGHUP: read",
            "select.interfaces [\"eth0\",\"eth1\",\"eth2\"] -> [\"eth0\",\"eth1\"]",
            "select.priority 20000 -> 30000",
        ],
    );
    // The line counts changes by kind; the rules themselves are checked below.
    let line = w.line(since, &["reconciled after SIGHUP", "rules +"]);
    assert!(line.contains("managing eth0, eth1:"), "{line}");
    assert!(own_prefs(&topo, "198.18.0.12").is_empty(), "{}", w.log());
    assert_eq!(
        own_prefs(&topo, SECONDARY),
        ["30000", "30002"],
        "{}",
        w.log()
    );
    assert!(
        !rules(topo.host())
            .unwrap()
            .lines()
            .any(|l| l.starts_with("2000") && l.contains("proto 229")),
        "rules left at the old priority:\n{}",
        rules(topo.host()).unwrap()
    );

    // 2. A broken file: logged, the watcher keeps running on what it had.
    write("[select]\ninterfaces = [\"eth0\", \"eth1\"]\npriority = \"high\"\n");
    let since = w.mark();
    // SAFETY: as above.
    unsafe { libc::kill(w.child.id() as i32, libc::SIGHUP) };
    let line = w.line(since, &["SIGHUP", "keeping the running configuration"]);
    assert!(
        line.contains(&format!(
            "{}:3:12: select.priority: invalid type",
            file.display()
        )),
        "{line}"
    );
    w.line(since, &["SIGHUP: reconciling now"]);
    let victim = rules_with(&topo, &format!("from {SECONDARY} lookup"))
        .into_iter()
        .find(|l| l.starts_with("30002:") && l.contains("proto 229"))
        .unwrap();
    let table = victim
        .split_whitespace()
        .skip_while(|w| *w != "lookup")
        .nth(1)
        .unwrap()
        .to_owned();
    topo.host()
        .ip(&[
            "rule", "del", "from", SECONDARY, "pref", "30002", "table", &table,
        ])
        .unwrap();
    eventually(
        "the rule back at the priority in force",
        || (own_prefs(&topo, SECONDARY) == ["30000", "30002"]).then_some(()),
        || w.log(),
    );
    assert!(own_prefs(&topo, "198.18.0.12").is_empty(), "{}", w.log());
    assert_eq!(w.child.try_wait().unwrap(), None, "exited:\n{}", w.log());
    let (st, _) = w.signal(libc::SIGTERM, Duration::from_secs(2));
    assert!(st.success(), "exit {st}:\n{}", w.log());
    e.ok(&["detach"]);
}

/// 400 secondary addresses from one `ip -batch`: a few reconciles (no storm, not one per
/// event), each said in one short line (counts by kind, a few changes), not a line listing every
/// rule and owner entry (one was 36 KB).
#[test]
fn a_burst_of_400_addresses_is_a_few_reconciles_with_short_lines() {
    const N: usize = 400;
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let w = Watcher::start(&e, &["--interval", "60"]);
    w.line(0, &["reconciled after start"]);
    let before = rules_with(&topo, "proto 229").len();
    let since = w.mark();
    // 198.18.4.0/23 on eth1: outside the vpc's source check, only enipin's state matters here.
    let batch: String = (0..N)
        .map(|i| {
            format!(
                "addr add 198.18.{}.{}/23 dev eth1\n",
                4 + i / 200,
                10 + i % 200
            )
        })
        .collect();
    let dir = enipin_tests::TempDir::new("enipin-batch-").unwrap();
    let file = dir.path().join("addrs");
    std::fs::write(&file, batch).unwrap();
    topo.host().ip(&["-batch", file.to_str().unwrap()]).unwrap();
    let (_, took) = eventually(
        "rules for 400 new addresses",
        || (rules_with(&topo, "proto 229").len() == before + 2 * N).then_some(()),
        || w.log().chars().take(4000).collect(),
    );
    // Any follow-up (the burst's tail, echoes) has its turn.
    std::thread::sleep(Duration::from_millis(500));
    let lines: Vec<String> = w.lines.lock().unwrap()[since..]
        .iter()
        .filter(|l| l.contains("reconciled after"))
        .cloned()
        .collect();
    eprintln!(
        "{N} addresses managed after {took:?} in {} reconcile(s)",
        lines.len()
    );
    for l in &lines {
        eprintln!("{} bytes: {l}", l.len());
        assert!(l.len() < 512, "a {} byte reconcile line: {l}", l.len());
    }
    assert!(
        (1..=5).contains(&lines.len()),
        "{} reconciles for one burst: {lines:#?}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("rules +") && l.contains("owners +")),
        "no counts by kind: {lines:#?}"
    );
}

/// Journal lines when stderr is the stream `$JOURNAL_STREAM` names (as systemd sets it): a
/// `<N>` syslog priority on every line and no timestamp, errors at `<3>`.
#[test]
fn watch_writes_journal_lines_when_stderr_is_the_journal_stream() {
    use std::os::unix::fs::MetadataExt as _;
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let dir = enipin_tests::TempDir::new("enipin-journal-").unwrap();
    let path = dir.path().join("stderr");
    let file = std::fs::File::create(&path).unwrap();
    let meta = file.metadata().unwrap();
    let mut child = e
        .command(&["watch", "--interval", "60"])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&path).unwrap_or_default();
    let lines_with = |part: &str| -> Option<String> {
        log().lines().find(|l| l.contains(part)).map(str::to_owned)
    };
    let (start, _) = eventually(
        "the first reconcile's line",
        || lines_with("reconciled after start"),
        log,
    );
    // Someone else's rule at enipin's priority: the reconcile fails, an error.
    foreign_rule(&topo, "add");
    let (failed, _) = eventually(
        "the failed reconcile's line",
        || lines_with("failed (attempt 1"),
        log,
    );
    // SAFETY: plain syscall on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}:\n{}", log());
    assert!(start.starts_with("<6>reconciled after start"), "{start}");
    assert!(failed.starts_with("<3>reconcile after"), "{failed}");
    let text = log();
    for l in text.lines() {
        let rest = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .find_map(|p| l.strip_prefix(p))
            .unwrap_or_else(|| panic!("no priority prefix: {l:?} in\n{text}"));
        assert!(
            !rest.starts_with(|c: char| c.is_ascii_digit()),
            "a timestamp in a journal line: {l:?}"
        );
    }
    assert!(text.contains("<6>SIGTERM: stopped watching"), "{text}");
}

/// `--log-format json`: every stderr line is a JSON object with a timestamp, a level and the
/// message; `RUST_LOG` filters (debug lines only when asked for).
#[test]
fn watch_writes_json_lines_that_parse() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let mut cmd = e.command(&["--log-format", "json", "watch", "--interval", "60"]);
    cmd.env("RUST_LOG", "warn,enipin=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let err = child.stderr.take().unwrap();
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    let all = || lines.lock().unwrap().join("\n");
    eventually(
        "the first reconcile's line",
        || all().contains("reconciled after start").then_some(()),
        all,
    );
    // SAFETY: plain syscall on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success(), "{}", all());
    reader.join().unwrap();
    let objects: Vec<serde_json::Value> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let start = objects
        .iter()
        .find(|o| {
            o["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reconciled after start"))
        })
        .unwrap_or_else(|| panic!("no reconcile object in {objects:#?}"));
    assert_eq!(start["level"], "INFO", "{start}");
    assert!(
        start["timestamp"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{start}"
    );
    assert!(
        objects
            .iter()
            .all(|o| o["level"] != "DEBUG" && o["level"] != "TRACE"),
        "RUST_LOG let debug lines through: {objects:#?}"
    );
}

/// Added in metadata while the watcher runs; allowed for eth1 by the vpc, absent from the host.
const NEW: &str = "198.18.0.22";
const ETH0_MAC: &str = "02:e0:00:00:00:10";
const ETH1_MAC: &str = "02:e0:00:00:00:11";

/// The seed topology with EXTRA and NEW allowed on eth1 by the vpc and absent from the host,
/// and a metadata server in the host namespace listing EXTRA (not NEW) for eth1.
fn metadata_topology() -> (Topology, Imds) {
    let mut spec = Spec::default();
    spec.enis[1].v4.push(EXTRA.parse::<Ipv4Addr>().unwrap());
    spec.enis[1].v4.push(NEW.parse::<Ipv4Addr>().unwrap());
    let topo = Topology::build_with(spec).expect("building the lab topology");
    for a in [EXTRA, NEW] {
        topo.host()
            .ip(&["addr", "del", &format!("{a}/24"), "dev", "eth1"])
            .unwrap();
    }
    let imds = Imds::start(
        topo.host(),
        vec![
            FakeEni::new(ETH0_MAC, 0, &["198.18.0.10"], "198.18.0.0/24"),
            FakeEni::new(ETH1_MAC, 1, &[SECONDARY, EXTRA], "198.18.0.0/24"),
        ],
    )
    .expect("starting the metadata server");
    (topo, imds)
}

/// `watch --metadata aws --configure-addresses` against `imds`, refreshing every `interval`
/// seconds, with `extra` arguments.
fn metadata_watcher(e: &Enipin, imds: &Imds, interval: &str, extra: &[&str]) -> Watcher {
    let url = imds.url();
    let args = [
        "--interval",
        "60",
        "--metadata",
        "aws",
        "--metadata-endpoint",
        &url,
        "--configure-addresses",
        "--metadata-interval",
        interval,
    ];
    Watcher::start(e, &[&args[..], extra].concat())
}

/// eth1's addresses as `ip -4 addr` shows them.
fn eth1_v4(topo: &Topology) -> String {
    topo.host()
        .ip(&["-4", "addr", "show", "dev", "eth1"])
        .unwrap()
}

fn on_eth1(topo: &Topology, addr: &str) -> bool {
    eth1_v4(topo).contains(&format!("inet {addr}/32"))
}

/// `watch --metadata aws --configure-addresses` through every fault the metadata server has:
/// during each outage nothing is removed and the addresses metadata added keep answering; an
/// address added in metadata answers within a reconcile; one removed from metadata is removed
/// from the host; the request rate stays under the budget; detach leaves nothing.
#[test]
fn watch_with_metadata_survives_every_outage_and_follows_secondary_addresses() {
    let (topo, imds) = metadata_topology();
    let e = Enipin::in_ns(topo.host());
    let before = Snapshot::take(topo.host(), &["eth0", "eth1"], e.pins.path()).unwrap();
    assert!(
        !topo.peer().ping(EXTRA, 2).unwrap(),
        "{EXTRA} answers before enipin added it"
    );
    let w = metadata_watcher(&e, &imds, "1", &[]);
    w.line(
        0,
        &[
            "reconciled after start",
            "+ address 198.18.0.21/32 dev eth1",
        ],
    );
    eventually("EXTRA's rules", || own_rules(&topo, EXTRA), || w.log());
    assert!(on_eth1(&topo, EXTRA), "{}", eth1_v4(&topo));
    assert!(
        topo.peer().ping(EXTRA, 3).unwrap(),
        "the address metadata added does not answer:\n{}",
        w.log()
    );
    let status = e.ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let source = |addr: &str| {
        v["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["cidr"]
                    .as_str()
                    .and_then(|c| c.split_once('/'))
                    .map(|c| c.0)
                    == Some(addr)
            })
            .map(|s| s["source"].as_str().unwrap().to_owned())
    };
    assert_eq!(source(EXTRA).as_deref(), Some("both"), "{status}");
    assert_eq!(
        source("2001:db8::11").as_deref(),
        Some("netlink"),
        "{status}"
    );
    // From here on only the watcher asks (status is another client, with a budget of its own).
    let watcher_only = imds.requests();

    // Every fault for about two metadata lookups: nothing removed, EXTRA keeps answering.
    type Fault = enipin_tests::imds::Fault;
    type Act<'a> = &'a dyn Fn(&Imds);
    let faults: [(&str, Act, Act); 5] = [
        ("500", &|i| i.fault(Fault::Status(500)), &|i| {
            i.fault(Fault::None)
        }),
        (
            "slow",
            &|i| i.fault(Fault::Slow(Duration::from_millis(1500))),
            &|i| i.fault(Fault::None),
        ),
        ("refused", &|i| i.refuse(true), &|i| i.refuse(false)),
        ("garbage", &|i| i.fault(Fault::Garbage), &|i| {
            i.fault(Fault::None)
        }),
        ("expired token", &|i| i.expire_tokens(), &|_| {}),
    ];
    // Were a failure read as "no addresses", EXTRA would go. Each outage is said once, and its
    // end once; the next fault starts after the watcher is back from its backoff.
    for (name, start, end) in faults {
        let since = w.mark();
        start(&imds);
        std::thread::sleep(Duration::from_secs(2));
        if name != "expired token" {
            // Said while the fault lasts. A lookup is due every second, but a pass costs 20 of
            // the bucket's 20 requests/s: 2 s without one failed 2 runs of about 13.
            w.line(since, &["metadata", "unknown", "keeping"]);
        }
        assert!(on_eth1(&topo, EXTRA), "{name}: EXTRA removed:\n{}", w.log());
        assert!(
            own_rules(&topo, EXTRA).is_some(),
            "{name}: EXTRA's rules removed"
        );
        assert!(
            topo.peer().ping(EXTRA, 2).unwrap(),
            "{name}: EXTRA stopped answering:\n{}",
            w.log()
        );
        end(&imds);
        if name == "expired token" {
            // Renewed on the 401: no outage at all.
            std::thread::sleep(Duration::from_millis(1500));
            assert!(imds.tokens_granted() >= 2, "{}", w.log());
        } else {
            let back = Instant::now();
            while !w.lines.lock().unwrap()[since..]
                .iter()
                .any(|l| l.contains("answers again") || l.contains("known again"))
            {
                assert!(
                    back.elapsed() < Duration::from_secs(10),
                    "{name}: no recovery:\n{}",
                    w.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let log = w.lines.lock().unwrap()[since..].to_vec();
        if name == "expired token" {
            assert!(
                log.iter().all(|l| !l.contains("unknown (")),
                "a 401 made metadata unknown: {log:?}"
            );
        }
        assert!(
            log.iter()
                .all(|l| !l.contains("- address") && !l.contains("- rule")),
            "{name}: something was removed: {log:?}"
        );
    }

    // A secondary address added in metadata answers within a reconcile of the next lookup.
    let since = w.mark();
    let shown = Instant::now();
    imds.set(
        ETH1_MAC,
        "local-ipv4s",
        Some(&format!("{SECONDARY}\n{EXTRA}\n{NEW}")),
    );
    eventually(
        "NEW on eth1",
        || on_eth1(&topo, NEW).then_some(()),
        || w.log(),
    );
    let mut answered = None;
    while shown.elapsed() < Duration::from_secs(5) {
        if topo.peer().pings(&["-c", "1", NEW], 1).unwrap().1 == 1 {
            answered = Some(shown.elapsed());
            break;
        }
    }
    let answered = answered.unwrap_or_else(|| panic!("{NEW} never answered:\n{}", w.log()));
    w.line(since, &["+ address 198.18.0.22/32 dev eth1"]);
    eprintln!("a secondary address added in metadata answered {answered:?} after it was listed");
    assert!(answered < Duration::from_secs(3), "{answered:?}");

    // Removed from metadata: enipin removes the address it added, and its rules.
    let since = w.mark();
    imds.set(
        ETH1_MAC,
        "local-ipv4s",
        Some(&format!("{SECONDARY}\n{EXTRA}")),
    );
    eventually(
        "NEW's removal",
        || (!on_eth1(&topo, NEW)).then_some(()),
        || w.log(),
    );
    eventually(
        "NEW's rules removed",
        || {
            rules_with(&topo, &format!("from {NEW} lookup"))
                .is_empty()
                .then_some(())
        },
        || w.log(),
    );
    w.line(since, &["- address 198.18.0.22/32 dev eth1"]);
    assert!(on_eth1(&topo, EXTRA) && own_rules(&topo, SECONDARY).is_some());

    // The budget: 20 requests/s at most (a burst of 20 on top), whatever the watcher did.
    let peak = imds.peak_per_second(watcher_only);
    eprintln!(
        "{} metadata requests, at most {peak} in one second",
        imds.requests()
    );
    assert!(peak <= 40, "{peak} requests in one second");

    drop(w);
    e.ok(&["detach"]);
    assert!(
        !on_eth1(&topo, EXTRA),
        "detach left EXTRA:\n{}",
        eth1_v4(&topo)
    );
    let after = Snapshot::take(topo.host(), &["eth0", "eth1"], e.pins.path()).unwrap();
    assert_eq!(
        before.diff(&after),
        Vec::<String>::new(),
        "detach left residue"
    );
}

/// A repair under `--metadata aws` asks the metadata service nothing: the reconcile plans with
/// the last refresh's view (issue 26, item 1). Before, each of these five repairs sent 2 + 9 x 2
/// requests and waited for the 20 requests/s bucket. An outage and its end, said while the
/// service fails and answers again, are log lines like any other: JSON under `--log-format
/// json` (item 12; before, raw lines on stderr and stdout).
#[test]
fn a_repair_under_metadata_asks_the_service_nothing() {
    let (topo, imds) = metadata_topology();
    let e = Enipin::in_ns(topo.host());
    let w = metadata_watcher(&e, &imds, "600", &["--log-format", "json"]);
    w.line(
        0,
        &[
            "reconciled after start",
            "+ address 198.18.0.21/32 dev eth1",
        ],
    );
    eventually("EXTRA's rules", || own_rules(&topo, EXTRA), || w.log());
    let asked = imds.requests();
    for n in 0..5 {
        let since = w.mark();
        topo.host()
            .ip(&["rule", "del", "from", SECONDARY, "pref", "20002"])
            .unwrap();
        w.line(since, &["reconciled after", "+ rule"]);
        let (_, took) = eventually(
            "the deleted rule back",
            || own_rules(&topo, SECONDARY),
            || w.log(),
        );
        eprintln!("repair {n}: the rule back after {took:?}");
    }
    assert_eq!(
        imds.requests() - asked,
        0,
        "repairs asked the metadata service, first: {:?}",
        imds.log(asked).iter().take(3).collect::<Vec<_>>()
    );
    // What metadata added stays, and the addresses keep answering.
    assert!(on_eth1(&topo, EXTRA), "{}", eth1_v4(&topo));
    assert!(topo.peer().ping(EXTRA, 2).unwrap(), "{}", w.log());

    // An outage (SIGHUP refreshes now), then the service back (the next SIGHUP).
    imds.fault(enipin_tests::imds::Fault::Status(500));
    let hup = || unsafe { libc::kill(w.child.id() as i32, libc::SIGHUP) };
    hup();
    w.line(0, &["metadata", "unknown", "keeping"]);
    // Seen in /healthz (still 200: what was known is enforced) and in /metrics (issue 28).
    let get = |path: &str| http_client::get(topo.host(), &format!("http://127.0.0.1:9717{path}"));
    let (health, _) = eventually(
        "the outage in /healthz",
        || {
            let (status, body) = get("/healthz").unwrap();
            (status == 200 && body.contains("metadata unknown for 02:e0:00:00:00:1"))
                .then_some(body)
        },
        || format!("{:?}\n{}", get("/healthz"), w.log()),
    );
    eprintln!("healthz during the outage: {}", health.trim());
    let (_, metrics) = get("/metrics").unwrap();
    let series = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert!(series("enipin_metadata_unknown_enis ") >= 1.0, "{metrics}");
    assert!(
        series("enipin_metadata_requests_total{result=\"error\"} ") >= 1.0,
        "{metrics}"
    );
    assert!(
        series("enipin_config_reloads_total{result=\"ok\"} ") >= 1.0,
        "{metrics}"
    );
    imds.fault(enipin_tests::imds::Fault::None);
    // The failed ENIs back off for 0.5-1 s first: refreshes before that keep them unknown.
    let back = Instant::now();
    while !w.log().contains("again after") {
        assert!(back.elapsed() < DEADLINE, "no recovery line:\n{}", w.log());
        hup();
        std::thread::sleep(Duration::from_millis(500));
    }
    for line in w.lines.lock().unwrap().iter() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["message"].is_string(), "{line}");
    }
    assert!(
        on_eth1(&topo, EXTRA),
        "the outage removed EXTRA: {}",
        w.log()
    );
}

/// Beside the Amazon VPC CNI (issue 27, item 3): its pod rules at 512 and 1536 for a pod
/// address the metadata lists as eth1's secondary. `--configure-addresses` is refused before
/// any change (before, it added the pod's address to eth1); without it, attach manages what the
/// host has, never adds the pod's address, and leaves the CNI's rules as they were, through
/// detach too. doctor names the CNI.
#[test]
fn beside_the_vpc_cni_pod_addresses_are_never_claimed() {
    let (topo, imds) = metadata_topology();
    let pod = NEW;
    imds.set(
        ETH1_MAC,
        "local-ipv4s",
        Some(&format!("{SECONDARY}\n{EXTRA}\n{pod}")),
    );
    for rule in [
        ["to", pod, "lookup", "main", "pref", "512"],
        ["from", pod, "lookup", "2", "pref", "1536"],
    ] {
        topo.host()
            .ip(&[&["rule", "add"][..], &rule].concat())
            .unwrap();
    }
    let cni_rules = || rules_with(&topo, pod);
    let before = cni_rules();
    assert_eq!(before.len(), 2, "{before:?}");
    let e = Enipin::in_ns(topo.host());
    let url = imds.url();
    let meta = ["--metadata", "aws", "--metadata-endpoint", &url];
    let err = e.fails(&[&["attach"][..], &meta, &["--configure-addresses"]].concat());
    assert!(
        err.contains("VPC CNI") && err.contains("Nothing was changed"),
        "{err}"
    );
    assert!(
        rules_with(&topo, "proto 229").is_empty(),
        "changed something"
    );
    assert!(
        !on_eth1(&topo, pod) && !on_eth1(&topo, EXTRA),
        "{}",
        eth1_v4(&topo)
    );

    e.ok(&[&["attach"][..], &meta].concat());
    assert!(own_rules(&topo, SECONDARY).is_some());
    assert!(
        !on_eth1(&topo, pod),
        "the pod's address on the host: {}",
        eth1_v4(&topo)
    );
    assert_eq!(cni_rules(), before, "the CNI's rules were touched");
    let doctor = e.cmd(&["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains("warning  vpc-cni: the Amazon VPC CNI runs here (2 pod rule(s)"),
        "{text}"
    );
    e.ok(&["detach"]);
    assert_eq!(cni_rules(), before, "detach touched the CNI's rules");
}

/// `attach --metadata` while the service fails changes nothing and says what to do; once it
/// answers, attach adds what metadata lists, and detach removes exactly that: not an address
/// someone else added, not one metadata lists that was there before.
#[test]
fn attach_with_unknown_metadata_changes_nothing_and_detach_removes_only_what_it_added() {
    let (topo, imds) = metadata_topology();
    let e = Enipin::in_ns(topo.host());
    topo.host()
        .ip(&["addr", "add", "198.18.0.30/32", "dev", "eth1"])
        .unwrap();
    let before = Snapshot::take(topo.host(), &["eth0", "eth1"], e.pins.path()).unwrap();
    let url = imds.url();
    let attach = [
        "attach",
        "--metadata",
        "aws",
        "--metadata-endpoint",
        &url,
        "--configure-addresses",
    ];
    imds.fault(enipin_tests::imds::Fault::Status(500));
    let err = e.fails(&attach);
    assert!(
        err.contains("is unknown (") && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(err.contains("attach without --metadata"), "{err}");
    assert!(!e.state_file().exists(), "a failed attach wrote its state");
    let after = Snapshot::take(topo.host(), &["eth0", "eth1"], e.pins.path()).unwrap();
    assert_eq!(before.diff(&after), Vec::<String>::new());

    imds.fault(enipin_tests::imds::Fault::None);
    let out = e.ok(&attach);
    assert!(out.contains("+ address 198.18.0.21/32 dev eth1"), "{out}");
    assert!(!out.contains("+ address 198.18.0.11"), "{out}");
    assert!(on_eth1(&topo, EXTRA));
    assert!(topo.peer().ping(EXTRA, 3).unwrap());
    let out = e.ok(&["detach"]);
    assert!(out.contains("- address 198.18.0.21/32 dev eth1"), "{out}");
    assert_eq!(out.matches("- address").count(), 1, "{out}");
    let after = Snapshot::take(topo.host(), &["eth0", "eth1"], e.pins.path()).unwrap();
    assert_eq!(
        before.diff(&after),
        Vec::<String>::new(),
        "detach left residue"
    );
    assert!(
        eth1_v4(&topo).contains("198.18.0.30/32"),
        "detach removed a foreign address"
    );
}

/// The planned next hops of `attach --dry-run` beside the watcher (what the pinned datapath
/// lacks or has too many of): none while the watcher keeps up.
fn planned_next_hops(e: &Enipin) -> Vec<String> {
    let out = e.ok(&["attach", "--dry-run"]);
    out.lines()
        .filter(|l| l.contains("next hop"))
        .map(str::to_owned)
        .collect()
}

/// Neither lab interface forwards, either family (a new namespace takes IPv4's values from the
/// root namespace's).
fn forwarding_off(topo: &Topology) {
    for key in ["all", "eth0", "eth1"].map(|d| format!("net.ipv4.conf.{d}.forwarding")) {
        topo.host().sysctl(&key, "0").unwrap();
    }
    for key in ["eth0", "eth1"].map(|d| format!("net.ipv6.conf.{d}.forwarding")) {
        topo.host().sysctl(&key, "0").unwrap();
    }
}

/// A forwarding change sends no link event, only a netconf message, yet decides the datapath's
/// next hop for the owner: the watcher reconciles at once (not at its periodic pass, an hour
/// here), once per change, and the pinned next hops are what `attach` plans.
#[test]
fn watch_follows_a_forwarding_change_at_once() {
    let topo = topology();
    forwarding_off(&topo);
    let e = Enipin::in_ns(topo.host());
    let mut w = Watcher::start(
        &e,
        &["--interval", "3600", "--metrics-listen", "127.0.0.1:0"],
    );
    w.line(0, &["reconciled after start", "managing eth0, eth1"]);
    let url = w.metrics_url();
    let mut count = reconciles(&topo, &url);
    assert_eq!(planned_next_hops(&e), Vec::<String>::new());
    let eth1 = topo.host().ifindex("eth1").unwrap();
    let off = format!("- next hop onto ifindex {eth1}");
    let steps = [
        (
            "net.ipv4.conf.eth1.forwarding",
            "1",
            vec!["+ next hop onto eth1 from table", "for IPv4 only"],
        ),
        ("net.ipv4.conf.eth1.forwarding", "0", vec![off.as_str()]),
        // `all` sets every interface's value.
        (
            "net.ipv4.conf.all.forwarding",
            "1",
            vec!["+ next hop onto eth0", "+ next hop onto eth1"],
        ),
    ];
    for (key, value, changes) in steps {
        let since = w.mark();
        let t = Instant::now();
        topo.host().sysctl(key, value).unwrap();
        // `all` is the first reason: each interface's own message follows it.
        let reason = format!("reconciled after {key} set to {value}");
        let line = w.line(since, &[&[reason.as_str()][..], &changes].concat());
        eprintln!("{key}={value} followed in {:?}: {line}", t.elapsed());
        let now = reconciles(&topo, &url);
        assert!(
            (count + 1..=count + 2).contains(&now),
            "{} reconciles for {key}={value}:\n{}",
            now - count,
            w.log()
        );
        count = now;
        assert_eq!(planned_next_hops(&e), Vec::<String>::new(), "{key}={value}");
    }
    w.signal(libc::SIGTERM, Duration::from_secs(2));
    forwarding_off(&topo);
    e.ok(&["detach"]);
}

/// The kernel announces more than forwarding in netconf messages: rp_filter (which enipin's own
/// sysctl writes change), proxy_arp, proxy_ndp, `default`'s values. None of them is planned
/// from, so none starts a reconcile, and enipin's own writes at start start no loop. (arp_*
/// knobs are announced by no message; they are here to show nothing comes of them either.)
#[test]
fn netconf_notifications_of_other_knobs_start_no_reconcile() {
    let topo = topology();
    forwarding_off(&topo);
    let host = topo.host();
    // rp_filter 1: the watcher's first reconcile writes 2 (loose) on both, announced each.
    for dev in ["all", "eth0", "eth1"] {
        host.sysctl(&format!("net.ipv4.conf.{dev}.rp_filter"), "1")
            .unwrap();
    }
    let e = Enipin::in_ns(host);
    let mut w = Watcher::start(
        &e,
        &["--interval", "3600", "--metrics-listen", "127.0.0.1:0"],
    );
    w.line(0, &["reconciled after start", "sysctls ~6"]);
    let url = w.metrics_url();
    for dev in ["eth0", "eth1"] {
        let v = host
            .sh(&format!("sysctl -n net.ipv4.conf.{dev}.rp_filter"))
            .unwrap();
        assert_eq!(v.trim(), "2", "{dev}");
    }
    assert_eq!(
        reconciles(&topo, &url),
        1,
        "enipin's own writes started more:\n{}",
        w.log()
    );
    let since = w.mark();
    for (key, values) in [
        ("net.ipv4.conf.lo.rp_filter", ["2", "0"]),
        ("net.ipv4.conf.default.rp_filter", ["2", "0"]),
        ("net.ipv4.conf.eth1.proxy_arp", ["1", "0"]),
        ("net.ipv4.conf.eth0.ignore_routes_with_linkdown", ["1", "0"]),
        ("net.ipv6.conf.eth1.proxy_ndp", ["1", "0"]),
        ("net.ipv4.conf.default.forwarding", ["1", "0"]),
        ("net.ipv4.conf.eth1.arp_accept", ["1", "0"]),
        ("net.ipv4.conf.eth1.arp_notify", ["1", "0"]),
    ] {
        for v in values {
            host.sysctl(key, v).unwrap();
        }
    }
    assert_eq!(
        reconciles(&topo, &url),
        1,
        "a netconf message of another knob started a reconcile:\n{}",
        w.log()
    );
    // The messages above were read, not lost: one on the same socket after them is followed,
    // and it alone is the reason.
    host.sysctl("net.ipv4.conf.eth1.forwarding", "1").unwrap();
    let line = w.line(since, &["reconciled after", "next hop onto eth1"]);
    assert!(
        line.contains("reconciled after net.ipv4.conf.eth1.forwarding set to 1 in "),
        "{line}"
    );
    assert_eq!(reconciles(&topo, &url), 2, "{}", w.log());
    w.signal(libc::SIGTERM, Duration::from_secs(2));
    forwarding_off(&topo);
    e.ok(&["detach"]);
}

/// With connmark, an interface whose ifindex does not fit the mask is warned of when it is
/// first left out, not again at every reconcile; one that joins the set is warned of, one that
/// leaves it is an info line. (Mask 0x1 fits ifindex 1 alone: lo, never managed.)
#[test]
fn watch_warns_of_an_interface_connmark_leaves_out_once() {
    let topo = topology();
    let e = Enipin::in_ns(topo.host());
    let mut w = Watcher::start(
        &e,
        &[
            "--connmark",
            "--connmark-mask",
            "0x1",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    w.line(0, &["reconciled after start", "managing eth0, eth1"]);
    let url = w.metrics_url();
    let mut count = reconciles(&topo, &url);
    for _ in 0..3 {
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(w.child.id() as i32, libc::SIGHUP) };
        let n = eventually(
            "a reconcile after SIGHUP",
            || Some(reconciles(&topo, &url)).filter(|n| *n > count),
            || w.log(),
        );
        count = n.0;
    }
    assert!(count >= 4, "{count} reconciles");
    let warned = |dev: &str| w.count(&format!("connmark: {dev}: ifindex"));
    assert_eq!((warned("eth0"), warned("eth1")), (1, 1), "{}", w.log());
    add_eth2(&topo);
    w.line(
        0,
        &[
            "connmark: eth2: ifindex",
            "does not fit connmark mask 0x00000001",
        ],
    );
    topo.host().ip(&["link", "del", "eth2"]).unwrap();
    w.line(
        0,
        &["connmark: eth2 (left out of the mask) is no longer managed"],
    );
    reconciles(&topo, &url);
    assert_eq!(
        (warned("eth0"), warned("eth1"), warned("eth2")),
        (1, 1, 1),
        "{}",
        w.log()
    );
    let (st, _) = w.signal(libc::SIGTERM, Duration::from_secs(2));
    assert!(st.success(), "{}", w.log());
    e.ok(&["detach"]);
}
