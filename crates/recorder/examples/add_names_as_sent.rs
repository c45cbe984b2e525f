//! Rewrites segments written before `qname_case` existed with the names as sent filled in from
//! their raw messages, exactly as the recorder fills them (the same parser, the same rule: the
//! query's question if its name was read, else the response's). Row groups, key-value metadata
//! and the file name stay as they were. Used once for `testdata/segments`, whose file layout
//! the tests depend on; segments recorded with `--no-raw` have nothing to take the case from.
//!
//! ```sh
//! target/debug/examples/add_names_as_sent testdata/segments
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use dnsledger::dns;
use dnsledger_schema::{col, schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;

fn segments(root: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
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

/// (qname_case, questions_case) of one row, as the pairer computes them.
fn case_of(query: Option<&[u8]>, response: Option<&[u8]>) -> (Option<String>, Option<Vec<String>>) {
    let mut q = query.map(dns::parse);
    let mut r = response.map(dns::parse);
    let src = match (&mut q, &mut r) {
        (Some(q), _) if q.qname.is_some() => Some(q),
        (_, Some(r)) if r.qname.is_some() => Some(r),
        (Some(q), _) => Some(q),
        (None, Some(r)) => Some(r),
        (None, None) => None,
    };
    match src {
        Some(d) => d.take_case_columns(),
        None => (None, None),
    }
}

fn with_case(b: &RecordBatch) -> Result<RecordBatch> {
    let raw = |n: &str| -> Result<_> {
        Ok(b.column_by_name(n)
            .with_context(|| format!("no column {n}"))?
            .as_binary::<i32>()
            .clone())
    };
    let (query, response) = (raw(col::QUERY_RAW)?, raw(col::RESPONSE_RAW)?);
    let mut first = StringBuilder::new();
    let mut all = ListBuilder::new(StringBuilder::new());
    for i in 0..b.num_rows() {
        let (f, a) = case_of(
            query.is_valid(i).then(|| query.value(i)),
            response.is_valid(i).then(|| response.value(i)),
        );
        first.append_option(f);
        match a {
            Some(names) => {
                for n in names {
                    all.values().append_value(n);
                }
                all.append(true);
            }
            None => all.append(false),
        }
    }
    let mut columns: Vec<ArrayRef> = Vec::new();
    for f in schema().fields() {
        let c = match f.name().as_str() {
            col::QNAME_CASE => Arc::new(first.finish()) as ArrayRef,
            col::QUESTIONS_CASE => Arc::new(all.finish()) as ArrayRef,
            n => b
                .column_by_name(n)
                .with_context(|| format!("no column {n}"))?
                .clone(),
        };
        columns.push(c);
    }
    Ok(RecordBatch::try_new(schema(), columns)?)
}

fn rewrite(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    if builder.schema().field_with_name(col::QNAME_CASE).is_ok() {
        bail!("{} already has {}", path.display(), col::QNAME_CASE);
    }
    let md = builder.metadata().clone();
    let kv: Vec<KeyValue> = md
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter(|k| k.key != "ARROW:schema")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let props = dnsledger::store::segment::writer_properties()?;
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema(), Some(props))?;
    for rg in 0..md.num_row_groups() {
        let file = std::fs::File::open(path)?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
            .with_row_groups(vec![rg])
            .build()?;
        for batch in reader {
            w.write(&with_case(&batch?)?)?;
        }
        // One row group out per row group in.
        w.flush()?;
    }
    for k in kv {
        w.append_key_value_metadata(k);
    }
    w.close()?;
    let tmp = path.with_extension("parquet.tmp");
    std::fs::write(&tmp, &out)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn main() -> Result<()> {
    let mut files = Vec::new();
    for a in std::env::args_os().skip(1) {
        segments(Path::new(&a), &mut files)?;
    }
    if files.is_empty() {
        bail!("no segments given\nhint: add_names_as_sent DIR…");
    }
    for f in &files {
        rewrite(f).with_context(|| format!("rewrite {}", f.display()))?;
        println!("{}", f.display());
    }
    Ok(())
}
