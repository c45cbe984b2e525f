//! `dnsledger snoop`: one line per transaction as it completes, DNSWatch-style.
//!
//! Pure formatting and filtering; where the transactions come from is [`crate::live`].

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;

use crate::live::{Feed, FeedMode, LiveLine, LiveTx};
use crate::store::segment::format_rfc3339_ns;

/// Every field `--fields` accepts: (name, header, width, meaning). A width of 0 is the last,
/// unpadded column.
pub const FIELDS: [(&str, &str, usize, &str); 27] = [
    ("time", "TIME", 15, "time of the query, UTC, HH:MM:SS.micro"),
    (
        "ts",
        "TS",
        30,
        "time of the query, UTC, RFC 3339 with nanoseconds",
    ),
    ("pid", "PID", 7, "process id"),
    ("tid", "TID", 7, "thread id"),
    ("ppid", "PPID", 7, "parent process id"),
    ("uid", "UID", 6, "user id"),
    ("comm", "COMM", 15, "process name"),
    ("exe", "EXE", 30, "executable path"),
    ("cmdline", "CMDLINE", 40, "command line"),
    ("container", "CONTAINER", 12, "container id"),
    ("host", "HOST", 15, "host name"),
    ("transport", "PROTO", 5, "udp or tcp"),
    ("ipver", "IPV", 3, "4 or 6"),
    ("client", "CLIENT", 22, "client address#port"),
    ("server", "SERVER", 22, "server address#port"),
    ("id", "ID", 5, "DNS message id"),
    ("qtype", "QTYPE", 6, "query type"),
    ("qname", "QNAME", 32, "query name"),
    (
        "rcode",
        "RCODE",
        9,
        "response code (unanswered: no response in time)",
    ),
    (
        "status",
        "STATUS",
        11,
        "answered, unanswered or unsolicited",
    ),
    ("latency", "LATENCY", 10, "query to response, milliseconds"),
    ("answers", "ANSWERS", 0, "addresses in the answer"),
    ("qsize", "QSIZE", 5, "query size, bytes"),
    ("rsize", "RSIZE", 5, "response size, bytes"),
    ("error", "ERROR", 0, "parse or capture error"),
    ("sent", "SENT", 32, "query name exactly as sent (case kept)"),
    (
        "side",
        "SIDE",
        6,
        "client, or server (record --serve-side: the process is the local DNS server)",
    ),
];

/// The default `--fields`.
pub const DEFAULT_FIELDS: &str = "time,pid,comm,qtype,qname,rcode,latency,answers";

/// DNSWatch's `snoop --list` field names and ours, so its field lists work unchanged (its
/// `LAT` was microseconds; ours is milliseconds).
const DNSWATCH_FIELDS: &[(&str, &str)] = &[
    ("pname", "comm"),
    ("type", "qtype"),
    ("lat", "latency"),
    ("rip", "answers"),
    ("qaddr", "client"),
    ("raddr", "server"),
    ("qtime", "time"),
];

/// Parses a comma-separated field list (ours or DNSWatch's names, any case); names the unknown
/// field and lists the known ones.
pub fn parse_fields(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for given in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let name = DNSWATCH_FIELDS
            .iter()
            .find(|(theirs, _)| theirs.eq_ignore_ascii_case(given))
            .map_or(given, |(_, ours)| ours);
        let Some(i) = FIELDS.iter().position(|f| f.0.eq_ignore_ascii_case(name)) else {
            let known: Vec<&str> = FIELDS.iter().map(|f| f.0).collect();
            return Err(format!(
                "unknown field `{given}`; known fields: {}",
                known.join(",")
            ));
        };
        out.push(i);
    }
    if out.is_empty() {
        return Err("no fields given".into());
    }
    Ok(out)
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// `HH:MM:SS.micro` of a UTC ns time.
fn clock_time(ns: i64) -> String {
    let full = format_rfc3339_ns(ns);
    // 2024-01-02T03:04:05.123456789Z -> 03:04:05.123456
    full.get(11..26).unwrap_or(&full).to_string()
}

fn endpoint(ip: &str, port: u16, v: u8) -> String {
    if v == 6 {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The rcode column: the response code, or the status when there was no response.
pub fn rcode_of(t: &LiveTx) -> String {
    match (&t.rcode, t.status.as_str()) {
        (Some(r), _) => r.clone(),
        (None, status) => status.to_string(),
    }
}

/// Milliseconds with three decimals.
pub fn millis(ns: i64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

/// The text of one field of one transaction.
pub fn field_value(field: usize, t: &LiveTx) -> String {
    match FIELDS[field].0 {
        "time" => clock_time(t.ts),
        "ts" => format_rfc3339_ns(t.ts),
        "pid" => opt(t.pid),
        "tid" => opt(t.tid),
        "ppid" => opt(t.ppid),
        "uid" => opt(t.uid),
        "comm" => opt(t.comm.as_deref()),
        "exe" => opt(t.exe.as_deref()),
        "cmdline" => opt(t.cmdline.as_deref()),
        "container" => opt(t.container_id.as_deref()),
        "host" => t.hostname.clone(),
        "transport" => t.transport.clone(),
        "ipver" => t.ip_version.to_string(),
        "client" => endpoint(&t.client_ip, t.client_port, t.ip_version),
        "server" => endpoint(&t.server_ip, t.server_port, t.ip_version),
        "id" => opt(t.dns_id),
        "qtype" => opt(t.qtype.as_deref()),
        "qname" => opt(t.qname.as_deref()),
        "rcode" => rcode_of(t),
        "status" => t.status.clone(),
        "latency" => t.latency_ns.map_or_else(|| "-".into(), millis),
        "answers" => {
            if t.answer_ips.is_empty() {
                "-".into()
            } else {
                t.answer_ips.join(",")
            }
        }
        "qsize" => opt(t.query_size),
        "rsize" => opt(t.response_size),
        "error" => opt(t.parse_error.as_deref()),
        "sent" => opt(t.qname_sent.as_deref().or(t.qname.as_deref())),
        "side" => t.side.as_deref().unwrap_or("client").to_string(),
        _ => "-".into(),
    }
}

fn write_columns(
    out: &mut dyn Write,
    fields: &[usize],
    mut cell: impl FnMut(usize) -> String,
) -> io::Result<()> {
    let mut line = String::new();
    for (n, &f) in fields.iter().enumerate() {
        let text = cell(f);
        let width = FIELDS[f].2;
        if n + 1 == fields.len() || width == 0 {
            line.push_str(&text);
        } else {
            line.push_str(&format!("{text:<width$}"));
        }
        if n + 1 < fields.len() {
            line.push_str("  ");
        }
    }
    writeln!(out, "{}", line.trim_end())
}

/// The header line of the text format.
pub fn write_header(out: &mut dyn Write, fields: &[usize]) -> io::Result<()> {
    write_columns(out, fields, |f| FIELDS[f].1.to_string())
}

/// One transaction in the text format.
pub fn write_text(out: &mut dyn Write, fields: &[usize], t: &LiveTx) -> io::Result<()> {
    write_columns(out, fields, |f| field_value(f, t))
}

/// One transaction as a JSON object on one line (every column but the raw messages).
pub fn write_json(out: &mut dyn Write, t: &LiveTx) -> io::Result<()> {
    let mut t = t.clone();
    t.query_raw = None;
    t.response_raw = None;
    serde_json::to_writer(&mut *out, &t).map_err(io::Error::other)?;
    writeln!(out)
}

/// Which transactions to show; empty lists match everything.
#[derive(Debug, Default)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub names: Vec<glob::Pattern>,
    /// Upper-case response codes; `UNANSWERED` matches transactions without a response.
    pub rcodes: Vec<String>,
    pub qtypes: Vec<String>,
}

/// Parses a `--name` pattern (`*` and `?` wildcards, `[...]` classes); case is ignored.
pub fn parse_name_pattern(s: &str) -> Result<glob::Pattern, String> {
    let s = s.trim_end_matches('.').to_ascii_lowercase();
    glob::Pattern::new(&s).map_err(|e| format!("bad name pattern `{s}`: {e}"))
}

impl Filter {
    pub fn matches(&self, t: &LiveTx) -> bool {
        let opts = glob::MatchOptions {
            case_sensitive: false,
            require_literal_separator: false,
            require_literal_leading_dot: false,
        };
        (self.pids.is_empty() || t.pid.is_some_and(|p| self.pids.contains(&p)))
            && (self.comms.is_empty() || t.comm.as_ref().is_some_and(|c| self.comms.contains(c)))
            && (self.names.is_empty()
                || t.qname.as_deref().is_some_and(|n| {
                    let n = n.trim_end_matches('.');
                    self.names.iter().any(|p| p.matches_with(n, opts))
                }))
            && (self.rcodes.is_empty() || self.rcodes.contains(&rcode_of(t).to_ascii_uppercase()))
            && (self.qtypes.is_empty()
                || t.qtype
                    .as_deref()
                    .is_some_and(|q| self.qtypes.iter().any(|f| f.eq_ignore_ascii_case(q))))
    }
}

/// How `snoop` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns with a header line.
    Text,
    /// One JSON object per line, every column (no raw bytes).
    Json,
}

/// What `snoop` shows and how.
#[derive(Debug)]
pub struct Options {
    /// Indexes into [`FIELDS`] (text format).
    pub fields: Vec<usize>,
    pub format: Format,
    /// Each transaction in full, like `dig` (overrides `format`).
    pub detailed: bool,
    pub filter: Filter,
    /// Stop after this many transactions.
    pub count: Option<u64>,
    /// A header line in the text format.
    pub header: bool,
}

/// Prints the feed's transactions that pass the filter until `stop` is set, the count is
/// reached or the feed ends. A recorder that stops publishing is an error.
pub fn run(feed: &Feed, stop: &AtomicBool, opts: &Options, out: &mut dyn Write) -> io::Result<()> {
    let mut shown = 0u64;
    if opts.format == Format::Text && !opts.detailed && opts.header {
        write_header(out, &opts.fields)?;
        out.flush()?;
    }
    while !stop.load(Ordering::Relaxed) && opts.count.is_none_or(|c| shown < c) {
        let line = match feed.lines.recv_timeout(crate::recorder::TICK) {
            Ok(line) => line?,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                if let FeedMode::Follow { pid, .. } = &feed.mode {
                    return Err(io::Error::other(format!(
                        "the recorder (pid {pid}) stopped publishing"
                    )));
                }
                break;
            }
        };
        let t = match line {
            LiveLine::Tx(t) => t,
            LiveLine::Hello { .. } => continue,
            LiveLine::Dropped { dropped } => {
                tracing::warn!("{dropped} transaction(s) not shown: snoop read too slowly");
                continue;
            }
        };
        if !opts.filter.matches(&t) {
            continue;
        }
        if opts.detailed {
            crate::live::detailed::write_detailed(out, &t)?;
        } else if opts.format == Format::Json {
            write_json(out, &t)?;
        } else {
            write_text(out, &opts.fields, &t)?;
        }
        out.flush()?;
        shown += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx() -> LiveTx {
        LiveTx {
            ts: 1_700_000_000_123_456_789,
            status: "answered".into(),
            pid: Some(42),
            comm: Some("dig".into()),
            qname: Some("www.Example.test".into()),
            qtype: Some("A".into()),
            rcode: Some("NOERROR".into()),
            latency_ns: Some(1_234_567),
            answer_ips: vec!["192.0.2.1".into(), "192.0.2.2".into()],
            transport: "udp".into(),
            ip_version: 4,
            ..Default::default()
        }
    }

    #[test]
    fn text_columns() {
        let fields = parse_fields(DEFAULT_FIELDS).expect("fields");
        let mut out = Vec::new();
        write_header(&mut out, &fields).expect("header");
        write_text(&mut out, &fields, &tx()).expect("row");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("TIME "), "{text}");
        assert!(lines[0].ends_with("ANSWERS"), "{text}");
        assert!(lines[1].starts_with("22:13:20.123456  42 "), "{text}");
        assert!(lines[1].contains(" dig "), "{text}");
        assert!(lines[1].contains(" 1.235 "), "{text}");
        assert!(lines[1].ends_with("192.0.2.1,192.0.2.2"), "{text}");
        assert_eq!(parse_fields("comm,qname").expect("ok"), vec![6, 17]);
        let err = parse_fields("comm,bogus").expect_err("bad");
        assert!(err.contains("`bogus`") && err.contains("qname"), "{err}");
        // DNSWatch's own example list works unchanged.
        assert_eq!(
            parse_fields("PID,PNAME,QNAME,RIP").expect("dnswatch names"),
            parse_fields("pid,comm,qname,answers").expect("ours")
        );
        assert_eq!(
            parse_fields("PID,PNAME,TYPE,QNAME,RCODE,LAT,QADDR,RADDR,QTIME").map(|f| f.len()),
            Ok(9)
        );
    }

    #[test]
    fn json_has_no_raw_bytes() {
        let mut t = tx();
        t.query_raw = Some("AAAA".into());
        let mut out = Vec::new();
        write_json(&mut out, &t).expect("json");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("parse");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["qname"], "www.Example.test");
        assert!(v.get("query_raw").is_none());
    }

    #[test]
    fn filters() {
        let t = tx();
        assert!(Filter::default().matches(&t));
        let f = Filter {
            names: vec![parse_name_pattern("*.example.TEST.").expect("pattern")],
            ..Default::default()
        };
        assert!(f.matches(&t));
        let f = Filter {
            pids: vec![7],
            ..Default::default()
        };
        assert!(!f.matches(&t));
        let f = Filter {
            rcodes: vec!["NXDOMAIN".into()],
            ..Default::default()
        };
        assert!(!f.matches(&t));
        let mut u = t.clone();
        u.rcode = None;
        u.status = "unanswered".into();
        let f = Filter {
            rcodes: vec!["UNANSWERED".into()],
            comms: vec!["dig".into()],
            ..Default::default()
        };
        assert!(f.matches(&u));
        assert!(!f.matches(&t));
    }
}
