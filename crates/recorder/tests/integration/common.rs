//! Fixtures for the end-to-end tests: the recorder binary, a dnsmasq server, segment reading.
//!
//! Every process a fixture starts, it stops by pid (also on panic, in `Drop`). Tests that load
//! BPF programs hold [`bpf_lock`] so that only one recorder runs at a time, and fail (never
//! skip) when they cannot run as root.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub const DNSLEDGER: &str = env!("CARGO_BIN_EXE_dnsledger");

static BPF_LOCK: Mutex<()> = Mutex::new(());

/// Serialises BPF tests and insists on root: a BPF test that cannot run fails.
pub fn bpf_lock() -> MutexGuard<'static, ()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "BPF tests load real programs and must run as root (sudo cargo test); they are never skipped"
    );
    BPF_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The same lock as [`bpf_lock`], without the root requirement: for CPU-heavy tests that would
/// skew the load-sensitive BPF tests (e.g. the >= 5k q/s crash test) if they ran beside them.
pub fn serial_lock() -> MutexGuard<'static, ()> {
    BPF_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits for `cond` up to `timeout`, polling every 20 ms.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Waits for a child with a deadline, killing it when the deadline passes.
pub fn wait_child(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `dnsledger record`.
pub struct Recorder {
    pub child: Child,
    log: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
}

impl Recorder {
    /// Starts the recorder and waits until it logs that it is recording.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Recorder {
        let mut child = Command::new(DNSLEDGER)
            .arg("record")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dnsledger record");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut rec = Recorder {
            child,
            log: rx,
            stderr: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rec.log.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let done = line.contains("recording");
                    rec.stderr.push(line);
                    if done {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!(
                        "recorder exited before recording:\n{}",
                        rec.stderr.join("\n")
                    )
                }
            }
            if let Some(status) = rec.child.try_wait().expect("try_wait") {
                rec.drain();
                panic!("recorder exited with {status}:\n{}", rec.stderr.join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "recorder did not log `recording` within 60 s:\n{}",
                rec.stderr.join("\n")
            );
        }
        rec
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the recorder process has not exited.
    pub fn child_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn drain(&mut self) {
        while let Ok(line) = self.log.try_recv() {
            self.stderr.push(line);
        }
    }

    /// SIGTERM, then waits for a clean exit (status 0).
    pub fn stop(mut self) -> Vec<String> {
        signal(self.pid(), libc::SIGTERM);
        let status = wait_child(&mut self.child, Duration::from_secs(60));
        // The reader thread ends with the pipe.
        std::thread::sleep(Duration::from_millis(50));
        self.drain();
        assert!(
            status.success(),
            "recorder exited with {status} after SIGTERM:\n{}",
            self.stderr.join("\n")
        );
        std::mem::take(&mut self.stderr)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A dnsmasq on loopback port 53 with a few local zones and a query log.
pub struct Dnsmasq {
    child: Child,
    pub log: PathBuf,
}

impl Dnsmasq {
    pub fn start(dir: &Path) -> Dnsmasq {
        Self::start_on(dir, &["127.0.0.1", "::1"])
    }

    /// The same server on other loopback addresses (e.g. `127.0.0.10`), beside any other DNS
    /// server on 127.0.0.1:53.
    pub fn start_on(dir: &Path, addrs: &[&str]) -> Dnsmasq {
        let log = dir.join("dnsmasq.log");
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port=53",
                "--log-queries",
                "--address=/a.test/192.0.2.1",
                "--address=/a.test/2001:db8::1",
                "--address=/nx.test/",
                "--user=root",
                "--pid-file",
            ])
            .args(addrs.iter().map(|a| format!("--listen-address={a}")))
            .arg(format!("--log-facility={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq (apt-get install dnsmasq-base)");
        let d = Dnsmasq { child, log };
        wait_for("dnsmasq to start", Duration::from_secs(20), || {
            std::fs::read_to_string(&d.log).is_ok_and(|l| l.contains("started"))
        });
        d
    }

    /// (qtype, name) of every query the server logged.
    pub fn queries(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(&self.log).expect("read dnsmasq log");
        text.lines()
            .filter_map(|l| {
                let rest = &l[l.find("query[")? + 6..];
                let (qtype, rest) = rest.split_once("] ")?;
                let name = rest.split_whitespace().next()?;
                Some((qtype.to_string(), name.to_string()))
            })
            .collect()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let _ = wait_child(&mut self.child, Duration::from_secs(10));
    }
}

/// Runs a client to completion and returns (pid, stdout).
pub fn run_client(cmd: &mut Command) -> (u32, String) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().expect("client output");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (pid, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every sealed segment under `<data_dir>/segments`.
pub fn segment_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![data_dir.join("segments")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn read_segment(path: &Path) -> (Vec<RecordBatch>, HashMap<String, String>) {
    let file = std::fs::File::open(path).expect("open segment");
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet footer");
    let meta: HashMap<String, String> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let reader = builder.build().expect("reader");
    let batches = reader.collect::<Result<Vec<_>, _>>().expect("read batches");
    (batches, meta)
}

/// A row of a segment, with the columns the tests look at.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub ts: i64,
    pub status: String,
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub ppid: Option<u32>,
    pub uid: Option<u32>,
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub cmdline: Option<String>,
    pub cgroup_id: Option<u64>,
    pub cgroup_path: Option<String>,
    pub netns: Option<u32>,
    pub transport: String,
    pub ip_version: u8,
    pub client_ip: String,
    pub server_ip: String,
    pub server_port: u16,
    pub qname: Option<String>,
    pub qtype_name: Option<String>,
    pub rcode_name: Option<String>,
    pub answer_ips: Vec<String>,
    pub query_raw: Option<Vec<u8>>,
    pub response_raw: Option<Vec<u8>>,
    pub query_size: Option<u32>,
    pub response_size: Option<u32>,
    pub parse_error: Option<String>,
    pub ede_code: Option<u16>,
    /// `stack` (`record --stacks`); None when NULL.
    pub stack: Option<Vec<String>>,
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> &'a dyn arrow_array::Array {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("column {name} missing"))
        .as_ref()
}

fn string_at(a: &dyn arrow_array::Array, i: usize) -> Option<String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int32Type;
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        arrow_schema::DataType::Utf8 => Some(a.as_string::<i32>().value(i).to_string()),
        arrow_schema::DataType::Dictionary(_, _) => {
            let d = a.as_dictionary::<Int32Type>();
            let key = d.keys().value(i) as usize;
            Some(d.values().as_string::<i32>().value(key).to_string())
        }
        other => panic!("not a string column: {other}"),
    }
}

fn prim<T: arrow_array::ArrowPrimitiveType>(
    a: &dyn arrow_array::Array,
    i: usize,
) -> Option<T::Native> {
    use arrow_array::cast::AsArray;
    (!a.is_null(i)).then(|| a.as_primitive::<T>().value(i))
}

fn binary_at(a: &dyn arrow_array::Array, i: usize) -> Option<Vec<u8>> {
    use arrow_array::cast::AsArray;
    (!a.is_null(i)).then(|| a.as_binary::<i32>().value(i).to_vec())
}

pub fn rows(batches: &[RecordBatch]) -> Vec<Row> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let ips = col(b, "answer_ips");
            let answer_ips = if ips.is_null(i) {
                Vec::new()
            } else {
                let list = ips.as_list::<i32>().value(i);
                (0..list.len())
                    .filter_map(|j| string_at(list.as_ref(), j))
                    .collect()
            };
            let stack_col = col(b, "stack");
            let stack = (!stack_col.is_null(i)).then(|| {
                let list = stack_col.as_list::<i32>().value(i);
                (0..list.len())
                    .filter_map(|j| string_at(list.as_ref(), j))
                    .collect()
            });
            out.push(Row {
                ts: prim::<TimestampNanosecondType>(col(b, "ts"), i).expect("ts"),
                status: string_at(col(b, "status"), i).expect("status"),
                pid: prim::<UInt32Type>(col(b, "pid"), i),
                tid: prim::<UInt32Type>(col(b, "tid"), i),
                ppid: prim::<UInt32Type>(col(b, "ppid"), i),
                uid: prim::<UInt32Type>(col(b, "uid"), i),
                comm: string_at(col(b, "comm"), i),
                exe: string_at(col(b, "exe"), i),
                cmdline: string_at(col(b, "cmdline"), i),
                cgroup_id: prim::<UInt64Type>(col(b, "cgroup_id"), i),
                cgroup_path: string_at(col(b, "cgroup_path"), i),
                netns: prim::<UInt32Type>(col(b, "netns"), i),
                transport: string_at(col(b, "transport"), i).expect("transport"),
                ip_version: prim::<UInt8Type>(col(b, "ip_version"), i).expect("ip_version"),
                client_ip: string_at(col(b, "client_ip"), i).expect("client_ip"),
                server_ip: string_at(col(b, "server_ip"), i).expect("server_ip"),
                server_port: prim::<UInt16Type>(col(b, "server_port"), i).expect("server_port"),
                qname: string_at(col(b, "qname"), i),
                qtype_name: string_at(col(b, "qtype_name"), i),
                rcode_name: string_at(col(b, "rcode_name"), i),
                answer_ips,
                query_raw: binary_at(col(b, "query_raw"), i),
                response_raw: binary_at(col(b, "response_raw"), i),
                query_size: prim::<UInt32Type>(col(b, "query_size"), i),
                response_size: prim::<UInt32Type>(col(b, "response_size"), i),
                parse_error: string_at(col(b, "parse_error"), i),
                ede_code: prim::<UInt16Type>(col(b, "ede_code"), i),
                stack,
            });
        }
    }
    out
}

/// All rows of all sealed segments under `data_dir`.
pub fn all_rows(data_dir: &Path) -> Vec<Row> {
    segment_files(data_dir)
        .iter()
        .flat_map(|p| rows(&read_segment(p).0))
        .collect()
}

/// Full path of the Debian python (not a pyenv shim, whose wrappers exec many processes).
pub fn python() -> PathBuf {
    for p in ["/usr/bin/python3", "/usr/local/bin/python3"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("no python3 at /usr/bin/python3 (apt-get install python3)");
}

/// The `dnsql` binary of this build: it sits in the same target directory as this test binary
/// (`target/<profile>/deps/integration-*`), and `cargo test --workspace` (the suite's command)
/// builds it before any test runs. `DNSQL` overrides.
pub fn dnsql_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DNSQL") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary is in target/<profile>/deps");
    let bin = dir.join("dnsql");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p dnsledger-query` \
         (`cargo test --workspace`, as scripts/test.sh runs it, does)",
        bin.display()
    );
    bin
}

/// What one `dnsql` run printed.
#[derive(Debug)]
pub struct DnsqlRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `dnsql --data <data> ARGS…` unprivileged-style (no terminal, no colours).
pub fn dnsql(data: &Path, args: &[&str]) -> DnsqlRun {
    let out = Command::new(dnsql_bin())
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run dnsql");
    DnsqlRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a `dnsql` command with `--format json`, requires a complete answer (exit 0, nothing
/// skipped) and returns one JSON object per result row.
pub fn dnsql_json(data: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let run = dnsql(data, &all);
    assert_eq!(
        run.code, 0,
        "dnsql {args:?} failed (exit {}): {}",
        run.code, run.stderr
    );
    run.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad json line {l:?}: {e}")))
        .collect()
}

/// The Python with DuckDB that `scripts/setup-debian.sh --test` puts in `<repo>/.venv`.
pub fn duckdb_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let ok = Command::new(&venv)
        .args(["-c", "import duckdb"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "no DuckDB at {}: run `scripts/setup-debian.sh --test`",
        venv.display()
    );
    venv
}

/// Reads every sealed segment under `data_dir` with DuckDB (all columns, so every page is
/// decoded) and returns (rows, rows with a qname, total bytes of query_raw).
pub fn duckdb_totals(data_dir: &Path) -> (u64, u64, u64) {
    let glob = data_dir.join("segments/**/*.parquet");
    let script = "import duckdb, sys\n\
        rel = duckdb.sql(\"SELECT * FROM read_parquet(?, union_by_name = true)\", params=[sys.argv[1]])\n\
        print(*duckdb.sql(\"SELECT count(*), count(qname), coalesce(sum(octet_length(query_raw)), 0), \
        count(answers), count(cmdline) FROM rel\").fetchall()[0])\n";
    let out = Command::new(duckdb_python())
        .args(["-c", script])
        .arg(&glob)
        .output()
        .expect("run duckdb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "DuckDB could not read {}: {}",
        glob.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let n: Vec<u64> = stdout
        .split_whitespace()
        .map(|v| v.parse().expect("number"))
        .collect();
    (n[0], n[1], n[2])
}
