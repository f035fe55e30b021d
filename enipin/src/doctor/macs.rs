//! Interfaces that share a MAC: accelerated-networking VFs on Azure share their NIC's. A
//! selection by MAC picks the one that carries the addresses ([`select::pick_by_mac`]) and refuses
//! when that is ambiguous; this check says which it would pick.

use std::collections::BTreeMap;

use super::{Finding, Severity};
use crate::{
    model::{Interface, fmt_mac},
    routing::select::{self, MacPick},
    settings::config::Config,
};

pub(super) fn check(interfaces: &[Interface], cfg: &Config) -> Vec<Finding> {
    let mut groups: BTreeMap<String, Vec<&Interface>> = BTreeMap::new();
    for i in interfaces.iter().filter(|i| !i.loopback && i.mac != [0; 6]) {
        groups.entry(fmt_mac(&i.mac)).or_default().push(i);
    }
    let mut out = Vec::new();
    for (mac, ifaces) in groups.iter().filter(|(_, v)| v.len() > 1) {
        let names: Vec<_> = ifaces.iter().map(|i| i.name.as_str()).collect();
        let selected = cfg.interfaces.iter().any(|s| s.eq_ignore_ascii_case(mac));
        let check = format!("macs {mac}");
        out.push(match select::pick_by_mac(interfaces, mac) {
            MacPick::One(i) => Finding::ok(
                check,
                format!(
                    "{} share {mac}: a selection by MAC picks {}, the one with addresses",
                    names.join(", "),
                    i.name
                ),
            ),
            _ => Finding::new(
                check,
                if selected {
                    Severity::Conflict
                } else {
                    Severity::Warning
                },
                format!(
                    "{} share {mac} and not exactly one of them has an address: a selection by \
                     this MAC is refused",
                    names.join(", ")
                ),
            )
            .fix(format!("select by name: --interfaces {}", names.join(","))),
        });
    }
    if out.is_empty() {
        out.push(Finding::ok("macs", "no two interfaces share a MAC".into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(ifindex: u32, name: &str, mac: u8, addrs: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            mac: [2, 0, 0, 0, 0, mac],
            ..Interface::fixture(ifindex, addrs)
        }
    }

    #[test]
    fn a_shared_mac_names_the_interface_a_selection_picks_or_refuses() {
        let mut ifaces = vec![
            iface(2, "eth0", 1, &["198.18.0.10/24"]),
            iface(3, "enP1s1", 1, &[]),
            iface(4, "eth1", 2, &["198.18.0.11/24"]),
        ];
        let f = check(&ifaces, &Config::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Ok);
        assert_eq!(
            f[0].meaning,
            "eth0, enP1s1 share 02:00:00:00:00:01: a selection by MAC picks eth0, the one with addresses"
        );
        ifaces[1].addrs = vec!["198.18.9.1/24".parse().unwrap()];
        let f = check(&ifaces, &Config::default());
        assert_eq!(f[0].severity, Severity::Warning);
        let cfg = Config {
            interfaces: vec!["02:00:00:00:00:01".into(), "eth1".into()],
            ..Config::default()
        };
        let f = check(&ifaces, &cfg);
        assert_eq!(f[0].severity, Severity::Conflict);
        assert_eq!(
            f[0].fix.as_deref(),
            Some("select by name: --interfaces eth0,enP1s1")
        );
        ifaces.remove(1);
        assert_eq!(
            check(&ifaces, &cfg)[0].meaning,
            "no two interfaces share a MAC"
        );
    }
}
