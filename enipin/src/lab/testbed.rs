//! Throwaway network namespaces for the lab, the tests and the benchmark. Every object is named
//! uniquely and removed on drop (also when a test panics), so runs never collide or leave residue.
//! Nothing here ever touches the caller's own namespace: veths are created directly inside their
//! namespaces with `ip -n`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, bail};

use crate::settings::config::Paths;

/// A unique, short name: `<prefix><pid-hex><counter>`. Interface names must fit in 15 bytes, so
/// namespaces (not interfaces) carry the unique part.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out)
}

/// `sh -c SCRIPT`, failing with its output when it fails.
pub fn sh(script: &str) -> Result<String> {
    let out = run(Command::new("sh").args(["-c", script]))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace that is deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
    keep: bool,
}

impl Netns {
    /// Creates `/run/netns/<unique(prefix)>` with loopback up.
    pub fn new(prefix: &str) -> Result<Self> {
        let name = unique(prefix);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name, keep: false };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name under /run/netns (for `ip netns exec`, `--netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leave the namespace in place when dropped (`enipin lab --keep`).
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let out = run(Command::new("ip").arg("-n").arg(&self.name).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command that runs inside the namespace (`ip netns exec NS PROGRAM`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `sh -c SCRIPT` inside the namespace, failing when the script fails.
    pub fn sh(&self, script: &str) -> Result<String> {
        let out = run(self.command("sh").args(["-c", script]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes a sysctl inside the namespace (`net.ipv4.ip_forward`, ...).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.sh(&format!("sysctl -qw {key}={value}")).map(|_| ())
    }

    /// `ping -n -q -c COUNT -W 1 -i 0.2 ARGS...` inside the namespace, not yet run: at most
    /// `count` probes 0.2 s apart, each waiting one second for its reply. The one place the
    /// lab, the tests and the benchmark spell ping's options.
    pub fn ping_command(&self, args: &[&str], count: u32) -> Command {
        let mut cmd = self.command("ping");
        cmd.args(["-n", "-q", "-c", &count.to_string(), "-W", "1", "-i", "0.2"])
            .args(args);
        cmd
    }

    #[cfg(feature = "testing")]
    /// Pings `addr` from inside the namespace: `count` probes, each waiting at most one second.
    /// Returns whether any reply came back.
    pub fn ping(&self, addr: &str, count: u32) -> Result<bool> {
        let out = self
            .ping_command(&[addr], count)
            .output()
            .context("spawning ping (cargo xtask setup installs iputils-ping)")?;
        Ok(out.status.success())
    }

    /// `ping ARGS` (e.g. `["-6", "-I", src, dst]`) from inside the namespace, `count` probes:
    /// (sent, received), from ping's summary line.
    #[cfg(feature = "testing")]
    pub fn pings(&self, args: &[&str], count: u32) -> Result<(u32, u32)> {
        let out = self
            .ping_command(args, count)
            .output()
            .context("spawning ping (cargo xtask setup installs iputils-ping)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        ping_summary(&text).with_context(|| {
            format!(
                "no ping summary: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// A veth pair with both ends inside this namespace, both up (the program's "ENIs" when it
    /// is test-run, not attached).
    #[cfg(feature = "testing")]
    pub fn veth_pair(&self, a_if: &str, b_if: &str) -> Result<()> {
        self.ip(&["link", "add", a_if, "type", "veth", "peer", "name", b_if])?;
        self.ip(&["link", "set", a_if, "up"])?;
        self.ip(&["link", "set", b_if, "up"])?;
        Ok(())
    }

    /// The interface's ifindex inside this namespace.
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        let s = self.sh(&format!("cat /sys/class/net/{ifname}/ifindex"))?;
        s.trim()
            .parse()
            .with_context(|| format!("ifindex of {ifname}: {s:?}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Deleting the namespace destroys its veth ends (and their peers in other namespaces).
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// A "container" (a Docker network without its bridge): a new namespace behind a veth `vethctr0`
/// of `host`, named as container runtimes name their host-side veths (`veth*`: never an ENI, so
/// enipin's selection leaves it out, as it does Docker's), `gw` on `vethctr0` and `addr` on the
/// container's `eth0`, both `/len` (IPv4 or IPv6, no DAD), and the container's default route via
/// `gw`. Forwarding on `host` is the caller's.
#[cfg(feature = "testing")]
pub fn container(host: &Netns, prefix: &str, gw: &str, addr: &str, len: u8) -> Result<Netns> {
    let ctr = Netns::new(prefix)?;
    veth(
        host,
        "vethctr0",
        "02:e0:00:00:01:01",
        &ctr,
        "eth0",
        "02:e0:00:00:01:02",
    )?;
    let family = if addr.contains(':') { "-6" } else { "-4" };
    host.ip(&[
        family,
        "addr",
        "add",
        &format!("{gw}/{len}"),
        "dev",
        "vethctr0",
        "nodad",
    ])?;
    ctr.ip(&[
        family,
        "addr",
        "add",
        &format!("{addr}/{len}"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    ctr.ip(&[family, "route", "add", "default", "via", gw])?;
    Ok(ctr)
}

/// Creates a veth pair with one end in each namespace, both up, with the given MACs.
pub fn veth(a: &Netns, a_if: &str, a_mac: &str, b: &Netns, b_if: &str, b_mac: &str) -> Result<()> {
    // Created inside `a` so the caller's namespace never sees either end.
    a.ip(&[
        "link",
        "add",
        a_if,
        "address",
        a_mac,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "address",
        b_mac,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// A private bpffs instance for one run's pins: every bpffs mount is its own instance, so a test
/// never sees (or leaves) anything in the machine's /sys/fs/bpf. Unmounted and removed when
/// dropped; whatever is still pinned there goes with it.
#[derive(Debug)]
pub struct PinDir {
    mount: PathBuf,
    path: PathBuf,
    keep: bool,
}

impl PinDir {
    /// Mounts bpffs at `/run/enipin-test/<unique(prefix)>`; `path()` is a directory below it that
    /// does not exist yet (enipin creates its pin directory itself).
    pub fn new(prefix: &str) -> Result<Self> {
        let mount = Path::new("/run/enipin-test").join(unique(prefix));
        std::fs::create_dir_all(&mount).with_context(|| format!("creating {}", mount.display()))?;
        let target = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes())?;
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            let _ = std::fs::remove_dir(&mount);
            bail!("mounting bpffs at {}: {err} (needs root)", mount.display());
        }
        let path = mount.join("enipin");
        Ok(Self {
            mount,
            path,
            keep: false,
        })
    }

    /// The pin directory inside the mount: what `--pin-dir` gets.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bpffs mount point (the parent of `path()`).
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
        if let Ok(target) = std::ffi::CString::new(self.mount.as_os_str().as_encoded_bytes()) {
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.mount);
    }
}

/// A private directory (for the state file), removed when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// A new empty directory under the system's temporary directory.
    pub fn new(prefix: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep: false })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One run's own pin directory (a private bpffs) and state directory: what enipin is told with
/// `--pin-dir` and `--state-dir`, so no run shares the machine's /sys/fs/bpf/enipin and
/// /run/enipin, or another run's state file and lock. Both removed when dropped.
#[derive(Debug)]
pub struct Dirs {
    /// The pin directory, on its own bpffs.
    pub pins: PinDir,
    pub(crate) state: TempDir,
}

impl Dirs {
    /// Pins under `/run/enipin-test/<unique(prefix)>`, state in `<tmp>/<unique(prefix)>state-...`.
    pub fn new(prefix: &str) -> Result<Self> {
        Ok(Self {
            pins: PinDir::new(prefix)?,
            state: TempDir::new(&format!("{prefix}state-"))?,
        })
    }

    /// Both, as the library takes them.
    pub fn paths(&self) -> Paths {
        Paths {
            pin_dir: self.pins.path().to_owned(),
            state_dir: self.state.path().to_owned(),
        }
    }

    /// Leave both in place when dropped (`enipin lab --keep`).
    pub(crate) fn keep(&mut self) {
        self.pins.keep();
        self.state.keep();
    }
}

/// `BIN --netns NS --pin-dir P --state-dir S ARGS...`, not yet run: the enipin binary inside a
/// namespace of the harness, on directories of its own. The one place the lab, the tests and the
/// benchmark spell enipin's command line.
pub fn enipin_command(bin: &Path, ns: &str, paths: &Paths, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--netns").arg(ns);
    cmd.arg("--pin-dir").arg(&paths.pin_dir);
    cmd.arg("--state-dir").arg(&paths.state_dir);
    cmd.args(args);
    cmd
}

/// (sent, received) from ping's summary line in its output (`200 packets transmitted, 198
/// received, ...`); the one reading of it for the lab, the tests and the benchmark.
#[cfg(feature = "testing")]
pub fn ping_summary(stdout: &str) -> Option<(u32, u32)> {
    let line = stdout.lines().find(|l| l.contains("transmitted"))?;
    let mut nums = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok());
    Some((nums.next()?, nums.next()?))
}
