//! The baseline (policy rules, routes, sysctls over rtnetlink) driven through the CLI, in the
//! lab's topology (`enipin::lab::Topology`): a host with ENIs in one subnet behind a "VPC" bridge
//! (the gateway, 198.18.0.1 and 2001:db8::1) that drops frames whose source IP or MAC is not the
//! ENI's, and a peer (198.18.0.100, 2001:db8::100) behind it. The host has no default route unless
//! a test adds one, so enipin takes the subnet's first host as gateway.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    process::Command,
    time::Instant,
};

use enipin_tests::{EniSpec, Enipin, Snapshot, Spec, TempDir, Topology, require};

/// The lab with ENIs `eth<i>` whose addresses are `enis[i]` = (IPv4 host numbers, IPv6 host
/// numbers) in 198.18.0.0/24 and 2001:db8::/64 (first = primary; added in ENI order, so the main
/// table's subnet route goes out of eth0), and enipin bound to its host.
fn topo(enis: &[(&[u8], &[u8])]) -> (Topology, Enipin) {
    require();
    let spec = Spec {
        enis: enis
            .iter()
            .zip(0..)
            .map(|((v4, v6), i)| EniSpec {
                v4: v4.iter().map(|&h| Ipv4Addr::new(198, 18, 0, h)).collect(),
                v6: v6
                    .iter()
                    .map(|&h| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, h.into()))
                    .collect(),
                ..EniSpec::nth(i)
            })
            .collect(),
        default_routes: false,
        ..Spec::default()
    };
    let t = Topology::build_with(spec).expect("topology");
    let e = Enipin::in_ns(t.host());
    (t, e)
}

/// Panics, naming `what` and the lines that differ, unless `now` is exactly `before`.
fn assert_same(before: &Snapshot, now: &Snapshot, what: &str) {
    assert!(now == before, "{what}:\n{}", before.diff(now).join("\n"));
}

/// enipin's table for `eth<eni>` (default table base 20000 + ifindex).
fn table(t: &Topology, eni: usize) -> u32 {
    20000 + t.host().ifindex(&t.spec.enis[eni].name).unwrap()
}

/// Pings `dst` from the host with source address `src`: whether a reply came back.
/// netplan itself turns the rendered file into networkd's: in a scratch root beside the file
/// cloud-init writes (eth0 and eth1 by name, DHCP), eth1's policy rules and its table's default
/// route come out in eth1's `.network`.
fn netplan_generates(yaml: &str, table: u32) {
    let root = enipin_tests::TempDir::new("enipin-netplan-").unwrap();
    let dir = root.path().join("etc/netplan");
    std::fs::create_dir_all(&dir).unwrap();
    let cloud_init = "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n    eth1:\n      dhcp4: true\n";
    for (name, text) in [("50-cloud-init.yaml", cloud_init), ("90-enipin.yaml", yaml)] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        // netplan warns about (and newer ones refuse) files others can read.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }
    let out = Command::new("netplan")
        .arg("generate")
        .arg("--root-dir")
        .arg(root.path())
        .output()
        .expect("netplan (cargo xtask setup installs netplan.io)");
    assert!(
        out.status.success(),
        "netplan generate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let network = root
        .path()
        .join("run/systemd/network/10-netplan-eth1.network");
    let text =
        std::fs::read_to_string(&network).unwrap_or_else(|e| panic!("{}: {e}", network.display()));
    assert!(
        text.contains("DHCP=ipv4"),
        "cloud-init's DHCP kept:\n{text}"
    );
    assert!(text.contains("[RoutingPolicyRule]"), "{text}");
    assert!(
        text.contains("From=198.18.0.21/32") && text.contains(&format!("Table={table}")),
        "{text}"
    );
    assert!(text.contains("Gateway=198.18.0.1"), "{text}");
}

/// `cmd` reads `script` on stdin and finds nothing wrong in it.
fn script_checks(cmd: &[&str], script: &str) {
    let mut child = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (cargo xtask setup installs it)", cmd[0]));
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    let checked = child.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "{}: {}{}\n{script}",
        cmd.join(" "),
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

fn ping_from(t: &Topology, src: &str, dst: &str) -> bool {
    t.host().pings(&["-I", src, dst], 2).unwrap().1 > 0
}

#[test]
fn seed_ping_fails_before_and_works_after_attach() {
    let (t, enipin) = topo(&[(&[10], &[]), (&[11], &[])]);
    // Strict reverse-path filtering on eth1 alone: the kernel applies the larger of `all` and the
    // interface's value, and the lab's `all` is a stock distribution's loose 2.
    t.host().sysctl("net.ipv4.conf.all.rp_filter", "0").unwrap();
    t.host()
        .sysctl("net.ipv4.conf.eth1.rp_filter", "1")
        .unwrap();
    assert!(
        t.peer().ping("198.18.0.10", 2).unwrap(),
        "the primary ENI must answer before attach"
    );
    assert!(
        !t.peer().ping("198.18.0.11", 3).unwrap(),
        "the secondary ENI must NOT answer before attach (replies leave by eth0)"
    );
    let before = enipin.dump(&t);

    // --dry-run in both formats changes nothing.
    let dry = enipin.ok(&["attach", "--no-ebpf", "--dry-run"]);
    assert!(dry.contains("+ rule from 198.18.0.11/32 lookup"), "{dry}");
    assert!(
        dry.contains("~ sysctl net.ipv4.conf.eth1.rp_filter: 1 -> 2"),
        "{dry}"
    );
    assert!(
        dry.contains("subnet's first host"),
        "the gateway source is shown: {dry}"
    );
    let dry_ip = enipin.ok(&["attach", "--no-ebpf", "--dry-run", "--format", "ip"]);
    let t1 = table(&t, 1);
    assert!(dry_ip.contains(&format!("ip rule add from 198.18.0.11/32 lookup {t1} suppress_prefixlength 0 pref 20000 proto 229")), "{dry_ip}");
    assert!(
        dry_ip.contains(&format!(
            "ip route add default via 198.18.0.1 dev eth1 table {t1} proto 229"
        )),
        "{dry_ip}"
    );
    assert!(
        dry_ip.contains("sysctl -w net.ipv4.conf.eth1.arp_ignore=1"),
        "{dry_ip}"
    );
    // A script bash accepts and shellcheck finds nothing in (issue 28, item 3: the summary line
    // was not a comment), with the datapath too (its lines are comments: it has no iproute2
    // equivalent).
    for args in [&["--no-ebpf"][..], &[][..]] {
        let script = enipin.ok(&[&["attach", "--dry-run", "--format", "ip"][..], args].concat());
        script_checks(&["bash", "-n", "/dev/stdin"], &script);
        script_checks(&["shellcheck", "--shell=bash", "-"], &script);
    }
    // --format without --dry-run would be ignored: it is an error.
    let e = enipin.fails(&["attach", "--format", "ip"]);
    assert!(e.contains("--dry-run"), "{e}");
    assert_same(&before, &enipin.dump(&t), "--dry-run changed something");
    assert!(!enipin.state_file().exists());

    let started = Instant::now();
    let out = enipin.ok(&["attach", "--no-ebpf"]);
    eprintln!(
        "attach of 2 interfaces x 1 address: {:?}",
        started.elapsed()
    );
    assert!(out.contains("attached"), "{out}");
    assert!(enipin.state_file().exists());
    // The peer's failed ARP resolution of 198.18.0.11 from before may still run out right now,
    // dropping the first probes queued on it: start from a clean cache.
    t.peer().ip(&["neigh", "flush", "all"]).unwrap();
    assert!(
        t.peer().ping("198.18.0.11", 3).unwrap(),
        "the secondary ENI must answer after attach"
    );
    assert!(t.peer().ping("198.18.0.10", 2).unwrap());
    let rules = t.host().ip(&["rule"]).unwrap();
    assert!(
        rules.contains(&format!(
            "from 198.18.0.11 lookup {t1} suppress_prefixlength 0 proto 229"
        )),
        "{rules}"
    );
    assert!(
        rules.contains("lookup main suppress_prefixlength 0 proto 229"),
        "{rules}"
    );
    let table = t
        .host()
        .ip(&["route", "show", "table", &t1.to_string()])
        .unwrap();
    assert!(
        table.contains("default via 198.18.0.1 dev eth1 proto 229"),
        "{table}"
    );
    assert!(
        table.contains("198.18.0.0/24 dev eth1 proto 229 scope link src 198.18.0.11"),
        "{table}"
    );
    assert_eq!(
        t.host()
            .sh("cat /proc/sys/net/ipv4/conf/eth1/rp_filter")
            .unwrap()
            .trim(),
        "2"
    );

    // Idempotent.
    let again = enipin.ok(&["attach", "--no-ebpf"]);
    assert!(
        again.contains("nothing to do: 5 rules, 4 routes already installed"),
        "{again}"
    );

    let status = enipin.ok(&["status"]);
    assert!(status.contains("drift: none"), "{status}");
    assert!(status.contains("datapath: not attached"), "{status}");
    let json: serde_json::Value = serde_json::from_str(&enipin.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["managed"].as_array().unwrap().len(), 2);
    assert_eq!(
        json["managed"][1]["gateway_v4"]["source"],
        "subnet-first-host"
    );

    // Drift: someone deletes one of our rules; status says so (and exits 1, for health
    // checks), attach puts it back.
    t.host()
        .ip(&["rule", "del", "pref", "20002", "from", "198.18.0.11"])
        .unwrap();
    let out = enipin.cmd(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("drift (1 change(s)") && status.contains("+ rule from 198.18.0.11/32"),
        "{status}"
    );
    let fix = enipin.ok(&["attach", "--no-ebpf"]);
    assert!(fix.contains("attached: 1 change(s)"), "{fix}");

    let started = Instant::now();
    let out = enipin.ok(&["detach"]);
    eprintln!("detach of 2 interfaces: {:?}", started.elapsed());
    assert!(out.contains("detached"), "{out}");
    assert_same(
        &before,
        &enipin.dump(&t),
        "detach did not restore the namespace",
    );
    assert!(!enipin.state_file().exists());
    let again = enipin.ok(&["detach"]);
    assert!(again.contains("nothing to do"), "{again}");
    assert!(
        !t.peer().ping("198.18.0.11", 2).unwrap(),
        "after detach the secondary is broken again"
    );
}

#[test]
fn three_enis_secondaries_ipv6_and_foreign_rules() {
    let (t, enipin) = topo(&[
        (&[10, 20], &[0x10]),
        (&[11, 21], &[0x11]),
        (&[12, 22], &[0x12, 0x22]),
    ]);
    // Someone else's rule and route, which enipin must leave alone.
    t.host()
        .ip(&[
            "rule",
            "add",
            "from",
            "198.18.5.5",
            "lookup",
            "500",
            "pref",
            "100",
        ])
        .unwrap();
    t.host()
        .ip(&[
            "route",
            "add",
            "198.18.5.0/24",
            "dev",
            "eth0",
            "table",
            "500",
        ])
        .unwrap();
    t.host()
        .ip(&[
            "-6",
            "rule",
            "add",
            "from",
            "2001:db8:5::5",
            "lookup",
            "500",
            "pref",
            "100",
        ])
        .unwrap();
    for a in ["198.18.0.11", "198.18.0.21", "198.18.0.12", "198.18.0.22"] {
        assert!(
            !t.peer().ping(a, 2).unwrap(),
            "{a} must not answer before attach"
        );
    }
    let before = enipin.dump(&t);

    let started = Instant::now();
    let out = enipin.ok(&["attach", "--no-ebpf"]);
    eprintln!(
        "attach of 3 interfaces x 2 IPv4 + 1-2 IPv6 addresses: {:?}",
        started.elapsed()
    );
    assert!(out.contains("attached"), "{out}");
    for a in [
        "198.18.0.10",
        "198.18.0.20",
        "198.18.0.11",
        "198.18.0.21",
        "198.18.0.12",
        "198.18.0.22",
    ] {
        assert!(t.peer().ping(a, 3).unwrap(), "{a} must answer after attach");
    }
    for a in [
        "2001:db8::10",
        "2001:db8::11",
        "2001:db8::12",
        "2001:db8::22",
    ] {
        assert!(t.peer().ping(a, 3).unwrap(), "{a} must answer after attach");
    }
    let rules6 = t.host().ip(&["-6", "rule"]).unwrap();
    let t2 = table(&t, 2);
    assert!(
        rules6.contains(&format!(
            "from 2001:db8::22 lookup {t2} suppress_prefixlength 0 proto 229"
        )),
        "{rules6}"
    );
    assert!(rules6.contains("from 2001:db8:5::5 lookup 500"), "{rules6}");
    let routes6 = t
        .host()
        .ip(&["-6", "route", "show", "table", &t2.to_string()])
        .unwrap();
    assert!(
        routes6.contains("2001:db8::/64 dev eth2 proto 229 src 2001:db8::12"),
        "{routes6}"
    );
    let rules = t.host().ip(&["rule"]).unwrap();
    assert!(
        rules.contains("100:\tfrom 198.18.5.5 lookup 500"),
        "{rules}"
    );
    // 3 ENIs x 2 addresses x 2 layers + main; v6: 4 addresses x 2 + main.
    assert_eq!(rules.matches("proto 229").count(), 13, "{rules}");
    assert_eq!(rules6.matches("proto 229").count(), 9, "{rules6}");
    let again = enipin.ok(&["attach", "--no-ebpf"]);
    assert!(
        again.contains("nothing to do: 22 rules, 9 routes already installed"),
        "{again}"
    );

    let started = Instant::now();
    enipin.ok(&["detach"]);
    eprintln!("detach of 3 interfaces: {:?}", started.elapsed());
    assert_same(
        &before,
        &enipin.dump(&t),
        "detach did not restore the namespace",
    );
    assert!(
        t.host()
            .ip(&["route", "show", "table", "500"])
            .unwrap()
            .contains("198.18.5.0/24 dev eth0")
    );
    assert!(enipin.ok(&["detach"]).contains("nothing to do"));
}

#[test]
fn bad_input_gives_a_clear_error_and_changes_nothing() {
    let (t, enipin) = topo(&[(&[10], &[]), (&[11], &[]), (&[], &[])]);
    // An interface alone in its subnet (its veth peer has no address).
    t.host().veth_pair("solo0", "solo1").unwrap();
    t.host()
        .ip(&["addr", "add", "198.18.1.9/24", "dev", "solo0"])
        .unwrap();
    // An interface that is down (with an address in the ENIs' subnet).
    t.host()
        .ip(&[
            "link", "add", "down0", "type", "veth", "peer", "name", "down1",
        ])
        .unwrap();
    t.host()
        .ip(&["addr", "add", "198.18.0.99/24", "dev", "down0"])
        .unwrap();
    let before = enipin.dump(&t);
    let unchanged = |what: &str| {
        assert_same(
            &before,
            &enipin.dump(&t),
            &format!("{what} changed the namespace"),
        );
        assert!(!enipin.state_file().exists(), "{what} left a state file");
    };

    let e = enipin.fails(&["attach", "--no-ebpf", "--interfaces", "eth7"]);
    assert!(e.contains("unknown interface \"eth7\""), "{e}");
    unchanged("unknown interface");

    let e = enipin.fails(&["attach", "--no-ebpf", "--interfaces", "eth0,eth2"]);
    assert!(e.contains("eth2 has no IPv4 or global IPv6 address"), "{e}");
    unchanged("interface without addresses");

    let e = enipin.fails(&["attach", "--no-ebpf", "--interfaces", "eth0,down0"]);
    assert!(e.contains("interface down0 is down"), "{e}");
    unchanged("interface down");

    // Alone in its subnet, solo0's replies to the ENIs' subnet leave by them: managed with them
    // (it used to be "nothing to do").
    let out = enipin.ok(&["attach", "--no-ebpf", "--interfaces", "solo0", "--dry-run"]);
    assert!(
        out.starts_with(
            "solo0: managed: a reply from 198.18.1.9 to 198.18.0.0/24 leaves by eth0 (main table)\n\
             eth0: managed: replies of solo0 leave by it; its program sends them back\n\
             eth1: managed: replies of solo0 leave by it; its program sends them back\n"
        ),
        "{out}"
    );
    unchanged("a dry run for an interface alone in its subnet");

    // Someone else's rule at our priority, then pointing at our table, then a route in it.
    t.host()
        .ip(&[
            "rule",
            "add",
            "from",
            "198.18.9.9",
            "lookup",
            "600",
            "pref",
            "20001",
        ])
        .unwrap();
    let before_conflict = enipin.dump(&t);
    let e = enipin.fails(&["attach", "--no-ebpf"]);
    assert!(
        e.contains("uses priority 20001") && e.contains("--priority"),
        "{e}"
    );
    assert_same(
        &before_conflict,
        &enipin.dump(&t),
        "the refused attach (priority taken) changed the namespace",
    );
    t.host().ip(&["rule", "del", "pref", "20001"]).unwrap();
    let t1 = table(&t, 1).to_string();
    t.host()
        .ip(&[
            "rule",
            "add",
            "from",
            "198.18.9.9",
            "lookup",
            &t1,
            "pref",
            "300",
        ])
        .unwrap();
    let e = enipin.fails(&["attach", "--no-ebpf"]);
    assert!(
        e.contains(&format!("table {t1}")) && e.contains("--table-base"),
        "{e}"
    );
    t.host().ip(&["rule", "del", "pref", "300"]).unwrap();
    t.host()
        .ip(&["route", "add", "198.18.9.0/24", "dev", "eth1", "table", &t1])
        .unwrap();
    let e = enipin.fails(&["attach", "--no-ebpf"]);
    assert!(
        e.contains(&format!("table {t1} holds a route that is not enipin's")),
        "{e}"
    );
    t.host()
        .ip(&["route", "del", "198.18.9.0/24", "dev", "eth1", "table", &t1])
        .unwrap();
    unchanged("conflicting rules and routes");

    // A reserved table number.
    let e = enipin.fails(&[
        "attach",
        "--no-ebpf",
        "--table-base",
        &(253 - t.host().ifindex("eth0").unwrap()).to_string(),
    ]);
    assert!(e.contains("253-255"), "{e}");
    unchanged("reserved table");

    // A step that fails halfway (an unreachable gateway): rolled back.
    let e = enipin.fails(&["attach", "--no-ebpf", "--gateway", "198.19.0.1"]);
    assert!(e.contains("failed") && e.contains("rolled back the"), "{e}");
    unchanged("a failed step");
    // The same with the datapath, which is prepared (program loaded, maps pinned and filled)
    // while the rules run: when they fail, what was prepared goes too.
    let e = enipin.fails(&["attach", "--gateway", "198.19.0.1"]);
    assert!(e.contains("failed") && e.contains("rolled back the"), "{e}");
    unchanged("a failed step with the datapath prepared");

    // Without CAP_NET_ADMIN.
    let cli = enipin.command(&["attach", "--no-ebpf"]);
    let out = Command::new("setpriv")
        .args(["--bounding-set=-net_admin", "--inh-caps=-net_admin"])
        .arg(cli.get_program())
        .args(cli.get_args())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    // Checked before any change (it was the kernel's EPERM at the first step).
    assert!(
        !out.status.success() && e.contains("lacks CAP_NET_ADMIN") && e.contains("run it as root"),
        "{e}"
    );
    unchanged("missing CAP_NET_ADMIN");

    // A corrupt state file.
    std::fs::write(enipin.state_file(), "{ not json").unwrap();
    for cmd in [
        &["attach", "--no-ebpf"][..],
        &["detach"][..],
        &["status"][..],
    ] {
        let e = enipin.fails(cmd);
        assert!(
            e.contains("state.json is corrupt") && e.contains("remove it"),
            "{e}"
        );
    }
    std::fs::remove_file(enipin.state_file()).unwrap();
    unchanged("a corrupt state file");

    // One address on two interfaces.
    t.host()
        .ip(&["addr", "add", "198.18.0.10/24", "dev", "eth1"])
        .unwrap();
    let before_dup = enipin.dump(&t);
    let e = enipin.fails(&["attach", "--no-ebpf"]);
    assert!(
        e.contains("address 198.18.0.10 is on both eth0 and eth1"),
        "{e}"
    );
    assert_same(
        &before_dup,
        &enipin.dump(&t),
        "the refused attach (one address on two interfaces) changed the namespace",
    );
}

#[test]
fn render_every_format_pairs_addresses_with_their_interface() {
    let (t, enipin) = topo(&[(&[10], &[0x10]), (&[11, 21], &[])]);
    let (t0, t1) = (table(&t, 0), table(&t, 1));
    let before = enipin.dump(&t);
    let sections = |out: &str, marker: &str| -> Vec<(String, String)> {
        // (header line containing `marker`, body up to the next header)
        let mut v: Vec<(String, String)> = Vec::new();
        for line in out.lines() {
            if line.contains(marker) {
                v.push((line.to_owned(), String::new()));
            } else if let Some(last) = v.last_mut() {
                last.1 += line;
                last.1 += "\n";
            }
        }
        v
    };

    let out = enipin.ok(&["render", "--format", "network-scripts"]);
    let s = sections(&out, "# /etc/sysconfig/network-scripts/");
    let body = |name: &str| {
        s.iter()
            .find(|(h, _)| h.ends_with(name))
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("{name} missing:\n{out}"))
    };
    assert!(
        body("rule-eth1").contains(&format!("from 198.18.0.21/32 lookup {t1} pref 20002")),
        "{out}"
    );
    assert!(!body("rule-eth1").contains("198.18.0.10"), "{out}");
    assert!(
        body("rule-eth0").contains(&format!(
            "from 198.18.0.10/32 lookup {t0} suppress_prefixlength 0 pref 20000"
        )),
        "{out}"
    );
    assert!(
        body("route-eth1").contains(&format!(
            "198.18.0.0/24 dev eth1 scope link src 198.18.0.11 table {t1}"
        )),
        "{out}"
    );
    assert!(
        body("route-eth1").contains(&format!("default via 198.18.0.1 dev eth1 table {t1}")),
        "{out}"
    );
    assert!(
        body("rule6-eth0").contains(&format!("from 2001:db8::10/128 lookup {t0}")),
        "{out}"
    );
    assert!(
        body("route6-eth0").contains(&format!(
            "2001:db8::/64 dev eth0 src 2001:db8::10 table {t0}"
        )),
        "{out}"
    );
    assert!(!out.contains("proto 229"), "{out}");
    // Every file says what the datapath adds and that its rules are this instance's.
    assert_eq!(s.len(), 6, "{out}");
    for (h, b) in &s {
        assert!(
            b.contains("Not in it: enipin's datapath") && b.contains("this instance's addresses"),
            "{h}:\n{b}"
        );
    }

    // netplan: ids by interface name amending the distribution's file; no match:, no addresses.
    let out = enipin.ok(&["render", "--format", "netplan"]);
    assert!(out.starts_with("# /etc/netplan/90-enipin.yaml\n"), "{out}");
    let eth1 = out
        .split("    eth1:")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    let eth0 = out
        .split("    eth0:")
        .nth(1)
        .unwrap()
        .split("    eth1:")
        .next()
        .unwrap();
    assert!(
        eth1.contains(&format!(
            "        - from: \"198.18.0.21/32\"\n          table: {t1}\n          priority: 20002"
        )),
        "{out}"
    );
    assert!(eth1.contains(&format!("        - from: \"198.18.0.11/32\"\n          to: \"198.18.0.0/24\"\n          table: {t1}\n          priority: 20000")), "{out}");
    assert!(
        eth1.contains(&format!(
            "        - to: default\n          via: \"198.18.0.1\"\n          table: {t1}"
        )),
        "{out}"
    );
    assert!(
        eth0.contains("2001:db8::10") && !eth0.contains("198.18.0.11"),
        "{out}"
    );
    let yaml: Vec<_> = out.lines().filter(|l| !l.starts_with('#')).collect();
    for per_instance in ["match:", "macaddress", "set-name", "addresses:", "dhcp"] {
        assert!(
            yaml.iter().all(|l| !l.contains(per_instance)),
            "{per_instance}:\n{out}"
        );
    }
    netplan_generates(&out, t1);

    // nmcli: a script that sets each list whole (never `+ipv4.routing-rules`).
    let out = enipin.ok(&["render", "--format", "nmcli"]);
    assert!(out.starts_with("#!/bin/bash\n"), "{out}");
    let eth1 = out
        .split("\n# eth1\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    let eth0 = out
        .split("\n# eth0\n")
        .nth(1)
        .unwrap()
        .split("\n# eth1\n")
        .next()
        .unwrap();
    assert!(
        eth1.contains(&format!(
            "  'priority 20000 from 198.18.0.21/32 table {t1} suppress_prefixlength 0'"
        )) && eth1.contains(&format!("  '0.0.0.0/0 198.18.0.1 table={t1}'")),
        "{out}"
    );
    assert!(!eth1.contains("198.18.0.10"), "{out}");
    assert!(
        eth0.contains(&format!(
            "  'priority 20002 from 2001:db8::10/128 table {t0}'"
        )),
        "{out}"
    );
    assert!(
        eth1.contains("nmcli device reapply eth1") && !out.contains(" +ipv"),
        "{out}"
    );
    script_checks(&["shellcheck", "-"], &out);
    let syntax = Command::new("bash")
        .args(["-n", "-c", &out])
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{syntax:?}");
    assert_same(&before, &enipin.dump(&t), "render changed something");
}

/// Every file of a directory under `dir`: (path relative to it, mode, bytes).
fn tree(dir: &std::path::Path) -> Vec<(String, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
                out.push((
                    rel,
                    meta.permissions().mode() & 0o7777,
                    std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// `render --output-dir` (issue 28, item 3): one file per path, the same bytes at a second run.
/// networkd: drop-ins for the `.network` file networkd applies to each interface in an AL2023
/// root (amazon-ec2-net-utils' `70-eth0.network` for eth0, the catch-all `80-ec2.network` for
/// eth1), none of ours in front of them, and systemd-analyze reads each merged into its file.
/// nmcli: the script run twice against a stand-in nmcli keeping the lists as files changes
/// nothing the second time and keeps the operator's own entries.
#[test]
fn render_output_dir_writes_each_file_once_and_the_same_twice() {
    let (t, enipin) = topo(&[(&[10], &[0x10]), (&[11, 21], &[])]);
    let t1 = table(&t, 1);
    let tmp = TempDir::new("enipin-render-").unwrap();
    let (root, out) = (tmp.path().join("root"), tmp.path().join("out"));
    let (root_s, out_s) = (root.to_str().unwrap(), out.to_str().unwrap());
    let file = |p: &str, text: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    file(
        "usr/lib/systemd/network/80-ec2.network",
        "[Match]\nDriver=ena ixgbevf vif veth\n\n[Network]\nDHCP=yes\n",
    );
    // As amazon-ec2-net-utils does: eth0's file is the catch-all, matched to eth0 by a drop-in.
    std::fs::create_dir_all(root.join("run/systemd/network")).unwrap();
    std::os::unix::fs::symlink(
        "../../../usr/lib/systemd/network/80-ec2.network",
        root.join("run/systemd/network/70-eth0.network"),
    )
    .unwrap();
    file(
        "run/systemd/network/70-eth0.network.d/eni.conf",
        &format!(
            "[Match]\nMACAddress={}\n[Network]\nDHCP=yes\n",
            t.spec.enis[0].mac
        ),
    );

    let args = |format| {
        [
            "render",
            "--format",
            format,
            "--root",
            root_s,
            "--output-dir",
            out_s,
        ]
    };
    let listed = enipin.ok(&args("networkd"));
    let want = [
        "etc/systemd/networkd.conf.d/99-enipin.conf",
        "etc/systemd/network/70-eth0.network.d/70-enipin.conf",
        "etc/systemd/network/80-ec2.network.d/70-enipin.conf",
    ];
    let paths: Vec<_> = listed
        .lines()
        .map(|l| l.strip_prefix(out_s).unwrap())
        .collect();
    assert_eq!(paths, want.map(|p| format!("/{p}")), "{listed}");
    let first = tree(&out);
    assert_eq!(first.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(), {
        let mut w = want.to_vec();
        w.sort();
        w
    });
    enipin.ok(&args("networkd"));
    assert!(tree(&out) == first, "a second run wrote other bytes");
    for (p, mode, body) in &first {
        let body = String::from_utf8_lossy(body);
        assert_eq!(*mode, 0o644, "{p}");
        assert!(
            body.contains("Not in it: enipin's datapath"),
            "{p}:\n{body}"
        );
        let settings = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        for per_instance in ["[Match]", "Address=", "MACAddress=", "198.18.", "2001:db8:"] {
            assert!(
                !settings.contains(per_instance),
                "{p}: {per_instance}\n{body}"
            );
        }
    }

    // systemd's own reading of the files and their drop-ins, installed in the root.
    for (p, _, body) in &first {
        let dst = root.join(p);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(dst, body).unwrap();
    }
    let cat = |name: &str| {
        let o = Command::new("systemd-analyze")
            .args([&format!("--root={root_s}"), "cat-config", name])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let eth0 = cat("systemd/network/70-eth0.network");
    let at = |name: &str| {
        eth0.find(&format!("# {root_s}/{name}\n"))
            .unwrap_or_else(|| panic!("{name}:\n{eth0}"))
    };
    // Drop-ins are read in name order across directories: ours, then amazon-ec2-net-utils'.
    let ours = at("etc/systemd/network/70-eth0.network.d/70-enipin.conf");
    assert!(at("run/systemd/network/70-eth0.network") < ours, "{eth0}");
    assert!(
        ours < at("run/systemd/network/70-eth0.network.d/eni.conf"),
        "{eth0}"
    );
    assert!(
        eth0[ours..].contains("[Network]\nKeepConfiguration=static\n")
            && eth0.matches("KeepConfiguration=").count() == 1,
        "{eth0}"
    );
    let catch_all = cat("systemd/network/80-ec2.network");
    assert!(
        catch_all.contains("DHCP=yes") && catch_all.ends_with("KeepConfiguration=static\n"),
        "{catch_all}"
    );
    let conf = cat("systemd/networkd.conf");
    assert!(
        conf.contains("ManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n"),
        "{conf}"
    );

    // The nmcli script, run twice.
    std::fs::remove_dir_all(&out).unwrap();
    let listed = enipin.ok(&args("nmcli"));
    let script = out.join("enipin-nmcli.sh");
    assert_eq!(listed.trim(), script.to_str().unwrap());
    assert_eq!(
        tree(&out)
            .iter()
            .map(|f| (f.0.as_str(), f.1))
            .collect::<Vec<_>>(),
        [("enipin-nmcli.sh", 0o755)]
    );
    let state = tmp.path().join("nm");
    let stub = tmp.path().join("bin");
    std::fs::create_dir_all(&stub).unwrap();
    std::fs::write(stub.join("nmcli"), NMCLI_STANDIN).unwrap();
    std::fs::set_permissions(
        stub.join("nmcli"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // The operator's own entries, one with colons (nmcli -g escapes them).
    let own_route = "198.19.0.0/16 198.18.0.1";
    let own_rule = "priority 100 from 2001:db8::99/128 table 100";
    std::fs::create_dir_all(state.join("Wired eth1")).unwrap();
    std::fs::create_dir_all(state.join("Wired eth0")).unwrap();
    std::fs::write(
        state.join("Wired eth1/ipv4.routes"),
        format!("{own_route}\n"),
    )
    .unwrap();
    std::fs::write(
        state.join("Wired eth0/ipv6.routing-rules"),
        format!("{own_rule}\n"),
    )
    .unwrap();
    let run = || {
        let path = format!("{}:{}", stub.display(), std::env::var("PATH").unwrap());
        let o = Command::new("bash")
            .arg(&script)
            .env("PATH", path)
            .env("NMSTATE", &state)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let mut s = tree(&state);
        s.retain(|f| f.0 != "reapplied");
        s
    };
    let once = run();
    let text = |s: &[(String, u32, Vec<u8>)], p: &str| {
        String::from_utf8(
            s.iter()
                .find(|f| f.0 == p)
                .unwrap_or_else(|| panic!("{p}: {s:?}"))
                .2
                .clone(),
        )
        .unwrap()
    };
    let routes1 = text(&once, "Wired eth1/ipv4.routes");
    assert!(
        routes1.starts_with(&format!("{own_route}\n"))
            && routes1.contains(&format!("0.0.0.0/0 198.18.0.1 table={t1}\n")),
        "{routes1}"
    );
    let rules0 = text(&once, "Wired eth0/ipv6.routing-rules");
    assert!(
        rules0.starts_with(&format!("{own_rule}\n")) && rules0.contains("from 2001:db8::10/128"),
        "{rules0}"
    );
    for (p, _, body) in &once {
        let lines: Vec<_> = std::str::from_utf8(body).unwrap().lines().collect();
        let unique: std::collections::BTreeSet<_> = lines.iter().collect();
        assert_eq!(
            unique.len(),
            lines.len(),
            "{p} holds a duplicate:\n{lines:?}"
        );
    }
    assert!(run() == once, "the second run changed the connections");
    let reapplied = std::fs::read_to_string(state.join("reapplied")).unwrap();
    assert_eq!(reapplied, "eth0\neth1\neth0\neth1\n");
}

/// A stand-in for nmcli (not installed here): each connection's list properties as files under
/// $NMSTATE, one entry a line. `-g` prints a list as nmcli does (", " between entries, ':'
/// escaped as '\:'); `modify` sets a list (commas split it) or, with `+`, appends to it.
const NMCLI_STANDIN: &str = r#"#!/bin/bash
set -eu
s=$NMSTATE
set -- "$@" "" "" "" ""
if [ "$1 $2 $3 $4" = "-g GENERAL.CONNECTION device show" ]; then echo "Wired $5"; exit 0; fi
if [ "$1" = -g ] && [ "$3 $4" = "connection show" ]; then
  f="$s/$5/$2"
  if [ -f "$f" ]; then sed 's/:/\\:/g' "$f" | paste -sd, - | sed 's/,/, /g'; else echo; fi
  exit 0
fi
if [ "$1 $2" = "connection modify" ]; then
  con=$3; shift 3
  mkdir -p "$s/$con"
  while [ -n "$1" ]; do
    p=$1 v=$2; shift 2
    case $p in
      +*) printf '%s\n' "$v" >> "$s/$con/${p#+}" ;;
      *) printf '%s' "$v" | tr ',' '\n' | sed 's/^ *//' | grep -v '^$' > "$s/$con/$p" || true ;;
    esac
  done
  exit 0
fi
if [ "$1 $2" = "device reapply" ]; then echo "$3" >> "$s/reapplied"; exit 0; fi
echo "nmcli stand-in: unexpected $*" >&2
exit 2
"#;

#[test]
fn selection_by_mac_prefixes_and_gateway_sources() {
    let (t, enipin) = topo(&[(&[10], &[0x10]), (&[11], &[0x11])]);
    // Something beyond the gateway, reachable only through a default route.
    t.vpc()
        .ip(&["addr", "add", "198.18.200.1/32", "dev", "lo"])
        .unwrap();
    t.vpc().sysctl("net.ipv4.ip_forward", "1").unwrap();
    t.host()
        .ip(&[
            "route",
            "add",
            "default",
            "via",
            "198.18.0.1",
            "dev",
            "eth0",
        ])
        .unwrap();
    t.host()
        .ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8::1",
            "dev",
            "eth1",
        ])
        .unwrap();
    assert!(ping_from(&t, "198.18.0.10", "198.18.200.1"));
    assert!(
        !ping_from(&t, "198.18.0.11", "198.18.200.1"),
        "eth1's source must not get out by eth0's default route"
    );
    let before = enipin.dump(&t);

    let eth0_and_mac1 = format!("eth0,{}", t.spec.enis[1].mac);
    let out = enipin.ok(&[
        "attach",
        "--no-ebpf",
        "--interfaces",
        &eth0_and_mac1,
        "--prefix",
        "eth1=198.18.0.64/28",
    ]);
    assert!(
        out.contains("gateway ipv4: 198.18.0.1 (from the main table's default route)"),
        "{out}"
    );
    assert!(
        out.contains(
            "gateway ipv4: 198.18.0.1 (from the default route of another interface on its subnet)"
        ),
        "{out}"
    );
    assert!(
        out.contains("gateway ipv6: 2001:db8::1 (from the main table's default route)"),
        "{out}"
    );
    // eth1's IPv6 router is on eth0's subnet too: eth0's replies beyond it leave by eth0.
    assert!(
        out.contains(
            "gateway ipv6: 2001:db8::1 (from the default route of another interface on its subnet)"
        ),
        "{out}"
    );
    assert!(
        ping_from(&t, "198.18.0.11", "198.18.200.1"),
        "eth1's default route in its table"
    );
    assert!(ping_from(&t, "198.18.0.10", "198.18.200.1"));
    let t1 = table(&t, 1);
    let rules = t.host().ip(&["rule"]).unwrap();
    assert!(
        rules.contains(&format!(
            "20000:\tfrom 198.18.0.64/28 lookup {t1} suppress_prefixlength 0 proto 229"
        )),
        "{rules}"
    );
    assert!(
        rules.contains(&format!(
            "20002:\tfrom 198.18.0.64/28 lookup {t1} proto 229"
        )),
        "{rules}"
    );
    let json: serde_json::Value = serde_json::from_str(&enipin.ok(&["status", "--json"])).unwrap();
    let m = &json["managed"];
    assert_eq!(m[0]["name"], "eth0");
    assert_eq!(m[0]["gateway_v4"]["source"], "main-table");
    assert_eq!(m[0]["gateway_v6"]["source"], "same-subnet");
    assert_eq!(m[1]["mac"], t.spec.enis[1].mac.as_str());
    assert_eq!(m[1]["gateway_v4"]["source"], "same-subnet");
    assert_eq!(m[1]["gateway_v6"]["source"], "main-table");
    assert_eq!(json["drift"].as_array().unwrap().len(), 0);
    let table6 = t
        .host()
        .ip(&["-6", "route", "show", "table", &t1.to_string()])
        .unwrap();
    assert!(
        table6.contains("default via 2001:db8::1 dev eth1 proto 229"),
        "{table6}"
    );

    // Re-attach with another gateway: only the default routes change.
    let out = enipin.ok(&[
        "attach",
        "--no-ebpf",
        "--interfaces",
        "eth0,eth1",
        "--prefix",
        "eth1=198.18.0.64/28",
        "--gateway",
        "198.18.0.100",
    ]);
    assert!(out.contains("198.18.0.100 (from the --gateway)"), "{out}");
    assert!(
        out.contains(&format!(
            "- route default via 198.18.0.1 dev eth1 table {t1} proto 229"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "+ route default via 198.18.0.100 dev eth1 table {t1} proto 229"
        )),
        "{out}"
    );
    assert!(out.contains("attached: 4 change(s)"), "{out}");

    enipin.ok(&["detach"]);
    assert_same(
        &before,
        &enipin.dump(&t),
        "detach did not restore the namespace",
    );
}

#[test]
fn scale_eight_enis_eight_addresses_each() {
    let hosts: Vec<Vec<u8>> = (0..8u8)
        .map(|i| (0..8u8).map(|k| 10 + i + 20 * k).collect())
        .collect();
    let spec: Vec<(&[u8], &[u8])> = hosts.iter().map(|h| (h.as_slice(), &[][..])).collect();
    let (t, enipin) = topo(&spec);
    let before = enipin.dump(&t);
    let started = Instant::now();
    enipin.ok(&["attach", "--no-ebpf"]);
    let attach = started.elapsed();
    let started = Instant::now();
    let again = enipin.ok(&["attach", "--no-ebpf"]);
    let noop = started.elapsed();
    assert!(
        again.contains("nothing to do: 129 rules, 16 routes already installed"),
        "{again}"
    );
    for a in ["198.18.0.157", "198.18.0.31", "198.18.0.10"] {
        assert!(t.peer().ping(a, 3).unwrap(), "{a} must answer after attach");
    }
    let started = Instant::now();
    enipin.ok(&["detach"]);
    let detach = started.elapsed();
    eprintln!(
        "8 interfaces x 8 addresses (129 rules, 16 routes, 16 sysctls): attach {attach:?}, no-op attach {noop:?}, detach {detach:?}"
    );
    assert_same(
        &before,
        &enipin.dump(&t),
        "detach did not restore the namespace",
    );
}

/// `enipin sysdump` (issue 28, item 6): one .tar.gz whose every part is what the command its
/// manifest names printed, read back here: the version and the pinned program's tag, status,
/// doctor, stats and config check as JSON, rules, routes, addresses, TC per interface, the pins.
/// Nothing else is in it (no journal without systemd, nothing of the metadata service).
#[test]
fn sysdump_bundles_every_report_and_dump() {
    let (t, e) = topo(&[(&[10], &[]), (&[11], &[])]);
    e.ok(&["attach"]);
    let dir = enipin_tests::TempDir::new("enipin-sysdump-").unwrap();
    let out = dir.path().join("bundle.tar.gz");
    let printed = e.ok(&["sysdump", "--output", out.to_str().unwrap()]);
    assert_eq!(printed.trim(), out.display().to_string());
    let unpacked = dir.path().join("x");
    std::fs::create_dir(&unpacked).unwrap();
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(&out)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(tar.success());
    let tops: Vec<_> = std::fs::read_dir(&unpacked).unwrap().collect();
    assert_eq!(tops.len(), 1, "one top directory");
    let top = tops.into_iter().next().unwrap().unwrap().path();
    let read = |name: &str| {
        std::fs::read_to_string(top.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };

    let mut files: Vec<String> = std::fs::read_dir(&top)
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut want: Vec<String> = [
        "config.json",
        "doctor.json",
        "ip-addr.txt",
        "ip-route.txt",
        "ip-rule.txt",
        "ip6-route.txt",
        "ip6-rule.txt",
        "manifest.txt",
        "pins.txt",
        "stats.json",
        "status.json",
        "tc-qdisc.txt",
        "version.txt",
    ]
    .map(String::from)
    .to_vec();
    want.extend(["eth0", "eth1", "lo"].map(|i| format!("tc-egress-{i}.txt")));
    want.sort();
    // A part's stderr is a file of its own only when it said something.
    files.retain(|f| !f.ends_with(".stderr"));
    assert_eq!(files, want);

    let manifest = read("manifest.txt");
    for part in ["status.json", "stats.json", "config.json", "ip-rule.txt"] {
        assert!(
            manifest
                .lines()
                .any(|l| l.starts_with(&format!("{part}  exit 0  "))),
            "{part}:\n{manifest}"
        );
    }
    let status = json("status.json");
    assert_eq!(status["attached"], true, "{status}");
    let tag = status["program"]["tag"].as_str().expect("a pinned program");
    let version = read("version.txt");
    let ours = e.ok(&["--version"]);
    assert!(version.starts_with(ours.trim()), "{version} / {ours}");
    assert!(version.contains(&format!(", tag {tag}\n")), "{version}");
    assert!(json("doctor.json").is_object() || json("doctor.json").is_array());
    assert!(
        read("stats.json").contains("eth1"),
        "{}",
        read("stats.json")
    );
    assert!(json("config.json").is_object() || json("config.json").is_array());
    let t1 = table(&t, 1);
    let rules = read("ip-rule.txt");
    assert!(
        rules.contains(&format!("from 198.18.0.11 lookup {t1}")),
        "{rules}"
    );
    assert!(read("ip-route.txt").contains(&format!("table {t1}")));
    let eth1 = t.host().ifindex("eth1").unwrap();
    assert!(
        read("pins.txt").contains(&format!("link-{eth1}")),
        "{}",
        read("pins.txt")
    );
    e.ok(&["detach"]);
}

/// `--metadata auto` follows the machine's DMI (issue 29, item 4), never a probe: on a machine
/// whose DMI names no EC2 (this one has none) it plans what netlink alone plans; on an EC2
/// host it asks the endpoint given, here one in the lab's own subnet that nothing answers, so
/// the lookup fails and attach refuses. Either way no request leaves for 169.254.169.254.
#[test]
fn metadata_auto_follows_dmi_never_a_probe() {
    let (_t, e) = topo(&[(&[10], &[]), (&[11], &[])]);
    let vendor = std::fs::read_to_string("/sys/class/dmi/id/sys_vendor").unwrap_or_default();
    let ec2 = vendor.trim() == "Amazon EC2";
    let plain = e.ok(&["attach", "--dry-run"]);
    let auto = [
        "attach",
        "--dry-run",
        "--metadata",
        "auto",
        "--metadata-endpoint",
        "http://198.18.0.254",
    ];
    let out = e.cmd(&auto);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    if ec2 {
        assert!(!out.status.success(), "{stdout}{stderr}");
        assert!(stderr.contains("--metadata auto: EC2"), "{stderr}");
    } else {
        assert!(out.status.success(), "{stdout}{stderr}");
        assert_eq!(stdout, plain);
        assert!(
            stderr.contains("--metadata auto: no cloud in this machine's DMI; netlink alone"),
            "{stderr}"
        );
    }
}
