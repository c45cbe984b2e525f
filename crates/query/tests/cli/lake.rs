//! dnsql over a lake: the fixture tree uploaded to a real S3 server (moto on 127.0.0.1) must
//! answer exactly as the same tree on disk, list only the partitions the scope needs, and
//! fail the way local data fails.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use dnsledger_lake::object_store::aws::AmazonS3Builder;
use dnsledger_lake::object_store::local::LocalFileSystem;
use dnsledger_lake::object_store::path::Path as ObjectPath;
use dnsledger_lake::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use dnsledger_lake::{LakeUrl, manifest};
use dnsledger_tests::moto::Moto;

use super::{FILES, Run, command, copy_tree, fixture, metric, segment_files};

fn store(moto: &Moto, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(moto.endpoint())
            .with_allow_http(true)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_region("us-east-1")
            .build()
            .expect("S3 store for moto"),
    )
}

/// Uploads every file under `tree` to `s3://<bucket>/<prefix>/` (keys = relative paths, as
/// the shipper writes them through `LakeUrl::key`); returns the lake URL.
fn upload(tree: &Path, bucket: &str, prefix: &str) -> String {
    let moto = Moto::shared();
    moto.bucket(bucket);
    let url = format!("s3://{bucket}/{prefix}");
    let lake: LakeUrl = url.parse().expect("lake url");
    let store = store(moto, bucket);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        for f in dnsledger_tests::fixture::files_under(tree) {
            let rel = f.strip_prefix(tree).expect("under tree");
            let key = lake.key(&rel.to_string_lossy());
            let bytes = std::fs::read(&f).expect("read fixture file");
            store
                .put(&key, PutPayload::from(bytes))
                .await
                .expect("upload to moto");
        }
    });
    url
}

fn put(bucket: &str, key: &str, bytes: Vec<u8>) {
    let store = store(Moto::shared(), bucket);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        store
            .put(
                &ObjectPath::parse(key).expect("key"),
                PutPayload::from(bytes),
            )
            .await
            .expect("upload to moto");
    });
}

/// `dnsql --data <data> <args>` with moto's environment.
fn run_on(data: &str, args: &[&str]) -> Run {
    let mut c = command(&[]);
    Moto::shared().apply_env(&mut c);
    // No footer cache unless a test asks for one (`run_cached`).
    c.env("DNSQL_FOOTER_CACHE", "off");
    c.arg("--data").arg(data).args(args);
    let out = c.output().expect("run dnsql");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok_on(data: &str, args: &[&str]) -> Run {
    let r = run_on(data, args);
    assert_eq!(r.code, 0, "dnsql --data {data} {args:?}: {r:?}");
    r
}

/// The LISTs a `--verbose` run made (`list <url> (<kind>)` lines).
fn lists(r: &Run) -> Vec<String> {
    r.stderr
        .lines()
        .filter_map(|l| l.strip_prefix("dnsql: list "))
        .map(str::to_owned)
        .collect()
}

/// The commands compared between local and lake data: SQL and every recipe, whole outputs.
const COMMANDS: &[&[&str]] = &[
    &["sql", "SELECT count(*) AS n FROM dns"],
    &[
        "sql",
        "SELECT host, count(*) AS n, count(DISTINCT qname) AS names, min(ts) AS first, max(ts) \
         AS last FROM dns GROUP BY host ORDER BY host",
    ],
    &[
        "sql",
        "SELECT * FROM dns ORDER BY host, ts, dns_id, client_port, qname, response_ts",
    ],
    &[
        "sql",
        "SELECT date, hour, count(*) AS n FROM dns_all WHERE host = 'host-c' GROUP BY date, hour \
         ORDER BY date, hour",
    ],
    &["who", "example.net"],
    &["who", "wikimedia.org"],
    &["top", "--by", "process"],
    &["top", "--by", "rcode"],
    &["top", "--by", "domain", "-n", "5"],
    &["timeline", "--comm", "curl"],
    &["--host", "lab", "timeline", "--pid", "4242"],
    &["nxdomain"],
    &["exfil"],
    &["show", "meta.wikimedia.org"],
    &[
        "--host",
        "host-b",
        "sql",
        "SELECT count(*) AS n, min(ts) AS t FROM dns",
    ],
    &[
        "--since",
        "2019-01-01",
        "--until",
        "2023-02-21T08:00:00Z",
        "sql",
        "SELECT host, date, hour, count(*) AS n FROM dns GROUP BY host, date, hour ORDER BY \
         host, date, hour",
    ],
    &[
        "--host",
        "host-c",
        "--since",
        "2019-05-27T14:00:00Z",
        "--until",
        "2019-05-28T12:00:00Z",
        "who",
        "weberlab.de",
    ],
];

/// Whole JSON outputs are equal, except the approximate percentiles of `top` (DataFusion's
/// `approx_percentile_cont` is a t-digest whose result depends on the order batches arrive:
/// two runs over the same local files differ in the third decimal too), which must agree
/// within 10 % (303 latencies of host-b moved p95 by 3 % between two runs).
fn assert_same(got: &str, want: &str, what: &str) {
    if got == want {
        return;
    }
    let rows = |s: &str| -> Vec<serde_json::Map<String, serde_json::Value>> {
        s.lines()
            .map(|l| match serde_json::from_str(l) {
                Ok(serde_json::Value::Object(m)) => m,
                other => panic!("{what}: not a JSON object: {l} ({other:?})"),
            })
            .collect()
    };
    let (got_rows, want_rows) = (rows(got), rows(want));
    assert_eq!(
        got_rows.len(),
        want_rows.len(),
        "{what}:\n{got}\n!=\n{want}"
    );
    for (g, w) in got_rows.iter().zip(&want_rows) {
        assert_eq!(
            g.keys().collect::<Vec<_>>(),
            w.keys().collect::<Vec<_>>(),
            "{what}"
        );
        for (k, gv) in g {
            let wv = &w[k];
            let approximate = k.starts_with('p') && k.ends_with("_ms");
            match (approximate, gv.as_f64(), wv.as_f64()) {
                (true, Some(a), Some(b)) => assert!(
                    (a - b).abs() <= 0.1 * b.abs().max(1e-9),
                    "{what}: {k} {a} vs {b}"
                ),
                _ => assert_eq!(gv, wv, "{what}: column {k}\n{got}\n!=\n{want}"),
            }
        }
    }
}

#[test]
fn a_lake_answers_exactly_as_the_same_tree_on_disk() {
    let tree = super::attributed_tree();
    let s3 = upload(tree.path(), "same-answers", "dns/fleet");
    let file_url = format!("file://{}", tree.path().display());
    let local = tree.path().to_str().unwrap().to_owned();
    for args in COMMANDS {
        let mut json = vec!["--format", "json"];
        json.extend_from_slice(args);
        let want = ok_on(&local, &json);
        assert!(
            !want.stdout.is_empty(),
            "{args:?} printed nothing: {want:?}"
        );
        for data in [&s3, &file_url] {
            let got = ok_on(data, &json);
            assert_same(
                &got.stdout,
                &want.stdout,
                &format!("dnsql --data {data} {args:?}"),
            );
        }
    }
    // A mix of local and lake data is one table (host lab from disk, the fixture from S3).
    let fixture_only = upload(&fixture(), "mixed", "f");
    let lab = tree.path().join("host=lab");
    let mut c = command(&[]);
    Moto::shared().apply_env(&mut c);
    let out = c
        .env("DNSQL_FOOTER_CACHE", "off")
        .args(["--data", &fixture_only, "--data"])
        .arg(&lab)
        .args(["--format", "json"])
        .args(COMMANDS[1])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        ok_on(
            &local,
            &["--format", "json", COMMANDS[1][0], COMMANDS[1][1]]
        )
        .stdout
    );
}

#[test]
fn only_the_partitions_in_scope_are_listed() {
    let url = upload(&fixture(), "scoped", "lake");
    let r = ok_on(&url, &["--verbose", "sql", "SELECT count(*) FROM dns"]);
    assert_eq!(lists(&r), ["s3://scoped/lake/ (recursive)"], "{r:?}");
    assert!(
        r.stderr.contains(&format!("footers fetched: {FILES}")),
        "{r:?}"
    );

    let r = ok_on(
        &url,
        &[
            "--verbose",
            "--host",
            "host-b",
            "sql",
            "SELECT count(*) FROM dns",
        ],
    );
    assert_eq!(
        lists(&r),
        ["s3://scoped/lake/host=host-b/ (recursive)"],
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains(&format!("footers fetched: {}", super::HOST_B_FILES)),
        "{r:?}"
    );

    // host-c: 2019-05-27T14:00 .. 2019-05-28T12:00. The dates are listed with a delimiter,
    // the two boundary dates once more for their hours, and only the hours in range below.
    let r = ok_on(
        &url,
        &[
            "--verbose",
            "--host",
            "host-c",
            "--since",
            "2019-05-27T14:00:00Z",
            "--until",
            "2019-05-28T12:00:00Z",
            "sql",
            "SELECT count(*) FROM dns",
        ],
    );
    let listed: BTreeSet<String> = lists(&r).into_iter().collect();
    let want: BTreeSet<String> = [
        "s3://scoped/lake/host=host-c/ (delimited)",
        "s3://scoped/lake/host=host-c/date=2019-05-27/ (delimited)",
        "s3://scoped/lake/host=host-c/date=2019-05-28/ (delimited)",
        "s3://scoped/lake/host=host-c/date=2019-05-27/hour=14/ (recursive)",
        "s3://scoped/lake/host=host-c/date=2019-05-28/hour=11/ (recursive)",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(listed, want, "{r:?}");
    assert!(r.stderr.contains("footers fetched: 3"), "{r:?}");

    // Time only: the host level with a delimiter, then each host's dates.
    let r = ok_on(
        &url,
        &[
            "--verbose",
            "--since",
            "2025-01-01",
            "sql",
            "SELECT count(*) FROM dns",
        ],
    );
    let listed = lists(&r);
    assert!(
        listed.contains(&"s3://scoped/lake/ (delimited)".to_owned()),
        "{r:?}"
    );
    assert!(
        listed
            .iter()
            .all(|l| !l.contains("date=20") || l.contains("date=2025")),
        "listed a date before --since: {r:?}"
    );
    assert!(r.stderr.contains("footers fetched: 2"), "{r:?}");

    // A host with no segments: an empty answer and a warning, as with local data.
    let r = run_on(
        &url,
        &[
            "--host",
            "nobody",
            "--format",
            "csv",
            "sql",
            "SELECT count(*) AS n FROM dns",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "n\n0\n");
    assert!(r.stderr.contains("no segments"), "{r:?}");
}

#[test]
fn footers_are_read_once_per_run_and_point_lookups_prune_as_locally() {
    let url = upload(&fixture(), "footers", "x");
    let sql = "SELECT count(*) AS n FROM dns WHERE qname = 'upload.wikimedia.org'; \
               SELECT count(*) AS n FROM dns WHERE registered_domain = 'wikimedia.org'; \
               SELECT host, count(*) AS n FROM dns GROUP BY host ORDER BY host";
    let r = ok_on(&url, &["--verbose", "--format", "csv", "sql", sql]);
    assert!(
        r.stderr.contains(&format!("footers fetched: {FILES}")),
        "{r:?}"
    );
    assert_eq!(
        r.stdout,
        ok_on(
            fixture().to_str().unwrap(),
            &["--format", "csv", "sql", sql]
        )
        .stdout
    );

    let explain = |data: &str| {
        let q = "EXPLAIN ANALYZE SELECT count(*) FROM dns WHERE qname = 'upload.wikimedia.org'";
        let r = ok_on(data, &["--format", "json", "sql", q]);
        let row: serde_json::Value =
            serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
        row["plan"].as_str().unwrap().to_owned()
    };
    let lake_plan = explain(&url);
    let local_plan = explain(fixture().to_str().unwrap());
    for m in [
        "files_ranges_pruned_statistics",
        "row_groups_pruned_statistics",
        "row_groups_pruned_bloom_filter",
    ] {
        assert_eq!(
            metric(&lake_plan, m),
            metric(&local_plan, m),
            "{m}: {lake_plan}"
        );
    }
    // The files ruled out before the scan (footer min/max and bloom filters, read from the
    // lake like the footers) are the same as locally, and most of them.
    let q = "SELECT count(*) AS n FROM dns WHERE qname = 'upload.wikimedia.org'";
    let lake = ruled_out(&ok_on(&url, &["--verbose", "--format", "csv", "sql", q]));
    let local = ruled_out(&ok_on(
        fixture().to_str().unwrap(),
        &["--verbose", "--format", "csv", "sql", q],
    ));
    assert_eq!(lake, local);
    assert!(lake > FILES / 2 && lake < FILES, "{lake} of {FILES}");
}

/// `files ruled out by bloom filters before the scan: N` of a `--verbose` run.
fn ruled_out(r: &Run) -> u64 {
    r.stderr
        .split("files ruled out by bloom filters before the scan: ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bloom line: {r:?}"))
}

/// A number after `label` on a `--verbose` run's footer line.
fn verbose_count(r: &Run, label: &str) -> u64 {
    r.stderr
        .split(label)
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` in: {r:?}"))
}

/// Writes a manifest in every date directory of `tree`, as `dnsledger compact` does (through
/// the same library); returns how many.
fn write_manifests(tree: &Path) -> usize {
    write_manifests_with(tree, false)
}

/// [`write_manifests`]; with `listings`, recording the hour directories' listings as
/// `dnsledger compact` does for a local tree, as if the margin had passed (the directories were
/// just written), then waiting long enough for a later change to move their times on.
fn write_manifests_with(tree: &Path, listings: bool) -> usize {
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(tree).expect("local store"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dates = manifest::list_dates(store.as_ref(), &ObjectPath::default())
            .await
            .expect("list");
        for (dir, segments) in &dates {
            let dirs = if listings {
                let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
                manifest::list_local_dirs(&tree.join(dir.as_ref()), later)
            } else {
                Vec::new()
            };
            let r = manifest::refresh(&store, dir, segments, &dirs, &|p| p.to_string())
                .await
                .expect("write manifest");
            assert!(
                matches!(r, manifest::Refreshed::Written { ref left_out, .. } if left_out.is_empty()),
                "{dir}: {r:?}"
            );
        }
        if listings {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        dates.len()
    })
}

/// The hour directories below `tree` (each holds segments).
fn hour_dirs(tree: &Path) -> BTreeSet<std::path::PathBuf> {
    segment_files(tree)
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect()
}

#[test]
fn hour_directories_unchanged_since_their_manifest_are_not_listed_and_answer_the_same() {
    let tree = super::attributed_tree();
    let plain = tree.path().to_str().unwrap().to_owned();
    let with = tempfile::tempdir().unwrap();
    copy_tree(tree.path(), with.path());
    let hours = hour_dirs(with.path());
    assert!(hours.len() > 20, "{hours:?}");
    // Manifests of the format before the listings (or of a lake): every directory listed.
    write_manifests_with(with.path(), false);
    let with_s = with.path().to_str().unwrap().to_owned();
    let count = [
        "--verbose",
        "--format",
        "csv",
        "sql",
        "SELECT count(*) AS n FROM dns",
    ];
    let r = ok_on(&with_s, &count);
    let unlisted = "hour directories taken from date manifests unlisted: ";
    assert_eq!(verbose_count(&r, unlisted), 0, "{r:?}");
    let all_listed = verbose_count(&r, "directories listed: ");

    write_manifests_with(with.path(), true);
    let r = ok_on(&with_s, &count);
    assert_eq!(verbose_count(&r, unlisted), hours.len() as u64, "{r:?}");
    assert_eq!(
        verbose_count(&r, "directories listed: "),
        all_listed - hours.len() as u64,
        "{r:?}"
    );
    // Switched off: every directory listed.
    let mut c = command(&[]);
    c.env("DNSQL_DIR_LISTINGS", "off")
        .env("DNSQL_FOOTER_CACHE", "off")
        .arg("--data")
        .arg(&with_s)
        .args(count);
    let out = c.output().unwrap();
    let off = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(off.code, 0, "{off:?}");
    assert_eq!(off.stdout, r.stdout);
    assert_eq!(verbose_count(&off, unlisted), 0, "{off:?}");
    assert_eq!(verbose_count(&off, "directories listed: "), all_listed);
    // Every command answers as over the tree without manifests; `segments` (paths, sizes,
    // partitions, footer facts) too.
    for args in COMMANDS.iter().copied().chain([&["segments"][..]]) {
        // `segments` names the files by path: the trees differ only in their root.
        let got = ok_on(&with_s, &[&["--format", "json"], args].concat()).stdout;
        assert_same(
            &got.replace(&with_s, &plain),
            &ok_on(&plain, &[&["--format", "json"], args].concat()).stdout,
            &format!("{args:?} from the manifests' listings"),
        );
    }

    // After the manifests: a segment copied into one hour directory, one removed from another,
    // and a third directory given a new segment and then its old modification time back by
    // hand (its change time still moves). Each is listed again; the answers are those of the
    // tree as it is now, without manifests.
    let n_hours = hours.len() as u64;
    let mut hours = hours.into_iter();
    let (added, removed, touched) = (
        hours.next().unwrap(),
        hours.next().unwrap(),
        hours.next().unwrap(),
    );
    let first = |dir: &Path| segment_files(dir).into_iter().next().unwrap();
    let f = first(&added);
    std::fs::copy(&f, added.join("late-copy.parquet")).unwrap();
    std::fs::remove_file(first(&removed)).unwrap();
    let old_mtime = std::fs::metadata(&touched).unwrap().modified().unwrap();
    let f = first(&touched);
    std::fs::copy(&f, touched.join("late-touched.parquet")).unwrap();
    std::fs::File::open(&touched)
        .unwrap()
        .set_modified(old_mtime)
        .unwrap();
    assert_eq!(
        std::fs::metadata(&touched).unwrap().modified().unwrap(),
        old_mtime
    );
    let r = ok_on(&with_s, &count);
    assert_eq!(verbose_count(&r, unlisted), n_hours - 3, "{r:?}");
    let oracle = without_manifests(with.path());
    let oracle_s = oracle.path().to_str().unwrap();
    for args in [
        &["sql", "SELECT count(*) AS n FROM dns"][..],
        &[
            "sql",
            "SELECT host, date, hour, count(*) AS n FROM dns_all GROUP BY host, date, hour \
             ORDER BY host, date, hour",
        ],
        &["who", "wikimedia.org"],
        &["show", "meta.wikimedia.org"],
        &["segments"],
    ] {
        let want = ok_on(oracle_s, &[&["--format", "json"], args].concat()).stdout;
        let got = ok_on(&with_s, &[&["--format", "json"], args].concat()).stdout;
        // `segments` names the files by path: the trees differ only in their root.
        let got = got.replace(&with_s, oracle_s);
        assert_same(&got, &want, &format!("{args:?} after the manifests"));
    }
}

/// A copy of the tree at `from` without its date manifests: what a lake answers by its
/// segments' own footers alone.
fn without_manifests(from: &std::path::Path) -> tempfile::TempDir {
    let oracle = tempfile::tempdir().unwrap();
    copy_tree(from, oracle.path());
    for f in dnsledger_tests::fixture::files_under(oracle.path()) {
        if f.file_name().is_some_and(|n| n == manifest::FILE_NAME) {
            std::fs::remove_file(f).unwrap();
        }
    }
    oracle
}

#[test]
fn date_manifests_rule_files_out_unopened_and_never_change_an_answer() {
    let tree = super::attributed_tree();
    let plain = tree.path().to_str().unwrap().to_owned();
    let with = tempfile::tempdir().unwrap();
    copy_tree(tree.path(), with.path());
    let dates = write_manifests(with.path());
    assert!(dates > 20, "{dates} date directories");
    let with_s = with.path().to_str().unwrap().to_owned();
    // Every command answers as without manifests.
    for args in COMMANDS {
        assert_same(
            &ok_on(&with_s, &[&["--format", "json"], *args].concat()).stdout,
            &ok_on(&plain, &[&["--format", "json"], *args].concat()).stdout,
            &format!("{args:?} with manifests"),
        );
    }
    // A point lookup rules most files out from the manifests, without reading their footers.
    let q = "SELECT count(*) AS n FROM dns WHERE qname = 'upload.wikimedia.org'";
    let args = ["--verbose", "--format", "csv", "sql", q];
    let without = ok_on(&plain, &args);
    let r = ok_on(&with_s, &args);
    assert_eq!(r.stdout, without.stdout);
    let n: u64 = without.stdout.lines().nth(1).unwrap().parse().unwrap();
    assert!(n > 0, "{without:?}");
    let ruled = verbose_count(&r, "files they ruled out: ");
    assert!(verbose_count(&r, "date manifests read: ") > 0, "{r:?}");
    assert!(ruled > FILES / 2, "{ruled} of {FILES}: {r:?}");
    assert_eq!(
        verbose_count(&r, "footers fetched: ") + ruled,
        verbose_count(&without, "footers fetched: "),
        "{r:?}"
    );
    assert_eq!(ruled_out(&r), 0, "the manifests decided: {r:?}");

    // Stale manifests never change an answer: a copy of every segment added after them (no
    // entry) and a segment rewritten with other content (its entry's size no longer matches)
    // are read from their footers.
    let files = segment_files(with.path());
    for f in &files {
        let late = f.with_file_name(format!("late-{}", f.file_name().unwrap().to_string_lossy()));
        std::fs::copy(f, late).unwrap();
    }
    let size = |f: &&std::path::PathBuf| std::fs::metadata(f).unwrap().len();
    let small = files.iter().min_by_key(size).unwrap();
    let big = files.iter().max_by_key(size).unwrap();
    assert_ne!(size(&small), size(&big));
    std::fs::copy(big, small).unwrap();
    let oracle = without_manifests(with.path());
    let oracle_s = oracle.path().to_str().unwrap();
    for args in [
        &["sql", q][..],
        &["who", "wikimedia.org"],
        &["show", "meta.wikimedia.org"],
        &["sql", "SELECT count(*) AS n FROM dns"],
    ] {
        let got = ok_on(&with_s, &[&["--format", "json"], args].concat()).stdout;
        assert_same(
            &got,
            &ok_on(oracle_s, &[&["--format", "json"], args].concat()).stdout,
            &format!("{args:?} with stale manifests"),
        );
    }
    let stale = ok_on(&with_s, &["--format", "csv", "sql", q]);
    let doubled: u64 = stale.stdout.lines().nth(1).unwrap().parse().unwrap();
    assert!(
        doubled >= 2 * n,
        "{doubled} vs {n}: the late copies are counted"
    );

    // On a lake the manifests are listed and used the same way.
    let url = upload(with.path(), "manifests", "lake");
    let r = ok_on(&url, &["--verbose", "--format", "csv", "sql", q]);
    assert_eq!(r.stdout, stale.stdout);
    assert!(
        verbose_count(&r, "files they ruled out: ") > FILES / 2,
        "{r:?}"
    );
}

#[test]
fn segments_lists_a_lake_like_the_tree_on_disk() {
    let url = upload(&fixture(), "listing", "s");
    let rows = |data: &str, args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        all.push("segments");
        ok_on(data, &all)
            .stdout
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("path");
                v
            })
            .collect()
    };
    let local = fixture();
    let local = local.to_str().unwrap();
    let lake = rows(&url, &[]);
    assert_eq!(lake.len() as u64, FILES);
    assert_eq!(lake, rows(local, &[]));
    assert_eq!(
        rows(&url, &["--host", "host-a"]),
        rows(local, &["--host", "host-a"])
    );
    let r = ok_on(&url, &["--format", "csv", "segments"]);
    assert!(
        r.stdout
            .contains(",s3://listing/s/host=host-b/date=2010-08-21/hour=02/"),
        "{r:?}"
    );
}

#[test]
fn corrupt_and_foreign_objects_are_named_skipped_and_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture(), dir.path());
    let victim = segment_files(&dir.path().join("host=host-a"))[0].clone();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let url = upload(dir.path(), "corrupt", "p");
    let rel = victim.strip_prefix(dir.path()).unwrap().to_str().unwrap();
    // Not segments: never read. A foreign Parquet file: named.
    put("corrupt", "p/host=host-a/notes.txt", b"notes".to_vec());
    let foreign = "p/host=host-b/date=2010-08-21/hour=02/foreign.parquet";
    put(
        "corrupt",
        foreign,
        dnsledger_tests::fixture::parquet_bytes(
            &arrow::array::RecordBatch::try_from_iter([(
                "x",
                Arc::new(arrow::array::Int32Array::from(vec![1])) as arrow::array::ArrayRef,
            )])
            .unwrap(),
            &[],
        ),
    );
    std::fs::write(
        dir.path()
            .join("host=host-b/date=2010-08-21/hour=02/foreign.parquet"),
        dnsledger_tests::fixture::parquet_bytes(
            &arrow::array::RecordBatch::try_from_iter([(
                "x",
                Arc::new(arrow::array::Int32Array::from(vec![1])) as arrow::array::ArrayRef,
            )])
            .unwrap(),
            &[],
        ),
    )
    .unwrap();
    let sql = "SELECT host, count(*) AS n FROM dns GROUP BY host ORDER BY host";
    let local = run_on(
        dir.path().to_str().unwrap(),
        &["--format", "csv", "sql", sql],
    );
    assert_eq!(local.code, 3, "{local:?}");
    let r = run_on(&url, &["--format", "csv", "sql", sql]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.stdout, local.stdout);
    let named = |key: &str, why: &str| {
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains(&format!("s3://corrupt/{key}")))
            .unwrap_or_else(|| panic!("{key} not named: {r:?}"));
        assert!(line.contains(why), "{line}");
    };
    named(&format!("p/{rel}"), "truncated or corrupt");
    named(foreign, "not a dnsledger segment");
    assert!(!r.stderr.contains("notes"), "{r:?}");
    assert!(
        r.stderr.contains("partial answer: 2 segments skipped"),
        "{r:?}"
    );
}

#[test]
fn bad_urls_exit_2_and_unreachable_lakes_exit_1() {
    let r = run_on("ftp://host/segments", &["sql", "SELECT 1"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("`ftp`"), "{r:?}");
    assert!(r.stderr.contains("s3://"), "{r:?}");

    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let out = command(&["--data", "s3://nowhere/lake", "sql", "SELECT 1"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ALLOW_HTTP", "true")
        .env("DNSQL_FOOTER_CACHE", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot list s3://nowhere/lake/"),
        "{stderr}"
    );
    assert!(stderr.contains("\nhint: "), "{stderr}");
    assert!(
        started.elapsed().as_secs() < 60,
        "gave up only after {:?}",
        started.elapsed()
    );

    // A bucket that does not exist on a reachable server.
    let r = run_on("s3://no-such-bucket/x", &["sql", "SELECT 1"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("s3://no-such-bucket/x/"), "{r:?}");
    assert!(r.stderr.contains("NoSuchBucket"), "{r:?}");
    assert!(r.stderr.contains("\nhint: check the bucket name"), "{r:?}");
    assert!(!r.stderr.contains("<?xml"), "{r:?}");
}

#[test]
fn compacted_segments_replace_their_inputs_in_a_lake_as_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture(), dir.path());
    let partition = dir.path().join("host=host-a/date=2023-02-19/hour=23");
    let inputs = segment_files(&partition);
    assert_eq!(inputs.len(), 2, "{inputs:?}");
    // The compacted segment: both inputs' rows, naming them in `compacted_from`.
    let mut batches = Vec::new();
    let mut kv = Default::default();
    for f in &inputs {
        let (b, m) = dnsledger_tests::segments::read_segment(f);
        batches.extend(b);
        kv = m;
    }
    let schema = batches[0].schema();
    let batches: Vec<_> = batches
        .into_iter()
        .map(|b| arrow::array::RecordBatch::try_new(schema.clone(), b.columns().to_vec()).unwrap())
        .collect();
    let merged = arrow::compute::concat_batches(&schema, &batches).unwrap();
    let names: Vec<String> = inputs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let from = dnsledger_schema::compaction::encode_inputs(&names).unwrap();
    kv.insert(dnsledger_schema::meta::COMPACTED_FROM.to_owned(), from);
    let kv: Vec<(&str, &str)> = kv
        .iter()
        .filter(|(k, _)| k.as_str() != "ARROW:schema")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let compacted = partition.join("compacted.parquet");
    dnsledger_tests::fixture::write_parquet(&compacted, &merged, &kv);

    let url = upload(dir.path(), "compacted", "c");
    let sql = "SELECT host, count(*) AS n, count(DISTINCT qname) AS names FROM dns GROUP BY host \
               ORDER BY host";
    let want = ok_on(
        fixture().to_str().unwrap(),
        &["--format", "csv", "sql", sql],
    )
    .stdout;
    // Inputs and the compacted segment side by side: each row once.
    assert_eq!(ok_on(&url, &["--format", "csv", "sql", sql]).stdout, want);
    assert_eq!(
        ok_on(
            dir.path().to_str().unwrap(),
            &["--format", "csv", "sql", sql]
        )
        .stdout,
        want
    );
    let listed = ok_on(&url, &["--host", "host-a", "--format", "csv", "segments"]).stdout;
    assert!(listed.contains("/compacted.parquet"), "{listed}");
    assert!(
        !listed.contains(&names[0]) && !listed.contains(&names[1]),
        "{listed}"
    );
    // One input already deleted: still each row once.
    let rel = inputs[0]
        .strip_prefix(dir.path())
        .unwrap()
        .to_str()
        .unwrap();
    let store = store(Moto::shared(), "compacted");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        store
            .delete(&ObjectPath::parse(format!("c/{rel}")).unwrap())
            .await
            .unwrap();
    });
    assert_eq!(ok_on(&url, &["--format", "csv", "sql", sql]).stdout, want);
}

#[test]
fn a_footer_cache_on_disk_spares_the_next_run_the_footer_reads() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture(), dir.path());
    let url = upload(dir.path(), "cached", "c");
    let cache = tempfile::tempdir().unwrap();
    let run_cached = |args: &[&str]| {
        let mut c = command(&[]);
        Moto::shared().apply_env(&mut c);
        let out = c
            .env("DNSQL_FOOTER_CACHE", cache.path())
            .args(["--data", &url, "--verbose", "--format", "csv"])
            .args(args)
            .output()
            .unwrap();
        let r = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert_eq!(r.code, 0, "{r:?}");
        r
    };
    let sql = "SELECT host, count(*) AS n, count(DISTINCT qname) AS names FROM dns GROUP BY host \
               ORDER BY host";
    let want = ok_on(&url, &["--format", "csv", "sql", sql]).stdout;
    let first = run_cached(&["sql", sql]);
    assert!(
        first.stderr.contains(&format!(
            "footers fetched: {FILES}, from the footer cache: 0"
        )),
        "{first:?}"
    );
    assert_eq!(first.stdout, want);
    let entries = std::fs::read_dir(cache.path()).unwrap().count() as u64;
    assert_eq!(entries, FILES);
    let second = run_cached(&["sql", sql]);
    assert!(
        second.stderr.contains(&format!(
            "footers fetched: 0, from the footer cache: {FILES}"
        )),
        "{second:?}"
    );
    assert_eq!(second.stdout, want);
    // The point lookup prunes from cached footers as from fetched ones.
    let q = "SELECT count(*) AS n FROM dns WHERE qname = 'upload.wikimedia.org'";
    let cached = run_cached(&["sql", q]);
    assert!(
        cached.stderr.contains("from the footer cache: "),
        "{cached:?}"
    );
    assert_eq!(
        ruled_out(&cached),
        ruled_out(&ok_on(&url, &["--verbose", "--format", "csv", "sql", q]))
    );
    assert!(ruled_out(&cached) > 0, "{cached:?}");
    assert_eq!(cached.stdout, "n\n8\n");

    // A rewritten object (another ETag) is read again, and answers with its new content.
    let victim = segment_files(&dir.path().join("host=host-b"))[0].clone();
    let rel = victim.strip_prefix(dir.path()).unwrap().to_str().unwrap();
    let other = segment_files(&dir.path().join("host=host-a"))[0].clone();
    put(
        "cached",
        &format!("c/{rel}"),
        std::fs::read(&other).unwrap(),
    );
    std::fs::copy(&other, &victim).unwrap();
    let third = run_cached(&["sql", sql]);
    assert!(
        third.stderr.contains(&format!(
            "footers fetched: 1, from the footer cache: {}",
            FILES - 1
        )),
        "{third:?}"
    );
    assert_eq!(
        third.stdout,
        ok_on(
            dir.path().to_str().unwrap(),
            &["--format", "csv", "sql", sql]
        )
        .stdout
    );
}

#[test]
fn a_report_over_a_lake_is_the_report_over_the_same_tree() {
    let tree = super::attributed_tree();
    let s3 = upload(tree.path(), "report", "dns/fleet");
    let local = tree.path().to_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let page = |data: &str, name: &str| {
        let out = dir.path().join(name);
        ok_on(
            data,
            &[
                "--since",
                "2024-05-01T12:00:00Z",
                "--until",
                "2024-05-01T13:00:00Z",
                "report",
                "--focus",
                "example.net",
                "-o",
                out.to_str().unwrap(),
            ],
        );
        // The page names its data and the time it was made; the rest must be the same.
        std::fs::read_to_string(out)
            .unwrap()
            .replace(data, "DATA")
            .lines()
            .filter(|l| !l.starts_with("<dt>generated</dt>"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let on_disk = page(&local, "disk.html");
    let in_lake = page(&s3, "lake.html");
    assert!(
        on_disk.contains("api.example.net"),
        "the focus found nothing"
    );
    for (i, (lake, disk)) in in_lake.lines().zip(on_disk.lines()).enumerate() {
        assert_eq!(lake, disk, "line {} of the page differs", i + 1);
    }
    assert_eq!(in_lake.lines().count(), on_disk.lines().count());
}
