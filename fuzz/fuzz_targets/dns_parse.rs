//! libFuzzer entry point of `dns_parse`: the checks are in `dnsledger_fuzz::dns_parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dnsledger_fuzz::dns_parse::run(data));
