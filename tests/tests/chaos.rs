//! Chaos: enipin killed with SIGKILL at random points, restarted under traffic, and upgraded under
//! a TCP stream. After every fault the next run must converge: exit 0, no drift, every address
//! answering the peer, and a detach that leaves the namespace as it found it.
//!
//! Seeded: the seed is printed at the start and in every failure; `ENIPIN_CHAOS_SEED=N` replays
//! one. Every trial is bounded (kill within 400 ms, pings of 1 s at most).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use enipin_tests::{Enipin, Snapshot, Topology, require};

const TRIALS: usize = 30;
const IFACES: [&str; 2] = ["eth0", "eth1"];
/// Every address of the seed's two ENIs: each must answer the peer after a fault.
const ADDRS: [&str; 4] = ["198.18.0.10", "198.18.0.11", "2001:db8::10", "2001:db8::11"];

fn seed(test: &str) -> u64 {
    let seed = std::env::var("ENIPIN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{test}: seed {seed} (replay with ENIPIN_CHAOS_SEED={seed})");
    seed
}

/// SIGKILL after `delay`, then reap. True when the kill landed while the process still ran.
fn kill_after(mut child: Child, delay: Duration) -> bool {
    std::thread::sleep(delay);
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running
}

fn spawn(e: &Enipin, args: &[&str]) -> Child {
    e.command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning enipin")
}

/// The next run converges: attach exits 0, status shows no drift, every address answers, and
/// detach leaves exactly `before`.
fn converges(topo: &Topology, e: &Enipin, before: &Snapshot, ctx: &str) {
    let out = e.cmd(&["attach"]);
    assert!(
        out.status.success(),
        "{ctx}: attach after the fault failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = e.ok(&["status"]);
    assert!(
        status.contains("drift: none"),
        "{ctx}: drift after the fault:\n{status}"
    );
    for addr in ADDRS {
        assert!(
            topo.peer().ping(addr, 1).unwrap() || topo.peer().ping(addr, 2).unwrap(),
            "{ctx}: {addr} does not answer the peer after the fault"
        );
    }
    let out = e.cmd(&["detach"]);
    assert!(
        out.status.success(),
        "{ctx}: detach failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = Snapshot::take(topo.host(), &IFACES, e.pins.path()).unwrap();
    assert_eq!(before.diff(&after), Vec::<String>::new(), "{ctx}: residue");
}

/// `TRIALS` faults from `fault` (given the rng; returns whether the kill landed mid-run), each
/// followed by the convergence check. Prints how many kills landed mid-run.
fn trials(test: &str, fault: impl Fn(&Enipin, &mut fastrand::Rng) -> bool) {
    require();
    let seed = seed(test);
    let mut rng = fastrand::Rng::with_seed(seed);
    let topo = Topology::build().expect("topology");
    let e = Enipin::in_ns(topo.host());
    let before = Snapshot::take(topo.host(), &IFACES, e.pins.path()).unwrap();
    let started = Instant::now();
    let mut landed = 0;
    for trial in 0..TRIALS {
        landed += usize::from(fault(&e, &mut rng));
        converges(
            &topo,
            &e,
            &before,
            &format!("{test} seed {seed} trial {trial}"),
        );
    }
    eprintln!(
        "{test}: {TRIALS} trials, {landed} kills mid-run, all converged, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn attach_killed_at_random_points_converges() {
    trials("attach", |e, rng| {
        let delay = Duration::from_millis(rng.u64(0..90));
        kill_after(spawn(e, &["attach"]), delay)
    });
}

#[test]
fn detach_killed_at_random_points_converges() {
    trials("detach", |e, rng| {
        e.ok(&["attach"]);
        let delay = Duration::from_millis(rng.u64(0..60));
        kill_after(spawn(e, &["detach"]), delay)
    });
}

/// A killed enipin's lock can outlive it for a moment (the `nft` child it was starting holds the
/// descriptor until its exec): the next command waits that out instead of refusing (a flake of
/// the detach trials under load). A lock held longer than a second is still a refusal.
#[test]
fn a_lock_released_within_a_second_is_waited_for() {
    use std::os::fd::AsRawFd as _;
    require();
    let topo = Topology::build().expect("topology");
    let e = Enipin::in_ns(topo.host());
    let hold = |ms: u64| {
        let f = std::fs::File::create(e.state.path().join("lock")).unwrap();
        // SAFETY: plain syscall on a descriptor we own.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            drop(f);
        })
    };
    let held = hold(300);
    e.ok(&["attach"]);
    held.join().unwrap();
    let held = hold(3000);
    let refused = e.fails(&["detach"]);
    assert!(refused.contains("holds"), "{refused}");
    held.join().unwrap();
    e.ok(&["detach"]);
}

#[test]
fn watch_killed_at_random_points_converges() {
    trials("watch", |e, rng| {
        let delay = Duration::from_millis(rng.u64(0..400));
        kill_after(spawn(e, &["watch"]), delay)
    });
}

/// `enipin watch`, waited for until its first reconcile is done (it prints "reconciled after
/// start" or, when nothing changed, nothing: then `status` must already show no drift).
fn watch_running(e: &Enipin) -> Child {
    let mut child = e
        .command(&["watch"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning enipin watch");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let st = e.cmd(&["status"]);
        if String::from_utf8_lossy(&st.stdout).contains("drift: none") {
            return child;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("watch did not settle within 10 s");
}

#[test]
fn a_watch_killed_and_restarted_under_pings_every_10_ms_loses_none() {
    require();
    let topo = Topology::build().expect("topology");
    let e = Enipin::in_ns(topo.host());
    let mut watch = watch_running(&e);
    // 400 probes at 10 ms (about 4 s), each waiting at most 1 s for its reply.
    let ping = topo
        .peer()
        .command("ping")
        .args([
            "-n",
            "-q",
            "-c",
            "400",
            "-i",
            "0.01",
            "-W",
            "1",
            "198.18.0.11",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning ping");
    let mut restarts = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(3000) {
        std::thread::sleep(Duration::from_millis(300));
        let _ = watch.kill();
        let _ = watch.wait();
        watch = watch_running(&e);
        restarts += 1;
    }
    let out = ping.wait_with_output().unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    let (sent, received) = enipin_tests::testbed::ping_summary(&text)
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    let nums = [sent, received];
    eprintln!(
        "watch killed and restarted {restarts} times: {} of {} pings answered",
        nums[1], nums[0]
    );
    assert_eq!(nums[0], 400, "{text}");
    assert_eq!(nums[1], nums[0], "pings lost across watch restarts: {text}");
    e.ok(&["detach"]);
}

/// A TCP stream from the peer to a server on the secondary address, bytes counted at both ends.
struct Stream {
    stop: Arc<AtomicBool>,
    client: std::thread::JoinHandle<std::io::Result<u64>>,
    server: std::thread::JoinHandle<std::io::Result<u64>>,
}

impl Stream {
    fn start(topo: &Topology, addr: SocketAddr) -> Self {
        let (host, peer) = (topo.host().name().to_owned(), topo.peer().name().to_owned());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || {
            enipin::kernel::netns::enter(&host).expect("entering the host namespace");
            let listener = TcpListener::bind(addr)?;
            ready_tx.send(()).unwrap();
            let (mut sock, _) = listener.accept()?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                match sock.read(&mut buf)? {
                    0 => return Ok(total),
                    n => total += n as u64,
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the server listens");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let client = std::thread::spawn(move || {
            enipin::kernel::netns::enter(&peer).expect("entering the peer namespace");
            let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            sock.set_write_timeout(Some(Duration::from_secs(10)))?;
            let chunk = vec![0x5au8; 16 * 1024];
            let mut total = 0u64;
            // Paced at about 16 MiB/s: the stream spans every step without flooding the CPUs.
            while !stopping.load(Ordering::Relaxed) {
                sock.write_all(&chunk)?;
                total += chunk.len() as u64;
                std::thread::sleep(Duration::from_millis(1));
            }
            sock.shutdown(std::net::Shutdown::Write)?;
            Ok(total)
        });
        Self {
            stop,
            client,
            server,
        }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self
            .client
            .join()
            .unwrap()
            .expect("the client's stream broke");
        let got = self
            .server
            .join()
            .unwrap()
            .expect("the server's stream broke");
        (sent, got)
    }
}

/// Stands in for an older enipin: its config map pinned with another layout (8 bytes), so the
/// next attach recreates the maps and swaps the program on the same links (the upgrade path).
fn pin_an_older_layout(e: &Enipin) {
    use aya::maps::{Array, MapData};
    let pin = e.pins.path().join(enipin_ebpf::maps::CONFIG);
    std::fs::remove_file(&pin).unwrap();
    Array::<MapData, [u8; 8]>::create(1, 0)
        .unwrap()
        .pin(&pin)
        .unwrap();
}

#[test]
fn a_tcp_stream_to_the_secondary_survives_attach_noop_upgrade_and_reattach() {
    require();
    let topo = Topology::build().expect("topology");
    let e = Enipin::in_ns(topo.host());
    e.ok(&["attach"]);
    let stream = Stream::start(&topo, "198.18.0.11:7400".parse().unwrap());
    let step = |what: &str, args: &[&str]| {
        std::thread::sleep(Duration::from_millis(300));
        let out = e.ok(args);
        eprintln!("{what}: {}", out.lines().last().unwrap_or(""));
        out
    };
    step("no-op attach", &["attach"]);
    pin_an_older_layout(&e);
    let upgrade = step("upgrade", &["attach"]);
    assert!(
        upgrade.contains("recreate map"),
        "not an upgrade:\n{upgrade}"
    );
    step("detach", &["detach"]);
    step("attach again", &["attach"]);
    std::thread::sleep(Duration::from_millis(300));
    let (sent, got) = stream.finish();
    eprintln!("stream: {sent} bytes sent, {got} received");
    assert!(sent > 0);
    assert_eq!(sent, got, "bytes lost on the stream");
    e.ok(&["detach"]);
}

// ------------------------------------------------ the datapath under random and truncated frames

mod frames_fuzz {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use enipin::{
        datapath,
        model::{Cidr, ManagedInterface},
        settings::config::Config,
    };
    use enipin_ebpf::{Counters, PROGRAM};
    use enipin_tests::{TC_ACT_REDIRECT, TC_ACT_UNSPEC, VethBed, frames, in_ns, require, test_run};

    const RUNS: u32 = 1_000_000;
    const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const B4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    /// b's delegated /28 (an LPM lookup) and an address inside it.
    const B_PFX4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 16);
    const IN_B_PFX4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 20);
    const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    const PEER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
    const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x200);

    fn managed(ifindex: u32, name: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> ManagedInterface {
        let cidr = |addr, prefix_len| Cidr { addr, prefix_len };
        let addrs = vec![cidr(IpAddr::V4(v4), 24), cidr(IpAddr::V6(v6), 64)];
        ManagedInterface::fixture(ifindex, name, addrs)
    }

    /// The managed interface that owns the frame's source, read at the fixed offsets of an
    /// untagged IPv4 / IPv6 header (None: not IP, or no owner).
    fn owner_of(frame: &[u8], a: u32, b: u32) -> Option<u32> {
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let src: IpAddr = match ethertype {
            0x0800 if frame.len() >= 34 => {
                IpAddr::V4(<[u8; 4]>::try_from(&frame[26..30]).unwrap().into())
            }
            0x86dd if frame.len() >= 54 => {
                IpAddr::V6(<[u8; 16]>::try_from(&frame[22..38]).unwrap().into())
            }
            _ => return None,
        };
        match src {
            IpAddr::V4(s) if s == A4 => Some(a),
            IpAddr::V4(s) if s == B4 || (u32::from(s) & !0xf) == u32::from(B_PFX4) => Some(b),
            IpAddr::V6(s) if s == A6 => Some(a),
            IpAddr::V6(s) if s == B6 => Some(b),
            _ => None,
        }
    }

    /// The shortest frame test-run accepts: the kernel refuses (EINVAL) an IPv4 or IPv6 frame
    /// shorter than its fixed header, before any program runs.
    fn min_len(f: &[u8]) -> usize {
        match f[12..14] {
            [0x08, 0x00] => 14 + 20,
            [0x86, 0xdd] => 14 + 40,
            _ => 14,
        }
    }

    /// One frame: a well-formed one from a random source, then (most of the time) truncated,
    /// flipped in a few random bytes, or replaced by noise. Returns it and whether it is pristine.
    fn frame(rng: &mut fastrand::Rng) -> (Vec<u8>, bool) {
        let (mut f, pristine) = raw_frame(rng);
        if f.len() < min_len(&f) {
            f.resize(min_len(&f), 0);
        }
        (f, pristine)
    }

    fn raw_frame(rng: &mut fastrand::Rng) -> (Vec<u8>, bool) {
        let v4 = [A4, B4, IN_B_PFX4, PEER4][rng.usize(..4)];
        let v6 = [A6, B6, PEER6][rng.usize(..3)];
        let mut f = match rng.u8(..6) {
            0 | 1 => frames::ipv4_udp(frames::MAC_B, v4, PEER4, &[], rng.usize(0..64)),
            2 | 3 => frames::ipv6_udp(frames::MAC_B, v6, PEER6, rng.usize(0..64)),
            4 => frames::arp(v4, PEER4),
            _ => frames::vlan_ipv4(frames::MAC_B, v4, PEER4),
        };
        match rng.u8(..4) {
            0 => (f, true),
            // Truncated anywhere test-run accepts (past the fixed headers; the IPv4 options,
            // the transport header and the payload can all be cut).
            1 => {
                f.truncate(rng.usize(min_len(&f)..=f.len()));
                (f, false)
            }
            2 => {
                for _ in 0..rng.usize(1..4) {
                    let i = rng.usize(..f.len());
                    f[i] = rng.u8(..);
                }
                (f, false)
            }
            _ => {
                let n = rng.usize(14..160);
                let mut noise: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
                // Half the noise claims to be IP, to get past the ethertype.
                if rng.bool() {
                    noise[12..14].copy_from_slice(&[[0x08, 0x00], [0x86, 0xdd]][rng.usize(..2)]);
                }
                (noise, false)
            }
        }
    }

    /// The counters that classify a packet: exactly one moves per run.
    fn classified(c: &Counters) -> u64 {
        c.owned_here + c.not_owned + c.non_ip + c.skipped + c.malformed + c.misrouted_packets
    }

    fn total(paths: &enipin::settings::config::Paths) -> u64 {
        datapath::counters(paths)
            .unwrap()
            .iter()
            .map(|(_, c)| classified(c))
            .sum()
    }

    #[test]
    fn a_million_random_and_truncated_frames_never_drop_and_redirect_only_to_the_owner() {
        require();
        let seed = super::seed("frames");
        let mut rng = fastrand::Rng::with_seed(seed);
        let bed = VethBed::new("chaos-frames-", &[("a0", "a1"), ("b0", "b1")]).unwrap();
        let (a, b, unmanaged) = (
            bed.ifindex("a0").unwrap(),
            bed.ifindex("b0").unwrap(),
            bed.ifindex("a1").unwrap(),
        );
        // No IPv6 on the bed's links: their own neighbour discovery would pass the attached
        // program and move the counters that must add up to the test-runs.
        for ifname in ["a0", "a1", "b0", "b1"] {
            bed.ns
                .sysctl(&format!("net.ipv6.conf.{ifname}.disable_ipv6"), "1")
                .unwrap();
        }
        let mut mb = managed(b, "b0", B4, B6);
        mb.prefixes.push(Cidr {
            addr: IpAddr::V4(B_PFX4),
            prefix_len: 28,
        });
        let managed = [managed(a, "a0", A4, A6), mb];
        let cfg = Config::default();
        let paths = bed.paths.clone();
        in_ns(&bed.ns, || {
            let plan = datapath::plan(&managed, &cfg, &paths).unwrap();
            datapath::apply(plan, &managed, &cfg, &paths).unwrap();
            let bpf = datapath::load(&paths.pin_dir).unwrap();
            let before = total(&paths);
            let (mut redirected, mut pristine_redirects) = (0u64, 0u64);
            let started = std::time::Instant::now();
            for run in 0..RUNS {
                let (f, pristine) = frame(&mut rng);
                let on = [a, b, unmanaged][rng.usize(..3)];
                let ctx = || format!("seed {seed} run {run} on ifindex {on}: {f:02x?}");
                let r = match test_run(&bpf, PROGRAM, on, &f, 1) {
                    Ok(r) => r.return_value,
                    Err(e) => panic!("{e:#}: {}", ctx()),
                };
                assert!(
                    r == TC_ACT_UNSPEC || r == TC_ACT_REDIRECT,
                    "verdict {r} (a drop?) for {}",
                    ctx()
                );
                let owner = owner_of(&f, a, b);
                // The program runs only where it is attached; test-run also runs it as if on an
                // unmanaged interface (counted in slot 0), where any owner's source is misrouted.
                let misrouted = owner.is_some_and(|o| o != on);
                if r == TC_ACT_REDIRECT {
                    redirected += 1;
                    assert!(misrouted, "redirected, but not another's source: {}", ctx());
                }
                // Untagged, unicast and whole: a source of the other interface must be moved.
                let untagged_ip = matches!(f[12..14], [0x08, 0x00] | [0x86, 0xdd]);
                if pristine && untagged_ip && misrouted {
                    pristine_redirects += 1;
                    assert_eq!(r, TC_ACT_REDIRECT, "not redirected: {}", ctx());
                }
            }
            let counted = total(&paths) - before;
            eprintln!(
                "frames: {RUNS} runs in {:.1} s, {redirected} redirected ({pristine_redirects} \
                 well-formed misrouted), 0 drops, {counted} classified",
                started.elapsed().as_secs_f64()
            );
            assert_eq!(
                counted,
                u64::from(RUNS),
                "counters do not add up to the runs"
            );
            assert!(
                pristine_redirects > 1000,
                "the fuzz hardly reached the redirect"
            );
            datapath::detach(&paths).unwrap();
        });
    }
}
