//! The capabilities recording needs, stated once ([`CAPABILITIES`]), and dropping them once
//! the BPF programs are attached.
//!
//! Loading and attaching needs the [`Phase::Load`] capabilities (or root). Afterwards the
//! recorder only polls file descriptors it already holds, writes its own data directory and
//! reads `/proc`: only the [`Phase::Kept`] capabilities stay.
//!
//! Everything else leaves the effective, permitted, inheritable, ambient and bounding sets,
//! and `no_new_privs` is set. Capabilities are per thread: every thread calls [`drop_to_minimum`].
//! The one exception is a separate process, the lookup attach helper
//! ([`super::attach_helper`]): started before the drop, it reduces itself ([`drop_to`]) to the
//! [`Phase::Lookups`] capability, to probe C libraries first seen after start.
//!
//! With `--user` the recorder also leaves root: each thread switches its own credentials
//! (raw `setresuid`/`setresgid`/`setgroups` system calls, which act on the calling thread only,
//! unlike glibc's wrappers that switch every thread at once) while keeping the capabilities
//! above. The writer thread switches as it starts (it never needs root); the capture thread
//! once the programs are attached. Files made before the switch (the data directory, recovered
//! segments, the spool) are handed to that user first by [`chown_tree`].

use caps::{CapSet, Capability, CapsHashSet};

/// When the recorder needs a capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// To load the programs and attach them; dropped once attached.
    Load,
    /// Kept for the whole run (process attribution reads other users' `/proc` entries).
    Kept,
    /// Only with `--user`, once at start: switching user and handing the data directory over.
    User,
    /// Optional, to attach the libc lookup uprobes (without it lookups are off, with a warning
    /// per library, and the rest records): the recorder drops it once attached, like
    /// [`Phase::Load`]; only the lookup attach helper process keeps it, for C libraries first
    /// seen after start.
    Lookups,
}

/// One capability the recorder needs, when, and why.
#[derive(Clone, Copy, Debug)]
pub struct CapNeed {
    pub cap: Capability,
    pub phase: Phase,
    pub why: &'static str,
}

/// Every capability `dnsledger record` needs: the one statement of them (the `record --help`
/// text, the preflight check, `dnsledger check` and [`drop_to_minimum`] read it).
pub const CAPABILITIES: [CapNeed; 9] = [
    CapNeed {
        cap: Capability::CAP_BPF,
        phase: Phase::Load,
        why: "create the maps and load the programs",
    },
    CapNeed {
        cap: Capability::CAP_PERFMON,
        phase: Phase::Load,
        why: "the tracing programs (exec/exit, --stacks): tp_btf and tracepoints, bpf_get_stack",
    },
    CapNeed {
        cap: Capability::CAP_NET_ADMIN,
        phase: Phase::Load,
        why: "the cgroup_skb and cgroup sock_addr programs, attached to the cgroup v2 root",
    },
    CapNeed {
        cap: Capability::CAP_SYS_PTRACE,
        phase: Phase::Kept,
        why: "readlink /proc/<pid>/exe and /proc/<pid>/ns/net of other users' processes",
    },
    CapNeed {
        cap: Capability::CAP_DAC_READ_SEARCH,
        phase: Phase::Kept,
        why: "read those /proc entries and cgroup directories whatever their modes",
    },
    CapNeed {
        cap: Capability::CAP_SETUID,
        phase: Phase::User,
        why: "switch each thread to the user",
    },
    CapNeed {
        cap: Capability::CAP_SETGID,
        phase: Phase::User,
        why: "switch each thread to the group",
    },
    CapNeed {
        cap: Capability::CAP_CHOWN,
        phase: Phase::User,
        why: "hand the data directory over to the user",
    },
    CapNeed {
        cap: Capability::CAP_SYS_ADMIN,
        phase: Phase::Lookups,
        why: "the libc lookup uprobes (this kernel refuses a uprobe without it, CAP_PERFMON and \
              CAP_BPF too); the recorder drops it once attached, only its lookup attach helper \
              process keeps it (C libraries first seen after start); optional: without it \
              lookups are not recorded, the rest is",
    },
];

/// On its own, it stands for all the [`Phase::Load`] capabilities (it did before Linux 5.8
/// split CAP_BPF and CAP_PERFMON off, and still implies them).
pub const LOAD_ALTERNATIVE: Capability = Capability::CAP_SYS_ADMIN;

/// The capabilities needed in `phase`.
pub fn needed(phase: Phase) -> impl Iterator<Item = Capability> {
    CAPABILITIES
        .into_iter()
        .filter(move |c| c.phase == phase)
        .map(|c| c.cap)
}

/// `CAP_A, CAP_B and CAP_C`.
pub fn names(caps: impl Iterator<Item = Capability>) -> String {
    let v: Vec<String> = caps.map(|c| c.to_string()).collect();
    match v.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// Whether an effective capability mask (as in `/proc/self/status` `CapEff`) may load and
/// attach the programs.
pub fn may_load(effective: u64) -> bool {
    let has = |c: Capability| effective & (1u64 << c.index()) != 0;
    has(LOAD_ALTERNATIVE) || needed(Phase::Load).all(has)
}

/// The long help of `dnsledger record`: what it needs, from [`CAPABILITIES`].
pub fn record_help() -> String {
    let mut s = String::from(
        "Capture DNS with eBPF until SIGINT/SIGTERM, writing segments under the data directory.\n\n\
         Needs a kernel with BTF, a cgroup v2 hierarchy, and root or these capabilities:\n",
    );
    for c in CAPABILITIES {
        let when = match c.phase {
            Phase::Load => "to attach",
            Phase::Kept => "kept",
            Phase::User => "--user",
            Phase::Lookups => "lookups",
        };
        s.push_str(&format!("  {:<20} ({when}) {}\n", c.cap.to_string(), c.why));
    }
    s.push_str(&format!(
        "({LOAD_ALTERNATIVE} alone stands for the three \"to attach\" ones.) Logs \"recording\" once \
         every program is attached.",
    ));
    s
}

#[derive(Debug, thiserror::Error)]
#[error("cannot drop privileges: {0}")]
pub struct PrivsError(String);

/// The user and group the recorder runs as once its programs are attached (`--user`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// As given, for messages.
    pub spec: String,
}

/// Parses `USER[:GROUP]`: names or numbers. Without a group, the user's primary group from
/// the password database; a numeric user that is not in it needs an explicit group.
pub fn parse_run_as(spec: &str) -> Result<RunAs, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(format!("`{spec}`: expected USER or USER:GROUP"));
    }
    let pw = lookup_user(user);
    let uid = match (&pw, user.parse::<u32>()) {
        (Some((uid, _)), _) => *uid,
        (None, Ok(uid)) => uid,
        (None, Err(_)) => return Err(format!("`{user}`: no such user")),
    };
    let gid = match group {
        Some(g) => match (lookup_group(g), g.parse::<u32>()) {
            (Some(gid), _) | (None, Ok(gid)) => gid,
            (None, Err(_)) => return Err(format!("`{g}`: no such group")),
        },
        None => match pw {
            Some((_, gid)) => gid,
            None => {
                return Err(format!(
                    "`{user}` is not in the password database: give its group too ({user}:GROUP)"
                ));
            }
        },
    };
    if uid == 0 {
        return Err(format!(
            "`{spec}`: --user is for leaving root; omit it to stay root"
        ));
    }
    Ok(RunAs {
        uid,
        gid,
        spec: spec.to_string(),
    })
}

// getpwnam_r/getgrnam_r through libc: the only account lookups needed, two calls; a crate for
// the whole passwd/group API (uzers, nix's `unistd` feature) would add more than it saves.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwnam_r writes only into `pwd` and
    // `buf` (whose length it is given) and sets `result` to null or to `&pwd`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
    }
}

fn lookup_group(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: as in `lookup_user`, for getgrnam_r.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
    }
}

/// Gives `dir` and everything under it (symlinks themselves, never their targets) to
/// `uid:gid`, touching only what differs. Returns how many entries changed owner.
pub fn chown_tree(dir: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut changed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p)?;
        if md.uid() != uid || md.gid() != gid {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
            changed += 1;
        }
        if md.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(changed)
}

fn os_err(what: &str) -> PrivsError {
    PrivsError(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// Switches the calling thread (only) to `who`, keeping its permitted capabilities.
fn switch_thread_user(who: &RunAs) -> Result<(), PrivsError> {
    let (uid, gid) = (who.uid as libc::c_long, who.gid as libc::c_long);
    let groups: [libc::gid_t; 1] = [who.gid];
    // SAFETY: prctl and the set*id system calls take integers; setgroups reads `groups.len()`
    // gids from a live array.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err(os_err("PR_SET_KEEPCAPS"));
        }
        if libc::syscall(libc::SYS_setgroups, 1 as libc::c_long, groups.as_ptr()) != 0 {
            return Err(os_err("setgroups"));
        }
        if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
            return Err(os_err(&format!("setresgid({})", who.gid)));
        }
        if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
            return Err(os_err(&format!("setresuid({})", who.uid)));
        }
        if libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0 {
            return Err(os_err("PR_SET_KEEPCAPS"));
        }
    }
    Ok(())
}

/// Reduces the calling thread's capabilities to the [`Phase::Kept`] ones, switches it to `run_as` when given,
/// and sets `no_new_privs`.
pub fn drop_to_minimum(run_as: Option<&RunAs>) -> Result<(), PrivsError> {
    drop_to(&needed(Phase::Kept).collect(), run_as)
}

/// Reduces the calling thread's capabilities to `kept` (those of them it holds) in every set,
/// switches it to `run_as` when given, and sets `no_new_privs`.
pub fn drop_to(kept: &CapsHashSet, run_as: Option<&RunAs>) -> Result<(), PrivsError> {
    let err = |e: caps::errors::CapsError| PrivsError(e.to_string());
    // The bounding set needs CAP_SETPCAP, so it goes first, while that is still held.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).map_err(err)? {
        for cap in caps::read(None, CapSet::Bounding).map_err(err)? {
            if !kept.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(err)?;
            }
        }
    }
    // Leaving uid 0 empties the effective set; the permitted set survives (KEEPCAPS) and the
    // kept capabilities are raised again below.
    if let Some(who) = run_as {
        switch_thread_user(who)?;
    }
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::clear(None, CapSet::Inheritable).map_err(err)?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(err)?;
    let keep: CapsHashSet = permitted.intersection(kept).copied().collect();
    caps::set(None, CapSet::Effective, &keep).map_err(err)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err)?;
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(PrivsError(std::io::Error::last_os_error().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_stated_once_and_used() {
        assert_eq!(
            names(needed(Phase::Load)),
            "CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"
        );
        assert_eq!(
            names(needed(Phase::Kept)),
            "CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"
        );
        assert_eq!(names(needed(Phase::Lookups)), "CAP_SYS_ADMIN");
        let bit = |c: Capability| 1u64 << c.index();
        let load: u64 = needed(Phase::Load).map(bit).sum();
        assert!(may_load(load));
        assert!(may_load(bit(LOAD_ALTERNATIVE)));
        assert!(!may_load(load & !bit(Capability::CAP_NET_ADMIN)));
        assert!(!may_load(0));
        let help = record_help();
        for c in CAPABILITIES {
            assert!(
                help.contains(&c.cap.to_string()) && help.contains(c.why),
                "{help}"
            );
        }
    }

    #[test]
    fn run_as_specs() {
        // Debian always has root and nobody/nogroup (65534).
        let nobody = parse_run_as("nobody").expect("nobody");
        assert_eq!((nobody.uid, nobody.gid), (65534, 65534));
        assert_eq!(
            parse_run_as("nobody:nogroup").map(|r| (r.uid, r.gid)),
            Ok((65534, 65534))
        );
        assert_eq!(
            parse_run_as("4321:4322").map(|r| (r.uid, r.gid)),
            Ok((4321, 4322))
        );
        assert!(
            parse_run_as("4321")
                .unwrap_err()
                .contains("give its group too")
        );
        assert!(
            parse_run_as("no-such-user-x")
                .unwrap_err()
                .contains("no such user")
        );
        assert!(
            parse_run_as("nobody:no-such-group-x")
                .unwrap_err()
                .contains("no such group")
        );
        assert!(parse_run_as("root").unwrap_err().contains("leaving root"));
        assert!(parse_run_as("nobody:").is_err());
    }

    #[test]
    fn chown_tree_changes_only_what_differs() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        std::fs::write(dir.path().join("a/b/f"), b"x").expect("write");
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("a/link")).expect("link");
        let md = std::fs::metadata(dir.path()).expect("meta");
        let (uid, gid) = (md.uid(), md.gid());
        assert_eq!(chown_tree(dir.path(), uid, gid).expect("chown"), 0);
        if uid == 0 {
            // Root can give files away: everything changes, the link's target does not.
            let target = std::fs::metadata("/etc/hostname").expect("meta");
            assert_eq!(chown_tree(dir.path(), 65534, 65534).expect("chown"), 5);
            let f = std::fs::metadata(dir.path().join("a/b/f")).expect("meta");
            assert_eq!((f.uid(), f.gid()), (65534, 65534));
            let t = std::fs::metadata("/etc/hostname").expect("meta");
            assert_eq!((t.uid(), t.gid()), (target.uid(), target.gid()));
        }
    }
}
