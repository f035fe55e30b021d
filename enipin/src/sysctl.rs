//! The per-interface sysctls a host with several ENIs in one subnet needs, read and written under
//! /proc/sys/net (per network namespace: the namespace of the calling thread).

use std::path::PathBuf;

use anyhow::{Context as _, Result};

/// `net.ipv4.conf.eth1.rp_filter` → `/proc/sys/net/ipv4/conf/eth1/rp_filter`.
fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

pub(crate) fn key(ifname: &str, name: &str) -> String {
    format!("net.ipv4.conf.{ifname}.{name}")
}

pub(crate) fn read(key: &str) -> Result<String> {
    let p = path(key);
    Ok(std::fs::read_to_string(&p)
        .with_context(|| format!("reading {}", p.display()))?
        .trim()
        .to_owned())
}

pub(crate) fn write(key: &str, value: &str) -> Result<()> {
    let p = path(key);
    std::fs::write(&p, value).with_context(|| format!("writing {value} to {}", p.display()))
}

/// The values `ifname` should have, as (key, value), given what it has now:
/// - rp_filter: strict mode (effective value = max(all, iface) = 1) drops replies that arrive on
///   one ENI when the main table would route them out of another; loose (2) keeps the check
///   against spoofing from nowhere. 0 and 2 are left alone.
/// - arp_ignore=1, arp_announce=2: against ARP flux, each ENI answers and announces only its own
///   addresses, so the VPC learns the right MAC for every address.
pub(crate) fn desired(ifname: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let all: u32 = read("net.ipv4.conf.all.rp_filter")?.parse().unwrap_or(0);
    let rp_key = key(ifname, "rp_filter");
    let own: u32 = read(&rp_key)?.parse().unwrap_or(0);
    if all.max(own) == 1 {
        out.push((rp_key, "2".to_owned()));
    }
    out.push((key(ifname, "arp_ignore"), "1".to_owned()));
    out.push((key(ifname, "arp_announce"), "2".to_owned()));
    Ok(out)
}
