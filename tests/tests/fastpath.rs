//! The "owned here" fast path (an interface's first own addresses in a per-ifindex array) is
//! derived from the owner maps by the applier: addresses beyond it still pass as owned here
//! through the hash, and an address that moves to another interface stops being "here" at once.
//! The owner tables are derived the same way: a bucket that overflows sends the program to the
//! owner map, and every change swaps in a whole new table.

use std::net::{IpAddr, Ipv4Addr};

use aya::maps::{HashMap, Map, MapData};
use enipin::{
    datapath,
    model::{Cidr, ManagedInterface},
    settings::config::{Config, Paths},
};
use enipin_ebpf::{BUCKET_V4, Bucket, Counters, Owner, PROGRAM, bucket_index, maps, words};
use enipin_tests::{TC_ACT_REDIRECT, TC_ACT_UNSPEC, VethBed, frames, in_ns, require, test_run};
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);

fn addr(last: u8) -> Cidr {
    Cidr {
        addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)),
        prefix_len: 24,
    }
}

fn eni(ifindex: u32, name: &str, addrs: Vec<Cidr>) -> ManagedInterface {
    ManagedInterface::fixture(ifindex, name, addrs)
}

/// Runs the pinned program once on a UDP frame from `src` leaving by `ifindex`: its return code
/// and the counters of `ifindex` that moved.
fn run(paths: &Paths, ifindex: u32, src: Ipv4Addr) -> (u32, Counters) {
    let count = || {
        datapath::counters(paths)
            .unwrap()
            .into_iter()
            .find(|(i, _)| *i == ifindex)
            .map(|(_, c)| c)
            .unwrap_or_default()
    };
    let before = count();
    let bpf = datapath::load(&paths.pin_dir).unwrap();
    let frame = frames::ipv4_udp(frames::MAC_B, src, PEER, &[], 18);
    let r = test_run(&bpf, PROGRAM, ifindex, &frame, 1).unwrap();
    (r.return_value, count().since(&before))
}

/// A namespace with a veth pair e0/e1 (both "ENIs" here) and a private pin directory.
struct Bed {
    veth: VethBed,
    e0: u32,
    e1: u32,
}

impl Bed {
    fn new(prefix: &str) -> Self {
        require();
        let veth = VethBed::new(&format!("{prefix}-"), &[("e0", "e1")]).unwrap();
        let (e0, e1) = (veth.ifindex("e0").unwrap(), veth.ifindex("e1").unwrap());
        Self { veth, e0, e1 }
    }
}

/// What `enipin attach` does to the datapath for `managed` (the default config).
fn apply(paths: &Paths, managed: &[ManagedInterface]) {
    let cfg = Config::default();
    let plan = datapath::plan(managed, &cfg, paths).unwrap();
    datapath::apply(plan, managed, &cfg, paths).unwrap();
}

#[test]
fn fast_path_follows_the_owner_maps() {
    let bed = Bed::new("enipin-fast");
    let (ns, e0, e1, paths) = (&bed.veth.ns, bed.e0, bed.e1, &bed.veth.paths);
    let apply = |managed: &[ManagedInterface]| apply(paths, managed);
    let ip = |last| Ipv4Addr::new(198, 18, 0, last);
    let here = |(ret, c): (u32, Counters)| ret == TC_ACT_UNSPEC && c.owned_here == 1;
    let redirected = |(ret, c): (u32, Counters)| ret == TC_ACT_REDIRECT && c.misrouted_packets == 1;

    in_ns(ns, || {
        // e0 owns ten addresses: more than the fast path holds (8).
        apply(&[
            eni(e0, "e0", (10..20).map(addr).collect()),
            eni(e1, "e1", vec![addr(50)]),
        ]);
        for last in 10..20 {
            assert!(
                here(run(paths, e0, ip(last))),
                "198.18.0.{last} on e0 is not owned here"
            );
            assert!(
                redirected(run(paths, e1, ip(last))),
                "198.18.0.{last} on e1 not redirected"
            );
        }
        assert!(redirected(run(paths, e0, ip(50))));

        // .10 moves to e1 (the first of e0's fast-path addresses): it is misrouted on e0 now.
        apply(&[
            eni(e0, "e0", (11..20).map(addr).collect()),
            eni(e1, "e1", vec![addr(10), addr(50)]),
        ]);
        assert!(
            redirected(run(paths, e0, ip(10))),
            ".10 still passes as e0's own"
        );
        assert!(here(run(paths, e1, ip(10))));
        assert!(here(run(paths, e0, ip(19))));

        // Managing nothing removes everything, the fast path included.
        apply(&[]);
        assert!(!paths.pin_dir.exists(), "pins left after managing nothing");
    });
}

#[test]
fn owner_table_spills_to_the_owner_map_and_is_swapped_whole() {
    let bed = Bed::new("enipin-table");
    let (ns, e0, e1, paths) = (&bed.veth.ns, bed.e0, bed.e1, &bed.veth.paths);
    let apply = |managed: &[ManagedInterface]| apply(paths, managed);
    let table = || {
        datapath::owner_table::<4, BUCKET_V4>(paths, maps::TABLE_V4)
            .unwrap()
            .expect("no owner table swapped in")
    };
    let here = |(ret, c): (u32, Counters)| ret == TC_ACT_UNSPEC && c.owned_here == 1;
    let redirected = |(ret, c): (u32, Counters)| ret == TC_ACT_REDIRECT && c.misrouted_packets == 1;

    // Eleven addresses of 198.18.0.0/16 that share one bucket of eight.
    let bucket = bucket_index(words(&[198, 18, 0, 1]));
    let same: Vec<Ipv4Addr> = (0..=u16::MAX)
        .map(|i| Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8))
        .filter(|a| bucket_index(words(&a.octets())) == bucket)
        .take(BUCKET_V4 + 3)
        .collect();
    let ifaddr = |a: &Ipv4Addr| Cidr {
        addr: IpAddr::V4(*a),
        prefix_len: 16,
    };
    let lone = Ipv4Addr::new(198, 19, 0, 50);

    in_ns(ns, || {
        apply(&[
            eni(e0, "e0", same.iter().map(ifaddr).collect()),
            eni(e1, "e1", vec![ifaddr(&lone)]),
        ]);
        let datapath::OwnerTable {
            map_id: id,
            buckets,
        } = table();
        let b: &Bucket<4, BUCKET_V4> = &buckets[bucket as usize];
        assert_eq!(
            b.spill,
            1,
            "{} addresses in one bucket of {BUCKET_V4}",
            same.len()
        );
        assert!(b.ifindex.iter().all(|i| *i == e0));
        // Every address is found, in the bucket or (the spilled three) in the owner map.
        for a in &same {
            assert!(redirected(run(paths, e1, *a)), "{a} on e1 not redirected");
            assert!(here(run(paths, e0, *a)), "{a} on e0 not owned here");
        }
        assert!(redirected(run(paths, e0, lone)));
        let (ret, c) = run(paths, e0, Ipv4Addr::new(198, 19, 0, 51));
        assert!(
            ret == TC_ACT_UNSPEC && c.not_owned == 1,
            "an unowned source"
        );

        // The same state again: the table is left as it is.
        apply(&[
            eni(e0, "e0", same.iter().map(ifaddr).collect()),
            eni(e1, "e1", vec![ifaddr(&lone)]),
        ]);
        assert_eq!(table().map_id, id, "an unchanged table was rebuilt");

        // The lone address moves to e0: a new table (a new inner map) is swapped in.
        apply(&[
            eni(e0, "e0", same.iter().chain([&lone]).map(ifaddr).collect()),
            eni(e1, "e1", vec![ifaddr(&Ipv4Addr::new(198, 19, 0, 60))]),
        ]);
        let datapath::OwnerTable {
            map_id: id2,
            buckets,
        } = table();
        assert_ne!(id2, id, "a changed table was edited in place");
        let lb = &buckets[bucket_index(words(&lone.octets())) as usize];
        let at = lb.addrs.iter().position(|a| *a == lone.octets()).unwrap();
        assert_eq!(lb.ifindex[at], e0);
        assert!(redirected(run(paths, e1, lone)));
        assert!(here(run(paths, e0, lone)));

        // White box: the program answers from the table, and from the owner map only for a
        // spilled bucket. Remove two addresses from the owner map behind the applier's back: the
        // one still in the bucket keeps being redirected, the spilled one is no longer owned.
        let mut sorted = same.clone();
        sorted.sort();
        let (kept, spilled) = (sorted[0], sorted[BUCKET_V4]);
        let pin = paths.pin_dir.join(maps::OWNERS_V4);
        let map = Map::from_map_data(MapData::from_pin(&pin).unwrap()).unwrap();
        let mut owners: HashMap<_, [u8; 4], Owner> = HashMap::try_from(map).unwrap();
        owners.remove(&kept.octets()).unwrap();
        owners.remove(&spilled.octets()).unwrap();
        assert!(
            redirected(run(paths, e1, kept)),
            "{kept}: not read from the table"
        );
        let (ret, c) = run(paths, e1, spilled);
        assert!(
            ret == TC_ACT_UNSPEC && c.not_owned == 1,
            "{spilled}: spilled, yet found without the owner map"
        );
        apply(&[]);
        assert!(!paths.pin_dir.exists(), "pins left after managing nothing");
    });
}

/// The fast-path array and the owner table are derived from the owner maps; if a run was cut
/// between the two (killed, power lost), the next plan says so and applying it rebuilds them.
#[test]
fn derived_maps_out_of_step_are_planned_and_rebuilt() {
    use aya::maps::{Array, ArrayOfMaps};
    use enipin_ebpf::{LOCAL_V4, Local};
    let bed = Bed::new("enipin-resync");
    let (ns, e0, e1, paths) = (&bed.veth.ns, bed.e0, bed.e1, &bed.veth.paths);
    let managed = [
        eni(e0, "e0", vec![addr(10), addr(11)]),
        eni(e1, "e1", vec![addr(50)]),
    ];
    let open = |name: &str| {
        Map::from_map_data(MapData::from_pin(paths.pin_dir.join(name)).unwrap()).unwrap()
    };
    in_ns(ns, || {
        apply(paths, &managed);
        let cfg = Config::default();
        assert!(datapath::plan(&managed, &cfg, paths).unwrap().is_empty());
        let good = datapath::owner_table::<4, BUCKET_V4>(paths, maps::TABLE_V4)
            .unwrap()
            .unwrap();

        // As a run cut short would leave them: e0's fast-path slot empty, an empty table.
        let mut local: Array<_, Local<4, LOCAL_V4>> =
            Array::try_from(open(maps::LOCAL_V4)).unwrap();
        local.set(e0, &Local::default(), 0).unwrap();
        let empty =
            Array::<MapData, Bucket<4, BUCKET_V4>>::create(enipin_ebpf::TABLE_BUCKETS, 0).unwrap();
        let mut outer: ArrayOfMaps<_, Array<MapData, Bucket<4, BUCKET_V4>>> =
            ArrayOfMaps::try_from(open(maps::TABLE_V4)).unwrap();
        outer.set(0, &empty, 0).unwrap();
        // .11 is now found by neither: it passes as not owned on e1 instead of being redirected.
        let (ret, c) = run(paths, e1, Ipv4Addr::new(198, 18, 0, 11));
        assert!(ret == TC_ACT_UNSPEC && c.not_owned == 1);

        let plan = datapath::plan(&managed, &cfg, paths).unwrap();
        assert_eq!(
            plan.lines(),
            vec![
                format!(
                    "~ rebuild {} (out of step with the owner maps: an earlier run was interrupted)",
                    maps::LOCAL_V4
                ),
                format!(
                    "~ rebuild {} (out of step with the owner maps: an earlier run was interrupted)",
                    maps::TABLE_V4
                ),
            ]
        );
        datapath::apply(plan, &managed, &cfg, paths).unwrap();
        assert!(datapath::plan(&managed, &cfg, paths).unwrap().is_empty());
        let now = datapath::owner_table::<4, BUCKET_V4>(paths, maps::TABLE_V4)
            .unwrap()
            .unwrap();
        assert!(now.buckets == good.buckets, "the rebuilt table differs");
        let (ret, c) = run(paths, e1, Ipv4Addr::new(198, 18, 0, 11));
        assert!(ret == TC_ACT_REDIRECT && c.misrouted_packets == 1);
        let (ret, c) = run(paths, e0, Ipv4Addr::new(198, 18, 0, 11));
        assert!(ret == TC_ACT_UNSPEC && c.owned_here == 1);
        apply(paths, &[]);
    });
}
