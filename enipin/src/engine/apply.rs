//! Carries a plan out: the journal of the rules, routes and sysctls applier, and the commit of
//! both appliers (this one, while [`crate::datapath`] prepares, then the datapath's links).
//!
//! Every run applies only the difference between desired and installed, and keeps a journal of
//! the inverse of each step it took: if a step fails, the journal is replayed backwards, so a
//! failed attach leaves the namespace as it found it. The commands built on it are in
//! [`crate::commands`].

use anyhow::Result;

use crate::{
    datapath,
    engine::state,
    engine::{
        applied::Applied,
        snapshot::{Named, Snapshot},
    },
    kernel::netlink::Netlink,
    kernel::nft,
    kernel::sysctl,
    metadata::{Use, View},
    model::ManagedInterface,
    model::connmark::{self, Connmark},
    model::discovery::Discovery,
    model::objects::{InPlace, Object},
    routing::address,
    routing::grace::Grace,
    routing::plan::{self, Change, DiffFormat, Plan},
    routing::select::Selection,
    settings::config::{Config, Paths},
};

/// Desired vs installed rules, routes and sysctls for `managed`.
pub(crate) fn compute(d: &Discovery, managed: &[ManagedInterface], cfg: &Config) -> Result<Plan> {
    let mut plan = routing(d, managed, cfg)?;
    // Addresses first (a rule may name one) and removals last (after their rules).
    if cfg.configure_addresses {
        let (adds, dels) = address::changes(d, managed);
        plan.changes.splice(0..0, adds);
        plan.changes.extend(dels);
    }
    Ok(plan)
}

fn routing(d: &Discovery, managed: &[ManagedInterface], cfg: &Config) -> Result<Plan> {
    let (have_rules, have_routes) = plan::installed(d);
    // The sysctls serve the datapath too (`Config::sysctls`): planned with either layer.
    let sysctls = if cfg.sysctls {
        sysctls(d, managed)?
    } else {
        Vec::new()
    };
    if !cfg.rules {
        // The layer is off: what it installed goes (`layers.rules = false` + SIGHUP, `attach
        // --no-rules` after a full attach).
        return Ok(plan::diff(&[], &[], &have_rules, &have_routes, sysctls));
    }
    let (want_rules, want_routes) = plan::desired(managed, cfg);
    Ok(plan::diff(
        &want_rules,
        &want_routes,
        &have_rules,
        &have_routes,
        sysctls,
    ))
}

/// (key, now, wanted) of every managed interface's knobs, now as discovery read them.
fn sysctls(
    d: &Discovery,
    managed: &[ManagedInterface],
) -> Result<Vec<(crate::model::sysctl::Key, String, String)>> {
    let all = d.all_rp_filter.clone().map_err(anyhow::Error::msg)?;
    let mut out = Vec::new();
    for m in managed {
        let conf = d
            .interfaces
            .iter()
            .find(|i| i.ifindex == m.ifindex)
            .and_then(|i| i.ipv4_conf)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "interface {} has no IPv4 configuration (its link dump has no \
                     IFLA_INET_CONF: the kernel drops it below MTU 68), so its sysctls cannot be \
                     read; raise its MTU, or leave it out of --interfaces",
                    m.name
                )
            })?;
        for (key, want) in crate::model::sysctl::wanted(&m.name, &conf, all)? {
            out.push((key.clone(), key.knob().of(&conf).to_string(), want));
        }
    }
    Ok(out)
}

async fn step(nl: &Netlink, c: &Change) -> Result<()> {
    match c {
        Change::AddRule(r) => nl.add_rule(r).await,
        Change::DelRule(r) => nl.del_rule(r).await,
        Change::AddRoute(r) => nl.add_route(r).await,
        Change::DelRoute(r) => nl.del_route(r).await,
        Change::AddAddress(a) => nl.add_address(a).await,
        Change::DelAddress(a) => nl.del_address(a).await,
        Change::Sysctl { key, new, .. } => {
            sysctl::write(nl, key.ifname(), &[(key.knob(), new)]).await
        }
        Change::Connmark { new, .. } => nft::apply(new.as_ref()),
    }
}

/// Whether enipin's nftables table is planned: wanted with `--connmark` (and the rules), or
/// installed by the last attach (so that turning it off removes it).
fn connmark_planned(cfg: &Config, previous: Option<&state::State>) -> bool {
    let was_on = previous
        .and_then(|s| s.config.as_ref())
        .is_some_and(|c| c.connmark);
    (cfg.connmark && cfg.rules) || was_on
}

/// Reads enipin's nftables table into `d` (`nft -j`) when it is planned: the one read planning
/// needs beside discovery's, done before it so that the plan reads nothing itself.
pub(crate) fn read_connmark(
    d: &mut Discovery,
    cfg: &Config,
    previous: Option<&state::State>,
) -> Result<()> {
    if connmark_planned(cfg, previous) {
        d.nft = Some(nft::installed()?);
    }
    Ok(())
}

/// enipin's nftables table: the change from what [`read_connmark`] read to what is wanted.
/// `None`: nothing to do.
pub(crate) fn connmark_change(
    d: &Discovery,
    managed: &[ManagedInterface],
    cfg: &Config,
    previous: Option<&state::State>,
) -> Result<Option<Change>> {
    if !connmark_planned(cfg, previous) {
        return Ok(None);
    }
    let Some(old) = d.nft.clone() else {
        anyhow::bail!("enipin's nftables table was not read before planning it");
    };
    let new = (cfg.connmark && cfg.rules)
        .then(|| Connmark::desired(managed, cfg.connmark_mask).0)
        .filter(|c| !c.marks.is_empty());
    Ok((old != new).then_some(Change::Connmark { old, new }))
}

/// The managed interfaces `--connmark` leaves out (their ifindex does not fit the mask): the
/// caller says them (attach once; watch when the set changes). Empty without connmark.
pub(crate) fn connmark_left_out(
    managed: &[ManagedInterface],
    cfg: &Config,
) -> Vec<connmark::LeftOut> {
    if !(cfg.connmark && cfg.rules) {
        return Vec::new();
    }
    Connmark::desired(managed, cfg.connmark_mask).1
}

/// Netlink requests in flight at once. The kernel handles a socket's requests one by one in the
/// order they were sent, so keeping several in flight keeps the order of the plan while sparing a
/// round trip (and two thread wake-ups) per request: attach of 15 x 50 addresses (1500 rules) went
/// from about 65 ms to about 30 ms. 64 acks fit easily in the socket's receive buffer.
const IN_FLIGHT: usize = 64;

/// Runs `changes` in order, netlink requests [`IN_FLIGHT`] at a time (the sysctls of one interface
/// wait for every request before them and go in one request of their own; the nft table goes
/// alone). Returns each change's result, in order: all of them,
/// or, with `stop_on_error`, those of the batches up to and including the first failure.
pub(crate) async fn run_batched<'a>(
    nl: &Netlink,
    changes: &'a [Change],
    stop_on_error: bool,
) -> Vec<(&'a Change, Result<()>)> {
    let mut out = Vec::with_capacity(changes.len());
    let mut rest = changes;
    while !rest.is_empty() {
        let n = if rest[0].is_netlink() {
            rest.iter()
                .take(IN_FLIGHT)
                .take_while(|c| c.is_netlink())
                .count()
        } else if let Some(ifname) = sysctl_of(&rest[0]) {
            rest.iter()
                .take_while(|c| sysctl_of(c) == Some(ifname))
                .count()
        } else {
            1
        };
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        let results = if sysctl_of(&batch[0]).is_some() {
            write_sysctls(nl, batch).await
        } else {
            // join_all polls in order: the requests reach the connection (and the kernel) in order.
            futures::future::join_all(batch.iter().map(|c| step(nl, c))).await
        };
        let failed = results.iter().any(|r| r.is_err());
        out.extend(batch.iter().zip(results));
        if failed && stop_on_error {
            break;
        }
    }
    out
}

/// The interface a sysctl change is for.
fn sysctl_of(c: &Change) -> Option<&str> {
    match c {
        Change::Sysctl { key, .. } => Some(key.ifname()),
        _ => None,
    }
}

/// Sysctl changes of one interface in one request: each gets its result, all the same (the
/// kernel sets all of them or none).
async fn write_sysctls(nl: &Netlink, batch: &[Change]) -> Vec<Result<()>> {
    let knobs: Vec<(crate::model::sysctl::Knob, &str)> = batch
        .iter()
        .filter_map(|c| match c {
            Change::Sysctl { key, new, .. } => Some((key.knob(), new.as_str())),
            _ => None,
        })
        .collect();
    let ifname = sysctl_of(&batch[0]).expect("a sysctl batch");
    match sysctl::write(nl, ifname, &knobs).await {
        Ok(()) => batch.iter().map(|_| Ok(())).collect(),
        Err(e) => {
            let e = format!("{e:#}");
            batch.iter().map(|_| Err(anyhow::anyhow!("{e}"))).collect()
        }
    }
}

/// A failed [`execute`]: the step's error, and how undoing the steps before it went.
struct Failed {
    error: anyhow::Error,
    undone: Undone,
}

/// Applies `changes` in order; on the first failure undoes what it did and says what failed.
async fn execute(nl: &Netlink, changes: &[Change]) -> Result<Vec<Change>, Failed> {
    let mut journal = Vec::new();
    let mut first_error = None;
    for (n, (c, r)) in run_batched(nl, changes, true).await.into_iter().enumerate() {
        match r {
            // Requests after a failure in the same batch were already sent: undo those too.
            Ok(()) => journal.push(c.inverse()),
            Err(e) if first_error.is_none() => first_error = Some((n, c, e)),
            Err(_) => {}
        }
    }
    if let Some((n, c, e)) = first_error {
        let undone = rollback(nl, journal).await;
        let error = e.context(format!(
            "step {} of {} (`{}`) failed; {undone}",
            n + 1,
            changes.len(),
            c.render(DiffFormat::Text)
        ));
        return Err(Failed { error, undone });
    }
    Ok(journal)
}

/// How a rollback went: the steps it undid, and those it could not.
struct Undone {
    applied: usize,
    failed: Vec<String>,
}

impl Undone {
    /// What a failed commit amounts to: one true sentence, never "nothing changed" when a step
    /// could not be undone.
    fn outcome(&self) -> &'static str {
        if self.failed.is_empty() {
            "nothing changed"
        } else {
            "the namespace is left partly changed: the steps above could not be undone (run \
             `enipin detach`, or undo them by hand)"
        }
    }
}

impl std::fmt::Display for Undone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.applied;
        match (n, self.failed.is_empty()) {
            (0, _) => write!(f, "nothing had been applied yet"),
            (_, true) => write!(f, "rolled back the {n} change(s) this run had applied"),
            (_, false) => write!(
                f,
                "rolling back the {n} change(s) this run had applied failed for: {}",
                self.failed.join("; ")
            ),
        }
    }
}

/// Replays the inverse steps backwards.
async fn rollback(nl: &Netlink, journal: Vec<Change>) -> Undone {
    let applied = journal.len();
    let backwards: Vec<Change> = journal.into_iter().rev().collect();
    let mut failed = Vec::new();
    for (c, r) in run_batched(nl, &backwards, false).await {
        if let Err(e) = r {
            failed.push(format!("{}: {e:#}", c.render(DiffFormat::Text)));
        }
    }
    Undone { applied, failed }
}

/// The difference between the desired state and the namespace now, for both appliers.
pub(crate) struct Pending {
    /// The state file as found (restored if applying fails).
    pub(crate) previous: Option<state::State>,
    pub(crate) managed: Vec<ManagedInterface>,
    pub(crate) plan: Plan,
    pub(crate) ebpf: Option<datapath::EbpfPlan>,
    /// Why the rules layer planned nothing ([`OnConflict::DatapathAlone`]).
    pub(crate) rules_refused: Option<anyhow::Error>,
}

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.plan.is_empty() && self.ebpf.as_ref().is_none_or(|p| p.is_empty())
    }

    /// Every change in enipin's diff format: rules, routes, sysctls, then the datapath.
    pub(crate) fn lines(&self, format: DiffFormat) -> Vec<String> {
        let comment = if format == DiffFormat::Ip { "# " } else { "" };
        let rules = self.plan.changes.iter().map(|c| c.render(format));
        let datapath = self
            .ebpf
            .iter()
            .flat_map(|p| &p.changes)
            .map(|l| format!("{comment}{l}"));
        rules.chain(datapath).collect()
    }
}

/// What someone else's rule at enipin's priorities (or in its tables) does to a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnConflict {
    /// Refuse all of it (`attach`: all or nothing, the operator sees the error).
    Refuse,
    /// Plan the datapath alone, which needs no rule priority: the rules layer is refused
    /// ([`Pending::rules_refused`]) and left as it is (`watch`).
    DatapathAlone,
}

/// Why a reconcile failed, by the phase that failed: the watcher counts each
/// (`enipin_reconcile_failures_total{phase}`) and says what was left in place. Every phase
/// before [`ReconcileError::Commit`] changed nothing; a failed commit was rolled back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconcileError {
    /// Reading the state file.
    #[error(transparent)]
    State(anyhow::Error),
    /// Discovering the namespace (and its metadata) and selecting from it.
    #[error(transparent)]
    Discover(anyhow::Error),
    /// Planning: a conflict that refuses the whole pass, the datapath's plan.
    #[error(transparent)]
    Plan(anyhow::Error),
    /// Carrying the plan out (rules, datapath, state file).
    #[error(transparent)]
    Commit(anyhow::Error),
    /// The rules layer refused the pass (someone else's rule at enipin's priorities) while the
    /// datapath, which needs no priority, was applied on its own.
    #[error(transparent)]
    RulesRefused(anyhow::Error),
}

impl ReconcileError {
    /// Every phase's label, for series that exist from the first scrape.
    pub(crate) const PHASES: [&'static str; 5] = ["state", "discover", "plan", "commit", "rules"];

    pub(crate) fn phase(&self) -> &'static str {
        match self {
            ReconcileError::State(_) => "state",
            ReconcileError::Discover(_) => "discover",
            ReconcileError::Plan(_) => "plan",
            ReconcileError::Commit(_) => "commit",
            ReconcileError::RulesRefused(_) => "rules",
        }
    }
}

/// The datapath's plan: for `managed` with the layer on; with it off, the removal of whatever
/// is still pinned (the layer switched off); `None` when there is nothing of it.
pub(crate) fn datapath(
    managed: &[ManagedInterface],
    cfg: &Config,
    paths: &Paths,
) -> Result<Option<datapath::EbpfPlan>> {
    if cfg.ebpf {
        return datapath::plan(managed, cfg, paths).map(Some);
    }
    if !paths.pin_dir.exists() {
        return Ok(None);
    }
    datapath::plan(&[], cfg, paths).map(Some)
}

/// Plans both appliers for `managed` against discovery `d`. Any failure to read what is
/// installed is an error, never an empty plan.
pub(crate) fn pending(
    d: &Discovery,
    managed: Vec<ManagedInterface>,
    previous: Option<state::State>,
    cfg: &Config,
    paths: &Paths,
    on_conflict: OnConflict,
) -> Result<Pending> {
    let conflict = match cfg.rules {
        true => plan::check_conflicts(d, &managed, cfg).err(),
        false => None,
    };
    let (plan, rules_refused) = match (conflict, on_conflict) {
        (Some(e), OnConflict::Refuse) => return Err(e),
        (Some(e), OnConflict::DatapathAlone) => (Plan::default(), Some(e)),
        (None, _) => {
            let mut plan = compute(d, &managed, cfg)?;
            plan.changes
                .extend(connmark_change(d, &managed, cfg, previous.as_ref())?);
            (plan, None)
        }
    };
    let ebpf = datapath(&managed, cfg, paths)?;
    Ok(Pending {
        previous,
        managed,
        plan,
        ebpf,
        rules_refused,
    })
}

/// Carries a plan out, all or nothing: the state file first, then rules/routes/sysctls while the
/// datapath is prepared, then the datapath's links; on failure everything this call did is undone
/// and the state file restored. Returns the state as it stands recorded.
pub(crate) async fn commit(
    nl: &Netlink,
    p: Pending,
    cfg: &Config,
    paths: &Paths,
) -> Result<state::State> {
    // The state goes first: the sysctl values we are about to replace must survive a crash.
    let mut st = p.previous.clone().unwrap_or_default();
    for c in &p.plan.changes {
        if let Change::Sysctl { key, old, .. } = c
            && let Some(m) = p.managed.iter().find(|m| m.name == key.ifname())
        {
            st.remember(m, key.knob(), old);
        }
    }
    st.record_addresses(&p.plan.changes, &p.managed);
    st.config = Some(cfg.clone());
    st.managed = p.managed.clone();
    if cfg.ebpf {
        st.pin_dir = Some(paths.pin_dir.clone());
    }
    if p.previous.as_ref() != Some(&st) {
        state::save(paths, &st)?;
    }
    // Without rules the program sends a redirect through its owner's gateway: asked for first,
    // on every pass, so that one gone from the neighbour table comes back (see `datapath::resolve`).
    if cfg.ebpf && !cfg.rules {
        datapath::resolve_gateways(nl, &p.managed).await?;
    }
    if p.is_empty() {
        return Ok(st);
    }
    // The datapath is prepared (program loaded and verified, maps filled) on a thread of its own
    // while the rules' batch runs: see `datapath::Prepared` for why only that part can overlap.
    let prepared = p
        .ebpf
        .filter(|e| !e.is_empty())
        .map(|ep| prepare_aside(ep, cfg, paths));
    let t = std::time::Instant::now();
    let rules = execute(nl, &p.plan.changes).await;
    log::debug!(
        "rules: {} change(s) applied in {:.1} ms",
        p.plan.changes.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let prepared = match prepared {
        Some(rx) => Some(
            rx.await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("preparing the datapath panicked"))),
        ),
        None => None,
    };
    let journal = match rules {
        Ok(j) => j,
        Err(Failed { error, undone }) => {
            // The rules were rolled back by `execute`; what was prepared goes too (a failed
            // preparation undid itself).
            let e = match prepared.map(|r| r.and_then(datapath::Prepared::abandon)) {
                Some(Err(left)) => error.context(format!("{left:#}")),
                _ => error,
            };
            state::restore(paths, p.previous.as_ref())?;
            return Err(e.context(undone.outcome()));
        }
    };
    if let Some(Err(e)) = prepared.map(|r| r.and_then(datapath::Prepared::finish)) {
        let undone = rollback(nl, journal).await;
        state::restore(paths, p.previous.as_ref())?;
        return Err(e.context(format!("attaching the datapath failed; {undone}")));
    }
    Ok(st)
}

/// Runs [`datapath::prepare`] on a new thread, started from this one so that it is in the same
/// network namespace (threads inherit the namespace of the thread that starts them). Should the
/// receiver be gone (the commit was cancelled), the thread undoes what it prepared itself.
fn prepare_aside(
    plan: datapath::EbpfPlan,
    cfg: &Config,
    paths: &Paths,
) -> futures::channel::oneshot::Receiver<Result<datapath::Prepared>> {
    let (tx, rx) = futures::channel::oneshot::channel();
    let (cfg, paths) = (cfg.clone(), paths.clone());
    std::thread::spawn(move || {
        if let Err(Ok(unused)) = tx.send(datapath::prepare(plan, &cfg, &paths)) {
            let _ = unused.abandon();
        }
    });
    rx
}

/// Objects a reconcile found out of place, by (kind, missing): `rule`, `route`, `sysctl`, `connmark`,
/// `datapath_link`, `datapath_program`, `datapath_map`; missing (added back) or extra (removed).
pub(crate) type Drift = std::collections::BTreeMap<(&'static str, bool), u64>;

fn drift(p: &Pending) -> Drift {
    let rules = p.plan.changes.iter().map(|c| match c {
        Change::AddRule(_) => ("rule", true),
        Change::DelRule(_) => ("rule", false),
        Change::AddRoute(_) => ("route", true),
        Change::DelRoute(_) => ("route", false),
        Change::AddAddress(_) => ("address", true),
        Change::DelAddress(_) => ("address", false),
        Change::Sysctl { .. } => ("sysctl", true),
        Change::Connmark { new, .. } => ("connmark", new.is_some()),
    });
    let datapath = p
        .ebpf
        .iter()
        .flat_map(|e| &e.changes)
        .filter_map(|c| c.drift());
    let mut out = Drift::new();
    for key in rules.chain(datapath) {
        *out.entry(key).or_default() += 1;
    }
    out
}

/// What the desired state for `p` has in place once `p` is applied.
fn in_place(p: &Pending, cfg: &Config) -> InPlace {
    let mut out = InPlace::new();
    if cfg.rules {
        let (rules, routes) = plan::desired(&p.managed, cfg);
        out.extend(rules.into_iter().map(Object::Rule));
        out.extend(routes.into_iter().map(Object::Route));
        out.extend(p.plan.sysctls.iter().cloned().map(Object::Sysctl));
        if cfg.connmark && !p.managed.is_empty() {
            out.insert(Object::Connmark);
        }
    }
    if cfg.configure_addresses {
        let addrs = p
            .managed
            .iter()
            .flat_map(|m| m.addrs.iter().map(|a| (m.ifindex, a.addr)));
        out.extend(addrs.map(|(ix, a)| Object::Address(ix, a)));
    }
    if cfg.ebpf {
        out.extend(datapath::objects(&p.managed, cfg));
    }
    out
}

/// What `p` puts in place, by identity.
fn added(p: &Pending) -> Vec<Object> {
    let rules = p.plan.changes.iter().filter_map(Change::puts);
    let datapath = p
        .ebpf
        .iter()
        .flat_map(|e| &e.changes)
        .filter_map(|c| c.puts());
    rules.chain(datapath).collect()
}

/// What one [`reconcile`] found and did.
#[derive(Debug, Default)]
pub(crate) struct Reconciled {
    /// The interfaces managed now (empty: nothing to manage).
    pub managed: Vec<ManagedInterface>,
    /// The changes applied, in order; empty when nothing changed.
    pub changes: Vec<Applied>,
    /// Why nothing is managed, when nothing is.
    pub idle: Option<String>,
    /// Interfaces named in `--interfaces` that are left out for now (missing, down, no address):
    /// the name or MAC as named, and a note.
    pub left_out: Vec<(String, String)>,
    /// What the plan found out of place before applying it.
    pub drift: Drift,
    /// What is in place after it: the next pass counts what it puts back of these as restored.
    pub in_place: InPlace,
    /// What it put in place, by identity.
    pub added: Vec<Object>,
    /// What metadata said this pass (`None` without `--metadata`).
    pub metadata: Option<View>,
    /// The managed interfaces `--connmark` leaves out.
    pub connmark_left_out: Vec<connmark::LeftOut>,
    /// The managed interfaces without an address in their grace ([`Grace`]): what was managed
    /// stayed managed.
    pub blinking: Vec<String>,
    /// The state as recorded after the pass: what the watcher writes back should the file go.
    pub state: state::State,
    /// The state file was gone, and was written back from the caller's copy first.
    pub state_rewritten: bool,
}

/// One pass of the same plan/apply `attach` does, for a caller that holds the state lock
/// (`enipin watch`): discover, select, diff, apply only the difference.
///
/// Unlike `attach`, a successful discovery that selects nothing (the last interface sharing a
/// subnet was detached, its last address removed) is a desired state too: enipin's own rules,
/// routes and datapath go (sysctls stay recorded for `detach`). A failed discovery is an error
/// and changes nothing. With `metadata`, an ENI whose metadata is unknown keeps its last known
/// metadata (the tracker's), so a failing service removes nothing; the watcher passes the last
/// refresh's ([`Use::Last`]), so a repair waits for no metadata service. An interface that lost its
/// addresses but is still there holds the last selection for `grace`'s period ([`Grace`]).
///
/// `remembered`: the state the caller's last pass recorded. Should the file be gone (removed by
/// hand, a tmpfs cleaner), it is written back from it first: planned without it, the pass would
/// record the sysctls as they are now (enipin's values), and `detach` would leave them so.
pub(crate) async fn reconcile(
    cfg: &Config,
    paths: &Paths,
    metadata: Option<Use<'_>>,
    grace: &mut Grace,
    remembered: Option<&state::State>,
) -> Result<Reconciled, ReconcileError> {
    let mut previous = state::load(paths).map_err(ReconcileError::State)?;
    let state_rewritten = previous.is_none() && remembered.is_some();
    if let (None, Some(r)) = (&previous, remembered) {
        state::save(paths, r).map_err(ReconcileError::State)?;
        previous = Some(r.clone());
    }
    let (mut s, view) = Snapshot::select_with(
        cfg,
        Named::Present,
        metadata,
        previous.as_ref(),
        Some(grace),
    )
    .await
    .map_err(ReconcileError::Discover)?;
    let left_out = s
        .refused
        .iter()
        .map(|r| (r.selector().to_owned(), r.to_string()))
        .collect();
    let (managed, idle) = match s.selection {
        Selection::Managed(m) => (m, None),
        Selection::NothingToDo(why) => (Vec::new(), Some(why)),
    };
    read_connmark(&mut s.snapshot.discovery, cfg, previous.as_ref())
        .map_err(ReconcileError::Discover)?;
    let (nl, d) = (&s.snapshot.nl, &s.snapshot.discovery);
    let mut p = pending(d, managed, previous, cfg, paths, OnConflict::DatapathAlone)
        .map_err(ReconcileError::Plan)?;
    let refused = p.rules_refused.take();
    let datapath = p.ebpf.iter().flat_map(|e| e.changes.iter().cloned());
    let changes: Vec<Applied> = (p.plan.changes.iter().cloned().map(Applied::Rules))
        .chain(datapath.map(Applied::Datapath))
        .collect();
    let drift = drift(&p);
    let (in_place, added) = (in_place(&p, cfg), added(&p));
    let managed = p.managed.clone();
    let state = commit(nl, p, cfg, paths)
        .await
        .map_err(ReconcileError::Commit)?;
    if let Some(e) = refused {
        return Err(ReconcileError::RulesRefused(e));
    }
    Ok(Reconciled {
        connmark_left_out: connmark_left_out(&managed, cfg),
        managed,
        changes,
        idle,
        left_out,
        drift,
        in_place,
        added,
        metadata: view,
        blinking: s.held.blinking,
        state,
        state_rewritten,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Interface, sysctl::Knob};

    fn eni(ifindex: u32, addr: &str) -> (Interface, ManagedInterface) {
        let i = Interface::fixture(ifindex, &[addr]);
        let m = ManagedInterface::fixture(ifindex, &i.name, i.addrs.clone());
        (i, m)
    }

    /// The plan reads nothing of its own: `all.rp_filter` and the nft table come with the
    /// discovery, so what it plans follows from them alone (no root, no /proc, no `nft`).
    /// A failed commit says one true thing (issue 26, item 13): "nothing changed" only when
    /// every step before the failure was undone.
    #[test]
    fn a_failed_commit_says_nothing_changed_only_when_it_is_so() {
        let clean = Undone {
            applied: 3,
            failed: Vec::new(),
        };
        assert_eq!(clean.outcome(), "nothing changed");
        assert_eq!(
            clean.to_string(),
            "rolled back the 3 change(s) this run had applied"
        );
        let left = Undone {
            applied: 3,
            failed: vec!["+ rule from 198.18.0.11/32 lookup 20003: EPERM".into()],
        };
        assert!(
            !left.outcome().contains("nothing changed"),
            "{}",
            left.outcome()
        );
        assert!(left.to_string().contains("failed for: + rule"), "{left}");
        let none = Undone {
            applied: 0,
            failed: Vec::new(),
        };
        assert_eq!(none.to_string(), "nothing had been applied yet");
    }

    #[test]
    fn the_plan_is_a_function_of_the_discovery() {
        let (i, m) = eni(3, "198.18.0.11/24");
        let mut d = Discovery::fixture(vec![i], Vec::new());
        let cfg = Config {
            connmark: true,
            ..Config::default()
        };
        let rp_filter = |d: &Discovery| {
            let plan = compute(d, std::slice::from_ref(&m), &cfg).unwrap();
            plan.changes.into_iter().find_map(|c| match c {
                Change::Sysctl { key, new, .. } if key.knob() == Knob::RpFilter => Some(new),
                _ => None,
            })
        };
        d.all_rp_filter = Ok(0);
        assert_eq!(rp_filter(&d), None, "loose or off: left alone");
        d.all_rp_filter = Ok(1);
        assert_eq!(
            rp_filter(&d).as_deref(),
            Some("2"),
            "strict everywhere: loosened"
        );
        d.all_rp_filter = Err("reading /proc/sys/net/ipv4/conf/all/rp_filter: EACCES".into());
        let err = compute(&d, std::slice::from_ref(&m), &cfg).unwrap_err();
        assert!(format!("{err:#}").contains("EACCES"), "{err:#}");

        assert!(
            connmark_change(&d, std::slice::from_ref(&m), &cfg, None).is_err(),
            "planned the table without reading it"
        );
        d.nft = Some(None);
        let change = connmark_change(&d, std::slice::from_ref(&m), &cfg, None).unwrap();
        assert!(
            matches!(change, Some(Change::Connmark { old: None, new: Some(ref t) }) if t.marks.len() == 1),
            "{change:?}"
        );
        d.nft = Some(
            Connmark::desired(std::slice::from_ref(&m), cfg.connmark_mask)
                .0
                .into(),
        );
        let change = connmark_change(&d, std::slice::from_ref(&m), &cfg, None).unwrap();
        assert_eq!(change, None, "in place: nothing to do");
    }
}
