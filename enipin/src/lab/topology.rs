//! The seed's network in three throwaway namespaces, reusable by the lab, the tests and the
//! benchmark:
//!
//! ```text
//!  host                      vpc                                   peer
//!  eth0 198.18.0.10 ──── eni0 ┐                                    
//!  eth1 198.18.0.11 ──── eni1 ├ br0 198.18.0.1 (gateway) ── peer0 ──── eth0 198.18.0.100
//! ```
//!
//! `vpc` behaves like the cloud's source/destination check: a frame that comes out of ENI X with
//! a source MAC, IP or ARP sender that is not X's own is dropped by nftables bridge rules, and
//! counted in a named counter per ENI and kind (`eth0_ip`, `eth0_arp`, ...). The echo replies it
//! lets through are counted per ENI too (`eth0_echo`, `eth0_echo6`): proof that a reply left by
//! its owner, with the owner's MAC and address.
//!
//! [`Spec`] varies the seed: more ENIs ([`EniSpec::nth`]), secondary IPs, an ENI without any
//! address, IPv4 only, no default routes in `host`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context as _, Result, bail};

use crate::lab::testbed::{Netns, veth};

/// nftables table (bridge family) in `vpc` holding the source checks and their counters.
pub(crate) const NFT_TABLE: &str = "enipin_lab";

/// One ENI: its name in `host`, its MAC, and every address the cloud lets it send from (the
/// first of each family is the primary; the others are secondary private IPs). An ENI without
/// addresses of a family may send none of that family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EniSpec {
    /// Interface name in `host`.
    pub name: String,
    /// `aa:bb:...`: the only source MAC the vpc accepts from this ENI.
    pub mac: String,
    /// IPv4 addresses, the primary first.
    pub v4: Vec<Ipv4Addr>,
    /// IPv6 addresses, the primary first.
    pub v6: Vec<Ipv6Addr>,
    /// With [`Spec::default_routes`], a default route of its own through its subnet's router.
    pub default_route: bool,
}

impl EniSpec {
    /// The lab's ENI number `i` (below 240): `eth<i>`, MAC `02:e0:00:00:00:<10+i>`, addresses
    /// 198.18.0.<10+i> and 2001:db8::<10+i> (hexadecimal). Override fields for other addresses:
    /// `EniSpec { v4: vec![..], ..EniSpec::nth(2) }`.
    pub fn nth(i: u8) -> Self {
        Self {
            name: format!("eth{i}"),
            mac: format!("02:e0:00:00:00:{:02x}", 0x10 + i),
            v4: vec![Ipv4Addr::new(198, 18, 0, 10 + i)],
            v6: vec![Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                0,
                0x10 + u16::from(i),
            )],
            default_route: true,
        }
    }

    /// ENI `i` of [`EniSpec::nth`] in a subnet of its own: 198.18.<10+i>.<10+i>/24 and
    /// 2001:db8:<10+i>::<10+i>/64 (hexadecimal), no default route of its own: the issue-23
    /// host's eth1 beside an eth0 holding the only default route.
    pub fn in_own_subnet(i: u8) -> Self {
        let n = u16::from(10 + i);
        Self {
            v4: vec![Ipv4Addr::new(198, 18, 10 + i, 10 + i)],
            v6: vec![Ipv6Addr::new(0x2001, 0xdb8, n, 0, 0, 0, 0, n)],
            default_route: false,
            ..Self::nth(i)
        }
    }
}

/// The whole network. [`Spec::default`] is the seed: two ENIs in 198.18.0.0/24, one address each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The ENIs; the first is the primary. Each is in the subnet its addresses are in (at the
    /// prefix lengths below), and the vpc routes between the subnets by the first host of each.
    pub enis: Vec<EniSpec>,
    /// The subnet's IPv4 prefix length.
    pub prefix_len_v4: u8,
    /// The subnet's IPv6 prefix length.
    pub prefix_len_v6: u8,
    /// The vpc's IPv4 address on the subnet, the ENIs' gateway.
    pub gateway_v4: Ipv4Addr,
    /// The vpc's IPv6 address on the subnet.
    pub gateway_v6: Ipv6Addr,
    /// The peer's IPv4 address (in the subnet, behind the vpc): what the ENIs talk to.
    pub peer_v4: Ipv4Addr,
    /// The peer's IPv6 address.
    pub peer_v6: Ipv6Addr,
    /// Configure the IPv6 addresses too (2001:db8::/64).
    pub ipv6: bool,
    /// Give `host` one default route per ENI through its subnet's router (the gateway in the
    /// peer's subnet), as in the seed's `route -n` (metric 100 + index; only on ENIs with an
    /// address of the family and [`EniSpec::default_route`]). Without them the main
    /// table holds the subnet routes alone, and enipin takes the subnet's first host as gateway.
    pub default_routes: bool,
    /// The peer also has an address in each other ENI subnet: host 100 of it (198.18.12.100,
    /// 2001:db8:c::100 beside `EniSpec::in_own_subnet(2)`), on the same wire.
    pub peer_in_each_subnet: bool,
    /// The peer also has [`BEYOND_V4`] and [`BEYOND_V6`], off every subnet: the vpc routes them
    /// to the peer, so the host reaches them only through a default route's gateway.
    pub peer_beyond: bool,
}

/// The peer's IPv4 address beyond the vpc's router ([`Spec::peer_beyond`]).
pub const BEYOND_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 99, 100);
/// The peer's IPv6 address beyond the vpc's router.
pub const BEYOND_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 0x100);

impl Default for Spec {
    fn default() -> Self {
        Self {
            enis: vec![EniSpec::nth(0), EniSpec::nth(1)],
            prefix_len_v4: 24,
            prefix_len_v6: 64,
            gateway_v4: Ipv4Addr::new(198, 18, 0, 1),
            gateway_v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
            peer_v4: Ipv4Addr::new(198, 18, 0, 100),
            peer_v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100),
            ipv6: true,
            default_routes: true,
            peer_in_each_subnet: false,
            peer_beyond: false,
        }
    }
}

impl Spec {
    fn check(&self) -> Result<()> {
        let lab4 = |a: &Ipv4Addr| a.octets()[0] == 198 && (a.octets()[1] & 0xfe) == 18;
        let lab6 = |a: &Ipv6Addr| a.segments()[..2] == [0x2001, 0xdb8];
        let v4 = self
            .enis
            .iter()
            .flat_map(|e| &e.v4)
            .chain([&self.gateway_v4, &self.peer_v4]);
        let v6 = self
            .enis
            .iter()
            .flat_map(|e| &e.v6)
            .chain([&self.gateway_v6, &self.peer_v6]);
        if let Some(a) = v4.into_iter().find(|a| !lab4(a)) {
            bail!("lab address {a} is outside 198.18.0.0/15");
        }
        if let Some(a) = v6.into_iter().find(|a| !lab6(a)) {
            bail!("lab address {a} is outside 2001:db8::/32");
        }
        Ok(())
    }
}

/// The three namespaces, removed when dropped (unless [`Topology::keep`]).
#[derive(Debug)]
pub struct Topology {
    /// What was built.
    pub spec: Spec,
    // Dropped in this order; each deletion also removes the veth ends inside.
    host: Netns,
    vpc: Netns,
    peer: Netns,
}

impl Topology {
    #[cfg(feature = "testing")]
    /// The seed's network ([`Spec::default`]).
    pub fn build() -> Result<Self> {
        Self::build_with(Spec::default())
    }

    /// The network `spec` describes, after checking its addresses are all lab addresses.
    pub fn build_with(spec: Spec) -> Result<Self> {
        spec.check()?;
        let topo = Self {
            host: Netns::new("lab-host-")?,
            vpc: Netns::new("lab-vpc-")?,
            peer: Netns::new("lab-peer-")?,
            spec,
        };
        topo.configure().context("building the lab topology")?;
        Ok(topo)
    }

    /// The namespace with the ENIs, where enipin runs.
    pub fn host(&self) -> &Netns {
        &self.host
    }
    /// The namespace that forwards and drops what the cloud would drop.
    #[cfg(feature = "testing")]
    pub fn vpc(&self) -> &Netns {
        &self.vpc
    }
    /// The namespace of the peer, on the vpc's bridge.
    pub fn peer(&self) -> &Netns {
        &self.peer
    }
    /// Namespace names: host, vpc, peer.
    pub fn names(&self) -> [&str; 3] {
        [self.host.name(), self.vpc.name(), self.peer.name()]
    }
    /// The ENIs' names in `host`, in [`Spec::enis`] order.
    pub fn eni_names(&self) -> Vec<&str> {
        self.spec.enis.iter().map(|e| e.name.as_str()).collect()
    }

    /// Leave the namespaces in place when dropped.
    pub(crate) fn keep(&mut self) {
        self.host.keep();
        self.vpc.keep();
        self.peer.keep();
    }

    fn configure(&self) -> Result<()> {
        let (host, vpc, peer, s) = (&self.host, &self.vpc, &self.peer, &self.spec);
        self.stock_sysctls()?;
        vpc.ip(&["link", "add", "br0", "type", "bridge"])?;
        vpc.ip(&["link", "set", "br0", "up"])?;
        vpc.ip(&[
            "addr",
            "add",
            &format!("{}/{}", s.gateway_v4, s.prefix_len_v4),
            "dev",
            "br0",
        ])?;
        for (i, eni) in s.enis.iter().enumerate() {
            let port = format!("eni{i}");
            veth(
                vpc,
                &port,
                &format!("02:e1:00:00:00:{i:02x}"),
                host,
                &eni.name,
                &eni.mac,
            )?;
            vpc.ip(&["link", "set", &port, "master", "br0"])?;
        }
        veth(
            vpc,
            "peer0",
            "02:e1:00:00:00:ff",
            peer,
            "eth0",
            "02:e0:00:00:00:ff",
        )?;
        vpc.ip(&["link", "set", "peer0", "master", "br0"])?;
        peer.ip(&[
            "addr",
            "add",
            &format!("{}/{}", s.peer_v4, s.prefix_len_v4),
            "dev",
            "eth0",
        ])?;
        self.addresses()?;
        self.route_between_subnets()?;
        self.place_peer()?;
        self.default_routes()?;
        vpc.sh(&format!("nft -f - <<'EOF'\n{}EOF", self.nft_ruleset()))
            .context("loading the vpc's source checks (cargo xtask setup installs nftables)")?;
        Ok(())
    }

    /// A stock distribution's sysctls in every namespace.
    fn stock_sysctls(&self) -> Result<()> {
        let (host, vpc, peer) = (&self.host, &self.vpc, &self.peer);
        // A stock distribution's host (systemd's loose rp_filter, ARP answered on every
        // interface), pinned here because new namespaces inherit IPv4 settings from the caller's.
        for (key, value) in [
            ("rp_filter", "2"),
            ("arp_ignore", "0"),
            ("arp_announce", "0"),
        ] {
            for scope in ["all", "default"] {
                host.sysctl(&format!("net.ipv4.conf.{scope}.{key}"), value)?;
            }
        }
        // No duplicate address detection: addresses (link-local ones too) are final at once, so
        // dumps taken right after build() do not change under the caller.
        for ns in [host, vpc, peer] {
            for scope in ["all", "default"] {
                ns.sysctl(&format!("net.ipv6.conf.{scope}.accept_dad"), "0")?;
            }
        }
        Ok(())
    }

    /// The ENIs', the vpc's and the peer's addresses (IPv6 too with `ipv6`).
    fn addresses(&self) -> Result<()> {
        let (host, vpc, peer, s) = (&self.host, &self.vpc, &self.peer, &self.spec);
        for eni in &s.enis {
            for a in &eni.v4 {
                host.ip(&[
                    "addr",
                    "add",
                    &format!("{a}/{}", s.prefix_len_v4),
                    "dev",
                    &eni.name,
                ])?;
            }
        }
        if s.ipv6 {
            // nodad: the addresses are usable at once, and none is duplicated by construction.
            let add6 = |ns: &Netns, a: &Ipv6Addr, dev: &str| {
                ns.ip(&[
                    "-6",
                    "addr",
                    "add",
                    &format!("{a}/{}", s.prefix_len_v6),
                    "dev",
                    dev,
                    "nodad",
                ])
            };
            add6(vpc, &s.gateway_v6, "br0")?;
            add6(peer, &s.peer_v6, "eth0")?;
            for eni in &s.enis {
                for a in &eni.v6 {
                    add6(host, a, &eni.name)?;
                }
            }
        }
        Ok(())
    }

    /// The seed's `route -n`: one default route per ENI, through its subnet's router.
    fn default_routes(&self) -> Result<()> {
        let (host, s) = (&self.host, &self.spec);
        let with_route = |e: &&EniSpec| s.default_routes && e.default_route;
        for (i, eni) in s.enis.iter().enumerate().filter(|(_, e)| with_route(e)) {
            let metric = (100 + i).to_string();
            let (gw4, gw6) = self.routers(eni);
            let gw4 = gw4.to_string();
            if !eni.v4.is_empty() {
                host.ip(&[
                    "route", "add", "default", "via", &gw4, "dev", &eni.name, "metric", &metric,
                ])?;
            }
            if s.ipv6 && !eni.v6.is_empty() {
                let gw6 = gw6.to_string();
                host.ip(&[
                    "-6", "route", "add", "default", "via", &gw6, "dev", &eni.name, "metric",
                    &metric,
                ])?;
            }
        }
        Ok(())
    }

    /// The first host of `eni`'s subnets (its primary addresses' networks): the vpc's address
    /// there, the ENI's router. The seed's one subnet gives the seed's gateways.
    fn routers(&self, eni: &EniSpec) -> (Ipv4Addr, Ipv6Addr) {
        let s = &self.spec;
        let v4 = eni.v4.first().map_or(s.gateway_v4, |a| {
            let mask = u32::MAX << (32 - u32::from(s.prefix_len_v4));
            Ipv4Addr::from((u32::from(*a) & mask) + 1)
        });
        let v6 = eni.v6.first().map_or(s.gateway_v6, |a| {
            let mask = u128::MAX << (128 - u32::from(s.prefix_len_v6));
            Ipv6Addr::from((u128::from(*a) & mask) + 1)
        });
        (v4, v6)
    }

    /// ENIs outside the peer's subnet: the vpc takes the first host of each of their subnets and
    /// routes between them, the peer reaches them through the gateway, and the peer answers ARP
    /// only from its own subnet (arp_ignore 2), as a VPC's hosts are reached across subnets only
    /// through the router: a reply sent straight onto the wire from another subnet's ENI gets
    /// no answer, as in the cloud.
    fn route_between_subnets(&self) -> Result<()> {
        let (vpc, peer, s) = (&self.vpc, &self.peer, &self.spec);
        let mut added = Vec::new();
        for eni in &s.enis {
            let (v4, v6) = self.routers(eni);
            if v4 != s.gateway_v4 && !eni.v4.is_empty() && !added.contains(&v4.to_string()) {
                let a = format!("{v4}/{}", s.prefix_len_v4);
                vpc.ip(&["addr", "add", &a, "dev", "br0"])?;
                added.push(v4.to_string());
            }
            if s.ipv6
                && v6 != s.gateway_v6
                && !eni.v6.is_empty()
                && !added.contains(&v6.to_string())
            {
                let a = format!("{v6}/{}", s.prefix_len_v6);
                vpc.ip(&["-6", "addr", "add", &a, "dev", "br0", "nodad"])?;
                added.push(v6.to_string());
            }
        }
        if added.is_empty() {
            return Ok(());
        }
        self.vpc_routes()?;
        peer.ip(&["route", "add", "default", "via", &s.gateway_v4.to_string()])?;
        if s.ipv6 {
            peer.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &s.gateway_v6.to_string(),
            ])?;
        }
        peer.sysctl("net.ipv4.conf.all.arp_ignore", "2")?;
        Ok(())
    }

    /// Every address of the peer's: its own, then those of [`Spec::peer_in_each_subnet`] and
    /// [`Spec::peer_beyond`]; IPv4 then IPv6 (without [`Spec::ipv6`], IPv4 alone).
    #[cfg(feature = "testing")]
    pub fn peer_addresses(&self) -> Vec<std::net::IpAddr> {
        use std::net::IpAddr;
        let s = &self.spec;
        let (mut v4, mut v6): (Vec<IpAddr>, Vec<IpAddr>) =
            (vec![s.peer_v4.into()], vec![s.peer_v6.into()]);
        if s.peer_in_each_subnet {
            for (a4, a6) in self.peer_in_subnets() {
                v4.extend(a4.map(IpAddr::from));
                v6.extend(a6.map(IpAddr::from));
            }
        }
        if s.peer_beyond {
            v4.push(BEYOND_V4.into());
            v6.push(BEYOND_V6.into());
        }
        if s.ipv6 {
            v4.extend(v6);
        }
        v4
    }

    /// Host 100 of each ENI subnet other than the peer's, each once (`None` for a family the ENI
    /// has no address of).
    fn peer_in_subnets(&self) -> Vec<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
        let s = &self.spec;
        let mut out: Vec<(Option<Ipv4Addr>, Option<Ipv6Addr>)> = Vec::new();
        for eni in &s.enis {
            let (r4, r6) = self.routers(eni);
            let a4 = (r4 != s.gateway_v4 && !eni.v4.is_empty())
                .then(|| Ipv4Addr::from(u32::from(r4) + 99));
            let a6 = (r6 != s.gateway_v6 && !eni.v6.is_empty())
                .then(|| Ipv6Addr::from(u128::from(r6) + 0xff));
            if (a4.is_some() || a6.is_some()) && !out.contains(&(a4, a6)) {
                out.push((a4, a6));
            }
        }
        out
    }

    /// The peer's other addresses ([`Spec::peer_in_each_subnet`], [`Spec::peer_beyond`]).
    fn place_peer(&self) -> Result<()> {
        let (vpc, peer, s) = (&self.vpc, &self.peer, &self.spec);
        if s.peer_in_each_subnet {
            for (a4, a6) in self.peer_in_subnets() {
                if let Some(a) = a4 {
                    let a = format!("{a}/{}", s.prefix_len_v4);
                    peer.ip(&["addr", "add", &a, "dev", "eth0"])?;
                }
                if let (true, Some(a)) = (s.ipv6, a6) {
                    let a = format!("{a}/{}", s.prefix_len_v6);
                    peer.ip(&["-6", "addr", "add", &a, "dev", "eth0", "nodad"])?;
                }
            }
        }
        if !s.peer_beyond {
            return Ok(());
        }
        // On the loopback: no dummy module in the kernel matrix's guests.
        peer.ip(&["link", "set", "lo", "up"])?;
        peer.ip(&["addr", "add", &format!("{BEYOND_V4}/32"), "dev", "lo"])?;
        let (p4, p6) = (s.peer_v4.to_string(), s.peer_v6.to_string());
        vpc.ip(&["route", "add", &format!("{BEYOND_V4}/32"), "via", &p4])?;
        if s.ipv6 {
            let a = format!("{BEYOND_V6}/128");
            peer.ip(&["-6", "addr", "add", &a, "dev", "lo", "nodad"])?;
            vpc.ip(&["-6", "route", "add", &a, "via", &p6])?;
        }
        self.vpc_routes()
    }

    /// The vpc forwards, and sends no ICMP redirect for what it routes back out of br0 (the host
    /// would then skip the router).
    fn vpc_routes(&self) -> Result<()> {
        let vpc = &self.vpc;
        vpc.sysctl("net.ipv4.ip_forward", "1")?;
        vpc.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        for scope in ["all", "br0"] {
            vpc.sysctl(&format!("net.ipv4.conf.{scope}.send_redirects"), "0")?;
        }
        Ok(())
    }

    /// The vpc's source checks: per ENI port, drop frames whose source MAC, ARP sender or source
    /// IP is not the ENI's. Link-local IPv6 and the unspecified sources (DAD, ARP probes) pass,
    /// as in a VPC; they carry no routed traffic. Then count the echo replies that passed.
    pub(crate) fn nft_ruleset(&self) -> String {
        let mut counters = String::new();
        let mut rules = String::new();
        for (i, eni) in self.spec.enis.iter().enumerate() {
            let (port, n, mac) = (format!("eni{i}"), &eni.name, &eni.mac);
            for suffix in DropKind::ALL.map(DropKind::suffix).iter().chain(&ECHO) {
                let _ = writeln!(counters, "  counter {n}_{suffix} {{}}");
            }
            let v4 = join(
                std::iter::once("0.0.0.0".to_string()).chain(eni.v4.iter().map(|a| a.to_string())),
            );
            let v6 = join(
                ["::".to_string(), "fe80::/10".to_string()]
                    .into_iter()
                    .chain(eni.v6.iter().map(|a| a.to_string())),
            );
            // No IPv4 address: no IPv4 source is the ENI's.
            let ip4 = match join(eni.v4.iter().map(|a| a.to_string())) {
                none if none.is_empty() => "ether type ip".to_string(),
                some => format!("ip saddr != {{ {some} }}"),
            };
            let _ = write!(
                rules,
                "    iifname \"{port}\" ether saddr != {mac} counter name {n}_mac drop\n\
                 \x20   iifname \"{port}\" arp saddr ether != {mac} counter name {n}_arp drop\n\
                 \x20   iifname \"{port}\" arp saddr ip != {{ {v4} }} counter name {n}_arp drop\n\
                 \x20   iifname \"{port}\" {ip4} counter name {n}_ip drop\n\
                 \x20   iifname \"{port}\" ip6 saddr != {{ {v6} }} counter name {n}_ip6 drop\n\
                 \x20   iifname \"{port}\" icmp type echo-reply counter name {n}_{}\n\
                 \x20   iifname \"{port}\" icmpv6 type echo-reply counter name {n}_{}\n",
                ECHO[0], ECHO[1]
            );
        }
        format!(
            "table bridge {NFT_TABLE} {{\n{counters}  chain prerouting {{\n    \
             type filter hook prerouting priority filter; policy accept;\n{rules}  }}\n}}\n"
        )
    }

    /// The vpc's drop counters, per ENI.
    pub fn drops(&self) -> Result<Drops> {
        let counters = self.counters()?;
        let mut drops = Drops::default();
        for eni in &self.spec.enis {
            let d = drops.by_eni.entry(eni.name.clone()).or_default();
            for kind in DropKind::ALL {
                let name = format!("{}_{}", eni.name, kind.suffix());
                d.set(kind, counters.get(&name).copied().unwrap_or_default());
            }
        }
        Ok(drops)
    }

    #[cfg(feature = "testing")]
    /// Echo replies (IPv4, IPv6) the vpc let through from `eni`: they passed its source checks,
    /// so they left by that ENI with its MAC and one of its addresses.
    pub fn echo_replies(&self, eni: &str) -> Result<(u64, u64)> {
        let counters = self.counters()?;
        let get = |suffix: &str| {
            let name = format!("{eni}_{suffix}");
            counters
                .get(&name)
                .copied()
                .with_context(|| format!("the vpc has no counter {name}"))
        };
        Ok((get(ECHO[0])?, get(ECHO[1])?))
    }

    /// Every named counter of the vpc's table: packets by name.
    fn counters(&self) -> Result<BTreeMap<String, u64>> {
        let out = self
            .vpc
            .sh(&format!("nft -j list counters table bridge {NFT_TABLE}"))?;
        let json: serde_json::Value =
            serde_json::from_str(&out).context("parsing nft -j output")?;
        let list = json["nftables"]
            .as_array()
            .context("nft -j: no nftables array")?;
        Ok(list
            .iter()
            .filter_map(|item| item.get("counter"))
            .map(|c| {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                (name, c["packets"].as_u64().unwrap_or_default())
            })
            .collect())
    }
}

/// Suffixes of the per-ENI counters of accepted echo replies: IPv4, IPv6.
const ECHO: [&str; 2] = ["echo", "echo6"];

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropKind {
    /// Ethernet source MAC not the ENI's.
    Mac,
    /// ARP sender MAC or IP not the ENI's.
    Arp,
    /// IPv4 source not one of the ENI's addresses.
    Ip,
    /// IPv6 source not one of the ENI's addresses.
    Ip6,
}

impl DropKind {
    pub(crate) const ALL: [DropKind; 4] = [Self::Mac, Self::Arp, Self::Ip, Self::Ip6];
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Self::Mac => "mac",
            Self::Arp => "arp",
            Self::Ip => "ip",
            Self::Ip6 => "ip6",
        }
    }
}

/// Packets the vpc dropped from one ENI, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EniDrops {
    /// Ethernet source MAC not the ENI's.
    pub mac: u64,
    /// ARP sender MAC or IP not the ENI's.
    pub arp: u64,
    /// IPv4 source not one of the ENI's addresses.
    pub ip: u64,
    pub(crate) ip6: u64,
}

impl EniDrops {
    /// Every drop, of every kind.
    pub fn total(&self) -> u64 {
        self.mac + self.arp + self.ip + self.ip6
    }
    pub(crate) fn get(&self, kind: DropKind) -> u64 {
        match kind {
            DropKind::Mac => self.mac,
            DropKind::Arp => self.arp,
            DropKind::Ip => self.ip,
            DropKind::Ip6 => self.ip6,
        }
    }
    fn set(&mut self, kind: DropKind, v: u64) {
        match kind {
            DropKind::Mac => self.mac = v,
            DropKind::Arp => self.arp = v,
            DropKind::Ip => self.ip = v,
            DropKind::Ip6 => self.ip6 = v,
        }
    }
}

/// The vpc's drop counters, per ENI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// ENI name → its drops.
    pub by_eni: BTreeMap<String, EniDrops>,
}

impl Drops {
    /// One ENI's drops (zero for an ENI never seen).
    pub fn eni(&self, name: &str) -> EniDrops {
        self.by_eni.get(name).copied().unwrap_or_default()
    }

    /// Every drop, of every ENI and kind.
    pub fn total(&self) -> u64 {
        self.by_eni.values().map(EniDrops::total).sum()
    }
}
