//! An address that blinks is no reason to tear enforcement down.
//!
//! systemd-networkd's `networkctl reconfigure` (and a reload after a changed `.network`, and a
//! restart) removes a link's static address and adds it back 4-76 ms later (networkd 252). With
//! two ENIs in one subnet, the pass that sees one of them without its address selects nothing
//! ("nothing to manage"): without a grace it detached the datapath from every ENI, deleted every
//! rule and route and unloaded the program, and rebuilt it all ~30-90 ms later with new counter
//! maps. Nothing enforced in between.
//!
//! So an interface managed at the last success that still exists (same ifindex and MAC) but has
//! no address now *blinks*: for [`GRACE`] after it was first seen so, every interface managed at
//! the last success and still present stays managed (the blinking one with no address: its
//! datapath link and counters stay, its own rules go with its address), so the others keep their
//! rules, routes and owner entries, and the program and its maps stay. Past the grace, or once
//! the link itself is gone, the selection is the plain one again (and may be "nothing to
//! manage").

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::{model::ManagedInterface, model::discovery::Discovery};

/// How long a blinking interface holds the selection. networkd's flap lasted at most 76 ms in
/// every measurement; 2 s is 25 times that, and bounds what a real removal of an ENI's last
/// address costs: rules from an address no longer on the host (harmless, they match nothing)
/// kept 2 s longer. A detached ENI's link goes at once, which ends its grace at once.
pub(crate) const GRACE: Duration = Duration::from_secs(2);

/// The interfaces seen blinking, across the watcher's passes.
#[derive(Debug)]
pub(crate) struct Grace {
    period: Duration,
    /// ifindex -> when the pass first saw it managed, present and without an address.
    since: BTreeMap<u32, Instant>,
}

impl Default for Grace {
    fn default() -> Self {
        Self::new(GRACE)
    }
}

/// What one pass keeps for a grace (empty: the plain selection).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Held {
    /// The interfaces managed at the last success and present now: kept managed this pass.
    pub keep: Vec<u32>,
    /// The names of the blinking interfaces in their grace.
    pub blinking: Vec<String>,
}

impl Grace {
    pub(crate) fn new(period: Duration) -> Self {
        Self {
            period,
            since: BTreeMap::new(),
        }
    }

    /// What to keep this pass, given discovery `d` and the interfaces managed at the last
    /// success (`last`); `now` starts the grace of an interface first seen blinking.
    pub(crate) fn hold(&mut self, d: &Discovery, last: &[ManagedInterface], now: Instant) -> Held {
        let present = |m: &ManagedInterface| {
            d.interfaces
                .iter()
                .find(|i| i.ifindex == m.ifindex && i.mac == m.mac)
        };
        let blinking: Vec<&ManagedInterface> = last
            .iter()
            .filter(|m| present(m).is_some_and(|i| i.addrs.is_empty()))
            .collect();
        self.since
            .retain(|ix, _| blinking.iter().any(|m| m.ifindex == *ix));
        for m in &blinking {
            self.since.entry(m.ifindex).or_insert(now);
        }
        let in_grace: Vec<String> = blinking
            .iter()
            .filter(|m| now.duration_since(self.since[&m.ifindex]) < self.period)
            .map(|m| m.name.clone())
            .collect();
        if in_grace.is_empty() {
            return Held::default();
        }
        Held {
            keep: last
                .iter()
                .filter(|m| present(m).is_some())
                .map(|m| m.ifindex)
                .collect(),
            blinking: in_grace,
        }
    }

    /// When the first grace still running ends: the watcher reconciles then (no event says so).
    pub(crate) fn deadline(&self, now: Instant) -> Option<Instant> {
        self.since
            .values()
            .map(|t| *t + self.period)
            .filter(|end| *end > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cidr, Interface};

    fn iface(ifindex: u32, addrs: &[&str]) -> Interface {
        Interface::fixture(ifindex, addrs)
    }

    fn managed(i: &Interface) -> ManagedInterface {
        let addrs = vec!["198.18.0.10/24".parse::<Cidr>().unwrap()];
        ManagedInterface::fixture(i.ifindex, &i.name, addrs)
    }

    fn discovery(interfaces: Vec<Interface>) -> Discovery {
        Discovery::fixture(interfaces, Vec::new())
    }

    #[test]
    fn a_blink_holds_every_present_interface_until_the_grace_ends() {
        let (a, b) = (iface(2, &["198.18.0.10/24"]), iface(3, &["198.18.0.11/24"]));
        let last = [managed(&a), managed(&b)];
        let mut g = Grace::new(Duration::from_secs(2));
        let t0 = Instant::now();
        assert!(
            g.hold(&discovery(vec![a.clone(), b.clone()]), &last, t0)
                .blinking
                .is_empty()
        );
        let blinked = discovery(vec![iface(2, &[]), b.clone()]);
        let held = g.hold(&blinked, &last, t0);
        assert_eq!(held.keep, [2, 3]);
        assert_eq!(held.blinking, ["eth2"]);
        assert_eq!(g.deadline(t0), Some(t0 + Duration::from_secs(2)));
        // Still blinking 1.9 s later: the grace runs from the first pass that saw it.
        let later = t0 + Duration::from_millis(1900);
        assert_eq!(g.hold(&blinked, &last, later).keep, [2, 3]);
        // Past the grace: the plain selection, and no deadline left.
        let after = t0 + Duration::from_millis(2001);
        assert!(g.hold(&blinked, &last, after).blinking.is_empty());
        assert_eq!(g.deadline(after), None);
    }

    #[test]
    fn a_gone_link_or_an_address_back_ends_the_grace() {
        let (a, b) = (iface(2, &["198.18.0.10/24"]), iface(3, &["198.18.0.11/24"]));
        let last = [managed(&a), managed(&b)];
        let mut g = Grace::default();
        let t0 = Instant::now();
        assert!(
            !g.hold(&discovery(vec![iface(2, &[]), b.clone()]), &last, t0)
                .blinking
                .is_empty()
        );
        // The link went (an ENI detached): nothing to hold.
        assert!(
            g.hold(&discovery(vec![b.clone()]), &last, t0)
                .blinking
                .is_empty()
        );
        // Back with its address: nothing held, and a new blink starts a new grace.
        assert!(
            g.hold(&discovery(vec![a, b.clone()]), &last, t0)
                .blinking
                .is_empty()
        );
        let t1 = t0 + Duration::from_secs(5);
        let held = g.hold(&discovery(vec![iface(2, &[]), b]), &last, t1);
        assert_eq!(held.blinking, ["eth2"]);
        assert_eq!(g.deadline(t1), Some(t1 + GRACE));
    }

    #[test]
    fn another_interface_with_the_same_ifindex_is_no_blink() {
        let (a, b) = (iface(2, &["198.18.0.10/24"]), iface(3, &["198.18.0.11/24"]));
        let last = [managed(&a), managed(&b)];
        let mut other = iface(2, &[]);
        other.mac = [2, 0, 0, 0, 9, 9];
        let mut g = Grace::default();
        assert!(
            g.hold(&discovery(vec![other, b]), &last, Instant::now())
                .blinking
                .is_empty()
        );
    }
}
