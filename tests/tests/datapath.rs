//! The TC egress enforcer on real interfaces, with ONLY the datapath applied (no policy rules),
//! in the lab's topology (`enipin::lab::Topology`, the seed):
//!
//! ```text
//!  host                      vpc                                   peer
//!  eth0 198.18.0.10 ──── eni0 ┐
//!  eth1 198.18.0.11 ──── eni1 ├ br0 198.18.0.1 (gateway) ── peer0 ──── eth0 198.18.0.100
//! ```
//!
//! The vpc emulates the cloud's per-ENI source check with nftables on the bridge: a frame arriving
//! from an ENI must carry that ENI's source IP and MAC, or it is dropped (and counted). Both host
//! addresses share one subnet, so the host's replies from 198.18.0.11 follow the main table's
//! first subnet route out of eth0 and are dropped, until the enforcer redirects them onto eth1.
//!
//! The loader runs on a thread that entered the host namespace (`enipin_tests::in_ns`).

use std::{collections::BTreeSet, net::IpAddr};

use anyhow::{Result, bail};
use aya::programs::{SchedClassifier, TcAttachType};
use enipin::{
    datapath::{self, AttachKind},
    model::{Cidr, Forwarding, ManagedInterface},
    settings::config::{Attach, Config, Mode, Paths},
};
use enipin_ebpf::Counters;
use enipin_tests::{Enipin, Netns, PinDir, TempDir, Topology, in_ns};

/// The lab's ENIs (`Spec::default()`): the primary, and the secondary whose replies the main
/// table sends out of the primary.
const E1: &str = "eth0";
const E2: &str = "eth1";
const IP1: &str = "198.18.0.10";
const IP2: &str = "198.18.0.11";
const IP6_1: &str = "2001:db8::10";
const IP6_2: &str = "2001:db8::11";
const PEER6: &str = "2001:db8::100";

struct Lab {
    topo: Topology,
    state: TempDir,
    managed: Vec<ManagedInterface>,
}

impl Lab {
    fn new() -> Result<Self> {
        enipin::lab::preflight()?;
        let topo = Topology::build()?;
        let host = topo.host();
        // Only the interface that holds an address answers ARP for it (no "ARP flux"), and ARP
        // requests use the outgoing interface's own address: the vpc drops only misrouted IP.
        host.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
        host.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
        // The scenario needs replies from eth1's address to leave by eth0: check the host agrees.
        let peer = (topo.spec.peer_v4.to_string(), topo.spec.peer_v6.to_string());
        for (peer, from) in [(&peer.0, IP2), (&peer.1, IP6_2)] {
            let route = host.ip(&["route", "get", peer, "from", from])?;
            if !route.contains(&format!("dev {E1}")) {
                bail!("expected the main table to send {peer} from {from} out of {E1}: {route}");
            }
        }
        let managed = [E1, E2]
            .iter()
            .zip([(IP1, IP6_1), (IP2, IP6_2)])
            .map(|(name, (ip, ip6))| {
                Ok(ManagedInterface {
                    ifindex: host.ifindex(name)?,
                    name: name.to_string(),
                    mac: [0; 6],
                    mtu: 1500,
                    table: 0,
                    addrs: vec![
                        Cidr {
                            addr: ip.parse()?,
                            prefix_len: 24,
                        },
                        Cidr {
                            addr: ip6.parse()?,
                            prefix_len: 64,
                        },
                    ],
                    prefixes: Vec::new(),
                    gateway_v4: None,
                    gateway_v6: None,
                    forwarding: Forwarding::default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            topo,
            state: TempDir::new("enipin-dp-state-")?,
            managed,
        })
    }

    fn host(&self) -> &Netns {
        self.topo.host()
    }

    fn paths(&self, pins: &PinDir) -> Paths {
        Paths {
            pin_dir: pins.path().to_owned(),
            state_dir: self.state.path().to_owned(),
        }
    }

    /// Pings `addr` from the peer: (sent, received).
    fn ping(&self, addr: &str, count: u32) -> Result<(u32, u32)> {
        self.topo.peer().pings(&[addr], count)
    }

    /// Frames the vpc's source check dropped so far, all ENIs and reasons.
    fn dropped(&self) -> Result<u64> {
        Ok(self.topo.drops()?.total())
    }

    /// Echo replies the vpc let through from eth1 (so with eth1's MAC and address) so far.
    fn e2_replies(&self) -> Result<u64> {
        Ok(self.topo.echo_replies(E2)?.0)
    }
}

fn cfg(mode: Mode) -> Config {
    Config {
        mode,
        ..Config::default()
    }
}

fn attach(managed: &[ManagedInterface], mode: Mode, paths: &Paths) -> Result<()> {
    attach_with(managed, &cfg(mode), paths)
}

fn attach_with(managed: &[ManagedInterface], cfg: &Config, paths: &Paths) -> Result<()> {
    let plan = datapath::plan(managed, cfg, paths)?;
    datapath::apply(plan, managed, cfg, paths)
}

/// The netlink (clsact) path even where TCX exists: what kernels < 6.6 take.
fn netlink(mode: Mode) -> Config {
    Config {
        attach: Attach::Netlink,
        ..cfg(mode)
    }
}

fn attached(ifindex: u32, name: &str, kind: AttachKind) -> datapath::Attached {
    datapath::Attached {
        ifindex,
        name: name.into(),
        kind,
    }
}

fn counters(paths: &Paths, ifindex: u32) -> Counters {
    datapath::counters(paths)
        .unwrap()
        .into_iter()
        .find(|(i, _)| *i == ifindex)
        .unwrap()
        .1
}

/// Program ids attached at TCX egress on `ifindex`, in order.
fn tcx_progs(ifindex: u32) -> Vec<u32> {
    SchedClassifier::query_tcx(ifindex, TcAttachType::Egress)
        .unwrap()
        .1
        .iter()
        .map(|p| p.id())
        .collect()
}

/// Stands in for an older enipin build: loads the pass-all classifier on the maps pinned under
/// `paths`, lets `onto_links` put it on enipin's links, and pins it as enipin's program in place
/// of the current one. Returns its id.
fn older_build(paths: &Paths, onto_links: impl FnOnce(&mut SchedClassifier)) -> u32 {
    let mut old = aya::EbpfLoader::new()
        .default_map_pin_directory(&paths.pin_dir)
        .load(datapath::OBJECT)
        .unwrap();
    let noop: &mut SchedClassifier = old
        .program_mut(enipin_ebpf::NOOP_PROGRAM)
        .unwrap()
        .try_into()
        .unwrap();
    noop.load().unwrap();
    onto_links(noop);
    std::fs::remove_file(paths.pin_dir.join("prog")).unwrap();
    noop.pin(paths.pin_dir.join("prog")).unwrap();
    noop.info().unwrap().id()
}

#[test]
fn redirect_makes_the_secondary_address_reachable_and_coexists() {
    let lab = Lab::new().unwrap();
    let (e1, e2) = (lab.managed[0].ifindex, lab.managed[1].ifindex);
    let (before, enipin, after) = (
        PinDir::new("enipin-dp-before-").unwrap(),
        PinDir::new("enipin-dp-").unwrap(),
        PinDir::new("enipin-dp-after-").unwrap(),
    );
    let (pb, pe, pa) = (lab.paths(&before), lab.paths(&enipin), lab.paths(&after));

    // Resolve the peer on eth0 first (the host answers 198.18.0.10 by eth0), so no reply of the check
    // below sits in the neighbour queue and leaves after the attach.
    assert_eq!(lab.ping(IP1, 1).unwrap(), (1, 1));
    // Without the datapath the vpc drops every reply: it leaves eth0 with eth1's address.
    let (sent, got) = lab.ping(IP2, 3).unwrap();
    assert_eq!(
        (sent, got),
        (3, 0),
        "replies from 198.18.0.11 must be dropped without enipin"
    );
    let dropped0 = lab.dropped().unwrap();
    assert!(
        dropped0 >= 3,
        "the vpc's source check dropped the misrouted replies ({dropped0})"
    );

    // Another TC program before enipin and one after it (copies of the enforcer in monitor mode,
    // each with its own maps), enipin enforcing in the middle.
    in_ns(lab.host(), || {
        attach(&lab.managed, Mode::Monitor, &pb).unwrap();
        attach(&lab.managed, Mode::Enforce, &pe).unwrap();
        attach(&lab.managed, Mode::Monitor, &pa).unwrap();
        assert_eq!(tcx_progs(e1).len(), 3);
        let kinds: Vec<_> = datapath::attached(&pe).unwrap();
        assert_eq!(
            kinds,
            vec![
                attached(e1, E1, AttachKind::Tcx),
                attached(e2, E2, AttachKind::Tcx)
            ]
        );
    });

    let n = 5;
    let e2_replies0 = lab.e2_replies().unwrap();
    let (sent, got) = lab.ping(IP2, n).unwrap();
    assert_eq!(
        (sent, got),
        (n, n),
        "every ping to the secondary address is answered via eth1"
    );
    let (sent1, got1) = lab.ping(IP1, n).unwrap();
    assert_eq!((sent1, got1), (n, n), "the primary address still answers");
    assert_eq!(
        lab.e2_replies().unwrap() - e2_replies0,
        n as u64,
        "replies carry eth1's MAC and address"
    );
    assert_eq!(
        lab.dropped().unwrap(),
        dropped0,
        "nothing misrouted reaches the vpc"
    );

    in_ns(lab.host(), || {
        let (b1, x1, a1) = (counters(&pb, e1), counters(&pe, e1), counters(&pa, e1));
        let x2 = counters(&pe, e2);
        let a2 = counters(&pa, e2);
        // enipin: exactly the replies from 198.18.0.11 were misrouted on eth0 and redirected.
        assert_eq!(x1.misrouted_packets, n as u64, "enipin eth0: {x1:?}");
        assert_eq!(
            x1.redirect_failed + x1.mtu_exceeded,
            0,
            "enipin eth0: {x1:?}"
        );
        assert_eq!(
            x1.owned_here, n as u64,
            "enipin eth0: replies from 198.18.0.10: {x1:?}"
        );
        // A redirected packet runs eth1's egress hook again, where it is owned.
        assert_eq!(x2.owned_here, n as u64, "enipin eth1: {x2:?}");
        assert_eq!(x2.misrouted_packets, 0, "enipin eth1: {x2:?}");
        // The program before enipin saw everything (monitor mode only counts).
        assert_eq!(b1.misrouted_packets, n as u64, "before eth0: {b1:?}");
        // The one after enipin still runs for what enipin passes (TCX_NEXT), never sees what it
        // redirected on eth0, and sees the redirected packets again on eth1.
        assert_eq!(a1.misrouted_packets, 0, "after eth0: {a1:?}");
        assert_eq!(a1.owned_here, n as u64, "after eth0: {a1:?}");
        assert_eq!(a2.owned_here, n as u64, "after eth1: {a2:?}");

        let text = enipin::observe::metrics::exposition(&pe).unwrap();
        let line =
            format!("enipin_misrouted_packets_total{{interface=\"{E1}\",ifindex=\"{e1}\"}} {n}");
        assert!(text.contains(&line), "metrics lack {line}:\n{text}");
        assert!(
            text.contains("# TYPE enipin_misrouted_packets_total counter"),
            "{text}"
        );

        // Detach enipin: its links and pins go, the others stay.
        let progs_before: BTreeSet<u32> = tcx_progs(e1).into_iter().collect();
        let removed = datapath::detach(&pe).unwrap();
        assert!(!removed.is_empty());
        assert!(!pe.pin_dir.exists(), "pin dir removed");
        assert_eq!(tcx_progs(e1).len(), 2, "the other programs stay on eth0");
        assert_eq!(tcx_progs(e2).len(), 2, "the other programs stay on eth1");
        assert!(tcx_progs(e1).iter().all(|p| progs_before.contains(p)));
        assert!(
            datapath::detach(&pe).unwrap().is_empty(),
            "second detach is a no-op"
        );
        assert!(datapath::attached(&pe).unwrap().is_empty());
        assert!(datapath::counters(&pe).is_err(), "no counters without pins");
    });

    // Enforcement gone: the replies are dropped again.
    let (_, got) = lab.ping(IP2, 2).unwrap();
    assert_eq!(
        got, 0,
        "after detach the secondary address is unreachable again"
    );

    in_ns(lab.host(), || {
        datapath::detach(&pb).unwrap();
        datapath::detach(&pa).unwrap();
        assert!(
            tcx_progs(e1).is_empty() && tcx_progs(e2).is_empty(),
            "no links left"
        );
    });
}

#[test]
fn second_attach_adopts_what_is_pinned() {
    let lab = Lab::new().unwrap();
    let pins = PinDir::new("enipin-dp-adopt-").unwrap();
    let paths = lab.paths(&pins);
    let e1 = lab.managed[0].ifindex;
    in_ns(lab.host(), || {
        let first = datapath::plan(&lab.managed, &cfg(Mode::Enforce), &paths).unwrap();
        assert!(
            first.lines().iter().any(|c| c.starts_with("+ load")),
            "{:?}",
            first.lines()
        );
        assert_eq!(
            first
                .lines()
                .iter()
                .filter(|c| c.starts_with("+ attach"))
                .count(),
            2
        );
        datapath::apply(first, &lab.managed, &cfg(Mode::Enforce), &paths).unwrap();
        let prog = tcx_progs(e1);

        // The enforcement outlives the loader: nothing of this process holds it now.
        let again = datapath::plan(&lab.managed, &cfg(Mode::Enforce), &paths).unwrap();
        assert!(
            again.is_empty(),
            "second attach with no change: {:?}",
            again.lines()
        );
        datapath::apply(again, &lab.managed, &cfg(Mode::Enforce), &paths).unwrap();
        assert_eq!(tcx_progs(e1), prog, "same program, same link");

        // A new address on eth1 and a delegated prefix: map updates only.
        let mut more = lab.managed.clone();
        more[1].addrs.push(Cidr {
            addr: "198.18.0.3".parse().unwrap(),
            prefix_len: 24,
        });
        more[1].prefixes.push(enipin::model::Cidr {
            addr: "198.18.1.16".parse().unwrap(),
            prefix_len: 28,
        });
        more[1].addrs.push(Cidr {
            addr: "2001:db8::3".parse::<IpAddr>().unwrap(),
            prefix_len: 64,
        });
        let plan = datapath::plan(&more, &cfg(Mode::Enforce), &paths).unwrap();
        assert_eq!(
            plan.lines(),
            vec![
                format!("+ owner 198.18.0.3 -> {E2}"),
                format!("+ owner 2001:db8::3 -> {E2}"),
                format!("+ prefix 198.18.1.16/28 -> {E2}"),
                // The program now looks IPv4 prefixes up (it skips that while there are none).
                "~ config mode=enforce debug=0 prefixes=v4".to_string(),
            ]
        );
        datapath::apply(plan, &more, &cfg(Mode::Enforce), &paths).unwrap();
        assert!(
            datapath::plan(&more, &cfg(Mode::Enforce), &paths)
                .unwrap()
                .is_empty()
        );
        // Mode switch: the config entry only.
        let plan = datapath::plan(&more, &cfg(Mode::Monitor), &paths).unwrap();
        assert_eq!(
            plan.lines(),
            vec!["~ config mode=monitor debug=0 prefixes=v4".to_string()]
        );
        datapath::apply(plan, &more, &cfg(Mode::Monitor), &paths).unwrap();
        assert_eq!(tcx_progs(e1), prog, "still the same program and link");

        // Back to the original set: the extra entries go, and the prefix lookup with them.
        let plan = datapath::plan(&lab.managed, &cfg(Mode::Monitor), &paths).unwrap();
        assert_eq!(plan.lines().len(), 4, "{:?}", plan.lines());
        assert_eq!(
            plan.lines()[3],
            "~ config mode=monitor debug=0 prefixes=none"
        );
        assert!(
            plan.lines()[..3].iter().all(|c| c.starts_with("- ")),
            "{:?}",
            plan.lines()
        );
        datapath::apply(plan, &lab.managed, &cfg(Mode::Monitor), &paths).unwrap();

        // Managing only eth0 detaches eth1 (and drops its counters).
        let plan = datapath::plan(&lab.managed[..1], &cfg(Mode::Monitor), &paths).unwrap();
        assert!(
            plan.lines().iter().any(|c| c.starts_with("- detach")),
            "{:?}",
            plan.lines()
        );
        datapath::apply(plan, &lab.managed[..1], &cfg(Mode::Monitor), &paths).unwrap();
        assert!(tcx_progs(lab.managed[1].ifindex).is_empty());
        assert_eq!(datapath::attached(&paths).unwrap().len(), 1);

        // Detach removes the rest.
        let removed = datapath::detach(&paths).unwrap();
        assert!(removed.iter().any(|l| l.contains(E1)), "{removed:?}");
        assert!(!paths.pin_dir.exists());
        assert!(tcx_progs(e1).is_empty());
        // Empty desired state: nothing to do, nothing pinned.
        assert!(
            datapath::plan(&[], &cfg(Mode::Enforce), &paths)
                .unwrap()
                .is_empty()
        );
    });
}

#[test]
fn a_different_pinned_program_is_replaced_atomically() {
    use aya::programs::{
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
    };
    let lab = Lab::new().unwrap();
    let pins = PinDir::new("enipin-dp-replace-").unwrap();
    let paths = lab.paths(&pins);
    let (e1, e2) = (lab.managed[0].ifindex, lab.managed[1].ifindex);
    in_ns(lab.host(), || {
        attach(&lab.managed, Mode::Enforce, &paths).unwrap();
        let link_id = |ifindex: u32| {
            FdLink::from(
                PinnedLink::from_pin(paths.pin_dir.join(format!("link-{ifindex}"))).unwrap(),
            )
            .info()
            .unwrap()
            .id()
        };
        let links = (link_id(e1), link_id(e2));

        // Stand in for an older enipin: its pinned program (a pass-all classifier) on both links.
        let noop_id = older_build(&paths, |noop| {
            for ifindex in [e1, e2] {
                let link = FdLink::from(
                    PinnedLink::from_pin(paths.pin_dir.join(format!("link-{ifindex}"))).unwrap(),
                );
                let id = noop
                    .attach_to_link(SchedClassifierLink::try_from(link).unwrap())
                    .unwrap();
                drop(noop.take_link(id).unwrap());
            }
        });
        assert_eq!(tcx_progs(e1), vec![noop_id]);

        let plan = datapath::plan(&lab.managed, &cfg(Mode::Enforce), &paths).unwrap();
        assert_eq!(
            plan.lines(),
            vec![format!("~ replace {} (new build)", enipin_ebpf::PROGRAM)]
        );
        datapath::apply(plan, &lab.managed, &cfg(Mode::Enforce), &paths).unwrap();
        for ifindex in [e1, e2] {
            let progs = SchedClassifier::query_tcx(ifindex, TcAttachType::Egress)
                .unwrap()
                .1;
            assert_eq!(progs.len(), 1, "one program on the hook, never two or none");
            assert_eq!(progs[0].name_as_str(), Some(enipin_ebpf::PROGRAM));
        }
        assert_eq!(
            (link_id(e1), link_id(e2)),
            links,
            "the same links, updated in place"
        );
        settled_and_enforcing(&lab, &paths);
        datapath::detach(&paths).unwrap();
    });
}

/// After a program swap: the pinned program is the one on every managed link, nothing is left to
/// plan, and it enforces (a ping to the secondary address is answered). Returns the program.
fn settled_and_enforcing(lab: &Lab, paths: &Paths) -> aya::programs::ProgramInfo {
    let prog = aya::programs::ProgramInfo::from_pin(paths.pin_dir.join("prog")).unwrap();
    for m in &lab.managed {
        assert_eq!(
            tcx_progs(m.ifindex),
            vec![prog.id()],
            "the pinned program is the attached one"
        );
    }
    assert!(
        datapath::plan(&lab.managed, &cfg(Mode::Enforce), paths)
            .unwrap()
            .is_empty()
    );
    let (_, got) = lab.ping(IP2, 2).unwrap();
    assert_eq!(got, 2);
    prog
}

/// An upgrade: maps pinned by an older enipin with another layout are replaced and the program
/// swapped on the same links, in one attach; a failed attach pins the old maps back.
#[test]
fn maps_of_another_layout_are_recreated_on_attach() {
    use aya::maps::{Array, MapData, MapInfo};
    let lab = Lab::new().unwrap();
    let pins = PinDir::new("enipin-dp-layout-").unwrap();
    let paths = lab.paths(&pins);
    let mut ghost = lab.managed[1].clone();
    ghost.ifindex = 999_999;
    ghost.name = "ghost".into();
    in_ns(lab.host(), || {
        attach(&lab.managed, Mode::Enforce, &paths).unwrap();
        // Stand in for an older enipin whose config entry was 8 bytes.
        let cfg_pin = paths.pin_dir.join(enipin_ebpf::maps::CONFIG);
        std::fs::remove_file(&cfg_pin).unwrap();
        Array::<MapData, [u8; 8]>::create(1, 0)
            .unwrap()
            .pin(&cfg_pin)
            .unwrap();
        let old_id = MapInfo::from_pin(&cfg_pin).unwrap().id();
        let recreate = format!(
            "~ recreate map {} (pinned by another enipin version: value size 8 -> {} bytes)",
            enipin_ebpf::maps::CONFIG,
            std::mem::size_of::<enipin_ebpf::Config>()
        );

        // A failed upgrade puts the old map back.
        let with_ghost = vec![
            lab.managed[0].clone(),
            lab.managed[1].clone(),
            ghost.clone(),
        ];
        let plan = datapath::plan(&with_ghost, &cfg(Mode::Enforce), &paths).unwrap();
        assert!(plan.lines().contains(&recreate), "{:?}", plan.lines());
        assert!(datapath::apply(plan, &with_ghost, &cfg(Mode::Enforce), &paths).is_err());
        assert_eq!(MapInfo::from_pin(&cfg_pin).unwrap().id(), old_id);

        let plan = datapath::plan(&lab.managed, &cfg(Mode::Enforce), &paths).unwrap();
        assert_eq!(
            plan.lines(),
            vec![
                recreate.clone(),
                format!("~ replace {} (new build)", enipin_ebpf::PROGRAM),
                "~ config mode=enforce debug=0 prefixes=none".to_string(),
            ]
        );
        datapath::apply(plan, &lab.managed, &cfg(Mode::Enforce), &paths).unwrap();
        let new = MapInfo::from_pin(&cfg_pin).unwrap();
        assert_eq!(
            new.value_size() as usize,
            std::mem::size_of::<enipin_ebpf::Config>()
        );
        // The program on the links is the pinned one, and it reads the new map.
        let prog = settled_and_enforcing(&lab, &paths);
        assert!(prog.map_ids().unwrap().unwrap().contains(&new.id()));
        datapath::detach(&paths).unwrap();
    });
}

#[test]
fn a_failed_apply_is_rolled_back() {
    let lab = Lab::new().unwrap();
    let pins = PinDir::new("enipin-dp-rollback-").unwrap();
    let paths = lab.paths(&pins);
    let (e1, e2) = (lab.managed[0].ifindex, lab.managed[1].ifindex);
    let mut ghost = lab.managed[1].clone();
    ghost.ifindex = 999_999;
    ghost.name = "ghost".into();
    ghost.addrs = vec![Cidr {
        addr: "198.18.0.9".parse().unwrap(),
        prefix_len: 24,
    }];
    in_ns(lab.host(), || {
        // Fresh: nothing may stay behind.
        let with_ghost = vec![
            lab.managed[0].clone(),
            lab.managed[1].clone(),
            ghost.clone(),
        ];
        let plan = datapath::plan(&with_ghost, &cfg(Mode::Enforce), &paths).unwrap();
        let err = datapath::apply(plan, &with_ghost, &cfg(Mode::Enforce), &paths).unwrap_err();
        assert!(format!("{err:#}").contains("ghost"), "{err:#}");
        assert!(!paths.pin_dir.exists(), "pin dir left behind");
        assert!(
            tcx_progs(e1).is_empty() && tcx_progs(e2).is_empty(),
            "links left behind"
        );

        // On top of an attachment: the maps are restored, the existing links untouched.
        attach(&lab.managed, Mode::Enforce, &paths).unwrap();
        let progs = (tcx_progs(e1), tcx_progs(e2));
        let plan = datapath::plan(&with_ghost, &cfg(Mode::Monitor), &paths).unwrap();
        assert!(datapath::apply(plan, &with_ghost, &cfg(Mode::Monitor), &paths).is_err());
        let after = datapath::plan(&lab.managed, &cfg(Mode::Enforce), &paths).unwrap();
        assert!(
            after.is_empty(),
            "state changed by a failed apply: {:?}",
            after.lines()
        );
        assert_eq!((tcx_progs(e1), tcx_progs(e2)), progs);
        datapath::detach(&paths).unwrap();
    });
}

#[test]
fn stats_and_metrics_from_the_cli() {
    use std::{
        io::{BufRead as _, BufReader, Read as _, Write as _},
        process::Stdio,
    };
    let lab = Lab::new().unwrap();
    // The CLI and the library on the same pins and state.
    let enipin = Enipin::in_ns(lab.host());
    let paths = enipin.paths();
    let e1 = lab.managed[0].ifindex;
    let cli = |args: &[&str]| enipin.command(args);
    // Nothing attached: stats fails and says why (not an empty table that reads "no traffic").
    let out = cli(&["stats"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("enipin attach"),
        "{out:?}"
    );

    in_ns(lab.host(), || {
        attach(&lab.managed, Mode::Enforce, &paths).unwrap()
    });
    let (_, got) = lab.ping(IP2, 3).unwrap();
    assert_eq!(got, 3);

    // status: the owner tables the program reads, one entry per managed address. The library
    // attached without a state file: status says so, and exits 1 (what it would restore on
    // detach is not recorded).
    let out = cli(&["status", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state_missing"], true, "{status}");
    let count = |v4: bool| {
        lab.managed
            .iter()
            .flat_map(|m| &m.addrs)
            .filter(|a| a.addr.is_ipv4() == v4)
            .count()
    };
    for (family, v4) in [("ipv4", true), ("ipv6", false)] {
        let t = &status["owner_tables"][family];
        assert_eq!(t["addresses"], count(v4), "{status}");
        assert_eq!(t["spilled_buckets"], 0, "{status}");
    }
    let text = cli(&["status"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains(&format!(
            "owner table IPv4: {} address(es), 0 bucket(s) spilled",
            count(true)
        )),
        "{text:?}"
    );

    let out = cli(&["stats", "--json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["schema_version"], 1, "{stats}");
    let rows = &stats["interfaces"];
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["interface"] == E1)
        .expect("row for eth0");
    assert_eq!(row["ifindex"], e1);
    assert_eq!(row["misrouted_packets"], 3, "{row}");
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["ifindex"] == 0 && r["interface"] == "unknown")
    );
    let table = cli(&["stats"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&table.stdout)
            .lines()
            .any(|l| l.starts_with(&format!("{E1} "))),
        "{table:?}"
    );

    let line = format!("enipin_misrouted_packets_total{{interface=\"{E1}\",ifindex=\"{e1}\"}} 3");
    let out = cli(&["metrics"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&line),
        "{out:?}"
    );

    // --listen: a scrape over HTTP inside the host namespace.
    let mut server = cli(&["metrics", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let addr = banner
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .map(str::to_owned);
    let body = addr.map(|addr| {
        in_ns(lab.host(), || {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            body
        })
    });
    server.kill().unwrap();
    server.wait().unwrap();
    let body = body.unwrap_or_else(|| panic!("no listen banner: {banner:?}"));
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains(&line), "{body}");
    in_ns(lab.host(), || datapath::detach(&paths).unwrap());
}

#[test]
fn a_vanished_interface_leaves_a_stale_link_that_the_next_attach_removes() {
    let lab = Lab::new().unwrap();
    let pins = PinDir::new("enipin-dp-gone-").unwrap();
    let paths = lab.paths(&pins);
    let (e1, e2) = (lab.managed[0].ifindex, lab.managed[1].ifindex);
    in_ns(lab.host(), || {
        attach(&lab.managed, Mode::Enforce, &paths).unwrap();
        // The ENI is detached from the instance: the interface disappears, its link goes defunct.
        lab.host().ip(&["link", "del", E2]).unwrap();
        let attached = datapath::attached(&paths).unwrap();
        assert_eq!(attached, vec![self::attached(e1, E1, AttachKind::Tcx)]);
        let plan = datapath::plan(&lab.managed[..1], &cfg(Mode::Enforce), &paths).unwrap();
        let stale = format!(
            "- detach {} from ifindex {e2} (link-{e2})",
            enipin_ebpf::PROGRAM
        );
        assert!(plan.lines().contains(&stale), "{:?}", plan.lines());
        assert!(
            plan.lines().contains(&format!("- owner {IP2}")),
            "{:?}",
            plan.lines()
        );
        datapath::apply(plan, &lab.managed[..1], &cfg(Mode::Enforce), &paths).unwrap();
        assert!(!paths.pin_dir.join(format!("link-{e2}")).exists());
        let again = datapath::plan(&lab.managed[..1], &cfg(Mode::Enforce), &paths).unwrap();
        assert!(again.is_empty(), "{:?}", again.lines());
        datapath::detach(&paths).unwrap();
        assert!(tcx_progs(e1).is_empty());
    });
}

/// IPv6 echo replies leave by the interface the request came in on (icmpv6_echo_reply sets the
/// output interface), so here the host originates: a ping from 2001:db8::11 bound to the address,
/// not the device, follows the main table out of eth0.
#[test]
fn ipv6_from_a_secondary_address_is_redirected() {
    let lab = Lab::new().unwrap();
    let pins = PinDir::new("enipin-dp-v6-").unwrap();
    let paths = lab.paths(&pins);
    let e1 = lab.managed[0].ifindex;
    let from2 = ["-6", "-I", IP6_2, PEER6];
    // Resolve the peer on eth0 first (from eth0's own address), so no probe of the check below sits
    // in the neighbour queue and leaves after the attach.
    assert_eq!(
        lab.host().pings(&["-6", "-I", IP6_1, PEER6], 1).unwrap(),
        (1, 1)
    );
    let (_, got) = lab.host().pings(&from2, 2).unwrap();
    assert_eq!(
        got, 0,
        "without enipin, packets from 2001:db8::11 leave by eth0 and are dropped"
    );
    in_ns(lab.host(), || {
        attach(&lab.managed, Mode::Enforce, &paths).unwrap()
    });
    let n = 4;
    let dropped = lab.dropped().unwrap();
    assert_eq!(lab.host().pings(&from2, n).unwrap(), (n, n));
    assert_eq!(
        lab.dropped().unwrap(),
        dropped,
        "nothing misrouted reaches the vpc"
    );
    // Forget the peer on eth0: the next ping resolves it again, through the attached program.
    lab.host().ip(&["-6", "neigh", "flush", "dev", E1]).unwrap();
    assert_eq!(
        lab.host().pings(&["-6", "-I", IP6_1, PEER6], n).unwrap(),
        (n, n)
    );
    in_ns(lab.host(), || {
        let c = counters(&paths, e1);
        assert_eq!(c.misrouted_packets, n as u64, "{c:?}");
        assert_eq!(c.owned_here, n as u64, "{c:?}");
        assert!(c.skipped > 0, "neighbour discovery passed untouched: {c:?}");
        datapath::detach(&paths).unwrap();
    });
}

/// Kernels without TCX (< 6.6, e.g. Amazon Linux 2023's 6.1) take the clsact path: forced here on
/// the `attach` choice. Another agent's filter on the same hook (a second enforcer copy in monitor
/// mode, with its own pins: same program name, so removal by name would take it too) keeps running
/// and survives enipin's detach, as does the qdisc.
#[test]
fn netlink_fallback_coexists_with_foreign_filters() {
    let lab = Lab::new().unwrap();
    let (pins, other) = (
        PinDir::new("enipin-dp-nl-").unwrap(),
        PinDir::new("enipin-dp-nlo-").unwrap(),
    );
    let (paths, po) = (lab.paths(&pins), lab.paths(&other));
    let (e1, e2) = (lab.managed[0].ifindex, lab.managed[1].ifindex);
    let filters = |dev: &str| {
        lab.host()
            .sh(&format!("tc filter show dev {dev} egress"))
            .unwrap()
    };
    let ours = |dev: &str| {
        filters(dev)
            .lines()
            .filter(|l| l.contains(enipin_ebpf::PROGRAM))
            .count()
    };
    assert_eq!(lab.ping(IP1, 1).unwrap(), (1, 1));
    in_ns(lab.host(), || {
        attach_with(&lab.managed, &netlink(Mode::Monitor), &po).unwrap();
        attach_with(&lab.managed, &netlink(Mode::Enforce), &paths).unwrap();
        let kinds = datapath::attached(&paths).unwrap();
        assert_eq!(
            kinds,
            vec![
                attached(e1, E1, AttachKind::Netlink),
                attached(e2, E2, AttachKind::Netlink)
            ]
        );
        assert!(
            tcx_progs(e1).is_empty(),
            "no TCX link on the forced netlink path"
        );
        let again = datapath::plan(&lab.managed, &cfg(Mode::Enforce), &paths).unwrap();
        assert!(again.is_empty(), "{:?}", again.lines());

        // An older build's program in enipin's filters: replaced in place (same priority and
        // handle), never a second filter.
        use aya::programs::tc::SchedClassifierLink;
        older_build(&paths, |noop| {
            for entry in std::fs::read_dir(&paths.pin_dir).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                let Some(rest) = name.strip_prefix("nl-") else {
                    continue;
                };
                let v: Vec<u32> = rest.split('-').map(|x| x.parse().unwrap()).collect();
                let link = SchedClassifierLink::attached(
                    v[0],
                    TcAttachType::Egress.into(),
                    v[1] as u16,
                    v[2].into(),
                    None,
                )
                .unwrap();
                let id = noop.attach_to_link(link).unwrap();
                std::mem::forget(noop.take_link(id).unwrap());
            }
        });
        let plan = datapath::plan(&lab.managed, &cfg(Mode::Enforce), &paths).unwrap();
        assert_eq!(
            plan.lines(),
            vec![format!("~ replace {} (new build)", enipin_ebpf::PROGRAM)]
        );
        datapath::apply(plan, &lab.managed, &cfg(Mode::Enforce), &paths).unwrap();
    });
    assert_eq!((ours(E1), ours(E2)), (2, 2), "{}", filters(E1));
    assert!(
        !filters(E1).contains(enipin_ebpf::NOOP_PROGRAM),
        "{}",
        filters(E1)
    );

    let n = 4;
    assert_eq!(
        lab.ping(IP2, n).unwrap(),
        (n, n),
        "enforced through the clsact filter"
    );
    in_ns(lab.host(), || {
        assert_eq!(counters(&paths, e1).misrouted_packets, n as u64);
        let (o1, o2) = (counters(&po, e1), counters(&po, e2));
        assert!(
            o1.owned_here + o2.owned_here >= n as u64,
            "the other filter runs: {o1:?} {o2:?}"
        );
        let removed = datapath::detach(&paths).unwrap();
        assert!(removed.iter().any(|l| l.contains(E2)), "{removed:?}");
        assert!(!paths.pin_dir.exists());
        assert_eq!(
            datapath::attached(&po).unwrap().len(),
            2,
            "the other filters are still recorded"
        );
    });
    assert_eq!(
        (ours(E1), ours(E2)),
        (1, 1),
        "only enipin's own filters went: {}",
        filters(E1)
    );
    assert!(
        lab.host()
            .sh(&format!("tc qdisc show dev {E1}"))
            .unwrap()
            .contains("clsact")
    );
    let (_, got) = lab.ping(IP2, 2).unwrap();
    assert_eq!(
        got, 0,
        "detached: misrouted again (the monitor copy only counts)"
    );
    in_ns(lab.host(), || datapath::detach(&po).unwrap());
    assert_eq!((ours(E1), ours(E2)), (0, 0));
    // The copy that added the qdiscs (the first to attach) removed them with its last filter:
    // nothing of either is left. Before, every detach left the qdisc enipin had added.
    let qdisc = |dev: &str| lab.host().sh(&format!("tc qdisc show dev {dev}")).unwrap();
    assert!(!qdisc(E1).contains("clsact"), "{}", qdisc(E1));
    assert!(!qdisc(E2).contains("clsact"), "{}", qdisc(E2));

    // A qdisc enipin added that another agent's filter uses by the time enipin detaches: kept.
    in_ns(lab.host(), || {
        attach_with(&lab.managed, &netlink(Mode::Enforce), &paths).unwrap();
        attach_with(&lab.managed, &netlink(Mode::Monitor), &po).unwrap();
        datapath::detach(&paths).unwrap();
        assert!(!paths.pin_dir.exists());
    });
    assert_eq!((ours(E1), ours(E2)), (1, 1), "{}", filters(E1));
    assert!(qdisc(E1).contains("clsact"), "the other's filter keeps it");
    in_ns(lab.host(), || datapath::detach(&po).unwrap());
}

/// An attach killed between recording a clsact qdisc as enipin's and adding it leaves a record
/// without a qdisc (the record goes first since a kill 500 ms into an attach in a 5.10 guest
/// landed between the two, leaving the qdisc unrecorded for good); a qdisc deleted by hand does
/// the same. Detach then removes the record and leaves nothing.
#[test]
fn a_clsact_record_without_its_qdisc_detaches_cleanly() {
    let lab = Lab::new().unwrap();
    let pins = PinDir::new("enipin-dp-nlr-").unwrap();
    let paths = lab.paths(&pins);
    in_ns(lab.host(), || {
        attach_with(&lab.managed, &netlink(Mode::Enforce), &paths).unwrap()
    });
    let e1 = lab.managed[0].ifindex;
    assert!(paths.pin_dir.join(format!("clsact-{e1}")).is_dir());
    lab.host()
        .sh(&format!("tc qdisc del dev {E1} clsact"))
        .unwrap();
    in_ns(lab.host(), || datapath::detach(&paths).unwrap());
    assert!(!paths.pin_dir.exists());
    for dev in [E1, E2] {
        let q = lab.host().sh(&format!("tc qdisc show dev {dev}")).unwrap();
        assert!(!q.contains("clsact"), "{dev}: {q}");
    }
}

/// With enipin's rules routing the owner (`rules` on, the owner's table known), a redirect takes
/// its next hop from the owner's table: here (the rules layer itself is not installed) a table
/// written by hand, whose default route goes through the peer, which holds the off-subnet
/// address itself. A reply from that address shows the frame reached the peer's MAC: the
/// kernel's full lookup would send it by the main table's default route through eth1, to
/// 198.18.0.1 (the vpc, with no route there). A next hop whose neighbour is not resolved yet takes
/// the full lookup, which queues the packet correctly. With `--no-rules` the entry goes.
#[test]
fn with_rules_the_redirect_takes_its_next_hop_from_the_owners_table() {
    const OFF_SUBNET: &str = "198.19.0.7";
    let lab = Lab::new().unwrap();
    let pins = PinDir::new("enipin-dp-nh-").unwrap();
    let paths = lab.paths(&pins);
    let (e1, e2) = (lab.managed[0].ifindex, lab.managed[1].ifindex);
    let peer = lab.topo.spec.peer_v4.to_string();
    let (host, peer_ns) = (lab.host(), lab.topo.peer());
    peer_ns
        .ip(&["addr", "add", &format!("{OFF_SUBNET}/32"), "dev", "eth0"])
        .unwrap();
    let table = (20000 + e2).to_string();
    for route in [
        vec!["route", "add", "198.18.0.0/24", "dev", E2, "src", IP2],
        vec!["route", "add", "default", "via", &peer, "dev", E2],
        vec!["-6", "route", "add", "2001:db8::/64", "dev", E2],
    ] {
        host.ip(&[route, vec!["table", &table]].concat()).unwrap();
    }
    // bpf_fib_lookup answers only for an interface that forwards (it is made for routers); a
    // host running DNAT'd containers does (Docker turns forwarding on). Where the owner does not
    // forward, the lookup would only cost every redirect before the full one: no next hop. What
    // `attach` discovers (the link's devconf over netlink) decides it.
    let enipin = Enipin::in_ns(host);
    let planned_hops = || {
        // Another table base: the test wrote its own routes into 20000 + ifindex.
        let args = ["attach", "--dry-run", "--table-base", "30000"];
        let out = enipin.command(&args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("next hop"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // Off explicitly: a new namespace takes IPv4's defaults from the root namespace's.
    for (family, dev) in [("ipv4", E1), ("ipv6", E1), ("ipv4", E2), ("ipv6", E2)] {
        host.sysctl(&format!("net.{family}.conf.{dev}.forwarding"), "0")
            .unwrap();
    }
    assert_eq!(planned_hops(), Vec::<String>::new(), "nothing forwards");
    let mut managed = lab.managed.clone();
    managed[1].table = 20000 + e2;
    let rules = cfg(Mode::Enforce);
    assert!(rules.rules, "the default installs the rules");
    in_ns(host, || {
        let plan = datapath::plan(&managed, &rules, &paths).unwrap();
        assert!(
            !plan.lines().iter().any(|l| l.contains("next hop")),
            "{:?}",
            plan.lines()
        );
    });
    // IPv4 only (Docker turns on IPv4 forwarding alone): the IPv6 lookup would be refused, so
    // the next hop serves IPv4 alone.
    host.sysctl(&format!("net.ipv4.conf.{E2}.forwarding"), "1")
        .unwrap();
    assert_eq!(
        planned_hops(),
        [format!(
            "+ next hop onto {E2} from table {} for IPv4 only (redirects skip the full route \
             lookup)",
            30000 + e2
        )]
    );
    host.sysctl(&format!("net.ipv6.conf.{E2}.forwarding"), "1")
        .unwrap();
    let dry = planned_hops();
    assert_eq!(dry.len(), 1, "{dry:?}");
    assert!(
        dry[0].starts_with(&format!("+ next hop onto {E2} from table ")),
        "{dry:?}"
    );
    managed[1].forwarding = Forwarding::BOTH;
    let off_subnet = |n| peer_ns.pings(&["-I", OFF_SUBNET, IP2], n).unwrap();
    // Resolve the peer on eth0 first (from eth0's own address).
    assert_eq!(lab.ping(IP1, 1).unwrap(), (1, 1));
    in_ns(host, || {
        let plan = datapath::plan(&managed, &rules, &paths).unwrap();
        let hops: Vec<String> = plan
            .lines()
            .into_iter()
            .filter(|l| l.contains("next hop"))
            .collect();
        assert_eq!(
            hops,
            [format!(
                "+ next hop onto {E2} from table {table} (redirects skip the full route lookup)"
            )]
        );
        datapath::apply(plan, &managed, &rules, &paths).unwrap();
    });
    let n = 3;
    // The table's gateway resolved on eth1, as the owner's own traffic through it would: until
    // then the program cannot hand it over (see the neighbour case below).
    assert_eq!(host.pings(&["-I", IP2, &peer], 1).unwrap(), (1, 1));
    // The program writes the resolved next hop's MAC itself and sends the frame as it is, past
    // the neighbour output: a stale entry stays stale (the neighbour output would move it to
    // DELAY, then probe it).
    let state = || host.ip(&["neigh", "show", &peer, "dev", E2]).unwrap();
    host.ip(&["neigh", "change", &peer, "dev", E2, "nud", "stale"])
        .unwrap();
    assert!(state().contains("STALE"), "{}", state());
    assert_eq!(off_subnet(n), (n, n), "through the stale next hop");
    assert!(
        state().contains("STALE"),
        "no neighbour output: {}",
        state()
    );
    let dropped = lab.dropped().unwrap();
    let before = in_ns(host, || counters(&paths, e1));
    assert_eq!(
        off_subnet(n),
        (n, n),
        "off the subnet the frame reaches the table's gateway (the peer's MAC)"
    );
    assert_eq!(lab.ping(IP2, n).unwrap(), (n, n), "on the subnet too");
    // Neighbours not resolved on the owner (but on eth0): the first packets take the full
    // lookup and wait for the neighbour on eth1, then leave with eth1's MAC.
    for (flags, from, to) in [(["-4"], IP2, peer.as_str()), (["-6"], IP6_2, PEER6)] {
        host.ip(&[&flags[..], &["neigh", "flush", "dev", E2]].concat())
            .unwrap();
        assert_eq!(
            host.pings(&[flags[0], "-I", from, to], n).unwrap(),
            (n, n),
            "{from} -> {to} with the neighbour unresolved"
        );
    }
    assert_eq!(
        lab.dropped().unwrap(),
        dropped,
        "nothing misrouted reaches the vpc"
    );
    in_ns(host, || {
        let c = counters(&paths, e1).since(&before);
        assert_eq!(c.misrouted_packets, 4 * n as u64, "{c:?}");
        assert_eq!(c.redirect_failed + c.mtu_exceeded, 0, "{c:?}");

        // --no-rules: someone else routes the owner, so its entry goes.
        let no_rules = Config {
            rules: false,
            ..cfg(Mode::Enforce)
        };
        let plan = datapath::plan(&managed, &no_rules, &paths).unwrap();
        assert_eq!(
            plan.lines(),
            [format!(
                "- next hop onto ifindex {e2} (redirects look the route up again)"
            )]
        );
        datapath::apply(plan, &managed, &no_rules, &paths).unwrap();
        assert!(
            datapath::plan(&managed, &no_rules, &paths)
                .unwrap()
                .is_empty()
        );
    });
    assert_eq!(
        off_subnet(2),
        (2, 0),
        "the full lookup does not use the table"
    );
    assert_eq!(
        lab.ping(IP2, n).unwrap(),
        (n, n),
        "on the subnet it still works"
    );
    in_ns(host, || datapath::detach(&paths).unwrap());
}
