//! The desired state as persistent distro network configuration, for hosts that prefer their
//! network manager to own the rules. Same layout as [`crate::routing::plan`], without `proto 229`: the
//! distro tool owns what it installs (enipin's attach then reports those rules as conflicts).
//!
//! Each format is a list of [`File`]s: printed one after another, or written one per path under
//! `--output-dir`. Every file starts with the same header: what wrote it, what in it is this
//! instance's own (the rules name its addresses), and what enipin's datapath adds that no file
//! can (issue 28: none of them said so).
//!
//! systemd-networkd's is the exception: its files go beside a running enipin, not in its place
//! (see [`networkd`]).

mod networkd;
mod nmcli;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    engine::snapshot::{Named, Snapshot},
    model::ManagedInterface,
    model::route::{Route, Rule},
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
    /// keeps networkd from deleting rules and routes it did not create, and a drop-in with
    /// `KeepConfiguration=static` for the `.network` file networkd applies to each interface.
    /// enipin's own rules and tables are left to enipin.
    Networkd,
    /// One netplan file amending the distribution's, interfaces by name.
    Netplan,
    /// A bash script of nmcli commands setting each interface's connection's rules and routes.
    Nmcli,
}

/// One file of a rendering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct File {
    /// Where it goes, relative to `/` (`etc/netplan/90-enipin.yaml`); the nmcli script, which is
    /// run rather than installed, has no directory.
    pub path: PathBuf,
    pub body: String,
    /// A script to run: mode 0755, and printed without a path line so that its `#!` comes first.
    pub script: bool,
}

impl File {
    fn config(path: String, body: String) -> Self {
        File {
            path: path.into(),
            body,
            script: false,
        }
    }
}

/// Where `render` puts its files and reads the distribution's.
#[derive(Clone, Debug)]
pub struct Output {
    /// `--output-dir`: each file at its path under it; `None`: all of them on stdout.
    pub dir: Option<PathBuf>,
    /// `--root`: where networkd's own `.network` files are read (`/` by default).
    pub root: PathBuf,
}

impl Output {
    /// From the flags: `root` defaults to `/`.
    pub fn new(dir: Option<PathBuf>, root: Option<PathBuf>) -> Self {
        let root = root.unwrap_or_else(|| PathBuf::from("/"));
        Self { dir, root }
    }
}

/// Prints or writes the desired rules and routes of the selected interfaces in `format`; changes
/// nothing in the namespace.
pub async fn render(cfg: &Config, format: Format, out: &Output) -> Result<()> {
    let selected = Snapshot::select(cfg, Named::Strict).await?;
    let managed = match selected.selection {
        Selection::Managed(m) => m,
        Selection::NothingToDo(why) => bail!("nothing to render: {why}"),
    };
    let files = files(&managed, cfg, format, &out.root);
    match &out.dir {
        None => print!("{}", stream(&files)),
        Some(dir) => {
            for p in write(dir, &files)? {
                println!("{}", p.display());
            }
        }
    }
    if cfg.connmark {
        eprintln!(
            "note: connmark (layers.connmark) is not rendered: its nftables table and fwmark rules \
             are enipin's own; keep `enipin watch` running for them"
        );
    }
    Ok(())
}

/// The files of `format` for `managed`; networkd's name the `.network` files found under `root`.
pub(crate) fn files(
    managed: &[ManagedInterface],
    cfg: &Config,
    format: Format,
    root: &Path,
) -> Vec<File> {
    // connmark is nftables and enipin's own table: no network configuration tool carries it.
    let cfg = &Config {
        connmark: false,
        ..cfg.clone()
    };
    let (rules, routes) = plan::desired(managed, cfg);
    match format {
        Format::NetworkScripts => network_scripts(managed, &rules, &routes),
        Format::Networkd => {
            let ifaces: Vec<_> = managed.iter().map(|m| (m.name.clone(), m.mac)).collect();
            networkd::files(managed, &crate::doctor::networkd_link_files(root, &ifaces))
        }
        Format::Netplan => vec![netplan(managed, &rules, &routes)],
        Format::Nmcli => vec![nmcli::script(managed, &rules, &routes)],
    }
}

/// All files in one stream: each after a `# /PATH` line (a script alone, its `#!` first).
fn stream(files: &[File]) -> String {
    let mut o = String::new();
    for (n, f) in files.iter().enumerate() {
        if n > 0 {
            o += "\n";
        }
        if !f.script {
            let _ = writeln!(o, "# /{}", f.path.display());
        }
        o += &f.body;
    }
    o
}

/// Writes each file at its path under `dir` (directories created, a file there replaced: a
/// second run writes the same bytes); returns the paths written.
fn write(dir: &Path, files: &[File]) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut written = Vec::new();
    for f in files {
        let p = dir.join(&f.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&p, &f.body).with_context(|| format!("writing {}", p.display()))?;
        let mode = if f.script { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", p.display()))?;
        written.push(p);
    }
    Ok(written)
}

/// What enipin's datapath adds, in every file's header.
const DATAPATH: &str = "\
# Not in it: enipin's datapath. `enipin attach` (or its service) puts a TC egress program on each
# interface that sends a reply leaving by the wrong interface out of the one owning its source
# address, and counts it (`enipin stats`): replies no rule can route because their source is
# rewritten after routing (DNAT'd: docker -p, NodePort), and every reply while a rule is missing.
# connmark (layers.connmark) is enipin's own too.
";

/// For the formats that carry the rules: they are this instance's.
const PER_INSTANCE: &str = "\
# The rules name this instance's addresses, the routes its subnets and gateways: render it on each
# instance once its interfaces have their addresses, not once into an image.
";

/// The header of a file of `format`, then `about` (`#` lines): all four formats skip comments.
fn header(format: &str, about: &str) -> String {
    format!("# Written by `enipin render --format {format}`.\n{about}{DATAPATH}")
}

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

/// RHEL-style `rule-IFACE` / `route-IFACE` files (iproute2 arguments, one per line). These names
/// are the only ones `ifup-routes` and NetworkManager's ifcfg-rh read for the interface.
fn network_scripts(managed: &[ManagedInterface], rules: &[Rule], routes: &[Route]) -> Vec<File> {
    let mut files = Vec::new();
    for (n, m) in managed.iter().enumerate() {
        let (rules, routes) = split(m, n == 0, rules, routes);
        for v6 in [false, true] {
            let six = if v6 { "6" } else { "" };
            let rs: Vec<String> = rules
                .iter()
                .filter(|r| r.v6 == v6)
                .map(|r| r.ip_args_bare())
                .collect();
            let ts: Vec<String> = routes
                .iter()
                .filter(|r| r.v6() == v6)
                .map(|r| r.ip_args_bare())
                .collect();
            for (kind, lines) in [("rule", rs), ("route", ts)] {
                if !lines.is_empty() {
                    let body = header("network-scripts", PER_INSTANCE) + &lines.join("\n") + "\n";
                    let path = format!("etc/sysconfig/network-scripts/{kind}{six}-{}", m.name);
                    files.push(File::config(path, body));
                }
            }
        }
    }
    files
}

/// What netplan's file says of how it meets the distribution's.
const NETPLAN_ABOUT: &str = "\
# Each interface is netplan's id of the same name, with no match: and no addresses: netplan reads
# the files in name order and a later one amends an id an earlier one defines (cloud-init's
# 50-cloud-init.yaml), so that file's match, DHCP and addresses stay as they are.
";

/// One netplan file, `90-enipin.yaml`: sorts after cloud-init's, amends its ids (see
/// [`NETPLAN_ABOUT`]); the `lookup main` rules it cannot express become comments at the end.
fn netplan(managed: &[ManagedInterface], rules: &[Rule], routes: &[Route]) -> File {
    let mut o = header("netplan", &format!("{PER_INSTANCE}{NETPLAN_ABOUT}"));
    o += "network:\n  version: 2\n  ethernets:\n";
    for (n, m) in managed.iter().enumerate() {
        let (rules, routes) = split(m, n == 0, rules, routes);
        let _ = writeln!(o, "    {}:", m.name);
        netplan_routes(&mut o, &routes);
        netplan_rules(&mut o, &rules, &routes);
    }
    for r in rules.iter().filter(|r| r.from.is_none()) {
        let _ = writeln!(
            o,
            "# netplan cannot express: ip{} rule add {}",
            if r.v6 { " -6" } else { "" },
            r.ip_args_bare()
        );
    }
    File::config("etc/netplan/90-enipin.yaml".to_owned(), o)
}

fn netplan_routes(o: &mut String, routes: &[&Route]) {
    let _ = writeln!(o, "      routes:");
    for r in routes {
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
}

// netplan has no suppress_prefixlength: the first layer becomes "from <addr> to <subnet>",
// which selects exactly the table's subnet route.
fn netplan_rules(o: &mut String, rules: &[&Rule], routes: &[&Route]) {
    let _ = writeln!(o, "      routing-policy:");
    for r in rules {
        let Some(from) = r.from else { continue };
        let rule = |o: &mut String, to: String| {
            let _ = writeln!(
                o,
                "        - from: \"{from}\"{to}\n          table: {}\n          priority: {}",
                r.table, r.priority
            );
        };
        if r.suppress_prefixlen.is_none() {
            rule(o, String::new());
            continue;
        }
        let subnets = routes
            .iter()
            .filter(|t| t.dst.prefix_len != 0 && t.v6() == r.v6);
        for t in subnets {
            rule(o, format!("\n          to: \"{}\"", t.dst));
        }
    }
}
