//! What a segment's Parquet footer says about it, and whether dnsql can read it.
//!
//! Reading a footer is cheap (a few KB at the end of the file): `dnsql segments` reads only
//! footers, and the table provider checks the footer of every segment a query is about to scan,
//! so a truncated, corrupt or foreign file, or one written by a newer recorder, is skipped with
//! a reason instead of failing the whole query.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampNanosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Statistics;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use dnsledger_schema::compaction;
use parquet::DecodeResult;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataPushDecoder};

use crate::catalog::footer_cache::{FooterCache, Tail};
use dnsledger_schema::{SCHEMA_VERSION, meta, schema, ts_type};
use futures::StreamExt;
use parquet::arrow::parquet_to_arrow_schema;
use parquet::file::metadata::ParquetMetaData;

use crate::catalog::source::{Scope, SegmentFile, Skipped, StoredObject};
use dnsledger_lake::manifest;
use dnsledger_lake::object_store::ObjectStoreExt;
use dnsledger_lake::object_store::path::Path as ObjectPath;

/// Why a `.parquet` file cannot be read as a segment.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    #[error("cannot read it as Parquet (truncated or corrupt?): {0}")]
    Unreadable(String),
    #[error(
        "not a dnsledger segment: its Parquet metadata has no `{}` key",
        meta::SCHEMA_VERSION
    )]
    Foreign,
    #[error("not a dnsledger segment: schema version `{0}` is not a number")]
    BadVersion(String),
    #[error(
        "written with segment schema version {found}, newer than the {known} this dnsql reads; \
         read it with a newer dnsql"
    )]
    NewerVersion { found: u32, known: u32 },
    #[error("not a dnsledger segment: required column `{0}` is missing")]
    MissingColumn(String),
    #[error("not a dnsledger segment: column `{name}` is {found}, expected {expected}")]
    ColumnType {
        name: String,
        found: DataType,
        expected: DataType,
    },
}

/// The facts in one segment's footer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentInfo {
    pub schema_version: u32,
    pub host: Option<String>,
    pub boot_id: Option<String>,
    pub kernel: Option<String>,
    pub recorder_version: Option<String>,
    /// `bpf` or `import`.
    pub source: Option<String>,
    /// Smallest and largest `ts`, nanoseconds since the epoch.
    pub ts_min: Option<i64>,
    pub ts_max: Option<i64>,
    /// Rows according to the recorder's `dnsledger.transactions` key.
    pub transactions: Option<u64>,
    pub dropped_kernel: Option<u64>,
    pub dropped_user: Option<u64>,
    /// Rows the recorder could not write in time (disk full, write errors).
    pub rows_lost: Option<u64>,
    /// DNS messages cut short by the recorder's payload cap.
    pub cut_by_cap: Option<u64>,
    /// Queries the recorder's full pairing table wrote unanswered before a response could come.
    pub pair_evicted: Option<u64>,
    /// For a segment rebuilt from a dead run's spool: that run's id.
    pub recovered_from: Option<String>,
    /// Bytes of torn spool tail the recovery cut (lost).
    pub recovery_cut_bytes: Option<u64>,
    /// For a compacted segment: the file names of the segments of its partition it replaces
    /// (`dnsledger_schema::compaction`).
    pub compacted_from: Option<String>,
    /// Rows according to the Parquet footer.
    pub rows: u64,
    pub row_groups: usize,
}

/// Parses an RFC 3339 timestamp (as in `dnsledger.ts_min`) to nanoseconds since the epoch.
pub fn parse_ts(s: &str) -> Option<i64> {
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(s).ok()
}

/// Checks that a footer belongs to a segment this dnsql can read, and extracts its facts.
pub fn inspect(md: &ParquetMetaData) -> Result<SegmentInfo, SegmentError> {
    let file = md.file_metadata();
    let kv: HashMap<&str, &str> = file
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| Some((kv.key.as_str(), kv.value.as_deref()?)))
                .collect()
        })
        .unwrap_or_default();
    let version = kv.get(meta::SCHEMA_VERSION).ok_or(SegmentError::Foreign)?;
    let version: u32 = version
        .trim()
        .parse()
        .map_err(|_| SegmentError::BadVersion((*version).to_owned()))?;
    if version > SCHEMA_VERSION {
        return Err(SegmentError::NewerVersion {
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    check_schema(file)?;

    let text = |k: &str| kv.get(k).map(|v| (*v).to_owned());
    let number = |k: &str| kv.get(k).and_then(|v| v.trim().parse::<u64>().ok());
    Ok(SegmentInfo {
        schema_version: version,
        host: text(meta::HOST),
        boot_id: text(meta::BOOT_ID),
        kernel: text(meta::KERNEL),
        recorder_version: text(meta::RECORDER_VERSION),
        source: text(meta::SOURCE),
        ts_min: kv.get(meta::TS_MIN).and_then(|v| parse_ts(v)),
        ts_max: kv.get(meta::TS_MAX).and_then(|v| parse_ts(v)),
        transactions: number(meta::TRANSACTIONS),
        dropped_kernel: number(meta::DROPPED_KERNEL),
        dropped_user: number(meta::DROPPED_USER),
        rows_lost: number(meta::ROWS_LOST),
        cut_by_cap: number(meta::CUT_BY_CAP),
        pair_evicted: number(meta::PAIR_EVICTED),
        recovered_from: text(meta::RECOVERED_FROM),
        recovery_cut_bytes: number(meta::RECOVERY_CUT_BYTES),
        compacted_from: text(meta::COMPACTED_FROM),
        rows: u64::try_from(file.num_rows()).unwrap_or(0),
        row_groups: md.num_row_groups(),
    })
}

/// Parquet schemas (with the Arrow schema stored beside them) that [`check_columns`] accepted.
/// A fleet's segments share a handful: converting and checking the same schema again for each
/// of thousands of files was ~7 % of a query's samples over 2,394 segments (base64, flatbuffer
/// verification and field conversion of the stored Arrow schema).
static ACCEPTED_SCHEMAS: std::sync::Mutex<Vec<(Option<String>, parquet::schema::types::TypePtr)>> =
    std::sync::Mutex::new(Vec::new());

/// At most this many accepted schemas are remembered (a tree of many recorder versions).
const ACCEPTED_SCHEMAS_MAX: usize = 64;

/// [`check_columns`] of a file's Arrow schema, once per distinct schema.
fn check_schema(file: &parquet::file::metadata::FileMetaData) -> Result<(), SegmentError> {
    let stored = file.key_value_metadata().and_then(|kvs| {
        kvs.iter()
            .find(|kv| kv.key == parquet::arrow::ARROW_SCHEMA_META_KEY)
            .and_then(|kv| kv.value.as_deref())
    });
    let root = file.schema_descr().root_schema_ptr();
    let accepted = || {
        // A poisoned lock only means a panic elsewhere; the list is never half-updated.
        ACCEPTED_SCHEMAS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if accepted()
        .iter()
        .any(|(a, r)| a.as_deref() == stored && **r == *root)
    {
        return Ok(());
    }
    let arrow_schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
        .map_err(|e| SegmentError::Unreadable(e.to_string()))?;
    check_columns(&arrow_schema)?;
    let mut list = accepted();
    if list.len() < ACCEPTED_SCHEMAS_MAX {
        list.push((stored.map(str::to_owned), root));
    }
    Ok(())
}

/// Every column the file shares with the table must have the table's type, and the table's
/// required columns must all be there. Missing nullable columns (older segments) read as NULL;
/// extra columns (a newer recorder of the same schema version) are ignored.
fn check_columns(file: &Schema) -> Result<(), SegmentError> {
    for field in schema().fields() {
        match file.field_with_name(field.name()) {
            Ok(f) => {
                if !f.data_type().equals_datatype(field.data_type()) {
                    return Err(SegmentError::ColumnType {
                        name: field.name().clone(),
                        found: f.data_type().clone(),
                        expected: field.data_type().clone(),
                    });
                }
            }
            Err(_) if field.is_nullable() => {}
            Err(_) => return Err(SegmentError::MissingColumn(field.name().clone())),
        }
    }
    Ok(())
}

/// One row of `dnsql segments`.
#[derive(Debug, Clone)]
pub struct SegmentRow {
    pub path: PathBuf,
    /// Host of the partition directory (else of the footer).
    pub host: String,
    pub bytes: u64,
    pub info: SegmentInfo,
}

/// Schema of the `dnsql segments` listing.
pub fn listing_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("host", DataType::Utf8, false),
        Field::new("ts_min", ts_type(), true),
        Field::new("ts_max", ts_type(), true),
        Field::new("rows", DataType::UInt64, false),
        Field::new("dropped_kernel", DataType::UInt64, true),
        Field::new("dropped_user", DataType::UInt64, true),
        Field::new("rows_lost", DataType::UInt64, true),
        Field::new("cut_by_cap", DataType::UInt64, true),
        Field::new("pair_evicted", DataType::UInt64, true),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("source", DataType::Utf8, true),
        Field::new("schema_version", DataType::UInt64, false),
        Field::new("recorder_version", DataType::Utf8, true),
        Field::new("boot_id", DataType::Utf8, true),
        Field::new("kernel", DataType::Utf8, true),
        Field::new("recovered_from", DataType::Utf8, true),
        Field::new("recovery_cut_bytes", DataType::UInt64, true),
        Field::new("path", DataType::Utf8, false),
    ]))
}

/// The `dnsql segments` listing as one batch, in the order given.
pub fn listing_batch(rows: &[SegmentRow]) -> RecordBatch {
    let s = |f: fn(&SegmentRow) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let u = |f: fn(&SegmentRow) -> Option<u64>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<UInt64Array>())
    };
    let t = |f: fn(&SegmentRow) -> Option<i64>| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(f)
                .collect::<TimestampNanosecondArray>()
                .with_timezone("UTC"),
        )
    };
    let columns = vec![
        s(|r| Some(r.host.clone())),
        t(|r| r.info.ts_min),
        t(|r| r.info.ts_max),
        u(|r| Some(r.info.rows)),
        u(|r| r.info.dropped_kernel),
        u(|r| r.info.dropped_user),
        u(|r| r.info.rows_lost),
        u(|r| r.info.cut_by_cap),
        u(|r| r.info.pair_evicted),
        u(|r| Some(r.bytes)),
        s(|r| r.info.source.clone()),
        u(|r| Some(u64::from(r.info.schema_version))),
        s(|r| r.info.recorder_version.clone()),
        s(|r| r.info.boot_id.clone()),
        s(|r| r.info.kernel.clone()),
        s(|r| r.info.recovered_from.clone()),
        u(|r| r.info.recovery_cut_bytes),
        s(|r| Some(r.path.display().to_string())),
    ];
    RecordBatch::try_new(listing_schema(), columns).expect("columns match listing_schema")
}

/// Reads a footer (not the page index) with blocking I/O.
pub fn read_footer(path: &std::path::Path) -> Result<ParquetMetaData, SegmentError> {
    let file = std::fs::File::open(path)
        .map_err(|e| SegmentError::Unreadable(format!("cannot open: {e}")))?;
    parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|e| SegmentError::Unreadable(e.to_string()))
}

/// A segment's footer, read and checked once per run. Its facts are kept for every query of
/// the run; the decoded footer itself only while the run's budget for them lasts
/// ([`FOOTER_BUDGET`]): beyond it, a scan that needs it again decodes it again.
#[derive(Debug)]
pub struct Footer {
    /// The decoded footer, if kept.
    pub metadata: Option<Arc<ParquetMetaData>>,
    pub info: SegmentInfo,
}

/// A footer with its decoded metadata at hand (kept, or read again).
pub struct Loaded {
    pub footer: Arc<Footer>,
    pub metadata: Arc<ParquetMetaData>,
}

/// Bytes of decoded footers (`ParquetMetaData::memory_size`) a run keeps. A footer of a
/// segment is ~50 KB decoded (65 columns with statistics): 256 MiB keeps every footer of a
/// scan of up to `table::STATISTICS_MAX_FILES` files (a 4-host day of 5-minute segments). A
/// scan of more keeps none (over a 100-host month, 72,000 files, keeping the first 5,000
/// cost 350 MB of resident memory to spare 7 % of the decoding): the scan decodes each
/// footer again when it opens the file, and memory stays bounded whatever the window.
pub const FOOTER_BUDGET: u64 = 256 * 1024 * 1024;

/// The statistics of a file's `columns` (indices into the segment schema) from its footer:
/// rows, and per column min/max and nulls, as a `Statistics` of those columns only (the
/// scan merges them into its own, see `table::widen`). An error names why they cannot be
/// read, and the file is then skipped like an unreadable one.
pub fn statistics_of(metadata: &ParquetMetaData, columns: &[usize]) -> Result<Statistics, String> {
    let projected = schema()
        .project(columns)
        .map_err(|e| SegmentError::Unreadable(e.to_string()).to_string())?;
    DFParquetMetadata::statistics_from_parquet_metadata(metadata, &Arc::new(projected))
        .map_err(|e| SegmentError::Unreadable(e.to_string()).to_string())
}

/// The tail read in one request with the footer: segments' footers (with the page index) are
/// a few KiB to some tens of KiB, so one range read usually fetches all of it.
pub const FOOTER_PREFETCH: usize = 64 * 1024;

type FooterResult = Result<Arc<Footer>, String>;

/// Every footer read in this run, by object URL: each is fetched (one range read) and
/// decoded once, whichever of discovery, `dnsql segments` or a query's scans asks first, and
/// shared by all of them. Unreadable ones are remembered with their reason.
#[derive(Default)]
pub struct Footers {
    cells: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<FooterResult>>>>,
    /// The footer cache on disk, for objects in remote stores.
    disk: Option<FooterCache>,
    /// Footers fetched from storage (not from memory or the disk cache), for `--verbose`.
    pub fetched: AtomicU64,
    /// Footers found in the disk cache.
    pub from_disk: AtomicU64,
    /// Footers decoded again because they were not kept ([`FOOTER_BUDGET`]).
    pub refetched: AtomicU64,
    /// Bytes of decoded footers kept.
    retained: AtomicU64,
    /// Files a name lookup's bloom filters ruled out before the scan ([`super::bloom`]).
    pub bloom_skipped: AtomicU64,
    /// Date manifests by directory key (see [`dir_key`]).
    manifests: Mutex<HashMap<String, Arc<ManifestSlot>>>,
    /// Date manifests read (and usable).
    pub manifests_read: AtomicU64,
    /// Files a name lookup ruled out from their manifest entries (no footer read).
    pub manifest_skipped: AtomicU64,
}

/// A read manifest's entries by their path below the date directory.
type ManifestEntries = HashMap<String, Arc<manifest::Entry>>;

/// A date manifest found by discovery, read on first use.
struct ManifestSlot {
    object: StoredObject,
    entries: tokio::sync::OnceCell<Option<Arc<ManifestEntries>>>,
}

/// The key of directory `dir` of a store: what a manifest and the segments below it agree on.
fn dir_key(store_url: &str, dir: &ObjectPath) -> String {
    format!("{store_url}{dir}")
}

impl std::fmt::Debug for Footers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Footers")
            .field("fetched", &self.fetched.load(Ordering::Relaxed))
            .finish()
    }
}

impl Footers {
    /// Remembers the date manifests discovery found (read only if a query can use them).
    pub fn add_manifests(&self, found: &[StoredObject]) {
        let mut map = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        for m in found {
            let Some(dir) = parent(&m.meta.location) else {
                continue;
            };
            map.insert(
                dir_key(m.store_url.as_str(), &dir),
                Arc::new(ManifestSlot {
                    object: m.clone(),
                    entries: tokio::sync::OnceCell::new(),
                }),
            );
        }
    }

    /// The manifest slot of `file`'s date directory, and that directory, if discovery found
    /// a manifest there.
    fn manifest_slot(&self, file: &SegmentFile) -> Option<(Arc<ManifestSlot>, ObjectPath)> {
        let date_dir = parent(&parent(&file.object.meta.location)?)?;
        let map = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        let slot = map
            .get(&dir_key(file.object.store_url.as_str(), &date_dir))?
            .clone();
        Some((slot, date_dir))
    }

    /// Reads (once per run) the manifest of `slot`; `None` if it cannot be read or is of
    /// another format version: it is then not used.
    async fn read_manifest(
        self: Arc<Self>,
        slot: Arc<ManifestSlot>,
    ) -> Option<Arc<ManifestEntries>> {
        slot.entries
            .get_or_init(|| async {
                let o = &slot.object;
                let bytes = o
                    .store
                    .get(&o.meta.location)
                    .await
                    .ok()?
                    .bytes()
                    .await
                    .ok()?;
                // Decoded on this task (a task per manifest: both cores decode).
                let entries = manifest::decode(bytes).ok()?;
                self.manifests_read.fetch_add(1, Ordering::Relaxed);
                Some(Arc::new(
                    entries
                        .into_iter()
                        .map(|e| (e.file.clone(), Arc::new(e)))
                        .collect(),
                ))
            })
            .await
            .clone()
    }

    /// The manifest entries describing `files` as listed (same path below the date
    /// directory, same size, a schema version this dnsql reads), in order; `None` where
    /// there is none. The manifests needed are read several at a time.
    pub async fn manifest_entries(
        self: &Arc<Self>,
        files: &[SegmentFile],
    ) -> Vec<Option<Arc<manifest::Entry>>> {
        if self
            .manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            return vec![None; files.len()];
        }
        let slots: Vec<Option<(Arc<ManifestSlot>, ObjectPath)>> =
            files.iter().map(|f| self.manifest_slot(f)).collect();
        let mut distinct: HashMap<usize, Arc<ManifestSlot>> = HashMap::new();
        for (slot, _) in slots.iter().flatten() {
            distinct.insert(Arc::as_ptr(slot) as usize, slot.clone());
        }
        // A task per manifest (spawned as the stream gets to it: a bounded number at a time).
        futures::stream::iter(distinct.into_values().collect::<Vec<_>>())
            .map(|slot| tokio::spawn(self.clone().read_manifest(slot)))
            .buffer_unordered(FOOTER_CONCURRENCY)
            .for_each(|_| async {})
            .await;
        files
            .iter()
            .zip(slots)
            .map(|(file, slot)| {
                let (slot, date_dir) = slot?;
                let entries = slot.entries.get()?.as_ref()?;
                let location = &file.object.meta.location;
                let e = entries.get(&manifest::relative(&date_dir, location)?)?;
                (e.size == file.object.meta.size && e.schema_version <= SCHEMA_VERSION)
                    .then(|| e.clone())
            })
            .collect()
    }

    /// Footers kept in memory for the run, and on disk in `disk` across runs (for objects in
    /// remote stores).
    pub fn with_disk_cache(disk: Option<FooterCache>) -> Self {
        Footers {
            disk,
            ..Footers::default()
        }
    }

    /// The footer of `file`, fetched on first use. `cache` is DataFusion's metadata cache of
    /// the session that will scan the file (so its Parquet reader finds the footer too).
    pub async fn get(
        self: &Arc<Self>,
        file: &SegmentFile,
        cache: Option<Arc<FileMetadataCache>>,
    ) -> FooterResult {
        self.cell_get(file, cache, true, &mut None).await
    }

    /// The footer of `file` with its decoded metadata: fetched on first use, and fetched again
    /// if it was not kept. A footer fetched now is kept for the run if `keep` (and the
    /// run's budget allows, [`FOOTER_BUDGET`]).
    pub async fn load(
        self: &Arc<Self>,
        file: &SegmentFile,
        cache: Option<Arc<FileMetadataCache>>,
        keep: bool,
    ) -> Result<Loaded, String> {
        let mut fresh = None;
        let footer = self.cell_get(file, cache.clone(), keep, &mut fresh).await?;
        let metadata = match (fresh, &footer.metadata) {
            (Some(md), _) => md,
            (None, Some(md)) => md.clone(),
            (None, None) => {
                self.refetched.fetch_add(1, Ordering::Relaxed);
                self.fetch_decoded(&file.object, cache).await?.0
            }
        };
        Ok(Loaded { footer, metadata })
    }

    /// The cell of `file`, initialised by fetching its footer if it is not yet; the decoded
    /// metadata of a fetch this call made is left in `fresh`.
    async fn cell_get(
        self: &Arc<Self>,
        file: &SegmentFile,
        cache: Option<Arc<FileMetadataCache>>,
        keep: bool,
        fresh: &mut Option<Arc<ParquetMetaData>>,
    ) -> FooterResult {
        let cell = {
            let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
            cells.entry(file.url()).or_default().clone()
        };
        cell.get_or_init(|| async move {
            let (metadata, info, from_disk) = self.fetch_decoded(&file.object, cache).await?;
            let counter = if from_disk {
                &self.from_disk
            } else {
                &self.fetched
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let size = metadata.memory_size() as u64;
            let keep = keep && {
                let fits = self.retained.fetch_add(size, Ordering::Relaxed) + size <= FOOTER_BUDGET;
                if !fits {
                    self.retained.fetch_sub(size, Ordering::Relaxed);
                }
                fits
            };
            *fresh = Some(metadata.clone());
            Ok(Arc::new(Footer {
                metadata: keep.then_some(metadata),
                info,
            }))
        })
        .await
        .clone()
    }

    /// Fetches and checks `file`'s footer (through the disk cache for remote objects);
    /// whether it came from the disk cache.
    async fn fetch_decoded(
        &self,
        object: &StoredObject,
        cache: Option<Arc<FileMetadataCache>>,
    ) -> Result<(Arc<ParquetMetaData>, SegmentInfo, bool), String> {
        let disk = self
            .disk
            .as_ref()
            .filter(|_| !object.store_url.as_str().starts_with("file:"));
        match disk {
            Some(disk) => fetch_via_disk(object, disk).await,
            None => {
                let metadata = fetch(object, cache).await?;
                let info = inspect(&metadata).map_err(|e| e.to_string())?;
                Ok((metadata, info, false))
            }
        }
    }

    /// The decoded footer of `object` for a scan's reader when the run did not keep it: for an
    /// object in a remote store through the disk cache (a local read, not a round trip), else
    /// `None` (the reader reads it itself, as cheaply).
    pub async fn reread(&self, object: &StoredObject) -> Option<Arc<ParquetMetaData>> {
        if self.disk.is_none() || object.store_url.as_str().starts_with("file:") {
            return None;
        }
        self.refetched.fetch_add(1, Ordering::Relaxed);
        self.fetch_decoded(object, None)
            .await
            .ok()
            .map(|(md, _, _)| md)
    }

    /// The footer of the object at `url` if it was read (and could be) already.
    pub fn peek(&self, url: &str) -> Option<Arc<Footer>> {
        let cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells.get(url)?.get()?.as_ref().ok().cloned()
    }

    /// The footers of `files`, several at a time (each decoded on a task of its own: decoding
    /// a footer and its statistics is CPU work), in the order given. Footers fetched now are
    /// kept decoded for the run if `keep` (within [`FOOTER_BUDGET`]).
    pub async fn get_all(
        self: &Arc<Self>,
        files: Vec<SegmentFile>,
        cache: Option<Arc<FileMetadataCache>>,
        keep: bool,
    ) -> Vec<(SegmentFile, FooterResult)> {
        futures::stream::iter(files)
            .map(|f| {
                let this = self.clone();
                let cache = cache.clone();
                let kept = f.clone();
                let task = tokio::spawn(async move {
                    let r = this.cell_get(&f, cache, keep, &mut None).await;
                    (f, r)
                });
                async move {
                    // Only a panic in the parquet reader ends a task early: that file is
                    // reported as unreadable like any other.
                    task.await
                        .unwrap_or_else(|e| (kept, Err(format!("footer check failed: {e}"))))
                }
            })
            .buffered(FOOTER_CONCURRENCY)
            .collect()
            .await
    }
}

/// Footers fetched at a time (each is one range read: on a lake, a round trip).
const FOOTER_CONCURRENCY: usize = 32;

/// The directory an object is in.
fn parent(location: &ObjectPath) -> Option<ObjectPath> {
    let parts: Vec<_> = location.parts().collect();
    let (_, dirs) = parts.split_last()?;
    Some(ObjectPath::from_iter(dirs.iter().cloned()))
}

async fn fetch(
    object: &StoredObject,
    cache: Option<Arc<FileMetadataCache>>,
) -> Result<Arc<ParquetMetaData>, String> {
    DFParquetMetadata::new(object.store.as_ref(), &object.meta)
        .with_metadata_size_hint(Some(FOOTER_PREFETCH))
        // Without the page index: decoding it for every file cost more than the lookups that
        // use it (DataFusion loads it for a file it scans when a predicate can use it).
        .with_page_index_policy(Some(PageIndexPolicy::Skip))
        .with_file_metadata_cache(cache)
        .fetch_metadata()
        .await
        .map_err(|e| SegmentError::Unreadable(crate::catalog::table::root_message(&e)).to_string())
}

/// Reads a footer through the disk cache: the cached tail if this version of the object has
/// one, else one range read of the tail (kept in the cache). Returns whether it came from the
/// cache.
async fn fetch_via_disk(
    object: &StoredObject,
    disk: &FooterCache,
) -> Result<(Arc<ParquetMetaData>, SegmentInfo, bool), String> {
    let unreadable =
        |e: &dyn std::fmt::Display| SegmentError::Unreadable(e.to_string()).to_string();
    let url = object.url();
    let meta = &object.meta;
    let store = &object.store;
    let size = meta.size;
    let cached = disk.get(&url, meta);
    let from_disk = cached.is_some();
    let tail = match cached {
        Some(t) => t,
        None => {
            let range = size.saturating_sub(FOOTER_PREFETCH as u64)..size;
            let mut got = store
                .get_ranges(&meta.location, std::slice::from_ref(&range))
                .await
                .map_err(|e| unreadable(&e))?;
            let bytes = got.pop().ok_or_else(|| unreadable(&"empty read"))?;
            Tail { range, bytes }
        }
    };
    let mut decoder = ParquetMetaDataPushDecoder::try_new(size)
        .map_err(|e| unreadable(&e))?
        .with_page_index_policy(PageIndexPolicy::Optional);
    decoder
        .push_ranges(vec![tail.range.clone()], vec![tail.bytes.clone()])
        .map_err(|e| unreadable(&e))?;
    let mut complete = true;
    let metadata = loop {
        match decoder.try_decode().map_err(|e| unreadable(&e))? {
            DecodeResult::Data(md) => break md,
            DecodeResult::NeedsData(ranges) => {
                complete = false;
                let buffers = store
                    .get_ranges(&meta.location, &ranges)
                    .await
                    .map_err(|e| unreadable(&e))?;
                decoder
                    .push_ranges(ranges, buffers)
                    .map_err(|e| unreadable(&e))?;
            }
            DecodeResult::Finished => return Err(unreadable(&"no footer")),
        }
    };
    let metadata = Arc::new(metadata);
    // Only a segment's footer is worth keeping.
    let info = inspect(&metadata).map_err(|e| e.to_string())?;
    // Keep only what a footer read needs: the page index and the footer.
    if !from_disk && complete {
        let metadata_start = tail
            .bytes
            .len()
            .checked_sub(8)
            .and_then(|at| tail.bytes.get(at..at + 4))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| size.saturating_sub(8 + u64::from(u32::from_le_bytes(b))));
        let index_start = metadata
            .row_groups()
            .iter()
            .flat_map(|rg| rg.columns())
            .flat_map(|c| [c.column_index_offset(), c.offset_index_offset()])
            .flatten()
            .filter_map(|o| u64::try_from(o).ok())
            .min();
        if let Some(start) = metadata_start.map(|m| index_start.map_or(m, |i| i.min(m)))
            && start >= tail.range.start
            && let Ok(skip) = usize::try_from(start - tail.range.start)
        {
            disk.put(
                &url,
                meta,
                &Tail {
                    range: start..size,
                    bytes: tail.bytes.slice(skip..),
                },
            );
        }
    }
    Ok((metadata, info, from_disk))
}

/// The compaction rule applied to a listing: drops every file a compacted segment of the
/// same partition directory covers (`dnsledger_schema::compaction::covered`). The one place
/// listings (local or lake; queries and `dnsql segments`) apply it.
pub fn skip_covered<T>(
    files: Vec<(SegmentFile, T)>,
    compacted_from: impl Fn(&T) -> Option<&str>,
) -> Vec<(SegmentFile, T)> {
    let mut by_dir: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, (f, _)) in files.iter().enumerate() {
        by_dir.entry(f.partition_dir()).or_default().push(i);
    }
    let names: Vec<String> = files.iter().map(|(f, _)| f.file_name()).collect();
    let mut drop: HashSet<usize> = HashSet::new();
    for members in by_dir.values() {
        let listed: Vec<compaction::Listed<'_>> = members
            .iter()
            .map(|&i| compaction::Listed {
                name: &names[i],
                compacted_from: compacted_from(&files[i].1),
            })
            .collect();
        let covered = compaction::covered(&listed);
        drop.extend(
            members
                .iter()
                .filter(|&&i| covered.contains(names[i].as_str())),
        );
    }
    files
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, f)| f)
        .collect()
}

/// The footers of `files` in scope, in order of host and time; unreadable ones as
/// [`Skipped`]. Reads footers only, several at a time; segments a compacted segment replaces
/// are left out.
pub async fn list(
    files: &[SegmentFile],
    scope: &Scope,
    footers: &Arc<Footers>,
) -> (Vec<SegmentRow>, Vec<Skipped>) {
    let candidates: Vec<SegmentFile> = files
        .iter()
        .filter(|f| scope.admits_key(&f.key))
        .cloned()
        .collect();
    // Decoded footers are kept only for as many files as a scan keeps them for
    // (`table::STATISTICS_MAX_FILES`): over more, a scan decodes each again anyway, and the
    // budget's worth kept here (256 MiB over a 100-host month) was held through every query
    // of a `dnsql report` for nothing.
    let keep = candidates.len() <= super::table::STATISTICS_MAX_FILES;
    let results = footers.get_all(candidates, None, keep).await;
    let results = skip_covered(results, |r| {
        r.as_ref()
            .ok()
            .and_then(|f| f.info.compacted_from.as_deref())
    });
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for (f, footer) in results {
        match footer {
            Ok(footer) if scope.admits_range(footer.info.ts_min, footer.info.ts_max) => {
                rows.push(SegmentRow {
                    path: f.path,
                    host: f.key.host,
                    bytes: f.size,
                    info: footer.info.clone(),
                })
            }
            Ok(_) => {}
            Err(reason) => skipped.push(Skipped {
                path: f.path,
                reason,
            }),
        }
    }
    rows.sort_by(|a, b| (&a.host, a.info.ts_min, &a.path).cmp(&(&b.host, b.info.ts_min, &b.path)));
    (rows, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::Int32Array;
    use parquet::file::metadata::ParquetMetaDataReader;

    fn footer_of(batch: &RecordBatch, kv: &[(&str, &str)]) -> ParquetMetaData {
        let buf = dnsledger_tests::fixture::parquet_bytes(batch, kv);
        ParquetMetaDataReader::new()
            .parse_and_finish(&bytes::Bytes::from(buf))
            .unwrap()
    }

    /// An answered query without a name (the footer facts do not depend on the row).
    fn segment_batch() -> RecordBatch {
        dnsledger_tests::fixture::batch(&[dnsledger_schema::Transaction {
            query_ts: None,
            status: dnsledger_schema::status::ANSWERED,
            client_port: 0,
            qname: None,
            registered_domain: None,
            ..dnsledger_tests::fixture::tx(1_700_000_000_000_000_000, "")
        }])
    }

    #[test]
    fn reads_segment_facts() {
        let md = footer_of(
            &segment_batch(),
            &[
                (meta::SCHEMA_VERSION, "1"),
                (meta::HOST, "h"),
                (meta::TS_MIN, "2023-11-14T22:13:20.000000000Z"),
                (meta::TS_MAX, "2023-11-14T22:13:20.000999000Z"),
                (meta::TRANSACTIONS, "1"),
                (meta::DROPPED_KERNEL, "7"),
                (meta::DROPPED_USER, "0"),
                (meta::ROWS_LOST, "3"),
                (meta::CUT_BY_CAP, "2"),
                (meta::RECOVERED_FROM, "run-1"),
                (meta::SOURCE, "bpf"),
            ],
        );
        let info = inspect(&md).unwrap();
        assert_eq!(info.host.as_deref(), Some("h"));
        assert_eq!(info.ts_min, Some(1_700_000_000_000_000_000));
        assert_eq!(info.ts_max, Some(1_700_000_000_000_999_000));
        assert_eq!((info.rows, info.transactions), (1, Some(1)));
        assert_eq!((info.dropped_kernel, info.dropped_user), (Some(7), Some(0)));
        assert_eq!((info.rows_lost, info.cut_by_cap), (Some(3), Some(2)));
        assert_eq!(info.recovered_from.as_deref(), Some("run-1"));
        assert_eq!(info.recovery_cut_bytes, None);
    }

    #[test]
    fn refuses_foreign_and_newer_files() {
        let foreign =
            RecordBatch::try_from_iter([("x", Arc::new(Int32Array::from(vec![1])) as ArrayRef)])
                .unwrap();
        assert_eq!(
            inspect(&footer_of(&foreign, &[])),
            Err(SegmentError::Foreign)
        );
        assert_eq!(
            inspect(&footer_of(&foreign, &[(meta::SCHEMA_VERSION, "1")])),
            Err(SegmentError::MissingColumn("ts".into()))
        );
        assert_eq!(
            inspect(&footer_of(&segment_batch(), &[(meta::SCHEMA_VERSION, "4")])),
            Err(SegmentError::NewerVersion { found: 4, known: 3 })
        );
        // Every version this dnsql knows reads.
        for v in ["1", "2", "3"] {
            assert!(inspect(&footer_of(&segment_batch(), &[(meta::SCHEMA_VERSION, v)])).is_ok());
        }
        assert!(matches!(
            inspect(&footer_of(&segment_batch(), &[(meta::SCHEMA_VERSION, "x")])),
            Err(SegmentError::BadVersion(_))
        ));
        let retyped = RecordBatch::try_from_iter([(
            "qname",
            Arc::new(Int32Array::from(vec![1])) as ArrayRef,
        )])
        .unwrap();
        let err = inspect(&footer_of(&retyped, &[(meta::SCHEMA_VERSION, "1")])).unwrap_err();
        assert!(matches!(err, SegmentError::MissingColumn(_)), "{err}");
    }

    #[test]
    fn older_segment_missing_nullable_columns_is_fine() {
        let full = segment_batch();
        let keep: Vec<usize> = (0..full.num_columns() - 1).collect();
        let older = full.project(&keep).unwrap();
        assert!(inspect(&footer_of(&older, &[(meta::SCHEMA_VERSION, "1")])).is_ok());
    }
}
