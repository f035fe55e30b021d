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
//!    method (a shell loop of `ip rule add` / `ip route add`), and enipin's peak RSS.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use enipin_tests::bench::{self, Row, Target};
use enipin_tests::testbed::{Netns, PinDir, TempDir, veth};

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
            "--only" => args.only = Some(it.next().context("--only cost|datapath|control")?),
            "-h" | "--help" => {
                println!(
                    "enipin-bench [--quick] [--rounds N] [--out DIR] [--only cost|datapath|control]"
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
    let mut rows = Vec::new();
    if want("cost") {
        rows.extend(bench::cost::run(args.quick, args.rounds).context("per-packet cost")?);
    }
    if want("datapath") {
        rows.extend(datapath(args.quick, args.rounds).context("datapath in namespaces")?);
    }
    if want("control") {
        rows.extend(control(args.quick, args.rounds).context("control plane")?);
    }
    let md = bench::markdown(&rows, args.quick, started.elapsed());
    print!("{md}");
    std::fs::create_dir_all(&args.out)?;
    let stem = if args.quick { "results-quick" } else { "results" };
    std::fs::write(args.out.join(format!("{stem}.md")), &md)?;
    std::fs::write(args.out.join(format!("{stem}.json")), bench::json(&rows)?)?;
    eprintln!("bench: wrote {}/{stem}.{{md,json}}", args.out.display());
    Ok(())
}

fn enipin(ns: &Netns, pins: &PinDir, state: &TempDir, args: &[&str]) -> Result<bench::Run> {
    let mut cmd = Command::new(enipin_tests::enipin_bin());
    cmd.arg("--netns").arg(ns.name()).arg("--pin-dir").arg(pins.path());
    cmd.arg("--state-dir").arg(state.path()).args(args);
    bench::run_measured(&mut cmd)
}

// ---------------------------------------------------------------------------------------------
// 2. Datapath in namespaces

/// host (eth0 .10, eth1 .11) -- bridge in `sw` -- peer (.100). No cloud enforcement here: this
/// measures the datapath's cost, not the lab's verdict.
struct Wire {
    host: Netns,
    _sw: Netns,
    peer: Netns,
}

fn wire() -> Result<Wire> {
    let host = Netns::new("eb-h")?;
    let sw = Netns::new("eb-s")?;
    let peer = Netns::new("eb-p")?;
    sw.ip(&["link", "add", "br0", "type", "bridge"])?;
    sw.ip(&["link", "set", "br0", "up"])?;
    for (i, (hif, swif, mac)) in
        [("eth0", "sw-e0", "02:00:00:00:00:10"), ("eth1", "sw-e1", "02:00:00:00:00:11")]
            .into_iter()
            .enumerate()
    {
        veth(&host, hif, mac, &sw, swif, &format!("02:00:00:00:01:{:02x}", 0x10 + i))?;
        sw.ip(&["link", "set", swif, "master", "br0"])?;
        host.ip(&["addr", "add", &format!("198.18.0.{}/24", 10 + i), "dev", hif])?;
    }
    veth(&peer, "eth0", "02:00:00:00:00:64", &sw, "sw-p", "02:00:00:00:01:64")?;
    sw.ip(&["link", "set", "sw-p", "master", "br0"])?;
    peer.ip(&["addr", "add", "198.18.0.100/24", "dev", "eth0"])?;
    Ok(Wire { host, _sw: sw, peer })
}

/// One iperf3 measurement from `src` in the host namespace to the peer: TCP bits/s, or UDP
/// 64-byte packets/s received.
fn iperf(w: &Wire, src: &str, udp: bool, secs: u32) -> Result<f64> {
    let port = 5201 + (std::process::id() % 1000) as u16;
    let mut server = w
        .peer
        .command("iperf3")
        .args(["-s", "-1", "-B", "198.18.0.100", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("spawning iperf3 (cargo xtask setup installs it)")?;
    let _reap = bench::KillOnDrop(&mut server);
    std::thread::sleep(Duration::from_millis(300));
    let mut cmd = w.host.command("timeout");
    cmd.args([&format!("{}", secs + 10), "iperf3", "-J", "-c", "198.18.0.100", "-B", src]);
    cmd.args(["-p", &port.to_string(), "-t", &secs.to_string()]);
    if udp {
        cmd.args(["-u", "-l", "64", "-b", "0"]);
    }
    let out = enipin_tests::testbed::run(&mut cmd)?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    let end = &v["end"];
    if udp {
        let s = &end["sum"];
        let pkts = s["packets"].as_f64().context("end.sum.packets")?;
        let lost = s["lost_packets"].as_f64().unwrap_or(0.0);
        let secs = s["seconds"].as_f64().context("end.sum.seconds")?;
        Ok((pkts - lost) / secs)
    } else {
        end["sum_received"]["bits_per_second"].as_f64().context("end.sum_received.bits_per_second")
    }
}

fn datapath(quick: bool, rounds: usize) -> Result<Vec<Row>> {
    let secs = if quick { 1 } else { 3 };
    let w = wire()?;
    // Both sources must work before anything is measured.
    for _ in 0..2 {
        if !w.peer.ping("198.18.0.10", 1)? {
            bail!("the bench wire does not pass traffic");
        }
    }
    let mut rows = Vec::new();
    for (udp, metric, unit) in [(false, "TCP throughput", "Gbit/s"), (true, "UDP 64 B rate", "kpps")]
    {
        let scale = if udp { 1e-3 } else { 1e-9 };
        let (mut none, mut attached, mut redirected) = (vec![], vec![], vec![]);
        for _ in 0..rounds {
            none.push(iperf(&w, "198.18.0.10", udp, secs)? * scale);
            let pins = PinDir::new("eb-pin")?;
            let state = TempDir::new("eb-st")?;
            // --no-rules: the misrouted traffic is fixed by the redirect alone.
            enipin(&w.host, &pins, &state, &["attach", "--no-rules"])?.ok()?;
            let measured = (|| -> Result<(f64, f64)> {
                Ok((
                    iperf(&w, "198.18.0.10", udp, secs)? * scale,
                    iperf(&w, "198.18.0.11", udp, secs)? * scale,
                ))
            })();
            enipin(&w.host, &pins, &state, &["detach"])?.ok()?;
            let (a, r) = measured?;
            attached.push(a);
            redirected.push(r);
        }
        let (none, attached, redirected) =
            (bench::median(&none), bench::median(&attached), bench::median(&redirected));
        rows.push(Row::value("datapath", &format!("{metric}, no program"), none, unit));
        rows.push(Row::ratio(
            "datapath",
            &format!("{metric}, attached / none (correct route)"),
            attached,
            none,
            unit,
            Target::RatioAtLeast(0.98),
        ));
        rows.push(Row::ratio(
            "datapath",
            &format!("{metric}, redirected / attached (misrouted, fixed)"),
            redirected,
            attached,
            unit,
            Target::RatioAtLeast(0.95),
        ));
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// 3. Control plane

/// `n` interfaces with `m` addresses each, all in 198.18.0.0/20, behind a bridge.
fn fleet(n: usize, m: usize) -> Result<(Netns, Netns, Vec<(String, Vec<String>)>)> {
    let host = Netns::new("ec-h")?;
    let sw = Netns::new("ec-s")?;
    sw.ip(&["link", "add", "br0", "type", "bridge"])?;
    sw.ip(&["link", "set", "br0", "up"])?;
    let mut layout = Vec::new();
    let mut batch = String::new();
    for i in 0..n {
        let ifname = format!("eth{i}");
        let swif = format!("sw{i}");
        veth(&host, &ifname, &format!("02:00:00:00:02:{i:02x}"), &sw, &swif, &format!("02:00:00:00:03:{i:02x}"))?;
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
    enipin_tests::testbed::run(Command::new("ip").arg("-n").arg(host.name()).arg("-batch").arg(&path))?;
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
        s.push_str(&format!("ip route {verb} 198.18.0.0/20 dev {ifname} table {table}\n"));
        s.push_str(&format!("ip route {verb} default via 198.18.0.1 dev {ifname} table {table}\n"));
    }
    s
}

fn control(quick: bool, rounds: usize) -> Result<Vec<Row>> {
    let (n, m) = if quick { (3, 4) } else { (15, 50) };
    let (host, _sw, layout) = fleet(n, m)?;
    let (mut loop_add, mut loop_del, mut attach, mut detach, mut attach_full, mut rss) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        for (add, acc) in [(true, &mut loop_add), (false, &mut loop_del)] {
            let t = Instant::now();
            host.sh(&seed_script(&layout, add))?;
            acc.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let pins = PinDir::new("ec-pin")?;
        let state = TempDir::new("ec-st")?;
        let a = enipin(&host, &pins, &state, &["attach", "--no-ebpf"])?.ok()?;
        let d = enipin(&host, &pins, &state, &["detach"])?.ok()?;
        let f = enipin(&host, &pins, &state, &["attach"])?.ok()?;
        let d2 = enipin(&host, &pins, &state, &["detach"])?.ok()?;
        attach.push(a.wall_ms);
        detach.push(d.wall_ms);
        attach_full.push(f.wall_ms);
        rss.push(a.max_rss_kib.max(d.max_rss_kib).max(f.max_rss_kib).max(d2.max_rss_kib) as f64 / 1024.0);
    }
    let size = format!("{n} interfaces x {m} addresses");
    let (la, ld) = (bench::median(&loop_add), bench::median(&loop_del));
    let (a, d, f) = (bench::median(&attach), bench::median(&detach), bench::median(&attach_full));
    Ok(vec![
        Row::value("control", &format!("seed's ip loop, add ({size})"), la, "ms"),
        Row::target("control", &format!("enipin attach --no-ebpf ({size})"), a, "ms", Target::AtMost(100.0)),
        Row::speedup("control", "attach speed-up over the ip loop", la, a, Target::RatioAtLeast(20.0)),
        Row::target("control", &format!("enipin attach, rules + eBPF ({size})"), f, "ms", Target::AtMost(100.0)),
        Row::value("control", &format!("seed's ip loop, delete ({size})"), ld, "ms"),
        Row::value("control", &format!("enipin detach ({size})"), d, "ms"),
        Row::speedup("control", "detach speed-up over the ip loop", ld, d, Target::None),
        Row::value("control", "enipin peak RSS (max over attach/detach)", bench::median(&rss), "MiB"),
    ])
}
