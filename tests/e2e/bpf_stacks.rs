//! `record --stacks`: the user stack of the code that sent each query, symbolized.

use std::path::{Path, PathBuf};
use std::process::Command;

use dnsledger_tests::harness::*;
use dnsledger_tests::segments::*;

/// Compiles tests/e2e/data/stack_client.c with symbols and frame pointers.
fn build_client(dir: &Path) -> PathBuf {
    let src = repo_root().join("tests/e2e/data/stack_client.c");
    let bin = dir.join("stack_client");
    let out = Command::new("gcc")
        .args(["-g", "-O0", "-fno-omit-frame-pointer", "-Wall", "-o"])
        .arg(&bin)
        .arg(src)
        .output()
        .expect("run gcc (apt-get install gcc libc6-dev)");
    assert!(
        out.status.success(),
        "gcc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

fn row_for<'a>(rows: &'a [Row], name: &str) -> &'a Row {
    let found: Vec<&Row> = rows
        .iter()
        .filter(|r| r.qname.as_deref() == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "rows for {name}: {found:#?}");
    found[0]
}

#[test]
fn bpf_stacks_symbolize_the_sending_function() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let client = build_client(dir.path());
    let _server = Dnsmasq::start(dir.path());
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--ports", "53", "--stacks"]);
    let (udp_pid, out) = run_client(Command::new(&client).args(["s1.a.test", "udp"]));
    assert!(out.contains("answer"), "{out}");
    let (tcp_pid, out) = run_client(Command::new(&client).args(["s2.a.test", "tcp"]));
    assert!(out.contains("answer"), "{out}");
    let log = rec.stop();
    let rows = all_rows(&data);

    let src_file = "stack_client.c:";
    for (name, pid, transport) in [("s1.a.test", udp_pid, "udp"), ("s2.a.test", tcp_pid, "tcp")] {
        let row = row_for(&rows, name);
        assert_eq!(row.pid, Some(pid), "{row:#?}");
        assert_eq!(row.transport, transport);
        assert_eq!(row.status, "answered");
        let stack = row
            .stack
            .as_ref()
            .unwrap_or_else(|| panic!("no stack for {name}: {row:#?}\n{}", log.join("\n")));
        // The client's own function, with its source line (the binary has DWARF).
        assert!(
            stack
                .iter()
                .any(|f| f.starts_with("dnsledger_test_send_query (") && f.contains(src_file)),
            "{name}: {stack:#?}"
        );
        assert!(
            stack.iter().any(|f| f.starts_with("main (")),
            "{name}: {stack:#?}"
        );
    }
}

#[test]
fn bpf_stacks_are_off_by_default() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let client = build_client(dir.path());
    let _server = Dnsmasq::start(dir.path());
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--ports", "53"]);
    let (pid, _) = run_client(Command::new(&client).args(["n1.a.test", "udp"]));
    rec.stop();
    let rows = all_rows(&data);
    let row = row_for(&rows, "n1.a.test");
    assert_eq!(row.pid, Some(pid));
    assert_eq!(row.stack, None, "{row:#?}");
}
