//! Date manifests: what a name lookup needs to know about every segment of one host's day, in
//! one small file, so that a reader rules segments out without opening them.
//!
//! Over a fleet's lake a name lookup is paid per file, not per row: 100 hosts × 30 days of
//! hourly compacted segments are 72,000 footers to fetch and decode before the few files that
//! hold the name are read. A manifest lets a reader skip that for the files it rules out.
//!
//! # Where and who
//!
//! `host=…/date=…/_dnsledger.manifest`, in the date directory, written by `dnsledger compact`
//! (locally and on a lake) for every date it looks at, after compacting: one writer per tree or
//! lake prefix, as for compaction itself. It describes every segment of that host's date (all
//! hours): its path below the date directory, its size, schema version, row count,
//! `compacted_from`, and per row group the min/max and a bloom filter of each bloom-filtered
//! name column ([`dnsledger_schema::BLOOM_FILTER_COLUMNS`]). The filter is built from the row
//! group's values at a false-positive rate of [`BLOOM_FPP`] (the segments' own filters, at 1 %,
//! would let ~720 of 72,000 files through a lookup of a name that is in none of them). That is
//! ~1.5 KB per compacted segment (uncompressed): a date of 24 compacted segments is ~36 KB.
//!
//! # Never wrong, at worst stale
//!
//! A reader uses an entry only for a segment it listed itself, at the same path with the same
//! size (segments are written once and never modified: new content gets a new name). A segment
//! the manifest does not know (shipped or sealed after it was written) is read as if there were
//! no manifest; an entry whose segment is gone is ignored. So a manifest never hides a row or
//! shows one twice, whatever happened since it was written; the compaction rule
//! (`compacted_from`) is applied from it exactly as from the footers. A stale manifest only
//! costs the reads it would have saved, and the next `dnsledger compact` rewrites it.
//!
//! # Hour directories not listed again (local trees)
//!
//! Listing a fleet's tree is a `getdents` per hour directory and a `stat` per segment (75,000
//! directories and 72,000 files for 100 hosts × 30 days). For a local tree `dnsledger compact`
//! also records, in the footer key [`DIRS_KEY`], each hour directory's listing as it saw it:
//! the directory's modification and change times (ns), taken *before* listing it, and every
//! segment in it with its size and modification time ([`DirListing`]). A reader `stat`s the
//! hour directory and, when both times are the recorded ones, takes the files from the
//! manifest instead of listing the directory; otherwise it lists it as without a manifest.
//! Creating, deleting or renaming an entry sets a directory's modification *and* change time
//! to the current time; `touch` can set the modification time back but never the change time
//! (setting it at all makes it now). So a segment added, removed or replaced after the listing
//! was recorded is never missed nor counted twice.
//!
//! A listing is recorded only when the directory's change time is older than the clock by
//! [`DIR_MARGIN`] (a change in the same tick of the file system's clock, just after the
//! listing, would leave the time as recorded), only for a directory holding no subdirectory
//! and no symbolic link (whose targets could change without the directory's times changing),
//! and never for times of zero (a file system that does not keep them). What it relies on
//! beyond that: segments are never rewritten in place (every writer of dnsledger writes a new
//! name and renames it into place; an in-place copy over a segment by hand is not seen by this
//! check, where listing saw it when its size changed), and the clock that
//! stamps the directories does not go back by more than the margin (an NFS server whose clock
//! is behind the writer's by more). Object stores have no directory times: lakes are listed.
//!
//! The listings are an addition to format version 1: a reader that does not know the key
//! ignores it (lists, and still uses the entries), and a manifest without it is listed as
//! before. The key's value starts with its own format line ([`DIRS_FORMAT`]).
//!
//! The name starts with `_` and does not end in `.parquet`: Spark, Hive, Trino and Athena
//! ignore files whose names start with `_`, DuckDB's `**/*.parquet` glob does not match it, and
//! dnsledger's own readers take only `*.parquet` files as segments.
//!
//! # Format
//!
//! A Parquet file, so any engine can read it (`SELECT * FROM
//! read_parquet('…/_dnsledger.manifest')`), with the footer key [`VERSION_KEY`] = [`VERSION`]
//! and one row per row group of each segment (a segment without row groups has one row with a
//! NULL `row_group`): `file`, `size`, `schema_version`, `rows`, `compacted_from`, `row_group`,
//! then `<column>_min`, `<column>_max`, `<column>_bloom` for each bloom-filtered column. A
//! reader that finds another version, or cannot read the file, ignores the manifest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow_array::builder::{BinaryBuilder, StringBuilder, UInt32Builder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::{
    Array, ArrayRef, BinaryArray, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use dnsledger_schema::{BLOOM_FILTER_COLUMNS, meta};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Type as PhysicalType};
use parquet::bloom_filter::Sbbf;
use parquet::errors::ParquetError;
use parquet::file::metadata::{FooterTail, KeyValue, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;

/// The manifest's file name in a date directory.
pub const FILE_NAME: &str = "_dnsledger.manifest";
/// The footer key holding the format version.
pub const VERSION_KEY: &str = "dnsledger.manifest_version";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;

/// The footer key holding the hour directories' listings ([`DirListing`]; local trees only).
pub const DIRS_KEY: &str = "dnsledger.manifest_dirs";
/// The first line of [`DIRS_KEY`]'s value: the format of the lines that follow.
pub const DIRS_FORMAT: &str = "dirs 1";
/// How much older than the clock a directory's change time must be for its listing to be
/// recorded: more than any file system's timestamp granularity (ext4, XFS and btrfs stamp with
/// the kernel's coarse clock, a few ms; FAT 2 s).
pub const DIR_MARGIN: Duration = Duration::from_secs(2);

/// False-positive rate of the manifest's bloom filters (per row group and column).
pub const BLOOM_FPP: f64 = 0.0001;

/// Tail fetched first when reading a segment's footer (usually all of it in one request).
const TAIL: u64 = 64 * 1024;
/// Segments read at a time while building a manifest (each a round trip on a lake).
const CONCURRENCY: usize = 16;

/// A name column's facts in one row group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameStats {
    /// Smallest value (Parquet statistics: bytes, possibly truncated to a prefix).
    pub min: Option<Bytes>,
    /// Largest value (possibly truncated and rounded up, so still an upper bound).
    pub max: Option<Bytes>,
    /// A split-block bloom filter of the row group's values ([`BLOOM_FPP`]), serialised as
    /// in Parquet (header and bitset): `Sbbf::from_bytes` reads it.
    pub bloom: Option<Bytes>,
}

/// One segment of the date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path below the date directory, `/`-separated, each part as its writer meant it
    /// (percent-decoded): `hour=07/web-1-….parquet`.
    pub file: String,
    pub size: u64,
    pub schema_version: u32,
    pub rows: u64,
    /// The segment's `dnsledger.compacted_from` key, if it has one.
    pub compacted_from: Option<String>,
    /// Per row group, one [`NameStats`] per column of `BLOOM_FILTER_COLUMNS`, in that order.
    pub row_groups: Vec<Vec<NameStats>>,
}

/// A manifest that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{0}")]
    Format(String),
    #[error("{op} {path}: {source}")]
    Store {
        op: &'static str,
        path: String,
        source: object_store::Error,
    },
}

fn format_err(e: impl std::fmt::Display) -> ManifestError {
    ManifestError::Format(e.to_string())
}

/// A key part as its writer meant it (object_store percent-encodes some bytes of the parts it
/// builds, and a path read from the local file system may be encoded differently from one
/// listed: comparing decoded parts makes both agree).
pub fn decode_part(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}

/// The path of `location` below `dir`, as an [`Entry::file`] names it; `None` when it is not
/// below `dir`.
pub fn relative(dir: &ObjectPath, location: &ObjectPath) -> Option<String> {
    let rest: Vec<String> = location
        .prefix_match(dir)?
        .map(|p| decode_part(p.as_ref()))
        .collect();
    (!rest.is_empty()).then(|| rest.join("/"))
}

/// The manifest's location in date directory `dir`.
pub fn location(dir: &ObjectPath) -> ObjectPath {
    dir.clone().join(FILE_NAME)
}

/// Whether `location` is a manifest (by name).
pub fn is_manifest(location: &ObjectPath) -> bool {
    location.filename() == Some(FILE_NAME)
}

/// The leaf columns of the name columns in a segment's schema, in the order of
/// `BLOOM_FILTER_COLUMNS` (`None` for a column the segment does not have).
fn name_leaves(md: &ParquetMetaData) -> Vec<Option<usize>> {
    let schema = md.file_metadata().schema_descr();
    BLOOM_FILTER_COLUMNS
        .iter()
        .map(|c| (0..schema.num_columns()).find(|&i| schema.column(i).path().string() == *c))
        .collect()
}

/// Reads a segment's byte ranges from an object store, for the Parquet reader.
struct StoreReader {
    store: Arc<dyn ObjectStore>,
    location: ObjectPath,
    metadata: Arc<ParquetMetaData>,
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.location, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.location, &ranges)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        futures::future::ready(Ok(self.metadata.clone())).boxed()
    }
}

/// The distinct strings of a name column as read (plain or dictionary-encoded strings).
fn distinct_into(array: &dyn Array, out: &mut HashSet<String>) {
    if let Some(d) = array.as_any_dictionary_opt() {
        // Read per row group, a dictionary holds only values of that row group.
        distinct_into(d.values().as_ref(), out);
    } else if let Some(s) = array.as_string_opt::<i32>() {
        out.extend(s.iter().flatten().map(str::to_owned));
    } else if let Some(s) = array.as_string_opt::<i64>() {
        out.extend(s.iter().flatten().map(str::to_owned));
    } else if let Some(s) = array.as_string_view_opt() {
        out.extend(s.iter().flatten().map(str::to_owned));
    }
}

/// A bloom filter of `values` at [`BLOOM_FPP`], serialised.
fn bloom_of(values: &HashSet<String>) -> Result<Bytes, ManifestError> {
    let ndv = u64::try_from(values.len().max(1)).unwrap_or(u64::MAX);
    let mut filter = Sbbf::new_with_ndv_fpp(ndv, BLOOM_FPP).map_err(format_err)?;
    for v in values {
        filter.insert(v.as_str());
    }
    let mut out = Vec::new();
    filter.write(&mut out).map_err(format_err)?;
    Ok(Bytes::from(out))
}

/// Reads a segment's footer and name columns from the store and makes its entry (`file` is
/// its path below the date directory). A file that is not a segment (no schema version) is an
/// error.
pub async fn read_entry(
    store: &Arc<dyn ObjectStore>,
    location: &ObjectPath,
    file: String,
    size: u64,
) -> Result<Entry, ManifestError> {
    let err = |e: &dyn std::fmt::Display| format_err(format!("{location}: {e}"));
    let fetch = |range: Range<u64>| async move {
        store.get_range(location, range).await.map_err(|e| err(&e))
    };
    if size < 8 {
        return Err(err(&"too short for Parquet"));
    }
    let tail = fetch(size.saturating_sub(TAIL)..size).await?;
    let tail_start = size - tail.len() as u64;
    let last8: &[u8] = tail.get(tail.len().saturating_sub(8)..).unwrap_or_default();
    let footer = FooterTail::try_from(last8).map_err(|e| err(&e))?;
    let md_len = footer.metadata_length() as u64;
    let md_start = size
        .checked_sub(8 + md_len)
        .ok_or_else(|| err(&"footer longer than the file"))?;
    let md_bytes = if md_start >= tail_start {
        let from = usize::try_from(md_start - tail_start).map_err(|e| err(&e))?;
        tail.slice(from..tail.len() - 8)
    } else {
        fetch(md_start..size - 8).await?
    };
    let md = Arc::new(ParquetMetaDataReader::decode_metadata(&md_bytes).map_err(|e| err(&e))?);
    let kv: HashMap<&str, &str> = md
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| Some((kv.key.as_str(), kv.value.as_deref()?)))
                .collect()
        })
        .unwrap_or_default();
    let schema_version: u32 = kv
        .get(meta::SCHEMA_VERSION)
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| err(&"not a dnsledger segment"))?;
    let compacted_from = kv.get(meta::COMPACTED_FROM).map(|v| (*v).to_owned());

    let leaves = name_leaves(&md);
    let arrow_md =
        ArrowReaderMetadata::try_new(md.clone(), ArrowReaderOptions::new()).map_err(|e| err(&e))?;
    let mask = ProjectionMask::leaves(
        md.file_metadata().schema_descr(),
        leaves.iter().flatten().copied(),
    );
    let mut row_groups = Vec::with_capacity(md.num_row_groups());
    for (i, rg) in md.row_groups().iter().enumerate() {
        // The row group's distinct names, per column.
        let mut values: Vec<HashSet<String>> = vec![HashSet::new(); leaves.len()];
        if leaves.iter().any(Option::is_some) {
            let reader = StoreReader {
                store: store.clone(),
                location: location.clone(),
                metadata: md.clone(),
            };
            let mut stream =
                ParquetRecordBatchStreamBuilder::new_with_metadata(reader, arrow_md.clone())
                    .with_projection(mask.clone())
                    .with_row_groups(vec![i])
                    .build()
                    .map_err(|e| err(&e))?;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| err(&e))?;
                for (c, set) in BLOOM_FILTER_COLUMNS.iter().zip(values.iter_mut()) {
                    if let Some(a) = batch.column_by_name(c) {
                        distinct_into(a.as_ref(), set);
                    }
                }
            }
        }
        let mut stats = Vec::with_capacity(leaves.len());
        for (leaf, set) in leaves.iter().zip(&values) {
            let Some(leaf) = leaf else {
                stats.push(NameStats::default());
                continue;
            };
            let st = rg
                .column(*leaf)
                .statistics()
                .filter(|s| s.physical_type() == PhysicalType::BYTE_ARRAY);
            stats.push(NameStats {
                min: st
                    .and_then(|s| s.min_bytes_opt())
                    .map(Bytes::copy_from_slice),
                max: st
                    .and_then(|s| s.max_bytes_opt())
                    .map(Bytes::copy_from_slice),
                bloom: Some(bloom_of(set)?),
            });
        }
        row_groups.push(stats);
    }
    Ok(Entry {
        file,
        size,
        schema_version,
        rows: u64::try_from(md.file_metadata().num_rows()).unwrap_or(0),
        compacted_from,
        row_groups,
    })
}

fn manifest_schema() -> Arc<Schema> {
    let mut fields = vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("size", DataType::UInt64, false),
        Field::new("schema_version", DataType::UInt32, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("compacted_from", DataType::Utf8, true),
        Field::new("row_group", DataType::UInt32, true),
    ];
    for c in BLOOM_FILTER_COLUMNS {
        for suffix in ["min", "max", "bloom"] {
            fields.push(Field::new(format!("{c}_{suffix}"), DataType::Binary, true));
        }
    }
    Arc::new(Schema::new(fields))
}

/// The manifest of `entries` (and, for a local tree, its hour directories' listings `dirs`), as
/// Parquet bytes.
pub fn encode(entries: &[Entry], dirs: &[DirListing]) -> Result<Vec<u8>, ManifestError> {
    let mut file = StringBuilder::new();
    let mut size = UInt64Builder::new();
    let mut version = UInt32Builder::new();
    let mut rows = UInt64Builder::new();
    let mut compacted = StringBuilder::new();
    let mut row_group = UInt32Builder::new();
    let mut names: Vec<[BinaryBuilder; 3]> = BLOOM_FILTER_COLUMNS
        .iter()
        .map(|_| {
            [
                BinaryBuilder::new(),
                BinaryBuilder::new(),
                BinaryBuilder::new(),
            ]
        })
        .collect();
    for e in entries {
        let groups: Vec<Option<(u32, &Vec<NameStats>)>> = if e.row_groups.is_empty() {
            vec![None]
        } else {
            e.row_groups
                .iter()
                .enumerate()
                .map(|(i, g)| Some((u32::try_from(i).unwrap_or(u32::MAX), g)))
                .collect()
        };
        for g in groups {
            file.append_value(&e.file);
            size.append_value(e.size);
            version.append_value(e.schema_version);
            rows.append_value(e.rows);
            compacted.append_option(e.compacted_from.as_deref());
            row_group.append_option(g.map(|(i, _)| i));
            for (c, builders) in names.iter_mut().enumerate() {
                let stats = g.and_then(|(_, s)| s.get(c));
                let [min, max, bloom] = builders;
                min.append_option(stats.and_then(|s| s.min.as_deref()));
                max.append_option(stats.and_then(|s| s.max.as_deref()));
                bloom.append_option(stats.and_then(|s| s.bloom.as_deref()));
            }
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(file.finish()),
        Arc::new(size.finish()),
        Arc::new(version.finish()),
        Arc::new(rows.finish()),
        Arc::new(compacted.finish()),
        Arc::new(row_group.finish()),
    ];
    for builders in &mut names {
        for b in builders {
            columns.push(Arc::new(b.finish()));
        }
    }
    let batch = RecordBatch::try_new(manifest_schema(), columns).map_err(format_err)?;
    // Uncompressed: the filters are random bits, the rest is dictionary-encoded, and a reader
    // of thousands of manifests would pay a codec context for every column chunk (zstd's cost
    // ~1 MB of zeroed memory each; measured: 3,000 manifests took 4.3 s instead of 1.9 s).
    let mut kvs = vec![KeyValue::new(VERSION_KEY.to_owned(), VERSION.to_string())];
    if !dirs.is_empty() {
        kvs.push(KeyValue::new(DIRS_KEY.to_owned(), encode_dirs(dirs)));
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_key_value_metadata(Some(kvs))
        .build();
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).map_err(format_err)?;
    writer.write(&batch).map_err(format_err)?;
    writer.close().map_err(format_err)?;
    Ok(out)
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, ManifestError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| format_err(format!("manifest column `{name}` is missing or mistyped")))
}

/// Reads a manifest. Another format version, or anything unreadable, is an error (readers then
/// do without it).
pub fn decode(bytes: Bytes) -> Result<Vec<Entry>, ManifestError> {
    decode_with_dirs(bytes).map(|(entries, _)| entries)
}

/// [`decode`], with the hour directories' listings of the footer ([`dirs_of`]).
pub fn decode_with_dirs(bytes: Bytes) -> Result<(Vec<Entry>, Vec<DirListing>), ManifestError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(format_err)?;
    let dirs = dirs_of(builder.metadata());
    let version = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kvs| kvs.iter().find(|kv| kv.key == VERSION_KEY))
        .and_then(|kv| kv.value.as_deref()?.trim().parse::<u32>().ok());
    if version != Some(VERSION) {
        return Err(format_err(format!(
            "manifest format version {version:?}, this build reads {VERSION}"
        )));
    }
    let mut entries: Vec<Entry> = Vec::new();
    for batch in builder.build().map_err(format_err)? {
        let batch = batch.map_err(format_err)?;
        let file = column::<StringArray>(&batch, "file")?;
        let size = column::<UInt64Array>(&batch, "size")?;
        let version = column::<UInt32Array>(&batch, "schema_version")?;
        let rows = column::<UInt64Array>(&batch, "rows")?;
        let compacted = column::<StringArray>(&batch, "compacted_from")?;
        let row_group = column::<UInt32Array>(&batch, "row_group")?;
        let names: Vec<[&BinaryArray; 3]> = BLOOM_FILTER_COLUMNS
            .iter()
            .map(|c| {
                Ok([
                    column::<BinaryArray>(&batch, &format!("{c}_min"))?,
                    column::<BinaryArray>(&batch, &format!("{c}_max"))?,
                    column::<BinaryArray>(&batch, &format!("{c}_bloom"))?,
                ])
            })
            .collect::<Result<_, ManifestError>>()?;
        let value =
            |a: &BinaryArray, i: usize| (!a.is_null(i)).then(|| Bytes::copy_from_slice(a.value(i)));
        for i in 0..batch.num_rows() {
            let name = file.value(i);
            let same = entries
                .last()
                .is_some_and(|e| e.file == name && e.size == size.value(i));
            if !same {
                entries.push(Entry {
                    file: name.to_owned(),
                    size: size.value(i),
                    schema_version: version.value(i),
                    rows: rows.value(i),
                    compacted_from: (!compacted.is_null(i)).then(|| compacted.value(i).to_owned()),
                    row_groups: Vec::new(),
                });
            }
            if row_group.is_null(i) {
                continue;
            }
            let stats = names
                .iter()
                .map(|[min, max, bloom]| NameStats {
                    min: value(min, i),
                    max: value(max, i),
                    bloom: value(bloom, i),
                })
                .collect();
            if let Some(e) = entries.last_mut() {
                e.row_groups.push(stats);
            }
        }
    }
    Ok((entries, dirs))
}

/// An hour directory of a local date directory as `dnsledger compact` listed it (see "Hour
/// directories not listed again" above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirListing {
    /// Its name in the date directory (`hour=07`).
    pub name: String,
    /// Its modification time (ns since the epoch), taken before listing it.
    pub mtime_ns: i64,
    /// Its change time (ns since the epoch), taken before listing it.
    pub ctime_ns: i64,
    /// Its segments (`*.parquet`, not hidden), in name order.
    pub files: Vec<ListedFile>,
}

/// A segment of a [`DirListing`]: what listing the directory would tell a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub name: String,
    pub size: u64,
    /// Modification time (ns since the epoch).
    pub mtime_ns: i64,
}

/// Nanoseconds since the epoch from seconds and nanoseconds (`None` if out of range).
fn ns_of(secs: i64, nsec: i64) -> Option<i64> {
    secs.checked_mul(1_000_000_000)?.checked_add(nsec)
}

/// A directory's (or file's) modification and change times, in ns since the epoch.
pub fn times_ns(md: &std::fs::Metadata) -> Option<(i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    Some((
        ns_of(md.mtime(), md.mtime_nsec())?,
        ns_of(md.ctime(), md.ctime_nsec())?,
    ))
}

impl DirListing {
    /// Whether the directory, whose metadata (not following links) is `md` now, is unchanged
    /// since it was listed: then [`DirListing::files`] is what listing it would find.
    pub fn unchanged(&self, md: &std::fs::Metadata) -> bool {
        md.is_dir() && times_ns(md) == Some((self.mtime_ns, self.ctime_ns))
    }
}

/// Lists, for its manifest, the hour directories of local date directory `date_dir` whose
/// change time is before `changed_before` (callers: now − [`DIR_MARGIN`]); a directory that
/// changed since, or holds a subdirectory or a symbolic link, or cannot be read, is left out
/// (readers list it). Entries readers never look at are skipped as they skip them: hidden
/// names, `inprogress/`, files not ending in `.parquet`.
pub fn list_local_dirs(date_dir: &Path, changed_before: SystemTime) -> Vec<DirListing> {
    let Some(before) = changed_before
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
    else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(date_dir) else {
        return Vec::new();
    };
    let mut out: Vec<DirListing> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if name.starts_with('.') || name == "inprogress" {
                return None;
            }
            list_local_dir(&e.path(), name, before)
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// One directory for [`list_local_dirs`]: its times first, then its entries.
fn list_local_dir(dir: &Path, name: String, before_ns: i64) -> Option<DirListing> {
    let md = std::fs::symlink_metadata(dir).ok()?;
    let (mtime_ns, ctime_ns) = times_ns(&md)?;
    if !md.is_dir() || mtime_ns <= 0 || ctime_ns <= 0 || ctime_ns >= before_ns {
        return None;
    }
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        let file_name = e.file_name();
        let lossy = file_name.to_string_lossy();
        if lossy.starts_with('.') {
            continue;
        }
        let t = e.file_type().ok()?;
        if t.is_dir() {
            if lossy == "inprogress" {
                continue;
            }
            return None;
        }
        if t.is_symlink() {
            return None;
        }
        if !t.is_file() || !lossy.ends_with(".parquet") {
            continue;
        }
        let name = file_name.into_string().ok()?;
        let fmd = e.metadata().ok()?;
        files.push(ListedFile {
            name,
            size: fmd.len(),
            mtime_ns: times_ns(&fmd)?.0,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Some(DirListing {
        name,
        mtime_ns,
        ctime_ns,
        files,
    })
}

/// Bytes of a name escaped in [`DIRS_KEY`]'s lines (its separators, `%`, control bytes).
const NAME_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b' ').add(b'%');

/// [`DIRS_KEY`]'s value: [`DIRS_FORMAT`], then per directory a line `d <name> <mtime_ns>
/// <ctime_ns>` followed by a line `f <name> <size> <mtime_ns>` per segment (names
/// percent-escaped).
pub fn encode_dirs(dirs: &[DirListing]) -> String {
    let esc = |n: &str| percent_encoding::utf8_percent_encode(n, NAME_ESCAPES).to_string();
    let mut out = String::from(DIRS_FORMAT);
    for d in dirs {
        out.push_str(&format!(
            "\nd {} {} {}",
            esc(&d.name),
            d.mtime_ns,
            d.ctime_ns
        ));
        for f in &d.files {
            out.push_str(&format!("\nf {} {} {}", esc(&f.name), f.size, f.mtime_ns));
        }
    }
    out
}

/// Parses [`encode_dirs`]'s text; `None` for another format or anything malformed (the
/// listings are then not used).
pub fn decode_dirs(text: &str) -> Option<Vec<DirListing>> {
    let mut lines = text.lines();
    if lines.next()? != DIRS_FORMAT {
        return None;
    }
    let unesc = |n: &str| {
        percent_encoding::percent_decode_str(n)
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    };
    let mut dirs: Vec<DirListing> = Vec::new();
    for line in lines {
        let mut parts = line.split(' ');
        let (kind, name, a, b) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        match kind {
            "d" => dirs.push(DirListing {
                name: unesc(name)?,
                mtime_ns: a.parse().ok()?,
                ctime_ns: b.parse().ok()?,
                files: Vec::new(),
            }),
            "f" => dirs.last_mut()?.files.push(ListedFile {
                name: unesc(name)?,
                size: a.parse().ok()?,
                mtime_ns: b.parse().ok()?,
            }),
            _ => return None,
        }
    }
    Some(dirs)
}

/// The directory listings a manifest's footer holds (empty when it holds none, is of another
/// format version, or they cannot be parsed).
pub fn dirs_of(md: &ParquetMetaData) -> Vec<DirListing> {
    let kvs = md.file_metadata().key_value_metadata();
    let value = |key: &str| {
        kvs.and_then(|kvs| kvs.iter().find(|kv| kv.key == key))
            .and_then(|kv| kv.value.as_deref())
    };
    if value(VERSION_KEY).and_then(|v| v.trim().parse::<u32>().ok()) != Some(VERSION) {
        return Vec::new();
    }
    value(DIRS_KEY).and_then(decode_dirs).unwrap_or_default()
}

/// The directory listings of the manifest at local `path`, from its footer only (what a
/// reader needs before listing a date directory's hours).
pub fn read_local_dirs(path: &Path) -> Vec<DirListing> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map(|md| dirs_of(&md))
        .unwrap_or_default()
}

/// What [`refresh`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// The manifest already described exactly these segments.
    Unchanged,
    /// Written, with this many entries (`read` of them read from their segments, the rest
    /// kept from the previous manifest); `left_out` segments could not be read and have no
    /// entry (readers open them as without a manifest).
    Written {
        entries: usize,
        read: usize,
        left_out: Vec<(String, String)>,
    },
    /// The date has no segments left: its manifest was deleted.
    Removed,
    /// Nothing there and nothing to describe.
    Absent,
}

/// Brings the manifest of date directory `dir` up to date with `segments` (the segment objects
/// listed below `dir`, any hour) and, in a local tree, `dirs` (its hour directories' listings
/// from [`list_local_dirs`]; empty for a lake: each is a listing of its own, so when it was
/// taken does not matter). Entries of
/// the current manifest whose segment is listed with the same size are kept; other segments
/// are read. The manifest is replaced in one PUT.
pub async fn refresh(
    store: &Arc<dyn ObjectStore>,
    dir: &ObjectPath,
    segments: &[ObjectMeta],
    dirs: &[DirListing],
    url_of: &(dyn Fn(&ObjectPath) -> String + Sync),
) -> Result<Refreshed, ManifestError> {
    let at = location(dir);
    let store_err = |op: &'static str| {
        let path = url_of(&at);
        move |source| ManifestError::Store { op, path, source }
    };
    let (current, current_dirs): (Option<Vec<Entry>>, Vec<DirListing>) = match store.get(&at).await
    {
        Ok(got) => {
            let bytes = got.bytes().await.map_err(store_err("cannot read"))?;
            // An unreadable manifest is replaced.
            let (entries, dirs) = decode_with_dirs(bytes).unwrap_or_default();
            (Some(entries), dirs)
        }
        Err(object_store::Error::NotFound { .. }) => (None, Vec::new()),
        Err(e) => return Err(store_err("cannot read")(e)),
    };
    let listed: BTreeMap<String, &ObjectMeta> = segments
        .iter()
        .filter_map(|m| Some((relative(dir, &m.location)?, m)))
        .collect();
    if listed.is_empty() {
        return match current {
            Some(_) => {
                store
                    .delete(&at)
                    .await
                    .map_err(store_err("cannot delete"))?;
                Ok(Refreshed::Removed)
            }
            None => Ok(Refreshed::Absent),
        };
    }
    let known: HashMap<(&str, u64), &Entry> = current
        .iter()
        .flatten()
        .map(|e| ((e.file.as_str(), e.size), e))
        .collect();
    if current_dirs == dirs
        && current.as_ref().is_some_and(|c| {
            c.len() == listed.len()
                && listed
                    .iter()
                    .all(|(f, m)| known.contains_key(&(f.as_str(), m.size)))
        })
    {
        return Ok(Refreshed::Unchanged);
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut to_read = Vec::new();
    for (file, m) in &listed {
        match known.get(&(file.as_str(), m.size)) {
            Some(e) => entries.push((*e).clone()),
            None => to_read.push((file.clone(), *m)),
        }
    }
    let read = to_read.len();
    let results: Vec<(String, Result<Entry, ManifestError>)> = futures::stream::iter(to_read)
        .map(|(file, m)| async move {
            let r = read_entry(store, &m.location, file.clone(), m.size).await;
            (file, r)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut left_out = Vec::new();
    for (file, r) in results {
        match r {
            Ok(e) => entries.push(e),
            Err(e) => left_out.push((file, e.to_string())),
        }
    }
    entries.sort_by(|a, b| a.file.cmp(&b.file));
    left_out.sort();
    let bytes = encode(&entries, dirs)?;
    store
        .put(&at, PutPayload::from(bytes))
        .await
        .map_err(store_err("cannot write"))?;
    Ok(Refreshed::Written {
        entries: entries.len(),
        read: read - left_out.len(),
        left_out,
    })
}

/// Lists the segments below `prefix` by date directory (`…/host=…/date=…`): every
/// `*.parquet` object (not hidden) found below a date directory, any depth, with the date
/// directories that hold only a manifest (for [`refresh`] to remove it).
pub async fn list_dates(
    store: &dyn ObjectStore,
    prefix: &ObjectPath,
) -> Result<BTreeMap<ObjectPath, Vec<ObjectMeta>>, object_store::Error> {
    let listed: Vec<ObjectMeta> = store.list(Some(prefix)).try_collect().await?;
    let mut dates: BTreeMap<ObjectPath, Vec<ObjectMeta>> = BTreeMap::new();
    for m in listed {
        let parts: Vec<String> = m.location.parts().map(|p| p.as_ref().to_owned()).collect();
        let Some(at) = parts
            .iter()
            .rposition(|p| decode_part(p).starts_with("date="))
        else {
            continue;
        };
        let hidden = parts
            .iter()
            .skip(at)
            .any(|p| p.starts_with('.') || p == "inprogress");
        let dir = ObjectPath::from_iter(parts.iter().take(at + 1).map(String::as_str));
        if is_manifest(&m.location) && parts.len() == at + 2 {
            dates.entry(dir).or_default();
        } else if !hidden && m.location.as_ref().ends_with(".parquet") {
            dates.entry(dir).or_default().push(m);
        }
    }
    Ok(dates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn entry(file: &str, rgs: usize) -> Entry {
        Entry {
            file: file.into(),
            size: 1234,
            schema_version: 1,
            rows: 10,
            compacted_from: (rgs > 1).then(|| "a.parquet,b.parquet".into()),
            row_groups: (0..rgs)
                .map(|i| {
                    BLOOM_FILTER_COLUMNS
                        .iter()
                        .map(|c| NameStats {
                            min: Some(Bytes::from(format!("{c}-min-{i}"))),
                            max: (i % 2 == 0).then(|| Bytes::from(format!("{c}-max-{i}"))),
                            bloom: Some(Bytes::from(vec![i as u8; 40])),
                        })
                        .collect()
                })
                .collect(),
        }
    }

    #[test]
    fn round_trips_entries_with_and_without_row_groups() {
        let entries = vec![
            entry("hour=00/a.parquet", 0),
            entry("hour=00/b.parquet", 1),
            entry("hour=07/c.parquet", 3),
        ];
        let bytes = encode(&entries, &[]).expect("encode");
        assert_eq!(decode(Bytes::from(bytes)).expect("decode"), entries);
    }

    #[test]
    fn other_versions_and_foreign_files_are_refused() {
        assert!(decode(Bytes::from_static(b"not parquet")).is_err());
        let batch =
            RecordBatch::try_from_iter([("x", Arc::new(UInt32Array::from(vec![1])) as ArrayRef)])
                .expect("batch");
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, batch.schema(), None).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
        let err = decode(Bytes::from(out)).expect_err("no version key");
        assert!(err.to_string().contains("version"), "{err}");
    }

    /// A segment-like Parquet file: the name columns with bloom filters, a schema version.
    fn segment(names: &[&str]) -> Bytes {
        let qname = Arc::new(StringArray::from(names.to_vec())) as ArrayRef;
        let rd = Arc::new(StringArray::from(vec!["example.org"; names.len()])) as ArrayRef;
        let batch =
            RecordBatch::try_from_iter([("qname", qname), ("registered_domain", rd)]).expect("b");
        let mut props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                meta::SCHEMA_VERSION.to_owned(),
                "1".to_owned(),
            )]));
        for c in BLOOM_FILTER_COLUMNS {
            props = props.set_column_bloom_filter_enabled((*c).into(), true);
        }
        let mut out = Vec::new();
        let mut w =
            ArrowWriter::try_new(&mut out, batch.schema(), Some(props.build())).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
        Bytes::from(out)
    }

    #[tokio::test]
    async fn entries_hold_the_segments_statistics_and_bloom_filters() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let dir = ObjectPath::from("host=a/date=2024-05-01");
        let seg = segment(&["a.example.org", "b.example.org", "c.example.org"]);
        let at = dir.clone().join("hour=07").join("s.parquet");
        store
            .put(&at, PutPayload::from(seg.clone()))
            .await
            .expect("put");
        let listed = list_dates(&store, &ObjectPath::from(""))
            .await
            .expect("list");
        let got = refresh(&store, &dir, &listed[&dir], &[], &|p| p.to_string())
            .await
            .expect("refresh");
        assert!(
            matches!(
                got,
                Refreshed::Written {
                    entries: 1,
                    read: 1,
                    ..
                }
            ),
            "{got:?}"
        );
        let bytes = store
            .get(&location(&dir))
            .await
            .expect("manifest")
            .bytes()
            .await
            .expect("bytes");
        let entries = decode(bytes).expect("decode");
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(
            (e.file.as_str(), e.size),
            ("hour=07/s.parquet", seg.len() as u64)
        );
        assert_eq!((e.rows, e.row_groups.len()), (3, 2));
        let qname = &e.row_groups[0][0];
        assert_eq!(qname.min.as_deref(), Some(&b"a.example.org"[..]));
        assert_eq!(qname.max.as_deref(), Some(&b"b.example.org"[..]));
        let filter =
            parquet::bloom_filter::Sbbf::from_bytes(qname.bloom.as_deref().expect("bloom"))
                .expect("sbbf");
        assert!(filter.check("a.example.org") && filter.check("b.example.org"));
        assert!(
            !filter.check("c.example.org"),
            "the second row group holds it"
        );
        // The same listing again: nothing to do.
        assert_eq!(
            refresh(&store, &dir, &listed[&dir], &[], &|p| p.to_string())
                .await
                .expect("refresh"),
            Refreshed::Unchanged
        );
    }

    #[tokio::test]
    async fn refresh_writes_keeps_and_removes() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let dir = ObjectPath::from("lake/host=a/date=2024-05-01");
        let url_of = |p: &ObjectPath| format!("memory:///{p}");
        // A foreign object is left out with its reason; nothing else to describe.
        let foreign = dir.clone().join("hour=00").join("x.parquet");
        store
            .put(&foreign, PutPayload::from_static(b"PAR1 not really PAR1"))
            .await
            .expect("put");
        let listed = list_dates(&store, &ObjectPath::from("lake"))
            .await
            .expect("list");
        assert_eq!(listed.keys().collect::<Vec<_>>(), vec![&dir]);
        let got = refresh(&store, &dir, &listed[&dir], &[], &url_of)
            .await
            .expect("refresh");
        let Refreshed::Written {
            entries, left_out, ..
        } = got
        else {
            panic!("{got:?}");
        };
        assert_eq!(entries, 0);
        assert_eq!(left_out.len(), 1);
        assert_eq!(left_out[0].0, "hour=00/x.parquet");
        // Nothing listed any more: the manifest goes.
        store.delete(&foreign).await.expect("delete");
        let listed = list_dates(&store, &ObjectPath::from("lake"))
            .await
            .expect("list");
        assert_eq!(
            refresh(&store, &dir, &listed[&dir], &[], &url_of)
                .await
                .expect("refresh"),
            Refreshed::Removed
        );
        assert!(store.head(&location(&dir)).await.is_err());
    }

    #[test]
    fn local_dir_listings_leave_out_what_a_reader_could_not_trust() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let date = tmp.path().join("host=a%2Fb/date=2024-05-01");
        let mk = |rel: &str, bytes: &[u8]| {
            let p = date.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, bytes).expect("write");
        };
        mk("hour=00/a.parquet", b"12345");
        mk("hour=00/.hidden.parquet", b"x");
        mk("hour=00/notes.txt", b"x");
        mk("hour=00/inprogress/b.parquet", b"x");
        mk("hour=01/c.parquet", b"x");
        mk("hour=01/sub/d.parquet", b"x");
        mk("hour=02/e.parquet", b"x");
        std::os::unix::fs::symlink(
            date.join("hour=00/a.parquet"),
            date.join("hour=02/f.parquet"),
        )
        .expect("symlink");
        mk("hour=03/g h%.parquet", b"123");
        std::fs::create_dir_all(date.join("inprogress")).expect("mkdir");
        // Changed just now: nothing is recorded before the margin has passed.
        let now = SystemTime::now();
        assert_eq!(
            list_local_dirs(&date, now - DIR_MARGIN),
            Vec::<DirListing>::new()
        );
        let dirs = list_local_dirs(&date, now + Duration::from_secs(3600));
        let names: Vec<(&str, Vec<(&str, u64)>)> = dirs
            .iter()
            .map(|d| {
                let files = d.files.iter().map(|f| (f.name.as_str(), f.size)).collect();
                (d.name.as_str(), files)
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("hour=00", vec![("a.parquet", 5)]),
                ("hour=03", vec![("g h%.parquet", 3)]),
            ]
        );
        for d in &dirs {
            let md = std::fs::symlink_metadata(date.join(&d.name)).expect("stat");
            assert!(d.unchanged(&md), "{d:?}");
        }
        // Through a manifest's footer, as readers find them.
        let bytes = encode(&[entry("hour=00/a.parquet", 1)], &dirs).expect("encode");
        let (entries, got) = decode_with_dirs(Bytes::from(bytes.clone())).expect("decode");
        assert_eq!((entries.len(), &got), (1, &dirs));
        let at = date.join(FILE_NAME);
        std::fs::write(&at, &bytes).expect("write manifest");
        assert_eq!(read_local_dirs(&at), dirs);
        assert_eq!(decode_dirs("dirs 2\nd hour=00 1 2"), None);
        assert_eq!(decode_dirs("dirs 1\nf a.parquet 1 2"), None);

        // A segment added: the directory's times move on.
        std::thread::sleep(Duration::from_millis(20));
        mk("hour=00/late.parquet", b"x");
        let hour0 = date.join("hour=00");
        let md = std::fs::symlink_metadata(&hour0).expect("stat");
        assert!(!dirs[0].unchanged(&md));
        // Its modification time set back by hand: the change time still tells.
        let old = SystemTime::UNIX_EPOCH
            + Duration::from_nanos(u64::try_from(dirs[0].mtime_ns).expect("positive"));
        std::fs::File::open(&hour0)
            .expect("open dir")
            .set_modified(old)
            .expect("set mtime");
        let md = std::fs::symlink_metadata(&hour0).expect("stat");
        assert_eq!(times_ns(&md).map(|t| t.0), Some(dirs[0].mtime_ns));
        assert!(!dirs[0].unchanged(&md));
        // A segment removed.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::remove_file(date.join("hour=03/g h%.parquet")).expect("rm");
        let md = std::fs::symlink_metadata(date.join("hour=03")).expect("stat");
        assert!(!dirs[1].unchanged(&md));
    }
}
