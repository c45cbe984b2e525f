//! Dropping privileges once the BPF programs are attached.
//!
//! Loading and attaching needs CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN (or root).
//! Afterwards the recorder only polls file descriptors it already holds, writes its own data
//! directory and reads `/proc`. What stays:
//! - `CAP_SYS_PTRACE`: `readlink /proc/<pid>/exe` and `/proc/<pid>/ns/net` of other users'
//!   processes (ptrace access mode checks);
//! - `CAP_DAC_READ_SEARCH`: reading those `/proc` entries and cgroup directories regardless of
//!   their modes.
//!
//! Everything else leaves the effective, permitted, inheritable, ambient and bounding sets,
//! and `no_new_privs` is set. Capabilities are per thread: every thread calls [`drop_to_minimum`].

use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities kept after attachment (see the module docs).
pub const KEPT: [Capability; 2] = [Capability::CAP_SYS_PTRACE, Capability::CAP_DAC_READ_SEARCH];

#[derive(Debug, thiserror::Error)]
#[error("cannot drop privileges: {0}")]
pub struct PrivsError(String);

/// Reduces the calling thread's capabilities to [`KEPT`] and sets `no_new_privs`.
pub fn drop_to_minimum() -> Result<(), PrivsError> {
    let err = |e: caps::errors::CapsError| PrivsError(e.to_string());
    let kept: CapsHashSet = KEPT.into_iter().collect();
    // The bounding set needs CAP_SETPCAP, so it goes first, while that is still held.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).map_err(err)? {
        for cap in caps::read(None, CapSet::Bounding).map_err(err)? {
            if !kept.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(err)?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::clear(None, CapSet::Inheritable).map_err(err)?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(err)?;
    let keep: CapsHashSet = permitted.intersection(&kept).copied().collect();
    caps::set(None, CapSet::Effective, &keep).map_err(err)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err)?;
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(PrivsError(std::io::Error::last_os_error().to_string()));
    }
    Ok(())
}
