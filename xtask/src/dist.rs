//! `cargo xtask dist`: the artifacts an operator installs, for x86_64 and for arm64 (Graviton),
//! in `target/dist/`:
//!
//! - `enipin-<v>-<arch>-unknown-linux-musl.tar.gz`: the static binary (eBPF object embedded),
//!   completions, man pages, the unit, the example config, the licences, the alert rules, the
//!   Kubernetes manifests (`kubernetes/`: deploy/kubernetes/, a kustomize base, its component
//!   and overlay), the EC2 user-data (`cloud-init/user-data.yaml`) and the Grafana dashboard
//!   (`grafana/enipin.json`);
//! - `enipin_<v>_<amd64|arm64>.deb` (cargo-deb) and `enipin-<v>-1.<x86_64|aarch64>.rpm`
//!   (cargo-generate-rpm), from the same staged files (enipin/Cargo.toml's `[package.metadata.*]`);
//! - `enipin-<v>.oci.tar`: one OCI image index (amd64 and arm64) of images FROM scratch (buildah,
//!   offline), entrypoint `enipin`, command `watch`.
//!
//! Everything is staged first in `target/dist/stage/` (no version in the path, so the package
//! metadata names fixed paths): the x86_64 binary for the x86_64 packages, then the arm64 binary
//! in its place. Completions and man pages come from the x86_64 binary (the host runs it; they
//! are text, the same for both). Every artifact is rebuilt on each run.

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

/// One architecture's names in each ecosystem.
struct Platform {
    rust_target: &'static str,
    /// Debian's and the OCI's (`amd64`, `arm64`).
    deb_arch: &'static str,
    /// RPM's (`x86_64`, `aarch64`).
    rpm_arch: &'static str,
}

/// The host's (first: its binary writes the completions and man pages) and Graviton's.
const PLATFORMS: [Platform; 2] = [
    Platform {
        rust_target: setup::MUSL_TARGET,
        deb_arch: "amd64",
        rpm_arch: "x86_64",
    },
    Platform {
        rust_target: setup::ARM64_TARGET,
        deb_arch: "arm64",
        rpm_arch: "aarch64",
    },
];

impl Platform {
    /// The tarball, the .deb and the .rpm.
    fn artifacts(&self) -> [String; 3] {
        [
            format!("enipin-{VERSION}-{}.tar.gz", self.rust_target),
            format!("enipin_{VERSION}_{}.deb", self.deb_arch),
            format!("enipin-{VERSION}-1.{}.rpm", self.rpm_arch),
        ]
    }
}

/// The multi-architecture image.
fn image_name() -> String {
    format!("enipin-{VERSION}.oci.tar")
}

/// The artifacts' file names, in the order they are built.
pub(crate) fn artifacts() -> Vec<String> {
    let mut names: Vec<String> = PLATFORMS.iter().flat_map(|p| p.artifacts()).collect();
    names.push(image_name());
    names
}

pub(crate) fn run_dist() -> Result<()> {
    let started = std::time::Instant::now();
    let dist = dist_dir();
    let stage = dist.join("stage");
    if dist.exists() {
        fs::remove_dir_all(&dist).with_context(|| format!("clearing {}", dist.display()))?;
    }
    fs::create_dir_all(&stage)?;
    let mut bins = Vec::new();
    for platform in &PLATFORMS {
        let t = std::time::Instant::now();
        bins.push(build_static(platform.rust_target)?);
        eprintln!(
            "dist: {} built in {:.0} s",
            platform.rust_target,
            t.elapsed().as_secs_f64()
        );
    }
    same_ebpf_object(&bins)?;
    stage_files(&bins[0], &stage)?;
    for (platform, bin) in PLATFORMS.iter().zip(&bins) {
        fs::copy(bin, stage.join("enipin"))?;
        package(platform, &stage, &dist)?;
    }
    build_index(&bins, &dist.join(image_name()))?;
    for name in artifacts() {
        let len = fs::metadata(dist.join(&name))?.len();
        eprintln!("dist: {name} {:.1} MiB", len as f64 / 1048576.0);
    }
    eprintln!("dist: built in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The tarball, the .deb and the .rpm of `platform` from the stage (its binary staged).
fn package(platform: &Platform, stage: &Path, dist: &Path) -> Result<()> {
    let [tarball, deb, rpm] = platform.artifacts();
    pack_tarball(stage, platform.rust_target, &dist.join(&tarball))?;
    // --target only names the architecture (the binary is staged, not built by cargo-deb).
    run(cargo()
        .args(["deb", "-p", "enipin", "--no-build", "--no-strip"])
        .args(["--target", platform.rust_target, "--output"])
        .arg(dist.join(&deb)))?;
    run(cargo()
        .args(["generate-rpm", "-p", "enipin", "--arch", platform.rpm_arch])
        .arg("--output")
        .arg(dist.join(&rpm)))
}

/// The release build for musl: no libc to find on the host, so one binary runs on every
/// distribution and in an image with nothing else in it.
fn build_static(target: &str) -> Result<PathBuf> {
    let mut cmd = cargo();
    // Symbols stripped from enipin's own binary only (the embedded eBPF object keeps its BTF:
    // it is data inside the binary, built by its own cargo run).
    cmd.args(["build", "--release", "--target", target])
        .args(["-p", "enipin", "--bin", "enipin", "--config"])
        .arg("profile.release.package.enipin.strip=\"symbols\"");
    if target != setup::MUSL_TARGET {
        // rustc finds its own rust-lld; the target's self-contained crt objects and libc.a do
        // the rest (see setup::ARM64_TARGET). The host's cc would link x86_64 objects only.
        let var = format!(
            "CARGO_TARGET_{}_LINKER",
            target.to_uppercase().replace('-', "_")
        );
        cmd.env(var, "rust-lld");
    }
    run(&mut cmd)?;
    let bin = root().join("target").join(target).join("release/enipin");
    let file = output(Command::new("file").arg(&bin))?;
    if !file.contains("statically linked") && !file.contains("static-pie linked") {
        bail!("{} is not static: {file}", bin.display());
    }
    Ok(bin)
}

/// The eBPF object embedded in each binary loads the same: its allocated sections (the programs'
/// instructions, the maps, the read-only data, the licence) are byte for byte equal. The whole
/// object is not: aya-build passes the target's `bpf_target_arch` to the program's build, which
/// picks `aya_ebpf_bindings::<arch>`, and that module path is in the BTF and DWARF type names
/// (`aya_ebpf_bindings::aarch64::bindings::__sk_buff`: 40 bytes more in the arm64 object, the
/// classifier's instructions the same).
fn same_ebpf_object(bins: &[PathBuf]) -> Result<()> {
    let loaded: Vec<Vec<u8>> = bins
        .iter()
        .map(|b| {
            let object = embedded_bpf_object(&fs::read(b)?)?;
            allocated_sections(&object)
        })
        .collect::<Result<_>>()?;
    if loaded.windows(2).any(|w| w[0] != w[1]) {
        bail!("the binaries embed eBPF objects whose programs or maps differ");
    }
    eprintln!(
        "dist: the same eBPF programs and maps ({} bytes of allocated sections) in both binaries",
        loaded[0].len()
    );
    Ok(())
}

/// The contents of `object`'s sections flagged SHF_ALLOC (2), in order: what the loader takes.
fn allocated_sections(object: &[u8]) -> Result<Vec<u8>> {
    let word =
        |at: usize| -> Result<u64> { Ok(u64::from_le_bytes(object[at..at + 8].try_into()?)) };
    let half = |at: usize| u16::from_le_bytes([object[at], object[at + 1]]) as usize;
    let (shoff, shentsize, shnum) = (word(40)? as usize, half(58), half(60));
    let mut out = Vec::new();
    for i in 0..shnum {
        let header = shoff + i * shentsize;
        let (flags, offset, size) = (word(header + 8)?, word(header + 24)?, word(header + 32)?);
        // SHT_NOBITS (8) has no bytes in the file.
        let nobits = u32::from_le_bytes(object[header + 4..header + 8].try_into()?) == 8;
        if flags & 2 != 0 && !nobits {
            out.extend_from_slice(&object[offset as usize..(offset + size) as usize]);
        }
    }
    Ok(out)
}

/// The one 64-bit little-endian ELF of machine EM_BPF (247) inside `binary`: from its header to
/// the end of its section header table (where LLVM puts it, last).
fn embedded_bpf_object(binary: &[u8]) -> Result<Vec<u8>> {
    const MAGIC: &[u8] = b"\x7fELF\x02\x01";
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as usize;
    let mut found = Vec::new();
    // Offset 0 is the binary's own header.
    for at in 1..binary.len().saturating_sub(64) {
        let elf = &binary[at..];
        if !elf.starts_with(MAGIC) || u16_at(elf, 18) != 247 {
            continue;
        }
        let shoff = u64::from_le_bytes(elf[40..48].try_into()?) as usize;
        let end = shoff + u16_at(elf, 60) * u16_at(elf, 58);
        if end <= elf.len() {
            found.push(elf[..end].to_vec());
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => bail!("{n} embedded eBPF objects, expected 1"),
    }
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
    copy(root().join("CHANGELOG.md"), "CHANGELOG.md")?;
    let changelog = fs::read_to_string(root().join("CHANGELOG.md"))?;
    // Beside the stage, not in it: the tarball has CHANGELOG.md.
    fs::write(
        dist_dir().join("changelog.Debian"),
        debian_changelog(&changelog)?,
    )?;
    // The alert rules, for the operator's Prometheus (README: "Alert rules").
    copy(
        root().join("deploy/prometheus/enipin-rules.yml"),
        "enipin-rules.yml",
    )?;
    // The deployment recipes (README: "Install"; docs/kubernetes.md, docs/ec2.md), whole: the
    // overlays name the base by relative path.
    copy_tree(&root().join("deploy/kubernetes"), &stage.join("kubernetes"))?;
    copy_tree(&root().join("deploy/cloud-init"), &stage.join("cloud-init"))?;
    // The Grafana dashboard (docs/metrics.md: "Grafana dashboard").
    copy_tree(&root().join("deploy/grafana"), &stage.join("grafana"))?;
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

/// The .deb's changelog (Debian's format, which `dpkg-parsechangelog` and `apt changelog` read)
/// from CHANGELOG.md: each `## <version> - <YYYY-MM-DD>` section becomes an entry, its `- `
/// items the entry's `* ` lines.
fn debian_changelog(markdown: &str) -> Result<String> {
    let manifest: toml::Table =
        toml::from_str(&fs::read_to_string(root().join("enipin/Cargo.toml"))?)?;
    let deb = &manifest["package"]["metadata"]["deb"];
    let maintainer = deb["maintainer"]
        .as_str()
        .context("enipin/Cargo.toml has no package.metadata.deb.maintainer")?;
    // The .deb's Version is `<version>-<revision>`: dpkg takes the newest entry's for it.
    let revision = deb
        .get("revision")
        .and_then(|r| r.as_str())
        .context("enipin/Cargo.toml has no package.metadata.deb.revision")?;
    let mut out = String::new();
    for section in markdown.split("\n## ").skip(1) {
        let (heading, body) = section.split_once('\n').unwrap_or((section, ""));
        let (version, date) = heading.split_once(" - ").with_context(|| {
            format!("CHANGELOG.md: `## {heading}` is not `## <version> - <date>`")
        })?;
        let date = output(Command::new("date").args(["-R", "-u", "-d", date.trim()]))?;
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "enipin ({version}-{revision}) unstable; urgency=medium\n\n"
        ));
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let item = match line.strip_prefix("- ") {
                Some(first) => format!("  * {first}"),
                None => format!("  {line}"),
            };
            out.push_str(item.replace("**", "").trim_end());
            out.push('\n');
        }
        out.push_str(&format!("\n -- {maintainer}  {}\n", date.trim()));
    }
    // The newest entry is this version's: a release without its changelog is not built.
    if !out.starts_with(&format!("enipin ({VERSION}-{revision})")) {
        bail!("CHANGELOG.md's first `## <version> - <date>` section is not {VERSION}'s");
    }
    Ok(out)
}

/// Copies the files under `from` into `to`, directories included. Symlinks are left out: a
/// manifest shipped is a file of its own, never a link into the tree it came from.
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

fn pack_tarball(stage: &Path, rust_target: &str, out: &Path) -> Result<()> {
    let top = format!("enipin-{VERSION}-{rust_target}");
    run(Command::new("tar")
        .arg("-C")
        .arg(stage.parent().context("the stage has a parent")?)
        .args(["--owner=0", "--group=0", "--sort=name"])
        .arg(format!("--transform=s,^stage,{top},"))
        .arg("-czf")
        .arg(out)
        .arg("stage"))
}

/// The OCI image index: one image per platform, in buildah's local storage under names of this
/// run's own (other builds may share the storage), pushed together, then removed.
fn build_index(bins: &[PathBuf], out: &Path) -> Result<()> {
    let list = format!("localhost/enipin-dist-{}", std::process::id());
    let images: Vec<String> = PLATFORMS
        .iter()
        .map(|p| format!("{list}-{}", p.deb_arch))
        .collect();
    run(Command::new("buildah").args(["manifest", "create", &list]))?;
    let result = (|| {
        for ((platform, bin), image) in PLATFORMS.iter().zip(bins).zip(&images) {
            build_image(platform.deb_arch, bin, image)?;
            run(Command::new("buildah")
                .args(["manifest", "add", &list])
                .arg(format!("containers-storage:{image}")))?;
        }
        // The list names its images: they stay in the storage until it is pushed.
        run(Command::new("buildah")
            .args(["manifest", "push", "--all", "--quiet", &list])
            .arg(format!("oci-archive:{}:enipin:{VERSION}", out.display())))
    })();
    let _ = Command::new("buildah")
        .args(["manifest", "rm", &list])
        .output();
    let _ = Command::new("buildah").arg("rmi").args(&images).output();
    result
}

/// FROM scratch: the static binary is the whole image (no base image to pull: builds offline).
/// Committed to buildah's storage as `name`.
fn build_image(arch: &str, bin: &Path, name: &str) -> Result<()> {
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
            "--os",
            "linux",
            "--arch",
            arch,
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
        run(Command::new("buildah").args(["commit", "--quiet", "--rm", ctr, name]))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// CHANGELOG.md becomes a changelog dpkg reads: this version's entry first, dated as
    /// Debian's policy wants (RFC 5322), every item a `*` line.
    #[test]
    fn the_debian_changelog_is_changelog_md_in_dpkgs_format() {
        let markdown = "# Changelog\n\n## 9.9.9 - 2026-12-07\n\n- One **thing**,\n  on two lines.\n- Two.\n\n## 9.9.8 - 2026-01-02\n\n- Older.\n";
        let err = debian_changelog(markdown).unwrap_err();
        assert!(format!("{err:#}").contains(VERSION), "{err:#}");
        let ours = markdown.replace("9.9.9", VERSION);
        let text = debian_changelog(&ours).unwrap();
        let first = format!(
            "enipin ({VERSION}-1) unstable; urgency=medium\n\n  * One thing,\n    on two lines.\n  \
             * Two.\n\n -- The enipin authors <enipin@users.noreply.github.com>  Mon, 07 Dec 2026 \
             00:00:00 +0000\n"
        );
        assert!(text.starts_with(&first), "{text}");
        assert!(
            text.ends_with("Fri, 02 Jan 2026 00:00:00 +0000\n"),
            "{text}"
        );
        let dir = std::env::temp_dir().join(format!("xtask-changelog-{}", std::process::id()));
        fs::write(&dir, &text).unwrap();
        let parsed = output(
            Command::new("dpkg-parsechangelog")
                .arg("-l")
                .arg(&dir)
                .args(["-S", "Version"]),
        );
        let _ = fs::remove_file(&dir);
        assert_eq!(
            parsed.unwrap().trim(),
            format!("{VERSION}-1"),
            "the .deb's Version"
        );
    }
}
