//! `dnsledger compact`, killed at every step, loses and duplicates nothing.
//!
//! Segments come from real imports of the public captures (each imported twice, so every
//! partition has several segments). For each fail point (`DNSLEDGER_FAILPOINT`, the documented
//! test hook that aborts the process right after a step) the real binary is killed there; then
//! (a) DuckDB, applying the compaction rule on its own (a few lines of Python that read each
//! file's `dnsledger.compacted_from` and skip what another file of the same directory names),
//! reads exactly the row multiset it read before, every column, (b) the real `dnsql` counts
//! exactly the original number of rows and returns the same full rows, and (c) a re-run
//! finishes the job: one segment per partition, same rows, nothing left in `inprogress/`.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use dnsledger_tests::harness::{DNSLEDGER, dnsql, dnsql_json, duckdb_lines, repo_root};
use dnsledger_tests::segments::{read_segment, segment_files};

/// Every row of the segments under `root`, as DuckDB reads them with the compaction rule
/// applied independently: one JSON line per row (every column, times also as integer ns),
/// sorted.
const DUCK_ROWS: &str = r#"
import collections, duckdb, os, sys
root = sys.argv[1]
files = sorted(os.path.join(dp, f) for dp, _, fn in os.walk(root) for f in fn
               if f.endswith(".parquet") and not f.startswith("."))
by_dir = collections.defaultdict(list)
for f in files:
    by_dir[os.path.dirname(f)].append(f)
keep = []
for fs in by_dir.values():
    covered = set()
    for f in fs:
        for (v,) in duckdb.sql("SELECT value FROM parquet_kv_metadata(?) "
                               "WHERE key = 'dnsledger.compacted_from'", params=[f]).fetchall():
            v = v.decode() if isinstance(v, (bytes, bytearray)) else v
            covered.update(n for n in v.split("\n") if n and n != os.path.basename(f))
    keep += [f for f in fs if os.path.basename(f) not in covered]
rows = duckdb.sql("SELECT to_json(t)::VARCHAR || ' ' || epoch_ns(ts) || ' ' || "
                  "coalesce(epoch_ns(query_ts), -1) || ' ' || coalesce(epoch_ns(response_ts), -1) "
                  "FROM read_parquet(?, union_by_name = true, hive_partitioning = false) t",
                  params=[keep]).fetchall()
for line in sorted(r[0] for r in rows):
    print(line)
"#;

fn duck_rows(root: &Path) -> Vec<String> {
    duckdb_lines(DUCK_ROWS, root)
}

/// Every row through dnsql, every column, sorted.
fn dnsql_rows(data: &Path) -> Vec<String> {
    let mut rows: Vec<String> = dnsql_json(data, &["sql", "SELECT * FROM dns_all"])
        .iter()
        .map(|v| v.to_string())
        .collect();
    rows.sort();
    rows
}

fn dnsql_count(data: &Path) -> u64 {
    let rows = dnsql_json(data, &["sql", "SELECT count(*) AS n FROM dns_all"]);
    rows[0]["n"].as_u64().expect("count")
}

fn pcap(name: &str) -> PathBuf {
    repo_root().join("testdata/pcap").join(name)
}

/// Imports the captures twice into `data` (host `c`).
fn import_twice(data: &Path) {
    for _ in 0..2 {
        let out = Command::new(&*DNSLEDGER)
            .args(["--quiet", "import", "--host", "c", "--data-dir"])
            .arg(data)
            .args([
                pcap("dns-tunnel-iodine.pcap"),
                pcap("dns.pcap"),
                pcap("wikipedia.pcap"),
            ])
            .output()
            .expect("run import");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn compact(args: &[&str], failpoint: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(&*DNSLEDGER);
    cmd.arg("compact").args(args);
    match failpoint {
        Some(step) => cmd.env("DNSLEDGER_FAILPOINT", format!("compact:{step}")),
        None => cmd.env_remove("DNSLEDGER_FAILPOINT"),
    };
    cmd.output().expect("run compact")
}

/// Segment files per partition directory.
fn by_partition(files: &[PathBuf]) -> BTreeMap<PathBuf, Vec<PathBuf>> {
    let mut m: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        m.entry(f.parent().expect("dir").to_path_buf())
            .or_default()
            .push(f.clone());
    }
    m
}

/// A name that the imported captures hold in some partitions only.
const LOOKUP: &str = "upload.wikimedia.org";

/// After a finished compaction every date directory holds a date manifest, and a point lookup
/// answered from them (files ruled out unopened) returns exactly the rows DuckDB finds.
fn assert_manifests_answer_as_duckdb(data: &Path, segments: &[PathBuf], duck: &[String]) {
    let dates: std::collections::BTreeSet<PathBuf> = segments
        .iter()
        .filter_map(|f| Some(f.parent()?.parent()?.to_path_buf()))
        .collect();
    for d in &dates {
        assert!(
            d.join("_dnsledger.manifest").is_file(),
            "no manifest in {}",
            d.display()
        );
    }
    let want = duck
        .iter()
        .filter(|l| l.contains(&format!("\"qname\":\"{LOOKUP}\"")))
        .count();
    assert!(want > 0, "the captures hold {LOOKUP}");
    let sql = format!("SELECT count(*) AS n FROM dns_all WHERE qname = '{LOOKUP}'");
    let run = dnsql(data, &["--verbose", "--format", "csv", "sql", &sql]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, format!("n\n{want}\n"), "{}", run.stderr);
    let ruled: u64 = run
        .stderr
        .split("files they ruled out: ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no manifest line: {}", run.stderr));
    assert!(ruled > 0, "{}", run.stderr);
}

#[test]
fn compaction_killed_at_any_step_loses_and_duplicates_nothing() {
    for step in ["after-write", "after-rename", "after-first-delete"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        import_twice(&data);
        let before = segment_files(&data);
        let partitions = by_partition(&before).len();
        assert!(
            before.len() >= 2 * partitions,
            "every partition has several segments: {before:?}"
        );
        let duck0 = duck_rows(&data.join("segments"));
        let dnsql0 = dnsql_rows(&data);
        let n = duck0.len() as u64;
        assert!(n > 100, "{n} rows");
        assert_eq!(dnsql0.len() as u64, n);

        let data_arg = data.to_str().expect("utf-8");
        let killed = compact(&["--data-dir", data_arg], Some(step));
        assert_eq!(
            killed.status.signal(),
            Some(libc::SIGABRT),
            "{step}: {}",
            String::from_utf8_lossy(&killed.stderr)
        );
        let mid = segment_files(&data);
        match step {
            "after-write" => assert_eq!(mid, before, "nothing renamed yet"),
            "after-rename" => assert_eq!(mid.len(), before.len() + 1),
            _ => assert_eq!(mid.len(), before.len(), "one added, one deleted"),
        }
        assert_eq!(dnsql_count(&data), n, "{step}: dnsql counts each row once");
        assert_eq!(dnsql_rows(&data), dnsql0, "{step}: dnsql rows");
        assert_eq!(
            duck_rows(&data.join("segments")),
            duck0,
            "{step}: DuckDB rows"
        );
        // `dnsql segments` lists no replaced file either: its rows add up.
        let listed = dnsql_json(&data, &["segments"]);
        let listed_rows: u64 = listed
            .iter()
            .map(|r| r["rows"].as_u64().expect("rows"))
            .sum();
        assert_eq!(listed_rows, n, "{step}: {listed:?}");

        let done = compact(&["--data-dir", data_arg], None);
        assert!(
            done.status.success(),
            "{step}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        let after = segment_files(&data);
        let per = by_partition(&after);
        assert_eq!(per.len(), partitions, "{after:?}");
        assert!(per.values().all(|f| f.len() == 1), "{after:?}");
        for f in &after {
            let (_, kv) = read_segment(f);
            assert_eq!(
                kv.get("dnsledger.source").map(String::as_str),
                Some("compact")
            );
        }
        assert_eq!(
            dnsql_rows(&data),
            dnsql0,
            "{step}: dnsql rows after the re-run"
        );
        assert_eq!(
            duck_rows(&data.join("segments")),
            duck0,
            "{step}: DuckDB rows after"
        );
        let leftovers: Vec<_> = std::fs::read_dir(data.join("inprogress"))
            .expect("inprogress")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert_manifests_answer_as_duckdb(&data, &after, &duck0);

        // Once the hour directories have been unchanged for 2 s, a third run compacts nothing
        // and records their listings in the manifests; dnsql then takes every hour's files
        // from them instead of listing it, with the same answer. A fourth run finds nothing
        // to do.
        std::thread::sleep(std::time::Duration::from_millis(2_100));
        let idle = compact(&["--data-dir", data_arg], None);
        let text = String::from_utf8_lossy(&idle.stdout);
        assert!(text.contains("compacted 0 segment(s)"), "{step}: {text}");
        assert_eq!(segment_files(&data), after);
        let run = dnsql(
            &data,
            &["--verbose", "--format", "csv", "sql", "SELECT 1 AS x"],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "hour directories taken from date manifests unlisted: {partitions}\n"
            )),
            "{step}: {}",
            run.stderr
        );
        assert_eq!(
            dnsql_rows(&data),
            dnsql0,
            "{step}: dnsql rows, hours unlisted"
        );
        assert_manifests_answer_as_duckdb(&data, &after, &duck0);
        let idle = compact(&["--data-dir", data_arg], None);
        let text = String::from_utf8_lossy(&idle.stdout);
        assert!(text.contains("compacted 0 segment(s)"), "{step}: {text}");
        assert!(text.contains("date manifests: 0 written"), "{step}: {text}");
    }
}

#[test]
fn compacts_a_file_lake_with_the_same_rule() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    import_twice(&data);
    let root = data.join("segments");
    let duck0 = duck_rows(&root);
    let url = format!("file://{}", root.display());
    // Killed after the create-only PUT: DuckDB with the rule still reads each row once.
    let killed = compact(&["--lake", &url], Some("after-write"));
    assert_eq!(killed.status.signal(), Some(libc::SIGABRT));
    assert_eq!(duck_rows(&root), duck0);
    assert_eq!(dnsql_count(&data), duck0.len() as u64);
    let done = compact(&["--lake", &url], None);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let after = segment_files(&data);
    let per = by_partition(&after);
    assert!(per.values().all(|f| f.len() == 1), "{per:?}");
    assert_eq!(duck_rows(&root), duck0);
    assert_manifests_answer_as_duckdb(&data, &after, &duck0);
    // A bad scheme is a usage error.
    let bad = compact(&["--lake", "ftp://x/y"], None);
    assert_eq!(bad.status.code(), Some(2));
    // dnsql reports nothing for the compacted inputs (they are gone, not errors).
    assert_eq!(dnsql(&data, &["segments"]).code, 0);
}
