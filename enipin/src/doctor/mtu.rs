//! Managed interfaces whose MTUs differ (eth0 at 9001 beside eth1 at 1500, as EC2 gives a
//! primary ENI jumbo frames and an attached one its own setting). The rules layer routes each
//! reply out of its owner, which fragments or sends "packet too big" at that owner's MTU: fine.
//! A packet the datapath redirects (without rules, a DNAT'd reply, a rule deleted) larger than
//! its owner's MTU is passed on unredirected, as the datapath fails open (`mtu_exceeded` counts
//! it), and the cloud drops it: with `--no-rules`, TCP stalled at 0.5-0.8 MB in 3 s and large
//! UDP was lost.

use super::{Finding, Severity};
use crate::model::ManagedInterface;

/// What differing MTUs mean for `managed`, or `None` when they are equal.
pub(crate) fn mismatch(managed: &[ManagedInterface], rules: bool) -> Option<String> {
    let smallest = managed.iter().min_by_key(|m| m.mtu)?;
    let largest = managed.iter().max_by_key(|m| m.mtu)?;
    if smallest.mtu == largest.mtu {
        return None;
    }
    let each: Vec<_> = managed
        .iter()
        .map(|m| format!("{} {}", m.name, m.mtu))
        .collect();
    let layer = if rules {
        "the rules route replies out of their owner, which is fine; but a packet the datapath \
         redirects (a DNAT'd reply, a rule deleted by another tool)"
    } else {
        "without the rules layer every misrouted reply is redirected, and one"
    };
    Some(format!(
        "the managed interfaces' MTUs differ ({}): {layer} larger than its owner's MTU ({} on \
         {}) is passed on unredirected and dropped by the cloud (stats: mtu_exceeded)",
        each.join(", "),
        smallest.mtu,
        smallest.name
    ))
}

pub(super) fn check(managed: &[ManagedInterface], rules: bool) -> Vec<Finding> {
    match mismatch(managed, rules) {
        None if managed.len() > 1 => vec![Finding::ok(
            "mtu",
            "the managed interfaces share one MTU".into(),
        )],
        None => Vec::new(),
        Some(why) => vec![
            Finding::new("mtu", Severity::Warning, why)
                .fix("give every ENI the same MTU (ip link set ethN mtu 9001, or the same in its network configuration)"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eni(ifindex: u32, mtu: u32) -> ManagedInterface {
        ManagedInterface {
            mtu,
            ..ManagedInterface::fixture(ifindex, &format!("eth{ifindex}"), Vec::new())
        }
    }

    #[test]
    fn differing_mtus_are_a_warning_that_says_what_they_mean() {
        assert_eq!(mismatch(&[eni(0, 9001), eni(1, 9001)], true), None);
        let f = check(&[eni(0, 9001), eni(1, 1500)], false);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].meaning.contains("(eth0 9001, eth1 1500)")
                && f[0].meaning.contains("(1500 on eth1)")
                && f[0].meaning.contains("without the rules layer"),
            "{}",
            f[0].meaning
        );
        assert!(check(&[eni(0, 1500)], true).is_empty(), "one interface");
    }
}
