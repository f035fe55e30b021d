//! What the kernel has now, read over netlink (the source of truth; metadata only adds to it):
//! interfaces with their addresses, the main table's default routes, and every rule and route.
//! An error reading any of it is an error, never an empty list.

use std::net::IpAddr;

use anyhow::Result;
use netlink_packet_route::{
    AddressFamily,
    address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope},
    link::{
        AfSpecInet, AfSpecInet6, AfSpecUnspec, InfoKind, LinkAttribute, LinkFlags, LinkInfo,
        LinkLayerType, LinkMessage,
    },
};

use crate::{
    kernel::{
        netlink::{self, Netlink},
        sysctl,
    },
    model::discovery::Discovery,
    model::route::{InstalledRoute, MAIN_TABLE, ObservedRule},
    model::{Cidr, Forwarding, Interface, MacAddr, RTPROT_ENIPIN},
};

pub(crate) async fn discover(nl: &Netlink) -> Result<Discovery> {
    let mut interfaces: Vec<Interface> = nl.links().await?.iter().map(interface).collect();
    for msg in nl.addresses().await? {
        if let Some(iface) = interfaces
            .iter_mut()
            .find(|i| i.ifindex == msg.header.index)
        {
            add_address(iface, &msg);
        }
    }
    // IPv4 comes in the kernel's order (primary first); IPv6 has no primary and is dumped newest
    // first, so sort it for a stable choice of route source.
    for iface in &mut interfaces {
        iface.addrs.sort_by_key(|a| match a.addr {
            IpAddr::V4(_) => (0, None),
            IpAddr::V6(v6) => (1, Some(v6)),
        });
    }
    let routes: Vec<InstalledRoute> = nl
        .routes()
        .await?
        .iter()
        .map(|m| {
            let mut r = netlink::decode_route(m);
            let oif = r.route.oif;
            r.route.dev = interfaces
                .iter()
                .find(|i| i.ifindex == oif)
                .map(|i| i.name.clone())
                .unwrap_or_else(|| format!("if{oif}"));
            r
        })
        .collect();
    let defaults = routes
        .iter()
        .map(|r| &r.route)
        .filter(|r| r.table == MAIN_TABLE && r.dst.prefix_len == 0 && r.oif != 0)
        .filter_map(|r| Some((r.oif, r.gateway?)))
        .collect();
    let rules_seen: Vec<_> = nl
        .rules()
        .await?
        .iter()
        .map(netlink::observe_rule)
        .collect();
    Ok(Discovery {
        interfaces,
        defaults,
        rules: rules_seen.iter().map(ObservedRule::installed).collect(),
        rules_seen,
        routes,
        all_rp_filter: sysctl::all_rp_filter().map_err(|e| format!("{e:#}")),
        nft: None,
        cloud: super::dmi::machine_cloud(),
    })
}

/// One link, without its addresses.
fn interface(link: &LinkMessage) -> Interface {
    let mut iface = Interface {
        ifindex: link.header.index,
        name: String::new(),
        mac: [0; 6],
        mtu: 0,
        up: link.header.flags.contains(LinkFlags::Up),
        ethernet: link.header.link_layer_type == LinkLayerType::Ether,
        loopback: link.header.flags.contains(LinkFlags::Loopback),
        master: None,
        addrs: Vec::new(),
        ours: Vec::new(),
        meta: None,
        forwarding: Forwarding::default(),
        ipv4_conf: netlink::decode_ipv4_conf(&link.attributes),
    };
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfName(n) => iface.name = n.clone(),
            LinkAttribute::Mtu(m) => iface.mtu = *m,
            LinkAttribute::Controller(m) => iface.master = Some(*m),
            LinkAttribute::AfSpecUnspec(specs) => iface.forwarding = forwards(specs),
            LinkAttribute::Address(a) if a.len() == 6 => {
                iface.mac = <MacAddr>::try_from(a.as_slice()).expect("6 bytes")
            }
            // Physical NICs have no kind and veths stand in for them in tests; bridges, bonds,
            // VLANs, tunnels and the like are not ENIs.
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info
                        && *kind != InfoKind::Veth
                    {
                        iface.ethernet = false;
                    }
                }
            }
            _ => {}
        }
    }
    if iface.loopback {
        iface.ethernet = false;
    }
    iface
}

/// Adds `msg`'s address to `iface`: to `ours` when enipin added it, to `addrs` when it is usable
/// as a source.
fn add_address(iface: &mut Interface, msg: &AddressMessage) {
    let v6 = msg.header.family == AddressFamily::Inet6;
    let mut addr = None;
    let mut local = None;
    let mut flags = AddressFlags::from_bits_retain(u32::from(msg.header.flags.bits()));
    let mut protocol = 0;
    for a in &msg.attributes {
        match a {
            AddressAttribute::Address(ip) => addr = Some(*ip),
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Flags(f) => flags = *f,
            AddressAttribute::Protocol(p) => protocol = u8::from(*p),
            _ => {}
        }
    }
    // IPv4: IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on p2p links).
    let Some(ip) = (if v6 { addr } else { local.or(addr) }) else {
        return;
    };
    let cidr = Cidr {
        addr: ip,
        prefix_len: msg.header.prefix_len,
    };
    if protocol == RTPROT_ENIPIN {
        iface.ours.push(cidr);
    }
    // IPv6: global addresses only, and not ones still in (or failed) DAD or deprecated.
    let unusable = AddressFlags::Tentative | AddressFlags::Dadfailed | AddressFlags::Deprecated;
    if v6 && (msg.header.scope != AddressScope::Universe || flags.intersects(unusable)) {
        return;
    }
    iface.addrs.push(cidr);
}

/// Which families the link forwards, from its per-family device configuration.
fn forwards(specs: &[AfSpecUnspec]) -> Forwarding {
    let mut f = Forwarding::default();
    for spec in specs {
        match spec {
            AfSpecUnspec::Inet(inet) => {
                f.v4 |= inet
                    .iter()
                    .any(|a| matches!(a, AfSpecInet::DevConf(c) if c.forwarding != 0))
            }
            AfSpecUnspec::Inet6(inet6) => {
                f.v6 |= inet6
                    .iter()
                    .any(|a| matches!(a, AfSpecInet6::DevConf(c) if c.forwarding != 0))
            }
            _ => {}
        }
    }
    f
}
