//! systemd-resolved as the local stub (BPF), and stubs in network namespaces of their own.
//!
//! Debian's `systemd-resolved` is not installed (installing it enables the service and points
//! the host's /etc/resolv.conf at it): `scripts/fetch-resolved.sh` (run by
//! `scripts/setup-debian.sh --test`) unpacks it under `<repo>/.cache/systemd-resolved`, and
//! each namespace here runs that binary in a network and mount namespace the test makes
//! (`unshare -mn`): lo up, a veth pair with 10.53.0.1/24 (resolved calls the network down and
//! answers SERVFAIL when no link but lo has an address), a tmpfs on /run (its runtime
//! directory and config drop-in, and no system bus: resolved waits for one and serves on),
//! bind-mounted copies of /etc/passwd and /etc/group with its `systemd-resolve` account, and
//! /etc/resolv.conf naming 127.0.0.53. In the namespace: resolved's stub on 127.0.0.53 (cache
//! on, DNSSEC off) forwarding to a dnsmasq on 10.53.0.1, which answers a.test itself and
//! forwards hole.test to 127.0.0.3, where the namespace's holder process has a socket bound
//! that it never reads. The recorder runs in the root namespace (cgroup hooks see every one).
//! All addresses are inside the test's own namespaces: nothing on the host's loopback.
//!
//! - One namespace: dig (UDP and `+tcp`), kdig `+tcp`, getent (glibc, A and AAAA in parallel),
//!   python `socket.getaddrinfo` and a python that sends a query and exits at once: resolved's
//!   upstream rows name each client (pid, comm, exe), every upstream row of resolved for those
//!   names is linked, a second query within the TTL is a `hit` with no upstream query, and
//!   `dnsql who` names the apps, not `systemd-resolve`. getent through nss-resolve (varlink,
//!   not DNS; `libnss_resolve.so.2` unpacked beside resolved): a local libc lookup row, and
//!   resolved's upstream query names nobody.
//! - Two namespaces, each with the same stub address 127.0.0.53 and upstream 10.53.0.1: the
//!   same names asked in both, and clients of both waiting at the same time for a name whose
//!   upstream never answers: each upstream row names only its own namespace's clients.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use dnsledger_tests::harness::*;

use crate::bpf_stublink::{requesters, s};

const STUB: &str = "127.0.0.53";
/// The upstream dnsmasq, on the namespace's veth address: resolved does not cache what a
/// loopback upstream answers (`CacheFromLocalhost=no`, its default), this one it does.
const UPSTREAM: &str = "10.53.0.1";
const HOLE: &str = "127.0.0.3";

/// The unpacked systemd-resolved (see the module doc).
fn resolved_binary() -> PathBuf {
    let bin = repo_root().join(".cache/systemd-resolved/lib/systemd/systemd-resolved");
    assert!(
        bin.exists(),
        "{} is missing\nhint: run scripts/fetch-resolved.sh (scripts/setup-debian.sh --test runs it): \
         it unpacks Debian's systemd-resolved there without installing it",
        bin.display()
    );
    bin
}

/// The holder: `unshare -mn` sets up the namespace, then execs a python that binds the black
/// hole and sleeps (its pid is the namespace's handle for nsenter).
const SETUP: &str = r#"set -e
ip link set lo up
ip link add dlr0 type veth peer name dlr1
ip addr add 10.53.0.1/24 dev dlr0
ip link set dlr0 up
ip link set dlr1 up
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/systemd/resolved.conf.d
cp "$NS_DIR/resolved.conf" /run/systemd/resolved.conf.d/dnsledger-test.conf
mount --bind "$NS_DIR/passwd" /etc/passwd
mount --bind "$NS_DIR/group" /etc/group
mount --bind "$NS_DIR/resolv.conf" /etc/resolv.conf
exec /usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("ready", flush=True)
time.sleep(3600)
' "$HOLE"
"#;

const RESOLVED_CONF: &str = "[Resolve]\nDNS=10.53.0.1\nFallbackDNS=\nDomains=\nDNSSEC=no\n\
DNSOverTLS=no\nLLMNR=no\nMulticastDNS=no\nCache=yes\nDNSStubListener=yes\nReadEtcHosts=no\n";

/// A process started in the namespace, stopped by pid (SIGTERM) when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let _ = wait_child(&mut self.child, Duration::from_secs(10));
    }
}

/// A network + mount namespace with systemd-resolved on 127.0.0.53 and a dnsmasq upstream.
struct ResolvedNs {
    dir: PathBuf,
    // Dropped in this order: the servers, then the holder (the namespace goes with it).
    resolved: Option<Proc>,
    upstream: Option<Proc>,
    holder: Option<Proc>,
}

impl ResolvedNs {
    fn start(base: &Path, name: &str) -> ResolvedNs {
        let bin = resolved_binary();
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).expect("namespace dir");
        // resolved drops to the account `systemd-resolve` (Debian's package makes it with
        // sysusers); the namespace's passwd and group have it, the host's are untouched.
        let free_id = (900..999)
            .find(|id| {
                let has = |f: &str| {
                    std::fs::read_to_string(f).is_ok_and(|t| {
                        t.lines()
                            .any(|l| l.split(':').nth(2) == Some(id.to_string().as_str()))
                    })
                };
                !has("/etc/passwd") && !has("/etc/group")
            })
            .expect("a free system uid/gid in 900-998");
        let mut passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
        passwd.push_str(&format!(
            "systemd-resolve:x:{free_id}:{free_id}:systemd Resolver:/:/usr/sbin/nologin\n"
        ));
        let mut group = std::fs::read_to_string("/etc/group").expect("/etc/group");
        group.push_str(&format!("systemd-resolve:x:{free_id}:\n"));
        std::fs::write(dir.join("passwd"), passwd).expect("passwd");
        std::fs::write(dir.join("group"), group).expect("group");
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {STUB}\noptions attempts:1 timeout:5\n"),
        )
        .expect("resolv.conf");
        std::fs::write(dir.join("resolved.conf"), RESOLVED_CONF).expect("resolved.conf");

        let out = dir.join("holder.out");
        let holder = Command::new("unshare")
            .args(["-m", "-n", "--propagation", "private", "sh", "-c", SETUP])
            .env("NS_DIR", &dir)
            .env("HOLE", HOLE)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("holder.out"))
            .stderr(std::fs::File::create(dir.join("holder.err")).expect("holder.err"))
            .spawn()
            .expect("start unshare (util-linux)");
        let mut ns = ResolvedNs {
            dir: dir.clone(),
            resolved: None,
            upstream: None,
            holder: Some(Proc { child: holder }),
        };
        let holder_err = || std::fs::read_to_string(dir.join("holder.err")).unwrap_or_default();
        wait_until(
            &format!("namespace {name} set up"),
            || std::fs::read_to_string(&out).is_ok_and(|t| t.contains("ready")),
            holder_err,
        );

        let log = dir.join("dnsmasq.log");
        let upstream = ns
            .command("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port=53",
                "--log-queries",
                "--user=root",
                "--pid-file",
                "--local-ttl=300",
                "--address=/a.test/192.0.2.1",
                "--address=/a.test/2001:db8::1",
            ])
            .arg(format!("--listen-address={UPSTREAM}"))
            .arg(format!("--server=/hole.test/{HOLE}"))
            .arg(format!("--log-facility={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq in the namespace (apt-get install dnsmasq-base)");
        ns.upstream = Some(Proc { child: upstream });
        wait_until(
            "dnsmasq in the namespace",
            || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("started")),
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );

        let log_file = std::fs::File::create(dir.join("resolved.log")).expect("resolved.log");
        let resolved = ns
            .command(bin.to_str().expect("utf-8 path"))
            .env("SYSTEMD_LOG_TARGET", "console")
            .env("SYSTEMD_LOG_LEVEL", "debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("resolved.log"))
            .stderr(log_file)
            .spawn()
            .expect("start systemd-resolved");
        let resolved_pid = resolved.id();
        ns.resolved = Some(Proc { child: resolved });
        // Its stub listens (TCP 127.0.0.53:53, LISTEN in the namespace's table), and it
        // answers from the upstream (the network is up).
        let listening = || {
            std::fs::read_to_string(format!("/proc/{resolved_pid}/net/tcp")).is_ok_and(|t| {
                t.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.get(1) == Some(&"3500007F:0035") && f.get(3) == Some(&"0A")
                })
            })
        };
        wait_until("systemd-resolved's stub listener", listening, || {
            ns.resolved_log()
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = ns
                .command("dig")
                .args(["+tries=1", "+time=2", &format!("@{STUB}"), "warm.a.test"])
                .output()
                .expect("dig");
            if String::from_utf8_lossy(&out.stdout).contains("192.0.2.1") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "systemd-resolved does not answer warm.a.test:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                ns.resolved_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        ns
    }

    /// `prog` run in the namespace (nsenter execs it: the pid is the program's).
    fn command(&self, prog: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.holder_pid().to_string(), "-m", "-n", prog]);
        c
    }

    fn holder_pid(&self) -> u32 {
        self.holder.as_ref().map_or(0, Proc::pid)
    }

    fn resolved_pid(&self) -> u32 {
        self.resolved.as_ref().map_or(0, Proc::pid)
    }

    /// The namespace's inode (the `netns` column).
    fn netns(&self) -> u32 {
        let link = std::fs::read_link(format!("/proc/{}/ns/net", self.holder_pid()))
            .expect("holder's netns");
        link.to_string_lossy()
            .trim_start_matches("net:[")
            .trim_end_matches(']')
            .parse()
            .expect("netns inode")
    }

    fn resolved_log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("resolved.log")).unwrap_or_default();
        // The end is what explains a failure.
        let start = text.len().saturating_sub(6000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("systemd-resolved's log (end):\n{}", &text[start..])
    }
}

impl Drop for ResolvedNs {
    fn drop(&mut self) {
        self.resolved.take();
        self.upstream.take();
        self.holder.take();
    }
}

/// Waits up to 20 s for `cond`; on timeout, fails with `detail()` (a log that says why).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool, detail: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after 20 s waiting for {what}:\n{}",
            detail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A python process that sends one A query for `argv[1]` to `argv[2]`:53 and waits for the
/// answer at most `argv[3]` seconds (0: exits at once, without reading).
const PY_QUERY: &str = "import socket, struct, sys\n\
name, server, wait = sys.argv[1], sys.argv[2], float(sys.argv[3])\n\
q = struct.pack('>HHHHHH', 0x4243, 0x0100, 1, 0, 0, 0)\n\
q += b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\x00'\n\
q += struct.pack('>HH', 1, 1)\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.sendto(q, (server, 53))\n\
if wait > 0:\n    s.settimeout(wait)\n    try:\n        s.recv(4096)\n    except socket.timeout:\n        pass\n";

const PY_GETADDRINFO: &str =
    "import socket, sys\nprint(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 53)}))\n";

/// Rows of the namespaces `netns` to and from the test's addresses, oldest first (libc lookup
/// rows have no server and are left out).
fn rows(data: &Path, netns: &[u32]) -> Vec<Value> {
    let list = netns
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    dnsql_json(
        data,
        &[
            "sql",
            &format!(
                "SELECT pid, comm, qname, CAST(qtype_name AS VARCHAR) AS qtype, netns, \
                 CAST(transport AS VARCHAR) AS transport, \
                 CAST(server_ip AS VARCHAR) AS server, CAST(status AS VARCHAR) AS status, \
                 requester_pids, requester_comms, requester_exes, qname_case, \
                 CAST(query_ts AS BIGINT) AS query_ns, \
                 CAST(stub_cache AS VARCHAR) AS stub_cache \
                 FROM dns WHERE netns IN ({list}) \
                 AND server_ip IN ('{STUB}', '{UPSTREAM}', '{HOLE}') ORDER BY ts"
            ),
        ],
    )
}

fn num(r: &Value, k: &str) -> u32 {
    r[k].as_u64().unwrap_or(0) as u32
}

#[test]
fn bpf_resolved_stub_upstream_rows_name_the_clients() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = ResolvedNs::start(dir.path(), "ns1");
    let (resolved, netns) = (ns.resolved_pid(), ns.netns());
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--pair-timeout", "2s"]);

    let at = format!("@{STUB}");
    let dig = |name: &str, tcp: bool| {
        let mut c = ns.command("dig");
        c.args(["+tries=1", "+time=5", &at, name]);
        if tcp {
            c.arg("+tcp");
        }
        let (pid, out) = run_client(&mut c);
        assert!(out.contains("192.0.2.1"), "{out}\n{}", ns.resolved_log());
        pid
    };
    // Each client twice: the second within the TTL (300 s).
    let (dig1, dig2) = (dig("d1.a.test", false), dig("d1.a.test", false));
    // A name in mixed case: linked (names compare case-insensitively); resolved asks it upstream
    // as the client wrote it (no 0x20 randomisation), seen in `qname_case`.
    let mixed = dig("Mx1.A.test", false);
    let (tcp1, tcp2) = (dig("t1.a.test", true), dig("t1.a.test", true));
    let kdig = || {
        let mut c = ns.command("kdig");
        c.args(["+tcp", "+retry=0", "+time=5", &at, "k1.a.test"]);
        let (pid, out) = run_client(&mut c);
        assert!(out.contains("192.0.2.1"), "{out}");
        pid
    };
    let (kdig1, kdig2) = (kdig(), kdig());
    let getent = || {
        let mut c = ns.command("getent");
        c.args(["ahosts", "g1.a.test"]);
        let (pid, out) = run_client(&mut c);
        assert!(
            out.contains("192.0.2.1") && out.contains("2001:db8::1"),
            "{out}"
        );
        pid
    };
    let (get1, get2) = (getent(), getent());
    let py = || {
        let mut c = ns.command(python().to_str().expect("utf-8 path"));
        c.args(["-c", PY_GETADDRINFO, "p1.a.test"]);
        let (pid, out) = run_client(&mut c);
        assert!(out.contains("192.0.2.1"), "{out}");
        pid
    };
    let (py1, py2) = (py(), py());
    // nss-resolve (`hosts: resolve`): getaddrinfo asks resolved over varlink, not DNS.
    let nss_lib = resolved_binary()
        .ancestors()
        .nth(3)
        .expect("the unpacked tree")
        .join("usr/lib/x86_64-linux-gnu");
    let nsswitch = ns.dir.join("nsswitch.conf");
    std::fs::write(
        &nsswitch,
        "passwd: files\ngroup: files\nhosts: resolve [!UNAVAIL=return]\n",
    )
    .expect("nsswitch.conf");
    let mut c = ns.command("unshare");
    c.args([
        "-m",
        "sh",
        "-c",
        &format!(
            "mount --bind {} /etc/nsswitch.conf && exec getent ahosts n1.a.test",
            nsswitch.display()
        ),
    ])
    .env("LD_LIBRARY_PATH", &nss_lib);
    let (nss, out) = run_client(&mut c);
    assert!(out.contains("192.0.2.1"), "{out}");
    // Sends and exits: gone when the recorder looks resolved's socket up (read through
    // resolved, which is in the client's namespace).
    let mut c = ns.command(python().to_str().expect("utf-8 path"));
    c.args(["-c", PY_QUERY, "f1.a.test", STUB, "0"]);
    let (gone, _) = run_client(&mut c);
    wait_for("resolved to ask f1.a.test", Duration::from_secs(10), || {
        std::fs::read_to_string(ns.dir.join("dnsmasq.log"))
            .is_ok_and(|l| l.contains("query[A] f1.a.test"))
    });
    std::thread::sleep(Duration::from_millis(300));
    let logs = rec.stop().join("\n");

    let all = rows(&data, &[netns]);
    let ctx = || format!("rows:\n{all:#?}\nrecorder:\n{logs}\n{}", ns.resolved_log());
    let clients =
        |pid: u32| -> Vec<&Value> { all.iter().filter(|r| num(r, "pid") == pid).collect() };
    let upstream_rows = |name: &str, qtype: &str| -> Vec<&Value> {
        all.iter()
            .filter(|r| {
                num(r, "pid") == resolved && s(r, "qname") == name && s(r, "qtype") == qtype
            })
            .collect()
    };

    // First queries: a miss, and resolved's upstream rows for the question name the client.
    let firsts = [
        (dig1, "dig", "udp"),
        (mixed, "dig", "udp"),
        (tcp1, "dig", "tcp"),
        (kdig1, "kdig", "tcp"),
        (get1, "getent", "udp"),
        (py1, "python3", "udp"),
        (gone, "python3", "udp"),
    ];
    for (pid, comm, transport) in firsts {
        let rows = clients(pid);
        assert!(!rows.is_empty(), "no row of {comm} {pid}: {}", ctx());
        for r in rows {
            assert_eq!(s(r, "server"), STUB, "{r}: {}", ctx());
            assert_eq!(s(r, "transport"), transport, "{r}");
            assert_eq!(num(r, "netns"), netns, "{r}");
            assert_eq!(s(r, "stub_cache"), "miss", "{r}: {}", ctx());
            let ups = upstream_rows(s(r, "qname"), s(r, "qtype"));
            assert!(!ups.is_empty(), "no upstream row for {r}: {}", ctx());
            for u in ups {
                assert_eq!(s(u, "comm"), "systemd-resolve", "{u}");
                assert_eq!(s(u, "server"), UPSTREAM, "{u}");
                assert_eq!(requesters(u), [pid], "{u}: {}", ctx());
                assert_eq!(u["requester_comms"][0].as_str(), Some(comm), "{u}");
                let exe = u["requester_exes"][0].as_str().unwrap_or("");
                let file = exe.rsplit('/').next().unwrap_or("");
                assert!(exe.starts_with('/') && file.starts_with(comm), "{u}");
                // Not a query to a loopback server.
                assert!(u["stub_cache"].is_null(), "{u}");
                // Asked upstream over UDP (also for a TCP client), the name as the client wrote it.
                assert_eq!(s(u, "transport"), "udp", "{u}");
                assert_eq!(s(u, "qname_case"), s(r, "qname_case"), "{u}\n{r}");
            }
        }
    }
    // getent and python asked A and AAAA (in parallel): both linked.
    for pid in [get1, py1] {
        let types: HashSet<&str> = clients(pid).iter().map(|r| s(r, "qtype")).collect();
        assert_eq!(types, HashSet::from(["A", "AAAA"]), "{pid}: {}", ctx());
    }
    // Second queries within the TTL: hits, and no upstream row names them.
    for (pid, first) in [
        (dig2, dig1),
        (tcp2, tcp1),
        (kdig2, kdig1),
        (get2, get1),
        (py2, py1),
    ] {
        let rows = clients(pid);
        assert!(!rows.is_empty(), "no row of {pid}: {}", ctx());
        for r in rows {
            assert_eq!(s(r, "stub_cache"), "hit", "{r}: {}", ctx());
            for u in upstream_rows(s(r, "qname"), s(r, "qtype")) {
                assert_eq!(requesters(u), [first], "{u}: {}", ctx());
            }
        }
    }
    // nss-resolve: no DNS between getent and resolved, so nothing to link: getent has a libc
    // lookup row answered without DNS of its own, resolved's upstream rows name nobody.
    let nss_rows = dnsql_json(
        &data,
        &[
            "sql",
            &format!(
                "SELECT CAST(status AS VARCHAR) AS status, lookup_fn, lookup_local, qname, \
                 answer_ips FROM dns WHERE pid = {nss}"
            ),
        ],
    );
    assert!(!nss_rows.is_empty(), "no row of getent {nss}: {}", ctx());
    for r in &nss_rows {
        assert_eq!(s(r, "status"), "lookup", "{r}: {nss_rows:#?}");
        assert_eq!(s(r, "qname"), "n1.a.test", "{r}");
        assert_eq!(r["lookup_local"].as_bool(), Some(true), "{r}");
    }
    assert!(
        nss_rows.iter().any(|r| s(r, "lookup_fn") == "getaddrinfo"
            && r["answer_ips"].to_string().contains("192.0.2.1")),
        "{nss_rows:#?}"
    );
    let nss_up = upstream_rows("n1.a.test", "A");
    assert!(
        !nss_up.is_empty(),
        "resolved did not ask n1.a.test: {}",
        ctx()
    );
    for u in nss_up {
        assert!(u["requester_pids"].is_null(), "{u}");
    }

    // The rule holds for resolved: it asked nothing for the stub clients' names that no client
    // asked (no DNSSEC probes, no search-domain or case variants): each of its rows is linked.
    for u in all
        .iter()
        .filter(|r| num(r, "pid") == resolved && s(r, "qname") != "n1.a.test")
    {
        assert!(
            !requesters(u).is_empty(),
            "unlinked row of resolved {u}: {}",
            ctx()
        );
    }

    // `dnsql who` names the apps, each lookup once, and not systemd-resolve.
    for (name, pids) in [
        ("d1.a.test", HashSet::from([dig1, dig2])),
        ("g1.a.test", HashSet::from([get1, get2])),
    ] {
        let who = dnsql_json(&data, &["who", name]);
        let named: HashSet<u32> = who.iter().map(|w| num(w, "pid")).collect();
        assert_eq!(named, pids, "who {name}: {who:#?}");
        assert!(!who.iter().any(|w| num(w, "pid") == resolved), "{who:#?}");
    }
}

#[test]
fn bpf_resolved_stubs_in_two_namespaces_name_their_own_clients() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let nss = [
        ResolvedNs::start(dir.path(), "nsa"),
        ResolvedNs::start(dir.path(), "nsb"),
    ];
    let netns: Vec<u32> = nss.iter().map(ResolvedNs::netns).collect();
    assert_ne!(netns[0], netns[1]);
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--pair-timeout", "3s"]);

    let at = format!("@{STUB}");
    // The same name asked in both namespaces, one after the other.
    let digs: Vec<u32> = nss
        .iter()
        .map(|ns| {
            let mut c = ns.command("dig");
            c.args(["+tries=1", "+time=5", &at, "s1.a.test"]);
            let (pid, out) = run_client(&mut c);
            assert!(out.contains("192.0.2.1"), "{out}");
            pid
        })
        .collect();
    // Clients of both namespaces waiting at the same time for names nobody answers: for
    // c1.hole.test namespace a asks first, for c2.hole.test namespace b, so each stub sends an
    // upstream query while the other namespace's client of the same question is pending.
    let wait = |ns: &ResolvedNs, name: &str| -> Child {
        let mut c = ns.command(python().to_str().expect("utf-8 path"));
        c.args(["-c", PY_QUERY, name, STUB, "4"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.spawn().expect("spawn python")
    };
    let pause = || std::thread::sleep(Duration::from_millis(300));
    let a1 = wait(&nss[0], "c1.hole.test");
    pause();
    let b1 = wait(&nss[1], "c1.hole.test");
    let b2 = wait(&nss[1], "c2.hole.test");
    pause();
    let a2 = wait(&nss[0], "c2.hole.test");
    // (namespace, name, pid)
    let waiters: Vec<(usize, &str, u32)> = vec![
        (0, "c1.hole.test", a1.id()),
        (1, "c1.hole.test", b1.id()),
        (1, "c2.hole.test", b2.id()),
        (0, "c2.hole.test", a2.id()),
    ];
    for mut w in [a1, b1, b2, a2] {
        assert!(wait_child(&mut w, Duration::from_secs(20)).success());
    }
    // The stubs' unanswered upstream queries are written after the pair timeout.
    std::thread::sleep(Duration::from_millis(3500));
    let logs = rec.stop().join("\n");

    let all = rows(&data, &netns);
    let ctx = || {
        format!(
            "rows:\n{all:#?}\nrecorder:\n{logs}\n{}\n{}",
            nss[0].resolved_log(),
            nss[1].resolved_log()
        )
    };
    // The windows did overlap: each stub asked upstream while the other namespace's client
    // of the same question was waiting (within the pair timeout of its query).
    let query_ns = |pid: u32, name: &str| -> Vec<i64> {
        all.iter()
            .filter(|r| num(r, "pid") == pid && s(r, "qname") == name)
            .filter_map(|r| r["query_ns"].as_i64())
            .collect()
    };
    for (first, name) in [(0, "c1.hole.test"), (1, "c2.hole.test")] {
        let (_, _, pid) = waiters
            .iter()
            .find(|(i, n, _)| *i == first && *n == name)
            .copied()
            .expect("waiter");
        let asked = query_ns(pid, name);
        assert_eq!(asked.len(), 1, "{}", ctx());
        let ups = query_ns(nss[1 - first].resolved_pid(), name);
        assert!(
            ups.iter()
                .any(|t| (asked[0]..asked[0] + 3_000_000_000).contains(t)),
            "stub {} asked {name} upstream only outside the window of the other's client: {}",
            1 - first,
            ctx()
        );
    }
    for (i, ns) in nss.iter().enumerate() {
        let mut own: HashSet<u32> = HashSet::from([digs[i]]);
        own.extend(waiters.iter().filter(|w| w.0 == i).map(|w| w.2));
        let resolved = ns.resolved_pid();
        // Each client's row is in its own namespace.
        for pid in &own {
            let rows: Vec<&Value> = all.iter().filter(|r| num(r, "pid") == *pid).collect();
            assert!(!rows.is_empty(), "no row of {pid}: {}", ctx());
            for r in rows {
                assert_eq!(num(r, "netns"), netns[i], "{r}");
                assert_eq!(s(r, "stub_cache"), "miss", "{r}: {}", ctx());
            }
        }
        // resolved's rows name only this namespace's clients, and both are named.
        let mut named = HashSet::new();
        for u in all.iter().filter(|r| num(r, "pid") == resolved) {
            assert_eq!(num(u, "netns"), netns[i], "{u}");
            let req: HashSet<u32> = requesters(u).into_iter().collect();
            assert!(
                req.is_subset(&own),
                "{u} names another namespace's client: {}",
                ctx()
            );
            named.extend(req);
        }
        assert_eq!(named, own, "resolved {resolved} in {}: {}", netns[i], ctx());
        let s1: Vec<&Value> = all
            .iter()
            .filter(|r| num(r, "pid") == resolved && s(r, "qname") == "s1.a.test")
            .collect();
        assert!(!s1.is_empty(), "{}", ctx());
        for u in s1 {
            assert_eq!(requesters(u), [digs[i]], "{u}: {}", ctx());
        }
    }
}
