//! `dnsql top --by BY`: DNSWatch's "top" over history.

/// What `dnsql top --by` groups on (the flag's values, in kebab case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum TopBy {
    /// `hostname`, `pid`, `comm`, `exe`.
    Process,
    /// `exe` across hosts (with the number of hosts and pids).
    Exe,
    /// `qname`.
    Domain,
    /// `registered_domain`.
    RegisteredDomain,
    /// `rcode_name`.
    Rcode,
    /// `qtype_name`.
    Qtype,
    /// `server_ip`, `server_port`.
    Server,
    /// `hostname`, `container_id` (NULL: the host's own processes).
    Container,
    /// `hostname`, `client_ip` of the host's DNS servers (rows recorded with `record
    /// --serve-side`, side = server; with the number of server processes and client ports).
    Client,
}
/// `dnsql top --by BY -n N`: DNSWatch's "top" over history. Per group: transactions, distinct
/// names, A/AAAA/PTR queries, NOERROR/NXDOMAIN/SERVFAIL answers, unanswered queries and latency
/// (average, approximate p50/p95, maximum; milliseconds, answered transactions only). Largest
/// groups first; `n == 0` means no limit. Encrypted-DNS `bypass` rows are no DNS transactions:
/// `dnsql bypass` lists them. Every grouping but `client` counts the client side (a loopback
/// query to a local server recorded with `--serve-side` counts once); `client` counts the
/// server side only. A local stub's upstream
/// queries made for local clients are left out ([`super::NOT_RELAYED`]): each lookup counts
/// once, for its client.
/// libc `lookup` rows neither: their wire queries are rows of their own.
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
            "registered_domain, hostname AS m_host",
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
        TopBy::Client => (
            "hostname, CAST(client_ip AS VARCHAR) AS client_ip, pid AS m_pid, \
             client_port AS m_port",
            "hostname, client_ip",
            "count(DISTINCT m_pid) AS server_pids, count(DISTINCT m_port) AS ports, ",
        ),
    };
    let side = if by == TopBy::Client {
        dnsledger_schema::side::SERVER_ROWS_SQL
    } else {
        dnsledger_schema::side::CLIENT_ROWS_SQL
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
    let not_relayed = super::NOT_RELAYED;
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
      FROM dns
      WHERE status NOT IN ('bypass', 'lookup') AND {side} AND {not_relayed}) AS t
GROUP BY {keys}
ORDER BY queries DESC, {order_keys}{limit}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{column, count, fixtures, query, rows};

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
        // The fixtures predate --serve-side (no side column): all client side, no server rows.
        assert!(rows(&ctx, &top(TopBy::Client, 5)).await.is_empty());
    }
}
