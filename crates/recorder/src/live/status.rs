//! `dnsledger status`: the live counters a running recorder publishes, and the state of the
//! data directory.
//!
//! The recorder rewrites `<data_dir>/status.json` (atomically: temporary file + rename) every
//! few seconds; `status` reads it and says whether it is fresh and whether that process lives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::prune::list_segments;
use crate::store::segment::{INPROGRESS_DIR, SEGMENTS_DIR};
use crate::store::spool::SPOOL_DIR;

pub const STATUS_FILE: &str = "status.json";

/// What a running recorder publishes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveStatus {
    pub pid: u32,
    pub version: String,
    pub started_unix: u64,
    pub updated_unix: u64,
    pub ports: Vec<u16>,
    pub packets: u64,
    pub messages: u64,
    pub transactions: u64,
    pub segments_sealed: u64,
    /// In-kernel counters by reason (ring buffer full, copy failures, ...).
    pub kernel: BTreeMap<String, u64>,
    pub dropped_user: u64,
    pub rows_lost: u64,
    pub cut_by_cap: u64,
    /// Queries given up by the full pairing table (written unanswered early).
    #[serde(default)]
    pub pair_evicted: u64,
    pub write_failures: u64,
}

/// Writes the status file atomically.
pub fn publish(data_dir: &Path, status: &LiveStatus) -> std::io::Result<()> {
    let tmp = data_dir.join(format!(".{STATUS_FILE}.tmp"));
    let text = serde_json::to_string_pretty(status).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, data_dir.join(STATUS_FILE))
}

/// Files and bytes under a directory (not recursive for spool/inprogress).
fn count_files(dir: &Path) -> (u64, u64) {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
        })
        .unwrap_or((0, 0))
}

/// The state of a data directory and of the recorder writing it, as text lines.
pub fn report(data_dir: &Path, now_unix: u64) -> Result<(Vec<String>, bool), String> {
    if !data_dir.is_dir() {
        return Err(format!("{} does not exist", data_dir.display()));
    }
    let mut lines = Vec::new();
    let live: Option<LiveStatus> = std::fs::read_to_string(data_dir.join(STATUS_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let mut healthy = true;
    match &live {
        Some(s) => {
            let alive = std::fs::read_to_string(format!("/proc/{}/comm", s.pid))
                .is_ok_and(|c| c.trim() == "dnsledger");
            let age = now_unix.saturating_sub(s.updated_unix);
            let state = if alive && age <= 30 {
                "running"
            } else if alive {
                healthy = false;
                "running but not updating its status"
            } else {
                healthy = false;
                "not running (last status below)"
            };
            lines.push(format!(
                "recorder: {state} (pid {}, version {}, status {age} s old, ports {:?})",
                s.pid, s.version, s.ports
            ));
            lines.push(format!(
                "captured: {} packets, {} messages, {} transactions, {} segments sealed",
                s.packets, s.messages, s.transactions, s.segments_sealed
            ));
            let kernel: Vec<String> = s.kernel.iter().map(|(k, v)| format!("{k}={v}")).collect();
            lines.push(format!("kernel counters: {}", kernel.join(" ")));
            lines.push(format!(
                "lost: dropped_user={} rows_lost={} cut_by_cap={} pair_evicted={} write_failures={}",
                s.dropped_user, s.rows_lost, s.cut_by_cap, s.pair_evicted, s.write_failures
            ));
        }
        None => {
            healthy = false;
            lines.push("recorder: no status file (never ran here, or not running)".into());
        }
    }
    let segments = list_segments(&data_dir.join(SEGMENTS_DIR)).unwrap_or_default();
    let bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    let newest: Option<&PathBuf> = segments.last().map(|s| &s.path);
    lines.push(format!(
        "segments: {} files, {} bytes{}",
        segments.len(),
        bytes,
        newest
            .map(|p| format!(", newest {}", p.display()))
            .unwrap_or_default()
    ));
    lines.extend(crate::store::ship::status_lines(data_dir, now_unix));
    let (sn, sb) = count_files(&data_dir.join(SPOOL_DIR));
    let (inn, inb) = count_files(&data_dir.join(INPROGRESS_DIR));
    lines.push(format!(
        "spool: {sn} files, {sb} bytes; in progress: {inn} files, {inb} bytes"
    ));
    Ok((lines, healthy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_then_report() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = LiveStatus {
            pid: u32::MAX,
            version: "0.1.0".into(),
            updated_unix: 100,
            ports: vec![53],
            transactions: 7,
            kernel: BTreeMap::from([("packet_ringbuf_full".into(), 3)]),
            rows_lost: 2,
            ..Default::default()
        };
        publish(tmp.path(), &s).expect("publish");
        let (lines, healthy) = report(tmp.path(), 105).expect("report");
        let text = lines.join("\n");
        assert!(!healthy, "pid u32::MAX is not a live recorder");
        assert!(text.contains("not running"), "{text}");
        assert!(text.contains("7 transactions"), "{text}");
        assert!(text.contains("packet_ringbuf_full=3"), "{text}");
        assert!(text.contains("rows_lost=2"), "{text}");
        assert!(text.contains("segments: 0 files"), "{text}");
        assert!(report(&tmp.path().join("nope"), 0).is_err());
    }
}
