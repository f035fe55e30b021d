//! The package's unit run by a real systemd as PID 1 ([`enipin_tests::machine::Machine`]: the
//! machine's own /usr booted by systemd-nspawn in the lab's host namespace). The unit is enabled
//! and started as an operator would; its sandbox must let `enipin watch` pin the secondary's replies, READY=1 must
//! arrive after the first reconcile, and a stop must leave enforcement installed until
//! `enipin detach`.
//!
//! The booted systemd never sees the machine's root network namespace: nspawn joins the lab's
//! namespace before the container's PID 1 exists, and the test checks PID 1's namespace before
//! it runs anything in the container.
//!
//! `cargo xtask test` builds the .deb first; `cargo xtask setup` installs systemd-nspawn (a
//! missing one fails the test, never a skip).

use std::time::Duration;

use enipin_tests::{
    PinDir, Topology,
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
fn the_unit_under_systemd_pins_replies_signals_ready_and_its_stop_leaves_enforcement() {
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
    let status = m.power_off();
    assert!(
        status.success(),
        "systemd-nspawn: {status}:\n{}",
        m.console()
    );
}
