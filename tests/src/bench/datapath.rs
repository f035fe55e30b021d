//! Section 2: the datapath in namespaces, on the lab's seed network (`enipin::lab::Topology`:
//! host eth0 .10 / eth1 .11, a bridge with the cloud's source checks in nftables, a peer .100).
//!
//! Three cases per round, in this order: no program; program attached, traffic from eth0's own
//! address (correctly routed: the program passes it); traffic from eth1's address, which the main
//! table sends out of eth0 (misrouted: without the program the source check drops it; the program
//! redirects it onto eth1). `attach --no-rules`, so the redirect alone fixes it, with the kernel's
//! full route lookup. Every redirected run must show misrouted packets in the counters, no failed
//! redirect, and no source-check drop. The source checks cost the same in every case.
//!
//! UDP also runs a fourth and fifth case per round with the rules installed (plain `attach`):
//! the program then takes the redirect's next hop from eth1's own table. The rules route eth1's
//! address out of eth1, so the sockets bind to eth0 (`SO_BINDTODEVICE`) for the misroute, as a
//! DNAT'd reply is routed before its source is rewritten; the correct case binds to eth0 too.
//! eth1 forwards, as on a host with Docker: `bpf_fib_lookup` answers only for such interfaces.
//!
//! - TCP: iperf3, one flow, bits/s received.
//! - UDP: 64-byte frames (18-byte payload) from a `sendmmsg` loop, counted where the peer
//!   receives them (its eth0 rx counter). iperf3 sends one packet per syscall plus its own
//!   bookkeeping, about 0.1 Mpps here: the syscall, not the datapath, would be measured. Batches
//!   of 64 per syscall leave the per-packet path (UDP, TC egress, veth, bridge, nft, peer's rx) as
//!   the bottleneck, which is what the program adds to.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd as _,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use enipin::{
    lab::Topology,
    lab::testbed::{self, Dirs, Netns, PinDir},
};

use super::{KillOnDrop, Row, Target, median};
use crate::in_ns;

pub(super) const UDP_PAYLOAD: usize = 64 - 14 - 20 - 8 - 4; // a 64-byte frame with its FCS
const BATCH: usize = 64;

pub fn run(quick: bool, rounds: usize) -> Result<Vec<Row>> {
    enipin::lab::preflight()?;
    // Throughput on a shared 2-core machine swings more than the cost does: twice the rounds.
    let (secs, rounds) = if quick {
        (0.5, rounds)
    } else {
        (1.5, 2 * rounds)
    };
    let topo = Topology::build()?;
    // The secondary's ENI forwards, as on a host with Docker (bpf_fib_lookup, the next hop of a
    // redirect with the rules installed, answers only for forwarding interfaces). The bench's
    // own namespace; locally sent traffic is unchanged by it.
    for family in ["ipv4", "ipv6"] {
        topo.host().sysctl(
            &format!("net.{family}.conf.{}.forwarding", topo.spec.enis[1].name),
            "1",
        )?;
    }
    let src_ok = topo.spec.enis[0].v4[0];
    let src_mis = topo.spec.enis[1].v4[0];
    let peer = topo.spec.peer_v4;
    // Neighbours resolved before anything is measured; the primary works without enipin.
    ensure!(
        ping_from(topo.host(), peer, src_ok)?,
        "the bench network does not pass {src_ok} -> {peer}"
    );
    let mut rows = Vec::new();
    for udp in [false, true] {
        let (metric, unit, scale) = if udp {
            ("UDP 64 B frames", "kpps", 1e-3)
        } else {
            ("TCP, 1 flow", "Gbit/s", 1e-9)
        };
        // (rate, the sender thread's CPU time per frame: UDP only, NaN for TCP).
        let measure = |src: Ipv4Addr| -> Result<(f64, f64)> {
            Ok(if udp {
                let (rate, cpu) = udp_rate(&topo, src, None, secs)?;
                (scale * rate, cpu)
            } else {
                (scale * tcp_rate(&topo, src, secs)?, f64::NAN)
            })
        };
        let (mut none, mut noop, mut attached, mut redirected) = (vec![], vec![], vec![], vec![]);
        // UDP with the rules installed: (correct, misrouted), both bound to eth0.
        let (mut ruled, mut ruled_redirected) = (vec![], vec![]);
        measure(src_ok)?; // warm-up
        for round in 0..rounds {
            // Odd rounds run the cases in reverse order, so a drift in the machine's load does
            // not always favour the same case.
            let reverse = round % 2 == 1;
            if !reverse {
                none.push(measure(src_ok)?);
                noop.push(with_noop(&topo, || measure(src_ok))?);
            }
            let dirs = Dirs::new("ebd-")?;
            let enipin = |args: &[&str]| -> Result<()> {
                let bin = crate::enipin_bin();
                let mut cmd =
                    testbed::enipin_command(&bin, topo.host().name(), &dirs.paths(), args);
                super::run_measured(&mut cmd)?.ok().map(drop)
            };
            let checked = |measure: &dyn Fn() -> Result<(f64, f64)>| -> Result<(f64, f64)> {
                let drops = ip_drops(&topo)?;
                let before = misrouted(&dirs)?;
                let r = measure()?;
                let after = misrouted(&dirs)?;
                ensure!(
                    after.1 == before.1,
                    "{} redirects failed during the run",
                    after.1 - before.1
                );
                ensure!(
                    after.0 > before.0,
                    "nothing was misrouted: the redirected case measured nothing"
                );
                ensure!(
                    ip_drops(&topo)? == drops,
                    "the source check dropped packets the redirect should have fixed"
                );
                Ok(r)
            };
            if udp {
                enipin(&["attach"])?;
                let bound = |src| udp_rate(&topo, src, Some(topo.spec.enis[0].name.as_str()), secs);
                let measured = (|| -> Result<((f64, f64), (f64, f64))> {
                    // Resolves the peer on eth1 (the rules route the secondary's traffic there).
                    ensure!(
                        ping_from(topo.host(), peer, src_mis)?,
                        "{src_mis} -> {peer} fails with the rules installed"
                    );
                    let to_unit = |(r, c): (f64, f64)| (scale * r, c);
                    if reverse {
                        let r = checked(&|| bound(src_mis).map(to_unit))?;
                        Ok((bound(src_ok).map(to_unit)?, r))
                    } else {
                        let a = bound(src_ok).map(to_unit)?;
                        Ok((a, checked(&|| bound(src_mis).map(to_unit))?))
                    }
                })();
                enipin(&["detach"])?;
                let (a, r) = measured?;
                ruled.push(a);
                ruled_redirected.push(r);
            }
            enipin(&["attach", "--no-rules"])?;
            let measured = (|| -> Result<((f64, f64), (f64, f64))> {
                // The secondary's traffic works only through the redirect (and its neighbours
                // get resolved here, not during the measurement).
                ensure!(
                    ping_from(topo.host(), peer, src_mis)?,
                    "{src_mis} -> {peer} fails with the program attached"
                );
                let correct = || measure(src_ok);
                let fixed = || checked(&|| measure(src_mis));
                if reverse {
                    let r = fixed()?;
                    Ok((correct()?, r))
                } else {
                    let a = correct()?;
                    Ok((a, fixed()?))
                }
            })();
            enipin(&["detach"])?;
            let (a, r) = measured?;
            attached.push(a);
            redirected.push(r);
            if reverse {
                noop.push(with_noop(&topo, || measure(src_ok))?);
                none.push(measure(src_ok)?);
            }
        }
        // Ratios are paired: the median of each round's ratio, not the ratio of the medians.
        let per_round = |x: &[f64], base: &[f64]| {
            median(&x.iter().zip(base).map(|(x, b)| x / b).collect::<Vec<_>>())
        };
        let split = |v: Vec<(f64, f64)>| -> (Vec<f64>, Vec<f64>) { v.into_iter().unzip() };
        let (none, none_cpu) = split(none);
        let (noop, noop_cpu) = split(noop);
        let (attached, attached_cpu) = split(attached);
        let (redirected, redirected_cpu) = split(redirected);
        let (r_attached, r_redirected) = (
            per_round(&attached, &none),
            per_round(&redirected, &attached),
        );
        let r_noop = per_round(&noop, &none);
        let r_over_noop = per_round(&attached, &noop);
        let (none, attached, redirected) = (median(&none), median(&attached), median(&redirected));
        let noop = median(&noop);
        rows.push(Row::value(
            "datapath",
            &format!("{metric}: no program"),
            none,
            unit,
        ));
        rows.push(Row {
            ratio: Some(r_noop),
            ..Row::ratio(
                "datapath",
                &format!(
                    "{metric}: empty classifier attached (the TCX hook's own cost, vs no program)"
                ),
                noop,
                none,
                unit,
                Target::None,
            )
        });
        rows.push(Row {
            ratio: Some(r_attached),
            ..Row::ratio(
                "datapath",
                &format!("{metric}: program attached, correct route (vs no program)"),
                attached,
                none,
                unit,
                Target::RatioAtLeast(0.98),
            )
        });
        // enipin's own cost apart from the hook's: against the empty classifier on the same hook.
        rows.push(Row {
            ratio: Some(r_over_noop),
            ..Row::ratio(
                "datapath",
                &format!("{metric}: program attached, correct route (vs empty classifier)"),
                attached,
                noop,
                unit,
                Target::RatioAtLeast(0.99),
            )
        });
        rows.push(Row {
            ratio: Some(r_redirected),
            ..Row::ratio(
                "datapath",
                &format!("{metric}: misrouted, fixed by the redirect (vs correct route)"),
                redirected,
                attached,
                unit,
                Target::RatioAtLeast(0.95),
            )
        });
        if udp {
            let (ruled, ruled_cpu) = split(ruled);
            let (ruled_redirected, ruled_redirected_cpu) = split(ruled_redirected);
            rows.push(Row {
                ratio: Some(per_round(&ruled_redirected, &ruled)),
                ..Row::ratio(
                    "datapath",
                    &format!(
                        "{metric}: rules installed, misrouted, fixed by the redirect with the next hop from the owner's table (vs correct route)"
                    ),
                    median(&ruled_redirected),
                    median(&ruled),
                    unit,
                    Target::RatioAtLeast(0.95),
                )
            });
            rows.push(Row {
                ratio: Some(per_round(&ruled_redirected_cpu, &ruled_cpu)),
                ..Row::ratio(
                    "datapath",
                    &format!(
                        "{metric}: sender CPU per frame, rules installed, misrouted, fixed by the redirect with the next hop, vs correct route (lower is better)"
                    ),
                    median(&ruled_redirected_cpu),
                    median(&ruled_cpu),
                    "ns",
                    Target::None,
                )
            });
            // The same cases as CPU time per frame, lower is better: the sender's thread runs the
            // whole path of a frame (UDP, TC egress, veth, bridge, nft, the peer's receive) in
            // its own context and softirqs, charged to it on a kernel without
            // CONFIG_IRQ_TIME_ACCOUNTING (this one). Unlike a rate, it does not fall when other
            // work takes the CPUs from the sender (it still rises some with cache contention).
            for (case, x, base) in [
                (
                    "empty classifier attached vs no program",
                    &noop_cpu,
                    &none_cpu,
                ),
                (
                    "program attached, correct route, vs empty classifier",
                    &attached_cpu,
                    &noop_cpu,
                ),
                (
                    "misrouted, fixed by the redirect, vs correct route",
                    &redirected_cpu,
                    &attached_cpu,
                ),
            ] {
                rows.push(Row {
                    ratio: Some(per_round(x, base)),
                    ..Row::ratio(
                        "datapath",
                        &format!("{metric}: sender CPU per frame, {case} (lower is better)"),
                        median(x),
                        median(base),
                        "ns",
                        Target::None,
                    )
                });
            }
        }
    }
    Ok(rows)
}

/// Runs `f` with `enipin_noop` (returns at once) attached with TCX to every host ENI's egress:
/// what any TC egress program costs before it does anything. Detached when its links drop.
fn with_noop<T>(topo: &Topology, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let pins = PinDir::new("ebd-noop")?;
    std::fs::create_dir(pins.path())?;
    let ifindexes: Vec<u32> = topo
        .eni_names()
        .iter()
        .map(|n| topo.host().ifindex(n))
        .collect::<Result<_>>()?;
    let bpf = in_ns(topo.host(), || -> Result<_> {
        // Its maps (unused) are pinned in a private bpffs, never under /sys/fs/bpf.
        let mut bpf = super::noop(pins.path())?;
        let prog: &mut aya::programs::SchedClassifier = bpf
            .program_mut(enipin_ebpf::NOOP_PROGRAM)
            .context("no noop program")?
            .try_into()?;
        for &ifindex in &ifindexes {
            prog.attach(ifindex, aya::programs::TcAttachType::Egress)?;
        }
        Ok(bpf)
    })?;
    let r = f();
    drop(bpf);
    r
}

/// IP packets the vpc's source check dropped for a wrong source address or MAC (ARP is left
/// out: with a stock host's arp_ignore=0, eth0 answers ARP for eth1's address, and that answer
/// is dropped legitimately).
pub(super) fn ip_drops(topo: &Topology) -> Result<u64> {
    Ok(topo.drops()?.by_eni.values().map(|d| d.ip + d.mac).sum())
}

/// (misrouted packets, failed redirects) summed over the interfaces.
pub(super) fn misrouted(dirs: &Dirs) -> Result<(u64, u64)> {
    let all = enipin::datapath::counters(&dirs.paths())?;
    Ok(all.iter().fold((0, 0), |(m, f), (_, c)| {
        (m + c.misrouted_packets, f + c.redirect_failed)
    }))
}

/// One ping from `src` to `dst`: whether it was answered.
fn ping_from(ns: &Netns, dst: Ipv4Addr, src: Ipv4Addr) -> Result<bool> {
    let out = ns
        .ping_command(&["-I", &src.to_string(), &dst.to_string()], 1)
        .output()
        .context("running ping")?;
    Ok(out.status.success())
}

/// One iperf3 TCP flow from `src` in the host to the peer, `secs` long: bits/s received.
fn tcp_rate(topo: &Topology, src: Ipv4Addr, secs: f64) -> Result<f64> {
    let port = (5201 + std::process::id() % 1000).to_string();
    let peer = topo.spec.peer_v4.to_string();
    let mut server = topo
        .peer()
        .command("iperf3")
        .args(["-s", "-1", "-B", &peer, "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning iperf3 (cargo xtask setup installs it)")?;
    let _reap = KillOnDrop(&mut server);
    // The server listens once its socket exists; retry the client briefly until then.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut cmd = topo.host().command("timeout");
        cmd.args([
            &format!("{:.0}", secs + 10.0),
            "iperf3",
            "-J",
            "-c",
            &peer,
            "-B",
            &src.to_string(),
        ]);
        // iperf3 takes whole seconds (and -t 0 means "forever").
        cmd.args([
            "-p",
            &port,
            "-t",
            &format!("{}", secs.ceil().max(1.0)),
            "-O",
            "0",
        ]);
        let out = cmd.output().context("running iperf3")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bps);
        }
        if Instant::now() > deadline {
            bail!(
                "iperf3 -c {peer} -B {src}: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 64-byte UDP frames from `src` in the host to the peer for `secs`, `BATCH` per sendmmsg, from
/// a socket bound to `dev` if given: frames/s the peer's interface received, and the sending
/// thread's CPU time per frame sent (ns).
fn udp_rate(topo: &Topology, src: Ipv4Addr, dev: Option<&str>, secs: f64) -> Result<(f64, f64)> {
    let dst = SocketAddrV4::new(
        topo.spec.peer_v4,
        9 + (std::process::id() % 1000) as u16 + 1000,
    );
    // A bound, never-read socket at the peer: packets are dropped at its full queue, with no
    // ICMP port-unreachable coming back to disturb the sender.
    let sink = in_ns(topo.peer(), || -> Result<_> { Ok(UdpSocket::bind(dst)?) })?;
    let rx = |ns: &Netns| rx_packets(ns, "eth0");
    let sent = in_ns(topo.host(), || -> Result<_> {
        let sock = UdpSocket::bind(SocketAddrV4::new(src, 0))?;
        if let Some(dev) = dev {
            bind_to_device(&sock, dev)?;
        }
        sock.connect(dst)?;
        let before = rx(topo.peer())?;
        let (n, took, cpu) = flood(&sock, secs)?;
        // Let the last batches drain through the bridge before counting.
        std::thread::sleep(Duration::from_millis(50));
        Ok((n, rx(topo.peer())? - before, took, cpu))
    })?;
    drop(sink);
    let (n, received, took, cpu) = sent;
    ensure!(
        received > 0 && n > 0,
        "no UDP frame from {src} reached the peer"
    );
    Ok((received as f64 / took, cpu))
}

/// `BATCH` 64-byte frames per `sendmmsg` on the connected `sock` for `secs`: (frames sent, the
/// seconds it took, the calling thread's CPU time per frame sent in ns).
pub(super) fn flood(sock: &UdpSocket, secs: f64) -> Result<(u64, f64, f64)> {
    let started = Instant::now();
    let cpu = super::thread_cpu_ns();
    let mut n = 0u64;
    let payload = [0u8; UDP_PAYLOAD];
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut _,
            iov_len: payload.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdr are valid; each then points at one iovec that outlives the calls.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    while started.elapsed().as_secs_f64() < secs {
        // SAFETY: msgs holds BATCH initialised headers on a connected socket.
        let rc = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            // A full queue on the way (ENOBUFS): the packets are lost, the loop goes on.
            if e.raw_os_error() != Some(libc::ENOBUFS) {
                return Err(e).context("sendmmsg");
            }
        } else {
            n += rc as u64;
        }
    }
    let took = started.elapsed().as_secs_f64();
    let cpu = (super::thread_cpu_ns() - cpu) as f64 / n.max(1) as f64;
    Ok((n, took, cpu))
}

/// `SO_BINDTODEVICE`: the socket's packets are routed out of `dev` whatever their source.
fn bind_to_device(sock: &UdpSocket, dev: &str) -> Result<()> {
    // SAFETY: a valid socket and a buffer of the given length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_ptr().cast(),
            dev.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("binding to {dev}"));
    }
    Ok(())
}

/// Received packets of `dev` in `ns` (netlink statistics through `ip -s -j`).
pub(super) fn rx_packets(ns: &Netns, dev: &str) -> Result<u64> {
    let out = ns.ip(&["-s", "-j", "link", "show", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -s -j link")?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .context("ip -s -j link: no stats64.rx.packets")
}
