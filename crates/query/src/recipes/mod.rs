//! Step 3 of a query, the recipes: the forensic commands, each a function returning SQL text
//! over the table `dns` (one file per recipe), and `show`, which also renders its rows.
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

pub mod bypass;
pub mod exfil;
pub mod lake;
pub mod nxdomain;
pub mod show;
pub mod timeline;
pub mod top;
pub mod who;

pub use bypass::bypass;
pub use exfil::exfil;
pub use nxdomain::{EXCESSIVE_FAILURES, nxdomain};
pub use timeline::{Selector, timeline};
pub use top::{TopBy, top};
pub use who::who;

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

/// Key columns of a process, NULLs made comparable so that the CTEs can be joined.
/// Rows that are not a lookup of their own: a local stub resolver's upstream query made for
/// local clients (`requester_pids` set) repeats the clients' own rows (theirs name the
/// process; the stub's would count the lookup twice and name the stub). Recipes that count
/// lookups or name processes keep only the rows where this holds.
pub const NOT_RELAYED: &str = "requester_pids IS NULL";

/// The rows that stand for one lookup each, as the recipes about who asked count them: the
/// client side ([`dnsledger_schema::side::CLIENT_ROWS_SQL`]: a `--serve-side` row is a local
/// server's view of a conversation whose client has its own row) and not a stub's relayed
/// upstream query ([`NOT_RELAYED`]).
pub fn asked_once() -> String {
    format!(
        "{NOT_RELAYED} AND {}",
        dnsledger_schema::side::CLIENT_ROWS_SQL
    )
}

const PROC_KEY: &str = "domain, hostname, comm, exe, container_id";

/// `a.c1 = b.c1 AND a.c2 = b.c2 …` for the comma-separated columns `cols`.
fn join_on(a: &str, b: &str, cols: &str) -> String {
    cols.split(", ")
        .map(|c| format!("{a}.{c} = {b}.{c}"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fixtures_with, query, rows};

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
            bypass(),
        ] {
            let _ = rows(&ctx, &sql).await;
        }
        let t = query(&ctx, &exfil()).await;
        assert_eq!(t.get(0, "flagged"), Some("true"));
        assert_eq!(t.get(1, "flagged"), Some("true"));
        assert_eq!(t.get(2, "flagged"), Some("false"));
    }
}
