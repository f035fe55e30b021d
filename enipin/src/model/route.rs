//! The rules and routes enipin installs, in its own terms, and their iproute2 spelling.
//!
//! A leaf: it knows the model, not netlink. [`crate::kernel::netlink`] turns these into messages and
//! back, [`crate::routing::plan`] computes them, and every printed form (diffs, `status`, errors,
//! `render`) goes through [`Rule::ip_args`] / [`Route::ip_args`].

use std::{fmt::Write as _, net::IpAddr};

use serde::Serialize;

use crate::model::{Cidr, RTPROT_ENIPIN, cidr_text};

/// The kernel's main routing table (`RT_TABLE_MAIN`).
pub(crate) const MAIN_TABLE: u32 = 254;
/// The kernel's default metric of IPv6 routes: a dumped v6 route always carries it.
pub(crate) const V6_METRIC: u32 = 1024;

/// A table as iproute2 prints it: `main` for 254, else the number.
pub(crate) fn table_name(table: u32) -> String {
    if table == MAIN_TABLE {
        "main".to_owned()
    } else {
        table.to_string()
    }
}

/// A policy rule as enipin creates them (action: lookup `table`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub(crate) struct Rule {
    pub v6: bool,
    pub priority: u32,
    #[serde(serialize_with = "cidr_text::opt")]
    pub from: Option<Cidr>,
    pub table: u32,
    pub suppress_prefixlen: Option<u32>,
    /// `fwmark VALUE/MASK` (connmark's rules); absent from `status --json` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<Fwmark>,
}

/// A rule's `fwmark VALUE/MASK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub(crate) struct Fwmark {
    pub value: u32,
    pub mask: u32,
}

impl Rule {
    /// `from 198.18.0.10/32 lookup 20003 suppress_prefixlength 0 pref 20000 proto 229`
    pub(crate) fn ip_args(&self) -> String {
        self.spell(true)
    }

    /// [`Self::ip_args`] without `proto 229`: someone else's rule, or one a distro tool owns.
    pub(crate) fn ip_args_bare(&self) -> String {
        self.spell(false)
    }

    fn spell(&self, ours: bool) -> String {
        let mut s = String::new();
        if let Some(from) = self.from {
            let _ = write!(s, "from {from} ");
        }
        if let Some(Fwmark { value, mask }) = self.fwmark {
            let _ = write!(s, "fwmark {value:#x}/{mask:#x} ");
        }
        let _ = write!(s, "lookup {} ", table_name(self.table));
        if let Some(l) = self.suppress_prefixlen {
            let _ = write!(s, "suppress_prefixlength {l} ");
        }
        let _ = write!(s, "pref {}", self.priority);
        if ours {
            let _ = write!(s, " proto {RTPROT_ENIPIN}");
        }
        s
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub(crate) struct Route {
    pub table: u32,
    #[serde(serialize_with = "cidr_text::one")]
    pub dst: Cidr,
    pub gateway: Option<IpAddr>,
    pub oif: u32,
    pub dev: String,
    pub src: Option<IpAddr>,
    pub scope_link: bool,
    pub metric: u32,
}

impl Route {
    pub(crate) fn v6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// `198.18.0.0/24 dev eth0 scope link src 198.18.0.10 table 20003 proto 229`
    pub(crate) fn ip_args(&self) -> String {
        self.spell(true)
    }

    /// [`Self::ip_args`] without `proto 229`, for a distro tool's configuration.
    pub(crate) fn ip_args_bare(&self) -> String {
        self.spell(false)
    }

    fn spell(&self, ours: bool) -> String {
        let mut s = if self.dst.prefix_len == 0 {
            "default".to_owned()
        } else {
            self.dst.to_string()
        };
        if let Some(gw) = self.gateway {
            let _ = write!(s, " via {gw}");
        }
        let _ = write!(s, " dev {}", self.dev);
        if self.scope_link {
            s.push_str(" scope link");
        }
        if let Some(src) = self.src {
            let _ = write!(s, " src {src}");
        }
        if self.metric != 0 && !(self.v6() && self.metric == V6_METRIC) {
            let _ = write!(s, " metric {}", self.metric);
        }
        let _ = write!(s, " table {}", self.table);
        if ours {
            let _ = write!(s, " proto {RTPROT_ENIPIN}");
        }
        s
    }
}

/// A rule as the kernel has it, with the protocol that says whose it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InstalledRule {
    pub protocol: u8,
    pub rule: Rule,
}

/// A route as the kernel has it (its `dev` named), with the protocol that says whose it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InstalledRoute {
    pub protocol: u8,
    pub route: Route,
}

/// What a rule does with a packet it matches (`ip rule`'s action).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RuleVerb {
    Lookup,
    Goto,
    Nop,
    Blackhole,
    Unreachable,
    Prohibit,
    /// An action this enipin has no name for (its number).
    Other(u8),
}

/// Any rule as the kernel dumps it, everything `ip rule` shows: what doctor looks at in
/// others' rules. [`Self::installed`] is the part the plan models.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ObservedRule {
    pub v6: bool,
    pub priority: u32,
    pub verb: RuleVerb,
    pub table: u32,
    pub from: Option<Cidr>,
    pub to: Option<Cidr>,
    /// The mark and its mask (the kernel reports a mark without one as 0xffffffff).
    pub fwmark: Option<Fwmark>,
    pub suppress_prefixlen: Option<u32>,
    pub protocol: u8,
}

impl ObservedRule {
    /// The rule in the terms enipin creates rules in (`from X lookup T`, a suppressor, a mark).
    pub(crate) fn installed(&self) -> InstalledRule {
        InstalledRule {
            protocol: self.protocol,
            rule: Rule {
                v6: self.v6,
                priority: self.priority,
                from: self.from,
                table: self.table,
                suppress_prefixlen: self.suppress_prefixlen,
                fwmark: self.fwmark,
            },
        }
    }
}

impl InstalledRule {
    /// Installed by enipin (protocol [`RTPROT_ENIPIN`]).
    pub(crate) fn is_enipin(&self) -> bool {
        self.protocol == RTPROT_ENIPIN
    }
}

#[cfg(test)]
impl InstalledRule {
    /// Someone else's IPv4 rule `from all lookup TABLE pref PRIORITY` (protocol 4, static).
    pub(crate) fn foreign(priority: u32, table: u32) -> Self {
        Self {
            protocol: 4, // RTPROT_STATIC
            rule: Rule {
                v6: false,
                priority,
                from: None,
                table,
                suppress_prefixlen: None,
                fwmark: None,
            },
        }
    }
}

impl InstalledRoute {
    /// Installed by enipin (protocol [`RTPROT_ENIPIN`]).
    pub(crate) fn is_enipin(&self) -> bool {
        self.protocol == RTPROT_ENIPIN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_spells_a_cidr_as_text() {
        let rule = Rule {
            v6: false,
            priority: 20000,
            from: Some("198.18.0.10/32".parse().unwrap()),
            table: 20002,
            suppress_prefixlen: None,
            fwmark: None,
        };
        let v = serde_json::to_value(&rule).unwrap();
        assert_eq!(v["from"], "198.18.0.10/32");
        let route = Route {
            table: 20002,
            dst: Cidr::any(true),
            gateway: None,
            oif: 2,
            dev: "eth2".into(),
            src: None,
            scope_link: false,
            metric: V6_METRIC,
        };
        let v = serde_json::to_value(&route).unwrap();
        assert_eq!(v["dst"], "::/0");
        assert_eq!(route.ip_args(), "default dev eth2 table 20002 proto 229");
    }
}
