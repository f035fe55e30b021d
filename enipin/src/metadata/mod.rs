//! Cloud metadata (`--metadata aws`, off by default): the secondary addresses and delegated
//! prefixes a cloud assigns each ENI, which nothing else configures on a host without the
//! cloud's own tools. Netlink stays the source of truth for what is on the host; metadata only
//! adds to it.
//!
//! Never destructive: a lookup that fails in any way (timeout, refused, 5xx, a body that does
//! not parse, a key not propagated yet) makes that ENI's metadata *unknown*, and an unknown ENI
//! keeps its last known metadata ([`Tracker`]): nothing is removed because the service failed
//! (amazon-ec2-net-utils#161, #115, #117 deleted their users' configuration that way). Failures
//! are retried with jittered exponential backoff, logged once per outage and once on recovery.
//!
//! [`Source`] is one variant per cloud, each answering "which ENIs" and "what one ENI has" in
//! the shared [`EniMetadata`]. Only AWS (IMDSv2, [`aws`]) is implemented; GCP (`Metadata-Flavor:
//! Google`, JSON under `/computeMetadata/v1/instance/network-interfaces/`) and Azure (`Metadata:
//! true`, JSON from `/metadata/instance/network`) fit as further variants. systemd's own
//! metadata service (`systemd-imdsd`, systemd 261) could become one too, later.

pub(crate) mod aws;
mod merge;
mod refresher;
pub(crate) mod transport;
mod validate;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

pub(crate) use merge::merge;
pub use refresher::Refresher;
pub use transport::Outcomes;

use tracing::{info, warn};

use crate::{
    model::{Cidr, MacAddr, fmt_mac},
    settings::config::{Config, MetadataSource},
};

/// What the cloud says one ENI has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EniMetadata {
    /// The ENI's MAC: how metadata and netlink name the same interface.
    pub mac: MacAddr,
    /// `eni-...`.
    pub interface_id: String,
    /// The ENI's attachment index (0: the primary ENI).
    pub device_number: u32,
    /// The network card (`None`: a single-card instance does not say).
    pub network_card: Option<u32>,
    /// Private IPv4 addresses, the primary first.
    pub ipv4s: Vec<Ipv4Addr>,
    /// IPv6 addresses.
    pub ipv6s: Vec<Ipv6Addr>,
    /// Delegated prefixes (an IPv4 /28, an IPv6 /80), networks.
    pub prefixes: Vec<Cidr>,
    /// The subnet's IPv4 block and IPv6 blocks.
    pub subnets: Vec<Cidr>,
}

impl EniMetadata {
    /// Every address the ENI is assigned, IPv4 then IPv6.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4s
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.ipv6s.iter().map(|a| IpAddr::V6(*a)))
    }
}

/// One ENI's lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The service answered every key.
    Known(EniMetadata),
    /// It did not (the reason, for the log): nothing may be concluded about the ENI.
    Unknown(String),
}

/// A cloud's metadata service.
pub(crate) enum Source {
    /// EC2's IMDSv2.
    Aws(aws::Aws),
}

impl Source {
    /// The MACs of the instance's ENIs and the primary ENI's.
    async fn macs(&mut self) -> Result<(Vec<MacAddr>, MacAddr), String> {
        match self {
            Source::Aws(a) => a.macs().await,
        }
    }

    async fn eni(&mut self, mac: MacAddr, primary: bool) -> Lookup {
        match self {
            Source::Aws(a) => match a.eni(mac, primary).await {
                Ok(m) => Lookup::Known(m),
                Err(e) => Lookup::Unknown(e),
            },
        }
    }

    /// Requests sent so far, and by outcome.
    fn sent(&self) -> (u64, Outcomes) {
        match self {
            Source::Aws(a) => (a.http.sent, a.http.outcomes),
        }
    }
}

/// Retry pacing after failures: 1 s doubling to 60 s, each delay drawn from its upper half so
/// hosts that failed together do not retry together.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
    /// The latest failure (what a view reports; the first one is logged when it happens).
    last: String,
}

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Backoff {
    fn waiting(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// Records a failure; returns whether it starts an outage (to be logged).
    fn failed(&mut self, now: Instant, reason: String) -> bool {
        self.failures += 1;
        let full = BACKOFF_FIRST
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(BACKOFF_MAX);
        let delay = full / 2 + full.mul_f64(fastrand::f64() / 2.0);
        self.until = Some(now + delay);
        self.last = reason;
        self.failures == 1
    }

    /// Records a success; returns the failures it ends (0: there was no outage).
    fn succeeded(&mut self) -> u32 {
        std::mem::take(self).failures
    }
}

/// One pass over the ENIs: for each MAC asked about, its metadata as known now or last known,
/// or nothing (never known, or not an ENI of this instance).
#[derive(Clone, Debug, Default)]
pub struct View {
    /// MAC → the metadata to use (fresh or last known).
    pub known: BTreeMap<MacAddr, EniMetadata>,
    /// MAC → why it is unknown now (also set when a last known state stands in for it).
    pub unknown: BTreeMap<MacAddr, String>,
    /// Requests this pass sent.
    pub requests: u64,
    /// Those requests by outcome.
    pub outcomes: Outcomes,
    /// Entries the last lookup of these ENIs listed that no ENI can own, left out.
    pub refused: usize,
    /// The MACs this pass was about: the candidate interfaces'.
    pub wanted: Vec<MacAddr>,
}

impl View {
    /// Whether `other` would plan differently: what is known, or what is left out.
    pub fn differs(&self, other: &View) -> bool {
        self.known != other.known || self.refused != other.refused
    }
}

/// Which ENIs a refresh asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every wanted ENI not backing off: the periodic refresh.
    All,
    /// Only the wanted ENIs never asked about (a hot-plugged ENI): the others keep what is known.
    New,
}

/// Where a pass takes its metadata from.
pub enum Use<'a> {
    /// Ask the service now (`attach`, `status`, the watcher's first pass).
    Ask(&'a mut Tracker),
    /// What the last refresh said: a repair asks the service nothing.
    Last(&'a View),
}

/// The metadata client across passes: the source, the last known metadata of every ENI, and
/// the backoff of what failed.
pub struct Tracker {
    source: Source,
    /// The metadata service's addresses: never an ENI's.
    endpoints: Vec<IpAddr>,
    last: BTreeMap<MacAddr, EniMetadata>,
    /// The listing of ENIs (and the token): when it fails, every ENI is unknown.
    listing: Backoff,
    enis: BTreeMap<MacAddr, Backoff>,
    /// Per ENI, the entries its last lookup listed that no ENI can own.
    refused: BTreeMap<MacAddr, usize>,
    /// The instance's MACs and the primary's, as last listed.
    macs: Option<(Vec<MacAddr>, MacAddr)>,
}

/// `--metadata auto` made concrete from this machine's DMI, with a line saying what it found.
fn auto(source: MetadataSource) -> MetadataSource {
    if source != MetadataSource::Auto {
        return source;
    }
    let found = crate::kernel::dmi::machine_cloud();
    let on = source.on(found.as_ref().map(|c| c.cloud));
    match (&found, on) {
        (None, _) => log::info!("--metadata auto: no cloud in this machine's DMI; netlink alone"),
        (Some(c), MetadataSource::Aws) => log::info!(
            "--metadata auto: {} ({}): reading its instance metadata",
            c.cloud.name(),
            c.evidence
        ),
        (Some(c), _) => log::warn!(
            "--metadata auto: {} ({}): enipin reads only EC2's metadata so far; netlink alone",
            c.cloud.name(),
            c.evidence
        ),
    }
    on
}

impl Tracker {
    /// The tracker `cfg` asks for (`None` without `--metadata`, or `auto` off EC2).
    pub fn new(cfg: &Config) -> Option<Self> {
        let (source, endpoints) = match auto(cfg.metadata) {
            MetadataSource::None | MetadataSource::Auto => return None,
            MetadataSource::Aws => {
                let aws = aws::Aws::new(cfg.metadata_endpoint.as_deref());
                let endpoints = validate::endpoint_addrs(aws.endpoints());
                (Source::Aws(aws), endpoints)
            }
        };
        Some(Self {
            source,
            endpoints,
            last: BTreeMap::new(),
            listing: Backoff::default(),
            enis: BTreeMap::new(),
            refused: BTreeMap::new(),
            macs: None,
        })
    }

    /// Looks the ENIs among `wanted` up (those the instance lists; others are no ENIs of its),
    /// except those backing off (and with [`Scope::New`], those asked about before); an ENI
    /// that fails keeps its last known metadata.
    pub async fn refresh(&mut self, wanted: &[MacAddr], scope: Scope) -> View {
        let start = self.source.sent();
        let now = Instant::now();
        let mut view = View {
            wanted: wanted.to_vec(),
            ..View::default()
        };
        let asked = |t: &Self, m: &MacAddr| match scope {
            Scope::All => t.enis.get(m).is_some_and(|b| b.waiting(now)),
            Scope::New => t.enis.contains_key(m) || t.last.contains_key(m),
        };
        // The listing is needed only for ENIs that are due (or before the first one).
        let due = wanted.iter().any(|m| !asked(self, m));
        if !self.listing.waiting(now) && (due || self.macs.is_none()) {
            self.list().await;
        }
        let Some((listed, primary)) = self.macs.clone() else {
            for mac in wanted {
                self.stand_in(&mut view, *mac, &self.listing.last.clone());
            }
            return self.counted(view, start);
        };
        for mac in wanted {
            if !listed.contains(mac) {
                continue;
            }
            if asked(self, mac) {
                self.recall(&mut view, *mac);
                continue;
            }
            match self.source.eni(*mac, *mac == primary).await {
                Lookup::Known(m) => {
                    let (m, refused) = m.validated(&self.endpoints);
                    self.refused.insert(*mac, refused.len());
                    for r in refused {
                        warn!(
                            "metadata lists {} for {}, which no ENI can own ({}): left out, \
                             never configured",
                            r.addr,
                            fmt_mac(mac),
                            r.why
                        );
                    }
                    let ended = self.enis.entry(*mac).or_default().succeeded();
                    if ended > 0 {
                        info!(
                            "metadata: {} known again after {ended} failed attempt(s)",
                            fmt_mac(mac)
                        );
                    }
                    self.last.insert(*mac, m.clone());
                    view.known.insert(*mac, m);
                }
                Lookup::Unknown(e) => {
                    if self
                        .enis
                        .entry(*mac)
                        .or_default()
                        .failed(Instant::now(), e.clone())
                    {
                        warn!(
                            "metadata of {} unknown ({e}); keeping its last known metadata \
                             and retrying with backoff (said once until it answers)",
                            fmt_mac(mac)
                        );
                    }
                    self.stand_in(&mut view, *mac, &e);
                }
            }
        }
        self.counted(view, start)
    }

    /// Lists the instance's ENIs (and takes a token): every ENI is unknown when this fails.
    async fn list(&mut self) {
        match self.source.macs().await {
            Ok(m) => {
                let ended = self.listing.succeeded();
                if ended > 0 {
                    info!("metadata: the service answers again after {ended} failed attempt(s)");
                }
                self.macs = Some(m);
            }
            Err(e) => {
                if self.listing.failed(Instant::now(), e.clone()) {
                    warn!(
                        "metadata unknown ({e}); keeping every ENI's last known metadata and \
                         retrying with backoff (said once until it answers)"
                    );
                }
                self.macs = None;
            }
        }
    }

    /// `view` with the requests sent since `start` and what its ENIs' last lookups left out.
    fn counted(&self, mut view: View, (start, before): (u64, Outcomes)) -> View {
        let (sent, outcomes) = self.source.sent();
        view.requests = sent - start;
        view.outcomes = outcomes.since(before);
        view.refused = (view.wanted.iter())
            .filter_map(|m| self.refused.get(m))
            .sum();
        view
    }

    /// `mac` is not asked about this time: what is known of it stands, and so does its failure.
    fn recall(&self, view: &mut View, mac: MacAddr) {
        match self.enis.get(&mac).filter(|b| b.failures > 0) {
            Some(b) => self.stand_in(view, mac, &b.last),
            None => {
                if let Some(m) = self.last.get(&mac) {
                    view.known.insert(mac, m.clone());
                }
            }
        }
    }

    /// `mac` is unknown now: its last known metadata stands in, if there is one.
    fn stand_in(&self, view: &mut View, mac: MacAddr, why: &str) {
        view.unknown.insert(mac, why.to_owned());
        if let Some(m) = self.last.get(&mac) {
            view.known.insert(mac, m.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_logs_once() {
        let now = Instant::now();
        let mut b = Backoff::default();
        assert!(!b.waiting(now));
        for n in 0..10u32 {
            assert_eq!(b.failed(now, format!("fault {n}")), n == 0);
            let full = BACKOFF_FIRST.saturating_mul(1 << n).min(BACKOFF_MAX);
            let delay = b.until.unwrap() - now;
            assert!(
                delay >= full / 2 && delay <= full,
                "{n}: {delay:?} of {full:?}"
            );
            assert!(b.waiting(now));
        }
        assert_eq!(b.last, "fault 9", "the latest failure is the one reported");
        assert_eq!(b.succeeded(), 10);
        assert!(!b.waiting(now));
        assert_eq!(b.succeeded(), 0);
    }
}
