//! `dnsql bypass`: processes that speak encrypted DNS past the host's resolver.

use dnsledger_schema::status;

use super::sql_str;

/// `dnsql bypass`: one row per (host, process, transport, endpoint) of the `bypass` rows the
/// recorder writes for connections to port 853 (`dot` over TCP, `doq` over UDP) and to port
/// 443 of an address on its DoH list (`doh-likely`), with the number of connections and
/// first/last seen; earliest first.
pub fn bypass() -> String {
    format!(
        "SELECT hostname, comm, exe, pid, uid, container_id, transport, server_ip, server_port,
       count(*) AS connections,
       min(ts) AS first_seen,
       max(ts) AS last_seen
FROM (SELECT hostname, comm, exe, pid, uid, container_id, ts, server_port,
             CAST(transport AS VARCHAR) AS transport,
             CAST(server_ip AS VARCHAR) AS server_ip
      FROM dns
      WHERE status = {bypass}) AS b
GROUP BY hostname, comm, exe, pid, uid, container_id, transport, server_ip, server_port
ORDER BY first_seen, hostname, pid, transport, server_ip",
        bypass = sql_str(status::BYPASS)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fixtures, rows};

    #[tokio::test]
    async fn bypass_runs_and_the_fixtures_have_none() {
        // The fixtures are imports of packet captures: no bypass rows.
        let ctx = fixtures().await;
        assert!(rows(&ctx, &bypass()).await.is_empty());
        assert!(bypass().contains("WHERE status = 'bypass'"));
    }
}
