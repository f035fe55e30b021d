//! enipin's TC egress enforcer. See `lib.rs` for the maps and counters it shares with user space.
//!
//! Every packet leaving a managed interface is classified once:
//! - source owned by this interface: the normal case, passed;
//! - source owned by another managed interface: misrouted; redirected onto the owner (enforce
//!   mode) so it leaves with the owner's MAC, or only counted (monitor mode). With enipin's rules
//!   routing the owner and its next hop resolved, the program writes the MACs from the owner's
//!   table itself (`bpf_redirect`); otherwise `bpf_redirect_neigh` resolves them;
//! - everything else (not owned, non-IP, VLAN, multicast, link-local, neighbour discovery,
//!   truncated) passed untouched.
//!
//! Passing means `TC_ACT_UNSPEC` (`TCX_NEXT`): other programs on the hook still run. The program
//! fails open: whatever goes wrong, the packet passes and a counter says why.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        __sk_buff, BPF_FIB_LOOKUP_DIRECT, BPF_FIB_LOOKUP_OUTPUT, BPF_FIB_LOOKUP_TBID,
        TC_ACT_REDIRECT, TC_ACT_UNSPEC, bpf_fib_lookup, bpf_redir_neigh,
        bpf_redir_neigh__bindgen_ty_1,
    },
    btf_maps::{self, ArrayOfMaps},
    helpers::generated::{
        bpf_check_mtu, bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh,
        bpf_skb_store_bytes,
    },
    macros::{btf_map, classifier, map},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, PerCpuHashMap, lpm_trie::Key},
    programs::TcContext,
};
use enipin_ebpf::{
    AddrLen, Bucket, BucketWordsV4, BucketWordsV6, Config, Counters, FAST_SLOTS, Local, LocalV4,
    LocalV6, MAX_INTERFACES, MAX_OWNERS, MODE_ENFORCE, NEXT_HOP_V4, NEXT_HOP_V6, NextHop, ON_LINK,
    Owner, PREFIXES_V4_PRESENT, PREFIXES_V6_PRESENT, TABLE_BUCKETS, bucket_index,
};

// Map names must equal `enipin_ebpf::maps::*` (the `#[map]` name is the symbol name).
#[map(name = "ENIPIN_OWN4")]
static OWNERS_V4: HashMap<[u8; 4], Owner> = HashMap::pinned(MAX_OWNERS, 0);
#[map(name = "ENIPIN_OWN6")]
static OWNERS_V6: HashMap<[u8; 16], Owner> = HashMap::pinned(MAX_OWNERS, 0);
#[map(name = "ENIPIN_PFX4")]
static PREFIXES_V4: LpmTrie<[u8; 4], Owner> = LpmTrie::pinned(MAX_OWNERS, 0);
#[map(name = "ENIPIN_PFX6")]
static PREFIXES_V6: LpmTrie<[u8; 16], Owner> = LpmTrie::pinned(MAX_OWNERS, 0);
#[map(name = "ENIPIN_CNT")]
static COUNTERS: PerCpuHashMap<u32, Counters> = PerCpuHashMap::pinned(MAX_INTERFACES, 0);
#[map(name = "ENIPIN_CNTF")]
static COUNTERS_FAST: PerCpuArray<Counters> = PerCpuArray::pinned(FAST_SLOTS, 0);
#[map(name = "ENIPIN_LOC4")]
static LOCAL_V4: Array<LocalV4> = Array::pinned(FAST_SLOTS, 0);
#[map(name = "ENIPIN_LOC6")]
static LOCAL_V6: Array<LocalV6> = Array::pinned(FAST_SLOTS, 0);
/// An owner table: an array of buckets, swapped whole by user space (see `maps::TABLE_V4`). Its
/// BTF value type is `W`, the bucket as plain words (`enipin_ebpf::BucketWordsV4`): see there why
/// not the `Bucket` struct.
type Table<W> = ArrayOfMaps<btf_maps::Array<W, { TABLE_BUCKETS as usize }>, 1>;
#[btf_map(name = "ENIPIN_TAB4", pin_by_name)]
static TABLE_V4: Table<BucketWordsV4> = ArrayOfMaps::new();
#[btf_map(name = "ENIPIN_TAB6", pin_by_name)]
static TABLE_V6: Table<BucketWordsV6> = ArrayOfMaps::new();
#[map(name = "ENIPIN_CFG")]
static CONFIG: Array<Config> = Array::pinned(1, 0);
#[map(name = "ENIPIN_NH")]
static NEXT_HOPS: Array<NextHop> = Array::pinned(FAST_SLOTS, 0);

/// Non-zero: the kernel has `bpf_check_mtu` (5.12+). User space sets it at load time from a probe
/// (`EbpfLoader::override_global`, name in `enipin_ebpf::HAVE_CHECK_MTU`); it lives in `.rodata`,
/// which aya freezes, so the verifier reads it as a constant and never visits the branch not
/// taken: on 5.10 and 5.11 the call to the helper they lack is removed as dead code instead of
/// refused (`invalid func unknown#163`), as libbpf-based tools guard optional helpers.
#[unsafe(no_mangle)]
static ENIPIN_HAVE_CHECK_MTU: u32 = 1;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const ENODEV: i32 = 19;

/// Which counter a packet bumps.
#[derive(Clone, Copy)]
enum Verdict {
    NotOwned,
    NonIp,
    Skipped,
    Malformed,
    /// Owned by the managed interface with this ifindex (this one or another).
    Owned(u32),
    /// Owned by this interface, found on the fast path.
    OwnedHere,
}

#[classifier]
fn enipin_egress(ctx: TcContext) -> i32 {
    // SAFETY: the context of a classifier is an `__sk_buff`; these fields are readable.
    let (ifindex, vlan_present) = unsafe {
        let skb = ctx.as_ptr() as *const __sk_buff;
        ((*skb).ifindex, (*skb).vlan_present)
    };
    let verdict = if vlan_present != 0 {
        Verdict::Skipped
    } else {
        classify(&ctx, ifindex)
    };
    let counters = counters(ifindex);
    let owner = match verdict {
        Verdict::OwnedHere => {
            bump(counters, |c| c.owned_here += 1);
            return TC_ACT_UNSPEC;
        }
        Verdict::Owned(owner) if owner == ifindex => {
            bump(counters, |c| c.owned_here += 1);
            return TC_ACT_UNSPEC;
        }
        Verdict::Owned(owner) => owner,
        other => {
            bump(counters, |c| match other {
                Verdict::NotOwned => c.not_owned += 1,
                Verdict::NonIp => c.non_ip += 1,
                Verdict::Skipped => c.skipped += 1,
                _ => c.malformed += 1,
            });
            return TC_ACT_UNSPEC;
        }
    };
    let len = ctx.len() as u64;
    bump(counters, |c| {
        c.misrouted_packets += 1;
        c.misrouted_bytes += len;
    });
    let config = CONFIG.get(0).copied().unwrap_or_default();
    if config.mode != MODE_ENFORCE {
        return TC_ACT_UNSPEC;
    }
    redirect(&ctx, counters, owner, config.debug != 0)
}

/// Sends the packet out of its owner, or passes it (fail open) when that cannot work.
#[inline(always)]
fn redirect(ctx: &TcContext, counters: Option<*mut Counters>, owner: u32, debug: bool) -> i32 {
    // A redirect skips the stack's MTU check, so check against the owner's MTU here (GSO packets
    // pass: they are segmented for the owner on transmit). Too big: pass the packet unchanged on
    // the wrong interface rather than drop it (fail open), and count it. The stack already
    // checked it against this interface's MTU, so it is only the owner's smaller MTU that fails.
    let mut mtu_len: u32 = 0;
    // SAFETY: a static of the object; volatile, so that the compiler keeps the load (its value is
    // the one user space wrote before loading, not the initializer).
    let rc = if unsafe { core::ptr::read_volatile(&ENIPIN_HAVE_CHECK_MTU) } != 0 {
        // SAFETY: plain helper call on our context and a stack variable.
        unsafe { bpf_check_mtu(ctx.as_ptr(), owner, &mut mtu_len, 0, 0) }
    } else {
        fits_owner_mtu(ctx, owner, &mut mtu_len)
    };
    if rc != 0 {
        if rc > 0 {
            bump(counters, |c| c.mtu_exceeded += 1);
        } else {
            bump(counters, |c| c.redirect_failed += 1);
        }
        if debug {
            aya_log_ebpf::warn!(
                ctx,
                "enipin: not redirecting {} bytes to ifindex {}: check_mtu {} (mtu {})",
                ctx.len(),
                owner,
                rc,
                mtu_len
            );
        }
        return TC_ACT_UNSPEC;
    }
    let rc = match next_hop(ctx, owner) {
        Route::Resolved(mut hop) => {
            // The lookup resolved the neighbour: write the owner's MAC and the next hop's into
            // the frame and send it out of the owner as it is, which skips the neighbour output
            // and its header cache (about 2.6 % of a redirected frame with perf on the lab).
            // bpf_skb_store_bytes makes only this frame's header writable (a direct packet
            // write would make the verifier unclone every packet the program sees). Should the
            // store fail, bpf_redirect_neigh writes the header from the same next hop.
            // SAFETY: our context and 12 bytes of a stack value.
            let stored = unsafe {
                bpf_skb_store_bytes(ctx.as_ptr().cast(), 0, hop.macs.as_ptr().cast(), 12, 0)
            };
            if stored == 0 {
                // SAFETY: plain helper call; flags 0: the owner's egress.
                unsafe { bpf_redirect(owner, 0) }
            } else {
                // SAFETY: a stack value of the helper's parameter type, its size given.
                unsafe { redirect_neigh(owner, &mut hop.nh) }
            }
        }
        // SAFETY: a stack value of the helper's parameter type.
        Route::Gateway(mut nh) => unsafe { redirect_neigh(owner, &mut nh) },
        // SAFETY: no neighbour parameters (NULL, 0): the kernel looks the next hop up itself.
        Route::Kernel => unsafe { bpf_redirect_neigh(owner, core::ptr::null_mut(), 0, 0) },
    };
    if rc == TC_ACT_REDIRECT as i64 {
        return TC_ACT_REDIRECT;
    }
    bump(counters, |c| c.redirect_failed += 1);
    if debug {
        aya_log_ebpf::warn!(ctx, "enipin: redirect to ifindex {} failed: {}", owner, rc);
    }
    TC_ACT_UNSPEC
}

/// `bpf_redirect_neigh` onto `owner` through next hop `nh`.
///
/// # Safety
/// A helper call; `nh` is a live value of the helper's parameter type.
#[inline(always)]
unsafe fn redirect_neigh(owner: u32, nh: &mut bpf_redir_neigh) -> i64 {
    let size = core::mem::size_of::<bpf_redir_neigh>() as i32;
    // SAFETY: as the caller promised.
    unsafe { bpf_redirect_neigh(owner, nh, size, 0) }
}

/// `bpf_check_mtu`'s answer on a kernel without it (5.10, 5.11): 0 when the packet fits the MTU
/// user space recorded for the owner of its source (`Owner::mtu`, kept current by every
/// reconcile), 1 (too big, counted as `mtu_exceeded`) when it does not, or when it cannot be
/// told. A GSO packet is checked by the size of the segments the owner will cut it into (its
/// network and transport headers plus `gso_size`); one of another transport, or behind IPv6
/// extension headers, is redirected unchecked, as the helper (flags 0) redirects every GSO packet.
/// `mtu_len` gets the MTU compared against.
#[inline(always)]
fn fits_owner_mtu(ctx: &TcContext, owner: u32, mtu_len: &mut u32) -> i64 {
    // bpf_check_mtu fails for an owner that is gone; bpf_redirect_neigh would not (it only
    // records the target) and the stack would drop the packet when the redirect finds no device.
    if !owner_exists(ctx, owner) {
        return -(ENODEV as i64);
    }
    let Some(mtu) = owner_mtu(ctx) else {
        return 1;
    };
    *mtu_len = mtu;
    // SAFETY: the context of a classifier is an `__sk_buff`; gso_size is readable (5.7+).
    let gso_size = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).gso_size };
    let len = if gso_size == 0 {
        ctx.len().saturating_sub(ETH_HLEN as u32)
    } else {
        match segment_headers(ctx) {
            Some(headers) => headers + gso_size,
            None => return 0,
        }
    };
    i64::from(len > mtu)
}

/// Whether interface `owner` exists, asked of `bpf_fib_lookup` (4.18+), whose first step on
/// either family is to find the device: -ENODEV when there is none. Whatever else it answers
/// (forwarding off, no route) says the device is there.
#[inline(always)]
fn owner_exists(ctx: &TcContext, owner: u32) -> bool {
    // SAFETY: all-zero is a valid `bpf_fib_lookup` (plain integers).
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = AF_INET as u8;
    p.ifindex = owner;
    let flags = BPF_FIB_LOOKUP_DIRECT | BPF_FIB_LOOKUP_OUTPUT;
    let size = core::mem::size_of::<bpf_fib_lookup>() as i32;
    // SAFETY: our context and a stack value of the helper's parameter type, its size given.
    let rc = unsafe { fib_lookup(ctx.as_ptr(), &mut p, size, flags) };
    rc != -(ENODEV as i64)
}

/// The MTU user space recorded for the owner of this packet's source (the exact owner map, then
/// the delegated prefixes): `None` when there is none (0: not known).
#[inline(always)]
fn owner_mtu(ctx: &TcContext) -> Option<u32> {
    let (data, end) = (ctx.data(), ctx.data_end());
    let l3 = data + ETH_HLEN;
    if l3 + IPV4_MIN_HLEN > end {
        return None;
    }
    // SAFETY: bounds checked just above.
    let eth = unsafe { &*(data as *const [u8; ETH_HLEN]) };
    let owner = if u16::from_be_bytes([eth[12], eth[13]]) == ETH_P_IP {
        // SAFETY: the 20-byte header is in bounds (checked above).
        let src = bytes::<4>((unsafe { packet_u32(l3 + 12) }, 0));
        owner_of(&OWNERS_V4, &PREFIXES_V4, &src)?
    } else {
        if l3 + IPV6_HLEN > end {
            return None;
        }
        // SAFETY: the 40-byte header is in bounds (checked above).
        let src = bytes::<16>(unsafe { (packet_u64(l3 + 8), packet_u64(l3 + 16)) });
        owner_of(&OWNERS_V6, &PREFIXES_V6, &src)?
    };
    (owner.mtu != 0).then_some(owner.mtu)
}

#[inline(always)]
fn owner_of<const N: usize>(
    exact: &HashMap<[u8; N], Owner>,
    prefixes: &LpmTrie<[u8; N], Owner>,
    src: &[u8; N],
) -> Option<Owner> {
    // SAFETY: values are plain data written whole by user space.
    if let Some(owner) = unsafe { exact.get(src) } {
        return Some(*owner);
    }
    prefixes.get(&Key::new(N as u32 * 8, *src)).copied()
}

/// The bytes of network and transport header each segment of a GSO packet carries: the IPv4
/// header (with options) or the fixed IPv6 header, then TCP's (data offset) or UDP's 8 bytes.
/// `None` for anything else.
#[inline(always)]
fn segment_headers(ctx: &TcContext) -> Option<u32> {
    let (data, end) = (ctx.data(), ctx.data_end());
    let l3 = data + ETH_HLEN;
    if l3 + IPV6_HLEN > end {
        return None;
    }
    // SAFETY: bounds checked just above (40 bytes cover either family's fixed header).
    let ip = unsafe { &*(l3 as *const [u8; IPV6_HLEN]) };
    let (l3_len, proto) = match ip[0] >> 4 {
        4 => ((ip[0] & 0x0f) as usize * 4, ip[9]),
        6 => (IPV6_HLEN, ip[6]),
        _ => return None,
    };
    let l4 = l3 + l3_len;
    if l4 + 20 > end {
        return None;
    }
    // SAFETY: bounds checked just above (a TCP header's fixed 20 bytes).
    let tcp = unsafe { &*(l4 as *const [u8; 20]) };
    let l4_len = match proto {
        IPPROTO_TCP => (tcp[12] >> 4) as usize * 4,
        IPPROTO_UDP => 8,
        _ => return None,
    };
    Some((l3_len + l4_len) as u32)
}

/// A next hop the owner's table resolved: the frame's new Ethernet addresses, and the same hop
/// as `bpf_redirect_neigh` takes it.
struct Hop {
    /// Destination MAC (the neighbour's), then source MAC (the owner's): header order.
    macs: [u8; 12],
    nh: bpf_redir_neigh,
}

/// How a packet redirected onto its owner reaches its next hop.
enum Route {
    /// The owner's table resolved it (enipin's rules, a family the owner forwards, 6.8+).
    Resolved(Hop),
    /// Through the owner's gateway: `--no-rules`, a destination off the owner's networks.
    Gateway(bpf_redir_neigh),
    /// The kernel's full route lookup with oif = owner.
    Kernel,
}

/// The next hop of a packet redirected onto `owner`, from the owner's `NextHop` entry (see
/// there): its table or its gateway, else the kernel's full lookup.
#[inline(always)]
fn next_hop(ctx: &TcContext, owner: u32) -> Route {
    let Some(hop) = (owner < FAST_SLOTS).then(|| NEXT_HOPS.get(owner)).flatten() else {
        return Route::Kernel;
    };
    let (data, end) = (ctx.data(), ctx.data_end());
    let l3 = data + ETH_HLEN;
    // `classify` parsed these headers already; the verifier wants the bounds checked again.
    if l3 + IPV4_MIN_HLEN > end {
        return Route::Kernel;
    }
    // SAFETY: bounds checked just above.
    let eth = unsafe { &*(data as *const [u8; ETH_HLEN]) };
    let v4 = u16::from_be_bytes([eth[12], eth[13]]) == ETH_P_IP;
    // The table lookup answers only for a family the owner forwards (FWD_DISABLED otherwise).
    if hop.table != 0 && hop.families & if v4 { NEXT_HOP_V4 } else { NEXT_HOP_V6 } != 0 {
        return table_hop(ctx, hop.table, owner, v4).map_or(Route::Kernel, Route::Resolved);
    }
    gateway(hop, v4, l3, end).map_or(Route::Kernel, Route::Gateway)
}

/// The owner's gateway as the next hop of a packet to a destination off every on-link network
/// of the owner's entry; `None` (the kernel's lookup, which finds the owner's subnet route) for
/// one on them, or when the entry has no gateway of the packet's family.
///
/// Handed a next hop, `bpf_redirect_neigh` keeps the packet's old route: one that waits for the
/// gateway's neighbour is later sent through that route's neighbour (see `table_hop`). User space
/// resolves each gateway on its owner before it writes the entry, and the owner's gateway then
/// stays a valid neighbour (stale at worst, which sends at once) while the redirects use it.
#[inline(always)]
fn gateway(hop: &NextHop, v4: bool, l3: usize, end: usize) -> Option<bpf_redir_neigh> {
    // SAFETY: all-zero is a valid `bpf_redir_neigh` (plain integers).
    let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
    if v4 {
        if hop.gateway_v4 == 0 {
            return None;
        }
        // SAFETY: the 20-byte header is in bounds (checked by the caller).
        let dst = unsafe { packet_u32(l3 + 16) } as u32;
        let n = hop.on_link_v4_len as usize;
        let mut i = 0;
        while i < ON_LINK {
            let [net, mask] = hop.on_link_v4[i];
            if i < n && dst & mask == net {
                return None;
            }
            i += 1;
        }
        nh.nh_family = AF_INET;
        nh.__bindgen_anon_1.ipv4_nh = hop.gateway_v4;
        return Some(nh);
    }
    if l3 + IPV6_HLEN > end || hop.gateway_v6 == [0, 0] {
        return None;
    }
    // SAFETY: the 40-byte header is in bounds (checked just above).
    let dst = unsafe { [packet_u64(l3 + 24), packet_u64(l3 + 32)] };
    let n = hop.on_link_v6_len as usize;
    let mut i = 0;
    while i < ON_LINK {
        let [net, mask] = hop.on_link_v6[i];
        if i < n && dst[0] & mask[0] == net[0] && dst[1] & mask[1] == net[1] {
            return None;
        }
        i += 1;
    }
    nh.nh_family = AF_INET6;
    // SAFETY: two u64 and four u32 are the same 16 bytes.
    nh.__bindgen_anon_1.ipv6_nh =
        unsafe { core::mem::transmute::<[u64; 2], [u32; 4]>(hop.gateway_v6) };
    Some(nh)
}

/// The next hop of a packet redirected onto `owner`, when user space wrote the owner's table
/// (enipin's rules route the owner): the destination looked up in the owner's table alone (no
/// policy rules; the table holds the owner's subnet routes and its default route), with its
/// neighbour resolved. `None`: the kernel looks the route up itself (the full lookup), as for a
/// kernel without `BPF_FIB_LOOKUP_TBID` (< 6.8), or a next hop whose neighbour is not resolved
/// yet. That last case matters: handed a next hop, `bpf_redirect_neigh` keeps the packet's old
/// route, and a packet that waits for the neighbour is later sent through that route's
/// neighbour, the wrong interface's MAC on the owner.
///
/// A resolved neighbour may be stale (the lookup accepts any valid state: reachable, stale,
/// delay, probe, permanent); a frame sent with its MAC directly does not ask for it to be
/// confirmed, as the neighbour output would. The owner's own traffic to the same next hop does
/// (with the rules installed it is most of what leaves the owner, and its gateway is the next hop
/// of every off-subnet reply), and the neighbour's own ARP or ND updates the entry; cilium's
/// redirect takes the lookup's MACs the same way.
#[inline(always)]
fn table_hop(ctx: &TcContext, table: u32, owner: u32, v4: bool) -> Option<Hop> {
    let (data, end) = (ctx.data(), ctx.data_end());
    let l3 = data + ETH_HLEN;
    if l3 + IPV4_MIN_HLEN > end {
        return None;
    }
    // SAFETY: all-zero is a valid `bpf_fib_lookup` (plain integers).
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.ifindex = owner;
    p.__bindgen_anon_5.tbid = table;
    if v4 {
        p.family = AF_INET as u8;
        // SAFETY: the 20-byte header is in bounds (checked above).
        unsafe {
            p.__bindgen_anon_3.ipv4_src = packet_u32(l3 + 12) as u32;
            p.__bindgen_anon_4.ipv4_dst = packet_u32(l3 + 16) as u32;
        }
    } else {
        if l3 + IPV6_HLEN > end {
            return None;
        }
        p.family = AF_INET6 as u8;
        // SAFETY: the 40-byte header is in bounds (checked above); two u64 and four u32 are the
        // same 16 bytes.
        unsafe {
            let src = [packet_u64(l3 + 8), packet_u64(l3 + 16)];
            let dst = [packet_u64(l3 + 24), packet_u64(l3 + 32)];
            p.__bindgen_anon_3.ipv6_src = core::mem::transmute::<[u64; 2], [u32; 4]>(src);
            p.__bindgen_anon_4.ipv6_dst = core::mem::transmute::<[u64; 2], [u32; 4]>(dst);
        }
    }
    // OUTPUT: the lookup is for a packet leaving by `owner` (its routes only); tot_len 0 skips
    // the MTU check, done already. Success means a unicast route and a resolved neighbour.
    let flags = BPF_FIB_LOOKUP_DIRECT | BPF_FIB_LOOKUP_OUTPUT | BPF_FIB_LOOKUP_TBID;
    let size = core::mem::size_of::<bpf_fib_lookup>() as i32;
    // SAFETY: our context and a stack value of the helper's parameter type, its size given.
    let rc = unsafe { fib_lookup(ctx.as_ptr(), &mut p, size, flags) };
    if rc != 0 || p.ifindex != owner {
        return None;
    }
    // On success the destination field holds the next hop (the gateway, or the destination
    // itself), in the family `family` says (an IPv4 route may have an IPv6 gateway), and the MACs
    // are the owner's and the next hop's.
    // SAFETY: on success the kernel wrote the union's MAC half (its other half, the input mark,
    // is unused: no BPF_FIB_LOOKUP_MARK).
    let out = unsafe { p.__bindgen_anon_6.__bindgen_anon_2 };
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&out.dmac);
    macs[6..].copy_from_slice(&out.smac);
    Some(Hop {
        macs,
        nh: bpf_redir_neigh {
            nh_family: u32::from(p.family),
            // SAFETY: the union's 16 bytes, zeroed above, then written by us or the kernel.
            __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 {
                ipv6_nh: unsafe { p.__bindgen_anon_4.ipv6_dst },
            },
        },
    })
}

/// Parses the headers with direct packet access (every read bounds-checked against data_end).
#[inline(always)]
fn classify(ctx: &TcContext, ifindex: u32) -> Verdict {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + ETH_HLEN > end {
        return Verdict::Malformed;
    }
    // SAFETY: bounds checked just above.
    let eth = unsafe { &*(data as *const [u8; ETH_HLEN]) };
    let ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    match ethertype {
        ETH_P_8021Q | ETH_P_8021AD => return Verdict::Skipped,
        ETH_P_IP | ETH_P_IPV6 => {}
        _ => return Verdict::NonIp,
    }
    // Multicast and broadcast destinations (I/G bit): bpf_redirect_neigh would drop them.
    if eth[0] & 1 != 0 {
        return Verdict::Skipped;
    }
    let l3 = data + ETH_HLEN;
    if ethertype == ETH_P_IP {
        if l3 + IPV4_MIN_HLEN > end {
            return Verdict::Malformed;
        }
        // SAFETY: bounds checked just above.
        let ip = unsafe { &*(l3 as *const [u8; IPV4_MIN_HLEN]) };
        let ihl = (ip[0] & 0x0f) as usize * 4;
        if ip[0] >> 4 != 4 || ihl < IPV4_MIN_HLEN || l3 + ihl > end {
            return Verdict::Malformed;
        }
        // The source as a word read straight from the packet: copying it to the stack byte by
        // byte and reading it back as a word stalls store-to-load forwarding (a few ns).
        // SAFETY: the 20-byte header is in bounds (checked above).
        let src = (unsafe { packet_u32(l3 + 12) }, 0);
        if local(&LOCAL_V4, ifindex, src) {
            return Verdict::OwnedHere;
        }
        return lookup::<4, { enipin_ebpf::BUCKET_V4 }, _>(
            &TABLE_V4,
            &OWNERS_V4,
            &PREFIXES_V4,
            PREFIXES_V4_PRESENT,
            src,
        );
    }
    if l3 + IPV6_HLEN > end {
        return Verdict::Malformed;
    }
    // SAFETY: bounds checked just above.
    let ip = unsafe { &*(l3 as *const [u8; IPV6_HLEN]) };
    if ip[0] >> 4 != 6 {
        return Verdict::Malformed;
    }
    // SAFETY: the 40-byte header is in bounds (checked above).
    let src = unsafe { (packet_u64(l3 + 8), packet_u64(l3 + 16)) };
    let head = src.0.to_ne_bytes();
    // Link-local (fe80::/10) and unspecified (DAD) sources belong to no ENI's routing.
    if (head[0] == 0xfe && head[1] & 0xc0 == 0x80) || src == (0, 0) {
        return Verdict::Skipped;
    }
    if ip[6] == IPPROTO_ICMPV6 {
        let l4 = l3 + IPV6_HLEN;
        if l4 + 1 > end {
            return Verdict::Malformed;
        }
        // SAFETY: bounds checked just above.
        let icmp_type = unsafe { *(l4 as *const u8) };
        // Router/neighbour solicitation/advertisement and redirect: interface-local by design.
        if (133..=137).contains(&icmp_type) {
            return Verdict::Skipped;
        }
    }
    if local(&LOCAL_V6, ifindex, src) {
        return Verdict::OwnedHere;
    }
    lookup::<16, { enipin_ebpf::BUCKET_V6 }, _>(
        &TABLE_V6,
        &OWNERS_V6,
        &PREFIXES_V6,
        PREFIXES_V6_PRESENT,
        src,
    )
}

/// Reads 8 bytes of packet at `p` in native byte order, as `enipin_ebpf::words` does, in one load whatever
/// the alignment. The verifier allows misaligned packet reads (it enforces alignment only with
/// BPF_F_STRICT_ALIGNMENT or on architectures without efficient unaligned access, where the load
/// would fail loudly), and the JIT emits one instruction; `read_unaligned` would be eight byte
/// loads, shifts and ors, since LLVM must assume the target traps on misaligned access.
///
/// # Safety
/// `p..p + 8` is inside the packet (checked against data_end).
#[inline(always)]
unsafe fn packet_u64(p: usize) -> u64 {
    let v: u64;
    // SAFETY: the caller checked the bounds; a plain load, no other effect.
    unsafe {
        core::arch::asm!("{v} = *(u64 *)({p} + 0)", p = in(reg) p, v = out(reg) v,
            options(readonly, nostack, preserves_flags));
    }
    v
}

/// The same for 4 bytes (zero-extended).
///
/// # Safety
/// `p..p + 4` is inside the packet.
#[inline(always)]
unsafe fn packet_u32(p: usize) -> u64 {
    let v: u64;
    // SAFETY: as for `packet_u64`.
    unsafe {
        core::arch::asm!("{v} = *(u32 *)({p} + 0)", p = in(reg) p, v = out(reg) v,
            options(readonly, nostack, preserves_flags));
    }
    v
}

/// Whether `src` is one of the first addresses of this interface (the fast path): an inlined
/// array lookup and at most K compares, unrolled.
#[inline(always)]
fn local<const N: usize, const K: usize>(
    map: &Array<Local<N, K>>,
    ifindex: u32,
    src: (u64, u64),
) -> bool {
    let Some(local) = (ifindex < FAST_SLOTS).then(|| map.get(ifindex)).flatten() else {
        return false;
    };
    let n = local.n as usize;
    let mut i = 0;
    while i < K {
        // An unused IPv6 slot is all zero, which no source reaching here is (`classify` skipped
        // the unspecified address), so IPv6 compares every slot without counting; an IPv4 source
        // may be 0.0.0.0 (DHCP), which must not match an unused slot.
        if (N == 16 || i < n) && is(&local.addrs[i], src) {
            return true;
        }
        i += 1;
    }
    false
}

/// Source -> owner: the owner table (its bucket, then the owner map if the bucket spilled), then
/// the delegated prefixes (longest match). Before user space has filled the table (or if it is
/// missing) the owner map answers alone.
#[inline(always)]
fn lookup<const N: usize, const K: usize, W>(
    table: &Table<W>,
    exact: &HashMap<[u8; N], Owner>,
    prefixes: &LpmTrie<[u8; N], Owner>,
    present: u32,
    w: (u64, u64),
) -> Verdict {
    let () = const { assert!(core::mem::size_of::<W>() == core::mem::size_of::<Bucket<N, K>>()) };
    let spill = match table.get_value(0, &bucket_index(w)) {
        Some(words) => {
            // SAFETY: the same size (asserted above) and alignment (8: words of u64, asserted in
            // lib.rs), and every byte pattern is a valid `Bucket` (plain integers).
            let bucket = unsafe { &*(words as *const W as *const Bucket<N, K>) };
            let mut i = 0;
            while i < K {
                if N == 16 {
                    // As in `local`: an unused slot (zero address, owner 0) never matches, so
                    // the owner is read only for the slot that does.
                    if is(&bucket.addrs[i], w) {
                        return Verdict::Owned(bucket.ifindex[i]);
                    }
                } else {
                    let owner = bucket.ifindex[i];
                    if owner == 0 {
                        break;
                    }
                    if is(&bucket.addrs[i], w) {
                        return Verdict::Owned(owner);
                    }
                }
                i += 1;
            }
            bucket.spill != 0
        }
        None => true,
    };
    let src = bytes::<N>(w);
    if spill {
        // SAFETY: values are plain data written whole by user space.
        if let Some(owner) = unsafe { exact.get(&src) } {
            return Verdict::Owned(owner.ifindex);
        }
    }
    if CONFIG.get(0).is_none_or(|c| c.prefixes & present == 0) {
        return Verdict::NotOwned;
    }
    match prefixes.get(&Key::new(N as u32 * 8, src)) {
        Some(owner) => Verdict::Owned(owner.ifindex),
        None => Verdict::NotOwned,
    }
}

/// Whether the address in a `Local` or `Bucket` slot is `w` (as `enipin_ebpf::words`), with
/// aligned loads, the interface identifier first: an interface's IPv6 addresses usually share
/// their first word (the /64), so comparing that first would rarely decide anything. The loads
/// are volatile so that the compiler keeps them in this order and the second behind the first
/// compare: with plain reads it loaded both words up front and compared the prefix first (two
/// loads, a reload of the source from the stack and two branches for each slot that fails,
/// instead of one load and one branch). `words` reads with `read_unaligned`, which behind a
/// map-in-map value pointer LLVM splits into 4-byte loads, a shift and an or.
#[inline(always)]
fn is<const N: usize>(a: &[u8; N], w: (u64, u64)) -> bool {
    let () = AddrLen::<N>::OK;
    let p = a.as_ptr();
    // SAFETY: N is 4 or 16 (checked above); `Local` and `Bucket` are `align(8)` with their
    // addresses from offset 8 (asserted in lib.rs), so an IPv4 slot is 4-aligned and an IPv6 slot
    // 8-aligned. A volatile read of map memory is a plain load.
    unsafe {
        if N == 4 {
            u64::from(core::ptr::read(p as *const u32)) == w.0
        } else {
            let p = p as *const u64;
            core::ptr::read_volatile(p.add(1)) == w.1 && core::ptr::read_volatile(p) == w.0
        }
    }
}

/// The address that `enipin_ebpf::words` read, as the owner maps' key.
#[inline(always)]
fn bytes<const N: usize>((a, b): (u64, u64)) -> [u8; N] {
    let () = AddrLen::<N>::OK;
    let mut out = [0u8; N];
    if N == 4 {
        out[..4].copy_from_slice(&(a as u32).to_ne_bytes());
    } else {
        out[..8].copy_from_slice(&a.to_ne_bytes());
        out[8..16].copy_from_slice(&b.to_ne_bytes());
    }
    out
}

/// This interface's counters: its slot of the per-CPU array (an inlined lookup) for ifindex <
/// FAST_SLOTS, else its hash entry, else the "unknown interface" slot 0, else none (not counted).
#[inline(always)]
fn counters(ifindex: u32) -> Option<*mut Counters> {
    if ifindex < FAST_SLOTS {
        return COUNTERS_FAST.get_ptr_mut(ifindex);
    }
    COUNTERS
        .get_ptr_mut(&ifindex)
        .or_else(|| COUNTERS.get_ptr_mut(&0))
}

#[inline(always)]
fn bump(counters: Option<*mut Counters>, f: impl FnOnce(&mut Counters)) {
    if let Some(c) = counters {
        // SAFETY: a per-CPU value: nobody else writes it while this program runs on this CPU.
        f(unsafe { &mut *c });
    }
}

/// A classifier that passes everything: what tests attach next to enipin (another agent's
/// program on the same hook), and pin in place of `enipin_egress` to stand for an older build.
/// Never attached by enipin itself.
#[classifier]
fn enipin_noop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
