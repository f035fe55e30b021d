//! Test harness.
pub mod bench;
pub mod frames;
pub use enipin::testbed;
pub fn enipin_bin() -> anyhow::Result<std::path::PathBuf> { Ok(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/enipin")) }
