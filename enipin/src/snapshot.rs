//! What the namespace has now and what enipin would manage in it: the connect + discover +
//! select every command starts with, in one place.

use anyhow::Result;

use crate::{
    config::Config,
    discover::{self, Discovery},
    netlink::Netlink,
    plan::{self, Refusal, Selection},
};

/// What a selection does with an interface named in `--interfaces` that is missing, down or
/// without an address ([`Refusal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Named {
    /// An error: `attach` must not quietly manage less than the operator named.
    Strict,
    /// Left out, with a note: `enipin watch` keeps managing the rest while an ENI is detached
    /// (and takes it back when it returns) instead of freezing on the error.
    Present,
}

/// The connection the discovery was read over (the appliers change the namespace through it)
/// and the discovery.
pub(crate) struct Snapshot {
    pub nl: Netlink,
    pub discovery: Discovery,
}

/// A [`Snapshot`] and the selection made from it.
pub(crate) struct Selected {
    pub snapshot: Snapshot,
    pub selection: Selection,
    /// Named interfaces left out (always empty with [`Named::Strict`]).
    pub refused: Vec<Refusal>,
}

impl Snapshot {
    /// Connects to the current namespace and reads it.
    pub(crate) async fn take() -> Result<Self> {
        let nl = Netlink::connect()?;
        let discovery = discover::discover(&nl).await?;
        Ok(Self { nl, discovery })
    }

    /// Takes a snapshot and selects the managed interfaces for `cfg`.
    pub(crate) async fn select(cfg: &Config, named: Named) -> Result<Selected> {
        let snapshot = Self::take().await?;
        let d = &snapshot.discovery;
        let (selection, refused) = match named {
            // The first refusal is the error.
            Named::Strict => (plan::select(d, cfg)?, Vec::new()),
            Named::Present => plan::select_named(d, cfg, plan::choose(d, cfg))?,
        };
        Ok(Selected {
            snapshot,
            selection,
            refused,
        })
    }
}
