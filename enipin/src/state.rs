//! What the kernel cannot tell back: the sysctl values enipin replaced, the options of the last
//! attach and the interfaces it managed. One JSON file under the state directory, replaced
//! atomically (write a temporary file, then rename) so a crash never leaves half a file.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, Paths},
    model::ManagedInterface,
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    /// The options of the last attach (`status` computes drift against them).
    pub config: Option<Config>,
    pub managed: Vec<ManagedInterface>,
    /// sysctl key → the value it had before enipin first changed it.
    pub sysctls: BTreeMap<String, String>,
}

/// The state file's path under `paths.state_dir`.
pub fn file(paths: &Paths) -> PathBuf {
    paths.state_dir.join("state.json")
}

/// The saved state, or `None` when there is none.
pub(crate) fn load(paths: &Paths) -> Result<Option<State>> {
    let f = file(paths);
    let text = match std::fs::read_to_string(&f) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading state file {}", f.display())),
    };
    let state = serde_json::from_str(&text).with_context(|| {
        format!(
            "state file {} is corrupt; nothing was changed. Inspect it, restore the sysctls it \
             lists by hand if needed, then remove it and run the command again",
            f.display()
        )
    })?;
    Ok(Some(state))
}

pub(crate) fn save(paths: &Paths, state: &State) -> Result<()> {
    let f = file(paths);
    std::fs::create_dir_all(&paths.state_dir)
        .with_context(|| format!("creating state directory {}", paths.state_dir.display()))?;
    let tmp = f.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state).context("serialising the state")?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &f)
        .with_context(|| format!("renaming {} to {}", tmp.display(), f.display()))
}

/// Puts back what `load` returned before a change (None: no file).
pub(crate) fn restore(paths: &Paths, previous: Option<&State>) -> Result<()> {
    match previous {
        Some(s) => save(paths, s),
        None => remove(paths),
    }
}

/// An exclusive lock on the state directory for the life of the returned file: one attach or
/// detach at a time per state directory.
pub(crate) fn lock(paths: &Paths) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    std::fs::create_dir_all(&paths.state_dir)
        .with_context(|| format!("creating state directory {}", paths.state_dir.display()))?;
    let path = paths.state_dir.join("lock");
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: plain syscall on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        anyhow::bail!(
            "another enipin attach/detach/watch holds {} ({}); wait for it to finish (stop a running \
             `enipin watch` first)",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(file)
}

pub(crate) fn remove(paths: &Paths) -> Result<()> {
    let f = file(paths);
    match std::fs::remove_file(&f) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", f.display())),
    }
}
