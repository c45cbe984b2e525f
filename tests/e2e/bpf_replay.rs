//! Replays the DNS messages of every public capture in testdata through real loopback sockets
//! while the recorder runs: queries from a client socket, the recorded response bytes from a
//! responder. Every message must land in a row whose raw bytes equal the original.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dnsledger::capture::pcap::PcapSource;
use dnsledger::decode::{Decoder, PortSet};
use dnsledger::decode::{DnsMessage, Flow, Transport};

use dnsledger_tests::fixture::*;
use dnsledger_tests::harness::*;
use dnsledger_tests::segments::*;

const REPLAY_PORT: u16 = 5399;

pub fn capture_files() -> Vec<PathBuf> {
    let out = captures_under(&repo_root().join("testdata/pcap"));
    assert!(
        out.len() >= 20,
        "testdata/pcap holds only {} captures",
        out.len()
    );
    out
}

/// The DNS messages of one capture, grouped by conversation in capture order.
fn conversations(file: &Path) -> Vec<(Transport, Vec<DnsMessage>)> {
    let mut decoder = Decoder::new(PortSet::new(&[53, 5353, 5355]).expect("ports"));
    let mut msgs = Vec::new();
    let mut src = PcapSource::open(file).unwrap_or_else(|e| panic!("{e}"));
    src.for_each(|pkt| decoder.push(pkt, &mut msgs))
        .unwrap_or_else(|e| panic!("{e}"));
    decoder.finish(&mut msgs);
    let mut order: Vec<Flow> = Vec::new();
    let mut by_flow: HashMap<Flow, Vec<DnsMessage>> = HashMap::new();
    for m in msgs {
        // A zero-length datagram carries no DNS message to replay.
        if m.bytes.is_empty() {
            continue;
        }
        if !by_flow.contains_key(&m.flow) {
            order.push(m.flow);
        }
        by_flow.entry(m.flow).or_default().push(m);
    }
    order
        .into_iter()
        .map(|f| (f.transport, by_flow.remove(&f).unwrap_or_default()))
        .collect()
}

fn replay_udp(responder: &UdpSocket, msgs: &[DnsMessage]) {
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let client_addr = client.local_addr().expect("addr");
    let server_addr: SocketAddr = ([127, 0, 0, 1], REPLAY_PORT).into();
    let mut buf = vec![0u8; 70_000];
    for m in msgs {
        if m.from_client {
            client.send_to(&m.bytes, server_addr).expect("send query");
            let (n, _) = responder.recv_from(&mut buf).expect("responder receives");
            assert_eq!(n, m.bytes.len());
        } else {
            responder
                .send_to(&m.bytes, client_addr)
                .expect("send response");
            let n = client.recv(&mut buf).expect("client receives");
            assert_eq!(n, m.bytes.len());
        }
    }
}

fn replay_tcp(listener: &TcpListener, msgs: &[DnsMessage]) {
    let mut client = TcpStream::connect(("127.0.0.1", REPLAY_PORT)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.set_nodelay(true).expect("nodelay");
    }
    // Consecutive messages in one direction go out in one write: several DNS messages per
    // segment, as pipelining clients do.
    let mut i = 0;
    while i < msgs.len() {
        let dir = msgs[i].from_client;
        let mut wire = Vec::new();
        while i < msgs.len() && msgs[i].from_client == dir {
            let b = &msgs[i].bytes;
            wire.extend_from_slice(&(b.len() as u16).to_be_bytes());
            wire.extend_from_slice(b);
            i += 1;
        }
        let (writer, reader) = if dir {
            (&mut client, &mut server)
        } else {
            (&mut server, &mut client)
        };
        writer.write_all(&wire).expect("tcp write");
        let mut got = vec![0u8; wire.len()];
        reader.read_exact(&mut got).expect("tcp read");
    }
}

#[test]
fn bpf_replay_public_captures() {
    let _g = bpf_lock();
    let mut sent_queries: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut sent_responses: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut replays = Vec::new();
    for file in capture_files() {
        for (transport, msgs) in conversations(&file) {
            for m in &msgs {
                let set = if m.from_client {
                    &mut sent_queries
                } else {
                    &mut sent_responses
                };
                *set.entry(m.bytes.clone()).or_default() += 1;
            }
            replays.push((file.clone(), transport, msgs));
        }
    }
    let total: usize =
        sent_queries.values().sum::<usize>() + sent_responses.values().sum::<usize>();
    assert!(total > 1000, "only {total} messages in testdata");

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = REPLAY_PORT.to_string();
    let rec = Recorder::start(
        &data,
        &[
            "--ports",
            &port,
            "--max-payload",
            "65535",
            "--pair-timeout",
            "2s",
        ],
    );
    let responder = UdpSocket::bind(("127.0.0.1", REPLAY_PORT)).expect("bind responder");
    responder
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let listener = TcpListener::bind(("127.0.0.1", REPLAY_PORT)).expect("listen");
    for (file, transport, msgs) in &replays {
        match transport {
            Transport::Udp => replay_udp(&responder, msgs),
            Transport::Tcp => replay_tcp(&listener, msgs),
        }
        let _ = file;
    }
    let logs = rec.stop();
    assert!(
        !logs.iter().any(|l| l.contains("panicked")),
        "{}",
        logs.join("\n")
    );

    let rows: Vec<Row> = all_rows(&data)
        .into_iter()
        .filter(|r| r.server_port == REPLAY_PORT)
        .collect();
    let mut got_queries: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut got_responses: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in &rows {
        if let Some(q) = &r.query_raw {
            *got_queries.entry(q.clone()).or_default() += 1;
        }
        if let Some(p) = &r.response_raw {
            *got_responses.entry(p.clone()).or_default() += 1;
        }
    }
    let log = logs.join("\n");
    let diff = |sent: &HashMap<Vec<u8>, usize>, got: &HashMap<Vec<u8>, usize>, what: &str| {
        let missing: Vec<String> = sent
            .iter()
            .filter(|(b, n)| got.get(*b).copied().unwrap_or(0) != **n)
            .map(|(b, n)| {
                format!(
                    "{what} of {} bytes (id {:02x?}): sent {n}, recorded {}",
                    b.len(),
                    &b[..b.len().min(2)],
                    got.get(b).copied().unwrap_or(0)
                )
            })
            .collect();
        assert!(
            missing.is_empty(),
            "{} {what} mismatches:\n{}\nrecorder log:\n{log}",
            missing.len(),
            missing
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    diff(&sent_queries, &got_queries, "query");
    diff(&sent_responses, &got_responses, "response");
    // Nothing recorded that was not sent.
    assert_eq!(
        got_queries.values().sum::<usize>(),
        sent_queries.values().sum::<usize>()
    );
    assert_eq!(
        got_responses.values().sum::<usize>(),
        sent_responses.values().sum::<usize>()
    );

    // Malformed captures are rows with a parse error, not gaps.
    let errors = rows.iter().filter(|r| r.parse_error.is_some()).count();
    assert!(errors >= 5, "only {errors} rows with parse errors");
    let transports: Vec<&str> = rows.iter().map(|r| r.transport.as_str()).collect();
    assert!(transports.contains(&"tcp") && transports.contains(&"udp"));
    for status in ["answered", "unanswered", "unsolicited"] {
        assert!(rows.iter().any(|r| r.status == status), "no {status} row");
    }
}
