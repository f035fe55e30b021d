//! The TC egress enforcer's loader: load, pin, attach, fill the owner maps, read the counters.
//! It is the second applier of the one desired state (the first is [`crate::apply`]).

use anyhow::{Result, bail};
use enipin_ebpf::Counters;

use crate::{
    config::{Config, Paths},
    model::ManagedInterface,
};

/// The eBPF object, built by build.rs with the pinned nightly and bpf-linker.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enipin"));

/// What the datapath must change to match the desired state, diffed with what is pinned.
#[derive(Debug)]
pub struct EbpfPlan {
    /// Human-readable lines, one per change (`+ attach enipin_egress to eth1 (tcx)`, ...).
    pub changes: Vec<String>,
}

impl EbpfPlan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Computes the datapath changes for `managed` (empty `managed`: remove everything).
pub fn plan(_managed: &[ManagedInterface], _cfg: &Config, _paths: &Paths) -> Result<EbpfPlan> {
    bail!("ebpf::plan: not implemented yet")
}

/// Carries out a plan, all or nothing: on failure what this call did is undone.
pub fn apply(_plan: EbpfPlan, _managed: &[ManagedInterface], _cfg: &Config, _paths: &Paths) -> Result<()> {
    bail!("ebpf::apply: not implemented yet")
}

/// Detaches every link under the pin directory and removes the pins. A second call is a no-op.
/// Returns one line per removed object.
pub fn detach(_paths: &Paths) -> Result<Vec<String>> {
    bail!("ebpf::detach: not implemented yet")
}

/// What is attached now: (ifindex, interface name, attach kind "tcx"/"netlink"), or empty.
pub fn attached(_paths: &Paths) -> Result<Vec<(u32, String, String)>> {
    bail!("ebpf::attached: not implemented yet")
}

/// Counters per interface (ifindex; 0 is the "unknown interface" slot), summed over CPUs.
pub fn counters(_paths: &Paths) -> Result<Vec<(u32, Counters)>> {
    bail!("ebpf::counters: not implemented yet")
}
