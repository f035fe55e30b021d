//! `cargo xtask <task>`: the project's own installer and task runner. Every task that builds
//! enipin runs `setup` first, so the README's commands work on a fresh machine.

mod apt;
mod debs;
mod dist;
mod kernels;
mod setup;
mod sysroot;
mod tools;

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <task>
  setup            install the eBPF toolchain, bpf-linker and the Debian packages (idempotent)
  lab [--keep]     build enipin and run the seed scenario in throwaway namespaces
  test             setup, dist, then the whole test suite (unit, eBPF test-run, namespaces,
                   lab, the artifacts installed and run, Debian's kernels in QEMU)
  dist             x86_64 and arm64 static tarballs, .debs, .rpms and one OCI image index
                   (amd64 + arm64) into target/dist/
  bench [--quick]  the benchmark: datapath cost, throughput ratios, control plane; writes bench/
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run().map(|_| ()),
        Some("lab") => lab(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("dist") => setup::run().and_then(|_| dist::run_dist()),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

/// `cargo` with the project's tools directory first on PATH.
fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root())
        .env("PATH", tools::path_with_tools());
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("{what} creates network namespaces and loads eBPF programs: run it as root");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn lab(args: &[String]) -> Result<()> {
    require_root("the lab")?;
    setup::run()?;
    // The same package set as `cargo test` (the default members): one feature unification, one eBPF build.
    run(cargo().args(["build"]))?;
    let bin = root().join("target/debug/enipin");
    run(Command::new(bin).arg("lab").args(args))
}

fn test(args: &[String]) -> Result<()> {
    require_root("the test suite")?;
    setup::run()?;
    let started = std::time::Instant::now();
    // The artifacts tests/tests/packaging.rs installs and runs.
    dist::run_dist()?;
    // The binary the integration tests drive (same package set as the test build), then the suite.
    run(cargo().args(["build"]))?;
    let (passed, failed, status) = test_and_count(cargo().args(["test"]).args(args))?;
    eprintln!(
        "xtask: test suite took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // One closing line for the whole suite: cargo's own last line is the doc-test run's
    // "0 passed", which would read as if nothing ran.
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() || failed > 0 {
        bail!("the test suite failed ({status})");
    }
    if passed == 0 {
        bail!("the test suite ran no test");
    }
    Ok(())
}

/// Runs `cargo test`, echoing its output, and adds up its "test result:" lines.
fn test_and_count(cmd: &mut Command) -> Result<(u64, u64, std::process::ExitStatus)> {
    use std::io::{BufRead as _, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("spawning cargo test")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next(), words.next()) {
                    match (n.parse::<u64>(), what) {
                        (Ok(n), "passed") => passed += n,
                        (Ok(n), "failed") => failed += n,
                        _ => {}
                    }
                }
            }
        }
    }
    Ok((passed, failed, child.wait()?))
}

fn bench(args: &[String]) -> Result<()> {
    require_root("the benchmark")?;
    setup::run()?;
    // Release builds of enipin and of the bench; the bench drives the binary named by ENIPIN_BIN.
    run(cargo().args(["build", "--release"]))?;
    let target = root().join("target/release");
    run(Command::new(target.join("enipin-bench"))
        .env("ENIPIN_BIN", target.join("enipin"))
        .env("PATH", tools::path_with_tools())
        .args(args))
}
