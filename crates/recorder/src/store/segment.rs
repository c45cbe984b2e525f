//! Rotating, self-describing zstd Parquet segments.
//!
//! [`SegmentWriter`] buffers [`Transaction`]s, writes those older than a watermark in `ts` order
//! into the open segment, and seals segments by size, age, an out-of-order row, or
//! [`close`](SegmentWriter::close).
//!
//! ```text
//! <data_dir>/inprogress/<name>.parquet.inprogress              open segment (never read)
//! <data_dir>/segments/host=<h>/date=YYYY-MM-DD/hour=HH/<name>.parquet   sealed segments
//! ```
//!
//! Sealing writes the footer, fsyncs the file, sets mode 0640, renames it into its partition
//! directory and fsyncs that directory, so a reader of `segments/` only ever sees whole files.
//! Date and hour come from the segment's smallest `ts` (UTC). Names start with that timestamp, so
//! they sort by time, and carry host, run id and a sequence number, so they are unique across
//! hosts, restarts and writers. An in-progress file maps to exactly one sealed name, which keeps
//! recovery of leftovers idempotent.
//!
//! Every segment holds rows ordered by `ts` (declared as a Parquet sorting column, too). A row
//! older than the last row of the open segment (a query answered or given up late) is held back
//! until that segment seals, and starts the next one; past [`MAX_LATE_ROWS`] such rows the open
//! segment seals early. So files may overlap in time but are each sorted, and the writer need
//! not hold every row until the slowest pending query is settled. When the open segment seals
//! because the next row is of another hour, or at [`close`](SegmentWriter::close) (end of an
//! import, recorder shutdown), the late rows of its hour join it as its last row group instead,
//! so that an hour ends in one segment, not a segment and a straggler of a few rows
//! overlapping it; every row group is sorted by `ts`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampNanosecondType;
use arrow_schema::ArrowError;
use dnsledger_schema::{
    BLOOM_FILTER_COLUMNS, SCHEMA_VERSION, Transaction, TransactionBatchBuilder, col, meta,
    partition, schema,
};
use parquet::arrow::ArrowWriter;

use crate::store::spool::Spool;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// Directory under `data_dir` holding sealed segments (the table root readers list).
pub const SEGMENTS_DIR: &str = "segments";
/// Directory under `data_dir` holding the open segment; outside the table root on purpose.
pub const INPROGRESS_DIR: &str = "inprogress";
/// Extension of a sealed segment.
pub const SEGMENT_EXT: &str = "parquet";
/// Extension of an in-progress segment (`<name>.parquet.inprogress`).
pub const INPROGRESS_EXT: &str = "parquet.inprogress";

/// Rows per Parquet row group.
pub const MAX_ROW_GROUP_ROWS: usize = 128 * 1024;
/// zstd level of every column chunk. Parquet does not store it: readers report level 1.
pub const ZSTD_LEVEL: i32 = 3;
/// Late rows (older than the open segment's last row) held for the next segment, at most;
/// beyond it the open segment is sealed early (~8 MiB of rows).
pub const MAX_LATE_ROWS: usize = 8192;
/// Target false-positive rate of the bloom filters on [`BLOOM_FILTER_COLUMNS`].
pub const BLOOM_FILTER_FPP: f64 = 0.01;

const DIR_MODE: u32 = 0o750;
const SEALED_FILE_MODE: u32 = 0o640;
const INPROGRESS_FILE_MODE: u32 = 0o600;

/// Where and how segments are written.
#[derive(Clone, Debug)]
pub struct SegmentConfig {
    /// Root of the recorder's data; `segments/` and `inprogress/` are created below it.
    pub data_dir: PathBuf,
    /// Host name, unescaped: the `host=` partition value (escaped in paths and file names by
    /// [`partition`]) and metadata.
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`; the metadata key is omitted when unknown.
    pub boot_id: Option<String>,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// `bpf` for live capture, `import` for imported captures.
    pub source: &'static str,
    /// Seal the open segment once its written plus buffered encoded size reaches this many bytes.
    pub rotate_size: u64,
    /// Seal the open segment once it has been open this long.
    pub rotate_age: Duration,
    /// Rows per `RecordBatch` handed to the Parquet writer; at least 1.
    pub batch_rows: usize,
    /// Spool every pushed row to `<data_dir>/spool`, synced at this interval (crash safety).
    /// `None`: no spool (imports, recovery).
    pub spool_sync: Option<Duration>,
    /// Run id used in segment names; a fresh one when `None`. Recovery passes `<dead run>r`.
    pub run_id: Option<String>,
    /// Extra key-value metadata for every segment of this writer.
    pub extra_meta: Vec<(String, String)>,
    /// Stop writing while the data directory's filesystem has less free space than this
    /// (bytes; 0: no threshold). Rows wait in memory meanwhile.
    pub min_free: u64,
    /// At most this many rows wait in memory (disk full, write errors); beyond it the oldest
    /// are dropped and counted in `dnsledger.rows_lost`.
    pub max_buffered_rows: usize,
}

/// Counters over the writer's lifetime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentStats {
    /// Rows written into segments (sealed or still open).
    pub rows_written: u64,
    /// Rows pushed but not yet written (at or above the last watermark).
    pub rows_buffered: u64,
    /// Segments sealed (renamed under `segments/`).
    pub segments_sealed: u64,
    /// Total size of the sealed segments.
    pub bytes_sealed: u64,
}

/// Errors of the segment writer; each names the file or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("invalid segment configuration: {0}")]
    Config(String),
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot sync directory {}: {source}", path.display())]
    SyncDir { path: PathBuf, source: io::Error },
    #[error("cannot create in-progress segment {}: {source}", path.display())]
    CreateFile { path: PathBuf, source: io::Error },
    #[error("cannot build a record batch for segment {}: {source}", path.display())]
    Batch { path: PathBuf, source: ArrowError },
    #[error("cannot write segment {}: {source}", path.display())]
    Parquet { path: PathBuf, source: ParquetError },
    #[error("cannot seal segment {} ({step}): {source}", path.display())]
    Seal {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
    #[error("cannot remove empty in-progress segment {}: {source}", path.display())]
    Remove { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Spool(#[from] crate::store::spool::SpoolError),
    #[error(
        "not writing: {free} bytes free on the filesystem of {}, below the --min-free threshold of {min} bytes",
        path.display()
    )]
    LowSpace { path: PathBuf, free: u64, min: u64 },
}

/// Writes [`Transaction`]s into rotating Parquet segments. See the [module docs](self).
///
/// Time for age-based rotation is the monotonic [`Instant`] passed to
/// [`advance`](Self::advance): a segment's age is measured from the `now` of the call that wrote
/// its first row. Tests drive it with synthetic instants; the recorder passes `Instant::now()`.
///
/// After an error the open segment is abandoned: its in-progress file stays in `inprogress/`
/// for recovery or inspection, rows not yet handed to it go back to the buffer, and the next
/// row opens a new segment.
pub struct SegmentWriter {
    cfg: SegmentConfig,
    props: WriterProperties,
    segments_dir: PathBuf,
    inprogress_dir: PathBuf,
    host_escaped: String,
    run_id: String,
    next_seq: u64,
    /// Rows pushed since the last [`advance`](Self::advance), appended to Arrow builders once:
    /// the batch they make is what the spool writes and what the segments' batches are
    /// gathered from.
    staging: TransactionBatchBuilder,
    /// When the first row in `staging` was pushed (the spool's sync deadline counts from it).
    staged_since: Option<Instant>,
    /// Pushed rows not yet written, each with its spool epoch.
    buffer: Vec<Spooled>,
    /// Rows older than the open segment's last row: they go into the next segment.
    late: Vec<Spooled>,
    /// Lowest spool epoch of rows being written by the current `write_rows` call.
    writing_floor: Option<u32>,
    spool: Option<Spool>,
    /// Lowest spool epoch of rows in segments abandoned after a write error: their only copy
    /// is the spool, which keeps them for the next start's recovery.
    abandoned_floor: Option<u32>,
    open: Option<OpenSegment>,
    drops_total: (u64, u64),
    drops_accounted: (u64, u64),
    /// Other cumulative loss counters (metadata key -> total), stored per segment as deltas.
    counters: BTreeMap<&'static str, (u64, u64)>,
    /// Rows dropped from memory because they could not be written for too long.
    rows_lost: u64,
    /// Last free-space check: when, and whether writing may go on.
    space_checked: Option<(Instant, SpaceCheck)>,
    stats: SegmentStats,
}

/// Outcome of a free-space check: `Err((free, min_free))` when writing must pause.
type SpaceCheck = Result<(), (u64, u64)>;

/// A pushed row and the spool epoch it was appended in (0 without a spool).
///
/// The row itself is row `row` of an Arrow batch built when it was pushed (shared with the
/// spool): the buffer is split by the watermark and sorted on every tick, and moving 32-byte
/// entries costs little; the segment's batches are gathered from the sources in one pass per
/// column ([`gather`]).
struct Spooled {
    /// The row's `ts`, kept beside the reference so that sorting and splitting touch no row.
    ts: i64,
    epoch: u32,
    /// Index of the row in `batch`.
    row: u32,
    /// Spool sequence number (`u64::MAX` without a spool).
    seq: u64,
    batch: Arc<RecordBatch>,
}

/// The rows `rows` refer to, in that order, as one batch.
fn gather(rows: &[Spooled]) -> Result<RecordBatch, ArrowError> {
    let Some(first) = rows.first() else {
        return Ok(RecordBatch::new_empty(schema()));
    };
    // Every row of one source, in its order: the source itself (the common case at low rates).
    if rows.len() == first.batch.num_rows()
        && rows
            .iter()
            .enumerate()
            .all(|(i, r)| r.row as usize == i && Arc::ptr_eq(&r.batch, &first.batch))
    {
        return Ok(first.batch.as_ref().clone());
    }
    let mut sources: Vec<&RecordBatch> = Vec::new();
    let mut index: HashMap<*const RecordBatch, usize> = HashMap::new();
    let mut last: Option<(*const RecordBatch, usize)> = None;
    let mut indices = Vec::with_capacity(rows.len());
    for r in rows {
        let p = Arc::as_ptr(&r.batch);
        let i = match last {
            Some((q, i)) if q == p => i,
            _ => {
                let i = *index.entry(p).or_insert_with(|| {
                    sources.push(&r.batch);
                    sources.len() - 1
                });
                last = Some((p, i));
                i
            }
        };
        indices.push((i, r.row as usize));
    }
    arrow_select::interleave::interleave_record_batch(&sources, &indices)
}

/// Hours since the epoch (UTC) of a timestamp: the partition a row belongs to.
fn hour_of(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(partition::NS_PER_HOUR)
}

struct OpenSegment {
    name: String,
    path: PathBuf,
    writer: ArrowWriter<File>,
    /// Rows for the next batch handed to the Parquet writer, in order.
    pending: Vec<Spooled>,
    opened_at: Instant,
    ts_min: i64,
    ts_max: i64,
    rows: u64,
    /// Lowest spool epoch among the rows written to this segment.
    min_epoch: u32,
    /// Sequence numbers of the segment's rows (to tell, if it must be abandoned, which rows
    /// have a spool copy and which are lost).
    seqs: Vec<u64>,
}

impl OpenSegment {
    /// Encoded bytes written plus the estimated size of the buffered row group.
    fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    fn write_pending(&mut self) -> Result<(), SegmentError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let gathered = gather(&self.pending);
        self.pending.clear();
        let batch = gathered.map_err(|source| SegmentError::Batch {
            path: self.path.clone(),
            source,
        })?;
        self.writer
            .write(&batch)
            .map_err(|source| SegmentError::Parquet {
                path: self.path.clone(),
                source,
            })
    }
}

impl SegmentWriter {
    /// Validates `cfg` and creates `<data_dir>/segments` and `<data_dir>/inprogress` (mode 0750,
    /// including a missing `data_dir`). Opens no segment file yet.
    pub fn open(cfg: SegmentConfig) -> Result<Self, SegmentError> {
        if cfg.host.is_empty() {
            return Err(SegmentError::Config("host name is empty".into()));
        }
        if cfg.batch_rows == 0 {
            return Err(SegmentError::Config("batch_rows must be at least 1".into()));
        }
        let props = writer_properties()?;
        let segments_dir = cfg.data_dir.join(SEGMENTS_DIR);
        let inprogress_dir = cfg.data_dir.join(INPROGRESS_DIR);
        create_dirs(&segments_dir)?;
        create_dirs(&inprogress_dir)?;
        warn_leftovers(&inprogress_dir);
        let run_id = cfg.run_id.clone().unwrap_or_else(run_id);
        let spool = match cfg.spool_sync {
            Some(interval) => Some(Spool::open(&cfg.data_dir, &run_id, interval)?),
            None => None,
        };
        Ok(Self {
            host_escaped: partition::escape(&cfg.host),
            run_id,
            cfg,
            props,
            segments_dir,
            inprogress_dir,
            next_seq: 0,
            staging: TransactionBatchBuilder::new(),
            staged_since: None,
            buffer: Vec::new(),
            late: Vec::new(),
            writing_floor: None,
            spool,
            abandoned_floor: None,
            open: None,
            drops_total: (0, 0),
            drops_accounted: (0, 0),
            counters: BTreeMap::from([(meta::ROWS_LOST, (0, 0))]),
            rows_lost: 0,
            space_checked: None,
            stats: SegmentStats::default(),
        })
    }

    /// Buffers rows, in any order. Nothing is written until [`advance`](Self::advance) or
    /// [`close`](Self::close).
    pub fn push(&mut self, rows: impl IntoIterator<Item = Transaction>) {
        for row in rows {
            self.staging.append(&row);
            self.staged_since.get_or_insert_with(Instant::now);
        }
        if self.buffer.len() + self.staging.len() > self.cfg.max_buffered_rows {
            self.stage();
        }
        if self.buffer.len() > self.cfg.max_buffered_rows {
            // Drop a tenth more than needed at once, so this does not run for every row.
            let excess = self.buffer.len() - self.cfg.max_buffered_rows;
            let n = (excess + self.cfg.max_buffered_rows / 10).min(self.buffer.len());
            self.buffer.sort_by_key(|r| r.ts);
            self.buffer.drain(..n);
            self.rows_lost += n as u64;
            self.set_counter(meta::ROWS_LOST, self.rows_lost);
            tracing::warn!(
                dropped = n,
                total = self.rows_lost,
                "rows waiting to be written exceeded the memory bound; the oldest were dropped"
            );
        }
    }

    /// Turns the rows pushed since the last call into one batch: handed to the spool (which
    /// writes it at its next sync) and referenced by the buffer's entries.
    fn stage(&mut self) {
        if self.staging.is_empty() {
            return;
        }
        let n = self.staging.len();
        let since = self.staged_since.take().unwrap_or_else(Instant::now);
        // `ts` is the schema's first column (pinned by the schema's golden test).
        let built = self.staging.finish().and_then(|b| {
            let ts = b
                .column(0)
                .as_primitive_opt::<TimestampNanosecondType>()
                .ok_or_else(|| ArrowError::SchemaError("ts is not the first column".into()))?
                .values()
                .clone();
            Ok((b, ts))
        });
        let (batch, ts) = match built {
            Ok(b) => b,
            Err(e) => {
                // Only a builder bug gets here (its columns are built to the schema).
                self.rows_lost += n as u64;
                self.set_counter(meta::ROWS_LOST, self.rows_lost);
                tracing::error!(rows = n, error = %e, "cannot build a batch of pushed rows; they are lost");
                return;
            }
        };
        let (epoch, first_seq) = match self.spool.as_mut() {
            Some(spool) => spool.append_batch(batch.clone(), since),
            None => (0, u64::MAX),
        };
        let batch = Arc::new(batch);
        self.buffer.reserve(ts.len());
        for (i, &t) in ts.iter().enumerate() {
            self.buffer.push(Spooled {
                ts: t,
                epoch,
                row: i as u32,
                seq: if first_seq == u64::MAX {
                    u64::MAX
                } else {
                    first_seq + i as u64
                },
                batch: Arc::clone(&batch),
            });
        }
    }

    /// Sets a cumulative loss counter; each sealed segment stores, under `key`, the increase
    /// since the previous seal.
    pub fn set_counter(&mut self, key: &'static str, total: u64) {
        self.counters.entry(key).or_insert((0, 0)).0 = total;
    }

    /// Rows dropped from memory so far (could not be written in time).
    pub fn rows_lost(&self) -> u64 {
        self.rows_lost
    }

    /// Free space check, at most once a second.
    fn space_ok(&mut self, now: Instant) -> Result<(), SegmentError> {
        if self.cfg.min_free == 0 {
            return Ok(());
        }
        let fresh = self
            .space_checked
            .as_ref()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) < Duration::from_secs(1));
        if !fresh {
            let result = match super::fs::space(&self.cfg.data_dir).map(|s| s.available) {
                Some(free) if free < self.cfg.min_free => Err((free, self.cfg.min_free)),
                _ => Ok(()),
            };
            self.space_checked = Some((now, result));
        }
        match self.space_checked {
            Some((_, Err((free, min)))) => Err(SegmentError::LowSpace {
                path: self.cfg.data_dir.clone(),
                free,
                min,
            }),
            _ => Ok(()),
        }
    }

    /// The run id in this writer's segment names (and spool files).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Writes the buffered rows with `ts < watermark` (every buffered row for `None`), sorted by
    /// `ts`, into the open segment, rotating by size, age and order as needed. A segment due by
    /// age is sealed even when no row is ready. Returns the paths sealed by this call.
    ///
    /// On error, segments sealed earlier in the same call are in place (and counted in
    /// [`stats`](Self::stats)) although their paths are not returned.
    pub fn advance(
        &mut self,
        watermark: Option<i64>,
        now: Instant,
    ) -> Result<Vec<PathBuf>, SegmentError> {
        self.stage();
        let mut sealed = Vec::new();
        self.seal_if_due(now, &mut sealed)?;
        if self.late.len() >= MAX_LATE_ROWS {
            self.seal_open(&mut sealed)?;
        }
        self.space_ok(now)?;
        let ready = match watermark {
            None => std::mem::take(&mut self.buffer),
            Some(w) => {
                let (ready, keep) = std::mem::take(&mut self.buffer)
                    .into_iter()
                    .partition(|r| r.ts < w);
                self.buffer = keep;
                ready
            }
        };
        self.write_rows(ready, now, &mut sealed)?;
        self.write_pending()?;
        self.seal_if_due(now, &mut sealed)?;
        if let Some(spool) = self.spool.as_mut() {
            spool.sync_if_due(now)?;
        }
        Ok(sealed)
    }

    /// Sets the capture's cumulative drop counters (kernel, user space). Each sealed segment
    /// stores the increase since the previous seal (drops while no segment was open count
    /// towards the next one), so the per-segment values add up to the totals.
    pub fn set_drop_totals(&mut self, kernel: u64, user: u64) {
        self.drops_total = (kernel, user);
    }

    /// Writes every buffered row and seals the open segment. Returns the paths sealed.
    pub fn close(mut self) -> Result<Vec<PathBuf>, SegmentError> {
        let mut sealed = self.advance(None, Instant::now())?;
        self.absorb_late()?;
        self.seal_open(&mut sealed)?;
        // Late rows of another hour than the segment just sealed are back in the buffer: they
        // make one more (sorted) segment, in their own partition.
        while !self.buffer.is_empty() {
            let more = self.advance(None, Instant::now())?;
            sealed.extend(more);
            self.seal_open(&mut sealed)?;
        }
        // Every pushed row is in a sealed segment now: the spool has nothing left to protect,
        // unless a segment was abandoned after an error (the next start recovers its rows).
        if let Some(spool) = self.spool.take() {
            match self.abandoned_floor {
                None => spool.close()?,
                Some(floor) => tracing::warn!(
                    epoch = floor,
                    "spool files kept for rows of an abandoned segment; the next start recovers them"
                ),
            }
        }
        let (k, u) = self.pending_drops();
        if k > 0 || u > 0 {
            tracing::warn!(
                dropped_kernel = k,
                dropped_user = u,
                "events dropped after the last sealed segment are not recorded in any segment"
            );
        }
        Ok(sealed)
    }

    pub fn stats(&self) -> SegmentStats {
        SegmentStats {
            rows_buffered: (self.staging.len() + self.buffer.len() + self.late.len()) as u64,
            ..self.stats
        }
    }

    fn due(&self, s: &OpenSegment, now: Instant) -> bool {
        s.size() >= self.cfg.rotate_size
            || now.saturating_duration_since(s.opened_at) >= self.cfg.rotate_age
    }

    fn pending_drops(&self) -> (u64, u64) {
        (
            self.drops_total.0.saturating_sub(self.drops_accounted.0),
            self.drops_total.1.saturating_sub(self.drops_accounted.1),
        )
    }

    fn seal_if_due(&mut self, now: Instant, sealed: &mut Vec<PathBuf>) -> Result<(), SegmentError> {
        if self.open.as_ref().is_some_and(|s| self.due(s, now)) {
            self.seal_open(sealed)?;
        }
        Ok(())
    }

    /// Hands the open segment's pending rows to its Parquet writer.
    fn write_pending(&mut self) -> Result<(), SegmentError> {
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        let result = open.write_pending();
        if let Err(e) = &result {
            self.abandon(e);
        }
        result
    }

    fn write_rows(
        &mut self,
        mut rows: Vec<Spooled>,
        now: Instant,
        sealed: &mut Vec<PathBuf>,
    ) -> Result<(), SegmentError> {
        rows.sort_by_key(|r| r.ts);
        // Until this call ends, rows of these epochs may be neither buffered nor sealed.
        self.writing_floor = rows.iter().map(|r| r.epoch).min();
        let late_before = self.late.len();
        let result = self.write_sorted(rows, now, sealed);
        self.writing_floor = None;
        self.compact_late(late_before);
        result
    }

    /// Copies the late rows from `from` on into one batch of their own, so that a few late
    /// rows do not keep whole batches of pushed rows in memory while they wait for the next
    /// segment (at most [`MAX_LATE_ROWS`] rows).
    fn compact_late(&mut self, from: usize) {
        let Some(tail) = self.late.get_mut(from..).filter(|t| !t.is_empty()) else {
            return;
        };
        match gather(tail) {
            Ok(batch) => {
                let batch = Arc::new(batch);
                for (i, r) in tail.iter_mut().enumerate() {
                    r.batch = Arc::clone(&batch);
                    r.row = i as u32;
                }
            }
            // They stay where they are: correct, only larger in memory.
            Err(e) => tracing::warn!(error = %e, "cannot compact late rows"),
        }
    }

    fn write_sorted(
        &mut self,
        rows: Vec<Spooled>,
        now: Instant,
        sealed: &mut Vec<PathBuf>,
    ) -> Result<(), SegmentError> {
        let batch_rows = self.cfg.batch_rows;
        let mut rows = rows.into_iter();
        while let Some(item) = rows.next() {
            if self.open.as_ref().is_some_and(|s| item.ts < s.ts_max) {
                self.late.push(item);
                continue;
            }
            let open = match self.segment_for(item.ts, now, sealed) {
                Ok(open) => open,
                Err(e) => {
                    // Not yet in any segment: back to the buffer for a later attempt.
                    self.buffer.push(item);
                    self.buffer.extend(rows);
                    return Err(e);
                }
            };
            open.ts_max = item.ts;
            open.min_epoch = open.min_epoch.min(item.epoch);
            if item.seq != u64::MAX {
                open.seqs.push(item.seq);
            }
            open.rows += 1;
            open.pending.push(item);
            let full = open.pending.len() >= batch_rows;
            self.stats.rows_written += 1;
            if full {
                let result = self
                    .write_pending()
                    .and_then(|()| self.seal_if_due(now, sealed));
                if let Err(e) = result {
                    self.buffer.extend(rows);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The segment that takes a row with this `ts` (not older than the open segment's last
    /// row) next: the open one unless the row is of another hour (then it is sealed first), or
    /// a new one.
    fn segment_for(
        &mut self,
        ts: i64,
        now: Instant,
        sealed: &mut Vec<PathBuf>,
    ) -> Result<&mut OpenSegment, SegmentError> {
        // A segment holds rows in `ts` order and of one hour only, so that its
        // date=/hour= partition is true of every row and partition pruning is exact.
        if self
            .open
            .as_ref()
            .is_some_and(|s| hour_of(ts) != hour_of(s.ts_min))
        {
            // Its hour's late rows go in with it: they would otherwise make a second segment
            // of that hour.
            self.absorb_late()?;
            self.seal_open(sealed)?;
        }
        // Not `take()` and put back: an `OpenSegment` (Parquet writer and column builders) is
        // several KiB, and moving it out and in again for every row was the largest CPU cost of
        // the recorder at high rates (memmove ~30 % of its samples).
        if self.open.is_none() {
            let fresh = self.new_segment(ts, now)?;
            return Ok(self.open.insert(fresh));
        }
        match self.open.as_mut() {
            Some(open) => Ok(open),
            None => unreachable!("opened above"),
        }
    }

    fn new_segment(&mut self, first_ts: i64, now: Instant) -> Result<OpenSegment, SegmentError> {
        let name = format!(
            "{}-{}-{}-{:06}",
            format_compact_ns(first_ts),
            self.host_escaped,
            self.run_id,
            self.next_seq
        );
        self.next_seq += 1;
        let path = self.inprogress_dir.join(format!("{name}.{INPROGRESS_EXT}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(INPROGRESS_FILE_MODE)
            .open(&path)
            .map_err(|source| SegmentError::CreateFile {
                path: path.clone(),
                source,
            })?;
        let writer = match ArrowWriter::try_new(file, schema(), Some(self.props.clone())) {
            Ok(w) => w,
            Err(source) => {
                // Nothing was written to it yet; a leftover would only be an empty file.
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove unused segment file");
                }
                return Err(SegmentError::Parquet { path, source });
            }
        };
        tracing::debug!(path = %path.display(), "opened segment");
        Ok(OpenSegment {
            name,
            path,
            writer,
            pending: Vec::new(),
            opened_at: now,
            ts_min: first_ts,
            ts_max: first_ts,
            rows: 0,
            min_epoch: u32::MAX,
            seqs: Vec::new(),
        })
    }

    /// Accounts for a segment that cannot be sealed: its rows with a spool copy are kept for
    /// recovery (the spool keeps their files), the others are counted as lost.
    fn lose_segment(&mut self, s: &OpenSegment) {
        // Rows still waiting for their spool sync get it now (or are marked failed).
        if let Some(spool) = self.spool.as_mut()
            && let Err(e) = spool.sync(Instant::now())
        {
            tracing::warn!(error = %e, "spool sync failed too");
        }
        let lost = match self.spool.as_ref() {
            None => s.rows,
            Some(spool) => s.seqs.iter().filter(|&&q| !spool.is_durable(q)).count() as u64,
        };
        self.rows_lost += lost;
        self.set_counter(meta::ROWS_LOST, self.rows_lost);
        if self.spool.is_some() {
            self.abandoned_floor = Some(
                self.abandoned_floor
                    .map_or(s.min_epoch, |f| f.min(s.min_epoch)),
            );
        }
    }

    /// At close or at an hour change: the late rows of the open segment's hour (queries settled or given up after
    /// newer rows were written, and the ones still pending at the end) join the open segment
    /// as its last row group(s), instead of making a second segment of a few rows that overlaps
    /// it in time. Each row group stays sorted by `ts` (the Parquet sorting column is a row
    /// group property); the segment's `ts_min` becomes the smallest row's.
    fn absorb_late(&mut self) -> Result<(), SegmentError> {
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        let hour = hour_of(open.ts_min);
        let (mut mine, others): (Vec<Spooled>, Vec<Spooled>) = std::mem::take(&mut self.late)
            .into_iter()
            .partition(|r| hour_of(r.ts) == hour);
        self.late = others;
        if mine.is_empty() {
            return Ok(());
        }
        mine.sort_by_key(|r| r.ts);
        // End the row group of the rows in order, then write the late ones as their own.
        let flushed = open.write_pending().and_then(|()| {
            open.writer.flush().map_err(|source| SegmentError::Parquet {
                path: open.path.clone(),
                source,
            })
        });
        if let Err(e) = flushed {
            self.buffer.extend(mine);
            self.abandon(&e);
            return Err(e);
        }
        for item in mine {
            open.ts_min = open.ts_min.min(item.ts);
            open.min_epoch = open.min_epoch.min(item.epoch);
            if item.seq != u64::MAX {
                open.seqs.push(item.seq);
            }
            open.rows += 1;
            self.stats.rows_written += 1;
            open.pending.push(item);
        }
        self.write_pending()
    }

    /// Drops the open segment after a failure, leaving its file for recovery.
    fn abandon(&mut self, error: &SegmentError) {
        if let Some(s) = self.open.take() {
            self.buffer.append(&mut self.late);
            self.lose_segment(&s);
            tracing::warn!(
                path = %s.path.display(),
                rows = s.rows,
                %error,
                "abandoned segment after a write failure; its in-progress file is left in place"
            );
        }
    }

    /// Seals the open segment, if any, pushing its final path onto `sealed`.
    fn seal_open(&mut self, sealed: &mut Vec<PathBuf>) -> Result<(), SegmentError> {
        let Some(mut s) = self.open.take() else {
            return Ok(());
        };
        // Rows held back for being older than this segment's last row go into the next one.
        self.buffer.append(&mut self.late);
        if s.rows == 0 {
            drop(s.writer);
            return fs::remove_file(&s.path).map_err(|source| SegmentError::Remove {
                path: s.path,
                source,
            });
        }
        let (dropped_kernel, dropped_user) = self.pending_drops();
        let result = self.seal(&mut s, dropped_kernel, dropped_user);
        match result {
            Ok((path, bytes)) => {
                self.drops_accounted = self.drops_total;
                for (total, accounted) in self.counters.values_mut() {
                    *accounted = *total;
                }
                self.stats.segments_sealed += 1;
                self.stats.bytes_sealed += bytes;
                tracing::info!(path = %path.display(), rows = s.rows, bytes, "sealed segment");
                sealed.push(path);
                self.release_spool()
            }
            Err(e) => {
                tracing::warn!(
                    path = %s.path.display(),
                    rows = s.rows,
                    error = %e,
                    "could not seal segment; its in-progress file is left in place"
                );
                self.lose_segment(&s);
                Err(e)
            }
        }
    }

    /// After a seal: starts a new spool epoch and deletes the spool files whose rows are all
    /// in sealed segments (no buffered row, no row being written, no open segment refers to
    /// their epochs).
    fn release_spool(&mut self) -> Result<(), SegmentError> {
        let Some(spool) = self.spool.as_mut() else {
            return Ok(());
        };
        spool.next_epoch(Instant::now())?;
        let floor = self
            .buffer
            .iter()
            .chain(&self.late)
            .map(|r| r.epoch)
            .chain(self.writing_floor)
            .chain(self.abandoned_floor)
            .chain(self.open.as_ref().map(|s| s.min_epoch))
            .min()
            .unwrap_or(spool.epoch());
        spool.release_before(floor)?;
        Ok(())
    }

    fn seal(
        &self,
        s: &mut OpenSegment,
        dropped_kernel: u64,
        dropped_user: u64,
    ) -> Result<(PathBuf, u64), SegmentError> {
        s.write_pending()?;
        let kv = [
            (meta::SCHEMA_VERSION, Some(SCHEMA_VERSION.to_string())),
            (meta::HOST, Some(self.cfg.host.clone())),
            (meta::BOOT_ID, self.cfg.boot_id.clone()),
            (meta::KERNEL, Some(self.cfg.kernel.clone())),
            (
                meta::RECORDER_VERSION,
                Some(env!("CARGO_PKG_VERSION").to_string()),
            ),
            (meta::SOURCE, Some(self.cfg.source.to_string())),
            (meta::TS_MIN, Some(format_rfc3339_ns(s.ts_min))),
            (meta::TS_MAX, Some(format_rfc3339_ns(s.ts_max))),
            (meta::TRANSACTIONS, Some(s.rows.to_string())),
            (meta::DROPPED_KERNEL, Some(dropped_kernel.to_string())),
            (meta::DROPPED_USER, Some(dropped_user.to_string())),
        ];
        for (key, value) in kv {
            if let Some(value) = value {
                s.writer
                    .append_key_value_metadata(KeyValue::new(key.to_string(), value));
            }
        }
        for (key, (total, accounted)) in &self.counters {
            s.writer.append_key_value_metadata(KeyValue::new(
                key.to_string(),
                total.saturating_sub(*accounted).to_string(),
            ));
        }
        for (key, value) in &self.cfg.extra_meta {
            s.writer
                .append_key_value_metadata(KeyValue::new(key.clone(), value.clone()));
        }
        s.writer.finish().map_err(|source| SegmentError::Parquet {
            path: s.path.clone(),
            source,
        })?;
        let bytes = s.writer.bytes_written() as u64;
        let seal_err = |step: &'static str| {
            let path = s.path.clone();
            move |source| SegmentError::Seal { path, step, source }
        };
        let file = s.writer.inner();
        file.sync_all().map_err(seal_err("fsync"))?;
        file.set_permissions(Permissions::from_mode(SEALED_FILE_MODE))
            .map_err(seal_err("chmod"))?;

        let target_dir = self
            .segments_dir
            .join(partition::PartitionKey::of_ts(self.cfg.host.as_str(), s.ts_min).dir());
        create_dirs(&target_dir)?;
        let target = target_dir.join(format!("{}.{SEGMENT_EXT}", s.name));
        let mut renamed = fs::rename(&s.path, &target);
        if matches!(&renamed, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
            // `dnsledger prune` may have removed the (then empty) partition directory
            // between its creation and the rename: create it again, once.
            create_dirs(&target_dir)?;
            renamed = fs::rename(&s.path, &target);
        }
        renamed.map_err(seal_err("rename"))?;
        sync_dir(&target_dir)?;
        sync_dir(&self.inprogress_dir)?;
        Ok((target, bytes))
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        if let Some(s) = &self.open {
            tracing::warn!(
                path = %s.path.display(),
                rows = s.rows,
                "segment writer dropped without close; the open segment is left unsealed"
            );
        }
        if !self.staging.is_empty() || !self.buffer.is_empty() || !self.late.is_empty() {
            tracing::warn!(
                rows = self.staging.len() + self.buffer.len() + self.late.len(),
                "segment writer dropped without close; buffered rows are lost"
            );
        }
    }
}

/// Largest dictionary page of a raw message column with the ID XORed out (bytes, before
/// compression), per row group; past it the rest of the column chunk is written PLAIN.
/// Measured (`measure_raw_dictionary`) on bench P4's segment (dnsperf over 5,000 names at 10k
/// q/s, 149,992 rows, two row groups), query_raw_x + response_raw_x in B per row: no
/// dictionary 5.58 + 12.70 (file 37.2); 1 MiB (parquet's default) 2.86 + 10.27 (32.1: the
/// responses' dictionary falls back to PLAIN); 2 MiB 2.86 + 5.56 (27.4); 4 MiB and 8 MiB
/// 2.86 + 5.02 (26.8). 4 MiB bounds what a column of distinct messages holds before its
/// fallback.
pub const RAW_DICTIONARY_PAGE_LIMIT: usize = 4 * 1024 * 1024;

/// Random-valued integer columns, written DELTA_BINARY_PACKED without a dictionary.
const SPARK_SAFE_INT_COLUMNS: [&str; 3] = [col::DNS_ID, col::CLIENT_PORT, col::LATENCY_NS];

/// Parquet writer properties shared by every segment.
pub fn writer_properties() -> Result<WriterProperties, SegmentError> {
    Ok(writer_properties_builder()?.build())
}

/// The builder of [`writer_properties`]: the one definition of how segments are encoded
/// (compaction starts from it and only changes the sort order and row-group size).
pub(crate) fn writer_properties_builder()
-> Result<parquet::file::properties::WriterPropertiesBuilder, SegmentError> {
    let level = ZstdLevel::try_new(ZSTD_LEVEL)
        .map_err(|e| SegmentError::Config(format!("zstd level {ZSTD_LEVEL}: {e}")))?;
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]));
    for c in BLOOM_FILTER_COLUMNS {
        let path = ColumnPath::from(*c);
        builder = builder
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path, BLOOM_FILTER_FPP);
    }
    // Raw DNS messages as they are rarely repeat (since schema version 3 only the few without
    // a DNS ID are stored so): a dictionary would only cost memory and a fallback.
    for c in [col::QUERY_RAW, col::RESPONSE_RAW] {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    // With the ID XORed out (schema version 3) equal messages are equal bytes: a dictionary
    // stores each once. Its page may grow to RAW_DICTIONARY_PAGE_LIMIT before the column
    // chunk falls back to PLAIN for the rest of the row group.
    for (_, c) in dnsledger_schema::derived::RAW_XOR {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(c), true)
            .set_column_dictionary_page_size_limit(ColumnPath::from(c), RAW_DICTIONARY_PAGE_LIMIT);
    }
    // Nanosecond times are nearly all distinct, so a dictionary only costs; rows are sorted by
    // `ts` and the query/response times follow it closely, so deltas take a few bits each.
    for c in [col::TS, col::QUERY_TS, col::RESPONSE_TS] {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(c), false)
            .set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BINARY_PACKED);
    }
    // Random values (DNS ids, ephemeral ports, latencies) have no dictionary to speak of.
    // DELTA_BINARY_PACKED, not BYTE_STREAM_SPLIT: Spark 3.5 (parquet-mr 1.13) decodes
    // BYTE_STREAM_SPLIT for floats only, and the lake must read unchanged in it. Measured with
    // zstd(3), no dictionary, on 121,129 bench_gen rows (dns_id + client_port + latency_ns,
    // compressed bytes; `measure_int_encodings` below): BYTE_STREAM_SPLIT 243,652 + 239,657 +
    // 387,103 = 870,412; DELTA_BINARY_PACKED 265,326 + 250,026 + 427,700 = 943,052 (+8%);
    // PLAIN 303,565 + 296,376 + 471,622 = 1,071,563 (+23%).
    for c in SPARK_SAFE_INT_COLUMNS {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(c), false)
            .set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BINARY_PACKED);
    }
    Ok(builder)
}

/// `<pid>`-qualified start time in ns, unique within the process even for writers opened in
/// the same nanosecond.
pub(crate) fn run_id() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = u64::try_from(crate::config::unix_now_ns()).unwrap_or(0);
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last.saturating_add(1)))
        })
        .unwrap_or(now);
    let ns = now.max(prev.saturating_add(1));
    format!("{ns:016x}p{}", std::process::id())
}

fn warn_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let leftovers = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(&format!(".{INPROGRESS_EXT}"))
        })
        .count();
    if leftovers > 0 {
        tracing::warn!(
            dir = %dir.display(),
            leftovers,
            "in-progress segments without a spool to rebuild them are left in place"
        );
    }
}

/// Creates `dir` and any missing ancestors with mode 0750 (regardless of umask), fsyncing the
/// parent of every directory created.
fn create_dirs(dir: &Path) -> Result<(), SegmentError> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dirs(parent)?;
    }
    let create_err = |source| SegmentError::CreateDir {
        path: dir.to_path_buf(),
        source,
    };
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {
            fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(create_err)?;
            sync_dir(parent.unwrap_or(Path::new(".")))
        }
        // Lost a race with another creator: fine if it is a directory now.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(create_err(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), SegmentError> {
    super::fs::sync_dir(dir).map_err(|source| SegmentError::SyncDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Formats nanoseconds since the Unix epoch as RFC 3339 UTC with nine fractional digits,
/// e.g. `2023-11-14T22:13:20.123456789Z`.
pub fn format_rfc3339_ns(ns: i64) -> String {
    let c = partition::Civil::from_ns(ns);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.nanos
    )
}

/// Compact, file-name-safe form used at the start of segment names: `20231114T221320.123456789Z`.
pub(crate) fn format_compact_ns(ns: i64) -> String {
    let c = partition::Civil::from_ns(ns);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:09}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.nanos
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampNanosecondType;
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    use parquet::basic::Encoding;
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

    use dnsledger_tests::fixture::{T0, files_under};

    fn row(ts: i64, qname: &str) -> Transaction {
        Transaction {
            hostname: Arc::from("h1"),
            registered_domain: Some("example.com".into()),
            dns_id: Some(0x0102),
            query_raw: Some(ts.to_le_bytes().to_vec()),
            ..dnsledger_tests::fixture::tx(ts, qname)
        }
    }

    fn rows(ts: impl IntoIterator<Item = i64>) -> Vec<Transaction> {
        ts.into_iter()
            .map(|t| row(t, &format!("n{}.example.com", t - T0)))
            .collect()
    }

    fn config(dir: &Path) -> SegmentConfig {
        SegmentConfig {
            data_dir: dir.join("data"),
            host: "h1".into(),
            boot_id: Some("b00t".into()),
            kernel: "6.18.0-test".into(),
            source: "bpf",
            rotate_size: 128 << 20,
            rotate_age: Duration::from_secs(300),
            batch_rows: 64,
            spool_sync: None,
            run_id: None,
            extra_meta: Vec::new(),
            min_free: 0,
            max_buffered_rows: 1 << 20,
        }
    }

    struct Segment {
        ts: Vec<i64>,
        kv: HashMap<String, String>,
        metadata: Arc<ParquetMetaData>,
        builder: ParquetRecordBatchReaderBuilder<File>,
    }

    fn read(path: &Path) -> Segment {
        let file = File::open(path).expect("open segment");
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
            file,
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
        )
        .expect("parquet reader");
        let metadata = builder.metadata().clone();
        let kv = metadata
            .file_metadata()
            .key_value_metadata()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
            .collect();
        let file = File::open(path).expect("open segment");
        let mut ts = Vec::new();
        for batch in ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("reader")
            .build()
            .expect("reader")
        {
            let batch = batch.expect("batch");
            assert_eq!(batch.schema().fields(), schema().fields());
            let col = batch.column_by_name(col::TS).expect("ts column");
            ts.extend(col.as_primitive::<TimestampNanosecondType>().values());
        }
        Segment {
            ts,
            kv,
            metadata,
            builder,
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    fn column_index(md: &ParquetMetaData, name: &str) -> usize {
        md.file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.path().string() == name)
            .expect("column in parquet schema")
    }

    #[test]
    fn formats_rfc3339_with_nanoseconds() {
        assert_eq!(format_rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_rfc3339_ns(T0 + 123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(format_rfc3339_ns(-1), "1969-12-31T23:59:59.999999999Z");
        // Leap day and the day after.
        assert_eq!(
            format_rfc3339_ns(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            format_rfc3339_ns(951_868_800 * 1_000_000_000),
            "2000-03-01T00:00:00.000000000Z"
        );
        assert_eq!(
            format_rfc3339_ns(4_107_542_399 * 1_000_000_000),
            "2100-02-28T23:59:59.000000000Z"
        );
        assert_eq!(
            format_rfc3339_ns(i64::MIN),
            "1677-09-21T00:12:43.145224192Z"
        );
        assert_eq!(
            format_rfc3339_ns(i64::MAX),
            "2262-04-11T23:47:16.854775807Z"
        );
        assert_eq!(format_compact_ns(T0 + 5), "20231114T221320.000000005Z");
    }

    #[test]
    fn writer_properties_follow_the_segment_policy() {
        let props = writer_properties().expect("properties");
        let path = |c: &str| ColumnPath::from(c);
        assert_eq!(props.max_row_group_row_count(), Some(MAX_ROW_GROUP_ROWS));
        assert!(matches!(
            props.compression(&path(col::QNAME)),
            Compression::ZSTD(_)
        ));
        assert_eq!(
            props.statistics_enabled(&path(col::TS)),
            EnabledStatistics::Page
        );
        assert!(!props.offset_index_disabled());
        assert!(props.dictionary_enabled(&path(col::QNAME)));
        assert!(!props.dictionary_enabled(&path(col::QUERY_RAW)));
        assert!(!props.dictionary_enabled(&path(col::RESPONSE_RAW)));
        for (_, x) in dnsledger_schema::derived::RAW_XOR {
            assert!(props.dictionary_enabled(&path(x)));
            assert_eq!(
                props.column_dictionary_page_size_limit(&path(x)),
                RAW_DICTIONARY_PAGE_LIMIT
            );
        }
        for c in BLOOM_FILTER_COLUMNS {
            let bloom = props
                .bloom_filter_properties(&path(c))
                .expect("bloom filter enabled");
            assert_eq!(bloom.fpp(), BLOOM_FILTER_FPP);
            // Sized for a full row group before folding.
            assert_eq!(bloom.ndv(), MAX_ROW_GROUP_ROWS as u64);
        }
        assert!(props.bloom_filter_properties(&path(col::COMM)).is_none());
    }

    #[test]
    fn partition_dir_escapes_host() {
        assert_eq!(
            partition::PartitionKey::of_ts("web-1.example_x", T0).dir(),
            PathBuf::from("host=web-1.example_x/date=2023-11-14/hour=22")
        );
        assert_eq!(
            partition::PartitionKey::of_ts("a/b c%é", 0).dir(),
            PathBuf::from("host=a%2Fb%20c%25%C3%A9/date=1970-01-01/hour=00")
        );
    }

    #[test]
    fn writes_sorted_self_describing_segment() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = config(tmp.path());
        let data = cfg.data_dir.clone();
        let mut w = SegmentWriter::open(cfg).expect("open");
        // Same timestamps in reverse order across two pushes: one advance sorts them.
        let n = 1000;
        w.push(rows((0..n / 2).rev().map(|i| T0 + i * 1_000)));
        w.push(rows((n / 2..n).rev().map(|i| T0 + i * 1_000)));
        assert!(w.advance(None, Instant::now()).expect("advance").is_empty());
        let stats = w.stats();
        assert_eq!(stats.rows_written, n as u64);
        assert_eq!(stats.segments_sealed, 0);
        let sealed = w.close().expect("close");
        assert_eq!(sealed.len(), 1);
        let path = &sealed[0];

        // Placement, name, modes; nothing else anywhere.
        let expected_dir = data.join("segments/host=h1/date=2023-11-14/hour=22");
        assert_eq!(path.parent(), Some(expected_dir.as_path()));
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(name.starts_with("20231114T221320.000000000Z-h1-"), "{name}");
        assert!(name.ends_with("-000000.parquet"), "{name}");
        assert_eq!(files_under(&data.join("segments")), sealed);
        assert!(files_under(&data.join("inprogress")).is_empty());
        assert_eq!(mode(path), 0o640);
        for d in [
            data.clone(),
            data.join("segments"),
            data.join("inprogress"),
            data.join("segments/host=h1"),
            data.join("segments/host=h1/date=2023-11-14"),
            expected_dir,
        ] {
            assert_eq!(mode(&d), 0o750, "{}", d.display());
        }

        let seg = read(path);
        let want: Vec<i64> = (0..n).map(|i| T0 + i * 1_000).collect();
        assert_eq!(seg.ts, want);

        let kv = &seg.kv;
        let get = |k: &str| kv.get(k).map(String::as_str);
        assert_eq!(get(meta::SCHEMA_VERSION), Some("3"));
        assert_eq!(get(meta::HOST), Some("h1"));
        assert_eq!(get(meta::BOOT_ID), Some("b00t"));
        assert_eq!(get(meta::KERNEL), Some("6.18.0-test"));
        assert_eq!(get(meta::RECORDER_VERSION), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(get(meta::SOURCE), Some("bpf"));
        assert_eq!(get(meta::TS_MIN), Some("2023-11-14T22:13:20.000000000Z"));
        assert_eq!(get(meta::TS_MAX), Some("2023-11-14T22:13:20.000999000Z"));
        assert_eq!(get(meta::TRANSACTIONS), Some("1000"));
        assert_eq!(get(meta::DROPPED_KERNEL), Some("0"));
        assert_eq!(get(meta::DROPPED_USER), Some("0"));

        let md = &seg.metadata;
        assert_eq!(md.num_row_groups(), 1);
        let rg = md.row_group(0);
        assert_eq!(rg.num_rows(), n);
        for c in rg.columns() {
            assert!(
                matches!(c.compression(), Compression::ZSTD(_)),
                "{}: {:?}",
                c.column_path(),
                c.compression()
            );
        }
        assert_eq!(
            rg.sorting_columns().map(Vec::as_slice),
            Some(
                &[SortingColumn {
                    column_idx: 0,
                    descending: false,
                    nulls_first: false
                }][..]
            )
        );
        let is_dict =
            |e: &Encoding| matches!(e, Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY);
        let qname = column_index(md, col::QNAME);
        assert!(rg.column(qname).encodings().any(|e| is_dict(&e)));
        for raw in [col::QUERY_RAW, col::RESPONSE_RAW] {
            let c = rg.column(column_index(md, raw));
            assert!(
                !c.encodings().any(|e| is_dict(&e)),
                "{raw} is dictionary-encoded"
            );
        }
        // Schema version 3: the queries are in query_raw_x (ID XORed out), with a dictionary.
        let x = rg.column(column_index(md, col::QUERY_RAW_X));
        assert!(
            x.encodings().any(|e| is_dict(&e)),
            "query_raw_x: no dictionary"
        );
        // Random integers: DELTA_BINARY_PACKED (Spark 3.5 reads it), never BYTE_STREAM_SPLIT
        // (it does not) nor a dictionary.
        for name in SPARK_SAFE_INT_COLUMNS {
            let encodings: Vec<Encoding> = rg.column(column_index(md, name)).encodings().collect();
            assert!(
                encodings.contains(&Encoding::DELTA_BINARY_PACKED),
                "{name}: {encodings:?}"
            );
            assert!(
                !encodings
                    .iter()
                    .any(|e| is_dict(e) || *e == Encoding::BYTE_STREAM_SPLIT),
                "{name}: {encodings:?}"
            );
        }

        // Page index: both the offset index and the column index are present.
        let offsets = md.offset_index().expect("offset index");
        assert!(!offsets[0][0].page_locations().is_empty());
        assert!(md.column_index().is_some());

        // Bloom filters on the configured columns and on nothing else.
        for c in BLOOM_FILTER_COLUMNS {
            let i = column_index(md, c);
            assert!(
                rg.column(i).bloom_filter_offset().is_some(),
                "{c} has no bloom filter"
            );
        }
        assert!(
            rg.column(column_index(md, col::COMM))
                .bloom_filter_offset()
                .is_none()
        );
        let sbbf = seg
            .builder
            .get_row_group_column_bloom_filter(0, qname)
            .expect("read bloom filter")
            .expect("qname bloom filter");
        assert!(sbbf.check("n7000.example.com"));
        assert!(sbbf.check("n999000.example.com"));
        assert!(!sbbf.check("absent-zq81.invalid"));
    }

    #[test]
    fn watermark_holds_back_newer_rows() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = config(tmp.path());
        let data = cfg.data_dir.clone();
        let mut w = SegmentWriter::open(cfg).expect("open");
        let now = Instant::now();
        // No rows: no in-progress file.
        assert!(w.advance(None, now).expect("advance").is_empty());
        assert!(files_under(&data.join("inprogress")).is_empty());

        w.push(rows((0..10).rev().map(|i| T0 + i)));
        assert!(w.advance(Some(T0 + 4), now).expect("advance").is_empty());
        let s = w.stats();
        assert_eq!((s.rows_written, s.rows_buffered), (4, 6));
        let inprogress = files_under(&data.join("inprogress"));
        assert_eq!(inprogress.len(), 1);
        let name = inprogress[0]
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name");
        assert!(name.ends_with(".parquet.inprogress"), "{name}");
        assert!(files_under(&data.join("segments")).is_empty());

        let sealed = w.close().expect("close");
        assert_eq!(sealed.len(), 1);
        assert_eq!(
            read(&sealed[0]).ts,
            (0..10).map(|i| T0 + i).collect::<Vec<_>>()
        );
        assert!(files_under(&data.join("inprogress")).is_empty());
    }

    #[test]
    fn rotates_by_size() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = SegmentConfig {
            rotate_size: 1,
            batch_rows: 10,
            ..config(tmp.path())
        };
        let data = cfg.data_dir.clone();
        let mut w = SegmentWriter::open(cfg).expect("open");
        w.push(rows((0..50).map(|i| T0 + i)));
        let mut sealed = w.advance(None, Instant::now()).expect("advance");
        assert_eq!(sealed.len(), 5);
        sealed.extend(w.close().expect("close"));
        assert_eq!(sealed.len(), 5);

        let mut all = Vec::new();
        for (i, p) in sealed.iter().enumerate() {
            let seg = read(p);
            assert_eq!(seg.ts.len(), 10);
            assert_eq!(
                seg.kv.get(meta::TRANSACTIONS).map(String::as_str),
                Some("10")
            );
            let name = p.file_name().and_then(|n| n.to_str()).expect("name");
            assert!(name.ends_with(&format!("-{i:06}.parquet")), "{name}");
            all.extend(seg.ts);
        }
        assert_eq!(all, (0..50).map(|i| T0 + i).collect::<Vec<_>>());
        // File names sort in time order.
        let mut by_name = sealed.clone();
        by_name.sort();
        assert_eq!(by_name, sealed);
        assert_eq!(files_under(&data.join("segments")), by_name);
    }

    fn total_len(sealed: &[PathBuf]) -> u64 {
        sealed
            .iter()
            .map(|p| fs::metadata(p).expect("metadata").len())
            .sum()
    }

    #[test]
    fn stats_count_sealed_bytes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = SegmentConfig {
            rotate_size: 1,
            batch_rows: 7,
            ..config(tmp.path())
        };
        let mut w = SegmentWriter::open(cfg).expect("open");
        w.push(rows((0..20).map(|i| T0 + i)));
        let sealed = w.advance(None, Instant::now()).expect("advance");
        let s = w.stats();
        assert_eq!(s.segments_sealed, sealed.len() as u64);
        assert!(s.bytes_sealed > 0);
        assert_eq!(s.bytes_sealed, total_len(&sealed));
        assert_eq!(s.rows_written, 20);
        let rest = w.close().expect("close");
        assert_eq!(sealed.len() + rest.len(), 3);
    }

    #[test]
    fn rotates_by_age() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = SegmentConfig {
            rotate_age: Duration::from_secs(60),
            ..config(tmp.path())
        };
        let mut w = SegmentWriter::open(cfg).expect("open");
        let t = Instant::now();
        w.push(rows([T0, T0 + 1]));
        assert!(w.advance(None, t).expect("advance").is_empty());
        w.push(rows([T0 + 2]));
        assert!(
            w.advance(None, t + Duration::from_secs(30))
                .expect("advance")
                .is_empty()
        );
        // Due by age: sealed even though no row is ready.
        let first = w
            .advance(None, t + Duration::from_secs(61))
            .expect("advance");
        assert_eq!(first.len(), 1);
        assert_eq!(read(&first[0]).ts, vec![T0, T0 + 1, T0 + 2]);
        // The next segment's age starts at its first row.
        w.push(rows([T0 + 3]));
        assert!(
            w.advance(None, t + Duration::from_secs(200))
                .expect("advance")
                .is_empty()
        );
        assert!(
            w.advance(None, t + Duration::from_secs(259))
                .expect("advance")
                .is_empty()
        );
        let second = w
            .advance(None, t + Duration::from_secs(260))
            .expect("advance");
        assert_eq!(second.len(), 1);
        assert_eq!(read(&second[0]).ts, vec![T0 + 3]);
        assert!(w.close().expect("close").is_empty());
    }

    #[test]
    fn older_row_waits_for_the_next_segment() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = config(tmp.path());
        let mut w = SegmentWriter::open(cfg).expect("open");
        let now = Instant::now();
        w.push(rows((100..110).map(|i| T0 + i)));
        assert!(w.advance(None, now).expect("advance").is_empty());
        // Equal to the last ts keeps the segment; older waits for the next one without
        // sealing this one, and newer rows go on into it.
        w.push(rows([T0 + 109]));
        assert!(w.advance(None, now).expect("advance").is_empty());
        w.push(rows([T0 + 50, T0 + 200, T0 + 40]));
        assert!(w.advance(None, now).expect("advance").is_empty());
        assert_eq!(w.stats().rows_buffered, 2, "the two late rows wait");
        // At close the late rows join the segment as its last row group: one segment per
        // hour, not a main segment and a straggler.
        let sealed = w.close().expect("close");
        assert_eq!(sealed.len(), 1);
        let seg = read(&sealed[0]);
        let mut want: Vec<i64> = (100..110).map(|i| T0 + i).collect();
        want.extend([T0 + 109, T0 + 200, T0 + 40, T0 + 50]);
        assert_eq!(seg.ts, want);
        assert_eq!(seg.metadata.num_row_groups(), 2, "each row group sorted");
        assert_eq!(seg.metadata.row_group(1).num_rows(), 2);
        assert_eq!(
            seg.kv.get(meta::TS_MIN).map(String::as_str),
            Some("2023-11-14T22:13:20.000000040Z")
        );
        assert_eq!(
            seg.kv.get(meta::TS_MAX).map(String::as_str),
            Some("2023-11-14T22:13:20.000000200Z")
        );
        assert_eq!(
            seg.kv.get(meta::TRANSACTIONS).map(String::as_str),
            Some("14")
        );
    }

    #[test]
    fn many_late_rows_seal_the_open_segment_early() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = config(tmp.path());
        let mut w = SegmentWriter::open(cfg).expect("open");
        let now = Instant::now();
        w.push(rows([T0 + 1_000_000]));
        assert!(w.advance(None, now).expect("advance").is_empty());
        w.push(rows((0..MAX_LATE_ROWS as i64).map(|i| T0 + i)));
        assert!(w.advance(None, now).expect("advance").is_empty());
        assert_eq!(w.stats().rows_buffered, MAX_LATE_ROWS as u64);
        // The next round seals the open segment first and writes the late rows after it.
        let sealed = w.advance(None, now).expect("advance");
        assert_eq!(sealed.len(), 1);
        assert_eq!(read(&sealed[0]).ts, vec![T0 + 1_000_000]);
        assert_eq!(w.stats().rows_buffered, 0);
        let rest = w.close().expect("close");
        assert_eq!(rest.len(), 1);
        let late = read(&rest[0]).ts;
        assert_eq!(late.len(), MAX_LATE_ROWS);
        assert!(late.is_sorted());
    }

    #[test]
    fn a_segment_never_spans_two_hours() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = config(tmp.path());
        let mut w = SegmentWriter::open(cfg).expect("open");
        let hour = 3_600_000_000_000;
        // T0 is 22:13:20; the third row is in the next hour, the fourth a year later.
        w.push(rows([T0, T0 + 1, T0 + hour, T0 + 365 * 24 * hour]));
        let sealed = w.close().expect("close");
        assert_eq!(sealed.len(), 3, "{sealed:?}");
        let dirs: Vec<String> = sealed
            .iter()
            .map(|p| p.parent().expect("dir").to_string_lossy().into_owned())
            .collect();
        assert!(dirs[0].ends_with("date=2023-11-14/hour=22"), "{dirs:?}");
        assert!(dirs[1].ends_with("date=2023-11-14/hour=23"), "{dirs:?}");
        assert!(dirs[2].ends_with("date=2024-11-13/hour=22"), "{dirs:?}");
        assert_eq!(read(&sealed[0]).ts, vec![T0, T0 + 1]);
    }

    #[test]
    fn empty_writer_leaves_no_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = config(tmp.path());
        let data = cfg.data_dir.clone();
        let mut w = SegmentWriter::open(cfg).expect("open");
        w.push(rows([T0 + 10]));
        // Everything is at or above the watermark: nothing is written, no file is opened.
        assert!(
            w.advance(Some(T0), Instant::now())
                .expect("advance")
                .is_empty()
        );
        assert!(files_under(&data.join("inprogress")).is_empty());
        drop(w);

        let w = SegmentWriter::open(config(tmp.path())).expect("open");
        assert!(w.close().expect("close").is_empty());
        assert!(files_under(&data.join("segments")).is_empty());
        assert!(files_under(&data.join("inprogress")).is_empty());
    }

    #[test]
    fn each_segment_records_its_drop_delta() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = SegmentConfig {
            boot_id: None,
            source: "import",
            ..config(tmp.path())
        };
        let mut w = SegmentWriter::open(cfg).expect("open");
        let t = Instant::now();
        w.set_drop_totals(5, 1);
        w.push(rows([T0]));
        w.advance(None, t).expect("advance");
        w.set_drop_totals(9, 3);
        let first = w
            .advance(None, t + Duration::from_secs(300))
            .expect("advance");
        assert_eq!(first.len(), 1);
        w.set_drop_totals(12, 3);
        w.push(rows([T0 + 1]));
        w.advance(None, t + Duration::from_secs(301))
            .expect("advance");
        w.set_drop_totals(20, 3);
        let second = w.close().expect("close");
        assert_eq!(second.len(), 1);

        let a = read(&first[0]).kv;
        assert_eq!(a.get(meta::DROPPED_KERNEL).map(String::as_str), Some("9"));
        assert_eq!(a.get(meta::DROPPED_USER).map(String::as_str), Some("3"));
        assert_eq!(a.get(meta::SOURCE).map(String::as_str), Some("import"));
        assert!(!a.contains_key(meta::BOOT_ID));
        let b = read(&second[0]).kv;
        assert_eq!(b.get(meta::DROPPED_KERNEL).map(String::as_str), Some("11"));
        assert_eq!(b.get(meta::DROPPED_USER).map(String::as_str), Some("0"));
    }

    #[test]
    fn names_are_unique_across_writers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut sealed = Vec::new();
        for _ in 0..3 {
            let mut w = SegmentWriter::open(config(tmp.path())).expect("open");
            w.push(rows([T0]));
            sealed.extend(w.close().expect("close"));
        }
        let mut names: Vec<_> = sealed.iter().filter_map(|p| p.file_name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 3);
        let data = config(tmp.path()).data_dir;
        assert_eq!(files_under(&data.join("segments")).len(), 3);
    }

    #[test]
    fn escapes_host_in_partition_and_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = SegmentConfig {
            host: "a/b".into(),
            ..config(tmp.path())
        };
        let data = cfg.data_dir.clone();
        let mut w = SegmentWriter::open(cfg).expect("open");
        w.push(rows([T0]));
        let sealed = w.close().expect("close");
        assert_eq!(sealed.len(), 1);
        let rel = sealed[0]
            .strip_prefix(data.join("segments"))
            .expect("under segments");
        let rel = rel.to_str().expect("utf-8");
        assert!(
            rel.starts_with("host=a%2Fb/date=2023-11-14/hour=22/20231114T221320.000000000Z-a%2Fb-"),
            "{rel}"
        );
        assert_eq!(
            read(&sealed[0]).kv.get(meta::HOST).map(String::as_str),
            Some("a/b")
        );
    }

    #[test]
    fn unwritten_rows_return_to_the_buffer_on_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = config(tmp.path());
        let data = cfg.data_dir.clone();
        let mut w = SegmentWriter::open(cfg).expect("open");
        fs::remove_dir(data.join("inprogress")).expect("remove inprogress");
        w.push(rows((0..5).map(|i| T0 + i)));
        let err = w
            .advance(None, Instant::now())
            .expect_err("advance must fail");
        assert!(matches!(err, SegmentError::CreateFile { .. }), "{err:?}");
        assert!(err.to_string().contains("inprogress"), "{err}");
        assert_eq!((w.stats().rows_written, w.stats().rows_buffered), (0, 5));

        fs::create_dir(data.join("inprogress")).expect("recreate inprogress");
        let sealed = w.close().expect("close");
        assert_eq!(
            read(&sealed[0]).ts,
            (0..5).map(|i| T0 + i).collect::<Vec<_>>()
        );
    }

    #[test]
    fn failed_seal_leaves_a_complete_inprogress_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = config(tmp.path());
        let data = cfg.data_dir.clone();
        let blocker = data.join("segments/host=h1");
        let mut w = SegmentWriter::open(cfg).expect("open");
        fs::write(&blocker, b"in the way").expect("write blocker");
        w.push(rows([T0, T0 + 1]));
        let err = w.close().expect_err("close must fail");
        assert!(matches!(err, SegmentError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains("host=h1"), "{err}");

        let left = files_under(&data.join("inprogress"));
        assert_eq!(left.len(), 1);
        let seg = read(&left[0]);
        assert_eq!(seg.ts, vec![T0, T0 + 1]);
        assert_eq!(
            seg.kv.get(meta::TRANSACTIONS).map(String::as_str),
            Some("2")
        );
        assert_eq!(files_under(&data.join("segments")), vec![blocker]);
    }

    #[test]
    fn open_errors_name_the_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let blocker = tmp.path().join("data");
        fs::write(&blocker, b"not a directory").expect("write");
        let err = SegmentWriter::open(config(tmp.path()))
            .err()
            .expect("open must fail");
        let msg = err.to_string();
        assert!(matches!(err, SegmentError::CreateDir { .. }), "{err:?}");
        assert!(msg.contains(&blocker.display().to_string()), "{msg}");

        let bad =
            |cfg: SegmentConfig| matches!(SegmentWriter::open(cfg), Err(SegmentError::Config(_)));
        assert!(bad(SegmentConfig {
            host: String::new(),
            ..config(tmp.path())
        }));
        assert!(bad(SegmentConfig {
            batch_rows: 0,
            ..config(tmp.path())
        }));
    }
}

/// Measures the compressed size of the random-integer columns under each candidate encoding
/// (zstd, no dictionary, otherwise the segment writer's properties), over the segments under
/// `$DNSLEDGER_MEASURE_DIR`: `DNSLEDGER_MEASURE_DIR=/tmp/gen cargo test -p dnsledger-recorder
/// --lib measure_int_encodings -- --ignored --nocapture`.
#[cfg(test)]
mod measure {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    #[ignore = "measurement; needs DNSLEDGER_MEASURE_DIR"]
    fn measure_int_encodings() {
        let dir = std::env::var("DNSLEDGER_MEASURE_DIR").expect("DNSLEDGER_MEASURE_DIR");
        let files = dnsledger_tests::fixture::files_under(Path::new(&dir));
        let cols = SPARK_SAFE_INT_COLUMNS;
        for enc in [
            Encoding::BYTE_STREAM_SPLIT,
            Encoding::PLAIN,
            Encoding::DELTA_BINARY_PACKED,
        ] {
            let mut sizes = [0i64; 3];
            let mut rows = 0usize;
            for f in files
                .iter()
                .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
            {
                let builder =
                    ParquetRecordBatchReaderBuilder::try_new(File::open(f).unwrap()).unwrap();
                let schema = builder.schema().clone();
                let reader = builder.build().unwrap();
                let mut props = writer_properties_builder().unwrap();
                for c in cols {
                    props = props
                        .set_column_dictionary_enabled(ColumnPath::from(c), false)
                        .set_column_encoding(ColumnPath::from(c), enc);
                }
                let mut buf = Vec::new();
                let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props.build())).unwrap();
                for b in reader {
                    let b = b.unwrap();
                    rows += b.num_rows();
                    w.write(&b).unwrap();
                }
                let md = w.close().unwrap();
                for rg in md.row_groups() {
                    for (i, c) in cols.iter().enumerate() {
                        let cc = rg
                            .columns()
                            .iter()
                            .find(|cc| cc.column_path().string() == *c)
                            .unwrap();
                        sizes[i] += cc.compressed_size();
                    }
                }
            }
            println!(
                "{enc:?} rows={rows} {cols:?} = {sizes:?} total={}",
                sizes.iter().sum::<i64>()
            );
        }
    }
    /// Raw message columns of segments under DNSLEDGER_MEASURE_DIR (any schema version)
    /// re-written as this version writes them (ID XORed out), with a dictionary page limit of
    /// 0 (no dictionary), 1, 2, 4 and 8 MiB: compressed bytes per column and of the whole file.
    #[test]
    #[ignore = "measurement; needs DNSLEDGER_MEASURE_DIR"]
    fn measure_raw_dictionary() {
        let dir = std::env::var("DNSLEDGER_MEASURE_DIR").expect("DNSLEDGER_MEASURE_DIR");
        let files = dnsledger_tests::fixture::files_under(Path::new(&dir));
        let cols = [
            col::QUERY_RAW,
            col::RESPONSE_RAW,
            col::QUERY_RAW_X,
            col::RESPONSE_RAW_X,
        ];
        for mib in [0, 1, 2, 4, 8] {
            let (mut sizes, mut rows, mut total) = ([0i64; 4], 0usize, 0usize);
            for f in files
                .iter()
                .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
            {
                let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(f).unwrap())
                    .unwrap()
                    .with_batch_size(8192)
                    .build()
                    .unwrap();
                let mut props = writer_properties_builder().unwrap();
                for (_, x) in dnsledger_schema::derived::RAW_XOR {
                    props = if mib == 0 {
                        props.set_column_dictionary_enabled(ColumnPath::from(x), false)
                    } else {
                        props.set_column_dictionary_page_size_limit(
                            ColumnPath::from(x),
                            mib * 1024 * 1024,
                        )
                    };
                }
                let mut buf = Vec::new();
                let mut w = ArrowWriter::try_new(&mut buf, schema(), Some(props.build())).unwrap();
                for b in reader {
                    let b = b.unwrap();
                    rows += b.num_rows();
                    let mut t = TransactionBatchBuilder::new();
                    for i in 0..b.num_rows() {
                        t.append(&dnsledger_schema::transaction_at(&b, i));
                    }
                    w.write(&t.finish().unwrap()).unwrap();
                }
                let md = w.close().unwrap();
                total += buf.len();
                for rg in md.row_groups() {
                    for (i, c) in cols.iter().enumerate() {
                        let cc = rg
                            .columns()
                            .iter()
                            .find(|cc| cc.column_path().string() == *c)
                            .unwrap();
                        sizes[i] += cc.compressed_size();
                    }
                }
            }
            let per = |b: i64| b as f64 / rows as f64;
            println!(
                "dictionary limit {mib} MiB: rows={rows} {cols:?} = {sizes:?} B ({:.2} {:.2} {:.2} \
                 {:.2} B per row); file {:.2} B per row",
                per(sizes[0]),
                per(sizes[1]),
                per(sizes[2]),
                per(sizes[3]),
                total as f64 / rows as f64
            );
        }
    }
}
