//! Target `tcp_reassembly`: TCP stream reassembly against a model.
//!
//! The input (via `arbitrary`) describes one or two TCP connections to port 53, each with a
//! list of DNS messages per direction (sent with their 2-byte length prefixes), and a list of
//! operations that cut those byte streams into segments: in order, retransmitted (overlapping
//! what was sent), ahead of the stream (out of order, maybe never filled), cut by the capture
//! cap, skipped (lost), plus SYN, FIN, RST, idle expiry and arbitrary "noise" segments.
//!
//! Invariants:
//! * nothing panics;
//! * heap use stays within a bound linear in the bytes fed (plus a constant);
//! * per connection and direction: every message whose bytes (and all bytes before it in the
//!   stream) arrived intact, before anything that may end or disturb the stream (a FIN before
//!   it, a RST, an idle expiry, a new SYN, a capture-cut segment before its end), is emitted
//!   exactly once, in order, with identical bytes and no capture error; and when the whole
//!   stream arrived intact and undisturbed, exactly its messages are emitted, nothing else.
//!
//! The heap bound is checked only where [`crate::CountingAlloc`] is the global allocator
//! ([`heap_counting`]): the fuzz target and the replay test install it.

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::{Arbitrary, Unstructured};
use dnsledger::capture::{Direction, RawPacket};
use dnsledger::decode::{Decoder, DecoderLimits, PortSet};
use dnsledger::decode::{DnsMessage, Transport};

use crate::{
    ACK, FIN, PSH, RST, SYN, check_message, check_stats, heap_counting, heap_mark, heap_peak_since,
    tcp_packet,
};

const SERVER_PORT: u16 = 53;
const MAX_BODY: usize = 1024;
const MAX_MESSAGES: usize = 48;
const MAX_OPS: usize = 512;

/// One input, decoded from the fuzzer's bytes with `arbitrary`.
#[derive(Arbitrary, Debug)]
pub struct Input {
    small_limits: bool,
    /// Both connections start with SYN and SYN-ACK.
    handshake: bool,
    /// After the operations, every hole in every stream is filled (in order of the holes).
    deliver_all: bool,
    flows: [FlowSpec; 2],
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct FlowSpec {
    v6: bool,
    port: u8,
    /// Initial sequence numbers, client -> server and server -> client.
    isn: [u32; 2],
    /// Message bodies per direction.
    messages: [Vec<Vec<u8>>; 2],
}

#[derive(Arbitrary, Debug)]
struct Op {
    second_flow: bool,
    /// false: client -> server.
    from_server: bool,
    kind: OpKind,
}

#[derive(Arbitrary, Debug)]
enum OpKind {
    /// The next `len` bytes at the send cursor.
    Next { len: u16, fin: bool },
    /// A retransmission starting `back` bytes before the cursor.
    Back { back: u16, len: u16, fin: bool },
    /// A segment `ahead` bytes past the cursor (out of order); the cursor stays.
    Ahead { ahead: u16, len: u16, fin: bool },
    /// `len` bytes at the cursor of which the capture kept only `captured`.
    Truncated { len: u16, captured: u16 },
    /// The cursor moves `len` bytes without sending them.
    Skip { len: u16 },
    /// The last segment sent this way again, at the same sequence number, with `len` modulo
    /// its length + 1 bytes (a retransmission cut differently).
    Resend { len: u16, fin: bool },
    /// Fills the hole at the cursor (up to the next byte already sent), then moves the cursor
    /// past everything already sent contiguously from there (a sender with SACK).
    Fill { fin: bool },
    /// SYN (client) or SYN-ACK (server) with the flow's ISN, optionally with data (TFO).
    Syn { data: u16 },
    /// An empty FIN at the cursor.
    Fin,
    /// A RST at the cursor.
    Rst,
    /// Time moves on by `advance_ms`, then `Decoder::expire` with `idle_ms`.
    Expire { advance_ms: u16, idle_ms: u16 },
    /// A segment with arbitrary sequence number, flags and payload on the connection.
    Noise { seq: u32, flags: u8, data: Vec<u8> },
}

/// What is known about one direction of one connection.
#[derive(Default)]
struct DirModel {
    stream: Vec<u8>,
    /// (start, end) stream offsets of each non-empty message's body.
    bodies: Vec<(usize, usize)>,
    cursor: usize,
    /// Byte ranges delivered intact before the connection was disturbed (unsorted).
    covered: Vec<(usize, usize)>,
    /// Lowest offset whose bytes a capture-cut segment lost.
    lost_from: Option<usize>,
    /// Lowest FIN offset.
    fin_at: Option<usize>,
    /// A SYN was sent this way.
    syn: bool,
    /// A SYN or data segment was sent this way (the decoder knows where the stream starts).
    based: bool,
    /// The decoder's idea of where the stream starts may be wrong (first data not at 0).
    misbased: bool,
    /// A segment that is not a plain, truthful piece of the stream was sent.
    any_truncation: bool,
    /// Every truthful segment's byte range (whether or not the connection was disturbed).
    sent: Vec<(usize, usize)>,
    /// The last truthful segment's byte range.
    last_seg: Option<(usize, usize)>,
}

struct FlowModel {
    client: IpAddr,
    server: IpAddr,
    client_port: u16,
    isn: [u32; 2],
    dirs: [DirModel; 2],
    /// Noise was sent: no stream invariant holds.
    noisy: bool,
    /// Something ended or disturbed the connection (RST, expiry, SYN reuse, close and reuse):
    /// later segments count for nothing.
    cut: bool,
    /// Both directions have seen a FIN: the connection may be gone, and later segments may
    /// start a new one.
    later_than_close: bool,
    first_ts: Option<i64>,
}

enum Action {
    Packet(i64, Vec<u8>),
    Expire(i64, i64),
}

impl FlowModel {
    fn new(i: usize, spec: &FlowSpec) -> Self {
        let (client, server) = if spec.v6 {
            (
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x53)),
            )
        } else {
            (
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53)),
            )
        };
        let mut dirs: [DirModel; 2] = Default::default();
        for (d, msgs) in dirs.iter_mut().zip(&spec.messages) {
            for body in msgs.iter().take(MAX_MESSAGES) {
                let body = &body[..body.len().min(MAX_BODY)];
                d.stream
                    .extend_from_slice(&(body.len() as u16).to_be_bytes());
                let start = d.stream.len();
                d.stream.extend_from_slice(body);
                if !body.is_empty() {
                    d.bodies.push((start, d.stream.len()));
                }
            }
        }
        FlowModel {
            client,
            server,
            // Distinct per flow and never a DNS port.
            client_port: 1024 + u16::from(spec.port) * 2 + i as u16,
            isn: spec.isn,
            dirs,
            noisy: false,
            cut: false,
            later_than_close: false,
            first_ts: None,
        }
    }

    fn packet(&self, dir: usize, seq: u32, flags: u8, payload: &[u8], captured: usize) -> Vec<u8> {
        let (src, dst, sport, dport) = if dir == 0 {
            (self.client, self.server, self.client_port, SERVER_PORT)
        } else {
            (self.server, self.client, SERVER_PORT, self.client_port)
        };
        tcp_packet(src, dst, sport, dport, seq, flags, payload, captured)
    }

    fn seq_at(&self, dir: usize, offset: usize) -> u32 {
        self.isn[dir].wrapping_add(1).wrapping_add(offset as u32)
    }

    /// A truthful segment of stream bytes [start, end) with `captured` of them kept.
    fn segment(
        &mut self,
        dir: usize,
        start: usize,
        end: usize,
        captured: usize,
        fin: bool,
    ) -> Vec<u8> {
        let flags = ACK | PSH | if fin { FIN } else { 0 };
        let pkt = {
            let d = &self.dirs[dir];
            let payload = &d.stream[start..end];
            self.packet(dir, self.seq_at(dir, start), flags, payload, captured)
        };
        let active = !self.cut;
        let d = &mut self.dirs[dir];
        d.last_seg = Some((start, end));
        if captured >= end - start && end > start {
            d.sent.push((start, end));
        }
        if active {
            if end > start {
                if !d.based && start != 0 {
                    d.misbased = true;
                }
                d.based = true;
                d.covered.push((start, start + captured.min(end - start)));
                if captured < end - start {
                    d.any_truncation = true;
                    let lost = start + captured;
                    d.lost_from = Some(d.lost_from.map_or(lost, |l| l.min(lost)));
                }
            }
            if fin {
                // A FIN in a direction the decoder has no start for closes it at once.
                let at = if d.based { end } else { 0 };
                d.fin_at = Some(d.fin_at.map_or(at, |f| f.min(at)));
            }
        }
        pkt
    }

    /// SYN (client) or SYN-ACK (server), carrying stream bytes [0, end) (TFO).
    fn syn(&mut self, dir: usize, end: usize) -> Vec<u8> {
        let started = self.dirs.iter().any(|d| d.based);
        if dir == 0 && started && !self.dirs[0].syn {
            // The decoder takes it for a new connection on the same ports.
            self.cut = true;
        }
        let flags = if dir == 0 { SYN } else { SYN | ACK };
        let pkt = {
            let payload = &self.dirs[dir].stream[..end];
            self.packet(dir, self.isn[dir], flags, payload, payload.len())
        };
        let cut = self.cut;
        let d = &mut self.dirs[dir];
        if !cut {
            d.syn = true;
            d.based = true;
            d.covered.push((0, end));
        }
        if end > 0 {
            d.sent.push((0, end));
        }
        d.last_seg = Some((0, end));
        d.cursor = d.cursor.max(end);
        pkt
    }

    /// Sends the first hole at or after the cursor, skipping what was already sent (a sender
    /// with SACK), and moves the cursor past everything sent contiguously after it. `None`
    /// when everything from the cursor to the end of the stream was sent.
    fn fill(&mut self, dir: usize, fin: bool) -> Option<Vec<u8>> {
        let d = &self.dirs[dir];
        let mut sorted = d.sent.clone();
        sorted.sort_unstable();
        let reach_from = |mut pos: usize| {
            for &(s, e) in &sorted {
                if s <= pos {
                    pos = pos.max(e);
                }
            }
            pos
        };
        let start = reach_from(d.cursor);
        let len = d.stream.len();
        if start >= len {
            self.dirs[dir].cursor = len;
            return None;
        }
        let end = sorted
            .iter()
            .map(|&(s, _)| s)
            .filter(|&s| s > start)
            .min()
            .unwrap_or(len)
            .min(len);
        let next = reach_from(end);
        let pkt = self.segment(dir, start, end, end - start, fin);
        self.dirs[dir].cursor = next;
        Some(pkt)
    }

    /// Offset up to which the direction's stream arrived intact and undisturbed.
    fn clean_limit(&self, dir: usize) -> Option<usize> {
        let d = &self.dirs[dir];
        if self.noisy || d.misbased {
            return None;
        }
        let mut ranges = d.covered.clone();
        ranges.sort_unstable();
        let mut reach = 0;
        for (s, e) in ranges {
            if s > reach {
                break;
            }
            reach = reach.max(e);
        }
        let mut limit = reach.min(d.stream.len());
        if let Some(l) = d.lost_from {
            limit = limit.min(l);
        }
        if let Some(f) = d.fin_at {
            limit = limit.min(f);
        }
        Some(limit)
    }

    /// The whole stream arrived intact and nothing disturbed the connection.
    fn complete(&self, dir: usize) -> bool {
        let d = &self.dirs[dir];
        !self.cut
            && !self.later_than_close
            && !d.any_truncation
            && self.clean_limit(dir) == Some(d.stream.len())
    }
}

fn build(input: &Input) -> (Vec<FlowModel>, Vec<Action>) {
    let mut flows: Vec<FlowModel> = input
        .flows
        .iter()
        .enumerate()
        .map(|(i, s)| FlowModel::new(i, s))
        .collect();
    let mut actions = Vec::new();
    let mut ts: i64 = 1_704_067_200_000_000_000;
    let send = |f: &mut FlowModel, ts: i64, pkt: Vec<u8>, actions: &mut Vec<Action>| {
        f.first_ts.get_or_insert(ts);
        if f.dirs.iter().all(|d| d.fin_at.is_some()) {
            f.later_than_close = true;
        }
        actions.push(Action::Packet(ts, pkt));
    };
    if input.handshake {
        for f in flows.iter_mut() {
            for dir in 0..2 {
                ts += 1_000_000;
                let pkt = f.syn(dir, 0);
                send(f, ts, pkt, &mut actions);
            }
        }
    }
    for op in input.ops.iter().take(MAX_OPS) {
        ts += 1_000_000;
        let fi = usize::from(op.second_flow);
        let dir = usize::from(op.from_server);
        let f = &mut flows[fi];
        let len_of = |n: u16| usize::from(n) % 1500;
        let stream_len = f.dirs[dir].stream.len();
        let cursor = f.dirs[dir].cursor;
        let pkt = match op.kind {
            OpKind::Next { len, fin } => {
                let end = (cursor + len_of(len)).min(stream_len);
                f.dirs[dir].cursor = end;
                Some(f.segment(dir, cursor, end, end - cursor, fin))
            }
            OpKind::Back { back, len, fin } => {
                let start = cursor.saturating_sub(usize::from(back) % 2048);
                let end = (start + len_of(len)).min(stream_len);
                f.dirs[dir].cursor = cursor.max(end);
                Some(f.segment(dir, start, end, end - start, fin))
            }
            OpKind::Ahead { ahead, len, fin } => {
                let start = (cursor + usize::from(ahead) % 2048).min(stream_len);
                let end = (start + len_of(len)).min(stream_len);
                Some(f.segment(dir, start, end, end - start, fin))
            }
            OpKind::Truncated { len, captured } => {
                let end = (cursor + len_of(len)).min(stream_len);
                f.dirs[dir].cursor = end;
                let n = end - cursor;
                let captured = if n == 0 { 0 } else { usize::from(captured) % n };
                Some(f.segment(dir, cursor, end, captured, false))
            }
            OpKind::Skip { len } => {
                f.dirs[dir].cursor = (cursor + len_of(len)).min(stream_len);
                None
            }
            OpKind::Resend { len, fin } => match f.dirs[dir].last_seg {
                Some((start, end)) => {
                    let end = start + usize::from(len) % (end - start + 1);
                    Some(f.segment(dir, start, end, end - start, fin))
                }
                None => None,
            },
            OpKind::Fill { fin } => f.fill(dir, fin),
            OpKind::Syn { data } => {
                let end = (usize::from(data) % 600).min(stream_len);
                Some(f.syn(dir, end))
            }
            OpKind::Fin => Some(f.segment(dir, cursor, cursor, 0, true)),
            OpKind::Rst => {
                let pkt = f.packet(dir, f.seq_at(dir, cursor), RST | ACK, &[], 0);
                f.cut = true;
                Some(pkt)
            }
            OpKind::Expire {
                advance_ms,
                idle_ms,
            } => {
                ts += i64::from(advance_ms) * 1_000_000;
                let idle = i64::from(idle_ms) * 1_000_000;
                let cutoff = ts - idle;
                for f in flows.iter_mut() {
                    if f.first_ts.is_some_and(|t| t < cutoff) {
                        f.cut = true;
                    }
                }
                actions.push(Action::Expire(ts, idle));
                None
            }
            OpKind::Noise {
                seq,
                flags,
                ref data,
            } => {
                f.noisy = true;
                let data = &data[..data.len().min(1500)];
                Some(f.packet(dir, seq, flags, data, data.len()))
            }
        };
        if let Some(pkt) = pkt {
            send(&mut flows[fi], ts, pkt, &mut actions);
        }
    }
    if input.deliver_all {
        for f in flows.iter_mut() {
            for dir in 0..2 {
                f.dirs[dir].cursor = 0;
                while let Some(pkt) = f.fill(dir, false) {
                    ts += 1_000_000;
                    send(f, ts, pkt, &mut actions);
                }
            }
        }
    }
    // A packet after the FIN of both directions is the one that may start a new connection;
    // `later_than_close` is set one packet early, which only makes the check weaker.
    (flows, actions)
}

/// Heap bytes a message owns.
fn msg_heap(m: &DnsMessage) -> usize {
    m.bytes.capacity() + m.capture_error.as_ref().map_or(0, String::capacity)
}

/// Checks one input given as bytes, decoded as `fuzz_target!(|input: Input| ...)` does (too
/// short or undecodable inputs are skipped, as libFuzzer's typed targets reject them).
pub fn run(data: &[u8]) {
    if data.len() < Input::size_hint(0).0 {
        return;
    }
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        check(&input);
    }
}

/// Checks one decoded input; panics on a violated invariant.
pub fn check(input: &Input) {
    let (flows, actions) = build(input);
    let limits = if input.small_limits {
        DecoderLimits {
            max_tcp_flows: 1,
            max_tcp_ooo_bytes: 200,
            max_tcp_buffered_bytes: 1000,
            max_frag_datagrams: 1,
            max_frag_bytes: 1000,
        }
    } else {
        DecoderLimits::default()
    };
    let packet_bytes: usize = actions
        .iter()
        .map(|a| match a {
            Action::Packet(_, p) => p.len(),
            Action::Expire(..) => 0,
        })
        .sum();
    let mut emitted: Vec<DnsMessage> = Vec::with_capacity(packet_bytes + 4 * actions.len() + 16);
    let mut decoder = Decoder::with_limits(PortSet::new(&[SERVER_PORT]).expect("port"), limits);

    // Heap: what the decoder holds (plus what it allocates while working) stays linear in
    // what it was fed. Messages it hands out are not its own and are subtracted.
    let measure = heap_counting();
    let mark = heap_mark();
    let mut retained = 0usize;
    let mut fed = 0usize;
    let mut packets = 0usize;
    let n_actions = actions.len();
    for (i, action) in actions.iter().enumerate() {
        let last = i + 1 == n_actions;
        let mut out = Vec::new();
        let _ = heap_mark_keep(mark);
        match action {
            Action::Packet(ts, data) => {
                fed += data.len();
                packets += 1;
                let pkt = RawPacket {
                    ts_ns: *ts,
                    direction: Direction::Unknown,
                    side: dnsledger::capture::Side::Unknown,
                    owner: None,
                    sock_cookie: 0,
                    wire_len: data.len() as u32,
                    data,
                };
                decoder.push(&pkt, &mut out);
            }
            Action::Expire(now, idle) => decoder.expire(*now, *idle, &mut out),
        }
        if last {
            decoder.finish(&mut out);
        }
        let new_out: usize =
            out.iter().map(msg_heap).sum::<usize>() + out.capacity() * size_of::<DnsMessage>();
        let peak = heap_peak_since(mark).saturating_sub(retained);
        let bound = (1 << 20) + 4 * fed + 512 * packets + new_out;
        assert!(
            !measure || peak <= bound,
            "decoder heap {peak} bytes after {fed} bytes in {packets} packets (bound {bound})"
        );
        retained += out.iter().map(msg_heap).sum::<usize>();
        emitted.append(&mut out);
    }
    if actions.is_empty() {
        decoder.finish(&mut emitted);
    }
    let stats = decoder.stats();
    check_stats(&stats, &emitted);
    let ports = PortSet::new(&[SERVER_PORT]).expect("port");
    for m in &emitted {
        check_message(&ports, m);
        assert_eq!(m.flow.transport, Transport::Tcp);
    }
    if input.small_limits {
        return;
    }

    let stats_on = oracle_stats();
    for (fi, f) in flows.iter().enumerate() {
        for dir in 0..2 {
            let from_client = dir == 0;
            let got: Vec<&DnsMessage> = emitted
                .iter()
                .filter(|m| {
                    m.flow.client_port == f.client_port
                        && m.flow.client_ip == f.client
                        && m.from_client == from_client
                })
                .collect();
            let Some(limit) = f.clean_limit(dir) else {
                continue;
            };
            let d = &f.dirs[dir];
            let clean: Vec<&[u8]> = d
                .bodies
                .iter()
                .take_while(|&&(_, end)| end <= limit)
                .map(|&(s, e)| &d.stream[s..e])
                .collect();
            assert!(
                got.len() >= clean.len(),
                "flow {fi} dir {dir}: {} of {} intact messages emitted (limit {limit})",
                got.len(),
                clean.len()
            );
            for (i, (m, want)) in got.iter().zip(&clean).enumerate() {
                assert_eq!(
                    m.capture_error, None,
                    "flow {fi} dir {dir}: intact message {i} has a capture error"
                );
                assert_eq!(
                    m.bytes, *want,
                    "flow {fi} dir {dir}: intact message {i} differs"
                );
                assert_eq!(m.wire_len as usize, want.len());
            }
            if stats_on {
                eprintln!(
                    "oracle flow {fi} dir {dir}: clean {} of {} messages, complete {}, emitted {}",
                    clean.len(),
                    d.bodies.len(),
                    f.complete(dir),
                    got.len()
                );
            }
            if f.complete(dir) {
                assert_eq!(
                    got.len(),
                    d.bodies.len(),
                    "flow {fi} dir {dir}: whole stream arrived, {} messages emitted, {} sent",
                    got.len(),
                    d.bodies.len()
                );
            }
        }
    }
}

/// `TCP_ORACLE_STATS=1` prints what the model checked for each input (to see that the
/// invariants are not vacuous).
fn oracle_stats() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("TCP_ORACLE_STATS").is_some())
}

/// Resets the heap high-water mark to the live heap, keeping `mark` as the reference.
fn heap_mark_keep(mark: isize) -> isize {
    let live = heap_mark();
    live.saturating_sub(mark)
}
