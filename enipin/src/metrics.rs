//! Datapath counters: `enipin stats` and Prometheus exposition.
use anyhow::{Result, bail};

use crate::config::Paths;

pub async fn stats(_paths: &Paths, _json: bool) -> Result<()> {
    bail!("stats: not implemented yet")
}
pub async fn metrics(_paths: &Paths, _listen: Option<std::net::SocketAddr>) -> Result<()> {
    bail!("metrics: not implemented yet")
}
