//! The kernel matrix: each of Debian's cloud kernel lines boots in QEMU (TCG) and runs
//! tests/guest/steps.sh with the static enipin: doctor, the lab (both layers, IPv4 and IPv6,
//! nothing left after detach), the metadata lab, the split-subnet lab (the program alone
//! redirecting through the secondary ENI's gateway), watch restoring a deleted rule and a removed
//! link pin, and attach killed at several points. One test per line, so a failure names its
//! kernel; the lines and where they come from are in xtask/src/kernels.rs.
//!
//! Needs `cargo xtask setup` (QEMU, busybox, the kernels) and the static release build (`cargo
//! xtask test` builds it first). Never skips: a missing kernel, QEMU or binary fails the test.

use std::time::Duration;

use enipin_tests::guest::{self, Kernel};

/// The steps of tests/guest/steps.sh, in order; each must print PASS.
const STEPS: &[&str] = &[
    "doctor",
    "lab",
    "lab-metadata",
    "lab-split",
    "keep",
    "watch",
    "chaos",
    "cleanup",
];

/// A whole guest took 67-127 s over seven runs on the 2-CPU test machine (5.10 and 6.1 failing,
/// 6.12 and 7.3 passing, with other TCG guests running beside them): about five times the slowest
/// before it is killed, so a hung guest fails instead of holding CI.
const LIMIT: Duration = Duration::from_secs(600);

fn matrix(line: &str) {
    let kernel = Kernel::fetched(line);
    let out = guest::run(&kernel, LIMIT);
    let summary = out.summary(STEPS);
    // The whole console, passed or not, for reading after the run (and as a CI artifact).
    let log = enipin_tests::run::root().join(format!("target/kernel-matrix/{line}.console"));
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, &out.console).unwrap();
    eprintln!(
        "kernel {line} ({}, {}): {:.0} s, console in {}\n{summary}",
        kernel.release,
        kernel.package,
        out.took.as_secs_f64(),
        log.display()
    );
    assert!(
        out.passed(STEPS),
        "kernel {line} ({}) failed:\n{summary}\n--- console ---\n{}",
        kernel.release,
        out.console
    );
}

#[test]
fn kernel_5_10() {
    matrix("5.10");
}

#[test]
fn kernel_6_1() {
    matrix("6.1");
}

#[test]
fn kernel_6_12() {
    matrix("6.12");
}

#[test]
fn kernel_newest() {
    matrix("newest");
}
