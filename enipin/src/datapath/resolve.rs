//! The owners' gateways resolved before the program hands them to `bpf_redirect_neigh` as next
//! hops (`--no-rules`, see `enipin_ebpf::NextHop`).
//!
//! Handed a next hop whose neighbour is not resolved, `bpf_redirect_neigh` queues the packet on
//! it and, once the gateway answers, sends it through the neighbour of the packet's old route
//! (the kernel's `neigh_update` re-looks the neighbour up from the skb's route): the other
//! ENI's MACs on the owner. On the lab's split host that was the first reply of every 3 after the
//! host's neighbours were flushed (2 of 3 answered). So before the entries are written each
//! gateway is asked for (`NTF_USE`) on its owner, and attach waits a bounded time for the
//! answers; a gateway then stays a valid neighbour (stale at worst, which sends at once) while
//! redirects use it. What is left: an entry the kernel drops later (garbage collection past
//! `gc_thresh1`, 128 entries, or a flush) costs its next redirect that one packet again.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{model::ManagedInterface, kernel::netlink::Netlink};

/// How long attach waits for the gateways to answer: the kernel's first ARP or neighbour
/// solicitation is retransmitted after `retrans_time_ms` (1000 by default), so a gateway that
/// has not answered by then lost the first request or is not there.
const WAIT: Duration = Duration::from_secs(1);
/// Between two reads of the neighbour table while waiting.
const POLL: Duration = Duration::from_millis(10);

/// Every gateway of `managed` on its interface, as (ifindex, address).
pub(crate) fn gateways(managed: &[ManagedInterface]) -> Vec<(u32, IpAddr)> {
    managed
        .iter()
        .flat_map(|m| {
            [m.gateway_v4, m.gateway_v6]
                .into_iter()
                .flatten()
                .map(move |g| (m.ifindex, g.addr))
        })
        .collect()
}

/// Asks for each gateway of `managed` on its interface and waits up to [`WAIT`] for them to be
/// valid neighbours; returns those still unresolved (each logged: redirects through it lose
/// their first packet until it answers).
pub(crate) async fn resolve(
    nl: &Netlink,
    managed: &[ManagedInterface],
) -> Result<Vec<(u32, IpAddr)>> {
    let want = gateways(managed);
    let mut left = unresolved(nl, &want).await?;
    for (ifindex, addr) in &left {
        nl.use_neighbour(*ifindex, *addr).await?;
    }
    let start = Instant::now();
    while !left.is_empty() && start.elapsed() < WAIT {
        tokio::time::sleep(POLL).await;
        left = unresolved(nl, &left).await?;
    }
    for (ifindex, addr) in &left {
        log::warn!(
            "gateway {addr} has not answered on ifindex {ifindex} within {} ms: a reply the \
             program redirects through it may leave with another interface's MAC until it does",
            WAIT.as_millis()
        );
    }
    Ok(left)
}

/// The entries of `want` that are not valid neighbours.
async fn unresolved(nl: &Netlink, want: &[(u32, IpAddr)]) -> Result<Vec<(u32, IpAddr)>> {
    let valid = nl.valid_neighbours().await?;
    Ok(want
        .iter()
        .filter(|w| !valid.contains(w))
        .copied()
        .collect())
}
