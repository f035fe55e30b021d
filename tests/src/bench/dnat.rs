//! Section `dnat`: the replies of a DNAT'd service, the redirect's hot case (`docker run -p
//! <secondary-ip>:...`, a kube NodePort). The host routes such a reply while its source is
//! still the container's address, so enipin's `from <ip>` rules never match: the main table sends
//! it out of the primary, POSTROUTING rewrites its source back to the published address, and
//! only then does the TC egress program see a misrouted frame.
//!
//! The bed is the lab's seed network (`enipin::lab::Topology`, IPv4) plus a "container": its own
//! namespace behind a veth from the host (vethctr0 198.19.1.1 / eth0 198.19.1.2), the host
//! forwarding, and nftables DNAT of UDP port [`PORT`] on both ENIs' addresses to it. One
//! measurement: the peer sends one datagram to `<address>:PORT` (conntrack's entry, DNAT'd to
//! the container), then the container floods 64-byte frames from its port back to the peer's
//! port (the connection's reply direction), counted where the peer receives them (its eth0 rx
//! counter), with the container's sending thread's CPU time per frame. That thread carries each
//! frame through the host's forwarding, NAT and TC egress in its own softirqs, as the datapath
//! section's sender does.
//!
//! Cases per round ([`CASES`], reversed on odd rounds), each with its own attach and detach:
//! published on the primary's address (its replies leave by eth0 by the main table: the
//! baseline); published on the secondary's address with plain `attach` (every reply is fixed by
//! the redirect, with the next hop from the owner's table since the owner forwards); published on
//! the secondary's address with `attach --connmark` (nftables puts the connection's mark, the
//! interface it arrived on, on its replies in prerouting, and a `fwmark` rule routes them out of
//! their owner up front: nothing left to redirect); published on the primary's address with
//! `attach --connmark` (what the marking costs replies that needed no fix). Every case checks that the vpc's source check
//! dropped nothing, that no redirect failed, and that the misrouted counter grew exactly when the
//! case says its replies are redirected.
//!
//! Its own section, not the datapath's: another bed (a forwarding host with a container) and
//! another sender (forwarded replies, not a local socket), and `--only dnat` measures a change to
//! the reply path in about a minute without the datapath's TCP and UDP runs.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use enipin::{
    lab::testbed::{self, Dirs, Netns},
    lab::{Spec, Topology},
};

use super::{
    Row, Target,
    datapath::{UDP_PAYLOAD, flood, ip_drops, misrouted, rx_packets},
    median,
};
use crate::in_ns;

/// The published service's port, on the host's addresses and in the container.
const PORT: u16 = 7000;
const CTR_GW: &str = "198.19.1.1";
const CTR: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 2);
const SECTION: &str = "dnat";
const METRIC: &str = "UDP 64 B DNAT'd replies";

/// One case: where the service is published, how enipin is attached, whether its replies must
/// take the redirect, and the rows it reports against the baseline ([`CASES`]`[0]`).
struct Case {
    /// Index of the ENI (in `Spec::enis`) whose primary address the service is published on.
    published_on: usize,
    /// `enipin` arguments, `--interfaces eth0,eth1` appended.
    attach: &'static [&'static str],
    /// Every reply leaves by the wrong ENI and is fixed by the redirect (the misrouted counter
    /// must grow); otherwise it must not grow.
    redirected: bool,
    /// What the case is, in its rows.
    what: &'static str,
    /// The target of its rate against the baseline's.
    target: Target,
}

/// The baseline first. The redirect's own target (>= 0.95 of the correct route) is the datapath
/// section's row; here its figure is informational, so the one target is not reported twice.
const CASES: &[Case] = &[
    Case {
        published_on: 0,
        attach: &["attach"],
        redirected: false,
        what: "published on the primary's address, correct route, `attach`",
        target: Target::None,
    },
    Case {
        published_on: 1,
        attach: &["attach"],
        redirected: true,
        what: "published on the secondary's address, `attach`: every reply misrouted, fixed by the redirect",
        target: Target::None,
    },
    // The connection's mark routes each reply out of its owner before POSTROUTING: no redirect.
    Case {
        published_on: 1,
        attach: &["attach", "--connmark"],
        redirected: false,
        what: "published on the secondary's address, `attach --connmark`: replies routed out of their owner by the connection's mark",
        target: Target::RatioAtLeast(0.95),
    },
    // What connmark costs a reply that needed no fix: the same service as the baseline, its
    // replies now marked in prerouting (the base chain, a jump, one rule) and routed by their
    // `fwmark` rule into the primary's own table.
    Case {
        published_on: 0,
        attach: &["attach", "--connmark"],
        redirected: false,
        what: "published on the primary's address, correct route, `attach --connmark`: its replies marked too",
        target: Target::None,
    },
];

pub fn run(quick: bool, rounds: usize) -> Result<Vec<Row>> {
    enipin::lab::preflight()?;
    // As the datapath section: throughput on a shared 2-core machine swings, twice the rounds.
    let (secs, rounds) = if quick {
        (0.5, rounds)
    } else {
        (1.5, 2 * rounds)
    };
    let bed = Bed::build()?;
    // (rate in frames/s, CPU per frame in ns) per case, per round.
    let mut runs: Vec<Vec<(f64, f64)>> = CASES.iter().map(|_| Vec::new()).collect();
    bed.measure(&CASES[0], secs)?; // warm-up
    for round in 0..rounds {
        // Odd rounds run the cases in reverse order, so a drift in the machine's load does not
        // always favour the same case.
        let mut order: Vec<usize> = (0..CASES.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            runs[i].push(bed.measure(&CASES[i], secs)?);
        }
    }
    Ok(rows(&runs))
}

/// The baseline's rate, then per other case its rate and its CPU per frame against the
/// baseline's. Ratios are paired: the median of each round's ratio.
fn rows(runs: &[Vec<(f64, f64)>]) -> Vec<Row> {
    let split = |v: &[(f64, f64)]| -> (Vec<f64>, Vec<f64>) {
        v.iter().map(|&(r, c)| (r * 1e-3, c)).unzip()
    };
    let per_round = |x: &[f64], base: &[f64]| {
        median(&x.iter().zip(base).map(|(x, b)| x / b).collect::<Vec<_>>())
    };
    let (base, base_cpu) = split(&runs[0]);
    let mut rows = vec![Row::value(
        SECTION,
        &format!("{METRIC}: {}", CASES[0].what),
        median(&base),
        "kpps",
    )];
    for (case, run) in CASES.iter().zip(runs).skip(1) {
        let (rate, cpu) = split(run);
        rows.push(Row {
            ratio: Some(per_round(&rate, &base)),
            ..Row::ratio(
                SECTION,
                &format!(
                    "{METRIC}: {} (vs published on the primary's address)",
                    case.what
                ),
                median(&rate),
                median(&base),
                "kpps",
                case.target,
            )
        });
        rows.push(Row {
            ratio: Some(per_round(&cpu, &base_cpu)),
            ..Row::ratio(
                SECTION,
                &format!(
                    "{METRIC}: sender CPU per frame, {} vs published on the primary's address (lower is better)",
                    case.what
                ),
                median(&cpu),
                median(&base_cpu),
                "ns",
                Target::None,
            )
        });
    }
    rows
}

/// The lab's network with a container behind the host, its service published on both ENIs.
struct Bed {
    // Dropped before the topology: its veth end in the host goes with it.
    ctr: Netns,
    topo: Topology,
}

impl Bed {
    fn build() -> Result<Self> {
        let topo = Topology::build_with(Spec {
            ipv6: false,
            ..Spec::default()
        })?;
        let host = topo.host();
        let ctr = testbed::container(host, "ebn-ctr-", CTR_GW, &CTR.to_string(), 24)?;
        // Forwarding on every interface, as on a Docker host: the owners forward, so a redirect
        // with the rules installed takes its next hop from the owner's table.
        host.sysctl("net.ipv4.ip_forward", "1")?;
        let published: Vec<String> = topo.spec.enis.iter().map(|e| e.v4[0].to_string()).collect();
        host.sh(&format!(
            "nft -f - <<'EOF'\n\
             table ip publish {{\n\
               chain pre {{ type nat hook prerouting priority dstnat; \
                 ip daddr {{ {} }} udp dport {PORT} dnat to {CTR}; }}\n\
             }}\n\
             EOF",
            published.join(", ")
        ))
        .context("nftables DNAT in the host")?;
        // Neighbours resolved before anything is measured: each ENI's own echo to the peer
        // (bound to it, from its address: answered through the vpc) resolves the peer on it and
        // the ENI's address at the peer; the container's resolves its gateway.
        let peer = topo.spec.peer_v4.to_string();
        for name in topo.eni_names() {
            let out = host
                .ping_command(&["-I", name, &peer], 1)
                .output()
                .context("running ping")?;
            ensure!(
                out.status.success(),
                "the bench network does not pass {name} -> {peer}"
            );
        }
        ensure!(
            ctr.ping(CTR_GW, 1)?,
            "the container cannot reach the host ({CTR_GW})"
        );
        Ok(Self { ctr, topo })
    }

    /// One case's attach, measurement and detach: (frames/s the peer received, the container's
    /// sending thread's CPU time per frame sent in ns), after the case's checks.
    fn measure(&self, case: &Case, secs: f64) -> Result<(f64, f64)> {
        let host = self.topo.host();
        let dirs = Dirs::new("ebn-")?;
        let enipin = |args: &[&str]| -> Result<()> {
            let bin = crate::enipin_bin();
            let mut cmd = testbed::enipin_command(&bin, host.name(), &dirs.paths(), args);
            super::run_measured(&mut cmd)?.ok().map(drop)
        };
        let names = self.topo.eni_names().join(",");
        enipin(&[case.attach, &["--interfaces", &names]].concat())?;
        let measured = self.checked(case, &dirs, secs);
        enipin(&["detach"])?;
        measured
    }

    fn checked(&self, case: &Case, dirs: &Dirs, secs: f64) -> Result<(f64, f64)> {
        let address = self.topo.spec.enis[case.published_on].v4[0];
        let drops = ip_drops(&self.topo)?;
        let before = misrouted(dirs)?;
        let r = self.replies(address, secs)?;
        let after = misrouted(dirs)?;
        ensure!(
            after.1 == before.1,
            "{} redirects failed during the run ({})",
            after.1 - before.1,
            case.what
        );
        let grew = after.0 - before.0;
        if case.redirected {
            ensure!(
                grew > 0,
                "nothing was misrouted: the redirected case measured nothing ({})",
                case.what
            );
        } else {
            ensure!(
                grew == 0,
                "{grew} replies were misrouted where none should be ({})",
                case.what
            );
        }
        ensure!(
            ip_drops(&self.topo)? == drops,
            "the source check dropped replies published on {address} ({})",
            case.what
        );
        Ok(r)
    }

    /// The peer's one datagram to `address:PORT`, then the container's reply flood for `secs`:
    /// (frames/s the peer's eth0 received, the flood's CPU time per frame in ns).
    fn replies(&self, address: Ipv4Addr, secs: f64) -> Result<(f64, f64)> {
        let peer = self.topo.peer();
        // A fresh port per measurement, a fresh conntrack entry (the old ones expire on their
        // own). Bound and never read after the first datagram: the flood is dropped at its full
        // queue, with no ICMP port-unreachable back through the NAT.
        let sink = in_ns(peer, || {
            UdpSocket::bind(SocketAddrV4::new(self.topo.spec.peer_v4, 0))
        })?;
        let service = in_ns(&self.ctr, || {
            UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
        })?;
        service.set_read_timeout(Some(Duration::from_secs(2)))?;
        sink.send_to(&[0u8; UDP_PAYLOAD], SocketAddrV4::new(address, PORT))?;
        let mut buf = [0u8; 64];
        let (_, from) = service
            .recv_from(&mut buf)
            .with_context(|| format!("the peer's datagram to {address}:{PORT} never reached the container: is the DNAT in place?"))?;
        ensure!(
            from == sink.local_addr()?,
            "the container got {from}, not the peer's {}: an unexpected NAT",
            sink.local_addr()?
        );
        // The connection's reply direction: the host translates its source back to `address`.
        service.connect(from)?;
        let before = rx_packets(peer, "eth0")?;
        let (n, took, cpu) = flood(&service, secs)?;
        // Let the last batches drain through the bridge before counting.
        std::thread::sleep(Duration::from_millis(50));
        let received = rx_packets(peer, "eth0")? - before;
        ensure!(
            received > 0 && n > 0,
            "no reply published on {address} reached the peer"
        );
        Ok((received as f64 / took, cpu))
    }
}
