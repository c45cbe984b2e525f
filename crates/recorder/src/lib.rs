//! dnsledger recorder library: capture sources, decoding, pairing and segment writing.
//!
//! Everything after the capture source is pure and unit-tested; only [`bpf`] touches libbpf-rs.

pub mod bpf;
pub mod config;
pub mod decode;
pub mod detailed;
pub mod dns;
pub mod event;
pub mod live;
pub mod metrics;
pub mod pair;
pub mod pcap;
pub mod pipeline;
pub mod privs;
pub mod procs;
pub mod prune;
pub mod segment;
pub mod snoop;
pub mod spool;
pub mod stacks;
pub mod status;
pub mod top;
