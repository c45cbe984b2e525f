//! The `dns_all` table: every segment found, as one DataFusion table with the recorder's schema
//! plus the partition columns `host`, `date`, `hour`.
//!
//! A scan (1) prunes segments whose partition values cannot match the query's filters, without
//! touching them, (2) reads and checks the footers of the rest, skipping (and reporting through
//! [`Problems`]) any that are truncated, corrupt, foreign or newer than this dnsql, and (3) hands
//! the survivors with their footer statistics to DataFusion's Parquet scan, which prunes files,
//! row groups (statistics, bloom filters) and pages with the remaining filters.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Int32Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result, ScalarValue, project_schema};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::expr_applicable_for_cols;
use datafusion::datasource::physical_plan::parquet::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::union::UnionExec;
use dnsledger_schema::partition;
use futures::FutureExt;
use futures::future::BoxFuture;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

use crate::catalog::bloom;
use crate::catalog::chunked;
use crate::catalog::segments::{Footer, Footers, skip_covered, statistics_of};
use crate::catalog::source::{SegmentFile, Skipped, StoredObject};
use datafusion::common::Statistics;
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use futures::StreamExt;

/// The partition columns, in the order they follow the file columns.
pub fn partition_fields() -> Vec<FieldRef> {
    vec![
        Arc::new(Field::new(partition::HOST, DataType::Utf8, false)),
        Arc::new(Field::new(partition::DATE, DataType::Date32, false)),
        Arc::new(Field::new(partition::HOUR, DataType::Int32, false)),
    ]
}

/// The table's schema: the segment schema, then `host`, `date`, `hour`.
pub fn table_schema() -> SchemaRef {
    let file = dnsledger_schema::schema();
    let mut fields: Vec<FieldRef> = file.fields().iter().cloned().collect();
    fields.extend(partition_fields());
    Arc::new(Schema::new(fields))
}

const PARTITION_NAMES: [&str; 3] = [partition::HOST, partition::DATE, partition::HOUR];

type Reporter = Box<dyn Fn(&Skipped) + Send + Sync>;

/// Segments skipped while answering, each named once with its reason. A non-empty list means
/// the answer is partial.
#[derive(Default)]
pub struct Problems {
    skipped: Mutex<BTreeMap<PathBuf, String>>,
    reporter: Option<Reporter>,
}

impl fmt::Debug for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Problems")
            .field("skipped", &self.list())
            .finish()
    }
}

impl Problems {
    /// `reporter` is called once per newly skipped file, as soon as it is found.
    pub fn with_reporter(reporter: impl Fn(&Skipped) + Send + Sync + 'static) -> Self {
        Problems {
            skipped: Mutex::default(),
            reporter: Some(Box::new(reporter)),
        }
    }

    pub fn record(&self, path: PathBuf, reason: String) {
        let new = {
            let mut map = self.skipped.lock().unwrap_or_else(|e| e.into_inner());
            if map.contains_key(&path) {
                None
            } else {
                map.insert(path.clone(), reason.clone());
                Some(Skipped { path, reason })
            }
        };
        if let (Some(s), Some(report)) = (new, &self.reporter) {
            report(&s);
        }
    }

    pub fn contains(&self, path: &std::path::Path) -> bool {
        self.skipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(path)
    }

    pub fn list(&self) -> Vec<Skipped> {
        self.skipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(path, reason)| Skipped {
                path: path.clone(),
                reason: reason.clone(),
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.skipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// Bytes to read and read so far by scans (for a progress indicator), and the segments scans
/// were given (to find a corrupt one after a failed query).
#[derive(Debug, Default)]
pub struct ScanProgress {
    /// Size of the segments handed to scans (each counted once).
    pub bytes_total: AtomicU64,
    /// Bytes read by scans.
    pub bytes_read: AtomicU64,
    /// Segments handed to scans (each counted once).
    pub files_total: AtomicU64,
    seen: Mutex<std::collections::HashSet<PathBuf>>,
    scanned: Mutex<Vec<SegmentFile>>,
}

impl ScanProgress {
    /// The segments handed to scans since the last call.
    pub fn take_scanned(&self) -> Vec<SegmentFile> {
        std::mem::take(&mut *self.scanned.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The table provider over a fixed list of segment files.
#[derive(Debug)]
pub struct SegmentTable {
    files: Arc<Vec<SegmentFile>>,
    schema: SchemaRef,
    problems: Arc<Problems>,
    progress: Arc<ScanProgress>,
    /// The run's footers: each read and decoded once, whatever the number of scans.
    footers: Arc<Footers>,
    /// A scan of more files than this (per store) is read in chunks of `chunk_files`
    /// ([`chunked`]).
    chunk_over: usize,
    chunk_files: usize,
}

impl SegmentTable {
    pub fn new(
        files: Vec<SegmentFile>,
        problems: Arc<Problems>,
        progress: Arc<ScanProgress>,
        footers: Arc<Footers>,
    ) -> Self {
        let (chunk_over, chunk_files) =
            chunked::from_env().unwrap_or((STATISTICS_MAX_FILES, chunked::CHUNK_FILES));
        SegmentTable {
            files: Arc::new(files),
            schema: table_schema(),
            problems,
            progress,
            footers,
            chunk_over,
            chunk_files,
        }
    }

    /// The files whose partition values satisfy every filter that only involves partition
    /// columns (filters that cannot be evaluated here prune nothing).
    fn prune(&self, state: &dyn Session, filters: &[Expr]) -> Vec<SegmentFile> {
        let partition_filters: Vec<Expr> = filters
            .iter()
            .filter(|f| expr_applicable_for_cols(&PARTITION_NAMES, f))
            .cloned()
            .collect();
        let keep: Option<Vec<bool>> = conjunction(partition_filters).and_then(|filter| {
            let schema = Arc::new(Schema::new(partition_fields()));
            let df_schema = DFSchema::try_from(schema.clone()).ok()?;
            let expr = state.create_physical_expr(filter, &df_schema).ok()?;
            let columns: Vec<ArrayRef> = vec![
                Arc::new(
                    self.files
                        .iter()
                        .map(|f| Some(f.key.host.as_str()))
                        .collect::<StringArray>(),
                ),
                Arc::new(Date32Array::from_iter_values(
                    self.files.iter().map(|f| f.key.date),
                )),
                Arc::new(Int32Array::from_iter_values(
                    self.files.iter().map(|f| f.key.hour),
                )),
            ];
            let batch = RecordBatch::try_new(schema, columns).ok()?;
            let mask = expr
                .evaluate(&batch)
                .ok()?
                .into_array(batch.num_rows())
                .ok()?;
            let mask = mask.as_boolean_opt()?;
            Some(
                (0..mask.len())
                    .map(|i| mask.is_valid(i) && mask.value(i))
                    .collect(),
            )
        });
        self.files
            .iter()
            .enumerate()
            .filter(|(i, f)| {
                keep.as_ref().is_none_or(|k| k[*i]) && !self.problems.contains(&f.path)
            })
            .map(|(_, f)| f.clone())
            .collect()
    }
}

#[async_trait]
impl TableProvider for SegmentTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: every filter is also applied to the rows, so pruning is only an optimisation
        // and a filter this table cannot evaluate on partition values is still correct.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let candidates = self.prune(state, filters);
        let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
        let file_schema = dnsledger_schema::schema();

        // A name lookup first asks the date manifests (`dnsledger_lake::manifest`): a file
        // whose entry rules the name out needs no footer at all. Every other file's footer is
        // read (once per run, also into DataFusion's metadata cache, so the scan's reader does
        // not fetch it again) and checked, and for a name lookup its row groups' min/max and
        // bloom filters are checked ([`bloom`]), one file at a time as they arrive: only small
        // facts are kept of each, so memory does not grow with the decoded footers of a large
        // lake. The compaction rule is applied per partition, from manifest entries and
        // footers alike: partition pruning keeps or drops whole partitions, so every file of
        // a kept partition is here to apply it to. It is applied before unreadable files are
        // reported: an input a compaction deleted between listing and reading is covered, not
        // corrupt.
        let probes: Arc<[bloom::Probe]> = bloom::probes(filters).into();
        // The columns whose statistics the plan may use: those it reads and those its filters
        // name (not all 65: each file's full statistics were ~24 KB, kept until the query
        // ended, and computing them was a large part of a short query).
        let columns: Arc<[usize]> = stat_columns(&file_schema, projection, filters).into();
        let entries = if probes.is_empty() {
            vec![None; candidates.len()]
        } else {
            self.footers.manifest_entries(&candidates).await
        };
        let mut known: Vec<(SegmentFile, (usize, Known))> = Vec::new();
        let mut to_examine = Vec::new();
        for (i, (f, e)) in candidates.into_iter().zip(entries).enumerate() {
            match e {
                Some(entry) => {
                    let possible = bloom::entry_may_match(&entry, &probes);
                    known.push((f, (i, Known::Entry { entry, possible })));
                }
                None => to_examine.push((i, f)),
            }
        }
        // Statistics (and footers kept for the scan) only for a scan of few files: counted
        // after the manifests ruled files out.
        let with_statistics = to_examine.len() <= STATISTICS_MAX_FILES;
        let examined = self
            .examine(
                to_examine,
                &cache,
                &probes,
                with_statistics.then_some(&columns),
            )
            .await;
        known.extend(
            examined
                .into_iter()
                .map(|(i, f, r)| (f, (i, Known::Examined(r)))),
        );
        let known = skip_covered(known, |(_, k)| k.compacted_from());
        let mut readable: Vec<(usize, SegmentFile, Option<Statistics>)> = Vec::new();
        let mut from_manifest = Vec::new();
        let (mut manifest_skipped, mut bloom_skipped) = (0u64, 0u64);
        for (f, (i, k)) in known {
            match k {
                Known::Entry { possible: true, .. } => from_manifest.push((i, f)),
                Known::Entry {
                    possible: false, ..
                } => manifest_skipped += 1,
                Known::Examined(Err(reason)) => self.problems.record(f.path.clone(), reason),
                Known::Examined(Ok(x)) if !x.possible => bloom_skipped += 1,
                Known::Examined(Ok(x)) => readable.push((i, f, x.statistics)),
            }
        }
        self.footers
            .manifest_skipped
            .fetch_add(manifest_skipped, Ordering::Relaxed);
        self.footers
            .bloom_skipped
            .fetch_add(bloom_skipped, Ordering::Relaxed);
        // The files their manifest entries could not rule out: footers read and checked now
        // (the names were checked already).
        let none: Arc<[bloom::Probe]> = Arc::new([]);
        let with_statistics =
            with_statistics && readable.len() + from_manifest.len() <= STATISTICS_MAX_FILES;
        for (i, f, r) in self
            .examine(
                from_manifest,
                &cache,
                &none,
                with_statistics.then_some(&columns),
            )
            .await
        {
            match r {
                Ok(x) => readable.push((i, f, x.statistics)),
                Err(reason) => self.problems.record(f.path.clone(), reason),
            }
        }
        // In the listing's order (host, time), as without manifests.
        readable.sort_by_key(|(i, _, _)| *i);
        let readable: Vec<(SegmentFile, Option<Statistics>)> =
            readable.into_iter().map(|(_, f, s)| (f, s)).collect();

        if readable.is_empty() {
            let projected = project_schema(&self.schema, projection)?;
            return Ok(Arc::new(EmptyExec::new(projected)));
        }

        {
            let mut seen = self.progress.seen.lock().unwrap_or_else(|e| e.into_inner());
            for (f, _) in &readable {
                if seen.insert(f.path.clone()) {
                    self.progress
                        .bytes_total
                        .fetch_add(f.size, Ordering::Relaxed);
                    self.progress.files_total.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.progress
            .scanned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(readable.iter().map(|(f, _)| f.clone()));

        // One Parquet scan per store (a scan reads from one), as one union. Each scan gets
        // the statistics of all its files merged (row counts, min/max of the columns above),
        // not per file: DataFusion answers `count(*)`/`min`/`max` from them; the files a name
        // lookup cannot match were ruled out above, and each file's row groups are pruned by
        // their own statistics when it is opened.
        type StoreScan = (StoredObject, Vec<PartitionedFile>, Vec<Option<Statistics>>);
        let mut by_store: BTreeMap<String, StoreScan> = BTreeMap::new();
        for (f, statistics) in readable {
            let pf =
                PartitionedFile::new_from_meta(f.object.meta.clone()).with_partition_values(vec![
                    ScalarValue::Utf8(Some(f.key.host.clone())),
                    ScalarValue::Date32(Some(f.key.date)),
                    ScalarValue::Int32(Some(f.key.hour)),
                ]);
            let entry = by_store
                .entry(f.object.store_url.as_str().to_owned())
                .or_insert_with(|| (f.object.clone(), Vec::new(), Vec::new()));
            entry.1.push(pf);
            entry.2.push(statistics);
        }
        let target = state.config().target_partitions().max(1);
        // For a chunked scan: the filters as a predicate of its own (see [`chunked`]); any
        // that cannot be planned here only prunes nothing.
        let predicate = conjunction(filters.iter().cloned()).and_then(|e| {
            let df_schema = DFSchema::try_from(self.schema.clone()).ok()?;
            state.create_physical_expr(e, &df_schema).ok()
        });
        let mut scans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        for (_, (object, files, statistics)) in by_store {
            if files.len() > self.chunk_over {
                scans
                    .push(self.chunked_scan(state, &object, files, projection, limit, &predicate)?);
                continue;
            }
            let groups = FileGroup::new(files).split_files(target);
            let statistics = widen(&file_schema, &columns, &statistics)?;
            let source = self.parquet_source(state, &object);
            let config = FileScanConfigBuilder::new(object.store_url.clone(), Arc::new(source))
                .with_file_groups(groups)
                .with_statistics(statistics)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            scans.push(DataSourceExec::from_data_source(config));
        }
        UnionExec::try_new(scans)
    }
}

impl SegmentTable {
    /// The Parquet source of a scan of `object`'s store: the segment schema with the
    /// partition columns, the session's Parquet options, and readers that reuse this run's
    /// footers.
    fn parquet_source(&self, state: &dyn Session, object: &StoredObject) -> ParquetSource {
        let table_schema = TableSchema::builder(dnsledger_schema::schema())
            .with_table_partition_cols(partition_fields())
            .build();
        let reader_factory = Arc::new(SegmentReaderFactory {
            store: object.store.clone(),
            metadata_cache: state.runtime_env().cache_manager.get_file_metadata_cache(),
            progress: self.progress.clone(),
            footers: self.footers.clone(),
            store_url: object.store_url.clone(),
        });
        ParquetSource::new(table_schema)
            .with_table_parquet_options(state.default_table_options().parquet)
            .with_parquet_file_reader_factory(reader_factory)
    }

    /// A scan of many `files` in chunks ([`chunked`]): no statistics (a scan of this many
    /// files has none), the filters as the Parquet source's predicate.
    fn chunked_scan(
        &self,
        state: &dyn Session,
        object: &StoredObject,
        files: Vec<PartitionedFile>,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
        predicate: &Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut source = self.parquet_source(state, object);
        if let Some(p) = predicate {
            source = source.with_predicate(p.clone());
        }
        let source = Arc::new(source);
        let store_url = object.store_url.clone();
        let projection = projection.cloned();
        let build: chunked::BuildChunk = Arc::new(move |files: Vec<PartitionedFile>| {
            let config = FileScanConfigBuilder::new(store_url.clone(), source.clone())
                .with_file_groups(vec![FileGroup::new(files)])
                .with_projection_indices(projection.clone())?
                .with_limit(limit)
                .build();
            Ok(DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>)
        });
        let schema = build(Vec::new())?.schema();
        let target = state.config().target_partitions().max(1);
        let groups = FileGroup::new(files)
            .split_files(target)
            .into_iter()
            .map(FileGroup::into_inner)
            .collect();
        Ok(Arc::new(chunked::ChunkedScan::new(
            groups,
            self.chunk_files,
            schema,
            build,
        )))
    }
}

/// Scans of at most this many files get statistics (row counts, min/max) and keep the footers
/// decoded while examining them for the scan (`segments::FOOTER_BUDGET`). Beyond it neither:
/// computing statistics costs about as much as decoding the footer again, the row groups'
/// statistics still prune each file once it is opened, and memory must not grow with the
/// window.
pub const STATISTICS_MAX_FILES: usize = 4096;

/// The segment schema's columns (indices) whose statistics a scan may use: the file columns
/// it reads and those its `filters` name (`projection` indexes the table: the segment columns, then
/// the partition columns).
fn stat_columns(file: &Schema, projection: Option<&Vec<usize>>, filters: &[Expr]) -> Vec<usize> {
    let mut columns: Vec<usize> = match projection {
        Some(p) => p
            .iter()
            .copied()
            .filter(|&i| i < file.fields().len())
            .collect(),
        None => (0..file.fields().len()).collect(),
    };
    for f in filters {
        for c in f.column_refs() {
            if let Ok(i) = file.index_of(c.name()) {
                columns.push(i);
            }
        }
    }
    columns.sort_unstable();
    columns.dedup();
    columns
}

/// The statistics of a scan of `files` over the segment schema `file`: the files' statistics
/// of `columns` merged, every other column unknown; all unknown if one file has none.
fn widen(file: &Schema, columns: &[usize], files: &[Option<Statistics>]) -> Result<Statistics> {
    let mut out = Statistics::new_unknown(file);
    let Some(known) = files.iter().map(Option::as_ref).collect::<Option<Vec<_>>>() else {
        return Ok(out);
    };
    let projected = file.project(columns)?;
    let merged = Statistics::try_merge_iter(known, &projected)?;
    out.num_rows = merged.num_rows;
    out.total_byte_size = merged.total_byte_size;
    for (&c, s) in columns.iter().zip(merged.column_statistics) {
        if let Some(slot) = out.column_statistics.get_mut(c) {
            *slot = s;
        }
    }
    Ok(out)
}

/// What is known about a file before the scan: its date manifest's entry, or what its footer
/// said.
enum Known {
    Entry {
        entry: Arc<dnsledger_lake::manifest::Entry>,
        /// Whether a row group may hold a row the name lookup wants.
        possible: bool,
    },
    Examined(Result<Examined, String>),
}

/// A file's footer, checked.
struct Examined {
    footer: Arc<Footer>,
    /// Whether a row group may hold a row the name lookup wants (min/max, bloom filters).
    possible: bool,
    /// The statistics of the scan's columns, if it may match and the scan gets statistics.
    statistics: Option<Statistics>,
}

impl Known {
    fn compacted_from(&self) -> Option<&str> {
        match self {
            Known::Entry { entry, .. } => entry.compacted_from.as_deref(),
            Known::Examined(x) => x.as_ref().ok()?.footer.info.compacted_from.as_deref(),
        }
    }
}

impl SegmentTable {
    /// Reads and checks the footers of `files` (index, file), several at a time, each on a
    /// task of its own (decoding is CPU work); checks the name `probes` against each and
    /// computes its statistics if `statistics`. The decoded footer is dropped once its file
    /// is examined (unless the run keeps it, see `segments::FOOTER_BUDGET`).
    async fn examine(
        &self,
        files: Vec<(usize, SegmentFile)>,
        cache: &Arc<FileMetadataCache>,
        probes: &Arc<[bloom::Probe]>,
        statistics: Option<&Arc<[usize]>>,
    ) -> Vec<(usize, SegmentFile, Result<Examined, String>)> {
        futures::stream::iter(files)
            .map(|(i, f)| {
                let footers = self.footers.clone();
                let cache = cache.clone();
                let probes = probes.clone();
                let columns = statistics.cloned();
                let keep = statistics.is_some();
                let kept = f.clone();
                let task = tokio::spawn(async move {
                    let r = async {
                        let loaded = footers.load(&f, Some(cache), keep).await?;
                        let possible = probes.is_empty()
                            || bloom::may_match(&f, &loaded.metadata, &probes).await;
                        let statistics = match columns {
                            Some(columns) if possible => {
                                Some(statistics_of(&loaded.metadata, &columns)?)
                            }
                            _ => None,
                        };
                        Ok(Examined {
                            footer: loaded.footer,
                            possible,
                            statistics,
                        })
                    }
                    .await;
                    (f, r)
                });
                async move {
                    // Only a panic in the parquet reader ends a task early: that file is
                    // reported as unreadable like any other.
                    let (f, r) = task
                        .await
                        .unwrap_or_else(|e| (kept, Err(format!("footer check failed: {e}"))));
                    (i, f, r)
                }
            })
            .buffered(EXAMINE_CONCURRENCY)
            .collect()
            .await
    }
}

/// Footers examined at a time (each one range read: on a lake, a round trip).
const EXAMINE_CONCURRENCY: usize = 32;

/// The innermost error message (the cause, without the layers of context above it).
pub(crate) fn root_message(e: &datafusion::error::DataFusionError) -> String {
    use datafusion::error::DataFusionError;
    use parquet::errors::ParquetError;
    match e.find_root() {
        DataFusionError::ParquetError(p) => match p.as_ref() {
            ParquetError::General(m) => m.clone(),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

/// Hands DataFusion a reader per file that counts the bytes read and gives back the footer
/// this run already decoded (DataFusion's metadata cache is bounded, 50 MiB by default: over a
/// large lake it would evict footers and the scan would fetch them again).
///
/// Not DataFusion's `CachedParquetFileReaderFactory`: its readers register a fresh set of ~25
/// labelled metrics per file in the plan's metrics, kept until the query ends (~10 KB per
/// file: 700 MB over a 100-host month of hourly segments). The bytes read are counted once,
/// in [`ScanProgress`].
#[derive(Debug)]
struct SegmentReaderFactory {
    store: Arc<dyn dnsledger_lake::object_store::ObjectStore>,
    metadata_cache: Arc<FileMetadataCache>,
    progress: Arc<ScanProgress>,
    footers: Arc<Footers>,
    store_url: datafusion::execution::object_store::ObjectStoreUrl,
}

impl ParquetFileReaderFactory for SegmentReaderFactory {
    fn create_reader(
        &self,
        _partition_index: usize,
        partitioned_file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        _metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let url = format!(
            "{}{}",
            self.store_url.as_str(),
            partitioned_file.object_meta.location
        );
        let known = self.footers.peek(&url).and_then(|f| f.metadata.clone());
        Ok(Box::new(SegmentReader {
            object: StoredObject {
                store_url: self.store_url.clone(),
                store: self.store.clone(),
                meta: partitioned_file.object_meta,
            },
            footers: self.footers.clone(),
            metadata_cache: self.metadata_cache.clone(),
            metadata_size_hint,
            progress: self.progress.clone(),
            known,
        }))
    }
}

struct SegmentReader {
    object: StoredObject,
    footers: Arc<Footers>,
    metadata_cache: Arc<FileMetadataCache>,
    metadata_size_hint: Option<usize>,
    progress: Arc<ScanProgress>,
    /// The footer as this run decoded it.
    known: Option<Arc<ParquetMetaData>>,
}

impl AsyncFileReader for SegmentReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.progress
            .bytes_read
            .fetch_add(range.end - range.start, Ordering::Relaxed);
        use dnsledger_lake::object_store::ObjectStoreExt;
        async move {
            self.object
                .store
                .get_range(&self.object.meta.location, range)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        let n: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        self.progress.bytes_read.fetch_add(n, Ordering::Relaxed);
        async move {
            self.object
                .store
                .get_ranges(&self.object.meta.location, &ranges)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let wants_page_index = options.is_some_and(|o| {
            o.column_index_policy() != PageIndexPolicy::Skip
                || o.offset_index_policy() != PageIndexPolicy::Skip
        });
        let enough = move |md: &ParquetMetaData| {
            !wants_page_index || (md.column_index().is_some() && md.offset_index().is_some())
        };
        if let Some(md) = self.known.as_ref().filter(|md| enough(md)) {
            return futures::future::ready(Ok(md.clone())).boxed();
        }
        async move {
            if self.known.is_none()
                && let Some(md) = self.footers.reread(&self.object).await
                && enough(&md)
            {
                return Ok(md);
            }
            DFParquetMetadata::new(self.object.store.as_ref(), &self.object.meta)
                .with_file_metadata_cache(Some(self.metadata_cache.clone()))
                .with_metadata_size_hint(self.metadata_size_hint)
                .with_page_index_policy(options.map(|o| o.column_index_policy()))
                .fetch_metadata()
                .await
                .map_err(|e| {
                    parquet::errors::ParquetError::General(format!(
                        "cannot read the footer of {}: {}",
                        self.object.meta.location,
                        root_message(&e)
                    ))
                })
        }
        .boxed()
    }
}

/// `dnsql schema`: every column of `dns` with its type, nullability, whether it is a partition
/// column, and its meaning (the stored columns but the files-only ones, the partition keys,
/// then the computed `qname_sent`).
pub fn schema_listing() -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let schema = table_schema();
    let partitions = [partition::HOST, partition::DATE, partition::HOUR];
    // The files' `_x` raw columns (schema version 3) are in `dns` as `query_raw` and
    // `response_raw`, restored.
    let mut fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .filter(|f| !dnsledger_schema::derived::FILE_ONLY.contains(&f.name().as_str()))
        .cloned()
        .collect();
    fields.push(Arc::new(Field::new(
        dnsledger_schema::QNAME_SENT,
        DataType::Utf8,
        true,
    )));
    let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
    let types: Vec<String> = fields.iter().map(|f| type_name(f.data_type())).collect();
    let nullable: Vec<bool> = fields.iter().map(|f| f.is_nullable()).collect();
    let meaning: Vec<&str> = names
        .iter()
        .map(|n| dnsledger_schema::column_doc(n))
        .collect();
    let partition: Vec<bool> = names.iter().map(|n| partitions.contains(n)).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(names)),
        Arc::new(StringArray::from(types)),
        Arc::new(BooleanArray::from(nullable)),
        Arc::new(BooleanArray::from(partition)),
        Arc::new(StringArray::from(meaning)),
    ];
    let out = Schema::new(vec![
        Field::new("column", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("nullable", DataType::Boolean, false),
        Field::new("partition", DataType::Boolean, false),
        Field::new("meaning", DataType::Utf8, false),
    ]);
    RecordBatch::try_new(Arc::new(out), columns)
}

/// A type as SQL users read it.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Dictionary(_, v) => type_name(v),
        DataType::Timestamp(unit, tz) => {
            let unit = match unit {
                arrow::datatypes::TimeUnit::Second => "s",
                arrow::datatypes::TimeUnit::Millisecond => "ms",
                arrow::datatypes::TimeUnit::Microsecond => "us",
                arrow::datatypes::TimeUnit::Nanosecond => "ns",
            };
            match tz {
                Some(tz) => format!("timestamp({unit}, {tz})"),
                None => format!("timestamp({unit})"),
            }
        }
        DataType::Date32 => "date".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Binary | DataType::LargeBinary => "binary".into(),
        DataType::List(item) | DataType::LargeList(item) => {
            format!("list<{}>", type_name(item.data_type()))
        }
        DataType::Struct(fields) => format!(
            "struct<{}>",
            fields
                .iter()
                .map(|f| format!("{} {}", f.name(), type_name(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names() {
        assert_eq!(type_name(&dnsledger_schema::dict_utf8()), "string");
        assert_eq!(
            type_name(&dnsledger_schema::ts_type()),
            "timestamp(ns, UTC)"
        );
        let answers = dnsledger_schema::schema();
        let answers = answers.field_with_name("answers").unwrap();
        assert_eq!(
            type_name(answers.data_type()),
            "list<struct<name string, type string, ttl uint32, data string>>"
        );
    }
}
