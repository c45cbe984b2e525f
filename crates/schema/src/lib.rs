//! The one definition of what a dnsledger segment holds.
//!
//! Both the recorder (which writes segments) and `dnsql` (which reads them) take column names,
//! the Arrow schema, the Parquet key-value metadata keys and [`SCHEMA_VERSION`] from here.
//! This crate does no I/O.
//!
//! Compatibility rule: new columns are added as nullable at the end of the schema and do not
//! change [`SCHEMA_VERSION`]; renaming, retyping or removing a column bumps it, and readers
//! refuse versions newer than they know with a clear message.
//!
//! Version 2 stores `query_ts`, `latency_ns`, `answer_ips` and `questions` only where they
//! cannot be derived from the other columns of the row ([`derived`]); readers compute
//! `coalesce(stored, derived)`, which reads version 1's fully stored values unchanged.
//!
//! Version 3 stores the raw messages with their 2-byte ID XORed with `dns_id`, in the columns
//! `query_raw_x` and `response_raw_x` ([`derived::RAW_XOR`]), so that equal messages are equal
//! bytes (and one dictionary entry); `query_raw` and `response_raw` stay NULL for them, and
//! readers restore `coalesce(query_raw, unxor(query_raw_x, dns_id))`, which reads the raw
//! bytes of versions 1 and 2 (in `query_raw`, no `query_raw_x`) unchanged.

mod batch;
pub mod compaction;
pub mod derived;
pub mod dnstext;
pub mod names;
pub mod partition;

pub use batch::{
    Answer, Question, Requester, Transaction, TransactionBatchBuilder, transaction_at,
};

use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Version of the segment schema, stored in every segment under [`meta::SCHEMA_VERSION`].
///
/// 2: the derivable values of `query_ts`, `latency_ns`, `answer_ips` and `questions` are NULL
/// in the file and computed by readers ([`derived`]).
///
/// 3: raw messages whose ID can be XORed out are stored in `query_raw_x`/`response_raw_x`
/// (first two bytes XOR `dns_id`), `query_raw`/`response_raw` NULL ([`derived::RAW_XOR`]).
pub const SCHEMA_VERSION: u32 = 3;

/// Column names. Later tools (dnsql recipes, tests, users' SQL) depend on these spellings.
pub mod col {
    pub const TS: &str = "ts";
    pub const QUERY_TS: &str = "query_ts";
    pub const RESPONSE_TS: &str = "response_ts";
    pub const LATENCY_NS: &str = "latency_ns";
    pub const STATUS: &str = "status";
    pub const HOSTNAME: &str = "hostname";
    pub const BOOT_ID: &str = "boot_id";
    pub const PID: &str = "pid";
    pub const TID: &str = "tid";
    pub const PPID: &str = "ppid";
    pub const UID: &str = "uid";
    pub const GID: &str = "gid";
    pub const COMM: &str = "comm";
    pub const EXE: &str = "exe";
    pub const CMDLINE: &str = "cmdline";
    pub const CGROUP_ID: &str = "cgroup_id";
    pub const CGROUP_PATH: &str = "cgroup_path";
    pub const CONTAINER_ID: &str = "container_id";
    pub const NETNS: &str = "netns";
    pub const TRANSPORT: &str = "transport";
    pub const IP_VERSION: &str = "ip_version";
    pub const CLIENT_IP: &str = "client_ip";
    pub const CLIENT_PORT: &str = "client_port";
    pub const SERVER_IP: &str = "server_ip";
    pub const SERVER_PORT: &str = "server_port";
    pub const DNS_ID: &str = "dns_id";
    pub const OPCODE: &str = "opcode";
    pub const RCODE: &str = "rcode";
    pub const RCODE_NAME: &str = "rcode_name";
    pub const AA: &str = "aa";
    pub const TC: &str = "tc";
    pub const RD: &str = "rd";
    pub const RA: &str = "ra";
    pub const AD: &str = "ad";
    pub const CD: &str = "cd";
    pub const QNAME: &str = "qname";
    pub const QTYPE: &str = "qtype";
    pub const QTYPE_NAME: &str = "qtype_name";
    pub const QCLASS: &str = "qclass";
    pub const QUESTIONS: &str = "questions";
    pub const QDCOUNT: &str = "qdcount";
    pub const ANCOUNT: &str = "ancount";
    pub const NSCOUNT: &str = "nscount";
    pub const ARCOUNT: &str = "arcount";
    pub const REGISTERED_DOMAIN: &str = "registered_domain";
    pub const ANSWERS: &str = "answers";
    pub const ANSWER_IPS: &str = "answer_ips";
    pub const EDNS_UDP_SIZE: &str = "edns_udp_size";
    pub const EDNS_VERSION: &str = "edns_version";
    pub const EDNS_DO: &str = "edns_do";
    pub const EDNS_ECS: &str = "edns_ecs";
    pub const EDNS_COOKIE: &str = "edns_cookie";
    pub const EDE_CODE: &str = "ede_code";
    pub const EDE_TEXT: &str = "ede_text";
    pub const QUERY_SIZE: &str = "query_size";
    pub const RESPONSE_SIZE: &str = "response_size";
    pub const QUERY_RAW: &str = "query_raw";
    pub const RESPONSE_RAW: &str = "response_raw";
    pub const PARSE_ERROR: &str = "parse_error";
    pub const STACK: &str = "stack";
    pub const QNAME_CASE: &str = "qname_case";
    pub const QUESTIONS_CASE: &str = "questions_case";
    // --serve-side (server side of a local DNS server's conversations).
    pub const SIDE: &str = "side";
    // Requester behind a local stub (`stub-link`): see the recorder's `stublink` module.
    pub const REQUESTER_PIDS: &str = "requester_pids";
    pub const REQUESTER_COMMS: &str = "requester_comms";
    pub const REQUESTER_EXES: &str = "requester_exes";
    pub const STUB_CACHE: &str = "stub_cache";
    // libc-level lookups (status `lookup`, transport `libc`) and the link of wire rows to them.
    pub const LOOKUP_FN: &str = "lookup_fn";
    pub const LOOKUP_FAMILY: &str = "lookup_family";
    pub const LOOKUP_ERROR: &str = "lookup_error";
    pub const LOOKUP_LOCAL: &str = "lookup_local";
    pub const LOOKUP_ID: &str = "lookup_id";
    // Raw messages with the DNS ID XORed out (schema version 3, `derived::RAW_XOR`): in files
    // only; readers show them restored as `query_raw` / `response_raw`.
    pub const QUERY_RAW_X: &str = "query_raw_x";
    pub const RESPONSE_RAW_X: &str = "response_raw_x";
}

/// Name of the column `dnsql` computes over every segment (not stored): the first question's
/// name exactly as sent, `coalesce(qname_case, qname)`.
pub const QNAME_SENT: &str = "qname_sent";

/// The SQL that computes [`QNAME_SENT`] from the stored columns (the same text in `dnsql`, in
/// the views `--print-sql` writes for DuckDB and Spark, and in the README).
pub const QNAME_SENT_SQL: &str = "coalesce(qname_case, qname)";

/// One-line meaning of a column or partition key (for `dnsql schema` and documentation); the
/// empty string for a name that is neither.
pub fn column_doc(name: &str) -> &'static str {
    match name {
        col::TS => {
            "when the transaction started: the query's capture time, else the response's (UTC, ns)"
        }
        col::QUERY_TS => {
            "capture time of the query; NULL if only a response was seen (segments since \
             schema version 2 store it only where it is not ts: readers compute it)"
        }
        col::RESPONSE_TS => "capture time of the response; NULL if unanswered",
        col::LATENCY_NS => {
            "response_ts - query_ts in nanoseconds; NULL unless both were seen (computed by \
             readers since schema version 2)"
        }
        col::STATUS => {
            "answered, unanswered (no response within the pair timeout), unsolicited (response \
             without query), bypass (a connection to an encrypted-DNS endpoint: no DNS \
             message seen, transport says which), or lookup (a libc name lookup, transport \
             libc: not a DNS transaction)"
        }
        col::HOSTNAME => "host that recorded the transaction (the recorder's --host)",
        col::BOOT_ID => {
            "kernel boot id of the recording host (pids are unique only within one boot)"
        }
        col::PID => "process id (thread group) that owns the DNS socket",
        col::TID => "thread id that sent the query",
        col::PPID => "parent process id",
        col::UID => "user id of the process",
        col::GID => "group id of the process",
        col::COMM => "process name (kernel comm, at most 15 bytes)",
        col::EXE => "path of the process's executable",
        col::CMDLINE => "command line of the process, arguments separated by spaces",
        col::CGROUP_ID => "cgroup v2 id of the process",
        col::CGROUP_PATH => "cgroup v2 path of the process",
        col::CONTAINER_ID => {
            "container id found in the cgroup path (docker, containerd, podman, ...)"
        }
        col::NETNS => "network namespace inode of the process",
        col::TRANSPORT => {
            "udp or tcp; for status bypass: dot (TCP to port 853), doq (UDP to port 853) or \
             doh-likely (port 443 of an address on the DoH list); for status lookup: libc"
        }
        col::IP_VERSION => "4 or 6 (status lookup: 0, no packet; client/server columns empty)",
        col::CLIENT_IP => "address of the client (the local process's side)",
        col::CLIENT_PORT => "port of the client",
        col::SERVER_IP => "address of the DNS server queried (bypass: the encrypted-DNS endpoint)",
        col::SERVER_PORT => "port of the DNS server (53, 5353, ...; bypass: 853 or 443)",
        col::DNS_ID => "DNS message id",
        col::OPCODE => "DNS opcode (0 query, 4 notify, 5 update, ...)",
        col::RCODE => "response code, extended by EDNS (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, ...)",
        col::RCODE_NAME => "response code mnemonic (NOERROR, NXDOMAIN, SERVFAIL, ...)",
        col::AA => "authoritative answer flag of the response",
        col::TC => "truncated flag of the response",
        col::RD => "recursion desired flag of the query",
        col::RA => "recursion available flag of the response",
        col::AD => "authentic data flag of the response (DNSSEC validated)",
        col::CD => "checking disabled flag of the query",
        col::QNAME => {
            "first question's name, lower-case presentation format without trailing dot (bloom-filtered)"
        }
        col::QTYPE => "first question's type number",
        col::QTYPE_NAME => "first question's type mnemonic (A, AAAA, PTR, TXT, TYPE65534, ...)",
        col::QCLASS => "first question's class (1 IN, 255 ANY, ...)",
        col::QUESTIONS => {
            "every question: list of {name, type, class} (since schema version 2 stored only \
             when it is not the one question (qname, qtype, qclass): readers compute it)"
        }
        col::QDCOUNT => "question count of the header",
        col::ANCOUNT => "answer count of the header",
        col::NSCOUNT => "authority count of the header",
        col::ARCOUNT => "additional count of the header",
        col::REGISTERED_DOMAIN => {
            "registrable domain (eTLD+1, Public Suffix List) of qname (bloom-filtered)"
        }
        col::ANSWERS => {
            "answer section: list of {name, type, ttl, data} with presentation-format data"
        }
        col::ANSWER_IPS => {
            "addresses of the A and AAAA answers (lookup rows: the addresses the C library \
             returned; since schema version 2 stored only where it is not the A/AAAA data of \
             answers: readers compute it)"
        }
        col::EDNS_UDP_SIZE => "EDNS UDP payload size advertised by the query (else the response)",
        col::EDNS_VERSION => "EDNS version",
        col::EDNS_DO => "EDNS DNSSEC OK bit",
        col::EDNS_ECS => "EDNS client subnet (address/source/scope prefix)",
        col::EDNS_COOKIE => "whether an EDNS cookie was present",
        col::EDE_CODE => "extended DNS error code of the response",
        col::EDE_TEXT => "extended DNS error text of the response",
        col::QUERY_SIZE => {
            "length of the query message in bytes (as sent, even if capture was cut)"
        }
        col::RESPONSE_SIZE => "length of the response message in bytes (as received)",
        col::QUERY_RAW => {
            "query message bytes (up to the recorder's --max-payload; NULL with --no-raw; since \
             schema version 3 stored in query_raw_x with the ID XORed out: readers restore it)"
        }
        col::RESPONSE_RAW => {
            "response message bytes (up to --max-payload; NULL with --no-raw; since schema \
             version 3 stored in response_raw_x with the ID XORed out: readers restore it)"
        }
        col::PARSE_ERROR => {
            "what could not be decoded in the query or response; NULL if both parsed"
        }
        col::STACK => {
            "user stack of the code that sent the query, innermost frame first: \
             \"function (file:line)\", else \"object+0xoffset\" or \"0xaddress\" \
             (recorded with --stacks only, else NULL)"
        }
        col::QNAME_CASE => {
            "first question's name exactly as sent (case kept, same escapes as qname); NULL when \
             it has no upper-case letter, i.e. equals qname: the name as sent is \
             coalesce(qname_case, qname) (dnsql's qname_sent)"
        }
        col::QUESTIONS_CASE => {
            "every question's name exactly as sent, in the order of questions, for a message \
             with more than one question of which one has an upper-case letter; else NULL"
        }
        col::SIDE => {
            "which end of the conversation the host was: client (a local process asked; the \
             process columns are the asker) or server (recorded with --serve-side: a local DNS \
             server answered client_ip; the process columns are the server); NULL in segments \
             older than the column and in imported captures (read it as client)"
        }
        // Requester behind a local stub (`stub-link`).
        col::REQUESTER_PIDS => {
            "on a query a local stub resolver (dnsmasq, unbound, systemd-resolved on a loopback \
             address) sent upstream: the pids of the local processes whose queries to the stub \
             it serves (same name and type, pending at the stub when it asked); NULL on other rows"
        }
        col::REQUESTER_COMMS => "comm of each of requester_pids, in the same order",
        col::REQUESTER_EXES => "exe of each of requester_pids, in the same order (NULL if unknown)",
        col::STUB_CACHE => {
            "on a query to a local stub on a loopback address: miss (the stub asked upstream \
             while it was pending, see requester_pids) or hit (answered with no upstream query \
             of the stub: its cache or local data); NULL on other rows and when not linked"
        }
        // libc-level lookups.
        col::LOOKUP_FN => {
            "status lookup: the libc function called (getaddrinfo, gethostbyname, \
             gethostbyname2, getnameinfo); else NULL"
        }
        col::LOOKUP_FAMILY => {
            "status lookup: address family asked for (getaddrinfo's hints, gethostbyname2's af; \
             getnameinfo: the address given): 4, 6, or 0 for any; else NULL"
        }
        col::LOOKUP_ERROR => {
            "status lookup: NULL on success, else the error (EAI_NONAME, EAI_AGAIN, ...; \
             gethostbyname*: NULL_RESULT, h_errno is not read)"
        }
        col::LOOKUP_LOCAL => {
            "status lookup: true when the calling thread sent no DNS query between the call \
             and its return (hosts file, nscd or systemd-resolved over a local socket, a \
             cache); else NULL"
        }
        col::LOOKUP_ID => {
            "the lookup a row belongs to: on lookup rows their id, on DNS rows the lookup of \
             the same thread in progress when the query was sent (join on hostname and \
             lookup_id); NULL when there is none"
        }
        col::QUERY_RAW_X => {
            "in the files only (schema version 3): the query's bytes with their first two (the \
             ID) XORed with dns_id, zero where the ID is dns_id; readers show coalesce(query_raw, \
             these bytes with the ID restored) as query_raw"
        }
        col::RESPONSE_RAW_X => {
            "in the files only (schema version 3): the response's bytes with their first two \
             XORed with dns_id; readers show them restored as response_raw"
        }
        QNAME_SENT => {
            "computed by dnsql, not stored: coalesce(qname_case, qname), the first question's \
             name exactly as sent"
        }
        partition::HOST => "partition key: host directory of the segment (host=<h>)",
        partition::DATE => "partition key: UTC date of the segment (date=YYYY-MM-DD)",
        partition::HOUR => {
            "partition key: UTC hour of the segment (hour=HH); segments never span hours"
        }
        _ => "",
    }
}

/// Values of the `status` column.
pub mod status {
    pub const ANSWERED: &str = "answered";
    pub const UNANSWERED: &str = "unanswered";
    pub const UNSOLICITED: &str = "unsolicited";
    /// A connection to an encrypted-DNS endpoint (DoT, DoQ, likely DoH): no DNS message was
    /// seen; `transport` says which (see [`crate::transport`]).
    pub const BYPASS: &str = "bypass";
    /// A libc-level name lookup (getaddrinfo, gethostbyname, gethostbyname2, getnameinfo) seen
    /// by uprobes; transport `libc`, the `lookup_*` columns say more. Not a DNS transaction:
    /// its wire queries, if any, are rows of their own with the same `lookup_id`.
    pub const LOOKUP: &str = "lookup";
}

/// Values of the `side` column (`--serve-side`).
pub mod side {
    /// A local process asked a DNS server: the process columns are the asker.
    pub const CLIENT: &str = "client";
    /// A local DNS server answered `client_ip`: the process columns are the server.
    pub const SERVER: &str = "server";
    /// The rows that count as "a transaction" unless the server side is asked for: the
    /// client side, and rows from before the column (NULL). With `--serve-side` a loopback
    /// query to a local server is recorded twice, once per end; counting client rows counts
    /// it once.
    pub const CLIENT_ROWS_SQL: &str = "(side IS NULL OR side <> 'server')";
    /// The server-side rows (`--serve-side`).
    pub const SERVER_ROWS_SQL: &str = "side = 'server'";
}

/// Values of the `stub_cache` column (requester behind a local stub).
pub mod stub_cache {
    /// The stub asked upstream for this query (its `requester_pids` name the client).
    pub const MISS: &str = "miss";
    /// The stub answered without asking upstream while the query was pending.
    pub const HIT: &str = "hit";
}

/// Values of the `transport` column.
pub mod transport {
    pub const UDP: &str = "udp";
    pub const TCP: &str = "tcp";
    /// Status `bypass`: TCP to port 853 (DNS over TLS).
    pub const DOT: &str = "dot";
    /// Status `bypass`: UDP to port 853 (DNS over QUIC).
    pub const DOQ: &str = "doq";
    /// Status `bypass`: TCP or UDP to port 443 of an address on the DoH list. DoH endpoints
    /// share addresses with CDNs and plain DNS, hence "likely".
    pub const DOH_LIKELY: &str = "doh-likely";
    /// Status `lookup`: a call into the C library's resolver, no packet.
    pub const LIBC: &str = "libc";
}

/// Values of the `lookup_fn` column (status `lookup`).
pub mod lookup_fn {
    pub const GETADDRINFO: &str = "getaddrinfo";
    pub const GETHOSTBYNAME: &str = "gethostbyname";
    pub const GETHOSTBYNAME2: &str = "gethostbyname2";
    pub const GETNAMEINFO: &str = "getnameinfo";
}

/// Parquet key-value metadata keys written into every sealed segment.
pub mod meta {
    pub const SCHEMA_VERSION: &str = "dnsledger.schema_version";
    pub const HOST: &str = "dnsledger.host";
    pub const BOOT_ID: &str = "dnsledger.boot_id";
    pub const KERNEL: &str = "dnsledger.kernel";
    pub const RECORDER_VERSION: &str = "dnsledger.recorder_version";
    /// `bpf` for live capture, `import` for `dnsledger import`.
    pub const SOURCE: &str = "dnsledger.source";
    /// Smallest and largest `ts` in the segment, RFC 3339 with nanoseconds, UTC.
    pub const TS_MIN: &str = "dnsledger.ts_min";
    pub const TS_MAX: &str = "dnsledger.ts_max";
    /// Rows (transactions) in the segment.
    pub const TRANSACTIONS: &str = "dnsledger.transactions";
    /// Events lost in the kernel (ring buffer full, copy failures) while the segment was open.
    pub const DROPPED_KERNEL: &str = "dnsledger.dropped_kernel";
    /// Events lost in user space (channel full) while the segment was open.
    pub const DROPPED_USER: &str = "dnsledger.dropped_user";
    /// Rows the recorder had to drop because they could not be written in time (disk full,
    /// write errors), counted since the previous segment.
    pub const ROWS_LOST: &str = "dnsledger.rows_lost";
    /// DNS messages cut short by the payload cap (`--max-payload`) since the previous segment.
    pub const CUT_BY_CAP: &str = "dnsledger.cut_by_cap";
    /// Queries the pairing table had to give up on before their response could arrive (the
    /// table was full: `--max-pending`), since the previous segment. Each is still a row
    /// (`unanswered`, with a note in `parse_error`); a response that came later is an
    /// `unsolicited` row.
    pub const PAIR_EVICTED: &str = "dnsledger.pair_evicted";
    /// Set on segments rebuilt from the spool of a run that died: that run's id.
    pub const RECOVERED_FROM: &str = "dnsledger.recovered_from";
    /// Rows the recovery rebuilt (over all its segments for that run).
    pub const RECOVERED_ROWS: &str = "dnsledger.recovered_rows";
    /// Bytes of torn spool tail the recovery had to cut (0: nothing lost in the spool).
    pub const RECOVERY_CUT_BYTES: &str = "dnsledger.recovery_cut_bytes";
    /// Set on a segment written by compaction: the file names of the segments of the same
    /// partition it replaces (see [`crate::compaction`] for the rule readers follow).
    pub const COMPACTED_FROM: &str = "dnsledger.compacted_from";
}

/// Columns whose Parquet column chunks carry bloom filters.
pub const BLOOM_FILTER_COLUMNS: &[&str] = &[col::QNAME, col::REGISTERED_DOMAIN];

/// Dictionary-encoded (low-cardinality) string type.
pub fn dict_utf8() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// UTC nanosecond timestamp type used by every time column.
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// Fields of one element of the `answers` list.
pub fn answer_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("type", dict_utf8(), false),
        Field::new("ttl", DataType::UInt32, false),
        Field::new("data", DataType::Utf8, false),
    ])
}

/// Fields of one element of the `questions` list.
pub fn question_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("type", DataType::UInt16, false),
        Field::new("class", DataType::UInt16, false),
    ])
}

fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(fields), true)))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    let f = |name: &str, dt: DataType, nullable: bool| Field::new(name, dt, nullable);
    Arc::new(Schema::new(vec![
        f(col::TS, ts_type(), false),
        f(col::QUERY_TS, ts_type(), true),
        f(col::RESPONSE_TS, ts_type(), true),
        f(col::LATENCY_NS, Int64, true),
        f(col::STATUS, dict_utf8(), false),
        f(col::HOSTNAME, dict_utf8(), false),
        f(col::BOOT_ID, dict_utf8(), true),
        f(col::PID, UInt32, true),
        f(col::TID, UInt32, true),
        f(col::PPID, UInt32, true),
        f(col::UID, UInt32, true),
        f(col::GID, UInt32, true),
        f(col::COMM, dict_utf8(), true),
        f(col::EXE, dict_utf8(), true),
        f(col::CMDLINE, dict_utf8(), true),
        f(col::CGROUP_ID, UInt64, true),
        f(col::CGROUP_PATH, dict_utf8(), true),
        f(col::CONTAINER_ID, dict_utf8(), true),
        f(col::NETNS, UInt32, true),
        f(col::TRANSPORT, dict_utf8(), false),
        f(col::IP_VERSION, UInt8, false),
        f(col::CLIENT_IP, dict_utf8(), false),
        f(col::CLIENT_PORT, UInt16, false),
        f(col::SERVER_IP, dict_utf8(), false),
        f(col::SERVER_PORT, UInt16, false),
        f(col::DNS_ID, UInt16, true),
        f(col::OPCODE, UInt8, true),
        f(col::RCODE, UInt16, true),
        f(col::RCODE_NAME, dict_utf8(), true),
        f(col::AA, Boolean, true),
        f(col::TC, Boolean, true),
        f(col::RD, Boolean, true),
        f(col::RA, Boolean, true),
        f(col::AD, Boolean, true),
        f(col::CD, Boolean, true),
        f(col::QNAME, Utf8, true),
        f(col::QTYPE, UInt16, true),
        f(col::QTYPE_NAME, dict_utf8(), true),
        f(col::QCLASS, UInt16, true),
        f(col::QUESTIONS, list_of(question_fields()), true),
        f(col::QDCOUNT, UInt16, true),
        f(col::ANCOUNT, UInt16, true),
        f(col::NSCOUNT, UInt16, true),
        f(col::ARCOUNT, UInt16, true),
        f(col::REGISTERED_DOMAIN, Utf8, true),
        f(col::ANSWERS, list_of(answer_fields()), true),
        f(
            col::ANSWER_IPS,
            List(Arc::new(Field::new("item", Utf8, true))),
            true,
        ),
        f(col::EDNS_UDP_SIZE, UInt16, true),
        f(col::EDNS_VERSION, UInt8, true),
        f(col::EDNS_DO, Boolean, true),
        f(col::EDNS_ECS, Utf8, true),
        f(col::EDNS_COOKIE, Boolean, true),
        f(col::EDE_CODE, UInt16, true),
        f(col::EDE_TEXT, Utf8, true),
        f(col::QUERY_SIZE, UInt32, true),
        f(col::RESPONSE_SIZE, UInt32, true),
        f(col::QUERY_RAW, Binary, true),
        f(col::RESPONSE_RAW, Binary, true),
        f(col::PARSE_ERROR, Utf8, true),
        f(
            col::STACK,
            List(Arc::new(Field::new("item", Utf8, true))),
            true,
        ),
        f(col::QNAME_CASE, Utf8, true),
        f(
            col::QUESTIONS_CASE,
            List(Arc::new(Field::new("item", Utf8, true))),
            true,
        ),
        // --serve-side
        f(col::SIDE, dict_utf8(), true),
        // Requester behind a local stub (`stub-link`).
        f(
            col::REQUESTER_PIDS,
            List(Arc::new(Field::new("item", UInt32, true))),
            true,
        ),
        f(
            col::REQUESTER_COMMS,
            List(Arc::new(Field::new("item", Utf8, true))),
            true,
        ),
        f(
            col::REQUESTER_EXES,
            List(Arc::new(Field::new("item", Utf8, true))),
            true,
        ),
        f(col::STUB_CACHE, dict_utf8(), true),
        // libc-level lookups.
        f(col::LOOKUP_FN, dict_utf8(), true),
        f(col::LOOKUP_FAMILY, UInt8, true),
        f(col::LOOKUP_ERROR, dict_utf8(), true),
        f(col::LOOKUP_LOCAL, Boolean, true),
        f(col::LOOKUP_ID, UInt64, true),
        // Raw messages with the DNS ID XORed out (schema version 3).
        f(col::QUERY_RAW_X, Binary, true),
        f(col::RESPONSE_RAW_X, Binary, true),
    ]))
});

/// The Arrow schema of a segment (without file metadata).
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// A stable, human-readable rendering of the schema, one column per line; pinned by a golden
/// test so that any change to the schema is a deliberate one.
pub fn describe() -> String {
    let mut out = format!(
        "schema_version {SCHEMA_VERSION}\nstored only where not derivable: {}\nstored with \
         the id XORed out: {}\n",
        derived::DERIVED.join(", "),
        derived::RAW_XOR
            .iter()
            .map(|(raw, x)| format!("{raw} in {x}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for field in schema().fields() {
        out.push_str(&format!(
            "{} {} {}\n",
            field.name(),
            field.data_type(),
            if field.is_nullable() {
                "null"
            } else {
                "not null"
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_schema() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/golden/schema.txt");
        let now = describe();
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(path, &now).expect("write golden file");
        }
        let golden = std::fs::read_to_string(path).expect("read golden file");
        assert_eq!(
            now, golden,
            "the segment schema changed; if deliberate, update crates/schema/golden/schema.txt \
             (and SCHEMA_VERSION if the change is incompatible)"
        );
    }

    #[test]
    fn partition_keys_are_not_columns() {
        for key in [partition::HOST, partition::DATE, partition::HOUR] {
            assert!(schema().field_with_name(key).is_err(), "{key} is a column");
        }
    }

    #[test]
    fn every_column_is_documented() {
        for field in schema().fields() {
            assert!(
                !column_doc(field.name()).is_empty(),
                "{} has no doc",
                field.name()
            );
        }
        for key in [partition::HOST, partition::DATE, partition::HOUR] {
            assert!(!column_doc(key).is_empty(), "{key} has no doc");
        }
    }

    #[test]
    fn bloom_columns_exist() {
        for c in BLOOM_FILTER_COLUMNS {
            assert!(schema().field_with_name(c).is_ok());
        }
    }
}
