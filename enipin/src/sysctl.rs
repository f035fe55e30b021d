//! The per-interface sysctls a host with several ENIs in one subnet needs: read from the link's
//! IPv4 devconf (`IFLA_AF_SPEC` / `AF_INET` / `IFLA_INET_CONF`, the values
//! /proc/sys/net/ipv4/conf/<if> shows) and written over rtnetlink, one `RTM_SETLINK` per interface
//! carrying only its knobs (the kernel's `inet_set_link_af`), in the network namespace of the
//! calling thread. Netlink rather than /proc/sys for least privilege: CAP_NET_ADMIN suffices, and
//! /proc/sys may stay read-only (as in an unprivileged Kubernetes container).
//!
//! What the kernel announces differs from a write under /proc/sys: no `RTM_NEWNETCONF` for
//! `rp_filter`, but the link's `RTM_NEWLINK` (as for any `RTM_SETLINK` that changes it), which
//! watch takes as the echo of its own write ([`crate::watch_report`]), not as news.
//!
//! A [`Key`] can only name one of the [`Knob`]s of one interface, and a value written is always an
//! integer: whatever a state file says, enipin writes nowhere else and nothing else.

use std::fmt;

use anyhow::{Context as _, Result, bail};
use netlink_packet_route::link::{AfSpecInet, AfSpecUnspec, LinkAttribute};
use rtnetlink::packet_core::{DefaultNla, Emitable as _, NLA_F_NESTED, Nla};
use serde::{Deserialize, Serialize, Serializer};

use crate::{
    model::Ipv4Conf,
    netlink::{self, Netlink},
};

/// The only sysctls enipin ever changes, all under `net.ipv4.conf.<interface>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Knob {
    RpFilter,
    ArpIgnore,
    ArpAnnounce,
}

impl Knob {
    pub(crate) const ALL: [Knob; 3] = [Knob::RpFilter, Knob::ArpIgnore, Knob::ArpAnnounce];

    /// The name in /proc/sys (and in the `serde` form).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Knob::RpFilter => "rp_filter",
            Knob::ArpIgnore => "arp_ignore",
            Knob::ArpAnnounce => "arp_announce",
        }
    }

    /// Its `IPV4_DEVCONF_*` index (linux/ip.h, counted from FORWARDING = 1): the attribute type
    /// of its entry in an `IFLA_INET_CONF` nest.
    fn devconf_index(self) -> u16 {
        match self {
            Knob::RpFilter => 8,
            Knob::ArpAnnounce => 18,
            Knob::ArpIgnore => 19,
        }
    }

    /// Its value in a link's devconf.
    pub(crate) fn of(self, conf: &Ipv4Conf) -> i32 {
        match self {
            Knob::RpFilter => conf.rp_filter,
            Knob::ArpIgnore => conf.arp_ignore,
            Knob::ArpAnnounce => conf.arp_announce,
        }
    }
}

/// `net.ipv4.conf.<ifname>.<knob>`, `ifname` a valid interface name: one knob of one interface.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    ifname: String,
    knob: Knob,
}

const PREFIX: &str = "net.ipv4.conf.";

impl Key {
    pub(crate) fn new(ifname: &str, knob: Knob) -> Result<Self> {
        check_ifname(ifname)
            .with_context(|| format!("sysctl key {PREFIX}{ifname}.{}", knob.name()))?;
        Ok(Self {
            ifname: ifname.to_owned(),
            knob,
        })
    }

    /// `net.ipv4.conf.eth1.rp_filter` (the state file's keys before they were kept by ifindex).
    /// Interface names may hold dots (`eth0.100`): the knob is the last component.
    pub(crate) fn parse(key: &str) -> Result<Self> {
        let refuse = || {
            anyhow::anyhow!(
                "sysctl key {key:?} is not one enipin sets (only {PREFIX}<interface>.{{{}}})",
                Knob::ALL.map(Knob::name).join(",")
            )
        };
        let rest = key.strip_prefix(PREFIX).ok_or_else(refuse)?;
        let (ifname, knob) = rest.rsplit_once('.').ok_or_else(refuse)?;
        let knob = Knob::ALL
            .into_iter()
            .find(|k| k.name() == knob)
            .ok_or_else(refuse)?;
        Self::new(ifname, knob).map_err(|e| refuse().context(format!("{e:#}")))
    }

    pub(crate) fn ifname(&self) -> &str {
        &self.ifname
    }

    pub(crate) fn knob(&self) -> Knob {
        self.knob
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}.{}", self.ifname, self.knob.name())
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The kernel's `dev_valid_name`: 1 to 15 bytes (IFNAMSIZ 16 with the NUL), not `.` or `..`, no
/// `/`, `:` or white space; plus `all` and `default`, the sysctl directories that are no
/// interface (enipin reads `all` and never writes it).
fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 {
        bail!("interface name {name:?} is not 1 to 15 bytes long");
    }
    if matches!(name, "." | ".." | "all" | "default") {
        bail!("{name:?} is not an interface name");
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        bail!("interface name {name:?} holds {c:?}");
    }
    Ok(())
}

/// A sysctl value enipin writes back: an integer (the knobs are all `proc_dointvec`).
pub(crate) fn check_value(value: &str) -> Result<()> {
    value
        .parse::<i32>()
        .map(|_| ())
        .map_err(|_| anyhow::anyhow!("sysctl value {value:?} is not an integer"))
}

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
        .filter(|(key, want)| key.knob.of(&now).to_string() != *want)
        .map(|(key, want)| format!("{key} != {want}"))
        .collect())
}

/// The values `ifname` should have, as (key, value), given its devconf `now` and
/// `net.ipv4.conf.all.rp_filter`:
/// - rp_filter: strict mode (effective value = max(all, iface) = 1) drops replies that arrive on
///   one ENI when the main table would route them out of another; loose (2) keeps the check
///   against spoofing from nowhere. 0 and 2 are left alone.
/// - arp_ignore=1, arp_announce=2: against ARP flux, each ENI answers and announces only its own
///   addresses, so the VPC learns the right MAC for every address.
pub(crate) fn wanted(
    ifname: &str,
    now: &Ipv4Conf,
    all_rp_filter: i32,
) -> Result<Vec<(Key, String)>> {
    let mut out = Vec::new();
    if all_rp_filter.max(Knob::RpFilter.of(now)) == 1 {
        out.push((Key::new(ifname, Knob::RpFilter)?, "2".to_owned()));
    }
    out.push((Key::new(ifname, Knob::ArpIgnore)?, "1".to_owned()));
    out.push((Key::new(ifname, Knob::ArpAnnounce)?, "2".to_owned()));
    Ok(out)
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
        .map(|(k, v)| format!("{PREFIX}{ifname}.{}={v}", k.name()))
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
