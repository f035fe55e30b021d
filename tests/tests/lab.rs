//! `enipin lab`: the seed scenario reproduces the drop, enipin fixes it, detach leaves the host as
//! it was, and the lab leaves nothing behind: after success, after failure and after Ctrl-C.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use enipin_tests::{EniSpec, Spec, Topology, enipin_bin, lab, require, sh};

fn netns_list() -> String {
    sh("ip netns list").expect("ip netns list")
}

#[test]
fn lab_reproduces_the_drop_fixes_it_and_leaves_nothing() {
    require();
    let opts = lab::Options {
        bin: enipin_bin(),
        keep: false,
        spec: Spec::default(),
        metadata: false,
    };
    let report = lab::run_checked(&opts).expect("the lab ran");
    let table = report.table();
    let step = |key: &str| {
        report
            .step(key)
            .unwrap_or_else(|| panic!("no step {key}:\n{table}"))
    };

    // 1-2: the seed's symptom, and the vpc's counter says why.
    assert!(
        step("ping-primary-before").ok,
        "primary must answer before enipin:\n{table}"
    );
    assert!(
        step("ping-secondary-before").ok,
        "secondary must fail before enipin, with drops:\n{table}"
    );
    assert!(
        report.drops_after.eni("eth0").ip > 0,
        "the vpc counted no foreign-source drop on eth0:\n{table}"
    );

    // 6: nothing of the lab is left, whatever happened in between.
    assert!(step("cleanup").ok, "{table}");
    assert_eq!(lab::leftovers(&report).unwrap(), Vec::<String>::new());
    let list = netns_list();
    for ns in &report.namespaces {
        assert!(
            !list.contains(ns.as_str()),
            "namespace {ns} left behind:\n{list}"
        );
    }
    assert!(
        !report.pin_dir.exists(),
        "pin dir {} left behind",
        report.pin_dir.display()
    );

    // 5: detach restored every dump taken before attach.
    assert!(
        report.residue.is_empty(),
        "enipin left residue in the host:\n{}",
        report.residue.join("\n")
    );

    // 3-5: with enipin attached both addresses answer (also with the TC program alone), enipin
    // shows its view, and every other step behaved.
    for s in &report.steps {
        assert!(
            s.ok,
            "step {} ({}) failed:\n{table}\n{}",
            s.key, s.what, report.transcript
        );
    }
    for key in [
        "attach",
        "ping-secondary-after",
        "status",
        "stats",
        "detach",
        "ping-secondary-ebpf-only",
    ] {
        step(key);
    }
    assert!(report.passed(), "{table}");
}

/// Ctrl-C while a ping is in flight: the lab stops, removes its namespaces, pins and state,
/// and says FAIL on its last line.
#[test]
fn lab_cleans_up_on_ctrl_c() {
    require();
    let mut child = Command::new(enipin_bin())
        .arg("lab")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning enipin lab");
    let pid = child.id();
    // Bound the test even if the lab hung.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        // SAFETY: plain syscall.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let mut lines = Vec::new();
    let mut sent = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // Step 1 is done: step 2's ping (which gets no reply) is in flight now.
        if !sent && line.starts_with("[1]") {
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
            sent = true;
        }
        lines.push(line);
    }
    let status = child.wait().unwrap();
    let out = lines.join("\n");
    assert!(sent, "the lab never reached step 1:\n{out}");
    assert_eq!(status.code(), Some(130), "{out}");
    assert_eq!(lines.last().map(String::as_str), Some("FAIL"), "{out}");
    assert!(out.contains("interrupted"), "{out}");

    // Every name the lab made carries its pid (testbed::unique).
    let tag = format!("-{pid:x}-");
    let list = netns_list();
    assert!(
        !list.lines().any(|l| l.contains(&tag)),
        "namespaces left behind:\n{list}"
    );
    for dir in ["/run/enipin-test", std::env::temp_dir().to_str().unwrap()] {
        let left: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("lab-") && n.contains(&tag))
            .collect();
        assert!(left.is_empty(), "left in {dir}: {left:?}");
    }
}

/// The vpc lets an ENI send from each address in its allowed set (secondary private IPs), and
/// only from those.
#[test]
fn topology_allows_secondary_ips_of_an_eni() {
    require();
    let mut spec = Spec {
        ipv6: false,
        ..Spec::default()
    };
    spec.enis[0].v4.push("198.18.0.20".parse().unwrap());
    let topo = Topology::build_with(spec).expect("topology");
    assert!(
        topo.peer().ping("198.18.0.20", 3).unwrap(),
        "eth0's secondary IP must answer"
    );
    assert_eq!(topo.drops().unwrap().eni("eth0").total(), 0);

    // An address the vpc does not know for eth0: its replies are dropped and counted.
    topo.host()
        .ip(&["addr", "add", "198.18.0.30/24", "dev", "eth0"])
        .unwrap();
    assert!(
        !topo.peer().ping("198.18.0.30", 2).unwrap(),
        "an address the vpc does not allow must not answer"
    );
    // The vpc already drops eth0's ARP answer for it (foreign ARP sender): counted too.
    assert!(
        topo.drops().unwrap().eni("eth0").arp > 0,
        "the drop must be counted on eth0"
    );
    let names: Vec<String> = topo.names().iter().map(|s| s.to_string()).collect();
    drop(topo);
    let list = netns_list();
    assert!(
        names.iter().all(|n| !list.contains(n.as_str())),
        "namespaces left:\n{list}"
    );
}

/// The harness itself: the CLI runs inside its namespace, and two dumps of an untouched
/// namespace are identical (so a difference after detach is enipin's).
#[test]
fn harness_runs_the_cli_and_dumps_are_stable() {
    use enipin_tests::{Enipin, Netns, Snapshot};
    require();
    let ns = Netns::new("harness-").unwrap();
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ])
    .unwrap();
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    let e = Enipin::new(ns);
    let version = e.ok(&["--version"]);
    assert!(version.starts_with("enipin "), "{version}");
    // The commit built (issue 27, item 7): this checkout's, as the build script read it.
    let head = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert!(
        version.contains(&format!("(commit {head}, eBPF object sha256 ")),
        "{version} at {head}"
    );
    let ns = e.ns().unwrap();
    let a = Snapshot::take(ns, &["eth0"], e.pins.path()).unwrap();
    let b = Snapshot::take(ns, &["eth0"], e.pins.path()).unwrap();
    assert_eq!(a.diff(&b), Vec::<String>::new());
    assert!(
        a.sections["tc eth0"].contains("tcx egress"),
        "{:?}",
        a.sections
    );
    let name = e.ns_name().to_string();
    drop(e);
    assert!(
        !netns_list().contains(&name),
        "namespace {name} left behind"
    );
}

/// `enipin lab --metadata`: the secondary ENI's address that only metadata lists does not
/// answer before; after `attach --metadata aws --configure-addresses` it does; after detach
/// nothing is left.
#[test]
fn lab_metadata_adds_the_address_only_metadata_lists_and_detach_removes_it() {
    require();
    let opts = lab::Options {
        bin: enipin_bin(),
        keep: false,
        spec: Spec::default(),
        metadata: true,
    };
    let report = lab::run_checked(&opts).expect("the lab ran");
    let table = report.table();
    for key in [
        "ping-metadata-before",
        "attach",
        "ping-metadata-after",
        "ping-secondary-after",
        "status",
        "detach",
        "residue",
        "metadata-address-removed",
        "cleanup",
    ] {
        let s = report
            .step(key)
            .unwrap_or_else(|| panic!("no step {key}:\n{table}"));
        assert!(s.ok, "step {key} failed:\n{table}\n{}", report.transcript);
    }
    assert!(report.passed(), "{table}");
    assert!(
        report
            .transcript
            .contains("+ address 198.18.0.21/32 dev eth1"),
        "{}",
        report.transcript
    );
    assert!(
        report
            .transcript
            .contains("eth1 198.18.0.21/32: netlink, metadata"),
        "status does not show the address's sources:\n{}",
        report.transcript
    );
    assert!(report.residue.is_empty(), "{}", report.residue.join("\n"));
    assert_eq!(lab::leftovers(&report).unwrap(), Vec::<String>::new());
}

/// `enipin lab --subnets split`'s network: the secondary ENI in a subnet of its own, with a
/// default route of its own. Its reply still left by eth0 before (issue 23); every step passes.
#[test]
fn lab_split_subnets_reproduces_the_drop_and_fixes_it() {
    require();
    let spec = Spec {
        enis: vec![
            EniSpec::nth(0),
            EniSpec {
                default_route: true,
                ..EniSpec::in_own_subnet(1)
            },
        ],
        ..Spec::default()
    };
    let opts = lab::Options {
        bin: enipin_bin(),
        keep: false,
        spec,
        metadata: false,
    };
    let report = lab::run_checked(&opts).expect("the lab ran");
    let table = report.table();
    assert!(report.passed(), "{table}");
    for key in [
        "ping-secondary-before",
        "ping-secondary-after",
        "ping6-secondary-after",
    ] {
        assert!(report.step(key).is_some_and(|s| s.ok), "{key}:\n{table}");
    }
}
