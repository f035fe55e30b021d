use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result};
use aya::{
    maps::MapData,
    programs::{
        SchedClassifier,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
    },
};
use enipin_ebpf::PROGRAM;

use crate::{
    config::{Config, Paths},
    model::ManagedInterface,
};

use super::*;

/// Carries out a plan, all or nothing: on failure what this call did is undone (new links and
/// pins removed, map entries restored).
pub fn apply(
    plan: EbpfPlan,
    managed: &[ManagedInterface],
    cfg: &Config,
    paths: &Paths,
) -> Result<()> {
    let _ = (managed, cfg); // the plan carries the diff; kept for the appliers' common shape
    if plan.is_empty() {
        return Ok(());
    }
    let d = plan.diff;
    if d.remove_all {
        detach(paths)?;
        return Ok(());
    }
    ensure_bpffs(&paths.pin_dir)?;
    let created_dir = !paths.pin_dir.exists();
    fs::create_dir_all(&paths.pin_dir)
        .with_context(|| format!("creating {}", paths.pin_dir.display()))?;
    let before = installed(paths)?;
    let mut undo = Undo {
        paths,
        created_dir,
        pins: Vec::new(),
        before: Some(before),
        unpinned: Vec::new(),
        ok: false,
    };
    // Maps of another build's layout: unpin them (the running program keeps them until its links
    // are swapped to the new program below) and keep them open to pin back on failure.
    for name in &d.recreate {
        let path = paths.pin_dir.join(name);
        let old =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
        undo.unpinned.push((path, old));
    }
    let mut ebpf = load(&paths.pin_dir)?;
    write_maps(&mut ebpf, &d)?;
    let prog_pin = paths.pin_dir.join(PROG_PIN);
    let prog = classifier(&mut ebpf)?;
    if d.program != ProgramChange::Keep {
        // Swap every live link atomically to the new program before it becomes the pinned one.
        if d.program == ProgramChange::Replace {
            for a in attachments(paths)?
                .iter()
                .filter(|a| !d.detach.contains(&a.pin))
            {
                let path = paths.pin_dir.join(&a.pin);
                let link = match a.nl_link() {
                    // Netlink: the filter is replaced in place (same priority and handle).
                    Some(link) => link,
                    None => {
                        SchedClassifierLink::try_from(FdLink::from(PinnedLink::from_pin(&path)?))?
                    }
                };
                let id = prog
                    .attach_to_link(link)
                    .with_context(|| format!("updating {}", path.display()))?;
                // A pinned TCX link stays when its fd closes; a netlink filter would be deleted
                // when its link is dropped, so that one is forgotten.
                let link = prog.take_link(id)?;
                if a.netlink.is_some() {
                    std::mem::forget(link);
                }
            }
            let _ = fs::remove_file(&prog_pin);
        }
        prog.pin(&prog_pin)
            .with_context(|| format!("pinning {}", prog_pin.display()))?;
    }
    let prog = if d.program == ProgramChange::Keep {
        &mut SchedClassifier::from_pin(&prog_pin)?
    } else {
        prog
    };
    for (ifindex, name) in &d.attach {
        let pin = attach_one(prog, *ifindex, &paths.pin_dir)
            .with_context(|| format!("attaching {PROGRAM} to {name} egress"))?;
        undo.pins.push(pin);
    }
    for pin in &d.detach {
        remove_attachment(&paths.pin_dir, pin)?;
    }
    undo.ok = true;
    Ok(())
}

/// Reverts a failed [`apply`] when dropped unless `ok`.
pub(super) struct Undo<'a> {
    pub(super) paths: &'a Paths,
    pub(super) created_dir: bool,
    pub(super) pins: Vec<String>,
    pub(super) before: Option<State>,
    /// Maps of another layout that were unpinned: pinned back in place of their replacements.
    pub(super) unpinned: Vec<(PathBuf, MapData)>,
    pub(super) ok: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.ok {
            return;
        }
        for pin in &self.pins {
            let _ = remove_attachment(&self.paths.pin_dir, pin);
        }
        if self.created_dir {
            let _ = remove_pins(&self.paths.pin_dir);
            return;
        }
        if let Some(before) = self.before.take() {
            let _ = restore(self.paths, &before);
        }
        for (path, old) in self.unpinned.drain(..) {
            let _ = fs::remove_file(&path);
            let _ = old.pin(&path);
        }
    }
}

/// Detaches every link under the pin directory and removes the pins. A second call is a no-op.
/// Returns one line per removed object.
pub fn detach(paths: &Paths) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for a in attachments(paths)? {
        remove_attachment(&paths.pin_dir, &a.pin)?;
        let name = ifname(a.ifindex).unwrap_or_else(|| "?".into());
        out.push(format!(
            "- detach {PROGRAM} from {name} (ifindex {})",
            a.ifindex
        ));
    }
    if paths.pin_dir.exists() {
        out.extend(remove_pins(&paths.pin_dir)?);
    }
    Ok(out)
}
