//! One desired state, diffed with what is installed.
use anyhow::{Result, bail};

use crate::model::Prefix;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    /// enipin's own diff (+ add, - remove).
    Text,
    /// The equivalent iproute2 / sysctl commands.
    Ip,
}

/// Parses `IFACE=CIDR` from `--prefix`.
pub fn parse_prefix_arg(_s: &str) -> Result<(String, Prefix)> {
    bail!("--prefix: not implemented yet")
}
