//! libc-level lookups: the row of a lookup, its link to the wire transactions it caused, and
//! which mapped libraries are C libraries to probe.
//!
//! The kernel (uprobes of `bpf/lookups.bpf.c` on getaddrinfo, gethostbyname, gethostbyname2
//! and getnameinfo) reports, per thread, the entry of an outermost lookup (a start event) and
//! its return ([`LookupInfo`]); calls nested in one (glibc's own, or a callback's) are not
//! reported, so one call of the program is one row. [`lookup_row`] makes it a row of the same
//! segments as DNS transactions: status `lookup`, transport `libc`, the name in `qname`, the
//! result addresses in `answer_ips`, the call's duration in `latency_ns`, the process columns
//! as for DNS rows, and the `lookup_*` columns.
//!
//! The link ([`Linker`]): a lookup's start event, the DNS packets the thread then sends and the
//! lookup's return reach user space in that order (one ring buffer; a thread's records are
//! reserved in program order). A DNS row whose query was sent by a thread between its lookup's
//! entry and return gets that lookup's `lookup_id`; a lookup during which its thread sent no
//! DNS query is `lookup_local` (answered from /etc/hosts, nscd, systemd-resolved over varlink,
//! a cache, or a numeric address). The pairer emits a DNS row when the response comes (before
//! the lookup returns) or, unanswered, after the pair timeout (after it returned): the linker
//! keeps finished lookups for [`LINK_KEEP_NS`] so both find theirs.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dnsledger_schema::{Transaction, dnstext, lookup_fn, status, transport};

use crate::capture::KernelOwner;
use crate::dns::ip_text;
use crate::pair::ProcessAttrs;

/// Which libc function a lookup was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LookupFn {
    GetAddrInfo,
    GetHostByName,
    GetHostByName2,
    GetNameInfo,
}

impl LookupFn {
    /// The `lookup_fn` value of its row (also the symbol probed).
    pub fn as_str(self) -> &'static str {
        match self {
            LookupFn::GetAddrInfo => lookup_fn::GETADDRINFO,
            LookupFn::GetHostByName => lookup_fn::GETHOSTBYNAME,
            LookupFn::GetHostByName2 => lookup_fn::GETHOSTBYNAME2,
            LookupFn::GetNameInfo => lookup_fn::GETNAMEINFO,
        }
    }
}

/// The functions probed, in the order their uprobes are attached.
pub const PROBED: [LookupFn; 4] = [
    LookupFn::GetAddrInfo,
    LookupFn::GetHostByName,
    LookupFn::GetHostByName2,
    LookupFn::GetNameInfo,
];

/// One lookup, as the kernel reported it at its return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupInfo {
    pub func: LookupFn,
    /// Entry and return, UTC ns.
    pub start_ns: i64,
    pub end_ns: i64,
    /// The name asked for; for getnameinfo the host name returned (empty on error).
    pub name: String,
    /// The address family asked for (or, getnameinfo, given): 0 (any), 4 or 6.
    pub family: u8,
    /// The return value: 0, EAI_* (getaddrinfo, getnameinfo), 1 for a NULL hostent.
    pub error: i32,
    /// Result addresses in the order returned (getaddrinfo's per-socket-type repeats
    /// removed); for getnameinfo the address asked about.
    pub addrs: Vec<IpAddr>,
    pub owner: KernelOwner,
}

/// The `lookup_family` of an `AF_*` number (0, `AF_INET`, `AF_INET6`); other values are kept
/// as they are only if they fit, else 255.
pub fn family_of_af(af: i32) -> u8 {
    match af {
        0 => 0,
        2 => 4,
        10 => 6,
        other => u8::try_from(other).unwrap_or(u8::MAX),
    }
}

/// An address the kernel copied: 4 (first 4 bytes) or 6.
pub fn addr_of(family: u8, bytes: [u8; 16]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
        _ => None,
    }
}

/// The text of a lookup's error: NULL on success. getaddrinfo's and getnameinfo's EAI_*
/// codes are the same numbers in glibc and musl.
pub fn error_text(func: LookupFn, error: i32) -> Option<String> {
    if error == 0 {
        return None;
    }
    if matches!(func, LookupFn::GetHostByName | LookupFn::GetHostByName2) {
        return Some("NULL_RESULT".into());
    }
    let name = match error {
        -1 => "EAI_BADFLAGS",
        -2 => "EAI_NONAME",
        -3 => "EAI_AGAIN",
        -4 => "EAI_FAIL",
        -5 => "EAI_NODATA",
        -6 => "EAI_FAMILY",
        -7 => "EAI_SOCKTYPE",
        -8 => "EAI_SERVICE",
        -9 => "EAI_ADDRFAMILY",
        -10 => "EAI_MEMORY",
        -11 => "EAI_SYSTEM",
        -12 => "EAI_OVERFLOW",
        other => return Some(format!("EAI_{other}")),
    };
    Some(name.into())
}

/// The id of a lookup: the same from its start event and its return (thread and entry time),
/// unique on a host in practice (a 64-bit mix of both; joins go by hostname and lookup_id).
pub fn lookup_id(tid: u32, start_ns: i64) -> u64 {
    // splitmix64's finaliser over the two words.
    let mut z = (start_ns as u64) ^ (u64::from(tid)).rotate_left(40);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The reverse-lookup name of an address (`4.3.2.1.in-addr.arpa`, `...ip6.arpa`): the
/// `qname` of a getnameinfo row, as its wire query (PTR) has it.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                for nib in [b & 0xf, b >> 4] {
                    s.push(char::from_digit(u32::from(nib), 16).unwrap_or('0'));
                    s.push('.');
                }
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// The row of one lookup. `local`: its thread sent no DNS query during the call.
pub fn lookup_row(
    l: &LookupInfo,
    attrs: ProcessAttrs,
    hostname: &Arc<str>,
    boot_id: Option<&Arc<str>>,
    local: bool,
) -> Transaction {
    let o = &l.owner;
    // getnameinfo asks about an address: its row's name is the reverse name (the name of the
    // PTR query it may send), and the host name it returned is a PTR record in `answers`
    // (`answer_ips` holds addresses only).
    let (name_asked, answers) = match l.func {
        LookupFn::GetNameInfo => {
            let asked = l.addrs.first().map(|ip| reverse_name(*ip));
            let answer = (!l.name.is_empty()).then(|| {
                vec![dnsledger_schema::Answer {
                    name: asked.clone().unwrap_or_default(),
                    rtype: "PTR".into(),
                    ttl: 0,
                    data: l.name.clone(),
                }]
            });
            (asked, answer)
        }
        _ => (Some(l.name.clone()), None),
    };
    let name_asked = name_asked.map(|n| n.trim_end_matches('.').to_string());
    let qname = name_asked.as_ref().map(|n| n.to_ascii_lowercase());
    let qname_case = match (&name_asked, &qname) {
        (Some(asked), Some(lower)) if asked != lower => Some(asked.clone()),
        _ => None,
    };
    let registered_domain = qname.as_deref().and_then(dnstext::registered_domain);
    let answer_ips = match l.func {
        LookupFn::GetNameInfo => None,
        _ => (!l.addrs.is_empty()).then(|| l.addrs.iter().map(|ip| ip_text(*ip)).collect()),
    };
    Transaction {
        ts: l.start_ns,
        query_ts: Some(l.start_ns),
        response_ts: Some(l.end_ns),
        latency_ns: Some(l.end_ns.saturating_sub(l.start_ns)),
        status: status::LOOKUP,
        hostname: Arc::clone(hostname),
        boot_id: boot_id.cloned(),
        transport: transport::LIBC,
        ip_version: 0,
        qname,
        qname_case,
        registered_domain,
        answers,
        answer_ips,
        lookup_fn: Some(l.func.as_str()),
        lookup_family: Some(l.family),
        lookup_error: error_text(l.func, l.error),
        lookup_local: Some(local),
        lookup_id: Some(lookup_id(o.tid, l.start_ns)),
        ..attrs.row(Some(o))
    }
}

/// Finished lookups stay linkable this long past their return (a query sent during one may
/// be written only when the pair timeout gives it up: 5 s by default).
pub const LINK_KEEP_NS: i64 = 60_000_000_000;
/// Lookups in progress and finished ones kept at most (beyond it the oldest are forgotten:
/// their late rows go unlinked).
const MAX_TRACKED: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct Open {
    id: u64,
    start_ns: i64,
    queries: u32,
}

#[derive(Clone, Copy, Debug)]
struct Closed {
    tid: u32,
    id: u64,
    start_ns: i64,
    end_ns: i64,
}

/// Links DNS rows to the lookup in progress on their thread (see the module doc).
#[derive(Debug, Default)]
pub struct Linker {
    open: HashMap<u32, Open>,
    /// Finished lookups, oldest first (by return).
    closed: VecDeque<Closed>,
    /// Rows linked to a lookup (for status and tests).
    pub linked: u64,
}

impl Linker {
    /// Whether any lookup is in progress or linkable (rows need not be looked at otherwise).
    pub fn tracking(&self) -> bool {
        !self.open.is_empty() || !self.closed.is_empty()
    }

    /// A thread entered a lookup.
    pub fn start(&mut self, tid: u32, start_ns: i64) {
        if self.open.len() >= MAX_TRACKED {
            self.open.clear();
        }
        self.open.insert(
            tid,
            Open {
                id: lookup_id(tid, start_ns),
                start_ns,
                queries: 0,
            },
        );
    }

    /// A DNS query left `tid` (an egress packet in the thread's context).
    pub fn query_sent(&mut self, tid: u32) {
        if let Some(o) = self.open.get_mut(&tid) {
            o.queries = o.queries.saturating_add(1);
        }
    }

    /// The lookup returned: whether it was answered locally (no DNS query from its thread
    /// since its start event). Without a start event (lost in the kernel) it is not known:
    /// `None`.
    pub fn finish(&mut self, tid: u32, start_ns: i64, end_ns: i64) -> Option<bool> {
        let id = lookup_id(tid, start_ns);
        let local = match self.open.get(&tid) {
            Some(o) if o.id == id => {
                let local = o.queries == 0;
                self.open.remove(&tid);
                Some(local)
            }
            _ => None,
        };
        if self.closed.len() >= MAX_TRACKED {
            self.closed.pop_front();
        }
        self.closed.push_back(Closed {
            tid,
            id,
            start_ns,
            end_ns,
        });
        local
    }

    /// Forgets finished lookups that returned more than [`LINK_KEEP_NS`] before `now_ns`.
    pub fn expire(&mut self, now_ns: i64) {
        while let Some(c) = self.closed.front() {
            if c.end_ns >= now_ns.saturating_sub(LINK_KEEP_NS) {
                break;
            }
            self.closed.pop_front();
        }
    }

    /// Sets `lookup_id` on a DNS row whose query its thread sent during a lookup.
    pub fn link(&mut self, row: &mut Transaction) {
        if row.status == status::LOOKUP || row.lookup_id.is_some() {
            return;
        }
        let (Some(tid), Some(q)) = (row.tid, row.query_ts) else {
            return;
        };
        let id = match self.open.get(&tid) {
            Some(o) if o.start_ns <= q => Some(o.id),
            _ => self
                .closed
                .iter()
                .rev()
                .find(|c| c.tid == tid && c.start_ns <= q && q <= c.end_ns)
                .map(|c| c.id),
        };
        if id.is_some() {
            row.lookup_id = id;
            self.linked += 1;
        }
    }
}

/// Which C library a mapped file is, from its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Libc {
    Glibc,
    Musl,
}

/// Whether the file at `path` (as /proc/PID/maps shows it) is a C library whose resolver is
/// probed: glibc's `libc.so.6`; musl's dynamic linker, which is its libc
/// (`ld-musl-<arch>.so.1`, Alpine's `libc.musl-<arch>.so.1`, Debian's
/// `/usr/lib/<arch>-linux-musl/libc.so`).
pub fn libc_kind(path: &str) -> Option<Libc> {
    let base = path.rsplit('/').next().unwrap_or(path);
    if base == "libc.so.6" {
        Some(Libc::Glibc)
    } else if (base.starts_with("ld-musl-") || base.starts_with("libc.musl-"))
        && base.ends_with(".so.1")
        || (base == "libc.so" && path.contains("musl"))
    {
        Some(Libc::Musl)
    } else {
        None
    }
}

/// The C libraries a /proc/PID/maps text maps (each path once, in order).
pub fn libcs_in_maps(maps: &str) -> Vec<(String, Libc)> {
    let mut out: Vec<(String, Libc)> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode pathname (the path may hold spaces).
        let mut fields = line.splitn(6, ' ');
        let path = match fields.nth(5) {
            Some(p) => p.trim_start(),
            None => continue,
        };
        if !path.starts_with('/') || path.ends_with(" (deleted)") {
            continue;
        }
        if let Some(kind) = libc_kind(path)
            && !out.iter().any(|(p, _)| p == path)
        {
            out.push((path.to_string(), kind));
        }
    }
    out
}

/// The path of `path` in the mount namespace of process `pid`, from here.
pub fn in_root_of(pid: u32, path: &str) -> PathBuf {
    Path::new("/proc")
        .join(pid.to_string())
        .join("root")
        .join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(func: LookupFn, name: &str, addrs: &[&str], error: i32) -> LookupInfo {
        let mut owner = KernelOwner {
            pid: 10,
            tid: 11,
            uid: 1000,
            ..KernelOwner::default()
        };
        owner.comm[..6].copy_from_slice(b"getent");
        LookupInfo {
            func,
            start_ns: 1_000,
            end_ns: 4_000,
            name: name.into(),
            family: 0,
            error,
            addrs: addrs.iter().map(|a| a.parse().expect("ip")).collect(),
            owner,
        }
    }

    #[test]
    fn a_getaddrinfo_row() {
        let l = info(
            LookupFn::GetAddrInfo,
            "WWW.Example.co.uk.",
            &["192.0.2.1", "2001:db8::1"],
            0,
        );
        let t = lookup_row(&l, ProcessAttrs::default(), &Arc::from("h"), None, false);
        assert_eq!((t.status, t.transport), ("lookup", "libc"));
        assert_eq!(t.qname.as_deref(), Some("www.example.co.uk"));
        assert_eq!(t.qname_case.as_deref(), Some("WWW.Example.co.uk"));
        assert_eq!(t.registered_domain.as_deref(), Some("example.co.uk"));
        assert_eq!(
            t.answer_ips,
            Some(vec!["192.0.2.1".to_string(), "2001:db8::1".to_string()])
        );
        assert_eq!(
            (t.ts, t.query_ts, t.response_ts),
            (1_000, Some(1_000), Some(4_000))
        );
        assert_eq!(t.latency_ns, Some(3_000));
        assert_eq!(
            (t.pid, t.tid, t.comm.as_deref()),
            (Some(10), Some(11), Some("getent"))
        );
        assert_eq!(t.lookup_fn, Some("getaddrinfo"));
        assert_eq!(t.lookup_error, None);
        assert_eq!(t.lookup_local, Some(false));
        assert_eq!(t.lookup_id, Some(lookup_id(11, 1_000)));
        assert!(t.dns_id.is_none() && t.rcode.is_none());
    }

    #[test]
    fn errors_are_named() {
        let l = info(LookupFn::GetAddrInfo, "nx.example", &[], -2);
        let t = lookup_row(&l, ProcessAttrs::default(), &Arc::from("h"), None, true);
        assert_eq!(t.lookup_error.as_deref(), Some("EAI_NONAME"));
        assert_eq!(t.answer_ips, None);
        assert_eq!(
            error_text(LookupFn::GetHostByName2, 1).as_deref(),
            Some("NULL_RESULT")
        );
        assert_eq!(
            error_text(LookupFn::GetNameInfo, -3).as_deref(),
            Some("EAI_AGAIN")
        );
        assert_eq!(
            error_text(LookupFn::GetNameInfo, -99).as_deref(),
            Some("EAI_-99")
        );
    }

    #[test]
    fn a_getnameinfo_row_asks_the_reverse_name() {
        let l = info(LookupFn::GetNameInfo, "host.example", &["127.0.0.60"], 0);
        let t = lookup_row(&l, ProcessAttrs::default(), &Arc::from("h"), None, true);
        assert_eq!(t.qname.as_deref(), Some("60.0.0.127.in-addr.arpa"));
        let answers = t.answers.expect("answers");
        assert_eq!(answers[0].data, "host.example");
        assert_eq!(answers[0].rtype, "PTR");
        assert_eq!(t.answer_ips, None);
        assert_eq!(
            reverse_name("2001:db8::1".parse().expect("ip")),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn families_and_addresses() {
        assert_eq!(
            (family_of_af(0), family_of_af(2), family_of_af(10)),
            (0, 4, 6)
        );
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(addr_of(4, b), Some("10.0.0.1".parse().expect("ip")));
        assert_eq!(addr_of(0, b), None);
    }

    fn dns_row(tid: u32, q: i64) -> Transaction {
        Transaction {
            status: status::ANSWERED,
            tid: Some(tid),
            query_ts: Some(q),
            ..Transaction::default()
        }
    }

    #[test]
    fn rows_link_to_the_lookup_of_their_thread() {
        let mut k = Linker::default();
        k.start(11, 1_000);
        k.query_sent(11);
        // Answered while the lookup runs.
        let mut a = dns_row(11, 1_500);
        k.link(&mut a);
        assert_eq!(a.lookup_id, Some(lookup_id(11, 1_000)));
        // Another thread's query is not linked.
        let mut other = dns_row(12, 1_600);
        k.link(&mut other);
        assert_eq!(other.lookup_id, None);
        assert_eq!(k.finish(11, 1_000, 3_000), Some(false));
        // Unanswered, written after the lookup returned.
        let mut late = dns_row(11, 2_000);
        k.link(&mut late);
        assert_eq!(late.lookup_id, Some(lookup_id(11, 1_000)));
        // A query after the return is not.
        let mut after = dns_row(11, 3_500);
        k.link(&mut after);
        assert_eq!(after.lookup_id, None);
        assert_eq!(k.linked, 2);
        // A lookup without queries is local; one without a start event unknown.
        k.start(11, 5_000);
        assert_eq!(k.finish(11, 5_000, 6_000), Some(true));
        assert_eq!(k.finish(13, 7_000, 8_000), None);
        k.expire(8_000 + LINK_KEEP_NS + 1);
        let mut gone = dns_row(13, 7_500);
        k.link(&mut gone);
        assert_eq!(gone.lookup_id, None);
    }

    #[test]
    fn c_libraries_from_maps() {
        let maps = "\
7f0000000000-7f0000001000 r--p 00000000 fd:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000001000-7f0000002000 r-xp 00001000 fd:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000002000-7f0000003000 r-xp 00000000 fd:01 124 /usr/lib/x86_64-linux-gnu/libcurl.so.4
7f0000003000-7f0000004000 r-xp 00000000 fd:01 125 /lib/ld-musl-x86_64.so.1
7f0000004000-7f0000005000 r-xp 00000000 fd:01 126 /usr/lib/x86_64-linux-musl/libc.so
7f0000005000-7f0000006000 r-xp 00000000 fd:01 127 /usr/lib/libc.so.6 (deleted)
7ffd00000000-7ffd00001000 rw-p 00000000 00:00 0 [stack]
";
        let libs = libcs_in_maps(maps);
        assert_eq!(
            libs,
            vec![
                (
                    "/usr/lib/x86_64-linux-gnu/libc.so.6".to_string(),
                    Libc::Glibc
                ),
                ("/lib/ld-musl-x86_64.so.1".to_string(), Libc::Musl),
                ("/usr/lib/x86_64-linux-musl/libc.so".to_string(), Libc::Musl),
            ]
        );
        assert_eq!(libc_kind("/lib/libc.musl-x86_64.so.1"), Some(Libc::Musl));
        assert_eq!(libc_kind("/usr/lib/libc.so"), None);
        assert_eq!(
            in_root_of(7, "/usr/lib/libc.so.6"),
            PathBuf::from("/proc/7/root/usr/lib/libc.so.6")
        );
    }
}
