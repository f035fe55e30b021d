//! The one rtnetlink connection: dumps of links, addresses, routes and rules, the add/delete
//! of enipin's own rules, routes and addresses, and the links' sysctls ([`crate::kernel::sysctl`]); plus
//! one blocking link request for a check outside the connection's tasks. Everything goes over
//! netlink, nothing shells out to `ip`.

use std::net::IpAddr;

use anyhow::{Context as _, Result, anyhow};
use futures::TryStreamExt as _;
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressMessage, AddressProtocol},
    link::{AfSpecInet, AfSpecUnspec, LinkAttribute, LinkExtentMask, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourState},
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
    rule::{RuleAction, RuleAttribute, RuleMessage},
    tc::{TcAttribute, TcHandle, TcMessage},
};
use rtnetlink::{
    Handle,
    packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload},
    sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
};

use crate::{
    model::address::Address,
    model::route::{Fwmark, InstalledRoute, InstalledRule, ObservedRule, Route, Rule, RuleVerb},
    model::{Cidr, Ipv4Conf, RTPROT_ENIPIN},
};

const EPERM: i32 = 1;
const ENODEV: i32 = 19;

/// Turns a netlink error into one that says what failed and, for EPERM, what to do.
fn nl_error(e: rtnetlink::Error, what: &str) -> anyhow::Error {
    match &e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == EPERM => {
            anyhow!("{what}: permission denied (EPERM): enipin must run as root with CAP_NET_ADMIN")
        }
        rtnetlink::Error::NetlinkError(m) => anyhow!("{what}: {}", m.to_io()),
        _ => anyhow!("{what}: {e}"),
    }
}

/// An rtnetlink connection to the current network namespace (the one `--netns` entered).
pub(crate) struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the socket; its connection task runs on the current tokio runtime.
    pub(crate) fn connect() -> Result<Self> {
        let (conn, handle, _) =
            rtnetlink::new_connection().context("opening an rtnetlink socket")?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    pub(crate) async fn links(&self) -> Result<Vec<LinkMessage>> {
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_error(e, "dumping links"))
    }

    pub(crate) async fn addresses(&self) -> Result<Vec<AddressMessage>> {
        self.handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_error(e, "dumping addresses"))
    }

    /// Every route of both families in every table.
    pub(crate) async fn routes(&self) -> Result<Vec<RouteMessage>> {
        let mut all = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            let mut routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(msg)
                .execute()
                .try_collect()
                .await
                .map_err(|e| nl_error(e, "dumping routes"))?;
            all.append(&mut routes);
        }
        Ok(all)
    }

    /// Every rule of both families.
    pub(crate) async fn rules(&self) -> Result<Vec<RuleMessage>> {
        let mut all = Vec::new();
        for v in [rtnetlink::IpVersion::V4, rtnetlink::IpVersion::V6] {
            let mut rules: Vec<RuleMessage> = self
                .handle
                .rule()
                .get(v)
                .execute()
                .try_collect()
                .await
                .map_err(|e| nl_error(e, "dumping rules"))?;
            all.append(&mut rules);
        }
        Ok(all)
    }

    /// The TC filters at an interface's clsact `egress` (or ingress) hook, for `doctor`.
    pub(crate) async fn filters(&self, ifindex: u32, egress: bool) -> Result<Vec<TcMessage>> {
        let req = self.handle.traffic_filter(ifindex as i32).get();
        let req = if egress { req.egress() } else { req.ingress() };
        req.execute()
            .try_collect()
            .await
            .map_err(|e| nl_error(e, "dumping TC filters"))
    }

    /// Changes `attributes` of the link named `name` (`RTM_SETLINK` by name), nothing else.
    pub(crate) async fn set_link(&self, name: &str, attributes: Vec<LinkAttribute>) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        m.attributes.extend(attributes);
        self.handle
            .link()
            .set(m)
            .execute()
            .await
            .map_err(|e| match &e {
                rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == ENODEV => gone(name),
                _ => nl_error(e, &format!("changing link {name}")),
            })
    }

    /// Adds `a` with enipin's protocol, `noprefixroute` (and `nodad` for IPv6).
    pub(crate) async fn add_address(&self, a: &Address) -> Result<()> {
        let mut req = self
            .handle
            .address()
            .add(a.ifindex, a.cidr.addr, a.cidr.prefix_len);
        let m = req.message_mut();
        let mut flags = AddressFlags::Noprefixroute;
        if a.cidr.is_ipv6() {
            flags |= AddressFlags::Nodad;
        }
        m.attributes.push(AddressAttribute::Flags(flags));
        m.attributes
            .push(AddressAttribute::Protocol(AddressProtocol::from(
                RTPROT_ENIPIN,
            )));
        req.execute()
            .await
            .map_err(|e| nl_error(e, &format!("adding address `{}`", a.ip_args())))
    }

    pub(crate) async fn del_address(&self, a: &Address) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = family(&a.cidr.addr);
        m.header.prefix_len = a.cidr.prefix_len;
        m.header.index = a.ifindex;
        m.attributes.push(AddressAttribute::Local(a.cidr.addr));
        m.attributes.push(AddressAttribute::Address(a.cidr.addr));
        if a.cidr.is_ipv6() {
            m.attributes.remove(0); // IPv6 has no IFA_LOCAL
        }
        self.handle
            .address()
            .del(m)
            .execute()
            .await
            .map_err(|e| nl_error(e, &format!("deleting address `{}`", a.ip_args())))
    }

    pub(crate) async fn add_rule(&self, rule: &Rule) -> Result<()> {
        let mut req = self.handle.rule().add();
        *req.message_mut() = rule_message(rule);
        req.execute()
            .await
            .map_err(|e| nl_error(e, &format!("adding rule `{}`", rule.ip_args())))
    }

    pub(crate) async fn del_rule(&self, rule: &Rule) -> Result<()> {
        self.handle
            .rule()
            .del(rule_message(rule))
            .execute()
            .await
            .map_err(|e| nl_error(e, &format!("deleting rule `{}`", rule.ip_args())))
    }

    /// Asks the kernel to resolve neighbour `addr` on `ifindex` (`NTF_USE`, as `ip neigh replace
    /// ADDR dev DEV use`): it creates the entry if there is none and starts ARP or neighbour
    /// solicitation, or refreshes a stale one, like a packet sent to it would; an entry of the
    /// kernel's cache (it ages and goes as any), nothing of enipin's to remove.
    pub(crate) async fn use_neighbour(&self, ifindex: u32, addr: IpAddr) -> Result<()> {
        self.handle
            .neighbours()
            .add(ifindex, addr)
            .state(NeighbourState::None)
            .flags(NeighbourFlags::Use)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                nl_error(
                    e,
                    &format!("resolving neighbour {addr} on ifindex {ifindex}"),
                )
            })
    }

    /// The neighbour entries of both families with a valid link-layer address (reachable,
    /// stale, delay, probe, permanent, noarp), as (ifindex, address).
    pub(crate) async fn valid_neighbours(&self) -> Result<Vec<(u32, IpAddr)>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut dump = self
                .handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute();
            while let Some(n) = dump
                .try_next()
                .await
                .map_err(|e| nl_error(e, "dumping neighbours"))?
            {
                let valid = matches!(
                    n.header.state,
                    NeighbourState::Reachable
                        | NeighbourState::Stale
                        | NeighbourState::Delay
                        | NeighbourState::Probe
                        | NeighbourState::Permanent
                        | NeighbourState::Noarp
                );
                let addr = n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        Some(IpAddr::V4(*a))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                        Some(IpAddr::V6(*a))
                    }
                    _ => None,
                });
                if let (true, Some(addr)) = (valid, addr) {
                    out.push((n.header.ifindex, addr));
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn add_route(&self, route: &Route) -> Result<()> {
        self.handle
            .route()
            .add(route_message(route))
            .execute()
            .await
            .map_err(|e| nl_error(e, &format!("adding route `{}`", route.ip_args())))
    }

    pub(crate) async fn del_route(&self, route: &Route) -> Result<()> {
        self.handle
            .route()
            .del(route_message(route))
            .execute()
            .await
            .map_err(|e| nl_error(e, &format!("deleting route `{}`", route.ip_args())))
    }
}

/// ENODEV: the interface went (or was renamed) since enipin looked.
fn gone(name: &str) -> anyhow::Error {
    anyhow!(
        "no interface is named {name} any more (ENODEV): it was removed or renamed since enipin \
         looked; run the command again (watch reconciles by itself)"
    )
}

/// The link named `name`, from one blocking `RTM_GETLINK` on a socket of its own (in the namespace
/// of the calling thread, as the connection is), statistics left out.
pub(crate) fn link_blocking(name: &str) -> Result<LinkMessage> {
    let what = || format!("asking the kernel for link {name}");
    let mut sock = Socket::new(NETLINK_ROUTE).with_context(what)?;
    sock.bind_auto().with_context(what)?;
    sock.connect(&SocketAddr::new(0, 0)).with_context(what)?;
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    m.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetLink(m));
    req.header.flags = NLM_F_REQUEST;
    req.finalize();
    let mut buf = vec![0; req.header.length as usize];
    req.serialize(&mut buf);
    sock.send(&buf, 0).with_context(what)?;
    // The kernel answers a request for one link before `send` returns: this never waits.
    let (reply, _) = sock.recv_from_full().with_context(what)?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply).with_context(what)?;
    match reply.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => Ok(link),
        NetlinkPayload::Error(e) if e.raw_code().abs() == ENODEV => Err(gone(name)),
        NetlinkPayload::Error(e) => Err(anyhow!("{}: {}", what(), e.to_io())),
        other => Err(anyhow!("{}: unexpected reply {other:?}", what())),
    }
}

/// Sends `msg` on a blocking socket of its own (in the namespace of the calling thread) and
/// collects the answer: the messages of a dump (`NLM_F_DUMP`) up to its end, or the kernel's
/// acknowledgement of a change (`NLM_F_ACK`). For the datapath's clsact qdisc, which aya's
/// synchronous calls manage, outside the connection's tasks.
fn request_blocking(
    msg: RouteNetlinkMessage,
    flags: u16,
    what: &str,
) -> Result<Vec<RouteNetlinkMessage>> {
    let mut sock = Socket::new(NETLINK_ROUTE).context(what.to_owned())?;
    sock.bind_auto().context(what.to_owned())?;
    sock.connect(&SocketAddr::new(0, 0))
        .context(what.to_owned())?;
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | flags;
    req.finalize();
    let mut buf = vec![0; req.header.length as usize];
    req.serialize(&mut buf);
    sock.send(&buf, 0).context(what.to_owned())?;
    let mut out = Vec::new();
    // Bounded: a dump of one interface's filters is a few datagrams; 1000 is far past any.
    for _ in 0..1000 {
        let (reply, _) = sock.recv_from_full().context(what.to_owned())?;
        let mut rest = &reply[..];
        while !rest.is_empty() {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                .context(what.to_owned())?;
            let len = (m.header.length as usize)
                .next_multiple_of(4)
                .min(rest.len());
            rest = &rest[len.max(1)..];
            match m.payload {
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) if e.code.is_none() => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(anyhow::Error::new(e.to_io()).context(what.to_owned()));
                }
                _ => {}
            }
        }
    }
    Err(anyhow!("{what}: no end to the kernel's answer"))
}

/// A message addressing `ifindex`'s clsact qdisc (`parent`: the qdisc itself, or one of its hooks).
fn clsact_message(ifindex: u32, parent: TcHandle) -> TcMessage {
    let mut m = TcMessage::default();
    m.header.index = ifindex as i32;
    m.header.parent = parent;
    m
}

/// How many TC filters `ifindex`'s clsact qdisc holds at its ingress and egress hooks together.
pub(crate) fn clsact_filters_blocking(ifindex: u32) -> Result<usize> {
    let mut n = 0;
    for minor in [TcHandle::MIN_INGRESS, TcHandle::MIN_EGRESS] {
        let hook = TcHandle {
            major: TcHandle::CLSACT.major,
            minor,
        };
        let msg = RouteNetlinkMessage::GetTrafficFilter(clsact_message(ifindex, hook));
        n += request_blocking(msg, NLM_F_DUMP, "dumping the clsact filters")?.len();
    }
    Ok(n)
}

/// The filters at `ifindex`'s clsact egress hook, each as (priority, handle).
fn clsact_egress_filters(ifindex: u32) -> Result<Vec<(u16, u32)>> {
    let hook = TcHandle {
        major: TcHandle::CLSACT.major,
        minor: TcHandle::MIN_EGRESS,
    };
    let msg = RouteNetlinkMessage::GetTrafficFilter(clsact_message(ifindex, hook));
    let filters = request_blocking(msg, NLM_F_DUMP, "dumping the clsact egress filters")?;
    Ok(filters
        .iter()
        .filter_map(|m| match m {
            // tcm_info: the priority in its upper 16 bits, the protocol in the lower.
            RouteNetlinkMessage::NewTrafficFilter(f) => {
                Some(((f.header.info >> 16) as u16, u32::from(f.header.handle)))
            }
            _ => None,
        })
        .collect())
}

/// Whether `ifindex`'s clsact egress hook holds the filter at `priority` with `handle`: a netlink
/// attachment has no kernel object that outlives its removal (`tc filter del` by another tool
/// leaves enipin's record behind), so this is how `watch` sees it gone.
pub(crate) fn clsact_filter_exists(ifindex: u32, priority: u16, handle: u32) -> Result<bool> {
    Ok(clsact_egress_filters(ifindex)?.contains(&(priority, handle)))
}

/// The lowest priority number (the first to run) among `ifindex`'s clsact egress filters.
pub(crate) fn clsact_first_priority(ifindex: u32) -> Result<Option<u16>> {
    Ok(clsact_egress_filters(ifindex)?
        .into_iter()
        .map(|(p, _)| p)
        .min())
}

/// Deletes `ifindex`'s clsact qdisc (and with it every filter it holds).
pub(crate) fn del_clsact_blocking(ifindex: u32) -> Result<()> {
    let mut m = clsact_message(ifindex, TcHandle::CLSACT);
    m.header.handle = TcHandle {
        major: TcHandle::CLSACT.major,
        minor: 0,
    };
    m.attributes.push(TcAttribute::Kind("clsact".into()));
    let msg = RouteNetlinkMessage::DelQueueDiscipline(m);
    request_blocking(msg, NLM_F_ACK, "deleting the clsact qdisc").map(drop)
}

/// The knobs enipin sets of a link's IPv4 devconf (`IFLA_AF_SPEC` / `AF_INET` /
/// `IFLA_INET_CONF`). `None`: the device has no IPv4 configuration.
pub(crate) fn decode_ipv4_conf(attributes: &[LinkAttribute]) -> Option<Ipv4Conf> {
    attributes.iter().find_map(|a| match a {
        LinkAttribute::AfSpecUnspec(specs) => specs.iter().find_map(|s| match s {
            AfSpecUnspec::Inet(inet) => inet.iter().find_map(|i| match i {
                AfSpecInet::DevConf(c) => Some(Ipv4Conf {
                    rp_filter: c.rp_filter,
                    arp_ignore: c.arp_ignore,
                    arp_announce: c.arp_announce,
                }),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    })
}

fn family(addr: &IpAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn rule_message(rule: &Rule) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = if rule.v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.action = RuleAction::ToTable;
    // The table goes in FRA_TABLE (32 bits); the header's 8-bit field stays unspecified.
    m.attributes.push(RuleAttribute::Table(rule.table));
    m.attributes.push(RuleAttribute::Priority(rule.priority));
    if let Some(from) = rule.from {
        m.header.src_len = from.prefix_len;
        m.attributes.push(RuleAttribute::Source(from.addr));
    }
    if let Some(len) = rule.suppress_prefixlen {
        m.attributes.push(RuleAttribute::SuppressPrefixLen(len));
    }
    if let Some(f) = rule.fwmark {
        m.attributes.push(RuleAttribute::FwMark(f.value));
        m.attributes.push(RuleAttribute::FwMask(f.mask));
    }
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(RTPROT_ENIPIN)));
    m
}

fn route_message(route: &Route) -> RouteMessage {
    let mut m = RouteMessage::default();
    let Cidr {
        addr: dst,
        prefix_len: len,
    } = route.dst;
    m.header.address_family = family(&dst);
    m.header.destination_prefix_length = len;
    m.header.table = if route.table < 256 {
        route.table as u8
    } else {
        RouteHeader::RT_TABLE_UNSPEC
    };
    m.header.protocol = RouteProtocol::from(RTPROT_ENIPIN);
    m.header.scope = if route.scope_link {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Table(route.table));
    if len > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    }
    if let Some(gw) = route.gateway {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    m.attributes.push(RouteAttribute::Oif(route.oif));
    if let Some(src) = route.src {
        m.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    }
    if route.metric != 0 {
        m.attributes.push(RouteAttribute::Priority(route.metric));
    }
    m
}

fn rule_protocol(m: &RuleMessage) -> u8 {
    m.attributes
        .iter()
        .find_map(|a| {
            if let RuleAttribute::Protocol(p) = a {
                Some(u8::from(*p))
            } else {
                None
            }
        })
        .unwrap_or(0)
}

fn rule_table(m: &RuleMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| {
            if let RuleAttribute::Table(t) = a {
                Some(*t)
            } else {
                None
            }
        })
        .unwrap_or(m.header.table as u32)
}

fn rule_priority(m: &RuleMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| {
            if let RuleAttribute::Priority(p) = a {
                Some(*p)
            } else {
                None
            }
        })
        .unwrap_or(0)
}

/// A dumped (or announced) rule in enipin's terms: the parts it models (it only ever creates
/// "from X lookup T" and "lookup main suppress_prefixlength 0") and its protocol.
pub(crate) fn decode_rule(m: &RuleMessage) -> InstalledRule {
    observe_rule(m).installed()
}

/// A dumped rule, everything `ip rule` shows: the one decoder of rules (the plan's view and
/// doctor's are both made from it).
pub(crate) fn observe_rule(m: &RuleMessage) -> ObservedRule {
    let cidr = |addr: &IpAddr, prefix_len| Cidr {
        addr: *addr,
        prefix_len,
    };
    let (mut from, mut to, mut suppress_prefixlen) = (None, None, None);
    let (mut mark, mut mask) = (None, None);
    for a in &m.attributes {
        match a {
            RuleAttribute::Source(ip) => from = Some(cidr(ip, m.header.src_len)),
            RuleAttribute::Destination(ip) => to = Some(cidr(ip, m.header.dst_len)),
            // The kernel reports "not set" as -1.
            RuleAttribute::SuppressPrefixLen(l) if *l != u32::MAX => suppress_prefixlen = Some(*l),
            RuleAttribute::FwMark(v) => mark = Some(*v),
            RuleAttribute::FwMask(v) => mask = Some(*v),
            _ => {}
        }
    }
    ObservedRule {
        v6: m.header.family == AddressFamily::Inet6,
        priority: rule_priority(m),
        verb: rule_verb(m.header.action),
        table: rule_table(m),
        from,
        to,
        // The kernel reports a mark without a mask as mask 0xffffffff.
        fwmark: mark.map(|value| Fwmark {
            value,
            mask: mask.unwrap_or(u32::MAX),
        }),
        suppress_prefixlen,
        protocol: rule_protocol(m),
    }
}

fn rule_verb(a: RuleAction) -> RuleVerb {
    match a {
        RuleAction::ToTable => RuleVerb::Lookup,
        RuleAction::Goto => RuleVerb::Goto,
        RuleAction::Nop => RuleVerb::Nop,
        RuleAction::Blackhole => RuleVerb::Blackhole,
        RuleAction::Unreachable => RuleVerb::Unreachable,
        RuleAction::Prohibit => RuleVerb::Prohibit,
        other => RuleVerb::Other(u8::from(other)),
    }
}

fn route_table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| {
            if let RouteAttribute::Table(t) = a {
                Some(*t)
            } else {
                None
            }
        })
        .unwrap_or(m.header.table as u32)
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A dumped (or announced) route in enipin's terms, with its protocol; `dev` is left empty for
/// the caller, which knows the links.
pub(crate) fn decode_route(m: &RouteMessage) -> InstalledRoute {
    let v6 = m.header.address_family == AddressFamily::Inet6;
    let unspecified = Cidr::any(v6).addr;
    let mut r = Route {
        table: route_table(m),
        dst: Cidr {
            addr: unspecified,
            prefix_len: m.header.destination_prefix_length,
        },
        gateway: None,
        oif: 0,
        dev: String::new(),
        src: None,
        scope_link: m.header.scope == RouteScope::Link,
        metric: 0,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => r.dst.addr = ip_of(d).unwrap_or(unspecified),
            RouteAttribute::Gateway(g) => r.gateway = ip_of(g),
            RouteAttribute::Oif(i) => r.oif = *i,
            RouteAttribute::PrefSource(s) => r.src = ip_of(s),
            RouteAttribute::Priority(p) => r.metric = *p,
            _ => {}
        }
    }
    InstalledRoute {
        protocol: u8::from(m.header.protocol),
        route: r,
    }
}
