//! The address changes of `--configure-addresses` (the addresses themselves:
//! [`crate::model::address`]).

use crate::{
    model::discovery::Discovery,
    model::{Cidr, ManagedInterface, address::Address},
    routing::plan::Change,
};

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
