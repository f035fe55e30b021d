//! `enipin doctor`: what on this host will fight enipin, found before it does. It only reads
//! (netlink dumps, TCX queries, /proc/sys, configuration files) and changes nothing, ever.
//!
//! One module per check family, each a pure function from what was read to [`Finding`]s (so
//! most are unit-tested without root), and a `read` step beside it:
//! - `networkd`: systemd-networkd running or enabled, and its effective
//!   `ManageForeignRoutingPolicyRules` / `ManageForeignRoutes` (networkd.conf and drop-ins);
//!   `networkd_links`: the managed interfaces' `.network` files and their `KeepConfiguration=`;
//! - `cloud_agents`: nm-cloud-setup, amazon-ec2-net-utils, cloud-init's netplan policy routing,
//!   SUSE cloud-netconfig: which interfaces each manages, whether its rules sit above enipin's;
//! - `rules`: anyone's rules at enipin's priorities or tables, rules above enipin's for its
//!   addresses, the tables 0 and 253-255, systemd's metadata-service rules;
//! - `sysctl`: `rp_filter` and the ARP knobs now, and at the next boot (sysctl.d);
//! - `tc`: other programs at the managed interfaces' TCX and clsact hooks, in their order;
//! - `kernel`: bpffs at the pin directory, and the datapath's path on this kernel (probed): attach
//!   (TCX or clsact), `bpf_redirect_neigh`, the MTU check, the owner tables' swap, the next hop;
//! - `macs`: interfaces sharing a MAC, and which one a selection by MAC picks;
//! - `connmark`: `nft` for `--connmark`, nftables DNAT to a secondary's address that connmark
//!   would route, and other rules using the bits of connmark's mask.
//!
//! `host` reads the files as systemd does (precedence, drop-ins, enablement, processes).

mod cloud;
mod cloud_agents;
mod cni;
mod connmark;
mod host;
mod kernel;
mod macs;
pub(crate) mod mtu;
mod networkd;
mod networkd_conf;
mod networkd_links;
mod rules;
mod sysctl;
mod tc;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use anyhow::Result;
use serde::Serialize;

use crate::{
    engine::snapshot::Snapshot,
    kernel::caps::{self, Cap},
    kernel::netns,
    routing::select::{self, Selection},
    settings::config::{Config, Paths},
};

pub(crate) use networkd_conf::{
    DROP_IN_BODY as NETWORKD_DROP_IN_BODY, DROP_IN_PATH as NETWORKD_DROP_IN_PATH,
};

/// The name of the `.network` file systemd-networkd applies to each interface `(name, mac)`
/// under `root`, found as `doctor` finds it; `None`: no file matches, networkd leaves it alone.
pub(crate) fn networkd_link_files(
    root: &Path,
    ifaces: &[(String, crate::model::MacAddr)],
) -> Vec<Option<String>> {
    networkd_links::read(root, ifaces)
        .into_iter()
        .map(|l| Some(l.file?.file_name()?.to_string_lossy().into_owned()))
        .collect()
}

/// How much a finding matters to enipin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Nothing to do.
    Ok,
    /// Works, with a cost or a risk the operator should know (a gap at boot, two owners).
    Warning,
    /// Will break, undo or override what enipin installs.
    Conflict,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Conflict => "conflict",
        })
    }
}

/// One thing found: which check, how bad, what it means for enipin, and the fix (the exact
/// drop-in or command), if there is anything to fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check and its subject: `networkd`, `sysctl eth1 rp_filter`, `tc eth1`.
    pub check: String,
    /// ok, warning or conflict.
    pub severity: Severity,
    /// What it means for enipin.
    pub meaning: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub(crate) fn new(check: impl Into<String>, severity: Severity, meaning: String) -> Self {
        Self {
            check: check.into(),
            severity,
            meaning,
            fix: None,
        }
    }

    pub(crate) fn ok(check: impl Into<String>, meaning: String) -> Self {
        Self::new(check, Severity::Ok, meaning)
    }

    pub(crate) fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Every finding, in check order.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The findings.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The findings of `severity`.
    pub fn of(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }
}

/// One line per finding (`conflict networkd: ...`), its fix indented below it, and a summary.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for x in &self.findings {
            writeln!(f, "{:<8} {}: {}", x.severity, x.check, x.meaning)?;
            if let Some(fix) = &x.fix {
                let mut lines = fix.lines();
                if let Some(first) = lines.next() {
                    writeln!(f, "         fix: {first}")?;
                }
                for l in lines {
                    writeln!(f, "              {l}")?;
                }
            }
        }
        let n = |s| self.of(s).count();
        writeln!(
            f,
            "{} ok, {} warning(s), {} conflict(s)",
            n(Severity::Ok),
            n(Severity::Warning),
            n(Severity::Conflict)
        )
    }
}

/// Where the host's configuration is read: `/`, or `--root DIR`.
#[derive(Clone, Debug)]
pub struct Root {
    dir: PathBuf,
    given: bool,
}

impl Root {
    /// `--root DIR`, or `/` when `None`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        match dir {
            Some(dir) => Self { dir, given: true },
            None => Self {
                dir: PathBuf::from("/"),
                given: false,
            },
        }
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

/// `enipin doctor [--json]`: prints the report; returns whether it holds no conflict.
pub async fn doctor(cfg: &Config, paths: &Paths, root: &Root, json: bool) -> Result<bool> {
    // Without them its reads of the pins and the interfaces' state fail, each a warning: as
    // nobody, 13 warnings and exit 0.
    caps::require("enipin doctor", Cap::needed(true))?;
    let report = examine(cfg, paths, root).await?;
    if json {
        println!("{}", crate::model::report::versioned(&report)?);
    } else {
        print!("{report}");
    }
    Ok(report.of(Severity::Conflict).next().is_none())
}

/// What `attach` and `watch` print before they start: the conflicts doctor would report, once,
/// as warnings on stderr, from the caller's snapshot (no second read of the kernel). They never
/// refuse because of them, nor because doctor failed.
pub(crate) async fn warn_conflicts(snap: &Snapshot, cfg: &Config, paths: &Paths) {
    match examine_with(snap, cfg, paths, &Root::new(None)).await {
        Ok(report) => {
            for c in report.of(Severity::Conflict) {
                let fix = c
                    .fix
                    .as_deref()
                    .map(|f| format!(" (fix: {})", f.replace('\n', " / ")));
                tracing::warn!(
                    "doctor: {}: {}{}",
                    c.check,
                    c.meaning,
                    fix.unwrap_or_default()
                );
            }
        }
        Err(e) => tracing::warn!("`enipin doctor`'s checks failed: {e:#}"),
    }
}

/// Reads the host and runs every check.
pub async fn examine(cfg: &Config, paths: &Paths, root: &Root) -> Result<Report> {
    examine_with(&Snapshot::take().await?, cfg, paths, root).await
}

/// Runs every check on `snap` and what else the host has (files, processes, tc, bpffs).
async fn examine_with(snap: &Snapshot, cfg: &Config, paths: &Paths, root: &Root) -> Result<Report> {
    let d = &snap.discovery;
    let mut findings = Vec::new();
    let managed = match select::select_named(d, cfg, select::choose(d, cfg)) {
        Ok((Selection::Managed(m), _)) => m,
        Ok((Selection::NothingToDo(why), _)) => {
            findings.push(Finding::ok(
                "selection",
                format!("nothing to manage: {why}"),
            ));
            Vec::new()
        }
        Err(e) => {
            findings.push(
                Finding::new("selection", Severity::Conflict, format!("{e:#}"))
                    .fix("see the message; `enipin attach` refuses until it is fixed"),
            );
            Vec::new()
        }
    };
    let ns = netns::current_id()?;
    let procs = host::processes(root.path());
    // Boot-time configuration (enabled units, sysctl.d) is the host namespace's: checked in it,
    // or when a root is given. PID 1's namespace may be unreadable (a container): checked then.
    let boot =
        root.given || host::netns_inode(Path::new("/proc/1/ns/net")).is_none_or(|init| init == ns);

    let ifaces: Vec<_> = managed.iter().map(|m| (m.name.clone(), m.mac)).collect();
    findings.extend(networkd::check(&networkd::read(
        root.path(),
        &procs,
        ns,
        boot,
        &ifaces,
    )));
    let raw_rules = &d.rules_seen;
    findings.extend(cloud_agents::check(
        &cloud_agents::read(root.path(), &procs, ns, boot),
        raw_rules,
        d,
        &managed,
        cfg,
    ));
    findings.extend(rules::check(raw_rules, d, &managed, cfg));
    findings.extend(sysctl::check(
        &managed,
        &sysctl::now(&managed),
        boot.then(|| sysctl::boot(root.path())).as_ref(),
    ));
    findings.extend(tc::check_all(&tc::read(&snap.nl, &managed).await?));
    findings.extend(kernel::check(&kernel::read(&paths.pin_dir)));
    findings.extend(macs::check(&d.interfaces, cfg));
    findings.extend(mtu::check(&managed, cfg.rules));
    findings.extend(cni::check(d, root.path(), cfg));
    findings.push(cloud::check(root.path(), cfg));
    findings.extend(connmark::check(&connmark::read(), d, &managed, cfg));
    Ok(Report { findings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_prints_one_line_per_finding_with_its_fix_below() {
        let r = Report {
            findings: vec![
                Finding::ok("kernel tcx", "the kernel has TCX".into()),
                Finding::new("networkd", Severity::Conflict, "it deletes rules".into())
                    .fix("/etc/x.conf:\n[Network]\nA=no"),
            ],
        };
        assert_eq!(
            r.to_string(),
            "ok       kernel tcx: the kernel has TCX\n\
             conflict networkd: it deletes rules\n\
             \x20        fix: /etc/x.conf:\n\
             \x20             [Network]\n\
             \x20             A=no\n\
             1 ok, 0 warning(s), 1 conflict(s)\n"
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["findings"][1]["severity"], "conflict");
        assert_eq!(v["findings"][0].get("fix"), None);
    }
}
