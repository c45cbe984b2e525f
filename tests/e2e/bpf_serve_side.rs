//! `record --serve-side`: the server side of a local DNS server's conversations.
//!
//! - A dnsmasq in one network namespace serves dig in another (a veth pair, 10.250.53.1/.2 and
//!   fd00:dd5e::1/::2; both namespaces made and removed by the test): UDP and TCP, IPv4 and
//!   IPv6. Each query gives one server-side row (client address and port, dnsmasq as the
//!   process, the server's namespace) and one client-side row (dig), on the same 5-tuple.
//! - dig on loopback against a dnsmasq on 127.0.0.70: one row per end; `dnsql top` and
//!   `dnsql who` count the lookup once (dig's), `dnsql top --by client` shows the server side; without
//!   `--serve-side` only the client side is recorded.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dnsledger_tests::harness::*;
use dnsledger_tests::segments::*;

const SRV4: &str = "10.250.53.1";
const CLI4: &str = "10.250.53.2";
const SRV6: &str = "fd00:dd5e::1";
const CLI6: &str = "fd00:dd5e::2";
const LOOPBACK_SERVER: &str = "127.0.0.70";

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run ip {args:?}: {e} (apt-get install iproute2)"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two network namespaces joined by a veth pair; deleted by name when dropped (deleting a
/// namespace deletes its end of the pair, and with it the other end).
struct NetnsPair {
    server: String,
    client: String,
}

impl NetnsPair {
    fn create() -> NetnsPair {
        let id = std::process::id();
        let pair = NetnsPair {
            server: format!("dlss-srv-{id}"),
            client: format!("dlss-cli-{id}"),
        };
        // Leftovers of an earlier run with the same pid (a killed test) go first.
        pair.delete();
        let (vs, vc) = (format!("dlss{id}s"), format!("dlss{id}c"));
        ip(&["netns", "add", &pair.server]);
        ip(&["netns", "add", &pair.client]);
        ip(&[
            "-n",
            &pair.server,
            "link",
            "add",
            &vs,
            "type",
            "veth",
            "peer",
            "name",
            &vc,
            "netns",
            &pair.client,
        ]);
        for (ns, dev, v4, v6) in [
            (&pair.server, &vs, SRV4, SRV6),
            (&pair.client, &vc, CLI4, CLI6),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    fn delete(&self) {
        for ns in [&self.server, &self.client] {
            if Path::new("/run/netns").join(ns).exists() {
                let _ = Command::new("ip")
                    .args(["netns", "del", ns])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    /// Inode of a namespace (the `netns` column).
    fn inode(ns: &str) -> u32 {
        std::fs::metadata(Path::new("/run/netns").join(ns))
            .expect("netns file")
            .ino() as u32
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A dnsmasq answering a.test inside a namespace (`ip netns exec` execs it: same pid), stopped
/// by pid when dropped.
struct NsDnsmasq {
    child: Child,
}

impl NsDnsmasq {
    fn start(ns: &str, dir: &Path, addrs: &[&str]) -> NsDnsmasq {
        let log = dir.join("dnsmasq-ns.log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port=53",
                "--log-queries",
                "--address=/a.test/192.0.2.1",
                "--user=root",
                "--pid-file",
            ])
            .args(addrs.iter().map(|a| format!("--listen-address={a}")))
            .arg(format!("--log-facility={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq in the namespace");
        let d = NsDnsmasq { child };
        wait_for("dnsmasq in the namespace", Duration::from_secs(20), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("started"))
        });
        d
    }
}

impl Drop for NsDnsmasq {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let _ = wait_child(&mut self.child, Duration::from_secs(10));
    }
}

/// dig with `args` in namespace `ns` (None: this one); returns dig's pid.
fn dig(ns: Option<&str>, args: &[&str]) -> u32 {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "dig"]);
            c
        }
        None => Command::new("dig"),
    };
    let (pid, out) = run_client(cmd.args(["+tries=1", "+time=5"]).args(args));
    assert!(out.contains("192.0.2.1"), "dig {args:?} answered: {out}");
    pid
}

fn rows_named<'a>(rows: &'a [Row], name: &str) -> (Vec<&'a Row>, Vec<&'a Row>) {
    let named: Vec<&Row> = rows
        .iter()
        .filter(|r| r.qname.as_deref() == Some(name))
        .collect();
    let (server, client): (Vec<&Row>, Vec<&Row>) = named
        .into_iter()
        .partition(|r| r.side.as_deref() == Some("server"));
    (server, client)
}

#[test]
fn bpf_serve_side_rows_carry_the_client_address_and_the_server_process() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = NetnsPair::create();
    let dns = NsDnsmasq::start(&pair.server, dir.path(), &[SRV4, SRV6]);
    let dnsmasq_pid = dns.child.id();
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--serve-side"]);

    // (name, transport, server, client, dig flags)
    let cases: [(&str, &str, &str, &str, &[&str]); 4] = [
        ("udp4.a.test", "udp", SRV4, CLI4, &[]),
        ("tcp4.a.test", "tcp", SRV4, CLI4, &["+tcp"]),
        ("udp6.a.test", "udp", SRV6, CLI6, &[]),
        ("tcp6.a.test", "tcp", SRV6, CLI6, &["+tcp"]),
    ];
    let mut dig_pids = Vec::new();
    for (name, _, server, _, flags) in &cases {
        let at = format!("@{server}");
        let mut args: Vec<&str> = flags.to_vec();
        args.extend([at.as_str(), name]);
        dig_pids.push(dig(Some(&pair.client), &args));
    }
    let logs = rec.stop().join("\n");
    drop(dns);

    let rows = all_rows(&data);
    let server_ns = NetnsPair::inode(&pair.server);
    let client_ns = NetnsPair::inode(&pair.client);
    for ((name, transport, server, client, _), dig_pid) in cases.iter().zip(&dig_pids) {
        let (served, asked) = rows_named(&rows, name);
        assert_eq!(
            served.len(),
            1,
            "one server-side row for {name}: {served:#?}\n{logs}"
        );
        assert_eq!(
            asked.len(),
            1,
            "one client-side row for {name}: {asked:#?}\n{logs}"
        );
        let (s, c) = (served[0], asked[0]);
        // The server side: the client's address and port, dnsmasq as the process.
        assert_eq!(s.status, "answered", "{s:?}");
        assert_eq!(
            (s.transport.as_str(), s.client_ip.as_str()),
            (*transport, *client)
        );
        assert_eq!(s.server_ip, *server, "{s:?}");
        assert_eq!(s.server_port, 53);
        assert_eq!(s.comm.as_deref(), Some("dnsmasq"), "{s:?}");
        assert_eq!(s.netns, Some(server_ns), "{s:?}");
        if *transport == "udp" {
            assert_eq!(s.pid, Some(dnsmasq_pid), "{s:?}");
        } else {
            // dnsmasq answers each TCP connection in a child it forks.
            assert!(
                s.pid == Some(dnsmasq_pid) || s.ppid.is_none_or(|p| p == dnsmasq_pid),
                "{s:?}"
            );
            assert_ne!(s.pid, Some(*dig_pid), "{s:?}");
        }
        assert_eq!(s.answer_ips, ["192.0.2.1"], "{s:?}");
        // The client side of the same exchange: dig, the same 5-tuple.
        assert_eq!(c.side.as_deref(), Some("client"), "{c:?}");
        assert_eq!(c.pid, Some(*dig_pid), "{c:?}");
        assert_eq!(c.comm.as_deref(), Some("dig"), "{c:?}");
        assert_eq!(c.netns, Some(client_ns), "{c:?}");
        assert_eq!(
            (&c.client_ip, c.client_port, &c.server_ip),
            (&s.client_ip, s.client_port, &s.server_ip)
        );
    }

    // dnsql top --by client: the namespace's client, by the server side's rows.
    let top = dnsql_json(&data, &["top", "--by", "client", "-n", "0"]);
    for client in [CLI4, CLI6] {
        let row = top
            .iter()
            .find(|r| r["client_ip"] == client)
            .unwrap_or_else(|| panic!("{client} in top --by client: {top:#?}"));
        assert_eq!(row["queries"], 2, "{row}");
    }
}

#[test]
fn bpf_serve_side_on_loopback_counts_each_lookup_once() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let dns = Dnsmasq::start_on(dir.path(), &[LOOPBACK_SERVER]);
    let at = format!("@{LOOPBACK_SERVER}");

    // Without --serve-side: the client side only.
    let plain: PathBuf = dir.path().join("plain");
    let rec = Recorder::start(&plain, &[]);
    let plain_dig = dig(None, &[&at, "plain.a.test"]);
    rec.stop();
    let plain_rows = all_rows(&plain);
    let (served, asked) = rows_named(&plain_rows, "plain.a.test");
    assert!(served.is_empty(), "no server side by default: {served:#?}");
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert_eq!(asked[0].pid, Some(plain_dig));
    assert_eq!(asked[0].side.as_deref(), Some("client"));

    // With it: one row per end.
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--serve-side"]);
    let udp_dig = dig(None, &[&at, "lo-udp.a.test"]);
    let tcp_dig = dig(None, &["+tcp", &at, "lo-tcp.a.test"]);
    let logs = rec.stop().join("\n");
    let dnsmasq_pid = dns.pid();
    drop(dns);
    let rows = all_rows(&data);
    for (name, pid) in [("lo-udp.a.test", udp_dig), ("lo-tcp.a.test", tcp_dig)] {
        let (served, asked) = rows_named(&rows, name);
        assert_eq!(served.len(), 1, "{name}: {served:#?}\n{logs}");
        assert_eq!(asked.len(), 1, "{name}: {asked:#?}\n{logs}");
        assert_eq!(asked[0].pid, Some(pid), "{:?}", asked[0]);
        assert_eq!(
            served[0].comm.as_deref(),
            Some("dnsmasq"),
            "{:?}",
            served[0]
        );
        assert_ne!(served[0].pid, Some(pid), "{:?}", served[0]);
        assert_eq!(served[0].client_ip, "127.0.0.1");
        assert_eq!(served[0].client_port, asked[0].client_port);
    }

    // A transaction is the client side's row: top counts dig's lookups once and has no
    // dnsmasq row for them; --by client counts the served ones.
    let by_process = dnsql_json(&data, &["top", "--by", "process", "-n", "0"]);
    for pid in [udp_dig, tcp_dig] {
        let row = by_process
            .iter()
            .find(|r| r["pid"] == pid)
            .unwrap_or_else(|| panic!("dig {pid} in top: {by_process:#?}"));
        assert_eq!(row["queries"], 1, "{row}");
    }
    assert!(
        !by_process.iter().any(|r| r["pid"] == dnsmasq_pid),
        "the server is no asker: {by_process:#?}"
    );
    // who names the asking processes only, each lookup once (the served row is dnsmasq's).
    let who = dnsql_json(&data, &["who", "lo-udp.a.test"]);
    assert_eq!(who.len(), 1, "{who:#?}");
    assert_eq!(who[0]["pid"], udp_dig, "{who:#?}");
    assert_eq!(who[0]["queries"], 1, "{who:#?}");
    let by_client = dnsql_json(&data, &["top", "--by", "client", "-n", "0"]);
    let lo = by_client
        .iter()
        .find(|r| r["client_ip"] == "127.0.0.1")
        .unwrap_or_else(|| panic!("127.0.0.1 in top --by client: {by_client:#?}"));
    assert!(lo["queries"].as_u64().is_some_and(|n| n >= 2), "{lo}");
    let sides = dnsql_json(
        &data,
        &[
            "sql",
            "SELECT CAST(side AS VARCHAR) AS side, count(*) AS n FROM dns \
             WHERE server_ip = '127.0.0.70' GROUP BY side ORDER BY side",
        ],
    );
    assert_eq!(
        sides,
        [
            serde_json::json!({"side": "client", "n": 2}),
            serde_json::json!({"side": "server", "n": 2}),
        ]
    );
}

#[test]
fn bpf_check_probes_the_serve_side_path() {
    let _g = bpf_lock();
    let out = Command::new(dnsledger_tests::harness::built_binary("dnsledger"))
        .arg("check")
        .output()
        .expect("run dnsledger check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check failed:\n{stdout}");
    for program in ["dns_egress", "dns_ingress", "dns_recvmsg4", "dns_recvmsg6"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("program {program} --serve-side ")))
            .unwrap_or_else(|| panic!("no --serve-side line for {program}:\n{stdout}"));
        assert!(line.contains(" ok "), "{line}");
        assert!(
            line.contains("loads and attaches (with --serve-side)"),
            "{line}"
        );
    }
}
