//! What a busy day costs a repair: the same deleted rule restored by `enipin watch` on a host of
//! 15 ENIs (the lab's `eth0`..`eth14`, one address each), idle, with `--metadata` against a
//! metadata stand-in listing them all, and idle again while [`SCRAPES`] requests a second hit
//! its `/metrics`; the three watchers take turns round by round.
//!
//! Scrapes: 800-1,100 a second took 55-78 % of a CPU and raised the restore median from 17 ms to
//! 69-111 ms, when each one rendered the exposition (the datapath's per-CPU counters read from
//! the pinned maps, the registry encoded); scrapes within 100 ms of a render now share it.
//!
//! A full refresh of 15 ENIs is 2 + 9 x 15 = 137 requests through the client's 20 requests/s
//! bucket (about 7 s); it runs in the watcher's metadata task, never inside a repair. Before
//! that, each repair asked first: 13.2 s at the median, against 19 ms without `--metadata`.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use enipin::lab::{
    EniSpec, Spec, Topology,
    imds::{FakeEni, Imds},
    testbed::{self, Dirs, TempDir},
};

use super::{
    Row, Target, median,
    reaction::{METRICS, SECONDARY, Watch, poll, reconciles, restore_rule, rule_present},
};

/// ENIs on the host.
const ENIS: u8 = 15;
/// The longest wait for a watcher's first reconcile.
const START: Duration = Duration::from_secs(30);
/// Scrapes of `/metrics` a second in the loaded case, from [`SCRAPERS`] threads.
const SCRAPES: u32 = 1000;
const SCRAPERS: u32 = 4;

/// The ratio row: restore median with `--metadata aws` against without, `trials` restores per
/// watcher per round.
pub fn run(quick: bool, rounds: usize) -> Result<Vec<Row>> {
    let trials = if quick { 5 } else { 30 };
    let spec = Spec {
        enis: (0..ENIS).map(EniSpec::nth).collect(),
        ..Spec::default()
    };
    let topo = Topology::build_with(spec)?;
    let enis = (topo.spec.enis.iter().enumerate())
        .map(|(i, e)| FakeEni::new(&e.mac, i as u32, &[&e.v4[0].to_string()], "198.18.0.0/24"))
        .collect();
    let imds = Imds::start(topo.host(), enis)?;
    let url = imds.url();
    let dirs = Dirs::new("er-")?;
    let log = TempDir::new("er-log")?;
    let with_metadata = ["--metadata", "aws", "--metadata-endpoint", &url];
    let (mut idle, mut with, mut loaded) = (Vec::new(), Vec::new(), Vec::new());
    let (mut scraped, mut secs) = (0, 0.0);
    for _ in 0..rounds.max(1) {
        let turn = |extra: &[&str], scrapes| round(&topo, &dirs, &log, extra, trials, scrapes);
        idle.extend(turn(&[], 0).context("idle")?.0);
        with.extend(turn(&with_metadata, 0).context("with --metadata")?.0);
        let (ms, (n, s)) = turn(&[], SCRAPES).context("under scrapes")?;
        loaded.extend(ms);
        (scraped, secs) = (scraped + n, secs + s);
    }
    let rate = scraped as f64 / secs;
    let n = with.len();
    let row = |what: String, xs: &[f64]| Row {
        target: Target::RatioAtMost(1.5),
        ..Row::ratio(
            "watch",
            &what,
            median(xs),
            median(&idle),
            "ms",
            Target::None,
        )
    };
    Ok(vec![
        row(
            format!(
                "a deleted rule restored with --metadata aws at {ENIS} ENIs, median of {n} (vs \
                 without --metadata)"
            ),
            &with,
        ),
        row(
            format!(
                "a deleted rule restored under {SCRAPES} scrapes/s of /metrics ({scraped} served, \
                 about {rate:.0}/s), median of {n} (vs idle)"
            ),
            &loaded,
        ),
    ])
}

/// Waits for the watcher's first reconcile to end: with `--metadata` it asks the service about
/// every ENI first (137 requests at 20/s: about 7 s), as `attach` does.
async fn settled() -> Result<()> {
    let t = Instant::now();
    while reconciles().unwrap_or(0.0) < 1.0 {
        anyhow::ensure!(t.elapsed() < START, "no first reconcile within {START:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// One watcher's turn: started, settled, `trials` restores timed (under `scrapes` a second of
/// its `/metrics` when not 0), stopped. Returns the restores, and the scrapes served and in how
/// many seconds.
fn round(
    topo: &Topology,
    dirs: &Dirs,
    log: &TempDir,
    extra: &[&str],
    trials: usize,
    scrapes: u32,
) -> Result<(Vec<f64>, (u64, f64))> {
    let args = [&["watch", "--interval", "60"][..], extra].concat();
    let err = log.path().join("watch.err");
    let child = testbed::enipin_command(
        &crate::enipin_bin(),
        topo.host().name(),
        &dirs.paths(),
        &args,
    )
    .stdout(std::fs::File::create(log.path().join("watch.log"))?)
    .stderr(std::fs::File::create(&err)?)
    .spawn()
    .context("spawning enipin watch")?;
    let _watch = Watch(child);
    crate::in_ns(topo.host(), || -> Result<(Vec<f64>, (u64, f64))> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(settled())?;
        // Threads started here are in the host namespace too, where the watcher listens.
        let load = (scrapes > 0).then(|| Scrapers::start(scrapes));
        let ms = rt.block_on(async {
            let (conn, nl, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            poll("the rule in place", || rule_present(&nl)).await?;
            let mut ms = Vec::with_capacity(trials);
            for _ in 0..trials {
                ms.push(restore_rule(&nl).await?);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(ms)
        });
        let served = load.map_or((0, 0.0), Scrapers::stop);
        Ok((ms?, served))
    })
    .with_context(|| {
        let text = std::fs::read_to_string(&err).unwrap_or_default();
        let tail: Vec<_> = text.lines().rev().take(20).collect();
        format!(
            "restoring {SECONDARY}'s rule (the watcher's last lines, newest first:\n{})",
            tail.join("\n")
        )
    })
}

/// Threads that GET the watcher's `/metrics` at a fixed rate until stopped (and for at most a
/// minute, whatever happens).
struct Scrapers {
    started: Instant,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Scrapers {
    fn start(rate: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let gap = Duration::from_secs(1) / (rate / SCRAPERS);
        let threads = (0..SCRAPERS)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let start = Instant::now();
                    let mut served = 0;
                    let mut next = start;
                    while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60)
                    {
                        if scrape().is_ok() {
                            served += 1;
                        }
                        next += gap;
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                    served
                })
            })
            .collect();
        Self {
            started: Instant::now(),
            stop,
            threads,
        }
    }

    /// Stops the threads; the scrapes they had served, and in how many seconds.
    fn stop(self) -> (u64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let served = (self.threads.into_iter())
            .map(|t| t.join().unwrap_or(0))
            .sum();
        (served, secs)
    }
}

/// One GET of `/metrics`, read to the end.
fn scrape() -> Result<()> {
    let mut s = TcpStream::connect_timeout(&METRICS.parse()?, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    anyhow::ensure!(out.starts_with(b"HTTP/1.1 200"), "not a 200");
    Ok(())
}
