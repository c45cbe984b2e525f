//! dnsledger recorder library: the data path from the kernel to sealed Parquet segments.
//!
//! Each module is one step of the path, in order:
//!
//! ```text
//! kernel (bpf/*.bpf.c)
//!   -> capture/   ring buffer -> RawPacket: BPF load/attach/poll (the one libbpf-rs user),
//!                 ring-record parsing, process table, stacks, privileges; pcap files too
//!   -> decode/    RawPacket -> DnsMessage: IP (ip.rs), fragments (frag.rs), UDP, TCP streams (tcp.rs)
//!   -> dns.rs     DnsMessage -> parsed DNS fields (hickory-proto)
//!   -> pair.rs    query + response -> Transaction row
//!   -> store/     Transaction -> spool (crash safety) -> sealed segment; retention (prune)
//! ```
//!
//! [`bypass`] turns the kernel's encrypted-DNS bypass events (DoT, DoQ, likely DoH) into rows
//! and reads the DoH endpoint list.
//!
//! [`pipeline`] strings decode -> dns -> pair -> store together for both sources;
//! [`recorder`] runs it live (the capture thread, the writer loop, upkeep and status);
//! [`live`] serves what is recorded as it happens (live socket, `snoop`, `top`, Prometheus
//! metrics, `status`); [`config`] holds the settings (defaults < file < environment < flags).
//!
//! Everything after `capture` is pure and unit-tested; only [`capture::bpf`] touches libbpf-rs.

pub mod bypass;
pub mod capture;
pub mod config;
pub mod decode;
pub mod dns;
pub mod live;
pub mod lookups;
pub mod pair;
pub mod pipeline;
pub mod recorder;
pub mod store;
pub mod stublink;
