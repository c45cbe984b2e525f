//! Process and cgroup facts for attribution.
//!
//! Exec events from the kernel fill the table as processes start, so a process that is gone by
//! the time a row is written is still described. `/proc` is only the fallback for processes
//! that started before the recorder. Exited processes stay known for a grace period.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::KernelOwner;
use crate::capture::events::ExecInfo;

/// Longest cmdline kept, in bytes.
pub const CMDLINE_MAX: usize = 4096;
/// How long an exited process stays in the table (its last queries may still be pairing).
const EXIT_GRACE_NS: i64 = 120_000_000_000;
/// Least time between two rescans of the cgroup tree on a cache miss.
const CGROUP_RESCAN: Duration = Duration::from_secs(1);

/// What is known of a process beyond the packet's kernel context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub ppid: Option<u32>,
    pub exe: Option<Arc<str>>,
    pub cmdline: Option<Arc<str>>,
    pub netns: Option<u32>,
    pub cgroup_path: Option<Arc<str>>,
    pub container_id: Option<Arc<str>>,
}

#[derive(Clone, Debug, Default)]
struct Proc {
    ppid: Option<u32>,
    exe: Option<Arc<str>>,
    cmdline: Option<Arc<str>>,
    netns: Option<u32>,
    /// Exit time (UTC ns) once the process exited.
    exited_at: Option<i64>,
}

/// pid -> process facts, fed by exec/exit events with `/proc` as fallback.
pub struct ProcessTable {
    proc_root: PathBuf,
    procs: HashMap<u32, Proc>,
    exits: VecDeque<(i64, u32)>,
    cgroups: CgroupPaths,
}

fn cap_cmdline(mut s: String) -> String {
    if s.len() > CMDLINE_MAX {
        let mut end = CMDLINE_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl ProcessTable {
    /// `proc_root` is `/proc` outside tests; `cgroup_root` the cgroup v2 mount point.
    pub fn new(proc_root: impl Into<PathBuf>, cgroup_root: Option<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            procs: HashMap::new(),
            exits: VecDeque::new(),
            cgroups: CgroupPaths::new(cgroup_root),
        }
    }

    /// Number of processes known.
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// A process called execve.
    pub fn exec(&mut self, e: &ExecInfo) {
        // The kernel gives the path passed to execve (maybe relative); /proc gives the
        // resolved executable while the process lives.
        let exe = std::fs::read_link(self.proc_root.join(e.pid.to_string()).join("exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| e.filename.clone());
        let cmdline = if e.cmdline.is_empty() {
            read_cmdline(&self.proc_root, e.pid)
        } else {
            Some(cap_cmdline(e.cmdline.clone()))
        };
        self.procs.insert(
            e.pid,
            Proc {
                ppid: Some(e.ppid),
                exe: Some(exe.into()),
                cmdline: cmdline.map(Into::into),
                netns: (e.netns != 0).then_some(e.netns),
                exited_at: None,
            },
        );
    }

    /// A process exited; it is forgotten after a grace period.
    pub fn exit(&mut self, pid: u32, ts_ns: i64) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.exited_at = Some(ts_ns);
            self.exits.push_back((ts_ns, pid));
        }
        while let Some(&(t, old)) = self.exits.front() {
            if ts_ns - t < EXIT_GRACE_NS {
                break;
            }
            self.exits.pop_front();
            if self.procs.get(&old).and_then(|p| p.exited_at) == Some(t) {
                self.procs.remove(&old);
            }
        }
    }

    /// Facts about the owner of a packet seen at `ts_ns`.
    pub fn lookup(&mut self, owner: &KernelOwner, ts_ns: i64) -> ProcInfo {
        let pid = owner.pid;
        let stale = match self.procs.get(&pid) {
            None => true,
            // An exited process whose pid sends again was replaced (fork without exec).
            Some(p) => p.exited_at.is_some_and(|t| ts_ns > t),
        };
        if stale && pid != 0 {
            let fresh = read_proc(&self.proc_root, pid);
            self.procs.insert(pid, fresh);
        }
        let (cgroup_path, container_id) = self.cgroups.lookup(owner.cgroup_id);
        let p = self.procs.get(&pid).cloned().unwrap_or_default();
        ProcInfo {
            ppid: p.ppid,
            exe: p.exe,
            cmdline: p.cmdline,
            netns: if owner.netns != 0 {
                Some(owner.netns)
            } else {
                p.netns
            },
            cgroup_path,
            container_id,
        }
    }
}

fn read_cmdline(proc_root: &Path, pid: u32) -> Option<String> {
    let raw = std::fs::read(proc_root.join(pid.to_string()).join("cmdline")).ok()?;
    let raw = &raw[..raw.len().min(CMDLINE_MAX)];
    Some(cap_cmdline(crate::capture::events::join_args(raw))).filter(|s| !s.is_empty())
}

fn read_proc(proc_root: &Path, pid: u32) -> Proc {
    let dir = proc_root.join(pid.to_string());
    let exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| Arc::from(p.to_string_lossy().as_ref()));
    let ppid = std::fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse().ok())
        });
    let netns = std::fs::metadata(dir.join("ns/net"))
        .ok()
        .map(|m| m.ino() as u32);
    Proc {
        ppid,
        exe,
        cmdline: read_cmdline(proc_root, pid).map(Into::into),
        netns,
        exited_at: None,
    }
}

/// cgroup id (inode of the cgroup directory) -> path below the cgroup v2 root.
struct CgroupPaths {
    root: Option<PathBuf>,
    by_id: HashMap<u64, (Arc<str>, Option<Arc<str>>)>,
    last_scan: Option<Instant>,
}

impl CgroupPaths {
    fn new(root: Option<PathBuf>) -> Self {
        Self {
            root,
            by_id: HashMap::new(),
            last_scan: None,
        }
    }

    fn lookup(&mut self, id: u64) -> (Option<Arc<str>>, Option<Arc<str>>) {
        if id == 0 {
            return (None, None);
        }
        if !self.by_id.contains_key(&id)
            && self.last_scan.is_none_or(|t| t.elapsed() >= CGROUP_RESCAN)
        {
            self.rescan();
        }
        match self.by_id.get(&id) {
            Some((path, container)) => (Some(path.clone()), container.clone()),
            None => (None, None),
        }
    }

    fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir.strip_prefix(&root).unwrap_or(&dir);
            let path = format!("/{}", rel.to_string_lossy());
            let container = container_id(&path).map(Arc::from);
            self.by_id
                .entry(meta.ino())
                .or_insert_with(|| (Arc::from(path.as_str()), container));
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(entry.path());
                    }
                }
            }
        }
    }
}

fn hex64_at(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(63))
        .find(|&i| {
            b[i..i + 64].iter().all(u8::is_ascii_hexdigit)
                && (i + 64 == b.len() || !b[i + 64].is_ascii_hexdigit())
                && (i == 0 || !b[i - 1].is_ascii_hexdigit())
        })
        .map(|i| &s[i..i + 64])
}

/// The container id a cgroup path names, if any: docker (`/docker/<id>`, `docker-<id>.scope`),
/// containerd/CRI (`cri-containerd-<id>.scope`, kubepods paths), CRI-O (`crio-<id>.scope`),
/// podman (`libpod-<id>.scope`), and systemd-nspawn machines (`machine-<name>.scope`).
pub fn container_id(cgroup_path: &str) -> Option<String> {
    for component in cgroup_path.rsplit('/') {
        // conmon is podman's monitor process, not the container.
        if component.starts_with("libpod-conmon-") {
            continue;
        }
        if let Some(id) = hex64_at(component) {
            return Some(id.to_string());
        }
        if let Some(name) = component
            .strip_prefix("machine-")
            .and_then(|c| c.strip_suffix(".scope"))
        {
            // systemd escapes '-' in unit names as \x2d.
            return Some(name.replace("\\x2d", "-"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f2a1b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

    #[test]
    fn container_ids_from_cgroup_paths() {
        assert_eq!(
            container_id(&format!("/system.slice/docker-{ID}.scope")).as_deref(),
            Some(ID)
        );
        assert_eq!(container_id(&format!("/docker/{ID}")).as_deref(), Some(ID));
        assert_eq!(
            container_id(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope"
            ))
            .as_deref(),
            Some(ID)
        );
        assert_eq!(
            container_id(&format!("/machine.slice/libpod-{ID}.scope/container")).as_deref(),
            Some(ID)
        );
        assert_eq!(
            container_id(&format!("/system.slice/crio-{ID}.scope")).as_deref(),
            Some(ID)
        );
        assert_eq!(
            container_id("/machine.slice/machine-web\\x2d1.scope").as_deref(),
            Some("web-1")
        );
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-3.scope"),
            None
        );
        assert_eq!(container_id("/"), None);
        // 65 hex digits is not an id.
        assert_eq!(container_id(&format!("/docker/{ID}a")), None);
    }

    #[test]
    fn exec_event_wins_and_survives_exit() {
        let mut t = ProcessTable::new("/nonexistent-proc", None);
        let e = ExecInfo {
            ts_ns: 1,
            pid: 4242,
            ppid: 1,
            uid: 0,
            gid: 0,
            cgroup_id: 0,
            netns: 77,
            comm: "dig".into(),
            filename: "/usr/bin/dig".into(),
            cmdline: "dig example.com".into(),
        };
        t.exec(&e);
        let owner = KernelOwner {
            pid: 4242,
            ..Default::default()
        };
        let info = t.lookup(&owner, 2);
        assert_eq!(info.exe.as_deref(), Some("/usr/bin/dig"));
        assert_eq!(info.cmdline.as_deref(), Some("dig example.com"));
        assert_eq!(info.ppid, Some(1));
        assert_eq!(info.netns, Some(77));
        t.exit(4242, 10);
        // A packet sent before the exit still finds the process.
        assert_eq!(t.lookup(&owner, 5).exe.as_deref(), Some("/usr/bin/dig"));
        // Long after the grace period, a later exit evicts it.
        t.exit(1, 10 + EXIT_GRACE_NS);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn proc_fallback_reads_this_process() {
        let mut t = ProcessTable::new("/proc", None);
        let me = std::process::id();
        let info = t.lookup(
            &KernelOwner {
                pid: me,
                ..Default::default()
            },
            0,
        );
        let exe = std::env::current_exe().expect("current exe");
        assert_eq!(info.exe.as_deref(), exe.to_str());
        assert!(info.cmdline.is_some());
        assert!(info.ppid.is_some());
        assert!(info.netns.is_some());
    }

    #[test]
    fn cmdline_is_capped_on_a_char_boundary() {
        let s = "é".repeat(CMDLINE_MAX);
        let capped = cap_cmdline(s);
        assert!(capped.len() <= CMDLINE_MAX);
        assert!(capped.len() >= CMDLINE_MAX - 1);
    }

    #[test]
    fn cgroup_paths_resolve_from_a_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let leaf = dir.path().join(format!("system.slice/docker-{ID}.scope"));
        std::fs::create_dir_all(&leaf).expect("mkdir");
        let ino = std::fs::metadata(&leaf).expect("meta").ino();
        let mut c = CgroupPaths::new(Some(dir.path().to_path_buf()));
        let (path, container) = c.lookup(ino);
        assert_eq!(
            path.as_deref(),
            Some(format!("/system.slice/docker-{ID}.scope").as_str())
        );
        assert_eq!(container.as_deref(), Some(ID));
        let root_ino = std::fs::metadata(dir.path()).expect("meta").ino();
        assert_eq!(c.lookup(root_ino).0.as_deref(), Some("/"));
    }
}
