//! How fast `enipin watch` reacts, in the lab topology (eth0 and eth1 sharing 198.18.0.0/24):
//! a rule or route of enipin's deleted by another tool until it is back, a new secondary address
//! until its rules and owner entry are in place, and a burst of 400 addresses from one
//! `ip -batch`: how many reconciles it costs and when all of it is managed.
//!
//! Deletions and additions go over this process's own rtnetlink socket in the host namespace,
//! and the result is polled there (a dump every millisecond, bounded by [`LIMIT`]), so a latency
//! is the watcher's and the kernel's, timed on the monotonic clock, not a child process's start.
//! Reconciles are counted from the watcher's `/metrics` (`enipin_reconciles_total`).

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::maps::{HashMap, Map, MapData};
use enipin::{
    lab::Topology,
    lab::testbed::{self, Dirs, TempDir},
};
use enipin_ebpf::{Owner, maps};
use futures::TryStreamExt as _;
use netlink_packet_route::{
    AddressFamily,
    route::{RouteMessage, RouteProtocol},
    rule::{RuleAttribute, RuleMessage},
};
use rtnetlink::{Handle, IpVersion};

use super::{Row, Target, median};

/// The longest wait for one restore or one burst: past it the watcher is not reacting.
const LIMIT: Duration = Duration::from_secs(5);
/// The address enipin's rules are deleted for (eth1's, in the lab).
pub(super) const SECONDARY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
/// Added on eth1 and removed again, once per trial.
const EXTRA: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 21);
/// enipin's route protocol (`proto 229`).
const PROTO: u8 = 229;
/// The per-address rule whose deletion is timed: `from SECONDARY lookup T pref 20002`.
const PREF: u32 = 20002;
/// Where the watcher serves /metrics, inside the lab's host namespace.
pub(super) const METRICS: &str = "127.0.0.1:9717";
/// The burst: addresses on eth1 in 198.18.4.0/23.
const BURST: usize = 400;

/// The `n`-th percentile (nearest rank) of `xs`.
fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A running `enipin watch`, killed and reaped on drop.
pub(super) struct Watch(pub(super) Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Rows for every reaction, `trials` restores of each kind (100 unless `quick`).
pub fn run(quick: bool, rounds: usize) -> Result<Vec<Row>> {
    let trials = if quick { 10 } else { 100 };
    let topo = Topology::build()?;
    let dirs = Dirs::new("ew-")?;
    let log = TempDir::new("ew-log")?;
    let log_file = log.path().join("watch.log");
    let bin = crate::enipin_bin();
    let child = testbed::enipin_command(
        &bin,
        topo.host().name(),
        &dirs.paths(),
        &["watch", "--interval", "60", "--metrics-listen", METRICS],
    )
    .stdout(std::fs::File::create(&log_file)?)
    .stderr(std::fs::File::create(log.path().join("watch.err"))?)
    .spawn()
    .context("spawning enipin watch")?;
    let _watch = Watch(child);
    let pins = dirs.paths().pin_dir;
    let batch = burst_files(&log)?;
    let host = topo.host().name().to_owned();
    let measured = crate::in_ns(topo.host(), || -> Result<Measured> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(measure(trials, rounds, &pins, &host, &batch))
    })
    .with_context(|| {
        let err = std::fs::read_to_string(log.path().join("watch.err")).unwrap_or_default();
        let tail: String = err.lines().rev().take(20).collect::<Vec<_>>().join("\n");
        format!("measuring the watcher (its last log lines, newest first:\n{tail})")
    })?;
    Ok(measured.rows(trials))
}

/// The `ip -batch` files that add and remove the burst's addresses.
fn burst_files(dir: &TempDir) -> Result<[std::path::PathBuf; 2]> {
    let paths = ["add", "del"].map(|v| dir.path().join(format!("burst-{v}")));
    for (verb, path) in ["add", "del"].iter().zip(&paths) {
        // Removed newest first: removing the subnet's primary (the first added) would take every
        // secondary with it.
        let order: Vec<usize> = match *verb {
            "add" => (0..BURST).collect(),
            _ => (0..BURST).rev().collect(),
        };
        let text: String = order
            .into_iter()
            .map(|i| format!("addr {verb} {}/23 dev eth1\n", burst_addr(i)))
            .collect();
        std::fs::write(path, text)?;
    }
    Ok(paths)
}

fn burst_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 4 + (i / 200) as u8, 10 + (i % 200) as u8)
}

#[derive(Default)]
struct Measured {
    rule_ms: Vec<f64>,
    route_ms: Vec<f64>,
    address_ms: Vec<f64>,
    burst_ms: Vec<f64>,
    burst_reconciles: Vec<f64>,
    /// Reconciles per restored rule or route.
    per_restore: f64,
}

impl Measured {
    fn rows(&self, trials: usize) -> Vec<Row> {
        let s = "watch";
        let mut rows = Vec::new();
        for (what, xs) in [
            ("a deleted rule restored", &self.rule_ms),
            ("a deleted route restored", &self.route_ms),
        ] {
            rows.push(Row::target(
                s,
                &format!("{what}, median of {trials}"),
                median(xs),
                "ms",
                Target::AtMost(50.0),
            ));
            rows.push(Row::target(
                s,
                &format!("{what}, p99"),
                percentile(xs, 99.0),
                "ms",
                Target::AtMost(100.0),
            ));
            rows.push(Row::value(
                s,
                &format!("{what}, max"),
                percentile(xs, 100.0),
                "ms",
            ));
        }
        rows.push(Row::target(
            s,
            "reconciles per restore (the echo of enipin's own change starts none)",
            self.per_restore,
            "",
            Target::AtMost(1.0),
        ));
        let n = self.address_ms.len();
        rows.push(Row::target(
            s,
            &format!("a new secondary address: its rules and owner entry in place, median of {n}"),
            median(&self.address_ms),
            "ms",
            Target::AtMost(100.0),
        ));
        rows.push(Row::value(
            s,
            "a new secondary address, p99",
            percentile(&self.address_ms, 99.0),
            "ms",
        ));
        rows.push(Row::value(
            s,
            "a new secondary address, max",
            percentile(&self.address_ms, 100.0),
            "ms",
        ));
        rows.push(Row::target(
            s,
            &format!("{BURST} addresses from one `ip -batch`: reconciles (median)"),
            median(&self.burst_reconciles),
            "",
            Target::AtMost(5.0),
        ));
        rows.push(Row::value(
            s,
            &format!(
                "{BURST} addresses: all {} rules and {BURST} owner entries in place after",
                2 * BURST
            ),
            median(&self.burst_ms),
            "ms",
        ));
        rows
    }
}

async fn measure(
    trials: usize,
    rounds: usize,
    pins: &Path,
    host: &str,
    batch: &[std::path::PathBuf; 2],
) -> Result<Measured> {
    let (conn, nl, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    let eth1 = ifindex(&nl, "eth1").await?;
    // Settled: the first reconcile has installed everything for eth1's address.
    poll("the first reconcile", || async {
        Ok(rule(&nl, SECONDARY, PREF).await?.is_some() && owner(pins, SECONDARY) == Some(eth1))
    })
    .await?;
    poll("the metrics endpoint", || async {
        Ok(reconciles().is_ok())
    })
    .await?;
    let mut m = Measured::default();
    let gap = Duration::from_millis(100);
    let before = reconciles()?;
    for _ in 0..trials {
        m.rule_ms.push(restore_rule(&nl).await?);
        tokio::time::sleep(gap).await;
        m.route_ms.push(restore_route(&nl).await?);
        tokio::time::sleep(gap).await;
    }
    // A second reconcile per restore would be one started by the echo of enipin's own change.
    tokio::time::sleep(Duration::from_millis(500)).await;
    m.per_restore = (reconciles()? - before) / (2 * trials) as f64;
    for _ in 0..trials.div_ceil(3) {
        m.address_ms.push(new_address(&nl, pins, eth1).await?);
        tokio::time::sleep(gap).await;
    }
    for _ in 0..rounds {
        let (took, n) = burst(&nl, pins, host, batch).await?;
        m.burst_ms.push(took);
        m.burst_reconciles.push(n);
    }
    Ok(m)
}

/// Calls `done` every millisecond until it says yes, for at most [`LIMIT`]; returns how long
/// that took.
pub(super) async fn poll<F, Fut>(what: &str, mut done: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let t = Instant::now();
    loop {
        if done().await? {
            return Ok(t.elapsed());
        }
        if t.elapsed() > LIMIT {
            bail!("no {what} within {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn ifindex(nl: &Handle, name: &str) -> Result<u32> {
    let links: Vec<_> = nl
        .link()
        .get()
        .match_name(name)
        .execute()
        .try_collect()
        .await?;
    links
        .first()
        .map(|l| l.header.index)
        .with_context(|| format!("no link {name}"))
}

async fn rules(nl: &Handle) -> Result<Vec<RuleMessage>> {
    Ok(nl.rule().get(IpVersion::V4).execute().try_collect().await?)
}

fn rule_source(r: &RuleMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RuleAttribute::Source(ip) => Some(*ip),
        _ => None,
    })
}

fn is_enipins(r: &RuleMessage) -> bool {
    r.attributes
        .iter()
        .any(|a| matches!(a, RuleAttribute::Protocol(p) if u8::from(*p) == PROTO))
}

/// enipin's rule `from addr ... pref pref`, if installed.
async fn rule(nl: &Handle, addr: Ipv4Addr, pref: u32) -> Result<Option<RuleMessage>> {
    Ok(rules(nl).await?.into_iter().find(|r| {
        is_enipins(r)
            && rule_source(r) == Some(IpAddr::V4(addr))
            && r.attributes.contains(&RuleAttribute::Priority(pref))
    }))
}

/// enipin's rules `from` any of `addrs` (by count).
async fn rules_from(nl: &Handle, addrs: &dyn Fn(IpAddr) -> bool) -> Result<usize> {
    Ok(rules(nl)
        .await?
        .iter()
        .filter(|r| is_enipins(r) && rule_source(r).is_some_and(addrs))
        .count())
}

/// The owner entry of `addr` in the pinned owner map (its interface's ifindex).
fn owner(pins: &Path, addr: Ipv4Addr) -> Option<u32> {
    let owners = owner_map(pins)?;
    owners.get(&addr.octets(), 0).ok().map(|o| o.ifindex)
}

fn owner_map(pins: &Path) -> Option<HashMap<MapData, [u8; 4], Owner>> {
    let data = MapData::from_pin(pins.join(maps::OWNERS_V4)).ok()?;
    HashMap::try_from(Map::from_map_data(data).ok()?).ok()
}

/// Owner entries for addresses of the burst.
fn burst_owners(pins: &Path) -> usize {
    owner_map(pins).map_or(0, |m| {
        m.keys()
            .filter_map(Result::ok)
            .filter(|k| k[..3] == [198, 18, 4] || k[..3] == [198, 18, 5])
            .count()
    })
}

/// Whether enipin's rule for the secondary address is in place.
pub(super) async fn rule_present(nl: &Handle) -> Result<bool> {
    Ok(rule(nl, SECONDARY, PREF).await?.is_some())
}

pub(super) async fn restore_rule(nl: &Handle) -> Result<f64> {
    let victim = rule(nl, SECONDARY, PREF)
        .await?
        .context("enipin's rule for the secondary address is missing before the trial")?;
    let t = Instant::now();
    nl.rule().del(victim).execute().await?;
    poll("restored rule", || async {
        Ok(rule(nl, SECONDARY, PREF).await?.is_some())
    })
    .await?;
    Ok(ms(t.elapsed()))
}

/// enipin's IPv4 default routes (one per managed interface's table).
async fn default_routes(nl: &Handle) -> Result<Vec<RouteMessage>> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    let all: Vec<RouteMessage> = nl.route().get(msg).execute().try_collect().await?;
    Ok(all
        .into_iter()
        .filter(|r| {
            r.header.protocol == RouteProtocol::from(PROTO)
                && r.header.destination_prefix_length == 0
        })
        .collect())
}

fn table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            netlink_packet_route::route::RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

async fn restore_route(nl: &Handle) -> Result<f64> {
    let routes = default_routes(nl).await?;
    let victim = routes
        .iter()
        .max_by_key(|r| table(r))
        .context("enipin's default routes are missing before the trial")?
        .clone();
    let t_id = table(&victim);
    let t = Instant::now();
    nl.route().del(victim).execute().await?;
    poll("restored route", || async {
        Ok(default_routes(nl).await?.iter().any(|r| table(r) == t_id))
    })
    .await?;
    Ok(ms(t.elapsed()))
}

/// Adds EXTRA on eth1 and times its rules (both) and owner entry; removes it again and waits
/// for its state to go (untimed).
async fn new_address(nl: &Handle, pins: &Path, eth1: u32) -> Result<f64> {
    let extra = |ip: IpAddr| ip == IpAddr::V4(EXTRA);
    let t = Instant::now();
    nl.address()
        .add(eth1, IpAddr::V4(EXTRA), 24)
        .execute()
        .await?;
    poll("the new address's rules and owner", || async {
        Ok(rules_from(nl, &extra).await? == 2 && owner(pins, EXTRA) == Some(eth1))
    })
    .await?;
    let took = ms(t.elapsed());
    let mut del = nl.address().get().set_link_index_filter(eth1).execute();
    while let Some(a) = del.try_next().await? {
        let ours = a.attributes.iter().any(|x| {
            matches!(x, netlink_packet_route::address::AddressAttribute::Local(ip) if *ip == IpAddr::V4(EXTRA))
        });
        if ours {
            nl.address().del(a).execute().await?;
        }
    }
    poll("the removed address's state gone", || async {
        Ok(rules_from(nl, &extra).await? == 0 && owner(pins, EXTRA).is_none())
    })
    .await?;
    Ok(took)
}

/// enipin_reconciles_total, all results, from the watcher's /metrics.
pub(super) fn reconciles() -> Result<f64> {
    let mut s = TcpStream::connect_timeout(&METRICS.parse()?, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let n: f64 = out
        .lines()
        .filter(|l| l.starts_with("enipin_reconciles_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    ensure!(
        out.contains("enipin_reconciles_total{"),
        "no reconcile counter in /metrics"
    );
    Ok(n)
}

/// `ip -batch` adds [`BURST`] addresses; times until every rule and owner entry is in place,
/// then counts the reconciles the burst cost (after half a second of quiet). Removes them again.
async fn burst(
    nl: &Handle,
    pins: &Path,
    host: &str,
    batch: &[std::path::PathBuf; 2],
) -> Result<(f64, f64)> {
    let in_burst =
        |ip: IpAddr| matches!(ip, IpAddr::V4(v4) if matches!(v4.octets(), [198, 18, 4 | 5, _]));
    let before = reconciles()?;
    let t = Instant::now();
    testbed::run(
        Command::new("ip")
            .args(["-n", host, "-batch"])
            .arg(&batch[0]),
    )?;
    poll("the burst managed", || async {
        Ok(rules_from(nl, &in_burst).await? == 2 * BURST && burst_owners(pins) == BURST)
    })
    .await?;
    let took = ms(t.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = reconciles()? - before;
    testbed::run(
        Command::new("ip")
            .args(["-n", host, "-batch"])
            .arg(&batch[1])
            .stdout(Stdio::null()),
    )?;
    poll("the burst's state gone", || async {
        Ok(rules_from(nl, &in_burst).await? == 0 && burst_owners(pins) == 0)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok((took, n))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), 50.0);
        assert_eq!(percentile(&xs, 99.0), 99.0);
        assert_eq!(percentile(&xs, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
