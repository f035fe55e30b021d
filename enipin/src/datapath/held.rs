//! The TCX links `enipin watch` holds open between reconciles, so that removing a link's pin (or
//! the whole pin directory) does not detach it: the kernel keeps a link while any descriptor of
//! it is open. The watcher's cheap check ([`super::missing`]) then finds the pin gone and puts
//! it back ([`HeldLinks::repin`]) before the reconcile, with no moment without enforcement; a
//! link whose whole pin directory went keeps running until the reconcile has attached anew.

use std::path::PathBuf;

use aya::programs::{
    ProgramInfo,
    links::{FdLink, PinnedLink},
};

use crate::settings::config::Paths;

use super::{attach::attachments, program::PROG_PIN};

/// Open descriptors of the pinned TCX links, with the pin each came from.
#[derive(Debug, Default)]
pub(crate) struct HeldLinks {
    links: Vec<(PathBuf, FdLink)>,
}

impl HeldLinks {
    /// Opens every live TCX link pinned under the pin directory (netlink filters have no
    /// descriptor to hold). A link that cannot be opened is not held: the check still sees it.
    pub(crate) fn hold(paths: &Paths) -> Self {
        let links = attachments(paths)
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.netlink.is_none() && a.alive(&paths.pin_dir))
            .filter_map(|a| {
                let path = paths.pin_dir.join(&a.pin);
                let link = PinnedLink::from_pin(&path).ok()?;
                Some((path, FdLink::from(link)))
            })
            .collect();
        Self { links }
    }

    /// Lets go of the links whose pins are there (the reconcile may detach or replace them),
    /// pinning back first each one whose pin is gone while its program is still the pinned one (a
    /// pin removed by hand). Returns the pins put back, and the links that could not
    /// be pinned back (their program's pin or the whole directory went too): the caller keeps
    /// them, still enforcing with the old program and maps, until a reconcile has attached a
    /// complete datapath anew, then drops them (the kernel detaches them then).
    pub(crate) fn repin(self, paths: &Paths) -> (Vec<PathBuf>, Self) {
        let prog = ProgramInfo::from_pin(paths.pin_dir.join(PROG_PIN))
            .ok()
            .map(|p| p.id());
        let mut out = Vec::new();
        let mut orphans = Vec::new();
        for (path, link) in self.links {
            if path.exists() {
                continue;
            }
            let same_program = link.info().ok().map(|i| i.program_id());
            if prog.is_none() || same_program != prog {
                orphans.push((path, link));
                continue;
            }
            // FdLink::pin consumes the descriptor; failing, the link goes with it (the reconcile
            // attaches anew).
            match link.pin(&path) {
                Ok(_pinned) => out.push(path),
                Err(e) => log::warn!("pinning back {}: {e}", path.display()),
            }
        }
        (out, Self { links: orphans })
    }

    /// Adds `other`'s links to these.
    pub(crate) fn extend(&mut self, other: Self) {
        self.links.extend(other.links);
    }
}
