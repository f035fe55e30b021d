//! What the kernel had at one moment: the namespace as [`crate::kernel::discover`] read it, and
//! what the engine read beside it, so that planning needs no read of its own.

use std::net::IpAddr;

#[cfg(test)]
use crate::model::{Cidr, route::MAIN_TABLE};
use crate::model::{
    Interface,
    cloud::Detected,
    connmark::Connmark,
    route::{InstalledRoute, InstalledRule, ObservedRule},
};

/// A snapshot of the namespace.
#[derive(Debug)]
pub(crate) struct Discovery {
    pub interfaces: Vec<Interface>,
    /// Default routes of the main table: (ifindex, gateway).
    pub defaults: Vec<(u32, IpAddr)>,
    /// Every rule of both families, anyone's.
    pub rules: Vec<InstalledRule>,
    /// The same rules with all `ip rule` shows (action, `to`): doctor's checks of others'.
    pub rules_seen: Vec<ObservedRule>,
    /// Every route of both families in every table, anyone's, with its device named.
    pub routes: Vec<InstalledRoute>,
    /// `net.ipv4.conf.all.rp_filter` (`all` is no link, so no link dump has it), or why it could
    /// not be read.
    pub all_rp_filter: Result<i32, String>,
    /// enipin's nftables table as installed: read (by `nft -j`) only when connmark is on or was
    /// on at the last attach; `None`: not read.
    pub nft: Option<Option<Connmark>>,
    /// The cloud the machine's DMI names (what `--metadata auto` follows).
    pub cloud: Option<Detected>,
}

/// The Amazon VPC CNI's pod rules, as it installs them: `to POD lookup main` at 512 for every
/// pod, and `from POD lookup TABLE` at 1536 for a pod on a secondary ENI
/// (amazon-vpc-cni-k8s, pkg/networkutils). Their presence says the ENIs' secondary addresses are
/// the pods'.
pub(crate) const VPC_CNI_PRIORITIES: [u32; 2] = [512, 1536];

impl Discovery {
    /// The rules that look like the VPC CNI's pod rules (not enipin's): 0 where it runs no pod.
    pub(crate) fn vpc_cni_rules(&self) -> usize {
        (self.rules.iter())
            .filter(|r| !r.is_enipin() && VPC_CNI_PRIORITIES.contains(&r.rule.priority))
            .count()
    }
}

impl Default for Discovery {
    /// An empty namespace with the kernel's default `all.rp_filter` (0).
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            defaults: Vec::new(),
            rules: Vec::new(),
            rules_seen: Vec::new(),
            routes: Vec::new(),
            all_rp_filter: Ok(0),
            nft: None,
            cloud: None,
        }
    }
}

#[cfg(test)]
impl Discovery {
    /// A test namespace: `interfaces`, and a main table as the kernel fills it: each up
    /// interface's subnet routes (IPv4 metric 0, IPv6 256), then `defaults` (IPv4 metric 0, IPv6
    /// 1024, in order: a later one of a family gets the next metric, as DHCP clients do).
    pub(crate) fn fixture(interfaces: Vec<Interface>, defaults: Vec<(u32, IpAddr)>) -> Self {
        use crate::model::route::Route;
        let route = |oif: u32, dst: Cidr, gateway: Option<IpAddr>, metric: u32| InstalledRoute {
            protocol: 2, // RTPROT_KERNEL
            route: Route {
                table: MAIN_TABLE,
                dst,
                gateway,
                oif,
                dev: format!("if{oif}"),
                src: None,
                scope_link: false,
                metric,
            },
        };
        let mut routes = Vec::new();
        for i in interfaces.iter().filter(|i| i.up) {
            for a in i.addrs.iter().filter(|a| a.prefix_len < a.host_len()) {
                let metric = if a.is_ipv6() { 256 } else { 0 };
                routes.push(route(i.ifindex, a.network(), None, metric));
            }
        }
        for (n, (oif, gw)) in defaults.iter().enumerate() {
            let base = if gw.is_ipv6() { 1024 } else { 0 };
            let before = defaults[..n]
                .iter()
                .filter(|(_, g)| g.is_ipv6() == gw.is_ipv6());
            let metric = base + before.count() as u32;
            routes.push(route(*oif, Cidr::any(gw.is_ipv6()), Some(*gw), metric));
        }
        Self {
            interfaces,
            defaults,
            routes,
            ..Self::default()
        }
    }
}
