//! The effective settings of `attach`, `watch`, `render`, `doctor` and `config check`: the built-in
//! default, overridden by the config file ([`crate::settings::config_file`]), overridden by the command
//! line's flags, key by key, each value with where it came from. `watch` loads them again on
//! SIGHUP with the same flags, so a flag still wins over the reloaded file.
//!
//! No file key has an environment variable; `--pin-dir`, `--state-dir` and `--netns` (which do)
//! are not in the file: every command needs them, also those that never read the file
//! (`detach`, `status`), and they must agree with `watch` on them.

pub mod config;
pub mod config_file;
pub mod keys;

use std::{fmt, net::IpAddr, num::NonZeroU64, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::Value;
use toml::Spanned;

use config::{
    Config, DEFAULT_INTERVAL, DEFAULT_LISTEN, DEFAULT_METADATA_INTERVAL, DelegatedPrefix, Listen,
    MetadataSource, Mode,
};
use config_file::{ConfigPath, File, Key};

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Built into enipin.
    Default,
    /// The config file, at this line.
    File {
        /// 1-based.
        line: usize,
    },
    /// This environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File { line } => write!(f, "file:{line}"),
            Self::Env(var) => write!(f, "env {var}"),
            Self::Flag => f.write_str("flag"),
        }
    }
}

/// One key of the effective settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Dotted, as in the file: `select.priority`.
    pub key: &'static str,
    /// As JSON: a string, number, boolean or array of strings (the same literal in TOML), or
    /// null for a key that is unset.
    pub value: Value,
    /// Where it came from.
    pub source: Source,
}

/// What the command line gave for the file's keys; `None`: not given (the file or the default
/// decides). `rules`/`ebpf` are `Some(false)` for `--no-rules`/`--no-ebpf`, `debug` is
/// `Some(true)` for `--debug`: a flag can only turn on what it names.
#[derive(Clone, Debug, Default)]
pub struct Given {
    /// `--interfaces`.
    pub interfaces: Option<Vec<String>>,
    /// `--gateway`.
    pub gateway: Option<IpAddr>,
    /// `--table-base`.
    pub table_base: Option<u32>,
    /// `--priority`.
    pub priority: Option<u32>,
    /// `--prefix`, all of them.
    pub prefixes: Option<Vec<DelegatedPrefix>>,
    /// `--no-rules`.
    pub rules: Option<bool>,
    /// `--no-ebpf`.
    pub ebpf: Option<bool>,
    /// `--connmark`.
    pub connmark: Option<bool>,
    /// `--connmark-mask`.
    pub connmark_mask: Option<u32>,
    /// `--mode`.
    pub mode: Option<Mode>,
    /// `--debug`.
    pub debug: Option<bool>,
    /// `--interval`, seconds (at least 1).
    pub interval: Option<u64>,
    /// `--metrics-listen`.
    pub listen: Option<Listen>,
    /// `--metadata`.
    pub metadata: Option<MetadataSource>,
    /// `--metadata-endpoint`.
    pub metadata_endpoint: Option<String>,
    /// `--configure-addresses`.
    pub configure_addresses: Option<bool>,
    /// `--metadata-interval`, seconds (at least 1).
    pub metadata_interval: Option<u64>,
}

/// The effective settings, and where each came from.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What `attach` and `watch` install.
    pub config: Config,
    /// `watch`'s safety-net period, seconds.
    pub interval: u64,
    /// Where `watch` serves metrics and health.
    pub listen: Listen,
    /// `watch`'s period between metadata lookups, seconds.
    pub metadata_interval: u64,
    /// The config file.
    pub file: PathBuf,
    /// Whether it exists (only the default file may not).
    pub found: bool,
    /// Every key, in the file's order of sections.
    pub entries: Vec<Entry>,
}

/// The config file to read and the flags to lay over it: loads the settings, at start and again
/// on every SIGHUP.
#[derive(Clone, Debug)]
pub struct Loader {
    /// `--config` / `$ENIPIN_CONFIG`, or the default path.
    pub path: ConfigPath,
    /// The flags.
    pub given: Given,
}

impl Loader {
    /// Reads the file (a missing default file is no file) and lays the flags over it.
    pub fn load(&self) -> Result<Settings> {
        let loaded = config_file::read(&self.path)?;
        let found = loaded.is_some();
        let (text, parsed) = loaded.map_or_else(Default::default, |l| (l.text, l.file));
        let mut s = merge(parsed, &text, self.given.clone());
        (s.file, s.found) = (self.path.path.clone(), found);
        let c = &s.config;
        if c.connmark {
            crate::model::connmark::check_mask(c.connmark_mask)
                .context("layers.connmark-mask (--connmark-mask)")?;
            if !c.rules {
                bail!(
                    "layers.connmark (--connmark) routes replies with fwmark rules, and the rules \
                     are off (layers.rules = false, --no-rules): turn one of them around"
                );
            }
        }
        if c.configure_addresses && c.metadata == MetadataSource::None {
            bail!(
                "metadata.configure-addresses (--configure-addresses) adds the addresses a \
                 metadata source assigns, and none is set: add --metadata aws (metadata.source \
                 = \"aws\"), or drop it"
            );
        }
        Ok(s)
    }
}

/// Records each key's pick.
struct Picks<'a> {
    text: &'a str,
    entries: Vec<Entry>,
}

impl Picks<'_> {
    /// The flag if given, else the file's value, else `default`.
    fn pick<T: Serialize>(
        &mut self,
        key: &'static str,
        default: T,
        file: Key<T>,
        flag: Option<T>,
    ) -> T {
        let (value, source) = match (flag, file) {
            (Some(v), _) => (v, Source::Flag),
            (None, Some(f)) => {
                let line = config_file::line_of(self.text, f.span().start);
                (f.into_inner(), Source::File { line })
            }
            (None, None) => (default, Source::Default),
        };
        // Every key is the table's, which enipin.toml(5) is written from (keys.rs's tests
        // check the other direction, and that every debug-built pick passes here).
        debug_assert!(keys::named(key).is_some(), "{key} is not in keys::KEYS");
        self.entries.push(Entry {
            key,
            // Plain data (strings, numbers, booleans, lists of strings): never fails.
            value: serde_json::to_value(&value).unwrap_or(Value::Null),
            source,
        });
        value
    }
}

/// A period in seconds: the file's type refuses 0, the settings hold plain seconds.
fn seconds(key: Key<NonZeroU64>) -> Key<u64> {
    key.map(|k| {
        let span = k.span();
        Spanned::new(span, k.into_inner().get())
    })
}

/// A key whose default is "unset".
fn optional<T>(key: Key<T>) -> Key<Option<T>> {
    key.map(|k| {
        let span = k.span();
        Spanned::new(span, Some(k.into_inner()))
    })
}

/// Lays `given` over `file` (whose text is `text`) over the defaults.
fn merge(file: File, text: &str, mut g: Given) -> Settings {
    let mut p = Picks {
        text,
        entries: Vec::new(),
    };
    let mut c = Config::default();
    // In the order `config check` lists them: the file's sections top to bottom.
    p.select(file.select, &mut g, &mut c);
    p.layers(file.layers, file.datapath, &mut g, &mut c);
    let interval = p.pick(
        "watch.interval",
        DEFAULT_INTERVAL,
        seconds(file.watch.interval),
        g.interval,
    );
    let listen = p.pick(
        "metrics.listen",
        DEFAULT_LISTEN,
        file.metrics.listen,
        g.listen.take(),
    );
    let metadata_interval = p.metadata(file.metadata, &mut g, &mut c);
    Settings {
        config: c,
        interval,
        listen,
        metadata_interval,
        file: PathBuf::new(),
        found: false,
        entries: p.entries,
    }
}

impl Picks<'_> {
    /// `[select]` under `--interfaces`, `--gateway`, `--table-base`, `--priority`, `--prefix`.
    fn select(&mut self, s: config_file::Select, g: &mut Given, c: &mut Config) {
        let interfaces = std::mem::take(&mut c.interfaces);
        c.interfaces = self.pick(
            "select.interfaces",
            interfaces,
            s.interfaces,
            g.interfaces.take(),
        );
        c.gateway = self.pick(
            "select.gateway",
            None,
            optional(s.gateway),
            g.gateway.take().map(Some),
        );
        c.table_base = self.pick(
            "select.table-base",
            c.table_base,
            s.table_base,
            g.table_base,
        );
        c.priority = self.pick("select.priority", c.priority, s.priority, g.priority);
        let prefixes = self.pick("select.prefixes", Vec::new(), s.prefixes, g.prefixes.take());
        c.prefixes = prefixes.into_iter().map(Into::into).collect();
    }

    /// `[layers]` and `[datapath]` under their flags.
    fn layers(
        &mut self,
        l: config_file::Layers,
        dp: config_file::Datapath,
        g: &mut Given,
        c: &mut Config,
    ) {
        c.rules = self.pick("layers.rules", c.rules, l.rules, g.rules);
        c.ebpf = self.pick("layers.ebpf", c.ebpf, l.ebpf, g.ebpf);
        c.connmark = self.pick("layers.connmark", c.connmark, l.connmark, g.connmark);
        c.connmark_mask = self.pick(
            "layers.connmark-mask",
            c.connmark_mask,
            l.connmark_mask,
            g.connmark_mask,
        );
        // The ARP and reverse-path sysctls serve both layers: with the program alone and stock
        // arp_announce 0, a reply the main table sends out of another ENI first ARPs there with
        // the owner's address as sender, which the VPC drops, so the reply never reaches the
        // program (the three-ENI subnets test, with the program alone).
        c.sysctls = c.rules || c.ebpf;
        c.mode = self.pick("datapath.mode", c.mode, dp.mode, g.mode.take());
        c.debug = self.pick("datapath.debug", c.debug, dp.debug, g.debug);
        // No flag: how tests reach the clsact path on a TCX kernel, and a way out of a broken TCX.
        c.attach = self.pick("datapath.attach", c.attach, dp.attach, None);
    }

    /// `[metadata]` under `--metadata*` and `--configure-addresses`; returns its interval.
    fn metadata(&mut self, m: config_file::Metadata, g: &mut Given, c: &mut Config) -> u64 {
        c.metadata = self.pick("metadata.source", c.metadata, m.source, g.metadata.take());
        c.metadata_endpoint = self.pick(
            "metadata.endpoint",
            None,
            optional(m.endpoint),
            g.metadata_endpoint.take().map(Some),
        );
        c.configure_addresses = self.pick(
            "metadata.configure-addresses",
            c.configure_addresses,
            m.configure_addresses,
            g.configure_addresses,
        );
        self.pick(
            "metadata.interval",
            DEFAULT_METADATA_INTERVAL,
            seconds(m.interval),
            g.metadata_interval,
        )
    }
}

impl Settings {
    /// The keys whose value differs from `old`'s, as `key: old -> new`.
    pub fn changes_from(&self, old: &Settings) -> Vec<String> {
        self.entries
            .iter()
            .zip(&old.entries)
            .filter(|(new, old)| new.value != old.value)
            .map(|(new, old)| format!("{} {} -> {}", new.key, old.value, new.value))
            .collect()
    }

    /// `config check --json`: the file read and every key's value and source.
    pub fn json(&self) -> Value {
        let keys: serde_json::Map<String, Value> = self
            .entries
            .iter()
            .map(|e| {
                let v = serde_json::json!({"value": e.value, "source": e.source.to_string()});
                (e.key.to_owned(), v)
            })
            .collect();
        serde_json::json!({
            "schema_version": crate::model::report::SCHEMA_VERSION,
            "file": self.file,
            "found": self.found,
            "settings": keys,
        })
    }
}

/// `config check`: the file read, then one `key = value  # source` line per key (an unset key
/// shows `unset`).
impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        if self.found {
            writeln!(f, "# config file: {file}")?;
        } else {
            writeln!(f, "# config file: {file} (not found: built-in defaults)")?;
        }
        let lines: Vec<_> = (self.entries.iter())
            .map(|e| match literal(e) {
                None => format!("{} unset", e.key),
                Some(v) => format!("{} = {v}", e.key),
            })
            .collect();
        let width = lines.iter().map(String::len).max().unwrap_or(0);
        for (line, e) in lines.iter().zip(&self.entries) {
            writeln!(f, "{line:width$}  # {}", e.source)?;
        }
        Ok(())
    }
}

/// An entry's value as a TOML literal, as `config check` prints it; `None` when unset.
pub(crate) fn literal(e: &Entry) -> Option<String> {
    match &e.value {
        Value::Null => None,
        // Masks read as bits: TOML takes the hex form back as it is.
        Value::Number(n) if e.key.ends_with("-mask") => {
            Some(format!("{:#010x}", n.as_u64().unwrap_or_default()))
        }
        v => Some(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str, given: Given) -> Settings {
        merge(config_file::parse(text).unwrap(), text, given)
    }

    fn source(s: &Settings, key: &str) -> Source {
        s.entries
            .iter()
            .find(|e| e.key == key)
            .unwrap()
            .source
            .clone()
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let text = "[select]\ninterfaces = [\"eth1\", \"eth2\"]\npriority = 30000\n\n\
                    [layers]\nrules = false\n\n[watch]\ninterval = 5\n";
        let given = Given {
            priority: Some(40000),
            listen: Some(Listen(None)),
            ..Given::default()
        };
        let s = settings(text, given);
        assert_eq!(s.config.interfaces, ["eth1", "eth2"]);
        assert_eq!(source(&s, "select.interfaces"), Source::File { line: 2 });
        assert_eq!(s.config.priority, 40000);
        assert_eq!(source(&s, "select.priority"), Source::Flag);
        assert_eq!(s.config.table_base, 20000);
        assert_eq!(source(&s, "select.table-base"), Source::Default);
        // The sysctls stay with the datapath: it needs them too.
        assert!(!s.config.rules && s.config.sysctls && s.config.ebpf);
        assert_eq!(source(&s, "layers.rules"), Source::File { line: 6 });
        assert_eq!(
            (s.interval, source(&s, "watch.interval")),
            (5, Source::File { line: 9 })
        );
        assert_eq!(
            (s.listen, source(&s, "metrics.listen")),
            (Listen(None), Source::Flag)
        );
    }

    #[test]
    fn no_file_and_no_flags_is_the_built_in_default() {
        let s = settings("", Given::default());
        assert_eq!(s.config, Config::default());
        assert_eq!((s.interval, s.listen), (DEFAULT_INTERVAL, DEFAULT_LISTEN));
        assert!(s.entries.iter().all(|e| e.source == Source::Default));
    }

    #[test]
    fn check_prints_every_key_with_its_source() {
        let text = "[select]\ngateway = \"198.18.0.1\"\nprefixes = [\"eth1=198.18.0.64/28\"]\n\
                    [datapath]\nattach = \"netlink\"\n";
        let given = Given {
            debug: Some(true),
            ..Given::default()
        };
        let shown = settings(text, given).to_string();
        let lines: Vec<_> = shown
            .lines()
            .map(str::split_whitespace)
            .map(Iterator::collect::<Vec<_>>)
            .collect();
        let want: &[&[&str]] = &[
            &[
                "#",
                "config",
                "file:",
                "(not",
                "found:",
                "built-in",
                "defaults)",
            ],
            &["select.interfaces", "=", "[]", "#", "default"],
            &["select.gateway", "=", "\"198.18.0.1\"", "#", "file:2"],
            &["select.table-base", "=", "20000", "#", "default"],
            &["select.priority", "=", "20000", "#", "default"],
            &[
                "select.prefixes",
                "=",
                "[\"eth1=198.18.0.64/28\"]",
                "#",
                "file:3",
            ],
            &["layers.rules", "=", "true", "#", "default"],
            &["layers.ebpf", "=", "true", "#", "default"],
            &["layers.connmark", "=", "false", "#", "default"],
            &["layers.connmark-mask", "=", "0xff000000", "#", "default"],
            &["datapath.mode", "=", "\"enforce\"", "#", "default"],
            &["datapath.debug", "=", "true", "#", "flag"],
            &["datapath.attach", "=", "\"netlink\"", "#", "file:5"],
            &["watch.interval", "=", "30", "#", "default"],
            &["metrics.listen", "=", "\"127.0.0.1:9717\"", "#", "default"],
            &["metadata.source", "=", "\"none\"", "#", "default"],
            &["metadata.endpoint", "unset", "#", "default"],
            &["metadata.configure-addresses", "=", "false", "#", "default"],
            &["metadata.interval", "=", "10", "#", "default"],
        ];
        assert_eq!(lines, want, "{shown}");
        assert!(
            settings("", Given::default())
                .to_string()
                .contains("select.gateway unset  ")
        );
    }

    #[test]
    fn a_reload_names_what_changed() {
        let old = settings("[select]\npriority = 30000\n", Given::default());
        let new = settings("[select]\ninterfaces = [\"eth1\"]\n", Given::default());
        assert_eq!(
            new.changes_from(&old),
            [
                "select.interfaces [] -> [\"eth1\"]",
                "select.priority 30000 -> 20000"
            ]
        );
        assert!(new.changes_from(&new).is_empty());
    }

    /// The shipped example documents every key with its default: uncommenting every
    /// `# key = value` line sets every key from the file, to the default (gateway and
    /// metadata.endpoint, unset by default, show an example).
    #[test]
    fn the_shipped_example_parses_and_documents_every_key_with_its_default() {
        let example = include_str!("../../../packaging/enipin.toml");
        let as_shipped = settings(example, Given::default());
        assert!(
            as_shipped
                .entries
                .iter()
                .all(|e| e.source == Source::Default)
        );
        fn key_line(l: &str) -> Option<&str> {
            l.strip_prefix("# ").filter(|rest| {
                rest.split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' '))
            })
        }
        let uncommented: String = example
            .lines()
            .map(|l| key_line(l).unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let all = settings(&uncommented, Given::default());
        let from_default: Vec<_> = all
            .entries
            .iter()
            .filter(|e| !matches!(e.source, Source::File { .. }))
            .map(|e| e.key)
            .collect();
        assert!(
            from_default.is_empty(),
            "not in the example: {from_default:?}"
        );
        let want = Config {
            gateway: all.config.gateway,
            metadata_endpoint: all.config.metadata_endpoint.clone(),
            ..Config::default()
        };
        assert!(all.config.gateway.is_some());
        assert!(all.config.metadata_endpoint.is_some());
        assert_eq!(all.config, want);
        assert_eq!(
            (all.interval, all.listen, all.metadata_interval),
            (DEFAULT_INTERVAL, DEFAULT_LISTEN, DEFAULT_METADATA_INTERVAL)
        );
    }

    /// The metadata keys: from the file, a flag over them, and configure-addresses without a
    /// source refused by name.
    #[test]
    fn metadata_keys_come_from_the_file_and_flags_and_need_a_source_to_add_addresses() {
        let text = "[metadata]\nsource = \"aws\"\nendpoint = \"http://198.18.9.9\"\n\
                    configure-addresses = true\ninterval = 3\n";
        let s = settings(text, Given::default());
        assert_eq!(s.config.metadata, MetadataSource::Aws);
        assert_eq!(
            s.config.metadata_endpoint.as_deref(),
            Some("http://198.18.9.9")
        );
        assert!(s.config.configure_addresses);
        assert_eq!(s.metadata_interval, 3);
        assert_eq!(source(&s, "metadata.source"), Source::File { line: 2 });
        let flagged = settings(
            text,
            Given {
                metadata_interval: Some(7),
                ..Given::default()
            },
        );
        assert_eq!(flagged.metadata_interval, 7);
        assert_eq!(source(&flagged, "metadata.interval"), Source::Flag);
        assert!(config_file::parse("[metadata]\nsource = \"gcp\"\n").is_err());

        let dir = std::env::temp_dir().join(format!("enipin-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("enipin.toml");
        std::fs::write(&file, "[metadata]\nconfigure-addresses = true\n").unwrap();
        let loader = Loader {
            path: ConfigPath::new(Some(file)),
            given: Given::default(),
        };
        let err = loader.load().unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("metadata.configure-addresses"), "{err}");
        assert!(err.contains("--metadata aws"), "{err}");
    }

    /// connmark from the file (a hex mask, as TOML writes it) or the flags; a mask that is not one
    /// run of bits, or connmark without the rules, is refused when loading.
    #[test]
    fn connmark_keys_and_what_loading_refuses() {
        let s = settings(
            "[layers]\nconnmark = true\nconnmark-mask = 0x00f00000\n",
            Given::default(),
        );
        assert!(s.config.connmark);
        assert_eq!(s.config.connmark_mask, 0x00f0_0000);
        assert!(s.to_string().contains("layers.connmark-mask = 0x00f00000"));
        let dir = std::env::temp_dir().join(format!("enipin-connmark-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("enipin.toml");
        let load = |text: &str, given: Given| {
            std::fs::write(&file, text).unwrap();
            let loader = Loader {
                path: ConfigPath::new(Some(file.clone())),
                given,
            };
            loader.load().map(drop).map_err(|e| format!("{e:#}"))
        };
        let bits = load(
            "[layers]\nconnmark = true\nconnmark-mask = 0xf0f00000\n",
            Given::default(),
        );
        let no_rules = load(
            "[layers]\nrules = false\n",
            Given {
                connmark: Some(true),
                ..Given::default()
            },
        );
        let fine = load("[layers]\nconnmark = true\n", Given::default());
        std::fs::remove_dir_all(&dir).unwrap();
        let bits = bits.unwrap_err();
        assert!(
            bits.contains("layers.connmark-mask (--connmark-mask)"),
            "{bits}"
        );
        assert!(bits.contains("one run of contiguous bits"), "{bits}");
        assert!(no_rules.unwrap_err().contains("the rules are off"));
        fine.unwrap();
    }

    /// The ConfigMap the DaemonSet mounts at /etc/enipin holds a file that parses.
    #[test]
    fn the_kubernetes_configmap_holds_a_valid_file() {
        let yaml = include_str!("../../../deploy/kubernetes/base/configmap.yaml");
        let (_, block) = yaml.split_once("  enipin.toml: |\n").unwrap();
        let text: String = block
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
            .collect();
        assert!(text.contains("[select]"), "{text}");
        let s = settings(&text, Given::default());
        assert_eq!(s.config, Config::default());
    }
}
