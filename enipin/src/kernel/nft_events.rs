//! nftables' change events, for `watch` (`--connmark`): nft's changes send no rtnetlink event,
//! but the kernel announces every committed change to a table on nfnetlink's `NFNLGRP_NFTABLES`
//! group. Watching it, a deleted or edited `inet enipin` table (`nft flush ruleset`, a firewall
//! reload, a hand edit) is put back at once rather than at the next periodic reconcile (30 s by
//! default).
//!
//! Only changes to enipin's own table count: every other table's changes, and the generation
//! message ending each transaction, are no reason to reconcile. enipin's own write announces
//! itself too; the reconcile it starts reads the table back, finds it as written and changes
//! nothing (a read sends no event), so there is no loop.

use anyhow::{Context as _, Result};
use rtnetlink::packet_core::{NetlinkBuffer, NlaBuffer, NlasIterator};
use rtnetlink::sys::{AsyncSocket as _, AsyncSocketExt as _, SocketAddr, TokioSocket, protocols};

use crate::model::connmark::TABLE;

/// `NFNLGRP_NFTABLES` (linux/netfilter/nfnetlink.h).
const GROUP: u32 = 7;
/// `NFNL_SUBSYS_NFTABLES`: the high byte of an nf_tables message's type.
const SUBSYS: u16 = 10;
/// `NFPROTO_INET`: the family of enipin's table.
const FAMILY_INET: u8 = 1;
/// The attribute that names the table in every table, chain, rule, set, element, object and
/// flowtable message (`NFTA_TABLE_NAME`, `NFTA_CHAIN_TABLE`, `NFTA_RULE_TABLE`, ...).
const ATTR_TABLE: u16 = 1;
/// `struct nfgenmsg`: family, version, resource id.
const NFGENMSG_LEN: usize = 4;

/// A socket on nf_tables' change notifications in the calling thread's network namespace.
pub(crate) struct NftEvents {
    sock: TokioSocket,
}

impl NftEvents {
    /// Joining the group needs CAP_NET_ADMIN, as the rest of `watch` does.
    pub(crate) fn subscribe() -> Result<Self> {
        let mut sock = TokioSocket::new(protocols::NETLINK_NETFILTER)
            .context("opening a netfilter netlink socket")?;
        sock.socket_mut()
            .bind(&SocketAddr::new(0, 0))
            .context("binding the netfilter netlink socket")?;
        sock.socket_ref()
            .add_membership(GROUP)
            .context("joining nf_tables' change notifications (NFNLGRP_NFTABLES)")?;
        Ok(Self { sock })
    }

    /// The changes to enipin's table in the next datagram (often none: another table's).
    pub(crate) async fn next(&mut self) -> Result<Vec<&'static str>> {
        let (buf, _) = self
            .sock
            .recv_from_full()
            .await
            .context("reading nf_tables' change notifications")?;
        Ok(ours(&buf))
    }
}

/// What each message of `datagram` did to `inet enipin`: one word per message about it.
fn ours(datagram: &[u8]) -> Vec<&'static str> {
    let mut found = Vec::new();
    let mut rest = datagram;
    while let Ok(msg) = NetlinkBuffer::new_checked(rest) {
        let len = (msg.length() as usize).max(16);
        if let Some(what) = about_enipin(msg.message_type(), msg.payload()) {
            found.push(what);
        }
        // Messages are aligned to 4 bytes in a datagram.
        match rest.get(len.next_multiple_of(4)..) {
            Some(r) if !r.is_empty() => rest = r,
            _ => break,
        }
    }
    found
}

/// The change one nf_tables message announces, if it is to enipin's table.
fn about_enipin(kind: u16, payload: &[u8]) -> Option<&'static str> {
    if kind >> 8 != SUBSYS || payload.len() < NFGENMSG_LEN || payload[0] != FAMILY_INET {
        return None;
    }
    let what = match kind & 0xff {
        0 => "table added",
        2 | 26 => "table deleted",
        3 => "chain added",
        5 | 27 => "chain deleted",
        6 => "rule added",
        8 | 28 => "rule deleted",
        9 | 12 => "set changed",
        11 | 14 | 29 | 30 => "set changed",
        _ => return None,
    };
    let table = NlasIterator::new(&payload[NFGENMSG_LEN..])
        .filter_map(|nla: Result<NlaBuffer<&[u8]>, _>| nla.ok())
        .find(|nla| nla.kind() == ATTR_TABLE)?;
    let name = table.value().strip_suffix(&[0]).unwrap_or(table.value());
    (name == TABLE.as_bytes()).then_some(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One nf_tables notification: a netlink header, an nfgenmsg and the table's name.
    fn message(kind: u16, family: u8, table: &str) -> Vec<u8> {
        let mut nla = Vec::new();
        let name = [table.as_bytes(), &[0]].concat();
        nla.extend(((4 + name.len()) as u16).to_ne_bytes());
        nla.extend(ATTR_TABLE.to_ne_bytes());
        nla.extend(&name);
        nla.resize(nla.len().next_multiple_of(4), 0);
        let mut m = Vec::new();
        let len = 16 + NFGENMSG_LEN + nla.len();
        m.extend((len as u32).to_ne_bytes());
        m.extend(((SUBSYS << 8) | kind).to_ne_bytes());
        m.extend([0u8; 10]); // flags, sequence, port
        m.extend([family, 0, 0, 0]);
        m.extend(nla);
        m
    }

    #[test]
    fn only_changes_to_enipins_inet_table_count() {
        let datagram = [
            message(2, FAMILY_INET, "enipin"),  // nft delete table inet enipin
            message(6, FAMILY_INET, "filter"),  // someone else's rule
            message(8, 2, "enipin"),            // a table of that name in family ip
            message(7, FAMILY_INET, "enipin"),  // a GETRULE is no change
            message(6, FAMILY_INET, "enipin"),  // a rule added to it
            message(15, FAMILY_INET, "enipin"), // NEWGEN ends every transaction
        ]
        .concat();
        assert_eq!(ours(&datagram), ["table deleted", "rule added"]);
        assert!(ours(&message(0, FAMILY_INET, "enipin2")).is_empty());
        assert!(ours(&[0u8; 7]).is_empty(), "a short datagram is nothing");
    }
}
