//! `--connmark`: replies of connections that arrived on a managed interface are routed out of it
//! up front, so DNAT'd replies need no redirect.
//!
//! A DNAT'd service (`docker run -p <secondary>:…`, a kube NodePort) has its replies routed while
//! their source is still the container's address: no `from <addr>` rule matches, the main table
//! sends them out of the primary, and only POSTROUTING gives them the secondary's source back.
//! The datapath then redirects every one of them onto its owner, which transmits each frame twice
//! (64-byte UDP through the redirect: 0.84-0.89 of the rate of a correctly routed reply). With
//! connmark, nftables remembers the interface a connection arrived on (its conntrack mark) and
//! puts that mark on the connection's replies before they are routed, and one `fwmark` rule per
//! interface sends them to its table (the rules are in [`crate::routing::plan::desired`]):
//!
//! ```text
//! table inet enipin {
//!   chain prerouting { type filter hook prerouting priority mangle; policy accept;
//!     ct state new jump mark_new
//!     ct direction reply ct status dnat ct mark & MASK != 0 jump restore }
//!   chain output { type route hook output priority mangle; policy accept;
//!     ct direction reply ct status dnat ct mark & MASK != 0 jump restore }
//!   chain mark_new { iif "eth1" ct mark set ct mark & ~MASK | V_eth1 return … }
//!   chain restore  { ct mark & MASK == V_eth1 meta mark set meta mark & ~MASK | V_eth1 return … }
//! }
//! ```
//!
//! `V_i` is the interface's ifindex shifted into `MASK` (as its table is `table_base + ifindex`):
//! stable while the interface exists, so a reconcile never renumbers a live connection. Only the
//! mask's bits of either mark change (nft's bitwise operations take constants only, hence a rule
//! per interface rather than one copying the mark). Packets of other connections pass two rules in
//! prerouting and one in output.
//!
//! Only DNAT'd connections' replies are marked (`ct status dnat`): they are the ones no `from`
//! rule routes right. Replies of connections answered here without DNAT are left alone, which
//! matters in OUTPUT: there a mark change makes the kernel route the packet again (a `route`
//! chain), and every reply of every local service would pay a route lookup. A connection
//! DNAT'd to a local address (kube-proxy to a host-network pod, `REDIRECT`) does need it: its
//! reply is sourced from that local address until POSTROUTING, so that address's `from` rule
//! would pick the wrong table.
//!
//! The table is written and read back with `nft -j` (the nftables package): one transaction
//! replaces the whole table, so a change is never half-applied. Each per-interface rule carries a
//! comment naming its interface, index, value and mask; reading those back is how enipin tells
//! what is installed.

use std::fmt::Write as _;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::model::ManagedInterface;

/// enipin's table (family inet: IPv4 and IPv6 in one).
pub(crate) const TABLE: &str = "enipin";
/// nftables' `mangle` priority: after conntrack (-200), before DNAT (-100) and routing.
pub(crate) const PRIORITY: i32 = -150;
pub(crate) const BASE: &str = "prerouting";
/// A `route` chain: a mark set there makes the kernel route the packet again.
pub(crate) const LOCAL: &str = "output";
pub(crate) const MARK_NEW: &str = "mark_new";
pub(crate) const RESTORE: &str = "restore";

/// One interface's mark.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct Mark {
    pub ifindex: u32,
    pub name: String,
    /// The ifindex shifted into the mask.
    pub value: u32,
}

/// enipin's nftables table as a value: what to install, or what is installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Connmark {
    pub mask: u32,
    /// By ifindex.
    pub marks: Vec<Mark>,
}

/// `mask` is usable: non-zero and contiguous (a value is an ifindex shifted into it).
pub(crate) fn check_mask(mask: u32) -> Result<()> {
    let shifted = mask.checked_shr(mask.trailing_zeros()).unwrap_or(0);
    if mask == 0 || (shifted & shifted.wrapping_add(1)) != 0 {
        bail!(
            "connmark mask {mask:#010x} must be one run of contiguous bits, like 0xff000000 \
             (an interface's mark is its ifindex shifted into the mask)"
        );
    }
    Ok(())
}

/// The mark of interface `ifindex` under `mask`, if its ifindex fits.
pub(crate) fn value(mask: u32, ifindex: u32) -> Option<u32> {
    let shift = mask.trailing_zeros();
    let max = mask >> shift;
    (ifindex != 0 && ifindex <= max).then(|| ifindex << shift)
}

/// A managed interface whose ifindex does not fit the mask: its DNAT'd replies keep taking the
/// datapath's redirect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LeftOut {
    pub name: String,
    pub ifindex: u32,
    pub mask: u32,
}

impl std::fmt::Display for LeftOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            name,
            ifindex,
            mask,
        } = self;
        write!(
            f,
            "{name}: ifindex {ifindex} does not fit connmark mask {mask:#010x} (1-{}): its DNAT'd \
             replies are left to the datapath's redirect; a wider mask takes it",
            mask >> mask.trailing_zeros()
        )
    }
}

/// What `watch` has said of the interfaces left out: a warning when one joins the set, an info
/// line when it leaves, nothing while the set stays as it is (the warning came at every
/// reconcile, every 30 s and after every event, for as long as the interface existed).
#[derive(Debug, Default)]
pub(crate) struct LeftOutSaid(Vec<LeftOut>);

impl LeftOutSaid {
    /// The lines for the set left out `now` (`managed`: what the reconcile manages), each with
    /// whether it is a warning; empty when the set is the one last said.
    pub(crate) fn update(
        &mut self,
        now: &[LeftOut],
        managed: &[ManagedInterface],
    ) -> Vec<(bool, String)> {
        let joined = now.iter().filter(|l| !self.0.contains(l));
        let mut out: Vec<(bool, String)> =
            joined.map(|l| (true, format!("connmark: {l}"))).collect();
        for l in self.0.iter().filter(|l| !now.contains(l)) {
            let name = &l.name;
            let line = if managed.iter().any(|m| m.name == *name) {
                format!(
                    "connmark: {name} is no longer left out of mask {:#010x}",
                    l.mask
                )
            } else {
                format!("connmark: {name} (left out of the mask) is no longer managed")
            };
            out.push((false, line));
        }
        self.0 = now.to_vec();
        out
    }
}

impl Connmark {
    /// The table for `managed`, and the interfaces left out (their ifindex does not fit `mask`).
    pub(crate) fn desired(managed: &[ManagedInterface], mask: u32) -> (Self, Vec<LeftOut>) {
        let mut marks = Vec::new();
        let mut left_out = Vec::new();
        for m in managed {
            match value(mask, m.ifindex) {
                Some(value) => marks.push(Mark {
                    ifindex: m.ifindex,
                    name: m.name.clone(),
                    value,
                }),
                None => left_out.push(LeftOut {
                    name: m.name.clone(),
                    ifindex: m.ifindex,
                    mask,
                }),
            }
        }
        marks.sort();
        (Self { mask, marks }, left_out)
    }

    /// The table in nft's own syntax, as `nft -f` takes it (`attach --format ip`); without the
    /// comments enipin reads back, so a table written from it is replaced at the next attach.
    pub(crate) fn script(&self) -> String {
        let (m, keep) = (self.mask, !self.mask);
        let reply =
            format!("ct direction reply ct status dnat ct mark & {m:#010x} != 0 jump {RESTORE}");
        let mut s = format!(
            "table inet {TABLE} {{\n\
             \x20 chain {BASE} {{\n    type filter hook prerouting priority mangle; policy accept;\n    \
             ct state new jump {MARK_NEW}\n    {reply}\n  }}\n\
             \x20 chain {LOCAL} {{\n    type route hook output priority mangle; policy accept;\n    {reply}\n  }}\n"
        );
        let _ = writeln!(s, "  chain {MARK_NEW} {{");
        for k in &self.marks {
            let (name, v) = (&k.name, k.value);
            let _ = writeln!(
                s,
                "    iif \"{name}\" ct mark set ct mark & {keep:#010x} | {v:#010x} return"
            );
        }
        let _ = writeln!(s, "  }}\n  chain {RESTORE} {{");
        for k in &self.marks {
            let v = k.value;
            let _ = writeln!(
                s,
                "    ct mark & {m:#010x} == {v:#010x} meta mark set meta mark & {keep:#010x} | {v:#010x} return"
            );
        }
        s.push_str("  }\n}");
        s
    }

    /// One line per interface, for the diff.
    pub(crate) fn summary(&self) -> String {
        let marks: Vec<String> = self
            .marks
            .iter()
            .map(|k| format!("{}={:#x}", k.name, k.value))
            .collect();
        format!(
            "nft table inet {TABLE} mask {:#010x}: {}",
            self.mask,
            marks.join(" ")
        )
    }
}
