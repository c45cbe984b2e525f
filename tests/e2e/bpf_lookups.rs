//! libc-level lookups (BPF uprobes): clients run under `unshare -m` with /etc/hosts and
//! /etc/resolv.conf bind-mounted (a name in the hosts file; a resolver on 127.0.0.90, dnsmasq).
//!  - `getent ahosts` of the hosts-file name: one getaddrinfo row, lookup_local, its address,
//!    and no DNS row;
//!  - `getent ahosts`, python's `socket.getaddrinfo` and curl (its resolver thread) for names
//!    dnsmasq answers: a getaddrinfo row, not local, whose lookup_id the A and AAAA rows of the
//!    same thread carry; `getent hosts` is gethostbyname2; python's `socket.getnameinfo` of the
//!    hosts-file address a local getnameinfo row;
//!  - a musl-linked client (musl-gcc, dynamically linked): its getaddrinfo is a row linked to
//!    its queries, through musl's own libc.so;
//!  - `dnsql who` counts lookups apart from queries, `top` leaves them out;
//!  - `--no-lookups` records none.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dnsledger_tests::harness::*;
use dnsledger_tests::segments::*;

const RESOLVER: &str = "127.0.0.90";

/// A shell command run with the test's /etc/hosts and /etc/resolv.conf, in a mount namespace
/// of its own: `exec` keeps the pid, so the pid returned is the client's.
fn isolated(dir: &Path, client: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c"]).arg(format!(
        "mount --bind {d}/hosts /etc/hosts && mount --bind {d}/resolv.conf /etc/resolv.conf \
         && exec {client}",
        d = dir.display()
    ));
    cmd
}

/// Runs a client that may fail (curl cannot connect to the test addresses); returns its pid.
fn run_may_fail(cmd: &mut Command) -> u32 {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let pid = child.id();
    wait_child(&mut child, Duration::from_secs(30));
    pid
}

/// A getaddrinfo client linked against musl (dynamically: its libc is musl's libc.so, which
/// the recorder probed at start from the host's library directories: no process maps it then).
fn musl_client(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("gai.c");
    std::fs::write(
        &src,
        "#include <netdb.h>\n#include <stdio.h>\n#include <string.h>\n\
         int main(int argc, char **argv) {\n\
         \x20 struct addrinfo hints, *res;\n\
         \x20 memset(&hints, 0, sizeof(hints));\n\
         \x20 hints.ai_socktype = SOCK_STREAM;\n\
         \x20 int rc = getaddrinfo(argv[1], \"80\", &hints, &res);\n\
         \x20 if (rc) { fprintf(stderr, \"%s\\n\", gai_strerror(rc)); return 1; }\n\
         \x20 freeaddrinfo(res);\n\
         \x20 return 0;\n}\n",
    )
    .expect("write gai.c");
    let bin = dir.join("gai-musl");
    let out = Command::new("musl-gcc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run musl-gcc (apt-get install musl-tools, see scripts/setup-debian.sh)");
    assert!(
        out.status.success(),
        "musl-gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Dynamically linked: its interpreter is musl's dynamic linker (its libc).
    let file = Command::new("readelf")
        .arg("-l")
        .arg(&bin)
        .output()
        .expect("readelf");
    assert!(
        String::from_utf8_lossy(&file.stdout).contains("ld-musl"),
        "the musl client is dynamically linked against musl"
    );
    bin
}

fn setup(dir: &Path) {
    std::fs::write(
        dir.join("hosts"),
        "127.0.0.1 localhost\n192.0.2.77 local.lookup.test\n",
    )
    .expect("write hosts");
    std::fs::write(
        dir.join("resolv.conf"),
        format!("nameserver {RESOLVER}\noptions attempts:1 timeout:3\n"),
    )
    .expect("write resolv.conf");
}

fn lookups_of(rows: &[Row], pid: u32) -> Vec<&Row> {
    rows.iter()
        .filter(|r| r.pid == Some(pid) && r.status == "lookup")
        .collect()
}

fn wire_of(rows: &[Row], pid: u32) -> Vec<&Row> {
    rows.iter()
        .filter(|r| r.pid == Some(pid) && r.status != "lookup")
        .collect()
}

/// The one getaddrinfo row of `pid` for `name`, not local, and its A and AAAA rows linked.
fn assert_linked(rows: &[Row], pid: u32, name: &str, func: &str) {
    let lookups: Vec<&Row> = lookups_of(rows, pid)
        .into_iter()
        .filter(|r| r.qname.as_deref() == Some(name))
        .collect();
    assert_eq!(lookups.len(), 1, "one {func} row for {name}: {rows:#?}");
    let l = lookups[0];
    assert_eq!(l.lookup_fn.as_deref(), Some(func), "{l:?}");
    assert_eq!(l.lookup_local, Some(false), "{l:?}");
    assert_eq!(l.lookup_error, None, "{l:?}");
    assert_eq!(l.transport, "libc");
    assert!(l.latency_ns.is_some_and(|n| n > 0), "{l:?}");
    let id = l.lookup_id.expect("lookup_id");
    let wire = wire_of(rows, pid);
    assert!(!wire.is_empty(), "{name}: wire rows of {pid}: {rows:#?}");
    let mut qtypes: Vec<&str> = Vec::new();
    for w in &wire {
        assert_eq!(w.qname.as_deref(), Some(name), "{w:?}");
        assert_eq!(w.lookup_id, Some(id), "linked to its lookup: {w:?}");
        assert_eq!(w.tid, l.tid, "sent by the lookup's thread: {w:?}");
        assert_eq!(w.server_ip, RESOLVER);
        qtypes.push(w.qtype_name.as_deref().unwrap_or("-"));
    }
    qtypes.sort();
    assert_eq!(qtypes, ["A", "AAAA"], "{name}: {wire:#?}");
    // The addresses the program got.
    assert!(
        l.answer_ips.contains(&"192.0.2.1".to_string())
            && l.answer_ips.contains(&"2001:db8::1".to_string()),
        "{l:?}"
    );
}

#[test]
fn bpf_libc_lookups_are_rows_linked_to_their_queries() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path());
    let musl = musl_client(dir.path());
    let dns = Dnsmasq::start_on(dir.path(), &[RESOLVER]);
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &[]);

    let (local_pid, out) = run_client(&mut isolated(dir.path(), "getent ahosts local.lookup.test"));
    assert!(out.contains("192.0.2.77"), "{out}");
    let (ahosts_pid, _) = run_client(&mut isolated(dir.path(), "getent ahosts www.a.test"));
    let (hosts_pid, _) = run_client(&mut isolated(dir.path(), "getent hosts hosts.a.test"));
    let py = format!(
        "{} -c \"import socket; socket.getaddrinfo('py.a.test', 80, proto=socket.IPPROTO_TCP); \
         print(socket.getnameinfo(('192.0.2.77', 80), 0)[0])\"",
        python().display()
    );
    let (py_pid, out) = run_client(&mut isolated(dir.path(), &py));
    assert_eq!(out.trim(), "local.lookup.test");
    let curl_pid = run_may_fail(&mut isolated(
        dir.path(),
        "curl -s --max-time 2 http://curl.a.test:9/",
    ));
    let (musl_pid, _) = run_client(&mut isolated(
        dir.path(),
        &format!("{} musl.a.test", musl.display()),
    ));
    let logs = rec.stop().join("\n");
    assert!(logs.contains("libc lookups: probes attached"), "{logs}");
    let rows = all_rows(&data);

    // The hosts file: a local lookup, no wire traffic.
    let l = lookups_of(&rows, local_pid);
    assert_eq!(l.len(), 1, "{rows:#?}");
    assert_eq!(l[0].qname.as_deref(), Some("local.lookup.test"));
    assert_eq!(l[0].lookup_fn.as_deref(), Some("getaddrinfo"));
    assert_eq!(l[0].lookup_local, Some(true));
    assert_eq!(l[0].answer_ips, vec!["192.0.2.77".to_string()]);
    assert_eq!(l[0].comm.as_deref(), Some("getent"));
    assert!(wire_of(&rows, local_pid).is_empty(), "{rows:#?}");

    assert_linked(&rows, ahosts_pid, "www.a.test", "getaddrinfo");
    assert_linked(&rows, musl_pid, "musl.a.test", "getaddrinfo");

    // getent hosts: gethostbyname2 (AF_INET6 first), one row per call, its query linked.
    let h = lookups_of(&rows, hosts_pid);
    assert!(!h.is_empty(), "{rows:#?}");
    for r in &h {
        assert_eq!(r.lookup_fn.as_deref(), Some("gethostbyname2"), "{r:?}");
        assert_eq!(r.qname.as_deref(), Some("hosts.a.test"));
    }
    for w in wire_of(&rows, hosts_pid) {
        assert!(
            h.iter()
                .any(|l| l.lookup_id == w.lookup_id && w.lookup_id.is_some()),
            "{w:?} linked to one of {h:#?}"
        );
    }

    // python: getaddrinfo to the wire, getnameinfo from the hosts file. Python's
    // socket.getnameinfo first calls getaddrinfo on the numeric address (AI_NUMERICHOST): a
    // row of its own, local.
    let p = lookups_of(&rows, py_pid);
    let gai: Vec<&Row> = p
        .iter()
        .copied()
        .filter(|r| r.lookup_fn.as_deref() == Some("getaddrinfo"))
        .collect();
    assert_eq!(gai.len(), 2, "{p:#?}");
    assert!(
        gai.iter()
            .any(|r| r.qname.as_deref() == Some("192.0.2.77") && r.lookup_local == Some(true)),
        "{p:#?}"
    );
    assert_linked(&rows, py_pid, "py.a.test", "getaddrinfo");
    let gni: Vec<&Row> = p
        .iter()
        .copied()
        .filter(|r| r.lookup_fn.as_deref() == Some("getnameinfo"))
        .collect();
    assert_eq!(gni.len(), 1, "{p:#?}");
    assert_eq!(gni[0].qname.as_deref(), Some("77.2.0.192.in-addr.arpa"));
    assert_eq!(gni[0].lookup_local, Some(true));

    // curl resolves in a thread of its own: the lookup and its queries are that thread's.
    let c = lookups_of(&rows, curl_pid);
    assert_eq!(c.len(), 1, "{rows:#?}");
    assert_eq!(c[0].qname.as_deref(), Some("curl.a.test"));
    let cw = wire_of(&rows, curl_pid);
    assert!(!cw.is_empty(), "{rows:#?}");
    for w in &cw {
        assert_eq!(w.lookup_id, c[0].lookup_id, "{w:?}");
        assert_eq!(w.tid, c[0].tid, "{w:?}");
    }
    assert_eq!(c[0].lookup_local, Some(false));

    // The resolver saw the wire queries and no query for the hosts-file name.
    let q = dns.queries();
    assert!(!q.iter().any(|(_, n)| n.contains("lookup.test")), "{q:?}");
    assert!(q.iter().any(|(_, n)| n == "musl.a.test"), "{q:?}");

    // who: the lookup counted apart from the queries; a local-only name is found too.
    let who = dnsql_json(&data, &["who", "www.a.test"]);
    let getent: Vec<&serde_json::Value> = who
        .iter()
        .filter(|v| v["pid"].as_u64() == Some(u64::from(ahosts_pid)))
        .collect();
    assert_eq!(getent.len(), 1, "{who:?}");
    assert_eq!(getent[0]["lookups"].as_u64(), Some(1), "{who:?}");
    assert_eq!(getent[0]["queries"].as_u64(), Some(2), "{who:?}");
    let who_local = dnsql_json(&data, &["who", "local.lookup.test"]);
    assert!(
        who_local
            .iter()
            .any(|v| v["pid"].as_u64() == Some(u64::from(local_pid))
                && v["lookups"].as_u64() == Some(1)
                && v["queries"].as_u64() == Some(0)),
        "{who_local:?}"
    );
    // top counts DNS transactions: no lookup rows.
    let top = dnsql_json(&data, &["top", "--by", "domain", "-n", "0"]);
    assert!(
        top.iter().any(|v| v.to_string().contains("www.a.test")),
        "{top:?}"
    );
    assert!(
        !top.iter()
            .any(|v| v.to_string().contains("local.lookup.test")),
        "{top:?}"
    );

    // --no-lookups: none.
    let data2 = dir.path().join("data2");
    let rec = Recorder::start(&data2, &["--no-lookups"]);
    let (pid2, _) = run_client(&mut isolated(dir.path(), "getent ahosts www.a.test"));
    rec.stop();
    let rows2 = all_rows(&data2);
    assert!(lookups_of(&rows2, pid2).is_empty(), "{rows2:#?}");
    assert!(!wire_of(&rows2, pid2).is_empty(), "wire capture goes on");
    assert!(
        rows2.iter().all(|r| r.status != "lookup"),
        "no lookup rows with --no-lookups"
    );
}
