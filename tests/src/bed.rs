//! A veth bed: one namespace with veth pairs inside it (both ends up) and one run's own pin and
//! state directories. For loading the program and test-running it on real ifindexes without
//! attaching it anywhere (`tests/testrun.rs`, `tests/fastpath.rs`, the cost benchmark).

use anyhow::Result;
use enipin::{
    lab::testbed::{Dirs, Netns},
    settings::config::Paths,
};

#[derive(Debug)]
pub struct VethBed {
    pub ns: Netns,
    /// `dirs` as the library takes them.
    pub paths: Paths,
    /// Held for its Drop: unmounts the pins, removes the state.
    dirs: Dirs,
}

impl VethBed {
    /// A namespace `<unique(prefix)>` holding the veth pairs `pairs` (`(a, b)`: `a` <-> `b`), and
    /// directories `<unique(prefix)>` of its own. The pin directory itself is not created:
    /// enipin's applier creates it, a bare load needs [`VethBed::create_pin_dir`].
    pub fn new(prefix: &str, pairs: &[(&str, &str)]) -> Result<Self> {
        let ns = Netns::new(prefix)?;
        for (a, b) in pairs {
            ns.veth_pair(a, b)?;
        }
        let dirs = Dirs::new(prefix)?;
        Ok(Self {
            paths: dirs.paths(),
            ns,
            dirs,
        })
    }

    /// The pin directory, for loading the object without the applier (which creates it itself).
    pub fn create_pin_dir(&self) -> Result<()> {
        Ok(std::fs::create_dir(self.dirs.pins.path())?)
    }

    /// The interface's ifindex inside the bed's namespace.
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        self.ns.ifindex(ifname)
    }
}
