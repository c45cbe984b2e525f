//! The filesystem calls the store shares: free and total space (`statvfs`), an exclusive lock
//! (`flock`), making a directory entry durable (fsync of the directory), and creating the data
//! directory. One copy each.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Sizes of the filesystem holding a path, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsSpace {
    /// Total size.
    pub total: u64,
    /// Free for unprivileged users (`f_bavail`).
    pub available: u64,
}

/// `statvfs` of the filesystem holding `path`, or of its nearest existing ancestor.
pub fn space(path: &Path) -> Option<FsSpace> {
    use std::os::unix::ffi::OsStrExt;
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is zero-initialisable plain data; the call below only writes into it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| FsSpace {
        total: st.f_blocks.saturating_mul(st.f_frsize),
        available: st.f_bavail.saturating_mul(st.f_frsize),
    })
}

/// Creates the data directory (and its parents) with mode 0750 if it does not exist.
pub fn create_data_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}

/// Fsyncs a directory, so that entries created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// Takes an exclusive `flock` on an open file, held until the file is closed. `Ok(false)` when
/// `wait` is false and someone else holds it.
pub fn lock_exclusive(file: &File, wait: bool) -> io::Result<bool> {
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock on a valid, open file descriptor; it takes no pointers.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if !wait && e.kind() == io::ErrorKind::WouldBlock {
        return Ok(false);
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_of_a_missing_path_is_its_ancestors() {
        let root = space(Path::new("/")).expect("statvfs /");
        assert!(root.total > 0 && root.available <= root.total);
        let below = space(Path::new("/no/such/dir/below/root")).expect("nearest ancestor");
        assert_eq!(below.total, root.total);
    }

    #[test]
    fn second_lock_does_not_wait() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("lock");
        let a = File::create(&path).expect("create");
        let b = File::open(&path).expect("open");
        assert!(lock_exclusive(&a, false).expect("first"));
        assert!(!lock_exclusive(&b, false).expect("second"));
        drop(a);
        assert!(lock_exclusive(&b, false).expect("after release"));
        sync_dir(tmp.path()).expect("sync dir");
    }
}
