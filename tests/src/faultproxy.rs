//! A fault-injecting HTTP proxy for the object-storage tests, in front of a real server (moto):
//! it answers some `PUT`s with `500` (with or without passing them on first, i.e. a lost
//! response) and delays the rest. One request per connection (`Connection: close` both ways),
//! std only, on 127.0.0.1; stopped (its accept thread joined) on drop.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the proxy does to requests.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// The first N `PUT`s get `500` without reaching the server.
    pub reject_puts: usize,
    /// The next N `PUT`s reach the server (the object is stored) but the client gets `500`:
    /// a lost response.
    pub lose_put_responses: usize,
    /// Every request passed on waits this long first.
    pub delay: Duration,
    /// Every `PUT` gets `403 AccessDenied` (credentials that may not write).
    pub deny_puts: bool,
}

/// Counters of what the proxy saw and did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub requests: AtomicUsize,
    pub puts: AtomicUsize,
    pub rejected: AtomicUsize,
    pub lost: AtomicUsize,
}

/// A running proxy.
pub struct FaultProxy {
    pub port: u16,
    pub stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `127.0.0.1:upstream`.
    pub fn start(upstream: u16, faults: Faults) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ProxyStats::default());
        let thread = {
            let stop = Arc::clone(&stop);
            let stats = Arc::clone(&stats);
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let stats = Arc::clone(&stats);
                    let faults = faults.clone();
                    std::thread::spawn(move || {
                        let _ = handle(conn, upstream, &faults, &stats);
                    });
                }
            })
        };
        FaultProxy {
            port,
            stats,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads up to the end of the head (`\r\n\r\n`); returns (head, bytes read past it).
fn read_head(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).into_owned();
            return Ok((head, buf[i + 4..].to_vec()));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before the end of the head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The head with any `Connection` header replaced by `Connection: close`.
fn with_close(head: &str) -> String {
    let mut out = String::new();
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

fn content_length(head: &str) -> usize {
    head.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn error_500(client: &mut TcpStream) -> std::io::Result<()> {
    error_reply(client, "500 Internal Server Error", "InternalError")
}

fn error_reply(client: &mut TcpStream, status: &str, code: &str) -> std::io::Result<()> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
         <Message>injected by the test proxy</Message></Error>"
    );
    write!(
        client,
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    client.flush()
}

fn handle(
    mut client: TcpStream,
    upstream: u16,
    faults: &Faults,
    stats: &ProxyStats,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let (head, mut body) = read_head(&mut client)?;
    let want = content_length(&head);
    let mut chunk = [0u8; 65536];
    while body.len() < want {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let is_put = head.starts_with("PUT ");
    let mut lose = false;
    if is_put {
        let n = stats.puts.fetch_add(1, Ordering::Relaxed);
        if faults.deny_puts {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            return error_reply(&mut client, "403 Forbidden", "AccessDenied");
        }
        if n < faults.reject_puts {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            return error_500(&mut client);
        }
        lose = n < faults.reject_puts + faults.lose_put_responses;
    }
    std::thread::sleep(faults.delay);
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    up.write_all(with_close(&head).as_bytes())?;
    up.write_all(&body)?;
    up.flush()?;
    let (rhead, rest) = read_head(&mut up)?;
    let mut response = with_close(&rhead).into_bytes();
    response.extend_from_slice(&rest);
    loop {
        let n = up.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
    }
    if lose {
        stats.lost.fetch_add(1, Ordering::Relaxed);
        return error_500(&mut client);
    }
    client.write_all(&response)?;
    client.flush()?;
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}
