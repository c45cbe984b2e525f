//! The columns segments store only where they are not derivable (schema version 2,
//! `dnsledger_schema::derived`), computed back in `dns_all` (and so in `dns`):
//! `coalesce(stored, derived)` per row, so a segment of version 1, which stores every value,
//! reads its stored values, and one of version 2 the same values computed.
//!
//! `query_ts` and `latency_ns` are plain expressions; `answer_ips` and `questions` are two
//! internal functions (not registered: DataFusion has no list lambdas to write them in SQL)
//! that apply the same rules as the recorder's writer, from `dnsledger_schema::derived`.
//!
//! Schema version 3 stores raw messages with their ID XORed out in `query_raw_x` and
//! `response_raw_x` (`dnsledger_schema::derived::RAW_XOR`): `query_raw` and `response_raw`
//! are computed as `coalesce(stored, restored)` by a third internal function, and the `_x`
//! columns are not in the table (`derived::FILE_ONLY`).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, ListBuilder, StringBuilder, StructBuilder,
    UInt16Builder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Fields};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
    cast as cast_expr, col, lit, when,
};
use datafusion::prelude::DataFrame;
use dnsledger_schema::{col as c, derived, status};

/// `view` with the derived columns computed over the stored ones (each keeps its place).
pub fn with_derived_columns(view: DataFrame) -> Result<DataFrame> {
    let query_ts = datafusion::functions::expr_fn::coalesce(vec![
        col(c::QUERY_TS),
        when(col(c::STATUS).not_eq(lit(status::UNSOLICITED)), col(c::TS)).end()?,
    ]);
    let latency = datafusion::functions::expr_fn::coalesce(vec![
        col(c::LATENCY_NS),
        cast_expr(col(c::RESPONSE_TS), DataType::Int64)
            - cast_expr(query_ts.clone(), DataType::Int64),
    ]);
    let answer_ips = ScalarUDF::new_from_impl(Derive::new(Column::AnswerIps)).call(vec![
        col(c::ANSWER_IPS),
        col(c::STATUS),
        col(c::ANSWERS),
    ]);
    let questions = ScalarUDF::new_from_impl(Derive::new(Column::Questions)).call(vec![
        col(c::QUESTIONS),
        col(c::STATUS),
        col(c::QNAME),
        col(c::QTYPE),
        col(c::QCLASS),
    ]);
    // `latency_ns` reads `query_ts` as stored: computed before `query_ts` is replaced.
    let mut view = view
        .with_column(c::LATENCY_NS, latency)?
        .with_column(c::QUERY_TS, query_ts)?
        .with_column(c::ANSWER_IPS, answer_ips)?
        .with_column(c::QUESTIONS, questions)?;
    for (raw, x) in derived::RAW_XOR {
        // A table over files read with their own (inferred) schema lacks the column when no
        // file has it: the raw bytes are all in `raw` then.
        if view.schema().index_of_column_by_name(None, x).is_none() {
            continue;
        }
        let restored = ScalarUDF::new_from_impl(Derive::new(Column::Raw)).call(vec![
            col(raw),
            col(x),
            col(c::DNS_ID),
        ]);
        view = view.with_column(raw, restored)?;
    }
    view.drop_columns(&derived::FILE_ONLY)
}

/// Which derived list column a [`Derive`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Column {
    /// `(answer_ips, status, answers)`.
    AnswerIps,
    /// `(questions, status, qname, qtype, qclass)`.
    Questions,
    /// `(query_raw, query_raw_x, dns_id)` (or the response's columns).
    Raw,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Derive {
    column: Column,
    signature: Signature,
}

impl Derive {
    fn new(column: Column) -> Self {
        let n = match column {
            Column::AnswerIps | Column::Raw => 3,
            Column::Questions => 5,
        };
        Derive {
            column,
            signature: Signature::any(n, Volatility::Immutable),
        }
    }

    fn output_type(&self) -> Result<DataType> {
        let name = match self.column {
            Column::AnswerIps => c::ANSWER_IPS,
            Column::Questions => c::QUESTIONS,
            Column::Raw => c::QUERY_RAW,
        };
        Ok(dnsledger_schema::schema()
            .field_with_name(name)?
            .data_type()
            .clone())
    }
}

impl ScalarUDFImpl for Derive {
    fn name(&self) -> &str {
        match self.column {
            Column::AnswerIps => "dnsledger_derived_answer_ips",
            Column::Questions => "dnsledger_derived_questions",
            Column::Raw => "dnsledger_restored_raw",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        self.output_type()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let out = match self.column {
            Column::AnswerIps => answer_ips(&arrays, rows)?,
            Column::Questions => questions(&arrays, rows, &self.output_type()?)?,
            Column::Raw => raw(&arrays, rows)?,
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// A (possibly dictionary-encoded, possibly NULL-typed) string column as `Utf8`.
fn utf8(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(cast(a, &DataType::Utf8)?)
}

fn answer_ips(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let [stored, row_status, answers] = args else {
        return exec_err!("answer_ips: three arguments expected");
    };
    let stored = list_of(stored, DataType::Utf8)?;
    let stored = stored.as_list::<i32>();
    let row_status = utf8(row_status)?;
    let row_status = row_status.as_string::<i32>();
    let answers = match answers.data_type() {
        DataType::Null => None,
        _ => Some(answers.as_list::<i32>()),
    };
    let mut b = ListBuilder::new(StringBuilder::new());
    for i in 0..rows {
        if stored.is_valid(i) {
            let ips = stored.value(i);
            let ips = ips.as_string::<i32>();
            for ip in ips.iter() {
                b.values().append_option(ip);
            }
            b.append(true);
            continue;
        }
        let lookup = row_status.is_valid(i) && row_status.value(i) == status::LOOKUP;
        match answers.filter(|a| !lookup && a.is_valid(i)) {
            None => b.append(false),
            Some(a) => {
                let elements = a.value(i);
                let Some(s) = elements.as_struct_opt() else {
                    return exec_err!("answers is not a list of structs");
                };
                let (Some(types), Some(data)) =
                    (s.column_by_name("type"), s.column_by_name("data"))
                else {
                    return exec_err!("answers lacks type or data");
                };
                let (types, data) = (utf8(types)?, utf8(data)?);
                let (types, data) = (types.as_string::<i32>(), data.as_string::<i32>());
                for j in 0..s.len() {
                    if s.is_valid(j)
                        && types.is_valid(j)
                        && derived::is_address_type(types.value(j))
                    {
                        b.values()
                            .append_option(data.is_valid(j).then(|| data.value(j)));
                    }
                }
                b.append(true);
            }
        }
    }
    Ok(Arc::new(b.finish()))
}

/// `coalesce(stored, x with its first two bytes XORed with dns_id)` (a file without the `_x`
/// column reads it as NULL).
fn raw(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let [stored, xored, dns_id] = args else {
        return exec_err!("raw: three arguments expected");
    };
    let stored = cast(stored, &DataType::Binary)?;
    let stored = stored.as_binary::<i32>();
    let xored = cast(xored, &DataType::Binary)?;
    let xored = xored.as_binary::<i32>();
    let dns_id = cast(dns_id, &DataType::UInt16)?;
    let dns_id = dns_id.as_primitive::<datafusion::arrow::datatypes::UInt16Type>();
    let mut b = BinaryBuilder::with_capacity(rows, 0);
    let mut scratch = Vec::new();
    for i in 0..rows {
        if stored.is_valid(i) {
            b.append_value(stored.value(i));
        } else if xored.is_valid(i) && dns_id.is_valid(i) {
            scratch.clear();
            scratch.extend_from_slice(xored.value(i));
            derived::xor_id(&mut scratch, dns_id.value(i));
            b.append_value(&scratch);
        } else {
            b.append_null();
        }
    }
    Ok(Arc::new(b.finish()))
}

/// `a` as `List<inner>` (an all-NULL column of a file without it is typed `Null`).
fn list_of(a: &ArrayRef, inner: DataType) -> Result<ArrayRef> {
    let target = DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new(
        "item", inner, true,
    )));
    Ok(match a.data_type() {
        DataType::Null => datafusion::arrow::array::new_null_array(&target, a.len()),
        _ => Arc::clone(a),
    })
}

fn questions(args: &[ArrayRef], rows: usize, out_type: &DataType) -> Result<ArrayRef> {
    let [stored, row_status, qname, qtype, qclass] = args else {
        return exec_err!("questions: five arguments expected");
    };
    let DataType::List(item) = out_type else {
        return exec_err!("questions is not a list");
    };
    let DataType::Struct(fields) = item.data_type() else {
        return exec_err!("questions is not a list of structs");
    };
    let stored = match stored.data_type() {
        DataType::Null => datafusion::arrow::array::new_null_array(out_type, stored.len()),
        _ => Arc::clone(stored),
    };
    let stored = stored.as_list::<i32>();
    let row_status = utf8(row_status)?;
    let row_status = row_status.as_string::<i32>();
    let qname = utf8(qname)?;
    let qname = qname.as_string::<i32>();
    let qtype = cast(qtype, &DataType::UInt16)?;
    let qtype = qtype.as_primitive::<datafusion::arrow::datatypes::UInt16Type>();
    let qclass = cast(qclass, &DataType::UInt16)?;
    let qclass = qclass.as_primitive::<datafusion::arrow::datatypes::UInt16Type>();
    let mut b = ListBuilder::new(StructBuilder::from_fields(Fields::clone(fields), 0))
        .with_field(Arc::clone(item));
    for i in 0..rows {
        if stored.is_valid(i) {
            let qs = stored.value(i);
            let Some(s) = qs.as_struct_opt() else {
                return exec_err!("questions is not a list of structs");
            };
            let names = utf8(s.column(0))?;
            let names = names.as_string::<i32>();
            let types = cast(s.column(1), &DataType::UInt16)?;
            let types = types.as_primitive::<datafusion::arrow::datatypes::UInt16Type>();
            let classes = cast(s.column(2), &DataType::UInt16)?;
            let classes = classes.as_primitive::<datafusion::arrow::datatypes::UInt16Type>();
            for j in 0..s.len() {
                push_question(b.values(), names.value(j), types.value(j), classes.value(j))?;
            }
            b.append(true);
            continue;
        }
        let lookup = row_status.is_valid(i) && row_status.value(i) == status::LOOKUP;
        if !lookup && qname.is_valid(i) && qtype.is_valid(i) && qclass.is_valid(i) {
            push_question(b.values(), qname.value(i), qtype.value(i), qclass.value(i))?;
            b.append(true);
        } else {
            b.append(false);
        }
    }
    Ok(Arc::new(b.finish()))
}

fn push_question(s: &mut StructBuilder, name: &str, qtype: u16, qclass: u16) -> Result<()> {
    match s.field_builder::<StringBuilder>(0) {
        Some(n) => n.append_value(name),
        None => return exec_err!("questions' first field is not a string"),
    }
    for (i, v) in [(1, qtype), (2, qclass)] {
        match s.field_builder::<UInt16Builder>(i) {
            Some(b) => b.append_value(v),
            None => return exec_err!("questions' field {i} is not a uint16"),
        }
    }
    s.append(true);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;
    use dnsledger_schema::{Answer, Question, Transaction, TransactionBatchBuilder};

    /// Rows written by the version-2 builder read back through the derived columns with every
    /// value, and version-1 rows (everything stored) read unchanged.
    #[tokio::test]
    async fn derived_columns_give_the_written_values() {
        let q = |name: &str, t: u16| Question {
            name: name.into(),
            qtype: t,
            qclass: 1,
        };
        let a = |t: &str, d: &str| Answer {
            name: "a.example".into(),
            rtype: t.into(),
            ttl: 5,
            data: d.into(),
        };
        let base = Transaction {
            ts: 1_000,
            query_ts: Some(1_000),
            response_ts: Some(1_700),
            latency_ns: Some(700),
            status: status::ANSWERED,
            hostname: "h".into(),
            transport: "udp",
            qname: Some("a.example".into()),
            qtype: Some(1),
            qclass: Some(1),
            questions: Some(vec![q("a.example", 1)]),
            answers: Some(vec![a("CNAME", "b.example"), a("A", "192.0.2.1")]),
            answer_ips: Some(vec!["192.0.2.1".into()]),
            dns_id: Some(0x1234),
            query_raw: Some(vec![0x12, 0x34, 1, 0, 0, 1]),
            response_raw: Some(vec![0x12, 0x35, 0x81, 0x80]),
            ..Default::default()
        };
        let rows = [
            base.clone(),
            // Raw bytes stored as they are: no dns_id, a one-byte message.
            Transaction {
                dns_id: None,
                response_raw: Some(vec![9]),
                ..base.clone()
            },
            Transaction {
                questions: Some(vec![q("a.example", 1), q("b.example", 28)]),
                answer_ips: Some(vec![]),
                latency_ns: Some(9),
                ..base.clone()
            },
            Transaction {
                status: status::UNSOLICITED,
                query_ts: None,
                latency_ns: None,
                ..base.clone()
            },
            Transaction {
                status: status::LOOKUP,
                transport: "libc",
                questions: None,
                answers: None,
                answer_ips: Some(vec!["192.0.2.9".into()]),
                ..base.clone()
            },
            Transaction {
                status: status::UNANSWERED,
                response_ts: None,
                latency_ns: None,
                answers: None,
                answer_ips: None,
                qname: None,
                qtype: None,
                qclass: None,
                questions: None,
                ..base.clone()
            },
        ];
        let mut b = TransactionBatchBuilder::new();
        for r in &rows {
            b.append(r);
        }
        let batch = b.finish().expect("batch");
        assert!(
            batch
                .column_by_name(c::LATENCY_NS)
                .expect("column")
                .null_count()
                >= 4,
            "derivable latencies are not stored"
        );
        let ctx = SessionContext::new();
        let df = ctx.read_batch(batch).expect("read");
        let df = with_derived_columns(df).expect("derive");
        let out = datafusion::arrow::compute::concat_batches(
            &df.schema().inner().clone(),
            &df.collect().await.expect("collect"),
        )
        .expect("concat");
        assert_eq!(
            out.schema().fields().len(),
            dnsledger_schema::schema().fields().len() - derived::FILE_ONLY.len()
        );
        for x in derived::FILE_ONLY {
            assert!(out.column_by_name(x).is_none(), "{x} is in the table");
        }
        for (i, r) in rows.iter().enumerate() {
            // Valid exactly where the row has a value (transaction_at alone would derive a
            // NULL again), and then the row's value.
            let valid = |name: &str| out.column_by_name(name).expect("column").is_valid(i);
            assert_eq!(valid(c::QUERY_TS), r.query_ts.is_some(), "row {i}");
            assert_eq!(valid(c::LATENCY_NS), r.latency_ns.is_some(), "row {i}");
            assert_eq!(valid(c::ANSWER_IPS), r.answer_ips.is_some(), "row {i}");
            assert_eq!(valid(c::QUESTIONS), r.questions.is_some(), "row {i}");
            assert_eq!(&dnsledger_schema::transaction_at(&out, i), r, "row {i}");
        }
        // The same computation leaves stored values alone (version 1 segments).
        let mut raw = TransactionBatchBuilder::new();
        raw.append(&base);
        let batch = raw.finish().expect("batch");
        let df = with_derived_columns(ctx.read_batch(batch).expect("read")).expect("derive");
        let out = df.collect().await.expect("collect");
        for f in derived::DERIVED {
            let a = out[0].column_by_name(f).expect("column");
            assert!(a.is_valid(0), "{f}");
        }
        let lat = out[0]
            .column_by_name(c::LATENCY_NS)
            .expect("latency")
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0);
        assert_eq!(lat, 700);
    }
}
