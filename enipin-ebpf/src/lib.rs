//! The types shared by the eBPF program and user space: one definition, `#[repr(C)]`, so both
//! sides agree on every byte. Map names are here too, so neither side spells them on its own.
#![no_std]

/// Names of the maps in the object (and of their pins under the pin directory).
pub mod maps {
    /// `HashMap<[u8; 4], Owner>`: exact IPv4 addresses (network byte order) to their owner.
    pub const OWNERS_V4: &str = "ENIPIN_OWN4";
    /// `HashMap<[u8; 16], Owner>`: exact IPv6 addresses to their owner.
    pub const OWNERS_V6: &str = "ENIPIN_OWN6";
    /// `LpmTrie<[u8; 4], Owner>`: IPv4 prefixes delegated to an ENI (e.g. a /28).
    pub const PREFIXES_V4: &str = "ENIPIN_PFX4";
    /// `LpmTrie<[u8; 16], Owner>`: IPv6 prefixes delegated to an ENI (e.g. a /80).
    pub const PREFIXES_V6: &str = "ENIPIN_PFX6";
    /// `PerCpuHashMap<u32 ifindex, Counters>`; key 0 collects packets on unknown interfaces.
    pub const COUNTERS: &str = "ENIPIN_CNT";
    /// `PerCpuArray<Counters>` of `FAST_SLOTS` entries indexed by ifindex: where the program
    /// counts for interfaces with ifindex < `FAST_SLOTS` (the kernel inlines an array lookup; a
    /// hash lookup costs about 10 ns a packet). `COUNTERS` still lists the managed interfaces and
    /// counts for larger ifindexes; user space adds both.
    pub const COUNTERS_FAST: &str = "ENIPIN_CNTF";
    /// `Array<LocalV4>` of `FAST_SLOTS` entries indexed by ifindex: the first `LOCAL_V4`
    /// addresses each interface owns, derived from `OWNERS_V4` by user space. The common case,
    /// a packet leaving by the interface that owns its source, is then an inlined array lookup
    /// and a few compares instead of a hash lookup; anything else falls through to the maps.
    pub const LOCAL_V4: &str = "ENIPIN_LOC4";
    /// `Array<LocalV6>`, the same for IPv6.
    pub const LOCAL_V6: &str = "ENIPIN_LOC6";
    /// `ArrayOfMaps` of one slot holding an `Array<Bucket<4, BUCKET_V4>>` of `TABLE_BUCKETS` entries: the
    /// owner maps rearranged as a hash table the program probes with two inlined array lookups
    /// and a few compares instead of a hash-map lookup (about 12 ns, most of the redirect
    /// decision's cost). User space derives it from `OWNERS_V4` and never edits it in place: it
    /// fills a new inner array and swaps it in, so the program sees the old table or the new one,
    /// never a torn bucket that could pair an address with the wrong owner.
    pub const TABLE_V4: &str = "ENIPIN_TAB4";
    /// The same for IPv6, derived from `OWNERS_V6`.
    pub const TABLE_V6: &str = "ENIPIN_TAB6";
    /// `Array<Config>` with one element.
    pub const CONFIG: &str = "ENIPIN_CFG";
    /// `Array<NextHop>` of `FAST_SLOTS` entries indexed by the owner's ifindex: the table that
    /// routes a packet redirected onto that owner, so the program finds its next hop with one
    /// table lookup instead of `bpf_redirect_neigh`'s full route lookup (the FIB part of the
    /// redirect's second pass, about 6 % of a redirected frame with perf on the lab), and, the
    /// neighbour resolved, writes the MACs itself and skips the neighbour output too. Without
    /// enipin's rules (`--no-rules`) the slot holds the owner's gateways and on-link networks
    /// instead (`NextHop::gateway_v4`). An empty slot (all zero) means the full lookup.
    pub const NEXT_HOPS: &str = "ENIPIN_NH";
}

/// The classifier's function name in the object.
pub const PROGRAM: &str = "enipin_egress";
/// The program's read-only global that says whether the kernel has `bpf_check_mtu` (5.12+), set
/// by user space at load time from a probe: without it the program checks the owner's MTU itself.
pub const HAVE_CHECK_MTU: &str = "ENIPIN_HAVE_CHECK_MTU";
/// A pass-everything classifier in the same object, for tests (never attached by enipin).
pub const NOOP_PROGRAM: &str = "enipin_noop";

/// Capacity of the owner maps: 15 ENIs x 50 addresses is 750 on the largest EC2 instance; leave
/// room for prefixes and IPv6.
pub const MAX_OWNERS: u32 = 4096;
/// Interfaces with an ifindex below this count in `maps::COUNTERS_FAST`.
pub const FAST_SLOTS: u32 = 256;
/// Capacity of the counter map: one entry per managed interface plus the "unknown" slot 0.
pub const MAX_INTERFACES: u32 = 256;

/// How many of an interface's own IPv4 addresses the fast path holds.
pub const LOCAL_V4: usize = 8;
/// How many of an interface's own IPv6 addresses the fast path holds.
pub const LOCAL_V6: usize = 4;

/// Buckets in an owner table (`maps::TABLE_V4`/`TABLE_V6`); a power of two.
pub const TABLE_BUCKETS: u32 = 1024;
const _: () = assert!(TABLE_BUCKETS.is_power_of_two());
/// IPv4 addresses per bucket: a bucket that would hold more sets `spill`.
pub const BUCKET_V4: usize = 8;
/// IPv6 addresses per bucket: a bucket that would hold more sets `spill`.
pub const BUCKET_V6: usize = 4;

/// Address lengths the shared address functions take: 4 (IPv4) or 16 (IPv6). A function generic
/// over `N` starts with `let () = AddrLen::<N>::OK;`, so any other `N` fails to compile (the
/// constant is evaluated when the function is instantiated) instead of reading past the address
/// or silently treating it as IPv6.
pub struct AddrLen<const N: usize>;

impl<const N: usize> AddrLen<N> {
    /// Evaluating it fails to compile unless `N` is 4 or 16.
    pub const OK: () = assert!(
        N == 4 || N == 16,
        "an address is 4 (IPv4) or 16 (IPv6) bytes"
    );
}

/// One bucket of an owner table: up to `K` addresses (`N` bytes each, network byte order) whose
/// hash ([`bucket_index`]) is this bucket's index, and their owners. Slots are filled from the
/// front; `ifindex[i] == 0` ends the list.
///
/// Addresses start at offset 8 of an 8-aligned value, so the program compares them as aligned
/// words (an IPv6 address in two loads, not four); `_pad` makes that explicit (no hidden padding).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket<const N: usize, const K: usize> {
    /// Non-zero: more addresses hash here than fit; the rest are only in the owner hash map,
    /// which the program then consults on a miss.
    pub spill: u32,
    /// Always 0: puts `addrs` at offset 8.
    pub _pad: u32,
    /// The addresses, network byte order; those after the first `ifindex` of 0 are unused.
    pub addrs: [[u8; N]; K],
    /// The owner of `addrs[i]`; 0 ends the list.
    pub ifindex: [u32; K],
}

impl<const N: usize, const K: usize> Default for Bucket<N, K> {
    fn default() -> Self {
        Self {
            spill: 0,
            _pad: 0,
            addrs: [[0; N]; K],
            ifindex: [0; K],
        }
    }
}

/// A bucket as the owner tables' BTF declares it: [`BucketV4`]'s bytes as plain words, not a
/// struct. Kernels 5.15 to 6.1 swap an inner map in only if its BTF agrees with the template's
/// (`bpf_map_meta_equal` compares `timer_off`: -ENOENT for a struct value without a timer,
/// -EINVAL for any other value type or no BTF), and the tables user space creates have no BTF:
/// with a struct value type, every swap failed there with EINVAL (6.1.192 in QEMU). 6.2 dropped
/// the check; 5.10 never had it. The program reads a bucket through a cast.
pub type BucketWordsV4 = [u64; core::mem::size_of::<BucketV4>() / 8];
/// [`BucketV6`] as plain words, as [`BucketWordsV4`].
pub type BucketWordsV6 = [u64; core::mem::size_of::<BucketV6>() / 8];
const _: () = {
    use core::mem::{align_of, size_of};
    assert!(size_of::<BucketWordsV4>() == size_of::<BucketV4>());
    assert!(size_of::<BucketWordsV6>() == size_of::<BucketV6>());
    assert!(align_of::<BucketV4>() == 8 && align_of::<BucketWordsV4>() == 8);
};

/// A bucket of `maps::TABLE_V4`'s tables.
pub type BucketV4 = Bucket<4, BUCKET_V4>;
/// A bucket of `maps::TABLE_V6`'s tables.
pub type BucketV6 = Bucket<16, BUCKET_V6>;

/// An address as two native-endian words (the second 0 for IPv4): how the program compares
/// addresses without a call to memcmp, and the input of [`bucket_index`].
#[inline(always)]
pub fn words<const N: usize>(a: &[u8; N]) -> (u64, u64) {
    let () = AddrLen::<N>::OK;
    let p = a.as_ptr();
    // SAFETY: N readable bytes (4 or 16, checked above); unaligned reads within them.
    unsafe {
        if N == 4 {
            (u64::from(core::ptr::read_unaligned(p as *const u32)), 0)
        } else {
            let p = p as *const u64;
            (
                core::ptr::read_unaligned(p),
                core::ptr::read_unaligned(p.add(1)),
            )
        }
    }
}

/// The owner-table bucket of an address (given as [`words`]): Fibonacci hashing of the two
/// words folded into one, the top bits of a 64-bit product. A byte swap and one multiply in the
/// program; user space calls the same function to fill the table, so the two cannot disagree.
#[inline(always)]
pub fn bucket_index((a, b): (u64, u64)) -> u32 {
    // A product bit depends only on the bits below it, so the top bits see little of the input's
    // top byte, where the words keep an address's last bytes (native order: little-endian). For
    // IPv6 those are the subnet's (a) and the interface identifier's low bytes (b): XORed as they
    // are, sequential identifiers filled 256 of the 1024 buckets, and 15 /64s of 50 sequential
    // addresses each 64 of them, 513 of the 750 addresses spilled. Byte-swapped, the
    // identifier's last bytes come first, where every top bit sees them, and no longer cancel
    // against the subnet's (none spill). IPv4 (`b` 0) hashes as it did.
    ((a ^ b.swap_bytes()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        >> (64 - TABLE_BUCKETS.trailing_zeros())) as u32
}

/// An interface's own addresses of one family (`N` bytes each, network byte order): the first
/// `n` of `addrs` are valid. Laid out like [`Bucket`]: addresses 8-aligned.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Local<const N: usize, const K: usize> {
    /// How many of `addrs` are valid.
    pub n: u32,
    /// Always 0: puts `addrs` at offset 8.
    pub _pad: u32,
    /// The addresses, network byte order.
    pub addrs: [[u8; N]; K],
}

impl<const N: usize, const K: usize> Default for Local<N, K> {
    fn default() -> Self {
        Self {
            n: 0,
            _pad: 0,
            addrs: [[0; N]; K],
        }
    }
}

/// An interface's IPv4 addresses in the fast-path array.
pub type LocalV4 = Local<4, LOCAL_V4>;
/// An interface's IPv6 addresses in the fast-path array.
pub type LocalV6 = Local<16, LOCAL_V6>;

// The program reads the addresses as aligned words (IPv6: 8 bytes) from offset 8.
const _: () = {
    use core::mem::{align_of, offset_of};
    assert!(align_of::<BucketV6>() == 8 && align_of::<LocalV6>() == 8);
    assert!(offset_of!(BucketV4, addrs) == 8 && offset_of!(BucketV6, addrs) == 8);
    assert!(offset_of!(LocalV4, addrs) == 8 && offset_of!(LocalV6, addrs) == 8);
};

/// The interface that owns an address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    /// Owner's ifindex: misrouted packets are redirected there.
    pub ifindex: u32,
    /// Owner's MTU (L3) as of the last reconcile. A redirect skips the stack's MTU check, so the
    /// program checks the owner's live MTU with `bpf_check_mtu`, or, on a kernel without the
    /// helper (< 5.12), the packet's length against this.
    pub mtu: u32,
}

/// Where a packet redirected onto its owner learns its next hop, one of two ways:
///
/// - With enipin's rules: the owner's routing table (`T_i` of the rules layer), which the program
///   looks the destination up in directly (`bpf_fib_lookup` in that one table, no policy rules,
///   no route cache entry) instead of the kernel's full output route lookup in
///   `bpf_redirect_neigh`. Per family: `bpf_fib_lookup` refuses a family the owner does not
///   forward (`BPF_FIB_LKUP_RET_FWD_DISABLED`), so a redirect of that family takes the full
///   lookup at once instead of trying first (about 100 ns of test-run time per redirect).
/// - Without them (`--no-rules`): the owner's gateways and on-link networks. The full lookup
///   (`bpf_redirect_neigh` without a next hop, oif = owner) finds no route of the owner's to a
///   destination off its subnets when the owner has no default route of its own (an ENI in a
///   subnet of its own, configured statically): IPv4 then takes the destination as on-link and
///   ARPs for it on the owner, IPv6 takes the other ENI's route and solicits the destination on
///   the owner; a VPC answers neither. The program hands such a packet's owner gateway to
///   `bpf_redirect_neigh` as its next hop (5.10+), and a destination on an on-link network to the
///   full lookup, which finds the owner's subnet route.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// The owner's table; 0: no table lookup.
    pub table: u32,
    /// `NEXT_HOP_V4` | `NEXT_HOP_V6`: the families the owner forwards, for which the program
    /// looks the next hop up in `table`; another family takes the full lookup.
    pub families: u32,
    /// The owner's IPv4 gateway as a native-endian word of its network-order bytes (as
    /// [`words`] reads it); 0: none (the full lookup).
    pub gateway_v4: u32,
    /// How many entries of `on_link_v4` are in use.
    pub on_link_v4_len: u32,
    /// The owner's IPv4 networks, `[network, mask]` as words like `gateway_v4`: a destination
    /// `d` with `d & mask == network` is on-link.
    pub on_link_v4: [[u32; 2]; ON_LINK],
    /// The owner's IPv6 gateway as two words (as [`words`] reads it); zero: none.
    pub gateway_v6: [u64; 2],
    /// How many entries of `on_link_v6` are in use.
    pub on_link_v6_len: u32,
    /// Zero: `on_link_v6` starts 8-aligned with no implicit padding.
    pub _pad: u32,
    /// The owner's IPv6 networks, `[network, mask]`, each two words.
    pub on_link_v6: [[[u64; 2]; 2]; ON_LINK],
}

/// On-link networks per family in a `NextHop`: an ENI is in one subnet (one IPv4 network, one
/// IPv6 /64); an owner with more than this is refused for `--no-rules`.
pub const ON_LINK: usize = 4;

/// `NextHop::families` bit: IPv4 redirects look their next hop up in the owner's table.
pub const NEXT_HOP_V4: u32 = 1;
/// `NextHop::families` bit: IPv6 redirects look their next hop up in the owner's table.
pub const NEXT_HOP_V6: u32 = 2;

/// `Config::mode`: redirect misrouted packets onto their owner.
pub const MODE_ENFORCE: u32 = 0;
/// `Config::mode`: only count misrouted packets.
pub const MODE_MONITOR: u32 = 1;

/// The program's settings, written by user space into `maps::CONFIG` (one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `MODE_ENFORCE` redirects misrouted packets; `MODE_MONITOR` only counts them.
    pub mode: u32,
    /// Non-zero: log rare events (redirect failures, MTU) through aya-log. Never per packet.
    pub debug: u32,
    /// `PREFIXES_V4_PRESENT` | `PREFIXES_V6_PRESENT`: which prefix maps have entries. A source
    /// no address owns skips the (not inlined) prefix lookup when its family has none.
    pub prefixes: u32,
}

/// `Config::prefixes` bit: `maps::PREFIXES_V4` has entries.
pub const PREFIXES_V4_PRESENT: u32 = 1;
/// `Config::prefixes` bit: `maps::PREFIXES_V6` has entries.
pub const PREFIXES_V6_PRESENT: u32 = 2;

/// One counter's name and help text, for printing: the name is the field's, the key in `enipin
/// stats --json`, and the Prometheus metric `enipin_<name>_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter {
    /// The field's name (`redirected`, ...).
    pub name: &'static str,
    /// One sentence for `enipin stats` and the metric's HELP line.
    pub help: &'static str,
}

/// Defines [`Counters`] from one list of `doc, name: "help"`: the `#[repr(C)]` struct the program
/// bumps field by field, and everything user space does with it (names, help, values, sums,
/// differences), so a counter is added or renamed in one place.
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident: $help:literal,)*) => {
        /// Per-interface, per-CPU counters. User space sums them over CPUs.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl Counters {
            /// Every counter, in declaration order (the order of [`Counters::values`]).
            pub const LIST: &'static [Counter] = &[$(Counter {
                name: stringify!($name),
                help: $help,
            }),*];
            /// How many counters there are.
            pub const LEN: usize = Self::LIST.len();
            /// All zero, for building expected values in `const` items.
            pub const ZERO: Counters = Counters { $($name: 0),* };

            /// The values, in [`Counters::LIST`] order.
            pub fn values(&self) -> [u64; Self::LEN] {
                [$(self.$name),*]
            }

            /// Each counter with its value, in declaration order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static Counter, u64)> {
                Self::LIST.iter().zip(self.values())
            }

            /// The value of the counter called `name`, `None` if there is none.
            pub fn get(&self, name: &str) -> Option<u64> {
                self.iter().find(|(c, _)| c.name == name).map(|(_, v)| v)
            }

            /// Adds `other` counter by counter (to sum over CPUs or maps).
            pub fn add(&mut self, other: &Counters) {
                $(self.$name += other.$name;)*
            }

            /// What moved since `before`, counter by counter. Counters only grow while their
            /// slot exists; a counter that went down (its slot was reset in between) overflows.
            pub fn since(&self, before: &Counters) -> Counters {
                Counters { $($name: self.$name - before.$name),* }
            }
        }
    };
}

counters! {
    /// Source owned by another managed interface (redirected in enforce mode, counted in monitor).
    misrouted_packets: "Packets leaving by this interface whose source another managed interface owns (redirected to that owner)",
    /// The bytes of the `misrouted_packets` (their length at the hook, L2 header included).
    misrouted_bytes: "Bytes of packets whose source belongs to another managed interface",
    /// `bpf_redirect_neigh` refused; the packet passed unchanged.
    redirect_failed: "Misrouted packets the redirect failed for (passed unchanged)",
    /// Misrouted, but larger than the owner's MTU: passed unchanged (fail open).
    mtu_exceeded: "Misrouted packets larger than the owner's MTU (passed unchanged)",
    /// Source owned by this interface: the normal case.
    owned_here: "Packets whose source belongs to the interface they leave by",
    /// IP source that no managed interface owns (containers, forwarded traffic, ...).
    not_owned: "IP packets whose source no managed interface owns",
    /// ARP and every other non-IP ethertype.
    non_ip: "ARP and other non-IP packets",
    /// IP, but never redirected: VLAN-tagged, multicast/broadcast destination, IPv6 link-local or
    /// unspecified source, neighbour discovery.
    skipped: "IP packets never redirected (VLAN, multicast, link-local, neighbour discovery)",
    /// Too short to parse (truncated headers): passed unchanged.
    malformed: "Packets too short to parse (passed unchanged)",
}

/// For each type shared through a map: its size, asserted (the fields add up to it, so there is
/// no hidden padding and user space may write the value as plain bytes), and with the `user`
/// feature its `aya::Pod` impl. Only these concrete instantiations are `Pod`: a `Bucket` or
/// `Local` of other parameters can pad (`Bucket<16, 3>` is 68 bytes of fields in 72), and none is
/// in a map.
macro_rules! shared {
    ($($t:ty => $size:expr,)*) => {
        $(
            const _: () = assert!(core::mem::size_of::<$t>() == $size);
            // SAFETY: a `#[repr(C)]` struct of integers (arrays of them), with no padding (the
            // size assertion above), so every byte pattern is a valid value.
            #[cfg(feature = "user")]
            unsafe impl aya::Pod for $t {}
        )*
    };
}

shared! {
    Owner => 4 + 4,
    Config => 3 * 4,
    Counters => 8 * Counters::LEN,
    BucketV4 => 8 + (4 + 4) * BUCKET_V4,
    BucketV6 => 8 + (16 + 4) * BUCKET_V6,
    LocalV4 => 8 + 4 * LOCAL_V4,
    LocalV6 => 8 + 16 * LOCAL_V6,
    NextHop => 4 * 4 + 8 * ON_LINK + 16 + 2 * 4 + 32 * ON_LINK,
}

/// The pinned maps' names and layouts, in one table: user space checks what is pinned against it
/// (a map pinned by another enipin version with another layout is replaced on attach), and a test
/// checks the built object against it. Sizes come from the shared `#[repr(C)]` types above.
pub mod layout {
    use super::{
        BUCKET_V4, BUCKET_V6, Bucket, Config, Counters, FAST_SLOTS, LocalV4, LocalV6,
        MAX_INTERFACES, MAX_OWNERS, NextHop, Owner, TABLE_BUCKETS, maps,
    };
    use core::mem::size_of;

    /// A map type, by its kernel number (`enum bpf_map_type`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[repr(u32)]
    pub enum Kind {
        /// `BPF_MAP_TYPE_HASH`.
        Hash = 1,
        /// `BPF_MAP_TYPE_ARRAY`.
        Array = 2,
        /// `BPF_MAP_TYPE_PERCPU_HASH`.
        PerCpuHash = 5,
        /// `BPF_MAP_TYPE_PERCPU_ARRAY`.
        PerCpuArray = 6,
        /// `BPF_MAP_TYPE_LPM_TRIE`.
        LpmTrie = 11,
        /// `BPF_MAP_TYPE_ARRAY_OF_MAPS`.
        ArrayOfMaps = 12,
    }

    /// One pinned map as the program declares it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Layout {
        /// The map's name in the object and its pin's file name.
        pub name: &'static str,
        /// The map's type.
        pub kind: Kind,
        /// Bytes.
        pub key_size: u32,
        /// Bytes.
        pub value_size: u32,
        /// Capacity.
        pub max_entries: u32,
        /// A map of maps' inner array: (value size in bytes, entries).
        pub inner: Option<(u32, u32)>,
    }

    const fn size<T>() -> u32 {
        size_of::<T>() as u32
    }

    /// An LPM trie key: the prefix length (u32), then `n` address bytes.
    const fn lpm(n: u32) -> u32 {
        size::<u32>() + n
    }

    const fn map(name: &'static str, kind: Kind, key: u32, value: u32, max: u32) -> Layout {
        Layout {
            name,
            kind,
            key_size: key,
            value_size: value,
            max_entries: max,
            inner: None,
        }
    }

    /// An owner table: one slot (a 4-byte map id) holding an array of `TABLE_BUCKETS` buckets.
    const fn table(name: &'static str, bucket: u32) -> Layout {
        Layout {
            inner: Some((bucket, TABLE_BUCKETS)),
            ..map(name, Kind::ArrayOfMaps, 4, 4, 1)
        }
    }

    /// Every map of the object, pinned by name under the pin directory.
    pub const MAPS: [Layout; 12] = [
        map(maps::OWNERS_V4, Kind::Hash, 4, size::<Owner>(), MAX_OWNERS),
        map(maps::OWNERS_V6, Kind::Hash, 16, size::<Owner>(), MAX_OWNERS),
        map(
            maps::PREFIXES_V4,
            Kind::LpmTrie,
            lpm(4),
            size::<Owner>(),
            MAX_OWNERS,
        ),
        map(
            maps::PREFIXES_V6,
            Kind::LpmTrie,
            lpm(16),
            size::<Owner>(),
            MAX_OWNERS,
        ),
        map(
            maps::COUNTERS,
            Kind::PerCpuHash,
            4,
            size::<Counters>(),
            MAX_INTERFACES,
        ),
        map(
            maps::COUNTERS_FAST,
            Kind::PerCpuArray,
            4,
            size::<Counters>(),
            FAST_SLOTS,
        ),
        map(
            maps::LOCAL_V4,
            Kind::Array,
            4,
            size::<LocalV4>(),
            FAST_SLOTS,
        ),
        map(
            maps::LOCAL_V6,
            Kind::Array,
            4,
            size::<LocalV6>(),
            FAST_SLOTS,
        ),
        table(maps::TABLE_V4, size::<Bucket<4, BUCKET_V4>>()),
        table(maps::TABLE_V6, size::<Bucket<16, BUCKET_V6>>()),
        map(maps::CONFIG, Kind::Array, 4, size::<Config>(), 1),
        map(
            maps::NEXT_HOPS,
            Kind::Array,
            4,
            size::<NextHop>(),
            FAST_SLOTS,
        ),
    ];
}
