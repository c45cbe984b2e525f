//! IP: IPv4 and IPv6 headers (and IPv6 extension headers) -> the transport bytes ([`L4`])
//! handed to UDP ([`super::udp`]) or TCP ([`super::tcp`]); fragments go to [`super::frag`].

use std::net::IpAddr;

use etherparse::{
    IpAuthHeaderSlice, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice,
    Ipv6RawExtHeaderSlice,
};

use super::frag::{FragKey, Fragment};
use super::{Decoder, DnsMessage, L4, Meta, Origin};

pub(super) const PROTO_HOP_BY_HOP: u8 = 0;
pub(super) const PROTO_TCP: u8 = 6;
pub(super) const PROTO_UDP: u8 = 17;
pub(super) const PROTO_ROUTING: u8 = 43;
pub(super) const PROTO_FRAGMENT: u8 = 44;
pub(super) const PROTO_AUTH: u8 = 51;
pub(super) const PROTO_DEST_OPTS: u8 = 60;
pub(super) const PROTO_MOBILITY: u8 = 135;
pub(super) const PROTO_HIP: u8 = 139;
pub(super) const PROTO_SHIM6: u8 = 140;

/// IPv6 extension headers walked before giving up on a packet (each is at least 8 bytes, so
/// this only matters for crafted packets).
pub(super) const MAX_IPV6_EXT_HEADERS: usize = 32;
impl Decoder {
    pub(super) fn push_ipv4(
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
        let l4 = L4 {
            src,
            dst,
            proto,
            v6: false,
            data: payload,
            declared,
            meta,
            origin: Origin::Packet,
        };
        self.push_upper(l4, out);
    }

    pub(super) fn push_ipv6(
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
                let l4 = L4 {
                    src,
                    dst,
                    proto,
                    v6: true,
                    data: payload,
                    declared,
                    meta,
                    origin: Origin::Packet,
                };
                self.push_upper(l4, out);
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
    pub(super) fn push_upper(&mut self, l4: L4<'_>, out: &mut Vec<DnsMessage>) {
        let L4 {
            proto,
            v6,
            data: payload,
            declared,
            ..
        } = l4;
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
        let l4 = L4 {
            proto,
            data: seg,
            declared: declared.saturating_sub(offset).max(seg.len()),
            ..l4
        };
        match proto {
            PROTO_UDP => self.push_udp(l4, out),
            PROTO_TCP => self.push_tcp(l4, out),
            _ => self.stats.other_protocol += 1,
        }
    }
}

pub(super) enum Ipv6Next {
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

pub(super) fn is_ipv6_ext(proto: u8) -> bool {
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
pub(super) fn walk_ipv6_ext(mut next: u8, buf: &[u8]) -> Ipv6Next {
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
