//! The SQL of the report's own sections (the others run the recipes' SQL as it is): the
//! activity per bucket, the domains first seen in the window, and the focus's per-bucket
//! counts and names. Each reads `dns` (the window, as `dnsql --since --until --host sql` sees
//! it) and, for the window before, `dns_all` with the same partition predicates the scope
//! uses, so the printed SQL runs unchanged under `dnsql sql`.

use dnsledger_schema::partition::{Civil, PartitionKey};

use crate::recipes::sql_str;

/// Bucket widths the report chooses from, in seconds.
const BUCKETS: [i64; 16] = [
    60,
    300,
    600,
    900,
    1_800,
    3_600,
    3 * 3_600,
    6 * 3_600,
    12 * 3_600,
    86_400,
    7 * 86_400,
    30 * 86_400,
    91 * 86_400,
    365 * 86_400,
    5 * 365 * 86_400,
    25 * 365 * 86_400,
];

/// At most this many buckets across the window (bars of at least ~3 px on the chart).
pub const MAX_BUCKETS: i64 = 300;

/// The narrowest bucket (ns) that cuts a window of `len` ns into at most [`MAX_BUCKETS`].
pub fn bucket_ns(len: i64) -> i64 {
    let secs = BUCKETS
        .iter()
        .copied()
        .find(|b| len / (b * 1_000_000_000) < MAX_BUCKETS)
        .unwrap_or(BUCKETS[BUCKETS.len() - 1]);
    secs * 1_000_000_000
}

/// A bucket width for people: "1 min", "5 min", "3 h", "7 days".
pub fn bucket_text(ns: i64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        s if s % 86_400 == 0 => {
            let d = s / 86_400;
            if d == 1 {
                "day".into()
            } else {
                format!("{d} days")
            }
        }
        s if s % 3_600 == 0 => {
            let h = s / 3_600;
            if h == 1 {
                "hour".into()
            } else {
                format!("{h} h")
            }
        }
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// RFC 3339 (UTC, nanoseconds only when needed) of ns since the epoch.
pub fn rfc3339(ns: i64) -> String {
    let c = Civil::from_ns(ns);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    );
    if c.nanos == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{:09}Z", c.nanos)
    }
}

/// A timestamp literal DataFusion compares with `ts`.
pub fn ts_literal(ns: i64) -> String {
    format!("TIMESTAMP '{}'", rfc3339(ns))
}

fn date_literal(key: &PartitionKey) -> String {
    let c = Civil::from_ns(key.start_ns());
    format!("DATE '{:04}-{:02}-{:02}'", c.year, c.month, c.day)
}

/// The rows of `[since, until)` of `hosts` (all if empty) as a condition on `dns_all`: the
/// partition columns first (so whole hours and hosts are pruned before a file is opened, as
/// the scope of every dnsql command prunes them), then `ts`.
pub fn window_predicate(since: i64, until: i64, hosts: &[String]) -> String {
    let mut parts = Vec::new();
    if !hosts.is_empty() {
        let list: Vec<String> = hosts.iter().map(|h| sql_str(h)).collect();
        parts.push(format!("host IN ({})", list.join(", ")));
    }
    let first = PartitionKey::of_ts(String::new(), since);
    let last = PartitionKey::of_ts(String::new(), until.saturating_sub(1));
    parts.push(format!(
        "(date > {d} OR (date = {d} AND hour >= {h}))",
        d = date_literal(&first),
        h = first.hour
    ));
    parts.push(format!(
        "(date < {d} OR (date = {d} AND hour <= {h}))",
        d = date_literal(&last),
        h = last.hour
    ));
    parts.push(format!(
        "ts >= {} AND ts < {}",
        ts_literal(since),
        ts_literal(until)
    ));
    parts.join("\n  AND ")
}

/// `date_bin` of `ts` into buckets of `bin` ns from `origin`.
fn bucket_expr(bin: i64, origin: i64) -> String {
    format!(
        "date_bin(INTERVAL '{} seconds', ts, {})",
        bin / 1_000_000_000,
        ts_literal(origin)
    )
}

/// Queries, NXDOMAIN answers and unanswered queries per bucket, per host and per process name,
/// in one scan (two grouping sets: rows with a `hostname` are per host, rows without are per
/// `comm`; `hostname` is never NULL in the data). The client side only: a local server's side
/// (`record --serve-side`) is the same lookup seen again, or a remote client's.
pub fn activity(bin: i64, origin: i64) -> String {
    format!(
        "SELECT bucket, hostname, comm,
       count(*) AS queries,
       count(*) FILTER (WHERE rcode = 'NXDOMAIN') AS nxdomain,
       count(*) FILTER (WHERE st = 'unanswered') AS unanswered
FROM (SELECT {b} AS bucket,
             CAST(hostname AS VARCHAR) AS hostname,
             CAST(comm AS VARCHAR) AS comm,
             CAST(rcode_name AS VARCHAR) AS rcode,
             CAST(status AS VARCHAR) AS st
      FROM dns
      WHERE {nr} AND status <> 'lookup') AS t
GROUP BY GROUPING SETS ((bucket, hostname), (bucket, comm))
ORDER BY bucket, hostname, comm",
        b = bucket_expr(bin, origin),
        nr = crate::recipes::asked_once(),
    )
}

/// Registered domains queried in the window and not in `[before_since, before_until)` (the
/// window of the same length before it), first seen first, with how much and by whom.
pub fn first_seen(before_since: i64, before_until: i64, hosts: &[String], limit: usize) -> String {
    format!(
        "WITH win AS (
  SELECT registered_domain AS domain,
         min(ts) AS first_seen,
         max(ts) AS last_seen,
         count(*) AS queries,
         count(DISTINCT qname) AS names,
         count(DISTINCT hostname) AS hosts,
         count(*) FILTER (WHERE rcode_name = 'NXDOMAIN') AS nxdomain
  FROM dns
  WHERE registered_domain IS NOT NULL AND {nr} AND status <> 'lookup'
  GROUP BY registered_domain
),
earlier AS (
  SELECT DISTINCT registered_domain AS domain
  FROM dns_all
  WHERE registered_domain IS NOT NULL
  AND {pred}
)
SELECT w.domain, w.first_seen, w.last_seen, w.queries, w.names, w.hosts, w.nxdomain,
       count(*) OVER () AS new_domains
FROM win w LEFT JOIN earlier e ON w.domain = e.domain
WHERE e.domain IS NULL
ORDER BY w.first_seen, w.domain
LIMIT {limit}",
        pred = window_predicate(before_since, before_until, hosts),
        nr = crate::recipes::asked_once(),
    )
}

/// The focus's queries, NXDOMAIN answers and unanswered queries per bucket.
pub fn focus_activity(pred: &str, bin: i64, origin: i64) -> String {
    format!(
        "SELECT {b} AS bucket,
       count(*) AS queries,
       count(*) FILTER (WHERE rcode_name = 'NXDOMAIN') AS nxdomain,
       count(*) FILTER (WHERE status = 'unanswered') AS unanswered
FROM dns
WHERE {pred} AND {nr} AND status <> 'lookup'
GROUP BY 1
ORDER BY 1",
        b = bucket_expr(bin, origin),
        nr = crate::recipes::asked_once(),
    )
}

/// The names a focused process asked for, most asked first.
pub fn focus_names(pred: &str, limit: usize) -> String {
    format!(
        "SELECT qname,
       count(*) AS queries,
       count(*) FILTER (WHERE rcode_name = 'NXDOMAIN') AS nxdomain,
       count(*) FILTER (WHERE status = 'unanswered') AS unanswered,
       count(DISTINCT hostname) AS hosts,
       min(ts) AS first_seen,
       max(ts) AS last_seen,
       array_sort(array_distinct(flatten(array_agg(answer_strings(answers))))) AS answers
FROM dns
WHERE {pred} AND {nr} AND status <> 'lookup'
GROUP BY qname
ORDER BY queries DESC, qname
LIMIT {limit}",
        nr = crate::recipes::asked_once(),
    )
}

/// `sql` (ordered in time) cut to its first row, or to its last.
pub fn first_row(sql: &str) -> String {
    format!("{sql}\nLIMIT 1")
}

/// The last row of `sql` (ordered by `ts, hostname, dns_id`).
pub fn last_row(sql: &str) -> String {
    format!("SELECT * FROM ({sql}) AS t\nORDER BY ts DESC, hostname DESC, dns_id DESC\nLIMIT 1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_fit_the_window() {
        const H: i64 = 3_600_000_000_000;
        assert_eq!(bucket_ns(H), 60_000_000_000);
        assert_eq!(bucket_ns(24 * H), 300_000_000_000);
        assert_eq!(bucket_ns(7 * 24 * H), 3_600_000_000_000);
        assert!(bucket_ns(18 * 365 * 24 * H) / 1_000_000_000 >= 30 * 86_400);
        assert_eq!(bucket_text(300_000_000_000), "5 min");
        assert_eq!(bucket_text(3 * H), "3 h");
        assert_eq!(bucket_text(24 * H), "day");
    }

    #[test]
    fn window_predicate_prunes_partitions_and_escapes_hosts() {
        let since = 1_714_564_800_000_000_000; // 2024-05-01T12:00:00Z
        let p = window_predicate(since, since + 3_600_000_000_000, &["a'b".into()]);
        assert!(p.contains("host IN ('a''b')"), "{p}");
        assert!(
            p.contains("(date > DATE '2024-05-01' OR (date = DATE '2024-05-01' AND hour >= 12))"),
            "{p}"
        );
        assert!(p.contains("hour <= 12))"), "{p}");
        assert!(
            p.contains(
                "ts >= TIMESTAMP '2024-05-01T12:00:00Z' AND ts < TIMESTAMP '2024-05-01T13:00:00Z'"
            ),
            "{p}"
        );
        assert_eq!(rfc3339(since + 5), "2024-05-01T12:00:00.000000005Z");
    }
}
