//! `--connmark`'s conditions, read from the nftables ruleset (`nft -j list ruleset`, which shows
//! iptables-nft's rules too; iptables-legacy's are invisible to it):
//! - with connmark on, `nft` must run, or attach and watch refuse;
//! - DNAT to a secondary interface's address (one that is not the main table's default-route
//!   interface), or DNAT with no destination match at all (kube-proxy's NodePorts, docker's
//!   `-p 8080:80`: every address), while connmark is off: the replies are routed before
//!   conntrack gives them that address back, leave by the primary, and the datapath redirects
//!   every one of them (a second transmit per frame: 64-byte UDP at 0.84-0.89 of the rate of a
//!   correctly routed reply);
//! - with connmark on, other rules that set or match bits of its mask: the two overwrite or
//!   misread each other's marks.
//!
//! iptables-nft's DNAT is an `xt target "DNAT"` in the JSON (its matches are native, so its
//! `-d` reads as `ip daddr`); its MARK and CONNMARK targets show no bits, so check 3 cannot read
//! them. A DNAT in a base chain hooked elsewhere than prerouting (output: locally originated
//! connections) is left out: its replies arrive rather than leave.

use std::{collections::HashMap, net::IpAddr};

use nftables::{
    expr::{BinaryOperation, Expression, MetaKey, NamedExpression, Payload},
    helper,
    schema::{NfListObject, NfObject, Rule},
    stmt::{Operator, Statement},
    types::{NfFamily, NfHook},
};

use super::{Finding, Severity};
use crate::{
    model::connmark::TABLE,
    model::discovery::Discovery,
    model::route::MAIN_TABLE,
    model::{Cidr, ManagedInterface},
    settings::config::Config,
};

/// What the checks need from the host.
pub(super) struct Read {
    /// Whether `nft` runs; `Err`: why not.
    pub nft: Result<(), String>,
    /// The ruleset's objects when nft runs, or why listing them failed.
    pub ruleset: Option<Result<Ruleset, String>>,
}

/// The ruleset as far as the nftables crate's schema reads it.
pub(super) struct Ruleset {
    pub objects: Vec<NfObject<'static>>,
    /// Objects the schema does not know (a newer nft's statements): left out.
    pub unread: usize,
}

pub(super) fn read() -> Read {
    let nft = crate::kernel::nft::nft_available().map_err(|e| format!("{e:#}"));
    let ruleset = nft.is_ok().then(list);
    Read { nft, ruleset }
}

/// `nft -j list ruleset`, object by object: one statement the schema lacks then costs its rule,
/// not the whole ruleset.
fn list() -> Result<Ruleset, String> {
    let raw = helper::get_current_ruleset_raw(helper::DEFAULT_NFT, helper::DEFAULT_ARGS)
        .map_err(|e| format!("`nft -j list ruleset` failed: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&raw).map_err(|e| format!("nft printed no JSON: {e}"))?;
    let all = v["nftables"].as_array().cloned().unwrap_or_default();
    let total = all.len();
    let objects: Vec<NfObject<'static>> = all
        .into_iter()
        .filter_map(|o| serde_json::from_value(o).ok())
        .collect();
    Ok(Ruleset {
        unread: total - objects.len(),
        objects,
    })
}

pub(super) fn check(
    read: &Read,
    d: &Discovery,
    managed: &[ManagedInterface],
    cfg: &Config,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if cfg.connmark {
        out.push(match &read.nft {
            Ok(()) => Finding::ok(
                "connmark nft",
                "nft runs: connmark can keep its table".into(),
            ),
            Err(e) => Finding::new(
                "connmark nft",
                Severity::Conflict,
                format!("connmark is on but nft does not run ({e}): attach and watch refuse"),
            )
            .fix(
                "install the nftables package (nft 0.9.3 or later), or turn connmark off \
                 (layers.connmark = false)",
            ),
        });
    }
    match &read.ruleset {
        // connmark on: the conflict above says it all.
        None if cfg.connmark => {}
        None => out.push(Finding::ok(
            "connmark dnat",
            "nft is not installed: nftables DNAT could not be read".into(),
        )),
        Some(Err(e)) => out.push(
            Finding::new(
                "connmark dnat",
                Severity::Warning,
                format!("the nftables ruleset could not be read, DNAT is not checked: {e}"),
            )
            .fix("see nft's message"),
        ),
        Some(Ok(r)) => {
            out.push(dnat(r, &secondaries(d, managed), cfg.connmark));
            if cfg.connmark {
                out.extend(mask(r, cfg.connmark_mask));
            }
        }
    }
    out
}

/// A managed interface's address whose replies a DNAT'd connection misroutes.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    name: String,
    addr: IpAddr,
}

/// The managed addresses whose replies the main table sends out of another interface: those of
/// interfaces other than the one of the family's preferred default route (the lowest metric; the
/// lab and EC2's seed have one per ENI). Without a default route in the family there is no
/// primary to leave by.
fn secondaries(d: &Discovery, managed: &[ManagedInterface]) -> Vec<Target> {
    let primary = |v6: bool| {
        d.routes
            .iter()
            .map(|r| &r.route)
            .filter(|r| r.table == MAIN_TABLE && r.dst.prefix_len == 0 && r.oif != 0)
            .filter(|r| r.v6() == v6)
            .min_by_key(|r| r.metric)
            .map(|r| r.oif)
    };
    let (v4, v6) = (primary(false), primary(true));
    managed
        .iter()
        .flat_map(|m| m.addrs.iter().map(move |a| (m, a.addr)))
        .filter(|(m, a)| {
            let p = if a.is_ipv6() { v6 } else { v4 };
            p.is_some_and(|p| p != m.ifindex)
        })
        .map(|(m, addr)| Target {
            name: m.name.clone(),
            addr,
        })
        .collect()
}

/// Where a rule is, for an operator: `table ip nat chain PREROUTING handle 3`.
fn at(r: &Rule<'_>) -> String {
    let family = serde_json::to_value(r.family)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let handle = r.handle.map(|h| format!(" handle {h}")).unwrap_or_default();
    format!("table {family} {} chain {}{handle}", r.table, r.chain)
}

fn rules(r: &Ruleset) -> impl Iterator<Item = &Rule<'static>> {
    r.objects.iter().filter_map(|o| match o {
        NfObject::ListObject(NfListObject::Rule(r)) => Some(r),
        _ => None,
    })
}

/// The hook of every base chain, by (family, table, chain).
fn hooks(r: &Ruleset) -> HashMap<(NfFamily, &str, &str), NfHook> {
    r.objects
        .iter()
        .filter_map(|o| match o {
            NfObject::ListObject(NfListObject::Chain(c)) => c
                .hook
                .map(|h| ((c.family, c.table.as_ref(), c.name.as_ref()), h)),
            _ => None,
        })
        .collect()
}

fn is_dnat(s: &Statement<'_>) -> bool {
    match s {
        Statement::DNAT(_) => true,
        Statement::XT(Some(v)) => v["type"] == "target" && v["name"] == "DNAT",
        _ => false,
    }
}

/// Check 2: the DNAT rules that reach a secondary's address.
fn dnat(r: &Ruleset, targets: &[Target], connmark: bool) -> Finding {
    let hooks = hooks(r);
    let mut hits: Vec<String> = Vec::new();
    let mut reached: Vec<&Target> = Vec::new();
    for rule in rules(r) {
        let hook = hooks.get(&(rule.family, rule.table.as_ref(), rule.chain.as_ref()));
        if !rule.expr.iter().any(is_dnat) || hook.is_some_and(|h| *h != NfHook::Prerouting) {
            continue;
        }
        let daddr = daddr_matches(rule);
        let these: Vec<&Target> = targets
            .iter()
            .filter(|t| applies(r, rule, &daddr, t.addr))
            .collect();
        if these.is_empty() {
            continue;
        }
        let what = if daddr.is_empty() {
            "every address".to_owned()
        } else {
            let addrs: Vec<String> = these.iter().map(|t| t.addr.to_string()).collect();
            addrs.join(", ")
        };
        hits.push(format!("{} ({what})", at(rule)));
        for t in these {
            if !reached.contains(&t) {
                reached.push(t);
            }
        }
    }
    let check = "connmark dnat";
    if connmark {
        let meaning = match hits.len() {
            0 => "DNAT'd replies are routed by connmark".to_owned(),
            n => format!(
                "DNAT'd replies are routed by connmark ({n} DNAT rule(s) reach a secondary's address)"
            ),
        };
        return Finding::ok(check, meaning);
    }
    if hits.is_empty() {
        return Finding::ok(
            check,
            "no nftables DNAT reaches a secondary interface's address".into(),
        );
    }
    let reached: Vec<String> = reached
        .iter()
        .map(|t| format!("{} {}", t.name, t.addr))
        .collect();
    // Named, up to 5: kube-proxy writes one per endpoint.
    const SHOWN: usize = 5;
    let mut list = hits[..hits.len().min(SHOWN)].join("; ");
    if hits.len() > SHOWN {
        list.push_str(&format!("; and {} more", hits.len() - SHOWN));
    }
    Finding::new(
        check,
        Severity::Warning,
        format!(
            "{} DNAT rule(s) reach {}: {list}: replies of these DNAT'd connections leave by the \
             primary and are redirected by the datapath, a second transmit per packet",
            hits.len(),
            reached.join(", ")
        ),
    )
    .fix("turn connmark on (layers.connmark = true / --connmark)")
}

/// A rule's `ip daddr` / `ip6 daddr` matches: (negated, right-hand side, IPv6).
fn daddr_matches<'r>(rule: &'r Rule<'static>) -> Vec<(bool, &'r Expression<'static>, bool)> {
    rule.expr
        .iter()
        .filter_map(|s| match s {
            Statement::Match(m) => match &m.left {
                Expression::Named(NamedExpression::Payload(Payload::PayloadField(p)))
                    if p.field == "daddr" && (p.protocol == "ip" || p.protocol == "ip6") =>
                {
                    Some((m.op == Operator::NEQ, &m.right, p.protocol == "ip6"))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Whether `rule` DNATs connections to `addr`: its table's family takes `addr`'s, and every
/// destination match holds (one that cannot be read does not).
fn applies(
    r: &Ruleset,
    rule: &Rule<'static>,
    daddr: &[(bool, &Expression<'static>, bool)],
    addr: IpAddr,
) -> bool {
    let family_ok = match rule.family {
        NfFamily::IP => addr.is_ipv4(),
        NfFamily::IP6 => addr.is_ipv6(),
        _ => true,
    };
    family_ok
        && daddr.iter().all(|(neg, right, v6)| {
            *v6 == addr.is_ipv6() && contains(r, rule, right, addr).is_some_and(|c| c != *neg)
        })
}

/// Whether `e` (an address, a prefix, a range, an anonymous or named set) holds `addr`; `None`:
/// it cannot be read (a map, a concatenation).
fn contains(
    r: &Ruleset,
    rule: &Rule<'static>,
    e: &Expression<'static>,
    addr: IpAddr,
) -> Option<bool> {
    let any = |items: &mut dyn Iterator<Item = &Expression<'static>>| {
        let mut unknown = false;
        for i in items {
            match contains(r, rule, i, addr) {
                Some(true) => return Some(true),
                None => unknown = true,
                Some(false) => {}
            }
        }
        (!unknown).then_some(false)
    };
    match e {
        Expression::String(s) => match s.strip_prefix('@') {
            Some(name) => {
                let set = r.objects.iter().find_map(|o| match o {
                    NfObject::ListObject(NfListObject::Set(s))
                        if s.family == rule.family && s.table == rule.table && s.name == name =>
                    {
                        Some(s)
                    }
                    _ => None,
                })?;
                any(&mut set.elem.iter().flat_map(|e| e.iter()))
            }
            None => s.parse::<IpAddr>().ok().map(|a| a == addr),
        },
        Expression::Named(NamedExpression::Prefix(p)) => {
            let Expression::String(a) = p.addr.as_ref() else {
                return None;
            };
            let net = Cidr {
                addr: a.parse().ok()?,
                prefix_len: u8::try_from(p.len).ok()?,
            };
            let host = Cidr {
                addr,
                prefix_len: net.prefix_len,
            };
            Some(net.addr.is_ipv6() == addr.is_ipv6() && net.network() == host.network())
        }
        Expression::Range(range) => {
            let [Expression::String(lo), Expression::String(hi)] = &range.range else {
                return None;
            };
            let (lo, hi): (IpAddr, IpAddr) = (lo.parse().ok()?, hi.parse().ok()?);
            Some(lo.is_ipv6() == addr.is_ipv6() && lo <= addr && addr <= hi)
        }
        Expression::Named(NamedExpression::Set(items)) => {
            any(&mut items.iter().filter_map(|i| match i {
                nftables::expr::SetItem::Element(e) => Some(e),
                _ => None,
            }))
        }
        Expression::Named(NamedExpression::Elem(el)) => contains(r, rule, &el.val, addr),
        _ => None,
    }
}

/// `meta mark` or `ct mark`, if `e` is one.
fn mark_key(e: &Expression<'_>) -> Option<&'static str> {
    match e {
        Expression::Named(NamedExpression::Meta(m)) if m.key == MetaKey::Mark => Some("meta mark"),
        Expression::Named(NamedExpression::CT(c)) if c.key == "mark" => Some("ct mark"),
        _ => None,
    }
}

/// The bits of `key` that `key set value` may change: those of the constants it ors or xors in,
/// and those it masks off; every bit when `value` does not start from `key` (a constant, a copy).
fn changed(value: &Expression<'_>, key: &Expression<'_>) -> u32 {
    if value == key {
        return 0;
    }
    let Expression::BinaryOperation(op) = value else {
        return u32::MAX;
    };
    match op.as_ref() {
        BinaryOperation::AND(a, Expression::Number(k)) => changed(a, key) | !k,
        BinaryOperation::XOR(a, Expression::Number(v)) => changed(a, key) | v,
        BinaryOperation::OR(items) => {
            let mut bits = 0;
            let mut base = None;
            for i in items {
                match i {
                    Expression::Number(v) => bits |= v,
                    e if base.is_none() => base = Some(changed(e, key)),
                    _ => return u32::MAX,
                }
            }
            base.map_or(u32::MAX, |b| b | bits)
        }
        _ => u32::MAX,
    }
}

/// What one statement does with mark bits: ("sets"/"matches", key, bits).
fn mark_use(s: &Statement<'_>) -> Option<(&'static str, &'static str, u32)> {
    match s {
        Statement::Mangle(m) => mark_key(&m.key).map(|k| ("sets", k, changed(&m.value, &m.key))),
        Statement::Match(m) => match &m.left {
            e if mark_key(e).is_some() => mark_key(e).map(|k| ("matches", k, u32::MAX)),
            Expression::BinaryOperation(op) => match op.as_ref() {
                BinaryOperation::AND(e, Expression::Number(bits)) => {
                    mark_key(e).map(|k| ("matches", k, *bits))
                }
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// Check 3: other rules that set or match bits of connmark's mask.
fn mask(r: &Ruleset, mask: u32) -> Vec<Finding> {
    let mut out = Vec::new();
    for rule in rules(r).filter(|x| !(x.family == NfFamily::INet && x.table == TABLE)) {
        for (does, key, bits) in rule.expr.iter().filter_map(mark_use) {
            let overlap = bits & mask;
            if overlap == 0 {
                continue;
            }
            out.push(
                Finding::new(
                    "connmark mask",
                    Severity::Warning,
                    format!(
                        "{} {does} {key} bits {overlap:#010x} of connmark's mask {mask:#010x}: \
                         the two overwrite or misread each other's marks",
                        at(rule)
                    ),
                )
                .fix("choose another --connmark-mask (layers.connmark-mask), clear of these bits"),
            );
        }
    }
    if out.is_empty() {
        let mut meaning =
            format!("no other nftables rule sets or matches bits of connmark's mask {mask:#010x}");
        if r.unread > 0 {
            meaning.push_str(&format!(
                " ({} object(s) nft's schema here does not know were not read)",
                r.unread
            ));
        }
        out.push(Finding::ok("connmark mask", meaning));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::route::{InstalledRoute, Route};

    /// `json`: what `nft -j list ruleset` prints.
    fn ruleset(json: &str) -> Ruleset {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let objects = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| serde_json::from_value(o.clone()).unwrap())
            .collect();
        Ruleset { objects, unread: 0 }
    }

    /// nft's listing of the publish table of tests/tests/dnat.rs, extended: a named set with a
    /// prefix and a range, an anonymous set, a negated match, iptables-nft's DNAT, an OUTPUT DNAT.
    const PUBLISH: &str = r#"{"nftables":[{"metainfo":{"version":"1.0.6","json_schema_version":1}},
      {"table":{"family":"ip","name":"publish","handle":1}},
      {"set":{"family":"ip","name":"s","table":"publish","type":"ipv4_addr","handle":2,"flags":["interval"],
        "elem":["198.18.0.99",{"prefix":{"addr":"198.18.4.0","len":24}},{"range":["198.18.5.1","198.18.5.9"]}]}},
      {"chain":{"family":"ip","table":"publish","name":"pre","handle":1,"type":"nat","hook":"prerouting","prio":-100,"policy":"accept"}},
      {"chain":{"family":"ip","table":"publish","name":"out","handle":9,"type":"nat","hook":"output","prio":-100,"policy":"accept"}},
      {"rule":{"family":"ip","table":"publish","chain":"pre","handle":3,"expr":[
        {"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":"198.18.0.11"}},
        {"match":{"op":"==","left":{"payload":{"protocol":"icmp","field":"type"}},"right":"echo-request"}},
        {"dnat":{"addr":"198.19.1.2"}}]}},
      {"rule":{"family":"ip","table":"publish","chain":"pre","handle":4,"expr":[
        {"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":"@s"}},
        {"dnat":{"addr":"198.19.1.2","port":8080}}]}},
      {"rule":{"family":"ip","table":"publish","chain":"pre","handle":6,"expr":[
        {"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":{"set":["198.18.0.12",{"prefix":{"addr":"198.18.2.0","len":24}}]}}},
        {"dnat":{"addr":"198.19.1.2"}}]}},
      {"rule":{"family":"ip","table":"publish","chain":"pre","handle":7,"expr":[
        {"match":{"op":"!=","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":"198.18.0.11"}},
        {"dnat":{"addr":"198.19.1.2"}}]}},
      {"rule":{"family":"ip","table":"publish","chain":"out","handle":10,"expr":[
        {"dnat":{"addr":"198.19.1.2"}}]}}]}"#;

    fn target(name: &str, addr: &str) -> Target {
        Target {
            name: name.into(),
            addr: addr.parse().unwrap(),
        }
    }

    fn meaning_of(r: &Ruleset, targets: &[Target], connmark: bool) -> Finding {
        dnat(r, targets, connmark)
    }

    #[test]
    fn dnat_to_a_secondary_by_address_prefix_range_or_set_is_a_warning_until_connmark() {
        let r = ruleset(PUBLISH);
        let f = meaning_of(&r, &[target("eth1", "198.18.0.11")], false);
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(
            f.meaning,
            "1 DNAT rule(s) reach eth1 198.18.0.11: table ip publish chain pre handle 3 \
             (198.18.0.11): replies of these DNAT'd connections leave by the primary and are \
             redirected by the datapath, a second transmit per packet"
        );
        assert_eq!(
            f.fix.as_deref(),
            Some("turn connmark on (layers.connmark = true / --connmark)")
        );
        // The named set's prefix and range, the anonymous set's prefix, the negated match.
        for (addr, handles) in [
            ("198.18.4.7", &[4, 7][..]),
            ("198.18.5.9", &[4, 7]),
            ("198.18.2.1", &[6, 7]),
            ("198.18.0.99", &[4, 7]),
        ] {
            let f = meaning_of(&r, &[target("eth2", addr)], false);
            for h in handles {
                assert!(
                    f.meaning.contains(&format!("handle {h} ")),
                    "{addr}: {}",
                    f.meaning
                );
            }
            assert!(
                !f.meaning.contains("handle 10 "),
                "output DNAT: {}",
                f.meaning
            );
            assert!(!f.meaning.contains("handle 3 "), "{}", f.meaning);
        }
        // An IPv6 address: the table is ip.
        let f = meaning_of(&r, &[target("eth1", "2001:db8::11")], false);
        assert_eq!(f.severity, Severity::Ok, "{}", f.meaning);
        let f = meaning_of(&r, &[target("eth1", "198.18.0.11")], true);
        assert_eq!(
            (f.severity, f.meaning.as_str()),
            (
                Severity::Ok,
                "DNAT'd replies are routed by connmark (1 DNAT rule(s) reach a secondary's address)"
            )
        );
    }

    /// iptables-nft's `-p tcp --dport 82 -j DNAT`: no destination match, every address.
    #[test]
    fn an_iptables_nft_dnat_without_a_destination_reaches_every_address() {
        let r = ruleset(
            r#"{"nftables":[{"table":{"family":"ip","name":"nat","handle":1}},
              {"chain":{"family":"ip","table":"nat","name":"DOCKER","handle":5}},
              {"rule":{"family":"ip","table":"nat","chain":"DOCKER","handle":3,"expr":[
                {"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":82}},
                {"counter":{"packets":0,"bytes":0}},{"xt":{"type":"target","name":"DNAT"}}]}},
              {"rule":{"family":"ip","table":"nat","chain":"DOCKER","handle":4,"expr":[
                {"xt":{"type":"target","name":"MASQUERADE"}}]}}]}"#,
        );
        let f = meaning_of(
            &r,
            &[target("eth1", "198.18.0.11"), target("eth2", "198.18.1.11")],
            false,
        );
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.meaning.starts_with(
                "1 DNAT rule(s) reach eth1 198.18.0.11, eth2 198.18.1.11: table ip nat chain \
                 DOCKER handle 3 (every address): "
            ),
            "{}",
            f.meaning
        );
        assert_eq!(meaning_of(&r, &[], false).severity, Severity::Ok);
    }

    #[test]
    fn the_preferred_default_route_s_interface_is_the_primary() {
        let eth = |ix: u32, a: &str| {
            ManagedInterface::fixture(ix, &format!("eth{ix}"), vec![a.parse().unwrap()])
        };
        let managed = [
            eth(2, "198.18.0.10/24"),
            eth(3, "198.18.0.11/24"),
            eth(4, "2001:db8::4/64"),
            eth(5, "198.18.0.12/24"),
        ];
        // One default per ENI as the lab and EC2 have them (eth3's preferred), none for IPv6.
        let default = |oif: u32, metric: u32| InstalledRoute {
            protocol: 3,
            route: Route {
                table: MAIN_TABLE,
                dst: "0.0.0.0/0".parse().unwrap(),
                gateway: Some("198.18.0.1".parse().unwrap()),
                oif,
                dev: format!("eth{oif}"),
                src: None,
                scope_link: false,
                metric,
            },
        };
        let mut d = discovery();
        d.routes = vec![default(2, 101), default(3, 100), default(5, 102)];
        assert_eq!(
            secondaries(&d, &managed),
            [target("eth2", "198.18.0.10"), target("eth5", "198.18.0.12")]
        );
        // An IPv6 default on eth2: eth4's address leaves by it.
        d.routes.push(default(2, 1024));
        d.routes[3].route.dst = "::/0".parse().unwrap();
        assert_eq!(
            secondaries(&d, &managed),
            [
                target("eth2", "198.18.0.10"),
                target("eth4", "2001:db8::4"),
                target("eth5", "198.18.0.12")
            ]
        );
    }

    fn discovery() -> Discovery {
        Discovery {
            interfaces: Vec::new(),
            ..Discovery::default()
        }
    }

    fn read(nft: Result<(), &str>, ruleset: Option<Result<Ruleset, String>>) -> Read {
        Read {
            nft: nft.map_err(str::to_owned),
            ruleset,
        }
    }

    #[test]
    fn connmark_without_nft_is_a_conflict_and_no_nft_without_connmark_is_fine() {
        let d = discovery();
        let on = Config {
            connmark: true,
            ..Config::default()
        };
        let f = check(&read(Err("nft is not in PATH"), None), &d, &[], &on);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].check, "connmark nft");
        assert_eq!(f[0].severity, Severity::Conflict);
        assert!(
            f[0].meaning.contains("(nft is not in PATH)"),
            "{}",
            f[0].meaning
        );
        assert!(
            f[0].fix
                .as_deref()
                .unwrap()
                .starts_with("install the nftables package")
        );
        let f = check(
            &read(Err("nft is not in PATH"), None),
            &d,
            &[],
            &Config::default(),
        );
        assert_eq!(
            f,
            [Finding::ok(
                "connmark dnat",
                "nft is not installed: nftables DNAT could not be read".into()
            )]
        );
        let f = check(&read(Ok(()), Some(Ok(ruleset(PUBLISH)))), &d, &[], &on);
        let checks: Vec<_> = f.iter().map(|x| (x.check.as_str(), x.severity)).collect();
        assert_eq!(
            checks,
            [
                ("connmark nft", Severity::Ok),
                ("connmark dnat", Severity::Ok),
                ("connmark mask", Severity::Ok)
            ]
        );
        let f = check(
            &read(Ok(()), Some(Err("nft: boom".into()))),
            &d,
            &[],
            &Config::default(),
        );
        assert_eq!(f[0].severity, Severity::Warning);
    }

    #[test]
    fn other_rules_setting_or_matching_the_mask_s_bits_are_named() {
        // kube-proxy's `meta mark set mark or 0x4000`, a whole-mark set, a masked match, enipin's
        // own table (left out).
        let r = ruleset(
            r#"{"nftables":[
              {"rule":{"family":"ip","table":"mangle","chain":"pre","handle":8,"expr":[
                {"mangle":{"key":{"meta":{"key":"mark"}},"value":{"|":[{"meta":{"key":"mark"}},16384]}}}]}},
              {"rule":{"family":"ip","table":"mangle","chain":"pre","handle":9,"expr":[
                {"match":{"op":"==","left":{"&":[{"meta":{"key":"mark"}},16384]},"right":16384}},
                {"mangle":{"key":{"ct":{"key":"mark"}},"value":1}}]}},
              {"rule":{"family":"ip","table":"mangle","chain":"pre","handle":10,"expr":[
                {"match":{"op":"==","left":{"&":[{"ct":{"key":"mark"}},50331648]},"right":0}},
                {"mangle":{"key":{"meta":{"key":"mark"}},"value":{"|":[{"&":[{"meta":{"key":"mark"}},4294967040]},3]}}}]}},
              {"rule":{"family":"inet","table":"enipin","chain":"restore","handle":11,"expr":[
                {"match":{"op":"==","left":{"&":[{"ct":{"key":"mark"}},4278190080]},"right":33554432}}]}}]}"#,
        );
        let f = mask(&r, 0xff00_0000);
        let m: Vec<&str> = f.iter().map(|x| x.meaning.as_str()).collect();
        assert_eq!(
            m,
            [
                "table ip mangle chain pre handle 9 sets ct mark bits 0xff000000 of connmark's \
                 mask 0xff000000: the two overwrite or misread each other's marks",
                "table ip mangle chain pre handle 10 matches ct mark bits 0x03000000 of \
                 connmark's mask 0xff000000: the two overwrite or misread each other's marks",
            ]
        );
        assert!(f.iter().all(|x| x.severity == Severity::Warning));
        // Clear of kube-proxy's 0x4000 and the low byte: only the whole-mark set overlaps.
        let f = mask(&r, 0x00ff_0000);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].meaning
                .contains("handle 9 sets ct mark bits 0x00ff0000")
        );
        let f = mask(&r, 0x0000_4000);
        assert_eq!(f.len(), 3, "{f:?}");
        assert_eq!(
            mask(&ruleset(r#"{"nftables":[]}"#), 0xff00_0000)[0].severity,
            Severity::Ok
        );
    }
}
