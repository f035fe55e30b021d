//! What the kernel offers the datapath, probed once per process, never inferred from its version
//! (distribution kernels carry backports): each answer picks one of two paths that keep the same
//! promises, and `doctor` names the path taken.
//!
//! Two probes have no library call (aya has none), so they go through the `bpf` syscall here:
//! a map-in-map swap, and a test-run of an 18-instruction classifier.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::OnceLock,
};

use aya::{
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported},
};

/// Whether TC programs may call `bpf_check_mtu` (5.12+), by loading a two-instruction classifier
/// that calls it (aya's probe, as libbpf's). Without it the program compares the packet with the
/// owner's recorded MTU itself; a probe that cannot answer takes that path too, which is correct
/// on every kernel.
pub(crate) fn have_check_mtu() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        is_helper_supported(ProgramType::SchedClassifier, BpfHelper::BPF_FUNC_check_mtu)
            .unwrap_or_else(|e| {
                log::debug!("probing bpf_check_mtu: {e}");
                false
            })
    })
}

/// Whether TC programs may call `bpf_redirect_neigh` (5.10+): without it the program cannot load.
pub(crate) fn have_redirect_neigh() -> io::Result<bool> {
    is_helper_supported(
        ProgramType::SchedClassifier,
        BpfHelper::BPF_FUNC_redirect_neigh,
    )
    .map_err(io::Error::other)
}

/// How the kernel takes an owner table's swap (a new inner array, created without BTF, into the
/// outer map's slot), for each way the template's value can be typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TableSwap {
    /// The template's value typed as words, as enipin's object declares it: what `attach` does.
    pub(crate) words: bool,
    /// The template's value typed as a struct: refused by 5.15 to 6.1 (`bpf_map_meta_equal`
    /// compared `timer_off`), the reason enipin declares words.
    pub(crate) structs: bool,
}

/// Probes [`TableSwap`] with maps of its own (4-byte values, one slot), closed on return.
pub(crate) fn table_swap() -> io::Result<TableSwap> {
    Ok(TableSwap {
        words: sys::swap_into_typed_template(false)?,
        structs: sys::swap_into_typed_template(true)?,
    })
}

/// Whether `bpf_fib_lookup` takes `BPF_FIB_LOOKUP_TBID` (6.8+): the program's next hop from the
/// owner's table. Without it that lookup answers EINVAL and the program takes the kernel's full
/// route lookup (`bpf_redirect_neigh` without a next hop), as for an owner enipin does not route.
pub(crate) fn have_fib_tbid() -> io::Result<bool> {
    sys::fib_lookup_takes_tbid()
}

/// The raw `bpf` calls of the probes above.
mod sys {
    use super::*;

    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_BTF_LOAD: libc::c_long = 18;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

    /// `bpf(cmd, attr)`, the attribute a `#[repr(C)]` prefix of `union bpf_attr` (the kernel
    /// takes the rest as zero).
    fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
        // SAFETY: `attr` is a live, writable value of the size passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut T as *mut libc::c_void,
                size_of::<T>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc)
    }

    fn fd(rc: libc::c_long) -> OwnedFd {
        // SAFETY: the kernel returned a new descriptor, owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(rc as i32) }
    }

    #[repr(C)]
    #[derive(Default)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        inner_map_fd: u32,
        numa_node: u32,
        map_name: [u8; 16],
        map_ifindex: u32,
        btf_fd: u32,
        btf_key_type_id: u32,
        btf_value_type_id: u32,
    }

    fn array(inner: Option<&OwnedFd>, btf: Option<(&OwnedFd, u32)>) -> io::Result<OwnedFd> {
        let mut a = MapCreate {
            map_type: if inner.is_some() {
                BPF_MAP_TYPE_ARRAY_OF_MAPS
            } else {
                BPF_MAP_TYPE_ARRAY
            },
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            inner_map_fd: inner.map_or(0, |f| f.as_raw_fd() as u32),
            ..Default::default()
        };
        if let Some((btf, value_type)) = btf {
            (a.btf_fd, a.btf_key_type_id, a.btf_value_type_id) =
                (btf.as_raw_fd() as u32, 1, value_type);
        }
        bpf(BPF_MAP_CREATE, &mut a).map(fd)
    }

    /// BTF of three types: 1 `u32` (the key), 2 `struct { u32 a; }`, 3 `u32[1]`.
    fn btf() -> Vec<u8> {
        const KIND_INT: u32 = 1;
        const KIND_ARRAY: u32 = 3;
        const KIND_STRUCT: u32 = 4;
        let strings = b"\0u32\0s\0a\0";
        let types: [u32; 16] = [
            1,
            KIND_INT << 24,
            4,
            32, // "u32": 4 bytes, 32 bits, unsigned
            5,
            (KIND_STRUCT << 24) | 1,
            4, // "s": 4 bytes, one member
            7,
            1,
            0, // "a": u32 at bit 0
            0,
            KIND_ARRAY << 24,
            0, // an array
            1,
            1,
            1, // of u32, indexed by u32, one element
        ];
        let type_len = (types.len() * 4) as u32;
        let header: [u32; 6] = [
            0x0001_eb9f, // magic 0xeb9f, version 1, flags 0
            24,          // header length
            0,
            type_len,
            type_len,
            strings.len() as u32,
        ];
        let mut out: Vec<u8> = header.iter().flat_map(|w| w.to_ne_bytes()).collect();
        out.extend(types.iter().flat_map(|w| w.to_ne_bytes()));
        out.extend_from_slice(strings);
        out
    }

    #[repr(C)]
    #[derive(Default)]
    struct BtfLoad {
        btf: u64,
        btf_log_buf: u64,
        btf_size: u32,
        btf_log_size: u32,
        btf_log_level: u32,
        /// Zero, and explicit: the kernel refuses (EINVAL) an attribute whose bytes past the
        /// fields it knows are not zero, and newer kernels know fields here (`btf_log_true_size`,
        /// 6.4). Left as implicit padding it held whatever the stack did: 5.10 refused the probe
        /// in a debug build.
        _zero: u32,
    }
    // Every attribute is its fields' sizes, no implicit padding (see `BtfLoad::_zero`).
    const _: () = {
        assert!(size_of::<MapCreate>() == 11 * 4 + 16);
        assert!(size_of::<BtfLoad>() == 2 * 8 + 4 * 4);
        assert!(size_of::<MapUpdate>() == 2 * 4 + 3 * 8);
        assert!(size_of::<ProgLoad>() == 4 * 4 + 3 * 8);
        assert!(size_of::<TestRun>() == 6 * 4 + 2 * 8);
    };

    #[repr(C)]
    #[derive(Default)]
    struct MapUpdate {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }

    /// Creates an outer array whose template is typed as a struct (or as an array of words), and
    /// swaps an inner array without BTF into it: `Ok(false)` when the kernel refuses (EINVAL).
    pub(super) fn swap_into_typed_template(as_struct: bool) -> io::Result<bool> {
        let blob = btf();
        let mut load = BtfLoad {
            btf: blob.as_ptr() as u64,
            btf_size: blob.len() as u32,
            ..Default::default()
        };
        let btf = bpf(BPF_BTF_LOAD, &mut load).map(fd)?;
        let template = array(None, Some((&btf, if as_struct { 2 } else { 3 })))?;
        let outer = array(Some(&template), None)?;
        let inner = array(None, None)?;
        let (key, value) = (0u32, inner.as_raw_fd() as u32);
        let mut update = MapUpdate {
            map_fd: outer.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            ..Default::default()
        };
        match bpf(BPF_MAP_UPDATE_ELEM, &mut update) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(e),
        }
    }

    #[repr(C)]
    #[derive(Default)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
    }

    /// One instruction: opcode, registers (dst low nibble, src high), offset, immediate.
    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
        u64::from(code)
            | u64::from(dst | (src << 4)) << 8
            | u64::from(off as u16) << 16
            | u64::from(imm as u32) << 32
    }

    /// Test-runs `return bpf_fib_lookup(skb, &{ .family = AF_INET, .ifindex = 1 }, 64,
    /// DIRECT | OUTPUT | TBID)`: a kernel without the flag answers -EINVAL before anything else.
    pub(super) fn fib_lookup_takes_tbid() -> io::Result<bool> {
        const FLAGS: i32 = 1 | 2 | 8; // BPF_FIB_LOOKUP_DIRECT | OUTPUT | TBID
        let mut prog = vec![insn(0xbf, 6, 1, 0, 0)]; // r6 = r1 (the skb)
        // The 64-byte `struct bpf_fib_lookup` on the stack, zeroed, then family and ifindex.
        prog.extend((0..8).map(|i| insn(0x7a, 10, 0, -64 + 8 * i, 0)));
        prog.extend([
            insn(0x72, 10, 0, -64, libc::AF_INET), // *(u8 *)(r10 - 64) = AF_INET
            insn(0x62, 10, 0, -56, 1),             // *(u32 *)(r10 - 56) = 1 (loopback)
            insn(0xbf, 2, 10, 0, 0),               // r2 = r10
            insn(0x07, 2, 0, 0, -64),              // r2 += -64
            insn(0xb7, 3, 0, 0, 64),               // r3 = 64
            insn(0xb7, 4, 0, 0, FLAGS),            // r4 = flags
            insn(0xbf, 1, 6, 0, 0),                // r1 = r6
            insn(0x85, 0, 0, 0, 69),               // call bpf_fib_lookup
            insn(0x95, 0, 0, 0, 0),                // exit
        ]);
        let license = c"GPL";
        let mut load = ProgLoad {
            prog_type: BPF_PROG_TYPE_SCHED_CLS,
            insn_cnt: prog.len() as u32,
            insns: prog.as_ptr() as u64,
            license: license.as_ptr() as u64,
            ..Default::default()
        };
        let prog = bpf(BPF_PROG_LOAD, &mut load).map(fd)?;
        // An Ethernet header and an IPv4 header's worth of zeros: the lookup reads none of it.
        let frame = [0u8; 34];
        let mut run = TestRun {
            prog_fd: prog.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat: 1,
            ..Default::default()
        };
        bpf(BPF_PROG_TEST_RUN, &mut run)?;
        Ok(run.retval as i32 != -libc::EINVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's kernel (6.18) has every feature: both swaps and the flag are accepted. The
    /// older answers are the kernel matrix's (tests/tests/kernels.rs), booted in QEMU.
    #[test]
    fn this_kernel_takes_every_path_of_the_newest() {
        if unsafe { libc::geteuid() } != 0 {
            panic!("the probes load BPF maps and programs: run the tests as root");
        }
        assert_eq!(
            table_swap().unwrap(),
            TableSwap {
                words: true,
                structs: true
            }
        );
        assert!(have_fib_tbid().unwrap());
        assert!(have_check_mtu());
        assert!(have_redirect_neigh().unwrap());
    }
}
