//! Whose pin directory it is: the network namespace whose datapath it holds, recorded in it as
//! an empty directory `netns-<inode>` (a bpffs holds only pins and directories, no plain files).
//!
//! Every namespace defaults to the same `--pin-dir`; a second namespace must never take the
//! first one's links for stale ones and detach them. A pin directory marked by another namespace
//! is refused before anything is read or changed; an unmarked one (laid out by an enipin that
//! did not mark it) is adopted, and marked, only when none of its TCX links runs in another
//! namespace, so an upgrade keeps its datapath in place with no gap.

use std::{
    ffi::CString,
    fs, io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use aya::programs::{SchedClassifier, TcAttachType};

use super::program::LINK_PREFIX;
use crate::kernel::netns;

const NETNS_PREFIX: &str = "netns-";

/// Who a pin directory belongs to, when not to another namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ownership {
    /// No pin directory: nothing pinned yet.
    Absent,
    /// Marked as this namespace's.
    Ours,
    /// Not marked, and nothing in it runs elsewhere: this namespace's, from an earlier enipin;
    /// [`claim`] marks it.
    Unmarked,
}

/// The mark's file name for namespace `ino` (`netns-4026532281`).
fn mark(ino: u64) -> String {
    format!("{NETNS_PREFIX}{ino}")
}

/// Whether `name` is a namespace mark (what [`super::pins::remove_pins`] removes last).
pub(super) fn is_mark(name: &str) -> bool {
    name.strip_prefix(NETNS_PREFIX)
        .is_some_and(|n| n.parse::<u64>().is_ok())
}

/// Whose `dir` is; an error when it is another namespace's, naming both and what to do instead.
pub(super) fn owner(dir: &Path) -> Result<Ownership> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ownership::Absent),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let ours = mark(netns::current_id()?);
    let mut names = Vec::new();
    for e in entries {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    if let Some(other) = names.iter().find(|n| is_mark(n) && **n != ours) {
        bail!(
            "{} holds the datapath of another network namespace ({other}; this one is {ours}): \
             enipin leaves it alone. Give each namespace its own pin directory, e.g. \
             `--pin-dir /sys/fs/bpf/enipin-NAME` (or ENIPIN_PIN_DIR)",
            dir.display()
        );
    }
    if names.contains(&ours) {
        return Ok(Ownership::Ours);
    }
    for n in names.iter().filter(|n| n.starts_with(LINK_PREFIX)) {
        let path = dir.join(n);
        if let Some(ifindex) = runs_elsewhere(&path)? {
            bail!(
                "{} was laid out by an earlier enipin and its {n} runs on ifindex {ifindex} of \
                 another network namespace: enipin leaves it alone. Give this namespace its own \
                 pin directory, e.g. `--pin-dir /sys/fs/bpf/enipin-NAME`",
                dir.display()
            );
        }
    }
    Ok(Ownership::Unmarked)
}

/// Marks `dir` (which must exist) as this namespace's; a no-op when it is already.
pub(super) fn claim(dir: &Path) -> Result<()> {
    let path = dir.join(mark(netns::current_id()?));
    match fs::create_dir(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("marking {}", path.display())),
    }
}

/// The namespace mark's path under `dir`, for the plan line that adds it.
pub(super) fn our_mark(dir: &Path) -> Result<std::path::PathBuf> {
    Ok(dir.join(mark(netns::current_id()?)))
}

/// The ifindex the TCX link pinned at `path` runs on when that is not in this namespace; `None`
/// when it runs here, or nowhere (its interface is gone: the kernel reports ifindex 0).
fn runs_elsewhere(path: &Path) -> Result<Option<u32>> {
    let info = link_fdinfo(path)?;
    let field = |key: &str| -> Option<u32> {
        info.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
    };
    let (Some(ifindex), Some(prog_id)) = (field("ifindex:"), field("prog_id:")) else {
        return Ok(None); // not a TCX link: nothing of enipin's, removed as stale
    };
    if ifindex == 0 {
        return Ok(None);
    }
    // The same ifindex in this namespace running this link's program: it is this namespace's.
    // (Another interface numbered alike elsewhere would need the very same program id too.)
    let here = SchedClassifier::query_tcx(ifindex, TcAttachType::Egress)
        .map(|(_, progs)| progs.iter().any(|p| p.id() == prog_id))
        .unwrap_or(false);
    Ok((!here).then_some(ifindex))
}

/// `/proc/self/fdinfo` of the link pinned at `path`: its `link_id`, `prog_id` and, for TCX,
/// `ifindex` (aya keeps a link's fd and raw info to itself).
fn link_fdinfo(path: &Path) -> Result<String> {
    /// `union bpf_attr` for `BPF_OBJ_GET`: pathname, bpf_fd, file_flags.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const _: () = assert!(std::mem::size_of::<ObjGet>() == 16);
    const BPF_OBJ_GET: libc::c_long = 7;
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    let attr = ObjGet {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: BPF_OBJ_GET reads `attr` (size given) and the NUL-terminated path it points to.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGet,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("opening {}", path.display()));
    }
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .with_context(|| format!("reading the fdinfo of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_named_by_the_namespace_inode() {
        assert_eq!(mark(4026531840), "netns-4026531840");
        assert!(is_mark("netns-4026531840"));
        assert!(!is_mark("netns-x") && !is_mark("link-3") && !is_mark("nl-3-1-2"));
    }
}
