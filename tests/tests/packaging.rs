//! What `cargo xtask dist` ships, installed and run: the static tarball's lab under `env -i`, the
//! .deb and the .rpm installed into scratch roots (files, conffile, scripts), the unit verified by
//! systemd-analyze, its capability set driving attach and watch in the lab under setpriv, the
//! OCI image under podman in the lab's host namespace; the deploy recipes: the kustomize
//! output validated (Kubernetes' schemas and the Prometheus Operator's), the image named once,
//! the PrometheusRule equal to the alert rules, the cloud-init user-data validated by cloud-init,
//! and all of them in the tarball.
//!
//! `cargo xtask test` runs `cargo xtask dist` first. Every tool these tests call is installed by
//! `cargo xtask setup`; a missing one fails the test (never a skip).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use enipin_tests::{
    Enipin, TempDir, Topology, pins,
    run::{artifact, eventually, ok, out, root},
    unique,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const MUSL: &str = "x86_64-unknown-linux-musl";
const SECONDARY: &str = "198.18.0.11";

/// The musl tarball `cargo xtask dist` built.
fn tarball() -> PathBuf {
    artifact(&format!("enipin-{VERSION}-{MUSL}.tar.gz"))
}

/// The static binary, unpacked from the tarball into `dir`.
fn unpack_tarball(dir: &Path) -> PathBuf {
    ok(Command::new("tar")
        .arg("-xzf")
        .arg(tarball())
        .arg("-C")
        .arg(dir));
    dir.join(format!("enipin-{VERSION}-{MUSL}"))
}

#[test]
fn tarball_holds_a_static_binary_whose_lab_passes_with_an_empty_environment() {
    enipin_tests::require();
    let tmp = TempDir::new("enipin-tar-").unwrap();
    let top = unpack_tarball(tmp.path());
    for file in [
        "enipin",
        "enipin.service",
        "enipin.toml",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "completions/enipin.bash",
        "completions/_enipin",
        "completions/enipin.fish",
        "man/enipin.8.gz",
        "man/enipin-watch.8.gz",
        "man/enipin-attach.8.gz",
        "man/enipin.toml.5.gz",
        "enipin-rules.yml",
    ] {
        assert!(top.join(file).is_file(), "the tarball has no {file}");
    }
    let bin = top.join("enipin");
    let file = ok(Command::new("file").arg(&bin));
    assert!(
        file.contains("statically linked") || file.contains("static-pie linked"),
        "{file}"
    );
    // No Rust, no cargo, no HOME: only the system tools the lab drives (ip, nft, ping).
    let lab = out(Command::new("env")
        .args(["-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        .arg(&bin)
        .arg("lab"));
    let text = String::from_utf8_lossy(&lab.stdout);
    assert!(
        lab.status.success() && text.trim_end().ends_with("PASS"),
        "the static binary's lab failed ({}):\n{text}{}",
        lab.status,
        String::from_utf8_lossy(&lab.stderr)
    );
}

/// The tarball carries deploy/kubernetes/ as `kubernetes/`, deploy/cloud-init/ as `cloud-init/`
/// and deploy/grafana/ as `grafana/`, file for file, and its overlay builds where it was unpacked
/// (the overlay names the base by a relative path).
#[test]
fn tarball_ships_the_deploy_recipes_as_in_the_tree() {
    let tmp = TempDir::new("enipin-tar-deploy-").unwrap();
    let top = unpack_tarball(tmp.path());
    for (tree, shipped) in [
        ("deploy/kubernetes", "kubernetes"),
        ("deploy/cloud-init", "cloud-init"),
        ("deploy/grafana", "grafana"),
    ] {
        let tree = root().join(tree);
        let files = walk(&tree);
        assert!(!files.is_empty(), "nothing in {}", tree.display());
        for file in &files {
            let rel = file.strip_prefix(&tree).unwrap();
            let there = top.join(shipped).join(rel);
            assert_eq!(
                std::fs::read(&there).unwrap_or_else(|e| panic!("{}: {e}", there.display())),
                std::fs::read(file).unwrap(),
                "{} differs from the tree",
                there.display()
            );
        }
        assert_eq!(walk(&top.join(shipped)).len(), files.len(), "{shipped}");
    }
    let built = kustomize_build(&top.join("kubernetes/overlays/eks"));
    assert_eq!(built, kustomize_build(&kube_dir().join("overlays/eks")));
}

/// Files every package installs.
const INSTALLED: &[&str] = &[
    "usr/sbin/enipin",
    "usr/lib/systemd/system/enipin.service",
    "usr/share/bash-completion/completions/enipin",
    "usr/share/fish/vendor_completions.d/enipin.fish",
    "usr/share/man/man8/enipin.8.gz",
    "usr/share/man/man8/enipin-watch.8.gz",
    "usr/share/man/man5/enipin.toml.5.gz",
    "usr/share/enipin/prometheus/enipin-rules.yml",
    "usr/share/enipin/grafana/enipin.json",
];

fn assert_installed(root: &Path, extra: &[&str]) {
    for file in INSTALLED.iter().chain(extra) {
        assert!(root.join(file).is_file(), "not installed: /{file}");
    }
    assert_eq!(
        std::fs::read(root.join("usr/lib/systemd/system/enipin.service")).unwrap(),
        std::fs::read(self::root().join("packaging/enipin.service")).unwrap(),
        "the package's unit is not packaging/enipin.service"
    );
    let ver = ok(Command::new(root.join("usr/sbin/enipin")).arg("--version"));
    assert!(ver.contains(VERSION), "{ver}");
}

#[test]
fn deb_installs_into_a_scratch_root_with_its_conffile_and_starts_nothing() {
    let deb = artifact(&format!("enipin_{VERSION}_amd64.deb"));
    let tmp = TempDir::new("enipin-deb-").unwrap();
    let r = tmp.path();
    // An empty dpkg database; --unpack installs the files and records them without running
    // postinst (which would talk to the machine's systemd), so the scripts are read below.
    std::fs::create_dir_all(r.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(r.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    ok(Command::new("dpkg")
        .arg(format!("--root={}", r.display()))
        .arg("--unpack")
        .arg(&deb));
    // Unpacked, not configured: dpkg puts a conffile in place at configure time.
    assert_installed(
        r,
        &[
            "usr/share/zsh/vendor-completions/_enipin",
            "etc/enipin/enipin.toml.dpkg-new",
        ],
    );
    let listed = ok(Command::new("dpkg")
        .arg(format!("--root={}", r.display()))
        .args(["-L", "enipin"]));
    assert!(listed.contains("/usr/sbin/enipin"), "{listed}");
    let info = r.join("var/lib/dpkg/info");
    let read = |name: &str| std::fs::read_to_string(info.join(name)).unwrap_or_default();
    assert_eq!(read("enipin.conffiles").trim(), "/etc/enipin/enipin.toml");
    // Install: neither enabled nor started (only an existing enablement is kept); upgrade:
    // try-restart of a running watcher; removal: stop.
    let postinst = read("enipin.postinst");
    assert!(
        postinst.contains("try-restart enipin.service"),
        "{postinst}"
    );
    for forbidden in ["invoke start", "invoke restart enipin"] {
        assert!(
            !postinst.contains(forbidden),
            "postinst has {forbidden}:\n{postinst}"
        );
    }
    assert!(
        postinst.contains("was-enabled enipin.service"),
        "postinst may enable only a unit the operator had enabled:\n{postinst}"
    );
    // Removal: stop, then detach (systemd.rs removes the package under a real systemd).
    let prerm = read("enipin.prerm");
    let (stop, detach) = (
        prerm.find("stop enipin.service"),
        prerm.find("/usr/sbin/enipin detach"),
    );
    assert!(stop.is_some() && stop < detach, "{prerm}");
    assert_changelog_parses(r, &deb);
}

/// The .deb carries CHANGELOG.md's entries in Debian's format (issue 27, item 7): dpkg reads
/// the newest as the package's own version, with the file's first item in it.
fn assert_changelog_parses(root: &Path, deb: &Path) {
    let changelog = root.join("usr/share/doc/enipin/changelog.Debian.gz");
    let parsed = |field: &str| {
        ok(Command::new("dpkg-parsechangelog")
            .arg("-l")
            .arg(&changelog)
            .args(["-S", field]))
    };
    let version = ok(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Version"));
    assert_eq!(parsed("Version").trim(), version.trim());
    let markdown = std::fs::read_to_string(self::root().join("CHANGELOG.md")).unwrap();
    let first = markdown
        .lines()
        .find_map(|l| l.strip_prefix("- "))
        .expect("CHANGELOG.md has an item");
    let changes = parsed("Changes");
    assert!(changes.contains(first), "{first:?} not in:\n{changes}");
}

#[test]
fn rpm_installs_into_a_scratch_root_with_a_noreplace_config_and_starts_nothing() {
    let rpm = artifact(&format!("enipin-{VERSION}-1.x86_64.rpm"));
    let tmp = TempDir::new("enipin-rpm-").unwrap();
    let r = tmp.path();
    let rpm_in_root = || {
        let mut cmd = Command::new("rpm");
        cmd.arg("--root")
            .arg(r)
            .arg("--dbpath")
            .arg(r.join("var/lib/rpm"));
        cmd
    };
    ok(rpm_in_root().arg("--initdb"));
    // --noscripts: the scriptlets call the machine's systemctl; they are checked below.
    ok(rpm_in_root()
        .args(["-i", "--nodeps", "--noscripts"])
        .arg(&rpm));
    assert_installed(
        r,
        &[
            "usr/share/zsh/site-functions/_enipin",
            "etc/enipin/enipin.toml",
            "usr/share/doc/enipin/CHANGELOG.md",
        ],
    );
    let listed = ok(rpm_in_root().args(["-ql", "enipin"]));
    assert!(listed.contains("/usr/sbin/enipin"), "{listed}");
    let flags = ok(rpm_in_root().args([
        "-q",
        "--qf",
        "[%{FILENAMES} %{FILEFLAGS:fflags}\n]",
        "enipin",
    ]));
    let conf = flags
        .lines()
        .find(|l| l.starts_with("/etc/enipin/enipin.toml "))
        .unwrap_or_else(|| panic!("no /etc/enipin/enipin.toml:\n{flags}"));
    // c: %config, n: noreplace (an edited file is kept, the new one lands as .rpmnew).
    let conf_flags = conf.rsplit(' ').next().unwrap_or_default();
    assert!(
        conf_flags.contains('c') && conf_flags.contains('n'),
        "{conf}"
    );
    let scripts = ok(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm));
    assert!(
        scripts.contains("disable --now enipin.service"),
        "{scripts}"
    );
    assert!(scripts.contains("try-restart enipin.service"), "{scripts}");
    // The last removal ($1 = 0) stops the watcher, then detaches, as the .deb does.
    let preun = scripts
        .split("preuninstall scriptlet")
        .nth(1)
        .and_then(|s| s.split("postuninstall scriptlet").next())
        .unwrap_or_default();
    let (stop, detach) = (
        preun.find("disable --now enipin.service"),
        preun.find("/usr/sbin/enipin detach"),
    );
    assert!(
        preun.contains("[ $1 -eq 0 ]") && stop.is_some() && stop < detach,
        "{preun}"
    );
    let postinstall = scripts
        .split("preuninstall scriptlet")
        .next()
        .unwrap_or_default();
    assert!(
        !postinstall.contains("start enipin") && !postinstall.contains("enable"),
        "installing must not enable or start enipin:\n{postinstall}"
    );
}

#[test]
fn unit_verifies_and_systemd_analyze_security_rates_it() {
    // The unit in the root the .deb makes, with its man pages (Documentation=).
    let tmp = TempDir::new("enipin-unit-").unwrap();
    let r = tmp.path();
    ok(Command::new("dpkg-deb")
        .arg("-x")
        .arg(artifact(&format!("enipin_{VERSION}_amd64.deb")))
        .arg(r));
    let verify = out(Command::new("systemd-analyze")
        .env("MANPATH", r.join("usr/share/man"))
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .arg("enipin.service"));
    let text = String::from_utf8_lossy(&verify.stderr).into_owned()
        + &String::from_utf8_lossy(&verify.stdout);
    // systemd is not PID 1 here: a scratch root has no sysinit.target. Every other line is a
    // finding.
    let findings: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("Unit sysinit.target not found"))
        .collect();
    assert!(findings.is_empty(), "systemd-analyze verify:\n{text}");

    let security = ok(Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(format!("--root={}", r.display()))
        .arg("enipin.service"));
    let line = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level:\n{security}"));
    let score: f64 = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no score in {line}"));
    eprintln!("{line}");
    // 2.9 with the unit as shipped; "OK" is systemd's band below 4.
    assert!(score < 4.0, "{line}");
}

/// The unit's `CapabilityBoundingSet=`, e.g. ["net_admin", "sys_admin"].
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(root().join("packaging/enipin.service")).unwrap();
    let line = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("the unit has no {key}"))
            .to_owned()
    };
    let caps = line("CapabilityBoundingSet=");
    assert_eq!(caps, line("AmbientCapabilities="));
    caps.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

/// `enipin ARGS` in the namespace under exactly `caps` as bounding, inheritable and ambient set.
/// nsenter (full root) enters the namespace first: setns needs CAP_SYS_ADMIN, and the service
/// runs in its namespace from the start.
fn capped(e: &Enipin, bin: &Path, caps: &[String], args: &[&str]) -> Command {
    let set = format!(
        "-all{}",
        caps.iter().map(|c| format!(",+{c}")).collect::<String>()
    );
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", e.ns_name()))
        .arg("setpriv")
        .args([
            "--bounding-set",
            &set,
            "--inh-caps",
            &set,
            "--ambient-caps",
            &set,
        ])
        .arg("--")
        .arg(bin)
        .arg("--pin-dir")
        .arg(e.pins.path())
        .arg("--state-dir")
        .arg(e.state.path())
        .args(args);
    cmd
}

#[test]
fn the_units_capability_set_is_enough_for_attach_and_watch_and_none_is_spare() {
    let caps = unit_capabilities();
    assert_eq!(caps, ["net_admin", "sys_admin"]);
    let topo = Topology::build().expect("building the lab topology");
    let e = Enipin::in_ns(topo.host());
    let bin = enipin_tests::enipin_bin();
    assert!(
        !topo.peer().ping(SECONDARY, 2).unwrap(),
        "secondary answers before enipin"
    );

    ok(&mut capped(&e, &bin, &caps, &["attach"]));
    assert!(
        topo.peer().ping(SECONDARY, 3).unwrap(),
        "secondary silent after attach"
    );
    // The second attach adopts the pinned datapath: it reads the pinned maps by id.
    let again = ok(&mut capped(&e, &bin, &caps, &["attach"]));
    assert!(again.contains("nothing to do"), "{again}");
    let status = ok(&mut capped(&e, &bin, &caps, &["status"]));
    assert!(status.contains("drift: none"), "{status}");

    // The watcher as the service runs it: a rule deleted by hand comes back.
    let watch = capped(&e, &bin, &caps, &["watch"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning enipin watch");
    let rules = || topo.host().ip(&["rule", "show"]).unwrap();
    eventually(
        "rules from watch",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || rules().contains(SECONDARY),
    );
    topo.host()
        .ip(&["rule", "del", "from", SECONDARY, "pref", "20002"])
        .unwrap();
    eventually(
        "the deleted rule back",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || rules().matches(SECONDARY).count() == 2,
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(watch.id() as i32, libc::SIGTERM) };
    let done = watch.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "watch under {caps:?}: {}",
        String::from_utf8_lossy(&done.stderr)
    );

    // Each capability is needed: without CAP_SYS_ADMIN the pinned owner tables cannot be read
    // (BPF_MAP_GET_FD_BY_ID); without CAP_NET_ADMIN no rule can be changed.
    let without =
        |cap: &str| -> Vec<String> { caps.iter().filter(|c| *c != cap).cloned().collect() };
    let no_sys = out(&mut capped(&e, &bin, &without("sys_admin"), &["status"]));
    assert!(
        !no_sys.status.success(),
        "status without CAP_SYS_ADMIN succeeded"
    );
    let no_net = out(&mut capped(&e, &bin, &without("net_admin"), &["detach"]));
    assert!(
        !no_net.status.success(),
        "detach without CAP_NET_ADMIN succeeded"
    );

    ok(&mut capped(&e, &bin, &caps, &["detach"]));
    assert!(
        !topo.peer().ping(SECONDARY, 2).unwrap(),
        "secondary answers after detach"
    );
}

fn podman() -> Command {
    // Debian's podman here: runc (crun is not installed), cgroupfs (systemd is not PID 1).
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "/usr/sbin/runc", "--cgroup-manager=cgroupfs"]);
    cmd
}

/// Removes the container and the image it loaded, also when the test fails.
struct Container {
    name: String,
    image: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
        let _ = podman().args(["rmi", "-f", &self.image]).output();
    }
}

#[test]
fn image_runs_watch_under_podman_and_enforcement_outlives_the_container() {
    let image = artifact(&format!("enipin-{VERSION}.oci.tar"));
    let topo = Topology::build().expect("building the lab topology");
    let e = Enipin::in_ns(topo.host());
    assert!(
        !topo.peer().ping(SECONDARY, 2).unwrap(),
        "secondary answers before enipin"
    );
    let ctr = Container {
        name: unique("enipin-ctr-"),
        image: format!("localhost/enipin:{VERSION}"),
    };
    let caps = unit_capabilities().join(",");
    // The DaemonSet's privileges as far as podman can narrow them: the unit's capabilities, and
    // the read-only /proc/sys of every unprivileged container (podman's default, as Kubernetes'):
    // the interfaces' sysctls go over netlink. The pins go to the host's bpffs (here the test's
    // own instance).
    ok(podman()
        .args(["run", "-d", "--name", &ctr.name])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .arg(format!("--network=ns:/run/netns/{}", e.ns_name()))
        .args(["--cap-drop", "all", "--cap-add", &caps])
        .arg("-v")
        .arg(format!("{}:/sys/fs/bpf", e.pins.mount().display()))
        .arg("-v")
        .arg(format!("{}:/run/enipin", e.state.path().display()))
        .arg(format!("oci-archive:{}", image.display())));
    eventually(
        "an answer from the secondary",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || topo.peer().ping(SECONDARY, 1).unwrap(),
    );
    let pid = ok(podman().args(["inspect", "-f", "{{.State.Pid}}", &ctr.name]));
    let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", pid.trim())).unwrap();
    let proc_sys = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/proc/sys"))
        .unwrap_or_else(|| panic!("the container has no /proc/sys mount:\n{mounts}"));
    assert!(
        proc_sys
            .split(' ')
            .nth(5)
            .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        "/proc/sys is writable in the container: {proc_sys}"
    );
    // Set from inside it all the same.
    assert_eq!(
        topo.host()
            .sh("cat /proc/sys/net/ipv4/conf/eth1/arp_ignore")
            .unwrap()
            .trim(),
        "1"
    );
    // watch logs on stderr, which `podman logs` passes on as its own stderr.
    let logs = out(podman().args(["logs", &ctr.name]));
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(
        logs.contains("watching"),
        "the image's default command is not watch:\n{logs}"
    );

    ok(podman().args(["stop", "-t", "5", &ctr.name]));
    let state = ok(podman().args(["inspect", "-f", "{{.State.ExitCode}}", &ctr.name]));
    assert_eq!(state.trim(), "0", "watch did not exit 0 on SIGTERM");
    // Stopped: the pins on the host's bpffs keep the datapath, the rules stay.
    assert!(
        !pins(e.pins.path()).unwrap().is_empty(),
        "no pins left after the container stopped"
    );
    assert!(
        topo.peer().ping(SECONDARY, 3).unwrap(),
        "enforcement stopped with the container"
    );
    e.ok(&["detach"]);
}

/// deploy/kubernetes/.
fn kube_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

/// `kustomize build DIR` with the kustomize `cargo xtask setup` unpacks from Debian trixie (the
/// machine's kubectl, if any, is not the project's).
fn kustomize_build(dir: &Path) -> String {
    ok(Command::new(root().join(".tools/bin/kustomize"))
        .arg("build")
        .arg(dir))
}

/// The documents of a `kustomize build` output.
fn documents(built: &str) -> Vec<serde_norway::Value> {
    built
        .split("\n---\n")
        .map(|d| serde_norway::from_str(d).unwrap_or_else(|e| panic!("{e}:\n{d}")))
        .collect()
}

/// The one document of `kind`.
fn one<'a>(docs: &'a [serde_norway::Value], kind: &str) -> &'a serde_norway::Value {
    let found: Vec<_> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "{} {kind} documents", found.len());
    found[0]
}

fn strings(v: &serde_norway::Value) -> Vec<String> {
    serde_norway::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v:?}"))
}

/// The base (deploy/kubernetes/base) and the EKS overlay (the base, the prometheus-operator
/// component, a nodeSelector), as `kustomize build` writes them, pass `kubernetes-validate
/// --strict` (Kubernetes 1.37's schemas, shipped in the package: offline). That tool has no
/// schema for the Prometheus Operator's kinds and only warns about them; PodMonitor and
/// PrometheusRule are checked instead against the CRDs' OpenAPI schemas as compiled by the npm
/// package `@kubernetes-models/prometheus-operator` 6.0.0 (types, enums, patterns, required
/// fields; pinned with integrity hashes in tests/crd/package-lock.json, installed by setup).
/// Those schemas, like the CRDs, allow unknown fields: the fields enipin relies on are asserted
/// here by name, and the PrometheusRule's rules by promtool (the test after this one).
#[test]
fn kustomize_output_validates_against_kubernetes_and_the_operators_schemas() {
    let tmp = TempDir::new("enipin-kustomize-").unwrap();
    for (name, dir, crds) in [
        ("base", kube_dir().join("base"), 0),
        ("eks", kube_dir().join("overlays/eks"), 2),
    ] {
        let built = kustomize_build(&dir);
        let file = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &built).unwrap();
        let validate = root().join(".tools/venv/bin/kubernetes-validate");
        let out = out(Command::new(&validate).arg("--strict").arg(&file));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{name}:\n{text}");
        let docs = documents(&built);
        for d in &docs {
            let kind = d["kind"].as_str().unwrap();
            let group = d["apiVersion"].as_str().unwrap();
            if group.starts_with("monitoring.coreos.com/") {
                assert!(
                    text.contains(&format!("Couldn't find schema for kind {kind}")),
                    "{name}: {kind}:\n{text}"
                );
            } else {
                let resource = format!("passed for resource {}/enipin", kind.to_lowercase());
                assert!(
                    text.contains(&resource),
                    "{name}: {kind} not validated:\n{text}"
                );
            }
        }
        // Every warning is one of the operator's kinds, checked below.
        for line in text.lines().filter(|l| l.starts_with("WARN")) {
            assert!(
                line.contains("kind PodMonitor") || line.contains("kind PrometheusRule"),
                "{name}: {line}"
            );
        }
        let json = serde_json::to_string(&docs).unwrap();
        let mut node = Command::new("node")
            .arg(root().join("tests/crd/validate.mjs"))
            .arg(root().join(".tools/crd-schemas"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running node (the machine's Node.js; cargo xtask setup needs its npm)");
        use std::io::Write as _;
        node.stdin
            .take()
            .unwrap()
            .write_all(json.as_bytes())
            .unwrap();
        let res = node.wait_with_output().unwrap();
        let checked = String::from_utf8_lossy(&res.stdout);
        assert!(
            res.status.success(),
            "{name}: the operator's schemas:\n{checked}{}",
            String::from_utf8_lossy(&res.stderr)
        );
        assert_eq!(checked.lines().count(), crds, "{name}:\n{checked}");
    }
}

/// The operator's schemas catch what they should: a PodMonitor whose interval is no duration
/// and whose port is a number fails (a validator that passes everything would pass the test
/// above).
#[test]
fn the_operators_schemas_reject_a_bad_podmonitor() {
    let docs = documents(&kustomize_build(&kube_dir().join("overlays/eks")));
    let mut pm = one(&docs, "PodMonitor").clone();
    pm["spec"]["podMetricsEndpoints"][0]["interval"] = "thirty".into();
    let json = serde_json::to_string(&[pm]).unwrap();
    let mut node = Command::new("node")
        .arg(root().join("tests/crd/validate.mjs"))
        .arg(root().join(".tools/crd-schemas"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running node");
    use std::io::Write as _;
    node.stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let res = node.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "a bad interval passed");
    assert!(err.contains("interval must match pattern"), "{err}");
}

/// The image is named once, in base/kustomization.yaml's `images:`, with the crate's version,
/// and never resolves to docker.io/library (a bare `enipin` would): the documented
/// `kustomize edit set image` in the base reaches the overlay's DaemonSet too.
#[test]
fn the_image_is_set_in_one_place_and_never_resolves_to_docker_hub() {
    let image_of = |dir: &Path| -> String {
        let docs = documents(&kustomize_build(dir));
        let ds = one(&docs, "DaemonSet");
        let containers = ds["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .unwrap();
        assert_eq!(containers.len(), 1);
        containers[0]["image"].as_str().unwrap().to_owned()
    };
    for dir in ["base", "overlays/eks"] {
        let image = image_of(&kube_dir().join(dir));
        assert_eq!(image, format!("registry.invalid/enipin:{VERSION}"), "{dir}");
        // A registry host: its first component has a dot (or a port), else docker.io/library.
        let host = image.split('/').next().unwrap();
        assert!(image.contains('/') && host.contains(['.', ':']), "{image}");
    }
    let mut names = 0;
    for entry in walk(&kube_dir()) {
        let text = std::fs::read_to_string(&entry).unwrap();
        names += text.matches("registry.invalid/enipin").count();
        assert!(
            !text.contains("newTag") || entry.ends_with("base/kustomization.yaml"),
            "a second image setting in {}",
            entry.display()
        );
    }
    // The DaemonSet's placeholder and the `images:` entry (and its comment's example).
    assert!(names >= 2, "{names}");
    // The README's and docs/kubernetes.md's recipe, on a copy of the tree.
    let tmp = TempDir::new("enipin-kustomize-edit-").unwrap();
    ok(Command::new("cp").arg("-r").arg(kube_dir()).arg(tmp.path()));
    let copy = tmp.path().join("kubernetes");
    let mine = format!("registry.example.com/ops/enipin:{VERSION}");
    ok(Command::new(root().join(".tools/bin/kustomize"))
        .current_dir(copy.join("base"))
        .args(["edit", "set", "image"])
        .arg(format!("registry.invalid/enipin={mine}")));
    assert_eq!(image_of(&copy.join("base")), mine);
    assert_eq!(image_of(&copy.join("overlays/eks")), mine);
}

/// Every file under `dir`, symlinks left out (as `cargo xtask dist` leaves them out).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_symlink() {
            continue;
        }
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The PrometheusRule's groups are deploy/prometheus/enipin-rules.yml's, value for value, and
/// pass `promtool check rules` on their own; the PodMonitor selects the DaemonSet's pods by
/// their labels in their namespace, on the container's named port; with the component the
/// prometheus.io annotations are gone (no second scrape), without it they are there.
#[test]
fn the_prometheus_operator_component_scrapes_the_daemonset_with_the_same_rules() {
    let base = documents(&kustomize_build(&kube_dir().join("base")));
    let eks = documents(&kustomize_build(&kube_dir().join("overlays/eks")));
    let rules: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/enipin-rules.yml")).unwrap(),
    )
    .unwrap();
    let pr = one(&eks, "PrometheusRule");
    assert_eq!(
        pr["spec"]["groups"], rules["groups"],
        "components/prometheus-operator/prometheusrule.yaml's spec.groups differ from \
         deploy/prometheus/enipin-rules.yml's groups: copy them over"
    );
    let tmp = TempDir::new("enipin-prometheusrule-").unwrap();
    let extracted = tmp.path().join("groups.yml");
    std::fs::write(&extracted, serde_norway::to_string(&pr["spec"]).unwrap()).unwrap();
    let checked = ok(Command::new("promtool")
        .args(["check", "rules"])
        .arg(&extracted));
    assert!(checked.contains("SUCCESS"), "{checked}");

    let pm = one(&eks, "PodMonitor");
    let ds = one(&eks, "DaemonSet");
    let pod = &ds["spec"]["template"];
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(&pod["metadata"]["labels"][k.as_str().unwrap()], v, "{k:?}");
    }
    assert_eq!(
        strings(&pm["spec"]["namespaceSelector"]["matchNames"]),
        [ds["metadata"]["namespace"].as_str().unwrap()]
    );
    let port = pm["spec"]["podMetricsEndpoints"][0]["port"]
        .as_str()
        .unwrap();
    let ports = pod["spec"]["containers"][0]["ports"].as_sequence().unwrap();
    assert!(
        ports.iter().any(|p| p["name"] == port),
        "no container port named {port}"
    );
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["path"], "/metrics");
    let annotations = |d: &serde_norway::Value| -> Vec<String> {
        d["spec"]["template"]["metadata"]["annotations"]
            .as_mapping()
            .map(|m| m.keys().map(|k| k.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    assert!(
        annotations(ds)
            .iter()
            .all(|a| !a.starts_with("prometheus.io/")),
        "{:?}",
        annotations(ds)
    );
    assert!(
        annotations(one(&base, "DaemonSet")).contains(&"prometheus.io/scrape".to_owned()),
        "the base is scraped by annotation"
    );
}

/// The DaemonSet as built: on the host network, the node's bpffs and state directory, every
/// node, probes on /healthz; unprivileged with the unit's capabilities and no others; and
/// without connmark (the image has no `nft`): no flag for it, and the ConfigMap keeps it off.
#[test]
fn kubernetes_daemonset_is_unprivileged_and_keeps_connmark_off() {
    for dir in ["base", "overlays/eks"] {
        let built = kustomize_build(&kube_dir().join(dir));
        for needed in [
            "hostNetwork: true",
            "priorityClassName: system-node-critical",
            "mountPropagation: HostToContainer",
            "path: /sys/fs/bpf",
            "path: /run/enipin",
            "operator: Exists",
            "livenessProbe",
            "readinessProbe",
            "path: /healthz",
            "--metrics-listen",
        ] {
            assert!(
                built.contains(needed),
                "{dir}: the DaemonSet has no {needed}"
            );
        }
        let docs = documents(&built);
        let ds = one(&docs, "DaemonSet");
        let containers = ds["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .unwrap();
        let caps: Vec<String> = unit_capabilities()
            .iter()
            .map(|c| c.to_uppercase())
            .collect();
        for c in containers {
            let sc = &c["securityContext"];
            let name = &c["name"];
            assert!(
                sc["privileged"].as_bool() != Some(true),
                "container {name:?} is privileged"
            );
            assert_eq!(
                sc["allowPrivilegeEscalation"].as_bool(),
                Some(false),
                "{name:?}"
            );
            assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{name:?}");
            assert_eq!(strings(&sc["capabilities"]["add"]), caps, "{name:?}");
            let args = strings(&c["args"]);
            assert!(
                args.iter().all(|a| !a.starts_with("--connmark")),
                "{dir}: {args:?}"
            );
        }
        let config = one(&docs, "ConfigMap")["data"]["enipin.toml"]
            .as_str()
            .unwrap()
            .to_owned();
        let config: toml::Table = toml::from_str(&config).unwrap();
        assert_eq!(
            config["layers"]["connmark"].as_bool(),
            Some(false),
            "{dir}: {config:?}"
        );
    }
}

/// deploy/cloud-init/user-data.yaml passes Debian bookworm's `cloud-init schema --config-file`
/// (cloud-init 22.4, unpacked by setup), which also rejects a user-data whose `runcmd` is not a
/// list (so the validator is not one that passes everything); the enipin.toml it writes passes
/// `enipin config check` of the released binary with its settings read from the file, as written
/// and after runcmd's edit beside amazon-ec2-net-utils (rules off).
#[test]
fn cloud_init_user_data_passes_cloud_init_schema_and_its_config_enipins_check() {
    let cloud_init = root().join(".tools/bin/cloud-init");
    let user_data = root().join("deploy/cloud-init/user-data.yaml");
    let valid = ok(Command::new(&cloud_init)
        .args(["schema", "--config-file"])
        .arg(&user_data));
    assert!(valid.contains("Valid cloud-config"), "{valid}");
    let tmp = TempDir::new("enipin-cloud-init-").unwrap();
    let text = std::fs::read_to_string(&user_data).unwrap();
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        text.replace("runcmd:\n  - - sh", "runcmd: 3\nx:\n  - - sh"),
    )
    .unwrap();
    let res = out(Command::new(&cloud_init)
        .args(["schema", "--config-file"])
        .arg(&bad));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        !res.status.success() && err.contains("runcmd"),
        "{}{err}",
        String::from_utf8_lossy(&res.stdout)
    );
    let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let file = doc["write_files"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/enipin/enipin.toml")
        .expect("the user-data writes /etc/enipin/enipin.toml");
    let content = file["content"].as_str().unwrap();
    let bin = unpack_tarball(tmp.path()).join("enipin");
    let check = |content: &str| -> String {
        let config = tmp.path().join("enipin.toml");
        std::fs::write(&config, content).unwrap();
        ok(Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .args(["config", "check"]))
    };
    // Each setting says where it came from: the file's line for the ones the user-data sets.
    let from_file = |checked: &str, setting: &str| {
        assert!(
            checked
                .lines()
                .any(|l| l.starts_with(setting) && l.contains("# file:")),
            "no {setting} from the file:\n{checked}"
        );
    };
    let checked = check(content);
    from_file(&checked, r#"metadata.source = "aws""#);
    from_file(&checked, r#"metrics.listen = "0.0.0.0:9717""#);
    from_file(&checked, "layers.rules = true");
    // runcmd's edit beside amazon-ec2-net-utils (`sed 's/^rules = true$/rules = false/'`).
    assert!(
        text.contains(r#"sed -i 's/^rules = true$/rules = false/' /etc/enipin/enipin.toml"#),
        "the user-data's runcmd no longer turns the rules off as tested here"
    );
    assert_eq!(content.matches("\nrules = true\n").count(), 1, "{content}");
    let checked = check(&content.replace("\nrules = true\n", "\nrules = false\n"));
    from_file(&checked, "layers.rules = false");
}

/// Each architecture's binaries, as file(1) names their machine.
const MACHINES: &[(&str, &str, &str, &str)] = &[
    // (rust target, Debian's and the OCI's arch, RPM's arch, file(1)'s machine)
    ("x86_64-unknown-linux-musl", "amd64", "x86_64", "x86-64"),
    (
        "aarch64-unknown-linux-musl",
        "arm64",
        "aarch64",
        "ARM aarch64",
    ),
];

/// `file` on `bin`: a static executable for `machine`.
fn assert_static_for(bin: &Path, machine: &str) {
    let file = ok(Command::new("file").arg("-L").arg(bin));
    assert!(
        file.contains(machine)
            && (file.contains("statically linked") || file.contains("static-pie")),
        "{} is not a static {machine} executable: {file}",
        bin.display()
    );
}

#[test]
fn every_architecture_has_a_tarball_deb_and_rpm_of_its_own_machine() {
    for (target, deb_arch, rpm_arch, machine) in MACHINES {
        let tmp = TempDir::new("enipin-arch-").unwrap();
        let tarball = artifact(&format!("enipin-{VERSION}-{target}.tar.gz"));
        ok(Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(tmp.path()));
        let top = tmp.path().join(format!("enipin-{VERSION}-{target}"));
        assert_static_for(&top.join("enipin"), machine);
        assert!(
            top.join("man/enipin.8.gz").is_file(),
            "{target}: no man page"
        );

        let deb = artifact(&format!("enipin_{VERSION}_{deb_arch}.deb"));
        let field = ok(Command::new("dpkg-deb")
            .arg("-f")
            .arg(&deb)
            .arg("Architecture"));
        assert_eq!(field.trim(), *deb_arch, "{}", deb.display());
        let unpacked = tmp.path().join("deb");
        ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
        assert_static_for(&unpacked.join("usr/sbin/enipin"), machine);

        let rpm = artifact(&format!("enipin-{VERSION}-1.{rpm_arch}.rpm"));
        let arch = ok(Command::new("rpm")
            .args(["-qp", "--qf", "%{ARCH}"])
            .arg(&rpm));
        assert_eq!(arch.trim(), *rpm_arch, "{}", rpm.display());
        let unpacked = tmp.path().join("rpm");
        std::fs::create_dir_all(&unpacked).unwrap();
        ok(Command::new("sh")
            .arg("-c")
            .arg("rpm2cpio \"$1\" | cpio -idm --quiet")
            .arg("sh")
            .arg(&rpm)
            .current_dir(&unpacked));
        assert_static_for(&unpacked.join("usr/sbin/enipin"), machine);
    }
}

/// A blob of an OCI layout by its digest (`sha256:...`).
fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs").join(digest.replacen(':', "/", 1))
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The image is one index of an amd64 and an arm64 image, read from the archive's own JSON: each
/// manifest's platform, its config's architecture, and the machine of the binary in its layer.
#[test]
fn image_is_an_index_of_amd64_and_arm64_images_with_their_own_binaries() {
    let image = artifact(&format!("enipin-{VERSION}.oci.tar"));
    let tmp = TempDir::new("enipin-oci-").unwrap();
    let layout = tmp.path();
    ok(Command::new("tar")
        .arg("-xf")
        .arg(&image)
        .arg("-C")
        .arg(layout));
    let top = json(&layout.join("index.json"));
    let entry = &top["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        format!("enipin:{VERSION}"),
        "{top}"
    );
    let index = json(&blob(layout, entry["digest"].as_str().unwrap()));
    let manifests = index["manifests"].as_array().expect("an image index");
    let mut archs: Vec<&str> = manifests
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap_or("?"))
        .collect();
    archs.sort();
    assert_eq!(archs, ["amd64", "arm64"], "{index}");
    for m in manifests {
        let arch = m["platform"]["architecture"].as_str().unwrap();
        assert_eq!(m["platform"]["os"], "linux", "{m}");
        let manifest = json(&blob(layout, m["digest"].as_str().unwrap()));
        let config = json(&blob(
            layout,
            manifest["config"]["digest"].as_str().unwrap(),
        ));
        assert_eq!(config["architecture"], arch, "{config}");
        let machine = MACHINES.iter().find(|(_, a, _, _)| *a == arch).unwrap().3;
        let files = tmp.path().join(format!("layer-{arch}"));
        std::fs::create_dir_all(&files).unwrap();
        for layer in manifest["layers"].as_array().unwrap() {
            ok(Command::new("tar")
                .arg("-xf")
                .arg(blob(layout, layer["digest"].as_str().unwrap()))
                .arg("-C")
                .arg(&files));
        }
        assert_static_for(&files.join("usr/sbin/enipin"), machine);
    }
}
