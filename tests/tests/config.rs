//! The config file from the command line: `config check` prints every setting with its source
//! and fails on a bad file naming the key and line; `attach` reads the file under its flags and
//! a bad one stops it before anything changes; `status` and `detach` never read it.

use std::{path::Path, process::Command};

use enipin_tests::{Enipin, Snapshot, TempDir, Topology, enipin_bin, rules};

/// `enipin ARGS` with `env`, outside any namespace (`config check` touches no network).
fn enipin(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(enipin_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("spawning enipin");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The `key = value  # source` line of `key` in `config check`'s output, as (value, source).
fn setting(out: &str, key: &str) -> (String, String) {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"));
    let (setting, source) = line.rsplit_once("  # ").unwrap();
    let value = setting.trim_end().strip_prefix(key).unwrap().trim_start();
    (value.to_owned(), source.to_owned())
}

fn write(dir: &Path, text: &str) -> String {
    let path = dir.join("enipin.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn config_check_prints_each_setting_with_its_source() {
    let dir = TempDir::new("enipin-config-").unwrap();
    let file = write(
        dir.path(),
        "[select]\ninterfaces = [\"eth1\"]\npriority = 30000\n\n[watch]\ninterval = 5\n",
    );
    let (ok, out, err) = enipin(
        &["config", "check", "--config", &file, "--priority", "31000"],
        &[("ENIPIN_PIN_DIR", "/sys/fs/bpf/enipin-x")],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().next().unwrap(),
        format!("# config file: {file}")
    );
    let want = [
        ("select.interfaces", "= [\"eth1\"]", "file:2"),
        ("select.priority", "= 31000", "flag"),
        ("select.table-base", "= 20000", "default"),
        ("select.gateway", "unset", "default"),
        ("watch.interval", "= 5", "file:6"),
        ("metrics.listen", "= \"127.0.0.1:9717\"", "default"),
        (
            "pin-dir",
            "= \"/sys/fs/bpf/enipin-x\"",
            "env ENIPIN_PIN_DIR",
        ),
    ];
    for (key, value, source) in want {
        assert_eq!(
            setting(&out, key),
            (value.to_owned(), source.to_owned()),
            "{out}"
        );
    }

    let (ok, json, err) = enipin(&["config", "check", "--json"], &[("ENIPIN_CONFIG", &file)]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["file"], file.as_str());
    assert_eq!(v["found"], true);
    assert_eq!(v["settings"]["select.priority"]["value"], 30000);
    assert_eq!(v["settings"]["select.priority"]["source"], "file:3");
}

#[test]
fn config_check_fails_on_a_bad_or_missing_file_naming_key_and_line() {
    let dir = TempDir::new("enipin-config-").unwrap();
    let file = write(
        dir.path(),
        "[select]\npriority = 1\n[layers]\nrule = false\n",
    );
    let (ok, out, err) = enipin(&["config", "check", "--config", &file], &[]);
    assert!(!ok, "{out}");
    assert!(
        err.starts_with(&format!(
            "enipin: {file}:4:1: layers.rule: unknown key; [layers] has rules, ebpf, connmark, \
             connmark-mask (man 5 enipin.toml)"
        )),
        "{err}"
    );
    let missing = dir.path().join("nothing.toml").display().to_string();
    for (args, env) in [
        (vec!["config", "check", "--config", &missing], vec![]),
        (
            vec!["config", "check"],
            vec![("ENIPIN_CONFIG", missing.as_str())],
        ),
    ] {
        let (ok, out, err) = enipin(&args, &env);
        assert!(!ok, "{out}");
        assert!(
            err.contains(&format!("config file {missing} does not exist")),
            "{err}"
        );
    }
}

/// In the lab: a bad file stops attach before it changes anything; a good one sets what the
/// flags leave to it; status and detach run with the bad file named all along.
#[test]
fn attach_reads_the_file_under_its_flags_and_status_and_detach_never_read_it() {
    let topo = Topology::build().expect("building the lab topology");
    let e = Enipin::in_ns(topo.host());
    let dir = TempDir::new("enipin-config-").unwrap();
    let bad = write(dir.path(), "[select]\npriority = -1\n");
    let before = Snapshot::take(topo.host(), &["eth0", "eth1"], e.pins.path()).unwrap();
    let err = e.fails(&["--config", &bad, "attach"]);
    assert!(
        err.contains(&format!(
            "{bad}:2:12: select.priority: invalid value: integer `-1`"
        )),
        "{err}"
    );
    let after = Snapshot::take(topo.host(), &["eth0", "eth1"], e.pins.path()).unwrap();
    assert!(before.diff(&after).is_empty(), "{:?}", before.diff(&after));

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[select]\npriority = 30000\ntable-base = 30000\n").unwrap();
    let good = good.display().to_string();
    e.ok(&["--config", &good, "attach", "--table-base", "31000"]);
    let r = rules(topo.host()).unwrap();
    let ours: Vec<_> = r.lines().filter(|l| l.contains("proto 229")).collect();
    assert!(!ours.is_empty(), "{r}");
    for l in &ours {
        assert!(
            l.starts_with("3000"),
            "not at the file's priority: {l}\n{r}"
        );
        // priority+1 looks up main; the source rules look up the managed tables.
        assert!(
            l.contains("lookup main") || l.contains("lookup 310"),
            "not in the flag's tables: {l}\n{r}"
        );
    }

    let mut status = e.command(&["status"]);
    status.env("ENIPIN_CONFIG", &bad);
    let out = status.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut detach = e.command(&["detach"]);
    detach.env("ENIPIN_CONFIG", &bad);
    let out = detach.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = Snapshot::take(topo.host(), &["eth0", "eth1"], e.pins.path()).unwrap();
    assert!(before.diff(&after).is_empty(), "{:?}", before.diff(&after));
}
