//! Datapath counters: `enipin stats` and Prometheus exposition.
use std::fmt::Write as _;

use anyhow::Result;
use enipin_ebpf::{Counter, Counters};
use prometheus::{
    TextEncoder,
    proto::{self, LabelPair, Metric, MetricFamily, MetricType},
};

use crate::{datapath, observe::http, settings::config::Paths};

/// One interface's counters: its ifindex, its name ("unknown" for slot 0, "?" when the ifindex
/// no longer exists in this namespace) and the counters summed over CPUs.
pub(crate) type Row = (u32, String, Counters);

pub(crate) fn rows(paths: &Paths) -> Result<Vec<Row>> {
    Ok(datapath::counters(paths)?
        .into_iter()
        .map(|(i, c)| {
            let name = if i == 0 {
                "unknown".into()
            } else {
                datapath::ifname(i).unwrap_or_else(|| "?".into())
            };
            (i, name, c)
        })
        .collect())
}

/// `enipin stats`: the datapath's counters per interface, as a table (`wide`: every counter)
/// or (`json`) JSON.
pub async fn stats(paths: &Paths, json: bool, wide: bool) -> Result<()> {
    let rows = rows(paths)?;
    if json {
        let report = serde_json::json!({ "interfaces": stats_json(&rows) });
        println!("{}", crate::model::report::versioned(&report)?);
    } else {
        println!("{}", stats_table(&rows, wide));
    }
    Ok(())
}

/// `enipin stats --json`: one object per interface, a key per counter.
fn stats_json(rows: &[Row]) -> serde_json::Value {
    rows.iter()
        .map(|(i, name, c)| {
            let mut o = serde_json::Map::new();
            o.insert("ifindex".into(), (*i).into());
            o.insert("interface".into(), name.clone().into());
            for (counter, v) in c.iter() {
                o.insert(counter.name.into(), v.into());
            }
            serde_json::Value::Object(o)
        })
        .collect()
}

/// `enipin stats`'s columns: a header, and what it sums.
const COLUMNS: [(&str, &[&str]); 6] = [
    ("misrouted", &["misrouted_packets"]),
    ("redirect_failed", &["redirect_failed"]),
    ("mtu_exceeded", &["mtu_exceeded"]),
    ("owned_here", &["owned_here"]),
    ("not_owned", &["not_owned"]),
    ("other", &["non_ip", "skipped", "malformed"]),
];

/// Says what the columns count, in lines under 100 columns.
const LEGEND: &str = "\
misrouted: packets leaving by this interface whose source another managed interface owns,
  redirected to that owner (counted where they were leaving by; `monitor` mode counts only).
redirect_failed, mtu_exceeded: misrouted, but passed on unchanged (the redirect failed, or the
  packet is larger than the owner's MTU). other: non-IP, skipped (VLAN, multicast, link-local)
  and malformed. --wide: every counter, --json: for scripts.";

/// `enipin stats`: the counters an operator reads, a line per interface, under 100 columns
/// (`wide`: a column per counter). The slot of packets on interfaces the program has no slot
/// for is shown only when it counted something, and said what it is.
fn stats_table(rows: &[Row], wide: bool) -> String {
    if wide {
        return wide_table(rows);
    }
    let label = |(i, name, _): &Row| format!("{name} ({i})");
    let first = rows
        .iter()
        .map(|r| label(r).len())
        .chain([9])
        .max()
        .unwrap_or(9);
    let mut out = format!("{:<first$}", "interface");
    for (header, _) in COLUMNS {
        let _ = write!(out, " {header:>w$}", w = header.len().max(10));
    }
    let shown = rows
        .iter()
        .filter(|(i, _, c)| *i != 0 || c.values().iter().any(|v| *v > 0));
    for r in shown {
        let _ = write!(out, "\n{:<first$}", label(r));
        for (header, names) in COLUMNS {
            let sum: u64 = names.iter().filter_map(|n| r.2.get(n)).sum();
            let _ = write!(out, " {sum:>w$}", w = header.len().max(10));
        }
    }
    if rows
        .iter()
        .any(|(i, _, c)| *i == 0 && c.values().iter().any(|v| *v > 0))
    {
        out.push_str(
            "\nunknown (0): packets on an interface the program has no slot for (one enipin \
             stopped managing,\n  or more than it can count)",
        );
    }
    out.push('\n');
    out.push_str(LEGEND);
    out
}

/// `enipin stats --wide`: a column per counter.
fn wide_table(rows: &[Row]) -> String {
    let mut out = format!("{:<16} {:>7}", "interface", "ifindex");
    for counter in Counters::LIST {
        let _ = write!(out, " {:>17}", counter.name);
    }
    for (i, name, c) in rows {
        let _ = write!(out, "\n{name:<16} {i:>7}");
        for v in c.values() {
            let _ = write!(out, " {v:>17}");
        }
    }
    out
}

/// The Prometheus text exposition of the counters.
pub fn exposition(paths: &Paths) -> Result<String> {
    encode(&datapath(&rows(paths)?))
}

/// The families in Prometheus text format (0.0.4), encoded by the library, leaving out those
/// without a sample: the encoder refuses a family with none, and a watcher managing no
/// interface (nothing to manage yet, or no reconcile succeeded) has no `enipin_datapath_attached`
/// sample, so its whole /metrics answered an error.
pub(crate) fn encode(families: &[MetricFamily]) -> Result<String> {
    let some: Vec<MetricFamily> = families
        .iter()
        .filter(|f| !f.get_metric().is_empty())
        .cloned()
        .collect();
    Ok(TextEncoder::new().encode_to_string(&some)?)
}

/// A counter `enipin_<name>_total` per datapath counter, a sample per interface. Built per
/// scrape as constant families (the values live in the pinned maps, not in this process), with
/// the labels in the order users have always read them (`interface`, then `ifindex`; the crate's
/// own vectors sort them).
pub(crate) fn datapath(rows: &[Row]) -> Vec<MetricFamily> {
    Counters::LIST
        .iter()
        .enumerate()
        .map(|(n, Counter { name, help })| {
            let mut f = MetricFamily::default();
            f.set_name(format!("enipin_{name}_total"));
            f.set_help(format!("{help}."));
            f.set_field_type(MetricType::COUNTER);
            f.set_metric(
                rows.iter()
                    .map(|(i, ifname, c)| {
                        let mut v = proto::Counter::default();
                        // Exact up to 2^53 packets or bytes.
                        v.set_value(c.values()[n] as f64);
                        let mut m = Metric::default();
                        m.set_label(vec![
                            label("interface", ifname),
                            label("ifindex", &i.to_string()),
                        ]);
                        m.set_counter(v);
                        m
                    })
                    .collect(),
            );
            f
        })
        .collect()
}

/// One label of a constant family.
pub(crate) fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

/// `enipin metrics`: the counters in Prometheus text format, printed once, or served on
/// `GET /metrics` at `listen` until killed.
pub async fn metrics(paths: &Paths, listen: Option<std::net::SocketAddr>) -> Result<()> {
    let Some(addr) = listen else {
        print!("{}", exposition(paths)?);
        return Ok(());
    };
    // Fail now, not at the first scrape, when nothing is pinned.
    exposition(paths)?;
    let listener = http::bind(addr).await?;
    tracing::info!(
        "serving GET /metrics on http://{}/metrics",
        listener.local_addr()?
    );
    let paths = paths.clone();
    match http::serve(listener, http::Limits::default(), move |method, path| {
        http::route_metrics(method, path, || exposition(&paths))
    })
    .await {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter set to its position (1-based), so a value shows which field it came from.
    fn numbered() -> Counters {
        Counters {
            misrouted_packets: 1,
            misrouted_bytes: 2,
            redirect_failed: 3,
            mtu_exceeded: 4,
            owned_here: 5,
            not_owned: 6,
            non_ip: 7,
            skipped: 8,
            malformed: 9,
        }
    }

    /// Users and dashboards read these names (JSON keys, metric names): they never change.
    const NAMES: [&str; 9] = [
        "misrouted_packets",
        "misrouted_bytes",
        "redirect_failed",
        "mtu_exceeded",
        "owned_here",
        "not_owned",
        "non_ip",
        "skipped",
        "malformed",
    ];

    #[test]
    fn names_values_and_arithmetic_follow_the_fields() {
        let names: Vec<_> = Counters::LIST.iter().map(|c| c.name).collect();
        assert_eq!(names, NAMES);
        let c = numbered();
        assert_eq!(c.values(), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        for (n, name) in (1..).zip(NAMES) {
            assert_eq!(c.get(name), Some(n), "{name}");
        }
        assert_eq!(c.get("misrouted"), None);
        let mut twice = c;
        twice.add(&c);
        assert_eq!(twice.values(), [2, 4, 6, 8, 10, 12, 14, 16, 18]);
        assert_eq!(twice.since(&c), c);
        assert_eq!(c.since(&c), Counters::ZERO);
        assert_eq!(Counters::ZERO, Counters::default());
    }

    #[test]
    fn json_has_a_key_per_counter() {
        let rows = [(7, "eth1".to_owned(), numbered())];
        let v = stats_json(&rows);
        let row = &v[0];
        assert_eq!(row["ifindex"], 7);
        assert_eq!(row["interface"], "eth1");
        for (n, name) in (1..).zip(NAMES) {
            assert_eq!(row[name], n, "{name}");
        }
        assert_eq!(row.as_object().unwrap().len(), 2 + NAMES.len());
    }

    #[test]
    fn wide_has_a_column_per_counter() {
        let rows = [(7, "eth1".to_owned(), numbered())];
        let text = stats_table(&rows, true);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0][..2], ["interface", "ifindex"]);
        assert_eq!(lines[0][2..], NAMES);
        assert_eq!(
            lines[1],
            ["eth1", "7", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
        );
    }

    /// The default table fits 100 columns (issue 28, item 2; it was 186), sums non-IP, skipped
    /// and malformed as `other`, shows the unknown slot only when it counted something (and says
    /// what it is), and says what each column counts.
    #[test]
    fn the_table_fits_100_columns_and_says_what_it_counts() {
        let mut rows = vec![
            (7, "eth1".to_owned(), numbered()),
            (0, "unknown".to_owned(), Counters::ZERO),
        ];
        let text = stats_table(&rows, false);
        let widest = text.lines().map(str::len).max().unwrap();
        assert!(widest <= 100, "{widest} columns:\n{text}");
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            [
                "interface",
                "misrouted",
                "redirect_failed",
                "mtu_exceeded",
                "owned_here",
                "not_owned",
                "other"
            ]
        );
        // numbered(): misrouted_packets 1, misrouted_bytes 2, redirect_failed 3, mtu_exceeded 4,
        // owned_here 5, not_owned 6, non_ip 7, skipped 8, malformed 9.
        assert_eq!(lines[1], ["eth1", "(7)", "1", "3", "4", "5", "6", "24"]);
        assert!(
            !text.contains("unknown"),
            "an empty unknown slot shown:\n{text}"
        );
        assert!(
            text.contains("misrouted: packets leaving by this interface"),
            "{text}"
        );
        rows[1].2 = numbered();
        let text = stats_table(&rows, false);
        assert!(text.contains("\nunknown (0) "), "{text}");
        assert!(text.contains("unknown (0): packets on an interface the program has no slot for"));
        assert!(text.lines().all(|l| l.len() <= 100), "{text}");
    }

    #[test]
    fn exposition_has_help_type_and_a_sample_per_counter() {
        let rows = [
            (7, "eth1".to_owned(), numbered()),
            (0, "unknown".to_owned(), Counters::ZERO),
        ];
        let text = encode(&datapath(&rows)).unwrap();
        assert!(text.contains(
            "# HELP enipin_misrouted_packets_total \
             Packets leaving by this interface whose source another managed interface owns \
             (redirected to that owner).\n\
             # TYPE enipin_misrouted_packets_total counter\n\
             enipin_misrouted_packets_total{interface=\"eth1\",ifindex=\"7\"} 1\n\
             enipin_misrouted_packets_total{interface=\"unknown\",ifindex=\"0\"} 0\n"
        ));
        for (n, name) in (1..).zip(NAMES) {
            let sample = format!("enipin_{name}_total{{interface=\"eth1\",ifindex=\"7\"}} {n}\n");
            assert!(text.contains(&sample), "{sample} in\n{text}");
        }
        assert_eq!(text.lines().count(), NAMES.len() * 4);
    }
}
