//! Test helpers: a session over the fixture segments, and SQL to rows.

use std::path::PathBuf;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

/// `testdata/segments` of this repository.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/segments")
}

/// A session with the table `dns` over `dir` (a hive `host=/date=/hour=` tree or one file) and
/// every function of [`crate::udf`].
pub async fn session_over(dir: &str, hive: bool) -> SessionContext {
    let ctx = SessionContext::new();
    crate::udf::register_all(&ctx);
    let mut opts = ParquetReadOptions::default().file_extension(".parquet");
    if hive {
        opts = opts.table_partition_cols(vec![
            ("host".to_owned(), DataType::Utf8),
            ("date".to_owned(), DataType::Utf8),
            ("hour".to_owned(), DataType::Utf8),
        ]);
    }
    ctx.register_parquet("dns", dir, opts)
        .await
        .expect("register fixture segments");
    ctx
}

/// A session over the fixture tree.
pub async fn fixtures() -> SessionContext {
    let dir = fixture_dir();
    let dir = format!("{}/", dir.display());
    session_over(&dir, true).await
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

/// Runs `sql` and renders the result as a text table.
pub async fn table(ctx: &SessionContext, sql: &str) -> String {
    let batches = run(ctx, sql).await;
    pretty_format_batches(&batches)
        .expect("format batches")
        .to_string()
}

/// Rows of `sql` with every column cast to text (NULL as `None`).
pub async fn rows(ctx: &SessionContext, sql: &str) -> Vec<Vec<Option<String>>> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::compute::cast;
    let mut out = Vec::new();
    for batch in run(ctx, sql).await {
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

/// Explore the fixtures: `DNSQL_SQL='select …' cargo test -p dnsledger-query explore -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn explore() {
    let ctx = fixtures().await;
    let sql = std::env::var("DNSQL_SQL").unwrap_or_else(|_| "SELECT count(*) FROM dns".into());
    for stmt in sql.split(";;") {
        println!("{}", table(&ctx, stmt).await);
    }
}

/// Print a recipe on the fixtures: `DNSQL_RECIPE=exfil cargo test … explore_recipe -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn explore_recipe() {
    let ctx = fixtures().await;
    let sql = match std::env::var("DNSQL_RECIPE").as_deref() {
        Ok("nxdomain") => crate::recipes::nxdomain(),
        Ok("top") => crate::recipes::top(crate::recipes::TopBy::Process, 10),
        Ok(other) if other.starts_with("who:") => crate::recipes::who(&other[4..]),
        Ok(other) if other.starts_with("show:") => {
            let sql = crate::show::show_sql(&other[5..]).expect("selector");
            let batches = run(&ctx, &sql).await;
            let mut out = Vec::new();
            for b in &batches {
                crate::show::render(b, &mut out).expect("render");
            }
            println!("{}", String::from_utf8_lossy(&out));
            return;
        }
        _ => crate::recipes::exfil(),
    };
    println!("{}", table(&ctx, &sql).await);
}
