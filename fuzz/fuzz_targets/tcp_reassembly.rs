//! libFuzzer entry point of `tcp_reassembly`: the model and checks are in
//! `dnsledger_fuzz::tcp_reassembly`. The counting allocator makes its heap bound checkable.
#![no_main]

use dnsledger_fuzz::CountingAlloc;
use dnsledger_fuzz::tcp_reassembly::{Input, check};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fuzz_target!(|input: Input| check(&input));
