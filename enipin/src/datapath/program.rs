//! The program: the embedded object, loading it, this build's tag, the bpffs check.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramInfo, SchedClassifier},
};
use enipin_ebpf::{HAVE_CHECK_MTU, PROGRAM};

use crate::settings::config::Paths;

/// The eBPF object, built by build.rs with the pinned nightly and bpf-linker.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enipin"));

/// The classifier's pin under the pin directory.
pub(super) const PROG_PIN: &str = "prog";
/// A TCX link's pin is this followed by its ifindex (`link-3`).
pub(super) const LINK_PREFIX: &str = "link-";

/// Loads the object and its classifier [`PROGRAM`] (not attached); maps are created under (or
/// reused from) `pin_dir`, which must exist. Public for the benchmark, which test-runs the program
/// on the maps [`super::apply`] filled.
pub fn load(pin_dir: &Path) -> Result<Ebpf> {
    let mut ebpf = loader(pin_dir).load(OBJECT).with_context(|| {
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

/// The object's loader: maps pinned under `pin_dir`, and the program's read-only globals set from
/// this kernel's probes (`bpf_check_mtu`).
pub(super) fn loader(pin_dir: &Path) -> EbpfLoader<'_> {
    // A u32 (not a bool) so that every byte pattern of the global is valid on both sides.
    static HAVE: [u32; 2] = [0, 1];
    let have = &HAVE[usize::from(super::features::have_check_mtu())];
    let mut loader = EbpfLoader::new();
    loader
        .default_map_pin_directory(pin_dir)
        .override_global(HAVE_CHECK_MTU, have, true);
    loader
}

/// The object's classifier [`PROGRAM`].
pub(super) fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    Ok(ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| anyhow!("no program {PROGRAM}"))?
        .try_into()?)
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
pub(crate) fn ensure_bpffs(pin_dir: &Path) -> Result<()> {
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
pub(crate) fn our_tag(pin_dir: &Path) -> Result<u64> {
    static TAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    if let Some(tag) = TAG.get() {
        return Ok(*tag);
    }
    let mut ebpf = load(pin_dir)?;
    let tag = classifier(&mut ebpf)?.info()?.tag();
    Ok(*TAG.get_or_init(|| tag))
}

/// The classifier pinned under the pin directory: which one the kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PinnedProgram {
    /// The kernel's id for it (`bpftool prog show id N`).
    pub id: u32,
    /// The kernel's tag (a hash of the instructions it was given), as `bpftool prog` prints it
    /// and `enipin_build_info` labels it.
    #[serde(serialize_with = "tag_hex")]
    pub tag: u64,
}

fn tag_hex<S: serde::Serializer>(tag: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{tag:016x}"))
}

/// The pinned classifier, `None` when nothing is pinned (read only: `enipin status`, and
/// `enipin watch --debug`, which reads its aya-log records).
pub(crate) fn pinned_program(paths: &Paths) -> Result<Option<PinnedProgram>> {
    let pin = paths.pin_dir.join(PROG_PIN);
    if !pin.exists() {
        return Ok(None);
    }
    let info = ProgramInfo::from_pin(&pin).with_context(|| format!("reading {}", pin.display()))?;
    Ok(Some(PinnedProgram {
        id: info.id(),
        tag: info.tag(),
    }))
}

#[cfg(test)]
mod tests {
    use super::OBJECT;
    use enipin_ebpf::layout::MAPS;

    /// `enipin --version` names the object this binary embeds (issue 27, item 7).
    #[test]
    fn the_version_names_the_embedded_objects_digest() {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(OBJECT);
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(env!("ENIPIN_OBJECT_SHA256"), hex);
    }

    /// The object as built declares every map exactly as the shared table says (no root needed:
    /// the ELF is parsed, nothing is loaded).
    #[test]
    fn object_maps_match_the_layout_table() {
        let obj = aya_obj::Object::parse(OBJECT).expect("parsing the embedded object");
        for l in &MAPS {
            let m = obj
                .maps
                .get(l.name)
                .unwrap_or_else(|| panic!("{} missing from the object", l.name));
            let have = (m.map_type(), m.key_size(), m.value_size(), m.max_entries());
            let want = (l.kind as u32, l.key_size, l.value_size, l.max_entries);
            assert_eq!(have, want, "{}: (type, key, value, entries)", l.name);
            let inner = m.inner().map(|i| (i.value_size(), i.max_entries()));
            assert_eq!(inner, l.inner, "{}: inner (value, entries)", l.name);
        }
        let mut names: Vec<_> = obj
            .maps
            .keys()
            .filter(|n| n.starts_with("ENIPIN_"))
            .collect();
        names.sort();
        let mut table: Vec<_> = MAPS.iter().map(|l| l.name).collect();
        table.sort();
        assert_eq!(names, table, "every map of the object is in the table");
    }
}
