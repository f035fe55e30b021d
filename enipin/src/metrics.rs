//! Datapath counters: `enipin stats` and Prometheus exposition.
use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use enipin_ebpf::Counters;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{config::Paths, ebpf};

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
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    eprintln!(
        "enipin: serving GET /metrics on http://{}/metrics",
        listener.local_addr()?
    );
    loop {
        let (mut sock, _) = listener.accept().await?;
        let paths = paths.clone();
        tokio::spawn(async move {
            // A scrape request fits in one read; anything slower than 5 s is dropped.
            let mut buf = [0u8; 2048];
            let Ok(Ok(n)) =
                tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf)).await
            else {
                return;
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("");
            let (status, ctype, body) = if !req.starts_with("GET ") {
                (
                    "405 Method Not Allowed",
                    "text/plain",
                    "GET only\n".to_owned(),
                )
            } else if path != "/metrics" {
                ("404 Not Found", "text/plain", "try /metrics\n".to_owned())
            } else {
                match exposition(&paths) {
                    Ok(b) => ("200 OK", "text/plain; version=0.0.4", b),
                    Err(e) => ("503 Service Unavailable", "text/plain", format!("{e:#}\n")),
                }
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
