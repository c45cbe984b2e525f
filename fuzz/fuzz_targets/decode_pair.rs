//! libFuzzer entry point of `decode_pair`: the checks are in `dnsledger_fuzz::decode_pair`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dnsledger_fuzz::decode_pair::run(data));
