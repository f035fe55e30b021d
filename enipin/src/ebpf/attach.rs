use std::{ffi::CStr, fs, io, path::Path};

use anyhow::{Context as _, Result};
use aya::programs::{
    LinkOrder, ProgramError, SchedClassifier, TcAttachType,
    links::{FdLink, PinnedLink},
    tc::{self, SchedClassifierLink, TcAttach},
};
use enipin_ebpf::Owner;

use crate::config::Paths;

pub(super) const LINK_PREFIX: &str = "link-";
pub(super) const NETLINK_PREFIX: &str = "nl-";

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

    /// Whether it still runs on its interface: a TCX link goes defunct when its interface goes.
    pub(super) fn alive(&self, pin_dir: &Path) -> bool {
        match self.netlink {
            Some(_) => ifname(self.ifindex).is_some(),
            None => link_alive(&pin_dir.join(&self.pin), self.ifindex),
        }
    }
}

pub(super) fn attachments(paths: &Paths) -> Result<Vec<Attachment>> {
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

pub(super) fn owner_name(o: &Owner) -> String {
    ifname(o.ifindex).unwrap_or_else(|| format!("ifindex {}", o.ifindex))
}

/// Attaches at egress with TCX (appended last, so programs attached earlier still run first) and
/// pins the link; on kernels without TCX, through a clsact qdisc (reused if present). Returns the
/// pin's file name.
pub(super) fn attach_one(
    prog: &mut SchedClassifier,
    ifindex: u32,
    pin_dir: &Path,
) -> Result<String> {
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
pub(super) fn attach_netlink(
    prog: &mut SchedClassifier,
    ifindex: u32,
    pin_dir: &Path,
) -> Result<String> {
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
