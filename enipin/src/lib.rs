//! enipin: pins every reply to the network interface (ENI) that owns its source address.
//!
//! The crate is built in wings, one per layer; a wing imports only the wings below it (the
//! `layers` test reads every `use crate::` and holds the code to that):
//!
//! | wing | what lives there |
//! |---|---|
//! | [`model`] | pure types: interfaces, addresses, rules, routes, sysctl keys, the installed objects |
//! | [`settings`] | what the operator asked for: defaults, the config file, flags, provenance |
//! | [`kernel`] | every socket, syscall and subprocess: netlink, sysctls, events, netns |
//! | [`routing`], [`datapath`] | the selection and the rules layer's plan; the TC egress enforcer |
//! | [`metadata`] | the cloud's metadata, merged into what the kernel showed |
//! | [`engine`] | the snapshot every command starts with, the state file, reconcile and commit |
//! | [`doctor`], [`observe`] | what will fight enipin; HTTP, logging, counter exposition |
//! | [`commands`], [`daemon`], [`lab`] | attach, detach, status, render; `watch`; the lab and its harness |
//!
//! The binary (`main.rs`, the only place clap's parser is run) sits on top.

/// What `enipin --version` prints after the name: the package version, the commit built and
/// the embedded eBPF object's SHA-256 (16 hex digits). The program's tag, which the kernel
/// computes when it loads it, is `enipin_build_info`'s `program_tag` and `enipin status`'s.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ENIPIN_COMMIT"),
    ", eBPF object sha256 ",
    env!("ENIPIN_OBJECT_SHA256"),
    ")"
);

/// A module the tests and the benchmark (enipin-tests, `testing` feature) reach into: public with
/// that feature, private to the binary without it.
macro_rules! testing_pub {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "testing")]
        pub mod $name;
        #[cfg(not(feature = "testing"))]
        #[allow(unreachable_pub)] // its `pub` items are for enipin-tests
        pub(crate) mod $name;
    )*};
}

testing_pub!(model);
pub mod kernel;
pub mod routing;
pub mod settings;
testing_pub!(datapath, metadata);
pub mod commands;
pub mod daemon;
pub mod doctor;
pub mod engine;
pub mod lab;
pub mod observe;

#[cfg(test)]
mod layers;
