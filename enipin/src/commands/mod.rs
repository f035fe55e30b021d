//! The commands that change or report the namespace's state: `attach`, `detach`, `status`. Each
//! starts from one [`Snapshot`](crate::engine::snapshot::Snapshot) and leaves the changing to
//! [`crate::engine::apply`] (and [`crate::datapath`]).

pub mod render;
pub mod sysdump;

mod attach;
mod detach;
mod status;

use std::fmt;

pub use attach::attach;
pub use detach::detach;
pub use status::status;

use crate::model::{Gateway, GatewaySource, ManagedInterface, fmt_mac};

/// How a report fits a terminal: lines of at most `width` columns, and long lists folded into
/// counts unless `all` (`--verbose`). At 15 interfaces x 50 addresses, unfolded, `status` was
/// about 1,500 lines, one of them 800 columns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fit {
    pub(crate) width: usize,
    pub(crate) all: bool,
}

impl Fit {
    /// Lists longer than this are folded.
    pub(crate) const FOLD: usize = 12;

    /// The terminal's width when stdout is one (60-120 columns: narrower wraps every word,
    /// wider lines are hard to read), else 100.
    pub(crate) fn terminal(all: bool) -> Self {
        let width = crate::kernel::tty::columns().map_or(100, |c| usize::from(c).clamp(60, 120));
        Self { width, all }
    }

    /// Whether a list of `n` is printed whole.
    pub(crate) fn whole(&self, n: usize) -> bool {
        self.all || n <= Self::FOLD
    }
}

/// `words` after `head`, wrapped at `fit.width` (continuation lines indented by 4), or, folded,
/// as many as fit on the first line and the count of the rest.
fn wrapped(head: &str, words: &[String], prefix: &str, fit: Fit) -> String {
    let mut out = format!("{prefix}{head}");
    let mut line = out.len();
    // What "+N more" counts: the CIDRs left, not a label such as "prefixes".
    let cidrs_from = |i: usize| words[i..].iter().filter(|w| w.contains('/')).count();
    for (i, w) in words.iter().enumerate() {
        // Folded, room is kept for the count of what follows this word, if anything does.
        let after = if fit.all || i + 1 == words.len() {
            0
        } else {
            format!(" +{} more", cidrs_from(i + 1)).len()
        };
        if line + 1 + w.len() + after > fit.width {
            if !fit.all {
                out.push_str(&format!(" +{} more", cidrs_from(i)));
                return out;
            }
            out.push_str(&format!("\n{prefix}   "));
            line = prefix.len() + 3;
        }
        out.push(' ');
        out.push_str(w);
        line += 1 + w.len();
    }
    out
}

/// The managed interfaces as `attach` and `status` print them, every line starting with
/// `prefix` ("# " turns the summary into comments in `--format ip` output).
pub(crate) struct ManagedText<'a> {
    pub(crate) managed: &'a [ManagedInterface],
    pub(crate) prefix: &'a str,
    pub(crate) fit: Fit,
}

impl fmt::Display for ManagedText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = self.prefix;
        for m in self.managed {
            let mut words: Vec<_> = m.addrs.iter().map(ToString::to_string).collect();
            if !m.prefixes.is_empty() {
                words.push("prefixes".to_owned());
                words.extend(m.prefixes.iter().map(ToString::to_string));
            }
            let head = format!(
                "interface {} ({}, ifindex {}) table {}:",
                m.name,
                fmt_mac(&m.mac),
                m.ifindex,
                m.table,
            );
            writeln!(f, "{}", wrapped(&head, &words, prefix, self.fit))?;
            writeln!(f, "{prefix}  gateway ipv4: {}", gateway_text(&m.gateway_v4))?;
            if m.addrs.iter().any(|a| a.is_ipv6()) {
                writeln!(f, "{prefix}  gateway ipv6: {}", gateway_text(&m.gateway_v6))?;
            }
        }
        Ok(())
    }
}

fn gateway_text(g: &Option<Gateway>) -> String {
    match g {
        None => "none (subnet route only)".to_owned(),
        Some(g) => {
            let src = match g.source {
                GatewaySource::MainTable => "main table's default route",
                GatewaySource::SameSubnet => "default route of another interface on its subnet",
                GatewaySource::SubnetFirstHost => "subnet's first host",
                GatewaySource::Configured => "--gateway",
            };
            format!("{} (from the {src})", g.addr)
        }
    }
}
