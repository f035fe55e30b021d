//! The TC egress enforcer's loader: load, pin, attach, fill the owner maps, read the counters.
//! It is the second applier of the one desired state (the first is [`crate::apply`]).
//!
//! Everything enipin puts in the kernel for the datapath lives under the pin directory, so the
//! enforcement outlives the `enipin attach` process and a later run finds it again:
//! - the maps, pinned by name (`ENIPIN_OWN4`, ..., see [`enipin_ebpf::maps`]): counters and owners
//!   survive a program reload;
//! - `prog`: the classifier;
//! - `link-<ifindex>`: one TCX link per managed interface (kernels >= 6.6);
//! - `nl-<ifindex>-<priority>-<handle>/`: an empty directory marking a netlink (clsact) filter
//!   on kernels without TCX (< 6.6), which cannot be pinned; priority and handle identify exactly
//!   enipin's filter for an in-place replace or removal.

mod apply;
mod attach;
mod contents;
mod derived;
mod observe;
mod pins;
mod plan;
mod program;

use attach::*;
use contents::*;
use derived::*;
use pins::*;
use plan::*;
use program::*;

pub use apply::{apply, detach};
pub use attach::{force_netlink_on_this_thread, ifname};
pub use derived::sync_derived;
pub use observe::{TableSummary, attached, counters, owner_table, table_summary};
pub use plan::{EbpfPlan, plan};
pub use program::{OBJECT, load, program_id};
