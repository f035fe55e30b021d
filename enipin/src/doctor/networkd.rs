//! systemd-networkd: running in this namespace or enabled at boot, whether its effective
//! `ManageForeignRoutingPolicyRules` / `ManageForeignRoutes` (both `yes` by default) make it
//! delete enipin's rules and routes, and (`networkd_links`) whether the managed interfaces'
//! `.network` files keep their addresses at a restart (`KeepConfiguration=static`).
//!
//! What deletes, measured with networkd 252 beside enipin (tests/tests/networkd.rs):
//! `networkctl reconfigure LINK`, a restart (on a host with udev; in a container without it
//! networkd configures the links before it reads the rules and deletes none), and `networkctl
//! reload` after a changed `.network` file; a reload with unchanged files deletes nothing. Also
//! every `netplan apply` (systemd/systemd#19106, #22077).

use std::path::{Path, PathBuf};

use ini::{Ini, ParseOption};

use crate::model::MacAddr;

use super::{
    Finding, Severity, host,
    networkd_conf::{fix, systemd_bool},
    networkd_links,
};

/// networkd.conf: the first of these, then the drop-ins of the `.d` directories.
const MAIN: [&str; 4] = [
    "/etc/systemd/networkd.conf",
    "/run/systemd/networkd.conf",
    "/usr/local/lib/systemd/networkd.conf",
    "/usr/lib/systemd/networkd.conf",
];
const DROP_IN_DIRS: [&str; 4] = [
    "/etc/systemd/networkd.conf.d",
    "/run/systemd/networkd.conf.d",
    "/usr/local/lib/systemd/networkd.conf.d",
    "/usr/lib/systemd/networkd.conf.d",
];

/// The two settings that matter, as networkd would take them.
pub(super) const KEYS: [&str; 2] = ["ManageForeignRoutingPolicyRules", "ManageForeignRoutes"];

/// A setting's effective value and the file that set it (`None`: networkd's default, yes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Setting {
    pub value: bool,
    pub source: Option<PathBuf>,
}

/// What was read about networkd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Networkd {
    /// Its pid, when it runs in this namespace.
    pub running: Option<u32>,
    /// The `*.wants/` link that starts it at boot (`None` when not enabled or not checked).
    pub enabled: Option<PathBuf>,
    /// Whether boot-time enablement was checked (the host's namespace, or `--root`).
    pub boot_checked: bool,
    /// [`KEYS`], in order.
    pub settings: [Setting; 2],
    /// The managed interfaces' `.network` files.
    pub links: Vec<networkd_links::LinkFile>,
}

/// What networkd would do here; `ifaces` are the managed interfaces (name, MAC).
pub(super) fn read(
    root: &Path,
    procs: &[host::Process],
    ns: u64,
    boot: bool,
    ifaces: &[(String, MacAddr)],
) -> Networkd {
    let enabled = boot
        .then(|| host::wanted(root, "systemd-networkd.service"))
        .and_then(|w| w.into_iter().next())
        .map(|(_, link)| link);
    Networkd {
        running: host::running(procs, "systemd-network", ns),
        enabled,
        boot_checked: boot,
        settings: settings(root),
        links: networkd_links::read(root, ifaces),
    }
}

/// The effective settings: the main file, then every drop-in in order; the last assignment wins.
pub(super) fn settings(root: &Path) -> [Setting; 2] {
    let mut out = KEYS.map(|_| Setting {
        value: true,
        source: None,
    });
    let files = host::first_file(root, &MAIN)
        .into_iter()
        .chain(host::config_files(root, &DROP_IN_DIRS, ".conf"));
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (key, setting) in KEYS.iter().zip(out.iter_mut()) {
            if let Some(v) = assignment(&text, key) {
                *setting = Setting {
                    value: v,
                    source: Some(file.clone()),
                };
            }
        }
    }
    out
}

/// The last valid `key=` of the `[Network]` sections of `text`. An unparsable file or value is
/// ignored, as networkd ignores it (with a log line).
fn assignment(text: &str, key: &str) -> Option<bool> {
    let opt = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        ..ParseOption::default()
    };
    let ini = Ini::load_from_str_opt(text, opt).ok()?;
    ini.section_all(Some("Network"))
        .flat_map(|s| s.get_all(key))
        .filter_map(systemd_bool)
        .next_back()
}

/// The triggers, as measured with networkd 252.
const TRIGGERS: &str = "at `networkctl reconfigure`, at a restart (where udev runs), at \
    `networkctl reload` after a changed .network file (not at a reload of unchanged files, \
    networkd 252), and at every `netplan apply` (systemd/systemd#19106, #22077)";

pub(super) fn check(n: &Networkd) -> Vec<Finding> {
    let how = match (n.running, &n.enabled) {
        (Some(pid), _) => format!("runs in this namespace (pid {pid})"),
        (None, Some(link)) => format!("is enabled at boot ({})", link.display()),
        (None, None) => {
            let boot = if n.boot_checked {
                ", nor enabled at boot"
            } else {
                " (boot-time units are the host namespace's: pass --root / to check them)"
            };
            return vec![Finding::ok(
                "networkd",
                format!("systemd-networkd does not run in this namespace{boot}"),
            )];
        }
    };
    let mut out: Vec<Finding> = KEYS
        .iter()
        .zip(&n.settings)
        .zip(["rules", "routes"])
        .map(|((key, s), what)| {
            let from = match &s.source {
                Some(p) => format!("from {}", p.display()),
                None => "networkd's default".to_owned(),
            };
            let check = format!("networkd {key}");
            if s.value {
                Finding::new(
                    check,
                    Severity::Conflict,
                    format!(
                        "systemd-networkd {how} with {key}=yes ({from}): it deletes enipin's \
                         {what} {TRIGGERS}; `enipin watch` puts them back, after a gap"
                    ),
                )
                .fix(fix())
            } else {
                Finding::ok(
                    check,
                    format!(
                        "systemd-networkd {how} with {key}=no ({from}): it deletes none of \
                         enipin's {what} itself{}",
                        if what == "routes" {
                            "; an address it removes and adds back still takes enipin's routes \
                             through its link with it (the kernel's flush): see KeepConfiguration"
                        } else {
                            ""
                        }
                    ),
                )
            }
        })
        .collect();
    out.extend(networkd_links::check(&n.links));
    out
}

#[cfg(test)]
mod tests {
    use super::{
        super::{host::scratch::Root, networkd_conf::DROP_IN_BODY},
        *,
    };

    fn read_at(r: &Root, running: bool) -> Networkd {
        let procs = if running {
            vec![host::Process {
                pid: 7,
                comm: "systemd-network".into(),
                netns: Some(1),
            }]
        } else {
            Vec::new()
        };
        read(
            r.path(),
            &procs,
            1,
            true,
            &[("eth1".to_owned(), [2, 0, 0, 0, 0, 0x11])],
        )
    }

    #[test]
    fn defaults_delete_foreign_rules_and_routes_when_networkd_runs() {
        let r = Root::new("nd-default");
        let n = read_at(&r, true);
        let f = check(&n);
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|f| f.severity == Severity::Conflict), "{f:?}");
        assert!(f[0].meaning.contains("pid 7") && f[0].meaning.contains("default"));
        // The triggers that delete, and the one that does not (issue 24, networkd 252).
        for words in [
            "`networkctl reconfigure`",
            "at a restart (where udev runs)",
            "reload` after a changed .network file",
            "not at a reload of unchanged files",
        ] {
            assert!(f[0].meaning.contains(words), "{words:?}: {}", f[0].meaning);
        }
        assert!(
            !f[0]
                .meaning
                .contains("whenever it starts, restarts or reloads")
        );
        let fix = f[0].fix.as_ref().unwrap();
        assert!(fix.contains(DROP_IN_BODY), "{fix}");
        assert!(fix.contains("KeepConfiguration=static"), "{fix}");
        // Not running, not enabled: nothing to fear.
        let f = check(&read_at(&r, false));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Ok);
    }

    #[test]
    fn drop_ins_override_the_main_file_in_name_order_and_etc_masks_usr_lib() {
        let r = Root::new("nd-dropins");
        r.write(
            "/etc/systemd/networkd.conf",
            "[Network]\n#ManageForeignRoutes=no\nManageForeignRoutingPolicyRules=no\n",
        )
        .write(
            "/usr/lib/systemd/networkd.conf.d/50-vendor.conf",
            "[Network]\nManageForeignRoutingPolicyRules=yes\nManageForeignRoutes=no\n",
        )
        .write(
            "/etc/systemd/networkd.conf.d/50-vendor.conf",
            "[Network]\nManageForeignRoutes=no\n",
        )
        .write(
            "/run/systemd/networkd.conf.d/60-late.conf",
            "[DHCPv4]\nManageForeignRoutes=yes\n[Network]\nManageForeignRoutes=bogus\n",
        )
        .link(
            "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
            "/usr/lib/systemd/system/systemd-networkd.service",
        );
        let n = read_at(&r, false);
        assert!(n.enabled.is_some());
        // The /usr/lib drop-in is masked by /etc's of the same name: rules stay `no` from the
        // main file; routes `no` from /etc's drop-in (the [DHCPv4] key and `bogus` don't count).
        assert!(!n.settings[0].value && !n.settings[1].value, "{n:?}");
        assert!(
            n.settings[0]
                .source
                .as_ref()
                .unwrap()
                .ends_with("networkd.conf")
        );
        assert!(
            n.settings[1]
                .source
                .as_ref()
                .unwrap()
                .ends_with("networkd.conf.d/50-vendor.conf")
        );
        let f = check(&n);
        assert!(f.iter().all(|f| f.severity == Severity::Ok), "{f:?}");
        assert!(f[0].meaning.contains("enabled at boot"));

        r.write(
            "/run/systemd/networkd.conf.d/70-yes.conf",
            "[Network]\nManageForeignRoutingPolicyRules=yes\n",
        );
        let f = check(&read_at(&r, false));
        assert_eq!(f[0].severity, Severity::Conflict);
        assert!(f[0].meaning.contains("70-yes.conf"), "{}", f[0].meaning);
        assert_eq!(f[1].severity, Severity::Ok);
    }
}
