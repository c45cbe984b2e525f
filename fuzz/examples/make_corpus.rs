//! Builds the seed corpora from the public captures in `testdata/pcap`:
//!
//! * `corpus/dns_parse/`: every distinct DNS message (UDP payloads and TCP messages without
//!   their length prefix) the library's decoder cuts out of the captures;
//! * `corpus/decode_pair/`: the captures' DNS-related L3 packets (non-DNS traffic dropped),
//!   in chunks of at most 48 packets, in the `decode_pair` input framing.
//!
//! Run from `fuzz/`: `cargo run --release --example make_corpus` (it replaces both folders'
//! generated files; files named `min-*` or `crash-*` are left alone).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use dnsledger::capture::pcap::PcapSource;
use dnsledger::decode::{Decoder, PortSet};
use dnsledger_fuzz::encode_pipeline_input;

const CHUNK: usize = 48;

fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn pcaps(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read testdata")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            pcaps(&p, out);
        } else if p.extension().is_some_and(|e| e == "pcap" || e == "pcapng") {
            out.push(p);
        }
    }
}

fn reset_dir(dir: &Path) {
    fs::create_dir_all(dir).expect("create corpus dir");
    for e in fs::read_dir(dir).expect("read corpus dir") {
        let p = e.expect("entry").path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("seed-") {
            fs::remove_file(&p).expect("remove old seed");
        }
    }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    pcaps(&root.join("../testdata/pcap"), &mut files);
    let dns_dir = root.join("corpus/dns_parse");
    let pipe_dir = root.join("corpus/decode_pair");
    reset_dir(&dns_dir);
    reset_dir(&pipe_dir);

    let mut seen = HashSet::new();
    let (mut n_msgs, mut n_chunks, mut bytes) = (0usize, 0usize, 0usize);
    for path in &files {
        let mut src = PcapSource::open(path).expect("open capture");
        let mut packets: Vec<(i64, u32, Vec<u8>)> = Vec::new();
        // Keep only packets the decoder does not count as unrelated traffic.
        let mut filter = Decoder::new(PortSet::standard());
        let mut scratch = Vec::new();
        let _ = src.for_each(|pkt| {
            let before = filter.stats();
            filter.push(pkt, &mut scratch);
            let after = filter.stats();
            let unrelated = after.not_dns > before.not_dns
                || after.other_protocol > before.other_protocol
                || after.not_ip > before.not_ip;
            if !unrelated {
                packets.push((pkt.ts_ns, pkt.wire_len, pkt.data.to_vec()));
            }
        });
        filter.finish(&mut scratch);
        for m in &scratch {
            if seen.insert(fnv64(&m.bytes)) {
                let name = format!("seed-{:016x}", fnv64(&m.bytes));
                fs::write(dns_dir.join(name), &m.bytes).expect("write seed");
                n_msgs += 1;
                bytes += m.bytes.len();
            }
        }
        let stem = path
            .strip_prefix(root.join("../testdata/pcap"))
            .unwrap_or(path)
            .to_string_lossy()
            .replace(['/', '.'], "_");
        for (i, chunk) in packets.chunks(CHUNK).enumerate() {
            let input = encode_pipeline_input(0, chunk);
            fs::write(pipe_dir.join(format!("seed-{stem}-{i:03}")), &input).expect("write seed");
            n_chunks += 1;
            bytes += input.len();
        }
    }
    println!(
        "{} captures: {n_msgs} dns_parse seeds, {n_chunks} decode_pair seeds, {bytes} bytes",
        files.len()
    );
}
