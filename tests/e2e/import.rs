//! `dnsledger import` of every capture in `testdata/pcap`, checked against an independent count
//! of the DNS messages in those files: tshark's DNS, mDNS and LLMNR dissectors, with IP
//! defragmentation and TCP reassembly turned on.
//!
//! For each capture the real binary imports the file into its own data directory, the segments
//! are read back, and tshark dissects the same file. Every DNS message tshark finds (several per
//! frame when TCP carries more than one) must show up in exactly one row, with the same bytes, in
//! the right column and with the right status. Rows are compared as multisets of (status, row
//! time, transport, client, server, server port, query bytes and size, response bytes and size),
//! so the check covers the row count, the statuses, the raw bytes and sizes, and which query each
//! response was paired with (retransmitted queries often have the same bytes; their times
//! differ). Nothing per file is written down here: every expectation comes from tshark at test
//! time.
//!
//! # What counts as a DNS message
//!
//! tshark is made to decode the ports dnsledger imports, and only those: 53, 5353 and 5355, over
//! UDP and TCP. By default tshark also decodes DNS over TLS and DTLS (853), DNS over SCTP (53),
//! DNS inside ICMP errors and DNS over HTTPS; the display filter drops all of those. It does not
//! decode TCP 5355 (LLMNR over TCP) by default, so `-d tcp.port==5355,dns` adds it.
//!
//! A message's bytes are what tshark's DNS item covers: the UDP payload (of the reassembled
//! datagram, for IP fragments), or for TCP the reassembled PDU without its 2-byte length prefix.
//! A fragment whose first fragment is missing is not DNS to either side (no UDP header), and
//! neither is a UDP datagram whose UDP length is 8 (header only; bytes past the UDP length are
//! not part of the datagram). The display filter is applied with `-2 -Y`, not `-R`: a read
//! filter drops frames before the second pass and renumbers the rest, so `dns.response_to` and
//! the frame numbers in the failure report would no longer name the capture's frames.
//!
//! # Roles
//!
//! dnsledger decides whether a message is a query or a response by its direction (sent to the
//! server port: a query), and only falls back to the QR bit when both ports are DNS ports (mDNS
//! 5353 <-> 5353, LLMNR). The expectations use the same rule on tshark's addresses and ports, so
//! a QR=1 message sent to port 53 (the fuzzed `dns-badlabel.pcap`) is a query.
//!
//! # Statuses
//!
//! tshark links requests and responses: a response carries `dns.response_to` (its request's frame)
//! or `dns.unsolicited`; a request repeated within `dns.retransmission_timer` (set to 5 s) on the
//! same conversation with the same id, while unanswered, is a retransmission
//! (`dns.retransmit_request_in`), and a repeated response is one too (`dns.retransmit_response_in`).
//! Each original request with its retransmissions, its response and the retransmitted responses
//! is one tshark *transaction*. Where tshark's rules differ from dnsledger's, the expectation
//! follows dnsledger's documented rules within tshark's transactions:
//!
//! * tshark collapses retransmitted requests into one transaction; dnsledger writes each query as
//!   its own row, and a response answers the oldest pending query it matches. So within a
//!   transaction, responses (in capture order) are paired with the oldest unpaired query; the
//!   queries left over are `unanswered`, the responses left over `unsolicited`.
//! * tshark's conversations have no direction, so it pairs an mDNS host's query to the multicast
//!   group with that same host's next announcement to the group (same addresses and ports, same
//!   direction). dnsledger orients each flow client -> server, so a response must travel the
//!   opposite way of its query: a pair going the same way is not a pair.
//! * dnsledger pairs on (flow, id, first question); tshark does not look at the question. A pair
//!   whose first questions (name case-insensitively, type, class) differ is not a pair. A side
//!   with no readable question matches any (dnsledger: a FORMERR often has none).
//! * A query older than the pair timeout (5 s of capture time, passed as `--pair-timeout 5s`)
//!   is `unanswered`: a response that arrives later does not answer it. tshark starts a new
//!   transaction when the same id is asked again 5 s or more after an unanswered request, and
//!   pairs the response with the newer one; the timeout gives dnsledger the same pairing.
//! * A response tshark links to no request (`dns.unsolicited`, or no link at all, as for a
//!   message too short to dissect) is `unsolicited`; a query with no response is `unanswered`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use dnsledger_tests::fixture::captures_under;
use dnsledger_tests::harness::{DNSLEDGER, repo_root, serial_lock};
use dnsledger_tests::segments::{Row, all_rows, read_segment, segment_files};

/// The ports `dnsledger import` uses by default (DNS, mDNS, LLMNR).
const PORTS: [u16; 3] = [53, 5353, 5355];
/// The pair timeout given to `dnsledger import`, in nanoseconds.
const PAIR_TIMEOUT_NS: i64 = 5_000_000_000;
const PAIR_TIMEOUT_ARG: &str = "5s";

const ANSWERED: &str = "answered";
const UNANSWERED: &str = "unanswered";
const UNSOLICITED: &str = "unsolicited";
const STATUSES: [&str; 3] = [ANSWERED, UNANSWERED, UNSOLICITED];

fn pcap_dir() -> PathBuf {
    repo_root().join("testdata/pcap")
}

/// One DNS message as tshark dissected it.
#[derive(Debug)]
struct Msg {
    frame: u64,
    ts_ns: i64,
    transport: &'static str,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    id: Option<u16>,
    /// The QR bit.
    qr: Option<bool>,
    /// First question: lower-cased name, type, class.
    question: Option<(String, u16, u16)>,
    response_to: Option<u64>,
    retransmit_request_in: Option<u64>,
    retransmit_response_in: Option<u64>,
    /// The captured bytes of the message.
    bytes: Vec<u8>,
    /// Its length on the wire: the UDP length less the header, or the TCP length prefix.
    wire_len: u32,
}

impl Msg {
    /// dnsledger's role rule: sent to a DNS port from a non-DNS port is a query, the reverse a
    /// response; between two DNS ports the QR bit decides (a query when unreadable).
    fn is_query(&self) -> bool {
        match (PORTS.contains(&self.sport), PORTS.contains(&self.dport)) {
            (false, true) => true,
            (true, false) => false,
            _ => self.qr != Some(true),
        }
    }

    fn side(&self) -> Side {
        Some((self.bytes.clone(), self.wire_len))
    }

    /// (transport, client, server, server port), as dnsledger orients the flow.
    fn flow(&self) -> Flow {
        if self.is_query() {
            (self.transport.to_string(), self.src, self.dst, self.dport)
        } else {
            (self.transport.to_string(), self.dst, self.src, self.sport)
        }
    }
}

type Flow = (String, IpAddr, IpAddr, u16);

/// A message as a row holds it: its bytes and its size on the wire.
type Side = Option<(Vec<u8>, u32)>;

/// A row, or an expected row: status, row time (the query's, else the response's, in ns),
/// flow, query, response.
type Key = (String, i64, Flow, Side, Side);

/// The JSON value, or the last one when tshark merged repeated keys into an array (with
/// `--no-duplicate-keys`); for an IP layer the last one is the innermost.
fn last(v: &Value) -> &Value {
    match v {
        Value::Array(a) => a.last().unwrap_or(&Value::Null),
        other => other,
    }
}

/// A tshark field's text.
fn text<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    last(v.get(field)?).as_str()
}

fn number(v: &Value, field: &str) -> Option<u64> {
    let s = text(v, field)?;
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `frame.time_epoch` ("1477386297.946783000") in nanoseconds.
fn epoch_ns(s: &str) -> i64 {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    secs.parse::<i64>().expect("epoch seconds") * 1_000_000_000
        + digits.parse::<i64>().expect("epoch fraction")
}

fn hex_bytes(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex string from tshark");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex from tshark"))
        .collect()
}

/// The first question of a DNS tree: the question whose name starts earliest in the message.
/// (serde_json's map does not keep tshark's order.)
fn first_question(tree: &Value) -> Option<(String, u16, u16)> {
    let queries = tree.get("Queries")?.as_object()?;
    let mut best: Option<(u64, (String, u16, u16))> = None;
    for v in queries.values() {
        let items: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for q in items {
            let pos = q
                .get("dns.qry.name_raw")
                .and_then(|r| r.get(1))
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX);
            let (Some(name), Some(qtype), Some(qclass)) = (
                text(q, "dns.qry.name"),
                number(q, "dns.qry.type"),
                number(q, "dns.qry.class"),
            ) else {
                continue;
            };
            let name = if name == "<Root>" { "." } else { name };
            let candidate = (name.to_ascii_lowercase(), qtype as u16, qclass as u16);
            if best.as_ref().is_none_or(|(p, _)| pos < *p) {
                best = Some((pos, candidate));
            }
        }
    }
    best.map(|(_, q)| q)
}

/// tshark's arguments: reassembly on, DNS decoded on exactly dnsledger's ports, JSON with the raw
/// bytes of every item (`-x`) and repeated keys (several DNS PDUs in one frame) as arrays.
fn tshark_args(file: &Path) -> Vec<String> {
    let filter = "(dns || mdns || llmnr) \
                  && (udp.port in {53, 5353, 5355} || tcp.port in {53, 5353, 5355}) \
                  && !icmp && !icmpv6 && !tls && !dtls && !sctp && !http && !http2";
    let mut args: Vec<String> = vec!["-n".into(), "-r".into(), file.display().to_string()];
    for pref in [
        "ip.defragment:TRUE",
        "ipv6.defragment:TRUE",
        "tcp.desegment_tcp_streams:TRUE",
        "tcp.reassemble_out_of_order:TRUE",
        "dns.desegment_dns_messages:TRUE",
        "dns.retransmission_timer:5",
    ] {
        args.push("-o".into());
        args.push(pref.into());
    }
    args.extend(
        [
            "-d",
            "tcp.port==5355,dns",
            "-2",
            "-Y",
            filter,
            "-T",
            "json",
            "-x",
            "--no-duplicate-keys",
        ]
        .map(String::from),
    );
    args
}

/// Runs tshark on `file` and returns every DNS message in it, in capture order.
fn tshark_messages(file: &Path, config_dir: &Path) -> Vec<Msg> {
    let out = Command::new("tshark")
        .args(tshark_args(file))
        // A clean profile: no personal preferences or "decode as" rules.
        .env("WIRESHARK_CONFIG_DIR", config_dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run tshark ({e}): it is this test's oracle; install it with \
                 scripts/setup-debian.sh (apt-get install tshark)"
            )
        });
    assert!(
        out.status.success(),
        "tshark failed on {}: {}\n{}",
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    let packets: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("tshark JSON for {}: {e}", file.display()));
    let mut msgs = Vec::new();
    for p in &packets {
        let layers = &p["_source"]["layers"];
        let frame = &layers["frame"];
        let frame_no = number(frame, "frame.number").expect("frame.number");
        let ts_ns = epoch_ns(text(frame, "frame.time_epoch").expect("frame.time_epoch"));
        // The innermost IP layer carries the UDP or TCP header (IPv6 in IPv4 and the reverse).
        let inner_ip = text(frame, "frame.protocols")
            .unwrap_or_default()
            .split(':')
            .rfind(|p| *p == "ip" || *p == "ipv6")
            .unwrap_or("ip");
        let ip = |v4: &str, v6: &str| -> IpAddr {
            let field = if inner_ip == "ipv6" { v6 } else { v4 };
            text(last(&layers[inner_ip]), field)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("frame {frame_no}: no {field}"))
        };
        let (src, dst) = (ip("ip.src", "ipv6.src"), ip("ip.dst", "ipv6.dst"));
        let (transport, t) = match (layers.get("udp"), layers.get("tcp")) {
            (Some(u), None) => ("udp", last(u)),
            (None, Some(t)) => ("tcp", last(t)),
            _ => panic!(
                "{} frame {frame_no}: neither UDP nor TCP alone",
                file.display()
            ),
        };
        let port = |f: &str| number(t, &format!("{transport}.{f}")).expect("port") as u16;
        let (sport, dport) = (port("srcport"), port("dstport"));
        // UDP length 0 (GSO, jumbograms) leaves the IP length in charge.
        let udp_len = number(t, "udp.length").filter(|&n| n >= 8);
        for proto in ["dns", "mdns", "llmnr"] {
            let Some(tree) = layers.get(proto) else {
                continue;
            };
            let trees: Vec<&Value> = match tree {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            // One raw item is [hex, pos, len, mask, type]; several are an array of those.
            let raw = &layers[format!("{proto}_raw")];
            let raws: Vec<&Value> = match raw.get(0) {
                Some(Value::Array(_)) => raw.as_array().expect("array").iter().collect(),
                Some(_) => vec![raw],
                None => Vec::new(),
            };
            assert_eq!(
                trees.len(),
                raws.len(),
                "{} frame {frame_no}: {proto} trees and raw items differ in number",
                file.display()
            );
            for (tree, raw) in trees.into_iter().zip(raws) {
                let mut bytes = hex_bytes(raw[0].as_str().expect("raw hex"));
                let mut wire_len = udp_len.map_or(bytes.len() as u64, |n| n - 8);
                if transport == "tcp" {
                    // The DNS item of a TCP PDU starts with the 2-byte length prefix.
                    let len = number(tree, "dns.length");
                    assert!(
                        bytes.len() >= 2,
                        "frame {frame_no}: TCP DNS PDU under 2 bytes"
                    );
                    let prefix = u64::from(u16::from_be_bytes([bytes[0], bytes[1]]));
                    assert_eq!(len, Some(prefix), "frame {frame_no}: dns.length vs prefix");
                    bytes.drain(..2);
                    wire_len = prefix;
                }
                msgs.push(Msg {
                    frame: frame_no,
                    ts_ns,
                    transport,
                    src,
                    sport,
                    dst,
                    dport,
                    id: number(tree, "dns.id").map(|v| v as u16),
                    qr: tree
                        .get("dns.flags_tree")
                        .and_then(|f| text(f, "dns.flags.response"))
                        .map(|v| v == "1"),
                    question: first_question(tree),
                    response_to: number(tree, "dns.response_to"),
                    retransmit_request_in: number(tree, "dns.retransmit_request_in"),
                    retransmit_response_in: number(tree, "dns.retransmit_response_in"),
                    bytes,
                    wire_len: u32::try_from(wire_len).expect("message length"),
                });
            }
        }
    }
    msgs
}

/// Expected rows, each with the frames it comes from (for the failure report).
struct Expected {
    rows: Vec<(Key, String)>,
}

/// Derives dnsledger's rows from tshark's messages and transactions (see the module docs).
fn expected_rows(msgs: &[Msg]) -> Expected {
    // The message of `frame` with `id` in the given role (a TCP frame may hold several).
    let find = |frame: u64, id: Option<u16>, query: bool| {
        msgs.iter()
            .position(|m| m.frame == frame && m.id == id && m.is_query() == query)
    };
    // Transaction of each message: the index of its original request.
    let mut queries: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut responses: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut lone_responses = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if m.is_query() {
            let original = m
                .retransmit_request_in
                .and_then(|f| find(f, m.id, true))
                .unwrap_or(i);
            queries.entry(original).or_default().push(i);
        } else {
            // A retransmitted response names the original response, which names the request.
            let original_response = m
                .retransmit_response_in
                .and_then(|f| find(f, m.id, false))
                .unwrap_or(i);
            let request = msgs[original_response]
                .response_to
                .and_then(|f| find(f, m.id, true));
            // The request may itself be a retransmission in tshark's eyes: use its original.
            let original = request.map(|q| {
                msgs[q]
                    .retransmit_request_in
                    .and_then(|f| find(f, m.id, true))
                    .unwrap_or(q)
            });
            match original {
                Some(q) => responses.entry(q).or_default().push(i),
                None => lone_responses.push(i),
            }
        }
    }

    let eligible = |q: &Msg, r: &Msg| {
        let reversed = r.transport == q.transport
            && r.src == q.dst
            && r.dst == q.src
            && r.sport == q.dport
            && r.dport == q.sport;
        let same_question = match (&q.question, &r.question) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let age = r.ts_ns - q.ts_ns;
        reversed && same_question && age <= PAIR_TIMEOUT_NS
    };

    let mut rows = Vec::new();
    let frames = |idx: &[usize]| {
        idx.iter()
            .map(|&i| format!("#{}", msgs[i].frame))
            .collect::<Vec<_>>()
            .join("+")
    };
    for (original, qs) in &queries {
        let mut unpaired: Vec<usize> = qs.clone();
        for &r in responses.get(original).map_or(&[][..], Vec::as_slice) {
            let m = &msgs[r];
            match unpaired.iter().position(|&q| eligible(&msgs[q], m)) {
                Some(pos) => {
                    let q = unpaired.remove(pos);
                    let key = (
                        ANSWERED.to_string(),
                        msgs[q].ts_ns,
                        msgs[q].flow(),
                        msgs[q].side(),
                        m.side(),
                    );
                    rows.push((key, frames(&[q, r])));
                }
                None => lone_responses.push(r),
            }
        }
        for q in unpaired {
            let key = (
                UNANSWERED.to_string(),
                msgs[q].ts_ns,
                msgs[q].flow(),
                msgs[q].side(),
                None,
            );
            rows.push((key, frames(&[q])));
        }
    }
    // Responses linked to a transaction that has no query in the capture's query role.
    for (original, rs) in &responses {
        if !queries.contains_key(original) {
            lone_responses.extend(rs);
        }
    }
    for r in lone_responses {
        let key = (
            UNSOLICITED.to_string(),
            msgs[r].ts_ns,
            msgs[r].flow(),
            None,
            msgs[r].side(),
        );
        rows.push((key, frames(&[r])));
    }
    Expected { rows }
}

fn row_key(r: &Row) -> Key {
    let ip = |s: &str| -> IpAddr { s.parse().unwrap_or_else(|e| panic!("row address {s}: {e}")) };
    (
        r.status.clone(),
        r.ts,
        (
            r.transport.clone(),
            ip(&r.client_ip),
            ip(&r.server_ip),
            r.server_port,
        ),
        r.query_raw
            .clone()
            .map(|b| (b, r.query_size.unwrap_or(u32::MAX))),
        r.response_raw
            .clone()
            .map(|b| (b, r.response_size.unwrap_or(u32::MAX))),
    )
}

/// What one capture gave on each side.
struct Report {
    name: String,
    tshark_queries: usize,
    tshark_responses: usize,
    expected: [usize; 3],
    got: [usize; 3],
    /// Rows expected but missing, and rows present but not expected.
    problems: Vec<String>,
}

fn count(statuses: impl Iterator<Item = String>) -> [usize; 3] {
    let mut c = [0; 3];
    for s in statuses {
        if let Some(i) = STATUSES.iter().position(|x| *x == s) {
            c[i] += 1;
        }
    }
    c
}

fn describe(key: &Key) -> String {
    let (status, ts, (transport, client, server, port), q, r) = key;
    let hex = |side: &Side| match side {
        None => "-".to_string(),
        Some((b, wire)) => {
            let head: String = b.iter().take(16).map(|x| format!("{x:02x}")).collect();
            let more = if b.len() > 16 { ".." } else { "" };
            format!("{} of {wire} bytes: {head}{more}", b.len())
        }
    };
    format!(
        "{status} at {ts} {transport} {client} -> {server}:{port} query [{}] response [{}]",
        hex(q),
        hex(r)
    )
}

fn check_capture(file: &Path, root: &Path, scratch: &Path) -> Report {
    let name = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    let data_dir = scratch.join(name.replace('/', "_")).join("data");
    let config_dir = scratch.join(name.replace('/', "_")).join("wireshark");
    std::fs::create_dir_all(&config_dir).expect("tshark config dir");
    let out = Command::new(&*DNSLEDGER)
        .args([
            "--quiet",
            "import",
            "--host",
            "test",
            "--pair-timeout",
            PAIR_TIMEOUT_ARG,
            // Whole messages (the largest capture holds a 63 KB one), to compare raw bytes.
            "--max-payload",
            "65535",
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .arg(file)
        .output()
        .expect("run dnsledger import");
    assert!(
        out.status.success(),
        "dnsledger import {name} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = all_rows(&data_dir);
    let msgs = tshark_messages(file, &config_dir);
    let expected = expected_rows(&msgs);

    // Multiset difference: +1 per expected row, -1 per actual row.
    let mut diff: BTreeMap<Key, (i64, Vec<String>)> = BTreeMap::new();
    for (key, frames) in &expected.rows {
        let e = diff.entry(key.clone()).or_default();
        e.0 += 1;
        e.1.push(frames.clone());
    }
    for r in &rows {
        diff.entry(row_key(r)).or_default().0 -= 1;
    }
    let mut problems = Vec::new();
    for (key, (n, frames)) in &diff {
        if *n > 0 {
            problems.push(format!(
                "missing {n}x (tshark {}): {}",
                frames.join(", "),
                describe(key)
            ));
        } else if *n < 0 {
            problems.push(format!("unexpected {}x: {}", -n, describe(key)));
        }
    }
    let tshark_queries = msgs.iter().filter(|m| m.is_query()).count();
    Report {
        name,
        tshark_queries,
        tshark_responses: msgs.len() - tshark_queries,
        expected: count(expected.rows.iter().map(|(k, _)| k.0.clone())),
        got: count(rows.iter().map(|r| r.status.clone())),
        problems,
    }
}

fn table(reports: &[Report]) -> String {
    let width = reports
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = format!(
        "{:<width$}  {:>12}  {:>16}  {:>16}  {}\n",
        "file", "tshark q/r", "expected A/U/S", "dnsledger A/U/S", "row mismatches"
    );
    let abc = |c: &[usize; 3]| format!("{}/{}/{}", c[0], c[1], c[2]);
    for r in reports {
        let _ = writeln!(
            s,
            "{:<width$}  {:>12}  {:>16}  {:>16}  {}",
            r.name,
            format!("{}/{}", r.tshark_queries, r.tshark_responses),
            abc(&r.expected),
            abc(&r.got),
            r.problems.len()
        );
    }
    s
}

#[test]
fn import_matches_tshark_on_every_capture() {
    // CPU-heavy (tshark over every capture): not beside the load-sensitive BPF tests.
    let _serial = serial_lock();
    let root = pcap_dir();
    assert!(
        root.is_dir(),
        "{} is missing: the test captures live in testdata/pcap",
        root.display()
    );
    let files = captures_under(&root);
    assert!(!files.is_empty(), "no captures under {}", root.display());
    let scratch = tempfile::tempdir().expect("tempdir");

    // Two workers: each capture costs one dnsledger and one tshark process.
    let next = AtomicUsize::new(0);
    let reports: Mutex<HashMap<usize, Report>> = Mutex::new(HashMap::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = files.get(i) else { break };
                    let report = check_capture(file, &root, scratch.path());
                    reports.lock().unwrap().insert(i, report);
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap();
    let reports: Vec<Report> = (0..files.len())
        .map(|i| reports.remove(&i).expect("every capture checked"))
        .collect();

    let summary = table(&reports);
    eprintln!("{summary}");
    // The oracle must have seen something, or every comparison above is vacuous.
    let total: usize = reports
        .iter()
        .map(|r| r.tshark_queries + r.tshark_responses)
        .sum();
    assert!(
        total > 0,
        "tshark found no DNS message in any capture\n{summary}"
    );
    let mut failures = String::new();
    for r in &reports {
        if !r.problems.is_empty() {
            let _ = writeln!(failures, "{}:", r.name);
            for p in r.problems.iter().take(20) {
                let _ = writeln!(failures, "  {p}");
            }
            if r.problems.len() > 20 {
                let _ = writeln!(failures, "  ... {} more", r.problems.len() - 20);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "dnsledger import disagrees with tshark (A/U/S = answered/unanswered/unsolicited)\n\
         {summary}\n{failures}"
    );
}

/// A full pairing table writes its oldest query unanswered at once and counts it: in the rows
/// (a note), in the segment metadata and in `dnsql segments`.
#[test]
fn full_pairing_table_is_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = repo_root().join("testdata/pcap/dns-tunnel-iodine.pcap");
    let pcap = pcap.to_str().expect("utf8");
    let import = |name: &str, extra: &[&str]| {
        let data = dir.path().join(name);
        let mut args = vec!["import", "--data-dir", data.to_str().expect("utf8")];
        args.extend_from_slice(extra);
        args.push(pcap);
        let out = Command::new(&*DNSLEDGER)
            .args(&args)
            .output()
            .expect("run dnsledger");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        data
    };
    let roomy = all_rows(&import("roomy", &[]));
    let data = import("tight", &["--max-pending", "1"]);
    let rows = all_rows(&data);
    let evicted_rows = rows
        .iter()
        .filter(|r| {
            r.parse_error
                .as_deref()
                .is_some_and(|e| e.contains("pairing table full (1 queries pending)"))
        })
        .count() as u64;
    let mut evicted_meta = 0;
    for f in segment_files(&data) {
        evicted_meta += read_segment(&f)
            .1
            .get("dnsledger.pair_evicted")
            .and_then(|v| v.parse::<u64>().ok())
            .expect("pair_evicted in every segment");
    }
    assert!(
        evicted_meta > 0,
        "no eviction with one pending query allowed"
    );
    assert_eq!(evicted_meta, evicted_rows);
    // Nothing is lost: each evicted query is a row, and its late response another.
    let count = |rows: &[Row], st: &str| rows.iter().filter(|r| r.status == st).count() as u64;
    let (a0, u0, s0) = (
        count(&roomy, "answered"),
        count(&roomy, "unanswered"),
        count(&roomy, "unsolicited"),
    );
    let (a1, u1, s1) = (
        count(&rows, "answered"),
        count(&rows, "unanswered"),
        count(&rows, "unsolicited"),
    );
    assert_eq!(a1 + u1, a0 + u0, "every query is a row either way");
    assert!(
        a1 < a0 && a0 - a1 <= evicted_meta,
        "{a0} {a1} {evicted_meta}"
    );
    assert_eq!(
        s1 - s0,
        a0 - a1,
        "each response of an evicted query is a row"
    );
    let listed: u64 = dnsledger_tests::harness::dnsql_json(&data, &["segments"])
        .iter()
        .map(|g| g["pair_evicted"].as_u64().expect("pair_evicted listed"))
        .sum();
    assert_eq!(listed, evicted_meta);
}

/// A host name that needs escaping (space, slash, non-ASCII, `%`) is one partition directory
/// (`host=web%201%2F%C3%BC%25`), and `dnsql --host`, dnsql's `host` column and `dnsledger prune
/// --host` all speak of the name itself, never of its escaped form.
#[test]
fn escaped_host_names_round_trip_through_import_dnsql_and_prune() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let odd = "web 1/ü%";
    let pcap = repo_root().join("testdata/pcap/dns.pcap");
    let dnsledger = |args: &[&str]| {
        let out = Command::new(&*DNSLEDGER)
            .args(args)
            .output()
            .expect("run dnsledger");
        assert!(
            out.status.success(),
            "dnsledger {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let data_arg = data.to_str().expect("utf8");
    let pcap_arg = pcap.to_str().expect("utf8");
    for host in [odd, "plain"] {
        dnsledger(&[
            "-q",
            "import",
            "--host",
            host,
            "--data-dir",
            data_arg,
            pcap_arg,
        ]);
    }
    let host_dirs = |files: &[PathBuf]| -> std::collections::BTreeSet<String> {
        files
            .iter()
            .filter_map(|f| {
                f.ancestors()
                    .nth(3)?
                    .file_name()?
                    .to_str()
                    .map(str::to_owned)
            })
            .collect()
    };
    let files = segment_files(&data);
    assert_eq!(
        host_dirs(&files),
        ["host=plain", "host=web%201%2F%C3%BC%25"]
            .map(str::to_owned)
            .into(),
        "{files:?}"
    );

    let hosts = dnsledger_tests::harness::dnsql_json(
        &data,
        &[
            "sql",
            "SELECT host, count(*) AS n FROM dns GROUP BY host ORDER BY host",
        ],
    );
    let names: Vec<&str> = hosts.iter().filter_map(|r| r["host"].as_str()).collect();
    assert_eq!(names, ["plain", odd], "{hosts:?}");
    let only = dnsledger_tests::harness::dnsql_json(
        &data,
        &["--host", odd, "sql", "SELECT DISTINCT host FROM dns"],
    );
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0]["host"].as_str(), Some(odd));

    // The capture is years old: --max-age 1d deletes all of the odd host's segments, none else.
    let plain_before: Vec<PathBuf> = files
        .iter()
        .filter(|f| f.to_string_lossy().contains("host=plain/"))
        .cloned()
        .collect();
    assert!(!plain_before.is_empty());
    dnsledger(&[
        "-q",
        "prune",
        "--data-dir",
        data_arg,
        "--host",
        odd,
        "--max-age",
        "1d",
    ]);
    assert_eq!(segment_files(&data), plain_before);
}

/// One import writes one segment per hour: the queries settled after newer rows were written
/// (unanswered after the pair timeout, or still pending at the end) join the hour's segment as
/// its last row group instead of making a second, overlapping segment of a few rows. The rows
/// themselves are what `import_matches_tshark_on_every_capture` checks against tshark.
#[test]
fn import_writes_one_segment_per_hour() {
    let root = pcap_dir();
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut late_rows_seen = false;
    for (i, file) in captures_under(&root).iter().enumerate() {
        let data_dir = scratch.path().join(format!("{i}"));
        let out = Command::new(&*DNSLEDGER)
            .args(["--quiet", "import", "--host", "test", "--pair-timeout"])
            .arg(PAIR_TIMEOUT_ARG)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg(file)
            .output()
            .expect("run dnsledger import");
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let files = segment_files(&data_dir);
        let mut per_hour: BTreeMap<PathBuf, usize> = BTreeMap::new();
        for f in &files {
            *per_hour
                .entry(f.parent().expect("partition").to_path_buf())
                .or_default() += 1;
        }
        assert!(
            per_hour.values().all(|n| *n == 1),
            "{}: more than one segment in an hour: {files:#?}",
            file.display()
        );
        let mut footer_rows = 0;
        for f in &files {
            let (batches, kv) = read_segment(f);
            let n: usize = batches.iter().map(|b| b.num_rows()).sum();
            let declared: usize = kv
                .get("dnsledger.transactions")
                .and_then(|v| v.parse().ok())
                .expect("transactions");
            assert_eq!(n, declared, "{}", f.display());
            footer_rows += n;
            let pq = parquet::file::reader::SerializedFileReader::new(
                std::fs::File::open(f).expect("open"),
            )
            .expect("parquet");
            late_rows_seen |= parquet::file::reader::FileReader::metadata(&pq).num_row_groups() > 1;
        }
        assert_eq!(footer_rows, all_rows(&data_dir).len());
    }
    // The captures include queries settled late (the iodine tunnel's unanswered ones): the
    // case this test is about happened at least once.
    assert!(
        late_rows_seen,
        "no capture had late rows: the test proves nothing"
    );
}
