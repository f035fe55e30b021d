//! enipin with no more than its systemd unit and its DaemonSet grant: /proc/sys read-only, as
//! Kubernetes mounts it in an unprivileged container and `ProtectKernelTunables=yes` does. Each
//! run of enipin gets a mount namespace of its own (`unshare --mount`, private propagation): the
//! read-only bind of /proc/sys never reaches the root mount namespace, and the sysctls touched are
//! the lab host namespace's.

use std::process::{Command, Output};

use enipin_tests::{Enipin, Snapshot, Topology, require};

const IFACES: [&str; 2] = ["eth0", "eth1"];

/// Binds /proc/sys read-only over itself, checks that it took (`test -w` asks `access`, which
/// answers EROFS: nothing is written to find out), then runs the command given.
const READ_ONLY_PROC_SYS: &str = "set -e
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
if [ -w /proc/sys/net/ipv4/conf/all/rp_filter ]; then
    echo '/proc/sys is still writable' >&2
    exit 99
fi
exec \"$@\"";

/// `enipin ARGS` in the lab host's namespace with /proc/sys read-only; panics unless it
/// succeeds, returns its stdout.
fn ok_read_only(e: &Enipin, args: &[&str]) -> String {
    let enipin = e.command(args);
    let out: Output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(READ_ONLY_PROC_SYS)
        .arg("sh")
        .arg(enipin.get_program())
        .args(enipin.get_args())
        .output()
        .expect("spawning unshare");
    assert!(
        out.status.success(),
        "enipin {} with /proc/sys read-only failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Before the knobs went over netlink, attach failed here: writing
/// /proc/sys/net/ipv4/conf/eth1/rp_filter is EROFS.
#[test]
fn attach_and_detach_set_and_restore_the_sysctls_with_proc_sys_read_only() {
    require();
    let topo = Topology::build().expect("topology");
    let h = topo.host();
    let e = Enipin::in_ns(h);
    // Strict reverse-path filtering on eth1 (the kernel applies the larger of `all` and the
    // interface's): attach changes all three of eth1's knobs.
    h.sysctl("net.ipv4.conf.all.rp_filter", "0").unwrap();
    h.sysctl("net.ipv4.conf.eth1.rp_filter", "1").unwrap();
    h.sysctl("net.ipv4.conf.eth1.arp_announce", "1").unwrap();
    let knob = |ifname: &str, knob: &str| {
        h.sh(&format!("cat /proc/sys/net/ipv4/conf/{ifname}/{knob}"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let before = Snapshot::take(h, &IFACES, e.pins.path()).unwrap();

    let out = ok_read_only(&e, &["attach"]);
    assert!(out.contains("attached"), "{out}");
    for (ifname, name, want) in [
        ("eth1", "rp_filter", "2"),
        ("eth1", "arp_ignore", "1"),
        ("eth1", "arp_announce", "2"),
        ("eth0", "arp_ignore", "1"),
        ("eth0", "arp_announce", "2"),
    ] {
        assert_eq!(knob(ifname, name), want, "net.ipv4.conf.{ifname}.{name}");
    }
    // No other devconf value changed: the request carried these knobs alone.
    let attached = Snapshot::take(h, &IFACES, e.pins.path()).unwrap();
    let others: Vec<String> = before
        .diff(&attached)
        .into_iter()
        .filter(|l| l.contains("/conf/"))
        .filter(|l| {
            !["rp_filter=", "arp_ignore=", "arp_announce="]
                .iter()
                .any(|k| l.contains(k))
        })
        .collect();
    assert_eq!(others, Vec::<String>::new(), "attach changed other sysctls");
    let status = ok_read_only(&e, &["status"]);
    assert!(status.contains("drift: none"), "{status}");

    ok_read_only(&e, &["detach"]);
    let after = Snapshot::take(h, &IFACES, e.pins.path()).unwrap();
    assert!(
        after == before,
        "detach did not restore the namespace:\n{}",
        before.diff(&after).join("\n")
    );
}
