//! Policy rules of anyone else that meet enipin's: at its priorities or looking up its tables
//! (attach refuses), above its own for a managed address (they decide first), enipin's tables
//! against the reserved 0 and 253-255, and the rules of the tools that leave a mark (systemd's
//! metadata-service rules, amazon-ec2-net-utils' and nm-cloud-setup's numbers).

use std::{collections::BTreeSet, net::IpAddr};

use super::{Finding, Severity};
use crate::{
    model::discovery::Discovery,
    model::route::{MAIN_TABLE, ObservedRule, RuleVerb},
    model::{Cidr, ManagedInterface, RTPROT_ENIPIN},
    routing::plan,
    settings::config::Config,
};

/// systemd's metadata-service rules: fwmark and table 0x7FFF0815, `prohibit 169.254.169.254`.
pub(super) const IMDS_MARK: u32 = 0x7FFF_0815;
const IMDS_ADDR: [u8; 4] = [169, 254, 169, 254];
/// The kernel's own tables: unspec, default, main, local.
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];

/// A rule as `ip rule` would show it, as discovery read it: everything the checks look at.
pub(super) type RuleView = ObservedRule;

impl ObservedRule {
    /// `priority 10001 from 198.18.0.11/32 lookup 10001 (protocol 4)`.
    pub(super) fn text(&self) -> String {
        let mut s = format!("priority {}", self.priority);
        if let Some(f) = self.from {
            s += &format!(" from {f}");
        }
        if let Some(t) = self.to {
            s += &format!(" to {t}");
        }
        if let Some(m) = self.fwmark {
            s += &format!(" fwmark {:#x}", m.value);
        }
        s += &match self.verb {
            RuleVerb::Lookup => format!(" lookup {}", self.table),
            a => format!(" {}", format!("{a:?}").to_lowercase()),
        };
        format!("{s} (protocol {})", self.protocol)
    }

    fn is_enipin(&self) -> bool {
        self.protocol == RTPROT_ENIPIN
    }

    /// The kernel's default rules: `0 lookup local`, `32766 lookup main`, `32767 lookup default`.
    fn is_kernel_default(&self) -> bool {
        self.from.is_none()
            && self.to.is_none()
            && self.fwmark.is_none()
            && matches!(
                (self.priority, self.table),
                (0, 255) | (32766, 254) | (32767, 253)
            )
    }

    /// systemd's metadata-service rules.
    pub(super) fn is_imds(&self) -> bool {
        let to_imds = self
            .to
            .is_some_and(|t| t.addr == IpAddr::from(IMDS_ADDR) && t.prefix_len == 32);
        self.fwmark.is_some_and(|m| m.value == IMDS_MARK) || self.table == IMDS_MARK || to_imds
    }
}

/// Whether `rule`'s source selector covers `addr` (a specific one: `from all` is everyone's).
fn covers(from: Option<Cidr>, addr: IpAddr) -> bool {
    from.is_some_and(|f| {
        f.prefix_len > 0
            && f.is_ipv6() == addr.is_ipv6()
            && Cidr {
                addr,
                prefix_len: f.prefix_len,
            }
            .network()
                == f.network()
    })
}

/// The first `--priority` from `cfg`'s up, in steps of 1000, whose block ([`plan::priorities`])
/// no rule uses.
fn free_priority(rules: &[RuleView], cfg: &Config) -> Option<std::ops::RangeInclusive<u32>> {
    (1..30)
        .map(|k| cfg.priority.saturating_add(k * 1000) % 32000)
        .filter(|p| *p > 1)
        .map(|priority| {
            plan::priorities(&Config {
                priority,
                ..cfg.clone()
            })
        })
        .find(|block| !rules.iter().any(|r| block.contains(&r.priority)))
}

pub(super) fn check(
    rules: &[RuleView],
    d: &Discovery,
    managed: &[ManagedInterface],
    cfg: &Config,
) -> Vec<Finding> {
    let tables: BTreeSet<u32> = managed.iter().map(|m| m.table).collect();
    let foreign: Vec<&RuleView> = rules
        .iter()
        .filter(|r| !r.is_enipin() && !r.is_kernel_default())
        .collect();
    let mut out = Vec::new();
    if !managed.is_empty() {
        out.push(reserved_tables(&tables));
    }
    let clashes = clashes(rules, &foreign, d, &tables, cfg);
    let above = above(&foreign, d, managed, cfg);
    let quiet = clashes.is_empty() && above.is_empty();
    out.extend(clashes);
    out.extend(above);
    out.extend(imds(&foreign));
    if quiet {
        out.push(no_clash(&tables, cfg));
    }
    out
}

/// enipin's tables are none of the kernel's.
fn reserved_tables(tables: &BTreeSet<u32>) -> Finding {
    let bad: Vec<_> = tables
        .iter()
        .filter(|t| RESERVED_TABLES.contains(t))
        .collect();
    if bad.is_empty() {
        Finding::ok(
            "rules tables",
            format!("enipin's tables {tables:?}: none is 0 or 253-255 (default, main, local)"),
        )
    } else {
        Finding::new(
            "rules tables",
            Severity::Conflict,
            format!("enipin's tables would include {bad:?}, reserved by the kernel"),
        )
        .fix("choose another --table-base (default 20000)")
    }
}

/// Someone else's rules at enipin's priorities or pointing at its tables, and their routes in
/// its tables: what `attach` refuses.
fn clashes(
    rules: &[RuleView],
    foreign: &[&RuleView],
    d: &Discovery,
    tables: &BTreeSet<u32>,
    cfg: &Config,
) -> Vec<Finding> {
    let prios = plan::priorities(cfg);
    let other_base = format!(
        "`enipin attach --table-base {}`",
        cfg.table_base.saturating_add(10000)
    );
    let mut out = Vec::new();
    for r in foreign {
        let at_prio = prios.contains(&r.priority);
        let at_table = r.verb == RuleVerb::Lookup && tables.contains(&r.table);
        if !(at_prio || at_table) {
            continue;
        }
        let (uses, fix) = if at_prio {
            let (s, e) = (prios.start(), prios.end());
            let fix = match free_priority(rules, cfg) {
                Some(b) => format!(
                    "`enipin attach --priority {}` (free: {}-{})",
                    b.end() - 2,
                    b.start(),
                    b.end()
                ),
                None => "choose another --priority".to_owned(),
            };
            (
                format!("priority {}, one of enipin's {s}-{e}", r.priority),
                fix,
            )
        } else {
            let uses = format!("table {}, one of enipin's {tables:?}", r.table);
            (uses, other_base.clone())
        };
        let meaning = format!(
            "`{}` is not enipin's but uses {uses}: `enipin attach` refuses to change its meaning",
            r.text()
        );
        out.push(Finding::new("rules", Severity::Conflict, meaning).fix(fix));
    }
    for r in d.routes.iter().filter(|r| !r.is_enipin()) {
        if tables.contains(&r.route.table) {
            let meaning = format!(
                "table {} holds a route that is not enipin's ({} protocol {}): `enipin attach` \
                 refuses to share the table",
                r.route.table, r.route.dst, r.protocol
            );
            out.push(Finding::new("rules", Severity::Conflict, meaning).fix(other_base.clone()));
        }
    }
    out
}

/// Someone else's rules above enipin's that catch a managed address's replies first.
fn above(
    foreign: &[&RuleView],
    d: &Discovery,
    managed: &[ManagedInterface],
    cfg: &Config,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in managed {
        for a in &m.addrs {
            for r in foreign.iter().filter(|r| {
                r.priority < cfg.priority
                    && r.verb == RuleVerb::Lookup
                    && ![MAIN_TABLE, 253, 255].contains(&r.table)
                    && covers(r.from, a.addr)
                    && !r.is_imds()
            }) {
                out.push(rule_above(r, a.addr, m, d, cfg));
            }
        }
    }
    out
}

/// systemd's metadata-service rules, said to be harmless.
fn imds(foreign: &[&RuleView]) -> Option<Finding> {
    let imds: Vec<_> = foreign.iter().filter(|r| r.is_imds()).collect();
    if imds.is_empty() {
        return None;
    }
    let prios: Vec<_> = imds.iter().map(|r| r.priority.to_string()).collect();
    Some(Finding::ok(
        "rules imds",
        format!(
            "systemd's metadata-service rules (priorities {}) match only fwmark {IMDS_MARK:#x} \
             or traffic to 169.254.169.254: enipin's rules and tables leave them alone",
            prios.join(", ")
        ),
    ))
}

/// Nothing in enipin's way.
fn no_clash(tables: &BTreeSet<u32>, cfg: &Config) -> Finding {
    let prios = plan::priorities(cfg);
    let tables_text = if tables.is_empty() {
        String::new()
    } else {
        format!(" or tables {tables:?}")
    };
    Finding::ok(
        "rules",
        format!(
            "no one else's rule at enipin's priorities {}-{}{tables_text}, none above enipin's \
             for a managed address",
            prios.start(),
            prios.end(),
        ),
    )
}

/// A rule above enipin's for address `addr` of `m`: harmless while its table sends the replies
/// out of `m`, a conflict when it sends them elsewhere.
fn rule_above(
    r: &RuleView,
    addr: IpAddr,
    m: &ManagedInterface,
    d: &Discovery,
    cfg: &Config,
) -> Finding {
    let oifs: BTreeSet<u32> = d
        .routes
        .iter()
        .filter(|x| x.route.table == r.table && x.route.oif != 0)
        .map(|x| x.route.oif)
        .collect();
    let name = |i: &u32| {
        d.interfaces
            .iter()
            .find(|x| x.ifindex == *i)
            .map(|x| x.name.clone())
            .unwrap_or_else(|| format!("ifindex {i}"))
    };
    let head = format!(
        "`{}` sits above enipin's rules (priority {}) for {addr} of {}",
        r.text(),
        cfg.priority,
        m.name
    );
    let fix = format!(
        "remove it (`ip rule del {}`) or leave the rules to its tool and run enipin with \
         --no-rules (eBPF only)",
        r.text().split(" (protocol").next().unwrap_or_default()
    );
    if oifs.is_empty() {
        return Finding::new(
            "rules",
            Severity::Warning,
            format!(
                "{head}: its table {} is empty, so lookups fall through to enipin's",
                r.table
            ),
        )
        .fix(fix);
    }
    if oifs.iter().all(|i| *i == m.ifindex) {
        return Finding::new(
            "rules",
            Severity::Warning,
            format!(
                "{head}: replies follow its table {} out of {}, the owner, not enipin's table: \
                 two owners of one policy",
                r.table, m.name
            ),
        )
        .fix(fix);
    }
    let others: Vec<_> = oifs.iter().filter(|i| **i != m.ifindex).map(name).collect();
    Finding::new(
        "rules",
        Severity::Conflict,
        format!(
            "{head}: its table {} sends replies from {addr} out of {}, not {}, the owner; only \
             enipin's datapath (enforce mode) brings them back",
            r.table,
            others.join(", "),
            m.name
        ),
    )
    .fix(fix)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::{
        model::route::{InstalledRoute, Route},
        model::{Interface, ManagedInterface},
    };

    pub(crate) fn rule(priority: u32, from: Option<&str>, table: u32, protocol: u8) -> RuleView {
        RuleView {
            v6: false,
            priority,
            verb: RuleVerb::Lookup,
            table,
            from: from.map(|f| f.parse().unwrap()),
            to: None,
            fwmark: None,
            suppress_prefixlen: None,
            protocol,
        }
    }

    fn route(table: u32, oif: u32) -> InstalledRoute {
        InstalledRoute {
            protocol: 4,
            route: Route {
                table,
                dst: Cidr::any(false),
                gateway: Some("198.18.0.1".parse().unwrap()),
                oif,
                dev: String::new(),
                src: None,
                scope_link: false,
                metric: 0,
            },
        }
    }

    pub(crate) fn lab() -> (Discovery, Vec<ManagedInterface>) {
        let iface = |ifindex: u32, a: &str| Interface {
            name: format!("eth{}", ifindex - 2),
            ..Interface::fixture(ifindex, &[a])
        };
        let d = Discovery {
            interfaces: vec![iface(2, "198.18.0.10/24"), iface(3, "198.18.0.11/24")],
            ..Discovery::default()
        };
        let managed = d
            .interfaces
            .iter()
            .map(|i| {
                let mut m = ManagedInterface::fixture(i.ifindex, &i.name, i.addrs.clone());
                m.table = 20000 + i.ifindex;
                m
            })
            .collect();
        (d, managed)
    }

    fn kernel() -> Vec<RuleView> {
        vec![
            rule(0, None, 255, 2),
            rule(32766, None, 254, 2),
            rule(32767, None, 253, 2),
        ]
    }

    #[test]
    fn a_clean_namespace_has_nothing_but_ok() {
        let (d, m) = lab();
        let mut rules = kernel();
        rules.push(rule(20000, Some("198.18.0.11/32"), 20003, RTPROT_ENIPIN));
        let f = check(&rules, &d, &m, &Config::default());
        assert!(f.iter().all(|f| f.severity == Severity::Ok), "{f:?}");
        assert!(f[0].meaning.contains("{20002, 20003}"), "{f:?}");
    }

    /// With `--connmark`, enipin's fwmark rules sit at P-1, and attach refuses a foreign rule
    /// there: doctor must say so too, and offer a block whose P-1 is free as well.
    #[test]
    fn with_connmark_a_foreign_rule_just_below_enipins_priority_is_a_conflict() {
        let (d, m) = lab();
        let mut rules = kernel();
        rules.push(rule(19999, Some("198.18.5.0/24"), 100, 3));
        rules.push(rule(20999, None, 100, 3));
        let cfg = Config {
            connmark: true,
            ..Config::default()
        };
        let f = check(&rules, &d, &m, &cfg);
        let c: Vec<_> = f
            .iter()
            .filter(|f| f.severity == Severity::Conflict)
            .collect();
        assert_eq!(c.len(), 1, "{f:?}");
        assert!(c[0].meaning.contains("priority 19999"), "{}", c[0].meaning);
        // 20999 is P-1 of 21000: the next block free from P-1 to P+2 is 22000.
        assert_eq!(
            c[0].fix.as_deref(),
            Some("`enipin attach --priority 22000` (free: 21999-22002)")
        );
        // Without connmark, 19999 is no priority of enipin's.
        let f = check(&rules, &d, &m, &Config::default());
        assert!(f.iter().all(|f| f.severity != Severity::Conflict), "{f:?}");
    }

    #[test]
    fn foreign_rules_at_enipins_priorities_or_tables_are_conflicts_with_a_free_priority() {
        let (d, m) = lab();
        let mut rules = kernel();
        rules.push(rule(20001, Some("198.18.5.0/24"), 100, 3));
        rules.push(rule(21000, None, 100, 3));
        rules.push(rule(500, None, 20002, 3));
        let f = check(&rules, &d, &m, &Config::default());
        let c: Vec<_> = f
            .iter()
            .filter(|f| f.severity == Severity::Conflict)
            .collect();
        assert_eq!(c.len(), 2, "{f:?}");
        assert!(c[0].meaning.contains("priority 20001"), "{}", c[0].meaning);
        // 21000 is taken: the next free block is 22000.
        assert_eq!(
            c[0].fix.as_deref(),
            Some("`enipin attach --priority 22000` (free: 22000-22002)")
        );
        assert!(c[1].meaning.contains("table 20002"), "{}", c[1].meaning);
    }

    #[test]
    fn a_rule_above_enipins_is_a_warning_when_it_routes_by_the_owner_and_a_conflict_otherwise() {
        let (mut d, m) = lab();
        let mut rules = kernel();
        rules.push(rule(10001, Some("198.18.0.11/32"), 10001, 4));
        d.routes.push(route(10001, 3));
        let f = check(&rules, &d, &m, &Config::default());
        let w: Vec<_> = f
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .collect();
        assert_eq!(w.len(), 1, "{f:?}");
        assert!(
            w[0].meaning.contains("out of eth1, the owner"),
            "{}",
            w[0].meaning
        );
        d.routes[0] = route(10001, 2);
        let f = check(&rules, &d, &m, &Config::default());
        let c: Vec<_> = f
            .iter()
            .filter(|f| f.severity == Severity::Conflict)
            .collect();
        assert_eq!(c.len(), 1, "{f:?}");
        assert!(
            c[0].meaning.contains("out of eth0, not eth1"),
            "{}",
            c[0].meaning
        );
        assert!(
            c[0].fix
                .as_deref()
                .unwrap()
                .contains("ip rule del priority 10001 from 198.18.0.11/32 lookup 10001`"),
            "{:?}",
            c[0].fix
        );
    }

    #[test]
    fn systemds_metadata_rules_are_recognised_and_left_alone() {
        let (d, m) = lab();
        let mut rules = kernel();
        let mut marked = rule(1000, None, IMDS_MARK, 0);
        marked.fwmark = Some(crate::model::route::Fwmark {
            value: IMDS_MARK,
            mask: u32::MAX,
        });
        let mut prohibit = rule(1001, None, 0, 0);
        prohibit.verb = RuleVerb::Prohibit;
        prohibit.to = Some("169.254.169.254/32".parse().unwrap());
        assert!(prohibit.text().contains("to 169.254.169.254/32 prohibit"));
        rules.extend([marked, prohibit]);
        let f = check(&rules, &d, &m, &Config::default());
        assert!(f.iter().all(|f| f.severity == Severity::Ok), "{f:?}");
        assert!(
            f.iter()
                .any(|f| f.check == "rules imds" && f.meaning.contains("1000, 1001"))
        );
    }
}
