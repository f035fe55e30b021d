//! Ethernet frames for BPF_PROG_TEST_RUN, built with `bytes`, and the `__sk_buff` context that
//! tells the program which interface it runs on.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut as _, BytesMut};

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
pub const BROADCAST: [u8; 6] = [0xff; 6];

fn eth(dst: [u8; 6], ethertype: u16) -> BytesMut {
    let mut b = BytesMut::with_capacity(128);
    b.put_slice(&dst);
    b.put_slice(&MAC_A);
    b.put_u16(ethertype);
    b
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + IPv4 (with `options`, a multiple of 4 bytes) + UDP with `payload` bytes.
pub fn ipv4_udp(
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    options: &[u8],
    payload: usize,
) -> Vec<u8> {
    assert!(options.len().is_multiple_of(4) && options.len() <= 40);
    let mut b = eth(dst_mac, 0x0800);
    let ihl = 5 + options.len() / 4;
    let total = ihl * 4 + 8 + payload;
    let mut ip = BytesMut::new();
    ip.put_u8(0x40 | ihl as u8);
    ip.put_u8(0);
    ip.put_u16(total as u16);
    ip.put_u32(0); // id, flags, fragment offset
    ip.put_u8(64);
    ip.put_u8(17);
    ip.put_u16(0);
    ip.put_slice(&src.octets());
    ip.put_slice(&dst.octets());
    ip.put_slice(options);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    b.put_slice(&ip);
    b.put_u16(40000);
    b.put_u16(9);
    b.put_u16((8 + payload) as u16);
    b.put_u16(0);
    b.put_bytes(0xab, payload);
    b.to_vec()
}

/// Ethernet + IPv6 + `next_header` payload (`payload` is the L4 bytes).
pub fn ipv6(
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = eth(dst_mac, 0x86dd);
    b.put_u32(0x6000_0000);
    b.put_u16(payload.len() as u16);
    b.put_u8(next_header);
    b.put_u8(64);
    b.put_slice(&src.octets());
    b.put_slice(&dst.octets());
    b.put_slice(payload);
    b.to_vec()
}

/// IPv6 + UDP with `payload` bytes.
pub fn ipv6_udp(dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, payload: usize) -> Vec<u8> {
    let mut udp = BytesMut::new();
    udp.put_u16(40000);
    udp.put_u16(9);
    udp.put_u16((8 + payload) as u16);
    udp.put_u16(0);
    udp.put_bytes(0xab, payload);
    ipv6(dst_mac, src, dst, 17, &udp)
}

/// IPv6 + ICMPv6 of `icmp_type` (135 = neighbour solicitation, 128 = echo request).
pub fn icmpv6(dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, icmp_type: u8) -> Vec<u8> {
    let mut icmp = BytesMut::new();
    icmp.put_u8(icmp_type);
    icmp.put_u8(0);
    icmp.put_u16(0);
    icmp.put_bytes(0, 20);
    ipv6(dst_mac, src, dst, 58, &icmp)
}

/// An ARP request (who-has `target` tell `sender`).
pub fn arp(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut b = eth(BROADCAST, 0x0806);
    b.put_u16(1);
    b.put_u16(0x0800);
    b.put_u8(6);
    b.put_u8(4);
    b.put_u16(1);
    b.put_slice(&MAC_A);
    b.put_slice(&sender.octets());
    b.put_slice(&[0; 6]);
    b.put_slice(&target.octets());
    b.to_vec()
}

/// An 802.1Q-tagged IPv4 frame (the tag sits where the ethertype would be).
pub fn vlan_ipv4(dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let inner = ipv4_udp(dst_mac, src, dst, &[], 18);
    let mut b = BytesMut::new();
    b.put_slice(&inner[..12]);
    b.put_u16(0x8100);
    b.put_u16(100);
    b.put_slice(&inner[12..]);
    b.to_vec()
}

/// Size of `struct __sk_buff` (include/uapi/linux/bpf.h) and the offsets test-run accepts.
pub const SK_BUFF_LEN: usize = 192;
const OFF_IFINDEX: usize = 40;

/// A `__sk_buff` for `ctx_in`: only `ifindex` set, the interface the program "runs on". The kernel
/// resolves it in the caller's network namespace, so run from a thread inside a test namespace.
pub fn skb_ctx(ifindex: u32) -> [u8; SK_BUFF_LEN] {
    let mut ctx = [0u8; SK_BUFF_LEN];
    ctx[OFF_IFINDEX..OFF_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}
