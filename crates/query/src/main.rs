//! `dnsql`: SQL and forensic recipes over dnsledger segments. The command line is in [`cli`];
//! this file dispatches each command along the query path: find the segments
//! ([`dnsledger_query::catalog`]), build the SQL (the recipes), run it and print the result
//! ([`dnsledger_query::output`]).

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use clap::{CommandFactory, FromArgMatches};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use dnsledger_query::catalog::footer_cache::FooterCache;
use dnsledger_query::catalog::segments::{self, Footers};
use dnsledger_query::catalog::session::{self, Dnsql, RunError};
use dnsledger_query::catalog::source::{self, Scope, Skipped};
use dnsledger_query::catalog::table::{self, Problems, ScanProgress};
use dnsledger_query::ocsf;
use dnsledger_query::output::{self, Format, OutputError, Sink, TableOptions};
use dnsledger_query::recipes::{self, lake, show};
use dnsledger_query::udf;

mod cli;

use cli::{Cli, Command, Global, ReportArgs, SqlArgs};
use dnsledger_query::report::{self, coverage::Span};

/// How a run ended.
enum Failure {
    /// Exit 2.
    Usage(String),
    /// Exit 1, with an optional hint.
    Runtime(anyhow::Error, Option<String>),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e, None)
    }
}

const EXIT_PARTIAL: u8 = 3;
const EXIT_INTERRUPTED: u8 = 130;

/// mimalloc instead of glibc's allocator (see Cargo.toml): dnsql allocates and frees a
/// footer, statistics and a schema per segment, thousands per query over a fleet.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent huge pages off for this process. mimalloc's fresh memory was then faulted in
/// 2 MiB at a time, each page zeroed whole by the kernel however little of it a query used:
/// over 2,394 five-minute segments (NXDOMAIN per client) the kernel's page zeroing was 11 % of
/// all samples; without huge pages system time fell 0.56-1.30 -> 0.42-0.45 s and peak RSS
/// 390 -> 293 MB, user time unchanged. Only this process (and what it would start) is
/// affected; a kernel without the call leaves the policy as configured.
fn no_transparent_huge_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) takes integers only and changes only this
    // process's huge-page policy; it touches no memory of ours. A failure changes nothing.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    // `dnsql sql --help` lists the SQL functions dnsql adds.
    let command = Cli::command().mut_subcommand("sql", |c| {
        c.after_long_help(format!(
            "SQL functions of dnsql (besides DataFusion's own):\n{}",
            udf::functions_help()
        ))
    });
    // The hidden `generate-docs DIR` writes the man pages and completions (for packaging).
    let matches = match dnsledger_clidoc::parse(command) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Local files are read on tokio's blocking threads (object_store's LocalFileSystem):
        // with tokio's default of up to 512, a footer pass started ~50, each with its own
        // allocator heap holding freed read buffers. With 8: 7,200 footers read in 3.0 s
        // instead of 4.4 s, 100 MB less resident (4 was no better).
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Ctrl-C is watched on a thread of its own: the query's futures can stay busy in one poll
    // for a long time (a large join), so a `select!` beside them would notice the signal late.
    let watcher = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| {
            std::thread::spawn(move || {
                if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                    eprintln!("interrupted");
                    std::process::exit(i32::from(EXIT_INTERRUPTED));
                }
            })
        });
    if let Err(e) = watcher {
        eprintln!("error: cannot watch for Ctrl-C: {e}");
        return ExitCode::FAILURE;
    }
    let code = runtime.block_on(run(cli));
    runtime.shutdown_background();
    ExitCode::from(code)
}

async fn run(cli: Cli) -> u8 {
    let progress_bar = progress_bar(&cli.global);
    let pb = progress_bar.clone();
    let problems = Arc::new(Problems::with_reporter(move |s: &Skipped| {
        pb.suspend(|| eprintln!("warning: skipped {}: {}", s.path.display(), s.reason));
    }));
    let result = dispatch(cli, problems.clone(), progress_bar.clone()).await;
    progress_bar.finish_and_clear();
    match result {
        Ok(()) if problems.is_empty() => 0,
        Ok(()) => {
            let n = problems.list().len();
            eprintln!(
                "warning: partial answer: {n} segment{} skipped (named above)",
                if n == 1 { "" } else { "s" }
            );
            EXIT_PARTIAL
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            eprintln!("hint: dnsql --help");
            2
        }
        Err(Failure::Runtime(e, hint)) => {
            eprintln!("error: {e:#}");
            if let Some(h) = hint {
                eprintln!("hint: {h}");
            }
            1
        }
    }
}

fn show_progress(g: &Global) -> bool {
    !g.quiet && io::stderr().is_terminal()
}

/// A progress bar drawn on stderr once a scan has taken a second, if stderr is a terminal
/// (hidden until then, and always hidden otherwise).
fn progress_bar(g: &Global) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    if !show_progress(g) {
        return pb;
    }
    // Bytes read, not a fraction: a scan reads only the columns and row groups it needs, so
    // the segments' total size is no measure of the work left.
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {elapsed} scanning {msg}: {bytes} read")
    {
        pb.set_style(style);
    }
    pb
}

fn spawn_progress(pb: ProgressBar, progress: Arc<ScanProgress>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if pb.is_finished() {
            return;
        }
        pb.set_draw_target(ProgressDrawTarget::stderr());
        while !pb.is_finished() {
            pb.set_position(progress.bytes_read.load(Ordering::Relaxed));
            let files = progress.files_total.load(Ordering::Relaxed);
            pb.set_message(format!(
                "{files} segment{}",
                if files == 1 { "" } else { "s" }
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

async fn dispatch(cli: Cli, problems: Arc<Problems>, pb: ProgressBar) -> Result<(), Failure> {
    let g = &cli.global;
    if g.format.is_binary() && g.output.is_none() && io::stdout().is_terminal() {
        return Err(Failure::Usage(format!(
            "refusing to write {} to a terminal; use -o FILE or redirect stdout",
            g.format.name()
        )));
    }
    if let Some(since) = g.since
        && let Some(until) = g.until
        && since >= until
    {
        return Err(Failure::Usage("--since must be before --until".into()));
    }
    let scope = Scope {
        since: g.since,
        until: g.until,
        hosts: g.hosts.clone(),
    };
    let mut out = Output::new(g, pb.clone());

    if cli.lake_sql.print_sql {
        return print_lake_sql(&cli, &mut out);
    }
    let sql = match &cli.command {
        Command::Schema(args) if args.ddl.is_some() => {
            let ddl = args.ddl.map(|d| lake::ddl(d, &args.table, &args.location));
            return print_text(&mut out, &ddl.unwrap_or_default());
        }
        Command::Export(_) => {
            if g.format == Format::Csv {
                return Err(Failure::Usage(
                    "OCSF events are nested: use --format json or parquet".into(),
                ));
            }
            out.ocsf = true;
            ocsf::SQL.to_owned()
        }
        Command::Schema(_) => {
            let batch = table::schema_listing()
                .map_err(|e| anyhow!(e).context("cannot list the columns"))?;
            return out.print(&batch);
        }
        Command::Segments => return list_segments(g, &scope, &problems, &mut out).await,
        Command::Report(args) => return report(g, args, problems, pb).await,
        Command::Sql(args) => read_sql(args)?,
        Command::Who(_)
        | Command::Top(_)
        | Command::Timeline(_)
        | Command::Exfil
        | Command::Nxdomain
        | Command::Bypass
        | Command::Show(_) => match recipe(&cli.command, g)? {
            Recipe::Sql(sql) => sql,
            Recipe::Render(sql, render) => {
                if g.format == Format::Table {
                    out.render = Some(render);
                }
                sql
            }
        },
    };

    let footers = Arc::new(Footers::with_disk_cache(FooterCache::from_env()));
    let files = find_segments(g, &scope, &problems, &footers).await?;
    let dnsql = open_session(g, files, &scope, problems, &footers).await?;
    let progress = dnsql.progress.clone();
    let ticker = show_progress(g).then(|| spawn_progress(pb, progress));
    let result = run_sql(&dnsql, &sql, g.limit, &mut out).await;
    if let Some(t) = ticker {
        t.abort();
    }
    log_footers(g, &footers);
    result
}

/// `--verbose`: how many footers were fetched from storage, and how many found on disk.
fn log_footers(g: &Global, footers: &Footers) {
    if g.verbose {
        eprintln!(
            "dnsql: footers fetched: {}, from the footer cache: {}; files ruled out by bloom \
             filters before the scan: {}; date manifests read: {}, files they ruled out: {}",
            footers.fetched.load(Ordering::Relaxed),
            footers.from_disk.load(Ordering::Relaxed),
            footers.bloom_skipped.load(Ordering::Relaxed),
            footers.manifests_read.load(Ordering::Relaxed),
            footers.manifest_skipped.load(Ordering::Relaxed)
        );
    }
}

/// What a recipe subcommand runs: SQL over `dns`, printed in the output format, or (for
/// `show` in the table format) rendered as a dig-like transcript.
enum Recipe {
    Sql(String),
    Render(String, output::Render),
}

/// The recipe of a subcommand: SQL from [`recipes`] / [`show`], run like `dnsql sql`.
fn recipe(cmd: &Command, g: &Global) -> Result<Recipe, Failure> {
    Ok(match cmd {
        Command::Who(a) => Recipe::Sql(recipes::who(&a.name)),
        Command::Top(a) => Recipe::Sql(recipes::top(a.by, a.n)),
        Command::Timeline(a) => {
            let selector = match (a.pid, &a.comm, &a.exe) {
                (Some(pid), _, _) => recipes::Selector::Pid {
                    pid,
                    // With one --host the pid is that host's; the scope restricts the rest.
                    host: match g.hosts.as_slice() {
                        [one] => Some(one.clone()),
                        _ => None,
                    },
                },
                (None, Some(comm), _) => recipes::Selector::Comm(comm.clone()),
                (None, None, Some(exe)) => recipes::Selector::Exe(exe.clone()),
                (None, None, None) => unreachable!("clap requires one of --pid, --comm, --exe"),
            };
            Recipe::Sql(recipes::timeline(&selector))
        }
        Command::Exfil => Recipe::Sql(recipes::exfil()),
        Command::Nxdomain => Recipe::Sql(recipes::nxdomain()),
        Command::Bypass => Recipe::Sql(recipes::bypass()),
        Command::Show(a) => {
            let sql = show::show_sql(&a.selector.join(" "))
                .map_err(|e| Failure::Usage(format!("bad selector: {e}")))?;
            Recipe::Render(sql, show::render)
        }
        Command::Sql(_)
        | Command::Schema(_)
        | Command::Segments
        | Command::Export(_)
        | Command::Report(_) => {
            return Err(Failure::Usage(
                "--print-sql is for the recipes: who, top, timeline, exfil, nxdomain, bypass, show"
                    .into(),
            ));
        }
    })
}

/// `--print-sql`: the recipe's SQL, as run, rewritten for `--dialect` over the lake.
fn print_lake_sql(cli: &Cli, out: &mut Output) -> Result<(), Failure> {
    let g = &cli.global;
    let (Recipe::Sql(sql) | Recipe::Render(sql, _)) = recipe(&cli.command, g)?;
    let root = match &cli.lake_sql.lake {
        Some(l) => l.clone(),
        None => {
            let data = g.data.first().cloned().unwrap_or_default();
            let segments = data.join("segments");
            if segments.is_dir() { segments } else { data }
                .display()
                .to_string()
        }
    };
    let scope = Scope {
        since: g.since,
        until: g.until,
        hosts: g.hosts.clone(),
    };
    let name = cli.command_name();
    let text = lake::print_sql(&sql, cli.lake_sql.dialect, &root, &scope, name);
    print_text(out, &text)
}

/// Writes `text` to the output as is.
fn print_text(out: &mut Output, text: &str) -> Result<(), Failure> {
    let mut w = out.writer().context("cannot open the output")?;
    match w.write_all(text.as_bytes()).and_then(|()| w.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Runtime(
            anyhow!(e).context("cannot write the output"),
            None,
        )),
    }
}

fn read_sql(args: &SqlArgs) -> Result<String, Failure> {
    let sql = match (&args.sql, &args.file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read SQL from `{}`", file.display()))?,
        (None, None) => {
            if io::stdin().is_terminal() {
                return Err(Failure::Usage(
                    "no SQL: give it as an argument, with -f FILE, or on stdin".into(),
                ));
            }
            let mut s = String::new();
            io::stdin()
                .read_to_string(&mut s)
                .context("cannot read SQL from stdin")?;
            s
        }
    };
    if sql.trim().is_empty() {
        return Err(Failure::Usage("the SQL is empty".into()));
    }
    Ok(sql)
}

/// The session over `files` with the memory settings of `g` and a fresh scan-progress counter
/// (`Dnsql::progress`).
async fn open_session(
    g: &Global,
    files: Vec<source::SegmentFile>,
    scope: &Scope,
    problems: Arc<Problems>,
    footers: &Arc<Footers>,
) -> Result<Dnsql, Failure> {
    let memory = session::Memory {
        limit: g.memory_limit,
        spill_dir: g.spill_dir.clone(),
    };
    let dnsql = session::context_with_memory(
        files,
        scope,
        problems,
        Arc::new(ScanProgress::default()),
        footers.clone(),
        &memory,
    )
    .await
    .map_err(|e| anyhow!("{e}"))?;
    Ok(dnsql)
}

async fn find_segments(
    g: &Global,
    scope: &Scope,
    problems: &Problems,
    footers: &Arc<Footers>,
) -> Result<Vec<source::SegmentFile>, Failure> {
    let args = source::parse_data_args(&g.data).map_err(|e| Failure::Usage(lake_usage(&e)))?;
    let verbose = g.verbose;
    let log = move |line: String| {
        if verbose {
            eprintln!("dnsql: {line}");
        }
    };
    let found = source::discover_all(&args, scope, footers, &log)
        .await
        .map_err(|e| match e {
            source::SourceError::Lake(e) => Failure::Usage(lake_usage(&e)),
            source::SourceError::List(e) => {
                let hint = list_hint(&e.error, e.code.as_deref());
                Failure::Runtime(anyhow!("{e}"), Some(hint))
            }
            e => Failure::Runtime(
                anyhow!(e),
                Some(
                    "--data takes a data dir, a segments/ tree, a .parquet file, a glob or a \
                     lake URL (s3://bucket/prefix)"
                        .into(),
                ),
            ),
        })?;
    log(format!(
        "directories listed: {}, hour directories taken from date manifests unlisted: {}",
        found.dirs_listed, found.dirs_from_manifests
    ));
    for s in found.skipped {
        problems.record(s.path, s.reason);
    }
    let places = || {
        found
            .looked_in
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if found.files.is_empty() && problems.is_empty() {
        if found.scoped {
            // A lake listed only in scope: nothing there is an empty answer, as locally.
            eprintln!(
                "warning: no segments within --host/--since/--until in {}",
                places()
            );
            return Ok(found.files);
        }
        return Err(Failure::Runtime(
            anyhow!("no segments found (looked for *.parquet in {})", places()),
            Some(
                "pass the recorder's data dir or a collected tree with --data, or set \
                 DNSLEDGER_DATA"
                    .into(),
            ),
        ));
    }
    warn_scope_misses(g, &found.files);
    Ok(found.files)
}

/// A `--data` URL that cannot be used, as a usage error (the URL and what to write instead).
fn lake_usage(e: &dnsledger_lake::LakeError) -> String {
    match e {
        dnsledger_lake::LakeError::UnknownScheme { scheme, url } => format!(
            "unknown --data URL scheme `{scheme}` in `{url}`; dnsql reads {} and local paths",
            dnsledger_lake::Scheme::ACCEPTED
        ),
        other => format!(
            "bad --data: {}",
            other.to_string().replace("\nhint: ", "; ")
        ),
    }
}

/// What to check when a lake cannot be listed.
fn list_hint(e: &dnsledger_lake::object_store::Error, code: Option<&str>) -> String {
    use dnsledger_lake::object_store::Error as E;
    match (e, code) {
        (_, Some("NoSuchBucket" | "ContainerNotFound")) => {
            "check the bucket name in the URL (and the endpoint, AWS_ENDPOINT_URL)".into()
        }
        (_, Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch"))
        | (E::PermissionDenied { .. } | E::Unauthenticated { .. }, _) => {
            "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, \
             GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*) and that they may list the prefix"
                .into()
        }
        (E::NotFound { .. }, _) => "check the bucket name and region (AWS_REGION)".into(),
        _ => "check that the endpoint is reachable (AWS_ENDPOINT_URL, network, proxy) and the \
              bucket name"
            .into(),
    }
}

/// An empty answer because of a mistyped --host or a time range outside the record must not
/// pass for "nothing happened": say so.
fn warn_scope_misses(g: &Global, files: &[source::SegmentFile]) {
    if files.is_empty() {
        return;
    }
    let hosts: std::collections::BTreeSet<&str> =
        files.iter().map(|f| f.key.host.as_str()).collect();
    for h in &g.hosts {
        if !hosts.contains(h.as_str()) {
            eprintln!(
                "warning: no segments of host `{h}` (hosts found: {})",
                hosts.iter().copied().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let scope = Scope {
        since: g.since,
        until: g.until,
        hosts: Vec::new(),
    };
    if !scope.is_empty() && !files.iter().any(|f| scope.admits_key(&f.key)) {
        let first = files.iter().map(|f| f.key.start_ns()).min().unwrap_or(0);
        let last = files.iter().map(|f| f.key.start_ns()).max().unwrap_or(0)
            + dnsledger_schema::partition::NS_PER_HOUR;
        eprintln!(
            "warning: no segments between --since and --until (the segments found cover {} to {})",
            hour_text(first),
            hour_text(last)
        );
    }
}

/// An hour boundary as RFC 3339.
fn hour_text(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    u64::try_from(secs)
        .ok()
        .map(|s| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(s))
                .to_string()
        })
        .unwrap_or_else(|| format!("{ns} ns"))
}

async fn run_sql(
    dnsql: &Dnsql,
    sql: &str,
    limit: Option<usize>,
    out: &mut Output,
) -> Result<(), Failure> {
    let mut open = |schema: SchemaRef| out.sink(schema);
    match dnsql.run_sql(sql, limit, &mut open).await {
        Ok(()) => Ok(()),
        Err(RunError::Output(e)) if e.is_broken_pipe() => Ok(()),
        Err(RunError::Output(e)) => Err(Failure::Runtime(
            anyhow!(e).context("cannot write the result"),
            None,
        )),
        // DataFusion's message already carries its context: print it once, not its chain.
        Err(RunError::Sql { err, hint }) => Err(Failure::Runtime(anyhow!("{err}"), hint)),
        Err(e @ RunError::CutShort { .. }) => Err(Failure::Runtime(anyhow!("{e}"), None)),
    }
}

async fn list_segments(
    g: &Global,
    scope: &Scope,
    problems: &Problems,
    out: &mut Output,
) -> Result<(), Failure> {
    let footers = Arc::new(Footers::with_disk_cache(FooterCache::from_env()));
    let files = find_segments(g, scope, problems, &footers).await?;
    let (rows, skipped) = segments::list(&files, scope, &footers).await;
    log_footers(g, &footers);
    for s in skipped {
        problems.record(s.path, s.reason);
    }
    for r in &rows {
        if let Some(t) = r.info.transactions
            && t != r.info.rows
        {
            eprintln!(
                "warning: {}: metadata says {t} transactions, the footer {} rows",
                r.path.display(),
                r.info.rows
            );
        }
    }
    let batch = segments::listing_batch(&rows);
    out.print(&batch)?;
    let hosts: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.host.as_str()).collect();
    let total: u64 = rows.iter().map(|r| r.info.rows).sum();
    let sum =
        |f: fn(&segments::SegmentRow) -> Option<u64>| -> u64 { rows.iter().filter_map(f).sum() };
    let kernel = sum(|r| r.info.dropped_kernel);
    let user = sum(|r| r.info.dropped_user);
    let lost = sum(|r| r.info.rows_lost);
    if io::stderr().is_terminal() && !g.quiet {
        eprintln!(
            "{} segments from {} hosts, {total} transactions; events dropped: {kernel} in the \
             kernel, {user} in user space; {lost} rows lost before writing",
            rows.len(),
            hosts.len()
        );
    }
    Ok(())
}

/// `dnsql report`: resolves the window, lists the segments (footers only) for the coverage,
/// runs the report's queries in one session and writes the page.
async fn report(
    g: &Global,
    args: &ReportArgs,
    problems: Arc<Problems>,
    pb: ProgressBar,
) -> Result<(), Failure> {
    if g.format != Format::Table {
        return Err(Failure::Usage(
            "dnsql report writes HTML: --format does not apply to it".into(),
        ));
    }
    // The output first: an unwritable -o fails before any work.
    let path = g.output.clone();
    let mut sink: Box<dyn Write> = match &path {
        Some(p) => Box::new(BufWriter::new(File::create(p).map_err(|e| {
            Failure::Runtime(
                anyhow!("cannot create `{}`: {e}", p.display()),
                Some("give -o a file in a directory you can write to".into()),
            )
        })?)),
        None if io::stdout().is_terminal() => {
            return Err(Failure::Usage(
                "refusing to write HTML to a terminal; use -o report.html or redirect stdout"
                    .into(),
            ));
        }
        None => Box::new(BufWriter::new(io::stdout())),
    };
    let result = write_report(g, args, problems, pb, &mut sink).await;
    if result.is_err()
        && let Some(p) = &path
    {
        drop(sink);
        let _ = std::fs::remove_file(p);
    }
    result
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

async fn write_report(
    g: &Global,
    args: &ReportArgs,
    problems: Arc<Problems>,
    pb: ProgressBar,
    sink: &mut Box<dyn Write>,
) -> Result<(), Failure> {
    const DAY: i64 = 86_400_000_000_000;
    let now = now_ns();
    let focus = match (&args.focus, args.pid, &args.comm) {
        (Some(name), _, _) => Some(report::Focus::Name(name.clone())),
        (None, Some(pid), _) => Some(report::Focus::Process(recipes::Selector::Pid {
            pid,
            host: match g.hosts.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            },
        })),
        (None, None, Some(comm)) => Some(report::Focus::Process(recipes::Selector::Comm(
            comm.clone(),
        ))),
        (None, None, None) => None,
    };
    // With --since, the window before is listed too (a lake lists only the partitions a scope
    // needs); without, the window starts at the first segment and has nothing before it.
    let (discovery, before) = match g.since {
        Some(since) => {
            let until = g.until.unwrap_or(now).max(since + 1);
            let len = until - since;
            let before = Span {
                start: since.saturating_sub(len),
                end: since,
            };
            let scope = Scope {
                since: Some(before.start),
                until: Some(until),
                hosts: g.hosts.clone(),
            };
            (scope, Some(before))
        }
        None => (
            Scope {
                since: None,
                until: g.until,
                hosts: g.hosts.clone(),
            },
            None,
        ),
    };
    let footers = Arc::new(Footers::with_disk_cache(FooterCache::from_env()));
    let files = find_segments(g, &discovery, &problems, &footers).await?;
    let window = match (g.since, g.until) {
        (Some(since), until) => Span {
            start: since,
            end: until.unwrap_or(now).max(since + 1),
        },
        (None, until) => {
            let (rows, _) = segments::list(&files, &discovery, &footers).await;
            let first = rows.iter().filter_map(|r| r.info.ts_min).min();
            let last = rows.iter().filter_map(|r| r.info.ts_max).max();
            match (first, last, until) {
                (Some(f), _, Some(u)) if f < u => Span { start: f, end: u },
                (Some(f), Some(l), None) => Span {
                    start: f,
                    end: l + 1,
                },
                (_, _, Some(u)) => Span {
                    start: u - DAY,
                    end: u,
                },
                _ => Span {
                    start: now - DAY,
                    end: now,
                },
            }
        }
    };
    let scope = Scope {
        since: Some(window.start),
        until: Some(window.end),
        hosts: g.hosts.clone(),
    };
    let (rows, skipped) = segments::list(&files, &scope, &footers).await;
    let mut unreadable = Vec::new();
    for s in skipped {
        if let Some(f) = files.iter().find(|f| f.path == s.path) {
            unreadable.push((f.key.host.clone(), f.key.start_ns()));
        }
        problems.record(s.path, s.reason);
    }
    let before_files = before.map_or(0, |b| {
        let s = Scope {
            since: Some(b.start),
            until: Some(b.end),
            hosts: g.hosts.clone(),
        };
        files.iter().filter(|f| s.admits_key(&f.key)).count()
    });
    // Every host with segments in the window or the window before, and every --host: a host
    // silent or not recorded in the window still gets its coverage row. (Hosts seen only
    // outside both are not listed: a lake lists only the partitions in scope, and the page
    // must be the same over a lake as over the same tree on disk.)
    let listed = Scope {
        since: Some(before.map_or(window.start, |b| b.start)),
        until: Some(window.end),
        hosts: g.hosts.clone(),
    };
    let mut known: Vec<String> = files
        .iter()
        .filter(|f| listed.admits_key(&f.key))
        .map(|f| f.key.host.clone())
        .chain(g.hosts.iter().cloned())
        .collect();
    known.sort();
    known.dedup();
    let request = report::Request {
        window,
        since_given: g.since.is_some(),
        until_given: g.until.is_some(),
        before,
        before_files,
        hosts: g.hosts.clone(),
        known_hosts: known,
        focus,
        top: usize::from(args.top),
        sources: g.data.iter().map(|d| d.display().to_string()).collect(),
        generated_at: now,
    };

    let dnsql = open_session(g, files, &scope, problems, &footers).await?;
    let progress = dnsql.progress.clone();
    let label = Arc::new(std::sync::Mutex::new(String::from("coverage")));
    let ticker = show_progress(g).then(|| spawn_report_progress(pb, progress, label.clone()));
    let step = move |s: &str| {
        if let Ok(mut l) = label.lock() {
            *l = s.to_owned();
        }
    };
    let built = report::build(&dnsql, &request, &rows, &unreadable, &step).await;
    if let Some(t) = ticker {
        t.abort();
    }
    log_footers(g, &footers);
    let page = match built {
        Ok(r) => report::html::render(&r),
        Err(RunError::Sql { err, hint }) => return Err(Failure::Runtime(anyhow!("{err}"), hint)),
        Err(e) => return Err(Failure::Runtime(anyhow!("{e}"), None)),
    };
    let target = g
        .output
        .as_ref()
        .map_or_else(|| "stdout".to_owned(), |p| format!("`{}`", p.display()));
    match sink.write_all(page.as_bytes()).and_then(|()| sink.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe && g.output.is_none() => return Ok(()),
        Err(e) => {
            return Err(Failure::Runtime(
                anyhow!("cannot write the report to {target}: {e}"),
                None,
            ));
        }
    }
    if show_progress(g) {
        eprintln!(
            "dnsql: wrote the report to {target} ({} KiB)",
            page.len().div_ceil(1024)
        );
    }
    Ok(())
}

/// The progress bar of `dnsql report`: the step running and the bytes read so far.
fn spawn_report_progress(
    pb: ProgressBar,
    progress: Arc<ScanProgress>,
    label: Arc<std::sync::Mutex<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if pb.is_finished() {
            return;
        }
        pb.set_draw_target(ProgressDrawTarget::stderr());
        while !pb.is_finished() {
            pb.set_position(progress.bytes_read.load(Ordering::Relaxed));
            let step = label.lock().map(|l| l.clone()).unwrap_or_default();
            pb.set_message(format!("for the report, {step}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Where results go: stdout or `-o FILE` (opened at the first result).
struct Output {
    format: Format,
    path: Option<PathBuf>,
    table: TableOptions,
    file: Option<File>,
    /// Render rows with this instead of the format.
    render: Option<output::Render>,
    /// Map rows to OCSF events (`dnsql export --ocsf`).
    ocsf: bool,
    /// Cleared when the result starts to print (they share the terminal).
    progress: ProgressBar,
}

/// Clears the progress bar before the first byte of output.
struct ClearOnWrite<W> {
    inner: W,
    progress: Option<ProgressBar>,
}

impl<W: Write> Write for ClearOnWrite<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(pb) = self.progress.take() {
            pb.finish_and_clear();
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Output {
    fn new(g: &Global, progress: ProgressBar) -> Self {
        let max_width = match g.width {
            Some(0) => None,
            Some(w) => Some(w),
            None if g.output.is_none() && io::stdout().is_terminal() => {
                terminal_size::terminal_size().map(|(w, _)| usize::from(w.0))
            }
            None => None,
        };
        Output {
            format: g.format,
            path: g.output.clone(),
            table: TableOptions { max_width },
            file: None,
            render: None,
            ocsf: false,
            progress,
        }
    }

    fn sink(&mut self, schema: SchemaRef) -> Result<Box<dyn Sink + 'static>, OutputError> {
        let w = self.writer()?;
        if self.ocsf {
            return ocsf::sink(self.format, w);
        }
        match self.render {
            Some(render) => Ok(output::render_sink(w, render)),
            None => output::sink(self.format, schema, w, self.table),
        }
    }

    /// Stdout or `-o FILE` (created at the first call).
    fn writer(&mut self) -> io::Result<Box<dyn Write + Send>> {
        Ok(match &self.path {
            None => Box::new(BufWriter::new(ClearOnWrite {
                inner: io::stdout(),
                progress: Some(self.progress.clone()),
            })),
            Some(path) => {
                let file = match &self.file {
                    Some(f) => f.try_clone()?,
                    None => {
                        let f = File::create(path).map_err(|e| {
                            io::Error::new(
                                e.kind(),
                                format!("cannot create `{}`: {e}", path.display()),
                            )
                        })?;
                        self.file = Some(f.try_clone()?);
                        f
                    }
                };
                Box::new(BufWriter::new(file))
            }
        })
    }

    fn print(&mut self, batch: &RecordBatch) -> Result<(), Failure> {
        let result = self.sink(batch.schema()).and_then(|mut s| {
            s.write(batch)?;
            s.finish()
        });
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.is_broken_pipe() => Ok(()),
            Err(e) => Err(Failure::Runtime(
                anyhow!(e).context("cannot write the result"),
                None,
            )),
        }
    }
}
