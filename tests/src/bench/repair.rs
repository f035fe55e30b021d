//! What `--metadata aws` costs a repair: the same deleted rule restored by `enipin watch` on a
//! host of 15 ENIs (the lab's `eth0`..`eth14`, one address each), with and without `--metadata`
//! against a metadata stand-in listing them all, the two watchers taking turns round by round.
//!
//! A full refresh of 15 ENIs is 2 + 9 x 15 = 137 requests through the client's 20 requests/s
//! bucket (about 7 s); it runs in the watcher's metadata task, never inside a repair. Before
//! that, each repair asked first: 13.2 s at the median, against 19 ms without `--metadata`.

use std::time::Duration;

use anyhow::{Context as _, Result};
use enipin::lab::{
    EniSpec, Spec, Topology,
    imds::{FakeEni, Imds},
    testbed::{self, Dirs, TempDir},
};

use super::{
    Row, Target, median,
    reaction::{SECONDARY, Watch, poll, reconciles, restore_rule, rule_present},
};

/// ENIs on the host.
const ENIS: u8 = 15;
/// The longest wait for a watcher's first reconcile.
const START: Duration = Duration::from_secs(30);

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
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        without.extend(round(&topo, &dirs, &log, &[], trials).context("without --metadata")?);
        with.extend(round(&topo, &dirs, &log, &with_metadata, trials).context("with --metadata")?);
    }
    let n = with.len();
    Ok(vec![Row {
        target: Target::RatioAtMost(1.5),
        ..Row::ratio(
            "watch",
            &format!(
                "a deleted rule restored with --metadata aws at {ENIS} ENIs, median of {n} (vs \
                 without --metadata)"
            ),
            median(&with),
            median(&without),
            "ms",
            Target::None,
        )
    }])
}

/// Waits for the watcher's first reconcile to end: with `--metadata` it asks the service about
/// every ENI first (137 requests at 20/s: about 7 s), as `attach` does.
async fn settled() -> Result<()> {
    let t = std::time::Instant::now();
    while reconciles().unwrap_or(0.0) < 1.0 {
        anyhow::ensure!(t.elapsed() < START, "no first reconcile within {START:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// One watcher's turn: started, settled, `trials` restores timed, stopped.
fn round(
    topo: &Topology,
    dirs: &Dirs,
    log: &TempDir,
    extra: &[&str],
    trials: usize,
) -> Result<Vec<f64>> {
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
    crate::in_ns(topo.host(), || -> Result<Vec<f64>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let (conn, nl, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            settled().await?;
            poll("the rule in place", || rule_present(&nl)).await?;
            let mut ms = Vec::with_capacity(trials);
            for _ in 0..trials {
                ms.push(restore_rule(&nl).await?);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(ms)
        })
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
