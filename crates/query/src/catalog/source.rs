//! Finding segments: `--data` paths (data dirs, `segments/` trees, single files, globs) to a
//! list of segment files with their partition keys, and the `--since/--until/--host` scope.
//!
//! Only `*.parquet` files are segments; anything else in a tree is ignored and never opened.
//! `inprogress/` directories and hidden entries are never entered. Partition keys come from the
//! Hive path (`host=<h>/date=YYYY-MM-DD/hour=HH/`, decoded by `dnsledger_schema::partition`,
//! the host `%XX`-unescaped); a file outside such a tree (a single copied segment) gets them from
//! its footer, whose host the recorder never escapes. Either way `--host` and the `host` column
//! see the host name itself.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use datafusion::execution::object_store::ObjectStoreUrl;
use dnsledger_lake::object_store::local::LocalFileSystem;
use dnsledger_lake::object_store::path::Path as ObjectPath;
use dnsledger_lake::object_store::{ObjectMeta, ObjectStore};
use dnsledger_lake::{LakeError, LakeUrl, manifest};
use dnsledger_schema::partition::NS_PER_HOUR;
use parquet::file::metadata::ParquetMetaDataReader;

use crate::catalog::lake;
use crate::catalog::segments::{Footers, SegmentError, inspect};

/// Where a segment belongs (`host`, `date`, `hour`): the one definition of the partition
/// layout, shared with the recorder. `host` is the unescaped host name.
pub use dnsledger_schema::partition::PartitionKey;

/// A segment file found on disk or in a lake.
#[derive(Debug, Clone)]
pub struct SegmentFile {
    /// The name users see: the path as found (under the `--data` path given), or the object's
    /// URL (`s3://bucket/prefix/host=…/x.parquet`) for a segment in a lake.
    pub path: PathBuf,
    /// The canonical absolute path; for a segment in a lake, its URL (as `path`).
    pub canonical: PathBuf,
    pub size: u64,
    pub key: PartitionKey,
    /// Where it is read from: every segment is read through an object store (the local file
    /// system's for files on disk).
    pub object: StoredObject,
}

/// A segment as an object: the store (and the URL DataFusion knows it by) and its metadata.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// `file:///`, `s3://bucket/`, …
    pub store_url: ObjectStoreUrl,
    pub store: Arc<dyn ObjectStore>,
    pub meta: ObjectMeta,
}

impl StoredObject {
    /// The object's full URL: the key of everything remembered about it during a run.
    pub fn url(&self) -> String {
        format!("{}{}", self.store_url.as_str(), self.meta.location)
    }
}

impl SegmentFile {
    /// The object's full URL: the key of everything remembered about it during a run.
    pub fn url(&self) -> String {
        self.object.url()
    }

    /// The partition directory it was listed in (the unit of the compaction rule).
    pub fn partition_dir(&self) -> String {
        let url = self.url();
        match url.rsplit_once('/') {
            Some((dir, _)) => dir.to_owned(),
            None => url,
        }
    }

    /// Its file name (what a compacted segment's `compacted_from` names).
    pub fn file_name(&self) -> String {
        self.object
            .meta
            .location
            .filename()
            .map(str::to_owned)
            .unwrap_or_default()
    }
}

/// A file that is not read, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// What [`discover`] found.
#[derive(Debug, Default)]
pub struct Discovery {
    pub files: Vec<SegmentFile>,
    /// `.parquet` files that could not be placed (footer unreadable, not a segment).
    pub skipped: Vec<Skipped>,
    /// The directories searched (for the "no segments found" message).
    pub looked_in: Vec<PathBuf>,
    /// Whether a lake listing was narrowed to the scope's partitions (an empty result then
    /// means "nothing in scope", not "no segments").
    pub scoped: bool,
    /// Date manifests found beside the segments (`dnsledger_lake::manifest`).
    pub manifests: Vec<StoredObject>,
    /// Hour directories whose files were taken from their date manifest's listing, unchanged
    /// since it was recorded, instead of listing them (`manifest::DirListing`).
    pub dirs_from_manifests: usize,
    /// Directories listed.
    pub dirs_listed: usize,
}

/// Why discovery failed outright.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("data path `{}` does not exist", .0.display())]
    Missing(PathBuf),
    #[error("`{}` is not a segment (segments end in .parquet)", .0.display())]
    NotParquet(PathBuf),
    #[error("bad glob `{0}`: {1}")]
    Glob(String, String),
    #[error("cannot read `{}`: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
    /// A `--data` URL that cannot be used (unknown scheme, no bucket, bad configuration).
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// A lake that cannot be listed (unreachable, unauthorised, no such bucket).
    #[error(transparent)]
    List(#[from] Box<lake::ListError>),
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Finds the segments under `paths`. Each may be a data dir (its `segments/` subtree is used),
/// a `segments/` tree or any directory holding segments (e.g. one directory per host copied
/// in), a single `.parquet` file, or a glob matching any of those.
pub fn discover(paths: &[PathBuf]) -> Result<Discovery, SourceError> {
    let mut d = Discovery::default();
    let local: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
    let mut seen_files = HashSet::new();
    let seen = &mut Seen {
        files: &mut seen_files,
        store: &local,
    };
    let mut visited_dirs = HashSet::new();
    for p in paths {
        let s = p.to_string_lossy();
        if has_glob_chars(&s) && !p.exists() {
            let matches =
                glob::glob(&s).map_err(|e| SourceError::Glob(s.to_string(), e.to_string()))?;
            let mut any = false;
            for m in matches {
                let m = m.map_err(|e| SourceError::Io(e.path().to_owned(), e.into()))?;
                any = true;
                if m.is_dir() {
                    walk_root(&m, &mut d, seen, &mut visited_dirs)?;
                } else if is_segment_name(&m) {
                    add_file(&m, &mut d, seen)?;
                }
            }
            if !any {
                d.looked_in.push(p.clone());
            }
            continue;
        }
        let md = fs::metadata(p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SourceError::Missing(p.clone()),
            _ => SourceError::Io(p.clone(), e),
        })?;
        if md.is_dir() {
            walk_root(p, &mut d, seen, &mut visited_dirs)?;
        } else if is_segment_name(p) {
            add_file(p, &mut d, seen)?;
        } else {
            return Err(SourceError::NotParquet(p.clone()));
        }
    }
    d.files
        .sort_by(|a, b| (&a.key, &a.path).cmp(&(&b.key, &b.path)));
    d.skipped.sort();
    Ok(d)
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

fn is_segment_name(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| !is_hidden(n) && n.to_string_lossy().ends_with(".parquet"))
}

/// A data dir is searched through its `segments/` (never its `inprogress/`).
fn walk_root(
    dir: &Path,
    d: &mut Discovery,
    seen: &mut Seen<'_>,
    visited: &mut HashSet<PathBuf>,
) -> Result<(), SourceError> {
    let segments = dir.join("segments");
    let root = if segments.is_dir() {
        segments
    } else {
        dir.to_owned()
    };
    d.looked_in.push(root.clone());
    let canonical = fs::canonicalize(&root).map_err(|e| SourceError::Io(root.clone(), e))?;
    if visited.contains(&canonical) {
        return Ok(());
    }
    // The root's own files and links here; its real subdirectories (a fleet's tree: host,
    // date and hour directories) go to a queue that several threads take directories from.
    // Listing is bound by the storage, not the CPU, once the directories are out of the page
    // cache: 75,000 directories and 72,000 files of 100 hosts x 30 days took 4.8 s with a
    // thread per host directory on 4 threads, one directory at a time per thread.
    let mut subdirs = Vec::new();
    walk_canonical(
        &root,
        canonical,
        d,
        seen,
        visited,
        Subdirs::Collect(&mut subdirs),
    )?;
    if subdirs.is_empty() {
        return Ok(());
    }
    let queue = DirQueue {
        state: std::sync::Mutex::new(QueueState {
            pending: subdirs,
            busy: 0,
            failed: false,
        }),
        ready: std::sync::Condvar::new(),
    };
    let store = seen.store.clone();
    let parts: Vec<Result<WalkPart, SourceError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WALK_THREADS)
            .map(|_| {
                let (queue, store) = (&queue, &store);
                let visited = visited.clone();
                std::thread::Builder::new()
                    .name("dnsql-walk".to_owned())
                    .spawn_scoped(scope, move || queue.work(store, visited))
            })
            .collect();
        // A walker that could not start is an error (never a silently smaller listing); the
        // others still finish the queue, so the error is the only difference.
        workers
            .into_iter()
            .map(|w| match w {
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    queue.fail();
                    Err(SourceError::Io(
                        root.clone(),
                        std::io::Error::other("a directory walker panicked"),
                    ))
                }),
                Err(e) => Err(SourceError::Io(root.clone(), e)),
            })
            .collect()
    });
    // `discover` sorts the files at the end; here only the merge: a file reached twice
    // (through a link) once.
    for part in parts {
        let part = part?;
        for f in part.found.files {
            if seen.files.insert(f.canonical.clone()) {
                d.files.push(f);
            }
        }
        d.skipped.extend(part.found.skipped);
        d.manifests.extend(part.found.manifests);
        d.dirs_from_manifests += part.found.dirs_from_manifests;
        d.dirs_listed += part.found.dirs_listed;
        visited.extend(part.dirs);
    }
    Ok(())
}

/// Threads listing a data directory's tree. More than the cores: a thread mostly waits for the
/// storage when the tree is not in the page cache (listed cold, 100 hosts x 30 days: 4 threads
/// 2.5 s, 16 threads 1.5 s, 32 threads 1.4 s for `find`); in the cache they cost ~20 us each.
const WALK_THREADS: usize = 16;

/// Directories waiting to be listed, shared by the walker threads of [`walk_root`].
struct DirQueue {
    state: std::sync::Mutex<QueueState>,
    ready: std::sync::Condvar,
}

struct QueueState {
    /// (path as found, canonical path) of directories not yet taken.
    pending: Vec<(PathBuf, PathBuf)>,
    /// Threads listing a directory now (each may add more).
    busy: usize,
    /// A walker failed: the others stop taking directories.
    failed: bool,
}

/// What one walker thread found.
struct WalkPart {
    found: Discovery,
    /// Canonical paths of the directories it listed.
    dirs: Vec<PathBuf>,
}

impl DirQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A poisoned lock only means another walker panicked (that is reported as an error
        // by `walk_root`); the queue itself is never left half-updated.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fail(&self) {
        self.lock().failed = true;
        self.ready.notify_all();
    }

    /// Takes directories until none is left and no thread can add more.
    fn work(
        &self,
        store: &Arc<dyn ObjectStore>,
        mut visited: HashSet<PathBuf>,
    ) -> Result<WalkPart, SourceError> {
        // A walker that panics holding a directory would leave the others waiting for it:
        // it marks the queue failed as it unwinds, so they stop and `walk_root` reports it.
        let _unwinding = FailOnPanic(self);
        let mut part = WalkPart {
            found: Discovery::default(),
            dirs: Vec::new(),
        };
        let mut files = HashSet::new();
        loop {
            let (path, canonical) = {
                let mut state = self.lock();
                loop {
                    if state.failed {
                        return Ok(part);
                    }
                    if let Some(next) = state.pending.pop() {
                        state.busy += 1;
                        break next;
                    }
                    if state.busy == 0 {
                        return Ok(part);
                    }
                    state = self
                        .ready
                        .wait(state)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            let mut found = Vec::new();
            let seen = &mut Seen {
                files: &mut files,
                store,
            };
            part.dirs.push(canonical.clone());
            let listed = walk_canonical(
                &path,
                canonical,
                &mut part.found,
                seen,
                &mut visited,
                Subdirs::Collect(&mut found),
            );
            let mut state = self.lock();
            state.busy -= 1;
            state.pending.append(&mut found);
            if listed.is_err() {
                state.failed = true;
            }
            drop(state);
            self.ready.notify_all();
            listed?;
        }
    }
}

/// Marks a [`DirQueue`] failed if dropped while its thread panics.
struct FailOnPanic<'a>(&'a DirQueue);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail();
        }
    }
}

/// What [`walk_canonical`] does with the real subdirectories of the directory it lists.
enum Subdirs<'a> {
    /// Lists them too, depth first, on this thread.
    Recurse,
    /// Adds them, as (path as found, canonical path), to a walker's queue.
    Collect(&'a mut Vec<(PathBuf, PathBuf)>),
}

fn walk(
    dir: &Path,
    d: &mut Discovery,
    seen: &mut Seen<'_>,
    visited: &mut HashSet<PathBuf>,
) -> Result<(), SourceError> {
    let canonical = fs::canonicalize(dir).map_err(|e| SourceError::Io(dir.to_owned(), e))?;
    walk_canonical(dir, canonical, d, seen, visited, Subdirs::Recurse)
}

/// [`walk`] of `dir` whose canonical path is known: a real subdirectory of a canonical
/// directory is that path joined with its name, so only symlinks need resolving (resolving
/// every directory of a fleet's tree was a fifth of its listing). Real subdirectories are
/// listed here or handed back, as `subdirs` says ([`walk_root`] lists a root's on several
/// threads).
fn walk_canonical(
    dir: &Path,
    canonical: PathBuf,
    d: &mut Discovery,
    seen: &mut Seen<'_>,
    visited: &mut HashSet<PathBuf>,
    mut subdirs: Subdirs<'_>,
) -> Result<(), SourceError> {
    // Symlinked directories are followed once (a loop ends at the second visit).
    if !visited.insert(canonical.clone()) {
        return Ok(());
    }
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| SourceError::Io(dir.to_owned(), e))?
        .collect::<Result<_, _>>()
        .map_err(|e| SourceError::Io(dir.to_owned(), e))?;
    entries.sort_by_key(|e| e.file_name());
    d.dirs_listed += 1;
    // A date directory's manifest may hold its hour directories' listings (written by
    // `dnsledger compact` for local trees): a subdirectory unchanged since its listing was
    // recorded is not listed again (`manifest::DirListing`). Only its footer is read here.
    let has_manifest = entries
        .iter()
        .any(|e| e.file_name() == manifest::FILE_NAME && e.file_type().is_ok_and(|t| t.is_file()));
    let listings: HashMap<String, manifest::DirListing> = if has_manifest && dir_listings_on() {
        manifest::read_local_dirs(&canonical.join(manifest::FILE_NAME))
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect()
    } else {
        HashMap::new()
    };
    // What every plain file of this directory shares: its canonical directory and partition
    // (a directory of a fleet's tree holds one hour of one host; working these out once per
    // directory instead of once per file is much of a large tree's listing).
    let mut shared: Option<Option<PartitionKey>> = None;
    for entry in entries {
        let name = entry.file_name();
        if is_hidden(&name) {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type().ok();
        let plain_file = file_type.is_some_and(|t| t.is_file());
        if file_type.is_some_and(|t| t.is_dir()) {
            if name != "inprogress" {
                let sub = canonical.join(&name);
                let listing = name.to_str().and_then(|n| listings.get(n));
                if listing.is_some_and(|l| add_listed(&path, &sub, l, d, seen)) {
                    continue;
                }
                match &mut subdirs {
                    Subdirs::Recurse => {
                        walk_canonical(&path, sub, d, seen, visited, Subdirs::Recurse)?;
                    }
                    Subdirs::Collect(queue) => queue.push((path, sub)),
                }
            }
            continue;
        }
        if plain_file && is_segment_name(&path) {
            let key = shared.get_or_insert_with(|| PartitionKey::from_path(&path));
            let file = canonical.join(&name);
            // The object path from the whole path (object_store's encoding of a part read
            // from the file system differs from that of a part joined to a path).
            let location = ObjectPath::from_absolute_path(&file);
            match (key, entry.metadata(), location) {
                (Some(key), Ok(md), Ok(location)) => {
                    if seen.files.insert(file.clone()) {
                        let object = StoredObject {
                            store_url: ObjectStoreUrl::local_filesystem(),
                            store: seen.store.clone(),
                            meta: ObjectMeta {
                                location,
                                last_modified: md
                                    .modified()
                                    .map(chrono::DateTime::<chrono::Utc>::from)
                                    .unwrap_or(chrono::DateTime::UNIX_EPOCH),
                                size: md.len(),
                                e_tag: None,
                                version: None,
                            },
                        };
                        d.files.push(SegmentFile {
                            path,
                            canonical: file,
                            size: md.len(),
                            key: key.clone(),
                            object,
                        });
                    }
                }
                // Outside the layout, or unusual: the careful way.
                _ => add_file(&path, d, seen)?,
            }
            continue;
        }
        // Follows symlinks; a dangling link is ignored like any non-segment entry.
        let Ok(md) = fs::metadata(&path) else {
            continue;
        };
        if md.is_dir() {
            if name != "inprogress" {
                walk(&path, d, seen, visited)?;
            }
        } else if md.is_file() && is_segment_name(&path) {
            add_file(&path, d, seen)?;
        } else if md.is_file() && name == manifest::FILE_NAME {
            add_manifest(&path, d, seen);
        }
    }
    Ok(())
}

/// Whether hour directories may be taken from their date manifest's listings:
/// `DNSQL_DIR_LISTINGS=off` lists every directory (to compare, or to rule them out).
fn dir_listings_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("DNSQL_DIR_LISTINGS").is_none_or(|v| v != "off"))
}

/// Adds the files of directory `dir` (canonical path `canonical`) from its recorded listing,
/// if the directory is unchanged since (same modification and change times, not following
/// links); `false`, adding nothing, if it must be listed.
fn add_listed(
    dir: &Path,
    canonical: &Path,
    listing: &manifest::DirListing,
    d: &mut Discovery,
    seen: &mut Seen<'_>,
) -> bool {
    if !fs::symlink_metadata(canonical).is_ok_and(|md| listing.unchanged(&md)) {
        return false;
    }
    let mut files = Vec::with_capacity(listing.files.len());
    let mut key: Option<PartitionKey> = None;
    for f in &listing.files {
        let path = dir.join(&f.name);
        if key.is_none() {
            key = PartitionKey::from_path(&path);
        }
        let file = canonical.join(&f.name);
        // Outside the layout, or not addressable: listed the ordinary way.
        let (Some(key), Ok(location)) = (&key, ObjectPath::from_absolute_path(&file)) else {
            return false;
        };
        files.push(SegmentFile {
            path,
            canonical: file,
            size: f.size,
            key: key.clone(),
            object: StoredObject {
                store_url: ObjectStoreUrl::local_filesystem(),
                store: seen.store.clone(),
                meta: ObjectMeta {
                    location,
                    last_modified: chrono::DateTime::from_timestamp_nanos(f.mtime_ns),
                    size: f.size,
                    e_tag: None,
                    version: None,
                },
            },
        });
    }
    for f in files {
        if seen.files.insert(f.canonical.clone()) {
            d.files.push(f);
        }
    }
    d.dirs_from_manifests += 1;
    true
}

/// A date manifest found while walking (one that cannot be addressed is simply not used).
fn add_manifest(path: &Path, d: &mut Discovery, seen: &Seen<'_>) {
    let Ok(canonical) = fs::canonicalize(path) else {
        return;
    };
    let (Ok(md), Ok(location)) = (
        fs::metadata(&canonical),
        ObjectPath::from_absolute_path(&canonical),
    ) else {
        return;
    };
    d.manifests.push(StoredObject {
        store_url: ObjectStoreUrl::local_filesystem(),
        store: seen.store.clone(),
        meta: ObjectMeta {
            location,
            last_modified: md
                .modified()
                .map(chrono::DateTime::<chrono::Utc>::from)
                .unwrap_or(chrono::DateTime::UNIX_EPOCH),
            size: md.len(),
            e_tag: None,
            version: None,
        },
    });
}

/// Files already found, and the local store they are read through.
struct Seen<'a> {
    files: &'a mut HashSet<PathBuf>,
    store: &'a Arc<dyn ObjectStore>,
}

fn add_file(path: &Path, d: &mut Discovery, seen: &mut Seen<'_>) -> Result<(), SourceError> {
    let canonical = fs::canonicalize(path).map_err(|e| SourceError::Io(path.to_owned(), e))?;
    if !seen.files.insert(canonical.clone()) {
        return Ok(());
    }
    let md = fs::metadata(&canonical).map_err(|e| SourceError::Io(path.to_owned(), e))?;
    let size = md.len();
    let location = match ObjectPath::from_absolute_path(&canonical) {
        Ok(l) => l,
        Err(e) => {
            d.skipped.push(Skipped {
                path: path.to_owned(),
                reason: format!("cannot address it: {e}"),
            });
            return Ok(());
        }
    };
    let object = StoredObject {
        store_url: ObjectStoreUrl::local_filesystem(),
        store: seen.store.clone(),
        meta: ObjectMeta {
            location,
            last_modified: md
                .modified()
                .map(chrono::DateTime::<chrono::Utc>::from)
                .unwrap_or(chrono::DateTime::UNIX_EPOCH),
            size,
            e_tag: None,
            version: None,
        },
    };
    let key = match PartitionKey::from_path(path) {
        Some(k) => k,
        None => match key_from_footer(&canonical) {
            Ok(k) => k,
            Err(reason) => {
                d.skipped.push(Skipped {
                    path: path.to_owned(),
                    reason,
                });
                return Ok(());
            }
        },
    };
    d.files.push(SegmentFile {
        path: path.to_owned(),
        canonical,
        size,
        key,
        object,
    });
    Ok(())
}

/// A `--data` argument: a local path or glob, or a lake URL.
#[derive(Debug, Clone)]
pub enum DataArg {
    Local(PathBuf),
    Lake(LakeUrl),
}

/// Splits `--data` arguments into local paths and lake URLs (anything with a `scheme://`).
/// An unknown scheme or a malformed URL is an error naming it.
pub fn parse_data_args(args: &[PathBuf]) -> Result<Vec<DataArg>, LakeError> {
    args.iter()
        .map(|a| {
            let text = a.to_string_lossy();
            if dnsledger_lake::looks_like_url(&text) {
                text.parse().map(DataArg::Lake)
            } else {
                Ok(DataArg::Local(a.clone()))
            }
        })
        .collect()
}

/// A lake's store and how it is known to DataFusion.
#[derive(Debug, Clone)]
pub struct OpenLake {
    pub url: LakeUrl,
    pub store_url: ObjectStoreUrl,
    pub store: Arc<dyn ObjectStore>,
}

impl OpenLake {
    /// Opens `url`'s store with the environment's credentials. Retries are few and short:
    /// someone is waiting at a prompt, and an unreachable endpoint must say so in seconds.
    pub fn open(url: LakeUrl) -> Result<OpenLake, SourceError> {
        let retry = dnsledger_lake::object_store::RetryConfig {
            backoff: dnsledger_lake::object_store::BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
        };
        let client = dnsledger_lake::object_store::ClientOptions::default()
            .with_connect_timeout(Duration::from_secs(5));
        let store = url.open_with(retry, client)?;
        let store_url =
            ObjectStoreUrl::parse(url.root().as_str()).map_err(|e| LakeError::Invalid {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(OpenLake {
            url,
            store_url,
            store,
        })
    }
}

/// Finds the segments of every `--data` argument: local paths as [`discover`] does, lakes
/// by listing only the partitions `scope` needs ([`lake::list`]). `log` is told each LIST.
pub async fn discover_all(
    args: &[DataArg],
    scope: &Scope,
    footers: &Arc<Footers>,
    log: &(dyn Fn(String) + Sync),
) -> Result<Discovery, SourceError> {
    let local: Vec<PathBuf> = args
        .iter()
        .filter_map(|a| match a {
            DataArg::Local(p) => Some(p.clone()),
            DataArg::Lake(_) => None,
        })
        .collect();
    let mut d = if local.is_empty() {
        Discovery::default()
    } else {
        tokio::task::spawn_blocking(move || discover(&local))
            .await
            .map_err(|e| SourceError::Io(PathBuf::new(), std::io::Error::other(e)))??
    };
    let mut seen: HashSet<String> = HashSet::new();
    for a in args {
        let DataArg::Lake(url) = a else { continue };
        let lake = OpenLake::open(url.clone())?;
        d.looked_in.push(PathBuf::from(lake::prefix_url(
            &lake.url,
            lake.url.prefix(),
        )));
        d.scoped |= !scope.is_empty();
        let objects = lake::list(&lake.url, &lake.store, scope, log)
            .await
            .map_err(Box::new)?;
        let mut loose = Vec::new();
        for meta in objects {
            if manifest::is_manifest(&meta.location) {
                d.manifests.push(StoredObject {
                    store_url: lake.store_url.clone(),
                    store: lake.store.clone(),
                    meta,
                });
                continue;
            }
            let url = format!("{}{}", lake.store_url.as_str(), meta.location);
            if !seen.insert(url.clone()) {
                continue;
            }
            let key = lake::key_of(&lake.url, &meta.location);
            let file = SegmentFile {
                path: PathBuf::from(&url),
                canonical: PathBuf::from(&url),
                size: meta.size,
                // Replaced from the footer below when the key has no partition directories.
                key: key.clone().unwrap_or(PartitionKey {
                    host: String::new(),
                    date: 0,
                    hour: 0,
                }),
                object: StoredObject {
                    store_url: lake.store_url.clone(),
                    store: lake.store.clone(),
                    meta,
                },
            };
            match key {
                Some(_) => d.files.push(file),
                None => loose.push(file),
            }
        }
        // Outside the layout: placed by their footers (read once, kept for the queries).
        for (file, footer) in footers.get_all(loose, None, true).await {
            match footer {
                Ok(f) => match (&f.info.host, f.info.ts_min) {
                    (host, Some(ts)) => d.files.push(SegmentFile {
                        key: PartitionKey::of_ts(host.clone().unwrap_or_default(), ts),
                        ..file
                    }),
                    (_, None) => d.skipped.push(Skipped {
                        path: file.path,
                        reason: "segment metadata has no time range".to_owned(),
                    }),
                },
                Err(reason) => d.skipped.push(Skipped {
                    path: file.path,
                    reason,
                }),
            }
        }
    }
    d.files
        .sort_by(|a, b| (&a.key, &a.path).cmp(&(&b.key, &b.path)));
    d.skipped.sort();
    footers.add_manifests(&d.manifests);
    Ok(d)
}

/// Partition keys of a file outside a Hive tree: its footer's host (as the recorder knew it,
/// never escaped) and first timestamp.
fn key_from_footer(path: &Path) -> Result<PartitionKey, String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let md = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|e| SegmentError::Unreadable(e.to_string()).to_string())?;
    let info = inspect(&md).map_err(|e| e.to_string())?;
    let host = info.host.unwrap_or_default();
    let ts = info
        .ts_min
        .ok_or_else(|| "segment metadata has no time range".to_owned())?;
    Ok(PartitionKey::of_ts(host, ts))
}

/// Parses `--since`/`--until`: a duration before `now` (`90m`, `2h`, `7d`, `1h30m`) or an
/// RFC 3339 timestamp (`2024-05-01T12:00:00Z`, offsets allowed; no offset means UTC; a bare
/// date means its midnight UTC). Returns nanoseconds since the epoch.
pub fn parse_time(s: &str, now: SystemTime) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        let t = now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH);
        let since_epoch = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        return i64::try_from(since_epoch.as_nanos()).map_err(|_| format!("`{s}` is out of range"));
    }
    crate::catalog::segments::parse_ts(s).ok_or_else(|| {
        format!(
            "`{s}` is neither a duration (90m, 2h, 7d) nor an RFC 3339 time (2024-05-01T12:00:00Z)"
        )
    })
}

/// The scope every query and recipe sees: `--since`, `--until` (ns since the epoch; since
/// inclusive, until exclusive) and `--host`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub hosts: Vec<String>,
}

impl Scope {
    pub fn is_empty(&self) -> bool {
        self.since.is_none() && self.until.is_none() && self.hosts.is_empty()
    }

    /// Whether a partition can hold rows in scope.
    pub fn admits_key(&self, key: &PartitionKey) -> bool {
        let start = key.start_ns();
        (self.hosts.is_empty() || self.hosts.contains(&key.host))
            && self.since.is_none_or(|s| start + NS_PER_HOUR > s)
            && self.until.is_none_or(|u| start < u)
    }

    /// Whether a segment whose rows lie in `[ts_min, ts_max]` can hold rows in scope.
    pub fn admits_range(&self, ts_min: Option<i64>, ts_max: Option<i64>) -> bool {
        self.since.is_none_or(|s| ts_max.is_none_or(|m| m >= s))
            && self.until.is_none_or(|u| ts_min.is_none_or(|m| m < u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_hive_paths() {
        let k = PartitionKey::from_path(Path::new(
            "/x/segments/host=web-1/date=2023-02-21/hour=08/a.parquet",
        ))
        .unwrap();
        assert_eq!(k.host, "web-1");
        assert_eq!(k.hour, 8);
        assert_eq!(k.start_ns(), 1_676_966_400_000_000_000);
        assert_eq!(
            PartitionKey::of_ts("web-1", k.start_ns() + 59 * 60 * 1_000_000_000),
            k
        );
        assert_eq!(
            PartitionKey::from_path(Path::new("/x/host=a/date=2023-02-21/a.parquet")),
            None
        );
        assert_eq!(
            PartitionKey::from_path(Path::new("/x/host=a/date=2023-02-21/hour=24/a.parquet")),
            None
        );
        assert_eq!(
            PartitionKey::from_path(Path::new("/x/host=a/date=nope/hour=1/a.parquet")),
            None
        );
    }

    #[test]
    fn hosts_are_unescaped_from_paths_and_footers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ts = 1_676_966_400_000_000_000; // 2023-02-21T08:00:00Z
        let key = PartitionKey::of_ts("a/b c", ts);
        let in_tree = dir
            .path()
            .join("segments")
            .join(key.dir())
            .join("s.parquet");
        assert!(
            in_tree.to_string_lossy().contains("host=a%2Fb%20c/"),
            "{in_tree:?}"
        );
        crate::testutil::write_segment(&in_tree, "a/b c", ts);
        // A single segment copied out of its tree: the key comes from the footer.
        let loose = dir.path().join("loose").join("copied.parquet");
        crate::testutil::write_segment(&loose, "d%2Fe f", ts);
        // (A directory with a `segments/` tree is searched there only: give the file too.)
        let found = discover(&[dir.path().to_owned(), loose.clone()]).expect("discover");
        assert!(found.skipped.is_empty(), "{:?}", found.skipped);
        let hosts: Vec<(&str, &Path)> = found
            .files
            .iter()
            .map(|f| (f.key.host.as_str(), f.path.as_path()))
            .collect();
        assert_eq!(
            hosts,
            [("a/b c", in_tree.as_path()), ("d%2Fe f", loose.as_path())]
        );
        assert!(found.files.iter().all(|f| f.key.start_ns() == ts));
        let scope = Scope {
            hosts: vec!["a/b c".into()],
            ..Default::default()
        };
        assert!(scope.admits_key(&found.files[0].key));
        assert!(!scope.admits_key(&found.files[1].key));
    }

    #[test]
    fn times() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10 * 86_400);
        assert_eq!(
            parse_time("2h", now),
            Ok((10 * 86_400 - 7_200) * 1_000_000_000)
        );
        assert_eq!(parse_time("7d", now), Ok(3 * 86_400 * 1_000_000_000));
        assert_eq!(
            parse_time("90m", now),
            Ok((10 * 86_400 - 5_400) * 1_000_000_000)
        );
        assert_eq!(
            parse_time("1970-01-02T00:00:00Z", now),
            Ok(86_400 * 1_000_000_000)
        );
        assert_eq!(
            parse_time("1970-01-02T02:00:00+02:00", now),
            Ok(86_400 * 1_000_000_000)
        );
        assert_eq!(parse_time("1970-01-02", now), Ok(86_400 * 1_000_000_000));
        assert!(
            parse_time("yesterday", now)
                .unwrap_err()
                .contains("RFC 3339")
        );
    }

    #[test]
    fn scope_admits_hours_overlapping_the_range() {
        let hour = |h: i64| h * NS_PER_HOUR;
        let key = |h: i32| PartitionKey {
            host: "a".into(),
            date: 0,
            hour: h,
        };
        let s = Scope {
            since: Some(hour(2) + 1),
            until: Some(hour(4)),
            hosts: vec![],
        };
        assert!(!s.admits_key(&key(1)));
        assert!(s.admits_key(&key(2)));
        assert!(s.admits_key(&key(3)));
        assert!(!s.admits_key(&key(4)));
        let h = Scope {
            hosts: vec!["b".into()],
            ..Default::default()
        };
        assert!(!h.admits_key(&key(1)));
        assert!(s.admits_range(Some(hour(2)), Some(hour(2) + 1)));
        assert!(!s.admits_range(Some(hour(1)), Some(hour(2))));
        assert!(!s.admits_range(Some(hour(4)), Some(hour(5))));
    }
}
