//! `enipin sysdump`: one .tar.gz to attach to a bug report, so nobody has to ask for ten
//! outputs one at a time: the version and the program's tag, `status`, `doctor`, `stats` and
//! `config check` as JSON, the namespace's rules, routes, addresses and TC, the pins, and the
//! unit's journal where systemd runs. It only reads, and holds nothing secret: enipin never
//! keeps the metadata service's token, and no part asks the service for one.
//!
//! Each of enipin's own reports runs as this binary's child, with the global flags given here,
//! so a part that fails (status exits 1 on drift, doctor on a conflict) or hangs is recorded in
//! `manifest.txt` and the rest is still written.

use std::{
    ffi::OsString,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};

use crate::{
    datapath,
    kernel::{
        capture::{Captured, capture},
        discover::discover,
        netlink::Netlink,
    },
    settings::config::Paths,
};

/// Each part's limit: doctor, the slowest, reads every unit file and process in well under a
/// second here; a hung tool must not hang the bundle (every part at its limit: under 5 min).
const LIMIT: Duration = Duration::from_secs(15);
/// The journal's last lines: a day of a watcher that logs one line per change.
const JOURNAL_LINES: &str = "2000";

/// One file of the bundle.
struct Part {
    name: String,
    captured: Captured,
}

/// Writes the bundle to `out` (default: `enipin-sysdump-<unix time>.tar.gz` here) and returns
/// its path. `globals`: the global flags to give enipin's own reports (pin and state dirs,
/// config).
pub async fn sysdump(paths: &Paths, globals: &[OsString], out: Option<PathBuf>) -> Result<PathBuf> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let out = out.unwrap_or_else(|| PathBuf::from(format!("enipin-sysdump-{now}.tar.gz")));
    let mut parts = reports(globals).await?;
    parts.extend(namespace().await);
    parts.extend(journal().await);
    let version = version(paths);
    let pins = pins(paths);
    let manifest = manifest(&parts);
    let top = format!("enipin-sysdump-{now}");
    let file =
        std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::default(),
    ));
    let mut add = |name: &str, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(now);
        tar.append_data(&mut h, format!("{top}/{name}"), data)
            .with_context(|| format!("adding {name} to {}", out.display()))
    };
    add("manifest.txt", manifest.as_bytes())?;
    add("version.txt", version.as_bytes())?;
    add("pins.txt", pins.as_bytes())?;
    for p in &parts {
        add(&p.name, &p.captured.stdout)?;
        if !p.captured.stderr.is_empty() {
            add(&format!("{}.stderr", p.name), &p.captured.stderr)?;
        }
    }
    tar.into_inner()?.finish()?;
    Ok(out)
}

/// enipin's own reports, each from a child of this binary.
async fn reports(globals: &[OsString]) -> Result<Vec<Part>> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut parts = Vec::new();
    for (name, args) in [
        ("status.json", &["status", "--json"][..]),
        ("doctor.json", &["doctor", "--json"]),
        ("stats.json", &["stats", "--json"]),
        ("config.json", &["config", "check", "--json"]),
    ] {
        let args: Vec<OsString> = (globals.iter().cloned())
            .chain(args.iter().map(OsString::from))
            .collect();
        let captured = capture(&exe, &args, LIMIT).await;
        parts.push(Part {
            name: name.to_owned(),
            captured,
        });
    }
    Ok(parts)
}

/// The namespace as iproute2 prints it: rules, routes of every table, addresses, and each
/// interface's TC egress (tcx links are in `status.json`; `tc` shows clsact filters).
async fn namespace() -> Vec<Part> {
    let mut cmds: Vec<(String, Vec<String>)> = [
        ("ip-rule.txt", "ip -4 rule show"),
        ("ip6-rule.txt", "ip -6 rule show"),
        ("ip-route.txt", "ip -4 route show table all"),
        ("ip6-route.txt", "ip -6 route show table all"),
        ("ip-addr.txt", "ip -d addr show"),
        ("tc-qdisc.txt", "tc -s qdisc show"),
    ]
    .iter()
    .map(|(n, c)| (n.to_string(), c.split(' ').map(str::to_owned).collect()))
    .collect();
    let names = match Netlink::connect() {
        Ok(nl) => discover(&nl)
            .await
            .map(|d| d.interfaces)
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    for i in names {
        let args = ["tc", "-s", "filter", "show", "dev", &i.name, "egress"];
        cmds.push((
            format!("tc-egress-{}.txt", i.name),
            args.iter().map(|a| a.to_string()).collect(),
        ));
    }
    let mut parts = Vec::new();
    for (name, cmd) in cmds {
        let captured = capture(&cmd[0], &cmd[1..], LIMIT).await;
        parts.push(Part { name, captured });
    }
    parts
}

/// The unit's recent journal, where systemd runs (a container or a test has none: the
/// manifest says so).
async fn journal() -> Option<Part> {
    if !Path::new("/run/systemd/system").exists() {
        return None;
    }
    let args = [
        "-u",
        "enipin.service",
        "-n",
        JOURNAL_LINES,
        "--no-pager",
        "-o",
        "short-iso",
    ];
    Some(Part {
        name: "journal.txt".to_owned(),
        captured: capture("journalctl", &args, LIMIT).await,
    })
}

/// This binary, the kernel, and the program pinned (its tag is what the kernel runs).
fn version(paths: &Paths) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let program = match datapath::pinned_program(paths) {
        Ok(Some(p)) => format!("id {}, tag {:016x}", p.id, p.tag),
        Ok(None) => format!("none pinned under {}", paths.pin_dir.display()),
        Err(e) => format!("unreadable: {e:#}"),
    };
    format!(
        "enipin {}\nkernel {}\ndatapath program: {program}\n",
        crate::VERSION,
        kernel.trim()
    )
}

/// The pin directory's entries (names only: a pin's contents are kernel objects).
fn pins(paths: &Paths) -> String {
    let dir = &paths.pin_dir;
    match std::fs::read_dir(dir) {
        Err(e) => format!("{}: {e}\n", dir.display()),
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            let mut out = format!("{}:\n", dir.display());
            for n in names {
                let _ = writeln!(out, "  {n}");
            }
            out
        }
    }
}

/// One line per part: its file, how it ended, its size, the command that wrote it.
fn manifest(parts: &[Part]) -> String {
    let mut out = String::from("# file  ended  bytes  command\n");
    for p in parts {
        let c = &p.captured;
        let ended = match &c.ended {
            Ok(Some(code)) => format!("exit {code}"),
            Ok(None) => "killed by a signal".to_owned(),
            Err(why) => why.clone(),
        };
        let _ = writeln!(
            out,
            "{}  {ended}  {}  {}",
            p.name,
            c.stdout.len(),
            c.command
        );
    }
    out
}
