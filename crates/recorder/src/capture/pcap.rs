//! Capture files (pcap and pcapng) as a packet source.
//!
//! [`PcapSource`] streams a file through a bounded buffer, strips the link-layer header and hands
//! each IPv4/IPv6 packet to a callback as a [`RawPacket`]. Framing comes from the `pcap-file`
//! crate (its slice parsers, so byte offsets are known exactly); the few packet-record fields
//! are read here, because `pcap-file` rejects records whose original length exceeds the snap
//! length (common in real captures) and reads pcapng timestamps as nanoseconds whatever the
//! interface's `if_tsresol` says. pcapng name-resolution and other non-packet blocks are
//! skipped without being parsed (pcap-file's block parser answers "need more bytes" for a
//! name-resolution block lacking its end marker, which a stream reader would take for a
//! truncated file).
//!
//! Supported link types: Ethernet (1, with 802.1Q/802.1ad/QinQ tags), Linux cooked SLL (113)
//! and SLL2 (276), raw IP (101, 12, 14, and IPv4/IPv6-only 228/229), BSD null (0) and OpenBSD
//! loopback (108). A truncated or corrupt file yields the packets before the damage, then an
//! error naming the file and the byte offset.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::PcapNgParser;
use pcap_file::{DataLink, Endianness};

use super::{Direction, RawPacket};

/// Largest record (pcap packet record or pcapng block) accepted; anything larger is taken as
/// corruption rather than buffered.
const MAX_RECORD_LEN: usize = 64 * 1024 * 1024;
const READ_CHUNK: usize = 1024 * 1024;
/// VLAN tags followed before giving up on a frame.
const MAX_VLAN_TAGS: usize = 8;

const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_PB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88A8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

/// Errors reading a capture file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("cannot open capture file `{path}`: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read capture file `{path}` at byte offset {offset}: {source}")]
    Read {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("`{path}` is not a pcap or pcapng capture file: {reason}")]
    NotACapture { path: PathBuf, reason: String },
    #[error(
        "capture file `{path}` uses link type {linktype} ({name}), which dnsledger cannot decode; \
         supported: Ethernet (1), Linux cooked SLL (113) and SLL2 (276), raw IP (101, 12, 14, \
         228, 229), BSD null/loopback (0, 108)"
    )]
    UnsupportedLinkType {
        path: PathBuf,
        linktype: u32,
        name: String,
    },
    #[error("capture file `{path}` is truncated at byte offset {offset}: {reason}")]
    Truncated {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("capture file `{path}` is corrupt at byte offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

/// Counters of a [`PcapSource`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcapStats {
    /// Packet records read.
    pub records: u64,
    /// IPv4/IPv6 packets handed to the callback.
    pub ip_packets: u64,
    /// Records whose link layer carries something other than IPv4/IPv6 (ARP, LLDP...).
    pub not_ip: u64,
    /// Records too short for their link-layer header.
    pub short_link: u64,
    /// Records the capture cut short (captured length below original length).
    pub cut_records: u64,
}

/// Link types this module decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Ethernet,
    Sll,
    Sll2,
    RawIp,
    Null,
}

impl Link {
    fn from_linktype(linktype: u32) -> Option<Link> {
        match linktype {
            1 => Some(Link::Ethernet),
            113 => Some(Link::Sll),
            276 => Some(Link::Sll2),
            101 | 12 | 14 | 228 | 229 => Some(Link::RawIp),
            0 | 108 => Some(Link::Null),
            _ => None,
        }
    }
}

/// One pcapng interface (from its Interface Description Block).
#[derive(Clone, Copy, Debug)]
struct Interface {
    /// `None`: a link type we cannot decode (an error once a packet uses it).
    link: Option<Link>,
    linktype: u32,
    /// Timestamp unit: `units_per_sec` ticks per second.
    tsresol: TsResol,
    /// Seconds added to every timestamp (`if_tsoffset`).
    tsoffset_s: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TsResol {
    /// 10^-n seconds.
    Decimal(u8),
    /// 2^-n seconds.
    Binary(u8),
}

impl TsResol {
    fn from_option(v: u8) -> TsResol {
        if v & 0x80 == 0 {
            TsResol::Decimal(v)
        } else {
            TsResol::Binary(v & 0x7f)
        }
    }

    /// Converts a tick count to nanoseconds (saturating).
    fn to_ns(self, ticks: u64) -> i64 {
        let ticks = u128::from(ticks);
        let ns: u128 = match self {
            TsResol::Decimal(n) if n <= 9 => ticks * 10u128.pow(u32::from(9 - n)),
            TsResol::Decimal(n) => ticks / 10u128.pow(u32::from(n.min(38) - 9).min(29)),
            TsResol::Binary(n) if n < 64 => (ticks * 1_000_000_000) >> n,
            TsResol::Binary(_) => 0,
        };
        i64::try_from(ns).unwrap_or(i64::MAX)
    }
}

enum Format {
    Pcap {
        parser: PcapParser,
        link: Link,
        nanos: bool,
        big_endian: bool,
    },
    PcapNg {
        parser: PcapNgParser,
        interfaces: Vec<Interface>,
        /// Time of the previous packet, for Simple Packet Blocks (which carry none).
        last_ts_ns: i64,
    },
}

/// A pcap or pcapng file, read as a stream of IP packets.
pub struct PcapSource {
    input: Input,
    format: Format,
    stats: PcapStats,
}

impl PcapSource {
    /// Opens a capture file and reads its header.
    pub fn open(path: &Path) -> Result<Self, PcapError> {
        let file = File::open(path).map_err(|source| PcapError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let mut input = Input {
            path: path.to_path_buf(),
            file,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
        };
        while input.end - input.start < 24 && !input.eof {
            input.fill()?;
        }
        let head = input.unread();
        let magic = read_u32(head, 0, true);
        let format = match magic {
            Some(PCAPNG_SHB) => {
                let parser = input.read_ng_header()?;
                Format::PcapNg {
                    parser,
                    interfaces: Vec::new(),
                    last_ts_ns: 0,
                }
            }
            Some(0xA1B2_C3D4 | 0xD4C3_B2A1 | 0xA1B2_3C4D | 0x4D3C_B2A1) => {
                let (rest, parser) = PcapParser::new(head).map_err(|e| match e {
                    pcap_file::PcapError::IncompleteBuffer => PcapError::Truncated {
                        path: path.to_path_buf(),
                        offset: 0,
                        reason: "file ends inside the 24-byte pcap header".into(),
                    },
                    e => PcapError::NotACapture {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    },
                })?;
                let consumed = head.len() - rest.len();
                let header = parser.header();
                let linktype = u32::from(header.datalink);
                let Some(link) = Link::from_linktype(linktype) else {
                    return Err(PcapError::UnsupportedLinkType {
                        path: path.to_path_buf(),
                        linktype,
                        name: format!("{:?}", header.datalink),
                    });
                };
                input.consume(consumed);
                Format::Pcap {
                    parser,
                    link,
                    nanos: header.ts_resolution == pcap_file::TsResolution::NanoSecond,
                    big_endian: header.endianness == Endianness::Big,
                }
            }
            Some(m) => {
                return Err(PcapError::NotACapture {
                    path: path.to_path_buf(),
                    reason: format!("unknown magic number {m:#010x}"),
                });
            }
            None => {
                return Err(PcapError::NotACapture {
                    path: path.to_path_buf(),
                    reason: format!("file is only {} bytes long", head.len()),
                });
            }
        };
        Ok(PcapSource {
            input,
            format,
            stats: PcapStats::default(),
        })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.input.path
    }

    /// Counters so far (also valid after `for_each` returned an error).
    pub fn stats(&self) -> PcapStats {
        self.stats
    }

    /// Calls `f` for each packet as a [`RawPacket`] (direction `Unknown`, no owner, socket
    /// cookie 0, `wire_len` = original length minus the link header, `data` = L3 bytes,
    /// timestamps in ns since the epoch). Packets that are not IPv4/IPv6 are counted and
    /// skipped. On a truncated or corrupt file, the packets before the damage are delivered,
    /// then the error names the file and the offset. Calling it again continues where it
    /// stopped (returning the same error for a damaged file).
    pub fn for_each(&mut self, mut f: impl FnMut(&RawPacket<'_>)) -> Result<PcapStats, PcapError> {
        loop {
            let buf = self.input.unread();
            let step = match &mut self.format {
                Format::Pcap {
                    parser,
                    link,
                    nanos,
                    big_endian,
                } => next_pcap_record(
                    buf,
                    parser,
                    *link,
                    *nanos,
                    *big_endian,
                    &mut self.stats,
                    &mut f,
                ),
                Format::PcapNg {
                    parser,
                    interfaces,
                    last_ts_ns,
                } => {
                    next_pcapng_block(buf, parser, interfaces, last_ts_ns, &mut self.stats, &mut f)
                }
            };
            match step {
                Step::Consumed(n) => self.input.consume(n),
                Step::NeedMore => {
                    let unread = self.input.end - self.input.start;
                    if self.input.eof {
                        if unread == 0 {
                            return Ok(self.stats);
                        }
                        return Err(PcapError::Truncated {
                            path: self.input.path.clone(),
                            offset: self.input.offset,
                            reason: format!(
                                "file ends inside a record ({unread} bytes of it present)"
                            ),
                        });
                    }
                    if unread >= MAX_RECORD_LEN {
                        return Err(self
                            .input
                            .corrupt(format!("record longer than {MAX_RECORD_LEN} bytes")));
                    }
                    self.input.fill()?;
                }
                Step::Failed(reason) => return Err(self.input.corrupt(reason)),
                Step::Unsupported { linktype, name } => {
                    return Err(PcapError::UnsupportedLinkType {
                        path: self.input.path.clone(),
                        linktype,
                        name,
                    });
                }
            }
        }
    }
}

/// The file and a window of its unread bytes.
struct Input {
    path: PathBuf,
    file: File,
    /// `buf[start..end]` holds unread bytes; `buf[start]` is at file offset `offset`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    offset: u64,
    eof: bool,
}

impl Input {
    fn unread(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or(&[])
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.start += n;
        self.offset += n as u64;
    }

    fn corrupt(&self, reason: String) -> PcapError {
        PcapError::Corrupt {
            path: self.path.clone(),
            offset: self.offset,
            reason,
        }
    }

    /// Reads more of the file behind the unread bytes, growing the buffer when the unread
    /// bytes fill it (a record larger than the buffer).
    fn fill(&mut self) -> Result<(), PcapError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).min(MAX_RECORD_LEN + READ_CHUNK);
            self.buf.resize(grown, 0);
        }
        loop {
            let target = self.buf.get_mut(self.end..).unwrap_or(&mut []);
            if target.is_empty() {
                // Unreachable with the record limit checked by callers; never report EOF for it.
                return Err(self.corrupt(format!("record longer than {MAX_RECORD_LEN} bytes")));
            }
            match self.file.read(target) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(PcapError::Read {
                        path: self.path.clone(),
                        offset: self.offset + (self.end - self.start) as u64,
                        source,
                    });
                }
            }
        }
    }

    /// Parses the pcapng Section Header Block at the start of the file.
    fn read_ng_header(&mut self) -> Result<PcapNgParser, PcapError> {
        loop {
            let head = self.unread();
            match PcapNgParser::new(head) {
                Ok((rest, parser)) => {
                    let consumed = head.len() - rest.len();
                    self.consume(consumed);
                    return Ok(parser);
                }
                Err(pcap_file::PcapError::IncompleteBuffer) if !self.eof => {
                    if self.end - self.start >= MAX_RECORD_LEN {
                        return Err(self.corrupt("section header block too long".into()));
                    }
                    self.fill()?;
                }
                Err(pcap_file::PcapError::IncompleteBuffer) => {
                    return Err(PcapError::Truncated {
                        path: self.path.clone(),
                        offset: 0,
                        reason: "file ends inside the pcapng section header block".into(),
                    });
                }
                Err(e) => {
                    return Err(PcapError::NotACapture {
                        path: self.path.clone(),
                        reason: format!("bad pcapng section header block: {e}"),
                    });
                }
            }
        }
    }
}

/// Outcome of parsing one record from the buffered bytes.
enum Step {
    /// A record of this many bytes was handled.
    Consumed(usize),
    /// The buffer ends inside the next record.
    NeedMore,
    Failed(String),
    Unsupported {
        linktype: u32,
        name: String,
    },
}

fn read_u32(b: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(s)
    } else {
        u32::from_le_bytes(s)
    })
}

fn read_u16(b: &[u8], at: usize, big_endian: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if big_endian {
        u16::from_be_bytes(s)
    } else {
        u16::from_le_bytes(s)
    })
}

fn next_pcap_record(
    buf: &[u8],
    parser: &PcapParser,
    link: Link,
    nanos: bool,
    big_endian: bool,
    stats: &mut PcapStats,
    f: &mut impl FnMut(&RawPacket<'_>),
) -> Step {
    // Reject absurd lengths before waiting for that many bytes.
    if let Some(incl) = read_u32(buf, 8, big_endian)
        && usize::try_from(incl).map_or(true, |n| n > MAX_RECORD_LEN)
    {
        return Step::Failed(format!(
            "packet record claims {incl} captured bytes (limit {MAX_RECORD_LEN})"
        ));
    }
    match parser.next_raw_packet(buf) {
        Ok((rest, rec)) => {
            let consumed = buf.len() - rest.len();
            let frac_ns = if nanos {
                i64::from(rec.ts_frac)
            } else {
                i64::from(rec.ts_frac) * 1000
            };
            let ts_ns = i64::from(rec.ts_sec)
                .saturating_mul(1_000_000_000)
                .saturating_add(frac_ns);
            deliver(link, &rec.data, rec.orig_len, ts_ns, stats, f);
            Step::Consumed(consumed)
        }
        Err(pcap_file::PcapError::IncompleteBuffer) => Step::NeedMore,
        Err(e) => Step::Failed(e.to_string()),
    }
}

fn next_pcapng_block(
    buf: &[u8],
    parser: &mut PcapNgParser,
    interfaces: &mut Vec<Interface>,
    last_ts_ns: &mut i64,
    stats: &mut PcapStats,
    f: &mut impl FnMut(&RawPacket<'_>),
) -> Step {
    let big_endian = parser.section().endianness == Endianness::Big;
    // Reject absurd lengths before waiting for that many bytes. (A Section Header Block has its
    // own byte order; its length is checked by the parser once buffered.)
    let block_type = read_u32(buf, 0, big_endian);
    if block_type != Some(PCAPNG_SHB)
        && let Some(len) = read_u32(buf, 4, big_endian)
        && usize::try_from(len).map_or(true, |n| n > MAX_RECORD_LEN)
    {
        return Step::Failed(format!("block claims {len} bytes (limit {MAX_RECORD_LEN})"));
    }
    let (rest, raw) = match parser.next_raw_block(buf) {
        Ok(v) => v,
        Err(pcap_file::PcapError::IncompleteBuffer) => return Step::NeedMore,
        Err(e) => return Step::Failed(e.to_string()),
    };
    let consumed = buf.len() - rest.len();
    let big_endian = parser.section().endianness == Endianness::Big;
    let body: &[u8] = &raw.body;
    match raw.type_ {
        PCAPNG_SHB => interfaces.clear(),
        PCAPNG_IDB => {
            // The parser validated and stored the block; read its options from there.
            if let Some(idb) = parser.interfaces().last() {
                interfaces.push(interface_from_idb(idb));
            }
        }
        PCAPNG_EPB | PCAPNG_PB => {
            // EPB: interface u32, ts high, ts low, captured, original, data.
            // PB:  interface u16, drops u16, ts high, ts low, captured, original, data.
            let iface_id = if raw.type_ == PCAPNG_EPB {
                read_u32(body, 0, big_endian)
            } else {
                read_u16(body, 0, big_endian).map(u32::from)
            };
            let fields = (
                iface_id,
                read_u32(body, 4, big_endian),
                read_u32(body, 8, big_endian),
                read_u32(body, 12, big_endian),
                read_u32(body, 16, big_endian),
            );
            let (Some(iface_id), Some(ts_hi), Some(ts_lo), Some(captured), Some(orig_len)) = fields
            else {
                return Step::Failed("packet block shorter than its fixed fields".into());
            };
            let Some(data) = usize::try_from(captured)
                .ok()
                .and_then(|n| body.get(20..20usize.checked_add(n)?))
            else {
                return Step::Failed(format!(
                    "packet block claims {captured} captured bytes but holds {}",
                    body.len().saturating_sub(20)
                ));
            };
            let Some(iface) = usize::try_from(iface_id)
                .ok()
                .and_then(|i| interfaces.get(i))
            else {
                return Step::Failed(format!(
                    "packet block refers to interface {iface_id}, but only {} are described",
                    interfaces.len()
                ));
            };
            let Some(link) = iface.link else {
                return Step::Unsupported {
                    linktype: iface.linktype,
                    name: format!("{:?}", DataLink::from(iface.linktype)),
                };
            };
            let ticks = (u64::from(ts_hi) << 32) | u64::from(ts_lo);
            let ts_ns = iface
                .tsresol
                .to_ns(ticks)
                .saturating_add(iface.tsoffset_s.saturating_mul(1_000_000_000));
            *last_ts_ns = ts_ns;
            deliver(link, data, orig_len, ts_ns, stats, f);
        }
        PCAPNG_SPB => {
            // Original length, then data (captured length = min(original, snaplen), padded).
            let Some(orig_len) = read_u32(body, 0, big_endian) else {
                return Step::Failed("simple packet block shorter than its fixed fields".into());
            };
            let Some(iface) = interfaces.first() else {
                return Step::Failed("simple packet block before any interface description".into());
            };
            let Some(link) = iface.link else {
                return Step::Unsupported {
                    linktype: iface.linktype,
                    name: format!("{:?}", DataLink::from(iface.linktype)),
                };
            };
            let avail = body.get(4..).unwrap_or(&[]);
            let n = usize::try_from(orig_len).map_or(avail.len(), |n| n.min(avail.len()));
            let data = avail.get(..n).unwrap_or(&[]);
            deliver(link, data, orig_len, *last_ts_ns, stats, f);
        }
        // Name resolution, statistics, journal, custom and unknown blocks.
        _ => {}
    }
    Step::Consumed(consumed)
}

fn interface_from_idb(
    idb: &pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock<'_>,
) -> Interface {
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption as Opt;
    let linktype = u32::from(idb.linktype);
    let mut iface = Interface {
        link: Link::from_linktype(linktype),
        linktype,
        tsresol: TsResol::Decimal(6),
        tsoffset_s: 0,
    };
    for opt in &idb.options {
        match opt {
            Opt::IfTsResol(v) => iface.tsresol = TsResol::from_option(*v),
            // The option is a signed 64-bit number stored in a u64.
            Opt::IfTsOffset(v) => iface.tsoffset_s = *v as i64,
            _ => {}
        }
    }
    iface
}

/// Strips the link header and calls `f` with the L3 packet, or counts why not.
fn deliver(
    link: Link,
    frame: &[u8],
    orig_len: u32,
    ts_ns: i64,
    stats: &mut PcapStats,
    f: &mut impl FnMut(&RawPacket<'_>),
) {
    stats.records += 1;
    let frame_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    if frame_len < orig_len {
        stats.cut_records += 1;
    }
    let l3_offset = match l3_offset(link, frame) {
        L3::At(off) => off,
        L3::NotIp => {
            stats.not_ip += 1;
            return;
        }
        L3::Short => {
            stats.short_link += 1;
            return;
        }
    };
    let Some(data) = frame.get(l3_offset..) else {
        stats.short_link += 1;
        return;
    };
    // orig_len may be below the captured length in a damaged record: never let wire_len
    // claim fewer bytes than `data` holds.
    let hdr = u32::try_from(l3_offset).unwrap_or(u32::MAX);
    let wire_len = orig_len
        .saturating_sub(hdr)
        .max(u32::try_from(data.len()).unwrap_or(u32::MAX));
    stats.ip_packets += 1;
    f(&RawPacket {
        ts_ns,
        direction: Direction::Unknown,
        side: super::Side::Unknown,
        owner: None,
        sock_cookie: 0,
        wire_len,
        data,
    });
}

enum L3 {
    At(usize),
    NotIp,
    Short,
}

fn ethertype_at(frame: &[u8], at: usize) -> Option<u16> {
    read_u16(frame, at, true)
}

/// Follows VLAN tags from an ethertype at `type_at` whose payload starts at `payload_at`.
fn follow_ethertype(frame: &[u8], mut type_at: usize, mut payload_at: usize) -> L3 {
    for _ in 0..=MAX_VLAN_TAGS {
        let Some(ethertype) = ethertype_at(frame, type_at) else {
            return L3::Short;
        };
        match ethertype {
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => return L3::At(payload_at),
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => {
                // Tag: 2 bytes TCI, then the inner ethertype.
                type_at = payload_at + 2;
                payload_at += 4;
            }
            _ => return L3::NotIp,
        }
    }
    L3::NotIp
}

fn l3_offset(link: Link, frame: &[u8]) -> L3 {
    match link {
        // dst MAC, src MAC, ethertype.
        Link::Ethernet => follow_ethertype(frame, 12, 14),
        // Packet type, ARPHRD type, address length, 8 address bytes, protocol.
        Link::Sll => follow_ethertype(frame, 14, 16),
        // Protocol, reserved, interface index, ARPHRD type, packet type, address length,
        // 8 address bytes.
        Link::Sll2 => {
            if frame.len() < 20 {
                return L3::Short;
            }
            match ethertype_at(frame, 0) {
                Some(ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD) => {
                    follow_ethertype(frame, 22, 24)
                }
                Some(ETHERTYPE_IPV4 | ETHERTYPE_IPV6) => L3::At(20),
                Some(_) => L3::NotIp,
                None => L3::Short,
            }
        }
        Link::RawIp => match frame.first().map(|b| b >> 4) {
            Some(4 | 6) => L3::At(0),
            Some(_) => L3::NotIp,
            None => L3::Short,
        },
        // A 4-byte address family in the capturing host's byte order (null) or network order
        // (loop): AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24 (NetBSD, OpenBSD),
        // 28 (FreeBSD), 30 (macOS).
        Link::Null => {
            let (Some(le), Some(be)) = (read_u32(frame, 0, false), read_u32(frame, 0, true)) else {
                return L3::Short;
            };
            if [le, be]
                .iter()
                .any(|af| matches!(af, 2 | 10 | 24 | 28 | 30))
            {
                L3::At(4)
            } else {
                L3::NotIp
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn testdata(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/pcap")
            .join(name)
    }

    /// A minimal IPv4/UDP packet to port 53.
    fn ip_packet() -> Vec<u8> {
        let payload = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01";
        let udp_len = (8 + payload.len()) as u16;
        let total = 20 + udp_len;
        let mut p = vec![0x45, 0];
        p.extend(total.to_be_bytes());
        p.extend([0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 53]);
        p.extend(40000u16.to_be_bytes());
        p.extend(53u16.to_be_bytes());
        p.extend(udp_len.to_be_bytes());
        p.extend([0, 0]);
        p.extend(payload);
        p
    }

    struct Rec<'a> {
        ts_sec: u32,
        frac: u32,
        data: &'a [u8],
        orig_len: u32,
    }

    fn rec(data: &[u8]) -> Rec<'_> {
        Rec {
            ts_sec: 1_700_000_000,
            frac: 123_456,
            data,
            orig_len: data.len() as u32,
        }
    }

    fn pcap_bytes(linktype: u32, nanos: bool, big_endian: bool, recs: &[Rec<'_>]) -> Vec<u8> {
        let u32b = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u16b = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let magic = if nanos { 0xA1B2_3C4D } else { 0xA1B2_C3D4 };
        let mut f = Vec::new();
        f.extend(u32b(magic));
        f.extend(u16b(2));
        f.extend(u16b(4));
        f.extend(u32b(0));
        f.extend(u32b(0));
        f.extend(u32b(65535));
        f.extend(u32b(linktype));
        for r in recs {
            f.extend(u32b(r.ts_sec));
            f.extend(u32b(r.frac));
            f.extend(u32b(r.data.len() as u32));
            f.extend(u32b(r.orig_len));
            f.extend(r.data);
        }
        f
    }

    fn write_temp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        let mut file = File::create(&path).expect("create temp file");
        file.write_all(bytes).expect("write temp file");
        path
    }

    /// (ts_ns, wire_len, data) of each packet read.
    type Packets = Vec<(i64, u32, Vec<u8>)>;

    /// Reads every packet.
    fn read_all(path: &Path) -> (Packets, Result<PcapStats, PcapError>) {
        let mut src = PcapSource::open(path).expect("open");
        let mut pkts = Vec::new();
        let res = src.for_each(|p| {
            assert_eq!(p.direction, Direction::Unknown);
            assert_eq!((p.owner, p.sock_cookie), (None, 0));
            assert!(p.data.len() <= p.wire_len as usize);
            pkts.push((p.ts_ns, p.wire_len, p.data.to_vec()));
        });
        (pkts, res)
    }

    #[test]
    fn every_supported_link_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ip = ip_packet();
        let eth = |ethertype: &[u8]| {
            let mut f = vec![0u8; 12];
            f.extend(ethertype);
            f
        };
        let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0];
        sll.extend([0x08, 0x00]);
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 4, 6];
        sll2.extend([0u8; 8]);
        let cases: Vec<(u32, Vec<u8>)> = vec![
            (1, eth(&[0x08, 0x00])),
            // 802.1ad outer tag, 802.1Q inner tag.
            (
                1,
                eth(&[0x88, 0xA8, 0x00, 0x0A, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00]),
            ),
            (113, sll),
            (276, sll2),
            (101, vec![]),
            (12, vec![]),
            (14, vec![]),
            (228, vec![]),
            // BSD null, AF_INET in little-endian host order; OpenBSD loop, AF_INET6 (24) in
            // network order (the packet inside is IPv4; the decoder goes by the IP version).
            (0, vec![2, 0, 0, 0]),
            (108, vec![0, 0, 0, 24]),
        ];
        for (i, (linktype, header)) in cases.iter().enumerate() {
            let mut frame = header.clone();
            frame.extend(&ip);
            let path = write_temp(
                &dir,
                &format!("link{i}.pcap"),
                &pcap_bytes(*linktype, false, false, &[rec(&frame)]),
            );
            let (pkts, res) = read_all(&path);
            let stats = res.expect("read");
            assert_eq!(pkts.len(), 1, "link type {linktype}");
            assert_eq!(pkts[0].2, ip, "link type {linktype}");
            assert_eq!(pkts[0].1, ip.len() as u32, "link type {linktype}");
            assert_eq!(pkts[0].0, 1_700_000_000_123_456_000);
            assert_eq!((stats.records, stats.ip_packets), (1, 1));
        }
    }

    #[test]
    fn non_ip_and_short_frames_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut arp = vec![0u8; 12];
        arp.extend([0x08, 0x06]);
        arp.extend([0u8; 28]);
        let short = [0u8; 9];
        let ip = ip_packet();
        let mut cut = vec![0u8; 12];
        cut.extend([0x08, 0x00]);
        cut.extend(&ip[..30]);
        let recs = [
            rec(&arp),
            rec(&short),
            Rec {
                orig_len: (14 + ip.len()) as u32,
                ..rec(&cut)
            },
        ];
        let path = write_temp(&dir, "mixed.pcap", &pcap_bytes(1, false, false, &recs));
        let (pkts, res) = read_all(&path);
        let stats = res.expect("read");
        assert_eq!(
            stats,
            PcapStats {
                records: 3,
                ip_packets: 1,
                not_ip: 1,
                short_link: 1,
                cut_records: 1,
            }
        );
        // The cut packet: 30 bytes captured of the original L3 length.
        assert_eq!(pkts[0].1, ip.len() as u32);
        assert_eq!(pkts[0].2.len(), 30);
    }

    #[test]
    fn timestamps_and_byte_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut frame = vec![0u8; 12];
        frame.extend([0x08, 0x00]);
        frame.extend(ip_packet());
        let r = Rec {
            ts_sec: 1_600_000_000,
            frac: 999_999_999,
            ..rec(&frame)
        };
        let path = write_temp(&dir, "nanos-be.pcap", &pcap_bytes(1, true, true, &[r]));
        let (pkts, res) = read_all(&path);
        res.expect("read");
        assert_eq!(pkts[0].0, 1_600_000_000_999_999_999);
    }

    #[test]
    fn unsupported_link_type_names_type_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_temp(&dir, "usb.pcap", &pcap_bytes(189, false, false, &[]));
        let err = PcapSource::open(&path).err().expect("unsupported");
        assert!(matches!(
            err,
            PcapError::UnsupportedLinkType { linktype: 189, .. }
        ));
        let msg = err.to_string();
        assert!(
            msg.contains("link type 189") && msg.contains("usb.pcap"),
            "{msg}"
        );
    }

    #[test]
    fn not_a_capture_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_temp(
            &dir,
            "notes.txt",
            b"hello, this is not a capture file at all",
        );
        let err = PcapSource::open(&path).err().expect("not a capture");
        assert!(matches!(err, PcapError::NotACapture { .. }));
        assert!(err.to_string().contains("notes.txt"));
        let empty = write_temp(&dir, "empty.pcap", b"");
        assert!(matches!(
            PcapSource::open(&empty),
            Err(PcapError::NotACapture { .. })
        ));
        let missing = dir.path().join("missing.pcap");
        let err = PcapSource::open(&missing).err().expect("missing");
        assert!(matches!(err, PcapError::Open { .. }));
        assert!(err.to_string().contains("missing.pcap"));
    }

    /// Record boundaries of a classic pcap file, read independently of the code under test.
    fn record_offsets(bytes: &[u8]) -> Vec<usize> {
        let mut offsets = Vec::new();
        let mut at = 24;
        while at + 16 <= bytes.len() {
            offsets.push(at);
            let incl = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
            at += 16 + incl as usize;
        }
        offsets
    }

    #[test]
    fn truncated_file_delivers_what_is_there_then_names_the_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let full = std::fs::read(testdata("dns.pcap")).expect("read dns.pcap");
        let offsets = record_offsets(&full);
        assert_eq!(offsets.len(), 133);
        // Cut 10 bytes into record 100.
        let cut = offsets[100] + 10;
        let path = write_temp(&dir, "cut.pcap", &full[..cut]);
        let mut src = PcapSource::open(&path).expect("open");
        let mut n = 0;
        let err = src.for_each(|_| n += 1).expect_err("truncated");
        match &err {
            PcapError::Truncated {
                offset, path: p, ..
            } => {
                assert_eq!(*offset, offsets[100] as u64);
                assert_eq!(p, &path);
            }
            other => panic!("unexpected error: {other}"),
        }
        assert!(err.to_string().contains("cut.pcap"));
        assert!(
            err.to_string()
                .contains(&format!("byte offset {}", offsets[100]))
        );
        assert_eq!(src.stats().records, 100);
        // dns.pcap's first 100 records include some non-IP frames; all IP ones were delivered.
        assert_eq!(n as u64, src.stats().ip_packets);
        // Cut inside a record header too.
        let path = write_temp(&dir, "cut2.pcap", &full[..offsets[5] + 3]);
        let (pkts, res) = read_all(&path);
        assert!(
            matches!(res, Err(PcapError::Truncated { offset, .. }) if offset == offsets[5] as u64)
        );
        assert_eq!(pkts.len(), 5);
    }

    #[test]
    fn corrupt_record_length_is_an_error_not_an_allocation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ip = ip_packet();
        let mut bytes = pcap_bytes(101, false, false, &[rec(&ip), rec(&ip)]);
        let second = 24 + 16 + ip.len();
        bytes[second + 8..second + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        let path = write_temp(&dir, "corrupt.pcap", &bytes);
        let (pkts, res) = read_all(&path);
        assert_eq!(pkts.len(), 1);
        match res {
            Err(PcapError::Corrupt { offset, .. }) => assert_eq!(offset, second as u64),
            other => panic!("unexpected: {other:?}"),
        }
    }

    #[test]
    fn record_larger_than_the_read_buffer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut big = ip_packet();
        big.resize(READ_CHUNK + READ_CHUNK / 2, 0xab);
        let ip = ip_packet();
        let path = write_temp(
            &dir,
            "big.pcap",
            &pcap_bytes(101, false, false, &[rec(&ip), rec(&big), rec(&ip)]),
        );
        let (pkts, res) = read_all(&path);
        res.expect("read");
        assert_eq!(
            pkts.iter().map(|p| p.2.len()).collect::<Vec<_>>(),
            [ip.len(), big.len(), ip.len()]
        );
    }

    // pcapng

    fn block(ty: u32, body: &[u8]) -> Vec<u8> {
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = (12 + body.len()) as u32;
        let mut b = Vec::new();
        b.extend(ty.to_le_bytes());
        b.extend(len.to_le_bytes());
        b.extend(body);
        b.extend(len.to_le_bytes());
        b
    }

    fn shb() -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(0x1A2B_3C4Du32.to_le_bytes());
        body.extend(1u16.to_le_bytes());
        body.extend(0u16.to_le_bytes());
        body.extend((-1i64).to_le_bytes());
        block(PCAPNG_SHB, &body)
    }

    fn idb(linktype: u16, tsresol: Option<u8>, tsoffset: Option<i64>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(linktype.to_le_bytes());
        body.extend(0u16.to_le_bytes());
        body.extend(0u32.to_le_bytes());
        if let Some(r) = tsresol {
            body.extend(9u16.to_le_bytes());
            body.extend(1u16.to_le_bytes());
            body.extend([r, 0, 0, 0]);
        }
        if let Some(o) = tsoffset {
            body.extend(14u16.to_le_bytes());
            body.extend(8u16.to_le_bytes());
            body.extend(o.to_le_bytes());
        }
        body.extend([0, 0, 0, 0]);
        block(PCAPNG_IDB, &body)
    }

    fn epb(iface: u32, ticks: u64, data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(iface.to_le_bytes());
        body.extend(((ticks >> 32) as u32).to_le_bytes());
        body.extend((ticks as u32).to_le_bytes());
        body.extend((data.len() as u32).to_le_bytes());
        body.extend((data.len() as u32).to_le_bytes());
        body.extend(data);
        block(PCAPNG_EPB, &body)
    }

    fn spb(data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend((data.len() as u32).to_le_bytes());
        body.extend(data);
        block(PCAPNG_SPB, &body)
    }

    #[test]
    fn pcapng_interfaces_resolutions_and_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ip = ip_packet();
        let mut eth = vec![0u8; 12];
        eth.extend([0x08, 0x00]);
        eth.extend(&ip);
        let mut f = shb();
        f.extend(idb(1, None, None)); // microseconds
        f.extend(idb(101, Some(9), None)); // nanoseconds
        f.extend(idb(101, Some(0x80 | 10), Some(100))); // 2^-10 s, +100 s
        f.extend(epb(0, 1_700_000_000_123_456, &eth));
        // A name resolution block without its end-of-records marker, for which pcap-file's
        // block parser reports "need more bytes" (a false truncation): skipped, not parsed.
        f.extend(block(4, &[3, 0, 4, 0, 1, 2, 3, 4]));
        f.extend(epb(1, 1_700_000_000_123_456_789, &ip));
        f.extend(epb(2, 1024 * 5 + 512, &ip));
        // A Simple Packet Block (interface 0, no timestamp: the previous packet's is used).
        f.extend(spb(&eth));
        // A new section with a single raw-IP interface.
        f.extend(shb());
        f.extend(idb(101, Some(9), None));
        f.extend(epb(0, 42, &ip));
        let path = write_temp(&dir, "mixed.pcapng", &f);
        let (pkts, res) = read_all(&path);
        let stats = res.expect("read");
        assert_eq!(stats.ip_packets, 5);
        let ts: Vec<i64> = pkts.iter().map(|p| p.0).collect();
        assert_eq!(
            ts,
            [
                1_700_000_000_123_456_000,
                1_700_000_000_123_456_789,
                105_500_000_000,
                105_500_000_000,
                42
            ]
        );
        assert!(pkts.iter().all(|p| p.2 == ip));
    }

    #[test]
    fn pcapng_unsupported_interface_is_an_error_when_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ip = ip_packet();
        let mut f = shb();
        f.extend(idb(101, None, None));
        f.extend(idb(147, None, None));
        f.extend(epb(0, 1, &ip));
        f.extend(epb(1, 2, &ip));
        let path = write_temp(&dir, "user0.pcapng", &f);
        let (pkts, res) = read_all(&path);
        assert_eq!(pkts.len(), 1);
        let err = res.expect_err("unsupported");
        assert!(matches!(
            err,
            PcapError::UnsupportedLinkType { linktype: 147, .. }
        ));
        assert!(err.to_string().contains("user0.pcapng"));
        // A packet on an interface that was never described.
        let mut f = shb();
        f.extend(epb(0, 1, &ip));
        let path = write_temp(&dir, "noidb.pcapng", &f);
        assert!(matches!(
            read_all(&path).1,
            Err(PcapError::Corrupt { offset: 28, .. })
        ));
    }

    #[test]
    fn pcapng_truncated_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ip = ip_packet();
        let mut f = shb();
        f.extend(idb(101, None, None));
        f.extend(epb(0, 1, &ip));
        let at = f.len();
        f.extend(epb(0, 2, &ip));
        f.truncate(f.len() - 6);
        let path = write_temp(&dir, "cut.pcapng", &f);
        let (pkts, res) = read_all(&path);
        assert_eq!(pkts.len(), 1);
        assert!(matches!(res, Err(PcapError::Truncated { offset, .. }) if offset == at as u64));
    }

    #[test]
    fn real_captures() {
        let mut src = PcapSource::open(&testdata("dns.pcap")).expect("open");
        let stats = src.for_each(|_| {}).expect("read");
        // SOURCES.md: 133 packets, of which 10 non-IP frames.
        assert_eq!(
            (stats.records, stats.ip_packets, stats.not_ip),
            (133, 123, 10)
        );
        // Reading again continues at the end: nothing more.
        assert_eq!(
            src.for_each(|_| panic!("no more packets")).expect("read"),
            stats
        );

        // Captured with a 200-byte snap length: 238-byte frame, IP total length 224.
        let (pkts, res) = read_all(&testdata("truncated_dns.pcap"));
        assert_eq!(res.expect("read").cut_records, 1);
        assert_eq!((pkts[0].1, pkts[0].2.len()), (224, 186));

        // Raw-IP link type (101).
        let (pkts, res) = read_all(&testdata("ech.pcap"));
        res.expect("read");
        assert_eq!(pkts.len(), 4);
        assert!(pkts.iter().all(|p| p.2[0] >> 4 == 6));
    }
}
