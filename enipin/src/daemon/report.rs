//! What `watch` says about a reconcile: why it ran (the events, in words) and what it changed,
//! as one short line: counts by kind and the first few changes, never every object (after 400
//! address events the full list was one 36 KB line). Also which events need no reconcile: the
//! echo of enipin's own changes, and netconf notifications of nothing enipin plans from.

use std::collections::BTreeSet;

use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};

use crate::{
    datapath,
    engine::{
        applied::{Applied, Kind},
        apply::Reconciled,
    },
    kernel::events::{Event, NETCONFA_IFINDEX_ALL, NetConf, RTM_NEWNETCONF},
    kernel::netlink,
    model::ManagedInterface,
    routing::plan::{Change, DiffFormat},
};

fn ifname(ifindex: u32) -> String {
    datapath::ifname(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}"))
}

/// The rules and routes the last reconcile removed, in enipin's diff format, and the links whose
/// sysctls it wrote (`link eth1`): the kernel announces each removal, and a sysctl written over
/// netlink (`RTM_SETLINK`) as a changed link; those announcements are not news.
#[derive(Debug, Default)]
pub(crate) struct OwnRemovals(BTreeSet<String>);

impl OwnRemovals {
    /// Replaces the set with the removals in `changes` (an older one's echoes have arrived, or
    /// were lost: a stale entry must not hide someone else's later removal of the same object).
    pub(crate) fn expect(&mut self, changes: &[Applied]) {
        let removed = changes.iter().filter_map(Applied::removed_rule_or_route);
        let links = changes.iter().filter_map(Applied::sysctl_link);
        self.0 = removed
            .map(|c| c.render(DiffFormat::Text))
            .chain(links.map(|name| format!("link {name}")))
            .collect();
    }

    /// True, once, for the announcement of the link `name` changed by enipin's sysctl write.
    fn take_link(&mut self, name: &str) -> bool {
        self.0.remove(&format!("link {name}"))
    }

    /// True, once, for the announcement of a removal enipin made.
    fn take(&mut self, change: &Change) -> bool {
        self.0.remove(&change.render(DiffFormat::Text))
    }
}

/// One event in words, for the log line of the reconcile it causes, with a rank: lower ranks
/// come first in the line. `None` for what needs no reconcile: the echo of enipin's own work (a
/// rule or route with its protocol added, or one it just removed), and a netconf message that
/// changes nothing planned for `managed` (see [`netconf`]).
pub(crate) fn describe(
    msg: &NetlinkMessage<Event>,
    own: &mut OwnRemovals,
    managed: &[ManagedInterface],
) -> Option<(u8, String)> {
    match &msg.payload {
        NetlinkPayload::InnerMessage(Event::Route(m)) => route(m, own),
        NetlinkPayload::InnerMessage(Event::NetConf(n)) => netconf(n, managed),
        NetlinkPayload::Overrun(_) => Some((0, "event buffer overrun (full resync)".to_owned())),
        _ => Some((3, "netlink event".to_owned())),
    }
}

/// A forwarding value other than the one the last reconcile planned from, for a managed
/// interface or for `all` (which sets every interface's): the owner's next hop depends on it
/// (the datapath's FIB lookup answers only for a family the device forwards). The kernel
/// announces every other netconf change too (rp_filter, which enipin's own sysctl writes
/// change, proxy_arp, `default`, interfaces enipin does not manage): none is planned from.
/// A value already planned (the reconcile that read it ran before its message was read) is no
/// news either.
fn netconf(n: &NetConf, managed: &[ManagedInterface]) -> Option<(u8, String)> {
    let on = n.forwarding.filter(|_| n.kind == RTM_NEWNETCONF)?;
    let (family, v6) = match i32::from(n.family) {
        libc::AF_INET => ("ipv4", false),
        libc::AF_INET6 => ("ipv6", true),
        _ => return None,
    };
    let planned = |m: &ManagedInterface| {
        if v6 { m.forwarding.v6 } else { m.forwarding.v4 }
    };
    let ifindex = n.ifindex?;
    let whose = if ifindex == NETCONFA_IFINDEX_ALL {
        managed.iter().any(|m| planned(m) != on).then_some("all")?
    } else {
        let m = managed
            .iter()
            .find(|m| i64::from(m.ifindex) == i64::from(ifindex))?;
        (planned(m) != on).then_some(m.name.as_str())?
    };
    Some((
        0,
        format!(
            "net.{family}.conf.{whose}.forwarding set to {}",
            u8::from(on)
        ),
    ))
}

fn route(m: &RouteNetlinkMessage, own: &mut OwnRemovals) -> Option<(u8, String)> {
    use RouteNetlinkMessage as M;
    use netlink_packet_route::address::AddressAttribute as A;
    let verb = |new: bool| if new { "added" } else { "deleted" };
    Some(match m {
        M::NewLink(l) | M::DelLink(l) => {
            let what = if matches!(m, M::DelLink(_)) {
                "removed"
            } else {
                "changed"
            };
            // The message names the link: it may be gone by now.
            let name = l.attributes.iter().find_map(|a| match a {
                netlink_packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            if matches!(m, M::NewLink(_)) && name.as_deref().is_some_and(|n| own.take_link(n)) {
                return None;
            }
            (
                0,
                format!(
                    "link {} {what}",
                    name.unwrap_or_else(|| ifname(l.header.index))
                ),
            )
        }
        M::NewAddress(a) | M::DelAddress(a) => {
            let ip = a.attributes.iter().find_map(|x| match x {
                A::Local(ip) | A::Address(ip) => Some(ip.to_string()),
                _ => None,
            });
            // IPv4 addresses carry their interface's name (the label).
            let dev = a.attributes.iter().find_map(|x| match x {
                A::Label(l) => Some(l.split(':').next().unwrap_or(l).to_owned()),
                _ => None,
            });
            let on = if matches!(m, M::NewAddress(_)) {
                "added on"
            } else {
                "deleted from"
            };
            let ip = ip.unwrap_or_else(|| "?".to_owned());
            let dev = dev.unwrap_or_else(|| ifname(a.header.index));
            (
                0,
                format!("address {ip}/{} {on} {dev}", a.header.prefix_len),
            )
        }
        M::NewRule(r) | M::DelRule(r) => {
            let new = matches!(m, M::NewRule(_));
            let r = netlink::decode_rule(r);
            if r.is_enipin() && (new || own.take(&Change::DelRule(r.rule.clone()))) {
                return None;
            }
            let proto = r.protocol;
            let rule = r.rule.ip_args();
            let rule = rule
                .rsplit_once(" proto ")
                .map_or(rule.as_str(), |(a, _)| a);
            (1, format!("rule {} `{rule} proto {proto}`", verb(new)))
        }
        M::NewRoute(r) | M::DelRoute(r) => {
            let new = matches!(m, M::NewRoute(_));
            let mut r = netlink::decode_route(r);
            // Named as discovery names it, for the comparison with what enipin removed.
            r.route.dev =
                datapath::ifname(r.route.oif).unwrap_or_else(|| format!("if{}", r.route.oif));
            if r.is_enipin() && (new || own.take(&Change::DelRoute(r.route.clone()))) {
                return None;
            }
            let rt = r.route;
            (
                2,
                format!("route {} `{} table {}`", verb(new), rt.dst, rt.table),
            )
        }
        _ => (3, "netlink event".to_owned()),
    })
}

/// Why a reconcile is due: distinct event descriptions, most telling first (links and addresses,
/// then rules, then routes), in arrival order within a rank.
#[derive(Default)]
pub(crate) struct Reasons {
    seen: Vec<(u8, String)>,
    /// Events that were enipin's own echo.
    echoes: usize,
}

impl Reasons {
    pub(crate) fn add(&mut self, why: Option<(u8, String)>) {
        match why {
            Some(w) if !self.seen.contains(&w) => self.seen.push(w),
            Some(_) => {}
            None => self.echoes += 1,
        }
    }

    pub(crate) fn text(&self) -> String {
        const SHOWN: usize = 3;
        if self.seen.is_empty() {
            return format!("{} netlink event(s)", self.echoes);
        }
        let mut sorted: Vec<_> = self.seen.iter().collect();
        sorted.sort_by_key(|(rank, _)| *rank);
        let shown: Vec<_> = sorted.iter().map(|(_, w)| w.as_str()).collect();
        capped(&shown, SHOWN, ", ")
    }
}

/// The first `n` of `items` joined by `sep`, and how many more there are.
fn capped(items: &[&str], n: usize, sep: &str) -> String {
    let mut s = items.iter().take(n).copied().collect::<Vec<_>>().join(sep);
    if items.len() > n {
        s += &format!(" and {} more", items.len() - n);
    }
    s
}

/// Examples shown per kind, and the bytes of examples after which no more are shown: two rules
/// of 400 new addresses are about 170 bytes, and the whole line stays under 512.
const PER_KIND: usize = 2;
const SAMPLE_BYTES: usize = 160;

/// `rules +800 -2, owners +400`: counts by kind, in the order the kinds first appear.
fn counts(changes: &[Applied]) -> String {
    let mut by_kind: Vec<(Kind, [usize; 3])> = Vec::new();
    for c in changes {
        let (k, sign) = c.kind();
        let i = match by_kind.iter().position(|(n, _)| *n == k) {
            Some(i) => i,
            None => {
                by_kind.push((k, [0; 3]));
                by_kind.len() - 1
            }
        };
        by_kind[i].1[sign as usize] += 1;
    }
    let part = |(k, counts): &(Kind, [usize; 3])| {
        let mut s = k.name().to_owned();
        for (sign, n) in ["+", "-", "~"].iter().zip(counts) {
            if *n > 0 {
                s += &format!(" {sign}{n}");
            }
        }
        s
    };
    by_kind.iter().map(part).collect::<Vec<_>>().join(", ")
}

/// A few changes: at most [`PER_KIND`] of each kind, kinds in [`Kind`]'s order (plan order
/// within a kind), until [`SAMPLE_BYTES`]; then how many are not shown.
fn sample(changes: &[Applied]) -> String {
    let mut ranked: Vec<(Kind, String)> = changes
        .iter()
        .map(|c| (c.kind().0, c.to_string()))
        .collect();
    ranked.sort_by_key(|(k, _)| *k);
    let mut shown: Vec<(Kind, String)> = Vec::new();
    let mut bytes = 0;
    for (k, c) in ranked {
        if bytes >= SAMPLE_BYTES {
            break;
        }
        if shown.iter().filter(|(s, _)| *s == k).count() < PER_KIND {
            bytes += c.len() + 2;
            shown.push((k, c));
        }
    }
    let mut s = shown
        .iter()
        .map(|(_, c)| c.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if changes.len() > shown.len() {
        s += &format!(" and {} more", changes.len() - shown.len());
    }
    s
}

/// The reconcile's line: why, how long, counts by kind, what it manages, a few of the changes.
pub(crate) fn changed_line(r: &Reconciled, why: &Reasons, took_ms: u128) -> String {
    let names: Vec<_> = r.managed.iter().map(|m| m.name.as_str()).collect();
    let scope = match &r.idle {
        Some(why) => format!("nothing to manage ({why}): removed enipin's state"),
        None => format!("managing {}", capped(&names, 4, ", ")),
    };
    let metadata = r
        .metadata
        .as_ref()
        .map(|v| format!(" ({} metadata request(s))", v.requests))
        .unwrap_or_default();
    format!(
        "reconciled after {} in {took_ms} ms{metadata}: {} change(s) ({}), {scope}: {}",
        why.text(),
        r.changes.len(),
        counts(&r.changes),
        sample(&r.changes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{datapath::Change as DatapathChange, model::sysctl::Knob};

    /// Typed changes as a reconcile returns them.
    mod fixtures {
        use crate::{
            datapath::Change as DatapathChange,
            engine::applied::Applied,
            model::{
                route::{Route, Rule},
                sysctl::{Key, Knob},
            },
            routing::plan::Change,
        };

        pub(super) fn rule(from: &str, priority: u32) -> Applied {
            Applied::Rules(Change::AddRule(Rule {
                v6: false,
                priority,
                from: Some(format!("{from}/32").parse().unwrap()),
                table: 20003,
                suppress_prefixlen: (priority == 20000).then_some(0),
                fwmark: None,
            }))
        }

        pub(super) fn removed(a: Applied) -> Applied {
            match a {
                Applied::Rules(c) => Applied::Rules(c.inverse()),
                other => other,
            }
        }

        pub(super) fn default_route(oif: u32) -> Applied {
            Applied::Rules(Change::AddRoute(Route {
                table: 20000 + oif,
                dst: "0.0.0.0/0".parse().unwrap(),
                gateway: Some("198.18.0.1".parse().unwrap()),
                oif,
                dev: format!("eth{}", oif - 2),
                src: None,
                scope_link: false,
                metric: 0,
            }))
        }

        pub(super) fn sysctl(ifname: &str, knob: Knob) -> Applied {
            Applied::Rules(Change::Sysctl {
                key: Key::new(ifname, knob).unwrap(),
                old: "0".into(),
                new: "1".into(),
            })
        }

        pub(super) fn owner(addr: &str, ifindex: u32) -> Applied {
            Applied::Datapath(DatapathChange::SetOwner {
                addr: addr.parse().unwrap(),
                owner: enipin_ebpf::Owner { ifindex, mtu: 1500 },
                name: format!("eth{}", ifindex - 2),
            })
        }
    }
    use rtnetlink::packet_core::NetlinkHeader;

    fn netconf_event(family: i32, ifindex: i32, forwarding: Option<bool>) -> NetlinkMessage<Event> {
        let n = NetConf {
            kind: RTM_NEWNETCONF,
            family: family as u8,
            ifindex: Some(ifindex),
            forwarding,
        };
        NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(Event::NetConf(n)),
        )
    }

    /// Only a forwarding value other than the planned one, of a managed interface or of `all`,
    /// starts a reconcile: rp_filter (which enipin writes itself), `default`, another interface
    /// and a value already planned do not.
    /// A sysctl written over netlink comes back as a changed link: once per link written, no
    /// reason to reconcile; the next change of that link is one again.
    #[test]
    fn the_link_echo_of_enipins_own_sysctl_write_is_no_news() {
        use netlink_packet_route::link::{LinkAttribute, LinkMessage};
        let link = |name: &str| {
            let mut l = LinkMessage::default();
            l.attributes.push(LinkAttribute::IfName(name.to_owned()));
            NetlinkMessage::new(
                NetlinkHeader::default(),
                NetlinkPayload::InnerMessage(Event::Route(RouteNetlinkMessage::NewLink(l))),
            )
        };
        let mut own = OwnRemovals::default();
        own.expect(&[
            fixtures::sysctl("eth1", Knob::ArpIgnore),
            fixtures::sysctl("eth1", Knob::ArpAnnounce),
            fixtures::sysctl("eth0.100", Knob::RpFilter),
        ]);
        assert_eq!(describe(&link("eth1"), &mut own, &[]), None);
        assert_eq!(describe(&link("eth0.100"), &mut own, &[]), None);
        assert_eq!(
            describe(&link("eth1"), &mut own, &[]),
            Some((0, "link eth1 changed".to_owned()))
        );
        assert!(describe(&link("eth2"), &mut own, &[]).is_some());
    }

    #[test]
    fn a_forwarding_change_of_a_managed_interface_is_a_reason_and_other_netconf_is_not() {
        let mut eth1 = ManagedInterface::fixture(3, "eth1", Vec::new());
        eth1.forwarding.v4 = true;
        let managed = [ManagedInterface::fixture(2, "eth0", Vec::new()), eth1];
        let own = &mut OwnRemovals::default();
        let (v4, v6) = (libc::AF_INET, libc::AF_INET6);
        let mut why =
            |family, ifindex, fwd| describe(&netconf_event(family, ifindex, fwd), own, &managed);
        assert_eq!(
            why(v4, 3, Some(false)),
            Some((0, "net.ipv4.conf.eth1.forwarding set to 0".to_owned()))
        );
        assert_eq!(
            why(v6, 2, Some(true)),
            Some((0, "net.ipv6.conf.eth0.forwarding set to 1".to_owned()))
        );
        assert_eq!(why(v4, 3, Some(true)), None, "already planned");
        assert_eq!(why(v4, 3, None), None, "rp_filter, proxy_arp");
        assert_eq!(why(v4, 7, Some(true)), None, "not managed");
        assert_eq!(why(v4, -2, Some(true)), None, "default");
        assert_eq!(
            why(v4, NETCONFA_IFINDEX_ALL, Some(true)),
            Some((0, "net.ipv4.conf.all.forwarding set to 1".to_owned())),
            "eth0 does not forward yet"
        );
        assert_eq!(why(v6, NETCONFA_IFINDEX_ALL, Some(false)), None);
        let mut gone = netconf_event(v4, 3, Some(false));
        if let NetlinkPayload::InnerMessage(Event::NetConf(n)) = &mut gone.payload {
            n.kind = crate::kernel::events::RTM_DELNETCONF;
        }
        assert_eq!(describe(&gone, own, &managed), None, "an interface removed");
    }

    #[test]
    fn reasons_put_links_and_addresses_first_and_count_echoes() {
        let mut r = Reasons::default();
        assert_eq!(r.text(), "0 netlink event(s)");
        r.add(None);
        assert_eq!(r.text(), "1 netlink event(s)");
        r.add(Some((
            2,
            "route deleted `198.18.0.0/24 table 20003`".into(),
        )));
        r.add(Some((
            1,
            "rule deleted `from 198.18.0.11/32 lookup 20003 pref 20002 proto 229`".into(),
        )));
        r.add(Some((0, "link eth1 removed".into())));
        r.add(Some((0, "link eth1 removed".into())));
        assert_eq!(
            r.text(),
            "link eth1 removed, rule deleted `from 198.18.0.11/32 lookup 20003 pref 20002 proto 229`, \
             route deleted `198.18.0.0/24 table 20003`"
        );
        r.add(Some((0, "address 198.18.0.21/24 deleted from eth1".into())));
        assert!(
            r.text()
                .starts_with("link eth1 removed, address 198.18.0.21/24"),
            "{}",
            r.text()
        );
        assert!(r.text().ends_with(" and 1 more"), "{}", r.text());
    }

    /// 400 new addresses: 800 rules and 400 owner entries, said in a few hundred bytes.
    #[test]
    fn a_big_reconcile_is_counted_not_listed() {
        let mut changes = Vec::new();
        for i in 0..400 {
            let a = format!("198.18.{}.{}", 1 + i / 200, i % 200);
            changes.push(fixtures::rule(&a, 20000));
            changes.push(fixtures::rule(&a, 20002));
        }
        changes.push(fixtures::removed(fixtures::rule("198.18.0.9", 20002)));
        for i in 0..400 {
            changes.push(fixtures::owner(
                &format!("198.18.{}.{}", 1 + i / 200, i % 200),
                3,
            ));
        }
        let r = Reconciled {
            changes,
            ..Reconciled::default()
        };
        let mut why = Reasons::default();
        for i in 0..400 {
            why.add(Some((0, format!("address 198.18.1.{i}/24 added on eth1"))));
        }
        let line = changed_line(&r, &why, 35);
        assert!(line.len() < 450, "{} bytes: {line}", line.len());
        assert!(
            line.contains("1201 change(s) (rules +800 -1, owners +400)"),
            "{line}"
        );
        assert!(
            line.ends_with("+ owner 198.18.1.0 -> eth1 and 1198 more"),
            "{line}"
        );
    }

    #[test]
    fn a_small_reconcile_shows_rules_and_links_first() {
        let changes = [
            fixtures::default_route(4),
            fixtures::rule("198.18.0.12", 20002),
            fixtures::sysctl("eth2", Knob::ArpIgnore),
            Applied::Datapath(DatapathChange::Attach {
                ifindex: 4,
                name: "eth2".into(),
            }),
            fixtures::owner("198.18.0.12", 4),
            Applied::Datapath(DatapathChange::AddCounters { ifindex: 4 }),
        ];
        assert_eq!(
            sample(&changes),
            format!("{}; {}; {} and 3 more", changes[1], changes[3], changes[0])
        );
        assert_eq!(
            counts(&changes),
            "routes +1, rules +1, sysctls ~1, links +1, owners +1, counters +1"
        );
        let one = [Applied::Datapath(DatapathChange::RemoveOwner {
            addr: "198.18.0.12".parse().unwrap(),
        })];
        assert_eq!(sample(&one), "- owner 198.18.0.12");
    }
}
