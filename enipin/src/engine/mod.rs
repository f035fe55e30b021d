//! The engine: the snapshot every command starts with ([`snapshot`]), what the kernel cannot
//! tell back ([`state`]), and the reconcile that plans both layers and commits them ([`apply`]).

pub(crate) mod applied;
pub(crate) mod apply;
pub(crate) mod snapshot;
testing_pub!(state);
