//! One desired state, diffed with what is installed.
//!
//! Layout (nm-cloud-setup's three layers, one table per interface, `T_i = table_base + ifindex`):
//!
//! | prio | rule | why |
//! |---|---|---|
//! | P   | `from <addr> lookup T_i suppress_prefixlength 0` | T_i's subnet route wins for i's own sources: replies to the subnet leave by i |
//! | P+1 | `lookup main suppress_prefixlength 0` (per family) | specific routes in main (docker, k8s, static) keep winning over our default route (cloud-init#5249) |
//! | P+2 | `from <addr> lookup T_i` | T_i's default route: everything else from i's sources leaves by i, via i's gateway |
//! | P-1 | `fwmark V_i/M lookup T_i` (`--connmark` only) | replies of connections that arrived on i leave by i, whatever their source ([`crate::model::connmark`]) |
//!
//! T_i holds the subnet route(s) (`<net> dev ethi scope link src <addr>`) and `default via <gw>
//! dev ethi`. One table per interface keyed by ifindex keeps the numbering stable while the
//! interface exists and needs no allocator; v4 and v6 share the number. Every rule and route
//! carries protocol [`crate::model::RTPROT_ENIPIN`], which is how enipin finds exactly its own objects.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::{
    model::address::Address,
    model::connmark::{self, Connmark},
    model::discovery::Discovery,
    model::objects::Object,
    model::route::{Fwmark, MAIN_TABLE, Route, Rule, V6_METRIC},
    model::sysctl,
    model::{Cidr, ManagedInterface},
    settings::config::Config,
};

/// How a plan prints (`attach --format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    /// enipin's own diff (+ add, - remove).
    Text,
    /// The equivalent iproute2 / sysctl commands.
    Ip,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub(crate) enum Change {
    AddRule(Rule),
    DelRule(Rule),
    AddRoute(Route),
    DelRoute(Route),
    AddAddress(Address),
    DelAddress(Address),
    Sysctl {
        key: sysctl::Key,
        old: String,
        new: String,
    },
    /// enipin's nftables table replaced as a whole (`None`: absent).
    Connmark {
        old: Option<Connmark>,
        new: Option<Connmark>,
    },
}

impl Change {
    /// The object this change puts in place (`None`: a removal).
    pub(crate) fn puts(&self) -> Option<Object> {
        match self {
            Change::AddRule(r) => Some(Object::Rule(r.clone())),
            Change::AddRoute(r) => Some(Object::Route(r.clone())),
            Change::AddAddress(a) => Some(Object::Address(a.ifindex, a.cidr.addr)),
            Change::Sysctl { key, .. } => Some(Object::Sysctl(key.clone())),
            Change::Connmark { new: Some(_), .. } => Some(Object::Connmark),
            Change::DelRule(_)
            | Change::DelRoute(_)
            | Change::DelAddress(_)
            | Change::Connmark { new: None, .. } => None,
        }
    }

    /// What undoes this change (the rollback journal holds these).
    pub(crate) fn inverse(&self) -> Change {
        match self {
            Change::AddRule(r) => Change::DelRule(r.clone()),
            Change::DelRule(r) => Change::AddRule(r.clone()),
            Change::AddRoute(r) => Change::DelRoute(r.clone()),
            Change::DelRoute(r) => Change::AddRoute(r.clone()),
            Change::AddAddress(a) => Change::DelAddress(a.clone()),
            Change::DelAddress(a) => Change::AddAddress(a.clone()),
            Change::Sysctl { key, old, new } => Change::Sysctl {
                key: key.clone(),
                old: new.clone(),
                new: old.clone(),
            },
            Change::Connmark { old, new } => Change::Connmark {
                old: new.clone(),
                new: old.clone(),
            },
        }
    }

    /// A netlink request batched with others in flight; the others run alone, in order (an
    /// interface's sysctls together, in one netlink request; the nft table).
    pub(crate) fn is_netlink(&self) -> bool {
        !matches!(self, Change::Sysctl { .. } | Change::Connmark { .. })
    }

    pub(crate) fn render(&self, format: DiffFormat) -> String {
        let six = |v6: bool| if v6 { " -6" } else { "" };
        match (format, self) {
            (DiffFormat::Text, Change::AddRule(r)) => {
                format!("+ rule{} {}", six(r.v6), r.ip_args())
            }
            (DiffFormat::Text, Change::DelRule(r)) => {
                format!("- rule{} {}", six(r.v6), r.ip_args())
            }
            (DiffFormat::Text, Change::AddRoute(r)) => {
                format!("+ route{} {}", six(r.v6()), r.ip_args())
            }
            (DiffFormat::Text, Change::DelRoute(r)) => {
                format!("- route{} {}", six(r.v6()), r.ip_args())
            }
            (DiffFormat::Text, Change::AddAddress(a)) => format!("+ address {}", a.ip_args()),
            (DiffFormat::Text, Change::DelAddress(a)) => format!("- address {}", a.ip_args()),
            (DiffFormat::Ip, Change::AddAddress(a)) => format!("ip address add {}", a.ip_args()),
            (DiffFormat::Ip, Change::DelAddress(a)) => format!("ip address del {}", a.ip_args()),
            (DiffFormat::Text, Change::Sysctl { key, old, new }) => {
                format!("~ sysctl {key}: {old} -> {new}")
            }
            (DiffFormat::Ip, Change::AddRule(r)) => {
                format!("ip{} rule add {}", six(r.v6), r.ip_args())
            }
            (DiffFormat::Ip, Change::DelRule(r)) => {
                format!("ip{} rule del {}", six(r.v6), r.ip_args())
            }
            (DiffFormat::Ip, Change::AddRoute(r)) => {
                format!("ip{} route add {}", six(r.v6()), r.ip_args())
            }
            (DiffFormat::Ip, Change::DelRoute(r)) => {
                format!("ip{} route del {}", six(r.v6()), r.ip_args())
            }
            (DiffFormat::Ip, Change::Sysctl { key, new, .. }) => format!("sysctl -w {key}={new}"),
            (DiffFormat::Text, Change::Connmark { old, new }) => match (old, new) {
                (None, Some(n)) => format!("+ {}", n.summary()),
                (Some(o), None) => format!("- {}", o.summary()),
                (Some(o), Some(n)) => format!("~ {} -> {}", o.summary(), n.summary()),
                (None, None) => "= nft: nothing".to_owned(),
            },
            (DiffFormat::Ip, Change::Connmark { new, .. }) => {
                let t = connmark::TABLE;
                let mut s = format!("nft add table inet {t}; nft delete table inet {t}");
                if let Some(n) = new {
                    s.push_str(&format!("\nnft -f - <<'EOF'\n{}\nEOF", n.script()));
                }
                s
            }
        }
    }
}

/// The ordered changes that turn the installed state into the desired one.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Plan {
    pub changes: Vec<Change>,
    /// Desired rules / routes already in place.
    pub rules_in_place: usize,
    pub routes_in_place: usize,
    /// Every sysctl wanted, set already or not.
    #[serde(skip)]
    pub sysctls: Vec<sysctl::Key>,
}

impl Plan {
    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// The rules and routes the managed interfaces need (see the module doc for the layout).
pub(crate) fn desired(managed: &[ManagedInterface], cfg: &Config) -> (Vec<Rule>, Vec<Route>) {
    let p = cfg.priority;
    let mut rules = Vec::new();
    let mut routes = Vec::new();
    let mut families = BTreeSet::new();
    for m in managed {
        let sources = m
            .addrs
            .iter()
            .map(|a| Cidr::host(a.addr))
            .chain(m.prefixes.iter().map(Cidr::network));
        for from in sources {
            families.insert(from.is_ipv6());
            rules.extend(pair(p, m.table, from.is_ipv6(), Some(from)));
        }
        // connmark: replies marked with m's mark take m's table whatever their source, so the
        // rule comes before the `from` rules: a reply DNAT'd to another interface's address is
        // sourced from that address until POSTROUTING.
        let mark = connmark::value(cfg.connmark_mask, m.ifindex).filter(|_| cfg.connmark);
        for v6 in [false, true] {
            if let Some(value) = mark
                && m.addrs.iter().any(|a| a.addr.is_ipv6() == v6)
            {
                let mask = cfg.connmark_mask;
                rules.push(Rule {
                    v6,
                    priority: p - 1,
                    from: None,
                    table: m.table,
                    suppress_prefixlen: None,
                    fwmark: Some(Fwmark { value, mask }),
                });
            }
        }
        let mut subnets = BTreeSet::new();
        for a in &m.addrs {
            let net = a.network();
            if a.prefix_len == a.host_len() || !subnets.insert(net) {
                continue; // a host address has no subnet; the first address of a subnet is its src
            }
            let v6 = a.addr.is_ipv6();
            routes.push(Route {
                table: m.table,
                dst: net,
                gateway: None,
                oif: m.ifindex,
                dev: m.name.clone(),
                src: Some(a.addr),
                scope_link: !v6,
                metric: if v6 { V6_METRIC } else { 0 },
            });
        }
        routes.extend(beside(managed, m, &subnets));
        for gw in [m.gateway_v4, m.gateway_v6].into_iter().flatten() {
            let v6 = gw.addr.is_ipv6();
            if !m.addrs.iter().any(|a| a.addr.is_ipv6() == v6) {
                continue; // no source of this family on the interface
            }
            routes.push(Route {
                table: m.table,
                dst: Cidr::any(v6),
                gateway: Some(gw.addr),
                oif: m.ifindex,
                dev: m.name.clone(),
                src: None,
                scope_link: false,
                metric: if v6 { V6_METRIC } else { 0 },
            });
        }
    }
    for v6 in families {
        rules.push(Rule {
            v6,
            priority: p + 1,
            from: None,
            table: MAIN_TABLE,
            suppress_prefixlen: Some(0),
            fwmark: None,
        });
    }
    rules.sort();
    (rules, routes)
}

/// The subnets of the other managed interfaces that `m` is not on, through `m`'s gateway, in
/// `m`'s table. The main table's own route to such a subnet goes out of its ENI, and the rule at
/// P+1 (`lookup main suppress_prefixlength 0`) would send `m`'s replies to it there, before the
/// rule at P+2 reaches `m`'s default route: an ENI in a subnet of its own would answer a peer in
/// the other ENI's subnet by that ENI.
fn beside(managed: &[ManagedInterface], m: &ManagedInterface, own: &BTreeSet<Cidr>) -> Vec<Route> {
    let mut seen = BTreeSet::new();
    let others = managed
        .iter()
        .filter(|o| o.ifindex != m.ifindex)
        .flat_map(|o| &o.addrs)
        .filter(|a| a.prefix_len < a.host_len())
        .map(Cidr::network);
    let mut out = Vec::new();
    for net in others {
        let v6 = net.is_ipv6();
        let gw = if v6 { m.gateway_v6 } else { m.gateway_v4 };
        let Some(gw) = gw.filter(|_| !own.contains(&net) && seen.insert(net)) else {
            continue;
        };
        if !m.addrs.iter().any(|a| a.is_ipv6() == v6) {
            continue; // no source of this family on the interface
        }
        out.push(Route {
            table: m.table,
            dst: net,
            gateway: Some(gw.addr),
            oif: m.ifindex,
            dev: m.name.clone(),
            src: None,
            scope_link: false,
            metric: if v6 { V6_METRIC } else { 0 },
        });
    }
    out
}

/// The two rules of one source (an address or a prefix): at P with `suppress_prefixlength 0`
/// (the table's subnet routes) and at P+2 (its default route).
fn pair(p: u32, table: u32, v6: bool, from: Option<Cidr>) -> [Rule; 2] {
    let rule = |priority, suppress_prefixlen| Rule {
        v6,
        priority,
        from,
        table,
        suppress_prefixlen,
        fwmark: None,
    };
    [rule(p, Some(0)), rule(p + 2, None)]
}

/// enipin's rules and routes as installed now (protocol 229 only).
pub(crate) fn installed(d: &Discovery) -> (Vec<Rule>, Vec<Route>) {
    let rules = d
        .rules
        .iter()
        .filter(|r| r.is_enipin())
        .map(|r| r.rule.clone())
        .collect();
    let routes = d
        .routes
        .iter()
        .filter(|r| r.is_enipin())
        .map(|r| r.route.clone())
        .collect();
    (rules, routes)
}

/// The rule priorities enipin installs at with `cfg` (module doc): P to P+2, and P-1 for
/// `--connmark`'s fwmark rules. Attach refuses someone else's rule at any of them, and doctor
/// says so first.
pub(crate) fn priorities(cfg: &Config) -> std::ops::RangeInclusive<u32> {
    cfg.priority.saturating_sub(u32::from(cfg.connmark))..=cfg.priority.saturating_add(2)
}

/// Someone else's rules at our priorities or pointing at our tables, or their routes in our
/// tables: enipin would change their meaning, so it refuses before changing anything.
pub(crate) fn check_conflicts(
    d: &Discovery,
    managed: &[ManagedInterface],
    cfg: &Config,
) -> Result<()> {
    let tables: BTreeSet<u32> = managed.iter().map(|m| m.table).collect();
    let prios = priorities(cfg);
    let (first, last) = (*prios.start(), *prios.end());
    for r in d.rules.iter().filter(|r| !r.is_enipin()) {
        let (prio, table) = (r.rule.priority, r.rule.table);
        if prios.contains(&prio) || tables.contains(&table) {
            bail!(
                "rule `{}` (protocol {}) is not enipin's but uses priority {prio} / table {table}, which enipin \
                 needs (priorities {first}-{last}, tables {:?}); nothing was changed. Choose another --priority or --table-base",
                r.rule.ip_args_bare(),
                r.protocol,
                tables
            );
        }
    }
    for r in d.routes.iter().filter(|r| !r.is_enipin()) {
        let table = r.route.table;
        if tables.contains(&table) {
            bail!(
                "table {table} holds a route that is not enipin's ({} protocol {}); nothing was changed. \
                 Choose another --table-base",
                r.route.dst,
                r.protocol
            );
        }
    }
    Ok(())
}

/// Desired vs installed, ordered so that no moment is worse than before: stale rules go first
/// (they point at tables about to change), then stale routes, then new routes (tables are
/// complete before a rule points at them), then new rules, then sysctls.
pub(crate) fn diff(
    want_rules: &[Rule],
    want_routes: &[Route],
    have_rules: &[Rule],
    have_routes: &[Route],
    sysctls: Vec<(sysctl::Key, String, String)>,
) -> Plan {
    let mut plan = Plan {
        sysctls: sysctls.iter().map(|(key, ..)| key.clone()).collect(),
        ..Plan::default()
    };
    let c = &mut plan.changes;
    c.extend(
        have_rules
            .iter()
            .filter(|r| !want_rules.contains(r))
            .map(|r| Change::DelRule(r.clone())),
    );
    c.extend(
        have_routes
            .iter()
            .filter(|r| !want_routes.contains(r))
            .map(|r| Change::DelRoute(r.clone())),
    );
    c.extend(
        want_routes
            .iter()
            .filter(|r| !have_routes.contains(r))
            .map(|r| Change::AddRoute(r.clone())),
    );
    c.extend(
        want_rules
            .iter()
            .filter(|r| !have_rules.contains(r))
            .map(|r| Change::AddRule(r.clone())),
    );
    c.extend(
        sysctls
            .into_iter()
            .filter(|(_, old, new)| old != new)
            .map(|(key, old, new)| Change::Sysctl { key, old, new }),
    );
    plan.rules_in_place = want_rules.iter().filter(|r| have_rules.contains(r)).count();
    plan.routes_in_place = want_routes
        .iter()
        .filter(|r| have_routes.contains(r))
        .count();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{
            Gateway, GatewaySource, RTPROT_ENIPIN,
            route::{InstalledRoute, InstalledRule},
        },
        routing::select::{
            select,
            tests::{managed, namespace},
        },
    };

    fn eni(ifindex: u32, addrs: &[&str]) -> ManagedInterface {
        ManagedInterface {
            ifindex,
            name: format!("eth{ifindex}"),
            mac: [2, 0, 0, 0, 0, ifindex as u8],
            mtu: 1500,
            table: 20000 + ifindex,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            prefixes: Vec::new(),
            gateway_v4: Some(Gateway {
                addr: "198.18.0.1".parse().unwrap(),
                source: GatewaySource::SubnetFirstHost,
            }),
            gateway_v6: None,
            forwarding: Default::default(),
        }
    }

    /// connmark's marks pick the interface's table, in each family it has, before any `from`.
    #[test]
    fn connmark_adds_a_fwmark_rule_per_family_of_each_interface() {
        let m = [
            eni(2, &["198.18.0.10/24"]),
            eni(3, &["198.18.0.11/24", "2001:db8::11/64"]),
        ];
        let fwmark_rules = |cfg: &Config| -> Vec<String> {
            let (rules, _) = desired(&m, cfg);
            rules
                .iter()
                .filter(|r| r.fwmark.is_some())
                .map(|r| format!("{}{}", if r.v6 { "-6 " } else { "" }, r.ip_args()))
                .collect()
        };
        assert!(fwmark_rules(&Config::default()).is_empty());
        let cfg = Config {
            connmark: true,
            ..Config::default()
        };
        assert_eq!(
            fwmark_rules(&cfg),
            [
                "fwmark 0x2000000/0xff000000 lookup 20002 pref 19999 proto 229",
                "fwmark 0x3000000/0xff000000 lookup 20003 pref 19999 proto 229",
                "-6 fwmark 0x3000000/0xff000000 lookup 20003 pref 19999 proto 229",
            ]
        );
    }

    #[test]
    fn layout_three_layers_one_table_per_interface() {
        let m = [
            eni(2, &["198.18.0.10/24", "198.18.0.20/24"]),
            eni(3, &["198.18.0.11/24", "2001:db8::11/64"]),
        ];
        let (rules, routes) = desired(&m, &Config::default());
        let text: Vec<String> = rules
            .iter()
            .map(|r| format!("{}{}", if r.v6 { "-6 " } else { "" }, r.ip_args()))
            .collect();
        assert_eq!(
            text,
            [
                "from 198.18.0.10/32 lookup 20002 suppress_prefixlength 0 pref 20000 proto 229",
                "from 198.18.0.11/32 lookup 20003 suppress_prefixlength 0 pref 20000 proto 229",
                "from 198.18.0.20/32 lookup 20002 suppress_prefixlength 0 pref 20000 proto 229",
                "lookup main suppress_prefixlength 0 pref 20001 proto 229",
                "from 198.18.0.10/32 lookup 20002 pref 20002 proto 229",
                "from 198.18.0.11/32 lookup 20003 pref 20002 proto 229",
                "from 198.18.0.20/32 lookup 20002 pref 20002 proto 229",
                "-6 from 2001:db8::11/128 lookup 20003 suppress_prefixlength 0 pref 20000 proto 229",
                "-6 lookup main suppress_prefixlength 0 pref 20001 proto 229",
                "-6 from 2001:db8::11/128 lookup 20003 pref 20002 proto 229",
            ]
        );
        let text: Vec<String> = routes.iter().map(Route::ip_args).collect();
        assert_eq!(
            text,
            [
                "198.18.0.0/24 dev eth2 scope link src 198.18.0.10 table 20002 proto 229",
                "default via 198.18.0.1 dev eth2 table 20002 proto 229",
                "198.18.0.0/24 dev eth3 scope link src 198.18.0.11 table 20003 proto 229",
                "2001:db8::/64 dev eth3 src 2001:db8::11 table 20003 proto 229",
                "default via 198.18.0.1 dev eth3 table 20003 proto 229",
            ]
        );
    }

    /// ENIs in subnets of their own: each table routes the other's subnet by its own gateway,
    /// or the main table's subnet route (at P+1) would take the reply out of the other ENI.
    #[test]
    fn separate_subnets_route_each_other_by_their_own_gateway() {
        let with_gw = |ix, addr: &str, gw: &str| ManagedInterface {
            gateway_v4: Some(Gateway {
                addr: gw.parse().unwrap(),
                source: GatewaySource::SubnetFirstHost,
            }),
            ..eni(ix, &[addr, "198.18.0.99/32"])
        };
        let m = [
            with_gw(2, "198.18.9.10/24", "198.18.9.1"),
            with_gw(3, "198.18.10.11/24", "198.18.10.1"),
            with_gw(4, "198.18.10.12/24", "198.18.10.1"),
        ];
        let (_, routes) = desired(&m, &Config::default());
        let text: Vec<String> = routes.iter().map(Route::ip_args).collect();
        assert_eq!(
            text,
            [
                "198.18.9.0/24 dev eth2 scope link src 198.18.9.10 table 20002 proto 229",
                "198.18.10.0/24 via 198.18.9.1 dev eth2 table 20002 proto 229",
                "default via 198.18.9.1 dev eth2 table 20002 proto 229",
                "198.18.10.0/24 dev eth3 scope link src 198.18.10.11 table 20003 proto 229",
                "198.18.9.0/24 via 198.18.10.1 dev eth3 table 20003 proto 229",
                "default via 198.18.10.1 dev eth3 table 20003 proto 229",
                "198.18.10.0/24 dev eth4 scope link src 198.18.10.12 table 20004 proto 229",
                "198.18.9.0/24 via 198.18.10.1 dev eth4 table 20004 proto 229",
                "default via 198.18.10.1 dev eth4 table 20004 proto 229",
            ]
        );
    }

    #[test]
    fn diff_applies_only_the_difference_in_a_safe_order() {
        let m = [eni(2, &["198.18.0.10/24"]), eni(3, &["198.18.0.11/24"])];
        let (rules, routes) = desired(&m, &Config::default());
        let key = sysctl::Key::new("eth3", sysctl::Knob::ArpIgnore).unwrap();
        let plan = diff(
            &rules,
            &routes,
            &rules,
            &routes,
            vec![(key.clone(), "1".into(), "1".into())],
        );
        assert!(plan.is_empty());
        assert_eq!((plan.rules_in_place, plan.routes_in_place), (5, 4));

        let mut stale = rules[0].clone();
        stale.table = 99;
        let have_rules = [stale.clone(), rules[1].clone()];
        let plan = diff(
            &rules,
            &routes,
            &have_rules,
            &routes[..1],
            vec![(key.clone(), "0".into(), "1".into())],
        );
        let kinds: Vec<&str> = plan
            .changes
            .iter()
            .map(|c| match c {
                Change::DelRule(_) => "-rule",
                Change::DelRoute(_) => "-route",
                Change::AddRoute(_) => "+route",
                Change::AddRule(_) => "+rule",
                Change::Sysctl { .. } => "sysctl",
                Change::AddAddress(_) | Change::DelAddress(_) => "address",
                Change::Connmark { .. } => "connmark",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "-rule", "+route", "+route", "+route", "+rule", "+rule", "+rule", "+rule", "sysctl"
            ]
        );
        assert_eq!(plan.changes[0], Change::DelRule(stale));
        assert_eq!(
            plan.changes[8].inverse(),
            Change::Sysctl {
                key,
                old: "1".into(),
                new: "0".into()
            }
        );
    }

    #[test]
    fn conflicts_with_other_tools_rules_and_routes() {
        let mut d = namespace();
        let cfg = Config::default();
        let m = managed(select(&d, &cfg).unwrap());
        let (rules, routes) = desired(&m, &cfg);
        // enipin's own rules and routes, and others' elsewhere, are no conflict.
        d.rules.extend(rules.iter().map(|r| InstalledRule {
            protocol: RTPROT_ENIPIN,
            rule: r.clone(),
        }));
        d.rules.push(InstalledRule::foreign(32766, MAIN_TABLE));
        d.routes.extend(routes.iter().map(|r| InstalledRoute {
            protocol: RTPROT_ENIPIN,
            route: r.clone(),
        }));
        check_conflicts(&d, &m, &cfg).unwrap();
        assert_eq!(installed(&d), (rules.clone(), routes.clone()));

        d.rules.push(InstalledRule::foreign(20001, 100));
        let e = check_conflicts(&d, &m, &cfg).unwrap_err().to_string();
        assert_eq!(
            e,
            "rule `lookup 100 pref 20001` (protocol 4) is not enipin's but uses priority 20001 / table 100, \
             which enipin needs (priorities 20000-20002, tables {20001, 20002, 20003}); nothing was changed. \
             Choose another --priority or --table-base"
        );
        d.rules.pop();
        d.rules.push(InstalledRule::foreign(300, 20002));
        assert!(check_conflicts(&d, &m, &cfg).is_err());
        d.rules.pop();

        let mut theirs = routes[0].clone();
        theirs.dst = "198.18.9.0/24".parse().unwrap();
        d.routes.push(InstalledRoute {
            protocol: 4,
            route: theirs,
        });
        let e = check_conflicts(&d, &m, &cfg).unwrap_err().to_string();
        assert_eq!(
            e,
            "table 20001 holds a route that is not enipin's (198.18.9.0/24 protocol 4); nothing was changed. \
             Choose another --table-base"
        );
        assert_eq!(installed(&d), (rules, routes), "only enipin's");
    }

    #[test]
    fn prefixes_are_sources_like_addresses() {
        let mut m = eni(2, &["198.18.0.10/24", "198.18.0.20/32"]);
        m.prefixes.push("198.18.0.64/28".parse().unwrap());
        let (rules, routes) = desired(&[m], &Config::default());
        let from: Vec<String> = rules
            .iter()
            .filter(|r| r.priority == 20000)
            .map(|r| r.from.unwrap().to_string())
            .collect();
        assert_eq!(from, ["198.18.0.10/32", "198.18.0.20/32", "198.18.0.64/28"]);
        // The /32 has no subnet route; the delegated prefix needs none (the subnet's covers it).
        assert_eq!(routes.len(), 2, "{routes:?}");
    }
}
