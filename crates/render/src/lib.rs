//! The dig-like view of one DNS transaction, shared by `dnsql show` (rows read from segments)
//! and `dnsledger snoop --detailed` (live transactions): the transaction line, the process,
//! then the query and the response, each decoded from its raw bytes with hickory-proto and
//! laid out the way `dig +qr` prints them (header, flags, question/answer/authority/additional
//! sections, the EDNS pseudo-section). A message that does not parse is shown with the parse
//! error, whatever header fields could be read, and a hex dump.
//!
//! Pure: no I/O but the `Write` it is given, no Arrow, no capture.

use std::fmt::Write as _;
use std::io::{self, Write};

use dnsledger_schema::{dnstext, names};
use hickory_proto::op::{Edns, Message};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{RData, Record};

/// What the view shows of one transaction, each value as its source has it (`None`: shown as
/// `-`, or as "not captured" for the messages).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transcript {
    pub qname: Option<String>,
    /// The first question's name exactly as sent; shown on a line of its own when it differs
    /// from [`qname`](Self::qname) (the raw query may not have been kept: `--no-raw`).
    pub qname_sent: Option<String>,
    pub qtype_name: Option<String>,
    pub hostname: Option<String>,
    /// The transaction's time, already formatted.
    pub ts: Option<String>,
    pub status: Option<String>,
    pub transport: Option<String>,
    /// `4` or `6`, as text.
    pub ip_version: Option<String>,
    pub server_ip: Option<String>,
    pub server_port: Option<u64>,
    pub client_ip: Option<String>,
    pub client_port: Option<u64>,
    pub latency_ns: Option<i64>,
    pub pid: Option<u64>,
    pub ppid: Option<u64>,
    pub uid: Option<u64>,
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub container_id: Option<String>,
    pub cmdline: Option<String>,
    pub parse_error: Option<String>,
    pub query_raw: Option<Vec<u8>>,
    pub query_size: Option<u64>,
    pub response_raw: Option<Vec<u8>>,
    pub response_size: Option<u64>,
}

fn or_dash(v: Option<impl std::fmt::Display>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `addr#port`, with IPv6 addresses as they come.
fn endpoint(ip: Option<String>, port: Option<u64>) -> String {
    match (ip, port) {
        (Some(ip), Some(port)) => format!("{ip}#{port}"),
        (Some(ip), None) => ip,
        (None, _) => "-".to_owned(),
    }
}

/// Writes one transaction: a transaction line, the process, the query, the response.
pub fn write_transaction(t: &Transcript, out: &mut dyn Write) -> io::Result<()> {
    let status = t.status.as_deref();
    let transport = t
        .transport
        .as_deref()
        .map(str::to_ascii_uppercase)
        .unwrap_or_else(|| "-".into());
    let ip_version = t.ip_version.as_deref().map(|v| format!(", IPv{v}"));
    writeln!(
        out,
        ";; TRANSACTION {} {} on {}",
        or_dash(t.qname.as_deref()),
        or_dash(t.qtype_name.as_deref()),
        or_dash(t.hostname.as_deref()),
    )?;
    if let Some(sent) = t
        .qname_sent
        .as_deref()
        .filter(|s| Some(*s) != t.qname.as_deref())
    {
        writeln!(out, ";; NAME AS SENT: {sent}")?;
    }
    writeln!(
        out,
        ";; WHEN: {}  status: {}",
        or_dash(t.ts.as_deref()),
        or_dash(status)
    )?;
    writeln!(
        out,
        ";; SERVER: {} ({transport}{})  CLIENT: {}",
        endpoint(t.server_ip.clone(), t.server_port),
        ip_version.unwrap_or_default(),
        endpoint(t.client_ip.clone(), t.client_port),
    )?;
    match t.latency_ns {
        Some(ns) => writeln!(out, ";; Query time: {:.3} msec", ns as f64 / 1e6)?,
        None => writeln!(out, ";; Query time: - (no response paired)")?,
    }
    let pid = t.pid;
    if pid.is_none() && t.comm.is_none() && t.exe.is_none() {
        writeln!(
            out,
            ";; PROCESS: unknown (not attributed, e.g. imported from a capture)"
        )?;
    } else {
        writeln!(
            out,
            ";; PROCESS: pid {} ppid {} uid {} comm {} exe {} container {}",
            or_dash(pid),
            or_dash(t.ppid),
            or_dash(t.uid),
            or_dash(t.comm.as_deref()),
            or_dash(t.exe.as_deref()),
            or_dash(t.container_id.as_deref()),
        )?;
        if let Some(cmdline) = &t.cmdline {
            writeln!(out, ";; CMDLINE: {cmdline}")?;
        }
    }
    if let Some(err) = &t.parse_error {
        writeln!(out, ";; RECORDER PARSE ERROR: {err}")?;
    }
    let query = t.query_raw.as_deref();
    let response = t.response_raw.as_deref();
    writeln!(out)?;
    match query {
        Some(raw) => render_message("QUERY", raw, t.query_size, out)?,
        None => writeln!(out, ";; QUERY: not captured")?,
    }
    writeln!(out)?;
    match response {
        Some(raw) => render_message("RESPONSE", raw, t.response_size, out)?,
        None => writeln!(
            out,
            ";; RESPONSE: none{}",
            if status == Some("unanswered") {
                " (unanswered)"
            } else {
                ""
            }
        )?,
    }
    Ok(())
}

/// The fixed 12-byte header, read by hand so that it can be shown for messages that do not
/// parse.
struct RawHeader {
    id: u16,
    flags: u16,
    counts: [u16; 4],
}

impl RawHeader {
    fn read(raw: &[u8]) -> Option<Self> {
        if raw.len() < 12 {
            return None;
        }
        let w = |i: usize| u16::from_be_bytes([raw[i], raw[i + 1]]);
        Some(RawHeader {
            id: w(0),
            flags: w(2),
            counts: [w(4), w(6), w(8), w(10)],
        })
    }

    fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }

    fn flag_names(&self) -> String {
        let names = [
            (15, "qr"),
            (10, "aa"),
            (9, "tc"),
            (8, "rd"),
            (7, "ra"),
            (6, "z"),
            (5, "ad"),
            (4, "cd"),
        ];
        names
            .iter()
            .filter(|(bit, _)| self.flags & (1 << bit) != 0)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn header_lines(h: &RawHeader, rcode: u16, update: bool) -> String {
    let (q, a, n, ad) = if update {
        ("ZONE", "PREREQ", "UPDATE", "ADDITIONAL")
    } else {
        ("QUERY", "ANSWER", "AUTHORITY", "ADDITIONAL")
    };
    format!(
        ";; ->>HEADER<<- opcode: {}, status: {}, id: {}\n;; flags: {}; {q}: {}, {a}: {}, {n}: {}, {ad}: {}\n",
        names::opcode(h.opcode()),
        names::rcode(rcode),
        h.id,
        h.flag_names(),
        h.counts[0],
        h.counts[1],
        h.counts[2],
        h.counts[3],
    )
}

fn render_message(
    what: &str,
    raw: &[u8],
    size: Option<u64>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let len = size.unwrap_or(raw.len() as u64);
    match Message::from_vec(raw) {
        Ok(msg) => {
            writeln!(out, ";; {what}: {len} bytes")?;
            out.write_all(format_message(&msg, raw).as_bytes())
        }
        Err(e) => {
            writeln!(out, ";; {what}: {len} bytes, could not be parsed: {e}")?;
            match RawHeader::read(raw) {
                Some(h) => {
                    out.write_all(header_lines(&h, h.flags & 0xf, h.opcode() == 5).as_bytes())?
                }
                None => writeln!(out, ";; (shorter than the 12-byte header)")?,
            }
            out.write_all(hex_dump(raw).as_bytes())
        }
    }
}

/// The message in dig's layout.
fn format_message(msg: &Message, raw: &[u8]) -> String {
    let mut s = String::new();
    let update = u8::from(msg.metadata.op_code) == 5;
    let rcode = u16::from(msg.metadata.response_code);
    if let Some(h) = RawHeader::read(raw) {
        s.push_str(&header_lines(&h, rcode, update));
    }
    if let Some(edns) = &msg.edns {
        s.push_str("\n;; OPT PSEUDOSECTION:\n");
        s.push_str(&format_edns(edns));
    }
    let sections: [(&str, &[Record]); 3] = if update {
        [
            ("PREREQUISITE", &msg.answers),
            ("UPDATE", &msg.authorities),
            ("ADDITIONAL", &msg.additionals),
        ]
    } else {
        [
            ("ANSWER", &msg.answers),
            ("AUTHORITY", &msg.authorities),
            ("ADDITIONAL", &msg.additionals),
        ]
    };
    s.push_str(if update {
        "\n;; ZONE SECTION:\n"
    } else {
        "\n;; QUESTION SECTION:\n"
    });
    for q in &msg.queries {
        let _ = writeln!(s, ";{}\t\t{}\t{}", q.name, q.query_class, q.query_type);
    }
    for (title, records) in sections {
        if records.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n;; {title} SECTION:");
        for rec in records {
            s.push_str(&format_record(rec));
            s.push('\n');
        }
    }
    if let Some(sig) = msg.signature() {
        let _ = writeln!(
            s,
            "\n;; TSIG PSEUDOSECTION:\n{}\t{}\t{}\tTSIG",
            sig.name, sig.ttl, sig.dns_class
        );
    }
    s
}

/// One resource record as dig prints it; rdata hickory does not decode (DNSSEC types without
/// its crypto features, unknown types, NULL) in RFC 3597 generic form.
fn format_record(rec: &Record) -> String {
    let rdata = match &rec.data {
        RData::Unknown { rdata, .. } | RData::NULL(rdata) => {
            dnstext::generic_rdata(&rdata.anything)
        }
        other => {
            let mut t = String::new();
            match write!(t, "{other}") {
                Ok(()) => t,
                Err(_) => "; (rdata not printable)".to_owned(),
            }
        }
    };
    format!(
        "{}\t{}\t{}\t{}\t{}",
        rec.name,
        rec.ttl,
        rec.dns_class,
        rec.record_type(),
        rdata
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OPT pseudo-section in dig's words.
fn format_edns(edns: &Edns) -> String {
    let mut s = String::new();
    let flags = if edns.flags().dnssec_ok { " do" } else { "" };
    let _ = writeln!(
        s,
        "; EDNS: version: {}, flags:{flags}; udp: {}",
        edns.version(),
        edns.max_payload()
    );
    for (code, option) in &edns.options().options {
        let code = u16::from(*code);
        match option {
            EdnsOption::Subnet(cs) => {
                let _ = writeln!(
                    s,
                    "; CLIENT-SUBNET: {}/{}/{}",
                    cs.addr(),
                    cs.source_prefix(),
                    cs.scope_prefix()
                );
            }
            EdnsOption::NSID(payload) => {
                let bytes: &[u8] = payload.as_ref();
                let _ = writeln!(
                    s,
                    "; NSID: {} (\"{}\")",
                    hex(bytes),
                    String::from_utf8_lossy(bytes)
                );
            }
            EdnsOption::Unknown(_, data) => s.push_str(&format_option(code, data)),
            _ => {
                let _ = writeln!(s, "; OPT={code}");
            }
        }
    }
    s
}

fn format_option(code: u16, data: &[u8]) -> String {
    match code {
        10 => {
            let (client, server) = data.split_at(data.len().min(8));
            if server.is_empty() {
                format!("; COOKIE: {}\n", hex(client))
            } else {
                format!("; COOKIE: {} {}\n", hex(client), hex(server))
            }
        }
        11 => match data {
            [a, b] => format!(
                "; TCP-KEEPALIVE: {:.1} secs\n",
                f64::from(u16::from_be_bytes([*a, *b])) / 10.0
            ),
            _ => "; TCP-KEEPALIVE\n".to_owned(),
        },
        12 => format!("; PADDING: {} bytes\n", data.len()),
        9 => match data {
            [a, b, c, d] => format!("; EXPIRE: {}\n", u32::from_be_bytes([*a, *b, *c, *d])),
            _ => "; EXPIRE\n".to_owned(),
        },
        5..=7 => {
            let name = ["DAU", "DHU", "N3U"][usize::from(code - 5)];
            let list: Vec<String> = data.iter().map(u8::to_string).collect();
            format!("; {name}: {}\n", list.join(" "))
        }
        13 => format!("; CHAIN: {}\n", hex(data)),
        14 => {
            let tags: Vec<String> = data
                .chunks(2)
                .map(|c| match c {
                    [a, b] => u16::from_be_bytes([*a, *b]).to_string(),
                    _ => hex(c),
                })
                .collect();
            format!("; KEY-TAG: {}\n", tags.join(", "))
        }
        15 if data.len() >= 2 => {
            let info = u16::from_be_bytes([data[0], data[1]]);
            let text = String::from_utf8_lossy(&data[2..]);
            format!(
                "; EDE: {info}{}\n",
                if text.is_empty() {
                    String::new()
                } else {
                    format!(" (\"{text}\")")
                }
            )
        }
        8 => format!("; CLIENT-SUBNET (undecoded): {}\n", hex(data)),
        _ => format!("; OPT={code}: {}\n", hex(data)),
    }
}

/// Bytes of a message [`write_transaction`] dumps in hex; the rest is summarised (the full bytes are in
/// the `query_raw`/`response_raw` columns, e.g. `encode(response_raw, 'hex')`).
pub const HEX_DUMP_LIMIT: usize = 512;

/// `xxd`-style dump: offset, 16 bytes in hex, printable ASCII; at most [`HEX_DUMP_LIMIT`]
/// bytes.
pub fn hex_dump(raw: &[u8]) -> String {
    let mut s = String::new();
    let shown = &raw[..raw.len().min(HEX_DUMP_LIMIT)];
    for (n, chunk) in shown.chunks(16).enumerate() {
        let _ = write!(s, ";; {:04x}  ", n * 16);
        for j in 0..16 {
            match chunk.get(j) {
                Some(b) => {
                    let _ = write!(s, "{b:02x} ");
                }
                None => s.push_str("   "),
            }
            if j == 7 {
                s.push(' ');
            }
        }
        s.push(' ');
        s.push('|');
        for &b in chunk {
            s.push(if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '.'
            });
        }
        s.push_str("|\n");
    }
    if raw.len() > shown.len() {
        let _ = writeln!(s, ";; ... {} more bytes", raw.len() - shown.len());
    }
    s
}
