//! Columns a segment stores only where they cannot be derived from the others (schema
//! version 2).
//!
//! Four columns repeat what other columns of the same row say: `query_ts` (the query's capture
//! time is `ts` whenever there is a query), `latency_ns` (`response_ts − query_ts`),
//! `answer_ips` (the data of the A and AAAA records of `answers`) and `questions` (the one
//! question `(qname, qtype, qclass)` of nearly every message). Since schema version 2 the
//! writer ([`crate::TransactionBatchBuilder`]) leaves them NULL where the rule below gives the
//! same value, and every reader computes `coalesce(stored, derived)`: segments of version 1,
//! which store every value, read the same through the same expression. The stored column
//! stays in the schema (a NULL costs a few bits per row group), so older files and newer ones
//! have one shape.
//!
//! The rules, the same in Rust (here), in dnsql's table (`crates/query`), and in the SQL the
//! other engines get (`--print-sql`, the README's Athena/Trino view):
//! - `query_ts`: `ts` unless `status` is `unsolicited` (a response without a query: NULL).
//! - `latency_ns`: `response_ts − query_ts` in nanoseconds (`query_ts` as above), NULL
//!   unless both are there.
//! - `answer_ips`: unless `status` is `lookup` (whose addresses come from the C library and
//!   are always stored), the `data` of every `answers` element of type `A` or `AAAA`, in
//!   order; NULL when `answers` is NULL.
//! - `questions`: unless `status` is `lookup`, the one-element list
//!   `[{name: qname, type: qtype, class: qclass}]` when all three are there; else NULL.
//!
//! A value that differs from its rule (several questions, an A record whose data did not
//! decode as an address, ...) is stored as it is. The one value a NULL cannot express is a
//! NULL where the rule gives a value (a row not `unsolicited` without a query time, say):
//! the recorder never builds such rows.
//!
//! # Raw messages (schema version 3)
//!
//! Nearly every raw message differs from every other only in its first two bytes, the DNS
//! ID, which is also the `dns_id` column. Since schema version 3 the writer stores a message
//! whose row has a `dns_id` and which has at least two bytes in the column named by
//! [`RAW_XOR`] (`query_raw_x`, `response_raw_x`) with its first two bytes XORed with `dns_id`
//! (big-endian): zero whenever the message's ID is `dns_id` (every query, and every response
//! paired by its ID), and restorable always (a response whose ID differs keeps the difference).
//! Equal messages are then equal bytes, which the segment writer's dictionary stores once.
//! `query_raw` / `response_raw` are NULL for such a message; any other one (no `dns_id`:
//! a message too short for a header, a row without a message; fewer than two bytes) is stored
//! there as it is, and its `_x` column is NULL. Readers compute
//! `coalesce(query_raw, restore(query_raw_x, dns_id))` and show it as `query_raw` (the `_x`
//! columns are not in their tables): segments of versions 1 and 2, which have the bytes in
//! `query_raw` and no `_x` column, read unchanged through the same expression, in every engine,
//! without looking at a file's version.

use crate::{Answer, Question, col, status};

/// The raw message columns readers show and the column each is stored in with its ID XORed
/// out since schema version 3: (shown, stored).
pub const RAW_XOR: [(&str, &str); 2] = [
    (col::QUERY_RAW, col::QUERY_RAW_X),
    (col::RESPONSE_RAW, col::RESPONSE_RAW_X),
];

/// XORs the first two bytes of `bytes` with `id` (big-endian); its own inverse. Bytes past a
/// message shorter than two bytes are not there to XOR.
pub fn xor_id(bytes: &mut [u8], id: u16) {
    for (b, k) in bytes.iter_mut().zip(id.to_be_bytes()) {
        *b ^= k;
    }
}

/// The `dns_id` to XOR a message's bytes with when it is stored in its `_x` column, `None`
/// when it is stored as it is (no `dns_id`, fewer than two bytes).
pub fn raw_xor_key(raw: &[u8], dns_id: Option<u16>) -> Option<u16> {
    dns_id.filter(|_| raw.len() >= 2)
}

/// A raw message as readers see it: the stored bytes if there are any, else the XORed ones
/// with the ID restored (`None` without a `dns_id`, which the writer never leaves).
pub fn raw_restored(
    stored: Option<&[u8]>,
    xored: Option<&[u8]>,
    dns_id: Option<u16>,
) -> Option<Vec<u8>> {
    if let Some(s) = stored {
        return Some(s.to_vec());
    }
    let (x, id) = (xored?, dns_id?);
    let mut out = x.to_vec();
    xor_id(&mut out, id);
    Some(out)
}

/// `query_ts` by the rule: `ts` unless the row is `unsolicited`.
pub fn query_ts(ts: i64, row_status: &str) -> Option<i64> {
    (row_status != status::UNSOLICITED).then_some(ts)
}

/// `latency_ns` by the rule: `response_ts − query_ts`.
pub fn latency_ns(query_ts: Option<i64>, response_ts: Option<i64>) -> Option<i64> {
    query_ts.zip(response_ts).map(|(q, r)| r.saturating_sub(q))
}

/// Whether `rtype` is a type whose data is an address in `answer_ips`.
pub fn is_address_type(rtype: &str) -> bool {
    rtype == "A" || rtype == "AAAA"
}

/// `answer_ips` by the rule: the A/AAAA data of `answers` (not for lookup rows).
pub fn answer_ips(row_status: &str, answers: Option<&[Answer]>) -> Option<Vec<String>> {
    if row_status == status::LOOKUP {
        return None;
    }
    answers.map(|a| {
        a.iter()
            .filter(|a| is_address_type(&a.rtype))
            .map(|a| a.data.clone())
            .collect()
    })
}

/// Whether `ips` is what the rule derives from `answers` (without building the list).
pub fn answer_ips_derivable(
    row_status: &str,
    answers: Option<&[Answer]>,
    ips: Option<&[String]>,
) -> bool {
    match (row_status == status::LOOKUP, answers, ips) {
        (true, _, None) | (false, None, None) => true,
        (true, _, Some(_)) | (false, None, Some(_)) | (false, Some(_), None) => false,
        (false, Some(answers), Some(ips)) => answers
            .iter()
            .filter(|a| is_address_type(&a.rtype))
            .map(|a| a.data.as_str())
            .eq(ips.iter().map(String::as_str)),
    }
}

/// `questions` by the rule: the one question `(qname, qtype, qclass)` (not for lookup rows).
pub fn questions(
    row_status: &str,
    qname: Option<&str>,
    qtype: Option<u16>,
    qclass: Option<u16>,
) -> Option<Vec<Question>> {
    if row_status == status::LOOKUP {
        return None;
    }
    match (qname, qtype, qclass) {
        (Some(name), Some(qtype), Some(qclass)) => Some(vec![Question {
            name: name.to_owned(),
            qtype,
            qclass,
        }]),
        _ => None,
    }
}

/// Whether `qs` is what the rule derives (without building the list).
pub fn questions_derivable(
    row_status: &str,
    qname: Option<&str>,
    qtype: Option<u16>,
    qclass: Option<u16>,
    qs: Option<&[Question]>,
) -> bool {
    let lookup = row_status == status::LOOKUP;
    match (qname, qtype, qclass, qs) {
        (Some(name), Some(t), Some(c), Some([q])) if !lookup => {
            q.name == name && q.qtype == t && q.qclass == c
        }
        (Some(_), Some(_), Some(_), _) if !lookup => false,
        (_, _, _, qs) => qs.is_none(),
    }
}

/// The SQL dialects the derived columns are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// DuckDB (over `read_parquet`: timestamps are `TIMESTAMPTZ_NS`).
    Duckdb,
    /// Spark SQL over the raw files read with `nanosAsLong` (timestamps are nanoseconds as
    /// bigint, before the view turns them into timestamps).
    Spark,
    /// Athena / Trino over the DDL's table (timestamps as `timestamp`; nanoseconds are lost
    /// at the table's precision).
    Trino,
}

/// The SQL expression of a raw message column restored from the row's stored columns
/// ([`RAW_XOR`]; `raw` is `query_raw` or `response_raw`, `x` its `_x` column):
/// `coalesce(raw, bytes of x with the first two XORed with dns_id)`.
pub fn raw_sql(dialect: Dialect, raw: &str, x: &str) -> String {
    let id = col::DNS_ID;
    let restored = match dialect {
        // Blob slices are 1-based and inclusive; the ID goes through its hex text.
        Dialect::Duckdb => {
            format!("unhex(printf('%04x', xor(('0x' || hex({x}[1:2]))::INTEGER, {id}))) || {x}[3:]")
        }
        Dialect::Spark => format!(
            "concat(unhex(lpad(hex(CAST(conv(hex(substring({x}, 1, 2)), 16, 10) AS INT) ^ {id}), \
             4, '0')), substring({x}, 3))"
        ),
        Dialect::Trino => format!(
            "substr(to_big_endian_32(CAST(bitwise_xor(from_big_endian_32(X'0000' || \
             substr({x}, 1, 2)), {id}) AS integer)), 3, 2) || substr({x}, 3)"
        ),
    };
    format!("coalesce({raw}, {restored})")
}

/// The SQL expression of each column readers compute, over the stored columns of the same
/// row, in `dialect`, in the order of [`COMPUTED`] (the [`DERIVED`] columns, then the raw
/// messages of [`RAW_XOR`]): (column, expression). dnsql builds the same expressions with
/// DataFusion's API (`crates/query`).
pub fn sql(dialect: Dialect) -> Vec<(&'static str, String)> {
    let unsolicited = status::UNSOLICITED;
    let lookup = status::LOOKUP;
    let query_ts = format!(
        "coalesce({q}, CASE WHEN {s} <> '{unsolicited}' THEN {ts} END)",
        q = col::QUERY_TS,
        s = col::STATUS,
        ts = col::TS
    );
    let latency = match dialect {
        Dialect::Duckdb => format!(
            "coalesce({l}, epoch_ns({r}) - epoch_ns({query_ts}))",
            l = col::LATENCY_NS,
            r = col::RESPONSE_TS
        ),
        Dialect::Spark => format!(
            "coalesce({l}, {r} - {query_ts})",
            l = col::LATENCY_NS,
            r = col::RESPONSE_TS
        ),
        // The table reads timestamps at millisecond precision: a derived latency is whole
        // milliseconds there.
        Dialect::Trino => format!(
            "coalesce({l}, date_diff('millisecond', {query_ts}, {r}) * 1000000)",
            l = col::LATENCY_NS,
            r = col::RESPONSE_TS
        ),
    };
    // DuckDB: a list comprehension, not `x -> ...` (the DuckDB 1.5 CLI prints a deprecation
    // warning for the arrow lambda into its output, which then no longer is the result).
    let ips_of_answers = match dialect {
        Dialect::Duckdb => format!(
            "[x.data FOR x IN {answers} IF x.type IN ('A', 'AAAA')]",
            answers = col::ANSWERS
        ),
        Dialect::Spark | Dialect::Trino => format!(
            "transform(filter({answers}, x -> x.type IN ('A', 'AAAA')), x -> x.data)",
            answers = col::ANSWERS
        ),
    };
    let answer_ips = format!(
        "coalesce({ips}, CASE WHEN {s} <> '{lookup}' THEN {ips_of_answers} END)",
        ips = col::ANSWER_IPS,
        s = col::STATUS,
    );
    let (n, t, c) = (col::QNAME, col::QTYPE, col::QCLASS);
    let list = match dialect {
        Dialect::Duckdb => format!("[{{'name': {n}, 'type': {t}, 'class': {c}}}]"),
        Dialect::Spark => format!("array(named_struct('name', {n}, 'type', {t}, 'class', {c}))"),
        Dialect::Trino => format!(
            "ARRAY[CAST(ROW({n}, {t}, {c}) AS ROW(name varchar, type integer, class integer))]"
        ),
    };
    let questions = format!(
        "coalesce({qs}, CASE WHEN {s} <> '{lookup}' AND {n} IS NOT NULL AND {t} IS NOT NULL \
         AND {c} IS NOT NULL THEN {list} END)",
        qs = col::QUESTIONS,
        s = col::STATUS,
        n = col::QNAME,
        t = col::QTYPE,
        c = col::QCLASS,
    );
    vec![
        (col::QUERY_TS, query_ts),
        (col::LATENCY_NS, latency),
        (col::ANSWER_IPS, answer_ips),
        (col::QUESTIONS, questions),
        (
            col::QUERY_RAW,
            raw_sql(dialect, col::QUERY_RAW, col::QUERY_RAW_X),
        ),
        (
            col::RESPONSE_RAW,
            raw_sql(dialect, col::RESPONSE_RAW, col::RESPONSE_RAW_X),
        ),
    ]
}

/// The columns stored only where their rule does not give their value.
pub const DERIVED: [&str; 4] = [
    col::QUERY_TS,
    col::LATENCY_NS,
    col::ANSWER_IPS,
    col::QUESTIONS,
];

/// Every column a reader computes over the stored ones, in the order of [`sql`]: the
/// [`DERIVED`] ones and the raw messages of [`RAW_XOR`].
pub const COMPUTED: [&str; 6] = [
    col::QUERY_TS,
    col::LATENCY_NS,
    col::ANSWER_IPS,
    col::QUESTIONS,
    col::QUERY_RAW,
    col::RESPONSE_RAW,
];

/// The columns that are in the files but not in a reader's table (the `_x` columns of
/// [`RAW_XOR`], shown restored under their raw column's name).
pub const FILE_ONLY: [&str; 2] = [col::QUERY_RAW_X, col::RESPONSE_RAW_X];

#[cfg(test)]
mod tests {
    use super::*;

    fn a(rtype: &str, data: &str) -> Answer {
        Answer {
            name: "x".into(),
            rtype: rtype.into(),
            ttl: 1,
            data: data.into(),
        }
    }

    #[test]
    fn rules() {
        assert_eq!(query_ts(5, status::ANSWERED), Some(5));
        assert_eq!(query_ts(5, status::UNSOLICITED), None);
        assert_eq!(latency_ns(Some(5), Some(12)), Some(7));
        assert_eq!(latency_ns(None, Some(12)), None);
        let answers = [
            a("CNAME", "y"),
            a("A", "192.0.2.1"),
            a("AAAA", "2001:db8::1"),
        ];
        let ips = answer_ips(status::ANSWERED, Some(&answers));
        assert_eq!(
            ips.as_deref(),
            Some(&["192.0.2.1".to_owned(), "2001:db8::1".to_owned()][..])
        );
        assert!(answer_ips_derivable(
            status::ANSWERED,
            Some(&answers),
            ips.as_deref()
        ));
        // An A record whose data is not an address (it did not decode) is not in answer_ips.
        assert!(!answer_ips_derivable(
            status::ANSWERED,
            Some(&[a("A", r"\# 3 010203")]),
            Some(&[])
        ));
        assert!(answer_ips_derivable(status::ANSWERED, None, None));
        assert!(answer_ips_derivable(status::ANSWERED, Some(&[]), Some(&[])));
        assert!(!answer_ips_derivable(status::ANSWERED, Some(&[]), None));
        // Lookup rows: the C library's addresses, never derived.
        assert!(!answer_ips_derivable(
            status::LOOKUP,
            None,
            Some(&["192.0.2.1".to_owned()])
        ));
        assert!(answer_ips_derivable(status::LOOKUP, Some(&answers), None));
        assert_eq!(answer_ips(status::LOOKUP, Some(&answers)), None);

        let q = Question {
            name: "a.example".into(),
            qtype: 1,
            qclass: 1,
        };
        let one = [q.clone()];
        assert_eq!(
            questions(status::ANSWERED, Some("a.example"), Some(1), Some(1)).as_deref(),
            Some(&one[..])
        );
        assert!(questions_derivable(
            status::ANSWERED,
            Some("a.example"),
            Some(1),
            Some(1),
            Some(&one)
        ));
        assert!(!questions_derivable(
            status::ANSWERED,
            Some("a.example"),
            Some(28),
            Some(1),
            Some(&one)
        ));
        assert!(!questions_derivable(
            status::ANSWERED,
            Some("a.example"),
            Some(1),
            Some(1),
            Some(&[q.clone(), q.clone()])
        ));
        assert!(!questions_derivable(
            status::ANSWERED,
            Some("a.example"),
            Some(1),
            Some(1),
            None
        ));
        assert!(questions_derivable(
            status::ANSWERED,
            None,
            None,
            None,
            None
        ));
        assert!(!questions_derivable(
            status::ANSWERED,
            None,
            None,
            None,
            Some(&[])
        ));
        assert!(questions_derivable(
            status::LOOKUP,
            Some("a.example"),
            Some(1),
            Some(1),
            None
        ));
    }

    #[test]
    fn sql_names_every_derived_column() {
        for d in [Dialect::Duckdb, Dialect::Spark, Dialect::Trino] {
            let names: Vec<&str> = sql(d).iter().map(|(c, _)| *c).collect();
            assert_eq!(names, COMPUTED);
        }
        assert_eq!(COMPUTED[..4], DERIVED);
        for (i, (raw, x)) in RAW_XOR.iter().enumerate() {
            assert_eq!(COMPUTED[4 + i], *raw);
            assert_eq!(FILE_ONLY[i], *x);
        }
    }

    #[test]
    fn raw_bytes_round_trip() {
        // A query, a response with the same ID, one with another ID, short and empty messages.
        let q = [0xab, 0xcd, 0x01, 0x00, 0x00, 0x01];
        let other = [0x12, 0x34, 0x81, 0x80];
        for (raw, id) in [
            (&q[..], Some(0xabcd)),
            (&q[..], Some(0x1234)),
            (&other[..], Some(0xabcd)),
            (&q[..2], Some(0xabcd)),
            (&q[..1], Some(0xabcd)),
            (&[][..], Some(0xabcd)),
            (&q[..], None),
        ] {
            let (stored, xored) = match raw_xor_key(raw, id) {
                Some(key) => {
                    let mut x = raw.to_vec();
                    xor_id(&mut x, key);
                    (None, Some(x))
                }
                None => (Some(raw.to_vec()), None),
            };
            assert_eq!(
                raw_restored(stored.as_deref(), xored.as_deref(), id).as_deref(),
                Some(raw),
                "{raw:02x?} {id:?}"
            );
            assert_eq!(stored.is_none(), id.is_some() && raw.len() >= 2);
        }
        // The ID is zero where it is dns_id: equal messages, equal bytes.
        let mut x = q.to_vec();
        xor_id(&mut x, 0xabcd);
        assert_eq!(x, [0, 0, 0x01, 0x00, 0x00, 0x01]);
        assert_eq!(raw_restored(None, None, Some(1)), None);
        assert_eq!(raw_restored(None, Some(&x), None), None);
    }
}
