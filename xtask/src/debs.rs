//! Tools taken from Debian's archive without installing them on the machine: each package is
//! downloaded with a private apt configuration under `.tools/apt-tools/` (apt.rs: the machine's
//! sources are never read nor changed) and unpacked into `.tools/debs/<package>/`, whose
//! `package` file (`<package> <version> <suite>`) is written last: a tool with it is complete and
//! not looked at again. Remove `.tools/debs/<package>/` to fetch the newest again.
//!
//! - `kustomize` from trixie (5.6; bookworm has none): builds deploy/kubernetes offline for the
//!   packaging tests. `.tools/bin/kustomize` links to it.
//! - `cloud-init` from bookworm (22.4.2, whose `cloud-init schema --config-file` validates a
//!   user-data file): checks deploy/cloud-init/user-data.yaml. Installed, the package would
//!   enable its boot-time units on this machine (a datasource search at every boot); unpacked,
//!   only its Python code runs, under a venv of its own with the dependencies `schema` imports
//!   pinned to bookworm's versions. `.tools/bin/cloud-init` runs it.

use std::{fs, os::unix::fs::PermissionsExt as _, path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::{
    apt::{PrivateApt, field},
    tools::tools_dir,
};

/// (package, suite).
const TOOLS: &[(&str, &str)] = &[("kustomize", "trixie"), ("cloud-init", "bookworm")];

/// What cloud-init 22.4's command line imports before `schema` runs (url_helper needs requests,
/// templater jinja2, util configobj and jsonpatch), at bookworm's versions; wheels only, so no
/// compiler runs. netifaces, oauthlib and pyserial serve datasources only.
const CLOUD_INIT_PYTHON: &[&str] = &[
    "PyYAML==6.0.1",
    "jsonschema==4.10.3",
    "requests==2.28.1",
    "jinja2==3.1.2",
    "configobj==5.0.8",
    "jsonpatch==1.32",
];

pub(crate) fn debs_dir() -> PathBuf {
    tools_dir().join("debs")
}

/// The setup step.
pub(crate) fn fetch() -> Result<()> {
    let missing: Vec<&(&str, &str)> = TOOLS
        .iter()
        .filter(|(p, _)| !debs_dir().join(p).join("package").is_file())
        .collect();
    if !missing.is_empty() {
        let suites: Vec<&str> = TOOLS.iter().map(|(_, s)| *s).collect();
        let apt = PrivateApt::new(tools_dir().join("apt-tools"), "amd64", &suites)?;
        apt.update("kustomize and cloud-init")?;
        for (package, suite) in missing {
            unpack(&apt, package, suite).with_context(|| format!("{package} from {suite}"))?;
        }
    }
    link_kustomize()?;
    cloud_init()
}

fn unpack(apt: &PrivateApt, package: &str, suite: &str) -> Result<()> {
    let fields = apt
        .show(&format!("{package}/{suite}"))?
        .with_context(|| format!("no {package} in {suite}"))?;
    let version = field(&fields, "Version").context("no Version field")?;
    eprintln!("setup: {package} {version} from {suite}");
    let dest = debs_dir().join(package);
    let work = debs_dir().join(format!("{package}.partial"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    for deb in apt.download(&[format!("{package}={version}")], &work)? {
        crate::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&work))?;
        fs::remove_file(&deb)?;
    }
    fs::write(
        work.join("package"),
        format!("{package} {version} {suite}\n"),
    )?;
    let _ = fs::remove_dir_all(&dest);
    fs::rename(&work, &dest).with_context(|| format!("moving {} in place", work.display()))
}

fn link_kustomize() -> Result<()> {
    let link = tools_dir().join("bin/kustomize");
    if link.exists() {
        return Ok(());
    }
    fs::create_dir_all(tools_dir().join("bin"))?;
    // Relative: .tools is shared by work trees that each see it at their own path.
    std::os::unix::fs::symlink("../debs/kustomize/usr/bin/kustomize", &link)
        .with_context(|| format!("linking {}", link.display()))
}

pub(crate) fn cloud_init_bin() -> PathBuf {
    tools_dir().join("bin/cloud-init")
}

fn cloud_init() -> Result<()> {
    let bin = cloud_init_bin();
    if Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    let venv = debs_dir().join("cloud-init/venv");
    crate::run(
        Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv),
    )?;
    crate::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--only-binary", ":all:"])
            .args(CLOUD_INIT_PYTHON),
    )?;
    // Paths from the script's own place, so that every work tree sharing .tools can run it.
    let script = "#!/bin/sh\n\
        # Written by `cargo xtask setup` (xtask/src/debs.rs): bookworm's cloud-init, unpacked.\n\
        d=$(dirname \"$(readlink -f \"$0\")\")/../debs/cloud-init\n\
        PYTHONPATH=\"$d/usr/lib/python3/dist-packages\" exec \"$d/venv/bin/python3\" \"$d/usr/bin/cloud-init\" \"$@\"\n";
    fs::write(&bin, script)?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
    crate::run(Command::new(&bin).arg("--version"))
}
