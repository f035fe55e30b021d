//! What a reconcile did, as values: the watcher's line counts them by [`Kind`] and [`Sign`], and
//! its own-echo filter picks enipin's removals from them, by type. Their text is enipin's diff
//! format, for people only: nothing reads it back.

use std::{fmt, path::PathBuf};

use crate::{
    datapath::Change as DatapathChange,
    routing::plan::{Change, DiffFormat},
};

/// One change a reconcile made, of either layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// A rule, route, address, sysctl or the connmark table.
    Rules(Change),
    /// A map, the program, a link, an owner entry.
    Datapath(DatapathChange),
    /// A link's pin removed by hand, put back from the link the watcher held.
    PinBack(PathBuf),
}

/// What a change is of, in the order the watcher's line shows examples: the addresses
/// `--configure-addresses` adds or removes (rare, and the host's own), then what steers replies
/// (rules, then the datapath's links), then what follows from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Addresses,
    Rules,
    Links,
    Routes,
    Owners,
    Prefixes,
    Sysctls,
    Program,
    Pins,
    Counters,
    Config,
    Maps,
    Connmark,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Addresses => "addresses",
            Kind::Rules => "rules",
            Kind::Links => "links",
            Kind::Routes => "routes",
            Kind::Owners => "owners",
            Kind::Prefixes => "prefixes",
            Kind::Sysctls => "sysctls",
            Kind::Program => "program",
            Kind::Pins => "pins",
            Kind::Counters => "counters",
            Kind::Config => "config",
            Kind::Maps => "maps",
            Kind::Connmark => "connmark",
        }
    }
}

/// Whether a change put something in place, took it away, or changed it in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sign {
    Add,
    Remove,
    Change,
}

impl Applied {
    pub(crate) fn kind(&self) -> (Kind, Sign) {
        match self {
            Applied::Rules(c) => rules(c),
            Applied::Datapath(c) => datapath(c),
            Applied::PinBack(_) => (Kind::Pins, Sign::Change),
        }
    }

    /// The rule or route this change removed, if it is one: the kernel announces it, and the
    /// watcher takes that announcement for its own echo.
    pub(crate) fn removed_rule_or_route(&self) -> Option<&Change> {
        match self {
            Applied::Rules(c @ (Change::DelRule(_) | Change::DelRoute(_))) => Some(c),
            _ => None,
        }
    }

    /// The interface whose sysctl this change wrote, if it is one: the kernel announces it as a
    /// changed link (`RTM_SETLINK`).
    pub(crate) fn sysctl_link(&self) -> Option<&str> {
        match self {
            Applied::Rules(Change::Sysctl { key, .. }) => Some(key.ifname()),
            _ => None,
        }
    }
}

fn rules(c: &Change) -> (Kind, Sign) {
    match c {
        Change::AddRule(_) => (Kind::Rules, Sign::Add),
        Change::DelRule(_) => (Kind::Rules, Sign::Remove),
        Change::AddRoute(_) => (Kind::Routes, Sign::Add),
        Change::DelRoute(_) => (Kind::Routes, Sign::Remove),
        Change::AddAddress(_) => (Kind::Addresses, Sign::Add),
        Change::DelAddress(_) => (Kind::Addresses, Sign::Remove),
        Change::Sysctl { .. } => (Kind::Sysctls, Sign::Change),
        Change::Connmark { old: None, .. } => (Kind::Connmark, Sign::Add),
        Change::Connmark { new: None, .. } => (Kind::Connmark, Sign::Remove),
        Change::Connmark { .. } => (Kind::Connmark, Sign::Change),
    }
}

fn datapath(c: &DatapathChange) -> (Kind, Sign) {
    use DatapathChange as D;
    match c {
        D::RecreateMap { .. } | D::Rebuild { .. } => (Kind::Maps, Sign::Change),
        D::SetNextHop { .. } | D::Claim { .. } => (Kind::Maps, Sign::Add),
        D::RemoveNextHop { .. } => (Kind::Maps, Sign::Remove),
        D::Load { .. } => (Kind::Program, Sign::Add),
        D::Replace { .. } => (Kind::Program, Sign::Change),
        D::RemovePins { .. } => (Kind::Program, Sign::Remove),
        D::Attach { .. } => (Kind::Links, Sign::Add),
        D::Detach { .. } => (Kind::Links, Sign::Remove),
        D::SetOwner { .. } => (Kind::Owners, Sign::Add),
        D::RemoveOwner { .. } => (Kind::Owners, Sign::Remove),
        D::SetPrefix { .. } => (Kind::Prefixes, Sign::Add),
        D::RemovePrefix { .. } => (Kind::Prefixes, Sign::Remove),
        D::AddCounters { .. } => (Kind::Counters, Sign::Add),
        D::RemoveCounters { .. } => (Kind::Counters, Sign::Remove),
        D::Config(_) => (Kind::Config, Sign::Change),
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Applied::Rules(c) => f.write_str(&c.render(DiffFormat::Text)),
            Applied::Datapath(c) => c.fmt(f),
            Applied::PinBack(path) => write!(f, "~ pin back {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds and signs agree with what each change says of itself in the diff: its first
    /// character and its noun.
    #[test]
    fn a_kind_and_sign_agree_with_the_diff_line() {
        let rule: crate::model::route::Rule = crate::model::route::Rule {
            v6: false,
            priority: 20000,
            from: Some("198.18.0.11/32".parse().unwrap()),
            table: 20002,
            suppress_prefixlen: None,
            fwmark: None,
        };
        let cases = [
            Applied::Rules(Change::AddRule(rule.clone())),
            Applied::Rules(Change::DelRule(rule)),
            Applied::Datapath(DatapathChange::Attach {
                ifindex: 3,
                name: "eth1".into(),
            }),
            Applied::Datapath(DatapathChange::RemoveOwner {
                addr: "198.18.0.11".parse().unwrap(),
            }),
            Applied::Datapath(DatapathChange::Replace { why: "a test" }),
            Applied::PinBack("/sys/fs/bpf/enipin/link_3".into()),
        ];
        for a in cases {
            let text = a.to_string();
            let (kind, sign) = a.kind();
            let first = match sign {
                Sign::Add => '+',
                Sign::Remove => '-',
                Sign::Change => '~',
            };
            assert!(text.starts_with(first), "{text}: {sign:?}");
            let noun = text.split_whitespace().nth(1).unwrap();
            assert!(
                kind.name().starts_with(noun) || noun == "attach" || noun == "replace",
                "{text}: {kind:?}"
            );
        }
    }
}
