//! The one pipeline both sources feed: packets -> messages -> transactions -> segments, i.e.
//! [`crate::decode`] -> [`crate::dns`] -> [`crate::pair`] -> [`crate::store`]. The live source
//! ([`crate::recorder`], through [`crate::capture::ring::RingFeed`]) and capture files
//! ([`import`]) drive the same [`Pipeline`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dnsledger_schema::partition::NS_PER_HOUR;
use dnsledger_schema::{Transaction, meta};
use tracing::{error, info, warn};

use crate::capture::RawPacket;
use crate::capture::pcap::PcapSource;
use crate::config::{Settings, duration_ns};
use crate::decode::{Decoder, DnsMessage, PortSet};
use crate::pair::{Attributor, NoAttribution, PairConfig, Pairer};
use crate::store::fs::create_data_dir;
use crate::store::segment::{SegmentConfig, SegmentError, SegmentStats, SegmentWriter};
use crate::store::spool::{RecoveryError, RecoveryReport};

/// TCP streams and fragment buffers idle this long are flushed.
const DECODER_IDLE_NS: i64 = 30_000_000_000;
/// Rows are held back this long past "now" so that packets delivered slightly out of order
/// (per-CPU ring buffer producers, pcap timestamps) still land in `ts` order.
/// Every buffered row costs ~1 KiB, so this is the recorder's largest memory term at high
/// rates (rate x slack rows).
const REORDER_SLACK_NS: i64 = 500_000_000;

/// Rows wait this long at most for a pending query older than them to be settled. Beyond it
/// they are written, and the query's row, when it comes (answered late or given up after the
/// pair timeout), goes into the next segment (see `segment`). Waiting for the full pair timeout
/// held rate x 5 s of rows in memory whenever any query went unanswered.
const PENDING_WAIT_NS: i64 = 1_000_000_000;

/// Rows of a new hour wait at most this long past the hour's end for queries of the previous
/// hour still pending (the default pair timeout): rate x this many rows, once an hour.
const HOUR_HOLD_NS: i64 = 5_000_000_000;

/// Rows that may wait in memory when they cannot be written (about 1 KiB each with raw bytes).
const MAX_BUFFERED_ROWS: usize = 256 * 1024;

/// Facts about the machine stored in every row and segment.
#[derive(Clone, Debug)]
pub struct HostFacts {
    pub hostname: String,
    pub boot_id: Option<String>,
    pub kernel: String,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl HostFacts {
    pub fn detect() -> Self {
        Self {
            hostname: read_trimmed("/proc/sys/kernel/hostname")
                .unwrap_or_else(|| "localhost".into()),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        }
    }
}

/// Rebuilds what earlier runs spooled but never sealed (after a crash), before recording.
pub fn recover_spool(
    settings: &Settings,
    host: &HostFacts,
) -> Result<RecoveryReport, RecoveryError> {
    crate::store::spool::recover(&settings.data_dir, "", |run, report| {
        SegmentWriter::open(SegmentConfig {
            data_dir: settings.data_dir.clone(),
            host: host.hostname.clone(),
            boot_id: host.boot_id.clone(),
            kernel: host.kernel.clone(),
            source: "bpf",
            rotate_size: settings.rotate_size,
            rotate_age: settings.rotate_age,
            batch_rows: 8192,
            spool_sync: None,
            run_id: Some(format!("{run}r")),
            min_free: settings.min_free.bytes_for(&settings.data_dir),
            max_buffered_rows: MAX_BUFFERED_ROWS,
            extra_meta: vec![
                (meta::RECOVERED_FROM.into(), run.to_string()),
                (
                    meta::RECOVERED_ROWS.into(),
                    report.recovered_rows.to_string(),
                ),
                (
                    meta::RECOVERY_CUT_BYTES.into(),
                    report.cut_bytes.to_string(),
                ),
            ],
        })
    })
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Ports(#[from] crate::decode::DecodeError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write segments: {0}")]
    Write(SegmentError),
    #[error("cannot seal segments: {0}")]
    Seal(SegmentError),
}

/// Capture time between two expiry rounds of `import`.
const IMPORT_TICK_NS: i64 = 1_000_000_000;

/// What `dnsledger import` did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub stats: PipelineStats,
    /// Sealed segments, in the order they were sealed.
    pub sealed: Vec<PathBuf>,
    /// Files that could not be read completely (what was readable is imported).
    pub failed: Vec<PathBuf>,
}

/// Feeds capture files through the same decode -> pair -> segment path (`dnsledger import`).
/// A file that cannot be opened or read to its end is named in the report and logged; what was
/// readable is kept. Time passes as the capture says.
pub fn import(
    settings: &Settings,
    host: &HostFacts,
    files: &[PathBuf],
) -> Result<ImportReport, PipelineError> {
    create_data_dir(&settings.data_dir).map_err(|source| PipelineError::DataDir {
        path: settings.data_dir.clone(),
        source,
    })?;
    let mut pipeline = Pipeline::new(settings, host, "import", NoAttribution)?;
    let mut failed = Vec::new();
    for file in files {
        let mut source = match PcapSource::open(file) {
            Ok(src) => src,
            Err(e) => {
                error!("{e}");
                failed.push(file.clone());
                continue;
            }
        };
        let mut count = 0u64;
        let mut tick_error = None;
        let mut last_tick_ts = i64::MIN;
        let result = source.for_each(|pkt| {
            pipeline.packet(pkt);
            count += 1;
            // Time passes as the capture says: expire pending queries once per second of
            // capture time (and every 1024 packets, for captures with frozen clocks).
            let due = pkt.ts_ns.saturating_sub(last_tick_ts) >= IMPORT_TICK_NS
                || count.is_multiple_of(1024);
            if due && tick_error.is_none() {
                last_tick_ts = pkt.ts_ns;
                if let Err(e) = pipeline.tick(pkt.ts_ns) {
                    tick_error = Some(e);
                }
            }
        });
        if let Some(e) = tick_error {
            return Err(PipelineError::Write(e));
        }
        match result {
            Ok(stats) => info!(file = %file.display(), packets = count, ?stats, "imported"),
            Err(e) => {
                // What was readable is kept; the file is named and the run fails at the end.
                warn!("{e}");
                failed.push(file.clone());
            }
        }
    }
    let (stats, sealed) = pipeline.finish().map_err(PipelineError::Seal)?;
    Ok(ImportReport {
        stats,
        sealed,
        failed,
    })
}

#[derive(Clone, Copy, Debug, Default)]
pub struct PipelineStats {
    pub packets: u64,
    pub messages: u64,
    pub transactions: u64,
    /// Messages cut short by the payload cap.
    pub cut_by_cap: u64,
    /// Queries the full pairing table wrote unanswered early.
    pub pair_evicted: u64,
}

/// Sees every finished transaction before it is written (live views, metrics). Runs on the
/// pipeline's thread: it must be quick and must not block.
pub type RowTap = Box<dyn FnMut(&[Transaction]) + Send>;

pub struct Pipeline<A: Attributor> {
    decoder: Decoder,
    pairer: Pairer,
    /// `None` for a live view that writes no segments.
    writer: Option<SegmentWriter>,
    tap: Option<RowTap>,
    /// The time up to which rows have been handed to the segment writer (UTC ns).
    watermark: Option<i64>,
    attr: A,
    msgs: Vec<DnsMessage>,
    rows: Vec<Transaction>,
    stats: PipelineStats,
    sealed: Vec<PathBuf>,
    max_payload: usize,
    /// Links DNS rows to the libc lookup that caused them (empty unless lookups are recorded).
    linker: crate::lookups::Linker,
}

impl<A: Attributor> Pipeline<A> {
    pub fn new(
        settings: &Settings,
        host: &HostFacts,
        source: &'static str,
        attr: A,
    ) -> Result<Self, PipelineError> {
        let mut writer = SegmentWriter::open(SegmentConfig {
            data_dir: settings.data_dir.clone(),
            host: host.hostname.clone(),
            boot_id: host.boot_id.clone(),
            kernel: host.kernel.clone(),
            source,
            rotate_size: settings.rotate_size,
            rotate_age: settings.rotate_age,
            batch_rows: 8192,
            spool_sync: settings.spool_sync,
            run_id: None,
            extra_meta: Vec::new(),
            min_free: settings.min_free.bytes_for(&settings.data_dir),
            max_buffered_rows: MAX_BUFFERED_ROWS,
        })?;
        // Counted from the start, so every segment says "0" rather than nothing.
        writer.set_counter(meta::CUT_BY_CAP, 0);
        writer.set_counter(meta::PAIR_EVICTED, 0);
        Self::build(settings, host, attr, Some(writer))
    }

    /// A pipeline that decodes and pairs but writes nothing: finished transactions only go to
    /// the tap (`snoop` and `top` capturing on their own).
    pub fn without_segments(
        settings: &Settings,
        host: &HostFacts,
        attr: A,
    ) -> Result<Self, PipelineError> {
        Self::build(settings, host, attr, None)
    }

    fn build(
        settings: &Settings,
        host: &HostFacts,
        attr: A,
        writer: Option<SegmentWriter>,
    ) -> Result<Self, PipelineError> {
        let ports = PortSet::new(&settings.ports)?;
        let mut pairer = Pairer::new(PairConfig {
            timeout_ns: duration_ns(settings.pair_timeout),
            max_pending: settings.max_pending,
            keep_raw: settings.keep_raw,
            hostname: Arc::from(host.hostname.as_str()),
            boot_id: host.boot_id.as_deref().map(Arc::from),
        });
        // Requester behind a local stub: only rows with a process (live capture) are linked.
        if settings.stub_link {
            pairer.set_stub_linker(crate::stublink::StubLinker::new(
                crate::stublink::ProcSockets::default(),
            ));
        }
        Ok(Self {
            decoder: Decoder::new(ports),
            pairer,
            writer,
            tap: None,
            watermark: None,
            attr,
            msgs: Vec::with_capacity(64),
            rows: Vec::with_capacity(1024),
            stats: PipelineStats::default(),
            sealed: Vec::new(),
            max_payload: settings.max_payload as usize,
            linker: crate::lookups::Linker::default(),
        })
    }

    /// Hands every finished transaction to `tap` (in the order they finish, before the segment
    /// writer's reordering by time).
    pub fn set_tap(&mut self, tap: RowTap) {
        self.tap = Some(tap);
    }

    /// The segment writer's counters (zero without segments).
    pub fn segment_stats(&self) -> SegmentStats {
        self.writer
            .as_ref()
            .map(SegmentWriter::stats)
            .unwrap_or_default()
    }

    /// The time (UTC ns) up to which rows have been handed to the segments, as of the last
    /// [`tick`](Self::tick).
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    pub fn attr_mut(&mut self) -> &mut A {
        &mut self.attr
    }

    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    /// Rows dropped because they could not be written in time.
    pub fn rows_lost(&self) -> u64 {
        self.writer.as_ref().map_or(0, SegmentWriter::rows_lost)
    }

    /// Segments sealed so far.
    pub fn sealed(&self) -> &[PathBuf] {
        &self.sealed
    }

    fn pair_messages(&mut self) {
        self.stats.messages += self.msgs.len() as u64;
        for mut msg in self.msgs.drain(..) {
            // The payload cap is exact whatever the source: the kernel copies a little more
            // (headers vary in length), and capture files may hold anything.
            if msg.bytes.len() > self.max_payload {
                msg.bytes.truncate(self.max_payload);
                msg.capture_error.get_or_insert_with(|| {
                    format!("cut at {} bytes by --max-payload", self.max_payload)
                });
                self.stats.cut_by_cap += 1;
                if let Some(w) = &mut self.writer {
                    w.set_counter(meta::CUT_BY_CAP, self.stats.cut_by_cap);
                }
            }
            self.pairer.push(msg, &mut self.attr, &mut self.rows);
        }
        self.flush_rows();
    }

    fn flush_rows(&mut self) {
        let evicted = self.pairer.evicted();
        if evicted != self.stats.pair_evicted {
            self.stats.pair_evicted = evicted;
            if let Some(w) = &mut self.writer {
                w.set_counter(meta::PAIR_EVICTED, evicted);
            }
        }
        if self.rows.is_empty() {
            return;
        }
        self.stats.transactions += self.rows.len() as u64;
        if self.linker.tracking() {
            for row in &mut self.rows {
                self.linker.link(row);
            }
        }
        if let Some(tap) = &mut self.tap {
            tap(&self.rows);
        }
        match &mut self.writer {
            Some(w) => w.push(self.rows.drain(..)),
            None => self.rows.clear(),
        }
    }

    pub fn packet(&mut self, pkt: &RawPacket<'_>) {
        self.packet_with_stack(pkt, None);
    }

    /// Like [`packet`](Self::packet); `stack` is the sender's user stack (`--stacks`), given to
    /// the queries this packet completes.
    pub fn packet_with_stack(&mut self, pkt: &RawPacket<'_>, stack: Option<Arc<[String]>>) {
        self.stats.packets += 1;
        if pkt.direction == crate::capture::Direction::Egress
            && let Some(o) = pkt.owner
        {
            self.linker.query_sent(o.tid);
        }
        self.decoder.push(pkt, &mut self.msgs);
        if let Some(stack) = stack {
            let tid = pkt.owner.map(|o| o.tid);
            for m in self.msgs.iter_mut() {
                if m.from_client && m.owner.map(|o| o.tid) == tid {
                    m.stack = Some(Arc::clone(&stack));
                }
            }
        }
        if !self.msgs.is_empty() {
            self.pair_messages();
        }
    }

    /// A connection to an encrypted-DNS endpoint: a `bypass` row (see [`crate::bypass`]) for
    /// the segments. The tap (snoop, top, the DNSWatch metrics) does not see it: those count
    /// DNS transactions.
    pub fn bypass(&mut self, b: &crate::bypass::BypassInfo) {
        let Some(w) = &mut self.writer else {
            return;
        };
        let attrs = self.attr.attrs(&b.owner);
        let (hostname, boot_id) = self.pairer.host();
        let row = crate::bypass::bypass_row(b, attrs, hostname, boot_id);
        self.stats.transactions += 1;
        w.push(std::iter::once(row));
    }

    /// A thread entered a libc lookup: the DNS queries it sends until the lookup returns are
    /// linked to it (see [`crate::lookups`]).
    pub fn lookup_start(&mut self, tid: u32, ts_ns: i64) {
        self.linker.start(tid, ts_ns);
    }

    /// A libc lookup returned: a `lookup` row for the segments. Like bypass rows, the tap
    /// (snoop, top, the DNSWatch metrics) does not see it: those count DNS transactions.
    pub fn lookup(&mut self, l: &crate::lookups::LookupInfo) {
        let local = self.linker.finish(l.owner.tid, l.start_ns, l.end_ns);
        let Some(w) = &mut self.writer else {
            return;
        };
        let attrs = self.attr.attrs(&l.owner);
        let (hostname, boot_id) = self.pairer.host();
        let mut row =
            crate::lookups::lookup_row(l, attrs, hostname, boot_id, local.unwrap_or(false));
        // Without its start event (lost in the kernel) whether it went to the wire is unknown.
        if local.is_none() {
            row.lookup_local = None;
        }
        self.stats.transactions += 1;
        w.push(std::iter::once(row));
    }

    pub fn set_drop_totals(&mut self, kernel: u64, user: u64) {
        if let Some(w) = &mut self.writer {
            w.set_drop_totals(kernel, user);
        }
    }

    /// Expires stale state as of `now_ns` (UTC ns) and writes rows that can no longer be
    /// preceded by another.
    pub fn tick(&mut self, now_ns: i64) -> Result<(), SegmentError> {
        self.decoder.expire(now_ns, DECODER_IDLE_NS, &mut self.msgs);
        self.pair_messages();
        self.pairer.expire(now_ns, &mut self.rows);
        self.flush_rows();
        self.linker.expire(now_ns);
        let horizon = now_ns.saturating_sub(REORDER_SLACK_NS);
        let pending_floor = now_ns.saturating_sub(PENDING_WAIT_NS);
        let watermark = self.pairer.low_watermark().map_or(horizon, |w| {
            // Rows of a later hour also wait (at most HOUR_HOLD_NS) for the queries of an
            // earlier hour still pending: that hour's segment seals when the first row of the
            // next is written, and their rows would otherwise make a second segment of it.
            let hour_end = (w.div_euclid(NS_PER_HOUR) + 1) * NS_PER_HOUR;
            let floor = if now_ns.saturating_sub(hour_end) <= HOUR_HOLD_NS {
                pending_floor.min(hour_end)
            } else {
                pending_floor
            };
            w.max(floor).min(horizon)
        });
        self.watermark = Some(watermark);
        if let Some(w) = &mut self.writer {
            let sealed = w.advance(Some(watermark), Instant::now())?;
            self.sealed.extend(sealed);
        }
        Ok(())
    }

    /// Flushes everything (pending queries become `unanswered`) and seals the last segment.
    pub fn finish(mut self) -> Result<(PipelineStats, Vec<PathBuf>), SegmentError> {
        self.decoder.finish(&mut self.msgs);
        self.pair_messages();
        self.pairer.flush(&mut self.rows);
        self.flush_rows();
        if let Some(w) = self.writer.take() {
            let sealed = w.close()?;
            self.sealed.extend(sealed);
        }
        Ok((self.stats, self.sealed))
    }
}
