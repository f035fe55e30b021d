//! The vocabulary every module shares: what an interface is, which addresses it owns, and the
//! desired state enipin computes from them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// enipin's routing protocol number (`proto 229` in `ip rule` / `ip route`). Every rule and route
/// enipin installs carries it, so enipin finds exactly its own objects and never anyone else's.
/// Unassigned in iproute2's rt_protos and by the other tools in ../shared/notes/prior-art.md.
pub const RTPROT_ENIPIN: u8 = 229;

pub type MacAddr = [u8; 6];

pub fn fmt_mac(mac: &MacAddr) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An address on an interface, with the prefix length of its subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// A prefix delegated to an interface (EC2 prefix delegation: an IPv4 /28, an IPv6 /80): every
/// address inside it belongs to the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Prefix {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// How a gateway was found: the issue asks enipin to say which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewaySource {
    /// The main table's default route through this interface.
    MainTable,
    /// The subnet's first host (network + 1), as in a VPC.
    SubnetFirstHost,
    /// `--gateway`.
    Configured,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    pub addr: IpAddr,
    pub source: GatewaySource,
}

/// One interface as discovered over netlink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub ifindex: u32,
    pub name: String,
    pub mac: MacAddr,
    pub mtu: u32,
    pub up: bool,
    /// Ethernet (ARPHRD_ETHER) and not a bridge/bond/vlan master etc.
    pub ethernet: bool,
    /// Primary and secondary IPv4, global IPv6: link-local and deprecated-tentative excluded.
    pub addrs: Vec<IfAddr>,
}

/// An interface enipin manages, with everything the appliers need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedInterface {
    pub ifindex: u32,
    pub name: String,
    pub mac: MacAddr,
    pub mtu: u32,
    /// The policy routing table of this interface (IPv4 and IPv6 share the number).
    pub table: u32,
    pub addrs: Vec<IfAddr>,
    /// Delegated prefixes (`--prefix IFACE=CIDR`): owned for the datapath, routed like addresses.
    pub prefixes: Vec<Prefix>,
    pub gateway_v4: Option<Gateway>,
    pub gateway_v6: Option<Gateway>,
}
