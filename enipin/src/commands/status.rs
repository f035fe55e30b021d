//! `enipin status`: one report of what is managed, installed and attached, and the drift from
//! the desired state; printed as text or as JSON from the same struct.

use std::{collections::BTreeMap, fmt};

use anyhow::{Context as _, Result};
use serde::{Serialize, Serializer};

use super::{Fit, ManagedText};
use crate::{
    datapath::{self, Attached, OwnerTables, PinnedProgram},
    engine::apply,
    engine::snapshot::{Named, Snapshot},
    engine::state,
    metadata::{Tracker, Use},
    model::discovery::Discovery,
    model::route::{Route, Rule},
    model::{Cidr, Gateway, ManagedInterface, Origin, cidr_text, fmt_mac},
    routing::plan::{Change, DiffFormat},
    routing::select::Selection,
    settings::config::{Config, Paths},
};

/// Everything `status` says.
#[derive(Debug, Serialize)]
pub(crate) struct StatusReport {
    /// A state file exists: enipin attached and has not detached since.
    pub attached: bool,
    /// No state file, yet enipin's rules, routes or datapath are installed: the file was
    /// removed, and `detach` could not restore the sysctls enipin set.
    pub state_missing: bool,
    /// The interfaces the last attach's options select now.
    #[serde(serialize_with = "managed_json")]
    pub managed: Vec<ManagedInterface>,
    /// enipin's rules and routes as installed.
    pub rules: Vec<Rule>,
    pub routes: Vec<Route>,
    pub datapath: Vec<Attached>,
    /// The classifier pinned: its id and the kernel's tag for it.
    pub program: Option<PinnedProgram>,
    pub owner_tables: OwnerTables,
    /// The changes that would reach the desired state: rules, routes and sysctls, then the
    /// datapath (a missing link, program, map or owner entry is drift too).
    pub drift: Vec<Drift>,
    /// sysctl key → the value before enipin changed it (`None`: no state file).
    pub sysctls_saved: Option<BTreeMap<String, String>>,
    /// Where each managed address and prefix comes from: netlink, metadata or both.
    pub sources: Vec<Source>,
    /// What the metadata service said (`None`: attached without `--metadata`).
    pub metadata: Option<MetadataStatus>,
    /// What works but not as well as it could (differing MTUs).
    pub warnings: Vec<String>,
    /// The enipin running in this namespace now (attach, detach or watch), as it says of itself.
    pub running: Option<String>,
}

/// One managed address or prefix and where it comes from.
#[derive(Debug, Serialize)]
pub(crate) struct Source {
    pub(crate) interface: String,
    /// An address (with the length the desired state gives it) or a delegated prefix.
    #[serde(serialize_with = "cidr_text::one")]
    pub(crate) cidr: Cidr,
    pub(crate) prefix: bool,
    pub(crate) source: Origin,
}

/// The metadata lookup `status` made.
#[derive(Debug, Serialize)]
pub(crate) struct MetadataStatus {
    /// MAC → why its metadata is unknown now.
    pub(crate) unknown: BTreeMap<String, String>,
    /// Requests the lookup sent.
    pub(crate) requests: u64,
}

/// One change between the namespace and the desired state.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Drift {
    /// A rule, route or sysctl (`{"op": "add-rule", ...}`).
    Routing(Change),
    /// A datapath change (`{"op": "datapath", "change": "+ attach ..."}`).
    Datapath(DatapathDrift),
}

/// A datapath change in `status --json`: the plan line, and the interface it is about.
#[derive(Debug, Serialize)]
pub(crate) struct DatapathDrift {
    op: &'static str,
    /// The interface the change is about, when it is about one.
    ifindex: Option<u32>,
    change: String,
}

impl From<datapath::Change> for Drift {
    fn from(c: datapath::Change) -> Self {
        use datapath::Change as C;
        let ifindex = match &c {
            C::Attach { ifindex, .. }
            | C::Detach { ifindex, .. }
            | C::AddCounters { ifindex }
            | C::RemoveCounters { ifindex } => Some(*ifindex),
            C::SetOwner { owner, .. } | C::SetPrefix { owner, .. } => Some(owner.ifindex),
            _ => None,
        };
        Self::Datapath(DatapathDrift {
            op: "datapath",
            ifindex,
            change: c.to_string(),
        })
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Routing(c) => f.write_str(&c.render(DiffFormat::Text)),
            Self::Datapath(d) => f.write_str(&d.change),
        }
    }
}

/// Prints the report; returns whether the namespace is healthy: `false` when enipin is attached
/// (a state file exists) and the installed state drifted from the desired one, which `main`
/// turns into exit status 1 for health checks. Without a state file nothing is desired yet.
/// `verbose`: every rule, route, address and change, where the text folds lists of more than
/// [`Fit::FOLD`] into counts.
pub async fn status(paths: &Paths, json: bool, verbose: bool) -> Result<bool> {
    let report = StatusReport::gather(paths).await?;
    if json {
        println!("{}", crate::model::report::versioned(&report)?);
    } else {
        let fit = Fit::terminal(verbose);
        print!(
            "{}",
            StatusText {
                report: &report,
                fit
            }
        );
    }
    Ok(!report.drifted())
}

impl StatusReport {
    /// Reads the state file, the namespace and the pinned datapath; changes nothing.
    pub(crate) async fn gather(paths: &Paths) -> Result<Self> {
        let st = state::load(paths)?;
        let cfg = st
            .as_ref()
            .and_then(|s| s.config.clone())
            .unwrap_or_default();
        let mut tracker = Tracker::new(&cfg);
        let (mut s, view) = Snapshot::select_with(
            &cfg,
            Named::Strict,
            tracker.as_mut().map(Use::Ask),
            st.as_ref(),
            None,
        )
        .await?;
        // The nft table runs `nft`: read only when the last attach asked for connmark.
        if cfg.connmark {
            apply::read_connmark(&mut s.snapshot.discovery, &cfg, st.as_ref())?;
        }
        let d = &s.snapshot.discovery;
        let managed = match s.selection {
            Selection::Managed(m) => m,
            Selection::NothingToDo(_) => Vec::new(),
        };
        let sources = sources(d, &managed, &cfg);
        let metadata = view.map(|v| MetadataStatus {
            unknown: v
                .unknown
                .iter()
                .map(|(mac, why)| (fmt_mac(mac), why.clone()))
                .collect(),
            requests: v.requests,
        });
        let (rules, routes) = crate::routing::plan::installed(d);
        let mut drift: Vec<Drift> = apply::compute(d, &managed, &cfg)?
            .changes
            .into_iter()
            .map(Drift::Routing)
            .collect();
        if cfg.connmark {
            let change = apply::connmark_change(d, &managed, &cfg, st.as_ref())?;
            drift.extend(change.map(Drift::Routing));
            for l in apply::connmark_left_out(&managed, &cfg) {
                log::warn!("connmark: {l}");
            }
        }
        // With the layer off, what is still pinned is drift too (it goes at the next attach).
        if let Some(plan) =
            apply::datapath(&managed, &cfg, paths).context("planning the datapath")?
        {
            drift.extend(plan.changes.into_iter().map(Drift::from));
        }
        let (datapath, program, owner_tables) = datapath(paths)?;
        let installed = !rules.is_empty() || !routes.is_empty() || !datapath.is_empty();
        let warnings = crate::doctor::mtu::mismatch(&managed, cfg.rules)
            .into_iter()
            .collect();
        Ok(Self {
            state_missing: st.is_none() && installed,
            attached: st.is_some(),
            managed,
            rules,
            routes,
            datapath,
            program,
            owner_tables,
            drift,
            sysctls_saved: st.map(|s| s.sysctls_by_key()),
            warnings,
            running: crate::kernel::claim::holder_now(),
            sources,
            metadata,
        })
    }
}

/// Where each managed address and prefix comes from.
fn sources(d: &Discovery, managed: &[ManagedInterface], cfg: &Config) -> Vec<Source> {
    let mut out = Vec::new();
    for m in managed {
        let Some(i) = d.interfaces.iter().find(|i| i.ifindex == m.ifindex) else {
            continue;
        };
        for a in &m.addrs {
            out.push(Source {
                interface: m.name.clone(),
                cidr: *a,
                prefix: false,
                source: i.origin(a.addr),
            });
        }
        for p in &m.prefixes {
            let option = cfg.prefixes.iter().any(|(sel, q)| {
                q == p && (*sel == i.name || sel.eq_ignore_ascii_case(&fmt_mac(&i.mac)))
            });
            let meta = i.meta.as_ref().is_some_and(|x| x.prefixes.contains(p));
            out.push(Source {
                interface: m.name.clone(),
                cidr: *p,
                prefix: true,
                source: match (option, meta) {
                    (true, true) => Origin::OptionAndMetadata,
                    (false, true) => Origin::Metadata,
                    _ => Origin::Option,
                },
            });
        }
    }
    out
}

/// The datapath's attachments, program and owner tables, when anything is pinned.
fn datapath(paths: &Paths) -> Result<(Vec<Attached>, Option<PinnedProgram>, OwnerTables)> {
    if !paths.pin_dir.exists() {
        return Ok((Vec::new(), None, OwnerTables::default()));
    }
    Ok((
        datapath::attached(paths).context("reading the datapath attachment")?,
        datapath::pinned_program(paths).context("reading the pinned program")?,
        datapath::table_summary(paths).context("reading the owner tables")?,
    ))
}

/// The report as text, fitted to a terminal.
pub(crate) struct StatusText<'a> {
    pub(crate) report: &'a StatusReport,
    pub(crate) fit: Fit,
}

impl fmt::Display for StatusReport {
    /// At 100 columns, long lists folded (what `status | less` shows).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fit = Fit {
            width: 100,
            all: false,
        };
        write!(f, "{}", StatusText { report: self, fit })
    }
}

impl fmt::Display for StatusText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (r, fit) = (self.report, self.fit);
        let state = if r.attached {
            "attached"
        } else if r.state_missing {
            "state file missing: enipin's objects below are installed, but what it changed is \
             not recorded (`enipin watch` writes it back; `detach` cannot restore the sysctls)"
        } else {
            "not attached (no state file)"
        };
        write!(f, "{}", r.summary(fit))?;
        writeln!(f, "{}", prose(&format!("state: {state}"), fit))?;
        let managed = &r.managed;
        write!(
            f,
            "{}",
            ManagedText {
                managed,
                prefix: "",
                fit
            }
        )?;
        r.fmt_installed(f, fit)?;
        r.fmt_datapath(f, fit)?;
        r.fmt_metadata(f, fit)?;
        for w in &r.warnings {
            writeln!(f, "{}", prose(&format!("warning: {w}"), fit))?;
        }
        r.fmt_drift(f, fit)
    }
}

/// A sentence wrapped at the width, never folded.
fn prose(text: &str, fit: Fit) -> String {
    let mut words = text.split(' ').map(str::to_owned);
    let head = words.next().unwrap_or_default();
    let words: Vec<String> = words.collect();
    let fit = Fit { all: true, ..fit };
    super::wrapped(&head, &words, "", fit)
}

impl StatusReport {
    /// enipin's rules and routes: each, or folded, a line per table with its counts.
    fn fmt_installed(&self, f: &mut fmt::Formatter<'_>, fit: Fit) -> fmt::Result {
        writeln!(f, "rules ({}):", self.rules.len())?;
        if fit.whole(self.rules.len()) {
            for r in &self.rules {
                writeln!(f, "  {}{}", if r.v6 { "-6 " } else { "" }, r.ip_args())?;
            }
        } else {
            let tables = self.rules.iter().map(|r| (r.table, r.priority));
            self.fmt_per_table(f, tables, "rule")?;
        }
        writeln!(f, "routes ({}):", self.routes.len())?;
        if fit.whole(self.routes.len()) {
            for r in &self.routes {
                writeln!(f, "  {}{}", if r.v6() { "-6 " } else { "" }, r.ip_args())?;
            }
        } else {
            let tables = self.routes.iter().map(|r| (r.table, r.metric));
            self.fmt_per_table(f, tables, "route")?;
        }
        Ok(())
    }

    /// `(table, priority or metric)` folded into one line per table.
    fn fmt_per_table(
        &self,
        f: &mut fmt::Formatter<'_>,
        items: impl Iterator<Item = (u32, u32)>,
        what: &str,
    ) -> fmt::Result {
        let mut per: BTreeMap<u32, (usize, u32, u32)> = BTreeMap::new();
        for (table, p) in items {
            let e = per.entry(table).or_insert((0, p, p));
            *e = (e.0 + 1, e.1.min(p), e.2.max(p));
        }
        let key = if what == "rule" { "pref" } else { "metric" };
        for (table, (n, lo, hi)) in per {
            let owner = (self.managed.iter())
                .find(|m| m.table == table)
                .map_or(String::new(), |m| format!(" ({})", m.name));
            let range = if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            };
            writeln!(f, "  table {table}{owner}: {n} {what}(s), {key} {range}")?;
        }
        writeln!(f, "  (--verbose lists each {what})")
    }

    /// The first lines: what is managed, installed and running, in counts (the lists follow).
    fn summary(&self, fit: Fit) -> String {
        let names: Vec<&str> = self.managed.iter().map(|m| m.name.as_str()).collect();
        let shown = match names.len() {
            0 => "none".to_owned(),
            n if n <= 6 => names.join(", "),
            n => format!("{}, +{} more", names[..5].join(", "), n - 5),
        };
        let addrs: usize = self.managed.iter().map(|m| m.addrs.len()).sum();
        let on: Vec<&str> = self.datapath.iter().map(|a| a.name.as_str()).collect();
        let datapath = if on.is_empty() {
            "not attached".to_owned()
        } else {
            format!("on {}", on.len())
        };
        let drift = match self.drift.len() {
            0 => "none".to_owned(),
            n => format!("{n} change(s) (listed below)"),
        };
        let running = self
            .running
            .as_deref()
            .unwrap_or("no enipin runs in this namespace now");
        let running = prose(&format!("         running: {running}"), fit);
        format!(
            "summary: {} interface(s) selected ({shown}), {addrs} address(es)\n\
             \x20        enipin's {} rule(s) and {} route(s) installed; datapath {datapath}\n\
             \x20        drift: {drift}\n\
             {running}\n",
            names.len(),
            self.rules.len(),
            self.routes.len(),
        )
    }

    /// Attached, and something differs from the desired state; or installed without a record.
    pub(crate) fn drifted(&self) -> bool {
        (self.attached && !self.drift.is_empty()) || self.state_missing
    }

    fn fmt_datapath(&self, f: &mut fmt::Formatter<'_>, fit: Fit) -> fmt::Result {
        if self.datapath.is_empty() {
            writeln!(f, "datapath: not attached")?;
        }
        if fit.whole(self.datapath.len()) {
            for a in &self.datapath {
                writeln!(f, "datapath: {} (ifindex {}) {}", a.name, a.ifindex, a.kind)?;
            }
        } else {
            let on: Vec<String> = (self.datapath.iter())
                .map(|a| format!("{}:{}", a.name, a.kind))
                .collect();
            let head = format!("datapath on {} interface(s):", on.len());
            writeln!(
                f,
                "{}",
                super::wrapped(&head, &on, "", Fit { all: true, ..fit })
            )?;
        }
        if let Some(p) = &self.program {
            writeln!(f, "datapath program: id {}, tag {:016x}", p.id, p.tag)?;
        }
        let tables = [self.owner_tables.ipv4, self.owner_tables.ipv6];
        for (family, t) in ["IPv4", "IPv6"].iter().zip(tables) {
            if let Some(t) = t {
                writeln!(
                    f,
                    "owner table {family}: {} address(es), {} bucket(s) spilled to the owner map",
                    t.addresses, t.spilled_buckets
                )?;
            }
        }
        Ok(())
    }

    /// With `--metadata`: where each address and prefix comes from, and what is unknown.
    fn fmt_metadata(&self, f: &mut fmt::Formatter<'_>, fit: Fit) -> fmt::Result {
        let Some(m) = &self.metadata else {
            return Ok(());
        };
        writeln!(f, "sources ({} metadata request(s)):", m.requests)?;
        if !fit.whole(self.sources.len()) {
            self.fmt_sources_folded(f)?;
        }
        for s in self
            .sources
            .iter()
            .filter(|_| fit.whole(self.sources.len()))
        {
            let what = if s.prefix { "prefix " } else { "" };
            let from = match s.source {
                Origin::Netlink => "netlink",
                Origin::Metadata => "metadata",
                Origin::Both => "netlink, metadata",
                Origin::Option => "--prefix",
                Origin::OptionAndMetadata => "--prefix, metadata",
            };
            writeln!(f, "  {} {what}{}: {from}", s.interface, s.cidr)?;
        }
        for (mac, why) in &m.unknown {
            writeln!(
                f,
                "{}",
                prose(&format!("  metadata of {mac} unknown: {why}"), fit)
            )?;
        }
        Ok(())
    }

    /// Per interface, how many of its addresses and prefixes come from where.
    fn fmt_sources_folded(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut per: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
        for s in &self.sources {
            let origin = serde_json::to_value(s.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            *per.entry(&s.interface)
                .or_default()
                .entry(origin)
                .or_default() += 1;
        }
        for (interface, counts) in per {
            let counts: Vec<String> = counts.iter().map(|(o, n)| format!("{n} {o}")).collect();
            writeln!(f, "  {interface}: {}", counts.join(", "))?;
        }
        writeln!(f, "  (--verbose lists each address)")
    }

    fn fmt_drift(&self, f: &mut fmt::Formatter<'_>, fit: Fit) -> fmt::Result {
        if self.drift.is_empty() {
            return writeln!(f, "drift: none");
        }
        let what = if self.attached {
            "drift"
        } else {
            "not attached; attach would make"
        };
        writeln!(
            f,
            "{what} ({} change(s) to reach the desired state):",
            self.drift.len()
        )?;
        let shown = if fit.whole(self.drift.len()) {
            self.drift.len()
        } else {
            Fit::FOLD
        };
        for c in &self.drift[..shown] {
            writeln!(f, "{}", prose(&format!("  {c}"), fit))?;
        }
        if shown < self.drift.len() {
            let more = self.drift.len() - shown;
            writeln!(f, "  +{more} more (--verbose lists each change)")?;
        }
        Ok(())
    }
}

/// A managed interface in `status --json`: as in the state file, but the MAC as text.
#[derive(Serialize)]
struct InterfaceJson<'a> {
    ifindex: u32,
    name: &'a str,
    mac: String,
    mtu: u32,
    table: u32,
    #[serde(serialize_with = "cidr_text::many")]
    addrs: &'a [Cidr],
    #[serde(serialize_with = "cidr_text::many")]
    prefixes: &'a [Cidr],
    gateway_v4: Option<Gateway>,
    gateway_v6: Option<Gateway>,
}

fn managed_json<S: Serializer>(managed: &[ManagedInterface], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(managed.iter().map(|m| InterfaceJson {
        ifindex: m.ifindex,
        name: &m.name,
        mac: fmt_mac(&m.mac),
        mtu: m.mtu,
        table: m.table,
        addrs: &m.addrs,
        prefixes: &m.prefixes,
        gateway_v4: m.gateway_v4,
        gateway_v6: m.gateway_v6,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::GatewaySource, model::route::V6_METRIC};

    fn report() -> StatusReport {
        let m = ManagedInterface {
            ifindex: 3,
            name: "eth1".into(),
            mac: [2, 0, 0, 0, 0, 0x11],
            mtu: 1500,
            table: 20003,
            addrs: vec!["198.18.0.11/24".parse().unwrap()],
            prefixes: vec!["198.18.0.64/28".parse().unwrap()],
            gateway_v4: Some(Gateway {
                addr: "198.18.0.1".parse().unwrap(),
                source: GatewaySource::SubnetFirstHost,
            }),
            gateway_v6: None,
            forwarding: Default::default(),
        };
        let rule = Rule {
            v6: false,
            priority: 20002,
            from: Some("198.18.0.11/32".parse().unwrap()),
            table: 20003,
            suppress_prefixlen: None,
            fwmark: None,
        };
        let route = Route {
            table: 20003,
            dst: Cidr::any(true),
            gateway: Some("2001:db8::1".parse().unwrap()),
            oif: 3,
            dev: "eth1".into(),
            src: None,
            scope_link: false,
            metric: V6_METRIC,
        };
        StatusReport {
            attached: true,
            state_missing: false,
            warnings: Vec::new(),
            running: None,
            managed: vec![m],
            rules: vec![rule.clone()],
            routes: vec![route],
            datapath: vec![Attached {
                ifindex: 3,
                name: "eth1".into(),
                kind: datapath::AttachKind::Tcx,
            }],
            program: Some(datapath::PinnedProgram {
                id: 42,
                tag: 0x0123_4567_89ab_cdef,
            }),
            owner_tables: OwnerTables {
                ipv4: Some(datapath::TableSummary {
                    addresses: 1,
                    spilled_buckets: 0,
                }),
                ipv6: None,
            },
            drift: vec![
                Drift::Routing(Change::AddRule(rule)),
                Drift::from(datapath::Change::Attach {
                    ifindex: 4,
                    name: "eth2".into(),
                }),
            ],
            sysctls_saved: Some(BTreeMap::new()),
            sources: vec![Source {
                interface: "eth1".into(),
                cidr: "198.18.0.11/24".parse().unwrap(),
                prefix: false,
                source: Origin::Netlink,
            }],
            metadata: None,
        }
    }

    #[test]
    fn text() {
        assert_eq!(
            report().to_string(),
            "summary: 1 interface(s) selected (eth1), 1 address(es)
         enipin's 1 rule(s) and 1 route(s) installed; datapath on 1
         drift: 2 change(s) (listed below)
         running: no enipin runs in this namespace now
state: attached
interface eth1 (02:00:00:00:00:11, ifindex 3) table 20003: 198.18.0.11/24 prefixes 198.18.0.64/28
  gateway ipv4: 198.18.0.1 (from the subnet's first host)
rules (1):
  from 198.18.0.11/32 lookup 20003 pref 20002 proto 229
routes (1):
  -6 default via 2001:db8::1 dev eth1 table 20003 proto 229
datapath: eth1 (ifindex 3) tcx
datapath program: id 42, tag 0123456789abcdef
owner table IPv4: 1 address(es), 0 bucket(s) spilled to the owner map
drift (2 change(s) to reach the desired state):
  + rule from 198.18.0.11/32 lookup 20003 pref 20002 proto 229
  + attach enipin_egress to eth2 egress (ifindex 4)
"
        );
    }

    /// The README's scale, 15 interfaces x 50 addresses with their rules, routes, sources and
    /// a drift of every rule (issue 28, item 2): folded, at most 100 columns and 120 lines;
    /// `--verbose` keeps every rule and stays within 120 columns. Before: every rule, source
    /// and change a line (over 2,000), each interface's 50 addresses on one line of 800 columns.
    #[test]
    fn at_15_by_50_the_text_fits_a_terminal() {
        let base = report();
        let mut r = report();
        r.running = Some(
            "enipin watch (PID 4242), state dir /run/enipin, pin dir /sys/fs/bpf/enipin, \
             config /etc/enipin/enipin.toml"
                .into(),
        );
        r.metadata = Some(MetadataStatus {
            unknown: BTreeMap::new(),
            requests: 165,
        });
        (r.managed, r.rules, r.routes, r.datapath, r.sources) = Default::default();
        for i in 0..15u8 {
            let mut m = base.managed[0].clone();
            (m.name, m.ifindex, m.table) =
                (format!("eth{i}"), 3 + u32::from(i), 20003 + u32::from(i));
            m.addrs = (0..50u8)
                .map(|a| format!("198.18.{i}.{}/24", 10 + a).parse().unwrap())
                .collect();
            for (n, a) in m.addrs.iter().enumerate() {
                let rule = Rule {
                    from: Some(Cidr::host(a.addr)),
                    table: m.table,
                    priority: 20000 + (n % 3) as u32,
                    ..base.rules[0].clone()
                };
                r.rules.push(rule.clone());
                r.drift.push(Drift::Routing(Change::AddRule(rule)));
                r.sources.push(Source {
                    interface: m.name.clone(),
                    cidr: *a,
                    prefix: false,
                    source: Origin::Both,
                });
            }
            for route in [&base.routes[0], &base.routes[0]] {
                r.routes.push(Route {
                    table: m.table,
                    ..route.clone()
                });
            }
            r.datapath.push(Attached {
                ifindex: m.ifindex,
                name: m.name.clone(),
                kind: datapath::AttachKind::Tcx,
            });
            r.managed.push(m);
        }
        let text = |all| {
            StatusText {
                report: &r,
                fit: Fit { width: 100, all },
            }
            .to_string()
        };
        let folded = text(false);
        let longest = |t: &str| t.lines().map(str::len).max().unwrap_or(0);
        assert!(longest(&folded) <= 100, "{folded}");
        assert!(
            folded.lines().count() <= 120,
            "{} lines:\n{folded}",
            folded.lines().count()
        );
        assert!(
            folded.contains("  table 20003 (eth0): 50 rule(s), pref 20000-20002"),
            "{folded}"
        );
        assert!(folded.contains("  eth0: 50 both"), "{folded}");
        let verbose = text(true);
        assert!(longest(&verbose) <= 120, "{verbose}");
        assert_eq!(
            verbose.matches("lookup 20017").count(),
            2 * 50,
            "rules and their drift"
        );
        for a in &r.managed[14].addrs {
            assert!(verbose.contains(&format!(" {a}")), "{a} missing");
        }
    }

    #[test]
    fn json_keys_and_shapes() {
        let v = serde_json::to_value(report()).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "attached",
                "datapath",
                "drift",
                "managed",
                "metadata",
                "owner_tables",
                "program",
                "routes",
                "rules",
                "running",
                "sources",
                "state_missing",
                "sysctls_saved",
                "warnings"
            ]
        );
        assert_eq!(v["managed"][0]["mac"], "02:00:00:00:00:11");
        assert_eq!(v["managed"][0]["addrs"][0], "198.18.0.11/24");
        assert_eq!(v["managed"][0]["gateway_v4"]["source"], "subnet-first-host");
        assert_eq!(v["rules"][0]["from"], "198.18.0.11/32");
        assert_eq!(v["datapath"][0]["kind"], "tcx");
        assert_eq!(
            v["program"],
            serde_json::json!({"id": 42, "tag": "0123456789abcdef"})
        );
        assert_eq!(v["owner_tables"]["ipv4"]["addresses"], 1);
        assert_eq!(v["owner_tables"]["ipv6"], serde_json::Value::Null);
        assert_eq!(v["drift"][0]["op"], "add-rule");
        assert_eq!(
            v["drift"][1],
            serde_json::json!({
                "op": "datapath",
                "ifindex": 4,
                "change": "+ attach enipin_egress to eth2 egress (ifindex 4)"
            })
        );
    }
}
