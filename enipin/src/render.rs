//! The desired state as persistent distro network configuration.
use anyhow::{Result, bail};

use crate::config::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    NetworkScripts,
    Networkd,
    Netplan,
    Nmcli,
}

pub async fn render(_cfg: &Config, _format: Format) -> Result<()> {
    bail!("render: not implemented yet")
}
