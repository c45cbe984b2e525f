//! Test helpers: a session over the fixture segments, and SQL to rows.

use std::path::PathBuf;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

/// `testdata/segments` of this repository.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/segments")
}

/// A session with the table `dns` over `dir` (a hive `host=/date=/hour=` tree or one file) and
/// every function of [`crate::udf`]. With `declared`, the table has the schema from
/// `crates/schema` (Utf8, Binary, dictionaries), as the `dnsql` binary registers it; without,
/// DataFusion infers it from the files (Utf8View, BinaryView).
pub async fn session_over(dir: &str, hive: bool, declared: bool) -> SessionContext {
    let ctx = SessionContext::new();
    crate::udf::register_all(&ctx);
    let schema = dnsledger_schema::schema();
    let mut opts = ParquetReadOptions::default().file_extension(".parquet");
    if declared {
        opts = opts.schema(&schema);
    }
    if hive {
        opts = opts.table_partition_cols(vec![
            ("host".to_owned(), DataType::Utf8),
            ("date".to_owned(), DataType::Utf8),
            ("hour".to_owned(), DataType::Utf8),
        ]);
    }
    // As the binary's session: the files, then `dns` with the computed columns over them.
    ctx.register_parquet("dns_files", dir, opts)
        .await
        .expect("register fixture segments");
    let mut view = ctx.table("dns_files").await.expect("fixture table");
    // --serve-side: the fixtures predate `side`; an inferred schema lacks it, where the
    // declared one reads it as NULL. Supply the NULL the declared schema would.
    let side = dnsledger_schema::col::SIDE;
    if view.schema().field_with_unqualified_name(side).is_err() {
        view = view
            .with_column(
                side,
                datafusion::prelude::lit(datafusion::scalar::ScalarValue::Utf8(None)),
            )
            .expect("side column");
    }
    let view = crate::catalog::derived::with_derived_columns(view).expect("derived columns");
    let view = crate::catalog::session::with_computed_columns(view).expect("computed columns");
    ctx.register_table("dns", view.into_view())
        .expect("register the dns view");
    ctx
}

/// A session over the fixture tree, with the declared schema.
pub async fn fixtures() -> SessionContext {
    fixtures_with(true).await
}

/// A session over the fixture tree, with the declared or the inferred schema.
pub async fn fixtures_with(declared: bool) -> SessionContext {
    let dir = fixture_dir();
    let dir = format!("{}/", dir.display());
    session_over(&dir, true, declared).await
}

/// First column of every row of `sql`, as text.
pub async fn column(ctx: &SessionContext, sql: &str) -> Vec<Option<String>> {
    rows(ctx, sql)
        .await
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect()
}

/// The single integer `sql` returns.
pub async fn count(ctx: &SessionContext, sql: &str) -> i64 {
    let v = column(ctx, sql).await;
    assert_eq!(v.len(), 1, "{sql}");
    v[0].as_deref()
        .expect("a value")
        .parse()
        .expect("an integer")
}

/// A result as text, with its column names.
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    /// The value of column `name` in row `row`.
    pub fn get(&self, row: usize, name: &str) -> Option<&str> {
        let i = self
            .columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.columns));
        self.rows[row][i].as_deref()
    }

    /// The first row whose column `name` is `value`.
    pub fn find(&self, name: &str, value: &str) -> Option<usize> {
        (0..self.rows.len()).find(|&r| self.get(r, name) == Some(value))
    }
}

/// Runs `sql` once, returning column names and rows as text.
pub async fn query(ctx: &SessionContext, sql: &str) -> Table {
    let df = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("plan failed: {e}\n{sql}"));
    let columns = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let batches = df
        .collect()
        .await
        .unwrap_or_else(|e| panic!("execution failed: {e}\n{sql}"));
    Table {
        columns,
        rows: batches_to_rows(&batches),
    }
}

/// A segment with process attribution (the fixtures, imported from captures, have none), in a
/// temporary directory, registered as `dns`. Rows are written out of time order.
///
/// - host `h1`, pid 4242, comm `dnscat`: 30 TXT queries for 32-hex-digit names under
///   `evil.example`, each answered with a 120-character TXT record (a tunnel);
/// - host `h1`, pid 100, comm `firefox`: 30 A queries for `imgN.cdn.example.net`, 30 A
///   queries for CDN-style random 13-character names under `cloudfront.net`, 12 NXDOMAIN
///   answers for names under `example.org`, and `www.example.com` A with raw messages;
/// - host `h2`, pid 4242, comm `sshd`: one query (same pid, other host).
pub async fn process_fixture() -> (tempfile::TempDir, SessionContext) {
    use std::sync::Arc;

    use dnsledger_schema::{Answer, Transaction};
    use hickory_proto::op::Query;
    use hickory_proto::op::{Message, OpCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::str::FromStr;

    const T0: i64 = 1_700_000_000_000_000_000;
    let base = |host: &str, pid: u32, comm: &str, exe: &str, ts: i64| Transaction {
        ts,
        query_ts: Some(ts),
        response_ts: Some(ts + 2_000_000),
        latency_ns: Some(2_000_000),
        status: "answered",
        hostname: Arc::from(host),
        pid: Some(pid),
        tid: Some(pid),
        ppid: Some(1),
        uid: Some(1000),
        gid: Some(1000),
        comm: Some(comm.to_owned()),
        exe: Some(Arc::from(exe)),
        cmdline: Some(Arc::from(format!("{exe} --flag"))),
        transport: "udp",
        ip_version: 4,
        client_ip: "10.0.0.5".into(),
        client_port: 40000,
        server_ip: "10.0.0.53".into(),
        server_port: 53,
        opcode: Some(0),
        rcode: Some(0),
        rcode_name: Some("NOERROR".into()),
        qtype: Some(1),
        qtype_name: Some("A".into()),
        qclass: Some(1),
        query_size: Some(40),
        response_size: Some(56),
        ..Default::default()
    };
    let mut rows = Vec::new();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..30i64 {
        let name = format!("{:016x}{:016x}.evil.example", next(), next());
        let mut t = base(
            "h1",
            4242,
            "dnscat",
            "/usr/bin/dnscat",
            T0 + i * 1_000_000_000,
        );
        t.dns_id = Some(i as u16);
        t.qname = Some(name.clone());
        t.registered_domain = Some("evil.example".into());
        t.qtype = Some(16);
        t.qtype_name = Some("TXT".into());
        t.answers = Some(vec![Answer {
            name,
            rtype: "TXT".into(),
            ttl: 0,
            data: format!("\"{}\"", "a1b2c3d4e5".repeat(12)),
        }]);
        t.response_size = Some(200);
        rows.push(t);
    }
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    for i in 0..30i64 {
        let mut t = base(
            "h1",
            100,
            "firefox",
            "/usr/lib/firefox/firefox",
            T0 + 500_000_000 + i * 1_000_000_000,
        );
        t.dns_id = Some(1000 + i as u16);
        t.qname = Some(format!("img{i}.cdn.example.net"));
        t.registered_domain = Some("example.net".into());
        rows.push(t);
        let mut t = base(
            "h1",
            100,
            "firefox",
            "/usr/lib/firefox/firefox",
            T0 + 700_000_000 + i * 1_000_000_000,
        );
        t.dns_id = Some(2000 + i as u16);
        let id: String = (0..13)
            .map(|_| char::from(ALNUM[(next() % 36) as usize]))
            .collect();
        t.qname = Some(format!("{id}.cloudfront.net"));
        t.registered_domain = Some("cloudfront.net".into());
        rows.push(t);
    }
    for i in 0..12i64 {
        let mut t = base(
            "h1",
            100,
            "firefox",
            "/usr/lib/firefox/firefox",
            T0 + 800_000_000 + i * 100_000_000,
        );
        t.dns_id = Some(3000 + i as u16);
        t.qname = Some(format!("typo{i}.example.org"));
        t.registered_domain = Some("example.org".into());
        t.rcode = Some(3);
        t.rcode_name = Some("NXDOMAIN".into());
        rows.push(t);
    }
    // www.example.com with its raw query and response.
    let name = Name::from_str("www.example.com.").expect("name");
    let mut q = Message::query();
    q.metadata.id = 0x4242;
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(name.clone(), RecordType::A));
    let mut r = Message::response(0x4242, OpCode::Query);
    r.metadata.recursion_desired = true;
    r.metadata.recursion_available = true;
    r.add_query(Query::query(name.clone(), RecordType::A));
    r.add_answer(Record::from_rdata(
        name,
        300,
        RData::A(A::new(93, 184, 216, 34)),
    ));
    let mut t = base(
        "h1",
        100,
        "firefox",
        "/usr/lib/firefox/firefox",
        T0 + 40_000_000_000,
    );
    t.dns_id = Some(0x4242);
    t.qname = Some("www.example.com".into());
    t.registered_domain = Some("example.com".into());
    t.query_raw = Some(q.to_vec().expect("encode query"));
    t.response_raw = Some(r.to_vec().expect("encode response"));
    t.answers = Some(vec![Answer {
        name: "www.example.com".into(),
        rtype: "A".into(),
        ttl: 300,
        data: "93.184.216.34".into(),
    }]);
    t.answer_ips = Some(vec!["93.184.216.34".into()]);
    rows.push(t);
    let mut t = base("h2", 4242, "sshd", "/usr/sbin/sshd", T0 + 15_000_000_000);
    t.qname = Some("example.com".into());
    t.registered_domain = Some("example.com".into());
    rows.push(t);
    rows.reverse();

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("segment.parquet");
    dnsledger_tests::fixture::write_parquet(&path, &dnsledger_tests::fixture::batch(&rows), &[]);
    let ctx = session_over(&path.display().to_string(), false, true).await;
    (dir, ctx)
}

/// A fleet's ordinary traffic and one small tunnel, for `exfil` at volume: `hosts` hosts ×
/// `hours` hours, one file per host.
///
/// - every host, comm `firefox`, one pid: each hour 30 distinct names under `googlevideo.com`
///   (`rrN---sn-xxxxxxxx`, asked A and AAAA), one 100-octet tracking name with a 40-character
///   hex label under it, and 2 TXT queries answered with a 180-character SPF-like text — the
///   busy ordinary domain: over the window it has thousands of names, dozens of long names
///   and labels and hundreds of TXT queries with long answers;
/// - host `h0`, comm `dig`, a new pid per query (a dnsteal-style shell loop): in one hour only,
///   12 A queries for 56-character mixed-case base64 labels under `x.exfil.example`, the case
///   kept in `query_raw`.
pub async fn fleet_fixture(hosts: u32, hours: i64) -> (tempfile::TempDir, SessionContext) {
    use std::str::FromStr;
    use std::sync::Arc;

    use dnsledger_schema::{Answer, Transaction};
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    const T0: i64 = 1_790_000_000_000_000_000;
    const HOUR: i64 = 3_600_000_000_000;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let base = |host: &str, pid: u32, comm: &str, ts: i64, qname: String, rd: &str| Transaction {
        ts,
        query_ts: Some(ts),
        response_ts: Some(ts + 1_000_000),
        latency_ns: Some(1_000_000),
        status: "answered",
        hostname: Arc::from(host),
        pid: Some(pid),
        tid: Some(pid),
        comm: Some(comm.to_owned()),
        exe: Some(Arc::from(format!("/usr/bin/{comm}").as_str())),
        transport: "udp",
        ip_version: 4,
        client_ip: "10.0.0.5".into(),
        client_port: 40000,
        server_ip: "10.0.0.53".into(),
        server_port: 53,
        opcode: Some(0),
        rcode: Some(0),
        rcode_name: Some("NOERROR".into()),
        qtype: Some(1),
        qtype_name: Some("A".into()),
        qclass: Some(1),
        query_size: Some(50),
        response_size: Some(90),
        qname: Some(qname),
        registered_domain: Some(rd.into()),
        ..Default::default()
    };
    const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let dir = tempfile::tempdir().expect("temp dir");
    for h in 0..hosts {
        let host = format!("h{h}");
        let mut rows = Vec::new();
        for hour in 0..hours {
            let t = T0 + hour * HOUR;
            for n in 0..30i64 {
                let id: String = (0..8)
                    .map(|_| char::from(B32[(next() % 32) as usize]))
                    .collect();
                let name = format!("rr{}---sn-{id}.googlevideo.com", n % 9);
                for (k, (qt, qtn)) in [(1u16, "A"), (28, "AAAA")].into_iter().enumerate() {
                    let mut r = base(
                        &host,
                        1000 + h,
                        "firefox",
                        t + n * 100_000_000_000 + k as i64 * 1_000_000,
                        name.clone(),
                        "googlevideo.com",
                    );
                    r.qtype = Some(qt);
                    r.qtype_name = Some(qtn.into());
                    rows.push(r);
                }
            }
            let hex: String = (0..40)
                .map(|_| char::from(b"0123456789abcdef"[(next() % 16) as usize]))
                .collect();
            let long = format!("{hex}.beacon.tracking-pixel.metrics.region-1.edge.googlevideo.com");
            assert!(long.len() > 90 && long.len() < 110, "{}", long.len());
            rows.push(base(
                &host,
                1000 + h,
                "firefox",
                t + 3_100_000_000_000,
                long,
                "googlevideo.com",
            ));
            for k in 0..2i64 {
                let mut r = base(
                    &host,
                    1000 + h,
                    "firefox",
                    t + 3_200_000_000_000 + k * 1_000_000_000,
                    format!("_spf{k}.googlevideo.com"),
                    "googlevideo.com",
                );
                r.qtype = Some(16);
                r.qtype_name = Some("TXT".into());
                r.answers = Some(vec![Answer {
                    name: format!("_spf{k}.googlevideo.com"),
                    rtype: "TXT".into(),
                    ttl: 300,
                    data: format!("\"v=spf1 {} ~all\"", "ip4:203.0.113.0/24 ".repeat(9)),
                }]);
                rows.push(r);
            }
        }
        if h == 0 {
            let t = T0 + (hours / 2) * HOUR;
            for i in 0..12i64 {
                let label: String = (0..56)
                    .map(|_| char::from(B64[(next() % 62) as usize]))
                    .collect();
                let sent = format!("{label}.{i}.x.exfil.example");
                let mut q = Message::query();
                q.metadata.id = i as u16;
                q.add_query(Query::query(
                    Name::from_str(&format!("{sent}.")).expect("name"),
                    RecordType::A,
                ));
                let mut r = base(
                    &host,
                    20_000 + i as u32,
                    "dig",
                    t + i * 2_000_000_000,
                    sent.to_ascii_lowercase(),
                    "exfil.example",
                );
                r.query_raw = Some(q.to_vec().expect("encode query"));
                rows.push(r);
            }
        }
        let path = dir.path().join(format!("{host}.parquet"));
        dnsledger_tests::fixture::write_parquet(
            &path,
            &dnsledger_tests::fixture::batch(&rows),
            &[],
        );
    }
    let ctx = session_over(&format!("{}/", dir.path().display()), false, true).await;
    (dir, ctx)
}

/// Runs `sql`, returning the batches.
pub async fn run(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    let df = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("plan failed: {e}\n{sql}"));
    df.collect()
        .await
        .unwrap_or_else(|e| panic!("execution failed: {e}\n{sql}"))
}

/// Rows of `sql` with every column cast to text (NULL as `None`).
pub async fn rows(ctx: &SessionContext, sql: &str) -> Vec<Vec<Option<String>>> {
    batches_to_rows(&run(ctx, sql).await)
}

fn batches_to_rows(batches: &[RecordBatch]) -> Vec<Vec<Option<String>>> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::compute::cast;
    let mut out = Vec::new();
    for batch in batches {
        let cols: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| {
                let text = match c.data_type() {
                    DataType::List(_) | DataType::LargeList(_) | DataType::Struct(_) => {
                        let fmt = datafusion::arrow::util::display::ArrayFormatter::try_new(
                            c.as_ref(),
                            &Default::default(),
                        )
                        .expect("formatter");
                        let v: Vec<Option<String>> = (0..c.len())
                            .map(|i| (!c.is_null(i)).then(|| fmt.value(i).to_string()))
                            .collect();
                        return v;
                    }
                    _ => cast(c, &DataType::Utf8).expect("cast to text"),
                };
                let s = text.as_string::<i32>();
                (0..s.len())
                    .map(|i| (!s.is_null(i)).then(|| s.value(i).to_owned()))
                    .collect()
            })
            .collect();
        for r in 0..batch.num_rows() {
            out.push(cols.iter().map(|c| c[r].clone()).collect());
        }
    }
    out
}

/// Writes a one-row segment of `host` at `ts` (ns) to `path` (directories created), with the
/// footer metadata the recorder writes: schema version, host and time range.
pub fn write_segment(path: &std::path::Path, host: &str, ts: i64) {
    use dnsledger_schema::{Transaction, meta, status};

    let batch = dnsledger_tests::fixture::batch(&[Transaction {
        status: status::ANSWERED,
        hostname: host.into(),
        ..dnsledger_tests::fixture::tx(ts, "www.example.com")
    }]);
    let c = dnsledger_schema::partition::Civil::from_ns(ts);
    let time = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.nanos
    );
    let kv = [
        (
            meta::SCHEMA_VERSION,
            dnsledger_schema::SCHEMA_VERSION.to_string(),
        ),
        (meta::HOST, host.to_owned()),
        (meta::TS_MIN, time.clone()),
        (meta::TS_MAX, time),
    ];
    let kv: Vec<(&str, &str)> = kv.iter().map(|(k, v)| (*k, v.as_str())).collect();
    dnsledger_tests::fixture::write_parquet(path, &batch, &kv);
}
