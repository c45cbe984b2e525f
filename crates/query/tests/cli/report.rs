//! `dnsql report`: the page over the fixture has every section, its numbers are the recipes'
//! (compared with the recipe commands' own output), bad input still gives a page or a clear
//! error, and a real browser (Debian's chromium, headless, networking cut) renders it without
//! a single network request into a screenshot that is not blank.

use std::path::{Path, PathBuf};
use std::process::Command;

use dnsledger_schema::{Transaction, meta, partition, status};
use dnsledger_tests::fixture::{self as rows_fixture, write_parquet};
use dnsledger_tests::html::{assert_table_is_recipe, table};

use super::{fixture, run};

/// The report's sections, in order.
const SECTIONS: [&str; 8] = [
    "coverage",
    "activity",
    "top-processes",
    "top-domains",
    "first-seen",
    "exfil",
    "nxdomain",
    "focus",
];

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// `dnsql --data <fixture> ARGS`, expected to succeed; its stdout.
fn ok(args: &[&str]) -> String {
    let data = fixture();
    let mut all = vec!["--data", data.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let r = run(&all);
    assert_eq!(r.code, 0, "dnsql {args:?}: {r:?}");
    r.stdout
}

/// `dnsql --data <fixture> SCOPE… report FLAGS… -o DIR/report.html`; returns the page.
fn report(dir: &Path, scope: &[&str], flags: &[&str]) -> String {
    let out = dir.join("report.html");
    let mut all = scope.to_vec();
    all.push("report");
    all.extend_from_slice(flags);
    all.extend(["-o", out.to_str().expect("utf-8 path")]);
    assert_eq!(ok(&all), "", "the page goes to -o, nothing to stdout");
    std::fs::read_to_string(out).expect("report written")
}

#[test]
fn report_over_the_fixture_has_every_section_with_the_recipes_numbers() {
    let dir = tmp();
    let html = report(dir.path(), &[], &["--focus", "wikimedia.org"]);
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..200]);
    let mut at = 0;
    for id in SECTIONS {
        let pos = html
            .find(&format!("<section id=\"{id}\">"))
            .unwrap_or_else(|| panic!("no section {id}"));
        assert!(pos > at, "section {id} out of order");
        at = pos;
    }
    // Self-contained: nothing to load, and a policy that forbids loading anything.
    assert!(html.contains("default-src 'none'"));
    for needle in [
        "<script",
        "src=",
        "href=\"http",
        "url(",
        "@import",
        "@font-face",
    ] {
        assert!(!html.contains(needle), "the page contains {needle}");
    }
    // The rankings, exfil and nxdomain are the recipes' rows, cell for cell.
    assert_table_is_recipe(
        &html,
        "t-top-processes",
        &ok(&["--format", "json", "top", "--by", "process", "-n", "10"]),
        10,
    );
    assert_table_is_recipe(
        &html,
        "t-top-domains",
        &ok(&[
            "--format",
            "json",
            "top",
            "--by",
            "registered-domain",
            "-n",
            "10",
        ]),
        10,
    );
    assert_table_is_recipe(&html, "t-exfil", &ok(&["--format", "json", "exfil"]), 10);
    assert_table_is_recipe(
        &html,
        "t-nxdomain",
        &ok(&["--format", "json", "nxdomain"]),
        10,
    );
    assert_table_is_recipe(
        &html,
        "t-focus-who",
        &ok(&["--format", "json", "who", "wikimedia.org"]),
        usize::MAX,
    );
    let (_, exfil) = table(&html, "t-exfil");
    assert_eq!(exfil[0][0], "tunnel.com", "the dns2tcp tunnel first");
    // The notes count the recipes' whole results (the page keeps only the rows it shows).
    let whole = |args: &[&str], flag: &str| {
        let rows: Vec<serde_json::Value> = ok(args)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let trues = rows.iter().filter(|r| r[flag] == true).count();
        (rows.len(), trues)
    };
    let (pairs, flagged) = whole(&["--format", "json", "exfil"], "flagged");
    assert!(pairs > 2 && flagged > 0, "{pairs} pairs, {flagged} flagged");
    // With fewer rows shown than the results have.
    let short = report(dir.path(), &[], &["--top", "2"]);
    assert_eq!(table(&short, "t-exfil").1.len(), 2);
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    for note in [
        format!(
            "{flagged} (registered domain, process) pair{} flagged",
            plural(flagged)
        ),
        format!(
            "{pairs} pair{} with at least one signal in all",
            plural(pairs)
        ),
    ] {
        assert!(html.contains(&note), "no note `{note}`");
    }
    let shown = format!("The first 2 of {pairs} shown");
    assert!(short.contains(&shown), "no note `{shown}`");
    let (nx_rows, excessive) = whole(&["--format", "json", "nxdomain"], "excessive");
    let note = format!(
        "{nx_rows} (process, registered domain) row{} with failing answers, most failing names \
         first; {excessive} row{} of processes past",
        plural(nx_rows),
        plural(excessive)
    );
    assert!(html.contains(&note), "no note `{note}`");
    // The coverage's rows per host are the footers' (dnsql segments), and sum to the table.
    let segments = ok(&["--format", "json", "segments"]);
    let (columns, hosts) = table(&html, "t-coverage");
    let rows_col = columns.iter().position(|c| c == "rows").expect("rows");
    let segs_col = columns
        .iter()
        .position(|c| c == "segments")
        .expect("segments");
    for h in &hosts {
        let (n, rows) = segments
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
            .filter(|s| s["host"] == h[0].as_str())
            .fold((0u64, 0u64), |(n, r), s| {
                (n + 1, r + s["rows"].as_u64().expect("rows"))
            });
        assert_eq!(h[segs_col], n.to_string(), "{h:?}");
        assert_eq!(h[rows_col], rows.to_string(), "{h:?}");
    }
    assert_eq!(hosts.len(), 3);
    // The focus: the dig-like first transaction, as `dnsql show` renders it.
    let first = ok(&["show", "under=wikimedia.org"]);
    let first = first.split("\n\n").next().expect("first transaction");
    assert!(
        html.contains(
            &first
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        ),
        "the first transaction is not on the page:\n{first}"
    );
    // Each section names its SQL, and that SQL runs under `dnsql sql` with the page's numbers.
    assert!(html.matches("<details class=\"sql\"").count() >= SECTIONS.len());
}

#[test]
fn first_seen_compares_with_the_window_before() {
    let dir = tmp();
    // host-c's 2023-02-19..21 captures: the window is the last day; the day before it is the
    // window before.
    let since = "2023-02-21T00:00:00Z";
    let until = "2023-02-22T00:00:00Z";
    let html = report(dir.path(), &["--since", since, "--until", until], &[]);
    let (_, rows) = table(&html, "t-first-seen");
    let mut page: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    page.sort();
    // The same set from plain SQL over every segment.
    let direct = ok(&[
        "--format",
        "csv",
        "sql",
        "SELECT DISTINCT registered_domain FROM dns_all \
         WHERE ts >= TIMESTAMP '2023-02-21T00:00:00Z' AND ts < TIMESTAMP '2023-02-22T00:00:00Z' \
         AND registered_domain IS NOT NULL \
         AND registered_domain NOT IN (SELECT registered_domain FROM dns_all \
           WHERE ts >= TIMESTAMP '2023-02-20T00:00:00Z' AND ts < TIMESTAMP '2023-02-21T00:00:00Z' \
           AND registered_domain IS NOT NULL) \
         ORDER BY 1",
    ]);
    let want: Vec<String> = direct.lines().skip(1).map(str::to_owned).collect();
    assert!(!want.is_empty(), "the window has new domains");
    assert_eq!(page, want);
}

#[test]
fn an_empty_window_and_a_name_never_seen_still_write_a_page_that_says_so() {
    let dir = tmp();
    let html = report(
        dir.path(),
        &[
            "--since",
            "1999-01-01T00:00:00Z",
            "--until",
            "1999-01-02T00:00:00Z",
        ],
        &["--focus", "nothing.example"],
    );
    assert!(html.contains("id=\"empty\""), "no empty-window notice");
    assert!(html.contains("no segment of any host in scope overlaps it"));
    assert!(html.contains("No host has a segment in the window"));
    assert!(html.contains("Never seen: the name nothing.example"));
    // A name never seen in a window with data.
    let html = report(dir.path(), &[], &["--focus", "never-resolved.example"]);
    assert!(!html.contains("id=\"empty\""));
    assert!(html.contains("Never seen: the name never-resolved.example"));
}

#[test]
fn an_unwritable_output_is_exit_1_naming_the_path() {
    let data = fixture();
    let dir = tmp();
    let bad = dir.path().join("no/such/dir/report.html");
    let r = run(&[
        "--data",
        data.to_str().expect("path"),
        "report",
        "-o",
        bad.to_str().expect("path"),
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(&format!("`{}`", bad.display())), "{r:?}");
    assert!(r.stderr.contains("hint:"), "{r:?}");
    // A directory is no file either.
    let r = run(&[
        "--data",
        data.to_str().expect("path"),
        "report",
        "-o",
        dir.path().to_str().expect("path"),
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&dir.path().display().to_string()),
        "{r:?}"
    );
}

/// Debian's chromium, headless, with every host name unresolvable and background networking
/// off; a net log records any request it would still make. Returns (exit status, stderr).
fn chromium_screenshot(page: &Path, png: &Path, netlog: &Path) -> (bool, String) {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,1800",
        ])
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!(
            "--user-data-dir={}",
            page.with_extension("profile").display()
        ))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium (apt-get install chromium; scripts/setup-debian.sh --test)");
    (
        out.status.success() && png.exists(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// URLs chromium requested on behalf of the page: the net log's `URL_REQUEST_START_JOB`
/// events whose network isolation key is the page's site (`file://`). The browser's own
/// background requests (component updates, time, accounts) carry another key and are not the
/// page's doing.
fn requested_urls(netlog: &Path) -> Vec<String> {
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(netlog).expect("net log")).expect("json");
    let start_job = &log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"];
    assert!(start_job.is_number(), "net log without event types");
    let mut urls: Vec<String> = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| &e["type"] == start_job)
        .filter(|e| {
            e["params"]["network_isolation_key"]
                .as_str()
                .is_some_and(|k| k.contains("file://"))
        })
        .filter_map(|e| e["params"]["url"].as_str().map(str::to_owned))
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// (pixels, pixels far from white, pixels of each of `colours`).
fn pixels(png: &Path, colours: &[(u8, u8, u8)]) -> (usize, usize, Vec<usize>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png).expect("png"),
    ));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let (mut total, mut ink) = (0, 0);
    let mut found = vec![0; colours.len()];
    for px in buf[..info.buffer_size()].chunks(channels) {
        let rgb = (px[0], px[1], px[2]);
        total += 1;
        if u16::from(rgb.0) + u16::from(rgb.1) + u16::from(rgb.2) < 3 * 235 {
            ink += 1;
        }
        if let Some(i) = colours.iter().position(|c| *c == rgb) {
            found[i] += 1;
        }
    }
    (total, ink, found)
}

/// Where the test leaves its screenshot (the README's is a copy of it): `target/report.png`.
fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/report-screenshot.png")
}

/// 2024-05-01T08:00:00Z.
const FLEET_T0: i64 = 1_714_550_400_000_000_000;
const MIN: i64 = 60_000_000_000;

/// A segment name as the recorder writes it: first transaction, host, run id (its start, hex,
/// and a pid), number.
fn segment_name(first: i64, host: &str, run_start: i64, seq: u64) -> String {
    let c = partition::Civil::from_ns(first);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:09}Z-{host}-{run_start:016x}p{}-{seq:06}.parquet",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.nanos,
        run_start % 30_000
    )
}

/// Three hosts recorded live for 6 hours from 08:00, one segment per 10 minutes: web-1 loses
/// events in the kernel once; web-2's recorder is down from 10:00 to 11:00 and its next run
/// recovers the dead run's spool; db-1 is silent (recorder running) from 12:00 to 13:00.
fn fleet_tree() -> tempfile::TempDir {
    let dir = tmp();
    let comms = [
        ("firefox", "/usr/lib/firefox/firefox", 120),
        ("curl", "/usr/bin/curl", 40),
        ("apt", "/usr/bin/apt", 10),
        ("systemd-resolve", "/usr/lib/systemd/systemd-resolved", 25),
        ("kworkerd", "/tmp/.x/kworkerd", 0),
    ];
    let names = [
        "www.example.com",
        "api.example.net",
        "cdn.example.org",
        "deb.debian.org",
    ];
    for (h, host) in ["web-1", "web-2", "db-1"].iter().enumerate() {
        let mut run = FLEET_T0 - 5 * MIN;
        let mut seq = 0u64;
        for slot in 0..36i64 {
            let start = FLEET_T0 + slot * 10 * MIN;
            let hour = slot / 6;
            if *host == "web-2" && hour == 2 {
                continue;
            }
            if *host == "web-2" && hour == 3 && run < FLEET_T0 + 3 * 60 * MIN {
                run = FLEET_T0 + 3 * 60 * MIN;
                seq = 0;
            }
            if *host == "db-1" && hour == 4 {
                continue;
            }
            let mut rows = Vec::new();
            for (c, (comm, exe, per)) in comms.iter().enumerate() {
                let n = per + (slot * 7 + c as i64 * 3 + h as i64) % 17;
                for i in 0..n {
                    let ts = start + MIN / 2 + i * (9 * MIN / n.max(1));
                    let failing = *comm == "kworkerd" || (i % 23 == 5);
                    let qname = if *comm == "kworkerd" {
                        format!("x{i}q{slot}.dga-{h}.example")
                    } else {
                        names[(i as usize + c) % names.len()].to_owned()
                    };
                    rows.push(Transaction {
                        hostname: (*host).into(),
                        status: status::ANSWERED,
                        response_ts: Some(ts + 3_000_000),
                        latency_ns: Some(3_000_000),
                        pid: Some(1000 + c as u32 * 10 + h as u32),
                        comm: Some((*comm).into()),
                        exe: Some((*exe).into()),
                        rcode: Some(if failing { 3 } else { 0 }),
                        rcode_name: Some(if failing { "NXDOMAIN" } else { "NOERROR" }.into()),
                        qtype_name: Some("A".into()),
                        ..rows_fixture::tx(ts, &qname)
                    });
                }
            }
            let kworker = rows.iter().any(|r| r.comm.as_deref() == Some("kworkerd"));
            if !kworker && *host == "web-1" && (20..24).contains(&slot) {
                // A DGA burst on web-1 for 40 minutes.
                for i in 0..60 {
                    let ts = start + MIN + i * 5_000_000_000;
                    rows.push(Transaction {
                        hostname: (*host).into(),
                        status: status::ANSWERED,
                        pid: Some(6666),
                        comm: Some("kworkerd".into()),
                        exe: Some("/tmp/.x/kworkerd".into()),
                        rcode: Some(3),
                        rcode_name: Some("NXDOMAIN".into()),
                        qtype_name: Some("A".into()),
                        ..rows_fixture::tx(ts, &format!("q{slot}x{i}zt.dga-burst.example"))
                    });
                }
            }
            rows.sort_by_key(|r| r.ts);
            let first = rows.first().map_or(start, |r| r.ts);
            let last = rows.last().map_or(start, |r| r.ts);
            let key = partition::PartitionKey::of_ts(*host, first);
            let path = dir
                .path()
                .join(key.dir())
                .join(segment_name(first, host, run, seq));
            let dropped = if *host == "web-1" && slot == 9 {
                "120"
            } else {
                "0"
            };
            let (ts_min, ts_max) = (rfc(first), rfc(last));
            let n = rows.len().to_string();
            let mut kv = vec![
                (meta::SCHEMA_VERSION, "1"),
                (meta::HOST, *host),
                (meta::SOURCE, "bpf"),
                (meta::TS_MIN, ts_min.as_str()),
                (meta::TS_MAX, ts_max.as_str()),
                (meta::TRANSACTIONS, n.as_str()),
                (meta::DROPPED_KERNEL, dropped),
                (meta::DROPPED_USER, "0"),
                (meta::ROWS_LOST, "0"),
            ];
            let dead = format!(
                "{:016x}p{}",
                FLEET_T0 - 5 * MIN,
                (FLEET_T0 - 5 * MIN) % 30_000
            );
            if *host == "web-2" && slot == 18 {
                kv.push((meta::RECOVERED_FROM, dead.as_str()));
            }
            write_parquet(&path, &rows_fixture::batch(&rows), &kv);
            seq += 1;
        }
    }
    dir
}

/// RFC 3339 with nanoseconds, as segment metadata holds times.
fn rfc(ns: i64) -> String {
    let c = partition::Civil::from_ns(ns);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.nanos
    )
}

#[test]
fn chromium_renders_the_page_offline_without_a_request() {
    let fleet = fleet_tree();
    let dir = tmp();
    let out = dir.path().join("report.html");
    let r = run(&[
        "--data",
        fleet.path().to_str().expect("path"),
        "--since",
        "2024-05-01T08:00:00Z",
        "--until",
        "2024-05-01T14:00:00Z",
        "report",
        "--focus",
        "dga-burst.example",
        "-o",
        out.to_str().expect("path"),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let html = std::fs::read_to_string(&out).expect("page");
    // The coverage tells the three stories apart.
    let (cols, gaps) = table(&html, "t-gaps");
    let host = cols.iter().position(|c| c == "host").expect("host");
    let from = cols.iter().position(|c| c == "from").expect("from");
    assert!(
        gaps.iter()
            .any(|g| g[host] == "web-2" && g[from].starts_with("2024-05-01T09:5")),
        "web-2's stopped recorder is a gap: {gaps:?}"
    );
    assert!(
        !gaps
            .iter()
            .any(|g| g[host] == "db-1" && g[from].starts_with("2024-05-01T11:5")),
        "db-1's silence is recorded, not a gap: {gaps:?}"
    );
    assert!(html.contains("<svg"));
    let page = dir.path().join("report.html");
    let png = dir.path().join("report.png");
    let netlog = dir.path().join("netlog.json");
    let (ok, stderr) = chromium_screenshot(&page, &png, &netlog);
    assert!(ok, "chromium failed:\n{stderr}");
    assert_eq!(requested_urls(&netlog), Vec::<String>::new(), "{stderr}");
    for bad in ["Refused to", "Failed to load", "net::ERR_"] {
        assert!(!stderr.contains(bad), "console: {bad}\n{stderr}");
    }
    // The strip chart's colours (chart.rs): no record, recorded silence, DNS, a loss tick, a
    // crash recovery tick, and the first process's bars.
    let colours = [
        ("no record", (0xF4, 0xC7, 0xC3)),
        ("recorded, no DNS", (0xD9, 0xEA, 0xD3)),
        ("DNS", (0x38, 0x76, 0x1D)),
        ("loss", (0xCC, 0x00, 0x00)),
        ("crash recovered", (0xE6, 0x91, 0x38)),
        ("top process", (0x00, 0x72, 0xB2)),
    ];
    let (total, ink, found) = pixels(&png, &colours.map(|(_, c)| c));
    assert!(
        ink * 10 > total,
        "mostly blank: {ink} of {total} pixels drawn"
    );
    for ((what, _), n) in colours.iter().zip(&found) {
        assert!(*n >= 10, "{what} is not drawn ({n} pixels): {found:?}");
    }
    let _ = std::fs::copy(&png, screenshot_path());

    // The check can fail: a page that fetches an image shows up in the net log.
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><p>x</p><img src=\"http://example.invalid/x.png\">",
    )
    .expect("write");
    let (ok, stderr) = chromium_screenshot(&control, &dir.path().join("c.png"), &netlog);
    assert!(ok, "chromium failed:\n{stderr}");
    assert_eq!(
        requested_urls(&netlog),
        vec!["http://example.invalid/x.png".to_owned()],
        "{stderr}"
    );
}

#[test]
fn a_process_focus_is_the_timeline_recipe() {
    let fleet = fleet_tree();
    let data = fleet.path().to_str().expect("path");
    let dir = tmp();
    let out = dir.path().join("report.html");
    let scope = [
        "--data",
        data,
        "--since",
        "2024-05-01T08:00:00Z",
        "--until",
        "2024-05-01T14:00:00Z",
    ];
    let mut args = scope.to_vec();
    args.extend([
        "report",
        "--comm",
        "kworkerd",
        "-o",
        out.to_str().expect("path"),
    ]);
    let r = run(&args);
    assert_eq!(r.code, 0, "{r:?}");
    let html = std::fs::read_to_string(&out).expect("page");
    let mut args = scope.to_vec();
    args.extend(["--format", "json", "timeline", "--comm", "kworkerd"]);
    let timeline = run(&args);
    assert_eq!(timeline.code, 0, "{timeline:?}");
    assert!(timeline.stdout.lines().count() > 50);
    assert_table_is_recipe(&html, "t-focus-timeline", &timeline.stdout, 50);
    assert!(html.contains("Focus: processes named kworkerd"));
    // The first transaction as `dnsql show` renders it.
    let mut args = scope.to_vec();
    args.extend(["show", "comm=kworkerd"]);
    let show = run(&args);
    assert_eq!(show.code, 0, "{show:?}");
    let first = show
        .stdout
        .split("\n\n;; TRANSACTION")
        .next()
        .expect("first");
    assert!(first.starts_with(";; TRANSACTION "), "{first}");
    let escaped = first
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(html.contains(&escaped), "not on the page:\n{first}");
}
