//! A service in a container namespace published on the secondary address with nftables DNAT:
//! the host routes the container's reply while its source is still the container's address, so
//! `from <eni-ip>` rules never match (moby/moby#35251) and the reply leaves by the primary ENI
//! with the secondary's address once POSTROUTING has translated it back. Rules alone cannot fix
//! that; the TC egress redirect, which sees the translated source, does.

use enipin_tests::{Enipin, Netns, Spec, Topology, require, veth};

#[test]
fn dnat_reply_on_the_secondary_address_is_fixed_by_the_datapath_only() {
    require();
    let topo = Topology::build_with(Spec {
        ipv6: false,
        ..Spec::default()
    })
    .expect("topology");
    let host = topo.host();

    // The "container": its own namespace behind a veth, like docker0 without the bridge.
    let ctr = Netns::new("dnat-ctr-").expect("container namespace");
    veth(
        host,
        "ctr0",
        "02:e0:00:00:01:01",
        &ctr,
        "eth0",
        "02:e0:00:00:01:02",
    )
    .expect("veth");
    host.ip(&["addr", "add", "198.19.1.1/24", "dev", "ctr0"])
        .unwrap();
    ctr.ip(&["addr", "add", "198.19.1.2/24", "dev", "eth0"])
        .unwrap();
    ctr.ip(&["route", "add", "default", "via", "198.19.1.1"])
        .unwrap();
    host.sysctl("net.ipv4.ip_forward", "1").unwrap();
    host.sh("nft -f - <<'EOF'\n\
         table ip publish {\n\
           chain pre { type nat hook prerouting priority dstnat; \
             ip daddr 198.18.0.11 icmp type echo-request dnat to 198.19.1.2; }\n\
         }\n\
         EOF")
        .expect("nftables DNAT");

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

/// `misrouted_packets` of interface `ifname` in `enipin stats --json`.
fn misrouted_on(stats: &serde_json::Value, ifname: &str) -> u64 {
    let list = stats
        .get("interfaces")
        .and_then(|v| v.as_array())
        .or_else(|| stats.as_array())
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
