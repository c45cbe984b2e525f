//! A real S3-compatible server for the object-storage tests: `moto_server` (PyPI `moto[server]`,
//! installed in `<repo>/.venv` by `scripts/setup-debian.sh --test`) on 127.0.0.1.
//!
//! One server per test binary is plenty (start-up costs ~1 s): [`Moto::shared`] starts it once;
//! each test makes its own bucket with [`Moto::bucket`]. A test that kills the server
//! (fault tests) starts its own with [`Moto::start`] and restarts it with [`Moto::restart`].
//! moto keeps objects in memory: a restarted server is empty (buckets included), so a fault
//! test re-creates its bucket after [`Moto::restart`].

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::Duration;

use crate::harness::{repo_root, signal, wait_child, wait_for};

/// A running `moto_server`, stopped by pid on drop (and by the kernel if the thread that
/// started it ends first: `PR_SET_PDEATHSIG`).
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
}

/// The moto server shared by the tests of one binary. Statics are never dropped, so it is
/// started from a thread that lives as long as the process, with `PR_SET_PDEATHSIG`: the
/// kernel kills it (by its own pid) when the test process ends, whatever way it ends.
static SHARED: LazyLock<Moto> = LazyLock::new(|| {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = Moto::start();
        if tx.send(started).is_ok() {
            loop {
                std::thread::park();
            }
        }
    });
    rx.recv().expect("the moto keeper thread started a server")
});

fn moto_server_bin() -> PathBuf {
    let bin = repo_root().join(".venv/bin/moto_server");
    assert!(
        bin.exists(),
        "no moto_server at {}: run `scripts/setup-debian.sh --test`",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

impl Moto {
    /// The server shared by every test in this binary.
    pub fn shared() -> &'static Moto {
        &SHARED
    }

    /// Starts a new server on a free loopback port.
    pub fn start() -> Moto {
        Self::start_on(free_port())
    }

    /// Starts a server on `port` (to restart one at the same endpoint).
    pub fn start_on(port: u16) -> Moto {
        let mut cmd = Command::new(moto_server_bin());
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let m = Moto {
            child: Some(child),
            port,
        };
        wait_for("moto_server to listen", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        m
    }

    /// Kills the server (SIGKILL, by pid) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGKILL);
            wait_child(&mut c, Duration::from_secs(10));
        }
    }

    /// Kills the server and starts a fresh one on the same port (moto keeps state in memory:
    /// the new one is empty).
    pub fn restart(&mut self) {
        self.kill();
        *self = Self::start_on(self.port);
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a `dnsledger`/`dnsql` process needs to reach this server through
    /// object_store's standard S3 variables.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Applies [`Moto::env`] to `cmd`.
    pub fn apply_env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd
    }

    /// Creates bucket `name` (an S3 `PUT /<bucket>`; moto does not check signatures).
    pub fn bucket(&self, name: &str) {
        let status = self.request("PUT", &format!("/{name}"));
        assert!(
            status == 200 || status == 409,
            "creating bucket {name} on moto: HTTP {status}"
        );
    }

    /// Sends a body-less request and returns the HTTP status.
    pub fn request(&self, method: &str, path: &str) -> u16 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        s.write_all(req.as_bytes()).expect("send request to moto");
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok();
        resp.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status from moto: {resp:?}"))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}
