//! `enipin detach`: remove exactly what enipin added and restore the sysctls it changed.

use anyhow::{Result, anyhow};

use crate::{
    apply,
    config::Paths,
    ebpf,
    plan::{self, Change, DiffFormat},
    snapshot::Snapshot,
    state, sysctl,
};

/// Removes enipin's rules, routes and datapath, restores the saved sysctls, removes the state.
pub async fn detach(paths: &Paths) -> Result<()> {
    let _lock = state::lock(paths)?;
    let st = state::load(paths)?;
    let s = Snapshot::take().await?;
    let changes = removals(&s, st.as_ref());
    let pinned = paths.pin_dir.exists();
    if changes.is_empty() && st.is_none() && !pinned {
        println!("nothing to do: enipin has nothing installed");
        return Ok(());
    }
    // Detach removes what it can and reports the rest: a half-removed state is worse to keep.
    let mut failed = Vec::new();
    let mut n_changes = changes.len();
    for (c, r) in apply::run_batched(&s.nl, &changes, false).await {
        println!("{}", c.render(DiffFormat::Text));
        if let Err(e) = r {
            failed.push(format!("{e:#}"));
        }
    }
    if pinned {
        match ebpf::detach(paths) {
            Ok(lines) => {
                n_changes += lines.len();
                lines.iter().for_each(|l| println!("{l}"));
            }
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    if !failed.is_empty() {
        return Err(anyhow!(
            "detach left some things in place (state file kept): {}",
            failed.join("; ")
        ));
    }
    state::remove(paths)?;
    println!("detached: {n_changes} change(s)");
    Ok(())
}

/// enipin's rules and routes, then the sysctls back to the values the state file saved.
fn removals(s: &Snapshot, st: Option<&state::State>) -> Vec<Change> {
    let (rules, routes) = plan::installed(&s.discovery);
    let mut changes: Vec<Change> = rules.into_iter().map(Change::DelRule).collect();
    changes.extend(routes.into_iter().map(Change::DelRoute));
    for (key, old) in st.iter().flat_map(|s| &s.sysctls) {
        // An interface that is gone took its sysctls with it.
        if let Ok(now) = sysctl::read(key)
            && &now != old
        {
            changes.push(Change::Sysctl {
                key: key.clone(),
                old: now,
                new: old.clone(),
            });
        }
    }
    changes
}
