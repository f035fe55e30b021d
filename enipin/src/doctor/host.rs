//! What `doctor` reads from the host's files, as systemd reads them: configuration directories in
//! precedence order, unit enablement, and the processes of this network namespace. Everything is
//! read under a root directory (`/`, or `--root DIR` for a scratch copy in tests).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

/// `path` under `root` (`path` is absolute, as systemd spells it).
pub(super) fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The `*.{suffix}` files of `dirs` (highest precedence first) in the order systemd applies them:
/// sorted by file name across all the directories, a name in an earlier directory masking the
/// same name in later ones (`/etc` over `/run` over `/usr/lib`), and a link to /dev/null or an
/// empty file disabling the name (systemd's `conf_files_list`).
pub(super) fn config_files(root: &Path, dirs: &[&str], suffix: &str) -> Vec<PathBuf> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(under(root, dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(suffix) && !by_name.contains_key(&name) {
                by_name.insert(name, e.path());
            }
        }
    }
    by_name
        .into_values()
        .filter(|p| !masked(p) && p.is_file())
        .collect()
}

/// A link to /dev/null: systemd's way to disable a file of the same name in a lower directory.
fn masked(p: &Path) -> bool {
    fs::read_link(p).is_ok_and(|t| t == Path::new("/dev/null"))
}

/// The first of `candidates` that exists under `root` (a main configuration file: /etc's wins).
pub(super) fn first_file(root: &Path, candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(|c| under(root, c))
        .find(|p| p.is_file() && !masked(p))
}

/// Where systemd looks for system units, highest precedence first.
const UNIT_DIRS: [&str; 5] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The unit file `unit` (`policy-routes@.service`) as installed, unless masked.
pub(super) fn unit_file(root: &Path, unit: &str) -> Option<PathBuf> {
    for dir in UNIT_DIRS {
        let p = under(root, dir).join(unit);
        if masked(&p) {
            return None;
        }
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// The instances of `unit` pulled in at boot: every `*.wants/` (or `*.requires/`) entry named
/// `unit`, or `prefix@INSTANCE.suffix` for a template (`policy-routes@.service`), as
/// (name, link path); masked units are left out.
pub(super) fn wanted(root: &Path, unit: &str) -> Vec<(String, PathBuf)> {
    let (prefix, suffix) = match unit.split_once("@.") {
        Some((p, s)) => (format!("{p}@"), format!(".{s}")),
        None => (unit.to_owned(), String::new()),
    };
    let mut out = Vec::new();
    for dir in UNIT_DIRS {
        let Ok(entries) = fs::read_dir(under(root, dir)) else {
            continue;
        };
        for sub in entries.flatten() {
            let sub_name = sub.file_name().to_string_lossy().into_owned();
            if !(sub_name.ends_with(".wants") || sub_name.ends_with(".requires")) {
                continue;
            }
            let Ok(links) = fs::read_dir(sub.path()) else {
                continue;
            };
            for l in links.flatten() {
                let name = l.file_name().to_string_lossy().into_owned();
                let hit = if suffix.is_empty() {
                    name == prefix
                } else {
                    name.starts_with(&prefix)
                        && name.ends_with(&suffix)
                        && name.len() > prefix.len() + suffix.len()
                };
                if hit && !out.iter().any(|(n, _)| *n == name) && !is_masked(root, &name, unit) {
                    out.push((name, l.path()));
                }
            }
        }
    }
    out.sort();
    out
}

/// Whether the unit (or its template) is masked in /etc or /run.
fn is_masked(root: &Path, name: &str, template: &str) -> bool {
    ["/etc/systemd/system", "/run/systemd/system"]
        .iter()
        .any(|d| masked(&under(root, d).join(name)) || masked(&under(root, d).join(template)))
}

/// The instance of a template unit's name: `eth1` of `policy-routes@eth1.service`.
pub(super) fn instance(name: &str) -> Option<&str> {
    name.split_once('@')?.1.rsplit_once('.').map(|(i, _)| i)
}

/// A process: its pid, its `comm` (at most 15 bytes: `systemd-network`), the inode of its network
/// namespace (`None` when unreadable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Process {
    pub pid: u32,
    pub comm: String,
    pub netns: Option<u64>,
}

/// Every process under `<root>/proc`.
pub(super) fn processes(root: &Path) -> Vec<Process> {
    let Ok(entries) = fs::read_dir(under(root, "/proc")) else {
        return Vec::new();
    };
    let mut out: Vec<Process> = entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse().ok()?;
            let comm = fs::read_to_string(e.path().join("comm")).ok()?;
            Some(Process {
                pid,
                comm: comm.trim().to_owned(),
                netns: netns_inode(&e.path().join("ns/net")),
            })
        })
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

/// `net:[4026531840]` → 4026531840 (the link's text; it need not resolve).
pub(super) fn netns_inode(link: &Path) -> Option<u64> {
    let t = fs::read_link(link).ok()?;
    t.to_str()?
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The pid of a process named `comm` in network namespace `ns` (daemons manage only their own
/// namespace: a networkd of the host's never touches a container's rules).
pub(super) fn running(procs: &[Process], comm: &str, ns: u64) -> Option<u32> {
    procs
        .iter()
        .find(|p| p.comm == comm && p.netns == Some(ns))
        .map(|p| p.pid)
}

#[cfg(test)]
pub(super) mod scratch {
    //! Scratch roots for the unit tests: files written under a temporary directory.
    use std::path::{Path, PathBuf};

    pub(crate) struct Root(pub PathBuf);

    impl Root {
        pub(crate) fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "enipin-doctor-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }

        pub(crate) fn write(&self, path: &str, text: &str) -> &Self {
            let p = super::under(&self.0, path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
            self
        }

        pub(crate) fn link(&self, path: &str, target: &str) -> &Self {
            let p = super::under(&self.0, path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, p).unwrap();
            self
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{scratch::Root, *};

    #[test]
    fn config_files_follow_systemds_precedence_and_order() {
        let r = Root::new("files");
        r.write("/usr/lib/sysctl.d/50-default.conf", "a")
            .write("/etc/sysctl.d/50-default.conf", "b")
            .write("/run/sysctl.d/10-early.conf", "c")
            .write("/usr/lib/sysctl.d/99-late.conf", "d")
            .write("/usr/lib/sysctl.d/60-gone.conf", "e")
            .link("/etc/sysctl.d/60-gone.conf", "/dev/null")
            .write("/etc/sysctl.d/README", "not a .conf");
        let files = config_files(
            r.path(),
            &["/etc/sysctl.d", "/run/sysctl.d", "/usr/lib/sysctl.d"],
            ".conf",
        );
        let text: Vec<String> = files
            .iter()
            .map(|p| fs::read_to_string(p).unwrap())
            .collect();
        assert_eq!(text, ["c", "b", "d"]);
    }

    #[test]
    fn wanted_units_and_template_instances() {
        let r = Root::new("units");
        r.write("/usr/lib/systemd/system/policy-routes@.service", "")
            .link(
                "/etc/systemd/system/multi-user.target.wants/policy-routes@eth1.service",
                "/usr/lib/systemd/system/policy-routes@.service",
            )
            .link(
                "/run/systemd/system/sys-subsystem-net-devices-eth2.device.wants/policy-routes@eth2.service",
                "/usr/lib/systemd/system/policy-routes@.service",
            )
            .link(
                "/etc/systemd/system/timers.target.wants/nm-cloud-setup.timer",
                "/usr/lib/systemd/system/nm-cloud-setup.timer",
            )
            .link("/etc/systemd/system/nm-cloud-setup.timer", "/dev/null");
        let w = wanted(r.path(), "policy-routes@.service");
        let names: Vec<_> = w.iter().map(|(n, _)| instance(n).unwrap()).collect();
        assert_eq!(names, ["eth1", "eth2"]);
        assert!(unit_file(r.path(), "policy-routes@.service").is_some());
        assert!(
            wanted(r.path(), "nm-cloud-setup.timer").is_empty(),
            "masked"
        );
    }

    #[test]
    fn processes_and_their_namespaces() {
        let r = Root::new("procs");
        r.write("/proc/42/comm", "systemd-network\n")
            .link("/proc/42/ns/net", "net:[4026531840]")
            .write("/proc/43/comm", "NetworkManager\n")
            .link("/proc/43/ns/net", "net:[4026532000]")
            .write("/proc/self/comm", "not a pid");
        let p = processes(r.path());
        assert_eq!(p.len(), 2);
        assert_eq!(running(&p, "systemd-network", 4026531840), Some(42));
        assert_eq!(running(&p, "NetworkManager", 4026531840), None);
        assert_eq!(running(&p, "NetworkManager", 4026532000), Some(43));
    }
}
