//! Dumps of everything enipin may touch in a namespace, for "nothing left behind" checks: take one
//! before attach, one after detach, and compare.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, Result};

use crate::lab::testbed::Netns;

/// `ip rule` and `ip -6 rule`.
pub fn rules(ns: &Netns) -> Result<String> {
    Ok(ns.ip(&["-4", "rule"])? + &ns.ip(&["-6", "rule"])?)
}

/// Routes of every table, both families.
pub fn routes(ns: &Netns) -> Result<String> {
    Ok(ns.ip(&["-4", "route", "show", "table", "all"])?
        + &ns.ip(&["-6", "route", "show", "table", "all"])?)
}

/// `key=value` for every IPv4 and IPv6 sysctl of `conf/<scope>` (an interface, `all`, `default`).
pub fn sysctls(ns: &Netns, scope: &str) -> Result<String> {
    // One grep, not a process per key (a snapshot reads hundreds): it prints path:value and,
    // with -s, skips the unreadable keys (stable_secret) in silence.
    ns.sh(&format!(
        "grep -s -H '' /proc/sys/net/ipv4/conf/{scope}/* /proc/sys/net/ipv6/conf/{scope}/* \
         | sed 's|^/proc/sys/||; s|:|=|'"
    ))
}

/// qdiscs and TC filters (netlink attachments) on an interface, and its TCX programs.
pub fn tc(ns: &Netns, ifname: &str) -> Result<String> {
    let mut out = ns.sh(&format!(
        "tc qdisc show dev {ifname}; tc filter show dev {ifname} ingress; tc filter show dev {ifname} egress"
    ))?;
    // Kernels before 6.6 have no TCX: the same error text lands in both dumps.
    match tcx_programs(ns, ifname) {
        Ok(hooks) => {
            for (dir, progs) in hooks {
                out += &format!("tcx {dir}: {}\n", progs.join(" "));
            }
        }
        Err(e) => out += &format!("tcx: {e:#}\n"),
    }
    Ok(out)
}

/// Names of the programs attached to the interface's TCX ingress and egress hooks.
pub fn tcx_programs(ns: &Netns, ifname: &str) -> Result<Vec<(&'static str, Vec<String>)>> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let ifindex = ns.ifindex(ifname)?;
    let (name, ifname) = (ns.name().to_string(), ifname.to_string());
    // setns only moves the calling thread: query from a thread of its own.
    std::thread::spawn(move || -> Result<_> {
        crate::kernel::netns::enter(&name)?;
        let mut all = Vec::new();
        for (dir, at) in [
            ("ingress", TcAttachType::Ingress),
            ("egress", TcAttachType::Egress),
        ] {
            let (_revision, progs) = SchedClassifier::query_tcx(ifindex, at)
                .with_context(|| format!("querying TCX {dir} programs of {ifname}"))?;
            let names = progs
                .iter()
                .map(|p| p.name_as_str().unwrap_or("?").to_string())
                .collect();
            all.push((dir, names));
        }
        Ok(all)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("TCX query thread panicked"))?
}

/// Every path below `dir` (pins and directories); empty when `dir` does not exist.
pub fn pins(dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let path = e?.path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            found.push(path.display().to_string());
        }
    }
    found.sort();
    Ok(found)
}

/// Named dumps of a namespace's rules, routes, and per-interface sysctls and TC state, plus the
/// pins under a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Section name (`rules`, `routes`, `sysctls <iface>`, `tc <iface>`, ...) → its dump.
    pub sections: BTreeMap<String, String>,
}

impl Snapshot {
    /// Dumps `ns` and the interfaces `ifaces` in it, and the pins under `pin_dir`.
    pub fn take(ns: &Netns, ifaces: &[&str], pin_dir: &Path) -> Result<Self> {
        let mut sections = BTreeMap::new();
        sections.insert("rules".to_string(), rules(ns)?);
        sections.insert("routes".to_string(), routes(ns)?);
        for scope in ["all", "default"] {
            sections.insert(format!("sysctls {scope}"), sysctls(ns, scope)?);
        }
        for i in ifaces {
            sections.insert(format!("sysctls {i}"), sysctls(ns, i)?);
            sections.insert(format!("tc {i}"), tc(ns, i)?);
        }
        sections.insert(
            format!("pins {}", pin_dir.display()),
            pins(pin_dir)?.join("\n"),
        );
        Ok(Self { sections })
    }

    /// Lines that differ, per section: `section: -line` (only before) / `+line` (only after).
    pub fn diff(&self, after: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (name, before) in &self.sections {
            let after = after.sections.get(name).map(String::as_str).unwrap_or("");
            let (b, a): (Vec<&str>, Vec<&str>) =
                (before.lines().collect(), after.lines().collect());
            out.extend(
                b.iter()
                    .filter(|l| !a.contains(l))
                    .map(|l| format!("{name}: -{l}")),
            );
            out.extend(
                a.iter()
                    .filter(|l| !b.contains(l))
                    .map(|l| format!("{name}: +{l}")),
            );
        }
        out
    }
}
