//! The benchmark works: `enipin-bench --quick` (tiny sizes, one round) runs every section in its
//! own namespaces and writes a row for every case with a finite, positive value. Whether the
//! targets are met is the benchmark's report, not this test's verdict.

use std::{process::Command, time::Instant};

use enipin_tests::{TempDir, require};

#[test]
fn quick_bench_writes_every_section() {
    require();
    let out = TempDir::new("enipin-bench-smoke-").unwrap();
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_enipin-bench"))
        .env("ENIPIN_BIN", enipin_tests::enipin_bin())
        .arg("--quick")
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("spawning enipin-bench");
    assert!(
        run.status.success(),
        "enipin-bench --quick failed ({}):\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!(
        "enipin-bench --quick took {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let json =
        std::fs::read_to_string(out.path().join("results-quick.json")).expect("results-quick.json");
    let md =
        std::fs::read_to_string(out.path().join("results-quick.md")).expect("results-quick.md");
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&json).expect("results-quick.json parses");
    let count = |section: &str| rows.iter().filter(|r| r["section"] == section).count();
    // cost: the floor, its spread + 7 cases x 3 sizes; datapath: 5 rows x 2 protocols
    // + 3 UDP CPU-per-frame rows + 2 UDP rows with the rules installed (the redirect's next hop
    // from the owner's table: rate, CPU per frame); control: 12 rows (3 of them the attach floors);
    // watch: peak RSS, scrape time, exposition size; reaction: rule and route restored and a
    // new address (median, p99, max each), reconciles per restore, the 400-address burst (2),
    // a restore with --metadata and one under scrapes, each against idle (2);
    // dnat: the baseline's rate + the redirected, the connmark and the primary-with-connmark
    // cases' rates and CPU per frame against it.
    assert_eq!(count("cost"), 2 + 7 * 3, "{json}");
    assert_eq!(count("datapath"), 5 * 2 + 3 + 2, "{json}");
    assert_eq!(count("control"), 12, "{json}");
    assert_eq!(count("watch"), 3 + 3 * 3 + 1 + 2 + 2, "{json}");
    assert_eq!(count("dnat"), 1 + 3 * 2, "{json}");
    for r in &rows {
        let v = r["value"].as_f64().unwrap_or(f64::NAN);
        assert!(
            v.is_finite() && v > 0.0,
            "row without a positive value: {r}"
        );
        if let Some(b) = r["baseline"].as_f64() {
            assert!(b.is_finite() && b > 0.0, "row with a bad baseline: {r}");
        }
        let case = r["case"].as_str().unwrap();
        assert!(md.contains(case), "{case:?} missing from results-quick.md");
    }
    assert!(
        !out.path().join("results.json").exists(),
        "--quick must not overwrite the full results"
    );
}
