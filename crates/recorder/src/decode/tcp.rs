//! TCP: per connection and direction, the byte stream rebuilt from sequence numbers, the
//! 2-byte length prefixes stripped, and each DNS message emitted once complete (see the
//! module documentation of [`super`] for gaps, resynchronisation and eviction).

use std::collections::{BTreeMap, HashMap};

use etherparse::TcpHeaderSlice;

use super::{
    DecodeStats, Decoder, DecoderLimits, DnsMessage, EndCause, Flow, GapCause, L4, Meta, Origin,
    Transport, oriented_flow,
};
use crate::capture::KernelOwner;

impl Decoder {
    pub(super) fn push_tcp(&mut self, l4: L4<'_>, out: &mut Vec<DnsMessage>) {
        let L4 {
            src,
            dst,
            data: seg,
            declared,
            meta,
            origin,
            ..
        } = l4;
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
    pub(super) fn make_room_for_flows(&mut self, out: &mut Vec<DnsMessage>) {
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

    pub(super) fn end_flow(&mut self, key: Flow, cause: EndCause, out: &mut Vec<DnsMessage>) {
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
}

/// Keys of the flows matching `filter`, least recently active first.
pub(super) fn flows_by_age(
    flows: &HashMap<Flow, TcpFlow>,
    filter: impl Fn(&TcpFlow) -> bool,
) -> Vec<Flow> {
    let mut v: Vec<(i64, u64, Flow)> = flows
        .iter()
        .filter(|(_, f)| filter(f))
        .map(|(k, f)| (f.last_ts_ns, f.serial, *k))
        .collect();
    v.sort_unstable_by_key(|&(ts, serial, _)| (ts, serial));
    v.into_iter().map(|(_, _, k)| k).collect()
}

/// One TCP segment, as seen by a [`TcpDir`].
pub(super) struct Segment<'a> {
    pub(super) seq: u32,
    pub(super) syn: bool,
    pub(super) fin: bool,
    pub(super) rst: bool,
    /// Captured payload.
    pub(super) data: &'a [u8],
    /// Payload length per the IP header (`data` may be shorter).
    pub(super) declared: usize,
    /// What a shortfall of `data` against `declared` means.
    pub(super) gap_cause: GapCause,
    pub(super) meta: Meta,
}

/// Where emitted messages go, with the context they need.
pub(super) struct Sink<'a> {
    pub(super) flow: Flow,
    pub(super) owner: Option<KernelOwner>,
    pub(super) out: &'a mut Vec<DnsMessage>,
    pub(super) stats: &'a mut DecodeStats,
}

impl Sink<'_> {
    pub(super) fn emit(
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
            stack: None,
        });
    }
}

pub(super) struct TcpFlow {
    pub(super) serial: u64,
    pub(super) last_ts_ns: i64,
    pub(super) owner: Option<KernelOwner>,
    /// 0: client -> server, 1: server -> client.
    pub(super) dirs: [TcpDir; 2],
}

impl TcpFlow {
    pub(super) fn new(serial: u64, ts_ns: i64) -> Self {
        TcpFlow {
            serial,
            last_ts_ns: ts_ns,
            owner: None,
            dirs: [TcpDir::default(), TcpDir::default()],
        }
    }

    pub(super) fn started(&self) -> bool {
        self.dirs.iter().any(|d| d.base.is_some())
    }

    pub(super) fn buffered(&self) -> usize {
        self.dirs.iter().map(TcpDir::buffered).sum()
    }

    pub(super) fn oldest_pending(&self) -> Option<i64> {
        self.dirs.iter().filter_map(TcpDir::oldest_pending).min()
    }

    /// Flushes both directions: gaps given up on, partial messages emitted.
    pub(super) fn end(&mut self, sink: &mut Sink<'_>, cause: EndCause) {
        for (dir, d) in self.dirs.iter_mut().enumerate() {
            d.end(dir == 0, sink, cause);
        }
    }
}

/// Bytes of one direction's stream, handed to [`TcpDir::apply`].
pub(super) struct Chunk<'a> {
    /// Stream offset of the first byte.
    pub(super) offset: u64,
    /// Captured bytes (possibly fewer than `len`).
    pub(super) data: &'a [u8],
    /// Length per the headers.
    pub(super) len: u64,
    /// What a shortfall of `data` against `len` means.
    pub(super) gap_cause: GapCause,
    pub(super) meta: Meta,
}

/// A segment held back until the gap before it fills.
pub(super) struct Pending {
    pub(super) data: Vec<u8>,
    pub(super) declared: usize,
    pub(super) gap_cause: GapCause,
    pub(super) meta: Meta,
}

/// One direction of a TCP connection.
#[derive(Default)]
pub(super) struct TcpDir {
    /// ISN from the SYN, to recognise a retransmitted SYN.
    pub(super) isn: Option<u32>,
    /// Sequence number of stream offset 0: ISN + 1, or the first data segment's number when
    /// the connection was first seen mid-stream. `None` until then.
    pub(super) base: Option<u32>,
    /// Stream offset of the next byte expected.
    pub(super) next: u64,
    /// Segments ahead of `next`, by stream offset.
    pub(super) pending: BTreeMap<u64, Pending>,
    pub(super) pending_bytes: usize,
    /// Stream offset just past the last byte, once a FIN was seen.
    pub(super) fin: Option<u64>,
    pub(super) closed: bool,
    pub(super) framer: Framer,
}

impl TcpDir {
    pub(super) fn buffered(&self) -> usize {
        self.pending_bytes + self.framer.buffered()
    }

    pub(super) fn oldest_pending(&self) -> Option<i64> {
        self.pending.values().map(|p| p.meta.ts_ns).min()
    }

    pub(super) fn push(
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
                let chunk = Chunk {
                    offset,
                    data,
                    len,
                    gap_cause: seg.gap_cause,
                    meta: seg.meta,
                };
                self.apply(chunk, from_client, sink);
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
        self.drain(Some(seg.meta), from_client, sink);
        while self.pending_bytes > limits.max_tcp_ooo_bytes
            && self.skip_gap(Some(seg.meta), from_client, sink)
        {}
        if let Some(fin) = self.fin
            && self.next >= fin
            && self.pending.is_empty()
        {
            self.framer.end(from_client, sink, EndCause::Fin);
            self.closed = true;
        }
    }

    /// Feeds the bytes of `chunk` (which starts at or before `next`) to the framer.
    pub(super) fn apply(&mut self, chunk: Chunk<'_>, from_client: bool, sink: &mut Sink<'_>) {
        let Chunk {
            offset,
            data,
            len,
            gap_cause,
            meta,
        } = chunk;
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

    /// Applies held-back segments that the stream has reached. Messages they complete are
    /// stamped with `now` (the packet that let the stream reach them), else with the time the
    /// held-back segment was captured.
    pub(super) fn drain(&mut self, now: Option<Meta>, from_client: bool, sink: &mut Sink<'_>) {
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
            let meta = now.unwrap_or(p.meta);
            let chunk = Chunk {
                offset,
                data: &p.data,
                len,
                gap_cause: p.gap_cause,
                meta,
            };
            self.apply(chunk, from_client, sink);
        }
    }

    /// Gives up on the gap before the first held-back segment. `false` if there is none.
    pub(super) fn skip_gap(
        &mut self,
        now: Option<Meta>,
        from_client: bool,
        sink: &mut Sink<'_>,
    ) -> bool {
        let Some((&offset, _)) = self.pending.first_key_value() else {
            return false;
        };
        if offset > self.next {
            self.framer
                .gap(offset - self.next, GapCause::Missing, from_client, sink);
            self.next = offset;
        }
        self.drain(now, from_client, sink);
        true
    }

    /// Gives up on every gap, then closes the direction if its FIN was reached.
    pub(super) fn skip_gaps(&mut self, from_client: bool, sink: &mut Sink<'_>) {
        while self.skip_gap(None, from_client, sink) {}
        if let Some(fin) = self.fin
            && self.next >= fin
        {
            self.framer.end(from_client, sink, EndCause::Fin);
            self.closed = true;
        }
    }

    /// Flushes everything: gaps given up on, a partial message emitted.
    pub(super) fn end(&mut self, from_client: bool, sink: &mut Sink<'_>, cause: EndCause) {
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

/// Whether `data` (the start of a TCP segment, after framing was lost) looks like a length
/// prefix and a DNS header: a length of at least 12, and where the header is present a known
/// opcode (QUERY, IQUERY, STATUS, NOTIFY, UPDATE, DSO) and at most one question. A segment
/// that starts mid-message rarely passes; one that does yields a garbage message that the DNS
/// parser rejects.
pub(super) fn plausible_message_start(data: &[u8]) -> bool {
    let [hi, lo, header @ ..] = data else {
        return false;
    };
    if u16::from_be_bytes([*hi, *lo]) < 12 {
        return false;
    }
    match header {
        [_, _, flags, _, qd_hi, qd_lo, ..] => {
            matches!((flags >> 3) & 0x0f, 0 | 1 | 2 | 4 | 5 | 6)
                && u16::from_be_bytes([*qd_hi, *qd_lo]) <= 1
        }
        _ => true,
    }
}

/// Cuts a TCP byte stream into DNS messages at their 2-byte length prefixes.
#[derive(Default)]
pub(super) enum Framer {
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
    pub(super) fn buffered(&self) -> usize {
        match self {
            Framer::Body { buf, .. } => buf.len(),
            _ => 0,
        }
    }

    /// Feeds in-order bytes; `boundary` says they start a TCP segment.
    pub(super) fn feed(
        &mut self,
        mut data: &[u8],
        boundary: bool,
        meta: Meta,
        from_client: bool,
        sink: &mut Sink<'_>,
    ) {
        if let Framer::Lost = self {
            if !boundary || !plausible_message_start(data) {
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

    pub(super) fn start(&mut self, len: usize, meta: Meta, sink: &mut Sink<'_>) {
        if len == 0 {
            sink.stats.tcp_empty_messages += 1;
            *self = Framer::Idle;
        } else {
            // No preallocation of `len`: the memory limits count buffered bytes, and a 2-byte
            // prefix claiming 64 KiB must not reserve 64 KiB per connection.
            *self = Framer::Body {
                len,
                buf: Vec::new(),
                last: meta,
            };
        }
    }

    /// `n` bytes of the stream are lost at the current position.
    pub(super) fn gap(&mut self, n: u64, cause: GapCause, from_client: bool, sink: &mut Sink<'_>) {
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
    pub(super) fn end(&mut self, from_client: bool, sink: &mut Sink<'_>, cause: EndCause) {
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
