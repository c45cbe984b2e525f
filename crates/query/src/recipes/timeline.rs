//! `dnsql timeline`: one process's DNS transactions in time order.

use super::sql_str;

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
/// The kernel keeps 15 bytes of a task name (`TASK_COMM_LEN` 16 with the NUL): a longer name
/// given by the user (`systemd-resolved`) is cut to what the recorder saw (`systemd-resolve`).
fn comm_prefix(comm: &str) -> &str {
    let mut end = comm.len().min(15);
    while !comm.is_char_boundary(end) {
        end -= 1;
    }
    &comm[..end]
}

/// The predicate selecting `sel`'s rows (`timeline`'s, and `dnsql report --pid/--comm`'s). A
/// `comm` longer than the kernel's 15 bytes is cut to 15.
pub fn predicate(sel: &Selector) -> String {
    match sel {
        Selector::Pid { pid, host: None } => format!("pid = {pid}"),
        Selector::Pid {
            pid,
            host: Some(host),
        } => format!("pid = {pid} AND hostname = {}", sql_str(host)),
        Selector::Comm(comm) => format!("comm = {}", sql_str(comm_prefix(comm))),
        Selector::Exe(exe) => format!("exe = {}", sql_str(exe)),
    }
}

/// `dnsql timeline`: the selected process's DNS transactions in time order, with the link to
/// a local stub (`stub_cache` on a client's query to it, `requester_pids`/`requester_comms` on
/// the stub's upstream query). A `comm` longer
/// than the kernel's 15 bytes is cut to 15.
pub fn timeline(sel: &Selector) -> String {
    timeline_where(&predicate(sel))
}

/// The timeline's columns and order for the rows where `pred` holds (`dnsql report --focus`
/// follows a name with it).
pub fn timeline_where(pred: &str) -> String {
    format!(
        "SELECT ts, hostname, pid, tid, comm, exe,
       qname, CAST(qtype_name AS VARCHAR) AS qtype, CAST(rcode_name AS VARCHAR) AS rcode, status,
       round(latency_ns / 1e6, 3) AS latency_ms,
       answer_strings(answers) AS answers,
       server_ip, server_port, transport, dns_id,
       CAST(stub_cache AS VARCHAR) AS stub_cache, requester_pids, requester_comms
FROM dns
WHERE {pred}
ORDER BY ts, hostname, pid, dns_id"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{process_fixture, query, rows};

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
}
