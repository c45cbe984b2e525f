//! dnsledger recorder library: capture sources, decoding, pairing and segment writing.
//!
//! Everything after the capture source is pure and unit-tested; only [`bpf`] touches libbpf-rs.

pub mod decode;
pub mod event;
pub mod pcap;
