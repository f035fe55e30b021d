//! A bash script setting each interface's NetworkManager connection's routing rules and routes.
//!
//! Idempotent: each list property is set whole (`ipv4.routing-rules "A,B"`), never appended
//! (`+ipv4.routing-rules A` added a duplicate at every run, issue 28). The whole list is the
//! connection's entries that are not enipin's, then enipin's: a rule is enipin's by its priority
//! (enipin's band), a route by its table (the interface's), so the operator's own entries stay,
//! and a second run sets the list the first one left.

use std::{collections::BTreeSet, fmt::Write as _};

use super::{File, PER_INSTANCE, header};
use crate::model::{
    ManagedInterface,
    route::{Route, Rule},
};

/// The script's fixed part after its header: strict mode and the helpers.
const PRELUDE: &str = r#"set -euo pipefail
shopt -s inherit_errexit

# connection IFACE: the NetworkManager connection active on IFACE.
connection() {
  local con
  con=$(nmcli -g GENERAL.CONNECTION device show "$1")
  [ -n "$con" ] || { echo "$1: no NetworkManager connection is active on it" >&2; return 1; }
  printf '%s\n' "$con"
}

# merge CON PROPERTY OURS ENTRY...: PROPERTY's entries of connection CON that do not match the
# extended regex OURS (enipin's), then ENTRY..., comma-separated. nmcli -g separates entries
# with ", " and escapes ':' (IPv6) as '\:'.
merge() {
  local con=$1 prop=$2 ours=$3 current
  shift 3
  current=$(nmcli -g "$prop" connection show "$con")
  {
    printf '%s\n' "$current" | sed -e 's/\\:/:/g' -e 's/, */\n/g' | { grep -Ev -e "$ours" -e '^$' || true; }
    printf '%s\n' "$@"
  } | paste -sd, -
}
"#;

/// The script `enipin-nmcli.sh`: the prelude, then per interface its connection's lists set.
pub(super) fn script(managed: &[ManagedInterface], rules: &[Rule], routes: &[Route]) -> File {
    let mut o = "#!/bin/bash\n".to_owned();
    o += &header("nmcli", &format!("{PER_INSTANCE}{ABOUT}"));
    o += PRELUDE;
    for (n, m) in managed.iter().enumerate() {
        let (rules, routes) = super::split(m, n == 0, rules, routes);
        interface(&mut o, m, &rules, &routes);
    }
    File {
        path: "enipin-nmcli.sh".into(),
        body: o,
        script: true,
    }
}

const ABOUT: &str = "\
# Sets each connection's routing rules and routes whole: its entries that are not enipin's (by
# priority, by table), then enipin's. Running it twice sets the same lists (nothing appended).
";

fn interface(o: &mut String, m: &ManagedInterface, rules: &[&Rule], routes: &[&Route]) {
    let name = &m.name;
    let _ = writeln!(o, "\n# {name}\ncon=$(connection {name})");
    let mut set = Vec::new();
    for (v6, fam) in [(false, "ipv4"), (true, "ipv6")] {
        let rs: Vec<&Rule> = rules.iter().copied().filter(|r| r.v6 == v6).collect();
        let ts: Vec<&Route> = routes.iter().copied().filter(|r| r.v6() == v6).collect();
        if !rs.is_empty() {
            let var = format!("{fam}_rules");
            let entries: Vec<String> = rs.iter().map(|r| rule(r)).collect();
            merged(
                o,
                &var,
                &format!("{fam}.routing-rules"),
                &by_priority(&rs),
                &entries,
            );
            set.push(format!("{fam}.routing-rules \"${var}\""));
        }
        if !ts.is_empty() {
            let var = format!("{fam}_routes");
            let entries: Vec<String> = ts.iter().map(|r| route(r)).collect();
            let ours = format!("(^| )table={}( |$)", m.table);
            merged(o, &var, &format!("{fam}.routes"), &ours, &entries);
            set.push(format!("{fam}.routes \"${var}\""));
        }
    }
    let _ = writeln!(o, "nmcli connection modify \"$con\" {}", set.join(" "));
    let _ = writeln!(o, "nmcli device reapply {name}");
}

/// `VAR=$(merge "$con" PROP 'OURS' 'ENTRY' ...)`, one entry a line.
fn merged(o: &mut String, var: &str, prop: &str, ours: &str, entries: &[String]) {
    let _ = write!(o, "{var}=$(merge \"$con\" {prop} '{ours}'");
    for e in entries {
        let _ = write!(o, " \\\n  '{e}'");
    }
    o.push_str(")\n");
}

/// The regex of the rules at `rules`' priorities (nmcli prints `priority N` first).
fn by_priority(rules: &[&Rule]) -> String {
    let prios: BTreeSet<String> = rules.iter().map(|r| r.priority.to_string()).collect();
    format!(
        "^priority ({})( |$)",
        prios.into_iter().collect::<Vec<_>>().join("|")
    )
}

/// A rule as nmcli's `ipv4.routing-rules` spells it.
fn rule(r: &Rule) -> String {
    let mut s = format!("priority {}", r.priority);
    if let Some(from) = r.from {
        let _ = write!(s, " from {from}");
    }
    let _ = write!(s, " table {}", r.table);
    if let Some(l) = r.suppress_prefixlen {
        let _ = write!(s, " suppress_prefixlength {l}");
    }
    s
}

/// A route as nmcli's `ipv4.routes` spells it.
fn route(r: &Route) -> String {
    let mut s = r.dst.to_string();
    if let Some(g) = r.gateway {
        let _ = write!(s, " {g}");
    }
    let _ = write!(s, " table={}", r.table);
    if let Some(src) = r.src {
        let _ = write!(s, " src={src}");
    }
    s
}
