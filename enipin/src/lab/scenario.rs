//! The seed scenario, step by step, against a [`Topology`]: reproduce the drop, attach enipin,
//! check both addresses answer, show enipin's view, detach, check nothing is left.

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    imds::{FakeEni, Imds},
    snapshot::Snapshot,
    topology::{DropKind, Drops, EniSpec, Spec, Topology},
};
use crate::lab::testbed::{Dirs, Netns, enipin_command};

/// Set by `enipin lab`'s signal handler: every wait polls it, so Ctrl-C unwinds to the RAII guards.
pub(crate) static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Returned (wrapped in anyhow) when [`CANCELLED`] stopped the scenario.
#[derive(Debug)]
pub(crate) struct Interrupted;
impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}
impl std::error::Error for Interrupted {}

/// How to run the scenario.
#[derive(Clone, Debug)]
pub struct Options {
    /// The enipin binary to drive (`enipin lab` passes its own executable).
    pub bin: PathBuf,
    /// Leave namespaces, pins and state in place, with enipin attached again at the end.
    pub keep: bool,
    /// The network to run it on (`Spec::default()`: the seed's).
    pub spec: Spec,
    /// The metadata scenario (`enipin lab --metadata`): the secondary ENI has one more address,
    /// [`METADATA_ADDR`], that only the cloud's metadata lists; `attach --metadata aws
    /// --configure-addresses` adds it.
    pub metadata: bool,
}

/// The secondary ENI's address that exists only in the lab's metadata.
pub const METADATA_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 21);

/// One row of the lab's table.
#[derive(Clone, Debug)]
pub struct Step {
    /// Stable key for tests: `ping-primary-before`, `attach`, `residue`, ...
    pub key: String,
    /// Step number of the scenario (1-6).
    pub(crate) num: u8,
    /// What the step does, as the table prints it.
    pub what: String,
    pub(crate) expected: String,
    pub(crate) result: String,
    /// The result is the expected one.
    pub ok: bool,
}

/// What a run of the scenario did and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// In the order they ran.
    pub steps: Vec<Step>,
    pub(crate) drops_before: Drops,
    /// The vpc's drop counters with enipin attached.
    pub drops_after: Drops,
    /// Namespaces host, vpc, peer.
    pub namespaces: Vec<String>,
    /// The run's own bpffs directory.
    pub pin_dir: PathBuf,
    pub(crate) state_dir: PathBuf,
    /// Lines that differ between the dumps before attach and after detach.
    pub residue: Vec<String>,
    /// Output of the commands enipin ran, for the reader.
    pub transcript: String,
}

impl Report {
    /// Every step ran and was ok.
    pub fn passed(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.ok)
    }

    /// The step with this [`Step::key`].
    pub fn step(&self, key: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.key == key)
    }

    /// The before/after table and the drop counters.
    pub fn table(&self) -> String {
        let w = self
            .steps
            .iter()
            .map(|s| s.what.len())
            .max()
            .unwrap_or(0)
            .max(4);
        let we = self
            .steps
            .iter()
            .map(|s| s.expected.len())
            .max()
            .unwrap_or(0)
            .max(8);
        let mut t = format!("# {:w$}  {:we$}  {}\n", "step", "expected", "result");
        for s in &self.steps {
            let mark = if s.ok { "ok  " } else { "FAIL" };
            let _ = writeln!(
                t,
                "{} {:w$}  {:we$}  {mark} {}",
                s.num, s.what, s.expected, s.result
            );
        }
        let _ = writeln!(
            t,
            "\n{:24}{:>8} {:>8}",
            "vpc drops (packets)", "before", "after"
        );
        for (eni, after) in &self.drops_after.by_eni {
            let before = self.drops_before.eni(eni);
            for kind in DropKind::ALL {
                let label = format!(
                    "{eni} wrong {}",
                    match kind {
                        DropKind::Mac => "src MAC",
                        DropKind::Arp => "ARP sender",
                        DropKind::Ip => "src IPv4",
                        DropKind::Ip6 => "src IPv6",
                    }
                );
                let _ = writeln!(
                    t,
                    "  {label:22}{:>8} {:>8}",
                    before.get(kind),
                    after.get(kind)
                );
            }
        }
        t
    }

    fn push(&mut self, num: u8, key: &str, what: String, expected: &str, ok: bool, result: String) {
        println!(
            "[{num}] {what}: {} {result}",
            if ok { "ok" } else { "FAIL" }
        );
        self.steps.push(Step {
            key: key.into(),
            num,
            what,
            expected: expected.into(),
            result,
            ok,
        });
    }
}

fn check_cancel() -> Result<()> {
    if CANCELLED.load(Ordering::Relaxed) {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// Runs `cmd` to completion, killing it on cancellation or after `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let started = Instant::now();
    let mut killed = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(out) => {
                let out = out.with_context(|| format!("waiting for {cmd:?}"))?;
                return match killed {
                    Some(e) => Err(e),
                    // Ctrl-C in a terminal reaches the child too: it ended, but not on its own.
                    None if CANCELLED.load(Ordering::Relaxed) => Err(Interrupted.into()),
                    None => Ok(out),
                };
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("lost {cmd:?}"),
            Err(mpsc::RecvTimeoutError::Timeout) if killed.is_none() => {
                let why = if CANCELLED.load(Ordering::Relaxed) {
                    Some(anyhow::Error::from(Interrupted))
                } else if started.elapsed() > limit {
                    Some(anyhow::anyhow!(
                        "{cmd:?} took longer than {limit:?}: killed"
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    // SAFETY: plain syscall; the child is not reaped before the waiter thread
                    // reports, so the pid is still ours.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    killed = Some(why);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Three probes, one second each at most: whether any reply came back.
fn ping(ns: &Netns, addr: &str) -> Result<bool> {
    check_cancel()?;
    let out = run_bounded(ns.ping_command(&[addr], 3), Duration::from_secs(10))?;
    Ok(out.status.success())
}

/// Compares two snapshots: (identical, summary); differing lines are printed and collected.
fn residue(before: &Snapshot, after: &Snapshot, out: &mut Vec<String>) -> (bool, String) {
    let diff = before.diff(after);
    for l in &diff {
        println!("residue: {l}");
    }
    let res = if diff.is_empty() {
        format!("{} dumps identical", before.sections.len())
    } else {
        format!("{} lines differ", diff.len())
    };
    let clean = diff.is_empty();
    out.extend(diff);
    (clean, res)
}

fn replies(ok: bool) -> String {
    if ok { "replies" } else { "no reply" }.to_string()
}

/// Runs the scenario. The topology, pin and state directories are dropped (removed) before this
/// returns unless `opts.keep`; the caller checks [`Report::namespaces`] are gone.
pub(crate) fn run(opts: &Options) -> Result<Report> {
    check_spec(&opts.spec)?;
    let mut lab = Lab::build(opts)?;
    lab.announce();
    lab.r.drops_before = lab.topo.drops()?;
    let drops = lab.before()?;
    let snap_before = lab.snapshot()?;
    if lab.imds.is_some() {
        lab.metadata(&snap_before)?;
    } else {
        lab.attach(&drops)?;
        lab.view()?;
        lab.detach(&snap_before)?;
        lab.ebpf_only(&snap_before)?;
    }
    lab.r.drops_after = lab.topo.drops()?;
    if opts.keep {
        lab.keep()?;
    }
    Ok(lab.r)
}

/// The lab's metadata server in the host namespace: every ENI with its IPv4 addresses (the
/// metadata-only one included), the first the primary, and the address removed from the host.
fn metadata_server(topo: &Topology) -> Result<Imds> {
    let spec = &topo.spec;
    let enis = spec
        .enis
        .iter()
        .enumerate()
        .map(|(n, e)| {
            let v4: Vec<String> = e.v4.iter().map(ToString::to_string).collect();
            let v4: Vec<&str> = v4.iter().map(String::as_str).collect();
            let subnet = crate::model::Cidr {
                addr: e.v4.first().copied().unwrap_or(spec.gateway_v4).into(),
                prefix_len: spec.prefix_len_v4,
            }
            .network();
            FakeEni::new(&e.mac, n as u32, &v4, &subnet.to_string())
        })
        .collect();
    let name = &spec.enis[spec.enis.len() - 1].name;
    topo.host().ip(&[
        "addr",
        "del",
        &format!("{METADATA_ADDR}/{}", spec.prefix_len_v4),
        "dev",
        name,
    ])?;
    Imds::start(topo.host(), enis)
}

/// The lab pings a primary and a secondary ENI over IPv4: two ENIs at least, the first and the
/// last with an IPv4 address.
fn check_spec(spec: &Spec) -> Result<()> {
    let enis = &spec.enis;
    if enis.len() < 2 {
        bail!(
            "the lab needs two ENIs (a primary and a secondary), got {}",
            enis.len()
        );
    }
    if let Some(e) = [&enis[0], &enis[enis.len() - 1]]
        .iter()
        .find(|e| e.v4.is_empty())
    {
        bail!(
            "the lab pings the primary and the secondary over IPv4: {} has no IPv4 address",
            e.name
        );
    }
    Ok(())
}

/// What the steps share: the network, enipin's directories, the two ENIs pinged, the report.
struct Lab<'a> {
    opts: &'a Options,
    /// The metadata server of `--metadata` (in the host namespace, on its loopback).
    imds: Option<Imds>,
    /// Dropped before the topology, as enipin's pins and state belong inside it.
    dirs: Dirs,
    topo: Topology,
    primary: EniSpec,
    secondary: EniSpec,
    /// Their first IPv4 addresses.
    p4: String,
    s4: String,
    r: Report,
}

impl<'a> Lab<'a> {
    fn build(opts: &'a Options) -> Result<Self> {
        let mut spec = opts.spec.clone();
        if opts.metadata
            && let Some(e) = spec.enis.last_mut()
        {
            e.v4.push(METADATA_ADDR);
        }
        let topo = Topology::build_with(spec)?;
        let imds = if opts.metadata {
            Some(metadata_server(&topo)?)
        } else {
            None
        };
        let dirs = Dirs::new("lab-")?;
        let r = Report {
            namespaces: topo.names().iter().map(|s| s.to_string()).collect(),
            pin_dir: dirs.pins.path().to_path_buf(),
            state_dir: dirs.state.path().to_path_buf(),
            ..Report::default()
        };
        let enis = &topo.spec.enis;
        let (primary, secondary) = (enis[0].clone(), enis[enis.len() - 1].clone());
        Ok(Self {
            opts,
            imds,
            dirs,
            p4: primary.v4[0].to_string(),
            s4: secondary.v4[0].to_string(),
            primary,
            secondary,
            topo,
            r,
        })
    }

    /// `--metadata`: attach with the metadata's address added, which answers then (and did not
    /// before); detach removes it with the rest.
    fn metadata(&mut self, snap_before: &Snapshot) -> Result<()> {
        let (m, name) = (METADATA_ADDR.to_string(), self.secondary.name.clone());
        let ok = ping(self.topo.peer(), &m)?;
        self.r.push(
            3,
            "ping-metadata-before",
            format!("peer -> {m} ({name}, in metadata only)"),
            "no reply",
            !ok,
            replies(ok),
        );
        let url = self.imds.as_ref().map(Imds::url).unwrap_or_default();
        let (ok, res) = self.enipin(&[
            "attach",
            "--metadata",
            "aws",
            "--metadata-endpoint",
            &url,
            "--configure-addresses",
        ])?;
        self.r.push(
            3,
            "attach",
            "enipin attach --metadata aws --configure-addresses".into(),
            "exit 0",
            ok,
            res,
        );
        // The "before" ping left the peer a failed neighbour entry for the address, which it
        // retries only on its own timer: on a slow kernel (QEMU, 0.6-1.0 s from that ping to
        // the address appearing) the entry could stay FAILED through the three probes below.
        // Asked afresh, the address answers at once.
        self.topo.peer().ip(&["neigh", "flush", "to", &m])?;
        for (key, addr, what) in [
            ("ping-metadata-after", m.clone(), "added from metadata"),
            ("ping-secondary-after", self.s4.clone(), "secondary"),
        ] {
            let ok = ping(self.topo.peer(), &addr)?;
            self.r.push(
                3,
                key,
                format!("peer -> {addr} ({name}, {what})"),
                "replies",
                ok,
                replies(ok),
            );
        }
        let (ok, res) = self.enipin(&["status"])?;
        self.r
            .push(4, "status", "enipin status".into(), "exit 0", ok, res);
        self.detach(snap_before)?;
        // The dumps compare rules, routes, tc, pins and sysctls: the address is checked here.
        let left = self.topo.host().ip(&["-4", "addr", "show", "dev", &name])?;
        let gone = !left.contains(&format!("inet {m}/"));
        self.r.push(
            5,
            "metadata-address-removed",
            format!("{m} on {name} after detach"),
            "gone",
            gone,
            if gone { "gone" } else { "still there" }.into(),
        );
        Ok(())
    }

    /// The namespaces and every ENI with its MAC and addresses.
    fn announce(&self) {
        let [host, vpc, peer] = self.topo.names();
        println!("lab: namespaces host={host} vpc={vpc} peer={peer}");
        if let Some(imds) = &self.imds {
            println!(
                "lab: metadata server at {} lists {METADATA_ADDR} for {}, which the host lacks",
                imds.url(),
                self.secondary.name
            );
        }
        for e in &self.topo.spec.enis {
            let v6: Vec<String> = e.v6.iter().map(|a| a.to_string()).collect();
            let v4: Vec<String> = e.v4.iter().map(|a| a.to_string()).collect();
            println!(
                "lab:   {} {} {} {}",
                e.name,
                e.mac,
                v4.join(","),
                if self.topo.spec.ipv6 {
                    v6.join(",")
                } else {
                    String::new()
                }
            );
        }
    }

    /// Everything enipin could touch in the host, for the comparisons after detach.
    fn snapshot(&self) -> Result<Snapshot> {
        Snapshot::take(
            self.topo.host(),
            &self.topo.eni_names(),
            self.dirs.pins.path(),
        )
    }

    /// `enipin ARGS` in the host namespace on the lab's directories, its output added to the
    /// transcript: (succeeded, summary).
    fn enipin(&mut self, args: &[&str]) -> Result<(bool, String)> {
        check_cancel()?;
        let ns = self.topo.host().name();
        let cmd = enipin_command(&self.opts.bin, ns, &self.dirs.paths(), args);
        let shown = format!("$ enipin --netns {ns} {}", args.join(" "));
        let out = run_bounded(cmd, Duration::from_secs(30))?;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let _ = write!(self.r.transcript, "{shown}\n{stdout}{stderr}");
        println!("{shown}\n{stdout}{stderr}");
        let last_err = stderr.lines().last().unwrap_or("").trim().to_string();
        let summary = if out.status.success() {
            "exit 0".to_string()
        } else {
            format!("{}: {last_err}", out.status)
        };
        Ok((out.status.success(), summary))
    }

    /// Steps 1 and 2, the seed's observations: the primary answers, the secondary's reply leaves
    /// by the primary's ENI with the secondary's source and the vpc drops it. Returns the drops
    /// counted after step 2.
    fn before(&mut self) -> Result<Drops> {
        let (primary, secondary) = (&self.primary, &self.secondary);
        let (p4, s4) = (&self.p4, &self.s4);
        let ok = ping(self.topo.peer(), p4)?;
        self.r.push(
            1,
            "ping-primary-before",
            format!("peer -> {p4} ({}, primary)", primary.name),
            "replies",
            ok,
            replies(ok),
        );
        let before = self.topo.drops()?;
        let ok2 = ping(self.topo.peer(), s4)?;
        let after = self.topo.drops()?;
        let grown = after
            .eni(&primary.name)
            .ip
            .saturating_sub(before.eni(&primary.name).ip);
        self.r.push(
            2,
            "ping-secondary-before",
            format!("peer -> {s4} ({}, secondary)", secondary.name),
            "no reply; vpc drops",
            !ok2 && grown > 0,
            format!(
                "{}; vpc dropped {grown} leaving {} with a foreign src IPv4",
                replies(ok2),
                primary.name
            ),
        );
        Ok(after)
    }

    /// Step 3: attach, then both addresses (and families) answer, with no new source drops
    /// since `drops` (counted before).
    fn attach(&mut self, drops: &Drops) -> Result<()> {
        let (ok, res) = self.enipin(&["attach"])?;
        self.r
            .push(3, "attach", "enipin attach".into(), "exit 0", ok, res);
        let (primary, secondary) = (&self.primary, &self.secondary);
        let mut targets = vec![
            ("primary", primary, self.p4.clone()),
            ("secondary", secondary, self.s4.clone()),
        ];
        if self.topo.spec.ipv6 {
            for (role, eni) in [("primary", primary), ("secondary", secondary)] {
                if let Some(a) = eni.v6.first() {
                    targets.push((role, eni, a.to_string()));
                }
            }
        }
        for (role, eni, addr) in targets {
            let ok = ping(self.topo.peer(), &addr)?;
            let v = if addr.contains(':') { "6" } else { "" };
            let key = format!("ping{v}-{role}-after");
            self.r.push(
                3,
                &key,
                format!("peer -> {addr} ({}, {role})", eni.name),
                "replies",
                ok,
                replies(ok),
            );
        }
        let drops_attached = self.topo.drops()?;
        let new_drops: u64 = self
            .topo
            .spec
            .enis
            .iter()
            .map(|e| {
                drops_attached
                    .eni(&e.name)
                    .ip
                    .saturating_sub(drops.eni(&e.name).ip)
            })
            .sum();
        self.r.push(
            3,
            "no-drops-after",
            "vpc IPv4 source drops while attached".into(),
            "0 new",
            new_drops == 0,
            format!("{new_drops} new"),
        );
        Ok(())
    }

    /// Step 4: enipin's own view.
    fn view(&mut self) -> Result<()> {
        let (ok, res) = self.enipin(&["status"])?;
        self.r
            .push(4, "status", "enipin status".into(), "exit 0", ok, res);
        let (ok, res) = self.enipin(&["stats"])?;
        self.r
            .push(4, "stats", "enipin stats".into(), "exit 0", ok, res);
        Ok(())
    }

    /// Step 5: detach leaves the host as `snap_before` found it.
    fn detach(&mut self, snap_before: &Snapshot) -> Result<()> {
        let (ok, res) = self.enipin(&["detach"])?;
        self.r
            .push(5, "detach", "enipin detach".into(), "exit 0", ok, res);
        let (ok, res) = residue(snap_before, &self.snapshot()?, &mut self.r.residue);
        self.r.push(
            5,
            "residue",
            "rules, routes, tc, pins, sysctls vs before".into(),
            "identical",
            ok,
            res,
        );
        Ok(())
    }

    /// Step 5 again with the second line of defence alone: no rules, the TC program redirects
    /// the reply that the main table sends out of the wrong ENI onto its owner; then detach.
    fn ebpf_only(&mut self, snap_before: &Snapshot) -> Result<()> {
        let (ok, res) = self.enipin(&["attach", "--no-rules"])?;
        self.r.push(
            5,
            "attach-ebpf-only",
            "enipin attach --no-rules (eBPF only)".into(),
            "exit 0",
            ok,
            res,
        );
        let primary = &self.primary.name;
        let before = self.topo.drops()?;
        let primary_ifindex = self.topo.host().ifindex(primary)?;
        let fixed_before = self.misrouted(primary_ifindex).unwrap_or(0);
        let ok = ping(self.topo.peer(), &self.s4)?;
        let new = self
            .topo
            .drops()?
            .eni(primary)
            .ip
            .saturating_sub(before.eni(primary).ip);
        let fixed = self
            .misrouted(primary_ifindex)
            .unwrap_or(0)
            .saturating_sub(fixed_before);
        let what = format!(
            "peer -> {} ({}, redirected by TC)",
            self.s4, self.secondary.name
        );
        self.r.push(
            5,
            "ping-secondary-ebpf-only",
            what,
            "replies; 0 drops; redirected",
            ok && new == 0 && fixed > 0,
            format!(
                "{}; {new} new drops; {fixed} redirected off {primary}",
                replies(ok),
            ),
        );
        let (stats_ok, _) = self.enipin(&["stats"])?;
        let (detach_ok, res) = self.enipin(&["detach"])?;
        let mut left = Vec::new();
        let (clean, res2) = residue(snap_before, &self.snapshot()?, &mut left);
        self.r.residue.extend(left);
        let res = if detach_ok { res2 } else { res };
        self.r.push(
            5,
            "detach-ebpf-only",
            "enipin stats; detach; dumps vs before".into(),
            "identical",
            stats_ok && detach_ok && clean,
            res,
        );
        Ok(())
    }

    /// The datapath's own count of what it fixed: replies leaving the primary (`primary_ifindex`)
    /// with the secondary's source, redirected. Read from the pinned map (pins are not per
    /// namespace).
    fn misrouted(&self, primary_ifindex: u32) -> Result<u64> {
        Ok(crate::datapath::counters(&self.dirs.paths())?
            .into_iter()
            .find(|(i, _)| *i == primary_ifindex)
            .map_or(0, |(_, c)| c.misrouted_packets))
    }

    /// Step 6 of a kept lab: enipin attached again, everything left in place for exploration,
    /// and how to remove it.
    fn keep(&mut self) -> Result<()> {
        let (ok, res) = self.enipin(&["attach"])?;
        self.r.push(
            6,
            "reattach",
            "enipin attach (kept lab)".into(),
            "exit 0",
            ok,
            res,
        );
        self.topo.keep();
        self.dirs.keep();
        let [host, vpc, peer] = self.topo.names();
        let (pins, state) = (&self.dirs.pins, &self.dirs.state);
        let p = format!(
            "--pin-dir {} --state-dir {}",
            pins.path().display(),
            state.path().display()
        );
        println!(
            "\nlab kept. Enter a namespace:\n  ip netns exec {host} bash    # eth0, eth1, enipin attached\n  \
             ip netns exec {peer} bash    # the other instance\n  \
             ip netns exec {vpc} nft list table bridge {}    # the vpc's checks and drops\n\
             Remove it:\n  {} --netns {host} {p} detach\n  ip netns delete {host}; ip netns delete {vpc}; \
             ip netns delete {peer}\n  umount {}; rmdir {}; rm -rf {}",
            super::topology::NFT_TABLE,
            self.opts.bin.display(),
            pins.mount().display(),
            pins.mount().display(),
            state.path().display()
        );
        Ok(())
    }
}
