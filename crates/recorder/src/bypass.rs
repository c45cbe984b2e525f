//! Encrypted DNS past the host's resolver: the DoH endpoint list and the row of a bypass event.
//!
//! The kernel (the cgroup connect/sendmsg hooks of `bpf/dnsledger.bpf.c`) reports a connection
//! to port 853 (TCP: DoT, UDP: DoQ) or to port 443 of an address on the DoH list as one
//! [`BypassInfo`]; [`bypass_row`] makes it a row with status `bypass`, the transport saying
//! which, the endpoint as server and the process columns as for DNS rows. No DNS message is
//! seen: the DNS columns stay NULL.
//!
//! The DoH list ([`load_doh_list`]) holds addresses only: names are resolved when the list is
//! made (`scripts/update-doh-list.sh`), never at record time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dnsledger_schema::{Transaction, status, transport};

use crate::capture::KernelOwner;
use crate::dns::ip_text;
use crate::pair::ProcessAttrs;

/// Where the Debian package installs the DoH list (`record --doh-list` default).
pub const DEFAULT_DOH_LIST: &str = "/usr/share/dnsledger/doh-endpoints.txt";

/// Addresses a DoH list may hold at most (the kernel map is sized to the list).
pub const MAX_DOH_ENDPOINTS: usize = 1 << 20;

/// What a bypass event saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BypassKind {
    /// TCP to port 853: DNS over TLS.
    Dot,
    /// UDP to port 853: DNS over QUIC.
    Doq,
    /// Port 443 of an address on the DoH list.
    DohLikely,
}

impl BypassKind {
    /// The `transport` value of its row.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassKind::Dot => transport::DOT,
            BypassKind::Doq => transport::DOQ,
            BypassKind::DohLikely => transport::DOH_LIKELY,
        }
    }
}

/// One connection to an encrypted-DNS endpoint, as the kernel reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BypassInfo {
    /// UTC ns.
    pub ts_ns: i64,
    pub kind: BypassKind,
    /// The endpoint (IPv4-mapped addresses are given as IPv4).
    pub server: IpAddr,
    pub server_port: u16,
    /// The socket's local address and port if it was bound already, else unspecified and 0.
    pub client: IpAddr,
    pub client_port: u16,
    pub owner: KernelOwner,
}

/// `addr` as the kernel's 16 bytes hold it: IPv4-mapped IPv6 addresses become IPv4.
pub fn from_kernel_addr(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// `ip` as a key of the kernel's DoH map: IPv6, IPv4 IPv4-mapped.
pub fn to_kernel_addr(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The row of one bypass event.
pub fn bypass_row(
    b: &BypassInfo,
    attrs: ProcessAttrs,
    hostname: &Arc<str>,
    boot_id: Option<&Arc<str>>,
) -> Transaction {
    let o = &b.owner;
    // The local side of a socket not bound yet has the server's family.
    let client = match (b.client, b.server) {
        (IpAddr::V6(c), IpAddr::V4(_)) if c.is_unspecified() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (c, _) => c,
    };
    Transaction {
        ts: b.ts_ns,
        query_ts: Some(b.ts_ns),
        status: status::BYPASS,
        hostname: Arc::clone(hostname),
        boot_id: boot_id.cloned(),
        transport: b.kind.as_str(),
        ip_version: if b.server.is_ipv4() { 4 } else { 6 },
        client_ip: ip_text(client),
        client_port: b.client_port,
        server_ip: ip_text(b.server),
        server_port: b.server_port,
        side: Some(dnsledger_schema::side::CLIENT),
        ..attrs.row(Some(o))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DohListError {
    #[error(
        "cannot read the DoH list {path}: {source}\n\
         hint: give a readable file with --doh-list (one address per line), or --no-bypass"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}: `{text}` is not an IPv4 or IPv6 address\n\
         hint: the DoH list holds addresses, one per line (names are resolved when the list \
         is made, never at record time); `#` starts a comment"
    )]
    Syntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{path}: more than {MAX_DOH_ENDPOINTS} addresses\nhint: keep the DoH list below that")]
    TooLarge { path: PathBuf },
}

/// Parses a DoH list: one address per line, the first word of the line; anything after it and
/// lines that are empty or start with `#` are ignored. Duplicates are dropped (first kept).
pub fn parse_doh_list(path: &Path, text: &str) -> Result<Vec<IpAddr>, DohListError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let word = line
            .split(|c: char| c.is_whitespace() || c == ',' || c == '#')
            .next()
            .unwrap_or_default();
        let ip: IpAddr = word.parse().map_err(|_| DohListError::Syntax {
            path: path.into(),
            line: i + 1,
            text: word.to_string(),
        })?;
        // IPv4-mapped IPv6 addresses are the IPv4 address.
        let ip = from_kernel_addr(to_kernel_addr(ip));
        if seen.insert(ip) {
            if out.len() == MAX_DOH_ENDPOINTS {
                return Err(DohListError::TooLarge { path: path.into() });
            }
            out.push(ip);
        }
    }
    Ok(out)
}

/// Reads the DoH list of `record`: `path` if given (it must be readable), else the packaged
/// list if it exists (`Ok(None)` when it does not: only DoT and DoQ are recorded then).
pub fn load_doh_list(path: Option<&Path>) -> Result<Option<(PathBuf, Vec<IpAddr>)>, DohListError> {
    let (path, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_DOH_LIST), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DohListError::Read { path, source }),
    };
    let ips = parse_doh_list(&path, &text)?;
    Ok(Some((path, ips)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_comments_and_trailing_text() {
        let text = "# header\n\n1.1.1.1             # one.one.one.one\n\
                    2606:4700:4700::1111 cloudflare\n9.9.9.9,quad9\n::ffff:8.8.8.8\n1.1.1.1\n";
        let ips = parse_doh_list(Path::new("l"), text).expect("parse");
        let want: Vec<IpAddr> = ["1.1.1.1", "2606:4700:4700::1111", "9.9.9.9", "8.8.8.8"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        assert_eq!(ips, want);
    }

    #[test]
    fn a_name_is_refused_with_its_line() {
        let err = parse_doh_list(Path::new("list.txt"), "1.1.1.1\ndns.google\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("list.txt:2: `dns.google`"), "{msg}");
        assert!(msg.contains("hint:"), "{msg}");
    }

    #[test]
    fn the_shipped_list_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/doh-endpoints.txt");
        let text = std::fs::read_to_string(&path).expect("dist/doh-endpoints.txt");
        for key in ["# source:", "# date:", "# license:"] {
            assert!(text.contains(key), "the list's header lacks {key}");
        }
        let ips = parse_doh_list(&path, &text).expect("parse");
        assert!(ips.len() > 1000, "{} addresses", ips.len());
        assert!(ips.iter().any(IpAddr::is_ipv4) && ips.iter().any(IpAddr::is_ipv6));
        assert!(ips.contains(&"1.1.1.1".parse().expect("ip")));
    }

    #[test]
    fn a_missing_default_list_is_no_error_but_a_named_one_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.txt");
        assert!(matches!(
            load_doh_list(Some(&missing)),
            Err(DohListError::Read { .. })
        ));
    }

    #[test]
    fn kernel_addresses_round_trip() {
        for s in ["10.0.0.1", "2001:db8::1"] {
            let ip: IpAddr = s.parse().expect("ip");
            assert_eq!(from_kernel_addr(to_kernel_addr(ip)), ip);
        }
        assert_eq!(
            to_kernel_addr("1.2.3.4".parse().expect("ip"))[10..12],
            [0xff, 0xff]
        );
    }

    #[test]
    fn a_row_says_bypass_and_which() {
        let mut owner = KernelOwner {
            pid: 42,
            tid: 43,
            uid: 1000,
            ..KernelOwner::default()
        };
        owner.comm[..4].copy_from_slice(b"curl");
        let b = BypassInfo {
            ts_ns: 7,
            kind: BypassKind::DohLikely,
            server: "127.0.0.41".parse().expect("ip"),
            server_port: 443,
            client: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            client_port: 0,
            owner,
        };
        let attrs = ProcessAttrs {
            exe: Some(Arc::from("/usr/bin/curl")),
            ..ProcessAttrs::default()
        };
        let t = bypass_row(&b, attrs, &Arc::from("h"), None);
        assert_eq!(t.status, "bypass");
        assert_eq!(t.transport, "doh-likely");
        assert_eq!((t.pid, t.tid, t.uid), (Some(42), Some(43), Some(1000)));
        assert_eq!(t.comm.as_deref(), Some("curl"));
        assert_eq!(t.exe.as_deref(), Some("/usr/bin/curl"));
        assert_eq!((t.server_ip.as_str(), t.server_port), ("127.0.0.41", 443));
        assert_eq!((t.client_ip.as_str(), t.client_port), ("0.0.0.0", 0));
        assert_eq!(t.ip_version, 4);
        assert_eq!(t.ts, 7);
        assert!(t.qname.is_none() && t.dns_id.is_none() && t.response_ts.is_none());
    }
}
