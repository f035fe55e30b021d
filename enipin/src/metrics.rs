//! Datapath counters: `enipin stats` and Prometheus exposition.
use std::fmt::Write as _;

use anyhow::Result;
use enipin_ebpf::Counters;

use crate::{config::Paths, ebpf, http};

/// Help text per counter, in `Counters::NAMES` order.
const HELP: [&str; 9] = [
    "Packets whose source belongs to another managed interface",
    "Bytes of packets whose source belongs to another managed interface",
    "Misrouted packets the redirect failed for (passed unchanged)",
    "Misrouted packets larger than the owner's MTU (passed unchanged)",
    "Packets whose source belongs to the interface they leave by",
    "IP packets whose source no managed interface owns",
    "ARP and other non-IP packets",
    "IP packets never redirected (VLAN, multicast, link-local, neighbour discovery)",
    "Packets too short to parse (passed unchanged)",
];

/// One row per interface: (ifindex, name, counters). Name "unknown" for slot 0, "?" when the
/// ifindex no longer exists in this namespace.
fn rows(paths: &Paths) -> Result<Vec<(u32, String, Counters)>> {
    Ok(ebpf::counters(paths)?
        .into_iter()
        .map(|(i, c)| {
            let name = if i == 0 {
                "unknown".into()
            } else {
                ebpf::ifname(i).unwrap_or_else(|| "?".into())
            };
            (i, name, c)
        })
        .collect())
}

pub async fn stats(paths: &Paths, json: bool) -> Result<()> {
    let rows = rows(paths)?;
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(i, name, c)| {
                let mut o = serde_json::Map::new();
                o.insert("ifindex".into(), (*i).into());
                o.insert("interface".into(), name.clone().into());
                for (k, v) in Counters::NAMES.iter().zip(c.values()) {
                    o.insert((*k).into(), v.into());
                }
                serde_json::Value::Object(o)
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut out = format!("{:<16} {:>7}", "interface", "ifindex");
    for n in Counters::NAMES {
        write!(out, " {n:>17}")?;
    }
    for (i, name, c) in &rows {
        write!(out, "\n{name:<16} {i:>7}")?;
        for v in c.values() {
            write!(out, " {v:>17}")?;
        }
    }
    println!("{out}");
    Ok(())
}

/// The Prometheus text exposition of the counters.
pub fn exposition(paths: &Paths) -> Result<String> {
    let rows = rows(paths)?;
    let mut out = String::new();
    for (n, (name, help)) in Counters::NAMES.iter().zip(HELP).enumerate() {
        writeln!(out, "# HELP enipin_{name}_total {help}.")?;
        writeln!(out, "# TYPE enipin_{name}_total counter")?;
        for (i, ifname, c) in &rows {
            writeln!(
                out,
                "enipin_{name}_total{{interface=\"{ifname}\",ifindex=\"{i}\"}} {}",
                c.values()[n]
            )?;
        }
    }
    Ok(out)
}

pub async fn metrics(paths: &Paths, listen: Option<std::net::SocketAddr>) -> Result<()> {
    let Some(addr) = listen else {
        print!("{}", exposition(paths)?);
        return Ok(());
    };
    // Fail now, not at the first scrape, when nothing is pinned.
    exposition(paths)?;
    let listener = http::bind(addr).await?;
    eprintln!(
        "enipin: serving GET /metrics on http://{}/metrics",
        listener.local_addr()?
    );
    let paths = paths.clone();
    match http::serve(listener, http::Limits::default(), move |method, path| {
        http::route_metrics(method, path, || exposition(&paths))
    })
    .await {}
}
