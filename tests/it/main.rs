//! lifeboat's one integration-test binary (every extra binary relinks the whole dependency
//! graph). Each area is a module; shared helpers live in `common`.

mod attrs;
mod audit;
mod barehost;
mod breaker;
mod catalog;
mod command;
mod common;
mod config;
mod crash;
mod daemon;
mod dedup;
mod deploy;
mod drill;
mod faults;
mod fidelity;
mod format;
mod hardening;
mod keys;
mod layers;
mod logs;
mod object_lock;
mod ops;
mod pg;
mod pgscratch;
mod pgsource;
mod rds;
mod recovery;
mod replicate;
mod retention;
mod retention_s3;
mod roundtrip;
mod s3;
mod servers;
mod tls;
