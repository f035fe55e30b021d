//! The TC egress enforcer's loader: load, pin, attach, fill the owner maps, read the counters.
//! It is the second applier of the one desired state (the first is [`crate::engine::apply`]).
//!
//! Everything enipin puts in the kernel for the datapath lives under the pin directory, so the
//! enforcement outlives the `enipin attach` process and a later run finds it again:
//! - the maps, pinned by name (`ENIPIN_OWN4`, ..., see [`enipin_ebpf::maps`]): counters and owners
//!   survive a program reload;
//! - `prog`: the classifier;
//! - `link-<ifindex>`: one TCX link per managed interface (kernels >= 6.6);
//! - `nl-<ifindex>-<priority>-<handle>/`: an empty directory marking a netlink (clsact) filter
//!   on kernels without TCX (< 6.6), which cannot be pinned; priority and handle identify exactly
//!   enipin's filter for an in-place replace or removal;
//! - `netns-<inode>/`: an empty directory marking the network namespace the pins belong to.

//!
//! Modules, each depending only on those above it:
//! - `features`: what the kernel offers the datapath (`bpf_check_mtu`, the owner tables' swap,
//!   `BPF_FIB_LOOKUP_TBID`), probed;
//! - `program`: the embedded object, loading it, this build's tag, the bpffs check;
//! - `owner`: which network namespace a pin directory belongs to (`netns-<inode>`); another's
//!   is refused;
//! - `pins`: what is pinned, opened once, with the layout check against
//!   [`enipin_ebpf::layout::MAPS`];
//! - `derived`: the fast-path arrays and owner tables derived from the owner maps;
//! - `contents`: the owner/prefix/counter/config maps: desired, installed, written, restored;
//! - `attach`: TCX or netlink, chosen by one probe; finding and removing attachments;
//! - `plan`: the typed `Change`s of an [`EbpfPlan`];
//! - `apply`: carrying a plan out, all or nothing; detaching everything;
//! - `batch`: a whole per-CPU array in one syscall;
//! - `observe`: attachments, counters, owner tables, for `status`, `stats`, `metrics`; what is
//!   missing, for `watch`'s cheap check; what the kernel runs, for `detach`'s;
//! - `held`: the links `watch` holds open so that a removed pin does not detach them;
//! - `resolve`: the owners' gateways asked for before `--no-rules` hands them to the program.

mod apply;
mod attach;
mod batch;
mod contents;
mod derived;
mod features;
mod held;
mod observe;
mod owner;
mod pins;
mod plan;
mod program;
mod resolve;

#[cfg(feature = "testing")]
pub use apply::apply;
pub use apply::{Prepared, detach, prepare};
#[cfg(any(test, feature = "testing"))]
pub use attach::AttachKind;
pub(crate) use attach::{have_tcx, ifname};
#[cfg(feature = "testing")]
pub use derived::OwnerTable;
#[cfg(feature = "testing")]
pub use derived::sync_derived;
pub(crate) use features::{
    TableSwap, have_check_mtu, have_fib_tbid, have_redirect_neigh, table_swap,
};
pub(crate) use held::HeldLinks;
#[cfg(test)]
pub(crate) use observe::TableSummary;
#[cfg(feature = "testing")]
pub use observe::owner_table;
pub use observe::{Attached, attached, counters};
pub(crate) use observe::{OwnerTables, missing, running_at_egress, table_summary};
pub(crate) use plan::Change;
pub(crate) use plan::objects;
pub use plan::{EbpfPlan, plan};
#[cfg(feature = "testing")]
pub use program::{OBJECT, load};
pub use program::PinnedProgram;
pub(crate) use program::{ensure_bpffs, our_tag, pinned_program};
pub(crate) use resolve::resolve as resolve_gateways;
