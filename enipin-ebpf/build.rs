//! Rebuilds the eBPF program when bpf-linker changes.

use which::which;

/// Rebuild the program when bpf-linker changes (a new LLVM can change the object).
/// enipin's build.rs puts the project's own tools directory first on PATH.
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
