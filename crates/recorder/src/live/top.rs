//! `dnsledger top`: a refreshing table of DNS activity per process (or pid, executable,
//! container), fed by the same live transactions as `snoop`.
//!
//! [`Table`] is the pure aggregation (unit-tested); [`run`] draws it with ratatui on the
//! crossterm backend, reads keys, and restores the terminal however it ends: q, Esc, Ctrl-C,
//! SIGTERM/SIGINT (the caller's `stop` flag), an error, or a panic.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Paragraph, Row as TableRow, Table as TableWidget};

use crate::live::{LiveLine, LiveTx};

/// What a row stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Group {
    /// Process name.
    Comm,
    /// Process id (with its name).
    Pid,
    /// Executable path.
    Exe,
    /// Container id (`-`: not in a container).
    Container,
    /// Client address of a local DNS server (`record --serve-side`: the server side's rows,
    /// which the other groupings leave out).
    Client,
}

impl Group {
    const ALL: [Group; 5] = [
        Group::Comm,
        Group::Pid,
        Group::Exe,
        Group::Container,
        Group::Client,
    ];

    fn next(self) -> Group {
        let i = Group::ALL.iter().position(|g| *g == self).unwrap_or(0);
        Group::ALL[(i + 1) % Group::ALL.len()]
    }

    fn title(self) -> &'static str {
        match self {
            Group::Comm => "COMM",
            Group::Pid => "PID/COMM",
            Group::Exe => "EXE",
            Group::Container => "CONTAINER",
            Group::Client => "CLIENT (SERVER)",
        }
    }

    fn key(self, t: &LiveTx) -> String {
        let dash = || "-".to_string();
        match self {
            Group::Comm => t.comm.clone().unwrap_or_else(dash),
            Group::Pid => format!(
                "{} {}",
                t.pid.map_or_else(dash, |p| p.to_string()),
                t.comm.as_deref().unwrap_or("-")
            ),
            Group::Exe => t.exe.clone().unwrap_or_else(dash),
            Group::Container => t.container_id.clone().unwrap_or_else(dash),
            Group::Client => format!("{} ({})", t.client_ip, t.comm.as_deref().unwrap_or("-")),
        }
    }
}

/// Sort order of the rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// Queries, most first (key `c`).
    Queries,
    /// Row name, A to Z (key `n`).
    Name,
    /// A queries (key `a`).
    A,
    /// NXDOMAIN responses (key `x`).
    Nxdomain,
    /// SERVFAIL responses (key `s`).
    Servfail,
    /// p99 latency, slowest first (key `l`).
    Latency,
}

impl SortKey {
    fn title(self) -> &'static str {
        match self {
            SortKey::Queries => "queries",
            SortKey::Name => "name",
            SortKey::A => "A",
            SortKey::Nxdomain => "NXDOMAIN",
            SortKey::Servfail => "SERVFAIL",
            SortKey::Latency => "p99 latency",
        }
    }
}

/// Latencies kept per row for the percentiles (the most recent ones).
const LATENCY_WINDOW: usize = 2048;

/// One row's counts.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub queries: u64,
    pub a: u64,
    pub aaaa: u64,
    pub ptr: u64,
    pub noerror: u64,
    pub nxdomain: u64,
    pub servfail: u64,
    pub unanswered: u64,
    latencies: VecDeque<i64>,
}

impl Counts {
    fn add(&mut self, t: &LiveTx) {
        if t.status != "unsolicited" {
            self.queries += 1;
            match t.qtype.as_deref() {
                Some("A") => self.a += 1,
                Some("AAAA") => self.aaaa += 1,
                Some("PTR") => self.ptr += 1,
                _ => {}
            }
        }
        if t.status == "unanswered" {
            self.unanswered += 1;
        } else {
            match t.rcode.as_deref() {
                Some("NOERROR") => self.noerror += 1,
                Some("NXDOMAIN") => self.nxdomain += 1,
                Some("SERVFAIL") => self.servfail += 1,
                _ => {}
            }
        }
        if let Some(ns) = t.latency_ns.filter(|_| t.status == "answered") {
            if self.latencies.len() == LATENCY_WINDOW {
                self.latencies.pop_front();
            }
            self.latencies.push_back(ns);
        }
    }

    /// The p-th percentile (0..=100) of the recent latencies, nearest rank.
    pub fn percentile(&self, p: f64) -> Option<i64> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v: Vec<i64> = self.latencies.iter().copied().collect();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1])
    }
}

/// Counts per row, for every grouping at once (so `g` regroups without losing history).
#[derive(Debug)]
pub struct Table {
    groups: HashMap<Group, HashMap<String, Counts>>,
    pub total: Counts,
    pub transactions: u64,
    /// Server-side rows (`--serve-side`), counted under [`Group::Client`] only.
    pub served: u64,
    pub dropped: u64,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            groups: Group::ALL.iter().map(|g| (*g, HashMap::new())).collect(),
            total: Counts::default(),
            transactions: 0,
            served: 0,
            dropped: 0,
        }
    }
}

impl Table {
    /// Counts one transaction. A server-side row (`--serve-side`) counts only under
    /// [`Group::Client`], and every other row everywhere else: a loopback query to a local
    /// server is one transaction per view, not two.
    pub fn add(&mut self, t: &LiveTx) {
        let served = t.is_server_side();
        if served {
            self.served += 1;
        } else {
            self.transactions += 1;
            self.total.add(t);
        }
        for (g, rows) in &mut self.groups {
            if served == (*g == Group::Client) {
                rows.entry(g.key(t)).or_default().add(t);
            }
        }
    }

    /// The rows of `group`, sorted.
    pub fn sorted(&self, group: Group, sort: SortKey, reverse: bool) -> Vec<(&str, &Counts)> {
        let mut rows: Vec<(&str, &Counts)> = self
            .groups
            .get(&group)
            .map(|m| m.iter().map(|(k, c)| (k.as_str(), c)).collect())
            .unwrap_or_default();
        rows.sort_by(|(ka, a), (kb, b)| {
            let by = match sort {
                SortKey::Name => ka.cmp(kb),
                SortKey::Queries => b.queries.cmp(&a.queries),
                SortKey::A => b.a.cmp(&a.a),
                SortKey::Nxdomain => b.nxdomain.cmp(&a.nxdomain),
                SortKey::Servfail => b.servfail.cmp(&a.servfail),
                SortKey::Latency => b.percentile(99.0).cmp(&a.percentile(99.0)),
            };
            by.then_with(|| ka.cmp(kb))
        });
        if reverse {
            rows.reverse();
        }
        rows
    }
}

/// How `top` starts.
#[derive(Clone, Debug)]
pub struct Options {
    pub group: Group,
    pub sort: SortKey,
    pub interval: Duration,
    /// Where the transactions come from, for the title line.
    pub source: String,
}

fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
}

/// Restores the terminal when dropped (any return, `?` included).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore_terminal();
    }
}

static PANIC_HOOK: Once = Once::new();

fn ms(ns: Option<i64>) -> String {
    ns.map_or_else(|| "-".into(), crate::live::snoop::millis)
}

const COLUMNS: [&str; 10] = [
    "QUERIES", "A", "AAAA", "PTR", "NOERROR", "NXDOMAIN", "SERVFAIL", "UNANS", "P50 ms", "P99 ms",
];

fn cells(c: &Counts) -> [String; 10] {
    [
        c.queries.to_string(),
        c.a.to_string(),
        c.aaaa.to_string(),
        c.ptr.to_string(),
        c.noerror.to_string(),
        c.nxdomain.to_string(),
        c.servfail.to_string(),
        c.unanswered.to_string(),
        ms(c.percentile(50.0)),
        ms(c.percentile(99.0)),
    ]
}

/// Runs the view until a quit key, `stop`, or the end of `lines` (an error when following a
/// recorder that stopped).
pub fn run(
    lines: &Receiver<io::Result<LiveLine>>,
    stop: &AtomicBool,
    opts: Options,
) -> io::Result<()> {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
    terminal::enable_raw_mode()?;
    let _restore = Restore;
    execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
    let mut term = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    let mut table = Table::default();
    let (mut group, mut sort, mut reverse) = (opts.group, opts.sort, false);
    let mut dirty = true;
    let mut last_draw = Instant::now() - opts.interval;
    let mut ended: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        // Take what arrived, bounded per round so keys stay responsive.
        for _ in 0..100_000 {
            match lines.try_recv() {
                Ok(Ok(LiveLine::Tx(t))) => table.add(&t),
                Ok(Ok(LiveLine::Dropped { dropped })) => table.dropped += dropped,
                Ok(Ok(LiveLine::Hello { .. })) => {}
                Ok(Err(e)) => return Err(e),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if ended.is_none() {
                        ended = Some("source ended".into());
                        dirty = true;
                    }
                    break;
                }
            }
        }
        if dirty || last_draw.elapsed() >= opts.interval {
            last_draw = Instant::now();
            dirty = false;
            let rows = table.sorted(group, sort, reverse);
            let title = format!(
                "dnsledger top - {} - group: {} - sort: {}{} - {} transactions{}{}{}",
                opts.source,
                group.title().to_ascii_lowercase(),
                sort.title(),
                if reverse { " (reversed)" } else { "" },
                table.transactions,
                if table.served > 0 {
                    format!(", {} served", table.served)
                } else {
                    String::new()
                },
                if table.dropped > 0 {
                    format!(", {} not shown (too slow)", table.dropped)
                } else {
                    String::new()
                },
                ended
                    .as_deref()
                    .map(|e| format!(" - {e}"))
                    .unwrap_or_default(),
            );
            let help = "keys: q quit  c queries  n name  a A  x NXDOMAIN  s SERVFAIL  l p99  r reverse  g group";
            term.draw(|f| {
                let [top, body] =
                    Layout::vertical([Constraint::Length(2), Constraint::Min(0)]).areas(f.area());
                f.render_widget(Paragraph::new(format!("{title}\n{help}")), top);
                let mut header = vec![group.title().to_string()];
                header.extend(COLUMNS.iter().map(|c| c.to_string()));
                let mut body_rows: Vec<TableRow> = Vec::with_capacity(rows.len() + 1);
                let mut all = vec!["(all)".to_string()];
                all.extend(cells(&table.total));
                body_rows
                    .push(TableRow::new(all).style(Style::default().add_modifier(Modifier::DIM)));
                for (key, c) in &rows {
                    let mut r = vec![key.to_string()];
                    r.extend(cells(c));
                    body_rows.push(TableRow::new(r));
                }
                let mut widths = vec![Constraint::Min(16)];
                widths.extend(
                    COLUMNS
                        .iter()
                        .map(|c| Constraint::Length(c.len().max(7) as u16)),
                );
                let widget = TableWidget::new(body_rows, widths)
                    .header(
                        TableRow::new(header).style(Style::default().add_modifier(Modifier::BOLD)),
                    )
                    .column_spacing(1);
                f.render_widget(widget, body);
            })?;
        }
        if event::poll(Duration::from_millis(100))?
            && let Event::Key(k) = event::read()?
            && k.kind != KeyEventKind::Release
        {
            dirty = true;
            match k.code {
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => break,
                KeyCode::Char('q') | KeyCode::Esc => break,
                KeyCode::Char('c') => sort = SortKey::Queries,
                KeyCode::Char('n') => sort = SortKey::Name,
                KeyCode::Char('a') => sort = SortKey::A,
                KeyCode::Char('x') => sort = SortKey::Nxdomain,
                KeyCode::Char('s') => sort = SortKey::Servfail,
                KeyCode::Char('l') => sort = SortKey::Latency,
                KeyCode::Char('r') => reverse = !reverse,
                KeyCode::Char('g') => group = group.next(),
                _ => dirty = false,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(pid: u32, comm: &str, qtype: &str, rcode: Option<&str>, latency_ms: i64) -> LiveTx {
        LiveTx {
            status: if rcode.is_some() {
                "answered"
            } else {
                "unanswered"
            }
            .into(),
            pid: Some(pid),
            comm: Some(comm.into()),
            qtype: Some(qtype.into()),
            rcode: rcode.map(str::to_string),
            latency_ns: rcode.map(|_| latency_ms * 1_000_000),
            ..Default::default()
        }
    }

    #[test]
    fn counts_sorting_and_groups() {
        let mut t = Table::default();
        for i in 0..5 {
            t.add(&tx(10, "kdig", "A", Some("NOERROR"), 1 + i));
        }
        t.add(&tx(20, "dig", "AAAA", Some("NXDOMAIN"), 50));
        t.add(&tx(21, "dig", "PTR", Some("NXDOMAIN"), 60));
        t.add(&tx(22, "dig", "A", None, 0));
        let names =
            |rows: Vec<(&str, &Counts)>| rows.iter().map(|r| r.0.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(t.sorted(Group::Comm, SortKey::Queries, false)),
            ["kdig", "dig"]
        );
        assert_eq!(
            names(t.sorted(Group::Comm, SortKey::Nxdomain, false)),
            ["dig", "kdig"]
        );
        assert_eq!(
            names(t.sorted(Group::Comm, SortKey::Name, false)),
            ["dig", "kdig"]
        );
        assert_eq!(
            names(t.sorted(Group::Comm, SortKey::Name, true)),
            ["kdig", "dig"]
        );
        assert_eq!(
            names(t.sorted(Group::Comm, SortKey::Latency, false)),
            ["dig", "kdig"]
        );
        assert_eq!(t.sorted(Group::Pid, SortKey::Name, false).len(), 4);
        let rows = t.sorted(Group::Comm, SortKey::Queries, false);
        let dig = rows[1].1;
        assert_eq!((dig.queries, dig.a, dig.aaaa, dig.ptr), (3, 1, 1, 1));
        assert_eq!((dig.nxdomain, dig.unanswered, dig.noerror), (2, 1, 0));
        let kdig = rows[0].1;
        assert_eq!(kdig.percentile(50.0), Some(3_000_000));
        assert_eq!(kdig.percentile(99.0), Some(5_000_000));
        assert_eq!(t.total.queries, 8);
        assert_eq!(Group::Container.next(), Group::Client);
        assert_eq!(Group::Client.next(), Group::Comm);
    }
}

#[cfg(test)]
mod serve_side_tests {
    use super::*;

    fn row(side: Option<&str>, comm: &str, client_ip: &str) -> LiveTx {
        LiveTx {
            status: "answered".into(),
            comm: Some(comm.into()),
            client_ip: client_ip.into(),
            qtype: Some("A".into()),
            rcode: Some("NOERROR".into()),
            side: side.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn server_side_rows_count_only_by_client() {
        let mut t = Table::default();
        // A loopback lookup seen from both ends, an older recorder's line (no side), and a
        // remote client of the local server.
        t.add(&row(Some("client"), "dig", "127.0.0.1"));
        t.add(&row(Some("server"), "dnsmasq", "127.0.0.1"));
        t.add(&row(None, "curl", "127.0.0.1"));
        t.add(&row(Some("server"), "dnsmasq", "10.9.0.2"));
        assert_eq!((t.transactions, t.served, t.total.queries), (2, 2, 2));
        let keys = |g| {
            let mut k: Vec<String> = t
                .sorted(g, SortKey::Name, false)
                .iter()
                .map(|r| r.0.to_string())
                .collect();
            k.sort();
            k
        };
        assert_eq!(keys(Group::Comm), ["curl", "dig"]);
        assert_eq!(
            keys(Group::Client),
            ["10.9.0.2 (dnsmasq)", "127.0.0.1 (dnsmasq)"]
        );
    }
}
