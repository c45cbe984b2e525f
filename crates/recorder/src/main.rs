//! `dnsledger`: records every DNS transaction on this host, with the process that made it,
//! into sealed zstd Parquet segments.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tracing::{debug, error, info, warn};

use dnsledger::bpf::events::{Clock, boot_now};
use dnsledger::bpf::{self, BpfConfig, KernelCounters};
use dnsledger::config::{self, FileConfig, Settings};
use dnsledger::live::LivePublisher;
use dnsledger::pair::NoAttribution;
use dnsledger::pcap::PcapSource;
use dnsledger::pipeline::{HostFacts, LiveAttribution, Pipeline, RingFeed, recover_spool};
use dnsledger::procs::ProcessTable;

/// A DNS flight recorder: which process asked for which name, when, and what it got back.
#[derive(Debug, Parser)]
#[command(name = "dnsledger", version, propagate_version = true)]
struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture DNS with eBPF until SIGINT/SIGTERM, writing segments under the data directory.
    ///
    /// Needs root (or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN), a kernel with BTF
    /// and a cgroup v2 hierarchy. Logs "recording" once every program is attached.
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
    /// Print each DNS transaction as it completes, one line each (like DNSWatch).
    ///
    /// Follows the recorder running in the data directory (through <DATA_DIR>/live.sock) when
    /// there is one, else loads and attaches its own capture (root needed; nothing is written).
    /// Says which on stderr. Runs until Ctrl-C/SIGTERM (exit 0) or --count transactions.
    Snoop(SnoopArgs),
    /// A live, refreshing table of DNS activity per process (or executable, container, pid).
    ///
    /// Keys: q/Esc/Ctrl-C quit; sort by c queries, n name, a A, x NXDOMAIN, s SERVFAIL,
    /// l p99 latency, r reverse; g groups by comm, pid, exe, container in turn. Same sources
    /// as `snoop`.
    Top(TopArgs),
}

#[derive(Debug, Args)]
struct LiveArgs {
    /// Data directory of the recorder to follow. [default: /var/lib/dnsledger]
    #[arg(long, env = "DNSLEDGER_DATA", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Never follow a recorder: always capture with our own BPF programs.
    #[arg(long)]
    standalone: bool,
    /// DNS ports to capture when capturing on our own. [default: 53]
    #[arg(long, value_name = "PORTS", value_parser = parse_port_list)]
    ports: Option<PortList>,
    /// When capturing on our own: a query with no response after this long is shown as
    /// unanswered. [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pair_timeout: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SnoopFormat {
    /// Aligned columns with a header line.
    Text,
    /// One JSON object per line, every column (no raw bytes).
    Json,
}

#[derive(Debug, Args)]
struct SnoopArgs {
    #[command(flatten)]
    live: LiveArgs,
    /// Columns to print, comma-separated (text format); `--fields help` lists them.
    /// [default: time,pid,comm,qtype,qname,rcode,latency,answers]
    #[arg(long, short = 'l', visible_alias = "list", value_name = "FIELDS")]
    fields: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = SnoopFormat::Text)]
    format: SnoopFormat,
    /// Print each transaction in full, decoded like `dig` (the `dnsql show` view).
    #[arg(long, short = 'd', conflicts_with = "format")]
    detailed: bool,
    /// Only this process id (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// Only this process name (comm; repeatable).
    #[arg(long = "comm", value_name = "NAME")]
    comms: Vec<String>,
    /// Only query names matching this pattern (`*`, `?` wildcards, case ignored; repeatable).
    #[arg(long = "name", value_name = "PATTERN", value_parser = dnsledger::snoop::parse_name_pattern)]
    names: Vec<glob::Pattern>,
    /// Only this response code, e.g. NXDOMAIN, SERVFAIL, or `unanswered` (repeatable).
    #[arg(long = "rcode", value_name = "RCODE")]
    rcodes: Vec<String>,
    /// Only this query type, e.g. A, AAAA, PTR (repeatable).
    #[arg(long = "qtype", value_name = "TYPE")]
    qtypes: Vec<String>,
    /// Exit after printing this many transactions. [default: run until interrupted]
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// No header line in the text format.
    #[arg(long)]
    no_header: bool,
}

#[derive(Debug, Args)]
struct TopArgs {
    #[command(flatten)]
    live: LiveArgs,
    /// Group rows by this key at start (`g` cycles).
    #[arg(long, value_enum, default_value_t = dnsledger::top::Group::Comm)]
    group: dnsledger::top::Group,
    /// Sort key at start.
    #[arg(long, value_enum, default_value_t = dnsledger::top::SortKey::Queries)]
    sort: dnsledger::top::SortKey,
    /// Screen refresh interval. [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration, default_value = "1s")]
    interval: Duration,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Data directory. [default: /var/lib/dnsledger]
    #[arg(long, env = "DNSLEDGER_DATA", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PruneArgs {
    /// Data directory, or a collected segments tree (host=... directories).
    /// [default: /var/lib/dnsledger]
    #[arg(long, env = "DNSLEDGER_DATA", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Delete segments older than this (e.g. 7d, 36h).
    #[arg(long, value_name = "AGE", value_parser = config::parse_duration)]
    max_age: Option<Duration>,
    /// Delete oldest segments until the rest take at most this much (e.g. 20GiB).
    #[arg(long, value_name = "SIZE", value_parser = config::parse_size)]
    max_size: Option<u64>,
    /// Only this host's segments (repeatable). [default: all hosts]
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// Say what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
}

/// A comma-separated port list as one value (clap would treat a `Vec` as many values).
#[derive(Clone, Debug)]
struct PortList(Vec<u16>);

fn parse_port_list(s: &str) -> Result<PortList, String> {
    config::parse_ports(s).map(PortList)
}

#[derive(Debug, Args)]
struct Common {
    /// Data directory: sealed segments go to <DIR>/segments, in-progress files elsewhere.
    /// [default: /var/lib/dnsledger]
    #[arg(long, env = "DNSLEDGER_DATA", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// DNS ports to watch, comma-separated, at most 16. [default: 53 (record), 53,5353,5355 (import)]
    #[arg(long, value_name = "PORTS", value_parser = parse_port_list)]
    ports: Option<PortList>,
    /// Seal a segment once it reaches this size (e.g. 128MiB). [default: 128MiB]
    #[arg(long, value_name = "SIZE", value_parser = config::parse_size)]
    rotate_size: Option<u64>,
    /// Seal a segment once it is this old (e.g. 5m, 30s). [default: 5m]
    #[arg(long, value_name = "AGE", value_parser = config::parse_duration)]
    rotate_age: Option<Duration>,
    /// Bytes of each DNS message to keep at most (12..65535); longer ones are kept cut short
    /// with their original length. [default: 4096]
    #[arg(long, value_name = "BYTES", value_parser = config::parse_max_payload)]
    max_payload: Option<u32>,
    /// A query with no response after this long is written as `unanswered`. [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pair_timeout: Option<Duration>,
    /// Queries waiting for a response, at most: beyond it the oldest is written as
    /// `unanswered` early and counted (`dnsledger.pair_evicted`). [default: 65536]
    #[arg(long, value_name = "N", value_parser = config::parse_max_pending)]
    max_pending: Option<usize>,
    /// Do not store the raw DNS messages (query_raw/response_raw columns stay empty).
    #[arg(long)]
    no_raw: bool,
    /// Stop writing while the data directory's filesystem has less free space than this
    /// (rows wait in memory, then the oldest are dropped and counted): a size (1GiB) or a
    /// share of the filesystem (5%); 0 turns it off. [default: 256MiB]
    #[arg(long, value_name = "SIZE|PCT%", value_parser = config::parse_min_free)]
    min_free: Option<config::MinFree>,
    /// TOML file with the same keys as the long flags (data-dir, ports, rotate-size, ...).
    /// Flags and environment override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RecordArgs {
    #[command(flatten)]
    common: Common,
    /// Kernel ring buffer size (rounded up to a power of two, 16KiB..1GiB). [default: 8MiB]
    #[arg(long, value_name = "SIZE", value_parser = config::parse_ring_size)]
    ring_size: Option<u32>,
    /// How often transactions are synced to the crash-safe spool; after kill -9 or a power
    /// cut at most this much is lost. [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    spool_sync: Option<Duration>,
    /// Run as this user (and group; default: the user's primary group) once the programs are
    /// attached, keeping only CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH. The data directory is
    /// given to that user at start, so analysts in GROUP can read the segments.
    /// [default: stay root, with the same two capabilities]
    #[arg(long, value_name = "USER[:GROUP]", value_parser = dnsledger::privs::parse_run_as)]
    user: Option<dnsledger::privs::RunAs>,
    /// Keep this host's sealed segments under this total size (e.g. 20GiB): after each seal
    /// the oldest are deleted, as `dnsledger prune --max-size` would. [default: no cap]
    #[arg(long, value_name = "SIZE", value_parser = config::parse_size)]
    max_size: Option<u64>,
    /// Delete this host's sealed segments older than this (e.g. 7d), checked every minute.
    /// [default: keep]
    #[arg(long, value_name = "AGE", value_parser = config::parse_duration)]
    max_age: Option<Duration>,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9422, DNSWatch's
    /// port): DNSWatch's counters by process plus dnsledger_* series. [default: off]
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Distinct `process` label values of the DNSWatch counters; later processes are counted
    /// under process="other". [default: 100]
    #[arg(long, value_name = "N", default_value_t = dnsledger::metrics::DEFAULT_MAX_PROCESSES,
          value_parser = clap::value_parser!(usize))]
    metrics_max_processes: usize,
    /// Also record the user stack of the code that sent each query (`stack` column),
    /// symbolized while the process runs. Costs CPU on every send syscall of the host; see
    /// the README for measurements.
    #[arg(long)]
    stacks: bool,
}

#[derive(Debug, Args)]
struct ImportArgs {
    #[command(flatten)]
    common: Common,
    /// Host name to store in the rows and the segment path. [default: this host's name]
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// Capture files (pcap or pcapng).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// DNS ports to configure the probe programs with.
    #[arg(long, value_name = "PORTS", value_parser = parse_port_list)]
    ports: Option<PortList>,
}

fn settings(common: &Common, default_ports: &[u16]) -> anyhow::Result<Settings> {
    let mut s = Settings::defaults(default_ports);
    if let Some(path) = &common.config {
        let file = FileConfig::load(path)?;
        s.apply_file(path, file)?;
    }
    if let Some(d) = &common.data_dir {
        s.data_dir = d.clone();
    }
    if let Some(p) = &common.ports {
        s.ports = p.0.clone();
    }
    if let Some(v) = common.rotate_size {
        s.rotate_size = v;
    }
    if let Some(v) = common.rotate_age {
        s.rotate_age = v;
    }
    if let Some(v) = common.max_payload {
        s.max_payload = v;
    }
    if let Some(v) = common.pair_timeout {
        s.pair_timeout = v;
    }
    if let Some(v) = common.max_pending {
        s.max_pending = v;
    }
    if common.no_raw {
        s.keep_raw = false;
    }
    if let Some(v) = common.min_free {
        s.min_free = v;
    }
    Ok(s)
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Record(args) => record(args),
        Command::Import(args) => import(args),
        Command::Check(args) => check(args),
        Command::Prune(args) => prune(args),
        Command::Status(args) => status(args),
        Command::Snoop(args) => snoop(args),
        Command::Top(args) => top(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // The first line names the failure, later lines its causes and hints.
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}

fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))
}

/// A batch of ring-buffer records, concatenated; `ends[i]` is the end offset of record i.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let r = &self.buf[start..end];
            start = end;
            r
        })
    }
    fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
}

const BATCH_RECORDS: usize = 4096;
const BATCH_BYTES: usize = 1 << 20;
/// Events held in user space while the writer is behind, before they are dropped: ~3 s of the
/// busiest stream measured (P1 in bench/RESULTS.md), memory that is only used while behind.
const BATCH_MAX_PENDING: usize = 64 << 20;
const CHANNEL_BATCHES: usize = 16;
const TICK: Duration = Duration::from_millis(200);
/// Capture time between two expiry rounds of `import`.
const IMPORT_TICK_NS: i64 = 1_000_000_000;
const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// How often `<data_dir>/status.json` is rewritten for `dnsledger status`.
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// How often the boot-time -> UTC offset is re-read (NTP may slew the wall clock).
const CLOCK_REFRESH: Duration = Duration::from_secs(60);

fn record(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let mut s = settings(&args.common, config::DEFAULT_PORTS)?;
    if let Some(r) = args.ring_size {
        s.ring_size = r;
    }
    s.spool_sync = Some(args.spool_sync.unwrap_or(config::DEFAULT_SPOOL_SYNC));
    if args.max_size.is_some() {
        s.max_size = args.max_size;
    }
    if args.max_age.is_some() {
        s.max_age = args.max_age;
    }
    if args.stacks {
        s.stacks = true;
    }
    let run_as = match args.user {
        Some(who) => Some(who),
        None => s
            .user
            .as_deref()
            .map(dnsledger::privs::parse_run_as)
            .transpose()
            .map_err(|m| anyhow::anyhow!("invalid `user` in the config file: {m}"))?,
    };
    let cgroup_root = bpf::preflight()?;
    bpf::route_libbpf_log();
    ensure_data_dir(&s.data_dir)?;
    let host = HostFacts::detect();
    // Whatever a killed run spooled but never sealed is sealed first.
    let recovered =
        recover_spool(&s, &host).context("cannot recover the spool of an earlier run")?;
    if !recovered.runs.is_empty() {
        info!(
            runs = recovered.runs.len(),
            recovered = recovered.recovered_rows,
            already_sealed = recovered.already_sealed,
            cut_bytes = recovered.cut_bytes,
            segments = recovered.sealed.len(),
            "recovery done"
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handler")?;
    }
    let attr = LiveAttribution {
        table: ProcessTable::new("/proc", Some(cgroup_root.clone())),
        now_ns: 0,
    };
    let pipeline = Pipeline::new(&s, &host, "bpf", attr)?;
    // Sockets are made now, as root and before anything is attached or dropped.
    let metrics = match args.metrics_listen {
        Some(addr) => {
            let server = tiny_http::Server::http(addr).map_err(|e| {
                anyhow::anyhow!("cannot listen on {addr} for --metrics-listen: {e}")
            })?;
            let (m, exposition) = dnsledger::metrics::Metrics::new(args.metrics_max_processes);
            info!(%addr, "serving Prometheus metrics on /metrics");
            Some((m, exposition, server))
        }
        None => None,
    };
    let live = match LivePublisher::bind(&s.data_dir) {
        Ok(p) => Some(p),
        Err(e) => {
            warn!(
                "cannot create {}: {e}; snoop and top will capture on their own",
                s.data_dir.join(dnsledger::live::LIVE_SOCKET).display()
            );
            None
        }
    };
    if let Some(who) = &run_as {
        // Everything made so far as root (directories, recovered segments, the spool) goes to
        // the user the writer becomes.
        let changed = dnsledger::privs::chown_tree(&s.data_dir, who.uid, who.gid)
            .with_context(|| format!("cannot give {} to {}", s.data_dir.display(), who.spec))?;
        debug!(changed, user = %who.spec, "data directory handed over");
    }

    let counters = Arc::new(KernelCounters::default());
    let user_drops = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::sync_channel::<Batch>(CHANNEL_BATCHES);
    let (free_tx, free_rx) = mpsc::channel::<Batch>();
    let upkeep = Upkeep {
        data_dir: s.data_dir.clone(),
        host: dnsledger::segment::escape_component(&host.hostname),
        max_size: s.max_size,
        max_age: s.max_age,
    };
    let status_template = dnsledger::status::LiveStatus {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_unix: unix_now(),
        ports: s.ports.clone(),
        ..Default::default()
    };
    let worker = {
        let counters = Arc::clone(&counters);
        let user_drops = Arc::clone(&user_drops);
        let stop = Arc::clone(&stop);
        let run_as = run_as.clone();
        std::thread::Builder::new()
            .name("dnsledger-writer".into())
            .spawn(move || {
                // This thread never needs more than reading /proc and writing the data dir.
                if let Err(e) = dnsledger::privs::drop_to_minimum(run_as.as_ref()) {
                    stop.store(true, Ordering::Relaxed);
                    return Err(anyhow::Error::new(e));
                }
                // Started from here, the HTTP thread has this thread's reduced privileges.
                let metrics = match metrics {
                    Some((m, exposition, server)) => {
                        std::thread::Builder::new()
                            .name("dnsledger-metrics".into())
                            .spawn(move || dnsledger::metrics::serve(server, exposition))
                            .context("cannot start the metrics thread")?;
                        Some(m)
                    }
                    None => None,
                };
                let r = writer_loop(
                    pipeline,
                    Extras { metrics, live },
                    rx,
                    free_tx,
                    &counters,
                    &user_drops,
                    (status_template, &upkeep),
                );
                if r.is_err() {
                    // Nothing can be written: stop capturing too.
                    stop.store(true, Ordering::Relaxed);
                }
                r
            })
            .context("cannot start the writer thread")?
    };

    let cfg = BpfConfig {
        ports: s.ports.clone(),
        max_payload: s.max_payload,
        ring_bytes: s.ring_size,
        self_tgid: std::process::id(),
        stacks: s.stacks,
    };
    // Hands the batch to the writer. When the writer is behind (channel full) the batch keeps
    // growing here instead; only past BATCH_MAX_PENDING bytes are its events dropped, and
    // counted, so that the ring buffer keeps draining and the kernel never waits.
    let send = |batch: &mut Batch, tx: &SyncSender<Batch>| {
        if batch.ends.is_empty() {
            return;
        }
        match tx.try_send(std::mem::take(batch)) {
            Ok(()) => *batch = free_rx.try_recv().unwrap_or_default(),
            Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => {
                *batch = b;
                if batch.buf.len() >= BATCH_MAX_PENDING {
                    user_drops.fetch_add(batch.ends.len() as u64, Ordering::Relaxed);
                    batch.clear();
                }
            }
        }
    };
    let batch_cell = std::cell::RefCell::new(Batch::default());
    let captured = bpf::capture(
        &cfg,
        &cgroup_root,
        &stop,
        &counters,
        || {
            // Attached: from here on, only reading /proc and the held fds.
            if let Err(e) = dnsledger::privs::drop_to_minimum(run_as.as_ref()) {
                error!("{e}; stopping");
                stop.store(true, Ordering::Relaxed);
                return;
            }
            info!(
                cgroup = %cgroup_root.display(),
                ports = ?s.ports,
                stacks = s.stacks,
                data_dir = %s.data_dir.display(),
                "recording: all programs attached, capturing DNS"
            )
        },
        |record: &[u8]| {
            let mut b = batch_cell.borrow_mut();
            b.buf.extend_from_slice(record);
            let end = b.buf.len();
            b.ends.push(end);
            if b.ends.len() >= BATCH_RECORDS || b.buf.len() >= BATCH_BYTES {
                send(&mut b, &tx);
            }
        },
        || send(&mut batch_cell.borrow_mut(), &tx),
    );
    // Whatever the writer could not take yet goes now, waiting for it: nothing is left behind.
    let last = batch_cell.into_inner();
    if !last.ends.is_empty() && tx.send(last).is_err() {
        warn!("the writer stopped before the last events could be handed over");
    }
    drop(tx);
    let written = worker
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    captured?;
    let (transactions, segments) = written?;
    seal_leftovers(&s, &host);
    info!(
        transactions,
        segments,
        dropped_kernel = counters.dropped(),
        dropped_user = user_drops.load(Ordering::Relaxed),
        "stopped; every segment is sealed"
    );
    Ok(ExitCode::SUCCESS)
}

/// What the writer keeps up beside the segments: the status file in the data directory, and
/// the recorder's own retention (`record --max-size` / `--max-age`: the same deletion as
/// `dnsledger prune`, for this host's segments, after each seal and once a minute).
struct Upkeep {
    data_dir: PathBuf,
    /// This host's `host=` partition value.
    host: String,
    max_size: Option<u64>,
    max_age: Option<Duration>,
}

impl Upkeep {
    fn retention_active(&self) -> bool {
        self.max_size.is_some() || self.max_age.is_some()
    }

    fn apply_retention(&self) {
        let opts = dnsledger::prune::PruneOptions {
            dir: self.data_dir.clone(),
            max_age_ns: self
                .max_age
                .map(|d| d.as_nanos().min(i64::MAX as u128) as i64),
            max_size: self.max_size,
            hosts: vec![self.host.clone()],
            dry_run: false,
            now_ns: unix_now_ns(),
        };
        // A prune run by cron holds the lock: it is doing the same work, try again later.
        match dnsledger::prune::try_prune(&opts) {
            Ok(Some(r)) if !r.deleted.is_empty() => info!(
                deleted = r.deleted.len(),
                freed_bytes = r.freed_bytes,
                kept = r.kept,
                kept_bytes = r.kept_bytes,
                "retention: deleted the oldest segments"
            ),
            Ok(_) => {}
            Err(e) => warn!("retention: {e}"),
        }
    }
}

/// What the writer feeds besides the segments.
struct Extras {
    metrics: Option<dnsledger::metrics::Metrics>,
    live: Option<LivePublisher>,
}

fn writer_loop(
    mut pipeline: Pipeline<LiveAttribution>,
    extras: Extras,
    rx: Receiver<Batch>,
    free: mpsc::Sender<Batch>,
    counters: &KernelCounters,
    user_drops: &AtomicU64,
    (mut live, upkeep): (dnsledger::status::LiveStatus, &Upkeep),
) -> anyhow::Result<(u64, usize)> {
    let mut retention_sealed = 0;
    let mut last_retention = Instant::now();
    let mut last_status = Instant::now() - STATUS_EVERY;
    let mut clock = Clock::now();
    let mut clock_set = Instant::now();
    let mut last_tick = Instant::now();
    let mut last_summary = Instant::now();
    let mut write_failures = 0u64;
    let mut last_write_error: Option<Instant> = None;
    let extras = (extras.metrics.is_some() || extras.live.is_some())
        .then(|| Arc::new(std::sync::Mutex::new(extras)));
    if let Some(x) = &extras {
        let x = Arc::clone(x);
        pipeline.set_tap(Box::new(move |rows| {
            if let Ok(mut x) = x.lock() {
                if let Some(m) = &mut x.metrics {
                    m.observe(rows);
                }
                if let Some(l) = &mut x.live {
                    l.publish(rows);
                }
            }
        }));
    }
    let mut feed = RingFeed::default();
    loop {
        match rx.recv_timeout(TICK) {
            Ok(mut batch) => {
                for record in batch.records() {
                    feed.record(&mut pipeline, record, &clock);
                }
                // A batch that grew while the writer was behind is freed rather than recycled:
                // kept, its pages would stay resident for good.
                if batch.buf.capacity() <= 2 * BATCH_BYTES {
                    batch.clear();
                    let _ = free.send(batch);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            if clock_set.elapsed() >= CLOCK_REFRESH {
                clock = Clock::now();
                clock_set = Instant::now();
            }
            pipeline.set_drop_totals(counters.dropped(), user_drops.load(Ordering::Relaxed));
            if let Some(x) = &extras
                && let Ok(mut x) = x.lock()
            {
                if let Some(l) = &mut x.live {
                    l.tick();
                }
                if let Some(m) = &x.metrics {
                    m.update_totals(&dnsledger::metrics::Totals {
                        kernel: counters,
                        dropped_user: user_drops.load(Ordering::Relaxed),
                        rows_lost: pipeline.rows_lost(),
                        segments: pipeline.segment_stats(),
                        watermark_ns: pipeline.watermark(),
                        now_unix_ns: clock.to_utc(boot_now()),
                    });
                }
            }
            // A full disk or a write error must not stop the capture: rows wait (bounded, the
            // excess counted) and writing resumes when it can. Said once a minute.
            match pipeline.tick(clock.to_utc(boot_now())) {
                Ok(()) => {
                    if write_failures > 0 {
                        info!(failures = write_failures, "writing resumed");
                        write_failures = 0;
                    }
                }
                Err(e) => {
                    write_failures += 1;
                    if last_write_error.is_none_or(|t: Instant| t.elapsed() >= SUMMARY_EVERY) {
                        last_write_error = Some(Instant::now());
                        error!(failures = write_failures, "cannot write segments: {e}");
                    }
                }
            }
        }
        if upkeep.retention_active()
            && (pipeline.sealed().len() != retention_sealed
                || last_retention.elapsed() >= SUMMARY_EVERY)
        {
            retention_sealed = pipeline.sealed().len();
            last_retention = Instant::now();
            upkeep.apply_retention();
        }
        if last_status.elapsed() >= STATUS_EVERY {
            last_status = Instant::now();
            let st = pipeline.stats();
            live.updated_unix = unix_now();
            live.packets = st.packets;
            live.messages = st.messages;
            live.transactions = st.transactions;
            live.cut_by_cap = st.cut_by_cap;
            live.pair_evicted = st.pair_evicted;
            live.segments_sealed = pipeline.sealed().len() as u64;
            live.kernel = bpf::COUNTER_NAMES
                .iter()
                .enumerate()
                .map(|(i, n)| (n.to_string(), counters.get(i)))
                .collect();
            live.dropped_user = user_drops.load(Ordering::Relaxed);
            live.rows_lost = pipeline.rows_lost();
            live.write_failures = write_failures;
            if let Err(e) = dnsledger::status::publish(&upkeep.data_dir, &live) {
                debug!("cannot publish status: {e}");
            }
        }
        if last_summary.elapsed() >= SUMMARY_EVERY {
            last_summary = Instant::now();
            let st = pipeline.stats();
            info!(
                transactions = st.transactions,
                messages = st.messages,
                packets = st.packets,
                dropped_kernel = counters.dropped(),
                dropped_user = user_drops.load(Ordering::Relaxed),
                bad_events = feed.bad_events,
                rows_lost = pipeline.rows_lost(),
                cut_by_cap = st.cut_by_cap,
                pair_evicted = st.pair_evicted,
                segments = pipeline.sealed().len(),
                processes = pipeline.attr_mut().table.len(),
                stacks_symbolized = feed.stack_counts().0,
                stacks_process_gone = feed.stack_counts().1,
                "summary"
            );
        }
    }
    pipeline.set_drop_totals(counters.dropped(), user_drops.load(Ordering::Relaxed));
    let (stats, sealed) = pipeline.finish()?;
    if upkeep.retention_active() {
        upkeep.apply_retention();
    }
    Ok((stats.transactions, sealed.len()))
}

/// After the last seal: rows of segments that could not be sealed earlier (disk full, write
/// errors) are still in the spool; seal them now rather than at the next start.
fn seal_leftovers(s: &Settings, host: &HostFacts) {
    match recover_spool(s, host) {
        Ok(r) if !r.runs.is_empty() => info!(
            recovered = r.recovered_rows,
            segments = r.sealed.len(),
            "rows of segments that could not be sealed earlier are sealed now"
        ),
        Ok(_) => {}
        Err(e) => warn!("spooled rows are left for the next start: {e}"),
    }
}

fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let s = settings(&args.common, config::DEFAULT_IMPORT_PORTS)?;
    ensure_data_dir(&s.data_dir)?;
    let mut host = HostFacts::detect();
    if let Some(h) = args.host {
        host.hostname = h;
        host.boot_id = None;
    }
    let mut pipeline = Pipeline::new(&s, &host, "import", NoAttribution)?;
    let mut failed = Vec::new();
    for file in &args.files {
        let mut source = match PcapSource::open(file) {
            Ok(src) => src,
            Err(e) => {
                error!("{e}");
                failed.push(file.clone());
                continue;
            }
        };
        let mut count = 0u64;
        let mut tick_error = None;
        let mut last_tick_ts = i64::MIN;
        let result = source.for_each(|pkt| {
            pipeline.packet(pkt);
            count += 1;
            // Time passes as the capture says: expire pending queries once per second of
            // capture time (and every 1024 packets, for captures with frozen clocks).
            let due = pkt.ts_ns.saturating_sub(last_tick_ts) >= IMPORT_TICK_NS
                || count.is_multiple_of(1024);
            if due && tick_error.is_none() {
                last_tick_ts = pkt.ts_ns;
                if let Err(e) = pipeline.tick(pkt.ts_ns) {
                    tick_error = Some(e);
                }
            }
        });
        if let Some(e) = tick_error {
            return Err(e).context("cannot write segments");
        }
        match result {
            Ok(stats) => info!(file = %file.display(), packets = count, ?stats, "imported"),
            Err(e) => {
                // What was readable is kept; the file is named and the run fails at the end.
                warn!("{e}");
                failed.push(file.clone());
            }
        }
    }
    let (stats, sealed) = pipeline.finish().context("cannot seal segments")?;
    info!(
        packets = stats.packets,
        messages = stats.messages,
        transactions = stats.transactions,
        segments = sealed.len(),
        "import done"
    );
    for path in &sealed {
        println!("{}", path.display());
    }
    if !failed.is_empty() {
        bail!(
            "{} file(s) could not be read completely: {}",
            failed.len(),
            failed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows the running recorder, or captures on our own; says which on stderr.
fn open_feed(
    args: &LiveArgs,
    stop: Arc<AtomicBool>,
    what: &str,
) -> anyhow::Result<dnsledger::live::Feed> {
    use dnsledger::live;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR));
    if !args.standalone
        && let Some((pid, sock)) = live::running_recorder(&dir)
    {
        match live::follow(pid, &sock) {
            Ok(feed) => {
                info!(
                    "{what}: following the running recorder (pid {pid}) through {}",
                    sock.display()
                );
                return Ok(feed);
            }
            Err(e) => warn!(
                "{what}: cannot follow the recorder (pid {pid}) through {}: {e}; capturing on our own",
                sock.display()
            ),
        }
    }
    let mut s = Settings::defaults(config::DEFAULT_PORTS);
    if let Some(p) = &args.ports {
        s.ports = p.0.clone();
    }
    if let Some(t) = args.pair_timeout {
        s.pair_timeout = t;
    }
    // A live view needs far less than a recorder that must never lose an event.
    s.ring_size = 8 << 20;
    let feed = live::standalone(&s, stop).map_err(|e| {
        anyhow::anyhow!(
            "{what}: no recorder is running in {} and capturing on our own failed: {e}\n\
             hint: run as root (or start `dnsledger record --data-dir {}` and follow it)",
            dir.display(),
            dir.display()
        )
    })?;
    info!(
        ports = ?s.ports,
        "{what}: no recorder running in {}; capturing with our own BPF programs (nothing is written)",
        dir.display()
    );
    Ok(feed)
}

fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handler")?;
    }
    Ok(stop)
}

fn snoop(args: SnoopArgs) -> anyhow::Result<ExitCode> {
    use dnsledger::live::{FeedMode, LiveLine};
    use dnsledger::snoop as sn;
    use std::io::Write;
    if args.fields.as_deref() == Some("help") {
        for (name, _, _, meaning) in sn::FIELDS {
            println!("{name:<10} {meaning}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let fields = match sn::parse_fields(args.fields.as_deref().unwrap_or(sn::DEFAULT_FIELDS)) {
        Ok(f) => f,
        Err(m) => {
            eprintln!("error: invalid value for --fields: {m}");
            return Ok(ExitCode::from(2));
        }
    };
    let filter = sn::Filter {
        pids: args.pids,
        comms: args.comms,
        names: args.names,
        rcodes: args.rcodes.iter().map(|r| r.to_ascii_uppercase()).collect(),
        qtypes: args.qtypes,
    };
    let stop = stop_flag()?;
    let feed = open_feed(&args.live, Arc::clone(&stop), "snoop")?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut shown = 0u64;
    let result: std::io::Result<()> = (|| {
        if args.format == SnoopFormat::Text && !args.detailed && !args.no_header {
            sn::write_header(&mut out, &fields)?;
            out.flush()?;
        }
        while !stop.load(Ordering::Relaxed) && args.count.is_none_or(|c| shown < c) {
            let line = match feed.lines.recv_timeout(TICK) {
                Ok(line) => line?,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    if let FeedMode::Follow { pid, .. } = &feed.mode {
                        return Err(std::io::Error::other(format!(
                            "the recorder (pid {pid}) stopped publishing"
                        )));
                    }
                    break;
                }
            };
            let t = match line {
                LiveLine::Tx(t) => t,
                LiveLine::Hello { .. } => continue,
                LiveLine::Dropped { dropped } => {
                    warn!("{dropped} transaction(s) not shown: snoop read too slowly");
                    continue;
                }
            };
            if !filter.matches(&t) {
                continue;
            }
            if args.detailed {
                dnsledger::detailed::write_detailed(&mut out, &t)?;
            } else if args.format == SnoopFormat::Json {
                sn::write_json(&mut out, &t)?;
            } else {
                sn::write_text(&mut out, &fields, &t)?;
            }
            out.flush()?;
            shown += 1;
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    match result {
        Ok(()) => {}
        // `snoop | head`: the reader had enough.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(anyhow::Error::new(e).context("snoop failed")),
    }
    feed.finish()
        .map_err(|e| anyhow::anyhow!("the capture failed: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

fn top(args: TopArgs) -> anyhow::Result<ExitCode> {
    let stop = stop_flag()?;
    let feed = open_feed(&args.live, Arc::clone(&stop), "top")?;
    let source = match &feed.mode {
        dnsledger::live::FeedMode::Follow { pid, .. } => format!("following recorder pid {pid}"),
        dnsledger::live::FeedMode::Standalone => "own capture".to_string(),
    };
    let r = dnsledger::top::run(
        &feed.lines,
        &stop,
        dnsledger::top::Options {
            group: args.group,
            sort: args.sort,
            interval: args.interval,
            source,
        },
    );
    stop.store(true, Ordering::Relaxed);
    r.context("top failed")?;
    feed.finish()
        .map_err(|e| anyhow::anyhow!("the capture failed: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unix_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR));
    let (lines, healthy) =
        dnsledger::status::report(&dir, unix_now()).map_err(anyhow::Error::msg)?;
    for l in lines {
        println!("{l}");
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn prune(args: PruneArgs) -> anyhow::Result<ExitCode> {
    use dnsledger::prune::{PruneOptions, prune};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let opts = PruneOptions {
        dir: args
            .data_dir
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR)),
        max_age_ns: args
            .max_age
            .map(|d| d.as_nanos().min(i64::MAX as u128) as i64),
        max_size: args.max_size,
        hosts: args.hosts,
        dry_run: args.dry_run,
        now_ns: now.as_nanos().min(i64::MAX as u128) as i64,
    };
    let report = prune(&opts)?;
    let verb = if opts.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for s in &report.deleted {
        println!("{verb} {} ({} bytes)", s.path.display(), s.bytes);
    }
    println!(
        "{verb} {} segment(s), {} bytes; kept {} segment(s), {} bytes",
        report.deleted.len(),
        report.freed_bytes,
        report.kept,
        report.kept_bytes
    );
    Ok(ExitCode::SUCCESS)
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    bpf::route_libbpf_log();
    let cfg = BpfConfig {
        ports: args
            .ports
            .map_or_else(|| config::DEFAULT_PORTS.to_vec(), |p| p.0),
        max_payload: config::DEFAULT_MAX_PAYLOAD,
        ring_bytes: 1 << 20,
        self_tgid: std::process::id(),
        stacks: false,
    };
    let probes = bpf::check(&cfg);
    let width = probes.iter().map(|p| p.what.len()).max().unwrap_or(0);
    let mut all_ok = true;
    for p in &probes {
        all_ok &= p.ok || p.optional;
        println!(
            "{:<width$}  {}  {}",
            p.what,
            match (p.ok, p.optional) {
                (true, _) => "ok  ",
                (false, false) => "FAIL",
                (false, true) => "no  ",
            },
            p.detail
        );
    }
    if all_ok {
        println!("recording can work on this machine");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("recording cannot work: see FAIL lines above");
        Ok(ExitCode::from(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
