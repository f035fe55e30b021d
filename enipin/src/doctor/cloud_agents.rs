//! The cloud agents that manage the same interfaces with their own rules and tables:
//! NetworkManager's nm-cloud-setup (priorities and tables 30200+), amazon-ec2-net-utils
//! (`policy-routes@IFACE`, tables and priorities 10000 + 100 * card + device), cloud-init's
//! policy routing in netplan files, SUSE's cloud-netconfig (priorities 10000-10999). For each:
//! whether it is there (unit enabled, process, files, or its numbers seen over netlink), which
//! interfaces it manages, and whether its rules sit above enipin's (decide first).

use std::{collections::BTreeSet, ops::RangeInclusive, path::Path};

use serde_norway::Value;

use super::{Finding, Severity, host, rules::RuleView};
use crate::{
    model::{ManagedInterface, discovery::Discovery},
    routing::plan,
    settings::config::Config,
};

/// nm-cloud-setup: 30200 + i and 30400 + i for rules and tables, 30350 for its `lookup main`.
const NM_NUMBERS: RangeInclusive<u32> = 30200..=30999;
/// amazon-ec2-net-utils (v2) and SUSE cloud-netconfig.
const EC2_NUMBERS: RangeInclusive<u32> = 10000..=10999;
const NETPLAN_DIRS: [&str; 4] = [
    "/run/netplan",
    "/etc/netplan",
    "/lib/netplan",
    "/usr/lib/netplan",
];

/// One `routing-policy` entry of a netplan file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NetplanRule {
    pub file: String,
    pub iface: String,
    pub priority: Option<u32>,
    pub table: Option<u32>,
}

/// What was read of the agents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Agents {
    pub boot_checked: bool,
    pub nm_running: Option<u32>,
    /// nm-cloud-setup's units pulled in at boot.
    pub nm_cloud_setup: Vec<String>,
    /// Its providers switched on in its unit's environment (`NM_CLOUD_SETUP_EC2=yes`).
    pub nm_providers: Vec<String>,
    /// `policy-routes@.service` installed (amazon-ec2-net-utils v2), and its instances.
    pub ec2_installed: bool,
    pub ec2_instances: Vec<String>,
    pub netplan: Vec<NetplanRule>,
    /// cloud-netconfig installed, enabled, and the ifcfg files it manages.
    pub suse_installed: bool,
    pub suse_enabled: bool,
    pub suse_ifaces: Vec<String>,
}

pub(super) fn read(root: &Path, procs: &[host::Process], ns: u64, boot: bool) -> Agents {
    let mut a = Agents {
        boot_checked: boot,
        nm_running: host::running(procs, "NetworkManager", ns),
        ..Agents::default()
    };
    if !boot {
        return a;
    }
    for unit in ["nm-cloud-setup.timer", "nm-cloud-setup.service"] {
        a.nm_cloud_setup
            .extend(host::wanted(root, unit).into_iter().map(|(n, _)| n));
    }
    a.nm_providers = nm_providers(root);
    a.ec2_installed = host::unit_file(root, "policy-routes@.service").is_some();
    a.ec2_instances = host::wanted(root, "policy-routes@.service")
        .iter()
        .filter_map(|(n, _)| host::instance(n).map(str::to_owned))
        .collect();
    a.netplan = netplan(root);
    a.suse_installed = ["cloud-netconfig.service", "cloud-netconfig.timer"]
        .iter()
        .any(|u| host::unit_file(root, u).is_some());
    a.suse_enabled = ["cloud-netconfig.service", "cloud-netconfig.timer"]
        .iter()
        .any(|u| !host::wanted(root, u).is_empty());
    a.suse_ifaces = suse_ifaces(root);
    a
}

/// `Environment=NM_CLOUD_SETUP_EC2=yes` (or AZURE, GCP, ALIYUN, OCI) in nm-cloud-setup.service's
/// drop-ins: without one, nm-cloud-setup does nothing.
fn nm_providers(root: &Path) -> Vec<String> {
    let dirs = [
        "/etc/systemd/system/nm-cloud-setup.service.d",
        "/run/systemd/system/nm-cloud-setup.service.d",
        "/usr/lib/systemd/system/nm-cloud-setup.service.d",
    ];
    let mut out = BTreeSet::new();
    for f in host::config_files(root, &dirs, ".conf") {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for word in text.split_whitespace().flat_map(|w| w.split(['"', '\''])) {
            let w = word.trim_start_matches("Environment=");
            if let Some((k, v)) = w.split_once('=')
                && let Some(p) = k.strip_prefix("NM_CLOUD_SETUP_")
                && super::networkd_conf::systemd_bool(v) == Some(true)
            {
                out.insert(p.to_owned());
            }
        }
    }
    out.into_iter().collect()
}

/// Every `routing-policy` entry of the netplan files, in netplan's order (by name; /run over
/// /etc over /lib for the same name).
pub(super) fn netplan(root: &Path) -> Vec<NetplanRule> {
    let mut out = Vec::new();
    for file in host::config_files(root, &NETPLAN_DIRS, ".yaml") {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(doc) = serde_norway::from_str::<Value>(&text) else {
            continue;
        };
        let Some(ethernets) = doc
            .get("network")
            .and_then(|n| n.get("ethernets"))
            .and_then(Value::as_mapping)
        else {
            continue;
        };
        for (id, eth) in ethernets {
            let iface = eth
                .get("set-name")
                .or(Some(id))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let policy = eth.get("routing-policy").and_then(Value::as_sequence);
            for p in policy.into_iter().flatten() {
                let num = |k: &str| p.get(k).and_then(Value::as_u64).map(|n| n as u32);
                out.push(NetplanRule {
                    file: file.display().to_string(),
                    iface: iface.clone(),
                    priority: num("priority"),
                    table: num("table"),
                });
            }
        }
    }
    out
}

/// `/etc/sysconfig/network/ifcfg-IFACE` files cloud-netconfig manages (all but those with
/// `CLOUD_NETCONFIG_MANAGE='no'`).
fn suse_ifaces(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(host::under(root, "/etc/sysconfig/network")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let iface = name.strip_prefix("ifcfg-")?.to_owned();
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let off = text.lines().any(|l| {
                l.trim()
                    .strip_prefix("CLOUD_NETCONFIG_MANAGE=")
                    .is_some_and(|v| {
                        super::networkd_conf::systemd_bool(v.trim_matches(['\'', '"']))
                            == Some(false)
                    })
            });
            (iface != "lo" && !off).then_some(iface)
        })
        .collect();
    out.sort();
    out
}

/// The interfaces that a set of rules' tables route through.
fn routed_by(rules: &[&RuleView], d: &Discovery) -> BTreeSet<String> {
    let tables: BTreeSet<u32> = rules.iter().map(|r| r.table).collect();
    d.routes
        .iter()
        .filter(|r| tables.contains(&r.route.table) && r.route.oif != 0)
        .filter_map(|r| d.interfaces.iter().find(|i| i.ifindex == r.route.oif))
        .map(|i| i.name.clone())
        .collect()
}

/// `priorities 10001-10002 above enipin's (20000)` / `below`.
fn placement(prios: &[u32], cfg: &Config) -> String {
    let (lo, hi) = (prios.iter().min(), prios.iter().max());
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return String::new();
    };
    let span = if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    };
    if *lo < cfg.priority {
        format!(
            "priorities {span} sit above enipin's ({}): they decide first",
            cfg.priority
        )
    } else {
        format!(
            "priorities {span} sit below enipin's ({}): enipin's decide first",
            cfg.priority
        )
    }
}

fn list(v: &BTreeSet<String>) -> String {
    if v.is_empty() {
        "no interface seen".to_owned()
    } else {
        v.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

pub(super) fn check(
    a: &Agents,
    rules: &[RuleView],
    d: &Discovery,
    managed: &[ManagedInterface],
    cfg: &Config,
) -> Vec<Finding> {
    let c = Ctx {
        a,
        rules,
        d,
        managed,
        cfg,
        ours: managed.iter().map(|m| m.name.clone()).collect(),
        boot_note: if a.boot_checked {
            ""
        } else {
            " (units not checked: not the host's namespace; pass --root /)"
        },
    };
    let mut out = vec![nm_cloud_setup(&c)];
    out.extend(ec2_and_suse(&c));
    out.extend(netplan_policies(&c));
    out
}

/// What each agent's check reads.
struct Ctx<'a> {
    a: &'a Agents,
    rules: &'a [RuleView],
    d: &'a Discovery,
    managed: &'a [ManagedInterface],
    cfg: &'a Config,
    /// The managed interfaces' names.
    ours: BTreeSet<String>,
    /// Said where units could not be checked.
    boot_note: &'static str,
}

impl Ctx<'_> {
    /// Someone else's rules in `range` (enipin's and the metadata service's left out).
    fn foreign(&self, range: &RangeInclusive<u32>) -> Vec<&RuleView> {
        self.rules
            .iter()
            .filter(|r| {
                range.contains(&r.priority)
                    && !r.is_imds()
                    && r.protocol != crate::model::RTPROT_ENIPIN
            })
            .collect()
    }
}

/// nm-cloud-setup: enabled for a provider, or its rules left behind.
fn nm_cloud_setup(c: &Ctx<'_>) -> Finding {
    let Ctx {
        a,
        d,
        managed,
        cfg,
        ours,
        boot_note,
        ..
    } = c;
    let nm_rules = c.foreign(&NM_NUMBERS);
    let nm_ifaces = routed_by(&nm_rules, d);
    let nm_active = !a.nm_cloud_setup.is_empty() && !a.nm_providers.is_empty();
    if nm_active || !nm_rules.is_empty() {
        let prios: Vec<u32> = nm_rules.iter().map(|r| r.priority).collect();
        let above = prios.iter().any(|p| *p < cfg.priority);
        Finding::new(
            "agents nm-cloud-setup",
            if above
                || nm_ifaces.iter().any(|i| ours.contains(i))
                || (nm_active && !managed.is_empty())
            {
                Severity::Conflict
            } else {
                Severity::Warning
            },
            format!(
                "nm-cloud-setup {}{}; {}{}: it re-applies its policy routing \
                 every 5 minutes (nm-cloud-setup.timer) and has deleted other agents' rules \
                 (amazon-eks-ami#1136)",
                if nm_active {
                    format!(
                        "is enabled ({}) for {}",
                        a.nm_cloud_setup.join(", "),
                        a.nm_providers.join(", ")
                    )
                } else {
                    "left its numbers".to_owned()
                },
                a.nm_running
                    .map(|p| format!(", NetworkManager runs (pid {p})"))
                    .unwrap_or_default(),
                if nm_rules.is_empty() {
                    "no rule of its numbers is installed yet".to_owned()
                } else {
                    format!("its rules route {}", list(&nm_ifaces))
                },
                if prios.is_empty() {
                    String::new()
                } else {
                    format!("; {}", placement(&prios, cfg))
                },
            ),
        )
        .fix(
            "one owner of the policy: `systemctl disable --now nm-cloud-setup.timer \
             nm-cloud-setup.service` (enipin's rules replace its), or keep it and run enipin with \
             --no-rules (eBPF only)",
        )
    } else {
        Finding::ok(
            "agents nm-cloud-setup",
            format!(
                "nm-cloud-setup is not enabled for a provider{boot_note}, and no rule has its \
                 numbers ({}-{}){}",
                NM_NUMBERS.start(),
                NM_NUMBERS.end(),
                a.nm_running
                    .map(|p| format!("; NetworkManager runs (pid {p}) and keeps others' rules"))
                    .unwrap_or_default()
            ),
        )
    }
}

/// amazon-ec2-net-utils and SUSE cloud-netconfig, which share the 10000s.
fn ec2_and_suse(c: &Ctx<'_>) -> Vec<Finding> {
    let Ctx {
        a,
        d,
        cfg,
        ours,
        boot_note,
        ..
    } = c;
    let mut out = Vec::new();
    let low = c.foreign(&EC2_NUMBERS);
    let owner = match (
        a.ec2_installed || !a.ec2_instances.is_empty(),
        a.suse_installed,
    ) {
        (true, false) => "amazon-ec2-net-utils",
        (false, true) => "SUSE cloud-netconfig",
        _ => "amazon-ec2-net-utils or SUSE cloud-netconfig",
    };
    let ec2_present = a.ec2_installed || !a.ec2_instances.is_empty();
    for (present, name, ifaces) in [
        (ec2_present, "amazon-ec2-net-utils", &a.ec2_instances),
        (a.suse_installed, "SUSE cloud-netconfig", &a.suse_ifaces),
    ] {
        let check = format!("agents {}", name.to_lowercase().replace(' ', "-"));
        if !present {
            out.push(Finding::ok(
                check,
                format!("{name} is not installed{boot_note}"),
            ));
            continue;
        }
        // The rules in the 10000s are this agent's when it is the only one of the two here.
        let its_rules: &[&RuleView] = if owner == name { &low } else { &[] };
        let mut managed_by: BTreeSet<String> = ifaces.iter().cloned().collect();
        managed_by.extend(routed_by(its_rules, d));
        let prios: Vec<u32> = its_rules.iter().map(|r| r.priority).collect();
        let shared: Vec<_> = managed_by.intersection(ours).cloned().collect();
        let enabled = if name == "SUSE cloud-netconfig" && a.suse_enabled {
            " and enabled"
        } else if name == "amazon-ec2-net-utils" && !a.ec2_instances.is_empty() {
            " (policy-routes@ instances pulled in)"
        } else {
            ""
        };
        let prios_text = if prios.is_empty() {
            String::new()
        } else {
            format!("; its rules' {}", placement(&prios, cfg))
        };
        let shared_text = if shared.is_empty() {
            String::new()
        } else {
            format!(
                "; {} are enipin's too: two owners of one policy (its networkd configuration \
                 deletes foreign rules: see the networkd check)",
                shared.join(", ")
            )
        };
        out.push(
            Finding::new(
                check,
                if shared.is_empty() {
                    Severity::Ok
                } else {
                    Severity::Warning
                },
                format!(
                    "{name} is installed{enabled}; it manages {}{prios_text}{shared_text}",
                    list(&managed_by)
                ),
            )
            .fix(format!(
                "one owner: run enipin with --no-rules (eBPF only) beside {name}, or remove {name}"
            )),
        );
    }
    if !low.is_empty() && owner.contains(" or ") {
        let prios: Vec<u32> = low.iter().map(|r| r.priority).collect();
        out.push(Finding::new(
            "agents",
            Severity::Warning,
            format!(
                "rules with the numbers of {owner} ({}) route {}; {}",
                low.iter().map(|r| r.text()).collect::<Vec<_>>().join(", "),
                list(&routed_by(&low, d)),
                placement(&prios, cfg)
            ),
        ));
    }
    out
}

/// netplan's routing-policy, by file (cloud-init writes 50-cloud-init.yaml).
fn netplan_policies(c: &Ctx<'_>) -> Vec<Finding> {
    let Ctx {
        a,
        managed,
        cfg,
        ours,
        boot_note,
        ..
    } = c;
    let mut out = Vec::new();
    let mut by_file: Vec<(&str, Vec<&NetplanRule>)> = Vec::new();
    for r in &a.netplan {
        match by_file.iter_mut().find(|(f, _)| *f == r.file) {
            Some((_, v)) => v.push(r),
            None => by_file.push((&r.file, vec![r])),
        }
    }
    if by_file.is_empty() {
        out.push(Finding::ok(
            "agents netplan",
            format!("no netplan file has a routing-policy{boot_note}"),
        ));
    }
    let tables: BTreeSet<u32> = managed.iter().map(|m| m.table).collect();
    let prio_range = plan::priorities(cfg);
    for (file, rs) in by_file {
        let ifaces: BTreeSet<String> = rs.iter().map(|r| r.iface.clone()).collect();
        let clash = rs.iter().any(|r| {
            r.priority.is_some_and(|p| prio_range.contains(&p))
                || r.table.is_some_and(|t| tables.contains(&t))
        });
        let prios: Vec<u32> = rs.iter().filter_map(|r| r.priority).collect();
        let who = if file.contains("cloud-init") {
            " (cloud-init's)"
        } else {
            ""
        };
        let shared: Vec<_> = ifaces.intersection(ours).cloned().collect();
        out.push(
            Finding::new(
                "agents netplan",
                if clash {
                    Severity::Conflict
                } else if shared.is_empty() {
                    Severity::Ok
                } else {
                    Severity::Warning
                },
                format!(
                    "{file}{who} gives {} a routing-policy (tables {:?}){}{}",
                    list(&ifaces),
                    rs.iter().filter_map(|r| r.table).collect::<BTreeSet<_>>(),
                    if prios.is_empty() { String::new() } else { format!("; {}", placement(&prios, cfg)) },
                    if clash {
                        format!(
                            "; it uses enipin's priorities {}-{} or tables {tables:?}",
                            prio_range.start(),
                            prio_range.end()
                        )
                    } else if shared.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; {} {} enipin's too, and `netplan apply` deletes the rules it did \
                             not write",
                            shared.join(", "),
                            if shared.len() == 1 { "is" } else { "are" }
                        )
                    }
                ),
            )
            .fix(if clash {
                "choose another --priority / --table-base for enipin".to_owned()
            } else {
                "one owner: drop the routing-policy (for cloud-init: network: {config: disabled} in \
                 /etc/cloud/cloud.cfg.d/99-enipin.cfg, then keep the addresses), or run enipin \
                 with --no-rules; keep networkd off foreign rules (the networkd check's drop-in)"
                    .to_owned()
            }),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{
        super::{
            host::scratch::Root,
            rules::tests::{lab, rule},
        },
        *,
    };
    use crate::model::route::{InstalledRoute, Route};

    fn route(table: u32, oif: u32) -> InstalledRoute {
        InstalledRoute {
            protocol: 4,
            route: Route {
                table,
                dst: crate::model::Cidr::any(false),
                gateway: None,
                oif,
                dev: String::new(),
                src: None,
                scope_link: false,
                metric: 0,
            },
        }
    }

    #[test]
    fn a_clean_host_has_no_agent() {
        let r = Root::new("agents-clean");
        let (d, m) = lab();
        let a = read(r.path(), &[], 1, true);
        let f = check(&a, &[], &d, &m, &Config::default());
        assert!(f.iter().all(|f| f.severity == Severity::Ok), "{f:?}");
        assert_eq!(f.len(), 4, "{f:?}");
    }

    #[test]
    fn nm_cloud_setup_enabled_for_ec2_on_enipins_interfaces_is_a_conflict() {
        let r = Root::new("agents-nm");
        r.link(
            "/etc/systemd/system/timers.target.wants/nm-cloud-setup.timer",
            "/usr/lib/systemd/system/nm-cloud-setup.timer",
        )
        .write(
            "/etc/systemd/system/nm-cloud-setup.service.d/10-ec2.conf",
            "[Service]\nEnvironment=NM_CLOUD_SETUP_EC2=yes\n",
        );
        let (mut d, m) = lab();
        d.routes.push(route(30400, 3));
        let rules = [rule(30400, Some("198.18.0.11/32"), 30400, 3)];
        let a = read(r.path(), &[], 1, true);
        assert_eq!(a.nm_providers, ["EC2"]);
        let f = check(&a, &rules, &d, &m, &Config::default());
        let nm = &f[0];
        assert_eq!(nm.severity, Severity::Conflict, "{f:?}");
        assert!(nm.meaning.contains("route eth1"), "{}", nm.meaning);
        assert!(
            nm.meaning.contains("30400 sit below enipin's"),
            "{}",
            nm.meaning
        );
        assert!(
            nm.fix
                .as_deref()
                .unwrap()
                .contains("systemctl disable --now nm-cloud-setup.timer")
        );
    }

    #[test]
    fn ec2_net_utils_by_its_units_and_numbers() {
        let r = Root::new("agents-ec2");
        r.write("/usr/lib/systemd/system/policy-routes@.service", "[Service]\n").link(
            "/run/systemd/system/sys-subsystem-net-devices-eth1.device.wants/policy-routes@eth1.service",
            "/usr/lib/systemd/system/policy-routes@.service",
        );
        let (mut d, m) = lab();
        d.routes.push(route(10001, 2));
        let rules = [rule(10001, Some("198.18.0.10/32"), 10001, 4)];
        let a = read(r.path(), &[], 1, true);
        let f = check(&a, &rules, &d, &m, &Config::default());
        let ec2 = f
            .iter()
            .find(|f| f.check == "agents amazon-ec2-net-utils")
            .unwrap();
        assert_eq!(ec2.severity, Severity::Warning, "{f:?}");
        assert!(
            ec2.meaning.contains("manages eth0, eth1"),
            "{}",
            ec2.meaning
        );
        assert!(
            ec2.meaning.contains("10001 sit above enipin's (20000)"),
            "{}",
            ec2.meaning
        );
        let suse = f
            .iter()
            .find(|f| f.check == "agents suse-cloud-netconfig")
            .unwrap();
        assert_eq!(suse.severity, Severity::Ok);
    }

    /// With `--connmark`, a netplan policy at P-1 takes the priority of enipin's fwmark rules.
    #[test]
    fn with_connmark_a_netplan_policy_just_below_enipins_priority_clashes() {
        let r = Root::new("agents-netplan-connmark");
        r.write(
            "/etc/netplan/60-x.yaml",
            "network:\n  ethernets:\n    eth9:\n      routing-policy:\n        - {from: 198.18.9.9, table: 900, priority: 19999}\n",
        );
        let (d, m) = lab();
        let a = read(r.path(), &[], 1, true);
        let severity = |cfg: &Config| {
            let f = check(&a, &[], &d, &m, cfg);
            f.into_iter()
                .find(|f| f.check == "agents netplan")
                .map(|f| (f.severity, f.meaning))
                .unwrap()
        };
        let cfg = Config {
            connmark: true,
            ..Config::default()
        };
        let (sev, meaning) = severity(&cfg);
        assert_eq!(sev, Severity::Conflict, "{meaning}");
        assert!(meaning.contains("priorities 19999-20002"), "{meaning}");
        assert_eq!(severity(&Config::default()).0, Severity::Ok);
    }

    #[test]
    fn netplan_routing_policy_with_precedence_by_name() {
        let r = Root::new("agents-netplan");
        r.write(
            "/etc/netplan/50-cloud-init.yaml",
            "network:\n  version: 2\n  ethernets:\n    eth1:\n      routing-policy:\n        - from: 198.18.0.11\n          table: 101\n          priority: 100\n",
        )
        .write(
            "/lib/netplan/50-cloud-init.yaml",
            "network:\n  ethernets:\n    eth0:\n      routing-policy:\n        - {from: 198.18.0.10, table: 20002}\n",
        )
        .write(
            "/etc/netplan/60-x.yaml",
            "network:\n  ethernets:\n    nic:\n      set-name: eth0\n      routing-policy:\n        - {from: 198.18.0.10, table: 20002, priority: 20001}\n",
        );
        let (d, m) = lab();
        let a = read(r.path(), &[], 1, true);
        assert_eq!(
            a.netplan.len(),
            2,
            "/lib's file is masked by /etc's: {:?}",
            a.netplan
        );
        let f = check(&a, &[], &d, &m, &Config::default());
        let np: Vec<_> = f.iter().filter(|f| f.check == "agents netplan").collect();
        assert_eq!(np.len(), 2, "{f:?}");
        assert_eq!(np[0].severity, Severity::Warning);
        assert!(
            np[0].meaning.contains("(cloud-init's) gives eth1"),
            "{}",
            np[0].meaning
        );
        assert!(
            np[0].meaning.contains("100 sit above enipin's"),
            "{}",
            np[0].meaning
        );
        assert_eq!(np[1].severity, Severity::Conflict);
        assert!(np[1].meaning.contains("gives eth0"), "{}", np[1].meaning);
    }

    #[test]
    fn suse_cloud_netconfig_interfaces_from_ifcfg() {
        let r = Root::new("agents-suse");
        r.write("/usr/lib/systemd/system/cloud-netconfig.timer", "")
            .write("/etc/sysconfig/network/ifcfg-eth1", "BOOTPROTO='dhcp'\n")
            .write(
                "/etc/sysconfig/network/ifcfg-eth2",
                "CLOUD_NETCONFIG_MANAGE='no'\n",
            )
            .write("/etc/sysconfig/network/ifcfg-lo", "");
        let (d, m) = lab();
        let a = read(r.path(), &[], 1, true);
        assert_eq!(a.suse_ifaces, ["eth1"]);
        let f = check(&a, &[], &d, &m, &Config::default());
        let suse = f
            .iter()
            .find(|f| f.check == "agents suse-cloud-netconfig")
            .unwrap();
        assert_eq!(suse.severity, Severity::Warning, "{f:?}");
        assert!(suse.meaning.contains("manages eth1"), "{}", suse.meaning);
    }
}
