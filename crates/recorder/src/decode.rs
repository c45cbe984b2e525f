//! IP, UDP and TCP decoding: [`RawPacket`]s (L3 bytes) in, whole [`DnsMessage`]s out.
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
//!   with the time of the segment that completed it. Data lost from the capture (a gap that
//!   never fills, or a segment cut by the capture cap) turns the message it hits into a partial
//!   message with `capture_error`, and framing resumes at the next segment boundary.
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

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use etherparse::{
    IpAuthHeaderSlice, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice,
    Ipv6RawExtHeaderSlice, TcpHeaderSlice, UdpHeaderSlice,
};

use crate::event::{DnsMessage, Flow, KernelOwner, RawPacket, Transport};

/// Most ports a [`PortSet`] holds.
pub const MAX_DNS_PORTS: usize = 16;

const PROTO_HOP_BY_HOP: u8 = 0;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ROUTING: u8 = 43;
const PROTO_FRAGMENT: u8 = 44;
const PROTO_AUTH: u8 = 51;
const PROTO_DEST_OPTS: u8 = 60;
const PROTO_MOBILITY: u8 = 135;
const PROTO_HIP: u8 = 139;
const PROTO_SHIM6: u8 = 140;

/// IPv6 extension headers walked before giving up on a packet (each is at least 8 bytes, so
/// this only matters for crafted packets).
const MAX_IPV6_EXT_HEADERS: usize = 32;
/// Largest reassembled IP payload: the IPv4 total length and IPv6 payload length are 16 bits.
const MAX_DATAGRAM: usize = 65_535;

/// Errors building decoder configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("no DNS ports given: name at least one port")]
    NoPorts,
    #[error("too many DNS ports: {count} given, at most {MAX_DNS_PORTS} are supported")]
    TooManyPorts { count: usize },
    #[error("port 0 is not a valid DNS port")]
    PortZero,
}

/// Up to 16 DNS ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSet {
    ports: [u16; MAX_DNS_PORTS],
    len: usize,
}

impl PortSet {
    /// The ports, deduplicated (order kept). Fails on an empty list, port 0, or more than
    /// [`MAX_DNS_PORTS`] distinct ports.
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
        if distinct.len() > MAX_DNS_PORTS {
            return Err(DecodeError::TooManyPorts {
                count: distinct.len(),
            });
        }
        let mut set = PortSet {
            ports: [0; MAX_DNS_PORTS],
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

/// Counters of a [`Decoder`]. Every packet lands in exactly one of the "dropped" counters or
/// reaches UDP/TCP processing.
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

    fn push_ipv4(
        &mut self,
        data: &[u8],
        fallback_len: usize,
        meta: Meta,
        out: &mut Vec<DnsMessage>,
    ) {
        let Ok(h) = Ipv4HeaderSlice::from_slice(data) else {
            self.stats.malformed_ip += 1;
            return;
        };
        let hlen = h.slice().len();
        let declared_end = match usize::from(h.total_len()) {
            0 => fallback_len,
            n if n < hlen => {
                self.stats.malformed_ip += 1;
                return;
            }
            n => n,
        };
        let Some(payload) = data.get(hlen..declared_end.min(data.len())) else {
            self.stats.malformed_ip += 1;
            return;
        };
        let declared = declared_end - hlen;
        let src = IpAddr::V4(h.source_addr());
        let dst = IpAddr::V4(h.destination_addr());
        let proto = h.protocol().0;
        if h.is_fragmenting_payload() {
            let key = FragKey {
                src,
                dst,
                id: u32::from(h.identification()),
                proto,
            };
            let frag = Fragment {
                offset: usize::from(h.fragments_offset().byte_offset()),
                more: h.more_fragments(),
                data: payload,
                declared,
            };
            self.push_fragment(key, frag, meta, out);
            return;
        }
        self.push_upper(
            src,
            dst,
            proto,
            false,
            payload,
            declared,
            meta,
            Origin::Packet,
            out,
        );
    }

    fn push_ipv6(
        &mut self,
        data: &[u8],
        fallback_len: usize,
        meta: Meta,
        out: &mut Vec<DnsMessage>,
    ) {
        let Ok(h) = Ipv6HeaderSlice::from_slice(data) else {
            self.stats.malformed_ip += 1;
            return;
        };
        let hlen = h.slice().len();
        let declared_end = match usize::from(h.payload_length()) {
            0 => fallback_len,
            n => hlen + n,
        };
        let Some(rest) = data.get(hlen..declared_end.min(data.len())) else {
            self.stats.malformed_ip += 1;
            return;
        };
        let declared = declared_end - hlen;
        let src = IpAddr::V6(h.source_addr());
        let dst = IpAddr::V6(h.destination_addr());
        match walk_ipv6_ext(h.next_header().0, rest) {
            Ipv6Next::Upper { proto, offset } => {
                let payload = rest.get(offset..).unwrap_or(&[]);
                let declared = declared.saturating_sub(offset);
                self.push_upper(
                    src,
                    dst,
                    proto,
                    true,
                    payload,
                    declared,
                    meta,
                    Origin::Packet,
                    out,
                );
            }
            Ipv6Next::Fragment {
                id,
                frag_offset,
                more,
                next,
                offset,
            } => {
                let key = FragKey {
                    src,
                    dst,
                    id,
                    proto: next,
                };
                let frag = Fragment {
                    offset: frag_offset,
                    more,
                    data: rest.get(offset..).unwrap_or(&[]),
                    declared: declared.saturating_sub(offset),
                };
                self.push_fragment(key, frag, meta, out);
            }
            Ipv6Next::Malformed => self.stats.malformed_ip += 1,
        }
    }

    /// Skips an IPv4 authentication header (or, for `v6`, any further extension headers of a
    /// reassembled payload), then hands the transport bytes to UDP or TCP processing.
    #[allow(clippy::too_many_arguments)]
    fn push_upper(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        v6: bool,
        payload: &[u8],
        declared: usize,
        meta: Meta,
        origin: Origin,
        out: &mut Vec<DnsMessage>,
    ) {
        let (proto, offset) = if v6 {
            match walk_ipv6_ext(proto, payload) {
                Ipv6Next::Upper { proto, offset } => (proto, offset),
                // A fragment header inside a reassembled payload, or a broken header.
                Ipv6Next::Fragment { .. } | Ipv6Next::Malformed => {
                    self.stats.malformed_ip += 1;
                    return;
                }
            }
        } else if proto == PROTO_AUTH {
            match IpAuthHeaderSlice::from_slice(payload) {
                Ok(ah) => (ah.next_header().0, ah.slice().len()),
                Err(_) => {
                    self.stats.malformed_ip += 1;
                    return;
                }
            }
        } else {
            (proto, 0)
        };
        let seg = payload.get(offset..).unwrap_or(&[]);
        let declared = declared.saturating_sub(offset).max(seg.len());
        match proto {
            PROTO_UDP => self.push_udp(src, dst, seg, declared, meta, origin, out),
            PROTO_TCP => self.push_tcp(src, dst, seg, declared, meta, origin, out),
            _ => self.stats.other_protocol += 1,
        }
    }

    // ---------------------------------------------------------------------------------------
    // UDP

    #[allow(clippy::too_many_arguments)]
    fn push_udp(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        seg: &[u8],
        declared: usize,
        meta: Meta,
        origin: Origin,
        out: &mut Vec<DnsMessage>,
    ) {
        let Ok(h) = UdpHeaderSlice::from_slice(seg) else {
            self.stats.malformed_transport += 1;
            return;
        };
        let (sport, dport) = (h.source_port(), h.destination_port());
        let datagram_len = match usize::from(h.length()) {
            // 0: UDP GSO and IPv6 jumbograms; the IP length is what counts.
            0 => declared,
            n if n < 8 => {
                self.stats.malformed_transport += 1;
                return;
            }
            // A UDP length beyond the IP payload is inconsistent: the IP length wins.
            n => n.min(declared),
        };
        let payload = seg.get(8..datagram_len.min(seg.len())).unwrap_or(&[]);
        let Some(from_client) = self.udp_from_client(sport, dport, payload) else {
            self.stats.not_dns += 1;
            return;
        };
        let wire_len = datagram_len.saturating_sub(8);
        if wire_len == 0 {
            // Header only (bytes past the UDP length are not part of the datagram).
            self.stats.udp_empty += 1;
            return;
        }
        let capture_error = (payload.len() < wire_len).then(|| match origin {
            Origin::Packet => format!(
                "truncated by capture: {} of {} bytes",
                payload.len(),
                wire_len
            ),
            Origin::IncompleteFragments => format!(
                "incomplete IP fragments: got {} of {} bytes",
                payload.len(),
                wire_len
            ),
        });
        let flow = oriented_flow(Transport::Udp, src, sport, dst, dport, from_client, meta);
        self.stats.udp_messages += 1;
        if capture_error.is_some() {
            self.stats.messages_with_error += 1;
        }
        out.push(DnsMessage {
            ts_ns: meta.ts_ns,
            flow,
            from_client,
            owner: meta.owner,
            wire_len: u32::try_from(wire_len).unwrap_or(u32::MAX),
            bytes: payload.to_vec(),
            capture_error,
        });
    }

    /// `Some(true)` when a datagram from `sport` to `dport` travels client -> server, `None`
    /// when neither port is a DNS port.
    fn udp_from_client(&self, sport: u16, dport: u16, payload: &[u8]) -> Option<bool> {
        match (self.ports.contains(sport), self.ports.contains(dport)) {
            (false, true) => Some(true),
            (true, false) => Some(false),
            // QR = 0: a query, so the sender is the client. Unknown: the destination serves.
            (true, true) => Some(payload.get(2).is_none_or(|b| b & 0x80 == 0)),
            (false, false) => None,
        }
    }

    // ---------------------------------------------------------------------------------------
    // IP fragments

    fn push_fragment(
        &mut self,
        key: FragKey,
        frag: Fragment<'_>,
        meta: Meta,
        out: &mut Vec<DnsMessage>,
    ) {
        self.stats.fragments += 1;
        let v6 = key.src.is_ipv6();
        let buffered_proto = matches!(key.proto, PROTO_UDP | PROTO_TCP | PROTO_AUTH)
            || (v6 && is_ipv6_ext(key.proto));
        if !buffered_proto {
            // ICMP and friends: nothing to reassemble for DNS. Counted per fragment.
            self.stats.other_protocol += 1;
            return;
        }
        let end = frag.offset.saturating_add(frag.declared);
        if end > MAX_DATAGRAM {
            self.stats.bad_fragments += 1;
            return;
        }
        if !self.frags.contains_key(&key) {
            self.make_room_for_fragments(out);
            self.serial += 1;
            self.frags.insert(key, FragBuf::new(self.serial, meta));
        }
        let Some(buf) = self.frags.get_mut(&key) else {
            return;
        };
        let before = buf.data.len();
        let added = buf.add(&frag, meta);
        let after = buf.data.len();
        self.frag_bytes = self.frag_bytes + after - before;
        if !added {
            self.stats.bad_fragments += 1;
            return;
        }
        // Decide early whether the datagram is DNS, so non-DNS traffic is not buffered.
        if buf.state == FragState::Collecting
            && matches!(key.proto, PROTO_UDP | PROTO_TCP)
            && let Some(ports) = buf.ports()
            && !self.ports.contains(ports.0)
            && !self.ports.contains(ports.1)
        {
            self.frag_bytes -= buf.data.len();
            buf.make_tombstone();
            self.stats.not_dns += 1;
        }
        if buf.is_complete() {
            if let Some(buf) = self.frags.remove(&key) {
                self.frag_bytes -= buf.data.len();
                self.complete_datagram(key, buf, meta, out);
            }
        } else if self.frag_bytes > self.limits.max_frag_bytes {
            self.make_room_for_fragments(out);
        }
    }

    /// Flushes the oldest datagrams in reassembly while over the limits (keeping room for one
    /// more datagram).
    fn make_room_for_fragments(&mut self, out: &mut Vec<DnsMessage>) {
        let max_n = self.limits.max_frag_datagrams.max(1);
        if self.frags.len() < max_n && self.frag_bytes <= self.limits.max_frag_bytes {
            return;
        }
        let mut by_age: Vec<(i64, u64, FragKey)> = self
            .frags
            .iter()
            .map(|(k, b)| (b.last.ts_ns, b.serial, *k))
            .collect();
        by_age.sort_unstable_by_key(|&(ts, serial, _)| (ts, serial));
        // Evict a batch (1/16) at a time so a flood does not rescan the table per packet.
        let target_n = max_n - max_n.div_ceil(16);
        for (_, _, key) in by_age {
            if self.frags.len() <= target_n && self.frag_bytes <= self.limits.max_frag_bytes {
                break;
            }
            if let Some(buf) = self.frags.remove(&key) {
                self.frag_bytes -= buf.data.len();
                self.stats.fragment_evictions += 1;
                self.flush_datagram(key, buf, out);
            }
        }
    }

    fn complete_datagram(
        &mut self,
        key: FragKey,
        buf: FragBuf,
        meta: Meta,
        out: &mut Vec<DnsMessage>,
    ) {
        if buf.state == FragState::NotDns {
            return;
        }
        self.stats.reassembled += 1;
        let total = buf.end.unwrap_or(0);
        // Fragments cut by the capture cap leave holes: keep the contiguous start.
        let have = buf.prefix_len().min(total);
        let data = buf.data.get(..have).unwrap_or(&[]);
        self.push_upper(
            key.src,
            key.dst,
            key.proto,
            key.src.is_ipv6(),
            data,
            total,
            meta,
            Origin::Packet,
            out,
        );
    }

    /// A datagram whose fragments did not all arrive: emit what can be attributed.
    fn flush_datagram(&mut self, key: FragKey, buf: FragBuf, out: &mut Vec<DnsMessage>) {
        if buf.state == FragState::NotDns {
            return;
        }
        let have = buf.prefix_len();
        // The first fragment carries the UDP/TCP header: without it the bytes belong to no
        // known flow (and may not even be DNS).
        let min_header = if key.proto == PROTO_TCP { 20 } else { 8 };
        if (have < min_header && matches!(key.proto, PROTO_UDP | PROTO_TCP)) || have == 0 {
            self.stats.orphan_fragments += u64::from(buf.fragments);
            return;
        }
        self.stats.incomplete_datagrams += 1;
        let data = buf.data.get(..have).unwrap_or(&[]);
        // Total length: known from the last fragment, else what the UDP header declares.
        let declared = match (buf.end, key.proto) {
            (Some(end), _) => end,
            (None, PROTO_UDP) => data
                .get(4..6)
                .map_or(have, |b| usize::from(u16::from_be_bytes([b[0], b[1]]))),
            (None, _) => have,
        }
        .max(have);
        let meta = buf.last;
        self.push_upper(
            key.src,
            key.dst,
            key.proto,
            key.src.is_ipv6(),
            data,
            declared,
            meta,
            Origin::IncompleteFragments,
            out,
        );
    }

    // ---------------------------------------------------------------------------------------
    // TCP

    #[allow(clippy::too_many_arguments)]
    fn push_tcp(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        seg: &[u8],
        declared: usize,
        meta: Meta,
        origin: Origin,
        out: &mut Vec<DnsMessage>,
    ) {
        let Ok(h) = TcpHeaderSlice::from_slice(seg) else {
            self.stats.malformed_transport += 1;
            return;
        };
        let hlen = h.slice().len();
        let (sport, dport) = (h.source_port(), h.destination_port());
        let (sport_dns, dport_dns) = (self.ports.contains(sport), self.ports.contains(dport));
        if !sport_dns && !dport_dns {
            self.stats.not_dns += 1;
            return;
        }
        self.stats.tcp_segments += 1;
        let payload = seg.get(hlen..).unwrap_or(&[]);
        let seg_info = Segment {
            seq: h.sequence_number(),
            syn: h.syn(),
            fin: h.fin(),
            rst: h.rst(),
            data: payload,
            declared: declared.saturating_sub(hlen).max(payload.len()),
            gap_cause: match origin {
                Origin::Packet => GapCause::CaptureCap,
                Origin::IncompleteFragments => GapCause::Missing,
            },
            meta,
        };
        let as_client = oriented_flow(Transport::Tcp, src, sport, dst, dport, true, meta);
        let as_server = oriented_flow(Transport::Tcp, src, sport, dst, dport, false, meta);
        let (key, from_client) = if self.flows.contains_key(&as_client) {
            (as_client, true)
        } else if self.flows.contains_key(&as_server) {
            (as_server, false)
        } else {
            if seg_info.declared == 0 && !seg_info.syn {
                // A bare ACK, FIN or RST of a connection we hold nothing for.
                return;
            }
            let from_client = match (sport_dns, dport_dns) {
                (false, true) => true,
                (true, false) => false,
                // Both ports are DNS ports: SYN without ACK comes from the client; else the
                // QR bit of the first message (after its length prefix); else the destination.
                _ if seg_info.syn => !h.ack(),
                _ => payload.get(4).is_none_or(|b| b & 0x80 == 0),
            };
            let key = if from_client { as_client } else { as_server };
            self.make_room_for_flows(out);
            self.serial += 1;
            self.flows
                .insert(key, TcpFlow::new(self.serial, meta.ts_ns));
            self.stats.tcp_flows += 1;
            (key, from_client)
        };
        let limits = self.limits;
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let before = flow.buffered();
        let mut sink = Sink {
            flow: key,
            owner: meta.owner,
            out: &mut *out,
            stats: &mut self.stats,
        };
        let dir = usize::from(!from_client);
        // A new connection on the same ports and cookie: flush the old one first.
        if seg_info.syn
            && !h.ack()
            && flow.started()
            && flow
                .dirs
                .get(dir)
                .is_some_and(|d| d.isn != Some(seg_info.seq))
        {
            flow.end(&mut sink, EndCause::Reused);
            *flow = TcpFlow::new(flow.serial, meta.ts_ns);
        }
        flow.last_ts_ns = meta.ts_ns;
        if meta.owner.is_some() {
            flow.owner = meta.owner;
        }
        if let Some(d) = flow.dirs.get_mut(dir) {
            d.push(&seg_info, from_client, &mut sink, limits);
        }
        if seg_info.rst {
            flow.end(&mut sink, EndCause::Reset);
        }
        let after = flow.buffered();
        let closed = flow.dirs.iter().all(|d| d.closed);
        self.tcp_bytes = self.tcp_bytes + after - before;
        if closed {
            if let Some(flow) = self.flows.remove(&key) {
                self.tcp_bytes -= flow.buffered();
            }
        } else if self.tcp_bytes > self.limits.max_tcp_buffered_bytes {
            self.make_room_for_flows(out);
        }
    }

    /// Flushes the least recently active connections while over the limits (keeping room for
    /// one more connection).
    fn make_room_for_flows(&mut self, out: &mut Vec<DnsMessage>) {
        let max_n = self.limits.max_tcp_flows.max(1);
        if self.flows.len() < max_n && self.tcp_bytes <= self.limits.max_tcp_buffered_bytes {
            return;
        }
        let by_age = flows_by_age(&self.flows, |_| true);
        // Evict a batch (1/16) at a time so a flood does not rescan the table per packet.
        let target_n = max_n - max_n.div_ceil(16);
        for key in by_age {
            if self.flows.len() <= target_n && self.tcp_bytes <= self.limits.max_tcp_buffered_bytes
            {
                break;
            }
            self.stats.tcp_evictions += 1;
            self.end_flow(key, EndCause::Evicted, out);
        }
    }

    fn end_flow(&mut self, key: Flow, cause: EndCause, out: &mut Vec<DnsMessage>) {
        let Some(mut flow) = self.flows.remove(&key) else {
            return;
        };
        self.tcp_bytes -= flow.buffered();
        let mut sink = Sink {
            flow: key,
            owner: flow.owner,
            out,
            stats: &mut self.stats,
        };
        flow.end(&mut sink, cause);
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
    }
}

/// Keys of the flows matching `filter`, least recently active first.
fn flows_by_age(flows: &HashMap<Flow, TcpFlow>, filter: impl Fn(&TcpFlow) -> bool) -> Vec<Flow> {
    let mut v: Vec<(i64, u64, Flow)> = flows
        .iter()
        .filter(|(_, f)| filter(f))
        .map(|(k, f)| (f.last_ts_ns, f.serial, *k))
        .collect();
    v.sort_unstable_by_key(|&(ts, serial, _)| (ts, serial));
    v.into_iter().map(|(_, _, k)| k).collect()
}

// -------------------------------------------------------------------------------------------
// IPv6 extension headers

enum Ipv6Next {
    /// The upper-layer protocol starts at `offset`.
    Upper {
        proto: u8,
        offset: usize,
    },
    /// A fragment header; the fragment's data starts at `offset`.
    Fragment {
        id: u32,
        frag_offset: usize,
        more: bool,
        next: u8,
        offset: usize,
    },
    Malformed,
}

fn is_ipv6_ext(proto: u8) -> bool {
    matches!(
        proto,
        PROTO_HOP_BY_HOP
            | PROTO_ROUTING
            | PROTO_DEST_OPTS
            | PROTO_MOBILITY
            | PROTO_HIP
            | PROTO_SHIM6
            | PROTO_AUTH
            | PROTO_FRAGMENT
    )
}

/// Walks IPv6 extension headers starting with `next` at the start of `buf`.
fn walk_ipv6_ext(mut next: u8, buf: &[u8]) -> Ipv6Next {
    let mut offset = 0usize;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let rest = buf.get(offset..).unwrap_or(&[]);
        match next {
            PROTO_HOP_BY_HOP | PROTO_ROUTING | PROTO_DEST_OPTS | PROTO_MOBILITY | PROTO_HIP
            | PROTO_SHIM6 => match Ipv6RawExtHeaderSlice::from_slice(rest) {
                Ok(ext) => {
                    offset += ext.slice().len();
                    next = ext.next_header().0;
                }
                Err(_) => return Ipv6Next::Malformed,
            },
            PROTO_AUTH => match IpAuthHeaderSlice::from_slice(rest) {
                Ok(ah) => {
                    offset += ah.slice().len();
                    next = ah.next_header().0;
                }
                Err(_) => return Ipv6Next::Malformed,
            },
            PROTO_FRAGMENT => match Ipv6FragmentHeaderSlice::from_slice(rest) {
                Ok(f) => {
                    offset += f.slice().len();
                    if f.is_fragmenting_payload() {
                        return Ipv6Next::Fragment {
                            id: f.identification(),
                            frag_offset: usize::from(f.fragment_offset().byte_offset()),
                            more: f.more_fragments(),
                            next: f.next_header().0,
                            offset,
                        };
                    }
                    // An atomic fragment (offset 0, no more fragments): just skip the header.
                    next = f.next_header().0;
                }
                Err(_) => return Ipv6Next::Malformed,
            },
            proto => return Ipv6Next::Upper { proto, offset },
        }
    }
    Ipv6Next::Malformed
}

// -------------------------------------------------------------------------------------------
// IP reassembly state

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

struct Fragment<'a> {
    /// Byte offset of this fragment in the datagram.
    offset: usize,
    more: bool,
    /// Captured bytes (possibly fewer than `declared`).
    data: &'a [u8],
    /// Length of this fragment's data per its IP header.
    declared: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FragState {
    Collecting,
    /// Known not to be DNS: data dropped, remaining fragments swallowed until complete or idle.
    NotDns,
}

struct FragBuf {
    serial: u64,
    state: FragState,
    /// Datagram bytes, zero where nothing arrived (only [`FragBuf::prefix_len`] bytes are read).
    data: Vec<u8>,
    /// Sorted, merged byte ranges that hold captured data.
    have: Vec<(usize, usize)>,
    /// Sorted, merged byte ranges covered by fragments that arrived, including parts the
    /// capture cap cut off.
    seen: Vec<(usize, usize)>,
    /// Datagram length, known once the last fragment arrived.
    end: Option<usize>,
    fragments: u32,
    last: Meta,
}

impl FragBuf {
    fn new(serial: u64, meta: Meta) -> Self {
        FragBuf {
            serial,
            state: FragState::Collecting,
            data: Vec::new(),
            have: Vec::new(),
            seen: Vec::new(),
            end: None,
            fragments: 0,
            last: meta,
        }
    }

    /// Adds a fragment; `false` when it contradicts the ones before (it is then ignored).
    /// Overlapping data replaces what was there.
    fn add(&mut self, frag: &Fragment<'_>, meta: Meta) -> bool {
        let end = frag.offset + frag.declared;
        match (self.end, frag.more) {
            (Some(e), false) if e != end => return false,
            (Some(e), true) if end > e => return false,
            (None, false) if self.seen.last().is_some_and(|&(_, s_end)| s_end > end) => {
                return false;
            }
            _ => {}
        }
        if !frag.more {
            self.end = Some(end);
        }
        self.fragments = self.fragments.saturating_add(1);
        self.last = meta;
        insert_range(&mut self.seen, (frag.offset, end));
        let captured = frag.data.len().min(frag.declared);
        if self.state == FragState::Collecting && captured > 0 {
            let cap_end = frag.offset + captured;
            if self.data.len() < cap_end {
                self.data.resize(cap_end, 0);
            }
            if let (Some(dst), Some(src)) = (
                self.data.get_mut(frag.offset..cap_end),
                frag.data.get(..captured),
            ) {
                dst.copy_from_slice(src);
            }
            insert_range(&mut self.have, (frag.offset, cap_end));
        }
        true
    }

    fn is_complete(&self) -> bool {
        match (self.end, self.seen.first()) {
            (Some(end), Some(&(0, covered))) => covered >= end,
            _ => false,
        }
    }

    /// Length of the captured bytes contiguous from the start of the datagram.
    fn prefix_len(&self) -> usize {
        match self.have.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    /// Source and destination port, once the first 4 bytes of the datagram are here.
    fn ports(&self) -> Option<(u16, u16)> {
        if self.prefix_len() < 4 {
            return None;
        }
        let b = self.data.get(..4)?;
        Some((
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
        ))
    }

    fn make_tombstone(&mut self) {
        self.state = FragState::NotDns;
        self.data = Vec::new();
        self.have.clear();
    }
}

/// Inserts `r` into a sorted list of disjoint ranges, merging overlapping and touching ones.
fn insert_range(ranges: &mut Vec<(usize, usize)>, r: (usize, usize)) {
    let (mut start, mut end) = r;
    if start >= end {
        return;
    }
    ranges.retain(|&(s, e)| {
        if s <= end && e >= start {
            start = start.min(s);
            end = end.max(e);
            false
        } else {
            true
        }
    });
    let pos = ranges.partition_point(|&(s, _)| s < start);
    ranges.insert(pos, (start, end));
}

// -------------------------------------------------------------------------------------------
// TCP reassembly state

/// One TCP segment, as seen by a [`TcpDir`].
struct Segment<'a> {
    seq: u32,
    syn: bool,
    fin: bool,
    rst: bool,
    /// Captured payload.
    data: &'a [u8],
    /// Payload length per the IP header (`data` may be shorter).
    declared: usize,
    /// What a shortfall of `data` against `declared` means.
    gap_cause: GapCause,
    meta: Meta,
}

/// Where emitted messages go, with the context they need.
struct Sink<'a> {
    flow: Flow,
    owner: Option<KernelOwner>,
    out: &'a mut Vec<DnsMessage>,
    stats: &'a mut DecodeStats,
}

impl Sink<'_> {
    fn emit(
        &mut self,
        from_client: bool,
        meta: Meta,
        wire_len: usize,
        bytes: Vec<u8>,
        capture_error: Option<String>,
    ) {
        self.stats.tcp_messages += 1;
        if capture_error.is_some() {
            self.stats.messages_with_error += 1;
        }
        self.out.push(DnsMessage {
            ts_ns: meta.ts_ns,
            flow: self.flow,
            from_client,
            owner: meta.owner.or(self.owner),
            wire_len: u32::try_from(wire_len).unwrap_or(u32::MAX),
            bytes,
            capture_error,
        });
    }
}

struct TcpFlow {
    serial: u64,
    last_ts_ns: i64,
    owner: Option<KernelOwner>,
    /// 0: client -> server, 1: server -> client.
    dirs: [TcpDir; 2],
}

impl TcpFlow {
    fn new(serial: u64, ts_ns: i64) -> Self {
        TcpFlow {
            serial,
            last_ts_ns: ts_ns,
            owner: None,
            dirs: [TcpDir::default(), TcpDir::default()],
        }
    }

    fn started(&self) -> bool {
        self.dirs.iter().any(|d| d.base.is_some())
    }

    fn buffered(&self) -> usize {
        self.dirs.iter().map(TcpDir::buffered).sum()
    }

    fn oldest_pending(&self) -> Option<i64> {
        self.dirs.iter().filter_map(TcpDir::oldest_pending).min()
    }

    /// Flushes both directions: gaps given up on, partial messages emitted.
    fn end(&mut self, sink: &mut Sink<'_>, cause: EndCause) {
        for (dir, d) in self.dirs.iter_mut().enumerate() {
            d.end(dir == 0, sink, cause);
        }
    }
}

/// A segment held back until the gap before it fills.
struct Pending {
    data: Vec<u8>,
    declared: usize,
    gap_cause: GapCause,
    meta: Meta,
}

/// One direction of a TCP connection.
#[derive(Default)]
struct TcpDir {
    /// ISN from the SYN, to recognise a retransmitted SYN.
    isn: Option<u32>,
    /// Sequence number of stream offset 0: ISN + 1, or the first data segment's number when
    /// the connection was first seen mid-stream. `None` until then.
    base: Option<u32>,
    /// Stream offset of the next byte expected.
    next: u64,
    /// Segments ahead of `next`, by stream offset.
    pending: BTreeMap<u64, Pending>,
    pending_bytes: usize,
    /// Stream offset just past the last byte, once a FIN was seen.
    fin: Option<u64>,
    closed: bool,
    framer: Framer,
}

impl TcpDir {
    fn buffered(&self) -> usize {
        self.pending_bytes + self.framer.buffered()
    }

    fn oldest_pending(&self) -> Option<i64> {
        self.pending.values().map(|p| p.meta.ts_ns).min()
    }

    fn push(
        &mut self,
        seg: &Segment<'_>,
        from_client: bool,
        sink: &mut Sink<'_>,
        limits: DecoderLimits,
    ) {
        if self.closed {
            if seg.declared > 0 {
                sink.stats.tcp_after_close += 1;
            }
            return;
        }
        let mut data_seq = seg.seq;
        if seg.syn {
            data_seq = seg.seq.wrapping_add(1);
            if self.base.is_none() {
                self.isn = Some(seg.seq);
                self.base = Some(data_seq);
                self.next = 0;
            }
        }
        let base = match self.base {
            Some(b) => b,
            None if seg.declared == 0 => {
                // Nothing was ever sent this way: a FIN just closes it.
                self.closed |= seg.fin;
                return;
            }
            None => {
                // First seen mid-connection: assume the stream (and a message) starts here.
                self.base = Some(data_seq);
                self.next = 0;
                data_seq
            }
        };
        // Stream offset of the segment, relative to the next expected byte (within +-2 GiB).
        let expected = base.wrapping_add(self.next as u32);
        let delta = i64::from(data_seq.wrapping_sub(expected) as i32);
        let start = i64::try_from(self.next)
            .unwrap_or(i64::MAX)
            .saturating_add(delta);
        let declared = u64::try_from(seg.declared).unwrap_or(u64::MAX);
        // Bytes before stream offset 0 (before the SYN or the first segment seen) are dropped.
        let (offset, skip) = if start < 0 {
            (0u64, start.unsigned_abs())
        } else {
            (start.unsigned_abs(), 0)
        };
        let len = declared.saturating_sub(skip);
        let data = seg
            .data
            .get(usize::try_from(skip).unwrap_or(usize::MAX)..)
            .unwrap_or(&[]);

        if len > 0 {
            if offset + len <= self.next {
                sink.stats.tcp_duplicates += 1;
            } else if offset <= self.next {
                self.apply(
                    offset,
                    data,
                    len,
                    seg.gap_cause,
                    seg.meta,
                    from_client,
                    sink,
                );
            } else {
                sink.stats.tcp_out_of_order += 1;
                let keep = match self.pending.get(&offset) {
                    Some(p) => (p.declared as u64) < len,
                    None => true,
                };
                if keep {
                    let p = Pending {
                        data: data.to_vec(),
                        declared: usize::try_from(len).unwrap_or(usize::MAX),
                        gap_cause: seg.gap_cause,
                        meta: seg.meta,
                    };
                    self.pending_bytes += p.data.len();
                    if let Some(old) = self.pending.insert(offset, p) {
                        self.pending_bytes -= old.data.len();
                    }
                }
            }
        }
        if seg.fin {
            let fin_at = offset + len;
            self.fin = Some(self.fin.map_or(fin_at, |f| f.max(fin_at)));
        }
        self.drain(from_client, sink);
        while self.pending_bytes > limits.max_tcp_ooo_bytes && self.skip_gap(from_client, sink) {}
        if let Some(fin) = self.fin
            && self.next >= fin
            && self.pending.is_empty()
        {
            self.framer.end(from_client, sink, EndCause::Fin);
            self.closed = true;
        }
    }

    /// Feeds bytes at stream offset `offset` (at or before `next`) to the framer.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        offset: u64,
        data: &[u8],
        len: u64,
        gap_cause: GapCause,
        meta: Meta,
        from_client: bool,
        sink: &mut Sink<'_>,
    ) {
        let trim = self.next - offset;
        let captured = (data.len() as u64).min(len);
        if trim < captured {
            let fresh = data
                .get(
                    usize::try_from(trim).unwrap_or(usize::MAX)
                        ..usize::try_from(captured).unwrap_or(usize::MAX),
                )
                .unwrap_or(&[]);
            self.framer.feed(fresh, trim == 0, meta, from_client, sink);
        }
        let lost = len - trim.max(captured);
        if lost > 0 {
            self.framer.gap(lost, gap_cause, from_client, sink);
        }
        self.next = offset + len;
    }

    /// Applies held-back segments that the stream has reached.
    fn drain(&mut self, from_client: bool, sink: &mut Sink<'_>) {
        while let Some(entry) = self.pending.first_entry() {
            let offset = *entry.key();
            if offset > self.next {
                break;
            }
            let p = entry.remove();
            self.pending_bytes -= p.data.len();
            let len = p.declared as u64;
            if offset + len <= self.next {
                sink.stats.tcp_duplicates += 1;
                continue;
            }
            self.apply(offset, &p.data, len, p.gap_cause, p.meta, from_client, sink);
        }
    }

    /// Gives up on the gap before the first held-back segment. `false` if there is none.
    fn skip_gap(&mut self, from_client: bool, sink: &mut Sink<'_>) -> bool {
        let Some((&offset, _)) = self.pending.first_key_value() else {
            return false;
        };
        if offset > self.next {
            self.framer
                .gap(offset - self.next, GapCause::Missing, from_client, sink);
            self.next = offset;
        }
        self.drain(from_client, sink);
        true
    }

    /// Gives up on every gap, then closes the direction if its FIN was reached.
    fn skip_gaps(&mut self, from_client: bool, sink: &mut Sink<'_>) {
        while self.skip_gap(from_client, sink) {}
        if let Some(fin) = self.fin
            && self.next >= fin
        {
            self.framer.end(from_client, sink, EndCause::Fin);
            self.closed = true;
        }
    }

    /// Flushes everything: gaps given up on, a partial message emitted.
    fn end(&mut self, from_client: bool, sink: &mut Sink<'_>, cause: EndCause) {
        if self.closed {
            return;
        }
        self.skip_gaps(from_client, sink);
        if !self.closed {
            self.framer.end(from_client, sink, cause);
            self.closed = true;
        }
    }
}

/// Cuts a TCP byte stream into DNS messages at their 2-byte length prefixes.
#[derive(Default)]
enum Framer {
    /// At a message boundary.
    #[default]
    Idle,
    /// One byte of a length prefix seen.
    HalfPrefix(u8),
    /// Collecting a message of `len` bytes.
    Body {
        len: usize,
        buf: Vec<u8>,
        last: Meta,
    },
    /// A gap hit the middle of a message that was emitted partially; `remaining` of its bytes
    /// follow and are skipped.
    Skip { remaining: u64 },
    /// Framing lost in a gap: discard bytes until the next segment starts, and assume a
    /// message starts there.
    Lost,
}

impl Framer {
    fn buffered(&self) -> usize {
        match self {
            Framer::Body { buf, .. } => buf.len(),
            _ => 0,
        }
    }

    /// Feeds in-order bytes; `boundary` says they start a TCP segment.
    fn feed(
        &mut self,
        mut data: &[u8],
        boundary: bool,
        meta: Meta,
        from_client: bool,
        sink: &mut Sink<'_>,
    ) {
        if let Framer::Lost = self {
            if !boundary {
                sink.stats.tcp_unframed_bytes += data.len() as u64;
                return;
            }
            sink.stats.tcp_resyncs += 1;
            *self = Framer::Idle;
        }
        while !data.is_empty() {
            match self {
                Framer::Idle => {
                    if let [hi, lo, rest @ ..] = data {
                        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                        data = rest;
                        self.start(len, meta, sink);
                    } else if let [hi] = data {
                        *self = Framer::HalfPrefix(*hi);
                        data = &[];
                    }
                }
                Framer::HalfPrefix(hi) => {
                    if let [lo, rest @ ..] = data {
                        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                        data = rest;
                        self.start(len, meta, sink);
                    }
                }
                Framer::Body { len, buf, last } => {
                    let take = (*len - buf.len()).min(data.len());
                    let (now, rest) = data.split_at(take);
                    buf.extend_from_slice(now);
                    data = rest;
                    *last = meta;
                    if buf.len() == *len {
                        let bytes = std::mem::take(buf);
                        let wire_len = *len;
                        *self = Framer::Idle;
                        sink.emit(from_client, meta, wire_len, bytes, None);
                    }
                }
                Framer::Skip { remaining } => {
                    let take = (*remaining).min(data.len() as u64);
                    data = data
                        .get(usize::try_from(take).unwrap_or(usize::MAX)..)
                        .unwrap_or(&[]);
                    *remaining -= take;
                    if *remaining == 0 {
                        *self = Framer::Idle;
                    }
                }
                Framer::Lost => {
                    sink.stats.tcp_unframed_bytes += data.len() as u64;
                    return;
                }
            }
        }
    }

    fn start(&mut self, len: usize, meta: Meta, sink: &mut Sink<'_>) {
        if len == 0 {
            sink.stats.tcp_empty_messages += 1;
            *self = Framer::Idle;
        } else {
            *self = Framer::Body {
                len,
                buf: Vec::with_capacity(len),
                last: meta,
            };
        }
    }

    /// `n` bytes of the stream are lost at the current position.
    fn gap(&mut self, n: u64, cause: GapCause, from_client: bool, sink: &mut Sink<'_>) {
        sink.stats.tcp_gaps += 1;
        sink.stats.tcp_gap_bytes += n;
        match std::mem::take(self) {
            Framer::Idle | Framer::HalfPrefix(_) | Framer::Lost => {
                // The lost bytes may hold any number of message boundaries.
                *self = Framer::Lost;
            }
            Framer::Body { len, buf, last } => {
                let got = buf.len();
                let note = match cause {
                    GapCause::CaptureCap => format!("truncated by capture: {got} of {len} bytes"),
                    GapCause::Missing => {
                        format!("tcp data missing from capture: got {got} of {len} bytes")
                    }
                };
                sink.emit(from_client, last, len, buf, Some(note));
                let remaining = (len - got) as u64;
                *self = match n.cmp(&remaining) {
                    std::cmp::Ordering::Less => Framer::Skip {
                        remaining: remaining - n,
                    },
                    std::cmp::Ordering::Equal => Framer::Idle,
                    std::cmp::Ordering::Greater => Framer::Lost,
                };
            }
            Framer::Skip { remaining } => {
                *self = match n.cmp(&remaining) {
                    std::cmp::Ordering::Less => Framer::Skip {
                        remaining: remaining - n,
                    },
                    std::cmp::Ordering::Equal => Framer::Idle,
                    std::cmp::Ordering::Greater => Framer::Lost,
                };
            }
        }
    }

    /// The stream ends: emit a partial message, if one was under way.
    fn end(&mut self, from_client: bool, sink: &mut Sink<'_>, cause: EndCause) {
        match std::mem::take(self) {
            Framer::Body { len, buf, last } => {
                let note = format!(
                    "tcp stream ended mid-message: got {} of {} bytes{}",
                    buf.len(),
                    len,
                    cause.note()
                );
                sink.emit(from_client, last, len, buf, Some(note));
            }
            Framer::HalfPrefix(_) => sink.stats.tcp_partial_prefixes += 1,
            Framer::Idle | Framer::Skip { .. } | Framer::Lost => {}
        }
    }
}

