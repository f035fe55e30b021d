//! `cargo xtask bench`: what enipin costs, as ratios to baselines measured in the same run.
//!
//! This machine is shared and noisy, so every figure is measured against its baseline in the same
//! round, over several rounds, and the median is quoted. Everything runs in namespaces this
//! process creates and removes; every traffic source is bounded in time.
//!
//! Sections:
//! 1. per-packet cost (BPF_PROG_TEST_RUN) against an empty classifier;
//! 2. datapath in namespaces: TCP throughput and 64-byte UDP packet rate, no program vs program on
//!    correctly routed traffic vs misrouted traffic fixed by the redirect;
//! 3. control plane: `enipin attach`/`detach` for 15 interfaces x 50 addresses against the seed's
//!    method (a shell loop of `ip rule add` / `ip route add`), and enipin's peak RSS;
//! 4. watch: `enipin watch`'s peak RSS while it serves its metrics on the same fleet, and the
//!    time of one scrape (`bench::footprint`).
//! 4. watch: how fast `enipin watch` restores a deleted rule or route and manages a new address,
//!    and what a burst of 400 addresses costs (`bench::reaction`), and a restore with
//!    `--metadata aws` at 15 ENIs against without it (`bench::repair`);
//! 5. dnat: 64-byte UDP replies of a DNAT'd service, published on the primary's address against
//!    the secondary's, fixed by the redirect or routed out of its owner by `--connmark`
//!    (`bench::dnat`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};
use enipin_tests::bench::{self, Row, Target};
use enipin_tests::testbed::{self, Dirs, Netns, TempDir, veth};

struct Args {
    quick: bool,
    rounds: usize,
    out: PathBuf,
    only: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        quick: false,
        rounds: 5,
        out: Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench"),
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => {
                args.quick = true;
                args.rounds = 1;
            }
            "--rounds" => args.rounds = it.next().context("--rounds N")?.parse()?,
            "--out" => args.out = it.next().context("--out DIR")?.into(),
            "--only" => {
                args.only = Some(
                    it.next()
                        .context("--only cost|datapath|control|watch|dnat")?,
                )
            }
            "-h" | "--help" => {
                println!(
                    "enipin-bench [--quick] [--rounds N] [--out DIR] [--only cost|datapath|control|watch|dnat]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let want = |s: &str| args.only.as_deref().is_none_or(|o| o == s);
    let started = Instant::now();
    let load_before = bench::loadavg();
    let mut rows = Vec::new();
    if want("cost") {
        rows.extend(bench::cost::run(args.quick, args.rounds).context("per-packet cost")?);
    }
    if want("datapath") {
        rows.extend(
            bench::datapath::run(args.quick, args.rounds).context("datapath in namespaces")?,
        );
    }
    if want("control") {
        rows.extend(control(args.quick, args.rounds).context("control plane")?);
    }
    if want("watch") {
        rows.extend(watch_footprint(args.quick, args.rounds).context("watch's footprint")?);
        rows.extend(
            bench::reaction::run(args.quick, args.rounds).context("watch's reaction times")?,
        );
        rows.extend(
            bench::repair::run(args.quick, args.rounds).context("a repair with --metadata")?,
        );
    }
    if want("dnat") {
        rows.extend(bench::dnat::run(args.quick, args.rounds).context("DNAT'd replies")?);
    }
    let md = bench::markdown(&rows, args.quick, started.elapsed(), &load_before);
    print!("{md}");
    std::fs::create_dir_all(&args.out)?;
    let stem = if args.quick {
        "results-quick"
    } else {
        "results"
    };
    std::fs::write(args.out.join(format!("{stem}.md")), &md)?;
    std::fs::write(args.out.join(format!("{stem}.json")), bench::json(&rows)?)?;
    eprintln!("bench: wrote {}/{stem}.{{md,json}}", args.out.display());
    Ok(())
}

fn enipin(ns: &Netns, dirs: &Dirs, args: &[&str]) -> Result<bench::Run> {
    let bin = enipin_tests::enipin_bin();
    bench::run_measured(&mut testbed::enipin_command(
        &bin,
        ns.name(),
        &dirs.paths(),
        args,
    ))
}

// ---------------------------------------------------------------------------------------------
// 3. Control plane

/// `n` interfaces with `m` addresses each, all in 198.18.0.0/20, behind a bridge.
/// Interfaces and their addresses, in order.
type Layout = Vec<(String, Vec<String>)>;

fn fleet(n: usize, m: usize) -> Result<(Netns, Netns, Layout)> {
    let host = Netns::new("ec-h")?;
    let sw = Netns::new("ec-s")?;
    sw.ip(&["link", "add", "br0", "type", "bridge"])?;
    sw.ip(&["link", "set", "br0", "up"])?;
    let mut layout = Vec::new();
    let mut batch = String::new();
    for i in 0..n {
        let ifname = format!("eth{i}");
        let swif = format!("sw{i}");
        veth(
            &host,
            &ifname,
            &format!("02:00:00:00:02:{i:02x}"),
            &sw,
            &swif,
            &format!("02:00:00:00:03:{i:02x}"),
        )?;
        sw.ip(&["link", "set", &swif, "master", "br0"])?;
        let addrs: Vec<String> = (0..m).map(|j| format!("198.18.{}.{}", i, 10 + j)).collect();
        for a in &addrs {
            batch.push_str(&format!("addr add {a}/20 dev {ifname}\n"));
        }
        layout.push((ifname, addrs));
    }
    let file = TempDir::new("ec-batch")?;
    let path = file.path().join("addrs");
    std::fs::write(&path, batch)?;
    enipin_tests::testbed::run(
        Command::new("ip")
            .arg("-n")
            .arg(host.name())
            .arg("-batch")
            .arg(&path),
    )?;
    Ok((host, sw, layout))
}

/// The seed's method, per interface: `ip rule add from <ip> lookup <table>` for every address,
/// then the subnet route and the default route in that table; one `ip` process per command.
fn seed_script(layout: &[(String, Vec<String>)], add: bool) -> String {
    let verb = if add { "add" } else { "del" };
    let mut s = String::from("set -e\n");
    for (i, (ifname, addrs)) in layout.iter().enumerate() {
        let table = 100 + i;
        for a in addrs {
            s.push_str(&format!("ip rule {verb} from {a} lookup {table}\n"));
        }
        s.push_str(&format!(
            "ip route {verb} 198.18.0.0/20 dev {ifname} table {table}\n"
        ));
        s.push_str(&format!(
            "ip route {verb} default via 198.18.0.1 dev {ifname} table {table}\n"
        ));
    }
    s
}

/// The kernel's floor for attaching: `enipin_noop` attached to every interface's egress, with
/// TCX and with netlink (a clsact qdisc and a filter each, as enipin's netlink path does), in ms.
/// Only the attach calls are timed: the program is loaded before, and everything is removed after
/// (the links with the program, the qdiscs with `tc`), so each round starts from bare interfaces.
fn bare_attach(host: &Netns, layout: &Layout, ifindexes: &[u32]) -> Result<(f64, f64)> {
    use aya::programs::{SchedClassifier, TcAttachType, tc};
    let pins = testbed::PinDir::new("ec-noop")?;
    std::fs::create_dir(pins.path())?;
    let timed = |netlink: bool| -> Result<f64> {
        enipin_tests::in_ns(host, || -> Result<f64> {
            let mut bpf = bench::noop(pins.path())?;
            let prog: &mut SchedClassifier = bpf
                .program_mut(enipin_ebpf::NOOP_PROGRAM)
                .context("no noop program")?
                .try_into()?;
            let t = Instant::now();
            for &ifindex in ifindexes {
                if netlink {
                    tc::qdisc_add_clsact(ifindex)?;
                    let parent = TcAttachType::Egress.into();
                    let options = Default::default();
                    prog.attach(ifindex, tc::TcAttach::Netlink { parent, options })?;
                } else {
                    let attach_type = TcAttachType::Egress;
                    let order = Default::default();
                    prog.attach(ifindex, tc::TcAttach::Tcx { attach_type, order })?;
                }
            }
            Ok(t.elapsed().as_secs_f64() * 1e3)
            // Dropping the program detaches every link.
        })
    };
    let tcx = timed(false)?;
    let netlink = timed(true);
    for (name, _) in layout {
        host.sh(&format!(
            "tc qdisc del dev {name} clsact 2>/dev/null || true"
        ))?;
    }
    Ok((tcx, netlink?))
}

fn control(quick: bool, rounds: usize) -> Result<Vec<Row>> {
    let (n, m) = if quick { (3, 4) } else { (15, 50) };
    let (host, _sw, layout) = fleet(n, m)?;
    // What each side installs: enipin's layout (plan.rs) is two rules per address plus one
    // `lookup main suppress_prefixlength 0`, and a subnet and a default route per interface; the
    // seed's loop one rule per address and the same two routes.
    let enipin_rules = 2 * n * m + 1;
    let installed = |want: usize| -> Result<()> {
        let got = host
            .ip(&["rule", "show"])?
            .lines()
            .filter(|l| l.contains("proto 229"))
            .count();
        ensure!(got == want, "enipin installed {got} rules, expected {want}");
        Ok(())
    };
    let ifindexes: Vec<u32> = layout
        .iter()
        .map(|(name, _)| host.ifindex(name))
        .collect::<Result<_>>()?;
    let (
        mut loop_add,
        mut loop_del,
        mut attach,
        mut detach,
        mut attach_full,
        mut detach_full,
        mut rss,
    ) = (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut tcx, mut netlink) = (vec![], vec![]);
    for _ in 0..rounds {
        let (t, n) = bare_attach(&host, &layout, &ifindexes)?;
        tcx.push(t);
        netlink.push(n);
        for (add, acc) in [(true, &mut loop_add), (false, &mut loop_del)] {
            let t = Instant::now();
            host.sh(&seed_script(&layout, add))?;
            acc.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let dirs = Dirs::new("ec-")?;
        let a = enipin(&host, &dirs, &["attach", "--no-ebpf"])?.ok()?;
        installed(enipin_rules)?;
        let d = enipin(&host, &dirs, &["detach"])?.ok()?;
        installed(0)?;
        let f = enipin(&host, &dirs, &["attach"])?.ok()?;
        installed(enipin_rules)?;
        let d2 = enipin(&host, &dirs, &["detach"])?.ok()?;
        attach.push(a.wall_ms);
        detach.push(d.wall_ms);
        attach_full.push(f.wall_ms);
        detach_full.push(d2.wall_ms);
        rss.push(
            a.max_rss_kib
                .max(d.max_rss_kib)
                .max(f.max_rss_kib)
                .max(d2.max_rss_kib) as f64
                / 1024.0,
        );
    }
    let size = format!("{n} interfaces x {m} addresses");
    let theirs = format!("{} rules + {} routes", n * m, 2 * n);
    let ours = format!("{enipin_rules} rules + {} routes + ARP sysctls", 2 * n);
    let med = bench::median;
    let (la, ld) = (med(&loop_add), med(&loop_del));
    let (a, d) = (med(&attach), med(&detach));
    let (f, fd) = (med(&attach_full), med(&detach_full));
    // The floor of an attach with the datapath, per round: what installs the rules alone, plus
    // what the kernel takes to attach an empty program to every interface. enipin's attach adds
    // loading its program, filling its maps and pinning.
    let floor: Vec<f64> = attach.iter().zip(&tcx).map(|(a, t)| a + t).collect();
    let per_round =
        |x: &[f64], base: &[f64]| med(&x.iter().zip(base).map(|(x, b)| x / b).collect::<Vec<_>>());
    let (over_floor, nl_over_tcx) = (per_round(&attach_full, &floor), per_round(&netlink, &tcx));
    Ok(vec![
        Row::value(
            "control",
            &format!("seed's ip loop, add, {size} ({theirs}, one `ip` each)"),
            la,
            "ms",
        ),
        Row::target(
            "control",
            &format!("enipin attach --no-ebpf, {size} ({ours})"),
            a,
            "ms",
            Target::AtMost(100.0),
        ),
        Row::speedup(
            "control",
            "attach --no-ebpf speed-up over the ip loop (enipin installs twice the rules)",
            la,
            a,
            Target::RatioAtLeast(20.0),
        ),
        Row::target(
            "control",
            &format!("enipin attach, rules + eBPF on {n} interfaces"),
            f,
            "ms",
            Target::AtMost(100.0),
        ),
        Row::value(
            "control",
            &format!("kernel floor: bare TCX attach of an empty classifier to {n} interfaces"),
            med(&tcx),
            "ms",
        ),
        Row {
            ratio: Some(nl_over_tcx),
            ..Row::ratio(
                "control",
                &format!(
                    "bare netlink attach (clsact qdisc + filter) of the same to {n} interfaces \
                     (vs TCX)"
                ),
                med(&netlink),
                med(&tcx),
                "ms",
                Target::None,
            )
        },
        Row {
            ratio: Some(over_floor),
            ..Row::ratio(
                "control",
                "enipin attach, rules + eBPF (vs its floor: attach --no-ebpf + bare TCX attach)",
                f,
                med(&floor),
                "ms",
                Target::RatioAtMost(1.10),
            )
        },
        Row::value(
            "control",
            &format!("seed's ip loop, delete ({theirs})"),
            ld,
            "ms",
        ),
        Row::value(
            "control",
            &format!("enipin detach --no-ebpf state ({ours})"),
            d,
            "ms",
        ),
        Row::speedup(
            "control",
            "detach speed-up over the ip loop",
            ld,
            d,
            Target::None,
        ),
        Row::value(
            "control",
            &format!("enipin detach, rules + eBPF on {n} interfaces"),
            fd,
            "ms",
        ),
        Row::value(
            "control",
            "enipin peak RSS (max over attach/detach)",
            med(&rss),
            "MiB",
        ),
    ])
}

// ---------------------------------------------------------------------------------------------
// 4. watch

/// watch's peak RSS and scrape time on the control section's fleet.
fn watch_footprint(quick: bool, rounds: usize) -> Result<Vec<Row>> {
    let (n, m) = if quick { (3, 4) } else { (15, 50) };
    let (host, _sw, _) = fleet(n, m)?;
    bench::footprint::run(&host, n, m, rounds)
}
