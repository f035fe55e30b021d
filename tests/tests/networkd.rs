//! The real systemd-networkd beside enipin (issue 24): the machine's systemd booted under
//! systemd-nspawn in the lab's host namespace ([`Machine`]), networkd enabled with a static
//! `.network` file per ENI, and the package's unit running `enipin watch` (then `enipin attach`
//! alone). A peer pings both ENIs' addresses every 10 ms while networkd is triggered: `networkctl
//! reconfigure` of each link, `networkctl reload` after a changed file, a restart; with its
//! defaults, with enipin's networkd.conf.d drop-in, and with `KeepConfiguration=static`.
//!
//! Asserted per trigger: the datapath is never torn down (the same program, its counters kept),
//! enipin's rules and routes are back within a bound, a rule put back is counted in
//! `enipin_restored_total`, and a peer loses at most the pings the address flap itself costs
//! (those due while the address was gone, and two). The figures are printed.
//!
//! networkd deletes foreign configuration on a restart only when it believes udev initialised
//! the links. In a container /sys is read-only, so it takes udev for absent and configures each
//! link while it enumerates them, before it has read the rules: a restart then deletes nothing.
//! networkd gets what a host gives it: a sysfs of the namespace, writable, bound over its /sys
//! (its unit's `BindPaths=`, for networkd alone), and a udev database entry per link
//! (`/run/udev/data/n<ifindex>`, `I:` initialised). The test first checks that a restart deletes
//! a foreign rule, and fails if it does not: the rest would prove nothing.
//!
//! `cargo xtask test` builds the .deb first; `cargo xtask setup` installs systemd-nspawn,
//! networkctl and dbus-daemon (a missing one fails the test, never a skip).

use std::{
    fmt,
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use enipin_tests::{
    PinDir, Spec, Topology, http_client,
    machine::Machine,
    run::{artifact, eventually},
};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const UNIT: &str = "enipin.service";
const NETWORKD: &str = "systemd-networkd.service";
/// The lab's ENIs: name, address (/24), metric of its default route (the seed's `route -n`).
const ENIS: [(&str, &str, u32); 2] = [("eth0", "198.18.0.10", 100), ("eth1", "198.18.0.11", 101)];
const GATEWAY: &str = "198.18.0.1";
/// The package's enipin.toml: `[metrics] listen` at its default.
const METRICS: &str = "http://127.0.0.1:9717/metrics";
/// enipin's drop-in, as `enipin doctor` and `enipin render --format networkd` print it.
const DROP_IN: &str = "etc/systemd/networkd.conf.d/99-enipin.conf";
const DROP_IN_BODY: &str =
    "[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n";
/// Where networkd's own sysfs is mounted in the container (bound over networkd's /sys).
const SYSFS: &str = "/run/enipin-lab-sysfs";
/// Pings per address and window, 10 ms apart (2 s); the trigger fires 300 ms in.
const PINGS: u32 = 200;
const LEAD: Duration = Duration::from_millis(300);
/// A restore slower than this fails: 41-72 ms measured before the grace (issue 24), and this
/// machine's 2 CPUs are shared with other builds.
const RESTORE_BOUND_MS: f64 = 1000.0;

/// The accounts networkd (`User=systemd-network`) and dbus (`messagebus`, for `networkctl`) run
/// as, and networkd's unit reading the lab's sysfs.
fn prepare(root: &Path) {
    write(
        root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nmessagebus:x:100:101::/nonexistent:/usr/sbin/nologin\n\
         systemd-network:x:998:998::/run/systemd:/usr/sbin/nologin\n",
    );
    write(
        root,
        "etc/group",
        "root:x:0:\nmessagebus:x:101:\nsystemd-network:x:998:\n",
    );
    write(
        root,
        "etc/systemd/system/systemd-networkd.service.d/50-lab-sysfs.conf",
        &format!("[Service]\nBindPaths={SYSFS}:/sys\n"),
    );
    network_files(root, "", 0);
}

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A static `.network` file per ENI, as on an EC2 host configured without DHCP.
fn network_files(root: &Path, extra: &str, version: u32) {
    for eni in ENIS {
        network_file(root, eni, extra, version);
    }
}

/// ENI `(name, addr, metric)`'s `.network` file; `extra` goes in `[Network]`, `version` in its
/// `Description=` (a changed file for `networkctl reload`).
fn network_file(root: &Path, (name, addr, metric): (&str, &str, u32), extra: &str, version: u32) {
    write(
        root,
        &format!("etc/systemd/network/10-{name}.network"),
        &format!(
            "[Match]\nName={name}\n\n[Network]\nDescription=lab ENI, version {version}\n\
             Address={addr}/24\nIPv6AcceptRA=no\nLinkLocalAddressing=no\n{extra}\n\
             [Route]\nGateway={GATEWAY}\nMetric={metric}\n"
        ),
    );
}

/// networkd's sysfs and udev entries (see the module's comment), then networkd enabled and
/// started as an operator would, once both links are configured. The ENIs start without the
/// lab's addresses and routes, as at boot: networkd 252 adopting the lab's identical address
/// re-requested it in a loop and failed both links (ERANGE).
fn start_networkd(m: &Machine, topo: &Topology) {
    m.ok(&[
        "sh",
        "-c",
        &format!("mkdir -p {SYSFS} && mount -t sysfs sysfs {SYSFS}"),
    ]);
    make_sysfs_writable(m);
    let mut script = "mkdir -p /run/udev/data".to_owned();
    for (name, ..) in ENIS {
        let ifindex = topo.host().ifindex(name).unwrap();
        topo.host().ip(&["address", "flush", "dev", name]).unwrap();
        script += &format!(" && echo I:1 > /run/udev/data/n{ifindex}");
    }
    m.ok(&["sh", "-c", &script]);
    m.ok(&["systemctl", "enable", "--now", NETWORKD]);
    wait_configured(m);
}

/// A sysfs mount is one superblock per network namespace, and nspawn mounted the lab's read-only
/// first: the fresh mount is read-only too until remounted. The remount changes the superblock,
/// so it must be the lab namespace's, never the machine's own /sys (checked by device).
fn make_sysfs_writable(m: &Machine) {
    let dev = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .dev()
    };
    let ours = Path::new("/proc")
        .join(m.leader().to_string())
        .join("root")
        .join(SYSFS.trim_start_matches('/'));
    assert_ne!(
        dev(&ours),
        dev(Path::new("/sys")),
        "the container's new sysfs is the machine's own: not remounting it"
    );
    m.ok(&["mount", "-o", "remount,rw", SYSFS]);
}

/// Both links `configured` in `networkctl list` (at most 15 s).
fn wait_configured(m: &Machine) {
    let t = Instant::now();
    loop {
        let list = m.read(&["networkctl", "list", "--no-pager", "--no-legend"]);
        let configured = |name: &str| {
            list.lines()
                .any(|l| l.contains(&format!(" {name} ")) && l.trim_end().ends_with("configured"))
        };
        if ENIS.iter().all(|(name, ..)| configured(name)) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "networkd did not configure the ENIs within 15 s:\n{list}\n{}",
            m.journal(NETWORKD)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A restart must delete a rule networkd did not make, as on a host: otherwise networkd took
/// udev for absent and the test would prove nothing.
fn assert_restart_deletes_a_foreign_rule(m: &Machine, topo: &Topology) {
    let args = ["from", "198.18.1.200", "lookup", "30000", "pref", "30000"];
    topo.host()
        .ip(&[&["rule", "add"][..], &args].concat())
        .unwrap();
    m.ok(&["systemctl", "restart", NETWORKD]);
    wait_configured(m);
    let t = Instant::now();
    while topo
        .host()
        .ip(&["rule", "show"])
        .unwrap()
        .contains("198.18.1.200")
    {
        if t.elapsed() > Duration::from_secs(5) {
            let _ = topo.host().ip(&[&["rule", "del"][..], &args].concat());
            panic!(
                "networkd's restart kept a foreign rule for 5 s: it does not behave as on a host \
                 (sysfs, udev entries), and this test would prove nothing:\n{}\n{}",
                m.read(&["journalctl", "--no-pager", "-o", "short-precise", "-u", NETWORKD]),
                m.read(&["sh", "-c", "grep -h ' /sys ' /proc/$(pidof systemd-networkd)/mountinfo; ls -la /run/udev/data"]),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// enipin's rules and routes in the lab's host namespace, sorted.
fn enipin_objects(topo: &Topology) -> Vec<String> {
    let rules = topo.host().ip(&["rule", "show"]).unwrap();
    let routes = topo
        .host()
        .ip(&["route", "show", "table", "all", "proto", "229"])
        .unwrap();
    let mut all: Vec<String> = rules
        .lines()
        .filter(|l| l.contains("proto 229"))
        .chain(routes.lines())
        .map(str::to_owned)
        .collect();
    all.sort();
    all
}

/// The id of the program pinned under the container's /sys/fs/bpf/enipin.
fn program_id(bpffs: &PinDir) -> u32 {
    aya::programs::ProgramInfo::from_pin(bpffs.path().join("prog"))
        .expect("reading the pinned program")
        .id()
}

/// `owned_here` of eth1 (`enipin stats --json` in the container): replies that left by their
/// owner. A reloaded program would start it from 0.
fn owned_here(m: &Machine) -> u64 {
    let stats: serde_json::Value =
        serde_json::from_str(&m.ok(&["enipin", "stats", "--json"])).expect("enipin stats --json");
    stats["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["interface"] == "eth1")
        .and_then(|row| row["owned_here"].as_u64())
        .unwrap_or_else(|| panic!("no counters for eth1: {stats}"))
}

/// `enipin_restored_total{kind="rule"}` of the unit's watcher.
fn restored_rules(topo: &Topology) -> u64 {
    let (status, text) = http_client::get(topo.host(), METRICS).unwrap();
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("enipin_restored_total{kind=\"rule\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no restored rules in:\n{text}")) as u64
}

/// What is done to networkd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// `networkctl reconfigure LINK`.
    Reconfigure(&'static str),
    /// eth1's file changed (its `Description=`), then `networkctl reload`.
    ReloadChanged,
    /// `systemctl restart systemd-networkd`.
    Restart,
}

const TRIGGERS: [Trigger; 4] = [
    Trigger::Reconfigure("eth0"),
    Trigger::Reconfigure("eth1"),
    Trigger::ReloadChanged,
    Trigger::Restart,
];

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Reconfigure(link) => write!(f, "networkctl reconfigure {link}"),
            Trigger::ReloadChanged => f.pad("networkctl reload, a file changed"),
            Trigger::Restart => f.pad("systemctl restart systemd-networkd"),
        }
    }
}

/// How networkd and enipin are set up for a round of [`TRIGGERS`].
#[derive(Clone, Copy, Debug)]
struct Setup {
    name: &'static str,
    /// enipin's networkd.conf.d drop-in.
    drop_in: bool,
    /// `KeepConfiguration=static` in both `.network` files.
    keep_static: bool,
    /// The unit's `enipin watch`; else `enipin attach` alone, watch stopped.
    watch: bool,
}

const SETUPS: [Setup; 5] = [
    Setup {
        name: "watch, networkd defaults",
        drop_in: false,
        keep_static: false,
        watch: true,
    },
    Setup {
        name: "watch, drop-in",
        drop_in: true,
        keep_static: false,
        watch: true,
    },
    Setup {
        name: "watch, drop-in, KeepConfiguration=static",
        drop_in: true,
        keep_static: true,
        watch: true,
    },
    Setup {
        name: "attach alone, drop-in",
        drop_in: true,
        keep_static: false,
        watch: false,
    },
    Setup {
        name: "attach alone, networkd defaults",
        drop_in: false,
        keep_static: false,
        watch: false,
    },
];

impl Setup {
    fn extra(&self) -> &'static str {
        if self.keep_static {
            "KeepConfiguration=static\n"
        } else {
            ""
        }
    }
}

/// One line of `ip -ts monitor address rule route`, classified.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Event {
    /// Seconds since midnight, from ip's timestamp.
    at: f64,
    deleted: bool,
    what: Object,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Object {
    /// The address of `ENIS[i]`.
    Address(usize),
    /// One of enipin's rules, `from` the address of `ENIS[i]` if it is one of those.
    EnipinRule(Option<usize>),
    EnipinRoute,
    Other,
}

impl Event {
    /// `[2026-12-07T12:49:33.123456] Deleted 20001: from 198.18.0.11 lookup 20001 proto 229`.
    fn parse(line: &str) -> Option<Self> {
        let (stamp, text) = line.strip_prefix('[')?.split_once("] ")?;
        let mut hms = stamp.split_once('T')?.1.split(':');
        let at = hms.next()?.parse::<f64>().ok()? * 3600.0
            + hms.next()?.parse::<f64>().ok()? * 60.0
            + hms.next()?.parse::<f64>().ok()?;
        let (deleted, text) = match text.strip_prefix("Deleted ") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let eni = |pattern: &dyn Fn(&str) -> String| {
            ENIS.iter()
                .position(|(_, addr, _)| text.contains(&pattern(addr)))
        };
        let what = match eni(&|a| format!(" inet {a}/")) {
            Some(i) => Object::Address(i),
            None if !text.contains("proto 229") => Object::Other,
            None if text.contains("lookup") => Object::EnipinRule(eni(&|a| format!("from {a} "))),
            None => Object::EnipinRoute,
        };
        Some(Self { at, deleted, what })
    }
}

/// What one trigger cost, from the events and the pings of its window.
#[derive(Clone, Debug)]
struct Figures {
    /// enipin's rules deleted, by anyone: the watcher itself removes the two rules of an address
    /// that is gone (and the family's `lookup main` rule when every address is gone at once),
    /// and adds them back with it.
    deleted_rules: usize,
    /// Those of an ENI whose address stayed: only networkd deletes them, and they were wanted
    /// throughout, so each must be counted as a restore.
    of_steady_enis: usize,
    /// How long each ENI's address was gone (`None`: it stayed).
    flap_ms: [Option<f64>; 2],
    /// From the first deletion (an address, enipin's rule or route) to the last of enipin's
    /// objects added back (`None`: nothing deleted, or nothing added back in the window).
    restore_ms: Option<f64>,
    /// Pings to each ENI's address that got no reply, of [`PINGS`].
    lost: [u32; 2],
}

impl Figures {
    fn of(events: &[Event], lost: [u32; 2]) -> Self {
        let flap = |i: usize| {
            let gone = events
                .iter()
                .find(|e| e.deleted && e.what == Object::Address(i))?;
            let back = events
                .iter()
                .find(|e| !e.deleted && e.what == Object::Address(i) && e.at >= gone.at);
            Some(back.map_or(f64::INFINITY, |b| (b.at - gone.at) * 1000.0))
        };
        let ours = |o: Object| matches!(o, Object::EnipinRule(_) | Object::EnipinRoute);
        let flap_ms = [flap(0), flap(1)];
        let deleted: Vec<Option<usize>> = events
            .iter()
            .filter(|e| e.deleted)
            .filter_map(|e| match e.what {
                Object::EnipinRule(from) => Some(from),
                _ => None,
            })
            .collect();
        let first = events
            .iter()
            .find(|e| e.deleted && (ours(e.what) || matches!(e.what, Object::Address(_))));
        let restore_ms = first.and_then(|f| {
            let last = events
                .iter()
                .rfind(|e| !e.deleted && ours(e.what) && e.at >= f.at)?;
            Some((last.at - f.at) * 1000.0)
        });
        Self {
            deleted_rules: deleted.len(),
            of_steady_enis: deleted
                .iter()
                .filter(|from| from.is_some_and(|i| flap_ms[i].is_none()))
                .count(),
            flap_ms,
            restore_ms,
            lost,
        }
    }

    /// What the address flap itself costs ENI `i`: the pings due while its address was gone, and
    /// two (one in flight at each end).
    fn allowed(&self, i: usize) -> u32 {
        self.flap_ms[i].map_or(0, |ms| (ms / 10.0).ceil().min(f64::from(PINGS)) as u32) + 2
    }
}

/// Pings both addresses from the peer and records the namespace's events while `trigger` fires
/// [`LEAD`] into the window.
fn window(m: &Machine, topo: &Topology, trigger: Trigger, s: &Setup, version: u32) -> Figures {
    // Line-buffered: `timeout` ends ip with SIGTERM, and a block buffer would die with it.
    let monitor = topo
        .host()
        .command("timeout")
        .args(["2.6", "stdbuf", "-oL", "ip", "-ts", "monitor"])
        .args(["address", "rule", "route"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning ip monitor");
    let pings: Vec<Child> = ENIS
        .iter()
        .map(|(_, addr, _)| {
            let mut ping = topo.peer().command("ping");
            ping.args(["-n", "-q", "-i", "0.01", "-W", "1", "-w", "5", "-c"])
                .arg(PINGS.to_string())
                .arg(addr)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawning ping")
        })
        .collect();
    std::thread::sleep(LEAD);
    fire(m, trigger, s, version);
    let lost: Vec<u32> = pings.into_iter().map(|p| PINGS - received(p)).collect();
    let out = monitor.wait_with_output().unwrap();
    let events: Vec<Event> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(Event::parse)
        .collect();
    Figures::of(&events, [lost[0], lost[1]])
}

/// Replies counted in ping's summary (`200 packets transmitted, 198 received, ...`).
fn received(ping: Child) -> u32 {
    let out = ping.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    enipin_tests::testbed::ping_summary(&text)
        .unwrap_or_else(|| panic!("no summary from ping:\n{text}"))
        .1
}

fn fire(m: &Machine, trigger: Trigger, s: &Setup, version: u32) {
    match trigger {
        Trigger::Reconfigure(link) => m.ok(&["networkctl", "reconfigure", link]),
        Trigger::ReloadChanged => {
            network_file(&m.root(), ENIS[1], s.extra(), version);
            m.ok(&["networkctl", "reload"])
        }
        Trigger::Restart => m.ok(&["systemctl", "restart", NETWORKD]),
    };
}

/// Networkd's configuration for `s` (read at the restart), then enipin's: the unit's watcher,
/// or `enipin attach` once with the watcher stopped. Returns once enipin's objects are
/// `baseline` again.
fn set_up(m: &Machine, topo: &Topology, s: &Setup, baseline: &[String], version: u32) {
    if !s.watch {
        m.ok(&["systemctl", "stop", UNIT]);
    }
    let drop_in = m.root().join(DROP_IN);
    if s.drop_in {
        write(&m.root(), DROP_IN, DROP_IN_BODY);
    } else {
        let _ = std::fs::remove_file(drop_in);
    }
    network_files(&m.root(), s.extra(), version);
    m.ok(&["systemctl", "restart", NETWORKD]);
    wait_configured(m);
    if s.watch {
        m.ok(&["systemctl", "start", UNIT]);
        m.wait_unit(UNIT, &["active"], Duration::from_secs(30));
    } else {
        m.ok(&["enipin", "attach"]);
    }
    settle(m, topo, baseline);
}

/// enipin's objects `baseline` again within 3 s, and networkd done with both links.
fn settle(m: &Machine, topo: &Topology, baseline: &[String]) {
    wait_configured(m);
    let t = Instant::now();
    while enipin_objects(topo) != baseline {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "enipin's rules and routes not back within 3 s:\n{:#?}\nwanted:\n{baseline:#?}\n{}",
            enipin_objects(topo),
            m.journal(UNIT)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The rules the watcher's passes added and removed, summed over its journal: the `rules +5 -2`
/// of each `reconciled after ...` line.
fn watcher_rules(m: &Machine) -> [usize; 2] {
    let mut sum = [0, 0];
    let journal = m.journal(UNIT);
    let counts = journal
        .lines()
        .filter(|l| l.contains("reconciled after"))
        .filter_map(|l| l.split_once(" change(s) (")?.1.split_once(')'))
        .flat_map(|(counts, _)| counts.split(", "))
        .filter_map(|kind| kind.strip_prefix("rules "));
    for n in counts.flat_map(str::split_whitespace) {
        let (i, n) = match n.split_at(1) {
            ("+", n) => (0, n),
            ("-", n) => (1, n),
            _ => continue,
        };
        sum[i] += n
            .parse::<usize>()
            .unwrap_or_else(|_| panic!("a count in {journal}"));
    }
    sum
}

/// The rules the watcher removed itself in a window: once its passes have added back every rule
/// deleted in it (at most 3 s), the rise of its removals.
fn removed_by_watcher(m: &Machine, before: [usize; 2], deleted: usize) -> usize {
    let t = Instant::now();
    loop {
        let now = watcher_rules(m);
        if now[0] - before[0] >= deleted || t.elapsed() > Duration::from_secs(3) {
            return now[1] - before[1];
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One trigger's outcome, as printed.
struct Row {
    setup: &'static str,
    trigger: Trigger,
    figures: Figures,
    /// enipin's rules deleted by networkd: all deleted but those the watcher removed itself
    /// (from its journal), whose passes say exactly what they did.
    by_networkd: usize,
    /// `enipin_restored_total{kind="rule"}`'s rise (the watcher's; `None` for attach alone).
    counted: Option<u64>,
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} ms"));
        let x = &self.figures;
        write!(
            f,
            "{:<42} {:<36} rules deleted {:>2} ({:>2} by networkd), restores counted {:>2}; \
             flap eth0 {:>6}, eth1 {:>6}; restore {:>6}; lost eth0 {:>2}, eth1 {:>2} of {PINGS}",
            self.setup,
            self.trigger.to_string(),
            x.deleted_rules,
            self.by_networkd,
            self.counted.map_or("-".to_owned(), |c| c.to_string()),
            ms(x.flap_ms[0]),
            ms(x.flap_ms[1]),
            ms(x.restore_ms),
            x.lost[0],
            x.lost[1],
        )
    }
}

/// Straight to the test's stderr: cargo test captures `eprintln!`, and the CI log is to show the
/// figures of a passing run too.
fn print(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The assertions of one trigger (module comment), with everything printed on failure.
fn check(row: &Row, s: &Setup, journal: impl Fn() -> String) {
    let x = &row.figures;
    if s.drop_in {
        assert_eq!(
            row.by_networkd, 0,
            "networkd deleted rules despite the drop-in: {row}"
        );
    } else {
        // The premise: with its defaults networkd 252 deletes every foreign rule on these.
        assert!(
            row.by_networkd > 0,
            "networkd deleted none of enipin's rules: {row}"
        );
    }
    if let Some(counted) = row.counted {
        // A restore is a rule put back that was wanted throughout: each networkd deleted of an
        // ENI whose address stayed must be counted, and nothing the watcher removed itself (an
        // address gone) may be. A rule networkd deleted while its address was gone too is added
        // back with the address, which is no restore by the counter's definition (a restart
        // flaps both addresses: 1 run in 4 counted 0 of 5).
        let counted = counted as usize;
        assert!(
            (x.of_steady_enis..=row.by_networkd).contains(&counted),
            "{row}\n{}",
            journal()
        );
        if let Some(ms) = x.restore_ms {
            assert!(ms <= RESTORE_BOUND_MS, "{row}\n{}", journal());
        }
        assert!(
            x.deleted_rules == 0 || x.restore_ms.is_some(),
            "{row}\n{}",
            journal()
        );
    }
    for (i, (name, ..)) in ENIS.iter().enumerate() {
        assert!(
            x.lost[i] <= x.allowed(i),
            "{name} lost more pings than its address flap costs ({}): {row}\n{}",
            x.allowed(i),
            journal()
        );
    }
}

/// [`TRIGGERS`] one after another with `s` set up; the datapath must stay the one loaded at the
/// start (the same program id, counters that only grow).
fn round(
    m: &Machine,
    topo: &Topology,
    bpffs: &PinDir,
    s: &Setup,
    baseline: &[String],
    version: &mut u32,
) -> Vec<Row> {
    *version += 1;
    set_up(m, topo, s, baseline, *version);
    let id = program_id(bpffs);
    let mut owned = owned_here(m);
    let mut rows = Vec::new();
    for trigger in TRIGGERS {
        *version += 1;
        let before = s.watch.then(|| (restored_rules(topo), watcher_rules(m)));
        let figures = window(m, topo, trigger, s, *version);
        if !s.watch {
            // Nothing else puts back what networkd removed: the next trigger starts as before.
            wait_configured(m);
            m.ok(&["enipin", "attach"]);
        }
        settle(m, topo, baseline);
        let deleted = figures.deleted_rules;
        let by_watcher = before.map_or(0, |(_, b)| removed_by_watcher(m, b, deleted));
        let counted = before.map(|(b, _)| restored_rules(topo) - b);
        let row = Row {
            setup: s.name,
            trigger,
            by_networkd: deleted.saturating_sub(by_watcher),
            figures,
            counted,
        };
        print(&row.to_string());
        check(&row, s, || m.journal(UNIT));
        assert_eq!(program_id(bpffs), id, "the program was loaded anew: {row}");
        let now = owned_here(m);
        assert!(
            now >= owned,
            "the counters restarted ({owned} -> {now}): {row}"
        );
        owned = now;
        rows.push(row);
    }
    rows
}

#[test]
fn beside_a_real_networkd_no_trigger_tears_enforcement_down_and_restores_are_counted() {
    enipin_tests::require();
    let started = Instant::now();
    let topo = Topology::build_with(Spec {
        ipv6: false,
        ..Spec::default()
    })
    .expect("building the lab topology");
    let bpffs = PinDir::new("enipin-nd-").expect("bpffs for the container's /sys/fs/bpf");
    let mut m = Machine::boot_with(
        topo.host().name(),
        &artifact(&format!("enipin_{VERSION}_amd64.deb")),
        bpffs.mount(),
        prepare,
    );
    start_networkd(&m, &topo);
    assert_restart_deletes_a_foreign_rule(&m, &topo);
    let networkd_version = m.read(&["networkctl", "--version"]);
    print(&format!(
        "networkd beside enipin: {}, {PINGS} pings 10 ms apart per address and trigger \
         (cargo test -p enipin-tests --test networkd)",
        networkd_version.lines().next().unwrap_or("?")
    ));

    m.ok(&["systemctl", "enable", "--now", "--no-block", UNIT]);
    m.wait_unit(UNIT, &["active"], Duration::from_secs(30));
    let baseline = enipin_objects(&topo);
    assert!(
        baseline.iter().any(|l| l.contains("from 198.18.0.11")),
        "no rule for the secondary:\n{baseline:#?}"
    );
    eventually(
        "an answer from the secondary",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || topo.peer().ping(ENIS[1].1, 1).unwrap(),
    );
    let mut version = 0;
    let rows: Vec<Row> = SETUPS
        .iter()
        .flat_map(|s| round(&m, &topo, &bpffs, s, &baseline, &mut version))
        .collect();

    m.ok(&["systemctl", "stop", UNIT]);
    m.ok(&["enipin", "detach"]);
    m.power_off();
    // Again in one piece: the rows above interleave with other tests' output.
    for row in &rows {
        print(&row.to_string());
    }
    print(&format!(
        "networkd test: {:.0} s in all",
        started.elapsed().as_secs_f64()
    ));
}
