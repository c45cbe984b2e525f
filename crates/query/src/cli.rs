//! The command line of `dnsql`: global flags (data, scope, output) and one subcommand per
//! command, with their `--help` texts. Parsing only; `main.rs` dispatches.

use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand};
use dnsledger_query::catalog::source;
use dnsledger_query::output::Format;
use dnsledger_query::recipes::{self, TopBy};

const EXIT_CODES: &str = "\
Tables:
  dns       one row per DNS transaction within --since/--until/--host (what recipes read)
  dns_all   every segment found, whatever the scope (in a lake: every segment listed, and only
            the partitions --host/--since/--until need are listed)
  Both have the segment columns (`dnsql schema`) and the partition columns host, date, hour.

Exit status:
  0    success
  1    failure (bad SQL, no segments found, unreadable data, cannot write the output)
  2    usage error (bad flag or value, parquet output to a terminal)
  3    partial answer: some segments were skipped (truncated, corrupt, foreign, or written by a
       newer recorder); each is named on stderr, the rest were answered
  130  interrupted (Ctrl-C)
A closed output pipe (`dnsql ... | head`) ends dnsql quietly with the status it would have had.";

/// SQL and forensic recipes over dnsledger segments.
///
/// Reads the Parquet segments written by `dnsledger` (one host's data dir, or trees collected
/// from many hosts) as one SQL table, `dns`. Runs unprivileged; never writes to the segments.
#[derive(Debug, Parser)]
#[command(name = "dnsql", version, after_long_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(flatten)]
    pub lake_sql: LakeSqlArgs,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The subcommand's name, as typed.
    pub fn command_name(&self) -> &'static str {
        match &self.command {
            Command::Sql(_) => "sql",
            Command::Schema(_) => "schema",
            Command::Segments => "segments",
            Command::Who(_) => "who",
            Command::Top(_) => "top",
            Command::Timeline(_) => "timeline",
            Command::Exfil => "exfil",
            Command::Nxdomain => "nxdomain",
            Command::Bypass => "bypass",
            Command::Show(_) => "show",
            Command::Export(_) => "export",
            Command::Report(_) => "report",
        }
    }
}

#[derive(Debug, Args)]
pub struct Global {
    /// Segments to read: a data dir (its segments/ tree), a segments/ tree or any directory of
    /// segments, one .parquet file, a glob (quote it), or a lake URL (s3://bucket/prefix,
    /// gs://…, az://…, file:///path; credentials and endpoint from the store's usual
    /// environment, e.g. AWS_ACCESS_KEY_ID, AWS_REGION, AWS_ENDPOINT_URL). Repeatable; trees of
    /// many hosts form one table. inprogress/ directories and non-.parquet files are never
    /// read. In a lake only the partitions --host/--since/--until need are listed, and
    /// footers are cached in ~/.cache/dnsql/footers (DNSQL_FOOTER_CACHE=DIR or off)
    #[arg(
        long = "data",
        value_name = "PATH",
        global = true,
        env = "DNSLEDGER_DATA",
        default_value = "/var/lib/dnsledger"
    )]
    pub data: Vec<PathBuf>,

    /// Only transactions at or after this time: a duration before now (90m, 2h, 7d) or an RFC
    /// 3339 time (2024-05-01T12:00:00Z; no offset means UTC; a bare date means midnight UTC)
    #[arg(long, value_name = "TIME", global = true, value_parser = parse_time_arg)]
    pub since: Option<i64>,

    /// Only transactions before this time (same forms as --since)
    #[arg(long, value_name = "TIME", global = true, value_parser = parse_time_arg)]
    pub until: Option<i64>,

    /// Only segments of this host: its name as recorded (the host=<h> directory, %XX escapes
    /// decoded); repeatable
    #[arg(long = "host", value_name = "HOST", global = true)]
    pub hosts: Vec<String>,

    /// Output format: table (fitted to the terminal), csv, json (one object per line) or
    /// parquet (never to a terminal: use -o or a redirect)
    #[arg(long, value_name = "FORMAT", global = true, default_value = "table", value_parser = parse_format)]
    pub format: Format,

    /// Write the result to FILE instead of stdout (created or truncated once the query is
    /// planned)
    #[arg(short = 'o', long = "output", value_name = "FILE", global = true)]
    pub output: Option<PathBuf>,

    /// At most N rows per result
    #[arg(long, value_name = "N", global = true)]
    pub limit: Option<usize>,

    /// Width the table format fits in, in columns; 0 for no limit. Default: the terminal's
    /// width when stdout is a terminal, else no limit
    #[arg(long, value_name = "COLUMNS", global = true)]
    pub width: Option<usize>,

    /// No progress indicator
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Say on stderr what is read from a lake: each LIST, and how many footers were fetched
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Memory the query's operators may hold (e.g. 512M, 2G; bytes without a unit). Past it,
    /// sorts and aggregations spill to disk; one that cannot spill fails, naming the largest
    /// consumers. The process needs some more on top (Parquet decoding, footers, ~10 KB per
    /// file read)
    #[arg(long, value_name = "SIZE", global = true, env = "DNSQL_MEMORY_LIMIT",
          default_value = "1G", value_parser = parse_size)]
    pub memory_limit: usize,

    /// Directory for spill files (default: $TMPDIR or /tmp)
    #[arg(long, value_name = "DIR", global = true, env = "DNSQL_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run SQL over the table `dns` (and `dns_all`)
    ///
    /// Any DataFusion SQL; several statements separated by `;` print one result each. Statements
    /// that write (INSERT, COPY) are refused. Examples:
    ///   dnsql sql "SELECT host, count(*) FROM dns GROUP BY host"
    ///   dnsql --since 2h sql "SELECT ts, comm, qname FROM dns WHERE rcode_name = 'NXDOMAIN'"
    ///   dnsql sql -f query.sql;  echo "SELECT 1" | dnsql sql
    Sql(SqlArgs),
    /// The columns of `dns`, their types and meaning
    ///
    /// With --ddl athena|trino: the CREATE EXTERNAL TABLE / CREATE TABLE statement for the
    /// lake, generated from the same schema (column types mapped to the engine's)
    Schema(SchemaArgs),
    /// Each segment: host, time range, rows, dropped events, size (footers only, no scan)
    ///
    /// Shows where the record has gaps or lost events before an absence is trusted. Respects
    /// --host, --since and --until.
    Segments,
    /// Which hosts and processes resolved NAME or any name under it
    Who(WhoArgs),
    /// Top processes, domains, rcodes, ... by number of queries
    Top(TopArgs),
    /// One process's DNS in time order
    Timeline(TimelineArgs),
    /// Rank (registered domain, process) pairs by signs of DNS tunnelling or exfiltration
    #[command(after_long_help = recipes::exfil::help())]
    Exfil,
    /// Processes with many failing names (DGA-like bursts), per registered domain
    Nxdomain,
    /// Processes speaking encrypted DNS past the host's resolver (DoT, DoQ, likely DoH)
    ///
    /// One row per host, process, transport and endpoint: connections to port 853 (`dot`
    /// over TCP, `doq` over UDP) and to port 443 of an address on the recorder's DoH list
    /// (`doh-likely`: such addresses may also serve a CDN), with the number of connections and
    /// first/last seen. DoH to an address not on the list is not seen.
    Bypass,
    /// Dig-like rendering of full transactions, decoded from the raw bytes
    Show(ShowArgs),
    /// Every transaction as an OCSF 1.8.0 DNS Activity event (JSON lines or Parquet)
    ///
    /// One event per transaction within --since/--until/--host: class_uid 4003, profile `host`
    /// (actor.process from pid, comm, exe, cmdline, uid, ppid; device.hostname from the host).
    /// --format json (the default here) writes one event per line; --format parquet the same
    /// nested structure as Parquet. Unanswered and unsolicited transactions and messages that
    /// could not be parsed export too (activity 1 Query / 2 Response; `status_detail` holds the
    /// parse error). Examples:
    ///   dnsql --since 24h export --ocsf -o dns.ocsf.jsonl
    ///   dnsql --host web1 export --ocsf --format parquet -o web1.ocsf.parquet
    Export(ExportArgs),
    /// One self-contained HTML page about the window, to attach to a ticket
    ///
    /// Writes -o FILE (or stdout when it is not a terminal): coverage first (per host, when a
    /// recorder ran, gaps without a record, dropped events, lost rows, crash recoveries),
    /// activity over time (queries per bucket per process, NXDOMAIN and unanswered over them),
    /// the top processes and registered domains, the domains first seen in the window (against
    /// the window of the same length before it), exfil/tunnel candidates and NXDOMAIN bursts
    /// (the `exfil` and `nxdomain` recipes), and with --focus/--pid/--comm everything about
    /// one name or process. Each section shows its SQL, which runs as is under `dnsql sql`.
    /// The page loads nothing (inline CSS and SVG, no script), prints on A4 landscape, and
    /// renders the same offline. Without --since the window is the span of the segments found;
    /// without --until it ends now (with --since) or at the last segment. An empty window or a
    /// focus never seen still writes a page that says so (exit 0). Examples:
    ///   dnsql --since 24h report -o incident.html
    ///   dnsql --host web1 --since 2024-05-01T10:00:00Z --until 2024-05-01T14:00:00Z \
    ///         report --focus evil.example -o web1.html
    Report(ReportArgs),
}

#[derive(Debug, Args)]
#[group(id = "focus_on", multiple = false)]
pub struct ReportArgs {
    /// Add a section about NAME and every name under it: who resolved it, when, the answers
    /// received, its timeline, and its first and last transaction rendered like dig
    #[arg(long, value_name = "NAME", group = "focus_on")]
    pub focus: Option<String>,
    /// Add a section about this process id (with one --host, that host's process)
    #[arg(long, value_name = "PID", group = "focus_on")]
    pub pid: Option<u32>,
    /// Add a section about the processes with this name (comm)
    #[arg(long, value_name = "COMM", group = "focus_on")]
    pub comm: Option<String>,
    /// Rows per ranking (top processes and domains, exfil, nxdomain); at least 1
    #[arg(short = 'n', long = "top", value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub top: u16,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Print DDL for this engine instead of the column list
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub ddl: Option<recipes::lake::Ddl>,
    /// Table name in the DDL
    #[arg(
        long,
        value_name = "NAME",
        default_value = "dnsledger",
        requires = "ddl"
    )]
    pub table: String,
    /// Location of the lake in the DDL (the directory holding host=... directories)
    #[arg(
        long,
        value_name = "URL",
        default_value = "s3://BUCKET/dnsledger/segments/",
        requires = "ddl"
    )]
    pub location: String,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Export as OCSF DNS Activity events (the only export format so far; required)
    #[arg(long, required = true)]
    pub ocsf: bool,
}

/// `--print-sql` for the recipes: the SQL for another engine instead of an answer.
#[derive(Debug, Args)]
pub struct LakeSqlArgs {
    /// Print the SQL a recipe runs (who, top, timeline, exfil, nxdomain, bypass, show), rewritten for
    /// the lake engine of --dialect over the hive-partitioned Parquet lake, instead of running
    /// it. dnsql's own SQL functions do not exist there: portable expressions replace them
    /// where there is one (answer_strings, answer_data, date_bin, max_label_len; question_name
    /// becomes qname_case, the name as sent; name_length becomes length); label_entropy,
    /// label_alphabet, info_content and subdomain have none, so `exfil` needs them registered
    /// as UDFs in that engine (the printed SQL says which)
    #[arg(long, global = true)]
    pub print_sql: bool,

    /// Engine for --print-sql: duckdb (read_parquet with hive_partitioning) or spark (Spark
    /// SQL: a temporary view over the Parquet lake with partition discovery)
    #[arg(
        long,
        value_enum,
        value_name = "ENGINE",
        global = true,
        default_value = "duckdb"
    )]
    pub dialect: recipes::lake::Dialect,

    /// Lake root for --print-sql (a path or an s3:// URL); default: the first --data (its
    /// segments/ directory when it has one)
    #[arg(long, value_name = "PATH_OR_URL", global = true)]
    pub lake: Option<String>,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The SQL; without it (and without -f) SQL is read from stdin
    #[arg(value_name = "SQL", conflicts_with = "file")]
    pub sql: Option<String>,
    /// Read the SQL from FILE
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WhoArgs {
    /// A name (example.com matches example.com and every name under it)
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// What to rank
    #[arg(long, value_enum, default_value = "process")]
    pub by: TopBy,
    /// How many
    #[arg(short = 'n', value_name = "N", default_value_t = 10)]
    pub n: usize,
}

#[derive(Debug, Args)]
#[group(id = "process", required = true, multiple = false)]
pub struct TimelineArgs {
    /// Process id (pids are reused: add --host, and --since/--until to pick one process)
    #[arg(long, group = "process")]
    pub pid: Option<u32>,
    /// Process name (comm)
    #[arg(long, group = "process")]
    pub comm: Option<String>,
    /// Executable path
    #[arg(long, group = "process")]
    pub exe: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Which transactions: a NAME, KEY=VALUE terms that must all hold (name, under, id, pid,
    /// uid, comm, exe, host, container, qtype, rcode, status, server, client), or
    /// `where EXPR` with any SQL condition over the columns of dns. With --format other than
    /// table, the selected rows are printed in that format instead
    #[arg(value_name = "SELECTOR", required = true, num_args = 1.., trailing_var_arg = true)]
    pub selector: Vec<String>,
}

/// A size in bytes: a number with an optional K, M, G or T suffix (powers of 1024; an `i` and
/// a `B` after it are accepted: 512MiB, 2GB).
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("`{s}`: unknown unit `{c}` (use K, M, G or T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 512M, 2G)"))?;
    let bytes = n * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= (1 << 20) as f64 && bytes < usize::MAX as f64) {
        return Err(format!("`{s}`: give at least 1M"));
    }
    Ok(bytes as usize)
}

fn parse_time_arg(s: &str) -> Result<i64, String> {
    source::parse_time(s, SystemTime::now())
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("12X").unwrap_err().contains("unknown unit `X`"));
        assert!(
            parse_size("1.2.3")
                .unwrap_err()
                .contains("`1.2.3` is not a size")
        );
        assert!(parse_size("10").unwrap_err().contains("at least 1M"));
    }
}
