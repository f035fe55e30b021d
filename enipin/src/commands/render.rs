//! The desired state as persistent distro network configuration, for hosts that prefer their
//! network manager to own the rules. Same layout as [`crate::routing::plan`], without `proto 229`: the
//! distro tool owns what it installs (enipin's attach then reports those rules as conflicts).
//!
//! systemd-networkd's is the exception: its files go beside a running enipin, not in its place.
//! networkd is EC2's usual network manager (Amazon Linux 2023, Ubuntu), and enipin's rules at
//! its own priorities would conflict with enipin's rules layer (issue 24: doctor counted 9
//! conflicts). So they carry what networkd owns on such a host (the addresses, the main table's
//! default routes with their metrics, `KeepConfiguration=static`) and the drop-in that keeps
//! networkd off enipin's rules and routes; enipin's rules, tables and datapath stay enipin's.

use std::fmt::Write as _;

use anyhow::{Result, bail};

use crate::{
    engine::snapshot::{Named, Snapshot},
    model::route::{InstalledRoute, MAIN_TABLE, Route, Rule},
    model::{ManagedInterface, fmt_mac},
    routing::plan,
    routing::select::Selection,
    settings::config::Config,
};

/// Which network manager's configuration `enipin render` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// RHEL-style `rule-IFACE` / `route-IFACE` files.
    NetworkScripts,
    /// systemd-networkd's configuration beside a running enipin: the networkd.conf drop-in that
    /// keeps networkd from deleting rules and routes it did not create, then a `.network` file
    /// per interface with its addresses, its main-table default routes and
    /// `KeepConfiguration=static`. enipin's own rules and tables are left to enipin.
    Networkd,
    /// One netplan file.
    Netplan,
    /// nmcli commands for each interface's connection.
    Nmcli,
}

/// Prints the desired rules and routes of the selected interfaces in `format`; changes nothing.
pub async fn render(cfg: &Config, format: Format) -> Result<()> {
    let selected = Snapshot::select(cfg, Named::Strict).await?;
    let managed = match selected.selection {
        Selection::Managed(m) => m,
        Selection::NothingToDo(why) => bail!("nothing to render: {why}"),
    };
    let defaults = main_defaults(&selected.snapshot.discovery.routes, &managed);
    print!("{}", render_to_string(&managed, &defaults, cfg, format));
    if cfg.connmark {
        eprintln!(
            "note: connmark (layers.connmark) is not rendered: its nftables table and fwmark rules \
             are enipin's own; keep `enipin watch` running for them"
        );
    }
    Ok(())
}

/// The main table's default routes through the managed interfaces, as installed now.
fn main_defaults(routes: &[InstalledRoute], managed: &[ManagedInterface]) -> Vec<Route> {
    routes
        .iter()
        .map(|r| &r.route)
        .filter(|r| r.table == MAIN_TABLE && r.dst.prefix_len == 0 && r.gateway.is_some())
        .filter(|r| managed.iter().any(|m| m.ifindex == r.oif))
        .cloned()
        .collect()
}

/// What `--format networkd` is, first in its output.
const NETWORKD_HEADER: &str = "\
# systemd-networkd beside a running enipin (`enipin watch`): networkd owns the addresses and the
# main table's default routes, enipin its rules, its tables and its datapath, which are not here.
# Install each .network file in place of the interface's current one (networkd applies the first
# matching file by name). Measured effect of each part with networkd 252: docs/networkd.md.
";

/// Rules and routes of one interface; the shared `lookup main` rules go with the first one.
fn split<'a>(
    m: &ManagedInterface,
    first: bool,
    rules: &'a [Rule],
    routes: &'a [Route],
) -> (Vec<&'a Rule>, Vec<&'a Route>) {
    let r = rules
        .iter()
        .filter(|r| r.table == m.table || (first && r.from.is_none()))
        .collect();
    let t = routes.iter().filter(|r| r.table == m.table).collect();
    (r, t)
}

/// The desired state for `managed` in `format`, one interface after another; `defaults` are the
/// main table's default routes (networkd's files carry them).
pub(crate) fn render_to_string(
    managed: &[ManagedInterface],
    defaults: &[Route],
    cfg: &Config,
    format: Format,
) -> String {
    // connmark is nftables and enipin's own table: no network configuration tool carries it.
    let cfg = &Config {
        connmark: false,
        ..cfg.clone()
    };
    let (rules, routes) = plan::desired(managed, cfg);
    let mut o = String::new();
    if format == Format::Networkd {
        // Without it networkd deletes the rules and routes it did not create (`enipin doctor`).
        o += NETWORKD_HEADER;
        o += crate::doctor::NETWORKD_DROP_IN;
        o += "\n";
    }
    for (n, m) in managed.iter().enumerate() {
        let (rules, routes) = split(m, n == 0, &rules, &routes);
        match format {
            Format::NetworkScripts => network_scripts(&mut o, m, rules, routes),
            Format::Networkd => networkd(&mut o, m, defaults.iter().filter(|r| r.oif == m.ifindex)),
            Format::Netplan => netplan(&mut o, m, rules, routes, n, managed, cfg),
            Format::Nmcli => nmcli(&mut o, m, rules, routes),
        }
    }
    o
}

/// RHEL-style `rule-IFACE` / `route-IFACE` files (iproute2 arguments, one per line).
fn network_scripts(o: &mut String, m: &ManagedInterface, rules: Vec<&Rule>, routes: Vec<&Route>) {
    let name = &m.name;
    for v6 in [false, true] {
        let six = if v6 { "6" } else { "" };
        let rs: Vec<_> = rules.iter().filter(|r| r.v6 == v6).collect();
        if !rs.is_empty() {
            let _ = writeln!(o, "# /etc/sysconfig/network-scripts/rule{six}-{name}");
            rs.iter().for_each(|r| {
                let _ = writeln!(o, "{}", r.ip_args_bare());
            });
        }
        let ts: Vec<_> = routes.iter().filter(|r| r.v6() == v6).collect();
        if !ts.is_empty() {
            let _ = writeln!(o, "# /etc/sysconfig/network-scripts/route{six}-{name}");
            ts.iter().for_each(|r| {
                let _ = writeln!(o, "{}", r.ip_args_bare());
            });
        }
    }
}

/// A systemd-networkd `.network` file for one interface: its addresses, `KeepConfiguration=static`
/// and its main-table default routes (`defaults`), none of enipin's rules or routes.
fn networkd<'a>(o: &mut String, m: &ManagedInterface, defaults: impl Iterator<Item = &'a Route>) {
    let name = &m.name;
    let _ = writeln!(o, "# /etc/systemd/network/70-enipin-{name}.network");
    let _ = writeln!(o, "[Match]\nMACAddress={}\n\n[Network]", fmt_mac(&m.mac));
    let _ = writeln!(
        o,
        "# addresses as configured now; use DHCP=yes instead if {name} gets them by DHCP"
    );
    for a in &m.addrs {
        let _ = writeln!(o, "Address={a}");
    }
    let _ = writeln!(
        o,
        "# a restart or a reload of networkd leaves the addresses and routes in place (a \
         `networkctl reconfigure {name}` still removes them and adds them back)\n\
         KeepConfiguration=static"
    );
    for r in defaults {
        let gw = r
            .gateway
            .expect("main_defaults keeps routes with a gateway");
        let _ = writeln!(o, "\n[Route]\nGateway={gw}\nMetric={}", r.metric);
    }
}

/// One netplan file; the `lookup main` rules it cannot express become comments after the last interface.
fn netplan(
    o: &mut String,
    m: &ManagedInterface,
    rules: Vec<&Rule>,
    routes: Vec<&Route>,
    n: usize,
    managed: &[ManagedInterface],
    cfg: &Config,
) {
    let name = &m.name;
    if n == 0 {
        let _ = writeln!(
            o,
            "# /etc/netplan/70-enipin.yaml\nnetwork:\n  version: 2\n  ethernets:"
        );
    }
    let _ = writeln!(
        o,
        "    {name}:\n      match:\n        macaddress: \"{}\"\n      set-name: {name}",
        fmt_mac(&m.mac)
    );
    let _ = writeln!(o, "      addresses:");
    for a in &m.addrs {
        let _ = writeln!(o, "        - \"{a}\"");
    }
    let _ = writeln!(o, "      routes:");
    for r in &routes {
        let to = if r.dst.prefix_len == 0 {
            "default".to_owned()
        } else {
            format!("\"{}\"", r.dst)
        };
        let _ = writeln!(o, "        - to: {to}");
        if let Some(g) = r.gateway {
            let _ = writeln!(o, "          via: \"{g}\"");
        }
        if r.scope_link {
            let _ = writeln!(o, "          scope: link");
        }
        if let Some(s) = r.src {
            let _ = writeln!(o, "          from: \"{s}\"");
        }
        let _ = writeln!(o, "          table: {}", r.table);
    }
    // netplan has no suppress_prefixlength: the first layer becomes "from <addr> to
    // <subnet>", which selects exactly the table's subnet route.
    let _ = writeln!(o, "      routing-policy:");
    for r in rules.iter().filter(|r| r.from.is_some()) {
        let from = r.from.expect("from");
        if r.suppress_prefixlen.is_some() {
            for t in routes
                .iter()
                .filter(|t| t.dst.prefix_len != 0 && t.v6() == r.v6)
            {
                let _ = writeln!(
                    o,
                    "        - from: \"{from}\"\n          to: \"{}\"\n          table: {}\n          priority: {}",
                    t.dst, r.table, r.priority
                );
            }
        } else {
            let _ = writeln!(
                o,
                "        - from: \"{from}\"\n          table: {}\n          priority: {}",
                r.table, r.priority
            );
        }
    }
    if n == managed.len() - 1 {
        for r in rules_main(managed, cfg) {
            let _ = writeln!(
                o,
                "# netplan cannot express: ip{} rule add {}",
                if r.v6 { " -6" } else { "" },
                r.ip_args_bare()
            );
        }
    }
}

/// nmcli commands that add the rules and routes to the interface's connection.
fn nmcli(o: &mut String, m: &ManagedInterface, rules: Vec<&Rule>, routes: Vec<&Route>) {
    let name = &m.name;
    let con = format!("\"$(nmcli -g GENERAL.CONNECTION device show {name})\"");
    for v6 in [false, true] {
        let fam = if v6 { "ipv6" } else { "ipv4" };
        for r in rules.iter().filter(|r| r.v6 == v6) {
            let mut s = format!("priority {}", r.priority);
            if let Some(from) = r.from {
                let _ = write!(s, " from {from}");
            }
            let _ = write!(s, " table {}", r.table);
            if let Some(l) = r.suppress_prefixlen {
                let _ = write!(s, " suppress_prefixlength {l}");
            }
            let _ = writeln!(
                o,
                "nmcli connection modify {con} +{fam}.routing-rules \"{s}\""
            );
        }
        for r in routes.iter().filter(|r| r.v6() == v6) {
            let mut s = r.dst.to_string();
            if let Some(g) = r.gateway {
                let _ = write!(s, " {g}");
            }
            let _ = write!(s, " table={}", r.table);
            if let Some(src) = r.src {
                let _ = write!(s, " src={src}");
            }
            let _ = writeln!(o, "nmcli connection modify {con} +{fam}.routes \"{s}\"");
        }
    }
    let _ = writeln!(o, "nmcli device reapply {name}");
}

fn rules_main(managed: &[ManagedInterface], cfg: &Config) -> Vec<Rule> {
    plan::desired(managed, cfg)
        .0
        .into_iter()
        .filter(|r| r.from.is_none())
        .collect()
}
