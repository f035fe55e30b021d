//! What the namespace has now and what enipin would manage in it: the connect + discover +
//! select every command starts with, in one place.

use std::time::Instant;

use anyhow::Result;

use crate::{
    engine::state::State,
    kernel::discover,
    kernel::netlink::Netlink,
    metadata::{self, Scope, Use, View},
    model::discovery::Discovery,
    routing::grace::{Grace, Held},
    routing::select::{self, Refusal, Selection},
    routing::verdict::Verdict,
    settings::config::Config,
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
    /// Why each interface considered is taken or left out.
    pub verdicts: Vec<Verdict>,
    /// What a blinking address kept managed (always empty without a [`Grace`]).
    pub held: Held,
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
        Self::select_with(cfg, named, None, None, None)
            .await
            .map(|(s, _)| s)
    }

    /// [`Snapshot::select`], with the addresses and prefixes `metadata` knows of the candidate
    /// interfaces merged in first (the addresses `state` records as enipin's marked so first);
    /// returns the metadata's view too (`None` without it), its `wanted` the candidates' MACs. With `grace` (the watcher's), an
    /// interface of `state` that blinks keeps what `state` manages selected.
    pub(crate) async fn select_with(
        cfg: &Config,
        named: Named,
        metadata: Option<Use<'_>>,
        state: Option<&State>,
        grace: Option<&mut Grace>,
    ) -> Result<(Selected, Option<View>)> {
        let mut snapshot = Self::take().await?;
        if let Some(st) = state {
            st.mark_addresses(&mut snapshot.discovery);
        }
        let view = match metadata {
            Some(m) => {
                refuse_beside_the_vpc_cni(&snapshot.discovery, cfg)?;
                let macs = select::candidate_macs(&snapshot.discovery, cfg);
                let view = match m {
                    Use::Ask(t) => t.refresh(&macs, Scope::All).await,
                    // Nothing was asked this pass.
                    Use::Last(v) => View {
                        wanted: macs,
                        requests: 0,
                        outcomes: Default::default(),
                        ..v.clone()
                    },
                };
                metadata::merge(&mut snapshot.discovery, &view, cfg.configure_addresses);
                Some(view)
            }
            None => None,
        };
        let held = match (grace, state) {
            (Some(g), Some(st)) => g.hold(&snapshot.discovery, &st.managed, Instant::now()),
            _ => Held::default(),
        };
        Ok((Self::select_from(snapshot, cfg, named, held)?, view))
    }

    fn select_from(snapshot: Self, cfg: &Config, named: Named, held: Held) -> Result<Selected> {
        let d = &snapshot.discovery;
        let mut chosen = select::choose(d, cfg);
        select::hold(d, &mut chosen, &held.keep);
        let verdicts = chosen.verdicts.clone();
        if let (Named::Strict, Some(r)) = (named, chosen.refused.first()) {
            // The first refusal is the error.
            return Err(r.clone().into());
        }
        let (selection, refused) = select::select_named(d, cfg, chosen)?;
        Ok(Selected {
            snapshot,
            selection,
            refused,
            verdicts,
            held,
        })
    }
}

/// `--configure-addresses` beside the Amazon VPC CNI would add the pods' addresses (which the
/// metadata lists as the ENIs' secondary addresses) to the host, and the node would answer for
/// its pods: refused while the CNI's pod rules are there, before any change.
fn refuse_beside_the_vpc_cni(d: &Discovery, cfg: &Config) -> Result<()> {
    let n = d.vpc_cni_rules();
    if cfg.configure_addresses && n > 0 {
        anyhow::bail!(
            "the Amazon VPC CNI runs here ({n} of its pod rules at priorities 512/1536): the \
             metadata lists its pods' addresses as the ENIs' secondary addresses, and \
             --configure-addresses would add them to the host. Leave it off (metadata.source \
             alone only reads; docs/eks.md). Nothing was changed"
        );
    }
    Ok(())
}
