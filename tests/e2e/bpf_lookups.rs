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
//!  - `--no-lookups` records none (and starts no attach helper);
//!  - a C library first seen after start (a copy of the host's libc, a new inode, bind-mounted
//!    over libc.so.6 in a private mount namespace; resolver dnsmasq on 127.0.0.94) is probed
//!    through the attach helper: python's and getent's lookups in it are rows, linked to their
//!    queries; with `--user nobody`, the recorder's threads keep only the kept capabilities,
//!    the helper only CAP_SYS_ADMIN (both as nobody), and it exits with the recorder (stopped,
//!    or killed).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dnsledger::capture::attach_helper::HELPER_ARG;
use dnsledger::capture::privs::{Phase, needed};

use dnsledger_tests::harness::*;
use dnsledger_tests::segments::*;

const RESOLVER: &str = "127.0.0.90";
/// The resolver of the late-library test.
const LATE_RESOLVER: &str = "127.0.0.94";
/// Where Debian's glibc is (a merged /usr: /lib is /usr/lib).
const HOST_LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

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
    setup_with(dir, RESOLVER);
}

fn setup_with(dir: &Path, resolver: &str) {
    std::fs::write(
        dir.join("hosts"),
        "127.0.0.1 localhost\n192.0.2.77 local.lookup.test\n",
    )
    .expect("write hosts");
    std::fs::write(
        dir.join("resolv.conf"),
        format!("nameserver {resolver}\noptions attempts:1 timeout:3\n"),
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
    assert_linked_via(rows, pid, name, func, RESOLVER);
}

/// [`assert_linked`], the queries sent to `server`.
fn assert_linked_via(rows: &[Row], pid: u32, name: &str, func: &str, server: &str) {
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
        assert_eq!(w.server_ip, server);
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
    assert_eq!(attach_helpers_of(rec.pid()), Vec::<u32>::new(), "no helper");
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

/// The `Key:\tvalue` lines of /proc/PID[/task/TID]/status.
fn status_of(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path.join("status"))
        .unwrap_or_else(|e| panic!("{}/status: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn cap_mask(status: &BTreeMap<String, String>, key: &str) -> u64 {
    u64::from_str_radix(&status[key], 16).unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn mask(phase: Phase) -> u64 {
    needed(phase).map(|c| 1u64 << c.index()).sum()
}

/// The attach helpers the recorder `pid` started (its children running [`HELPER_ARG`]).
fn attach_helpers_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("recorder tasks");
    for t in tasks.flatten() {
        let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for c in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            if cmdline
                .split(|b| *b == 0)
                .any(|a| a == HELPER_ARG.as_bytes())
            {
                out.push(c);
            }
        }
    }
    out
}

/// `client` in a mount namespace of its own with the test's hosts and resolv.conf, and `libc`
/// (a copy) bind-mounted over the host's C library.
fn isolated_with_libc(dir: &Path, libc: &Path, client: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c"]).arg(format!(
        "mount --bind {d}/hosts /etc/hosts && mount --bind {d}/resolv.conf /etc/resolv.conf \
         && mount --bind {l} {HOST_LIBC} && exec {client}",
        d = dir.display(),
        l = libc.display(),
    ));
    cmd
}

#[test]
fn bpf_late_libc_is_probed_through_the_attach_helper() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    setup_with(dir.path(), LATE_RESOLVER);
    let dns = Dnsmasq::start_on(dir.path(), &[LATE_RESOLVER]);
    let data = dir.path().join("data");
    // As the packaged service runs: leaving root (Debian's nobody stands for its user).
    let mut rec = Recorder::start(&data, &["--user", "nobody"]);
    let nobody = |st: &BTreeMap<String, String>, key: &str| {
        assert!(
            st[key].split_whitespace().all(|id| id == "65534"),
            "{key}: {}",
            st[key]
        )
    };

    // The recorder kept only the kept capabilities, in every thread; its one helper only
    // CAP_SYS_ADMIN, in every set, with no_new_privs; both are the user.
    let kept = mask(Phase::Kept);
    let helper_caps = mask(Phase::Lookups);
    assert_eq!(helper_caps, 1 << 21, "CAP_SYS_ADMIN");
    let check_recorder = |pid: u32| {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
        for t in tasks.flatten() {
            let st = status_of(&t.path());
            for key in ["CapEff", "CapPrm"] {
                assert_eq!(
                    cap_mask(&st, key),
                    kept,
                    "recorder task {:?} {key}",
                    t.path()
                );
            }
            assert_eq!(cap_mask(&st, "CapAmb"), 0);
            nobody(&st, "Uid");
        }
    };
    check_recorder(rec.pid());
    let helpers = attach_helpers_of(rec.pid());
    assert_eq!(helpers.len(), 1, "one attach helper: {helpers:?}");
    let helper = helpers[0];
    let hs = status_of(Path::new(&format!("/proc/{helper}")));
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(cap_mask(&hs, key), helper_caps, "helper {key}: {hs:?}");
    }
    assert_eq!(cap_mask(&hs, "CapInh"), 0);
    assert_eq!(cap_mask(&hs, "CapAmb"), 0);
    assert_eq!(hs["NoNewPrivs"], "1");
    assert_eq!(hs["Threads"], "1", "the helper is single-threaded");
    nobody(&hs, "Uid");
    nobody(&hs, "Gid");

    // A C library the recorder has never seen: a copy of the host's (a new inode).
    let late = dir.path().join("late-libc.so.6");
    std::fs::copy(HOST_LIBC, &late).expect("copy libc");
    let late_ino = std::fs::metadata(&late).expect("stat").ino();
    assert_ne!(late_ino, std::fs::metadata(HOST_LIBC).expect("stat").ino());

    // python, started with it, waits for a line on stdin before its lookups: the test first
    // waits for the recorder to say it probed the copy through the helper.
    let py = format!(
        "{} -c \"import socket, sys; sys.stdin.readline(); \
         print(socket.getaddrinfo('local.lookup.test', 80)[0][4][0]); \
         socket.getaddrinfo('py.late.a.test', 80, proto=socket.IPPROTO_TCP)\"",
        python().display()
    );
    let mut child = isolated_with_libc(dir.path(), &late, &py)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let py_pid = child.id();
    let line = rec.wait_log(Duration::from_secs(30), |l| {
        l.contains("probed through the attach helper") && l.contains(&format!("pid={py_pid}"))
    });
    let Some(line) = line else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the late C library was not probed through the helper:\n{}",
            rec.log_so_far()
        );
    };
    eprintln!("late attach: {line}");
    // python maps the copy.
    let maps = std::fs::read_to_string(format!("/proc/{py_pid}/maps")).expect("python maps");
    assert!(
        maps.lines().any(|l| l.contains("libc.so.6")
            && l.split_whitespace().nth(4) == Some(late_ino.to_string().as_str())),
        "{maps}"
    );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write to python");
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "192.0.2.77");
    // getent with the same copy: probed already.
    let (getent_pid, _) = run_client(&mut isolated_with_libc(
        dir.path(),
        &late,
        "getent ahosts www.late.a.test",
    ));

    // Still dropped after the late attach.
    check_recorder(rec.pid());
    let logs = rec.stop().join("\n");
    assert!(!logs.contains("until the recorder restarts"), "{logs}");
    wait_for(
        "the helper to exit with the recorder",
        Duration::from_secs(10),
        || !Path::new(&format!("/proc/{helper}")).exists(),
    );

    let rows = all_rows(&data);
    let p = lookups_of(&rows, py_pid);
    let local: Vec<&&Row> = p
        .iter()
        .filter(|r| r.qname.as_deref() == Some("local.lookup.test"))
        .collect();
    assert_eq!(local.len(), 1, "{p:#?}");
    assert_eq!(local[0].lookup_fn.as_deref(), Some("getaddrinfo"));
    assert_eq!(local[0].lookup_local, Some(true));
    assert_eq!(local[0].answer_ips, vec!["192.0.2.77".to_string()]);
    assert_linked_via(
        &rows,
        py_pid,
        "py.late.a.test",
        "getaddrinfo",
        LATE_RESOLVER,
    );
    assert_linked_via(
        &rows,
        getent_pid,
        "www.late.a.test",
        "getaddrinfo",
        LATE_RESOLVER,
    );
    let q = dns.queries();
    assert!(q.iter().any(|(_, n)| n == "py.late.a.test"), "{q:?}");
    assert!(!q.iter().any(|(_, n)| n.contains("lookup.test")), "{q:?}");

    // A recorder killed outright takes its helper along (PR_SET_PDEATHSIG).
    let mut rec = Recorder::start(&dir.path().join("data3"), &[]);
    let helpers = attach_helpers_of(rec.pid());
    assert_eq!(helpers.len(), 1, "{helpers:?}");
    signal(rec.pid(), libc::SIGKILL);
    let _ = wait_child(&mut rec.child, Duration::from_secs(10));
    wait_for(
        "the helper to die with the recorder",
        Duration::from_secs(10),
        || !Path::new(&format!("/proc/{}", helpers[0])).exists(),
    );
}
