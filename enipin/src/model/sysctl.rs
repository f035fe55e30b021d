//! The sysctls enipin may change and the values it wants (written by [`crate::kernel::sysctl`]).
//!
//! A [`Key`] can only name one of the [`Knob`]s of one interface, and a value written is always an
//! integer: whatever a state file says, enipin writes nowhere else and nothing else.

use std::fmt;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize, Serializer};

use crate::model::Ipv4Conf;

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
    pub(crate) fn devconf_index(self) -> u16 {
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
