//! The TC egress enforcer's loader: load, pin, attach, fill the owner maps, read the counters.
//! It is the second applier of the one desired state (the first is [`crate::apply`]).
//!
//! Everything enipin puts in the kernel for the datapath lives under the pin directory, so the
//! enforcement outlives the `enipin attach` process and a later run finds it again:
//! - the maps, pinned by name (`ENIPIN_OWN4`, ..., see [`enipin_ebpf::maps`]): counters and owners
//!   survive a program reload;
//! - `prog`: the classifier;
//! - `link-<ifindex>`: one TCX link per managed interface (kernels >= 6.6);
//! - `nl-<ifindex>-<priority>-<handle>/`: an empty directory marking a netlink (clsact) filter
//!   on kernels without TCX (< 6.6), which cannot be pinned; priority and handle identify exactly
//!   enipin's filter for an in-place replace or removal.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CStr,
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, ArrayOfMaps, HashMap, LpmTrie, Map, MapData, MapInfo, MapType, PerCpuArray,
        PerCpuHashMap, PerCpuValues, lpm_trie::Key,
    },
    programs::{
        LinkOrder, ProgramError, ProgramInfo, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{self, SchedClassifierLink, TcAttach},
    },
};
use enipin_ebpf::{
    Bucket, Counters, FAST_SLOTS, Local, MODE_ENFORCE, MODE_MONITOR, Owner, PREFIXES_V4_PRESENT,
    PREFIXES_V6_PRESENT, PROGRAM, TABLE_BUCKETS, bucket_index, maps, words,
};

use crate::{
    config::{Config, Mode, Paths},
    model::ManagedInterface,
};

/// The eBPF object, built by build.rs with the pinned nightly and bpf-linker.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enipin"));

const PROG_PIN: &str = "prog";
const LINK_PREFIX: &str = "link-";
const NETLINK_PREFIX: &str = "nl-";

/// What the datapath must change to match the desired state, diffed with what is pinned.
#[derive(Debug, Default)]
pub struct EbpfPlan {
    /// Human-readable lines, one per change (`+ attach enipin_egress to eth1 (tcx)`, ...).
    pub changes: Vec<String>,
    diff: Diff,
}

impl EbpfPlan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// The structured form of [`EbpfPlan::changes`].
#[derive(Debug, Default)]
struct Diff {
    program: ProgramChange,
    /// Interfaces to attach to (ifindex, name).
    attach: Vec<(u32, String)>,
    /// Pins of attachments to remove (stale or no longer managed), by file name.
    detach: Vec<String>,
    v4: MapDiff<[u8; 4], Owner>,
    v6: MapDiff<[u8; 16], Owner>,
    p4: MapDiff<([u8; 4], u8), Owner>,
    p6: MapDiff<([u8; 16], u8), Owner>,
    counters: MapDiff<u32, ()>,
    config: Option<enipin_ebpf::Config>,
    /// Pinned maps of another layout, to unpin before loading (see [`stale_maps`]).
    recreate: Vec<&'static str>,
    /// Derived maps to rebuild from the owner maps (see [`derived_out_of_step`]); every apply
    /// that writes maps does, this only makes the plan non-empty.
    resync: bool,
    /// Nothing must remain: detach everything and remove the pin directory.
    remove_all: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum ProgramChange {
    #[default]
    Keep,
    /// Nothing pinned yet.
    Load,
    /// A different program is pinned: swap it atomically on every link.
    Replace,
}

#[derive(Debug)]
struct MapDiff<K, V> {
    set: Vec<(K, V)>,
    remove: Vec<K>,
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
    fn new(installed: &BTreeMap<K, V>, desired: &BTreeMap<K, V>) -> Self {
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
struct State {
    v4: BTreeMap<[u8; 4], Owner>,
    v6: BTreeMap<[u8; 16], Owner>,
    p4: BTreeMap<([u8; 4], u8), Owner>,
    p6: BTreeMap<([u8; 16], u8), Owner>,
    counters: BTreeMap<u32, ()>,
    config: Option<enipin_ebpf::Config>,
}

fn desired(managed: &[ManagedInterface], cfg: &Config) -> State {
    let mut s = State::default();
    s.counters.insert(0, ());
    for m in managed {
        let owner = Owner {
            ifindex: m.ifindex,
            mtu: m.mtu,
        };
        s.counters.insert(m.ifindex, ());
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

fn pinned_map(paths: &Paths, name: &str) -> Result<Option<Map>> {
    let path = paths.pin_dir.join(name);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Some(Map::from_map_data(data)?))
}

/// The layout this build's program expects of each pinned map: type, key and value size, capacity.
/// Sizes come from the shared `#[repr(C)]` types, so a change there changes this too.
fn layouts() -> [(&'static str, MapType, usize, usize, u32); 11] {
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

/// What is pinned (the rollback's "before" and "now").
fn installed(paths: &Paths) -> Result<State> {
    installed_with(paths, &stale_maps(paths)?)
}

/// Pinned maps whose layout is not what this build expects (pinned by another enipin version),
/// with what differs. The program cannot load against them; `attach` replaces them (their
/// content is derived from the desired state, counters excepted) and swaps the new program in.
fn stale_maps(paths: &Paths) -> Result<BTreeMap<&'static str, String>> {
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
fn pinned_current(
    paths: &Paths,
    stale: &BTreeMap<&'static str, String>,
    name: &str,
) -> Result<Option<Map>> {
    if stale.contains_key(name) {
        return Ok(None);
    }
    pinned_map(paths, name)
}

/// What is pinned, reading a map of another layout (`stale`) as absent.
fn installed_with(paths: &Paths, stale: &BTreeMap<&'static str, String>) -> Result<State> {
    let pinned_map = |paths: &Paths, name: &str| pinned_current(paths, stale, name);
    let mut s = State::default();
    if let Some(map) = pinned_map(paths, maps::OWNERS_V4)? {
        for kv in HashMap::<_, [u8; 4], Owner>::try_from(map)?.iter() {
            let (k, v) = kv?;
            s.v4.insert(k, v);
        }
    }
    if let Some(map) = pinned_map(paths, maps::OWNERS_V6)? {
        for kv in HashMap::<_, [u8; 16], Owner>::try_from(map)?.iter() {
            let (k, v) = kv?;
            s.v6.insert(k, v);
        }
    }
    if let Some(map) = pinned_map(paths, maps::PREFIXES_V4)? {
        for kv in LpmTrie::<_, [u8; 4], Owner>::try_from(map)?.iter() {
            let (k, v) = kv?;
            s.p4.insert((k.data(), k.prefix_len() as u8), v);
        }
    }
    if let Some(map) = pinned_map(paths, maps::PREFIXES_V6)? {
        for kv in LpmTrie::<_, [u8; 16], Owner>::try_from(map)?.iter() {
            let (k, v) = kv?;
            s.p6.insert((k.data(), k.prefix_len() as u8), v);
        }
    }
    if let Some(map) = pinned_map(paths, maps::COUNTERS)? {
        for k in PerCpuHashMap::<_, u32, Counters>::try_from(map)?.keys() {
            s.counters.insert(k?, ());
        }
    }
    if let Some(map) = pinned_map(paths, maps::CONFIG)? {
        s.config = Some(Array::<_, enipin_ebpf::Config>::try_from(map)?.get(&0, 0)?);
    }
    Ok(s)
}

/// An attachment found under the pin directory.
#[derive(Debug)]
struct Attachment {
    ifindex: u32,
    /// File name under the pin directory (`link-3`, `nl-3-49152-1`).
    pin: String,
    /// A netlink filter's (priority, handle); `None` for a TCX link.
    netlink: Option<(u16, u32)>,
}

impl Attachment {
    fn parse(name: &str) -> Option<Self> {
        if let Some(i) = name.strip_prefix(LINK_PREFIX) {
            let ifindex = i.parse().ok()?;
            return Some(Self {
                ifindex,
                pin: name.into(),
                netlink: None,
            });
        }
        let mut parts = name.strip_prefix(NETLINK_PREFIX)?.split('-');
        let (ifindex, prio, handle) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Self {
            ifindex: ifindex.parse().ok()?,
            pin: name.into(),
            netlink: Some((prio.parse().ok()?, handle.parse().ok()?)),
        })
    }

    /// The netlink filter as an aya link (detaching it removes exactly this filter).
    fn nl_link(&self) -> Option<SchedClassifierLink> {
        let (prio, handle) = self.netlink?;
        let parent = TcAttachType::Egress.into();
        SchedClassifierLink::attached(self.ifindex, parent, prio, handle.into(), None).ok()
    }

    /// Whether it still runs on its interface: a TCX link goes defunct when its interface goes.
    fn alive(&self, pin_dir: &Path) -> bool {
        match self.netlink {
            Some(_) => ifname(self.ifindex).is_some(),
            None => link_alive(&pin_dir.join(&self.pin), self.ifindex),
        }
    }
}

fn attachments(paths: &Paths) -> Result<Vec<Attachment>> {
    let entries = match fs::read_dir(&paths.pin_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", paths.pin_dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        out.extend(Attachment::parse(&entry?.file_name().to_string_lossy()));
    }
    out.sort_by_key(|a| a.ifindex);
    Ok(out)
}

/// Whether a pinned TCX link still runs our program on its interface (the interface may be gone,
/// leaving a defunct link behind).
fn link_alive(path: &Path, ifindex: u32) -> bool {
    let Ok(link) = PinnedLink::from_pin(path) else {
        return false;
    };
    let Ok(info) = FdLink::from(link).info() else {
        return false;
    };
    match SchedClassifier::query_tcx(ifindex, TcAttachType::Egress) {
        Ok((_, progs)) => progs.iter().any(|p| p.id() == info.program_id()),
        Err(_) => false,
    }
}

pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn owner_name(o: &Owner) -> String {
    ifname(o.ifindex).unwrap_or_else(|| format!("ifindex {}", o.ifindex))
}

/// Loads the object and its classifier [`PROGRAM`] (not attached); maps are created under (or
/// reused from) `pin_dir`, which must exist. Public for the benchmark, which test-runs the program
/// on the maps [`apply`] filled.
pub fn load(pin_dir: &Path) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(OBJECT)
        .with_context(|| {
            format!(
                "loading the eBPF object with the maps pinned under {} (pins from another enipin \
                 version? run `enipin detach` first)",
                pin_dir.display()
            )
        })?;
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| anyhow!("program {PROGRAM} missing from the object"))?
        .try_into()?;
    prog.load()
        .context("loading the classifier (see the verifier log above)")?;
    Ok(ebpf)
}

fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    Ok(ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| anyhow!("no program {PROGRAM}"))?
        .try_into()?)
}

/// Computes the datapath changes for `managed` (empty `managed`: remove everything).
pub fn plan(managed: &[ManagedInterface], cfg: &Config, paths: &Paths) -> Result<EbpfPlan> {
    let mut plan = EbpfPlan::default();
    let found = attachments(paths)?;
    if managed.is_empty() {
        plan.diff.remove_all = true;
        for a in &found {
            plan.changes.push(format!(
                "- detach {PROGRAM} from ifindex {} ({})",
                a.ifindex, a.pin
            ));
        }
        if paths.pin_dir.exists() {
            plan.changes
                .push(format!("- remove pins under {}", paths.pin_dir.display()));
        }
        return Ok(plan);
    }
    let want = desired(managed, cfg);
    let stale = stale_maps(paths)?;
    let have = installed_with(paths, &stale)?;
    let d = &mut plan.diff;
    for (name, why) in &stale {
        let reset = if [maps::COUNTERS, maps::COUNTERS_FAST].contains(name) {
            "; its counters start again from zero"
        } else {
            ""
        };
        plan.changes.push(format!(
            "~ recreate map {name} (pinned by another enipin version: {why}{reset})"
        ));
        d.recreate.push(name);
    }
    for name in derived_out_of_step(paths, &stale)? {
        plan.changes.push(format!(
            "~ rebuild {name} (out of step with the owner maps: an earlier run was interrupted)"
        ));
        d.resync = true;
    }
    let prog_pin = paths.pin_dir.join(PROG_PIN);
    d.program = if !prog_pin.exists() {
        ProgramChange::Load
    } else if !stale.is_empty() {
        // Maps of another layout: a program of another build, which this one replaces.
        ProgramChange::Replace
    } else {
        // Same program? Compare tags (the kernel's hash of the instructions, map fds masked).
        let old = ProgramInfo::from_pin(&prog_pin)
            .with_context(|| format!("reading {}", prog_pin.display()))?
            .tag();
        if old == our_tag(&paths.pin_dir)? {
            ProgramChange::Keep
        } else {
            ProgramChange::Replace
        }
    };
    match d.program {
        ProgramChange::Load => plan.changes.push(format!(
            "+ load {PROGRAM}, pinned under {}",
            paths.pin_dir.display()
        )),
        ProgramChange::Replace => plan
            .changes
            .push(format!("~ replace {PROGRAM} (new build)")),
        ProgramChange::Keep => {}
    }
    let wanted: BTreeSet<u32> = managed.iter().map(|m| m.ifindex).collect();
    let mut alive = BTreeSet::new();
    for a in &found {
        let ok = wanted.contains(&a.ifindex) && a.alive(&paths.pin_dir);
        if ok {
            alive.insert(a.ifindex);
        } else {
            plan.changes.push(format!(
                "- detach {PROGRAM} from ifindex {} ({})",
                a.ifindex, a.pin
            ));
            d.detach.push(a.pin.clone());
        }
    }
    for m in managed.iter().filter(|m| !alive.contains(&m.ifindex)) {
        plan.changes.push(format!(
            "+ attach {PROGRAM} to {} egress (ifindex {})",
            m.name, m.ifindex
        ));
        d.attach.push((m.ifindex, m.name.clone()));
    }
    d.v4 = MapDiff::new(&have.v4, &want.v4);
    d.v6 = MapDiff::new(&have.v6, &want.v6);
    d.p4 = MapDiff::new(&have.p4, &want.p4);
    d.p6 = MapDiff::new(&have.p6, &want.p6);
    d.counters = MapDiff::new(&have.counters, &want.counters);
    let out = &mut plan.changes;
    describe(out, "owner", &d.v4, |k| Ipv4Addr::from(*k).to_string());
    describe(out, "owner", &d.v6, |k| Ipv6Addr::from(*k).to_string());
    describe(out, "prefix", &d.p4, |(k, l)| {
        format!("{}/{l}", Ipv4Addr::from(*k))
    });
    describe(out, "prefix", &d.p6, |(k, l)| {
        format!("{}/{l}", Ipv6Addr::from(*k))
    });
    for (k, ()) in &d.counters.set {
        plan.changes.push(format!("+ counters for ifindex {k}"));
    }
    for k in &d.counters.remove {
        plan.changes.push(format!("- counters for ifindex {k}"));
    }
    if have.config != want.config {
        let c = want.config.unwrap_or_default();
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
        plan.changes.push(format!(
            "~ config mode={mode} debug={} prefixes={prefixes}",
            c.debug
        ));
        d.config = want.config;
    }
    Ok(plan)
}

/// One plan line per owner-map change: `+ owner 198.18.0.2 -> eth1`, `- prefix 198.18.1.16/28`.
fn describe<K>(
    out: &mut Vec<String>,
    what: &str,
    d: &MapDiff<K, Owner>,
    key: impl Fn(&K) -> String,
) {
    for (k, o) in &d.set {
        out.push(format!("+ {what} {} -> {}", key(k), owner_name(o)));
    }
    for k in &d.remove {
        out.push(format!("- {what} {}", key(k)));
    }
}

const BPFFS_MAGIC: i64 = 0xcafe_4a11;
const SYS_FS_BPF: &str = "/sys/fs/bpf";

fn is_bpffs(dir: &Path) -> Result<bool> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: an all-zero statfs is valid; statfs fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and out-parameter.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", dir.display()));
    }
    Ok(st.f_type as i64 == BPFFS_MAGIC)
}

/// Pins only outlive this process on a bpffs: refuse to start otherwise, before anything changes.
/// enipin does not mount one itself: under `ip netns exec` (a private mount namespace with a
/// fresh /sys) such a mount, and every pin in it, would vanish when enipin exits.
fn ensure_bpffs(pin_dir: &Path) -> Result<()> {
    let existing = pin_dir
        .ancestors()
        .find(|p| p.is_dir())
        .unwrap_or(Path::new("/"));
    if is_bpffs(existing)? {
        return Ok(());
    }
    bail!(
        "{} is not on a bpffs, so the datapath would not outlive this command: mount it \
         (`mount -t bpf bpf {SYS_FS_BPF}`; systemd does at boot) or pass --pin-dir on a bpffs. \
         Under `ip netns exec`, /sys is remounted without it: use `enipin --netns NAME …`, which \
         enters only the network namespace",
        pin_dir.display()
    )
}

/// The tag of this binary's program. Finding it takes a load (a verifier run, 10-80 ms here), so
/// it is done once per process: `enipin watch` plans on every reconcile.
fn our_tag(pin_dir: &Path) -> Result<u64> {
    static TAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    if let Some(tag) = TAG.get() {
        return Ok(*tag);
    }
    let mut ebpf = load(pin_dir)?;
    let tag = classifier(&mut ebpf)?.info()?.tag();
    Ok(*TAG.get_or_init(|| tag))
}

/// Carries out a plan, all or nothing: on failure what this call did is undone (new links and
/// pins removed, map entries restored).
pub fn apply(
    plan: EbpfPlan,
    managed: &[ManagedInterface],
    cfg: &Config,
    paths: &Paths,
) -> Result<()> {
    let _ = (managed, cfg); // the plan carries the diff; kept for the appliers' common shape
    if plan.is_empty() {
        return Ok(());
    }
    let d = plan.diff;
    if d.remove_all {
        detach(paths)?;
        return Ok(());
    }
    ensure_bpffs(&paths.pin_dir)?;
    let created_dir = !paths.pin_dir.exists();
    fs::create_dir_all(&paths.pin_dir)
        .with_context(|| format!("creating {}", paths.pin_dir.display()))?;
    let before = installed(paths)?;
    let mut undo = Undo {
        paths,
        created_dir,
        pins: Vec::new(),
        before: Some(before),
        unpinned: Vec::new(),
        ok: false,
    };
    // Maps of another build's layout: unpin them (the running program keeps them until its links
    // are swapped to the new program below) and keep them open to pin back on failure.
    for name in &d.recreate {
        let path = paths.pin_dir.join(name);
        let old =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
        undo.unpinned.push((path, old));
    }
    let mut ebpf = load(&paths.pin_dir)?;
    write_maps(&mut ebpf, &d)?;
    let prog_pin = paths.pin_dir.join(PROG_PIN);
    let prog = classifier(&mut ebpf)?;
    if d.program != ProgramChange::Keep {
        // Swap every live link atomically to the new program before it becomes the pinned one.
        if d.program == ProgramChange::Replace {
            for a in attachments(paths)?
                .iter()
                .filter(|a| !d.detach.contains(&a.pin))
            {
                let path = paths.pin_dir.join(&a.pin);
                let link = match a.nl_link() {
                    // Netlink: the filter is replaced in place (same priority and handle).
                    Some(link) => link,
                    None => {
                        SchedClassifierLink::try_from(FdLink::from(PinnedLink::from_pin(&path)?))?
                    }
                };
                let id = prog
                    .attach_to_link(link)
                    .with_context(|| format!("updating {}", path.display()))?;
                // A pinned TCX link stays when its fd closes; a netlink filter would be deleted
                // when its link is dropped, so that one is forgotten.
                let link = prog.take_link(id)?;
                if a.netlink.is_some() {
                    std::mem::forget(link);
                }
            }
            let _ = fs::remove_file(&prog_pin);
        }
        prog.pin(&prog_pin)
            .with_context(|| format!("pinning {}", prog_pin.display()))?;
    }
    let prog = if d.program == ProgramChange::Keep {
        &mut SchedClassifier::from_pin(&prog_pin)?
    } else {
        prog
    };
    for (ifindex, name) in &d.attach {
        let pin = attach_one(prog, *ifindex, &paths.pin_dir)
            .with_context(|| format!("attaching {PROGRAM} to {name} egress"))?;
        undo.pins.push(pin);
    }
    for pin in &d.detach {
        remove_attachment(&paths.pin_dir, pin)?;
    }
    undo.ok = true;
    Ok(())
}

/// Reverts a failed [`apply`] when dropped unless `ok`.
struct Undo<'a> {
    paths: &'a Paths,
    created_dir: bool,
    pins: Vec<String>,
    before: Option<State>,
    /// Maps of another layout that were unpinned: pinned back in place of their replacements.
    unpinned: Vec<(PathBuf, MapData)>,
    ok: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.ok {
            return;
        }
        for pin in &self.pins {
            let _ = remove_attachment(&self.paths.pin_dir, pin);
        }
        if self.created_dir {
            let _ = remove_pins(&self.paths.pin_dir);
            return;
        }
        if let Some(before) = self.before.take() {
            let _ = restore(self.paths, &before);
        }
        for (path, old) in self.unpinned.drain(..) {
            let _ = fs::remove_file(&path);
            let _ = old.pin(&path);
        }
    }
}

/// Writes the map entries back to `before` (used on rollback).
fn restore(paths: &Paths, before: &State) -> Result<()> {
    let now = installed(paths)?;
    let d = Diff {
        v4: MapDiff::new(&now.v4, &before.v4),
        v6: MapDiff::new(&now.v6, &before.v6),
        p4: MapDiff::new(&now.p4, &before.p4),
        p6: MapDiff::new(&now.p6, &before.p6),
        counters: MapDiff::new(&now.counters, &before.counters),
        config: before.config,
        ..Diff::default()
    };
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&paths.pin_dir)
        .load(OBJECT)?;
    write_maps(&mut ebpf, &d)
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))
}

/// Derives what the program reads instead of the owner maps, from the owner maps as they now are:
/// - the fast-path arrays (each interface's first own addresses, sorted), writing only the slots
///   that change; a torn read of a slot can only make the program pass a packet, never redirect;
/// - the owner tables, rebuilt whole in a new inner array and swapped in when they differ, so a
///   reader never sees a bucket half written (which could pair an address with a wrong owner).
///
/// Public for the tests, which fill the owner maps by hand.
pub fn sync_derived(ebpf: &mut Ebpf) -> Result<()> {
    let v4 = owned::<4>(map(ebpf, maps::OWNERS_V4)?)?;
    let v6 = owned::<16>(map(ebpf, maps::OWNERS_V6)?)?;
    /// Writes the slots that differ from [`local`]`(owned)`.
    fn write_local<const N: usize, const K: usize>(
        ebpf: &mut Ebpf,
        name: &str,
        owned: &BTreeMap<[u8; N], u32>,
    ) -> Result<()>
    where
        Local<N, K>: aya::Pod,
    {
        let mut array: Array<_, Local<N, K>> = Array::try_from(map(ebpf, name)?)?;
        for (slot, want) in (0..).zip(local::<N, K>(owned)) {
            if array.get(&slot, 0)? != want {
                array.set(slot, &want, 0)?;
            }
        }
        Ok(())
    }
    write_local::<4, { enipin_ebpf::LOCAL_V4 }>(ebpf, maps::LOCAL_V4, &v4)?;
    write_local::<16, { enipin_ebpf::LOCAL_V6 }>(ebpf, maps::LOCAL_V6, &v6)?;
    // A map-in-map update returns only after an RCU grace period (about 10 ms here), so that
    // user space knows no program still reads the old table: swap both families in parallel.
    let (mut t4, mut t6) = (None, None);
    for (name, m) in ebpf.maps_mut() {
        match name {
            maps::TABLE_V4 => t4 = Some(m),
            maps::TABLE_V6 => t6 = Some(m),
            _ => {}
        }
    }
    let missing = |name: &str| anyhow!("map {name} missing from the object");
    let t4 = t4.ok_or_else(|| missing(maps::TABLE_V4))?;
    let t6 = t6.ok_or_else(|| missing(maps::TABLE_V6))?;
    std::thread::scope(|s| {
        let h4 = s.spawn(|| write_table::<4, { enipin_ebpf::BUCKET_V4 }>(t4, maps::TABLE_V4, &v4));
        let r6 = write_table::<16, { enipin_ebpf::BUCKET_V6 }>(t6, maps::TABLE_V6, &v6);
        h4.join()
            .unwrap_or_else(|_| Err(anyhow!("writing {} panicked", maps::TABLE_V4)))
            .and(r6)
    })
}

/// An owner map's content: address -> owner's ifindex.
fn owned<const N: usize>(m: &Map) -> Result<BTreeMap<[u8; N], u32>> {
    HashMap::<_, [u8; N], Owner>::try_from(m)?
        .iter()
        .map(|kv| Ok(kv.map(|(addr, owner)| (addr, owner.ifindex))?))
        .collect()
}

/// The fast-path array for `owned`: per ifindex slot, the interface's first `K` addresses in
/// address order.
fn local<const N: usize, const K: usize>(owned: &BTreeMap<[u8; N], u32>) -> Vec<Local<N, K>> {
    let mut slots = vec![Local::<N, K>::default(); FAST_SLOTS as usize];
    for (addr, ifindex) in owned {
        if let Some(l) = slots.get_mut(*ifindex as usize)
            && (l.n as usize) < K
        {
            l.addrs[l.n as usize] = *addr;
            l.n += 1;
        }
    }
    slots
}

/// The derived maps (fast-path arrays, owner tables) that are out of step with the pinned owner
/// maps, which can only happen when an earlier enipin stopped between the two (killed, or the
/// machine lost power); a plan then lists them, and applying it rebuilds them.
fn derived_out_of_step(
    paths: &Paths,
    stale: &BTreeMap<&'static str, String>,
) -> Result<Vec<&'static str>> {
    fn check<const N: usize, const KL: usize, const KT: usize>(
        paths: &Paths,
        stale: &BTreeMap<&'static str, String>,
        (owners, locals, table_name): (&str, &'static str, &'static str),
        out: &mut Vec<&'static str>,
    ) -> Result<()>
    where
        Local<N, KL>: aya::Pod,
        Bucket<N, KT>: aya::Pod,
    {
        let Some(m) = pinned_current(paths, stale, owners)? else {
            return Ok(());
        };
        let owned = owned::<N>(&m)?;
        if let Some(m) = pinned_current(paths, stale, locals)? {
            let array: Array<_, Local<N, KL>> = Array::try_from(m)?;
            let have = array.iter().collect::<Result<Vec<_>, _>>()?;
            if have != local::<N, KL>(&owned) {
                out.push(locals);
            }
        }
        if !stale.contains_key(table_name) {
            let have = owner_table::<N, KT>(paths, table_name)?.map(|(_, b)| b);
            if have.is_some_and(|have| have != table::<N, KT>(&owned)) {
                out.push(table_name);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    check::<4, { enipin_ebpf::LOCAL_V4 }, { enipin_ebpf::BUCKET_V4 }>(
        paths,
        stale,
        (maps::OWNERS_V4, maps::LOCAL_V4, maps::TABLE_V4),
        &mut out,
    )?;
    check::<16, { enipin_ebpf::LOCAL_V6 }, { enipin_ebpf::BUCKET_V6 }>(
        paths,
        stale,
        (maps::OWNERS_V6, maps::LOCAL_V6, maps::TABLE_V6),
        &mut out,
    )?;
    Ok(out)
}

/// The owner table for `owned`: each address in the bucket [`bucket_index`] names, in address
/// order; a full bucket marks `spill` and leaves the address to the owner map.
fn table<const N: usize, const K: usize>(owned: &BTreeMap<[u8; N], u32>) -> Vec<Bucket<N, K>> {
    let mut buckets = vec![Bucket::<N, K>::default(); TABLE_BUCKETS as usize];
    for (addr, ifindex) in owned {
        let b = &mut buckets[bucket_index(words(addr)) as usize];
        match b.ifindex.iter().position(|i| *i == 0) {
            Some(i) => {
                b.ifindex[i] = *ifindex;
                b.addrs[i] = *addr;
            }
            None => b.spill = 1,
        }
    }
    buckets
}

/// Makes the owner table `name` hold [`table`]`(owned)`: unchanged if it already does, else a new
/// inner array, filled, then swapped into the outer map's one slot (the kernel frees the old one
/// once no program can still be reading it).
fn write_table<const N: usize, const K: usize>(
    outer: &mut Map,
    name: &str,
    owned: &BTreeMap<[u8; N], u32>,
) -> Result<()>
where
    Bucket<N, K>: aya::Pod,
{
    let want = table::<N, K>(owned);
    let mut outer: ArrayOfMaps<_, Array<MapData, Bucket<N, K>>> = ArrayOfMaps::try_from(outer)?;
    match outer.get(&0, 0) {
        Ok(current) => {
            let same = (0..TABLE_BUCKETS)
                .map(|i| current.get(&i, 0))
                .zip(&want)
                .all(|(have, want)| have.is_ok_and(|have| have == *want));
            if same {
                return Ok(());
            }
        }
        Err(aya::maps::MapError::KeyNotFound) => {}
        Err(e) => return Err(e).with_context(|| format!("reading {name}")),
    }
    let mut inner = Array::<MapData, Bucket<N, K>>::create(TABLE_BUCKETS, 0)
        .with_context(|| format!("creating a new {name} table"))?;
    for (i, b) in want.iter().enumerate() {
        if *b != Bucket::default() {
            inner.set(i as u32, b, 0)?;
        }
    }
    outer
        .set(0, &inner, 0)
        .with_context(|| format!("swapping in the new {name} table"))?;
    Ok(())
}

fn write_maps(ebpf: &mut Ebpf, d: &Diff) -> Result<()> {
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
    sync_derived(ebpf)?;
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
    if let Some(c) = &d.config {
        let mut m: Array<_, enipin_ebpf::Config> = Array::try_from(map(ebpf, maps::CONFIG)?)?;
        m.set(0, c, 0)?;
    }
    Ok(())
}

/// Attaches at egress with TCX (appended last, so programs attached earlier still run first) and
/// pins the link; on kernels without TCX, through a clsact qdisc (reused if present). Returns the
/// pin's file name.
fn attach_one(prog: &mut SchedClassifier, ifindex: u32, pin_dir: &Path) -> Result<String> {
    let tcx = TcAttach::Tcx {
        attach_type: TcAttachType::Egress,
        order: LinkOrder::default(),
    };
    if FORCE_NETLINK.with(|f| f.get()) {
        return attach_netlink(prog, ifindex, pin_dir);
    }
    match prog.attach(ifindex, tcx) {
        Ok(id) => {
            let link = prog.take_link(id)?;
            let link = FdLink::try_from(link)?;
            let name = format!("{LINK_PREFIX}{ifindex}");
            link.pin(pin_dir.join(&name))?;
            Ok(name)
        }
        Err(ProgramError::SyscallError(e))
            if matches!(
                e.io_error.raw_os_error(),
                Some(libc::EINVAL | libc::EOPNOTSUPP)
            ) =>
        {
            attach_netlink(prog, ifindex, pin_dir)
        }
        Err(e) => Err(e.into()),
    }
}

/// Kernels without TCX (< 6.6): a direct-action filter in the clsact qdisc (reused when it
/// exists: other agents' filters stay), kept alive by forgetting the link and recorded by its
/// priority and handle.
fn attach_netlink(prog: &mut SchedClassifier, ifindex: u32, pin_dir: &Path) -> Result<String> {
    match tc::qdisc_add_clsact(ifindex) {
        Ok(()) => {}
        Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e).context("adding a clsact qdisc"),
    }
    let nl = TcAttach::Netlink {
        parent: TcAttachType::Egress.into(),
        options: Default::default(),
    };
    let id = prog.attach(ifindex, nl)?;
    let link = prog.take_link(id)?;
    let name = format!(
        "{NETLINK_PREFIX}{ifindex}-{}-{}",
        link.priority()?,
        u32::from(link.handle()?)
    );
    if let Err(e) = fs::create_dir(pin_dir.join(&name)) {
        drop(link); // detaches the filter again: nothing unrecorded stays behind
        return Err(e).with_context(|| format!("recording {name}"));
    }
    std::mem::forget(link);
    Ok(name)
}

thread_local! {
    static FORCE_NETLINK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Attach through netlink (clsact) even where TCX exists, on the calling thread: how tests cover
/// the path kernels < 6.6 take.
#[doc(hidden)]
pub fn force_netlink_on_this_thread(on: bool) {
    FORCE_NETLINK.with(|f| f.set(on));
}

fn remove_attachment(pin_dir: &Path, pin: &str) -> Result<()> {
    let path = pin_dir.join(pin);
    let a = Attachment::parse(pin).with_context(|| format!("{}: not enipin's", path.display()))?;
    if let Some(link) = a.nl_link() {
        // Exactly our filter (priority + handle); the qdisc and others' filters stay.
        use aya::programs::links::Link as _;
        match link.detach() {
            Ok(()) => {}
            // Already gone (with its interface, or removed by hand): nothing left to undo.
            Err(e) if ifname(a.ifindex).is_none() => log::debug!("{pin}: {e}"),
            Err(ProgramError::NetlinkError(e)) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("removing the filter of {pin}")),
        }
        fs::remove_dir(&path)?;
    } else {
        // Unpinning drops the last reference: the kernel detaches the link.
        match PinnedLink::from_pin(&path) {
            Ok(link) => drop(link.unpin()?),
            Err(_) => fs::remove_file(&path)?,
        }
    }
    Ok(())
}

fn remove_pins(pin_dir: &Path) -> Result<Vec<String>> {
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

/// The id of the pinned classifier, `None` when nothing is pinned (for `enipin watch --debug`,
/// which reads its aya-log records).
pub fn program_id(paths: &Paths) -> Result<Option<u32>> {
    let pin = paths.pin_dir.join(PROG_PIN);
    if !pin.exists() {
        return Ok(None);
    }
    let info = ProgramInfo::from_pin(&pin).with_context(|| format!("reading {}", pin.display()))?;
    Ok(Some(info.id()))
}

/// Detaches every link under the pin directory and removes the pins. A second call is a no-op.
/// Returns one line per removed object.
pub fn detach(paths: &Paths) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for a in attachments(paths)? {
        remove_attachment(&paths.pin_dir, &a.pin)?;
        let name = ifname(a.ifindex).unwrap_or_else(|| "?".into());
        out.push(format!(
            "- detach {PROGRAM} from {name} (ifindex {})",
            a.ifindex
        ));
    }
    if paths.pin_dir.exists() {
        out.extend(remove_pins(&paths.pin_dir)?);
    }
    Ok(out)
}

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
) -> Result<Option<(u32, Vec<Bucket<N, K>>)>>
where
    Bucket<N, K>: aya::Pod,
{
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
    ) -> Result<Option<TableSummary>>
    where
        Bucket<N, K>: aya::Pod,
    {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses that all hash to one bucket, as many as asked.
    fn colliding(n: usize) -> Vec<[u8; 4]> {
        let all = (0..=u16::MAX).map(|i| [198, 18, (i >> 8) as u8, i as u8]);
        let first = bucket_index(words(&[198, 18, 0, 1]));
        all.filter(|a| bucket_index(words(a)) == first)
            .take(n)
            .collect()
    }

    #[test]
    fn table_places_each_address_in_its_bucket_and_spills_the_overflow() {
        let k = enipin_ebpf::BUCKET_V4;
        let same = colliding(k + 3);
        assert_eq!(same.len(), k + 3);
        let mut owned: BTreeMap<[u8; 4], u32> = same.iter().map(|a| (*a, 7)).collect();
        owned.insert([198, 19, 255, 254], 9);
        let t = table::<4, { enipin_ebpf::BUCKET_V4 }>(&owned);
        assert_eq!(t.len(), TABLE_BUCKETS as usize);
        let b = &t[bucket_index(words(&same[0])) as usize];
        assert_eq!(b.spill, 1, "{} addresses in a bucket of {k}", k + 3);
        assert!(b.ifindex.iter().all(|i| *i == 7));
        // The first K in address order are in the bucket; the rest only in the owner map.
        let mut sorted = same.clone();
        sorted.sort();
        assert_eq!(b.addrs.to_vec(), sorted[..k].to_vec());
        // Every other address is in its own bucket; no other bucket spills.
        let lone = &t[bucket_index(words(&[198, 19, 255, 254])) as usize];
        assert!(lone.addrs.contains(&[198, 19, 255, 254]));
        assert_eq!(t.iter().filter(|b| b.spill != 0).count(), 1);
        let filled: usize = t
            .iter()
            .map(|b| b.ifindex.iter().filter(|i| **i != 0).count())
            .sum();
        assert_eq!(filled, k + 1);
    }

    #[test]
    fn table_of_750_addresses_per_family_does_not_spill() {
        // 15 ENIs x 50 addresses, the largest EC2 instance. A spill is possible with unlucky
        // addresses (it costs a hash lookup, not correctness); these sets have none.
        let v4: BTreeMap<[u8; 4], u32> = (0..750u32)
            .map(|i| ([10, 0, (i / 250) as u8, (i % 250) as u8 + 4], 2 + i / 50))
            .collect();
        let t = table::<4, { enipin_ebpf::BUCKET_V4 }>(&v4);
        assert_eq!(t.iter().filter(|b| b.spill != 0).count(), 0);
        let v6: BTreeMap<[u8; 16], u32> = (0..750u32)
            .map(|i| {
                let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                a[8..].copy_from_slice(
                    &(0x1234_5678_0000_0000u64 + u64::from(i) * 7919).to_be_bytes(),
                );
                (a, 2 + i / 50)
            })
            .collect();
        let t = table::<16, { enipin_ebpf::BUCKET_V6 }>(&v6);
        assert_eq!(t.iter().filter(|b| b.spill != 0).count(), 0);
    }
}
