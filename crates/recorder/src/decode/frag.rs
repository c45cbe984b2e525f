//! IP fragment reassembly (IPv4 and IPv6), bounded by [`super::DecoderLimits`]: complete
//! datagrams and, when fragments never all arrive, the contiguous bytes that did (as long as
//! the first fragment, which carries the transport header, arrived).

use std::net::IpAddr;

use super::ip::{PROTO_AUTH, PROTO_TCP, PROTO_UDP, is_ipv6_ext};
use super::{Decoder, DnsMessage, L4, Meta, Origin};

/// Largest reassembled IP payload: the IPv4 total length and IPv6 payload length are 16 bits.
const MAX_DATAGRAM: usize = 65_535;

impl Decoder {
    pub(super) fn push_fragment(
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
    pub(super) fn make_room_for_fragments(&mut self, out: &mut Vec<DnsMessage>) {
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

    pub(super) fn complete_datagram(
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
        let l4 = L4 {
            src: key.src,
            dst: key.dst,
            proto: key.proto,
            v6: key.src.is_ipv6(),
            data,
            declared: total,
            meta,
            origin: Origin::Packet,
        };
        self.push_upper(l4, out);
    }

    /// A datagram whose fragments did not all arrive: emit what can be attributed.
    pub(super) fn flush_datagram(&mut self, key: FragKey, buf: FragBuf, out: &mut Vec<DnsMessage>) {
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
        let l4 = L4 {
            src: key.src,
            dst: key.dst,
            proto: key.proto,
            v6: key.src.is_ipv6(),
            data,
            declared,
            meta,
            origin: Origin::IncompleteFragments,
        };
        self.push_upper(l4, out);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct FragKey {
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) id: u32,
    pub(super) proto: u8,
}

pub(super) struct Fragment<'a> {
    /// Byte offset of this fragment in the datagram.
    pub(super) offset: usize,
    pub(super) more: bool,
    /// Captured bytes (possibly fewer than `declared`).
    pub(super) data: &'a [u8],
    /// Length of this fragment's data per its IP header.
    pub(super) declared: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FragState {
    Collecting,
    /// Known not to be DNS: data dropped, remaining fragments swallowed until complete or idle.
    NotDns,
}

pub(super) struct FragBuf {
    pub(super) serial: u64,
    pub(super) state: FragState,
    /// Datagram bytes, zero where nothing arrived (only [`FragBuf::prefix_len`] bytes are read).
    pub(super) data: Vec<u8>,
    /// Sorted, merged byte ranges that hold captured data.
    pub(super) have: Vec<(usize, usize)>,
    /// Sorted, merged byte ranges covered by fragments that arrived, including parts the
    /// capture cap cut off.
    pub(super) seen: Vec<(usize, usize)>,
    /// Datagram length, known once the last fragment arrived.
    pub(super) end: Option<usize>,
    pub(super) fragments: u32,
    pub(super) last: Meta,
}

impl FragBuf {
    pub(super) fn new(serial: u64, meta: Meta) -> Self {
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
    pub(super) fn add(&mut self, frag: &Fragment<'_>, meta: Meta) -> bool {
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

    pub(super) fn is_complete(&self) -> bool {
        match (self.end, self.seen.first()) {
            (Some(end), Some(&(0, covered))) => covered >= end,
            _ => false,
        }
    }

    /// Length of the captured bytes contiguous from the start of the datagram.
    pub(super) fn prefix_len(&self) -> usize {
        match self.have.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    /// Source and destination port, once the first 4 bytes of the datagram are here.
    pub(super) fn ports(&self) -> Option<(u16, u16)> {
        if self.prefix_len() < 4 {
            return None;
        }
        let b = self.data.get(..4)?;
        Some((
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
        ))
    }

    pub(super) fn make_tombstone(&mut self) {
        self.state = FragState::NotDns;
        self.data = Vec::new();
        self.have.clear();
    }
}

/// Inserts `r` into a sorted list of disjoint ranges, merging overlapping and touching ones.
pub(super) fn insert_range(ranges: &mut Vec<(usize, usize)>, r: (usize, usize)) {
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
