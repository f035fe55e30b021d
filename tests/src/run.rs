//! Running the machine's own tools from a test (tar, dpkg, podman, systemd-nspawn, systemctl)
//! and finding what `cargo xtask dist` built: one place for the packaging and systemd tests.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

/// The workspace's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/dist/NAME`, which must exist.
pub fn artifact(name: &str) -> PathBuf {
    let path = root().join("target/dist").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask dist` (`cargo xtask test` runs it first)",
        path.display()
    );
    path
}

/// Runs `cmd`, panics with its output unless it succeeds, returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = out(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` to its end; a tool that cannot be started is a failure that names the fix.
pub fn out(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e} (`cargo xtask setup` installs it)"))
}

/// Polls `f` every `every` until it holds; panics once `deadline` has passed.
pub fn eventually(what: &str, deadline: Duration, every: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < deadline, "no {what} within {deadline:?}");
        std::thread::sleep(every);
    }
}
