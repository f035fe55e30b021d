//! The maps the program reads instead of the owner maps, derived from them by user space: the
//! fast-path arrays and the owner tables (and the check that they are in step).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, ArrayOfMaps, HashMap, Map, MapData},
};
use enipin_ebpf::{Bucket, FAST_SLOTS, Local, Owner, TABLE_BUCKETS, bucket_index, maps, words};

use super::pins::Pins;

/// Derives what the program reads instead of the owner maps, from the owner maps as they now are:
/// - the fast-path arrays (each interface's first own addresses, sorted), writing only the slots
///   that change; a torn read of a slot can only make the program pass a packet, never redirect;
/// - the owner tables, rebuilt whole in a new inner array and swapped in when they differ, so a
///   reader never sees a bucket half written (which could pair an address with a wrong owner).
///
/// Public for the tests, which fill the owner maps by hand.
#[cfg(feature = "testing")]
pub fn sync_derived(ebpf: &mut Ebpf) -> Result<()> {
    let owned = sync_local(ebpf)?;
    let (mut t4, mut t6) = (None, None);
    for (name, m) in ebpf.maps_mut() {
        match name {
            maps::TABLE_V4 => t4 = Some(m),
            maps::TABLE_V6 => t6 = Some(m),
            _ => {}
        }
    }
    let missing = |name: &str| anyhow!("map {name} missing from the object");
    let t4 = t4.ok_or_else(|| missing(maps::TABLE_V4))?;
    let t6 = t6.ok_or_else(|| missing(maps::TABLE_V6))?;
    swap_tables(t4, t6, &owned)
}

/// The owner maps' content, read once for everything derived from them.
pub(super) struct Owned {
    v4: BTreeMap<[u8; 4], u32>,
    v6: BTreeMap<[u8; 16], u32>,
}

/// The fast-path arrays of [`sync_derived`]; returns the owner maps' content for the tables.
fn sync_local(ebpf: &mut Ebpf) -> Result<Owned> {
    let v4 = owned::<4>(map(ebpf, maps::OWNERS_V4)?)?;
    let v6 = owned::<16>(map(ebpf, maps::OWNERS_V6)?)?;
    /// Writes the slots that differ from [`local`]`(owned)`.
    fn write_local<const N: usize, const K: usize>(
        ebpf: &mut Ebpf,
        name: &str,
        owned: &BTreeMap<[u8; N], u32>,
    ) -> Result<()>
    where
        Local<N, K>: aya::Pod,
    {
        let mut array: Array<_, Local<N, K>> = Array::try_from(map(ebpf, name)?)?;
        for (slot, want) in (0..).zip(local::<N, K>(owned)) {
            if array.get(&slot, 0)? != want {
                array.set(slot, &want, 0)?;
            }
        }
        Ok(())
    }
    write_local::<4, { enipin_ebpf::LOCAL_V4 }>(ebpf, maps::LOCAL_V4, &v4)?;
    write_local::<16, { enipin_ebpf::LOCAL_V6 }>(ebpf, maps::LOCAL_V6, &v6)?;
    Ok(Owned { v4, v6 })
}

/// [`sync_derived`] in two steps: the fast-path arrays now ([`TableSwap::derive`]), the owner
/// tables' swap when [`TableSwap::run`] says, which may be while links are attached. Each swap
/// returns only after an RCU grace period (8-16 ms here, see [`swap_tables`]), as each TCX
/// attach does: run together, the waits overlap.
pub(super) struct TableSwap {
    t4: Map,
    t6: Map,
    owned: Owned,
}

impl TableSwap {
    /// Writes the fast-path arrays, and takes the owner tables out of `ebpf` for [`Self::run`].
    pub(super) fn derive(ebpf: &mut Ebpf) -> Result<Self> {
        let owned = sync_local(ebpf)?;
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("map {name} missing from the object"))
        };
        Ok(Self {
            t4: take(maps::TABLE_V4)?,
            t6: take(maps::TABLE_V6)?,
            owned,
        })
    }

    /// Swaps in the owner tables derived when this was made.
    pub(super) fn run(mut self) -> Result<()> {
        swap_tables(&mut self.t4, &mut self.t6, &self.owned)
    }
}

/// Both families' owner tables. A map-in-map update returns only after an RCU grace period (about
/// 10 ms here), so that user space knows no program still reads the old table: both families are
/// swapped in parallel.
fn swap_tables(t4: &mut Map, t6: &mut Map, owned: &Owned) -> Result<()> {
    let (v4, v6) = (&owned.v4, &owned.v6);
    std::thread::scope(|s| {
        let h4 = s.spawn(|| write_table::<4, { enipin_ebpf::BUCKET_V4 }>(t4, maps::TABLE_V4, v4));
        let r6 = write_table::<16, { enipin_ebpf::BUCKET_V6 }>(t6, maps::TABLE_V6, v6);
        h4.join()
            .unwrap_or_else(|_| Err(anyhow!("writing {} panicked", maps::TABLE_V4)))
            .and(r6)
    })
}

/// An owner map's content: address -> owner's ifindex.
pub(super) fn owned<const N: usize>(m: &Map) -> Result<BTreeMap<[u8; N], u32>> {
    HashMap::<_, [u8; N], Owner>::try_from(m)?
        .iter()
        .map(|kv| Ok(kv.map(|(addr, owner)| (addr, owner.ifindex))?))
        .collect()
}

/// The fast-path array for `owned`: per ifindex slot, the interface's first `K` addresses in
/// address order.
pub(super) fn local<const N: usize, const K: usize>(
    owned: &BTreeMap<[u8; N], u32>,
) -> Vec<Local<N, K>> {
    let mut slots = vec![Local::<N, K>::default(); FAST_SLOTS as usize];
    for (addr, ifindex) in owned {
        if let Some(l) = slots.get_mut(*ifindex as usize)
            && (l.n as usize) < K
        {
            l.addrs[l.n as usize] = *addr;
            l.n += 1;
        }
    }
    slots
}

/// The derived maps (fast-path arrays, owner tables) that are out of step with the pinned owner
/// maps, which can only happen when an earlier enipin stopped between the two (killed, or the
/// machine lost power); a plan then lists them, and applying it rebuilds them.
pub(super) fn out_of_step(pins: &Pins) -> Result<Vec<&'static str>> {
    fn check<const N: usize, const KL: usize, const KT: usize>(
        pins: &Pins,
        (owners, locals, table_name): (&str, &'static str, &'static str),
        out: &mut Vec<&'static str>,
    ) -> Result<()>
    where
        Local<N, KL>: aya::Pod,
        Bucket<N, KT>: aya::Pod,
    {
        let Some(m) = pins.map(owners)? else {
            return Ok(());
        };
        let owned = owned::<N>(&m)?;
        if let Some(m) = pins.map(locals)? {
            let array: Array<_, Local<N, KL>> = Array::try_from(m)?;
            let have = array.iter().collect::<Result<Vec<_>, _>>()?;
            if have != local::<N, KL>(&owned) {
                out.push(locals);
            }
        }
        let have = read_table::<N, KT>(pins, table_name)?;
        if have.is_some_and(|have| have.buckets != table::<N, KT>(&owned)) {
            out.push(table_name);
        }
        Ok(())
    }
    let mut out = Vec::new();
    check::<4, { enipin_ebpf::LOCAL_V4 }, { enipin_ebpf::BUCKET_V4 }>(
        pins,
        (maps::OWNERS_V4, maps::LOCAL_V4, maps::TABLE_V4),
        &mut out,
    )?;
    check::<16, { enipin_ebpf::LOCAL_V6 }, { enipin_ebpf::BUCKET_V6 }>(
        pins,
        (maps::OWNERS_V6, maps::LOCAL_V6, maps::TABLE_V6),
        &mut out,
    )?;
    Ok(out)
}

/// An owner table as the program sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerTable<const N: usize, const K: usize> {
    /// The inner array's map id: a new one after every change.
    pub map_id: u32,
    /// Every bucket, in index order ([`enipin_ebpf::bucket_index`]).
    pub buckets: Vec<Bucket<N, K>>,
}

/// The owner table `name` (`maps::TABLE_V4` or `TABLE_V6`); `None` when nothing (of this
/// layout) is pinned or no table has been swapped in yet.
pub(super) fn read_table<const N: usize, const K: usize>(
    pins: &Pins,
    name: &str,
) -> Result<Option<OwnerTable<N, K>>>
where
    Bucket<N, K>: aya::Pod,
{
    let Some(map) = pins.map(name)? else {
        return Ok(None);
    };
    let outer: ArrayOfMaps<_, MapData> = ArrayOfMaps::try_from(map)?;
    let inner = match outer.get(&0, 0) {
        Ok(inner) => inner,
        Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {name}")),
    };
    let map_id = inner.info()?.id();
    let array: Array<_, Bucket<N, K>> = Array::try_from(Map::Array(inner))?;
    let buckets = (0..TABLE_BUCKETS)
        .map(|i| array.get(&i, 0))
        .collect::<Result<_, _>>()?;
    Ok(Some(OwnerTable { map_id, buckets }))
}

/// The owner table for `owned`: each address in the bucket [`bucket_index`] names, in address
/// order; a full bucket marks `spill` and leaves the address to the owner map.
pub(super) fn table<const N: usize, const K: usize>(
    owned: &BTreeMap<[u8; N], u32>,
) -> Vec<Bucket<N, K>> {
    let mut buckets = vec![Bucket::<N, K>::default(); TABLE_BUCKETS as usize];
    for (addr, ifindex) in owned {
        let b = &mut buckets[bucket_index(words(addr)) as usize];
        match b.ifindex.iter().position(|i| *i == 0) {
            Some(i) => {
                b.ifindex[i] = *ifindex;
                b.addrs[i] = *addr;
            }
            None => b.spill = 1,
        }
    }
    buckets
}

/// Makes the owner table `name` hold [`table`]`(owned)`: unchanged if it already does, else a new
/// inner array, filled, then swapped into the outer map's one slot (the kernel frees the old one
/// once no program can still be reading it).
pub(super) fn write_table<const N: usize, const K: usize>(
    outer: &mut Map,
    name: &str,
    owned: &BTreeMap<[u8; N], u32>,
) -> Result<()>
where
    Bucket<N, K>: aya::Pod,
{
    let want = table::<N, K>(owned);
    let mut outer: ArrayOfMaps<_, Array<MapData, Bucket<N, K>>> = ArrayOfMaps::try_from(outer)?;
    match outer.get(&0, 0) {
        Ok(current) => {
            let same = (0..TABLE_BUCKETS)
                .map(|i| current.get(&i, 0))
                .zip(&want)
                .all(|(have, want)| have.is_ok_and(|have| have == *want));
            if same {
                return Ok(());
            }
        }
        Err(aya::maps::MapError::KeyNotFound) => {}
        Err(e) => return Err(e).with_context(|| format!("reading {name}")),
    }
    let mut inner = Array::<MapData, Bucket<N, K>>::create(TABLE_BUCKETS, 0)
        .with_context(|| format!("creating a new {name} table"))?;
    for (i, b) in want.iter().enumerate() {
        if *b != Bucket::default() {
            inner.set(i as u32, b, 0)?;
        }
    }
    outer
        .set(0, &inner, 0)
        .with_context(|| format!("swapping in the new {name} table"))?;
    Ok(())
}

/// The object's map `name`.
pub(super) fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses that all hash to one bucket, as many as asked.
    fn colliding(n: usize) -> Vec<[u8; 4]> {
        let all = (0..=u16::MAX).map(|i| [198, 18, (i >> 8) as u8, i as u8]);
        let first = bucket_index(words(&[198, 18, 0, 1]));
        all.filter(|a| bucket_index(words(a)) == first)
            .take(n)
            .collect()
    }

    #[test]
    fn table_places_each_address_in_its_bucket_and_spills_the_overflow() {
        let k = enipin_ebpf::BUCKET_V4;
        let same = colliding(k + 3);
        assert_eq!(same.len(), k + 3);
        let mut owned: BTreeMap<[u8; 4], u32> = same.iter().map(|a| (*a, 7)).collect();
        owned.insert([198, 19, 255, 254], 9);
        let t = table::<4, { enipin_ebpf::BUCKET_V4 }>(&owned);
        assert_eq!(t.len(), TABLE_BUCKETS as usize);
        let b = &t[bucket_index(words(&same[0])) as usize];
        assert_eq!(b.spill, 1, "{} addresses in a bucket of {k}", k + 3);
        assert!(b.ifindex.iter().all(|i| *i == 7));
        // The first K in address order are in the bucket; the rest only in the owner map.
        let mut sorted = same.clone();
        sorted.sort();
        assert_eq!(b.addrs.to_vec(), sorted[..k].to_vec());
        // Every other address is in its own bucket; no other bucket spills.
        let lone = &t[bucket_index(words(&[198, 19, 255, 254])) as usize];
        assert!(lone.addrs.contains(&[198, 19, 255, 254]));
        assert_eq!(t.iter().filter(|b| b.spill != 0).count(), 1);
        let filled: usize = t
            .iter()
            .map(|b| b.ifindex.iter().filter(|i| **i != 0).count())
            .sum();
        assert_eq!(filled, k + 1);
    }

    #[test]
    fn table_of_750_addresses_per_family_does_not_spill() {
        // 15 ENIs x 50 addresses, the largest EC2 instance. A spill is possible with unlucky
        // addresses (it costs a hash lookup, not correctness); these sets have none.
        let v4: BTreeMap<[u8; 4], u32> = (0..750u32)
            .map(|i| ([10, 0, (i / 250) as u8, (i % 250) as u8 + 4], 2 + i / 50))
            .collect();
        let t = table::<4, { enipin_ebpf::BUCKET_V4 }>(&v4);
        assert_eq!(t.iter().filter(|b| b.spill != 0).count(), 0);
        let v6: BTreeMap<[u8; 16], u32> = (0..750u32)
            .map(|i| {
                let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                a[8..].copy_from_slice(
                    &(0x1234_5678_0000_0000u64 + u64::from(i) * 7919).to_be_bytes(),
                );
                (a, 2 + i / 50)
            })
            .collect();
        let t = table::<16, { enipin_ebpf::BUCKET_V6 }>(&v6);
        assert_eq!(t.iter().filter(|b| b.spill != 0).count(), 0);
    }

    #[test]
    fn sequential_ipv6_addresses_in_many_subnets_spread_over_the_buckets() {
        // 15 ENIs, each in its own /64 (the subnet in the address's eighth byte, as a VPC's /56
        // numbers them), each with 50 addresses counted up from ::1. Hashing the two words
        // XORed as they were, the subnet's byte and the identifier's last cancelled into 64
        // buckets of up to 15 addresses: 513 of the addresses spilled to the owner map, a
        // hash lookup each.
        let v6: BTreeMap<[u8; 16], u32> = (0..15u8)
            .flat_map(|subnet| {
                (1..=50u8).map(move |host| {
                    let mut a = [
                        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, subnet, 0, 0, 0, 0, 0, 0, 0, 0,
                    ];
                    a[15] = host;
                    (a, 2 + u32::from(subnet))
                })
            })
            .collect();
        assert_eq!(v6.len(), 750);
        let t = table::<16, { enipin_ebpf::BUCKET_V6 }>(&v6);
        let used = t.iter().filter(|b| b.ifindex[0] != 0).count();
        assert_eq!(t.iter().filter(|b| b.spill != 0).count(), 0);
        assert!(used > 500, "750 addresses in {used} buckets");
        // One /64 counted up to 750: the identifier's last bytes alone used 256 buckets.
        let one: BTreeMap<[u8; 16], u32> = (1..=750u16)
            .map(|host| {
                let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                a[14..].copy_from_slice(&host.to_be_bytes());
                (a, 2)
            })
            .collect();
        let t = table::<16, { enipin_ebpf::BUCKET_V6 }>(&one);
        let used = t.iter().filter(|b| b.ifindex[0] != 0).count();
        assert!(used > 500, "750 addresses in {used} buckets");
    }
}
