//! The command line of `dnsledger`: clap definitions only. Settings shared by `record` and
//! `import` are one struct, [`Overrides`] (also the TOML file's keys); the commands that only
//! read a data directory share [`DataDirArg`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use dnsledger::capture::privs;
use dnsledger::config::{self, Overrides, PortList, RECORD_ONLY, parse_port_list};
use dnsledger::live::{snoop, top};
use dnsledger::store::ship;
use dnsledger_lake::LakeUrl;

/// A DNS flight recorder: which process asked for which name, when, and what it got back.
#[derive(Debug, Parser)]
#[command(name = "dnsledger", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture DNS with eBPF until SIGINT/SIGTERM, writing segments under the data directory.
    #[command(long_about = privs::record_help())]
    Record(RecordArgs),
    /// Feed pcap/pcapng files through the same decode -> pair -> segment pipeline.
    ///
    /// Process columns stay empty. Needs no privileges.
    Import(ImportArgs),
    /// Probe the kernel for everything recording needs; exit 0 only if recording can work.
    Check(CheckArgs),
    /// Show the running recorder's counters (drops, losses) and the data directory's state.
    ///
    /// Exit 0 when a recorder is running and publishing, 1 otherwise.
    Status(StatusArgs),
    /// Delete sealed segments, oldest first, until every limit holds (for cron).
    ///
    /// Safe while the recorder runs and from two jobs at once (they take turns on a lock).
    /// Never touches in-progress data. Prints each deleted segment and the space freed.
    Prune(PruneArgs),
    /// Upload sealed segments to a data lake (s3://, gs://, az://, file://), once each.
    ///
    /// Each segment becomes <prefix>/host=…/date=…/hour=…/<file>.parquet, uploaded with one
    /// create-only PUT (If-None-Match: *): never overwritten, never half-visible. A ledger per
    /// destination in <DATA_DIR>/shipped/ records what is confirmed, so a re-run (or a run after
    /// a crash) uploads only what is missing. An object already at a key is compared with the
    /// local file: identical counts as shipped, different is reported and left alone.
    /// Prints each uploaded segment's URL and a summary line.
    ///
    /// Exit 0 when nothing failed; 1 when a segment failed or the destination is unreachable
    /// or refuses (nothing local is ever deleted); 2 for a bad URL or flag.
    #[command(after_long_help = ship::ENV_HELP)]
    Ship(ShipArgs),
    /// Merge each closed hour's segments of a host into one segment (for cron).
    ///
    /// Readers never see a row twice or miss one while it runs: the new segment names the ones
    /// it replaces, which are deleted only after it is in place; a killed run is finished by
    /// the next. Only hours that ended (before --before) with nothing in progress or spooled.
    /// Prints one line per partition compacted.
    Compact(CompactArgs),
    /// Print each DNS transaction as it completes, one line each (like DNSWatch).
    ///
    /// Follows the recorder running in the data directory (through <DATA_DIR>/live.sock) when
    /// there is one, else loads and attaches its own capture (root needed; nothing is written).
    /// Says which on stderr. Runs until Ctrl-C/SIGTERM (exit 0) or --count transactions.
    Snoop(SnoopArgs),
    /// A live, refreshing table of DNS activity per process (or executable, container, pid).
    ///
    /// Keys: q/Esc/Ctrl-C quit; sort by c queries, n name, a A, x NXDOMAIN, s SERVFAIL,
    /// l p99 latency, r reverse; g groups by comm, pid, exe, container, client in turn. Same
    /// sources as `snoop`.
    Top(TopArgs),
}

/// `--data-dir` of the commands that only read a data directory.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Data directory. [default: /var/lib/dnsledger] [env: DNSLEDGER_DATA]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArg {
    /// Flag, else environment, else default.
    pub fn resolve(&self) -> PathBuf {
        config::data_dir(self.data_dir.as_deref(), config::process_env)
    }
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub overrides: Overrides,
}

#[derive(Debug, Args)]
#[command(mut_args(hide_record_only))]
pub struct ImportArgs {
    #[command(flatten)]
    pub overrides: Overrides,
    /// Host name to store in the rows and the segment path. [default: this host's name]
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Capture files (pcap or pcapng).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// `import` parses the record-only flags only to reject them by name.
fn hide_record_only(a: clap::Arg) -> clap::Arg {
    let hide = RECORD_ONLY.contains(&a.get_id().as_str());
    a.hide(hide)
}

/// `--ports` of the commands that capture on their own without recording (`check`, and the
/// live views when no recorder runs); `record` and `import` have theirs in [`Overrides`].
#[derive(Debug, Args)]
pub struct PortsArg {
    /// DNS ports, comma-separated, at most 16. [default: 53]
    #[arg(long, value_name = "PORTS", value_parser = parse_port_list)]
    pub ports: Option<PortList>,
}

impl PortsArg {
    /// The flag, else the default ports.
    pub fn resolve(&self) -> Vec<u16> {
        self.ports
            .as_ref()
            .map_or_else(|| config::DEFAULT_PORTS.to_vec(), |p| p.0.clone())
    }
}

#[derive(Debug, Args)]
#[command(mut_arg("ports", |a| a.help(
    "DNS ports to configure the probe programs with. [default: 53]"
)))]
pub struct CheckArgs {
    #[command(flatten)]
    pub ports: PortsArg,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

#[derive(Debug, Args)]
#[command(mut_arg("data_dir", |a| a.help(
    "Data directory, or a collected segments tree (host=... directories). \
     [default: /var/lib/dnsledger] [env: DNSLEDGER_DATA]"
)))]
pub struct PruneArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Delete segments older than this (e.g. 7d, 36h).
    #[arg(long, value_name = "AGE", value_parser = config::parse_duration)]
    pub max_age: Option<Duration>,
    /// Delete oldest segments until the rest take at most this much (e.g. 20GiB).
    #[arg(long, value_name = "SIZE", value_parser = config::parse_size)]
    pub max_size: Option<u64>,
    /// Only this host's segments (repeatable), as the host names itself. [default: all hosts]
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Say what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The destination segments are shipped to: segments not in its ledger are kept. Without
    /// it (and without ship-to in --config or DNSLEDGER_SHIP_TO), segments missing from any
    /// ledger in <DATA_DIR>/shipped are kept. [env: DNSLEDGER_SHIP_TO]
    #[arg(long, value_name = "URL", value_parser = config::parse_lake_url)]
    pub ship_to: Option<LakeUrl>,
    /// Delete segments the limits select even if they are not shipped yet.
    #[arg(long)]
    pub prune_unshipped: bool,
    /// TOML file of `record` (its data-dir and ship-to keys are used).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ShipArgs {
    /// Destination: s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or
    /// file:///path. [default: ship-to of --config] [env: DNSLEDGER_SHIP_TO]
    #[arg(long, value_name = "URL", value_parser = config::parse_lake_url)]
    pub to: Option<LakeUrl>,
    /// Data directory, or a collected segments tree (host=... directories).
    /// [default: /var/lib/dnsledger] [env: DNSLEDGER_DATA]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML file of `record` (its data-dir and ship-to keys are used).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Say what would be uploaded; upload nothing, write no ledger.
    #[arg(long)]
    pub dry_run: bool,
    /// List the destination first and upload again what the ledger says is shipped but the
    /// lake lacks (a bucket emptied or restored). Needs permission to list the bucket.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Args)]
#[command(mut_arg("data_dir", |a| a.help(
    "Data directory, or a collected segments tree (host=... directories). \
     [default: /var/lib/dnsledger] [env: DNSLEDGER_DATA]"
)))]
pub struct CompactArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Compact a lake instead: s3://bucket/prefix, gs://…, az://…, file:///dir (credentials
    /// from the environment, e.g. AWS_*). Run one compactor per prefix.
    #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
    pub lake: Option<String>,
    /// Only this host's segments (repeatable), as the host names itself. [default: all hosts]
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Only hours that ended at or before this time: RFC 3339 (2026-12-04T10:00:00Z) or an
    /// age (e.g. 6h = six hours ago). [default: the start of the current hour]
    #[arg(long, value_name = "TIME", value_parser = config::parse_time_or_age)]
    pub before: Option<i64>,
    /// Say what would be compacted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
#[command(mut_arg("data_dir", |a| a.help(
    "Data directory of the recorder to follow. [default: /var/lib/dnsledger] [env: DNSLEDGER_DATA]"
)))]
#[command(mut_arg("ports", |a| a.help(
    "DNS ports to capture when capturing on our own. [default: 53]"
)))]
pub struct LiveArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Never follow a recorder: always capture with our own BPF programs.
    #[arg(long)]
    pub standalone: bool,
    #[command(flatten)]
    pub ports: PortsArg,
    /// When capturing on our own: a query with no response after this long is shown as
    /// unanswered. [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub pair_timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct SnoopArgs {
    #[command(flatten)]
    pub live: LiveArgs,
    /// Columns to print, comma-separated (text format); `--fields help` lists them.
    /// [default: time,pid,comm,qtype,qname,rcode,latency,answers]
    #[arg(long, short = 'l', visible_alias = "list", value_name = "FIELDS")]
    pub fields: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = snoop::Format::Text)]
    pub format: snoop::Format,
    /// Print each transaction in full, decoded like `dig` (the `dnsql show` view).
    #[arg(long, short = 'd', conflicts_with = "format")]
    pub detailed: bool,
    /// Only this process id (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Only this process name (comm; repeatable).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Only query names matching this pattern (`*`, `?` wildcards, case ignored; repeatable).
    #[arg(long = "name", value_name = "PATTERN", value_parser = snoop::parse_name_pattern)]
    pub names: Vec<glob::Pattern>,
    /// Only this response code, e.g. NXDOMAIN, SERVFAIL, or `unanswered` (repeatable).
    #[arg(long = "rcode", value_name = "RCODE")]
    pub rcodes: Vec<String>,
    /// Only this query type, e.g. A, AAAA, PTR (repeatable).
    #[arg(long = "qtype", value_name = "TYPE")]
    pub qtypes: Vec<String>,
    /// Exit after printing this many transactions. [default: run until interrupted]
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// No header line in the text format.
    #[arg(long)]
    pub no_header: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub live: LiveArgs,
    /// Group rows by this key at start (`g` cycles). `client` (alias `--by client`) shows the
    /// clients of the host's DNS servers: from a followed recorder running with --serve-side,
    /// or from top's own capture, which always takes the server side too; the other groupings
    /// count the client side only.
    #[arg(long, visible_alias = "by", value_enum, default_value_t = top::Group::Comm)]
    pub group: top::Group,
    /// Sort key at start.
    #[arg(long, value_enum, default_value_t = top::SortKey::Queries)]
    pub sort: top::SortKey,
    /// Screen refresh interval. [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration, default_value = "1s")]
    pub interval: Duration,
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
    fn import_hides_record_only_flags_but_parses_them() {
        let cmd = Cli::command();
        let import = cmd.find_subcommand("import").expect("import");
        for id in RECORD_ONLY {
            let arg = import
                .get_arguments()
                .find(|a| a.get_id() == id)
                .expect("record-only arg");
            assert!(arg.is_hide_set(), "{id}");
        }
        let cli =
            Cli::try_parse_from(["dnsledger", "import", "--stacks", "x.pcap"]).expect("parse");
        let Command::Import(a) = cli.command else {
            panic!("not import")
        };
        assert_eq!(a.overrides.record_only_flag().as_deref(), Some("--stacks"));
    }
}
