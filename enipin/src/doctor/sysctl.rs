//! `rp_filter`, `arp_ignore` and `arp_announce` of the managed interfaces: the effective value
//! now, and the value the host's sysctl.d files set at the next boot (and whenever udev re-runs
//! systemd-sysctl for an interface that comes back), read as systemd-sysctl reads them.
//!
//! systemd-sysctl: files sorted by name across /etc, /run, /usr/local/lib, /usr/lib, /lib
//! (`sysctl.d`), the same name in an earlier directory masking later ones; the last assignment
//! of a key wins; a key may be a glob (`net.ipv4.conf.*.rp_filter`) and an explicit assignment
//! beats any glob; a leading `-` only silences a failure; `/` and `.` swap when the key's first
//! separator is `/`. A new interface starts from `default`'s values.

use std::{collections::BTreeMap, path::Path};

use super::{Finding, Severity, host};
use crate::{model::ManagedInterface, model::sysctl::Knob};

const DIRS: [&str; 5] = [
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
];

/// What enipin sets (see [`crate::model::sysctl::wanted`]): loose rp_filter, per-interface ARP.
fn wanted(knob: Knob) -> u32 {
    match knob {
        Knob::RpFilter => 2,
        Knob::ArpIgnore => 1,
        Knob::ArpAnnounce => 2,
    }
}

/// One assignment of a sysctl.d file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Assignment {
    /// In path form, as systemd keys it: `net/ipv4/conf/eth0.100/rp_filter`.
    pub key: String,
    pub value: String,
    pub glob: bool,
    /// `FILE:LINE`.
    pub source: String,
}

/// Every assignment of the sysctl.d files under `root`, in the order they are applied.
pub(super) fn boot(root: &Path) -> Vec<Assignment> {
    let mut out = Vec::new();
    for file in host::config_files(root, &DIRS, ".conf") {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let key = normalize(key.trim().trim_start_matches('-'));
            out.push(Assignment {
                glob: key.contains(['*', '?', '[']),
                key,
                value: value.trim().to_owned(),
                source: format!("{}:{}", file.display(), n + 1),
            });
        }
    }
    out
}

/// systemd's `sysctl_normalize`: dots are separators unless the first separator is a slash
/// (then the dots belong to names, as in `net/ipv4/conf/eth0.100/rp_filter`).
fn normalize(key: &str) -> String {
    let first = key.find(['.', '/']);
    if first.is_some_and(|i| key.as_bytes()[i] == b'/') {
        key.to_owned()
    } else {
        key.chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect()
    }
}

/// The value `key` gets at boot: its last explicit assignment, else the last glob matching it.
fn at_boot<'a>(boot: &'a [Assignment], key: &str) -> Option<&'a Assignment> {
    boot.iter()
        .rev()
        .find(|a| !a.glob && a.key == key)
        .or_else(|| {
            boot.iter()
                .rev()
                .find(|a| a.glob && glob::Pattern::new(&a.key).is_ok_and(|p| p.matches(key)))
        })
}

fn key(scope: &str, knob: Knob) -> String {
    format!("net/ipv4/conf/{scope}/{}", knob.name())
}

/// An interface's value at boot: its own, else what it inherits from `default` at creation.
fn iface_at_boot<'a>(boot: &'a [Assignment], ifname: &str, knob: Knob) -> Option<&'a Assignment> {
    at_boot(boot, &key(ifname, knob)).or_else(|| at_boot(boot, &key("default", knob)))
}

/// The values now, keyed by `all/rp_filter`, `eth1/arp_ignore`, ... (read in this namespace).
pub(super) fn now(managed: &[ManagedInterface]) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let scopes = std::iter::once("all").chain(managed.iter().map(|m| m.name.as_str()));
    for scope in scopes {
        for knob in Knob::ALL {
            let p = format!("/proc/sys/net/ipv4/conf/{scope}/{}", knob.name());
            if let Some(v) = std::fs::read_to_string(p)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                out.insert(format!("{scope}/{}", knob.name()), v);
            }
        }
    }
    out
}

/// One finding per managed interface and knob. `boot` is `None` when the boot-time files are
/// not this namespace's (and no `--root` was given).
pub(super) fn check(
    managed: &[ManagedInterface],
    now: &BTreeMap<String, u32>,
    boot: Option<&Vec<Assignment>>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in managed {
        for knob in Knob::ALL {
            out.push(one(m, knob, now, boot));
        }
    }
    out
}

fn one(
    m: &ManagedInterface,
    knob: Knob,
    now: &BTreeMap<String, u32>,
    boot: Option<&Vec<Assignment>>,
) -> Finding {
    let name = &m.name;
    let k = knob.name();
    let check = format!("sysctl {name} {k}");
    let sysctl_key = format!("net.ipv4.conf.{name}.{k}");
    let want = wanted(knob);
    let own = now.get(&format!("{name}/{k}")).copied();
    // rp_filter's effective value is the larger of `all` and the interface's.
    let effective = |all: Option<u32>, own: Option<u32>| match knob {
        Knob::RpFilter => all.max(own),
        _ => own,
    };
    let cur = effective(now.get(&format!("all/{k}")).copied(), own);
    let mut severity = Severity::Ok;
    let mut parts = Vec::new();
    match cur {
        Some(v) if bad(knob, v) => {
            severity = Severity::Warning;
            parts.push(format!(
                "{v} now{}: {}; `enipin attach` sets {sysctl_key}={want}",
                if knob == Knob::RpFilter {
                    " (the larger of all and the interface)"
                } else {
                    ""
                },
                harm(knob)
            ));
        }
        Some(v) => parts.push(format!("{v} now")),
        None => parts.push("unreadable now".to_owned()),
    }
    let Some(boot) = boot else {
        parts.push("next boot not checked (the host namespace's sysctl.d; pass --root /)".into());
        return Finding::new(check, severity, parts.join("; "));
    };
    let all_boot = (knob == Knob::RpFilter)
        .then(|| at_boot(boot, &key("all", knob)))
        .flatten();
    let own_boot = iface_at_boot(boot, name, knob);
    let parse = |a: Option<&Assignment>| a.and_then(|a| a.value.parse::<u32>().ok());
    let boot_value = effective(parse(all_boot), parse(own_boot));
    let source = [all_boot, own_boot]
        .into_iter()
        .flatten()
        .max_by_key(|a| a.value.parse::<u32>().unwrap_or(0))
        .map(|a| a.source.clone());
    let mut fix = None;
    match (boot_value, &source) {
        (Some(v), Some(src)) if bad(knob, v) => {
            // Strict rp_filter at boot drops replies until enipin runs: the outage the issue
            // is about. The ARP knobs only cost ARP flux until then.
            severity = severity.max(if knob == Knob::RpFilter {
                Severity::Conflict
            } else {
                Severity::Warning
            });
            parts.push(format!(
                "{v} at the next boot and whenever {name} comes back ({src}): {} until enipin runs",
                harm(knob)
            ));
            fix = Some(format!(
                "/etc/sysctl.d/zz-enipin.conf (sorts after the others; an explicit key beats a \
                 glob):\n{sysctl_key} = {want}"
            ));
        }
        (Some(v), Some(src)) => parts.push(format!("{v} at the next boot ({src})")),
        _ => parts.push("the kernel's default at the next boot (no sysctl.d sets it)".into()),
    }
    let f = Finding::new(check, severity, parts.join("; "));
    match fix {
        Some(x) => f.fix(x),
        None => f,
    }
}

/// Whether `v` works against enipin: strict rp_filter, ARP answering for others' addresses.
fn bad(knob: Knob, v: u32) -> bool {
    match knob {
        Knob::RpFilter => v == 1,
        k => v < wanted(k),
    }
}

fn harm(knob: Knob) -> &'static str {
    match knob {
        Knob::RpFilter => {
            "strict: packets arriving on it are dropped when the main table would route the reply \
             out of another interface"
        }
        Knob::ArpIgnore => "it answers ARP for the other interfaces' addresses (ARP flux)",
        Knob::ArpAnnounce => "its ARP requests may announce another interface's address",
    }
}

#[cfg(test)]
mod tests {
    use super::{super::host::scratch::Root, *};

    fn eth1() -> Vec<ManagedInterface> {
        vec![ManagedInterface::fixture(
            3,
            "eth1",
            vec!["198.18.0.11/24".parse().unwrap()],
        )]
    }

    fn good_now() -> BTreeMap<String, u32> {
        [
            ("all/rp_filter", 0),
            ("eth1/rp_filter", 2),
            ("eth1/arp_ignore", 1),
            ("eth1/arp_announce", 2),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    #[test]
    fn keys_are_normalised_as_systemd_does() {
        assert_eq!(
            normalize("net.ipv4.conf.eth1.rp_filter"),
            "net/ipv4/conf/eth1/rp_filter"
        );
        assert_eq!(
            normalize("net/ipv4/conf/eth0.100/rp_filter"),
            "net/ipv4/conf/eth0.100/rp_filter"
        );
        assert_eq!(
            normalize("net.ipv4.conf.eth0/100.rp_filter"),
            "net/ipv4/conf/eth0.100/rp_filter"
        );
    }

    #[test]
    fn strict_rp_filter_at_boot_from_a_glob_is_a_conflict_and_an_explicit_key_beats_it() {
        let r = Root::new("sysctl");
        r.write(
            "/usr/lib/sysctl.d/50-default.conf",
            "net.ipv4.conf.default.rp_filter = 2\n-net.ipv4.conf.*.rp_filter = 2\n",
        )
        .write(
            "/etc/sysctl.d/60-hardening.conf",
            "# CIS\nnet.ipv4.conf.*.rp_filter=1\n",
        );
        let f = check(&eth1(), &good_now(), Some(&boot(r.path())));
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].check, "sysctl eth1 rp_filter");
        assert_eq!(f[0].severity, Severity::Conflict, "{f:?}");
        assert!(
            f[0].meaning.contains("60-hardening.conf:2"),
            "{}",
            f[0].meaning
        );
        assert_eq!(
            f[0].fix.as_deref().unwrap().lines().last(),
            Some("net.ipv4.conf.eth1.rp_filter = 2")
        );
        assert!(f[1..].iter().all(|f| f.severity == Severity::Ok), "{f:?}");

        // The fix itself, in place: explicit beats the glob, whatever the order.
        r.write(
            "/etc/sysctl.d/zz-enipin.conf",
            "net.ipv4.conf.eth1.rp_filter = 2\n",
        );
        let f = check(&eth1(), &good_now(), Some(&boot(r.path())));
        assert_eq!(f[0].severity, Severity::Ok, "{f:?}");
        // `all` strict at boot: the interface's 2 still wins (the larger counts).
        r.write(
            "/etc/sysctl.d/10-all.conf",
            "net.ipv4.conf.all.rp_filter = 1\n",
        );
        let f = check(&eth1(), &good_now(), Some(&boot(r.path())));
        assert_eq!(f[0].severity, Severity::Ok, "{f:?}");
    }

    #[test]
    fn strict_rp_filter_now_is_a_warning_attach_fixes() {
        let mut now = good_now();
        // all=1 with the interface's 0: effective 1 (the larger), strict.
        now.insert("all/rp_filter".into(), 1);
        now.insert("eth1/rp_filter".into(), 0);
        now.insert("eth1/arp_ignore".into(), 0);
        let f = check(&eth1(), &now, None);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].meaning.contains("strict")
                && f[0].meaning.contains("net.ipv4.conf.eth1.rp_filter=2")
        );
        assert!(f[0].meaning.contains("next boot not checked"));
        assert_eq!(f[1].severity, Severity::Warning);
        assert!(f[1].meaning.contains("ARP flux"));
        // From `default` at boot: a new interface inherits it.
        let r = Root::new("sysctl-default");
        r.write(
            "/etc/sysctl.d/90-arp.conf",
            "net.ipv4.conf.default.arp_ignore = 0\n",
        );
        let f = check(&eth1(), &good_now(), Some(&boot(r.path())));
        assert_eq!(f[1].severity, Severity::Warning, "{f:?}");
        assert!(f[1].meaning.contains("90-arp.conf:1"));
    }
}
