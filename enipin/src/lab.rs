//! `enipin lab`: the seed scenario in throwaway namespaces.
use std::process::ExitCode;

use anyhow::{Result, bail};

pub async fn run(_keep: bool) -> Result<ExitCode> {
    bail!("lab: not implemented yet")
}
