//! Encrypted DNS past the host's resolver: a DoT client (`openssl s_client` to an `openssl
//! s_server` on 127.0.0.44:853), a DoH client (`curl --doh-url` to an HTTPS server on
//! 127.0.0.45:443, an address on a test copy of the DoH list) and a DoQ-like datagram (UDP to
//! 127.0.0.46:853) and a TCP connect to [::1]:853 become `bypass` rows attributed to their
//! processes; HTTPS to an address not
//! on the list and plain DNS do not; `--no-bypass` records none.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dnsledger_tests::harness::*;
use dnsledger_tests::segments::*;

/// A server process stopped by pid when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        signal(self.0.id(), libc::SIGTERM);
        let _ = wait_child(&mut self.0, Duration::from_secs(10));
    }
}

/// `openssl s_server` on `addr` (host:port) with the test's certificate; `-www` answers HTTP.
fn tls_server(dir: &Path, addr: &str, www: bool) -> Server {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_server", "-quiet", "-accept", addr])
        .arg("-cert")
        .arg(dir.join("cert.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"));
    if www {
        cmd.arg("-www");
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let server = Server(child);
    wait_for(
        &format!("openssl s_server on {addr}"),
        Duration::from_secs(20),
        || TcpStream::connect(addr).is_ok(),
    );
    server
}

/// A self-signed certificate for the servers.
fn make_cert(dir: &Path) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=bypass",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl req");
    assert!(status.success(), "openssl req: {status}");
}

/// Runs a client that may fail (curl's DoH exchange with a server that is no DoH server);
/// returns its pid.
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

/// The clients of the test; returns the pids of (s_client, curl, python's datagrams).
fn run_clients(dir: &Path) -> (u32, u32, u32) {
    // DoT: a TLS connection to port 853; s_client ends when its stdin (null) does.
    let (dot_pid, _) = run_client(Command::new("openssl").args([
        "s_client",
        "-connect",
        "127.0.0.44:853",
        "-quiet",
    ]));
    // DoH: curl resolves the URL's name over DoH at 127.0.0.45 (on the test DoH list). The
    // server speaks HTTPS but not DoH, so the lookup fails after the connection: that is all
    // the recorder needs.
    let curl_pid = run_may_fail(Command::new("curl").args([
        "-sk",
        "--max-time",
        "10",
        "--doh-insecure",
        "--doh-url",
        "https://127.0.0.45/dns-query",
        "https://bypass.test/",
    ]));
    // DoQ: two datagrams from one socket to UDP port 853 (one row: one per socket and
    // destination); HTTPS to 127.0.0.48, not on the list, and to 127.0.0.45 on another port:
    // no rows; DoT over IPv6 to [::1]:853 (refused: the connect is what counts): a row.
    let script = dir.join("clients.py");
    std::fs::write(
        &script,
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.sendto(b'q1', ('127.0.0.46', 853))\n\
         s.sendto(b'q2', ('127.0.0.46', 853))\n\
         for addr in [('127.0.0.48', 443), ('127.0.0.45', 8443), ('::1', 853)]:\n\
         \x20   family = socket.AF_INET6 if ':' in addr[0] else socket.AF_INET\n\
         \x20   t = socket.socket(family, socket.SOCK_STREAM)\n\
         \x20   t.settimeout(2)\n\
         \x20   t.connect_ex(addr)\n\
         \x20   t.close()\n",
    )
    .expect("write the python client");
    let (py_pid, _) = run_client(Command::new(python()).arg(&script));
    (dot_pid, curl_pid, py_pid)
}

fn bypass_rows(data: &Path) -> Vec<Row> {
    all_rows(data)
        .into_iter()
        .filter(|r| r.status == "bypass")
        .collect()
}

#[test]
fn bpf_encrypted_dns_bypass_rows_name_the_process() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    make_cert(dir.path());
    let _dot = tls_server(dir.path(), "127.0.0.44:853", false);
    let _doh = tls_server(dir.path(), "127.0.0.45:443", true);
    let dns = Dnsmasq::start_on(dir.path(), &["127.0.0.47"]);
    let list = dir.path().join("doh-test.txt");
    std::fs::write(
        &list,
        "# test copy of the DoH list\n127.0.0.45   # local DoH endpoint\n2001:db8::53\n",
    )
    .expect("write the DoH list");

    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--doh-list", list.to_str().expect("utf-8 path")]);
    let (dot_pid, curl_pid, py_pid) = run_clients(dir.path());
    let (dig_pid, _) = run_client(Command::new("dig").args([
        "+tries=1",
        "+time=5",
        "@127.0.0.47",
        "plain.a.test",
    ]));
    let logs = rec.stop().join("\n");
    assert!(
        logs.contains("addresses=2"),
        "the recorder loaded the list: {logs}"
    );

    let rows = bypass_rows(&data);
    let find = |transport: &str, server: &str| -> Vec<&Row> {
        rows.iter()
            .filter(|r| r.transport == transport && r.server_ip == server)
            .collect()
    };
    let dot = find("dot", "127.0.0.44");
    assert_eq!(dot.len(), 1, "one DoT connection: {rows:#?}\n{logs}");
    assert_eq!(dot[0].pid, Some(dot_pid), "{:?}", dot[0]);
    assert_eq!(dot[0].comm.as_deref(), Some("openssl"));
    assert!(
        dot[0]
            .exe
            .as_deref()
            .is_some_and(|e| e.ends_with("/openssl")),
        "{:?}",
        dot[0]
    );
    assert_eq!((dot[0].server_port, dot[0].ip_version), (853, 4));

    let doh = find("doh-likely", "127.0.0.45");
    assert!(!doh.is_empty(), "curl's DoH connection: {rows:#?}\n{logs}");
    for r in &doh {
        assert_eq!(r.pid, Some(curl_pid), "{r:?}");
        assert_eq!(r.comm.as_deref(), Some("curl"), "{r:?}");
        assert_eq!(r.server_port, 443);
    }

    let doq = find("doq", "127.0.0.46");
    assert_eq!(
        doq.len(),
        1,
        "one row per socket and destination: {rows:#?}"
    );
    assert_eq!(doq[0].pid, Some(py_pid));
    assert_eq!(doq[0].server_port, 853);

    let dot6 = find("dot", "::1");
    assert_eq!(dot6.len(), 1, "DoT over IPv6: {rows:#?}");
    assert_eq!((dot6[0].pid, dot6[0].ip_version), (Some(py_pid), 6));

    // Not on the list, or not port 443: nothing. Every bypass row is one of the above.
    assert_eq!(
        rows.len(),
        dot.len() + doh.len() + doq.len() + dot6.len(),
        "unexpected bypass rows: {rows:#?}"
    );

    // Plain DNS is recorded as before, and is no bypass.
    let all = all_rows(&data);
    let plain: Vec<&Row> = all
        .iter()
        .filter(|r| r.qname.as_deref() == Some("plain.a.test"))
        .collect();
    assert_eq!(plain.len(), 1, "{plain:#?}");
    assert_eq!(plain[0].status, "answered");
    assert_eq!(plain[0].transport, "udp");
    assert_eq!(plain[0].pid, Some(dig_pid));
    assert_eq!(dns.queries().len(), 1, "dnsmasq saw the one query");

    // The recipe: one row per process, transport and endpoint.
    let out = dnsql_json(&data, &["bypass"]);
    let got: Vec<(String, String, String, u64)> = out
        .iter()
        .map(|v| {
            (
                v["comm"].as_str().unwrap_or_default().to_string(),
                v["transport"].as_str().unwrap_or_default().to_string(),
                v["server_ip"].as_str().unwrap_or_default().to_string(),
                v["connections"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let want = [
        ("openssl", "dot", "127.0.0.44", 1),
        ("curl", "doh-likely", "127.0.0.45", doh.len() as u64),
        ("python3", "doq", "127.0.0.46", 1),
        ("python3", "dot", "::1", 1),
    ];
    for (comm, transport, server, n) in want {
        assert!(
            got.contains(&(comm.into(), transport.into(), server.into(), n)),
            "{comm} {transport} {server} x{n} missing from dnsql bypass: {got:?}"
        );
    }
    assert_eq!(got.len(), 4, "{got:?}");
    // Its SQL for a lake engine gives the same rows in DuckDB.
    let printed = dnsql(&data, &["--print-sql", "--dialect", "duckdb", "bypass"]);
    assert_eq!(printed.code, 0, "{}", printed.stderr);
    let sql_file = dir.path().join("bypass.sql");
    std::fs::write(&sql_file, &printed.stdout).expect("write the printed SQL");
    let script = format!(
        "import duckdb\n\
         sql = open({path:?}).read()\n\
         stmts = [s for s in sql.split(';\\n') if s.strip() and not all(\n\
         \x20   l.startswith('--') or not l.strip() for l in s.strip().splitlines())]\n\
         con = duckdb.connect()\n\
         for s in stmts[:-1]:\n\
         \x20   con.execute(s)\n\
         for r in con.execute(stmts[-1]).fetchall():\n\
         \x20   print(r[1], r[6], r[7], r[9])\n",
        path = sql_file.display().to_string()
    );
    let mut duck = duckdb_lines(&script, &data);
    duck.sort();
    let mut mine: Vec<String> = got
        .iter()
        .map(|(c, t, s, n)| format!("{c} {t} {s} {n}"))
        .collect();
    mine.sort();
    assert_eq!(
        duck, mine,
        "DuckDB on --print-sql's SQL:\n{}",
        printed.stdout
    );

    // --no-bypass: the same clients leave no bypass row.
    let data2 = dir.path().join("data-off");
    let rec = Recorder::start(
        &data2,
        &[
            "--no-bypass",
            "--doh-list",
            list.to_str().expect("utf-8 path"),
        ],
    );
    run_clients(dir.path());
    let logs = rec.stop().join("\n");
    assert!(bypass_rows(&data2).is_empty(), "--no-bypass: {logs}");
}
