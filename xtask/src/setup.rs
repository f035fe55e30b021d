//! Installs everything enipin's build, lab, tests and benchmark need, idempotently: a second run
//! checks and returns in seconds. Each step says what it does; a failure names the step.

use std::{
    env,
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{root, tools::tools_dir};

/// The nightly that builds the eBPF program: named once, in enipin-ebpf/rust-toolchain.toml
/// (enipin/build.rs reads the same file).
fn ebpf_toolchain() -> Result<String> {
    let text = include_str!("../../enipin-ebpf/rust-toolchain.toml");
    let parsed: toml::Table =
        toml::from_str(text).context("parsing enipin-ebpf/rust-toolchain.toml")?;
    parsed
        .get("toolchain")
        .and_then(|t| t.get("channel"))
        .and_then(|c| c.as_str())
        .map(str::to_owned)
        .context("enipin-ebpf/rust-toolchain.toml has no toolchain.channel")
}
/// bpf-linker, built against that nightly's own libLLVM (its default feature is llvm-23).
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages for the lab, the tests and the benchmark: (command, package).
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("nft", "nftables"),
    // testbed's Netns::sysctl and the lab set namespace sysctls with it.
    ("sysctl", "procps"),
    ("iperf3", "iperf3"),
    // `cargo xtask dist` and the packaging tests: the image, the container run, the packages'
    // contents, the unit's verification, the capability set, the manifests' validator.
    ("buildah", "buildah"),
    ("podman", "podman"),
    ("runc", "runc"),
    ("rpm2cpio", "rpm"),
    ("cpio", "cpio"),
    ("dpkg-deb", "dpkg"),
    // baseline.rs checks attach --dry-run --format ip and render's nmcli script with shellcheck,
    // and has netplan turn render's netplan file into networkd's.
    ("shellcheck", "shellcheck"),
    ("netplan", "netplan.io"),
    // The packaging tests read the .deb's changelog as dpkg does.
    ("dpkg-parsechangelog", "dpkg-dev"),
    ("systemd-analyze", "systemd"),
    // tests/tests/networkd.rs runs the machine's systemd-networkd (package systemd) in the
    // container and drives it with networkctl, over the container's dbus.
    ("networkctl", "systemd"),
    ("dbus-daemon", "dbus-daemon"),
    // tests/tests/systemd.rs boots the machine's systemd in a container to run the unit.
    ("systemd-nspawn", "systemd-container"),
    ("setpriv", "util-linux"),
    ("file", "file"),
    // enipin's man.rs test formats every man page with `groff -man -ww` (no warning allowed).
    ("groff", "groff-base"),
    // `promtool check metrics` lints watch's /metrics in tests/tests/watch_metrics.rs;
    // `promtool check|test rules` checks deploy/prometheus/, and the server itself scrapes watch
    // in tests/tests/prometheus.rs. One package ships both commands.
    ("promtool", "prometheus"),
    ("prometheus", "prometheus"),
    // tests/tests/kernels.rs boots Debian's kernels under TCG with an initramfs of busybox, dash
    // and the tools above; depmod indexes the fetched modules (see kernels.rs).
    ("qemu-system-x86_64", "qemu-system-x86"),
    // The arm64 line (qemu-system-aarch64 -M virt, TCG): its userland comes from Debian's arm64
    // packages (xtask/src/sysroot.rs), whose libraries readelf lists (no ldd for foreign ELF).
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("readelf", "binutils"),
    ("busybox", "busybox-static"),
    ("dash", "dash"),
    ("depmod", "kmod"),
];
/// The static binary's target (no libc on the host needed: the tarball, the packages, the image).
pub(crate) const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// The same for Graviton. It links with the toolchain's own rust-lld and the target's
/// self-contained musl objects (crt1.o, libc.a, libunwind.a ship with `rustup target add`): no
/// C cross compiler, no C dependency in the tree (xtask/src/dist.rs sets the linker).
pub(crate) const ARM64_TARGET: &str = "aarch64-unknown-linux-musl";
/// Cargo subcommands that build the .deb and the .rpm: (crate, version), into .tools/bin.
const CARGO_TOOLS: &[(&str, &str)] = &[("cargo-deb", "3.8.0"), ("cargo-generate-rpm", "0.21.1")];
/// Validates the Kubernetes manifests against schemas shipped in the package (offline).
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

pub(crate) fn run() -> Result<()> {
    let started = Instant::now();
    step("Debian packages", packages)?;
    step("eBPF toolchain", nightly)?;
    step("bpf-linker", bpf_linker)?;
    step("musl targets", musl_targets)?;
    step("cargo-deb and cargo-generate-rpm", cargo_tools)?;
    step("kubernetes-validate", kubernetes_validate)?;
    step("kernels of the matrix", crate::kernels::fetch)?;
    step("arm64 guest userland", || {
        crate::sysroot::fetch(crate::kernels::apt(crate::sysroot::ARCH))
    })?;
    step("kustomize and cloud-init", crate::debs::fetch)?;
    step("Prometheus Operator CRD schemas", crd_schemas)?;
    eprintln!("setup: ready in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn step(name: &str, f: fn() -> Result<()>) -> Result<()> {
    f().with_context(|| format!("setup step '{name}' failed"))
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn packages() -> Result<()> {
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // Commands of one package sit next to each other in PACKAGES.
    missing.dedup();
    apt_install(&missing)?;
    // A package that no longer ships the command (renamed, split) fails here, not in a test.
    let still: Vec<String> = PACKAGES
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(cmd, pkg)| format!("{cmd} (package {pkg})"))
        .collect();
    if !still.is_empty() {
        bail!(
            "installed, but still not on PATH: {} (check the packages' contents with `dpkg -L`)",
            still.join(", ")
        );
    }
    Ok(())
}

fn apt_install(packages: &[&str]) -> Result<()> {
    eprintln!("setup: installing Debian packages: {}", packages.join(" "));
    let apt = |args: &[&str]| -> Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get (is this Debian/Ubuntu, and are you root?)")?;
        if !status.success() {
            bail!("apt-get {} failed: {status}", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(packages);
    apt(&args)
}

/// The user-space toolchain (rust-toolchain.toml) with the musl standard libraries.
fn musl_targets() -> Result<()> {
    let installed = Command::new("rustup")
        .current_dir(root())
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup")?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    for target in [MUSL_TARGET, ARM64_TARGET] {
        if installed.lines().any(|l| l.trim() == target) {
            continue;
        }
        crate::run(
            Command::new("rustup")
                .current_dir(root())
                .args(["target", "add", target]),
        )?;
    }
    Ok(())
}

fn cargo_tools() -> Result<()> {
    for (name, version) in CARGO_TOOLS {
        let bin = tools_dir().join("bin").join(name);
        // `cargo deb --version` prints "cargo-deb 3.8.0"; cargo-generate-rpm likewise.
        if let Ok(out) = Command::new(&bin).arg("--version").output()
            && String::from_utf8_lossy(&out.stdout).contains(version)
        {
            continue;
        }
        eprintln!("setup: building {name} {version} (about a minute)");
        crate::run(
            Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .current_dir(root())
                .args(["install", name, "--version", version, "--locked", "--root"])
                .arg(tools_dir()),
        )?;
    }
    Ok(())
}

/// `.tools/venv/bin/kubernetes-validate`: the system's Python 3 in a venv of its own (not the
/// system's pip, not whatever python3 comes first on PATH).
pub(crate) fn kubernetes_validate_bin() -> PathBuf {
    tools_dir().join("venv/bin/kubernetes-validate")
}

fn kubernetes_validate() -> Result<()> {
    if Command::new(kubernetes_validate_bin())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    let python = "/usr/bin/python3";
    let venv = tools_dir().join("venv");
    // Debian's python3 makes a venv only with python3-venv (ensurepip) installed.
    let has_venv = Command::new(python)
        .args(["-c", "import ensurepip, venv"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_venv {
        apt_install(&["python3", "python3-venv", "python3-pip"])?;
    }
    crate::run(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
    crate::run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", KUBERNETES_VALIDATE]))
}

/// `.tools/crd-schemas/`: tests/crd/'s npm project (the PodMonitor and PrometheusRule schemas),
/// installed with `npm ci` from its lockfile, whose integrity hashes pin every package.
pub(crate) fn crd_schemas_dir() -> PathBuf {
    tools_dir().join("crd-schemas")
}

fn crd_schemas() -> Result<()> {
    let dir = crd_schemas_dir();
    let src = root().join("tests/crd");
    let lock = std::fs::read(src.join("package-lock.json"))?;
    // The lockfile npm ci leaves beside node_modules, equal to ours: already installed.
    if std::fs::read(dir.join("node_modules/.package-lock.json")).is_ok()
        && std::fs::read(dir.join("package-lock.json")).is_ok_and(|l| l == lock)
    {
        return Ok(());
    }
    if !have("npm") {
        bail!("npm is not on PATH (Debian's package npm, or the machine's Node.js)");
    }
    std::fs::create_dir_all(&dir)?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(src.join(file), dir.join(file))?;
    }
    crate::run(Command::new("npm").current_dir(&dir).args([
        "ci",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        "--silent",
    ]))
}

fn nightly() -> Result<()> {
    let toolchain = ebpf_toolchain()?;
    let installed = Command::new("rustup")
        .args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            &toolchain,
        ])
        .output()
        .context("running rustup (install it from your distribution or rustup.rs)")?;
    if installed.status.success() && String::from_utf8_lossy(&installed.stdout).contains("rust-src")
    {
        return Ok(());
    }
    eprintln!("setup: installing {toolchain} with rust-src (builds the eBPF program)");
    crate::run(Command::new("rustup").args([
        "toolchain",
        "install",
        &toolchain,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn nightly_libllvm() -> Result<PathBuf> {
    let toolchain = ebpf_toolchain()?;
    let out = Command::new("rustc")
        .args([&format!("+{toolchain}"), "--print", "sysroot"])
        .output()
        .context("asking the nightly for its sysroot")?;
    if !out.status.success() {
        bail!("rustc +{toolchain} --print sysroot failed");
    }
    let lib = PathBuf::from(String::from_utf8(out.stdout)?.trim()).join("lib");
    // The nightly ships libLLVM.so.<major>.<minor>-rust-<version>-nightly.
    let found = std::fs::read_dir(&lib)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        });
    found.with_context(|| format!("no libLLVM.so.* in {}", lib.display()))
}

fn bpf_linker() -> Result<()> {
    let bin = tools_dir().join("bin").join("bpf-linker");
    if let Ok(out) = Command::new(&bin).arg("--version").output()
        && out.status.success()
        && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    // bpf-linker links the nightly's own libLLVM: the LLVM that compiled the program's bitcode.
    let libllvm = nightly_libllvm()?;
    let prefix = tools_dir().join("llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    let versioned = libllvm.file_name().context("libLLVM has no file name")?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), versioned] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} to {}", link.display(), libllvm.display()))?;
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {} (about 2-4 minutes)",
        libllvm.display()
    );
    let started = Instant::now();
    crate::run(
        Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(root())
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--root",
            ])
            .arg(tools_dir()),
    )?;
    eprintln!(
        "setup: bpf-linker built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
