//! enipin: pins every reply to the network interface (ENI) that owns its source address.
//!
//! One model for every change: [`discover`] reads the kernel's state over netlink, [`plan`] turns
//! it and the [`config::Config`] into one desired state and diffs it with what is installed,
//! [`apply`] carries the difference out (rolling back on failure), and [`ebpf`] is the second
//! applier, for the TC egress enforcer. [`snapshot`] is the connect + discover + select every
//! command starts with; [`commands`] are `attach`, `detach` and `status`. [`settings`] lays the
//! command line over the [`config_file`] over the defaults into that `Config`.

mod address;
mod apply;
pub mod commands;
pub mod config;
pub mod config_file;
mod connmark;
mod discover;
pub mod doctor;
#[cfg(feature = "testing")]
pub mod ebpf;
#[cfg(not(feature = "testing"))]
#[allow(unreachable_pub)] // its `pub` items are for enipin-tests
mod ebpf;
mod http;
pub mod lab;
pub mod logging;
#[cfg(feature = "testing")]
pub mod metadata;
#[cfg(not(feature = "testing"))]
#[allow(unreachable_pub)] // its `pub` items are for enipin-tests
mod metadata;
pub mod metrics;
#[cfg(feature = "testing")]
pub mod model;
#[cfg(not(feature = "testing"))]
#[allow(unreachable_pub)] // its `pub` items are for enipin-tests
mod model;
mod netlink;
pub mod netns;
mod objects;
pub mod plan;
pub mod render;
mod route;
pub mod settings;
mod snapshot;
#[cfg(feature = "testing")]
pub mod state;
#[cfg(not(feature = "testing"))]
#[allow(unreachable_pub)] // its `pub` items are for enipin-tests
mod state;
mod sysctl;
/// Public with the `testing` feature: for the lab, which lives in this crate, and for
/// enipin-tests; not part of enipin's API otherwise.
#[cfg(feature = "testing")]
pub mod testbed;
#[cfg(not(feature = "testing"))]
#[allow(unreachable_pub)] // its `pub` items are for enipin-tests
mod testbed;
mod verdict;
pub mod watch;
mod watch_events;
mod watch_grace;
mod watch_metrics;
mod watch_nft;
mod watch_pace;
mod watch_report;
