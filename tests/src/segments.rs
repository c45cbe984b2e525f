//! Reading sealed segments back in tests: the files of a data directory, their batches and
//! key-value metadata, and the rows as plain structs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::fixture::files_under;

/// Every sealed segment (`*.parquet`) under `<data_dir>/segments` (not the date manifests
/// `dnsledger compact` writes beside them).
pub fn segment_files(data_dir: &Path) -> Vec<PathBuf> {
    files_under(&data_dir.join("segments"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

pub fn read_segment(path: &Path) -> (Vec<RecordBatch>, HashMap<String, String>) {
    let file = std::fs::File::open(path).expect("open segment");
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet footer");
    let meta: HashMap<String, String> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let reader = builder.build().expect("reader");
    let batches = reader.collect::<Result<Vec<_>, _>>().expect("read batches");
    (batches, meta)
}

/// A row of a segment, with the columns the tests look at.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub ts: i64,
    pub status: String,
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub ppid: Option<u32>,
    pub uid: Option<u32>,
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub cmdline: Option<String>,
    pub cgroup_id: Option<u64>,
    pub cgroup_path: Option<String>,
    pub netns: Option<u32>,
    pub transport: String,
    pub ip_version: u8,
    pub client_ip: String,
    pub server_ip: String,
    pub server_port: u16,
    pub qname: Option<String>,
    pub qtype_name: Option<String>,
    pub rcode_name: Option<String>,
    pub answer_ips: Vec<String>,
    pub query_raw: Option<Vec<u8>>,
    pub response_raw: Option<Vec<u8>>,
    pub query_size: Option<u32>,
    pub response_size: Option<u32>,
    pub parse_error: Option<String>,
    pub ede_code: Option<u16>,
    /// `stack` (`record --stacks`); None when NULL.
    pub stack: Option<Vec<String>>,
    /// `qname_case`: the first question's name as sent when it has upper case, else None.
    pub qname_case: Option<String>,
    // --serve-side
    /// `side` (client, server); None when NULL or when the segment has no such column.
    pub side: Option<String>,
    pub client_port: u16,
    // libc-level lookups.
    /// `lookup_fn`, `lookup_error`, `lookup_local`, `lookup_id`; None when NULL.
    pub lookup_fn: Option<String>,
    pub lookup_error: Option<String>,
    pub lookup_local: Option<bool>,
    pub lookup_id: Option<u64>,
    /// `latency_ns`.
    pub latency_ns: Option<i64>,
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> &'a dyn arrow_array::Array {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("column {name} missing"))
        .as_ref()
}

fn string_at(a: &dyn arrow_array::Array, i: usize) -> Option<String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int32Type;
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        arrow_schema::DataType::Utf8 => Some(a.as_string::<i32>().value(i).to_string()),
        arrow_schema::DataType::Dictionary(_, _) => {
            let d = a.as_dictionary::<Int32Type>();
            let key = d.keys().value(i) as usize;
            Some(d.values().as_string::<i32>().value(key).to_string())
        }
        other => panic!("not a string column: {other}"),
    }
}

fn prim<T: arrow_array::ArrowPrimitiveType>(
    a: &dyn arrow_array::Array,
    i: usize,
) -> Option<T::Native> {
    use arrow_array::cast::AsArray;
    (!a.is_null(i)).then(|| a.as_primitive::<T>().value(i))
}

pub fn rows(batches: &[RecordBatch]) -> Vec<Row> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            // Schema version 2 stores latency_ns and answer_ips only where the rest of the row
            // does not give them: read them as dnsql does (the stored value, else the rule's);
            // version 3 the raw messages with the ID XORed out: read them restored.
            let derived = dnsledger_schema::transaction_at(b, i);
            let answer_ips = derived.answer_ips.unwrap_or_default();
            let stack_col = col(b, "stack");
            let stack = (!stack_col.is_null(i)).then(|| {
                let list = stack_col.as_list::<i32>().value(i);
                (0..list.len())
                    .filter_map(|j| string_at(list.as_ref(), j))
                    .collect()
            });
            out.push(Row {
                ts: prim::<TimestampNanosecondType>(col(b, "ts"), i).expect("ts"),
                status: string_at(col(b, "status"), i).expect("status"),
                pid: prim::<UInt32Type>(col(b, "pid"), i),
                tid: prim::<UInt32Type>(col(b, "tid"), i),
                ppid: prim::<UInt32Type>(col(b, "ppid"), i),
                uid: prim::<UInt32Type>(col(b, "uid"), i),
                comm: string_at(col(b, "comm"), i),
                exe: string_at(col(b, "exe"), i),
                cmdline: string_at(col(b, "cmdline"), i),
                cgroup_id: prim::<UInt64Type>(col(b, "cgroup_id"), i),
                cgroup_path: string_at(col(b, "cgroup_path"), i),
                netns: prim::<UInt32Type>(col(b, "netns"), i),
                transport: string_at(col(b, "transport"), i).expect("transport"),
                ip_version: prim::<UInt8Type>(col(b, "ip_version"), i).expect("ip_version"),
                client_ip: string_at(col(b, "client_ip"), i).expect("client_ip"),
                server_ip: string_at(col(b, "server_ip"), i).expect("server_ip"),
                server_port: prim::<UInt16Type>(col(b, "server_port"), i).expect("server_port"),
                qname: string_at(col(b, "qname"), i),
                qname_case: string_at(col(b, "qname_case"), i),
                // Segments written before the lookup columns lack them.
                lookup_fn: b.column_by_name("lookup_fn").and_then(|a| string_at(a, i)),
                lookup_error: b
                    .column_by_name("lookup_error")
                    .and_then(|a| string_at(a, i)),
                lookup_local: b
                    .column_by_name("lookup_local")
                    .map(|a| a.as_boolean())
                    .and_then(|a| (!arrow_array::Array::is_null(a, i)).then(|| a.value(i))),
                lookup_id: b
                    .column_by_name("lookup_id")
                    .and_then(|a| prim::<UInt64Type>(a.as_ref(), i)),
                latency_ns: derived.latency_ns,
                qtype_name: string_at(col(b, "qtype_name"), i),
                rcode_name: string_at(col(b, "rcode_name"), i),
                answer_ips,
                query_raw: derived.query_raw,
                response_raw: derived.response_raw,
                query_size: prim::<UInt32Type>(col(b, "query_size"), i),
                response_size: prim::<UInt32Type>(col(b, "response_size"), i),
                parse_error: string_at(col(b, "parse_error"), i),
                ede_code: prim::<UInt16Type>(col(b, "ede_code"), i),
                stack,
                side: b
                    .column_by_name("side")
                    .and_then(|c| string_at(c.as_ref(), i)),
                client_port: prim::<UInt16Type>(col(b, "client_port"), i).unwrap_or_default(),
            });
        }
    }
    out
}

/// All rows of all sealed segments under `data_dir`.
pub fn all_rows(data_dir: &Path) -> Vec<Row> {
    segment_files(data_dir)
        .iter()
        .flat_map(|p| rows(&read_segment(p).0))
        .collect()
}
