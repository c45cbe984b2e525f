//! SQL functions for DNS names, usable in any `dnsql` query and used by the recipes.
//!
//! | function | returns | meaning |
//! |---|---|---|
//! | `registered_domain(name)` | text | the registrable domain ("eTLD+1", Public Suffix List): `a.b.example.co.uk` → `example.co.uk`; NULL for public suffixes, single labels and the root |
//! | `subdomain(name)` | text | the labels left of the registered domain: `a.b.example.co.uk` → `a.b`; `''` for the registered domain itself; NULL when there is no registered domain |
//! | `label_count(name)` | bigint | number of labels (`.` → 0) |
//! | `name_length(name)` | bigint | length of the name in octets as on the wire without the length bytes: label octets plus the dots between them (`\DDD` and `\.` count as one) |
//! | `max_label_len(name)` | bigint | longest label, in octets (`\DDD` and `\.` count as one) |
//! | `label_entropy(name)` | double | Shannon entropy, bits per character, of the characters of the labels left of the registered domain (dots excluded; all labels when there is no registered domain); 0 when there are none |
//! | `label_alphabet(name)` | text | which encoding alphabet those characters look like: `hex`, `base32`, `base64`, `8bit` or `dns` (ordinary host name); see [`label_alphabet_of`] |
//! | `info_content(list)` | bigint | zlib-compressed length in bytes of the sorted, de-duplicated strings of a list, concatenated: Elastic ML's `info_content` measure; use as `info_content(array_agg(qname))` |
//! | `answer_strings(answers)` | list<text> | each answer as `TYPE data` |
//! | `answer_data(answers)` | list<text> | each answer's data only |
//! | `question_name(query_raw)` | text | the first question's name decoded from a raw DNS message, with its case preserved (the `qname` column is lower-cased) |
//!
//! Names are read in the recorder's text convention (`crates/recorder/src/dns.rs`): labels
//! separated by `.`, a `.` inside a label written `\.`, other unprintable bytes as `\DDD`. A
//! trailing dot is ignored and letters compare case-insensitively.
//!
//! The `registered_domain` column is written by the recorder and is NULL for any name that is
//! not a plain host name (for example dns2tcp's `aaaa.=auth.srv.tunnel.com`). The function here
//! only needs the registered domain itself (and the public suffix) to be host-name labels, so it
//! still names the parent of such tunnel names; the recipes use
//! `coalesce(registered_domain, registered_domain(qname))`.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, Int64Builder, ListBuilder, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// Minimum number of characters before [`label_alphabet_of`] calls text an encoding: below
/// that, ordinary names fit the hex or base32 alphabets by chance (`cafe`, `web01`). Our own
/// choice; 16 base32 characters carry 80 bits.
pub const ALPHABET_MIN_CHARS: usize = 16;

/// Registers every function of this module in `ctx`.
pub fn register_all(ctx: &SessionContext) {
    for udf in udfs() {
        ctx.register_udf(udf);
    }
}

/// One line per function, `syntax  description`, for `--help`.
pub fn functions_help() -> String {
    ALL.iter()
        .map(|k| {
            let (syntax, description) = k.doc();
            format!("  {syntax:<26} {description}\n")
        })
        .collect()
}

const ALL: [Kind; 11] = [
    Kind::RegisteredDomain,
    Kind::Subdomain,
    Kind::LabelCount,
    Kind::NameLength,
    Kind::MaxLabelLen,
    Kind::LabelEntropy,
    Kind::LabelAlphabet,
    Kind::InfoContent,
    Kind::AnswerStrings,
    Kind::AnswerData,
    Kind::QuestionName,
];

/// Every function of this module, for registration in other contexts.
pub fn udfs() -> Vec<ScalarUDF> {
    ALL.into_iter()
        .map(|kind| ScalarUDF::new_from_impl(DnsFn::new(kind)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Pure functions (the SQL functions are thin wrappers around these).

/// Byte ranges of the labels of a name in presentation form, honouring `\` escapes. A trailing
/// unescaped dot is ignored; `""` and `"."` have no labels.
fn label_ranges(name: &str) -> Vec<(usize, usize)> {
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
fn decode_label(text: &str) -> Vec<u8> {
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

/// `registered_domain(name)`: the registrable domain of `name` from the Public Suffix List,
/// lower-cased. `None` for public suffixes, single labels, the root, and names whose registered
/// domain would include a label that is not a host name.
pub fn registered_domain_of(name: &str) -> Option<String> {
    split_registered(name).map(|(_, d)| d)
}

/// `subdomain(name)`: the labels left of the registered domain, as written (`""` for the
/// registered domain itself); `None` without a registered domain.
pub fn subdomain_of(name: &str) -> Option<String> {
    let (first, _) = split_registered(name)?;
    if first == 0 {
        return Some(String::new());
    }
    let ranges = label_ranges(name);
    Some(name[ranges[0].0..ranges[first - 1].1].to_owned())
}

/// The octets of the labels the entropy and alphabet look at: those left of the registered
/// domain, or all labels when the name has no registered domain. Dots are not included.
fn information_part(name: &str) -> Vec<u8> {
    let ranges = label_ranges(name);
    let end = match split_registered(name) {
        Some((first, _)) => first,
        None => ranges.len(),
    };
    ranges[..end]
        .iter()
        .flat_map(|&(s, e)| decode_label(&name[s..e]))
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
    shannon_entropy(&information_part(name))
}

/// `label_alphabet(name)`: classifies the characters of the labels left of the registered domain
/// (all labels without one), dots removed, by the smallest encoding alphabet that produces them:
///
/// - `8bit`: any byte outside printable ASCII (written `\DDD`), whatever the length: host names
///   never contain them, raw-binary tunnels (iodine's raw/base128 codecs) do;
/// - below [`ALPHABET_MIN_CHARS`] characters, everything else is `dns`;
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
    alphabet_of_bytes(&information_part(name))
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
    let b64_only = part
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b));
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

/// Appends one label in the recorder's text convention, keeping the letter case.
fn push_label(out: &mut String, label: &[u8]) {
    for &b in label {
        match b {
            b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x21..=0x7E => out.push(char::from(b)),
            _ => {
                out.push('\\');
                out.push_str(&format!("{b:03}"));
            }
        }
    }
}

/// Renders a name in the recorder's text convention but with its case preserved.
pub fn name_to_text(name: &Name) -> String {
    let mut out = String::new();
    for label in name.iter() {
        if !out.is_empty() {
            out.push('.');
        }
        push_label(&mut out, label);
    }
    if out.is_empty() {
        out.push('.');
    }
    out
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
    Some(name_to_text(&name))
}

// ---------------------------------------------------------------------------------------------
// DataFusion glue.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    RegisteredDomain,
    Subdomain,
    LabelCount,
    NameLength,
    MaxLabelLen,
    LabelEntropy,
    LabelAlphabet,
    InfoContent,
    AnswerStrings,
    AnswerData,
    QuestionName,
}

impl Kind {
    /// (syntax, description) for `--help` and `information_schema`.
    fn doc(self) -> (&'static str, &'static str) {
        match self {
            Kind::RegisteredDomain => (
                "registered_domain(name)",
                "registrable domain (eTLD+1, Public Suffix List); NULL for public suffixes and single labels",
            ),
            Kind::Subdomain => (
                "subdomain(name)",
                "the labels left of the registered domain ('' for the registered domain itself)",
            ),
            Kind::LabelCount => ("label_count(name)", "number of labels"),
            Kind::NameLength => ("name_length(name)", "length in octets (labels plus dots)"),
            Kind::MaxLabelLen => ("max_label_len(name)", "longest label, in octets"),
            Kind::LabelEntropy => (
                "label_entropy(name)",
                "Shannon entropy (bits/char) of the labels left of the registered domain",
            ),
            Kind::LabelAlphabet => (
                "label_alphabet(name)",
                "hex, base32, base64, 8bit or dns: the encoding those labels look like",
            ),
            Kind::InfoContent => (
                "info_content(list)",
                "zlib-compressed length of the distinct strings (Elastic ML's information content)",
            ),
            Kind::AnswerStrings => (
                "answer_strings(answers)",
                "the answers as 'TYPE data' texts",
            ),
            Kind::AnswerData => ("answer_data(answers)", "the answers' data texts"),
            Kind::QuestionName => (
                "question_name(query_raw)",
                "the question name decoded from a raw message, case preserved",
            ),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::RegisteredDomain => "registered_domain",
            Kind::Subdomain => "subdomain",
            Kind::LabelCount => "label_count",
            Kind::NameLength => "name_length",
            Kind::MaxLabelLen => "max_label_len",
            Kind::LabelEntropy => "label_entropy",
            Kind::LabelAlphabet => "label_alphabet",
            Kind::InfoContent => "info_content",
            Kind::AnswerStrings => "answer_strings",
            Kind::AnswerData => "answer_data",
            Kind::QuestionName => "question_name",
        }
    }
}

#[derive(Debug)]
struct DnsFn {
    kind: Kind,
    signature: Signature,
    doc: Documentation,
}

impl PartialEq for DnsFn {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Eq for DnsFn {}

impl Hash for DnsFn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
    }
}

impl DnsFn {
    fn new(kind: Kind) -> Self {
        let signature = match kind {
            Kind::InfoContent | Kind::AnswerStrings | Kind::AnswerData | Kind::QuestionName => {
                Signature::any(1, Volatility::Immutable)
            }
            _ => Signature::string(1, Volatility::Immutable),
        };
        let (syntax, description) = kind.doc();
        let section = DocSection {
            include: true,
            label: "DNS name functions (dnsql)",
            description: None,
        };
        let doc = Documentation::builder(section, description, syntax).build();
        DnsFn {
            kind,
            signature,
            doc,
        }
    }
}

fn utf8_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

impl ScalarUDFImpl for DnsFn {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&self.doc)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let name = self.kind.name();
        let arg = arg_types.first();
        let is_list = matches!(
            arg,
            Some(DataType::List(_) | DataType::LargeList(_) | DataType::Null)
        );
        match self.kind {
            Kind::InfoContent | Kind::AnswerStrings | Kind::AnswerData if !is_list => {
                return plan_err!("{name}() takes a list, got {arg:?}");
            }
            Kind::QuestionName
                if !matches!(
                    arg,
                    Some(
                        DataType::Binary
                            | DataType::LargeBinary
                            | DataType::BinaryView
                            | DataType::Null
                    )
                ) =>
            {
                return plan_err!("{name}() takes a binary DNS message, got {arg:?}");
            }
            _ => {}
        }
        Ok(match self.kind {
            Kind::RegisteredDomain | Kind::Subdomain | Kind::LabelAlphabet | Kind::QuestionName => {
                DataType::Utf8
            }
            Kind::LabelCount | Kind::NameLength | Kind::MaxLabelLen | Kind::InfoContent => {
                DataType::Int64
            }
            Kind::LabelEntropy => DataType::Float64,
            Kind::AnswerStrings | Kind::AnswerData => utf8_list(),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(input) = arrays.first() else {
            return exec_err!("{}() takes one argument", self.kind.name());
        };
        let out = match self.kind {
            Kind::InfoContent => info_content_array(input)?,
            Kind::AnswerStrings => answers_array(input, true)?,
            Kind::AnswerData => answers_array(input, false)?,
            Kind::QuestionName => question_name_array(input)?,
            _ => name_array(self.kind, input)?,
        };
        if all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

fn name_array(kind: Kind, input: &ArrayRef) -> Result<ArrayRef> {
    let strings = cast(input, &DataType::Utf8)?;
    let strings = strings.as_string::<i32>();
    let out: ArrayRef = match kind {
        Kind::RegisteredDomain | Kind::Subdomain | Kind::LabelAlphabet => {
            let mut b = StringBuilder::with_capacity(strings.len(), strings.len() * 16);
            for v in strings.iter() {
                match v {
                    None => b.append_null(),
                    Some(name) => match kind {
                        Kind::RegisteredDomain => b.append_option(registered_domain_of(name)),
                        Kind::Subdomain => b.append_option(subdomain_of(name)),
                        _ => b.append_value(label_alphabet_of(name)),
                    },
                }
            }
            Arc::new(b.finish())
        }
        Kind::LabelCount | Kind::NameLength | Kind::MaxLabelLen => {
            let mut b = Int64Builder::with_capacity(strings.len());
            for v in strings.iter() {
                b.append_option(v.map(|name| {
                    let n = match kind {
                        Kind::LabelCount => label_count_of(name),
                        Kind::NameLength => name_length_of(name),
                        _ => max_label_len_of(name),
                    };
                    i64::try_from(n).unwrap_or(i64::MAX)
                }));
            }
            Arc::new(b.finish())
        }
        Kind::LabelEntropy => {
            let mut b = Float64Builder::with_capacity(strings.len());
            for v in strings.iter() {
                b.append_option(v.map(label_entropy_of));
            }
            Arc::new(b.finish())
        }
        _ => return exec_err!("{} is not a name function", kind.name()),
    };
    Ok(out)
}

/// Casts any list array to `List<Utf8>`-compatible form and hands out the rows.
fn list_rows(input: &ArrayRef, inner: DataType) -> Result<ArrayRef> {
    let target = DataType::List(Arc::new(Field::new("item", inner, true)));
    if matches!(input.data_type(), DataType::Null) {
        return Ok(datafusion::arrow::array::new_null_array(
            &target,
            input.len(),
        ));
    }
    Ok(cast(input, &target)?)
}

fn info_content_array(input: &ArrayRef) -> Result<ArrayRef> {
    let lists = list_rows(input, DataType::Utf8)?;
    let lists = lists.as_list::<i32>();
    let mut b = Int64Builder::with_capacity(lists.len());
    for row in lists.iter() {
        match row {
            None => b.append_null(),
            Some(values) => {
                let values = values.as_string::<i32>();
                let n = info_content_of(values.iter().flatten());
                b.append_value(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }
    Ok(Arc::new(b.finish()))
}

fn answers_array(input: &ArrayRef, with_type: bool) -> Result<ArrayRef> {
    let mut b = ListBuilder::new(StringBuilder::new());
    if matches!(input.data_type(), DataType::Null) {
        for _ in 0..input.len() {
            b.append_null();
        }
        return Ok(Arc::new(b.finish()));
    }
    let lists = match input.data_type() {
        DataType::LargeList(f) => cast(
            input,
            &DataType::List(Arc::new(f.as_ref().clone().with_name("item"))),
        )?,
        _ => Arc::clone(input),
    };
    let lists = lists.as_list::<i32>();
    for row in lists.iter() {
        let Some(values) = row else {
            b.append_null();
            continue;
        };
        let Some(structs) = values.as_struct_opt() else {
            return exec_err!("answer_strings() takes a list of answer structs");
        };
        let column = |name: &str| -> Result<Option<ArrayRef>> {
            match structs.column_by_name(name) {
                Some(c) => Ok(Some(cast(c, &DataType::Utf8)?)),
                None => Ok(None),
            }
        };
        let data = column("data")?;
        let rtype = column("type")?;
        let Some(data) = data else {
            return exec_err!("answer structs have no `data` field");
        };
        let data = data.as_string::<i32>();
        let rtype = rtype.as_ref().map(|a| a.as_string::<i32>());
        for i in 0..structs.len() {
            if structs.is_null(i) {
                continue;
            }
            let d = if data.is_null(i) { "" } else { data.value(i) };
            match (with_type, rtype) {
                (true, Some(t)) if !t.is_null(i) => {
                    b.values().append_value(format!("{} {d}", t.value(i)));
                }
                _ => b.values().append_value(d),
            }
        }
        b.append(true);
    }
    Ok(Arc::new(b.finish()))
}

fn question_name_array(input: &ArrayRef) -> Result<ArrayRef> {
    let mut b = StringBuilder::new();
    if matches!(input.data_type(), DataType::Null) {
        for _ in 0..input.len() {
            b.append_null();
        }
        return Ok(Arc::new(b.finish()));
    }
    let bin = cast(input, &DataType::Binary)?;
    let bin = bin.as_binary::<i32>();
    for v in bin.iter() {
        b.append_option(v.and_then(question_name_of));
    }
    Ok(Arc::new(b.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_domains() {
        let rd = registered_domain_of;
        assert_eq!(rd("www.example.co.uk").as_deref(), Some("example.co.uk"));
        assert_eq!(rd("WWW.Example.COM.").as_deref(), Some("example.com"));
        assert_eq!(rd("upload.wikimedia.org").as_deref(), Some("wikimedia.org"));
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
        assert_eq!(rd("co.uk"), None);
        assert_eq!(rd("com"), None);
        assert_eq!(rd("wpad"), None);
        assert_eq!(rd("."), None);
        assert_eq!(rd(""), None);
        // The registrable label itself must be a host-name label.
        assert_eq!(rd("x.b=d.com"), None);
        // An escaped dot is part of a label, not a separator.
        assert_eq!(rd(r"a.ex\.ample.com"), None);
        assert_eq!(rd(r"a\.b.example.com").as_deref(), Some("example.com"));
    }

    #[test]
    fn subdomains() {
        assert_eq!(subdomain_of("a.b.example.co.uk").as_deref(), Some("a.b"));
        assert_eq!(subdomain_of("example.co.uk").as_deref(), Some(""));
        assert_eq!(
            subdomain_of("aaaaao1kqa.=auth.srv.tunnel.com").as_deref(),
            Some("aaaaao1kqa.=auth.srv")
        );
        assert_eq!(subdomain_of("com"), None);
        assert_eq!(subdomain_of(r"a\.b.example.com").as_deref(), Some(r"a\.b"));
    }

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

    #[tokio::test]
    async fn functions_in_sql() {
        use crate::testutil::rows;
        let ctx = SessionContext::new();
        register_all(&ctx);
        let r = rows(
            &ctx,
            "SELECT registered_domain('A.B.Example.co.uk.'), subdomain('a.b.example.co.uk'), \
             label_count('a.b.example.co.uk'), name_length('www.example.com'), \
             max_label_len('www.example.com'), round(label_entropy('ab.example.com'), 3), \
             label_alphabet('MFRGGZDFMZTWQ2LKNNWG23TP.example.com'), \
             info_content(make_array('b', 'a', 'b')) = info_content(make_array('a', 'b')), \
             registered_domain(NULL), label_alphabet(arrow_cast('x.com', 'Utf8View'))",
        )
        .await;
        let want = [
            "example.co.uk",
            "a.b",
            "5",
            "15",
            "7",
            "1.0",
            "base32",
            "true",
        ];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(r[0][i].as_deref(), Some(*w), "column {i}");
        }
        assert_eq!(r[0][8], None);
        assert_eq!(r[0][9].as_deref(), Some("dns"));
        let help = functions_help();
        assert_eq!(help.lines().count(), udfs().len());
        assert!(help.contains("label_entropy(name)"));
        // Wrong argument types are plan errors, not panics.
        assert!(ctx.sql("SELECT info_content('x')").await.is_err());
        assert!(ctx.sql("SELECT question_name('x')").await.is_err());
    }

    #[tokio::test]
    async fn functions_agree_with_the_recorder_on_the_fixtures() {
        use crate::testutil::{count, fixtures, rows};
        let ctx = fixtures().await;
        // Same Public Suffix List answer wherever the recorder gave one.
        let differ = count(
            &ctx,
            "SELECT count(*) FROM dns WHERE registered_domain IS NOT NULL \
             AND registered_domain(qname) <> registered_domain",
        )
        .await;
        assert_eq!(differ, 0);
        // The raw question, lower-cased, is the qname column.
        let differ = count(
            &ctx,
            "SELECT count(*) FROM dns WHERE query_raw IS NOT NULL \
             AND lower(question_name(query_raw)) <> qname",
        )
        .await;
        assert_eq!(differ, 0);
        let decoded = count(
            &ctx,
            "SELECT count(*) FROM dns WHERE question_name(query_raw) IS NOT NULL",
        )
        .await;
        assert!(decoded > 500, "{decoded}");
        // Answers as text.
        let r = rows(
            &ctx,
            "SELECT answer_strings(answers), answer_data(answers) FROM dns \
             WHERE qname = 'www.netbsd.org' AND qtype_name = 'A' AND status = 'answered' LIMIT 1",
        )
        .await;
        assert_eq!(r[0][0].as_deref(), Some("[A 204.152.190.12]"));
        assert_eq!(r[0][1].as_deref(), Some("[204.152.190.12]"));
    }
}
