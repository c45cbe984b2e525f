//! Step 4 of the path: **query/response pairing** — [`DnsMessage`]s in, [`Transaction`] rows
//! out (to [`crate::store`]).
//!
//! The direction of a message decides its role (`from_client` = query), not its QR bit, so a
//! message too broken to parse still gets one. Queries wait in the [`Pairer`] until a response
//! matches them, or until [`Pairer::expire`] / [`Pairer::flush`] turns them into `unanswered`
//! rows; a response that matches nothing becomes an `unsolicited` row at once.
//!
//! Matching: a response matches a pending query on the same flow (5-tuple and socket cookie)
//! with the same DNS id and the same first question (name, type, class). A response without a
//! readable question (a FORMERR often has none) matches on flow and id alone, and a pending
//! query whose own question was unreadable matches any response on its flow and id. Among
//! several candidates (retransmissions are kept, not collapsed) the oldest wins.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use dnsledger_schema::{Transaction, dnstext, status};

use crate::capture::KernelOwner;
use crate::decode::{DnsMessage, Flow};
use crate::dns::{self, ParsedDns};
use crate::stublink::{QueryFacts, SideLink, StubLinker};

/// How a [`Pairer`] pairs and what it stamps on every row.
#[derive(Clone, Debug)]
pub struct PairConfig {
    /// A query unanswered for longer than this (nanoseconds) becomes an `unanswered` row.
    pub timeout_ns: i64,
    /// Queries pending at most. Beyond it the oldest is written `unanswered` at once (with a
    /// note) and counted in [`Pairer::evicted`]: memory stays bounded when no answers come.
    pub max_pending: usize,
    /// Keep the message bytes in the `query_raw` / `response_raw` columns.
    pub keep_raw: bool,
    pub hostname: Arc<str>,
    pub boot_id: Option<Arc<str>>,
}

/// Process facts beyond what the kernel sent with the packet.
#[derive(Clone, Debug, Default)]
pub struct ProcessAttrs {
    pub ppid: Option<u32>,
    pub exe: Option<Arc<str>>,
    pub cmdline: Option<Arc<str>>,
    pub cgroup_path: Option<Arc<str>>,
    pub container_id: Option<Arc<str>>,
}

impl ProcessAttrs {
    /// A row with only its process columns filled, from the process that owns the socket (or
    /// made the call) and these facts: pid, tid, uid, gid, comm, cgroup_id and netns from the
    /// kernel; ppid, exe, cmdline, cgroup_path and container_id from here. Every kind of row
    /// (DNS, lookup, bypass) is built on it.
    pub fn row(self, owner: Option<&KernelOwner>) -> Transaction {
        Transaction {
            pid: owner.map(|o| o.pid),
            tid: owner.map(|o| o.tid),
            ppid: self.ppid,
            uid: owner.map(|o| o.uid),
            gid: owner.map(|o| o.gid),
            comm: owner.map(|o| o.comm_str()),
            exe: self.exe,
            cmdline: self.cmdline,
            cgroup_id: owner.map(|o| o.cgroup_id),
            cgroup_path: self.cgroup_path,
            container_id: self.container_id,
            netns: owner.map(|o| o.netns),
            ..Transaction::default()
        }
    }
}

/// Looks up [`ProcessAttrs`] for the process that owns a socket. Called when a query arrives,
/// while the process most likely still exists.
pub trait Attributor {
    fn attrs(&mut self, owner: &KernelOwner) -> ProcessAttrs;
}

/// An [`Attributor`] that knows nothing (packet-capture import).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAttribution;

impl Attributor for NoAttribution {
    fn attrs(&mut self, _owner: &KernelOwner) -> ProcessAttrs {
        ProcessAttrs::default()
    }
}

/// One message of a transaction, parsed, holding only what its row needs.
#[derive(Debug)]
struct Side {
    ts: i64,
    owner: Option<KernelOwner>,
    attrs: Option<ProcessAttrs>,
    wire_len: u32,
    /// The message bytes, kept only with [`PairConfig::keep_raw`].
    raw: Option<Vec<u8>>,
    /// Capture and parse problems of this message.
    error: Option<String>,
    dns: ParsedDns,
    /// User stack of the sender (`--stacks`).
    stack: Option<Arc<[String]>>,
    /// Requester behind a local stub (`stub-link`).
    stub: SideLink,
}

impl Side {
    fn new(msg: DnsMessage, keep_raw: bool) -> Self {
        let dns = dns::parse(&msg.bytes);
        let captured = msg.bytes.len();
        let mut error = None;
        if captured < msg.wire_len as usize {
            let mut e = format!("truncated capture: {captured} of {} bytes", msg.wire_len);
            if let Some(why) = &msg.capture_error {
                e.push_str(" (");
                e.push_str(why);
                e.push(')');
            }
            error = Some(e);
        } else if let Some(why) = msg.capture_error {
            error = Some(why);
        }
        if let Some(p) = &dns.parse_error {
            append(&mut error, "", p);
        }
        Self {
            ts: msg.ts_ns,
            owner: msg.owner,
            attrs: None,
            wire_len: msg.wire_len,
            raw: keep_raw.then_some(msg.bytes),
            error,
            dns,
            stack: msg.stack,
            stub: SideLink::default(),
        }
    }

    /// Name, type and class of the first question, when all three were read.
    fn question(&self) -> Option<(&str, u16, u16)> {
        let d = &self.dns;
        Some((d.qname.as_deref()?, d.qtype?, d.qclass?))
    }
}

/// Appends `prefix` + `msg` to an optional `; `-separated list.
fn append(list: &mut Option<String>, prefix: &str, msg: &str) {
    let s = list.get_or_insert_with(String::new);
    if !s.is_empty() {
        s.push_str("; ");
    }
    s.push_str(prefix);
    s.push_str(msg);
}

/// Flow and DNS id: the part of the pairing key that needs no allocation. Questions are
/// compared within a bucket, which almost always holds one query.
type BucketKey = (Flow, Option<u16>);

#[derive(Debug)]
struct Pending {
    /// Arrival order; with `ts` it names the query in [`Pairer::by_time`].
    seq: u64,
    query: Side,
}

/// Pairs queries with responses. One per pipeline, owned by the thread that feeds it.
pub struct Pairer {
    cfg: PairConfig,
    /// Pending queries per flow and id, oldest first.
    buckets: HashMap<BucketKey, VecDeque<Pending>>,
    /// Every pending query by (ts, seq): expiry pops from the front.
    by_time: BTreeMap<(i64, u64), BucketKey>,
    next_seq: u64,
    /// Queries given up because the table was full, since start.
    evicted: u64,
    /// Requester behind a local stub (`stub-link`); `None` with `--no-stub-link`.
    stub: Option<StubLinker>,
}

impl Pairer {
    pub fn new(cfg: PairConfig) -> Self {
        Self {
            cfg,
            buckets: HashMap::new(),
            by_time: BTreeMap::new(),
            next_seq: 0,
            evicted: 0,
            stub: None,
        }
    }

    /// Links local stub resolvers' upstream queries to their requesters (see
    /// [`crate::stublink`]).
    pub fn set_stub_linker(&mut self, linker: StubLinker) {
        self.stub = Some(linker);
    }

    /// Upstream queries of local stubs linked to requesters since start.
    pub fn stub_linked(&self) -> u64 {
        self.stub.as_ref().map_or(0, StubLinker::linked)
    }

    /// Parse `msg`, pair it, append finished transactions to `out`.
    pub fn push(&mut self, msg: DnsMessage, attr: &mut dyn Attributor, out: &mut Vec<Transaction>) {
        let flow = msg.flow;
        let from_client = msg.from_client;
        let mut side = Side::new(msg, self.cfg.keep_raw);
        let key = (flow, side.dns.id);
        if from_client {
            side.attrs = side.owner.as_ref().map(|o| attr.attrs(o));
            let seq = self.next_seq;
            self.next_seq += 1;
            // A local server's own side (`--serve-side`) is neither a client's query to a
            // stub nor a stub's query upstream.
            let client_side = !matches!(flow.side, crate::capture::Side::Server);
            if let (Some(linker), Some(owner), true) =
                (self.stub.as_mut(), side.owner.as_ref(), client_side)
            {
                side.stub = linker.on_query(QueryFacts {
                    seq,
                    flow: &flow,
                    pid: owner.pid,
                    netns: owner.netns,
                    comm: owner.comm_str(),
                    exe: side.attrs.as_ref().and_then(|a| a.exe.clone()),
                    qname: side.dns.qname.as_deref(),
                    qtype: side.dns.qtype,
                });
            }
            self.by_time.insert((side.ts, seq), key);
            self.buckets
                .entry(key)
                .or_default()
                .push_back(Pending { seq, query: side });
            if self.by_time.len() > self.cfg.max_pending {
                self.evict_oldest(out);
            }
            return;
        }
        match self.take_match(&key, &side) {
            Some(query) => {
                if query.owner.is_none() {
                    side.attrs = side.owner.as_ref().map(|o| attr.attrs(o));
                }
                out.push(self.row(flow, status::ANSWERED, Some(query), Some(side)));
            }
            None => {
                side.attrs = side.owner.as_ref().map(|o| attr.attrs(o));
                out.push(self.row(flow, status::UNSOLICITED, None, Some(side)));
            }
        }
    }

    /// Queries older than `now_ns - timeout` become `unanswered` rows.
    pub fn expire(&mut self, now_ns: i64, out: &mut Vec<Transaction>) {
        let cutoff = now_ns.saturating_sub(self.cfg.timeout_ns);
        while let Some(entry) = self.by_time.first_entry() {
            if entry.key().0 >= cutoff {
                break;
            }
            let ((_, seq), key) = entry.remove_entry();
            if let Some(query) = self.remove_pending(&key, seq) {
                out.push(self.row(key.0, status::UNANSWERED, Some(query), None));
            }
        }
    }

    /// Writes the oldest pending query as `unanswered` now, noting why: the table is full.
    fn evict_oldest(&mut self, out: &mut Vec<Transaction>) {
        if let Some(((_, seq), key)) = self.by_time.pop_first()
            && let Some(mut query) = self.remove_pending(&key, seq)
        {
            self.evicted += 1;
            let note = format!(
                "pairing table full ({} queries pending): written before its response could arrive",
                self.cfg.max_pending
            );
            append(&mut query.error, "", &note);
            out.push(self.row(key.0, status::UNANSWERED, Some(query), None));
        }
    }

    /// Queries given up since start because the pairing table was full.
    /// The host name and boot id stamped on every row.
    pub fn host(&self) -> (&Arc<str>, Option<&Arc<str>>) {
        (&self.cfg.hostname, self.cfg.boot_id.as_ref())
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Everything still pending becomes `unanswered` (shutdown / end of file), oldest first.
    pub fn flush(&mut self, out: &mut Vec<Transaction>) {
        while let Some(((_, seq), key)) = self.by_time.pop_first() {
            if let Some(query) = self.remove_pending(&key, seq) {
                out.push(self.row(key.0, status::UNANSWERED, Some(query), None));
            }
        }
        self.buckets.clear();
        if let Some(l) = self.stub.as_mut() {
            l.clear();
        }
    }

    /// Smallest `ts` any future row from this pairer can have (oldest pending query ts),
    /// `None` if nothing pends.
    pub fn low_watermark(&self) -> Option<i64> {
        self.by_time.first_key_value().map(|((ts, _), _)| *ts)
    }

    /// Queries waiting for a response.
    pub fn pending(&self) -> usize {
        self.by_time.len()
    }

    /// Removes and returns the oldest pending query `response` answers. A query pending for
    /// longer than the timeout at the response's time is unanswered even when [`Pairer::expire`]
    /// has not run since (an import ticks every 1024 packets): it is left for expiry.
    fn take_match(&mut self, key: &BucketKey, response: &Side) -> Option<Side> {
        let timeout = self.cfg.timeout_ns;
        let bucket = self.buckets.get_mut(key)?;
        let live = |p: &Pending| response.ts.saturating_sub(p.query.ts) <= timeout;
        let idx = match response.question() {
            Some(q) => bucket
                .iter()
                .position(|p| live(p) && p.query.question() == Some(q))
                .or_else(|| {
                    bucket
                        .iter()
                        .position(|p| live(p) && p.query.question().is_none())
                }),
            None => bucket.iter().position(live),
        }?;
        let pending = bucket.remove(idx)?;
        if bucket.is_empty() {
            self.buckets.remove(key);
        }
        self.by_time.remove(&(pending.query.ts, pending.seq));
        Some(pending.query)
    }

    /// Removes a pending query from its bucket (not from `by_time`).
    fn remove_pending(&mut self, key: &BucketKey, seq: u64) -> Option<Side> {
        let bucket = self.buckets.get_mut(key)?;
        let idx = bucket.iter().position(|p| p.seq == seq)?;
        let pending = bucket.remove(idx)?;
        if bucket.is_empty() {
            self.buckets.remove(key);
        }
        Some(pending.query)
    }

    /// Builds one row; `status` says which of `q` (query) and `r` (response) are present.
    fn row(
        &mut self,
        flow: Flow,
        status: &'static str,
        mut q: Option<Side>,
        mut r: Option<Side>,
    ) -> Transaction {
        let query_ts = q.as_ref().map(|s| s.ts);
        let response_ts = r.as_ref().map(|s| s.ts);
        // Requester behind a local stub (`stub-link`).
        let (requesters, stub_cache) = match (q.as_ref(), self.stub.as_mut()) {
            (Some(qs), Some(linker)) => linker.settle(&qs.stub, r.is_some()),
            _ => (None, None),
        };
        let owner = q
            .as_ref()
            .and_then(|s| s.owner)
            .or_else(|| r.as_ref().and_then(|s| s.owner));
        let attrs = q
            .as_mut()
            .and_then(|s| s.attrs.take())
            .or_else(|| r.as_mut().and_then(|s| s.attrs.take()))
            .unwrap_or_default();
        let parse_error = match (q.as_mut(), r.as_mut()) {
            (Some(q), Some(r)) => {
                let mut e = None;
                if let Some(qe) = &q.error {
                    append(&mut e, "query: ", qe);
                }
                if let Some(re) = &r.error {
                    append(&mut e, "response: ", re);
                }
                e
            }
            (Some(s), None) | (None, Some(s)) => s.error.take(),
            (None, None) => None,
        };

        // Query-side facts, falling back to the response.
        let qd = q.as_ref().map(|s| &s.dns);
        let rd = r.as_ref().map(|s| &s.dns);
        let either = |f: fn(&ParsedDns) -> Option<bool>| qd.and_then(f).or_else(|| rd.and_then(f));
        let dns_id = qd.and_then(|d| d.id).or_else(|| rd.and_then(|d| d.id));
        let opcode = qd
            .and_then(|d| d.opcode)
            .or_else(|| rd.and_then(|d| d.opcode));
        let rd_bit = either(|d| d.rd);
        let cd_bit = either(|d| d.cd);
        // Response-side facts; without a response they are unknown, except the counts.
        let resp = |f: fn(&ParsedDns) -> Option<bool>| rd.and_then(f);
        let (aa, tc, ra, ad) = (
            resp(|d| d.aa),
            resp(|d| d.tc),
            resp(|d| d.ra),
            resp(|d| d.ad),
        );
        let rcode = rd.and_then(|d| d.rcode);
        let counts_from = rd.or(qd);
        let qdcount = counts_from.and_then(|d| d.qdcount);
        let ancount = counts_from.and_then(|d| d.ancount);
        let nscount = counts_from.and_then(|d| d.nscount);
        let arcount = counts_from.and_then(|d| d.arcount);

        let mut q_edns = q.as_mut().and_then(|s| s.dns.edns.take());
        let mut r_edns = r.as_mut().and_then(|s| s.dns.edns.take());
        // The response's ECS echoes the query's address and source prefix and adds the scope
        // the answer is valid for, so it says more than the query's.
        let edns_ecs = r_edns
            .as_mut()
            .and_then(|e| e.ecs.take())
            .or_else(|| q_edns.as_mut().and_then(|e| e.ecs.take()));
        let (ede_code, ede_text) = match r_edns.as_mut() {
            Some(e) => (e.ede_code, e.ede_text.take()),
            None => (None, None),
        };
        let edns = q_edns.as_ref().or(r_edns.as_ref());

        // The question group comes from one message: the query if its name was read.
        let mut qsrc = match (q.as_mut(), r.as_mut()) {
            (Some(q), _) if q.dns.qname.is_some() => Some(&mut q.dns),
            (_, Some(r)) if r.dns.qname.is_some() => Some(&mut r.dns),
            (Some(q), _) => Some(&mut q.dns),
            (None, Some(r)) => Some(&mut r.dns),
            (None, None) => None,
        };
        // Names as sent: stored only where they differ from the normal form (upper case).
        let (qname_case, questions_case) = match qsrc.as_deref_mut() {
            Some(d) => d.take_case_columns(),
            None => (None, None),
        };
        let (qname, qtype, qtype_name, qclass, questions) = match qsrc {
            Some(d) => (
                d.qname.take(),
                d.qtype,
                d.qtype_name.take(),
                d.qclass,
                d.has_header().then(|| std::mem::take(&mut d.questions)),
            ),
            None => (None, None, None, None, None),
        };
        let registered_domain = qname.as_deref().and_then(dnstext::registered_domain);

        let (rcode_name, answers, answer_ips) = match r.as_mut() {
            Some(s) => {
                let has_header = s.dns.has_header();
                (
                    s.dns.rcode_name.take(),
                    has_header.then(|| std::mem::take(&mut s.dns.answers)),
                    has_header.then(|| std::mem::take(&mut s.dns.answer_ips)),
                )
            }
            None => (None, None, None),
        };

        Transaction {
            ts: query_ts.or(response_ts).unwrap_or_default(),
            query_ts,
            response_ts,
            latency_ns: query_ts.zip(response_ts).map(|(q, r)| r.saturating_sub(q)),
            status,
            hostname: Arc::clone(&self.cfg.hostname),
            boot_id: self.cfg.boot_id.clone(),
            transport: flow.transport.as_str(),
            ip_version: flow.ip_version(),
            client_ip: dns::ip_text(flow.client_ip),
            client_port: flow.client_port,
            server_ip: dns::ip_text(flow.server_ip),
            server_port: flow.server_port,
            dns_id,
            opcode,
            rcode,
            rcode_name,
            aa,
            tc,
            rd: rd_bit,
            ra,
            ad,
            cd: cd_bit,
            qname,
            qtype,
            qtype_name,
            qclass,
            questions,
            qdcount,
            ancount,
            nscount,
            arcount,
            registered_domain,
            answers,
            answer_ips,
            edns_udp_size: edns.map(|e| e.udp_size),
            edns_version: edns.map(|e| e.version),
            edns_do: edns.map(|e| e.dnssec_ok),
            edns_ecs,
            edns_cookie: edns.map(|e| e.cookie),
            ede_code,
            ede_text,
            query_size: q.as_ref().map(|s| s.wire_len),
            response_size: r.as_ref().map(|s| s.wire_len),
            query_raw: q.as_mut().and_then(|s| s.raw.take()),
            response_raw: r.as_mut().and_then(|s| s.raw.take()),
            parse_error,
            // The code that sent the query; a response's stack would be the server's.
            stack: q.as_mut().and_then(|s| s.stack.take()),
            qname_case,
            questions_case,
            // --serve-side: which end; the process columns are that end's process.
            side: flow.side.column(),
            requesters,
            stub_cache,
            // The lookup columns are set by the pipeline's lookup linker (crate::lookups),
            // not from the messages.
            ..attrs.row(owner.as_ref())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{IpAddr, Ipv4Addr};
    use std::str::FromStr;

    use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use crate::decode::Transport;

    const SEC: i64 = 1_000_000_000;

    fn cfg(keep_raw: bool) -> PairConfig {
        PairConfig {
            timeout_ns: 5 * SEC,
            max_pending: 1024,
            keep_raw,
            hostname: Arc::from("host-a"),
            boot_id: Some(Arc::from("boot-1")),
        }
    }

    fn flow(client_port: u16) -> Flow {
        Flow {
            transport: Transport::Udp,
            client_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            client_port,
            server_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53)),
            server_port: 53,
            sock_cookie: 77,
            side: crate::capture::Side::Client,
        }
    }

    fn owner(pid: u32) -> KernelOwner {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        KernelOwner {
            pid,
            tid: pid + 1,
            uid: 1000,
            gid: 1000,
            cgroup_id: 4242,
            netns: 4026531840,
            comm,
        }
    }

    fn query_bytes(id: u16, qname: &str) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(qname).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn response_bytes(id: u16, qname: &str, ip: Option<Ipv4Addr>) -> Vec<u8> {
        let mut m = Message::response(id, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        let name = Name::from_str(qname).unwrap();
        m.add_query(Query::query(name.clone(), RecordType::A));
        match ip {
            Some(ip) => {
                m.add_answer(Record::from_rdata(name, 60, RData::A(A(ip))));
            }
            None => m.metadata.response_code = ResponseCode::NXDomain,
        }
        m.to_vec().unwrap()
    }

    fn msg(ts: i64, flow: Flow, from_client: bool, pid: Option<u32>, bytes: Vec<u8>) -> DnsMessage {
        DnsMessage {
            ts_ns: ts,
            flow,
            from_client,
            owner: pid.map(owner),
            wire_len: bytes.len() as u32,
            bytes,
            capture_error: None,
            stack: None,
        }
    }

    /// Records which owners it was asked about and answers with a fixed exe.
    #[derive(Default)]
    struct Recording {
        asked: Vec<u32>,
    }

    impl Attributor for Recording {
        fn attrs(&mut self, owner: &KernelOwner) -> ProcessAttrs {
            self.asked.push(owner.pid);
            ProcessAttrs {
                ppid: Some(1),
                exe: Some(Arc::from(format!("/usr/bin/p{}", owner.pid))),
                cmdline: Some(Arc::from("curl example.com")),
                cgroup_path: Some(Arc::from("/user.slice")),
                container_id: None,
            }
        }
    }

    #[test]
    fn names_as_sent_only_where_case_differs() {
        let mut p = Pairer::new(cfg(true));
        let mut attr = Recording::default();
        let mut out = Vec::new();
        // One mixed-case question: qname_case holds it; no list for a single question.
        // (`from_ascii`: hickory's `from_str` lower-cases.)
        let mut m = Message::query();
        m.metadata.id = 0x2222;
        let n = Name::from_ascii("H4sIAA.Exfil.example.").unwrap();
        m.add_query(Query::query(n, RecordType::A));
        p.push(
            msg(SEC, flow(40001), true, Some(7), m.to_vec().unwrap()),
            &mut attr,
            &mut out,
        );
        // Two questions, the second mixed case: the list holds both as sent.
        let mut m = Message::query();
        m.metadata.id = 0x3333;
        for n in ["first.example.", "Second.EXAMPLE."] {
            m.add_query(Query::query(Name::from_ascii(n).unwrap(), RecordType::A));
        }
        p.push(
            msg(2 * SEC, flow(40002), true, Some(7), m.to_vec().unwrap()),
            &mut attr,
            &mut out,
        );
        // Two questions, all lower case: nothing stored.
        let mut m = Message::query();
        m.metadata.id = 0x4444;
        for n in ["a.example.", "b.example."] {
            m.add_query(Query::query(Name::from_str(n).unwrap(), RecordType::A));
        }
        p.push(
            msg(3 * SEC, flow(40003), true, Some(7), m.to_vec().unwrap()),
            &mut attr,
            &mut out,
        );
        p.flush(&mut out);
        out.sort_by_key(|t| t.ts);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0].qname.as_deref(), Some("h4siaa.exfil.example"));
        assert_eq!(out[0].qname_case.as_deref(), Some("H4sIAA.Exfil.example"));
        assert_eq!(out[0].questions_case, None);
        assert_eq!(out[1].qname.as_deref(), Some("first.example"));
        assert_eq!(out[1].qname_case, None);
        assert_eq!(
            out[1].questions_case,
            Some(vec![
                "first.example".to_owned(),
                "Second.EXAMPLE".to_owned()
            ])
        );
        let names: Vec<&str> = out[1]
            .questions
            .iter()
            .flatten()
            .map(|q| q.name.as_str())
            .collect();
        assert_eq!(names, ["first.example", "second.example"]);
        assert_eq!((&out[2].qname_case, &out[2].questions_case), (&None, &None));
    }

    #[test]
    fn answered_pair_with_latency() {
        let mut p = Pairer::new(cfg(true));
        let mut attr = Recording::default();
        let mut out = Vec::new();
        let q = query_bytes(0x1111, "www.example.co.uk.");
        let r = response_bytes(
            0x1111,
            "WWW.example.co.uk.",
            Some(Ipv4Addr::new(192, 0, 2, 7)),
        );
        p.push(
            msg(10 * SEC, flow(40000), true, Some(300), q.clone()),
            &mut attr,
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(p.pending(), 1);
        p.push(
            msg(
                10 * SEC + 2_500_000,
                flow(40000),
                false,
                Some(300),
                r.clone(),
            ),
            &mut attr,
            &mut out,
        );
        assert_eq!(p.pending(), 0);
        assert_eq!(attr.asked, vec![300], "attributed once, at query time");
        assert_eq!(out.len(), 1);
        let t = &out[0];
        assert_eq!(t.status, status::ANSWERED);
        assert_eq!(t.ts, 10 * SEC);
        assert_eq!(t.query_ts, Some(10 * SEC));
        assert_eq!(t.response_ts, Some(10 * SEC + 2_500_000));
        assert_eq!(t.latency_ns, Some(2_500_000));
        assert_eq!(&*t.hostname, "host-a");
        assert_eq!(t.boot_id.as_deref(), Some("boot-1"));
        assert_eq!((t.pid, t.tid, t.uid), (Some(300), Some(301), Some(1000)));
        assert_eq!(t.comm.as_deref(), Some("curl"));
        assert_eq!(t.cgroup_id, Some(4242));
        assert_eq!(t.netns, Some(4026531840));
        assert_eq!(t.ppid, Some(1));
        assert_eq!(t.exe.as_deref(), Some("/usr/bin/p300"));
        assert_eq!(t.cgroup_path.as_deref(), Some("/user.slice"));
        assert_eq!(t.transport, "udp");
        assert_eq!(t.ip_version, 4);
        assert_eq!(t.client_ip, "10.0.0.2");
        assert_eq!(t.client_port, 40000);
        assert_eq!(t.server_ip, "10.0.0.53");
        assert_eq!(t.server_port, 53);
        assert_eq!(t.dns_id, Some(0x1111));
        assert_eq!(t.opcode, Some(0));
        assert_eq!(t.rcode, Some(0));
        assert_eq!(t.rcode_name.as_deref(), Some("NOERROR"));
        assert_eq!((t.rd, t.ra, t.aa), (Some(true), Some(true), Some(false)));
        assert_eq!(t.qname.as_deref(), Some("www.example.co.uk"));
        assert_eq!(t.qtype, Some(1));
        assert_eq!(t.qtype_name.as_deref(), Some("A"));
        assert_eq!(t.qclass, Some(1));
        assert_eq!(t.questions.as_ref().map(Vec::len), Some(1));
        assert_eq!((t.qdcount, t.ancount), (Some(1), Some(1)));
        assert_eq!(t.registered_domain.as_deref(), Some("example.co.uk"));
        // The query was sent lower case (the response's upper case is the server's echo).
        assert_eq!((&t.qname_case, &t.questions_case), (&None, &None));
        assert_eq!(t.answer_ips, Some(vec!["192.0.2.7".to_owned()]));
        assert_eq!(
            t.answers.as_ref().map(|a| a[0].data.as_str()),
            Some("192.0.2.7")
        );
        assert_eq!(t.edns_udp_size, None);
        assert_eq!(t.query_size, Some(q.len() as u32));
        assert_eq!(t.response_size, Some(r.len() as u32));
        assert_eq!(t.query_raw.as_deref(), Some(q.as_slice()));
        assert_eq!(t.response_raw.as_deref(), Some(r.as_slice()));
        assert_eq!(t.parse_error, None);
    }

    #[test]
    fn full_table_writes_the_oldest_query_unanswered_and_counts_it() {
        let mut p = Pairer::new(PairConfig {
            max_pending: 2,
            ..cfg(false)
        });
        let mut out = Vec::new();
        for (i, name) in ["a.example.", "b.example.", "c.example."]
            .iter()
            .enumerate()
        {
            let id = 10 + i as u16;
            p.push(
                msg(
                    SEC + i as i64,
                    flow(1),
                    true,
                    Some(9),
                    query_bytes(id, name),
                ),
                &mut NoAttribution,
                &mut out,
            );
        }
        assert_eq!((p.pending(), p.evicted()), (2, 1));
        assert_eq!(out.len(), 1, "the oldest query is written at once");
        assert_eq!(out[0].status, status::UNANSWERED);
        assert_eq!(out[0].qname.as_deref(), Some("a.example"));
        let note = out[0].parse_error.as_deref().unwrap_or_default();
        assert!(
            note.contains("pairing table full (2 queries pending)"),
            "{note}"
        );
        // Its late response is unsolicited; the others still pair.
        for (i, name) in ["a.example.", "b.example."].iter().enumerate() {
            let id = 10 + i as u16;
            p.push(
                msg(
                    2 * SEC,
                    flow(1),
                    false,
                    None,
                    response_bytes(id, name, None),
                ),
                &mut NoAttribution,
                &mut out,
            );
        }
        let st: Vec<&str> = out.iter().map(|t| t.status).collect();
        assert_eq!(
            st,
            [status::UNANSWERED, status::UNSOLICITED, status::ANSWERED]
        );
        assert_eq!((p.pending(), p.evicted()), (1, 1));
    }

    #[test]
    fn unanswered_after_timeout() {
        let mut p = Pairer::new(cfg(false));
        let mut out = Vec::new();
        p.push(
            msg(SEC, flow(1), true, Some(9), query_bytes(5, "slow.example.")),
            &mut NoAttribution,
            &mut out,
        );
        p.expire(6 * SEC, &mut out); // exactly the timeout old: still waiting
        assert!(out.is_empty());
        assert_eq!(p.pending(), 1);
        p.expire(6 * SEC + 1, &mut out);
        assert_eq!(p.pending(), 0);
        assert_eq!(out.len(), 1);
        let t = &out[0];
        assert_eq!(t.status, status::UNANSWERED);
        assert_eq!(t.ts, SEC);
        assert_eq!(
            (t.query_ts, t.response_ts, t.latency_ns),
            (Some(SEC), None, None)
        );
        assert_eq!(t.pid, Some(9));
        assert_eq!(t.exe, None, "NoAttribution knows nothing");
        assert_eq!(
            (t.rcode, t.rcode_name.as_deref(), t.ra, t.aa),
            (None, None, None, None)
        );
        assert_eq!(t.rd, Some(true));
        assert_eq!((t.qdcount, t.ancount), (Some(1), Some(0)));
        assert_eq!(t.qname.as_deref(), Some("slow.example"));
        assert_eq!(t.answers, None);
        assert_eq!(t.answer_ips, None);
        assert_eq!(t.response_size, None);
        // A late response now has nothing to answer.
        p.push(
            msg(
                7 * SEC,
                flow(1),
                false,
                Some(9),
                response_bytes(5, "slow.example.", None),
            ),
            &mut NoAttribution,
            &mut out,
        );
        assert_eq!(out[1].status, status::UNSOLICITED);
    }

    #[test]
    fn late_response_answers_the_query_still_within_the_timeout() {
        // The same query asked at 0 s and again at 5.5 s, answered at 5.6 s, with no expire
        // call in between: the first query is past the timeout, so the answer is the second's.
        let mut p = Pairer::new(cfg(false));
        let mut out = Vec::new();
        let f = flow(4);
        for ts in [0, 5 * SEC + SEC / 2] {
            p.push(
                msg(ts, f, true, Some(1), query_bytes(7, "again.example.")),
                &mut NoAttribution,
                &mut out,
            );
        }
        p.push(
            msg(
                5 * SEC + 6 * SEC / 10,
                f,
                false,
                Some(1),
                response_bytes(7, "again.example.", None),
            ),
            &mut NoAttribution,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, status::ANSWERED);
        assert_eq!(out[0].query_ts, Some(5 * SEC + SEC / 2));
        p.flush(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].status, status::UNANSWERED);
        assert_eq!(out[1].query_ts, Some(0));
    }

    #[test]
    fn unsolicited_response() {
        let mut p = Pairer::new(cfg(false));
        let mut attr = Recording::default();
        let mut out = Vec::new();
        p.push(
            msg(
                3 * SEC,
                flow(2),
                false,
                Some(55),
                response_bytes(9, "ghost.example.", None),
            ),
            &mut attr,
            &mut out,
        );
        assert_eq!(p.pending(), 0);
        assert_eq!(attr.asked, vec![55]);
        assert_eq!(out.len(), 1);
        let t = &out[0];
        assert_eq!(t.status, status::UNSOLICITED);
        assert_eq!(t.ts, 3 * SEC);
        assert_eq!(
            (t.query_ts, t.response_ts, t.latency_ns),
            (None, Some(3 * SEC), None)
        );
        assert_eq!(t.pid, Some(55));
        assert_eq!(t.exe.as_deref(), Some("/usr/bin/p55"));
        assert_eq!(t.rcode_name.as_deref(), Some("NXDOMAIN"));
        assert_eq!(t.qname.as_deref(), Some("ghost.example"));
        assert_eq!(t.answers, Some(vec![]));
        assert_eq!(t.query_size, None);
        assert_eq!(t.response_raw, None);
    }

    #[test]
    fn retransmitted_queries_are_kept_apart() {
        let mut p = Pairer::new(cfg(false));
        let mut out = Vec::new();
        let f = flow(3);
        p.push(
            msg(0, f, true, Some(1), query_bytes(42, "retry.example.")),
            &mut NoAttribution,
            &mut out,
        );
        p.push(
            msg(SEC, f, true, Some(1), query_bytes(42, "retry.example.")),
            &mut NoAttribution,
            &mut out,
        );
        assert_eq!(p.pending(), 2);
        let resp = response_bytes(42, "retry.example.", Some(Ipv4Addr::new(192, 0, 2, 1)));
        p.push(
            msg(SEC + 100, f, false, Some(1), resp.clone()),
            &mut NoAttribution,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, status::ANSWERED);
        assert_eq!(out[0].query_ts, Some(0), "the oldest query is answered");
        assert_eq!(out[0].latency_ns, Some(SEC + 100));
        assert_eq!(p.pending(), 1);
        p.flush(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].status, status::UNANSWERED);
        assert_eq!(out[1].query_ts, Some(SEC));
        assert_eq!(p.pending(), 0);
        // A second copy of the response now finds nothing pending.
        p.push(
            msg(SEC + 200, f, false, Some(1), resp),
            &mut NoAttribution,
            &mut out,
        );
        assert_eq!(out[2].status, status::UNSOLICITED);
    }

    #[test]
    fn same_id_on_different_flows() {
        let mut p = Pairer::new(cfg(false));
        let mut out = Vec::new();
        let (f1, f2) = (flow(5001), flow(5002));
        p.push(
            msg(0, f1, true, Some(1), query_bytes(7, "a.example.")),
            &mut NoAttribution,
            &mut out,
        );
        p.push(
            msg(10, f2, true, Some(2), query_bytes(7, "a.example.")),
            &mut NoAttribution,
            &mut out,
        );
        // Responses arrive in the opposite order.
        p.push(
            msg(
                100,
                f2,
                false,
                Some(2),
                response_bytes(7, "a.example.", Some(Ipv4Addr::new(192, 0, 2, 2))),
            ),
            &mut NoAttribution,
            &mut out,
        );
        p.push(
            msg(
                1000,
                f1,
                false,
                Some(1),
                response_bytes(7, "a.example.", Some(Ipv4Addr::new(192, 0, 2, 1))),
            ),
            &mut NoAttribution,
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].client_port, out[0].pid, out[0].latency_ns),
            (5002, Some(2), Some(90))
        );
        assert_eq!(out[0].answer_ips, Some(vec!["192.0.2.2".to_owned()]));
        assert_eq!(
            (out[1].client_port, out[1].pid, out[1].latency_ns),
            (5001, Some(1), Some(1000))
        );
        assert_eq!(out[1].answer_ips, Some(vec!["192.0.2.1".to_owned()]));
        assert!(out.iter().all(|t| t.status == status::ANSWERED));
    }

    #[test]
    fn different_question_does_not_pair() {
        let mut p = Pairer::new(cfg(false));
        let mut out = Vec::new();
        p.push(
            msg(0, flow(6), true, None, query_bytes(8, "asked.example.")),
            &mut NoAttribution,
            &mut out,
        );
        p.push(
            msg(
                5,
                flow(6),
                false,
                None,
                response_bytes(8, "other.example.", None),
            ),
            &mut NoAttribution,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, status::UNSOLICITED);
        assert_eq!(out[0].qname.as_deref(), Some("other.example"));
        assert_eq!(out[0].pid, None);
        assert_eq!(p.pending(), 1);
    }

    #[test]
    fn formerr_without_question_pairs_by_id() {
        let mut p = Pairer::new(cfg(false));
        let mut out = Vec::new();
        p.push(
            msg(
                0,
                flow(7),
                true,
                Some(4),
                query_bytes(0xABCD, "weird.example."),
            ),
            &mut NoAttribution,
            &mut out,
        );
        // Header only: id 0xABCD, QR, RD, RA, rcode FORMERR, all counts 0.
        let formerr = vec![0xAB, 0xCD, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0];
        p.push(
            msg(40, flow(7), false, Some(4), formerr),
            &mut NoAttribution,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let t = &out[0];
        assert_eq!(t.status, status::ANSWERED);
        assert_eq!(t.latency_ns, Some(40));
        assert_eq!(t.rcode_name.as_deref(), Some("FORMERR"));
        assert_eq!(t.qname.as_deref(), Some("weird.example"));
        assert_eq!(t.qdcount, Some(0), "counts come from the response");
        assert_eq!(t.parse_error, None);
    }

    #[test]
    fn keep_raw_false_clears_raw_columns() {
        let mut p = Pairer::new(cfg(false));
        let mut out = Vec::new();
        let q = query_bytes(1, "raw.example.");
        p.push(
            msg(0, flow(8), true, None, q.clone()),
            &mut NoAttribution,
            &mut out,
        );
        p.push(
            msg(
                1,
                flow(8),
                false,
                None,
                response_bytes(1, "raw.example.", None),
            ),
            &mut NoAttribution,
            &mut out,
        );
        assert_eq!(out[0].status, status::ANSWERED);
        assert_eq!(out[0].query_raw, None);
        assert_eq!(out[0].response_raw, None);
        assert_eq!(out[0].query_size, Some(q.len() as u32), "sizes are kept");
    }

    #[test]
    fn low_watermark_follows_oldest_pending() {
        let mut p = Pairer::new(cfg(false));
        let mut out = Vec::new();
        assert_eq!(p.low_watermark(), None);
        p.push(
            msg(50, flow(9), true, None, query_bytes(1, "late.example.")),
            &mut NoAttribution,
            &mut out,
        );
        p.push(
            msg(10, flow(9), true, None, query_bytes(2, "early.example.")),
            &mut NoAttribution,
            &mut out,
        );
        assert_eq!(p.low_watermark(), Some(10));
        p.push(
            msg(
                60,
                flow(9),
                false,
                None,
                response_bytes(2, "early.example.", None),
            ),
            &mut NoAttribution,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(p.low_watermark(), Some(50));
        p.expire(50 + 5 * SEC + 1, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].qname.as_deref(), Some("late.example"));
        assert_eq!(p.low_watermark(), None);
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn flush_emits_oldest_first() {
        let mut p = Pairer::new(cfg(false));
        let mut out = Vec::new();
        for (ts, id) in [(30, 1), (10, 2), (20, 3)] {
            p.push(
                msg(ts, flow(10), true, None, query_bytes(id, "f.example.")),
                &mut NoAttribution,
                &mut out,
            );
        }
        p.flush(&mut out);
        let ts: Vec<i64> = out.iter().map(|t| t.ts).collect();
        assert_eq!(ts, vec![10, 20, 30]);
        assert!(out.iter().all(|t| t.status == status::UNANSWERED));
        assert_eq!(p.low_watermark(), None);
    }

    #[test]
    fn truncated_message_reports_parse_error() {
        let mut p = Pairer::new(cfg(true));
        let mut out = Vec::new();
        p.push(
            msg(0, flow(11), true, Some(3), query_bytes(77, "big.example.")),
            &mut NoAttribution,
            &mut out,
        );
        let full = response_bytes(77, "big.example.", Some(Ipv4Addr::new(192, 0, 2, 9)));
        let mut cut = msg(
            20,
            flow(11),
            false,
            Some(3),
            full[..full.len() - 6].to_vec(),
        );
        cut.wire_len = full.len() as u32;
        cut.capture_error = Some("capture cap reached".into());
        p.push(cut, &mut NoAttribution, &mut out);
        assert_eq!(out.len(), 1);
        let t = &out[0];
        assert_eq!(t.status, status::ANSWERED, "id and question still pair it");
        assert_eq!(t.response_size, Some(full.len() as u32));
        assert_eq!(t.response_raw.as_ref().map(Vec::len), Some(full.len() - 6));
        assert_eq!(t.answers, Some(vec![]));
        assert_eq!(
            t.parse_error.as_deref(),
            Some(&*format!(
                "response: truncated capture: {} of {} bytes (capture cap reached); \
                 malformed message: answer record 1 of 1: unexpected end of input reached",
                full.len() - 6,
                full.len()
            ))
        );
    }

    #[test]
    fn garbage_query_gets_a_row() {
        let mut p = Pairer::new(cfg(false));
        let mut out = Vec::new();
        p.push(
            msg(0, flow(12), true, Some(8), vec![0xFF; 5]),
            &mut NoAttribution,
            &mut out,
        );
        p.flush(&mut out);
        assert_eq!(out.len(), 1);
        let t = &out[0];
        assert_eq!(t.status, status::UNANSWERED);
        assert_eq!(t.dns_id, Some(0xFFFF));
        assert_eq!(t.qname, None);
        assert_eq!(t.questions, None);
        assert_eq!(t.parse_error.as_deref(), Some("message too short: 5 bytes"));
    }
}
