//! Builds the eBPF program with the pinned nightly and embeds it (OUT_DIR/enipin).
//! `cargo xtask setup` installs that nightly and bpf-linker into `.tools/`; this script puts
//! `.tools/bin` first on PATH so a plain `cargo build` finds them.
use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};

/// The eBPF toolchain's name, from the one file that holds it.
fn ebpf_toolchain(ebpf_dir: &std::path::Path) -> anyhow::Result<String> {
    let file = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={}", file.display());
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let parsed: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    parsed
        .get("toolchain")
        .and_then(|t| t.get("channel"))
        .and_then(|c| c.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no toolchain.channel", file.display()))
}

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.parent().context("enipin/ has no parent")?;
    let ebpf_dir = root.join("enipin-ebpf");
    let toolchain = ebpf_toolchain(&ebpf_dir)?;
    let tools_bin = root.join(".tools").join("bin");
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![tools_bin.clone()];
    paths.extend(env::split_paths(&path));
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("PATH", env::join_paths(paths)?) };
    println!(
        "cargo:rerun-if-changed={}",
        tools_bin.join("bpf-linker").display()
    );

    // `enipin --version` names the commit built ("unknown" outside a git checkout). Watched
    // only where it exists: a path that does not would make every build run this script again.
    let commit = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ENIPIN_COMMIT={commit}");
    for f in ["HEAD", "refs/heads", "packed-refs"] {
        let path = root.join(".git").join(f);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }

    // The workspace's release profile has whole-program LTO for the host binaries; the eBPF
    // object keeps the profile it was measured with (bpf-linker links its crate graph whole
    // anyway), so the inner cargo gets the default back. Its codegen-units = 1 is per package.
    // SAFETY: as above.
    unsafe { env::set_var("CARGO_PROFILE_RELEASE_LTO", "false") };
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "enipin-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .map_err(|e| {
        anyhow!(
            "building the eBPF program failed: {e:#}\n\
             Run `cargo xtask setup` first: it installs {toolchain} with rust-src and \
             bpf-linker into .tools/"
        )
    })?;
    object_digest()
}

/// `enipin --version` names the embedded eBPF object by its SHA-256 (the first 16 hex digits):
/// the same on every kernel and architecture, unlike the program's tag, which the kernel
/// computes over the instructions it is given at load (`enipin_build_info`'s `program_tag`).
fn object_digest() -> anyhow::Result<()> {
    use sha2::Digest as _;
    let object = PathBuf::from(env::var("OUT_DIR")?).join("enipin");
    let bytes = std::fs::read(&object).with_context(|| format!("reading {}", object.display()))?;
    let digest = sha2::Sha256::digest(&bytes);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=ENIPIN_OBJECT_SHA256={hex}");
    Ok(())
}
