//! The vocabulary every module shares: what an interface is, which addresses it owns, and the
//! desired state enipin computes from them.

pub(crate) mod address;
pub(crate) mod cloud;
pub(crate) mod connmark;
pub(crate) mod discovery;
pub(crate) mod objects;
pub(crate) mod report;
pub(crate) mod route;
pub(crate) mod sysctl;

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

/// enipin's routing protocol number (`proto 229` in `ip rule` / `ip route`). Every rule and route
/// enipin installs carries it, so enipin finds exactly its own objects and never anyone else's.
/// Unassigned in iproute2's rt_protos, and used by none of the tools that
/// `config::DEFAULT_TABLE_BASE` lists.
pub(crate) const RTPROT_ENIPIN: u8 = 229;

pub(crate) type MacAddr = [u8; 6];

pub(crate) fn fmt_mac(mac: &MacAddr) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An address with a prefix length: an interface's address with its subnet (`198.18.0.10/24`),
/// a delegated prefix (EC2 prefix delegation: an IPv4 /28, an IPv6 /80; every address inside it
/// belongs to the interface), a rule's source or a route's destination.
///
/// Serialised as `{"addr": .., "prefix_len": ..}`, the shape the state file has always had.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cidr {
    /// The address; host bits may be set (an interface address keeps its own).
    pub addr: IpAddr,
    /// 0-32 for IPv4, 0-128 for IPv6.
    pub prefix_len: u8,
}

/// The one spelling of a CIDR in enipin's JSON reports (`status`, `attach --dry-run`, `doctor`):
/// `"198.18.0.10/24"`, as iproute2 and every config format write it. The state file keeps the
/// struct [`Cidr`] serialises to, so an older enipin still reads it after a downgrade.
pub(crate) mod cidr_text {
    use serde::Serializer;

    use super::Cidr;

    pub(crate) fn one<S: Serializer>(c: &Cidr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(c)
    }

    pub(crate) fn opt<S: Serializer>(c: &Option<Cidr>, s: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => s.collect_str(c),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn many<S: Serializer>(cs: &[Cidr], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(cs.iter().map(ToString::to_string))
    }
}

impl Cidr {
    /// `addr/32` or `addr/128`: the address alone.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix_len: host_len(&addr),
        }
    }

    /// The family's default route destination, `0.0.0.0/0` or `::/0`.
    pub fn any(v6: bool) -> Self {
        let addr = if v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        Self {
            addr,
            prefix_len: 0,
        }
    }

    /// The prefix length of a single address of this family: 32 or 128.
    pub fn host_len(&self) -> u8 {
        host_len(&self.addr)
    }

    /// The family, for code that handles the two apart.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// Same address and length with the host bits cleared (`198.18.0.0/24` for `198.18.0.77/24`).
    pub fn network(&self) -> Self {
        let len = u32::from(self.prefix_len);
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Self {
            addr,
            prefix_len: self.prefix_len,
        }
    }
}

fn host_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// `ADDR/LEN`, host bits allowed (an interface's address keeps them); LEN at most 32 or 128.
impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} has no /LEN"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let prefix_len: u8 = len
            .parse()
            .map_err(|_| format!("{len:?} is not a prefix length"))?;
        if prefix_len > host_len(&addr) {
            return Err(format!(
                "{s:?} has a prefix length above {}",
                host_len(&addr)
            ));
        }
        Ok(Self { addr, prefix_len })
    }
}

/// How a gateway was found: the issue asks enipin to say which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewaySource {
    /// The main table's default route through this interface.
    MainTable,
    /// The main table's default route through another interface, whose gateway is on this
    /// interface's subnet too (ENIs sharing a subnet share its router).
    SameSubnet,
    /// The subnet's first host (network + 1), as in a VPC.
    SubnetFirstHost,
    /// `--gateway`.
    Configured,
}

/// The next hop of an interface's default route in its own table, and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    pub(crate) addr: IpAddr,
    pub(crate) source: GatewaySource,
}

/// One interface as discovered over netlink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Interface {
    pub ifindex: u32,
    pub name: String,
    pub mac: MacAddr,
    pub mtu: u32,
    pub up: bool,
    /// Ethernet (ARPHRD_ETHER) and not a bridge/bond/vlan master etc.
    pub ethernet: bool,
    /// The loopback (IFF_LOOPBACK): never managed, named or not.
    pub loopback: bool,
    /// The ifindex of the device it is a port of (`IFLA_MASTER`: a bridge, bond or the NIC an
    /// Azure VF is enslaved to): such a port is not an ENI of its own.
    #[serde(default)]
    pub master: Option<u32>,
    /// Primary and secondary IPv4, global IPv6: link-local and deprecated-tentative excluded.
    /// With metadata, also the addresses metadata lists that netlink lacks (host length).
    pub addrs: Vec<Cidr>,
    /// Addresses carrying enipin's protocol (`IFA_PROTO` [`RTPROT_ENIPIN`]): those
    /// `--configure-addresses` added, whatever their flags.
    #[serde(default)]
    pub ours: Vec<Cidr>,
    /// What the cloud's metadata says of it (`None`: nothing known, or no `--metadata`).
    #[serde(default)]
    pub meta: Option<FromMetadata>,
    /// Which families it forwards (the link's `IFLA_INET_CONF` / `IFLA_INET6_CONF`).
    #[serde(default)]
    pub forwarding: Forwarding,
    /// The knobs of its IPv4 devconf enipin sets (`None`: no IPv4 on the device). Every
    /// discovery reads them anew.
    #[serde(skip)]
    pub ipv4_conf: Option<Ipv4Conf>,
}

/// The values of `net.ipv4.conf.<name>.{rp_filter,arp_ignore,arp_announce}`, as the link's IPv4
/// devconf (`IFLA_INET_CONF`) has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ipv4Conf {
    pub rp_filter: i32,
    pub arp_ignore: i32,
    pub arp_announce: i32,
}

/// Which families an interface forwards (its per-family devconf `forwarding`):
/// `bpf_fib_lookup` answers only for a family the device forwards (else
/// `BPF_FIB_LKUP_RET_FWD_DISABLED`, even for output lookups), each family on its own
/// (`net.ipv4.conf.X.forwarding`, `net.ipv6.conf.X.forwarding`).
///
/// An older state file has one bool for "IPv4 or IPv6"; it reads as both (what that enipin
/// planned), and the next discovery says which.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Forwarding {
    /// `net.ipv4.conf.X.forwarding` is on.
    pub v4: bool,
    /// `net.ipv6.conf.X.forwarding` is on.
    pub v6: bool,
}

impl Forwarding {
    /// Both families.
    pub const BOTH: Self = Self { v4: true, v6: true };
}

impl<'de> Deserialize<'de> for Forwarding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            PerFamily { v4: bool, v6: bool },
            Either(bool),
        }
        Ok(match Stored::deserialize(d)? {
            Stored::PerFamily { v4, v6 } => Self { v4, v6 },
            Stored::Either(true) => Self::BOTH,
            Stored::Either(false) => Self::default(),
        })
    }
}

/// What metadata adds to one interface ([`crate::metadata::merge`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FromMetadata {
    /// Every address metadata lists for the ENI.
    pub addrs: Vec<IpAddr>,
    /// Its delegated prefixes.
    pub prefixes: Vec<Cidr>,
    /// Listed, but not on the interface (added to `addrs` as host addresses).
    pub missing: Vec<IpAddr>,
    /// Addresses enipin added that metadata no longer lists (left out of `addrs`).
    pub retired: Vec<Cidr>,
    /// Why the lookup failed now, when the last known metadata stands in.
    pub unknown: Option<String>,
}

/// Where an address or prefix of a managed interface comes from (`status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// On the interface, and metadata does not list it (or is off).
    Netlink,
    /// Listed by metadata only (not on the interface).
    Metadata,
    /// On the interface and listed by metadata.
    Both,
    /// `--prefix` (a prefix).
    Option,
    /// `--prefix` and metadata (a prefix).
    OptionAndMetadata,
}

impl Interface {
    /// A test interface: `eth{ifindex}`, MAC 02:00:00:00:00:{ifindex}, up Ethernet, MTU 1500,
    /// with `addrs` (CIDRs) as netlink shows them; tests change the fields they need.
    #[cfg(test)]
    pub(crate) fn fixture(ifindex: u32, addrs: &[&str]) -> Self {
        Self {
            ifindex,
            name: format!("eth{ifindex}"),
            mac: [2, 0, 0, 0, 0, ifindex as u8],
            mtu: 1500,
            up: true,
            ethernet: true,
            loopback: false,
            master: None,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            ours: Vec::new(),
            meta: None,
            forwarding: Forwarding::default(),
            ipv4_conf: Some(Ipv4Conf::default()),
        }
    }

    /// Where `addr` of this interface comes from.
    pub(crate) fn origin(&self, addr: IpAddr) -> Origin {
        match &self.meta {
            Some(m) if m.missing.contains(&addr) => Origin::Metadata,
            Some(m) if m.addrs.contains(&addr) => Origin::Both,
            _ => Origin::Netlink,
        }
    }
}

/// An interface enipin manages, with everything the appliers need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedInterface {
    /// The kernel's index: what the datapath and the maps key on.
    pub ifindex: u32,
    /// The interface's name when selected.
    pub name: String,
    /// Its MAC: the identity that survives a rename.
    pub mac: MacAddr,
    /// Its MTU (L3): the datapath checks redirected packets against it.
    pub mtu: u32,
    /// The policy routing table of this interface (IPv4 and IPv6 share the number).
    pub table: u32,
    /// Its own addresses with their subnets: each gets a rule to `table` and an owner entry.
    pub addrs: Vec<Cidr>,
    /// Delegated prefixes (`--prefix IFACE=CIDR`): owned for the datapath, routed like addresses.
    pub prefixes: Vec<Cidr>,
    /// IPv4 default route's gateway in `table`; `None`: only the subnet route.
    pub gateway_v4: Option<Gateway>,
    /// IPv6 default route's gateway in `table`; `None`: only the subnet route.
    pub gateway_v6: Option<Gateway>,
    /// The families it forwards: only for those does the program get a next hop for it
    /// (see [`Forwarding`]).
    #[serde(default)]
    pub forwarding: Forwarding,
}

#[cfg(any(test, feature = "testing"))]
impl ManagedInterface {
    /// A fixture for tests and the benchmark: MAC `02:00:00:00:00:<ifindex>`, MTU 1500, table
    /// 20000 + ifindex, no prefixes, no gateways.
    pub fn fixture(ifindex: u32, name: &str, addrs: Vec<Cidr>) -> Self {
        Self {
            ifindex,
            name: name.into(),
            mac: [2, 0, 0, 0, 0, ifindex as u8],
            mtu: 1500,
            table: 20000 + ifindex,
            addrs,
            prefixes: Vec::new(),
            gateway_v4: None,
            gateway_v6: None,
            forwarding: Forwarding::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_and_text() {
        assert_eq!(cidr("198.18.0.77/24").network(), cidr("198.18.0.0/24"));
        assert_eq!(cidr("2001:db8::5/64").network(), cidr("2001:db8::/64"));
        assert_eq!(cidr("198.18.0.77/0").network(), Cidr::any(false));
        assert_eq!(cidr("2001:db8::5/128").network(), cidr("2001:db8::5/128"));
        assert_eq!(
            Cidr::host("198.18.0.9".parse().unwrap()),
            cidr("198.18.0.9/32")
        );
        assert_eq!(cidr("2001:db8::5/64").host_len(), 128);
        assert_eq!(cidr("198.18.0.64/28").to_string(), "198.18.0.64/28");
        assert!("198.18.0.64".parse::<Cidr>().is_err());
        assert!("198.18.0.64/33".parse::<Cidr>().is_err());
        assert!("2001:db8::/129".parse::<Cidr>().is_err());
        assert!("eth1/24".parse::<Cidr>().is_err());
    }

    #[test]
    fn serialised_as_the_state_file_has_it() {
        let json = r#"{"addr":"198.18.0.10","prefix_len":24}"#;
        assert_eq!(
            serde_json::to_string(&cidr("198.18.0.10/24")).unwrap(),
            json
        );
        assert_eq!(
            serde_json::from_str::<Cidr>(json).unwrap(),
            cidr("198.18.0.10/24")
        );
    }

    #[test]
    fn forwarding_reads_per_family_and_an_older_single_bool() {
        let read = |s: &str| serde_json::from_str::<Forwarding>(s).unwrap();
        let v4_only = Forwarding {
            v4: true,
            v6: false,
        };
        assert_eq!(read(&serde_json::to_string(&v4_only).unwrap()), v4_only);
        assert_eq!(
            read(r#"{"v4":false,"v6":true}"#),
            Forwarding {
                v4: false,
                v6: true
            }
        );
        // The older "IPv4 or IPv6": what that enipin planned for both families.
        assert_eq!(read("true"), Forwarding::BOTH);
        assert_eq!(read("false"), Forwarding::default());
        // Older still: no field at all.
        let mut json =
            serde_json::to_value(ManagedInterface::fixture(3, "eth1", Vec::new())).unwrap();
        json.as_object_mut().unwrap().remove("forwarding");
        let m: ManagedInterface = serde_json::from_value(json).unwrap();
        assert_eq!(m.forwarding, Forwarding::default());
    }
}
