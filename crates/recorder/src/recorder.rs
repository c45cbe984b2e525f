//! The path, run live: `dnsledger record`.
//!
//! Two threads. The capture thread loads and attaches the programs ([`capture::bpf`]), drains
//! the ring buffer and hands batches of raw records over a bounded channel; it never waits for
//! the writer (a batch that cannot be handed over keeps growing, and past
//! [`BATCH_MAX_PENDING`] bytes its events are dropped and counted). The writer thread
//! ([`writer_loop`]) feeds each record through [`RingFeed`] into the [`Pipeline`] (decode ->
//! pair -> segment), and keeps up what lives beside the segments: the clock offset, expiry
//! ticks, `status.json`, the live socket and metrics, and the recorder's own retention
//! ([`Upkeep`]).
//!
//! Both threads stop on the one stop flag ([`stop_flag`]: SIGINT/SIGTERM), and each stops the
//! other when it fails: nothing can be written → stop capturing; capture over → the writer
//! drains the channel, seals and returns.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dnsledger_lake::LakeUrl;
use tracing::{debug, error, info, warn};

use crate::capture::abi::COUNTER_NAMES;
use crate::capture::bpf::{self, BpfConfig, BpfError, KernelCounters};
use crate::capture::events::{Clock, boot_now};
use crate::capture::privs::{self, PrivsError, RunAs};
use crate::capture::procs::ProcessTable;
use crate::capture::ring::{LiveAttribution, RingFeed};
use crate::config::{Settings, duration_ns, unix_now_ns, unix_now_secs};
use crate::live::metrics::{self, Metrics};
use crate::live::status::{self as live_status, LiveStatus};
use crate::live::{self, LivePublisher};
use crate::pipeline::{HostFacts, Pipeline, PipelineError, recover_spool};
use crate::store::fs::create_data_dir;
use crate::store::prune::{PruneOptions, try_prune};
use crate::store::segment::SegmentError;
use crate::store::ship::{ShipError, ShipGuard, ShipperHandle};
use crate::store::spool::RecoveryError;

const BATCH_RECORDS: usize = 4096;
const BATCH_BYTES: usize = 1 << 20;
/// Events held in user space while the writer is behind, before they are dropped: ~3 s of the
/// busiest stream measured (P1 in bench/RESULTS.md), memory that is only used while behind.
pub const BATCH_MAX_PENDING: usize = 64 << 20;
const CHANNEL_BATCHES: usize = 16;
/// How often the writer ticks (expiry, clocks) and the live views look at their stop flag.
pub const TICK: Duration = Duration::from_millis(200);
const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// How often `<data_dir>/status.json` is rewritten for `dnsledger status`.
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// How often the boot-time -> UTC offset is re-read (NTP may slew the wall clock).
const CLOCK_REFRESH: Duration = Duration::from_secs(60);
/// How long a stopping recorder waits for the last segments to ship (a dead endpoint must not
/// hold up the stop; what stays pending is shipped by `dnsledger ship` or the next start).
pub const SHIP_SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot recover the spool of an earlier run: {0}")]
    Recover(#[from] RecoveryError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("cannot write segments: {0}")]
    Segment(#[from] SegmentError),
    #[error("cannot listen on {addr} for --metrics-listen: {message}")]
    MetricsListen { addr: SocketAddr, message: String },
    #[error("cannot give {path} to {user}: {source}")]
    Chown {
        path: PathBuf,
        user: String,
        source: std::io::Error,
    },
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot ship segments: {0}")]
    Ship(#[from] ShipError),
    #[error("the writer thread panicked")]
    WriterPanicked,
    #[error(transparent)]
    Privs(#[from] PrivsError),
    #[error(transparent)]
    DohList(#[from] crate::bypass::DohListError),
}

/// What a finished recording did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordSummary {
    pub transactions: u64,
    pub segments: usize,
    pub dropped_kernel: u64,
    pub dropped_user: u64,
}

/// The stop flag of every long-running command: set by SIGINT or SIGTERM (and by a thread
/// that must stop the others).
pub fn stop_flag() -> Result<Arc<AtomicBool>, RecordError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(RecordError::Signal)?;
    }
    Ok(stop)
}

/// A batch of ring-buffer records, concatenated; `ends[i]` is the end offset of record i.
#[derive(Default)]
pub struct Batch {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    /// Appends one record.
    pub fn push(&mut self, record: &[u8]) {
        self.buf.extend_from_slice(record);
        self.ends.push(self.buf.len());
    }

    fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let r = &self.buf[start..end];
            start = end;
            r
        })
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }

    fn is_full(&self) -> bool {
        self.ends.len() >= BATCH_RECORDS || self.buf.len() >= BATCH_BYTES
    }
}

/// The DoH endpoint addresses `record` gives the kernel (none with `--no-bypass`).
fn doh_endpoints(s: &Settings) -> Result<Vec<std::net::IpAddr>, RecordError> {
    if !s.bypass {
        info!("encrypted-DNS bypass not recorded (--no-bypass)");
        return Ok(Vec::new());
    }
    match crate::bypass::load_doh_list(s.doh_list.as_deref())? {
        Some((path, ips)) => {
            info!(
                addresses = ips.len(),
                list = %path.display(),
                "encrypted-DNS bypass: DoT, DoQ and DoH to listed addresses recorded"
            );
            Ok(ips)
        }
        None => {
            warn!(
                "no DoH list at {} (give one with --doh-list): DoT and DoQ are recorded, \
                 DoH is not",
                crate::bypass::DEFAULT_DOH_LIST
            );
            Ok(Vec::new())
        }
    }
}

/// Records until the stop flag is set (by a signal, or by a thread that failed), then seals
/// everything. `s` is the resolved configuration of `record`.
pub fn record(s: &Settings, stop: Arc<AtomicBool>) -> Result<RecordSummary, RecordError> {
    let cgroup_root = bpf::preflight()?;
    bpf::route_libbpf_log();
    let doh_endpoints = doh_endpoints(s)?;
    create_data_dir(&s.data_dir).map_err(|source| RecordError::DataDir {
        path: s.data_dir.clone(),
        source,
    })?;
    let host = HostFacts::detect();
    // Whatever a killed run spooled but never sealed is sealed first.
    let recovered = recover_spool(s, &host)?;
    if !recovered.runs.is_empty() {
        info!(
            runs = recovered.runs.len(),
            recovered = recovered.recovered_rows,
            already_sealed = recovered.already_sealed,
            cut_bytes = recovered.cut_bytes,
            segments = recovered.sealed.len(),
            "recovery done"
        );
    }

    let attr = LiveAttribution {
        table: ProcessTable::new("/proc", Some(cgroup_root.clone())),
        now_ns: 0,
    };
    let pipeline = Pipeline::new(s, &host, "bpf", attr)?;
    // Sockets are made now, as root and before anything is attached or dropped.
    let metrics = match s.metrics_listen {
        Some(addr) => {
            let server = tiny_http::Server::http(addr).map_err(|e| RecordError::MetricsListen {
                addr,
                message: e.to_string(),
            })?;
            let (m, exposition) = Metrics::new(s.metrics_max_processes);
            info!(%addr, "serving Prometheus metrics on /metrics");
            Some((m, exposition, server))
        }
        None => None,
    };
    let live = match LivePublisher::bind(&s.data_dir) {
        Ok(p) => Some(p),
        Err(e) => {
            warn!(
                "cannot create {}: {e}; snoop and top will capture on their own",
                s.data_dir.join(live::LIVE_SOCKET).display()
            );
            None
        }
    };
    let run_as = s.user.clone();
    if let Some(who) = &run_as {
        // Everything made so far as root (directories, recovered segments, the spool) goes to
        // the user the writer becomes.
        let changed = privs::chown_tree(&s.data_dir, who.uid, who.gid).map_err(|source| {
            RecordError::Chown {
                path: s.data_dir.clone(),
                user: who.spec.clone(),
                source,
            }
        })?;
        debug!(changed, user = %who.spec, "data directory handed over");
    }

    let counters = Arc::new(KernelCounters::default());
    let user_drops = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::sync_channel::<Batch>(CHANNEL_BATCHES);
    let (free_tx, free_rx) = mpsc::channel::<Batch>();
    let upkeep = Upkeep {
        data_dir: s.data_dir.clone(),
        host: host.hostname.clone(),
        max_size: s.max_size,
        max_age: s.max_age,
        ship_to: s.ship_to.clone(),
    };
    let status = LiveStatus {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_unix: unix_now_secs(),
        ports: s.ports.clone(),
        ..Default::default()
    };
    let worker = {
        let counters = Arc::clone(&counters);
        let user_drops = Arc::clone(&user_drops);
        let stop = Arc::clone(&stop);
        let run_as = run_as.clone();
        std::thread::Builder::new()
            .name("dnsledger-writer".into())
            .spawn(move || {
                let (r, ship) = writer_thread(
                    run_as.as_ref(),
                    metrics,
                    pipeline,
                    live,
                    WriterIo {
                        rx,
                        free: free_tx,
                        counters: &counters,
                        user_drops: &user_drops,
                    },
                    (status, &upkeep),
                );
                if r.is_err() {
                    // Nothing can be written: stop capturing too.
                    stop.store(true, Ordering::Relaxed);
                }
                (r, ship)
            })
            .map_err(|source| RecordError::Thread {
                what: "writer",
                source,
            })?
    };

    let cfg = BpfConfig {
        ports: s.ports.clone(),
        max_payload: s.max_payload,
        ring_bytes: s.ring_size,
        self_tgid: std::process::id(),
        stacks: s.stacks,
        bypass: s.bypass,
        doh_endpoints,
        serve_side: s.serve_side,
        lookups: s.lookups,
        run_as: run_as.clone(),
    };
    if s.serve_side {
        info!("--serve-side: local DNS servers' side recorded too (rows with side = server)");
    }
    // Hands the batch to the writer. When the writer is behind (channel full) the batch keeps
    // growing here instead; only past BATCH_MAX_PENDING bytes are its events dropped, and
    // counted, so that the ring buffer keeps draining and the kernel never waits.
    let send = |batch: &mut Batch, tx: &SyncSender<Batch>| {
        if batch.ends.is_empty() {
            return;
        }
        match tx.try_send(std::mem::take(batch)) {
            Ok(()) => *batch = free_rx.try_recv().unwrap_or_default(),
            Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => {
                *batch = b;
                if batch.buf.len() >= BATCH_MAX_PENDING {
                    user_drops.fetch_add(batch.ends.len() as u64, Ordering::Relaxed);
                    batch.clear();
                }
            }
        }
    };
    let batch_cell = std::cell::RefCell::new(Batch::default());
    let captured = bpf::capture(
        &cfg,
        &cgroup_root,
        &stop,
        &counters,
        || {
            // Attached: from here on, only reading /proc and the held fds.
            if let Err(e) = privs::drop_to_minimum(run_as.as_ref()) {
                error!("{e}; stopping");
                stop.store(true, Ordering::Relaxed);
                return;
            }
            info!(
                cgroup = %cgroup_root.display(),
                ports = ?s.ports,
                stacks = s.stacks,
                data_dir = %s.data_dir.display(),
                "recording: all programs attached, capturing DNS"
            )
        },
        |record: &[u8]| {
            let mut b = batch_cell.borrow_mut();
            b.push(record);
            if b.is_full() {
                send(&mut b, &tx);
            }
        },
        || send(&mut batch_cell.borrow_mut(), &tx),
    );
    // Whatever the writer could not take yet goes now, waiting for it: nothing is left behind.
    let last = batch_cell.into_inner();
    if !last.ends.is_empty() && tx.send(last).is_err() {
        warn!("the writer stopped before the last events could be handed over");
    }
    drop(tx);
    let (written, ship) = worker.join().map_err(|_| RecordError::WriterPanicked)?;
    let outcome = match captured {
        Err(e) => Err(RecordError::from(e)),
        Ok(()) => written,
    };
    if outcome.is_ok() {
        seal_leftovers(s, &host);
    }
    if let Some(ship) = ship {
        ship.finish(SHIP_SHUTDOWN_WAIT);
    }
    let (transactions, segments) = outcome?;
    Ok(RecordSummary {
        transactions,
        segments,
        dropped_kernel: counters.dropped(),
        dropped_user: user_drops.load(Ordering::Relaxed),
    })
}

type WriterResult = Result<(u64, usize), RecordError>;

/// The writer thread: drops to the minimum privileges, starts the metrics server and the
/// background shipper (which inherit them), then runs [`writer_loop`]. Returns the shipper
/// for the caller to finish after the last seal.
fn writer_thread(
    run_as: Option<&RunAs>,
    metrics: Option<(Metrics, metrics::Exposition, tiny_http::Server)>,
    pipeline: Pipeline<LiveAttribution>,
    live: Option<LivePublisher>,
    io: WriterIo<'_>,
    status: (LiveStatus, &Upkeep),
) -> (WriterResult, Option<ShipperHandle>) {
    // This thread never needs more than reading /proc and writing the data dir.
    if let Err(e) = privs::drop_to_minimum(run_as) {
        return (Err(e.into()), None);
    }
    // Started from here, the HTTP thread has this thread's reduced privileges.
    let metrics = match metrics {
        Some((m, exposition, server)) => {
            let spawned = std::thread::Builder::new()
                .name("dnsledger-metrics".into())
                .spawn(move || metrics::serve(server, exposition));
            if let Err(source) = spawned {
                let e = RecordError::Thread {
                    what: "metrics",
                    source,
                };
                return (Err(e), None);
            }
            Some(m)
        }
        None => None,
    };
    let upkeep = status.1;
    let ship = match &upkeep.ship_to {
        Some(url) => match ShipperHandle::start(&upkeep.data_dir, url) {
            Ok(h) => Some(h),
            Err(e) => return (Err(e.into()), None),
        },
        None => None,
    };
    let r = writer_loop(
        pipeline,
        Extras {
            metrics,
            live,
            ship: ship.as_ref(),
        },
        io,
        status,
    );
    (r, ship)
}

/// What the writer keeps up beside the segments: the status file in the data directory, and
/// the recorder's own retention (`record --max-size` / `--max-age`: the same deletion as
/// `dnsledger prune`, for this host's segments, after each seal and once a minute).
pub struct Upkeep {
    pub data_dir: PathBuf,
    /// This host's name, unescaped (as `prune --host` takes it).
    pub host: String,
    pub max_size: Option<u64>,
    pub max_age: Option<Duration>,
    /// `record --ship-to`: where sealed segments go; retention keeps them until shipped.
    pub ship_to: Option<LakeUrl>,
}

impl Upkeep {
    fn retention_active(&self) -> bool {
        self.max_size.is_some() || self.max_age.is_some()
    }

    fn apply_retention(&self) {
        let opts = PruneOptions {
            dir: self.data_dir.clone(),
            max_age_ns: self.max_age.map(duration_ns),
            max_size: self.max_size,
            hosts: vec![self.host.clone()],
            dry_run: false,
            now_ns: unix_now_ns(),
            // Unshipped segments are kept when shipping is on (or ever was: a ledger exists).
            ship_guard: match &self.ship_to {
                Some(url) => ShipGuard::To(url.clone()),
                None => ShipGuard::Ledgers,
            },
        };
        // A prune run by cron holds the lock: it is doing the same work, try again later.
        match try_prune(&opts) {
            Ok(Some(r)) if !r.deleted.is_empty() || r.kept_unshipped > 0 => info!(
                deleted = r.deleted.len(),
                freed_bytes = r.freed_bytes,
                kept = r.kept,
                kept_bytes = r.kept_bytes,
                kept_unshipped = r.kept_unshipped,
                "retention: deleted the oldest segments (keeping those not shipped yet)"
            ),
            Ok(_) => {}
            Err(e) => warn!("retention: {e}"),
        }
    }
}

/// What the writer feeds besides the segments.
pub struct Extras<'a> {
    pub metrics: Option<Metrics>,
    pub live: Option<LivePublisher>,
    /// `record --ship-to`: poked after each seal; its counters go to the metrics.
    pub ship: Option<&'a ShipperHandle>,
}

/// The part of [`Extras`] the pipeline's tap feeds.
struct Taps {
    metrics: Option<Metrics>,
    live: Option<LivePublisher>,
}

/// The writer's ends of the capture thread: batches in, emptied batches back, and the drop
/// counters the capture side keeps.
pub struct WriterIo<'a> {
    pub rx: Receiver<Batch>,
    pub free: mpsc::Sender<Batch>,
    pub counters: &'a KernelCounters,
    pub user_drops: &'a AtomicU64,
}

/// Copies the pipeline's and the kernel's counters into the status a running recorder
/// publishes.
fn fill_status(
    st: &mut LiveStatus,
    pipeline: &Pipeline<LiveAttribution>,
    io: &WriterIo<'_>,
    write_failures: u64,
) {
    let stats = pipeline.stats();
    st.updated_unix = unix_now_secs();
    st.packets = stats.packets;
    st.messages = stats.messages;
    st.transactions = stats.transactions;
    st.cut_by_cap = stats.cut_by_cap;
    st.pair_evicted = stats.pair_evicted;
    st.segments_sealed = pipeline.sealed().len() as u64;
    st.kernel = COUNTER_NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), io.counters.get(i)))
        .collect();
    st.dropped_user = io.user_drops.load(Ordering::Relaxed);
    st.rows_lost = pipeline.rows_lost();
    st.write_failures = write_failures;
}

/// Feeds every batch through the pipeline until the capture side hangs up, then seals.
/// Returns the transactions written and the segments sealed.
pub fn writer_loop(
    mut pipeline: Pipeline<LiveAttribution>,
    extras: Extras<'_>,
    io: WriterIo<'_>,
    (mut live, upkeep): (LiveStatus, &Upkeep),
) -> Result<(u64, usize), RecordError> {
    let mut retention_sealed = 0;
    let mut last_retention = Instant::now();
    let mut last_status: Option<Instant> = None;
    let mut clock = Clock::now();
    let mut clock_set = Instant::now();
    let mut last_tick = Instant::now();
    let mut last_summary = Instant::now();
    let mut write_failures = 0u64;
    let mut last_write_error: Option<Instant> = None;
    let counters = io.counters;
    let user_drops = io.user_drops;
    let Extras {
        metrics,
        live: publisher,
        ship,
    } = extras;
    let mut shipped_seals = 0;
    let extras = (metrics.is_some() || publisher.is_some()).then(|| {
        Arc::new(Mutex::new(Taps {
            metrics,
            live: publisher,
        }))
    });
    if let Some(x) = &extras {
        let x = Arc::clone(x);
        pipeline.set_tap(Box::new(move |rows| {
            if let Ok(mut x) = x.lock() {
                if let Some(m) = &mut x.metrics {
                    m.observe(rows);
                }
                if let Some(l) = &mut x.live {
                    l.publish(rows);
                }
            }
        }));
    }
    let mut feed = RingFeed::default();
    loop {
        match io.rx.recv_timeout(TICK) {
            Ok(mut batch) => {
                for record in batch.records() {
                    feed.record(&mut pipeline, record, &clock);
                }
                // A batch that grew while the writer was behind is freed rather than recycled:
                // kept, its pages would stay resident for good.
                if batch.buf.capacity() <= 2 * BATCH_BYTES {
                    batch.clear();
                    let _ = io.free.send(batch);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            if clock_set.elapsed() >= CLOCK_REFRESH {
                clock = Clock::now();
                clock_set = Instant::now();
            }
            pipeline.set_drop_totals(counters.dropped(), user_drops.load(Ordering::Relaxed));
            if let Some(x) = &extras
                && let Ok(mut x) = x.lock()
            {
                if let Some(l) = &mut x.live {
                    l.tick();
                }
                if let Some(m) = &x.metrics {
                    m.update_totals(&metrics::Totals {
                        kernel: counters,
                        dropped_user: user_drops.load(Ordering::Relaxed),
                        rows_lost: pipeline.rows_lost(),
                        segments: pipeline.segment_stats(),
                        watermark_ns: pipeline.watermark(),
                        now_unix_ns: clock.to_utc(boot_now()),
                        ship: ship.map(|h| &*h.counters),
                    });
                }
            }
            // A full disk or a write error must not stop the capture: rows wait (bounded, the
            // excess counted) and writing resumes when it can. Said once a minute.
            match pipeline.tick(clock.to_utc(boot_now())) {
                Ok(()) => {
                    if write_failures > 0 {
                        info!(failures = write_failures, "writing resumed");
                        write_failures = 0;
                    }
                }
                Err(e) => {
                    write_failures += 1;
                    if last_write_error.is_none_or(|t: Instant| t.elapsed() >= SUMMARY_EVERY) {
                        last_write_error = Some(Instant::now());
                        error!(failures = write_failures, "cannot write segments: {e}");
                    }
                }
            }
        }
        if let Some(h) = ship
            && pipeline.sealed().len() != shipped_seals
        {
            shipped_seals = pipeline.sealed().len();
            h.poke();
        }
        if upkeep.retention_active()
            && (pipeline.sealed().len() != retention_sealed
                || last_retention.elapsed() >= SUMMARY_EVERY)
        {
            retention_sealed = pipeline.sealed().len();
            last_retention = Instant::now();
            upkeep.apply_retention();
        }
        if last_status.is_none_or(|t| t.elapsed() >= STATUS_EVERY) {
            last_status = Some(Instant::now());
            fill_status(&mut live, &pipeline, &io, write_failures);
            if let Err(e) = live_status::publish(&upkeep.data_dir, &live) {
                debug!("cannot publish status: {e}");
            }
        }
        if last_summary.elapsed() >= SUMMARY_EVERY {
            last_summary = Instant::now();
            let st = pipeline.stats();
            info!(
                transactions = st.transactions,
                messages = st.messages,
                packets = st.packets,
                dropped_kernel = counters.dropped(),
                dropped_user = user_drops.load(Ordering::Relaxed),
                bad_events = feed.bad_events,
                rows_lost = pipeline.rows_lost(),
                cut_by_cap = st.cut_by_cap,
                pair_evicted = st.pair_evicted,
                segments = pipeline.sealed().len(),
                processes = pipeline.attr_mut().table.len(),
                stacks_symbolized = feed.stack_counts().0,
                stacks_process_gone = feed.stack_counts().1,
                "summary"
            );
        }
    }
    pipeline.set_drop_totals(counters.dropped(), user_drops.load(Ordering::Relaxed));
    let (stats, sealed) = pipeline.finish()?;
    if upkeep.retention_active() {
        upkeep.apply_retention();
    }
    Ok((stats.transactions, sealed.len()))
}

/// After the last seal: rows of segments that could not be sealed earlier (disk full, write
/// errors) are still in the spool; seal them now rather than at the next start.
fn seal_leftovers(s: &Settings, host: &HostFacts) {
    match recover_spool(s, host) {
        Ok(r) if !r.runs.is_empty() => info!(
            recovered = r.recovered_rows,
            segments = r.sealed.len(),
            "rows of segments that could not be sealed earlier are sealed now"
        ),
        Ok(_) => {}
        Err(e) => warn!("spooled rows are left for the next start: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::abi::{DIR_EGRESS, DIR_INGRESS, EVENT_PACKET, EVENT_VERSION, OWNER_NONE};
    use crate::capture::skel::types::packet_event;
    use crate::config::DEFAULT_PORTS;
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::path::Path;
    use std::str::FromStr;

    /// The sealed segments under a data directory.
    fn segments_under(dir: &Path) -> Vec<PathBuf> {
        crate::store::prune::list_segments(&dir.join(crate::store::segment::SEGMENTS_DIR))
            .map(|v| v.into_iter().map(|s| s.path).collect())
            .unwrap_or_default()
    }

    /// An IPv4/UDP packet (checksums are never checked).
    fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
        let total = (20 + 8 + payload.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    /// A ring-buffer record as the kernel writes it: the packet event header, then the packet.
    fn ring_record(direction: u8, ts_boot_ns: u64, packet: &[u8]) -> Vec<u8> {
        let h = packet_event {
            kind: EVENT_PACKET,
            version: EVENT_VERSION,
            direction,
            owner_source: OWNER_NONE,
            cap_len: packet.len() as u32,
            wire_len: packet.len() as u32,
            ts_boot_ns,
            sock_cookie: 7,
            ..Default::default()
        };
        // SAFETY: packet_event is a #[repr(C)] plain-old-data struct from the skeleton; viewing
        // it as bytes is sound.
        let head = unsafe {
            std::slice::from_raw_parts(
                (&h as *const packet_event).cast::<u8>(),
                std::mem::size_of::<packet_event>(),
            )
        };
        let mut r = head.to_vec();
        r.extend_from_slice(packet);
        r
    }

    fn dns(id: u16, response: bool) -> Vec<u8> {
        let kind = if response {
            MessageType::Response
        } else {
            MessageType::Query
        };
        let mut m = Message::new(id, kind, OpCode::Query);
        m.add_query(Query::query(
            Name::from_str("writer.example.").expect("name"),
            RecordType::A,
        ));
        m.to_vec().expect("encode")
    }

    fn pipeline_in(dir: &Path) -> (Settings, Pipeline<LiveAttribution>) {
        let mut s = Settings::defaults(DEFAULT_PORTS);
        s.data_dir = dir.to_path_buf();
        s.spool_sync = Some(Duration::from_secs(1));
        let host = HostFacts {
            hostname: "writer test/1".into(),
            boot_id: None,
            kernel: "test".into(),
        };
        let attr = LiveAttribution {
            table: ProcessTable::new(dir.join("no-proc"), None),
            now_ns: 0,
        };
        let p = Pipeline::new(&s, &host, "bpf", attr).expect("pipeline");
        (s, p)
    }

    #[test]
    fn batches_records_and_splits_them_back() {
        let mut b = Batch::default();
        b.push(b"one");
        b.push(b"");
        b.push(b"three");
        assert_eq!(
            b.records().collect::<Vec<_>>(),
            [&b"one"[..], b"", b"three"]
        );
        assert!(!b.is_full());
        b.clear();
        assert_eq!(b.records().count(), 0);
    }

    #[test]
    fn writer_loop_pairs_ring_records_seals_and_publishes_status() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (s, pipeline) = pipeline_in(tmp.path());
        let counters = KernelCounters::default();
        counters.values[crate::capture::abi::CNT_PKT_RB_FULL].store(2, Ordering::Relaxed);
        let user_drops = AtomicU64::new(3);
        let (tx, rx) = mpsc::sync_channel(4);
        let (free_tx, free_rx) = mpsc::channel();
        let now = boot_now();
        let client = [10, 0, 0, 1];
        let server = [10, 0, 0, 53];
        let mut batch = Batch::default();
        batch.push(&ring_record(
            DIR_EGRESS,
            now,
            &udp4(client, 40000, server, 53, &dns(9, false)),
        ));
        batch.push(&ring_record(
            DIR_INGRESS,
            now + 1_000_000,
            &udp4(server, 53, client, 40000, &dns(9, true)),
        ));
        batch.push(b"not a record");
        tx.send(batch).expect("send");
        drop(tx);
        let upkeep = Upkeep {
            data_dir: s.data_dir.clone(),
            host: "writer test/1".into(),
            max_size: None,
            max_age: None,
            ship_to: None,
        };
        let (transactions, segments) = writer_loop(
            pipeline,
            Extras {
                metrics: None,
                live: None,
                ship: None,
            },
            WriterIo {
                rx,
                free: free_tx,
                counters: &counters,
                user_drops: &user_drops,
            },
            (LiveStatus::default(), &upkeep),
        )
        .expect("writer loop");
        assert_eq!((transactions, segments), (1, 1));
        // The emptied batch came back for reuse.
        assert!(free_rx.try_recv().is_ok());
        let sealed = segments_under(tmp.path());
        assert_eq!(sealed.len(), 1);
        let host_dir = sealed[0]
            .ancestors()
            .nth(3)
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .expect("host directory");
        assert_eq!(host_dir, "host=writer%20test%2F1");
        // The status file was written on the first round, with the kernel's counters by name.
        let text = std::fs::read_to_string(tmp.path().join(live_status::STATUS_FILE))
            .expect("status.json");
        let st: LiveStatus = serde_json::from_str(&text).expect("status json");
        assert_eq!(st.kernel.get("packet_ringbuf_full"), Some(&2));
        assert_eq!(st.dropped_user, 3);
    }

    #[test]
    fn status_carries_pipeline_and_kernel_counters() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (_, mut pipeline) = pipeline_in(tmp.path());
        let now_ns = unix_now_ns();
        let q = udp4([10, 0, 0, 1], 40001, [10, 0, 0, 53], 53, &dns(1, false));
        pipeline.packet(&crate::capture::RawPacket {
            ts_ns: now_ns,
            direction: crate::capture::Direction::Egress,
            side: crate::capture::Side::Client,
            owner: None,
            sock_cookie: 0,
            wire_len: q.len() as u32,
            data: &q,
        });
        let counters = KernelCounters::default();
        counters.values[crate::capture::abi::CNT_LOAD_BYTES].store(5, Ordering::Relaxed);
        let user_drops = AtomicU64::new(4);
        let (_tx, rx) = mpsc::sync_channel(1);
        let (free, _free_rx) = mpsc::channel();
        let io = WriterIo {
            rx,
            free,
            counters: &counters,
            user_drops: &user_drops,
        };
        let mut st = LiveStatus::default();
        fill_status(&mut st, &pipeline, &io, 6);
        assert_eq!(st.packets, 1);
        assert_eq!(st.messages, 1);
        assert_eq!(st.kernel.len(), COUNTER_NAMES.len());
        assert_eq!(st.kernel.get("packet_copy_failed"), Some(&5));
        assert_eq!((st.dropped_user, st.write_failures), (4, 6));
        assert!(st.updated_unix > 0);
    }

    #[test]
    fn retention_deletes_this_hosts_oldest_segments_by_unescaped_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let seg = tmp.path().join(crate::store::segment::SEGMENTS_DIR);
        let mine = seg.join("host=db%201/date=2020-01-01/hour=00/a.parquet");
        let other = seg.join("host=other/date=2020-01-01/hour=00/b.parquet");
        for f in [&mine, &other] {
            std::fs::create_dir_all(f.parent().expect("dir")).expect("mkdir");
            std::fs::write(f, b"x").expect("write");
        }
        let upkeep = Upkeep {
            data_dir: tmp.path().to_path_buf(),
            host: "db 1".into(),
            max_size: None,
            max_age: Some(Duration::from_secs(24 * 3600)),
            ship_to: None,
        };
        assert!(upkeep.retention_active());
        upkeep.apply_retention();
        assert!(!mine.exists(), "this host's old segment is deleted");
        assert!(
            other.exists(),
            "other hosts' segments are not this recorder's"
        );
        let off = Upkeep {
            max_age: None,
            ..upkeep
        };
        assert!(!off.retention_active());
    }
}
