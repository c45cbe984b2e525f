//! Shipping sealed segments to a data lake (`dnsledger ship`, `record --ship-to`).
//!
//! Each sealed segment `segments/host=…/date=…/hour=…/<file>.parquet` becomes the object
//! `<prefix>/host=…/date=…/hour=…/<file>.parquet` of the lake URL, so lake engines prune
//! partitions exactly as `dnsql` does locally. Only sealed segments are shipped: in-progress
//! and spool files live outside the segments root and are never listed.
//!
//! **Create-only, one PUT per segment.** Every upload is a single `PUT` with
//! `If-None-Match: *` (`PutMode::Create`): a segment is either wholly visible in the lake or
//! not at all, and nothing already there is ever overwritten. Multipart upload is not used
//! because object_store 0.13 has no create-only mode for it: `PutMultipartOptions` carries
//! only tags, attributes and extensions (`PutMode` exists only on `put_opts`), and the S3
//! client's `MultipartUpload::complete` always completes with the crate-private
//! `CompleteMultipartMode::Overwrite` (checked in object_store-0.13.2 `src/aws/mod.rs`), so a
//! multipart upload completed over an object that appeared meanwhile would replace it.
//! Segments are bounded by `--rotate-size` (128 MiB by default), far under S3's 5 GiB
//! single-PUT limit; a segment is read whole into memory for its upload.
//!
//! **Idempotent and resumable.** A local *ledger* per destination (`<data_dir>/shipped/
//! <url>-<hash>.ledger`, one line per segment confirmed in the lake, appended and fsynced
//! after each confirmation; a torn last line from a crash is cut off at the next open) says
//! what needs no upload. A segment shipped but not yet in the ledger (killed between the PUT
//! and the append) meets `412 Precondition Failed` on the next run: the object is fetched and
//! compared with the local file (size, then bytes); identical → recorded as shipped,
//! different → never overwritten, counted as failed and reported naming both.
//!
//! **Retries.** object_store retries 5xx, 429, and connection errors with exponential
//! backoff ([`retry_config`]); a create-only PUT that timed out is not retried there (it is
//! not idempotent), so each file also gets a bounded outer retry ([`ATTEMPTS`]), where a PUT
//! that did land shows up as a 412 with identical bytes. One file's failure does not stop
//! the others; a problem of the destination itself (unreachable, no such bucket, refused
//! credentials) stops the run at once, leaving the rest pending.
//!
//! **Compacted segments replace what they cover, in the lake too.** A segment written by
//! `dnsledger compact` names its inputs in its footer (`dnsledger.compacted_from`); `dnsql`
//! skips them, but DuckDB, Spark, Athena or Trino read every object under the prefix. So once
//! a compacted segment is confirmed in the lake (uploaded, or found there identical), the
//! shipper deletes the objects of the same partition it names: write first, delete after,
//! exactly as compaction does; an object already gone is fine. The ledger line of a compacted
//! segment carries the names it covers (`\tcovers=<name>/<name>…`; names never hold a `/`) and
//! a later `#removed\t<rel>` line says the deletes are done, so a crash in between is finished
//! by the next pass, which first checks (HEAD) that the compacted object is still in the lake
//! with its size. Nothing else in the lake is ever deleted. Engines that do not know the rule
//! see the covered rows twice only between the compacted upload and these deletes (the same
//! pass: milliseconds to seconds), or, after a crash there, until the next pass.
//!
//! **The ledger trusts the lake.** If objects disappear from the lake after they were
//! confirmed (a bucket emptied, an in-memory test server restarted), `ship --verify` lists the
//! destination and re-ships every segment the ledger has but the lake lacks (or holds with
//! another size).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use dnsledger_lake::object_store::path::Path as ObjectPath;
use dnsledger_lake::object_store::{
    self, BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig,
};
use dnsledger_lake::{LakeError, LakeUrl};
use dnsledger_schema::{compaction, meta};
use futures::StreamExt;
use parquet::file::metadata::ParquetMetaDataReader;
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use crate::store::prune::{PruneError, SegmentFile, list_segments, segments_root};

/// Directory of the ledgers in a data directory.
pub const SHIPPED_DIR: &str = "shipped";
/// The same, inside a bare segments tree (hidden: not a `host=` directory).
const TREE_SHIPPED_DIR: &str = ".dnsledger-shipped";
const LEDGER_EXT: &str = "ledger";
const LEDGER_HEADER: &str = "# dnsledger ship ledger v1";
/// Attempts per file per run (each one with object_store's own retries inside).
pub const ATTEMPTS: u32 = 3;
/// First pause between attempts of one file; doubled each time.
const ATTEMPT_BACKOFF: Duration = Duration::from_secs(1);

/// The environment variables the standard builders read, for `--help`.
pub const ENV_HELP: &str = "Credentials and endpoint come from the environment, the standard way of each cloud: \
S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL \
(S3-compatible stores such as MinIO), AWS_ALLOW_HTTP=true (plain-http endpoint), or the instance's \
role; GCS: GOOGLE_SERVICE_ACCOUNT / GOOGLE_APPLICATION_CREDENTIALS; Azure: AZURE_STORAGE_ACCOUNT_NAME, \
AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_KEY, AZURE_CLIENT_ID…). The destination needs \
PutObject and GetObject (ListBucket too for --verify; ListBucket and DeleteObject once compacted \
segments are shipped, to delete the objects they replace).";

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Tree(#[from] PruneError),
    #[error("cannot use the ship ledger {path}: {source}")]
    Ledger {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot list {url} for --verify: {source}\nhint: --verify needs permission to list the bucket (s3:ListBucket)"
    )]
    List {
        url: String,
        source: object_store::Error,
    },
    #[error("cannot start the shipping runtime: {0}")]
    Runtime(std::io::Error),
}

/// object_store's own retries: 5xx, 429 and connection errors, backing off exponentially
/// from 200 ms to 5 s, at most 5 times and 60 s per request.
pub fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_secs(60),
    }
}

/// Connect within 5 s; a whole request (a segment's upload) within 120 s.
pub fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(120))
}

/// Where the ledgers of a data directory (or segments tree) live.
pub fn ledger_dir(dir: &Path, root: &Path) -> PathBuf {
    if root != dir {
        dir.join(SHIPPED_DIR)
    } else {
        root.join(TREE_SHIPPED_DIR)
    }
}

/// FNV-1a, 64 bits: a stable short name for a URL (no dependency for one hash).
fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The ledger file of `url` in `ledger_dir`: the URL made file-name safe, plus a hash of it.
pub fn ledger_path(ledger_dir: &Path, url: &LakeUrl) -> PathBuf {
    let text = url.to_string();
    let safe: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    ledger_dir.join(format!("{safe}-{:016x}.{LEDGER_EXT}", fnv64(&text)))
}

/// The path of a segment relative to the segments root, `/`-separated (its key below the
/// lake prefix).
pub fn relative_key(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

/// The object key of a segment: the lake prefix, then its relative path, verbatim (the
/// `host=` component keeps its own escaping; object_store would escape `%` again).
pub fn object_key(url: &LakeUrl, rel: &str) -> Result<ObjectPath, String> {
    let prefix = url.prefix().as_ref();
    let full = if prefix.is_empty() {
        rel.to_string()
    } else {
        format!("{prefix}/{rel}")
    };
    ObjectPath::parse(&full).map_err(|e| format!("{full:?} is no valid object key: {e}"))
}

/// Field of a ledger line naming the lake objects a compacted segment replaces.
const COVERS_FIELD: &str = "covers=";
/// Prefix of the ledger line saying a compacted segment's covered objects are deleted.
const REMOVED_LINE: &str = "#removed\t";
/// Separator of the names in [`COVERS_FIELD`] (segment file names never contain it).
const COVERS_SEP: char = '/';

/// What one ledger line says: a segment (relative path) confirmed in the lake with this size.
fn parse_line(line: &str) -> Option<(String, u64)> {
    if line.starts_with('#') {
        return None;
    }
    let mut f = line.split('\t');
    let rel = f.next().filter(|r| !r.is_empty())?;
    let bytes = f.next()?.parse().ok()?;
    Some((rel.to_string(), bytes))
}

/// The complete lines of a ledger's text: a last line without its newline (torn by a crash)
/// is not one.
fn complete_lines(text: &str) -> std::str::Lines<'_> {
    match text.rfind('\n') {
        Some(i) => text[..=i].lines(),
        None => "".lines(),
    }
}

/// The entries of a ledger's text.
fn parse_ledger(text: &str) -> HashMap<String, u64> {
    complete_lines(text).filter_map(parse_line).collect()
}

/// The compacted segments (relative path → covered file names) whose covered lake objects are
/// not yet known deleted.
fn parse_cleanups(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for line in complete_lines(text) {
        if let Some(rel) = line.strip_prefix(REMOVED_LINE) {
            out.remove(rel);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let mut f = line.split('\t');
        let Some(rel) = f.next() else { continue };
        if let Some(names) = f.find_map(|x| x.strip_prefix(COVERS_FIELD)) {
            let names: Vec<String> = names
                .split(COVERS_SEP)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect();
            if !names.is_empty() {
                out.insert(rel.to_string(), names);
            }
        }
    }
    out
}

/// Whether `name` can be a covered file name (a plain `.parquet` file name, nothing that
/// could reach outside its partition or break a ledger line).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.ends_with(".parquet")
        && !name.contains(['/', '\\', '\t', '\n', '\r', COVERS_SEP])
}

/// The file names a segment's footer says it covers (`dnsledger.compacted_from`), without its
/// own name; empty for a segment that is not compacted (or whose footer cannot be read: it
/// is shipped as it is, and covers nothing).
pub fn covered_names(path: &Path) -> Vec<String> {
    let own = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let md = File::open(path).map_err(|e| e.to_string()).and_then(|f| {
        ParquetMetaDataReader::new()
            .parse_and_finish(&f)
            .map_err(|e| e.to_string())
    });
    let md = match md {
        Ok(m) => m,
        Err(e) => {
            debug!("cannot read the footer of {}: {e}", path.display());
            return Vec::new();
        }
    };
    let Some(kvs) = md.file_metadata().key_value_metadata() else {
        return Vec::new();
    };
    kvs.iter()
        .filter(|kv| kv.key == meta::COMPACTED_FROM)
        .filter_map(|kv| kv.value.as_deref())
        .flat_map(compaction::decode_inputs)
        .filter(|n| *n != own && is_plain_name(n))
        .map(str::to_string)
        .collect()
}

/// Reads a ledger without locking it (for prune and status): what it says was shipped.
/// A missing ledger has no entries.
pub fn read_ledger(path: &Path) -> std::io::Result<HashMap<String, u64>> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(parse_ledger(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(e),
    }
}

/// The URL a ledger belongs to (from its header line).
pub fn ledger_url(path: &Path) -> Option<String> {
    let mut first = String::new();
    File::open(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut first)
        .ok()?;
    first
        .lines()
        .next()?
        .strip_prefix(LEDGER_HEADER)?
        .trim()
        .strip_prefix("to ")
        .map(str::to_string)
}

/// Every ledger in a ledger directory.
pub fn ledgers_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == LEDGER_EXT))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// An open, locked ledger that this process appends to.
pub struct Ledger {
    path: PathBuf,
    file: File,
    entries: HashMap<String, u64>,
    /// Compacted segments confirmed in the lake whose covered objects may still be there.
    cleanups: BTreeMap<String, Vec<String>>,
}

impl Ledger {
    /// Opens (creating it) and locks the ledger of `url`; `None` when `wait` is false and
    /// another shipper holds it. A torn last line is cut off.
    pub fn open(path: &Path, url: &LakeUrl, wait: bool) -> Result<Option<Ledger>, ShipError> {
        let err = |source| ShipError::Ledger {
            path: path.to_path_buf(),
            source,
        };
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(err)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(err)?;
        give_to_data_dir_owner(path);
        if !super::fs::lock_exclusive(&file, wait).map_err(err)? {
            return Ok(None);
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(err)?;
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            warn!(
                ledger = %path.display(),
                bytes = text.len() - complete,
                "cutting off the torn last line of the ship ledger (a crash mid-write)"
            );
            file.set_len(complete as u64).map_err(err)?;
            file.seek(SeekFrom::End(0)).map_err(err)?;
        }
        let text = &text[..complete];
        let mut l = Ledger {
            path: path.to_path_buf(),
            file,
            entries: parse_ledger(text),
            cleanups: parse_cleanups(text),
        };
        if complete == 0 {
            l.append(&format!("{LEDGER_HEADER} to {url}\n"))?;
            if let Some(dir) = path.parent() {
                super::fs::sync_dir(dir).map_err(err)?;
            }
        }
        Ok(Some(l))
    }

    fn append(&mut self, line: &str) -> Result<(), ShipError> {
        let err = |source| ShipError::Ledger {
            path: self.path.clone(),
            source,
        };
        // One write per line (O_APPEND), then fsync: a confirmed line survives a crash.
        self.file.write_all(line.as_bytes()).map_err(err)?;
        self.file.sync_data().map_err(err)
    }

    /// Records a segment as confirmed in the lake.
    pub fn record(&mut self, rel: &str, bytes: u64) -> Result<(), ShipError> {
        self.record_covering(rel, bytes, &[])
    }

    /// Records a segment as confirmed in the lake; a compacted segment also names the files
    /// of its partition it covers (`compacted_from`), whose lake objects are then to be
    /// deleted ([`Ledger::record_removed`] once they are).
    pub fn record_covering(
        &mut self,
        rel: &str,
        bytes: u64,
        covers: &[String],
    ) -> Result<(), ShipError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let names: Vec<&str> = covers
            .iter()
            .map(String::as_str)
            .filter(|n| is_plain_name(n))
            .collect();
        if names.is_empty() {
            self.append(&format!("{rel}\t{bytes}\t{now}\n"))?;
        } else {
            let joined = names.join(&COVERS_SEP.to_string());
            self.append(&format!("{rel}\t{bytes}\t{now}\t{COVERS_FIELD}{joined}\n"))?;
            self.cleanups.insert(
                rel.to_string(),
                names.iter().map(|n| n.to_string()).collect(),
            );
        }
        self.entries.insert(rel.to_string(), bytes);
        Ok(())
    }

    /// Records that the lake objects covered by the compacted segment `rel` are deleted.
    pub fn record_removed(&mut self, rel: &str) -> Result<(), ShipError> {
        self.append(&format!("{REMOVED_LINE}{rel}\n"))?;
        self.cleanups.remove(rel);
        Ok(())
    }

    /// Compacted segments (relative path → covered names) whose covered objects are not yet
    /// known deleted from the lake.
    pub fn cleanups(&self) -> &BTreeMap<String, Vec<String>> {
        &self.cleanups
    }

    /// Whether the segment `rel` of this size is confirmed shipped.
    pub fn has(&self, rel: &str, bytes: u64) -> bool {
        self.entries.get(rel) == Some(&bytes)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A ledger made by root (`dnsledger ship` from a timer) goes to the owner of the data
/// directory, so a recorder running as its own user (`record --user`) can append to it too.
fn give_to_data_dir_owner(ledger: &Path) {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let Some(ldir) = ledger.parent() else { return };
    let Some(owner) = ldir.parent().and_then(|d| fs::metadata(d).ok()) else {
        return;
    };
    for p in [ldir, ledger] {
        let differs =
            fs::metadata(p).is_ok_and(|m| (m.uid(), m.gid()) != (owner.uid(), owner.gid()));
        if differs && let Err(e) = std::os::unix::fs::chown(p, Some(owner.uid()), Some(owner.gid()))
        {
            debug!("cannot give {} to uid {}: {e}", p.display(), owner.uid());
        }
    }
}

/// Segments are shipped iff a ledger says so: which segments `prune` (and the recorder's
/// retention) must keep.
#[derive(Clone, Debug, Default)]
pub enum ShipGuard {
    /// Shipping is not configured and no ledger exists, or `--prune-unshipped`: delete freely.
    #[default]
    Off,
    /// Keep segments not in this destination's ledger (`ship-to` is set).
    To(LakeUrl),
    /// No destination configured: keep segments missing from any ledger present.
    Ledgers,
}

/// The relative paths (with sizes) a guard counts as shipped; `None`: no guard applies.
pub fn shipped_set(
    guard: &ShipGuard,
    dir: &Path,
    root: &Path,
) -> std::io::Result<Option<HashMap<String, u64>>> {
    let ldir = ledger_dir(dir, root);
    let paths = match guard {
        ShipGuard::Off => return Ok(None),
        ShipGuard::To(url) => vec![ledger_path(&ldir, url)],
        ShipGuard::Ledgers => {
            let v = ledgers_in(&ldir);
            if v.is_empty() {
                return Ok(None);
            }
            v
        }
    };
    // A segment is shipped when every ledger has it.
    let mut set: Option<HashMap<String, u64>> = None;
    for p in paths {
        let l = read_ledger(&p)?;
        set = Some(match set {
            None => l,
            Some(s) => s.into_iter().filter(|(k, v)| l.get(k) == Some(v)).collect(),
        });
    }
    Ok(set)
}

/// Options of one shipping pass.
#[derive(Clone, Debug)]
pub struct ShipOptions {
    /// A data directory (with `segments/`) or a segments tree.
    pub dir: PathBuf,
    pub url: LakeUrl,
    /// Say what would be shipped; upload nothing, write no ledger.
    pub dry_run: bool,
    /// List the destination first and re-ship what the ledger has but the lake lacks.
    pub verify: bool,
    /// Wait for another shipper of the same destination (else skip this pass).
    pub wait_lock: bool,
    /// Attempts per file (≥ 1).
    pub attempts: u32,
}

/// A file that could not be shipped this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipFailure {
    pub path: PathBuf,
    pub url: String,
    pub reason: String,
}

/// What one pass did.
#[derive(Clone, Debug, Default)]
pub struct ShipReport {
    /// Uploaded now (with dry_run: would be).
    pub shipped: Vec<(PathBuf, String)>,
    /// Found in the lake with identical bytes (uploaded before the ledger knew).
    pub already: usize,
    pub failed: Vec<ShipFailure>,
    /// Left for a later pass (after a destination error, or stopped).
    pub pending: usize,
    /// Bytes uploaded now.
    pub bytes: u64,
    /// Sealed segments the ledger has (after this pass).
    pub in_ledger: usize,
    /// The destination itself failed (unreachable, no bucket, refused): the error and a hint.
    pub fatal: Option<String>,
    /// Modification time (seal time) of the oldest segment still not shipped.
    pub oldest_unshipped: Option<SystemTime>,
    /// Another shipper held the ledger: nothing was done.
    pub skipped_locked: bool,
    /// Lake objects deleted because a compacted segment confirmed there covers them.
    pub removed: Vec<String>,
    /// Compacted segments in the lake whose covered objects may still be there after this
    /// pass (a failed or skipped cleanup; the next pass retries).
    pub cleanup_pending: usize,
    /// Why a cleanup failed (one line per compacted segment).
    pub cleanup_errors: Vec<String>,
}

impl ShipReport {
    /// The one-line summary `ship` prints.
    pub fn summary(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would ship" } else { "shipped" };
        let mut s = format!(
            "{verb} {}, already there {}, failed {}, pending {}, {} bytes",
            self.shipped.len(),
            self.already,
            self.failed.len(),
            self.pending,
            self.bytes
        );
        if !self.removed.is_empty() || self.cleanup_pending > 0 {
            s.push_str(&format!(
                "; removed {} object(s) covered by compacted segments, {} cleanup(s) pending",
                self.removed.len(),
                self.cleanup_pending
            ));
        }
        s
    }

    /// Segments not shipped after this pass.
    pub fn unshipped(&self) -> usize {
        self.failed.len() + self.pending
    }
}

/// The state a pass leaves beside the ledger for `dnsledger status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShipState {
    pub url: String,
    pub finished_unix: u64,
    pub shipped: u64,
    pub already: u64,
    pub failed: u64,
    pub pending: u64,
    pub bytes: u64,
    pub error: Option<String>,
}

/// `<ledger>.state.json`.
pub fn state_path(ledger: &Path) -> PathBuf {
    ledger.with_extension("state.json")
}

fn write_state(ledger: &Path, st: &ShipState) {
    let path = state_path(ledger);
    let tmp = path.with_extension("json.tmp");
    let r = serde_json::to_string_pretty(st)
        .map_err(std::io::Error::other)
        .and_then(|t| fs::write(&tmp, t))
        .and_then(|()| fs::rename(&tmp, &path))
        .map(|()| give_to_data_dir_owner(&path));
    if let Err(e) = r {
        debug!("cannot write {}: {e}", path.display());
    }
}

/// Totals a long-running shipper shares with the recorder's status and metrics.
#[derive(Debug, Default)]
pub struct ShipCounters {
    pub shipped: AtomicU64,
    pub already: AtomicU64,
    pub failed: AtomicU64,
    pub bytes: AtomicU64,
    /// Sealed segments not yet in the lake, after the last pass.
    pub pending: AtomicU64,
    /// Unix seconds of the oldest of those (0: none).
    pub oldest_pending_unix: AtomicU64,
    /// Lake objects deleted because a compacted segment covers them.
    pub removed: AtomicU64,
    /// Compacted segments whose covered lake objects are still to be deleted.
    pub cleanup_pending: AtomicU64,
}

impl ShipCounters {
    fn add(&self, r: &ShipReport) {
        self.shipped
            .fetch_add(r.shipped.len() as u64, Ordering::Relaxed);
        self.already.fetch_add(r.already as u64, Ordering::Relaxed);
        self.failed
            .fetch_add(r.failed.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(r.bytes, Ordering::Relaxed);
        self.removed
            .fetch_add(r.removed.len() as u64, Ordering::Relaxed);
        if !r.skipped_locked {
            self.cleanup_pending
                .store(r.cleanup_pending as u64, Ordering::Relaxed);
            self.pending.store(r.unshipped() as u64, Ordering::Relaxed);
            self.oldest_pending_unix
                .store(r.oldest_unshipped.map_or(0, unix_secs), Ordering::Relaxed);
        }
    }

    /// Seconds since the oldest unshipped segment was sealed (0: none pending).
    pub fn lag_seconds(&self, now_unix: u64) -> u64 {
        match self.oldest_pending_unix.load(Ordering::Relaxed) {
            0 => 0,
            t => now_unix.saturating_sub(t),
        }
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why the destination (not one file) cannot take uploads, with what the user can do.
fn destination_problem(e: &object_store::Error) -> Option<&'static str> {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => {
            Some("hint: the bucket or container does not exist: create it, or fix the URL")
        }
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => Some(
            "hint: check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the instance role, \
             GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*) and that they may PutObject and GetObject",
        ),
        E::NotImplemented { .. } | E::NotSupported { .. } => {
            Some("hint: the store must support create-only uploads (If-None-Match: *)")
        }
        _ => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
            while let Some(s) = source {
                if let Some(h) = s.downcast_ref::<object_store::client::HttpError>()
                    && h.kind() == object_store::client::HttpErrorKind::Connect
                {
                    return Some(
                        "hint: the endpoint is unreachable: check the URL, AWS_ENDPOINT_URL (or the \
                         cloud's endpoint), DNS and the network path",
                    );
                }
                source = s.source();
            }
            None
        }
    }
}

/// The full text of an error and its causes, on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

/// The outcome of one file.
enum Outcome {
    Shipped(u64),
    Already,
    /// Vanished locally meanwhile (pruned): nothing to do.
    Gone,
    Failed(String),
    Fatal(String),
}

/// A destination opened for shipping.
pub struct Shipper {
    url: LakeUrl,
    store: Arc<dyn ObjectStore>,
}

impl Shipper {
    pub fn open(url: &LakeUrl) -> Result<Shipper, ShipError> {
        let store = url.open_with(retry_config(), client_options())?;
        Ok(Shipper {
            url: url.clone(),
            store,
        })
    }

    pub fn url(&self) -> &LakeUrl {
        &self.url
    }

    /// One pass over the sealed segments: everything not confirmed in the ledger is uploaded
    /// (create-only), oldest first. `stop` ends it between files (the rest stays pending).
    pub async fn pass(
        &self,
        opts: &ShipOptions,
        stop: &AtomicBool,
    ) -> Result<ShipReport, ShipError> {
        let root = segments_root(&opts.dir)?;
        let lpath = ledger_path(&ledger_dir(&opts.dir, &root), &self.url);
        let mut report = ShipReport::default();
        let mut ledger = if opts.dry_run {
            None
        } else {
            match Ledger::open(&lpath, &self.url, false)? {
                Some(l) => Some(l),
                None if opts.wait_lock => {
                    info!(
                        ledger = %lpath.display(),
                        "another shipper (a recorder with --ship-to?) is shipping to {}; waiting for it",
                        self.url
                    );
                    Ledger::open(&lpath, &self.url, true)?
                }
                None => {
                    report.skipped_locked = true;
                    return Ok(report);
                }
            }
        };
        let confirmed = match &ledger {
            Some(l) => l.entries.clone(),
            None => read_ledger(&lpath).map_err(|source| ShipError::Ledger {
                path: lpath.clone(),
                source,
            })?,
        };
        let in_lake = if opts.verify {
            Some(self.list_lake().await?)
        } else {
            None
        };
        let segments = list_segments(&root)?;
        let mut todo: Vec<(SegmentFile, String, ObjectPath)> = Vec::new();
        for s in segments {
            let Some(rel) = relative_key(&root, &s.path) else {
                continue;
            };
            let key = match object_key(&self.url, &rel) {
                Ok(k) => k,
                Err(reason) => {
                    report.failed.push(ShipFailure {
                        path: s.path.clone(),
                        url: format!("{}/{rel}", self.url),
                        reason,
                    });
                    continue;
                }
            };
            let shipped = confirmed.get(&rel) == Some(&s.bytes);
            let missing_in_lake = in_lake
                .as_ref()
                .is_some_and(|l| l.get(key.as_ref()) != Some(&s.bytes));
            if shipped && !missing_in_lake {
                report.in_ledger += 1;
                continue;
            }
            if shipped {
                warn!(
                    segment = %s.path.display(),
                    url = %self.url.url_of(&key),
                    "the ledger says shipped but the lake lacks it (or holds another size): shipping again"
                );
            }
            todo.push((s, rel, key));
        }
        let mut oldest: Option<SystemTime> = None;
        let mut note_unshipped = |path: &Path| {
            if let Ok(m) = fs::metadata(path).and_then(|m| m.modified()) {
                oldest = Some(oldest.map_or(m, |o| o.min(m)));
            }
        };
        for (seg, rel, key) in todo {
            let url = self.url.url_of(&key);
            if opts.dry_run {
                report.bytes += seg.bytes;
                report.shipped.push((seg.path.clone(), url));
                note_unshipped(&seg.path);
                continue;
            }
            if report.fatal.is_some() || stop.load(Ordering::Relaxed) {
                report.pending += 1;
                note_unshipped(&seg.path);
                continue;
            }
            let covers = covered_names(&seg.path);
            let outcome = self.ship_one(&seg.path, &key, opts.attempts, stop).await;
            if !covers.is_empty() && matches!(outcome, Outcome::Shipped(_) | Outcome::Already) {
                failpoint("after-compacted-put");
            }
            match outcome {
                Outcome::Shipped(bytes) => {
                    if let Some(l) = &mut ledger {
                        l.record_covering(&rel, bytes, &covers)?;
                    }
                    debug!(segment = %seg.path.display(), %url, bytes, "shipped");
                    report.bytes += bytes;
                    report.in_ledger += 1;
                    report.shipped.push((seg.path.clone(), url));
                    if let Some(l) = &mut ledger {
                        self.clean_up(l, &rel, &mut report).await?;
                    }
                }
                Outcome::Already => {
                    if let Some(l) = &mut ledger {
                        l.record_covering(&rel, seg.bytes, &covers)?;
                    }
                    debug!(segment = %seg.path.display(), %url, "already in the lake, identical");
                    report.already += 1;
                    report.in_ledger += 1;
                    if let Some(l) = &mut ledger {
                        self.clean_up(l, &rel, &mut report).await?;
                    }
                }
                Outcome::Gone => {}
                Outcome::Failed(reason) => {
                    note_unshipped(&seg.path);
                    report.failed.push(ShipFailure {
                        path: seg.path.clone(),
                        url,
                        reason,
                    });
                }
                Outcome::Fatal(reason) => {
                    note_unshipped(&seg.path);
                    report.pending += 1;
                    report.fatal = Some(reason);
                }
            }
        }
        report.oldest_unshipped = oldest;
        // Cleanups left by an earlier pass (killed between a compacted upload and its deletes,
        // or a delete that failed).
        if let Some(l) = &mut ledger {
            let left: Vec<String> = l.cleanups().keys().cloned().collect();
            for rel in left {
                if report.fatal.is_some() || stop.load(Ordering::Relaxed) {
                    break;
                }
                self.clean_up(l, &rel, &mut report).await?;
            }
            report.cleanup_pending = l.cleanups().len();
        }
        if !opts.dry_run {
            write_state(
                &lpath,
                &ShipState {
                    url: self.url.to_string(),
                    finished_unix: unix_secs(SystemTime::now()),
                    shipped: report.shipped.len() as u64,
                    already: report.already as u64,
                    failed: report.failed.len() as u64,
                    pending: report.pending as u64,
                    bytes: report.bytes,
                    error: report.fatal.clone(),
                },
            );
        }
        Ok(report)
    }

    /// Deletes the lake objects that the compacted segment `rel` (confirmed in the ledger)
    /// covers, after checking in one listing of its partition that it is in the lake with the
    /// size the ledger has; then records the cleanup as done. A failure is reported and left
    /// for the next pass.
    async fn clean_up(
        &self,
        ledger: &mut Ledger,
        rel: &str,
        report: &mut ShipReport,
    ) -> Result<(), ShipError> {
        let Some(names) = ledger.cleanups().get(rel).cloned() else {
            return Ok(());
        };
        failpoint("before-remove");
        match self
            .remove_covered(rel, ledger.entries.get(rel).copied(), &names)
            .await
        {
            Ok(removed) => {
                for url in &removed {
                    debug!(%url, compacted = rel, "removed an object covered by a compacted segment");
                }
                report.removed.extend(removed);
                ledger.record_removed(rel)?;
            }
            Err(reason) => {
                warn!(compacted = rel, to = %self.url, "{reason}");
                report.cleanup_errors.push(reason);
            }
        }
        Ok(())
    }

    /// The deletes of [`Shipper::clean_up`]: the URLs of the objects deleted, or why none was.
    async fn remove_covered(
        &self,
        rel: &str,
        bytes: Option<u64>,
        names: &[String],
    ) -> Result<Vec<String>, String> {
        let key = object_key(&self.url, rel)?;
        let url = self.url.url_of(&key);
        let Some((dir, _)) = rel.rsplit_once('/') else {
            return Err(format!("{rel} is not below a partition directory"));
        };
        let dir_key = object_key(&self.url, dir)?;
        let mut listed = HashMap::new();
        let mut stream = self.store.list(Some(&dir_key));
        while let Some(item) = stream.next().await {
            let meta = item.map_err(|e| {
                format!(
                    "cannot list {} to remove what the compacted segment {url} replaces: {}\n\
                     hint: shipping compacted segments needs s3:ListBucket and s3:DeleteObject \
                     (or the store's equivalents); other engines read the replaced objects twice \
                     until then",
                    self.url.url_of(&dir_key),
                    error_chain(&e)
                )
            })?;
            listed.insert(meta.location.as_ref().to_string(), meta.size);
        }
        // Never delete what a compacted segment covers unless that segment is in the lake.
        if bytes.is_none() || listed.get(key.as_ref()) != bytes.as_ref() {
            return Err(format!(
                "the compacted segment {url} is not in the lake (or has another size): \
                 the objects it covers are kept\nhint: `dnsledger ship --verify` uploads it again"
            ));
        }
        let mut removed = Vec::new();
        for name in names {
            let k = object_key(&self.url, &format!("{dir}/{name}"))?;
            if !listed.contains_key(k.as_ref()) {
                continue;
            }
            match self.store.delete(&k).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    removed.push(self.url.url_of(&k));
                }
                Err(e) => {
                    return Err(format!(
                        "cannot delete {}, which the compacted segment {url} replaces: {}\n\
                         hint: shipping compacted segments needs s3:DeleteObject (or the store's \
                         equivalent); other engines read it twice until it is deleted",
                        self.url.url_of(&k),
                        error_chain(&e)
                    ));
                }
            }
        }
        Ok(removed)
    }

    /// Every object below the prefix, with its size.
    async fn list_lake(&self) -> Result<HashMap<String, u64>, ShipError> {
        let prefix = self.url.prefix();
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        let mut stream = self.store.list(prefix);
        let mut out = HashMap::new();
        while let Some(item) = stream.next().await {
            let meta = item.map_err(|source| ShipError::List {
                url: self.url.to_string(),
                source,
            })?;
            out.insert(meta.location.as_ref().to_string(), meta.size);
        }
        Ok(out)
    }

    async fn ship_one(
        &self,
        path: &Path,
        key: &ObjectPath,
        attempts: u32,
        stop: &AtomicBool,
    ) -> Outcome {
        let url = self.url.url_of(key);
        let data = match fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Outcome::Gone,
            Err(e) => return Outcome::Failed(format!("cannot read {}: {e}", path.display())),
        };
        let len = data.len() as u64;
        let payload = PutPayload::from(data);
        let mut pause = ATTEMPT_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=attempts.max(1) {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            match self.store.put_opts(key, payload.clone(), opts).await {
                Ok(_) => return Outcome::Shipped(len),
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => {
                    return self.compare(path, key, &payload).await;
                }
                Err(e) => {
                    if let Some(hint) = destination_problem(&e) {
                        return Outcome::Fatal(format!(
                            "cannot ship to {}: {}\n{hint}",
                            self.url,
                            error_chain(&e)
                        ));
                    }
                    last = error_chain(&e);
                    warn!(%url, attempt, attempts, "upload failed: {last}");
                }
            }
            if attempt < attempts && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        Outcome::Failed(format!("upload to {url} failed {attempts} times: {last}"))
    }

    /// The key exists: identical bytes → already shipped; anything else → a conflict that is
    /// never overwritten.
    async fn compare(&self, path: &Path, key: &ObjectPath, local: &PutPayload) -> Outcome {
        let url = self.url.url_of(key);
        let local_len = local.content_length() as u64;
        let got = match self.store.get(key).await {
            Ok(g) => g,
            Err(e) => {
                return Outcome::Failed(format!(
                    "{url} exists but cannot be read back to compare: {}",
                    error_chain(&e)
                ));
            }
        };
        let remote_len = got.meta.size;
        let same = if remote_len != local_len {
            false
        } else {
            match got.bytes().await {
                Ok(remote) => {
                    let mut off = 0usize;
                    let mut eq = true;
                    for chunk in local.iter() {
                        let end = off + chunk.len();
                        if remote.get(off..end) != Some(&chunk[..]) {
                            eq = false;
                            break;
                        }
                        off = end;
                    }
                    eq && off == remote.len()
                }
                Err(e) => {
                    return Outcome::Failed(format!(
                        "{url} exists but cannot be read back to compare: {}",
                        error_chain(&e)
                    ));
                }
            }
        };
        if same {
            Outcome::Already
        } else {
            let reason = format!(
                "CONFLICT: {url} already holds different bytes ({remote_len} bytes) than {} \
                 ({local_len} bytes); not overwritten\nhint: find out who wrote that object; \
                 two hosts with the same name ship to the same keys",
                path.display()
            );
            error!("{reason}");
            Outcome::Failed(reason)
        }
    }
}

/// Test hook: `DNSLEDGER_FAILPOINT=ship:after-compacted-put` aborts right after a compacted
/// segment is confirmed in the lake (before its ledger line), `ship:before-remove` after its
/// ledger line, before the covered objects are deleted.
fn failpoint(step: &str) {
    if std::env::var(super::compact::FAILPOINT_ENV)
        .is_ok_and(|v| v.strip_prefix("ship:") == Some(step))
    {
        eprintln!(
            "{}: aborting at shipping step {step}",
            super::compact::FAILPOINT_ENV
        );
        std::process::abort();
    }
}

/// A current-thread runtime for the synchronous callers.
pub fn runtime() -> Result<tokio::runtime::Runtime, ShipError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ShipError::Runtime)
}

/// One `dnsledger ship` run.
pub fn ship(opts: &ShipOptions, stop: &AtomicBool) -> Result<ShipReport, ShipError> {
    let rt = runtime()?;
    let shipper = Shipper::open(&opts.url)?;
    rt.block_on(shipper.pass(opts, stop))
}

/// The shipping state of a data directory for `dnsledger status`: per ledger, how many sealed
/// segments are confirmed, how many are not, and the age of the oldest of those.
pub fn status_lines(dir: &Path, now_unix: u64) -> Vec<String> {
    let Ok(root) = segments_root(dir) else {
        return Vec::new();
    };
    let ldir = ledger_dir(dir, &root);
    let ledgers = ledgers_in(&ldir);
    if ledgers.is_empty() {
        return Vec::new();
    }
    let segments = list_segments(&root).unwrap_or_default();
    let mut lines = Vec::new();
    for l in ledgers {
        let text = fs::read_to_string(&l).unwrap_or_default();
        let entries = parse_ledger(&text);
        let cleanups = parse_cleanups(&text).len();
        let url = ledger_url(&l).unwrap_or_else(|| l.display().to_string());
        let mut shipped = 0usize;
        let mut pending = 0usize;
        let mut oldest: Option<SystemTime> = None;
        for s in &segments {
            let Some(rel) = relative_key(&root, &s.path) else {
                continue;
            };
            if entries.get(&rel) == Some(&s.bytes) {
                shipped += 1;
            } else {
                pending += 1;
                if let Ok(m) = fs::metadata(&s.path).and_then(|m| m.modified()) {
                    oldest = Some(oldest.map_or(m, |o| o.min(m)));
                }
            }
        }
        let lag = oldest.map_or(0, |t| now_unix.saturating_sub(unix_secs(t)));
        let st: Option<ShipState> = fs::read_to_string(state_path(&l))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let last = match &st {
            Some(s) => format!(
                "; last pass {} s ago: shipped {}, already there {}, failed {}, pending {}{}",
                now_unix.saturating_sub(s.finished_unix),
                s.shipped,
                s.already,
                s.failed,
                s.pending,
                s.error
                    .as_deref()
                    .map(|e| format!(", error: {}", e.lines().next().unwrap_or(e)))
                    .unwrap_or_default()
            ),
            None => String::new(),
        };
        let cleanup = if cleanups > 0 {
            format!(
                ", {cleanups} compacted segment(s) whose replaced lake objects are not deleted yet"
            )
        } else {
            String::new()
        };
        lines.push(format!(
            "shipping to {url}: shipped {shipped}, pending {pending}, lag {lag} s (ledger: {} entries){cleanup}{last}",
            entries.len()
        ));
    }
    lines
}

/// Runs shipping passes in the background of `record --ship-to`: after each seal (a poke on
/// [`ShipperHandle::poke`]) and every [`RETRY_EVERY`] while anything is pending. Never blocks
/// the caller.
pub struct ShipperHandle {
    poke: std::sync::mpsc::SyncSender<()>,
    abort: Arc<AtomicBool>,
    done: std::sync::mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub counters: Arc<ShipCounters>,
    url: LakeUrl,
}

/// How often the background shipper retries while something is pending (and looks for
/// segments sealed by others, e.g. a recovery at start).
pub const RETRY_EVERY: Duration = Duration::from_secs(30);

impl ShipperHandle {
    /// Starts the background shipper of `dir` to `url` (a first pass ships the backlog).
    pub fn start(dir: &Path, url: &LakeUrl) -> Result<ShipperHandle, ShipError> {
        let shipper = Shipper::open(url)?;
        let (poke_tx, poke_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let abort = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(ShipCounters::default());
        let opts = ShipOptions {
            dir: dir.to_path_buf(),
            url: url.clone(),
            dry_run: false,
            verify: false,
            wait_lock: false,
            attempts: ATTEMPTS,
        };
        let thread = {
            let abort = Arc::clone(&abort);
            let counters = Arc::clone(&counters);
            std::thread::Builder::new()
                .name("dnsledger-ship".into())
                .spawn(move || {
                    background(shipper, opts, poke_rx, &abort, &counters);
                    let _ = done_tx.send(());
                })
                .map_err(ShipError::Runtime)?
        };
        info!(to = %url, "shipping sealed segments in the background");
        Ok(ShipperHandle {
            poke: poke_tx,
            abort,
            done: done_rx,
            thread: Some(thread),
            counters,
            url: url.clone(),
        })
    }

    /// Asks for a pass soon (a segment was sealed). Never blocks.
    pub fn poke(&self) {
        let _ = self.poke.try_send(());
    }

    /// Ships what is left (one last pass), waiting at most `wait`; then gives up on an
    /// unreachable endpoint and says what stayed pending. Returns the segments left unshipped.
    pub fn finish(mut self, wait: Duration) -> u64 {
        // Closing the channel asks for the last pass.
        let (dead_tx, _) = std::sync::mpsc::sync_channel(1);
        drop(std::mem::replace(&mut self.poke, dead_tx));
        let finished = self.done.recv_timeout(wait).is_ok();
        if !finished {
            self.abort.store(true, Ordering::Relaxed);
            // The pass is dropped at its next await point (within ~100 ms).
            let _ = self.done.recv_timeout(Duration::from_secs(5));
        }
        if let Some(t) = self.thread.take()
            && t.is_finished()
        {
            let _ = t.join();
        }
        let pending = self.counters.pending.load(Ordering::Relaxed);
        if !finished {
            warn!(
                to = %self.url,
                waited = ?wait,
                pending,
                "shipping did not finish in time; pending segments are shipped by `dnsledger ship` or the next start"
            );
        } else if pending > 0 {
            warn!(
                to = %self.url,
                pending,
                "segments stayed unshipped; `dnsledger ship` or the next start ships them"
            );
        } else {
            info!(to = %self.url, "every sealed segment is shipped");
        }
        pending
    }
}

/// The background shipper's loop: a pass at start, then one per poke or every
/// [`RETRY_EVERY`] while something is pending, and a last one when the handle closes.
fn background(
    shipper: Shipper,
    opts: ShipOptions,
    poke: std::sync::mpsc::Receiver<()>,
    abort: &AtomicBool,
    counters: &ShipCounters,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            error!("shipping disabled: {e}");
            return;
        }
    };
    let mut last_error: Option<String> = None;
    let mut closing = false;
    loop {
        let r = rt.block_on(async {
            tokio::select! {
                r = shipper.pass(&opts, abort) => Some(r),
                () = wait_flag(abort) => None,
            }
        });
        match r {
            None => return,
            Some(Ok(rep)) => {
                counters.add(&rep);
                if !rep.shipped.is_empty() || rep.already > 0 {
                    info!(
                        to = %shipper.url(),
                        shipped = rep.shipped.len(),
                        already = rep.already,
                        bytes = rep.bytes,
                        pending = rep.unshipped(),
                        "shipped"
                    );
                }
                for f in &rep.failed {
                    warn!(segment = %f.path.display(), url = %f.url, "not shipped: {}", f.reason);
                }
                if !rep.removed.is_empty() {
                    info!(
                        to = %shipper.url(),
                        removed = rep.removed.len(),
                        "removed lake objects replaced by compacted segments"
                    );
                }
                match (&rep.fatal, &last_error) {
                    (Some(e), prev) if prev.as_ref() != Some(e) => {
                        error!("{e}; retrying every {RETRY_EVERY:?}");
                        last_error = Some(e.clone());
                    }
                    (None, Some(_)) => {
                        info!(to = %shipper.url(), "the destination takes uploads again");
                        last_error = None;
                    }
                    _ => {}
                }
            }
            Some(Err(e)) => {
                let text = e.to_string();
                if last_error.as_ref() != Some(&text) {
                    error!("shipping: {text}");
                    last_error = Some(text);
                }
            }
        }
        if closing || abort.load(Ordering::Relaxed) {
            return;
        }
        let pending = counters.pending.load(Ordering::Relaxed) > 0
            || counters.cleanup_pending.load(Ordering::Relaxed) > 0;
        let wait = if pending {
            RETRY_EVERY
        } else {
            RETRY_EVERY * 4
        };
        match poke.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => closing = true,
        }
    }
}

/// Resolves once `flag` is set (polled every 100 ms).
async fn wait_flag(flag: &AtomicBool) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The relative paths of `segments` that `set` does not have: what a guard keeps.
pub fn unshipped<'a>(
    segments: impl IntoIterator<Item = &'a SegmentFile>,
    root: &Path,
    set: &HashMap<String, u64>,
) -> HashSet<PathBuf> {
    segments
        .into_iter()
        .filter(|s| relative_key(root, &s.path).is_none_or(|rel| set.get(&rel) != Some(&s.bytes)))
        .map(|s| s.path.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> LakeUrl {
        s.parse().expect("url")
    }

    #[test]
    fn ledger_survives_a_torn_line_and_reopens() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let u = url("s3://b/p");
        let path = ledger_path(&tmp.path().join(SHIPPED_DIR), &u);
        assert!(path.to_string_lossy().contains("s3___b_p-"), "{path:?}");
        {
            let mut l = Ledger::open(&path, &u, true).expect("open").expect("lock");
            l.record("host=a/date=2026-12-04/hour=01/x.parquet", 10)
                .expect("record");
            // A second opener does not wait while it is held.
            assert!(Ledger::open(&path, &u, false).expect("open").is_none());
        }
        // A crash mid-append leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"host=a/date=2026-12-04/hour=01/y.par")
            .expect("write");
        drop(f);
        let read = read_ledger(&path).expect("read");
        assert_eq!(read.len(), 1, "the torn line is no entry");
        let mut l = Ledger::open(&path, &u, true).expect("open").expect("lock");
        assert!(l.has("host=a/date=2026-12-04/hour=01/x.parquet", 10));
        assert!(!l.has("host=a/date=2026-12-04/hour=01/x.parquet", 11));
        l.record("host=a/date=2026-12-04/hour=01/y.parquet", 5)
            .expect("record");
        drop(l);
        let text = fs::read_to_string(&path).expect("read");
        assert!(
            !text.contains("y.par\n") && !text.contains("y.parhost"),
            "{text}"
        );
        assert_eq!(read_ledger(&path).expect("read").len(), 2);
        assert_eq!(ledger_url(&path).as_deref(), Some("s3://b/p"));
    }

    #[test]
    fn keys_keep_the_partition_layout_verbatim() {
        let u = url("s3://lake/dns/fleet/");
        let k = object_key(&u, "host=db%201/date=2026-12-04/hour=07/x.parquet").expect("key");
        assert_eq!(
            k.as_ref(),
            "dns/fleet/host=db%201/date=2026-12-04/hour=07/x.parquet"
        );
        let root = url("gs://b");
        assert_eq!(
            object_key(&root, "host=a/x.parquet").expect("key").as_ref(),
            "host=a/x.parquet"
        );
        let r = relative_key(
            Path::new("/d/segments"),
            Path::new("/d/segments/host=a/date=x/hour=01/f.parquet"),
        );
        assert_eq!(r.as_deref(), Some("host=a/date=x/hour=01/f.parquet"));
    }

    #[test]
    fn guards_use_the_destination_or_every_ledger() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("segments");
        fs::create_dir_all(&root).expect("mkdir");
        assert!(
            shipped_set(&ShipGuard::Ledgers, tmp.path(), &root)
                .expect("set")
                .is_none()
        );
        let a = url("s3://a");
        let b = url("file:///b");
        let ldir = ledger_dir(tmp.path(), &root);
        let mut la = Ledger::open(&ledger_path(&ldir, &a), &a, true)
            .expect("open")
            .expect("lock");
        la.record("x", 1).expect("record");
        la.record("y", 1).expect("record");
        let mut lb = Ledger::open(&ledger_path(&ldir, &b), &b, true)
            .expect("open")
            .expect("lock");
        lb.record("x", 1).expect("record");
        let all = shipped_set(&ShipGuard::Ledgers, tmp.path(), &root)
            .expect("set")
            .expect("guard");
        assert_eq!(all.keys().collect::<Vec<_>>(), vec!["x"]);
        let to_a = shipped_set(&ShipGuard::To(a), tmp.path(), &root)
            .expect("set")
            .expect("guard");
        assert_eq!(to_a.len(), 2);
        let to_c = shipped_set(&ShipGuard::To(url("s3://c")), tmp.path(), &root)
            .expect("set")
            .expect("guard");
        assert!(
            to_c.is_empty(),
            "a destination never shipped to has nothing shipped"
        );
        assert!(
            shipped_set(&ShipGuard::Off, tmp.path(), &root)
                .expect("set")
                .is_none()
        );
    }

    #[test]
    fn background_shipper_ships_the_backlog_and_what_is_sealed_later() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let seg = data.join("segments/host=a/date=2026-12-04/hour=02");
        fs::create_dir_all(&seg).expect("mkdir");
        fs::write(seg.join("backlog.parquet"), b"old").expect("write");
        let lake = tmp.path().join("lake");
        fs::create_dir_all(&lake).expect("mkdir");
        let u = url(&format!("file://{}", lake.display()));
        let h = ShipperHandle::start(&data, &u).expect("start");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while h.counters.shipped.load(Ordering::Relaxed) < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the backlog was not shipped"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Sealed later, then the recorder stops: the last pass ships it.
        fs::write(seg.join("new.parquet"), b"new!").expect("write");
        h.poke();
        let counters = Arc::clone(&h.counters);
        assert_eq!(h.finish(Duration::from_secs(10)), 0);
        assert_eq!(counters.shipped.load(Ordering::Relaxed), 2);
        assert_eq!(counters.bytes.load(Ordering::Relaxed), 7);
        assert_eq!(counters.lag_seconds(u64::MAX), 0);
        assert_eq!(
            fs::read(lake.join("host=a/date=2026-12-04/hour=02/new.parquet")).expect("read"),
            b"new!"
        );
    }

    /// Every file below `dir`, relative, sorted.
    fn files(dir: &Path) -> Vec<String> {
        let mut v = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).expect("dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(rel) = relative_key(dir, &p) {
                    v.push(rel);
                }
            }
        }
        v.sort();
        v
    }

    #[test]
    fn a_shipped_compacted_segment_removes_what_it_covers_from_the_lake() {
        use crate::store::compact::{CompactOptions, compact_dir};
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        // The fixture partition with three segments.
        let part = "host=host-b/date=2010-08-21/hour=02";
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/segments")
            .join(part);
        let dst = data.join("segments").join(part);
        fs::create_dir_all(&dst).expect("mkdir");
        let mut inputs = Vec::new();
        for e in fs::read_dir(&src).expect("fixture").flatten() {
            fs::copy(e.path(), dst.join(e.file_name())).expect("copy");
            inputs.push(format!("{part}/{}", e.file_name().to_string_lossy()));
        }
        inputs.sort();
        assert_eq!(inputs.len(), 3);
        let lake = tmp.path().join("lake");
        fs::create_dir_all(&lake).expect("mkdir");
        let u = url(&format!("file://{}/p", lake.display()));
        let opts = ShipOptions {
            dir: data.clone(),
            url: u.clone(),
            dry_run: false,
            verify: false,
            wait_lock: true,
            attempts: 1,
        };
        let stop = AtomicBool::new(false);
        let r = ship(&opts, &stop).expect("ship");
        assert_eq!((r.shipped.len(), r.removed.len()), (3, 0));
        assert_eq!(files(&lake.join("p")), inputs);

        let now = dnsledger_schema::partition::NS_PER_HOUR * 24 * 365 * 50;
        let c = compact_dir(
            &data,
            &CompactOptions {
                hosts: Vec::new(),
                before_ns: now,
                now_ns: now,
                dry_run: false,
            },
        )
        .expect("compact");
        let output = c.partitions[0].output.clone().expect("an output");
        let compacted = format!("{part}/{output}");
        // Beside it, the date's manifest (for readers; never shipped: the lake gets its own
        // from `dnsledger compact --lake`).
        let (date_dir, _) = part.rsplit_once('/').expect("an hour directory");
        assert_eq!(
            files(&data.join("segments")),
            vec![
                format!("{date_dir}/{}", dnsledger_lake::manifest::FILE_NAME),
                compacted.clone()
            ]
        );
        // The deleted inputs are no phantom pending segments; the compacted one is pending.
        let lines = status_lines(&data, unix_secs(SystemTime::now()));
        assert!(lines[0].contains("shipped 0, pending 1"), "{lines:?}");
        let set = shipped_set(&ShipGuard::To(u.clone()), &data, &data.join("segments"))
            .expect("set")
            .expect("guard");
        let segs = list_segments(&data.join("segments")).expect("list");
        assert_eq!(unshipped(&segs, &data.join("segments"), &set).len(), 1);

        // A foreign object in the partition is never touched.
        fs::write(lake.join("p").join(part).join("other.parquet"), b"x").expect("write");
        let r = ship(&opts, &stop).expect("ship compacted");
        assert_eq!(r.shipped.len(), 1);
        assert_eq!(r.removed.len(), 3, "{r:?}");
        assert_eq!((r.cleanup_pending, r.cleanup_errors.len()), (0, 0));
        assert_eq!(
            files(&lake.join("p")),
            vec![compacted.clone(), format!("{part}/other.parquet")]
        );
        assert_eq!(
            fs::read(lake.join("p").join(&compacted)).expect("read"),
            fs::read(data.join("segments").join(&compacted)).expect("read")
        );
        let lines = status_lines(&data, unix_secs(SystemTime::now()));
        assert!(
            lines[0].contains("shipped 1, pending 0") && !lines[0].contains("not deleted"),
            "{lines:?}"
        );

        // A cleanup left pending (a crash before the deletes) is finished by the next pass,
        // but never while the compacted segment is missing from the lake.
        let lpath = ledger_path(&ledger_dir(&data, &data.join("segments")), &u);
        let bytes = fs::metadata(data.join("segments").join(&compacted))
            .expect("meta")
            .len();
        for i in &inputs {
            fs::copy(
                src.join(i.rsplit('/').next().expect("name")),
                lake.join("p").join(i),
            )
            .expect("put back");
        }
        let names: Vec<String> = inputs
            .iter()
            .map(|i| i.rsplit('/').next().expect("name").to_string())
            .collect();
        {
            let mut l = Ledger::open(&lpath, &u, true).expect("open").expect("lock");
            l.record_covering(&compacted, bytes, &names)
                .expect("record");
        }
        let kept = lake.join("compacted.aside");
        fs::rename(lake.join("p").join(&compacted), &kept).expect("aside");
        let r = ship(&opts, &stop).expect("ship without the compacted object");
        assert!(r.removed.is_empty());
        assert_eq!((r.cleanup_pending, r.cleanup_errors.len()), (1, 1), "{r:?}");
        assert!(r.cleanup_errors[0].contains("not in the lake"), "{r:?}");
        assert_eq!(
            files(&lake.join("p")).len(),
            4,
            "inputs and other.parquet kept"
        );
        assert!(
            status_lines(&data, unix_secs(SystemTime::now()))[0]
                .contains("1 compacted segment(s) whose replaced lake objects are not deleted yet")
        );
        fs::rename(&kept, lake.join("p").join(&compacted)).expect("back");
        let r = ship(&opts, &stop).expect("ship finishes the cleanup");
        assert_eq!((r.removed.len(), r.cleanup_pending), (3, 0), "{r:?}");
        assert_eq!(
            files(&lake.join("p")),
            vec![compacted, format!("{part}/other.parquet")]
        );
        let l = Ledger::open(&lpath, &u, true).expect("open").expect("lock");
        assert!(l.cleanups().is_empty());
    }

    #[test]
    fn ships_to_a_file_url_once_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let seg = data.join("segments/host=a/date=2026-12-04/hour=01");
        fs::create_dir_all(&seg).expect("mkdir");
        fs::write(seg.join("1.parquet"), b"one").expect("write");
        fs::write(seg.join("2.parquet"), b"two").expect("write");
        fs::create_dir_all(data.join("inprogress")).expect("mkdir");
        fs::write(data.join("inprogress/3.parquet.inprogress"), b"x").expect("write");
        let lake = tmp.path().join("lake");
        fs::create_dir_all(&lake).expect("mkdir");
        let u = url(&format!("file://{}/p", lake.display()));
        let opts = ShipOptions {
            dir: data.clone(),
            url: u.clone(),
            dry_run: false,
            verify: false,
            wait_lock: true,
            attempts: 1,
        };
        let stop = AtomicBool::new(false);
        let r = ship(&opts, &stop).expect("ship");
        assert_eq!(
            (r.shipped.len(), r.already, r.failed.len(), r.pending),
            (2, 0, 0, 0)
        );
        assert_eq!(
            fs::read(lake.join("p/host=a/date=2026-12-04/hour=01/1.parquet")).expect("read"),
            b"one"
        );
        let r = ship(&opts, &stop).expect("reship");
        assert_eq!((r.shipped.len(), r.already, r.in_ledger), (0, 0, 2));
        // The ledger lost; the lake has the same bytes: already there.
        fs::remove_dir_all(data.join(SHIPPED_DIR)).expect("rm");
        let r = ship(&opts, &stop).expect("ship again");
        assert_eq!((r.shipped.len(), r.already), (0, 2));
        // Different bytes at the key: failed, not overwritten.
        fs::remove_dir_all(data.join(SHIPPED_DIR)).expect("rm");
        fs::write(
            lake.join("p/host=a/date=2026-12-04/hour=01/2.parquet"),
            b"TWO!",
        )
        .expect("w");
        let r = ship(&opts, &stop).expect("conflict");
        assert_eq!((r.already, r.failed.len()), (1, 1));
        assert!(r.failed[0].reason.contains("CONFLICT"), "{:?}", r.failed);
        assert_eq!(
            fs::read(lake.join("p/host=a/date=2026-12-04/hour=01/2.parquet")).expect("read"),
            b"TWO!"
        );
        let lines = status_lines(&data, unix_secs(SystemTime::now()));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("shipped 1, pending 1"), "{lines:?}");
    }
}
