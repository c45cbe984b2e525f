//! The generated libbpf-rs skeleton of `bpf/dnsledger.bpf.c`. Never edited by hand.
#![allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    non_camel_case_types,
    unsafe_op_in_unsafe_fn
)]
include!(concat!(env!("OUT_DIR"), "/dnsledger.skel.rs"));
