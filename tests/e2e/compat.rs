//! Segments written by earlier versions (testdata/compat) read in `dnsql` with the same SQL
//! results as the segments this build's `dnsledger import` writes from the same captures
//! (schema version 2: without the derivable values of query_ts, latency_ns, answer_ips and
//! questions, which dnsql computes; the version-1 files store them; version 3: the raw
//! messages with the DNS ID XORed out in query_raw_x / response_raw_x, which dnsql restores;
//! the older files have them in query_raw / response_raw).

use std::path::Path;
use std::process::Command;

use dnsledger_tests::harness::*;
use dnsledger_tests::segments::*;

/// The columns added since schema version 1's first segments (absent from the old files).
const ADDED: [&str; 12] = [
    "qname_case",
    "questions_case",
    "side",
    "requester_pids",
    "requester_comms",
    "requester_exes",
    "stub_cache",
    // libc-level lookups.
    "lookup_fn",
    "lookup_family",
    "lookup_error",
    "lookup_local",
    "lookup_id",
];

/// Rows in a fixed order, every stored column but the added ones and `boot_id` (the boot of the
/// machine that imported).
const ROWS_SQL: &str = "SELECT * EXCLUDE (boot_id, qname_case, questions_case, qname_sent, side, \
lookup_fn, lookup_family, lookup_error, lookup_local, lookup_id) \
FROM dns ORDER BY ts, status, dns_id, client_port, query_size, response_size";

/// `dnsledger import` of the captures the fixtures were written from (scripts/
/// make-fixture-segments.sh's host-b) into `<dir>/data` with this build; returns that.
fn import_fixture_captures(dir: &Path) -> std::path::PathBuf {
    let new = dir.join("data");
    let pcap = repo_root().join("testdata/pcap");
    let out = Command::new(&*DNSLEDGER)
        .args([
            "--quiet",
            "import",
            "--host",
            "host-b",
            "--rotate-size",
            "64KiB",
        ])
        .arg("--data-dir")
        .arg(&new)
        .arg(pcap.join("dns-tunnel-iodine.pcap"))
        .arg(pcap.join("bug-1158/input.pcap"))
        .output()
        .expect("run dnsledger import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    new
}

#[test]
fn schema1_segments_read_like_new_ones() {
    let _g = serial_lock();
    let old = repo_root().join("testdata/compat/schema1");
    // The old files really are old: none has the added columns.
    let files: Vec<_> = dnsledger_tests::fixture::files_under(&old)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(files.len(), 4, "{files:?}");
    for f in &files {
        let (batches, _) = read_segment(f);
        for c in ADDED {
            assert!(
                batches[0].schema().field_with_name(c).is_err(),
                "{} already has {c}",
                f.display()
            );
        }
    }
    // The same captures through this build.
    let scratch = tempfile::tempdir().expect("tempdir");
    let new = import_fixture_captures(scratch.path());
    // Schema version 2: the derivable values of query_ts, latency_ns, answer_ips and
    // questions are not stored (the old files store every one); dnsql computes them, so the
    // rows below compare equal.
    let (mut rows, mut stored) = (0usize, [0usize; 4]);
    for f in segment_files(&new) {
        let (batches, kv) = read_segment(&f);
        assert_eq!(
            kv.get("dnsledger.schema_version").map(String::as_str),
            Some("3")
        );
        for c in ADDED {
            assert!(batches[0].schema().field_with_name(c).is_ok(), "{c}");
        }
        for b in &batches {
            rows += b.num_rows();
            for (n, c) in stored.iter_mut().zip(dnsledger_schema::derived::DERIVED) {
                let a = b.column_by_name(c).expect("derived column");
                *n += a.len() - a.null_count();
            }
        }
    }
    // Stored only where the rule does not give the value: no query time (every row's is
    // ts or it is unsolicited), no latency; a few question lists (several questions) and
    // answer address lists (A records whose data is not an address) at most.
    assert!(rows > 300, "{rows}");
    assert_eq!(stored[0], 0, "query_ts stored");
    assert_eq!(stored[1], 0, "latency_ns stored");
    assert!(
        stored[2] * 20 < rows && stored[3] * 20 < rows,
        "{stored:?} of {rows}"
    );
    let (old_stored, _) = read_segment(&files[0]);
    let lat = old_stored[0]
        .column_by_name("latency_ns")
        .expect("latency_ns");
    assert!(lat.len() > lat.null_count(), "the old files store latency");

    let statements: &[&[&str]] = &[
        &["sql", ROWS_SQL],
        // dns_all computes the same values as dns.
        &[
            "sql",
            "SELECT ts, status, query_ts, latency_ns, answer_ips, questions FROM dns_all \
             ORDER BY ts, status, dns_id, client_port, query_size, response_size",
        ],
        &[
            "sql",
            "SELECT qname, count(*) AS n, min(ts) AS first FROM dns GROUP BY qname \
             ORDER BY n DESC, qname LIMIT 50",
        ],
        &[
            "sql",
            "SELECT count(*) AS n FROM dns WHERE qname = 'tunnel.com'",
        ],
        &["exfil"],
        &["top", "--by", "registered-domain"],
        &["who", "pirate.sea"],
        &["who", "tunnel.com"],
    ];
    same_answers(&old, &new, statements);

    // The name as sent: in the old segments only the lower-cased qname is there, so that is
    // what qname_sent says; the new ones keep iodine's mixed case.
    let count = |data: &Path, sql: &str| -> u64 {
        dnsql_json(data, &["sql", sql])[0]["n"]
            .as_u64()
            .unwrap_or_else(|| panic!("{sql}"))
    };
    let differs = "SELECT count(*) AS n FROM dns WHERE qname_sent IS DISTINCT FROM qname";
    assert_eq!(count(&old, differs), 0);
    let kept = count(&new, differs);
    assert!(kept > 0, "iodine's names are mixed case");
    assert_eq!(
        count(
            &new,
            "SELECT count(*) AS n FROM dns WHERE lower(qname_sent) IS DISTINCT FROM qname"
        ),
        0
    );
    // Where the raw query is kept, it says the same as the column.
    assert_eq!(
        count(
            &new,
            "SELECT count(*) AS n FROM dns WHERE query_raw IS NOT NULL AND parse_error IS NULL \
             AND question_name(query_raw) IS DISTINCT FROM qname_sent"
        ),
        0
    );
    // Both together: one table, old rows NULL in the added columns.
    let run = dnsql(
        &old,
        &[
            "--data",
            new.to_str().expect("utf-8 path"),
            "--format",
            "json",
            "sql",
            "SELECT count(*) AS n, count(qname_case) AS cased FROM dns_all",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("json");
    let rows = dnsql_json(&new, &["sql", "SELECT count(*) AS n FROM dns"])[0]["n"]
        .as_u64()
        .expect("n");
    assert_eq!(v["n"].as_u64(), Some(2 * rows));
    assert_eq!(
        v["cased"].as_u64(),
        Some(count(&new, "SELECT count(qname_case) AS n FROM dns"))
    );
}

/// Rows in a fixed order, every column but `boot_id` (the boot of the machine that imported).
const ROWS2_SQL: &str = "SELECT * EXCLUDE (boot_id) FROM dns \
ORDER BY ts, status, dns_id, client_port, query_size, response_size";

#[test]
fn schema2_segments_read_like_new_ones() {
    let _g = serial_lock();
    let old = repo_root().join("testdata/compat/schema2");
    let raw_x = ["query_raw_x", "response_raw_x"];
    assert_eq!(
        raw_x,
        dnsledger_schema::derived::FILE_ONLY,
        "the columns this test looks for"
    );
    // The old files really are version 2: the raw bytes in query_raw / response_raw, no _x
    // columns.
    let files: Vec<_> = dnsledger_tests::fixture::files_under(&old)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(files.len(), 4, "{files:?}");
    let non_null = |batches: &[arrow_array::RecordBatch], c: &str| -> usize {
        batches
            .iter()
            .map(|b| b.column_by_name(c).map_or(0, |a| a.len() - a.null_count()))
            .sum()
    };
    let (mut old_raw, mut old_rows) = (0, 0);
    for f in &files {
        let (batches, kv) = read_segment(f);
        assert_eq!(
            kv.get("dnsledger.schema_version").map(String::as_str),
            Some("2")
        );
        for c in raw_x {
            assert!(batches[0].schema().field_with_name(c).is_err(), "{c}");
        }
        old_raw += non_null(&batches, "query_raw") + non_null(&batches, "response_raw");
        old_rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    assert!(
        old_raw > old_rows,
        "{old_raw} raw messages in {old_rows} rows"
    );

    // The same captures through this build: nearly every message in the _x columns, with
    // its ID XORed out (zero where the ID is dns_id).
    let scratch = tempfile::tempdir().expect("tempdir");
    let new = import_fixture_captures(scratch.path());
    let (mut plain, mut xored, mut zero_id) = (0, 0, 0);
    for f in segment_files(&new) {
        let (batches, kv) = read_segment(&f);
        assert_eq!(
            kv.get("dnsledger.schema_version").map(String::as_str),
            Some("3")
        );
        plain += non_null(&batches, "query_raw") + non_null(&batches, "response_raw");
        xored += non_null(&batches, "query_raw_x") + non_null(&batches, "response_raw_x");
        for b in &batches {
            for c in raw_x {
                use arrow_array::cast::AsArray;
                let a = b.column_by_name(c).expect("_x column").as_binary::<i32>();
                zero_id += a.iter().flatten().filter(|m| m[..2] == [0, 0]).count();
            }
        }
    }
    assert_eq!(plain + xored, old_raw, "every message is kept once");
    assert!(
        plain * 50 < xored,
        "{plain} stored as they are, {xored} XORed"
    );
    assert!(
        zero_id * 10 > xored * 9,
        "{zero_id} of {xored} with a zero ID"
    );

    let statements: &[&[&str]] = &[
        &["sql", ROWS2_SQL],
        // The raw bytes, as hex and as what the UDFs read from them.
        &[
            "sql",
            "SELECT ts, dns_id, encode(query_raw, 'hex') AS q, encode(response_raw, 'hex') AS r, \
             question_name(query_raw) AS qn FROM dns \
             ORDER BY ts, status, dns_id, client_port, query_size, response_size",
        ],
        &[
            "sql",
            "SELECT ts, query_raw, response_raw FROM dns_all \
             ORDER BY ts, status, dns_id, client_port, query_size, response_size",
        ],
        &[
            "sql",
            "SELECT count(*) AS n, count(query_raw) AS q, count(response_raw) AS r FROM dns",
        ],
        &["exfil"],
        &["top", "--by", "registered-domain"],
        &["who", "tunnel.com"],
    ];
    same_answers(&old, &new, statements);
    // The _x columns are not in dnsql's tables.
    for t in ["dns", "dns_all"] {
        let run = dnsql(&new, &["sql", &format!("SELECT query_raw_x FROM {t}")]);
        assert_ne!(run.code, 0, "{t} has query_raw_x");
    }
    // Versions 1, 2 and 3 together: one table, the same raw bytes thrice.
    let v1 = repo_root().join("testdata/compat/schema1");
    let run = dnsql(
        &v1,
        &[
            "--data",
            old.to_str().expect("utf-8 path"),
            "--data",
            new.to_str().expect("utf-8 path"),
            "--format",
            "json",
            "sql",
            "SELECT count(*) AS n, count(DISTINCT encode(query_raw, 'hex') || '/' || \
             coalesce(encode(response_raw, 'hex'), '')) AS d, count(query_raw) AS q FROM dns_all",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("json");
    let one = dnsql_json(
        &new,
        &[
            "sql",
            "SELECT count(*) AS n, count(DISTINCT encode(query_raw, 'hex') || '/' || \
             coalesce(encode(response_raw, 'hex'), '')) AS d, count(query_raw) AS q FROM dns_all",
        ],
    );
    assert_eq!(v["n"].as_u64(), one[0]["n"].as_u64().map(|n| 3 * n));
    assert_eq!(v["q"].as_u64(), one[0]["q"].as_u64().map(|n| 3 * n));
    assert_eq!(v["d"], one[0]["d"], "the same messages in every version");
}

/// Each of `statements` gives rows, the same over `old` as over `new` (`top`'s latency
/// percentiles are approximate: what is exact is compared).
fn same_answers(old: &Path, new: &Path, statements: &[&[&str]]) {
    let strip = |v: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        v.into_iter()
            .map(|mut r| {
                if let Some(o) = r.as_object_mut() {
                    o.retain(|k, _| !k.contains("p50") && !k.contains("p95"));
                }
                r
            })
            .collect()
    };
    for args in statements {
        let a = dnsql_json(old, args);
        let b = dnsql_json(new, args);
        assert!(!a.is_empty(), "{args:?} gave no rows");
        assert_eq!(strip(a), strip(b), "dnsql {args:?}");
    }
}
