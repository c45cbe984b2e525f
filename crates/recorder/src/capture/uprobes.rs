//! The libbpf-rs side of libc lookups (with [`super::bpf`], the only code that touches
//! libbpf-rs): loads `bpf/lookups.bpf.c` into the capture programs' ring buffer and attaches
//! its uprobes to every C library the recorder finds mapped.
//!
//! Libraries are found in /proc/PID/maps ([`crate::lookups::libcs_in_maps`]) and opened
//! through /proc/PID/root, so a container's own glibc or musl is probed too. A uprobe attached
//! by path with pid -1 fires in every process that maps that file, now or later: each file is
//! attached once, known by (device, inode). All processes are scanned at start; afterwards
//! each new process (an exec event) is scanned once, [`EXEC_SCAN_DELAY`] after its exec (its
//! dynamic linker maps the C library by then), at most [`SCANS_PER_ROUND`] per poll round. A
//! library without the resolver symbols (stripped, or a libc that lacks them) is a warning
//! naming it: wire capture goes on.

use std::collections::{HashSet, VecDeque};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, UprobeOpts};
use tracing::{debug, info, warn};

use super::bpf::BpfError;
use super::lookup_skel::types::lookup_counter;
use super::lookup_skel::{LookupsSkel, LookupsSkelBuilder};
use crate::lookups::{Libc, LookupFn, PROBED, in_root_of, libcs_in_maps};

/// Where C libraries are installed on a Debian-like host (glibc's multiarch directories,
/// musl's dynamic linker in /lib and Debian's musl libc.so).
const HOST_LIBRARY_DIRS: [&str; 6] = [
    "/lib",
    "/lib64",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-musl",
];

/// The lookup programs: one entry probe per function, one return probe for all.
pub const LOOKUP_PROGRAMS: [&str; 5] = [
    "lookup_getaddrinfo",
    "lookup_gethostbyname",
    "lookup_gethostbyname2",
    "lookup_getnameinfo",
    "lookup_return",
];
/// A new process's maps are read this long after its exec.
pub const EXEC_SCAN_DELAY: Duration = Duration::from_millis(30);
/// Processes scanned at most per poll round (50 ms): an exec storm costs bounded time.
pub const SCANS_PER_ROUND: usize = 64;
/// New processes waiting for their scan at most (beyond it the newest are not scanned; the
/// libraries they map are usually attached already).
const MAX_PENDING: usize = 4096;

/// Counters of the lookup programs, indexes of `lookup_counters`.
pub const LCNT_RB_FULL: usize = lookup_counter::LCNT_RB_FULL.0 as usize;
pub const LCNT_SENT: usize = lookup_counter::LCNT_SENT.0 as usize;
pub const LCNT_NESTED: usize = lookup_counter::LCNT_NESTED.0 as usize;
pub const LOOKUP_COUNTERS: usize = lookup_counter::LCNT_MAX.0 as usize;

/// Opens and loads the lookup programs; with `events`, their events go into that ring buffer
/// (the capture programs'), else into one of their own (`dnsledger check`).
pub fn load<'obj>(
    storage: &'obj mut MaybeUninit<OpenObject>,
    events: Option<BorrowedFd<'_>>,
    self_tgid: u32,
) -> Result<LookupsSkel<'obj>, BpfError> {
    let mut open = LookupsSkelBuilder::default()
        .open(storage)
        .map_err(BpfError::Open)?;
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .ok_or(BpfError::MissingProgram(".rodata"))?;
    rodata.self_tgid = self_tgid;
    if let Some(fd) = events {
        open.maps.events.reuse_fd(fd).map_err(BpfError::Open)?;
    }
    open.load().map_err(BpfError::Load)
}

fn entry_program<'a>(skel: &'a LookupsSkel<'_>, f: LookupFn) -> &'a libbpf_rs::ProgramMut<'a> {
    let p = &skel.progs;
    match f {
        LookupFn::GetAddrInfo => &p.lookup_getaddrinfo,
        LookupFn::GetHostByName => &p.lookup_gethostbyname,
        LookupFn::GetHostByName2 => &p.lookup_gethostbyname2,
        LookupFn::GetNameInfo => &p.lookup_getnameinfo,
    }
}

/// What attaching to one library gave.
#[derive(Debug, Default)]
pub struct Attached {
    pub links: Vec<Link>,
    /// Functions whose symbol the library lacks (or that would not attach), with the error
    /// and whether it was a permission error.
    pub missing: Vec<(LookupFn, String, bool)>,
}

/// Attaches the entry and return probes of every function to the library at `path`.
pub fn attach_library(skel: &LookupsSkel<'_>, path: &Path) -> Attached {
    let mut out = Attached::default();
    for f in PROBED {
        let mut pair = Vec::with_capacity(2);
        for (prog, retprobe) in [
            (entry_program(skel, f), false),
            (&skel.progs.lookup_return, true),
        ] {
            let opts = UprobeOpts {
                retprobe,
                func_name: Some(f.as_str().to_string()),
                ..UprobeOpts::default()
            };
            match prog.attach_uprobe_with_opts(-1, path, 0, opts) {
                Ok(link) => pair.push(link),
                Err(e) => {
                    // NotFound: no such symbol (stripped, or not in this C library).
                    let denied = e.kind() == libbpf_rs::ErrorKind::PermissionDenied;
                    out.missing
                        .push((f, format!("{e} ({:?})", e.kind()), denied));
                    break;
                }
            }
        }
        // An entry without its return (or the reverse) would leave threads stashed.
        if pair.len() == 2 {
            out.links.extend(pair);
        }
    }
    out
}

/// The lookup probes of a recording: the loaded programs, their links, and the libraries
/// looked at so far.
pub struct LookupProbes<'obj> {
    skel: LookupsSkel<'obj>,
    links: Vec<Link>,
    /// (device, inode) of every library looked at (attached or refused): each file once.
    seen: HashSet<(u64, u64)>,
    /// New processes to scan, with the time of their exec event.
    pending: VecDeque<(u32, Instant)>,
    /// Libraries attached (as the first process seen mapping them showed their path).
    pub libraries: Vec<PathBuf>,
}

impl<'obj> LookupProbes<'obj> {
    pub fn new(skel: LookupsSkel<'obj>) -> Self {
        Self {
            skel,
            links: Vec::new(),
            seen: HashSet::new(),
            pending: VecDeque::new(),
            libraries: Vec::new(),
        }
    }

    /// Attaches to the C libraries installed on the host at the usual places, mapped or not
    /// (at start, while privileged: a process started later with one of them is covered).
    pub fn scan_host_libraries(&mut self) {
        for dir in HOST_LIBRARY_DIRS {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(text) = path.to_str() else {
                    continue;
                };
                let Some(kind) = crate::lookups::libc_kind(text) else {
                    continue;
                };
                // Symlinks (ld-musl-*.so.1 -> libc.so) resolve to the file they name.
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if self.seen.insert((meta.dev(), meta.ino())) {
                    self.attach(std::process::id(), text, &path, kind);
                }
            }
        }
    }

    /// Scans every process's maps (at start).
    pub fn scan_all(&mut self) {
        self.scan_host_libraries();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            warn!("cannot list /proc: libc lookups are recorded for no library");
            return;
        };
        for entry in dir.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            {
                self.scan_pid(pid);
            }
        }
        info!(
            libraries = self.libraries.len(),
            links = self.links.len(),
            "libc lookups: probes attached"
        );
    }

    /// Notes a new process (an exec event): its maps are read a little later.
    pub fn exec(&mut self, pid: u32) {
        if self.pending.len() < MAX_PENDING {
            self.pending.push_back((pid, Instant::now()));
        }
    }

    /// Scans the new processes whose delay has passed (at most [`SCANS_PER_ROUND`]).
    pub fn tick(&mut self) {
        let now = Instant::now();
        for _ in 0..SCANS_PER_ROUND {
            match self.pending.front() {
                Some((pid, at)) if now.duration_since(*at) >= EXEC_SCAN_DELAY => {
                    let pid = *pid;
                    self.pending.pop_front();
                    self.scan_pid(pid);
                }
                _ => break,
            }
        }
    }

    /// Attaches to the C libraries process `pid` maps that are not attached yet.
    fn scan_pid(&mut self, pid: u32) {
        // The process may be gone already: nothing to do then.
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return;
        };
        for (path, kind) in libcs_in_maps(&maps) {
            let full = in_root_of(pid, &path);
            let Ok(meta) = std::fs::metadata(&full) else {
                continue;
            };
            if !self.seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            self.attach(pid, &path, &full, kind);
        }
    }

    fn attach(&mut self, pid: u32, path: &str, full: &Path, kind: Libc) {
        let got = attach_library(&self.skel, full);
        let n = got.links.len();
        self.links.extend(got.links);
        if n > 0 {
            self.libraries.push(PathBuf::from(path));
            debug!(
                pid,
                library = path,
                ?kind,
                probes = n,
                "libc lookups: attached"
            );
        }
        if !got.missing.is_empty() {
            let names: Vec<&str> = got.missing.iter().map(|(f, _, _)| f.as_str()).collect();
            if got.missing.iter().all(|(_, _, denied)| *denied) {
                warn!(
                    "libc lookups: cannot probe {} (of process {pid}, {kind:?}): permission \
                     denied (a uprobe needs CAP_SYS_ADMIN, which the recorder gives up once \
                     attached; a C library first seen after start is not probed until the \
                     recorder restarts); wire capture goes on",
                    path
                );
                return;
            }
            let first = got
                .missing
                .first()
                .map(|(_, e, _)| e.as_str())
                .unwrap_or("");
            warn!(
                "libc lookups: cannot probe {} in {} (of process {pid}, {kind:?}): {first} \
                 (NotFound: the symbol is missing, a stripped library?); lookups through {} \
                 are not recorded there, wire capture goes on",
                names.join(", "),
                path,
                if n == 0 { "it" } else { "those functions" },
            );
        }
    }

    /// The lookup programs' counters, summed over CPUs.
    pub fn counters(&self) -> [u64; LOOKUP_COUNTERS] {
        let mut out = [0u64; LOOKUP_COUNTERS];
        for (i, slot) in out.iter_mut().enumerate() {
            let key = (i as u32).to_ne_bytes();
            if let Ok(Some(per_cpu)) = self
                .skel
                .maps
                .lookup_counters
                .lookup_percpu(&key, MapFlags::ANY)
            {
                *slot = per_cpu
                    .iter()
                    .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                    .map(u64::from_ne_bytes)
                    .sum();
            }
        }
        out
    }
}

/// The C library this process maps (for `dnsledger check`).
pub fn own_libc() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    libcs_in_maps(&maps)
        .into_iter()
        .next()
        .map(|(p, _)| PathBuf::from(p))
}

/// `dnsledger check`: loads the lookup programs (with a ring buffer of their own) and attaches
/// each to the C library this process maps, then detaches. One `(program, ok, detail)` per
/// program of [`LOOKUP_PROGRAMS`].
pub fn check(self_tgid: u32) -> Vec<(&'static str, bool, String)> {
    let fail_all = |detail: String| {
        LOOKUP_PROGRAMS
            .iter()
            .map(|p| (*p, false, detail.clone()))
            .collect::<Vec<_>>()
    };
    let mut storage = MaybeUninit::uninit();
    let skel = match load(&mut storage, None, self_tgid) {
        Ok(s) => s,
        Err(e) => return fail_all(e.to_string()),
    };
    let Some(libc) = own_libc() else {
        return fail_all("no C library mapped by dnsledger itself to attach to".into());
    };
    let got = attach_library(&skel, &libc);
    let mut out = Vec::new();
    for (f, prog) in PROBED.iter().zip(LOOKUP_PROGRAMS) {
        match got.missing.iter().find(|(m, _, _)| m == f) {
            Some((_, e, _)) => out.push((
                prog,
                false,
                format!("{} in {}: {e}", f.as_str(), libc.display()),
            )),
            None => out.push((
                prog,
                true,
                format!(
                    "uprobe on {} in {}: loads and attaches",
                    f.as_str(),
                    libc.display()
                ),
            )),
        }
    }
    let returns = got.links.len() / 2;
    out.push((
        "lookup_return",
        returns == PROBED.len(),
        format!(
            "uretprobe on {returns} of {} functions in {}",
            PROBED.len(),
            libc.display()
        ),
    ));
    out
}
