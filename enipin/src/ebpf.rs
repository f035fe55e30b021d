//! The TC egress enforcer's loader: load, pin, attach, fill the owner maps, read the counters.

/// The eBPF object, built by build.rs with the pinned nightly and bpf-linker.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enipin"));
