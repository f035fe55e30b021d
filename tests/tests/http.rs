//! `enipin metrics --listen` as a hostile network would use it: more idle clients than the
//! process has descriptors (EMFILE at accept used to end the server), a request split across TCP
//! segments (used to get 404), and a listen address reachable from other hosts (used to say
//! nothing).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::unix::process::CommandExt as _,
    process::{Child, Stdio},
    time::Duration,
};

use enipin_tests::{Enipin, Topology, in_ns, require};

/// `enipin metrics --listen ADDR` in the lab host, with at most `nofile` descriptors; returns the
/// child, the address from its banner and every stderr line up to the banner.
fn serve(enipin: &Enipin, addr: &str, nofile: u64) -> (Child, String, Vec<String>) {
    let mut cmd = enipin.command(&["metrics", "--listen", addr]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawning enipin");
    match banner(&mut child) {
        Some((addr, lines)) => (child, addr, lines),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("enipin metrics exited before its banner");
        }
    }
}

/// The address in the server's banner, and the stderr lines up to it (printed as they come).
fn banner(child: &mut Child) -> Option<(String, Vec<String>)> {
    let mut stderr = BufReader::new(child.stderr.take()?);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).ok()? == 0 {
            return None;
        }
        eprint!("enipin: {line}");
        lines.push(line.trim_end().to_owned());
        if let Some(rest) = line.split("http://").nth(1) {
            let addr = rest.split('/').next()?.to_owned();
            // Keep draining stderr so the server never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return Some((addr, lines));
        }
    }
}

/// One request, written as `parts` with 50 ms between them (one TCP segment each).
fn get(addr: &str, parts: &[&str]) -> String {
    let mut s = TcpStream::connect(addr).expect("connecting to enipin metrics");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for p in parts {
        s.write_all(p.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn attached() -> (Topology, Enipin) {
    require();
    let topo = Topology::build().expect("topology");
    let enipin = Enipin::in_ns(topo.host());
    enipin.ok(&["attach", "--no-rules", "--interfaces", "eth0,eth1"]);
    (topo, enipin)
}

#[test]
fn metrics_server_outlives_descriptor_exhaustion_and_reassembles_split_requests() {
    let (topo, enipin) = attached();
    // 32 descriptors: the runtime and the pinned maps take about a dozen, so 60 idle clients run
    // the process out of them at accept (EMFILE).
    let (mut server, addr, _) = serve(&enipin, "127.0.0.1:0", 32);
    let reply = in_ns(topo.host(), || {
        let idle: Vec<TcpStream> = (0..60)
            .map(|_| TcpStream::connect(&addr).expect("the backlog takes them"))
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        drop(idle);
        std::thread::sleep(Duration::from_millis(300));
        get(
            &addr,
            &[
                "GET /met",
                "rics HTTP/1.1\r\n",
                "Host: x\r\nConnection: close\r\n\r\n",
            ],
        )
    });
    let exited = server.try_wait().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(exited, None, "the metrics server exited under EMFILE");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("enipin_misrouted_packets_total{"), "{reply}");
    enipin.ok(&["detach"]);
}

#[test]
fn metrics_server_warns_when_it_listens_beyond_loopback() {
    let (_topo, enipin) = attached();
    let (mut server, _, lines) = serve(&enipin, "0.0.0.0:0", 1024);
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("not a loopback address")),
        "no warning for 0.0.0.0: {lines:?}"
    );
    enipin.ok(&["detach"]);
}
