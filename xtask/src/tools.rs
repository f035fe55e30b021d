//! `.tools/`, where setup puts what CI and the tests need beside the system's own (toolchains'
//! helpers, bpf-linker, the private apt indexes, kernels, Python packages).

use std::{env, ffi::OsString, path::PathBuf};

use crate::root;

pub(crate) fn tools_dir() -> PathBuf {
    root().join(".tools")
}

pub(crate) fn path_with_tools() -> OsString {
    let mut paths = vec![tools_dir().join("bin")];
    paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    env::join_paths(paths).expect("PATH entries contain no separator")
}
