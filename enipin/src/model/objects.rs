//! What enipin installs, by identity: what a restore is counted by.
//!
//! A pass that puts back an object the last successful pass had in place restored it, whatever
//! else changed in the same pass. Comparing whole managed interfaces instead counted nothing
//! while networkd had the main table's default route deleted: the gateway's source (main table,
//! subnet's first host) flipped in the same pass, and 100 rule deletions counted 0 restores.

use std::{collections::BTreeSet, net::IpAddr};

use crate::{
    model::route::{Route, Rule},
    model::sysctl,
};

/// One object of the desired state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Object {
    Rule(Rule),
    Route(Route),
    /// An address `--configure-addresses` adds, on an ifindex.
    Address(u32, IpAddr),
    Sysctl(sysctl::Key),
    /// enipin's nftables table.
    Connmark,
    DatapathProgram,
    /// The program's link on an ifindex's egress.
    DatapathLink(u32),
    DatapathMap(MapEntry),
}

/// One entry of the datapath's maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum MapEntry {
    Owner(IpAddr),
    Prefix(IpAddr, u8),
    Counters(u32),
    NextHop(u32),
    Config,
}

impl Object {
    /// The kind, as `enipin_restored_total` labels it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Rule(_) => "rule",
            Self::Route(_) => "route",
            Self::Address(..) => "address",
            Self::Sysctl(_) => "sysctl",
            Self::Connmark => "connmark",
            Self::DatapathProgram => "datapath_program",
            Self::DatapathLink(_) => "datapath_link",
            Self::DatapathMap(_) => "datapath_map",
        }
    }
}

/// What a successful pass left in place.
pub(crate) type InPlace = BTreeSet<Object>;

/// Of `added` (what a pass put in), those `before` (the last success) had in place: restores.
pub(crate) fn restored<'a>(
    before: &'a InPlace,
    added: &'a [Object],
) -> impl Iterator<Item = &'a Object> {
    added.iter().filter(|o| before.contains(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_was_in_place_counts() {
        let before: InPlace = [Object::DatapathLink(2), Object::Connmark].into();
        let added = [Object::DatapathLink(2), Object::DatapathLink(3)];
        let r: Vec<_> = restored(&before, &added).collect();
        assert_eq!(r, [&Object::DatapathLink(2)]);
        assert_eq!(r[0].kind(), "datapath_link");
    }
}
