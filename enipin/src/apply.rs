//! Carries a plan out: the commands `attach`, `detach`, `status`.
use anyhow::{Result, bail};

use crate::{config::{Config, Paths}, plan::DiffFormat};

pub async fn attach(_cfg: &Config, _paths: &Paths, _dry_run: bool, _format: DiffFormat) -> Result<()> {
    bail!("attach: not implemented yet")
}
pub async fn detach(_paths: &Paths) -> Result<()> {
    bail!("detach: not implemented yet")
}
pub async fn status(_paths: &Paths, _json: bool) -> Result<()> {
    bail!("status: not implemented yet")
}
