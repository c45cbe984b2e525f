//! The pure functions behind the SQL functions of [`crate::udf`]: what a name's labels say
//! (counts, lengths, entropy, alphabet), information content, and the question name of a raw
//! message. No DataFusion here; [`super::sql`] wraps each one for SQL.
//!
//! Names are read by the DNS text rules of `dnsledger_schema::dnstext` (label ranges, `\DDD`
//! decoding, the registered domain), the rules the recorder writes them by.

use std::io::Write as _;

use dnsledger_schema::dnstext::{decode_label, label_ranges, name_from_labels, registered_domain};
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// Minimum number of characters before [`label_alphabet_of`] calls text an encoding: below
/// that, ordinary names fit the hex or base32 alphabets by chance (`cafe`, `web01`). Our own
/// choice; 16 base32 characters carry 80 bits.
pub const ALPHABET_MIN_CHARS: usize = 16;

/// The labels the entropy and alphabet look at, decoded: those left of the registered domain,
/// or all labels when the name has no registered domain.
fn information_labels(name: &str) -> Vec<Vec<u8>> {
    let ranges = label_ranges(name);
    // Labels left of the registered domain: as many as the name has beyond it.
    let end = match registered_domain(name) {
        Some(rd) => ranges.len().saturating_sub(label_ranges(&rd).len()),
        None => ranges.len(),
    };
    ranges[..end]
        .iter()
        .map(|&(s, e)| decode_label(&name[s..e]))
        .collect()
}

/// `label_count(name)`.
pub fn label_count_of(name: &str) -> usize {
    label_ranges(name).len()
}

/// `name_length(name)`: label octets plus the dots between labels (escapes count as one octet).
pub fn name_length_of(name: &str) -> usize {
    let ranges = label_ranges(name);
    let octets: usize = ranges
        .iter()
        .map(|&(s, e)| decode_label(&name[s..e]).len())
        .sum();
    octets + ranges.len().saturating_sub(1)
}

/// `max_label_len(name)`: the longest label in octets.
pub fn max_label_len_of(name: &str) -> usize {
    label_ranges(name)
        .iter()
        .map(|&(s, e)| decode_label(&name[s..e]).len())
        .max()
        .unwrap_or(0)
}

/// Shannon entropy of a byte string in bits per byte.
pub fn shannon_entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0usize; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// `label_entropy(name)`: Shannon entropy (bits/char) of the labels left of the registered
/// domain (all labels when there is none); 0 when there are no such labels.
pub fn label_entropy_of(name: &str) -> f64 {
    shannon_entropy(&information_labels(name).concat())
}

/// `label_alphabet(name)`: classifies the characters of the labels left of the registered domain
/// (all labels without one) by the smallest encoding alphabet that produces them. Only labels
/// of [`ALPHABET_MIN_CHARS`] characters or more are judged (joined, dots removed): an encoder
/// writes a character stream and cuts it into labels as long as it is allowed to (iodine,
/// dns2tcp, dnscat2 and dnsteal fill labels towards the 63-octet limit), so data sits in long
/// labels, while a name made of short labels — `api.3.svc.cluster.local.corp.example`, a
/// search-domain miss — is host-name words however many of them there are. Judging the joined
/// labels instead read such names as base32 (letters and digits, 16 characters together) and
/// flagged 83 ordinary (process, domain) pairs in the fleet bench.
///
/// - `8bit`: any byte outside printable ASCII (written `\DDD`) in any label, whatever the
///   length: host names never contain them, raw-binary tunnels (iodine's raw/base128 codecs) do;
/// - with no long label: `base64` when the labels hold `+` or `=` and only base64 characters
///   (no host name has them; dns2tcp's `=auth` and padding do), `dns` otherwise;
/// - `hex`: only `0-9a-f` (one case), with at least one digit and one letter;
/// - `base32`: only letters of one case and digits, with at least one digit and one letter;
/// - `base64`: only `A-Za-z0-9+/=-_`, and mixed-case letters or one of `+ / =` (the qname
///   column is lower-cased, so mixed case is only visible in [`question_name`]'s output);
/// - `8bit` also for other punctuation (outside every text encoding's alphabet);
/// - `dns` otherwise: what host names look like (words, hyphens, underscores, digits only).
///
/// Well-formed reverse-mapping names (`4.3.2.1.in-addr.arpa` with decimal octets,
/// `b.a.9.8.….ip6.arpa` with single hex nibbles) are `dns`: their hex and digits are the
/// address, by RFC 1035/3596, not encoded data.
///
/// [`question_name`]: question_name_of
pub fn label_alphabet_of(name: &str) -> &'static str {
    if is_reverse_name(name) {
        return "dns";
    }
    let labels = information_labels(name);
    if labels.iter().flatten().any(|&b| !(0x21..0x7f).contains(&b)) {
        return "8bit";
    }
    let long: Vec<u8> = labels
        .iter()
        .filter(|l| l.len() >= ALPHABET_MIN_CHARS)
        .flatten()
        .copied()
        .collect();
    if long.is_empty() {
        let mut all = labels.iter().flatten();
        let padded = all.clone().any(|b| b"+=".contains(b));
        return if padded && all.all(|&b| is_base64_char(b)) {
            "base64"
        } else {
            "dns"
        };
    }
    alphabet_of_bytes(&long)
}

fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+/=-_".contains(&b)
}

/// A well-formed reverse-mapping name (or a prefix of one, as in a zone cut).
fn is_reverse_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    if let Some(rest) = lower.strip_suffix(".in-addr.arpa") {
        let labels: Vec<&str> = rest.split('.').collect();
        return labels.len() <= 4
            && labels
                .iter()
                .all(|l| !l.is_empty() && l.len() <= 3 && l.parse::<u8>().is_ok());
    }
    if let Some(rest) = lower.strip_suffix(".ip6.arpa") {
        let labels: Vec<&str> = rest.split('.').collect();
        return labels.len() <= 32
            && labels
                .iter()
                .all(|l| l.len() == 1 && l.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    false
}

fn alphabet_of_bytes(part: &[u8]) -> &'static str {
    if part.iter().any(|&b| !(0x21..0x7f).contains(&b)) {
        return "8bit";
    }
    if part.len() < ALPHABET_MIN_CHARS {
        return "dns";
    }
    let digit = part.iter().any(u8::is_ascii_digit);
    let lower = part.iter().any(u8::is_ascii_lowercase);
    let upper = part.iter().any(u8::is_ascii_uppercase);
    let alnum_only = part.iter().all(u8::is_ascii_alphanumeric);
    let b64_only = part.iter().all(|&b| is_base64_char(b));
    if alnum_only && digit && (lower != upper) {
        let hex = part.iter().all(u8::is_ascii_hexdigit);
        return if hex { "hex" } else { "base32" };
    }
    if b64_only {
        let b64_punct = part.iter().any(|b| b"+/=".contains(b));
        if (lower && upper) || b64_punct {
            return "base64";
        }
        return "dns";
    }
    "8bit"
}

/// `info_content(list)`: the zlib-compressed length (bytes, default level, zlib framing) of the
/// list's distinct strings sorted and concatenated — how ml-cpp computes `info_content` for
/// Elastic's anomaly detection (`CUniqueStringFeatureData::populateInfoContentFeatureData`).
pub fn info_content_of<'a>(strings: impl IntoIterator<Item = &'a str>) -> usize {
    let mut v: Vec<&str> = strings.into_iter().collect();
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v.dedup();
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    for s in v {
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(s.as_bytes());
    }
    enc.finish().map(|b| b.len()).unwrap_or(0)
}

/// `question_name(raw)`: the first question's name of a wire-format DNS message, case kept.
/// `None` when the message has no question or it cannot be read.
pub fn question_name_of(raw: &[u8]) -> Option<String> {
    if raw.len() < 12 || u16::from_be_bytes([raw[4], raw[5]]) == 0 {
        return None;
    }
    let mut decoder = BinDecoder::new(raw);
    decoder.read_slice(12).ok()?;
    let name = Name::read(&mut decoder).ok()?;
    Some(name_from_labels(name.iter(), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_counts_and_lengths() {
        assert_eq!(label_count_of("www.example.com"), 3);
        assert_eq!(label_count_of("www.example.com."), 3);
        assert_eq!(label_count_of("."), 0);
        assert_eq!(label_count_of(""), 0);
        assert_eq!(label_count_of(r"a\.b.example.com"), 3);
        assert_eq!(max_label_len_of("www.example.com"), 7);
        assert_eq!(max_label_len_of(r"\000\255x.com"), 3);
        assert_eq!(max_label_len_of(&format!("{}.com", "a".repeat(63))), 63);
        assert_eq!(max_label_len_of("."), 0);
        assert_eq!(name_length_of("www.example.com"), 15);
        assert_eq!(name_length_of("www.example.com."), 15);
        assert_eq!(name_length_of(r"\200\201.example.com"), 14);
        assert_eq!(name_length_of(r"a\.b.com"), 7);
        assert_eq!(name_length_of("."), 0);
    }

    #[test]
    fn entropy_values() {
        assert_eq!(label_entropy_of("example.com"), 0.0);
        assert_eq!(label_entropy_of("www.example.com"), 0.0);
        // "ab": two symbols, equally likely: 1 bit.
        assert!((label_entropy_of("ab.example.com") - 1.0).abs() < 1e-12);
        // Dots are not characters: "a.b" is "ab".
        assert!((label_entropy_of("a.b.example.com") - 1.0).abs() < 1e-12);
        // 16 distinct characters: 4 bits each.
        assert!((label_entropy_of("0123456789abcdef.example.com") - 4.0).abs() < 1e-12);
        // "aab": -(2/3 log2 2/3 + 1/3 log2 1/3) = 0.9183
        assert!((label_entropy_of("aab.example.com") - 0.918_295_834).abs() < 1e-6);
        // No registered domain: the whole name counts.
        assert!((label_entropy_of("ab") - 1.0).abs() < 1e-12);
    }

    #[test]
    fn alphabets() {
        let a = label_alphabet_of;
        assert_eq!(a("www.example.com"), "dns");
        assert_eq!(a("upload.wikimedia.org"), "dns");
        assert_eq!(a("r3---sn-4g5e6nsz.googlevideo.com"), "dns");
        assert_eq!(a("_googlecast._tcp.local"), "dns");
        assert_eq!(a("deadbeef.example.com"), "dns"); // too short to say
        assert_eq!(a("0123456789abcdef0123.example.com"), "hex");
        assert_eq!(a("laegpumiplhhpz12ynd1efljwlkjcgwy.pirate.sea"), "base32");
        assert_eq!(a("MFRGGZDFMZTWQ2LKNNWG23TP.example.com"), "base32");
        assert_eq!(a("hvP1kF5BAHNzaAxxYz.example.com"), "base64");
        assert_eq!(a("aaaaao1kqa.=auth.srv.tunnel.com"), "base64");
        assert_eq!(a(r"\200\201abc.example.com"), "8bit");
        assert_eq!(a("abcdefghijklmn!?xx.example.com"), "8bit");
        // Reverse-mapping names carry addresses, not data.
        assert_eq!(
            a("b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa"),
            "dns"
        );
        assert_eq!(a("206.218.58.216.in-addr.arpa"), "dns");
        assert_eq!(a("0123456789abcdef0123.f.ip6.arpa"), "hex");
        // Search-domain misses: many short labels of words and digits are host names, even
        // when together they pass 16 characters of letters and digits.
        assert_eq!(a("api.3.svc.cluster.local.corp.example"), "dns");
        assert_eq!(a("bakotimu.1729.svc.cluster.local.corp.example"), "dns");
        // A tunnel's data labels are long; its short labels do not hide them.
        assert_eq!(
            a("s0.laegpumiplhhpz12ynd1efljwlkjcgwy.t.example.com"),
            "base32"
        );
        assert_eq!(
            a("0123456789abcdef0123.aa.0123456789abcdef0123.example.com"),
            "hex"
        );
        // 8-bit bytes count in any label.
        assert_eq!(a(r"ab.\200.example.com"), "8bit");
        // Words and digits without letters are host names.
        assert_eq!(a("windowsupdatecatalog.example.com"), "dns");
        assert_eq!(a("1234567890123456.example.com"), "dns");
    }

    #[test]
    fn info_content_is_zlib_length_of_sorted_distinct() {
        assert_eq!(info_content_of([]), 0);
        let one = info_content_of(["abc"]);
        // zlib: 2-byte header, deflate block, 4-byte Adler-32.
        assert!(one > 6 && one < 20, "{one}");
        // Duplicates and order do not matter.
        assert_eq!(
            info_content_of(["b", "a", "b", "a"]),
            info_content_of(["a", "b"])
        );
        // Repetitive names compress; random ones do not.
        let same: Vec<String> = (0..100)
            .map(|i| format!("www{}.example.com", i % 3))
            .collect();
        let random: Vec<String> = (0..100)
            .map(|i| {
                format!(
                    "{:016x}.example.com",
                    (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                )
            })
            .collect();
        let s = info_content_of(same.iter().map(String::as_str));
        let r = info_content_of(random.iter().map(String::as_str));
        assert!(s < 50, "{s}");
        assert!(r > 700, "{r}");
    }

    #[test]
    fn question_name_keeps_case() {
        let mut msg = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["AbC", "Example", "com"] {
            msg.push(label.len() as u8);
            msg.extend_from_slice(label.as_bytes());
        }
        msg.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(question_name_of(&msg).as_deref(), Some("AbC.Example.com"));
        assert_eq!(question_name_of(&msg[..11]), None);
        assert_eq!(question_name_of(&msg[..16]), None);
    }
}
