//! `enipin watch --metrics-listen`: the watcher serves its metrics (linted by `promtool check
//! metrics`) and its health from its own process, in the lab's host namespace. Removing a TCX
//! link's pin is seen (a restore counted) and put right; health is 200 again after.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use enipin_tests::{Enipin, Topology, in_ns, require};

/// `GET path` from inside the lab's host namespace: (status line, body).
fn get(topo: &Topology, addr: SocketAddr, path: &str) -> (String, String) {
    in_ns(topo.host(), || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (
            head.lines().next().unwrap_or("").to_owned(),
            body.to_owned(),
        )
    })
}

/// The value of the sample `series` (name and labels as printed) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn promtool_check(text: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool (Debian's prometheus package: cargo xtask setup installs it)");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {out:?}\n{text}"
    );
}

fn until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < limit, "no {what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn watch_serves_linted_metrics_and_health_that_follows_the_datapath() {
    require();
    let topo = Topology::build().expect("topology");
    let e = Enipin::in_ns(topo.host());
    let mut child = e
        .command(&["watch", "--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    // The banner is a log line: on stderr, after its timestamp and level.
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let addr: SocketAddr = until("metrics banner", Duration::from_secs(10), || {
        let l = rx.recv_timeout(Duration::from_millis(50)).ok()?;
        l.split_once("serving GET /metrics and GET /healthz on http://")?
            .1
            .parse()
            .ok()
    });
    let healthy = || get(&topo, addr, "/healthz").0.contains(" 200 ");
    until("healthz 200", Duration::from_secs(10), || {
        healthy().then_some(())
    });

    let t = Instant::now();
    let (status, text) = get(&topo, addr, "/metrics");
    eprintln!("one scrape: {:?}", t.elapsed());
    assert!(status.contains(" 200 "), "{status}");
    promtool_check(&text);
    assert!(
        sample(&text, "enipin_reconciles_total{result=\"changed\"}") >= Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "enipin_managed_interfaces"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "enipin_datapath_attached{interface=\"eth1\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("enipin_misrouted_packets_total{interface=\"eth1\",ifindex="),
        "{text}"
    );
    // The tag of the program watch loaded is the one `status` reads from the pin (issue 27,
    // item 7): two paths to one kernel answer.
    let tag = text
        .split_once("enipin_build_info{program_tag=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(tag, _)| tag.to_owned())
        .unwrap_or_else(|| panic!("no program_tag:\n{text}"));
    let out = e.command(&["status", "--json"]).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["program"]["tag"].as_str(),
        Some(tag.as_str()),
        "{status}"
    );
    let human = String::from_utf8(e.command(&["status"]).output().unwrap().stdout).unwrap();
    assert!(human.contains(&format!(", tag {tag}")), "{human}");
    let restored = |text: &str| sample(text, "enipin_restored_total{kind=\"datapath_link\"}");
    assert_eq!(restored(&text), Some(0.0), "{text}");

    // Someone removes eth1's link pin: 503 until the watcher pins it back (within ~300 ms),
    // and the restore is counted.
    let eth1 = topo.host().ifindex("eth1").unwrap();
    std::fs::remove_file(e.pins.path().join(format!("link-{eth1}"))).unwrap();
    let mut saw_503 = false;
    until("the restore counted", Duration::from_secs(5), || {
        let (status, body) = get(&topo, addr, "/healthz");
        saw_503 |= status.contains(" 503 ") && body.contains("link on eth1");
        let text = get(&topo, addr, "/metrics").1;
        (restored(&text) >= Some(1.0)).then_some(())
    });
    until("healthz 200 again", Duration::from_secs(5), || {
        healthy().then_some(())
    });
    eprintln!("503 seen while the pin was gone: {saw_503}");

    // Someone deletes one of enipin's rules: put back, and counted as a restored rule.
    let rule = topo
        .host()
        .ip(&["rule", "show", "from", "198.18.0.11"])
        .unwrap();
    let pref = rule
        .lines()
        .find_map(|l| l.split(':').next()?.trim().parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no rule from 198.18.0.11:\n{rule}"));
    topo.host()
        .ip(&[
            "rule",
            "del",
            "from",
            "198.18.0.11",
            "pref",
            &pref.to_string(),
        ])
        .unwrap();
    until("a restored rule counted", Duration::from_secs(5), || {
        let text = get(&topo, addr, "/metrics").1;
        (sample(&text, "enipin_restored_total{kind=\"rule\"}") >= Some(1.0)).then_some(())
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("");
    eprintln!("watch's peak RSS (2 interfaces): {hwm}");
    // SAFETY: plain syscall on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    e.ok(&["detach"]);
}
