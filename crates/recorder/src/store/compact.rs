//! Compaction: merge a closed partition's sealed segments into one (`dnsledger compact`).
//!
//! A recorder seals a segment every few minutes (and imports, restarts and recoveries add
//! more), so a host's hour is typically a dozen small files. Compaction rewrites them as one
//! segment of the same partition (`host=/date=/hour=`), with the recorder's writer properties
//! (zstd, dictionaries, page statistics, bloom filters on the name columns: one definition, in
//! [`segment`](super::segment)), its rows sorted by [`SORT_KEY`] so that name lookups prune
//! row groups and pages, in row groups of [`COMPACT_ROW_GROUP_ROWS`].
//!
//! # Readers see every row exactly once
//!
//! The output names its inputs in [`meta::COMPACTED_FROM`]; readers skip every file named there
//! by another file of the same partition ([`compaction::covered`]). The steps are ordered so
//! that this holds at every instant:
//!
//! 1. the output is written to a temporary file outside the listed tree (`<data_dir>/inprogress/`
//!    or, for a bare segments tree, `<root>/.compacting/`), fsynced, then renamed into the
//!    partition directory and the directory fsynced. On a lake it is one create-only PUT.
//! 2. only then are the inputs deleted, one by one.
//!
//! A run killed after step 1 leaves the output and some inputs: readers skip the inputs, and
//! the next run deletes them first ("finished"). An input that vanished meanwhile (deleted by
//! `prune` or by hand) is skipped and reported; nothing it held is in the output, so nothing is
//! duplicated. Compaction and `prune` take turns on the same lock, so one never deletes what the
//! other is reading. The output's `compacted_from` names its inputs *and* everything they
//! covered in turn, so a re-compaction (an hour compacted again with a late file) leaves no
//! file visible twice even if a crash left an old input behind.
//!
//! # Which partitions
//!
//! Only closed ones: the hour ended at or before `--before` (default: the start of the current
//! hour), no in-progress segment of the data directory starts in it, and no spool file holds a
//! row of it (a recovery would still add a segment). A partition with a single segment (and
//! nothing to finish) is left alone.
//!
//! # Footer metadata of the output
//!
//! Loss counters are summed over the inputs (`dropped_kernel`, `dropped_user`, `rows_lost`,
//! `cut_by_cap`, `pair_evicted`); `recovered_rows` and `recovery_cut_bytes` are per recovered
//! run, so they are summed over the distinct `recovered_from` runs. `ts_min`, `ts_max` and
//! `transactions` are recomputed, `source` is `compact`, host and schema version are kept.
//! Values that may differ between inputs (`boot_id`, `kernel`, `recorder_version`,
//! `recovered_from`) are the distinct values, comma-separated in input order.
//!
//! # Test hook
//!
//! `DNSLEDGER_FAILPOINT=compact:after-write|after-rename|after-first-delete` makes the process
//! abort (SIGABRT, like a crash) right after that step; the end-to-end tests kill compaction at
//! each step this way. `after-write` is after the temporary file is synced (on a lake: after
//! the PUT), `after-rename` after the rename into the partition, `after-first-delete` after
//! the first input is deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, TimestampNanosecondArray, new_null_array};
use arrow_schema::{ArrowError, SortOptions};
use bytes::Bytes;
use dnsledger_lake::object_store::{
    self, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};
use dnsledger_lake::{LakeUrl, manifest};
use dnsledger_schema::{SCHEMA_VERSION, col, compaction, meta, partition, schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::errors::ParquetError;
use parquet::file::metadata::{KeyValue, ParquetMetaDataReader, SortingColumn};

use crate::store::prune::{self, PruneError};
use crate::store::segment::{
    self, INPROGRESS_DIR, INPROGRESS_EXT, SEGMENT_EXT, SegmentError, format_rfc3339_ns,
};
use crate::store::spool::{SPOOL_DIR, SPOOL_EXT, read_spool_file};

const HOUR_NS: i64 = partition::NS_PER_HOUR;

/// Environment variable of the test hook (see the module docs).
pub const FAILPOINT_ENV: &str = "DNSLEDGER_FAILPOINT";
/// Extension of a compacted segment being written (in the temporary directory).
pub const COMPACTING_EXT: &str = "parquet.compacting";
/// Temporary directory of a bare segments tree (hidden: no reader enters it).
const TREE_TMP_DIR: &str = ".compacting";
/// Value of `dnsledger.source` in a compacted segment.
pub const SOURCE: &str = "compact";

/// Row order of a compacted segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// `registered_domain, qname, ts`: rows of a domain together, then of a name.
    Domain,
    /// `qname, ts`.
    Qname,
    /// `ts` only, like the recorder's segments.
    Time,
}

impl SortKey {
    fn columns(self) -> &'static [&'static str] {
        match self {
            SortKey::Domain => &[col::REGISTERED_DOMAIN, col::QNAME, col::TS],
            SortKey::Qname => &[col::QNAME, col::TS],
            SortKey::Time => &[col::TS],
        }
    }
}

/// The row order of compacted segments (chosen by measurement: see bench/README.md,
/// "Compaction").
pub const SORT_KEY: SortKey = SortKey::Domain;
/// Rows per row group of a compacted segment (chosen by measurement, as [`SORT_KEY`]).
pub const COMPACT_ROW_GROUP_ROWS: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Tree(#[from] PruneError),
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("cannot delete {path}: {source}")]
    Delete { path: String, source: io::Error },
    #[error("cannot encode compacted segment {path}: {source}")]
    Encode { path: String, source: ParquetError },
    #[error("cannot merge the rows of {partition}: {source}")]
    Merge {
        partition: String,
        source: ArrowError,
    },
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error(transparent)]
    Lake(#[from] dnsledger_lake::LakeError),
    #[error("{op} {path}: {source}")]
    Store {
        op: &'static str,
        path: String,
        source: object_store::Error,
    },
    #[error("cannot start the object store client: {0}")]
    Runtime(io::Error),
}

/// What to compact.
#[derive(Clone, Debug)]
pub struct CompactOptions {
    /// Only these hosts (unescaped names; all when empty).
    pub hosts: Vec<String>,
    /// Only partitions whose hour ended at or before this (UTC ns); never the current hour.
    pub before_ns: i64,
    /// Now (UTC ns).
    pub now_ns: i64,
    /// Report what would be done; change nothing.
    pub dry_run: bool,
}

impl CompactOptions {
    /// Hours ending at or before this are closed.
    fn cutoff(&self) -> i64 {
        let current_hour = self.now_ns.div_euclid(HOUR_NS) * HOUR_NS;
        self.before_ns.min(current_hour)
    }
}

/// What happened to one partition.
#[derive(Clone, Debug, Default)]
pub struct PartitionOutcome {
    /// `host=…/date=…/hour=…` (relative to the tree or the lake prefix).
    pub partition: String,
    /// Inputs merged (file names), in name order.
    pub inputs: Vec<String>,
    /// The compacted segment's file name (none for a partition only finished).
    pub output: Option<String>,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Inputs of an earlier, interrupted compaction deleted now.
    pub finished: Vec<String>,
    /// Inputs that disappeared between listing and reading (skipped; nothing lost).
    pub vanished: Vec<String>,
    /// Files left alone because they cannot be read as segments, with the reason.
    pub unreadable: Vec<(String, String)>,
}

/// What a compaction run did (or, with `dry_run`, would do).
#[derive(Debug, Default)]
pub struct CompactReport {
    /// Partitions compacted or finished.
    pub partitions: Vec<PartitionOutcome>,
    /// Closed partitions already one segment.
    pub untouched: usize,
    /// Partitions skipped because data for their hour is still in progress or spooled.
    pub open: Vec<String>,
    /// The date manifests brought up to date after compacting (none with `dry_run`).
    pub manifests: ManifestReport,
}

/// What the manifest step of a compaction run did ([`dnsledger_lake::manifest`]): after the
/// partitions are compacted, every date directory with a closed hour (of the hosts asked for)
/// gets a manifest describing its segments as they are now.
#[derive(Debug, Default)]
pub struct ManifestReport {
    /// Date directories whose manifest was (re)written.
    pub written: Vec<String>,
    /// Date directories whose manifest already described their segments.
    pub unchanged: usize,
    /// Date directories without segments whose manifest was deleted.
    pub removed: Vec<String>,
    /// Files without an entry because they cannot be read as segments (path, reason):
    /// readers open them as if there were no manifest.
    pub left_out: Vec<(String, String)>,
    /// Manifests that could not be listed, read or written (where, why). Nothing is lost:
    /// readers then read footers, as without a manifest.
    pub failed: Vec<(String, String)>,
}

/// Brings the date manifests below `prefix` of `store` up to date (see [`ManifestReport`]).
/// `local_root`: the tree's directory when `store` is the local file system's over it (the
/// manifests then also record the hour directories' listings: [`manifest::list_local_dirs`]).
async fn refresh_manifests(
    store: &Arc<dyn ObjectStore>,
    prefix: &object_store::path::Path,
    local_root: Option<&Path>,
    opts: &CompactOptions,
    url_of: &(dyn Fn(&object_store::path::Path) -> String + Sync),
) -> ManifestReport {
    let mut report = ManifestReport::default();
    if opts.dry_run {
        return report;
    }
    let dates = match manifest::list_dates(store.as_ref(), prefix).await {
        Ok(d) => d,
        Err(e) => {
            report.failed.push((url_of(prefix), e.to_string()));
            return report;
        }
    };
    let cutoff = opts.cutoff();
    for (dir, segments) in dates {
        let parts: Vec<String> = dir
            .parts()
            .map(|p| manifest::decode_part(p.as_ref()))
            .collect();
        let [.., h, d] = parts.as_slice() else {
            continue;
        };
        let (Some(host), Some(date)) = (
            partition::host_of_component(h),
            partition::date_of_component(d),
        ) else {
            continue;
        };
        // Only dates with a closed hour, of the hosts asked for.
        if i64::from(date) * partition::NS_PER_DAY >= cutoff
            || (!opts.hosts.is_empty() && !opts.hosts.contains(&host))
        {
            continue;
        }
        let at = url_of(&dir);
        let dirs = local_root
            .map(|root| {
                let date_dir: PathBuf = std::iter::once(root.to_owned())
                    .chain(parts.iter().map(PathBuf::from))
                    .collect();
                let changed_before = std::time::SystemTime::now()
                    .checked_sub(manifest::DIR_MARGIN)
                    .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
                manifest::list_local_dirs(&date_dir, changed_before)
            })
            .unwrap_or_default();
        match manifest::refresh(store, &dir, &segments, &dirs, url_of).await {
            Ok(manifest::Refreshed::Written { left_out, .. }) => {
                report.left_out.extend(
                    left_out
                        .into_iter()
                        .map(|(f, why)| (format!("{at}/{f}"), why)),
                );
                report.written.push(at);
            }
            Ok(manifest::Refreshed::Unchanged) => report.unchanged += 1,
            Ok(manifest::Refreshed::Removed) => report.removed.push(at),
            Ok(manifest::Refreshed::Absent) => {}
            Err(e) => report.failed.push((at, e.to_string())),
        }
    }
    report
}

fn failpoint(step: &str) {
    if std::env::var(FAILPOINT_ENV).is_ok_and(|v| v.strip_prefix("compact:") == Some(step)) {
        eprintln!("{FAILPOINT_ENV}: aborting after compaction step {step}");
        std::process::abort();
    }
}

/// One input read in full.
struct Input {
    name: String,
    bytes: Bytes,
}

/// The footer key-value metadata of a segment held in memory.
fn footer_kv(bytes: &Bytes) -> Result<HashMap<String, String>, ParquetError> {
    let md = ParquetMetaDataReader::new().parse_and_finish(bytes)?;
    Ok(kv_of(md.file_metadata().key_value_metadata()))
}

fn kv_of(kvs: Option<&Vec<KeyValue>>) -> HashMap<String, String> {
    kvs.into_iter()
        .flatten()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
        .collect()
}

/// Checks that a footer is a segment this recorder can rewrite.
fn check_segment(kv: &HashMap<String, String>) -> Result<(), String> {
    match kv
        .get(meta::SCHEMA_VERSION)
        .map(|v| v.trim().parse::<u32>())
    {
        None => Err(format!("no `{}` key: not a segment", meta::SCHEMA_VERSION)),
        Some(Err(_)) => Err("unreadable schema version".into()),
        Some(Ok(v)) if v > SCHEMA_VERSION => Err(format!(
            "schema version {v} is newer than this recorder's {SCHEMA_VERSION}"
        )),
        Some(Ok(_)) => Ok(()),
    }
}

/// The rows of a segment, with the columns of the current schema (missing nullable columns of
/// an older segment as NULL).
fn read_batches(bytes: Bytes) -> Result<Vec<RecordBatch>, ParquetError> {
    let target = schema();
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_batch_size(8192)
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let columns = target
            .fields()
            .iter()
            .map(|f| match batch.column_by_name(f.name()) {
                Some(c) if c.data_type().equals_datatype(f.data_type()) => Ok(c.clone()),
                Some(c) => Err(ParquetError::General(format!(
                    "column `{}` is {}, expected {}",
                    f.name(),
                    c.data_type(),
                    f.data_type()
                ))),
                None if f.is_nullable() => Ok(new_null_array(f.data_type(), batch.num_rows())),
                None => Err(ParquetError::General(format!(
                    "required column `{}` is missing",
                    f.name()
                ))),
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        out.push(RecordBatch::try_new(target.clone(), columns)?);
    }
    Ok(out)
}

/// The merged, sorted rows of a partition and the output's footer metadata.
struct Merged {
    batch: RecordBatch,
    kv: Vec<(String, String)>,
    ts_min: i64,
}

/// Distinct values in first-seen order, comma-joined; `None` when no input has the key.
fn joined(kvs: &[HashMap<String, String>], key: &str) -> Option<String> {
    let mut seen: Vec<&str> = Vec::new();
    for kv in kvs {
        for v in kv.get(key).into_iter().flat_map(|v| v.split(',')) {
            if !v.is_empty() && !seen.contains(&v) {
                seen.push(v);
            }
        }
    }
    (!seen.is_empty()).then(|| seen.join(","))
}

fn number(kv: &HashMap<String, String>, key: &str) -> Option<u64> {
    kv.get(key).and_then(|v| v.trim().parse().ok())
}

/// The footer metadata of the output (see the module docs).
fn merged_kv(
    kvs: &[HashMap<String, String>],
    host: &str,
    inputs: &[String],
    ts_min: i64,
    ts_max: i64,
    rows: u64,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![
        (meta::SCHEMA_VERSION.into(), SCHEMA_VERSION.to_string()),
        (meta::HOST.into(), host.to_string()),
    ];
    for key in [meta::BOOT_ID, meta::KERNEL, meta::RECORDER_VERSION] {
        if let Some(v) = joined(kvs, key) {
            out.push((key.into(), v));
        }
    }
    out.extend([
        (meta::SOURCE.into(), SOURCE.to_string()),
        (meta::TS_MIN.into(), format_rfc3339_ns(ts_min)),
        (meta::TS_MAX.into(), format_rfc3339_ns(ts_max)),
        (meta::TRANSACTIONS.into(), rows.to_string()),
    ]);
    for key in [
        meta::DROPPED_KERNEL,
        meta::DROPPED_USER,
        meta::ROWS_LOST,
        meta::CUT_BY_CAP,
        meta::PAIR_EVICTED,
    ] {
        let values: Vec<u64> = kvs.iter().filter_map(|kv| number(kv, key)).collect();
        if !values.is_empty() {
            out.push((key.into(), values.iter().sum::<u64>().to_string()));
        }
    }
    // Recovery counters are per recovered run (repeated in each of its segments).
    if let Some(runs) = joined(kvs, meta::RECOVERED_FROM) {
        for key in [meta::RECOVERED_ROWS, meta::RECOVERY_CUT_BYTES] {
            let mut per_run: BTreeMap<&str, u64> = BTreeMap::new();
            for kv in kvs {
                if let (Some(run), Some(n)) = (kv.get(meta::RECOVERED_FROM), number(kv, key)) {
                    let e = per_run.entry(run.as_str()).or_default();
                    *e = (*e).max(n);
                }
            }
            if !per_run.is_empty() {
                out.push((key.into(), per_run.values().sum::<u64>().to_string()));
            }
        }
        out.push((meta::RECOVERED_FROM.into(), runs));
    }
    // The inputs and, transitively, what they replaced themselves.
    let mut names: Vec<&str> = inputs.iter().map(String::as_str).collect();
    for kv in kvs {
        if let Some(v) = kv.get(meta::COMPACTED_FROM) {
            names.extend(compaction::decode_inputs(v));
        }
    }
    let mut seen = BTreeSet::new();
    names.retain(|n| seen.insert(*n));
    if let Some(v) = compaction::encode_inputs(&names) {
        out.push((meta::COMPACTED_FROM.into(), v));
    }
    out
}

/// Reads, merges and sorts the inputs.
fn merge(
    partition: &str,
    host: &str,
    inputs: &[Input],
    key: SortKey,
) -> Result<Merged, CompactError> {
    let mut batches = Vec::new();
    let mut kvs = Vec::new();
    for input in inputs {
        let enc = |source| CompactError::Encode {
            path: format!("{partition}/{}", input.name),
            source,
        };
        kvs.push(footer_kv(&input.bytes).map_err(enc)?);
        batches.extend(read_batches(input.bytes.clone()).map_err(enc)?);
    }
    let merge_err = |source| CompactError::Merge {
        partition: partition.to_string(),
        source,
    };
    let all = arrow_select::concat::concat_batches(&schema(), &batches).map_err(merge_err)?;
    drop(batches);
    let sorted = sort_batch(&all, key).map_err(merge_err)?;
    drop(all);
    let ts = sorted
        .column_by_name(col::TS)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| merge_err(ArrowError::SchemaError("no ts column".into())))?;
    let ts_min = ts.values().iter().copied().min().unwrap_or(0);
    let ts_max = ts.values().iter().copied().max().unwrap_or(0);
    let names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    let kv = merged_kv(&kvs, host, &names, ts_min, ts_max, sorted.num_rows() as u64);
    Ok(Merged {
        batch: sorted,
        kv,
        ts_min,
    })
}

fn sort_batch(batch: &RecordBatch, key: SortKey) -> Result<RecordBatch, ArrowError> {
    let options = SortOptions {
        descending: false,
        nulls_first: false,
    };
    let columns = key
        .columns()
        .iter()
        .map(|name| {
            let values = batch
                .column_by_name(name)
                .ok_or_else(|| ArrowError::SchemaError(format!("no column {name}")))?
                .clone();
            Ok(arrow_ord::sort::SortColumn {
                values,
                options: Some(options),
            })
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    let indices = arrow_ord::sort::lexsort_to_indices(&columns, None)?;
    arrow_select::take::take_record_batch(batch, &indices)
}

/// Writes a merged partition as one segment into `w`.
fn write_segment<W: Write + Send>(
    w: W,
    merged: &Merged,
    key: SortKey,
    row_group_rows: usize,
    path: &str,
) -> Result<W, CompactError> {
    let enc = |source| CompactError::Encode {
        path: path.to_string(),
        source,
    };
    let target = schema();
    let descr = parquet::arrow::ArrowSchemaConverter::new()
        .convert(&target)
        .map_err(enc)?;
    let sorting: Vec<SortingColumn> = key
        .columns()
        .iter()
        .filter_map(|name| {
            descr
                .columns()
                .iter()
                .position(|c| c.path().string() == *name)
        })
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    let props = segment::writer_properties_builder()?
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_sorting_columns(Some(sorting))
        .build();
    let mut writer = ArrowWriter::try_new(w, target, Some(props)).map_err(enc)?;
    // Hand the writer row-group-sized slices, so each row group is flushed as it fills.
    let n = merged.batch.num_rows();
    let step = row_group_rows.max(1);
    let mut offset = 0;
    while offset < n {
        let len = step.min(n - offset);
        writer
            .write(&merged.batch.slice(offset, len))
            .map_err(enc)?;
        offset += len;
    }
    for (k, v) in &merged.kv {
        writer.append_key_value_metadata(KeyValue::new(k.clone(), v.clone()));
    }
    writer.into_inner().map_err(enc)
}

/// Encodes `inputs` of one partition as one compacted segment in memory (benchmarks, tests).
pub fn compact_bytes(
    host: &str,
    inputs: Vec<(String, Bytes)>,
    key: SortKey,
    row_group_rows: usize,
) -> Result<Vec<u8>, CompactError> {
    let inputs: Vec<Input> = inputs
        .into_iter()
        .map(|(name, bytes)| Input { name, bytes })
        .collect();
    let merged = merge("memory", host, &inputs, key)?;
    write_segment(Vec::new(), &merged, key, row_group_rows, "memory")
}

/// The compacted segment's file name: like a recorder's (first row's time, host, a run id, a
/// sequence number), with a `c` after the run id.
fn output_name(host: &str, ts_min: i64) -> String {
    format!(
        "{}-{}-{}c-000000.{SEGMENT_EXT}",
        segment::format_compact_ns(ts_min),
        partition::escape(host),
        segment::run_id()
    )
}

// ---------------------------------------------------------------------------------------------
// Local data directories and segment trees.

/// One partition directory's segments.
struct LocalPartition {
    rel: String,
    dir: PathBuf,
    host: String,
    hour_start_ns: i64,
    files: Vec<(String, PathBuf, u64)>,
}

/// Hours (host escaped, hour index) that still have data on its way to a segment: in-progress
/// segments (whose names start with their first row's time) and spool files (read; any host).
fn open_hours(data_dir: &Path) -> (BTreeSet<(String, i64)>, BTreeSet<i64>) {
    let mut inprogress = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(data_dir.join(INPROGRESS_DIR)) {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(&format!(".{INPROGRESS_EXT}"))
                && let Some((host, hour)) = parse_segment_name(stem)
            {
                inprogress.insert((host, hour));
            }
        }
    }
    let mut spooled = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(data_dir.join(SPOOL_DIR)) {
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if path.extension().is_none_or(|x| x != SPOOL_EXT) {
                continue;
            }
            match read_spool_file(&path) {
                Ok((batches, _)) => {
                    for b in batches {
                        if let Some(ts) = b
                            .column_by_name(col::TS)
                            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
                        {
                            spooled.extend(ts.values().iter().map(|t| t.div_euclid(HOUR_NS)));
                        }
                    }
                }
                // Unreadable spool: its hours are unknown, so every hour counts as open.
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read spool file; compacting nothing");
                    spooled.insert(i64::MIN);
                }
            }
        }
    }
    (inprogress, spooled)
}

/// `(escaped host, hour index)` of a segment name `<time>-<host>-<run>-<seq>`.
fn parse_segment_name(stem: &str) -> Option<(String, i64)> {
    let mut parts = stem.rsplitn(3, '-');
    let _seq = parts.next()?;
    let _run = parts.next()?;
    let rest = parts.next()?;
    let (time, host) = rest.split_once('-')?;
    // 20231114T221320.123456789Z
    let b = time.as_bytes();
    if b.len() < 11 || b[8] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| time.get(r)?.parse::<i64>().ok();
    let (y, m, d, h) = (num(0..4)?, num(4..6)?, num(6..8)?, num(9..11)?);
    let days = partition::days_from_civil(y, u32::try_from(m).ok()?, u32::try_from(d).ok()?);
    Some((host.to_string(), days * 24 + h))
}

fn io_read(path: &Path) -> impl FnOnce(io::Error) -> CompactError + '_ {
    move |source| CompactError::Read {
        path: path.display().to_string(),
        source,
    }
}

fn io_write(path: &Path) -> impl FnOnce(io::Error) -> CompactError + '_ {
    move |source| CompactError::Write {
        path: path.display().to_string(),
        source,
    }
}

/// Deletes a file; one already gone is fine. Returns whether it was there.
fn remove(path: &Path) -> Result<bool, CompactError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CompactError::Delete {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Compacts the closed partitions of a data directory or segments tree. Waits for a running
/// compaction or prune to finish first.
pub fn compact_dir(dir: &Path, opts: &CompactOptions) -> Result<CompactReport, CompactError> {
    compact_dir_with(dir, opts, true).map(|r| r.unwrap_or_default())
}

/// Like [`compact_dir`], but returns `None` at once when a compaction or prune holds the lock
/// (the recorder's upkeep never waits for a cron job).
pub fn try_compact_dir(
    dir: &Path,
    opts: &CompactOptions,
) -> Result<Option<CompactReport>, CompactError> {
    compact_dir_with(dir, opts, false)
}

fn compact_dir_with(
    dir: &Path,
    opts: &CompactOptions,
    wait: bool,
) -> Result<Option<CompactReport>, CompactError> {
    let root = prune::segments_root(dir)?;
    let is_data_dir = root != dir;
    let Some(_lock) = prune::lock(&prune::lock_path(dir, &root), wait)? else {
        return Ok(None);
    };
    let tmp_dir = if is_data_dir {
        dir.join(INPROGRESS_DIR)
    } else {
        root.join(TREE_TMP_DIR)
    };
    // Leftovers of a run killed while writing: never renamed, so never seen by anyone.
    if !opts.dry_run
        && let Ok(entries) = fs::read_dir(&tmp_dir)
    {
        for e in entries.filter_map(Result::ok) {
            if e.file_name()
                .to_string_lossy()
                .ends_with(&format!(".{COMPACTING_EXT}"))
            {
                remove(&e.path())?;
            }
        }
    }
    let (inprogress, spooled) = if is_data_dir {
        open_hours(dir)
    } else {
        Default::default()
    };
    let cutoff = opts.cutoff();
    let mut partitions: BTreeMap<PathBuf, LocalPartition> = BTreeMap::new();
    for s in prune::list_segments(&root)? {
        if s.hour_start_ns + HOUR_NS > cutoff
            || (!opts.hosts.is_empty() && !opts.hosts.contains(&s.host))
        {
            continue;
        }
        let Some(pdir) = s.path.parent().map(Path::to_path_buf) else {
            continue;
        };
        let Some(name) = s.path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let rel = pdir
            .strip_prefix(&root)
            .unwrap_or(&pdir)
            .display()
            .to_string();
        partitions
            .entry(pdir.clone())
            .or_insert_with(|| LocalPartition {
                rel,
                dir: pdir,
                host: s.host.clone(),
                hour_start_ns: s.hour_start_ns,
                files: Vec::new(),
            })
            .files
            .push((name, s.path.clone(), s.bytes));
    }
    let mut report = CompactReport::default();
    for p in partitions.into_values() {
        let hour = p.hour_start_ns.div_euclid(HOUR_NS);
        if inprogress.contains(&(partition::escape(&p.host), hour))
            || spooled.contains(&hour)
            || spooled.contains(&i64::MIN)
        {
            report.open.push(p.rel.clone());
            continue;
        }
        if p.files.len() < 2 {
            report.untouched += 1;
            continue;
        }
        let outcome = compact_local_partition(&p, &tmp_dir, opts.dry_run)?;
        if !outcome.inputs.is_empty() || !outcome.finished.is_empty() {
            report.partitions.push(outcome);
        } else {
            report.untouched += 1;
        }
    }
    // Still under the lock: prune never deletes a segment while its manifest is built.
    report.manifests = local_manifests(&root, opts);
    Ok(Some(report))
}

/// The manifest step over a local segments tree, through the local file system's store (whose
/// PUT writes a temporary file and renames it: a reader sees the old or the new manifest).
fn local_manifests(root: &Path, opts: &CompactOptions) -> ManifestReport {
    let failed = |why: String| ManifestReport {
        failed: vec![(root.display().to_string(), why)],
        ..ManifestReport::default()
    };
    if opts.dry_run {
        return ManifestReport::default();
    }
    let store: Arc<dyn ObjectStore> =
        match object_store::local::LocalFileSystem::new_with_prefix(root) {
            Ok(s) => Arc::new(s),
            Err(e) => return failed(e.to_string()),
        };
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => return failed(e.to_string()),
    };
    let url_of = |p: &object_store::path::Path| root.join(p.as_ref()).display().to_string();
    rt.block_on(refresh_manifests(
        &store,
        &object_store::path::Path::default(),
        Some(root),
        opts,
        &url_of,
    ))
}

fn compact_local_partition(
    p: &LocalPartition,
    tmp_dir: &Path,
    dry_run: bool,
) -> Result<PartitionOutcome, CompactError> {
    let mut out = PartitionOutcome {
        partition: p.rel.clone(),
        ..Default::default()
    };
    // Footers of every file: what each covers.
    let mut footers: Vec<Option<String>> = Vec::new();
    let mut readable = Vec::new();
    for (name, path, _) in &p.files {
        let footer = fs::File::open(path).and_then(|f| {
            ParquetMetaDataReader::new()
                .parse_and_finish(&f)
                .map_err(io::Error::other)
        });
        match footer {
            Ok(md) => {
                let kv = kv_of(md.file_metadata().key_value_metadata());
                match check_segment(&kv) {
                    Ok(()) => readable.push(true),
                    Err(reason) => {
                        out.unreadable.push((name.clone(), reason));
                        readable.push(false);
                    }
                }
                footers.push(kv.get(meta::COMPACTED_FROM).cloned());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                out.vanished.push(name.clone());
                footers.push(None);
                readable.push(false);
            }
            Err(e) => {
                out.unreadable.push((name.clone(), e.to_string()));
                footers.push(None);
                readable.push(false);
            }
        }
    }
    let listed: Vec<compaction::Listed> = p
        .files
        .iter()
        .zip(&footers)
        .map(|((name, _, _), from)| compaction::Listed {
            name,
            compacted_from: from.as_deref(),
        })
        .collect();
    let covered: BTreeSet<String> = compaction::covered(&listed)
        .into_iter()
        .map(str::to_string)
        .collect();
    // Finish an interrupted compaction first: its output is in place, its inputs are hidden.
    for (name, path, _) in &p.files {
        if covered.contains(name) {
            if !dry_run {
                remove(path)?;
            }
            out.finished.push(name.clone());
        }
    }
    if !dry_run && !out.finished.is_empty() {
        segment_sync_dir(&p.dir)?;
    }
    let candidates: Vec<&(String, PathBuf, u64)> = p
        .files
        .iter()
        .zip(&readable)
        .filter(|(f, ok)| **ok && !covered.contains(&f.0))
        .map(|(f, _)| f)
        .collect();
    if candidates.len() < 2 {
        return Ok(out);
    }
    let mut inputs = Vec::new();
    for (name, path, _) in candidates {
        match fs::read(path) {
            Ok(bytes) => {
                out.bytes_in += bytes.len() as u64;
                inputs.push(Input {
                    name: name.clone(),
                    bytes: Bytes::from(bytes),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => out.vanished.push(name.clone()),
            Err(e) => return Err(io_read(path)(e)),
        }
    }
    if inputs.len() < 2 {
        return Ok(out);
    }
    out.inputs = inputs.iter().map(|i| i.name.clone()).collect();
    if dry_run {
        return Ok(out);
    }
    let merged = merge(&p.rel, &p.host, &inputs, SORT_KEY)?;
    out.rows = merged.batch.num_rows() as u64;
    let name = output_name(&p.host, merged.ts_min);
    let tmp = tmp_dir.join(format!(
        "{}.{COMPACTING_EXT}",
        name.trim_end_matches(&format!(".{SEGMENT_EXT}"))
    ));
    fs::create_dir_all(tmp_dir).map_err(io_write(tmp_dir))?;
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_write(&tmp))?;
    let tmp_text = tmp.display().to_string();
    let file = write_segment(
        io::BufWriter::new(file),
        &merged,
        SORT_KEY,
        COMPACT_ROW_GROUP_ROWS,
        &tmp_text,
    )?;
    drop(merged);
    let file = file
        .into_inner()
        .map_err(|e| io_write(&tmp)(e.into_error()))?;
    file.sync_all().map_err(io_write(&tmp))?;
    file.set_permissions(Permissions::from_mode(0o640))
        .map_err(io_write(&tmp))?;
    out.bytes_out = file.metadata().map_err(io_write(&tmp))?.len();
    drop(file);
    failpoint("after-write");
    let target = p.dir.join(&name);
    fs::rename(&tmp, &target).map_err(io_write(&target))?;
    segment_sync_dir(&p.dir)?;
    segment_sync_dir(tmp_dir)?;
    out.output = Some(name);
    failpoint("after-rename");
    for (i, input) in inputs.iter().enumerate() {
        remove(&p.dir.join(&input.name))?;
        if i == 0 {
            failpoint("after-first-delete");
        }
    }
    segment_sync_dir(&p.dir)?;
    Ok(out)
}

fn segment_sync_dir(dir: &Path) -> Result<(), CompactError> {
    super::fs::sync_dir(dir).map_err(io_write(dir))
}

// ---------------------------------------------------------------------------------------------
// Lakes (object stores).

/// Compacts the closed partitions under a lake prefix (`s3://bucket/prefix`, `file:///…`).
/// One compactor per prefix at a time: object stores have no locks, so run it from one place.
pub fn compact_lake(url: &LakeUrl, opts: &CompactOptions) -> Result<CompactReport, CompactError> {
    let store = url.open()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CompactError::Runtime)?;
    rt.block_on(compact_lake_async(url, store, opts))
}

struct LakeFile {
    name: String,
    key: object_store::path::Path,
    size: u64,
}

fn store_err(
    op: &'static str,
    url: &LakeUrl,
    key: &object_store::path::Path,
) -> impl FnOnce(object_store::Error) -> CompactError {
    let path = url.url_of(key);
    move |source| CompactError::Store { op, path, source }
}

async fn compact_lake_async(
    url: &LakeUrl,
    store: Arc<dyn ObjectStore>,
    opts: &CompactOptions,
) -> Result<CompactReport, CompactError> {
    use futures::TryStreamExt;
    let prefix = url.prefix().clone();
    let listed: Vec<object_store::ObjectMeta> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(store_err("cannot list", url, &prefix))?;
    let skip = prefix.parts().count();
    let cutoff = opts.cutoff();
    // partition (host=/date=/hour=) -> files
    let mut partitions: BTreeMap<(String, String, String), Vec<LakeFile>> = BTreeMap::new();
    for m in listed {
        let parts: Vec<String> = m
            .location
            .parts()
            .skip(skip)
            .map(|p| p.as_ref().to_string())
            .collect();
        let [h, d, hr, name] = parts.as_slice() else {
            continue;
        };
        if !name.ends_with(&format!(".{SEGMENT_EXT}")) || name.starts_with('.') {
            continue;
        }
        let (Some(host), Some(date), Some(hour)) = (
            partition::host_of_component(h),
            partition::date_of_component(d),
            partition::hour_of_component(hr),
        ) else {
            continue;
        };
        let start = partition::PartitionKey {
            host: host.clone(),
            date,
            hour,
        }
        .start_ns();
        if start + HOUR_NS > cutoff || (!opts.hosts.is_empty() && !opts.hosts.contains(&host)) {
            continue;
        }
        partitions
            .entry((h.clone(), d.clone(), hr.clone()))
            .or_default()
            .push(LakeFile {
                name: name.clone(),
                key: m.location.clone(),
                size: m.size,
            });
    }
    let mut report = CompactReport::default();
    for ((h, d, hr), mut files) in partitions {
        if files.len() < 2 {
            report.untouched += 1;
            continue;
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let host = partition::host_of_component(&h).unwrap_or_default();
        let rel = format!("{h}/{d}/{hr}");
        let outcome =
            compact_lake_partition(url, &store, &rel, &host, &files, opts.dry_run).await?;
        if !outcome.inputs.is_empty() || !outcome.finished.is_empty() {
            report.partitions.push(outcome);
        } else {
            report.untouched += 1;
        }
    }
    report.manifests = refresh_manifests(&store, &prefix, None, opts, &|p| url.url_of(p)).await;
    Ok(report)
}

async fn compact_lake_partition(
    url: &LakeUrl,
    store: &Arc<dyn ObjectStore>,
    rel: &str,
    host: &str,
    files: &[LakeFile],
    dry_run: bool,
) -> Result<PartitionOutcome, CompactError> {
    let mut out = PartitionOutcome {
        partition: rel.to_string(),
        ..Default::default()
    };
    // Read every object (compaction needs them whole anyway); keep what reads as a segment.
    let mut present: Vec<(&LakeFile, Option<Bytes>, Option<String>)> = Vec::new();
    for f in files {
        match store.get(&f.key).await {
            Ok(r) => {
                let bytes = r
                    .bytes()
                    .await
                    .map_err(store_err("cannot read", url, &f.key))?;
                match footer_kv(&bytes) {
                    Ok(kv) => {
                        let from = kv.get(meta::COMPACTED_FROM).cloned();
                        match check_segment(&kv) {
                            Ok(()) => present.push((f, Some(bytes), from)),
                            Err(reason) => {
                                out.unreadable.push((f.name.clone(), reason));
                                present.push((f, None, from));
                            }
                        }
                    }
                    Err(e) => {
                        out.unreadable.push((f.name.clone(), e.to_string()));
                        present.push((f, None, None));
                    }
                }
            }
            Err(object_store::Error::NotFound { .. }) => out.vanished.push(f.name.clone()),
            Err(e) => return Err(store_err("cannot read", url, &f.key)(e)),
        }
    }
    let listed: Vec<compaction::Listed> = present
        .iter()
        .map(|(f, _, from)| compaction::Listed {
            name: &f.name,
            compacted_from: from.as_deref(),
        })
        .collect();
    let covered: BTreeSet<String> = compaction::covered(&listed)
        .into_iter()
        .map(str::to_string)
        .collect();
    for (f, _, _) in &present {
        if covered.contains(&f.name) {
            if !dry_run {
                delete_object(url, store, &f.key).await?;
            }
            out.finished.push(f.name.clone());
        }
    }
    let inputs: Vec<Input> = present
        .into_iter()
        .filter(|(f, _, _)| !covered.contains(&f.name))
        .filter_map(|(f, bytes, _)| {
            Some(Input {
                name: f.name.clone(),
                bytes: bytes?,
            })
        })
        .collect();
    if inputs.len() < 2 {
        return Ok(out);
    }
    out.inputs = inputs.iter().map(|i| i.name.clone()).collect();
    out.bytes_in = files
        .iter()
        .filter(|f| out.inputs.contains(&f.name))
        .map(|f| f.size)
        .sum();
    if dry_run {
        return Ok(out);
    }
    let merged = merge(rel, host, &inputs, SORT_KEY)?;
    out.rows = merged.batch.num_rows() as u64;
    let name = output_name(host, merged.ts_min);
    let key = url.key(&format!("{rel}/{name}"));
    let buf = write_segment(
        Vec::new(),
        &merged,
        SORT_KEY,
        COMPACT_ROW_GROUP_ROWS,
        &url.url_of(&key),
    )?;
    drop(merged);
    out.bytes_out = buf.len() as u64;
    // One create-only PUT: the object appears whole or not at all, and never replaces one.
    store
        .put_opts(
            &key,
            PutPayload::from(buf),
            PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            },
        )
        .await
        .map_err(store_err("cannot write", url, &key))?;
    out.output = Some(name);
    failpoint("after-write");
    failpoint("after-rename");
    for (i, input) in inputs.iter().enumerate() {
        let key = url.key(&format!("{rel}/{}", input.name));
        delete_object(url, store, &key).await?;
        if i == 0 {
            failpoint("after-first-delete");
        }
    }
    Ok(out)
}

async fn delete_object(
    url: &LakeUrl,
    store: &Arc<dyn ObjectStore>,
    key: &object_store::path::Path,
) -> Result<(), CompactError> {
    match store.delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(store_err("cannot delete", url, key)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::{Duration, Instant};

    use dnsledger_schema::Transaction;
    use dnsledger_tests::fixture::{T0, tx};

    use crate::store::segment::{SegmentConfig, SegmentWriter};

    fn config(dir: &Path, source: &'static str) -> SegmentConfig {
        SegmentConfig {
            data_dir: dir.to_path_buf(),
            host: "h1".into(),
            boot_id: Some("boot-a".into()),
            kernel: "6.18".into(),
            source,
            rotate_size: 1 << 30,
            rotate_age: Duration::from_secs(300),
            batch_rows: 64,
            spool_sync: None,
            run_id: None,
            extra_meta: Vec::new(),
            min_free: 0,
            max_buffered_rows: 1 << 20,
        }
    }

    fn row(ts: i64, name: &str) -> Transaction {
        Transaction {
            registered_domain: name.split_once('.').map(|(_, d)| d.to_string()),
            ..tx(ts, name)
        }
    }

    /// Writes one segment per group of rows; returns their paths.
    fn segments(dir: &Path, groups: &[Vec<Transaction>]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for (i, g) in groups.iter().enumerate() {
            let mut w = SegmentWriter::open(config(dir, "bpf")).expect("open");
            w.set_drop_totals(i as u64 + 1, 2);
            w.push(g.clone());
            w.advance(None, Instant::now()).expect("advance");
            out.extend(w.close().expect("close"));
        }
        out
    }

    fn read_all(path: &Path) -> (Vec<RecordBatch>, HashMap<String, String>) {
        let bytes = Bytes::from(fs::read(path).expect("read"));
        (
            read_batches(bytes.clone()).expect("batches"),
            footer_kv(&bytes).expect("footer"),
        )
    }

    /// Sorted `(ts, qname)` of every row of a segment.
    fn keys(batches: &[RecordBatch]) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        for b in batches {
            let ts = b
                .column_by_name(col::TS)
                .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
                .expect("ts");
            let q = b
                .column_by_name(col::QNAME)
                .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>())
                .expect("qname");
            for i in 0..b.num_rows() {
                out.push((ts.value(i), q.value(i).to_string()));
            }
        }
        out.sort();
        out
    }

    fn opts(now: i64) -> CompactOptions {
        CompactOptions {
            hosts: Vec::new(),
            before_ns: i64::MAX,
            now_ns: now,
            dry_run: false,
        }
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn merges_a_closed_hour_into_one_sorted_segment() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let groups = vec![
            vec![row(T0 + 3, "b.zz.com"), row(T0 + 5, "a.yy.org")],
            vec![row(T0 + 1, "a.yy.org"), row(T0 + 9, "c.zz.com")],
            vec![row(T0 + 2, "x.aa.net")],
        ];
        let inputs = segments(&data, &groups);
        assert_eq!(inputs.len(), 3);
        let part = inputs[0].parent().expect("dir").to_path_buf();
        let mut want = Vec::new();
        for p in &inputs {
            want.extend(keys(&read_all(p).0));
        }
        want.sort();

        let r = compact_dir(&data, &opts(T0 + 2 * HOUR_NS)).expect("compact");
        assert_eq!(r.partitions.len(), 1, "{r:?}");
        let o = &r.partitions[0];
        assert_eq!(o.inputs.len(), 3);
        assert_eq!(o.rows, 5);
        let files = listing(&part);
        assert_eq!(files, vec![o.output.clone().expect("output")]);
        let (batches, kv) = read_all(&part.join(&files[0]));
        assert_eq!(keys(&batches), want);
        // Sorted by registered_domain, qname, ts.
        let doms: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                let a = b
                    .column_by_name(col::REGISTERED_DOMAIN)
                    .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>())
                    .expect("domain")
                    .clone();
                (0..a.len())
                    .map(|i| a.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(doms, vec!["aa.net", "yy.org", "yy.org", "zz.com", "zz.com"]);
        let get = |k: &str| kv.get(k).map(String::as_str);
        assert_eq!(get(meta::SOURCE), Some("compact"));
        assert_eq!(get(meta::TRANSACTIONS), Some("5"));
        assert_eq!(get(meta::DROPPED_KERNEL), Some("6"), "1 + 2 + 3");
        assert_eq!(get(meta::DROPPED_USER), Some("6"));
        assert_eq!(get(meta::BOOT_ID), Some("boot-a"));
        assert_eq!(get(meta::HOST), Some("h1"));
        assert_eq!(get(meta::TS_MIN), Some(format_rfc3339_ns(T0 + 1).as_str()));
        assert_eq!(get(meta::TS_MAX), Some(format_rfc3339_ns(T0 + 9).as_str()));
        let mut from: Vec<&str> =
            compaction::decode_inputs(get(meta::COMPACTED_FROM).expect("from"));
        from.sort();
        let mut names: Vec<String> = inputs
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(from, names);
        // Nothing left in the temporary directory; a second run has nothing to do.
        assert!(listing(&data.join(INPROGRESS_DIR)).is_empty());
        let again = compact_dir(&data, &opts(T0 + 2 * HOUR_NS)).expect("again");
        assert!(again.partitions.is_empty());
        assert_eq!(again.untouched, 1);
    }

    #[test]
    fn manifests_record_the_listings_of_hour_directories_unchanged_for_the_margin() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        // 2023-11-14, hour 22 (two segments: compacted) and hour 23 (one: left alone).
        let inputs = segments(
            &data,
            &[
                vec![row(T0 + 1, "a.yy.org")],
                vec![row(T0 + 2, "b.yy.org")],
                vec![row(T0 + HOUR_NS, "c.zz.com")],
            ],
        );
        let hour22 = inputs[0].parent().expect("dir").to_path_buf();
        let hour23 = inputs[2].parent().expect("dir").to_path_buf();
        assert_ne!(hour22, hour23);
        let date = hour22.parent().expect("date").to_path_buf();
        let name = |p: &Path| p.file_name().expect("name").to_string_lossy().into_owned();
        let recorded = || -> Vec<(String, Vec<String>)> {
            manifest::read_local_dirs(&date.join(manifest::FILE_NAME))
                .into_iter()
                .map(|d| (d.name, d.files.into_iter().map(|f| f.name).collect()))
                .collect()
        };
        std::thread::sleep(manifest::DIR_MARGIN + Duration::from_millis(100));
        let r = compact_dir(&data, &opts(T0 + 3 * HOUR_NS)).expect("compact");
        assert_eq!(r.partitions.len(), 1, "{r:?}");
        assert_eq!(r.manifests.written.len(), 1, "{r:?}");
        // The hour just compacted changed within the margin: not recorded; the other is.
        assert_eq!(recorded(), vec![(name(&hour23), listing(&hour23))]);
        // Once the margin has passed, the next run records it too (the entries unchanged).
        std::thread::sleep(manifest::DIR_MARGIN + Duration::from_millis(100));
        let r = compact_dir(&data, &opts(T0 + 3 * HOUR_NS)).expect("again");
        assert_eq!(r.manifests.written.len(), 1, "{r:?}");
        assert_eq!(
            recorded(),
            vec![
                (name(&hour22), listing(&hour22)),
                (name(&hour23), listing(&hour23)),
            ]
        );
        // And a third run has nothing to write.
        let r = compact_dir(&data, &opts(T0 + 3 * HOUR_NS)).expect("third");
        assert_eq!((r.manifests.written.len(), r.manifests.unchanged), (0, 1));
    }

    #[test]
    fn open_and_current_hours_are_left_alone_and_dry_run_changes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let inputs = segments(
            &data,
            &[vec![row(T0, "a.b.com")], vec![row(T0 + 1, "c.b.com")]],
        );
        let part = inputs[0].parent().expect("dir").to_path_buf();
        // The current hour is never compacted.
        let r = compact_dir(&data, &opts(T0 + 10)).expect("compact");
        assert!(r.partitions.is_empty());
        // An in-progress segment of that hour keeps it open.
        let ip = data.join(INPROGRESS_DIR).join(format!(
            "{}-h1-0123456789abcdefp1-000009.{INPROGRESS_EXT}",
            segment::format_compact_ns(T0 + 5)
        ));
        fs::write(&ip, b"").expect("write");
        let r = compact_dir(&data, &opts(T0 + 2 * HOUR_NS)).expect("compact");
        assert_eq!(r.open.len(), 1, "{r:?}");
        fs::remove_file(&ip).expect("rm");
        let mut o = opts(T0 + 2 * HOUR_NS);
        o.dry_run = true;
        let r = compact_dir(&data, &o).expect("dry run");
        assert_eq!(r.partitions.len(), 1);
        assert_eq!(listing(&part).len(), 2, "dry run deletes nothing");
        o.dry_run = false;
        o.hosts = vec!["other".into()];
        assert!(compact_dir(&data, &o).expect("hosts").partitions.is_empty());
    }

    #[test]
    fn finishes_an_interrupted_run_and_recompacts_transitively() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let inputs = segments(
            &data,
            &[vec![row(T0, "a.b.com")], vec![row(T0 + 1, "c.b.com")]],
        );
        let part = inputs[0].parent().expect("dir").to_path_buf();
        // Simulate a run killed after the rename: output present, inputs still there.
        let bytes: Vec<(String, Bytes)> = inputs
            .iter()
            .map(|p| {
                (
                    p.file_name().expect("n").to_string_lossy().into_owned(),
                    Bytes::from(fs::read(p).expect("read")),
                )
            })
            .collect();
        let out = compact_bytes("h1", bytes, SORT_KEY, 1024).expect("compact bytes");
        let c1 = output_name("h1", T0);
        fs::write(part.join(&c1), out).expect("write");
        // A late segment arrives.
        let late = segments(&data, &[vec![row(T0 + 7, "late.b.com")]]);
        let r = compact_dir(&data, &opts(T0 + 2 * HOUR_NS)).expect("compact");
        let o = &r.partitions[0];
        assert_eq!(o.finished.len(), 2, "{o:?}");
        assert_eq!(o.inputs.len(), 2, "c1 and the late file: {o:?}");
        let files = listing(&part);
        assert_eq!(files.len(), 1);
        let (batches, kv) = read_all(&part.join(&files[0]));
        assert_eq!(keys(&batches).len(), 3);
        let from = kv.get(meta::COMPACTED_FROM).expect("from");
        let from = compaction::decode_inputs(from);
        // Transitive: the first compaction's inputs are named too.
        for p in inputs.iter().chain(&late) {
            let n = p.file_name().expect("n").to_string_lossy().into_owned();
            assert!(from.contains(&n.as_str()), "{n} not in {from:?}");
        }
        assert!(from.contains(&c1.as_str()));
    }

    #[test]
    fn segment_names_give_host_and_hour() {
        let stem = "20231114T221320.000000000Z-web-1-0123456789abcdefp42-000003";
        let hour = T0.div_euclid(HOUR_NS);
        assert_eq!(parse_segment_name(stem), Some(("web-1".into(), hour)));
        assert_eq!(parse_segment_name("garbage"), None);
    }

    #[test]
    fn recovery_counters_count_each_run_once() {
        let kv = |run: &str, rows: &str| {
            HashMap::from([
                (meta::RECOVERED_FROM.to_string(), run.to_string()),
                (meta::RECOVERED_ROWS.to_string(), rows.to_string()),
                (meta::BOOT_ID.to_string(), format!("b-{run}")),
            ])
        };
        let kvs = vec![kv("r1", "10"), kv("r1", "10"), kv("r2", "5")];
        let out: HashMap<String, String> = merged_kv(&kvs, "h", &["a".into()], 0, 1, 3)
            .into_iter()
            .collect();
        assert_eq!(
            out.get(meta::RECOVERED_ROWS).map(String::as_str),
            Some("15")
        );
        assert_eq!(
            out.get(meta::RECOVERED_FROM).map(String::as_str),
            Some("r1,r2")
        );
        assert_eq!(
            out.get(meta::BOOT_ID).map(String::as_str),
            Some("b-r1,b-r2")
        );
        assert!(!out.contains_key(meta::DROPPED_KERNEL));
    }
}
