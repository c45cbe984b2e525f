//! Test support for the whole workspace, and the end-to-end suite's harness.
//!
//! - [`fixture`]: rows to build test data from, Parquet files with metadata, a file walker —
//!   used by the unit tests of `crates/*` (as a dev-dependency) and by the suite;
//! - [`segments`]: sealed segments read back as plain rows;
//! - [`harness`]: the built `dnsledger` and `dnsql` binaries, a running recorder, a dnsmasq
//!   server, clients, DuckDB as an independent reader;
//! - [`html`]: `dnsql report`'s tables read back from the page.
//!
//! The suite itself is `tests/e2e/` (`cargo test -p dnsledger-tests --test e2e`): everything
//! that spans the kernel, real DNS servers and clients, `dnsledger` and `dnsql`. Tests named
//! `bpf_*` load real BPF programs: they need root and are never skipped (scripts/test.sh checks
//! that every one of them ran and passed).

pub mod faultproxy;
pub mod fixture;
pub mod harness;
pub mod html;
pub mod moto;
pub mod segments;
