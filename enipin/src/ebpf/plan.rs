use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context as _, Result};
use aya::programs::ProgramInfo;
use enipin_ebpf::{MODE_ENFORCE, Owner, PREFIXES_V4_PRESENT, PREFIXES_V6_PRESENT, PROGRAM, maps};

use crate::{
    config::{Config, Paths},
    model::ManagedInterface,
};

use super::*;

/// What the datapath must change to match the desired state, diffed with what is pinned.
#[derive(Debug, Default)]
pub struct EbpfPlan {
    /// Human-readable lines, one per change (`+ attach enipin_egress to eth1 (tcx)`, ...).
    pub changes: Vec<String>,
    pub(super) diff: Diff,
}

impl EbpfPlan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// The structured form of [`EbpfPlan::changes`].
#[derive(Debug, Default)]
pub(super) struct Diff {
    pub(super) program: ProgramChange,
    /// Interfaces to attach to (ifindex, name).
    pub(super) attach: Vec<(u32, String)>,
    /// Pins of attachments to remove (stale or no longer managed), by file name.
    pub(super) detach: Vec<String>,
    pub(super) v4: MapDiff<[u8; 4], Owner>,
    pub(super) v6: MapDiff<[u8; 16], Owner>,
    pub(super) p4: MapDiff<([u8; 4], u8), Owner>,
    pub(super) p6: MapDiff<([u8; 16], u8), Owner>,
    pub(super) counters: MapDiff<u32, ()>,
    pub(super) config: Option<enipin_ebpf::Config>,
    /// Pinned maps of another layout, to unpin before loading (see [`stale_maps`]).
    pub(super) recreate: Vec<&'static str>,
    /// Derived maps to rebuild from the owner maps (see [`derived_out_of_step`]); every apply
    /// that writes maps does, this only makes the plan non-empty.
    pub(super) resync: bool,
    /// Nothing must remain: detach everything and remove the pin directory.
    pub(super) remove_all: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(super) enum ProgramChange {
    #[default]
    Keep,
    /// Nothing pinned yet.
    Load,
    /// A different program is pinned: swap it atomically on every link.
    Replace,
}

/// Computes the datapath changes for `managed` (empty `managed`: remove everything).
pub fn plan(managed: &[ManagedInterface], cfg: &Config, paths: &Paths) -> Result<EbpfPlan> {
    let mut plan = EbpfPlan::default();
    let found = attachments(paths)?;
    if managed.is_empty() {
        plan.diff.remove_all = true;
        for a in &found {
            plan.changes.push(format!(
                "- detach {PROGRAM} from ifindex {} ({})",
                a.ifindex, a.pin
            ));
        }
        if paths.pin_dir.exists() {
            plan.changes
                .push(format!("- remove pins under {}", paths.pin_dir.display()));
        }
        return Ok(plan);
    }
    let want = desired(managed, cfg);
    let stale = stale_maps(paths)?;
    let have = installed_with(paths, &stale)?;
    let d = &mut plan.diff;
    for (name, why) in &stale {
        let reset = if [maps::COUNTERS, maps::COUNTERS_FAST].contains(name) {
            "; its counters start again from zero"
        } else {
            ""
        };
        plan.changes.push(format!(
            "~ recreate map {name} (pinned by another enipin version: {why}{reset})"
        ));
        d.recreate.push(name);
    }
    for name in derived_out_of_step(paths, &stale)? {
        plan.changes.push(format!(
            "~ rebuild {name} (out of step with the owner maps: an earlier run was interrupted)"
        ));
        d.resync = true;
    }
    let prog_pin = paths.pin_dir.join(PROG_PIN);
    d.program = if !prog_pin.exists() {
        ProgramChange::Load
    } else if !stale.is_empty() {
        // Maps of another layout: a program of another build, which this one replaces.
        ProgramChange::Replace
    } else {
        // Same program? Compare tags (the kernel's hash of the instructions, map fds masked).
        let old = ProgramInfo::from_pin(&prog_pin)
            .with_context(|| format!("reading {}", prog_pin.display()))?
            .tag();
        if old == our_tag(&paths.pin_dir)? {
            ProgramChange::Keep
        } else {
            ProgramChange::Replace
        }
    };
    match d.program {
        ProgramChange::Load => plan.changes.push(format!(
            "+ load {PROGRAM}, pinned under {}",
            paths.pin_dir.display()
        )),
        ProgramChange::Replace => plan
            .changes
            .push(format!("~ replace {PROGRAM} (new build)")),
        ProgramChange::Keep => {}
    }
    let wanted: BTreeSet<u32> = managed.iter().map(|m| m.ifindex).collect();
    let mut alive = BTreeSet::new();
    for a in &found {
        let ok = wanted.contains(&a.ifindex) && a.alive(&paths.pin_dir);
        if ok {
            alive.insert(a.ifindex);
        } else {
            plan.changes.push(format!(
                "- detach {PROGRAM} from ifindex {} ({})",
                a.ifindex, a.pin
            ));
            d.detach.push(a.pin.clone());
        }
    }
    for m in managed.iter().filter(|m| !alive.contains(&m.ifindex)) {
        plan.changes.push(format!(
            "+ attach {PROGRAM} to {} egress (ifindex {})",
            m.name, m.ifindex
        ));
        d.attach.push((m.ifindex, m.name.clone()));
    }
    d.v4 = MapDiff::new(&have.v4, &want.v4);
    d.v6 = MapDiff::new(&have.v6, &want.v6);
    d.p4 = MapDiff::new(&have.p4, &want.p4);
    d.p6 = MapDiff::new(&have.p6, &want.p6);
    d.counters = MapDiff::new(&have.counters, &want.counters);
    let out = &mut plan.changes;
    describe(out, "owner", &d.v4, |k| Ipv4Addr::from(*k).to_string());
    describe(out, "owner", &d.v6, |k| Ipv6Addr::from(*k).to_string());
    describe(out, "prefix", &d.p4, |(k, l)| {
        format!("{}/{l}", Ipv4Addr::from(*k))
    });
    describe(out, "prefix", &d.p6, |(k, l)| {
        format!("{}/{l}", Ipv6Addr::from(*k))
    });
    for (k, ()) in &d.counters.set {
        plan.changes.push(format!("+ counters for ifindex {k}"));
    }
    for k in &d.counters.remove {
        plan.changes.push(format!("- counters for ifindex {k}"));
    }
    if have.config != want.config {
        let c = want.config.unwrap_or_default();
        let mode = if c.mode == MODE_ENFORCE {
            "enforce"
        } else {
            "monitor"
        };
        let prefixes = match c.prefixes & (PREFIXES_V4_PRESENT | PREFIXES_V6_PRESENT) {
            0 => "none",
            PREFIXES_V4_PRESENT => "v4",
            PREFIXES_V6_PRESENT => "v6",
            _ => "v4+v6",
        };
        plan.changes.push(format!(
            "~ config mode={mode} debug={} prefixes={prefixes}",
            c.debug
        ));
        d.config = want.config;
    }
    Ok(plan)
}

/// One plan line per owner-map change: `+ owner 198.18.0.2 -> eth1`, `- prefix 198.18.1.16/28`.
pub(super) fn describe<K>(
    out: &mut Vec<String>,
    what: &str,
    d: &MapDiff<K, Owner>,
    key: impl Fn(&K) -> String,
) {
    for (k, o) in &d.set {
        out.push(format!("+ {what} {} -> {}", key(k), owner_name(o)));
    }
    for k in &d.remove {
        out.push(format!("- {what} {}", key(k)));
    }
}
