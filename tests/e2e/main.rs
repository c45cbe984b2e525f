//! The end-to-end suite: real BPF programs, real DNS servers and clients, the `dnsledger` and
//! `dnsql` binaries, and independent oracles (tshark, DuckDB). One test binary keeps link time
//! down. Tests named `bpf_*` load real BPF programs: they need root and are never skipped.

mod bpf_bypass;
mod bpf_crash;
mod bpf_disk;
mod bpf_live;
mod bpf_live_views;
mod bpf_lookups;
mod bpf_names;
mod bpf_replay;
mod bpf_report;
mod bpf_resolved;
mod bpf_serve_side;
mod bpf_stacks;
mod bpf_stublink;
mod compact;
mod compat;
mod import;
mod lake_engines;
mod ocsf;
mod ship;
mod ship_compact;
