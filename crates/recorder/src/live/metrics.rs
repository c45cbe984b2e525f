//! The Prometheus exporter of `dnsledger record --metrics-listen ADDR`.
//!
//! Two groups of series:
//!
//! - DNSWatch's counters, with its names and its one label, so that dashboards and alerts built
//!   on DNSWatch keep working: `a_queries`, `aaaa_queries`, `ptr_queries`, `noerror_responses`,
//!   `nxdomain_responses`, `servfail_responses`, label `process` (the comm), plus the
//!   aggregate `process="all"`. The first [`DEFAULT_MAX_PROCESSES`] (or
//!   `--metrics-max-processes`) distinct comms get a series of their own; later ones are
//!   counted under `process="other"`, so the number of series stays bounded whatever runs on
//!   the host.
//! - `dnsledger_*`: transactions by qtype/rcode/transport, unanswered queries, latency,
//!   events dropped by reason, ring buffer fill, segments sealed, bytes written, spool lag,
//!   last seal time, build info.
//!
//! The writer thread updates the counters from each finished transaction ([`Metrics::observe`]:
//! a map lookup by `&str` and a few atomic adds, no allocation once a comm has been seen);
//! the HTTP thread ([`serve`]) encodes them on each scrape.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dnsledger_schema::Transaction;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::capture::abi::COUNTER_NAMES;
use crate::capture::bpf::KernelCounters;
use crate::store::segment::SegmentStats;
use crate::store::ship::ShipCounters;

/// Distinct `process` label values of the DNSWatch counters, by default (`all` and `other`
/// come on top).
/// `process` label of transactions with no known process (DNSWatch's `UNK`).
pub const UNKNOWN_PROCESS: &str = "UNK";
pub const DEFAULT_MAX_PROCESSES: usize = 100;

/// DNSWatch's port for its exporter; `--metrics-listen` has no default (off), this is what the
/// documentation suggests.
pub const DNSWATCH_PORT: u16 = 9422;

/// Query types with a `qtype` label value of their own; the rest are `other`.
const QTYPES: [&str; 16] = [
    "A", "AAAA", "PTR", "CNAME", "MX", "TXT", "SRV", "NS", "SOA", "HTTPS", "SVCB", "ANY", "CAA",
    "DS", "DNSKEY", "NAPTR",
];
/// Response codes with an `rcode` label value of their own; the rest are `other`.
const RCODES: [&str; 10] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "NOTAUTH",
    "NOTZONE", "BADVERS",
];

fn bounded(name: Option<&str>, known: &[&'static str]) -> &'static str {
    match name {
        None => "none",
        Some(n) => known.iter().find(|k| **k == n).copied().unwrap_or("other"),
    }
}

/// Which transactions a DNSWatch counter counts.
#[derive(Clone, Copy)]
enum Counts {
    /// Queries seen (answered or not) of this qtype.
    Queries(u16),
    /// Responses seen (paired or unsolicited) with this rcode.
    Responses(u16),
}

/// DNSWatch's counters, in the order they are printed, with what each counts.
const DNSWATCH: [(&str, Counts); 6] = [
    ("a_queries", Counts::Queries(1)),
    ("aaaa_queries", Counts::Queries(28)),
    ("ptr_queries", Counts::Queries(12)),
    ("noerror_responses", Counts::Responses(0)),
    ("nxdomain_responses", Counts::Responses(3)),
    ("servfail_responses", Counts::Responses(2)),
];

/// One set of DNSWatch counters (one `process` label value), indexed like [`DNSWATCH`].
#[derive(Debug, Default)]
pub struct DnswatchCounters([AtomicU64; DNSWATCH.len()]);

impl DnswatchCounters {
    fn values(&self) -> [u64; DNSWATCH.len()] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }

    fn add(&self, tx: &Transaction) {
        // An unsolicited response has no query; an unanswered query has no response.
        let query = tx.status != "unsolicited";
        let response = tx.status != "unanswered";
        for ((_, counts), c) in DNSWATCH.iter().zip(&self.0) {
            let hit = match *counts {
                Counts::Queries(t) => query && tx.qtype == Some(t),
                Counts::Responses(r) => response && tx.rcode == Some(r),
            };
            if hit {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The `process` label values seen so far, shared with the HTTP thread.
type ProcessList = Arc<Mutex<Vec<(String, Arc<DnswatchCounters>)>>>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TxLabels {
    qtype: &'static str,
    rcode: &'static str,
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The writer thread's side: every counter, updated from transactions and from the capture's
/// totals.
pub struct Metrics {
    max_processes: usize,
    all: Arc<DnswatchCounters>,
    other: Arc<DnswatchCounters>,
    by_comm: HashMap<String, Arc<DnswatchCounters>>,
    shared: ProcessList,
    transactions: Family<TxLabels, Counter>,
    unanswered: Counter,
    latency: Histogram,
    dropped: Family<ReasonLabels, Counter>,
    ring_fill: Gauge<f64, AtomicU64>,
    segments_sealed: Counter,
    bytes_written: Counter,
    spool_lag: Gauge<f64, AtomicU64>,
    last_seal: Gauge<f64, AtomicU64>,
    segments_shipped: Counter,
    segments_ship_failed: Counter,
    segment_bytes_shipped: Counter,
    segments_ship_pending: Gauge,
    ship_lag: Gauge,
    lake_objects_removed: Counter,
    lake_cleanups_pending: Gauge,
}

/// The HTTP thread's side: what a scrape prints.
pub struct Exposition {
    registry: Registry,
    all: Arc<DnswatchCounters>,
    other: Arc<DnswatchCounters>,
    shared: ProcessList,
}

/// Drop reasons besides the kernel's counters.
const USER_DROP_REASONS: [&str; 2] = ["user_queue_full", "rows_lost"];

impl Metrics {
    /// The counters and what exposes them.
    pub fn new(max_processes: usize) -> (Metrics, Exposition) {
        let mut registry = Registry::default();
        let m = Metrics {
            max_processes,
            all: Arc::default(),
            other: Arc::default(),
            by_comm: HashMap::new(),
            shared: Arc::default(),
            transactions: Family::default(),
            unanswered: Counter::default(),
            // 50 µs .. ~3.3 s: loopback caches answer in tens of µs, far resolvers in 100s of ms.
            latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 17)),
            dropped: Family::default(),
            ring_fill: Gauge::default(),
            segments_sealed: Counter::default(),
            bytes_written: Counter::default(),
            spool_lag: Gauge::default(),
            last_seal: Gauge::default(),
            segments_shipped: Counter::default(),
            segments_ship_failed: Counter::default(),
            segment_bytes_shipped: Counter::default(),
            segments_ship_pending: Gauge::default(),
            ship_lag: Gauge::default(),
            lake_objects_removed: Counter::default(),
            lake_cleanups_pending: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("dnsledger");
        r.register(
            "transactions",
            "DNS transactions recorded, by query type, response code (none: unanswered) and transport",
            m.transactions.clone(),
        );
        r.register(
            "unanswered",
            "Queries that got no response within --pair-timeout",
            m.unanswered.clone(),
        );
        r.register(
            "latency_seconds",
            "Time from query to response of answered transactions",
            m.latency.clone(),
        );
        r.register(
            "events_dropped",
            "Events lost, by reason: the kernel's (ring buffer full, copy failed, ...), \
             user_queue_full (writer behind), rows_lost (rows that could not be written)",
            m.dropped.clone(),
        );
        r.register(
            "ringbuf_fill_ratio",
            "Share of the kernel ring buffer holding unread events (sampled every 500 ms)",
            m.ring_fill.clone(),
        );
        r.register(
            "segments_sealed",
            "Segments sealed by this run",
            m.segments_sealed.clone(),
        );
        r.register(
            "segment_bytes_written",
            "Bytes of the segments sealed by this run",
            m.bytes_written.clone(),
        );
        r.register(
            "spool_lag_seconds",
            "How far behind now the rows handed to the segments are (reorder slack plus \
             queries still waiting for their response)",
            m.spool_lag.clone(),
        );
        r.register(
            "last_seal_timestamp_seconds",
            "Unix time of the last segment seal (0: none yet)",
            m.last_seal.clone(),
        );
        r.register(
            "segments_shipped",
            "Segments confirmed in the data lake by this run (--ship-to; already there included)",
            m.segments_shipped.clone(),
        );
        r.register(
            "segments_ship_failed",
            "Segment uploads that failed after their retries, or met different bytes at their key",
            m.segments_ship_failed.clone(),
        );
        r.register(
            "segment_bytes_shipped",
            "Bytes of the segments uploaded by this run",
            m.segment_bytes_shipped.clone(),
        );
        r.register(
            "segments_ship_pending",
            "Sealed segments not in the data lake yet (after the last shipping pass)",
            m.segments_ship_pending.clone(),
        );
        r.register(
            "ship_lag_seconds",
            "Age of the oldest sealed segment not in the data lake yet (0: none)",
            m.ship_lag.clone(),
        );
        r.register(
            "lake_objects_removed",
            "Lake objects deleted by this run because a shipped compacted segment replaces them",
            m.lake_objects_removed.clone(),
        );
        r.register(
            "lake_cleanups_pending",
            "Shipped compacted segments whose replaced lake objects are not deleted yet \
             (other engines count those rows twice meanwhile)",
            m.lake_cleanups_pending.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("build_info", "The recorder's version (value 1)", build);
        for reason in COUNTER_NAMES
            .iter()
            .filter(|n| **n != "packets_sent")
            .chain(USER_DROP_REASONS.iter())
        {
            // Every reason shows up from the start, at 0.
            let _ = m.dropped.get_or_create(&ReasonLabels { reason });
        }
        let e = Exposition {
            registry,
            all: Arc::clone(&m.all),
            other: Arc::clone(&m.other),
            shared: Arc::clone(&m.shared),
        };
        (m, e)
    }

    fn counters_for(&mut self, comm: Option<&str>) -> &DnswatchCounters {
        // DNSWatch's name for traffic of no known process, so alerts on it keep working.
        let comm = comm.unwrap_or(UNKNOWN_PROCESS);
        if !self.by_comm.contains_key(comm) {
            if self.by_comm.len() >= self.max_processes {
                return &self.other;
            }
            let c = Arc::new(DnswatchCounters::default());
            self.by_comm.insert(comm.to_string(), Arc::clone(&c));
            if let Ok(mut list) = self.shared.lock() {
                list.push((comm.to_string(), c));
            }
        }
        self.by_comm.get(comm).map_or(&self.other, |c| c)
    }

    /// Counts finished transactions.
    pub fn observe(&mut self, rows: &[Transaction]) {
        for tx in rows {
            // --serve-side: a local server's side is the same traffic seen from the other end
            // (or a remote client's); the counters count the host's own lookups.
            if tx.side == Some(dnsledger_schema::side::SERVER) {
                continue;
            }
            self.all.add(tx);
            self.counters_for(tx.comm.as_deref()).add(tx);
            let rcode = if tx.status == "unanswered" {
                "none"
            } else {
                bounded(tx.rcode_name.as_deref(), &RCODES)
            };
            self.transactions
                .get_or_create(&TxLabels {
                    qtype: bounded(tx.qtype_name.as_deref(), &QTYPES),
                    rcode,
                    transport: tx.transport,
                })
                .inc();
            if tx.status == "unanswered" {
                self.unanswered.inc();
            }
            if let Some(ns) = tx.latency_ns.filter(|_| tx.status == "answered") {
                self.latency.observe(ns as f64 / 1e9);
            }
        }
    }

    /// Brings the capture's and the writer's totals up to date (on the writer's tick).
    pub fn update_totals(&self, t: &Totals<'_>) {
        let raise = |c: &Counter, total: u64| {
            let now = c.get();
            if total > now {
                c.inc_by(total - now);
            }
        };
        for (i, reason) in COUNTER_NAMES.iter().enumerate() {
            if *reason != "packets_sent" {
                raise(
                    &self.dropped.get_or_create(&ReasonLabels { reason }),
                    t.kernel.get(i),
                );
            }
        }
        raise(
            &self.dropped.get_or_create(&ReasonLabels {
                reason: "user_queue_full",
            }),
            t.dropped_user,
        );
        raise(
            &self.dropped.get_or_create(&ReasonLabels {
                reason: "rows_lost",
            }),
            t.rows_lost,
        );
        let size = t.kernel.ring_size.load(Ordering::Relaxed);
        if size > 0 {
            self.ring_fill
                .set(t.kernel.ring_used.load(Ordering::Relaxed) as f64 / size as f64);
        }
        if t.segments.segments_sealed > self.segments_sealed.get() {
            self.last_seal.set(t.now_unix_ns as f64 / 1e9);
        }
        raise(&self.segments_sealed, t.segments.segments_sealed);
        raise(&self.bytes_written, t.segments.bytes_sealed);
        if let Some(w) = t.watermark_ns {
            self.spool_lag
                .set((t.now_unix_ns.saturating_sub(w)).max(0) as f64 / 1e9);
        }
        if let Some(s) = t.ship {
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            raise(&self.segments_shipped, load(&s.shipped) + load(&s.already));
            raise(&self.segments_ship_failed, load(&s.failed));
            raise(&self.segment_bytes_shipped, load(&s.bytes));
            let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.segments_ship_pending.set(clamp(load(&s.pending)));
            let now = u64::try_from(t.now_unix_ns / 1_000_000_000).unwrap_or(0);
            self.ship_lag.set(clamp(s.lag_seconds(now)));
            raise(&self.lake_objects_removed, load(&s.removed));
            self.lake_cleanups_pending
                .set(clamp(load(&s.cleanup_pending)));
        }
    }
}

/// What [`Metrics::update_totals`] reads.
pub struct Totals<'a> {
    pub kernel: &'a KernelCounters,
    pub dropped_user: u64,
    pub rows_lost: u64,
    pub segments: SegmentStats,
    pub watermark_ns: Option<i64>,
    pub now_unix_ns: i64,
    /// The background shipper's totals (`record --ship-to`).
    pub ship: Option<&'a ShipCounters>,
}

/// Escapes a label value for the text format.
fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

impl Exposition {
    /// The whole scrape, in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
        {
            tracing::debug!("cannot encode metrics: {e}");
        }
        self.encode_dnswatch(&mut out);
        out
    }

    /// DNSWatch's counters. Written here rather than through prometheus-client because that
    /// library always appends `_total` to a counter's samples (OpenMetrics requires it), which
    /// would rename `a_queries` to `a_queries_total` and break the alerts this exists for. The
    /// text format for six counters with one label is a few lines (escaping included).
    fn encode_dnswatch(&self, out: &mut String) {
        let list: Vec<(String, Arc<DnswatchCounters>)> =
            self.shared.lock().map(|l| l.clone()).unwrap_or_default();
        let mut rows: Vec<(&str, [u64; DNSWATCH.len()])> = Vec::with_capacity(list.len() + 2);
        rows.push(("all", self.all.values()));
        for (name, c) in &list {
            rows.push((name, c.values()));
        }
        let other = self.other.values();
        if other.iter().any(|v| *v > 0) {
            rows.push(("other", other));
        }
        for (i, (name, _)) in DNSWATCH.iter().enumerate() {
            let what = name.replace('_', " ");
            let _ = writeln!(
                out,
                "# HELP {name} DNSWatch-compatible: {what}, by process (comm; all = every process)"
            );
            let _ = writeln!(out, "# TYPE {name} counter");
            for (process, values) in &rows {
                out.push_str(name);
                out.push_str("{process=\"");
                escape_label(process, out);
                let _ = writeln!(out, "\"}} {}", values[i]);
            }
        }
    }
}

/// Serves `/metrics` (and a pointer to it on `/`) on an already bound server until the process
/// ends. Runs on its own thread.
pub fn serve(server: tiny_http::Server, exposition: Exposition) {
    let text_type = tiny_http::Header::from_bytes(
        &b"Content-Type"[..],
        &b"text/plain; version=0.0.4; charset=utf-8"[..],
    )
    .ok();
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("");
        let response = match path {
            "/metrics" => {
                let mut r = tiny_http::Response::from_string(exposition.encode());
                if let Some(h) = &text_type {
                    r.add_header(h.clone());
                }
                r
            }
            "/" => tiny_http::Response::from_string("dnsledger: metrics at /metrics\n"),
            _ => {
                tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404)
            }
        };
        if let Err(e) = req.respond(response) {
            tracing::debug!("metrics client went away: {e}");
        }
    }
}

/// Transactions for unit tests of this crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// An answered A query for `qname` by `dig` (pid 1), 1 ms, NOERROR, on loopback.
    pub fn transaction(qname: &str) -> Transaction {
        Transaction {
            ts: 0,
            query_ts: None,
            latency_ns: Some(1_000_000),
            status: "answered",
            pid: Some(1),
            comm: Some("dig".into()),
            client_ip: "127.0.0.1".into(),
            client_port: 1,
            server_ip: "127.0.0.1".into(),
            rcode: Some(0),
            rcode_name: Some("NOERROR".into()),
            qtype: Some(1),
            qtype_name: Some("A".into()),
            registered_domain: None,
            ..dnsledger_tests::fixture::tx(0, qname)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::transaction;
    use super::*;

    fn tx(
        comm: &str,
        qtype: u16,
        qtype_name: &str,
        rcode: Option<u16>,
        status: &'static str,
    ) -> Transaction {
        let mut t = transaction("x.test");
        t.comm = Some(comm.into());
        t.status = status;
        t.qtype = Some(qtype);
        t.qtype_name = Some(qtype_name.into());
        t.rcode = rcode;
        t.latency_ns = rcode.map(|_| 1_000_000);
        t.rcode_name = rcode.map(|r| {
            match r {
                0 => "NOERROR",
                3 => "NXDOMAIN",
                2 => "SERVFAIL",
                _ => "REFUSED",
            }
            .into()
        });
        t
    }

    fn sample(text: &str, line_start: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn dnswatch_counters_per_process_and_all() {
        let (mut m, e) = Metrics::new(2);
        m.observe(&[
            tx("dig", 1, "A", Some(0), "answered"),
            tx("dig", 28, "AAAA", Some(3), "answered"),
            tx("curl", 12, "PTR", Some(2), "answered"),
            tx("curl", 1, "A", None, "unanswered"),
            // A third comm is folded into `other`.
            tx("wget", 1, "A", Some(0), "answered"),
            tx("we\"ird", 15, "MX", Some(5), "answered"),
        ]);
        let text = e.encode();
        assert_eq!(
            sample(&text, "a_queries{process=\"all\"}"),
            Some(3.0),
            "{text}"
        );
        assert_eq!(sample(&text, "a_queries{process=\"dig\"}"), Some(1.0));
        assert_eq!(sample(&text, "a_queries{process=\"curl\"}"), Some(1.0));
        assert_eq!(sample(&text, "a_queries{process=\"other\"}"), Some(1.0));
        assert_eq!(sample(&text, "aaaa_queries{process=\"dig\"}"), Some(1.0));
        assert_eq!(sample(&text, "ptr_queries{process=\"curl\"}"), Some(1.0));
        assert_eq!(
            sample(&text, "noerror_responses{process=\"all\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "nxdomain_responses{process=\"dig\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "servfail_responses{process=\"curl\"}"),
            Some(1.0)
        );
        assert!(!text.contains("process=\"wget\""), "{text}");
        assert!(text.contains("# TYPE a_queries counter"), "{text}");
        assert_eq!(
            sample(&text, "dnsledger_unanswered_total"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "dnsledger_transactions_total{qtype=\"A\",rcode=\"none\",transport=\"udp\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "dnsledger_transactions_total{qtype=\"MX\",rcode=\"REFUSED\",transport=\"udp\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "dnsledger_latency_seconds_count"),
            Some(5.0),
            "{text}"
        );
        assert!(text.contains("dnsledger_build_info{version=\""), "{text}");
        assert!(
            text.contains("dnsledger_events_dropped_total{reason=\"packet_ringbuf_full\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn totals_become_counters_and_gauges() {
        let (m, e) = Metrics::new(10);
        let k = KernelCounters::default();
        k.values[0].store(7, Ordering::Relaxed);
        k.ring_used.store(1024, Ordering::Relaxed);
        k.ring_size.store(4096, Ordering::Relaxed);
        let totals = Totals {
            kernel: &k,
            dropped_user: 3,
            rows_lost: 0,
            segments: SegmentStats {
                segments_sealed: 2,
                bytes_sealed: 5000,
                ..Default::default()
            },
            watermark_ns: Some(1_000_000_000),
            now_unix_ns: 3_500_000_000,
            ship: None,
        };
        m.update_totals(&totals);
        m.update_totals(&totals);
        let text = e.encode();
        assert_eq!(
            sample(
                &text,
                "dnsledger_events_dropped_total{reason=\"packet_ringbuf_full\"}"
            ),
            Some(7.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "dnsledger_events_dropped_total{reason=\"user_queue_full\"}"
            ),
            Some(3.0)
        );
        assert_eq!(sample(&text, "dnsledger_ringbuf_fill_ratio"), Some(0.25));
        assert_eq!(sample(&text, "dnsledger_segments_sealed_total"), Some(2.0));
        assert_eq!(
            sample(&text, "dnsledger_segment_bytes_written_total"),
            Some(5000.0)
        );
        assert_eq!(sample(&text, "dnsledger_spool_lag_seconds"), Some(2.5));
        assert_eq!(
            sample(&text, "dnsledger_last_seal_timestamp_seconds"),
            Some(3.5)
        );
    }
}
