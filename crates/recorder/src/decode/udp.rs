//! UDP: one DNS message per datagram; a datagram cut short by the capture (or by missing
//! fragments) becomes a message with `capture_error` set.

use etherparse::UdpHeaderSlice;

use super::{Decoder, DnsMessage, L4, Origin, Transport, oriented_flow};

impl Decoder {
    pub(super) fn push_udp(&mut self, l4: L4<'_>, out: &mut Vec<DnsMessage>) {
        let L4 {
            src,
            dst,
            data: seg,
            declared,
            meta,
            origin,
            ..
        } = l4;
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
            stack: None,
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
}
