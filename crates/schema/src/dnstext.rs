//! The text rules of DNS data in dnsledger, in one place: how names, character strings and
//! undecodable rdata are written (the recorder's columns, `dnsql show`, `snoop --detailed`), how
//! such names are read back (the SQL functions), and what a name's registered domain is.
//!
//! Names are in presentation form (RFC 1035 §5.1): labels separated by `.`, a `.`, `\`, `"`,
//! `(`, `)`, `;`, `@` or `$` inside a label escaped with `\`, other bytes outside the printable
//! ASCII range as `\DDD` (decimal); the root is `.`; no trailing dot otherwise.

use std::fmt::Write as _;

/// Appends one label in presentation form. With `lower`, ASCII letters are lower-cased (the
/// `qname` column's normal form); otherwise the case is kept as sent.
pub fn push_label(out: &mut String, label: &[u8], lower: bool) {
    for &b in label {
        match b {
            b'A'..=b'Z' if lower => out.push(char::from(b.to_ascii_lowercase())),
            b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x21..=0x7E => out.push(char::from(b)),
            _ => push_decimal_escape(out, b),
        }
    }
}

/// A whole name from its labels (wire order, without the root label); `.` for the root.
pub fn name_from_labels<'a>(labels: impl IntoIterator<Item = &'a [u8]>, lower: bool) -> String {
    let mut out = String::new();
    for label in labels {
        if !out.is_empty() {
            out.push('.');
        }
        push_label(&mut out, label, lower);
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// Appends a quoted `<character-string>`: `"` and `\` escaped, non-printable bytes as `\DDD`.
pub fn push_char_string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7E => out.push(char::from(b)),
            _ => push_decimal_escape(out, b),
        }
    }
    out.push('"');
}

/// Appends `\DDD`.
pub fn push_decimal_escape(out: &mut String, b: u8) {
    let _ = write!(out, "\\{b:03}");
}

/// RFC 3597 generic rdata: `\# <length> <HEX>` (`\# 0` when empty).
pub fn generic_rdata(rdata: &[u8]) -> String {
    let mut s = String::with_capacity(6 + rdata.len() * 2);
    let _ = write!(s, "\\# {}", rdata.len());
    if !rdata.is_empty() {
        s.push(' ');
        for b in rdata {
            let _ = write!(s, "{b:02X}");
        }
    }
    s
}

/// Byte ranges of the labels of a name in presentation form, honouring `\` escapes. A trailing
/// unescaped dot is ignored; `""` and `"."` have no labels.
pub fn label_ranges(name: &str) -> Vec<(usize, usize)> {
    let b = name.as_bytes();
    let mut out = Vec::new();
    if name.is_empty() || name == "." {
        return out;
    }
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                // `\DDD` or `\X`; a lone trailing backslash is kept as a character.
                if i + 3 < b.len() && b[i + 1..=i + 3].iter().all(u8::is_ascii_digit) {
                    i += 4;
                } else {
                    i += 2;
                }
            }
            b'.' => {
                out.push((start, i));
                start = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    if start < b.len() {
        out.push((start, b.len()));
    }
    out
}

/// The octets of one label in presentation form (`\DDD` and `\X` decoded).
pub fn decode_label(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if i + 3 < b.len() && b[i + 1..=i + 3].iter().all(u8::is_ascii_digit) {
                let v = u32::from(b[i + 1] - b'0') * 100
                    + u32::from(b[i + 2] - b'0') * 10
                    + u32::from(b[i + 3] - b'0');
                out.push(u8::try_from(v).unwrap_or(u8::MAX));
                i += 4;
            } else {
                out.push(b[i + 1]);
                i += 2;
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// A label the Public Suffix List can speak of: letters, digits, `-`, `_`; 1 to 63 octets.
fn is_host_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Where the registered domain starts: (index of its first label, its text, lower-cased).
fn split_registered(name: &str) -> Option<(usize, String)> {
    let ranges = label_ranges(name);
    // The longest tail of plain host-name labels; the PSL only ever looks at that tail.
    let mut first = ranges.len();
    while first > 0 {
        let (s, e) = ranges[first - 1];
        if !is_host_label(&name[s..e]) {
            break;
        }
        first -= 1;
    }
    if first == ranges.len() {
        return None;
    }
    let tail = ranges[first..]
        .iter()
        .map(|&(s, e)| name[s..e].to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(".");
    let domain = psl::domain_str(&tail)?;
    let labels = domain.split('.').count();
    Some((ranges.len() - labels, domain.to_owned()))
}

/// The registrable domain ("eTLD+1") of a name in presentation form, from the Public Suffix
/// List, lower-cased: `www.Example.co.uk` → `example.co.uk`. `None` for public suffixes
/// themselves, single labels, the root, and names whose registered domain would include a label
/// that is not a host-name label. Labels left of the registered domain may hold anything (a
/// tunnel's `aaaa.=auth.srv.tunnel.com` → `tunnel.com`). This is the one definition: the
/// recorder writes it into the `registered_domain` column and `dnsql`'s `registered_domain()`
/// computes it.
pub fn registered_domain(name: &str) -> Option<String> {
    split_registered(name).map(|(_, d)| d)
}

/// The labels left of the registered domain, as written (`""` for the registered domain
/// itself); `None` without a registered domain.
pub fn subdomain(name: &str) -> Option<String> {
    let (first, _) = split_registered(name)?;
    if first == 0 {
        return Some(String::new());
    }
    let ranges = label_ranges(name);
    Some(name[ranges[0].0..ranges[first - 1].1].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        let labels: [&[u8]; 3] = [b"A.b\\c", b"\x00\xff ", b"WWW"];
        assert_eq!(name_from_labels(labels, true), r"a\.b\\c.\000\255\032.www");
        assert_eq!(name_from_labels(labels, false), r"A\.b\\c.\000\255\032.WWW");
        assert_eq!(name_from_labels(std::iter::empty(), true), ".");
        // What is written reads back to the same octets.
        let text = name_from_labels(labels, false);
        let back: Vec<Vec<u8>> = label_ranges(&text)
            .into_iter()
            .map(|(s, e)| decode_label(&text[s..e]))
            .collect();
        assert_eq!(back, labels.map(<[u8]>::to_vec));
    }

    #[test]
    fn char_strings_and_generic_rdata() {
        let mut s = String::new();
        push_char_string(&mut s, b"a \"q\" \\ \x01");
        assert_eq!(s, r#""a \"q\" \\ \001""#);
        assert_eq!(generic_rdata(&[0x0a, 0x0b, 0x0c]), r"\# 3 0A0B0C");
        assert_eq!(generic_rdata(&[]), r"\# 0");
    }

    #[test]
    fn registered_domains() {
        let rd = registered_domain;
        assert_eq!(rd("www.example.co.uk").as_deref(), Some("example.co.uk"));
        assert_eq!(rd("WWW.Example.COM.").as_deref(), Some("example.com"));
        assert_eq!(rd("a.b.example.com").as_deref(), Some("example.com"));
        assert_eq!(rd("example.com").as_deref(), Some("example.com"));
        // Unknown TLDs fall under the PSL's default `*` rule.
        assert_eq!(
            rd("laegpumiplhhpz12ynd1efljwlkjcgwy.pirate.sea").as_deref(),
            Some("pirate.sea")
        );
        // dns2tcp: a label with `=` left of the registered domain does not matter.
        assert_eq!(
            rd("aaaaao1kqa.=auth.srv.tunnel.com").as_deref(),
            Some("tunnel.com")
        );
        assert_eq!(
            rd("1.0.168.192.in-addr.arpa").as_deref(),
            Some("192.in-addr.arpa")
        );
        for none in [
            "co.uk",
            "com",
            "wpad",
            ".",
            "",
            "x.b=d.com",
            r"a.ex\.ample.com",
        ] {
            assert_eq!(rd(none), None, "{none}");
        }
        // An escaped dot is part of a label, not a separator.
        assert_eq!(rd(r"a\.b.example.com").as_deref(), Some("example.com"));
        assert_eq!(rd("a..example.com").as_deref(), Some("example.com"));
        assert_eq!(rd("upload.wikimedia.org").as_deref(), Some("wikimedia.org"));
        assert_eq!(subdomain("a.b.example.co.uk").as_deref(), Some("a.b"));
        assert_eq!(subdomain("example.co.uk").as_deref(), Some(""));
        assert_eq!(subdomain("co.uk"), None);
        assert_eq!(
            subdomain("aaaaao1kqa.=auth.srv.tunnel.com").as_deref(),
            Some("aaaaao1kqa.=auth.srv")
        );
        assert_eq!(subdomain(r"a\.b.example.com").as_deref(), Some(r"a\.b"));
    }
}
