//! Measures compaction's choices (bench/README.md, "Compaction"): for one hour of one host
//! (a `bench_gen` segment), the sort key and row-group size of the compacted segment against
//! file size and the row groups that survive statistics and bloom-filter pruning for point
//! lookups; and writes the hour as twelve five-minute recorder segments and as one compacted
//! segment into two data directories, for timing `dnsql` over each.
//!
//! ```sh
//! target/debug/examples/bench_gen --rows 1200000 --hosts 1 --days 1 --segment-secs 0 --out /tmp/gen
//! target/debug/examples/compact_measure /tmp/gen/segments/host=…/date=…/hour=12/*.parquet /tmp/cm
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use arrow_array::{Array, RecordBatch, StringArray, TimestampNanosecondArray};
use bytes::Bytes;
use dnsledger::store::compact::{SortKey, compact_bytes};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::data_type::ByteArray;
use parquet::file::properties::ReaderProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::serialized_reader::ReadOptionsBuilder;
use parquet::file::statistics::Statistics;

fn strings(batches: &[RecordBatch], col: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        if let Some(a) = b
            .column_by_name(col)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        {
            out.extend(
                (0..a.len())
                    .filter(|i| a.is_valid(*i))
                    .map(|i| a.value(i).to_string()),
            );
        }
    }
    out
}

/// Row groups (of all) that statistics and bloom filters cannot rule out for `col = value`.
fn surviving(bytes: &Bytes, col: &str, value: &str) -> Result<(usize, usize)> {
    let opts = ReadOptionsBuilder::new()
        .with_reader_properties(
            ReaderProperties::builder()
                .set_read_bloom_filter(true)
                .build(),
        )
        .build();
    let r = SerializedFileReader::new_with_options(bytes.clone(), opts)?;
    let md = r.metadata();
    let idx = md
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == col)
        .context("column")?;
    let v = ByteArray::from(value);
    let mut keep = 0;
    for i in 0..md.num_row_groups() {
        let by_stats = match md.row_group(i).column(idx).statistics() {
            Some(Statistics::ByteArray(s)) => match (s.min_opt(), s.max_opt()) {
                (Some(min), Some(max)) => min.data() <= v.data() && v.data() <= max.data(),
                _ => true,
            },
            _ => true,
        };
        let rg = r.get_row_group(i)?;
        let by_bloom = rg.get_column_bloom_filter(idx).is_none_or(|b| b.check(&v));
        if by_stats && by_bloom {
            keep += 1;
        }
    }
    Ok((keep, md.num_row_groups()))
}

fn main() -> Result<()> {
    // HOUR.parquet… OUT: several hours may be given, to measure a busier hour (their rows are
    // treated as one hour's, split into twelve equal pieces in `ts` order).
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(
        args.pop()
            .context("usage: compact_measure HOUR.parquet… OUT")?,
    );
    let inputs: Vec<PathBuf> = args.iter().map(PathBuf::from).collect();
    let input = inputs.first().context("no input")?.clone();
    let mut batches: Vec<RecordBatch> = Vec::new();
    for f in &inputs {
        let bytes = Bytes::from(std::fs::read(f)?);
        batches.extend(
            ParquetRecordBatchReaderBuilder::try_new(bytes)?
                .build()?
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let all = arrow_select::concat::concat_batches(&batches[0].schema(), &batches)?;
    let _ = TimestampNanosecondArray::from(Vec::<i64>::new());
    // Twelve recorder segments (sorted by ts, the recorder's properties).
    let mut pieces = Vec::new();
    let per = all.num_rows().div_ceil(12);
    for k in 0..12 {
        let start = k * per;
        if start >= all.num_rows() {
            break;
        }
        let piece = all.slice(start, per.min(all.num_rows() - start));
        let seg = compact_bytes(
            "bench-host-00",
            vec![(format!("in{k}.parquet"), bytes_of(&piece)?)],
            SortKey::Time,
            128 * 1024,
        )?;
        pieces.push((format!("piece-{k:02}.parquet"), Bytes::from(seg)));
    }
    let pieces_size: usize = pieces.iter().map(|p| p.1.len()).sum();
    // Lookup values: the most common, a median and a rare name/domain.
    let pick = |col: &str| -> Vec<String> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for s in strings(&batches, col) {
            *counts.entry(s).or_default() += 1;
        }
        let mut v: Vec<(usize, String)> = counts.into_iter().map(|(k, n)| (n, k)).collect();
        v.sort();
        vec![
            v[v.len() - 1].1.clone(),
            v[v.len() / 2].1.clone(),
            v[0].1.clone(),
        ]
    };
    let qnames = pick("qname");
    let domains = pick("registered_domain");
    println!("rows {rows}; 12 segments: {pieces_size} bytes");
    for (name, b) in pieces.iter().take(1) {
        let (k, n) = surviving(b, "qname", &qnames[0])?;
        println!("  {name}: qname (top) {k}/{n} row groups");
    }
    let mut piece_survivors = [0usize; 6];
    let mut piece_total = 0;
    for (_, b) in &pieces {
        for (j, (col, v)) in qnames
            .iter()
            .map(|v| ("qname", v))
            .chain(domains.iter().map(|v| ("registered_domain", v)))
            .enumerate()
        {
            let (k, n) = surviving(b, col, v)?;
            piece_survivors[j] += k;
            if j == 0 {
                piece_total += n;
            }
        }
    }
    println!(
        "| 12 x 5 min, ts | 128K | {pieces_size} | {piece_total} | {} |",
        piece_survivors.map(|k| k.to_string()).join(" | ")
    );
    let mut chosen = None;
    for (key, rg) in [
        (SortKey::Time, 128 * 1024),
        (SortKey::Qname, 128 * 1024),
        (SortKey::Domain, 128 * 1024),
        (SortKey::Domain, 64 * 1024),
        (SortKey::Domain, 32 * 1024),
        (SortKey::Domain, 16 * 1024),
        (SortKey::Qname, 32 * 1024),
        (SortKey::Time, 32 * 1024),
    ] {
        let t = Instant::now();
        let out_bytes = Bytes::from(compact_bytes("bench-host-00", pieces.clone(), key, rg)?);
        let secs = t.elapsed().as_secs_f64();
        let mut cells = Vec::new();
        let mut total = 0;
        for (col, v) in qnames
            .iter()
            .map(|v| ("qname", v))
            .chain(domains.iter().map(|v| ("registered_domain", v)))
        {
            let (k, n) = surviving(&out_bytes, col, v)?;
            total = n;
            cells.push(k.to_string());
        }
        println!(
            "| compacted, {key:?} | {}K | {} | {total} | {} | ({secs:.2} s)",
            rg / 1024,
            out_bytes.len(),
            cells.join(" | ")
        );
        if key == dnsledger::store::compact::SORT_KEY
            && rg == dnsledger::store::compact::COMPACT_ROW_GROUP_ROWS
        {
            chosen = Some(out_bytes);
        }
    }
    // Two data directories for dnsql timings.
    let part = input
        .parent()
        .and_then(|p| p.strip_prefix(input.ancestors().nth(4)?).ok())
        .context("partition")?
        .to_path_buf();
    let a = out.join("twelve/segments").join(&part);
    std::fs::create_dir_all(&a)?;
    for (name, b) in &pieces {
        std::fs::write(a.join(name), b)?;
    }
    let b = out.join("compacted/segments").join(&part);
    std::fs::create_dir_all(&b)?;
    std::fs::write(b.join("compacted.parquet"), chosen.context("chosen")?)?;
    println!("lookups: qname {qnames:?}, registered_domain {domains:?}");
    Ok(())
}

fn bytes_of(batch: &RecordBatch) -> Result<Bytes> {
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None)?;
    w.write(batch)?;
    w.close()?;
    Ok(Bytes::from(buf))
}
