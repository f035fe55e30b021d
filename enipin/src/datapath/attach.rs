//! Attachment at egress: a TCX link where the kernel has it, else a netlink (clsact) filter;
//! finding, checking and removing what is recorded under the pin directory.

use std::{ffi::CStr, fs, io, path::Path, sync::OnceLock};

use anyhow::{Context as _, Result};
use aya::programs::{
    LinkOrder, ProgramError, SchedClassifier, TcAttachType,
    links::{FdLink, PinnedLink},
    tc::{self, SchedClassifierLink, TcAttach},
};
use enipin_ebpf::Owner;

use super::owner::owner;
use crate::settings::config::{Attach, Paths};

pub(super) use super::program::LINK_PREFIX;
pub(super) const NETLINK_PREFIX: &str = "nl-";
/// `clsact-<ifindex>/`: an empty directory marking a clsact qdisc enipin added (< 6.6).
pub(super) const CLSACT_PREFIX: &str = "clsact-";

/// An attachment found under the pin directory.
#[derive(Debug)]
pub(super) struct Attachment {
    pub(super) ifindex: u32,
    /// File name under the pin directory (`link-3`, `nl-3-49152-1`).
    pub(super) pin: String,
    /// A netlink filter's (priority, handle); `None` for a TCX link.
    pub(super) netlink: Option<(u16, u32)>,
}

impl Attachment {
    pub(super) fn parse(name: &str) -> Option<Self> {
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
    pub(super) fn nl_link(&self) -> Option<SchedClassifierLink> {
        let (prio, handle) = self.netlink?;
        let parent = TcAttachType::Egress.into();
        SchedClassifierLink::attached(self.ifindex, parent, prio, handle.into(), None).ok()
    }

    pub(super) fn kind(&self) -> AttachKind {
        match self.netlink {
            Some(_) => AttachKind::Netlink,
            None => AttachKind::Tcx,
        }
    }

    /// Whether it still runs on its interface: a TCX link goes defunct when its interface goes; a
    /// netlink filter goes with its interface, or when another tool deletes it (`tc filter del`,
    /// a qdisc replaced), which leaves only enipin's record. A dump that fails counts as alive:
    /// nothing is replaced on a guess.
    pub(super) fn alive(&self, pin_dir: &Path) -> bool {
        match self.netlink {
            Some((prio, handle)) => {
                ifname(self.ifindex).is_some()
                    && crate::kernel::netlink::clsact_filter_exists(self.ifindex, prio, handle)
                        .unwrap_or_else(|e| {
                            log::debug!("{}: {e:#}", self.pin);
                            true
                        })
            }
            None => link_alive(&pin_dir.join(&self.pin), self.ifindex),
        }
    }
}

/// The attachments recorded under the pin directory; an error when it is another network
/// namespace's ([`super::owner`]): nothing of another namespace is ever read back as ours.
pub(super) fn attachments(paths: &Paths) -> Result<Vec<Attachment>> {
    owner(&paths.pin_dir)?;
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
pub(super) fn link_alive(path: &Path, ifindex: u32) -> bool {
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

/// The name of interface `ifindex`, `None` when there is none (gone, or never was).
pub(crate) fn ifname(ifindex: u32) -> Option<String> {
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

/// The owner's interface name for plan lines (`ifindex 7` once the interface is gone).
pub(super) fn owner_name(o: &Owner) -> String {
    ifname(o.ifindex).unwrap_or_else(|| format!("ifindex {}", o.ifindex))
}

/// How an attachment hooks into egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachKind {
    /// A TCX link (kernels >= 6.6), pinned as `link-<ifindex>`.
    Tcx,
    /// A filter in the clsact qdisc, recorded as `nl-<ifindex>-<priority>-<handle>/`.
    Netlink,
}

impl std::fmt::Display for AttachKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcx => "tcx",
            Self::Netlink => "netlink",
        })
    }
}

/// What `choice` means on this kernel: `Auto` is TCX where the kernel has it.
pub(super) fn resolve(choice: Attach) -> Result<AttachKind> {
    Ok(match choice {
        Attach::Tcx => AttachKind::Tcx,
        Attach::Netlink => AttachKind::Netlink,
        Attach::Auto if have_tcx()? => AttachKind::Tcx,
        Attach::Auto => AttachKind::Netlink,
    })
}

/// Whether the kernel has TCX (>= 6.6), asked once per process. Like cilium/ebpf's `haveTCX`
/// feature probe, on loopback (ifindex 1 in every namespace), but a query rather than an attach:
/// TCX links and TCX queries came in the same release, and a query changes nothing.
pub(crate) fn have_tcx() -> Result<bool> {
    static HAVE: OnceLock<bool> = OnceLock::new();
    if let Some(have) = HAVE.get() {
        return Ok(*have);
    }
    let have = match SchedClassifier::query_tcx(1, TcAttachType::Ingress) {
        Ok(_) => true,
        Err(ProgramError::SyscallError(e))
            if matches!(
                e.io_error.raw_os_error(),
                Some(libc::EINVAL | libc::EOPNOTSUPP)
            ) =>
        {
            false
        }
        Err(e) => return Err(e).context("probing the kernel for TCX (a query on loopback)"),
    };
    Ok(*HAVE.get_or_init(|| have))
}

/// Attaches at egress, `how`, and records the attachment under `pin_dir`: a TCX link is appended
/// last (programs attached earlier still run first) and pinned. Returns the pin's file name.
pub(super) fn attach_one(
    prog: &mut SchedClassifier,
    ifindex: u32,
    pin_dir: &Path,
    how: AttachKind,
) -> Result<String> {
    if how == AttachKind::Netlink {
        return attach_netlink(prog, ifindex, pin_dir);
    }
    let tcx = TcAttach::Tcx {
        attach_type: TcAttachType::Egress,
        order: LinkOrder::default(),
    };
    let id = prog.attach(ifindex, tcx)?;
    let link = FdLink::try_from(prog.take_link(id)?)?;
    let name = format!("{LINK_PREFIX}{ifindex}");
    link.pin(pin_dir.join(&name))?;
    Ok(name)
}

/// Kernels without TCX (< 6.6): a direct-action filter in the clsact qdisc (reused when it
/// exists: other agents' filters stay), kept alive by forgetting the link and recorded by its
/// priority and handle.
pub(super) fn attach_netlink(
    prog: &mut SchedClassifier,
    ifindex: u32,
    pin_dir: &Path,
) -> Result<String> {
    add_clsact(pin_dir, ifindex)?;
    // The record goes first, with the priority and handle the filter will have: an attach killed
    // between the two leaves a record of no filter (dead: the next attach or detach removes it),
    // never a filter of enipin's that no record names (a kill 800 ms into an attach in a 5.10
    // guest landed there; detach then counted the orphan as someone else's and kept the qdisc).
    // The priority is the kernel's own choice for a new filter: 49152 on an empty hook, else one
    // less than the first filter's, so enipin's runs first; the handle is the kernel's first, 1.
    let priority = match crate::kernel::netlink::clsact_first_priority(ifindex)? {
        None => 0xC000,
        Some(first) => first
            .checked_sub(1)
            .context("the clsact hook's priority 0 is taken")?,
    };
    let name = format!("{NETLINK_PREFIX}{ifindex}-{priority}-1");
    fs::create_dir(pin_dir.join(&name)).with_context(|| format!("recording {name}"))?;
    let nl = TcAttach::Netlink {
        parent: TcAttachType::Egress.into(),
        options: aya::programs::tc::NlOptions {
            priority,
            handle: aya::programs::tc::TcHandle::new(0, 1),
            ..Default::default()
        },
    };
    let id = match prog.attach(ifindex, nl) {
        Ok(id) => id,
        Err(e) => {
            // Nothing of ours on it: the record, and a qdisc enipin just added, go again.
            let _ = fs::remove_dir(pin_dir.join(&name));
            if let Err(undo) = remove_clsact(pin_dir, ifindex) {
                log::warn!("{undo:#}");
            }
            return Err(e.into());
        }
    };
    let link = prog.take_link(id)?;
    std::mem::forget(link);
    Ok(name)
}

/// The marker of a clsact qdisc enipin added (`clsact-<ifindex>/`), beside the filter's.
fn clsact_marker(pin_dir: &Path, ifindex: u32) -> std::path::PathBuf {
    pin_dir.join(format!("{CLSACT_PREFIX}{ifindex}"))
}

/// Adds `ifindex`'s clsact qdisc and records it as enipin's (so that removing the last filter
/// removes it too, see [`remove_clsact`]), or keeps the one there: someone's, or ours from an
/// earlier attach (recorded then). The record goes first, as an intent: an attach killed between
/// the two leaves a record whose qdisc detach removes once empty, never a qdisc of ours
/// unrecorded (a kill 500 ms into an attach in a 5.10 guest landed between them, and every later
/// detach left the qdisc).
fn add_clsact(pin_dir: &Path, ifindex: u32) -> Result<()> {
    let marker = clsact_marker(pin_dir, ifindex);
    let ours_before = marker.exists();
    if !ours_before {
        fs::create_dir(&marker).with_context(|| format!("recording {}", marker.display()))?;
    }
    let forget = |marker: &Path| {
        if !ours_before && let Err(e) = fs::remove_dir(marker) {
            log::warn!("removing {}: {e}", marker.display());
        }
    };
    match tc::qdisc_add_clsact(ifindex) {
        Ok(()) => Ok(()),
        Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {
            forget(&marker);
            Ok(())
        }
        Err(e) => {
            forget(&marker);
            Err(e).context("adding a clsact qdisc")
        }
    }
}

/// After enipin's filter left `ifindex`: removes the clsact qdisc if enipin added it (its marker)
/// and it holds no other filter at either hook; one that others use stays, no longer ours. On
/// kernels < 6.6 this is what leaves a detached interface as enipin found it.
fn remove_clsact(pin_dir: &Path, ifindex: u32) -> Result<()> {
    let marker = clsact_marker(pin_dir, ifindex);
    if !marker.exists() {
        return Ok(());
    }
    if ifname(ifindex).is_some() {
        let others = match crate::kernel::netlink::clsact_filters_blocking(ifindex) {
            Ok(n) => Some(n),
            // No clsact qdisc (an attach killed between its record and the qdisc): none to remove.
            Err(e) if no_qdisc(&e) => None,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("listing the clsact filters of ifindex {ifindex}"));
            }
        };
        if others == Some(0) {
            match crate::kernel::netlink::del_clsact_blocking(ifindex) {
                Err(e) if !no_qdisc(&e) => {
                    return Err(e).with_context(|| {
                        format!("removing the clsact qdisc of ifindex {ifindex}")
                    });
                }
                _ => {}
            }
        } else if let Some(others) = others {
            log::info!(
                "keeping the clsact qdisc of {}: {others} other filter(s) use it",
                owner_name(&Owner { ifindex, mtu: 0 })
            );
        }
    }
    fs::remove_dir(&marker).with_context(|| format!("removing {}", marker.display()))
}

/// The clsact qdiscs enipin added whose filter record is gone (an attach killed between the two):
/// removed as [`remove_clsact`] does, so that detach leaves nothing.
pub(super) fn remove_stale_clsact(pin_dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(pin_dir) else {
        return Ok(());
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(ifindex) = name
            .strip_prefix(CLSACT_PREFIX)
            .and_then(|i| i.parse().ok())
        {
            remove_clsact(pin_dir, ifindex)?;
        }
    }
    Ok(())
}

/// Whether a netlink error says the interface has no clsact qdisc (the kernel answers a filter
/// dump or a delete of a missing qdisc with EINVAL or ENOENT; 6.18 dumps nothing instead).
fn no_qdisc(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .and_then(io::Error::raw_os_error)
        .is_some_and(|c| c == libc::EINVAL || c == libc::ENOENT)
}

/// Removes the attachment recorded as `pin`: exactly enipin's link or filter.
pub(super) fn remove_attachment(pin_dir: &Path, pin: &str) -> Result<()> {
    let path = pin_dir.join(pin);
    let a = Attachment::parse(pin).with_context(|| format!("{}: not enipin's", path.display()))?;
    if let Some(link) = a.nl_link() {
        // Exactly our filter (priority + handle); the qdisc and others' filters stay.
        use aya::programs::links::Link as _;
        match link.detach() {
            Ok(()) => {}
            // Already gone (with its interface, or removed by hand): nothing left to undo.
            Err(e) if ifname(a.ifindex).is_none() => log::debug!("{pin}: {e}"),
            // Or gone with its qdisc (deleted by hand, or never added: an attach killed between
            // the qdisc's record and the qdisc): the kernel answers EINVAL, "Parent Qdisc doesn't
            // exist".
            Err(ProgramError::NetlinkError(e))
                if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => {}
            Err(e) => return Err(e).with_context(|| format!("removing the filter of {pin}")),
        }
        fs::remove_dir(&path)?;
        remove_clsact(pin_dir, a.ifindex)?;
    } else {
        // Unpinning drops the last reference: the kernel detaches the link.
        match PinnedLink::from_pin(&path) {
            Ok(link) => drop(link.unpin()?),
            Err(_) => fs::remove_file(&path)?,
        }
    }
    Ok(())
}
