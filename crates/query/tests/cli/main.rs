//! dnsql end to end: the real binary over the fixture segments in `testdata/segments`
//! (written by `dnsledger import` from the public captures: host-a ordinary traffic, host-b DNS
//! tunnels, host-c everything else; see scripts/make-fixture-segments.sh).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use dnsledger_schema::{Transaction, meta, status};
use dnsledger_tests::fixture::{self, files_under, write_parquet};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};

mod lake;
mod report;

const BIN: &str = env!("CARGO_BIN_EXE_dnsql");

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/segments")
}

/// Rows per host in the fixture (checked against the footers in `segments_lists_every_file`).
const HOST_A: u64 = 132;
const HOST_B: u64 = 303;
const HOST_C: u64 = 196;
/// Segment files in the fixture, and those of host-b (iodine's capture fills three at the
/// fixture's 64 KiB rotation, dns2tcp's one).
const FILES: u64 = 32;
const HOST_B_FILES: u64 = 4;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("DNSLEDGER_DATA")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Run {
    let out = command(args).output().expect("run dnsql");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `dnsql --data <fixture> <args>`, expected to succeed.
fn ok(args: &[&str]) -> String {
    let data = fixture();
    let mut all = vec!["--data", data.to_str().unwrap()];
    all.extend_from_slice(args);
    let r = run(&all);
    assert_eq!(r.code, 0, "dnsql {args:?}: {r:?}");
    assert_eq!(r.stderr, "", "dnsql {args:?} wrote to stderr: {r:?}");
    r.stdout
}

/// `(total, matched)` of a pruning metric of an EXPLAIN ANALYZE plan, e.g.
/// `files_ranges_pruned_statistics=32 total → 12 matched`.
fn metric(plan: &str, name: &str) -> (u64, u64) {
    let start = plan
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name} in {plan}"))
        + name.len()
        + 1;
    let rest = &plan[start..];
    let total: u64 = rest.split(' ').next().unwrap().parse().unwrap();
    let after = rest.split_once("→ ").unwrap().1;
    let matched: u64 = after.split(' ').next().unwrap().parse().unwrap();
    (total, matched)
}

/// The plan text of `EXPLAIN ANALYZE <sql>` (CSV keeps it whole).
fn explain_analyze(scope: &[&str], sql: &str) -> String {
    let mut args = scope.to_vec();
    let q = format!("EXPLAIN ANALYZE {sql}");
    args.extend(["--format", "json", "sql", &q]);
    let out = ok(&args);
    let row: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    row["plan"].as_str().unwrap().to_owned()
}

fn instant(rfc3339: &str) -> i64 {
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(rfc3339).unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).unwrap();
        }
    }
}

fn segment_files(root: &Path) -> Vec<PathBuf> {
    files_under(root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

/// A row of an older recorder's segment (host `old`, a parse error no current build writes).
fn tx(ts: i64, qname: &str) -> Transaction {
    Transaction {
        hostname: "old".into(),
        registered_domain: Some(qname.into()),
        parse_error: Some("not from this schema".into()),
        ..fixture::tx(ts, qname)
    }
}

// ---------------------------------------------------------------------------------------------
// The table

#[test]
fn three_hosts_are_one_table() {
    let out = ok(&[
        "--format",
        "csv",
        "sql",
        "SELECT host, count(*) AS n FROM dns GROUP BY host ORDER BY host",
    ]);
    assert_eq!(
        out,
        format!("host,n\nhost-a,{HOST_A}\nhost-b,{HOST_B}\nhost-c,{HOST_C}\n")
    );
    // dns_all is the same table without the scope.
    let all = ok(&[
        "--format",
        "csv",
        "--host",
        "host-a",
        "sql",
        "SELECT count(*) AS n FROM dns_all",
    ]);
    assert_eq!(all, format!("n\n{}\n", HOST_A + HOST_B + HOST_C));
}

#[test]
fn partition_columns_are_usable_in_where() {
    let out = ok(&[
        "--format",
        "csv",
        "sql",
        "SELECT host, date, hour, count(*) AS n FROM dns \
         WHERE date = '2023-02-21' AND hour >= 8 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    ]);
    assert_eq!(out, "host,date,hour,n\nhost-c,2023-02-21,8,1\n");
    let plan = explain_analyze(
        &[],
        "SELECT count(DISTINCT qname) FROM dns WHERE host = 'host-b'",
    );
    assert_eq!(
        metric(&plan, "files_ranges_pruned_statistics").0,
        HOST_B_FILES,
        "{plan}"
    );
}

#[test]
fn host_prunes_partitions() {
    // (A plain count(*) is answered from the footers' statistics without a scan: count names.)
    let everything = explain_analyze(&[], "SELECT count(DISTINCT qname) FROM dns");
    assert_eq!(
        metric(&everything, "files_ranges_pruned_statistics").0,
        FILES
    );
    let plan = explain_analyze(
        &["--host", "host-b"],
        "SELECT count(DISTINCT qname) FROM dns",
    );
    // Only host-b's segments reach the scan: the others are never opened.
    assert_eq!(
        metric(&plan, "files_ranges_pruned_statistics"),
        (HOST_B_FILES, HOST_B_FILES),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("files_opened={HOST_B_FILES},")),
        "{plan}"
    );
    assert!(!plan.contains("host=host-a"), "{plan}");
    let two = ok(&[
        "--host",
        "host-b",
        "--host",
        "host-c",
        "--format",
        "csv",
        "sql",
        "SELECT host, count(*) AS n FROM dns GROUP BY host ORDER BY host",
    ]);
    assert_eq!(two, format!("host,n\nhost-b,{HOST_B}\nhost-c,{HOST_C}\n"));
    let typo = run(&[
        "--data",
        fixture().to_str().unwrap(),
        "--host",
        "host-x",
        "--format",
        "csv",
        "sql",
        "SELECT count(*) AS n FROM dns",
    ]);
    assert_eq!((typo.code, typo.stdout.as_str()), (0, "n\n0\n"), "{typo:?}");
    assert_eq!(
        typo.stderr,
        "warning: no segments of host `host-x` (hosts found: host-a, host-b, host-c)\n"
    );
}

#[test]
fn since_and_until_prune_partitions() {
    let plan = explain_analyze(&["--since", "2023-01-01"], "SELECT count(*) FROM dns");
    // 8 of the 32 segments are from 2023 or later.
    assert_eq!(
        metric(&plan, "files_ranges_pruned_statistics"),
        (8, 8),
        "{plan}"
    );
    assert!(plan.contains("files_opened=8,"), "{plan}");
    let counts = ok(&[
        "--since",
        "2023-01-01",
        "--format",
        "csv",
        "sql",
        "SELECT host, count(*) AS n FROM dns GROUP BY host ORDER BY host",
    ]);
    assert_eq!(counts, "host,n\nhost-a,51\nhost-c,31\n");

    // Within one hour: the partition of the hour is read, the rows before `since` are not
    // returned.
    let window = [
        "--since",
        "2023-02-21T08:30:00Z",
        "--until",
        "2023-02-21T09:00:00+00:00",
    ];
    let plan = explain_analyze(&window, "SELECT count(*) FROM dns");
    assert_eq!(
        metric(&plan, "files_ranges_pruned_statistics"),
        (1, 1),
        "{plan}"
    );
    let mut args = window.to_vec();
    args.extend(["--format", "csv", "sql", "SELECT ts, host FROM dns"]);
    assert_eq!(ok(&args), "ts,host\n2023-02-21T08:41:57.288586Z,host-c\n");

    // Relative times: the fixture is years old, so the last 7 days hold nothing, and no
    // segment is opened.
    let data = fixture();
    let r = run(&[
        "--data",
        data.to_str().unwrap(),
        "--since",
        "7d",
        "--format",
        "csv",
        "sql",
        "EXPLAIN ANALYZE SELECT count(*) FROM dns",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains("DataSourceExec"), "{r:?}");
    let r = run(&[
        "--data",
        data.to_str().unwrap(),
        "--since",
        "7d",
        "--format",
        "csv",
        "sql",
        "SELECT count(*) AS n FROM dns",
    ]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "n\n0\n"), "{r:?}");
    // An empty answer because the range misses the record says so.
    assert_eq!(
        r.stderr,
        "warning: no segments between --since and --until (the segments found cover \
         1970-01-01T00:00:00Z to 2025-08-29T16:00:00Z)\n",
    );
    assert_eq!(
        ok(&[
            "--until",
            "90m",
            "--format",
            "csv",
            "sql",
            "SELECT count(*) AS n FROM dns"
        ]),
        format!("n\n{}\n", HOST_A + HOST_B + HOST_C)
    );
}

#[test]
fn equality_on_names_uses_bloom_filters_and_statistics() {
    // Files ruled out before the scan, by the footer's min/max and the bloom filters
    // (catalog::bloom), as --verbose reports them.
    let ruled_out = |sql: &str| -> (String, u64) {
        let data = fixture();
        let r = run(&[
            "-v",
            "--data",
            data.to_str().unwrap(),
            "--format",
            "csv",
            "sql",
            sql,
        ]);
        assert_eq!(r.code, 0, "{r:?}");
        let tail = r
            .stderr
            .split("files ruled out by bloom filters before the scan: ")
            .nth(1)
            .unwrap_or_else(|| panic!("no bloom line: {r:?}"));
        let n = tail
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        (r.stdout, n)
    };
    for (column, value, rows) in [
        ("qname", "upload.wikimedia.org", Some(8)),
        ("registered_domain", "wikimedia.org", None),
    ] {
        let (out, skipped) = ruled_out(&format!(
            "SELECT count(*) AS n FROM dns WHERE {column} = '{value}'"
        ));
        assert!(
            skipped > 0 && skipped < FILES,
            "{column}: {skipped} of {FILES}"
        );
        // The same rows without the pre-pruning (a function of the column is no probe; the
        // names are stored lower-case, so lower() changes nothing).
        let (same, none) = ruled_out(&format!(
            "SELECT count(*) AS n FROM dns WHERE lower({column}) = '{value}'"
        ));
        assert_eq!(none, 0);
        assert_eq!(out, same, "{column}");
        if let Some(rows) = rows {
            assert_eq!(out, format!("n\n{rows}\n"));
        }
        // DataFusion's scan gets only the survivors, and its statistics and bloom filters
        // still prune among them.
        let plan = explain_analyze(
            &[],
            &format!("SELECT count(*) FROM dns WHERE {column} = '{value}'"),
        );
        let (files, _) = metric(&plan, "files_ranges_pruned_statistics");
        assert_eq!(files, FILES - skipped, "{plan}");
    }
    // An IN list rules out files too, and keeps every file with one of its names.
    let (out, skipped) = ruled_out(
        "SELECT count(*) AS n FROM dns WHERE qname IN ('upload.wikimedia.org', 'nothing.invalid')",
    );
    assert!(skipped > 0, "{skipped}");
    assert_eq!(out, "n\n8\n");
}

#[test]
fn older_segments_missing_nullable_columns_read_as_null() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture(), dir.path());
    // A segment of an older schema version: parse_error did not exist yet.
    let full = fixture::batch(&[tx(1_600_000_000_000_000_000, "old.example.org")]);
    let missing = full.schema().index_of("parse_error").unwrap();
    let keep: Vec<usize> = (0..full.num_columns()).filter(|&i| i != missing).collect();
    let older = full.project(&keep).unwrap();
    write_parquet(
        &dir.path()
            .join("host=old/date=2020-09-13/hour=12/old.parquet"),
        &older,
        &[(meta::SCHEMA_VERSION, "1"), (meta::HOST, "old")],
    );
    let r = run(&[
        "--data",
        dir.path().to_str().unwrap(),
        "--format",
        "csv",
        "sql",
        "SELECT host, qname, parse_error IS NULL AS missing FROM dns WHERE host = 'old'",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "host,qname,missing\nold,old.example.org,true\n");
}

#[test]
fn host_names_that_need_escaping_match_and_read_unescaped() {
    let dir = tempfile::tempdir().unwrap();
    let ts = instant("2023-02-21T08:30:00Z");
    let segment = |host: &str| {
        let mut t = tx(ts, "example.com");
        t.hostname = host.into();
        fixture::batch(&[t])
    };
    let kv = |host: &'static str| {
        [
            (meta::SCHEMA_VERSION, "1"),
            (meta::HOST, host),
            (meta::TS_MIN, "2023-02-21T08:30:00Z"),
            (meta::TS_MAX, "2023-02-21T08:30:00Z"),
        ]
    };
    // The recorder writes `a/b c` as `host=a%2Fb%20c`.
    let tree = dir.path().join("data");
    write_parquet(
        &tree.join("segments/host=a%2Fb%20c/date=2023-02-21/hour=08/s.parquet"),
        &segment("a/b c"),
        &kv("a/b c"),
    );
    write_parquet(
        &tree.join("segments/host=plain/date=2023-02-21/hour=08/s.parquet"),
        &segment("plain"),
        &kv("plain"),
    );
    let sql = "SELECT host, hostname, count(*) AS n FROM dns GROUP BY host, hostname ORDER BY host";
    let data = tree.to_str().unwrap();
    let r = run(&[
        "--data", data, "--host", "a/b c", "--format", "csv", "sql", sql,
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "host,hostname,n\na/b c,a/b c,1\n", "{r:?}");
    assert_eq!(r.stderr, "", "{r:?}");
    // The escaped spelling is not a host name.
    let r = run(&[
        "--data",
        data,
        "--host",
        "a%2Fb%20c",
        "--format",
        "csv",
        "sql",
        sql,
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "host,hostname,n\n"),
        "{r:?}"
    );
    assert!(r.stderr.contains("hosts found: a/b c, plain"), "{r:?}");
    // A segment outside a host=/date=/hour= tree takes its host from the footer, which the
    // recorder never escapes: a `%` there is part of the name.
    let loose = dir.path().join("loose/copied.parquet");
    write_parquet(&loose, &segment("d%2Fe f"), &kv("d%2Fe f"));
    let r = run(&[
        "--data",
        loose.to_str().unwrap(),
        "--host",
        "d%2Fe f",
        "--format",
        "csv",
        "sql",
        sql,
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "host,hostname,n\nd%2Fe f,d%2Fe f,1\n", "{r:?}");
}

#[test]
fn data_paths_single_file_glob_data_dir_and_copied_host_dirs() {
    let files = segment_files(&fixture());
    let one = files[0].to_str().unwrap();
    let r = run(&[
        "--data",
        one,
        "--format",
        "csv",
        "sql",
        "SELECT host, count(*) AS n FROM dns GROUP BY host",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "host,n\nhost-a,11\n");

    // A single segment outside any host=/date=/hour= tree: partition values from its footer.
    let dir = tempfile::tempdir().unwrap();
    let loose = dir.path().join("loose.parquet");
    fs::copy(&files[0], &loose).unwrap();
    let r = run(&[
        "--data",
        loose.to_str().unwrap(),
        "--format",
        "csv",
        "sql",
        "SELECT host, date, hour, count(*) AS n FROM dns GROUP BY 1, 2, 3",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "host,date,hour,n\nhost-a,2005-03-30,8,11\n");

    let glob = format!("{}/host=host-b/*/*/*.parquet", fixture().display());
    let r = run(&[
        "--data",
        &glob,
        "--format",
        "csv",
        "sql",
        "SELECT count(*) AS n FROM dns",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("n\n{HOST_B}\n"));

    // A recorder data dir: segments/ is read, inprogress/ never is.
    let data = tempfile::tempdir().unwrap();
    copy_tree(&fixture(), &data.path().join("segments"));
    fs::create_dir_all(data.path().join("inprogress")).unwrap();
    fs::copy(&files[0], data.path().join("inprogress/open.parquet")).unwrap();
    fs::write(
        data.path().join("inprogress/open.parquet.inprogress"),
        b"PAR1 half",
    )
    .unwrap();
    // Collected trees: one directory per host copied in, side by side with a data dir.
    let collected = tempfile::tempdir().unwrap();
    copy_tree(
        &fixture().join("host=host-a"),
        &collected.path().join("web-1/segments/host=host-a"),
    );
    copy_tree(
        &fixture().join("host=host-b"),
        &collected.path().join("web-2/host=host-b"),
    );
    fs::create_dir_all(collected.path().join("web-1/inprogress")).unwrap();
    fs::copy(
        &files[0],
        collected.path().join("web-1/inprogress/x.parquet"),
    )
    .unwrap();
    let r = run(&[
        "--data",
        data.path().to_str().unwrap(),
        "--format",
        "csv",
        "sql",
        "SELECT count(*) AS n FROM dns",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("n\n{}\n", HOST_A + HOST_B + HOST_C));
    let r = run(&[
        "--data",
        collected.path().to_str().unwrap(),
        "--format",
        "csv",
        "sql",
        "SELECT host, count(*) AS n FROM dns GROUP BY host ORDER BY host",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!("host,n\nhost-a,{HOST_A}\nhost-b,{HOST_B}\n")
    );
    // The same segment given twice is one segment.
    let r = run(&[
        "--data",
        one,
        "--data",
        fixture().join("host=host-a").to_str().unwrap(),
        "--format",
        "csv",
        "sql",
        "SELECT count(*) AS n FROM dns",
    ]);
    assert_eq!(r.stdout, format!("n\n{HOST_A}\n"), "{r:?}");
}

#[test]
fn data_defaults_to_the_environment() {
    let r = command(&["--format", "csv", "sql", "SELECT count(*) AS n FROM dns"])
        .env("DNSLEDGER_DATA", fixture())
        .output()
        .unwrap();
    assert!(r.status.success());
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        format!("n\n{}\n", HOST_A + HOST_B + HOST_C)
    );
}

// ---------------------------------------------------------------------------------------------
// SQL input

#[test]
fn sql_from_file_stdin_and_several_statements() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.sql");
    fs::write(
        &file,
        "SELECT count(*) AS n FROM dns WHERE host = 'host-b'\n",
    )
    .unwrap();
    assert_eq!(
        ok(&["--format", "csv", "sql", "-f", file.to_str().unwrap()]),
        format!("n\n{HOST_B}\n")
    );

    let data = fixture();
    let mut child = command(&["--data", data.to_str().unwrap(), "--format", "csv", "sql"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT count(*) AS n FROM dns WHERE host = 'host-c';")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("n\n{HOST_C}\n")
    );

    // Statements run in order; a view made by one is visible to the next.
    let out = ok(&[
        "--format",
        "csv",
        "sql",
        "CREATE VIEW tunnels AS SELECT * FROM dns WHERE host = 'host-b'; \
         SELECT count(*) AS n FROM tunnels; SELECT 1 AS one",
    ]);
    assert_eq!(out, format!("n\n{HOST_B}\none\n1\n"));
}

#[test]
fn writing_statements_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("copy.parquet");
    let sql = format!("COPY (SELECT 1) TO '{}'", target.display());
    let r = run(&["--data", fixture().to_str().unwrap(), "sql", &sql]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.starts_with("error: "), "{r:?}");
    assert!(!target.exists());
}

// ---------------------------------------------------------------------------------------------
// Output formats

const SMALL: &str = "SELECT host, qname, qtype_name, latency_ns, answer_ips, answers FROM dns \
                     WHERE qname = 'meta.wikimedia.org' ORDER BY ts";

#[test]
fn table_format() {
    let out = ok(&["sql", SMALL]);
    let want = "\
+--------+--------------------+------------+------------+----------------+--------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------+
| host   | qname              | qtype_name | latency_ns | answer_ips     | answers                                                                                                                                                                                                                                    |
+--------+--------------------+------------+------------+----------------+--------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------+
| host-a | meta.wikimedia.org | AAAA       |     402000 | []             | [{name: meta.wikimedia.org, type: CNAME, ttl: 723, data: text.wikimedia.org}, {name: text.wikimedia.org, type: CNAME, ttl: 593, data: text.pmtpa.wikimedia.org}]                                                                           |
| host-a | meta.wikimedia.org | A          |     374000 | [208.80.152.2] | [{name: meta.wikimedia.org, type: CNAME, ttl: 723, data: text.wikimedia.org}, {name: text.wikimedia.org, type: CNAME, ttl: 593, data: text.pmtpa.wikimedia.org}, {name: text.pmtpa.wikimedia.org, type: A, ttl: 2141, data: 208.80.152.2}] |
+--------+--------------------+------------+------------+----------------+--------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------+
";
    assert_eq!(out, want);

    // Fitted to a width: every line fits, cut cells end in an ellipsis.
    let narrow = ok(&["--width", "100", "sql", SMALL]);
    let want = "\
+--------+--------------------+------------+------------+----------------+-------------------------+
| host   | qname              | qtype_name | latency_ns | answer_ips     | answers                 |
+--------+--------------------+------------+------------+----------------+-------------------------+
| host-a | meta.wikimedia.org | AAAA       |     402000 | []             | [{name: meta.wikimedia… |
| host-a | meta.wikimedia.org | A          |     374000 | [208.80.152.2] | [{name: meta.wikimedia… |
+--------+--------------------+------------+------------+----------------+-------------------------+
";
    assert_eq!(narrow, want);
    assert!(narrow.lines().all(|l| l.chars().count() == 100), "{narrow}");
    // Too wide to stay readable as a table: one record at a time.
    let narrower = ok(&["--width", "60", "sql", SMALL]);
    let want = "\
-[ RECORD 1 ]-----------------------------------------------
host       | host-a
qname      | meta.wikimedia.org
qtype_name | AAAA
latency_ns | 402000
answer_ips | []
answers    | [{name: meta.wikimedia.org, type: CNAME, ttl: …
-[ RECORD 2 ]-----------------------------------------------
host       | host-a
qname      | meta.wikimedia.org
qtype_name | A
latency_ns | 374000
answer_ips | [208.80.152.2]
answers    | [{name: meta.wikimedia.org, type: CNAME, ttl: …
";
    assert_eq!(narrower, want);
    assert!(
        narrower.lines().all(|l| l.chars().count() <= 60),
        "{narrower}"
    );
}

#[test]
fn csv_format() {
    let out = ok(&["--format", "csv", "sql", SMALL]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("host,qname,qtype_name,latency_ns,answer_ips,answers")
    );
    let a = lines.nth(1).unwrap();
    assert!(a.starts_with("host-a,meta.wikimedia.org,A,"), "{out}");
    assert!(
        a.ends_with(",[208.80.152.2],\"[{name: meta.wikimedia.org, type: CNAME, ttl: 723, data: text.wikimedia.org}, {name: text.wikimedia.org, type: CNAME, ttl: 593, data: text.pmtpa.wikimedia.org}, {name: text.pmtpa.wikimedia.org, type: A, ttl: 2141, data: 208.80.152.2}]\""),
        "{out}"
    );
    assert_eq!(lines.next(), None);
}

#[test]
fn json_format() {
    let out = ok(&["--format", "json", "sql", SMALL]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["qtype_name"], "AAAA");
    assert_eq!(rows[0]["answer_ips"], serde_json::json!([]));
    assert_eq!(rows[1]["answer_ips"], serde_json::json!(["208.80.152.2"]));
    assert_eq!(
        rows[1]["answers"][2],
        serde_json::json!({"name": "text.pmtpa.wikimedia.org", "type": "A", "ttl": 2141, "data": "208.80.152.2"})
    );
    // Every column is present, in order, NULL included.
    let first = out.lines().next().unwrap();
    let positions: Vec<usize> = [
        "host",
        "qname",
        "qtype_name",
        "latency_ns",
        "answer_ips",
        "answers",
    ]
    .iter()
    .map(|k| {
        first
            .find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("{k} in {first}"))
    })
    .collect();
    assert!(positions.is_sorted(), "{first}");
    let nulls = ok(&[
        "--format",
        "json",
        "sql",
        "SELECT qname, pid FROM dns WHERE qname = 'meta.wikimedia.org' LIMIT 1",
    ]);
    assert_eq!(nulls, "{\"qname\":\"meta.wikimedia.org\",\"pid\":null}\n");
}

#[test]
fn parquet_format_to_a_file_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.parquet");
    let out = ok(&[
        "--format",
        "parquet",
        "-o",
        file.to_str().unwrap(),
        "sql",
        SMALL,
    ]);
    assert_eq!(out, "");
    let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&file).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(batch.num_rows(), 2);
    let schema = batch.schema();
    let answers = schema.field_with_name("answers").unwrap();
    assert_eq!(
        answers.data_type(),
        dnsledger_schema::schema()
            .field_with_name("answers")
            .unwrap()
            .data_type(),
        "lists stay lists"
    );

    // Re-read by dnsql itself, as a foreign file it is refused, not misread.
    let r = run(&[
        "--data",
        file.to_str().unwrap(),
        "sql",
        "SELECT count(*) FROM dns",
    ]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("not a dnsledger segment"), "{r:?}");
}

#[test]
fn parquet_is_refused_on_a_terminal() {
    // `script` gives dnsql a pseudo-terminal as stdout.
    let cmd = format!(
        "{BIN} --data {} --format parquet sql 'SELECT 1'",
        fixture().display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("run script(1) from util-linux");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("refusing to write parquet to a terminal"),
        "{text}"
    );
}

#[test]
fn empty_results_print_the_header() {
    let none = "SELECT host, qname FROM dns WHERE qname = 'no.such.name'";
    assert_eq!(ok(&["--format", "csv", "sql", none]), "host,qname\n");
    assert_eq!(
        ok(&["sql", none]),
        "+------+-------+\n| host | qname |\n+------+-------+\n"
    );
    assert_eq!(ok(&["--format", "json", "sql", none]), "");
}

#[test]
fn limit_caps_rows() {
    let out = ok(&[
        "--format",
        "csv",
        "--limit",
        "3",
        "sql",
        "SELECT qname FROM dns",
    ]);
    assert_eq!(out.lines().count(), 4, "{out}");
}

#[test]
fn closed_stdout_pipe_is_not_an_error() {
    let data = fixture();
    let mut child = command(&[
        "--data",
        data.to_str().unwrap(),
        "--format",
        "csv",
        "sql",
        "SELECT * FROM dns CROSS JOIN (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3)",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[test]
fn corrupt_foreign_and_newer_files_are_named_skipped_and_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("segments");
    copy_tree(&fixture(), &root);
    // Truncated: one of host-a's segments.
    let files = segment_files(&root);
    let truncated = files[0].clone();
    let len = fs::metadata(&truncated).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let truncated_rows = 11;
    // Foreign: a Parquet file that is not a segment, in a partition directory.
    let foreign = root.join("host=host-b/date=2010-08-21/hour=02/foreign.parquet");
    let batch = RecordBatch::try_from_iter([(
        "x",
        Arc::new(arrow::array::Int32Array::from(vec![1, 2, 3])) as ArrayRef,
    )])
    .unwrap();
    write_parquet(&foreign, &batch, &[]);
    // Newer: written by a recorder of a schema version this dnsql does not know.
    let newer = root.join("host=host-c/date=2030-01-01/hour=00/newer.parquet");
    write_parquet(
        &newer,
        &fixture::batch(&[tx(1_893_456_000_000_000_000, "future.example")]),
        &[(meta::SCHEMA_VERSION, "99"), (meta::HOST, "host-c")],
    );
    // Not segments: never read.
    fs::write(root.join("host=host-a/README.txt"), "notes").unwrap();
    fs::write(
        root.join("host=host-a/date=2005-03-30/hour=08/.hidden.parquet"),
        "x",
    )
    .unwrap();
    fs::write(
        root.join("host=host-a/date=2005-03-30/hour=08/seg.parquet.tmp"),
        "x",
    )
    .unwrap();

    let r = run(&[
        "--data",
        dir.path().to_str().unwrap(),
        "--format",
        "csv",
        "sql",
        "SELECT host, count(*) AS n FROM dns GROUP BY host ORDER BY host",
    ]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "host,n\nhost-a,{}\nhost-b,{HOST_B}\nhost-c,{HOST_C}\n",
            HOST_A - truncated_rows
        )
    );
    let line_for = |p: &Path| {
        r.stderr
            .lines()
            .find(|l| l.contains(p.to_str().unwrap()))
            .unwrap_or_else(|| panic!("{} not named: {r:?}", p.display()))
            .to_owned()
    };
    assert!(
        line_for(&truncated).contains("truncated or corrupt"),
        "{r:?}"
    );
    assert!(
        line_for(&foreign).contains("not a dnsledger segment"),
        "{r:?}"
    );
    assert!(line_for(&newer).contains("schema version 99"), "{r:?}");
    assert!(line_for(&newer).contains("newer dnsql"), "{r:?}");
    assert!(!r.stderr.contains("README"), "{r:?}");
    assert!(!r.stderr.contains("hidden"), "{r:?}");
    assert!(
        r.stderr.contains("partial answer: 3 segments skipped"),
        "{r:?}"
    );

    // A query that does not reach the bad files is complete.
    let clean = ok(&[
        "--host",
        "host-c",
        "--until",
        "2024-01-01",
        "--format",
        "csv",
        "sql",
        "SELECT count(*) AS n FROM dns",
    ]);
    let r = run(&[
        "--data",
        dir.path().to_str().unwrap(),
        "--host",
        "host-c",
        "--until",
        "2024-01-01",
        "--format",
        "csv",
        "sql",
        "SELECT count(*) AS n FROM dns",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, clean);
}

#[test]
fn corrupt_data_behind_a_good_footer_is_found_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture(), dir.path());
    let victim = segment_files(&dir.path().join("host=host-b"))[0].clone();
    let victim_rows: u64 = dnsledger_tests::segments::read_segment(&victim)
        .0
        .iter()
        .map(|b| b.num_rows() as u64)
        .sum();
    let mut bytes = fs::read(&victim).unwrap();
    let half = bytes.len() / 2;
    for b in &mut bytes[200..half] {
        *b = b.wrapping_mul(7).wrapping_add(13);
    }
    fs::write(&victim, bytes).unwrap();
    let r = run(&[
        "--data",
        dir.path().to_str().unwrap(),
        "--format",
        "csv",
        "sql",
        "SELECT host, count(*) AS n, count(DISTINCT qname) AS names FROM dns GROUP BY host ORDER BY host",
    ]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains(victim.to_str().unwrap()), "{r:?}");
    assert!(r.stdout.starts_with("host,n,names\nhost-a,132,"), "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("\nhost-b,{},", HOST_B - victim_rows)),
        "the other host-b segments are answered: {r:?}"
    );
}

#[test]
fn no_segments_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("segments")).unwrap();
    fs::write(dir.path().join("segments/notes.txt"), "x").unwrap();
    let r = run(&["--data", dir.path().to_str().unwrap(), "sql", "SELECT 1"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout, "");
    let looked = dir.path().join("segments");
    assert!(
        r.stderr.starts_with(&format!(
            "error: no segments found (looked for *.parquet in `{}`)",
            looked.display()
        )),
        "{r:?}"
    );
    assert!(r.stderr.contains("hint: "), "{r:?}");

    let missing = dir.path().join("nowhere");
    let r = run(&["--data", missing.to_str().unwrap(), "sql", "SELECT 1"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(missing.to_str().unwrap()), "{r:?}");
    assert!(r.stderr.contains("does not exist"), "{r:?}");
}

#[test]
fn bad_sql_exits_1_with_a_hint() {
    let data = fixture();
    let data = data.to_str().unwrap();
    let r = run(&["--data", data, "sql", "SELECT qnme FROM dns"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr
            .starts_with("error: Schema error: No field named qnme"),
        "{r:?}"
    );
    let hint = r
        .stderr
        .lines()
        .find(|l| l.starts_with("hint: "))
        .unwrap_or_else(|| panic!("no hint: {r:?}"));
    let file_only = dnsledger_schema::derived::FILE_ONLY;
    for column in dnsledger_schema::schema().fields() {
        let name = column.name().as_str();
        if file_only.contains(&name) {
            // In the files only: `dns` shows them restored as query_raw / response_raw.
            assert!(!hint.contains(name), "{name} in {hint}");
        } else {
            assert!(hint.contains(name), "{column} missing from {hint}");
        }
    }
    assert!(hint.contains("host, date, hour"), "{hint}");

    let r = run(&["--data", data, "sql", "SELECT * FROM dnss"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("hint: the tables are `dns`"), "{r:?}");

    let r = run(&["--data", data, "sql", "SELEC 1"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "the message once: {r:?}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--since", "yesterday", "sql", "SELECT 1"][..],
        &["--format", "xml", "sql", "SELECT 1"],
        &["timeline"],
        &["nosuchcommand"],
    ] {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert_eq!(r.stdout, "");
    }
    let r = run(&["--since", "2h", "--until", "3h", "sql", "SELECT 1"]);
    assert_eq!(r.code, 2, "{r:?}");
}

#[test]
fn help_documents_exit_codes() {
    let r = run(&["--help"]);
    assert_eq!(r.code, 0);
    for code in ["0 ", "1 ", "2 ", "3 ", "130"] {
        assert!(
            r.stdout.lines().any(|l| l.trim_start().starts_with(code)),
            "exit code {code} not documented: {}",
            r.stdout
        );
    }
}

// ---------------------------------------------------------------------------------------------
// schema and segments

#[test]
fn schema_lists_every_column_with_its_meaning() {
    let out = run(&["--format", "json", "schema"]);
    assert_eq!(out.code, 0, "{out:?}");
    let rows: BTreeMap<String, serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["column"].as_str().unwrap().to_owned(), v)
        })
        .collect();
    let schema = dnsledger_schema::schema();
    let file_only = dnsledger_schema::derived::FILE_ONLY;
    // The stored columns (but the files-only `_x` ones, which `dns` shows restored as
    // query_raw / response_raw), the partition keys and the computed qname_sent.
    assert_eq!(rows.len(), schema.fields().len() - file_only.len() + 4);
    for name in file_only {
        assert!(!rows.contains_key(name), "{name} listed");
    }
    assert_eq!(
        rows["qname_sent"]["meaning"],
        dnsledger_schema::column_doc("qname_sent")
    );
    assert_eq!(rows["qname_sent"]["partition"], false);
    for field in schema
        .fields()
        .iter()
        .filter(|f| !file_only.contains(&f.name().as_str()))
    {
        let row = &rows[field.name()];
        assert_eq!(row["meaning"], dnsledger_schema::column_doc(field.name()));
        assert!(!row["meaning"].as_str().unwrap().is_empty());
        assert_eq!(row["nullable"], field.is_nullable());
        assert_eq!(row["partition"], false);
    }
    for key in ["host", "date", "hour"] {
        assert_eq!(rows[key]["partition"], true);
    }
    assert_eq!(rows["ts"]["type"], "timestamp(ns, UTC)");
    assert_eq!(rows["comm"]["type"], "string");
    assert_eq!(rows["answer_ips"]["type"], "list<string>");
    // The table format works without any data.
    let table = run(&["--data", "/nonexistent", "schema"]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.contains("| qname "), "{table:?}");
}

#[test]
fn segments_lists_every_file_with_its_footer_numbers() {
    let out = ok(&["--format", "json", "segments"]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let files = segment_files(&fixture());
    assert_eq!(files.len() as u64, FILES);
    assert_eq!(rows.len() as u64, FILES);
    let mut per_host: BTreeMap<String, u64> = BTreeMap::new();
    for file in &files {
        let row = rows
            .iter()
            .find(|r| Path::new(r["path"].as_str().unwrap()) == file)
            .unwrap_or_else(|| panic!("{} not listed", file.display()));
        let reader = SerializedFileReader::new(fs::File::open(file).unwrap()).unwrap();
        let md = reader.metadata().file_metadata();
        let kv = |k: &str| {
            md.key_value_metadata()
                .unwrap()
                .iter()
                .find(|e| e.key == k)
                .and_then(|e| e.value.clone())
                .unwrap()
        };
        assert_eq!(row["rows"], md.num_rows(), "{}", file.display());
        assert_eq!(row["rows"].to_string(), kv(meta::TRANSACTIONS));
        assert_eq!(row["dropped_kernel"].to_string(), kv(meta::DROPPED_KERNEL));
        assert_eq!(row["dropped_user"].to_string(), kv(meta::DROPPED_USER));
        assert_eq!(row["host"], kv(meta::HOST));
        assert_eq!(row["source"], "import");
        assert_eq!(row["schema_version"], 1);
        assert_eq!(row["bytes"], fs::metadata(file).unwrap().len());
        // RFC 3339 with nanoseconds in the footer; the listing prints the same instants.
        for key in ["ts_min", "ts_max"] {
            let footer = kv(&format!("dnsledger.{key}"));
            let shown = row[key].as_str().unwrap();
            assert_eq!(
                instant(&footer),
                instant(shown),
                "{key} of {}",
                file.display()
            );
        }
        *per_host
            .entry(row["host"].as_str().unwrap().to_owned())
            .or_default() += row["rows"].as_u64().unwrap();
    }
    // The footers' numbers agree with the rows a query counts.
    assert_eq!(
        per_host,
        BTreeMap::from([
            ("host-a".to_owned(), HOST_A),
            ("host-b".to_owned(), HOST_B),
            ("host-c".to_owned(), HOST_C)
        ])
    );
    // Ordered by host and time.
    let order: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["host"].as_str().unwrap().to_owned(),
                r["ts_min"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);

    // Scope applies; the table format shows the same listing.
    let b = ok(&["--host", "host-b", "--format", "csv", "segments"]);
    assert_eq!(b.lines().count() as u64, 1 + HOST_B_FILES, "{b}");
    assert!(b.starts_with(
        "host,ts_min,ts_max,rows,dropped_kernel,dropped_user,rows_lost,cut_by_cap,pair_evicted,bytes,source,"
    ));
    assert!(
        b.contains("\nhost-b,2010-08-21T02:10:40.051082Z,2010-08-21T02:10:53.540213Z,68,0,0,0,0,0,51708,import,"),
        "{b}"
    );
}

#[test]
fn segments_names_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture(), dir.path());
    let victim = segment_files(dir.path())[3].clone();
    fs::write(&victim, b"PAR1 not really").unwrap();
    let r = run(&[
        "--data",
        dir.path().to_str().unwrap(),
        "--format",
        "csv",
        "segments",
    ]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(
        r.stdout.lines().count() as u64,
        FILES,
        "header and the other segments: {r:?}"
    );
    assert!(r.stderr.contains(victim.to_str().unwrap()), "{r:?}");
}

#[test]
fn interrupt_exits_130() {
    let data = fixture();
    // Minutes of work (a triple cross join of 631 rows).
    let mut child = command(&[
        "--data",
        data.to_str().unwrap(),
        "sql",
        "SELECT sum(a.latency_ns + b.latency_ns + c.latency_ns) FROM dns a, dns b, dns c",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Signal once dnsql catches SIGINT (a loaded machine may take a while to start it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let catches_sigint = || {
        let status = fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (2 - 1)) != 0)
    };
    while !catches_sigint() {
        assert!(
            std::time::Instant::now() < deadline,
            "dnsql never caught SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("dnsql did not stop within 30 s of SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert_eq!(stderr, "interrupted\n");
}

// ---------------------------------------------------------------------------------------------
// Recipes and SQL functions, through the same path as `dnsql sql`

/// The fixture plus host `lab`: a segment written the way the live recorder writes them, with
/// processes (curl asking for example.net names, sshd for an example.org name).
fn attributed_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture(), dir.path());
    let t0: i64 = 1_714_564_800_000_000_000; // 2024-05-01T12:00:00Z
    let row = |dt_ms: i64, pid: u32, comm: &str, qname: &str, qtype: &str, ip: Option<&str>| {
        let ts = t0 + dt_ms * 1_000_000;
        Transaction {
            ts,
            query_ts: Some(ts),
            response_ts: Some(ts + 2_000_000),
            latency_ns: Some(2_000_000),
            status: status::ANSWERED,
            hostname: "lab".into(),
            pid: Some(pid),
            tid: Some(pid),
            uid: Some(1000),
            comm: Some(comm.into()),
            exe: Some(format!("/usr/bin/{comm}").into()),
            transport: "udp",
            ip_version: 4,
            client_ip: "10.0.0.2".into(),
            client_port: 40000,
            server_ip: "10.0.0.53".into(),
            server_port: 53,
            rcode: Some(0),
            rcode_name: Some("NOERROR".into()),
            qname: Some(qname.into()),
            qtype_name: Some(qtype.into()),
            registered_domain: Some(qname.split_once('.').unwrap().1.into()),
            answer_ips: Some(ip.into_iter().map(str::to_owned).collect()),
            answers: Some(
                ip.into_iter()
                    .map(|ip| dnsledger_schema::Answer {
                        name: qname.into(),
                        rtype: qtype.into(),
                        ttl: 60,
                        data: ip.into(),
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    };
    let rows = [
        row(0, 4242, "curl", "api.example.net", "A", Some("192.0.2.10")),
        row(1, 4242, "curl", "api.example.net", "AAAA", None),
        row(
            2_000,
            4242,
            "curl",
            "cdn.example.net",
            "A",
            Some("192.0.2.11"),
        ),
        row(
            3_000,
            777,
            "sshd",
            "ntp.example.org",
            "A",
            Some("192.0.2.12"),
        ),
    ];
    write_parquet(
        &dir.path()
            .join("host=lab/date=2024-05-01/hour=12/lab.parquet"),
        &fixture::batch(&rows),
        &[
            (meta::SCHEMA_VERSION, "1"),
            (meta::HOST, "lab"),
            (meta::SOURCE, "bpf"),
        ],
    );
    dir
}

fn run_in(dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--data", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&all)
}

#[test]
fn who_names_the_processes_behind_a_name() {
    let dir = attributed_tree();
    let r = run_in(dir.path(), &["--format", "json", "who", "example.net"]);
    assert_eq!(r.code, 0, "{r:?}");
    let rows: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{r:?}");
    assert_eq!(rows[0]["hostname"], "lab");
    assert_eq!(rows[0]["comm"], "curl");
    assert_eq!(rows[0]["exe"], "/usr/bin/curl");
    assert_eq!(rows[0]["pid"], 4242);
    assert_eq!(rows[0]["queries"], 3);
    assert_eq!(rows[0]["names"], 2);
    assert_eq!(rows[0]["first_seen"], "2024-05-01T12:00:00Z");
    assert_eq!(
        rows[0]["queried_names"],
        serde_json::json!(["api.example.net", "cdn.example.net"])
    );
    // The scope applies to recipes too.
    let r = run_in(
        dir.path(),
        &[
            "--until",
            "2024-01-01",
            "--format",
            "csv",
            "who",
            "example.net",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.lines().count(), 1, "header only: {r:?}");
}

#[test]
fn top_ranks_processes_and_rcodes() {
    let dir = attributed_tree();
    let r = run_in(
        dir.path(),
        &["--host", "lab", "--format", "csv", "top", "--by", "process"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let mut lines = r.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let first: Vec<&str> = lines.next().unwrap().split(',').collect();
    let get = |row: &[&str], c: &str| row[header.iter().position(|h| *h == c).unwrap()].to_owned();
    assert_eq!(get(&first, "comm"), "curl");
    assert_eq!(get(&first, "pid"), "4242");
    assert_eq!(get(&first, "queries"), "3");
    let second: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(get(&second, "comm"), "sshd");

    let rcodes = ok(&["--format", "csv", "top", "--by", "rcode", "-n", "2"]);
    let rows: Vec<&str> = rcodes.lines().collect();
    assert_eq!(rows.len(), 3, "{rcodes}");
    assert!(rows[1].starts_with("NOERROR,521,"), "{rcodes}");
}

#[test]
fn timeline_follows_one_process_in_order() {
    let dir = attributed_tree();
    let r = run_in(
        dir.path(),
        &[
            "--host", "lab", "--format", "json", "timeline", "--pid", "4242",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let rows: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["qname"].as_str().unwrap(), r["qtype"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("api.example.net", "A"),
            ("api.example.net", "AAAA"),
            ("cdn.example.net", "A")
        ]
    );
    let by_comm = run_in(
        dir.path(),
        &["--format", "csv", "timeline", "--comm", "sshd"],
    );
    assert_eq!(by_comm.code, 0, "{by_comm:?}");
    assert_eq!(by_comm.stdout.lines().count(), 2, "{by_comm:?}");
    assert!(by_comm.stdout.contains("ntp.example.org"), "{by_comm:?}");
}

#[test]
fn exfil_ranks_the_tunnels_first_and_flags_nothing_ordinary() {
    let out = ok(&["--format", "json", "exfil"]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let top: Vec<&str> = rows[..2]
        .iter()
        .map(|r| r["domain"].as_str().unwrap())
        .collect();
    // dns2tcp (tunnel.com) and iodine (pirate.sea), both on host-b.
    assert_eq!(top, ["tunnel.com", "pirate.sea"]);
    for r in &rows[..2] {
        assert_eq!(r["flagged"], true, "{r}");
        assert_eq!(r["hostname"], "host-b");
        assert!(!r["reasons"].as_str().unwrap().is_empty());
    }
    for r in &rows[2..] {
        assert_eq!(r["flagged"], false, "only the tunnels are flagged: {r}");
    }
    // Ordinary browsing and resolver traffic (host-a) raises nothing.
    let ordinary = ok(&["--host", "host-a", "--format", "json", "exfil"]);
    assert!(
        ordinary.lines().all(|l| l.contains("\"flagged\":false")),
        "{ordinary}"
    );
    let help = run(&["exfil", "--help"]);
    assert!(help.stdout.contains("anomalous-dns"), "{help:?}");
}

#[test]
fn nxdomain_lists_failing_names_per_process_and_domain() {
    let out = ok(&["--format", "json", "nxdomain"]);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["hostname"], "host-c");
    assert_eq!(first["domain"], "google.com");
    assert_eq!(first["failing_names"], 20);
    assert_eq!(first["nxdomain"], 20);
}

#[test]
fn show_renders_transactions_like_dig() {
    let out = ok(&["show", "meta.wikimedia.org"]);
    assert!(
        out.starts_with(";; TRANSACTION meta.wikimedia.org AAAA on host-a\n"),
        "{out}"
    );
    assert!(out.contains("\n;; ANSWER SECTION:\n"), "{out}");
    assert!(
        out.contains("\ntext.pmtpa.wikimedia.org.\t2141\tIN\tA\t208.80.152.2\n"),
        "{out}"
    );
    assert_eq!(out.matches(";; TRANSACTION ").count(), 2);
    // Another format prints the selected rows instead.
    let json = ok(&["--format", "json", "show", "meta.wikimedia.org"]);
    assert_eq!(json.lines().count(), 2, "{json}");
    // Selector terms.
    let by_id = ok(&["show", "name=meta.wikimedia.org", "qtype=A"]);
    assert_eq!(by_id.matches(";; TRANSACTION ").count(), 1, "{by_id}");
    // A bad selector is a usage error.
    let r = run(&["--data", fixture().to_str().unwrap(), "show", "color=blue"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("unknown selector key `color`"), "{r:?}");
}

#[test]
fn sql_functions_are_available_and_documented() {
    let out = ok(&[
        "--format",
        "csv",
        "sql",
        "SELECT label_count('a.b.example.com') AS labels, registered_domain('www.example.co.uk') AS rd, \
         max_label_len('abc.de') AS longest",
    ]);
    assert_eq!(out, "labels,rd,longest\n4,example.co.uk,3\n");
    let help = run(&["sql", "--help"]);
    assert_eq!(help.code, 0);
    for f in [
        "registered_domain",
        "label_count",
        "max_label_len",
        "label_entropy",
    ] {
        assert!(
            help.stdout.contains(f),
            "{f} not in sql --help: {}",
            help.stdout
        );
    }
}

// ---------------------------------------------------------------------------------------------
// export --ocsf, --print-sql, schema --ddl

#[test]
fn export_ocsf_writes_one_event_per_row_and_refuses_csv() {
    let out = ok(&["--host", "host-a", "export", "--ocsf"]);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len() as u64, HOST_A);
    assert!(events.iter().all(|e| e["class_uid"] == 4003
        && e["metadata"]["version"] == "1.8.0"
        && e["device"]["hostname"] == "host-a"));
    let data = fixture();
    let data = data.to_str().unwrap();
    let csv = run(&["--data", data, "--format", "csv", "export", "--ocsf"]);
    assert_eq!(csv.code, 2, "{csv:?}");
    assert!(csv.stderr.contains("--format json or parquet"), "{csv:?}");
    let bare = run(&["--data", data, "export"]);
    assert_eq!(bare.code, 2, "{bare:?}");
}

#[test]
fn print_sql_is_for_recipes_and_reads_no_data() {
    // No data is needed to print SQL.
    let sql = run(&[
        "--data",
        "/nonexistent",
        "--print-sql",
        "--dialect",
        "spark",
        "--lake",
        "s3a://b/lake",
        "nxdomain",
    ]);
    assert_eq!(sql.code, 0, "{sql:?}");
    assert!(
        sql.stdout
            .contains(") USING parquet OPTIONS (path 's3a://b/lake');")
    );
    assert!(sql.stdout.trim_end().ends_with(';'), "{sql:?}");
    let not_recipe = run(&["--data", "/nonexistent", "--print-sql", "sql", "SELECT 1"]);
    assert_eq!(not_recipe.code, 2, "{not_recipe:?}");
    assert!(not_recipe.stderr.contains("--print-sql is for the recipes"));
}

#[test]
fn schema_ddl_names_every_column_and_the_partitions() {
    for engine in ["athena", "trino"] {
        let r = run(&["schema", "--ddl", engine, "--location", "s3://b/segments/"]);
        assert_eq!(r.code, 0, "{r:?}");
        for f in dnsledger_schema::schema().fields() {
            assert!(
                r.stdout.contains(f.name().as_str()),
                "{engine}: {}",
                f.name()
            );
        }
        assert!(r.stdout.contains("'s3://b/segments/'"), "{r:?}");
    }
    let bad = run(&["schema", "--ddl", "oracle"]);
    assert_eq!(bad.code, 2, "{bad:?}");
}

/// A scan of many files is read in chunks (`catalog::chunked`; by default over 4,096 files):
/// forced on for every scan of the fixture in chunks of 3 files, every answer is the same as
/// the one plan's, and the plan is the chunked one.
#[test]
fn chunked_scans_answer_like_one_scan() {
    let data = fixture();
    let data = data.to_str().expect("utf-8 path");
    let queries: &[&[&str]] = &[
        &["sql", "SELECT count(*) FROM dns"],
        &[
            "sql",
            "SELECT host, qname, CAST(qtype_name AS VARCHAR) AS t, count(*) AS n FROM dns \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        ],
        &[
            "sql",
            "SELECT ts, qname, response_raw FROM dns WHERE qname = 'upload.wikimedia.org' \
             ORDER BY ts",
        ],
        &[
            "sql",
            "SELECT host, count(*) FROM dns WHERE host = 'host-b' AND rcode_name = 'NXDOMAIN' \
             GROUP BY host",
        ],
        &[
            "sql",
            "SELECT ts, qname FROM dns ORDER BY ts DESC, qname LIMIT 7",
        ],
        &["who", "wikimedia.org"],
        &["top", "--by", "registered-domain", "-n", "0"],
        &["exfil"],
        &["nxdomain"],
        &["show", "under=wikimedia.org"],
    ];
    for q in queries {
        let mut args = vec!["--data", data, "--format", "csv"];
        if q[0] == "show" {
            args.truncate(2);
        }
        args.extend_from_slice(q);
        let one = run(&args);
        assert_eq!(one.code, 0, "{q:?}: {one:?}");
        let chunked = command(&args)
            .env("DNSQL_SCAN_CHUNKS", "0,3")
            .output()
            .expect("run dnsql");
        assert_eq!(chunked.status.code(), Some(0), "{q:?}");
        // `top`'s p50/p95 are approximate (t-digest: they depend on the order rows arrive
        // in); every other column must be equal.
        let exact = |out: &str| -> Vec<String> {
            out.lines()
                .map(|l| {
                    if q[0] == "top" {
                        let cells: Vec<&str> = l.split(',').collect();
                        let n = cells.len();
                        [&cells[..n - 3], &cells[n - 1..]].concat().join(",")
                    } else {
                        l.to_owned()
                    }
                })
                .collect()
        };
        assert_eq!(
            exact(&String::from_utf8_lossy(&chunked.stdout)),
            exact(&one.stdout),
            "{q:?}: chunked and one scan differ"
        );
        assert!(!one.stdout.trim().is_empty(), "{q:?}: no rows");
    }
    let explain = |env: Option<&str>| {
        let mut c = command(&[
            "--data",
            data,
            "--format",
            "csv",
            "sql",
            "EXPLAIN SELECT count(*) FROM dns WHERE rcode_name = 'NXDOMAIN'",
        ]);
        if let Some(v) = env {
            c.env("DNSQL_SCAN_CHUNKS", v);
        }
        String::from_utf8_lossy(&c.output().expect("run dnsql").stdout).into_owned()
    };
    let chunked = explain(Some("0,3"));
    assert!(
        chunked.contains(&format!("ChunkedSegmentScan: files={FILES}, chunks=")),
        "{chunked}"
    );
    assert!(!explain(None).contains("ChunkedSegmentScan"));
}
