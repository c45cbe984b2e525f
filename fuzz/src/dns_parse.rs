//! Target `dns_parse`: arbitrary bytes -> `dns::parse`: never panics, and what it returns is
//! self-consistent (see [`check_parsed`]) and deterministic.
//!
//! Differential check: when hickory-proto decodes the whole message at once
//! (`Message::from_vec`), the piecewise parse must have read every question and answer too,
//! with the same types, classes and TTLs, and must agree on whether EDNS is present.

use dnsledger::dns;
use dnsledger_schema::names;
use hickory_proto::op::Message;

use crate::check_parsed;

/// Checks one input (one DNS message); panics on a violated invariant.
pub fn run(data: &[u8]) {
    let p = dns::parse(data);
    check_parsed(data, &p);
    assert_eq!(p, dns::parse(data), "parse is not deterministic");

    if let Ok(m) = Message::from_vec(data) {
        assert_eq!(p.questions.len(), m.queries.len(), "questions vs hickory");
        for (q, hq) in p.questions.iter().zip(&m.queries) {
            assert_eq!(q.qtype, u16::from(hq.query_type()));
            assert_eq!(q.qclass, u16::from(hq.query_class()));
            assert_eq!(
                q.name.eq_ignore_ascii_case("."),
                hq.name().is_root(),
                "root name vs hickory"
            );
        }
        assert_eq!(p.answers.len(), m.answers.len(), "answers vs hickory");
        for (a, ha) in p.answers.iter().zip(&m.answers) {
            assert_eq!(a.ttl, ha.ttl, "ttl vs hickory");
            assert_eq!(
                a.rtype,
                names::rtype(u16::from(ha.record_type())),
                "type vs hickory"
            );
        }
        assert_eq!(
            p.edns.is_some(),
            m.edns.is_some(),
            "EDNS presence vs hickory"
        );
    }
}
