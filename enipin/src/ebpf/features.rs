//! What the kernel offers the datapath, probed once per process, never inferred from its version
//! (distribution kernels carry backports): each answer picks one of two paths that keep the same
//! promises.

use std::sync::OnceLock;

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
