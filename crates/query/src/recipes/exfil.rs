//! `dnsql exfil`: ranks (registered domain, process) pairs by signs of DNS tunnelling or
//! exfiltration, with the evidence per row.
//!
//! One table, [`THRESHOLDS`], says everything about the signals: each row has the threshold's
//! value, the signal it decides (its family, its condition over the evidence columns, its label
//! in `reasons`) and its `--help` line; the source of each number is the row's doc comment in
//! [`thresholds`]. From it come the SQL's `score`, `reasons` and `flagged` ([`exfil`]), the
//! thresholds inside the evidence columns, and `dnsql exfil --help` ([`help`]). The SQL itself
//! is `exfil.sql`.

use super::{PROC_KEY, join_on, sql_str};

/// Which family a signal belongs to; `flagged` = a volume signal AND an encoding or records
/// signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Volume,
    Encoding,
    Records,
}

impl Family {
    const ALL: [Family; 3] = [Family::Volume, Family::Encoding, Family::Records];

    fn name(self) -> &'static str {
        match self {
            Family::Volume => "volume",
            Family::Encoding => "encoding",
            Family::Records => "records",
        }
    }
}

/// A threshold's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Names, bytes, characters or queries.
    Count(u64),
    /// A share between 0 and 1 (a percentage in `--help`).
    Share(f64),
    /// Bits per character.
    Bits(f64),
}

impl Value {
    /// The count, for [`Value::Count`] (0 otherwise).
    pub const fn count(self) -> u64 {
        match self {
            Value::Count(n) => n,
            Value::Share(_) | Value::Bits(_) => 0,
        }
    }

    /// As written into the SQL.
    fn sql(self) -> String {
        match self {
            Value::Count(n) => n.to_string(),
            Value::Share(f) => format!("{f:.2}"),
            Value::Bits(b) => format!("{b:.1}"),
        }
    }

    /// As written for people (`--help`, `reasons`).
    fn text(self) -> String {
        match self {
            Value::Count(n) => n.to_string(),
            Value::Share(f) => format!("{}%", (f * 100.0).round()),
            Value::Bits(b) => format!("{b:.1}"),
        }
    }
}

/// The signal a threshold decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signal {
    pub family: Family,
    /// The condition over the evidence columns of `exfil.sql`; `{}` is the value.
    pub condition: &'static str,
    /// Its label in the `reasons` column; `{}` is the value.
    pub reason: &'static str,
}

/// One row of [`THRESHOLDS`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// Its name in `exfil.sql` (`{long_name}`), where an evidence column uses the value.
    pub name: &'static str,
    pub value: Value,
    /// The signal it decides; `None` for a threshold of evidence only.
    pub signal: Option<Signal>,
    /// The `--help` line; `{}` is the value.
    pub help: &'static str,
}

impl Threshold {
    fn fill(&self, template: &str, sql: bool) -> String {
        let v = if sql {
            self.value.sql()
        } else {
            self.value.text()
        };
        template.replace("{}", &v)
    }
}

/// The thresholds of [`exfil`], each with where its number comes from.
///
/// Every signal is decided per (process, registered domain, hour) — a rate or a share within
/// that hour — and a pair is flagged when one hour has a volume signal AND an encoding or
/// records signal. Totals over the queried window are never compared with a threshold: they
/// grow with the window and the fleet (an ordinary busy domain seen on 100 hosts for 30 days
/// passed every total threshold of the first version: 56 of 130 ordinary pairs of 4 hosts ×
/// 24 h were flagged), while what a tunnel does within one hour does not depend on how long
/// or how widely one looks.
pub mod thresholds {
    use super::{Family, Signal, Threshold, Value};

    /// More distinct names under one registered domain within one hour than this. Zeek package
    /// jbaggs/anomalous-dns, `scripts/an-dns-domain.zeek`: `domain_query_limit = 8` unique
    /// queries per domain per `query_period = 60min` (12 for recursive resolvers). We count per
    /// process, so 8 applies. Already a rate: it is the only volume signal. (The first
    /// version also had Splunk's "more than 10,000 characters of names + answers" and Elastic's
    /// "information content >= 350 bytes per 15 minutes"; the first is a total over the
    /// search window — every busy domain passes it at fleet scale — and the second added
    /// nothing a tunnel did not already trip here, while its `array_agg` of every name per
    /// bucket held all names in memory.)
    pub const UNIQUE_NAMES_PER_HOUR: Threshold = Threshold {
        name: "unique_names_per_hour",
        value: Value::Count(8),
        signal: Some(Signal {
            family: Family::Volume,
            condition: "names > {}",
            reason: "names/hour>{}",
        }),
        help: "more than {} distinct names in one hour (Zeek jbaggs/anomalous-dns \
               domain_query_limit)",
    };

    /// Length-weighted mean Shannon entropy (bits/char) of the subdomain part of the hour's
    /// distinct names at least this. Our choice: the sources above publish no entropy number.
    /// Weighted by length because tunnels mix short polls (`paeacg4a`, entropy 2.5) with long
    /// data names (entropy 4.3-5.5); a plain mean would be the polls'. Random strings average
    /// about 4.3 bits/char at 32 base32 characters and more for base64 and 8-bit data;
    /// host-name words stay below 4 (`windowsupdate` 3.4, `upload` 2.6), and so does any
    /// label of 16 characters or fewer (at most log2(16) = 4 bits/char): CDN ids of 13
    /// random characters cannot reach it. Hex stays below 4 too: the alphabet signal covers it.
    pub const WEIGHTED_ENTROPY: Threshold = Threshold {
        name: "weighted_entropy",
        value: Value::Bits(4.0),
        signal: Some(Signal {
            family: Family::Encoding,
            condition: "weighted_entropy >= {}",
            reason: "entropy>={}",
        }),
        help: "length-weighted mean subdomain entropy >= {} bits/char in that hour (our choice)",
    };

    /// At least this share of the characters of the hour's distinct names are in names whose
    /// subdomain looks encoded (`label_alphabet()` is hex, base32, base64 or 8bit; it needs 16
    /// characters or more). Our choice: a majority, weighted by length for the same reason as
    /// the entropy.
    pub const ENCODED_SHARE: Threshold = Threshold {
        name: "encoded_share",
        value: Value::Share(0.5),
        signal: Some(Signal {
            family: Family::Encoding,
            condition: "encoded_chars >= {} * name_chars",
            reason: "encoded-alphabet",
        }),
        help: ">= {} of the hour's name characters in names whose subdomain looks hex, base32, \
               base64 or 8-bit (our choice)",
    };

    /// At least this share of the hour's distinct names are long ([`LONG_NAME`]). Our choice:
    /// the source counts one oversized name as an event; at fleet scale one long name turns
    /// up for nearly every busy domain (tracking and CDN names), while a tunnel's data names
    /// are long one after the other. A quarter leaves room for a tunnel's short polls.
    pub const LONG_NAME_SHARE: Threshold = Threshold {
        name: "long_name_share",
        value: Value::Share(0.25),
        signal: Some(Signal {
            family: Family::Encoding,
            condition: "long_names >= {} * names",
            reason: "long-names",
        }),
        help: ">= {} of the hour's names longer than the long-name length below (our choice)",
    };

    /// At least this share of the hour's distinct names have a long label ([`LONG_LABEL`]).
    /// Our choice, as for [`LONG_NAME_SHARE`].
    pub const LONG_LABEL_SHARE: Threshold = Threshold {
        name: "long_label_share",
        value: Value::Share(0.25),
        signal: Some(Signal {
            family: Family::Encoding,
            condition: "long_label_names >= {} * names",
            reason: "long-labels",
        }),
        help: ">= {} of the hour's names with a label of the long-label length below or more \
               (our choice)",
    };

    /// At least this many NULL (type 10) queries in one hour. jbaggs/anomalous-dns
    /// `scripts/an-dns-query_type.zeek`: `query_type_blacklist = [10, 65399]` ("NULL is obsolete
    /// (RFC 883), used in iodine"). Ordinary clients never ask for NULL.
    pub const NULL_QUERIES: Threshold = Threshold {
        name: "null_queries",
        value: Value::Count(1),
        signal: Some(Signal {
            family: Family::Records,
            condition: "null_queries >= {}",
            reason: "NULL-queries",
        }),
        help: ">= {} NULL queries in that hour (anomalous-dns query_type_blacklist: NULL is \
               iodine's type)",
    };

    /// At least this many TXT queries from one process to one registered domain in one hour.
    /// Elastic detection-rules hunt "Suspicious DNS TXT Record lookups by process"
    /// (`hunting/windows/queries/suspicious_dns_txt_record_lookups_by_process.toml`):
    /// `where occurrences >= 50` per process over the hunt's window; we apply it per hour and
    /// per domain, so that it is a rate (a mail server's SPF lookups over a month are not).
    pub const TXT_QUERIES: Threshold = Threshold {
        name: "txt_queries",
        value: Value::Count(50),
        signal: Some(Signal {
            family: Family::Records,
            condition: "txt_queries >= {}",
            reason: "TXT/hour>={}",
        }),
        help: ">= {} TXT queries in one hour (Elastic hunt 'Suspicious DNS TXT Record lookups \
               by process', per hour)",
    };

    /// At least this share of the hour's queries are TXT, NULL or CNAME. Our choice: ordinary
    /// clients ask for A/AAAA (and HTTPS, MX, PTR); a majority of data-carrying types is the
    /// tunnel's mix.
    pub const RECORD_SHARE: Threshold = Threshold {
        name: "record_share",
        value: Value::Share(0.5),
        signal: Some(Signal {
            family: Family::Records,
            condition: "(txt_queries + null_queries + cname_queries) >= {} * queries",
            reason: "TXT/NULL/CNAME-mix",
        }),
        help: ">= {} of the hour's queries TXT/NULL/CNAME (our choice)",
    };

    /// At least this share of the hour's distinct names got a long TXT answer ([`LONG_TXT`]).
    /// Our choice: SPF and site-verification records pass the length routinely, but for a
    /// few names of a domain; a TXT tunnel answers every data name with one.
    pub const LONG_TXT_SHARE: Threshold = Threshold {
        name: "long_txt_share",
        value: Value::Share(0.25),
        signal: Some(Signal {
            family: Family::Records,
            condition: "long_txt_answers >= {} * names",
            reason: "long-TXT-answers",
        }),
        help: ">= {} of the hour's names answered with a TXT text longer than the long-TXT \
               length below (our choice)",
    };

    /// A name longer than this many octets is long. jbaggs/anomalous-dns
    /// `scripts/an-dns-oversized.zeek`: `oversize_query = 90`.
    pub const LONG_NAME: Threshold = Threshold {
        name: "long_name",
        value: Value::Count(90),
        signal: None,
        help: "long name: more than {} octets (anomalous-dns oversize_query)",
    };

    /// A label at least this long is long. Our choice: tunnels fill labels towards the
    /// 63-octet limit (dns2tcp, iodine); host-name labels past 40 are rare (UUIDs are 36).
    pub const LONG_LABEL: Threshold = Threshold {
        name: "long_label",
        value: Value::Count(40),
        signal: None,
        help: "long label: {} characters or more (our choice; tunnels fill labels towards 63)",
    };

    /// A TXT answer text longer than this many characters (all TXT data of one response) is
    /// long. Splunk ESCU "Detect Long DNS TXT Record Response"
    /// (`detections/network/detect_long_dns_txt_record_response.yml`):
    /// `eval anslen=len(answer) | search anslen>100`.
    pub const LONG_TXT: Threshold = Threshold {
        name: "long_txt",
        value: Value::Count(100),
        signal: None,
        help: "long TXT answer: more than {} characters (Splunk ESCU 'Detect Long DNS TXT \
               Record Response')",
    };

    /// Responses larger than this many bytes are counted (`oversized_responses`), as evidence
    /// only: DNSSEC and EDNS answers pass it routinely. jbaggs/anomalous-dns
    /// `oversize_response = 544`.
    pub const OVERSIZED_RESPONSE: Threshold = Threshold {
        name: "oversized_response",
        value: Value::Count(544),
        signal: None,
        help: "oversized_responses counts responses larger than {} bytes (anomalous-dns \
               oversize_response); DNSSEC and EDNS answers pass it routinely, so it is no signal",
    };
}

/// Every threshold of [`exfil`], signals in `--help` order, then evidence-only ones.
pub const THRESHOLDS: [Threshold; 13] = {
    use thresholds::*;
    [
        UNIQUE_NAMES_PER_HOUR,
        WEIGHTED_ENTROPY,
        ENCODED_SHARE,
        LONG_NAME_SHARE,
        LONG_LABEL_SHARE,
        NULL_QUERIES,
        TXT_QUERIES,
        RECORD_SHARE,
        LONG_TXT_SHARE,
        LONG_NAME,
        LONG_LABEL,
        LONG_TXT,
        OVERSIZED_RESPONSE,
    ]
};

/// The SQL, with `{name}` placeholders.
const TEMPLATE: &str = include_str!("exfil.sql");

/// The signals: (family, SQL condition, `reasons` label).
fn signals() -> impl Iterator<Item = (Family, String, String)> {
    THRESHOLDS.iter().filter_map(|t| {
        let s = t.signal?;
        Some((s.family, t.fill(s.condition, true), t.fill(s.reason, false)))
    })
}

/// `(c1) OR (c2) …` over one family's conditions.
fn any_of(family: Family) -> String {
    signals()
        .filter(|(f, _, _)| *f == family)
        .map(|(_, cond, _)| cond)
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Replaces every `{name}` of `template` whose name is in `vars`; other braces stay.
fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after
            .find('}')
            .and_then(|close| Some((close, vars.iter().find(|(k, _)| *k == &after[..close])?)));
        match value {
            Some((close, (_, v))) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `dnsql exfil`: the SQL of `exfil.sql` with the thresholds and signals of [`THRESHOLDS`].
///
/// The names' features are computed once per distinct `qname`, so a name repeated a thousand
/// times counts once, on the name as sent (`qname_case`, kept also with `--no-raw`; for
/// segments older than that column `question_name(query_raw)`; `qname` when neither has it:
/// the `qname` column is lower-cased, and mixed case is a base64 sign).
pub fn exfil() -> String {
    let k = PROC_KEY;
    let score = signals()
        .map(|(_, cond, _)| format!("CASE WHEN {cond} THEN 1 ELSE 0 END"))
        .collect::<Vec<_>>()
        .join("\n         + ");
    let reasons = signals()
        .map(|(_, cond, label)| format!("CASE WHEN {cond} THEN {} END", sql_str(&label)))
        .collect::<Vec<_>>()
        .join(",\n                   ");
    let flagged = format!(
        "(({}) AND (({}) OR ({})))",
        any_of(Family::Volume),
        any_of(Family::Encoding),
        any_of(Family::Records)
    );
    let mut vars: Vec<(&str, String)> = vec![
        ("key", k.to_owned()),
        ("on_p", join_on("p", "i", k)),
        ("score", score),
        ("reasons", reasons),
        ("flagged", flagged),
        ("not_relayed", super::asked_once()),
    ];
    vars.extend(THRESHOLDS.iter().map(|t| (t.name, t.value.sql())));
    fill(TEMPLATE, &vars)
}

/// Appends `text` to `out` as lines of at most `width` columns, the first after `first`, the
/// others after as many spaces.
fn wrap(out: &mut String, first: &str, text: &str, width: usize) {
    let indent = " ".repeat(first.chars().count());
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.clone();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// `--help` text for `dnsql exfil`: the signals, their thresholds and sources.
pub fn help() -> String {
    const WIDTH: usize = 100;
    let mut out = String::from(
        "\
Ranks (registered domain, process) pairs by signs of DNS tunnelling or exfiltration. A process is
(host, comm, exe, container); its pid count and lowest ten pids are listed. Names without a
registered domain (single labels, public suffixes) are not ranked. Only pairs with at least one
signal are shown.

Every signal is a rate or a share within one hour of one pair (never a total over the queried
window, which would grow with the window and the number of hosts). Signals, in three families:
",
    );
    for family in Family::ALL {
        let mut first = format!("  {:<8} - ", family.name());
        for t in THRESHOLDS
            .iter()
            .filter(|t| t.signal.is_some_and(|s| s.family == family))
        {
            wrap(&mut out, &first, &t.fill(t.help, false), WIDTH);
            first = format!("  {:<8} - ", "");
        }
    }
    out.push_str("Evidence only:\n");
    for t in THRESHOLDS.iter().filter(|t| t.signal.is_none()) {
        wrap(&mut out, "  - ", &t.fill(t.help, false), WIDTH);
    }
    out.push('\n');
    wrap(
        &mut out,
        "",
        "score = most signals met in one hour; flagged = in one hour, a volume signal AND an \
         encoding or records signal (flagged_hours: how many such hours; worst_hour: the first \
         of the highest-scoring hours, whose signals `reasons` lists).",
        WIDTH,
    );
    out.push_str(
        "Rows are ordered flagged first, then by score, flagged hours, distinct names per hour \
         and bytes.",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fixtures, fleet_fixture, process_fixture, query};

    #[test]
    fn one_table_makes_the_sql_and_the_help() {
        let sql = exfil();
        assert!(!sql.contains('{') && !sql.contains('}'), "{sql}");
        let help = help();
        let mut names = std::collections::HashSet::new();
        for t in THRESHOLDS {
            assert!(names.insert(t.name), "{} twice", t.name);
            // Each threshold is used by the SQL and stated in the help.
            let used_in_template = TEMPLATE.contains(&format!("{{{}}}", t.name));
            match t.signal {
                Some(s) => {
                    assert!(s.condition.contains("{}") || used_in_template, "{}", t.name);
                    assert!(sql.contains(&t.fill(s.condition, true)), "{}", t.name);
                    assert!(
                        sql.contains(&sql_str(&t.fill(s.reason, false))),
                        "{}",
                        t.name
                    );
                }
                None => assert!(used_in_template, "{}", t.name),
            }
            assert!(t.help.contains("{}"), "{}", t.name);
            assert!(help.contains(&t.value.text()), "{}: {help}", t.name);
        }
        assert_eq!(signals().count(), 9);
        assert!(help.contains("anomalous-dns"));
        assert!(help.lines().all(|l| l.chars().count() <= 100), "{help}");
        assert!(
            help.contains("  volume   - more than 8 distinct names in one hour"),
            "{help}"
        );
        assert!(
            help.contains(">= 50% of the hour's name characters"),
            "{help}"
        );
        // Signals are per hour: no condition reads a window total.
        assert!(sql.contains("names > 8"), "{sql}");
        assert!(!sql.contains("name_answer_chars") && !sql.contains("info_content"));
        // The evidence columns use the thresholds.
        assert!(sql.contains("name_len > 90) AS long_names"), "{sql}");
        assert!(
            sql.contains("label_len >= 40) AS long_label_names"),
            "{sql}"
        );
        assert!(sql.contains("txt_answer_chars > 100) AS long_txt_answers"));
        // No DISTINCT or array_agg over rows within a group (they hold every value in memory).
        assert!(!sql.contains("count(DISTINCT") && !sql.contains("array_agg(DISTINCT"));
        assert!(
            sql.contains("rbytes > 544) AS oversized_responses"),
            "{sql}"
        );
    }

    #[test]
    fn placeholders_are_filled_and_other_braces_kept() {
        let vars = [("a", "1".to_owned()), ("bc", "{a}".to_owned())];
        assert_eq!(fill("{a}+{bc} {x} {", &vars), "1+{a} {x} {");
        assert_eq!(fill("", &vars), "");
    }

    #[test]
    fn help_wraps_at_words() {
        let mut s = String::new();
        wrap(&mut s, "  - ", "aaa bbb ccc", 10);
        assert_eq!(s, "  - aaa\n    bbb\n    ccc\n");
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
        // The whole capture lies within one hour.
        assert_eq!(t.get(iodine, "peak_names_per_hour"), Some("222"));
        assert_eq!(t.get(iodine, "flagged_hours"), Some("1"));
        assert_eq!(t.get(iodine, "null_queries"), Some("222"));
        assert!(t.get(iodine, "alphabets").unwrap_or("").contains("8bit"));
        assert!(
            t.get(iodine, "reasons")
                .unwrap_or("")
                .contains("NULL-queries")
        );
        let dns2tcp = t.find("domain", "tunnel.com").expect("dns2tcp");
        assert_eq!(t.get(dns2tcp, "peak_names_per_hour"), Some("81"));
        assert_eq!(t.get(dns2tcp, "txt_queries"), Some("81"));
        assert!(t.get(dns2tcp, "alphabets").unwrap_or("").contains("base64"));
        // Its TXT rate and mix decide; most of its answers are short acknowledgements, so the
        // long TXT answers (13 of 81 names, under the 25% share) are evidence only.
        let reasons = t.get(dns2tcp, "reasons").unwrap_or("");
        assert!(reasons.contains("TXT/hour>=50"), "{reasons}");
        assert!(reasons.contains("TXT/NULL/CNAME-mix"), "{reasons}");
        assert_eq!(t.get(dns2tcp, "long_txt_answers"), Some("13"));
        for r in [iodine, dns2tcp] {
            let names: u64 = t
                .get(r, "peak_names_per_hour")
                .expect("n")
                .parse()
                .expect("int");
            assert!(names > thresholds::UNIQUE_NAMES_PER_HOUR.value.count());
        }
    }

    #[tokio::test]
    async fn exfil_attributes_to_processes_and_spares_cdn_names() {
        let (_dir, ctx) = process_fixture().await;
        let t = query(&ctx, &exfil()).await;
        assert_eq!(t.get(0, "domain"), Some("evil.example"));
        assert_eq!(t.get(0, "comm"), Some("dnscat"));
        assert_eq!(t.get(0, "pids"), Some("[4242]"));
        assert_eq!(t.get(0, "pid_count"), Some("1"));
        assert_eq!(t.get(0, "flagged"), Some("true"));
        assert_eq!(t.get(0, "alphabets"), Some("[hex]"));
        // Many distinct CDN names (sequential, or random 13-character ids) are volume only.
        for r in 1..t.rows.len() {
            assert_eq!(t.get(r, "flagged"), Some("false"), "{:?}", t.rows[r]);
        }
        assert!(t.find("domain", "cloudfront.net").is_some());
    }

    #[tokio::test]
    async fn exfil_spares_a_busy_domain_at_fleet_volume_and_flags_a_small_tunnel() {
        let (_dir, ctx) = fleet_fixture(12, 48).await;
        let t = query(&ctx, &exfil()).await;
        // The dnsteal-style loop: 12 names in one hour, each from its own `dig` pid.
        let dig = t.find("domain", "exfil.example").expect("the dig loop");
        assert_eq!(t.get(dig, "flagged"), Some("true"), "{:?}", t.rows[dig]);
        assert_eq!(t.get(dig, "comm"), Some("dig"));
        assert_eq!(t.get(dig, "pid_count"), Some("12"));
        assert_eq!(t.get(dig, "flagged_hours"), Some("1"));
        // Random base64 chunks; as the fixture's raw query keeps or loses their case, they
        // read as base64 or (lower-cased) base32: an encoding either way.
        let alphabets = t.get(dig, "alphabets").unwrap_or("");
        assert!(
            alphabets == "[base64]" || alphabets == "[base32]",
            "{alphabets}"
        );
        let reasons = t.get(dig, "reasons").unwrap_or("");
        assert!(reasons.contains("names/hour>8"), "{reasons}");
        assert!(reasons.contains("encoded-alphabet"), "{reasons}");
        // It is the only flagged pair.
        assert_eq!(dig, 0);
        for r in 1..t.rows.len() {
            assert_eq!(t.get(r, "flagged"), Some("false"), "{:?}", t.rows[r]);
        }
        // The busy ordinary domain has the volume every total threshold of the first version
        // tripped (thousands of names, long names and labels, hundreds of TXT queries with
        // long answers over the window), on every host, and is not flagged on any.
        let shown: Vec<usize> = (0..t.rows.len())
            .filter(|&r| t.get(r, "domain") == Some("googlevideo.com"))
            .collect();
        assert_eq!(shown.len(), 12, "one pair per host");
        for r in shown {
            let n = |c: &str| -> u64 { t.get(r, c).and_then(|v| v.parse().ok()).unwrap_or(0) };
            assert!(n("peak_names_per_hour") > 8);
            assert!(n("txt_queries") >= 50, "{}", n("txt_queries"));
            assert!(n("long_names") >= 48 && n("long_label_names") >= 48);
            assert!(n("long_txt_answers") >= 50);
            assert_eq!(n("flagged_hours"), 0);
        }
    }
}
