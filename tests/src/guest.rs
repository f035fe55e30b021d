//! QEMU guests for the kernel matrix (tests/tests/kernels.rs): one of Debian's cloud kernels
//! (fetched by `cargo xtask setup` into `.tools/kernels/<line>/`) boots an initramfs built here,
//! runs `tests/guest/steps.sh` with the static enipin, and powers off; the console is parsed for
//! the steps' verdicts.
//!
//! Why an initramfs: Debian's cloud kernels have no 9p and bookworm no virtiofsd, so the guest
//! cannot mount the host's root. It holds busybox (the small commands), dash as /bin/sh (busybox's
//! shell would run its own `ip`/`tc`/`ping` applets instead of iproute2's), the host's `ip`, `tc`,
//! `nft`, `ping`, `sysctl` and `kmod` with the shared libraries ldd names, the kernel's module tree
//! (veth, bridge, nf_tables, cls_bpf load on demand through /sbin/modprobe), enipin, and the
//! scripts. Two newc archives concatenated: the small one built per run in a temporary
//! directory, the module tree (72-100 MB) straight from `.tools/kernels/`.
//!
//! Why TCG: /dev/kvm on the test machine is PVM, under which Debian's kernels crash or crawl; one
//! TCG thread, since multi-threaded TCG crashed a guest in `text_poke`. Nothing timed in a guest
//! means anything: the matrix checks behaviour only.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{TempDir, run::root};

/// The host's commands the guest runs, copied with their libraries into /usr/sbin.
const HOST_TOOLS: &[&str] = &["ip", "tc", "nft", "ping", "sysctl", "kmod"];
/// kmod's names: the kernel runs /sbin/modprobe to load a module on demand.
const KMOD_NAMES: &[&str] = &["modprobe", "insmod", "rmmod", "lsmod", "depmod", "modinfo"];
/// The line /init prints after the steps, with their exit status.
const MARKER: &str = "ENIPIN-GUEST-EXIT ";

/// One guest at a time: each takes a whole CPU for TCG, and CI has two for the whole suite.
static ONE_GUEST: Mutex<()> = Mutex::new(());

/// A kernel fetched by `cargo xtask setup`.
#[derive(Debug)]
pub struct Kernel {
    /// The matrix's line: `5.10`, `6.1`, `6.12`, `newest`.
    pub line: String,
    /// `uname -r` in the guest (the directory under lib/modules).
    pub release: String,
    /// `<package> <version> <suite>`, as fetched.
    pub package: String,
    dir: PathBuf,
}

impl Kernel {
    /// `.tools/kernels/<line>/`; panics (never skips) when setup has not fetched it.
    pub fn fetched(line: &str) -> Self {
        let dir = root().join(".tools/kernels").join(line);
        let package = fs::read_to_string(dir.join("package")).unwrap_or_else(|e| {
            panic!(
                "kernel {line} is not fetched ({}: {e}): run `cargo xtask setup`",
                dir.join("package").display()
            )
        });
        let modules = dir.join("lib/modules");
        let release = fs::read_dir(&modules)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .unwrap_or_else(|| panic!("no kernel release in {}", modules.display()));
        Self {
            line: line.to_string(),
            release,
            package: package.trim().to_string(),
            dir,
        }
    }
}

/// One `STEP <name> PASS|FAIL ...` line of the console.
#[derive(Clone, Debug)]
pub struct Step {
    pub name: String,
    pub passed: bool,
    /// The rest of the line (the step's guest time).
    pub detail: String,
}

/// What a guest printed and how it ended.
#[derive(Debug)]
pub struct Outcome {
    /// The serial console, kernel messages included.
    pub console: String,
    pub steps: Vec<Step>,
    /// The steps script's exit status, from the marker line; None if the guest never printed it
    /// (timeout, panic, a crash of /init).
    pub exit: Option<i32>,
    /// Killed at the deadline.
    pub timed_out: bool,
    /// Host wall time from the initramfs's build to the guest's power-off.
    pub took: Duration,
}

impl Outcome {
    /// Every expected step passed and the script said so.
    pub fn passed(&self, expected: &[&str]) -> bool {
        self.exit == Some(0)
            && expected
                .iter()
                .all(|name| self.steps.iter().any(|s| s.name == *name && s.passed))
    }

    /// One line per step, then how the guest ended.
    pub fn summary(&self, expected: &[&str]) -> String {
        let mut lines: Vec<String> = expected
            .iter()
            .map(|name| match self.steps.iter().find(|s| s.name == *name) {
                Some(s) => format!(
                    "  {name:14} {} {}",
                    if s.passed { "PASS" } else { "FAIL" },
                    s.detail
                ),
                None => format!("  {name:14} did not run"),
            })
            .collect();
        lines.push(match (self.exit, self.timed_out) {
            (_, true) => "  guest killed at the deadline".into(),
            (Some(code), _) => format!("  steps script exited {code}"),
            (None, _) => "  guest ended without the marker line (panic? see the console)".into(),
        });
        lines.join("\n")
    }
}

/// `target/x86_64-unknown-linux-musl/release/enipin`: the binary `cargo xtask test` builds (the
/// release tarball's) and the only one that runs without the host's libc.
pub fn static_enipin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let bin = target.join("x86_64-unknown-linux-musl/release/enipin");
    assert!(
        bin.is_file(),
        "{} is missing: `cargo xtask test` builds it, or `cargo build --release --target \
         x86_64-unknown-linux-musl -p enipin`",
        bin.display()
    );
    bin
}

/// Boots `kernel` with `tests/guest/steps.sh` and waits for it to power off, at most `limit`
/// (then the guest is killed). Guests run one at a time.
pub fn run(kernel: &Kernel, limit: Duration) -> Outcome {
    let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let tmp = TempDir::new("enipin-guest-").expect("a temporary directory");
    let initrd = tmp.path().join("initrd.cpio");
    build_initramfs(kernel, tmp.path(), &initrd);
    let console = tmp.path().join("console.log");
    let qemu_log = tmp.path().join("qemu.log");
    let mut guest = Guest::boot(kernel, &initrd, &console, &qemu_log);
    let timed_out = !guest.wait(limit);
    drop(guest);
    let mut text = fs::read_to_string(&console).unwrap_or_default();
    let qemu = fs::read_to_string(&qemu_log).unwrap_or_default();
    if !qemu.trim().is_empty() {
        text.push_str("\n--- qemu's own output ---\n");
        text.push_str(&qemu);
    }
    let (steps, exit) = parse(&text);
    Outcome {
        console: text,
        steps,
        exit,
        timed_out,
        took: started.elapsed(),
    }
}

/// The steps' verdicts and the marker's exit status. Kernel messages share the serial line, so a
/// line is matched from where its text starts, not from its beginning.
fn parse(console: &str) -> (Vec<Step>, Option<i32>) {
    let mut steps = Vec::new();
    let mut exit = None;
    for line in console.lines() {
        if let Some(at) = line.find(MARKER) {
            exit = line[at + MARKER.len()..].trim().parse().ok();
        }
        let Some(at) = line.find("STEP ") else {
            continue;
        };
        let mut words = line[at + 5..].splitn(3, ' ');
        if let (Some(name), Some(verdict @ ("PASS" | "FAIL"))) = (words.next(), words.next()) {
            steps.push(Step {
                name: name.to_string(),
                passed: verdict == "PASS",
                detail: words.next().unwrap_or("").to_string(),
            });
        }
    }
    (steps, exit)
}

/// A running QEMU, killed and reaped when dropped (a failing test leaves no guest behind).
struct Guest(Child);

impl Guest {
    fn boot(kernel: &Kernel, initrd: &Path, console: &Path, log: &Path) -> Self {
        let log = fs::File::create(log).expect("creating qemu's log");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2"])
            .args(["-m", "2048", "-nic", "none", "-display", "none"])
            .args(["-monitor", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(kernel.dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(initrd)
            // panic=-1 with -no-reboot: a panic ends QEMU at once instead of at the deadline.
            // loglevel=5: warnings and worse on the console, not every driver's hello.
            // random.trust_cpu: 5.10 would otherwise wait for entropy (-cpu max has RDRAND).
            .args([
                "-append",
                "console=ttyS0 panic=-1 loglevel=5 random.trust_cpu=on",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("qemu's log"))
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "spawning qemu-system-x86_64: {e} (`cargo xtask setup` installs qemu-system-x86)"
            )
        });
        Self(child)
    }

    /// Waits for the guest to power off; false if `limit` passed first.
    fn wait(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.0.try_wait().expect("waiting for qemu").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Writes `out`: the per-run archive from a tree staged under `tmp`, then the kernel's modules.
fn build_initramfs(kernel: &Kernel, tmp: &Path, out: &Path) {
    let stage = tmp.join("root");
    stage_tree(&stage);
    let mut file = fs::File::create(out).expect("creating the initramfs");
    cpio(&stage, &walk(&stage, Path::new("")), &mut file);
    cpio(&kernel.dir, &walk(&kernel.dir, Path::new("lib")), &mut file);
    file.flush().expect("writing the initramfs");
}

/// The guest's root, less the modules.
fn stage_tree(stage: &Path) {
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "tmp", "root",
        "guest",
    ] {
        fs::create_dir_all(stage.join(dir)).expect("staging the guest's tree");
    }
    let guest_dir = root().join("tests/guest");
    copy(&guest_dir.join("init"), &stage.join("init"));
    copy(&guest_dir.join("steps.sh"), &stage.join("guest/steps.sh"));
    copy(&static_enipin(), &stage.join("usr/sbin/enipin"));
    fs::write(stage.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("etc/passwd");
    fs::write(stage.join("etc/group"), "root:x:0:\n").expect("etc/group");
    for tool in HOST_TOOLS {
        copy_with_libs(
            &host_command(tool),
            &stage.join("usr/sbin").join(tool),
            stage,
        );
    }
    for name in KMOD_NAMES {
        symlink("/usr/sbin/kmod", stage.join("sbin").join(name)).expect("linking kmod");
    }
    copy_with_libs(&host_command("dash"), &stage.join("bin/dash"), stage);
    symlink("dash", stage.join("bin/sh")).expect("linking /bin/sh");
    busybox(stage);
}

/// busybox, and a link in /bin for each of its applets that the tree does not already have from
/// the host (so `ip` is always iproute2's, `sh` dash, `modprobe` kmod's).
fn busybox(stage: &Path) {
    let bin = host_command("busybox");
    copy_with_libs(&bin, &stage.join("bin/busybox"), stage);
    let list = crate::run::ok(Command::new(&bin).arg("--list"));
    for applet in list.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let taken = HOST_TOOLS.contains(&applet)
            || KMOD_NAMES.contains(&applet)
            || stage.join("bin").join(applet).exists();
        if !taken {
            symlink("busybox", stage.join("bin").join(applet)).expect("linking an applet");
        }
    }
}

/// The host's `name` on PATH (or in the sbin directories a non-root PATH may lack), resolved.
fn host_command(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    dirs.map(|d| d.join(name))
        .find(|p| p.is_file())
        .and_then(|p| fs::canonicalize(p).ok())
        .unwrap_or_else(|| panic!("`{name}` is missing: `cargo xtask setup` installs it"))
}

/// Copies `bin` to `to` and every shared library ldd lists for it to the same path in `stage`.
fn copy_with_libs(bin: &Path, to: &Path, stage: &Path) {
    copy(bin, to);
    let out = crate::run::out(Command::new("ldd").arg(bin));
    // A static binary: "not a dynamic executable", exit status 1.
    if !out.status.success() {
        return;
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let lib = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(Path::new);
        if let Some(lib) = lib {
            let dest = stage.join(lib.strip_prefix("/").expect("an absolute path"));
            if !dest.exists() {
                fs::create_dir_all(dest.parent().expect("a library's directory"))
                    .expect("staging a library directory");
                copy(lib, &dest);
            }
        }
    }
}

fn copy(from: &Path, to: &Path) {
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}

/// `top` and everything below it, relative to `base`, parents first (cpio's order).
fn walk(base: &Path, top: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![top.to_path_buf()];
    while let Some(rel) = todo.pop() {
        let path = base.join(&rel);
        let meta = fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if !rel.as_os_str().is_empty() {
            found.push(rel.clone());
        }
        if meta.is_dir() {
            let entries =
                fs::read_dir(&path).unwrap_or_else(|e| panic!("listing {}: {e}", path.display()));
            todo.extend(entries.map(|e| rel.join(e.expect("a directory entry").file_name())));
        }
    }
    found
}

/// Appends a newc archive of `paths` (relative to `base`) to `out`.
fn cpio(base: &Path, paths: &[PathBuf], out: &mut fs::File) {
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(base)
        .stdin(Stdio::piped())
        .stdout(out.try_clone().expect("the initramfs"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawning cpio: {e} (`cargo xtask setup` installs it)"));
    let mut list = String::new();
    for p in paths {
        list.push_str(&p.to_string_lossy());
        list.push('\n');
    }
    let mut stdin = child.stdin.take().expect("cpio's stdin");
    stdin.write_all(list.as_bytes()).expect("feeding cpio");
    drop(stdin);
    let status = child.wait().expect("waiting for cpio");
    assert!(status.success(), "cpio failed: {status}");
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn steps_and_marker_are_found_among_kernel_messages() {
        let console = "guest: 6.1.0\n=== lab\nSTEP lab FAIL (12.0 s)\n\
                       [ 3.1] bridge: hello STEP watch PASS (1.0 s)\nENIPIN-GUEST-EXIT 1\n";
        let (steps, exit) = parse(console);
        assert_eq!(exit, Some(1));
        let got: Vec<(&str, bool)> = steps.iter().map(|s| (s.name.as_str(), s.passed)).collect();
        assert_eq!(got, [("lab", false), ("watch", true)]);
        assert_eq!(steps[0].detail, "(12.0 s)");
    }
}
