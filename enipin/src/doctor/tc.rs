//! Other programs at the managed interfaces' TC hooks, TCX and clsact, named and in the order
//! the kernel runs them relative to enipin's. TCX runs its programs in order (enipin appends its
//! link last) and then the clsact filters by priority; a verdict other than "next" (TCX_NEXT,
//! TC_ACT_UNSPEC) ends the chain, and a packet enipin redirects leaves by another interface
//! without reaching what comes after it.

use aya::programs::{ProgramError, SchedClassifier, TcAttachType};
use enipin_ebpf::PROGRAM;
use netlink_packet_route::tc::{TcAttribute, TcFilterBpfOption, TcOption};

use super::{Finding, Severity};
use crate::{kernel::netlink::Netlink, model::ManagedInterface};

/// A program at a TCX hook, in run order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Prog {
    pub name: String,
    pub id: u32,
}

/// A filter at a clsact hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Filter {
    pub priority: u16,
    /// `bpf` filter's program name, else the filter's kind (`u32`, `flower`, ...).
    pub name: String,
    pub id: Option<u32>,
}

/// What hooks an interface: `Err` says why a hook could not be read, `Ok(None)` that the kernel
/// has no TCX.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Hooks {
    pub iface: String,
    pub tcx_egress: Result<Option<Vec<Prog>>, String>,
    pub tcx_ingress: Result<Option<Vec<Prog>>, String>,
    pub clsact_egress: Result<Vec<Filter>, String>,
    pub clsact_ingress: Result<Vec<Filter>, String>,
}

pub(super) async fn read(nl: &Netlink, managed: &[ManagedInterface]) -> anyhow::Result<Vec<Hooks>> {
    let mut out = Vec::new();
    for m in managed {
        out.push(Hooks {
            iface: m.name.clone(),
            tcx_egress: tcx(m.ifindex, TcAttachType::Egress),
            tcx_ingress: tcx(m.ifindex, TcAttachType::Ingress),
            clsact_egress: filters(nl, m.ifindex, true).await,
            clsact_ingress: filters(nl, m.ifindex, false).await,
        });
    }
    Ok(out)
}

fn tcx(ifindex: u32, at: TcAttachType) -> Result<Option<Vec<Prog>>, String> {
    match SchedClassifier::query_tcx(ifindex, at) {
        Ok((_, progs)) => Ok(Some(
            progs
                .iter()
                .map(|p| Prog {
                    name: p.name_as_str().unwrap_or("?").to_owned(),
                    id: p.id(),
                })
                .collect(),
        )),
        Err(ProgramError::SyscallError(e))
            if matches!(
                e.io_error.raw_os_error(),
                Some(libc::EINVAL | libc::EOPNOTSUPP)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn filters(nl: &Netlink, ifindex: u32, egress: bool) -> Result<Vec<Filter>, String> {
    let msgs = nl
        .filters(ifindex, egress)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let mut out: Vec<Filter> = Vec::new();
    for m in msgs {
        let mut f = Filter {
            priority: (m.header.info >> 16) as u16,
            name: String::new(),
            id: None,
        };
        let mut has_options = false;
        for a in &m.attributes {
            match a {
                TcAttribute::Kind(k) if f.name.is_empty() => f.name = k.clone(),
                TcAttribute::Options(opts) => {
                    has_options = true;
                    for o in opts {
                        match o {
                            TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => f.name = n.clone(),
                            TcOption::Bpf(TcFilterBpfOption::ProgId(i)) => f.id = Some(*i),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        // A dump lists each priority's chain head (no options) before its filters.
        if has_options && !out.iter().any(|x| x == &f) {
            out.push(f);
        }
    }
    // The name a loader gave the filter is its own choice (`tc ... object-pinned` says
    // `prog:[*fsobj]`): the kernel's name of the program is the one to show.
    if out.iter().any(|f| f.id.is_some()) {
        for info in aya::programs::loaded_programs().flatten() {
            for f in out.iter_mut().filter(|f| f.id == Some(info.id())) {
                if let Some(n) = info.name_as_str().filter(|n| !n.is_empty()) {
                    f.name = n.to_owned();
                }
            }
        }
    }
    Ok(out)
}

fn is_enipin(name: &str) -> bool {
    name == PROGRAM
}

pub(super) fn check_all(all: &[Hooks]) -> Vec<Finding> {
    all.iter().flat_map(check).collect()
}

fn prog_text(p: &Prog) -> String {
    format!("{} (id {})", p.name, p.id)
}

fn filter_text(f: &Filter) -> String {
    match f.id {
        Some(id) => format!("{} (id {id}, priority {})", f.name, f.priority),
        None => format!("{} (priority {})", f.name, f.priority),
    }
}

const PASS_ON: &str = "its owner makes it pass on what it does not own (TCX_NEXT / \
    TC_ACT_UNSPEC), as grafana/beyla#1462 does; enipin reuses the clsact qdisc and never \
    removes others' filters";

pub(super) fn check(h: &Hooks) -> Vec<Finding> {
    let check = format!("tc {}", h.iface);
    let mut out = Vec::new();
    let mut err = |what: &str, e: &String| {
        out.push(Finding::new(
            check.clone(),
            Severity::Warning,
            format!("could not read {}'s {what}: {e}", h.iface),
        ))
    };
    let egress = match &h.tcx_egress {
        Ok(p) => p.clone(),
        Err(e) => {
            err("TCX egress", e);
            None
        }
    };
    let clsact = h.clsact_egress.clone().unwrap_or_else(|e| {
        err("clsact egress", &e);
        Vec::new()
    });
    let egress = egress.unwrap_or_default();
    let ours = Ours {
        tcx: egress.iter().position(|p| is_enipin(&p.name)),
        filter: clsact
            .iter()
            .find(|f| is_enipin(&f.name))
            .map(|f| f.priority),
    };
    let others = tcx_others(&h.iface, &egress, ours)
        .chain(clsact_others(&h.iface, &clsact, ours))
        .map(|meaning| Finding::new(check.clone(), Severity::Warning, meaning).fix(PASS_ON));
    out.extend(others);
    out.extend(ingress(h).map(|meaning| Finding::ok(check.clone(), meaning)));
    if out.is_empty() {
        let attached = if ours.attached() {
            " (enipin's is attached)"
        } else {
            ""
        };
        let meaning = format!(
            "no other program at {}'s TCX or clsact hooks{attached}",
            h.iface
        );
        out.push(Finding::ok(check, meaning));
    }
    out
}

/// Where enipin's own program sits at an interface's egress, if it does.
#[derive(Clone, Copy)]
struct Ours {
    /// Its position in the TCX chain.
    tcx: Option<usize>,
    /// Its clsact filter's priority.
    filter: Option<u16>,
}

impl Ours {
    fn attached(self) -> bool {
        self.tcx.is_some() || self.filter.is_some()
    }
}

/// Someone else's TCX egress programs, each with where it runs from enipin's.
fn tcx_others<'a>(
    iface: &'a str,
    egress: &'a [Prog],
    ours: Ours,
) -> impl Iterator<Item = String> + 'a {
    let others = egress
        .iter()
        .enumerate()
        .filter(|(_, p)| !is_enipin(&p.name));
    others.map(move |(i, p)| match ours.tcx {
        Some(o) if i < o => format!(
            "{} runs before enipin at {iface}'s TCX egress: any verdict but TCX_NEXT ends the \
             chain before enipin sees the packet",
            prog_text(p),
        ),
        Some(_) => format!(
            "{} runs after enipin at {iface}'s TCX egress: packets enipin redirects leave by \
             another interface without reaching it",
            prog_text(p),
        ),
        None => format!(
            "{} is at {iface}'s TCX egress: enipin attaches after it{} and sees only what it \
             passes on (TCX_NEXT)",
            prog_text(p),
            if ours.attached() {
                ""
            } else {
                " (appended last)"
            }
        ),
    })
}

/// Someone else's clsact egress filters, each with where it runs from enipin's.
fn clsact_others<'a>(
    iface: &'a str,
    clsact: &'a [Filter],
    ours: Ours,
) -> impl Iterator<Item = String> + 'a {
    clsact.iter().filter(|f| !is_enipin(&f.name)).map(move |f| {
        let order = match (ours.tcx, ours.filter) {
            (_, Some(p)) if f.priority < p => {
                "it runs before enipin's filter: any verdict but TC_ACT_UNSPEC (pass on) ends \
                 the chain before enipin sees the packet"
            }
            (_, Some(_)) => {
                "it runs after enipin's filter: packets enipin redirects never reach it"
            }
            (Some(_), None) => {
                "it runs after the TCX programs, enipin's included: packets enipin redirects \
                 never reach it"
            }
            (None, None) => {
                "enipin's TCX link will run before it (without TCX, enipin's filter goes after \
                 it): packets enipin redirects never reach it"
            }
        };
        format!(
            "filter {} at {iface}'s clsact egress: {order}",
            filter_text(f)
        )
    })
}

/// What sits at the ingress hooks, which enipin's egress program never meets.
fn ingress(h: &Hooks) -> Option<String> {
    let mut ingress: Vec<String> = match &h.tcx_ingress {
        Ok(p) => p.iter().flatten().map(prog_text).collect(),
        Err(_) => Vec::new(),
    };
    if let Ok(f) = &h.clsact_ingress {
        ingress.extend(f.iter().map(filter_text));
    }
    (!ingress.is_empty()).then(|| {
        format!(
            "at {}'s ingress: {} (enipin hooks egress only: they do not meet)",
            h.iface,
            ingress.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(name: &str, id: u32) -> Prog {
        Prog {
            name: name.into(),
            id,
        }
    }

    fn hooks(egress: Vec<Prog>, clsact: Vec<Filter>) -> Hooks {
        Hooks {
            iface: "eth1".into(),
            tcx_egress: Ok(Some(egress)),
            tcx_ingress: Ok(Some(vec![prog("agent_in", 9)])),
            clsact_egress: Ok(clsact),
            clsact_ingress: Ok(Vec::new()),
        }
    }

    #[test]
    fn others_are_named_in_their_order_relative_to_enipins() {
        let h = hooks(
            vec![prog("agent_a", 5), prog(PROGRAM, 7), prog("agent_b", 8)],
            vec![Filter {
                priority: 1,
                name: "dd_filter".into(),
                id: Some(11),
            }],
        );
        let f = check(&h);
        let w: Vec<_> = f
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .collect();
        assert_eq!(w.len(), 3, "{f:?}");
        assert!(
            w[0].meaning
                .starts_with("agent_a (id 5) runs before enipin"),
            "{}",
            w[0].meaning
        );
        assert!(
            w[1].meaning.starts_with("agent_b (id 8) runs after enipin"),
            "{}",
            w[1].meaning
        );
        assert!(w[2].meaning.contains("dd_filter (id 11, priority 1)"));
        assert!(
            w[2].meaning.contains("after the TCX programs"),
            "{}",
            w[2].meaning
        );
        assert!(
            f.iter()
                .any(|f| f.severity == Severity::Ok && f.meaning.contains("agent_in (id 9)"))
        );
    }

    #[test]
    fn nothing_else_is_ok_and_no_tcx_is_not_an_error() {
        let mut h = hooks(vec![prog(PROGRAM, 7)], Vec::new());
        h.tcx_ingress = Ok(None);
        let f = check(&h);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Ok);
        assert!(f[0].meaning.contains("enipin's is attached"));
        h.tcx_egress = Ok(None);
        h.clsact_egress = Ok(vec![
            Filter {
                priority: 1,
                name: "other".into(),
                id: None,
            },
            Filter {
                priority: 49152,
                name: PROGRAM.into(),
                id: Some(3),
            },
        ]);
        let f = check(&h);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].meaning.contains("runs before enipin's filter"),
            "{f:?}"
        );
    }
}
