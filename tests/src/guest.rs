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
//! directory, the module tree (36-105 MB) straight from `.tools/kernels/`.
//!
//! Why TCG: /dev/kvm on the test machine is PVM, under which Debian's kernels crash or crawl; one
//! TCG thread, since multi-threaded TCG crashed a guest in `text_poke`. Nothing timed in a guest
//! means anything: the matrix checks behaviour only.
//!
//! An arm64 kernel boots under `qemu-system-aarch64 -M virt` with the aarch64 enipin, and its
//! userland is Debian's arm64 packages unpacked by `cargo xtask setup` into
//! `.tools/sysroot-arm64/` (the host's ldd cannot read foreign binaries: `readelf` names each
//! one's interpreter and NEEDED libraries, found in that tree).

use std::{
    fs,
    io::Write as _,
    os::unix::{fs::symlink, process::CommandExt as _},
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
/// Reasons quoted per failed step in the summary.
const REASONS: usize = 4;

/// One guest at a time: each keeps a CPU busy (one TCG thread) and CI has two; the lab's pings
/// wait one second for a reply, which guests starving each other can miss.
static ONE_GUEST: Mutex<()> = Mutex::new(());

/// The guest's machine, from its kernel's package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The static enipin's target.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// QEMU and its machine. `pauth-impdef`: TCG computes arm64's pointer authentication with
    /// QEMU's own cheap hash instead of QARMA, which dominates a `-cpu max` guest's time
    /// otherwise (QEMU's documentation); the guest's kernel and programs cannot tell.
    fn qemu(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Arch::X86_64 => ("qemu-system-x86_64", &["-cpu", "max"]),
            Arch::Aarch64 => (
                "qemu-system-aarch64",
                &["-M", "virt", "-cpu", "max,pauth-impdef=on"],
            ),
        }
    }

    /// The serial console's device: the PC's UART, or the virt machine's PL011.
    fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }
}

/// A kernel fetched by `cargo xtask setup`.
#[derive(Debug)]
pub struct Kernel {
    /// The matrix's line: `5.10`, `6.1`, `6.12`, `newest`, `6.1-arm64`.
    pub line: String,
    pub arch: Arch,
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
        // "linux-image-6.1.0-57-cloud-arm64 6.1.192-3 bookworm-security"
        let arch = match package.split_whitespace().next() {
            Some(p) if p.ends_with("-arm64") => Arch::Aarch64,
            _ => Arch::X86_64,
        };
        Self {
            line: line.to_string(),
            arch,
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
    /// What the step printed about a failure (see `reason`), in order, without repeats.
    pub reasons: Vec<String>,
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
                Some(s) if s.passed => format!("  {name:14} PASS {}", s.detail),
                Some(s) => {
                    let mut text = format!("  {name:14} FAIL {}", s.detail);
                    // The first few say what went wrong; the console has the rest.
                    for r in s.reasons.iter().take(REASONS) {
                        text.push_str(&format!("\n      {r}"));
                    }
                    text
                }
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

/// `target/<arch>-unknown-linux-musl/release/enipin`: the binary `cargo xtask test` builds (the
/// release tarball's) and the only one that runs without the host's libc.
pub fn static_enipin(arch: Arch) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let triple = arch.rust_target();
    let bin = target.join(triple).join("release/enipin");
    assert!(
        bin.is_file(),
        "{} is missing: `cargo xtask dist` builds it (`cargo xtask test` runs dist first)",
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
    let mut reasons: Vec<String> = Vec::new();
    for line in console.lines() {
        if let Some(at) = line.find(MARKER) {
            exit = line[at + MARKER.len()..].trim().parse().ok();
        }
        if let Some(reason) = reason(line)
            && !reasons.contains(&reason)
        {
            reasons.push(reason);
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
                reasons: std::mem::take(&mut reasons),
            });
        }
    }
    (steps, exit)
}

/// A line that says why a step failed: the script's `why: ` lines, enipin's errors (`enipin: `)
/// and the lab's failed rows (`[3] enipin attach: FAIL ...`), shortened to 300 characters.
fn reason(line: &str) -> Option<String> {
    let line = line.trim();
    let lab_row = line.starts_with('[') && line.contains(']') && line.contains(": FAIL ");
    if !(line.starts_with("why: ") || line.starts_with("enipin: ") || lab_row) {
        return None;
    }
    Some(match line.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_string(),
    })
}

/// A running QEMU, killed and reaped when dropped (a failing test leaves no guest behind).
struct Guest(Child);

impl Guest {
    fn boot(kernel: &Kernel, initrd: &Path, console: &Path, log: &Path) -> Self {
        let log = fs::File::create(log).expect("creating qemu's log");
        let (qemu, machine) = kernel.arch.qemu();
        let mut cmd = Command::new(qemu);
        cmd.args(machine)
            .args(["-accel", "tcg,thread=single", "-smp", "2"])
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
            // random.trust_cpu: 5.10 would otherwise wait for entropy (-cpu max has RDRAND, and
            // arm64's RNDR).
            .arg("-append")
            .arg(format!(
                "console={} panic=-1 loglevel=5 random.trust_cpu=on",
                kernel.arch.console()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("qemu's log"))
            .stderr(log);
        // Drop kills QEMU when the test ends or panics; this, when the test process itself is
        // killed (Ctrl-C, a CI timeout), which runs no Drop.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {qemu}: {e} (`cargo xtask setup` installs it)"));
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
    stage_tree(&stage, &Userland::of(kernel.arch));
    let mut file = fs::File::create(out).expect("creating the initramfs");
    cpio(&stage, &walk(&stage, Path::new("")), &mut file);
    cpio(&kernel.dir, &walk(&kernel.dir, Path::new("lib")), &mut file);
    file.flush().expect("writing the initramfs");
}

/// The guest's root, less the modules.
fn stage_tree(stage: &Path, userland: &Userland) {
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "tmp", "root",
        "guest",
    ] {
        fs::create_dir_all(stage.join(dir)).expect("staging the guest's tree");
    }
    let guest_dir = root().join("tests/guest");
    copy(&guest_dir.join("init"), &stage.join("init"));
    copy(&guest_dir.join("steps.sh"), &stage.join("guest/steps.sh"));
    copy(
        &static_enipin(userland.arch()),
        &stage.join("usr/sbin/enipin"),
    );
    fs::write(stage.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("etc/passwd");
    fs::write(stage.join("etc/group"), "root:x:0:\n").expect("etc/group");
    for tool in HOST_TOOLS {
        userland.copy_with_libs(tool, &stage.join("usr/sbin").join(tool), stage);
    }
    for name in KMOD_NAMES {
        symlink("/usr/sbin/kmod", stage.join("sbin").join(name)).expect("linking kmod");
    }
    userland.copy_with_libs("dash", &stage.join("bin/dash"), stage);
    symlink("dash", stage.join("bin/sh")).expect("linking /bin/sh");
    busybox(stage, userland);
}

/// busybox, and a link in /bin for each of its applets that the tree does not already have from
/// the host (so `ip` is always iproute2's, `sh` dash, `modprobe` kmod's). The applets are the
/// host's busybox's: a foreign one cannot run here, and both are bookworm's 1.35 build.
fn busybox(stage: &Path, userland: &Userland) {
    userland.copy_with_libs("busybox", &stage.join("bin/busybox"), stage);
    let list = crate::run::ok(Command::new(host_command("busybox")).arg("--list"));
    for applet in list.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let taken = HOST_TOOLS.contains(&applet)
            || KMOD_NAMES.contains(&applet)
            || stage.join("bin").join(applet).exists();
        if !taken {
            symlink("busybox", stage.join("bin").join(applet)).expect("linking an applet");
        }
    }
}

/// Where the guest's commands and their shared libraries come from.
enum Userland {
    /// The host's own (an x86_64 guest on the x86_64 test machine); ldd lists the libraries.
    Host,
    /// Debian's arm64 packages unpacked by `cargo xtask setup` (xtask/src/sysroot.rs).
    Sysroot(PathBuf),
}

/// Where a sysroot's loader finds libraries (Debian's multiarch directories first).
const LIBRARY_DIRS: &[&str] = &[
    "lib/aarch64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "lib",
    "usr/lib",
];

impl Userland {
    fn of(arch: Arch) -> Self {
        match arch {
            Arch::X86_64 => Userland::Host,
            Arch::Aarch64 => Userland::Sysroot(root().join(".tools/sysroot-arm64")),
        }
    }

    fn arch(&self) -> Arch {
        match self {
            Userland::Host => Arch::X86_64,
            Userland::Sysroot(_) => Arch::Aarch64,
        }
    }

    /// The command `name`, resolved.
    fn command(&self, name: &str) -> PathBuf {
        let Userland::Sysroot(sysroot) = self else {
            return host_command(name);
        };
        ["usr/sbin", "usr/bin", "sbin", "bin"]
            .iter()
            .map(|d| in_sysroot(sysroot, &Path::new(d).join(name)))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "`{name}` is not in {}: `cargo xtask setup` unpacks it (remove the directory \
                     to fetch it again)",
                    sysroot.display()
                )
            })
    }

    /// Copies the command `name` to `to`, and each shared library it needs to the same path in
    /// `stage` as on the host or in the sysroot.
    fn copy_with_libs(&self, name: &str, to: &Path, stage: &Path) {
        let bin = self.command(name);
        copy(&bin, to);
        let libs = match self {
            Userland::Host => ldd(&bin),
            Userland::Sysroot(sysroot) => needed_closure(sysroot, &bin),
        };
        for (source, in_guest) in libs {
            let dest = stage.join(in_guest.strip_prefix("/").unwrap_or(&in_guest));
            if !dest.exists() {
                fs::create_dir_all(dest.parent().expect("a library's directory"))
                    .expect("staging a library directory");
                copy(&source, &dest);
            }
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

/// The shared libraries ldd lists for `bin`: (file, its path in the guest), the same.
fn ldd(bin: &Path) -> Vec<(PathBuf, PathBuf)> {
    let out = crate::run::out(Command::new("ldd").arg(bin));
    // A static binary: "not a dynamic executable", exit status 1.
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)"
        .filter_map(|line| line.split_whitespace().find(|w| w.starts_with('/')))
        .map(|lib| (PathBuf::from(lib), PathBuf::from(lib)))
        .collect()
}

/// `bin`'s program interpreter and the libraries it needs, transitively, found in `sysroot`:
/// (file in the sysroot, its path in the guest).
fn needed_closure(sysroot: &Path, bin: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut todo = vec![bin.to_path_buf()];
    while let Some(file) = todo.pop() {
        let (interpreter, needed) = dynamic_section(&file);
        let mut paths: Vec<PathBuf> = interpreter.into_iter().map(PathBuf::from).collect();
        for soname in needed {
            let dir = LIBRARY_DIRS
                .iter()
                .find(|d| sysroot.join(d).join(&soname).exists())
                .unwrap_or_else(|| {
                    panic!(
                        "{} needs {soname}, which is in no package of {}: add its package to \
                         xtask/src/sysroot.rs",
                        file.display(),
                        sysroot.display()
                    )
                });
            paths.push(Path::new("/").join(dir).join(&soname));
        }
        for in_guest in paths {
            if found.iter().any(|(_, g)| *g == in_guest) {
                continue;
            }
            let source = in_sysroot(sysroot, &in_guest);
            todo.push(source.clone());
            found.push((source, in_guest));
        }
    }
    found
}

/// `path` (relative, or absolute in the guest) in `sysroot`, its symbolic links followed inside
/// the sysroot: bookworm's `/sbin/ip -> /bin/ip` must not lead to the host's own `/bin/ip`.
fn in_sysroot(sysroot: &Path, path: &Path) -> PathBuf {
    let mut rel = path.strip_prefix("/").unwrap_or(path).to_path_buf();
    // A chain longer than a few links is a loop (the packages have one or two).
    for _ in 0..8 {
        let Ok(target) = fs::read_link(sysroot.join(&rel)) else {
            break;
        };
        rel = match target.strip_prefix("/") {
            Ok(absolute) => absolute.to_path_buf(),
            Err(_) => rel.parent().unwrap_or(Path::new("")).join(target),
        };
    }
    sysroot.join(rel)
}

/// readelf's program interpreter and NEEDED entries of `elf` (none for a static binary).
fn dynamic_section(elf: &Path) -> (Option<String>, Vec<String>) {
    let text = crate::run::ok(Command::new("readelf").args(["-ldW"]).arg(elf));
    // "[Requesting program interpreter: /lib/ld-linux-aarch64.so.1]",
    // " 0x0000000000000001 (NEEDED)  Shared library: [libc.so.6]"
    let bracketed = |line: &str, after: &str| {
        line.split_once(after)
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(value, _)| value.trim().to_string())
    };
    let interpreter = text
        .lines()
        .find_map(|l| bracketed(l, "program interpreter:"));
    let needed = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| bracketed(l, "Shared library: ["))
        .collect();
    (interpreter, needed)
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
        let console = "guest: 6.1.0\n=== lab\nenipin: attach failed: EINVAL\n\
                       [3] enipin attach: FAIL exit status: 1\n[3] peer -> x: ok replies\n\
                       enipin: attach failed: EINVAL\nwhy: the last line is not PASS\n\
                       STEP lab FAIL (12.0 s)\n\
                       [ 3.1] bridge: hello STEP watch PASS (1.0 s)\nENIPIN-GUEST-EXIT 1\n";
        let (steps, exit) = parse(console);
        assert_eq!(exit, Some(1));
        let got: Vec<(&str, bool)> = steps.iter().map(|s| (s.name.as_str(), s.passed)).collect();
        assert_eq!(got, [("lab", false), ("watch", true)]);
        assert_eq!(steps[0].detail, "(12.0 s)");
        assert_eq!(
            steps[0].reasons,
            [
                "enipin: attach failed: EINVAL",
                "[3] enipin attach: FAIL exit status: 1",
                "why: the last line is not PASS"
            ]
        );
        assert!(steps[1].reasons.is_empty());
    }
}
