//! Which interfaces enipin manages, with what: the candidates and their reasons
//! ([`crate::routing::verdict`]), the interfaces named in `--interfaces` and their refusals, and
//! each managed interface's table, prefixes and gateways.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    model::discovery::Discovery,
    model::{Cidr, Gateway, GatewaySource, Interface, ManagedInterface, fmt_mac},
    routing::verdict::{self, Verdict, Why},
    settings::config::Config,
};

/// The managed interfaces, or why there is nothing to manage.
#[derive(Debug)]
pub(crate) enum Selection {
    Managed(Vec<ManagedInterface>),
    NothingToDo(String),
}

/// An interface named in `--interfaces` that cannot be managed now. `attach` makes it an error
/// (it must not quietly manage less than the operator named); `enipin watch` a note, leaving it
/// out while an ENI is detached and taking it back when it returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No interface of this name or MAC; `known` lists what there is, as `name (mac)`.
    Unknown {
        selector: String,
        known: Vec<String>,
    },
    Down {
        selector: String,
        name: String,
    },
    NoAddress {
        selector: String,
        name: String,
    },
    /// The loopback: a program on it would send the host's traffic to its own addresses out of
    /// the interface owning them.
    Loopback {
        selector: String,
        name: String,
    },
    /// Not an Ethernet interface (bridge, bond, VLAN, tunnel, ...): not an ENI.
    NotEthernet {
        selector: String,
        name: String,
    },
    /// The main table sends replies from each of its addresses out of it, and no managed
    /// interface's replies leave by it, while other named ones need enipin: its program would
    /// have nothing to do.
    Lonely {
        selector: String,
        name: String,
    },
    /// Its replies of a family leave by the main table's default route out of another
    /// interface, and no gateway of its own is known to route them out of it.
    NoGateway {
        selector: String,
        name: String,
        v6: bool,
        via: String,
    },
    /// `--no-rules`: the program alone cannot send this interface's replies through its
    /// gateway (see [`ProgramLimit`]).
    ProgramOnly {
        selector: String,
        name: String,
        limit: ProgramLimit,
    },
    /// A MAC several interfaces share (an Azure VF shares its NIC's), none or more than one of
    /// them carrying addresses: no way to tell which is meant.
    AmbiguousMac {
        selector: String,
        names: Vec<String>,
    },
}

impl Refusal {
    /// The `--interfaces` entry refused.
    pub(crate) fn selector(&self) -> &str {
        match self {
            Refusal::Unknown { selector, .. }
            | Refusal::Down { selector, .. }
            | Refusal::NoAddress { selector, .. }
            | Refusal::Loopback { selector, .. }
            | Refusal::NotEthernet { selector, .. }
            | Refusal::Lonely { selector, .. }
            | Refusal::NoGateway { selector, .. }
            | Refusal::ProgramOnly { selector, .. }
            | Refusal::AmbiguousMac { selector, .. } => selector,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unknown { selector, known } => write!(
                f,
                "unknown interface {selector:?}: not a name or MAC of this namespace (have: {})",
                known.join(", ")
            ),
            Refusal::Down { name, .. } => write!(
                f,
                "interface {name} is down: bring it up (ip link set {name} up) or leave it out of --interfaces"
            ),
            Refusal::NoAddress { name, .. } => write!(
                f,
                "interface {name} has no IPv4 or global IPv6 address: nothing to pin to it"
            ),
            Refusal::Loopback { name, .. } => write!(
                f,
                "interface {name} is the loopback: enipin never manages it (its program would send \
                 the host's traffic to its own addresses out of another interface); leave it out \
                 of --interfaces"
            ),
            Refusal::NotEthernet { name, .. } => write!(
                f,
                "interface {name} is not an Ethernet interface (a bridge, bond, VLAN or tunnel is \
                 not an ENI): leave it out of --interfaces"
            ),
            Refusal::Lonely { name, .. } => write!(
                f,
                "interface {name}: the main table sends replies from each of its addresses out of \
                 it, and no other managed interface's replies leave by it; leave it out of \
                 --interfaces"
            ),
            Refusal::NoGateway { name, v6, via, .. } => write!(
                f,
                "interface {name} has no {} gateway enipin can know: its replies beyond its \
                 subnet follow the main table's default route out of {via}, and {name} has no \
                 default route of its own{}. Give its router with --gateway (an address on \
                 {name}'s subnet), or add a default route through {name}",
                if *v6 { "IPv6" } else { "IPv4" },
                if *v6 {
                    " (IPv6 has no first-host router: accept its router advertisements)"
                } else {
                    " and its subnet (a /31 or /32) no first host"
                }
            ),
            Refusal::ProgramOnly { name, limit, .. } => write!(
                f,
                "interface {name}: {limit}, so with --no-rules its replies beyond its subnets \
                 would not leave through its gateway; keep the rules layer (attach without \
                 --no-rules), or leave {name} out of --interfaces"
            ),
            Refusal::AmbiguousMac { selector, names } => write!(
                f,
                "MAC {selector} is shared by {} and not exactly one of them has an address: \
                 name the interface in --interfaces instead",
                names.join(", ")
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// Why the program alone (`--no-rules`) cannot route an interface's redirected replies: its
/// gateways and on-link networks live in an array slot of the interface's (`maps::NEXT_HOPS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ProgramLimit {
    /// Its ifindex is past the array.
    Ifindex(u32),
    /// More networks of a family than a slot holds.
    Networks { v6: bool, count: usize },
}

impl fmt::Display for ProgramLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgramLimit::Ifindex(ix) => write!(
                f,
                "its ifindex {ix} is past the program's next-hop array ({} slots)",
                enipin_ebpf::FAST_SLOTS
            ),
            ProgramLimit::Networks { v6, count } => write!(
                f,
                "it is on {count} {} networks, and the program holds {} per interface",
                if *v6 { "IPv6" } else { "IPv4" },
                enipin_ebpf::ON_LINK
            ),
        }
    }
}

/// What keeps the program alone from routing `i`'s redirected replies, if anything.
fn program_limit(i: &Interface) -> Option<ProgramLimit> {
    if i.ifindex >= enipin_ebpf::FAST_SLOTS {
        return Some(ProgramLimit::Ifindex(i.ifindex));
    }
    [false, true].into_iter().find_map(|v6| {
        let nets: BTreeSet<Cidr> = (i.addrs.iter())
            .filter(|a| a.is_ipv6() == v6 && a.prefix_len < a.host_len())
            .map(Cidr::network)
            .collect();
        (nets.len() > enipin_ebpf::ON_LINK).then_some(ProgramLimit::Networks {
            v6,
            count: nets.len(),
        })
    })
}

/// `--interfaces` entries match a name or a MAC (any case).
fn matches(iface: &Interface, sel: &str) -> bool {
    iface.name == sel || fmt_mac(&iface.mac).eq_ignore_ascii_case(sel)
}

/// The `--interfaces` entries that name no interface of `d` and none of `seen` (the names and
/// lower-case MACs of interfaces enipin has managed here): a typo, not an ENI that left. Each is
/// the refusal that lists what there is. A watcher refuses to start or reload with one, where
/// taking it would unmanage everything else.
pub(crate) fn never_seen(d: &Discovery, cfg: &Config, seen: &BTreeSet<String>) -> Vec<Refusal> {
    (cfg.interfaces.iter())
        .filter(|sel| !seen.contains(*sel) && !seen.contains(&sel.to_ascii_lowercase()))
        .filter_map(|sel| named(d, sel).err())
        .filter(|r| matches!(r, Refusal::Unknown { .. }))
        .collect()
}

/// The first step of a selection: the candidate interfaces, the named ones refused, and why
/// each interface is taken or left out.
pub(crate) struct Chosen<'d> {
    pub interfaces: Vec<&'d Interface>,
    pub refused: Vec<Refusal>,
    /// One per interface considered ([`verdict`]): what `attach` prints first.
    pub verdicts: Vec<Verdict>,
}

/// Which interfaces ([`verdict`]): without `--interfaces`, every candidate ENI a reply from
/// which could leave by another one, and those it could leave by. With it, the named ones
/// (refusing those missing, loopback, not Ethernet, down or without an address) whose replies
/// could leave by another ENI; one named interface alone comes with the ENIs its replies could
/// leave by (their programs send them back), while two or more are the set the operator chose:
/// nothing unnamed is added (each named one's rules hold its replies), so that dropping an ENI
/// from the list unmanages it. A named one whose replies all leave by it and that carries no one
/// else's is refused when others are managed (else there is nothing to do).
pub(crate) fn choose<'d>(d: &'d Discovery, cfg: &Config) -> Chosen<'d> {
    if cfg.interfaces.is_empty() {
        let verdicts = verdict::by_default(d, cfg);
        let (interfaces, refused) = routable(d, cfg, taken(d, &verdicts), Vec::new());
        return Chosen {
            interfaces,
            refused,
            verdicts,
        };
    }
    let mut pool: Vec<&Interface> = Vec::new();
    let mut refused = Vec::new();
    for sel in &cfg.interfaces {
        match named(d, sel) {
            Ok(iface) if pool.iter().any(|c| c.ifindex == iface.ifindex) => {}
            Ok(iface) => pool.push(iface),
            Err(r) => refused.push(r),
        }
    }
    let mut candidates: Vec<&Interface> = d
        .interfaces
        .iter()
        .filter(|i| verdict::exclusion(d, cfg, i).is_none())
        .collect();
    for p in &pool {
        if !candidates.iter().any(|c| c.ifindex == p.ifindex) {
            candidates.push(p);
        }
    }
    let verdicts = verdict::judge(d, &pool, &candidates, pool.len() == 1);
    let (interfaces, mut refused) = routable(d, cfg, taken(d, &verdicts), refused);
    if !interfaces.is_empty() {
        refused.extend(
            verdicts
                .iter()
                .filter(|v| v.why == Why::RepliesStay)
                .map(|v| Refusal::Lonely {
                    selector: selector_of(cfg, d, v.ifindex),
                    name: v.name.clone(),
                }),
        );
    }
    Chosen {
        interfaces,
        refused,
        verdicts,
    }
}

/// Keeps the interfaces of `keep` (by ifindex) chosen whatever their verdicts, and drops the
/// refusals of them: while an address blinks ([`crate::routing::grace`]), what was managed stays
/// managed.
pub(crate) fn hold<'d>(d: &'d Discovery, chosen: &mut Chosen<'d>, keep: &[u32]) {
    for ix in keep {
        let Some(i) = d.interfaces.iter().find(|i| i.ifindex == *ix) else {
            continue;
        };
        if !chosen.interfaces.iter().any(|c| c.ifindex == *ix) {
            chosen.interfaces.push(i);
        }
        chosen.refused.retain(|r| !matches(i, r.selector()));
    }
}

/// The interfaces of `taken` that have a gateway in every family whose default route in the main
/// table leaves by another interface; the others are refused (added to `refused`): their table
/// could not route what their rules send to it.
fn routable<'d>(
    d: &Discovery,
    cfg: &Config,
    taken: Vec<&'d Interface>,
    mut refused: Vec<Refusal>,
) -> (Vec<&'d Interface>, Vec<Refusal>) {
    let mut keep = Vec::new();
    for i in taken {
        let lacking = [false, true].into_iter().find_map(|v6| {
            let has = i.addrs.iter().any(|a| a.is_ipv6() == v6);
            let via = verdict::default_exit(d, v6)
                .into_iter()
                .find(|ix| *ix != i.ifindex)?;
            (has && gateway(d, cfg, i, v6).is_none()).then_some((v6, via))
        });
        let limit = (!cfg.rules).then(|| program_limit(i)).flatten();
        match (lacking, limit) {
            (None, None) => keep.push(i),
            (None, Some(limit)) => refused.push(Refusal::ProgramOnly {
                selector: selector_of(cfg, d, i.ifindex),
                name: i.name.clone(),
                limit,
            }),
            (Some((v6, via)), _) => refused.push(Refusal::NoGateway {
                selector: selector_of(cfg, d, i.ifindex),
                name: i.name.clone(),
                v6,
                via: d
                    .interfaces
                    .iter()
                    .find(|p| p.ifindex == via)
                    .map_or_else(|| format!("if{via}"), |p| p.name.clone()),
            }),
        }
    }
    (keep, refused)
}

/// The interfaces the verdicts take, in their order.
fn taken<'d>(d: &'d Discovery, verdicts: &[Verdict]) -> Vec<&'d Interface> {
    verdicts
        .iter()
        .filter(|v| v.taken())
        .filter_map(|v| d.interfaces.iter().find(|i| i.ifindex == v.ifindex))
        .collect()
}

/// The `--interfaces` entry that named interface `ifindex`.
fn selector_of(cfg: &Config, d: &Discovery, ifindex: u32) -> String {
    let i = d.interfaces.iter().find(|i| i.ifindex == ifindex);
    cfg.interfaces
        .iter()
        .find(|s| i.is_some_and(|i| matches(i, s)))
        .cloned()
        .or_else(|| i.map(|i| i.name.clone()))
        .unwrap_or_default()
}

/// The interface a MAC (any case) names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MacPick<'d> {
    None,
    One(&'d Interface),
    /// Several share it, and none or more than one of them carries addresses.
    Ambiguous(Vec<&'d Interface>),
}

/// Accelerated-networking VFs (Azure) share their NIC's MAC and carry no address: of the
/// interfaces sharing `mac`, the one that carries addresses is the ENI.
pub(crate) fn pick_by_mac<'d>(interfaces: &'d [Interface], mac: &str) -> MacPick<'d> {
    let same: Vec<&Interface> = interfaces
        .iter()
        .filter(|i| fmt_mac(&i.mac).eq_ignore_ascii_case(mac))
        .collect();
    let with_addrs: Vec<&Interface> = same
        .iter()
        .copied()
        .filter(|i| !i.addrs.is_empty())
        .collect();
    match (same.as_slice(), with_addrs.as_slice()) {
        ([], _) => MacPick::None,
        ([one], _) | (_, [one]) => MacPick::One(one),
        _ => MacPick::Ambiguous(same),
    }
}

/// The MACs metadata is asked about: the up Ethernet interfaces `--interfaces` names (all of them
/// when it names none), addresses or not (an ENI's addresses may be in metadata only).
pub(crate) fn candidate_macs(d: &Discovery, cfg: &Config) -> Vec<crate::model::MacAddr> {
    d.interfaces
        .iter()
        .filter(|i| i.ethernet && i.up)
        .filter(|i| cfg.interfaces.is_empty() || cfg.interfaces.iter().any(|s| matches(i, s)))
        .map(|i| i.mac)
        .collect()
}

/// The interface `sel` names, if it can be managed.
fn named<'d>(d: &'d Discovery, sel: &str) -> Result<&'d Interface, Refusal> {
    let selector = sel.to_owned();
    let by_name = d.interfaces.iter().find(|i| i.name == sel);
    let iface = match by_name.map_or_else(|| pick_by_mac(&d.interfaces, sel), MacPick::One) {
        MacPick::One(i) => i,
        MacPick::Ambiguous(all) => {
            let names = all.iter().map(|i| i.name.clone()).collect();
            return Err(Refusal::AmbiguousMac { selector, names });
        }
        MacPick::None => {
            let known = d
                .interfaces
                .iter()
                .map(|i| format!("{} ({})", i.name, fmt_mac(&i.mac)))
                .collect();
            return Err(Refusal::Unknown { selector, known });
        }
    };
    let name = iface.name.clone();
    if iface.loopback {
        return Err(Refusal::Loopback { selector, name });
    }
    if !iface.ethernet {
        return Err(Refusal::NotEthernet { selector, name });
    }
    if !iface.up {
        return Err(Refusal::Down { selector, name });
    }
    if iface.addrs.is_empty() {
        return Err(Refusal::NoAddress { selector, name });
    }
    Ok(iface)
}

/// Chooses the managed interfaces and everything the appliers need about them; any refusal is
/// an error (what `attach` needs).
#[cfg(test)]
pub(crate) fn select(d: &Discovery, cfg: &Config) -> Result<Selection> {
    let chosen = choose(d, cfg);
    if let Some(r) = chosen.refused.first() {
        return Err(r.clone().into());
    }
    select_named(d, cfg, chosen).map(|(s, _)| s)
}

/// The rest of a selection after [`choose`], with the refused interfaces left out: returns
/// them for the caller to report. Errors are what no selection can fix: one address on two
/// interfaces, a `--prefix` on an unmanaged interface, numbers out of range.
pub(crate) fn select_named(
    d: &Discovery,
    cfg: &Config,
    chosen: Chosen<'_>,
) -> Result<(Selection, Vec<Refusal>)> {
    let Chosen {
        interfaces: chosen,
        refused,
        verdicts,
    } = chosen;
    check_one_owner(d, &chosen)?;
    if chosen.is_empty() {
        return Ok((
            Selection::NothingToDo(verdict::nothing_to_do(&verdicts)),
            refused,
        ));
    }
    check_prefixes(cfg, &chosen, &refused)?;
    cfg.priority.checked_add(2).with_context(|| {
        format!(
            "--priority {} is too large (P+2 must fit 32 bits)",
            cfg.priority
        )
    })?;
    if cfg.connmark && cfg.priority == 0 {
        bail!(
            "--priority 0 leaves no room for connmark's rules at P-1: choose --priority 1 or more"
        );
    }
    let managed = chosen
        .into_iter()
        .map(|i| manage(d, cfg, i))
        .collect::<Result<_>>()?;
    Ok((Selection::Managed(managed), refused))
}

/// One address on two interfaces: no way to say which one owns it.
fn check_one_owner(d: &Discovery, chosen: &[&Interface]) -> Result<()> {
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
    Ok(())
}

/// Prefixes name managed interfaces (or refused ones, which are said so already).
fn check_prefixes(cfg: &Config, chosen: &[&Interface], refused: &[Refusal]) -> Result<()> {
    for (sel, p) in &cfg.prefixes {
        let managed = chosen.iter().any(|i| matches(i, sel));
        let left_out = refused.iter().any(|r| r.selector() == sel);
        if !managed && !left_out {
            bail!("--prefix {sel}={p}: {sel} is not a managed interface");
        }
    }
    Ok(())
}

/// Everything the appliers need about one managed interface.
fn manage(d: &Discovery, cfg: &Config, i: &Interface) -> Result<ManagedInterface> {
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
    Ok(ManagedInterface {
        ifindex: i.ifindex,
        name: i.name.clone(),
        mac: i.mac,
        mtu: i.mtu,
        table,
        addrs: i.addrs.clone(),
        prefixes: prefixes(cfg, i),
        gateway_v4: gateway(d, cfg, i, false),
        gateway_v6: gateway(d, cfg, i, true),
        forwarding: i.forwarding,
    })
}

/// `--prefix` for `i`, then what metadata delegates to it (once each).
fn prefixes(cfg: &Config, i: &Interface) -> Vec<Cidr> {
    let mut out: Vec<Cidr> = cfg
        .prefixes
        .iter()
        .filter(|(s, _)| matches(i, s))
        .map(|(_, p)| *p)
        .collect();
    for p in i.meta.iter().flat_map(|m| &m.prefixes) {
        if !out.contains(p) {
            out.push(*p);
        }
    }
    out
}

/// `i`'s gateway in one family: `--gateway` when it is on one of `i`'s subnets (or an IPv6
/// link-local router, or on no interface's subnet), else the main table's default route through `i`, else one through
/// another interface whose gateway is on `i`'s subnet (ENIs sharing a subnet share its router),
/// else (IPv4) the subnet's first host, which is the VPC's router. An ENI in a subnet of its own
/// gets its own subnet's router, never another subnet's.
fn gateway(d: &Discovery, cfg: &Config, i: &Interface, v6: bool) -> Option<Gateway> {
    let on_link = |g: &IpAddr| {
        i.addrs
            .iter()
            .any(|a| a.is_ipv6() == g.is_ipv6() && a.prefix_len < a.host_len() && within(a, *g))
    };
    let link_local = |g: &IpAddr| matches!(g, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80);
    let found = |addr, source| Some(Gateway { addr, source });
    // A --gateway on no interface's subnet is the operator's word for every interface (a
    // router reached by an on-link route of their own), as before subnets were told apart.
    let on_none = |g: &IpAddr| {
        !d.interfaces
            .iter()
            .flat_map(|p| &p.addrs)
            .any(|a| a.is_ipv6() == g.is_ipv6() && a.prefix_len < a.host_len() && within(a, *g))
    };
    if let Some(g) = cfg
        .gateway
        .filter(|g| g.is_ipv6() == v6 && (on_link(g) || link_local(g) || on_none(g)))
    {
        return found(g, GatewaySource::Configured);
    }
    let family = |(_, g): &&(u32, IpAddr)| g.is_ipv6() == v6;
    if let Some((_, g)) = d
        .defaults
        .iter()
        .filter(family)
        .find(|(ix, _)| *ix == i.ifindex)
    {
        return found(*g, GatewaySource::MainTable);
    }
    if let Some((_, g)) = d.defaults.iter().filter(family).find(|(_, g)| on_link(g)) {
        return found(*g, GatewaySource::SameSubnet);
    }
    if v6 {
        return None; // IPv6: the router advertises itself; without one, subnet route only.
    }
    // A /31 or /32 has no first host to spare.
    let a = i
        .addrs
        .iter()
        .find(|a| a.addr.is_ipv4() && a.prefix_len <= 30)?;
    let IpAddr::V4(net) = a.network().addr else {
        unreachable!("an IPv4 address has an IPv4 network")
    };
    found(
        IpAddr::V4(Ipv4Addr::from(u32::from(net) + 1)),
        GatewaySource::SubnetFirstHost,
    )
}

/// Whether `g` is inside `a`'s subnet.
fn within(a: &Cidr, g: IpAddr) -> bool {
    Cidr {
        addr: g,
        prefix_len: a.prefix_len,
    }
    .network()
        == a.network()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn iface(ifindex: u32, addrs: &[&str]) -> Interface {
        Interface::fixture(ifindex, addrs)
    }

    /// lo, eth1 and eth2 in one subnet, eth3 alone in another, eth4 down in the first one,
    /// eth5 without addresses; the main table's default routes leave by eth1.
    pub(crate) fn namespace() -> Discovery {
        let mut lo = iface(0, &["127.0.0.1/8"]);
        (lo.name, lo.ethernet, lo.loopback) = ("lo".into(), false, true);
        let mut down = iface(4, &["198.18.0.14/24"]);
        down.up = false;
        Discovery::fixture(
            vec![
                lo,
                iface(1, &["198.18.0.10/24", "2001:db8::10/64"]),
                iface(2, &["198.18.0.11/24"]),
                iface(3, &["198.18.1.9/24"]),
                down,
                iface(5, &[]),
            ],
            vec![
                (1, "198.18.0.254".parse().unwrap()),
                (1, "2001:db8::1".parse().unwrap()),
            ],
        )
    }

    pub(crate) fn managed(s: Selection) -> Vec<ManagedInterface> {
        match s {
            Selection::Managed(m) => m,
            Selection::NothingToDo(why) => panic!("nothing to do: {why}"),
        }
    }

    fn names(m: &[ManagedInterface]) -> Vec<&str> {
        m.iter().map(|m| m.name.as_str()).collect()
    }

    fn named_cfg(names: &[&str]) -> Config {
        Config {
            interfaces: names.iter().map(|n| n.to_string()).collect(),
            ..Config::default()
        }
    }

    fn gw(g: Option<Gateway>) -> Option<(String, GatewaySource)> {
        g.map(|g| (g.addr.to_string(), g.source))
    }

    /// eth1 and eth2 share a subnet; eth3 is alone in its own, its replies beyond it leaving by
    /// eth1's default route (issue 23: it used to be left out, "nothing to do").
    #[test]
    fn selects_every_eni_whose_replies_could_leave_by_another_with_its_own_gateway() {
        let d = namespace();
        let chosen = choose(&d, &Config::default());
        let text: Vec<String> = chosen.verdicts.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "lo: left out: the loopback",
                "eth1: managed: a reply from 198.18.0.10 to 198.18.0.0/24 leaves by eth2 (main table)",
                "eth2: managed: a reply from 198.18.0.11 to 0.0.0.0/0 (the default route) leaves by eth1 (main table)",
                "eth3: managed: a reply from 198.18.1.9 to 0.0.0.0/0 (the default route) leaves by eth1 (main table)",
                "eth4: left out: down",
                "eth5: left out: no IPv4 or global IPv6 address of its own",
            ]
        );
        let m = managed(select(&d, &Config::default()).unwrap());
        assert_eq!(names(&m), ["eth1", "eth2", "eth3"]);
        assert_eq!((m[0].table, m[1].table, m[2].table), (20001, 20002, 20003));
        assert_eq!(
            gw(m[0].gateway_v4),
            Some(("198.18.0.254".into(), GatewaySource::MainTable))
        );
        assert_eq!(
            gw(m[0].gateway_v6),
            Some(("2001:db8::1".into(), GatewaySource::MainTable))
        );
        // eth2 shares eth1's subnet and so its router; eth3's subnet has a router of its own.
        assert_eq!(
            gw(m[1].gateway_v4),
            Some(("198.18.0.254".into(), GatewaySource::SameSubnet))
        );
        assert_eq!(gw(m[1].gateway_v6), None);
        assert_eq!(
            gw(m[2].gateway_v4),
            Some(("198.18.1.1".into(), GatewaySource::SubnetFirstHost))
        );

        // --gateway is a router of the subnets it is on, not of eth3's.
        let cfg = Config {
            gateway: Some("198.18.0.2".parse().unwrap()),
            ..Config::default()
        };
        let m = managed(select(&d, &cfg).unwrap());
        let configured = Some(("198.18.0.2".into(), GatewaySource::Configured));
        assert_eq!(
            (gw(m[0].gateway_v4), gw(m[1].gateway_v4)),
            (configured.clone(), configured)
        );
        assert_eq!(
            gw(m[2].gateway_v4),
            Some(("198.18.1.1".into(), GatewaySource::SubnetFirstHost))
        );
    }

    /// Each ENI with a default route of its own at its own metric, as DHCP gives them on AL2023
    /// (512 + device number): the lowest wins for everyone's replies, so all are managed, each
    /// routed by its own gateway.
    #[test]
    fn enis_each_with_a_default_route_in_subnets_of_their_own() {
        let d = Discovery::fixture(
            vec![
                iface(2, &["198.18.9.10/24"]),
                iface(3, &["198.18.10.11/24", "2001:db8:a::11/64"]),
            ],
            vec![
                (2, "198.18.9.1".parse().unwrap()),
                (3, "198.18.10.1".parse().unwrap()),
                (3, "2001:db8:a::1".parse().unwrap()),
            ],
        );
        let m = managed(select(&d, &Config::default()).unwrap());
        assert_eq!(names(&m), ["eth2", "eth3"]);
        assert_eq!(
            gw(m[1].gateway_v4),
            Some(("198.18.10.1".into(), GatewaySource::MainTable))
        );
        assert_eq!(
            gw(m[1].gateway_v6),
            Some(("2001:db8:a::1".into(), GatewaySource::MainTable))
        );
        // eth2 is managed for its replies to eth3's subnet, which leave by eth3.
        let chosen = choose(&d, &Config::default());
        assert_eq!(
            chosen.verdicts[0].why,
            Why::LeavesBy {
                from: "198.18.9.10".parse().unwrap(),
                dst: "198.18.10.0/24".parse().unwrap(),
                via: "eth3".into()
            }
        );
    }

    /// "Nothing to do" only when the lookup says every reply leaves by its owner: one ENI
    /// beside container plumbing, or ENIs that share no family.
    #[test]
    fn nothing_to_do_is_said_by_the_route_lookup() {
        let mut docker0 = iface(3, &["198.18.100.1/24"]);
        (docker0.name, docker0.ethernet) = ("docker0".into(), false);
        let mut port = iface(4, &[]);
        (port.name, port.master) = ("veth1a2b3c".into(), Some(3));
        let mut pod = iface(5, &["198.18.0.10/32"]);
        pod.name = "eni0123456789a".into();
        let d = Discovery::fixture(
            vec![iface(2, &["198.18.0.10/24"]), docker0, port, pod],
            vec![(2, "198.18.0.1".parse().unwrap())],
        );
        let chosen = choose(&d, &Config::default());
        let text: Vec<String> = chosen.verdicts.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "eth2: left out: the main table sends replies from each of its addresses out of it",
                "docker0: left out: not an Ethernet interface (a bridge, bond, VLAN or tunnel)",
                "veth1a2b3c: left out: no IPv4 or global IPv6 address of its own",
                "eni0123456789a: left out: container plumbing (named eni*); name it in --interfaces to manage it",
            ]
        );
        let Selection::NothingToDo(why) = select(&d, &Config::default()).unwrap() else {
            panic!("one ENI beside container plumbing");
        };
        assert_eq!(
            why,
            "the main table sends every reply from eth2 out of the interface owning its source: \
             replies already leave by the right interface"
        );
        let mut d = d;
        d.interfaces[2].addrs = vec!["198.18.101.2/24".parse().unwrap()];
        let v = verdict::by_default(&d, &Config::default());
        assert_eq!(
            v[2].to_string(),
            "veth1a2b3c: left out: a port of docker0, not an ENI of its own"
        );

        // Two ENIs, one IPv4 only, one IPv6 only, no default route: no reply can leave by the
        // other.
        let d = Discovery::fixture(
            vec![
                iface(2, &["198.18.0.10/24"]),
                iface(3, &["2001:db8::11/64"]),
            ],
            Vec::new(),
        );
        assert!(matches!(
            select(&d, &Config::default()).unwrap(),
            Selection::NothingToDo(_)
        ));
    }

    /// Named alone in its subnet, eth3 is managed with the ENIs its replies leave by (it used
    /// to be "nothing to do").
    #[test]
    fn a_named_interface_in_its_own_subnet_brings_the_others_its_replies_leave_by() {
        let d = namespace();
        let chosen = choose(&d, &named_cfg(&["eth3"]));
        let text: Vec<String> = chosen.verdicts.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "eth3: managed: a reply from 198.18.1.9 to 0.0.0.0/0 (the default route) leaves by eth1 (main table)",
                "eth1: managed: replies of eth3 leave by it; its program sends them back",
                "eth2: managed: replies of eth3 leave by it; its program sends them back",
            ]
        );
        let m = managed(select(&d, &named_cfg(&["eth3"])).unwrap());
        assert_eq!(names(&m), ["eth3", "eth1", "eth2"]);
    }

    /// An Azure VF shares its NIC's MAC and comes first here: a selection by MAC used to take
    /// it (the first match) and refuse it for having no address.
    #[test]
    fn a_mac_shared_with_a_vf_names_the_interface_with_the_addresses() {
        let mut d = namespace();
        let mut vf = iface(2, &[]);
        (vf.ifindex, vf.name) = (9, "enP1s1".into());
        d.interfaces.insert(1, vf);
        let m =
            managed(select(&d, &named_cfg(&["02:00:00:00:00:01", "02:00:00:00:00:02"])).unwrap());
        assert_eq!(names(&m), ["eth1", "eth2"]);
        // Both carrying addresses: ambiguous, refused.
        d.interfaces[1].addrs = vec!["198.18.7.1/24".parse().unwrap()];
        let err = select(&d, &named_cfg(&["02:00:00:00:00:02", "eth1"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "MAC 02:00:00:00:00:02 is shared by enP1s1, eth2 and not exactly one of them has an \
             address: name the interface in --interfaces instead"
        );
        assert!(select(&d, &named_cfg(&["eth2", "eth1"])).is_ok());
    }

    /// A typo is a name of nothing, now or before; an ENI that left was managed (seen), and one
    /// that is down is there: neither is a typo.
    #[test]
    fn a_name_never_seen_is_a_typo() {
        let d = namespace();
        let cfg = named_cfg(&[
            "eth1",
            "eht1",
            "eth4",
            "eth9",
            "02:00:00:00:00:99",
            "02:AA:00:00:00:01",
        ]);
        let seen: BTreeSet<String> = ["eth9".to_owned(), "02:aa:00:00:00:01".to_owned()].into();
        let typos: Vec<_> = never_seen(&d, &cfg, &seen)
            .iter()
            .map(|r| r.selector().to_owned())
            .collect();
        assert_eq!(typos, ["eht1", "02:00:00:00:00:99"]);
        assert!(
            never_seen(&d, &named_cfg(&[]), &BTreeSet::new()).is_empty(),
            "no names, no typo"
        );
    }

    #[test]
    fn named_interfaces_by_name_or_mac_and_refusals() {
        let d = namespace();
        let m = managed(select(&d, &named_cfg(&["02:00:00:00:00:02", "eth1", "eth2"])).unwrap());
        assert_eq!(
            names(&m),
            ["eth2", "eth1"],
            "in the order named, once each; eth3, which eth1's replies to its subnet could leave \
             by, is not named: two named interfaces are the set the operator chose"
        );

        let cfg = Config {
            prefixes: vec![
                ("eth1".into(), "198.18.0.64/28".parse().unwrap()),
                ("eth4".into(), "198.18.0.80/28".parse().unwrap()),
            ],
            ..named_cfg(&["eth1", "eth7", "eth4", "eth5", "eth2"])
        };
        let chosen = choose(&d, &cfg);
        assert_eq!(
            chosen.refused,
            [
                Refusal::Unknown {
                    selector: "eth7".into(),
                    known: (0..6)
                        .map(|i| {
                            let name = if i == 0 {
                                "lo".into()
                            } else {
                                format!("eth{i}")
                            };
                            format!("{name} (02:00:00:00:00:0{i})")
                        })
                        .collect(),
                },
                Refusal::Down {
                    selector: "eth4".into(),
                    name: "eth4".into()
                },
                Refusal::NoAddress {
                    selector: "eth5".into(),
                    name: "eth5".into()
                },
            ]
        );
        let e = select(&d, &cfg).unwrap_err().to_string();
        assert!(
            e.starts_with("unknown interface \"eth7\": not a name or MAC"),
            "{e}"
        );
        assert_eq!(
            chosen.refused[1].to_string(),
            "interface eth4 is down: bring it up (ip link set eth4 up) or leave it out of --interfaces"
        );
        assert_eq!(
            chosen.refused[2].to_string(),
            "interface eth5 has no IPv4 or global IPv6 address: nothing to pin to it"
        );

        // Left out, not an error; the prefix of a left-out interface waits for it.
        let (selection, refused) = select_named(&d, &cfg, chosen).unwrap();
        assert_eq!(refused.len(), 3);
        let m = managed(selection);
        assert_eq!(names(&m), ["eth1", "eth2"]);
        assert_eq!(m[0].prefixes, ["198.18.0.64/28".parse().unwrap()]);
        assert!(m[1].prefixes.is_empty());
    }

    /// Loopback, and a named interface whose replies all leave by it and that carries no one
    /// else's (beside others that need enipin), are refused, named.
    #[test]
    fn loopback_and_lonely_interfaces_are_refused() {
        let d = namespace();
        let e = select(&d, &named_cfg(&["lo", "eth1"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("interface lo is the loopback: enipin never manages it"),
            "{e}"
        );
        // eth3 IPv6 only, in a /64 of its own with its own default route: no other ENI has IPv6.
        let d = Discovery::fixture(
            vec![
                iface(1, &["198.18.0.10/24"]),
                iface(2, &["198.18.0.11/24"]),
                iface(3, &["2001:db8:3::9/64"]),
            ],
            vec![(3, "2001:db8:3::1".parse().unwrap())],
        );
        let chosen = choose(&d, &named_cfg(&["eth1", "eth2", "eth3"]));
        assert_eq!(
            chosen.refused,
            [Refusal::Lonely {
                selector: "eth3".into(),
                name: "eth3".into()
            }]
        );
        let e = select(&d, &named_cfg(&["eth1", "eth2", "eth3"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sends replies from each of its addresses out of it"),
            "{e}"
        );
        // Left out by `watch`, the others managed.
        let (selection, refused) = select_named(&d, &Config::default(), chosen).unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(names(&managed(selection)), ["eth1", "eth2"]);
        let mut bridge = namespace();
        bridge.interfaces[2].ethernet = false;
        let e = select(&bridge, &named_cfg(&["eth1", "eth2"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("eth2 is not an Ethernet interface"), "{e}");
    }

    /// The program alone holds 4 networks of a family per interface: one on 5 is refused for
    /// `--no-rules` with the fix (keep the rules), and managed with them.
    #[test]
    fn the_program_alone_refuses_an_interface_on_more_networks_than_it_holds() {
        let five = [
            "198.18.1.9/24",
            "198.18.2.9/24",
            "198.18.3.9/24",
            "198.18.4.9/24",
            "198.18.5.9/24",
        ];
        let d = Discovery::fixture(
            vec![iface(2, &["198.18.9.10/24"]), iface(3, &five)],
            vec![(2, "198.18.9.1".parse().unwrap())],
        );
        let cfg = Config {
            rules: false,
            ..Config::default()
        };
        let e = select(&d, &cfg).unwrap_err().to_string();
        assert_eq!(
            e,
            "interface eth3: it is on 5 IPv4 networks, and the program holds 4 per interface, so \
             with --no-rules its replies beyond its subnets would not leave through its gateway; \
             keep the rules layer (attach without --no-rules), or leave eth3 out of --interfaces"
        );
        assert_eq!(managed(select(&d, &Config::default()).unwrap()).len(), 2);
    }

    /// An IPv6 reply beyond the subnet would leave by another ENI's default route and no IPv6
    /// router of its own is known: refused with the fix, not managed half-way.
    #[test]
    fn no_gateway_of_its_own_is_refused_with_the_fix() {
        let d = Discovery::fixture(
            vec![
                iface(2, &["198.18.9.10/24", "2001:db8:9::10/64"]),
                iface(3, &["198.18.10.11/24", "2001:db8:a::11/64"]),
            ],
            vec![
                (2, "198.18.9.1".parse().unwrap()),
                (2, "2001:db8:9::1".parse().unwrap()),
            ],
        );
        let e = select(&d, &Config::default()).unwrap_err().to_string();
        assert_eq!(
            e,
            "interface eth3 has no IPv6 gateway enipin can know: its replies beyond its subnet \
             follow the main table's default route out of eth2, and eth3 has no default route of \
             its own (IPv6 has no first-host router: accept its router advertisements). Give its \
             router with --gateway (an address on eth3's subnet), or add a default route through \
             eth3"
        );
        let cfg = Config {
            gateway: Some("2001:db8:a::1".parse().unwrap()),
            ..Config::default()
        };
        let m = managed(select(&d, &cfg).unwrap());
        assert_eq!(
            gw(m[1].gateway_v6),
            Some(("2001:db8:a::1".into(), GatewaySource::Configured))
        );
        assert_eq!(
            gw(m[1].gateway_v4),
            Some(("198.18.10.1".into(), GatewaySource::SubnetFirstHost))
        );
    }

    #[test]
    fn selection_errors() {
        let mut d = namespace();
        let cfg = Config {
            prefixes: vec![("eth4".into(), "198.18.0.64/28".parse().unwrap())],
            ..Config::default()
        };
        let e = select(&d, &cfg).unwrap_err().to_string();
        assert_eq!(
            e,
            "--prefix eth4=198.18.0.64/28: eth4 is not a managed interface"
        );
        let cfg = Config {
            priority: u32::MAX - 1,
            ..Config::default()
        };
        assert!(select(&d, &cfg).is_err());
        let cfg = Config {
            table_base: 253,
            ..Config::default()
        };
        let e = select(&d, &cfg).unwrap_err().to_string();
        assert!(e.starts_with("--table-base 253 + ifindex 1 of eth1"), "{e}");

        d.interfaces[3]
            .addrs
            .push("198.18.0.11/24".parse().unwrap());
        let e = select(&d, &Config::default()).unwrap_err().to_string();
        assert_eq!(
            e,
            "address 198.18.0.11 is on both eth2 and eth3: an address must belong to one interface; remove one"
        );
    }
}
