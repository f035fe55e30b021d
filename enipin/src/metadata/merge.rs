//! Metadata into a discovery: each interface whose MAC metadata knows gets the addresses
//! metadata lists and netlink lacks (as host addresses: no subnet route ever uses one as its
//! source, and the kernel refuses a route source the host does not have), and its delegated
//! prefixes. Selection and planning then treat them like any other address and prefix.

use crate::{
    discover::Discovery,
    model::{Cidr, FromMetadata},
};

use super::View;

/// Adds `view`'s addresses and prefixes to `d`'s interfaces. With `configure` (enipin adds and
/// removes addresses itself), an address enipin added that metadata no longer lists is left out
/// of the desired state: it is about to be removed.
pub(crate) fn merge(d: &mut Discovery, view: &View, configure: bool) {
    for i in &mut d.interfaces {
        let Some(m) = view.known.get(&i.mac) else {
            continue;
        };
        let mut from = FromMetadata {
            addrs: m.addresses().collect(),
            prefixes: m.prefixes.clone(),
            missing: Vec::new(),
            retired: Vec::new(),
            unknown: view.unknown.get(&i.mac).cloned(),
        };
        for a in m.addresses() {
            if !i.addrs.iter().any(|c| c.addr == a) && !i.ours.iter().any(|c| c.addr == a) {
                i.addrs.push(Cidr::host(a));
                from.missing.push(a);
            }
        }
        if configure {
            let retired: Vec<Cidr> = i
                .ours
                .iter()
                .filter(|o| !from.addrs.contains(&o.addr))
                .copied()
                .collect();
            i.addrs
                .retain(|a| !retired.iter().any(|r| r.addr == a.addr));
            from.retired = retired;
        }
        i.meta = Some(from);
    }
}
