//! Harness for enipin's privileged integration tests: throwaway namespaces (re-exported from
//! `enipin::lab::testbed`), the seed topology (`enipin::lab::Topology`), the CLI run inside a namespace
//! with its own pin and state directories ([`Enipin`]), dumps for before/after comparisons, code
//! run on a thread inside a namespace ([`in_ns`]), veth beds for test-runs ([`VethBed`]) and the
//! one BPF_PROG_TEST_RUN wrapper ([`test_run()`], with the `TC_ACT_*` verdicts), and a metadata
//! server with faults to inject ([`imds`]), a real systemd booted under systemd-nspawn
//! ([`machine`]), and QEMU guests booting other kernels for the kernel matrix ([`guest`]).
//! Every test network is `Topology` (`Spec` varies it): add what a test needs there, not here.
//!
//! Tests never skip: [`require`] panics with what is missing (root, bpffs, ip, tc, nft, ping, the
//! enipin binary), so CI fails loudly instead of passing vacuously.

// A test harness, not a library with users: its items are documented where the use is not
// obvious, not all of them.
#![allow(missing_docs)]

pub mod bed;
pub mod bench;
pub mod frames;
pub mod guest;
pub mod http_client;
pub mod machine;
pub mod run;
pub mod test_run;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

pub use bed::VethBed;
pub use enipin::{
    lab::testbed::{self, Dirs, Netns, PinDir, TempDir, sh, unique, veth},
    lab::{
        self, Drops, EniSpec, Snapshot, Spec, Topology, imds,
        snapshot::{pins, routes, rules, sysctls, tc, tcx_programs},
    },
};
pub use test_run::{TC_ACT_REDIRECT, TC_ACT_UNSPEC, test_run, test_run_ctx, test_run_out};

/// `<workspace>/target/debug/enipin`, the binary `cargo xtask test` builds before the suite
/// (`$ENIPIN_BIN` if set: the benchmark drives the release build).
pub fn enipin_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENIPIN_BIN") {
        return PathBuf::from(bin);
    }
    // Test executables live in target/<profile>/deps; the binary in target/<profile>.
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("enipin")))
        .filter(|p| p.is_file());
    let bin = beside.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        target.join("debug/enipin")
    });
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo xtask test`, which builds it (or `cargo build -p enipin --bin enipin`)",
        bin.display()
    );
    bin
}

/// Runs `f` on a thread that entered `ns` (setns moves only the calling thread): for in-process
/// netlink, eBPF loads and test-runs, which resolve ifindexes in the caller's namespace.
pub fn in_ns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enipin::kernel::netns::enter(ns.name()).expect("entering the test namespace");
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Panics unless everything a namespace test needs is here. Never skip: a skipped privileged
/// test is indistinguishable from a passing one in CI.
pub fn require() {
    if let Err(e) = lab::preflight() {
        panic!("this test needs {e:#}");
    }
    enipin_bin();
}

/// A process started by [`Enipin::spawn`]; SIGKILLed and reaped on drop unless it was stopped.
#[derive(Debug)]
pub struct Running(pub std::process::Child);

impl Running {
    /// SIGTERM, then its exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: a signal to our own child, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        self.0.wait().expect("waiting for enipin")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The enipin CLI bound to one namespace, with a pin directory and a state directory of its own
/// (all removed on drop: namespace last, so a detach in a test's own Drop still finds it).
#[derive(Debug)]
pub struct Enipin {
    pub pins: PinDir,
    pub state: TempDir,
    ns_name: String,
    owned: Option<Netns>,
    bin: PathBuf,
}

impl Enipin {
    /// Everything enipin could touch in `t`'s host namespace: rules, routes, sysctls, the ENIs'
    /// TC state and this runner's pins (the before/after of a test).
    pub fn dump(&self, t: &Topology) -> Snapshot {
        Snapshot::take(t.host(), &t.eni_names(), self.pins.path()).expect("dumping the host")
    }

    /// Takes ownership of `ns` (deleted with the returned value).
    pub fn new(ns: Netns) -> Self {
        let mut e = Self::named(ns.name());
        e.owned = Some(ns);
        e
    }

    /// For a namespace someone else owns (e.g. `Topology::host()`); it must outlive this value.
    pub fn in_ns(ns: &Netns) -> Self {
        Self::named(ns.name())
    }

    fn named(ns: &str) -> Self {
        require();
        Self {
            pins: PinDir::new("enipin-test-").expect("bpffs pin dir"),
            state: TempDir::new("enipin-state-").expect("state dir"),
            ns_name: ns.to_string(),
            owned: None,
            bin: enipin_bin(),
        }
    }

    /// The owned namespace, if [`Enipin::new`] was used.
    pub fn ns(&self) -> Option<&Netns> {
        self.owned.as_ref()
    }

    pub fn ns_name(&self) -> &str {
        &self.ns_name
    }

    /// The pin and state directories, for calling the library (`enipin::datapath`) on the same
    /// attachment as the CLI.
    pub fn paths(&self) -> enipin::settings::config::Paths {
        enipin::settings::config::Paths {
            pin_dir: self.pins.path().to_owned(),
            state_dir: self.state.path().to_owned(),
        }
    }

    /// `<state dir>/state.json`, enipin's record of what it installed.
    pub fn state_file(&self) -> PathBuf {
        enipin::engine::state::file(&self.paths())
    }

    /// `enipin --netns NS --pin-dir P --state-dir S ARGS...`, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        testbed::enipin_command(&self.bin, &self.ns_name, &self.paths(), args)
    }

    /// Starts the CLI in the background (`watch`), its output discarded: killed and reaped when
    /// the returned value drops, so a failing test leaves no watcher behind to write into its
    /// removed state directory.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let child = self
            .command(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawning enipin");
        Running(child)
    }

    /// Runs the CLI and returns its output, successful or not.
    pub fn cmd(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("spawning enipin")
    }

    /// Runs the CLI, panics with its stderr unless it succeeds, returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "enipin {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI, panics with its stdout unless it fails, returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            !out.status.success(),
            "enipin {} should have failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}
