//! The kernels of the test suite's matrix (tests/tests/kernels.rs boots each one in QEMU):
//! Debian's cloud kernels, fetched with a private apt configuration under `.tools/apt/` (the
//! machine's own sources are never read nor changed) into `.tools/kernels/<line>/`:
//!
//! - `vmlinuz`;
//! - `lib/modules/<release>/`, depmod'ed (Debian ships no modules.dep; without it nothing
//!   autoloads veth, bridge, nf_tables or cls_bpf in the guest);
//! - `package`: `<package> <version> <suite>`, written last: a line with it is complete.
//!
//! A line already fetched is not looked at again (a second setup costs no network); remove
//! `.tools/kernels/` to fetch the newest again. A line that cannot be fetched fails setup: the
//! matrix must not shrink silently.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    apt::{PrivateApt, depends, field},
    tools::tools_dir,
};

/// One line of the matrix: the newest `linux-image-cloud-<arch>` among `suites` whose version
/// starts with `prefix`.
struct Line {
    /// The directory under `.tools/kernels/` and the test's name (`kernel_6_12`).
    name: &'static str,
    /// Debian's architecture: `amd64`, or `arm64` (booted by qemu-system-aarch64).
    arch: &'static str,
    suites: &'static [&'static str],
    prefix: &'static str,
}

/// Debian's cloud flavour (no 9p, no virtiofs, but everything the lab needs as modules). The
/// metapackage depends on the one image package of its version (signed; it carries the same
/// modules as the `-unsigned` one): see [`image_packages`].
fn metapackage(arch: &str) -> String {
    format!("linux-image-cloud-{arch}")
}

/// The matrix. Debian has no 6.6-6.8 cloud kernel in any suite (it went from 6.1 to 6.12; the
/// releases in between exist only in backports as 6.16+), so the TCX line (>= 6.6) starts at 6.12.
/// `newest`: trixie-backports and sid (7.3.4 and 7.2.13 when this was written). Experimental's
/// release candidates are left out: an rc that fails would fail enipin's CI for the kernel's sake.
/// `6.1-arm64`: Graviton's kernel line. Amazon Linux 2023's default kernel is 6.1, and so is
/// Debian 12's cloud image on EC2; one arm64 line, since each costs a TCG guest several times
/// slower than an x86 one (tests/tests/kernels.rs has the measured times).
const LINES: &[Line] = &[
    Line {
        name: "5.10",
        arch: "amd64",
        suites: &["bullseye-security"],
        prefix: "5.10.",
    },
    Line {
        name: "6.1",
        arch: "amd64",
        suites: &["bookworm-security"],
        prefix: "6.1.",
    },
    Line {
        name: "6.12",
        arch: "amd64",
        suites: &["bookworm-backports", "trixie", "trixie-security"],
        prefix: "6.12.",
    },
    Line {
        name: "newest",
        arch: "amd64",
        suites: &["trixie-backports", "sid"],
        prefix: "",
    },
    Line {
        name: "6.1-arm64",
        arch: "arm64",
        suites: &["bookworm-security"],
        prefix: "6.1.",
    },
];

pub(crate) fn kernels_dir() -> PathBuf {
    tools_dir().join("kernels")
}

/// The private apt of `arch`'s lines and guest userland: `.tools/apt/` (amd64) and
/// `.tools/apt-<arch>/`, whose index holds every suite of [`suites`].
pub(crate) fn apt(arch: &str) -> Result<PrivateApt> {
    let dir = match arch {
        "amd64" => tools_dir().join("apt"),
        _ => tools_dir().join(format!("apt-{arch}")),
    };
    PrivateApt::new(dir, arch, &suites(arch))
}

/// The setup step: fetches every line not fetched yet.
pub(crate) fn fetch() -> Result<()> {
    let missing: Vec<&Line> = LINES
        .iter()
        .filter(|l| !kernels_dir().join(l.name).join("package").is_file())
        .collect();
    let mut archs: Vec<&str> = missing.iter().map(|l| l.arch).collect();
    archs.dedup();
    for arch in archs {
        let apt = apt(arch)?;
        apt.update(&format!("the {arch} kernels"))?;
        for line in missing.iter().filter(|l| l.arch == arch) {
            fetch_line(&apt, line).with_context(|| format!("kernel line {}", line.name))?;
        }
    }
    Ok(())
}

/// The suites of `arch`'s lines, and of the arm64 guest's userland (one index for both).
pub(crate) fn suites(arch: &str) -> Vec<&'static str> {
    let mut suites: Vec<&str> = LINES
        .iter()
        .filter(|l| l.arch == arch)
        .flat_map(|l| l.suites.iter().copied())
        .collect();
    if arch == crate::sysroot::ARCH {
        suites.extend(crate::sysroot::SUITES);
    }
    suites.sort();
    suites.dedup();
    suites
}

fn fetch_line(apt: &PrivateApt, line: &Line) -> Result<()> {
    let (suite, version, image) = newest(apt, line)?;
    let packages = image_packages(apt, &image, &version)?;
    eprintln!(
        "setup: kernel {}: {} {version} from {suite}",
        line.name,
        packages.join(" ")
    );
    let dest = kernels_dir().join(line.name);
    let work = kernels_dir().join(format!("{}.partial", line.name));
    let _ = fs::remove_dir_all(&work);
    let unpacked = work.join("deb");
    fs::create_dir_all(&unpacked)?;
    let specs: Vec<String> = packages.iter().map(|p| format!("{p}={version}")).collect();
    for deb in apt.download(&specs, &work)? {
        crate::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
        fs::remove_file(&deb)?;
    }
    let release = install_image(&unpacked, &work)?;
    fs::remove_dir_all(&unpacked)?;
    crate::run(Command::new("depmod").arg("-b").arg(&work).arg(&release))?;
    fs::write(work.join("package"), format!("{image} {version} {suite}\n"))?;
    let _ = fs::remove_dir_all(&dest);
    fs::rename(&work, &dest).with_context(|| format!("moving {} in place", work.display()))
}

/// The newest metapackage of the line across its suites: (suite, version, image package).
fn newest(apt: &PrivateApt, line: &Line) -> Result<(String, String, String)> {
    let mut best: Option<(String, String, String)> = None;
    for suite in line.suites {
        let Some((version, image)) = cloud_metapackage(apt, line.arch, suite)? else {
            continue;
        };
        if !version.starts_with(line.prefix) {
            continue;
        }
        let newer = match &best {
            None => true,
            Some((_, v, _)) => version_gt(&version, v)?,
        };
        if newer {
            best = Some((suite.to_string(), version, image));
        }
    }
    best.with_context(|| {
        format!(
            "no {} {}* in {}",
            metapackage(line.arch),
            line.prefix,
            line.suites.join(", ")
        )
    })
}

fn version_gt(a: &str, b: &str) -> Result<bool> {
    Ok(Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .context("running dpkg --compare-versions")?
        .success())
}

/// Moves the kernel (`boot/vmlinuz-*`, or `<modules>/<release>/vmlinuz` in the split packages
/// of 6.19 and later) and the module tree (`lib/modules`, or merged-/usr `usr/lib/modules`) of
/// the unpacked packages into `work`; returns the kernel release.
fn install_image(unpacked: &Path, work: &Path) -> Result<String> {
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| unpacked.join(d))
        .find(|d| d.is_dir())
        .context("the packages have no lib/modules")?;
    let release = single_entry(&modules)?;
    let tree = modules.join(&release);
    let vmlinuz = [
        unpacked.join("boot").join(format!("vmlinuz-{release}")),
        tree.join("vmlinuz"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .with_context(|| format!("the packages have no vmlinuz for {release}"))?;
    fs::rename(&vmlinuz, work.join("vmlinuz"))?;
    fs::create_dir_all(work.join("lib/modules"))?;
    fs::rename(&tree, work.join("lib/modules").join(&release))?;
    Ok(release)
}

fn single_entry(dir: &Path) -> Result<String> {
    let names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel release in {}: {names:?}",
            dir.display()
        ),
    }
}

/// The cloud metapackage in `suite`: (version, the image package it depends on); None if
/// absent.
fn cloud_metapackage(
    apt: &PrivateApt,
    arch: &str,
    suite: &str,
) -> Result<Option<(String, String)>> {
    let Some(fields) = apt.show(&format!("{}/{suite}", metapackage(arch)))? else {
        return Ok(None);
    };
    let version = field(&fields, "Version").context("no Version field")?;
    let image = depends(&fields)
        .into_iter()
        .find(|d| d.starts_with("linux-image-"))
        .context("the metapackage depends on no linux-image-*")?;
    Ok(Some((version, image)))
}

/// The image package and the packages of the same kernel it depends on: up to 6.18 the image
/// holds everything; from 6.19 it is empty and depends on `linux-binary-<abi>` (vmlinuz),
/// `linux-modules-<abi>` and `linux-base-<abi>` (modules.order, modules.builtin).
fn image_packages(apt: &PrivateApt, image: &str, version: &str) -> Result<Vec<String>> {
    let fields = apt
        .show(&format!("{image}={version}"))?
        .with_context(|| format!("{image} {version} is not in the index"))?;
    let abi = image.strip_prefix("linux-image-").unwrap_or(image);
    let mut packages = vec![image.to_string()];
    packages.extend(
        depends(&fields)
            .into_iter()
            .filter(|d| d.starts_with("linux-") && d.ends_with(&format!("-{abi}"))),
    );
    Ok(packages)
}
