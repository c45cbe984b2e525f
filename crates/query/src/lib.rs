//! dnsql: DataFusion SQL and forensic recipes over dnsledger segments.
//!
//! - [`catalog::source`] finds segment files under `--data` paths and defines the `--since/--until/--host`
//!   scope;
//! - [`catalog::segments`] reads and checks segment footers (and lists them for `dnsql segments`);
//! - [`catalog::table`] is the DataFusion table over the segments (partition pruning, skipped files);
//! - [`catalog::session`] builds the SQL session with the tables `dns_all` and `dns`;
//! - [`udf`] registers the SQL functions ([`udf::register_all`]);
//! - [`recipes`] and [`recipes::show`] build the SQL of the forensic commands and the dig-like view;
//! - [`output`] prints results as table, CSV, JSON lines or Parquet.

pub mod catalog;
pub mod output;
pub mod recipes;
pub mod udf;

#[cfg(test)]
pub(crate) mod testutil;
