//! Rewrites segments written before some columns of the schema existed, adding each missing
//! column as NULL (what a segment written today holds there for rows the feature did not
//! touch, e.g. the requester-behind-a-stub columns of an import). Row groups, key-value
//! metadata and the file name stay as they were. Used for `testdata/segments`, whose file
//! layout the tests depend on, when a column is added (`requester_pids`, `requester_comms`,
//! `requester_exes`, `stub_cache`); run it again after a rebase that adds others.
//!
//! ```sh
//! target/debug/examples/add_missing_columns testdata/segments
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use dnsledger_schema::schema;
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

fn with_missing(b: &RecordBatch) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::new();
    for f in schema().fields() {
        columns.push(match b.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => new_null_array(f.data_type(), b.num_rows()),
        });
    }
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// Adds the missing columns; false when the file has them all already.
fn rewrite(path: &Path) -> Result<bool> {
    let file = std::fs::File::open(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let missing = schema()
        .fields()
        .iter()
        .filter(|f| builder.schema().field_with_name(f.name()).is_err())
        .count();
    if missing == 0 {
        return Ok(false);
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
            w.write(&with_missing(&batch?)?)?;
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
    Ok(true)
}

fn main() -> Result<()> {
    let mut files = Vec::new();
    for a in std::env::args_os().skip(1) {
        segments(Path::new(&a), &mut files)?;
    }
    if files.is_empty() {
        bail!("no segments given\nhint: add_missing_columns DIR…");
    }
    for f in &files {
        if rewrite(f).with_context(|| format!("rewrite {}", f.display()))? {
            println!("{}", f.display());
        }
    }
    Ok(())
}
