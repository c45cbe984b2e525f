//! The lookup attach helper: a small process that keeps the one capability a uprobe needs on
//! this kernel (CAP_SYS_ADMIN, [`Phase::Lookups`]) so that the recorder can drop it and still
//! probe a C library first seen after start (a container or chroot started later, a new
//! image).
//!
//! The recorder starts it before it drops its privileges: a fork+exec of `/proc/self/exe`
//! with the hidden argument [`HELPER_ARG`] (not a bare fork of the multi-threaded recorder, and
//! not a thread: capabilities are per thread but memory is shared). The helper first reduces
//! itself to [`Phase::Lookups`] (every other capability leaves all five sets, `no_new_privs`,
//! the recorder's `--user` too), dies with the recorder (`PR_SET_PDEATHSIG`, and it exits when
//! its socket closes) and talks only over a `SOCK_SEQPACKET` socketpair (its fd 3):
//!
//! 1. recorder → helper, once: `progs` with the five lookup program fds ([`LOOKUP_PROGRAMS`]
//!    order) in `SCM_RIGHTS`; the helper checks that each is a BPF program of the uprobe
//!    (kprobe) type and answers.
//! 2. recorder → helper: `attach <function>` (one of the four resolver functions) with one fd,
//!    the library file opened read-only by the recorder (which still reads other processes'
//!    roots with its kept capabilities); the helper checks it is a regular file, finds the
//!    function's offset in it, opens an entry and a return uprobe perf event on it
//!    (`/proc/self/fd/N`) and links the entry program and the return program to them
//!    (`BPF_LINK_CREATE`, `BPF_PERF_EVENT`). The answer carries the two link fds back.
//!
//! Why the links go back rather than stay in the helper: a BPF link keeps its perf event (and
//! so the uprobe) alive for as long as any process holds its fd, and holding or closing one
//! needs no capability: only creating the perf event does. Handed back, the recorder owns every
//! probe the same way (they vanish with it, a helper that dies takes none of them), and the
//! helper holds no state.
//!
//! Messages are at most [`MAX_MESSAGE`] bytes; anything else is refused with an answer.

use std::ffi::CString;
use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use caps::CapsHashSet;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

use super::privs::{self, Phase, RunAs};
use super::uprobes::LOOKUP_PROGRAMS;
use crate::lookups::{LookupFn, PROBED};

/// The hidden first argument that makes `dnsledger` the helper.
pub const HELPER_ARG: &str = "__lookup-attach-helper";
/// The helper's end of the socketpair.
const HELPER_FD: RawFd = 3;
/// The longest message either side sends or accepts, in bytes.
pub const MAX_MESSAGE: usize = 256;
/// How long the recorder waits for an answer.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// An answer's first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    /// The library has no such function (stripped, or not in this C library).
    NotFound = 1,
    /// The kernel refused (the helper lacks the capability).
    Denied = 2,
    /// A bad request or another error.
    Failed = 3,
}

impl Status {
    fn from_byte(b: u8) -> Self {
        match b {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Denied,
            _ => Status::Failed,
        }
    }
}

/// What went wrong starting or asking the helper.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("cannot start the lookup attach helper: {0}")]
    Start(String),
    /// The helper refused one request (the others may work).
    #[error("{text}")]
    Refused { status: Status, text: String },
    /// The helper is gone or broke the protocol: it cannot be asked again.
    #[error("the lookup attach helper is gone: {0}")]
    Gone(String),
}

/// The recorder's side: the helper process and the socket to it.
pub struct Helper {
    sock: Option<OwnedFd>,
    child: Child,
}

fn send(sock: BorrowedFd<'_>, payload: &[u8], fds: &[RawFd]) -> nix::Result<()> {
    let iov = [IoSlice::new(payload)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).map(|_| ())
}

/// One received message: its bytes (empty at end of stream), the fds it carried (owned now),
/// and whether it was cut (longer than [`MAX_MESSAGE`]).
struct Received {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
    truncated: bool,
}

fn receive(sock: BorrowedFd<'_>) -> nix::Result<Received> {
    let mut buf = [0u8; MAX_MESSAGE];
    // Room for the most fds one message can carry (the kernel's SCM_MAX_FD, 253): control
    // data is then never cut, so every fd that arrives is owned here and closed when unused.
    let mut space = nix::cmsg_space!([RawFd; 253]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    let truncated = msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel just installed `fd` in this process for this message
                    // (SCM_RIGHTS); nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
    }
    let n = msg.bytes;
    Ok(Received {
        bytes: buf[..n.min(MAX_MESSAGE)].to_vec(),
        fds,
        truncated,
    })
}

/// Waits up to [`ANSWER_WAIT`] for the helper's answer.
fn wait_answer(sock: BorrowedFd<'_>) -> Result<Received, String> {
    let deadline = Instant::now() + ANSWER_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {ANSWER_WAIT:?}"));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut pfd = [nix::poll::PollFd::new(sock, nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut pfd, ms) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => break,
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
    receive(sock).map_err(|e| format!("receive: {e}"))
}

impl Helper {
    /// Starts the helper (while the calling thread still holds its capabilities) and hands it
    /// the lookup programs, in [`LOOKUP_PROGRAMS`] order.
    pub fn start(progs: &[BorrowedFd<'_>], run_as: Option<&RunAs>) -> Result<Self, HelperError> {
        let start = |e: String| HelperError::Start(e);
        if progs.len() != LOOKUP_PROGRAMS.len() {
            return Err(start(format!(
                "{} programs, not {}",
                progs.len(),
                LOOKUP_PROGRAMS.len()
            )));
        }
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| start(format!("socketpair: {e}")))?;
        let theirs_raw = theirs.as_raw_fd();
        let mut cmd = Command::new("/proc/self/exe");
        // `ps` shows `dnsledger __lookup-attach-helper PPID`.
        cmd.arg0("dnsledger")
            .arg(HELPER_ARG)
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(who) = run_as {
            cmd.arg(format!("{}:{}", who.uid, who.gid));
        }
        // SAFETY: the closure runs in the forked child before exec and only makes system calls
        // that are async-signal-safe (dup2, fcntl, prctl); it touches no lock and allocates
        // nothing.
        unsafe {
            cmd.pre_exec(move || {
                if theirs_raw == HELPER_FD {
                    if libc::fcntl(HELPER_FD, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(theirs_raw, HELPER_FD) != HELPER_FD {
                    return Err(std::io::Error::last_os_error());
                }
                // Dies with the thread that started it (the recorder's capture thread, which
                // lives as long as the recording).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| start(format!("exec /proc/self/exe: {e}")))?;
        drop(theirs);
        let mut helper = Helper {
            sock: Some(ours),
            child,
        };
        let raw: Vec<RawFd> = progs.iter().map(|p| p.as_raw_fd()).collect();
        match helper.ask(b"progs", &raw) {
            Ok((_, fds)) if fds.is_empty() => Ok(helper),
            Ok(_) => Err(start("unexpected fds in its answer".into())),
            Err(HelperError::Refused { text, .. }) => Err(start(text)),
            Err(e) => Err(start(e.to_string())),
        }
    }

    /// The helper's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one request and waits for its answer: the answer's text and fds.
    fn ask(
        &mut self,
        payload: &[u8],
        fds: &[RawFd],
    ) -> Result<(String, Vec<OwnedFd>), HelperError> {
        let Some(sock) = &self.sock else {
            return Err(HelperError::Gone("closed".into()));
        };
        let gone = |e: String| HelperError::Gone(e);
        send(sock.as_fd(), payload, fds).map_err(|e| gone(format!("send: {e}")))?;
        let got = wait_answer(sock.as_fd());
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                self.sock = None;
                return Err(gone(e));
            }
        };
        let Some((&first, text)) = got.bytes.split_first() else {
            self.sock = None;
            return Err(gone("it closed its socket".into()));
        };
        if got.truncated {
            self.sock = None;
            return Err(gone("an answer too long".into()));
        }
        let text = String::from_utf8_lossy(text).into_owned();
        match Status::from_byte(first) {
            Status::Ok => Ok((text, got.fds)),
            status => Err(HelperError::Refused { status, text }),
        }
    }

    /// Attaches the entry and return probes of `f` to `library` (opened by the caller):
    /// the two BPF link fds (entry, return), owned by the caller from now on.
    pub fn attach(&mut self, library: &File, f: LookupFn) -> Result<[OwnedFd; 2], HelperError> {
        let req = format!("attach {}", f.as_str());
        let (_, fds) = self.ask(req.as_bytes(), &[library.as_raw_fd()])?;
        match <[OwnedFd; 2]>::try_from(fds) {
            Ok(pair) => Ok(pair),
            Err(v) => {
                self.sock = None;
                Err(HelperError::Gone(format!(
                    "{} fds in an answer, not 2",
                    v.len()
                )))
            }
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing the socket ends the helper; wait for it briefly, then kill it (by its pid).
        self.sock = None;
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the helper process ----

/// perf_event_open's flag for a close-on-exec fd (linux/perf_event.h; not in the libc crate).
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// The uprobe perf event source (`/sys/bus/event_source/devices/uprobe`).
struct UprobePmu {
    kind: u32,
    retprobe_bit: u32,
}

fn uprobe_pmu() -> Result<UprobePmu, String> {
    let dir = std::path::Path::new("/sys/bus/event_source/devices/uprobe");
    let read = |p: &str| {
        std::fs::read_to_string(dir.join(p))
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("{}/{p}: {e}", dir.display()))
    };
    let kind = read("type")?
        .parse::<u32>()
        .map_err(|e| format!("uprobe PMU type: {e}"))?;
    let format = read("format/retprobe")?;
    let retprobe_bit = format
        .strip_prefix("config:")
        .and_then(|b| b.parse::<u32>().ok())
        .filter(|b| *b < 64)
        .ok_or_else(|| format!("uprobe PMU retprobe format `{format}`"))?;
    Ok(UprobePmu { kind, retprobe_bit })
}

/// The file offset of function `name` in the ELF file at `path` (blazesym's inspector: it reads
/// `.symtab` and `.dynsym`, the only symbol tables a C library has).
fn function_offset(path: &std::path::Path, name: &str) -> Result<u64, (Status, String)> {
    use blazesym::inspect::{Inspector, source::Elf, source::Source};
    let mut elf = Elf::new(path);
    elf.debug_syms = false;
    let inspector = Inspector::new();
    let found = inspector
        .lookup(&Source::Elf(elf), &[name])
        .map_err(|e| (Status::Failed, format!("reading its symbols: {e}")))?;
    found
        .iter()
        .flatten()
        .filter(|s| s.sym_type == blazesym::SymType::Function)
        .find_map(|s| s.file_offset)
        .ok_or_else(|| (Status::NotFound, format!("no function `{name}` in it")))
}

/// A uprobe (`retprobe`: at the return) on `offset` of the file at `path`, linked to `prog`.
fn link_uprobe(
    pmu: &UprobePmu,
    prog: BorrowedFd<'_>,
    path: &CString,
    offset: u64,
    retprobe: bool,
) -> Result<OwnedFd, (Status, String)> {
    let errno_status = |e: &std::io::Error| match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => Status::Denied,
        _ => Status::Failed,
    };
    let mut attr = libbpf_sys::perf_event_attr {
        type_: pmu.kind,
        size: std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32,
        config: if retprobe {
            1u64 << pmu.retprobe_bit
        } else {
            0
        },
        ..Default::default()
    };
    attr.__bindgen_anon_3.uprobe_path = path.as_ptr() as u64;
    attr.__bindgen_anon_4.probe_offset = offset;
    // SAFETY: `attr` is a zero-initialised perf_event_attr of the size it states; the path it
    // points to outlives the call; pid -1 with cpu 0 is a uprobe in every process (libbpf's
    // choice too). The kernel only reads `attr` and the path.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const libbpf_sys::perf_event_attr,
            -1 as libc::c_int,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err((errno_status(&e), format!("perf_event_open (uprobe): {e}")));
    }
    // SAFETY: perf_event_open returned a new fd that nothing else owns.
    let event = unsafe { OwnedFd::from_raw_fd(rc as RawFd) };
    // SAFETY: both fds are live; null options are allowed for BPF_PERF_EVENT.
    let link = unsafe {
        libbpf_sys::bpf_link_create(
            prog.as_raw_fd(),
            event.as_raw_fd(),
            libbpf_sys::BPF_PERF_EVENT,
            std::ptr::null(),
        )
    };
    if link < 0 {
        let e = std::io::Error::from_raw_os_error(-link);
        return Err((errno_status(&e), format!("BPF_LINK_CREATE: {e}")));
    }
    // The link holds the perf event: this fd can close.
    drop(event);
    // SAFETY: bpf_link_create returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(link) })
}

/// Whether `fd` is a BPF program of the type uprobes run (kprobe).
fn is_uprobe_program(fd: BorrowedFd<'_>) -> bool {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: `info` is a zeroed bpf_prog_info of `len` bytes, written by the kernel only.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    rc == 0 && info.type_ == libbpf_sys::BPF_PROG_TYPE_KPROBE
}

fn answer(sock: BorrowedFd<'_>, status: Status, text: &str, fds: &[RawFd]) -> nix::Result<()> {
    let mut msg = Vec::with_capacity(1 + text.len());
    msg.push(status as u8);
    msg.extend_from_slice(text.as_bytes());
    msg.truncate(MAX_MESSAGE);
    send(sock, &msg, fds)
}

/// Serves one `attach` request.
fn attach_request(
    pmu: &UprobePmu,
    progs: &[OwnedFd],
    request: &[u8],
    fds: &[OwnedFd],
) -> Result<[OwnedFd; 2], (Status, String)> {
    let bad = |s: String| (Status::Failed, s);
    let text = std::str::from_utf8(request).map_err(|_| bad("a request not in UTF-8".into()))?;
    let name = text
        .strip_prefix("attach ")
        .ok_or_else(|| bad(format!("unknown request `{}`", text.escape_debug())))?;
    let (index, f) = PROBED
        .iter()
        .enumerate()
        .find(|(_, f)| f.as_str() == name)
        .ok_or_else(|| {
            bad(format!(
                "`{}` is not a resolver function",
                name.escape_debug()
            ))
        })?;
    let [library] = fds else {
        return Err(bad(format!("{} fds with a request, not 1", fds.len())));
    };
    let file = File::from(library.try_clone().map_err(|e| bad(format!("dup: {e}")))?);
    let meta = file.metadata().map_err(|e| bad(format!("fstat: {e}")))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        return Err(bad("the library is not a regular file".into()));
    }
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let offset = function_offset(std::path::Path::new(&path), f.as_str())?;
    let cpath = CString::new(path).map_err(|e| bad(e.to_string()))?;
    let (entry_prog, return_prog) = match (progs.get(index), progs.last()) {
        (Some(e), Some(r)) => (e, r),
        _ => return Err(bad("the programs are missing".into())),
    };
    let entry = link_uprobe(pmu, entry_prog.as_fd(), &cpath, offset, false)?;
    let ret = link_uprobe(pmu, return_prog.as_fd(), &cpath, offset, true)?;
    Ok([entry, ret])
}

/// `dnsledger __lookup-attach-helper PPID [UID:GID]`: the helper process.
pub fn serve(args: &[String]) -> ExitCode {
    match serve_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: lookup attach helper: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve_inner(args: &[String]) -> Result<(), String> {
    // Dies with the recorder; if it is gone already, so is this.
    // SAFETY: prctl(PR_SET_PDEATHSIG, SIGKILL) and getppid take no pointers.
    let parent_alive = unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == 0
            && args.first().and_then(|p| p.parse::<i32>().ok()) == Some(libc::getppid())
    };
    if !parent_alive {
        return Err("started by a process that is not (or no longer) its parent".into());
    }
    let run_as = match args.get(1) {
        None => None,
        Some(spec) => {
            let (u, g) = spec
                .split_once(':')
                .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)))
                .ok_or_else(|| format!("bad UID:GID `{spec}`"))?;
            Some(RunAs {
                uid: u,
                gid: g,
                spec: spec.clone(),
            })
        }
    };
    let keep: CapsHashSet = privs::needed(Phase::Lookups).collect();
    privs::drop_to(&keep, run_as.as_ref()).map_err(|e| e.to_string())?;
    let lacking: Vec<String> = keep
        .iter()
        .filter(|c| !caps::has_cap(None, caps::CapSet::Effective, **c).unwrap_or(false))
        .map(|c| c.to_string())
        .collect();
    // SAFETY: fd 3 is the socketpair end the recorder placed there before exec; this process
    // owns it from here on.
    let sock = unsafe { OwnedFd::from_raw_fd(HELPER_FD) };
    let is_socket = File::from(sock.try_clone().map_err(|e| format!("fd 3: {e}"))?)
        .metadata()
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false);
    if !is_socket {
        return Err("fd 3 is not the recorder's socket".into());
    }
    let sock = sock.as_fd();
    let pmu = uprobe_pmu();
    let io = |e: nix::Error| format!("socket: {e}");

    // The programs, once.
    let first = receive(sock).map_err(io)?;
    if first.bytes.is_empty() && first.fds.is_empty() {
        return Ok(());
    }
    let progs = first.fds;
    let progs_ok = !first.truncated
        && first.bytes == b"progs"
        && progs.len() == LOOKUP_PROGRAMS.len()
        && progs.iter().all(|p| is_uprobe_program(p.as_fd()));
    if !progs_ok {
        answer(
            sock,
            Status::Failed,
            "expected the five lookup programs",
            &[],
        )
        .map_err(io)?;
        return Err("the first message was not the five lookup programs".into());
    }
    if !lacking.is_empty() {
        let e = format!("it was started without {}", lacking.join(", "));
        answer(sock, Status::Denied, &e, &[]).map_err(io)?;
        return Err(e);
    }
    let pmu = match pmu {
        Ok(p) => p,
        Err(e) => {
            answer(sock, Status::Failed, &e, &[]).map_err(io)?;
            return Err(e);
        }
    };
    answer(sock, Status::Ok, "", &[]).map_err(io)?;

    loop {
        let req = receive(sock).map_err(io)?;
        if req.bytes.is_empty() && req.fds.is_empty() {
            // The recorder closed its end: done.
            return Ok(());
        }
        let result = if req.truncated {
            Err((
                Status::Failed,
                format!("a request longer than {MAX_MESSAGE} bytes or with too many fds"),
            ))
        } else {
            attach_request(&pmu, &progs, &req.bytes, &req.fds)
        };
        match result {
            Ok([entry, ret]) => {
                answer(sock, Status::Ok, "", &[entry.as_raw_fd(), ret.as_raw_fd()]).map_err(io)?
            }
            Err((status, text)) => answer(sock, status, &text, &[]).map_err(io)?,
        }
        // The request's fds and the links (now the recorder's too) close here.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The checks before any system call that needs a capability: they run unprivileged.
    fn refused(request: &[u8], fds: &[OwnedFd]) -> (Status, String) {
        let pmu = UprobePmu {
            kind: 0,
            retprobe_bit: 0,
        };
        match attach_request(&pmu, &[], request, fds) {
            Ok(_) => panic!("{} was accepted", String::from_utf8_lossy(request)),
            Err(e) => e,
        }
    }

    fn library() -> OwnedFd {
        OwnedFd::from(File::open("/proc/self/exe").expect("open own binary"))
    }

    #[test]
    fn requests_are_checked() {
        let (s, t) = refused(b"attach system", &[library()]);
        assert_eq!(s, Status::Failed);
        assert!(t.contains("not a resolver function"), "{t}");
        let (_, t) = refused(b"detach getaddrinfo", &[library()]);
        assert!(t.contains("unknown request"), "{t}");
        let (_, t) = refused(b"attach \xff", &[library()]);
        assert!(t.contains("UTF-8"), "{t}");
        let (_, t) = refused(b"attach getaddrinfo", &[]);
        assert!(t.contains("0 fds"), "{t}");
        let (_, t) = refused(b"attach getaddrinfo", &[library(), library()]);
        assert!(t.contains("2 fds"), "{t}");
        // A directory, a pipe: not a regular file.
        let dir = OwnedFd::from(File::open("/").expect("open /"));
        let (_, t) = refused(b"attach getaddrinfo", &[dir]);
        assert!(t.contains("not a regular file"), "{t}");
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        let (_, t) = refused(b"attach getaddrinfo", &[r]);
        assert!(t.contains("not a regular file"), "{t}");
        // A regular file without the function (this binary does not define getaddrinfo).
        let (s, t) = refused(b"attach getnameinfo", &[library()]);
        assert_eq!(s, Status::NotFound, "{t}");
    }

    #[test]
    fn symbol_offsets_match_the_c_library() {
        // The host's glibc defines all four; each offset lies inside the file.
        let libc = std::path::Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        let len = std::fs::metadata(libc).expect("glibc").len();
        for f in PROBED {
            let off = function_offset(libc, f.as_str())
                .unwrap_or_else(|e| panic!("{}: {e:?}", f.as_str()));
            assert!(off > 0 && off < len, "{}: {off}", f.as_str());
        }
    }

    #[test]
    fn messages_are_bounded_and_carry_fds() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let file = File::open("/proc/self/exe").expect("open");
        send(a.as_fd(), b"attach getaddrinfo", &[file.as_raw_fd()]).expect("send");
        let got = receive(b.as_fd()).expect("receive");
        assert_eq!(got.bytes, b"attach getaddrinfo");
        assert_eq!(got.fds.len(), 1);
        assert!(!got.truncated);
        let long = vec![b'x'; MAX_MESSAGE + 1];
        send(a.as_fd(), &long, &[]).expect("send");
        assert!(receive(b.as_fd()).expect("receive").truncated);
        // Many fds: all arrive (owned, closed with the message), none is cut.
        let many: Vec<RawFd> = vec![file.as_raw_fd(); 40];
        send(a.as_fd(), b"attach getaddrinfo", &many).expect("send");
        let got = receive(b.as_fd()).expect("receive");
        assert_eq!((got.fds.len(), got.truncated), (40, false));
        drop(a);
        let end = receive(b.as_fd()).expect("receive");
        assert!(end.bytes.is_empty() && end.fds.is_empty(), "end of stream");
    }
}
