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

/// The managed interfaces as `attach` and `status` print them, every line starting with
/// `prefix` ("# " turns the summary into comments in `--format ip` output).
pub(crate) struct ManagedText<'a> {
    pub(crate) managed: &'a [ManagedInterface],
    pub(crate) prefix: &'a str,
}

impl fmt::Display for ManagedText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = self.prefix;
        for m in self.managed {
            let addrs: Vec<_> = m.addrs.iter().map(ToString::to_string).collect();
            let prefixes: Vec<_> = m.prefixes.iter().map(ToString::to_string).collect();
            writeln!(
                f,
                "{prefix}interface {} ({}, ifindex {}) table {}: {}{}",
                m.name,
                fmt_mac(&m.mac),
                m.ifindex,
                m.table,
                addrs.join(" "),
                if prefixes.is_empty() {
                    String::new()
                } else {
                    format!(" prefixes {}", prefixes.join(" "))
                }
            )?;
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
