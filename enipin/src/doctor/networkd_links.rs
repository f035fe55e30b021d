//! The `.network` file systemd-networkd applies to each managed interface, and its
//! `KeepConfiguration=`. Without `static` (or `yes`) networkd removes the link's static
//! addresses and routes at a restart and at a reload after a changed file and adds them back:
//! measured with networkd 252, the address was gone 4-76 ms, and the kernel flushed enipin's
//! routes through the link with it (tests/tests/networkd.rs, docs/networkd.md).
//!
//! The file is found as networkd finds it: the `.network` files of its four directories in
//! name order (a name in /etc masking the same name in /run and /usr/lib), the first whose
//! `[Match]` matches the link. Only `Name=` (globs, `!` inverts), `MACAddress=` /
//! `PermanentMACAddress=` and `Type=` (an ENI is `ether`) are evaluated; other match keys
//! (`Driver=`, ...) are taken as matching, so a file that names the interface or its MAC is the
//! one reported. `Type=` counts because systemd ships files matching only by it (Debian 12's
//! `80-wifi-adhoc.network`, `Type=wlan`), which sort before AL2023's `80-ec2.network`.

use std::path::{Path, PathBuf};

use ini::{Ini, ParseOption};

use super::{
    Finding, Severity, host,
    networkd_conf::{fix, systemd_bool},
};
use crate::model::{MacAddr, fmt_mac};

/// networkd's `.network` directories, highest precedence first.
const DIRS: [&str; 4] = [
    "/etc/systemd/network",
    "/run/systemd/network",
    "/usr/local/lib/systemd/network",
    "/usr/lib/systemd/network",
];

/// `KeepConfiguration=` as networkd 252 parses it (`yes` is `static` and `dhcp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Keep {
    No,
    Static,
    DhcpOnStop,
    Dhcp,
    Yes,
}

impl Keep {
    fn parse(v: &str) -> Option<Self> {
        match v.trim() {
            "static" => Some(Keep::Static),
            "dhcp-on-stop" => Some(Keep::DhcpOnStop),
            "dhcp" => Some(Keep::Dhcp),
            v => systemd_bool(v).map(|b| if b { Keep::Yes } else { Keep::No }),
        }
    }

    fn keeps_static(self) -> bool {
        matches!(self, Keep::Static | Keep::Yes)
    }
}

/// A managed interface and the `.network` file networkd applies to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LinkFile {
    pub name: String,
    /// `None`: no file matches; networkd leaves the link alone.
    pub file: Option<PathBuf>,
    /// The effective `KeepConfiguration=` (the file, then its `.d/*.conf` drop-ins).
    pub keep: Keep,
}

/// The file of each interface `(name, mac)`.
pub(super) fn read(root: &Path, ifaces: &[(String, MacAddr)]) -> Vec<LinkFile> {
    let files: Vec<(PathBuf, Ini)> = host::config_files(root, &DIRS, ".network")
        .into_iter()
        .filter_map(|p| Some((p.clone(), load(root, &p)?)))
        .collect();
    ifaces
        .iter()
        .map(|(name, mac)| {
            let file = files.iter().find(|(_, ini)| matches(ini, name, mac));
            LinkFile {
                name: name.clone(),
                file: file.map(|(p, _)| p.clone()),
                keep: file.map_or(Keep::No, |(_, ini)| keep(ini)),
            }
        })
        .collect()
}

/// The file with its drop-ins (`NAME.network.d/*.conf` in any of the four directories, in name
/// order) after it, as networkd parses them: one text, lists accumulating, the last value
/// winning. amazon-ec2-net-utils' `70-IFACE.network` is a link to the catch-all
/// `80-ec2.network` (`Driver=ena ...`) whose drop-in `eni.conf` adds `MACAddress=`: without its
/// drop-ins, eth0's file would match every ENI.
fn load(root: &Path, p: &Path) -> Option<Ini> {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    let dirs = DIRS.map(|d| format!("{d}/{name}.d"));
    let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
    let mut text = std::fs::read_to_string(p).ok()?;
    for d in host::config_files(root, &dirs, ".conf") {
        text.push('\n');
        text += &std::fs::read_to_string(d).unwrap_or_default();
    }
    let opt = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        ..ParseOption::default()
    };
    Ini::load_from_str_opt(&text, opt).ok()
}

/// The values of `key` in `section`s, as systemd accumulates a list: whitespace-separated words
/// added up, an empty assignment clearing what came before.
fn list(ini: &Ini, section: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for v in ini.section_all(Some(section)).flat_map(|s| s.get_all(key)) {
        if v.trim().is_empty() {
            out.clear();
        }
        out.extend(v.split_whitespace().map(str::to_owned));
    }
    out
}

/// Whether `[Match]` of `ini` matches the link (see the module's comment).
fn matches(ini: &Ini, name: &str, mac: &MacAddr) -> bool {
    let names = list(ini, "Match", "Name");
    let name_ok = match names.split_first() {
        None => true,
        Some((first, rest)) => {
            let invert = first.starts_with('!');
            let mut globs = std::iter::once(first.trim_start_matches('!'))
                .chain(rest.iter().map(String::as_str));
            globs.any(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches(name))) != invert
        }
    };
    let mac = fmt_mac(mac);
    let mac_ok = ["MACAddress", "PermanentMACAddress"].iter().all(|k| {
        let macs = list(ini, "Match", k);
        macs.is_empty() || macs.iter().any(|m| m.eq_ignore_ascii_case(&mac))
    });
    let types = list(ini, "Match", "Type");
    let type_ok = types.is_empty() || types.iter().any(|t| t == "ether");
    name_ok && mac_ok && type_ok
}

/// The last valid `KeepConfiguration=` of the file's `[Network]` and its drop-ins'.
fn keep(ini: &Ini) -> Keep {
    ini.section_all(Some("Network"))
        .flat_map(|s| s.get_all("KeepConfiguration"))
        .filter_map(Keep::parse)
        .next_back()
        .unwrap_or(Keep::No)
}

/// One finding per managed interface networkd configures.
pub(super) fn check(links: &[LinkFile]) -> Vec<Finding> {
    links.iter().filter_map(check_one).collect()
}

fn check_one(l: &LinkFile) -> Option<Finding> {
    let file = l.file.as_ref()?;
    let check = format!("networkd {} KeepConfiguration", l.name);
    if l.keep.keeps_static() {
        return Some(Finding::ok(
            check,
            format!(
                "{} keeps {}'s static addresses and routes at a restart and a reload; \
                 `networkctl reconfigure {}` still removes and adds them back",
                file.display(),
                l.name,
                l.name
            ),
        ));
    }
    Some(
        Finding::new(
            check,
            Severity::Warning,
            format!(
                "{} configures {} without KeepConfiguration=static: a networkd restart, a \
                 reload after a changed .network file and `networkctl reconfigure {}` remove \
                 its address and add it back (4-76 ms with networkd 252), and the kernel \
                 flushes enipin's routes through {} with it; `enipin watch` puts them back",
                file.display(),
                l.name,
                l.name,
                l.name
            ),
        )
        .fix(fix()),
    )
}

#[cfg(test)]
mod tests {
    use super::{super::host::scratch::Root, *};

    const MAC: MacAddr = [2, 0, 0, 0, 0, 0x11];

    fn links(r: &Root) -> Vec<LinkFile> {
        read(r.path(), &[("eth1".to_owned(), MAC)])
    }

    #[test]
    fn the_first_matching_file_in_name_order_is_the_links_with_its_keep_configuration() {
        let r = Root::new("nd-links");
        // netplan's file sorts before the catch-all and names the link by its permanent MAC.
        r.write(
            "/usr/lib/systemd/network/99-default.network",
            "[Match]\nName=*\n[Network]\nKeepConfiguration=static\n",
        )
        .write(
            "/run/systemd/network/10-netplan-eth1.network",
            "[Match]\nPermanentMACAddress=02:00:00:00:00:11\nName=eth1\n\n[Network]\nAddress=198.18.0.11/24\n",
        )
        .write(
            "/run/systemd/network/05-other.network",
            "[Match]\nName=!eth1 eth9\n[Network]\nKeepConfiguration=yes\n",
        )
        .write(
            "/run/systemd/network/06-other-mac.network",
            "[Match]\nMACAddress=02:00:00:00:00:99\n",
        )
        // systemd's own, matching by type alone: not an ENI's.
        .write(
            "/usr/lib/systemd/network/07-wifi-adhoc.network",
            "[Match]\nType=wlan\nWLANInterfaceType=ad-hoc\n",
        );
        let l = links(&r);
        assert!(
            l[0].file
                .as_ref()
                .unwrap()
                .ends_with("10-netplan-eth1.network"),
            "{l:?}"
        );
        assert_eq!(l[0].keep, Keep::No);
        let f = check(&l);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].meaning.contains("networkctl reconfigure eth1"),
            "{f:?}"
        );
        let fix = f[0].fix.as_ref().unwrap();
        assert!(
            fix.contains(super::super::networkd_conf::DROP_IN_BODY)
                && fix.contains("KeepConfiguration=static"),
            "{fix}"
        );

        // A drop-in of the file, in any directory, sets it; the last valid value wins.
        r.write(
            "/etc/systemd/network/10-netplan-eth1.network.d/50-keep.conf",
            "[Network]\nKeepConfiguration=static\nKeepConfiguration=bogus\n",
        );
        let f = check(&links(&r));
        assert_eq!(f[0].severity, Severity::Ok, "{f:?}");
        assert!(
            f[0].meaning.contains("reconfigure eth1` still removes"),
            "{f:?}"
        );
    }

    #[test]
    fn etc_masks_a_file_of_the_same_name_and_no_match_means_no_finding() {
        let r = Root::new("nd-links-mask");
        r.write(
            "/run/systemd/network/10-eth1.network",
            "[Match]\nName=eth*\n[Network]\nKeepConfiguration=no\n",
        )
        .write(
            "/etc/systemd/network/10-eth1.network",
            "[Match]\nName=eth1\n[Network]\nKeepConfiguration=yes\n",
        );
        let l = links(&r);
        assert!(
            l[0].file
                .as_ref()
                .unwrap()
                .starts_with(r.path().join("etc"))
        );
        assert_eq!(l[0].keep, Keep::Yes);
        let r = Root::new("nd-links-none");
        r.write(
            "/etc/systemd/network/10-eth0.network",
            "[Match]\nName=eth0\n",
        );
        let l = links(&r);
        assert_eq!(l[0].file, None);
        assert!(check(&l).is_empty());
    }

    /// AL2023: amazon-ec2-net-utils links `70-IFACE.network` to the catch-all and matches it to
    /// the ENI's MAC in a drop-in; until it has done so for eth1, the catch-all is eth1's.
    #[test]
    fn a_files_match_includes_its_drop_ins() {
        let r = Root::new("nd-al2023");
        let catch_all = "/usr/lib/systemd/network/80-ec2.network";
        r.write(
            catch_all,
            "[Match]\nDriver=ena ixgbevf vif\n[Network]\nDHCP=yes\n",
        )
        .link(
            "/run/systemd/network/70-eth0.network",
            r.path().join(&catch_all[1..]).to_str().unwrap(),
        )
        .write(
            "/run/systemd/network/70-eth0.network.d/eni.conf",
            "[Match]\nMACAddress=02:00:00:00:00:10\n[Network]\nDHCP=yes\n",
        );
        let file = |r: &Root| links(r)[0].file.clone().unwrap();
        assert!(file(&r).ends_with("80-ec2.network"), "{:?}", links(&r));
        r.link(
            "/run/systemd/network/70-eth1.network",
            r.path().join(&catch_all[1..]).to_str().unwrap(),
        )
        .write(
            "/run/systemd/network/70-eth1.network.d/eni.conf",
            "[Match]\nMACAddress=02:00:00:00:00:11\n",
        );
        assert!(file(&r).ends_with("70-eth1.network"), "{:?}", links(&r));
    }
}
