//! The owner, prefix, counter and config maps' contents: the state enipin wants, the state it
//! finds pinned, and the writes from one to the other (also the rollback's).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, PerCpuHashMap, PerCpuValues, lpm_trie::Key},
};
use enipin_ebpf::{
    Counters, FAST_SLOTS, MODE_ENFORCE, MODE_MONITOR, NEXT_HOP_V4, NEXT_HOP_V6, NextHop, ON_LINK,
    Owner, PREFIXES_V4_PRESENT, PREFIXES_V6_PRESENT, maps, words,
};

use crate::{
    settings::config::{Config, Mode, Paths},
    model::{Cidr, Forwarding, ManagedInterface},
    model::objects::MapEntry,
};

use super::{
    derived::{TableSwap, map},
    pins::Pins,
    program::{OBJECT, loader},
};

#[derive(Debug)]
pub(super) struct MapDiff<K, V> {
    pub(super) set: Vec<(K, V)>,
    pub(super) remove: Vec<K>,
}

impl<K, V> Default for MapDiff<K, V> {
    fn default() -> Self {
        Self {
            set: Vec::new(),
            remove: Vec::new(),
        }
    }
}

impl<K: Ord + Clone, V: PartialEq + Clone> MapDiff<K, V> {
    pub(super) fn new(installed: &BTreeMap<K, V>, desired: &BTreeMap<K, V>) -> Self {
        Self {
            set: desired
                .iter()
                .filter(|(k, v)| installed.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            remove: installed
                .keys()
                .filter(|k| !desired.contains_key(*k))
                .cloned()
                .collect(),
        }
    }
}

/// The datapath state enipin wants, or finds pinned.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) v4: BTreeMap<[u8; 4], Owner>,
    pub(super) v6: BTreeMap<[u8; 16], Owner>,
    pub(super) p4: BTreeMap<([u8; 4], u8), Owner>,
    pub(super) p6: BTreeMap<([u8; 16], u8), Owner>,
    pub(super) counters: BTreeMap<u32, ()>,
    /// Owner ifindex -> its next hop (`maps::NEXT_HOPS`'s non-empty slots).
    pub(super) next_hops: BTreeMap<u32, NextHop>,
    pub(super) config: Option<enipin_ebpf::Config>,
}

pub(super) fn desired(managed: &[ManagedInterface], cfg: &Config) -> State {
    let mut s = State::default();
    s.counters.insert(0, ());
    for m in managed {
        let owner = Owner {
            ifindex: m.ifindex,
            mtu: m.mtu,
        };
        s.counters.insert(m.ifindex, ());
        // Only while enipin's rules route the owner is its table what decides a redirected
        // packet's next hop; with `--no-rules` the owner's routing is someone else's (the main
        // table, another agent), so the program keeps the kernel's full route lookup. An ifindex
        // past the array (FAST_SLOTS) has no slot, and table 0 names no table: the full lookup.
        // Nor for a family the owner does not forward: the kernel's lookup refuses it
        // (FWD_DISABLED, per family), and trying cost every redirect about 100 ns in
        // BPF_PROG_TEST_RUN (a floor of 29 ns: the bench's "redirect decision" rows, +140-190
        // against +45-53 ns) only to fall back to the full lookup anyway. A host that forwards
        // (docker, with its DNAT'd replies, the redirect's hot case; often IPv4 only) gets it for
        // those families; a change of forwarding is seen by the next reconcile, and either way
        // the packet is redirected correctly.
        let families = families(m.forwarding);
        if cfg.rules && families != 0 && m.ifindex < FAST_SLOTS && m.table != 0 {
            s.next_hops.insert(
                m.ifindex,
                NextHop {
                    table: m.table,
                    families,
                    ..NextHop::default()
                },
            );
        }
        // Without the rules, the owner's gateways (`NextHop`'s second way): `plan` refused an
        // owner past the array or with more on-link networks than the entry holds.
        if !cfg.rules
            && m.ifindex < FAST_SLOTS
            && let Some(hop) = gateways(m)
        {
            s.next_hops.insert(m.ifindex, hop);
        }
        for a in &m.addrs {
            match a.addr {
                IpAddr::V4(ip) => s.v4.insert(ip.octets(), owner),
                IpAddr::V6(ip) => s.v6.insert(ip.octets(), owner),
            };
        }
        for p in &m.prefixes {
            match p.addr {
                IpAddr::V4(ip) => s.p4.insert((ip.octets(), p.prefix_len), owner),
                IpAddr::V6(ip) => s.p6.insert((ip.octets(), p.prefix_len), owner),
            };
        }
    }
    let mode = match cfg.mode {
        Mode::Enforce => MODE_ENFORCE,
        Mode::Monitor => MODE_MONITOR,
    };
    let prefixes = if s.p4.is_empty() {
        0
    } else {
        PREFIXES_V4_PRESENT
    } | if s.p6.is_empty() {
        0
    } else {
        PREFIXES_V6_PRESENT
    };
    s.config = Some(enipin_ebpf::Config {
        mode,
        debug: cfg.debug.into(),
        prefixes,
    });
    s
}

impl State {
    /// Every entry, by identity.
    pub(super) fn entries(&self) -> Vec<MapEntry> {
        let v4 = self
            .v4
            .keys()
            .map(|k| MapEntry::Owner(Ipv4Addr::from(*k).into()));
        let v6 = self
            .v6
            .keys()
            .map(|k| MapEntry::Owner(Ipv6Addr::from(*k).into()));
        let p4 = (self.p4.keys()).map(|(k, l)| MapEntry::Prefix(Ipv4Addr::from(*k).into(), *l));
        let p6 = (self.p6.keys()).map(|(k, l)| MapEntry::Prefix(Ipv6Addr::from(*k).into(), *l));
        let counters = self.counters.keys().map(|i| MapEntry::Counters(*i));
        let hops = self.next_hops.keys().map(|i| MapEntry::NextHop(*i));
        let config = self.config.map(|_| MapEntry::Config);
        v4.chain(v6)
            .chain(p4)
            .chain(p6)
            .chain(counters)
            .chain(hops)
            .chain(config)
            .collect()
    }
}

/// The `--no-rules` entry of `m`: its gateways and the networks of its addresses; `None` when it
/// has no gateway (every destination is then the kernel's lookup).
pub(crate) fn gateways(m: &ManagedInterface) -> Option<NextHop> {
    if m.gateway_v4.is_none() && m.gateway_v6.is_none() {
        return None;
    }
    let mut hop = NextHop::default();
    if let Some(IpAddr::V4(gw)) = m.gateway_v4.map(|g| g.addr) {
        hop.gateway_v4 = words(&gw.octets()).0 as u32;
    }
    if let Some(IpAddr::V6(gw)) = m.gateway_v6.map(|g| g.addr) {
        let (a, b) = words(&gw.octets());
        hop.gateway_v6 = [a, b];
    }
    for net in on_link(m) {
        match (net.addr, mask(&net)) {
            (IpAddr::V4(a), IpAddr::V4(k)) if (hop.on_link_v4_len as usize) < ON_LINK => {
                let w = |ip: Ipv4Addr| words(&ip.octets()).0 as u32;
                hop.on_link_v4[hop.on_link_v4_len as usize] = [w(a), w(k)];
                hop.on_link_v4_len += 1;
            }
            (IpAddr::V6(a), IpAddr::V6(k)) if (hop.on_link_v6_len as usize) < ON_LINK => {
                let w = |ip: Ipv6Addr| <[u64; 2]>::from(words(&ip.octets()));
                hop.on_link_v6[hop.on_link_v6_len as usize] = [w(a), w(k)];
                hop.on_link_v6_len += 1;
            }
            _ => {}
        }
    }
    Some(hop)
}

/// The networks of `m`'s addresses (not its /32 or /128 ones), each once: where its subnet routes
/// reach.
pub(crate) fn on_link(m: &ManagedInterface) -> Vec<Cidr> {
    let mut nets: Vec<Cidr> = (m.addrs.iter())
        .filter(|a| a.prefix_len < a.host_len())
        .map(Cidr::network)
        .collect();
    nets.sort();
    nets.dedup();
    nets
}

/// The netmask of `c` as an address of its family.
fn mask(c: &Cidr) -> IpAddr {
    match c.addr {
        IpAddr::V4(_) => Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(c.prefix_len))
                .unwrap_or(0),
        )
        .into(),
        IpAddr::V6(_) => Ipv6Addr::from(
            u128::MAX
                .checked_shl(128 - u32::from(c.prefix_len))
                .unwrap_or(0),
        )
        .into(),
    }
}

/// `NextHop::families` for an owner that forwards `f`.
fn families(f: Forwarding) -> u32 {
    (u32::from(f.v4) * NEXT_HOP_V4) | (u32::from(f.v6) * NEXT_HOP_V6)
}

/// What is pinned (the rollback's "before" and "now"); a map of another layout reads as absent.
pub(super) fn installed(pins: &Pins) -> Result<State> {
    let mut s = State::default();
    if let Some(map) = pins.map(maps::OWNERS_V4)? {
        for kv in HashMap::<_, [u8; 4], Owner>::try_from(map)?.iter() {
            let (k, v) = kv?;
            s.v4.insert(k, v);
        }
    }
    if let Some(map) = pins.map(maps::OWNERS_V6)? {
        for kv in HashMap::<_, [u8; 16], Owner>::try_from(map)?.iter() {
            let (k, v) = kv?;
            s.v6.insert(k, v);
        }
    }
    if let Some(map) = pins.map(maps::PREFIXES_V4)? {
        for kv in LpmTrie::<_, [u8; 4], Owner>::try_from(map)?.iter() {
            let (k, v) = kv?;
            s.p4.insert((k.data(), k.prefix_len() as u8), v);
        }
    }
    if let Some(map) = pins.map(maps::PREFIXES_V6)? {
        for kv in LpmTrie::<_, [u8; 16], Owner>::try_from(map)?.iter() {
            let (k, v) = kv?;
            s.p6.insert((k.data(), k.prefix_len() as u8), v);
        }
    }
    if let Some(map) = pins.map(maps::COUNTERS)? {
        for k in PerCpuHashMap::<_, u32, Counters>::try_from(map)?.keys() {
            s.counters.insert(k?, ());
        }
    }
    if let Some(map) = pins.map(maps::NEXT_HOPS)? {
        let array = Array::<_, NextHop>::try_from(map)?;
        for (ifindex, hop) in (0..).zip(array.iter()) {
            let hop = hop?;
            // A slot in use has a table (with the rules) or gateways (without): an all-zero one
            // is empty. Reading only `table` missed every `--no-rules` entry, so status reported
            // them missing and each reconcile wrote them again.
            if hop != NextHop::default() {
                s.next_hops.insert(ifindex, hop);
            }
        }
    }
    if let Some(map) = pins.map(maps::CONFIG)? {
        s.config = Some(Array::<_, enipin_ebpf::Config>::try_from(map)?.get(&0, 0)?);
    }
    Ok(s)
}

/// The map entries to write to go from one [`State`] to another.
#[derive(Debug, Default)]
pub(super) struct MapWrites {
    pub(super) v4: MapDiff<[u8; 4], Owner>,
    pub(super) v6: MapDiff<[u8; 16], Owner>,
    pub(super) p4: MapDiff<([u8; 4], u8), Owner>,
    pub(super) p6: MapDiff<([u8; 16], u8), Owner>,
    pub(super) counters: MapDiff<u32, ()>,
    pub(super) next_hops: MapDiff<u32, NextHop>,
    /// The config entry to write, when it changes.
    pub(super) config: Option<enipin_ebpf::Config>,
}

impl MapWrites {
    pub(super) fn between(now: &State, want: &State) -> Self {
        Self {
            v4: MapDiff::new(&now.v4, &want.v4),
            v6: MapDiff::new(&now.v6, &want.v6),
            p4: MapDiff::new(&now.p4, &want.p4),
            p6: MapDiff::new(&now.p6, &want.p6),
            counters: MapDiff::new(&now.counters, &want.counters),
            next_hops: MapDiff::new(&now.next_hops, &want.next_hops),
            config: want.config.filter(|_| now.config != want.config),
        }
    }
}

/// Writes the map entries back to `before` (used on rollback).
pub(super) fn restore(paths: &Paths, before: &State) -> Result<()> {
    let now = installed(&Pins::open(paths)?)?;
    let mut w = MapWrites::between(&now, before);
    w.config = before.config;
    let mut ebpf = loader(&paths.pin_dir).load(OBJECT)?;
    write_maps(&mut ebpf, &w)?.run()
}

/// Writes `d` into the object's maps (pinned) and derives the fast-path arrays from them; returns
/// the owner tables' swap, which the caller runs (the tables leave `ebpf` with it).
pub(super) fn write_maps(ebpf: &mut Ebpf, d: &MapWrites) -> Result<TableSwap> {
    let mut m: HashMap<_, [u8; 4], Owner> = HashMap::try_from(map(ebpf, maps::OWNERS_V4)?)?;
    for (k, v) in &d.v4.set {
        m.insert(k, v, 0)?;
    }
    for k in &d.v4.remove {
        m.remove(k)?;
    }
    let mut m: HashMap<_, [u8; 16], Owner> = HashMap::try_from(map(ebpf, maps::OWNERS_V6)?)?;
    for (k, v) in &d.v6.set {
        m.insert(k, v, 0)?;
    }
    for k in &d.v6.remove {
        m.remove(k)?;
    }
    let tables = TableSwap::derive(ebpf)?;
    let mut m: LpmTrie<_, [u8; 4], Owner> = LpmTrie::try_from(map(ebpf, maps::PREFIXES_V4)?)?;
    for ((k, l), v) in &d.p4.set {
        m.insert(&Key::new((*l).into(), *k), v, 0)?;
    }
    for (k, l) in &d.p4.remove {
        m.remove(&Key::new((*l).into(), *k))?;
    }
    let mut m: LpmTrie<_, [u8; 16], Owner> = LpmTrie::try_from(map(ebpf, maps::PREFIXES_V6)?)?;
    for ((k, l), v) in &d.p6.set {
        m.insert(&Key::new((*l).into(), *k), v, 0)?;
    }
    for (k, l) in &d.p6.remove {
        m.remove(&Key::new((*l).into(), *k))?;
    }
    let mut m: PerCpuHashMap<_, u32, Counters> =
        PerCpuHashMap::try_from(map(ebpf, maps::COUNTERS)?)?;
    let cpus = aya::util::nr_cpus()
        .map_err(|(what, e)| anyhow!("{what}: {e}"))?
        .get() as usize;
    let zero = || PerCpuValues::try_from(vec![Counters::default(); cpus]);
    // An interface's fast slot starts at zero when it becomes managed and is zeroed when it stops
    // being managed, so a later interface with the same ifindex starts clean.
    let mut fresh = Vec::new();
    for (k, ()) in &d.counters.set {
        // BPF_NOEXIST: never reset counters that are already there.
        match m.insert(k, zero()?, 1 /* BPF_NOEXIST */) {
            Ok(()) => fresh.push(*k),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for k in &d.counters.remove {
        m.remove(k)?;
        fresh.push(*k);
    }
    let mut fast: PerCpuArray<_, Counters> =
        PerCpuArray::try_from(map(ebpf, maps::COUNTERS_FAST)?)?;
    for k in fresh.into_iter().filter(|k| *k < FAST_SLOTS) {
        fast.set(k, zero()?, 0)?;
    }
    let mut m: Array<_, NextHop> = Array::try_from(map(ebpf, maps::NEXT_HOPS)?)?;
    for (k, v) in &d.next_hops.set {
        m.set(*k, v, 0)?;
    }
    for k in &d.next_hops.remove {
        // An empty slot: the program takes the full lookup for this owner again.
        m.set(*k, &NextHop::default(), 0)?;
    }
    if let Some(c) = &d.config {
        let mut m: Array<_, enipin_ebpf::Config> = Array::try_from(map(ebpf, maps::CONFIG)?)?;
        m.set(0, c, 0)?;
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next hops `desired` plans for one owner (table 20003) forwarding `f`.
    fn hops(f: Forwarding, rules: bool) -> Vec<(u32, NextHop)> {
        let mut m = ManagedInterface::fixture(3, "eth1", Vec::new());
        m.forwarding = f;
        let cfg = Config {
            rules,
            ..Config::default()
        };
        desired(&[m], &cfg).next_hops.into_iter().collect()
    }

    #[test]
    fn a_next_hop_only_for_the_families_the_owner_forwards() {
        let hop = |families| {
            vec![(
                3,
                NextHop {
                    table: 20003,
                    families,
                    ..NextHop::default()
                },
            )]
        };
        assert_eq!(hops(Forwarding::default(), true), []);
        let v4 = Forwarding {
            v4: true,
            v6: false,
        };
        assert_eq!(hops(v4, true), hop(NEXT_HOP_V4));
        let v6 = Forwarding {
            v4: false,
            v6: true,
        };
        assert_eq!(hops(v6, true), hop(NEXT_HOP_V6));
        assert_eq!(hops(Forwarding::BOTH, true), hop(NEXT_HOP_V4 | NEXT_HOP_V6));
        // Without enipin's rules the owner's table decides nothing.
        assert_eq!(hops(Forwarding::BOTH, false), []);
    }

    /// Without rules: the gateways and the networks of the owner's addresses (its /32 left out,
    /// each network once), as the words the program compares with the packet's destination.
    #[test]
    fn without_rules_an_owner_gets_its_gateways_and_networks() {
        let cidr = |s: &str| s.parse::<Cidr>().unwrap();
        let addrs = [
            "198.18.11.11/24",
            "198.18.11.12/24",
            "198.18.11.99/32",
            "2001:db8:b::b/64",
        ];
        let mut m = ManagedInterface::fixture(3, "eth1", addrs.map(cidr).to_vec());
        let gw = |s: &str| crate::model::Gateway {
            addr: s.parse().unwrap(),
            source: crate::model::GatewaySource::Configured,
        };
        m.gateway_v4 = Some(gw("198.18.11.1"));
        m.gateway_v6 = Some(gw("2001:db8:b::1"));
        let cfg = Config {
            rules: false,
            ..Config::default()
        };
        let hop = desired(&[m], &cfg).next_hops[&3];
        let w4 = |s: &str| words(&s.parse::<Ipv4Addr>().unwrap().octets()).0 as u32;
        let w6 = |s: &str| <[u64; 2]>::from(words(&s.parse::<Ipv6Addr>().unwrap().octets()));
        assert_eq!((hop.table, hop.families), (0, 0));
        assert_eq!(hop.gateway_v4, w4("198.18.11.1"));
        assert_eq!(hop.on_link_v4_len, 1);
        assert_eq!(hop.on_link_v4[0], [w4("198.18.11.0"), w4("255.255.255.0")]);
        assert_eq!(hop.gateway_v6, w6("2001:db8:b::1"));
        assert_eq!(hop.on_link_v6_len, 1);
        assert_eq!(
            hop.on_link_v6[0],
            [w6("2001:db8:b::"), w6("ffff:ffff:ffff:ffff::")]
        );
    }
}
