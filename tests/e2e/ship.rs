//! Shipping sealed segments to a data lake: `dnsledger ship`, `record --ship-to` and `prune`'s
//! rule, against a real S3 server (moto) read back through an independent client (boto3), with
//! real faults: a fault-injecting proxy (500s, lost responses, delays), a killed client, a
//! killed and restarted server, a closed port.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dnsledger_tests::faultproxy::{FaultProxy, Faults};
use dnsledger_tests::fixture::files_under;
use dnsledger_tests::harness::*;
use dnsledger_tests::moto::Moto;

/// Copies the committed fixture segments into `<dir>/segments` `copies` times (as hosts
/// `host-a`, `host-a-1`, … so every copy has its own keys). Returns the data directory.
pub(crate) fn fixture_data(dir: &Path, copies: usize) -> PathBuf {
    let src = repo_root().join("testdata/segments");
    let data = dir.join("data");
    for copy in 0..copies {
        for f in files_under(&src) {
            let rel = f.strip_prefix(&src).expect("below the fixture root");
            let mut rel = rel.to_string_lossy().into_owned();
            if copy > 0 {
                // host=host-a/… → host=host-a-1/…
                let (host, rest) = rel.split_once('/').expect("host dir");
                rel = format!("{host}-{copy}/{rest}");
            }
            let dst = data.join("segments").join(&rel);
            std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
            std::fs::copy(&f, &dst).expect("copy a fixture segment");
        }
    }
    data
}

/// The sealed segments under a data directory, relative to `segments/`.
pub(crate) fn local_segments(data: &Path) -> Vec<String> {
    let root = data.join("segments");
    let mut v: Vec<String> = files_under(&root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| {
            p.strip_prefix(&root)
                .expect("below root")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// Runs `dnsledger ship --data-dir DATA --to URL ARGS…` against `endpoint`.
pub(crate) fn ship(moto: &Moto, endpoint: &str, data: &Path, url: &str, args: &[&str]) -> Output {
    ship_command(moto, endpoint, data, url, args)
        .output()
        .expect("run dnsledger ship")
}

pub(crate) fn ship_command(
    moto: &Moto,
    endpoint: &str,
    data: &Path,
    url: &str,
    args: &[&str],
) -> Command {
    let mut c = Command::new(&*DNSLEDGER);
    c.arg("ship")
        .arg("--data-dir")
        .arg(data)
        .args(["--to", url]);
    c.args(args);
    moto.apply_env(&mut c);
    c.env("AWS_ENDPOINT_URL", endpoint)
        .env_remove("DNSLEDGER_SHIP_TO")
        .stdin(Stdio::null());
    c
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The summary line's numbers: (shipped, already there, failed, pending).
pub(crate) fn summary(out: &Output) -> (u64, u64, u64, u64) {
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("shipped ") || l.starts_with("would ship "))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}\n{}", text(&out.stderr)));
    let nums: Vec<u64> = line
        .split([' ', ','])
        .filter_map(|w| w.parse().ok())
        .collect();
    // After the five counts, a shipped compacted segment adds "; removed N …, M cleanup(s)".
    assert!(nums.len() == 5 || nums.len() == 7, "{line}");
    (nums[0], nums[1], nums[2], nums[3])
}

/// Lists `bucket/prefix` and hashes every segment object through boto3 (an independent S3 client),
/// and hashes the local segments the same way: key (relative to the prefix) → (size, sha256).
pub(crate) type Listing = BTreeMap<String, (u64, String)>;

const LIST: &str = r#"
import boto3, hashlib, json, os, sys
endpoint, bucket, prefix, root = sys.argv[1:5]
s3 = boto3.client('s3', endpoint_url=endpoint, region_name='us-east-1',
                  aws_access_key_id='testing', aws_secret_access_key='testing')
lake, local = {}, {}
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix + '/'):
    for o in page.get('Contents', []):
        if o['Key'].endswith('/_dnsledger.manifest'):
            continue  # date manifests (dnsledger compact --lake): not segments
        body = s3.get_object(Bucket=bucket, Key=o['Key'])['Body'].read()
        lake[o['Key'][len(prefix) + 1:]] = [len(body), hashlib.sha256(body).hexdigest()]
for d, _, files in os.walk(root):
    for f in files:
        if f.endswith('.parquet'):
            p = os.path.join(d, f)
            b = open(p, 'rb').read()
            local[os.path.relpath(p, root)] = [len(b), hashlib.sha256(b).hexdigest()]
print(json.dumps({'lake': lake, 'local': local}))
"#;

pub(crate) fn listings(moto: &Moto, bucket: &str, prefix: &str, data: &Path) -> (Listing, Listing) {
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .args(["-c", LIST, &moto.endpoint(), bucket, prefix])
        .arg(data.join("segments"))
        .output()
        .expect("run boto3");
    assert!(out.status.success(), "boto3: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let conv = |m: &serde_json::Value| -> Listing {
        m.as_object()
            .expect("object")
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    (
                        v[0].as_u64().expect("size"),
                        v[1].as_str().expect("sha").to_string(),
                    ),
                )
            })
            .collect()
    };
    (conv(&v["lake"]), conv(&v["local"]))
}

/// Every local segment is in the lake, byte-identical, and the lake holds nothing else.
pub(crate) fn assert_lake_mirrors(moto: &Moto, bucket: &str, prefix: &str, data: &Path) -> usize {
    let (lake, local) = listings(moto, bucket, prefix, data);
    assert!(!local.is_empty(), "no local segments");
    let missing: Vec<&String> = local.keys().filter(|k| !lake.contains_key(*k)).collect();
    let extra: Vec<&String> = lake.keys().filter(|k| !local.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing in the lake: {missing:?}\nnot local: {extra:?}"
    );
    for (k, v) in &local {
        assert_eq!(lake.get(k), Some(v), "{k} differs in the lake");
    }
    local.len()
}

/// Puts an object with boto3 (another writer of the same key).
fn put_object(moto: &Moto, bucket: &str, key: &str, body: &Path) {
    let script = "import boto3, sys\n\
        s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n\
        s3.put_object(Bucket=sys.argv[2], Key=sys.argv[3], Body=open(sys.argv[4], 'rb').read())\n";
    let st = Command::new(repo_root().join(".venv/bin/python"))
        .args(["-c", script, &moto.endpoint(), bucket, key])
        .arg(body)
        .status()
        .expect("boto3 put");
    assert!(st.success());
}

/// The entries of the one ledger under `<data>/shipped` (none when there is none).
fn ledger_entries(data: &Path) -> Vec<String> {
    let dir = data.join("shipped");
    let ledgers: Vec<PathBuf> = files_under(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ledger"))
        .collect();
    // None yet (a run is creating it): no entries.
    assert!(ledgers.len() <= 1, "{ledgers:?}");
    let Some(ledger) = ledgers.first() else {
        return Vec::new();
    };
    let t = std::fs::read_to_string(ledger).expect("ledger");
    t.lines()
        .filter(|l| {
            // Complete entry lines: path, size, time (and a compacted segment's covers=…).
            let f: Vec<&str> = l.split('\t').collect();
            !l.starts_with('#')
                && f.len() >= 3
                && f[1].parse::<u64>().is_ok()
                && f[2].parse::<u64>().is_ok()
        })
        .map(|l| l.split('\t').next().unwrap_or("").to_string())
        .collect()
}

fn ledger_file(data: &Path) -> PathBuf {
    files_under(&data.join("shipped"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "ledger"))
        .expect("a ledger")
}

#[test]
fn ship_uploads_each_segment_once_and_a_rerun_uploads_nothing() {
    let moto = Moto::shared();
    moto.bucket("ship-basic");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = fixture_data(dir.path(), 1);
    let n = local_segments(&data).len() as u64;
    let url = "s3://ship-basic/fleet/dns";

    // A dry run uploads nothing and writes no ledger.
    let dry = ship(moto, &moto.endpoint(), &data, url, &["--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert_eq!(summary(&dry), (n, 0, 0, 0));
    assert!(!data.join("shipped").exists());

    let started = Instant::now();
    let out = ship(moto, &moto.endpoint(), &data, url, &[]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(summary(&out), (n, 0, 0, 0));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("shipped s3://ship-basic/fleet/dns/host="))
            .count() as u64,
        n,
        "{stdout}"
    );
    assert_eq!(
        assert_lake_mirrors(moto, "ship-basic", "fleet/dns", &data) as u64,
        n
    );
    let mut ledger = ledger_entries(&data);
    ledger.sort();
    assert_eq!(
        ledger,
        local_segments(&data),
        "the ledger names every segment once"
    );
    eprintln!("shipped {n} segments in {took:?}");

    // Again, through a proxy that counts requests: no upload at all.
    let proxy = FaultProxy::start(moto.port, Faults::default());
    let again = ship(moto, &proxy.endpoint(), &data, url, &[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(summary(&again), (0, 0, 0, 0));
    assert_eq!(
        proxy.stats.puts.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        assert_lake_mirrors(moto, "ship-basic", "fleet/dns", &data) as u64,
        n
    );

    // `status` reports the destination's state from the ledger.
    let st = Command::new(&*DNSLEDGER)
        .args(["status", "--data-dir"])
        .arg(&data)
        .output()
        .expect("status");
    let st = text(&st.stdout);
    assert!(
        st.contains(&format!(
            "shipping to {url}: shipped {n}, pending 0, lag 0 s"
        )),
        "{st}"
    );
}

#[test]
fn an_object_already_at_a_key_is_compared_never_overwritten() {
    let moto = Moto::shared();
    moto.bucket("ship-conflict");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = fixture_data(dir.path(), 1);
    let segs = local_segments(&data);
    let n = segs.len() as u64;
    let root = data.join("segments");
    // The same bytes already there (e.g. uploaded by a run killed before its ledger line).
    put_object(
        moto,
        "ship-conflict",
        &format!("p/{}", segs[0]),
        &root.join(&segs[0]),
    );
    // Different bytes at another segment's key.
    put_object(
        moto,
        "ship-conflict",
        &format!("p/{}", segs[1]),
        &root.join(&segs[2]),
    );

    let out = ship(moto, &moto.endpoint(), &data, "s3://ship-conflict/p", &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(summary(&out), (n - 2, 1, 1, 0));
    assert!(
        stderr.contains("CONFLICT")
            && stderr.contains(&format!("s3://ship-conflict/p/{}", segs[1]))
            && stderr.contains(&root.join(&segs[1]).display().to_string()),
        "the conflict names both: {stderr}"
    );
    let (lake, local) = listings(moto, "ship-conflict", "p", &data);
    assert_eq!(
        lake[&segs[1]], local[&segs[2]],
        "the other object is not overwritten"
    );
    assert_eq!(lake[&segs[0]], local[&segs[0]]);
    assert_eq!(lake.len(), local.len());
    // The conflict is not in the ledger: a re-run reports it again.
    assert!(!ledger_entries(&data).contains(&segs[1]));
    let again = ship(moto, &moto.endpoint(), &data, "s3://ship-conflict/p", &[]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(summary(&again), (0, 0, 1, 0));
}

#[test]
fn server_errors_lost_responses_and_slow_responses_are_retried() {
    let moto = Moto::shared();
    moto.bucket("ship-faults");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = fixture_data(dir.path(), 1);
    let n = local_segments(&data).len() as u64;
    let proxy = FaultProxy::start(
        moto.port,
        Faults {
            reject_puts: 4,
            lose_put_responses: 2,
            delay: Duration::from_millis(50),
            ..Faults::default()
        },
    );
    let out = ship(moto, &proxy.endpoint(), &data, "s3://ship-faults/x", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats = &proxy.stats;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        (stats.rejected.load(Relaxed), stats.lost.load(Relaxed)),
        (4, 2)
    );
    // A lost response's retry meets its own object (412): identical, so already there. (Both
    // lost responses may be the same file's: its first retry's 412 was lost too.)
    let (shipped, already, failed, pending) = summary(&out);
    assert!((1..=2).contains(&already), "{already}");
    assert_eq!((shipped + already, failed, pending), (n, 0, 0));
    assert_eq!(
        assert_lake_mirrors(moto, "ship-faults", "x", &data) as u64,
        n
    );
    assert_eq!(ledger_entries(&data).len() as u64, n);
}

#[test]
fn a_killed_shipper_resumes_without_duplicates() {
    let moto = Moto::shared();
    moto.bucket("ship-kill");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = fixture_data(dir.path(), 2);
    let n = local_segments(&data).len() as u64;
    // Slow requests, so the run is still going when it is killed.
    let proxy = FaultProxy::start(
        moto.port,
        Faults {
            delay: Duration::from_millis(150),
            ..Faults::default()
        },
    );
    let url = "s3://ship-kill/k";
    let mut child = ship_command(moto, &proxy.endpoint(), &data, url, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ship");
    wait_for("a few confirmed uploads", Duration::from_secs(60), || {
        data.join("shipped").exists() && ledger_entries(&data).len() >= 5
    });
    signal(child.id(), libc::SIGKILL);
    let _ = wait_child(&mut child, Duration::from_secs(10));
    let before = ledger_entries(&data).len() as u64;
    assert!(
        before < n,
        "killed too late: {before} of {n} already shipped"
    );

    let out = ship(moto, &moto.endpoint(), &data, url, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (shipped, already, failed, pending) = summary(&out);
    // At most the one upload in flight at the kill landed without its ledger line.
    assert!(already <= 1, "{already}");
    assert_eq!((shipped + already, failed, pending), (n - before, 0, 0));
    assert_eq!(assert_lake_mirrors(moto, "ship-kill", "k", &data) as u64, n);
    let mut ledger = ledger_entries(&data);
    ledger.sort();
    ledger.dedup();
    assert_eq!(ledger, local_segments(&data));
}

#[test]
fn a_dead_server_stops_the_run_and_verify_repairs_a_lake_that_lost_objects() {
    // Its own server: this test kills it.
    let mut moto = Moto::start();
    moto.bucket("ship-dead");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = fixture_data(dir.path(), 8);
    let local = local_segments(&data);
    let n = local.len() as u64;
    let url = "s3://ship-dead/lake";
    let child = ship_command(&moto, &moto.endpoint(), &data, url, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ship");
    wait_for("some confirmed uploads", Duration::from_secs(60), || {
        data.join("shipped").exists() && ledger_entries(&data).len() >= 10
    });
    moto.kill();
    let started = Instant::now();
    let out = child.wait_with_output().expect("ship exits");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot ship to s3://ship-dead/lake") && stderr.contains("hint:"),
        "{stderr}"
    );
    let (shipped, _, _, pending) = summary(&out);
    assert!(pending > 0 && shipped < n, "{shipped} {pending}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "gave up only after {:?}",
        started.elapsed()
    );
    assert_eq!(local_segments(&data), local, "nothing local was deleted");
    let confirmed = ledger_entries(&data).len() as u64;
    eprintln!(
        "killed the server after {confirmed} of {n}; ship exited {:?} later",
        started.elapsed()
    );

    // moto keeps objects in memory: the restarted server is empty, the ledger is not. A plain
    // run trusts the ledger and ships the rest only; --verify lists the lake and ships what it
    // lacks.
    moto.restart();
    moto.bucket("ship-dead");
    let out = ship(&moto, &moto.endpoint(), &data, url, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (rest, already, _, _) = summary(&out);
    assert_eq!(rest + already, n - confirmed);
    let (lake, _) = listings(&moto, "ship-dead", "lake", &data);
    assert_eq!(lake.len() as u64, rest + already);

    let out = ship(&moto, &moto.endpoint(), &data, url, &["--verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(summary(&out), (confirmed, 0, 0, 0));
    assert_eq!(
        assert_lake_mirrors(&moto, "ship-dead", "lake", &data) as u64,
        n
    );
    let again = ship(&moto, &moto.endpoint(), &data, url, &["--verify"]);
    assert_eq!(summary(&again), (0, 0, 0, 0));
}

#[test]
fn prune_keeps_segments_that_are_not_shipped() {
    let moto = Moto::shared();
    moto.bucket("ship-prune");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = fixture_data(dir.path(), 1);
    let all = local_segments(&data);
    let url = "s3://ship-prune/p";
    let out = ship(moto, &moto.endpoint(), &data, url, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Keep the ledger's first half only: the other half counts as not shipped.
    let ledger = ledger_file(&data);
    let t = std::fs::read_to_string(&ledger).expect("ledger");
    let lines: Vec<&str> = t.lines().collect();
    let half = (lines.len() - 1) / 2;
    std::fs::write(&ledger, lines[..=half].join("\n") + "\n").expect("rewrite");
    let shipped: Vec<String> = ledger_entries(&data);
    assert_eq!(shipped.len(), half);

    let prune = |args: &[&str]| {
        let out = Command::new(&*DNSLEDGER)
            .args(["prune", "--max-size", "1", "--data-dir"])
            .arg(&data)
            .args(args)
            .env_remove("DNSLEDGER_SHIP_TO")
            .output()
            .expect("prune");
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    // Another destination: nothing is shipped there.
    let other = prune(&["--dry-run", "--ship-to", "s3://elsewhere/x"]);
    assert!(
        other.contains(&format!("kept {} segment(s)", all.len()))
            && other.contains("not shipped yet"),
        "{other}"
    );
    // No destination named: the ledger present rules.
    let out = prune(&[]);
    let kept = all.len() - half;
    assert!(
        out.contains(&format!("deleted {half} segment(s)"))
            && out.contains(&format!("kept {kept} segment(s)"))
            && out.contains("not shipped yet (--prune-unshipped deletes them)"),
        "{out}"
    );
    let left = local_segments(&data);
    assert_eq!(left.len(), kept);
    assert!(
        left.iter().all(|s| !shipped.contains(s)),
        "only shipped ones went"
    );
    let out = prune(&["--prune-unshipped"]);
    assert!(out.contains(&format!("deleted {kept} segment(s)")), "{out}");
    assert!(local_segments(&data).is_empty());
}

#[test]
fn bad_urls_and_unreachable_endpoints_are_named() {
    let moto = Moto::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = fixture_data(dir.path(), 1);
    let local = local_segments(&data);

    let out = ship(moto, &moto.endpoint(), &data, "ftp://host/x", &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("\"ftp\"") && err.contains("s3://"), "{err}");

    let out = Command::new(&*DNSLEDGER)
        .args(["ship", "--data-dir"])
        .arg(&data)
        .env_remove("DNSLEDGER_SHIP_TO")
        .output()
        .expect("ship");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--to"), "{}", text(&out.stderr));

    // The destination from the environment, and from record's config file.
    let out = Command::new(&*DNSLEDGER)
        .args(["ship", "--data-dir"])
        .arg(&data)
        .env("DNSLEDGER_SHIP_TO", "gopher://x/y")
        .output()
        .expect("ship");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("\"gopher\""),
        "{}",
        text(&out.stderr)
    );
    let cfg = dir.path().join("dnsledger.toml");
    std::fs::write(&cfg, "ship-to = \"s3://from-config/p\"\n").expect("write config");
    let out = Command::new(&*DNSLEDGER)
        .args(["ship", "--dry-run", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .env_remove("DNSLEDGER_SHIP_TO")
        .output()
        .expect("ship");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(summary(&out), (local.len() as u64, 0, 0, 0));
    assert!(text(&out.stdout).contains(" to s3://from-config/p/host="));

    // A closed port: bind one, note it, close it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let started = Instant::now();
    let out = ship(
        moto,
        &format!("http://127.0.0.1:{port}"),
        &data,
        "s3://nowhere/p",
        &[],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot ship to s3://nowhere/p")
            && err.contains("hint: the endpoint is unreachable"),
        "{err}"
    );
    assert_eq!(summary(&out), (0, 0, 0, local.len() as u64));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(local_segments(&data), local);
    assert!(ledger_entries(&data).is_empty());

    // Credentials that may not write: the first refusal ends the run.
    let proxy = FaultProxy::start(
        moto.port,
        Faults {
            deny_puts: true,
            ..Faults::default()
        },
    );
    let out = ship(moto, &proxy.endpoint(), &data, "s3://denied/p", &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot ship to s3://denied/p") && err.contains("hint: check the credentials"),
        "{err}"
    );
    assert_eq!(summary(&out), (0, 0, 0, local.len() as u64));
    assert_eq!(
        proxy.stats.puts.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(local_segments(&data), local);

    // A bucket that does not exist.
    let out = ship(
        moto,
        &moto.endpoint(),
        &data,
        "s3://no-such-bucket-here/p",
        &[],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot ship to s3://no-such-bucket-here/p") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn bpf_record_ships_sealed_segments_as_they_are_sealed() {
    let _g = bpf_lock();
    let moto = Moto::shared();
    moto.bucket("ship-live");
    let dir = tempfile::tempdir().expect("tempdir");
    let _server = Dnsmasq::start(dir.path());
    // A backlog: segments sealed before this start, never shipped.
    let data = fixture_data(dir.path(), 1);
    let backlog = local_segments(&data).len();
    let url = "s3://ship-live/rec";
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let rec = Recorder::start_with_env(
        &data,
        &[
            "--rotate-age",
            "1s",
            "--ship-to",
            url,
            "--metrics-listen",
            &addr,
        ],
        &moto.env(),
    );
    for round in 0..3 {
        for i in 0..5 {
            run_client(Command::new("dig").args([
                "+tries=1",
                "+time=5",
                "@127.0.0.1",
                &format!("r{round}q{i}.a.test"),
            ]));
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
    // Shipped while running: the first segments are in the lake before the stop.
    wait_for(
        "a segment shipped while recording",
        Duration::from_secs(60),
        || data.join("shipped").exists() && !ledger_entries(&data).is_empty(),
    );
    // The exporter counts what was shipped (updated on the writer's tick).
    wait_for("the ship metrics", Duration::from_secs(30), || {
        let m = scrape(&addr);
        metric(&m, "dnsledger_segments_shipped_total") >= 1.0
            && m.contains("dnsledger_segments_ship_pending ")
            && m.contains("dnsledger_ship_lag_seconds ")
            && metric(&m, "dnsledger_segment_bytes_shipped_total") > 0.0
            // Nothing compacted here: exported, and zero.
            && m.contains("dnsledger_lake_objects_removed_total 0")
            && m.contains("dnsledger_lake_cleanups_pending 0")
    });
    let log = rec.stop();
    let log = log.join("\n");
    assert!(log.contains("every sealed segment is shipped"), "{log}");
    let n = assert_lake_mirrors(moto, "ship-live", "rec", &data);
    assert!(
        n >= backlog + 2,
        "{n} segments, {backlog} of them the backlog"
    );
    let st = Command::new(&*DNSLEDGER)
        .args(["status", "--data-dir"])
        .arg(&data)
        .output()
        .expect("status");
    let st = text(&st.stdout);
    assert!(
        st.contains(&format!("shipping to {url}: shipped {n}, pending 0")),
        "{st}"
    );
}

/// GET /metrics as text.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// A sample's value (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn bpf_record_stops_promptly_when_the_lake_is_unreachable() {
    let _g = bpf_lock();
    let moto = Moto::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let _server = Dnsmasq::start(dir.path());
    let data = dir.path().join("data");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut env = moto.env();
    for (k, v) in &mut env {
        if *k == "AWS_ENDPOINT_URL" {
            *v = format!("http://127.0.0.1:{port}");
        }
    }
    let rec = Recorder::start_with_env(
        &data,
        &[
            "--rotate-age",
            "1s",
            "--ship-to",
            "s3://unreachable/x",
            "--max-size",
            "1",
        ],
        &env,
    );
    for i in 0..5 {
        run_client(Command::new("dig").args([
            "+tries=1",
            "+time=5",
            "@127.0.0.1",
            &format!("dead{i}.a.test"),
        ]));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let started = Instant::now();
    let log = rec.stop().join("\n");
    let took = started.elapsed();
    eprintln!("stopped in {took:?} with the lake unreachable");
    assert!(took < Duration::from_secs(30), "stop took {took:?}:\n{log}");
    assert!(
        log.contains("cannot ship to s3://unreachable/x") && log.contains("pending"),
        "{log}"
    );
    // --max-size 1 would delete every segment; none is shipped, so all stay.
    let left = local_segments(&data);
    assert!(!left.is_empty(), "{log}");
    assert!(ledger_entries(&data).is_empty());
    let st = Command::new(&*DNSLEDGER)
        .args(["status", "--data-dir"])
        .arg(&data)
        .output()
        .expect("status");
    let st = text(&st.stdout);
    assert!(
        st.contains(&format!(
            "shipping to s3://unreachable/x: shipped 0, pending {}",
            left.len()
        )),
        "{st}"
    );
}
