//! A real systemd as PID 1: systemd-nspawn boots the machine's own /usr (read-only, with a .deb's
//! files layered over it) inside a namespace of the lab, with a private bpffs at /sys/fs/bpf and a
//! /run of its own. For the tests that run the package's unit (`tests/systemd.rs`) and a real
//! systemd-networkd beside it (`tests/networkd.rs`).
//!
//! The booted systemd never sees the machine's root network namespace: nspawn joins the lab's
//! namespace before the container's PID 1 exists, and [`Machine::boot`] checks PID 1's namespace
//! before it runs anything in the container.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    TempDir,
    run::{ok, out},
    unique,
};

/// The cgroup hierarchies nspawn puts the container in: on a hybrid layout (systemd's named v1
/// hierarchy and the unified one beside the v1 controllers) both, on a pure v2 layout the one.
fn cgroup_roots() -> Vec<PathBuf> {
    let hybrid: Vec<PathBuf> = ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.join("cgroup.procs").is_file())
        .collect();
    if !hybrid.is_empty() {
        return hybrid;
    }
    let unified = PathBuf::from("/sys/fs/cgroup");
    assert!(
        unified.join("cgroup.procs").is_file(),
        "no cgroup hierarchy for systemd at /sys/fs/cgroup"
    );
    vec![unified]
}

/// Removes `dir` and the cgroups nspawn and the booted systemd made below it, deepest first (a
/// cgroup is removed with rmdir once its processes are gone).
fn remove_cgroup(dir: &Path) {
    let mut dirs = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
            dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        i += 1;
    }
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

/// The container's root: empty but for the usr-merged links, the package's /etc/enipin, an
/// os-release (nspawn checks for one before /usr is mounted) and a machine id. Without the id
/// systemd takes the boot for a first boot and applies the presets: Debian's enable every unit in
/// /usr, which started six failing services in a first try and would enable enipin before the
/// test does.
fn make_root(root: &Path, usr: &Usr) {
    for dir in ["usr", "etc"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for link in ["bin", "sbin", "lib", "lib64"] {
        std::os::unix::fs::symlink(format!("usr/{link}"), root.join(link)).unwrap();
    }
    std::fs::copy("/usr/lib/os-release", root.join("etc/os-release")).unwrap();
    match usr {
        Usr::Package(pkg) => {
            std::fs::create_dir_all(root.join("etc/enipin")).unwrap();
            std::fs::copy(
                pkg.join("etc/enipin/enipin.toml"),
                root.join("etc/enipin/enipin.toml"),
            )
            .unwrap();
        }
        // An empty dpkg database: the machine's own packages are not the container's.
        Usr::Writable(_) => {
            for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"] {
                std::fs::create_dir_all(root.join(dir)).unwrap();
            }
            for file in ["status", "available"] {
                std::fs::write(root.join("var/lib/dpkg").join(file), "").unwrap();
            }
        }
    }
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
    std::fs::write(
        root.join("etc/machine-id"),
        format!("{}\n", uuid.trim().replace('-', "")),
    )
    .unwrap();
}

/// `sh -c` with `CGROUP... -- PROGRAM ARGS...`: moves itself into each cgroup, then execs.
const JOIN_CGROUPS_THEN_EXEC: &str = r#"while [ "$1" != -- ]; do
    echo $$ > "$1/cgroup.procs" || exit 1; shift
done
shift; exec "$@""#;

/// The container's /usr.
enum Usr {
    /// The machine's, read-only, below the package unpacked here: installed without dpkg.
    Package(PathBuf),
    /// The machine's, writable through an overlay whose upper layer is here: for dpkg itself.
    Writable(PathBuf),
}

/// systemd-nspawn booting `root` (with `usr` as its /usr) in `/run/netns/NS`, with `bpffs` at
/// /sys/fs/bpf, started from `cgroups`: nspawn runs the container in the cgroup it starts in, so
/// everything nspawn and the container's systemd create goes below the test's own.
fn nspawn(
    cgroups: &[PathBuf],
    name: &str,
    ns: &str,
    root: &Path,
    usr: &Usr,
    bpffs: &Path,
) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(JOIN_CGROUPS_THEN_EXEC)
        .arg("sh")
        .args(cgroups)
        .arg("--")
        .arg("systemd-nspawn")
        .args(["--quiet", "--register=no", "--keep-unit", "--console=pipe"])
        .arg(format!("--directory={}", root.display()))
        .arg(format!("--machine={name}"))
        .arg(format!("--network-namespace-path=/run/netns/{ns}"))
        .arg(match usr {
            // The machine's /usr below the package's: /usr/sbin/enipin and the unit where the
            // .deb puts them, nothing of the machine's /usr writable.
            Usr::Package(pkg) => format!("--overlay-ro=/usr:{}:/usr", pkg.join("usr").display()),
            // The rightmost source is the upper, writable layer: what dpkg writes lands there.
            Usr::Writable(upper) => format!("--overlay=/usr:{}:/usr", upper.display()),
        })
        .arg(format!("--bind={}:/sys/fs/bpf", bpffs.display()))
        // What the container lacks that a machine has. nspawn grants CAP_NET_ADMIN only with a
        // namespace it made itself (--private-network), and its seccomp filter answers bpf()
        // with EPERM: without either, the watcher's first reconcile fails at the TCX probe
        // (`bpf_prog_query` failed: Operation not permitted) and READY=1 never comes.
        .args(["--capability=CAP_NET_ADMIN", "--system-call-filter=bpf"])
        // nspawn mounts /proc/sys read-only, /proc/sys/net too in a namespace it did not make;
        // "network" leaves /proc/sys/net writable, as on a machine (the interfaces' rp_filter
        // and arp_* are enipin's to set).
        .env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "network")
        .args(["--boot", "systemd.unit=multi-user.target"]);
    cmd
}

/// systemd-nspawn started on `dir/root` in its cgroups below the test's, its console appended to
/// `log`: (nspawn, machine name, cgroups).
fn spawn(
    dir: &Path,
    usr: &Usr,
    ns: &str,
    bpffs: &Path,
    log: &Path,
) -> (Child, String, Vec<PathBuf>) {
    let name = unique("enipin-sd-");
    let cgroups: Vec<PathBuf> = cgroup_roots().iter().map(|r| r.join(&name)).collect();
    for cg in &cgroups {
        std::fs::create_dir(cg).unwrap_or_else(|e| panic!("creating {}: {e}", cg.display()));
    }
    let console = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let nspawn = nspawn(&cgroups, &name, ns, &dir.join("root"), usr, bpffs)
        .stdin(Stdio::null())
        .stdout(console.try_clone().unwrap())
        .stderr(console)
        .spawn()
        .expect("spawning systemd-nspawn (`cargo xtask setup` installs systemd-container)");
    (nspawn, name, cgroups)
}

/// A systemd booted by systemd-nspawn in a namespace of the lab. Killed if it is still running,
/// and its cgroups, nspawn's run directory and its root removed, when dropped.
pub struct Machine {
    nspawn: Child,
    name: String,
    leader: u32,
    cgroups: Vec<PathBuf>,
    log: PathBuf,
    usr: Usr,
    // Removed after drop() has stopped the container.
    dir: TempDir,
}

impl Machine {
    /// Boots the package unpacked from `deb` in `/run/netns/NS` with `bpffs` at /sys/fs/bpf, and
    /// waits (at most 60 s) for the boot to finish.
    pub fn boot(ns: &str, deb: &Path, bpffs: &Path) -> Self {
        Self::boot_with(ns, deb, bpffs, |_| {})
    }

    /// [`Machine::boot`], with `prepare` writing into the container's root (its /etc) first.
    pub fn boot_with(ns: &str, deb: &Path, bpffs: &Path, prepare: impl FnOnce(&Path)) -> Self {
        Self::start(ns, bpffs, prepare, |dir| {
            let pkg = dir.join("pkg");
            ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&pkg));
            Usr::Package(pkg)
        })
    }

    /// Boots a machine without enipin whose /usr dpkg can write, `deb` at /var/tmp/FILE.
    pub fn boot_for_dpkg(ns: &str, deb: &Path, bpffs: &Path) -> Self {
        let m = Self::start(
            ns,
            bpffs,
            |_| {},
            |dir| {
                let upper = dir.join("usr-upper");
                std::fs::create_dir(&upper).unwrap();
                Usr::Writable(upper)
            },
        );
        // This machine is a container image whose policy-rc.d forbids every service action
        // (exit 101: deb-systemd-invoke would neither restart nor stop enipin); a host has none.
        // Removed in the overlay's upper layer only.
        m.ok(&["rm", "-f", "/usr/sbin/policy-rc.d"]);
        let tmp = m.root().join("var/tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::copy(deb, tmp.join(deb.file_name().unwrap())).unwrap();
        m
    }

    fn start(
        ns: &str,
        bpffs: &Path,
        prepare: impl FnOnce(&Path),
        usr: impl FnOnce(&Path) -> Usr,
    ) -> Self {
        let dir = TempDir::new("enipin-nspawn-").unwrap();
        let usr = usr(dir.path());
        let root = dir.path().join("root");
        make_root(&root, &usr);
        prepare(&root);
        let log = dir.path().join("console.log");
        let (nspawn, name, cgroups) = spawn(dir.path(), &usr, ns, bpffs, &log);
        let mut m = Self {
            nspawn,
            name,
            leader: 0,
            cgroups,
            log,
            usr,
            dir,
        };
        m.started(ns);
        m
    }

    /// Powers the machine off and boots its root again in `/run/netns/NS` with `bpffs`: what a
    /// reboot keeps (the root file system: /etc, the units enabled) and what it does not (the
    /// kernel's state: the caller gives a fresh namespace and bpffs).
    pub fn reboot(&mut self, ns: &str, bpffs: &Path) {
        self.power_off();
        self.cleanup();
        let (nspawn, name, cgroups) = spawn(self.dir.path(), &self.usr, ns, bpffs, &self.log);
        (self.nspawn, self.name, self.cgroups) = (nspawn, name, cgroups);
        self.started(ns);
    }

    /// Waits for the container's PID 1 and its boot, once the safety check has passed.
    fn started(&mut self, ns: &str) {
        self.leader = self.find_leader();
        self.assert_in_namespace(ns);
        self.wait_booted();
    }

    /// The container's PID 1, for nsenter.
    pub fn leader(&self) -> u32 {
        self.leader
    }

    /// The container's root directory, as the test sees it (its /etc is a directory there; its
    /// /run is a tmpfs of the container's, reached through [`Machine::command`]).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The container's PID 1 (a systemd), nspawn's child once the container runs.
    fn find_leader(&mut self) -> u32 {
        let pid = self.nspawn.id();
        let t = Instant::now();
        loop {
            if let Some(status) = self.nspawn.try_wait().unwrap() {
                panic!("systemd-nspawn exited ({status}):\n{}", self.console());
            }
            let children =
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
            let leader = children.split_whitespace().find(|c| {
                std::fs::read_to_string(format!("/proc/{c}/comm"))
                    .is_ok_and(|s| s.trim() == "systemd")
            });
            if let Some(leader) = leader {
                return leader.parse().unwrap();
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no systemd under systemd-nspawn within 20 s:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The safety check: the container's PID 1 runs in the lab's namespace, not in the test's (the
    /// machine's).
    fn assert_in_namespace(&self, ns: &str) {
        let ino = |p: &str| {
            std::fs::metadata(p)
                .unwrap_or_else(|e| panic!("{p}: {e}"))
                .ino()
        };
        let leader = ino(&format!("/proc/{}/ns/net", self.leader));
        assert_eq!(
            leader,
            ino(&format!("/run/netns/{ns}")),
            "PID 1 is not in the lab's namespace"
        );
        assert_ne!(
            leader,
            ino("/proc/self/ns/net"),
            "PID 1 shares the test's namespace"
        );
    }

    /// `ARGS` inside the container (its namespaces, its /run and /usr), as its root.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.leader))
            .arg("--all")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        cmd
    }

    pub fn ok(&self, args: &[&str]) -> String {
        ok(&mut self.command(args))
    }

    /// Stdout of `ARGS`, trimmed, whether or not it succeeded (`systemctl is-active` exits 3 for
    /// anything but active).
    pub fn read(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&out(&mut self.command(args)).stdout)
            .trim()
            .to_owned()
    }

    fn wait_booted(&mut self) {
        let t = Instant::now();
        loop {
            let state = self.read(&["systemctl", "is-system-running"]);
            // degraded: a unit of the machine's /usr failed; not the test's business.
            if state == "running" || state == "degraded" {
                return;
            }
            if let Some(status) = self.nspawn.try_wait().unwrap() {
                panic!(
                    "the container exited ({status}) while booting:\n{}",
                    self.console()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the container is {state:?} after 60 s:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `unit`'s state (`systemctl is-active`), once it is one of `want` (at most `deadline`);
    /// panics with the unit's journal otherwise.
    pub fn wait_unit(&self, unit: &str, want: &[&str], deadline: Duration) -> String {
        let t = Instant::now();
        loop {
            let state = self.read(&["systemctl", "is-active", unit]);
            if want.contains(&state.as_str()) {
                return state;
            }
            assert!(
                t.elapsed() < deadline && state != "failed",
                "{unit} is {state:?}, not {want:?}, after {:?}:\n{}",
                t.elapsed(),
                self.journal(unit)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A property of `unit` (`systemctl show -p NAME --value`).
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.read(&["systemctl", "show", "-p", name, "--value", unit])
    }

    /// `unit`'s journal: systemd's lines about the unit and the service's own.
    pub fn journal(&self, unit: &str) -> String {
        self.read(&["journalctl", "--no-pager", "-o", "cat", "-u", unit])
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `systemctl poweroff`, then nspawn's exit (at most 30 s), which must be a success.
    pub fn power_off(&mut self) {
        self.ok(&["systemctl", "poweroff", "--no-block"]);
        let t = Instant::now();
        loop {
            if let Some(status) = self.nspawn.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "systemd-nspawn: {status}:\n{}",
                    self.console()
                );
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the container did not power off within 30 s:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Machine {
    /// Stops the container if it still runs and removes what nspawn leaves behind.
    fn cleanup(&mut self) {
        if self.nspawn.try_wait().ok().flatten().is_none() {
            // Killing nspawn would orphan the container: SIGKILL to its PID 1 ends every process
            // of its PID namespace, then nspawn exits.
            if self.leader != 0 {
                // SAFETY: a signal to the container's PID 1, which this test started.
                unsafe { libc::kill(self.leader as i32, libc::SIGKILL) };
            }
            let t = Instant::now();
            while self.nspawn.try_wait().ok().flatten().is_none()
                && t.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        for cg in &self.cgroups {
            remove_cgroup(cg);
        }
        // What nspawn leaves when killed (its lock on the root directory, by device and inode)
        // or when /run is not a tmpfs (it removes nothing recursively on a disk file system:
        // the propagation directory).
        let run = Path::new("/run/systemd/nspawn");
        if let Ok(root) = std::fs::metadata(self.dir.path().join("root")) {
            let lock = format!("inode-{}:{}", root.dev(), root.ino());
            let _ = std::fs::remove_file(run.join("locks").join(lock));
        }
        for dir in [
            run.join("propagate").join(&self.name),
            run.join("propagate"),
            run.join("locks"),
            run.to_path_buf(),
        ] {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.cleanup();
    }
}
