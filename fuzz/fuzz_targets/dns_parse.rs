//! Arbitrary bytes -> `dns::parse`: never panics, and what it returns is self-consistent
//! (see `dnsledger_fuzz::check_parsed`) and deterministic.
#![no_main]

use dnsledger::dns;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = dns::parse(data);
    dnsledger_fuzz::check_parsed(data, &p);
    assert_eq!(p, dns::parse(data), "parse is not deterministic");
});
