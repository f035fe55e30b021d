//! The per-interface sysctls a host with several ENIs in one subnet needs: read from the link's
//! IPv4 devconf (`IFLA_AF_SPEC` / `AF_INET` / `IFLA_INET_CONF`, the values
//! /proc/sys/net/ipv4/conf/<if> shows) and written over rtnetlink, one `RTM_SETLINK` per interface
//! carrying only its knobs (the kernel's `inet_set_link_af`), in the network namespace of the
//! calling thread. Netlink rather than /proc/sys for least privilege: CAP_NET_ADMIN suffices, and
//! /proc/sys may stay read-only (as in an unprivileged Kubernetes container).
//!
//! What the kernel announces differs from a write under /proc/sys: no `RTM_NEWNETCONF` for
//! `rp_filter`, but the link's `RTM_NEWLINK` (as for any `RTM_SETLINK` that changes it), which
//! watch takes as the echo of its own write (`daemon::report`), not as news.
//!
//! What may be written, and the values wanted, are [`crate::model::sysctl`]'s.

use anyhow::{Context as _, Result};
use netlink_packet_route::link::{AfSpecInet, AfSpecUnspec, LinkAttribute};
use rtnetlink::packet_core::{DefaultNla, Emitable as _, NLA_F_NESTED, Nla};

use crate::{
    kernel::netlink::{self, Netlink},
    model::sysctl::check_value,
    model::{
        Ipv4Conf,
        sysctl::{Key, Knob, wanted},
    },
};

/// `/proc/sys/net/ipv4/conf/all/rp_filter`: `all` is no link, so no link dump has it. A read,
/// which a read-only /proc/sys allows.
pub(crate) fn all_rp_filter() -> Result<i32> {
    let p = "/proc/sys/net/ipv4/conf/all/rp_filter";
    let v = std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?;
    v.trim()
        .parse()
        .with_context(|| format!("{p} holds {v:?}, not an integer"))
}

/// `ifname`'s devconf now, from a link request of its own: for a caller without a discovery
/// (watch's check between reconciles).
fn devconf_now(ifname: &str) -> Result<Ipv4Conf> {
    let link = netlink::link_blocking(ifname)?;
    netlink::decode_ipv4_conf(&link.attributes).with_context(|| {
        format!("interface {ifname} has no IPv4 configuration (no IFLA_INET_CONF)")
    })
}

/// The knobs of `ifname` that differ now from what [`wanted`] says, as `key != want`: one link
/// request and a read of `all` (watch's check runs it for every managed interface every 250 ms).
pub(crate) fn drifted(ifname: &str) -> Result<Vec<String>> {
    let now = devconf_now(ifname)?;
    Ok(wanted(ifname, &now, all_rp_filter()?)?
        .into_iter()
        .filter(|(key, want)| key.knob().of(&now).to_string() != *want)
        .map(|(key, want)| format!("{key} != {want}"))
        .collect())
}

/// One entry of an `IFLA_INET_CONF` nest: type `IPV4_DEVCONF_<knob>`, a u32 value (the kernel
/// stores it as the devconf's int).
struct DevConfEntry {
    knob: Knob,
    value: i32,
}

impl Nla for DevConfEntry {
    fn value_len(&self) -> usize {
        4
    }

    fn kind(&self) -> u16 {
        self.knob.devconf_index()
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(&self.value.to_ne_bytes());
    }
}

/// `IFLA_AF_SPEC { AF_INET { IFLA_INET_CONF { entries } } }`, exactly these entries: the kernel
/// changes (and marks as set) only the knobs sent. Not netlink-packet-route's
/// `AfSpecInet::DevConfRequest`: it sends every non-zero field of a whole devconf, so it can
/// neither leave the other knobs alone nor set one back to 0.
fn af_spec(entries: &[DevConfEntry]) -> LinkAttribute {
    let mut conf = vec![0; entries.buffer_len()];
    entries.emit(&mut conf);
    let nest = DefaultNla::new(IFLA_INET_CONF | NLA_F_NESTED, conf);
    LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![AfSpecInet::Other(nest)])])
}

/// `IFLA_INET_CONF` (linux/if_link.h).
const IFLA_INET_CONF: u16 = 1;

/// Sets `knobs` of `ifname` in one request: all of them or, if the kernel refuses one, none (it
/// validates the whole nest before it sets anything).
pub(crate) async fn write(nl: &Netlink, ifname: &str, knobs: &[(Knob, &str)]) -> Result<()> {
    let mut entries = Vec::with_capacity(knobs.len());
    for &(knob, value) in knobs {
        let key = Key::new(ifname, knob)?;
        check_value(value).with_context(|| format!("refusing to write {key}"))?;
        let value = value.parse().expect("checked");
        entries.push(DevConfEntry { knob, value });
    }
    let what = knobs
        .iter()
        .map(|(k, v)| format!("net.ipv4.conf.{ifname}.{}={v}", k.name()))
        .collect::<Vec<_>>()
        .join(", ");
    nl.set_link(ifname, vec![af_spec(&entries)])
        .await
        .with_context(|| format!("setting {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_only_the_knobs_of_an_interface() {
        let k = Key::parse("net.ipv4.conf.eth1.arp_ignore").unwrap();
        assert_eq!((k.ifname(), k.knob()), ("eth1", Knob::ArpIgnore));
        assert_eq!(k.to_string(), "net.ipv4.conf.eth1.arp_ignore");
        let vlan = Key::parse("net.ipv4.conf.eth0.100.rp_filter").unwrap();
        assert_eq!((vlan.ifname(), vlan.knob()), ("eth0.100", Knob::RpFilter));
        for bad in [
            "/tmp/x/file",
            "net.ipv4.ip_forward",
            "net.ipv4.conf.eth1.forwarding",
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.default.arp_ignore",
            "net.ipv4.conf...arp_ignore",
            "net.ipv4.conf.a/../../x.arp_ignore",
            "net.ipv4.conf.averyveryverylongname.rp_filter",
            "net.ipv4.conf.e th.rp_filter",
            "net.ipv4.conf..rp_filter",
            "net.ipv6.conf.eth1.rp_filter",
        ] {
            let err = Key::parse(bad).unwrap_err();
            assert!(format!("{err:#}").contains(bad), "{bad}: {err:#}");
        }
    }

    #[test]
    fn values_are_integers() {
        assert!(check_value("0").is_ok() && check_value("-1").is_ok());
        for bad in ["", "1\n2", "pwned", "1 ", "99999999999"] {
            assert!(check_value(bad).is_err(), "{bad:?}");
        }
    }

    /// The request carries exactly the knobs given, 0 included, each as {IPV4_DEVCONF_<knob>,
    /// u32}, nested as the kernel's `inet_validate_link_af` parses it.
    #[test]
    fn the_request_nests_only_the_knobs_set() {
        let attr = af_spec(&[
            DevConfEntry {
                knob: Knob::ArpIgnore,
                value: 1,
            },
            DevConfEntry {
                knob: Knob::ArpAnnounce,
                value: 0,
            },
        ]);
        let mut bytes = vec![0; attr.buffer_len()];
        attr.emit(&mut bytes);
        let nla = |len: u16, kind: u16| [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        let expected = [
            nla(28, 26),         // IFLA_AF_SPEC
            nla(24, 2),          // AF_INET
            nla(20, 1 | 0x8000), // IFLA_INET_CONF, nested
            nla(8, 19),          // IPV4_DEVCONF_ARP_IGNORE
            1u32.to_ne_bytes().into(),
            nla(8, 18), // IPV4_DEVCONF_ARP_ANNOUNCE
            0u32.to_ne_bytes().into(),
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn loose_rp_filter_only_where_strict_is_in_effect() {
        let conf = |rp_filter| Ipv4Conf {
            rp_filter,
            ..Default::default()
        };
        let knobs = |own, all| -> Vec<String> {
            wanted("eth1", &conf(own), all)
                .unwrap()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        };
        let arp = [
            "net.ipv4.conf.eth1.arp_ignore=1",
            "net.ipv4.conf.eth1.arp_announce=2",
        ];
        for (own, all) in [(1, 0), (0, 1), (1, 1)] {
            assert_eq!(
                knobs(own, all),
                [&["net.ipv4.conf.eth1.rp_filter=2"][..], &arp].concat(),
                "rp_filter {own}, all {all}"
            );
        }
        for (own, all) in [(0, 0), (2, 0), (0, 2), (2, 1), (1, 2)] {
            assert_eq!(knobs(own, all), arp, "rp_filter {own}, all {all}");
        }
    }
}
