//! `dnsql nxdomain`: processes with many failing names (DGA-like bursts), per registered
//! domain.

use super::{PROC_KEY, join_on};

/// Failures counted by [`nxdomain`]'s `excessive` column: more than this many failed
/// responses for one process. Splunk ESCU "Excessive DNS Failures"
/// (`detections/network/excessive_dns_failures.yml`): `where count>50` failed responses per
/// source and reply code.
pub const EXCESSIVE_FAILURES: u64 = 50;

/// Failing names [`nxdomain`] lists per row (the first in alphabetical order; `failing_names`
/// counts them all): a month of a fleet's search-suffix retries is millions of names.
pub const NAMES_SHOWN: usize = 20;

/// `dnsql nxdomain`: processes with many failing names, per registered domain. A failure is an
/// answer whose rcode is not NOERROR (NXDOMAIN, SERVFAIL, REFUSED, ...), as in Splunk's
/// "Excessive DNS Failures". Per row: the number of failing names and the first
/// [`NAMES_SHOWN`], NXDOMAIN/SERVFAIL/other counts, the
/// busiest minute (a DGA burst tries many names at once), and the process totals (failing
/// domains and names, `excessive` when more than [`EXCESSIVE_FAILURES`] failures). Processes
/// with the most distinct failing names come first.
///
/// Memory: every aggregation has fixed-size state per group (per name, then per domain; the
/// pids from distinct rows), so each spills under the session's pool; no `DISTINCT` or
/// `array_agg` over the raw rows.
pub fn nxdomain() -> String {
    let k = PROC_KEY;
    let not_relayed = super::asked_once();
    let p = "hostname, comm, exe, container_id";
    let on_b = join_on("d", "b", k);
    let on_n = join_on("d", "n", k);
    let on_p = join_on("d", "p", k);
    let dp = "d.hostname, d.comm, d.exe, d.container_id";
    format!(
        "WITH f AS (
  SELECT coalesce(registered_domain, qname) AS domain,
         coalesce(CAST(hostname AS VARCHAR), '') AS hostname,
         coalesce(CAST(comm AS VARCHAR), '') AS comm,
         coalesce(CAST(exe AS VARCHAR), '') AS exe,
         coalesce(CAST(container_id AS VARCHAR), '') AS container_id,
         pid, ts, qname,
         CAST(rcode_name AS VARCHAR) AS rcode,
         coalesce(CAST(rcode_name AS VARCHAR), '') NOT IN ('NOERROR', '') AS failed
  FROM dns
  WHERE qname IS NOT NULL AND status = 'answered' AND {not_relayed}
),
per_name AS (
  SELECT {k}, qname,
         count(*) AS responses,
         count(*) FILTER (WHERE failed) AS failures,
         count(*) FILTER (WHERE rcode = 'NXDOMAIN') AS nxdomain,
         count(*) FILTER (WHERE rcode = 'SERVFAIL') AS servfail,
         count(*) FILTER (WHERE failed AND rcode NOT IN ('NXDOMAIN', 'SERVFAIL')) AS other_failures,
         min(ts) FILTER (WHERE failed) AS first_failure,
         max(ts) FILTER (WHERE failed) AS last_failure
  FROM f
  GROUP BY {k}, qname
),
per_domain AS (
  SELECT {k},
         sum(responses) AS responses,
         sum(failures) AS failures,
         sum(nxdomain) AS nxdomain,
         sum(servfail) AS servfail,
         sum(other_failures) AS other_failures,
         count(*) FILTER (WHERE failures > 0) AS failing_names,
         min(first_failure) AS first_failure,
         max(last_failure) AS last_failure
  FROM per_name
  GROUP BY {k}
  HAVING sum(failures) > 0
),
sample AS (
  SELECT {k}, array_sort(array_agg(qname)) AS names
  FROM (SELECT {k}, qname, row_number() OVER (PARTITION BY {k} ORDER BY qname) AS r
        FROM per_name WHERE failures > 0) AS s
  WHERE r <= {NAMES_SHOWN}
  GROUP BY {k}
),
pids AS (
  SELECT {k}, array_sort(array_agg(pid)) AS pids
  FROM (SELECT DISTINCT {k}, pid FROM f WHERE failed AND pid IS NOT NULL) AS p
  GROUP BY {k}
),
bursts AS (
  SELECT {k}, max(n) AS peak_failures_per_minute
  FROM (SELECT {k}, count(*) AS n FROM f WHERE failed
        GROUP BY {k}, date_bin(INTERVAL '1 minute', ts)) AS b
  GROUP BY {k}
),
joined AS (
  SELECT d.*, b.peak_failures_per_minute, n.names, p.pids,
         count(*) OVER (PARTITION BY {dp}) AS process_failing_domains,
         sum(d.failing_names) OVER (PARTITION BY {dp}) AS process_failing_names,
         sum(d.failures) OVER (PARTITION BY {dp}) AS process_failures
  FROM per_domain d JOIN bursts b ON {on_b}
       LEFT JOIN sample n ON {on_n}
       LEFT JOIN pids p ON {on_p}
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
    use crate::testutil::{count, fixtures, process_fixture, query};

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
}
