//! One integration-test binary (link time dominates on small machines).
#![allow(
    clippy::result_large_err,
    reason = "openraft's StorageError is large by design"
)]

mod cluster;
mod protocol;
mod storage_suite;
mod support;
