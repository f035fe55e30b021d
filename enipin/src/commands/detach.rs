//! `enipin detach`: remove exactly what enipin added and restore the sysctls it changed.

use anyhow::{Result, anyhow};
use enipin_ebpf::PROGRAM;

use crate::{
    datapath,
    engine::apply,
    engine::snapshot::Snapshot,
    engine::state,
    kernel::caps::{self, Cap},
    kernel::nft,
    model::sysctl::Knob,
    routing::address,
    routing::plan::{self, Change, DiffFormat},
    settings::config::Paths,
};

/// Removes enipin's rules, routes and datapath, restores the saved sysctls, removes the state.
pub async fn detach(paths: &Paths) -> Result<()> {
    // Both: the datapath's pins may be there whatever the last attach's layers were.
    caps::require("enipin detach", Cap::needed(true))?;
    let _lock = state::lock(paths)?;
    let st = state::load(paths)?;
    let mut s = Snapshot::take().await?;
    if let Some(st) = &st {
        st.mark_addresses(&mut s.discovery);
    }
    let mut changes = removals(&s, st.as_ref());
    // Detach removes what it can and reports the rest: a half-removed state is worse to keep.
    // A table it cannot read (nft uninstalled since the attach) is such a rest.
    let mut failed = Vec::new();
    match connmark_removal(st.as_ref()) {
        Ok(c) => changes.extend(c),
        Err(e) => failed.push(format!("{e:#}")),
    }
    let pins = pins_of(paths, st.as_ref());
    let pinned = pins.pin_dir.exists();
    let running = datapath::running_at_egress()?;
    if changes.is_empty() && st.is_none() && !pinned && running.is_empty() && failed.is_empty() {
        println!("nothing to do: enipin has nothing installed");
        return Ok(());
    }
    let mut n_changes = changes.len();
    for (c, r) in apply::run_batched(&s.nl, &changes, false).await {
        println!("{}", c.render(DiffFormat::Text));
        if let Err(e) = r {
            failed.push(format!("{e:#}"));
        }
    }
    if pinned {
        match datapath::detach(&pins) {
            Ok(lines) => {
                n_changes += lines.len();
                lines.iter().for_each(|l| println!("{l}"));
            }
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    failed.extend(left_running(&pins)?);
    if st.is_none() {
        say_sysctls_unknown(paths);
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

/// Removed what is tagged as enipin's without a state file: the sysctls it set cannot be set
/// back, as their values from before enipin were recorded there only. Said, not an error: the
/// rest is removed, and what is left is the operator's to decide.
fn say_sysctls_unknown(paths: &Paths) {
    let knobs: Vec<_> = Knob::ALL.iter().map(|k| k.name()).collect();
    eprintln!(
        "warning: {} is missing: enipin's rules, routes and datapath were removed, but the \
         sysctls it sets on the interfaces it managed ({}) are left as they are, since their \
         values from before enipin were recorded in that file only. Set them back by hand if \
         they should differ (`sysctl net.ipv4.conf.IFACE.arp_ignore` shows one)",
        state::file(paths).display(),
        knobs.join(", ")
    );
}

/// The paths to detach the datapath from: `--pin-dir` when it holds pins; otherwise the pin
/// directory the state file recorded, when that holds them (an operator who passed the wrong
/// `--pin-dir`). `--pin-dir` comes first because the recorded path is the attach's view of the
/// filesystem: a container that attached with the host's bpffs mounted at `/sys/fs/bpf` recorded
/// a path that, on the host, names another directory.
fn pins_of(paths: &Paths, st: Option<&state::State>) -> Paths {
    let Some(recorded) = st.and_then(|s| s.pin_dir.as_ref()) else {
        return paths.clone();
    };
    if paths.pin_dir.exists() || !recorded.exists() {
        return paths.clone();
    }
    if *recorded != paths.pin_dir {
        println!(
            "note: the datapath was attached under {}, not --pin-dir {}: detaching it there",
            recorded.display(),
            paths.pin_dir.display()
        );
    }
    Paths {
        pin_dir: recorded.clone(),
        state_dir: paths.state_dir.clone(),
    }
}

/// enipin programs the kernel still runs at egress after the pins are gone: their links are
/// pinned elsewhere (another pin dir in this namespace) or held open by a process.
fn left_running(pins: &Paths) -> Result<Vec<String>> {
    Ok(datapath::running_at_egress()?
        .into_iter()
        .map(|r| {
            format!(
                "{PROGRAM} still runs at {} egress (ifindex {}, program id {}): its link is not \
                 under {}. Run `enipin detach --pin-dir DIR` with the pin dir of the attach that \
                 put it there (`bpftool link show` lists the link and its pins), or stop the \
                 process that holds it",
                r.name,
                r.ifindex,
                r.program_id,
                pins.pin_dir.display()
            )
        })
        .collect())
}

/// enipin's nftables table, if there is one. Without `nft` there is none to remove, unless the
/// last attach made one (and nft was uninstalled since): then detach says so.
fn connmark_removal(st: Option<&state::State>) -> Result<Option<Change>> {
    let recorded = st
        .and_then(|s| s.config.as_ref())
        .is_some_and(|c| c.connmark);
    if !recorded && nft::nft_available().is_err() {
        return Ok(None);
    }
    Ok(nft::installed()?.map(|old| Change::Connmark {
        old: Some(old),
        new: None,
    }))
}

/// enipin's rules and routes, then the sysctls back to the values the state file saved, each on
/// the interface it was saved for (same ifindex and MAC) under the name that interface has now.
fn removals(s: &Snapshot, st: Option<&state::State>) -> Vec<Change> {
    let (rules, routes) = plan::installed(&s.discovery);
    let mut changes: Vec<Change> = rules.into_iter().map(Change::DelRule).collect();
    changes.extend(routes.into_iter().map(Change::DelRoute));
    // The addresses `--configure-addresses` added, found by their protocol (or the state file).
    changes.extend(address::ours(&s.discovery));
    for saved in st.iter().flat_map(|s| &s.sysctls) {
        // An interface that is gone took its sysctls with it.
        let Some(iface) = saved.find(&s.discovery.interfaces) else {
            continue;
        };
        let (Ok(key), Some(conf)) = (
            crate::model::sysctl::Key::new(&iface.name, saved.knob),
            iface.ipv4_conf,
        ) else {
            continue;
        };
        let now = saved.knob.of(&conf).to_string();
        if now != saved.old {
            changes.push(Change::Sysctl {
                key,
                old: now,
                new: saved.old.clone(),
            });
        }
    }
    changes
}
