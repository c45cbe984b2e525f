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
//!
//! A uprobe needs CAP_SYS_ADMIN on this kernel, which the recorder gives up once attached. The
//! libraries present at start (installed in the host's library directories, or mapped) are
//! attached directly, before the drop; one first seen afterwards (a container started later,
//! a chroot, a new image) is attached by the [`attach_helper`](super::attach_helper) process,
//! which keeps only that capability: the recorder opens the file (through /proc/PID/root) and
//! the helper hands back the two BPF links per function, which the recorder holds like its own.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, UprobeOpts};
use tracing::{debug, info, warn};

use super::attach_helper::{Helper, HelperError, Status};
use super::bpf::BpfError;
use super::lookup_skel::types::lookup_counter;
use super::lookup_skel::{LookupsSkel, LookupsSkelBuilder};
use super::privs::RunAs;
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

/// The programs' fds, in [`LOOKUP_PROGRAMS`] order (what the attach helper is given).
fn program_fds<'a>(skel: &'a LookupsSkel<'_>) -> [BorrowedFd<'a>; 5] {
    let p = &skel.progs;
    [
        p.lookup_getaddrinfo.as_fd(),
        p.lookup_gethostbyname.as_fd(),
        p.lookup_gethostbyname2.as_fd(),
        p.lookup_getnameinfo.as_fd(),
        p.lookup_return.as_fd(),
    ]
}

/// What attaching to one library gave.
#[derive(Debug, Default)]
pub struct Attached {
    pub links: Vec<Link>,
    /// The links the attach helper made (BPF link fds: the probe lives while one is open).
    pub fds: Vec<OwnedFd>,
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
    /// Links made by the attach helper, after the privilege drop.
    late_links: Vec<OwnedFd>,
    /// Attach directly (privileged, at start), else through the helper.
    direct: bool,
    helper: Option<Helper>,
    /// Why there is no helper (for the warnings).
    no_helper: String,
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
            late_links: Vec::new(),
            direct: true,
            helper: None,
            no_helper: "was not started".into(),
            seen: HashSet::new(),
            pending: VecDeque::new(),
            libraries: Vec::new(),
        }
    }

    /// Starts the attach helper (while the calling thread still holds its capabilities): C
    /// libraries first seen after [`Self::privileges_dropped`] are attached through it. A
    /// failure is a warning: those libraries are then not probed.
    pub fn start_helper(&mut self, run_as: Option<&RunAs>) {
        match Helper::start(&program_fds(&self.skel), run_as) {
            Ok(h) => {
                info!(
                    helper_pid = h.pid(),
                    "libc lookups: attach helper started (keeps CAP_SYS_ADMIN only, to probe C \
                     libraries first seen after start)"
                );
                self.helper = Some(h);
            }
            Err(e) => {
                warn!(
                    "libc lookups: C libraries first seen after start will not be probed: {e}\n\
                     hint: the helper needs CAP_SYS_ADMIN at start (run as root, or keep it in \
                     the bounding set); `dnsledger check` says whether late attach works"
                );
                self.no_helper = format!("could not start ({e})");
            }
        }
    }

    /// The recorder gave up its capabilities: attach through the helper from now on.
    pub fn privileges_dropped(&mut self) {
        self.direct = false;
    }

    /// The attach helper's pid, when it runs.
    pub fn helper_pid(&self) -> Option<u32> {
        self.helper.as_ref().map(Helper::pid)
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
                    self.attach(std::process::id(), text, &path, kind, None);
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
                self.scan_pid(pid, None);
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
                    let (pid, at) = (*pid, *at);
                    self.pending.pop_front();
                    self.scan_pid(pid, Some(at));
                }
                _ => break,
            }
        }
    }

    /// Attaches to the C libraries process `pid` maps that are not attached yet (`exec_at`:
    /// when its exec was seen).
    fn scan_pid(&mut self, pid: u32, exec_at: Option<Instant>) {
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
            self.attach(pid, &path, &full, kind, exec_at);
        }
    }

    /// Attaches through the helper (after the privilege drop).
    fn attach_through_helper(&mut self, full: &Path) -> Attached {
        let mut out = Attached::default();
        let denied_all = |out: &mut Attached, why: &str| {
            for f in PROBED {
                out.missing.push((f, why.to_string(), true));
            }
        };
        let Some(helper) = self.helper.as_mut() else {
            denied_all(&mut out, "permission denied");
            return out;
        };
        let file = match File::open(full) {
            Ok(f) => f,
            Err(e) => {
                for f in PROBED {
                    out.missing.push((f, format!("open: {e}"), false));
                }
                return out;
            }
        };
        let mut gone = None;
        for f in PROBED {
            match helper.attach(&file, f) {
                Ok(pair) => out.fds.extend(pair),
                Err(HelperError::Refused { status, text }) => {
                    let kind = match status {
                        Status::NotFound => "NotFound",
                        Status::Denied => "PermissionDenied",
                        _ => "Other",
                    };
                    out.missing
                        .push((f, format!("{text} ({kind})"), status == Status::Denied));
                }
                Err(e) => {
                    gone = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(e) = gone {
            warn!("libc lookups: {e}; C libraries first seen from now on are not probed");
            self.no_helper = format!("stopped ({e})");
            self.helper = None;
            out.fds.clear();
            out.missing.clear();
            denied_all(&mut out, "permission denied");
        }
        out
    }

    fn attach(&mut self, pid: u32, path: &str, full: &Path, kind: Libc, exec_at: Option<Instant>) {
        let started = Instant::now();
        let got = if self.direct {
            attach_library(&self.skel, full)
        } else {
            self.attach_through_helper(full)
        };
        let n = got.links.len() + got.fds.len();
        self.links.extend(got.links);
        self.late_links.extend(got.fds);
        if n > 0 {
            self.libraries.push(PathBuf::from(path));
            if self.direct {
                debug!(
                    pid,
                    library = path,
                    ?kind,
                    probes = n,
                    "libc lookups: attached"
                );
            } else {
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                info!(
                    pid,
                    library = path,
                    ?kind,
                    probes = n,
                    attach_ms = ms(started.elapsed()),
                    since_exec_ms = exec_at.map(|t| ms(t.elapsed())),
                    "libc lookups: a C library first seen after start, probed through the \
                     attach helper"
                );
            }
        }
        if !got.missing.is_empty() {
            let names: Vec<&str> = got.missing.iter().map(|(f, _, _)| f.as_str()).collect();
            if got.missing.iter().all(|(_, _, denied)| *denied) {
                if self.direct {
                    warn!(
                        "libc lookups: cannot probe {path} (of process {pid}, {kind:?}): \
                         permission denied (a uprobe needs CAP_SYS_ADMIN); lookups through it \
                         are not recorded, wire capture goes on"
                    );
                } else {
                    warn!(
                        "libc lookups: cannot probe {path} (of process {pid}, {kind:?}), first \
                         seen after start: permission denied (a uprobe needs CAP_SYS_ADMIN, \
                         which the recorder gives up once attached, and the attach helper that \
                         keeps it {}); it is not probed until the recorder restarts, wire \
                         capture goes on\nhint: `dnsledger check` says whether late attach \
                         works",
                        self.no_helper
                    );
                }
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
    out.push(check_helper(&skel, &libc));
    out
}

/// The name of `dnsledger check`'s line for late attach.
pub const HELPER_CHECK: &str = "lookup attach helper";

/// `dnsledger check`: starts the attach helper (which reduces itself to CAP_SYS_ADMIN, as in a
/// recording) and has it attach every function to `libc`: whether a C library first seen
/// after start gets probed.
fn check_helper(skel: &LookupsSkel<'_>, libc: &Path) -> (&'static str, bool, String) {
    let fail = |detail: String| {
        (
            HELPER_CHECK,
            false,
            format!("{detail}: C libraries first seen after start are not probed"),
        )
    };
    let mut helper = match Helper::start(&program_fds(skel), None) {
        Ok(h) => h,
        Err(e) => return fail(e.to_string()),
    };
    let file = match File::open(libc) {
        Ok(f) => f,
        Err(e) => return fail(format!("open {}: {e}", libc.display())),
    };
    let started = Instant::now();
    // Held until measured: detaching (closing them) takes longer than attaching.
    let mut links = Vec::new();
    for f in PROBED {
        match helper.attach(&file, f) {
            Ok(pair) => links.extend(pair),
            Err(e) => return fail(format!("{} in {}: {e}", f.as_str(), libc.display())),
        }
    }
    let took = started.elapsed();
    drop(links);
    (
        HELPER_CHECK,
        true,
        format!(
            "late attach works: the helper (CAP_SYS_ADMIN only) probed {} functions in {} in \
             {:.1} ms",
            PROBED.len(),
            libc.display(),
            took.as_secs_f64() * 1e3
        ),
    )
}
