//! `enipin attach`: plan both appliers, print the plan, apply it (or not, with `--dry-run`).

use anyhow::{Context as _, Result, bail};

use super::{Fit, ManagedText};
use crate::{
    engine::apply,
    engine::snapshot::{Named, Snapshot},
    engine::state,
    kernel::caps::{self, Cap},
    metadata::{Tracker, Use},
    model::discovery::Discovery,
    model::fmt_mac,
    routing::plan::{self, DiffFormat},
    routing::select::Selection,
    settings::config::{Config, Paths},
};

/// Plans rules, routes, sysctls and the datapath for the selected interfaces, prints the plan
/// in `format`, and unless `dry_run` applies it all or nothing and saves the state.
pub async fn attach(cfg: &Config, paths: &Paths, dry_run: bool, format: DiffFormat) -> Result<()> {
    caps::require("enipin attach", Cap::needed(cfg.ebpf))?;
    // Two changers at once would each diff against a state the other is changing.
    let _lock = if dry_run {
        None
    } else {
        Some(state::lock(paths)?)
    };
    // A corrupt state file stops us before anything changes.
    let previous = state::load(paths)?;
    let mut tracker = Tracker::new(cfg);
    let (mut s, view) = Snapshot::select_with(
        cfg,
        Named::Strict,
        tracker.as_mut().map(Use::Ask),
        previous.as_ref(),
        None,
    )
    .await?;
    if let Some((mac, why)) = view.as_ref().and_then(|v| v.unknown.iter().next()) {
        bail!(
            "the metadata of ENI {} is unknown ({why}); nothing was changed. Check that the \
             metadata service answers (--metadata-endpoint) and attach again, or attach without \
             --metadata to manage what the interfaces have (`enipin watch --metadata` keeps \
             retrying instead)",
            fmt_mac(mac)
        );
    }
    apply::read_connmark(&mut s.snapshot.discovery, cfg, previous.as_ref())?;
    let (nl, d) = (&s.snapshot.nl, &s.snapshot.discovery);
    let comment = if format == DiffFormat::Ip { "# " } else { "" };
    // First, why each interface is managed or not: the selection is the first thing to check.
    for v in &s.verdicts {
        println!("{comment}{v}");
    }
    let managed = match s.selection {
        Selection::Managed(m) => m,
        Selection::NothingToDo(why) => {
            print_nothing_to_do(d, &why, comment);
            return Ok(());
        }
    };
    crate::doctor::warn_conflicts(&s.snapshot, cfg, paths).await;
    let p = apply::pending(d, managed, previous, cfg, paths, apply::OnConflict::Refuse)?;
    for l in apply::connmark_left_out(&p.managed, cfg) {
        log::warn!("connmark: {l}");
    }
    print!(
        "{}",
        ManagedText {
            managed: &p.managed,
            prefix: comment,
            fit: Fit::terminal(true),
        }
    );
    let lines = p.lines(format);
    // One write for the whole plan, not one per line: stdout flushes at every newline, and 15 x 50
    // addresses plan 2359 lines.
    print!(
        "{}",
        lines.iter().map(|l| format!("{l}\n")).collect::<String>()
    );
    if dry_run {
        println!(
            "{comment}dry run: {} change(s) planned, nothing changed",
            lines.len()
        );
        return Ok(());
    }
    let (n_changes, n_managed, empty) = (lines.len(), p.managed.len(), p.is_empty());
    if empty {
        println!(
            "nothing to do: {} rules, {} routes already installed",
            p.plan.rules_in_place, p.plan.routes_in_place
        );
    }
    apply::commit(nl, p, cfg, paths)
        .await
        .context("attach failed")?;
    if !empty {
        println!("attached: {n_changes} change(s) applied to {n_managed} interface(s)");
    }
    Ok(())
}

/// Nothing to manage: says why, and what an earlier attach left installed.
fn print_nothing_to_do(d: &Discovery, why: &str, comment: &str) {
    println!("{comment}nothing to do: {why}");
    let (rules, routes) = plan::installed(d);
    if !rules.is_empty() || !routes.is_empty() {
        println!(
            "{comment}note: {} rules and {} routes of an earlier attach are still installed; `enipin detach` removes them",
            rules.len(),
            routes.len()
        );
    }
}
