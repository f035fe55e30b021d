//! Issue 23: ENIs in subnets of their own. The lab's host has eth0 in the peer's subnet
//! (198.18.0.10/24, 2001:db8::10/64, the only default routes) and eth1 in another one
//! (198.18.11.11/24, 2001:db8:b::b/64), behind the vpc that routes between the two and drops what
//! leaves an ENI with another's source. The peer's ping to eth1 got no reply, and `attach` said
//! "nothing to do".

use enipin_tests::{EniSpec, Enipin, Snapshot, Spec, TempDir, Topology, require};

/// The host: eth0 in the peer's subnet with the default routes, eth1 in its own.
fn split() -> (Topology, Enipin) {
    require();
    let spec = Spec {
        enis: vec![EniSpec::nth(0), EniSpec::in_own_subnet(1)],
        ..Spec::default()
    };
    let t = Topology::build_with(spec).expect("topology");
    let e = Enipin::in_ns(t.host());
    (t, e)
}

/// Every ENI address of the spec, IPv4 then IPv6.
fn addresses(t: &Topology) -> Vec<String> {
    let enis = &t.spec.enis;
    let v4 = enis.iter().flat_map(|e| &e.v4).map(ToString::to_string);
    let v6 = enis.iter().flat_map(|e| &e.v6).map(ToString::to_string);
    v4.chain(v6).collect()
}

/// How many of 3 probes from the peer to `addr` got a reply.
fn replies(t: &Topology, addr: &str) -> u32 {
    t.peer().pings(&[addr], 3).unwrap().1
}

/// Attach with `args`, then every address answers 3 of 3 with no new source drop; detach
/// leaves the host as `before`.
fn every_address_answers(t: &Topology, e: &Enipin, args: &[&str], before: &Snapshot) {
    // The host starts with no neighbours: an owner's gateway is one only if attach asked for it
    // (the program alone, redirecting through an unresolved gateway, lost the first reply).
    t.host().ip(&["neigh", "flush", "all"]).unwrap();
    let out = e.ok(args);
    assert!(out.contains("attached"), "{args:?}: {out}");
    // Attached as planned: status reads back what attach wrote (it exits 1 on drift).
    e.ok(&["status"]);
    t.peer().ip(&["neigh", "flush", "all"]).unwrap();
    let drops = t.drops().unwrap();
    for src in t.peer_addresses() {
        for a in addresses(t)
            .iter()
            .filter(|a| a.contains(':') == src.is_ipv6())
        {
            let src = src.to_string();
            let got = t.peer().pings(&["-I", &src, a], 3).unwrap().1;
            assert_eq!(got, 3, "{args:?}: {a} must answer {src}\n{out}");
        }
    }
    // Nothing dropped, ARP included: the program alone sets the ARP sysctls too (with stock
    // values the host answered the peer's ARP for eth0's address on eth1, and the vpc dropped
    // that answer, one per run).
    let now = t.drops().unwrap();
    assert_eq!(
        now.total(),
        drops.total(),
        "{args:?}: the vpc dropped replies: {drops:?} before, {now:?} after"
    );
    e.ok(&["detach"]);
    let now = e.dump(t);
    assert!(
        now == *before,
        "{args:?}: detach left\n{}",
        before.diff(&now).join("\n")
    );
}

#[test]
fn an_eni_in_its_own_subnet_answers_after_attach() {
    let (t, e) = split();
    assert_eq!(replies(&t, "198.18.0.10"), 3, "eth0 answers before attach");
    let drops = t.drops().unwrap().eni("eth0").ip;
    assert_eq!(
        replies(&t, "198.18.11.11"),
        0,
        "eth1's reply leaves by eth0 before attach"
    );
    assert!(
        t.drops().unwrap().eni("eth0").ip > drops,
        "and the vpc drops it"
    );
    let before = e.dump(&t);

    // eth1 has no IPv6 default route and IPv6 no first-host router: refused with the fix.
    let err = e.fails(&["attach", "--dry-run"]);
    assert!(
        err.contains("interface eth1 has no IPv6 gateway enipin can know")
            && err.contains("--gateway"),
        "{err}"
    );
    let dry = e.ok(&["attach", "--dry-run", "--gateway", "2001:db8:b::1"]);
    let first: Vec<&str> = dry.lines().take(3).collect();
    assert_eq!(
        first,
        [
            "lo: left out: the loopback",
            "eth0: managed: a reply from 198.18.0.10 to 198.18.11.0/24 leaves by eth1 (main table)",
            "eth1: managed: a reply from 198.18.11.11 to 0.0.0.0/0 (the default route) leaves by eth0 (main table)",
        ],
        "{dry}"
    );
    assert!(
        dry.contains("gateway ipv4: 198.18.11.1 (from the subnet's first host)"),
        "{dry}"
    );
    assert!(
        dry.contains("gateway ipv6: 2001:db8:b::1 (from the --gateway)"),
        "{dry}"
    );
    assert!(
        dry.contains("+ route 198.18.0.0/24 via 198.18.11.1 dev eth1"),
        "{dry}"
    );

    // The program alone, rules only, then both. The program alone has no table of eth1's: it
    // sends a reply redirected onto eth1 through eth1's gateway (the kernel's own lookup ARPed
    // for the peer on eth1: 0 of 3 before).
    let gw = ["--gateway", "2001:db8:b::1"];
    for mode in [&["--no-rules"][..], &["--no-ebpf"], &[]] {
        let args: Vec<&str> = ["attach"].iter().chain(mode).chain(&gw).copied().collect();
        every_address_answers(&t, &e, &args, &before);
    }
}

/// `--interfaces eth1` manages eth1 with eth0, which its replies leave by: never "nothing to do".
#[test]
fn a_named_eni_in_its_own_subnet_is_managed_with_the_one_its_replies_leave_by() {
    let (t, e) = split();
    let before = e.dump(&t);
    let out = e.ok(&[
        "attach",
        "--interfaces",
        "eth1",
        "--gateway",
        "2001:db8:b::1",
    ]);
    assert!(
        out.starts_with(
            "eth1: managed: a reply from 198.18.11.11 to 0.0.0.0/0 (the default route) leaves by eth0 (main table)\n\
             eth0: managed: replies of eth1 leave by it; its program sends them back\n"
        ),
        "{out}"
    );
    assert!(!out.contains("nothing to do"), "{out}");
    t.peer().ip(&["neigh", "flush", "all"]).unwrap();
    assert_eq!(replies(&t, "198.18.11.11"), 3, "{out}");
    assert_eq!(replies(&t, "2001:db8:b::b"), 3, "{out}");
    let status = e.ok(&["status"]);
    assert!(
        status.contains("eth1") && status.contains("eth0"),
        "{status}"
    );
    e.ok(&["detach"]);
    assert!(e.dump(&t) == before, "detach left something");
}

/// Three ENIs: eth0 and eth1 share the peer's subnet, eth2 is in its own; eth0 and eth2 have a
/// default route of their own (DHCP's, one metric each), eth1 none (its gateway is its subnet's
/// router). The peer is in both subnets and beyond the vpc's router too: every address answers
/// every peer address of its family, with rules, the program alone, and both; detach leaves
/// nothing. The program alone sent eth1's replies beyond the router by the kernel's lookup, which
/// ARPs for them on eth1: 0 answered before.
#[test]
fn three_enis_mixing_shared_and_separate_subnets() {
    require();
    let spec = Spec {
        enis: vec![
            EniSpec::nth(0),
            EniSpec {
                default_route: false,
                ..EniSpec::nth(1)
            },
            EniSpec {
                default_route: true,
                ..EniSpec::in_own_subnet(2)
            },
        ],
        peer_in_each_subnet: true,
        peer_beyond: true,
        ..Spec::default()
    };
    let t = Topology::build_with(spec).expect("topology");
    // The host keeps the stock ARP sysctls (arp_announce 0): eth0's reply to 198.18.12.100,
    // which the main table sends out of eth2, would first ARP on eth2 with eth0's address as
    // sender, which the vpc drops, so the reply never reached eth2's program while the program
    // alone left the sysctls as they were. enipin sets them with either layer.
    let e = Enipin::in_ns(t.host());
    let from_first_subnet = t.peer().pings(&["-I", "198.18.0.100", "198.18.12.12"], 3);
    assert_eq!(
        from_first_subnet.unwrap().1,
        0,
        "eth2's reply leaves by eth0 before attach"
    );
    let before = e.dump(&t);
    for mode in [&["--no-rules"][..], &["--no-ebpf"], &[]] {
        let args: Vec<&str> = ["attach"].iter().chain(mode).copied().collect();
        every_address_answers(&t, &e, &args, &before);
    }
}

/// A docker0-like bridge with a container's veth port, and a VPC CNI pod veth, beside one ENI:
/// nothing selected, and attach says why for each.
#[test]
fn container_plumbing_beside_one_eni_is_left_out() {
    require();
    let spec = Spec {
        enis: vec![EniSpec::nth(0), EniSpec::nth(1)],
        ..Spec::default()
    };
    let t = Topology::build_with(spec).expect("topology");
    let h = t.host();
    // One ENI: eth1 taken down to the container's side of things would still be an ENI; remove
    // its address instead so eth0 is the only candidate.
    h.ip(&["addr", "flush", "dev", "eth1"]).unwrap();
    h.ip(&["link", "add", "docker0", "type", "bridge"]).unwrap();
    h.ip(&["link", "set", "docker0", "up"]).unwrap();
    h.ip(&["addr", "add", "198.18.100.1/24", "dev", "docker0"])
        .unwrap();
    h.veth_pair("vethc0ffee", "vethpeer").unwrap();
    h.ip(&["link", "set", "vethc0ffee", "master", "docker0"])
        .unwrap();
    h.ip(&["addr", "add", "198.18.100.2/24", "dev", "vethpeer"])
        .unwrap();
    h.veth_pair("eni0a1b2c3d4e", "podside").unwrap();
    h.ip(&["addr", "add", "198.18.101.1/32", "dev", "eni0a1b2c3d4e"])
        .unwrap();
    let e = Enipin::in_ns(h);
    let before = e.dump(&t);
    let out = e.ok(&["attach"]);
    for line in [
        "eth0: left out: the main table sends replies from each of its addresses out of it",
        "eth1: left out: no IPv4 or global IPv6 address of its own",
        "docker0: left out: not an Ethernet interface (a bridge, bond, VLAN or tunnel)",
        "vethc0ffee: left out: no IPv4 or global IPv6 address of its own",
        "eni0a1b2c3d4e: left out: container plumbing (named eni*); name it in --interfaces to manage it",
    ] {
        assert!(out.contains(line), "missing {line:?}:\n{out}");
    }
    assert!(
        out.contains("nothing to do: the main table sends every reply from eth0 out of the interface owning its source"),
        "{out}"
    );
    assert!(e.dump(&t) == before, "nothing to do changed something");
}

/// The split host on every surface besides attach: render (each format) carries eth1's route to
/// eth0's subnet through eth1's own gateway; after attach, doctor finds no conflict of enipin's
/// own making, status lists both with no drift, stats and metrics have both interfaces.
#[test]
fn every_surface_treats_an_eni_in_its_own_subnet_like_any_other() {
    let (t, e) = split();
    let gw = ["--gateway", "2001:db8:b::1"];
    let before = e.dump(&t);
    let empty = TempDir::new("enipin-root-").unwrap();
    let empty = empty.path().to_str().unwrap();
    for (format, route) in [
        (
            "network-scripts",
            "198.18.0.0/24 via 198.18.11.1 dev eth1 table 20003",
        ),
        // networkd's files sit beside a running enipin: no address, no table of enipin's
        // (docs/networkd.md); in an empty root no .network file configures eth1.
        ("networkd", "# eth1: no .network file matches it"),
        ("netplan", "to: \"198.18.0.0/24\""),
        ("nmcli", "198.18.0.0/24 198.18.11.1 table=20003"),
    ] {
        let out = e.ok(&["render", "--format", format, "--root", empty, gw[0], gw[1]]);
        assert!(out.contains(route), "{format}: no {route:?}\n{out}");
        assert!(
            out.contains("eth0") && out.contains("eth1"),
            "{format}\n{out}"
        );
    }
    assert!(e.dump(&t) == before, "render changed something");

    e.ok(&["attach", gw[0], gw[1]]);
    // A scratch root: the machine's own files are not the lab host's.
    let root = TempDir::new("enipin-root-").unwrap();
    let root = root.path().to_str().unwrap();
    let doctor = e.cmd(&["doctor", "--root", root, gw[0], gw[1]]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        doctor.status.success() && text.ends_with("0 conflict(s)\n"),
        "doctor:\n{text}{}",
        String::from_utf8_lossy(&doctor.stderr)
    );
    let status = e.ok(&["status"]);
    for name in ["eth0", "eth1"] {
        assert!(status.contains(name), "status lacks {name}:\n{status}");
    }
    assert!(status.contains("drift: none"), "{status}");
    let stats = e.ok(&["stats"]);
    let metrics = e.ok(&["metrics"]);
    for name in ["eth0", "eth1"] {
        assert!(stats.contains(name), "stats lacks {name}:\n{stats}");
        let series = format!("interface=\"{name}\"");
        assert!(
            metrics.contains(&series),
            "metrics lack {series}:\n{metrics}"
        );
    }
    e.ok(&["detach"]);
    assert!(e.dump(&t) == before, "detach left something");
}
