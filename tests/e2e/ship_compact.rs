//! Shipping and compaction keep the lake readable by any engine: after a host ships its
//! segments, compacts locally and ships again, the lake holds each row once for an engine that
//! knows nothing of `dnsledger.compacted_from` (DuckDB reading every object under the prefix),
//! also when the shipper is killed between the compacted upload and the deletes. Against a
//! real S3 server (moto), read back through boto3 and DuckDB.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use dnsledger_tests::harness::{DNSLEDGER, dnsql_bin, duckdb_lines, repo_root};
use dnsledger_tests::moto::Moto;

use crate::ship::{
    assert_lake_mirrors, fixture_data, listings, local_segments, ship, ship_command, summary, text,
};

/// Downloads every object below `bucket/prefix` into `dest` (keys relative to the prefix).
const DOWNLOAD: &str = r#"
import boto3, os, sys
endpoint, bucket, prefix, dest = sys.argv[1:5]
s3 = boto3.client('s3', endpoint_url=endpoint, region_name='us-east-1',
                  aws_access_key_id='testing', aws_secret_access_key='testing')
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix + '/'):
    for o in page.get('Contents', []):
        path = os.path.join(dest, o['Key'][len(prefix) + 1:])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(s3.get_object(Bucket=bucket, Key=o['Key'])['Body'].read())
"#;

/// Every row of every `*.parquet` below a directory, as an engine that does not know the
/// compaction rule reads them (no file skipped): one line per row, every column (times also
/// as integer ns; the columns schema version 2 stores only where not derivable and the raw
/// messages version 3 stores with the ID XORed out computed as dnsql's view does, `{DERIVED}`,
/// the files-only `_x` columns left out) plus the `host=` partition, sorted.
const DUCK_ALL: &str = r#"
import duckdb, json, os, sys
root = sys.argv[1]
files = sorted(os.path.join(dp, f) for dp, _, fn in os.walk(root) for f in fn
               if f.endswith(".parquet"))
rows = duckdb.sql("SELECT host, to_json(t)::VARCHAR, epoch_ns(ts), "
                  "coalesce(epoch_ns(query_ts), -1), coalesce(epoch_ns(response_ts), -1) "
                  "FROM (SELECT * EXCLUDE ({FILE_ONLY}) REPLACE ({DERIVED}) FROM (SELECT * FROM "
                  "read_parquet(?, union_by_name = true, hive_partitioning = true) "
                  "UNION ALL BY NAME SELECT {FILE_ONLY_NULLS} WHERE false)) t",
                  params=[files]).fetchall()
# A column a segment lacks (written before the column existed) reads as NULL: a NULL and a
# missing column are the same row (compaction writes every column of the current schema).
def row(host, doc, *ts):
    kept = {k: v for k, v in json.loads(doc).items() if v is not None}
    return " ".join([host, json.dumps(kept, sort_keys=True, separators=(",", ":"))] + [str(t) for t in ts])
for line in sorted(row(*r) for r in rows):
    print(line)
"#;

fn duck_all(root: &Path) -> Vec<String> {
    let derived: Vec<String> =
        dnsledger_schema::derived::sql(dnsledger_schema::derived::Dialect::Duckdb)
            .into_iter()
            .map(|(c, e)| format!("{e} AS {c}"))
            .collect();
    let file_only = dnsledger_schema::derived::FILE_ONLY;
    let nulls: Vec<String> = file_only
        .iter()
        .map(|c| format!("NULL::BLOB AS {c}"))
        .collect();
    duckdb_lines(
        &DUCK_ALL
            .replace("{DERIVED}", &derived.join(", "))
            .replace("{FILE_ONLY_NULLS}", &nulls.join(", "))
            .replace("{FILE_ONLY}", &file_only.join(", ")),
        root,
    )
}

/// The lake's rows as DuckDB reads a plain copy of every object under the prefix.
fn lake_rows(moto: &Moto, bucket: &str, prefix: &str, scratch: &Path) -> Vec<String> {
    let dest = scratch.join(format!("lake-copy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).expect("mkdir");
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .args(["-c", DOWNLOAD, &moto.endpoint(), bucket, prefix])
        .arg(&dest)
        .output()
        .expect("run boto3");
    assert!(out.status.success(), "boto3: {}", text(&out.stderr));
    let rows = duck_all(&dest);
    std::fs::remove_dir_all(&dest).expect("rm");
    rows
}

fn compact(data: &Path) {
    let out = Command::new(&*DNSLEDGER)
        .args(["compact", "--data-dir"])
        .arg(data)
        .env_remove("DNSLEDGER_FAILPOINT")
        .output()
        .expect("run compact");
    assert!(out.status.success(), "compact: {}", text(&out.stderr));
}

fn status(data: &Path) -> String {
    let out = Command::new(&*DNSLEDGER)
        .args(["status", "--data-dir"])
        .arg(data)
        .output()
        .expect("status");
    text(&out.stdout)
}

/// `shipping to URL: shipped N, pending N, lag S s` → (N, N, S).
fn shipping_numbers(status: &str, url: &str) -> (u64, u64, u64) {
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("shipping to {url}:")))
        .unwrap_or_else(|| panic!("no shipping line for {url}:\n{status}"));
    let rest = &line[line.find(": ").expect("colon") + 2..];
    let nums: Vec<u64> = rest
        .split([' ', ','])
        .take(9)
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 3, "{line}");
    (nums[0], nums[1], nums[2])
}

/// Partitions (directories) of the fixture with more than one segment: what compaction merges.
fn multi_segment_partitions(segments: &[String]) -> (usize, usize) {
    let mut by_dir = std::collections::BTreeMap::<&str, usize>::new();
    for s in segments {
        *by_dir
            .entry(s.rsplit_once('/').expect("dir").0)
            .or_default() += 1;
    }
    let multi: Vec<usize> = by_dir.values().copied().filter(|n| *n > 1).collect();
    (multi.len(), multi.iter().sum())
}

/// Ships, compacts, and checks the state before the second shipping run. Returns (the rows
/// before compaction, the compacted partitions, their inputs).
fn ship_then_compact(
    moto: &Moto,
    data: &Path,
    url: &str,
    bucket: &str,
    prefix: &str,
) -> (Vec<String>, usize, usize) {
    let before = local_segments(data);
    let (parts, inputs) = multi_segment_partitions(&before);
    assert!(
        parts >= 3 && inputs >= 7,
        "the fixture has hours with several segments: {before:?}"
    );
    let rows = duck_all(&data.join("segments"));
    assert!(rows.len() > 100, "{} rows", rows.len());
    let out = ship(moto, &moto.endpoint(), data, url, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(summary(&out), (before.len() as u64, 0, 0, 0));
    assert_eq!(
        lake_rows(moto, bucket, prefix, data.parent().expect("tmp")),
        rows
    );

    compact(data);
    let after = local_segments(data);
    assert_eq!(after.len(), before.len() - inputs + parts, "{after:?}");
    assert_eq!(
        duck_all(&data.join("segments")),
        rows,
        "compaction kept every row"
    );
    // The inputs compaction deleted are no phantom pending segments; the compacted ones are
    // pending like any new segment, their lag the time since compaction.
    let (shipped, pending, lag) = shipping_numbers(&status(data), url);
    assert_eq!(
        (shipped, pending),
        ((before.len() - inputs) as u64, parts as u64)
    );
    assert!(lag < 120, "lag {lag} s");
    (rows, parts, inputs)
}

#[test]
fn shipping_after_a_local_compaction_leaves_each_row_once_for_any_engine() {
    let moto = Moto::shared();
    let bucket = "ship-compact";
    moto.bucket(bucket);
    let prefix = "fleet/dns";
    let url = format!("s3://{bucket}/{prefix}");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = fixture_data(dir.path(), 1);
    let (rows, parts, inputs) = ship_then_compact(moto, &data, &url, bucket, prefix);

    let out = ship(moto, &moto.endpoint(), &data, &url, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(summary(&out), (parts as u64, 0, 0, 0));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("removed s3://"))
            .count(),
        inputs,
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "; removed {inputs} object(s) covered by compacted segments, 0 cleanup(s) pending"
        )),
        "{stdout}"
    );
    // The lake holds exactly the local segments (the compacted ones, none of their inputs),
    // byte for byte, and an engine reading every object sees each row once.
    assert_lake_mirrors(moto, bucket, prefix, &data);
    assert_eq!(lake_rows(moto, bucket, prefix, dir.path()), rows);
    let (shipped, pending, lag) = shipping_numbers(&status(&data), &url);
    assert_eq!(
        (shipped, pending, lag),
        (local_segments(&data).len() as u64, 0, 0)
    );

    // A re-run changes nothing.
    let again = ship(moto, &moto.endpoint(), &data, &url, &[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(summary(&again), (0, 0, 0, 0));
    assert!(!text(&again.stdout).contains("removed"));
    assert_lake_mirrors(moto, bucket, prefix, &data);
}

#[test]
fn a_shipper_killed_between_the_compacted_upload_and_the_deletes_finishes_next_run() {
    let moto = Moto::shared();
    let bucket = "ship-compact-crash";
    moto.bucket(bucket);
    for step in ["after-compacted-put", "before-remove"] {
        let prefix = format!("dns/{step}");
        let url = format!("s3://{bucket}/{prefix}");
        let dir = tempfile::tempdir().expect("tempdir");
        let data = fixture_data(dir.path(), 1);
        let (rows, parts, inputs) = ship_then_compact(moto, &data, &url, bucket, &prefix);

        let out = ship_command(moto, &moto.endpoint(), &data, &url, &[])
            .env("DNSLEDGER_FAILPOINT", format!("ship:{step}"))
            .output()
            .expect("run ship");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{step}: {}",
            text(&out.stderr)
        );
        // Killed there: the first compacted segment is in the lake beside its inputs (the
        // window in which engines that do not know the rule count those rows twice).
        let (lake, local) = listings(moto, bucket, &prefix, &data);
        let not_in_lake = local.keys().filter(|k| !lake.contains_key(*k)).count();
        assert_eq!(
            not_in_lake,
            parts - 1,
            "{step}: one compacted segment uploaded"
        );
        assert!(lake.len() > local.len() - not_in_lake, "{step}");
        assert!(
            lake_rows(moto, bucket, &prefix, dir.path()).len() > rows.len(),
            "{step}: the inputs are still there"
        );

        let out = ship(moto, &moto.endpoint(), &data, &url, &[]);
        assert!(out.status.success(), "{step}: {}", text(&out.stderr));
        let (shipped, already, failed, pending) = summary(&out);
        assert_eq!((failed, pending), (0, 0), "{step}");
        // Killed before its ledger line, the uploaded one is found already there.
        let want_already = u64::from(step == "after-compacted-put");
        assert_eq!(
            (shipped, already),
            (parts as u64 - 1, want_already),
            "{step}"
        );
        assert_eq!(
            text(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("removed s3://"))
                .count(),
            inputs,
            "{step}: {}",
            text(&out.stdout)
        );
        assert_lake_mirrors(moto, bucket, &prefix, &data);
        assert_eq!(lake_rows(moto, bucket, &prefix, dir.path()), rows, "{step}");
        assert!(
            !status(&data).contains("not deleted yet"),
            "{step}: {}",
            status(&data)
        );
    }
}

/// `SELECT count(*)` by dnsql over the lake (it applies the compaction rule).
fn dnsql_lake_count(moto: &Moto, url: &str) -> u64 {
    let out = Command::new(dnsql_bin())
        .args([
            "-q",
            "--data",
            url,
            "--format",
            "csv",
            "sql",
            "SELECT count(*) AS n FROM dns",
        ])
        .envs(moto.env())
        .env("DNSQL_FOOTER_CACHE", "off")
        .output()
        .expect("run dnsql");
    assert!(out.status.success(), "dnsql: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    stdout
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {stdout:?}"))
}

/// `dnsledger compact --lake s3://…` against the S3 server: killed after its create-only PUT,
/// dnsql still counts each row once and nothing is lost; the re-run finishes (one object per
/// hour) and an engine that knows nothing of the rule reads each row once. Local segments are
/// not touched.
#[test]
fn compacting_an_s3_lake_killed_after_the_upload_then_finished() {
    let moto = Moto::shared();
    let bucket = "compact-lake";
    moto.bucket(bucket);
    let prefix = "fleet/dns";
    let url = format!("s3://{bucket}/{prefix}");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = fixture_data(dir.path(), 1);
    let local = local_segments(&data);
    let (parts, inputs) = multi_segment_partitions(&local);
    assert!(parts >= 3 && inputs >= 7, "{local:?}");
    let rows = duck_all(&data.join("segments"));
    let out = ship(moto, &moto.endpoint(), &data, &url, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(lake_rows(moto, bucket, prefix, dir.path()), rows);

    let compact_lake = |failpoint: Option<&str>| {
        let mut cmd = Command::new(&*DNSLEDGER);
        cmd.args(["compact", "--lake", &url]).envs(moto.env());
        match failpoint {
            Some(f) => cmd.env("DNSLEDGER_FAILPOINT", f),
            None => cmd.env_remove("DNSLEDGER_FAILPOINT"),
        };
        cmd.output().expect("run compact")
    };
    let killed = compact_lake(Some("compact:after-write"));
    assert_eq!(
        killed.status.signal(),
        Some(libc::SIGABRT),
        "{}",
        text(&killed.stderr)
    );
    // The first compacted object is in the lake beside its inputs: dnsql skips the inputs.
    let (lake, _) = listings(moto, bucket, prefix, &data);
    assert_eq!(lake.len(), local.len() + 1, "{lake:?}");
    assert_eq!(dnsql_lake_count(moto, &url), rows.len() as u64);

    let done = compact_lake(None);
    assert!(done.status.success(), "{}", text(&done.stderr));
    let (lake, local_after) = listings(moto, bucket, prefix, &data);
    assert_eq!(lake.len(), local.len() - inputs + parts, "{lake:?}");
    let mut per_hour = std::collections::BTreeMap::<&str, usize>::new();
    for k in lake.keys() {
        *per_hour
            .entry(k.rsplit_once('/').expect("dir").0)
            .or_default() += 1;
    }
    assert!(per_hour.values().all(|n| *n == 1), "{per_hour:?}");
    assert_eq!(lake_rows(moto, bucket, prefix, dir.path()), rows);
    assert_eq!(dnsql_lake_count(moto, &url), rows.len() as u64);
    // The lake got its date manifests (one per host and date), and dnsql's point lookups use
    // them there.
    let text_out = text(&done.stdout);
    let dates: std::collections::BTreeSet<&str> = lake
        .keys()
        .filter_map(|k| Some(k.rsplit_once('/')?.0.rsplit_once('/')?.0))
        .collect();
    assert!(
        text_out.contains(&format!("date manifests: {} written", dates.len())),
        "{text_out}"
    );
    let lookup = Command::new(dnsql_bin())
        .args(["-v", "--data", &url, "--format", "csv", "sql"])
        .arg("SELECT count(*) AS n FROM dns WHERE qname = 'upload.wikimedia.org'")
        .envs(moto.env())
        .env("DNSQL_FOOTER_CACHE", "off")
        .output()
        .expect("run dnsql");
    let err = text(&lookup.stderr);
    assert!(lookup.status.success(), "{err}");
    assert!(
        err.contains(&format!("date manifests read: {}", dates.len())),
        "{err}"
    );
    assert!(!err.contains("files they ruled out: 0"), "{err}");
    // The local segments are the recorder's: compacting the lake leaves them as they were.
    assert_eq!(local_after.len(), local.len());
    assert_eq!(local_segments(&data), local);
}
