//! The next hop of a packet redirected onto its owner, as enipin's own table for the owner routes
//! it (see [`crate::plan`]: the table holds the owner's subnet routes and `default via` its
//! gateway). Handing it to `bpf_redirect_neigh` skips the kernel's second route lookup.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use enipin_ebpf::{
    NEXT_HOP_GATEWAY_V4, NEXT_HOP_GATEWAY_V6, NEXT_HOP_SUBNET_V4, NEXT_HOP_SUBNET_V6, NextHop,
    Subnet,
};

use crate::model::{Cidr, ManagedInterface};

/// `m`'s next-hop entry, `None` when neither family has one. A family has its subnet when `m`
/// has exactly one subnet of it (host addresses, /32 and /128, have none): with two, a
/// destination on the second would need the table's second subnet route, which one entry cannot
/// hold, so that family keeps the full lookup. Its gateway is the table's default route's.
pub(super) fn next_hop(m: &ManagedInterface) -> Option<NextHop> {
    let mut hop = NextHop::default();
    if let Some(net) = only_subnet(m, false) {
        let IpAddr::V4(addr) = net.addr else {
            unreachable!("an IPv4 subnet")
        };
        hop.v4.net = addr.octets();
        hop.v4.mask = (u32::MAX.checked_shl(32 - u32::from(net.prefix_len)))
            .unwrap_or(0)
            .to_be_bytes();
        hop.flags |= NEXT_HOP_SUBNET_V4;
        if let Some(IpAddr::V4(gw)) = m.gateway_v4.map(|g| g.addr) {
            hop.v4.gateway = gw.octets();
            hop.flags |= NEXT_HOP_GATEWAY_V4;
        }
    }
    if let Some(net) = only_subnet(m, true) {
        let IpAddr::V6(addr) = net.addr else {
            unreachable!("an IPv6 subnet")
        };
        hop.v6.net = addr.octets();
        hop.v6.mask = (u128::MAX.checked_shl(128 - u32::from(net.prefix_len)))
            .unwrap_or(0)
            .to_be_bytes();
        hop.flags |= NEXT_HOP_SUBNET_V6;
        if let Some(IpAddr::V6(gw)) = m.gateway_v6.map(|g| g.addr) {
            hop.v6.gateway = gw.octets();
            hop.flags |= NEXT_HOP_GATEWAY_V6;
        }
    }
    (hop.flags != 0).then_some(hop)
}

/// The one subnet of `m` in a family, as the rules layer routes it (network address); `None`
/// with none or several.
fn only_subnet(m: &ManagedInterface, v6: bool) -> Option<Cidr> {
    let mut nets = m
        .addrs
        .iter()
        .filter(|a| a.addr.is_ipv6() == v6 && a.prefix_len != a.host_len())
        .map(Cidr::network);
    let first = nets.next()?;
    nets.all(|n| n == first).then_some(first)
}

/// How a plan prints an entry: `198.18.0.0/24 on-link, else via 198.18.0.1`, per family.
pub(super) struct Shown<'a>(pub(super) &'a NextHop);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.0;
        let mut parts = Vec::new();
        if h.flags & NEXT_HOP_SUBNET_V4 != 0 {
            let gw = (h.flags & NEXT_HOP_GATEWAY_V4 != 0).then(|| Ipv4Addr::from(h.v4.gateway));
            parts.push(family(
                Ipv4Addr::from(h.v4.net).into(),
                &h.v4,
                gw.map(Into::into),
            ));
        }
        if h.flags & NEXT_HOP_SUBNET_V6 != 0 {
            let gw = (h.flags & NEXT_HOP_GATEWAY_V6 != 0).then(|| Ipv6Addr::from(h.v6.gateway));
            parts.push(family(
                Ipv6Addr::from(h.v6.net).into(),
                &h.v6,
                gw.map(Into::into),
            ));
        }
        write!(f, "{}", parts.join("; "))
    }
}

fn family<const N: usize>(net: IpAddr, s: &Subnet<N>, gw: Option<IpAddr>) -> String {
    let len: u32 = s.mask.iter().map(|b| b.count_ones()).sum();
    match gw {
        Some(gw) => format!("{net}/{len} on-link, else via {gw}"),
        None => format!("{net}/{len} on-link, else the full lookup"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Gateway, GatewaySource};

    fn eni(addrs: &[&str], gw4: Option<&str>, gw6: Option<&str>) -> ManagedInterface {
        let gw = |g: Option<&str>| {
            g.map(|g| Gateway {
                addr: g.parse().unwrap(),
                source: GatewaySource::Configured,
            })
        };
        ManagedInterface {
            ifindex: 3,
            name: "eth1".into(),
            mac: [0; 6],
            mtu: 1500,
            table: 20003,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            prefixes: Vec::new(),
            gateway_v4: gw(gw4),
            gateway_v6: gw(gw6),
        }
    }

    #[test]
    fn one_subnet_per_family_with_its_gateway() {
        let m = eni(
            &["198.18.0.11/24", "198.18.0.12/24", "2001:db8::11/64"],
            Some("198.18.0.1"),
            None,
        );
        let h = next_hop(&m).unwrap();
        assert_eq!(
            h.flags,
            NEXT_HOP_SUBNET_V4 | NEXT_HOP_GATEWAY_V4 | NEXT_HOP_SUBNET_V6
        );
        assert_eq!(h.v4.net, [198, 18, 0, 0]);
        assert_eq!(h.v4.mask, [255, 255, 255, 0]);
        assert_eq!(h.v4.gateway, [198, 18, 0, 1]);
        assert_eq!(h.v6.mask[..8], [0xff; 8]);
        assert_eq!(h.v6.mask[8..], [0; 8]);
        assert_eq!(
            Shown(&h).to_string(),
            "198.18.0.0/24 on-link, else via 198.18.0.1; 2001:db8::/64 on-link, else the full lookup"
        );
    }

    #[test]
    fn two_subnets_or_host_addresses_only_keep_the_full_lookup() {
        let two = eni(
            &["198.18.0.11/24", "198.18.5.11/24"],
            Some("198.18.0.1"),
            None,
        );
        assert_eq!(next_hop(&two), None);
        let hosts = eni(
            &["198.18.0.11/32", "2001:db8::11/128"],
            Some("198.18.0.1"),
            None,
        );
        assert_eq!(next_hop(&hosts), None);
        // Each family on its own: IPv6's two subnets leave IPv4's entry alone.
        let mixed = eni(
            &["198.18.0.11/24", "2001:db8::11/64", "2001:db8:1::11/64"],
            None,
            Some("fe80::1"),
        );
        assert_eq!(next_hop(&mixed).unwrap().flags, NEXT_HOP_SUBNET_V4);
    }
}
