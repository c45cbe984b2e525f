//! A footer cache on disk for segments in object stores, so that the next `dnsql` over the
//! same lake lists (as it must, to see new segments) but does not fetch the footers again.
//!
//! An entry is the tail of one object (its footer and page index, the bytes a footer read
//! fetches), keyed by the object's URL, size, ETag and last-modified time as the LIST reported
//! them: a rewritten object has another key, so a stale entry is never used. Each entry is one
//! file named by a hash of its key and holding the key itself (a hash collision is a miss);
//! it is written to a temporary name and renamed into place, so concurrent runs never read a
//! half-written entry. Any entry that cannot be read is a miss; any that cannot be written is
//! ignored (the cache only ever saves time).
//!
//! Where: `$DNSQL_FOOTER_CACHE` (a directory, or `off`), else `$XDG_CACHE_HOME/dnsql/footers`,
//! else `~/.cache/dnsql/footers`.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use dnsledger_lake::object_store::ObjectMeta;

const MAGIC: &[u8] = b"dnsql-footer-1\n";

/// The cache directory.
#[derive(Debug, Clone)]
pub struct FooterCache {
    dir: PathBuf,
}

/// A cached tail: the bytes of `range` of the object.
pub struct Tail {
    pub range: Range<u64>,
    pub bytes: Bytes,
}

impl FooterCache {
    pub fn new(dir: PathBuf) -> Self {
        FooterCache { dir }
    }

    /// The cache the environment asks for (see the module docs); `None` when turned off or
    /// when there is no home directory.
    pub fn from_env() -> Option<Self> {
        match std::env::var_os("DNSQL_FOOTER_CACHE") {
            Some(v) if v == "off" || v.is_empty() => None,
            Some(v) => Some(Self::new(PathBuf::from(v))),
            None => {
                let base = std::env::var_os("XDG_CACHE_HOME")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| std::env::home_dir().map(|h| h.join(".cache")))?;
                Some(Self::new(base.join("dnsql").join("footers")))
            }
        }
    }

    fn key(url: &str, meta: &ObjectMeta) -> String {
        format!(
            "{url}\n{}\n{}\n{}",
            meta.size,
            meta.e_tag.as_deref().unwrap_or("-"),
            meta.last_modified.timestamp_nanos_opt().unwrap_or(0)
        )
    }

    fn path(&self, key: &str) -> PathBuf {
        // Two differently seeded 64-bit hashes: 128 bits of name; the key inside decides.
        let mut a = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut a);
        let mut b = std::collections::hash_map::DefaultHasher::new();
        (key, 0x5eed_u32).hash(&mut b);
        self.dir
            .join(format!("{:016x}{:016x}", a.finish(), b.finish()))
    }

    /// The cached tail of the object, if there is one for exactly this version of it.
    pub fn get(&self, url: &str, meta: &ObjectMeta) -> Option<Tail> {
        let key = Self::key(url, meta);
        let data = std::fs::read(self.path(&key)).ok()?;
        let rest = data.strip_prefix(MAGIC)?;
        let key_len = usize::try_from(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
        let rest = rest.get(4..)?;
        if rest.get(..key_len)? != key.as_bytes() {
            return None;
        }
        let rest = rest.get(key_len..)?;
        let start = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let bytes = rest.get(8..)?;
        let range = start..start.checked_add(u64::try_from(bytes.len()).ok()?)?;
        (range.end == meta.size).then(|| Tail {
            range,
            bytes: Bytes::copy_from_slice(bytes),
        })
    }

    /// Stores the tail of the object (best effort).
    pub fn put(&self, url: &str, meta: &ObjectMeta, tail: &Tail) {
        let key = Self::key(url, meta);
        let path = self.path(&key);
        let _ = write_atomically(&self.dir, &path, |f| {
            let key_len = u32::try_from(key.len()).map_err(std::io::Error::other)?;
            f.write_all(MAGIC)?;
            f.write_all(&key_len.to_le_bytes())?;
            f.write_all(key.as_bytes())?;
            f.write_all(&tail.range.start.to_le_bytes())?;
            f.write_all(&tail.bytes)
        });
    }
}

fn write_atomically(
    dir: &Path,
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| write(&mut f))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64, etag: &str) -> ObjectMeta {
        ObjectMeta {
            location: "a/b.parquet".into(),
            last_modified: chrono::DateTime::UNIX_EPOCH,
            size,
            e_tag: Some(etag.into()),
            version: None,
        }
    }

    #[test]
    fn entries_are_found_only_for_the_same_version_of_the_object() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = FooterCache::new(dir.path().join("footers"));
        let m = meta(100, "\"e1\"");
        assert!(cache.get("s3://b/a/b.parquet", &m).is_none());
        let tail = Tail {
            range: 90..100,
            bytes: Bytes::from_static(b"0123456789"),
        };
        cache.put("s3://b/a/b.parquet", &m, &tail);
        let got = cache.get("s3://b/a/b.parquet", &m).expect("cached");
        assert_eq!((got.range, &got.bytes[..]), (90..100, &b"0123456789"[..]));
        // Rewritten (new ETag), another URL: misses.
        assert!(
            cache
                .get("s3://b/a/b.parquet", &meta(100, "\"e2\""))
                .is_none()
        );
        assert!(cache.get("s3://c/a/b.parquet", &m).is_none());
        // A damaged entry is a miss.
        for e in std::fs::read_dir(dir.path().join("footers")).expect("dir") {
            let p = e.expect("entry").path();
            std::fs::write(&p, b"dnsql-footer-1\nxx").expect("write");
        }
        assert!(cache.get("s3://b/a/b.parquet", &m).is_none());
    }
}
