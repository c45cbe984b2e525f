//! Step 4 of a query, the output: printing results, one [`Format`] enum, one [`Sink`] per
//! format writing to any `Write`.
//!
//! - `table`: a boxed text table fitted to a width (long cells end in `…`), numbers
//!   right-aligned, multi-line cells kept, NULL shown as `NULL`; buffered (it needs the widths).
//! - `csv`: RFC 4180 with a header; NULL is an empty field.
//! - `json`: one object per line, every column present (NULL as `null`), lists and structs as
//!   JSON arrays and objects, bytes as hex.
//! - `parquet`: zstd Parquet with the result's own schema (lists stay lists).
//!
//! Every format prints the header (or schema) for an empty result, and renders lists
//! (`answers`, `answer_ips`, `questions`) readably. Timestamps print as RFC 3339 (UTC as `Z`).

use std::fmt::Write as _;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Csv,
    Json,
    Parquet,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Table, Format::Csv, Format::Json, Format::Parquet];

    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Parquet => "parquet",
        }
    }

    /// Binary formats are never written to a terminal.
    pub fn is_binary(self) -> bool {
        self == Format::Parquet
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown format `{s}` (table, csv, json, parquet)"))
    }
}

/// Why printing failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Arrow(#[from] ArrowError),
    #[error("{0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

impl OutputError {
    /// The reader went away (`dnsql … | head`): not an error for a CLI.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, OutputError::Io(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Receives the batches of one result.
pub trait Sink {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), OutputError>;
    /// Ends the result (writes the header of an empty result, the table, the Parquet footer)
    /// and flushes.
    fn finish(self: Box<Self>) -> Result<(), OutputError>;
}

/// Options of the table format.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableOptions {
    /// Total width to fit in (`None`: no limit).
    pub max_width: Option<usize>,
}

/// A sink printing a result with `schema` in `format` to `out`.
///
/// A write that fails because the reader closed the pipe makes the sink fail with an
/// [`OutputError`] for which [`OutputError::is_broken_pipe`] holds, whatever the format's writer
/// made of the I/O error.
pub fn sink<'w>(
    format: Format,
    schema: SchemaRef,
    out: Box<dyn Write + Send + 'w>,
    table: TableOptions,
) -> Result<Box<dyn Sink + 'w>, OutputError> {
    let broken = Arc::new(AtomicBool::new(false));
    let out: Box<dyn Write + Send + 'w> = Box::new(PipeWatch {
        inner: out,
        broken: broken.clone(),
    });
    let inner = format_sink(format, schema, out, table).map_err(|e| watched(e, &broken))?;
    Ok(Box::new(Watched { inner, broken }))
}

/// Renders rows as text (e.g. `dnsql show`'s dig-like transcript).
pub type Render = fn(&RecordBatch, &mut dyn Write) -> io::Result<()>;

/// A sink printing every batch with `render` instead of a format (streaming; an empty result
/// prints nothing). Closed pipes are recognised as for [`sink`].
pub fn render_sink<'w>(out: Box<dyn Write + Send + 'w>, render: Render) -> Box<dyn Sink + 'w> {
    let broken = Arc::new(AtomicBool::new(false));
    let out = PipeWatch {
        inner: out,
        broken: broken.clone(),
    };
    Box::new(Watched {
        inner: Box::new(RenderSink {
            out,
            render,
            first: true,
        }),
        broken,
    })
}

struct RenderSink<'w> {
    out: PipeWatch<'w>,
    render: Render,
    first: bool,
}

impl Sink for RenderSink<'_> {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), OutputError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if !self.first {
            // Batches are rendered one after the other like one result.
            writeln!(self.out)?;
        }
        self.first = false;
        (self.render)(batch, &mut self.out)?;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), OutputError> {
        self.out.flush()?;
        Ok(())
    }
}

/// Notes when the reader has gone away.
struct PipeWatch<'w> {
    inner: Box<dyn Write + Send + 'w>,
    broken: Arc<AtomicBool>,
}

impl PipeWatch<'_> {
    fn note<T>(&self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r
            && e.kind() == io::ErrorKind::BrokenPipe
        {
            self.broken.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl Write for PipeWatch<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        self.note(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        self.note(r)
    }
}

fn watched(e: OutputError, broken: &AtomicBool) -> OutputError {
    if broken.load(Ordering::Relaxed) {
        OutputError::Io(io::ErrorKind::BrokenPipe.into())
    } else {
        e
    }
}

struct Watched<'w> {
    inner: Box<dyn Sink + 'w>,
    broken: Arc<AtomicBool>,
}

impl Sink for Watched<'_> {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), OutputError> {
        self.inner
            .write(batch)
            .map_err(|e| watched(e, &self.broken))
    }

    fn finish(self: Box<Self>) -> Result<(), OutputError> {
        let broken = self.broken;
        self.inner.finish().map_err(|e| watched(e, &broken))
    }
}

fn format_sink<'w>(
    format: Format,
    schema: SchemaRef,
    out: Box<dyn Write + Send + 'w>,
    table: TableOptions,
) -> Result<Box<dyn Sink + 'w>, OutputError> {
    Ok(match format {
        Format::Table => Box::new(TableSink {
            schema,
            rows: Vec::new(),
            out,
            opts: table,
        }),
        Format::Csv => Box::new(CsvSink {
            schema,
            writer: Some(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(out),
            ),
            wrote: false,
        }),
        Format::Json => Box::new(JsonSink {
            writer: arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(out),
        }),
        Format::Parquet => {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            Box::new(ParquetSink {
                writer: ArrowWriter::try_new(out, schema, Some(props))?,
            })
        }
    })
}

const UTC_NAMES: [&str; 4] = ["UTC", "+00:00", "Z", "+00"];

/// Text of every value of `array` (`None` for NULL), as the table and CSV formats show it
/// (also `dnsql report`'s tables, so that their cells read like the recipes' output).
pub fn format_column(array: &ArrayRef, null: &str) -> Result<Vec<Option<String>>, ArrowError> {
    let utc = matches!(array.data_type(), DataType::Timestamp(_, Some(tz)) if UTC_NAMES.contains(&tz.as_ref()));
    let options = FormatOptions::new()
        .with_null(null)
        .with_display_error(true)
        .with_timestamp_tz_format(utc.then_some("%Y-%m-%dT%H:%M:%S%.fZ"));
    let formatter = ArrayFormatter::try_new(array.as_ref(), &options)?;
    let mut out = Vec::with_capacity(array.len());
    let mut buf = String::new();
    for i in 0..array.len() {
        if array.is_null(i) {
            out.push(None);
            continue;
        }
        buf.clear();
        write!(buf, "{}", formatter.value(i)).map_err(|e| ArrowError::ExternalError(e.into()))?;
        out.push(Some(buf.clone()));
    }
    Ok(out)
}

/// `batch` with every column as text (for CSV: nested and binary values become their text).
fn stringify(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), DataType::Utf8, true))
        .collect();
    let columns = batch
        .columns()
        .iter()
        .map(|c| Ok(Arc::new(StringArray::from(format_column(c, "")?)) as ArrayRef))
        .collect::<Result<Vec<_>, ArrowError>>()?;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

struct CsvSink<'w> {
    schema: SchemaRef,
    writer: Option<arrow::csv::Writer<Box<dyn Write + Send + 'w>>>,
    wrote: bool,
}

impl Sink for CsvSink<'_> {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), OutputError> {
        if let Some(w) = &mut self.writer {
            w.write(&stringify(batch)?)?;
            self.wrote = true;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), OutputError> {
        if !self.wrote {
            let empty = RecordBatch::new_empty(self.schema.clone());
            self.write(&empty)?;
        }
        if let Some(w) = self.writer.take() {
            w.into_inner().flush()?;
        }
        Ok(())
    }
}

struct JsonSink<'w> {
    writer: arrow::json::Writer<Box<dyn Write + Send + 'w>, arrow::json::writer::LineDelimited>,
}

impl Sink for JsonSink<'_> {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), OutputError> {
        Ok(self.writer.write(batch)?)
    }

    fn finish(mut self: Box<Self>) -> Result<(), OutputError> {
        self.writer.finish()?;
        self.writer.into_inner().flush()?;
        Ok(())
    }
}

struct ParquetSink<'w> {
    writer: ArrowWriter<Box<dyn Write + Send + 'w>>,
}

impl Sink for ParquetSink<'_> {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), OutputError> {
        Ok(self.writer.write(batch)?)
    }

    fn finish(self: Box<Self>) -> Result<(), OutputError> {
        let mut out = self.writer.into_inner()?;
        out.flush()?;
        Ok(())
    }
}

struct TableSink<'w> {
    schema: SchemaRef,
    rows: Vec<Vec<String>>,
    out: Box<dyn Write + Send + 'w>,
    opts: TableOptions,
}

impl Sink for TableSink<'_> {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), OutputError> {
        let columns = batch
            .columns()
            .iter()
            .map(|c| format_column(c, "NULL"))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            self.rows.push(
                columns
                    .iter()
                    .map(|c| c[row].clone().unwrap_or_else(|| "NULL".to_owned()))
                    .collect(),
            );
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), OutputError> {
        let text = render_table(&self.schema, &self.rows, self.opts);
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }
}

/// Control characters other than newlines would garble a terminal: show them escaped.
fn escape_controls(s: &str) -> String {
    if !s.chars().any(|c| c.is_control() && c != '\n') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push('\n'),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Cuts `s` to `width` display columns, marking a cut with `…`.
fn truncate(s: &str, width: usize) -> String {
    if s.width() <= width {
        return s.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = c.width().unwrap_or(0);
        if w + cw > width - 1 {
            break;
        }
        out.push(c);
        w += cw;
    }
    out.push('…');
    out
}

fn pad(s: &str, width: usize, right: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(s.width()));
    if right {
        format!("{fill}{s}")
    } else {
        format!("{s}{fill}")
    }
}

/// Narrowest a column is squeezed to before the table is allowed to exceed the width.
const MIN_COLUMN: usize = 4;

/// Narrowest a column may become for a boxed table to stay readable; a result that does not
/// fit the width at this is shown one record at a time instead.
const READABLE_COLUMN: usize = 12;

/// The boxed table, or, when the result is too wide for `max_width` even with its columns cut
/// to a readable width, one record at a time (`column | value` lines, like `psql -x`).
pub fn render_table(schema: &Schema, rows: &[Vec<String>], opts: TableOptions) -> String {
    let n = schema.fields().len();
    if n == 0 {
        return String::new();
    }
    let headers: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| escape_controls(f.name()))
        .collect();
    let right: Vec<bool> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().is_numeric())
        .collect();
    let cells: Vec<Vec<Vec<String>>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| escape_controls(c).split('\n').map(str::to_owned).collect())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.width()).collect();
    for row in &cells {
        for (i, lines) in row.iter().enumerate() {
            for l in lines {
                widths[i] = widths[i].max(l.width());
            }
        }
    }
    if let Some(max) = opts.max_width {
        // Borders: "| " + " | " between + " |" = 3n + 1.
        let borders = 3 * n + 1;
        let readable: usize = widths.iter().map(|w| (*w).min(READABLE_COLUMN)).sum();
        if !cells.is_empty() && readable + borders > max {
            return render_records(&headers, &cells, max);
        }
        let budget = max.saturating_sub(borders);
        while widths.iter().sum::<usize>() > budget {
            let (i, &w) = widths
                .iter()
                .enumerate()
                .max_by_key(|(_, w)| **w)
                .expect("at least one column");
            if w <= MIN_COLUMN {
                break;
            }
            widths[i] = w - 1;
        }
    }
    let mut out = String::new();
    let rule: String = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let line = |out: &mut String, values: &[String], align: &[bool]| {
        out.push('|');
        for (i, v) in values.iter().enumerate() {
            out.push(' ');
            out.push_str(&pad(&truncate(v, widths[i]), widths[i], align[i]));
            out.push_str(" |");
        }
        out.push('\n');
    };
    out.push_str(&rule);
    line(&mut out, &headers, &vec![false; n]);
    out.push_str(&rule);
    for row in &cells {
        let height = row.iter().map(Vec::len).max().unwrap_or(1);
        for k in 0..height {
            let values: Vec<String> = row
                .iter()
                .map(|lines| lines.get(k).cloned().unwrap_or_default())
                .collect();
            line(&mut out, &values, &right);
        }
    }
    if !cells.is_empty() {
        out.push_str(&rule);
    }
    out
}

/// One record at a time: a `-[ RECORD n ]` rule, then `column | value` lines, values cut to
/// fit `max` (multi-line values continue on lines with an empty column name).
fn render_records(headers: &[String], cells: &[Vec<Vec<String>>], max: usize) -> String {
    let key_width = headers
        .iter()
        .map(|h| h.width())
        .max()
        .unwrap_or(0)
        .min(max / 3)
        .max(1);
    let value_width = max.saturating_sub(key_width + 3).max(MIN_COLUMN);
    let natural = cells
        .iter()
        .flatten()
        .flatten()
        .map(|l| l.width())
        .max()
        .unwrap_or(0);
    let rule_width = (key_width + 3 + natural.min(value_width)).min(max);
    let mut out = String::new();
    for (r, row) in cells.iter().enumerate() {
        let title = format!("-[ RECORD {} ]", r + 1);
        out.push_str(&title);
        out.push_str(&"-".repeat(rule_width.saturating_sub(title.width())));
        out.push('\n');
        for (h, lines) in headers.iter().zip(row) {
            for (k, line) in lines.iter().enumerate() {
                let key = if k == 0 {
                    truncate(h, key_width)
                } else {
                    String::new()
                };
                let value = truncate(line, value_width);
                let text = format!("{} | {value}", pad(&key, key_width, false));
                out.push_str(text.trim_end());
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{
        BinaryArray, Int64Array, ListBuilder, StringBuilder, TimestampNanosecondArray,
    };

    fn sample() -> RecordBatch {
        let mut ips = ListBuilder::new(StringBuilder::new());
        ips.values().append_value("192.0.2.1");
        ips.values().append_value("2001:db8::1");
        ips.append(true);
        ips.append(false);
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "qname",
                Arc::new(StringArray::from(vec![Some("example.com"), None])),
            ),
            ("n", Arc::new(Int64Array::from(vec![1, 22]))),
            (
                "ts",
                Arc::new(
                    TimestampNanosecondArray::from(vec![1_700_000_000_123_456_789, 0])
                        .with_timezone("UTC"),
                ),
            ),
            ("answer_ips", Arc::new(ips.finish())),
            (
                "raw",
                Arc::new(BinaryArray::from(vec![Some(&b"\x01\xff"[..]), None])),
            ),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn print(format: Format, batches: &[RecordBatch], width: Option<usize>) -> String {
        let mut buf = Vec::new();
        {
            let schema = batches[0].schema();
            let mut s = sink(
                format,
                schema,
                Box::new(&mut buf),
                TableOptions { max_width: width },
            )
            .unwrap();
            for b in batches {
                s.write(b).unwrap();
            }
            s.finish().unwrap();
        }
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn table() {
        let got = print(Format::Table, &[sample()], None);
        let want = "\
+-------------+----+--------------------------------+--------------------------+------+
| qname       | n  | ts                             | answer_ips               | raw  |
+-------------+----+--------------------------------+--------------------------+------+
| example.com |  1 | 2023-11-14T22:13:20.123456789Z | [192.0.2.1, 2001:db8::1] | 01ff |
| NULL        | 22 | 1970-01-01T00:00:00Z           | NULL                     | NULL |
+-------------+----+--------------------------------+--------------------------+------+
";
        assert_eq!(got, want);
    }

    #[test]
    fn table_fits_width_with_visible_truncation() {
        let got = print(Format::Table, &[sample()], Some(60));
        for line in got.lines() {
            assert!(line.width() <= 60, "{line:?} is wider than 60");
        }
        assert!(got.contains('…'), "{got}");
        assert!(
            got.contains("| example.com |"),
            "short cells stay whole: {got}"
        );
    }

    #[test]
    fn empty_results_print_the_header() {
        let empty = RecordBatch::new_empty(sample().schema());
        assert_eq!(
            print(Format::Table, std::slice::from_ref(&empty), None),
            "+-------+---+----+------------+-----+\n\
             | qname | n | ts | answer_ips | raw |\n\
             +-------+---+----+------------+-----+\n"
        );
        assert_eq!(
            print(Format::Csv, std::slice::from_ref(&empty), None),
            "qname,n,ts,answer_ips,raw\n"
        );
        assert_eq!(print(Format::Json, &[empty], None), "");
    }

    #[test]
    fn csv() {
        let got = print(Format::Csv, &[sample()], None);
        assert_eq!(
            got,
            "qname,n,ts,answer_ips,raw\n\
             example.com,1,2023-11-14T22:13:20.123456789Z,\"[192.0.2.1, 2001:db8::1]\",01ff\n\
             ,22,1970-01-01T00:00:00Z,,\n"
        );
    }

    #[test]
    fn json_lines() {
        let got = print(Format::Json, &[sample()], None);
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            r#"{"qname":"example.com","n":1,"ts":"2023-11-14T22:13:20.123456789Z","answer_ips":["192.0.2.1","2001:db8::1"],"raw":"01ff"}"#
        );
        assert_eq!(
            lines[1],
            r#"{"qname":null,"n":22,"ts":"1970-01-01T00:00:00Z","answer_ips":null,"raw":null}"#
        );
    }

    #[test]
    fn parquet_round_trips() {
        let mut buf = Vec::new();
        {
            let mut s = sink(
                Format::Parquet,
                sample().schema(),
                Box::new(&mut buf),
                TableOptions::default(),
            )
            .unwrap();
            s.write(&sample()).unwrap();
            s.finish().unwrap();
        }
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
            bytes::Bytes::from(buf),
            1024,
        )
        .unwrap();
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(batches, vec![sample()]);
    }

    #[test]
    fn cells_are_escaped_and_multiline() {
        let schema = Schema::new(vec![Field::new("a", DataType::Utf8, true)]);
        let got = render_table(
            &schema,
            &[vec!["x\ty\u{1b}".into()], vec!["one\ntwo".into()]],
            TableOptions::default(),
        );
        assert_eq!(
            got,
            "+------------+\n| a          |\n+------------+\n| x\\ty\\u{1b} |\n\
             | one        |\n| two        |\n+------------+\n"
        );
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcd", 4), "abcd");
    }

    /// A writer whose reader has gone.
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn closed_pipes_are_recognised_in_every_format() {
        for format in Format::ALL {
            let result = sink(
                format,
                sample().schema(),
                Box::new(Closed),
                TableOptions::default(),
            )
            .and_then(|mut s| {
                s.write(&sample())?;
                s.finish()
            });
            let err = result.expect_err("writing to a closed pipe fails");
            assert!(err.is_broken_pipe(), "{format:?}: {err}");
        }
    }

    #[test]
    fn render_sink_renders_each_batch() {
        fn render(b: &RecordBatch, out: &mut dyn Write) -> io::Result<()> {
            writeln!(out, "{} rows", b.num_rows())
        }
        let mut buf = Vec::new();
        {
            let mut s = render_sink(Box::new(&mut buf), render);
            s.write(&sample()).unwrap();
            s.write(&RecordBatch::new_empty(sample().schema())).unwrap();
            s.write(&sample()).unwrap();
            s.finish().unwrap();
        }
        assert_eq!(String::from_utf8(buf).unwrap(), "2 rows\n\n2 rows\n");
        let err = render_sink(Box::new(Closed), render)
            .write(&sample())
            .unwrap_err();
        assert!(err.is_broken_pipe());
    }

    #[test]
    fn too_wide_tables_show_one_record_at_a_time() {
        let got = print(Format::Table, &[sample()], Some(40));
        let want = "\
-[ RECORD 1 ]---------------------------
qname      | example.com
n          | 1
ts         | 2023-11-14T22:13:20.123456…
answer_ips | [192.0.2.1, 2001:db8::1]
raw        | 01ff
-[ RECORD 2 ]---------------------------
qname      | NULL
n          | 22
ts         | 1970-01-01T00:00:00Z
answer_ips | NULL
raw        | NULL
";
        assert_eq!(got, want);
        let narrow = print(Format::Table, &[sample()], Some(24));
        assert!(narrow.lines().all(|l| l.width() <= 24), "{narrow}");
        assert!(narrow.contains("\nts       | 2023-11-14T2…\n"), "{narrow}");
        assert!(narrow.contains("\nanswer_… | [192.0.2.1, …\n"), "{narrow}");
    }

    #[test]
    fn formats_parse() {
        assert_eq!("JSON".parse::<Format>(), Ok(Format::Json));
        assert!("xml".parse::<Format>().is_err());
    }
}
