//! Regression replay, in the ordinary `cargo test --workspace`: every committed input of
//! `corpus/<target>/` and `artifacts/<target>/` (crashes kept as regressions, when present) runs
//! once through the target's `run`, the same entry point the libFuzzer binary calls. A panic
//! fails the test and names the file.
//!
//! The counting allocator is installed here as in the `tcp_reassembly` fuzz binary, so that
//! target's heap bound is checked too (the counters are per thread: the tests may run in
//! parallel).

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use dnsledger_fuzz::{CountingAlloc, decode_pair, dns_parse, tcp_reassembly};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// The files of `corpus/<target>` and `artifacts/<target>`, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("directory entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let files = inputs(target);
    let start = Instant::now();
    let mut failed = Vec::new();
    for path in &files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(e) = panic::catch_unwind(AssertUnwindSafe(|| run(&data))) {
            let msg = e
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| e.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            failed.push(format!("{}: {msg}", path.display()));
        }
    }
    eprintln!(
        "{target}: {} inputs replayed in {:.1?}",
        files.len(),
        start.elapsed()
    );
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs failed:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn dns_parse_corpus() {
    assert!(!inputs("dns_parse").is_empty(), "no dns_parse corpus");
    replay("dns_parse", dns_parse::run);
}

#[test]
fn decode_pair_corpus() {
    assert!(!inputs("decode_pair").is_empty(), "no decode_pair corpus");
    replay("decode_pair", decode_pair::run);
}

#[test]
fn tcp_reassembly_corpus() {
    assert!(
        !inputs("tcp_reassembly").is_empty(),
        "no tcp_reassembly corpus"
    );
    replay("tcp_reassembly", tcp_reassembly::run);
}

/// The allocator the heap check of `tcp_reassembly` relies on is in effect in this binary.
#[test]
fn heap_counting_is_installed() {
    assert!(dnsledger_fuzz::heap_counting());
    let mark = dnsledger_fuzz::heap_mark();
    let v = std::hint::black_box(vec![0u8; 1 << 16]);
    assert!(dnsledger_fuzz::heap_peak_since(mark) >= 1 << 16);
    drop(v);
}
