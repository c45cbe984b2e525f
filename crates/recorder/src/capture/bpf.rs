//! The one module that touches libbpf-rs: open, configure, load, attach, poll.
//!
//! Programs are attached with BPF links to the cgroup v2 root. Links are multi-attach (other
//! tools' cgroup programs keep running) and are owned by this process only: nothing is pinned,
//! so every program is detached when the recorder exits, however it exits.

use std::fs::File;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, PrintLevel, RingBufferBuilder, TracepointCategory};

use super::privs;
use super::skel::{DnsledgerSkel, DnsledgerSkelBuilder, OpenDnsledgerSkel};

use super::abi::{
    CNT_BYPASS_RB_FULL, CNT_EXEC_RB_FULL, CNT_EXIT_RB_FULL, CNT_LOAD_BYTES, CNT_PKT_RB_FULL,
};
use super::abi::{COPY_LIMIT, COUNTERS, HEADER_ROOM, MAX_PORTS};

/// Programs attached to the cgroup v2 root.
const CGROUP_PROGRAMS: [&str; 8] = [
    "dns_egress",
    "dns_ingress",
    "dns_connect4",
    "dns_connect6",
    "dns_sendmsg4",
    "dns_sendmsg6",
    "dns_recvmsg4",
    "dns_recvmsg6",
];
/// Programs attached to tracepoints.
const TRACE_PROGRAMS: [&str; 2] = ["dns_exec", "dns_exit"];
/// Programs whose `--serve-side` path `dnsledger check` probes (the same programs, loaded with
/// the server-side code in: it is compiled out without the flag).
const SERVE_SIDE_PROGRAMS: [&str; 4] =
    ["dns_egress", "dns_ingress", "dns_recvmsg4", "dns_recvmsg6"];
/// Programs loaded and attached only with `--stacks`: `dns_stack_enter` on the
/// `syscalls:sys_enter_<call>` tracepoint and `dns_stack_exit` on `syscalls:sys_exit_<call>` of
/// each of [`SEND_SYSCALLS`] (not on raw `sys_enter`/`sys_exit`, which would run a program on
/// every syscall of the host).
const STACK_PROGRAMS: [&str; 2] = ["dns_stack_enter", "dns_stack_exit"];
/// The send calls whose user stack `--stacks` takes (`send` is `sendto` on x86_64).
const SEND_SYSCALLS: [&str; 5] = ["sendto", "sendmsg", "sendmmsg", "write", "writev"];
/// Where tracefs is mounted (libbpf looks there, or in `/sys/kernel/debug/tracing`, for the
/// id of a tracepoint).
const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
/// Threads that can be inside a DNS send syscall at once, with `--stacks`.
const PENDING_STACKS: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "recording needs root (or {}, or {})\n\
         hint: run `sudo dnsledger record`",
        load_caps(),
        privs::LOAD_ALTERNATIVE
    )]
    NotPrivileged,
    #[error(
        "no cgroup v2 hierarchy is mounted (none in /proc/self/mountinfo)\n\
         hint: mount one with `mount -t cgroup2 none /sys/fs/cgroup` or boot with \
         systemd.unified_cgroup_hierarchy=1"
    )]
    NoCgroup2,
    #[error(
        "the kernel has no BTF (/sys/kernel/btf/vmlinux is missing)\n\
         hint: use a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open cgroup {path}: {source}")]
    CgroupOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the BPF object: {0}")]
    Open(libbpf_rs::Error),
    #[error(
        "cannot load the BPF programs: {0}\nhint: run `dnsledger check` to see which program the kernel refuses"
    )]
    Load(libbpf_rs::Error),
    #[error("cannot attach BPF program `{program}`: {source}")]
    Attach {
        program: &'static str,
        source: libbpf_rs::Error,
    },
    #[error("BPF program `{0}` is missing from the object")]
    MissingProgram(&'static str),
    #[error("cannot set up the ring buffer: {0}")]
    RingBuffer(libbpf_rs::Error),
    #[error("polling the ring buffer failed: {0}")]
    Poll(libbpf_rs::Error),
    #[error("too many DNS ports: {0} (at most {MAX_PORTS})")]
    TooManyPorts(usize),
    #[error(
        "--stacks needs tracefs (for the ids of the syscall tracepoints) and it is not mounted; \
         mounting it at {TRACEFS} failed: {0}\n\
         hint: mount it as root: `mount -t tracefs tracefs {TRACEFS}`, or record without --stacks"
    )]
    NoTracefs(std::io::Error),
    #[error(
        "--stacks needs the syscall tracepoints and this kernel has none ({0} is missing)\n\
         hint: use a kernel built with CONFIG_FTRACE_SYSCALLS=y, or record without --stacks"
    )]
    NoSyscallTracepoints(PathBuf),
    #[error(
        "cannot fill the DoH endpoint map ({0} addresses): {1}\n\
         hint: a shorter --doh-list, or --no-bypass"
    )]
    DohMap(usize, libbpf_rs::Error),
}

/// What the programs are told before they are loaded.
#[derive(Clone, Debug)]
pub struct BpfConfig {
    /// DNS ports (1..=16 of them).
    pub ports: Vec<u16>,
    /// Bytes of DNS payload to copy at most.
    pub max_payload: u32,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Process never to record (the recorder itself).
    pub self_tgid: u32,
    /// Capture the user stack of each DNS send (`--stacks`).
    pub stacks: bool,
    /// Report connections to encrypted-DNS endpoints (off with `--no-bypass`).
    pub bypass: bool,
    /// The DoH endpoint addresses (`--doh-list`): port 443 to these is `doh-likely`.
    pub doh_endpoints: Vec<IpAddr>,
    /// Also record a local DNS server's side (`--serve-side`).
    pub serve_side: bool,
    /// Probe the C libraries' resolver functions (off with `--no-lookups`).
    pub lookups: bool,
    /// The user the recorder switches to once attached (`--user`): the lookup attach helper
    /// switches to it too.
    pub run_as: Option<super::privs::RunAs>,
}

/// In-kernel counters, summed over CPUs, as last read.
#[derive(Debug, Default)]
pub struct KernelCounters {
    /// Bytes waiting in the ring buffer at the last look (every 500 ms) and its size.
    pub ring_used: AtomicU64,
    pub ring_size: AtomicU64,
    pub values: [AtomicU64; COUNTERS],
    /// The libc lookup programs' counters (indexes `uprobes::LCNT_*`; zero without them).
    pub lookup_values: [AtomicU64; super::uprobes::LOOKUP_COUNTERS],
}

impl KernelCounters {
    /// Events lost in the kernel: ring buffer full (packets, execs, exits, bypass events,
    /// lookup events) and
    /// packets whose bytes could not be copied. A socket-storage failure loses no event (the
    /// packet is still sent, with the current task as owner) and is not counted here.
    pub fn dropped(&self) -> u64 {
        [
            CNT_PKT_RB_FULL,
            CNT_EXEC_RB_FULL,
            CNT_EXIT_RB_FULL,
            CNT_LOAD_BYTES,
            CNT_BYPASS_RB_FULL,
        ]
        .iter()
        .map(|&i| self.get(i))
        .sum::<u64>()
            + self.lookup_values[super::uprobes::LCNT_RB_FULL].load(Ordering::Relaxed)
    }
    pub fn get(&self, i: usize) -> u64 {
        self.values[i].load(Ordering::Relaxed)
    }
}

/// Finds the mount point of the cgroup v2 hierarchy in a mountinfo text.
pub fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Fields: id parent maj:min root mountpoint options [optional...] - fstype source superopts
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mount_point = pre.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 mount point of this machine.
pub fn cgroup2_root() -> Result<PathBuf, BpfError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|source| BpfError::Io {
        path: path.into(),
        source,
    })?;
    cgroup2_mount_in(&text).ok_or(BpfError::NoCgroup2)
}

/// Effective capabilities of this process (bit mask from /proc/self/status).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// True if this process may load and attach the programs ([`privs::may_load`]).
pub fn privileged() -> bool {
    privs::may_load(effective_caps())
}

/// `CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN`: what loading needs, from [`privs::CAPABILITIES`].
fn load_caps() -> String {
    privs::names(privs::needed(privs::Phase::Load))
}

/// Checks what recording needs before anything is loaded, naming the first thing missing.
pub fn preflight() -> Result<PathBuf, BpfError> {
    if !privileged() {
        return Err(BpfError::NotPrivileged);
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(BpfError::NoBtf);
    }
    cgroup2_root()
}

/// Routes libbpf's own messages through `tracing`.
pub fn route_libbpf_log() {
    fn print(level: PrintLevel, msg: String) {
        let msg = msg.trim_end();
        match level {
            PrintLevel::Warn => tracing::warn!(target: "libbpf", "{msg}"),
            PrintLevel::Info => tracing::info!(target: "libbpf", "{msg}"),
            PrintLevel::Debug => tracing::debug!(target: "libbpf", "{msg}"),
        }
    }
    libbpf_rs::set_print(Some((PrintLevel::Debug, print)));
}

fn configure(open: &mut OpenDnsledgerSkel<'_>, cfg: &BpfConfig) -> Result<(), BpfError> {
    if cfg.ports.len() > MAX_PORTS {
        return Err(BpfError::TooManyPorts(cfg.ports.len()));
    }
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .ok_or(BpfError::MissingProgram(".rodata"))?;
    rodata.dns_ports = [0; MAX_PORTS];
    rodata.dns_ports[..cfg.ports.len()].copy_from_slice(&cfg.ports);
    rodata.n_ports = cfg.ports.len() as u32;
    rodata.max_copy = cfg.max_payload.saturating_add(HEADER_ROOM).min(COPY_LIMIT);
    rodata.self_tgid = cfg.self_tgid;
    // A wakeup per packet costs more than the packet (two thread switches); the reader polls
    // every POLL_EVERY anyway, so the kernel only wakes it early when an eighth of the ring
    // is waiting.
    rodata.wakeup_bytes = cfg.ring_bytes / 8;
    rodata.stacks_enabled = cfg.stacks;
    rodata.bypass_enabled = cfg.bypass;
    rodata.serve_side = cfg.serve_side;
    open.maps
        .events
        .set_max_entries(cfg.ring_bytes)
        .map_err(BpfError::Open)?;
    // Without --stacks the stack programs are not loaded and their map holds nothing (an LRU
    // hash is preallocated: 4096 entries would take 2 MiB for nothing).
    open.maps
        .pending_stacks
        .set_max_entries(if cfg.stacks { PENDING_STACKS } else { 1 })
        .map_err(BpfError::Open)?;
    // The DoH map holds the list and nothing more (a hash map needs at least one entry).
    let doh_entries = if cfg.bypass {
        cfg.doh_endpoints.len().max(1)
    } else {
        1
    };
    open.maps
        .doh_endpoints
        .set_max_entries(u32::try_from(doh_entries).unwrap_or(u32::MAX))
        .map_err(BpfError::Open)?;
    if !cfg.stacks {
        for mut prog in open.open_object_mut().progs_mut() {
            if STACK_PROGRAMS.iter().any(|n| prog.name() == *n) {
                prog.set_autoload(false);
            }
        }
    }
    Ok(())
}

/// Puts the DoH endpoint addresses into the kernel's map (before the programs attach).
fn fill_doh_map(skel: &DnsledgerSkel<'_>, cfg: &BpfConfig) -> Result<(), BpfError> {
    if !cfg.bypass {
        return Ok(());
    }
    for ip in &cfg.doh_endpoints {
        let key = crate::bypass::to_kernel_addr(*ip);
        skel.maps
            .doh_endpoints
            .update(&key, &[1u8], MapFlags::ANY)
            .map_err(|e| BpfError::DohMap(cfg.doh_endpoints.len(), e))?;
    }
    Ok(())
}

fn attach_all(
    skel: &DnsledgerSkel<'_>,
    cgroup: &File,
    stacks: bool,
) -> Result<Vec<Link>, BpfError> {
    let mut links = Vec::new();
    for name in CGROUP_PROGRAMS {
        let prog = program(skel, name)?;
        let link = prog
            .attach_cgroup(cgroup.as_raw_fd())
            .map_err(|source| BpfError::Attach {
                program: name,
                source,
            })?;
        links.push(link);
    }
    for name in TRACE_PROGRAMS {
        let prog = program(skel, name)?;
        let link = prog.attach().map_err(|source| BpfError::Attach {
            program: name,
            source,
        })?;
        links.push(link);
    }
    if stacks {
        ensure_tracefs()?;
        for name in STACK_PROGRAMS {
            links.extend(attach_stack_program(skel, name)?);
        }
    }
    Ok(links)
}

/// Attaches a `--stacks` program to the enter (`dns_stack_enter`) or exit tracepoint of each
/// send syscall.
fn attach_stack_program(
    skel: &DnsledgerSkel<'_>,
    name: &'static str,
) -> Result<Vec<Link>, BpfError> {
    let prog = program(skel, name)?;
    let side = if name == "dns_stack_enter" {
        "enter"
    } else {
        "exit"
    };
    SEND_SYSCALLS
        .iter()
        .map(|call| {
            prog.attach_tracepoint(TracepointCategory::Syscalls, format!("sys_{side}_{call}"))
                .map_err(|source| BpfError::Attach {
                    program: name,
                    source,
                })
        })
        .collect()
}

/// Makes sure the syscall tracepoints can be found: libbpf reads their ids from tracefs, which
/// a host may not mount at boot. Mounts it at [`TRACEFS`] if neither it nor debugfs's
/// `tracing` is there (needs CAP_SYS_ADMIN; the mount stays, as it would after `mount`).
fn ensure_tracefs() -> Result<(), BpfError> {
    let syscalls = |base: &str| Path::new(base).join("events/syscalls");
    // libbpf prefers debugfs's tracing directory when it exists.
    let base = if Path::new(DEBUGFS_TRACING).exists() {
        DEBUGFS_TRACING
    } else {
        TRACEFS
    };
    if syscalls(base).is_dir() {
        return Ok(());
    }
    if base == TRACEFS && !Path::new(TRACEFS).join("events").exists() {
        mount_tracefs().map_err(BpfError::NoTracefs)?;
        tracing::info!("mounted tracefs at {TRACEFS} (the --stacks tracepoints need it)");
    }
    if syscalls(base).is_dir() {
        Ok(())
    } else {
        Err(BpfError::NoSyscallTracepoints(syscalls(base)))
    }
}

fn mount_tracefs() -> std::io::Result<()> {
    let source = c"tracefs";
    let target = c"/sys/kernel/tracing";
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; `data` may be
    // null for tracefs. mount(2) only reads them.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn program<'a>(
    skel: &'a DnsledgerSkel<'_>,
    name: &'static str,
) -> Result<&'a libbpf_rs::ProgramMut<'a>, BpfError> {
    let p = &skel.progs;
    Ok(match name {
        "dns_egress" => &p.dns_egress,
        "dns_ingress" => &p.dns_ingress,
        "dns_connect4" => &p.dns_connect4,
        "dns_connect6" => &p.dns_connect6,
        "dns_sendmsg4" => &p.dns_sendmsg4,
        "dns_sendmsg6" => &p.dns_sendmsg6,
        "dns_recvmsg4" => &p.dns_recvmsg4,
        "dns_recvmsg6" => &p.dns_recvmsg6,
        "dns_exec" => &p.dns_exec,
        "dns_exit" => &p.dns_exit,
        "dns_stack_enter" => &p.dns_stack_enter,
        "dns_stack_exit" => &p.dns_stack_exit,
        other => return Err(BpfError::MissingProgram(other)),
    })
}

fn open_cgroup(path: &Path) -> Result<File, BpfError> {
    File::open(path).map_err(|source| BpfError::CgroupOpen {
        path: path.into(),
        source,
    })
}

/// Records how full the (only) ring buffer is.
fn read_ring_fill(ring: &libbpf_rs::RingBuffer<'_>, out: &KernelCounters) {
    use libbpf_rs::AsRawLibbpf;
    let rb = ring.as_libbpf_object().as_ptr();
    // SAFETY: `rb` is the live ring_buffer owned by `ring`; index 0 exists (one map was added),
    // and the returned ring stays valid as long as `rb`. Both size functions only read it.
    let (used, size) = unsafe {
        let r = libbpf_sys::ring_buffer__ring(rb, 0);
        if r.is_null() {
            return;
        }
        (
            libbpf_sys::ring__avail_data_size(r),
            libbpf_sys::ring__size(r),
        )
    };
    out.ring_used.store(used, Ordering::Relaxed);
    out.ring_size.store(size, Ordering::Relaxed);
}

/// Reads the per-CPU counters, summed over CPUs.
fn read_counters(skel: &DnsledgerSkel<'_>, out: &KernelCounters) {
    for (i, slot) in out.values.iter().enumerate() {
        let key = (i as u32).to_ne_bytes();
        if let Ok(Some(per_cpu)) = skel.maps.counters.lookup_percpu(&key, MapFlags::ANY) {
            let sum = per_cpu
                .iter()
                .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                .map(u64::from_ne_bytes)
                .sum();
            slot.store(sum, Ordering::Relaxed);
        }
    }
}

/// How long the reader sleeps at most between two looks at the ring buffer: the latency a
/// record can wait in the kernel (the programs only wake the reader early when the ring fills).
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Loads and attaches every program, calls `ready` once capturing, then hands each ring
/// buffer record to `on_event` until `stop` is set. `on_idle` runs after every poll round
/// (at least every 50 ms). Everything is detached when this returns.
pub fn capture(
    cfg: &BpfConfig,
    cgroup_root: &Path,
    stop: &AtomicBool,
    counters: &KernelCounters,
    ready: impl FnOnce(),
    mut on_event: impl FnMut(&[u8]),
    mut on_idle: impl FnMut(),
) -> Result<(), BpfError> {
    let mut storage = MaybeUninit::uninit();
    let mut open = DnsledgerSkelBuilder::default()
        .open(&mut storage)
        .map_err(BpfError::Open)?;
    configure(&mut open, cfg)?;
    let skel = open.load().map_err(BpfError::Load)?;
    fill_doh_map(&skel, cfg)?;
    let cgroup = open_cgroup(cgroup_root)?;
    let _links = attach_all(&skel, &cgroup, cfg.stacks)?;
    // libc lookups: a failure here is a warning, the wire capture goes on.
    let mut lookup_storage = MaybeUninit::uninit();
    let mut lookups = if cfg.lookups {
        match super::uprobes::load(
            &mut lookup_storage,
            Some(skel.maps.events.as_fd()),
            cfg.self_tgid,
        ) {
            Ok(l) => {
                let mut probes = super::uprobes::LookupProbes::new(l);
                probes.scan_all();
                // Before `ready` drops the privileges: the helper keeps CAP_SYS_ADMIN.
                probes.start_helper(cfg.run_as.as_ref());
                Some(probes)
            }
            Err(e) => {
                tracing::warn!(
                    "libc lookups are not recorded: {e}\nhint: `dnsledger check` probes the \
                     lookup programs; --no-lookups silences this"
                );
                None
            }
        }
    } else {
        None
    };
    // Processes that exec'd, for the lookup probes to scan.
    let execs = std::cell::RefCell::new(Vec::<u32>::new());

    let mut builder = RingBufferBuilder::new();
    builder
        .add(&skel.maps.events, |data: &[u8]| {
            if cfg.lookups
                && let Some(pid) = super::events::exec_pid(data)
            {
                execs.borrow_mut().push(pid);
            }
            on_event(data);
            0
        })
        .map_err(BpfError::RingBuffer)?;
    let ring = builder.build().map_err(BpfError::RingBuffer)?;
    ready();
    if let Some(l) = &mut lookups {
        l.privileges_dropped();
    }
    let mut last_counters = Instant::now() - Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        match ring.poll(POLL_EVERY) {
            Ok(()) => {}
            // A signal interrupted the poll: look at `stop` again.
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => {}
            Err(e) => return Err(BpfError::Poll(e)),
        }
        // Records submitted without a wakeup: a poll that timed out consumed nothing.
        if let Err(e) = ring.consume() {
            return Err(BpfError::Poll(e));
        }
        if let Some(l) = &mut lookups {
            for pid in execs.borrow_mut().drain(..) {
                l.exec(pid);
            }
            l.tick();
        }
        if last_counters.elapsed() >= Duration::from_millis(500) {
            read_counters(&skel, counters);
            read_ring_fill(&ring, counters);
            if let Some(l) = &lookups {
                read_lookup_counters(l, counters);
            }
            last_counters = Instant::now();
        }
        on_idle();
    }
    // Drain what is already in the ring, then read the final counters.
    let _ = ring.consume();
    read_counters(&skel, counters);
    if let Some(l) = &lookups {
        read_lookup_counters(l, counters);
    }
    on_idle();
    Ok(())
}

fn read_lookup_counters(l: &super::uprobes::LookupProbes<'_>, out: &KernelCounters) {
    for (slot, v) in out.lookup_values.iter().zip(l.counters()) {
        slot.store(v, Ordering::Relaxed);
    }
}

/// One line of `dnsledger check`.
#[derive(Debug)]
pub struct Probe {
    pub what: String,
    pub ok: bool,
    /// Needed only by an option (`--stacks`): a failure does not stop plain recording.
    pub optional: bool,
    pub detail: String,
}

/// Probes everything recording needs: privileges, BTF, cgroup v2, the ring buffer and each
/// program (loaded alone, then attached and detached at once).
pub fn check(cfg: &BpfConfig) -> Vec<Probe> {
    let mut probes = Vec::new();
    let mut push = |what: &str, ok: bool, detail: String| {
        probes.push(Probe {
            what: what.to_string(),
            ok,
            optional: false,
            detail,
        })
    };
    let privileged = privileged();
    push(
        "privileges",
        privileged,
        if privileged {
            format!("root or {}", load_caps())
        } else {
            format!("missing: run as root or grant {}", load_caps())
        },
    );
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    push(
        "btf",
        btf,
        if btf {
            "/sys/kernel/btf/vmlinux".into()
        } else {
            "missing /sys/kernel/btf/vmlinux: needs CONFIG_DEBUG_INFO_BTF=y".into()
        },
    );
    let root = cgroup2_root();
    match &root {
        Ok(p) => push("cgroup2", true, format!("mounted at {}", p.display())),
        Err(e) => push("cgroup2", false, e.to_string()),
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    push("kernel", true, kernel.trim().to_string());
    if !privileged {
        return probes;
    }
    // The ring buffer and socket storage maps are created by any load. The sock_addr programs
    // are probed with the encrypted-DNS bypass code in (it is compiled out with --no-bypass).
    let bypass_cfg = BpfConfig {
        bypass: true,
        ..cfg.clone()
    };
    for name in CGROUP_PROGRAMS.iter().chain(TRACE_PROGRAMS.iter()) {
        let (ok, detail) = match probe_program(&bypass_cfg, name, root.as_ref().ok()) {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        push(&format!("program {name}"), ok, detail);
    }
    // The --stacks programs, probed with --stacks configured whatever `cfg` says.
    let stacks_cfg = BpfConfig {
        stacks: true,
        ..cfg.clone()
    };
    for name in STACK_PROGRAMS {
        let (ok, detail) = match probe_program(&stacks_cfg, name, root.as_ref().ok()) {
            Ok(d) => (true, format!("{d} (only for --stacks)")),
            Err(e) => (false, format!("{e} (only --stacks needs it)")),
        };
        push(&format!("program {name}"), ok, detail);
    }
    let n = probes.len();
    for p in &mut probes[n - STACK_PROGRAMS.len()..] {
        p.optional = true;
    }
    probes.extend(serve_side_probes(cfg, root.as_ref().ok()));
    // The libc lookup programs (uprobes): a failure leaves lookups unrecorded, not the rest.
    for (name, ok, detail) in super::uprobes::check(cfg.self_tgid) {
        let detail = if ok {
            detail
        } else {
            format!("{detail} (libc lookups are not recorded without it; --no-lookups)")
        };
        let what = if super::uprobes::LOOKUP_PROGRAMS.contains(&name) {
            format!("program {name}")
        } else {
            name.to_string()
        };
        probes.push(Probe {
            what,
            ok,
            optional: true,
            detail,
        });
    }
    probes
}

/// `--serve-side`: the cgroup programs loaded and attached with the server-side path in
/// (optional lines: recording the client side does not need it).
fn serve_side_probes(cfg: &BpfConfig, cgroup_root: Option<&PathBuf>) -> Vec<Probe> {
    let serve_cfg = BpfConfig {
        serve_side: true,
        ..cfg.clone()
    };
    SERVE_SIDE_PROGRAMS
        .iter()
        .map(|name| {
            let (ok, detail) = match probe_program(&serve_cfg, name, cgroup_root) {
                Ok(d) => (true, format!("{d} (with --serve-side)")),
                Err(e) => (false, format!("{e} (only --serve-side needs it)")),
            };
            Probe {
                what: format!("program {name} --serve-side"),
                ok,
                optional: true,
                detail,
            }
        })
        .collect()
}

fn probe_program(
    cfg: &BpfConfig,
    name: &'static str,
    cgroup_root: Option<&PathBuf>,
) -> Result<String, BpfError> {
    let mut storage = MaybeUninit::uninit();
    let mut open = DnsledgerSkelBuilder::default()
        .open(&mut storage)
        .map_err(BpfError::Open)?;
    configure(&mut open, cfg)?;
    for mut prog in open.open_object_mut().progs_mut() {
        let keep = prog.name() == name;
        prog.set_autoload(keep);
    }
    let skel = open.load().map_err(BpfError::Load)?;
    let prog = program(&skel, name)?;
    let kind = format!("{:?}", prog.prog_type());
    if STACK_PROGRAMS.contains(&name) {
        ensure_tracefs()?;
        let _links = attach_stack_program(&skel, name)?;
        let side = if name == "dns_stack_enter" {
            "enter"
        } else {
            "exit"
        };
        return Ok(format!(
            "{kind}: loads and attaches to syscalls:sys_{side}_{{{}}}",
            SEND_SYSCALLS.join(",")
        ));
    }
    if CGROUP_PROGRAMS.contains(&name) {
        let root = cgroup_root.ok_or(BpfError::NoCgroup2)?;
        let cgroup = open_cgroup(root)?;
        let _link = prog
            .attach_cgroup(cgroup.as_raw_fd())
            .map_err(|source| BpfError::Attach {
                program: name,
                source,
            })?;
    } else {
        let _link = prog.attach().map_err(|source| BpfError::Attach {
            program: name,
            source,
        })?;
    }
    Ok(format!("{kind}: loads and attaches"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::abi::COUNTER_NAMES;
    use crate::capture::skel;

    #[test]
    fn finds_cgroup2_mount() {
        let text = "25 1 0:23 / /sys rw - sysfs sysfs rw\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount_in(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let escaped = "41 31 0:38 / /mnt/my\\040cg rw shared:5 - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount_in(escaped), Some(PathBuf::from("/mnt/my cg")));
        assert_eq!(
            cgroup2_mount_in("25 1 0:23 / /sys rw - sysfs sysfs rw\n"),
            None
        );
    }

    #[test]
    fn dropped_counts_lost_events_only() {
        let c = KernelCounters::default();
        for (i, v) in [3u64, 5, 7, 11, 13, 1000].iter().enumerate() {
            c.values[i].store(*v, Ordering::Relaxed);
        }
        // ring buffer full (3 + 5 + 7) and copy failures (11); not storage failures, not sent.
        assert_eq!(c.dropped(), 26);
        assert_eq!(COUNTER_NAMES[CNT_LOAD_BYTES], "packet_copy_failed");
    }

    #[test]
    fn shared_struct_sizes() {
        use std::mem::size_of;
        // Sizes of the C structs in bpf/dnsledger.h (x86_64 / BPF ABI).
        assert_eq!(size_of::<skel::types::sock_owner>(), 48);
        assert_eq!(size_of::<skel::types::packet_event>(), 80);
        assert_eq!(size_of::<skel::types::exec_event>(), 4416);
        assert_eq!(size_of::<skel::types::exit_event>(), 16);
        assert_eq!(size_of::<skel::types::pending_stack>(), 528);
        assert_eq!(size_of::<skel::types::stack_event>(), 544);
        assert_eq!(size_of::<skel::types::bypass_event>(), 96);
        assert_eq!(size_of::<skel::types::bypass_seen>(), 24);
        assert_eq!(size_of::<skel::types::doh_key>(), 16);
    }
}
