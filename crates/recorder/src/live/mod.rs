//! Beside the path, after pairing: **what is recorded, as it happens** — the live socket
//! (below), `snoop` ([`snoop`], [`detailed`]), `top` ([`top`]), the Prometheus exporter
//! ([`metrics`]) and `dnsledger status` ([`status`]).
//!
//! Live transactions for `dnsledger snoop` and `dnsledger top`://!
//! A running recorder publishes every finished transaction on a Unix socket in its data
//! directory ([`LIVE_SOCKET`], mode 0660, so the data directory's group can follow) as one JSON
//! object per line ([`LiveTx`]). Readers never slow the recorder down: the socket is
//! non-blocking, each reader has a bounded queue, and what does not fit is dropped for that
//! reader only and announced to it with a `{"dropped":N}` line. Serialising costs nothing
//! while nobody follows.
//!
//! Without a recorder, [`standalone`] loads and attaches the capture itself and runs the same
//! decode and pairing, writing no segments.
//!
//! Beside the recording path: what is recorded, served as it happens. [`snoop`] (+
//! [`detailed`]) prints each transaction, [`top`] aggregates them per process, [`metrics`] is
//! the Prometheus exporter, [`status`] the counters a running recorder publishes.

pub mod detailed;
pub mod metrics;
pub mod snoop;
pub mod status;
pub mod top;

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, mpsc};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use dnsledger_schema::Transaction;
use serde::{Deserialize, Serialize};

use crate::capture::bpf::{self, BpfConfig, KernelCounters};
use crate::capture::events::{Clock, boot_now};
use crate::capture::procs::ProcessTable;
use crate::capture::ring::{LiveAttribution, RingFeed};
use crate::config::Settings;
use crate::pipeline::{HostFacts, Pipeline};

/// The recorder's live socket, in the data directory.
pub const LIVE_SOCKET: &str = "live.sock";
/// Bytes queued for one reader at most; beyond it that reader's lines are dropped and counted.
const CLIENT_QUEUE_MAX: usize = 4 << 20;
/// Readers at most (each costs one queue).
const MAX_CLIENTS: usize = 64;

/// One finished transaction as the live views see it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveTx {
    /// Time of the query (of the response when there was none), UTC ns.
    pub ts: i64,
    pub status: String,
    pub hostname: String,
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub ppid: Option<u32>,
    pub uid: Option<u32>,
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub cmdline: Option<String>,
    pub container_id: Option<String>,
    pub transport: String,
    pub ip_version: u8,
    pub client_ip: String,
    pub client_port: u16,
    pub server_ip: String,
    pub server_port: u16,
    pub dns_id: Option<u16>,
    pub qname: Option<String>,
    /// The first question's name exactly as sent (`qname` with its case); absent from older
    /// recorders' lines.
    #[serde(default)]
    pub qname_sent: Option<String>,
    pub qtype: Option<String>,
    pub rcode: Option<String>,
    pub latency_ns: Option<i64>,
    pub query_ts: Option<i64>,
    pub response_ts: Option<i64>,
    #[serde(default)]
    pub answer_ips: Vec<String>,
    pub query_size: Option<u32>,
    pub response_size: Option<u32>,
    pub parse_error: Option<String>,
    /// The raw messages, base64 (for `snoop --detailed`); absent with `--no-raw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_raw: Option<String>,
    /// `client` or `server` (`record --serve-side`: a local DNS server's side, the process
    /// fields are the server's); absent from older recorders' lines (client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<String>,
}

impl LiveTx {
    pub fn from_transaction(t: &Transaction) -> LiveTx {
        LiveTx {
            ts: t.ts,
            status: t.status.to_string(),
            hostname: t.hostname.to_string(),
            pid: t.pid,
            tid: t.tid,
            ppid: t.ppid,
            uid: t.uid,
            comm: t.comm.clone(),
            exe: t.exe.as_deref().map(str::to_string),
            cmdline: t.cmdline.as_deref().map(str::to_string),
            container_id: t.container_id.as_deref().map(str::to_string),
            transport: t.transport.to_string(),
            ip_version: t.ip_version,
            client_ip: t.client_ip.clone(),
            client_port: t.client_port,
            server_ip: t.server_ip.clone(),
            server_port: t.server_port,
            dns_id: t.dns_id,
            qname: t.qname.clone(),
            qname_sent: t.qname_case.clone().or_else(|| t.qname.clone()),
            qtype: t.qtype_name.clone(),
            rcode: t.rcode_name.clone(),
            latency_ns: t.latency_ns,
            query_ts: t.query_ts,
            response_ts: t.response_ts,
            answer_ips: t.answer_ips.clone().unwrap_or_default(),
            query_size: t.query_size,
            response_size: t.response_size,
            parse_error: t.parse_error.clone(),
            query_raw: t.query_raw.as_deref().map(|b| B64.encode(b)),
            response_raw: t.response_raw.as_deref().map(|b| B64.encode(b)),
            side: t.side.map(str::to_string),
        }
    }

    /// True for a local DNS server's side of a transaction (`record --serve-side`).
    pub fn is_server_side(&self) -> bool {
        self.side.as_deref() == Some(dnsledger_schema::side::SERVER)
    }

    /// The raw query and response, decoded.
    pub fn raw(&self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let d = |s: &Option<String>| s.as_deref().and_then(|s| B64.decode(s).ok());
        (d(&self.query_raw), d(&self.response_raw))
    }
}

/// One line of the live stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LiveLine {
    /// The first line a reader gets: the recorder has taken it on (later transactions follow).
    Hello {
        recorder: u32,
    },
    /// This many transactions were dropped for this reader (it read too slowly).
    Dropped {
        dropped: u64,
    },
    Tx(Box<LiveTx>),
}

struct Client {
    stream: UnixStream,
    queue: Vec<u8>,
    /// Bytes of `queue` already written.
    sent: usize,
    /// Transactions dropped and not yet announced.
    dropped: u64,
}

impl Client {
    /// Writes what it can without blocking; false once the reader is gone.
    fn flush(&mut self) -> bool {
        while self.sent < self.queue.len() {
            match self.stream.write(&self.queue[self.sent..]) {
                Ok(0) => return false,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.sent == self.queue.len() {
            self.queue.clear();
            self.sent = 0;
        } else if self.sent > CLIENT_QUEUE_MAX / 2 {
            self.queue.drain(..self.sent);
            self.sent = 0;
        }
        true
    }

    fn pending(&self) -> usize {
        self.queue.len() - self.sent
    }
}

/// The recorder's side of the live socket. Lives on the writer thread.
pub struct LivePublisher {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Client>,
    line: Vec<u8>,
    /// Transactions dropped for slow readers, over all readers.
    pub dropped: u64,
}

impl LivePublisher {
    /// Creates `<data_dir>/live.sock` (replacing a stale one), mode 0660.
    pub fn bind(data_dir: &Path) -> io::Result<LivePublisher> {
        let path = data_dir.join(LIVE_SOCKET);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
        // The data directory's group (the analysts who may read the segments) may follow.
        let gid = std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(data_dir)?);
        std::os::unix::fs::lchown(&path, None, Some(gid))?;
        Ok(LivePublisher {
            listener,
            path,
            clients: Vec::new(),
            line: Vec::with_capacity(1024),
            dropped: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Readers connected now.
    pub fn readers(&self) -> usize {
        self.clients.len()
    }

    /// Takes new readers and writes what is queued (call on every tick).
    pub fn tick(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let mut queue = Vec::new();
                    let _ = writeln!(queue, "{{\"recorder\":{}}}", std::process::id());
                    self.clients.push(Client {
                        stream,
                        queue,
                        sent: 0,
                        dropped: 0,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.clients.retain_mut(Client::flush);
    }

    /// Queues finished transactions for every reader.
    pub fn publish(&mut self, rows: &[Transaction]) {
        if self.clients.is_empty() {
            return;
        }
        for t in rows {
            self.line.clear();
            let line = LiveLine::Tx(Box::new(LiveTx::from_transaction(t)));
            if serde_json::to_writer(&mut self.line, &line).is_err() {
                continue;
            }
            self.line.push(b'\n');
            for c in &mut self.clients {
                if c.pending() + self.line.len() > CLIENT_QUEUE_MAX {
                    c.dropped += 1;
                    self.dropped += 1;
                    continue;
                }
                if c.dropped > 0 {
                    let _ = writeln!(c.queue, "{{\"dropped\":{}}}", c.dropped);
                    c.dropped = 0;
                }
                c.queue.extend_from_slice(&self.line);
            }
        }
        self.clients.retain_mut(Client::flush);
    }
}

impl Drop for LivePublisher {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A running recorder publishing in `data_dir`: (its pid, the socket).
pub fn running_recorder(data_dir: &Path) -> Option<(u32, PathBuf)> {
    let text = std::fs::read_to_string(data_dir.join(crate::live::status::STATUS_FILE)).ok()?;
    let status: crate::live::status::LiveStatus = serde_json::from_str(&text).ok()?;
    let alive = std::fs::read_to_string(format!("/proc/{}/comm", status.pid))
        .is_ok_and(|c| c.trim() == "dnsledger");
    let sock = data_dir.join(LIVE_SOCKET);
    (alive && sock.exists()).then_some((status.pid, sock))
}

/// Where live transactions come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedMode {
    /// Following the recorder with this pid through its socket.
    Follow { pid: u32, socket: PathBuf },
    /// Capturing with our own BPF programs (no recorder was running).
    Standalone,
}

/// A stream of live lines and how it is fed. The receiver ends when the source does.
pub struct Feed {
    pub mode: FeedMode,
    pub lines: Receiver<io::Result<LiveLine>>,
    /// For a standalone capture: its thread (joined to learn whether it failed).
    capture: Option<std::thread::JoinHandle<Result<(), bpf::BpfError>>>,
}

impl Feed {
    /// Waits for the standalone capture to end (after `stop` was set) and returns its result.
    pub fn finish(self) -> Result<(), String> {
        drop(self.lines);
        match self.capture {
            Some(h) => match h.join() {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("the capture thread panicked".into()),
            },
            None => Ok(()),
        }
    }
}

/// Where a live view (`snoop`, `top`) gets its transactions.
#[derive(Clone, Debug)]
pub struct FeedOptions {
    /// The data directory of the recorder to follow.
    pub data_dir: PathBuf,
    /// Never follow a recorder: always capture with our own programs.
    pub standalone: bool,
    /// Settings of our own capture (ports, pair timeout).
    pub capture: Settings,
}

/// Follows the recorder running in the data directory, or captures on our own; says which on
/// stderr (the log). `what` names the view in messages.
pub fn open_feed(opts: &FeedOptions, stop: Arc<AtomicBool>, what: &str) -> Result<Feed, String> {
    let dir = &opts.data_dir;
    if !opts.standalone
        && let Some((pid, sock)) = running_recorder(dir)
    {
        match follow(pid, &sock) {
            Ok(feed) => {
                tracing::info!(
                    "{what}: following the running recorder (pid {pid}) through {}",
                    sock.display()
                );
                return Ok(feed);
            }
            Err(e) => tracing::warn!(
                "{what}: cannot follow the recorder (pid {pid}) through {}: {e}; capturing on our own",
                sock.display()
            ),
        }
    }
    let mut s = opts.capture.clone();
    // A live view needs far less than a recorder that must never lose an event.
    s.ring_size = 8 << 20;
    let feed = standalone(&s, stop).map_err(|e| {
        format!(
            "{what}: no recorder is running in {} and capturing on our own failed: {e}\n\
             hint: run as root (or start `dnsledger record --data-dir {}` and follow it)",
            dir.display(),
            dir.display()
        )
    })?;
    tracing::info!(
        ports = ?s.ports,
        "{what}: no recorder running in {}; capturing with our own BPF programs (nothing is written)",
        dir.display()
    );
    Ok(feed)
}

const FEED_LINES: usize = 8192;

/// How long the recorder may take to greet a new reader (it looks for them every 200 ms).
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Follows the recorder's socket: returns once the recorder has taken us on; lines arrive on
/// the returned receiver until the socket closes.
pub fn follow(pid: u32, socket: &Path) -> io::Result<Feed> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    match serde_json::from_str::<LiveLine>(first.trim_end()) {
        Ok(LiveLine::Hello { .. }) => {}
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "unexpected greeting from the recorder: {:?}",
                    first.trim_end()
                ),
            ));
        }
    }
    reader.get_ref().set_read_timeout(None)?;
    let (tx, rx) = mpsc::sync_channel(FEED_LINES);
    std::thread::Builder::new()
        .name("dnsledger-follow".into())
        .spawn(move || {
            for line in reader.lines() {
                let item = line.and_then(|l| {
                    serde_json::from_str::<LiveLine>(&l)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
                });
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    break;
                }
            }
        })?;
    Ok(Feed {
        mode: FeedMode::Follow {
            pid,
            socket: socket.to_path_buf(),
        },
        lines: rx,
        capture: None,
    })
}

/// Captures with our own programs until `stop` is set. Returns once every program is attached
/// (or with the error that prevented it).
pub fn standalone(settings: &Settings, stop: Arc<AtomicBool>) -> Result<Feed, String> {
    let cgroup_root = bpf::preflight().map_err(|e| e.to_string())?;
    bpf::route_libbpf_log();
    let host = HostFacts::detect();
    let attr = LiveAttribution {
        table: ProcessTable::new("/proc", Some(cgroup_root.clone())),
        now_ns: 0,
    };
    let mut pipeline =
        Pipeline::without_segments(settings, &host, attr).map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::sync_channel::<io::Result<LiveLine>>(FEED_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    pipeline.set_tap(tap_into(tx.clone(), Arc::clone(&dropped)));
    let cfg = BpfConfig {
        ports: settings.ports.clone(),
        max_payload: settings.max_payload,
        ring_bytes: settings.ring_size,
        self_tgid: std::process::id(),
        // snoop shows no stacks: the stack programs stay unloaded.
        stacks: false,
        // snoop and top show DNS transactions; bypass rows are the recorder's.
        bypass: false,
        doh_endpoints: Vec::new(),
        serve_side: settings.serve_side,
        // Lookup rows are the recorder's too (snoop and top show DNS transactions).
        lookups: false,
        run_as: None,
    };
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("dnsledger-capture".into())
        .spawn(move || run_standalone(cfg, cgroup_root, stop, pipeline, ready_tx, tx, dropped))
        .map_err(|e| format!("cannot start the capture thread: {e}"))?;
    if ready_rx.recv().is_err() {
        // The thread ended before attaching: its error says why.
        return match handle.join() {
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(())) => Err("the capture stopped before it started".into()),
            Err(_) => Err("the capture thread panicked".into()),
        };
    }
    Ok(Feed {
        mode: FeedMode::Standalone,
        lines: rx,
        capture: Some(handle),
    })
}

/// A pipeline tap that hands transactions to a bounded channel, counting what does not fit.
fn tap_into(
    tx: SyncSender<io::Result<LiveLine>>,
    dropped: Arc<AtomicU64>,
) -> crate::pipeline::RowTap {
    Box::new(move |rows: &[Transaction]| {
        for t in rows {
            let line = LiveLine::Tx(Box::new(LiveTx::from_transaction(t)));
            match tx.try_send(Ok(line)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
}

const STANDALONE_TICK: std::time::Duration = std::time::Duration::from_millis(100);

fn run_standalone(
    cfg: BpfConfig,
    cgroup_root: PathBuf,
    stop: Arc<AtomicBool>,
    mut pipeline: Pipeline<LiveAttribution>,
    ready: mpsc::Sender<()>,
    tx: SyncSender<io::Result<LiveLine>>,
    dropped: Arc<AtomicU64>,
) -> Result<(), bpf::BpfError> {
    let counters = KernelCounters::default();
    let clock = std::cell::Cell::new(Clock::now());
    let pipeline = std::cell::RefCell::new(&mut pipeline);
    let mut last_tick = std::time::Instant::now();
    let mut announced = 0u64;
    let mut feed = RingFeed::default();
    bpf::capture(
        &cfg,
        &cgroup_root,
        &stop,
        &counters,
        || {
            let _ = ready.send(());
        },
        |record: &[u8]| feed.record(&mut pipeline.borrow_mut(), record, &clock.get()),
        || {
            if last_tick.elapsed() < STANDALONE_TICK {
                return;
            }
            last_tick = std::time::Instant::now();
            let c = Clock::now();
            clock.set(c);
            // Without segments, tick never fails.
            let _ = pipeline.borrow_mut().tick(c.to_utc(boot_now()));
            let d = dropped.load(Ordering::Relaxed);
            if d > announced
                && tx
                    .try_send(Ok(LiveLine::Dropped {
                        dropped: d - announced,
                    }))
                    .is_ok()
            {
                announced = d;
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let tx = LiveTx {
            ts: 5,
            status: "answered".into(),
            pid: Some(42),
            comm: Some("dig".into()),
            qname: Some("a.test".into()),
            answer_ips: vec!["192.0.2.1".into()],
            query_raw: Some(B64.encode([1u8, 2, 3])),
            ..Default::default()
        };
        let text = serde_json::to_string(&LiveLine::Tx(Box::new(tx.clone()))).expect("json");
        let back: LiveLine = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, LiveLine::Tx(Box::new(tx.clone())));
        assert_eq!(tx.raw().0, Some(vec![1, 2, 3]));
        let d: LiveLine = serde_json::from_str("{\"dropped\":3}").expect("parse");
        assert_eq!(d, LiveLine::Dropped { dropped: 3 });
    }

    #[test]
    fn slow_reader_is_dropped_not_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = LivePublisher::bind(dir.path()).expect("bind");
        let mode = std::fs::metadata(p.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o660);
        // A reader that never reads.
        let reader = UnixStream::connect(p.path()).expect("connect");
        p.tick();
        assert_eq!(p.readers(), 1);
        let row = crate::live::metrics::tests_support::transaction("slow.test");
        let start = std::time::Instant::now();
        let rows = vec![row; 1000];
        for _ in 0..100 {
            p.publish(&rows);
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        assert!(p.dropped > 0, "nothing dropped");
        // The reader then gets the queued lines, a `dropped` notice, and the rest.
        drop(reader);
        p.publish(&rows[..1]);
        p.tick();
        assert_eq!(p.readers(), 0, "a closed reader is forgotten");
    }
}
