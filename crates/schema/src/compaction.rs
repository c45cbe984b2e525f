//! The one rule by which readers see every row exactly once while segments are compacted.
//!
//! Compaction merges sealed segments of one partition (`host=/date=/hour=`) into one new
//! segment in the **same partition directory** (or key prefix), whose footer names its inputs
//! under [`meta::COMPACTED_FROM`](crate::meta::COMPACTED_FROM) (their file names, not paths).
//! The steps are:
//!
//! 1. write the compacted segment invisibly (a temporary file outside the listing, renamed into
//!    place; on an object store, one create-only PUT, which is atomic),
//! 2. only then delete the inputs.
//!
//! A reader that lists a partition applies [`covered`]: a file named in the `compacted_from` of
//! another file *present in the same partition* is skipped, whether or not it has been deleted
//! yet. So before step 1 completes the inputs are read, after it the compacted segment is, and
//! at no moment both or neither. A compacted segment may itself be an input of a later
//! compaction (the rule is applied to every file listed, so it is transitive). One compaction
//! runs at a time per partition (the writer holds a lock; on a lake, one compactor per prefix).

use std::collections::HashSet;

/// Separator of the file names in a `compacted_from` value. Segment file names never contain
/// it (they are `<RFC 3339 basic time>-<host>-<boot>-<seq>.parquet` with the host escaped).
pub const SEPARATOR: char = '\n';

/// Encodes input file names for [`crate::meta::COMPACTED_FROM`]. Returns `None` if a name is
/// empty, contains a `/` or the separator (it would not round-trip).
pub fn encode_inputs<S: AsRef<str>>(names: &[S]) -> Option<String> {
    let mut out = String::new();
    for (i, n) in names.iter().enumerate() {
        let n = n.as_ref();
        if n.is_empty() || n.contains('/') || n.contains(SEPARATOR) {
            return None;
        }
        if i > 0 {
            out.push(SEPARATOR);
        }
        out.push_str(n);
    }
    Some(out)
}

/// Decodes a [`crate::meta::COMPACTED_FROM`] value into file names.
pub fn decode_inputs(value: &str) -> Vec<&str> {
    value.split(SEPARATOR).filter(|s| !s.is_empty()).collect()
}

/// One file of a partition as a reader lists it: its file name and, from its footer, the
/// `compacted_from` value if it has one.
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a> {
    pub name: &'a str,
    pub compacted_from: Option<&'a str>,
}

/// The names of the files of **one partition** that a reader must skip: those named by another
/// listed file's `compacted_from`. A file never covers itself.
pub fn covered<'a>(partition: &[Listed<'a>]) -> HashSet<&'a str> {
    let mut out = HashSet::new();
    for f in partition {
        if let Some(v) = f.compacted_from {
            for input in decode_inputs(v) {
                if input != f.name {
                    out.insert(input);
                }
            }
        }
    }
    out.retain(|n| partition.iter().any(|f| f.name == *n));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let v = encode_inputs(&["a.parquet", "b.parquet"]).expect("encodes");
        assert_eq!(decode_inputs(&v), vec!["a.parquet", "b.parquet"]);
        assert!(encode_inputs(&["x/y.parquet"]).is_none());
        assert!(encode_inputs(&["x\ny.parquet"]).is_none());
        assert!(encode_inputs(&[""]).is_none());
    }

    #[test]
    fn inputs_are_skipped_only_while_the_compacted_file_is_listed() {
        let c = encode_inputs(&["a.parquet", "b.parquet"]).expect("encodes");
        let before = [
            Listed {
                name: "a.parquet",
                compacted_from: None,
            },
            Listed {
                name: "b.parquet",
                compacted_from: None,
            },
        ];
        assert!(covered(&before).is_empty());
        let during = [
            before[0],
            before[1],
            Listed {
                name: "c.parquet",
                compacted_from: Some(&c),
            },
        ];
        let cov = covered(&during);
        assert_eq!(cov.len(), 2);
        assert!(cov.contains("a.parquet") && cov.contains("b.parquet"));
        // Inputs half deleted: the remaining one is still skipped.
        let after = [before[1], during[2]];
        assert_eq!(
            covered(&after).into_iter().collect::<Vec<_>>(),
            vec!["b.parquet"]
        );
    }

    #[test]
    fn recompaction_is_transitive() {
        let c1 = encode_inputs(&["a.parquet", "b.parquet"]).expect("encodes");
        let c2 = encode_inputs(&["c1.parquet", "d.parquet"]).expect("encodes");
        let files = [
            Listed {
                name: "a.parquet",
                compacted_from: None,
            },
            Listed {
                name: "c1.parquet",
                compacted_from: Some(&c1),
            },
            Listed {
                name: "d.parquet",
                compacted_from: None,
            },
            Listed {
                name: "c2.parquet",
                compacted_from: Some(&c2),
            },
        ];
        let cov = covered(&files);
        assert!(
            cov.contains("a.parquet") && cov.contains("c1.parquet") && cov.contains("d.parquet")
        );
        assert!(!cov.contains("c2.parquet"));
    }
}
