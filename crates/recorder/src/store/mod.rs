//! Last step of the path: **Transaction rows -> sealed segments**, and keeping them.
//!
//! [`segment`] writes rotating, self-describing zstd Parquet segments in the partition layout
//! of [`dnsledger_schema::partition`]; [`spool`] appends every row to a crash-safe Arrow IPC
//! spool first, so a killed run is sealed at the next start; [`prune`] is retention (oldest
//! first, by age and size, keeping what is not shipped yet); [`ship`] uploads sealed segments
//! to a data lake; [`fs`] has the filesystem calls they share (free space, locks,
//! directory sync).

pub mod compact;
pub mod fs;
pub mod prune;
pub mod segment;
pub mod ship;
pub mod spool;
