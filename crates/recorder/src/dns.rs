//! Step 3 of the path: **DNS wire messages -> the fields one transaction row needs** (between
//! [`crate::decode`] and [`crate::pair`]).
//!
//! [`parse`] never panics and never drops a message: whatever can be read is returned, and
//! whatever could not be read is described in [`ParsedDns::parse_error`].
//!
//! hickory-proto does the decoding (names, record data, ECS). We drive it record by record
//! instead of calling `Message::from_vec`, because that call is all-or-nothing: one bad byte in
//! the additional section would cost us the question and the answers. Driving it piecewise
//! keeps everything before the first bad byte, and a record whose rdata does not decode is kept
//! in RFC 3597 generic form because its length field still frames it.
//!
//! Text conventions (what the `qname`, `questions` and `answers` columns hold):
//! - Names are lower-cased (ASCII only), have no trailing dot, and the root is `.`. Bytes that
//!   are not printable ASCII are written `\DDD` (decimal), and `.` `\` `"` `(` `)` `;` `@` `$`
//!   inside a label are backslash-escaped, as `dig` prints them. Names inside rdata (CNAME
//!   targets, MX exchanges, ...) follow the same rules so they can be joined against `qname`.
//! - Question names are also kept as sent where that differs, i.e. where they have an upper-case
//!   letter ([`ParsedDns::qname_case`], [`ParsedDns::questions_case`]): the same text with the
//!   case of the wire. Escapes hold no letters, so the normal form is exactly the ASCII
//!   lower-casing of that text, and a lower-case name costs nothing more.
//! - Rdata is in presentation format for the common types; every other type (including the
//!   DNSSEC types: hickory compiles their decoders only with its `dnssec-*` crypto features,
//!   which we do not enable) is written in the RFC 3597 generic form `\# <len> <HEX>`.

use std::fmt::Write as _;
use std::net::IpAddr;

use dnsledger_schema::{Answer, Question, dnstext, names};
use hickory_proto::rr::rdata::opt::ClientSubnet;
use hickory_proto::rr::rdata::svcb::{SVCB, SvcParamValue};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, DecodeError, Restrict};

/// Length of the fixed DNS header.
pub const HEADER_LEN: usize = 12;

/// Longest name (in wire octets) the fallback question reader renders. Above the 255-octet
/// protocol limit on purpose: it only runs on messages hickory already rejected, and showing an
/// over-long name is more useful than showing none.
const FALLBACK_MAX_NAME: usize = 1024;
/// Compression pointers the fallback question reader follows before giving up (loop guard).
const FALLBACK_MAX_POINTERS: usize = 64;

/// EDNS(0) facts of a message with an OPT record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdnsInfo {
    /// Requestor's UDP payload size (the OPT record's CLASS).
    pub udp_size: u16,
    pub version: u8,
    /// The DNSSEC OK bit.
    pub dnssec_ok: bool,
    /// Client subnet as `addr/source_prefix/scope_prefix`, e.g. `192.0.2.0/24/0`.
    pub ecs: Option<String>,
    /// A COOKIE option is present.
    pub cookie: bool,
    /// INFO-CODE of the first Extended DNS Error option.
    pub ede_code: Option<u16>,
    /// EXTRA-TEXT of the first Extended DNS Error option, when not empty.
    pub ede_text: Option<String>,
}

/// Everything a transaction row takes from one DNS message.
///
/// Header fields are `None` only when the message is too short to hold them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedDns {
    pub id: Option<u16>,
    /// QR bit: true for a response.
    pub qr: Option<bool>,
    pub opcode: Option<u8>,
    /// Response code, extended with the OPT record's upper 8 bits when EDNS is present.
    pub rcode: Option<u16>,
    /// Mnemonic of [`rcode`](Self::rcode) (`NOERROR`, `NXDOMAIN`, `BADVERS`, `RCODE12`...).
    pub rcode_name: Option<String>,
    pub aa: Option<bool>,
    pub tc: Option<bool>,
    pub rd: Option<bool>,
    pub ra: Option<bool>,
    pub ad: Option<bool>,
    pub cd: Option<bool>,
    /// Section counts as the header declares them (not as many as could be read).
    pub qdcount: Option<u16>,
    pub ancount: Option<u16>,
    pub nscount: Option<u16>,
    pub arcount: Option<u16>,
    /// Questions that were read completely.
    pub questions: Vec<Question>,
    /// Name of the first question; also set when only the name could be read.
    pub qname: Option<String>,
    /// [`qname`](Self::qname) with the case it was sent in, when that has an upper-case letter
    /// (else it is `qname`).
    pub qname_case: Option<String>,
    /// (index in [`questions`](Self::questions), name as sent) of each question whose name has
    /// an upper-case letter.
    pub questions_case: Vec<(usize, String)>,
    pub qtype: Option<u16>,
    /// Mnemonic of [`qtype`](Self::qtype) (`A`, `HTTPS`, `TYPE65534`...).
    pub qtype_name: Option<String>,
    pub qclass: Option<u16>,
    /// Answer-section records that were read.
    pub answers: Vec<Answer>,
    /// Addresses of the A and AAAA records among [`answers`](Self::answers).
    pub answer_ips: Vec<String>,
    /// Present when the additional section holds an OPT record.
    pub edns: Option<EdnsInfo>,
    /// Why (part of) the message could not be read; `None` when all of it was.
    pub parse_error: Option<String>,
}

impl ParsedDns {
    /// The 12-byte header was present, so counts and flags are known.
    pub fn has_header(&self) -> bool {
        self.arcount.is_some()
    }

    fn note_error(&mut self, msg: String) {
        match &mut self.parse_error {
            Some(e) => {
                e.push_str("; ");
                e.push_str(&msg);
            }
            None => self.parse_error = Some(msg),
        }
    }

    fn set_first_question(&mut self, sent: &Sent, qtype: Option<u16>, qclass: Option<u16>) {
        self.qname = Some(sent.normal.clone());
        self.qname_case = sent.case.clone();
        self.qtype = qtype;
        self.qtype_name = qtype.map(|t| names::rtype(t).into_owned());
        self.qclass = qclass;
    }

    /// Appends a question (its name normalised), noting the name as sent when its case differs.
    fn push_question(&mut self, sent: Sent, qtype: u16, qclass: u16) {
        if let Some(case) = sent.case {
            self.questions_case.push((self.questions.len(), case));
        }
        self.questions.push(Question {
            name: sent.normal,
            qtype,
            qclass,
        });
    }
}

/// Parses one DNS message (without a TCP length prefix).
pub fn parse(bytes: &[u8]) -> ParsedDns {
    let mut p = ParsedDns::default();
    read_header(bytes, &mut p);
    if bytes.len() < HEADER_LEN {
        p.parse_error = Some(format!("message too short: {} bytes", bytes.len()));
        return p;
    }
    let mut dec = BinDecoder::new(bytes);
    if let Err(e) = dec.read_slice(HEADER_LEN) {
        // Unreachable given the length check above, but reported rather than assumed.
        p.note_error(format!("malformed message: header: {e}"));
        return p;
    }
    if read_questions(bytes, &mut dec, &mut p).is_err() {
        return p;
    }
    let ancount = p.ancount.unwrap_or(0);
    for i in 0..ancount {
        match read_rr(&mut dec) {
            Ok(rr) => push_answer(bytes, &rr, i, ancount, &mut p),
            Err(e) => {
                p.note_error(format!(
                    "malformed message: answer record {} of {ancount}: {e}",
                    i + 1
                ));
                return p;
            }
        }
    }
    let nscount = p.nscount.unwrap_or(0);
    for i in 0..nscount {
        // Authority records are framed (to reach the additional section) but not rendered:
        // no column holds them.
        if let Err(e) = read_rr(&mut dec) {
            p.note_error(format!(
                "malformed message: authority record {} of {nscount}: {e}",
                i + 1
            ));
            return p;
        }
    }
    let arcount = p.arcount.unwrap_or(0);
    for i in 0..arcount {
        match read_rr(&mut dec) {
            Ok(rr) if rr.rtype == u16::from(RecordType::OPT) && p.edns.is_none() => {
                read_opt(&rr, &mut p);
            }
            Ok(_) => {}
            Err(e) => {
                p.note_error(format!(
                    "malformed message: additional record {} of {arcount}: {e}",
                    i + 1
                ));
                return p;
            }
        }
    }
    p
}

/// Reads the fixed header straight from the bytes.
///
/// Hand-parsed rather than taken from hickory's `Header::read`: hickory yields nothing for a
/// message shorter than 12 bytes, while the id and flags of a cut-off message still pair it
/// with its query. Every field is read only if its bytes are present.
fn read_header(bytes: &[u8], p: &mut ParsedDns) {
    p.id = be16(bytes, 0);
    if let Some(flags) = be16(bytes, 2) {
        let bit = |n: u16| flags & (1 << n) != 0;
        p.qr = Some(bit(15));
        p.opcode = Some(((flags >> 11) & 0xF) as u8);
        p.aa = Some(bit(10));
        p.tc = Some(bit(9));
        p.rd = Some(bit(8));
        p.ra = Some(bit(7));
        p.ad = Some(bit(5));
        p.cd = Some(bit(4));
        let rcode = flags & 0xF;
        p.rcode = Some(rcode);
        p.rcode_name = Some(names::rcode(rcode).into_owned());
    }
    p.qdcount = be16(bytes, 4);
    p.ancount = be16(bytes, 6);
    p.nscount = be16(bytes, 8);
    p.arcount = be16(bytes, 10);
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let hi = *bytes.get(at)?;
    let lo = *bytes.get(at.checked_add(1)?)?;
    Some(u16::from_be_bytes([hi, lo]))
}

/// Reads the question section; `Err(())` means reading stopped (the error is in `p`).
fn read_questions(bytes: &[u8], dec: &mut BinDecoder<'_>, p: &mut ParsedDns) -> Result<(), ()> {
    let qdcount = p.qdcount.unwrap_or(0);
    for i in 0..qdcount {
        let start = dec.index();
        let read = Name::read(dec).and_then(|name| {
            let qtype = dec.read_u16()?.unverified(/* any type code is valid */);
            let qclass = dec.read_u16()?.unverified(/* any class code is valid */);
            Ok((dnstext::name_from_labels(name.iter(), false), qtype, qclass))
        });
        match read {
            Ok((text, qtype, qclass)) => {
                let sent = Sent::of(text);
                if i == 0 {
                    p.set_first_question(&sent, Some(qtype), Some(qclass));
                }
                p.push_question(sent, qtype, qclass);
            }
            Err(e) => {
                p.note_error(format!(
                    "malformed message: question {} of {qdcount}: {e}",
                    i + 1
                ));
                recover_question(bytes, start, i == 0, p);
                return Err(());
            }
        }
    }
    Ok(())
}

/// A question name as rendered from the wire: its normal form, and the text as sent when that
/// differs (has an upper-case letter).
struct Sent {
    normal: String,
    case: Option<String>,
}

impl Sent {
    fn of(text: String) -> Sent {
        if dnstext::has_upper(&text) {
            Sent {
                normal: text.to_ascii_lowercase(),
                case: Some(text),
            }
        } else {
            Sent {
                normal: text,
                case: None,
            }
        }
    }
}

impl ParsedDns {
    /// The `qname_case` and `questions_case` columns of the transaction whose question group
    /// this message gives (taken out of it): the first question's name as sent where it has
    /// upper case, and, for a message of several questions of which one has, every question's
    /// name as sent. Call before [`questions`](Self::questions) is taken.
    pub fn take_case_columns(&mut self) -> (Option<String>, Option<Vec<String>>) {
        let all = (self.questions.len() > 1 && !self.questions_case.is_empty()).then(|| {
            let mut cased = std::mem::take(&mut self.questions_case)
                .into_iter()
                .peekable();
            self.questions
                .iter()
                .enumerate()
                .map(|(i, q)| match cased.next_if(|(j, _)| *j == i) {
                    Some((_, name)) => name,
                    None => q.name.clone(),
                })
                .collect()
        });
        (self.qname_case.take(), all)
    }
}

/// Salvages what it can of a question hickory rejected.
fn recover_question(bytes: &[u8], start: usize, first: bool, p: &mut ParsedDns) {
    let Some((name, end)) = fallback_name(bytes, start) else {
        return;
    };
    let qtype = be16(bytes, end);
    let qclass = end.checked_add(2).and_then(|at| be16(bytes, at));
    let sent = Sent::of(name);
    if first {
        p.set_first_question(&sent, qtype, qclass);
    }
    if let (Some(qtype), Some(qclass)) = (qtype, qclass) {
        p.push_question(sent, qtype, qclass);
    }
}

/// Defensive name reader for questions hickory rejected; returns the rendered name (with the
/// case it was sent in) and the offset just past it.
///
/// Hand-written because hickory's name decoder fails the whole name on anything unusual
/// (forward compression pointers, names over 255 octets, a type/class cut off after the name)
/// and returns no partial result; this reader still yields a `qname` for such messages. It is
/// bounded: labels are length-checked against the buffer, at most [`FALLBACK_MAX_POINTERS`]
/// pointers are followed (so pointer loops end) and at most [`FALLBACK_MAX_NAME`] octets are
/// rendered.
fn fallback_name(bytes: &[u8], start: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut pos = start;
    let mut end = None;
    let mut pointers = 0;
    let mut wire_len = 1usize;
    loop {
        let len = *bytes.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                let end = end.unwrap_or(pos + 1);
                if out.is_empty() {
                    out.push('.');
                }
                return Some((out, end));
            }
            0x00 => {
                let label = bytes.get(pos + 1..pos + 1 + usize::from(len))?;
                wire_len += label.len() + 1;
                if wire_len > FALLBACK_MAX_NAME {
                    return None;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                dnstext::push_label(&mut out, label, false);
                pos += 1 + label.len();
            }
            0xC0 => {
                let target = usize::from(be16(bytes, pos)? & 0x3FFF);
                pointers += 1;
                if pointers > FALLBACK_MAX_POINTERS {
                    return None;
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            // 0x40 and 0x80 are reserved label types (RFC 6891 section 5): nothing to render.
            _ => return None,
        }
    }
}

/// One resource record, framed by its RDLENGTH.
struct Rr<'a> {
    name: Name,
    rtype: u16,
    class: u16,
    ttl: u32,
    /// Offset of the rdata in the message.
    rdata_start: usize,
    rdata: &'a [u8],
}

/// Reads one record's header with hickory's decoder and takes the rdata as bytes; the rdata is
/// decoded separately so that bad rdata costs one answer, not the rest of the message.
fn read_rr<'a>(dec: &mut BinDecoder<'a>) -> Result<Rr<'a>, DecodeError> {
    let name = Name::read(dec)?;
    let rtype = dec.read_u16()?.unverified(/* any type code is valid */);
    let class = dec.read_u16()?.unverified(/* any class code is valid */);
    let ttl = dec.read_u32()?.unverified(/* any ttl is valid */);
    let rdlen = dec.read_u16()?.unverified(/* checked by read_slice */);
    let rdata_start = dec.index();
    let rdata = dec.read_slice(usize::from(rdlen))?.unverified(/* length checked */);
    Ok(Rr {
        name,
        rtype,
        class,
        ttl,
        rdata_start,
        rdata,
    })
}

fn push_answer(bytes: &[u8], rr: &Rr<'_>, i: u16, ancount: u16, p: &mut ParsedDns) {
    let data = match rdata_text(bytes, rr) {
        Ok((text, ip)) => {
            // The text of an A/AAAA record is its address, as `answer_ips` wants it.
            if ip.is_some() {
                p.answer_ips.push(text.clone());
            }
            text
        }
        Err(e) => {
            p.note_error(format!(
                "malformed message: answer record {} of {ancount} ({}) rdata: {e}",
                i + 1,
                names::rtype(rr.rtype)
            ));
            dnstext::generic_rdata(rr.rdata)
        }
    };
    p.answers.push(Answer {
        name: name_to_string(&rr.name),
        rtype: names::rtype(rr.rtype).into_owned(),
        ttl: rr.ttl,
        data,
    });
}

/// Types whose rdata is decoded with hickory and rendered in presentation format. Others are
/// not handed to hickory at all: it would decode some private-use codes as names (it maps ANAME
/// to 65305) and print others in non-standard text.
const TYPED_RDATA: &[u16] = &[
    1, 2, 5, 6, 12, 13, 15, 16, 28, 33, 35, 44, 52, 53, 61, 64, 65, 257,
];
const DNAME: u16 = 39;

/// Presentation text of one record's rdata, and its address for A/AAAA; `Err` describes rdata
/// that does not decode as its type says.
fn rdata_text(bytes: &[u8], rr: &Rr<'_>) -> Result<(String, Option<IpAddr>), String> {
    if rr.rdata.is_empty() {
        return Ok((dnstext::generic_rdata(rr.rdata), None));
    }
    let end = rr.rdata_start + rr.rdata.len();
    // A decoder over the message up to the end of this rdata, positioned at its start: names
    // in rdata may point back into the message, but nothing may be read past the rdata.
    let upto = bytes
        .get(..end)
        .ok_or_else(|| DecodeError::InsufficientBytes.to_string())?;
    let mut sub = BinDecoder::new(upto);
    sub.read_slice(rr.rdata_start).map_err(|e| e.to_string())?;
    if rr.rtype == DNAME {
        // hickory has no DNAME rdata type; its target is one (uncompressed) name.
        let name = Name::read(&mut sub).map_err(|e| e.to_string())?;
        if sub.index() != end {
            return Err(format!(
                "name uses {} of {} rdata bytes",
                sub.index() - rr.rdata_start,
                rr.rdata.len()
            ));
        }
        return Ok((name_to_string(&name), None));
    }
    if !TYPED_RDATA.contains(&rr.rtype) {
        return Ok((dnstext::generic_rdata(rr.rdata), None));
    }
    // rdata.len() came from a u16 field, so it fits.
    let len = u16::try_from(rr.rdata.len()).map_err(|e| e.to_string())?;
    let rdata = RData::read(&mut sub, RecordType::from(rr.rtype), Restrict::new(len))
        .map_err(|e| e.to_string())?;
    let text = typed_rdata_text(&rdata).unwrap_or_else(|| dnstext::generic_rdata(rr.rdata));
    Ok((text, rdata.ip_addr()))
}

/// An address as `Display` prints it. IPv4 is written here by hand: `Display` goes through the
/// formatting machinery (padding, width), and the three or more addresses of every row made it
/// ~6 % of the recorder's CPU at 10k q/s (bench/RESULTS.md, profile). IPv6, with its zero-run
/// rules, is left to the standard library.
pub fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                if o >= 100 {
                    s.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    s.push(char::from(b'0' + o / 10 % 10));
                }
                s.push(char::from(b'0' + o % 10));
            }
            s
        }
        IpAddr::V6(v6) => v6.to_string(),
    }
}

/// Presentation format of the decoded types; `None` for variants left to the generic form.
///
/// Written here rather than taken from hickory's `Display`, which prints names with a trailing
/// dot and original case, concatenates TXT strings without quotes, and leaves trailing commas
/// in SVCB lists.
fn typed_rdata_text(rdata: &RData) -> Option<String> {
    let mut s = String::new();
    match rdata {
        RData::A(a) => s = ip_text(IpAddr::V4(a.0)),
        RData::AAAA(a) => s = ip_text(IpAddr::V6(a.0)),
        RData::NS(n) => s = name_to_string(&n.0),
        RData::CNAME(n) => s = name_to_string(&n.0),
        RData::PTR(n) => s = name_to_string(&n.0),
        RData::SOA(soa) => {
            // REFRESH, RETRY and EXPIRE are unsigned 32-bit on the wire; hickory stores them
            // as i32, so reinterpret the bits.
            write!(
                s,
                "{} {} {} {} {} {} {}",
                name_to_string(&soa.mname),
                name_to_string(&soa.rname),
                soa.serial,
                soa.refresh as u32,
                soa.retry as u32,
                soa.expire as u32,
                soa.minimum
            )
            .ok()?;
        }
        RData::HINFO(h) => {
            dnstext::push_char_string(&mut s, &h.cpu);
            s.push(' ');
            dnstext::push_char_string(&mut s, &h.os);
        }
        RData::MX(mx) => write!(s, "{} {}", mx.preference, name_to_string(&mx.exchange)).ok()?,
        RData::TXT(txt) => {
            for (i, part) in txt.txt_data.iter().enumerate() {
                if i > 0 {
                    s.push(' ');
                }
                dnstext::push_char_string(&mut s, part);
            }
        }
        RData::SRV(srv) => write!(
            s,
            "{} {} {} {}",
            srv.priority,
            srv.weight,
            srv.port,
            name_to_string(&srv.target)
        )
        .ok()?,
        RData::NAPTR(n) => {
            write!(s, "{} {} ", n.order, n.preference).ok()?;
            dnstext::push_char_string(&mut s, &n.flags);
            s.push(' ');
            dnstext::push_char_string(&mut s, &n.services);
            s.push(' ');
            dnstext::push_char_string(&mut s, &n.regexp);
            s.push(' ');
            s.push_str(&name_to_string(&n.replacement));
        }
        // hickory's text for these is already the RFC presentation format.
        RData::SSHFP(x) => write!(s, "{x}").ok()?,
        RData::TLSA(x) => write!(s, "{x}").ok()?,
        RData::SMIMEA(x) => write!(s, "{x}").ok()?,
        RData::OPENPGPKEY(x) => write!(s, "{x}").ok()?,
        RData::SVCB(svcb) => push_svcb(&mut s, svcb),
        RData::HTTPS(https) => push_svcb(&mut s, &https.0),
        RData::CAA(caa) => {
            let flags = (u8::from(caa.issuer_critical) << 7) | caa.reserved_flags;
            write!(s, "{flags} {} ", caa.tag).ok()?;
            dnstext::push_char_string(&mut s, &caa.value);
        }
        _ => return None,
    }
    Some(s)
}

/// SVCB/HTTPS in RFC 9460 presentation format.
fn push_svcb(s: &mut String, svcb: &SVCB) {
    let _ = write!(
        s,
        "{} {}",
        svcb.svc_priority,
        name_to_string(&svcb.target_name)
    );
    for (key, value) in &svcb.svc_params {
        s.push(' ');
        push_svc_key(s, u16::from(*key));
        match value {
            SvcParamValue::Mandatory(m) => {
                s.push('=');
                for (i, k) in m.0.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    push_svc_key(s, u16::from(*k));
                }
            }
            SvcParamValue::Alpn(alpn) => {
                // A value list (RFC 9460 appendix A.1): commas and backslashes inside an item
                // are escaped with a backslash, then the whole value is a quoted string.
                let mut list = Vec::new();
                for (i, id) in alpn.0.iter().enumerate() {
                    if i > 0 {
                        list.push(b',');
                    }
                    for &b in id.as_bytes() {
                        if b == b',' || b == b'\\' {
                            list.push(b'\\');
                        }
                        list.push(b);
                    }
                }
                s.push('=');
                dnstext::push_char_string(s, &list);
            }
            SvcParamValue::NoDefaultAlpn => {}
            SvcParamValue::Port(port) => {
                let _ = write!(s, "={port}");
            }
            SvcParamValue::Ipv4Hint(hint) => {
                for (i, a) in hint.0.iter().enumerate() {
                    s.push(if i == 0 { '=' } else { ',' });
                    let _ = write!(s, "{}", a.0);
                }
            }
            SvcParamValue::Ipv6Hint(hint) => {
                for (i, a) in hint.0.iter().enumerate() {
                    s.push(if i == 0 { '=' } else { ',' });
                    let _ = write!(s, "{}", a.0);
                }
            }
            // hickory prints the base64 value in quotes.
            SvcParamValue::EchConfigList(ech) => {
                let _ = write!(s, "={ech}");
            }
            SvcParamValue::Unknown(u) => {
                if !u.0.is_empty() {
                    s.push('=');
                    dnstext::push_char_string(s, &u.0);
                }
            }
        }
    }
}

fn push_svc_key(s: &mut String, key: u16) {
    let name = match key {
        0 => "mandatory",
        1 => "alpn",
        2 => "no-default-alpn",
        3 => "port",
        4 => "ipv4hint",
        5 => "ech",
        6 => "ipv6hint",
        7 => "dohpath",
        8 => "ohttp",
        _ => {
            let _ = write!(s, "key{key}");
            return;
        }
    };
    s.push_str(name);
}

/// Reads the OPT record: EDNS header fields from its CLASS and TTL, options from its rdata.
fn read_opt(rr: &Rr<'_>, p: &mut ParsedDns) {
    let rcode_high = (rr.ttl >> 24) as u16;
    let mut edns = EdnsInfo {
        udp_size: rr.class,
        version: (rr.ttl >> 16) as u8,
        dnssec_ok: rr.ttl & 0x8000 != 0,
        ..EdnsInfo::default()
    };
    if let Some(low) = p.rcode {
        let rcode = (rcode_high << 4) | low;
        p.rcode = Some(rcode);
        p.rcode_name = Some(names::rcode(rcode).into_owned());
    }
    // The option list is walked by hand: hickory's OPT decoder discards every option when one
    // of them fails to decode, and has no types for COOKIE or Extended DNS Errors. Each option
    // is a 2-byte code, a 2-byte length and that many bytes (RFC 6891 section 6.1.2).
    let mut rest = rr.rdata;
    while !rest.is_empty() {
        let (Some(code), Some(len)) = (be16(rest, 0), be16(rest, 2)) else {
            p.note_error(format!(
                "malformed message: OPT record: {} stray bytes after the last option",
                rest.len()
            ));
            break;
        };
        let Some(data) = rest.get(4..4 + usize::from(len)) else {
            p.note_error(format!(
                "malformed message: OPT record: option {code} claims {len} bytes, {} left",
                rest.len() - 4
            ));
            break;
        };
        rest = rest.get(4 + data.len()..).unwrap_or_default();
        match code {
            // Client subnet (RFC 7871), decoded by hickory.
            8 if edns.ecs.is_none() => match ClientSubnet::try_from(data) {
                Ok(ecs) => {
                    edns.ecs = Some(format!(
                        "{}/{}/{}",
                        ecs.addr(),
                        ecs.source_prefix(),
                        ecs.scope_prefix()
                    ));
                }
                Err(e) => p.note_error(format!("malformed message: EDNS client subnet: {e}")),
            },
            // COOKIE (RFC 7873): only its presence is recorded.
            10 => edns.cookie = true,
            // Extended DNS Error (RFC 8914): 2-byte INFO-CODE, then UTF-8 EXTRA-TEXT.
            15 if edns.ede_code.is_none() => match be16(data, 0) {
                Some(info) => {
                    edns.ede_code = Some(info);
                    let text = String::from_utf8_lossy(data.get(2..).unwrap_or_default());
                    let text = text.trim_end_matches('\0');
                    if !text.is_empty() {
                        edns.ede_text = Some(text.to_owned());
                    }
                }
                None => p.note_error(format!(
                    "malformed message: extended DNS error option of {len} bytes"
                )),
            },
            _ => {}
        }
    }
    p.edns = Some(edns);
}

/// Renders a name per the module's conventions (the one rule: [`dnstext`]).
fn name_to_string(name: &Name) -> String {
    dnstext::name_from_labels(name.iter(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_display() {
        for a in [0u8, 1, 9, 10, 99, 100, 199, 200, 255] {
            for b in [0u8, 7, 42, 255] {
                let v4 = std::net::Ipv4Addr::new(a, b, 255 - a, b / 3);
                assert_eq!(ip_text(IpAddr::V4(v4)), v4.to_string());
            }
        }
        let v6: IpAddr = "2001:db8::1:0:0:1".parse().expect("v6");
        assert_eq!(ip_text(v6), v6.to_string());
    }

    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::str::FromStr;

    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, TXT};

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn query(id: u16, qname: &str, qtype: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name(qname), qtype));
        m
    }

    fn response_to(q: &Message) -> Message {
        let mut m = Message::response(q.metadata.id, OpCode::Query);
        m.metadata.recursion_desired = q.metadata.recursion_desired;
        m.metadata.recursion_available = true;
        m.add_queries(q.queries.clone());
        m
    }

    fn bytes(m: &Message) -> Vec<u8> {
        m.to_vec().unwrap()
    }

    #[test]
    fn plain_query() {
        let p = parse(&bytes(&query(0x1234, "WWW.Example.COM.", RecordType::AAAA)));
        assert_eq!(p.parse_error, None);
        assert_eq!(p.id, Some(0x1234));
        assert_eq!(p.qr, Some(false));
        assert_eq!(p.opcode, Some(0));
        assert_eq!(p.rd, Some(true));
        assert_eq!(p.ra, Some(false));
        assert_eq!(p.qdcount, Some(1));
        assert_eq!(p.ancount, Some(0));
        assert_eq!(p.qname.as_deref(), Some("www.example.com"));
        assert_eq!(p.qtype, Some(28));
        assert_eq!(p.qtype_name.as_deref(), Some("AAAA"));
        assert_eq!(p.qclass, Some(1));
        assert_eq!(
            p.questions,
            vec![Question {
                name: "www.example.com".into(),
                qtype: 28,
                qclass: 1
            }]
        );
        assert_eq!(p.edns, None);
        assert!(p.answers.is_empty());
    }

    #[test]
    fn answers_of_common_types() {
        let q = query(7, "www.example.com.", RecordType::A);
        let mut r = response_to(&q);
        r.metadata.authoritative = true;
        r.add_answer(Record::from_rdata(
            name("www.example.com."),
            300,
            RData::CNAME(CNAME(name("Edge.CDN.example.net."))),
        ));
        r.add_answer(Record::from_rdata(
            name("edge.cdn.example.net."),
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        ));
        r.add_answer(Record::from_rdata(
            name("edge.cdn.example.net."),
            60,
            RData::AAAA(AAAA(Ipv6Addr::from_str("2001:db8::1").unwrap())),
        ));
        r.add_answer(Record::from_rdata(
            name("example.com."),
            3600,
            RData::MX(MX::new(10, name("mail.example.com."))),
        ));
        r.add_answer(Record::from_rdata(
            name("example.com."),
            30,
            RData::TXT(TXT::new(vec![
                "v=spf1 -all".to_owned(),
                "say \"hi\"".to_owned(),
            ])),
        ));
        let p = parse(&bytes(&r));
        assert_eq!(p.parse_error, None);
        assert_eq!(p.qr, Some(true));
        assert_eq!(p.aa, Some(true));
        assert_eq!(p.ra, Some(true));
        assert_eq!(p.rcode, Some(0));
        assert_eq!(p.rcode_name.as_deref(), Some("NOERROR"));
        assert_eq!(p.ancount, Some(5));
        let got: Vec<(&str, &str, u32, &str)> = p
            .answers
            .iter()
            .map(|a| (a.name.as_str(), a.rtype.as_str(), a.ttl, a.data.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("www.example.com", "CNAME", 300, "edge.cdn.example.net"),
                ("edge.cdn.example.net", "A", 60, "192.0.2.1"),
                ("edge.cdn.example.net", "AAAA", 60, "2001:db8::1"),
                ("example.com", "MX", 3600, "10 mail.example.com"),
                ("example.com", "TXT", 30, r#""v=spf1 -all" "say \"hi\"""#),
            ]
        );
        assert_eq!(p.answer_ips, vec!["192.0.2.1", "2001:db8::1"]);
    }

    #[test]
    fn nxdomain() {
        let q = query(99, "nope.example.", RecordType::A);
        let mut r = response_to(&q);
        r.metadata.response_code = ResponseCode::NXDomain;
        let p = parse(&bytes(&r));
        assert_eq!(p.parse_error, None);
        assert_eq!(p.rcode, Some(3));
        assert_eq!(p.rcode_name.as_deref(), Some("NXDOMAIN"));
        assert_eq!(p.qname.as_deref(), Some("nope.example"));
        assert!(p.answers.is_empty());
        assert!(p.answer_ips.is_empty());
    }

    #[test]
    fn edns_with_ecs_cookie_and_ede() {
        let q = query(5, "example.org.", RecordType::A);
        let mut r = response_to(&q);
        r.metadata.response_code = ResponseCode::Refused;
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.set_dnssec_ok(true);
        let opts = edns.options_mut();
        opts.insert(EdnsOption::Subnet(ClientSubnet::new(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)),
            24,
            0,
        )));
        opts.insert(EdnsOption::Unknown(
            u16::from(EdnsCode::Cookie),
            vec![1, 2, 3, 4, 5, 6, 7, 8],
        ));
        let mut ede = 18u16.to_be_bytes().to_vec();
        ede.extend_from_slice(b"prohibited");
        opts.insert(EdnsOption::Unknown(15, ede));
        r.set_edns(edns);
        let p = parse(&bytes(&r));
        assert_eq!(p.parse_error, None);
        assert_eq!(p.rcode_name.as_deref(), Some("REFUSED"));
        assert_eq!(
            p.edns,
            Some(EdnsInfo {
                udp_size: 1232,
                version: 0,
                dnssec_ok: true,
                ecs: Some("192.0.2.0/24/0".into()),
                cookie: true,
                ede_code: Some(18),
                ede_text: Some("prohibited".into()),
            })
        );
    }

    #[test]
    fn extended_rcode_badvers() {
        let q = query(6, "example.org.", RecordType::A);
        let mut r = response_to(&q);
        r.metadata.response_code = ResponseCode::BADVERS;
        r.set_edns(Edns::new());
        let raw = bytes(&r);
        // Header keeps the low 4 bits (0), the OPT TTL the high 8 (1).
        assert_eq!(raw[3] & 0xF, 0);
        let p = parse(&raw);
        assert_eq!(p.parse_error, None);
        assert_eq!(p.rcode, Some(16));
        assert_eq!(p.rcode_name.as_deref(), Some("BADVERS"));
        assert_eq!(p.edns.as_ref().map(|e| e.udp_size), Some(512));
    }

    #[test]
    fn empty_and_short_messages() {
        let p = parse(&[]);
        assert_eq!(p.parse_error.as_deref(), Some("message too short: 0 bytes"));
        assert_eq!(p.id, None);
        assert_eq!(p.qdcount, None);
        assert!(!p.has_header());

        let p = parse(&[0xAB, 0xCD, 0x81, 0x83, 0x00]);
        assert_eq!(p.parse_error.as_deref(), Some("message too short: 5 bytes"));
        assert_eq!(p.id, Some(0xABCD));
        assert_eq!(p.qr, Some(true));
        assert_eq!(p.rd, Some(true));
        assert_eq!(p.rcode_name.as_deref(), Some("NXDOMAIN"));
        assert_eq!(p.qdcount, None);
        assert_eq!(p.qname, None);
    }

    /// Header with the given id, flags and counts.
    fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        for c in counts {
            v.extend_from_slice(&c.to_be_bytes());
        }
        v
    }

    #[test]
    fn compression_pointer_loop() {
        // Question name: label "a", then a pointer to itself-ish loop: offset 12 -> "a",
        // offset 14 -> pointer to 12.
        let mut m = header(1, 0x0100, [1, 0, 0, 0]);
        m.extend_from_slice(&[1, b'a', 0xC0, 12, 0, 1, 0, 1]);
        let p = parse(&m);
        let err = p.parse_error.unwrap();
        assert!(
            err.starts_with("malformed message: question 1 of 1: "),
            "{err}"
        );
        assert_eq!(p.id, Some(1));
        assert_eq!(p.qdcount, Some(1));
        // The fallback reader gives up after its pointer budget: no name rather than a hang.
        assert_eq!(p.qname, None);
        assert!(p.questions.is_empty());
    }

    #[test]
    fn forward_pointer_recovered_by_fallback() {
        // Question name is a pointer forward to "x.y" placed after the question.
        let mut m = header(2, 0x0100, [1, 0, 0, 0]);
        m.extend_from_slice(&[0xC0, 18, 0, 16, 0, 1]);
        m.extend_from_slice(&[1, b'x', 1, b'y', 0]);
        let p = parse(&m);
        assert!(p.parse_error.unwrap().contains("question 1 of 1"));
        assert_eq!(p.qname.as_deref(), Some("x.y"));
        assert_eq!(p.qtype_name.as_deref(), Some("TXT"));
        assert_eq!(p.questions.len(), 1);
    }

    #[test]
    fn label_past_end() {
        let mut m = header(3, 0x0100, [1, 0, 0, 0]);
        m.extend_from_slice(&[3, b'w', b'w', b'w', 40, b'x', b'y']);
        let p = parse(&m);
        assert!(
            p.parse_error
                .as_deref()
                .unwrap()
                .starts_with("malformed message: question 1 of 1: ")
        );
        assert_eq!(p.qname, None);
        assert_eq!(p.id, Some(3));
    }

    #[test]
    fn name_then_cut_off() {
        // Name complete, QTYPE/QCLASS missing: qname still reported.
        let mut m = header(4, 0x0100, [1, 0, 0, 0]);
        m.extend_from_slice(&[7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 0]);
        let p = parse(&m);
        assert!(p.parse_error.is_some());
        assert_eq!(p.qname.as_deref(), Some("example"));
        assert_eq!(p.qtype, None);
        assert!(p.questions.is_empty());
    }

    #[test]
    fn fewer_answers_than_ancount() {
        let q = query(0xBEEF, "many.example.com.", RecordType::A);
        let mut r = response_to(&q);
        for i in 0..5 {
            r.add_answer(Record::from_rdata(
                name("many.example.com."),
                60,
                RData::A(A(Ipv4Addr::new(198, 51, 100, i))),
            ));
        }
        let mut raw = bytes(&r);
        raw[7] = 9; // ANCOUNT 5 -> 9
        let p = parse(&raw);
        assert_eq!(p.ancount, Some(9));
        assert_eq!(p.qname.as_deref(), Some("many.example.com"));
        assert_eq!(p.answers.len(), 5);
        assert_eq!(p.answer_ips[4], "198.51.100.4");
        assert_eq!(
            p.parse_error.as_deref(),
            Some("malformed message: answer record 6 of 9: unexpected end of input reached")
        );
    }

    #[test]
    fn odd_bytes_in_names_are_escaped() {
        // Labels "A.b", "\0x\x7f", "ok" (upper-case A lower-cased).
        let mut m = header(5, 0x0100, [1, 0, 0, 0]);
        m.extend_from_slice(&[3, b'A', b'.', b'b', 3, 0, b'x', 0x7F, 2, b'o', b'k', 0]);
        m.extend_from_slice(&[0, 1, 0, 1]);
        let p = parse(&m);
        assert_eq!(p.parse_error, None);
        assert_eq!(p.qname.as_deref(), Some(r"a\.b.\000x\127.ok"));
    }

    #[test]
    fn names_as_sent_keep_case_and_escapes() {
        // One question, mixed case: the normal form in qname, the wire's case beside it
        // (`from_ascii`: hickory's `from_str` lower-cases).
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("WWW.Example.COM.").unwrap(),
            RecordType::AAAA,
        ));
        let p = parse(&bytes(&m));
        assert_eq!(p.qname.as_deref(), Some("www.example.com"));
        assert_eq!(p.qname_case.as_deref(), Some("WWW.Example.COM"));
        assert_eq!(p.questions_case, [(0, "WWW.Example.COM".to_owned())]);
        // One question: no list.
        assert_eq!(
            p.clone().take_case_columns(),
            (Some("WWW.Example.COM".to_owned()), None)
        );
        // All lower case: nothing kept.
        let p = parse(&bytes(&query(1, "www.example.com.", RecordType::A)));
        assert_eq!((&p.qname_case, p.questions_case.len()), (&None, 0));

        // Three questions: an escaped dot and NUL, a base64-like label, one all lower case.
        let mut m = header(6, 0x0100, [3, 0, 0, 0]);
        m.extend_from_slice(&[4, b'A', b'.', 0, b'Z', 2, b'o', b'K', 0, 0, 1, 0, 1]);
        m.extend_from_slice(&[
            6, b'H', b'4', b's', b'I', b'+', b'/', 1, b'T', 0, 0, 16, 0, 1,
        ]);
        m.extend_from_slice(&[3, b'l', b'o', b'w', 0, 0, 28, 0, 1]);
        let p = parse(&m);
        assert_eq!(p.parse_error, None);
        assert_eq!(p.qname.as_deref(), Some(r"a\.\000z.ok"));
        assert_eq!(p.qname_case.as_deref(), Some(r"A\.\000Z.oK"));
        let normal: Vec<&str> = p.questions.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(normal, [r"a\.\000z.ok", "h4si+/.t", "low"]);
        let (first, all) = p.clone().take_case_columns();
        assert_eq!(first.as_deref(), Some(r"A\.\000Z.oK"));
        let all = all.expect("several questions, some upper case");
        assert_eq!(all, [r"A\.\000Z.oK", "H4sI+/.T", "low"]);
        // The normal form is the lower-casing of the form as sent, question by question.
        for (q, sent) in p.questions.iter().zip(&all) {
            assert_eq!(q.name, sent.to_ascii_lowercase());
        }

        // A question hickory rejects (forward pointer) still keeps its case through the
        // fallback reader.
        let mut m = header(7, 0x0100, [1, 0, 0, 0]);
        m.extend_from_slice(&[0xC0, 18, 0, 1, 0, 1, 1, b'X', 1, b'y', 0]);
        let p = parse(&m);
        assert_eq!(p.qname.as_deref(), Some("x.y"));
        assert_eq!(p.qname_case.as_deref(), Some("X.y"));
        assert_eq!(p.questions_case, [(0, "X.y".to_owned())]);
    }

    #[test]
    fn root_name() {
        let p = parse(&bytes(&query(8, ".", RecordType::NS)));
        assert_eq!(p.qname.as_deref(), Some("."));
        assert_eq!(p.qtype_name.as_deref(), Some("NS"));
    }

    #[test]
    fn unknown_and_malformed_rdata() {
        let mut m = header(9, 0x8180, [1, 3, 0, 0]);
        m.extend_from_slice(&[1, b'x', 0, 0xFF, 0xFE, 0, 1]); // x. TYPE65534 IN
        // x. 5 IN TYPE65534 \# 3 0A0B0C
        m.extend_from_slice(&[
            0xC0, 12, 0xFF, 0xFE, 0, 1, 0, 0, 0, 5, 0, 3, 0x0A, 0x0B, 0x0C,
        ]);
        // x. 5 IN A with a 3-byte rdata: kept in generic form, noted as malformed.
        m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 3, 1, 2, 3]);
        // x. 5 IN RRSIG (46): no hickory decoder in this build -> generic.
        m.extend_from_slice(&[0xC0, 12, 0, 46, 0, 1, 0, 0, 0, 5, 0, 2, 0xAB, 0xCD]);
        let p = parse(&m);
        assert_eq!(p.qtype_name.as_deref(), Some("TYPE65534"));
        let data: Vec<(&str, &str)> = p
            .answers
            .iter()
            .map(|a| (a.rtype.as_str(), a.data.as_str()))
            .collect();
        assert_eq!(
            data,
            vec![
                ("TYPE65534", r"\# 3 0A0B0C"),
                ("A", r"\# 3 010203"),
                ("RRSIG", r"\# 2 ABCD"),
            ]
        );
        assert!(p.answer_ips.is_empty());
        let err = p.parse_error.unwrap();
        assert!(
            err.starts_with("malformed message: answer record 2 of 3 (A) rdata: "),
            "{err}"
        );
    }

    #[test]
    fn more_rdata_types() {
        let q = query(10, "example.com.", RecordType::SOA);
        let mut r = response_to(&q);
        r.add_answer(Record::from_rdata(
            name("example.com."),
            5,
            RData::SOA(hickory_proto::rr::rdata::SOA::new(
                name("ns1.example.com."),
                name("hostmaster.example.com."),
                2024010101,
                7200,
                3600,
                -1, // 0xFFFFFFFF on the wire
                60,
            )),
        ));
        r.add_answer(Record::from_rdata(
            name("_sip._udp.example.com."),
            5,
            RData::SRV(hickory_proto::rr::rdata::SRV::new(
                1,
                2,
                5060,
                name("sip.example.com."),
            )),
        ));
        r.add_answer(Record::from_rdata(
            name("example.com."),
            5,
            RData::HTTPS(hickory_proto::rr::rdata::HTTPS(SVCB::new(
                1,
                Name::root(),
                vec![
                    (
                        hickory_proto::rr::rdata::svcb::SvcParamKey::Alpn,
                        SvcParamValue::Alpn(hickory_proto::rr::rdata::svcb::Alpn(vec![
                            "h2".into(),
                            "h3".into(),
                        ])),
                    ),
                    (
                        hickory_proto::rr::rdata::svcb::SvcParamKey::Port,
                        SvcParamValue::Port(8443),
                    ),
                ],
            ))),
        ));
        let p = parse(&bytes(&r));
        assert_eq!(p.parse_error, None);
        let data: Vec<&str> = p.answers.iter().map(|a| a.data.as_str()).collect();
        assert_eq!(
            data,
            vec![
                "ns1.example.com hostmaster.example.com 2024010101 7200 3600 4294967295 60",
                "1 2 5060 sip.example.com",
                r#"1 . alpn="h2,h3" port=8443"#,
            ]
        );
    }

    #[test]
    fn opcode_and_flags_from_header() {
        // opcode 5 (UPDATE), AD and CD set, TC clear.
        let p = parse(&header(0x0102, 0x2830, [0, 0, 0, 0]));
        assert_eq!(p.parse_error, None);
        assert_eq!(p.opcode, Some(5));
        assert_eq!(p.tc, Some(false));
        assert_eq!(p.ad, Some(true));
        assert_eq!(p.cd, Some(true));
        assert_eq!(p.qname, None);
        assert!(p.has_header());
    }

    #[test]
    fn type_of_message_from_hickory_roundtrip() {
        // A message hickory itself marks as a response parses with qr set.
        let mut m = Message::new(77, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(name("a.example."), RecordType::MX));
        let p = parse(&bytes(&m));
        assert_eq!(p.qr, Some(true));
        assert_eq!(p.id, Some(77));
        assert_eq!(p.qtype_name.as_deref(), Some("MX"));
    }

    /// Mutated and cut-off messages must never panic, and always keep the header.
    #[test]
    fn never_panics_on_mutations() {
        let q = query(0x4242, "fuzz.example.com.", RecordType::A);
        let mut r = response_to(&q);
        r.add_answer(Record::from_rdata(
            name("fuzz.example.com."),
            60,
            RData::CNAME(CNAME(name("x.fuzz.example.com."))),
        ));
        r.add_answer(Record::from_rdata(
            name("x.fuzz.example.com."),
            60,
            RData::MX(MX::new(1, name("fuzz.example.com."))),
        ));
        let mut edns = Edns::new();
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                IpAddr::V6(Ipv6Addr::from_str("2001:db8::").unwrap()),
                56,
                0,
            )));
        r.set_edns(edns);
        let base = bytes(&r);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for cut in 0..=base.len() {
            let p = parse(&base[..cut]);
            assert_eq!(p.has_header(), cut >= HEADER_LEN);
        }
        for _ in 0..2000 {
            let len = (next() % 80) as usize;
            let mut m: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len > 12 {
                // Small counts so the body is actually walked.
                for i in [4, 6, 8, 10] {
                    m[i] = 0;
                    m[i + 1] = (next() % 4) as u8;
                }
            }
            let p = parse(&m);
            assert_eq!(p.has_header(), len >= HEADER_LEN);
        }
        for _ in 0..5000 {
            let mut m = base.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % m.len();
                m[at] = next() as u8;
            }
            let p = parse(&m);
            assert_eq!(p.id, Some(u16::from_be_bytes([m[0], m[1]])));
        }
    }
}
