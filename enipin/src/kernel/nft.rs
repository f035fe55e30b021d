//! enipin's nftables table on the host (`--connmark`, the table itself is
//! [`crate::model::connmark`]): written and read back with `nft -j` (the nftables package), one
//! transaction replacing the whole table, so a change is never half-applied. Each per-interface
//! rule carries a comment naming its interface, index, value and mask; reading those back is how
//! enipin tells what is installed.

use std::borrow::Cow;

use anyhow::Result;
use nftables::{
    batch::Batch,
    expr::{BinaryOperation, CT, Expression, Meta, MetaKey, NamedExpression},
    helper::{self, NftablesError},
    schema::{Chain, NfListObject, NfObject, Nftables, Rule, Table},
    stmt::{JumpTarget, Mangle, Match, Operator, Statement},
    types::{NfChainPolicy, NfChainType, NfFamily, NfHook},
};

use crate::model::connmark::{
    BASE, Connmark, LOCAL, MARK_NEW, Mark, PRIORITY, RESTORE, TABLE, value,
};

fn comment(k: &Mark, mask: u32) -> String {
    format!(
        "enipin {} ifindex {} mark {:#010x} mask {mask:#010x}",
        k.name, k.ifindex, k.value
    )
}

/// Parses a [`comment`] back.
fn parse_comment(c: &str) -> Option<(Mark, u32)> {
    let w: Vec<&str> = c.split(' ').collect();
    let hex = |s: &str| u32::from_str_radix(s.strip_prefix("0x")?, 16).ok();
    match w.as_slice() {
        ["enipin", name, "ifindex", ix, "mark", v, "mask", m] => Some((
            Mark {
                ifindex: ix.parse().ok()?,
                name: (*name).to_owned(),
                value: hex(v)?,
            },
            hex(m)?,
        )),
        _ => None,
    }
}

fn num(n: u32) -> Expression<'static> {
    Expression::Number(n)
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: Cow::Borrowed(key),
        family: None,
        dir: None,
    }))
}

fn meta_mark() -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Mark }))
}

fn masked(e: Expression<'static>, mask: u32) -> Expression<'static> {
    Expression::BinaryOperation(Box::new(BinaryOperation::AND(e, num(mask))))
}

fn is(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

/// `key set key & ~mask | value`.
fn set(key: Expression<'static>, mask: u32, value: u32) -> Statement<'static> {
    Statement::Mangle(Mangle {
        key: key.clone(),
        value: Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
            masked(key, !mask),
            num(value),
        ]))),
    })
}

fn rule(
    chain: &'static str,
    expr: Vec<Statement<'static>>,
    comment: String,
) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        chain: Cow::Borrowed(chain),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: Some(Cow::Owned(comment)),
    })
}

/// A chain; `hook`: a base chain of that type at that hook, at [`PRIORITY`].
fn chain(name: &'static str, hook: Option<(NfChainType, NfHook)>) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        name: Cow::Borrowed(name),
        newname: None,
        handle: None,
        _type: hook.map(|h| h.0),
        hook: hook.map(|h| h.1),
        prio: hook.map(|_| PRIORITY),
        dev: None,
        policy: hook.map(|_| NfChainPolicy::Accept),
    })
}

fn table() -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::INet,
        name: Cow::Borrowed(TABLE),
        handle: None,
    })
}

/// `add table; delete table`: the table is gone afterwards whether or not it was there.
fn clear(batch: &mut Batch<'static>) {
    batch.add(table());
    batch.delete(table());
}

/// The transaction that replaces enipin's table with `want` (`None`: removes it).
fn transaction(want: Option<&Connmark>) -> Nftables<'static> {
    let mut b = Batch::new();
    clear(&mut b);
    if let Some(c) = want {
        b.add(table());
        b.add(chain(BASE, Some((NfChainType::Filter, NfHook::Prerouting))));
        b.add(chain(LOCAL, Some((NfChainType::Route, NfHook::Output))));
        b.add(chain(MARK_NEW, None));
        b.add(chain(RESTORE, None));
        let jump = |target: &'static str| {
            Statement::Jump(JumpTarget {
                target: Cow::Borrowed(target),
            })
        };
        b.add(rule(
            BASE,
            vec![
                is(
                    ct("state"),
                    Operator::IN,
                    Expression::String(Cow::Borrowed("new")),
                ),
                jump(MARK_NEW),
            ],
            format!("enipin new mask {:#010x}", c.mask),
        ));
        let reply = |chain, what| {
            rule(
                chain,
                vec![
                    is(
                        ct("direction"),
                        Operator::EQ,
                        Expression::String(Cow::Borrowed("reply")),
                    ),
                    is(
                        ct("status"),
                        Operator::IN,
                        Expression::String(Cow::Borrowed("dnat")),
                    ),
                    is(masked(ct("mark"), c.mask), Operator::NEQ, num(0)),
                    jump(RESTORE),
                ],
                format!("enipin {what} mask {:#010x}", c.mask),
            )
        };
        b.add(reply(BASE, "reply"));
        b.add(reply(LOCAL, "local-reply"));
        for k in &c.marks {
            let iif = Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Iif }));
            b.add(rule(
                MARK_NEW,
                vec![
                    is(
                        iif,
                        Operator::EQ,
                        Expression::String(Cow::Owned(k.name.clone())),
                    ),
                    set(ct("mark"), c.mask, k.value),
                    Statement::Return(None),
                ],
                comment(k, c.mask),
            ));
            b.add(rule(
                RESTORE,
                vec![
                    is(masked(ct("mark"), c.mask), Operator::EQ, num(k.value)),
                    set(meta_mark(), c.mask, k.value),
                    Statement::Return(None),
                ],
                comment(k, c.mask),
            ));
        }
    }
    b.to_nftables()
}

/// What `nft` failing means for an operator.
fn nft_error(e: NftablesError, doing: &str) -> anyhow::Error {
    match e {
        NftablesError::NftExecution { inner, .. }
            if inner.kind() == std::io::ErrorKind::NotFound =>
        {
            anyhow::anyhow!(
                "{doing}: connmark needs the `nft` command (the nftables package, 0.9.3 or later, \
                 for its JSON), which is not in PATH: install it, or turn connmark off \
                 (layers.connmark = false)"
            )
        }
        // The library lets nft's stderr through when applying (it is on enipin's stderr, just
        // above) and captures it when listing.
        NftablesError::NftFailed { stderr, .. } if stderr.trim().is_empty() => {
            anyhow::anyhow!("{doing}: nft failed (its message is printed above)")
        }
        NftablesError::NftFailed { stderr, .. } => {
            anyhow::anyhow!("{doing}: nft failed: {}", stderr.trim())
        }
        e => anyhow::Error::new(e).context(doing.to_owned()),
    }
}

/// Replaces enipin's table with `want` (`None`: removes it), in one nft transaction.
pub(crate) fn apply(want: Option<&Connmark>) -> Result<()> {
    let doing = match want {
        Some(c) => format!("installing {}", c.summary()),
        None => format!("removing nft table inet {TABLE}"),
    };
    helper::apply_ruleset(&transaction(want)).map_err(|e| nft_error(e, &doing))
}

/// enipin's table as installed: `None` when there is none. A table whose rules do not read back
/// as enipin writes them (edited by hand, half deleted) comes back with no marks and mask 0, so
/// that it differs from any desired table and is replaced.
pub(crate) fn installed() -> Result<Option<Connmark>> {
    let doing = format!("reading nft table inet {TABLE}");
    let listed = match helper::get_current_ruleset_with_args(
        helper::DEFAULT_NFT,
        ["list", "table", "inet", TABLE],
    ) {
        Ok(n) => n,
        // "No such file or directory": there is no such table.
        Err(NftablesError::NftFailed { stderr, .. }) if stderr.contains("No such file") => {
            return Ok(None);
        }
        Err(e) => return Err(nft_error(e, &doing)),
    };
    Ok(Some(read_back(&listed.objects)))
}

/// The [`Connmark`] that `objects` (one table's listing) describe.
fn read_back(objects: &[NfObject<'_>]) -> Connmark {
    let damaged = Connmark {
        mask: 0,
        marks: Vec::new(),
    };
    let comments = |chain: &str| -> Vec<String> {
        objects
            .iter()
            .filter_map(|o| match o {
                NfObject::ListObject(NfListObject::Rule(r)) if r.chain == chain => {
                    Some(r.comment.as_deref().unwrap_or("").to_owned())
                }
                _ => None,
            })
            .collect()
    };
    let base = comments(BASE);
    let Some(mask) = base
        .first()
        .and_then(|c| c.strip_prefix("enipin new mask 0x"))
        .and_then(|m| u32::from_str_radix(m, 16).ok())
    else {
        return damaged;
    };
    if base
        != [
            format!("enipin new mask {mask:#010x}"),
            format!("enipin reply mask {mask:#010x}"),
        ]
    {
        return damaged;
    }
    if comments(LOCAL) != [format!("enipin local-reply mask {mask:#010x}")] {
        return damaged;
    }
    let new = comments(MARK_NEW);
    if new != comments(RESTORE) {
        return damaged;
    }
    let mut marks = Vec::new();
    for c in &new {
        match parse_comment(c) {
            Some((k, m)) if m == mask && value(mask, k.ifindex) == Some(k.value) => marks.push(k),
            _ => return damaged,
        }
    }
    marks.sort();
    Connmark { mask, marks }
}

/// Whether an `nft` that speaks JSON is in PATH (doctor's check).
pub(crate) fn nft_available() -> Result<()> {
    helper::get_current_ruleset_raw(helper::DEFAULT_NFT, ["--version"])
        .map(drop)
        .map_err(|e| nft_error(e, "checking for nft"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{
            ManagedInterface,
            connmark::{LeftOutSaid, check_mask},
        },
        settings::config::DEFAULT_CONNMARK_MASK as DEFAULT_MASK,
    };

    fn eni(ifindex: u32) -> ManagedInterface {
        ManagedInterface::fixture(
            ifindex,
            &format!("eth{ifindex}"),
            vec!["198.18.0.10/24".parse().unwrap()],
        )
    }

    #[test]
    fn masks_must_be_contiguous_and_values_fit() {
        check_mask(DEFAULT_MASK).unwrap();
        check_mask(0x0000_0f00).unwrap();
        check_mask(0x1).unwrap();
        check_mask(0xffff_ffff).unwrap();
        assert!(check_mask(0).is_err());
        assert!(check_mask(0xf0f0_0000).is_err());
        assert_eq!(value(DEFAULT_MASK, 3), Some(0x0300_0000));
        assert_eq!(value(DEFAULT_MASK, 255), Some(0xff00_0000));
        assert_eq!(value(DEFAULT_MASK, 256), None);
        assert_eq!(value(0x0000_0f00, 15), Some(0xf00));
        assert_eq!(value(0x0000_0f00, 0), None);
    }

    #[test]
    fn an_interface_whose_ifindex_does_not_fit_is_left_to_the_redirect() {
        let (c, left) = Connmark::desired(&[eni(3), eni(2), eni(16)], 0x0f00_0000);
        assert_eq!(
            c.marks
                .iter()
                .map(|k| (k.ifindex, k.value))
                .collect::<Vec<_>>(),
            [(2, 0x0200_0000), (3, 0x0300_0000)]
        );
        assert_eq!(left.len(), 1);
        assert!(
            left[0]
                .to_string()
                .starts_with("eth16: ifindex 16 does not fit"),
            "{left:?}"
        );
    }

    /// Over reconciles that find the same interfaces left out, each is warned of once; one that
    /// joins is warned of, one that leaves is an info line.
    #[test]
    fn watch_says_each_interface_left_out_once() {
        // The warnings and the info lines of `n` reconciles of `managed` under `mask`.
        fn passes(
            said: &mut LeftOutSaid,
            n: usize,
            managed: &[ManagedInterface],
            mask: u32,
        ) -> (usize, Vec<String>) {
            let lines: Vec<_> = (0..n)
                .flat_map(|_| said.update(&Connmark::desired(managed, mask).1, managed))
                .collect();
            let infos = lines.iter().filter(|(w, _)| !w).map(|(_, l)| l.clone());
            (lines.iter().filter(|(w, _)| *w).count(), infos.collect())
        }
        let mut said = LeftOutSaid::default();
        let (two, three) = ([eni(3), eni(16)], [eni(3), eni(16), eni(17)]);
        let (warned, infos) = passes(&mut said, 5, &two, 0x0f00_0000);
        assert_eq!((warned, infos.len()), (1, 0), "eth16, once");
        let (warned, infos) = passes(&mut said, 3, &three, 0x0f00_0000);
        assert_eq!((warned, infos.len()), (1, 0), "eth17 joined");
        assert_eq!(
            passes(&mut said, 2, &two, 0x0f00_0000),
            (
                0,
                vec!["connmark: eth17 (left out of the mask) is no longer managed".to_owned()]
            )
        );
        assert_eq!(
            passes(&mut said, 2, &two, 0xff00_0000),
            (
                0,
                vec!["connmark: eth16 is no longer left out of mask 0x0f000000".to_owned()]
            )
        );
    }

    /// What enipin writes reads back as the same value; a rule edited away reads as damaged.
    #[test]
    fn the_transaction_reads_back_as_written() {
        let (want, _) = Connmark::desired(&[eni(2), eni(3)], DEFAULT_MASK);
        let t = transaction(Some(&want));
        // What `nft -j list table` prints: the added objects without their commands.
        let listed: Vec<NfObject<'_>> = t
            .objects
            .iter()
            .filter_map(|o| match o {
                NfObject::CmdObject(nftables::schema::NfCmd::Add(l)) => {
                    Some(NfObject::ListObject(l.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(read_back(&listed), want);
        let fewer: Vec<_> = listed
            .iter()
            .filter(|o| !matches!(o, NfObject::ListObject(NfListObject::Rule(r)) if r.chain == RESTORE && r.comment.as_deref().is_some_and(|c| c.contains("eth3"))))
            .cloned()
            .collect();
        assert_eq!(read_back(&fewer).mask, 0);
        assert!(
            want.script()
                .contains("iif \"eth3\" ct mark set ct mark & 0x00ffffff | 0x03000000 return")
        );
    }
}
