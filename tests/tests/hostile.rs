//! enipin run as an unlucky or hostile operator runs it: defects found that way, one test each
//! (each failed before its fix). Everything in throwaway namespaces; pin dirs on private bpffs.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use enipin_tests::{
    Enipin, PinDir, Snapshot, TempDir, Topology, enipin_bin, require, tcx_programs,
};

const IFACES: [&str; 2] = ["eth0", "eth1"];
const SECONDARY: &str = "198.18.0.11";

fn lab() -> (Topology, Enipin) {
    require();
    let topo = Topology::build().expect("topology");
    let e = Enipin::in_ns(topo.host());
    (topo, e)
}

fn progs_on(topo: &Topology, ifname: &str) -> Vec<String> {
    tcx_programs(topo.host(), ifname)
        .unwrap()
        .into_iter()
        .flat_map(|(_, p)| p)
        .collect()
}

fn status(e: &Enipin) -> (bool, String) {
    let out = e.cmd(&["status"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// 10.1: a missing datapath is drift, and `status` exits non-zero on drift.
#[test]
fn status_reports_a_missing_datapath_as_drift_and_exits_non_zero() {
    let (topo, e) = lab();
    e.ok(&["attach"]);
    let (ok, text) = status(&e);
    assert!(ok && text.contains("drift: none"), "{text}");
    let eth1 = topo.host().ifindex("eth1").unwrap();
    // Unpinning the only reference to a TCX link detaches it.
    std::fs::remove_file(e.pins.path().join(format!("link-{eth1}"))).unwrap();
    let (ok, text) = status(&e);
    assert!(!ok, "status exited 0 with eth1's datapath gone:\n{text}");
    assert!(!text.contains("drift: none"), "{text}");
    assert!(
        text.contains("eth1"),
        "the drift names no interface:\n{text}"
    );
    let json = e.cmd(&["status", "--json"]);
    assert!(!json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        v["drift"].as_array().is_some_and(|d| !d.is_empty()),
        "--json drift is empty: {v}"
    );
    // The whole pin dir gone: drift on both.
    std::fs::remove_dir_all(e.pins.path()).unwrap();
    let (ok, text) = status(&e);
    assert!(
        !ok && text.contains("eth0") && text.contains("eth1"),
        "{text}"
    );
    e.ok(&["attach"]);
    let (ok, text) = status(&e);
    assert!(ok && text.contains("drift: none"), "{text}");
    e.ok(&["detach"]);
}

/// `enipin --netns NS --pin-dir PINS --state-dir STATE ARGS`.
fn run_with(ns: &str, pins: &Path, state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(enipin_bin())
        .arg("--netns")
        .arg(ns)
        .arg("--pin-dir")
        .arg(pins)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .unwrap()
}

/// Two lab topologies whose enipins share one pin dir, each with a state dir of its own.
struct TwoLabs {
    a: Topology,
    b: Topology,
    pins: PinDir,
    state_a: TempDir,
    state_b: TempDir,
}

impl TwoLabs {
    fn new(pins: &str) -> Self {
        require();
        Self {
            a: Topology::build().expect("topology a"),
            b: Topology::build().expect("topology b"),
            pins: PinDir::new(pins).unwrap(),
            state_a: TempDir::new("enipin-sa-").unwrap(),
            state_b: TempDir::new("enipin-sb-").unwrap(),
        }
    }

    fn run_a(&self, args: &[&str]) -> std::process::Output {
        run_with(
            self.a.host().name(),
            self.pins.path(),
            self.state_a.path(),
            args,
        )
    }

    fn run_b(&self, args: &[&str]) -> std::process::Output {
        run_with(
            self.b.host().name(),
            self.pins.path(),
            self.state_b.path(),
            args,
        )
    }
}

/// 10.2: two namespaces given the same pin dir never touch each other's datapath.
#[test]
fn two_namespaces_with_one_pin_dir_leave_each_other_alone() {
    let t = TwoLabs::new("enipin-shared-");
    // eBPF only: the secondary answers a's peer only while a's datapath is there.
    let out = t.run_a(&["attach", "--no-rules"]);
    assert!(out.status.success(), "{out:?}");
    assert!(t.a.peer().ping(SECONDARY, 2).unwrap());
    // b either gets a datapath of its own or a clear refusal; a's stays either way.
    let _ = t.run_b(&["attach", "--no-rules"]);
    let _ = t.run_b(&["detach"]);
    assert!(
        t.a.peer().ping(SECONDARY, 2).unwrap(),
        "b's attach/detach removed a's datapath"
    );
    assert!(
        !progs_on(&t.a, "eth1").is_empty(),
        "a's program is gone from eth1"
    );
    let st = t.run_a(&["status"]);
    assert!(st.status.success(), "{st:?}");
    let out = t.run_a(&["detach"]);
    assert!(out.status.success(), "{out:?}");
    assert!(progs_on(&t.a, "eth1").is_empty());
}

/// 10.2, upgrading: a pin dir laid out by an enipin that did not mark it (no `netns-<inode>/`)
/// is adopted by its own namespace with the links left in place, and refused by another one.
#[test]
fn an_unmarked_pin_dir_is_adopted_by_its_namespace_only() {
    let t = TwoLabs::new("enipin-unmarked-");
    let out = t.run_a(&["attach", "--no-rules"]);
    assert!(out.status.success(), "{out:?}");
    let unmark = || {
        for entry in std::fs::read_dir(t.pins.path()).unwrap() {
            let p = entry.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("netns-")
            {
                std::fs::remove_dir(&p).unwrap();
            }
        }
    };
    unmark();
    let link = progs_on(&t.a, "eth1");
    let out = t.run_b(&["attach", "--no-rules"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("another network namespace"),
        "{out:?}"
    );
    assert_eq!(progs_on(&t.a, "eth1"), link, "b's attach touched a's link");
    let out = t.run_a(&["attach", "--no-rules"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("+ mark the pin directory"), "{text}");
    assert!(
        !text.contains("attach enipin"),
        "the links were replaced:\n{text}"
    );
    assert_eq!(progs_on(&t.a, "eth1"), link);
    assert!(t.a.peer().ping(SECONDARY, 2).unwrap());
    // Marked now: b is refused by the mark itself.
    let out = t.run_b(&["attach", "--no-rules"]);
    assert!(!out.status.success(), "{out:?}");
    let out = t.run_a(&["detach"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!t.pins.path().exists(), "pin dir left behind");
}

/// 10.3: the state file names only sysctls attach could have set; anything else is refused and
/// nothing is written. The state directory is 0700; a state file others can write is refused.
#[test]
fn a_state_file_cannot_make_detach_write_anywhere() {
    let (_topo, e) = lab();
    e.ok(&["attach", "--no-ebpf"]);
    let mode = std::fs::metadata(e.state.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "state dir mode {mode:o}");

    let victim = TempDir::new("enipin-victim-").unwrap();
    let target = victim.path().join("file");
    std::fs::write(&target, "untouched").unwrap();
    let file = e.state_file();
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    state["sysctls"] = serde_json::json!({ target.to_str().unwrap(): "pwned" });
    std::fs::write(&file, serde_json::to_string(&state).unwrap()).unwrap();
    let err = e.fails(&["detach"]);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    assert!(
        err.contains(target.to_str().unwrap()),
        "the error names no key: {err}"
    );

    // Writable by others: refused, whatever it says.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = e.fails(&["status"]);
    assert!(err.contains("writable"), "{err}");
}

/// 10.4: renaming an interface between attach and detach leaks none of its sysctls.
#[test]
fn a_renamed_interface_gets_its_sysctls_back() {
    let (topo, e) = lab();
    let h = topo.host();
    let before = Snapshot::take(h, &IFACES, e.pins.path()).unwrap();
    e.ok(&["attach", "--no-ebpf"]);
    let rename = |from: &str, to: &str| {
        h.ip(&["link", "set", from, "down"]).unwrap();
        h.ip(&["link", "set", from, "name", to]).unwrap();
        h.ip(&["link", "set", to, "up"]).unwrap();
    };
    rename("eth1", "ren1");
    e.ok(&["detach"]);
    rename("ren1", "eth1");
    // Routes through eth1 went with the link down: compare what enipin sets, the sysctls.
    let after = Snapshot::take(h, &IFACES, e.pins.path()).unwrap();
    let leaked: Vec<String> = before
        .diff(&after)
        .into_iter()
        .filter(|l| l.contains("arp_") || l.contains("rp_filter"))
        .collect();
    assert_eq!(
        leaked,
        Vec::<String>::new(),
        "sysctls leaked across the rename"
    );
}

/// 10.5: loopback is never managed (its program would redirect local traffic). An interface in
/// a subnet of its own, named beside eth0 and eth1, used to be refused as "sharing no subnet":
/// its replies beyond its subnet follow the main table's default route out of eth0, so it is
/// managed (issue 23), and detach leaves nothing of it.
#[test]
fn loopback_is_refused_and_an_eni_in_its_own_subnet_is_managed() {
    let (topo, e) = lab();
    let before = Snapshot::take(topo.host(), &IFACES, e.pins.path()).unwrap();
    let err = e.fails(&["attach", "--interfaces", "lo,eth1"]);
    assert!(err.contains("lo") && err.contains("loopback"), "{err}");
    let after = Snapshot::take(topo.host(), &IFACES, e.pins.path()).unwrap();
    assert_eq!(before.diff(&after), Vec::<String>::new());
    let h = topo.host();
    h.ip(&[
        "link", "add", "solo0", "type", "veth", "peer", "name", "solo1",
    ])
    .unwrap();
    // No IPv6: its link-local routes would come some time after the link is up, in the diff.
    for dev in ["solo0", "solo1"] {
        h.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "1")
            .unwrap();
    }
    h.ip(&["addr", "add", "198.18.1.9/24", "dev", "solo0"])
        .unwrap();
    h.ip(&["link", "set", "solo0", "up"]).unwrap();
    h.ip(&["link", "set", "solo1", "up"]).unwrap();
    // solo0's own routes are the kernel's, not enipin's: compare from here.
    let before = Snapshot::take(topo.host(), &IFACES, e.pins.path()).unwrap();
    let out = e.ok(&["attach", "--interfaces", "eth0,eth1,solo0"]);
    assert!(
        out.contains("solo0: managed: a reply from 198.18.1.9 to 0.0.0.0/0 (the default route) leaves by eth0"),
        "{out}"
    );
    e.ok(&["detach"]);
    let after = Snapshot::take(topo.host(), &IFACES, e.pins.path()).unwrap();
    assert_eq!(before.diff(&after), Vec::<String>::new());
}

/// Runs `f` while `ip monitor rule` watches the lab host; returns what `f` returned and every rule
/// event meanwhile (a refusal "before any change" has none: no rule added and rolled back).
fn rule_events<T>(topo: &Topology, f: impl FnOnce() -> T) -> (T, String) {
    let mut monitor = topo
        .host()
        .command("ip")
        .args(["-o", "monitor", "rule"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The monitor subscribed; and, after `f`, the last events delivered.
    std::thread::sleep(Duration::from_millis(200));
    let out = f();
    std::thread::sleep(Duration::from_millis(200));
    let _ = monitor.kill();
    let events = monitor.wait_with_output().unwrap();
    (out, String::from_utf8_lossy(&events.stdout).into_owned())
}

/// 10.6: a pin dir that is not on a bpffs is refused before any rule is added.
#[test]
fn a_pin_dir_off_bpffs_is_refused_before_any_change() {
    let (topo, e) = lab();
    let not_bpffs = TempDir::new("enipin-notbpffs-").unwrap();
    let rules_before = topo.host().ip(&["rule"]).unwrap();
    let (out, events) = rule_events(&topo, || {
        run_with(
            topo.host().name(),
            not_bpffs.path(),
            e.state.path(),
            &["attach"],
        )
    });
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bpffs"),
        "{out:?}"
    );
    assert!(
        events.trim().is_empty(),
        "rules were added and removed:\n{events}"
    );
    assert_eq!(topo.host().ip(&["rule"]).unwrap(), rules_before);
}

/// 10.8: detach with the wrong --pin-dir still removes what this namespace's attach pinned, or
/// fails; it never reports success with programs left on the links.
#[test]
fn detach_with_the_wrong_pin_dir_removes_the_datapath_or_fails() {
    let (topo, e) = lab();
    e.ok(&["attach"]);
    let wrong = PinDir::new("enipin-wrong-").unwrap();
    let out = run_with(
        topo.host().name(),
        wrong.path(),
        e.state.path(),
        &["detach"],
    );
    let left = progs_on(&topo, "eth0").len() + progs_on(&topo, "eth1").len();
    assert!(
        !out.status.success() || left == 0,
        "detach reported success with {left} program(s) still attached: {out:?}"
    );
    let _ = e.cmd(&["detach"]);
    assert_eq!(
        progs_on(&topo, "eth0").len() + progs_on(&topo, "eth1").len(),
        0
    );
}

/// 10.9: watch restores a removed link pin and a reverted sysctl within about a second, not at
/// its 30 s periodic pass.
#[test]
fn watch_restores_a_removed_datapath_and_a_reverted_sysctl_within_a_second() {
    let (topo, e) = lab();
    let mut watch = e
        .command(&["watch"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let eth1 = topo.host().ifindex("eth1").unwrap();
    let pin = e.pins.path().join(format!("link-{eth1}"));
    let settle = Instant::now();
    while !pin.exists() && settle.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&pin).unwrap();
    topo.host()
        .sysctl("net.ipv4.conf.eth1.arp_ignore", "0")
        .unwrap();
    let t = Instant::now();
    let arp_ignore = || {
        topo.host()
            .sh("cat /proc/sys/net/ipv4/conf/eth1/arp_ignore")
            .unwrap()
    };
    while t.elapsed() < Duration::from_secs(3)
        && !(pin.exists() && !progs_on(&topo, "eth1").is_empty() && arp_ignore().trim() == "1")
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    let _ = watch.kill();
    let _ = watch.wait();
    eprintln!("datapath and sysctl restored after {took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "not restored within 1.5 s ({took:?})"
    );
    e.ok(&["detach"]);
}

/// `status` only reads: with a map's pin gone it reports the drift and pins nothing (its plan
/// used to load the program against the pin dir for its tag, which re-created the missing map).
#[test]
fn status_with_a_map_pin_gone_reports_it_and_pins_nothing() {
    let (_topo, e) = lab();
    e.ok(&["attach"]);
    let cfg_pin = e.pins.path().join(enipin_ebpf::maps::CONFIG);
    std::fs::remove_file(&cfg_pin).unwrap();
    let (ok, text) = status(&e);
    assert!(
        !ok,
        "status exited 0 with {} unpinned:\n{text}",
        cfg_pin.display()
    );
    assert!(!cfg_pin.exists(), "status pinned {}", cfg_pin.display());
    e.ok(&["attach"]);
    let (ok, text) = status(&e);
    assert!(ok && text.contains("drift: none"), "{text}");
    e.ok(&["detach"]);
}

/// Issue 26, item 6: past the datapath's 4,096 addresses per family, attach refuses before any
/// change, with the number. Before: 8,216 changes applied and rolled back, then "Argument list
/// too long" from the owner map (on every pass of watch too).
#[test]
fn more_addresses_than_the_datapath_holds_are_refused_before_any_change() {
    let (topo, e) = lab();
    let batch = TempDir::new("enipin-many-").unwrap();
    let file = batch.path().join("add");
    // 4,096 more on eth1: with eth0's and eth1's own, 4,098 IPv4 addresses to own.
    let lines: String = (0..4096u32)
        .map(|i| format!("addr add 198.19.{}.{}/16 dev eth1\n", i / 250, i % 250 + 1))
        .collect();
    std::fs::write(&file, lines).unwrap();
    topo.host().ip(&["-batch", file.to_str().unwrap()]).unwrap();
    let (err, events) = rule_events(&topo, || e.fails(&["attach"]));
    assert!(
        err.contains("4098 IPv4 addresses") && err.contains("at most 4096"),
        "{err}"
    );
    assert_eq!(events.lines().count(), 0, "rules were added and removed");
    assert!(!e.state_file().exists(), "a state file was written");
}
