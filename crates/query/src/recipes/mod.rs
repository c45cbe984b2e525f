//! Forensic recipes: each function returns SQL text over the table `dns`.
//!
//! Time and host filters (`--since`, `--until`, `--host`) are applied by the view the CLI
//! registers as `dns`, not here. Every string that comes from the user goes through
//! [`sql_str`]. The recipes use the functions of [`crate::udf`], which must be registered in the
//! session ([`crate::udf::register_all`]).
//!
//! A "process" here is (`hostname`, `comm`, `exe`, `container_id`). `pid` is not part of the key
//! in `exfil` and `nxdomain`: a script that starts `dig` or `curl` once per chunk of stolen data
//! spreads one channel over thousands of pids, so the pids are listed instead (`pids`). `top
//! --by process` and `who` do key on the pid.

pub mod show;

/// A SQL string literal for `s`: single quotes doubled. A backslash is spliced in as `chr(92)`
/// so the literal means the same under every SQL dialect DataFusion can be configured with
/// (MySQL-style dialects treat `\` in literals as an escape); constant folding turns the
/// `concat` back into one literal, so statistics and bloom filters still prune on it.
pub fn sql_str(s: &str) -> String {
    let quoted = |part: &str| format!("'{}'", part.replace('\'', "''"));
    if !s.contains('\\') {
        return quoted(s);
    }
    let parts: Vec<String> = s.split('\\').map(quoted).collect();
    format!("concat({})", parts.join(", chr(92), "))
}

/// A DNS name as the `qname` column holds it: ASCII lower case, no trailing dot (except the
/// root, `.`).
pub fn normalize_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    if lower == "." {
        return lower;
    }
    match lower.strip_suffix('.') {
        Some(s) if !s.ends_with('\\') => s.to_owned(),
        _ => lower,
    }
}

/// What `dnsql top --by` groups on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopBy {
    /// `hostname`, `pid`, `comm`, `exe`.
    Process,
    /// `exe` across hosts (with the number of hosts and pids).
    Exe,
    /// `qname`.
    Domain,
    /// The registered domain (`coalesce(registered_domain, registered_domain(qname))`).
    RegisteredDomain,
    /// `rcode_name`.
    Rcode,
    /// `qtype_name`.
    Qtype,
    /// `server_ip`, `server_port`.
    Server,
    /// `hostname`, `container_id` (NULL: the host's own processes).
    Container,
}

/// Which process `dnsql timeline` follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One pid, optionally on one host (pids repeat across hosts).
    Pid { pid: u32, host: Option<String> },
    /// Every process with this `comm` (the kernel's 15-character task name).
    Comm(String),
    /// Every process running this executable path.
    Exe(String),
}

/// The predicate "`qname` is `name` or a name under it", using the registered domain's bloom
/// filter and statistics where the name has one.
fn under_name_predicate(name: &str) -> String {
    let name = normalize_name(name);
    let exact = sql_str(&name);
    let suffix = sql_str(&format!(".{name}"));
    let names = format!("(qname = {exact} OR ends_with(qname, {suffix}))");
    match crate::udf::registered_domain_of(&name) {
        // The recorder leaves `registered_domain` NULL for names with characters other than
        // letters, digits, `-` and `_` (tunnels such as dns2tcp use `=`), so NULL rows are
        // checked by name too.
        Some(rd) => format!(
            "(registered_domain = {} OR registered_domain IS NULL) AND {names}",
            sql_str(&rd)
        ),
        None => names,
    }
}

/// `dnsql who NAME`: which hosts and processes resolved `name` or any name under it, with
/// first/last seen, counts and the answers they received. One row per (host, comm, exe, pid,
/// uid, container), earliest first.
pub fn who(name: &str) -> String {
    format!(
        "SELECT hostname, comm, exe, pid, uid, container_id,
       count(*) AS queries,
       count(DISTINCT qname) AS names,
       count(*) FILTER (WHERE status = 'answered') AS answered,
       count(*) FILTER (WHERE status = 'unanswered') AS unanswered,
       count(*) FILTER (WHERE rcode_name = 'NXDOMAIN') AS nxdomain,
       min(ts) AS first_seen,
       max(ts) AS last_seen,
       array_sort(array_agg(DISTINCT qname)) AS queried_names,
       array_sort(array_agg(DISTINCT CAST(qtype_name AS VARCHAR))) AS qtypes,
       array_sort(array_distinct(flatten(array_agg(answer_strings(answers))))) AS answers_received
FROM dns
WHERE {pred}
GROUP BY hostname, comm, exe, pid, uid, container_id
ORDER BY first_seen, hostname, pid",
        pred = under_name_predicate(name)
    )
}

/// `dnsql top --by BY -n N`: DNSWatch's "top" over history. Per group: transactions, distinct
/// names, A/AAAA/PTR queries, NOERROR/NXDOMAIN/SERVFAIL answers, unanswered queries and latency
/// (average, approximate p50/p95, maximum; milliseconds, answered transactions only). Largest
/// groups first; `n == 0` means no limit.
pub fn top(by: TopBy, n: usize) -> String {
    // (expressions selected in the inner query, key columns, extra aggregates)
    let (inner, keys, extra) = match by {
        TopBy::Process => ("hostname, pid, comm, exe", "hostname, pid, comm, exe", ""),
        TopBy::Exe => (
            "exe, hostname AS m_host, pid AS m_pid",
            "exe",
            "count(DISTINCT m_host) AS hosts, count(DISTINCT m_pid) AS pids, ",
        ),
        TopBy::Domain => (
            "qname, hostname AS m_host",
            "qname",
            "count(DISTINCT m_host) AS hosts, ",
        ),
        TopBy::RegisteredDomain => (
            "coalesce(registered_domain, registered_domain(qname)) AS registered_domain, \
             hostname AS m_host",
            "registered_domain",
            "count(DISTINCT m_host) AS hosts, ",
        ),
        TopBy::Rcode => (
            "CAST(rcode_name AS VARCHAR) AS rcode_name",
            "rcode_name",
            "",
        ),
        TopBy::Qtype => (
            "CAST(qtype_name AS VARCHAR) AS qtype_name",
            "qtype_name",
            "",
        ),
        TopBy::Server => (
            "CAST(server_ip AS VARCHAR) AS server_ip, server_port",
            "server_ip, server_port",
            "",
        ),
        TopBy::Container => ("hostname, container_id", "hostname, container_id", ""),
    };
    let limit = if n == 0 {
        String::new()
    } else {
        format!("\nLIMIT {n}")
    };
    let order_keys = keys
        .split(", ")
        .map(|k| format!("{k} NULLS LAST"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT {keys},
       count(*) AS queries,
       count(DISTINCT m_qname) AS names,
       {extra}count(*) FILTER (WHERE m_qtype = 'A') AS a,
       count(*) FILTER (WHERE m_qtype = 'AAAA') AS aaaa,
       count(*) FILTER (WHERE m_qtype = 'PTR') AS ptr,
       count(*) FILTER (WHERE m_rcode = 'NOERROR') AS noerror,
       count(*) FILTER (WHERE m_rcode = 'NXDOMAIN') AS nxdomain,
       count(*) FILTER (WHERE m_rcode = 'SERVFAIL') AS servfail,
       count(*) FILTER (WHERE m_status = 'unanswered') AS unanswered,
       round(avg(m_latency) / 1e6, 3) AS avg_ms,
       round(approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY m_latency) / 1e6, 3) AS p50_ms,
       round(approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY m_latency) / 1e6, 3) AS p95_ms,
       round(max(m_latency) / 1e6, 3) AS max_ms
FROM (SELECT {inner},
             qname AS m_qname,
             CAST(qtype_name AS VARCHAR) AS m_qtype,
             CAST(rcode_name AS VARCHAR) AS m_rcode,
             CAST(status AS VARCHAR) AS m_status,
             latency_ns AS m_latency
      FROM dns) AS t
GROUP BY {keys}
ORDER BY queries DESC, {order_keys}{limit}"
    )
}

/// The kernel keeps 15 bytes of a task name (`TASK_COMM_LEN` 16 with the NUL): a longer name
/// given by the user (`systemd-resolved`) is cut to what the recorder saw (`systemd-resolve`).
fn comm_prefix(comm: &str) -> &str {
    let mut end = comm.len().min(15);
    while !comm.is_char_boundary(end) {
        end -= 1;
    }
    &comm[..end]
}

/// `dnsql timeline`: the selected process's DNS transactions in time order. A `comm` longer
/// than the kernel's 15 bytes is cut to 15.
pub fn timeline(sel: &Selector) -> String {
    let pred = match sel {
        Selector::Pid { pid, host: None } => format!("pid = {pid}"),
        Selector::Pid {
            pid,
            host: Some(host),
        } => format!("pid = {pid} AND hostname = {}", sql_str(host)),
        Selector::Comm(comm) => format!("comm = {}", sql_str(comm_prefix(comm))),
        Selector::Exe(exe) => format!("exe = {}", sql_str(exe)),
    };
    format!(
        "SELECT ts, hostname, pid, tid, comm, exe,
       qname, CAST(qtype_name AS VARCHAR) AS qtype, CAST(rcode_name AS VARCHAR) AS rcode, status,
       round(latency_ns / 1e6, 3) AS latency_ms,
       answer_strings(answers) AS answers,
       server_ip, server_port, transport, dns_id
FROM dns
WHERE {pred}
ORDER BY ts, hostname, pid, dns_id"
    )
}

/// Thresholds of [`exfil`], each with where it comes from. Rendered for `--help` by
/// [`EXFIL_THRESHOLDS_HELP`].
pub mod thresholds {
    /// More distinct names under one registered domain within one hour than this. Zeek package
    /// jbaggs/anomalous-dns, `scripts/an-dns-domain.zeek`: `domain_query_limit = 8` unique
    /// queries per domain per `query_period = 60min` (12 for recursive resolvers). We count per
    /// process, so 8 applies.
    pub const UNIQUE_NAMES_PER_HOUR: u64 = 8;
    /// Information content of one registered domain's names in a 15-minute bucket at least
    /// this many bytes. Elastic's DNS-tunnelling anomaly job (Kibana
    /// `security_packetbeat/ml/packetbeat_dns_tunneling.json`): `high_info_content` of
    /// `dns.question.name` over `dns_question_etld`, `bucket_span` 15m, results with `actual`
    /// below 350 skipped. ml-cpp computes info content as the zlib-compressed length of the
    /// bucket's distinct strings (our `info_content()`). Elastic then asks its model whether
    /// the value is unusual; we use the floor as a fixed threshold.
    pub const INFO_CONTENT_15M: u64 = 350;
    /// Characters of distinct names plus distinct answers above this. Splunk ESCU "Detection of
    /// DNS Tunnels" (`detections/network/detection_of_dns_tunnels.yml`): `sum(len(query)) +
    /// sum(len(answer))` over distinct values per source, `where length > 10000`. We sum per
    /// (registered domain, process) over the queried window.
    pub const NAME_ANSWER_CHARS: u64 = 10_000;
    /// Length-weighted mean Shannon entropy (bits/char) of the subdomain part of the distinct
    /// names at least this. Our choice: the sources above publish no entropy number. Weighted
    /// by length because tunnels mix short polls (`paeacg4a`, entropy 2.5) with long data names
    /// (entropy 4.3-5.5); a plain mean would be the polls'. Random strings average about 4.3
    /// bits/char at 32 base32 characters and more for base64 and 8-bit data; host-name words
    /// stay below 4 (`windowsupdate` 3.4, `upload` 2.6). Hex stays below 4 too: the alphabet
    /// signal covers it.
    pub const WEIGHTED_ENTROPY: f64 = 4.0;
    /// At least this share of the characters of the distinct names are in names whose subdomain
    /// looks encoded (`label_alphabet()` is hex, base32, base64 or 8bit). Our choice: a
    /// majority, weighted by length for the same reason as the entropy.
    pub const ENCODED_SHARE: f64 = 0.5;
    /// A name longer than this many octets. jbaggs/anomalous-dns
    /// `scripts/an-dns-oversized.zeek`: `oversize_query = 90`.
    pub const LONG_NAME: u64 = 90;
    /// A label at least this long. Our choice: tunnels fill labels towards the 63-octet limit
    /// (dns2tcp, iodine); host-name labels past 40 are rare (UUIDs are 36).
    pub const LONG_LABEL: u64 = 40;
    /// Any NULL (type 10) query. jbaggs/anomalous-dns `scripts/an-dns-query_type.zeek`:
    /// `query_type_blacklist = [10, 65399]` ("NULL is obsolete (RFC 883), used in iodine").
    pub const NULL_QUERIES: u64 = 1;
    /// At least this many TXT queries from one process. Elastic detection-rules hunt
    /// "Suspicious DNS TXT Record lookups by process"
    /// (`hunting/windows/queries/suspicious_dns_txt_record_lookups_by_process.toml`):
    /// `where occurrences >= 50` per process.
    pub const TXT_QUERIES: u64 = 50;
    /// At least this share of the queries are TXT, NULL or CNAME. Our choice: ordinary clients
    /// ask for A/AAAA (and HTTPS, MX, PTR); a majority of data-carrying types is the tunnel's mix.
    pub const RECORD_SHARE: f64 = 0.5;
    /// A TXT answer longer than this many characters. Splunk ESCU "Detect Long DNS TXT Record
    /// Response" (`detections/network/detect_long_dns_txt_record_response.yml`):
    /// `eval anslen=len(answer) | search anslen>100`.
    pub const LONG_TXT: u64 = 100;
    /// Responses larger than this many bytes are counted (`oversized_responses`), as evidence
    /// only: DNSSEC and EDNS answers pass it routinely. jbaggs/anomalous-dns
    /// `oversize_response = 544`.
    pub const OVERSIZED_RESPONSE: u64 = 544;
}

/// `--help` text for `dnsql exfil`: the signals, their thresholds and sources.
pub const EXFIL_THRESHOLDS_HELP: &str = "\
Ranks (registered domain, process) pairs by signs of DNS tunnelling or exfiltration. A process is
(host, comm, exe, container); its pids are listed. Names without a registered domain (single
labels, public suffixes) are not ranked. Only pairs with at least one signal are shown.

Signals, in three families:
  volume   - more than 8 distinct names in one hour (Zeek jbaggs/anomalous-dns domain_query_limit)
           - information content >= 350 bytes in a 15-minute bucket (Elastic ML DNS-tunnelling
             job: high_info_content over the eTLD+1, results below 350 skipped; info content is
             the zlib-compressed length of the distinct names)
           - more than 10000 characters of distinct names + answers (Splunk ESCU 'Detection of
             DNS Tunnels')
  encoding - length-weighted mean subdomain entropy >= 4.0 bits/char (our choice)
           - >= 50% of the names' characters in names whose subdomain looks hex, base32,
             base64 or 8-bit (our choice)
           - a name longer than 90 octets (anomalous-dns oversize_query)
           - a label of 40 or more characters (our choice; tunnels fill labels towards 63)
  records  - any NULL query (anomalous-dns query_type_blacklist: NULL is iodine's type)
           - >= 50 TXT queries (Elastic hunt 'Suspicious DNS TXT Record lookups by process')
           - >= 50% TXT/NULL/CNAME queries (our choice)
           - a TXT answer longer than 100 characters (Splunk ESCU 'Detect Long DNS TXT Record
             Response')

score = number of signals met; flagged = a volume signal AND an encoding or records signal.
Rows are ordered flagged first, then by score, distinct names and bytes.";

/// Key columns of a process, NULLs made comparable so that the CTEs can be joined.
const PROC_KEY: &str = "domain, hostname, comm, exe, container_id";

/// `a.c1 = b.c1 AND a.c2 = b.c2 …` for the comma-separated columns `cols`.
fn join_on(a: &str, b: &str, cols: &str) -> String {
    cols.split(", ")
        .map(|c| format!("{a}.{c} = {b}.{c}"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// `dnsql exfil`: ranks (registered domain, process) pairs by signs of DNS tunnelling or
/// exfiltration, with the evidence per row; see [`thresholds`] and [`EXFIL_THRESHOLDS_HELP`].
///
/// The names' features are computed once per distinct `qname`, so a name repeated a thousand
/// times counts once, on the name as sent (`question_name(query_raw)`: the `qname` column is
/// lower-cased, and mixed case is a base64 sign; `qname` when the raw query is missing).
pub fn exfil() -> String {
    use thresholds::*;
    let k = PROC_KEY;
    let volume = format!(
        "peak_names_per_hour > {UNIQUE_NAMES_PER_HOUR} \
         OR peak_info_content_15m >= {INFO_CONTENT_15M} \
         OR name_answer_chars > {NAME_ANSWER_CHARS}"
    );
    let encoding = format!(
        "weighted_entropy >= {WEIGHTED_ENTROPY:.1} \
         OR encoded_chars >= {ENCODED_SHARE:.2} * name_chars \
         OR long_names > 0 \
         OR long_label_names > 0"
    );
    let records = format!(
        "null_queries >= {NULL_QUERIES} \
         OR txt_queries >= {TXT_QUERIES} \
         OR (txt_queries + null_queries + cname_queries) >= {RECORD_SHARE:.2} * queries \
         OR long_txt_answers > 0"
    );
    let signals: [(String, String); 11] = [
        (
            format!("peak_names_per_hour > {UNIQUE_NAMES_PER_HOUR}"),
            format!("names/hour>{UNIQUE_NAMES_PER_HOUR}"),
        ),
        (
            format!("peak_info_content_15m >= {INFO_CONTENT_15M}"),
            format!("info-content>={INFO_CONTENT_15M}"),
        ),
        (
            format!("name_answer_chars > {NAME_ANSWER_CHARS}"),
            format!("chars>{NAME_ANSWER_CHARS}"),
        ),
        (
            format!("weighted_entropy >= {WEIGHTED_ENTROPY:.1}"),
            format!("entropy>={WEIGHTED_ENTROPY:.1}"),
        ),
        (
            format!("encoded_chars >= {ENCODED_SHARE:.2} * name_chars"),
            "encoded-alphabet".to_owned(),
        ),
        ("long_names > 0".to_owned(), format!("name>{LONG_NAME}")),
        (
            "long_label_names > 0".to_owned(),
            format!("label>={LONG_LABEL}"),
        ),
        ("null_queries > 0".to_owned(), "NULL-queries".to_owned()),
        (
            format!("txt_queries >= {TXT_QUERIES}"),
            format!("TXT>={TXT_QUERIES}"),
        ),
        (
            format!("(txt_queries + null_queries + cname_queries) >= {RECORD_SHARE:.2} * queries"),
            "TXT/NULL/CNAME-mix".to_owned(),
        ),
        (
            "long_txt_answers > 0".to_owned(),
            format!("TXT-answer>{LONG_TXT}"),
        ),
    ];
    let score = signals
        .iter()
        .map(|(cond, _)| format!("CASE WHEN {cond} THEN 1 ELSE 0 END"))
        .collect::<Vec<_>>()
        .join("\n         + ");
    let reasons = signals
        .iter()
        .map(|(cond, label)| format!("CASE WHEN {cond} THEN {} END", sql_str(label)))
        .collect::<Vec<_>>()
        .join(",\n                   ");
    let on_n = join_on("t", "n", k);
    let on_h = join_on("t", "h", k);
    let on_q = join_on("t", "q", k);
    let on_a = join_on("t", "a", k);
    format!(
        "WITH k AS (
  SELECT coalesce(registered_domain, registered_domain(qname)) AS domain,
         coalesce(CAST(hostname AS VARCHAR), '') AS hostname,
         coalesce(CAST(comm AS VARCHAR), '') AS comm,
         coalesce(CAST(exe AS VARCHAR), '') AS exe,
         coalesce(CAST(container_id AS VARCHAR), '') AS container_id,
         pid, ts, qname,
         coalesce(question_name(query_raw), qname) AS sent_name,
         CAST(qtype_name AS VARCHAR) AS qtype,
         CAST(coalesce(query_size, 0) AS BIGINT) AS qbytes,
         CAST(coalesce(response_size, 0) AS BIGINT) AS rbytes,
         answers
  FROM dns
  WHERE qname IS NOT NULL AND status <> 'unsolicited'
    AND coalesce(registered_domain, registered_domain(qname)) IS NOT NULL
),
distinct_names AS (
  SELECT {k}, qname, max(sent_name) AS sent_name
  FROM k
  GROUP BY {k}, qname
),
names AS (
  SELECT {k}, sent_name,
         label_entropy(sent_name) AS entropy,
         label_alphabet(sent_name) AS alphabet,
         name_length(sent_name) AS name_len,
         max_label_len(sent_name) AS label_len
  FROM distinct_names
),
name_stats AS (
  SELECT {k},
         count(*) AS unique_names,
         avg(entropy) AS avg_entropy,
         sum(entropy * name_len) / nullif(sum(name_len), 0) AS weighted_entropy,
         max(entropy) AS max_entropy,
         count(*) FILTER (WHERE alphabet <> 'dns') AS encoded_names,
         coalesce(sum(name_len) FILTER (WHERE alphabet <> 'dns'), 0) AS encoded_chars,
         array_sort(array_agg(DISTINCT alphabet) FILTER (WHERE alphabet <> 'dns')) AS alphabets,
         avg(name_len) AS avg_name_len,
         max(name_len) AS max_name_len,
         max(label_len) AS max_label_len,
         count(*) FILTER (WHERE name_len > {LONG_NAME}) AS long_names,
         count(*) FILTER (WHERE label_len >= {LONG_LABEL}) AS long_label_names,
         sum(name_len) AS name_chars
  FROM names
  GROUP BY {k}
),
-- Distinct names per hour as DISTINCT rows, then counted: a count(DISTINCT) per group keeps
-- a hash set per (key, hour) group in DataFusion (~36 KiB each; 18 GB at 5M rows).
hourly AS (
  SELECT {k}, max(n) AS peak_names_per_hour
  FROM (SELECT {k}, hour, count(*) AS n
        FROM (SELECT DISTINCT {k}, date_bin(INTERVAL '1 hour', ts) AS hour, qname FROM k) AS d
        GROUP BY {k}, hour) AS h
  GROUP BY {k}
),
quarterly AS (
  SELECT {k}, max(ic) AS peak_info_content_15m
  FROM (SELECT {k}, info_content(array_agg(qname)) AS ic
        FROM k GROUP BY {k}, date_bin(INTERVAL '15 minutes', ts)) AS q
  GROUP BY {k}
),
answer_stats AS (
  SELECT {k},
         sum(character_length(a) - strpos(a, ' ')) AS answer_chars,
         count(*) FILTER (WHERE starts_with(a, 'TXT ')
                          AND character_length(a) - 4 > {LONG_TXT}) AS long_txt_answers
  FROM (SELECT DISTINCT {k}, unnest(ans) AS a
        FROM (SELECT {k}, answer_strings(answers) AS ans FROM k) AS u) AS d
  GROUP BY {k}
),
totals AS (
  SELECT {k},
         count(*) AS queries,
         array_sort(array_agg(DISTINCT pid) FILTER (WHERE pid IS NOT NULL)) AS pids,
         count(*) FILTER (WHERE qtype = 'TXT') AS txt_queries,
         count(*) FILTER (WHERE qtype = 'NULL') AS null_queries,
         count(*) FILTER (WHERE qtype = 'CNAME') AS cname_queries,
         count(*) FILTER (WHERE rbytes > {OVERSIZED_RESPONSE}) AS oversized_responses,
         sum(qbytes) AS bytes_out,
         sum(rbytes) AS bytes_in,
         min(ts) AS first_seen,
         max(ts) AS last_seen
  FROM k
  GROUP BY {k}
),
ev AS (
  SELECT t.*,
         n.unique_names, n.avg_entropy, n.weighted_entropy, n.max_entropy,
         n.encoded_names, n.encoded_chars, n.name_chars, n.alphabets,
         n.avg_name_len, n.max_name_len, n.max_label_len, n.long_names, n.long_label_names,
         h.peak_names_per_hour, q.peak_info_content_15m,
         n.name_chars + coalesce(a.answer_chars, 0) AS name_answer_chars,
         coalesce(a.long_txt_answers, 0) AS long_txt_answers
  FROM totals t
  JOIN name_stats n ON {on_n}
  JOIN hourly h ON {on_h}
  JOIN quarterly q ON {on_q}
  LEFT JOIN answer_stats a ON {on_a}
),
scored AS (
  SELECT ev.*,
         {score} AS score,
         concat_ws(', ', {reasons}) AS reasons,
         (({volume}) AND (({encoding}) OR ({records}))) AS flagged
  FROM ev
)
SELECT domain,
       nullif(hostname, '') AS hostname,
       nullif(comm, '') AS comm,
       nullif(exe, '') AS exe,
       nullif(container_id, '') AS container_id,
       pids,
       flagged,
       score,
       reasons,
       queries,
       unique_names,
       peak_names_per_hour,
       peak_info_content_15m,
       round(avg_entropy, 2) AS avg_entropy,
       round(weighted_entropy, 2) AS weighted_entropy,
       round(max_entropy, 2) AS max_entropy,
       encoded_names,
       round(100.0 * encoded_chars / nullif(name_chars, 0), 1) AS encoded_chars_pct,
       alphabets,
       round(avg_name_len, 1) AS avg_name_len,
       max_name_len,
       max_label_len,
       long_names,
       long_label_names,
       txt_queries,
       null_queries,
       cname_queries,
       round(100.0 * (txt_queries + null_queries + cname_queries) / queries, 1) AS txt_null_cname_pct,
       long_txt_answers,
       oversized_responses,
       name_answer_chars,
       bytes_out,
       bytes_in,
       first_seen,
       last_seen
FROM scored
WHERE score > 0
ORDER BY flagged DESC, score DESC, unique_names DESC, bytes_out + bytes_in DESC, domain, hostname"
    )
}

/// Failures counted by [`nxdomain`]'s `excessive` column: more than this many failed
/// responses for one process. Splunk ESCU "Excessive DNS Failures"
/// (`detections/network/excessive_dns_failures.yml`): `where count>50` failed responses per
/// source and reply code.
pub const EXCESSIVE_FAILURES: u64 = 50;

/// `dnsql nxdomain`: processes with many failing names, per registered domain. A failure is an
/// answer whose rcode is not NOERROR (NXDOMAIN, SERVFAIL, REFUSED, ...), as in Splunk's
/// "Excessive DNS Failures". Per row: the failing names, NXDOMAIN/SERVFAIL/other counts, the
/// busiest minute (a DGA burst tries many names at once), and the process totals (failing
/// domains and names, `excessive` when more than [`EXCESSIVE_FAILURES`] failures). Processes
/// with the most distinct failing names come first.
pub fn nxdomain() -> String {
    let k = PROC_KEY;
    let p = "hostname, comm, exe, container_id";
    let on_b = join_on("d", "b", k);
    let dp = "d.hostname, d.comm, d.exe, d.container_id";
    format!(
        "WITH f AS (
  SELECT coalesce(registered_domain, registered_domain(qname), qname) AS domain,
         coalesce(CAST(hostname AS VARCHAR), '') AS hostname,
         coalesce(CAST(comm AS VARCHAR), '') AS comm,
         coalesce(CAST(exe AS VARCHAR), '') AS exe,
         coalesce(CAST(container_id AS VARCHAR), '') AS container_id,
         pid, ts, qname,
         CAST(rcode_name AS VARCHAR) AS rcode,
         coalesce(CAST(rcode_name AS VARCHAR), '') NOT IN ('NOERROR', '') AS failed
  FROM dns
  WHERE qname IS NOT NULL AND status = 'answered'
),
per_domain AS (
  SELECT {k},
         count(*) AS responses,
         count(*) FILTER (WHERE failed) AS failures,
         count(*) FILTER (WHERE rcode = 'NXDOMAIN') AS nxdomain,
         count(*) FILTER (WHERE rcode = 'SERVFAIL') AS servfail,
         count(*) FILTER (WHERE failed AND rcode NOT IN ('NXDOMAIN', 'SERVFAIL')) AS other_failures,
         count(DISTINCT qname) FILTER (WHERE failed) AS failing_names,
         array_sort(array_agg(DISTINCT qname) FILTER (WHERE failed)) AS names,
         array_sort(array_agg(DISTINCT pid) FILTER (WHERE pid IS NOT NULL AND failed)) AS pids,
         min(ts) FILTER (WHERE failed) AS first_failure,
         max(ts) FILTER (WHERE failed) AS last_failure
  FROM f
  GROUP BY {k}
  HAVING count(*) FILTER (WHERE failed) > 0
),
bursts AS (
  SELECT {k}, max(n) AS peak_failures_per_minute
  FROM (SELECT {k}, count(*) AS n FROM f WHERE failed
        GROUP BY {k}, date_bin(INTERVAL '1 minute', ts)) AS b
  GROUP BY {k}
),
joined AS (
  SELECT d.*, b.peak_failures_per_minute,
         count(*) OVER (PARTITION BY {dp}) AS process_failing_domains,
         sum(d.failing_names) OVER (PARTITION BY {dp}) AS process_failing_names,
         sum(d.failures) OVER (PARTITION BY {dp}) AS process_failures
  FROM per_domain d JOIN bursts b ON {on_b}
)
SELECT nullif(hostname, '') AS hostname,
       nullif(comm, '') AS comm,
       nullif(exe, '') AS exe,
       nullif(container_id, '') AS container_id,
       pids,
       domain,
       failing_names,
       failures,
       nxdomain,
       servfail,
       other_failures,
       responses,
       round(100.0 * failures / responses, 1) AS failure_pct,
       peak_failures_per_minute,
       process_failing_domains,
       process_failing_names,
       process_failures,
       process_failures > {EXCESSIVE_FAILURES} AS excessive,
       first_failure,
       last_failure,
       names
FROM joined
ORDER BY process_failing_names DESC, {p}, failing_names DESC, failures DESC, domain"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{column, count, fixtures, fixtures_with, process_fixture, query, rows};

    #[test]
    fn literals_are_escaped() {
        assert_eq!(sql_str("example.com"), "'example.com'");
        assert_eq!(sql_str("o'reilly"), "'o''reilly'");
        assert_eq!(sql_str("x' OR '1'='1"), "'x'' OR ''1''=''1'");
        assert_eq!(sql_str(r"a\.b"), "concat('a', chr(92), '.b')");
        assert_eq!(sql_str(r"\"), "concat('', chr(92), '')");
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize_name("WWW.Example.COM."), "www.example.com");
        assert_eq!(normalize_name(" example.com "), "example.com");
        assert_eq!(normalize_name("."), ".");
        assert_eq!(normalize_name(r"a\."), r"a\.");
    }

    #[test]
    fn who_uses_the_registered_domain_and_escapes() {
        let sql = who("Upload.Wikimedia.org.");
        assert!(sql.contains("registered_domain = 'wikimedia.org'"), "{sql}");
        assert!(sql.contains("qname = 'upload.wikimedia.org'"), "{sql}");
        assert!(
            sql.contains("ends_with(qname, '.upload.wikimedia.org')"),
            "{sql}"
        );
        let sql = who("x'; DROP TABLE dns; --");
        assert!(sql.contains("'x''; drop table dns; --'"), "{sql}");
        // A public suffix has no registered domain: match by name only.
        let sql = who("co.uk");
        assert!(!sql.contains("registered_domain ="), "{sql}");
    }

    #[test]
    fn timeline_selectors() {
        let sql = timeline(&Selector::Pid {
            pid: 42,
            host: Some("h'1".into()),
        });
        assert!(sql.contains("pid = 42 AND hostname = 'h''1'"), "{sql}");
        assert!(sql.contains("ORDER BY ts"), "{sql}");
        assert!(timeline(&Selector::Comm("curl".into())).contains("comm = 'curl'"));
        assert!(
            timeline(&Selector::Comm("systemd-resolved".into()))
                .contains("comm = 'systemd-resolve'")
        );
        assert!(timeline(&Selector::Exe("/usr/bin/dig".into())).contains("exe = '/usr/bin/dig'"));
    }

    #[tokio::test]
    async fn who_finds_wikimedia_on_host_a() {
        let ctx = fixtures().await;
        // The wikipedia.pcap browser resolves Wikimedia's names (upload., meta.), not
        // wikipedia.org itself.
        assert!(rows(&ctx, &who("wikipedia.org")).await.is_empty());
        let t = query(&ctx, &who("Wikimedia.ORG.")).await;
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.get(0, "hostname"), Some("host-a"));
        let direct = count(
            &ctx,
            "SELECT count(*) FROM dns WHERE qname = 'wikimedia.org' OR qname LIKE '%.wikimedia.org'",
        )
        .await;
        assert_eq!(direct, 10);
        assert_eq!(t.get(0, "queries"), Some("10"));
        assert_eq!(t.get(0, "names"), Some("2"));
        assert_eq!(t.get(0, "answered"), Some("10"));
        assert_eq!(
            t.get(0, "queried_names"),
            Some("[meta.wikimedia.org, upload.wikimedia.org]")
        );
        assert_eq!(t.get(0, "qtypes"), Some("[A, AAAA]"));
        assert_eq!(t.get(0, "first_seen"), Some("2011-03-18T19:06:08.853899Z"));
        let answers = t.get(0, "answers_received").expect("answers");
        assert!(answers.contains("A 208.80.152.2"), "{answers}");
        assert!(
            answers.contains("CNAME upload.pmtpa.wikimedia.org"),
            "{answers}"
        );
        // A name below: only upload.
        let t = query(&ctx, &who("upload.wikimedia.org")).await;
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.get(0, "queries"), Some("8"));
    }

    #[tokio::test]
    async fn who_sees_names_the_recorder_left_without_registered_domain() {
        let ctx = fixtures().await;
        // dns2tcp's `=auth`/`=connect` names are not host names: their registered_domain
        // column is NULL, yet they are under tunnel.com.
        let nulls = count(
            &ctx,
            "SELECT count(*) FROM dns WHERE registered_domain IS NULL AND qname LIKE '%.tunnel.com'",
        )
        .await;
        assert!(nulls > 0);
        let t = query(&ctx, &who("tunnel.com")).await;
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.get(0, "hostname"), Some("host-b"));
        assert_eq!(t.get(0, "queries"), Some("81"));
    }

    #[tokio::test]
    async fn who_with_quotes_and_backslashes_is_safe() {
        let ctx = fixtures().await;
        for name in ["x'; DROP TABLE dns; --", r"a\.b.example.com", r"\", "'"] {
            assert!(rows(&ctx, &who(name)).await.is_empty(), "{name}");
        }
    }

    #[tokio::test]
    async fn top_rcode_counts_equal_a_direct_count() {
        let ctx = fixtures().await;
        let pairs = |r: Vec<Vec<Option<String>>>| {
            let mut v: Vec<(Option<String>, Option<String>)> = r
                .into_iter()
                .map(|r| (r[0].clone(), r[1].clone()))
                .collect();
            v.sort();
            v
        };
        let got = pairs(rows(&ctx, &top(TopBy::Rcode, 0)).await);
        let want = pairs(
            rows(
                &ctx,
                "SELECT CAST(rcode_name AS VARCHAR), count(*) FROM dns GROUP BY rcode_name",
            )
            .await,
        );
        assert_eq!(got, want);
        assert!(
            got.contains(&(Some("NXDOMAIN".into()), Some("26".into()))),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn top_columns_and_limits() {
        let ctx = fixtures().await;
        // By registered domain: the iodine tunnel is the busiest.
        let t = query(&ctx, &top(TopBy::RegisteredDomain, 1)).await;
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.get(0, "registered_domain"), Some("pirate.sea"));
        assert_eq!(t.get(0, "queries"), Some("222"));
        // By qtype: the A row's `a` column is its count, which a direct count confirms.
        let t = query(&ctx, &top(TopBy::Qtype, 3)).await;
        assert_eq!(t.rows.len(), 3);
        let a = t.find("qtype_name", "A").expect("A row");
        assert_eq!(t.get(a, "a"), t.get(a, "queries"));
        let direct_a = count(&ctx, "SELECT count(*) FROM dns WHERE qtype_name = 'A'").await;
        assert_eq!(t.get(a, "queries"), Some(direct_a.to_string().as_str()));
        // Per process (here: per host, the captures carry no pids): counts and latency.
        let t = query(&ctx, &top(TopBy::Process, 10)).await;
        let host_a = t.find("hostname", "host-a").expect("host-a");
        assert_eq!(t.get(host_a, "queries"), Some("132"));
        assert_eq!(t.get(host_a, "nxdomain"), Some("5"));
        let direct_avg = column(
            &ctx,
            "SELECT round(avg(latency_ns) / 1e6, 3) FROM dns WHERE hostname = 'host-a'",
        )
        .await;
        assert_eq!(t.get(host_a, "avg_ms"), direct_avg[0].as_deref());
        // Every grouping plans and runs.
        for by in [
            TopBy::Process,
            TopBy::Exe,
            TopBy::Domain,
            TopBy::RegisteredDomain,
            TopBy::Rcode,
            TopBy::Qtype,
            TopBy::Server,
            TopBy::Container,
        ] {
            let r = rows(&ctx, &top(by, 5)).await;
            assert!(!r.is_empty() && r.len() <= 5, "{by:?}");
        }
    }

    #[tokio::test]
    async fn timeline_follows_one_process_in_time_order() {
        let (_dir, ctx) = process_fixture().await;
        let t = query(
            &ctx,
            &timeline(&Selector::Pid {
                pid: 4242,
                host: Some("h1".into()),
            }),
        )
        .await;
        assert_eq!(t.rows.len(), 30);
        assert!((0..30).all(|r| t.get(r, "comm") == Some("dnscat")));
        let ts: Vec<&str> = (0..30).map(|r| t.get(r, "ts").expect("ts")).collect();
        // Written in reverse, read back in order.
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
        // The same pid on another host.
        let r = rows(
            &ctx,
            &timeline(&Selector::Pid {
                pid: 4242,
                host: None,
            }),
        )
        .await;
        assert_eq!(r.len(), 31);
        let r = rows(&ctx, &timeline(&Selector::Comm("sshd".into()))).await;
        assert_eq!(r.len(), 1);
        let t = query(
            &ctx,
            &timeline(&Selector::Exe("/usr/lib/firefox/firefox".into())),
        )
        .await;
        assert_eq!(t.rows.len(), 73);
        assert_eq!(t.get(72, "qname"), Some("www.example.com"));
        assert_eq!(t.get(72, "answers"), Some("[A 93.184.216.34]"));
        assert!(
            rows(&ctx, &timeline(&Selector::Comm("x' OR '1'='1".into())))
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn exfil_ranks_and_flags_the_tunnels_only() {
        let ctx = fixtures().await;
        let t = query(&ctx, &exfil()).await;
        let top2: Vec<(Option<&str>, Option<&str>, Option<&str>)> = (0..2)
            .map(|r| {
                (
                    t.get(r, "domain"),
                    t.get(r, "hostname"),
                    t.get(r, "flagged"),
                )
            })
            .collect();
        assert!(
            top2.contains(&(Some("pirate.sea"), Some("host-b"), Some("true"))),
            "{top2:?}"
        );
        assert!(
            top2.contains(&(Some("tunnel.com"), Some("host-b"), Some("true"))),
            "{top2:?}"
        );
        // Nothing else is flagged: not host-a's browsing, resolver, reverse lookups, CDNs,
        // LLMNR or mDNS, not host-c's DNSSEC, EDNS, TCP, mDNS, update or malformed traffic.
        for r in 2..t.rows.len() {
            assert_eq!(t.get(r, "flagged"), Some("false"), "{:?}", t.rows[r]);
        }
        // The evidence is the real signals.
        let iodine = t.find("domain", "pirate.sea").expect("iodine");
        assert_eq!(t.get(iodine, "unique_names"), Some("222"));
        assert_eq!(t.get(iodine, "null_queries"), Some("222"));
        assert!(t.get(iodine, "alphabets").unwrap_or("").contains("8bit"));
        assert!(
            t.get(iodine, "reasons")
                .unwrap_or("")
                .contains("NULL-queries")
        );
        let dns2tcp = t.find("domain", "tunnel.com").expect("dns2tcp");
        assert_eq!(t.get(dns2tcp, "unique_names"), Some("81"));
        assert_eq!(t.get(dns2tcp, "txt_queries"), Some("81"));
        assert!(t.get(dns2tcp, "alphabets").unwrap_or("").contains("base64"));
        assert!(
            t.get(dns2tcp, "reasons")
                .unwrap_or("")
                .contains("TXT-answer>100")
        );
        for r in [iodine, dns2tcp] {
            let ic: u64 = t
                .get(r, "peak_info_content_15m")
                .expect("ic")
                .parse()
                .expect("int");
            assert!(ic >= thresholds::INFO_CONTENT_15M);
            let names: u64 = t
                .get(r, "peak_names_per_hour")
                .expect("n")
                .parse()
                .expect("int");
            assert!(names > thresholds::UNIQUE_NAMES_PER_HOUR);
        }
    }

    #[tokio::test]
    async fn exfil_attributes_to_processes_and_spares_cdn_names() {
        let (_dir, ctx) = process_fixture().await;
        let t = query(&ctx, &exfil()).await;
        assert_eq!(t.get(0, "domain"), Some("evil.example"));
        assert_eq!(t.get(0, "comm"), Some("dnscat"));
        assert_eq!(t.get(0, "pids"), Some("[4242]"));
        assert_eq!(t.get(0, "flagged"), Some("true"));
        assert_eq!(t.get(0, "alphabets"), Some("[hex]"));
        // Many distinct CDN names (sequential, or random 13-character ids) are volume only.
        for r in 1..t.rows.len() {
            assert_eq!(t.get(r, "flagged"), Some("false"), "{:?}", t.rows[r]);
        }
        assert!(t.find("domain", "cloudfront.net").is_some());
    }

    #[tokio::test]
    async fn nxdomain_shows_search_suffix_retries_and_bursts() {
        let ctx = fixtures().await;
        let t = query(&ctx, &nxdomain()).await;
        // wikipedia.pcap's search-suffix retries.
        let uiuc = t.find("domain", "uiuc.edu").expect("uiuc.edu row");
        assert_eq!(t.get(uiuc, "hostname"), Some("host-a"));
        let direct = count(
            &ctx,
            "SELECT count(*) FROM dns WHERE hostname = 'host-a' AND rcode_name = 'NXDOMAIN' \
             AND qname LIKE '%.uiuc.edu'",
        )
        .await;
        assert_eq!(direct, 4);
        assert_eq!(t.get(uiuc, "nxdomain"), Some("4"));
        assert_eq!(
            t.get(uiuc, "names"),
            Some("[upload.wikimedia.org.ncsa.uiuc.edu]")
        );
        // The pipelined 0..19.google.com NXDOMAINs: 20 names in one minute, ranked first.
        assert_eq!(t.get(0, "hostname"), Some("host-c"));
        assert_eq!(t.get(0, "domain"), Some("google.com"));
        assert_eq!(t.get(0, "failing_names"), Some("20"));
        assert_eq!(t.get(0, "peak_failures_per_minute"), Some("20"));
        assert_eq!(t.get(0, "excessive"), Some("false"));
    }

    #[tokio::test]
    async fn nxdomain_per_process() {
        let (_dir, ctx) = process_fixture().await;
        let t = query(&ctx, &nxdomain()).await;
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.get(0, "comm"), Some("firefox"));
        assert_eq!(t.get(0, "pids"), Some("[100]"));
        assert_eq!(t.get(0, "domain"), Some("example.org"));
        assert_eq!(t.get(0, "failing_names"), Some("12"));
        assert_eq!(t.get(0, "peak_failures_per_minute"), Some("12"));
    }

    #[tokio::test]
    async fn recipes_run_on_the_inferred_schema_too() {
        // `fixtures()` declares the schema from crates/schema, as the binary does; files read
        // with an inferred schema come as Utf8View/BinaryView and must work the same.
        let ctx = fixtures_with(false).await;
        for sql in [
            who("google.com"),
            top(TopBy::Domain, 3),
            timeline(&Selector::Comm("x".into())),
            nxdomain(),
        ] {
            let _ = rows(&ctx, &sql).await;
        }
        let t = query(&ctx, &exfil()).await;
        assert_eq!(t.get(0, "flagged"), Some("true"));
        assert_eq!(t.get(1, "flagged"), Some("true"));
        assert_eq!(t.get(2, "flagged"), Some("false"));
    }
}
