//! The dnsledger fuzz targets and their shared code.
//!
//! Each target's checking logic is a module with a `run(data: &[u8])` entry point:
//! [`dns_parse`], [`decode_pair`], [`tcp_reassembly`]. The libFuzzer binaries in
//! `fuzz_targets/` (feature `libfuzzer`, built by `cargo fuzz`) only call it, and so does the
//! replay test (`tests/replay.rs`), which feeds every committed corpus input and artifact
//! through it in the ordinary `cargo test --workspace`.
//!
//! Shared here: the `decode_pair` input framing (also used by the corpus generator),
//! invariant checks, packet builders and a heap-measuring allocator.

pub mod decode_pair;
pub mod dns_parse;
pub mod tcp_reassembly;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use dnsledger::capture::{Direction, KernelOwner, RawPacket};
use dnsledger::decode::DnsMessage;
use dnsledger::decode::{DecodeStats, DecoderLimits, PortSet};
use dnsledger::dns::{self, ParsedDns};
use dnsledger_schema::names;

// -------------------------------------------------------------------------------------------
// decode_pair input framing
//
// byte 0      configuration (see `PipelineConfig::from_byte`)
// bytes 1..3  a custom DNS port (big-endian), used by port-set choice 3
// then records, each:
//   byte  flags   bits 0-1 direction (0 egress, 1 ingress, 2-3 unknown)
//                 bit 2    an owner (KernelOwner) is attached
//                 bit 3    socket cookie 1 instead of 0
//                 bits 4-5 wire_len: 0 = data length, 1 = data length + u16 extra (follows the
//                          length field), 2 = data length + 1500, 3 = u32::MAX
//                 bit 6    run Decoder::expire and Pairer::expire after this packet
//                 bit 7    the timestamp steps backwards
//   byte  ts step, in units of 50 ms
//   u16   data length (big-endian)
//   [u16  extra wire length, when wire_len mode is 1]
//   data  L3 packet bytes (cut short by the end of the input)

/// Time unit of the per-record timestamp step.
pub const TS_STEP_NS: i64 = 50_000_000;
/// Start of the timeline (2024-01-01T00:00:00Z): segments partition by hour, so keep it sane.
pub const TS_START_NS: i64 = 1_704_067_200_000_000_000;

/// Pipeline settings taken from the first input byte.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub keep_raw: bool,
    pub ports: PortSet,
    pub limits: DecoderLimits,
    /// Idle time after which Decoder::expire flushes state, when a record asks for it.
    pub idle_ns: i64,
    /// Pairer timeout.
    pub timeout_ns: i64,
}

impl PipelineConfig {
    pub fn from_bytes(cfg: u8, custom_port: u16) -> Self {
        let ports = match (cfg >> 1) & 3 {
            0 => PortSet::standard(),
            1 => PortSet::new(&[53]).expect("valid"),
            2 => PortSet::new(&[53, 853, 5353, 5355, 1053]).expect("valid"),
            _ => PortSet::new(&[custom_port.max(1), 53]).expect("valid"),
        };
        let limits = if cfg & 0x08 != 0 {
            // Tiny limits: every eviction path runs on small inputs.
            DecoderLimits {
                max_tcp_flows: 3,
                max_tcp_ooo_bytes: 300,
                max_tcp_buffered_bytes: 1500,
                max_frag_datagrams: 3,
                max_frag_bytes: 2000,
            }
        } else {
            DecoderLimits::default()
        };
        PipelineConfig {
            keep_raw: cfg & 0x01 != 0,
            ports,
            limits,
            idle_ns: if cfg & 0x10 != 0 { 0 } else { 2_000_000_000 },
            timeout_ns: if cfg & 0x20 != 0 { 1 } else { 5_000_000_000 },
        }
    }
}

/// One record of a `decode_pair` input, decoded.
#[derive(Clone, Debug)]
pub struct Record<'a> {
    pub ts_ns: i64,
    pub direction: Direction,
    pub owner: Option<KernelOwner>,
    pub sock_cookie: u64,
    pub wire_len: u32,
    pub expire: bool,
    pub data: &'a [u8],
}

impl Record<'_> {
    pub fn raw(&self) -> RawPacket<'_> {
        RawPacket {
            ts_ns: self.ts_ns,
            direction: self.direction,
            side: dnsledger::capture::Side::Client,
            owner: self.owner,
            sock_cookie: self.sock_cookie,
            wire_len: self.wire_len,
            data: self.data,
        }
    }
}

/// Splits a `decode_pair` input into its configuration and records.
pub fn parse_pipeline_input(input: &[u8]) -> (PipelineConfig, Vec<Record<'_>>) {
    let cfg = input.first().copied().unwrap_or(0);
    let port = match input.get(1..3) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => 53,
    };
    let config = PipelineConfig::from_bytes(cfg, port);
    let mut rest = input.get(3..).unwrap_or(&[]);
    let mut ts = TS_START_NS;
    let mut records = Vec::new();
    while let [flags, step, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let wire_mode = (flags >> 4) & 3;
        let (extra, tail) = match (wire_mode, tail) {
            (1, [a, b, t @ ..]) => (u32::from(u16::from_be_bytes([*a, *b])), t),
            (1, _) => (0, &[][..]),
            _ => (0, tail),
        };
        let data = &tail[..len.min(tail.len())];
        rest = &tail[data.len()..];
        let step_ns = i64::from(*step) * TS_STEP_NS;
        ts = if flags & 0x80 != 0 {
            ts - step_ns
        } else {
            ts + step_ns
        };
        let dlen = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let wire_len = match wire_mode {
            0 => dlen,
            1 => dlen.saturating_add(extra),
            2 => dlen.saturating_add(1500),
            _ => u32::MAX,
        };
        let owner = (flags & 0x04 != 0).then_some(KernelOwner {
            pid: 4242,
            tid: 4243,
            uid: 1000,
            gid: 1000,
            cgroup_id: 77,
            netns: 4026531840,
            comm: *b"fuzz\0\0\0\0\0\0\0\0\0\0\0\0",
        });
        records.push(Record {
            ts_ns: ts,
            direction: match flags & 3 {
                0 => Direction::Egress,
                1 => Direction::Ingress,
                _ => Direction::Unknown,
            },
            owner,
            sock_cookie: u64::from((flags >> 3) & 1),
            wire_len,
            expire: flags & 0x40 != 0,
            data,
        });
    }
    (config, records)
}

/// Encodes packets (timestamp, wire length, L3 bytes) as a `decode_pair` input with the given
/// configuration byte (the inverse of [`parse_pipeline_input`], for seeds).
pub fn encode_pipeline_input(cfg: u8, packets: &[(i64, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![cfg, 0, 53];
    let mut last_ts: Option<i64> = None;
    for (ts, wire_len, data) in packets {
        let data = &data[..data.len().min(usize::from(u16::MAX))];
        let step = match last_ts {
            Some(prev) => ((ts - prev).max(0) / TS_STEP_NS).min(255) as u8,
            None => 0,
        };
        last_ts = Some(*ts);
        let extra = (*wire_len as usize).saturating_sub(data.len());
        let (mode, extra) = match extra {
            0 => (0u8, None),
            n => (1u8, Some(u16::try_from(n).unwrap_or(u16::MAX))),
        };
        out.push(2 | (mode << 4));
        out.push(step);
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        if let Some(e) = extra {
            out.extend_from_slice(&e.to_be_bytes());
        }
        out.extend_from_slice(data);
    }
    out
}

// -------------------------------------------------------------------------------------------
// Invariants

/// Checks what must hold of every [`dns::parse`] result, whatever the input.
pub fn check_parsed(bytes: &[u8], p: &ParsedDns) {
    let n = bytes.len();
    // Header fields are present exactly when their bytes are.
    assert_eq!(p.id.is_some(), n >= 2, "id presence");
    for present in [
        p.qr.is_some(),
        p.opcode.is_some(),
        p.rcode.is_some(),
        p.rcode_name.is_some(),
        p.aa.is_some(),
        p.tc.is_some(),
        p.rd.is_some(),
        p.ra.is_some(),
        p.ad.is_some(),
        p.cd.is_some(),
    ] {
        assert_eq!(present, n >= 4, "flag presence");
    }
    assert_eq!(p.qdcount.is_some(), n >= 6);
    assert_eq!(p.ancount.is_some(), n >= 8);
    assert_eq!(p.nscount.is_some(), n >= 10);
    assert_eq!(p.arcount.is_some(), n >= 12);
    assert_eq!(p.has_header(), n >= dns::HEADER_LEN);
    if n < dns::HEADER_LEN {
        assert!(p.parse_error.is_some(), "short message without parse_error");
        assert!(p.questions.is_empty() && p.answers.is_empty() && p.qname.is_none());
        assert!(p.edns.is_none());
    }
    if let Some(id) = p.id {
        assert_eq!(id, u16::from_be_bytes([bytes[0], bytes[1]]));
    }
    if let Some(op) = p.opcode {
        assert!(op < 16);
        assert_eq!(op, (bytes[2] >> 3) & 0xF);
    }
    // rcode: 4 header bits, extended by 8 OPT bits only when an OPT record was read.
    if let Some(rcode) = p.rcode {
        assert_eq!(rcode & 0xF, u16::from(bytes[3] & 0xF));
        if p.edns.is_none() {
            assert!(rcode < 16, "extended rcode without OPT");
        }
        assert!(rcode < 4096);
        assert_eq!(p.rcode_name.as_deref(), Some(names::rcode(rcode).as_ref()));
    }
    // Sections: never more than declared; exactly as declared when nothing went wrong.
    let qd = usize::from(p.qdcount.unwrap_or(0));
    let an = usize::from(p.ancount.unwrap_or(0));
    assert!(p.questions.len() <= qd, "more questions than qdcount");
    assert!(p.answers.len() <= an, "more answers than ancount");
    assert!(p.answer_ips.len() <= p.answers.len());
    if p.parse_error.is_none() {
        assert_eq!(
            p.questions.len(),
            qd,
            "questions missing without parse_error"
        );
        assert_eq!(p.answers.len(), an, "answers missing without parse_error");
    }
    if p.edns.is_some() {
        assert!(
            p.arcount.unwrap_or(0) >= 1,
            "OPT without additional records"
        );
    }
    // The first-question columns.
    if p.qname.is_some() {
        assert!(qd >= 1, "qname without a question");
    } else {
        assert!(p.questions.is_empty(), "questions without qname");
        assert!(p.qtype.is_none() && p.qclass.is_none());
    }
    if let Some(q0) = p.questions.first() {
        assert_eq!(
            p.qname.as_deref(),
            Some(q0.name.as_str()),
            "qname != questions[0]"
        );
        assert_eq!(p.qtype, Some(q0.qtype));
        assert_eq!(p.qclass, Some(q0.qclass));
    }
    assert_eq!(p.qtype.is_some(), p.qtype_name.is_some());
    if let Some(t) = p.qtype {
        assert_eq!(p.qtype_name.as_deref(), Some(names::rtype(t).as_ref()));
    }
    if p.qclass.is_some() {
        assert!(p.qtype.is_some(), "qclass without qtype");
    }
    // Text conventions.
    if let Some(name) = &p.qname {
        check_name(name);
        let _ = dnsledger_schema::dnstext::registered_domain(name);
    }
    for q in &p.questions {
        check_name(&q.name);
    }
    for a in &p.answers {
        check_name(&a.name);
        assert!(!a.rtype.is_empty());
        assert!(!a.data.is_empty(), "empty rdata text");
    }
    for ip in &p.answer_ips {
        ip.parse::<IpAddr>().expect("answer_ips holds addresses");
        assert!(
            p.answers.iter().any(|a| a.data == *ip),
            "answer ip {ip} not among the answers"
        );
    }
    if let Some(e) = &p.edns {
        if let Some(t) = &e.ede_text {
            assert!(!t.is_empty());
        }
        assert!(e.ede_text.is_none() || e.ede_code.is_some());
    }
    if let Some(e) = &p.parse_error {
        assert!(!e.is_empty());
    }
}

/// A rendered name: non-empty, printable ASCII, lower case, no trailing dot except the root.
pub fn check_name(name: &str) {
    assert!(!name.is_empty(), "empty name");
    assert!(
        name.bytes().all(|b| (0x21..=0x7E).contains(&b)),
        "non-printable byte in name {name:?}"
    );
    assert!(
        !name.bytes().any(|b| b.is_ascii_uppercase()),
        "upper case in name {name:?}"
    );
    if name != "." {
        assert!(!name.starts_with('.'), "empty first label in {name:?}");
        let trailing_dot = name.ends_with('.') && !ends_with_escaped_dot(name);
        assert!(!trailing_dot, "trailing dot in {name:?}");
    }
}

fn ends_with_escaped_dot(name: &str) -> bool {
    // An odd number of backslashes before the final dot means the dot is escaped.
    let b = name.as_bytes();
    let slashes = b[..b.len() - 1]
        .iter()
        .rev()
        .take_while(|&&c| c == b'\\')
        .count();
    slashes % 2 == 1
}

/// Checks what must hold of every message a decoder emits.
pub fn check_message(ports: &PortSet, m: &DnsMessage) {
    assert!(
        m.bytes.len() <= m.wire_len as usize,
        "message longer than its wire length"
    );
    if m.capture_error.is_none() {
        assert_eq!(
            m.bytes.len(),
            m.wire_len as usize,
            "short message without capture_error"
        );
    }
    let f = &m.flow;
    assert_eq!(f.client_ip.is_ipv4(), f.server_ip.is_ipv4());
    assert!(
        ports.contains(f.server_port) || ports.contains(f.client_port),
        "message on a flow without a DNS port"
    );
}

/// Decoder counters against what it emitted.
pub fn check_stats(stats: &DecodeStats, msgs: &[DnsMessage]) {
    assert_eq!(
        (stats.udp_messages + stats.tcp_messages) as usize,
        msgs.len(),
        "message counters"
    );
    assert_eq!(
        stats.messages_with_error as usize,
        msgs.iter().filter(|m| m.capture_error.is_some()).count()
    );
}

// -------------------------------------------------------------------------------------------
// Packet builders

/// TCP flag bits.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// An IPv4 or IPv6 packet carrying a TCP segment. `captured` bytes of `payload` are included;
/// the IP length fields declare all of it.
#[allow(clippy::too_many_arguments)]
pub fn tcp_packet(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    flags: u8,
    payload: &[u8],
    captured: usize,
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20 + payload.len());
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&0u32.to_be_bytes()); // ack number
    tcp.push(5 << 4);
    tcp.push(flags);
    tcp.extend_from_slice(&65535u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    let full = tcp.len() + payload.len();
    tcp.extend_from_slice(&payload[..captured.min(payload.len())]);
    ip_packet(src, dst, 6, full, &tcp)
}

/// Wraps `l4` (of declared length `declared`) in an IP header.
pub fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, declared: usize, l4: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(40 + l4.len());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.push(0x45);
            p.push(0);
            p.extend_from_slice(&((20 + declared) as u16).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(declared as u16).to_be_bytes());
            p.push(proto);
            p.push(64);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed address families"),
    }
    p.extend_from_slice(l4);
    p
}

// -------------------------------------------------------------------------------------------
// Heap measurement

/// A global allocator that counts the heap bytes each thread allocated and freed, and their
/// high-water mark. Per thread, so that replay tests running in parallel threads do not see
/// each other's allocations. It can only measure when installed with `#[global_allocator]`
/// in the final binary (the `tcp_reassembly` fuzz target, the replay test):
/// [`heap_counting`] tells whether it is.
pub struct CountingAlloc;

static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    // Const-initialised and without destructors: no allocation, usable at any time.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(delta);
        live.set(now);
        if delta > 0 {
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        }
    });
}

fn size(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

// SAFETY: defers to the system allocator; only adds bookkeeping (which does not allocate).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            if !INSTALLED.load(Ordering::Relaxed) {
                INSTALLED.store(true, Ordering::Relaxed);
            }
            count(size(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        count(-size(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(size(new_size) - size(layout.size()));
        }
        p
    }
}

/// Whether [`CountingAlloc`] is the global allocator of this binary (it has allocated).
pub fn heap_counting() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Starts a measurement: returns this thread's live bytes now and resets its high-water mark
/// to it.
pub fn heap_mark() -> isize {
    let live = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(live));
    live
}

/// Most bytes this thread had live above `mark` since [`heap_mark`] returned it.
pub fn heap_peak_since(mark: isize) -> usize {
    usize::try_from(PEAK.with(Cell::get).saturating_sub(mark)).unwrap_or(0)
}
