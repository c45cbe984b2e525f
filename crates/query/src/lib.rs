//! dnsql's library: SQL functions, forensic recipes and the dig-like transaction view.
//!
//! The `dnsql` binary registers the segments as the table `dns`, calls [`udf::register_all`] and
//! runs the SQL text the [`recipes`] and [`show`] modules build.

pub mod recipes;
pub mod show;
pub mod udf;

#[cfg(test)]
pub(crate) mod testutil;
