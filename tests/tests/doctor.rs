//! `enipin doctor`: every check built in a throwaway namespace (rules, TC programs, sysctls,
//! shared MACs, nftables DNAT and marks) or in a scratch root (networkd.conf, netplan, sysctl.d,
//! unit files, processes), read back from the CLI with its fix; a clean lab host reports no
//! conflict; `attach` and `watch` print the conflicts once as warnings.

use std::{
    ffi::CString,
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use enipin_tests::{Enipin, PinDir, TempDir, Topology, in_ns, require};

fn lab() -> (Topology, Enipin) {
    require();
    let topo = Topology::build().expect("topology");
    let e = Enipin::in_ns(topo.host());
    (topo, e)
}

/// `enipin doctor --root ROOT ARGS`: (exit 0, stdout).
fn doctor(e: &Enipin, root: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["doctor", "--root", root.to_str().unwrap()];
    all.extend(args);
    let out = e.cmd(&all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.stderr.is_empty(),
        "doctor wrote on stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The finding line(s) of `check` with their fix lines.
fn finding(text: &str, check: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for l in text.lines() {
        if l.starts_with(' ') {
            if open {
                let last = out.last_mut().unwrap();
                last.push('\n');
                last.push_str(l.trim());
            }
            continue;
        }
        let head = l.split_once(": ").map(|(h, _)| h).unwrap_or(l);
        open = head
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
            == check;
        if open {
            out.push(l.to_owned());
        }
    }
    out
}

fn conflicts(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("conflict")).collect()
}

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn link(root: &Path, path: &str, target: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, p).unwrap();
}

#[test]
fn a_clean_lab_host_reports_no_conflict() {
    let (_topo, e) = lab();
    let root = TempDir::new("enipin-root-").unwrap();
    let (ok, text) = doctor(&e, root.path(), &[]);
    assert!(ok, "{text}");
    assert_eq!(conflicts(&text), Vec::<&str>::new(), "{text}");
    assert!(text.ends_with("0 conflict(s)\n"), "{text}");
    for check in [
        "kernel attach",
        "kernel redirect",
        "kernel mtu check",
        "kernel owner tables",
        "kernel next hop",
        "kernel bpffs",
    ] {
        let f = finding(&text, check);
        assert!(f.len() == 1 && f[0].starts_with("ok "), "{check}: {text}");
    }
    // Once attached, what attach sets reads as set, and enipin's own program is no stranger.
    e.ok(&["attach"]);
    let (ok, text) = doctor(&e, root.path(), &["--json"]);
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let findings = v["findings"].as_array().unwrap();
    assert!(
        findings.iter().all(|f| f["severity"] == "ok"),
        "after attach: {text}"
    );
    assert!(
        findings.iter().any(|f| f["check"] == "tc eth1"
            && f["meaning"]
                .as_str()
                .unwrap()
                .contains("enipin's is attached")),
        "{text}"
    );
    e.ok(&["detach"]);
}

#[test]
fn a_pin_dir_off_bpffs_is_a_conflict() {
    let (topo, e) = lab();
    let root = TempDir::new("enipin-root-").unwrap();
    let not_bpffs = TempDir::new("enipin-notbpffs-").unwrap();
    let out = std::process::Command::new(enipin_tests::enipin_bin())
        .args(["--netns", topo.host().name(), "--pin-dir"])
        .arg(not_bpffs.path())
        .args(["doctor", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    let f = finding(&text, "kernel bpffs");
    assert!(
        f[0].starts_with("conflict") && f[0].contains("not on a bpffs"),
        "{text}"
    );
    assert!(f[0].contains("fix: mount -t bpf bpf /sys/fs/bpf"), "{text}");
    drop(e);
}

/// Someone's rule at enipin's priority (attach refuses), and one above enipin's sending a
/// managed address's replies out of the wrong interface (attach goes on, warning once).
#[test]
fn foreign_rules_are_conflicts_and_attach_warns_of_them_once() {
    let (topo, e) = lab();
    let h = topo.host();
    let root = TempDir::new("enipin-root-").unwrap();
    h.ip(&[
        "route",
        "add",
        "default",
        "via",
        "198.18.0.1",
        "dev",
        "eth0",
        "table",
        "10001",
    ])
    .unwrap();
    h.ip(&[
        "rule",
        "add",
        "priority",
        "10001",
        "from",
        "198.18.0.11",
        "lookup",
        "10001",
    ])
    .unwrap();
    let (ok, text) = doctor(&e, root.path(), &[]);
    assert!(!ok, "{text}");
    let f = finding(&text, "rules");
    assert_eq!(f.len(), 1, "{text}");
    assert!(
        f[0].starts_with("conflict")
            && f[0].contains("sends replies from 198.18.0.11 out of eth0, not eth1"),
        "{text}"
    );
    assert!(
        f[0].contains(
            "fix: remove it (`ip rule del priority 10001 from 198.18.0.11/32 lookup 10001`)"
        ),
        "{text}"
    );
    let agents = finding(&text, "agents");
    assert!(
        agents[0].contains("amazon-ec2-net-utils or SUSE cloud-netconfig"),
        "{text}"
    );

    let out = e.cmd(&["attach"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "attach refused: {err}");
    assert_eq!(err.matches("WARN doctor: rules: ").count(), 1, "{err}");
    assert!(err.contains("out of eth0, not eth1"), "{err}");
    e.ok(&["detach"]);

    h.ip(&[
        "rule",
        "add",
        "priority",
        "20001",
        "from",
        "198.18.5.0/24",
        "lookup",
        "100",
    ])
    .unwrap();
    let (_, text) = doctor(&e, root.path(), &[]);
    let f = finding(&text, "rules");
    let at = f
        .iter()
        .find(|l| l.contains("priority 20001"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        at.starts_with("conflict") && at.contains("one of enipin's 20000-20002"),
        "{text}"
    );
    assert!(
        at.contains("fix: `enipin attach --priority 21000`"),
        "{text}"
    );
    let err = e.fails(&["attach"]);
    assert!(err.contains("priority 20001"), "{err}");
    e.ok(&["attach", "--priority", "21000"]);
    e.ok(&["detach"]);
}

#[test]
fn watch_prints_the_conflicts_once_at_start() {
    let (topo, e) = lab();
    let h = topo.host();
    h.ip(&[
        "route",
        "add",
        "default",
        "via",
        "198.18.0.1",
        "dev",
        "eth0",
        "table",
        "10001",
    ])
    .unwrap();
    h.ip(&[
        "rule",
        "add",
        "priority",
        "10001",
        "from",
        "198.18.0.11",
        "lookup",
        "10001",
    ])
    .unwrap();
    let mut watch = e
        .command(&["watch", "--metrics-listen", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let eth1 = h.ifindex("eth1").unwrap();
    let pin = e.pins.path().join(format!("link-{eth1}"));
    let t = Instant::now();
    while !pin.exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // A few reconciles' worth: a removed rule of enipin's makes it reconcile again.
    std::thread::sleep(Duration::from_millis(500));
    let _ = h.ip(&["rule", "del", "priority", "20002", "from", "198.18.0.11"]);
    std::thread::sleep(Duration::from_millis(1000));
    let _ = watch.kill();
    let mut err = String::new();
    watch
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = watch.wait();
    assert!(pin.exists(), "watch never attached: {err}");
    assert_eq!(err.matches("WARN doctor: rules: ").count(), 1, "{err}");
    e.ok(&["detach"]);
}

/// A two-instruction classifier named `name` that passes everything on (`r0 = -1`, TCX_NEXT;
/// TC_ACT_UNSPEC for a clsact filter), pinned at `path`: another agent's program.
fn pin_foreign_program(path: &Path, name: &str) {
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
    }
    const _: () = assert!(std::mem::size_of::<ProgLoad>() == 64);
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const _: () = assert!(std::mem::size_of::<ObjPin>() == 16);
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    // mov64 r0, -1; exit
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    prog_name[..name.len()].copy_from_slice(name.as_bytes());
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
    };
    // SAFETY: BPF_PROG_LOAD reads `attr` (size given) and the instructions and license it
    // points to, all alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr,
            std::mem::size_of::<ProgLoad>(),
        )
    };
    assert!(
        fd >= 0,
        "loading {name}: {}",
        std::io::Error::last_os_error()
    );
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let pin = ObjPin {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd as u32,
        file_flags: 0,
    };
    // SAFETY: BPF_OBJ_PIN reads `pin` and the NUL-terminated path.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            &pin,
            std::mem::size_of::<ObjPin>(),
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: the fd is ours; the pin keeps the program.
    unsafe { libc::close(fd as i32) };
    assert_eq!(rc, 0, "pinning {name}: {err}");
}

#[test]
fn another_agents_tc_programs_are_named_in_their_order_and_survive_enipin() {
    use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, links::FdLink, tc::TcAttach};
    let (topo, e) = lab();
    let h = topo.host();
    let root = TempDir::new("enipin-root-").unwrap();
    let theirs = PinDir::new("enipin-agent-").unwrap();
    std::fs::create_dir_all(theirs.path()).unwrap();
    let prog = theirs.path().join("prog");
    pin_foreign_program(&prog, "other_agent");
    let eth1 = h.ifindex("eth1").unwrap();
    let link_pin = theirs.path().join("link");
    in_ns(h, || {
        let mut p = SchedClassifier::from_pin(&prog).unwrap();
        let tcx = TcAttach::Tcx {
            attach_type: TcAttachType::Egress,
            order: LinkOrder::first(),
        };
        let id = p.attach(eth1, tcx).unwrap();
        FdLink::try_from(p.take_link(id).unwrap())
            .unwrap()
            .pin(&link_pin)
            .unwrap();
    });
    h.sh(&format!(
        "tc qdisc add dev eth1 clsact && tc filter add dev eth1 egress prio 7 bpf object-pinned {} da",
        prog.display()
    ))
    .unwrap();

    let (_, text) = doctor(&e, root.path(), &[]);
    let f = finding(&text, "tc eth1");
    assert!(
        f.iter().any(|l| l.starts_with("warning")
            && l.contains("other_agent (id ")
            && l.contains("enipin attaches after it")),
        "{text}"
    );
    e.ok(&["attach"]);
    let (ok, text) = doctor(&e, root.path(), &[]);
    assert!(ok, "{text}");
    let f = finding(&text, "tc eth1");
    assert!(
        f.iter()
            .any(|l| l.contains("runs before enipin at eth1's TCX egress")),
        "{text}"
    );
    assert!(
        f.iter().any(|l| l.contains("filter other_agent (id ")
            && l.contains("priority 7) at eth1's clsact egress: it runs after the TCX programs")),
        "{text}"
    );
    assert!(
        f.iter()
            .all(|l| l.contains("fix: its owner makes it pass on")),
        "{text}"
    );
    assert!(finding(&text, "tc eth0")[0].starts_with("ok"), "{text}");
    e.ok(&["detach"]);
    let (_, text) = doctor(&e, root.path(), &[]);
    assert_eq!(
        finding(&text, "tc eth1").len(),
        2,
        "enipin's detach touched the other agent's program or filter:\n{text}"
    );
}

#[test]
fn strict_rp_filter_now_and_from_sysctl_d_at_the_next_boot() {
    let (topo, e) = lab();
    let root = TempDir::new("enipin-root-").unwrap();
    topo.host()
        .sysctl("net.ipv4.conf.all.rp_filter", "1")
        .unwrap();
    topo.host()
        .sysctl("net.ipv4.conf.eth1.rp_filter", "0")
        .unwrap();
    let (ok, text) = doctor(&e, root.path(), &[]);
    assert!(ok, "strict now is attach's to fix, not a conflict:\n{text}");
    let f = finding(&text, "sysctl eth1 rp_filter");
    assert!(
        f[0].starts_with("warning") && f[0].contains("1 now") && f[0].contains("strict"),
        "{text}"
    );
    assert!(
        f[0].contains("`enipin attach` sets net.ipv4.conf.eth1.rp_filter=2"),
        "{text}"
    );

    write(
        root.path(),
        "/usr/lib/sysctl.d/50-default.conf",
        "-net.ipv4.conf.*.rp_filter = 2\n",
    );
    write(
        root.path(),
        "/etc/sysctl.d/60-cis.conf",
        "net.ipv4.conf.*.rp_filter = 1\n",
    );
    let (ok, text) = doctor(&e, root.path(), &[]);
    assert!(!ok, "{text}");
    let f = finding(&text, "sysctl eth1 rp_filter");
    assert!(
        f[0].starts_with("conflict") && f[0].contains("60-cis.conf:1"),
        "{text}"
    );
    assert!(f[0].ends_with("net.ipv4.conf.eth1.rp_filter = 2"), "{text}");
    // The fix, for both interfaces: nothing strict at boot any more.
    write(
        root.path(),
        "/etc/sysctl.d/zz-enipin.conf",
        "net.ipv4.conf.eth0.rp_filter = 2\nnet.ipv4.conf.eth1.rp_filter = 2\n",
    );
    let (ok, text) = doctor(&e, root.path(), &[]);
    assert!(ok, "{text}");
    assert!(
        finding(&text, "sysctl eth1 rp_filter")[0].contains("zz-enipin.conf:2"),
        "{text}"
    );
}

#[test]
fn interfaces_sharing_a_mac_select_the_one_with_addresses_or_refuse() {
    let (topo, e) = lab();
    let h = topo.host();
    let root = TempDir::new("enipin-root-").unwrap();
    let (mac0, mac1) = (&topo.spec.enis[0].mac, &topo.spec.enis[1].mac);
    // An accelerated-networking VF: eth1's MAC, no address, created after eth1.
    h.ip(&["link", "add", "vf1", "type", "veth", "peer", "name", "vf1p"])
        .unwrap();
    h.ip(&["link", "set", "vf1", "address", mac1]).unwrap();
    h.ip(&["link", "set", "vf1", "up"]).unwrap();
    let (ok, text) = doctor(&e, root.path(), &[]);
    assert!(ok, "{text}");
    let f = finding(&text, &format!("macs {mac1}"));
    assert!(
        f[0].starts_with("ok") && f[0].contains("eth1, vf1 share") && f[0].contains("picks eth1"),
        "{text}"
    );
    let sel = format!("{mac0},{mac1}");
    let out = e.ok(&["attach", "--dry-run", "--interfaces", &sel]);
    assert!(out.contains("interface eth1 ("), "{out}");
    // Both with addresses: ambiguous, refused, and doctor says so.
    h.ip(&["addr", "add", "198.18.3.1/24", "dev", "vf1"])
        .unwrap();
    let (ok, text) = doctor(&e, root.path(), &["--interfaces", &sel]);
    assert!(!ok, "{text}");
    let f = finding(&text, &format!("macs {mac1}"));
    assert!(
        f[0].starts_with("conflict") && f[0].contains("fix: select by name: --interfaces eth1,vf1"),
        "{text}"
    );
    let err = e.fails(&["attach", "--dry-run", "--interfaces", &sel]);
    assert!(
        err.contains("not exactly one of them has an address"),
        "{err}"
    );
}

/// networkd running in the namespace (a process there), nm-cloud-setup, amazon-ec2-net-utils,
/// cloud-init's netplan and cloud-netconfig, all from files of a scratch root.
#[test]
fn networkd_and_cloud_agents_from_a_scratch_root_with_their_fixes() {
    let (topo, e) = lab();
    let root = TempDir::new("enipin-root-").unwrap();
    let r = root.path();
    let ns = std::fs::metadata(format!("/run/netns/{}", topo.host().name()))
        .unwrap()
        .ino();
    write(r, "/proc/4242/comm", "systemd-network\n");
    link(r, "/proc/4242/ns/net", &format!("net:[{ns}]"));
    write(
        r,
        "/etc/systemd/networkd.conf",
        "[Network]\n#ManageForeignRoutes=yes\n",
    );
    let (ok, text) = doctor(&e, r, &[]);
    assert!(!ok, "{text}");
    for key in ["ManageForeignRoutingPolicyRules", "ManageForeignRoutes"] {
        let f = finding(&text, &format!("networkd {key}"));
        assert!(
            f[0].starts_with("conflict") && f[0].contains("pid 4242"),
            "{text}"
        );
        assert!(
            f[0].contains(&format!("{key}=yes (networkd's default)")),
            "{text}"
        );
        assert!(
            f[0].contains("fix: /etc/systemd/networkd.conf.d/99-enipin.conf:\n[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no"),
            "{text}"
        );
    }
    // The drop-in as `render --format networkd --output-dir` writes it, installed in the root:
    // networkd is no threat.
    let root = r.to_str().unwrap();
    let written = e.ok(&[
        "render",
        "--format",
        "networkd",
        "--root",
        root,
        "--output-dir",
        root,
    ]);
    assert_eq!(
        written,
        format!("{root}/etc/systemd/networkd.conf.d/99-enipin.conf\n")
    );
    let (ok, text) = doctor(&e, r, &[]);
    assert!(ok, "{text}");
    assert!(
        finding(&text, "networkd ManageForeignRoutes")[0].contains("=no (from "),
        "{text}"
    );

    let timer = "/usr/lib/systemd/system/nm-cloud-setup.timer";
    write(r, timer, "[Timer]\n");
    link(
        r,
        "/etc/systemd/system/timers.target.wants/nm-cloud-setup.timer",
        timer,
    );
    write(
        r,
        "/etc/systemd/system/nm-cloud-setup.service.d/10-ec2.conf",
        "[Service]\nEnvironment=NM_CLOUD_SETUP_EC2=yes\n",
    );
    let template = "/usr/lib/systemd/system/policy-routes@.service";
    write(r, template, "[Service]\n");
    link(
        r,
        "/etc/systemd/system/multi-user.target.wants/policy-routes@eth1.service",
        template,
    );
    write(
        r,
        "/etc/netplan/50-cloud-init.yaml",
        "network:\n  version: 2\n  ethernets:\n    eth1:\n      dhcp4: true\n      routing-policy:\n        - from: 198.18.0.11\n          table: 101\n          priority: 100\n",
    );
    write(
        r,
        "/usr/lib/systemd/system/cloud-netconfig.timer",
        "[Timer]\n",
    );
    write(r, "/etc/sysconfig/network/ifcfg-eth0", "BOOTPROTO='dhcp'\n");
    let (ok, text) = doctor(&e, r, &[]);
    assert!(!ok, "{text}");
    let nm = finding(&text, "agents nm-cloud-setup");
    assert!(
        nm[0].starts_with("conflict")
            && nm[0].contains("is enabled (nm-cloud-setup.timer) for EC2"),
        "{text}"
    );
    assert!(
        nm[0].contains(
            "fix: one owner of the policy: `systemctl disable --now nm-cloud-setup.timer"
        ),
        "{text}"
    );
    let ec2 = finding(&text, "agents amazon-ec2-net-utils");
    assert!(
        ec2[0].starts_with("warning")
            && ec2[0].contains("manages eth1")
            && ec2[0].contains("two owners"),
        "{text}"
    );
    let np = finding(&text, "agents netplan");
    assert!(
        np[0].starts_with("warning") && np[0].contains("(cloud-init's) gives eth1 a routing-policy (tables {101}); priorities 100 sit above enipin's"),
        "{text}"
    );
    let suse = finding(&text, "agents suse-cloud-netconfig");
    assert!(
        suse[0].starts_with("warning") && suse[0].contains("manages eth0"),
        "{text}"
    );
}

/// networkd running, with enipin's drop-in, and a `.network` file per lab ENI as netplan writes
/// them: doctor names the triggers that delete (issue 24: not "every reload"), warns of each
/// managed link whose file lacks KeepConfiguration=static with a fix listing both halves, and is
/// content once the file (or a drop-in of it) sets it.
#[test]
fn networkd_names_its_triggers_and_checks_the_managed_links_keep_configuration() {
    let (topo, e) = lab();
    let root = TempDir::new("enipin-root-").unwrap();
    let r = root.path();
    let ns = std::fs::metadata(format!("/run/netns/{}", topo.host().name()))
        .unwrap()
        .ino();
    write(r, "/proc/4243/comm", "systemd-network\n");
    link(r, "/proc/4243/ns/net", &format!("net:[{ns}]"));
    let (_, text) = doctor(&e, r, &[]);
    let rules = &finding(&text, "networkd ManageForeignRoutingPolicyRules")[0];
    for words in [
        "at `networkctl reconfigure`",
        "at a restart (where udev runs)",
        "`networkctl reload` after a changed .network file",
        "not at a reload of unchanged files",
    ] {
        assert!(rules.contains(words), "{words:?}:\n{text}");
    }
    assert!(rules.contains("KeepConfiguration=static"), "{text}");

    write(
        r,
        "/etc/systemd/networkd.conf.d/99-enipin.conf",
        "[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n",
    );
    for (i, eni) in topo.spec.enis.iter().enumerate() {
        write(
            r,
            &format!("/run/systemd/network/10-netplan-{}.network", eni.name),
            &format!(
                "[Match]\nPermanentMACAddress={}\nName={}\n\n[Network]\nAddress=198.18.0.1{i}/24\n",
                eni.mac, eni.name
            ),
        );
    }
    let (ok, text) = doctor(&e, r, &[]);
    assert!(ok, "warnings only:\n{text}");
    for eni in &topo.spec.enis {
        let f = finding(&text, &format!("networkd {} KeepConfiguration", eni.name));
        assert!(
            f.len() == 1
                && f[0].starts_with("warning")
                && f[0].contains(&format!("10-netplan-{}.network configures", eni.name))
                && f[0].contains("ManageForeignRoutes=no")
                && f[0].contains("KeepConfiguration=static"),
            "{text}"
        );
    }
    write(
        r,
        "/etc/systemd/network/10-netplan-eth1.network.d/50-enipin.conf",
        "[Network]\nKeepConfiguration=static\n",
    );
    let (_, text) = doctor(&e, r, &[]);
    let f = finding(&text, "networkd eth1 KeepConfiguration");
    assert!(
        f[0].starts_with("ok") && f[0].contains("`networkctl reconfigure eth1` still removes"),
        "{text}"
    );
    assert!(
        finding(&text, "networkd eth0 KeepConfiguration")[0].starts_with("warning"),
        "{text}"
    );
}

/// nftables DNAT to the secondary (by address, and by port only: every address) while connmark
/// is off: a warning naming the rules, ok once doctor is given `--connmark`; with it, another
/// rule on the mask's bits is named, and a mask clear of them is ok.
#[test]
fn dnat_to_the_secondary_warns_until_connmark_and_other_marks_on_its_mask_are_named() {
    let (topo, e) = lab();
    let h = topo.host();
    let root = TempDir::new("enipin-root-").unwrap();
    let (ok, text) = doctor(&e, root.path(), &[]);
    assert!(ok, "{text}");
    let f = finding(&text, "connmark dnat");
    assert!(
        f.len() == 1
            && f[0].starts_with("ok")
            && f[0].contains("no nftables DNAT reaches a secondary interface's address"),
        "{text}"
    );
    h.sh("nft -f - <<'EOF'\n\
         table ip publish {\n\
           chain pre { type nat hook prerouting priority dstnat;\n\
             ip daddr 198.18.0.11 tcp dport 80 dnat to 198.19.1.2:8080\n\
             tcp dport 8080 dnat to 198.19.1.2:80; }\n\
         }\n\
         EOF")
        .expect("nftables DNAT");
    let (ok, text) = doctor(&e, root.path(), &[]);
    assert!(ok, "a warning failed doctor: {text}");
    let f = finding(&text, "connmark dnat");
    assert_eq!(f.len(), 1, "{text}");
    assert!(
        f[0].starts_with("warning") && f[0].contains("2 DNAT rule(s) reach eth1 198.18.0.11: "),
        "{text}"
    );
    assert!(
        f[0].contains("table ip publish chain pre handle 2 (198.18.0.11)")
            && f[0].contains("table ip publish chain pre handle 3 (every address)"),
        "{text}"
    );
    assert!(
        !f[0].contains("eth0"),
        "the primary's address is no target: {text}"
    );
    assert!(
        f[0].contains("redirected by the datapath, a second transmit per packet")
            && f[0].contains("fix: turn connmark on (layers.connmark = true / --connmark)"),
        "{text}"
    );

    let (ok, text) = doctor(&e, root.path(), &["--connmark"]);
    assert!(ok, "{text}");
    for (check, says) in [
        ("connmark nft", "nft runs"),
        (
            "connmark dnat",
            "DNAT'd replies are routed by connmark (2 DNAT rule(s)",
        ),
        (
            "connmark mask",
            "no other nftables rule sets or matches bits",
        ),
    ] {
        let f = finding(&text, check);
        assert!(
            f.len() == 1 && f[0].starts_with("ok") && f[0].contains(says),
            "{check}: {text}"
        );
    }
    // kube-proxy's masquerade mark is 0x4000; this one sits in connmark's default mask.
    h.sh("nft add table ip mangle && \
          nft 'add chain ip mangle pre { type filter hook prerouting priority mangle; }' && \
          nft add rule ip mangle pre meta mark set mark or 0x01004000")
        .expect("nftables mark rule");
    let (ok, text) = doctor(&e, root.path(), &["--connmark"]);
    assert!(ok, "{text}");
    let f = finding(&text, "connmark mask");
    assert_eq!(f.len(), 1, "{text}");
    assert!(
        f[0].starts_with("warning")
            && f[0].contains(
                "table ip mangle chain pre handle 2 sets meta mark bits 0x01000000 of connmark's \
                 mask 0xff000000"
            )
            && f[0].contains("fix: choose another --connmark-mask"),
        "{text}"
    );
    let (ok, text) = doctor(
        &e,
        root.path(),
        &["--connmark", "--connmark-mask", "0x00ff0000"],
    );
    assert!(ok, "{text}");
    assert!(
        finding(&text, "connmark mask")[0].starts_with("ok"),
        "{text}"
    );
}

/// No nft in PATH: with connmark on, a conflict (attach would refuse); off, doctor just says it
/// could not read nftables DNAT, and passes.
#[test]
fn connmark_without_nft_is_a_conflict_and_without_connmark_is_no_failure() {
    let (_topo, e) = lab();
    let root = TempDir::new("enipin-root-").unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["doctor", "--root", root.path().to_str().unwrap()];
        all.extend(args);
        let out = e
            .command(&all)
            .env("PATH", "/nonexistent")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.stderr.is_empty(),
            "doctor wrote on stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = run(&["--connmark"]);
    assert!(!ok, "{text}");
    let f = finding(&text, "connmark nft");
    assert!(
        f.len() == 1
            && f[0].starts_with("conflict")
            && f[0].contains("connmark needs the `nft` command")
            && f[0].contains("fix: install the nftables package"),
        "{text}"
    );
    assert_eq!(conflicts(&text).len(), 1, "{text}");
    let (ok, text) = run(&[]);
    assert!(ok, "{text}");
    let f = finding(&text, "connmark dnat");
    assert!(
        f.len() == 1
            && f[0].starts_with("ok")
            && f[0].contains("nft is not installed: nftables DNAT could not be read"),
        "{text}"
    );
    assert!(finding(&text, "connmark nft").is_empty(), "{text}");
}

/// Issue 26, item 9: managed interfaces at different MTUs (eth0 at 9000 beside eth1 at 1500)
/// are a warning in doctor and in status, saying what it costs. Before: nothing said, and with
/// `--no-rules` TCP stalled at 0.5-0.8 MB in 3 s.
#[test]
fn differing_mtus_are_said_by_doctor_and_status() {
    let (topo, e) = lab();
    let root = TempDir::new("enipin-doctor-root-").unwrap();
    let (_, text) = doctor(&e, root.path(), &[]);
    assert_eq!(
        finding(&text, "mtu"),
        ["ok       mtu: the managed interfaces share one MTU"],
        "{text}"
    );
    topo.host()
        .ip(&["link", "set", "eth0", "mtu", "9000"])
        .unwrap();
    let (_, text) = doctor(&e, root.path(), &[]);
    let f = finding(&text, "mtu");
    assert!(
        f[0].starts_with(
            "warning  mtu: the managed interfaces' MTUs differ (eth0 9000, eth1 1500)"
        ) && f[0].contains("(1500 on eth1)"),
        "{text}"
    );
    assert!(f[0].contains("\nfix: give every ENI the same MTU"), "{f:?}");
    e.ok(&["attach", "--no-rules"]);
    let status = e.ok(&["status"]);
    assert!(
        status.contains("warning: the managed interfaces' MTUs differ")
            && status.contains("without the rules layer"),
        "{status}"
    );
    e.ok(&["detach"]);
}

/// The cloud from the machine's DMI (issue 29, item 4): each of the four by the strings its
/// VMs carry, none from a bare root; `metadata.source = "aws"` on another cloud is a conflict
/// (every lookup would fail), `auto` there a warning (netlink alone). No address is probed.
#[test]
fn doctor_names_the_cloud_from_dmi_and_a_source_that_cannot_answer() {
    let (_topo, e) = lab();
    let clouds: [(&str, &[(&str, &str)]); 4] = [
        (
            "EC2 (sys_vendor \"Amazon EC2\")",
            &[("sys_vendor", "Amazon EC2")],
        ),
        (
            "Azure (chassis_asset_tag \"7783-7084-3265-9085-8269-3286-77\")",
            &[
                ("sys_vendor", "Microsoft Corporation"),
                ("chassis_asset_tag", "7783-7084-3265-9085-8269-3286-77"),
            ],
        ),
        (
            "Google Cloud (product_name \"Google Compute Engine\")",
            &[
                ("sys_vendor", "Google"),
                ("product_name", "Google Compute Engine"),
            ],
        ),
        (
            "Oracle Cloud (chassis_asset_tag \"OracleCloud.com\")",
            &[("chassis_asset_tag", "OracleCloud.com")],
        ),
    ];
    for (named, files) in clouds {
        let root = TempDir::new("enipin-root-").unwrap();
        for (file, value) in files {
            write(
                root.path(),
                &format!("sys/class/dmi/id/{file}"),
                &format!("{value}\n"),
            );
        }
        let (_, text) = doctor(&e, root.path(), &[]);
        let f = finding(&text, "cloud");
        assert!(
            f.len() == 1 && f[0].starts_with("ok ") && f[0].contains(&format!("cloud: {named}")),
            "{text}"
        );
        let config = root.path().join("enipin.toml");
        std::fs::write(&config, "[metadata]\nsource = \"aws\"\n").unwrap();
        let args = ["--config", config.to_str().unwrap()];
        let (ok, text) = doctor(&e, root.path(), &args);
        let f = finding(&text, "cloud");
        let ec2 = named.starts_with("EC2");
        let want = if ec2 { "ok " } else { "conflict " };
        assert!(f.len() == 1 && f[0].contains(named), "{text}");
        assert!(f.len() == 1 && f[0].starts_with(want), "{text}");
        assert_eq!(ok, ec2, "{text}");
    }
    let bare = TempDir::new("enipin-root-").unwrap();
    let (_, text) = doctor(&e, bare.path(), &[]);
    let f = finding(&text, "cloud");
    assert!(f.len() == 1 && f[0].contains("no cloud named"), "{text}");
}
