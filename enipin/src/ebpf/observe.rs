use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use aya::maps::{Array, ArrayOfMaps, Map, MapData, PerCpuArray, PerCpuHashMap};
use enipin_ebpf::{Bucket, Counters, FAST_SLOTS, TABLE_BUCKETS, maps};

use crate::config::Paths;

use super::*;

/// What is attached now: (ifindex, interface name, attach kind "tcx"/"netlink"), or empty.
pub fn attached(paths: &Paths) -> Result<Vec<(u32, String, String)>> {
    Ok(attachments(paths)?
        .into_iter()
        .filter(|a| a.alive(&paths.pin_dir))
        .map(|a| {
            let kind = if a.netlink.is_some() {
                "netlink"
            } else {
                "tcx"
            };
            (
                a.ifindex,
                ifname(a.ifindex).unwrap_or_else(|| "?".into()),
                kind.to_owned(),
            )
        })
        .collect())
}

/// Counters per interface (ifindex; 0 is the "unknown interface" slot), summed over CPUs.
/// Nothing pinned: an error saying so (not an empty list, which would read as "no traffic").
pub fn counters(paths: &Paths) -> Result<Vec<(u32, Counters)>> {
    let stale = stale_maps(paths)?;
    if let Some((name, why)) = stale
        .iter()
        .find(|(n, _)| [maps::COUNTERS, maps::COUNTERS_FAST].contains(n))
    {
        bail!(
            "the counters under {} were pinned by another enipin version ({name}: {why}); \
             `enipin attach` with this version upgrades the datapath",
            paths.pin_dir.display()
        );
    }
    let Some(map) = pinned_map(paths, maps::COUNTERS)? else {
        bail!(
            "no datapath counters under {} (run `enipin attach` first, or pass --pin-dir)",
            paths.pin_dir.display()
        );
    };
    let m: PerCpuHashMap<_, u32, Counters> = PerCpuHashMap::try_from(map)?;
    // The program counts in the fast array for small ifindexes, in the hash for the rest.
    let fast = pinned_map(paths, maps::COUNTERS_FAST)?
        .map(PerCpuArray::<_, Counters>::try_from)
        .transpose()?;
    let mut out: BTreeMap<u32, Counters> = BTreeMap::new();
    for kv in m.iter() {
        let (k, per_cpu) = kv?;
        let sum = out.entry(k).or_default();
        per_cpu.iter().for_each(|c| sum.add(c));
    }
    if let Some(fast) = fast {
        for (k, per_cpu) in (0..FAST_SLOTS).zip(fast.iter()) {
            let per_cpu = per_cpu?;
            // A slot of an interface that is not (or no longer) managed is "unknown" (0).
            let key = if out.contains_key(&k) { k } else { 0 };
            let sum = out.entry(key).or_default();
            per_cpu.iter().for_each(|c| sum.add(c));
        }
    }
    Ok(out.into_iter().collect())
}

/// The owner table `name` (`maps::TABLE_V4` or `TABLE_V6`) as the program sees it: the inner
/// array's map id (a new one after every change) and its buckets. `None` when nothing is pinned
/// or no table has been swapped in yet.
pub fn owner_table<const N: usize, const K: usize>(
    paths: &Paths,
    name: &str,
) -> Result<Option<(u32, Vec<Bucket<N, K>>)>> {
    let Some(map) = pinned_map(paths, name)? else {
        return Ok(None);
    };
    let outer: ArrayOfMaps<_, MapData> = ArrayOfMaps::try_from(map)?;
    let inner = match outer.get(&0, 0) {
        Ok(inner) => inner,
        Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {name}")),
    };
    let id = inner.info()?.id();
    let array: Array<_, Bucket<N, K>> = Array::try_from(Map::Array(inner))?;
    let buckets = (0..TABLE_BUCKETS)
        .map(|i| array.get(&i, 0))
        .collect::<Result<_, _>>()?;
    Ok(Some((id, buckets)))
}

/// What an owner table holds: addresses in their buckets, and buckets that spilled (their extra
/// addresses are looked up in the owner hash map, about 10 ns more per packet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableSummary {
    pub addresses: usize,
    pub spilled_buckets: usize,
}

/// [`TableSummary`] of both families' tables (`None`: no table installed).
pub fn table_summary(paths: &Paths) -> Result<[Option<TableSummary>; 2]> {
    fn summary<const N: usize, const K: usize>(
        paths: &Paths,
        name: &str,
    ) -> Result<Option<TableSummary>> {
        Ok(
            owner_table::<N, K>(paths, name)?.map(|(_, buckets)| TableSummary {
                addresses: buckets
                    .iter()
                    .map(|b| b.ifindex.iter().filter(|i| **i != 0).count())
                    .sum(),
                spilled_buckets: buckets.iter().filter(|b| b.spill != 0).count(),
            }),
        )
    }
    let stale = stale_maps(paths)?;
    let v4 = match stale.contains_key(maps::TABLE_V4) {
        true => None,
        false => summary::<4, { enipin_ebpf::BUCKET_V4 }>(paths, maps::TABLE_V4)?,
    };
    let v6 = match stale.contains_key(maps::TABLE_V6) {
        true => None,
        false => summary::<16, { enipin_ebpf::BUCKET_V6 }>(paths, maps::TABLE_V6)?,
    };
    Ok([v4, v6])
}
