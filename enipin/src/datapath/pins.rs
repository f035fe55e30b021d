//! The pin directory: what this build finds pinned there, opened once per plan or apply, with
//! the check that each map has this build's layout ([`enipin_ebpf::layout::MAPS`]).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use aya::maps::{ArrayOfMaps, Map, MapData, MapInfo};
use enipin_ebpf::layout::{Kind, Layout, MAPS};

use super::owner::is_mark;
use crate::settings::config::Paths;

/// The pins under a pin directory, as found when opened.
#[derive(Debug)]
pub(super) struct Pins {
    dir: PathBuf,
    /// Pinned maps whose layout is not this build's (pinned by another enipin version), with
    /// what differs. The program cannot load against them; `attach` replaces them (their content
    /// is derived from the desired state, counters excepted) and swaps the new program in.
    other_layout: BTreeMap<&'static str, String>,
}

impl Pins {
    /// Reads the pin directory (absent: nothing pinned) and checks every pinned map's layout.
    /// Whose it is is left to the callers that change it or read its attachments as this
    /// namespace's ([`super::owner`]): counters may be read from anywhere (the benchmark reads
    /// them from outside the namespace it measures).
    pub(super) fn open(paths: &Paths) -> Result<Self> {
        let dir = paths.pin_dir.clone();
        let mut other_layout = BTreeMap::new();
        for l in &MAPS {
            let path = dir.join(l.name);
            if path.exists()
                && let Some(why) = layout_differs(&path, l)?
            {
                other_layout.insert(l.name, why);
            }
        }
        Ok(Self { dir, other_layout })
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Maps pinned with another layout, with what differs (`value size 8 -> 12 bytes`).
    pub(super) fn other_layout(&self) -> &BTreeMap<&'static str, String> {
        &self.other_layout
    }

    /// The pinned map `name`; `None` when nothing is pinned under that name or the pinned map has
    /// another layout (it counts as absent: this build replaces it).
    pub(super) fn map(&self, name: &str) -> Result<Option<Map>> {
        let path = self.dir.join(name);
        if self.other_layout.contains_key(name) || !path.exists() {
            return Ok(None);
        }
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Some(Map::from_map_data(data)?))
    }
}

/// What differs between the map pinned at `path` and this build's layout `want`, if anything.
fn layout_differs(path: &Path, want: &Layout) -> Result<Option<String>> {
    let info = MapInfo::from_pin(path).with_context(|| format!("reading {}", path.display()))?;
    let ty = info.map_type().ok();
    let mut what = Vec::new();
    if ty.map(|t| t as u32) != Some(want.kind as u32) {
        what.push(format!("type {ty:?} -> {:?}", want.kind));
    }
    for (field, h, w) in [
        ("key size", info.key_size(), want.key_size),
        ("value size", info.value_size(), want.value_size),
    ] {
        if h != w {
            what.push(format!("{field} {h} -> {w} bytes"));
        }
    }
    if info.max_entries() != want.max_entries {
        what.push(format!(
            "capacity {} -> {}",
            info.max_entries(),
            want.max_entries
        ));
    }
    if !what.is_empty() {
        return Ok(Some(what.join(", ")));
    }
    // An owner table's inner array must have this build's bucket size as well.
    let (Kind::ArrayOfMaps, Some((bucket, buckets))) = (want.kind, want.inner) else {
        return Ok(None);
    };
    let outer: ArrayOfMaps<_, MapData> =
        ArrayOfMaps::try_from(Map::from_map_data(MapData::from_pin(path)?)?)?;
    let Ok(inner) = outer.get(&0, 0) else {
        return Ok(None); // no table swapped in yet
    };
    let i = inner.info()?;
    if (i.value_size(), i.max_entries()) == (bucket, buckets) {
        return Ok(None);
    }
    Ok(Some(format!(
        "buckets {} x {} bytes -> {buckets} x {bucket}",
        i.max_entries(),
        i.value_size()
    )))
}

/// Removes every pin left under `pin_dir`, then the namespace mark, then the directory. Returns
/// one line per removal. The mark goes last: interrupted before, the directory stays this
/// namespace's.
pub(super) fn remove_pins(pin_dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(pin_dir) else {
        return Ok(out);
    };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    let mark = |p: &PathBuf| p.file_name().is_some_and(|n| is_mark(&n.to_string_lossy()));
    names.sort_by_key(|p| (mark(p), p.clone()));
    for p in names {
        if mark(&p) {
            fs::remove_dir(&p).with_context(|| format!("removing {}", p.display()))?;
            out.push(format!("- remove {}", p.display()));
        } else {
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            out.push(format!("- unpin {}", p.display()));
        }
    }
    fs::remove_dir(pin_dir).with_context(|| format!("removing {}", pin_dir.display()))?;
    out.push(format!("- remove {}", pin_dir.display()));
    Ok(out)
}
