//! `dnsql export --ocsf` checked by an independent validator against the published OCSF
//! schema: OCSF's own 1.8.0 schema export as packaged by the PyPI project `ocsf-json-schema`,
//! turned into a JSON Schema (draft 2020-12) for the event's class and profiles, and applied by
//! `jsonschema` (`tests/e2e/ocsf_validate.py`). Every event must pass, in JSON lines and in
//! Parquet (read back by DuckDB), for the replayed public captures (`dnsledger import` of
//! `testdata/pcap`) and for `testdata/segments` (recorded live, with processes). A deliberately
//! wrong event must fail, so the check can fail.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use dnsledger_tests::fixture::captures_under;
use dnsledger_tests::harness::{
    DNSLEDGER, Recorder, bpf_lock, dnsql, python, repo_root, run_client,
};

const OCSF_VERSION: &str = "1.8.0";

/// Runs the validator over `file` (`--json` or `--parquet`); its JSON report.
fn validate(kind: &str, file: &Path) -> Value {
    let python = repo_root().join(".venv/bin/python");
    let out = Command::new(&python)
        .arg(repo_root().join("tests/e2e/ocsf_validate.py"))
        .args([OCSF_VERSION, kind])
        .arg(file)
        .output()
        .expect("run the OCSF validator");
    assert!(
        out.status.success(),
        "the OCSF validator failed (scripts/setup-debian.sh --test installs ocsf-json-schema \
         and jsonschema into .venv): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("validator report")
}

/// Rows of `dns` under `data`, as dnsql counts them.
fn row_count(data: &Path) -> u64 {
    let run = dnsql(
        data,
        &["--format", "csv", "sql", "SELECT count(*) AS n FROM dns"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.stdout
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("a count")
}

/// Exports `data` as JSON lines and as Parquet, validates both, and returns the JSON events.
fn export_and_validate(data: &Path) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("events.jsonl");
    let parquet = dir.path().join("events.parquet");
    for (format, file) in [("json", &json), ("parquet", &parquet)] {
        let run = dnsql(
            data,
            &[
                "--format",
                format,
                "-o",
                file.to_str().expect("utf8"),
                "export",
                "--ocsf",
            ],
        );
        assert_eq!(run.code, 0, "export --format {format}: {}", run.stderr);
    }
    let rows = row_count(data);
    assert!(rows > 0);
    for (kind, file) in [("--json", &json), ("--parquet", &parquet)] {
        let report = validate(kind, file);
        assert_eq!(
            report["events"], rows,
            "{kind}: one event per row: {report}"
        );
        assert_eq!(
            report["invalid_count"], 0,
            "{kind}: events the OCSF {OCSF_VERSION} schema rejects: {report}"
        );
        assert_eq!(report["classes"]["4003"], rows, "{report}");
    }
    std::fs::read_to_string(&json)
        .expect("read events")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json event"))
        .collect()
}

fn count(events: &[Value], pred: impl Fn(&Value) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

#[test]
fn ocsf_export_of_fixture_segments_is_valid() {
    let events = export_and_validate(&repo_root().join("testdata/segments"));
    // Three hosts, each the device of its events.
    for host in ["host-a", "host-b", "host-c"] {
        assert!(
            count(&events, |e| e["device"]["hostname"] == host) > 0,
            "{host}"
        );
    }
}

/// A real recording (BPF, root): a process asks, is answered, asks again unanswered and gets
/// an unsolicited response; its events carry the process as `actor` and pass the validator.
#[test]
fn bpf_ocsf_export_of_a_live_recording_is_valid() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--ports", "5302", "--pair-timeout", "1s"]);
    let py = "import socket, struct, time\n\
              def msg(id, name, flags, answer=b''):\n\
              \x20   m = struct.pack('>HHHHHH', id, flags, 1, 1 if answer else 0, 0, 0)\n\
              \x20   m += b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\x00'\n\
              \x20   return m + struct.pack('>HH', 1, 1) + answer\n\
              a = b'\\xc0\\x0c' + struct.pack('>HHIH', 1, 1, 60, 4) + bytes([192, 0, 2, 7])\n\
              srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); srv.bind(('127.0.0.1', 5302))\n\
              c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.bind(('127.0.0.1', 0))\n\
              c.sendto(msg(0x1111, 'answered.ocsf.test', 0x0100), ('127.0.0.1', 5302))\n\
              srv.recv(4096)\n\
              srv.sendto(msg(0x1111, 'answered.ocsf.test', 0x8580, a), c.getsockname())\n\
              c.recv(4096)\n\
              c.sendto(msg(0x2222, 'nobody.answers.test', 0x0100), ('127.0.0.1', 5302))\n\
              srv.recv(4096)\n\
              srv.sendto(msg(0x3333, 'nobody.asked.test', 0x8183), c.getsockname())\n\
              c.recv(4096)\n\
              time.sleep(2.5)\n";
    let (pid, _) = run_client(Command::new(python()).args(["-c", py]));
    rec.stop();
    let events = export_and_validate(&data);
    let ours: Vec<&Value> = events
        .iter()
        .filter(|e| e["actor"]["process"]["pid"] == pid)
        .collect();
    assert_eq!(ours.len(), 3, "{events:?}");
    for e in &ours {
        let p = &e["actor"]["process"];
        assert_eq!(p["name"], "python3", "{e}");
        assert_eq!(p["parent_process"]["pid"], std::process::id(), "{e}");
        assert_eq!(
            p["file"]["path"],
            python()
                .canonicalize()
                .expect("python")
                .to_str()
                .expect("utf8"),
            "{e}"
        );
        assert_eq!(e["connection_info"]["direction_id"], 2, "{e}");
        assert_eq!(
            e["src_endpoint"]["hostname"], e["device"]["hostname"],
            "{e}"
        );
        assert_eq!(e["dst_endpoint"]["port"], 5302, "{e}");
    }
    let by_name = |n: &str| {
        ours.iter()
            .find(|e| e["query"]["hostname"] == n || (n.is_empty() && e["query"].is_null()))
            .copied()
    };
    let answered = by_name("answered.ocsf.test").expect("answered");
    assert_eq!(answered["activity_id"], 6);
    assert_eq!(answered["status_id"], 1);
    assert_eq!(answered["answers"][0]["rdata"], "192.0.2.7");
    assert_eq!(answered["answers"][0]["packet_uid"], 0x1111);
    // 0x8580: aa, rd, ra.
    assert_eq!(
        answered["answers"][0]["flag_ids"],
        serde_json::json!([1, 3, 4])
    );
    let unanswered = by_name("nobody.answers.test").expect("unanswered");
    assert_eq!(unanswered["activity_id"], 1);
    assert_eq!(unanswered["status_id"], 2);
    let unsolicited = by_name("nobody.asked.test").expect("unsolicited");
    assert_eq!(unsolicited["activity_id"], 2);
    assert_eq!(unsolicited["rcode_id"], 3);
}

#[test]
fn ocsf_export_of_replayed_captures_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let captures = captures_under(&repo_root().join("testdata/pcap"));
    assert!(captures.len() >= 20, "{captures:?}");
    for file in &captures {
        let out = Command::new(&*DNSLEDGER)
            .args(["--quiet", "import", "--host", "pcaps", "--data-dir"])
            .arg(&data)
            .arg(file)
            .output()
            .expect("run dnsledger import");
        assert!(
            out.status.success(),
            "import {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let events = export_and_validate(&data);
    // The captures hold every kind of row: each exports, with its activity.
    let status = |e: &Value| {
        e["unmapped"]["dnsledger_status"]
            .as_str()
            .map(str::to_owned)
    };
    for (s, activity) in [("answered", 6), ("unanswered", 1), ("unsolicited", 2)] {
        let n = count(&events, |e| status(e).as_deref() == Some(s));
        assert!(n > 0, "no {s} rows");
        assert_eq!(
            n,
            count(&events, |e| status(e).as_deref() == Some(s)
                && e["activity_id"] == activity
                && e["type_uid"] == 400300 + activity),
            "{s}"
        );
    }
    // Messages that could not be parsed still export (without a query), with the reason.
    let unparsed = count(&events, |e| {
        e["query"].is_null() && e["status_detail"].is_string()
    });
    assert!(unparsed > 0, "no unparsable rows exported");
    // NXDOMAIN is rcode_id 3 with OCSF's caption.
    assert!(count(&events, |e| e["rcode_id"] == 3 && e["rcode"] == "NXDomain") > 0);
}

/// A named change that makes an event invalid.
type Mutation = (&'static str, Box<dyn Fn(&mut Value)>);

#[test]
fn ocsf_validator_rejects_wrong_events() {
    let data = repo_root().join("testdata/segments");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events.jsonl");
    let run = dnsql(
        &data,
        &[
            "--limit",
            "1",
            "-o",
            file.to_str().expect("utf8"),
            "export",
            "--ocsf",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = std::fs::read_to_string(&file).expect("read");
    let good: Value = serde_json::from_str(text.lines().next().expect("an event")).expect("json");
    assert_eq!(validate("--json", &file)["invalid_count"], 0);
    // Each mutation alone makes the event invalid.
    let mutations: Vec<Mutation> = vec![
        (
            "unassigned rcode_id 12",
            Box::new(|e| e["rcode_id"] = 12.into()),
        ),
        (
            "no class_uid",
            Box::new(|e| drop(e.as_object_mut().map(|o| o.remove("class_uid")))),
        ),
        ("time as text", Box::new(|e| e["time"] = "yesterday".into())),
        (
            "unknown attribute",
            Box::new(|e| e["dns_status"] = "answered".into()),
        ),
        (
            "pid as text",
            Box::new(|e| e["actor"] = serde_json::json!({"process": {"pid": "1"}})),
        ),
    ];
    let mut lines = String::new();
    for (_, m) in &mutations {
        let mut e = good.clone();
        m(&mut e);
        lines.push_str(&e.to_string());
        lines.push('\n');
    }
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, lines).expect("write");
    let report = validate("--json", &bad);
    assert_eq!(report["events"], mutations.len(), "{report}");
    for (i, (what, _)) in mutations.iter().enumerate() {
        let rejected = report["invalid"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["index"] == i));
        assert!(
            rejected,
            "the validator accepted an event with {what}: {report}"
        );
    }
}
