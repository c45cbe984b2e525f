//! Step 2 of the path: **[`RawPacket`]s (L3 bytes) in, whole [`DnsMessage`]s out** — IP
//! (`ip.rs`), fragment reassembly (`frag.rs`), UDP (`udp.rs`) and TCP stream reassembly (`tcp.rs`).
//! What leaves is handed to [`crate::dns`] (parsing) and [`crate::pair`] (pairing).
//!
//! The [`Decoder`] is fed packets in capture order and appends every DNS message it can cut out of
//! them. It never validates checksums (the BPF source sees packets before the NIC fills them in),
//! never panics on malformed input, and keeps bounded state:
//!
//! * **UDP**: one message per datagram; a datagram cut short by the capture becomes a message
//!   with `capture_error` set.
//! * **IP fragments** (IPv4 and IPv6) are reassembled, keyed by (source, destination,
//!   identification, protocol). A datagram whose fragments never all arrive still becomes a
//!   message from the contiguous bytes that did, as long as its first fragment (which carries
//!   the UDP or TCP header) arrived. Fragments whose first fragment never arrives cannot be
//!   attributed to a flow, or even known to be DNS: they are counted in
//!   [`DecodeStats::orphan_fragments`] and dropped.
//! * **TCP**: per connection and direction, the byte stream is rebuilt from sequence numbers
//!   (duplicates dropped, out-of-order segments held back until the gap before them fills), the
//!   2-byte length prefixes are stripped, and each message is emitted once complete, stamped
//!   with the time of the packet that completed it (for held-back segments: the packet that
//!   filled the gap, i.e. when the stream became readable). Data lost from the capture (a gap
//!   that never fills, or a segment cut by the capture cap) turns the message it hits into a
//!   partial message with `capture_error`. If the message's length is known the framing
//!   survives the gap; otherwise it resumes at the next segment that starts with a plausible
//!   length prefix and DNS header.
//! * Packets whose IP length field is 0 (TSO/GSO and BIG TCP packets from the kernel, IPv6
//!   jumbograms) take their length from [`RawPacket::wire_len`].
//!
//! Partial state is flushed, never silently dropped, by FIN/RST, [`Decoder::expire`],
//! [`Decoder::finish`] and eviction when a memory limit ([`DecoderLimits`]) is reached.
//!
//! Orientation: the server is the endpoint whose port is in the [`PortSet`]. When both ports
//! are (mDNS 5353 <-> 5353, LLMNR), a UDP datagram's direction comes from the DNS QR bit (a
//! query travels client -> server); a TCP connection's from its SYN, else from the QR bit of the
//! first message; when nothing tells, the destination is the server.
//!
//! IP defragmentation is hand-written rather than taken from `etherparse::defrag`: its
//! `IpDefragPool` has no memory bounds (its own documentation says so) and discards incomplete
//! datagrams on `retain` without handing back the bytes that did arrive, and `IpDefragBuf`
//! grows its buffer over uninitialised memory, so reading the arrived bytes of an incomplete
//! datagram (which we must report) is not sound. Header parsing uses etherparse's slices.

mod frag;
mod ip;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::net::IpAddr;

use crate::capture::abi::MAX_PORTS;
use crate::capture::{KernelOwner, RawPacket, Side};
use frag::{FragBuf, FragKey};
use tcp::{Sink, TcpFlow, flows_by_age};

/// Errors building decoder configuration.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("no DNS ports given: name at least one port")]
    NoPorts,
    #[error("too many DNS ports: {count} given, at most {MAX_PORTS} are supported")]
    TooManyPorts { count: usize },
    #[error("port 0 is not a valid DNS port")]
    PortZero,
}

/// Up to 16 DNS ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSet {
    ports: [u16; MAX_PORTS],
    len: usize,
}

impl PortSet {
    /// The ports, deduplicated (order kept). Fails on an empty list, port 0, or more than
    /// [`MAX_PORTS`] distinct ports.
    pub fn new(ports: &[u16]) -> Result<Self, DecodeError> {
        if ports.is_empty() {
            return Err(DecodeError::NoPorts);
        }
        if ports.contains(&0) {
            return Err(DecodeError::PortZero);
        }
        let mut distinct: Vec<u16> = Vec::with_capacity(ports.len());
        for &p in ports {
            if !distinct.contains(&p) {
                distinct.push(p);
            }
        }
        if distinct.len() > MAX_PORTS {
            return Err(DecodeError::TooManyPorts {
                count: distinct.len(),
            });
        }
        let mut set = PortSet {
            ports: [0; MAX_PORTS],
            len: distinct.len(),
        };
        for (slot, p) in set.ports.iter_mut().zip(distinct) {
            *slot = p;
        }
        Ok(set)
    }

    /// DNS (53), mDNS (5353) and LLMNR (5355).
    pub fn standard() -> Self {
        PortSet {
            ports: [53, 5353, 5355, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            len: 3,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.as_slice().contains(&port)
    }

    pub fn as_slice(&self) -> &[u16] {
        self.ports.get(..self.len).unwrap_or(&[])
    }
}

/// Memory bounds of a [`Decoder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderLimits {
    /// TCP connections tracked at once; beyond it the least recently active are flushed and
    /// forgotten. Default 16384.
    pub max_tcp_flows: usize,
    /// Out-of-order bytes held per TCP direction while a gap before them is open; beyond it the
    /// gap is given up on. Default 256 KiB.
    pub max_tcp_ooo_bytes: usize,
    /// Bytes held across all TCP connections (out-of-order data and partial messages); beyond
    /// it the least recently active connections are flushed. Default 64 MiB.
    pub max_tcp_buffered_bytes: usize,
    /// IP datagrams in reassembly at once; beyond it the oldest are flushed. Default 4096.
    pub max_frag_datagrams: usize,
    /// Bytes held in IP reassembly buffers; beyond it the oldest are flushed. Default 32 MiB.
    pub max_frag_bytes: usize,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        DecoderLimits {
            max_tcp_flows: 16_384,
            max_tcp_ooo_bytes: 256 * 1024,
            max_tcp_buffered_bytes: 64 * 1024 * 1024,
            max_frag_datagrams: 4096,
            max_frag_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Counters of a [`Decoder`], cumulative since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Packets pushed.
    pub packets: u64,
    /// Packets that start with neither an IPv4 nor an IPv6 header.
    pub not_ip: u64,
    /// Packets whose IP header (or an IPv6 extension header) is malformed or cut short.
    pub malformed_ip: u64,
    /// IP packets (or reassembled datagrams) carrying neither UDP nor TCP.
    pub other_protocol: u64,
    /// UDP or TCP headers that are malformed or cut short.
    pub malformed_transport: u64,
    /// UDP datagrams and TCP segments with no DNS port (reassembled datagrams count once).
    pub not_dns: u64,
    /// DNS messages emitted from UDP.
    pub udp_messages: u64,
    /// UDP datagrams with a DNS port but no payload (UDP length 8): no message to emit.
    pub udp_empty: u64,
    /// DNS messages emitted from TCP.
    pub tcp_messages: u64,
    /// Emitted messages with `capture_error` set.
    pub messages_with_error: u64,
    /// IP fragments received.
    pub fragments: u64,
    /// Datagrams reassembled from all their fragments.
    pub reassembled: u64,
    /// Datagrams flushed with fragments missing (by expiry, end of input or eviction).
    pub incomplete_datagrams: u64,
    /// Fragments dropped because their datagram's first fragment never arrived.
    pub orphan_fragments: u64,
    /// Fragments ignored as inconsistent (conflicting end, beyond 64 KiB).
    pub bad_fragments: u64,
    /// Datagrams in reassembly flushed early to stay within [`DecoderLimits`].
    pub fragment_evictions: u64,
    /// TCP segments with a DNS port.
    pub tcp_segments: u64,
    /// TCP connections tracked.
    pub tcp_flows: u64,
    /// TCP segments carrying only bytes already seen (retransmissions).
    pub tcp_duplicates: u64,
    /// TCP segments that arrived ahead of a gap and were held back.
    pub tcp_out_of_order: u64,
    /// Gaps in TCP streams given up on (data missing from the capture, or cut by its cap).
    pub tcp_gaps: u64,
    /// Bytes lost in those gaps.
    pub tcp_gap_bytes: u64,
    /// Times the message framing was lost after a gap and resumed at the next segment.
    pub tcp_resyncs: u64,
    /// Bytes skipped while the framing was lost.
    pub tcp_unframed_bytes: u64,
    /// Zero-length TCP messages (a 0x0000 length prefix; nothing to emit).
    pub tcp_empty_messages: u64,
    /// Streams that ended after only one byte of a length prefix (nothing to emit).
    pub tcp_partial_prefixes: u64,
    /// TCP data segments after the direction was closed by FIN.
    pub tcp_after_close: u64,
    /// TCP connections flushed early to stay within [`DecoderLimits`].
    pub tcp_evictions: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// A DNS conversation endpoint pair, normalised so that `server` is the side whose port is a
/// DNS port (or the destination of a query when both or neither are).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub transport: Transport,
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub server_ip: IpAddr,
    pub server_port: u16,
    /// Socket cookie of the local socket, 0 when unknown.
    pub sock_cookie: u64,
    /// Which end the local socket is (`--serve-side`): a local server's side of a loopback
    /// conversation is a flow of its own, paired apart from the client's.
    pub side: Side,
}

impl Flow {
    pub fn ip_version(&self) -> u8 {
        match self.client_ip {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 6,
        }
    }
}

/// One whole DNS message cut out of the packet stream.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsMessage {
    /// Time of the packet that completed the message (ns since epoch, UTC).
    pub ts_ns: i64,
    pub flow: Flow,
    /// True when the message travelled client -> server (a query, by direction).
    pub from_client: bool,
    pub owner: Option<KernelOwner>,
    /// Length of the DNS message as declared on the wire (UDP length - 8, or the TCP length
    /// prefix). `bytes.len() < wire_len` means the capture lost part of it.
    pub wire_len: u32,
    /// The DNS message (without the TCP length prefix), possibly cut short.
    pub bytes: Vec<u8>,
    /// Why the message is incomplete, if it is (capture cap, missing fragment, TCP gap...).
    pub capture_error: Option<String>,
    /// Symbolized user stack of the code that sent the message (`--stacks`), innermost
    /// frame first.
    pub stack: Option<std::sync::Arc<[String]>>,
}

/// Decodes [`RawPacket`]s into whole [`DnsMessage`]s. See the module documentation.
pub struct Decoder {
    ports: PortSet,
    limits: DecoderLimits,
    stats: DecodeStats,
    frags: HashMap<FragKey, FragBuf>,
    frag_bytes: usize,
    flows: HashMap<Flow, TcpFlow>,
    tcp_bytes: usize,
    /// Creation counter: a deterministic tie-break when flushing in age order.
    serial: u64,
}

/// Capture context of the packet that caused something.
#[derive(Clone, Copy, Debug)]
struct Meta {
    ts_ns: i64,
    owner: Option<KernelOwner>,
    sock_cookie: u64,
    side: Side,
}

/// Where the transport bytes handed to UDP/TCP processing came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// One packet (possibly cut by the capture cap).
    Packet,
    /// A datagram reassembled from fragments, some of which were missing.
    IncompleteFragments,
}

/// Why a TCP stream lost bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GapCause {
    /// A segment was cut by the capture cap.
    CaptureCap,
    /// Segments never appeared in the capture.
    Missing,
}

/// Why a TCP stream is being flushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndCause {
    Fin,
    Reset,
    Reused,
    Idle,
    EndOfInput,
    Evicted,
}

impl EndCause {
    fn note(self) -> &'static str {
        match self {
            EndCause::Fin => "",
            EndCause::Reset => " (connection reset)",
            EndCause::Reused => " (connection replaced by a new one on the same ports)",
            EndCause::Idle => " (idle timeout)",
            EndCause::EndOfInput => " (end of input)",
            EndCause::Evicted => " (evicted to stay within decoder memory limits)",
        }
    }
}

impl Decoder {
    pub fn new(ports: PortSet) -> Self {
        Self::with_limits(ports, DecoderLimits::default())
    }

    pub fn with_limits(ports: PortSet, limits: DecoderLimits) -> Self {
        Decoder {
            ports,
            limits,
            stats: DecodeStats::default(),
            frags: HashMap::new(),
            frag_bytes: 0,
            flows: HashMap::new(),
            tcp_bytes: 0,
            serial: 0,
        }
    }

    pub fn ports(&self) -> &PortSet {
        &self.ports
    }

    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// Decode one packet; append zero or more complete DNS messages to `out`.
    pub fn push(&mut self, pkt: &RawPacket<'_>, out: &mut Vec<DnsMessage>) {
        self.stats.packets += 1;
        let meta = Meta {
            ts_ns: pkt.ts_ns,
            owner: pkt.owner,
            sock_cookie: pkt.sock_cookie,
            side: pkt.side,
        };
        // Length of the L3 packet when the IP header's own length field is 0 (TSO/GSO and
        // BIG TCP packets, IPv6 jumbograms).
        let fallback_len = usize::try_from(pkt.wire_len)
            .unwrap_or(usize::MAX)
            .max(pkt.data.len());
        match pkt.data.first().map(|b| b >> 4) {
            Some(4) => self.push_ipv4(pkt.data, fallback_len, meta, out),
            Some(6) => self.push_ipv6(pkt.data, fallback_len, meta, out),
            Some(_) => self.stats.not_ip += 1,
            None => self.stats.malformed_ip += 1,
        }
    }

    // ---------------------------------------------------------------------------------------
    // Expiry

    /// Drop / flush state (TCP streams, fragment buffers) idle since before `now_ns - idle_ns`;
    /// partial data becomes messages with `capture_error` set (never silently dropped). A gap in
    /// a still-active TCP stream that has been open since before that time is given up on too.
    pub fn expire(&mut self, now_ns: i64, idle_ns: i64, out: &mut Vec<DnsMessage>) {
        let cutoff = now_ns.saturating_sub(idle_ns);
        let mut stale: Vec<(i64, u64, FragKey)> = self
            .frags
            .iter()
            .filter(|(_, b)| b.last.ts_ns < cutoff)
            .map(|(k, b)| (b.last.ts_ns, b.serial, *k))
            .collect();
        stale.sort_unstable_by_key(|&(ts, serial, _)| (ts, serial));
        for (_, _, key) in stale {
            if let Some(buf) = self.frags.remove(&key) {
                self.frag_bytes -= buf.data.len();
                self.flush_datagram(key, buf, out);
            }
        }

        for key in flows_by_age(&self.flows, |f| f.last_ts_ns < cutoff) {
            self.end_flow(key, EndCause::Idle, out);
        }

        for key in flows_by_age(&self.flows, |f| {
            f.oldest_pending().is_some_and(|t| t < cutoff)
        }) {
            let Some(flow) = self.flows.get_mut(&key) else {
                continue;
            };
            let before = flow.buffered();
            let mut sink = Sink {
                flow: key,
                owner: flow.owner,
                out: &mut *out,
                stats: &mut self.stats,
            };
            for (dir, d) in flow.dirs.iter_mut().enumerate() {
                if d.oldest_pending().is_some_and(|t| t < cutoff) {
                    d.skip_gaps(dir == 0, &mut sink);
                }
            }
            let after = flow.buffered();
            let closed = flow.dirs.iter().all(|d| d.closed);
            self.tcp_bytes = self.tcp_bytes + after - before;
            if closed && let Some(flow) = self.flows.remove(&key) {
                self.tcp_bytes -= flow.buffered();
            }
        }
    }

    /// End of input: flush all partial state as messages with `capture_error` set.
    pub fn finish(&mut self, out: &mut Vec<DnsMessage>) {
        let mut frags: Vec<(i64, u64, FragKey)> = self
            .frags
            .iter()
            .map(|(k, b)| (b.last.ts_ns, b.serial, *k))
            .collect();
        frags.sort_unstable_by_key(|&(ts, serial, _)| (ts, serial));
        for (_, _, key) in frags {
            if let Some(buf) = self.frags.remove(&key) {
                self.frag_bytes -= buf.data.len();
                self.flush_datagram(key, buf, out);
            }
        }
        for key in flows_by_age(&self.flows, |_| true) {
            self.end_flow(key, EndCause::EndOfInput, out);
        }
    }
}

/// The flow of a packet from `src:sport` to `dst:dport`, oriented by `from_client`.
fn oriented_flow(
    transport: Transport,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    from_client: bool,
    meta: Meta,
) -> Flow {
    let ((client_ip, client_port), (server_ip, server_port)) = if from_client {
        ((src, sport), (dst, dport))
    } else {
        ((dst, dport), (src, sport))
    };
    Flow {
        transport,
        client_ip,
        client_port,
        server_ip,
        server_port,
        sock_cookie: meta.sock_cookie,
        side: meta.side,
    }
}

/// The transport bytes of one packet or reassembled datagram, on their way from IP to UDP or
/// TCP: one value instead of eight arguments.
#[derive(Clone, Copy, Debug)]
struct L4<'a> {
    src: IpAddr,
    dst: IpAddr,
    /// IP protocol number of `data`.
    proto: u8,
    /// IPv6: `data` may start with further extension headers (a reassembled payload).
    v6: bool,
    /// Captured bytes (possibly fewer than `declared`).
    data: &'a [u8],
    /// Length per the IP header.
    declared: usize,
    meta: Meta,
    origin: Origin,
}

#[cfg(test)]
mod tests {
    use super::ip::*;
    use super::tcp::Framer;
    use super::*;
    use crate::capture::Direction;
    use crate::capture::pcap::PcapSource;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::path::PathBuf;

    // ---------------------------------------------------------------------------------------
    // Capture files

    fn testdata(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/pcap")
            .join(name)
    }

    fn test_ports() -> PortSet {
        PortSet::new(&[53, 5353, 5355]).expect("valid ports")
    }

    struct Decoded {
        msgs: Vec<DnsMessage>,
        stats: DecodeStats,
    }

    impl Decoded {
        fn udp(&self) -> usize {
            self.msgs
                .iter()
                .filter(|m| m.flow.transport == Transport::Udp)
                .count()
        }
        fn tcp(&self) -> usize {
            self.msgs
                .iter()
                .filter(|m| m.flow.transport == Transport::Tcp)
                .count()
        }
        /// By the DNS QR bit of the bytes.
        fn queries(&self) -> usize {
            self.msgs.iter().filter(|m| qr(m) == Some(false)).count()
        }
        fn responses(&self) -> usize {
            self.msgs.iter().filter(|m| qr(m) == Some(true)).count()
        }
        fn with_error(&self) -> usize {
            self.msgs
                .iter()
                .filter(|m| m.capture_error.is_some())
                .count()
        }
    }

    fn qr(m: &DnsMessage) -> Option<bool> {
        m.bytes.get(2).map(|b| b & 0x80 != 0)
    }

    fn dns_id(m: &DnsMessage) -> u16 {
        u16::from_be_bytes([m.bytes[0], m.bytes[1]])
    }

    fn decode_file(name: &str) -> Decoded {
        let path = testdata(name);
        let mut src = PcapSource::open(&path).expect("open capture");
        let mut dec = Decoder::new(test_ports());
        let mut msgs = Vec::new();
        src.for_each(|p| dec.push(p, &mut msgs))
            .expect("read capture");
        dec.finish(&mut msgs);
        Decoded {
            msgs,
            stats: dec.stats(),
        }
    }

    /// Every capture in testdata, with counts checked against SOURCES.md and tshark (see the
    /// decode report for the comparison). Columns: udp msgs, tcp msgs, queries, responses
    /// (by QR bit), messages with capture_error.
    #[test]
    fn every_capture_yields_the_expected_messages() {
        let expected: &[(&str, usize, usize, usize, usize, usize)] = &[
            ("base64-decode-5885/input.pcap", 64, 0, 51, 13, 0),
            ("bug-1158/input.pcap", 161, 0, 81, 80, 0),
            ("dns-badlabel.pcap", 1, 0, 0, 1, 0),
            ("dns-edns-ecs.pcap", 76, 9, 20, 65, 0),
            ("dns-invalid-names.pcap", 3, 0, 3, 0, 0),
            ("dns-sshfp.pcap", 2, 0, 1, 1, 0),
            ("dns-tcp-multirequest-buffer.pcap", 0, 40, 20, 20, 0),
            ("dns-tunnel-iodine.pcap", 434, 0, 222, 212, 0),
            ("dns-udp-google.com-a-aaaa-mx.pcap", 6, 0, 3, 3, 0),
            // UDP length 8: the crafted bytes lie past the datagram, so the message is empty.
            // Its UDP length says 0 bytes of payload: no DNS message (counted in udp_empty).
            ("dns-zlip-1.pcap", 0, 0, 0, 0, 0),
            ("dns.pcap", 82, 0, 41, 41, 0),
            ("dnso1tcp.pcap", 0, 82, 41, 41, 0),
            ("dynamic-update.pcap", 4, 0, 2, 2, 0),
            ("ech.pcap", 4, 0, 2, 2, 0),
            ("edns-opts.pcap", 42, 0, 21, 21, 0),
            ("edns.pcap", 14, 0, 7, 7, 0),
            ("ipv6-fragmented-dns.pcap", 5, 0, 3, 2, 0),
            ("long-connection.pcap", 22, 0, 11, 11, 0),
            ("mdns.pcap", 18, 0, 12, 6, 0),
            ("nsec3.pcap", 2, 0, 1, 1, 0),
            ("rrsig.pcap", 7, 0, 4, 3, 0),
            ("tkey.pcap", 0, 2, 1, 1, 0),
            ("truncated_dns.pcap", 1, 0, 0, 1, 1),
            ("wikipedia.pcap", 40, 0, 24, 16, 0),
        ];
        // Every capture in testdata is listed.
        let dir = testdata("");
        let mut on_disk = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("testdata dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                on_disk.push(format!(
                    "{}/input.pcap",
                    path.file_name().expect("name").to_string_lossy()
                ));
            } else if path
                .extension()
                .is_some_and(|e| e == "pcap" || e == "pcapng")
            {
                on_disk.push(
                    path.file_name()
                        .expect("name")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        on_disk.sort();
        let listed: Vec<String> = expected.iter().map(|e| e.0.to_string()).collect();
        assert_eq!(on_disk, listed);

        for &(name, udp, tcp, q, r, err) in expected {
            let d = decode_file(name);
            let got = (d.udp(), d.tcp(), d.queries(), d.responses(), d.with_error());
            assert_eq!(got, (udp, tcp, q, r, err), "{name}: (udp, tcp, q, r, err)");
            // Orientation agrees with the QR bit everywhere in these captures (mDNS
            // announcements are responses sent by the "server").
            for m in &d.msgs {
                if let Some(is_response) = qr(m) {
                    assert_eq!(m.from_client, !is_response, "{name}: {m:?}");
                }
                assert!(m.bytes.len() <= m.wire_len as usize, "{name}");
                assert!(test_ports().contains(m.flow.server_port), "{name}");
            }
            assert_eq!(
                d.stats.udp_messages + d.stats.tcp_messages,
                d.msgs.len() as u64,
                "{name}"
            );
        }
    }

    #[test]
    fn tcp_pipelined_queries_in_one_segment() {
        let d = decode_file("dns-tcp-multirequest-buffer.pcap");
        assert_eq!(d.tcp(), 40);
        let queries: Vec<&DnsMessage> = d.msgs.iter().filter(|m| m.from_client).collect();
        let responses: Vec<&DnsMessage> = d.msgs.iter().filter(|m| !m.from_client).collect();
        assert_eq!(queries.len(), 20);
        assert_eq!(responses.len(), 20);
        // tshark: all 20 queries (ids 0..19) in frame 4; responses in frames 8, 10, ..., 46.
        let frame4_ns = 1_477_425_058_996_642_000;
        let frame46_ns = 1_477_425_060_308_378_000;
        for (i, m) in queries.iter().enumerate() {
            assert_eq!(dns_id(m), i as u16);
            assert_eq!(m.ts_ns, frame4_ns);
            assert_eq!(m.capture_error, None);
            assert_eq!(m.flow.server_port, 53);
            assert_eq!(m.flow.client_port, 59092);
        }
        for (i, m) in responses.iter().enumerate() {
            assert_eq!(dns_id(m), i as u16);
            // tshark: one answer per segment, 82 bytes for ids 0..9 and 83 for 10..19.
            let expected = if i < 10 { 80 } else { 81 };
            assert_eq!(m.bytes.len(), expected, "segment length minus the prefix");
        }
        assert_eq!(responses[19].ts_ns, frame46_ns);
        // Client FIN right after the queries, server FIN after the last answer: both
        // directions closed, nothing left to flush.
        assert_eq!(d.stats.tcp_flows, 1);
        assert_eq!(d.stats.tcp_gaps, 0);
    }

    #[test]
    fn tcp_messages_split_from_their_length_prefix() {
        let tcp = decode_file("dnso1tcp.pcap");
        let udp = decode_file("dns.pcap");
        assert_eq!((tcp.queries(), tcp.responses()), (41, 41));
        assert_eq!(tcp.with_error(), 0);
        // The client writes each 2-byte prefix in its own segment: the first query is complete
        // only with frame 6 (tshark), not frame 4 which carries the prefix.
        let first = &tcp.msgs[0];
        assert!(first.from_client);
        assert_eq!(first.ts_ns, 1_515_583_361_552_406_000);
        assert_eq!(first.bytes.len(), 28);
        // dnso1tcp.pcap carries the same lookups as dns.pcap: the same queries, byte for byte.
        let tcp_q: Vec<&Vec<u8>> = tcp
            .msgs
            .iter()
            .filter(|m| m.from_client)
            .map(|m| &m.bytes)
            .collect();
        let udp_q: Vec<&Vec<u8>> = udp
            .msgs
            .iter()
            .filter(|m| m.from_client)
            .map(|m| &m.bytes)
            .collect();
        assert_eq!(tcp_q.len(), 41);
        assert_eq!(tcp_q, udp_q);
        let tcp_ids: Vec<u16> = tcp
            .msgs
            .iter()
            .filter(|m| !m.from_client)
            .map(dns_id)
            .collect();
        let udp_ids: Vec<u16> = udp
            .msgs
            .iter()
            .filter(|m| !m.from_client)
            .map(dns_id)
            .collect();
        assert_eq!(tcp_ids, udp_ids);
    }

    #[test]
    fn ipv6_fragments_reassembled() {
        let d = decode_file("ipv6-fragmented-dns.pcap");
        assert_eq!(d.msgs.len(), 5);
        let big = d
            .msgs
            .iter()
            .find(|m| m.bytes.len() > 1500)
            .expect("reassembled response");
        // tshark: frames 6, 7, 8 form one datagram with UDP length 3238.
        assert_eq!(big.wire_len, 3230);
        assert_eq!(big.bytes.len(), 3230);
        assert_eq!(big.capture_error, None);
        assert_eq!(dns_id(big), 0x9f91);
        assert!(!big.from_client);
        assert_eq!(
            big.ts_ns, 1_331_084_298_676_270_000,
            "time of the last fragment"
        );
        assert_eq!(big.flow.ip_version(), 6);
        assert_eq!(d.stats.fragments, 4);
        assert_eq!(d.stats.reassembled, 1);
        // Frame 4: a trailing fragment of an earlier try whose first fragment is not in the
        // capture. It cannot be attributed to any flow.
        assert_eq!(d.stats.orphan_fragments, 1);
        assert_eq!(d.stats.incomplete_datagrams, 0);
    }

    #[test]
    fn ipv4_fragments_reassembled_and_tcp_answers() {
        let d = decode_file("dns-edns-ecs.pcap");
        assert_eq!(d.stats.fragments, 8);
        assert_eq!(d.stats.reassembled, 4);
        // tshark, UDP length of the reassembled answers: frames 54, 59, 63, 85.
        for (id, udp_len) in [
            (0xd43f, 1710),
            (0xa17d, 1498),
            (0x15a8, 1710),
            (0x89ce, 1738),
        ] {
            let m = d
                .msgs
                .iter()
                .find(|m| dns_id(m) == id && !m.from_client && m.flow.transport == Transport::Udp)
                .expect("reassembled answer");
            assert_eq!(m.wire_len, udp_len - 8);
            assert_eq!(m.bytes.len(), udp_len as usize - 8);
            assert_eq!(m.capture_error, None);
        }
        // Answers over TCP, each connection first seen mid-stream.
        let tcp_ids: Vec<u16> = d
            .msgs
            .iter()
            .filter(|m| m.flow.transport == Transport::Tcp)
            .map(dns_id)
            .collect();
        assert_eq!(
            tcp_ids,
            [
                0x183a, 0xf238, 0xea79, 0x21c5, 0xbc80, 0x947d, 0x3409, 0x06da, 0x06da
            ]
        );
    }

    #[test]
    fn tcp_large_message_across_segments() {
        let d = decode_file("tkey.pcap");
        let q = &d.msgs[0];
        assert!(q.from_client);
        // 3 data segments (1460 + 1460 + 327 bytes) = 2-byte prefix + 3245.
        assert_eq!((q.wire_len, q.bytes.len()), (3245, 3245));
        assert_eq!(dns_id(q), 0xcda0);
        let r = &d.msgs[1];
        assert_eq!((r.wire_len, r.bytes.len()), (481, 481));
        assert_eq!(d.stats.tcp_flows, 1);
    }

    #[test]
    fn capture_cap_reported() {
        let d = decode_file("truncated_dns.pcap");
        let m = &d.msgs[0];
        // Captured with a 200-byte snap length: 200 - 14 - 20 - 8 bytes of a 196-byte message.
        assert_eq!(m.wire_len, 196);
        assert_eq!(m.bytes.len(), 158);
        assert_eq!(
            m.capture_error.as_deref(),
            Some("truncated by capture: 158 of 196 bytes")
        );
    }

    #[test]
    fn mdns_orientation_by_qr_bit() {
        let d = decode_file("mdns.pcap");
        for m in &d.msgs {
            assert_eq!((m.flow.client_port, m.flow.server_port), (5353, 5353));
        }
        // Announcements (QR=1) are sent by the "server": its address is the source, the
        // multicast group the client side.
        let ann = d
            .msgs
            .iter()
            .find(|m| !m.from_client)
            .expect("announcement");
        assert_eq!(
            ann.flow.client_ip,
            IpAddr::V6("ff02::fb".parse().expect("addr"))
        );
        let q = d.msgs.iter().find(|m| m.from_client).expect("query");
        assert!(
            matches!(q.flow.server_ip, IpAddr::V6(a) if a == "ff02::fb".parse::<Ipv6Addr>().expect("addr"))
        );
    }

    #[test]
    fn malformed_dns_payloads_pass_through() {
        let badlabel = decode_file("dns-badlabel.pcap");
        assert_eq!(badlabel.msgs.len(), 1);
        assert!(badlabel.msgs[0].bytes.len() > 60_000);
        assert_eq!(badlabel.msgs[0].capture_error, None);
        // The crafted bytes lie past the datagram's declared end (UDP length 8): the empty
        // datagram is counted, not turned into a message.
        let zlip = decode_file("dns-zlip-1.pcap");
        assert!(zlip.msgs.is_empty());
        assert_eq!(zlip.stats.udp_empty, 1);
        assert_eq!(decode_file("dns-invalid-names.pcap").msgs.len(), 3);
    }

    /// Every packet of every capture, cut at random lengths and with random bytes flipped,
    /// must not panic the decoder.
    #[test]
    fn mangled_capture_packets_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut packets: Vec<(i64, Vec<u8>)> = Vec::new();
        for name in [
            "dns-edns-ecs.pcap",
            "dnso1tcp.pcap",
            "ipv6-fragmented-dns.pcap",
            "tkey.pcap",
            "mdns.pcap",
            "dns-badlabel.pcap",
            "dns-tcp-multirequest-buffer.pcap",
        ] {
            let mut src = PcapSource::open(&testdata(name)).expect("open");
            src.for_each(|p| packets.push((p.ts_ns, p.data.to_vec())))
                .expect("read");
        }
        let mut dec = Decoder::with_limits(
            test_ports(),
            DecoderLimits {
                max_tcp_flows: 8,
                max_tcp_ooo_bytes: 4096,
                max_tcp_buffered_bytes: 64 * 1024,
                max_frag_datagrams: 4,
                max_frag_bytes: 16 * 1024,
            },
        );
        let mut out = Vec::new();
        for round in 0..20 {
            for (ts, data) in &packets {
                let mut data = data.clone();
                let flips = rng.below(4);
                for _ in 0..flips {
                    let i = rng.below(data.len().max(1));
                    if let Some(b) = data.get_mut(i) {
                        *b ^= 1 << rng.below(8);
                    }
                }
                let cut = if rng.below(3) == 0 {
                    rng.below(data.len() + 1)
                } else {
                    data.len()
                };
                let wire_len = data.len() as u32 + rng.below(100) as u32;
                data.truncate(cut);
                dec.push(
                    &RawPacket {
                        ts_ns: ts + round * 1_000_000_000,
                        direction: Direction::Unknown,
                        side: crate::capture::Side::Unknown,
                        owner: None,
                        sock_cookie: 0,
                        wire_len,
                        data: &data,
                    },
                    &mut out,
                );
            }
            dec.expire(
                ts_max(&packets) + round * 1_000_000_000,
                500_000_000,
                &mut out,
            );
        }
        dec.finish(&mut out);
        assert!(!out.is_empty());
        for m in &out {
            assert!(m.bytes.len() <= m.wire_len as usize || m.wire_len == u32::MAX);
        }
        assert!(dec.flows.is_empty() && dec.frags.is_empty());
        assert_eq!((dec.tcp_bytes, dec.frag_bytes), (0, 0));
    }

    fn ts_max(packets: &[(i64, Vec<u8>)]) -> i64 {
        packets.iter().map(|p| p.0).max().unwrap_or(0)
    }

    /// Random bytes after valid IPv4/IPv6 headers, and random header fields.
    #[test]
    fn random_packets_never_panic() {
        let mut rng = XorShift(42);
        let mut dec = Decoder::with_limits(
            test_ports(),
            DecoderLimits {
                max_tcp_flows: 4,
                max_tcp_ooo_bytes: 1024,
                max_tcp_buffered_bytes: 8 * 1024,
                max_frag_datagrams: 3,
                max_frag_bytes: 4 * 1024,
            },
        );
        let mut out = Vec::new();
        for i in 0..20_000i64 {
            let len = rng.below(120);
            let mut body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Steer towards interesting paths: DNS ports, TCP/UDP/fragments/extension headers.
            if let Some(b) = body.get_mut(2..4) {
                b.copy_from_slice(&53u16.to_be_bytes());
            }
            let proto = [
                PROTO_UDP,
                PROTO_TCP,
                PROTO_FRAGMENT,
                PROTO_HOP_BY_HOP,
                PROTO_AUTH,
                1,
            ][rng.below(6)];
            let pkt = if rng.below(2) == 0 {
                let mut p = ipv4_raw(
                    [10, 0, 0, 1],
                    [10, 0, 0, 2],
                    proto,
                    rng.next() as u16 & 3,
                    rng.next() as u16 & 0x3fff,
                    &body,
                );
                if rng.below(4) == 0 {
                    let i = rng.below(p.len());
                    p[i] = rng.next() as u8;
                }
                p
            } else {
                ipv6_raw(proto, &body)
            };
            dec.push(&raw(i * 1000, &pkt), &mut out);
            if i % 1000 == 0 {
                dec.expire(i * 1000, 100_000, &mut out);
            }
        }
        dec.finish(&mut out);
        assert_eq!(dec.stats().packets, 20_000);
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Hand-built packets

    const CLIENT: [u8; 4] = [10, 0, 0, 1];
    const SERVER: [u8; 4] = [10, 0, 0, 53];
    const CPORT: u16 = 40_000;
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const FIN: u8 = 0x01;
    const RST: u8 = 0x04;
    const PSH: u8 = 0x08;

    /// A DNS message with one question for `name`, type A.
    fn dns(id: u16, response: bool, name: &str) -> Vec<u8> {
        let flags: u16 = if response { 0x8180 } else { 0x0100 };
        let mut m = Vec::new();
        m.extend(id.to_be_bytes());
        m.extend(flags.to_be_bytes());
        m.extend([0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend(label.as_bytes());
        }
        m.extend([0, 0, 1, 0, 1]);
        m
    }

    fn framed(msg: &[u8]) -> Vec<u8> {
        let mut v = (msg.len() as u16).to_be_bytes().to_vec();
        v.extend(msg);
        v
    }

    fn ipv4_raw(
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        id: u16,
        frag: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend(total.to_be_bytes());
        p.extend(id.to_be_bytes());
        p.extend(frag.to_be_bytes());
        p.extend([64, proto, 0, 0]);
        p.extend(src);
        p.extend(dst);
        p.extend(payload);
        p
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
        ipv4_raw(src, dst, proto, 1, 0x4000, payload)
    }

    const V6_CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const V6_SERVER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53);

    fn ipv6_raw(next: u8, payload: &[u8]) -> Vec<u8> {
        ipv6_from(V6_CLIENT, V6_SERVER, next, payload)
    }

    fn ipv6_from(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend((payload.len() as u16).to_be_bytes());
        p.extend([next, 64]);
        p.extend(src.octets());
        p.extend(dst.octets());
        p.extend(payload);
        p
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend(sport.to_be_bytes());
        u.extend(dport.to_be_bytes());
        u.extend(((8 + payload.len()) as u16).to_be_bytes());
        u.extend([0, 0]);
        u.extend(payload);
        u
    }

    fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend(sport.to_be_bytes());
        t.extend(dport.to_be_bytes());
        t.extend(seq.to_be_bytes());
        t.extend(0u32.to_be_bytes());
        t.extend([5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend(payload);
        t
    }

    fn raw(ts_ns: i64, data: &[u8]) -> RawPacket<'_> {
        RawPacket {
            ts_ns,
            direction: Direction::Unknown,
            side: crate::capture::Side::Unknown,
            owner: None,
            sock_cookie: 0,
            wire_len: data.len() as u32,
            data,
        }
    }

    /// A decoder with a clock: every push is 1 ms after the previous one.
    struct Rig {
        dec: Decoder,
        out: Vec<DnsMessage>,
        ts: i64,
    }

    impl Rig {
        fn new() -> Self {
            Rig {
                dec: Decoder::new(test_ports()),
                out: Vec::new(),
                ts: 1_000_000_000,
            }
        }

        /// Pushes a packet; returns its timestamp.
        fn push(&mut self, data: &[u8]) -> i64 {
            self.push_cut(data, data.len())
        }

        /// Pushes a packet of which only the first `cap` bytes were captured.
        fn push_cut(&mut self, data: &[u8], cap: usize) -> i64 {
            self.ts += 1_000_000;
            let mut p = raw(self.ts, &data[..cap.min(data.len())]);
            p.wire_len = data.len() as u32;
            self.dec.push(&p, &mut self.out);
            self.ts
        }

        /// Client -> server TCP segment (seq relative to client ISN 1000).
        fn c2s(&mut self, rel_seq: u32, flags: u8, payload: &[u8]) -> i64 {
            self.push(&ipv4(
                CLIENT,
                SERVER,
                PROTO_TCP,
                &tcp(CPORT, 53, 1001 + rel_seq, flags, payload),
            ))
        }

        /// Server -> client TCP segment (seq relative to server ISN 5000).
        fn s2c(&mut self, rel_seq: u32, flags: u8, payload: &[u8]) -> i64 {
            self.push(&ipv4(
                SERVER,
                CLIENT,
                PROTO_TCP,
                &tcp(53, CPORT, 5001 + rel_seq, flags, payload),
            ))
        }

        fn handshake(&mut self) {
            self.push(&ipv4(
                CLIENT,
                SERVER,
                PROTO_TCP,
                &tcp(CPORT, 53, 1000, SYN, &[]),
            ));
            self.push(&ipv4(
                SERVER,
                CLIENT,
                PROTO_TCP,
                &tcp(53, CPORT, 5000, SYN | ACK, &[]),
            ));
            self.c2s(0, ACK, &[]);
        }

        fn take(&mut self) -> Vec<DnsMessage> {
            std::mem::take(&mut self.out)
        }
    }

    /// Heap reserved by the partial messages of all TCP connections.
    fn framer_capacity(dec: &Decoder) -> usize {
        dec.flows
            .values()
            .flat_map(|f| f.dirs.iter())
            .map(|d| match &d.framer {
                Framer::Body { buf, .. } => buf.capacity(),
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn tcp_length_prefix_does_not_reserve_the_claimed_length() {
        // Found reviewing the fuzzing harness's memory bound: each connection that sent a
        // prefix claiming 65535 bytes and one byte of message reserved 64 KiB, while the
        // limits (max_tcp_buffered_bytes) count 1 byte, so 16384 connections held 1 GiB.
        let mut rig = Rig::new();
        for port in 0..256u16 {
            rig.push(&ipv4(
                CLIENT,
                SERVER,
                PROTO_TCP,
                &tcp(20_000 + port, 53, 7, ACK, &[0xff, 0xff, 0x12]),
            ));
        }
        assert_eq!(rig.dec.flows.len(), 256);
        assert_eq!(rig.dec.tcp_bytes, 256);
        let reserved = framer_capacity(&rig.dec);
        assert!(
            reserved <= 256 * 64,
            "{reserved} bytes reserved for 256 bytes"
        );
        rig.dec.finish(&mut rig.out);
        let msgs = rig.take();
        assert_eq!(msgs.len(), 256);
        assert!(
            msgs.iter()
                .all(|m| m.wire_len == 65535 && m.bytes == [0x12])
        );
    }

    #[test]
    fn port_set_validation() {
        assert_eq!(PortSet::new(&[]), Err(DecodeError::NoPorts));
        assert_eq!(PortSet::new(&[53, 0]), Err(DecodeError::PortZero));
        let many: Vec<u16> = (1..=17).collect();
        assert_eq!(
            PortSet::new(&many),
            Err(DecodeError::TooManyPorts { count: 17 })
        );
        let sixteen: Vec<u16> = (1..=16).chain([1, 2]).collect();
        let set = PortSet::new(&sixteen).expect("16 distinct ports");
        assert_eq!(set.as_slice(), (1..=16).collect::<Vec<u16>>().as_slice());
        assert!(set.contains(16) && !set.contains(17));
        assert_eq!(PortSet::standard().as_slice(), &[53, 5353, 5355]);
        assert_eq!(
            DecodeError::TooManyPorts { count: 17 }.to_string(),
            "too many DNS ports: 17 given, at most 16 are supported"
        );
    }

    #[test]
    fn udp_query_and_response() {
        let mut rig = Rig::new();
        let q = dns(7, false, "example.com");
        let r = dns(7, true, "example.com");
        let t1 = rig.push(&ipv4(CLIENT, SERVER, PROTO_UDP, &udp(CPORT, 53, &q)));
        let t2 = rig.push(&ipv4(SERVER, CLIENT, PROTO_UDP, &udp(53, CPORT, &r)));
        rig.push(&ipv4(CLIENT, SERVER, PROTO_UDP, &udp(CPORT, 80, &q)));
        rig.push(&ipv4(CLIENT, SERVER, 1, &[8, 0, 0, 0]));
        rig.push(&[0x20, 1, 2]);
        let out = rig.take();
        assert_eq!(out.len(), 2);
        let flow = Flow {
            transport: Transport::Udp,
            client_ip: IpAddr::V4(Ipv4Addr::from(CLIENT)),
            client_port: CPORT,
            server_ip: IpAddr::V4(Ipv4Addr::from(SERVER)),
            server_port: 53,
            sock_cookie: 0,
            side: Side::Unknown,
        };
        assert_eq!(
            out[0],
            DnsMessage {
                ts_ns: t1,
                flow,
                from_client: true,
                owner: None,
                wire_len: q.len() as u32,
                bytes: q,
                capture_error: None,
                stack: None,
            }
        );
        assert_eq!(
            (out[1].ts_ns, out[1].flow, out[1].from_client),
            (t2, flow, false)
        );
        let s = rig.dec.stats();
        assert_eq!(
            (s.packets, s.not_dns, s.other_protocol, s.not_ip),
            (5, 1, 1, 1)
        );
    }

    #[test]
    fn zero_ip_length_uses_wire_len() {
        // A GSO/GRO skb as the kernel hands it over: IPv4 total length 0, many messages.
        let mut rig = Rig::new();
        rig.handshake();
        let msgs: Vec<Vec<u8>> = (0..400).map(|i| dns(i, true, "gso.example")).collect();
        let stream: Vec<u8> = msgs.iter().flat_map(|m| framed(m)).collect();
        assert!(stream.len() > 10_000);
        let mut pkt = ipv4(
            SERVER,
            CLIENT,
            PROTO_TCP,
            &tcp(53, CPORT, 5001, ACK | PSH, &stream),
        );
        pkt[2..4].copy_from_slice(&[0, 0]);
        rig.push(&pkt);
        let out = rig.take();
        assert_eq!(out.len(), 400);
        assert!(out.iter().zip(&msgs).all(|(m, b)| &m.bytes == b));
        // IPv6 payload length 0 (jumbogram / BIG TCP): same.
        let q = dns(1, false, "jumbo.example");
        let mut pkt = ipv6_raw(PROTO_UDP, &udp(CPORT, 53, &q));
        pkt[4..6].copy_from_slice(&[0, 0]);
        rig.push(&pkt);
        assert_eq!(rig.take()[0].bytes, q);
    }

    #[test]
    fn udp_cut_by_capture_cap() {
        let mut rig = Rig::new();
        let q = dns(9, false, "a-rather-long-name-for-a-test.example.org");
        let pkt = ipv4(CLIENT, SERVER, PROTO_UDP, &udp(CPORT, 53, &q));
        rig.push_cut(&pkt, 20 + 8 + 20);
        let out = rig.take();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, q[..20]);
        assert_eq!(out[0].wire_len, q.len() as u32);
        assert_eq!(
            out[0].capture_error,
            Some(format!("truncated by capture: 20 of {} bytes", q.len()))
        );
        // Cut inside the UDP header: nothing to attribute.
        rig.push_cut(&pkt, 24);
        assert!(rig.take().is_empty());
        assert_eq!(rig.dec.stats().malformed_transport, 1);
    }

    #[test]
    fn owner_and_cookie_copied() {
        let mut dec = Decoder::new(test_ports());
        let owner = KernelOwner {
            pid: 42,
            tid: 43,
            uid: 1000,
            gid: 1000,
            cgroup_id: 7,
            netns: 4026531840,
            comm: *b"dig\0\0\0\0\0\0\0\0\0\0\0\0\0",
        };
        let pkt = ipv4(
            CLIENT,
            SERVER,
            PROTO_UDP,
            &udp(CPORT, 53, &dns(1, false, "a.b")),
        );
        let mut p = raw(5, &pkt);
        p.owner = Some(owner);
        p.sock_cookie = 99;
        p.direction = Direction::Egress;
        let mut out = Vec::new();
        dec.push(&p, &mut out);
        assert_eq!(out[0].owner, Some(owner));
        assert_eq!(out[0].flow.sock_cookie, 99);
    }

    #[test]
    fn both_ports_dns_decided_by_qr_bit() {
        let mut rig = Rig::new();
        let a = [192, 168, 1, 10];
        let group = [224, 0, 0, 251];
        rig.push(&ipv4(
            a,
            group,
            PROTO_UDP,
            &udp(5353, 5353, &dns(0, false, "_ipp._tcp.local")),
        ));
        rig.push(&ipv4(
            a,
            group,
            PROTO_UDP,
            &udp(5353, 5353, &dns(0, true, "_ipp._tcp.local")),
        ));
        // Too short for a QR bit: the destination is the server.
        rig.push(&ipv4(a, group, PROTO_UDP, &udp(5353, 5353, &[1, 2])));
        let out = rig.take();
        assert!(out[0].from_client);
        assert_eq!(out[0].flow.server_ip, IpAddr::V4(Ipv4Addr::from(group)));
        assert!(!out[1].from_client);
        assert_eq!(out[1].flow.server_ip, IpAddr::V4(Ipv4Addr::from(a)));
        assert_eq!(out[1].flow.client_ip, IpAddr::V4(Ipv4Addr::from(group)));
        assert!(out[2].from_client);
    }

    #[test]
    fn ipv6_with_extension_headers() {
        let mut rig = Rig::new();
        let q = dns(0x66, false, "v6.example");
        // Hop-by-hop (8 bytes, PadN), then destination options (16 bytes), then UDP.
        let mut payload = vec![PROTO_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0];
        payload.extend([PROTO_UDP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        payload.extend(udp(CPORT, 53, &q));
        rig.push(&ipv6_raw(PROTO_HOP_BY_HOP, &payload));
        // An atomic fragment header (offset 0, no more fragments) is skipped too.
        let mut atomic = vec![PROTO_UDP, 0, 0, 0, 0, 0, 0, 9];
        atomic.extend(udp(53, CPORT, &dns(0x66, true, "v6.example")));
        rig.push(&ipv6_from(V6_SERVER, V6_CLIENT, PROTO_FRAGMENT, &atomic));
        // An extension header running past the end of the packet.
        rig.push(&ipv6_raw(
            PROTO_DEST_OPTS,
            &[PROTO_UDP, 200, 0, 0, 0, 0, 0, 0],
        ));
        let out = rig.take();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].bytes, q);
        assert!(out[0].from_client);
        assert_eq!(out[0].flow.client_ip, IpAddr::V6(V6_CLIENT));
        assert_eq!(out[0].flow.ip_version(), 6);
        assert!(!out[1].from_client);
        assert_eq!(out[1].flow.server_ip, IpAddr::V6(V6_SERVER));
        assert_eq!(rig.dec.stats().malformed_ip, 1);
        assert_eq!(rig.dec.stats().fragments, 0);
    }

    /// Splits a UDP datagram into IPv4 fragments of `chunk` bytes (a multiple of 8).
    fn ipv4_fragments(id: u16, dgram: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        dgram
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                let off = (i * chunk / 8) as u16;
                let more = if (i + 1) * chunk < dgram.len() {
                    0x2000
                } else {
                    0
                };
                ipv4_raw(SERVER, CLIENT, PROTO_UDP, id, more | off, part)
            })
            .collect()
    }

    fn big_answer(id: u16) -> Vec<u8> {
        let mut r = dns(id, true, "big.example");
        r.extend((0..2000).map(|i| i as u8));
        r
    }

    #[test]
    fn ipv4_fragments_out_of_order_and_duplicated() {
        let mut rig = Rig::new();
        let r = big_answer(0x1234);
        let frags = ipv4_fragments(77, &udp(53, CPORT, &r), 512);
        assert_eq!(frags.len(), 4);
        rig.push(&frags[2]);
        rig.push(&frags[0]);
        rig.push(&frags[0]);
        rig.push(&frags[3]);
        assert!(rig.out.is_empty());
        let last = rig.push(&frags[1]);
        let out = rig.take();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, r);
        assert_eq!(out[0].ts_ns, last);
        assert_eq!(out[0].capture_error, None);
        assert!(!out[0].from_client);
        let s = rig.dec.stats();
        assert_eq!((s.fragments, s.reassembled), (5, 1));
        assert!(rig.dec.frags.is_empty());
        assert_eq!(rig.dec.frag_bytes, 0);
    }

    #[test]
    fn ipv6_fragments_reassembled_by_hand() {
        let mut rig = Rig::new();
        let r = big_answer(0x4242);
        let dgram = udp(53, CPORT, &r);
        for (i, part) in dgram.chunks(1232).enumerate() {
            let more = (i + 1) * 1232 < dgram.len();
            let off = ((i * 1232 / 8) as u16) << 3 | u16::from(more);
            let mut p = vec![PROTO_UDP, 0];
            p.extend(off.to_be_bytes());
            p.extend(0xdead_beefu32.to_be_bytes());
            p.extend(part);
            rig.push(&ipv6_from(V6_SERVER, V6_CLIENT, PROTO_FRAGMENT, &p));
        }
        let out = rig.take();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, r);
        assert_eq!(out[0].flow.server_ip, IpAddr::V6(V6_SERVER));
    }

    #[test]
    fn incomplete_fragments_flushed_with_error() {
        let mut rig = Rig::new();
        let r = big_answer(0x5555);
        let frags = ipv4_fragments(88, &udp(53, CPORT, &r), 512);
        rig.push(&frags[0]);
        rig.push(&frags[1]);
        rig.push(&frags[3]);
        // A lone trailing fragment of another datagram: no header, no flow.
        let other = ipv4_fragments(89, &udp(53, CPORT, &r), 512);
        rig.push(&other[2]);
        // Not idle yet.
        rig.dec.expire(rig.ts, 10_000_000, &mut rig.out);
        assert!(rig.out.is_empty());
        rig.dec
            .expire(rig.ts + 20_000_000, 10_000_000, &mut rig.out);
        let out = rig.take();
        assert_eq!(out.len(), 1);
        // Fragments 0 and 1: the UDP header and the first 1016 bytes of the message.
        assert_eq!(out[0].bytes, r[..1016]);
        assert_eq!(out[0].wire_len, r.len() as u32);
        assert_eq!(
            out[0].capture_error,
            Some(format!(
                "incomplete IP fragments: got 1016 of {} bytes",
                r.len()
            ))
        );
        let s = rig.dec.stats();
        assert_eq!((s.incomplete_datagrams, s.orphan_fragments), (1, 1));
        assert!(rig.dec.frags.is_empty());
    }

    #[test]
    fn first_fragment_only_flushed_at_finish() {
        let mut rig = Rig::new();
        let r = big_answer(0x7777);
        let frags = ipv4_fragments(90, &udp(53, CPORT, &r), 1480);
        rig.push(&frags[0]);
        rig.dec.finish(&mut rig.out);
        let out = rig.take();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, r[..1472]);
        assert_eq!(out[0].wire_len, r.len() as u32, "from the UDP header");
        assert!(
            out[0]
                .capture_error
                .as_deref()
                .is_some_and(|e| e.starts_with("incomplete IP fragments"))
        );
    }

    #[test]
    fn non_dns_fragments_not_buffered() {
        let mut rig = Rig::new();
        let payload = vec![7u8; 3000];
        let dgram = udp(4000, 4001, &payload);
        let frags: Vec<Vec<u8>> = ipv4_fragments(5, &dgram, 1480);
        rig.push(&frags[0]);
        assert_eq!(rig.dec.frag_bytes, 0, "tombstone holds no data");
        rig.push(&frags[1]);
        rig.push(&frags[2]);
        assert!(rig.dec.frags.is_empty());
        assert!(rig.out.is_empty());
        assert_eq!(rig.dec.stats().not_dns, 1);
    }

    #[test]
    fn tcp_message_split_across_three_segments_with_split_prefix() {
        let mut rig = Rig::new();
        rig.handshake();
        let q = dns(0x0102, false, "split.example.net");
        let f = framed(&q);
        rig.c2s(0, ACK | PSH, &f[..1]);
        rig.c2s(1, ACK | PSH, &f[1..10]);
        assert!(rig.out.is_empty());
        let t = rig.c2s(10, ACK | PSH, &f[10..]);
        let out = rig.take();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, q);
        assert_eq!(out[0].wire_len, q.len() as u32);
        assert_eq!(out[0].ts_ns, t);
        assert!(out[0].from_client);
        assert_eq!(out[0].flow.transport, Transport::Tcp);
        assert_eq!(out[0].flow.server_port, 53);
        assert_eq!(out[0].capture_error, None);
    }

    #[test]
    fn tcp_two_messages_in_one_segment_and_a_third_straddling() {
        let mut rig = Rig::new();
        rig.handshake();
        let msgs: Vec<Vec<u8>> = (0..3).map(|i| dns(i, true, "multi.example")).collect();
        let mut stream = Vec::new();
        for m in &msgs {
            stream.extend(framed(m));
        }
        let cut = framed(&msgs[0]).len() + framed(&msgs[1]).len() + 5;
        let t1 = rig.s2c(0, ACK | PSH, &stream[..cut]);
        let t2 = rig.s2c(cut as u32, ACK | PSH, &stream[cut..]);
        let out = rig.take();
        assert_eq!(
            out.iter().map(|m| &m.bytes).collect::<Vec<_>>(),
            msgs.iter().collect::<Vec<_>>()
        );
        assert_eq!(
            out.iter().map(|m| m.ts_ns).collect::<Vec<_>>(),
            [t1, t1, t2]
        );
        assert!(out.iter().all(|m| !m.from_client));
    }

    #[test]
    fn tcp_retransmission_does_not_duplicate() {
        let mut rig = Rig::new();
        rig.handshake();
        let a = dns(1, false, "one.example");
        let b = dns(2, false, "two.example");
        let fa = framed(&a);
        let fb = framed(&b);
        rig.c2s(0, ACK | PSH, &fa[..8]);
        rig.c2s(0, ACK | PSH, &fa[..8]);
        // Retransmission that overlaps old bytes and brings new ones.
        rig.c2s(0, ACK | PSH, &fa);
        rig.c2s(0, ACK | PSH, &fa);
        rig.c2s(fa.len() as u32, ACK | PSH, &fb);
        rig.c2s(fa.len() as u32, ACK | PSH, &fb);
        let out = rig.take();
        assert_eq!(out.iter().map(|m| &m.bytes).collect::<Vec<_>>(), [&a, &b]);
        assert_eq!(rig.dec.stats().tcp_duplicates, 3);
    }

    #[test]
    fn tcp_out_of_order_segment_buffered() {
        let mut rig = Rig::new();
        rig.handshake();
        let a = dns(1, true, "first.example");
        let b = dns(2, true, "second.example");
        let fa = framed(&a);
        let fb = framed(&b);
        // The second half of message a and all of b arrive before the first half of a.
        let mut tail = fa[6..].to_vec();
        tail.extend(&fb);
        rig.s2c(6, ACK | PSH, &tail);
        assert!(rig.out.is_empty());
        assert_eq!(rig.dec.stats().tcp_out_of_order, 1);
        let t = rig.s2c(0, ACK | PSH, &fa[..6]);
        let out = rig.take();
        assert_eq!(out.iter().map(|m| &m.bytes).collect::<Vec<_>>(), [&a, &b]);
        assert!(
            out.iter()
                .all(|m| m.ts_ns == t && m.capture_error.is_none())
        );
    }

    #[test]
    fn tcp_fin_mid_message_flushes_partial() {
        let mut rig = Rig::new();
        rig.handshake();
        let q = dns(3, false, "cut.example");
        let f = framed(&q);
        let t = rig.c2s(0, ACK | PSH, &f[..12]);
        assert!(rig.out.is_empty());
        rig.c2s(12, ACK | FIN, &[]);
        let out = rig.take();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, q[..10]);
        assert_eq!(out[0].wire_len, q.len() as u32);
        assert_eq!(out[0].ts_ns, t, "time of the last byte that arrived");
        assert_eq!(
            out[0].capture_error,
            Some(format!(
                "tcp stream ended mid-message: got 10 of {} bytes",
                q.len()
            ))
        );
        // Server direction still open; its FIN closes and forgets the connection.
        assert_eq!(rig.dec.flows.len(), 1);
        rig.s2c(0, ACK | FIN, &[]);
        assert!(rig.dec.flows.is_empty());
        assert_eq!(rig.dec.tcp_bytes, 0);
    }

    #[test]
    fn tcp_fin_before_missing_data_waits_for_it() {
        let mut rig = Rig::new();
        rig.handshake();
        let q = dns(4, false, "late.example");
        let f = framed(&q);
        rig.c2s(5, ACK | PSH | FIN, &f[5..]);
        rig.c2s(0, ACK | PSH, &f[..5]);
        let out = rig.take();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, q);
        assert_eq!(out[0].capture_error, None);
    }

    #[test]
    fn tcp_rst_flushes_both_directions() {
        let mut rig = Rig::new();
        rig.handshake();
        let q = dns(5, false, "reset.example");
        let r = dns(5, true, "reset.example");
        rig.c2s(0, ACK | PSH, &framed(&q)[..4]);
        rig.s2c(0, ACK | PSH, &framed(&r)[..7]);
        rig.s2c(7, RST, &[]);
        let out = rig.take();
        assert_eq!(out.len(), 2);
        for m in &out {
            let e = m.capture_error.as_deref().expect("partial");
            assert!(
                e.starts_with("tcp stream ended mid-message") && e.ends_with("(connection reset)"),
                "{e}"
            );
        }
        assert!(rig.dec.flows.is_empty());
    }

    #[test]
    fn tcp_gap_that_never_fills() {
        let mut rig = Rig::new();
        rig.handshake();
        let a = dns(1, false, "gap-a.example");
        let b = dns(2, false, "gap-b.example");
        let c = dns(3, false, "gap-c.example");
        let (fa, fb, fc) = (framed(&a), framed(&b), framed(&c));
        let lb = fa.len() as u32;
        let lc = lb + fb.len() as u32;
        // Message a arrives, the first 10 bytes of b are lost, the rest of b and then c follow.
        rig.c2s(0, ACK | PSH, &fa);
        rig.c2s(lb + 10, ACK | PSH, &fb[10..]);
        let tc = rig.c2s(lc, ACK | PSH, &fc);
        assert_eq!(rig.take().len(), 1);
        // The gap is given up on once it is older than the idle time; b is beyond recovery
        // (its prefix is in the gap): framing resumes at the next segment, which starts c.
        rig.dec.expire(rig.ts, 10_000_000, &mut rig.out);
        assert!(rig.out.is_empty(), "gap not old enough");
        // The connection stays active (server ACKs every 1 ms) while the gap ages.
        for _ in 0..20 {
            rig.s2c(0, ACK, &[]);
        }
        assert!(rig.ts >= tc + 20_000_000);
        rig.dec.expire(rig.ts, 10_000_000, &mut rig.out);
        let out = rig.take();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, c);
        assert_eq!(out[0].capture_error, None);
        let s = rig.dec.stats();
        assert_eq!((s.tcp_gaps, s.tcp_gap_bytes, s.tcp_resyncs), (1, 10, 1));
        assert_eq!(s.tcp_unframed_bytes, fb.len() as u64 - 10);
        assert_eq!(rig.dec.flows.len(), 1, "connection itself is still active");
    }

    #[test]
    fn tcp_gap_inside_a_message_keeps_framing() {
        let mut rig = Rig::new();
        rig.handshake();
        let a = dns(1, true, "gap-inside.example");
        let b = dns(2, true, "after-gap.example");
        let (fa, fb) = (framed(&a), framed(&b));
        rig.s2c(0, ACK | PSH, &fa[..8]);
        // Bytes 8..12 of a never arrive; the rest of a and b come in one segment.
        let mut rest = fa[12..].to_vec();
        rest.extend(&fb);
        rig.s2c(12, ACK | PSH, &rest);
        rig.dec.finish(&mut rig.out);
        let out = rig.take();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].bytes, a[..6]);
        assert_eq!(
            out[0].capture_error,
            Some(format!(
                "tcp data missing from capture: got 6 of {} bytes",
                a.len()
            ))
        );
        // The length of a is known, so b is found without waiting for a segment boundary.
        assert_eq!(out[1].bytes, b);
        assert_eq!(out[1].capture_error, None);
        assert_eq!(rig.dec.stats().tcp_resyncs, 0);
    }

    #[test]
    fn tcp_segment_cut_by_capture_cap() {
        let mut rig = Rig::new();
        rig.handshake();
        let a = dns(1, true, "capped-answer.example");
        let b = dns(2, true, "next.example");
        let (fa, fb) = (framed(&a), framed(&b));
        let seg = ipv4(
            SERVER,
            CLIENT,
            PROTO_TCP,
            &tcp(53, CPORT, 5001, ACK | PSH, &fa),
        );
        rig.push_cut(&seg, 20 + 20 + 12);
        rig.s2c(fa.len() as u32, ACK | PSH, &fb);
        let out = rig.take();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].bytes, a[..10]);
        assert_eq!(
            out[0].capture_error,
            Some(format!("truncated by capture: 10 of {} bytes", a.len()))
        );
        assert_eq!(out[1].bytes, b);
    }

    #[test]
    fn tcp_first_seen_mid_stream() {
        let mut rig = Rig::new();
        let r = dns(9, true, "midstream.example");
        let f = framed(&r);
        rig.s2c(100_000, ACK | PSH, &f[..9]);
        rig.s2c(100_009, ACK | PSH, &f[9..]);
        // Bare ACKs of unknown connections create no state.
        rig.c2s(77, ACK, &[]);
        let out = rig.take();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, r);
        assert!(!out[0].from_client);
        assert_eq!(rig.dec.flows.len(), 1);
    }

    #[test]
    fn tcp_sequence_wraparound() {
        let mut rig = Rig::new();
        let q = dns(1, false, "wrap.example");
        let f = framed(&q);
        let isn = u32::MAX - 5;
        let seg = |seq: u32, flags: u8, p: &[u8]| {
            ipv4(CLIENT, SERVER, PROTO_TCP, &tcp(CPORT, 53, seq, flags, p))
        };
        rig.push(&seg(isn, SYN, &[]));
        rig.push(&seg(isn.wrapping_add(1), ACK | PSH, &f[..10]));
        rig.push(&seg(isn.wrapping_add(11), ACK | PSH, &f[10..]));
        assert_eq!(
            rig.take()
                .iter()
                .map(|m| m.bytes.clone())
                .collect::<Vec<_>>(),
            [q]
        );
    }

    #[test]
    fn tcp_connection_reuse_flushes_old_one() {
        let mut rig = Rig::new();
        rig.handshake();
        let q = dns(1, false, "old.example");
        rig.c2s(0, ACK | PSH, &framed(&q)[..6]);
        // New SYN, new ISN, same ports.
        rig.push(&ipv4(
            CLIENT,
            SERVER,
            PROTO_TCP,
            &tcp(CPORT, 53, 90_000, SYN, &[]),
        ));
        let q2 = dns(2, false, "new.example");
        rig.push(&ipv4(
            CLIENT,
            SERVER,
            PROTO_TCP,
            &tcp(CPORT, 53, 90_001, ACK | PSH, &framed(&q2)),
        ));
        let out = rig.take();
        assert_eq!(out.len(), 2);
        assert!(
            out[0]
                .capture_error
                .as_deref()
                .is_some_and(|e| e.contains("replaced"))
        );
        assert_eq!(out[1].bytes, q2);
        // A retransmitted SYN changes nothing.
        rig.push(&ipv4(
            CLIENT,
            SERVER,
            PROTO_TCP,
            &tcp(CPORT, 53, 90_000, SYN, &[]),
        ));
        assert!(rig.take().is_empty());
    }

    #[test]
    fn tcp_zero_length_prefix_and_lone_prefix_byte() {
        let mut rig = Rig::new();
        rig.handshake();
        let q = dns(1, false, "after-empty.example");
        let mut p = vec![0, 0];
        p.extend(framed(&q));
        p.push(0);
        rig.c2s(0, ACK | PSH, &p);
        rig.c2s(p.len() as u32, ACK | FIN, &[]);
        let out = rig.take();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, q);
        let s = rig.dec.stats();
        assert_eq!((s.tcp_empty_messages, s.tcp_partial_prefixes), (1, 1));
    }

    #[test]
    fn tcp_out_of_order_bound_gives_up_on_gap() {
        let mut dec = Decoder::with_limits(
            test_ports(),
            DecoderLimits {
                max_tcp_ooo_bytes: 1000,
                ..DecoderLimits::default()
            },
        );
        let mut out = Vec::new();
        let mut ts = 0;
        let mut push =
            |dec: &mut Decoder, seq: u32, flags: u8, p: &[u8], out: &mut Vec<DnsMessage>| {
                ts += 1;
                let pkt = ipv4(CLIENT, SERVER, PROTO_TCP, &tcp(CPORT, 53, seq, flags, p));
                dec.push(&raw(ts, &pkt), out);
            };
        push(&mut dec, 1000, SYN, &[], &mut out);
        // First segment (one whole message) lost; 30 more messages arrive behind the gap.
        let msgs: Vec<Vec<u8>> = (0..31)
            .map(|i| framed(&dns(i, false, "bounded.example")))
            .collect();
        let mut seq = 1001 + msgs[0].len() as u32;
        for m in &msgs[1..] {
            push(&mut dec, seq, ACK | PSH, m, &mut out);
            seq += m.len() as u32;
        }
        assert!(dec.flows.values().all(|f| f.dirs[0].pending_bytes <= 1000));
        dec.finish(&mut out);
        assert_eq!(
            out.len(),
            30,
            "everything behind the lost segment is recovered"
        );
        assert!(out.iter().all(|m| m.capture_error.is_none()));
        assert_eq!(dec.stats().tcp_gaps, 1);
    }

    #[test]
    fn tcp_flow_limit_evicts_least_recent() {
        let mut dec = Decoder::with_limits(
            test_ports(),
            DecoderLimits {
                max_tcp_flows: 2,
                ..DecoderLimits::default()
            },
        );
        let mut out = Vec::new();
        let q = framed(&dns(1, false, "evict.example"));
        for (i, port) in [40_001u16, 40_002, 40_003].into_iter().enumerate() {
            let pkt = ipv4(
                CLIENT,
                SERVER,
                PROTO_TCP,
                &tcp(port, 53, 1, ACK | PSH, &q[..5]),
            );
            dec.push(&raw(i as i64, &pkt), &mut out);
        }
        assert_eq!(dec.flows.len(), 2);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].flow.client_port, 40_001);
        assert!(
            out[0]
                .capture_error
                .as_deref()
                .is_some_and(|e| e.ends_with("(evicted to stay within decoder memory limits)"))
        );
        assert_eq!(dec.stats().tcp_evictions, 1);
        dec.finish(&mut out);
        assert_eq!(out.len(), 3);
        assert!(out[1..].iter().all(|m| {
            m.capture_error
                .as_deref()
                .is_some_and(|e| e.ends_with("(end of input)"))
        }));
        assert_eq!(dec.tcp_bytes, 0);
    }

    #[test]
    fn fragment_limit_evicts_oldest() {
        let mut dec = Decoder::with_limits(
            test_ports(),
            DecoderLimits {
                max_frag_datagrams: 2,
                ..DecoderLimits::default()
            },
        );
        let mut out = Vec::new();
        let r = big_answer(1);
        for id in 0..3u16 {
            let frags = ipv4_fragments(id, &udp(53, CPORT, &r), 1480);
            dec.push(&raw(i64::from(id), &frags[0]), &mut out);
        }
        assert_eq!(dec.frags.len(), 2);
        assert_eq!(out.len(), 1);
        assert_eq!(dec.stats().fragment_evictions, 1);
        dec.finish(&mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(dec.frag_bytes, 0);
    }
}
