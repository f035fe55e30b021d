//! The kernel wing: every socket, syscall and subprocess the control plane makes (netlink dumps
//! and changes, sysctls, the event sockets, network namespaces), returning model types. Nothing
//! above it opens a socket of its own.

pub(crate) mod caps;
pub(crate) mod capture;
pub(crate) mod claim;
pub(crate) mod discover;
pub(crate) mod dmi;
pub(crate) mod events;
pub(crate) mod netlink;
pub mod netns;
pub(crate) mod nft;
pub(crate) mod nft_events;
pub(crate) mod sysctl;
pub(crate) mod tty;
