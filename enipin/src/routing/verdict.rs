//! Which interfaces need enipin, and why: the selection's reasons, one per interface.
//!
//! An interface is managed when a reply from one of its addresses could leave by another ENI.
//! Replies follow the main table (enipin's rules aside), and the main table picks the output
//! device by destination alone: the longest prefix, then the lowest metric. So for every
//! destination prefix of the main table, the routes of lowest metric are where a reply to it
//! leaves; when one of them goes out of another candidate ENI than the reply's owner, the owner
//! needs its rules (and that other ENI its program, to send the owner's packets back). This holds
//! for ENIs sharing a subnet (two routes for one prefix at one metric: either may be used), for
//! an ENI in a subnet of its own beside another one holding the default route, and for ENIs that
//! each have a default route of their own (DHCP on AL2023 gives each one at metric 512 + device
//! number: the lowest wins for every ENI's replies).
//!
//! Candidates are the ENIs: up Ethernet interfaces with an address of their own that are not
//! container plumbing nor a port of another device. With `--metadata`, the ENIs are what the
//! metadata lists.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use crate::{
    model::discovery::Discovery,
    model::route::{MAIN_TABLE, Route},
    model::{Cidr, Interface},
    settings::config::{Config, MetadataSource},
};

/// Name prefixes of the interfaces container runtimes and CNIs create: veths (they count as
/// Ethernet here) that carry a pod's or a container's traffic, never an ENI's. Docker's `veth*`
/// and bridges are ports or not Ethernet anyway; these are the ones that stand alone.
const PLUMBING: [&str; 8] = [
    "veth", "docker", "cni", "cilium_", "lxc", "eni", "cali", "flannel",
];

/// Why an interface is not a candidate ENI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Exclusion {
    Loopback,
    /// A bridge, bond, VLAN, tunnel, ...: not an ENI.
    NotEthernet,
    Down,
    /// No IPv4 or global IPv6 address: nothing to pin to it.
    NoAddress,
    /// A port of another device (a bridge's, a bond's; an Azure VF under its NIC).
    Port {
        master: String,
    },
    /// Named like a container's or a CNI's veth.
    Plumbing {
        prefix: &'static str,
    },
    /// `--metadata` is on and lists no ENI with its MAC.
    NotInMetadata,
}

/// Why an interface is taken or left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// Not a candidate ENI.
    Excluded(Exclusion),
    /// A reply from `from` to `dst` follows the main table's route out of `via`.
    LeavesBy {
        from: IpAddr,
        dst: Cidr,
        via: String,
    },
    /// Its own replies leave by it, but another managed interface's replies leave by it too
    /// (`of`): its program sends them back to their owner.
    Carries { of: String },
    /// The main table sends replies from every address of it to every destination out of it.
    RepliesStay,
}

/// One interface's reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub ifindex: u32,
    pub name: String,
    pub why: Why,
}

impl Verdict {
    /// Managed.
    pub(crate) fn taken(&self) -> bool {
        matches!(self.why, Why::LeavesBy { .. } | Why::Carries { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match &self.why {
            Why::LeavesBy { from, dst, via } => write!(
                f,
                "{name}: managed: a reply from {from} to {} leaves by {via} (main table)",
                dst_text(dst)
            ),
            Why::Carries { of } => write!(
                f,
                "{name}: managed: replies of {of} leave by it; its program sends them back"
            ),
            Why::RepliesStay => write!(
                f,
                "{name}: left out: the main table sends replies from each of its addresses out of it"
            ),
            Why::Excluded(e) => write!(f, "{name}: left out: {e}"),
        }
    }
}

fn dst_text(dst: &Cidr) -> String {
    if dst.prefix_len == 0 {
        format!("{dst} (the default route)")
    } else {
        dst.to_string()
    }
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::Loopback => f.write_str("the loopback"),
            Exclusion::NotEthernet => {
                f.write_str("not an Ethernet interface (a bridge, bond, VLAN or tunnel)")
            }
            Exclusion::Down => f.write_str("down"),
            Exclusion::NoAddress => f.write_str("no IPv4 or global IPv6 address of its own"),
            Exclusion::Port { master } => write!(f, "a port of {master}, not an ENI of its own"),
            Exclusion::Plumbing { prefix } => {
                write!(
                    f,
                    "container plumbing (named {prefix}*); name it in --interfaces to manage it"
                )
            }
            Exclusion::NotInMetadata => f.write_str("the metadata lists no ENI with its MAC"),
        }
    }
}

/// Why `i` is not a candidate ENI by default (`None`: it is one).
pub(crate) fn exclusion(d: &Discovery, cfg: &Config, i: &Interface) -> Option<Exclusion> {
    if i.loopback {
        return Some(Exclusion::Loopback);
    }
    if !i.ethernet {
        return Some(Exclusion::NotEthernet);
    }
    if !i.up {
        return Some(Exclusion::Down);
    }
    if i.addrs.is_empty() {
        return Some(Exclusion::NoAddress);
    }
    if let Some(m) = i.master {
        let master = d
            .interfaces
            .iter()
            .find(|p| p.ifindex == m)
            .map_or_else(|| format!("if{m}"), |p| p.name.clone());
        return Some(Exclusion::Port { master });
    }
    // The metadata's word on what is an ENI beats a name.
    let cloud = d.cloud.as_ref().map(|c| c.cloud);
    if cfg.metadata.on(cloud) != MetadataSource::None {
        return i.meta.is_none().then_some(Exclusion::NotInMetadata);
    }
    PLUMBING
        .iter()
        .find(|p| i.name.starts_with(*p))
        .map(|prefix| Exclusion::Plumbing { prefix })
}

/// The routes a reply to each destination prefix of the main table may leave by: those of
/// lowest metric (several at one metric: the kernel may take any). Link-local IPv6 is left out:
/// it is scoped to its link, and ENIs' global addresses are what enipin pins.
fn main_winners(d: &Discovery) -> BTreeMap<(u8, Cidr), Vec<&Route>> {
    let mut best: BTreeMap<(u8, Cidr), Vec<&Route>> = BTreeMap::new();
    let link_local =
        |c: &Cidr| matches!(c.addr, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80);
    for r in d.routes.iter().map(|r| &r.route) {
        if r.table != MAIN_TABLE || r.oif == 0 || link_local(&r.dst) {
            continue;
        }
        let slot = best.entry((r.dst.prefix_len, r.dst)).or_default();
        match slot.first().map(|w| w.metric) {
            Some(m) if m < r.metric => {}
            Some(m) if m == r.metric => slot.push(r),
            _ => *slot = vec![r],
        }
    }
    best
}

/// The interfaces the main table's default route of a family leaves by (its routes of lowest
/// metric).
pub(crate) fn default_exit(d: &Discovery, v6: bool) -> Vec<u32> {
    main_winners(d)
        .get(&(0, Cidr::any(v6)))
        .map(|w| w.iter().map(|r| r.oif).collect())
        .unwrap_or_default()
}

/// For each candidate, every (its address, destination, other candidate) where a reply from the
/// address to the destination may leave by the other candidate, default route first.
fn leaks(d: &Discovery, candidates: &[&Interface]) -> BTreeMap<u32, Vec<(IpAddr, Cidr, u32)>> {
    let winners = main_winners(d);
    let is_candidate = |ix: u32| candidates.iter().any(|c| c.ifindex == ix);
    let mut out = BTreeMap::new();
    for x in candidates {
        let mut found = Vec::new();
        for ((_, dst), routes) in &winners {
            let Some(from) = x.addrs.iter().find(|a| a.is_ipv6() == dst.is_ipv6()) else {
                continue;
            };
            for r in routes
                .iter()
                .filter(|r| r.oif != x.ifindex && is_candidate(r.oif))
            {
                found.push((from.addr, *dst, r.oif));
            }
        }
        out.insert(x.ifindex, found);
    }
    out
}

/// The verdicts on `pool` (the interfaces the selection starts from, in order): each managed
/// one, with every candidate its replies may leave by (outside `pool` too when `beyond`: its
/// program is what sends them back), and each other one of `pool` with the reason it is left
/// out. `candidates` are the ENIs the route lookup considers.
pub(crate) fn judge(
    d: &Discovery,
    pool: &[&Interface],
    candidates: &[&Interface],
    beyond: bool,
) -> Vec<Verdict> {
    let leaks = leaks(d, candidates);
    let name = |ix: u32| {
        d.interfaces
            .iter()
            .find(|i| i.ifindex == ix)
            .map_or_else(|| format!("if{ix}"), |i| i.name.clone())
    };
    let mut verdicts: Vec<Verdict> = pool
        .iter()
        .map(|i| {
            let why = match leaks.get(&i.ifindex).and_then(|l| l.first()) {
                Some(&(from, dst, via)) => Why::LeavesBy {
                    from,
                    dst,
                    via: name(via),
                },
                None => Why::RepliesStay,
            };
            Verdict {
                ifindex: i.ifindex,
                name: i.name.clone(),
                why,
            }
        })
        .collect();
    // The interfaces the managed ones' replies leave by carry them: their programs must run.
    let leaking: Vec<(String, u32)> = verdicts
        .iter()
        .filter(|v| v.taken())
        .flat_map(|v| {
            leaks[&v.ifindex]
                .iter()
                .map(move |&(_, _, via)| (v.name.clone(), via))
        })
        .collect();
    for (of, via) in leaking {
        match verdicts.iter_mut().find(|v| v.ifindex == via) {
            Some(v) if v.taken() => {}
            Some(v) => v.why = Why::Carries { of },
            None if !beyond => {}
            None => verdicts.push(Verdict {
                ifindex: via,
                name: name(via),
                why: Why::Carries { of },
            }),
        }
    }
    verdicts
}

/// Every interface's verdict for a selection without `--interfaces`, in discovery order.
pub(crate) fn by_default(d: &Discovery, cfg: &Config) -> Vec<Verdict> {
    let candidates: Vec<&Interface> = d
        .interfaces
        .iter()
        .filter(|i| exclusion(d, cfg, i).is_none())
        .collect();
    let judged = judge(d, &candidates, &candidates, true);
    d.interfaces
        .iter()
        .map(|i| match judged.iter().find(|v| v.ifindex == i.ifindex) {
            Some(v) => v.clone(),
            None => Verdict {
                ifindex: i.ifindex,
                name: i.name.clone(),
                why: Why::Excluded(exclusion(d, cfg, i).unwrap_or(Exclusion::NoAddress)),
            },
        })
        .collect()
}

/// Why nothing is managed, from the verdicts: said only when the route lookup found that every
/// candidate's replies leave by it.
pub(crate) fn nothing_to_do(verdicts: &[Verdict]) -> String {
    let stay: Vec<&str> = verdicts
        .iter()
        .filter(|v| v.why == Why::RepliesStay)
        .map(|v| v.name.as_str())
        .collect();
    match stay.as_slice() {
        [] => "no interface is a candidate ENI (up, Ethernet, with an address of its own, not \
               container plumbing)"
            .to_owned(),
        names => format!(
            "the main table sends every reply from {} out of the interface owning its source: \
             replies already leave by the right interface",
            names.join(", ")
        ),
    }
}
