//! The rules layer's decisions: which interfaces enipin manages and why ([`verdict`]), the grace
//! of an interface whose address blinks ([`grace`]), the desired rules, routes, sysctls and
//! connmark table and their diff with what is installed ([`plan`]).

pub(crate) mod address;
pub(crate) mod grace;
pub mod plan;
pub(crate) mod select;
pub(crate) mod verdict;
