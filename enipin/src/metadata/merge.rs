//! Metadata into a discovery: each interface whose MAC metadata knows gets the addresses
//! metadata lists and netlink lacks (as host addresses: no subnet route ever uses one as its
//! source, and the kernel refuses a route source the host does not have), and its delegated
//! prefixes. Selection and planning then treat them like any other address and prefix.

use std::net::IpAddr;

use crate::{
    model::discovery::Discovery,
    model::{Cidr, FromMetadata},
};

use super::View;

/// Adds `view`'s addresses and prefixes to `d`'s interfaces. With `configure` (enipin adds and
/// removes addresses itself), an address enipin added that metadata no longer lists is left out
/// of the desired state: it is about to be removed.
///
/// Beside the Amazon VPC CNI (its pod rules are there) the ENIs' secondary addresses and
/// prefixes the metadata lists are its pods': metadata then only confirms what the host has and
/// adds nothing (a pod's address is not the host's to route or to own).
pub(crate) fn merge(d: &mut Discovery, view: &View, configure: bool) {
    let pods = d.vpc_cni_rules() > 0;
    for i in &mut d.interfaces {
        let Some(m) = view.known.get(&i.mac) else {
            continue;
        };
        let on_host =
            |a: &IpAddr| i.addrs.iter().any(|c| c.addr == *a) || i.ours.iter().any(|c| c.addr == *a);
        let listed: Vec<IpAddr> = m.addresses().filter(|a| !pods || on_host(a)).collect();
        let mut from = FromMetadata {
            addrs: listed.clone(),
            prefixes: if pods { Vec::new() } else { m.prefixes.clone() },
            missing: Vec::new(),
            retired: Vec::new(),
            unknown: view.unknown.get(&i.mac).cloned(),
        };
        for a in listed {
            if !i.addrs.iter().any(|c| c.addr == a) && !i.ours.iter().any(|c| c.addr == a) {
                i.addrs.push(Cidr::host(a));
                from.missing.push(a);
            }
        }
        if configure {
            let retired: Vec<Cidr> = i
                .ours
                .iter()
                .filter(|o| !from.addrs.contains(&o.addr))
                .copied()
                .collect();
            i.addrs
                .retain(|a| !retired.iter().any(|r| r.addr == a.addr));
            from.retired = retired;
        }
        i.meta = Some(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        routing::address,
        settings::config::Config,
        metadata::EniMetadata,
        model::{Interface, Origin},
        routing::plan::{self, Change}, routing::select::{Selection, self},
    };

    fn iface(ifindex: u32, addrs: &[&str]) -> Interface {
        Interface::fixture(ifindex, addrs)
    }

    fn discovery() -> Discovery {
        let mut eth2 = iface(2, &["198.18.0.11/24", "198.18.0.23/32"]);
        // 198.18.0.23 was added by enipin (IFA_PROTO 229) and metadata no longer lists it.
        eth2.ours.push("198.18.0.23/32".parse().unwrap());
        Discovery::fixture(vec![iface(1, &["198.18.0.10/24"]), eth2], Vec::new())
    }

    fn view() -> View {
        let m = EniMetadata {
            mac: [2, 0, 0, 0, 0, 2],
            interface_id: "eni-2".into(),
            device_number: 1,
            ipv4s: vec![
                "198.18.0.11".parse().unwrap(),
                "198.18.0.21".parse().unwrap(),
            ],
            prefixes: vec!["198.18.0.64/28".parse().unwrap()],
            subnets: vec!["198.18.0.0/24".parse().unwrap()],
            ..EniMetadata::default()
        };
        let mut v = View::default();
        v.known.insert(m.mac, m);
        v
    }

    #[test]
    fn metadata_adds_host_addresses_and_prefixes_and_retires_only_enipins() {
        let mut d = discovery();
        merge(&mut d, &view(), true);
        let eth2 = &d.interfaces[1];
        let addrs: Vec<String> = eth2.addrs.iter().map(ToString::to_string).collect();
        assert_eq!(
            addrs,
            ["198.18.0.11/24", "198.18.0.21/32"],
            "the retired one left out"
        );
        assert_eq!(eth2.origin("198.18.0.11".parse().unwrap()), Origin::Both);
        assert_eq!(
            eth2.origin("198.18.0.21".parse().unwrap()),
            Origin::Metadata
        );
        assert_eq!(
            d.interfaces[0].origin("198.18.0.10".parse().unwrap()),
            Origin::Netlink
        );

        let Selection::Managed(m) = select::select(&d, &Config::default()).unwrap() else {
            panic!("eth1 and eth2 share a subnet");
        };
        assert_eq!(m[1].prefixes, ["198.18.0.64/28".parse().unwrap()]);
        let (adds, dels) = address::changes(&d, &m);
        let text = |c: &[Change]| -> Vec<String> {
            c.iter().map(|c| c.render(plan::DiffFormat::Text)).collect()
        };
        assert_eq!(
            text(&adds),
            ["+ address 198.18.0.21/32 dev eth2 noprefixroute proto 229"]
        );
        assert_eq!(
            text(&dels),
            ["- address 198.18.0.23/32 dev eth2 noprefixroute proto 229"]
        );
        // The rules follow: one pair for the added address, none for the retired one.
        let (rules, _) = plan::desired(&m, &Config::default());
        let from: Vec<String> = rules
            .iter()
            .filter(|r| r.priority == 20000)
            .map(|r| r.from.unwrap().to_string())
            .collect();
        assert_eq!(
            from,
            [
                "198.18.0.10/32",
                "198.18.0.11/32",
                "198.18.0.21/32",
                "198.18.0.64/28"
            ]
        );
    }

    /// Without --configure-addresses nothing is retired; an ENI metadata does not know (never
    /// known: no stand-in) gets nothing, so nothing of it can be removed.
    #[test]
    fn without_configure_or_knowledge_nothing_is_retired() {
        let mut d = discovery();
        merge(&mut d, &view(), false);
        assert!(
            d.interfaces[1]
                .addrs
                .iter()
                .any(|a| a.to_string() == "198.18.0.23/32")
        );
        assert!(d.interfaces[1].meta.as_ref().unwrap().retired.is_empty());
        let mut d = discovery();
        let mut unknown = View::default();
        unknown
            .unknown
            .insert([2, 0, 0, 0, 0, 2], "HTTP 500".into());
        merge(&mut d, &unknown, true);
        assert!(d.interfaces.iter().all(|i| i.meta.is_none()));
        assert_eq!(d.interfaces[1].addrs.len(), 2);
    }
}
