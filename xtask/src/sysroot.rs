//! The arm64 guest's userland (tests/src/guest.rs builds its initramfs from it): Debian's arm64
//! packages of the commands the guest runs and the libraries they link, fetched with the private
//! arm64 apt configuration (`.tools/apt-arm64/`) and unpacked into `.tools/sysroot-arm64/`.
//! `packages`, written last, lists what was unpacked: a sysroot with it is complete. Remove the
//! directory to fetch again.
//!
//! The host's `ldd` cannot read foreign binaries, so the closure is resolved here from the
//! packages' Depends (libraries only: debconf, perl and the maintainer scripts' helpers never run
//! in the guest), and the initramfs takes each binary's NEEDED libraries from this tree.

use std::{collections::BTreeSet, fs, path::PathBuf};

use anyhow::{Context as _, Result};

use crate::{apt::PrivateApt, tools::tools_dir};

/// Debian's name of the guest's architecture.
pub(crate) const ARCH: &str = "arm64";
/// The userland's suites: bookworm, as the host's own tools of the x86 guests, with its security
/// updates (the kernel's line reads that suite too).
pub(crate) const SUITES: &[&str] = &["bookworm", "bookworm-security"];
/// The commands of the guest (as tests/src/guest.rs's HOST_TOOLS, plus busybox and dash).
const PACKAGES: &[&str] = &[
    "busybox-static",
    "dash",
    "iproute2",
    "iputils-ping",
    "nftables",
    "procps",
    "kmod",
];

/// Libraries of the closure whose packages' names do not start with `lib` (libelf needs zlib's
/// libz.so.1; the initramfs's build names any other that goes missing).
const LIBRARIES_NOT_NAMED_LIB: &[&str] = &["zlib1g"];

pub(crate) fn sysroot_dir() -> PathBuf {
    tools_dir().join(format!("sysroot-{ARCH}"))
}

/// The setup step: fetches and unpacks the userland unless it is there, from `apt` (the arm64
/// kernels' index, which holds the userland's suites too).
pub(crate) fn fetch(apt: Result<PrivateApt>) -> Result<()> {
    let dest = sysroot_dir();
    if dest.join("packages").is_file() {
        return Ok(());
    }
    let apt = apt?;
    apt.update(&format!("the {ARCH} guest userland"))?;
    let closure = closure(&apt)?;
    eprintln!("setup: {ARCH} guest userland: {} packages", closure.len());
    let work = tools_dir().join(format!("sysroot-{ARCH}.partial"));
    let _ = fs::remove_dir_all(&work);
    let debs = work.join("debs");
    fs::create_dir_all(&debs)?;
    let names: Vec<String> = closure.iter().cloned().collect();
    for deb in apt.download(&names, &debs)? {
        crate::run(
            std::process::Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(&work),
        )?;
    }
    fs::remove_dir_all(&debs)?;
    fs::write(work.join("packages"), names.join("\n") + "\n")?;
    let _ = fs::remove_dir_all(&dest);
    fs::rename(&work, &dest).with_context(|| format!("moving {} in place", work.display()))
}

/// PACKAGES and, transitively, the libraries they depend on (each clause's first alternative:
/// apt's own choice when nothing is installed).
fn closure(apt: &PrivateApt) -> Result<BTreeSet<String>> {
    let mut found = BTreeSet::new();
    let mut todo: Vec<String> = PACKAGES.iter().map(|p| p.to_string()).collect();
    while let Some(name) = todo.pop() {
        if !found.insert(name.clone()) {
            continue;
        }
        let record = apt
            .show(&name)?
            .with_context(|| format!("{name} ({ARCH}) is not in the index"))?;
        todo.extend(
            library_depends(&record)
                .into_iter()
                .filter(|d| !found.contains(d)),
        );
    }
    Ok(found)
}

/// The libraries among Pre-Depends and Depends: "libc6 (>= 2.34), libsystemd0 | libelogind0"
/// gives libc6 and libsystemd0.
fn library_depends(record: &str) -> Vec<String> {
    ["Pre-Depends", "Depends"]
        .iter()
        .filter_map(|f| crate::apt::field(record, f))
        .flat_map(|v| {
            v.split(',')
                .filter_map(|clause| clause.split('|').next())
                .filter_map(|alt| alt.split_whitespace().next())
                .map(|n| n.trim_end_matches(":any").to_string())
                .collect::<Vec<_>>()
        })
        .filter(|n| n.starts_with("lib") || LIBRARIES_NOT_NAMED_LIB.contains(&n.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn library_depends_takes_first_alternatives_and_libraries_only() {
        let record = "Package: procps\nPre-Depends: init-system-helpers (>= 1.54~)\n\
                      Depends: libc6 (>= 2.34), libproc2-0 (>= 2:4.0.2), libsystemd0 | \
                      libelogind0, debconf (>= 0.5) | debconf-2.0, libperl:any, zlib1g\n";
        assert_eq!(
            super::library_depends(record),
            ["libc6", "libproc2-0", "libsystemd0", "libperl", "zlib1g"]
        );
    }
}
