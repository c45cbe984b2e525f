//! Live capture with real BPF programs, real DNS servers and real clients on loopback.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dnsledger_tests::harness::*;
use dnsledger_tests::segments::*;

/// What the test expects of the row(s) of one client's name.
#[derive(Debug, Clone)]
struct Expect {
    pid: u32,
    comm: &'static str,
    transport: &'static str,
    ip_version: u8,
    rcode: &'static str,
    /// The client was started directly by this test (so its parent is the test process).
    child_of_test: bool,
}

fn dig(args: &[&str]) -> Command {
    let mut c = Command::new("dig");
    c.args(["+tries=1", "+time=5"]).args(args);
    c
}

fn command(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// One client run of the end-to-end table.
struct Client {
    command: Command,
    /// The names it asks for, each answered once.
    names: &'static [&'static str],
    /// Text its output must hold, and how many times.
    prints: Option<(&'static str, usize)>,
    /// What its rows must say (the pid is filled in once it ran).
    expect: Expect,
}

impl Client {
    /// A client asking over UDP/IPv4 and getting NOERROR: the common case the builders vary.
    fn udp4(comm: &'static str, command: Command, names: &'static [&'static str]) -> Self {
        Client {
            command,
            names,
            prints: None,
            expect: Expect {
                pid: 0,
                comm,
                transport: "udp",
                ip_version: 4,
                rcode: "NOERROR",
                child_of_test: true,
            },
        }
    }
    fn tcp(mut self) -> Self {
        self.expect.transport = "tcp";
        self
    }
    fn ipv6(mut self) -> Self {
        self.expect.ip_version = 6;
        self
    }
    fn rcode(mut self, rcode: &'static str) -> Self {
        self.expect.rcode = rcode;
        self
    }
    fn prints(mut self, text: &'static str, times: usize) -> Self {
        self.prints = Some((text, times));
        self
    }
}

#[test]
fn bpf_programs_load_and_attach() {
    let _g = bpf_lock();
    let out = Command::new(&*DNSLEDGER)
        .arg("check")
        .output()
        .expect("run dnsledger check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for program in [
        "dns_egress",
        "dns_ingress",
        "dns_connect4",
        "dns_connect6",
        "dns_sendmsg4",
        "dns_sendmsg6",
        "dns_recvmsg4",
        "dns_recvmsg6",
        "dns_exec",
        "dns_exit",
        "dns_stack_enter",
        "dns_stack_exit",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("program {program} ")))
            .unwrap_or_else(|| panic!("no line for {program}:\n{stdout}"));
        assert!(line.contains(" ok "), "{line}");
        assert!(line.contains("loads and attaches"), "{line}");
    }
    // The libc lookup programs, and late attach through the helper (CAP_SYS_ADMIN only).
    for program in [
        "lookup_getaddrinfo",
        "lookup_gethostbyname",
        "lookup_gethostbyname2",
        "lookup_getnameinfo",
        "lookup_return",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("program {program} ")))
            .unwrap_or_else(|| panic!("no line for {program}:\n{stdout}"));
        assert!(line.contains(" ok "), "{line}");
    }
    let helper = stdout
        .lines()
        .find(|l| l.starts_with("lookup attach helper "))
        .unwrap_or_else(|| panic!("no attach helper line:\n{stdout}"));
    assert!(
        helper.contains(" ok ") && helper.contains("late attach works"),
        "{helper}"
    );
    assert!(stdout.contains("recording can work"), "{stdout}");
}

#[test]
fn bpf_end_to_end_dnsmasq_clients() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Dnsmasq::start(dir.path());
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--ports", "53"]);

    let me = std::process::id();
    // glibc's resolver through getent, with a private resolv.conf in a mount namespace.
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions attempts:1 timeout:5\n",
    )
    .expect("resolv.conf");
    let getent = format!(
        "mount --bind {} /etc/resolv.conf && exec getent hosts g1.a.test",
        resolv.display()
    );
    // A process that exits the moment its answer arrives.
    let exits_at_once = "import socket, struct, os, sys\n\
              name = sys.argv[1]\n\
              q = struct.pack('>HHHHHH', 0x4242, 0x0100, 1, 0, 0, 0)\n\
              q += b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\x00'\n\
              q += struct.pack('>HH', 1, 1)\n\
              s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
              s.settimeout(5)\n\
              s.sendto(q, ('127.0.0.1', 53))\n\
              s.recv(4096)\n\
              os._exit(0)\n";

    // One row per client: the command, what it must print, the names it asks (one answered row
    // each), and what the recorder must say of them.
    let clients: Vec<Client> = vec![
        Client::udp4("dig", dig(&["@127.0.0.1", "u1.a.test"]), &["u1.a.test"])
            .prints("192.0.2.1", 1),
        Client::udp4(
            "dig",
            dig(&["+tcp", "@127.0.0.1", "t1.a.test"]),
            &["t1.a.test"],
        )
        .tcp(),
        Client::udp4(
            "kdig",
            command(
                "kdig",
                &[
                    "@127.0.0.1",
                    "+tcp",
                    "+keepopen",
                    "k1.a.test",
                    "k2.a.test",
                    "k3.a.test",
                ],
            ),
            &["k1.a.test", "k2.a.test", "k3.a.test"],
        )
        .tcp()
        .prints("ANSWER SECTION", 3),
        Client::udp4(
            "drill",
            command("drill", &["d1.a.test", "@127.0.0.1"]),
            &["d1.a.test"],
        ),
        Client::udp4(
            "getent",
            command("unshare", &["-m", "sh", "-c", &getent]),
            &["g1.a.test"],
        )
        .prints("g1.a.test", 1),
        Client::udp4("dig", dig(&["@::1", "v6.a.test", "AAAA"]), &["v6.a.test"])
            .ipv6()
            .prints("2001:db8::1", 1),
        Client::udp4(
            "python3",
            {
                let mut c = Command::new(python());
                c.args(["-c", exits_at_once, "p1.a.test"]);
                c
            },
            &["p1.a.test"],
        ),
        Client::udp4("dig", dig(&["@127.0.0.1", "n1.nx.test"]), &["n1.nx.test"])
            .rcode("NXDOMAIN")
            .prints("status: NXDOMAIN", 1),
        Client::udp4(
            "dig",
            dig(&["@127.0.0.1", "r1.refused.test"]),
            &["r1.refused.test"],
        )
        .rcode("REFUSED")
        .prints("status: REFUSED", 1),
    ];
    let mut expect: HashMap<String, Expect> = HashMap::new();
    let mut add = |name: &str, e: Expect| {
        expect.insert(name.to_string(), e);
    };
    for mut c in clients {
        let (pid, out) = run_client(&mut c.command);
        if let Some((text, n)) = c.prints {
            assert_eq!(
                out.matches(text).count(),
                n,
                "{:?} printed:\n{out}",
                c.command
            );
        }
        for name in c.names {
            add(
                name,
                Expect {
                    pid,
                    ..c.expect.clone()
                },
            );
        }
    }

    // 200 short-lived dig processes, 8 at a time.
    let names: Vec<String> = (0..200).map(|i| format!("s{i}.a.test")).collect();
    for chunk in names.chunks(8) {
        let children: Vec<_> = chunk
            .iter()
            .map(|n| {
                let child = dig(&["+short", "@127.0.0.1", n])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn dig");
                (n.clone(), child)
            })
            .collect();
        for (n, mut child) in children {
            let pid = child.id();
            let status = wait_child(&mut child, Duration::from_secs(30));
            assert!(status.success(), "dig {n}: {status}");
            add(
                &n,
                Expect {
                    pid,
                    comm: "dig",
                    transport: "udp",
                    ip_version: 4,
                    rcode: "NOERROR",
                    child_of_test: true,
                },
            );
        }
    }

    let logs = rec.stop();
    let logged = server.queries();
    let rows: Vec<Row> = all_rows(&data)
        .into_iter()
        .filter(|r| r.server_port == 53 && (r.server_ip == "127.0.0.1" || r.server_ip == "::1"))
        .filter(|r| r.qname.as_deref().is_some_and(|q| q.ends_with(".test")))
        .collect();

    // Exactly one answered row per query the server logged, and nothing else for these names.
    let mut logged_count: HashMap<(String, String), usize> = HashMap::new();
    for (qtype, name) in &logged {
        *logged_count
            .entry((qtype.clone(), name.clone()))
            .or_default() += 1;
    }
    let mut row_count: HashMap<(String, String), usize> = HashMap::new();
    for r in &rows {
        assert_eq!(
            r.status,
            "answered",
            "row not answered: {r:?}\nrecorder log:\n{}",
            logs.join("\n")
        );
        *row_count
            .entry((
                r.qtype_name.clone().unwrap_or_default(),
                r.qname.clone().unwrap_or_default(),
            ))
            .or_default() += 1;
    }
    let missing: Vec<_> = logged_count
        .iter()
        .filter(|(k, n)| row_count.get(*k) != Some(n))
        .map(|(k, n)| format!("{k:?}: server logged {n}, rows {:?}", row_count.get(k)))
        .collect();
    assert!(
        missing.is_empty(),
        "mismatches:\n{}\nrecorder log:\n{}",
        missing.join("\n"),
        logs.join("\n")
    );
    assert_eq!(
        rows.len(),
        logged.len(),
        "rows for names the server never logged"
    );
    assert!(
        logged.len() >= 211,
        "server logged only {} queries",
        logged.len()
    );

    let my_netns = std::fs::metadata("/proc/self/ns/net").expect("netns").ino() as u32;
    for r in &rows {
        let name = r.qname.as_deref().unwrap_or_default();
        let e = expect
            .get(name)
            .unwrap_or_else(|| panic!("row for a name no client asked: {r:?}"));
        assert_eq!(r.pid, Some(e.pid), "pid of {name}: {r:?}");
        assert_eq!(r.comm.as_deref(), Some(e.comm), "comm of {name}: {r:?}");
        assert_eq!(r.transport, e.transport, "transport of {name}");
        assert_eq!(r.ip_version, e.ip_version, "ip version of {name}");
        assert_eq!(
            r.rcode_name.as_deref(),
            Some(e.rcode),
            "rcode of {name}: {r:?}"
        );
        assert!(
            r.tid.is_some() && r.uid == Some(0),
            "tid/uid of {name}: {r:?}"
        );
        if e.child_of_test && e.comm != "getent" {
            assert_eq!(r.ppid, Some(me), "ppid of {name}: {r:?}");
        }
        let exe = r.exe.as_deref().unwrap_or_default();
        assert!(exe.contains(e.comm), "exe of {name}: {r:?}");
        let cmdline = r.cmdline.as_deref().unwrap_or_default();
        assert!(
            cmdline.contains(name) || e.comm == "kdig",
            "cmdline of {name}: {r:?}"
        );
        assert!(
            r.cgroup_id.is_some() && r.cgroup_path.is_some(),
            "cgroup of {name}: {r:?}"
        );
        assert_eq!(r.netns, Some(my_netns), "netns of {name}");
        if r.qtype_name.as_deref() == Some("A") && e.rcode == "NOERROR" {
            assert_eq!(
                r.answer_ips,
                vec!["192.0.2.1".to_string()],
                "answers of {name}"
            );
        }
        if r.qtype_name.as_deref() == Some("AAAA") && e.rcode == "NOERROR" {
            assert_eq!(
                r.answer_ips,
                vec!["2001:db8::1".to_string()],
                "answers of {name}"
            );
        }
        let (q, a) = (r.query_raw.as_ref(), r.response_raw.as_ref());
        assert_eq!(
            q.map(|b| b.len() as u32),
            r.query_size,
            "query raw/size of {name}"
        );
        assert_eq!(
            a.map(|b| b.len() as u32),
            r.response_size,
            "response raw/size of {name}"
        );
        assert!(q.is_some() && a.is_some(), "raw of {name}");
        assert_eq!(r.client_ip, r.server_ip, "loopback client of {name}");
        assert!(r.parse_error.is_none(), "parse error for {name}: {r:?}");
    }
    // dnsmasq explains its REFUSED with an extended DNS error.
    let refused = rows
        .iter()
        .find(|r| r.qname.as_deref() == Some("r1.refused.test"))
        .expect("refused row");
    assert!(refused.ede_code.is_some(), "{refused:?}");

    check_dnsql(&data, &expect, &rows);
}

/// `dnsql` (the binary) over the segments the recorder just wrote: every recipe answers with the
/// live attribution, and agrees with what the segments hold.
fn check_dnsql(data: &Path, expect: &HashMap<String, Expect>, rows: &[Row]) {
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_default();
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default()
    };

    // segments: all of them, nothing dropped; SQL counts what the parquet reader counts.
    let total = all_rows(data).len() as u64;
    let segments = dnsql_json(data, &["segments"]);
    assert!(!segments.is_empty());
    let seg_rows: u64 = segments.iter().filter_map(|g| g["rows"].as_u64()).sum();
    assert_eq!(seg_rows, total, "{segments:?}");
    for g in &segments {
        assert_eq!(g["dropped_kernel"].as_u64(), Some(0), "{g}");
        assert_eq!(g["dropped_user"].as_u64(), Some(0), "{g}");
    }
    let n = dnsql_json(
        data,
        &[
            "sql",
            "SELECT count(*) AS n FROM dns WHERE qname LIKE '%.test' AND server_port = 53",
        ],
    );
    assert_eq!(n[0]["n"].as_u64(), Some(rows.len() as u64));

    // who: one row per process that asked for a name under a.test, with exactly its names.
    let mut per_pid: HashMap<u32, Vec<&Row>> = HashMap::new();
    for r in rows
        .iter()
        .filter(|r| r.qname.as_deref().is_some_and(|q| q.ends_with(".a.test")))
    {
        per_pid.entry(r.pid.expect("pid")).or_default().push(r);
    }
    let who = dnsql_json(data, &["who", "a.test"]);
    assert_eq!(who.len(), per_pid.len(), "who a.test: {who:?}");
    for w in &who {
        let pid = w["pid"].as_u64().expect("pid") as u32;
        let mine = per_pid
            .get(&pid)
            .unwrap_or_else(|| panic!("who lists pid {pid}, which asked nothing: {w}"));
        let name = mine[0].qname.as_deref().unwrap_or_default();
        assert_eq!(s(&w["comm"]), expect[name].comm, "{w}");
        assert!(s(&w["exe"]).contains(expect[name].comm), "{w}");
        assert_eq!(w["queries"].as_u64(), Some(mine.len() as u64), "{w}");
        let mut names: Vec<String> = mine.iter().filter_map(|r| r.qname.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(list(&w["queried_names"]), names, "{w}");
        if names.iter().any(|n| n == "u1.a.test") {
            assert_eq!(list(&w["answers_received"]), ["A 192.0.2.1"], "{w}");
        }
    }

    // timeline --pid: kdig's three names over one TCP connection, in order (its libc lookup
    // of the server address, a `lookup` row, is left out here: bpf_lookups checks those).
    let kdig = expect["k1.a.test"].pid.to_string();
    let tl: Vec<serde_json::Value> = dnsql_json(data, &["timeline", "--pid", &kdig])
        .into_iter()
        .filter(|t| t["status"] != "lookup")
        .collect();
    let names: Vec<String> = tl.iter().map(|t| s(&t["qname"])).collect();
    assert_eq!(names, ["k1.a.test", "k2.a.test", "k3.a.test"], "{tl:?}");
    for t in &tl {
        assert_eq!(
            (s(&t["comm"]), s(&t["transport"])),
            ("kdig".into(), "tcp".into())
        );
        assert_eq!(s(&t["rcode"]), "NOERROR");
    }

    // show: the dig-like view names the process that asked.
    let nx = &expect["n1.nx.test"];
    let show = dnsql(data, &["show", "name=n1.nx.test"]);
    assert_eq!(show.code, 0, "{show:?}");
    for want in [
        format!(";; PROCESS: pid {} ", nx.pid),
        "comm dig exe ".to_string(),
        "status: NXDOMAIN".to_string(),
        ";n1.nx.test.".to_string(),
    ] {
        assert!(
            show.stdout.contains(&want),
            "no {want:?} in:\n{}",
            show.stdout
        );
    }

    // nxdomain: dig's failing names, per registered domain, with the pid.
    let nxd = dnsql_json(data, &["nxdomain"]);
    let row = nxd
        .iter()
        .find(|r| s(&r["domain"]) == "nx.test")
        .unwrap_or_else(|| panic!("no nx.test in nxdomain: {nxd:?}"));
    assert_eq!(s(&row["comm"]), "dig", "{row}");
    assert_eq!(row["nxdomain"].as_u64(), Some(1), "{row}");
    assert_eq!(list(&row["names"]), ["n1.nx.test"], "{row}");
    assert_eq!(row["pids"][0].as_u64(), Some(u64::from(nx.pid)), "{row}");

    // top --by exe: every dig process counted under dig's executable.
    let top = dnsql_json(data, &["top", "--by", "exe", "-n", "0"]);
    let dig_rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.comm.as_deref() == Some("dig"))
        .collect();
    let dig_exe = dig_rows[0].exe.clone().unwrap_or_default();
    let t = top
        .iter()
        .find(|t| s(&t["exe"]) == dig_exe)
        .unwrap_or_else(|| panic!("no {dig_exe} in top: {top:?}"));
    let mut pids: Vec<u32> = dig_rows.iter().filter_map(|r| r.pid).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(t["queries"].as_u64(), Some(dig_rows.len() as u64), "{t}");
    assert_eq!(t["pids"].as_u64(), Some(pids.len() as u64), "{t}");
    assert_eq!(
        t["nxdomain"].as_u64(),
        Some(
            dig_rows
                .iter()
                .filter(|r| r.rcode_name.as_deref() == Some("NXDOMAIN"))
                .count() as u64
        ),
        "{t}"
    );
    assert_eq!(t["aaaa"].as_u64(), Some(1), "{t}");
}

/// A UDP and a TCP socket that connect()ed to the server before the recorder started.
#[test]
fn bpf_socket_connected_before_start_is_attributed() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let _server = Dnsmasq::start(dir.path());
    let py = "import socket, struct, sys\n\
              def q(name, tcp):\n\
              \x20   m = struct.pack('>HHHHHH', 0x1111, 0x0100, 1, 0, 0, 0)\n\
              \x20   m += b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\x00'\n\
              \x20   m += struct.pack('>HH', 1, 1)\n\
              \x20   return struct.pack('>H', len(m)) + m if tcp else m\n\
              u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(('127.0.0.1', 53)); u.settimeout(5)\n\
              t = socket.create_connection(('127.0.0.1', 53), timeout=5)\n\
              print('ready', flush=True)\n\
              sys.stdin.readline()\n\
              u.send(q('pre-udp.a.test', False)); u.recv(4096)\n\
              t.sendall(q('pre-tcp.a.test', True)); t.recv(4096)\n\
              print('done', flush=True)\n\
              sys.stdin.readline()\n";
    let mut client = Command::new(python())
        .args(["-c", py])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python client");
    let pid = client.id();
    let mut stdin = client.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready line");
    assert_eq!(line.trim(), "ready");

    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &[]);
    writeln!(stdin, "go").expect("go");
    line.clear();
    stdout.read_line(&mut line).expect("done line");
    assert_eq!(line.trim(), "done");
    let logs = rec.stop();
    writeln!(stdin, "exit").expect("exit");
    drop(stdin);
    wait_child(&mut client, Duration::from_secs(10));

    let rows = all_rows(&data);
    for (name, transport) in [("pre-udp.a.test", "udp"), ("pre-tcp.a.test", "tcp")] {
        let matching: Vec<_> = rows
            .iter()
            .filter(|r| r.qname.as_deref() == Some(name))
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{name}: {matching:?}\n{}",
            logs.join("\n")
        );
        let r = matching[0];
        assert_eq!(r.status, "answered", "{r:?}");
        assert_eq!(r.transport, transport);
        assert_eq!(r.pid, Some(pid), "{r:?}");
        assert_eq!(r.comm.as_deref(), Some("python3"), "{r:?}");
        // Started before the recorder: exe and cmdline come from /proc.
        assert!(
            r.exe.as_deref().is_some_and(|e| e.contains("python3")),
            "{r:?}"
        );
    }
}

/// Queries nobody answers become `unanswered`; answers nobody asked for, `unsolicited`.
#[test]
fn bpf_unanswered_and_unsolicited() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--ports", "5301", "--pair-timeout", "1s"]);
    let py = "import socket, struct, time\n\
              def msg(name, flags):\n\
              \x20   m = struct.pack('>HHHHHH', 0x2222, flags, 1, 0, 0, 0)\n\
              \x20   m += b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\x00'\n\
              \x20   return m + struct.pack('>HH', 1, 1)\n\
              silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); silent.bind(('127.0.0.1', 5301))\n\
              c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.bind(('127.0.0.1', 0))\n\
              c.sendto(msg('nobody.answers.test', 0x0100), ('127.0.0.1', 5301))\n\
              silent.recv(4096)\n\
              silent.sendto(msg('nobody.asked.test', 0x8180), c.getsockname())\n\
              c.recv(4096)\n\
              time.sleep(2.5)\n";
    run_client(Command::new(python()).args(["-c", py]));
    rec.stop();
    let rows = all_rows(&data);
    let by_name = |n: &str| -> Vec<&Row> {
        rows.iter()
            .filter(|r| r.qname.as_deref() == Some(n))
            .collect()
    };
    let unanswered = by_name("nobody.answers.test");
    assert_eq!(unanswered.len(), 1, "{rows:?}");
    assert_eq!(unanswered[0].status, "unanswered");
    assert!(unanswered[0].query_raw.is_some() && unanswered[0].response_raw.is_none());
    assert_eq!(unanswered[0].comm.as_deref(), Some("python3"));
    let unsolicited = by_name("nobody.asked.test");
    assert_eq!(unsolicited.len(), 1, "{rows:?}");
    assert_eq!(unsolicited[0].status, "unsolicited");
    assert!(unsolicited[0].response_raw.is_some() && unsolicited[0].query_raw.is_none());
}

#[test]
fn bpf_rotation_seals_several_segments() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let _server = Dnsmasq::start(dir.path());
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--rotate-age", "2s"]);
    let start = std::time::Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(7) {
        run_client(&mut dig(&[
            "+short",
            "@127.0.0.1",
            &format!("rot{sent}.a.test"),
        ]));
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    // `dnsledger status` sees the live recorder and its counters.
    let status = Command::new(&*DNSLEDGER)
        .args(["status", "--data-dir"])
        .arg(&data)
        .output()
        .expect("dnsledger status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("recorder: running"), "{text}");
    assert!(text.contains("packet_ringbuf_full=0"), "{text}");
    assert!(text.contains("segments:"), "{text}");
    rec.stop();
    let after = Command::new(&*DNSLEDGER)
        .args(["status", "--data-dir"])
        .arg(&data)
        .output()
        .expect("dnsledger status");
    assert_eq!(after.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&after.stdout).contains("not running"));
    let files = segment_files(&data);
    assert!(files.len() >= 3, "only {} segments: {files:?}", files.len());
    let mut total = 0;
    for f in &files {
        assert_eq!(
            f.extension().and_then(|e| e.to_str()),
            Some("parquet"),
            "stray file {f:?}"
        );
        let (batches, meta) = read_segment(f);
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert!(n > 0, "empty segment {f:?}");
        assert_eq!(
            meta.get("dnsledger.transactions").map(String::as_str),
            Some(n.to_string().as_str()),
            "{f:?}"
        );
        for key in [
            "dnsledger.dropped_kernel",
            "dnsledger.dropped_user",
            "dnsledger.schema_version",
            "dnsledger.ts_min",
            "dnsledger.ts_max",
        ] {
            assert!(meta.contains_key(key), "{key} missing in {f:?}");
        }
        let ts: Vec<i64> = rows(&batches).iter().map(|r| r.ts).collect();
        assert!(
            ts.windows(2).all(|w| w[0] <= w[1]),
            "rows out of order in {f:?}"
        );
        total += rows(&batches)
            .iter()
            .filter(|r| r.qname.as_deref().is_some_and(|q| q.starts_with("rot")))
            .count();
    }
    assert_eq!(total, sent, "every query in exactly one segment");
    // Nothing in progress is left under segments/ (only .parquet files were found above).
}

#[test]
fn bpf_sigkill_leaves_no_programs() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Recorder::start(&dir.path().join("data"), &[]);
    // The recorder's own programs: the prog ids behind its file descriptors (program and link
    // fds both show `prog_id` in fdinfo). Other BPF users on the host do not matter.
    let fdinfo = format!("/proc/{}/fdinfo", rec.pid());
    let mut while_running: Vec<u64> = std::fs::read_dir(&fdinfo)
        .expect("read fdinfo")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    while_running.sort_unstable();
    while_running.dedup();
    let listed = || -> Vec<u64> {
        let out = Command::new("bpftool")
            .args(["prog", "show"])
            .output()
            .expect("bpftool prog show");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').next()?.trim().parse().ok())
            .collect()
    };
    let before_kill = listed();
    assert!(
        while_running.iter().all(|id| before_kill.contains(id)),
        "bpftool does not list the recorder's programs {while_running:?}"
    );
    assert!(
        while_running.len() >= 10,
        "programs while recording: {while_running:?}"
    );
    let mut rec = rec;
    signal(rec.pid(), libc::SIGKILL);
    wait_child(&mut rec.child, Duration::from_secs(10));
    wait_for(
        "the kernel to release the programs",
        Duration::from_secs(20),
        || {
            let left = listed();
            while_running.iter().all(|id| !left.contains(id))
        },
    );
}

/// After attachment every thread of the recorder holds only the documented capabilities, and
/// what it writes has the documented modes.
#[test]
fn bpf_privileges_dropped_after_attach() {
    use std::os::unix::fs::PermissionsExt;
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let _server = Dnsmasq::start(dir.path());
    let data = dir.path().join("data");
    // A data directory left by an earlier run as root is handed to the user.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o750)
        .create(data.join("segments"))
        .expect("mkdir");
    // Debian's nobody:nogroup (65534) stands for a dedicated user.
    let rec = Recorder::start(&data, &["--rotate-age", "1s", "--user", "nobody"]);
    // CAP_DAC_READ_SEARCH (2) and CAP_SYS_PTRACE (19): see src/privs.rs.
    let kept: u64 = (1 << 2) | (1 << 19);
    let tasks = std::fs::read_dir(format!("/proc/{}/task", rec.pid())).expect("tasks");
    let mut threads = 0;
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).expect("status");
        let field = |name: &str| -> String {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
            let v = u64::from_str_radix(&field(set), 16).expect("hex caps");
            assert_eq!(v, kept, "{set} of thread {:?} is {v:#x}", t.file_name());
        }
        assert_eq!(field("CapInh:"), "0000000000000000");
        assert_eq!(field("NoNewPrivs:"), "1");
        // real, effective, saved and filesystem ids; the only supplementary group is its own
        assert_eq!(
            field("Uid:"),
            "65534\t65534\t65534\t65534",
            "{:?}",
            t.file_name()
        );
        assert_eq!(
            field("Gid:"),
            "65534\t65534\t65534\t65534",
            "{:?}",
            t.file_name()
        );
        assert_eq!(field("Groups:"), "65534", "{:?}", t.file_name());
        threads += 1;
    }
    assert!(
        threads >= 2,
        "expected the capture and writer threads, saw {threads}"
    );
    // The recorder still works without the rest.
    run_client(&mut dig(&["+short", "@127.0.0.1", "caps.a.test"]));
    std::thread::sleep(Duration::from_millis(1500));
    rec.stop();
    let rows = all_rows(&data);
    let r = rows
        .iter()
        .find(|r| r.qname.as_deref() == Some("caps.a.test"))
        .expect("row recorded after dropping privileges");
    assert_eq!(r.exe.as_deref(), Some("/usr/bin/dig"));
    // Modes: segments 0640, directories 0750, all owned by the user and its group.
    let owner = |p: &Path| {
        let md = std::fs::metadata(p).expect("meta");
        (md.uid(), md.gid())
    };
    assert_eq!(owner(&data), (65534, 65534));
    let files = segment_files(&data);
    assert!(!files.is_empty());
    for f in files {
        let mode = std::fs::metadata(&f).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{f:?}");
        assert_eq!(owner(&f), (65534, 65534), "{f:?}");
        let mut d = f.parent().map(std::path::Path::to_path_buf);
        while let Some(p) = d.filter(|p| p.starts_with(&data) && *p != data) {
            let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o750, "{p:?}");
            assert_eq!(owner(&p), (65534, 65534), "{p:?}");
            d = p.parent().map(std::path::Path::to_path_buf);
        }
    }
}
