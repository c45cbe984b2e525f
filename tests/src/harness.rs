//! The end-to-end harness: the built binaries, a running recorder, a dnsmasq server, clients,
//! `dnsql` runs and DuckDB as an independent reader.
//!
//! Every process a fixture starts, it stops by pid (also on panic, in `Drop`). Tests that load
//! BPF programs hold [`bpf_lock`] so that only one recorder runs at a time, and fail (never
//! skip) when they cannot run as root.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::sync::LazyLock;

/// The `dnsledger` binary of this build (see [`built_binary`]).
pub static DNSLEDGER: LazyLock<PathBuf> = LazyLock::new(|| built_binary("dnsledger"));

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
        Self::start_with_env(data_dir, extra, &[])
    }

    /// [`Recorder::start`] with extra environment variables (e.g. a lake's credentials).
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, String)]) -> Recorder {
        let mut child = Command::new(&*DNSLEDGER)
            .arg("record")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
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

    /// Waits up to `timeout` for a log line that `pred` accepts, and returns it (None on
    /// timeout or exit). Every line read is kept for [`Recorder::stop`].
    pub fn wait_log(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        if let Some(l) = self.stderr.iter().find(|l| pred(l)) {
            return Some(l.clone());
        }
        while Instant::now() < deadline {
            match self.log.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    let hit = pred(&line);
                    self.stderr.push(line.clone());
                    if hit {
                        return Some(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
        None
    }

    /// The log lines read so far.
    pub fn log_so_far(&mut self) -> String {
        self.drain();
        self.stderr.join("\n")
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

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

/// Full path of the Debian python (not a pyenv shim, whose wrappers exec many processes).
pub fn python() -> PathBuf {
    for p in ["/usr/bin/python3", "/usr/local/bin/python3"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("no python3 at /usr/bin/python3 (apt-get install python3)");
}

/// The `dnsql` binary of this build (see [`built_binary`]); `DNSQL` overrides. Found (and
/// checked against its sources) once per test binary, like [`DNSLEDGER`].
static DNSQL: LazyLock<PathBuf> = LazyLock::new(|| match std::env::var_os("DNSQL") {
    Some(p) => PathBuf::from(p),
    None => built_binary("dnsql"),
});

/// The `dnsql` binary of this build (see [`DNSQL`]).
pub fn dnsql_bin() -> PathBuf {
    DNSQL.clone()
}

/// A binary of the workspace in the target directory of this test binary
/// (`target/<profile>/deps/e2e-*` → `target/<profile>/<name>`). `cargo test --workspace` (the
/// suite's command) builds `dnsledger` and `dnsql` before any test runs, because their own
/// crates have integration tests. Run alone (`cargo test -p dnsledger-tests`), cargo does not
/// rebuild them: a binary older than its sources fails here rather than testing stale code.
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary is in target/<profile>/deps");
    let bin = dir.join(name);
    let built = std::fs::metadata(&bin).and_then(|m| m.modified());
    let Ok(built) = built else {
        panic!(
            "{} is missing: build it with `cargo build --workspace` \
             (`cargo test --workspace`, as scripts/test.sh runs it, does)",
            bin.display()
        );
    };
    let sources: &[&str] = match name {
        "dnsledger" => &[
            "crates/recorder/src",
            "crates/schema/src",
            "crates/render/src",
            "bpf",
        ],
        _ => &["crates/query/src", "crates/schema/src", "crates/render/src"],
    };
    for src in sources {
        // Only what the build compiles: a README beside the sources changes no binary.
        let compiled = |f: &PathBuf| {
            f.extension()
                .is_some_and(|e| e == "rs" || e == "c" || e == "h")
        };
        for f in crate::fixture::files_under(&repo_root().join(src))
            .into_iter()
            .filter(compiled)
        {
            let changed = std::fs::metadata(&f).and_then(|m| m.modified());
            assert!(
                changed.is_ok_and(|c| c <= built),
                "{} is older than {}: rebuild it with `cargo build --workspace`",
                bin.display(),
                f.display()
            );
        }
    }
    bin
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is below the repository root")
        .to_path_buf()
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

/// Runs a DuckDB Python `script` with `root` as its one argument and returns its stdout lines;
/// fails the test naming `root` if DuckDB cannot read it.
pub fn duckdb_lines(script: &str, root: &Path) -> Vec<String> {
    let out = Command::new(duckdb_python())
        .args(["-c", script])
        .arg(root)
        .output()
        .expect("run duckdb");
    assert!(
        out.status.success(),
        "DuckDB could not read {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The Python with DuckDB that `scripts/setup-debian.sh --test` puts in `<repo>/.venv`.
pub fn duckdb_python() -> PathBuf {
    let venv = repo_root().join(".venv/bin/python");
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
/// decoded) and returns (rows, rows with a qname, total bytes of the raw queries: `query_raw`,
/// or since schema version 3 `query_raw_x`, of the same length).
pub fn duckdb_totals(data_dir: &Path) -> (u64, u64, u64) {
    let glob = data_dir.join("segments/**/*.parquet");
    let script = "import duckdb, sys\n\
        rel = duckdb.sql(\"SELECT * FROM read_parquet(?, union_by_name = true)\", params=[sys.argv[1]])\n\
        raw = 'coalesce(query_raw, query_raw_x)' if 'query_raw_x' in rel.columns else 'query_raw'\n\
        print(*duckdb.sql(f\"SELECT count(*), count(qname), coalesce(sum(octet_length({raw})), 0), \
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
