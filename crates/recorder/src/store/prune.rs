//! Retention: delete sealed segments, oldest first, until age and size limits hold.
//!
//! Only files that follow the segment layout (`host=/date=/hour=/<name>.parquet` under the
//! segments root) are ever considered; in-progress files live elsewhere and are never touched.
//! Two prunes never run at once (an exclusive `flock`); a prune running beside the recorder is
//! safe because the recorder only ever adds sealed files by an atomic rename, and re-creates a
//! partition directory that a prune removed under it.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use dnsledger_schema::partition;

use crate::store::segment::{SEGMENT_EXT, SEGMENTS_DIR};
use crate::store::ship::{self, ShipGuard};

const HOUR_NS: i64 = partition::NS_PER_HOUR;

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("nothing to prune by: give --max-age and/or --max-size")]
    NoLimit,
    #[error("{0} is not a dnsledger data directory or segments tree")]
    NotATree(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the ship ledgers of {path}: {source}")]
    Ledger {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot delete {path}: {source}")]
    Delete {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// A data directory (with `segments/`) or a segments tree (with `host=...` directories).
    pub dir: PathBuf,
    /// Delete segments whose hour ended longer ago than this (ns).
    pub max_age_ns: Option<i64>,
    /// Delete oldest segments until the rest take at most this many bytes.
    pub max_size: Option<u64>,
    /// Only these hosts' segments (all when empty): host names as given, unescaped.
    pub hosts: Vec<String>,
    pub dry_run: bool,
    /// Now, UTC ns.
    pub now_ns: i64,
    /// Which segments must be shipped before they may go ([`ShipGuard::Off`]: none).
    pub ship_guard: ShipGuard,
}

/// One sealed segment found in the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    pub path: PathBuf,
    /// The host name, unescaped (the `host=` directory holds it escaped).
    pub host: String,
    /// Start of the segment's hour (UTC ns); every row of the segment lies in that hour.
    pub hour_start_ns: i64,
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub struct PruneReport {
    /// Deleted (or, with dry_run, to be deleted) segments, oldest first.
    pub deleted: Vec<SegmentFile>,
    pub freed_bytes: u64,
    pub kept: usize,
    pub kept_bytes: u64,
    /// Segments the limits would delete but that are not shipped yet (kept).
    pub kept_unshipped: usize,
    pub kept_unshipped_bytes: u64,
    pub removed_dirs: Vec<PathBuf>,
}

/// The start (UTC ns) of the hour that a `date=YYYY-MM-DD` and an `hour=HH` directory name
/// stand for; the layout is [`partition`]'s.
fn hour_start(date: &str, hour: &str) -> Option<i64> {
    let key = partition::PartitionKey {
        host: String::new(),
        date: partition::date_of_component(date)?,
        hour: partition::hour_of_component(hour)?,
    };
    Some(key.start_ns())
}

fn read_dir(path: &Path) -> Result<Vec<fs::DirEntry>, PruneError> {
    fs::read_dir(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| PruneError::Read {
            path: path.into(),
            source,
        })
}

/// The segments root of a data directory or tree.
pub fn segments_root(dir: &Path) -> Result<PathBuf, PruneError> {
    let nested = dir.join(SEGMENTS_DIR);
    if nested.is_dir() {
        return Ok(nested);
    }
    let is_tree = read_dir(dir)?
        .iter()
        .any(|e| partition::host_of_component(&e.file_name().to_string_lossy()).is_some());
    if is_tree {
        Ok(dir.to_path_buf())
    } else {
        Err(PruneError::NotATree(dir.to_path_buf()))
    }
}

/// Every sealed segment under the root, oldest first. Anything not in the layout is ignored.
pub fn list_segments(root: &Path) -> Result<Vec<SegmentFile>, PruneError> {
    let mut out = Vec::new();
    for host_dir in read_dir(root)? {
        let name = host_dir.file_name().to_string_lossy().into_owned();
        let Some(host) = partition::host_of_component(&name) else {
            continue;
        };
        if !host_dir.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for date_dir in read_dir(&host_dir.path())? {
            if !date_dir.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let date = date_dir.file_name().to_string_lossy().into_owned();
            for hour_dir in read_dir(&date_dir.path())? {
                let hour = hour_dir.file_name().to_string_lossy().into_owned();
                let Some(start) = hour_start(&date, &hour) else {
                    continue;
                };
                if !hour_dir.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                for file in read_dir(&hour_dir.path())? {
                    let path = file.path();
                    if path.extension().is_none_or(|e| e != SEGMENT_EXT) {
                        continue;
                    }
                    let Ok(meta) = file.metadata() else { continue };
                    if !meta.is_file() {
                        continue;
                    }
                    out.push(SegmentFile {
                        path,
                        host: host.clone(),
                        hour_start_ns: start,
                        bytes: meta.len(),
                    });
                }
            }
        }
    }
    // Oldest first: by hour, then by name (names start with the first row's time).
    out.sort_by(|a, b| {
        (a.hour_start_ns, a.path.file_name()).cmp(&(b.hour_start_ns, b.path.file_name()))
    });
    Ok(out)
}

/// Holds an exclusive lock on a file for as long as it lives.
pub(crate) struct Lock {
    _file: File,
}

/// Takes the prune lock; `None` when `wait` is false and someone else holds it. The lock file
/// is opened read-only when it exists (flock needs no write access), so a recorder running as
/// its own user shares it with a root cron job that created it.
pub(crate) fn lock(path: &Path, wait: bool) -> Result<Option<Lock>, PruneError> {
    let err = |source| PruneError::Lock {
        path: path.into(),
        source,
    };
    let file = match OpenOptions::new().read(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(err)?,
        Err(e) => return Err(err(e)),
    };
    if !super::fs::lock_exclusive(&file, wait).map_err(err)? {
        return Ok(None);
    }
    Ok(Some(Lock { _file: file }))
}

/// Where the prune lock lives: beside `segments/` in a data directory, in the tree otherwise.
pub(crate) fn lock_path(dir: &Path, root: &Path) -> PathBuf {
    if root != dir {
        dir.join("prune.lock")
    } else {
        root.join(".dnsledger-prune.lock")
    }
}

/// Applies the limits. With `dry_run` nothing is deleted and the report says what would be.
/// Waits for a concurrent prune to finish first.
pub fn prune(opts: &PruneOptions) -> Result<PruneReport, PruneError> {
    prune_with(opts, true).map(|r| r.unwrap_or_default())
}

/// Like [`prune`], but returns `None` at once when another prune holds the lock (the recorder
/// applies its own limits this way: its writer never waits for a cron job).
pub fn try_prune(opts: &PruneOptions) -> Result<Option<PruneReport>, PruneError> {
    prune_with(opts, false)
}

fn prune_with(opts: &PruneOptions, wait: bool) -> Result<Option<PruneReport>, PruneError> {
    if opts.max_age_ns.is_none() && opts.max_size.is_none() {
        return Err(PruneError::NoLimit);
    }
    let root = segments_root(&opts.dir)?;
    let Some(_lock) = lock(&lock_path(&opts.dir, &root), wait)? else {
        return Ok(None);
    };
    let mut segments = list_segments(&root)?;
    if !opts.hosts.is_empty() {
        segments.retain(|s| opts.hosts.contains(&s.host));
    }
    // Read under the lock; a shipper appending meanwhile only makes this set conservative.
    let shipped = ship::shipped_set(&opts.ship_guard, &opts.dir, &root).map_err(|source| {
        PruneError::Ledger {
            path: opts.dir.clone(),
            source,
        }
    })?;
    let unshipped = shipped
        .map(|set| ship::unshipped(&segments, &root, &set))
        .unwrap_or_default();
    let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut report = PruneReport::default();
    for s in &segments {
        let too_old = opts
            .max_age_ns
            .is_some_and(|age| s.hour_start_ns + HOUR_NS <= opts.now_ns.saturating_sub(age));
        let too_big = opts.max_size.is_some_and(|max| total > max);
        if !too_old && !too_big {
            // Oldest first: every later segment is younger, and the size limit holds.
            break;
        }
        if unshipped.contains(&s.path) {
            // Not in the lake yet: kept, and a younger shipped one goes in its place.
            report.kept_unshipped += 1;
            report.kept_unshipped_bytes += s.bytes;
            continue;
        }
        total -= s.bytes;
        report.freed_bytes += s.bytes;
        report.deleted.push(s.clone());
    }
    report.kept = segments.len() - report.deleted.len();
    report.kept_bytes = total;
    if opts.dry_run {
        return Ok(Some(report));
    }
    for s in &report.deleted {
        match fs::remove_file(&s.path) {
            Ok(()) => {}
            // Deleted by someone else meanwhile (e.g. by hand): the goal holds.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(PruneError::Delete {
                    path: s.path.clone(),
                    source,
                });
            }
        }
    }
    // Remove partition directories left empty, but never the current or the previous hour's:
    // the recorder may be about to seal into them.
    let recent = opts.now_ns - HOUR_NS;
    for s in &report.deleted {
        if s.hour_start_ns + HOUR_NS > recent {
            continue;
        }
        let mut dir = s.path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == root || !d.starts_with(&root) {
                break;
            }
            // A date directory whose only file is its manifest (`dnsledger compact` writes
            // one) has no segments left: the manifest goes with it.
            if d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("date="))
                && fs::read_dir(&d).is_ok_and(|entries| {
                    let names: Vec<_> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.file_name())
                        .collect();
                    names.len() == 1 && names[0] == dnsledger_lake::manifest::FILE_NAME
                })
            {
                let _ = fs::remove_file(d.join(dnsledger_lake::manifest::FILE_NAME));
            }
            // remove_dir fails on a non-empty directory: exactly what is wanted.
            if fs::remove_dir(&d).is_err() {
                break;
            }
            report.removed_dirs.push(d.clone());
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    use partition::days_from_civil;

    fn ns(y: i64, m: u32, d: u32, h: i64) -> i64 {
        (days_from_civil(y, m, d) * 24 + h) * HOUR_NS
    }

    fn touch(root: &Path, host: &str, date: &str, hour: &str, name: &str, bytes: usize) -> PathBuf {
        let dir = root.join(format!("host={host}/date={date}/hour={hour}"));
        fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join(name);
        fs::write(&p, vec![0u8; bytes]).expect("write");
        p
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(hour_start("date=1970-01-02", "hour=03"), Some(27 * HOUR_NS));
        assert_eq!(hour_start("date=1970-13-02", "hour=03"), None);
        assert_eq!(hour_start("date=1970-01-02", "hour=24"), None);
        assert_eq!(hour_start("day=1970-01-02", "hour=01"), None);
    }

    fn opts(dir: &Path, now: i64) -> PruneOptions {
        PruneOptions {
            dir: dir.to_path_buf(),
            max_age_ns: None,
            max_size: None,
            hosts: Vec::new(),
            dry_run: false,
            now_ns: now,
            ship_guard: ShipGuard::Off,
        }
    }

    #[test]
    fn age_and_size_limits_oldest_first() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("segments");
        let old = touch(&root, "a", "2026-11-01", "00", "1.parquet", 100);
        let mid = touch(&root, "a", "2026-11-20", "05", "2.parquet", 100);
        let new1 = touch(&root, "b", "2026-11-26", "10", "3.parquet", 100);
        let new2 = touch(&root, "b", "2026-11-26", "10", "4.parquet", 100);
        // Not in the layout: never touched.
        let stray = root.join("host=a/notes.txt");
        fs::write(&stray, "x").expect("write");
        // Date manifests: one of a date about to lose its last segment, one of a date that
        // keeps segments.
        let old_manifest = root
            .join("host=a/date=2026-11-01")
            .join(dnsledger_lake::manifest::FILE_NAME);
        fs::write(&old_manifest, "m").expect("write");
        let kept_manifest = root
            .join("host=b/date=2026-11-26")
            .join(dnsledger_lake::manifest::FILE_NAME);
        fs::write(&kept_manifest, "m").expect("write");
        let inprogress = tmp.path().join("inprogress/x.parquet.inprogress");
        fs::create_dir_all(inprogress.parent().expect("dir")).expect("mkdir");
        fs::write(&inprogress, "x").expect("write");

        let now = ns(2026, 11, 27, 0);
        let mut o = opts(tmp.path(), now);
        o.max_age_ns = Some(7 * 24 * HOUR_NS);
        o.dry_run = true;
        let r = prune(&o).expect("dry run");
        assert_eq!(
            r.deleted.iter().map(|s| &s.path).collect::<Vec<_>>(),
            vec![&old]
        );
        assert!(old.exists(), "dry run deletes nothing");

        o.dry_run = false;
        o.max_size = Some(150);
        let r = prune(&o).expect("prune");
        let deleted: Vec<_> = r.deleted.iter().map(|s| s.path.clone()).collect();
        assert_eq!(deleted, vec![old.clone(), mid.clone(), new1.clone()]);
        assert_eq!(r.freed_bytes, 300);
        assert_eq!((r.kept, r.kept_bytes), (1, 100));
        assert!(!old.exists() && !mid.exists() && !new1.exists() && new2.exists());
        assert!(stray.exists() && inprogress.exists());
        // Empty partitions of old hours are gone, with the manifest of a date left without
        // segments; host=a stays (it holds notes.txt), and so does the manifest of a date
        // that still has segments.
        assert!(!root.join("host=a/date=2026-11-01").exists());
        assert!(kept_manifest.exists());
        assert!(root.join("host=a").exists());
    }

    #[test]
    fn recent_partitions_are_kept_and_hosts_filter() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("segments");
        let now = ns(2026, 11, 27, 12);
        let a = touch(&root, "a", "2026-11-27", "11", "1.parquet", 10);
        let b = touch(&root, "b", "2026-11-27", "11", "2.parquet", 10);
        let mut o = opts(tmp.path(), now);
        o.max_size = Some(0);
        o.hosts = vec!["a".into()];
        let r = prune(&o).expect("prune");
        assert_eq!(r.deleted.len(), 1);
        assert!(!a.exists() && b.exists());
        // The previous hour's directory stays for the recorder.
        assert!(a.parent().expect("dir").exists());
    }

    #[test]
    fn hosts_compare_unescaped() {
        // A host name outside [A-Za-z0-9._-] is escaped in its directory; `--host` and
        // `SegmentFile::host` use the name itself.
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("segments");
        let now = ns(2026, 11, 27, 12);
        let dir_host = partition::escape("db 1/eu");
        assert_eq!(dir_host, "db%201%2Feu");
        let a = touch(&root, &dir_host, "2026-11-20", "11", "1.parquet", 10);
        let b = touch(&root, "b", "2026-11-20", "11", "2.parquet", 10);
        let listed = list_segments(&root).expect("list");
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().any(|s| s.host == "db 1/eu" && s.path == a));
        let mut o = opts(tmp.path(), now);
        o.max_size = Some(0);
        o.hosts = vec![dir_host.clone()];
        assert!(
            prune(&o).expect("prune").deleted.is_empty(),
            "the escaped form is no name"
        );
        o.hosts = vec!["db 1/eu".into()];
        let r = prune(&o).expect("prune");
        assert_eq!(r.deleted.len(), 1);
        assert_eq!(r.deleted[0].host, "db 1/eu");
        assert!(!a.exists() && b.exists());
    }

    #[test]
    fn unshipped_segments_are_kept_unless_overridden() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("segments");
        let now = ns(2026, 11, 27, 12);
        let old = touch(&root, "a", "2026-11-01", "00", "1.parquet", 100);
        let mid = touch(&root, "a", "2026-11-02", "00", "2.parquet", 100);
        let new = touch(&root, "a", "2026-11-03", "00", "3.parquet", 100);
        let url: dnsledger_lake::LakeUrl = "s3://lake/p".parse().expect("url");
        let ldir = ship::ledger_dir(tmp.path(), &root);
        let mut ledger = ship::Ledger::open(&ship::ledger_path(&ldir, &url), &url, true)
            .expect("ledger")
            .expect("lock");
        ledger
            .record("host=a/date=2026-11-02/hour=00/2.parquet", 100)
            .expect("record");
        // Recorded with another size: not the same segment.
        ledger
            .record("host=a/date=2026-11-03/hour=00/3.parquet", 99)
            .expect("record");
        drop(ledger);
        let mut o = opts(tmp.path(), now);
        o.max_size = Some(0);
        o.dry_run = true;
        // With a ledger present and no destination named, every ledger counts.
        o.ship_guard = ShipGuard::Ledgers;
        let r = prune(&o).expect("prune");
        assert_eq!(
            r.deleted.iter().map(|s| &s.path).collect::<Vec<_>>(),
            vec![&mid]
        );
        assert_eq!(
            (r.kept_unshipped, r.kept_unshipped_bytes, r.kept),
            (2, 200, 2)
        );
        o.ship_guard = ShipGuard::To("s3://other".parse().expect("url"));
        assert_eq!(prune(&o).expect("prune").kept_unshipped, 3);
        o.ship_guard = ShipGuard::To(url);
        o.dry_run = false;
        let r = prune(&o).expect("prune");
        assert_eq!(r.deleted.len(), 1);
        assert!(old.exists() && !mid.exists() && new.exists());
        o.ship_guard = ShipGuard::Off;
        let r = prune(&o).expect("prune");
        assert_eq!((r.deleted.len(), r.kept_unshipped), (2, 0));
        assert!(!old.exists() && !new.exists());
    }

    #[test]
    fn errors_name_the_problem() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            prune(&opts(tmp.path(), 0)),
            Err(PruneError::NoLimit)
        ));
        let mut o = opts(tmp.path(), 0);
        o.max_size = Some(1);
        let e = prune(&o).expect_err("empty dir").to_string();
        assert!(e.contains("not a dnsledger data directory"), "{e}");
    }
}
