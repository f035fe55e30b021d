//! A service in a container namespace published on the secondary address with nftables DNAT:
//! the host routes the container's reply while its source is still the container's address, so
//! `from <eni-ip>` rules never match (moby/moby#35251) and the reply leaves by the primary ENI
//! with the secondary's address once POSTROUTING has translated it back. Rules alone cannot fix
//! that; the TC egress redirect, which sees the translated source, does, and `--connmark` routes
//! the reply out of its owner in the first place (the connection's mark picks the table).

use enipin_tests::{EniSpec, Enipin, Netns, Spec, Topology, require, testbed};

#[test]
fn dnat_reply_on_the_secondary_address_is_fixed_by_the_datapath_only() {
    require();
    let (topo, _ctr) = published(CONTAINER);
    let host = topo.host();
    let enipin = Enipin::in_ns(host);
    let sel = ["--interfaces", "eth0,eth1"];
    let drops = || topo.drops().expect("vpc counters").eni("eth0").ip;

    // Rules only: the DNAT'd reply still leaves by eth0 with eth1's address, and the vpc drops it.
    enipin.ok(&[&["attach", "--no-ebpf"][..], &sel].concat());
    let before = drops();
    assert!(
        !topo.peer().ping("198.18.0.11", 3).unwrap(),
        "the published service answered with rules alone: the scenario does not reproduce moby#35251"
    );
    assert!(
        drops() > before,
        "no reply was dropped leaving eth0 with a foreign source"
    );
    enipin.ok(&["detach"]);

    // Rules and the datapath: the redirect puts the reply on eth1.
    enipin.ok(&[&["attach"][..], &sel].concat());
    let before = drops();
    assert!(
        topo.peer().ping("198.18.0.11", 3).unwrap(),
        "the published service is unreachable with the datapath attached"
    );
    assert_eq!(
        drops(),
        before,
        "the vpc still dropped replies leaving eth0"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&enipin.ok(&["stats", "--json"])).expect("stats --json");
    let misrouted = misrouted_on(&stats, "eth0");
    assert!(
        misrouted >= 3,
        "eth0 counted {misrouted} misrouted packets, want >= 3: {stats}"
    );
    enipin.ok(&["detach"]);
}

/// The container's address.
const CONTAINER: &str = "198.19.1.2";

/// The lab with a "container" namespace behind a veth (like docker0 without the bridge), and
/// nftables DNAT of ping to the secondary address (198.18.0.11) onto `to` (the container, or a
/// local address).
fn published(to: &str) -> (Topology, Netns) {
    let spec = Spec {
        ipv6: false,
        ..Spec::default()
    };
    published_on(spec, "198.18.0.11", to)
}

/// [`published`] on the host of `spec`, ping to `addr` DNAT'd.
fn published_on(spec: Spec, addr: &str, to: &str) -> (Topology, Netns) {
    let topo = Topology::build_with(spec).expect("topology");
    let host = topo.host();
    let ctr = testbed::container(host, "dnat-ctr-", "198.19.1.1", CONTAINER, 24)
        .expect("container namespace");
    host.sysctl("net.ipv4.ip_forward", "1").unwrap();
    host.sh(&format!(
        "nft -f - <<'EOF'\n\
         table ip publish {{\n\
           chain pre {{ type nat hook prerouting priority dstnat; \
             ip daddr {addr} icmp type echo-request dnat to {to}; }}\n\
         }}\n\
         EOF"
    ))
    .expect("nftables DNAT");
    (topo, ctr)
}

/// enipin's nftables table in `ns`, as nft prints it; `None` when there is none.
fn table(ns: &Netns) -> Option<String> {
    ns.sh("nft list table inet enipin 2>/dev/null").ok()
}

/// With connmark the reply is routed out of eth1 in the first place: the rules alone fix the
/// published service, and with the datapath attached nothing is left for it to redirect.
#[test]
fn connmark_routes_the_dnat_reply_out_of_its_owner_without_a_redirect() {
    require();
    let (topo, _ctr) = published(CONTAINER);
    let host = topo.host();
    let enipin = Enipin::in_ns(host);
    let sel = ["--interfaces", "eth0,eth1", "--connmark"];
    let drops = || topo.drops().expect("vpc counters").eni("eth0").ip;

    // The plan's iproute2/nft form: its nft script is what enipin installs, but the comments.
    let printed = enipin.ok(&[
        &["attach", "--dry-run", "--format", "ip", "--no-ebpf"][..],
        &sel,
    ]
    .concat());
    let script = printed
        .split_once("nft -f - <<'EOF'\n")
        .and_then(|(_, rest)| rest.split_once("\nEOF"))
        .map(|(script, _)| script.to_owned())
        .unwrap_or_else(|| panic!("no nft script in the printed plan: {printed}"));
    let uncommented = |t: String| -> String {
        t.lines()
            .map(|l| l.split(" comment \"").next().unwrap_or(l).trim_end())
            .collect::<Vec<_>>()
            .join("\n")
    };

    // Rules and connmark, no datapath: what the redirect did before, the routing does now.
    let plan = enipin.ok(&[&["attach", "--no-ebpf"][..], &sel].concat());
    let installed = uncommented(table(host).expect("no nft table after attach"));
    assert!(
        plan.contains("+ nft table inet enipin mask 0xff000000: eth0=0x"),
        "the plan does not show the nft table: {plan}"
    );
    let before = drops();
    assert!(
        topo.peer().ping("198.18.0.11", 3).unwrap(),
        "the published service is unreachable with connmark"
    );
    assert_eq!(drops(), before, "the vpc dropped replies leaving eth0");
    let rules = host.sh("ip rule show").unwrap();
    let eth1 = host.ip(&["-j", "link", "show", "eth1"]).unwrap();
    let ifindex = serde_json::from_str::<serde_json::Value>(&eth1).unwrap()[0]["ifindex"]
        .as_u64()
        .unwrap();
    assert!(
        rules.contains(&format!(
            "fwmark {:#x}/0xff000000 lookup {}",
            ifindex << 24,
            20000 + ifindex
        )),
        "no fwmark rule for eth1: {rules}"
    );
    // Idempotent: a second attach finds everything in place.
    let again = enipin.ok(&[&["attach", "--no-ebpf"][..], &sel].concat());
    assert!(
        !again.contains("nft table"),
        "a second attach changed the table: {again}"
    );
    // Someone deletes the table: status shows the drift (and exits non-zero).
    host.sh("nft delete table inet enipin").unwrap();
    let out = enipin.cmd(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains("+ nft table inet enipin"),
        "status does not show the missing table: {text}"
    );
    enipin.ok(&["detach"]);
    assert_eq!(table(host), None, "detach left the nft table");
    assert!(
        !host.sh("ip rule show").unwrap().contains("fwmark"),
        "detach left fwmark rules"
    );
    host.sh(&format!("nft -f - <<'EOF'\n{script}\nEOF"))
        .expect("the printed nft script");
    assert_eq!(
        uncommented(table(host).unwrap()),
        installed,
        "the printed nft script is not the table enipin installs"
    );
    host.sh("nft delete table inet enipin").unwrap();

    // With the datapath too: the replies are not misrouted any more, so none is redirected.
    enipin.ok(&[&["attach"][..], &sel].concat());
    assert!(
        topo.peer().ping("198.18.0.11", 3).unwrap(),
        "the published service is unreachable with connmark and the datapath"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&enipin.ok(&["stats", "--json"])).expect("stats --json");
    assert_eq!(
        misrouted_on(&stats, "eth0"),
        0,
        "replies were still redirected: {stats}"
    );
    enipin.ok(&["detach"]);
    assert_eq!(table(host), None, "detach left the nft table");
}

/// DNAT to a local address (kube-proxy to a host-network pod, `REDIRECT`): the host answers from
/// the primary's address, and the reply gets the secondary's only in POSTROUTING. Its `from` rule
/// picks the primary's table; connmark's OUTPUT chain marks it, and the kernel routes it again.
#[test]
fn connmark_routes_the_reply_of_a_connection_dnated_to_a_local_address() {
    require();
    let (topo, _ctr) = published("198.18.0.10");
    let enipin = Enipin::in_ns(topo.host());
    let sel = ["--no-ebpf", "--interfaces", "eth0,eth1"];
    enipin.ok(&[&["attach"][..], &sel].concat());
    assert!(
        !topo.peer().ping("198.18.0.11", 3).unwrap(),
        "rules alone fixed a local DNAT: the scenario does not reproduce"
    );
    enipin.ok(&[&["attach", "--connmark"][..], &sel].concat());
    // Counts the locally sent packets that leave OUTPUT with a connmark mark on them.
    let host = topo.host();
    host.sh("nft -f - <<'EOF'\n\
         table inet probe {\n\
           chain out { type filter hook output priority 100; \
             meta mark & 0xff000000 != 0 counter; }\n\
         }\n\
         EOF")
        .unwrap();
    let marked = || {
        let listed = host.sh("nft -j list chain inet probe out").unwrap();
        let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|o| o["rule"]["expr"][1]["counter"]["packets"].as_u64())
            .unwrap()
    };
    assert!(
        topo.peer().ping("198.18.0.10", 3).unwrap(),
        "the primary does not answer"
    );
    assert_eq!(
        marked(),
        0,
        "replies of a connection answered here without DNAT were marked (each would be routed again)"
    );
    assert!(
        topo.peer().ping("198.18.0.11", 3).unwrap(),
        "the reply of a connection DNAT'd to a local address is still dropped with connmark"
    );
    assert!(marked() >= 1, "the local DNAT'd replies were not marked");
    enipin.ok(&["detach"]);
}

/// Issue 23: connmark and the redirect treat an ENI in a subnet of its own like any other. The
/// service is published on eth1's address, in eth1's own subnet (198.18.11.11/24); the peer is in
/// eth0's. Rules alone send the container's reply by the main table out of eth0 (its source is
/// the container's until POSTROUTING), and the vpc drops it. connmark's mark must pick eth1's
/// table, whose default route is eth1's own gateway (198.18.11.1), and the program alone must
/// redirect it onto eth1 through that gateway: eth1's subnet does not hold the peer.
#[test]
fn a_dnat_reply_on_an_eni_in_its_own_subnet_leaves_by_it() {
    require();
    let spec = Spec {
        ipv6: false,
        enis: vec![EniSpec::nth(0), EniSpec::in_own_subnet(1)],
        ..Spec::default()
    };
    let (topo, _ctr) = published_on(spec, "198.18.11.11", CONTAINER);
    let enipin = Enipin::in_ns(topo.host());
    let drops = || topo.drops().expect("vpc counters").eni("eth0").ip;
    let sel = ["--interfaces", "eth0,eth1"];

    enipin.ok(&[&["attach", "--no-ebpf"][..], &sel].concat());
    let before = drops();
    assert!(
        !topo.peer().ping("198.18.11.11", 3).unwrap(),
        "rules alone answered the published service: the scenario does not reproduce"
    );
    assert!(drops() > before, "no reply was dropped leaving eth0");
    enipin.ok(&["detach"]);

    for mode in [&["--no-ebpf", "--connmark"][..], &["--no-rules"]] {
        let out = enipin.ok(&[&["attach"][..], mode, &sel].concat());
        let before = drops();
        assert!(
            topo.peer().ping("198.18.11.11", 3).unwrap(),
            "{mode:?}: the service published on eth1 is unreachable\n{out}"
        );
        assert_eq!(
            drops(),
            before,
            "{mode:?}: the vpc dropped replies leaving eth0"
        );
        enipin.ok(&["detach"]);
        assert_eq!(
            table(topo.host()),
            None,
            "{mode:?}: detach left the nft table"
        );
    }
}

/// The same for IPv6: the inet table marks both families, and each family has its fwmark rule.
#[test]
fn connmark_routes_an_ipv6_dnat_reply_out_of_its_owner() {
    require();
    let topo = Topology::build().expect("topology");
    let host = topo.host();
    let _ctr = testbed::container(host, "dnat6-ctr-", "2001:db8:1::1", "2001:db8:1::2", 64)
        .expect("container namespace");
    host.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    host.sh("nft -f - <<'EOF'\n\
         table ip6 publish {\n\
           chain pre { type nat hook prerouting priority dstnat; \
             ip6 daddr 2001:db8::11 icmpv6 type echo-request dnat to 2001:db8:1::2; }\n\
         }\n\
         EOF")
        .expect("nftables DNAT");
    let enipin = Enipin::in_ns(host);
    let sel = ["--no-ebpf", "--interfaces", "eth0,eth1"];
    let ping = || topo.peer().pings(&["-6", "2001:db8::11"], 3).unwrap().1 > 0;
    enipin.ok(&[&["attach"][..], &sel].concat());
    assert!(
        !ping(),
        "the IPv6 service answered with rules alone: the scenario does not reproduce"
    );
    enipin.ok(&[&["attach", "--connmark"][..], &sel].concat());
    assert!(
        ping(),
        "the IPv6 published service is unreachable with connmark"
    );
    assert!(
        host.sh("ip -6 rule show")
            .unwrap()
            .contains("fwmark 0x3000000/0xff000000"),
        "no IPv6 fwmark rule"
    );
    enipin.ok(&["detach"]);
}

/// Someone flushes the ruleset (`nft flush ruleset`, a firewall reload): watch puts the table
/// back at once (nf_tables' change notifications, not the periodic reconcile: an hour here), and
/// a table edited by hand is replaced as a whole; its own write starts no loop of rewrites.
#[test]
fn watch_restores_the_connmark_table() {
    require();
    let (topo, _ctr) = published(CONTAINER);
    let host = topo.host();
    let enipin = Enipin::in_ns(host);
    let watch = enipin.spawn(&[
        "watch",
        "--interfaces",
        "eth0,eth1",
        "--connmark",
        "--no-ebpf",
        "--interval",
        "3600",
    ]);
    // Far below the hour, and well above a reconcile (tens of ms) on a loaded machine.
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let t = std::time::Instant::now();
        while !f() {
            assert!(t.elapsed().as_secs() < 10, "{what} within 10 s");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let whole = || table(host).is_some_and(|t| t.matches("return comment").count() == 4);
    // The table's handle changes each time the table is written anew.
    let handle = || host.sh("nft -a list table inet enipin | head -1").unwrap();
    until("watch installs the table", &whole);
    host.sh("nft delete table inet enipin").unwrap();
    until("watch restores the deleted table", &whole);
    host.sh("nft flush chain inet enipin restore").unwrap();
    until("watch replaces the edited table", &whole);
    let written = handle();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(handle(), written, "watch keeps rewriting its own table");
    assert!(
        topo.peer().ping("198.18.0.11", 3).unwrap(),
        "the published service is unreachable under watch"
    );
    // SIGTERM: the watcher exits and leaves everything installed (detach removes it).
    assert!(watch.terminate().success(), "watch failed on SIGTERM");
    enipin.ok(&["detach"]);
    assert_eq!(table(host), None, "detach left the nft table");
}

/// Without nft, `attach --connmark` says what to install and changes nothing; when nft fails
/// after the rules went in, they are rolled back: never rules without their table.
#[test]
fn connmark_without_a_working_nft_changes_nothing() {
    require();
    let (topo, _ctr) = published(CONTAINER);
    let host = topo.host();
    let enipin = Enipin::in_ns(host);
    let before = host.sh("ip rule show; ip route show table all").unwrap();
    let attach = |path: &str| {
        let out = enipin
            .command(&[
                "attach",
                "--no-ebpf",
                "--interfaces",
                "eth0,eth1",
                "--connmark",
            ])
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "attach succeeded with PATH={path}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = attach("/nonexistent");
    assert!(
        err.contains("connmark needs the `nft` command (the nftables package"),
        "{err}"
    );
    // An nft that lists (there is no table) but fails every change. It reads its input first, as
    // nft does: enipin's write to one that had already exited would fail with EPIPE instead.
    let dir = enipin_tests::TempDir::new("fake-nft-").unwrap();
    let fake = dir.path().join("nft");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncase \"$*\" in *list*) echo 'Error: No such file or directory' >&2;; \
         *) cat >/dev/null; echo 'Error: simulated failure' >&2;; esac\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err = attach(&format!(
        "{}:/usr/sbin:/usr/bin:/sbin:/bin",
        dir.path().display()
    ));
    assert!(err.contains("Error: simulated failure"), "{err}");
    assert!(
        err.contains("nft failed (its message is printed above)"),
        "{err}"
    );
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(
        host.sh("ip rule show; ip route show table all").unwrap(),
        before,
        "a failed attach --connmark left rules or routes"
    );
    assert!(
        !enipin.state_file().exists(),
        "a failed attach left a state file"
    );

    // nft gone after an attach with connmark: detach removes the rules, keeps the state file
    // and says why; with nft back it removes the table too.
    enipin.ok(&[
        "attach",
        "--no-ebpf",
        "--interfaces",
        "eth0,eth1",
        "--connmark",
    ]);
    let out = enipin
        .command(&["detach"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "detach without nft succeeded");
    assert!(
        err.contains("detach left some things in place") && err.contains("the `nft` command"),
        "{err}"
    );
    assert_eq!(
        host.sh("ip rule show; ip route show table all").unwrap(),
        before,
        "detach without nft left rules or routes"
    );
    assert!(
        table(host).is_some(),
        "detach without nft removed the table"
    );
    enipin.ok(&["detach"]);
    assert_eq!(table(host), None, "detach left the nft table");
}

/// `misrouted_packets` of interface `ifname` in `enipin stats --json`.
fn misrouted_on(stats: &serde_json::Value, ifname: &str) -> u64 {
    let list = stats["interfaces"]
        .as_array()
        .unwrap_or_else(|| panic!("no interface list in {stats}"));
    list.iter()
        .find(|i| {
            i.get("interface")
                .or_else(|| i.get("name"))
                .and_then(|n| n.as_str())
                == Some(ifname)
        })
        .and_then(|i| i.get("counters").unwrap_or(i).get("misrouted_packets"))
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("no misrouted_packets for {ifname} in {stats}"))
}
