//! What is in the kernel now, for `status`, `stats` and `metrics`: attachments, counters, owner
//! tables.

use std::{collections::BTreeMap, os::fd::AsFd as _};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    maps::{IterableMap as _, MapData, PerCpuArray, PerCpuHashMap},
    programs::{ProgramError, SchedClassifier, TcAttachType},
};
use enipin_ebpf::{Counters, FAST_SLOTS, PROGRAM, layout::MAPS, maps};
use serde::Serialize;

use crate::{settings::config::Paths, model::ManagedInterface};

use super::{
    attach::{AttachKind, attachments, ifname},
    batch,
    derived::{OwnerTable, read_table},
    pins::Pins,
    program::PROG_PIN,
};

/// A live attachment of the program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attached {
    /// The interface's index.
    pub ifindex: u32,
    /// The interface's name (`?` if it went between reading the pins and asking its name).
    pub name: String,
    /// TCX link or netlink filter.
    pub kind: AttachKind,
}

/// What is attached now (attachments whose interface is gone are left out), or empty.
pub fn attached(paths: &Paths) -> Result<Vec<Attached>> {
    Ok(attachments(paths)?
        .into_iter()
        .filter(|a| a.alive(&paths.pin_dir))
        .map(|a| Attached {
            ifindex: a.ifindex,
            name: ifname(a.ifindex).unwrap_or_else(|| "?".into()),
            kind: a.kind(),
        })
        .collect())
}

/// What of the datapath of `managed` is missing under the pin directory, one note each: the
/// directory, the program's pin, a map's pin, an interface's live attachment. Cheap enough for
/// `enipin watch` to ask every 250 ms (a few stats, and per interface one open and one TCX
/// query), unlike a plan, which reads every map.
pub(crate) fn missing(managed: &[ManagedInterface], paths: &Paths) -> Result<Vec<String>> {
    let dir = &paths.pin_dir;
    if managed.is_empty() {
        return Ok(Vec::new());
    }
    if !dir.exists() {
        return Ok(vec![format!("pin dir {}", dir.display())]);
    }
    let mut out: Vec<String> = std::iter::once(PROG_PIN)
        .chain(MAPS.iter().map(|l| l.name))
        .filter(|name| !dir.join(name).exists())
        .map(|name| format!("pin {name}"))
        .collect();
    let live: Vec<u32> = attachments(paths)?
        .into_iter()
        .filter(|a| a.alive(dir))
        .map(|a| a.ifindex)
        .collect();
    out.extend(
        managed
            .iter()
            .filter(|m| !live.contains(&m.ifindex))
            .map(|m| format!("{PROGRAM}'s link on {}", m.name)),
    );
    Ok(out)
}

/// An enipin program the kernel runs at an interface's egress (TCX), whoever pinned its link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Running {
    pub ifindex: u32,
    pub name: String,
    pub program_id: u32,
}

/// Every program named [`PROGRAM`] at a TCX egress of this namespace, asked of the kernel (not
/// of a pin directory): what `detach` checks it left nothing behind with. Empty on kernels
/// without TCX (< 6.6), whose netlink filters are found only through their pin-dir records.
pub(crate) fn running_at_egress() -> Result<Vec<Running>> {
    let mut out = Vec::new();
    for (ifindex, name) in interfaces() {
        let progs = match SchedClassifier::query_tcx(ifindex, TcAttachType::Egress) {
            Ok((_, progs)) => progs,
            Err(ProgramError::SyscallError(e))
                if matches!(
                    e.io_error.raw_os_error(),
                    // No TCX, or the interface went while we asked.
                    Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENODEV)
                ) =>
            {
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("asking the kernel for {name}'s programs"));
            }
        };
        out.extend(
            progs
                .iter()
                .filter(|p| p.name_as_str() == Some(PROGRAM))
                .map(|p| Running {
                    ifindex,
                    name: name.clone(),
                    program_id: p.id(),
                }),
        );
    }
    Ok(out)
}

/// The namespace's interfaces (ifindex, name).
fn interfaces() -> Vec<(u32, String)> {
    // SAFETY: if_nameindex returns an array ended by a zero entry (or NULL), freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    // SAFETY: every entry up to the terminating zero one is valid, with a NUL-terminated name.
    unsafe {
        let mut p = list;
        while (*p).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy();
            out.push(((*p).if_index, name.into_owned()));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// Counters per interface (ifindex; 0 is the "unknown interface" slot), summed over CPUs.
/// Nothing pinned: an error saying so (not an empty list, which would read as "no traffic").
pub fn counters(paths: &Paths) -> Result<Vec<(u32, Counters)>> {
    let pins = Pins::open(paths)?;
    if let Some((name, why)) = pins
        .other_layout()
        .iter()
        .find(|(n, _)| [maps::COUNTERS, maps::COUNTERS_FAST].contains(n))
    {
        bail!(
            "the counters under {} were pinned by another enipin version ({name}: {why}); \
             `enipin attach` with this version upgrades the datapath",
            paths.pin_dir.display()
        );
    }
    let Some(map) = pins.map(maps::COUNTERS)? else {
        bail!(
            "no datapath counters under {} (run `enipin attach` first, or pass --pin-dir)",
            paths.pin_dir.display()
        );
    };
    let m: PerCpuHashMap<_, u32, Counters> = PerCpuHashMap::try_from(map)?;
    // The program counts in the fast array for small ifindexes, in the hash for the rest.
    let fast = pins
        .map(maps::COUNTERS_FAST)?
        .map(PerCpuArray::<_, Counters>::try_from)
        .transpose()?;
    let mut out: BTreeMap<u32, Counters> = BTreeMap::new();
    for kv in m.iter() {
        let (k, per_cpu) = kv?;
        let sum = out.entry(k).or_default();
        per_cpu.iter().for_each(|c| sum.add(c));
    }
    if let Some(fast) = fast {
        for (k, per_cpu) in (0..FAST_SLOTS).zip(fast_slots(&fast)?) {
            // A slot of an interface that is not (or no longer) managed is "unknown" (0).
            let key = if out.contains_key(&k) { k } else { 0 };
            let sum = out.entry(key).or_default();
            per_cpu.iter().for_each(|c| sum.add(c));
        }
    }
    Ok(out.into_iter().collect())
}

/// Every slot of the fast counter array, each per CPU: one batch lookup, or one lookup per slot
/// where the kernel has no batch operation for arrays.
fn fast_slots(fast: &PerCpuArray<MapData, Counters>) -> Result<Vec<Vec<Counters>>> {
    let cpus = aya::util::nr_cpus()
        .map_err(|(path, e)| anyhow!("reading {path}: {e}"))?
        .get() as usize;
    let fd = fast.map().fd().as_fd();
    if let Some(all) = batch::per_cpu_array(fd, FAST_SLOTS, cpus)
        .with_context(|| format!("reading {}", maps::COUNTERS_FAST))?
    {
        return Ok(all);
    }
    fast.iter()
        .map(|per_cpu| Ok(per_cpu?.iter().copied().collect()))
        .collect()
}

/// The owner table `name` (`maps::TABLE_V4` or `TABLE_V6`) as the program sees it. `None` when
/// nothing (of this build's layout) is pinned or no table has been swapped in yet.
#[cfg(feature = "testing")]
pub fn owner_table<const N: usize, const K: usize>(
    paths: &Paths,
    name: &str,
) -> Result<Option<OwnerTable<N, K>>>
where
    enipin_ebpf::Bucket<N, K>: aya::Pod,
{
    read_table(&Pins::open(paths)?, name)
}

/// What an owner table holds: addresses in their buckets, and buckets that spilled (their extra
/// addresses are looked up in the owner hash map, about 10 ns more per packet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct TableSummary {
    pub addresses: usize,
    pub spilled_buckets: usize,
}

impl<const N: usize, const K: usize> From<&OwnerTable<N, K>> for TableSummary {
    fn from(t: &OwnerTable<N, K>) -> Self {
        Self {
            addresses: t
                .buckets
                .iter()
                .map(|b| b.ifindex.iter().filter(|i| **i != 0).count())
                .sum(),
            spilled_buckets: t.buckets.iter().filter(|b| b.spill != 0).count(),
        }
    }
}

/// Both families' owner tables, summed up (`None`: no table installed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct OwnerTables {
    pub ipv4: Option<TableSummary>,
    pub ipv6: Option<TableSummary>,
}

/// [`OwnerTables`] as pinned.
pub(crate) fn table_summary(paths: &Paths) -> Result<OwnerTables> {
    let pins = Pins::open(paths)?;
    let v4 = read_table::<4, { enipin_ebpf::BUCKET_V4 }>(&pins, maps::TABLE_V4)?;
    let v6 = read_table::<16, { enipin_ebpf::BUCKET_V6 }>(&pins, maps::TABLE_V6)?;
    Ok(OwnerTables {
        ipv4: v4.as_ref().map(TableSummary::from),
        ipv6: v6.as_ref().map(TableSummary::from),
    })
}
