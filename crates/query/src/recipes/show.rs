//! `dnsql show SELECTOR`: full transactions, decoded from the raw DNS messages and rendered the
//! way `dig +qr` prints them (header, flags, question/answer/authority/additional sections, the
//! EDNS pseudo-section), with the transaction's latency, server, transport and process.
//!
//! # Selector syntax
//!
//! Either terms separated by white space, all of which must hold:
//!
//! | term | rows |
//! |---|---|
//! | `NAME` or `name=NAME` | `qname` is NAME (case and a trailing dot ignored); a bare NAME may contain `=` after a dot |
//! | `under=NAME` | `qname` is NAME or a name below it |
//! | `id=N`, `id=0xHHHH` | DNS message ID |
//! | `pid=N`, `uid=N` | process id / user id |
//! | `comm=C`, `exe=PATH`, `host=H`, `container=ID` | process name, executable, host name, container |
//! | `qtype=T`, `rcode=R` | query type / response code mnemonic (`MX`, `NXDOMAIN`; case ignored) |
//! | `status=S` | `answered`, `unanswered` or `unsolicited` |
//! | `server=IP`, `client=IP` | server / client address |
//!
//! or `where EXPR`: any SQL boolean expression over the columns of `dns`, for example
//! `where qtype_name = 'TXT' AND response_size > 512`. The expression is parsed and re-printed
//! (so it cannot close the query it is put into); column names are not checked until the query
//! runs.
//!
//! Values of terms are SQL-escaped; a value with white space needs the `where` form.

use std::io::{self, Write};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, UInt64Type};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
#[cfg(test)]
use dnsledger_render::{HEX_DUMP_LIMIT, hex_dump};
use dnsledger_render::{Transcript, write_transaction};

use crate::recipes::{normalize_name, sql_str};

/// Columns [`show_sql`] selects and [`render`] reads (in this order).
pub const SHOW_COLUMNS: &str = "ts, query_ts, response_ts, latency_ns, status, hostname, pid, \
ppid, uid, comm, exe, cmdline, container_id, transport, ip_version, client_ip, client_port, \
server_ip, server_port, dns_id, qname, qtype_name, rcode_name, query_size, response_size, \
query_raw, response_raw, parse_error, qname_sent";

/// A selector that cannot be turned into SQL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShowError {
    #[error("empty selector: give a name, KEY=VALUE terms, or `where EXPR`")]
    Empty,
    #[error(
        "unknown selector key `{key}`; known keys: name, under, id, pid, uid, comm, exe, host, \
         container, qtype, rcode, status, server, client (or `where EXPR`)"
    )]
    UnknownKey { key: String },
    #[error("bad value `{value}` for `{key}`: expected {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("cannot read `where` expression `{expr}`: {reason}")]
    BadExpression { expr: String, reason: String },
}

fn bad(key: &str, value: &str, expected: &'static str) -> ShowError {
    ShowError::BadValue {
        key: key.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

fn parse_u64(key: &str, value: &str, max: u64) -> Result<u64, ShowError> {
    let parsed = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    match parsed {
        Ok(n) if n <= max => Ok(n),
        _ => Err(bad(
            key,
            value,
            "a non-negative integer (decimal or 0x hex)",
        )),
    }
}

/// Parses `expr` as one SQL expression and prints it back, so that nothing but an expression
/// can reach the query.
fn checked_expression(expr: &str) -> Result<String, ShowError> {
    let err = |reason: String| ShowError::BadExpression {
        expr: expr.to_owned(),
        reason,
    };
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(expr)
        .map_err(|e| err(e.to_string()))?;
    let parsed = parser.parse_expr().map_err(|e| err(e.to_string()))?;
    let next = parser.next_token();
    if next.token != Token::EOF {
        return Err(err(format!(
            "unexpected `{}` after the expression",
            next.token
        )));
    }
    Ok(parsed.to_string())
}

/// The predicate of one `KEY=VALUE` (or bare name) term.
fn term_predicate(term: &str) -> Result<String, ShowError> {
    // A term is KEY=VALUE only if what precedes the first `=` is a word: names may contain
    // `=` (dns2tcp's `aaaa.=auth.srv.tunnel.com`).
    let Some((key, value)) = term
        .split_once('=')
        .filter(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphabetic()))
    else {
        return Ok(format!("qname = {}", sql_str(&normalize_name(term))));
    };
    let key = key.to_ascii_lowercase();
    if value.is_empty() {
        return Err(bad(&key, value, "a value"));
    }
    Ok(match key.as_str() {
        "name" | "qname" => format!("qname = {}", sql_str(&normalize_name(value))),
        "under" => {
            let n = normalize_name(value);
            format!(
                "(qname = {} OR ends_with(qname, {}))",
                sql_str(&n),
                sql_str(&format!(".{n}"))
            )
        }
        "id" => format!("dns_id = {}", parse_u64(&key, value, u64::from(u16::MAX))?),
        "pid" => format!("pid = {}", parse_u64(&key, value, u64::from(u32::MAX))?),
        "uid" => format!("uid = {}", parse_u64(&key, value, u64::from(u32::MAX))?),
        "comm" => format!("comm = {}", sql_str(value)),
        "exe" => format!("exe = {}", sql_str(value)),
        "host" => format!("hostname = {}", sql_str(value)),
        "container" => format!("container_id = {}", sql_str(value)),
        "qtype" => format!("qtype_name = {}", sql_str(&value.to_ascii_uppercase())),
        "rcode" => format!("rcode_name = {}", sql_str(&value.to_ascii_uppercase())),
        "status" => match value.to_ascii_lowercase().as_str() {
            s @ ("answered" | "unanswered" | "unsolicited") => format!("status = '{s}'"),
            _ => return Err(bad(&key, value, "answered, unanswered or unsolicited")),
        },
        "server" | "client" => {
            if value.parse::<std::net::IpAddr>().is_err() {
                return Err(bad(&key, value, "an IPv4 or IPv6 address"));
            }
            format!("{key}_ip = {}", sql_str(value))
        }
        _ => return Err(ShowError::UnknownKey { key }),
    })
}

/// SQL selecting the transactions `selector` names (see the module documentation for the
/// syntax), with the columns [`render`] needs, in time order.
pub fn show_sql(selector: &str) -> Result<String, ShowError> {
    let selector = selector.trim();
    if selector.is_empty() {
        return Err(ShowError::Empty);
    }
    let lower = selector.to_ascii_lowercase();
    let pred = if lower == "where" || lower.starts_with("where ") || lower.starts_with("where\t") {
        let expr = selector[5..].trim();
        if expr.is_empty() {
            return Err(ShowError::Empty);
        }
        format!("({})", checked_expression(expr)?)
    } else {
        selector
            .split_whitespace()
            .map(term_predicate)
            .collect::<Result<Vec<_>, _>>()?
            .join(" AND ")
    };
    Ok(show_where(&pred))
}

/// The rows where the SQL condition `pred` holds, with the columns [`render`] needs, in time
/// order (`show_sql` with its selector turned into `pred`).
pub fn show_where(pred: &str) -> String {
    format!("SELECT {SHOW_COLUMNS}\nFROM dns\nWHERE {pred}\nORDER BY ts, hostname, dns_id")
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// Column access by name that tolerates missing columns and any string/number encoding.
struct Row<'a> {
    batch: &'a RecordBatch,
    text: Vec<(&'static str, Option<ArrayRef>)>,
}

const TEXT_COLUMNS: [&str; 17] = [
    "ts",
    "query_ts",
    "response_ts",
    "status",
    "hostname",
    "comm",
    "exe",
    "cmdline",
    "container_id",
    "transport",
    "client_ip",
    "server_ip",
    "qname",
    "qtype_name",
    "rcode_name",
    "parse_error",
    "ip_version",
];

impl<'a> Row<'a> {
    fn new(batch: &'a RecordBatch) -> Self {
        let text = TEXT_COLUMNS
            .iter()
            .map(|&name| {
                let col = batch
                    .column_by_name(name)
                    .and_then(|c| cast(c, &DataType::Utf8).ok());
                (name, col)
            })
            .collect();
        Row { batch, text }
    }

    fn text(&self, name: &str, row: usize) -> Option<String> {
        let (_, col) = self.text.iter().find(|(n, _)| *n == name)?;
        let col = col.as_ref()?;
        let s = col.as_string::<i32>();
        (!s.is_null(row)).then(|| s.value(row).to_owned())
    }

    fn int(&self, name: &str, row: usize) -> Option<i64> {
        let col = self.batch.column_by_name(name)?;
        let col = cast(col, &DataType::Int64).ok()?;
        let col = col.as_primitive::<Int64Type>();
        (!col.is_null(row)).then(|| col.value(row))
    }

    fn uint(&self, name: &str, row: usize) -> Option<u64> {
        let col = self.batch.column_by_name(name)?;
        let col = cast(col, &DataType::UInt64).ok()?;
        let col = col.as_primitive::<UInt64Type>();
        (!col.is_null(row)).then(|| col.value(row))
    }

    fn bytes(&self, name: &str, row: usize) -> Option<Vec<u8>> {
        let col = self.batch.column_by_name(name)?;
        let col = cast(col, &DataType::Binary).ok()?;
        let col = col.as_binary::<i32>();
        (!col.is_null(row)).then(|| col.value(row).to_vec())
    }
}

/// Renders every row of `batch` (columns as selected by [`show_sql`]; missing columns are shown
/// as `-`) as a dig-like transcript ([`dnsledger_render::write_transaction`], shared with
/// `dnsledger snoop --detailed`).
pub fn render(batch: &RecordBatch, out: &mut dyn Write) -> io::Result<()> {
    let r = Row::new(batch);
    for i in 0..batch.num_rows() {
        if i > 0 {
            writeln!(out)?;
        }
        write_transaction(&transcript(&r, i), out)?;
    }
    Ok(())
}

fn transcript(r: &Row<'_>, i: usize) -> Transcript {
    Transcript {
        qname: r.text("qname", i),
        qname_sent: r.text("qname_sent", i),
        qtype_name: r.text("qtype_name", i),
        hostname: r.text("hostname", i),
        ts: r.text("ts", i),
        status: r.text("status", i),
        transport: r.text("transport", i),
        ip_version: r.text("ip_version", i),
        server_ip: r.text("server_ip", i),
        server_port: r.uint("server_port", i),
        client_ip: r.text("client_ip", i),
        client_port: r.uint("client_port", i),
        latency_ns: r.int("latency_ns", i),
        pid: r.uint("pid", i),
        ppid: r.uint("ppid", i),
        uid: r.uint("uid", i),
        comm: r.text("comm", i),
        exe: r.text("exe", i),
        container_id: r.text("container_id", i),
        cmdline: r.text("cmdline", i),
        parse_error: r.text("parse_error", i),
        query_raw: r.bytes("query_raw", i),
        query_size: r.uint("query_size", i),
        response_raw: r.bytes("response_raw", i),
        response_size: r.uint("response_size", i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fixtures, process_fixture, run};

    fn pred(selector: &str) -> String {
        let sql = show_sql(selector).expect("selector");
        let start = sql.find("WHERE ").expect("where") + 6;
        let end = sql.find("\nORDER BY").expect("order");
        sql[start..end].to_owned()
    }

    #[test]
    fn selector_terms() {
        assert_eq!(pred("Google.COM."), "qname = 'google.com'");
        assert_eq!(
            pred("google.com qtype=mx server=8.8.8.8"),
            "qname = 'google.com' AND qtype_name = 'MX' AND server_ip = '8.8.8.8'"
        );
        assert_eq!(pred("id=0x5616"), "dns_id = 22038");
        assert_eq!(pred("id=22038 pid=7"), "dns_id = 22038 AND pid = 7");
        assert_eq!(
            pred("under=wikimedia.org"),
            "(qname = 'wikimedia.org' OR ends_with(qname, '.wikimedia.org'))"
        );
        assert_eq!(pred("comm=it's"), "comm = 'it''s'");
        assert_eq!(pred("status=Unanswered"), "status = 'unanswered'");
        assert_eq!(
            pred("AAAAAO1kQA.=auth.srv.tunnel.com"),
            "qname = 'aaaaao1kqa.=auth.srv.tunnel.com'"
        );
        assert_eq!(pred(r"exe=C:\x"), "exe = concat('C:', chr(92), 'x')");
    }

    #[test]
    fn where_expressions_are_reprinted() {
        assert_eq!(
            pred("where qtype_name = 'TXT' and response_size > 512"),
            "(qtype_name = 'TXT' AND response_size > 512)"
        );
        assert_eq!(pred("WHERE qname LIKE '%''%'"), "(qname LIKE '%''%')");
        // Nothing but one expression gets through.
        for bad in [
            "where 1=1) UNION SELECT * FROM secrets --",
            "where true; DROP TABLE dns",
            "where pid = 1 ORDER BY ts",
            "where (",
        ] {
            assert!(
                matches!(show_sql(bad), Err(ShowError::BadExpression { .. })),
                "{bad}: {:?}",
                show_sql(bad)
            );
        }
    }

    #[test]
    fn selector_errors() {
        assert_eq!(show_sql("  "), Err(ShowError::Empty));
        assert_eq!(show_sql("where "), Err(ShowError::Empty));
        assert!(
            matches!(show_sql("colour=red"), Err(ShowError::UnknownKey { key }) if key == "colour")
        );
        assert!(matches!(
            show_sql("id=65536"),
            Err(ShowError::BadValue { .. })
        ));
        assert!(matches!(
            show_sql("pid=-1"),
            Err(ShowError::BadValue { .. })
        ));
        assert!(matches!(
            show_sql("server=dns.google"),
            Err(ShowError::BadValue { .. })
        ));
        assert!(matches!(
            show_sql("status=lost"),
            Err(ShowError::BadValue { .. })
        ));
        assert!(matches!(show_sql("name="), Err(ShowError::BadValue { .. })));
        let msg = show_sql("colour=red").unwrap_err().to_string();
        assert!(msg.starts_with("unknown selector key `colour`"), "{msg}");
    }

    async fn rendered(ctx: &datafusion::prelude::SessionContext, selector: &str) -> String {
        let sql = show_sql(selector).expect("selector");
        let mut out = Vec::new();
        for batch in run(ctx, &sql).await {
            render(&batch, &mut out).expect("render");
        }
        String::from_utf8(out).expect("utf-8")
    }

    #[tokio::test]
    async fn renders_google_mx_like_dig() {
        let ctx = fixtures().await;
        // dns-udp-google.com-a-aaaa-mx.pcap: the MX answer from 8.8.8.8.
        let out = rendered(&ctx, "google.com qtype=MX server=8.8.8.8").await;
        for want in [
            ";; TRANSACTION google.com MX on host-a",
            ";; WHEN: 2017-05-09T21:07:44.147422Z  status: answered",
            ";; SERVER: 8.8.8.8#53 (UDP, IPv4)  CLIENT: 10.16.1.11#54380",
            ";; Query time: 63.555 msec",
            ";; PROCESS: unknown",
            ";; QUERY: 39 bytes",
            ";; RESPONSE: 147 bytes",
            ";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 22038",
            ";; flags: rd ad; QUERY: 1, ANSWER: 0, AUTHORITY: 0, ADDITIONAL: 1",
            ";; flags: qr rd ra; QUERY: 1, ANSWER: 5, AUTHORITY: 0, ADDITIONAL: 1",
            "; EDNS: version: 0, flags:; udp: 4096",
            "; EDNS: version: 0, flags:; udp: 512",
            ";; QUESTION SECTION:\n;google.com.\t\tIN\tMX",
            ";; ANSWER SECTION:\ngoogle.com.\t599\tIN\tMX\t10 aspmx.l.google.com.\n",
            "google.com.\t599\tIN\tMX\t50 alt4.aspmx.l.google.com.",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
        assert_eq!(out.matches(";; TRANSACTION").count(), 1);
    }

    #[tokio::test]
    async fn renders_malformed_messages_as_hex_with_the_error() {
        let ctx = fixtures().await;
        // dns-invalid-names.pcap: a compression pointer to itself (id 0x2223).
        let out = rendered(&ctx, "id=0x2223").await;
        assert!(
            out.contains(";; QUERY: 18 bytes, could not be parsed: "),
            "{out}"
        );
        assert!(out.contains("pointer") || out.contains("ptr"), "{out}");
        assert!(
            out.contains(";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 8739"),
            "{out}"
        );
        assert!(
            out.contains(
                ";; 0000  22 23 01 00 00 01 00 00  00 00 00 00 c0 0c 00 01  |\"#..............|"
            ),
            "{out}"
        );
        assert!(out.contains(";; RESPONSE: none (unanswered)"), "{out}");
        // dns-badlabel.pcap: 63 KB of fuzz, dumped up to the limit.
        let out = rendered(&ctx, "where response_size > 60000").await;
        assert!(out.contains("could not be parsed"), "{out}");
        assert!(out.contains(";; ... "), "{out}");
        assert!(out.lines().count() < 80, "{}", out.lines().count());
    }

    #[tokio::test]
    async fn renders_every_fixture_transaction() {
        let ctx = fixtures().await;
        let out = rendered(&ctx, "where true").await;
        let total = crate::testutil::count(&ctx, "SELECT count(*) FROM dns").await;
        assert_eq!(out.matches(";; TRANSACTION").count() as i64, total);
        // EDNS options from edns-opts.pcap and edns.pcap, DNSSEC records in generic form.
        for want in [
            "; COOKIE: ",
            "; CLIENT-SUBNET: ",
            "; NSID: ",
            "; EDE: ",
            "RRSIG\t\\# ",
        ] {
            assert!(out.contains(want), "missing {want:?}");
        }
    }

    #[tokio::test]
    async fn renders_the_process() {
        let (_dir, ctx) = process_fixture().await;
        let out = rendered(&ctx, "www.example.com").await;
        for want in [
            ";; PROCESS: pid 100 ppid 1 uid 1000 comm firefox exe /usr/lib/firefox/firefox container -",
            ";; CMDLINE: /usr/lib/firefox/firefox --flag",
            ";; Query time: 2.000 msec",
            ";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 16962",
            "www.example.com.\t300\tIN\tA\t93.184.216.34",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
    }

    #[test]
    fn hex_dump_layout() {
        assert_eq!(
            hex_dump(b"\x00\x01AB"),
            ";; 0000  00 01 41 42                                       |..AB|\n"
        );
        let long = hex_dump(&[0u8; HEX_DUMP_LIMIT + 3]);
        assert!(long.ends_with(";; ... 3 more bytes\n"), "{long}");
    }
}
