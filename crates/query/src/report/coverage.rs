//! Coverage: when each host was being recorded, from the segments' footers and file names
//! alone (no scan), so that a silent stretch can be told from one nobody recorded.
//!
//! The recorder writes a segment only once a transaction arrives, so the absence of segments
//! says nothing by itself. What does: every live run names its segments
//! `<first ts>-<host>-<run id>-<seq>.parquet`, where the run id starts with the run's start
//! time (ns since the epoch, hex) and `seq` counts the run's segments from 0. So a live run
//! (`dnsledger.source = bpf`) was recording from its start to the last transaction of its
//! last segment, and between two of its segments with consecutive numbers nothing was lost:
//! time there without rows is silence. A jump in the numbers is a segment that is not there
//! (pruned, not shipped); time around it is not recorded. After a run's last transaction the
//! recorder may have gone on idling, stopped, or not sealed its segment yet: not known, so
//! not recorded. Imported captures (`import`) and segments of unknown origin cover only the
//! span of their own rows. A compacted segment stands for the segments it names in
//! `dnsledger.compacted_from` (their names carry run, number and first transaction).

use std::collections::BTreeMap;

use dnsledger_schema::compaction;
use dnsledger_schema::partition::{self, NS_PER_HOUR};

use crate::catalog::segments::SegmentRow;

/// What the name of a segment written by `dnsledger record` or `import` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameParts {
    /// Its first transaction, ns since the epoch.
    pub first_ts: i64,
    /// The run id (the recorder's: `<start ns, 16 hex digits>p<pid>`).
    pub run: String,
    /// The run's start, ns since the epoch, when the run id is the recorder's.
    pub run_start: Option<i64>,
    /// The segment's number within its run.
    pub seq: u64,
}

/// Parses `<YYYYMMDDTHHMMSS.fffffffffZ>-<host>-<run>-<seq>.parquet` (the host is escaped and
/// may contain `-`, so the parts are taken from both ends). `None` for any other name.
pub fn parse_name(name: &str) -> Option<NameParts> {
    let stem = name.strip_suffix(".parquet")?;
    let (rest, seq) = stem.rsplit_once('-')?;
    let (_, run) = rest.rsplit_once('-')?;
    let (time, _) = rest.split_once('-')?;
    if seq.len() < 6 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if run.is_empty() {
        return None;
    }
    let run_start = run.split_once('p').and_then(|(hex, pid)| {
        (hex.len() == 16 && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
            .then(|| u64::from_str_radix(hex, 16).ok())
            .flatten()
            .and_then(|t| i64::try_from(t).ok())
    });
    Some(NameParts {
        first_ts: parse_compact_time(time)?,
        run: run.to_owned(),
        run_start,
        seq: seq.parse().ok()?,
    })
}

/// `YYYYMMDDTHHMMSS.fffffffffZ` (the recorder's `format_compact_ns`) to ns since the epoch.
fn parse_compact_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 26 || b[8] != b'T' || b[15] != b'.' || b[25] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())
            .flatten()
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, sec, nanos) = (num(9..11)?, num(11..13)?, num(13..15)?, num(16..25)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = partition::days_from_civil(y, u32::try_from(mo).ok()?, u32::try_from(d).ok()?);
    let secs = days * 86_400 + h * 3_600 + mi * 60 + sec;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// A stretch of one host's time, `[start, end)` in ns since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

impl Span {
    pub fn len(&self) -> i64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Why a stretch has no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapKind {
    /// No recorder run covers it (none ran, or after a run's last transaction).
    NoRecorder,
    /// Between segments of one run whose numbers jump: a segment is missing.
    MissingSegments,
}

/// A stretch of the window without a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub span: Span,
    pub kind: GapKind,
}

/// A point in time where something was lost or rebuilt, for the strip chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub at: i64,
    pub kind: MarkKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// Events dropped in the kernel or user space, or rows lost before writing.
    Loss,
    /// A segment rebuilt from the spool of a run that died (a crash).
    Recovered,
    /// A segment that could not be read (skipped by every query).
    Unreadable,
}

/// One host's coverage of the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCoverage {
    pub host: String,
    pub segments: usize,
    pub rows: u64,
    /// Stretches the record covers, sorted, disjoint, within the window.
    pub recorded: Vec<Span>,
    /// The rest of the window, longest first.
    pub gaps: Vec<Gap>,
    pub marks: Vec<Mark>,
    pub dropped_kernel: u64,
    pub dropped_user: u64,
    pub rows_lost: u64,
    pub cut_by_cap: u64,
    pub pair_evicted: u64,
    /// Distinct dead runs whose spool was recovered into segments of the window.
    pub recovered_runs: usize,
    pub recovery_cut_bytes: u64,
    pub unreadable: usize,
    /// Live runs seen (distinct run ids of `bpf` segments).
    pub runs: usize,
    /// Segments written by `dnsledger import` (their coverage is their own rows' span).
    pub imported: usize,
}

impl HostCoverage {
    /// Nanoseconds of the window the record covers.
    pub fn recorded_ns(&self) -> i64 {
        self.recorded.iter().map(Span::len).sum()
    }

    /// Whether any loss of any kind was counted.
    pub fn lost_anything(&self) -> bool {
        self.dropped_kernel + self.dropped_user + self.rows_lost > 0
    }
}

/// One segment as a piece of its run.
#[derive(Debug, Clone)]
struct Piece {
    live: bool,
    run: Option<(String, Option<i64>)>,
    seq: Option<u64>,
    start: i64,
    end: i64,
}

/// The pieces one listed segment stands for.
fn pieces(row: &SegmentRow) -> Vec<Piece> {
    let info = &row.info;
    let (Some(ts_min), Some(ts_max)) = (info.ts_min, info.ts_max) else {
        return Vec::new();
    };
    let live = info
        .source
        .as_deref()
        .is_some_and(|s| s.split(',').any(|v| v.trim() == "bpf"));
    let whole = Piece {
        live: false,
        run: None,
        seq: None,
        start: ts_min,
        end: ts_max,
    };
    if let Some(inputs) = info.compacted_from.as_deref() {
        let mut parts: Vec<NameParts> = compaction::decode_inputs(inputs)
            .into_iter()
            .filter_map(parse_name)
            .collect();
        parts.sort_by_key(|p| p.first_ts);
        let last = parts.len().saturating_sub(1);
        let mut out: Vec<Piece> = parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| Piece {
                live,
                start: p.first_ts.max(ts_min),
                end: if i == last {
                    ts_max
                } else {
                    p.first_ts.max(ts_min)
                },
                run: Some((p.run, p.run_start)),
                seq: Some(p.seq),
            })
            .collect();
        out.push(whole);
        return out;
    }
    let name = row
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match parse_name(&name) {
        Some(p) => vec![Piece {
            live,
            run: Some((p.run, p.run_start)),
            seq: Some(p.seq),
            start: ts_min,
            end: ts_max,
        }],
        None => vec![whole],
    }
}

/// Sorted, merged, clipped to `window`.
fn union(mut spans: Vec<Span>, window: Span) -> Vec<Span> {
    spans.retain(|s| s.end > window.start && s.start < window.end);
    for s in &mut spans {
        s.start = s.start.max(window.start);
        s.end = s.end.min(window.end);
    }
    spans.sort();
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last) if s.start <= last.end => last.end = last.end.max(s.end),
            _ => out.push(s),
        }
    }
    out
}

/// `window` minus `covered` (sorted, disjoint).
fn complement(covered: &[Span], window: Span) -> Vec<Span> {
    let mut out = Vec::new();
    let mut at = window.start;
    for s in covered {
        if s.start > at {
            out.push(Span {
                start: at,
                end: s.start,
            });
        }
        at = at.max(s.end);
    }
    if at < window.end {
        out.push(Span {
            start: at,
            end: window.end,
        });
    }
    out
}

/// The coverage of `window` by each host: `rows` are the window's segments (as `dnsql
/// segments` lists them), `unreadable` the (host, partition hour start) of segments that
/// could not be read. Hosts in `hosts` without any segment get an empty coverage. Sorted by
/// host.
pub fn coverage(
    rows: &[SegmentRow],
    unreadable: &[(String, i64)],
    hosts: &[String],
    window: Span,
) -> Vec<HostCoverage> {
    let mut by_host: BTreeMap<String, Vec<&SegmentRow>> = BTreeMap::new();
    for h in hosts {
        by_host.entry(h.clone()).or_default();
    }
    for r in rows {
        by_host.entry(r.host.clone()).or_default().push(r);
    }
    for (h, _) in unreadable {
        by_host.entry(h.clone()).or_default();
    }
    by_host
        .into_iter()
        .map(|(host, segs)| {
            let bad: Vec<i64> = unreadable
                .iter()
                .filter(|(h, _)| *h == host)
                .map(|(_, at)| *at)
                .collect();
            host_coverage(host, &segs, &bad, window)
        })
        .collect()
}

fn host_coverage(host: String, segs: &[&SegmentRow], bad: &[i64], window: Span) -> HostCoverage {
    let mut c = HostCoverage {
        host,
        segments: segs.len(),
        unreadable: bad.len(),
        ..HostCoverage::default()
    };
    let mut recovered: Vec<&str> = Vec::new();
    let mut all: Vec<Piece> = Vec::new();
    for s in segs {
        let i = &s.info;
        c.rows += i.rows;
        c.dropped_kernel += i.dropped_kernel.unwrap_or(0);
        c.dropped_user += i.dropped_user.unwrap_or(0);
        c.rows_lost += i.rows_lost.unwrap_or(0);
        c.cut_by_cap += i.cut_by_cap.unwrap_or(0);
        c.pair_evicted += i.pair_evicted.unwrap_or(0);
        c.recovery_cut_bytes += i.recovery_cut_bytes.unwrap_or(0);
        if i.source.as_deref() == Some("import") {
            c.imported += 1;
        }
        let at = i.ts_min.unwrap_or(window.start);
        let lost =
            i.dropped_kernel.unwrap_or(0) + i.dropped_user.unwrap_or(0) + i.rows_lost.unwrap_or(0);
        if lost > 0 {
            c.marks.push(Mark {
                at,
                kind: MarkKind::Loss,
            });
        }
        if let Some(runs) = i.recovered_from.as_deref() {
            recovered.extend(runs.split(',').map(str::trim).filter(|r| !r.is_empty()));
            c.marks.push(Mark {
                at,
                kind: MarkKind::Recovered,
            });
        }
        all.extend(pieces(s));
    }
    for &at in bad {
        c.marks.push(Mark {
            at: at + NS_PER_HOUR / 2,
            kind: MarkKind::Unreadable,
        });
    }
    recovered.sort_unstable();
    recovered.dedup();
    c.recovered_runs = recovered.len();

    // Live pieces by run; everything else covers its own span.
    let mut runs: BTreeMap<String, (Option<i64>, Vec<Piece>)> = BTreeMap::new();
    let mut spans: Vec<Span> = Vec::new();
    for p in all {
        match (&p.run, p.live) {
            (Some((run, start)), true) => {
                let (run, start) = (run.clone(), *start);
                runs.entry(run).or_insert((start, Vec::new())).1.push(p);
            }
            _ => spans.push(Span {
                start: p.start,
                end: p.end.saturating_add(1),
            }),
        }
    }
    c.runs = runs.len();
    let mut missing: Vec<Span> = Vec::new();
    for (_, (run_start, mut ps)) in runs {
        ps.sort_by_key(|p| (p.seq, p.start));
        let first = ps.iter().map(|p| p.start).min().unwrap_or(0);
        let last = ps.iter().map(|p| p.end).max().unwrap_or(first);
        // A run id's time later than its first row (a clock step) is not trusted; a run id
        // without a time (not the recorder's format) starts at its first row.
        let start = run_start.filter(|s| *s <= first).unwrap_or(first);
        spans.push(Span {
            start,
            end: last.saturating_add(1),
        });
        for w in ps.windows(2) {
            if let (Some(a), Some(b)) = (w[0].seq, w[1].seq)
                && b > a + 1
                && w[1].start > w[0].end
            {
                missing.push(Span {
                    start: w[0].end.saturating_add(1),
                    end: w[1].start,
                });
            }
        }
    }
    let covered = union(spans, window);
    let missing = union(missing, window);
    // Covered minus missing.
    let mut recorded = Vec::new();
    for s in &covered {
        let inside: Vec<Span> = missing
            .iter()
            .filter(|m| m.start < s.end && m.end > s.start)
            .copied()
            .collect();
        recorded.extend(complement(&inside, *s));
    }
    c.recorded = union(recorded, window);
    c.gaps = complement(&c.recorded, window)
        .into_iter()
        .map(|span| Gap {
            span,
            kind: if missing
                .iter()
                .any(|m| m.start < span.end && m.end > span.start)
            {
                GapKind::MissingSegments
            } else {
                GapKind::NoRecorder
            },
        })
        .collect();
    c.gaps
        .sort_by_key(|g| (std::cmp::Reverse(g.span.len()), g.span.start));
    c.marks.sort_by_key(|m| m.at);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::segments::SegmentInfo;

    const T0: i64 = 1_714_564_800_000_000_000; // 2024-05-01T12:00:00Z
    const MIN: i64 = 60_000_000_000;

    fn name(first: i64, run_start: i64, seq: u64) -> String {
        let c = partition::Civil::from_ns(first);
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}.{:09}Z-web-1-{run_start:016x}p42-{seq:06}.parquet",
            c.year, c.month, c.day, c.hour, c.minute, c.second, c.nanos
        )
    }

    fn seg(first: i64, last: i64, run_start: i64, seq: u64, source: &str) -> SegmentRow {
        SegmentRow {
            path: format!(
                "/d/host=web-1/date=2024-05-01/hour=12/{}",
                name(first, run_start, seq)
            )
            .into(),
            host: "web-1".into(),
            bytes: 1,
            info: SegmentInfo {
                ts_min: Some(first),
                ts_max: Some(last),
                rows: 10,
                source: Some(source.into()),
                ..SegmentInfo::default()
            },
        }
    }

    #[test]
    fn names_parse_from_both_ends() {
        let n = name(T0 + 5, T0 - MIN, 3).replace("web-1", "a-b%2Dc");
        let p = parse_name(&n).expect("parses");
        assert_eq!(
            (p.first_ts, p.run_start, p.seq),
            (T0 + 5, Some(T0 - MIN), 3)
        );
        assert_eq!(p.run, format!("{:016x}p42", T0 - MIN));
        assert_eq!(
            parse_name("20050330T084750.501268000Z-host-a-18ee2d4adca93f72p16956-000003.parquet")
                .map(|p| p.seq),
            Some(3)
        );
        for bad in [
            "x.parquet",
            "lab.parquet",
            "a-b-c-d.parquet",
            "2024-x-1p1-000001.parquet",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_live_run_covers_its_silences_and_a_restart_leaves_a_gap() {
        let window = Span {
            start: T0,
            end: T0 + 60 * MIN,
        };
        let run1 = T0 - 10 * MIN;
        let run2 = T0 + 40 * MIN;
        let rows = [
            seg(T0 + MIN, T0 + 4 * MIN, run1, 0, "bpf"),
            // 16 silent minutes, same run, next number: still recorded.
            seg(T0 + 20 * MIN, T0 + 25 * MIN, run1, 1, "bpf"),
            // Restarted at minute 40, first query at 45.
            seg(T0 + 45 * MIN, T0 + 50 * MIN, run2, 0, "bpf"),
        ];
        let c = coverage(&rows, &[], &[], window);
        assert_eq!(c.len(), 1);
        let c = &c[0];
        assert_eq!(c.runs, 2);
        assert_eq!(
            c.recorded,
            vec![
                Span {
                    start: T0,
                    end: T0 + 25 * MIN + 1
                },
                Span {
                    start: run2,
                    end: T0 + 50 * MIN + 1
                }
            ]
        );
        // The longest gap first: between the runs, then after the last transaction.
        assert_eq!(
            c.gaps[0].span,
            Span {
                start: T0 + 25 * MIN + 1,
                end: run2
            }
        );
        assert_eq!(
            c.gaps[1].span,
            Span {
                start: T0 + 50 * MIN + 1,
                end: T0 + 60 * MIN
            }
        );
        assert!(c.gaps.iter().all(|g| g.kind == GapKind::NoRecorder));
    }

    #[test]
    fn a_missing_segment_number_is_a_gap_and_imports_cover_their_rows_only() {
        let window = Span {
            start: T0,
            end: T0 + 60 * MIN,
        };
        let run = T0;
        let mut rows = vec![
            seg(T0 + MIN, T0 + 5 * MIN, run, 0, "bpf"),
            seg(T0 + 30 * MIN, T0 + 35 * MIN, run, 2, "bpf"),
        ];
        let c = &coverage(&rows, &[], &[], window)[0];
        assert_eq!(c.gaps[0].kind, GapKind::MissingSegments);
        assert_eq!(
            c.gaps[0].span,
            Span {
                start: T0 + 5 * MIN + 1,
                end: T0 + 30 * MIN
            }
        );
        // An import: only its rows' span.
        rows = vec![seg(T0 + MIN, T0 + 2 * MIN, T0 + 999 * MIN, 0, "import")];
        let c = &coverage(&rows, &[], &["other".into()], window);
        assert_eq!(c.len(), 2, "a host asked for without segments is listed");
        assert!(c[0].recorded.is_empty() && c[0].host == "other");
        assert_eq!(
            c[1].recorded,
            vec![Span {
                start: T0 + MIN,
                end: T0 + 2 * MIN + 1
            }]
        );
        assert_eq!(c[1].imported, 1);
    }

    #[test]
    fn losses_recoveries_and_unreadable_segments_are_marked() {
        let window = Span {
            start: T0,
            end: T0 + 60 * MIN,
        };
        let mut a = seg(T0 + MIN, T0 + 2 * MIN, T0, 0, "bpf");
        a.info.dropped_kernel = Some(7);
        a.info.rows_lost = Some(2);
        let mut b = seg(T0 + 3 * MIN, T0 + 4 * MIN, T0 + 3 * MIN, 0, "bpf");
        b.info.recovered_from = Some("deadbeefdeadbeefp1".into());
        b.info.recovery_cut_bytes = Some(12);
        let c = &coverage(&[a, b], &[("web-1".into(), T0)], &[], window)[0];
        assert_eq!((c.dropped_kernel, c.rows_lost), (7, 2));
        assert_eq!((c.recovered_runs, c.recovery_cut_bytes), (1, 12));
        assert_eq!(c.unreadable, 1);
        let kinds: Vec<MarkKind> = c.marks.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [MarkKind::Loss, MarkKind::Recovered, MarkKind::Unreadable]
        );
        assert!(c.lost_anything());
    }

    #[test]
    fn compacted_segments_stand_for_their_inputs() {
        let window = Span {
            start: T0,
            end: T0 + 60 * MIN,
        };
        let run = T0 - MIN;
        let inputs = [name(T0 + MIN, run, 4), name(T0 + 20 * MIN, run, 5)];
        let mut s = seg(T0 + MIN, T0 + 30 * MIN, run, 0, "bpf");
        s.path = "/d/host=web-1/date=2024-05-01/hour=12/compacted.parquet".into();
        s.info.compacted_from = compaction::encode_inputs(&inputs);
        let c = &coverage(&[s], &[], &[], window)[0];
        assert_eq!(c.runs, 1);
        assert_eq!(
            c.recorded,
            vec![Span {
                start: T0,
                end: T0 + 30 * MIN + 1
            }]
        );
    }
}
