//! What `enipin watch` costs while it serves its metrics, on the control section's fleet
//! (15 interfaces x 50 addresses): its peak resident set (VmHWM) after its first reconcile (the
//! whole fleet installed), a full reconcile (SIGHUP) and a few hundred scrapes, and the time of
//! one scrape of `/metrics` (connect, request, the whole body read), from a thread inside the
//! fleet's namespace so no namespace switch or process start is timed.

use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use enipin::lab::testbed::{self, Dirs, Netns, TempDir};

use super::{Row, Target, median};
use crate::http_client::{agent, get_with};

/// Where the watcher serves its metrics inside the fleet's namespace.
const LISTEN: &str = "127.0.0.1:9717";
/// Scrapes timed per round.
const SCRAPES: usize = 50;
/// Between scrapes: longer than the 100 ms a rendering is shared for, so each scrape renders
/// the exposition as Prometheus's (15-60 s apart) do.
const APART: Duration = Duration::from_millis(110);
/// The longest wait for the watcher's first or next reconcile.
const LIMIT: Duration = Duration::from_secs(20);

/// A running `enipin watch`, killed and reaped on drop.
struct Watch(Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One round's figures.
struct Round {
    /// VmHWM, MiB.
    peak_mib: f64,
    /// Each scrape's time, ms.
    scrapes_ms: Vec<f64>,
    /// Each request for a path the server refuses (404, nothing computed), ms: the floor of a
    /// request to this server (connect, parse, answer), timed interleaved with the scrapes.
    floor_ms: Vec<f64>,
    /// The exposition's size, KiB.
    body_kib: f64,
}

/// Rows for `rounds` watchers in turn on `host` (`interfaces` x `addresses`, installed by none).
pub fn run(host: &Netns, interfaces: usize, addresses: usize, rounds: usize) -> Result<Vec<Row>> {
    let mut peaks = Vec::new();
    let mut scrapes = Vec::new();
    let mut floor = Vec::new();
    let mut body = Vec::new();
    for _ in 0..rounds {
        let r = round(host, interfaces * addresses)?;
        peaks.push(r.peak_mib);
        scrapes.extend(r.scrapes_ms);
        floor.extend(r.floor_ms);
        body.push(r.body_kib);
    }
    let size = format!("{interfaces} interfaces x {addresses} addresses");
    Ok(vec![
        Row::target(
            "watch",
            &format!(
                "enipin watch peak RSS (VmHWM), metrics served, {size}, after a reconcile and \
                 {SCRAPES} scrapes"
            ),
            median(&peaks),
            "MiB",
            Target::AtMost(12.0),
        ),
        Row {
            // What the exposition adds to a request the server answers at once (a 404).
            baseline: Some(median(&floor)),
            ..Row::target(
                "watch",
                &format!(
                    "one scrape of watch's /metrics, {size} (median of {SCRAPES} per round, each \
                     rendered anew; baseline: a 404 from the same server)"
                ),
                median(&scrapes),
                "ms",
                Target::AtMost(2.0),
            )
        },
        Row::value(
            "watch",
            "watch's /metrics exposition size",
            median(&body),
            "KiB",
        ),
    ])
}

/// Starts a watcher, waits for its first reconcile, times the scrapes, asks for a full
/// reconcile and waits for it, reads its peak, then stops it and detaches.
fn round(host: &Netns, addresses: usize) -> Result<Round> {
    let dirs = Dirs::new("ew-")?;
    let bin = crate::enipin_bin();
    // The watcher's own account, for the error when it does not answer.
    let log = TempDir::new("ew-log-")?;
    let log_path = log.path().join("stderr");
    let stderr = std::fs::File::create(&log_path).context("creating watch's stderr file")?;
    let child = testbed::enipin_command(
        &bin,
        host.name(),
        &dirs.paths(),
        &["watch", "--metrics-listen", LISTEN, "--interval", "60"],
    )
    .stdout(Stdio::null())
    .stderr(stderr)
    .spawn()
    .context("spawning enipin watch")?;
    let watch = Watch(child);
    let pid = watch.0.id();
    let metrics = format!("http://{LISTEN}/metrics");
    let refused = format!("http://{LISTEN}/nothing-here");
    let (scrapes_ms, floor_ms, body_kib) = crate::in_ns(host, || -> Result<_> {
        let agent = agent();
        let reconciles = |text: &str| -> f64 {
            ["changed", "unchanged"]
                .iter()
                .filter_map(|r| sample(text, &format!("enipin_reconciles_total{{result=\"{r}\"}}")))
                .sum()
        };
        // The first reconcile has installed the whole fleet.
        let text = wait(|| {
            let (status, text) = get_with(&agent, &metrics).ok()?;
            (status == 200 && reconciles(&text) >= 1.0).then_some(text)
        })
        .context("no successful reconcile")?;
        let managed = sample(&text, "enipin_managed_addresses");
        ensure!(
            managed == Some(addresses as f64),
            "watch manages {managed:?} addresses, expected {addresses}"
        );
        let mut times = Vec::with_capacity(SCRAPES);
        let mut floor = Vec::with_capacity(SCRAPES);
        let mut size = 0;
        for _ in 0..SCRAPES {
            std::thread::sleep(APART);
            let t = Instant::now();
            let (status, text) = get_with(&agent, &metrics)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            ensure!(status == 200, "/metrics answered {status}");
            size = text.len();
            let t = Instant::now();
            let (status, _) = get_with(&agent, &refused)?;
            floor.push(t.elapsed().as_secs_f64() * 1e3);
            ensure!(status == 404, "{refused} answered {status}");
        }
        // A full reconcile on top (what SIGHUP and the periodic pass cost).
        let before = reconciles(&text);
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(pid as i32, libc::SIGHUP) };
        wait(|| {
            let text = get_with(&agent, &metrics).ok()?.1;
            (reconciles(&text) > before).then_some(())
        })
        .context("no reconcile after SIGHUP")?;
        Ok((times, floor, size as f64 / 1024.0))
    })
    .with_context(|| watch_said(&log_path))?;
    let peak_mib = vm_hwm_kib(pid)? / 1024.0;
    drop(watch);
    let detach = testbed::enipin_command(&bin, host.name(), &dirs.paths(), &["detach"])
        .output()
        .context("spawning enipin detach")?;
    if !detach.status.success() {
        bail!(
            "enipin detach failed: {}",
            String::from_utf8_lossy(&detach.stderr).trim()
        );
    }
    Ok(Round {
        peak_mib,
        scrapes_ms,
        floor_ms,
        body_kib,
    })
}

/// The last lines the watcher wrote to its stderr.
fn watch_said(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    format!("enipin watch's last stderr lines:\n{tail}")
}

/// Polls `f` every 10 ms, for at most [`LIMIT`].
fn wait<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t = Instant::now();
    while t.elapsed() < LIMIT {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The value of the sample `series` (name and labels as printed) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The process's peak resident set (VmHWM), KiB.
fn vm_hwm_kib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .context("no VmHWM in /proc/PID/status")
}
