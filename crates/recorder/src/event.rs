//! Types that flow through the pipeline, independent of where packets come from.
//!
//! ```text
//! source (BPF ring buffer | pcap file)
//!   -> RawPacket          (L3 bytes + capture metadata, borrowed)
//!   -> decode::Decoder    (IP/UDP/TCP, fragments, TCP stream reassembly)
//!   -> DnsMessage         (one whole DNS message, owned)
//!   -> dns::parse         (hickory-proto)
//!   -> pair::Pairer       (query + response -> transaction)
//!   -> schema::Transaction -> segment::SegmentWriter
//! ```

use std::net::IpAddr;

/// Process context captured in the kernel together with a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KernelOwner {
    /// Thread group id (the "pid" users know).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup v2 id (inode of the cgroup directory).
    pub cgroup_id: u64,
    /// Network namespace inode (0 when unknown).
    pub netns: u32,
    /// `task->comm`, NUL-padded.
    pub comm: [u8; 16],
}

impl KernelOwner {
    /// `comm` as text, up to the first NUL.
    pub fn comm_str(&self) -> String {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }
}

/// Which way a packet crossed the host's socket layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by a local socket.
    Egress,
    /// Received by a local socket.
    Ingress,
    /// Not known (packet captures).
    Unknown,
}

/// One captured packet, borrowed from the source's buffer.
#[derive(Clone, Copy, Debug)]
pub struct RawPacket<'a> {
    /// Capture time, nanoseconds since the Unix epoch (UTC).
    pub ts_ns: i64,
    pub direction: Direction,
    /// Process that owns the local socket (BPF source only).
    pub owner: Option<KernelOwner>,
    /// Kernel socket cookie, 0 when unknown. Distinguishes flows that reuse a 5-tuple.
    pub sock_cookie: u64,
    /// Length of the L3 packet before the capture cap cut it (`data.len() <= wire_len`).
    pub wire_len: u32,
    /// Bytes starting at the IPv4 or IPv6 header.
    pub data: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// A DNS conversation endpoint pair, normalised so that `server` is the side whose port is a
/// DNS port (or the destination of a query when both or neither are).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub transport: Transport,
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub server_ip: IpAddr,
    pub server_port: u16,
    /// Socket cookie of the local socket, 0 when unknown.
    pub sock_cookie: u64,
}

impl Flow {
    pub fn ip_version(&self) -> u8 {
        match self.client_ip {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 6,
        }
    }
}

/// One whole DNS message cut out of the packet stream.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsMessage {
    /// Time of the packet that completed the message (ns since epoch, UTC).
    pub ts_ns: i64,
    pub flow: Flow,
    /// True when the message travelled client -> server (a query, by direction).
    pub from_client: bool,
    pub owner: Option<KernelOwner>,
    /// Length of the DNS message as declared on the wire (UDP length - 8, or the TCP length
    /// prefix). `bytes.len() < wire_len` means the capture lost part of it.
    pub wire_len: u32,
    /// The DNS message (without the TCP length prefix), possibly cut short.
    pub bytes: Vec<u8>,
    /// Why the message is incomplete, if it is (capture cap, missing fragment, TCP gap...).
    pub capture_error: Option<String>,
    /// Symbolized user stack of the code that sent the message (`--stacks`), innermost
    /// frame first.
    pub stack: Option<std::sync::Arc<[String]>>,
}
