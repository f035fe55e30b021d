//! Entering a named network namespace (`enipin --netns NAME`), the way `ip netns exec` would,
//! but without remounting /sys: bpffs under /sys/fs/bpf stays visible for pins.

use std::{fs::File, os::fd::AsRawFd as _};

use anyhow::{Context as _, Result, bail};

/// Moves the calling thread into `/run/netns/NAME`. Call before any thread is started (before the
/// tokio runtime): threads inherit the namespace of the thread that creates them.
pub fn enter(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).with_context(|| {
        format!("opening network namespace {path} (does `ip netns list` show it?)")
    })?;
    // SAFETY: plain syscall on a file descriptor we own.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!(
            "setns({path}): {} (needs CAP_SYS_ADMIN)",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// An identifier of the calling thread's network namespace (its inode), to key per-namespace
/// state. The thread's, not the process's: setns moves only the calling thread (the tests enter
/// namespaces on threads of their own).
pub fn current_id() -> Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata("/proc/thread-self/ns/net")
        .context("reading /proc/thread-self/ns/net")?
        .ino())
}
