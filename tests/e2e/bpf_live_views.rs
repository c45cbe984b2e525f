//! Live views and the Prometheus exporter, with real BPF programs, a real dnsmasq (and a small
//! SERVFAIL server) and real clients on loopback: `record --metrics-listen`, `snoop` following
//! a recorder and capturing on its own, `snoop --detailed`, and `top` in a real terminal
//! (tmux).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dnsledger_tests::harness::*;
use dnsledger_tests::segments::*;

/// This module's dnsmasq listens here, so these tests run beside any server on 127.0.0.1:53.
const SERVER: &str = "127.0.0.10";
const AT_SERVER: &str = "@127.0.0.10";

fn dig(args: &[&str]) -> Command {
    let mut c = Command::new("dig");
    c.args(["+tries=1", "+time=5"]).args(args);
    c
}

/// The rcode dig printed (`status: NOERROR`).
fn dig_status(out: &str) -> String {
    let rest = &out[out.find("status: ").expect("dig status") + 8..];
    rest.split(',').next().expect("status").to_string()
}

/// A UDP DNS server on 127.0.0.2:53 that answers SERVFAIL to everything.
struct ServfailServer {
    child: Child,
}

impl ServfailServer {
    fn start(dir: &Path) -> ServfailServer {
        let ready = dir.join("servfail.ready");
        let py = "import socket, sys\n\
                  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  s.bind(('127.0.0.2', 53))\n\
                  open(sys.argv[1], 'w').close()\n\
                  while True:\n\
                  \x20   q, peer = s.recvfrom(4096)\n\
                  \x20   if len(q) < 12: continue\n\
                  \x20   flags = 0x8182 | (q[2] & 0x01) << 8\n\
                  \x20   s.sendto(q[:2] + flags.to_bytes(2, 'big') + q[4:6] + bytes(6) + q[12:], peer)\n";
        let child = Command::new(python())
            .args(["-c", py])
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SERVFAIL server");
        let s = ServfailServer { child };
        wait_for("the SERVFAIL server", Duration::from_secs(10), || {
            ready.exists()
        });
        s
    }
}

impl Drop for ServfailServer {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let _ = wait_child(&mut self.child, Duration::from_secs(10));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// GET http://addr/path: (status line, headers, body).
fn http_get(addr: &str, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

/// Every sample of a scrape: "name{labels}" -> value.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

const DNSWATCH: [&str; 6] = [
    "a_queries",
    "aaaa_queries",
    "ptr_queries",
    "noerror_responses",
    "nxdomain_responses",
    "servfail_responses",
];

#[test]
fn bpf_metrics_dnswatch_counters_match_the_queries_sent() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let _server = Dnsmasq::start_on(dir.path(), &[SERVER]);
    let _servfail = ServfailServer::start(dir.path());
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let rec = Recorder::start(&data, &["--ports", "53", "--metrics-listen", &addr]);

    // Before any query: the DNSWatch series for all processes exist, at 0.
    let (status, headers, body) = http_get(&addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let s = samples(&body);
    for name in DNSWATCH {
        assert!(
            s.contains_key(&format!("{name}{{process=\"all\"}}")),
            "{name} missing:\n{body}"
        );
    }
    assert_eq!(
        s.get(&format!(
            "dnsledger_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        Some(&1.0),
        "{body}"
    );
    let (status, _, _) = http_get(&addr, "/nope");
    assert!(status.contains("404"), "{status}");

    // What the clients send, counted per (process, DNSWatch counter) from their own output.
    let mut expect: HashMap<(&str, &str), f64> = HashMap::new();
    let mut add = |comm: &'static str, qtype: &str, status: &str| {
        let q = match qtype {
            "A" => Some("a_queries"),
            "AAAA" => Some("aaaa_queries"),
            "PTR" => Some("ptr_queries"),
            _ => None,
        };
        let r = match status {
            "NOERROR" => Some("noerror_responses"),
            "NXDOMAIN" => Some("nxdomain_responses"),
            "SERVFAIL" => Some("servfail_responses"),
            _ => None,
        };
        for name in [q, r].into_iter().flatten() {
            for who in [comm, "all"] {
                *expect.entry((who, name)).or_default() += 1.0;
            }
        }
    };
    // Scrapes while the clients run: the counters only grow.
    let mut last_all_a = 0.0;
    let mut scrape_check = || {
        let s = samples(&http_get(&addr, "/metrics").2);
        let a = s.get("a_queries{process=\"all\"}").copied().unwrap_or(0.0);
        assert!(a >= last_all_a, "a_queries went down: {last_all_a} -> {a}");
        last_all_a = a;
    };
    for i in 0..4 {
        let (_, out) = run_client(&mut dig(&[AT_SERVER, &format!("m{i}.a.test")]));
        add("dig", "A", &dig_status(&out));
        scrape_check();
    }
    for i in 0..2 {
        let (_, out) = run_client(&mut dig(&[AT_SERVER, &format!("m{i}.a.test"), "AAAA"]));
        add("dig", "AAAA", &dig_status(&out));
    }
    let (_, out) = run_client(&mut dig(&[AT_SERVER, "-x", "192.0.2.1"]));
    add("dig", "PTR", &dig_status(&out));
    for i in 0..3 {
        let (_, out) = run_client(&mut dig(&[AT_SERVER, &format!("m{i}.nx.test")]));
        assert_eq!(dig_status(&out), "NXDOMAIN", "{out}");
        add("dig", "A", "NXDOMAIN");
        scrape_check();
    }
    for i in 0..2 {
        let (_, out) = run_client(&mut dig(&["@127.0.0.2", &format!("sf{i}.a.test")]));
        assert_eq!(dig_status(&out), "SERVFAIL", "{out}");
        add("dig", "A", "SERVFAIL");
    }
    // Another process: kdig, 5 names over one TCP connection.
    let names: Vec<String> = (0..5).map(|i| format!("k{i}.a.test")).collect();
    let mut kdig = Command::new("kdig");
    kdig.args([AT_SERVER, "+tcp", "+keepopen"]).args(&names);
    let (_, out) = run_client(&mut kdig);
    assert_eq!(out.matches("status: NOERROR").count(), 5, "{out}");
    for _ in 0..5 {
        add("kdig", "A", "NOERROR");
    }

    // Everything sent is counted, per process and in total.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mismatch, body) = loop {
        let body = http_get(&addr, "/metrics").2;
        let s = samples(&body);
        let mut bad = Vec::new();
        for comm in ["dig", "kdig", "all"] {
            for name in DNSWATCH {
                let want = expect.get(&(comm, name)).copied().unwrap_or(0.0);
                let got = s
                    .get(&format!("{name}{{process=\"{comm}\"}}"))
                    .copied()
                    .unwrap_or(0.0);
                if got != want {
                    bad.push(format!("{name}{{process=\"{comm}\"}}: {got}, sent {want}"));
                }
            }
        }
        if bad.is_empty() || Instant::now() > deadline {
            break (bad, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(mismatch.is_empty(), "{mismatch:#?}\n{body}");
    let s = samples(&body);
    // The aggregate is the sum of the processes.
    for name in DNSWATCH {
        let sum: f64 = s
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{process=")) && !k.contains("\"all\""))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(
            s[&format!("{name}{{process=\"all\"}}")],
            sum,
            "{name}\n{body}"
        );
    }
    // The dnsledger_* series.
    assert_eq!(
        s.get("dnsledger_transactions_total{qtype=\"A\",rcode=\"NXDOMAIN\",transport=\"udp\"}"),
        Some(&3.0),
        "{body}"
    );
    assert_eq!(
        s.get("dnsledger_transactions_total{qtype=\"A\",rcode=\"NOERROR\",transport=\"tcp\"}"),
        Some(&5.0),
        "{body}"
    );
    assert_eq!(
        s.get("dnsledger_transactions_total{qtype=\"A\",rcode=\"SERVFAIL\",transport=\"udp\"}"),
        Some(&2.0),
        "{body}"
    );
    assert_eq!(s.get("dnsledger_unanswered_total"), Some(&0.0), "{body}");
    let answered: f64 = 4.0 + 2.0 + 1.0 + 3.0 + 2.0 + 5.0;
    assert_eq!(
        s.get("dnsledger_latency_seconds_count"),
        Some(&answered),
        "{body}"
    );
    for series in [
        "dnsledger_events_dropped_total{reason=\"packet_ringbuf_full\"}",
        "dnsledger_events_dropped_total{reason=\"user_queue_full\"}",
        "dnsledger_ringbuf_fill_ratio",
        "dnsledger_segments_sealed_total",
        "dnsledger_segment_bytes_written_total",
        "dnsledger_spool_lag_seconds",
        "dnsledger_last_seal_timestamp_seconds",
    ] {
        assert!(s.contains_key(series), "{series} missing:\n{body}");
    }
    assert_eq!(
        s["dnsledger_events_dropped_total{reason=\"packet_ringbuf_full\"}"],
        0.0
    );
    // Every thread, the HTTP one included, runs with the reduced capabilities.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", rec.pid())).expect("tasks");
    for t in tasks.flatten() {
        let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == "dnsledger-metri" {
            assert!(st.contains("CapEff:\t0000000000080004"), "{comm}: {st}");
        }
    }
    let log = rec.stop();
    assert!(
        log.iter().any(|l| l.contains("serving Prometheus metrics")),
        "{log:#?}"
    );
    // The segments hold the same transactions.
    let rows = all_rows(&data);
    let ours = rows
        .iter()
        .filter(|r| {
            r.qname
                .as_deref()
                .is_some_and(|n| n.ends_with(".test") || n.ends_with(".in-addr.arpa"))
        })
        .count();
    assert!(ours >= answered as usize, "{ours} rows");
}

/// A running `dnsledger snoop`: stdout lines and stderr lines as they come.
struct Snoop {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Snoop {
    /// Starts `snoop` and waits for the stderr line saying it is ready (`ready` in it).
    fn start(args: &[&str], ready: &str) -> Snoop {
        let mut child = Command::new(&*DNSLEDGER)
            .arg("snoop")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dnsledger snoop");
        let out = lines_of(child.stdout.take().expect("stdout"));
        let err = lines_of(child.stderr.take().expect("stderr"));
        let mut s = Snoop {
            child,
            out,
            err,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(line) = s.err.recv_timeout(Duration::from_millis(100)) {
                let done = line.contains(ready);
                s.stderr.push(line);
                if done {
                    break;
                }
            }
            if let Some(st) = s.child.try_wait().expect("try_wait") {
                s.drain();
                panic!("snoop exited with {st}:\n{}", s.stderr.join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "snoop not ready within 60 s:\n{}",
                s.stderr.join("\n")
            );
        }
        s
    }

    fn drain(&mut self) {
        while let Ok(l) = self.out.try_recv() {
            self.stdout.push(l);
        }
        while let Ok(l) = self.err.try_recv() {
            self.stderr.push(l);
        }
    }

    /// Waits until `n` stdout lines satisfy `pred`.
    fn wait_lines(&mut self, what: &str, n: usize, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.drain();
            if self.stdout.iter().filter(|l| pred(l)).count() >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} lines of {what}:\n{}\nstderr:\n{}",
                self.stdout.join("\n"),
                self.stderr.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, a clean exit (0), and every line printed.
    fn stop(mut self) -> (Vec<String>, Vec<String>) {
        signal(self.child.id(), libc::SIGTERM);
        let st = wait_child(&mut self.child, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(100));
        self.drain();
        assert!(
            st.success(),
            "snoop exited with {st} after SIGTERM:\n{}",
            self.stderr.join("\n")
        );
        (
            std::mem::take(&mut self.stdout),
            std::mem::take(&mut self.stderr),
        )
    }
}

impl Drop for Snoop {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// (name, pid, comm, rcode) of what the clients asked, made with dig and kdig.
fn snoop_clients(prefix: &str) -> Vec<(String, u32, &'static str, &'static str)> {
    let mut sent = Vec::new();
    for i in 0..3 {
        let name = format!("{prefix}{i}.a.test");
        let (pid, out) = run_client(&mut dig(&[AT_SERVER, &name]));
        assert!(out.contains("192.0.2.1"), "{out}");
        sent.push((name, pid, "dig", "NOERROR"));
    }
    let name = format!("{prefix}x.nx.test");
    let (pid, _) = run_client(&mut dig(&[AT_SERVER, &name]));
    sent.push((name, pid, "dig", "NXDOMAIN"));
    let names: Vec<String> = (0..2).map(|i| format!("{prefix}k{i}.a.test")).collect();
    let mut kdig = Command::new("kdig");
    kdig.args([AT_SERVER, "+tcp", "+keepopen"]).args(&names);
    let (pid, _) = run_client(&mut kdig);
    for n in names {
        sent.push((n, pid, "kdig", "NOERROR"));
    }
    sent
}

#[test]
fn bpf_snoop_follows_a_running_recorder_json_and_detailed() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let _server = Dnsmasq::start_on(dir.path(), &[SERVER]);
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--ports", "53"]);
    let sock = data.join("live.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&sock).expect("live.sock").permissions(),
    );
    assert_eq!(mode & 0o777, 0o660, "live.sock mode {mode:o}");
    // `snoop` must not need the recorder's status to be fresh: wait for the first one.
    wait_for("status.json", Duration::from_secs(10), || {
        data.join("status.json").exists()
    });
    let data_s = data.to_str().expect("utf8");
    let following = format!("following the running recorder (pid {})", rec.pid());
    let json = Snoop::start(
        &[
            "--data-dir",
            data_s,
            "--format",
            "json",
            "--name",
            "fo*.test",
        ],
        &following,
    );
    let detailed = Snoop::start(
        &["--data-dir", data_s, "--detailed", "--name", "fo0.a.test"],
        &following,
    );
    let mut json = json;
    let mut detailed = detailed;
    let sent = snoop_clients("fo");
    json.wait_lines("snoop --format json", sent.len(), |l| l.starts_with('{'));
    detailed.wait_lines("snoop --detailed", 1, |l| l.contains(";; ANSWER SECTION:"));
    std::thread::sleep(Duration::from_millis(300));
    let (out, _) = json.stop();
    let (text, _) = detailed.stop();
    let rows: Vec<serde_json::Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad json {l:?}: {e}")))
        .collect();
    for (name, pid, comm, rcode) in &sent {
        let hits: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| r["qname"] == name.as_str())
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "{name} shown {} times:\n{out:#?}",
            hits.len()
        );
        let r = hits[0];
        assert_eq!(r["pid"], *pid, "{r}");
        assert_eq!(r["comm"], *comm, "{r}");
        assert_eq!(r["rcode"], *rcode, "{r}");
        assert_eq!(r["qtype"], "A", "{r}");
        assert!(r.get("query_raw").is_none(), "{r}");
    }
    assert_eq!(rows.len(), sent.len(), "only the filtered names:\n{out:#?}");
    let text = text.join("\n");
    assert!(text.contains(";; TRANSACTION fo0.a.test A on "), "{text}");
    assert!(text.contains(&format!("pid {} ", sent[0].1)), "{text}");
    assert!(text.contains("status: NOERROR"), "{text}");
    assert!(text.contains("192.0.2.1"), "{text}");
    assert_eq!(text.matches(";; TRANSACTION ").count(), 1, "{text}");
    // The recorder kept recording what snoop showed.
    rec.stop();
    assert!(!sock.exists(), "live.sock is removed at exit");
    let rows = all_rows(&data);
    for (name, ..) in &sent {
        assert!(
            rows.iter()
                .any(|r| r.qname.as_deref() == Some(name.as_str())),
            "{name} not recorded"
        );
    }
}

#[test]
fn bpf_snoop_standalone_without_a_recorder() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let _server = Dnsmasq::start_on(dir.path(), &[SERVER]);
    let data = dir.path().join("no-recorder");
    let mut snoop = Snoop::start(
        &[
            "--data-dir",
            data.to_str().expect("utf8"),
            "--fields",
            "pid,comm,qtype,qname,rcode,answers",
            "--name",
            "sa*.test",
        ],
        "capturing with our own BPF programs",
    );
    let sent = snoop_clients("sa");
    snoop.wait_lines("snoop", sent.len(), |l| l.contains(".test"));
    std::thread::sleep(Duration::from_millis(300));
    let (out, _) = snoop.stop();
    assert_eq!(
        out[0].split_whitespace().collect::<Vec<_>>(),
        ["PID", "COMM", "QTYPE", "QNAME", "RCODE", "ANSWERS"],
        "{out:#?}"
    );
    for (name, pid, comm, rcode) in &sent {
        let hits: Vec<Vec<&str>> = out
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|c| c.get(3) == Some(&name.as_str()))
            .collect();
        assert_eq!(hits.len(), 1, "{name}:\n{out:#?}");
        let c = &hits[0];
        assert_eq!(c[0], pid.to_string(), "{c:?}");
        assert_eq!(c[1], *comm, "{c:?}");
        assert_eq!(c[2], "A", "{c:?}");
        assert_eq!(c[4], *rcode, "{c:?}");
        if *rcode == "NOERROR" {
            assert_eq!(c[5], "192.0.2.1", "{c:?}");
        }
    }
    // Nothing was written: no recorder, no data directory.
    assert!(!data.join("segments").exists());
}

#[test]
fn snoop_rejects_bad_fields() {
    let out = Command::new(&*DNSLEDGER)
        .args(["snoop", "--fields", "pid,bogus"])
        .output()
        .expect("run snoop");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`bogus`") && err.contains("qname"), "{err}");
}

/// A tmux server on its own socket, stopped (by pid) when dropped.
struct Tmux {
    socket: String,
    pid: Option<u32>,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux (apt-get install tmux)")
    }

    fn start(command: &str) -> Tmux {
        let mut t = Tmux {
            socket: format!("dnsledger-test-{}", std::process::id()),
            pid: None,
        };
        let out = t.cmd(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "150",
            "-y",
            "40",
            "-s",
            "top",
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = String::from_utf8_lossy(&t.cmd(&["display", "-p", "#{pid}"]).stdout)
            .trim()
            .parse()
            .expect("tmux server pid");
        t.pid = Some(pid);
        t
    }

    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let out = self.cmd(&["send-keys", "-t", "top", keys]);
        assert!(out.status.success());
    }

    fn wait_pane(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let p = self.pane();
            if cond(&p) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the pane shows:\n{p}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
        if let Some(pid) = self.pid {
            signal(pid, libc::SIGKILL);
        }
    }
}

/// The line index of the first row starting with `key`.
fn row_of(pane: &str, key: &str) -> Option<usize> {
    pane.lines()
        .position(|l| l.split_whitespace().next() == Some(key))
}

#[test]
fn bpf_top_in_a_terminal_sorts_groups_and_restores_on_q() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let _server = Dnsmasq::start_on(dir.path(), &[SERVER]);
    let data = dir.path().join("no-recorder");
    let cmd = format!(
        "{} -q top --data-dir {} --interval 200ms; echo \"top exited $?\"; sleep 600",
        DNSLEDGER.display(),
        data.display()
    );
    let tmux = Tmux::start(&cmd);
    tmux.wait_pane("top to start", |p| {
        p.contains("dnsledger top - own capture")
    });
    // kdig: many queries, no NXDOMAIN; dig: fewer queries, all NXDOMAIN.
    let names: Vec<String> = (0..6).map(|i| format!("t{i}.a.test")).collect();
    let mut kdig = Command::new("kdig");
    kdig.args([AT_SERVER, "+tcp", "+keepopen"]).args(&names);
    run_client(&mut kdig);
    for i in 0..3 {
        run_client(&mut dig(&[AT_SERVER, &format!("t{i}.nx.test")]));
    }
    let by_queries = tmux.wait_pane("the kdig and dig rows", |p| {
        let cols = |k: &str| {
            p.lines()
                .find(|l| l.split_whitespace().next() == Some(k))
                .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        };
        cols("kdig").is_some_and(|c| c[1] == "6") && cols("dig").is_some_and(|c| c[1] == "3")
    });
    assert!(by_queries.contains("sort: queries"), "{by_queries}");
    let header = by_queries
        .lines()
        .find(|l| l.trim_start().starts_with("COMM"))
        .expect("header row");
    for col in [
        "QUERIES", "A", "AAAA", "PTR", "NOERROR", "NXDOMAIN", "SERVFAIL", "P50", "P99",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let dig_row: Vec<&str> = by_queries
        .lines()
        .find(|l| l.split_whitespace().next() == Some("dig"))
        .expect("dig row")
        .split_whitespace()
        .collect();
    // COMM QUERIES A AAAA PTR NOERROR NXDOMAIN SERVFAIL UNANS P50 P99
    assert_eq!(
        &dig_row[1..9],
        ["3", "3", "0", "0", "0", "3", "0", "0"],
        "{by_queries}"
    );
    assert!(
        row_of(&by_queries, "kdig") < row_of(&by_queries, "dig"),
        "most queries first:\n{by_queries}"
    );
    tmux.keys("x");
    let by_nx = tmux.wait_pane("sort by NXDOMAIN", |p| p.contains("sort: NXDOMAIN"));
    assert!(
        row_of(&by_nx, "dig") < row_of(&by_nx, "kdig"),
        "most NXDOMAIN first:\n{by_nx}"
    );
    tmux.keys("n");
    let by_name = tmux.wait_pane("sort by name", |p| p.contains("sort: name"));
    assert!(
        row_of(&by_name, "dig") < row_of(&by_name, "kdig"),
        "{by_name}"
    );
    tmux.keys("r");
    let reversed = tmux.wait_pane("reversed", |p| p.contains("(reversed)"));
    assert!(
        row_of(&reversed, "kdig") < row_of(&reversed, "dig"),
        "{reversed}"
    );
    tmux.keys("g");
    let by_pid = tmux.wait_pane("group by pid", |p| p.contains("group: pid/comm"));
    assert!(by_pid.contains("PID/COMM"), "{by_pid}");
    tmux.keys("q");
    let after = tmux.wait_pane("top to exit", |p| p.contains("top exited"));
    assert!(after.contains("top exited 0"), "{after}");
    // The alternate screen is gone: the table is no longer on the terminal.
    assert!(!after.contains("NXDOMAIN"), "{after}");
}

#[test]
fn bpf_top_restores_the_terminal_on_sigterm() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("no-recorder");
    let cmd = format!(
        "{} -q top --data-dir {}; echo \"top exited $?\"; stty -a | tr ' ;' '\\n\\n' | grep -x -e '-*icanon' -e '-*echo'; sleep 600",
        DNSLEDGER.display(),
        data.display()
    );
    let tmux = Tmux::start(&cmd);
    tmux.wait_pane("top to start", |p| {
        p.contains("dnsledger top - own capture")
    });
    let shell: u32 = String::from_utf8_lossy(
        &tmux
            .cmd(&["display", "-p", "-t", "top", "#{pane_pid}"])
            .stdout,
    )
    .trim()
    .parse()
    .expect("pane pid");
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
        .expect("children of the pane's shell");
    let top: u32 = children
        .split_whitespace()
        .next()
        .expect("top's pid")
        .parse()
        .expect("pid");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{top}/comm"))
            .expect("comm")
            .trim(),
        "dnsledger"
    );
    // Only once top catches SIGTERM (a loaded machine may draw before it gets there).
    wait_for("top to catch SIGTERM", Duration::from_secs(20), || {
        std::fs::read_to_string(format!("/proc/{top}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & (1 << (libc::SIGTERM - 1)) != 0)
    });
    signal(top, libc::SIGTERM);
    let after = tmux.wait_pane("top to exit", |p| p.contains("top exited"));
    assert!(after.contains("top exited 0"), "{after}");
    // Raw mode is off again: the terminal echoes and reads lines.
    let flags: Vec<&str> = after.lines().map(str::trim).collect();
    assert!(
        flags.contains(&"icanon") && flags.contains(&"echo"),
        "{after}"
    );
}
