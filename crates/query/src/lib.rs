//! dnsql: DataFusion SQL over dnsledger segments.
//!
//! - [`source`] finds segment files under `--data` paths and defines the `--since/--until/--host`
//!   scope;
//! - [`segments`] reads and checks segment footers (and lists them for `dnsql segments`);
//! - [`table`] is the DataFusion table over the segments (partition pruning, skipped files);
//! - [`session`] builds the SQL session with the tables `dns_all` and `dns`;
//! - [`output`] prints results as table, CSV, JSON lines or Parquet.

pub mod output;
pub mod segments;
pub mod session;
pub mod source;
pub mod table;
