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

/// `enipin ARGS` in the lab host's namespace under `setpriv ARGS` (nsenter, as full root,
/// enters the namespace first: setns needs CAP_SYS_ADMIN).
fn under(e: &Enipin, setpriv: &[&str], args: &[&str]) -> Output {
    let enipin = e.command(args);
    // `--netns` would enter the namespace again: this process is in it already.
    let own: Vec<_> = enipin.get_args().skip(2).collect();
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", e.ns_name()))
        .arg("setpriv")
        .args(setpriv)
        .arg("--")
        .arg(enipin.get_program())
        .args(own)
        .output()
        .expect("spawning nsenter")
}

/// Short of its two capabilities (issue 26, item 10), enipin says which one is missing before
/// it changes anything. Before: with CAP_NET_ADMIN alone, attach applied 35 rule changes,
/// rolled them back and blamed "pins from another enipin version"; as nobody, no error named
/// root or a capability, and doctor exited 0 with 13 warnings.
#[test]
fn short_of_its_capabilities_enipin_names_the_missing_one_and_changes_nothing() {
    require();
    let topo = Topology::build().expect("topology");
    let e = Enipin::in_ns(topo.host());
    let before = Snapshot::take(topo.host(), &IFACES, e.pins.path()).unwrap();
    let net_admin_only = [
        "--bounding-set=-all,+net_admin",
        "--inh-caps=-all,+net_admin",
        "--ambient-caps=-all,+net_admin",
    ];
    let nobody = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ];
    for (who, setpriv, args, lacking) in [
        (
            "root with CAP_NET_ADMIN",
            &net_admin_only[..],
            "attach",
            "lacks CAP_SYS_ADMIN:",
        ),
        (
            "nobody",
            &nobody[..],
            "attach",
            "lacks CAP_NET_ADMIN and CAP_SYS_ADMIN",
        ),
        (
            "nobody",
            &nobody[..],
            "watch",
            "lacks CAP_NET_ADMIN and CAP_SYS_ADMIN",
        ),
        (
            "nobody",
            &nobody[..],
            "doctor",
            "lacks CAP_NET_ADMIN and CAP_SYS_ADMIN",
        ),
        (
            "nobody",
            &nobody[..],
            "detach",
            "lacks CAP_NET_ADMIN and CAP_SYS_ADMIN",
        ),
    ] {
        let out = under(&e, setpriv, &[args]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{who}: enipin {args} succeeded: {err}"
        );
        assert!(
            err.contains(lacking) && err.contains("run it as root"),
            "{who}: enipin {args}: {err}"
        );
        assert!(!err.contains("another enipin version"), "{who}: {err}");
    }
    let rules_only = under(&e, &net_admin_only, &["attach", "--no-ebpf"]);
    assert!(
        rules_only.status.success(),
        "the rules layer alone needs CAP_NET_ADMIN only: {}",
        String::from_utf8_lossy(&rules_only.stderr)
    );
    e.ok(&["detach"]);
    let after = Snapshot::take(topo.host(), &IFACES, e.pins.path()).unwrap();
    assert_eq!(before.diff(&after), Vec::<String>::new(), "residue");
}
