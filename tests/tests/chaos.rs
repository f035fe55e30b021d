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
    let nums: Vec<u32> = text
        .lines()
        .find(|l| l.contains("transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"))
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
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
            enipin::netns::enter(&host).expect("entering the host namespace");
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
            enipin::netns::enter(&peer).expect("entering the peer namespace");
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
