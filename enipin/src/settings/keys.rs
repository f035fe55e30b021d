//! The config file's keys, one table: name, flag, type, default and what each does. The loader
//! records every pick through it ([`named`]) and names a section's keys from it when the file
//! has an unknown one; `enipin man` writes enipin.toml(5) from it, and docs/config.md's table is
//! [`markdown_table`] (a test compares them). Its tests fail when the loader ([`super::merge`],
//! [`super::config_file::File`]) and this table differ by a key, a default or a type.

use std::fmt;

/// What a key's value is in TOML.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// `true` or `false`.
    Boolean,
    /// A number (hex with `0x` too, as TOML has it).
    Integer,
    /// A number of seconds, at least 1.
    Seconds,
    /// A quoted string.
    String,
    /// An array of quoted strings.
    Strings,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Boolean => "boolean",
            Self::Integer => "integer",
            Self::Seconds => "seconds (integer, at least 1)",
            Self::String => "string",
            Self::Strings => "array of strings",
        })
    }
}

/// A key's built-in value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// This TOML literal, as `config check` prints it.
    Value(&'static str),
    /// No value (enipin decides, as `what` says); `example` is a value the file may set.
    Unset {
        /// A TOML literal.
        example: &'static str,
    },
}

/// One key of the config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyDoc {
    /// Dotted, `section.key`, as `config check` prints it.
    pub name: &'static str,
    /// The command-line flag that overrides it, if any.
    pub flag: Option<&'static str>,
    /// Its TOML type.
    pub ty: Type,
    /// Its built-in value.
    pub default: Builtin,
    /// What it does, one or two sentences; `code` in backticks.
    pub what: &'static str,
}

impl KeyDoc {
    /// `select` of `select.table-base`.
    pub fn section(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(s, _)| s)
    }

    /// `table-base` of `select.table-base`.
    pub fn key(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(_, k)| k)
    }
}

const fn key(
    name: &'static str,
    flag: Option<&'static str>,
    ty: Type,
    default: Builtin,
    what: &'static str,
) -> KeyDoc {
    KeyDoc {
        name,
        flag,
        ty,
        default,
        what,
    }
}

use Builtin::{Unset, Value};

/// Every key, in the file's order of sections (the order `config check` prints them).
pub const KEYS: &[KeyDoc] = &[
    key(
        "select.interfaces",
        Some("--interfaces"),
        Type::Strings,
        Value("[]"),
        "Interfaces to manage, by name or MAC. Empty: every ENI a reply from which could leave \
         by another ENI (main table).",
    ),
    key(
        "select.gateway",
        Some("--gateway"),
        Type::String,
        Unset {
            example: "\"198.18.0.1\"",
        },
        "Gateway of the managed interfaces on its subnet (of every one if on none). Unset: the \
         main table's default route through the interface, else another interface's whose \
         gateway is on its subnet, else the subnet's first host.",
    ),
    key(
        "select.table-base",
        Some("--table-base"),
        Type::Integer,
        Value("20000"),
        "First policy routing table; the managed interfaces' tables count up from it.",
    ),
    key(
        "select.priority",
        Some("--priority"),
        Type::Integer,
        Value("20000"),
        "First rule priority (enipin uses it and the next two).",
    ),
    key(
        "select.prefixes",
        Some("--prefix"),
        Type::Strings,
        Value("[]"),
        "Delegated prefixes, `\"IFACE=CIDR\"` each.",
    ),
    key(
        "layers.rules",
        Some("--no-rules"),
        Type::Boolean,
        Value("true"),
        "Policy rules, routes and their sysctls.",
    ),
    key(
        "layers.ebpf",
        Some("--no-ebpf"),
        Type::Boolean,
        Value("true"),
        "The TC egress datapath.",
    ),
    key(
        "layers.connmark",
        Some("--connmark"),
        Type::Boolean,
        Value("false"),
        "Route the replies of connections that arrived on a managed interface out of it up \
         front: nftables marks each connection with its interface and an `fwmark` rule picks its \
         table, so replies of DNAT'd services need no redirect. Needs the nft command and the \
         rules.",
    ),
    key(
        "layers.connmark-mask",
        Some("--connmark-mask"),
        Type::Integer,
        Value("0xff000000"),
        "The bits of the packet and conntrack marks connmark uses, one contiguous run: an \
         interface's mark is its ifindex shifted into them (Calico: choose another).",
    ),
    key(
        "datapath.mode",
        Some("--mode"),
        Type::String,
        Value("\"enforce\""),
        "`\"enforce\"` redirects misrouted packets, `\"monitor\"` only counts them.",
    ),
    key(
        "datapath.debug",
        Some("--debug"),
        Type::Boolean,
        Value("false"),
        "Log rare datapath events on `watch`'s stderr.",
    ),
    key(
        "datapath.attach",
        None,
        Type::String,
        Value("\"auto\""),
        "`\"auto\"` (TCX where the kernel has it, else a clsact filter), `\"tcx\"`, `\"netlink\"`.",
    ),
    key(
        "watch.interval",
        Some("--interval"),
        Type::Seconds,
        Value("30"),
        "Seconds between reconciles when no event arrives.",
    ),
    key(
        "metrics.listen",
        Some("--metrics-listen"),
        Type::String,
        Value("\"127.0.0.1:9717\""),
        "Where `watch` serves `/metrics` and `/healthz`, or `\"none\"`; a change applies at the \
         next restart.",
    ),
    key(
        "metadata.source",
        Some("--metadata"),
        Type::String,
        Value("\"none\""),
        "`\"aws\"`: secondary addresses and delegated prefixes from IMDSv2 too; `\"auto\"`: \
         IMDSv2's where the machine's DMI says EC2, netlink alone elsewhere.",
    ),
    key(
        "metadata.endpoint",
        Some("--metadata-endpoint"),
        Type::String,
        Unset {
            example: "\"http://169.254.169.254\"",
        },
        "The metadata service's base URL. Unset: `http://169.254.169.254`, then \
         `http://[fd00:ec2::254]`.",
    ),
    key(
        "metadata.configure-addresses",
        Some("--configure-addresses"),
        Type::Boolean,
        Value("false"),
        "Add the addresses metadata assigns that the interface lacks (and remove them again); \
         needs a source.",
    ),
    key(
        "metadata.interval",
        Some("--metadata-interval"),
        Type::Seconds,
        Value("10"),
        "`watch`: seconds between metadata lookups at least (the service sends no event).",
    ),
];

/// The table's entry for `name`.
pub fn named(name: &str) -> Option<&'static KeyDoc> {
    KEYS.iter().find(|k| k.name == name)
}

/// The sections, in order.
pub fn sections() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for k in KEYS {
        if !out.contains(&k.section()) {
            out.push(k.section());
        }
    }
    out
}

/// The keys of `section`, without it: `interfaces`, `gateway`, ...
pub fn keys_of(section: &str) -> Vec<&'static str> {
    (KEYS.iter())
        .filter(|k| k.section() == section)
        .map(KeyDoc::key)
        .collect()
}

/// docs/config.md's key table.
pub fn markdown_table() -> String {
    let mut out = String::from("| key | flag | type | default | what |\n|---|---|---|---|---|\n");
    for k in KEYS {
        let flag = k.flag.map_or("none".to_owned(), |f| format!("`{f}`"));
        let default = match k.default {
            Value(v) => format!("`{v}`"),
            Unset { .. } => "unset".to_owned(),
        };
        let what = k.what.replace('|', "\\|");
        out += &format!(
            "| `{}` | {flag} | {} | {default} | {what} |\n",
            k.name, k.ty
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::Value as Json;

    use super::*;
    use crate::settings::{Given, Source, config_file, literal, merge};

    /// A file setting every key of the table: its default, or its example when unset.
    fn every_key() -> String {
        let mut out = String::new();
        for section in sections() {
            out += &format!("[{section}]\n");
            for k in KEYS.iter().filter(|k| k.section() == section) {
                let (Value(v) | Unset { example: v }) = k.default;
                out += &format!("{} = {v}\n", k.key());
            }
        }
        out
    }

    /// The loader takes every key of the table (an unknown one fails to parse), and gets every
    /// key it picks from the file (one the table lacks would stay `default`), in the table's
    /// order.
    #[test]
    fn the_loader_and_the_table_have_the_same_keys() {
        let text = every_key();
        let file = config_file::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let s = merge(file, &text, Given::default());
        let picked: Vec<_> = s.entries.iter().map(|e| e.key).collect();
        let table: Vec<_> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(picked, table);
        let not_from_file: Vec<_> = (s.entries.iter())
            .filter(|e| !matches!(e.source, Source::File { .. }))
            .map(|e| e.key)
            .collect();
        assert!(not_from_file.is_empty(), "{not_from_file:?}\n{text}");
        for (e, k) in s.entries.iter().zip(KEYS) {
            let fits = match k.ty {
                Type::Boolean => e.value.is_boolean(),
                Type::Integer | Type::Seconds => e.value.is_u64(),
                Type::String => e.value.is_string(),
                Type::Strings => e
                    .value
                    .as_array()
                    .is_some_and(|a| a.iter().all(Json::is_string)),
            };
            assert!(fits, "{}: {} is no {}", k.name, e.value, k.ty);
        }
    }

    /// Each default in the table is what an empty file gives, as `config check` prints it.
    #[test]
    fn the_tables_defaults_are_the_loaders() {
        let s = merge(config_file::File::default(), "", Given::default());
        for (e, k) in s.entries.iter().zip(KEYS) {
            let want = match k.default {
                Value(v) => Some(v.to_owned()),
                Unset { .. } => None,
            };
            assert_eq!(literal(e), want, "{}", k.name);
        }
    }

    /// docs/config.md holds the table as [`markdown_table`] writes it.
    #[test]
    fn docs_config_md_has_the_table() {
        let doc = include_str!("../../../docs/config.md");
        let table = markdown_table();
        assert!(
            doc.contains(&table),
            "docs/config.md's key table is not the table in settings/keys.rs; put this \
             in its place:\n{table}"
        );
    }

    /// An unknown key's error names its section's keys, from the table.
    #[test]
    fn an_unknown_key_is_told_the_sections_keys() {
        let e = config_file::parse("[layers]\nrule = true\n").unwrap_err();
        assert_eq!(
            e,
            "2:1: layers.rule: unknown key; [layers] has rules, ebpf, connmark, connmark-mask \
             (man 5 enipin.toml)"
        );
    }
}
