//! Arbitrary bytes -> `dns::parse`: never panics, and what it returns is self-consistent
//! (see `dnsledger_fuzz::check_parsed`) and deterministic.
//!
//! Differential check: when hickory-proto decodes the whole message at once
//! (`Message::from_vec`), the piecewise parse must have read every question and answer too,
//! with the same types, classes and TTLs, and must agree on whether EDNS is present.
#![no_main]

use dnsledger::dns;
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = dns::parse(data);
    dnsledger_fuzz::check_parsed(data, &p);
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
                dnsledger_schema::names::rtype(u16::from(ha.record_type())),
                "type vs hickory"
            );
        }
        assert_eq!(
            p.edns.is_some(),
            m.edns.is_some(),
            "EDNS presence vs hickory"
        );
    }
});
