//! `dnsql who NAME`: which hosts and processes resolved a name or any name under it.

use dnsledger_schema::dnstext::registered_domain;

use super::{normalize_name, sql_str};

/// The predicate "`qname` is `name` or a name under it", using the registered domain's bloom
/// filter and statistics where the name has one (`who`'s, and `dnsql report --focus`'s).
pub fn under_name_predicate(name: &str) -> String {
    let name = normalize_name(name);
    let exact = sql_str(&name);
    let suffix = sql_str(&format!(".{name}"));
    let names = format!("(qname = {exact} OR ends_with(qname, {suffix}))");
    match registered_domain(&name) {
        // `name` and the names under it share its registered domain (the column's definition,
        // whatever the labels left of it hold): its bloom filter and statistics prune.
        Some(rd) => format!("registered_domain = {} AND {names}", sql_str(&rd)),
        None => names,
    }
}

/// `dnsql who NAME`: which hosts and processes resolved `name` or any name under it, with
/// first/last seen, counts and the answers they received. One row per (host, comm, exe, pid,
/// uid, container), earliest first. A local stub's upstream queries made for local clients are
/// left out ([`super::NOT_RELAYED`]): the clients are named, each lookup counted once. libc
/// lookups (status `lookup`) are counted apart, in `lookups`: a name answered from /etc/hosts
/// or a cache has lookups and no queries (and no `qtypes`: a lookup row has no type).
pub fn who(name: &str) -> String {
    format!(
        "SELECT hostname, comm, exe, pid, uid, container_id,
       count(*) FILTER (WHERE status <> 'lookup') AS queries,
       count(DISTINCT qname) AS names,
       count(*) FILTER (WHERE status = 'answered') AS answered,
       count(*) FILTER (WHERE status = 'unanswered') AS unanswered,
       count(*) FILTER (WHERE rcode_name = 'NXDOMAIN') AS nxdomain,
       min(ts) AS first_seen,
       max(ts) AS last_seen,
       array_sort(array_agg(DISTINCT qname)) AS queried_names,
       array_sort(array_agg(DISTINCT CAST(qtype_name AS VARCHAR)) FILTER (WHERE qtype_name IS NOT NULL)) AS qtypes,
       array_sort(array_distinct(flatten(array_agg(answer_strings(answers))))) AS answers_received,
       count(*) FILTER (WHERE status = 'lookup') AS lookups
FROM dns
WHERE {pred} AND {not_relayed}
GROUP BY hostname, comm, exe, pid, uid, container_id
ORDER BY first_seen, hostname, pid",
        pred = under_name_predicate(name),
        not_relayed = super::asked_once(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{count, fixtures, query, rows};

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
    async fn who_finds_tunnel_names_by_their_registered_domain() {
        let ctx = fixtures().await;
        // dns2tcp's `=auth`/`=connect` names are not host names, yet the recorder gives them
        // their registered domain (the one definition, dnsledger_schema::dnstext), so `who`
        // finds them through the bloom-filtered column alone.
        let tunnel = "qname LIKE '%.tunnel.com'";
        let odd = count(
            &ctx,
            &format!("SELECT count(*) FROM dns WHERE {tunnel} AND qname LIKE '%=%'"),
        )
        .await;
        assert!(odd > 0);
        let unlabelled = count(
            &ctx,
            &format!(
                "SELECT count(*) FROM dns WHERE {tunnel} \
                 AND registered_domain IS DISTINCT FROM 'tunnel.com'"
            ),
        )
        .await;
        assert_eq!(unlabelled, 0);
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
}
