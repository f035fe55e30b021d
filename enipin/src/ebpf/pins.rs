use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use aya::maps::{ArrayOfMaps, Map, MapData, MapInfo, MapType};
use enipin_ebpf::{Bucket, Counters, FAST_SLOTS, Owner, TABLE_BUCKETS, maps};

use crate::config::Paths;

pub(super) fn pinned_map(paths: &Paths, name: &str) -> Result<Option<Map>> {
    let path = paths.pin_dir.join(name);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Some(Map::from_map_data(data)?))
}

/// The layout this build's program expects of each pinned map: type, key and value size, capacity.
/// Sizes come from the shared `#[repr(C)]` types, so a change there changes this too.
pub(super) fn layouts() -> [(&'static str, MapType, usize, usize, u32); 11] {
    use enipin_ebpf::{LocalV4, LocalV6, MAX_INTERFACES, MAX_OWNERS};
    use std::mem::size_of;
    let lpm = |n: usize| size_of::<u32>() + n; // prefix length, then the address
    [
        (
            maps::OWNERS_V4,
            MapType::Hash,
            4,
            size_of::<Owner>(),
            MAX_OWNERS,
        ),
        (
            maps::OWNERS_V6,
            MapType::Hash,
            16,
            size_of::<Owner>(),
            MAX_OWNERS,
        ),
        (
            maps::PREFIXES_V4,
            MapType::LpmTrie,
            lpm(4),
            size_of::<Owner>(),
            MAX_OWNERS,
        ),
        (
            maps::PREFIXES_V6,
            MapType::LpmTrie,
            lpm(16),
            size_of::<Owner>(),
            MAX_OWNERS,
        ),
        (
            maps::COUNTERS,
            MapType::PerCpuHash,
            4,
            size_of::<Counters>(),
            MAX_INTERFACES,
        ),
        (
            maps::COUNTERS_FAST,
            MapType::PerCpuArray,
            4,
            size_of::<Counters>(),
            FAST_SLOTS,
        ),
        (
            maps::LOCAL_V4,
            MapType::Array,
            4,
            size_of::<LocalV4>(),
            FAST_SLOTS,
        ),
        (
            maps::LOCAL_V6,
            MapType::Array,
            4,
            size_of::<LocalV6>(),
            FAST_SLOTS,
        ),
        (maps::TABLE_V4, MapType::ArrayOfMaps, 4, 4, 1),
        (maps::TABLE_V6, MapType::ArrayOfMaps, 4, 4, 1),
        (
            maps::CONFIG,
            MapType::Array,
            4,
            size_of::<enipin_ebpf::Config>(),
            1,
        ),
    ]
}

/// Pinned maps whose layout is not what this build expects (pinned by another enipin version),
/// with what differs. The program cannot load against them; `attach` replaces them (their
/// content is derived from the desired state, counters excepted) and swaps the new program in.
pub(super) fn stale_maps(paths: &Paths) -> Result<BTreeMap<&'static str, String>> {
    let mut out = BTreeMap::new();
    for (name, ty, key, value, max) in layouts() {
        let path = paths.pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let info =
            MapInfo::from_pin(&path).with_context(|| format!("reading {}", path.display()))?;
        let have = (
            info.map_type().ok(),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
        );
        let want = (Some(ty), key as u32, value as u32, max);
        if have != want {
            let mut what = Vec::new();
            if have.0 != want.0 {
                what.push(format!("type {:?} -> {ty:?}", have.0));
            }
            for (field, h, w) in [("key size", have.1, want.1), ("value size", have.2, want.2)] {
                if h != w {
                    what.push(format!("{field} {h} -> {w} bytes"));
                }
            }
            if have.3 != want.3 {
                what.push(format!("capacity {} -> {max}", have.3));
            }
            out.insert(name, what.join(", "));
            continue;
        }
        // An owner table's inner array must have this build's bucket size as well.
        if ty == MapType::ArrayOfMaps {
            let outer: ArrayOfMaps<_, MapData> =
                ArrayOfMaps::try_from(Map::from_map_data(MapData::from_pin(&path)?)?)?;
            let bucket = if name == maps::TABLE_V4 {
                std::mem::size_of::<Bucket<4, { enipin_ebpf::BUCKET_V4 }>>()
            } else {
                std::mem::size_of::<Bucket<16, { enipin_ebpf::BUCKET_V6 }>>()
            };
            if let Ok(inner) = outer.get(&0, 0) {
                let i = inner.info()?;
                if (i.value_size(), i.max_entries()) != (bucket as u32, TABLE_BUCKETS) {
                    out.insert(
                        name,
                        format!(
                            "buckets {} x {} bytes -> {TABLE_BUCKETS} x {bucket}",
                            i.max_entries(),
                            i.value_size()
                        ),
                    );
                }
            }
        }
    }
    Ok(out)
}

/// `pinned_map`, except that a map of another layout counts as absent.
pub(super) fn pinned_current(
    paths: &Paths,
    stale: &BTreeMap<&'static str, String>,
    name: &str,
) -> Result<Option<Map>> {
    if stale.contains_key(name) {
        return Ok(None);
    }
    pinned_map(paths, name)
}

pub(super) fn remove_pins(pin_dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(pin_dir) else {
        return Ok(out);
    };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for p in names {
        fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        out.push(format!("- unpin {}", p.display()));
    }
    fs::remove_dir(pin_dir).with_context(|| format!("removing {}", pin_dir.display()))?;
    out.push(format!("- remove {}", pin_dir.display()));
    Ok(out)
}
