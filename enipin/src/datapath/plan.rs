//! The datapath's plan: what must change under the pin directory to match the desired state, as
//! typed changes that [`super::apply`] carries out and that print as enipin's diff lines.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::{Context as _, Result};
use aya::programs::ProgramInfo;
use enipin_ebpf::{
    MAX_OWNERS, MODE_ENFORCE, NEXT_HOP_V4, NEXT_HOP_V6, NextHop, Owner, PREFIXES_V4_PRESENT,
    PREFIXES_V6_PRESENT, PROGRAM, maps,
};

use crate::{
    settings::config::{Config, Paths},
    model::ManagedInterface,
    model::objects::{MapEntry, Object},
};

use super::{
    attach::{Attachment, attachments, ifname, owner_name, resolve},
    contents::{MapDiff, MapWrites, desired, installed},
    derived::out_of_step,
    owner::{Ownership, our_mark, owner},
    pins::Pins,
    program::{PROG_PIN, ensure_bpffs, our_tag},
};

/// What the datapath must change to match the desired state, diffed with what is pinned.
#[derive(Debug, Default)]
pub struct EbpfPlan {
    /// In the order they print and apply.
    pub(crate) changes: Vec<Change>,
}

impl EbpfPlan {
    /// The datapath already matches: nothing to do.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// One line per change, as printed (`+ attach enipin_egress to eth1 egress (ifindex 3)`).
    #[cfg(feature = "testing")]
    pub fn lines(&self) -> Vec<String> {
        self.changes.iter().map(ToString::to_string).collect()
    }
}

/// One change to the datapath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A map pinned by another enipin version with another layout: unpinned, created anew.
    RecreateMap {
        name: &'static str,
        why: String,
    },
    /// A derived map out of step with the owner maps: rebuilt from them.
    Rebuild {
        name: &'static str,
    },
    /// Nothing pinned yet: load the program and pin it.
    Load {
        pin_dir: PathBuf,
    },
    /// Swap this build's program in atomically on every link: another build's is pinned, or the
    /// pinned one reads maps that are no longer the pinned ones (`why` says which).
    Replace {
        why: &'static str,
    },
    /// Remove an attachment (stale, or of an interface no longer managed).
    Detach {
        ifindex: u32,
        pin: String,
    },
    /// Attach to an interface's egress.
    Attach {
        ifindex: u32,
        name: String,
    },
    /// An address (exact) and its owner; `name` is the owner's interface name.
    SetOwner {
        addr: IpAddr,
        owner: Owner,
        name: String,
    },
    RemoveOwner {
        addr: IpAddr,
    },
    /// A delegated prefix and its owner.
    SetPrefix {
        addr: IpAddr,
        len: u8,
        owner: Owner,
        name: String,
    },
    RemovePrefix {
        addr: IpAddr,
        len: u8,
    },
    /// An interface's counters start (at zero) or go.
    AddCounters {
        ifindex: u32,
    },
    RemoveCounters {
        ifindex: u32,
    },
    /// A redirect onto `ifindex` finds its next hop in this table (enipin's rules route the owner).
    SetNextHop {
        ifindex: u32,
        hop: NextHop,
        name: String,
    },
    /// A redirect onto `ifindex` goes back to the kernel's full route lookup.
    RemoveNextHop {
        ifindex: u32,
    },
    /// The program's config entry.
    Config(enipin_ebpf::Config),
    /// Nothing is managed: every pin goes, and the directory.
    RemovePins {
        dir: PathBuf,
    },
    /// A pin directory an earlier enipin left unmarked, running nothing in another namespace:
    /// marked as this namespace's (`mark` is the directory that says so).
    Claim {
        mark: PathBuf,
    },
}

impl Change {
    /// The object this change puts in place (`None`: a removal, or nothing of the desired state
    /// by identity: a new build, a rebuilt or recreated map, a claim).
    pub(crate) fn puts(&self) -> Option<Object> {
        let entry = |e| Some(Object::DatapathMap(e));
        match self {
            Self::Load { .. } => Some(Object::DatapathProgram),
            Self::Attach { ifindex, .. } => Some(Object::DatapathLink(*ifindex)),
            Self::SetOwner { addr, .. } => entry(MapEntry::Owner(*addr)),
            Self::SetPrefix { addr, len, .. } => entry(MapEntry::Prefix(*addr, *len)),
            Self::AddCounters { ifindex } => entry(MapEntry::Counters(*ifindex)),
            Self::SetNextHop { ifindex, .. } => entry(MapEntry::NextHop(*ifindex)),
            Self::Config(_) => entry(MapEntry::Config),
            _ => None,
        }
    }

    /// What this change says about drift: the kind of object and whether it was missing (else
    /// extra). `None` for what is no drift (a new build replacing the program, a claim).
    pub(crate) fn drift(&self) -> Option<(&'static str, bool)> {
        Some(match self {
            Self::Attach { .. } => ("datapath_link", true),
            Self::Detach { .. } => ("datapath_link", false),
            Self::Load { .. } => ("datapath_program", true),
            Self::RemovePins { .. } => ("datapath_program", false),
            Self::RemoveOwner { .. }
            | Self::RemovePrefix { .. }
            | Self::RemoveCounters { .. }
            | Self::RemoveNextHop { .. } => ("datapath_map", false),
            Self::RecreateMap { .. }
            | Self::Rebuild { .. }
            | Self::SetOwner { .. }
            | Self::SetPrefix { .. }
            | Self::AddCounters { .. }
            | Self::SetNextHop { .. }
            | Self::Config(_) => ("datapath_map", true),
            Self::Replace { .. } | Self::Claim { .. } => return None,
        })
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RecreateMap { name, why } => {
                let reset = if [maps::COUNTERS, maps::COUNTERS_FAST].contains(name) {
                    "; its counters start again from zero"
                } else {
                    ""
                };
                write!(
                    f,
                    "~ recreate map {name} (pinned by another enipin version: {why}{reset})"
                )
            }
            Self::Rebuild { name } => write!(
                f,
                "~ rebuild {name} (out of step with the owner maps: an earlier run was interrupted)"
            ),
            Self::Load { pin_dir } => {
                write!(f, "+ load {PROGRAM}, pinned under {}", pin_dir.display())
            }
            Self::Replace { why } => write!(f, "~ replace {PROGRAM} ({why})"),
            Self::Detach { ifindex, pin } => {
                write!(f, "- detach {PROGRAM} from ifindex {ifindex} ({pin})")
            }
            Self::Attach { ifindex, name } => {
                write!(f, "+ attach {PROGRAM} to {name} egress (ifindex {ifindex})")
            }
            Self::SetOwner { addr, name, .. } => write!(f, "+ owner {addr} -> {name}"),
            Self::RemoveOwner { addr } => write!(f, "- owner {addr}"),
            Self::SetPrefix {
                addr, len, name, ..
            } => write!(f, "+ prefix {addr}/{len} -> {name}"),
            Self::RemovePrefix { addr, len } => write!(f, "- prefix {addr}/{len}"),
            Self::AddCounters { ifindex } => write!(f, "+ counters for ifindex {ifindex}"),
            Self::RemoveCounters { ifindex } => write!(f, "- counters for ifindex {ifindex}"),
            Self::SetNextHop { hop, name, .. } if hop.table == 0 => write!(
                f,
                "+ next hop onto {name} by its gateway {} for destinations off {} (without rules \
                 the kernel's lookup finds no route of its own there)",
                gateway_text(hop),
                on_link_text(hop)
            ),
            Self::SetNextHop { hop, name, .. } => {
                // Both families (the usual case) unsaid; one alone named.
                let only = match hop.families {
                    NEXT_HOP_V4 => " for IPv4 only",
                    NEXT_HOP_V6 => " for IPv6 only",
                    _ => "",
                };
                write!(
                    f,
                    "+ next hop onto {name} from table {}{only} (redirects skip the full route \
                     lookup)",
                    hop.table
                )
            }
            Self::RemoveNextHop { ifindex } => write!(
                f,
                "- next hop onto ifindex {ifindex} (redirects look the route up again)"
            ),
            Self::Config(c) => {
                let mode = if c.mode == MODE_ENFORCE {
                    "enforce"
                } else {
                    "monitor"
                };
                let prefixes = match c.prefixes & (PREFIXES_V4_PRESENT | PREFIXES_V6_PRESENT) {
                    0 => "none",
                    PREFIXES_V4_PRESENT => "v4",
                    PREFIXES_V6_PRESENT => "v6",
                    _ => "v4+v6",
                };
                write!(
                    f,
                    "~ config mode={mode} debug={} prefixes={prefixes}",
                    c.debug
                )
            }
            Self::RemovePins { dir } => write!(f, "- remove pins under {}", dir.display()),
            Self::Claim { mark } => write!(
                f,
                "+ mark the pin directory as this network namespace's: {}",
                mark.display()
            ),
        }
    }
}

/// Computes the datapath changes for `managed` (empty `managed`: remove everything). Every
/// precondition of [`super::apply`] is checked here, before the first change of either applier:
/// the pin directory is this namespace's, on a bpffs, and the attach method is known.
pub fn plan(managed: &[ManagedInterface], cfg: &Config, paths: &Paths) -> Result<EbpfPlan> {
    let owner = owner(&paths.pin_dir)?;
    let found = attachments(paths)?;
    let mut changes = Vec::new();
    if managed.is_empty() {
        changes.extend(found.iter().map(detach));
        if paths.pin_dir.exists() {
            changes.push(Change::RemovePins {
                dir: paths.pin_dir.clone(),
            });
        }
        return Ok(EbpfPlan { changes });
    }
    check_capacity(managed)?;
    ensure_bpffs(&paths.pin_dir)?;
    resolve(cfg.attach)?;
    if owner == Ownership::Unmarked {
        changes.push(Change::Claim {
            mark: our_mark(&paths.pin_dir)?,
        });
    }
    let pins = Pins::open(paths)?;
    for (name, why) in pins.other_layout() {
        changes.push(Change::RecreateMap {
            name,
            why: why.clone(),
        });
    }
    changes.extend(
        out_of_step(&pins)?
            .into_iter()
            .map(|name| Change::Rebuild { name }),
    );
    changes.extend(program_change(&pins)?);
    changes.extend(attachment_changes(managed, &found, paths));
    let writes = MapWrites::between(&installed(&pins)?, &desired(managed, cfg));
    changes.extend(map_changes(&writes));
    Ok(EbpfPlan { changes })
}

/// The owner maps hold [`MAX_OWNERS`] (4,096) addresses per family and the prefix tries as
/// many prefixes: a plan past them failed at its first write beyond the limit (E2BIG, "Argument
/// list too long"), after the rules' batch had run and been rolled back (about 5,100 changes at
/// 5,000 addresses, on every pass of `watch`). Refused here, before any change.
fn check_capacity(managed: &[ManagedInterface]) -> Result<()> {
    let count = |prefixes: bool, v6: bool| {
        (managed.iter())
            .flat_map(|m| if prefixes { &m.prefixes } else { &m.addrs })
            .filter(|c| c.addr.is_ipv6() == v6)
            .count()
    };
    for (what, prefixes, v6) in [
        ("IPv4 addresses", false, false),
        ("IPv6 addresses", false, true),
        ("IPv4 prefixes", true, false),
        ("IPv6 prefixes", true, true),
    ] {
        let n = count(prefixes, v6);
        anyhow::ensure!(
            n <= MAX_OWNERS as usize,
            "the managed interfaces have {n} {what}; the datapath holds at most {MAX_OWNERS} per \
             family. Manage fewer (--interfaces), or leave the datapath out (--no-ebpf: the \
             rules layer has no such limit). Nothing was changed"
        );
    }
    Ok(())
}

/// What the datapath has in place for `managed` once a plan for them is applied.
pub(crate) fn objects(managed: &[ManagedInterface], cfg: &Config) -> Vec<Object> {
    if managed.is_empty() {
        return Vec::new();
    }
    let links = managed.iter().map(|m| Object::DatapathLink(m.ifindex));
    let entries = desired(managed, cfg).entries().into_iter();
    std::iter::once(Object::DatapathProgram)
        .chain(links)
        .chain(entries.map(Object::DatapathMap))
        .collect()
}

/// Load when nothing is pinned; replace when another build's program is.
fn program_change(pins: &Pins) -> Result<Option<Change>> {
    let prog_pin = pins.dir().join(PROG_PIN);
    if !prog_pin.exists() {
        return Ok(Some(Change::Load {
            pin_dir: pins.dir().to_owned(),
        }));
    }
    if !pins.other_layout().is_empty() {
        // Maps of another layout: a program of another build, which this one replaces.
        return Ok(Some(Change::Replace { why: NEW_BUILD }));
    }
    let old = ProgramInfo::from_pin(&prog_pin)
        .with_context(|| format!("reading {}", prog_pin.display()))?;
    // A map pin gone (removed by hand, a run cut short) or pinned anew: the pinned program still
    // reads the map it was loaded with, so writes to the pin would never reach it; a program
    // loaded against the pins as they are is the fix. A missing pin is checked before the tag,
    // whose load would pin the missing map itself (and `status` must change nothing).
    let maps = pinned_map_ids(pins.dir())?;
    if maps.is_none() {
        return Ok(Some(Change::Replace {
            why: "a map's pin is gone",
        }));
    }
    // Same program? Compare tags (the kernel's hash of the instructions, map fds masked).
    if old.tag() != our_tag(pins.dir())? {
        return Ok(Some(Change::Replace { why: NEW_BUILD }));
    }
    let used: BTreeSet<u32> = old
        .map_ids()
        .context("reading the pinned program's maps")?
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(
        (!maps.unwrap_or_default().is_subset(&used)).then_some(Change::Replace {
            why: "it reads maps that are no longer pinned",
        }),
    )
}

const NEW_BUILD: &str = "new build";

/// The ids of the layout table's maps as pinned; `None` when one of them is not pinned.
fn pinned_map_ids(dir: &std::path::Path) -> Result<Option<BTreeSet<u32>>> {
    let mut ids = BTreeSet::new();
    for layout in &enipin_ebpf::layout::MAPS {
        let pin = dir.join(layout.name);
        if !pin.exists() {
            return Ok(None);
        }
        let info = aya::maps::MapInfo::from_pin(&pin)
            .with_context(|| format!("reading {}", pin.display()))?;
        ids.insert(info.id());
    }
    Ok(Some(ids))
}

/// Detach what is stale or no longer managed, attach where nothing live is.
fn attachment_changes(
    managed: &[ManagedInterface],
    found: &[Attachment],
    paths: &Paths,
) -> Vec<Change> {
    let wanted: BTreeSet<u32> = managed.iter().map(|m| m.ifindex).collect();
    let mut alive = BTreeSet::new();
    let mut out = Vec::new();
    for a in found {
        if wanted.contains(&a.ifindex) && a.alive(&paths.pin_dir) {
            alive.insert(a.ifindex);
        } else {
            out.push(detach(a));
        }
    }
    out.extend(
        managed
            .iter()
            .filter(|m| !alive.contains(&m.ifindex))
            .map(|m| Change::Attach {
                ifindex: m.ifindex,
                name: m.name.clone(),
            }),
    );
    out
}

fn detach(a: &Attachment) -> Change {
    Change::Detach {
        ifindex: a.ifindex,
        pin: a.pin.clone(),
    }
}

/// The map writes as changes: owners, prefixes (each family: set, then removed), counters, config.
fn map_changes(w: &MapWrites) -> Vec<Change> {
    let mut out = Vec::new();
    owners(&mut out, &w.v4, |k| Ipv4Addr::from(*k).into());
    owners(&mut out, &w.v6, |k| Ipv6Addr::from(*k).into());
    prefixes(&mut out, &w.p4, |(k, l)| (Ipv4Addr::from(*k).into(), *l));
    prefixes(&mut out, &w.p6, |(k, l)| (Ipv6Addr::from(*k).into(), *l));
    for (ifindex, ()) in &w.counters.set {
        out.push(Change::AddCounters { ifindex: *ifindex });
    }
    for ifindex in &w.counters.remove {
        out.push(Change::RemoveCounters { ifindex: *ifindex });
    }
    for (ifindex, hop) in &w.next_hops.set {
        out.push(Change::SetNextHop {
            ifindex: *ifindex,
            hop: *hop,
            name: ifname(*ifindex).unwrap_or_else(|| format!("ifindex {ifindex}")),
        });
    }
    for ifindex in &w.next_hops.remove {
        out.push(Change::RemoveNextHop { ifindex: *ifindex });
    }
    out.extend(w.config.map(Change::Config));
    out
}

fn owners<K>(out: &mut Vec<Change>, d: &MapDiff<K, Owner>, addr: impl Fn(&K) -> IpAddr) {
    for (k, owner) in &d.set {
        out.push(Change::SetOwner {
            addr: addr(k),
            owner: *owner,
            name: owner_name(owner),
        });
    }
    out.extend(
        d.remove
            .iter()
            .map(|k| Change::RemoveOwner { addr: addr(k) }),
    );
}

fn prefixes<K>(out: &mut Vec<Change>, d: &MapDiff<K, Owner>, net: impl Fn(&K) -> (IpAddr, u8)) {
    for (k, owner) in &d.set {
        let (addr, len) = net(k);
        out.push(Change::SetPrefix {
            addr,
            len,
            owner: *owner,
            name: owner_name(owner),
        });
    }
    for k in &d.remove {
        let (addr, len) = net(k);
        out.push(Change::RemovePrefix { addr, len });
    }
}

/// A `--no-rules` entry's gateways, IPv4 then IPv6 ("none" without either).
fn gateway_text(hop: &NextHop) -> String {
    let v4 =
        (hop.gateway_v4 != 0).then(|| Ipv4Addr::from(hop.gateway_v4.to_ne_bytes()).to_string());
    let v6 = (hop.gateway_v6 != [0, 0]).then(|| v6_of(hop.gateway_v6).to_string());
    let all: Vec<String> = v4.into_iter().chain(v6).collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(" and ")
    }
}

/// A `--no-rules` entry's on-link networks.
fn on_link_text(hop: &NextHop) -> String {
    let v4 = hop.on_link_v4[..hop.on_link_v4_len as usize]
        .iter()
        .map(|[net, mask]| {
            format!(
                "{}/{}",
                Ipv4Addr::from(net.to_ne_bytes()),
                mask.count_ones()
            )
        });
    let v6 = hop.on_link_v6[..hop.on_link_v6_len as usize]
        .iter()
        .map(|[net, mask]| {
            format!(
                "{}/{}",
                v6_of(*net),
                mask[0].count_ones() + mask[1].count_ones()
            )
        });
    let all: Vec<String> = v4.chain(v6).collect();
    if all.is_empty() {
        "its subnets".into()
    } else {
        all.join(", ")
    }
}

/// An IPv6 address from the two words `enipin_ebpf::words` read.
fn v6_of([a, b]: [u64; 2]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o[..8].copy_from_slice(&a.to_ne_bytes());
    o[8..].copy_from_slice(&b.to_ne_bytes());
    Ipv6Addr::from(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Cidr;

    /// 4,096 addresses of a family fit; one more is refused with the number, before any change
    /// (issue 26, item 6). The families and the prefixes count apart.
    #[test]
    fn more_owners_than_the_maps_hold_are_refused_with_the_number() {
        let v4 = |n: u32| -> Vec<Cidr> {
            (0..n)
                .map(|i| format!("198.18.{}.{}/15", i / 250, i % 250 + 1).parse().unwrap())
                .collect()
        };
        let mut a = ManagedInterface::fixture(3, "eth1", v4(2048));
        let b = ManagedInterface::fixture(4, "eth2", v4(2048));
        a.prefixes = vec!["198.19.0.0/28".parse().unwrap()];
        assert!(check_capacity(&[a.clone(), b.clone()]).is_ok(), "4,096 fit");
        a.addrs.push("198.19.255.1/15".parse().unwrap());
        let err = check_capacity(&[a, b]).unwrap_err().to_string();
        assert!(
            err.contains("4097 IPv4 addresses") && err.contains("at most 4096"),
            "{err}"
        );
    }
}
