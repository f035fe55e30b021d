//! The "owned here" fast path (an interface's first own addresses in a per-ifindex array) is
//! derived from the owner maps by the applier: addresses beyond it still pass as owned here
//! through the hash, and an address that moves to another interface stops being "here" at once.

use std::net::{IpAddr, Ipv4Addr};

use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
use enipin::{
    config::{Config, Paths},
    ebpf,
    model::{IfAddr, ManagedInterface},
};
use enipin_ebpf::{Counters, PROGRAM};
use enipin_tests::{Netns, PinDir, frames, in_ns, require};

const TC_ACT_UNSPEC: u32 = -1i32 as u32;
const TC_ACT_REDIRECT: u32 = 7;
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);

fn addr(last: u8) -> IfAddr {
    IfAddr {
        addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)),
        prefix_len: 24,
    }
}

fn eni(ifindex: u32, name: &str, addrs: Vec<IfAddr>) -> ManagedInterface {
    ManagedInterface {
        ifindex,
        name: name.into(),
        mac: [2, 0, 0, 0, 0, ifindex as u8],
        mtu: 1500,
        table: 20000 + ifindex,
        addrs,
        prefixes: Vec::new(),
        gateway_v4: None,
        gateway_v6: None,
    }
}

/// Runs the pinned program once on a UDP frame from `src` leaving by `ifindex`: its return code
/// and the counters of `ifindex` that moved.
fn run(paths: &Paths, ifindex: u32, src: Ipv4Addr) -> (u32, Counters) {
    let count = || {
        ebpf::counters(paths)
            .unwrap()
            .into_iter()
            .find(|(i, _)| *i == ifindex)
            .map(|(_, c)| c)
            .unwrap_or_default()
    };
    let before = count();
    let bpf = ebpf::load(&paths.pin_dir).unwrap();
    let prog: &SchedClassifier = bpf.program(PROGRAM).unwrap().try_into().unwrap();
    let frame = frames::ipv4_udp(frames::MAC_B, src, PEER, &[], 18);
    let ctx = frames::skb_ctx(ifindex);
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        })
        .unwrap();
    let (a, b) = (count().values(), before.values());
    let moved = Counters {
        misrouted_packets: a[0] - b[0],
        owned_here: a[4] - b[4],
        not_owned: a[5] - b[5],
        ..Counters::default()
    };
    (r.return_value, moved)
}

#[test]
fn fast_path_follows_the_owner_maps() {
    require();
    let ns = Netns::new("enipin-fast-").unwrap();
    ns.ip(&["link", "add", "e0", "type", "veth", "peer", "name", "e1"])
        .unwrap();
    ns.ip(&["link", "set", "e0", "up"]).unwrap();
    ns.ip(&["link", "set", "e1", "up"]).unwrap();
    let (e0, e1) = (ns.ifindex("e0").unwrap(), ns.ifindex("e1").unwrap());
    let pins = PinDir::new("enipin-fast-pin-").unwrap();
    let paths = Paths {
        pin_dir: pins.path().to_owned(),
        state_dir: std::env::temp_dir(),
    };
    let cfg = Config::default();
    let apply = |managed: &[ManagedInterface]| {
        let plan = ebpf::plan(managed, &cfg, &paths).unwrap();
        ebpf::apply(plan, managed, &cfg, &paths).unwrap();
    };
    let ip = |last| Ipv4Addr::new(198, 18, 0, last);
    let here = |(ret, c): (u32, Counters)| ret == TC_ACT_UNSPEC && c.owned_here == 1;
    let redirected = |(ret, c): (u32, Counters)| ret == TC_ACT_REDIRECT && c.misrouted_packets == 1;

    in_ns(&ns, || {
        // e0 owns ten addresses: more than the fast path holds (8).
        apply(&[
            eni(e0, "e0", (10..20).map(addr).collect()),
            eni(e1, "e1", vec![addr(50)]),
        ]);
        for last in 10..20 {
            assert!(
                here(run(&paths, e0, ip(last))),
                "198.18.0.{last} on e0 is not owned here"
            );
            assert!(
                redirected(run(&paths, e1, ip(last))),
                "198.18.0.{last} on e1 not redirected"
            );
        }
        assert!(redirected(run(&paths, e0, ip(50))));

        // .10 moves to e1 (the first of e0's fast-path addresses): it is misrouted on e0 now.
        apply(&[
            eni(e0, "e0", (11..20).map(addr).collect()),
            eni(e1, "e1", vec![addr(10), addr(50)]),
        ]);
        assert!(
            redirected(run(&paths, e0, ip(10))),
            ".10 still passes as e0's own"
        );
        assert!(here(run(&paths, e1, ip(10))));
        assert!(here(run(&paths, e0, ip(19))));

        // Managing nothing removes everything, the fast path included.
        apply(&[]);
        assert!(!paths.pin_dir.exists(), "pins left after managing nothing");
    });
}
