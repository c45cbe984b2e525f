//! Measures what keeping question names as sent costs (README, "Names as sent"): every segment
//! given is rewritten with the recorder's writer properties three ways, and the bytes per
//! transaction compared:
//!
//! - `none`: without the names as sent (the schema before `qname_case`);
//! - `null-when-equal` (what the recorder writes): `qname_case`, NULL unless the name has an
//!   upper-case letter, and `questions_case`, NULL unless a message of several questions has one;
//! - `duplicate`: a `qname_sent` column always filled and a `questions_sent` list of every
//!   question's name as sent, in place of the two above.
//!
//! ```sh
//! target/debug/dnsledger import --no-raw --data-dir /tmp/pcaps testdata/pcap/*.pcap
//! target/debug/examples/names_measure /tmp/pcaps/segments
//! target/debug/examples/names_measure --one /tmp/pcaps/segments   # all rows as one segment
//! ```
//!
//! `--one` writes all the rows given as one segment, which leaves out the per-file cost (each
//! column's chunk metadata and statistics in every footer) that small segments pay.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use dnsledger_schema::col;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};

fn segments(root: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if root.is_file() {
        out.push(root.to_path_buf());
        return Ok(());
    }
    for e in std::fs::read_dir(root).with_context(|| format!("read {}", root.display()))? {
        let p = e?.path();
        if p.is_dir() {
            segments(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    Ok(())
}

/// The first question's name as sent and every question's, always filled (design `duplicate`).
fn duplicate_columns(b: &RecordBatch) -> Result<(ArrayRef, ArrayRef)> {
    let get = |n: &str| {
        b.column_by_name(n)
            .with_context(|| format!("no column {n}"))
    };
    let qname = get(col::QNAME)?.as_string::<i32>();
    let case = get(col::QNAME_CASE)?.as_string::<i32>();
    let questions = get(col::QUESTIONS)?.as_list::<i32>();
    let qcase = get(col::QUESTIONS_CASE)?.as_list::<i32>();
    let mut sent = StringBuilder::new();
    let mut list = ListBuilder::new(StringBuilder::new());
    for i in 0..b.num_rows() {
        if case.is_valid(i) {
            sent.append_value(case.value(i));
        } else {
            sent.append_option(qname.is_valid(i).then(|| qname.value(i)));
        }
        if qcase.is_valid(i) {
            let v = qcase.value(i);
            let s = v.as_string::<i32>();
            for j in 0..s.len() {
                list.values().append_value(s.value(j));
            }
            list.append(true);
        } else if questions.is_valid(i) {
            let v = questions.value(i);
            let names = v.as_struct().column(0).as_string::<i32>();
            for j in 0..names.len() {
                // One question: its name as sent is the first question's.
                if names.len() == 1 && case.is_valid(i) {
                    list.values().append_value(case.value(i));
                } else {
                    list.values().append_value(names.value(j));
                }
            }
            list.append(true);
        } else {
            list.append(false);
        }
    }
    Ok((Arc::new(sent.finish()), Arc::new(list.finish())))
}

fn without_case(b: &RecordBatch) -> Result<(Vec<Arc<Field>>, Vec<ArrayRef>)> {
    let mut fields = Vec::new();
    let mut cols = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if f.name() != col::QNAME_CASE && f.name() != col::QUESTIONS_CASE {
            fields.push(f.clone());
            cols.push(c.clone());
        }
    }
    Ok((fields, cols))
}

/// Writes `batches` as one segment; returns (file bytes, bytes of each named column's chunks).
fn write(batches: &[RecordBatch], measure: &[&str]) -> Result<(u64, Vec<u64>)> {
    let Some(first) = batches.first() else {
        bail!("no batches")
    };
    let mut buf = Vec::new();
    let props = dnsledger::store::segment::writer_properties()?;
    let mut w = ArrowWriter::try_new(&mut buf, first.schema(), Some(props))?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    let len = buf.len() as u64;
    let r = SerializedFileReader::new(Bytes::from(buf))?;
    let md = r.metadata();
    let mut sizes = vec![0u64; measure.len()];
    for rg in md.row_groups() {
        for c in rg.columns() {
            let path = c.column_path().string();
            for (k, m) in measure.iter().enumerate() {
                if path == *m || path.starts_with(&format!("{m}.")) {
                    sizes[k] += c.compressed_size() as u64;
                }
            }
        }
    }
    Ok((len, sizes))
}

fn main() -> Result<()> {
    let mut files = Vec::new();
    let mut one = false;
    for a in std::env::args_os().skip(1) {
        if a == "--one" {
            one = true;
            continue;
        }
        segments(Path::new(&a), &mut files)?;
    }
    if files.is_empty() {
        bail!("no segments given\nhint: names_measure DIR|FILE.parquet…");
    }
    let (mut rows, mut cased, mut multi_cased) = (0u64, 0u64, 0u64);
    let (mut none, mut nulled, mut dup) = (0u64, 0u64, 0u64);
    let (mut nulled_cols, mut dup_cols, mut qname_col) = ([0u64; 2], [0u64; 2], 0u64);
    let mut units: Vec<(String, Vec<RecordBatch>)> = Vec::new();
    for f in &files {
        let file = std::fs::File::open(f).with_context(|| format!("open {}", f.display()))?;
        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)?
            .build()?
            .collect::<Result<_, _>>()?;
        match units.last_mut() {
            Some((_, all)) if one => all.extend(batches),
            _ => units.push((f.display().to_string(), batches)),
        }
    }
    for (f, batches) in &units {
        if batches.is_empty() {
            continue;
        }
        let mut base = Vec::new();
        let mut full = Vec::new();
        for b in batches {
            rows += b.num_rows() as u64;
            let case = b
                .column_by_name(col::QNAME_CASE)
                .with_context(|| format!("{f}: no qname_case (an older segment)"))?;
            cased += (case.len() - case.null_count()) as u64;
            if let Some(q) = b.column_by_name(col::QUESTIONS_CASE) {
                multi_cased += (q.len() - q.null_count()) as u64;
            }
            let (fields, cols) = without_case(b)?;
            base.push(RecordBatch::try_new(
                Arc::new(Schema::new(fields.clone())),
                cols.clone(),
            )?);
            let (sent, list) = duplicate_columns(b)?;
            let mut fields = fields;
            let mut cols = cols;
            fields.push(Arc::new(Field::new("qname_sent", DataType::Utf8, true)));
            fields.push(Arc::new(Field::new(
                "questions_sent",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            )));
            cols.push(sent);
            cols.push(list);
            full.push(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?);
        }
        let (n, q) = write(&base, &[col::QNAME])?;
        none += n;
        qname_col += q[0];
        let (n, s) = write(batches, &[col::QNAME_CASE, col::QUESTIONS_CASE])?;
        nulled += n;
        nulled_cols[0] += s[0];
        nulled_cols[1] += s[1];
        let (n, s) = write(&full, &["qname_sent", "questions_sent"])?;
        dup += n;
        dup_cols[0] += s[0];
        dup_cols[1] += s[1];
    }
    let per = |b: u64| b as f64 / rows.max(1) as f64;
    println!(
        "{} segment(s) written as {}, {rows} transactions, {cased} with a name sent in upper/mixed case \
         ({:.2} %), {multi_cased} with several questions and upper case",
        files.len(),
        units.len(),
        100.0 * cased as f64 / rows.max(1) as f64
    );
    println!("qname column chunks: {:.2} B/transaction", per(qname_col));
    println!("design            file B/tx  delta B/tx  first-name column  list column");
    println!("none              {:>9.2}  {:>10}", per(none), "-");
    println!(
        "null-when-equal   {:>9.2}  {:>+10.2}  {:>17.2}  {:>11.2}",
        per(nulled),
        per(nulled) - per(none),
        per(nulled_cols[0]),
        per(nulled_cols[1])
    );
    println!(
        "duplicate         {:>9.2}  {:>+10.2}  {:>17.2}  {:>11.2}",
        per(dup),
        per(dup) - per(none),
        per(dup_cols[0]),
        per(dup_cols[1])
    );
    Ok(())
}
