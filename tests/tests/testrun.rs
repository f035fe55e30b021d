//! The TC egress enforcer under BPF_PROG_TEST_RUN: every branch of the classifier on crafted
//! frames, with the return code and the counter deltas asserted.
//!
//! Each test builds a namespace with three veth pairs (the "ENIs" e1, e2, e3 and their peers),
//! loads the object WITHOUT attaching it, maps pinned in its own pin directory, and runs the
//! program from a thread inside that namespace: test-run resolves `ctx_in.ifindex` (the "current"
//! interface) and the helpers' target ifindex (bpf_check_mtu) in the caller's namespace.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, PerCpuHashMap, PerCpuValues, lpm_trie::Key},
    programs::SchedClassifier,
};
use enipin::datapath;
use enipin_ebpf::{
    Config, Counters, MODE_ENFORCE, MODE_MONITOR, NEXT_HOP_V4, NEXT_HOP_V6, NextHop, Owner,
    PREFIXES_V4_PRESENT, PREFIXES_V6_PRESENT, PROGRAM, maps,
};
use enipin_tests::{TC_ACT_REDIRECT, TC_ACT_UNSPEC, VethBed, frames, in_ns};

/// The next hop's MAC: the frames' destination.
const GW_MAC: [u8; 6] = frames::MAC_B;

const IP_E1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const IP_E2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const IP_E3: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// Owned by an interface that does not exist (the redirect must fail open).
const IP_GONE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);
const IP_NOBODY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 77);
/// e2's delegated /28 and an address inside and outside it.
const PFX4: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 1, 16), 28);
const IN_PFX4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 20);
const OUT_PFX4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 40);
const IP6_E1: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const IP6_E2: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const PFX6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 2, 0, 0, 0), 80);
const IN_PFX6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 2, 0, 0, 5);
const OUT_PFX6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 3, 0, 0, 5);
/// e3's MTU: smaller than the others', for the MTU branch.
const E3_MTU: u32 = 1280;

// ---------------------------------------------------------------- frames

const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x200);

/// Ethernet + IPv4 with an `ihl`-word header (options zero: end-of-list) + UDP, `total` bytes
/// long (at least the headers).
fn ipv4_to(dst_mac: [u8; 6], src: Ipv4Addr, ihl: u8, total: usize) -> Vec<u8> {
    let options = vec![0; (ihl as usize - 5) * 4];
    let payload = total.saturating_sub(14 + ihl as usize * 4 + 8);
    frames::ipv4_udp(dst_mac, src, PEER, &options, payload)
}

fn ipv4(src: Ipv4Addr) -> Vec<u8> {
    ipv4_to(GW_MAC, src, 5, 64)
}

/// Ethernet + IPv6 + UDP, 80 bytes.
fn ipv6(src: Ipv6Addr) -> Vec<u8> {
    frames::ipv6_udp(GW_MAC, src, PEER6, 18)
}

fn icmp6(src: Ipv6Addr, ty: u8) -> Vec<u8> {
    frames::icmpv6(GW_MAC, src, PEER6, ty)
}

fn arp() -> Vec<u8> {
    frames::arp(IP_E2, PEER)
}

/// A tagged IPv4 frame from a misrouted source, tag protocol `tpid` (802.1Q or 802.1ad).
fn vlan(tpid: u16) -> Vec<u8> {
    let mut f = frames::vlan_ipv4(GW_MAC, IP_E2, PEER);
    f[12..14].copy_from_slice(&tpid.to_be_bytes());
    f
}

/// `frame` zero-padded (Ethernet padding) to at least `len` bytes.
fn padded(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    if frame.len() < len {
        frame.resize(len, 0);
    }
    frame
}

// ---------------------------------------------------------------- fixture

struct Fx {
    bed: VethBed,
    e1: u32,
    e2: u32,
    e3: u32,
    /// A real interface that is not managed: its packets count in the "unknown" slot 0.
    p1: u32,
}

impl Fx {
    fn new() -> Result<Self> {
        enipin::lab::preflight()?;
        let bed = VethBed::new("dptr", &[("e1", "p1"), ("e2", "p2"), ("e3", "p3")])?;
        bed.ns
            .ip(&["link", "set", "e3", "mtu", &E3_MTU.to_string()])?;
        bed.create_pin_dir()?;
        Ok(Self {
            e1: bed.ifindex("e1")?,
            e2: bed.ifindex("e2")?,
            e3: bed.ifindex("e3")?,
            p1: bed.ifindex("p1")?,
            bed,
        })
    }

    /// Loads the program (not attached) and fills its maps as user space would.
    fn load(&self, mode: u32) -> Result<Ebpf> {
        self.load_with(mode, true)
    }

    /// [`Fx::load`], with the program's `bpf_check_mtu` path (`true`: kernels >= 5.12) or the
    /// one it takes on kernels without the helper (its own MTU check).
    fn load_with(&self, mode: u32, have_check_mtu: bool) -> Result<Ebpf> {
        let have = u32::from(have_check_mtu);
        let mut bpf = EbpfLoader::new()
            .default_map_pin_directory(&self.bed.paths.pin_dir)
            .override_global(enipin_ebpf::HAVE_CHECK_MTU, &have, true)
            .load(datapath::OBJECT)?;
        let prog: &mut SchedClassifier =
            bpf.program_mut(PROGRAM).context("no program")?.try_into()?;
        prog.load()?;
        let o1 = Owner {
            ifindex: self.e1,
            mtu: 1500,
        };
        let o2 = Owner {
            ifindex: self.e2,
            mtu: 1500,
        };
        let o3 = Owner {
            ifindex: self.e3,
            mtu: E3_MTU,
        };
        let gone = Owner {
            ifindex: 99_999,
            mtu: 1500,
        };
        let mut v4: HashMap<_, [u8; 4], Owner> =
            HashMap::try_from(bpf.map_mut(maps::OWNERS_V4).unwrap())?;
        for (ip, o) in [(IP_E1, o1), (IP_E2, o2), (IP_E3, o3), (IP_GONE, gone)] {
            v4.insert(&ip.octets(), &o, 0)?;
        }
        let mut v6: HashMap<_, [u8; 16], Owner> =
            HashMap::try_from(bpf.map_mut(maps::OWNERS_V6).unwrap())?;
        v6.insert(&IP6_E1.octets(), &o1, 0)?;
        v6.insert(&IP6_E2.octets(), &o2, 0)?;
        let mut p4: LpmTrie<_, [u8; 4], Owner> =
            LpmTrie::try_from(bpf.map_mut(maps::PREFIXES_V4).unwrap())?;
        p4.insert(&Key::new(PFX4.1.into(), PFX4.0.octets()), &o2, 0)?;
        let mut p6: LpmTrie<_, [u8; 16], Owner> =
            LpmTrie::try_from(bpf.map_mut(maps::PREFIXES_V6).unwrap())?;
        p6.insert(&Key::new(PFX6.1.into(), PFX6.0.octets()), &o2, 0)?;
        let mut cnt: PerCpuHashMap<_, u32, Counters> =
            PerCpuHashMap::try_from(bpf.map_mut(maps::COUNTERS).unwrap())?;
        let cpus = aya::util::nr_cpus().unwrap().get() as usize;
        for k in [0, self.e1, self.e2, self.e3] {
            cnt.insert(
                &k,
                PerCpuValues::try_from(vec![Counters::default(); cpus])?,
                0,
            )?;
        }
        let mut cfg: Array<_, Config> = Array::try_from(bpf.map_mut(maps::CONFIG).unwrap())?;
        cfg.set(
            0,
            &Config {
                mode,
                debug: 0,
                prefixes: PREFIXES_V4_PRESENT | PREFIXES_V6_PRESENT,
            },
            0,
        )?;
        // What the applier derives from the owner maps: the fast-path arrays, the owner tables.
        datapath::sync_derived(&mut bpf)?;
        Ok(bpf)
    }

    fn counters(&self, ifindex: u32) -> Counters {
        datapath::counters(&self.bed.paths)
            .unwrap()
            .into_iter()
            .find(|(i, _)| *i == ifindex)
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("no counters for ifindex {ifindex}"))
    }
}

fn run(
    bpf: &Ebpf,
    ifindex: u32,
    frame: &[u8],
    repeat: u32,
) -> Result<aya::programs::TestRunResult> {
    enipin_tests::test_run(bpf, PROGRAM, ifindex, frame, repeat)
}

/// Runs one frame on `ifindex` and asserts the return code and that exactly `want` moved.
fn check(fx: &Fx, bpf: &Ebpf, what: &str, ifindex: u32, frame: &[u8], ret: u32, want: Counters) {
    let before = fx.counters(ifindex_slot(fx, ifindex));
    let r =
        run(bpf, ifindex, frame, 1).unwrap_or_else(|e| panic!("{what}: test-run failed: {e:#}"));
    let got = fx.counters(ifindex_slot(fx, ifindex)).since(&before);
    assert_eq!(r.return_value, ret, "{what}: return code");
    assert_eq!(got, want, "{what}: counter deltas");
}

fn ifindex_slot(fx: &Fx, ifindex: u32) -> u32 {
    if [fx.e1, fx.e2, fx.e3].contains(&ifindex) {
        ifindex
    } else {
        0
    }
}

fn misrouted(len: usize) -> Counters {
    Counters {
        misrouted_packets: 1,
        misrouted_bytes: len as u64,
        ..Default::default()
    }
}
const OWNED: Counters = Counters {
    owned_here: 1,
    ..Counters::ZERO
};
const NOT_OWNED: Counters = Counters {
    not_owned: 1,
    ..Counters::ZERO
};
const NON_IP: Counters = Counters {
    non_ip: 1,
    ..Counters::ZERO
};
const SKIPPED: Counters = Counters {
    skipped: 1,
    ..Counters::ZERO
};
const MALFORMED: Counters = Counters {
    malformed: 1,
    ..Counters::ZERO
};

// ---------------------------------------------------------------- tests

#[test]
fn every_branch_returns_the_right_verdict_and_counts_it() {
    let fx = Fx::new().unwrap();
    in_ns(&fx.bed.ns, || {
        let bpf = fx.load(MODE_ENFORCE).unwrap();
        let e1 = fx.e1;
        let (u, r) = (TC_ACT_UNSPEC, TC_ACT_REDIRECT);
        let f = ipv4(IP_E1);
        check(&fx, &bpf, "v4 owned here", e1, &f, u, OWNED);
        let f = ipv4(IP_E2);
        check(
            &fx,
            &bpf,
            "v4 owned by e2: redirect",
            e1,
            &f,
            r,
            misrouted(f.len()),
        );
        let f = ipv4(IP_E1);
        check(
            &fx,
            &bpf,
            "v4 e1's address leaving e2: redirect",
            fx.e2,
            &f,
            r,
            misrouted(f.len()),
        );
        let f = ipv4(IN_PFX4);
        check(
            &fx,
            &bpf,
            "v4 in e2's delegated /28",
            e1,
            &f,
            r,
            misrouted(f.len()),
        );
        check(
            &fx,
            &bpf,
            "v4 outside the /28",
            e1,
            &ipv4(OUT_PFX4),
            u,
            NOT_OWNED,
        );
        check(&fx, &bpf, "v4 nobody's", e1, &ipv4(IP_NOBODY), u, NOT_OWNED);
        for ihl in [6, 10, 15] {
            let f = ipv4_to(GW_MAC, IP_E2, ihl, 100);
            check(
                &fx,
                &bpf,
                &format!("v4 with options (ihl {ihl})"),
                e1,
                &f,
                r,
                misrouted(f.len()),
            );
        }
        let f = ipv6(IP6_E2);
        check(&fx, &bpf, "v6 owned by e2", e1, &f, r, misrouted(f.len()));
        check(&fx, &bpf, "v6 owned here", e1, &ipv6(IP6_E1), u, OWNED);
        let f = ipv6(IN_PFX6);
        check(
            &fx,
            &bpf,
            "v6 in e2's delegated /80",
            e1,
            &f,
            r,
            misrouted(f.len()),
        );
        check(
            &fx,
            &bpf,
            "v6 outside the /80",
            e1,
            &ipv6(OUT_PFX6),
            u,
            NOT_OWNED,
        );
        let f = icmp6(IP6_E2, 128);
        check(
            &fx,
            &bpf,
            "v6 echo request from e2's address",
            e1,
            &f,
            r,
            misrouted(f.len()),
        );
        for ty in 133..=137 {
            check(
                &fx,
                &bpf,
                &format!("v6 neighbour discovery type {ty}"),
                e1,
                &icmp6(IP6_E2, ty),
                u,
                SKIPPED,
            );
        }
        check(
            &fx,
            &bpf,
            "v6 link-local source",
            e1,
            &ipv6("fe80::2".parse().unwrap()),
            u,
            SKIPPED,
        );
        check(
            &fx,
            &bpf,
            "v6 link-local source febf::",
            e1,
            &ipv6("febf::2".parse().unwrap()),
            u,
            SKIPPED,
        );
        check(
            &fx,
            &bpf,
            "v6 unspecified source (DAD)",
            e1,
            &ipv6(Ipv6Addr::UNSPECIFIED),
            u,
            SKIPPED,
        );
        check(&fx, &bpf, "ARP", e1, &arp(), u, NON_IP);
        let mut lldp = vec![0x01, 0x80, 0xc2, 0, 0, 0x0e];
        lldp.extend_from_slice(&frames::MAC_A);
        lldp.extend_from_slice(&0x88ccu16.to_be_bytes());
        lldp.resize(60, 0);
        check(&fx, &bpf, "LLDP", e1, &lldp, u, NON_IP);
        check(&fx, &bpf, "802.1Q tagged", e1, &vlan(0x8100), u, SKIPPED);
        check(&fx, &bpf, "802.1ad tagged", e1, &vlan(0x88a8), u, SKIPPED);
        check(
            &fx,
            &bpf,
            "broadcast destination",
            e1,
            &ipv4_to([0xff; 6], IP_E2, 5, 64),
            u,
            SKIPPED,
        );
        check(
            &fx,
            &bpf,
            "multicast destination",
            e1,
            &ipv4_to([0x01, 0, 0x5e, 0, 0, 1], IP_E2, 5, 64),
            u,
            SKIPPED,
        );
        check(
            &fx,
            &bpf,
            "v6 multicast destination",
            e1,
            &frames::ipv6_udp([0x33, 0x33, 0, 0, 0, 1], IP6_E2, PEER6, 18),
            u,
            SKIPPED,
        );
        // Headers that lie.
        let mut f = ipv4(IP_E2);
        f[14] = 0x65; // version 6 in an IPv4 ethertype
        check(&fx, &bpf, "v4 ethertype, version 6", e1, &f, u, MALFORMED);
        let mut f = ipv4(IP_E2);
        f[14] = 0x44; // ihl 4 < 5
        check(&fx, &bpf, "v4 ihl 4", e1, &f, u, MALFORMED);
        let mut f = ipv4_to(GW_MAC, IP_E2, 5, 64);
        f[14] = 0x4f; // ihl 15: options run past the end of the 64-byte frame
        check(&fx, &bpf, "v4 options past the end", e1, &f, u, MALFORMED);
        let mut f = ipv6(IP6_E2);
        f[14] = 0x40;
        check(&fx, &bpf, "v6 ethertype, version 4", e1, &f, u, MALFORMED);
        // An interface without counters of its own counts in slot 0.
        check(
            &fx,
            &bpf,
            "unmanaged interface, slot 0",
            fx.p1,
            &ipv4(IP_NOBODY),
            u,
            NOT_OWNED,
        );
        let f = ipv4(IP_E2);
        check(
            &fx,
            &bpf,
            "unmanaged interface, misrouted",
            fx.p1,
            &f,
            r,
            misrouted(f.len()),
        );
    });
}

#[test]
fn redirect_fails_open_on_mtu_and_missing_owner() {
    mtu_and_missing_owner(true);
}

/// The same promises on kernels without `bpf_check_mtu` (5.10, 5.11): the program compares the
/// frame with the owner's recorded MTU itself. Before, the program called the helper
/// unconditionally and 5.10's verifier refused it (`invalid func unknown#163`).
#[test]
fn redirect_fails_open_on_mtu_without_the_check_mtu_helper() {
    mtu_and_missing_owner(false);
    // A GSO packet whose segments (20 + 8 + 1300 bytes) exceed e3's 1280: counted and passed
    // unchanged by the program's own check (the helper, flags 0, passes every GSO packet).
    let fx = Fx::new().unwrap();
    in_ns(&fx.bed.ns, || {
        let bpf = fx.load_with(MODE_ENFORCE, false).unwrap();
        let f = ipv4_to(GW_MAC, IP_E3, 5, 3000);
        let mut ctx = frames::skb_ctx(fx.e1);
        ctx[164..168].copy_from_slice(&3u32.to_ne_bytes()); // gso_segs
        ctx[176..180].copy_from_slice(&1300u32.to_ne_bytes()); // gso_size
        let before = fx.counters(fx.e1);
        let r = enipin_tests::test_run_ctx(&bpf, PROGRAM, &ctx, &f, 1).unwrap();
        assert_eq!(r.return_value, TC_ACT_UNSPEC, "segments too big: passed");
        let want = Counters {
            mtu_exceeded: 1,
            ..misrouted(3000)
        };
        assert_eq!(fx.counters(fx.e1).since(&before), want);
    });
}

fn mtu_and_missing_owner(have_check_mtu: bool) {
    let fx = Fx::new().unwrap();
    in_ns(&fx.bed.ns, || {
        let mut bpf = fx.load_with(MODE_ENFORCE, have_check_mtu).unwrap();
        // bpf_check_mtu compares the frame with the owner's MTU + its 14-byte hard header.
        let fits = E3_MTU as usize + 14;
        let f = ipv4_to(GW_MAC, IP_E3, 5, fits);
        check(
            &fx,
            &bpf,
            "exactly e3's MTU",
            fx.e1,
            &f,
            TC_ACT_REDIRECT,
            misrouted(fits),
        );
        let f = ipv4_to(GW_MAC, IP_E3, 5, fits + 1);
        let want = Counters {
            mtu_exceeded: 1,
            ..misrouted(fits + 1)
        };
        check(
            &fx,
            &bpf,
            "one byte over e3's MTU",
            fx.e1,
            &f,
            TC_ACT_UNSPEC,
            want,
        );
        // The other way round the MTU is larger: a 1400-byte frame from e1's address leaving e3
        // could never be built (the stack checks e3's MTU first), but the program must not care.
        let f = ipv4_to(GW_MAC, IP_E1, 5, 1400);
        check(
            &fx,
            &bpf,
            "to a larger MTU",
            fx.e3,
            &f,
            TC_ACT_REDIRECT,
            misrouted(1400),
        );
        let f = ipv4(IP_GONE);
        let want = Counters {
            redirect_failed: 1,
            ..misrouted(f.len())
        };
        check(
            &fx,
            &bpf,
            "owner interface gone",
            fx.e1,
            &f,
            TC_ACT_UNSPEC,
            want,
        );

        // A GSO super-packet larger than e3's MTU: redirected whole, segmented for e3 on transmit
        // (bpf_check_mtu passes GSO packets). test-run takes gso_size/gso_segs from ctx_in.
        let f = ipv4_to(GW_MAC, IP_E3, 5, 3000);
        let mut ctx = frames::skb_ctx(fx.e1);
        ctx[164..168].copy_from_slice(&3u32.to_ne_bytes()); // gso_segs
        ctx[176..180].copy_from_slice(&1200u32.to_ne_bytes()); // gso_size
        let before = fx.counters(fx.e1);
        let r = enipin_tests::test_run_ctx(&bpf, PROGRAM, &ctx, &f, 1).unwrap();
        assert_eq!(r.return_value, TC_ACT_REDIRECT, "GSO packet redirected");
        assert_eq!(fx.counters(fx.e1).since(&before), misrouted(3000));

        // Config.debug: the rare paths log through aya-log; the verdicts do not change.
        let mut cfg: Array<_, Config> =
            Array::try_from(bpf.map_mut(maps::CONFIG).unwrap()).unwrap();
        cfg.set(
            0,
            &Config {
                mode: MODE_ENFORCE,
                debug: 1,
                prefixes: PREFIXES_V4_PRESENT | PREFIXES_V6_PRESENT,
            },
            0,
        )
        .unwrap();
        let f = ipv4(IP_GONE);
        let want = Counters {
            redirect_failed: 1,
            ..misrouted(f.len())
        };
        check(
            &fx,
            &bpf,
            "owner gone, debug",
            fx.e1,
            &f,
            TC_ACT_UNSPEC,
            want,
        );
        let f = ipv4_to(GW_MAC, IP_E3, 5, fits + 1);
        let want = Counters {
            mtu_exceeded: 1,
            ..misrouted(fits + 1)
        };
        check(
            &fx,
            &bpf,
            "over e3's MTU, debug",
            fx.e1,
            &f,
            TC_ACT_UNSPEC,
            want,
        );
        check(
            &fx,
            &bpf,
            "redirect, debug",
            fx.e1,
            &ipv4(IP_E2),
            TC_ACT_REDIRECT,
            misrouted(64),
        );
    });
}

/// With the owner's table known (`maps::NEXT_HOPS`, written while enipin's rules route the
/// owner) and the next hop's neighbour resolved there, the program writes the Ethernet header
/// itself, the neighbour's MAC as destination and the owner's as source, and redirects the frame
/// as it is (`bpf_redirect`, no neighbour output). Not resolved yet: the frame leaves the program
/// untouched, for `bpf_redirect_neigh` to resolve the neighbour first. A redirect either way.
#[test]
fn a_resolved_next_hop_is_written_into_the_frame() {
    const TABLE: u32 = 20_002;
    const E2_MAC: &str = "02:00:00:00:00:e2";
    const NH_MAC: &str = "02:00:00:00:00:c8";
    let mac = |s: &str| -> Vec<u8> {
        s.split(':')
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    };
    let fx = Fx::new().unwrap();
    let ns = &fx.bed.ns;
    ns.ip(&["link", "set", "e2", "address", E2_MAC]).unwrap();
    let table = TABLE.to_string();
    for route in [["-4", "198.18.0.0/24"], ["-6", "2001:db8::/64"]] {
        ns.ip(&[
            route[0], "route", "add", route[1], "dev", "e2", "table", &table,
        ])
        .unwrap();
    }
    // bpf_fib_lookup answers only for an interface that forwards.
    for family in ["ipv4", "ipv6"] {
        ns.sysctl(&format!("net.{family}.conf.e2.forwarding"), "1")
            .unwrap();
    }
    in_ns(ns, || {
        let mut bpf = fx.load(MODE_ENFORCE).unwrap();
        let mut hops: Array<_, NextHop> =
            Array::try_from(bpf.map_mut(maps::NEXT_HOPS).unwrap()).unwrap();
        let both = NextHop {
            table: TABLE,
            families: NEXT_HOP_V4 | NEXT_HOP_V6,
            ..NextHop::default()
        };
        hops.set(fx.e2, &both, 0).unwrap();
        for (what, frame, peer) in [
            ("v4", ipv4(IP_E2), PEER.to_string()),
            ("v6", ipv6(IP6_E2), PEER6.to_string()),
        ] {
            let out = |what: &str| {
                let before = fx.counters(fx.e1);
                let ctx = frames::skb_ctx(fx.e1);
                let (r, out) = enipin_tests::test_run_out(&bpf, PROGRAM, &ctx, &frame, 1).unwrap();
                assert_eq!(r.return_value, TC_ACT_REDIRECT, "{what}: return code");
                assert_eq!(fx.counters(fx.e1).since(&before), misrouted(frame.len()));
                out
            };
            assert_eq!(
                out(&format!("{what}, neighbour unresolved")),
                frame,
                "{what}: left for bpf_redirect_neigh"
            );
            ns.ip(&[
                "neigh",
                "replace",
                &peer,
                "lladdr",
                NH_MAC,
                "dev",
                "e2",
                "nud",
                "reachable",
            ])
            .unwrap();
            let got = out(&format!("{what}, neighbour resolved"));
            assert_eq!(
                (&got[..6], &got[6..12]),
                (&mac(NH_MAC)[..], &mac(E2_MAC)[..]),
                "{what}: the neighbour's MAC, then the owner's"
            );
            assert_eq!(got[12..], frame[12..], "{what}: the rest unchanged");
        }
    });
}

/// A next hop serves only the families its owner forwards (`NextHop::families`): a redirect of
/// another family takes the full lookup at once (the frame left for `bpf_redirect_neigh` as it
/// is), however resolved its neighbour on the owner, instead of a lookup the kernel would refuse
/// (FWD_DISABLED) where the family does not forward.
#[test]
fn a_next_hop_serves_only_the_families_it_names() {
    const TABLE: u32 = 20_002;
    let fx = Fx::new().unwrap();
    let ns = &fx.bed.ns;
    let table = TABLE.to_string();
    for route in [["-4", "198.18.0.0/24"], ["-6", "2001:db8::/64"]] {
        ns.ip(&[
            route[0], "route", "add", route[1], "dev", "e2", "table", &table,
        ])
        .unwrap();
    }
    // Both families forward and both neighbours are resolved: only the flags decide.
    for family in ["ipv4", "ipv6"] {
        ns.sysctl(&format!("net.{family}.conf.e2.forwarding"), "1")
            .unwrap();
    }
    for peer in [PEER.to_string(), PEER6.to_string()] {
        ns.ip(&[
            "neigh",
            "replace",
            &peer,
            "lladdr",
            "02:00:00:00:00:c8",
            "dev",
            "e2",
            "nud",
            "reachable",
        ])
        .unwrap();
    }
    in_ns(ns, || {
        let mut bpf = fx.load(MODE_ENFORCE).unwrap();
        for (families, v4, v6) in [
            (NEXT_HOP_V4, true, false),
            (NEXT_HOP_V6, false, true),
            (NEXT_HOP_V4 | NEXT_HOP_V6, true, true),
        ] {
            let mut hops: Array<_, NextHop> =
                Array::try_from(bpf.map_mut(maps::NEXT_HOPS).unwrap()).unwrap();
            let hop = NextHop {
                table: TABLE,
                families,
                ..NextHop::default()
            };
            hops.set(fx.e2, &hop, 0).unwrap();
            for (what, frame, rewritten) in [("v4", ipv4(IP_E2), v4), ("v6", ipv6(IP6_E2), v6)] {
                let before = fx.counters(fx.e1);
                let ctx = frames::skb_ctx(fx.e1);
                let (r, out) = enipin_tests::test_run_out(&bpf, PROGRAM, &ctx, &frame, 1).unwrap();
                assert_eq!(
                    r.return_value, TC_ACT_REDIRECT,
                    "{what}, families {families}"
                );
                assert_eq!(fx.counters(fx.e1).since(&before), misrouted(frame.len()));
                assert_eq!(
                    out != frame,
                    rewritten,
                    "{what}, families {families}: MACs written from the owner's table"
                );
            }
        }
    });
}

#[test]
fn monitor_mode_counts_without_redirecting() {
    let fx = Fx::new().unwrap();
    in_ns(&fx.bed.ns, || {
        let bpf = fx.load(MODE_MONITOR).unwrap();
        for f in [
            ipv4(IP_E2),
            ipv4(IN_PFX4),
            ipv6(IP6_E2),
            ipv4_to(GW_MAC, IP_E3, 5, 1400),
        ] {
            check(
                &fx,
                &bpf,
                "monitor",
                fx.e1,
                &f,
                TC_ACT_UNSPEC,
                misrouted(f.len()),
            );
        }
        check(
            &fx,
            &bpf,
            "monitor, owned",
            fx.e1,
            &ipv4(IP_E1),
            TC_ACT_UNSPEC,
            OWNED,
        );
    });
}

#[test]
fn truncated_frames_pass_at_every_length() {
    let fx = Fx::new().unwrap();
    in_ns(&fx.bed.ns, || {
        let bpf = fx.load(MODE_ENFORCE).unwrap();
        let r = TC_ACT_REDIRECT;
        // (name, full frame, the shortest input the kernel's test-run accepts, bytes the program
        // needs to classify, return code and counter once classified)
        let cases = [
            ("v4", ipv4_to(GW_MAC, IP_E2, 5, 80), 34, 14 + 20, r, true),
            (
                "v4 ihl 15",
                ipv4_to(GW_MAC, IP_E2, 15, 82),
                34,
                14 + 60,
                r,
                true,
            ),
            ("v6 udp", ipv6(IP6_E2), 54, 14 + 40, r, true),
            (
                "v6 icmp",
                padded(icmp6(IP6_E2, 128), 80),
                54,
                14 + 40 + 1,
                r,
                true,
            ),
            ("arp", padded(arp(), 80), 14, 14, TC_ACT_UNSPEC, false),
            (
                "802.1Q",
                padded(vlan(0x8100), 80),
                14,
                14,
                TC_ACT_UNSPEC,
                false,
            ),
        ];
        for (name, frame, accepted, needed, ret, is_misrouted) in cases {
            let mut malformed = 0;
            for len in 0..=80usize {
                let f = &frame[..len];
                let what = format!("{name} truncated to {len}");
                if len < accepted {
                    // Kernel 6.18 refuses test-run input shorter than an Ethernet header plus,
                    // for IPv4/IPv6 ethertypes, the fixed IP header; such an skb never reaches
                    // TC egress on the wire either.
                    assert!(
                        run(&bpf, fx.e1, f, 1).is_err(),
                        "{what}: test-run accepted it"
                    );
                } else if len < needed {
                    check(&fx, &bpf, &what, fx.e1, f, TC_ACT_UNSPEC, MALFORMED);
                    malformed += 1;
                } else if is_misrouted {
                    check(&fx, &bpf, &what, fx.e1, f, ret, misrouted(len));
                } else {
                    let want = if name == "arp" { NON_IP } else { SKIPPED };
                    check(&fx, &bpf, &what, fx.e1, f, ret, want);
                }
            }
            eprintln!("{name}: {malformed} truncated lengths counted malformed");
        }
    });
}

/// The per-packet cost (test-run's average over many runs) of the main paths. Printed for the
/// report; asserted only loosely (the VM is shared) against the budget of a 10 Gbit/s link.
#[test]
fn per_packet_cost() {
    let fx = Fx::new().unwrap();
    in_ns(&fx.bed.ns, || {
        let bpf = fx.load(MODE_ENFORCE).unwrap();
        let repeat = 200_000;
        for (name, f) in [
            ("arp", arp()),
            ("v4 owned here", ipv4(IP_E1)),
            ("v4 not owned (prefix miss)", ipv4(IP_NOBODY)),
            ("v4 redirect", ipv4(IP_E2)),
            ("v6 redirect", ipv6(IP6_E2)),
        ] {
            let before = fx.counters(fx.e1);
            let r = run(&bpf, fx.e1, &f, repeat).unwrap();
            let moved = fx.counters(fx.e1).since(&before);
            let moved: u64 = moved.values().iter().sum::<u64>() - moved.misrouted_bytes;
            assert_eq!(moved, repeat as u64, "{name}: every run counted once");
            eprintln!("cost: {name:<28} {:>5} ns/run", r.duration.as_nanos());
            assert!(
                r.duration < Duration::from_micros(1),
                "{name}: {:?} per packet",
                r.duration
            );
        }
    });
}

extern "C" fn ignore(_: libc::c_int) {}

/// A signal for the thread running a test-run (the SIGCHLD of another test's child, once a
/// handler is installed) must not cut its repeat short: the kernel stops it with EINTR after part
/// of the runs (a flake of per_packet_cost under load; this failed before the harness blocked
/// signals around the run). Signals keep coming every millisecond through a 2e6-run repeat.
#[test]
fn a_signal_does_not_cut_a_test_run_short() {
    let fx = Fx::new().unwrap();
    in_ns(&fx.bed.ns, || {
        let bpf = fx.load(MODE_ENFORCE).unwrap();
        // SAFETY: a no-op handler for SIGUSR1, which nothing else in the tests uses.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        }
        // SAFETY: this thread's own id.
        let me = unsafe { libc::pthread_self() };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // SAFETY: `me` is joined below only after this loop ends.
                    unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let repeat = 2_000_000;
        let before = fx.counters(fx.e1);
        let r = run(&bpf, fx.e1, &ipv4(IP_E1), repeat);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sender.join().unwrap();
        r.expect("a test-run with signals arriving");
        let moved = fx.counters(fx.e1).since(&before);
        assert_eq!(moved.owned_here, repeat as u64, "every run counted once");
    });
}
