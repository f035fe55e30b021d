//! `cargo xtask dist`: the four artifacts an operator installs, in `target/dist/`:
//!
//! - `enipin-<v>-x86_64-unknown-linux-musl.tar.gz`: the static binary (eBPF object embedded),
//!   completions, man pages, the unit, the example config, the licences, the alert rules, the
//!   Kubernetes manifests (`kubernetes/`: deploy/kubernetes/, a kustomize base, its component
//!   and overlay) and the EC2 user-data (`cloud-init/user-data.yaml`);
//! - `enipin_<v>_amd64.deb` (cargo-deb) and `enipin-<v>-1.x86_64.rpm` (cargo-generate-rpm),
//!   from the same staged files (enipin/Cargo.toml's `[package.metadata.*]`);
//! - `enipin-<v>.oci.tar`: an OCI image FROM scratch (buildah, offline), entrypoint `enipin`,
//!   command `watch`.
//!
//! Everything is staged first in `target/dist/stage/` (no version in the path, so the package
//! metadata names fixed paths), and every artifact is rebuilt on each run.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, root, run, setup};

pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) fn dist_dir() -> PathBuf {
    root().join("target/dist")
}

/// The artifacts' file names, in the order they are built.
pub(crate) fn artifacts() -> [String; 4] {
    let m = setup::MUSL_TARGET;
    [
        format!("enipin-{VERSION}-{m}.tar.gz"),
        format!("enipin_{VERSION}_amd64.deb"),
        format!("enipin-{VERSION}-1.x86_64.rpm"),
        format!("enipin-{VERSION}.oci.tar"),
    ]
}

pub(crate) fn run_dist() -> Result<()> {
    let started = std::time::Instant::now();
    let dist = dist_dir();
    let stage = dist.join("stage");
    if dist.exists() {
        fs::remove_dir_all(&dist).with_context(|| format!("clearing {}", dist.display()))?;
    }
    fs::create_dir_all(&stage)?;
    let bin = build_static()?;
    stage_files(&bin, &stage)?;
    let [tarball, deb, rpm, image] = artifacts();
    pack_tarball(&stage, &dist.join(&tarball))?;
    run(cargo()
        .args([
            "deb",
            "-p",
            "enipin",
            "--no-build",
            "--no-strip",
            "--output",
        ])
        .arg(dist.join(&deb)))?;
    run(cargo()
        .args(["generate-rpm", "-p", "enipin", "--output"])
        .arg(dist.join(&rpm)))?;
    build_image(&stage.join("enipin"), &dist.join(&image))?;
    for name in artifacts() {
        let len = fs::metadata(dist.join(&name))?.len();
        eprintln!("dist: {name} {:.1} MiB", len as f64 / 1048576.0);
    }
    eprintln!("dist: built in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The release build for musl: no libc to find on the host, so one binary runs on every
/// distribution and in an image with nothing else in it.
fn build_static() -> Result<PathBuf> {
    let target = setup::MUSL_TARGET;
    // Symbols stripped from enipin's own binary only (the embedded eBPF object keeps its BTF:
    // it is data inside the binary, built by its own cargo run).
    run(cargo().args([
        "build",
        "--release",
        "--target",
        target,
        "-p",
        "enipin",
        "--bin",
        "enipin",
        "--config",
        "profile.release.package.enipin.strip=\"symbols\"",
    ]))?;
    let bin = root().join("target").join(target).join("release/enipin");
    let file = output(Command::new("file").arg(&bin))?;
    if !file.contains("statically linked") && !file.contains("static-pie linked") {
        bail!("{} is not static: {file}", bin.display());
    }
    Ok(bin)
}

fn stage_files(bin: &Path, stage: &Path) -> Result<()> {
    let copy = |from: PathBuf, to: &str| {
        fs::copy(&from, stage.join(to))
            .with_context(|| format!("copying {} to the stage", from.display()))
    };
    copy(bin.to_owned(), "enipin")?;
    copy(root().join("packaging/enipin.service"), "enipin.service")?;
    copy(root().join("packaging/enipin.toml"), "enipin.toml")?;
    copy(root().join("LICENSE-MIT"), "LICENSE-MIT")?;
    copy(root().join("LICENSE-APACHE"), "LICENSE-APACHE")?;
    // The alert rules, for the operator's Prometheus (README: "Alert rules").
    copy(
        root().join("deploy/prometheus/enipin-rules.yml"),
        "enipin-rules.yml",
    )?;
    // The deployment recipes (README: "Install"; docs/kubernetes.md, docs/ec2.md), whole: the
    // overlays name the base by relative path.
    copy_tree(&root().join("deploy/kubernetes"), &stage.join("kubernetes"))?;
    copy_tree(&root().join("deploy/cloud-init"), &stage.join("cloud-init"))?;
    let staged = stage.join("enipin");
    let completions = stage.join("completions");
    fs::create_dir_all(&completions)?;
    for (shell, name) in [
        ("bash", "enipin.bash"),
        ("zsh", "_enipin"),
        ("fish", "enipin.fish"),
    ] {
        let text = output(Command::new(&staged).args(["completions", shell]))?;
        fs::write(completions.join(name), text)?;
    }
    let man = stage.join("man");
    run(Command::new(&staged).arg("man").arg(&man))?;
    // Compressed, as Debian's policy and every man(1) expect; -n: no timestamp inside.
    for page in fs::read_dir(&man)? {
        run(Command::new("gzip").args(["-9", "-n"]).arg(page?.path()))?;
    }
    Ok(())
}

/// Copies the files under `from` into `to`, directories included. Symlinks are left out:
/// deploy/kubernetes/configmap.yaml links to base/ for a unit test in enipin/src/settings.rs that
/// still reads the ConfigMap there, and is no manifest of its own.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_symlink() {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            fs::copy(entry.path(), &dest)
                .with_context(|| format!("copying {} to the stage", entry.path().display()))?;
        }
    }
    Ok(())
}

fn pack_tarball(stage: &Path, out: &Path) -> Result<()> {
    let top = format!("enipin-{VERSION}-{}", setup::MUSL_TARGET);
    run(Command::new("tar")
        .arg("-C")
        .arg(stage.parent().context("the stage has a parent")?)
        .args(["--owner=0", "--group=0", "--sort=name"])
        .arg(format!("--transform=s,^stage,{top},"))
        .arg("-czf")
        .arg(out)
        .arg("stage"))
}

/// FROM scratch: the static binary is the whole image (no base image to pull: builds offline).
fn build_image(bin: &Path, out: &Path) -> Result<()> {
    let ctr = output(Command::new("buildah").args(["from", "scratch"]))?;
    let ctr = ctr.trim();
    let result = (|| {
        run(Command::new("buildah")
            .args(["copy", "--chmod", "0755", ctr])
            .arg(bin)
            .arg("/usr/sbin/enipin"))?;
        run(Command::new("buildah")
            .args(["copy", ctr])
            .arg(root().join("LICENSE-MIT"))
            .arg(root().join("LICENSE-APACHE"))
            .arg("/usr/share/licenses/enipin/"))?;
        run(Command::new("buildah").args([
            "config",
            "--entrypoint",
            r#"["/usr/sbin/enipin"]"#,
            "--cmd",
            "watch",
            "--label",
            &format!("org.opencontainers.image.version={VERSION}"),
            "--label",
            "org.opencontainers.image.title=enipin",
            "--label",
            "org.opencontainers.image.licenses=MIT OR Apache-2.0",
            ctr,
        ]))?;
        run(Command::new("buildah")
            .args(["commit", "--quiet", "--rm", ctr])
            .arg(format!("oci-archive:{}:enipin:{VERSION}", out.display())))
    })();
    if result.is_err() {
        let _ = Command::new("buildah").args(["rm", ctr]).output();
    }
    result
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
