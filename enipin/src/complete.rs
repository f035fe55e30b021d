//! Shell completion that knows the machine: interface names for `--interfaces`, namespace names
//! for `--netns`. Static scripts (clap_complete's `generate`) can only offer what the command
//! line's definition holds, so these run enipin itself at Tab: the shell's registration script
//! (`COMPLETE=bash enipin`, what `enipin completions bash` prints and the packages install) calls
//! `COMPLETE=bash enipin -- WORDS`, and clap_complete's engine answers with the values these
//! functions list. The engine is behind clap_complete's "unstable-dynamic" feature: Cargo.lock
//! pins the version the registration scripts and the engine come from, so they always agree.

use std::ffi::OsStr;

use clap_complete::engine::CompletionCandidate;

/// `--interfaces`: the current namespace's interfaces whose name starts with the word. The
/// engine splits a comma-separated word (the flag's value delimiter) and passes only the part
/// after the last comma, and puts the parts before back in front (`eth0,e` offers `eth0,eth1`).
pub(crate) fn interfaces(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    (interface_names().into_iter())
        .filter(|name| name.starts_with(current.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

/// The interfaces of the namespace enipin runs in, by if_nameindex(3) (netlink): /sys/class/net
/// shows the namespace sysfs was mounted in, which `ip netns exec` remounts but `nsenter` does
/// not.
fn interface_names() -> Vec<String> {
    // SAFETY: if_nameindex returns a NULL-terminated array (or NULL on error) that we read and
    // free once.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Vec::new();
        }
        let mut names = Vec::new();
        let mut at = list;
        while (*at).if_index != 0 && !(*at).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*at).if_name);
            names.push(name.to_string_lossy().into_owned());
            at = at.add(1);
        }
        libc::if_freenameindex(list);
        names.sort();
        names
    }
}

/// Where `ip netns add` names namespaces, and `--netns NAME` looks for them.
const NETNS_DIR: &str = "/run/netns";

/// `--netns`: the names under /run/netns starting with the word (only read, never created).
pub(crate) fn netns(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = (dir.flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(current.as_ref()))
        .collect();
    names.sort();
    names.into_iter().map(CompletionCandidate::new).collect()
}

/// `enipin completions SHELL`: the registration script `COMPLETE=SHELL enipin` prints, calling
/// `enipin` by name (the packages put it on root's PATH, in /usr/sbin): a path baked in at
/// build time would be the build machine's.
pub(crate) fn registration(shell: clap_complete::Shell) -> std::io::Result<()> {
    let name = shell.to_string();
    let shells = clap_complete::env::Shells::builtins();
    let completer = shells
        .completer(&name)
        .ok_or_else(|| std::io::Error::other(format!("no completion for {name}")))?;
    let mut out = std::io::stdout().lock();
    completer.write_registration(VAR, "enipin", "enipin", "enipin", &mut out)
}

/// clap_complete's default variable: `COMPLETE=bash enipin` prints bash's registration.
pub(crate) const VAR: &str = "COMPLETE";
