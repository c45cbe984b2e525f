//! `dnsledger`: records every DNS transaction on this host, with the process that made it,
//! into sealed zstd Parquet segments.
//!
//! This file parses the command line ([`cli`]) and dispatches to the library; the work is
//! there (`dnsledger::recorder`, `pipeline::import`, `live`, `store::prune`, `capture::bpf`).
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage error.

mod cli;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches};
use tracing::info;

use cli::{
    CheckArgs, Cli, Command, CompactArgs, ImportArgs, LiveArgs, PruneArgs, ShipArgs, SnoopArgs,
    StatusArgs, TopArgs,
};
use dnsledger::capture::bpf::{self, BpfConfig};
use dnsledger::config::{self, Settings, process_env};
use dnsledger::live::{self, FeedOptions, snoop, top};
use dnsledger::pipeline::{self, HostFacts};
use dnsledger::recorder::{self, stop_flag};
use dnsledger::store::prune::{PruneOptions, prune};
use dnsledger::store::ship::{self, ShipGuard, ShipOptions};

fn record(args: cli::RecordArgs) -> anyhow::Result<ExitCode> {
    if let Some(code) = bad_ship_env(args.overrides.ship_to.is_some()) {
        return Ok(code);
    }
    let mut s = Settings::resolve(config::DEFAULT_PORTS, &args.overrides, process_env)?;
    s.spool_sync.get_or_insert(config::DEFAULT_SPOOL_SYNC);
    let stop = stop_flag()?;
    let done = recorder::record(&s, stop)?;
    info!(
        transactions = done.transactions,
        segments = done.segments,
        dropped_kernel = done.dropped_kernel,
        dropped_user = done.dropped_user,
        "stopped; every segment is sealed"
    );
    Ok(ExitCode::SUCCESS)
}

fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    if let Some(flag) = args.overrides.record_only_flag() {
        eprintln!(
            "error: {flag} applies to `dnsledger record` only\nhint: drop it from the import command"
        );
        return Ok(ExitCode::from(2));
    }
    let s = Settings::resolve(config::DEFAULT_IMPORT_PORTS, &args.overrides, process_env)?;
    let mut host = HostFacts::detect();
    if let Some(h) = args.host {
        host.hostname = h;
        host.boot_id = None;
    }
    let report = pipeline::import(&s, &host, &args.files)?;
    info!(
        packets = report.stats.packets,
        messages = report.stats.messages,
        transactions = report.stats.transactions,
        segments = report.sealed.len(),
        "import done"
    );
    for path in &report.sealed {
        println!("{}", path.display());
    }
    if !report.failed.is_empty() {
        let names: Vec<String> = report
            .failed
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        bail!(
            "{} file(s) could not be read completely: {}",
            names.len(),
            names.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows the running recorder, or captures on our own; says which on stderr.
fn open_feed(
    args: &LiveArgs,
    stop: Arc<std::sync::atomic::AtomicBool>,
    what: &str,
    serve_side: bool,
) -> anyhow::Result<live::Feed> {
    let mut capture = Settings::defaults(config::DEFAULT_PORTS);
    capture.ports = args.ports.resolve();
    capture.serve_side = serve_side;
    if let Some(t) = args.pair_timeout {
        capture.pair_timeout = t;
    }
    let opts = FeedOptions {
        data_dir: args.data_dir.resolve(),
        standalone: args.standalone,
        capture,
    };
    live::open_feed(&opts, stop, what).map_err(anyhow::Error::msg)
}

fn snoop(args: SnoopArgs) -> anyhow::Result<ExitCode> {
    if args.fields.as_deref() == Some("help") {
        for (name, _, _, meaning) in snoop::FIELDS {
            println!("{name:<10} {meaning}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let fields = match snoop::parse_fields(args.fields.as_deref().unwrap_or(snoop::DEFAULT_FIELDS))
    {
        Ok(f) => f,
        Err(m) => {
            eprintln!("error: invalid value for --fields: {m}");
            return Ok(ExitCode::from(2));
        }
    };
    let opts = snoop::Options {
        fields,
        format: args.format,
        detailed: args.detailed,
        filter: snoop::Filter {
            pids: args.pids,
            comms: args.comms,
            names: args.names,
            rcodes: args.rcodes.iter().map(|r| r.to_ascii_uppercase()).collect(),
            qtypes: args.qtypes,
        },
        count: args.count,
        header: !args.no_header,
    };
    let stop = stop_flag()?;
    let feed = open_feed(&args.live, Arc::clone(&stop), "snoop", false)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let result = snoop::run(&feed, &stop, &opts, &mut out);
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
    // Its own capture takes the server side too (`--by client`); the other groupings leave it
    // out.
    let feed = open_feed(&args.live, Arc::clone(&stop), "top", true)?;
    let source = match &feed.mode {
        live::FeedMode::Follow { pid, .. } => format!("following recorder pid {pid}"),
        live::FeedMode::Standalone => "own capture".to_string(),
    };
    let options = top::Options {
        group: args.group,
        sort: args.sort,
        interval: args.interval,
        source,
    };
    let r = top::run(&feed.lines, &stop, options);
    stop.store(true, Ordering::Relaxed);
    r.context("top failed")?;
    feed.finish()
        .map_err(|e| anyhow::anyhow!("the capture failed: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let dir = args.data_dir.resolve();
    let (lines, healthy) =
        live::status::report(&dir, config::unix_now_secs()).map_err(anyhow::Error::msg)?;
    for l in lines {
        println!("{l}");
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `DNSLEDGER_SHIP_TO` set to something unusable, with no flag above it: a usage error.
fn bad_ship_env(flag_given: bool) -> Option<ExitCode> {
    if flag_given {
        return None;
    }
    let e = config::ship_to_env_error(process_env)?;
    eprintln!("error: {e}");
    Some(ExitCode::from(2))
}

fn prune_cmd(args: PruneArgs) -> anyhow::Result<ExitCode> {
    if let Some(code) = bad_ship_env(args.ship_to.is_some() || args.prune_unshipped) {
        return Ok(code);
    }
    let (dir, ship_to) = config::ship_settings(
        args.data_dir.data_dir.as_deref(),
        args.ship_to.as_ref(),
        args.config.as_deref(),
        process_env,
    )?;
    let ship_guard = match (args.prune_unshipped, ship_to) {
        (true, _) => ShipGuard::Off,
        (false, Some(url)) => ShipGuard::To(url),
        (false, None) => ShipGuard::Ledgers,
    };
    let opts = PruneOptions {
        dir,
        max_age_ns: args.max_age.map(config::duration_ns),
        max_size: args.max_size,
        hosts: args.hosts,
        dry_run: args.dry_run,
        now_ns: config::unix_now_ns(),
        ship_guard,
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
    if report.kept_unshipped > 0 {
        println!(
            "kept {} segment(s), {} bytes, that are not shipped yet (--prune-unshipped deletes them)",
            report.kept_unshipped, report.kept_unshipped_bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ship_cmd(args: ShipArgs) -> anyhow::Result<ExitCode> {
    if let Some(code) = bad_ship_env(args.to.is_some()) {
        return Ok(code);
    }
    let (dir, to) = config::ship_settings(
        args.data_dir.as_deref(),
        args.to.as_ref(),
        args.config.as_deref(),
        process_env,
    )?;
    let Some(url) = to else {
        eprintln!(
            "error: no destination to ship to\nhint: give --to URL (e.g. s3://bucket/prefix), \
             ship-to in the --config file, or DNSLEDGER_SHIP_TO"
        );
        return Ok(ExitCode::from(2));
    };
    let opts = ShipOptions {
        dir,
        url,
        dry_run: args.dry_run,
        verify: args.verify,
        wait_lock: true,
        attempts: ship::ATTEMPTS,
    };
    let stop = stop_flag()?;
    let report = ship::ship(&opts, &stop)?;
    for (path, url) in &report.shipped {
        if opts.dry_run {
            println!("would ship {} to {url}", path.display());
        } else {
            println!("shipped {url}");
        }
    }
    for url in &report.removed {
        println!("removed {url} (replaced by a compacted segment)");
    }
    for f in &report.failed {
        eprintln!("error: {} not shipped: {}", f.path.display(), f.reason);
    }
    for e in &report.cleanup_errors {
        eprintln!("error: {e}");
    }
    if let Some(fatal) = &report.fatal {
        eprintln!("error: {fatal}");
        eprintln!("nothing local was deleted; a later run ships what is pending");
    }
    println!("{}", report.summary(opts.dry_run));
    Ok(if stop.load(Ordering::Relaxed) && report.pending > 0 {
        ExitCode::from(130)
    } else if report.fatal.is_some()
        || !report.failed.is_empty()
        || !report.cleanup_errors.is_empty()
    {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn compact_cmd(args: CompactArgs) -> anyhow::Result<ExitCode> {
    use dnsledger::store::compact::{CompactOptions, compact_dir, compact_lake};
    let now_ns = config::unix_now_ns();
    let opts = CompactOptions {
        hosts: args.hosts,
        before_ns: args.before.unwrap_or(now_ns),
        now_ns,
        dry_run: args.dry_run,
    };
    let report = match &args.lake {
        Some(text) => {
            let url: dnsledger_lake::LakeUrl = match text.parse() {
                Ok(u) => u,
                Err(e) => {
                    eprintln!("error: invalid value for --lake: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            compact_lake(&url, &opts)?
        }
        None => compact_dir(&args.data_dir.resolve(), &opts)?,
    };
    let verb = if opts.dry_run {
        "would compact"
    } else {
        "compacted"
    };
    let (mut inputs, mut bytes_in, mut bytes_out) = (0, 0, 0);
    for p in &report.partitions {
        if !p.finished.is_empty() {
            println!(
                "{}: finished an interrupted compaction: deleted {} replaced segment(s)",
                p.partition,
                p.finished.len()
            );
        }
        for v in &p.vanished {
            println!("{}: {v} disappeared meanwhile; skipped", p.partition);
        }
        for (name, why) in &p.unreadable {
            println!("{}: {name} left alone: {why}", p.partition);
        }
        if !p.inputs.is_empty() {
            inputs += p.inputs.len();
            bytes_in += p.bytes_in;
            bytes_out += p.bytes_out;
            println!(
                "{verb} {}: {} segment(s), {} bytes -> {} ({} rows, {} bytes)",
                p.partition,
                p.inputs.len(),
                p.bytes_in,
                p.output.as_deref().unwrap_or("-"),
                p.rows,
                p.bytes_out
            );
        }
    }
    for p in &report.open {
        println!("{p}: left alone: data for this hour is still in progress or spooled");
    }
    let m = &report.manifests;
    for (file, why) in &m.left_out {
        println!("{file}: no manifest entry (not readable as a segment: {why})");
    }
    if !m.written.is_empty() || !m.removed.is_empty() || m.unchanged > 0 {
        println!(
            "date manifests: {} written, {} already up to date, {} removed",
            m.written.len(),
            m.unchanged,
            m.removed.len()
        );
    }
    for (at, why) in &m.failed {
        eprintln!("error: date manifest {at}: {why}");
    }
    if !m.failed.is_empty() {
        eprintln!(
            "hint: compaction itself is done and nothing is lost; without an up-to-date manifest \
             dnsql reads every footer of that date. Re-run `dnsledger compact` once the cause is fixed"
        );
    }
    println!(
        "{verb} {inputs} segment(s) of {} partition(s), {bytes_in} -> {bytes_out} bytes; \
         {} partition(s) already one segment",
        report
            .partitions
            .iter()
            .filter(|p| !p.inputs.is_empty())
            .count(),
        report.untouched
    );
    Ok(if report.manifests.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    bpf::route_libbpf_log();
    let cfg = BpfConfig {
        ports: args.ports.resolve(),
        max_payload: config::DEFAULT_MAX_PAYLOAD,
        ring_bytes: 1 << 20,
        self_tgid: std::process::id(),
        stacks: false,
        bypass: true,
        doh_endpoints: Vec::new(),
        serve_side: false,
        lookups: true,
        run_as: None,
    };
    let mut probes = bpf::check(&cfg);
    probes.push(doh_list_probe());
    let width = probes.iter().map(|p| p.what.len()).max().unwrap_or(0);
    let mut all_ok = true;
    for p in &probes {
        all_ok &= p.ok || p.optional;
        let verdict = match (p.ok, p.optional) {
            (true, _) => "ok  ",
            (false, false) => "FAIL",
            (false, true) => "no  ",
        };
        println!("{:<width$}  {verdict}  {}", p.what, p.detail);
    }
    if all_ok {
        println!("recording can work on this machine");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("recording cannot work: see FAIL lines above");
        Ok(ExitCode::from(1))
    }
}

/// `check`'s line for the packaged DoH list (optional: without it DoT and DoQ are still
/// recorded; `record --doh-list` may name another).
fn doh_list_probe() -> bpf::Probe {
    let (ok, detail) = match dnsledger::bypass::load_doh_list(None) {
        Ok(Some((path, ips))) => (
            true,
            format!("{} addresses in {}", ips.len(), path.display()),
        ),
        Ok(None) => (
            false,
            format!(
                "{} not found: DoH is not recorded unless record --doh-list names a list \
                 (DoT and DoQ are)",
                dnsledger::bypass::DEFAULT_DOH_LIST
            ),
        ),
        Err(e) => (false, e.to_string().replace('\n', "; ")),
    };
    bpf::Probe {
        what: "doh list".into(),
        ok,
        optional: true,
        detail,
    }
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
    // The lookup attach helper (started by `record` itself, never by hand): before anything
    // else, so that it reduces its capabilities first.
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(dnsledger::capture::attach_helper::HELPER_ARG.as_ref()) {
        let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
        return dnsledger::capture::attach_helper::serve(&rest);
    }
    // The hidden `generate-docs DIR` writes the man pages and completions (for packaging).
    let matches = match dnsledger_clidoc::parse(Cli::command()) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Record(args) => record(args),
        Command::Import(args) => import(args),
        Command::Check(args) => check(args),
        Command::Prune(args) => prune_cmd(args),
        Command::Ship(args) => ship_cmd(args),
        Command::Compact(args) => compact_cmd(args),
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
