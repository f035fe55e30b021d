//! The addresses `--configure-addresses` adds: those the cloud's metadata assigns an ENI and the
//! interface lacks. Each is added as a host address (`/32`, `/128`) with `noprefixroute` (and
//! `nodad` for IPv6: the cloud assigned it to this ENI alone, and a tentative address would be
//! unusable for a second or more), so it changes no route of anyone's: the subnet's route is
//! already there through the interface's primary address, and enipin's table routes replies
//! from it. Each carries enipin's protocol (`IFA_PROTO` 229, kernels >= 5.18), which is how
//! enipin finds exactly the addresses it added: removed when metadata stops listing them, and
//! on detach; never anyone else's.

use serde::Serialize;

use crate::{
    discover::Discovery,
    model::{Cidr, ManagedInterface, RTPROT_ENIPIN},
    plan::Change,
};

/// One address on one interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Address {
    pub(crate) ifindex: u32,
    /// The interface's name, for the plan's text.
    pub(crate) dev: String,
    pub(crate) cidr: Cidr,
}

impl Address {
    /// `ip address` arguments.
    pub(crate) fn ip_args(&self) -> String {
        let nodad = if self.cidr.is_ipv6() { " nodad" } else { "" };
        format!(
            "{} dev {} noprefixroute{nodad} proto {RTPROT_ENIPIN}",
            self.cidr, self.dev
        )
    }
}

/// The additions (what metadata lists and the managed interfaces lack) and the removals (what
/// enipin added and metadata no longer lists), for interfaces whose metadata is known.
pub(crate) fn changes(d: &Discovery, managed: &[ManagedInterface]) -> (Vec<Change>, Vec<Change>) {
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for m in managed {
        let Some(meta) = d
            .interfaces
            .iter()
            .find(|i| i.ifindex == m.ifindex)
            .and_then(|i| i.meta.as_ref())
        else {
            continue;
        };
        let address = |cidr| Address {
            ifindex: m.ifindex,
            dev: m.name.clone(),
            cidr,
        };
        adds.extend(
            meta.missing
                .iter()
                .map(|a| Change::AddAddress(address(Cidr::host(*a)))),
        );
        dels.extend(meta.retired.iter().map(|c| Change::DelAddress(address(*c))));
    }
    (adds, dels)
}

/// Every address enipin added, on any interface: what detach removes.
pub(crate) fn ours(d: &Discovery) -> Vec<Change> {
    d.interfaces
        .iter()
        .flat_map(|i| {
            i.ours.iter().map(|c| {
                Change::DelAddress(Address {
                    ifindex: i.ifindex,
                    dev: i.name.clone(),
                    cidr: *c,
                })
            })
        })
        .collect()
}
