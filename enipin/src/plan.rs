//! One desired state, diffed with what is installed.
//!
//! Layout (nm-cloud-setup's three layers, one table per interface, `T_i = table_base + ifindex`):
//!
//! | prio | rule | why |
//! |---|---|---|
//! | P   | `from <addr> lookup T_i suppress_prefixlength 0` | T_i's subnet route wins for i's own sources: replies to the subnet leave by i |
//! | P+1 | `lookup main suppress_prefixlength 0` (per family) | specific routes in main (docker, k8s, static) keep winning over our default route (cloud-init#5249) |
//! | P+2 | `from <addr> lookup T_i` | T_i's default route: everything else from i's sources leaves by i, via i's gateway |
//!
//! T_i holds the subnet route(s) (`<net> dev ethi scope link src <addr>`) and `default via <gw>
//! dev ethi`. One table per interface keyed by ifindex keeps the numbering stable while the
//! interface exists and needs no allocator; v4 and v6 share the number. Every rule and route
//! carries protocol [`RTPROT_ENIPIN`], which is how enipin finds exactly its own objects.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::{
    config::Config,
    discover::Discovery,
    model::{
        Gateway, GatewaySource, IfAddr, Interface, ManagedInterface, Prefix, RTPROT_ENIPIN, fmt_mac,
    },
    netlink,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    /// enipin's own diff (+ add, - remove).
    Text,
    /// The equivalent iproute2 / sysctl commands.
    Ip,
}

const MAIN_TABLE: u32 = 254;
/// The kernel's default metric of IPv6 routes: a dumped v6 route always carries it.
const V6_METRIC: u32 = 1024;

/// A policy rule as enipin creates them (action: lookup `table`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Rule {
    pub v6: bool,
    pub priority: u32,
    pub from: Option<(IpAddr, u8)>,
    pub table: u32,
    pub suppress_prefixlen: Option<u32>,
}

impl Rule {
    /// `from 198.18.0.10/32 lookup 20003 suppress_prefixlength 0 pref 20000 proto 229`
    pub fn ip_args(&self) -> String {
        let mut s = String::new();
        if let Some((a, l)) = self.from {
            let _ = write!(s, "from {a}/{l} ");
        }
        let table = if self.table == MAIN_TABLE {
            "main".to_owned()
        } else {
            self.table.to_string()
        };
        let _ = write!(s, "lookup {table} ");
        if let Some(l) = self.suppress_prefixlen {
            let _ = write!(s, "suppress_prefixlength {l} ");
        }
        let _ = write!(s, "pref {} proto {RTPROT_ENIPIN}", self.priority);
        s
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Route {
    pub table: u32,
    pub dst: (IpAddr, u8),
    pub gateway: Option<IpAddr>,
    pub oif: u32,
    pub dev: String,
    pub src: Option<IpAddr>,
    pub scope_link: bool,
    pub metric: u32,
}

impl Route {
    pub fn v6(&self) -> bool {
        self.dst.0.is_ipv6()
    }

    /// `198.18.0.0/24 dev eth0 scope link src 198.18.0.10 table 20003 proto 229`
    pub fn ip_args(&self) -> String {
        let mut s = if self.dst.1 == 0 {
            "default".to_owned()
        } else {
            format!("{}/{}", self.dst.0, self.dst.1)
        };
        if let Some(gw) = self.gateway {
            let _ = write!(s, " via {gw}");
        }
        let _ = write!(s, " dev {}", self.dev);
        if self.scope_link {
            s.push_str(" scope link");
        }
        if let Some(src) = self.src {
            let _ = write!(s, " src {src}");
        }
        if self.metric != 0 && !(self.v6() && self.metric == V6_METRIC) {
            let _ = write!(s, " metric {}", self.metric);
        }
        let _ = write!(s, " table {} proto {RTPROT_ENIPIN}", self.table);
        s
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum Change {
    AddRule(Rule),
    DelRule(Rule),
    AddRoute(Route),
    DelRoute(Route),
    Sysctl {
        key: String,
        old: String,
        new: String,
    },
}

impl Change {
    /// What undoes this change (the rollback journal holds these).
    pub fn inverse(&self) -> Change {
        match self {
            Change::AddRule(r) => Change::DelRule(r.clone()),
            Change::DelRule(r) => Change::AddRule(r.clone()),
            Change::AddRoute(r) => Change::DelRoute(r.clone()),
            Change::DelRoute(r) => Change::AddRoute(r.clone()),
            Change::Sysctl { key, old, new } => Change::Sysctl {
                key: key.clone(),
                old: new.clone(),
                new: old.clone(),
            },
        }
    }

    pub fn render(&self, format: DiffFormat) -> String {
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
        }
    }
}

/// The ordered changes that turn the installed state into the desired one.
#[derive(Debug, Default, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Desired rules / routes already in place.
    pub rules_in_place: usize,
    pub routes_in_place: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// The managed interfaces, or why there is nothing to manage.
pub enum Selection {
    Managed(Vec<ManagedInterface>),
    NothingToDo(String),
}

/// The network of `addr/len`.
pub fn network(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

fn same_subnet(a: &IfAddr, b: &IfAddr) -> bool {
    a.prefix_len == b.prefix_len
        && a.addr.is_ipv4() == b.addr.is_ipv4()
        && network(a.addr, a.prefix_len) == network(b.addr, b.prefix_len)
}

fn host_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// `--interfaces` entries match a name or a MAC (any case).
fn matches(iface: &Interface, sel: &str) -> bool {
    iface.name == sel || fmt_mac(&iface.mac).eq_ignore_ascii_case(sel)
}

/// Chooses the managed interfaces and everything the appliers need about them.
pub fn select(d: &Discovery, cfg: &Config) -> Result<Selection> {
    select_named(d, cfg, Named::Strict).map(|(s, _)| s)
}

/// What a selection does with an interface named in `--interfaces` that is missing, down or
/// without an address.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// An error: `attach` must not quietly manage less than the operator named.
    Strict,
    /// Left out, with a note: `enipin watch` keeps managing the rest while an ENI is detached
    /// (and takes it back when it returns) instead of freezing on the error.
    Present,
}

/// [`select`], and the notes on named interfaces left out (always empty with `Named::Strict`).
pub fn select_named(d: &Discovery, cfg: &Config, named: Named) -> Result<(Selection, Vec<String>)> {
    let mut notes = Vec::new();
    let mut left_out: Vec<&str> = Vec::new();
    // Strict: the error; Present: the note, and the next selector.
    macro_rules! refuse {
        ($sel:expr, $($fmt:tt)+) => {{
            let msg = format!($($fmt)+);
            if named == Named::Strict {
                bail!(msg);
            }
            notes.push(msg);
            left_out.push($sel);
            continue;
        }};
    }
    // Which interfaces: the named ones, else every up Ethernet one with addresses.
    let mut chosen: Vec<&Interface> = Vec::new();
    if cfg.interfaces.is_empty() {
        chosen.extend(
            d.interfaces
                .iter()
                .filter(|i| i.ethernet && i.up && !i.addrs.is_empty()),
        );
    } else {
        for sel in &cfg.interfaces {
            let Some(iface) = d.interfaces.iter().find(|i| matches(i, sel)) else {
                let known: Vec<_> = d
                    .interfaces
                    .iter()
                    .map(|i| format!("{} ({})", i.name, fmt_mac(&i.mac)))
                    .collect();
                refuse!(
                    sel,
                    "unknown interface {sel:?}: not a name or MAC of this namespace (have: {})",
                    known.join(", ")
                );
            };
            if !iface.up {
                refuse!(
                    sel,
                    "interface {} is down: bring it up (ip link set {} up) or leave it out of --interfaces",
                    iface.name,
                    iface.name
                );
            }
            if iface.addrs.is_empty() {
                refuse!(
                    sel,
                    "interface {} has no IPv4 or global IPv6 address: nothing to pin to it",
                    iface.name
                );
            }
            if !chosen.iter().any(|c| c.ifindex == iface.ifindex) {
                chosen.push(iface);
            }
        }
    }

    // One address on two interfaces: no way to say which one owns it.
    for (n, a) in d.interfaces.iter().enumerate() {
        for b in &d.interfaces[n + 1..] {
            if !chosen
                .iter()
                .any(|c| c.ifindex == a.ifindex || c.ifindex == b.ifindex)
            {
                continue;
            }
            if let Some(x) = a
                .addrs
                .iter()
                .find(|x| b.addrs.iter().any(|y| y.addr == x.addr))
            {
                bail!(
                    "address {} is on both {} and {}: an address must belong to one interface; remove one",
                    x.addr,
                    a.name,
                    b.name
                );
            }
        }
    }

    // Only interfaces that share a subnet with another one need pinning: alone in its subnet, an
    // interface's replies already leave by it.
    let peers = d.interfaces.iter().filter(|i| i.ethernet && i.up);
    let peers: Vec<&Interface> = peers.collect();
    let shares = |i: &Interface| {
        peers.iter().any(|p| {
            p.ifindex != i.ifindex
                && p.addrs
                    .iter()
                    .any(|b| i.addrs.iter().any(|a| same_subnet(a, b)))
        })
    };
    let chosen: Vec<&Interface> = if cfg.interfaces.is_empty() {
        chosen.into_iter().filter(|i| shares(i)).collect()
    } else {
        chosen
    };
    if chosen.is_empty() || !chosen.iter().any(|i| shares(i)) {
        let names: Vec<_> = chosen.iter().map(|i| i.name.as_str()).collect();
        return Ok((
            Selection::NothingToDo(format!(
                "no interface shares a subnet with another one{}: replies already leave by the right interface",
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", names.join(", "))
                }
            )),
            notes,
        ));
    }

    // Prefixes name managed interfaces.
    for (sel, p) in &cfg.prefixes {
        if !chosen.iter().any(|i| matches(i, sel)) {
            if left_out.contains(&sel.as_str()) {
                continue; // its interface is left out, and said so
            }
            bail!(
                "--prefix {sel}={}/{}: {sel} is not a managed interface",
                p.addr,
                p.prefix_len
            );
        }
    }
    cfg.priority.checked_add(2).with_context(|| {
        format!(
            "--priority {} is too large (P+2 must fit 32 bits)",
            cfg.priority
        )
    })?;

    let mut managed = Vec::new();
    for i in chosen {
        let table = cfg
            .table_base
            .checked_add(i.ifindex)
            .filter(|t| !matches!(t, 0 | 253..=255))
            .with_context(|| {
                format!(
                    "--table-base {} + ifindex {} of {} gives no usable table (overflow, 0 or 253-255 are reserved): choose another --table-base",
                    cfg.table_base, i.ifindex, i.name
                )
            })?;
        let gw = |v6: bool| -> Option<Gateway> {
            if let Some(g) = cfg.gateway.filter(|g| g.is_ipv6() == v6) {
                return Some(Gateway {
                    addr: g,
                    source: GatewaySource::Configured,
                });
            }
            if let Some((_, g)) = d
                .defaults
                .iter()
                .find(|(ix, g)| *ix == i.ifindex && g.is_ipv6() == v6)
            {
                return Some(Gateway {
                    addr: *g,
                    source: GatewaySource::MainTable,
                });
            }
            if v6 {
                return None; // IPv6: the router advertises itself; without one, subnet route only.
            }
            let a = i
                .addrs
                .iter()
                .find(|a| a.addr.is_ipv4() && a.prefix_len <= 30)?;
            let IpAddr::V4(net) = network(a.addr, a.prefix_len) else {
                unreachable!()
            };
            Some(Gateway {
                addr: IpAddr::V4(Ipv4Addr::from(u32::from(net) + 1)),
                source: GatewaySource::SubnetFirstHost,
            })
        };
        managed.push(ManagedInterface {
            ifindex: i.ifindex,
            name: i.name.clone(),
            mac: i.mac,
            mtu: i.mtu,
            table,
            addrs: i.addrs.clone(),
            prefixes: cfg
                .prefixes
                .iter()
                .filter(|(s, _)| matches(i, s))
                .map(|(_, p)| *p)
                .collect(),
            gateway_v4: gw(false),
            gateway_v6: gw(true),
        });
    }
    Ok((Selection::Managed(managed), notes))
}

/// The rules and routes the managed interfaces need (see the module doc for the layout).
pub fn desired(managed: &[ManagedInterface], cfg: &Config) -> (Vec<Rule>, Vec<Route>) {
    let p = cfg.priority;
    let mut rules = Vec::new();
    let mut routes = Vec::new();
    let mut families = BTreeSet::new();
    for m in managed {
        let sources = m.addrs.iter().map(|a| (a.addr, host_len(&a.addr))).chain(
            m.prefixes
                .iter()
                .map(|p| (network(p.addr, p.prefix_len), p.prefix_len)),
        );
        for (addr, len) in sources {
            let v6 = addr.is_ipv6();
            families.insert(v6);
            rules.push(Rule {
                v6,
                priority: p,
                from: Some((addr, len)),
                table: m.table,
                suppress_prefixlen: Some(0),
            });
            rules.push(Rule {
                v6,
                priority: p + 2,
                from: Some((addr, len)),
                table: m.table,
                suppress_prefixlen: None,
            });
        }
        let mut subnets = BTreeSet::new();
        for a in &m.addrs {
            let net = (network(a.addr, a.prefix_len), a.prefix_len);
            if a.prefix_len == host_len(&a.addr) || !subnets.insert(net) {
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
        for gw in [m.gateway_v4, m.gateway_v6].into_iter().flatten() {
            let v6 = gw.addr.is_ipv6();
            if !m.addrs.iter().any(|a| a.addr.is_ipv6() == v6) {
                continue; // no source of this family on the interface
            }
            let any: IpAddr = if v6 {
                Ipv6Addr::UNSPECIFIED.into()
            } else {
                Ipv4Addr::UNSPECIFIED.into()
            };
            routes.push(Route {
                table: m.table,
                dst: (any, 0),
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
        });
    }
    rules.sort();
    (rules, routes)
}

/// enipin's rules and routes as installed now (protocol 229 only).
pub fn installed(d: &Discovery) -> (Vec<Rule>, Vec<Route>) {
    let rules = d
        .rules
        .iter()
        .filter(|r| netlink::rule_protocol(r) == RTPROT_ENIPIN)
        .map(netlink::rule_from_message)
        .collect();
    let routes = d
        .routes
        .iter()
        .filter(|r| netlink::route_protocol(r) == RTPROT_ENIPIN)
        .map(|r| {
            let mut rt = netlink::route_from_message(r);
            rt.dev = d
                .by_index(rt.oif)
                .map(|i| i.name.clone())
                .unwrap_or_else(|| format!("if{}", rt.oif));
            rt
        })
        .collect();
    (rules, routes)
}

/// Someone else's rules at our priorities or pointing at our tables, or their routes in our
/// tables: enipin would change their meaning, so it refuses before changing anything.
pub fn check_conflicts(d: &Discovery, managed: &[ManagedInterface], cfg: &Config) -> Result<()> {
    let tables: BTreeSet<u32> = managed.iter().map(|m| m.table).collect();
    let prios = cfg.priority..=cfg.priority + 2;
    for r in d
        .rules
        .iter()
        .filter(|r| netlink::rule_protocol(r) != RTPROT_ENIPIN)
    {
        let (prio, table) = (netlink::rule_priority(r), netlink::rule_table(r));
        if prios.contains(&prio) || tables.contains(&table) {
            let rule = netlink::rule_from_message(r);
            bail!(
                "rule `{}` (protocol {}) is not enipin's but uses priority {prio} / table {table}, which enipin \
                 needs (priorities {}-{}, tables {:?}); nothing was changed. Choose another --priority or --table-base",
                rule.ip_args()
                    .replace(&format!(" proto {RTPROT_ENIPIN}"), ""),
                netlink::rule_protocol(r),
                cfg.priority,
                cfg.priority + 2,
                tables
            );
        }
    }
    for r in d
        .routes
        .iter()
        .filter(|r| netlink::route_protocol(r) != RTPROT_ENIPIN)
    {
        let table = netlink::route_table(r);
        if tables.contains(&table) {
            let rt = netlink::route_from_message(r);
            bail!(
                "table {table} holds a route that is not enipin's ({}/{} protocol {}); nothing was changed. \
                 Choose another --table-base",
                rt.dst.0,
                rt.dst.1,
                netlink::route_protocol(r)
            );
        }
    }
    Ok(())
}

/// Desired vs installed, ordered so that no moment is worse than before: stale rules go first
/// (they point at tables about to change), then stale routes, then new routes (tables are
/// complete before a rule points at them), then new rules, then sysctls.
pub fn diff(
    want_rules: &[Rule],
    want_routes: &[Route],
    have_rules: &[Rule],
    have_routes: &[Route],
    sysctls: Vec<(String, String, String)>,
) -> Plan {
    let mut plan = Plan::default();
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

/// Parses `IFACE=CIDR` from `--prefix` (an IPv4 /28 or IPv6 /80 delegated by EC2, say).
pub fn parse_prefix_arg(s: &str) -> Result<(String, Prefix)> {
    let (iface, cidr) = s.split_once('=').with_context(|| {
        format!("--prefix {s:?}: expected IFACE=CIDR, e.g. eth1=198.18.0.64/28")
    })?;
    let (addr, len) = cidr
        .split_once('/')
        .with_context(|| format!("--prefix {s:?}: {cidr:?} has no /LEN"))?;
    let addr: IpAddr = addr
        .parse()
        .with_context(|| format!("--prefix {s:?}: {addr:?} is not an IP address"))?;
    let prefix_len: u8 = len
        .parse()
        .with_context(|| format!("--prefix {s:?}: {len:?} is not a prefix length"))?;
    if iface.is_empty() || prefix_len > host_len(&addr) {
        bail!(
            "--prefix {s:?}: expected IFACE=CIDR with a prefix length of at most {}",
            host_len(&addr)
        );
    }
    if network(addr, prefix_len) != addr {
        bail!(
            "--prefix {s:?}: {addr} has host bits set for /{prefix_len} (network is {})",
            network(addr, prefix_len)
        );
    }
    Ok((iface.to_owned(), Prefix { addr, prefix_len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_arg() {
        let (i, p) = parse_prefix_arg("eth1=198.18.0.64/28").unwrap();
        assert_eq!(i, "eth1");
        assert_eq!(
            p,
            Prefix {
                addr: "198.18.0.64".parse().unwrap(),
                prefix_len: 28
            }
        );
        assert!(parse_prefix_arg("eth1=198.18.0.65/28").is_err());
        assert!(parse_prefix_arg("198.18.0.64/28").is_err());
        assert!(parse_prefix_arg("eth1=198.18.0.64/33").is_err());
        assert!(parse_prefix_arg("eth1=2001:db8:1::/80").is_ok());
    }

    fn eni(ifindex: u32, addrs: &[&str]) -> ManagedInterface {
        ManagedInterface {
            ifindex,
            name: format!("eth{ifindex}"),
            mac: [2, 0, 0, 0, 0, ifindex as u8],
            mtu: 1500,
            table: 20000 + ifindex,
            addrs: addrs
                .iter()
                .map(|a| {
                    let (a, l) = a.split_once('/').unwrap();
                    IfAddr {
                        addr: a.parse().unwrap(),
                        prefix_len: l.parse().unwrap(),
                    }
                })
                .collect(),
            prefixes: Vec::new(),
            gateway_v4: Some(Gateway {
                addr: "198.18.0.1".parse().unwrap(),
                source: GatewaySource::SubnetFirstHost,
            }),
            gateway_v6: None,
        }
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

    #[test]
    fn diff_applies_only_the_difference_in_a_safe_order() {
        let m = [eni(2, &["198.18.0.10/24"]), eni(3, &["198.18.0.11/24"])];
        let (rules, routes) = desired(&m, &Config::default());
        let plan = diff(
            &rules,
            &routes,
            &rules,
            &routes,
            vec![("k".into(), "1".into(), "1".into())],
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
            vec![("k".into(), "0".into(), "1".into())],
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
                key: "k".into(),
                old: "1".into(),
                new: "0".into()
            }
        );
    }

    #[test]
    fn networks() {
        assert_eq!(
            network("198.18.0.77".parse().unwrap(), 24),
            "198.18.0.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            network("2001:db8::5".parse().unwrap(), 64),
            "2001:db8::".parse::<IpAddr>().unwrap()
        );
    }
}
