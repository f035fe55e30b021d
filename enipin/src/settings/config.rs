//! What the operator asked for: the command-line options that shape the desired state.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use crate::model::{Cidr, cloud::Cloud};

/// Default first policy-routing table. Clear of amazon-ec2-net-utils (10000 + 100*card + device),
/// the VPC CNI (device+1, 10000+), nm-cloud-setup (30200+), cloud-init (100+) and Cilium (10+n,
/// 300+); never 0 or 253-255.
pub const DEFAULT_TABLE_BASE: u32 = 20000;
/// Default first rule priority: clear of the VPC CNI (<= 1536, 32765), nm-cloud-setup (30200+),
/// Cilium (< 112) and the kernel's 0, 32766, 32767.
pub const DEFAULT_PRIORITY: u32 = 20000;

/// Default `--connmark-mask`: bits 24-31 of the packet and conntrack marks, clear of kube-proxy
/// (0x4000, 0x8000), the VPC CNI (0x80), netavark (0x2000), Cilium (0x0f00), Istio (0x539) and
/// Tailscale (0xff0000). Calico claims 0xffff0000 by default: choose another mask there.
pub const DEFAULT_CONNMARK_MASK: u32 = 0xff00_0000;

const fn default_connmark_mask() -> u32 {
    DEFAULT_CONNMARK_MASK
}

/// Default `--pin-dir`: enipin's directory on the machine's bpffs.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/enipin";
/// Default `--state-dir`: under /run, which a reboot empties, as it drops what enipin installed.
pub const DEFAULT_STATE_DIR: &str = "/run/enipin";
/// Default `--interval` of `watch`, in seconds: a safety net for missed events only (every
/// event reconciles at once), so it can be long.
pub const DEFAULT_INTERVAL: u64 = 30;
/// Default `watch --metadata-interval` / `metadata.interval`, seconds: a lookup of every ENI's
/// metadata at least this often (the service sends no event): 9 requests per ENI and 2 more each time.
pub const DEFAULT_METADATA_INTERVAL: u64 = 10;
/// Default `--metrics-listen` of `watch`: loopback only, 9717 as in the DaemonSet's probes.
pub const DEFAULT_LISTEN: Listen = Listen(Some(SocketAddr::new(
    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    9717,
)));

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
/// What the datapath does with a misrouted packet (`--mode`).
pub enum Mode {
    /// Redirect misrouted packets onto the interface that owns their source, and count them.
    #[default]
    Enforce,
    /// Only count misrouted packets.
    Monitor,
}

/// How the datapath hooks into egress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attach {
    /// TCX where the kernel has it (>= 6.6, probed once), else a netlink clsact filter.
    #[default]
    Auto,
    /// A TCX link, without probing: attaching fails where the kernel has no TCX.
    Tcx,
    /// A clsact filter even where TCX exists: how tests cover what kernels < 6.6 take.
    Netlink,
}

/// Where addresses and delegated prefixes come from besides netlink (`--metadata`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MetadataSource {
    /// Netlink alone: what the interfaces have is what enipin manages.
    #[default]
    None,
    /// EC2's instance metadata service (IMDSv2): each ENI's secondary addresses and prefixes.
    Aws,
    /// The cloud from the machine's DMI strings, never from probing an address: EC2's
    /// metadata on an EC2 instance; netlink alone elsewhere (Azure, Google Cloud and Oracle
    /// Cloud are recognised, and named, but their metadata is not read yet).
    Auto,
}

impl MetadataSource {
    /// The source in effect on a machine in `cloud`: `Auto` made concrete; the others as set.
    pub(crate) fn on(self, cloud: Option<Cloud>) -> Self {
        match (self, cloud) {
            (Self::Auto, Some(Cloud::Aws)) => Self::Aws,
            (Self::Auto, _) => Self::None,
            (s, _) => s,
        }
    }
}

/// Where enipin keeps what the kernel cannot tell back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// bpffs directory for enipin's pinned links, program and maps.
    pub pin_dir: PathBuf,
    /// Directory of the state file (previous sysctl values, options of the last attach).
    pub state_dir: PathBuf,
}

/// What `attach` and `watch` install, from the command line; saved in the state file, so `watch`
/// and a later `detach` know what the last attach asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Interfaces to manage, by name or MAC; empty: every ENI a reply from which could leave by
    /// another ENI ([`crate::routing::verdict`]).
    pub interfaces: Vec<String>,
    /// Gateway override for every managed interface.
    pub gateway: Option<IpAddr>,
    /// The first managed interface's routing table; the next ones count up from it.
    pub table_base: u32,
    /// The first rule priority; enipin's rules count up from it.
    pub priority: u32,
    /// Prefixes delegated to interfaces: (interface name or MAC, prefix). A pair, not a
    /// [`DelegatedPrefix`]: the state file has always held `[name, {addr, prefix_len}]`.
    pub prefixes: Vec<(String, Cidr)>,
    /// Install the policy rules and routes (`--no-rules` clears it).
    pub rules: bool,
    /// Install the datapath (`--no-ebpf` clears it).
    pub ebpf: bool,
    /// Set the per-interface sysctls the rules need (`--no-rules` clears it too).
    pub sysctls: bool,
    /// The datapath's mode.
    pub mode: Mode,
    /// Log the datapath's rare events through aya-log (`--debug`).
    pub debug: bool,
    /// State files written before this field existed read as `Auto`.
    #[serde(default)]
    pub attach: Attach,
    /// Secondary addresses and delegated prefixes from the cloud's metadata too.
    #[serde(default)]
    pub metadata: MetadataSource,
    /// The metadata service's base URL (`None`: the cloud's own, with its fallbacks).
    #[serde(default)]
    pub metadata_endpoint: Option<String>,
    /// Add the addresses metadata assigns that an interface lacks (and remove them again).
    #[serde(default)]
    pub configure_addresses: bool,
    /// Route the replies of connections that arrived on a managed interface out of it up front
    /// (nftables conntrack marks and `fwmark` rules): DNAT'd replies then need no redirect.
    #[serde(default)]
    pub connmark: bool,
    /// The bits of the packet and conntrack marks that connmark uses.
    #[serde(default = "default_connmark_mask")]
    pub connmark_mask: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            gateway: None,
            table_base: DEFAULT_TABLE_BASE,
            priority: DEFAULT_PRIORITY,
            prefixes: Vec::new(),
            rules: true,
            ebpf: true,
            sysctls: true,
            mode: Mode::Enforce,
            debug: false,
            attach: Attach::Auto,
            metadata: MetadataSource::None,
            metadata_endpoint: None,
            configure_addresses: false,
            connmark: false,
            connmark_mask: DEFAULT_CONNMARK_MASK,
        }
    }
}

/// Where `watch` serves `/metrics` and `/healthz` (`--metrics-listen`, `metrics.listen`): an
/// address, or `none` (nothing served).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Listen(pub Option<SocketAddr>);

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "none" {
            return Ok(Self(None));
        }
        s.parse().map(|a| Self(Some(a))).map_err(|e| {
            format!("{s:?}: {e}: an address and port such as 127.0.0.1:9717, or `none`")
        })
    }
}

impl TryFrom<String> for Listen {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("none"),
        }
    }
}

impl From<Listen> for String {
    fn from(l: Listen) -> Self {
        l.to_string()
    }
}

/// `--prefix IFACE=CIDR`: a prefix delegated to an interface (an IPv4 /28 or IPv6 /80 delegated
/// by EC2, say), named by interface name or MAC. In the config file, the same `IFACE=CIDR`
/// string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DelegatedPrefix {
    pub(crate) iface: String,
    pub(crate) prefix: Cidr,
}

impl FromStr for DelegatedPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (iface, cidr) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected IFACE=CIDR, e.g. eth1=198.18.0.64/28"))?;
        if iface.is_empty() {
            return Err(format!(
                "{s:?}: expected IFACE=CIDR, no interface before `=`"
            ));
        }
        let prefix: Cidr = cidr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if prefix.network() != prefix {
            return Err(format!(
                "{s:?}: {} has host bits set for /{} (network is {})",
                prefix.addr,
                prefix.prefix_len,
                prefix.network().addr
            ));
        }
        Ok(Self {
            iface: iface.to_owned(),
            prefix,
        })
    }
}

impl TryFrom<String> for DelegatedPrefix {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DelegatedPrefix> for String {
    fn from(p: DelegatedPrefix) -> Self {
        format!("{}={}", p.iface, p.prefix)
    }
}

impl From<DelegatedPrefix> for (String, Cidr) {
    fn from(p: DelegatedPrefix) -> Self {
        (p.iface, p.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_arg() {
        let p: DelegatedPrefix = "eth1=198.18.0.64/28".parse().unwrap();
        assert_eq!(p.iface, "eth1");
        assert_eq!(p.prefix, "198.18.0.64/28".parse().unwrap());
        assert!("eth1=198.18.0.65/28".parse::<DelegatedPrefix>().is_err());
        assert!("198.18.0.64/28".parse::<DelegatedPrefix>().is_err());
        assert!("=198.18.0.64/28".parse::<DelegatedPrefix>().is_err());
        assert!("eth1=198.18.0.64/33".parse::<DelegatedPrefix>().is_err());
        assert!("eth1=2001:db8:1::/80".parse::<DelegatedPrefix>().is_ok());
    }

    /// A state file written before the CIDR type still loads: the same JSON shape.
    #[test]
    fn config_of_an_earlier_version_loads() {
        let json = r#"{"interfaces":["eth1"],"gateway":null,"table_base":20000,"priority":20000,
            "prefixes":[["eth1",{"addr":"198.18.0.64","prefix_len":28}]],"rules":true,
            "ebpf":true,"sysctls":true,"mode":"enforce","debug":false}"#;
        let cfg: Config = serde_json::from_str(json).unwrap();
        assert_eq!(
            cfg.prefixes,
            [("eth1".to_owned(), "198.18.0.64/28".parse().unwrap())]
        );
        let mut back = serde_json::to_value(&cfg).unwrap();
        // Fields added since default, and are the only difference.
        let fields = back.as_object_mut().unwrap();
        let added: Vec<_> = [
            "attach",
            "metadata",
            "metadata_endpoint",
            "configure_addresses",
            "connmark",
            "connmark_mask",
        ]
        .map(|k| fields.remove(k).unwrap())
        .into();
        assert_eq!(
            added,
            [
                "auto".into(),
                "none".into(),
                serde_json::Value::Null,
                false.into(),
                false.into(),
                DEFAULT_CONNMARK_MASK.into(),
            ]
        );
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(json).unwrap()
        );
    }
}
