//! Step 1 of a query, the catalog: from `--data` paths to the SQL tables `dns_all` and `dns`.
//!
//! - [`source`] finds segment files under `--data` paths, places each in its partition
//!   (`dnsledger_schema::partition`) and defines the `--since/--until/--host` scope;
//! - [`segments`] reads and checks segment footers (and lists them for `dnsql segments`);
//! - [`table`] is the DataFusion table over the segments (partition pruning, skipped files);
//! - [`chunked`] reads a scan of many segments in chunks (memory that does not grow with them);
//! - [`derived`] computes the columns segments store only where they are not derivable;
//! - [`bloom`] drops, before the scan, files whose bloom filters rule out a name lookup;
//! - [`session`] builds the SQL session with the tables `dns_all` and `dns` and runs statements.

pub mod bloom;
pub mod chunked;
pub mod derived;
pub mod distinct;
pub mod footer_cache;
pub mod lake;
pub mod segments;
pub mod session;
pub mod source;
pub mod table;
