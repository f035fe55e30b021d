//! A whole per-CPU array in one `bpf(BPF_MAP_LOOKUP_BATCH)` (Linux 5.6). Reading the fast
//! counter array slot by slot was 256 of a scrape's ~320 `bpf` syscalls (the lab's two
//! interfaces, strace) and most of its millisecond. aya has no batch operation.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya::Pod;

/// `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h, `enum bpf_cmd`).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// The kernel's internal ENOTSUPP, which the bpf syscall returns for a map type without batch
/// operations.
const ENOTSUPP: i32 = 524;

/// The `batch` member of `union bpf_attr`: the command's argument, zero beyond what it sets.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}
const _: () = assert!(size_of::<BatchAttr>() == 56);

/// Every slot `0..slots` of the per-CPU array behind `fd`, each as its `cpus` values (the
/// kernel's possible CPUs). `Ok(None)`: this kernel has no batch lookup for the map (EINVAL,
/// ENOTSUPP); the caller reads slot by slot.
pub(super) fn per_cpu_array<V: Pod + Default>(
    fd: BorrowedFd<'_>,
    slots: u32,
    cpus: usize,
) -> io::Result<Option<Vec<Vec<V>>>> {
    // Per-CPU values are laid out with each CPU's value rounded up to 8 bytes.
    assert!(
        size_of::<V>().is_multiple_of(8),
        "a per-CPU value whose size is not a multiple of 8"
    );
    let mut keys = vec![0u32; slots as usize];
    let mut values = vec![V::default(); slots as usize * cpus];
    let mut out_batch = 0u32;
    let mut attr = BatchAttr {
        out_batch: &raw mut out_batch as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: slots,
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: the attribute points at buffers of `count` keys and `count * cpus` values, the
    // sizes the kernel writes for a per-CPU array, and at a u32 for the next batch's key.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &raw mut attr,
            size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        // ENOENT: the walk reached the end, `count` says how far it got.
        match e.raw_os_error() {
            Some(libc::ENOENT) => {}
            Some(libc::EINVAL | libc::ENOTSUP | ENOTSUPP) => return Ok(None),
            _ => return Err(e),
        }
    }
    if attr.count != slots {
        return Err(io::Error::other(format!(
            "a batch lookup returned {} of {slots} slots",
            attr.count
        )));
    }
    // An array's keys come back in order, 0..slots.
    debug_assert!(keys.iter().enumerate().all(|(i, k)| *k as usize == i));
    Ok(Some(values.chunks(cpus).map(<[V]>::to_vec).collect()))
}
