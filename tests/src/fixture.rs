//! Fixtures shared by the unit tests of every crate and the end-to-end suite: a transaction to
//! build test rows from, a batch of them, a Parquet file with metadata, and a file walker.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use dnsledger_schema::{Transaction, TransactionBatchBuilder, status};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

/// 2023-11-14T22:13:20Z in nanoseconds: the time most fixtures start at.
pub const T0: i64 = 1_700_000_000_000_000_000;

/// A UDP/IPv4 query for `qname` at `ts` (ns) from 192.0.2.1:40000 to 192.0.2.53:53 on host
/// `h`, without answer; the base of test rows (`Transaction { pid: Some(7), ..tx(ts, q) }`).
pub fn tx(ts: i64, qname: &str) -> Transaction {
    Transaction {
        ts,
        query_ts: Some(ts),
        status: status::UNANSWERED,
        hostname: Arc::from("h"),
        transport: "udp",
        ip_version: 4,
        client_ip: "192.0.2.1".into(),
        client_port: 40000,
        server_ip: "192.0.2.53".into(),
        server_port: 53,
        qname: Some(qname.into()),
        registered_domain: dnsledger_schema::dnstext::registered_domain(qname),
        ..Default::default()
    }
}

/// One record batch of `rows`, in the segment schema.
pub fn batch(rows: &[Transaction]) -> RecordBatch {
    let mut b = TransactionBatchBuilder::new();
    for t in rows {
        b.append(t);
    }
    b.finish().expect("fixture rows fit the schema")
}

/// Writes `batch` as a Parquet file with key-value metadata `kv` (parent directories created).
pub fn write_parquet(path: &Path, batch: &RecordBatch, kv: &[(&str, &str)]) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("create fixture directory");
    }
    let file = fs::File::create(path).expect("create fixture file");
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(properties(kv))).expect("writer");
    w.write(batch).expect("write fixture batch");
    w.close().expect("close fixture file");
}

/// The same file as [`write_parquet`], in memory.
pub fn parquet_bytes(batch: &RecordBatch, kv: &[(&str, &str)]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w =
        ArrowWriter::try_new(&mut buf, batch.schema(), Some(properties(kv))).expect("writer");
    w.write(batch).expect("write fixture batch");
    w.close().expect("close fixture file");
    buf
}

fn properties(kv: &[(&str, &str)]) -> WriterProperties {
    WriterProperties::builder()
        .set_key_value_metadata(Some(
            kv.iter()
                .map(|(k, v)| KeyValue::new((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ))
        .build()
}

/// Every capture (`.pcap`, `.pcapng`) below `dir`, subfolders included, sorted.
pub fn captures_under(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect()
}

/// Every regular file below `dir` (none when it does not exist), sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_rows_round_trip_through_parquet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = [tx(T0, "www.example.co.uk"), tx(T0 + 1, "x.test")];
        let path = dir.path().join("a/b/c.parquet");
        write_parquet(&path, &batch(&rows), &[("k", "v")]);
        assert_eq!(files_under(dir.path()), vec![path.clone()]);
        let (batches, kv) = crate::segments::read_segment(&path);
        assert_eq!(kv.get("k").map(String::as_str), Some("v"));
        let back: Vec<_> = crate::segments::rows(&batches);
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].qname.as_deref(), Some("www.example.co.uk"));
        assert_eq!(rows[0].registered_domain.as_deref(), Some("example.co.uk"));
        assert!(files_under(&dir.path().join("missing")).is_empty());
    }
}
