//! What enipin needs of the kernel, and which path the datapath takes on this one, each probed
//! rather than guessed from the version (distribution kernels carry backports): a bpffs at the
//! pin directory, TCX (a query on loopback, the probe `attach` uses), the helpers the program
//! calls (`bpf_redirect_neigh`, 5.10; `bpf_check_mtu`, 5.12, else the program's own check), the
//! owner tables' map-in-map swap (refused for a struct-typed template by 5.15-6.1) and
//! `BPF_FIB_LOOKUP_TBID` (6.8, else the kernel's full route lookup). The probes are
//! `datapath::features`'.

use std::path::Path;

use super::{Finding, Severity};
use crate::datapath::{self, TableSwap};

/// What was probed; `Err` holds why a probe could not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Kernel {
    /// `Err`: the pin directory is not on a bpffs, and what to do.
    pub bpffs: Result<(), String>,
    pub pin_dir: String,
    pub tcx: Result<bool, String>,
    pub redirect_neigh: Result<bool, String>,
    pub check_mtu: bool,
    pub table_swap: Result<TableSwap, String>,
    pub fib_tbid: Result<bool, String>,
}

pub(super) fn read(pin_dir: &Path) -> Kernel {
    let text = |e: std::io::Error| e.to_string();
    Kernel {
        bpffs: datapath::ensure_bpffs(pin_dir).map_err(|e| format!("{e:#}")),
        pin_dir: pin_dir.display().to_string(),
        tcx: datapath::have_tcx().map_err(|e| format!("{e:#}")),
        redirect_neigh: datapath::have_redirect_neigh().map_err(text),
        check_mtu: datapath::have_check_mtu(),
        table_swap: datapath::table_swap().map_err(text),
        fib_tbid: datapath::have_fib_tbid().map_err(text),
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
    out.push(attach(&k.tcx));
    out.push(redirect(&k.redirect_neigh));
    out.push(Finding::ok(
        "kernel mtu check",
        if k.check_mtu {
            "bpf_check_mtu against the owner's live MTU (probed)".into()
        } else {
            "the program's own, against the owner's MTU as of the last reconcile (no \
             bpf_check_mtu before 5.12)"
                .into()
        },
    ));
    out.push(owner_tables(&k.table_swap));
    out.push(next_hop(&k.fib_tbid));
    out
}

fn attach(tcx: &Result<bool, String>) -> Finding {
    match tcx {
        Ok(true) => Finding::ok(
            "kernel attach",
            "TCX links (probed): ordered and owned, pinned under the pin directory".into(),
        ),
        Ok(false) => Finding::ok(
            "kernel attach",
            "netlink clsact (no TCX before 6.6): another tool can replace or delete enipin's \
             filter without a trace (watch puts it back); a qdisc enipin added goes with its \
             last filter"
                .into(),
        ),
        Err(e) => Finding::new(
            "kernel attach",
            Severity::Warning,
            format!("TCX probe failed: {e}"),
        ),
    }
}

fn redirect(neigh: &Result<bool, String>) -> Finding {
    match neigh {
        Ok(true) => Finding::ok(
            "kernel redirect",
            "bpf_redirect_neigh is available to TC programs (probed)".into(),
        ),
        Ok(false) => Finding::new(
            "kernel redirect",
            Severity::Conflict,
            "the kernel's verifier does not know bpf_redirect_neigh: enipin's program cannot \
             load"
                .into(),
        )
        .fix("a kernel >= 5.10, or `enipin attach --no-ebpf` (rules only)"),
        Err(e) => Finding::new(
            "kernel redirect",
            Severity::Warning,
            format!("probing bpf_redirect_neigh failed: {e}"),
        ),
    }
}

fn owner_tables(swap: &Result<TableSwap, String>) -> Finding {
    match swap {
        Ok(TableSwap {
            words: true,
            structs,
        }) => Finding::ok(
            "kernel owner tables",
            format!(
                "swap accepted (probed){}",
                if *structs {
                    ""
                } else {
                    "; this kernel refuses it into a struct-typed template (5.15-6.1), which is \
                     why enipin's are typed as words"
                }
            ),
        ),
        Ok(TableSwap { words: false, .. }) => Finding::new(
            "kernel owner tables",
            Severity::Conflict,
            "the kernel refuses to swap a new owner table in: `attach` with the datapath fails \
             and rolls back"
                .into(),
        )
        .fix("`enipin attach --no-ebpf` (rules only), and report the kernel version"),
        Err(e) => Finding::new(
            "kernel owner tables",
            Severity::Warning,
            format!("probing the owner tables' swap failed: {e}"),
        ),
    }
}

/// Said of every kernel: the `--no-rules` path needs `bpf_redirect_neigh`'s next hop, which the
/// helper has taken since it came (5.10), so the redirect finding covers it.
const WITHOUT_RULES: &str = "; without rules (--no-rules) a redirect off the owner's subnets \
                             goes through the owner's gateway (bpf_redirect_neigh's next hop)";

fn next_hop(tbid: &Result<bool, String>) -> Finding {
    match tbid {
        Ok(true) => Finding::ok(
            "kernel next hop",
            format!(
                "a redirect looks its next hop up in the owner's table (BPF_FIB_LOOKUP_TBID, \
                 probed){WITHOUT_RULES}"
            ),
        ),
        Ok(false) => Finding::ok(
            "kernel next hop",
            format!(
                "a redirect takes the kernel's full route lookup (no BPF_FIB_LOOKUP_TBID before \
                 6.8): the same next hop, one lookup more per redirected packet{WITHOUT_RULES}"
            ),
        ),
        Err(e) => Finding::new(
            "kernel next hop",
            Severity::Warning,
            format!("probing BPF_FIB_LOOKUP_TBID failed: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_pieces_are_conflicts_and_older_paths_are_named() {
        let k = Kernel {
            bpffs: Err("/tmp/x is not on a bpffs".into()),
            pin_dir: "/tmp/x".into(),
            tcx: Ok(false),
            redirect_neigh: Ok(false),
            check_mtu: false,
            table_swap: Ok(TableSwap {
                words: true,
                structs: false,
            }),
            fib_tbid: Ok(false),
        };
        let f = check(&k);
        let sev: Vec<_> = f.iter().map(|f| (f.check.as_str(), f.severity)).collect();
        assert_eq!(
            sev,
            [
                ("kernel bpffs", Severity::Conflict),
                ("kernel attach", Severity::Ok),
                ("kernel redirect", Severity::Conflict),
                ("kernel mtu check", Severity::Ok),
                ("kernel owner tables", Severity::Ok),
                ("kernel next hop", Severity::Ok),
            ]
        );
        assert!(
            f[1].meaning
                .starts_with("netlink clsact (no TCX before 6.6)")
        );
        assert!(f[3].meaning.contains("no bpf_check_mtu before 5.12"));
        assert!(
            f[4].meaning
                .contains("refuses it into a struct-typed template")
        );
        assert!(f[5].meaning.contains("no BPF_FIB_LOOKUP_TBID before 6.8"));
        let refused = Kernel {
            table_swap: Ok(TableSwap {
                words: false,
                structs: false,
            }),
            ..k
        };
        assert_eq!(check(&refused)[4].severity, Severity::Conflict);
    }
}
