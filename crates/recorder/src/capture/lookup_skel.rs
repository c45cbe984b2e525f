//! The generated libbpf-rs skeleton of `bpf/lookups.bpf.c` (the libc lookup probes). Never
//! edited by hand: the workspace's unsafe-documentation lints do not apply to libbpf-cargo's
//! output.
#![allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    clippy::pedantic,
    missing_docs,
    non_camel_case_types,
    unsafe_op_in_unsafe_fn
)]
include!(concat!(env!("OUT_DIR"), "/lookups.skel.rs"));
