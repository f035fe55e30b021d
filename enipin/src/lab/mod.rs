//! `enipin lab`: the seed scenario in throwaway namespaces. Two ENIs in one subnet behind a "VPC"
//! that drops what the cloud drops; the reply to the secondary address is dropped until enipin is
//! attached, and nothing of enipin is left after detach.
//!
//! [`Topology`] is the reusable network (tests, benchmark); [`scenario::run`] the steps and their
//! [`Report`]; [`snapshot`] the before/after dumps.

// Public with the `testing` feature: the tests and the benchmark build on the lab's network,
// steps and dumps. The `lab` command needs only `run`.
pub mod imds;
testing_pub!(scenario, snapshot, testbed, topology);

use std::{process::ExitCode, sync::atomic::Ordering};

use anyhow::{Context as _, Result};
#[cfg(feature = "testing")]
pub use scenario::{Options, Report, Step};
#[cfg(not(feature = "testing"))]
use scenario::{Options, Report, Step};
#[cfg(feature = "testing")]
pub use snapshot::Snapshot;
#[cfg(not(feature = "testing"))]
use topology::Spec;
#[cfg(feature = "testing")]
pub use topology::{Drops, EniDrops, EniSpec, Spec, Topology};

/// Everything the lab, the tests and the benchmark need: root and the commands they run (each
/// run mounts a bpffs instance of its own: see `testbed::PinDir`). The error names every missing
/// piece.
pub fn preflight() -> Result<()> {
    let mut missing = Vec::new();
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (namespaces, nftables and eBPF need it)".to_string());
    }
    for cmd in ["ip", "tc", "nft", "ping", "sysctl"] {
        if crate::lab::testbed::sh(&format!("command -v {cmd}")).is_err() {
            missing.push(format!("the `{cmd}` command"));
        }
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "missing: {} (`cargo xtask setup` installs the packages)",
            missing.join("; ")
        );
    }
    Ok(())
}

/// Runs the scenario and verifies its namespaces, pins and state are gone afterwards (step 6).
/// Blocking: call from a thread that may block.
pub fn run_checked(opts: &Options) -> Result<Report> {
    let mut report = scenario::run(opts)?;
    if !opts.keep {
        let (ok, result) = match leftovers(&report) {
            Ok(left) if left.is_empty() => (true, "namespaces, pins, state removed".to_string()),
            Ok(left) => (false, format!("left behind: {}", left.join(", "))),
            Err(e) => (false, format!("{e:#}")),
        };
        let what = "cleanup".to_string();
        println!("[6] {what}: {} {result}", if ok { "ok" } else { "FAIL" });
        report.steps.push(Step {
            key: what.clone(),
            num: 6,
            what,
            expected: "nothing left".into(),
            result,
            ok,
        });
    }
    Ok(report)
}

/// The report's namespaces still listed by `ip netns list`, and its directories still present.
pub fn leftovers(report: &Report) -> Result<Vec<String>> {
    let list = crate::lab::testbed::sh("ip netns list").context("listing namespaces")?;
    let mut left: Vec<String> = report
        .namespaces
        .iter()
        .filter(|n| {
            list.lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str()))
        })
        .cloned()
        .collect();
    for dir in [&report.pin_dir, &report.state_dir] {
        if dir.exists() {
            left.push(dir.display().to_string());
        }
    }
    Ok(left)
}

/// Where the lab puts the secondary ENI (`enipin lab --subnets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Subnets {
    /// In the primary's subnet: the seed.
    Shared,
    /// In a subnet of its own (198.18.11.0/24, 2001:db8:b::/64) with its own default routes,
    /// as DHCP gives each ENI on AL2023: its replies to the peer's subnet still leave by eth0.
    Split,
}

impl Subnets {
    /// The lab's network for this choice.
    fn spec(self) -> Spec {
        match self {
            Subnets::Shared => Spec::default(),
            Subnets::Split => Spec {
                enis: vec![
                    topology::EniSpec::nth(0),
                    topology::EniSpec {
                        default_route: true,
                        ..topology::EniSpec::in_own_subnet(1)
                    },
                ],
                ..Spec::default()
            },
        }
    }
}

/// `enipin lab [--keep] [--metadata] [--subnets split]`: prints the steps as they run, then the table; the last line is PASS or
/// FAIL. Ctrl-C (or SIGTERM) stops the scenario at the next poll and still removes everything.
pub async fn run(keep: bool, metadata: bool, subnets: Subnets) -> Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    if let Err(e) = preflight() {
        println!("lab: {e:#}\nFAIL");
        return Ok(ExitCode::FAILURE);
    }
    let bin = std::env::current_exe().context("locating enipin's own executable")?;
    let opts = Options {
        bin,
        keep,
        spec: subnets.spec(),
        metadata,
    };
    let started = std::time::Instant::now();
    // Handlers first: a Ctrl-C between namespace creation and them would skip the cleanup.
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut task = tokio::task::spawn_blocking(move || run_checked(&opts));
    // The handlers stay installed: a second Ctrl-C cannot cut the cleanup short.
    let joined = tokio::select! {
        r = &mut task => r,
        _ = int.recv() => interrupted(task).await,
        _ = term.recv() => interrupted(task).await,
    };
    let elapsed = started.elapsed().as_secs_f64();
    match joined
        .map_err(|e| anyhow::anyhow!("lab thread: {e}"))
        .and_then(|r| r)
    {
        Ok(report) => {
            println!("\n{}", report.table());
            println!("lab took {elapsed:.1} s");
            let pass = report.passed();
            println!("{}", if pass { "PASS" } else { "FAIL" });
            Ok(if pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Err(e) => {
            // A command killed by the same Ctrl-C may have failed first.
            let cancelled =
                e.is::<scenario::Interrupted>() || scenario::CANCELLED.load(Ordering::Relaxed);
            let e = if cancelled {
                "interrupted".to_string()
            } else {
                format!("{e:#}")
            };
            println!("lab: {e}; namespaces, pins and state removed");
            println!("FAIL");
            Ok(ExitCode::from(if cancelled { 130 } else { 1 }))
        }
    }
}

async fn interrupted(
    task: tokio::task::JoinHandle<Result<Report>>,
) -> std::result::Result<Result<Report>, tokio::task::JoinError> {
    eprintln!("lab: interrupted, cleaning up");
    scenario::CANCELLED.store(true, Ordering::Relaxed);
    task.await
}
