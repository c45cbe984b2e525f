//! The recorder's one integration-test binary (one binary keeps link time down).
//! Tests named `bpf_*` load real BPF programs: they need root and are never skipped.

mod bpf_crash;
mod bpf_disk;
mod bpf_live;
mod bpf_live_views;
mod bpf_replay;
mod bpf_stacks;
mod cli;
mod common;
mod import;
