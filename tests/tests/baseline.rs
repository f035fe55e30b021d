//! The baseline (policy rules, routes, sysctls over rtnetlink) driven through the CLI, in
//! throwaway namespaces: a host with ENIs in one subnet behind a "VPC" bridge that drops frames
//! whose source IP or MAC is not the ENI's.

use std::{
    path::PathBuf,
    process::{Command, Output},
    time::Instant,
};

use enipin::testbed::{Netns, PinDir, TempDir, veth};

fn bin() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/enipin");
    assert!(p.exists(), "{} is missing: run `cargo build -p enipin` first (cargo xtask test does)", p.display());
    p
}

/// One ENI of the host: its name, MAC, addresses (first = primary).
struct Eni {
    name: String,
    mac: String,
    v4: Vec<String>,
    v6: Vec<String>,
}

/// host ns (ethN) ─ veth ─ vpc ns (bridge br0 = gateway 198.18.0.1, 2001:db8::1) ─ veth ─ peer ns.
struct Topo {
    host: Netns,
    vpc: Netns,
    peer: Netns,
    enis: Vec<Eni>,
    state: TempDir,
    pins: PinDir,
}

impl Topo {
    /// `enis[i]` = (IPv4 host numbers, IPv6 host numbers) of eth<i>, all in 198.18.0.0/24 and
    /// 2001:db8::/64.
    fn new(enis: &[(&[u8], &[u8])]) -> Topo {
        let host = Netns::new("bh").unwrap();
        // No DAD: link-local addresses are final at once, so dumps taken later compare equal.
        host.sysctl("net.ipv6.conf.default.accept_dad", "0").unwrap();
        let vpc = Netns::new("bv").unwrap();
        let peer = Netns::new("bp").unwrap();
        vpc.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
        vpc.ip(&["link", "set", "br0", "up"]).unwrap();
        vpc.ip(&["addr", "add", "198.18.0.1/24", "dev", "br0"]).unwrap();
        vpc.ip(&["addr", "add", "2001:db8::1/64", "dev", "br0", "nodad"]).unwrap();
        veth(&peer, "p0", "02:00:00:00:01:00", &vpc, "vp", "02:00:00:00:02:00").unwrap();
        vpc.ip(&["link", "set", "vp", "master", "br0"]).unwrap();
        peer.ip(&["addr", "add", "198.18.0.100/24", "dev", "p0"]).unwrap();
        peer.ip(&["addr", "add", "2001:db8::100/64", "dev", "p0", "nodad"]).unwrap();
        let mut nft = String::from("table bridge vpc {\n chain pre {\n  type filter hook prerouting priority 0; policy accept;\n");
        let mut out = Vec::new();
        for (i, (v4, v6)) in enis.iter().enumerate() {
            let eni = Eni {
                name: format!("eth{i}"),
                mac: format!("02:00:00:00:00:{:02x}", i + 1),
                v4: v4.iter().map(|h| format!("198.18.0.{h}")).collect(),
                v6: v6.iter().map(|h| format!("2001:db8::{h:x}")).collect(),
            };
            let port = format!("v{i}");
            veth(&host, &eni.name, &eni.mac, &vpc, &port, &format!("02:00:00:00:03:{:02x}", i + 1)).unwrap();
            vpc.ip(&["link", "set", &port, "master", "br0"]).unwrap();
            // The VPC's source check: a frame leaving ENI X must carry X's MAC and one of X's
            // addresses (ARP included). IPv6 also lets link-local and DAD's :: through.
            // (An ENI without IPv4 addresses may send no IPv4 at all.)
            let v4set = if eni.v4.is_empty() { "0.0.0.0".to_owned() } else { eni.v4.join(", ") };
            nft += &format!("  iifname \"{port}\" ether saddr != {} drop\n", eni.mac);
            nft += &format!("  iifname \"{port}\" ether type ip ip saddr != {{ {v4set} }} drop\n");
            nft += &format!("  iifname \"{port}\" ether type arp arp saddr ip != {{ {v4set} }} drop\n");
            let v6set: Vec<String> = eni.v6.iter().cloned().chain(["fe80::/10".into(), "::".into()]).collect();
            nft += &format!("  iifname \"{port}\" ether type ip6 ip6 saddr != {{ {} }} drop\n", v6set.join(", "));
            out.push(eni);
        }
        nft += " }\n}\n";
        vpc.sh(&format!("nft -f - <<'EOF'\n{nft}EOF")).unwrap();
        // Addresses in ENI order, so the main table's subnet route goes out of eth0.
        for eni in &out {
            for a in &eni.v4 {
                host.ip(&["addr", "add", &format!("{a}/24"), "dev", &eni.name]).unwrap();
            }
            for a in &eni.v6 {
                host.ip(&["addr", "add", &format!("{a}/64"), "dev", &eni.name, "nodad"]).unwrap();
            }
        }
        Topo { host, vpc, peer, enis: out, state: TempDir::new("bst").unwrap(), pins: PinDir::new("bpin").unwrap() }
    }

    /// Runs `enipin --netns HOST --state-dir .. --pin-dir .. ARGS`.
    fn enipin(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--netns")
            .arg(self.host.name())
            .arg("--state-dir")
            .arg(self.state.path())
            .arg("--pin-dir")
            .arg(self.pins.path())
            .args(args)
            .output()
            .unwrap()
    }

    /// `enipin ARGS` that must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.enipin(args);
        let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "enipin {args:?} failed ({}):\n{so}\n{se}", out.status);
        so.into_owned()
    }

    /// `enipin ARGS` that must fail; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.enipin(args);
        let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "enipin {args:?} should have failed:\n{so}\n{se}");
        se.into_owned()
    }

    /// Everything enipin could touch in the host namespace.
    fn dump(&self) -> String {
        let mut s = self
            .host
            .sh("ip rule; ip -6 rule; ip route show table all; ip -6 route show table all")
            .unwrap();
        for eni in &self.enis {
            for k in ["rp_filter", "arp_ignore", "arp_announce"] {
                s += &self.host.sh(&format!("echo {} {k}=$(cat /proc/sys/net/ipv4/conf/{}/{k})", eni.name, eni.name)).unwrap();
            }
        }
        s
    }

    fn state_file(&self) -> PathBuf {
        self.state.path().join("state.json")
    }

    fn table(&self, eni: usize) -> u32 {
        20000 + self.host.ifindex(&self.enis[eni].name).unwrap()
    }
}

#[test]
fn seed_ping_fails_before_and_works_after_attach() {
    let t = Topo::new(&[(&[10], &[]), (&[11], &[])]);
    t.host.sysctl("net.ipv4.conf.eth1.rp_filter", "1").unwrap();
    assert!(t.peer.ping("198.18.0.10", 2).unwrap(), "the primary ENI must answer before attach");
    assert!(!t.peer.ping("198.18.0.11", 3).unwrap(), "the secondary ENI must NOT answer before attach (replies leave by eth0)");
    let before = t.dump();

    // --dry-run in both formats changes nothing.
    let dry = t.ok(&["attach", "--no-ebpf", "--dry-run"]);
    assert!(dry.contains("+ rule from 198.18.0.11/32 lookup"), "{dry}");
    assert!(dry.contains("~ sysctl net.ipv4.conf.eth1.rp_filter: 1 -> 2"), "{dry}");
    assert!(dry.contains("subnet's first host"), "the gateway source is shown: {dry}");
    let dry_ip = t.ok(&["attach", "--no-ebpf", "--dry-run", "--format", "ip"]);
    let t1 = t.table(1);
    assert!(dry_ip.contains(&format!("ip rule add from 198.18.0.11/32 lookup {t1} suppress_prefixlength 0 pref 20000 proto 229")), "{dry_ip}");
    assert!(dry_ip.contains(&format!("ip route add default via 198.18.0.1 dev eth1 table {t1} proto 229")), "{dry_ip}");
    assert!(dry_ip.contains("sysctl -w net.ipv4.conf.eth1.arp_ignore=1"), "{dry_ip}");
    assert_eq!(t.dump(), before, "--dry-run changed something");
    assert!(!t.state_file().exists());

    let started = Instant::now();
    let out = t.ok(&["attach", "--no-ebpf"]);
    eprintln!("attach of 2 interfaces x 1 address: {:?}", started.elapsed());
    assert!(out.contains("attached"), "{out}");
    assert!(t.state_file().exists());
    assert!(t.peer.ping("198.18.0.11", 3).unwrap(), "the secondary ENI must answer after attach");
    assert!(t.peer.ping("198.18.0.10", 2).unwrap());
    let rules = t.host.ip(&["rule"]).unwrap();
    assert!(rules.contains(&format!("from 198.18.0.11 lookup {t1} suppress_prefixlength 0 proto 229")), "{rules}");
    assert!(rules.contains("lookup main suppress_prefixlength 0 proto 229"), "{rules}");
    let table = t.host.ip(&["route", "show", "table", &t1.to_string()]).unwrap();
    assert!(table.contains("default via 198.18.0.1 dev eth1 proto 229"), "{table}");
    assert!(table.contains("198.18.0.0/24 dev eth1 proto 229 scope link src 198.18.0.11"), "{table}");
    assert_eq!(t.host.sh("cat /proc/sys/net/ipv4/conf/eth1/rp_filter").unwrap().trim(), "2");

    // Idempotent.
    let again = t.ok(&["attach", "--no-ebpf"]);
    assert!(again.contains("nothing to do: 5 rules, 4 routes already installed"), "{again}");

    let status = t.ok(&["status"]);
    assert!(status.contains("drift: none"), "{status}");
    assert!(status.contains("datapath: not attached"), "{status}");
    let json: serde_json::Value = serde_json::from_str(&t.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["managed"].as_array().unwrap().len(), 2);
    assert_eq!(json["managed"][1]["gateway_v4"]["source"], "subnet-first-host");

    // Drift: someone deletes one of our rules; status says so, attach puts it back.
    t.host.ip(&["rule", "del", "pref", "20002", "from", "198.18.0.11"]).unwrap();
    let status = t.ok(&["status"]);
    assert!(status.contains("drift (1 change(s)") && status.contains("+ rule from 198.18.0.11/32"), "{status}");
    let fix = t.ok(&["attach", "--no-ebpf"]);
    assert!(fix.contains("attached: 1 change(s)"), "{fix}");

    let started = Instant::now();
    let out = t.ok(&["detach"]);
    eprintln!("detach of 2 interfaces: {:?}", started.elapsed());
    assert!(out.contains("detached"), "{out}");
    assert_eq!(t.dump(), before, "detach did not restore the namespace");
    assert!(!t.state_file().exists());
    let again = t.ok(&["detach"]);
    assert!(again.contains("nothing to do"), "{again}");
    assert!(!t.peer.ping("198.18.0.11", 2).unwrap(), "after detach the secondary is broken again");
    drop(t.vpc);
}

#[test]
fn three_enis_secondaries_ipv6_and_foreign_rules() {
    let t = Topo::new(&[(&[10, 20], &[0x10]), (&[11, 21], &[0x11]), (&[12, 22], &[0x12, 0x22])]);
    // Someone else's rule and route, which enipin must leave alone.
    t.host.ip(&["rule", "add", "from", "198.18.5.5", "lookup", "500", "pref", "100"]).unwrap();
    t.host.ip(&["route", "add", "198.18.5.0/24", "dev", "eth0", "table", "500"]).unwrap();
    t.host.ip(&["-6", "rule", "add", "from", "2001:db8:5::5", "lookup", "500", "pref", "100"]).unwrap();
    for a in ["198.18.0.11", "198.18.0.21", "198.18.0.12", "198.18.0.22"] {
        assert!(!t.peer.ping(a, 2).unwrap(), "{a} must not answer before attach");
    }
    let before = t.dump();

    let started = Instant::now();
    let out = t.ok(&["attach", "--no-ebpf"]);
    eprintln!("attach of 3 interfaces x 2 IPv4 + 1-2 IPv6 addresses: {:?}", started.elapsed());
    assert!(out.contains("attached"), "{out}");
    for a in ["198.18.0.10", "198.18.0.20", "198.18.0.11", "198.18.0.21", "198.18.0.12", "198.18.0.22"] {
        assert!(t.peer.ping(a, 3).unwrap(), "{a} must answer after attach");
    }
    for a in ["2001:db8::10", "2001:db8::11", "2001:db8::12", "2001:db8::22"] {
        assert!(t.peer.ping(a, 3).unwrap(), "{a} must answer after attach");
    }
    let rules6 = t.host.ip(&["-6", "rule"]).unwrap();
    let t2 = t.table(2);
    assert!(rules6.contains(&format!("from 2001:db8::22 lookup {t2} suppress_prefixlength 0 proto 229")), "{rules6}");
    assert!(rules6.contains("from 2001:db8:5::5 lookup 500"), "{rules6}");
    let routes6 = t.host.ip(&["-6", "route", "show", "table", &t2.to_string()]).unwrap();
    assert!(routes6.contains("2001:db8::/64 dev eth2 proto 229 src 2001:db8::12"), "{routes6}");
    let rules = t.host.ip(&["rule"]).unwrap();
    assert!(rules.contains("100:\tfrom 198.18.5.5 lookup 500"), "{rules}");
    // 3 ENIs x 2 addresses x 2 layers + main; v6: 4 addresses x 2 + main.
    assert_eq!(rules.matches("proto 229").count(), 13, "{rules}");
    assert_eq!(rules6.matches("proto 229").count(), 9, "{rules6}");
    let again = t.ok(&["attach", "--no-ebpf"]);
    assert!(again.contains("nothing to do: 22 rules, 9 routes already installed"), "{again}");

    let started = Instant::now();
    t.ok(&["detach"]);
    eprintln!("detach of 3 interfaces: {:?}", started.elapsed());
    assert_eq!(t.dump(), before, "detach did not restore the namespace");
    assert!(t.host.ip(&["route", "show", "table", "500"]).unwrap().contains("198.18.5.0/24 dev eth0"));
    assert!(t.ok(&["detach"]).contains("nothing to do"));
}

#[test]
fn bad_input_gives_a_clear_error_and_changes_nothing() {
    let t = Topo::new(&[(&[10], &[]), (&[11], &[]), (&[], &[])]);
    // An interface alone in its subnet (its veth peer has no address).
    t.host.ip(&["link", "add", "solo0", "type", "veth", "peer", "name", "solo1"]).unwrap();
    t.host.ip(&["addr", "add", "198.18.1.9/24", "dev", "solo0"]).unwrap();
    t.host.ip(&["link", "set", "solo0", "up"]).unwrap();
    t.host.ip(&["link", "set", "solo1", "up"]).unwrap();
    // An interface that is down (with an address in the ENIs' subnet).
    t.host.ip(&["link", "add", "down0", "type", "veth", "peer", "name", "down1"]).unwrap();
    t.host.ip(&["addr", "add", "198.18.0.99/24", "dev", "down0"]).unwrap();
    let before = t.dump();
    let unchanged = |what: &str| {
        assert_eq!(t.dump(), before, "{what} changed the namespace");
        assert!(!t.state_file().exists(), "{what} left a state file");
    };

    let e = t.fails(&["attach", "--no-ebpf", "--interfaces", "eth7"]);
    assert!(e.contains("unknown interface \"eth7\""), "{e}");
    unchanged("unknown interface");

    let e = t.fails(&["attach", "--no-ebpf", "--interfaces", "eth0,eth2"]);
    assert!(e.contains("eth2 has no IPv4 or global IPv6 address"), "{e}");
    unchanged("interface without addresses");

    let e = t.fails(&["attach", "--no-ebpf", "--interfaces", "eth0,down0"]);
    assert!(e.contains("interface down0 is down"), "{e}");
    unchanged("interface down");

    let out = t.ok(&["attach", "--no-ebpf", "--interfaces", "solo0"]);
    assert!(out.contains("nothing to do: no interface shares a subnet"), "{out}");
    unchanged("only one interface in the subnet");

    // Someone else's rule at our priority, then pointing at our table, then a route in it.
    t.host.ip(&["rule", "add", "from", "198.18.9.9", "lookup", "600", "pref", "20001"]).unwrap();
    let before_conflict = t.dump();
    let e = t.fails(&["attach", "--no-ebpf"]);
    assert!(e.contains("uses priority 20001") && e.contains("--priority"), "{e}");
    assert_eq!(t.dump(), before_conflict);
    t.host.ip(&["rule", "del", "pref", "20001"]).unwrap();
    let t1 = t.table(1).to_string();
    t.host.ip(&["rule", "add", "from", "198.18.9.9", "lookup", &t1, "pref", "300"]).unwrap();
    let e = t.fails(&["attach", "--no-ebpf"]);
    assert!(e.contains(&format!("table {t1}")) && e.contains("--table-base"), "{e}");
    t.host.ip(&["rule", "del", "pref", "300"]).unwrap();
    t.host.ip(&["route", "add", "198.18.9.0/24", "dev", "eth1", "table", &t1]).unwrap();
    let e = t.fails(&["attach", "--no-ebpf"]);
    assert!(e.contains(&format!("table {t1} holds a route that is not enipin's")), "{e}");
    t.host.ip(&["route", "del", "198.18.9.0/24", "dev", "eth1", "table", &t1]).unwrap();
    unchanged("conflicting rules and routes");

    // A reserved table number.
    let e = t.fails(&["attach", "--no-ebpf", "--table-base", &(253 - t.host.ifindex("eth0").unwrap()).to_string()]);
    assert!(e.contains("253-255"), "{e}");
    unchanged("reserved table");

    // A step that fails halfway (an unreachable gateway): rolled back.
    let e = t.fails(&["attach", "--no-ebpf", "--gateway", "198.19.0.1"]);
    assert!(e.contains("failed") && e.contains("rolled back the"), "{e}");
    unchanged("a failed step");

    // Without CAP_NET_ADMIN.
    let out = Command::new("setpriv")
        .args(["--bounding-set=-net_admin", "--inh-caps=-net_admin"])
        .arg(bin())
        .args(["--netns", t.host.name(), "--state-dir"])
        .arg(t.state.path())
        .arg("--pin-dir")
        .arg(t.pins.path())
        .args(["attach", "--no-ebpf"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("permission denied (EPERM)") && e.contains("CAP_NET_ADMIN"), "{e}");
    unchanged("missing CAP_NET_ADMIN");

    // A corrupt state file.
    std::fs::write(t.state_file(), "{ not json").unwrap();
    for cmd in [&["attach", "--no-ebpf"][..], &["detach"][..], &["status"][..]] {
        let e = t.fails(cmd);
        assert!(e.contains("state.json is corrupt") && e.contains("remove it"), "{e}");
    }
    std::fs::remove_file(t.state_file()).unwrap();
    unchanged("a corrupt state file");

    // One address on two interfaces.
    t.host.ip(&["addr", "add", "198.18.0.10/24", "dev", "eth1"]).unwrap();
    let before_dup = t.dump();
    let e = t.fails(&["attach", "--no-ebpf"]);
    assert!(e.contains("address 198.18.0.10 is on both eth0 and eth1"), "{e}");
    assert_eq!(t.dump(), before_dup);
}

#[test]
fn render_every_format_pairs_addresses_with_their_interface() {
    let t = Topo::new(&[(&[10], &[0x10]), (&[11, 21], &[])]);
    let (t0, t1) = (t.table(0), t.table(1));
    let before = t.dump();
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

    let out = t.ok(&["render", "--format", "network-scripts"]);
    let s = sections(&out, "# /etc/sysconfig/network-scripts/");
    let body = |name: &str| s.iter().find(|(h, _)| h.ends_with(name)).map(|(_, b)| b.clone()).unwrap_or_else(|| panic!("{name} missing:\n{out}"));
    assert!(body("rule-eth1").contains(&format!("from 198.18.0.21/32 lookup {t1} pref 20002")), "{out}");
    assert!(!body("rule-eth1").contains("198.18.0.10"), "{out}");
    assert!(body("rule-eth0").contains(&format!("from 198.18.0.10/32 lookup {t0} suppress_prefixlength 0 pref 20000")), "{out}");
    assert!(body("route-eth1").contains(&format!("198.18.0.0/24 dev eth1 scope link src 198.18.0.11 table {t1}")), "{out}");
    assert!(body("route-eth1").contains(&format!("default via 198.18.0.1 dev eth1 table {t1}")), "{out}");
    assert!(body("rule6-eth0").contains(&format!("from 2001:db8::10/128 lookup {t0}")), "{out}");
    assert!(body("route6-eth0").contains(&format!("2001:db8::/64 dev eth0 src 2001:db8::10 table {t0}")), "{out}");
    assert!(!out.contains("proto 229"), "{out}");

    let out = t.ok(&["render", "--format", "networkd"]);
    let s = sections(&out, ".network");
    let eth1 = &s.iter().find(|(h, _)| h.contains("eth1")).unwrap().1;
    assert!(eth1.contains("MACAddress=02:00:00:00:00:02"), "{out}");
    assert!(eth1.contains(&format!("[RoutingPolicyRule]\nFrom=198.18.0.21/32\nTable={t1}\nPriority=20000\nSuppressPrefixLength=0")), "{out}");
    assert!(eth1.contains(&format!("[Route]\nGateway=198.18.0.1\nTable={t1}")), "{out}");
    assert!(!eth1.contains("198.18.0.10"), "{out}");
    let eth0 = &s.iter().find(|(h, _)| h.contains("eth0")).unwrap().1;
    assert!(eth0.contains("[RoutingPolicyRule]\nFamily=ipv4\nTable=main\nPriority=20001\nSuppressPrefixLength=0"), "{out}");
    assert!(eth0.contains(&format!("[Route]\nDestination=198.18.0.0/24\nScope=link\nPreferredSource=198.18.0.10\nTable={t0}")), "{out}");

    let out = t.ok(&["render", "--format", "netplan"]);
    let eth1 = out.split("    eth1:").nth(1).unwrap_or_else(|| panic!("{out}"));
    let eth0 = out.split("    eth0:").nth(1).unwrap().split("    eth1:").next().unwrap();
    assert!(eth1.contains(&format!("        - from: \"198.18.0.21/32\"\n          table: {t1}\n          priority: 20002")), "{out}");
    assert!(eth1.contains(&format!("        - from: \"198.18.0.11/32\"\n          to: \"198.18.0.0/24\"\n          table: {t1}\n          priority: 20000")), "{out}");
    assert!(eth1.contains(&format!("        - to: default\n          via: \"198.18.0.1\"\n          table: {t1}")), "{out}");
    assert!(eth0.contains("macaddress: \"02:00:00:00:00:01\"") && eth0.contains("2001:db8::10") && !eth0.contains("198.18.0.11"), "{out}");

    let out = t.ok(&["render", "--format", "nmcli"]);
    let eth1: Vec<&str> = out.lines().filter(|l| l.contains("device show eth1")).collect();
    assert!(eth1.iter().any(|l| l.ends_with(&format!("+ipv4.routing-rules \"priority 20000 from 198.18.0.21/32 table {t1} suppress_prefixlength 0\""))), "{out}");
    assert!(eth1.iter().any(|l| l.ends_with(&format!("+ipv4.routes \"0.0.0.0/0 198.18.0.1 table={t1}\""))), "{out}");
    assert!(eth1.iter().all(|l| !l.contains("198.18.0.10")), "{out}");
    assert!(out.contains(&format!("device show eth0)\" +ipv6.routing-rules \"priority 20002 from 2001:db8::10/128 table {t0}\"")), "{out}");
    assert!(out.contains("nmcli device reapply eth1"), "{out}");
    assert_eq!(t.dump(), before, "render changed something");
}

impl Topo {
    /// Pings `dst` from the host with source address `src`.
    fn host_ping_from(&self, src: &str, dst: &str) -> bool {
        self.host
            .command("ping")
            .args(["-n", "-q", "-c", "2", "-W", "1", "-i", "0.2", "-I", src, dst])
            .output()
            .unwrap()
            .status
            .success()
    }
}

#[test]
fn selection_by_mac_prefixes_and_gateway_sources() {
    let t = Topo::new(&[(&[10], &[0x10]), (&[11], &[0x11])]);
    // Something beyond the gateway, reachable only through a default route.
    t.vpc.ip(&["addr", "add", "198.18.200.1/32", "dev", "lo"]).unwrap();
    t.vpc.sysctl("net.ipv4.ip_forward", "1").unwrap();
    t.host.ip(&["route", "add", "default", "via", "198.18.0.1", "dev", "eth0"]).unwrap();
    t.host.ip(&["-6", "route", "add", "default", "via", "2001:db8::1", "dev", "eth1"]).unwrap();
    assert!(t.host_ping_from("198.18.0.10", "198.18.200.1"));
    assert!(!t.host_ping_from("198.18.0.11", "198.18.200.1"), "eth1's source must not get out by eth0's default route");
    let before = t.dump();

    let out = t.ok(&["attach", "--no-ebpf", "--interfaces", "eth0,02:00:00:00:00:02", "--prefix", "eth1=198.18.0.64/28"]);
    assert!(out.contains("gateway ipv4: 198.18.0.1 (from the main table's default route)"), "{out}");
    assert!(out.contains("gateway ipv4: 198.18.0.1 (from the subnet's first host)"), "{out}");
    assert!(out.contains("gateway ipv6: 2001:db8::1 (from the main table's default route)"), "{out}");
    assert!(out.contains("gateway ipv6: none (subnet route only)"), "{out}");
    assert!(t.host_ping_from("198.18.0.11", "198.18.200.1"), "eth1's default route in its table");
    assert!(t.host_ping_from("198.18.0.10", "198.18.200.1"));
    let t1 = t.table(1);
    let rules = t.host.ip(&["rule"]).unwrap();
    assert!(rules.contains(&format!("20000:\tfrom 198.18.0.64/28 lookup {t1} suppress_prefixlength 0 proto 229")), "{rules}");
    assert!(rules.contains(&format!("20002:\tfrom 198.18.0.64/28 lookup {t1} proto 229")), "{rules}");
    let json: serde_json::Value = serde_json::from_str(&t.ok(&["status", "--json"])).unwrap();
    let m = &json["managed"];
    assert_eq!(m[0]["name"], "eth0");
    assert_eq!(m[0]["gateway_v4"]["source"], "main-table");
    assert_eq!(m[0]["gateway_v6"], serde_json::Value::Null);
    assert_eq!(m[1]["mac"], "02:00:00:00:00:02");
    assert_eq!(m[1]["gateway_v4"]["source"], "subnet-first-host");
    assert_eq!(m[1]["gateway_v6"]["source"], "main-table");
    assert_eq!(json["drift"].as_array().unwrap().len(), 0);
    let table6 = t.host.ip(&["-6", "route", "show", "table", &t1.to_string()]).unwrap();
    assert!(table6.contains("default via 2001:db8::1 dev eth1 proto 229"), "{table6}");

    // Re-attach with another gateway: only the default routes change.
    let out = t.ok(&["attach", "--no-ebpf", "--interfaces", "eth0,eth1", "--prefix", "eth1=198.18.0.64/28", "--gateway", "198.18.0.100"]);
    assert!(out.contains("198.18.0.100 (from the --gateway)"), "{out}");
    assert!(out.contains(&format!("- route default via 198.18.0.1 dev eth1 table {t1} proto 229")), "{out}");
    assert!(out.contains(&format!("+ route default via 198.18.0.100 dev eth1 table {t1} proto 229")), "{out}");
    assert!(out.contains("attached: 4 change(s)"), "{out}");

    t.ok(&["detach"]);
    assert_eq!(t.dump(), before);
}

#[test]
fn scale_eight_enis_eight_addresses_each() {
    let hosts: Vec<Vec<u8>> = (0..8u8).map(|i| (0..8u8).map(|k| 10 + i + 20 * k).collect()).collect();
    let spec: Vec<(&[u8], &[u8])> = hosts.iter().map(|h| (h.as_slice(), &[][..])).collect();
    let t = Topo::new(&spec);
    let before = t.dump();
    let started = Instant::now();
    t.ok(&["attach", "--no-ebpf"]);
    let attach = started.elapsed();
    let started = Instant::now();
    let again = t.ok(&["attach", "--no-ebpf"]);
    let noop = started.elapsed();
    assert!(again.contains("nothing to do: 129 rules, 16 routes already installed"), "{again}");
    for a in ["198.18.0.157", "198.18.0.31", "198.18.0.10"] {
        assert!(t.peer.ping(a, 3).unwrap(), "{a} must answer after attach");
    }
    let started = Instant::now();
    t.ok(&["detach"]);
    let detach = started.elapsed();
    eprintln!("8 interfaces x 8 addresses (129 rules, 16 routes, 16 sysctls): attach {attach:?}, no-op attach {noop:?}, detach {detach:?}");
    assert_eq!(t.dump(), before);
}
