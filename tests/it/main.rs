//! One integration-test binary (link time dominates on small machines).
#![allow(
    clippy::result_large_err,
    reason = "openraft's StorageError is large by design"
)]

mod admin;
mod backup;
mod cluster;
mod ctl;
mod dashboard;
mod failstop;
mod fuzz_corpus;
mod identity;
mod lifecycle;
mod membership;
mod progress;
mod props;
mod protocol;
mod recover;
mod resp;
mod storage_suite;
mod support;
mod tls;
mod up;
mod web_actix;
mod web_axum;
mod web_examples;
mod web_failover;
mod web_http;
mod web_tower;
