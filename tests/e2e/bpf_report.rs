//! `dnsql report` over a live recording: real BPF programs, a real dnsmasq, real clients (dig
//! and kdig). The page's tables must be the recipes' own output, and its coverage must tell
//! the recorder's silence (recorded) from the time before it started and after its last
//! transaction (no record).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dnsledger_tests::harness::*;
use dnsledger_tests::html::{assert_table_is_recipe, table};

/// This module's dnsmasq listens here, beside any other server on 127.0.0.1:53.
const AT_SERVER: &str = "@127.0.0.11";

fn now_rfc3339(offset_secs: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
        + offset_secs;
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{now}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn json(data: &Path, args: &[&str]) -> String {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let r = dnsql(data, &all);
    assert_eq!(r.code, 0, "dnsql {args:?}: {}", r.stderr);
    r.stdout
}

#[test]
fn bpf_report_over_a_live_recording_is_the_recipes_and_tells_silence_from_no_record() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let since = now_rfc3339(-120);
    let _server = Dnsmasq::start_on(dir.path(), &["127.0.0.11"]);
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--ports", "53"]);
    for i in 0..6 {
        run_client(Command::new("dig").args([
            "+tries=1",
            "+time=5",
            AT_SERVER,
            &format!("r{i}.a.test"),
        ]));
    }
    // A silence inside the run: recorded, not a gap.
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..4 {
        run_client(Command::new("dig").args([
            "+tries=1",
            "+time=5",
            AT_SERVER,
            &format!("n{i}.nx.test"),
        ]));
    }
    for i in 0..3 {
        run_client(Command::new("kdig").args([
            "+retry=0",
            "+timeout=5",
            AT_SERVER,
            &format!("k{i}.a.test"),
        ]));
    }
    rec.stop();
    let until = now_rfc3339(120);

    let page = dir.path().join("report.html");
    let r = dnsql(
        &data,
        &[
            "--since",
            &since,
            "--until",
            &until,
            "report",
            "--focus",
            "a.test",
            "-o",
            page.to_str().expect("path"),
        ],
    );
    assert_eq!(r.code, 0, "dnsql report: {}", r.stderr);
    let html = std::fs::read_to_string(&page).expect("page");
    let scope = ["--since", since.as_str(), "--until", until.as_str()];
    let with = |args: &[&str]| {
        let mut all = scope.to_vec();
        all.extend_from_slice(args);
        json(&data, &all)
    };
    assert_table_is_recipe(
        &html,
        "t-top-processes",
        &with(&["top", "--by", "process", "-n", "10"]),
        10,
    );
    assert_table_is_recipe(
        &html,
        "t-top-domains",
        &with(&["top", "--by", "registered-domain", "-n", "10"]),
        10,
    );
    assert_table_is_recipe(&html, "t-nxdomain", &with(&["nxdomain"]), 10);
    assert_table_is_recipe(&html, "t-focus-who", &with(&["who", "a.test"]), usize::MAX);
    // Real processes: dig's NXDOMAINs, and dig and kdig behind a.test.
    let (_, nx) = table(&html, "t-nxdomain");
    assert_eq!(nx[0][1], "dig", "{nx:?}");
    let (cols, who) = table(&html, "t-focus-who");
    let comm = cols.iter().position(|c| c == "comm").expect("comm");
    let mut comms: Vec<&str> = who.iter().map(|r| r[comm].as_str()).collect();
    comms.sort();
    comms.dedup();
    assert_eq!(comms, ["dig", "kdig"]);
    // Coverage: one live run, nothing lost, every row of the segments counted.
    let (cols, hosts) = table(&html, "t-coverage");
    let get = |c: &str| hosts[0][cols.iter().position(|x| x == c).expect("column")].clone();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(get("runs"), "1");
    assert_eq!(get("dropped_kernel"), "0");
    assert_eq!(get("rows_lost"), "0");
    let segment_rows: u64 = json(&data, &["segments"])
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["rows"]
                .as_u64()
                .expect("rows")
        })
        .sum();
    assert_eq!(get("rows"), segment_rows.to_string());
    assert!(segment_rows >= 13, "{segment_rows} rows");
    // Before the recorder started and after its last transaction: no record; the 3-second
    // silence between the clients is inside the run, so there are exactly those two gaps.
    let (gcols, gaps) = table(&html, "t-gaps");
    let from = gcols.iter().position(|c| c == "from").expect("from");
    let why = gcols.iter().position(|c| c == "why").expect("why");
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    assert!(
        gaps.iter().all(|g| g[why] == "no recorder run covers it"),
        "{gaps:?}"
    );
    assert!(gaps.iter().any(|g| g[from] == since), "{gaps:?}");
    // The focus's first transaction, dig-like.
    assert!(
        html.contains(";; TRANSACTION r0.a.test A on "),
        "no dig-like first transaction"
    );
}
