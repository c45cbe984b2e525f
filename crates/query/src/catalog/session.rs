//! The SQL session: table `dns_all` (every segment found) and view `dns` (`dns_all` within the
//! `--since/--until/--host` scope, plus the computed column `qname_sent`), statement execution
//! and error hints.

use std::num::NonZeroUsize;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::common::SchemaError;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::functions::expr_fn::coalesce;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use dnsledger_schema::{col as c, partition};
use futures::StreamExt;
use futures::future::BoxFuture;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::ParquetMetaData;

use crate::catalog::segments::Footers;
use crate::catalog::source::{PartitionKey, Scope, SegmentFile};
use crate::catalog::table::{Problems, ScanProgress, SegmentTable, table_schema};
use crate::output::{OutputError, Sink};

/// The table every query and recipe reads: `dns_all` within the scope.
pub const TABLE: &str = "dns";
/// Every segment found, whatever the scope.
pub const RAW_TABLE: &str = "dns_all";

/// The session's shared state beyond DataFusion's.
#[derive(Clone)]
pub struct Dnsql {
    pub ctx: SessionContext,
    /// Segments skipped while answering (the answer is partial if any).
    pub problems: Arc<Problems>,
    pub progress: Arc<ScanProgress>,
}

/// Memory DataFusion may hold for one statement's operators by default: 1 GiB. Past it,
/// sorts, aggregations and repartitions spill to disk; what the pool does not track (Parquet
/// decoding, footers, per-file bookkeeping, output) comes on top. A smaller pool is not a
/// way to a smaller process: DataFusion's fair pool splits what the operators that cannot
/// spill leave among those that can, and at 320 or 640 MiB `exfil` and `nxdomain` failed over
/// a 100-host month ("Resources exhausted").
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

/// How much memory queries may use and where they spill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    /// Bytes the operators of a statement may reserve together (a fair share each).
    pub limit: usize,
    /// Directory for spill files; `None`: the system's temporary directory (`TMPDIR`).
    pub spill_dir: Option<std::path::PathBuf>,
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            limit: DEFAULT_MEMORY_LIMIT,
            spill_dir: None,
        }
    }
}

/// The runtime of a session: a fair spilling memory pool of `memory.limit` bytes (every
/// spilling operator gets an equal share; an operator that cannot spill fails with a
/// "Resources exhausted" error naming the largest consumers instead of growing the process
/// without bound) and a disk manager for the spill files.
pub fn runtime(memory: &Memory) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(memory.limit),
        NonZeroUsize::new(5).unwrap_or(NonZeroUsize::MIN),
    );
    let mut builder = RuntimeEnvBuilder::new().with_memory_pool(Arc::new(pool));
    if let Some(dir) = &memory.spill_dir {
        builder = builder.with_temp_file_path(dir);
    }
    builder.build_arc()
}

/// A session over `files` with the tables `dns_all` and `dns`. The stores the files are in
/// (a lake's, the local file system's) are registered in the session's runtime; `footers`
/// holds the footers read so far and every one read later.
/// Runs with the default [`Memory`].
pub async fn context(
    files: Vec<SegmentFile>,
    scope: &Scope,
    problems: Arc<Problems>,
    progress: Arc<ScanProgress>,
    footers: Arc<Footers>,
) -> datafusion::error::Result<Dnsql> {
    context_with_memory(
        files,
        scope,
        problems,
        progress,
        footers,
        &Memory::default(),
    )
    .await
}

/// [`context`] with a memory limit and spill directory of the caller's choice.
pub async fn context_with_memory(
    files: Vec<SegmentFile>,
    scope: &Scope,
    problems: Arc<Problems>,
    progress: Arc<ScanProgress>,
    footers: Arc<Footers>,
    memory: &Memory,
) -> datafusion::error::Result<Dnsql> {
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime(memory)?);
    ctx.add_optimizer_rule(Arc::new(crate::catalog::distinct::DistinctCountToGroupBy));
    let mut registered = std::collections::HashSet::new();
    for f in &files {
        if registered.insert(f.object.store_url.as_str().to_owned()) {
            ctx.runtime_env()
                .register_object_store(f.object.store_url.as_ref(), f.object.store.clone());
        }
    }
    // The SQL functions the recipes use are there for every query.
    crate::udf::register_all(&ctx);
    let table = SegmentTable::new(files, problems.clone(), progress.clone(), footers);
    // `dns_all`: the segments' columns, those stored only where not derivable (schema
    // version 2) computed back, so old and new segments read alike.
    let all = crate::catalog::derived::with_derived_columns(ctx.read_table(Arc::new(table))?)?;
    ctx.register_table(RAW_TABLE, all.into_view())?;
    let mut view = ctx.table(RAW_TABLE).await?;
    if let Some(filter) = scope_filter(scope) {
        view = view.filter(filter)?;
    }
    view = with_computed_columns(view)?;
    ctx.register_table(TABLE, view.into_view())?;
    Ok(Dnsql {
        ctx,
        problems,
        progress,
    })
}

/// `dns`'s computed columns over the stored ones: `qname_sent`, the first question's name as
/// sent (stored in `qname_case` only where it differs from `qname`, i.e. has upper case).
pub fn with_computed_columns(mut view: DataFrame) -> datafusion::error::Result<DataFrame> {
    // Requester behind a local stub: files read with an inferred schema older than these
    // columns get them as NULL, so the recipes that filter on them run on any lake.
    for name in [
        c::REQUESTER_PIDS,
        c::REQUESTER_COMMS,
        c::REQUESTER_EXES,
        c::STUB_CACHE,
    ] {
        if view.schema().index_of_column_by_name(None, name).is_none()
            && let Ok(field) = dnsledger_schema::schema().field_with_name(name)
        {
            let null = ScalarValue::try_from(field.data_type())?;
            view = view.with_column(name, lit(null))?;
        }
    }
    view.with_column(
        dnsledger_schema::QNAME_SENT,
        coalesce(vec![col(c::QNAME_CASE), col(c::QNAME)]),
    )
}

fn ts_lit(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

fn date_lit(days: i32) -> Expr {
    lit(ScalarValue::Date32(Some(days)))
}

/// The scope as a filter on `dns_all`: on `ts` for the rows, and on the partition columns so
/// that whole hours and hosts are pruned before any file is opened.
pub fn scope_filter(scope: &Scope) -> Option<Expr> {
    let mut parts = Vec::new();
    if !scope.hosts.is_empty() {
        let hosts = scope.hosts.iter().map(|h| lit(h.as_str())).collect();
        parts.push(col(partition::HOST).in_list(hosts, false));
    }
    if let Some(since) = scope.since {
        let k = PartitionKey::of_ts(String::new(), since);
        parts.push(
            col(partition::DATE)
                .gt(date_lit(k.date))
                .or(col(partition::DATE)
                    .eq(date_lit(k.date))
                    .and(col(partition::HOUR).gt_eq(lit(k.hour)))),
        );
        parts.push(col(c::TS).gt_eq(ts_lit(since)));
    }
    if let Some(until) = scope.until {
        // `until` is exclusive: the last hour that can hold rows is the one of `until - 1ns`.
        let k = PartitionKey::of_ts(String::new(), until.saturating_sub(1));
        parts.push(
            col(partition::DATE)
                .lt(date_lit(k.date))
                .or(col(partition::DATE)
                    .eq(date_lit(k.date))
                    .and(col(partition::HOUR).lt_eq(lit(k.hour)))),
        );
        parts.push(col(c::TS).lt(ts_lit(until)));
    }
    parts.into_iter().reduce(Expr::and)
}

/// Splits SQL text into statements.
pub fn parse_statements(sql: &str) -> datafusion::error::Result<Vec<Statement>> {
    let dialect = GenericDialect {};
    Ok(DFParser::parse_sql_with_dialect(sql, &dialect)?
        .into_iter()
        .collect())
}

/// A hint for a failed statement, when one helps: the columns when a column is unknown, the
/// tables when the statement names a table that does not exist.
pub fn hint(ctx: &SessionContext, statement: &Statement, err: &DataFusionError) -> Option<String> {
    if let DataFusionError::SchemaError(e, _) = err.find_root()
        && let SchemaError::FieldNotFound { .. } = e.as_ref()
    {
        let columns = table_schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| !dnsledger_schema::derived::FILE_ONLY.contains(n))
            .chain([dnsledger_schema::QNAME_SENT])
            .collect::<Vec<_>>()
            .join(", ");
        return Some(format!(
            "the columns of `{TABLE}` are: {columns}; `dnsql schema` says what each means"
        ));
    }
    let refs = ctx.state().resolve_table_references(statement).ok()?;
    let unknown = refs
        .iter()
        .any(|r| !ctx.table_exist(r.clone()).unwrap_or(true));
    unknown.then(|| {
        format!(
            "the tables are `{TABLE}` (within --since/--until/--host) and `{RAW_TABLE}` (every \
             segment found); `information_schema.tables` lists all"
        )
    })
}

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Planning or execution failed (bad SQL, unreadable data, ...).
    #[error("{err}")]
    Sql {
        err: DataFusionError,
        hint: Option<String>,
    },
    /// Printing failed (disk full, closed pipe, ...).
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A corrupt segment was found after part of the answer had been printed.
    #[error(
        "the output is incomplete: a segment named above turned out corrupt after part of the \
         result was printed ({err}); move it out of the tree, or narrow the query with \
         --host/--since/--until, and run again"
    )]
    CutShort { err: DataFusionError },
}

/// Whether an execution error may come from bad bytes in a segment.
fn may_be_corrupt_data(err: &DataFusionError) -> bool {
    matches!(
        err.find_root(),
        DataFusionError::ParquetError(_)
            | DataFusionError::ArrowError(..)
            | DataFusionError::External(_)
            | DataFusionError::IoError(_)
            | DataFusionError::ObjectStore(_)
    )
}

impl Dnsql {
    /// Runs every statement of `sql` in order, printing each result that has columns through
    /// a sink from `open` (called once per result, after planning succeeded). `limit` caps the
    /// rows of each result. DML (INSERT, COPY, ...) is refused: segments are evidence.
    ///
    /// A segment that turns out to be corrupt while a query runs (its footer was fine) is
    /// found, recorded in [`Dnsql::problems`], and the statement runs again without it, as
    /// long as nothing of its result was printed yet.
    pub async fn run_sql<'w>(
        &self,
        sql: &str,
        limit: Option<usize>,
        open: &mut dyn FnMut(SchemaRef) -> Result<Box<dyn Sink + 'w>, OutputError>,
    ) -> Result<(), RunError> {
        let statements = parse_statements(sql).map_err(|err| RunError::Sql { err, hint: None })?;
        for statement in statements {
            self.run_statement(statement, limit, open).await?;
        }
        Ok(())
    }

    async fn run_statement<'w>(
        &self,
        statement: Statement,
        limit: Option<usize>,
        open: &mut dyn FnMut(SchemaRef) -> Result<Box<dyn Sink + 'w>, OutputError>,
    ) -> Result<(), RunError> {
        let options = SQLOptions::new().with_allow_dml(false);
        let sql_err = |err: DataFusionError| RunError::Sql {
            hint: hint(&self.ctx, &statement, &err),
            err,
        };
        for _attempt in 0..4 {
            self.progress.take_scanned();
            let state = self.ctx.state();
            let plan = state
                .statement_to_plan(statement.clone())
                .await
                .map_err(sql_err)?;
            options.verify_plan(&plan).map_err(sql_err)?;
            let mut df = self.ctx.execute_logical_plan(plan).await.map_err(sql_err)?;
            if let Some(n) = limit {
                df = df.limit(0, Some(n)).map_err(sql_err)?;
            }
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let mut handed_over = false;
            let result = async {
                let mut stream = df.execute_stream().await?;
                let mut sink = None;
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    if schema.fields().is_empty() {
                        continue;
                    }
                    let s = match &mut sink {
                        Some(s) => s,
                        None => sink.insert(open(schema.clone()).map_err(Wrapped::Output)?),
                    };
                    if batch.num_rows() > 0 {
                        handed_over = true;
                        s.write(&batch).map_err(Wrapped::Output)?;
                    }
                }
                if !schema.fields().is_empty() {
                    let s = match sink {
                        Some(s) => s,
                        None => open(schema.clone()).map_err(Wrapped::Output)?,
                    };
                    s.finish().map_err(Wrapped::Output)?;
                }
                Ok::<(), Wrapped>(())
            }
            .await;
            match result {
                Ok(()) => return Ok(()),
                Err(Wrapped::Output(e)) => return Err(RunError::Output(e)),
                Err(Wrapped::Df(err)) => {
                    if !may_be_corrupt_data(&err) || self.find_corrupt().await == 0 {
                        return Err(sql_err(err));
                    }
                    if handed_over {
                        return Err(RunError::CutShort { err });
                    }
                }
            }
        }
        Err(sql_err(DataFusionError::Execution(
            "giving up after skipping corrupt segments three times".into(),
        )))
    }

    /// Decodes every segment the last statement scanned and records those that fail in
    /// [`Dnsql::problems`]; returns how many were found.
    async fn find_corrupt(&self) -> usize {
        let files = self.progress.take_scanned();
        let mut found = 0;
        for f in files {
            if self.problems.contains(&f.path) {
                continue;
            }
            let path = f.path.clone();
            let check = tokio::spawn(async move { decode_all(&f).await }).await;
            if let Ok(Err(Undecodable::Corrupt(reason))) = check {
                self.problems.record(path, reason);
                found += 1;
            }
        }
        found
    }
}

enum Wrapped {
    Df(DataFusionError),
    Output(OutputError),
}

impl From<DataFusionError> for Wrapped {
    fn from(e: DataFusionError) -> Self {
        Wrapped::Df(e)
    }
}

/// Why [`decode_all`] failed.
enum Undecodable {
    /// The bytes are bad: the segment is skipped.
    Corrupt(String),
    /// The store failed (a lake out of reach): says nothing about the segment.
    Unreachable,
}

/// Reads every value of a segment through its store; the first decoding error, if any.
async fn decode_all(f: &SegmentFile) -> Result<(), Undecodable> {
    let classify = |e: parquet::errors::ParquetError, what: &str| {
        let from_store = matches!(&e, parquet::errors::ParquetError::External(inner)
            if inner.downcast_ref::<dnsledger_lake::object_store::Error>().is_some());
        if from_store {
            Undecodable::Unreachable
        } else {
            Undecodable::Corrupt(format!("{what}: {e}"))
        }
    };
    let reader = DefaultParquetFileReaderFactory::new(f.object.store.clone())
        .create_reader(
            0,
            PartitionedFile::new_from_meta(f.object.meta.clone()),
            None,
            &ExecutionPlanMetricsSet::new(),
        )
        .map_err(|e| Undecodable::Corrupt(format!("cannot open: {e}")))?;
    let mut stream = ParquetRecordBatchStreamBuilder::new(SendReader(reader))
        .await
        .and_then(|b| b.build())
        .map_err(|e| classify(e, "corrupt"))?;
    while let Some(batch) = stream.next().await {
        batch.map_err(|e| classify(e, "corrupt data"))?;
    }
    Ok(())
}

/// A boxed reader that stays `Send` (parquet implements its trait for `Box<dyn
/// AsyncFileReader>` only, which is not).
struct SendReader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for SendReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        self.0.get_metadata(options)
    }
}
