//! What the operator asked for: the command-line options that shape the desired state.

use std::{net::IpAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Prefix;

/// Default first policy-routing table. Clear of amazon-ec2-net-utils (10000 + 100*card + device),
/// the VPC CNI (device+1, 10000+), nm-cloud-setup (30200+), cloud-init (100+) and Cilium (10+n,
/// 300+); never 0 or 253-255 (see ../shared/notes/prior-art.md).
pub const DEFAULT_TABLE_BASE: u32 = 20000;
/// Default first rule priority: clear of the VPC CNI (<= 1536, 32765), nm-cloud-setup (30200+),
/// Cilium (< 112) and the kernel's 0, 32766, 32767.
pub const DEFAULT_PRIORITY: u32 = 20000;

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/enipin";
pub const DEFAULT_STATE_DIR: &str = "/run/enipin";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Redirect misrouted packets onto the interface that owns their source, and count them.
    #[default]
    Enforce,
    /// Only count misrouted packets.
    Monitor,
}

/// How the datapath hooks into egress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attach {
    /// TCX where the kernel has it (>= 6.6, probed once), else a netlink clsact filter.
    #[default]
    Auto,
    Tcx,
    /// A clsact filter even where TCX exists: how tests cover what kernels < 6.6 take.
    Netlink,
}

/// Where enipin keeps what the kernel cannot tell back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// bpffs directory for enipin's pinned links, program and maps.
    pub pin_dir: PathBuf,
    /// Directory of the state file (previous sysctl values, options of the last attach).
    pub state_dir: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Interfaces to manage, by name or MAC; empty: every Ethernet interface that is up and
    /// shares a subnet with another one.
    pub interfaces: Vec<String>,
    /// Gateway override for every managed interface.
    pub gateway: Option<IpAddr>,
    pub table_base: u32,
    pub priority: u32,
    /// Prefixes delegated to interfaces: (interface name or MAC, prefix).
    pub prefixes: Vec<(String, Prefix)>,
    pub rules: bool,
    pub ebpf: bool,
    pub sysctls: bool,
    pub mode: Mode,
    pub debug: bool,
    /// State files written before this field existed read as `Auto`.
    #[serde(default)]
    pub attach: Attach,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            gateway: None,
            table_base: DEFAULT_TABLE_BASE,
            priority: DEFAULT_PRIORITY,
            prefixes: Vec::new(),
            rules: true,
            ebpf: true,
            sysctls: true,
            mode: Mode::Enforce,
            debug: false,
            attach: Attach::Auto,
        }
    }
}
