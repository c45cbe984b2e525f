//! Step 1 of the path: **kernel -> ring buffer -> [`RawPacket`]** (or a capture file -> the
//! same [`RawPacket`]s).
//!
//! ```text
//! kernel (bpf/dnsledger.bpf.c)  --ring buffer-->  bpf (load/attach/poll; the one libbpf-rs user)
//!   -> events::parse   ring-buffer record -> typed Event (packet, exec, exit, stack)
//!   -> ring::RingFeed  packets to the pipeline, exec/exit to procs, stacks to stacks
//! pcap::PcapSource     capture files -> the same RawPackets (`dnsledger import`)
//! ```
//!
//! Beside the packets: [`procs`] (the process table that attributes a packet to a process),
//! [`stacks`] (`--stacks` symbolization), [`privs`] (the capabilities needed, and dropping
//! them once attached; [`attach_helper`], the process that keeps the one a late uprobe needs),
//! [`abi`] (the kernel ABI numbers, from the skeleton).
//!
//! What leaves this step is a [`RawPacket`]: L3 bytes with capture metadata. [`crate::decode`]
//! takes it from there.

pub mod abi;
pub mod attach_helper;
pub mod bpf;
pub mod events;
pub mod lookup_skel;
pub mod pcap;
pub mod privs;
pub mod procs;
pub mod ring;
pub mod skel;
pub mod stacks;
pub mod uprobes;

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

/// Which end of a DNS conversation the local socket is (`--serve-side`; the `side` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// A local process asking a DNS server (what is always recorded).
    Client,
    /// A local DNS server answering (recorded with `--serve-side` only).
    Server,
    /// Not known (packet captures: the same packets are either end).
    Unknown,
}

impl Side {
    /// The `side` column's value (NULL when unknown).
    pub fn column(self) -> Option<&'static str> {
        match self {
            Side::Client => Some(dnsledger_schema::side::CLIENT),
            Side::Server => Some(dnsledger_schema::side::SERVER),
            Side::Unknown => None,
        }
    }
}

/// One captured packet, borrowed from the source's buffer.
#[derive(Clone, Copy, Debug)]
pub struct RawPacket<'a> {
    /// Capture time, nanoseconds since the Unix epoch (UTC).
    pub ts_ns: i64,
    pub direction: Direction,
    /// Which end of the conversation the local socket is.
    pub side: Side,
    /// Process that owns the local socket (BPF source only).
    pub owner: Option<KernelOwner>,
    /// Kernel socket cookie, 0 when unknown. Distinguishes flows that reuse a 5-tuple.
    pub sock_cookie: u64,
    /// Length of the L3 packet before the capture cap cut it (`data.len() <= wire_len`).
    pub wire_len: u32,
    /// Bytes starting at the IPv4 or IPv6 header.
    pub data: &'a [u8],
}
