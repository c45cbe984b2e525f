//! Crash-safe spool: every transaction handed to the segment writer is also appended to an
//! Arrow IPC stream in `<data_dir>/spool/` and synced at least once per sync interval, so that
//! after `kill -9` or a power cut the next start can rebuild what no sealed segment holds yet.
//! The spool writes the very batches the segment writer builds from the rows pushed to it
//! ([`Spool::append_batch`]): each row is appended to Arrow builders once, not once for the
//! spool and once more for the segment.
//!
//! Files are `<run id>-<epoch>.arrows`. The writer starts a new epoch whenever it seals a
//! segment and deletes a spool file once every row appended to it is in a sealed segment.
//! Recovery ([`recover`]) reads the spool files a dead run left behind, cuts a torn tail at
//! the last complete batch, drops the rows that already reached a sealed segment of that run
//! (so recovery never duplicates, even when it is itself interrupted and run again), seals the
//! rest, and only then deletes the spool files.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::ArrowError;
use dnsledger_schema::{Transaction, col, schema, transaction_at};

/// Directory under the data dir holding spool files.
pub const SPOOL_DIR: &str = "spool";
/// Extension of a spool file.
pub const SPOOL_EXT: &str = "arrows";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot write spool file {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot encode spool file {}: {source}", path.display())]
    Arrow { path: PathBuf, source: ArrowError },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.into(),
        source,
    }
}

struct SpoolFile {
    epoch: u32,
    path: PathBuf,
    writer: StreamWriter<BufWriter<File>>,
}

/// The live spool of one recorder run.
pub struct Spool {
    dir: PathBuf,
    run_id: String,
    interval: Duration,
    epoch: u32,
    /// Files of earlier epochs (or given up after a write error) that still hold rows not yet
    /// sealed.
    older: BTreeMap<u32, Vec<PathBuf>>,
    /// Files started in the current epoch (a write error starts a new one).
    part: u32,
    current: Option<SpoolFile>,
    /// Batches appended since the last sync (shared with the segment writer, not copies).
    pending: Vec<RecordBatch>,
    /// When the oldest row not yet synced was appended.
    oldest_unsynced: Option<Instant>,
    /// Sequence number of the next row appended, and of the first row not yet synced.
    next_seq: u64,
    unsynced_from: u64,
    /// Rows (by sequence number, half-open ranges) whose sync failed: no spool copy exists.
    failed: Vec<(u64, u64)>,
    /// Rows appended and synced over the spool's life.
    pub synced_rows: u64,
}

/// A sync is started this much before a row's deadline (append time + interval), because
/// the writer only looks every tick (200 ms) and the sync itself takes time.
const SYNC_SLACK: Duration = Duration::from_millis(300);

impl Spool {
    /// Creates `<data_dir>/spool` if needed. No file is created until a row arrives.
    pub fn open(data_dir: &Path, run_id: &str, interval: Duration) -> Result<Self, SpoolError> {
        let dir = data_dir.join(SPOOL_DIR);
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(&dir)
                .map_err(io_err(&dir))?;
        }
        Ok(Self {
            dir,
            run_id: run_id.to_string(),
            interval,
            epoch: 0,
            older: BTreeMap::new(),
            part: 0,
            current: None,
            pending: Vec::new(),
            oldest_unsynced: None,
            next_seq: 0,
            unsynced_from: 0,
            failed: Vec::new(),
            synced_rows: 0,
        })
    }

    /// The epoch rows appended now belong to.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Buffers a batch of rows for the next sync; `since` is when its first row was pushed
    /// (the sync deadline counts from then). Returns the rows' epoch and the sequence number of
    /// the first (the others follow in order).
    pub fn append_batch(&mut self, batch: RecordBatch, since: Instant) -> (u32, u64) {
        let rows = batch.num_rows() as u64;
        let seq = self.next_seq;
        if rows == 0 {
            return (self.epoch, seq);
        }
        self.pending.push(batch);
        self.oldest_unsynced = Some(self.oldest_unsynced.map_or(since, |t| t.min(since)));
        self.next_seq += rows;
        (self.epoch, seq)
    }

    /// False if the row with this sequence number has no durable spool copy (its sync failed).
    pub fn is_durable(&self, seq: u64) -> bool {
        seq < self.unsynced_from && !self.failed.iter().any(|&(a, b)| (a..b).contains(&seq))
    }

    /// Syncs when the oldest unsynced row would otherwise outlive the sync interval.
    pub fn sync_if_due(&mut self, now: Instant) -> Result<(), SpoolError> {
        let deadline = self.interval.saturating_sub(SYNC_SLACK);
        if self
            .oldest_unsynced
            .is_some_and(|t| now.saturating_duration_since(t) >= deadline)
        {
            self.sync(now)?;
        }
        Ok(())
    }

    /// Writes buffered rows to the current file and makes them durable (fdatasync). On an
    /// error the rows stay with the segment writer (only their spool copy is missing) and the
    /// file, which may now end in a torn batch, takes no more writes: recovery reads it up to
    /// the tear, and the next sync starts a new file.
    pub fn sync(&mut self, _now: Instant) -> Result<(), SpoolError> {
        self.oldest_unsynced = None;
        if self.pending.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.pending);
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        let range = (self.unsynced_from, self.next_seq);
        self.unsynced_from = self.next_seq;
        match self.write_batches(&batches) {
            Ok(()) => {
                self.synced_rows += rows;
                Ok(())
            }
            Err(e) => {
                self.failed.push(range);
                if let Some(f) = self.current.take() {
                    self.older.entry(f.epoch).or_default().push(f.path);
                }
                Err(e)
            }
        }
    }

    fn write_batches(&mut self, batches: &[RecordBatch]) -> Result<(), SpoolError> {
        if self.current.is_none() {
            self.current = Some(self.create_file()?);
        }
        let Some(f) = self.current.as_mut() else {
            return Ok(());
        };
        let arrow = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SpoolError::Arrow { path, source }
        };
        for batch in batches {
            f.writer.write(batch).map_err(arrow(&f.path))?;
        }
        f.writer.flush().map_err(arrow(&f.path))?;
        f.writer
            .get_ref()
            .get_ref()
            .sync_data()
            .map_err(io_err(&f.path))
    }

    fn create_file(&mut self) -> Result<SpoolFile, SpoolError> {
        let path = self.dir.join(format!(
            "{}-{:06}_{}.{SPOOL_EXT}",
            self.run_id, self.epoch, self.part
        ));
        self.part += 1;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        let writer = StreamWriter::try_new(BufWriter::new(file), &schema()).map_err(|source| {
            SpoolError::Arrow {
                path: path.clone(),
                source,
            }
        })?;
        // The directory entry must be durable too, or a synced file could vanish.
        super::fs::sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        Ok(SpoolFile {
            epoch: self.epoch,
            path,
            writer,
        })
    }

    /// Starts a new epoch (after a seal), syncing what the current one holds.
    pub fn next_epoch(&mut self, now: Instant) -> Result<(), SpoolError> {
        self.sync(now)?;
        if let Some(mut f) = self.current.take() {
            // The end-of-stream marker is a courtesy; recovery does not need it.
            let _ = f.writer.finish();
            self.older.entry(f.epoch).or_default().push(f.path);
        }
        self.epoch += 1;
        self.part = 0;
        Ok(())
    }

    /// Deletes the files of every epoch before `epoch`: all their rows are sealed.
    pub fn release_before(&mut self, epoch: u32) -> Result<(), SpoolError> {
        let keep = self.older.split_off(&epoch);
        let done = std::mem::replace(&mut self.older, keep);
        for path in done.into_values().flatten() {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(())
    }

    /// Every row is sealed (clean shutdown): deletes all files of this run.
    pub fn close(mut self) -> Result<(), SpoolError> {
        if let Some(f) = self.current.take() {
            drop(f.writer);
            self.older.entry(f.epoch).or_default().push(f.path);
        }
        self.release_before(u32::MAX)
    }
}

/// Counts the bytes a reader consumed, to find where the last complete batch ended.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Rows of one spool file up to its last complete batch, and the bytes cut after it.
pub fn read_spool_file(path: &Path) -> Result<(Vec<RecordBatch>, u64), SpoolError> {
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut counting = Counting {
        inner: BufReader::new(file),
        read: 0,
    };
    let mut batches = Vec::new();
    let mut good = 0u64;
    // StreamReader reads through `&mut Counting`, so the count stays observable.
    match StreamReader::try_new(&mut counting, None) {
        Ok(reader) => {
            let mut reader = reader;
            // A torn tail ends the loop with an error: everything before it stands.
            while let Some(Ok(batch)) = reader.next() {
                batches.push(batch);
                good = reader.get_ref().read;
            }
        }
        // Not even a schema message: nothing to recover from this file.
        Err(_) => good = 0,
    }
    // A cleanly ended stream leaves only its end-of-stream marker (8 bytes) unread.
    let cut = len.saturating_sub(good);
    let cut = if cut <= 8 && !batches.is_empty() {
        0
    } else {
        cut
    };
    Ok((batches, cut))
}

/// Identity of a row for de-duplication against sealed segments: times in ns, ids, ports and
/// sizes make two different transactions practically never equal.
type RowKey = (
    i64,
    Option<i64>,
    Option<u16>,
    u16,
    u16,
    Option<u32>,
    Option<u32>,
    &'static str,
);

fn row_key(t: &Transaction) -> RowKey {
    (
        t.ts,
        t.response_ts,
        t.dns_id,
        t.client_port,
        t.server_port,
        t.query_size,
        t.response_size,
        t.status,
    )
}

fn batch_keys(batch: &RecordBatch) -> impl Iterator<Item = RowKey> + '_ {
    (0..batch.num_rows()).map(|i| row_key(&transaction_at(batch, i)))
}

/// What [`recover`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Runs whose spool was recovered.
    pub runs: Vec<String>,
    /// Rows read from spool files.
    pub spooled_rows: u64,
    /// Rows that were already in sealed segments (not written again).
    pub already_sealed: u64,
    /// Rows written into new sealed segments.
    pub recovered_rows: u64,
    /// Bytes cut from torn spool tails.
    pub cut_bytes: u64,
    /// Segments sealed by the recovery.
    pub sealed: Vec<PathBuf>,
}

/// Spool files grouped by run id, each run's files in epoch order.
fn spool_runs(dir: &Path) -> Result<BTreeMap<String, Vec<PathBuf>>, SpoolError> {
    let mut runs: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(runs),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != SPOOL_EXT) {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        // `<run>-<epoch>_<part>`
        let Some((run, epoch_part)) = stem.rsplit_once('-') else {
            continue;
        };
        let Some((epoch, part)) = epoch_part.split_once('_') else {
            continue;
        };
        if epoch.parse::<u32>().is_err() || part.parse::<u32>().is_err() {
            continue;
        }
        runs.entry(run.to_string()).or_default().push(path);
    }
    for files in runs.values_mut() {
        files.sort();
    }
    Ok(runs)
}

/// Sealed segments written by `run` (or by an earlier recovery of it).
fn sealed_by_run(segments_dir: &Path, run: &str) -> Vec<PathBuf> {
    let needle_a = format!("-{run}-");
    let needle_b = format!("-{run}r-");
    let mut out = Vec::new();
    let mut stack = vec![segments_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.ends_with(".parquet") && (n.contains(&needle_a) || n.contains(&needle_b))
            }) {
                out.push(p);
            }
        }
    }
    out
}

fn sealed_keys(paths: &[PathBuf]) -> HashMap<RowKey, usize> {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut keys = HashMap::new();
    for p in paths {
        let Ok(file) = File::open(p) else { continue };
        let Ok(builder) = ParquetRecordBatchReaderBuilder::try_new(file) else {
            tracing::warn!(path = %p.display(), "unreadable sealed segment ignored by recovery");
            continue;
        };
        let wanted = [
            col::TS,
            col::RESPONSE_TS,
            col::DNS_ID,
            col::CLIENT_PORT,
            col::SERVER_PORT,
            col::QUERY_SIZE,
            col::RESPONSE_SIZE,
            col::STATUS,
        ];
        let fields = builder.parquet_schema();
        let indices: Vec<usize> = fields
            .columns()
            .iter()
            .enumerate()
            .filter(|(_, c)| wanted.contains(&c.path().string().as_str()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::leaves(fields, indices);
        let Ok(reader) = builder.with_projection(mask).build() else {
            continue;
        };
        for batch in reader.flatten() {
            for key in batch_keys(&batch) {
                *keys.entry(key).or_insert(0) += 1;
            }
        }
    }
    keys
}

/// Rebuilds, from the spool files of dead runs, every row no sealed segment holds yet, and
/// seals it through `writer_for(run)` (a segment writer without spool, whose run id marks the
/// recovery). Deletes a run's spool and in-progress files only after its rows are sealed.
pub fn recover(
    data_dir: &Path,
    current_run: &str,
    mut writer_for: impl FnMut(
        &str,
        &RecoveryReport,
    ) -> Result<
        crate::store::segment::SegmentWriter,
        crate::store::segment::SegmentError,
    >,
) -> Result<RecoveryReport, RecoveryError> {
    let mut report = RecoveryReport::default();
    let segments_dir = data_dir.join(crate::store::segment::SEGMENTS_DIR);
    let inprogress_dir = data_dir.join(crate::store::segment::INPROGRESS_DIR);
    for (run, files) in spool_runs(&data_dir.join(SPOOL_DIR))? {
        if run == current_run {
            continue;
        }
        let mut batches = Vec::new();
        let mut cut = 0;
        for f in &files {
            let (b, c) = read_spool_file(f)?;
            batches.extend(b);
            cut += c;
        }
        let mut sealed = sealed_keys(&sealed_by_run(&segments_dir, &run));
        let mut rows = Vec::new();
        let mut run_report = RecoveryReport {
            runs: vec![run.clone()],
            cut_bytes: cut,
            ..Default::default()
        };
        for batch in &batches {
            for i in 0..batch.num_rows() {
                run_report.spooled_rows += 1;
                let row = transaction_at(batch, i);
                // A multiset: each sealed copy accounts for one spooled copy.
                match sealed.get_mut(&row_key(&row)) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        run_report.already_sealed += 1;
                    }
                    _ => rows.push(row),
                }
            }
        }
        run_report.recovered_rows = rows.len() as u64;
        let mut writer = writer_for(&run, &run_report)?;
        writer.push(rows);
        let sealed_paths = writer.close()?;
        // Only now is every spooled row in a sealed segment.
        for f in &files {
            match fs::remove_file(f) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(f)(e).into()),
            }
        }
        remove_inprogress_of(&inprogress_dir, &run);
        tracing::info!(
            run = %run,
            spooled = run_report.spooled_rows,
            already_sealed = run_report.already_sealed,
            recovered = run_report.recovered_rows,
            cut_bytes = run_report.cut_bytes,
            segments = sealed_paths.len(),
            "recovered the spool of an earlier run (cut_bytes > 0: a torn tail was cut)"
        );
        report.runs.push(run);
        report.spooled_rows += run_report.spooled_rows;
        report.already_sealed += run_report.already_sealed;
        report.recovered_rows += run_report.recovered_rows;
        report.cut_bytes += run_report.cut_bytes;
        report.sealed.extend(sealed_paths);
    }
    Ok(report)
}

fn remove_inprogress_of(dir: &Path, run: &str) {
    let needle_a = format!("-{run}-");
    let needle_b = format!("-{run}r-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if (name.contains(&needle_a) || name.contains(&needle_b))
            && let Err(err) = fs::remove_file(e.path())
        {
            tracing::warn!(
                path = %e.path().display(),
                error = %err,
                "cannot remove in-progress file of a recovered run"
            );
        }
    }
}

/// Error of [`recover`]: a spool file or a segment could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Segment(#[from] crate::store::segment::SegmentError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::segment::{SegmentConfig, SegmentWriter};

    use dnsledger_tests::fixture::T0;

    fn cfg(dir: &Path, spool: bool, run: Option<String>) -> SegmentConfig {
        SegmentConfig {
            data_dir: dir.to_path_buf(),
            host: "h".into(),
            boot_id: None,
            kernel: "k".into(),
            source: "bpf",
            rotate_size: 1 << 30,
            rotate_age: Duration::from_secs(3600),
            batch_rows: 4,
            spool_sync: spool.then_some(Duration::ZERO),
            run_id: run,
            extra_meta: Vec::new(),
            min_free: 0,
            max_buffered_rows: 1 << 20,
        }
    }

    fn row(i: i64) -> Transaction {
        Transaction {
            query_ts: None,
            status: dnsledger_schema::status::ANSWERED,
            client_ip: "127.0.0.1".into(),
            client_port: 1000 + i as u16,
            server_ip: "127.0.0.1".into(),
            dns_id: Some(i as u16),
            registered_domain: None,
            ..dnsledger_tests::fixture::tx(T0 + i, &format!("n{i}.example"))
        }
    }

    fn sealed_ts(dir: &Path) -> Vec<i64> {
        let mut out = Vec::new();
        let mut stack = vec![dir.join(crate::store::segment::SEGMENTS_DIR)];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).expect("read").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let f = File::open(&p).expect("open");
                let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                    .expect("footer")
                    .build()
                    .expect("reader");
                for b in r {
                    let b = b.expect("batch");
                    out.extend((0..b.num_rows()).map(|i| transaction_at(&b, i).ts));
                }
            }
        }
        out.sort_unstable();
        out
    }

    fn spool_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = fs::read_dir(dir.join(SPOOL_DIR))
            .map(|it| it.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn recover_into(dir: &Path) -> RecoveryReport {
        recover(dir, "", |run, _| {
            SegmentWriter::open(cfg(dir, false, Some(format!("{run}r"))))
        })
        .expect("recover")
    }

    #[test]
    fn crash_then_recovery_loses_nothing_synced_and_duplicates_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = SegmentWriter::open(cfg(tmp.path(), true, None)).expect("open");
        let now = Instant::now();
        // Rows 0..10 written; rows 10..20 still buffered above the watermark.
        w.push((0..20).map(row));
        w.advance(Some(T0 + 10), now).expect("advance");
        // The open segment is due by age: rows 0..10 sealed; the older row 5 opens the next.
        w.push([row(5)]);
        w.advance(Some(T0 + 10), now + Duration::from_secs(3600))
            .expect("advance");
        // Sync everything (interval zero), then "crash": no close.
        w.advance(Some(T0 + 10), now).expect("advance");
        let run = w.run_id().to_string();
        std::mem::forget(w);
        assert!(!spool_files(tmp.path()).is_empty());
        let before = sealed_ts(tmp.path());
        assert_eq!(before, (0..10).map(|i| T0 + i).collect::<Vec<_>>());

        let report = recover_into(tmp.path());
        assert_eq!(report.runs, vec![run.clone()]);
        let mut want: Vec<i64> = (0..20).map(|i| T0 + i).collect();
        want.push(T0 + 5);
        want.sort_unstable();
        assert_eq!(sealed_ts(tmp.path()), want);
        assert_eq!(
            report.recovered_rows + report.already_sealed,
            report.spooled_rows
        );
        assert_eq!(report.cut_bytes, 0);
        assert!(
            spool_files(tmp.path()).is_empty(),
            "spool deleted after recovery"
        );
        // Idempotent: nothing left to do.
        assert_eq!(recover_into(tmp.path()).runs.len(), 0);
        assert!(
            fs::read_dir(tmp.path().join(crate::store::segment::INPROGRESS_DIR))
                .expect("inprogress")
                .next()
                .is_none(),
            "in-progress files of the dead run removed"
        );
    }

    #[test]
    fn interrupted_recovery_is_recovered_without_duplicates() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = SegmentWriter::open(cfg(tmp.path(), true, None)).expect("open");
        w.push((0..8).map(row));
        w.advance(Some(T0), Instant::now()).expect("sync only");
        let run = w.run_id().to_string();
        std::mem::forget(w);
        // A first recovery seals the rows but "dies" before deleting the spool: simulate by
        // copying the spool files back afterwards.
        let saved: Vec<(PathBuf, Vec<u8>)> = spool_files(tmp.path())
            .into_iter()
            .map(|p| {
                let b = fs::read(&p).expect("read");
                (p, b)
            })
            .collect();
        recover_into(tmp.path());
        for (p, b) in &saved {
            fs::write(p, b).expect("restore");
        }
        let again = recover_into(tmp.path());
        assert_eq!(again.runs, vec![run]);
        assert_eq!(again.recovered_rows, 0);
        assert_eq!(again.already_sealed, 8);
        assert_eq!(
            sealed_ts(tmp.path()),
            (0..8).map(|i| T0 + i).collect::<Vec<_>>()
        );
    }

    #[test]
    fn torn_tail_is_cut_at_the_last_complete_batch() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = SegmentWriter::open(cfg(tmp.path(), true, None)).expect("open");
        let now = Instant::now();
        w.push((0..3).map(row));
        w.advance(Some(T0), now).expect("sync 1");
        w.push((3..6).map(row));
        w.advance(Some(T0), now).expect("sync 2");
        std::mem::forget(w);
        let files = spool_files(tmp.path());
        assert_eq!(files.len(), 1);
        let len = fs::metadata(&files[0]).expect("meta").len();
        // Tear the second batch in half.
        let f = OpenOptions::new()
            .write(true)
            .open(&files[0])
            .expect("open");
        f.set_len(len - 40).expect("truncate");
        let report = recover_into(tmp.path());
        assert_eq!(report.recovered_rows, 3);
        assert!(report.cut_bytes > 0, "{report:?}");
        assert_eq!(
            sealed_ts(tmp.path()),
            (0..3).map(|i| T0 + i).collect::<Vec<_>>()
        );
    }

    #[test]
    fn clean_close_and_seals_release_the_spool() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = SegmentWriter::open(cfg(tmp.path(), true, None)).expect("open");
        let now = Instant::now();
        w.push((0..4).map(row));
        w.advance(None, now).expect("write all");
        assert_eq!(spool_files(tmp.path()).len(), 1);
        // A row still buffered keeps its epoch's file after a seal...
        w.push([row(100)]);
        w.advance(Some(T0 + 50), now + Duration::from_secs(7200))
            .expect("seal by age");
        assert_eq!(spool_files(tmp.path()).len(), 1);
        // ...and once it is sealed too, the file goes.
        w.advance(None, now + Duration::from_secs(7200))
            .expect("write");
        w.advance(None, now + Duration::from_secs(4 * 7200))
            .expect("seal by age");
        let files = spool_files(tmp.path());
        assert!(
            files
                .iter()
                .all(|p| !p.to_string_lossy().ends_with("-000000_0.arrows")),
            "{files:?}"
        );
        w.push([row(200)]);
        w.close().expect("close");
        assert!(spool_files(tmp.path()).is_empty());
        assert_eq!(sealed_ts(tmp.path()).len(), 6);
    }
}
