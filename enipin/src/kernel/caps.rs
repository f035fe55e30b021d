//! The capabilities a changer needs, checked before it changes anything. Without them the
//! kernel's refusals come late and say little: with CAP_NET_ADMIN alone, attach applied 35
//! rule changes, failed at the datapath, rolled them back and blamed pins of another enipin
//! version; as a user without either, errors named neither root nor a capability. The two are
//! the systemd unit's (see `packaging/enipin.service` for what each covers).

use anyhow::{Context as _, Result, bail};

/// A capability enipin may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cap {
    /// Rules, routes, addresses, TC/TCX attachments, the interfaces' sysctls.
    NetAdmin,
    /// The datapath's pinned objects (it stands for CAP_BPF and CAP_PERFMON too).
    SysAdmin,
}

impl Cap {
    /// The bit in the capability sets (`linux/capability.h`).
    fn bit(self) -> u32 {
        match self {
            Cap::NetAdmin => 12,
            Cap::SysAdmin => 21,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cap::NetAdmin => "CAP_NET_ADMIN",
            Cap::SysAdmin => "CAP_SYS_ADMIN",
        }
    }

    /// What a command with `datapath` (the eBPF layer, or its pins) needs.
    pub(crate) fn needed(datapath: bool) -> &'static [Cap] {
        if datapath {
            &[Cap::NetAdmin, Cap::SysAdmin]
        } else {
            &[Cap::NetAdmin]
        }
    }
}

/// The effective set from `/proc/self/status`'s `CapEff:` line.
fn effective(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The capabilities of `needed` missing from the effective set `eff`.
fn lacking(eff: u64, needed: &[Cap]) -> Vec<Cap> {
    (needed.iter().copied())
        .filter(|c| eff & (1 << c.bit()) == 0)
        .collect()
}

/// An error, before anything changes, when this process lacks one of `needed` for `what`
/// (`enipin attach`): which one, and how to get it.
pub(crate) fn require(what: &str, needed: &[Cap]) -> Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let eff = effective(&status).context("no CapEff line in /proc/self/status")?;
    let missing = lacking(eff, needed);
    if missing.is_empty() {
        return Ok(());
    }
    let names = |cs: &[Cap]| {
        cs.iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(" and ")
    };
    // SAFETY: plain syscall without arguments.
    let uid = unsafe { libc::geteuid() };
    bail!(
        "{what} needs {}; this process (uid {uid}) lacks {}: run it as root, or grant {} (as the \
         systemd unit's AmbientCapabilities= and the DaemonSet's securityContext do). Nothing was \
         changed",
        names(needed),
        names(&missing),
        names(needed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_set_is_read_and_what_lacks_is_named() {
        let status = "Name:\tenipin\nCapInh:\t0000000000000000\nCapEff:\t0000000000001000\n";
        let eff = effective(status).unwrap();
        assert_eq!(eff, 1 << 12, "CAP_NET_ADMIN alone");
        assert_eq!(lacking(eff, Cap::needed(false)), []);
        assert_eq!(lacking(eff, Cap::needed(true)), [Cap::SysAdmin]);
        assert_eq!(
            lacking(0, Cap::needed(true)),
            [Cap::NetAdmin, Cap::SysAdmin]
        );
        assert_eq!(lacking(0x1ff_ffff_ffff, Cap::needed(true)), []);
        assert_eq!(effective("Name:\tx\n"), None);
    }
}
