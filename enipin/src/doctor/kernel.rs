//! What enipin needs of the kernel, probed rather than guessed from the version: a bpffs at the
//! pin directory, TCX links (a query on loopback, the probe `attach` uses), and the helpers the
//! program calls, `bpf_redirect_neigh` (5.10) and `bpf_check_mtu` (5.12), each by loading a
//! two-instruction classifier that calls it (aya's `is_helper_supported`, as libbpf probes).

use std::path::Path;

use aya::{
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported},
};

use super::{Finding, Severity};
use crate::ebpf;

/// What was probed; `Err` holds why a probe could not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Kernel {
    /// `Err`: the pin directory is not on a bpffs, and what to do.
    pub bpffs: Result<(), String>,
    pub pin_dir: String,
    pub tcx: Result<bool, String>,
    /// (helper name, supported)
    pub helpers: Vec<(&'static str, Result<bool, String>)>,
}

pub(super) fn read(pin_dir: &Path) -> Kernel {
    let helper =
        |h| is_helper_supported(ProgramType::SchedClassifier, h).map_err(|e| format!("{e}"));
    Kernel {
        bpffs: ebpf::ensure_bpffs(pin_dir).map_err(|e| format!("{e:#}")),
        pin_dir: pin_dir.display().to_string(),
        tcx: ebpf::have_tcx().map_err(|e| format!("{e:#}")),
        helpers: vec![
            (
                "bpf_redirect_neigh",
                helper(BpfHelper::BPF_FUNC_redirect_neigh),
            ),
            ("bpf_check_mtu", helper(BpfHelper::BPF_FUNC_check_mtu)),
        ],
    }
}

pub(super) fn check(k: &Kernel) -> Vec<Finding> {
    let mut out = vec![match &k.bpffs {
        Ok(()) => Finding::ok(
            "kernel bpffs",
            format!(
                "{} is on a bpffs: the datapath outlives the command",
                k.pin_dir
            ),
        ),
        Err(e) => Finding::new("kernel bpffs", Severity::Conflict, e.clone()).fix(
            "mount -t bpf bpf /sys/fs/bpf (systemd does at boot), or pass --pin-dir on a bpffs",
        ),
    }];
    out.push(match &k.tcx {
        Ok(true) => Finding::ok(
            "kernel tcx",
            "the kernel has TCX: enipin attaches TCX links, ordered and owned".into(),
        ),
        Ok(false) => Finding::new(
            "kernel tcx",
            Severity::Warning,
            "no TCX (kernel < 6.6): enipin attaches a netlink clsact filter, which others can \
             replace or delete without a trace"
                .into(),
        )
        .fix("a kernel >= 6.6 gives TCX links"),
        Err(e) => Finding::new(
            "kernel tcx",
            Severity::Warning,
            format!("TCX probe failed: {e}"),
        ),
    });
    for (name, r) in &k.helpers {
        let check = format!("kernel {name}");
        out.push(match r {
            Ok(true) => Finding::ok(
                check,
                format!("{name} is available to TC programs (probed)"),
            ),
            Ok(false) => Finding::new(
                check,
                Severity::Conflict,
                format!("the kernel's verifier does not know {name}: enipin's program cannot load"),
            )
            .fix("a kernel >= 5.12, or `enipin attach --no-ebpf` (rules only)"),
            Err(e) => Finding::new(
                check,
                Severity::Warning,
                format!("probing {name} failed: {e}"),
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_helpers_and_bpffs_are_conflicts() {
        let k = Kernel {
            bpffs: Err("/tmp/x is not on a bpffs".into()),
            pin_dir: "/tmp/x".into(),
            tcx: Ok(false),
            helpers: vec![
                ("bpf_check_mtu", Ok(false)),
                ("bpf_redirect_neigh", Ok(true)),
            ],
        };
        let f = check(&k);
        let sev: Vec<_> = f.iter().map(|f| f.severity).collect();
        assert_eq!(
            sev,
            [
                Severity::Conflict,
                Severity::Warning,
                Severity::Conflict,
                Severity::Ok
            ]
        );
        assert!(f[2].meaning.contains("bpf_check_mtu"));
    }
}
