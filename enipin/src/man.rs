//! `enipin man DIR`: enipin(8) and a page per command, with the sections clap_mangen does not
//! write (EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES, SEE ALSO), and enipin.toml(5) from the
//! config file's key table ([`enipin::settings::keys`]). The examples are also `--help`'s.

use std::{io::Write as _, path::Path};

use anyhow::Result;
use clap::Command;
use clap_mangen::{
    Man,
    roff::{Inline, Roff, bold, italic, roman},
};
use enipin::settings::{
    config::{DEFAULT_PIN_DIR, DEFAULT_STATE_DIR},
    config_file::DEFAULT_CONFIG,
    keys::{self, Builtin, KEYS},
};

/// A command's examples: (command line, what it does). Keyed by the command's path.
fn examples(path: &str) -> &'static [(&'static str, &'static str)] {
    match path {
        "enipin" => &[
            ("enipin doctor", "what on this host would fight enipin"),
            ("enipin attach --dry-run", "what attach would change"),
            (
                "systemctl enable --now enipin",
                "run enipin watch as the service",
            ),
            ("enipin status", "what is installed, and any drift"),
        ],
        "enipin attach" => &[
            (
                "enipin attach --dry-run --format ip",
                "the changes as ip commands",
            ),
            (
                "enipin attach --interfaces eth0,eth1",
                "manage these two only",
            ),
            (
                "enipin attach --metadata aws --configure-addresses",
                "also the addresses EC2 assigns",
            ),
        ],
        "enipin watch" => &[
            (
                "enipin watch --interval 60 --metrics-listen none",
                "no HTTP server",
            ),
            (
                "systemctl kill -s HUP enipin",
                "make the service read its config file again",
            ),
        ],
        "enipin detach" => &[("enipin detach", "remove what enipin installed")],
        "enipin status" => &[
            ("enipin status --json", "the report for scripts"),
            ("enipin status || echo drift", "a health check"),
        ],
        "enipin stats" => &[("enipin stats --wide", "every counter per interface")],
        "enipin metrics" => &[(
            "enipin metrics --listen 127.0.0.1:9717",
            "serve GET /metrics without the watcher",
        )],
        "enipin doctor" => &[
            (
                "enipin doctor --interfaces eth0,eth1",
                "check before managing these",
            ),
            (
                "enipin doctor --json --root /mnt/image",
                "check an image's configuration",
            ),
        ],
        "enipin sysdump" => &[("enipin sysdump -o /tmp/enipin.tar.gz", "for a bug report")],
        "enipin render" => &[(
            "enipin render --format networkd",
            "networkd's configuration beside enipin",
        )],
        "enipin config" | "enipin config check" => &[
            (
                "enipin config check",
                "every setting and where it came from",
            ),
            (
                "enipin config check --config ./enipin.toml --priority 30000 --json",
                "another file, a flag over it, as JSON",
            ),
        ],
        "enipin lab" => &[
            ("enipin lab", "the seed scenario, PASS or FAIL"),
            (
                "enipin lab --subnets split --keep",
                "an ENI in a subnet of its own, kept",
            ),
        ],
        _ => &[],
    }
}

/// A command's exit statuses besides the ones every command has.
fn exit_statuses(path: &str) -> &'static [(u8, &'static str)] {
    match path {
        "enipin status" => &[
            (0, "attached without drift, or not attached at all"),
            (1, "attached with drift, or the state could not be read"),
        ],
        "enipin doctor" => &[(1, "a conflict was found, or an error")],
        "enipin config" | "enipin config check" => &[(1, "the config file is bad")],
        "enipin watch" => &[(0, "stopped by SIGTERM or SIGINT, the state left installed")],
        "enipin lab" => &[
            (0, "PASS"),
            (1, "FAIL"),
            (130, "interrupted; everything it made removed"),
        ],
        _ => &[],
    }
}

/// Every command: 0 done, 1 an error (on stderr), 2 the command line or the namespace.
const EVERY_EXIT: &[(u8, &str)] = &[
    (0, "success"),
    (1, "an error, printed on stderr as \"enipin: ...\""),
    (
        2,
        "a bad command line, or --netns names a namespace that cannot be entered",
    ),
];

/// The commands that read the config file.
const READS_CONFIG: &[&str] = &[
    "enipin attach",
    "enipin watch",
    "enipin render",
    "enipin doctor",
    "enipin config",
    "enipin config check",
];

/// Adds each command's examples to its `--help` (after the flags).
pub(crate) fn with_examples(cmd: Command) -> Command {
    with_examples_at(cmd, "enipin")
}

fn with_examples_at(mut cmd: Command, path: &str) -> Command {
    let ex = examples(path);
    if !ex.is_empty() {
        let lines: Vec<String> = (ex.iter())
            .map(|(line, what)| format!("  {line}\n      {what}"))
            .collect();
        cmd = cmd.after_long_help(format!("Examples:\n{}", lines.join("\n")));
    }
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        let sub_path = format!("{path} {name}");
        cmd = cmd.mut_subcommand(&name, |s| with_examples_at(s, &sub_path));
    }
    cmd
}

/// No `help` command at any level: it would be listed as enipin-help(8), a page not written.
fn without_help_command(mut cmd: Command) -> Command {
    cmd = cmd.disable_help_subcommand(true);
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(&name, without_help_command);
    }
    cmd
}

/// Writes every page into `dir`.
pub(crate) fn write(cmd: Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = without_help_command(cmd);
    // Propagates the global flags into every command's page and names them `enipin-<command>`.
    cmd.build();
    pages(&cmd, "enipin", dir)?;
    std::fs::write(dir.join("enipin.toml.5"), config_page().to_roff())?;
    Ok(())
}

/// The file names of the pages [`write`] writes for `cmd`: what SEE ALSO may name.
fn shipped(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

fn pages(cmd: &Command, path: &str, dir: &Path) -> Result<()> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    let mut out = Vec::new();
    page(cmd, path, &mut out)?;
    std::fs::write(dir.join(format!("{name}.8")), out)?;
    for sub in shipped(cmd) {
        pages(sub, &format!("{path} {}", sub.get_name()), dir)?;
    }
    Ok(())
}

/// clap_mangen's sections, then enipin's, then the version.
fn page(cmd: &Command, path: &str, out: &mut Vec<u8>) -> Result<()> {
    let man = Man::new(cmd.clone()).section("8");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    if shipped(cmd).next().is_some() {
        man.render_subcommands_section(out)?;
    }
    let mut roff = Roff::new();
    exit_status(&mut roff, path);
    environment(&mut roff, cmd, path);
    files(&mut roff);
    example_section(&mut roff, path);
    see_also(&mut roff, cmd, path);
    roff.to_writer(out)?;
    // Only enipin(8): the commands carry no version of their own (clap_mangen would panic).
    if cmd.get_version().is_some() {
        man.render_version_section(out)?;
    }
    out.flush()?;
    Ok(())
}

/// `.TP` with `tag` on its line, then `body`.
fn item(roff: &mut Roff, tag: Vec<Inline>, body: &str) {
    roff.control("TP", []);
    roff.text(tag);
    roff.text([roman(body)]);
}

fn exit_status(roff: &mut Roff, path: &str) {
    roff.control("SH", ["EXIT STATUS"]);
    let own = exit_statuses(path);
    let every = EVERY_EXIT
        .iter()
        .filter(|(c, _)| !own.iter().any(|(o, _)| o == c));
    let mut all: Vec<_> = own.iter().chain(every).collect();
    all.sort_by_key(|(c, _)| *c);
    for (code, what) in all {
        item(roff, vec![bold(code.to_string())], what);
    }
}

fn environment(roff: &mut Roff, cmd: &Command, path: &str) {
    roff.control("SH", ["ENVIRONMENT"]);
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        if let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) {
            let var = var.to_string_lossy();
            item(roff, vec![bold(var.as_ref())], &format!("as --{long}"));
        }
    }
    let rust_log = "filters the log lines (default info), e.g. RUST_LOG=debug";
    item(roff, vec![bold("RUST_LOG")], rust_log);
    let journal = "set by systemd: --log-format auto writes journal lines";
    item(roff, vec![bold("JOURNAL_STREAM")], journal);
    if path == "enipin" {
        let complete = "COMPLETE=bash (zsh, fish, elvish, powershell) enipin prints the shell's \
                        completion script, which completes interface names for --interfaces \
                        and namespaces for --netns";
        item(roff, vec![bold("COMPLETE")], complete);
    }
}

fn files(roff: &mut Roff) {
    roff.control("SH", ["FILES"]);
    let state = format!("{DEFAULT_STATE_DIR}/state.json");
    for (file, what) in [
        (
            DEFAULT_CONFIG,
            "the config file (--config); see enipin.toml(5)",
        ),
        (
            state.as_str(),
            "what the last attach installed and the sysctl values it replaced (--state-dir)",
        ),
        (
            DEFAULT_PIN_DIR,
            "the pinned program, links and maps on bpffs (--pin-dir)",
        ),
        ("/run/netns/NAME", "the namespaces --netns names"),
    ] {
        item(roff, vec![italic(file)], what);
    }
}

fn example_section(roff: &mut Roff, path: &str) {
    let ex = examples(path);
    if ex.is_empty() {
        return;
    }
    roff.control("SH", ["EXAMPLES"]);
    for (line, what) in ex {
        item(roff, vec![bold(*line)], what);
    }
}

/// The parent, the commands (each a page written), enipin.toml(5) where the file is read.
fn see_also(roff: &mut Roff, cmd: &Command, path: &str) {
    let mut refs: Vec<String> = Vec::new();
    if let Some((parent, _)) = path.rsplit_once(' ') {
        refs.push(format!("{}(8)", parent.replace(' ', "-")));
    }
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    refs.extend(shipped(cmd).map(|s| format!("{name}-{}(8)", s.get_name())));
    if path == "enipin" || READS_CONFIG.contains(&path) {
        refs.push("enipin.toml(5)".to_owned());
    }
    refs.extend(["ip-rule(8)", "tc-bpf(8)"].map(String::from));
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(refs.join(", "))]);
}

/// `code` in backticks bold, the rest roman.
fn prose(text: &str) -> Vec<Inline> {
    (text.split('`').enumerate())
        .filter(|(_, s)| !s.is_empty())
        .map(|(i, s)| if i % 2 == 1 { bold(s) } else { roman(s) })
        .collect()
}

/// enipin.toml(5), from [`KEYS`].
fn config_page() -> Roff {
    let mut roff = Roff::new();
    let version = env!("CARGO_PKG_VERSION");
    roff.control("TH", ["ENIPIN.TOML", "5", "", &format!("enipin {version}")]);
    roff.control("SH", ["NAME"]);
    roff.text([roman("enipin.toml - enipin's config file")]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([italic(DEFAULT_CONFIG)]);
    roff.control("SH", ["DESCRIPTION"]);
    roff.text(prose(
        "`enipin attach`, `watch`, `render`, `doctor` and `config check` read this TOML file \
         (another: --config PATH or $ENIPIN_CONFIG). Each setting is the built-in default, \
         overridden by the file, overridden by its flag. A missing default file means the \
         defaults; a file named with --config must exist. An unknown key or a bad value is an \
         error naming the file, line:column and key, and the command changes nothing. \
         `enipin config check` prints every setting with where it came from. SIGHUP makes \
         `enipin watch` read the file again and apply what changed; a bad file is logged and \
         the running configuration kept.",
    ));
    roff.control("PP", []);
    roff.text(prose(
        "--pin-dir, --state-dir and --netns are not keys: every command needs them, also those \
         that never read the file.",
    ));
    for section in keys::sections() {
        roff.control("SH", [format!("[{section}]").as_str()]);
        for k in KEYS.iter().filter(|k| k.section() == section) {
            key_item(&mut roff, k);
        }
    }
    roff.control("SH", ["EXAMPLES"]);
    roff.text([roman(
        "Manage two interfaces, with connmark, and no metrics server:",
    )]);
    roff.control("PP", []);
    roff.control("nf", []);
    for line in [
        "[select]",
        "interfaces = [\"eth0\", \"eth1\"]",
        "",
        "[layers]",
        "connmark = true",
        "",
        "[metrics]",
        "listen = \"none\"",
    ] {
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
    roff.control("SH", ["FILES"]);
    item(&mut roff, vec![italic(DEFAULT_CONFIG)], "the file");
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman("enipin(8), enipin-config-check(8), enipin-watch(8)")]);
    roff
}

/// `key` = default (type; flag), then what it does.
fn key_item(roff: &mut Roff, k: &keys::KeyDoc) {
    roff.control("TP", []);
    let default = match k.default {
        Builtin::Value(v) => format!(" = {v}"),
        Builtin::Unset { .. } => " (unset)".to_owned(),
    };
    let flag = k.flag.map_or("no flag".to_owned(), |f| format!("flag {f}"));
    roff.text([
        bold(k.key()),
        roman(default),
        italic(format!("  ({}; {flag})", k.ty)),
    ]);
    roff.text(prose(k.what));
}

#[cfg(test)]
mod tests {
    use std::process::Command as Process;

    use super::*;

    struct Dir(std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn written() -> (Dir, Vec<String>) {
        let dir = Dir(std::env::temp_dir().join(format!("enipin-man-{}", std::process::id())));
        write(crate::command(), &dir.0).unwrap();
        let mut names: Vec<String> = (std::fs::read_dir(&dir.0).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        (dir, names)
    }

    /// groff formats every page without a warning (-ww: all of them), each page has the
    /// sections, and SEE ALSO names only pages written (enipin-help(8) was listed, not shipped).
    #[test]
    fn pages_format_cleanly_and_name_only_pages_that_ship() {
        let (dir, names) = written();
        assert!(names.contains(&"enipin.toml.5".to_owned()), "{names:?}");
        assert!(
            names.contains(&"enipin-config-check.8".to_owned()),
            "{names:?}"
        );
        assert!(
            !names
                .iter()
                .any(|n| n.contains("help") || n.contains("completions"))
        );
        for name in &names {
            let path = dir.0.join(name);
            let out = Process::new("groff")
                .args(["-man", "-ww", "-z"])
                .arg(&path)
                .output()
                .expect("groff (package groff-base)");
            let warnings = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && warnings.is_empty(),
                "{name}: {warnings}"
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let sections = [
                "EXIT STATUS",
                "ENVIRONMENT",
                "FILES",
                "EXAMPLES",
                "SEE ALSO",
            ];
            for section in sections.iter().filter(|_| name.ends_with(".8")) {
                let has = text.contains(&format!(".SH \"{section}\""))
                    || text.contains(&format!(".SH {section}\n"));
                let no_examples = *section == "EXAMPLES" && examples_of(name).is_empty();
                assert!(has || no_examples, "{name} has no {section}");
            }
            for reference in see_also_of(&text) {
                let (page, section) = reference.trim_end_matches(')').split_once('(').unwrap();
                let shipped = names.contains(&format!("{page}.{section}"));
                let system = ["ip-rule", "tc-bpf"].contains(&page);
                assert!(shipped || system, "{name} names {reference}, not written");
            }
        }
    }

    fn examples_of(file: &str) -> &'static [(&'static str, &'static str)] {
        examples(&file.trim_end_matches(".8").replace('-', " "))
    }

    fn see_also_of(text: &str) -> Vec<String> {
        let after = text.split(".SH \"SEE ALSO\"\n").nth(1).unwrap_or_default();
        let line = after.lines().next().unwrap_or_default();
        line.split(", ").map(|r| r.replace("\\-", "-")).collect()
    }

    /// enipin.toml(5) has every key of the table under its section, with its default.
    #[test]
    fn the_config_page_has_every_key() {
        let page = config_page().to_roff().replace("\\-", "-");
        for k in KEYS {
            let section = format!(".SH [{}]", k.section());
            let under = page
                .split(&section)
                .nth(1)
                .unwrap_or_else(|| panic!("no {section}"));
            let this = under.split(".SH").next().unwrap();
            assert!(this.contains(&format!("\\fB{}\\fR", k.key())), "{}", k.name);
            if let Builtin::Value(v) = k.default {
                assert!(this.contains(&format!("= {}", v.replace('-', "\\-"))) || this.contains(v));
            }
        }
    }
}
