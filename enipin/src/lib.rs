//! enipin: pins every reply to the network interface (ENI) that owns its source address.
//!
//! One model for every change: [`discover`] reads the kernel's state over netlink, [`plan`] turns
//! it and the [`config::Config`] into one desired state and diffs it with what is installed,
//! [`apply`] carries the difference out (rolling back on failure), and [`ebpf`] is the second
//! applier, for the TC egress enforcer. [`snapshot`] is the connect + discover + select every
//! command starts with; [`commands`] are `attach`, `detach` and `status`.

pub mod apply;
pub mod commands;
pub mod config;
pub mod discover;
pub mod ebpf;
pub mod http;
pub mod lab;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod plan;
pub mod render;
pub mod route;
pub mod snapshot;
pub mod state;
pub mod sysctl;
/// Public with the `testing` feature: for the lab, which lives in this crate, and for
/// enipin-tests; not part of enipin's API otherwise.
#[cfg(feature = "testing")]
pub mod testbed;
#[cfg(not(feature = "testing"))]
mod testbed;
pub mod watch;
