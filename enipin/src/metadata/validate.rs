//! What metadata may say an ENI owns. An address that is no host's (unspecified, loopback,
//! link-local, multicast, broadcast), the metadata service's own, outside the ENI's subnet, or
//! the subnet's network, router or broadcast address is left out before anything keeps or plans
//! it: with `--configure-addresses` enipin would add and route it, and the service's own address
//! made local locks enipin out of the service for good (its last known metadata kept it).

use std::net::IpAddr;

use super::EniMetadata;
use crate::model::Cidr;

/// An entry metadata listed that no ENI can own, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub addr: Cidr,
    pub why: &'static str,
}

/// The addresses of the metadata endpoints (the default ones, or `--metadata-endpoint`'s host).
pub(crate) fn endpoint_addrs(endpoints: &[String]) -> Vec<IpAddr> {
    endpoints
        .iter()
        .filter_map(|e| e.parse::<hyper::Uri>().ok())
        .filter_map(|u| u.host()?.trim_matches(['[', ']']).parse().ok())
        .collect()
}

impl EniMetadata {
    /// The metadata without what no ENI can own, and what was left out.
    pub(crate) fn validated(mut self, endpoints: &[IpAddr]) -> (Self, Vec<Refused>) {
        let mut refused = Vec::new();
        let subnets = self.subnets.clone();
        let mut keep = |addr: IpAddr, prefix: Option<u8>| {
            let why = special(addr, endpoints).or_else(|| placement(addr, prefix, &subnets));
            let cidr = Cidr {
                addr,
                prefix_len: prefix.unwrap_or_else(|| Cidr::host(addr).prefix_len),
            };
            why.map(|why| refused.push(Refused { addr: cidr, why }))
                .is_none()
        };
        self.ipv4s.retain(|a| keep(IpAddr::V4(*a), None));
        self.ipv6s.retain(|a| keep(IpAddr::V6(*a), None));
        self.prefixes.retain(|p| keep(p.addr, Some(p.prefix_len)));
        (self, refused)
    }
}

/// Why `a` is no address of a host's, if it is none.
fn special(a: IpAddr, endpoints: &[IpAddr]) -> Option<&'static str> {
    if endpoints.contains(&a) {
        return Some("the metadata service's own address");
    }
    let (unspecified, loopback, multicast, link_local, broadcast) = match a {
        IpAddr::V4(v4) => (
            v4.is_unspecified(),
            v4.is_loopback(),
            v4.is_multicast(),
            v4.is_link_local(),
            v4.is_broadcast(),
        ),
        IpAddr::V6(v6) => (
            v6.is_unspecified(),
            v6.is_loopback(),
            v6.is_multicast(),
            v6.segments()[0] & 0xffc0 == 0xfe80,
            false,
        ),
    };
    [
        (unspecified, "unspecified"),
        (loopback, "a loopback address"),
        (multicast, "a multicast address"),
        (link_local, "a link-local address"),
        (broadcast, "the broadcast address"),
    ]
    .into_iter()
    .find_map(|(is, why)| is.then_some(why))
}

/// Why `a` (an address, or a delegated prefix's network of length `prefix`) cannot be on the
/// ENI given its `subnets`, if it cannot. Without a subnet of its family, nothing to hold it to.
fn placement(a: IpAddr, prefix: Option<u8>, subnets: &[Cidr]) -> Option<&'static str> {
    let family: Vec<&Cidr> = subnets.iter().filter(|s| s.is_ipv6() == a.is_ipv6()).collect();
    if family.is_empty() {
        return None;
    }
    let within = |s: &&&Cidr| {
        let net = Cidr {
            addr: a,
            prefix_len: s.prefix_len,
        };
        prefix.is_none_or(|p| p >= s.prefix_len) && net.network() == s.network()
    };
    let Some(s) = family.iter().find(within) else {
        return Some("outside the ENI's subnet");
    };
    let (IpAddr::V4(a4), IpAddr::V4(net), None) = (a, s.network().addr, prefix) else {
        return None;
    };
    if s.prefix_len > 30 {
        return None; // a /31 or /32 has no network, router or broadcast address to spare
    }
    let (a4, net) = (u32::from(a4), u32::from(net));
    let broadcast = net | (u32::MAX >> s.prefix_len);
    match a4 {
        x if x == net => Some("the subnet's network address"),
        x if x == net + 1 => Some("the subnet's router"),
        x if x == broadcast => Some("the subnet's broadcast address"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eni(ipv4s: &[&str], ipv6s: &[&str], prefixes: &[&str]) -> EniMetadata {
        EniMetadata {
            mac: [2, 0, 0, 0, 0, 1],
            interface_id: "eni-1".into(),
            device_number: 1,
            network_card: None,
            ipv4s: ipv4s.iter().map(|a| a.parse().unwrap()).collect(),
            ipv6s: ipv6s.iter().map(|a| a.parse().unwrap()).collect(),
            prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
            subnets: ["198.18.0.0/24", "2001:db8::/64"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
        }
    }

    #[test]
    fn what_no_eni_can_own_is_left_out_with_why() {
        let endpoint = endpoint_addrs(&["http://198.18.0.200:8080".to_owned()]);
        assert_eq!(endpoint, ["198.18.0.200".parse::<IpAddr>().unwrap()]);
        let m = eni(
            &[
                "198.18.0.11",
                "198.18.0.12",
                "198.18.5.1",
                "198.18.0.0",
                "198.18.0.1",
                "198.18.0.255",
                "198.18.0.200",
                "0.0.0.0",
                "127.0.0.1",
                "224.0.0.1",
                "255.255.255.255",
                "169.254.169.254",
            ],
            &["2001:db8::11", "2001:db8:9::1", "fe80::1", "ff02::1", "::1"],
            &["198.18.0.64/28", "198.18.9.0/28", "2001:db8::1:0:0:0/80"],
        );
        let (m, refused) = m.validated(&endpoint);
        let kept: Vec<String> = m.addresses().map(|a| a.to_string()).collect();
        assert_eq!(kept, ["198.18.0.11", "198.18.0.12", "2001:db8::11"]);
        assert_eq!(
            m.prefixes,
            ["198.18.0.64/28".parse().unwrap(), "2001:db8::1:0:0:0/80".parse().unwrap()]
        );
        let said: Vec<String> = refused
            .iter()
            .map(|r| format!("{} {}", r.addr, r.why))
            .collect();
        assert_eq!(
            said,
            [
                "198.18.5.1/32 outside the ENI's subnet",
                "198.18.0.0/32 the subnet's network address",
                "198.18.0.1/32 the subnet's router",
                "198.18.0.255/32 the subnet's broadcast address",
                "198.18.0.200/32 the metadata service's own address",
                "0.0.0.0/32 unspecified",
                "127.0.0.1/32 a loopback address",
                "224.0.0.1/32 a multicast address",
                "255.255.255.255/32 the broadcast address",
                "169.254.169.254/32 a link-local address",
                "2001:db8:9::1/128 outside the ENI's subnet",
                "fe80::1/128 a link-local address",
                "ff02::1/128 a multicast address",
                "::1/128 a loopback address",
                "198.18.9.0/28 outside the ENI's subnet",
            ]
        );
    }

    #[test]
    fn without_a_subnet_of_its_family_only_special_addresses_go() {
        let mut m = eni(&["198.18.5.1", "127.0.0.2"], &[], &[]);
        m.subnets.clear();
        let (m, refused) = m.validated(&[]);
        assert_eq!(m.ipv4s, ["198.18.5.1".parse::<std::net::Ipv4Addr>().unwrap()]);
        assert_eq!(refused.len(), 1, "{refused:?}");
    }
}
