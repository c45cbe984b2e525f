//! The DataFusion side of the SQL functions: one [`ScalarUDFImpl`] per function over the pure
//! functions of [`super::names`] and `dnsledger_schema::dnstext`, their signatures, return
//! types and `--help` lines, and [`register_all`].

use std::hash::{Hash, Hasher};
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
use dnsledger_schema::dnstext::{registered_domain, subdomain};

use super::names::{
    info_content_of, label_alphabet_of, label_count_of, label_entropy_of, max_label_len_of,
    name_length_of, question_name_of,
};

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
                        Kind::RegisteredDomain => b.append_option(registered_domain(name)),
                        Kind::Subdomain => b.append_option(subdomain(name)),
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
