//! `dnsql report`: one self-contained HTML page about a window of the record, for people who
//! were not at the terminal — coverage first, then activity, the recipes' findings and,
//! with a focus, everything about one name or process.
//!
//! [`build`] runs the queries (the recipes' SQL as it is, so the page's numbers are the
//! recipes'; the report's own SQL in [`sql`]) through the same session, scope and pruning as
//! every dnsql command, and gathers [`Report`]; [`html::render`] writes the page, with the
//! charts of [`chart`] inlined as SVG. [`coverage`] tells silence from no record using only
//! the segments' footers and names.

pub mod chart;
pub mod coverage;
pub mod html;
pub mod sql;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, SchemaRef};

use crate::catalog::segments::SegmentRow;
use crate::catalog::session::{Dnsql, RunError};
use crate::output::{OutputError, Sink, format_column};
use crate::recipes::{self, Selector, TopBy, show};
use coverage::{GapKind, HostCoverage, Span};

/// What the report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Focus {
    /// A name and every name under it (as `dnsql who`).
    Name(String),
    /// A process (as `dnsql timeline`).
    Process(Selector),
}

/// Everything [`build`] needs besides the session.
#[derive(Debug, Clone)]
pub struct Request {
    /// The window, `[since, until)`; `since_given`/`until_given`: from the flags (else from
    /// the data, or now).
    pub window: Span,
    pub since_given: bool,
    pub until_given: bool,
    /// The window of the same length before it, when there can be data there.
    pub before: Option<Span>,
    /// Segment files found in the window before (partition hours overlapping it).
    pub before_files: usize,
    /// `--host` (empty: all).
    pub hosts: Vec<String>,
    /// Every host the sources hold within `--host`, whether or not it has segments in the
    /// window (each gets a coverage row).
    pub known_hosts: Vec<String>,
    pub focus: Option<Focus>,
    /// Rows per ranking.
    pub top: usize,
    /// `--data` as given.
    pub sources: Vec<String>,
    /// When the report was made (ns since the epoch).
    pub generated_at: i64,
}

/// A table of text cells (NULL as `None`), as the recipes print them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub id: String,
    pub caption: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    /// Columns holding numbers (right-aligned).
    pub numeric: Vec<bool>,
}

/// A remark in a section: plain text, escaped when written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Info(String),
    /// Something the reader must not miss (no data, losses, a name never seen).
    Warn(String),
}

/// SQL shown under a section, with the dnsql command it is (if a recipe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownSql {
    pub caption: String,
    pub command: Option<String>,
    pub sql: String,
}

/// A chart with its legend (label, `#rrggbb`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    pub svg: String,
    pub legend: Vec<(String, String)>,
    pub caption: String,
}

/// One section of the page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    pub id: &'static str,
    pub title: String,
    pub notes: Vec<Note>,
    pub charts: Vec<Chart>,
    pub tables: Vec<Table>,
    /// Dig-like transcripts: (caption, text).
    pub transcripts: Vec<(String, String)>,
    pub sql: Vec<ShownSql>,
}

/// The whole page.
#[derive(Debug, Clone)]
pub struct Report {
    pub request: Request,
    pub bucket_ns: i64,
    pub hosts: Vec<HostCoverage>,
    pub segments: usize,
    pub queries: u64,
    pub nxdomain: u64,
    pub unanswered: u64,
    /// Why the window is empty, if it is.
    pub empty: Option<String>,
    pub sections: Vec<Section>,
    /// The shell command whose `sql` runs every section's SQL over the same data and window.
    pub check_command: String,
}

/// Progress: called with the name of each step before it runs.
pub type Step<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// The result of one statement: its schema and batches (all, or the first rows of it: see
/// [`query_head`]), how many rows it had, and how many were `true` in the column counted.
struct Rows {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    total: usize,
    trues: usize,
}

/// What [`Collect`] keeps of a result while it streams.
#[derive(Default)]
struct Collected {
    batches: Vec<RecordBatch>,
    kept: usize,
    total: usize,
    trues: usize,
    failed: Option<String>,
}

/// A sink keeping the first `keep` rows (copied out of the result's buffers, so the rest is
/// freed as it streams by), counting every row and the `true`s of column `count_true`.
struct Collect {
    state: Arc<Mutex<Collected>>,
    keep: usize,
    count_true: Option<&'static str>,
}

impl Sink for Collect {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), OutputError> {
        let Ok(mut st) = self.state.lock() else {
            return Ok(());
        };
        st.total += batch.num_rows();
        if let Some(name) = self.count_true {
            match batch.column_by_name(name).map(|c| c.as_boolean_opt()) {
                Some(Some(b)) => st.trues += b.true_count(),
                _ => {
                    st.failed = Some(format!("the result has no boolean column `{name}`"));
                }
            }
        }
        let take = batch.num_rows().min(self.keep - st.kept);
        if take == batch.num_rows() && self.keep == usize::MAX {
            st.batches.push(batch.clone());
        } else if take > 0 {
            // A slice would keep the whole batch's buffers alive: copy the rows kept.
            let head = arrow::compute::concat_batches(&batch.schema(), [&batch.slice(0, take)])?;
            st.batches.push(head);
        }
        st.kept += take;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), OutputError> {
        Ok(())
    }
}

/// Runs one statement through the session like `dnsql sql` (corrupt segments found and
/// skipped, writes refused) and keeps its result.
async fn query(dnsql: &Dnsql, sql: &str) -> Result<Rows, RunError> {
    collect(dnsql, sql, usize::MAX, None).await
}

/// [`query`] keeping only the first `keep` rows of the result (a recipe's whole result over a
/// fleet's month is ~200,000 rows, of which the page shows a few), with the number of rows
/// and of `true`s in column `count_true` counted over all of them.
async fn query_head(
    dnsql: &Dnsql,
    sql: &str,
    keep: usize,
    count_true: &'static str,
) -> Result<Rows, RunError> {
    collect(dnsql, sql, keep, Some(count_true)).await
}

async fn collect(
    dnsql: &Dnsql,
    sql: &str,
    keep: usize,
    count_true: Option<&'static str>,
) -> Result<Rows, RunError> {
    let state = Arc::new(Mutex::new(Collected::default()));
    let schema = Arc::new(Mutex::new(None));
    {
        let (st, s) = (state.clone(), schema.clone());
        let mut open = move |sch: SchemaRef| -> Result<Box<dyn Sink>, OutputError> {
            if let Ok(mut slot) = s.lock() {
                *slot = Some(sch);
            }
            // A retry after corrupt segments were skipped starts from nothing.
            if let Ok(mut c) = st.lock() {
                *c = Collected::default();
            }
            Ok(Box::new(Collect {
                state: st.clone(),
                keep,
                count_true,
            }))
        };
        dnsql.run_sql(sql, None, &mut open).await?;
    }
    let schema = schema
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .unwrap_or_else(|| Arc::new(arrow::datatypes::Schema::empty()));
    let c = state
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default();
    if let Some(reason) = c.failed {
        return Err(RunError::Output(OutputError::Arrow(
            arrow::error::ArrowError::InvalidArgumentError(reason),
        )));
    }
    Ok(Rows {
        schema,
        batches: c.batches,
        total: c.total,
        trues: c.trues,
    })
}

impl Rows {
    /// Rows in the whole result (also those not kept).
    fn len(&self) -> usize {
        self.total
    }

    /// The text of `columns` (all if empty) of the first `limit` rows.
    fn table(&self, id: &str, caption: &str, columns: &[&str], limit: usize) -> Table {
        let names: Vec<String> = if columns.is_empty() {
            self.schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        } else {
            columns.iter().map(|c| (*c).to_owned()).collect()
        };
        let numeric = names
            .iter()
            .map(|n| {
                self.schema
                    .field_with_name(n)
                    .is_ok_and(|f| f.data_type().is_numeric())
            })
            .collect();
        let mut rows = Vec::new();
        'batches: for b in &self.batches {
            let cols: Vec<Vec<Option<String>>> = names
                .iter()
                .map(|n| {
                    b.column_by_name(n)
                        .and_then(|c| format_column(c, "").ok())
                        .unwrap_or_else(|| vec![None; b.num_rows()])
                })
                .collect();
            for r in 0..b.num_rows() {
                if rows.len() >= limit {
                    break 'batches;
                }
                rows.push(cols.iter().map(|c| c.get(r).cloned().flatten()).collect());
            }
        }
        Table {
            id: id.to_owned(),
            caption: caption.to_owned(),
            columns: names,
            rows,
            numeric,
        }
    }

    /// Column `name` of every row as i64 (NULL as `None`).
    fn ints(&self, name: &str) -> Vec<Option<i64>> {
        let mut out = Vec::new();
        for b in &self.batches {
            match b
                .column_by_name(name)
                .and_then(|c| cast(c, &DataType::Int64).ok())
            {
                Some(c) => {
                    let c = c.as_primitive::<Int64Type>();
                    out.extend((0..c.len()).map(|i| (!c.is_null(i)).then(|| c.value(i))));
                }
                None => out.extend(std::iter::repeat_n(None, b.num_rows())),
            }
        }
        out
    }

    /// Column `name` of every row as text (NULL as `None`).
    fn texts(&self, name: &str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for b in &self.batches {
            match b
                .column_by_name(name)
                .and_then(|c| format_column(c, "").ok())
            {
                Some(v) => out.extend(v),
                None => out.extend(std::iter::repeat_n(None, b.num_rows())),
            }
        }
        out
    }
}

/// `n` with thousands separators (thin spaces would not copy well: commas).
pub fn count_text(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration for people: "3 h 20 min", "45 s", "2 days 4 h".
pub fn duration_text(ns: i64) -> String {
    let s = ns / 1_000_000_000;
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3_600, (s % 3_600) / 60);
    match (d, h, m) {
        (0, 0, 0) if s == 0 => "< 1 s".into(),
        (0, 0, 0) => format!("{s} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => format!("{d} day{}", if d == 1 { "" } else { "s" }),
        (d, h, _) => format!("{d} day{} {h} h", if d == 1 { "" } else { "s" }),
    }
}

/// Words that can be given to the shell as they are.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `dnsql --data … --since … --until … [--host …]` for this window.
fn scope_command(req: &Request) -> String {
    let mut words = vec!["dnsql".to_owned()];
    for d in &req.sources {
        words.push("--data".into());
        words.push(shell_word(d));
    }
    words.push("--since".into());
    words.push(sql::rfc3339(req.window.start));
    words.push("--until".into());
    words.push(sql::rfc3339(req.window.end));
    for h in &req.hosts {
        words.push("--host".into());
        words.push(shell_word(h));
    }
    words.join(" ")
}

/// Runs every query of the report and gathers the page. `segments` are the window's segments
/// as `dnsql segments` lists them, `unreadable` the (host, partition hour) of those skipped.
pub async fn build(
    dnsql: &Dnsql,
    req: &Request,
    segments: &[SegmentRow],
    unreadable: &[(String, i64)],
    step: Step<'_>,
) -> Result<Report, RunError> {
    let total_steps = 6 + usize::from(req.focus.is_some());
    let done = std::sync::atomic::AtomicUsize::new(0);
    let step = |what: &str| {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        step(&format!("{what} ({n}/{total_steps})"));
    };
    let window = req.window;
    let bin = sql::bucket_ns(window.len());
    let nbins = usize::try_from((window.len() + bin - 1) / bin)
        .unwrap_or(0)
        .max(1);
    let bin_of = |ns: i64| {
        usize::try_from((ns - window.start) / bin)
            .ok()
            .filter(|b| *b < nbins)
    };
    let scope = scope_command(req);
    let unit = format!("queries per {}", sql::bucket_text(bin));

    // Activity: one scan for the coverage's traffic, the activity chart and the totals.
    step("activity");
    let activity_sql = sql::activity(bin, window.start);
    let act = query(dnsql, &activity_sql).await?;
    let buckets = act.ints("bucket");
    let hostnames = act.texts("hostname");
    let comms = act.texts("comm");
    let q = act.ints("queries");
    let nx = act.ints("nxdomain");
    let un = act.ints("unanswered");
    let mut per_host: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut per_comm: HashMap<String, Vec<u64>> = HashMap::new();
    let mut nx_bins = vec![0u64; nbins];
    let mut un_bins = vec![0u64; nbins];
    let (mut total, mut total_nx, mut total_un) = (0u64, 0u64, 0u64);
    for i in 0..buckets.len() {
        let Some(b) = buckets[i].and_then(bin_of) else {
            continue;
        };
        let n = u64::try_from(q[i].unwrap_or(0)).unwrap_or(0);
        match &hostnames[i] {
            Some(h) => {
                per_host.entry(h.clone()).or_insert_with(|| vec![0; nbins])[b] += n;
                let (x, u) = (
                    u64::try_from(nx[i].unwrap_or(0)).unwrap_or(0),
                    u64::try_from(un[i].unwrap_or(0)).unwrap_or(0),
                );
                nx_bins[b] += x;
                un_bins[b] += u;
                total += n;
                total_nx += x;
                total_un += u;
            }
            None => {
                let key = comms[i].clone().unwrap_or_else(|| NO_PROCESS.to_owned());
                per_comm.entry(key).or_insert_with(|| vec![0; nbins])[b] += n;
            }
        }
    }

    // Coverage.
    let mut host_list = req.known_hosts.clone();
    host_list.extend(per_host.keys().cloned());
    let hosts = coverage::coverage(segments, unreadable, &host_list, window);
    let traffic: Vec<Vec<u64>> = hosts
        .iter()
        .map(|h| {
            per_host
                .get(&h.host)
                .cloned()
                .unwrap_or_else(|| vec![0; nbins])
        })
        .collect();
    let empty = (total == 0).then(|| empty_reason(&hosts, segments.len()));
    let mut sections = vec![coverage_section(
        req,
        &hosts,
        &traffic,
        bin,
        segments.len(),
        &scope,
    )];

    // Activity chart.
    let mut ranked: Vec<(String, u64)> = per_comm
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().sum()))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let shown = ranked.len().min(chart::PALETTE.len());
    let mut series = Vec::new();
    let mut legend = Vec::new();
    for (i, (name, n)) in ranked.iter().take(shown).enumerate() {
        series.push(chart::Series {
            colour: chart::PALETTE[i],
            values: per_comm.get(name).cloned().unwrap_or_default(),
        });
        legend.push((
            format!("{} ({})", name, count_text(*n)),
            chart::hex(chart::PALETTE[i]),
        ));
    }
    if ranked.len() > shown {
        let mut other = vec![0u64; nbins];
        let mut n_other = 0;
        for (name, n) in &ranked[shown..] {
            n_other += n;
            if let Some(v) = per_comm.get(name) {
                for (o, x) in other.iter_mut().zip(v) {
                    *o += x;
                }
            }
        }
        series.push(chart::Series {
            colour: chart::OTHER,
            values: other,
        });
        legend.push((
            format!(
                "{} other processes ({})",
                ranked.len() - shown,
                count_text(n_other)
            ),
            chart::hex(chart::OTHER),
        ));
    }
    legend.push((
        format!("NXDOMAIN ({})", count_text(total_nx)),
        chart::hex(chart::NXDOMAIN),
    ));
    legend.push((
        format!("unanswered ({})", count_text(total_un)),
        chart::hex(chart::UNANSWERED),
    ));
    let mut activity = Section {
        id: "activity",
        title: "Activity over time".into(),
        ..Section::default()
    };
    activity.notes.push(Note::Info(format!(
        "{} queries in {} buckets of {}, stacked by process name ({}){}; NXDOMAIN answers and \
         unanswered queries drawn over them.",
        count_text(total),
        nbins,
        sql::bucket_text(bin),
        if ranked.len() > shown {
            format!(
                "the {shown} busiest, the other {} as one",
                ranked.len() - shown
            )
        } else {
            format!("all {}", ranked.len())
        },
        if ranked.iter().any(|(n, _)| n == NO_PROCESS) {
            "; imported captures have no process"
        } else {
            ""
        }
    )));
    match chart::activity(&series, &nx_bins, &un_bins, window, bin, &unit) {
        Ok(svg) => activity.charts.push(Chart {
            svg,
            legend,
            caption: unit.clone(),
        }),
        Err(e) => activity.notes.push(Note::Warn(e.to_string())),
    }
    activity.sql.push(ShownSql {
        caption: "per bucket, per host and per process name (one scan, two grouping sets)".into(),
        command: None,
        sql: activity_sql,
    });
    sections.push(activity);

    // Rankings: the recipes' SQL as it is.
    step("top processes");
    let top_proc_sql = recipes::top(TopBy::Process, req.top);
    let rows = query(dnsql, &top_proc_sql).await?;
    sections.push(Section {
        id: "top-processes",
        title: "Top processes".into(),
        notes: vec![Note::Info(format!(
            "The {} processes (host, pid, name, executable) with the most queries; latency of \
             answered queries in ms (the recipe's p50/p95 are approximate and vary from run to \
             run, so they are left out here).",
            req.top
        ))],
        tables: vec![rows.table(
            "t-top-processes",
            "",
            &[
                "hostname",
                "pid",
                "comm",
                "exe",
                "queries",
                "names",
                "nxdomain",
                "servfail",
                "unanswered",
                "avg_ms",
                "max_ms",
            ],
            req.top,
        )],
        sql: vec![ShownSql {
            caption: "the recipe".into(),
            command: Some(format!("{scope} top --by process -n {}", req.top)),
            sql: top_proc_sql,
        }],
        ..Section::default()
    });

    step("top domains");
    let top_dom_sql = recipes::top(TopBy::RegisteredDomain, req.top);
    let rows = query(dnsql, &top_dom_sql).await?;
    sections.push(Section {
        id: "top-domains",
        title: "Top registered domains".into(),
        notes: vec![Note::Info(format!(
            "The {} registered domains (the name under its public suffix) with the most queries.",
            req.top
        ))],
        tables: vec![rows.table(
            "t-top-domains",
            "",
            &[
                "registered_domain",
                "queries",
                "names",
                "hosts",
                "nxdomain",
                "servfail",
                "unanswered",
                "avg_ms",
            ],
            req.top,
        )],
        sql: vec![ShownSql {
            caption: "the recipe".into(),
            command: Some(format!("{scope} top --by registered-domain -n {}", req.top)),
            sql: top_dom_sql,
        }],
        ..Section::default()
    });

    step("first seen");
    sections.push(first_seen_section(dnsql, req, &scope).await?);

    step("exfil");
    let exfil_sql = recipes::exfil();
    let rows = query_head(dnsql, &exfil_sql, req.top, "flagged").await?;
    let flagged = rows.trues;
    let mut exfil = Section {
        id: "exfil",
        title: "Exfiltration and tunnel candidates".into(),
        ..Section::default()
    };
    exfil.notes.push(if flagged > 0 {
        Note::Warn(format!(
            "{flagged} (registered domain, process) pair{} flagged: in one hour, many distinct \
             names AND encoded-looking names or data-carrying record types. {} pair{} with at \
             least one signal in all.",
            if flagged == 1 { "" } else { "s" },
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        ))
    } else {
        Note::Info(format!(
            "No pair flagged; {} (registered domain, process) pair{} with at least one signal.",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        ))
    });
    if rows.len() > req.top {
        exfil.notes.push(Note::Info(format!(
            "The first {} of {} shown; the command below lists all.",
            req.top,
            rows.len()
        )));
    }
    exfil.tables.push(rows.table(
        "t-exfil",
        "",
        &[
            "domain",
            "hostname",
            "comm",
            "flagged",
            "score",
            "reasons",
            "worst_hour",
            "queries",
            "peak_names_per_hour",
            "peak_weighted_entropy",
            "alphabets",
            "max_label_len",
            "txt_queries",
            "null_queries",
            "bytes_out",
        ],
        req.top,
    ));
    exfil.sql.push(ShownSql {
        caption: "the recipe (its --help explains every signal and threshold)".into(),
        command: Some(format!("{scope} exfil")),
        sql: exfil_sql,
    });
    sections.push(exfil);

    step("nxdomain");
    let nx_sql = recipes::nxdomain();
    let rows = query_head(dnsql, &nx_sql, req.top, "excessive").await?;
    let excessive = rows.trues;
    let mut nxs = Section {
        id: "nxdomain",
        title: "NXDOMAIN bursts".into(),
        ..Section::default()
    };
    nxs.notes.push(if rows.len() == 0 {
        Note::Info("No failing answers in the window.".into())
    } else {
        Note::Info(format!(
            "{} (process, registered domain) row{} with failing answers, most failing names \
             first; {} row{} of processes past {} failures (Splunk's \"Excessive DNS \
             Failures\"). A DGA shows many names failing within a minute.",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" },
            excessive,
            if excessive == 1 { "" } else { "s" },
            recipes::EXCESSIVE_FAILURES
        ))
    });
    nxs.tables.push(rows.table(
        "t-nxdomain",
        "",
        &[
            "hostname",
            "comm",
            "domain",
            "failing_names",
            "failures",
            "nxdomain",
            "servfail",
            "peak_failures_per_minute",
            "excessive",
            "first_failure",
            "last_failure",
            "names",
        ],
        req.top,
    ));
    nxs.sql.push(ShownSql {
        caption: "the recipe".into(),
        command: Some(format!("{scope} nxdomain")),
        sql: nx_sql,
    });
    sections.push(nxs);

    if let Some(focus) = &req.focus {
        step("focus");
        sections.push(
            focus_section(
                dnsql,
                req,
                focus,
                &Frame {
                    scope: &scope,
                    bin,
                    nbins,
                    unit: &unit,
                    segments: segments.len(),
                },
            )
            .await?,
        );
    }

    Ok(Report {
        request: req.clone(),
        bucket_ns: bin,
        segments: segments.len(),
        hosts,
        queries: total,
        nxdomain: total_nx,
        unanswered: total_un,
        empty,
        sections,
        check_command: format!("{scope} sql"),
    })
}

/// How the activity chart names rows without a process (imported captures).
const NO_PROCESS: &str = "(no process)";

/// Why a window holds no transaction, from its coverage.
fn empty_reason(hosts: &[HostCoverage], segments: usize) -> String {
    let recorded = hosts.iter().filter(|h| !h.recorded.is_empty()).count();
    if segments == 0 {
        "No transaction in the window: no segment of any host in scope overlaps it — nothing \
         was recorded (or kept) for this time. See the coverage below for where records exist."
            .into()
    } else if recorded > 0 {
        format!(
            "No transaction in the window, although {recorded} host{} recorded part of it: the \
             hosts were silent there. The coverage below shows which stretches were recorded.",
            if recorded == 1 { "" } else { "s" }
        )
    } else {
        "No transaction in the window.".into()
    }
}

fn coverage_section(
    req: &Request,
    hosts: &[HostCoverage],
    traffic: &[Vec<u64>],
    bin: i64,
    segments: usize,
    scope: &str,
) -> Section {
    let window = req.window;
    let mut s = Section {
        id: "coverage",
        title: "Coverage: what was recorded".into(),
        ..Section::default()
    };
    if segments == 0 {
        s.notes.push(Note::Warn(
            "No host has a segment in the window: nothing was recorded (or kept) for this time."
                .into(),
        ));
    }
    let lossy: Vec<&HostCoverage> = hosts.iter().filter(|h| h.lost_anything()).collect();
    for h in &lossy {
        s.notes.push(Note::Warn(format!(
            "{}: events were lost — {} dropped in the kernel, {} in user space, {} rows not \
             written. Absence of a query there is not proof it did not happen.",
            h.host,
            count_text(h.dropped_kernel),
            count_text(h.dropped_user),
            count_text(h.rows_lost)
        )));
    }
    for h in hosts.iter().filter(|h| h.recovered_runs > 0) {
        s.notes.push(Note::Warn(format!(
            "{}: the recorder died {} time{} (a crash or kill) and its spool was recovered at the \
             next start ({} bytes of torn spool cut).",
            h.host,
            h.recovered_runs,
            if h.recovered_runs == 1 { "" } else { "s" },
            count_text(h.recovery_cut_bytes)
        )));
    }
    for h in hosts.iter().filter(|h| h.imported > 0) {
        s.notes.push(Note::Info(format!(
            "{}: {} segment{} imported from packet captures (dnsledger import): they cover only \
             the span of their packets, and have no process.",
            h.host,
            h.imported,
            if h.imported == 1 { "" } else { "s" }
        )));
    }
    for h in hosts.iter().filter(|h| h.unreadable > 0) {
        s.notes.push(Note::Warn(format!(
            "{}: {} segment{} could not be read and {} left out of every figure.",
            h.host,
            h.unreadable,
            if h.unreadable == 1 { "" } else { "s" },
            if h.unreadable == 1 { "is" } else { "are" }
        )));
    }
    s.notes.insert(
        0,
        Note::Info(format!(
            "{} segment{} of {} host{}. A live recorder run covers its time from its start to its \
         last sealed transaction, silences included; a stretch no run covers, or where a \
         run's segment is missing, has no record: a query there may have happened unseen. \
         Imported captures cover the span of their own packets.",
            count_text(segments as u64),
            if segments == 1 { "" } else { "s" },
            hosts.len(),
            if hosts.len() == 1 { "" } else { "s" }
        )),
    );
    if !hosts.is_empty() {
        match chart::coverage_strip(hosts, traffic, window, bin) {
            Ok(svg) => s.charts.push(Chart {
                svg,
                legend: vec![
                    ("no record".into(), chart::hex(chart::NO_RECORD)),
                    ("recorded, no DNS".into(), chart::hex(chart::SILENT)),
                    (
                        format!("DNS (height: queries per {})", sql::bucket_text(bin)),
                        chart::hex(chart::TRAFFIC),
                    ),
                    ("events dropped / rows lost".into(), chart::hex(chart::LOSS)),
                    ("crash recovered".into(), chart::hex(chart::RECOVERED)),
                    ("unreadable segment".into(), chart::hex(chart::UNREADABLE)),
                ],
                caption: "per host across the window".into(),
            }),
            Err(e) => s.notes.push(Note::Warn(e.to_string())),
        }
    }
    let len = window.len().max(1);
    let mut table = Table {
        id: "t-coverage".into(),
        caption: "per host".into(),
        columns: [
            "host",
            "segments",
            "rows",
            "recorded_pct",
            "longest_gap",
            "runs",
            "dropped_kernel",
            "dropped_user",
            "rows_lost",
            "cut_by_cap",
            "crashes_recovered",
            "unreadable",
        ]
        .map(String::from)
        .to_vec(),
        numeric: vec![
            false, true, true, true, false, true, true, true, true, true, true, true,
        ],
        rows: Vec::new(),
    };
    for h in hosts {
        let pct = 100.0 * h.recorded_ns() as f64 / len as f64;
        // Seconds of imported packets in a long window: more digits than 0.0.
        let pct = if pct > 0.0 && pct < 0.1 {
            format!("{pct:.4}")
        } else {
            format!("{pct:.1}")
        };
        table.rows.push(vec![
            Some(h.host.clone()),
            Some(h.segments.to_string()),
            Some(h.rows.to_string()),
            Some(pct),
            Some(
                h.gaps
                    .first()
                    .map(|g| duration_text(g.span.len()))
                    .unwrap_or_else(|| "none".into()),
            ),
            Some(h.runs.to_string()),
            Some(h.dropped_kernel.to_string()),
            Some(h.dropped_user.to_string()),
            Some(h.rows_lost.to_string()),
            Some(h.cut_by_cap.to_string()),
            Some(h.recovered_runs.to_string()),
            Some(h.unreadable.to_string()),
        ]);
    }
    s.tables.push(table);
    let mut gaps = Table {
        id: "t-gaps".into(),
        caption: "the longest stretches without a record (up to 5 per host)".into(),
        columns: ["host", "from", "to", "length", "why"]
            .map(String::from)
            .to_vec(),
        numeric: vec![false; 5],
        rows: Vec::new(),
    };
    for h in hosts {
        for g in h.gaps.iter().take(5) {
            gaps.rows.push(vec![
                Some(h.host.clone()),
                Some(sql::rfc3339(g.span.start)),
                Some(sql::rfc3339(g.span.end)),
                Some(duration_text(g.span.len())),
                Some(
                    match g.kind {
                        GapKind::NoRecorder => "no recorder run covers it",
                        GapKind::MissingSegments => "segments of a run are missing",
                    }
                    .into(),
                ),
            ]);
        }
    }
    if !gaps.rows.is_empty() {
        s.tables.push(gaps);
    }
    if let Some(b) = req.before {
        s.notes.push(Note::Info(format!(
            "The window before ({} to {}), used for \"first seen\": {} segment file{} found.",
            sql::rfc3339(b.start),
            sql::rfc3339(b.end),
            req.before_files,
            if req.before_files == 1 { "" } else { "s" }
        )));
    }
    s.sql.push(ShownSql {
        caption: "from the segments' footers (no scan): the same facts per segment".into(),
        command: Some(format!("{scope} segments")),
        sql: String::new(),
    });
    s
}

async fn first_seen_section(
    dnsql: &Dnsql,
    req: &Request,
    scope: &str,
) -> Result<Section, RunError> {
    let mut s = Section {
        id: "first-seen",
        title: "Domains first seen in the window".into(),
        ..Section::default()
    };
    let Some(before) = req.before else {
        s.notes.push(Note::Warn(
            "The window starts at the first segment in scope: there is no record before it to \
             compare with, so every domain would be \"new\". Give --since to compare with the \
             window of the same length before it."
                .into(),
        ));
        return Ok(s);
    };
    let limit = req.top.max(25);
    let sql = sql::first_seen(before.start, before.end, &req.hosts, limit);
    let rows = query(dnsql, &sql).await?;
    let new = rows
        .ints("new_domains")
        .first()
        .copied()
        .flatten()
        .unwrap_or(0);
    if req.before_files == 0 {
        s.notes.push(Note::Warn(format!(
            "Nothing was recorded in the {} before the window ({} to {}): every domain of the \
             window counts as new.",
            duration_text(before.len()),
            sql::rfc3339(before.start),
            sql::rfc3339(before.end)
        )));
    }
    s.notes.push(Note::Info(format!(
        "{new} registered domain{} queried in the window and not in the {} before it ({} to \
         {}); the first {} by first query shown.",
        if new == 1 { "" } else { "s" },
        duration_text(before.len()),
        sql::rfc3339(before.start),
        sql::rfc3339(before.end),
        rows.len()
    )));
    s.tables.push(rows.table(
        "t-first-seen",
        "",
        &[
            "domain",
            "first_seen",
            "last_seen",
            "queries",
            "names",
            "hosts",
            "nxdomain",
        ],
        limit,
    ));
    s.sql.push(ShownSql {
        caption: "window vs the window before (dns_all with the same partition pruning)".into(),
        command: Some(format!("{scope} sql")),
        sql,
    });
    Ok(s)
}

/// What every section of one report shares: the check command's scope, the buckets, the
/// number of segments in the window.
#[derive(Clone, Copy)]
struct Frame<'a> {
    scope: &'a str,
    bin: i64,
    nbins: usize,
    unit: &'a str,
    segments: usize,
}

async fn focus_section(
    dnsql: &Dnsql,
    req: &Request,
    focus: &Focus,
    frame: &Frame<'_>,
) -> Result<Section, RunError> {
    let Frame {
        scope,
        bin,
        nbins,
        unit,
        segments,
    } = *frame;
    let (title, pred, what) = match focus {
        Focus::Name(n) => (
            format!("Focus: {}", recipes::normalize_name(n)),
            recipes::who::under_name_predicate(n),
            format!(
                "the name {} (and names under it)",
                recipes::normalize_name(n)
            ),
        ),
        Focus::Process(sel) => {
            let what = match sel {
                Selector::Pid { pid, host: Some(h) } => format!("pid {pid} on {h}"),
                Selector::Pid { pid, host: None } => format!("pid {pid}"),
                Selector::Comm(c) => format!("processes named {c}"),
                Selector::Exe(e) => format!("processes running {e}"),
            };
            (
                format!("Focus: {what}"),
                recipes::timeline::predicate(sel),
                what,
            )
        }
    };
    let mut s = Section {
        id: "focus",
        title,
        ..Section::default()
    };

    // When: per bucket.
    let act_sql = sql::focus_activity(&pred, bin, req.window.start);
    let act = query(dnsql, &act_sql).await?;
    let mut bins = vec![0u64; nbins];
    let mut nx = vec![0u64; nbins];
    let mut un = vec![0u64; nbins];
    let (b, q, x, u) = (
        act.ints("bucket"),
        act.ints("queries"),
        act.ints("nxdomain"),
        act.ints("unanswered"),
    );
    let mut total = 0u64;
    for i in 0..b.len() {
        let Some(k) = b[i]
            .and_then(|t| usize::try_from((t - req.window.start) / bin).ok())
            .filter(|k| *k < nbins)
        else {
            continue;
        };
        let n = u64::try_from(q[i].unwrap_or(0)).unwrap_or(0);
        bins[k] += n;
        total += n;
        nx[k] += u64::try_from(x[i].unwrap_or(0)).unwrap_or(0);
        un[k] += u64::try_from(u[i].unwrap_or(0)).unwrap_or(0);
    }
    if total == 0 {
        s.notes.push(Note::Warn(format!(
            "Never seen: {what} does not appear in the window ({} to {}) on {} ({} segment{} \
             searched; the coverage above shows what they cover).",
            sql::rfc3339(req.window.start),
            sql::rfc3339(req.window.end),
            if req.hosts.is_empty() {
                "any host".to_owned()
            } else {
                req.hosts.join(", ")
            },
            count_text(segments as u64),
            if segments == 1 { "" } else { "s" }
        )));
        s.sql.push(ShownSql {
            caption: "per bucket".into(),
            command: None,
            sql: act_sql,
        });
        return Ok(s);
    }
    s.notes.push(Note::Info(format!(
        "{} quer{} for {what} in the window.",
        count_text(total),
        if total == 1 { "y" } else { "ies" }
    )));
    match chart::activity(
        &[chart::Series {
            colour: chart::PALETTE[0],
            values: bins,
        }],
        &nx,
        &un,
        req.window,
        bin,
        unit,
    ) {
        Ok(svg) => s.charts.push(Chart {
            svg,
            legend: vec![
                ("queries".into(), chart::hex(chart::PALETTE[0])),
                ("NXDOMAIN".into(), chart::hex(chart::NXDOMAIN)),
                ("unanswered".into(), chart::hex(chart::UNANSWERED)),
            ],
            caption: format!("{unit}, {what}"),
        }),
        Err(e) => s.notes.push(Note::Warn(e.to_string())),
    }
    s.sql.push(ShownSql {
        caption: "when: per bucket".into(),
        command: None,
        sql: act_sql,
    });

    // Who (and the answers they got) / what the process asked.
    match focus {
        Focus::Name(n) => {
            let who_sql = recipes::who(n);
            let rows = query(dnsql, &who_sql).await?;
            s.tables.push(rows.table(
                "t-focus-who",
                "who resolved it, and the answers received",
                &[
                    "hostname",
                    "comm",
                    "exe",
                    "pid",
                    "uid",
                    "container_id",
                    "queries",
                    "names",
                    "answered",
                    "unanswered",
                    "nxdomain",
                    "first_seen",
                    "last_seen",
                    "queried_names",
                    "qtypes",
                    "answers_received",
                ],
                usize::MAX,
            ));
            s.sql.push(ShownSql {
                caption: "who: the recipe".into(),
                command: Some(format!("{scope} who {}", shell_word(n))),
                sql: who_sql,
            });
        }
        Focus::Process(_) => {
            let names_sql = sql::focus_names(&pred, 25);
            let rows = query(dnsql, &names_sql).await?;
            s.tables.push(rows.table(
                "t-focus-names",
                "the names it asked for, and the answers received",
                &[],
                25,
            ));
            s.sql.push(ShownSql {
                caption: "names asked".into(),
                command: None,
                sql: names_sql,
            });
        }
    }

    // The timeline.
    const TIMELINE_ROWS: usize = 50;
    let (timeline_sql, command) = match focus {
        Focus::Name(_) => (recipes::timeline::timeline_where(&pred), None),
        Focus::Process(sel) => (
            recipes::timeline(sel),
            Some(match sel {
                Selector::Pid { pid, .. } => format!("{scope} timeline --pid {pid}"),
                Selector::Comm(c) => format!("{scope} timeline --comm {}", shell_word(c)),
                Selector::Exe(e) => format!("{scope} timeline --exe {}", shell_word(e)),
            }),
        ),
    };
    let limited = format!("{timeline_sql}\nLIMIT {TIMELINE_ROWS}");
    let rows = query(dnsql, &limited).await?;
    s.tables.push(rows.table(
        "t-focus-timeline",
        &format!(
            "timeline{}",
            if total as usize > TIMELINE_ROWS {
                format!(" (the first {TIMELINE_ROWS} of {})", count_text(total))
            } else {
                String::new()
            }
        ),
        &[
            "ts",
            "hostname",
            "pid",
            "comm",
            "qname",
            "qtype",
            "rcode",
            "status",
            "latency_ms",
            "answers",
            "server_ip",
            "transport",
        ],
        TIMELINE_ROWS,
    ));
    s.sql.push(ShownSql {
        caption: "timeline".into(),
        command,
        sql: timeline_sql,
    });

    // The first and the last transaction, dig-like.
    let show_sql = show::show_where(&pred);
    for (caption, sql) in [
        ("first transaction", sql::first_row(&show_sql)),
        ("last transaction", sql::last_row(&show_sql)),
    ] {
        let rows = query(dnsql, &sql).await?;
        let mut text = Vec::new();
        for b in &rows.batches {
            if show::render(b, &mut text).is_err() {
                break;
            }
        }
        s.transcripts.push((
            caption.to_owned(),
            String::from_utf8_lossy(&text).into_owned(),
        ));
        if total == 1 {
            break;
        }
    }
    s.sql.push(ShownSql {
        caption: "first and last transaction (dnsql show renders them)".into(),
        command: None,
        sql: sql::first_row(&show_sql),
    });
    Ok(s)
}
