//! The watcher's event socket: rtnetlink's link, address, rule and route groups, and the IPv4
//! and IPv6 netconf groups, whose messages netlink-packet-route does not parse.
//!
//! A change of `net.ipv{4,6}.conf.X.forwarding` sends no link event, only `RTM_NEWNETCONF`, yet
//! the datapath's next hop of an owner depends on it (the kernel's FIB lookup answers only for a
//! family the device forwards). Through rtnetlink's own message type a netconf message is a
//! decode error (logged at error level by netlink-proto, then dropped); [`Event`] reads both
//! kinds from one socket, so a netconf change keeps its place among the other events.

use anyhow::{Context as _, Result};
use futures::channel::mpsc::UnboundedReceiver;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{
    MulticastGroup,
    packet_core::{
        DecodeError, DefaultNla, Emitable as _, NetlinkDeserializable, NetlinkHeader,
        NetlinkMessage, NetlinkSerializable, NlasIterator, parse_i32,
    },
    sys::{AsyncSocket as _, SocketAddr, protocols::NETLINK_ROUTE},
};

/// `RTM_NEWNETCONF` and `RTM_DELNETCONF` (linux/rtnetlink.h).
pub(crate) const RTM_NEWNETCONF: u16 = 80;
pub(crate) const RTM_DELNETCONF: u16 = 81;
/// `NETCONFA_*` attributes (linux/netconf.h).
const NETCONFA_IFINDEX: u16 = 1;
const NETCONFA_FORWARDING: u16 = 2;
#[cfg(test)]
const NETCONFA_RP_FILTER: u16 = 3;
/// The ifindex of `net.ipv{4,6}.conf.all`: a write there sets every interface's value.
pub(crate) const NETCONFA_IFINDEX_ALL: i32 = -1;
/// `struct netconfmsg` is one byte (the family), padded to NLMSG_ALIGN: 4.
const HEADER_LEN: usize = 4;

/// One netconf message, reduced to what enipin plans from: whose forwarding, and its value
/// (`None` when the message is about something else: rp_filter, proxy_arp, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NetConf {
    /// `RTM_NEWNETCONF` or `RTM_DELNETCONF`.
    pub kind: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// The interface, [`NETCONFA_IFINDEX_ALL`], or -2 for `default`.
    pub ifindex: Option<i32>,
    pub forwarding: Option<bool>,
}

impl NetConf {
    fn parse(kind: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        let family = *payload
            .first()
            .ok_or_else(|| DecodeError::from("netconf message without its family"))?;
        let mut out = Self {
            kind,
            family,
            ifindex: None,
            forwarding: None,
        };
        for nla in NlasIterator::new(payload.get(HEADER_LEN..).unwrap_or_default()) {
            let nla = nla?;
            match nla.kind() {
                NETCONFA_IFINDEX => out.ifindex = Some(parse_i32(nla.value())?),
                NETCONFA_FORWARDING => out.forwarding = Some(parse_i32(nla.value())? != 0),
                _ => {}
            }
        }
        Ok(out)
    }

    fn attributes(&self) -> Vec<DefaultNla> {
        let ifindex = self.ifindex.map(|i| (NETCONFA_IFINDEX, i));
        let forwarding = self.forwarding.map(|f| (NETCONFA_FORWARDING, i32::from(f)));
        ifindex
            .into_iter()
            .chain(forwarding)
            .map(|(k, v)| DefaultNla::new(k, v.to_ne_bytes().to_vec()))
            .collect()
    }
}

/// A message on the watcher's socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Route(RouteNetlinkMessage),
    NetConf(NetConf),
}

impl NetlinkDeserializable for Event {
    type Error = DecodeError;
    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        match header.message_type {
            kind @ (RTM_NEWNETCONF | RTM_DELNETCONF) => {
                NetConf::parse(kind, payload).map(Self::NetConf)
            }
            _ => RouteNetlinkMessage::deserialize(header, payload).map(Self::Route),
        }
    }
}

/// The connection needs a serializable type; the watcher only listens (the tests build
/// messages with it).
impl NetlinkSerializable for Event {
    fn message_type(&self) -> u16 {
        match self {
            Self::Route(m) => m.message_type(),
            Self::NetConf(n) => n.kind,
        }
    }
    fn buffer_len(&self) -> usize {
        match self {
            Self::Route(m) => NetlinkSerializable::buffer_len(m),
            Self::NetConf(n) => HEADER_LEN + n.attributes().as_slice().buffer_len(),
        }
    }
    fn serialize(&self, buffer: &mut [u8]) {
        match self {
            Self::Route(m) => m.serialize(buffer),
            Self::NetConf(n) => {
                buffer[..HEADER_LEN].fill(0);
                buffer[0] = n.family;
                n.attributes().as_slice().emit(&mut buffer[HEADER_LEN..]);
            }
        }
    }
}

pub(crate) type Events = UnboundedReceiver<(NetlinkMessage<Event>, SocketAddr)>;

/// The groups of everything the desired state is computed from: links, addresses, rules,
/// routes, and the per-family device configuration (forwarding).
const GROUPS: [MulticastGroup; 9] = [
    MulticastGroup::Link,
    MulticastGroup::Ipv4Ifaddr,
    MulticastGroup::Ipv6Ifaddr,
    MulticastGroup::Ipv4Rule,
    MulticastGroup::Ipv6Rule,
    MulticastGroup::Ipv4Route,
    MulticastGroup::Ipv6Route,
    MulticastGroup::Ipv4Netconf,
    MulticastGroup::Ipv6Netconf,
];

/// A socket on [`GROUPS`] (all below 32: one bind names them all, as rtnetlink's
/// `new_multicast_connection` does).
pub(crate) fn subscribe() -> Result<Events> {
    let (mut conn, _handle, events) = rtnetlink::proto::new_connection::<Event>(NETLINK_ROUTE)
        .context("opening the netlink event socket")?;
    let groups = GROUPS
        .iter()
        .fold(0u32, |acc, g| acc | 1 << (*g as u32 - 1));
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, groups))
        .context("subscribing to rtnetlink link/address/rule/route/netconf events")?;
    tokio::spawn(conn);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::NetlinkPayload;

    /// The bytes the kernel sends for `sysctl -w net.ipv4.conf.eth1.forwarding=1` (ifindex 3):
    /// netconfmsg (family 2, 3 bytes of padding), NETCONFA_IFINDEX 3, NETCONFA_FORWARDING 1.
    fn forwarding_on_eth1() -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b.extend([2, 0, 0, 0]);
        b.extend([8, 0, 1, 0]);
        b.extend(3i32.to_ne_bytes());
        b.extend([8, 0, 2, 0]);
        b.extend(1i32.to_ne_bytes());
        let len = b.len() as u32;
        b[..4].copy_from_slice(&len.to_ne_bytes());
        b[4..6].copy_from_slice(&RTM_NEWNETCONF.to_ne_bytes());
        b
    }

    #[test]
    fn a_netconf_message_decodes_with_its_forwarding() {
        let msg = NetlinkMessage::<Event>::deserialize(&forwarding_on_eth1()).unwrap();
        let want = NetConf {
            kind: RTM_NEWNETCONF,
            family: libc::AF_INET as u8,
            ifindex: Some(3),
            forwarding: Some(true),
        };
        assert_eq!(
            msg.payload,
            NetlinkPayload::InnerMessage(Event::NetConf(want.clone()))
        );
        // And back: what the tests build is what the kernel sends.
        let mut back = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(Event::NetConf(want)),
        );
        back.finalize();
        let mut buf = vec![0; back.buffer_len()];
        back.serialize(&mut buf);
        assert_eq!(buf, forwarding_on_eth1());
    }

    #[test]
    fn an_rp_filter_notification_carries_no_forwarding_and_links_still_decode() {
        let mut b = forwarding_on_eth1();
        b[30..32].copy_from_slice(&NETCONFA_RP_FILTER.to_ne_bytes());
        let msg = NetlinkMessage::<Event>::deserialize(&b).unwrap();
        let NetlinkPayload::InnerMessage(Event::NetConf(n)) = msg.payload else {
            panic!("{msg:?}")
        };
        assert_eq!((n.ifindex, n.forwarding), (Some(3), None));
        // An rtnetlink message goes through netlink-packet-route as before.
        let mut link = NetlinkMessage::from(RouteNetlinkMessage::NewLink(Default::default()));
        link.finalize();
        let mut buf = vec![0; link.buffer_len()];
        link.serialize(&mut buf);
        let msg = NetlinkMessage::<Event>::deserialize(&buf).unwrap();
        assert!(
            matches!(
                msg.payload,
                NetlinkPayload::InnerMessage(Event::Route(RouteNetlinkMessage::NewLink(_)))
            ),
            "{msg:?}"
        );
    }
}
