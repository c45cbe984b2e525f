//! dnsql: DataFusion SQL and forensic recipes over dnsledger segments.
//!
//! The path of a query, one module per step:
//!
//! 1. [`catalog`]: segment files found under `--data` → the tables `dns_all` and `dns` of a SQL
//!    session (sources, footers, table provider, session);
//! 2. [`udf`]: the SQL functions over DNS names and answers the session registers
//!    ([`udf::register_all`]);
//! 3. [`recipes`]: the SQL of the forensic commands (`who`, `top`, `timeline`, `exfil`,
//!    `nxdomain`) and the dig-like `show`;
//! 4. [`output`]: results printed as table, CSV, JSON lines or Parquet; [`ocsf`] maps rows to
//!    OCSF DNS Activity events for `dnsql export --ocsf`; [`report`] gathers the recipes'
//!    results into one HTML page for `dnsql report`.
//!
//! The binary (`main.rs`, its command line in `cli.rs`) runs these steps for each command.

pub mod catalog;
pub mod ocsf;
pub mod output;
pub mod recipes;
pub mod report;
pub mod udf;

#[cfg(test)]
pub(crate) mod testutil;
