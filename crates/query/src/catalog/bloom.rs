//! Files a name lookup cannot match, dropped before the scan by their bloom filters.
//!
//! Segments carry a split-block bloom filter per row group on `qname` and
//! `registered_domain` (`dnsledger_schema::BLOOM_FILTER_COLUMNS`). DataFusion's Parquet scan
//! checks them too, but only after it has opened each file (reader, schema adaptation,
//! pruning predicate per file, row-group statistics, and the page index when a predicate can
//! use it). Over thousands of small segments that per-file set-up is most of a point lookup's
//! time, while the name is in a handful of files. So for a query with `qname = 'x'`,
//! `registered_domain IN ('a', 'b')` (ANDed with anything), the catalog reads those filters
//! itself right after the footers — first the row group's min/max from the footer, then one
//! small range read of the filter per row group and column, from the same store — and hands
//! DataFusion only the files where some row group may hold a value.
//!
//! Only a definite "absent" drops a file: a missing filter, an unreadable one or a
//! comparison it cannot decide keeps the file, and the scan decides as before. The scan's
//! own checks still run on the survivors, so the answer is the same with or without this.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::ParquetMetaData;

use crate::catalog::source::SegmentFile;
use dnsledger_lake::manifest::Entry;

/// Equality probes of one conjunct: the column and the values one of which a row must have.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub column: String,
    pub values: Vec<String>,
}

/// The probes of a query's pushed-down filters: every top-level conjunct that is `col = 'x'`,
/// `'x' = col` or `col IN ('x', …)` (not negated) on a column with bloom filters.
pub fn probes(filters: &[Expr]) -> Vec<Probe> {
    let mut out = Vec::new();
    for f in filters {
        conjuncts(f, &mut out);
    }
    out
}

fn conjuncts(e: &Expr, out: &mut Vec<Probe>) {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        other => out.extend(alternatives(other)),
    }
}

/// `col = 'x'`, `'x' = col`, `col IN ('x', …)`, or an OR of those on one column (DataFusion
/// rewrites short IN lists into ORs): the probe they amount to.
fn alternatives(e: &Expr) -> Option<Probe> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            let (column, value) = match (column_of(left), text_of(right)) {
                (Some(c), Some(v)) => (c, v),
                _ => column_of(right).zip(text_of(left))?,
            };
            Some(Probe {
                column,
                values: vec![value],
            })
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let (mut a, b) = (alternatives(left)?, alternatives(right)?);
            (a.column == b.column).then(|| {
                a.values.extend(b.values);
                a
            })
        }
        Expr::InList(list) if !list.negated => {
            let values: Option<Vec<String>> = list.list.iter().map(text_of).collect();
            let (column, values) = (column_of(&list.expr)?, values?);
            (!values.is_empty()).then_some(Probe { column, values })
        }
        _ => None,
    }
}

/// A bloom-filtered column, bare (DataFusion's type coercion leaves these Utf8 columns
/// uncast when compared with a string).
fn column_of(e: &Expr) -> Option<String> {
    match e {
        Expr::Column(c) if dnsledger_schema::BLOOM_FILTER_COLUMNS.contains(&c.name.as_str()) => {
            Some(c.name.clone())
        }
        _ => None,
    }
}

fn text_of(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(v, _) => scalar_text(v),
        _ => None,
    }
}

fn scalar_text(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
        ScalarValue::Dictionary(_, inner) => scalar_text(inner),
        _ => None,
    }
}

/// Whether some row group of the file may hold a row that satisfies every probe. `true`
/// whenever a filter is missing or cannot be read.
pub async fn may_match(file: &SegmentFile, md: &ParquetMetaData, probes: &[Probe]) -> bool {
    let schema = md.file_metadata().schema_descr();
    let leaf =
        |name: &str| (0..schema.num_columns()).find(|&i| schema.column(i).path().string() == name);
    let leaves: Vec<Option<usize>> = probes.iter().map(|p| leaf(&p.column)).collect();
    for rg in md.row_groups() {
        let mut possible = true;
        for (probe, leaf) in probes.iter().zip(&leaves) {
            let Some(chunk) = leaf.map(|i| rg.column(i)) else {
                continue;
            };
            // The row group's min/max first: free (in the footer), and on compacted segments,
            // sorted by registered_domain and qname, they rule out most row groups alone.
            // Byte-wise order is Parquet's order for UTF-8 columns; a truncated min is a
            // prefix and a truncated max is rounded up, so both stay bounds.
            if let Some(stats) = chunk
                .statistics()
                .filter(|s| s.physical_type() == parquet::basic::Type::BYTE_ARRAY)
                && let (Some(min), Some(max)) = (stats.min_bytes_opt(), stats.max_bytes_opt())
                && !probe
                    .values
                    .iter()
                    .any(|v| (min..=max).contains(&v.as_bytes()))
            {
                possible = false;
                break;
            }
            let (Some(offset), Some(length)) =
                (chunk.bloom_filter_offset(), chunk.bloom_filter_length())
            else {
                continue;
            };
            let (Ok(start), Ok(len)) = (u64::try_from(offset), u64::try_from(length)) else {
                continue;
            };
            let Ok(mut got) = file
                .object
                .store
                .get_ranges(
                    &file.object.meta.location,
                    std::slice::from_ref(&(start..start + len)),
                )
                .await
            else {
                continue;
            };
            let Some(bytes) = got.pop() else {
                continue;
            };
            let Ok(filter) = Sbbf::from_bytes(&bytes) else {
                continue;
            };
            if !probe.values.iter().any(|v| filter.check(v.as_str())) {
                possible = false;
                break;
            }
        }
        if possible {
            return true;
        }
    }
    false
}

/// Whether some row group a date manifest describes may hold a row that satisfies every probe
/// (the same checks as [`may_match`], on the manifest's copy of the statistics and filters).
pub fn entry_may_match(entry: &Entry, probes: &[Probe]) -> bool {
    let columns: Vec<Option<usize>> = probes
        .iter()
        .map(|p| {
            dnsledger_schema::BLOOM_FILTER_COLUMNS
                .iter()
                .position(|c| *c == p.column)
        })
        .collect();
    if entry.row_groups.is_empty() {
        // No rows (or the manifest knows of no row group): nothing can match.
        return entry.rows > 0;
    }
    entry.row_groups.iter().any(|rg| {
        probes.iter().zip(&columns).all(|(probe, column)| {
            let Some(stats) = column.and_then(|c| rg.get(c)) else {
                return true;
            };
            if let (Some(min), Some(max)) = (&stats.min, &stats.max)
                && !probe
                    .values
                    .iter()
                    .any(|v| (&min[..]..=&max[..]).contains(&v.as_bytes()))
            {
                return false;
            }
            match stats.bloom.as_deref().map(Sbbf::from_bytes) {
                Some(Ok(filter)) => probe.values.iter().any(|v| filter.check(v.as_str())),
                _ => true,
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn finds_equalities_and_in_lists_on_bloom_columns() {
        let e = col("qname")
            .eq(lit("a.example"))
            .and(col("ts").gt(lit(5)))
            .and(lit("x.org").eq(col("registered_domain")));
        assert_eq!(
            probes(&[e]),
            vec![
                Probe {
                    column: "qname".into(),
                    values: vec!["a.example".into()]
                },
                Probe {
                    column: "registered_domain".into(),
                    values: vec!["x.org".into()]
                },
            ]
        );
        let e = col("registered_domain").in_list(vec![lit("a.org"), lit("b.org")], false);
        assert_eq!(probes(&[e])[0].values, vec!["a.org", "b.org"]);
        // An OR of equalities on one column is an IN list.
        let e = col("qname").eq(lit("a")).or(col("qname").eq(lit("b")));
        assert_eq!(probes(&[e])[0].values, vec!["a", "b"]);
        // Not usable: negations, ORs across columns, other columns, non-literals.
        for e in [
            col("qname").in_list(vec![lit("a")], true),
            col("qname")
                .eq(lit("a"))
                .or(col("registered_domain").eq(lit("b"))),
            col("qname").eq(lit("a")).or(col("comm").eq(lit("b"))),
            col("comm").eq(lit("curl")),
            col("qname").eq(col("registered_domain")),
            col("qname").not_eq(lit("a")),
        ] {
            assert!(probes(std::slice::from_ref(&e)).is_empty(), "{e}");
        }
    }
}
