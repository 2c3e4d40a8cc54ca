//! Integration tests: the real `orchestra-export` binary against the built-in simulator over
//! loopback, with the dataset read back by the `parquet` crate's Arrow reader; object storage
//! tests run against a real S3-compatible server (moto) on loopback, and the report page is laid
//! out by headless Chromium.

mod badinput;
mod browser;
mod cli;
mod delta;
mod drift;
mod export;
mod faults;
mod hostile;
mod interop;
mod privacy;
mod report;
mod rerun;
mod shard;
mod store;
mod support;
mod usage;
mod verify;
