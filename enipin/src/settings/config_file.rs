//! The config file, `/etc/enipin/enipin.toml` (`--config PATH`, `$ENIPIN_CONFIG`): its schema and
//! reading it. Every key is optional and keeps its span, so [`crate::settings`] can say which
//! line a value came from; an unknown key or a bad value is an error that names the key and its
//! line:column, on one line (a failed reload in `watch` is one log line).
//!
//! A section is a struct here, a field of [`File`], and its keys' picks in
//! [`crate::settings`]; the keys are the flags' names (`table-base` for `--table-base`). Every
//! key is also a row of [`crate::settings::keys::KEYS`], which documents it (its tests fail
//! until it is).

use std::{net::IpAddr, num::NonZeroU64, path::PathBuf};

use anyhow::{Context as _, Result, anyhow};
use serde::Deserialize;
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use crate::settings::config::{Attach, DelegatedPrefix, Listen, MetadataSource, Mode};

/// Where enipin looks when neither `--config` nor `$ENIPIN_CONFIG` names a file.
pub const DEFAULT_CONFIG: &str = "/etc/enipin/enipin.toml";

/// One key: absent, or its value and where the file has it.
pub(crate) type Key<T> = Option<Spanned<T>>;

/// The whole file: sections, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct File {
    pub(crate) select: Select,
    pub(crate) layers: Layers,
    pub(crate) datapath: Datapath,
    pub(crate) watch: Watch,
    pub(crate) metrics: Metrics,
    pub(crate) metadata: Metadata,
}

/// `[select]`: which interfaces, and the numbers of their tables and rules.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Select {
    pub(crate) interfaces: Key<Vec<String>>,
    pub(crate) gateway: Key<IpAddr>,
    pub(crate) table_base: Key<u32>,
    pub(crate) priority: Key<u32>,
    pub(crate) prefixes: Key<Vec<DelegatedPrefix>>,
}

/// `[layers]`: policy routing (with its sysctls), connmark and the datapath, each on or off.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Layers {
    pub(crate) rules: Key<bool>,
    pub(crate) ebpf: Key<bool>,
    pub(crate) connmark: Key<bool>,
    #[serde(rename = "connmark-mask")]
    pub(crate) connmark_mask: Key<u32>,
}

/// `[datapath]`: how the TC egress program behaves and hooks in.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Datapath {
    pub(crate) mode: Key<Mode>,
    pub(crate) debug: Key<bool>,
    pub(crate) attach: Key<Attach>,
}

/// `[watch]`: the watcher's safety-net period.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Watch {
    pub(crate) interval: Key<NonZeroU64>,
}

/// `[metrics]`: where the watcher serves `/metrics` and `/healthz`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Metrics {
    pub(crate) listen: Key<Listen>,
}

/// `[metadata]`: secondary addresses and delegated prefixes from the cloud's metadata service.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Metadata {
    pub(crate) source: Key<MetadataSource>,
    pub(crate) endpoint: Key<String>,
    pub(crate) configure_addresses: Key<bool>,
    pub(crate) interval: Key<NonZeroU64>,
}

/// Which file to read: the default one may be missing (built-in defaults), one named by
/// `--config` or `$ENIPIN_CONFIG` must exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigPath {
    /// The file.
    pub path: PathBuf,
    /// Named by the operator (`--config`, `$ENIPIN_CONFIG`), not the default.
    pub explicit: bool,
}

impl ConfigPath {
    /// `--config` / `$ENIPIN_CONFIG` if given, else the default path.
    pub fn new(given: Option<PathBuf>) -> Self {
        match given {
            Some(path) => Self {
                path,
                explicit: true,
            },
            None => Self {
                path: DEFAULT_CONFIG.into(),
                explicit: false,
            },
        }
    }
}

/// A file read and parsed; `text` for the line numbers of its values.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) text: String,
    pub(crate) file: File,
}

/// Reads and parses the file; `None` when the default file does not exist.
pub(crate) fn read(at: &ConfigPath) -> Result<Option<Loaded>> {
    let shown = at.path.display();
    let text = match std::fs::read_to_string(&at.path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !at.explicit => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(anyhow!(
                "config file {shown} does not exist: create it (packaging/enipin.toml is a \
                 commented example), or name another with --config / $ENIPIN_CONFIG, or give \
                 neither to use {DEFAULT_CONFIG} if it exists"
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("reading config file {shown}")),
    };
    let file = parse(&text).map_err(|e| anyhow!("{shown}:{e}"))?;
    Ok(Some(Loaded { text, file }))
}

/// Parses a file's text; the error is `LINE:COLUMN: KEY: what is wrong`.
pub(crate) fn parse(text: &str) -> Result<File, String> {
    toml::from_str(text).map_err(|e| {
        let Some(at) = e.span().map(|s| s.start) else {
            return e.message().to_owned();
        };
        let (line, column) = line_column(text, at);
        match key_at(text, at) {
            Some(key) => format!("{line}:{column}: {key}: {}", message(&key, e.message())),
            None => format!("{line}:{column}: {}", e.message()),
        }
    })
}

/// serde's message, but an unknown key names the keys of its section from the table
/// ([`crate::settings::keys`]) that enipin.toml(5) shows, not the struct's fields.
fn message(key: &str, serde: &str) -> String {
    use crate::settings::keys;
    if !serde.starts_with("unknown field") {
        return serde.to_owned();
    }
    match key.split_once('.') {
        Some((section, _)) => {
            let known = keys::keys_of(section).join(", ");
            format!("unknown key; [{section}] has {known} (man 5 enipin.toml)")
        }
        None => {
            let known = keys::sections().join(", ");
            format!("unknown section; the sections are {known} (man 5 enipin.toml)")
        }
    }
}

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    line_column(text, offset).0
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The dotted key (`select.priority`) whose name or value covers byte `at`; `None` for a
/// syntax error (no document to walk) or a position outside any key.
fn key_at(text: &str, at: usize) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find_key(doc.get_ref(), at, &mut path).then(|| path.join("."))
}

fn find_key(table: &DeTable<'_>, at: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table {
        path.push(key.get_ref().to_string());
        if key.span().contains(&at) {
            return true;
        }
        // A table's own span is its header; its keys have theirs.
        let inside = match value.get_ref() {
            DeValue::Table(t) => find_key(t, at, path),
            _ => value.span().contains(&at),
        };
        if inside {
            return true;
        }
        path.pop();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_column() {
        let e = parse("[select]\npriority = 5\nprefix = []\n").unwrap_err();
        assert!(
            e.starts_with("3:1: select.prefix: unknown key; [select] has interfaces, gateway,"),
            "{e}"
        );
        let e = parse("\n[selection]\n").unwrap_err();
        assert!(
            e.starts_with("2:2: selection: unknown section; the sections are select, layers,"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_value_is_named_with_its_line_and_column() {
        let e = parse("[select]\n\npriority = \"high\"\n").unwrap_err();
        assert_eq!(
            e,
            "3:12: select.priority: invalid type: string \"high\", expected u32"
        );
        let e = parse("[watch]\ninterval = 0\n").unwrap_err();
        assert!(e.starts_with("2:12: watch.interval: invalid value"), "{e}");
        // toml spans an element's error over the whole list; the message quotes the entry.
        let e = parse("[select]\nprefixes = [\n  \"eth1=198.18.0.65/28\",\n]\n").unwrap_err();
        assert!(
            e.starts_with(
                "2:12: select.prefixes: \"eth1=198.18.0.65/28\": 198.18.0.65 has host bits"
            ),
            "{e}"
        );
        let e = parse("[datapath]\nmode = \"block\"\n").unwrap_err();
        assert!(
            e.starts_with(
                "2:8: datapath.mode: unknown variant `block`, expected `enforce` or `monitor`"
            ),
            "{e}"
        );
        let e = parse("[metrics]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(
            e.starts_with("2:10: metrics.listen: \"localhost\": "),
            "{e}"
        );
    }

    #[test]
    fn a_syntax_error_has_its_line() {
        let e = parse("[select]\npriority = \n").unwrap_err();
        assert!(e.starts_with("2:12: "), "{e}");
    }

    #[test]
    fn a_missing_default_file_is_fine_a_missing_named_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("enipin-config-test-{}", std::process::id()));
        let path = dir.join("enipin.toml");
        let default = ConfigPath {
            path: path.clone(),
            explicit: false,
        };
        assert!(read(&default).unwrap().is_none());
        let named = ConfigPath {
            path: path.clone(),
            explicit: true,
        };
        let e = read(&named).unwrap_err().to_string();
        assert!(e.contains("does not exist: create it"), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn a_bad_file_is_an_error_naming_the_path() {
        let dir = std::env::temp_dir().join(format!("enipin-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("enipin.toml");
        std::fs::write(&path, "[layers]\nrules = \"no\"\n").unwrap();
        let at = ConfigPath {
            path: path.clone(),
            explicit: false,
        };
        let e = read(&at).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            e,
            format!(
                "{}:2:9: layers.rules: invalid type: string \"no\", expected a boolean",
                path.display()
            )
        );
    }
}
