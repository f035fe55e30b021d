//! HTTP GETs from inside a test namespace, with ureq (a kept client): watch's `/metrics` and
//! `/healthz`, and a Prometheus server's query API. ureq connects on the calling thread, so a
//! thread that entered a namespace ([`crate::in_ns`]) reaches that namespace's loopback.

use std::time::Duration;

use anyhow::{Context as _, Result};
use enipin::lab::testbed::Netns;

/// A client whose error statuses are answers, not errors (`/healthz` answers 503), and whose
/// every request ends within 5 s.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// `GET url` with `agent` on the calling thread: (status, body).
pub fn get_with(agent: &ureq::Agent, url: &str) -> Result<(u16, String)> {
    let mut resp = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading the body of GET {url}"))?;
    Ok((status, body))
}

/// `GET url` from inside `ns`: (status, body).
pub fn get(ns: &Netns, url: &str) -> Result<(u16, String)> {
    crate::in_ns(ns, || get_with(&agent(), url))
}
