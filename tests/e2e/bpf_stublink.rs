//! The requester behind a local stub (BPF): a caching dnsmasq on 127.0.0.81 forwarding to a
//! second dnsmasq on 127.0.0.82 (and `hole.test` to 127.0.0.83, where a socket of this test
//! never answers). The stub's upstream rows name the clients (dig, getent under `unshare -m`
//! with resolv.conf bind-mounted to the stub, python; dig +tcp and kdig +tcp, whose upstream
//! query the child dnsmasq forks per connection sends), the client rows say `stub_cache`
//! miss, then hit for a second query within the TTL; coalesced queries are all named; an
//! unrelated process asking the same name at the same moment is not linked; `dnsql who` names
//! the clients, not the stub; `--no-stub-link` leaves the columns empty.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use dnsledger_tests::harness::*;

const STUB: &str = "127.0.0.81";
const UPSTREAM: &str = "127.0.0.82";
const HOLE: &str = "127.0.0.83";

/// A dnsmasq in the foreground with a query log, stopped by pid on drop.
struct Server {
    child: Child,
}

impl Server {
    fn start(dir: &Path, name: &str, args: &[String]) -> Server {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port=53",
                "--log-queries",
                "--user=root",
                "--pid-file",
            ])
            .args(args)
            .arg(format!("--log-facility={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq (apt-get install dnsmasq-base)");
        wait_for("dnsmasq to start", Duration::from_secs(20), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("started"))
        });
        Server { child }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let _ = wait_child(&mut self.child, Duration::from_secs(10));
    }
}

fn dig(name: &str) -> Command {
    let mut c = Command::new("dig");
    c.args(["+tries=1", "+time=5", &format!("@{STUB}"), name]);
    c
}

/// A python process that sends one A query for `argv[1]` to `argv[2]`:53, waits for the
/// answer (at most `argv[3]` seconds) and exits.
const PY_QUERY: &str = "import socket, struct, sys\n\
name, server, wait = sys.argv[1], sys.argv[2], float(sys.argv[3])\n\
q = struct.pack('>HHHHHH', 0x4243, 0x0100, 1, 0, 0, 0)\n\
q += b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\x00'\n\
q += struct.pack('>HH', 1, 1)\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.settimeout(wait)\n\
s.sendto(q, (server, 53))\n\
try:\n    s.recv(4096)\nexcept socket.timeout:\n    pass\n";

fn python_query(name: &str, server: &str, wait: &str) -> Command {
    let mut c = Command::new(python());
    c.args(["-c", PY_QUERY, name, server, wait]);
    c
}

/// Rows to and from this test's addresses, oldest first.
fn rows(data: &Path) -> Vec<Value> {
    dnsql_json(
        data,
        &[
            "sql",
            "SELECT pid, comm, qname, CAST(qtype_name AS VARCHAR) AS qtype, \
             CAST(server_ip AS VARCHAR) AS server, CAST(status AS VARCHAR) AS status, \
             CAST(transport AS VARCHAR) AS transport, \
             requester_pids, requester_comms, requester_exes, \
             CAST(stub_cache AS VARCHAR) AS stub_cache \
             FROM dns WHERE server_ip IN ('127.0.0.81', '127.0.0.82', '127.0.0.83') \
             ORDER BY ts",
        ],
    )
}

fn pid_of(r: &Value) -> u32 {
    r["pid"].as_u64().unwrap_or(0) as u32
}

/// A row's `requester_pids` (empty when NULL); also bpf_resolved's.
pub(crate) fn requesters(r: &Value) -> Vec<u32> {
    r["requester_pids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// A string column of a row ("" when NULL); also bpf_resolved's.
pub(crate) fn s<'a>(r: &'a Value, k: &str) -> &'a str {
    r[k].as_str().unwrap_or("")
}

#[test]
fn bpf_stub_upstream_rows_name_the_clients() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let _upstream = Server::start(
        dir.path(),
        "upstream",
        &[
            format!("--listen-address={UPSTREAM}"),
            "--address=/a.test/192.0.2.1".into(),
            "--address=/a.test/2001:db8::1".into(),
            "--local-ttl=300".into(),
        ],
    );
    // The black hole: bound, never read.
    let _hole = std::net::UdpSocket::bind((HOLE, 53)).expect("bind 127.0.0.83:53");
    let stub = Server::start(
        dir.path(),
        "stub",
        &[
            format!("--listen-address={STUB}"),
            format!("--server={UPSTREAM}"),
            format!("--server=/hole.test/{HOLE}"),
            "--cache-size=1000".into(),
        ],
    );
    let stub_pid = stub.child.id();
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--pair-timeout", "2s"]);

    // dig twice (the second within the TTL), getent twice, python twice.
    let (dig1, out) = run_client(&mut dig("d1.a.test"));
    assert!(out.contains("192.0.2.1"), "{out}");
    let (dig2, _) = run_client(&mut dig("d1.a.test"));
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {STUB}\noptions attempts:1 timeout:5\n"),
    )
    .expect("resolv.conf");
    let getent = format!(
        "mount --bind {} /etc/resolv.conf && exec getent hosts g1.a.test",
        resolv.display()
    );
    let getent_cmd = || {
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c", &getent]);
        c
    };
    let (get1, out) = run_client(&mut getent_cmd());
    assert!(out.contains("g1.a.test"), "{out}");
    let (get2, _) = run_client(&mut getent_cmd());
    let (py1, _) = run_client(&mut python_query("p1.a.test", STUB, "5"));
    let (py2, _) = run_client(&mut python_query("p1.a.test", STUB, "5"));
    // TCP clients: dnsmasq answers each connection in a child it forks, which asks upstream
    // (over TCP) holding the listening socket.
    let (tcp1, out) = run_client(dig("t1.a.test").arg("+tcp"));
    assert!(out.contains("192.0.2.1"), "{out}");
    let (kdig1, out) = run_client(Command::new("kdig").args([
        "+tcp",
        "+retry=0",
        "+time=5",
        &format!("@{STUB}"),
        "k1.a.test",
    ]));
    assert!(out.contains("192.0.2.1"), "{out}");

    // Coalesced: two clients wait for the same name the stub cannot get; meanwhile an
    // unrelated process asks the same name of the upstream server directly.
    let spawn = |mut c: Command| {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python")
    };
    let mut w1 = spawn(python_query("c1.hole.test", STUB, "3"));
    std::thread::sleep(Duration::from_millis(300));
    let mut w2 = spawn(python_query("c1.hole.test", STUB, "3"));
    std::thread::sleep(Duration::from_millis(300));
    let (unrelated, _) = run_client(&mut python_query("c1.hole.test", UPSTREAM, "3"));
    let (wait1, wait2) = (w1.id(), w2.id());
    for w in [&mut w1, &mut w2] {
        assert!(wait_child(w, Duration::from_secs(20)).success());
    }
    // The stub's unanswered upstream queries are written after the pair timeout.
    std::thread::sleep(Duration::from_millis(2500));
    let logs = rec.stop();

    let all = rows(&data);
    let logs = logs.join("\n");
    let ctx = || format!("rows:\n{all:#?}\nrecorder:\n{logs}");
    let clients = |pid: u32| -> Vec<&Value> { all.iter().filter(|r| pid_of(r) == pid).collect() };
    let upstream_rows = |name: &str, qtype: &str| -> Vec<&Value> {
        all.iter()
            .filter(|r| pid_of(r) == stub_pid && s(r, "qname") == name && s(r, "qtype") == qtype)
            .collect()
    };

    // First queries: each client row is a miss and an upstream row of the stub names it.
    for (pid, comm) in [(dig1, "dig"), (get1, "getent"), (py1, "python3")] {
        let rows = clients(pid);
        assert!(!rows.is_empty(), "no row of {comm} {pid}: {}", ctx());
        for r in rows {
            assert_eq!(s(r, "server"), STUB, "{}", ctx());
            assert_eq!(s(r, "stub_cache"), "miss", "{r}: {}", ctx());
            assert!(r["requester_pids"].is_null(), "{r}");
            let ups = upstream_rows(s(r, "qname"), s(r, "qtype"));
            assert!(!ups.is_empty(), "no upstream row for {r}: {}", ctx());
            for u in ups {
                assert_eq!(s(u, "server"), UPSTREAM, "{u}");
                assert_eq!(s(u, "comm"), "dnsmasq", "{u}");
                assert_eq!(requesters(u), [pid], "{u}: {}", ctx());
                assert_eq!(u["requester_comms"][0].as_str(), Some(comm), "{u}");
                let exe = u["requester_exes"][0].as_str().unwrap_or("");
                let file = exe.rsplit('/').next().unwrap_or("");
                assert!(exe.starts_with('/') && file.starts_with(comm), "{u}");
                // The upstream server answered from its own data.
                assert_eq!(s(u, "stub_cache"), "hit", "{u}");
            }
        }
    }
    // TCP clients: the upstream rows, of the stub's child serving the connection, name them.
    for (pid, comm) in [(tcp1, "dig"), (kdig1, "kdig")] {
        let rows = clients(pid);
        assert!(!rows.is_empty(), "no row of {comm} {pid}: {}", ctx());
        for r in rows {
            assert_eq!(s(r, "transport"), "tcp", "{r}");
            assert_eq!(s(r, "stub_cache"), "miss", "{r}: {}", ctx());
            let ups: Vec<&Value> = all
                .iter()
                .filter(|u| {
                    s(u, "comm") == "dnsmasq"
                        && s(u, "server") == UPSTREAM
                        && s(u, "qname") == s(r, "qname")
                        && s(u, "qtype") == s(r, "qtype")
                })
                .collect();
            assert!(!ups.is_empty(), "no upstream row for {r}: {}", ctx());
            for u in ups {
                assert_eq!(requesters(u), [pid], "{u}: {}", ctx());
                assert_eq!(u["requester_comms"][0].as_str(), Some(comm), "{u}");
            }
        }
    }
    // Second queries within the TTL: hits, and no second upstream query.
    for (pid, first) in [(dig2, dig1), (get2, get1), (py2, py1)] {
        let rows = clients(pid);
        assert!(!rows.is_empty(), "no row of {pid}: {}", ctx());
        for r in rows {
            assert_eq!(s(r, "stub_cache"), "hit", "{r}: {}", ctx());
            for u in upstream_rows(s(r, "qname"), s(r, "qtype")) {
                assert_eq!(requesters(u), [first], "{u}: {}", ctx());
            }
        }
    }
    // Coalesced: the stub's upstream queries for c1.hole.test name both waiting clients (and
    // only them); the unrelated process's own query names nobody.
    let holes = upstream_rows("c1.hole.test", "A");
    assert!(
        !holes.is_empty(),
        "no upstream row for c1.hole.test: {}",
        ctx()
    );
    let mut named = HashSet::new();
    for u in &holes {
        assert_eq!(s(u, "server"), HOLE, "{u}");
        named.extend(requesters(u));
    }
    assert_eq!(named, HashSet::from([wait1, wait2]), "{}", ctx());
    for pid in [wait1, wait2] {
        for r in clients(pid) {
            assert_eq!(s(r, "stub_cache"), "miss", "{r}: {}", ctx());
        }
    }
    let unrelated_rows = clients(unrelated);
    assert_eq!(unrelated_rows.len(), 1, "{}", ctx());
    assert!(unrelated_rows[0]["requester_pids"].is_null(), "{}", ctx());

    // `dnsql who` names the clients, each lookup once, and not the stub.
    let who = dnsql_json(&data, &["who", "d1.a.test"]);
    let pids: HashSet<u32> = who.iter().map(pid_of).collect();
    assert_eq!(pids, HashSet::from([dig1, dig2]), "{who:#?}");
    for w in &who {
        assert_eq!(w["queries"].as_u64(), Some(1), "{w}");
    }

    // --no-stub-link: the same traffic leaves the columns empty.
    let data2 = dir.path().join("data2");
    let rec = Recorder::start(&data2, &["--no-stub-link"]);
    let (dig3, _) = run_client(&mut dig("n1.a.test"));
    let logs = rec.stop().join("\n");
    let all = rows(&data2);
    assert!(all.iter().any(|r| pid_of(r) == dig3), "{all:#?}\n{logs}");
    assert!(
        all.iter().any(|r| pid_of(r) == stub_pid),
        "{all:#?}\n{logs}"
    );
    for r in &all {
        assert!(
            r["requester_pids"].is_null() && r["stub_cache"].is_null(),
            "{r}"
        );
    }
}
