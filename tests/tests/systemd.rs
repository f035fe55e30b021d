//! The package's unit run by a real systemd as PID 1 ([`enipin_tests::machine::Machine`]: the
//! machine's own /usr booted by systemd-nspawn in the lab's host namespace). The unit is enabled
//! and started as an operator would; its sandbox must let `enipin watch` pin the secondary's replies, READY=1 must
//! arrive after the first reconcile, and a stop must leave enforcement installed until
//! `enipin detach`; the enabled unit enforces again after a reboot with nothing run by hand. The
//! .deb itself goes through dpkg there too: upgrade, removal, purge.
//!
//! The booted systemd never sees the machine's root network namespace: nspawn joins the lab's
//! namespace before the container's PID 1 exists, and the test checks PID 1's namespace before
//! it runs anything in the container.
//!
//! `cargo xtask test` builds the .deb first; `cargo xtask setup` installs systemd-nspawn (a
//! missing one fails the test, never a skip).

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use enipin_tests::{
    PinDir, Snapshot, Topology, http_client,
    machine::Machine,
    pins,
    run::{artifact, eventually},
};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const SECONDARY: &str = "198.18.0.11";
const UNIT: &str = "enipin.service";
/// CAP_NET_ADMIN (12) and CAP_SYS_ADMIN (21): the unit's bounding and ambient set, as the
/// kernel prints a capability mask in /proc/PID/status.
const UNIT_CAPS: &str = "0000000000201000";

#[test]
fn the_unit_under_systemd_pins_replies_signals_ready_its_stop_leaves_enforcement_and_a_reboot_enforces_again()
 {
    enipin_tests::require();
    let topo = Topology::build().expect("building the lab topology");
    let bpffs = PinDir::new("enipin-sd-").expect("bpffs for the container's /sys/fs/bpf");
    assert!(
        !topo.peer().ping(SECONDARY, 2).unwrap(),
        "secondary answers before enipin"
    );
    let mut m = Machine::boot(
        topo.host().name(),
        &artifact(&format!("enipin_{VERSION}_amd64.deb")),
        bpffs.mount(),
    );

    // As an operator would (the package enables nothing itself). Type=notify: the unit stays
    // "activating" until enipin sends READY=1.
    m.ok(&[
        "systemctl",
        "enable",
        "--now",
        "--no-block",
        "enipin.service",
    ]);
    m.wait_unit(UNIT, &["active"], Duration::from_secs(30));
    // READY=1 follows the first successful reconcile: once systemd says active, the rules and
    // the pins are in place already (checked at once, not waited for).
    let rules = topo.host().ip(&["rule", "show"]).unwrap();
    assert!(
        rules.contains(SECONDARY),
        "active without the rules:\n{rules}"
    );
    assert!(
        !pins(bpffs.path()).unwrap().is_empty(),
        "active with nothing pinned under the container's /sys/fs/bpf"
    );
    let journal = m.journal(UNIT);
    assert!(
        journal.contains("reconciled after") && journal.contains("managing eth0, eth1"),
        "no first reconcile in the journal:\n{journal}"
    );
    eventually(
        "an answer from the secondary",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || topo.peer().ping(SECONDARY, 1).unwrap(),
    );

    // The sandbox is the unit's: exactly its two capabilities, no new privileges, a seccomp
    // filter (and /sys/fs/bpf writable through ProtectSystem=strict: the pins above).
    let pid = m.property(UNIT, "MainPID");
    let status = m.ok(&["cat", &format!("/proc/{pid}/status")]);
    for want in [
        format!("CapEff:\t{UNIT_CAPS}"),
        format!("CapBnd:\t{UNIT_CAPS}"),
        "NoNewPrivs:\t1".to_owned(),
        "Seccomp:\t2".to_owned(),
    ] {
        assert!(
            status.contains(&want),
            "no {want:?} in enipin's status:\n{status}"
        );
    }

    // A stop leaves the state installed (no ExecStopPost=): watch exits 0 on SIGTERM.
    m.ok(&["systemctl", "stop", "--no-block", "enipin.service"]);
    m.wait_unit(UNIT, &["inactive"], Duration::from_secs(20));
    let journal = m.journal(UNIT);
    assert_eq!(m.property(UNIT, "Result"), "success", "{journal}");
    assert!(journal.contains("SIGTERM: stopped watching"), "{journal}");
    assert!(
        !pins(bpffs.path()).unwrap().is_empty(),
        "no pins left after the unit stopped"
    );
    assert!(
        topo.peer().ping(SECONDARY, 3).unwrap(),
        "enforcement stopped with the unit"
    );

    let ours = |t: &Topology| -> Vec<String> {
        let rules = t.host().ip(&["rule", "show"]).unwrap();
        rules
            .lines()
            .filter(|l| l.contains("proto 229"))
            .map(str::to_owned)
            .collect()
    };
    let first_boot = ours(&topo);

    // `systemctl stop enipin && enipin detach` removes it (the unit's own words).
    m.ok(&["enipin", "detach"]);
    assert!(
        !topo.peer().ping(SECONDARY, 2).unwrap(),
        "secondary answers after detach"
    );
    assert_eq!(
        pins(bpffs.path()).unwrap(),
        Vec::<String>::new(),
        "pins left after detach"
    );

    // The seed's last point: it survives a reboot. The unit is enabled; the same root boots
    // again on a fresh host namespace and bpffs (a reboot keeps the disk, not the kernel's
    // state), and nothing is run by hand.
    let topo = Topology::build().expect("building the lab topology again");
    let bpffs = PinDir::new("enipin-sd-").expect("bpffs for the second boot");
    let booted = std::time::SystemTime::now();
    m.reboot(topo.host().name(), bpffs.mount());
    m.wait_unit(UNIT, &["active"], Duration::from_secs(30));
    assert_eq!(ours(&topo), first_boot, "{}", m.journal(UNIT));
    eventually(
        "an answer from the secondary after the reboot",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || topo.peer().ping(SECONDARY, 1).unwrap(),
    );
    // The metrics are the new watcher's: its first success after the reboot.
    let (code, text) = http_client::get(topo.host(), "http://127.0.0.1:9717/metrics").unwrap();
    assert_eq!(code, 200, "{text}");
    let last = text
        .lines()
        .find_map(|l| l.strip_prefix("enipin_last_success_timestamp_seconds "))
        .unwrap_or_else(|| panic!("no last success:\n{text}"));
    let since = booted.duration_since(std::time::UNIX_EPOCH).unwrap();
    assert!(
        last.trim().parse::<f64>().unwrap() >= since.as_secs_f64().floor(),
        "last success {last} is older than the reboot ({since:?})"
    );
    m.ok(&["systemctl", "stop", UNIT]);
    m.ok(&["enipin", "detach"]);
    m.power_off();
}

/// `ping -i 0.01` from the peer to the secondary, `count` probes (at most `count / 100 + 2` s).
fn ping_every_10ms(topo: &Topology, count: u32) -> Child {
    let mut cmd = topo.peer().command("ping");
    cmd.args(["-n", "-q", "-i", "0.01", "-W", "1"])
        .args(["-c", &count.to_string()])
        .args(["-w", &(count / 100 + 2).to_string(), SECONDARY])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawning ping")
}

/// (sent, received) from ping's summary line.
fn ping_summary(child: Child) -> (u32, u32) {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    enipin_tests::testbed::ping_summary(&text).unwrap_or_else(|| panic!("no ping summary:\n{text}"))
}

/// The .deb's own life cycle under dpkg and a real systemd: an upgrade (the same package
/// installed again: `prerm upgrade`, then postinst's try-restart) keeps enforcement with a ping
/// every 10 ms losing none; removal stops the watcher and detaches, so the lab's host is as it
/// was before the package came (the rules, routes and sysctls; the container's bpffs empty);
/// purge removes the config.
#[test]
fn removing_the_package_detaches_and_an_upgrade_keeps_enforcement() {
    enipin_tests::require();
    let topo = Topology::build().expect("building the lab topology");
    let bpffs = PinDir::new("enipin-sd-").expect("bpffs for the container's /sys/fs/bpf");
    let before = Snapshot::take(topo.host(), &topo.eni_names(), bpffs.path()).unwrap();
    let name = format!("enipin_{VERSION}_amd64.deb");
    let mut m = Machine::boot_for_dpkg(topo.host().name(), &artifact(&name), bpffs.mount());
    let deb = format!("/var/tmp/{name}");
    m.ok(&["dpkg", "-i", &deb]);
    m.ok(&["systemctl", "enable", "--now", "--no-block", UNIT]);
    m.wait_unit(UNIT, &["active"], Duration::from_secs(30));
    eventually(
        "an answer from the secondary",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || topo.peer().ping(SECONDARY, 1).unwrap(),
    );
    let pid = m.property(UNIT, "MainPID");

    // Upgrade: the watcher restarts (a new PID) and the installed state carries over. 1,500
    // probes: 15 s, around an upgrade of 2 s on an idle machine and more than 6 s with eleven
    // runnable processes on its 2 CPUs (a fixed count, so ping waits for its last reply).
    let mut ping = ping_every_10ms(&topo, 1500);
    std::thread::sleep(Duration::from_millis(500));
    m.ok(&["dpkg", "-i", &deb]);
    m.wait_unit(UNIT, &["active"], Duration::from_secs(30));
    assert!(
        ping.try_wait().unwrap().is_none(),
        "the pings ended before the upgrade did"
    );
    let (sent, received) = ping_summary(ping);
    eprintln!("upgrade: {received} of {sent} pings answered");
    assert_ne!(
        m.property(UNIT, "MainPID"),
        pid,
        "try-restart restarted nothing"
    );
    assert_eq!(
        received,
        sent,
        "pings lost across the upgrade:\n{}",
        m.journal(UNIT)
    );

    // Removal: stopped, then detached.
    let out = m.ok(&["dpkg", "-r", "enipin"]);
    assert_eq!(
        m.read(&["systemctl", "is-active", UNIT]),
        "inactive",
        "{out}"
    );
    let after = Snapshot::take(topo.host(), &topo.eni_names(), bpffs.path()).unwrap();
    assert!(
        after == before,
        "removal left:\n{}\n{out}",
        before.diff(&after).join("\n")
    );
    assert!(
        !topo.peer().ping(SECONDARY, 2).unwrap(),
        "the secondary answers after removal"
    );
    let root = m.root();
    assert!(
        root.join("etc/enipin/enipin.toml").exists(),
        "remove took the config"
    );
    m.ok(&["dpkg", "-P", "enipin"]);
    assert!(!root.join("etc/enipin").exists(), "purge left /etc/enipin");
    m.power_off();
}
