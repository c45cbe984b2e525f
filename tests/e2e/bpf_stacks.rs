//! `record --stacks`: the user stack of the code that sent each query, symbolized, for each
//! send call (sendto, send on a connected socket, sendmsg, sendmmsg, TCP write and writev);
//! and the tracefs the syscall tracepoints need, mounted when absent.
//!
//! The DNS server listens on 127.0.0.65:53 only (no other test uses that address).

use std::path::{Path, PathBuf};
use std::process::Command;

use dnsledger_tests::harness::*;
use dnsledger_tests::segments::*;

const ADDR: &str = "127.0.0.65";

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

/// Runs the client: one query for `name` sent with `mode` to ADDR:53.
fn query(client: &Path, name: &str, mode: &str) -> u32 {
    let (pid, out) = run_client(Command::new(client).args([name, mode, "1", "1000", "53", ADDR]));
    assert!(out.contains("answer"), "{mode}: {out}");
    pid
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
    let server = Dnsmasq::start_on(dir.path(), &[ADDR]);
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--ports", "53", "--stacks"]);
    // Every send call the stack programs are attached to (send() is the sendto syscall).
    let cases = [
        ("s1.a.test", "udp", "udp"),
        ("s2.a.test", "tcp", "tcp"),
        ("s3.a.test", "udp-send", "udp"),
        ("s4.a.test", "udp-sendmsg", "udp"),
        ("s5.a.test", "udp-sendmmsg", "udp"),
        ("s6.a.test", "tcp-writev", "tcp"),
    ];
    let pids: Vec<u32> = cases
        .iter()
        .map(|(name, mode, _)| query(&client, name, mode))
        .collect();
    let log = rec.stop();
    let rows = all_rows(&data);
    let asked: Vec<String> = server.queries().into_iter().map(|(_, n)| n).collect();

    let src_file = "stack_client.c:";
    for ((name, mode, transport), pid) in cases.iter().zip(pids) {
        assert!(asked.iter().any(|n| n == name), "server never saw {name}");
        let row = row_for(&rows, name);
        assert_eq!(row.pid, Some(pid), "{mode}: {row:#?}");
        assert_eq!(row.transport, *transport, "{mode}");
        assert_eq!(row.status, "answered", "{mode}");
        let stack = row
            .stack
            .as_ref()
            .unwrap_or_else(|| panic!("{mode}: no stack for {name}: {row:#?}\n{}", log.join("\n")));
        // The client's own function, with its source line (the binary has DWARF), innermost
        // frames first: the query function comes before main.
        let query_frame = stack
            .iter()
            .position(|f| f.starts_with("dnsledger_test_send_query (") && f.contains(src_file))
            .unwrap_or_else(|| panic!("{mode}: {stack:#?}"));
        let main_frame = stack
            .iter()
            .position(|f| f.starts_with("main ("))
            .unwrap_or_else(|| panic!("{mode}: {stack:#?}"));
        assert!(query_frame < main_frame, "{mode}: {stack:#?}");
    }
}

#[test]
fn bpf_stacks_are_off_by_default() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let client = build_client(dir.path());
    let _server = Dnsmasq::start_on(dir.path(), &[ADDR]);
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--ports", "53"]);
    let pid = query(&client, "n1.a.test", "udp");
    rec.stop();
    let rows = all_rows(&data);
    let row = row_for(&rows, "n1.a.test");
    assert_eq!(row.pid, Some(pid));
    assert_eq!(row.stack, None, "{row:#?}");
}

/// `dnsledger check` in a private mount namespace where tracefs is not mounted (as on a host
/// that does not mount it at boot), with `prefix` before the binary.
fn check_without_tracefs(prefix: &str) -> (bool, String, String) {
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null; \
         test ! -e /sys/kernel/tracing/events || {{ echo 'tracefs still mounted' >&2; exit 99; }}; \
         exec {prefix} '{}' check",
        DNSLEDGER.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("RUST_LOG", "info")
        .output()
        .expect("run unshare (util-linux)");
    assert_ne!(out.status.code(), Some(99), "{out:?}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn stack_lines(stdout: &str) -> Vec<&str> {
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("program dns_stack_"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    lines
}

#[test]
fn bpf_stacks_mount_tracefs_when_it_is_absent() {
    let _g = bpf_lock();
    // Root: tracefs is mounted in the namespace and both programs attach.
    let (ok, stdout, stderr) = check_without_tracefs("");
    assert!(ok, "{stdout}\n{stderr}");
    for line in stack_lines(&stdout) {
        assert!(
            line.contains(" ok ") && line.contains("syscalls:sys_"),
            "{stdout}"
        );
    }
    assert!(
        stderr.contains("mounted tracefs at /sys/kernel/tracing"),
        "{stderr}"
    );

    // Without CAP_SYS_ADMIN the mount fails: the --stacks probes say why and what to do, and
    // recording without --stacks is still possible.
    let (ok, stdout, stderr) = check_without_tracefs("setpriv --bounding-set -sys_admin");
    assert!(ok, "{stdout}\n{stderr}");
    for line in stack_lines(&stdout) {
        assert!(line.contains(" no "), "{stdout}");
    }
    assert!(
        stdout.contains("tracefs")
            && stdout.contains("mount -t tracefs tracefs /sys/kernel/tracing"),
        "{stdout}"
    );
    assert!(stdout.contains("recording can work"), "{stdout}");
}
