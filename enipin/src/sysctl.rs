//! The per-interface sysctls a host with several ENIs in one subnet needs, read and written under
//! /proc/sys/net/ipv4/conf (per network namespace: the namespace of the calling thread).
//!
//! A [`Key`] can only name one of the [`Knob`]s of one interface, and a value written is always an
//! integer: whatever a state file says, enipin writes nowhere else and nothing else.

use std::{fmt, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize, Serializer};

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
}

/// `net.ipv4.conf.<ifname>.<knob>`, `ifname` a valid interface name: the path it names is always
/// `/proc/sys/net/ipv4/conf/<ifname>/<knob>`.
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

    fn path(&self) -> PathBuf {
        ["/proc/sys/net/ipv4/conf", &self.ifname, self.knob.name()]
            .iter()
            .collect()
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

fn read_path(p: &std::path::Path) -> Result<String> {
    Ok(std::fs::read_to_string(p)
        .with_context(|| format!("reading {}", p.display()))?
        .trim()
        .to_owned())
}

pub(crate) fn read(key: &Key) -> Result<String> {
    read_path(&key.path())
}

pub(crate) fn write(key: &Key, value: &str) -> Result<()> {
    check_value(value).with_context(|| format!("refusing to write {key}"))?;
    let p = key.path();
    std::fs::write(&p, value).with_context(|| format!("writing {value} to {}", p.display()))
}

/// The values `ifname` should have, as (key, value), given what it has now:
/// - rp_filter: strict mode (effective value = max(all, iface) = 1) drops replies that arrive on
///   one ENI when the main table would route them out of another; loose (2) keeps the check
///   against spoofing from nowhere. 0 and 2 are left alone.
/// - arp_ignore=1, arp_announce=2: against ARP flux, each ENI answers and announces only its own
///   addresses, so the VPC learns the right MAC for every address.
pub(crate) fn desired(ifname: &str) -> Result<Vec<(Key, String)>> {
    let mut out = Vec::new();
    let all: u32 = read_path("/proc/sys/net/ipv4/conf/all/rp_filter".as_ref())?
        .parse()
        .unwrap_or(0);
    let rp_key = Key::new(ifname, Knob::RpFilter)?;
    let own: u32 = read(&rp_key)?.parse().unwrap_or(0);
    if all.max(own) == 1 {
        out.push((rp_key, "2".to_owned()));
    }
    out.push((Key::new(ifname, Knob::ArpIgnore)?, "1".to_owned()));
    out.push((Key::new(ifname, Knob::ArpAnnounce)?, "2".to_owned()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_only_the_knobs_of_an_interface() {
        let k = Key::parse("net.ipv4.conf.eth1.arp_ignore").unwrap();
        assert_eq!((k.ifname(), k.knob()), ("eth1", Knob::ArpIgnore));
        assert_eq!(k.to_string(), "net.ipv4.conf.eth1.arp_ignore");
        assert_eq!(
            k.path(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth1/arp_ignore")
        );
        let vlan = Key::parse("net.ipv4.conf.eth0.100.rp_filter").unwrap();
        assert_eq!(
            vlan.path(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
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
}
