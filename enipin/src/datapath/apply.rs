//! Carrying out an [`EbpfPlan`], all or nothing, and detaching everything.

use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::MapData,
    programs::{
        SchedClassifier,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
    },
};
use enipin_ebpf::PROGRAM;

use crate::settings::config::{Config, Paths};

use super::{
    attach::{
        AttachKind, Attachment, attach_one, attachments, ifname, remove_attachment,
        remove_stale_clsact, resolve,
    },
    contents::{MapWrites, State, installed, restore, write_maps},
    derived::TableSwap,
    owner::{claim, owner},
    pins::{Pins, remove_pins},
    plan::{Change, EbpfPlan},
    program::{PROG_PIN, classifier, ensure_bpffs, load},
};

/// Carries out a plan, all or nothing: on failure what this call did is undone (new links and
/// pins removed, map entries restored), and the error also names whatever could not be undone.
/// The tests' entry; enipin itself prepares first and applies with the rules.
#[cfg(feature = "testing")]
pub fn apply(
    plan: EbpfPlan,
    managed: &[crate::model::ManagedInterface],
    cfg: &Config,
    paths: &Paths,
) -> Result<()> {
    let _ = managed; // the plan carries the changes; kept for the appliers' common shape
    prepare(plan, cfg, paths)?.finish()
}

/// A plan carried out up to its links: the program loaded and verified, the maps pinned and
/// written, nothing attached or swapped yet. [`Prepared::finish`] attaches (and detaches);
/// [`Prepared::abandon`] undoes what [`prepare`] did.
///
/// The split lets [`crate::engine::apply::commit`] prepare while the rules' netlink batch runs: loading
/// and verifying the program and filling 1500 map entries (about 30 ms of CPU for 15 x 50
/// addresses) touch nothing the rules do, while every TCX attach waits under rtnl, as the
/// rules' requests do, so only the preparation can overlap them.
#[must_use = "a prepared datapath must be finished or abandoned"]
pub struct Prepared(Stage);

enum Stage {
    /// The plan is empty.
    Nothing,
    /// Nothing must remain: [`detach`] when finishing (after the rules went).
    RemoveAll(Paths),
    Ready(Box<Ready>),
}

struct Ready {
    steps: Steps,
    how: AttachKind,
    paths: Paths,
    ebpf: Ebpf,
    /// The owner tables, swapped in while the links are attached.
    tables: TableSwap,
    undo: Undo,
}

/// Checks the plan's preconditions again, claims the pin directory, then loads and fills (see
/// [`Prepared`]). On failure what it did is undone, as [`apply`]'s.
pub fn prepare(plan: EbpfPlan, cfg: &Config, paths: &Paths) -> Result<Prepared> {
    if plan.is_empty() {
        return Ok(Prepared(Stage::Nothing));
    }
    let steps = Steps::from(plan);
    if steps.remove_all {
        return Ok(Prepared(Stage::RemoveAll(paths.clone())));
    }
    // Checked by the plan already; again here, as the plan may be older than the directory.
    owner(&paths.pin_dir)?;
    ensure_bpffs(&paths.pin_dir)?;
    let how = resolve(cfg.attach)?;
    let created_dir = !paths.pin_dir.exists();
    fs::create_dir_all(&paths.pin_dir)
        .with_context(|| format!("creating {}", paths.pin_dir.display()))?;
    // Ours before anything is pinned in it (a new directory, or one an earlier enipin left
    // unmarked, which the plan checked runs nothing elsewhere).
    if let Err(e) = claim(&paths.pin_dir) {
        if created_dir {
            let _ = fs::remove_dir(&paths.pin_dir);
        }
        return Err(e);
    }
    let mut undo = Undo {
        created_dir,
        before: installed(&Pins::open(paths)?)?,
        attached: Vec::new(),
        unpinned: Vec::new(),
    };
    match load_and_fill(&steps, paths, &mut undo) {
        Ok((ebpf, tables)) => Ok(Prepared(Stage::Ready(Box::new(Ready {
            steps,
            how,
            paths: paths.clone(),
            ebpf,
            tables,
            undo,
        })))),
        Err(e) => Err(undone(e, undo.run(paths))),
    }
}

impl Prepared {
    /// Attaches and detaches as planned; on failure undoes all of it, [`prepare`]'s part too.
    pub fn finish(self) -> Result<()> {
        let r = match self.0 {
            Stage::Nothing => return Ok(()),
            Stage::RemoveAll(paths) => return detach(&paths).map(drop),
            Stage::Ready(r) => r,
        };
        let Ready {
            steps,
            how,
            paths,
            mut ebpf,
            tables,
            mut undo,
        } = *r;
        let t = std::time::Instant::now();
        // A link attached before the new tables are swapped in is safe: with no table yet (a
        // first attach) the program finds no bucket and asks the owner maps, written in full by
        // `prepare`; with an earlier table it sees what the links already attached see until the
        // swap, as it was before the links and tables overlapped. Whatever is missing from a
        // table reads as not owned, so the packet passes; none is redirected wrongly.
        let done = std::thread::scope(|sc| {
            let swap = sc.spawn(|| tables.run());
            let linked = link(&mut ebpf, &steps, how, &paths, &mut undo);
            let swapped = swap
                .join()
                .unwrap_or_else(|_| Err(anyhow!("swapping the owner tables panicked")));
            linked.and(swapped)
        });
        log::debug!(
            "datapath: {} link(s) attached, {} removed, owner tables swapped in {:.1} ms",
            steps.attach.len(),
            steps.detach.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
        match done {
            Ok(()) => Ok(()),
            Err(e) => Err(undone(e, undo.run(&paths))),
        }
    }

    /// Undoes what [`prepare`] did (the rules failed); an error names what could not be undone.
    pub fn abandon(self) -> Result<()> {
        let Stage::Ready(r) = self.0 else {
            return Ok(());
        };
        drop((r.ebpf, r.tables)); // the program and map descriptors: the pins are what stays
        let left = r.undo.run(&r.paths);
        if left.is_empty() {
            return Ok(());
        }
        Err(anyhow!(
            "undoing the prepared datapath failed for: {}",
            left.join("; ")
        ))
    }
}

/// `e`, naming what the rollback could not undo, if anything.
fn undone(e: anyhow::Error, left: Vec<String>) -> anyhow::Error {
    if left.is_empty() {
        return e;
    }
    e.context(format!("the rollback could not undo: {}", left.join("; ")))
}

/// The plan's changes sorted by what carries them out.
#[derive(Debug, Default)]
struct Steps {
    load: bool,
    replace: bool,
    /// Interfaces to attach to (ifindex, name).
    attach: Vec<(u32, String)>,
    /// Pins of attachments to remove, by file name.
    detach: Vec<String>,
    /// Pinned maps of another layout, to unpin before loading.
    recreate: Vec<&'static str>,
    /// Derived maps out of step need nothing of their own: every write of the maps rebuilds them.
    maps: MapWrites,
    /// Nothing must remain: detach everything and remove the pin directory.
    remove_all: bool,
}

impl From<EbpfPlan> for Steps {
    fn from(plan: EbpfPlan) -> Self {
        let mut s = Self::default();
        let m = &mut s.maps;
        for c in plan.changes {
            match c {
                Change::RecreateMap { name, .. } => s.recreate.push(name),
                Change::Rebuild { .. } => {}
                Change::Load { .. } => s.load = true,
                Change::Replace { .. } => s.replace = true,
                Change::Detach { pin, .. } => s.detach.push(pin),
                Change::Attach { ifindex, name } => s.attach.push((ifindex, name)),
                Change::SetOwner { addr, owner, .. } => match addr {
                    std::net::IpAddr::V4(a) => m.v4.set.push((a.octets(), owner)),
                    std::net::IpAddr::V6(a) => m.v6.set.push((a.octets(), owner)),
                },
                Change::RemoveOwner { addr } => match addr {
                    std::net::IpAddr::V4(a) => m.v4.remove.push(a.octets()),
                    std::net::IpAddr::V6(a) => m.v6.remove.push(a.octets()),
                },
                Change::SetPrefix {
                    addr, len, owner, ..
                } => match addr {
                    std::net::IpAddr::V4(a) => m.p4.set.push(((a.octets(), len), owner)),
                    std::net::IpAddr::V6(a) => m.p6.set.push(((a.octets(), len), owner)),
                },
                Change::RemovePrefix { addr, len } => match addr {
                    std::net::IpAddr::V4(a) => m.p4.remove.push((a.octets(), len)),
                    std::net::IpAddr::V6(a) => m.p6.remove.push((a.octets(), len)),
                },
                Change::AddCounters { ifindex } => m.counters.set.push((ifindex, ())),
                Change::RemoveCounters { ifindex } => m.counters.remove.push(ifindex),
                Change::SetNextHop { ifindex, hop, .. } => m.next_hops.set.push((ifindex, hop)),
                Change::RemoveNextHop { ifindex } => m.next_hops.remove.push(ifindex),
                Change::Config(c) => m.config = Some(c),
                Change::RemovePins { .. } => s.remove_all = true,
                Change::Claim { .. } => {} // every apply claims the directory
            }
        }
        s
    }
}

/// [`prepare`]'s steps, recording in `undo` what a rollback must revert: the maps of another
/// layout unpinned, the program loaded (creating and pinning the missing maps), the maps written.
fn load_and_fill(s: &Steps, paths: &Paths, undo: &mut Undo) -> Result<(Ebpf, TableSwap)> {
    // Maps of another build's layout: unpin them (the running program keeps them until its links
    // are swapped to the new program in `link`) and keep them open to pin back on failure.
    for name in &s.recreate {
        let path = paths.pin_dir.join(name);
        let old =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
        undo.unpinned.push((path, old));
    }
    let t = std::time::Instant::now();
    let mut ebpf = load(&paths.pin_dir)?;
    let loaded = t.elapsed();
    let tables = write_maps(&mut ebpf, &s.maps)?;
    log::debug!(
        "datapath: program loaded and verified in {:.1} ms, maps written in {:.1} ms",
        loaded.as_secs_f64() * 1e3,
        (t.elapsed() - loaded).as_secs_f64() * 1e3
    );
    Ok((ebpf, tables))
}

/// [`Prepared::finish`]'s steps, in order: the program swapped in and pinned, the links attached
/// and removed, recording in `undo` what a rollback must revert.
fn link(ebpf: &mut Ebpf, s: &Steps, how: AttachKind, paths: &Paths, undo: &mut Undo) -> Result<()> {
    let prog_pin = paths.pin_dir.join(PROG_PIN);
    let prog = classifier(ebpf)?;
    if s.replace {
        swap_links(prog, s, paths)?;
        let _ = fs::remove_file(&prog_pin);
    }
    if s.load || s.replace {
        prog.pin(&prog_pin)
            .with_context(|| format!("pinning {}", prog_pin.display()))?;
    }
    let prog = if s.load || s.replace {
        prog
    } else {
        &mut SchedClassifier::from_pin(&prog_pin)?
    };
    // Attach first, detach after, so that enforcement never pauses; except for a netlink record
    // of an interface attached again, whose filter is gone (the plan attaches only where nothing
    // runs): it goes first, since the new filter may take the same priority and handle, and with
    // them the record's name.
    let (dead, stale): (Vec<&String>, Vec<&String>) = s.detach.iter().partition(|pin| {
        Attachment::parse(pin)
            .is_some_and(|a| a.netlink.is_some() && s.attach.iter().any(|(i, _)| *i == a.ifindex))
    });
    for pin in dead {
        remove_attachment(&paths.pin_dir, pin)?;
    }
    for (ifindex, name) in &s.attach {
        let pin = attach_one(prog, *ifindex, &paths.pin_dir, how)
            .with_context(|| format!("attaching {PROGRAM} to {name} egress"))?;
        undo.attached.push(pin);
    }
    for pin in stale {
        remove_attachment(&paths.pin_dir, pin)?;
    }
    Ok(())
}

/// Swaps every live link (those the plan keeps) atomically to `prog` before it becomes the
/// pinned program.
fn swap_links(prog: &mut SchedClassifier, s: &Steps, paths: &Paths) -> Result<()> {
    for a in attachments(paths)?
        .iter()
        .filter(|a| !s.detach.contains(&a.pin))
    {
        let path = paths.pin_dir.join(&a.pin);
        let link = match a.nl_link() {
            // Netlink: the filter is replaced in place (same priority and handle).
            Some(link) => link,
            None => SchedClassifierLink::try_from(FdLink::from(PinnedLink::from_pin(&path)?))?,
        };
        let id = prog
            .attach_to_link(link)
            .with_context(|| format!("updating {}", path.display()))?;
        // A pinned TCX link stays when its fd closes; a netlink filter would be deleted when its
        // link is dropped, so that one is forgotten.
        let link = prog.take_link(id)?;
        if a.netlink.is_some() {
            std::mem::forget(link);
        }
    }
    Ok(())
}

/// What a failed [`apply`] must revert.
struct Undo {
    /// The pin directory did not exist: remove it whole.
    created_dir: bool,
    /// The map entries before.
    before: State,
    /// Attachments made, by pin name.
    attached: Vec<String>,
    /// Maps of another layout that were unpinned: pinned back in place of their replacements.
    unpinned: Vec<(PathBuf, MapData)>,
}

impl Undo {
    /// Reverts; returns what could not be reverted, one line each (empty: all of it was).
    fn run(self, paths: &Paths) -> Vec<String> {
        let mut left = Vec::new();
        let mut note = |what: String, r: Result<()>| {
            if let Err(e) = r {
                left.push(format!("{what}: {e:#}"));
            }
        };
        for pin in &self.attached {
            note(
                format!("removing {pin}"),
                remove_attachment(&paths.pin_dir, pin),
            );
        }
        if self.created_dir {
            let r = remove_pins(&paths.pin_dir).map(drop);
            note(format!("removing {}", paths.pin_dir.display()), r);
            return left;
        }
        note(
            "restoring the map entries".into(),
            restore(paths, &self.before),
        );
        for (path, old) in self.unpinned {
            let _ = fs::remove_file(&path); // its replacement, if one was pinned
            let r = old.pin(&path).map_err(|e| anyhow!(e));
            note(format!("pinning back {}", path.display()), r);
        }
        left
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
        remove_stale_clsact(&paths.pin_dir)?;
        out.extend(remove_pins(&paths.pin_dir)?);
    }
    Ok(out)
}
