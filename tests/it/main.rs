//! lifeboat's one integration-test binary (every extra binary relinks the whole dependency
//! graph). Each area is a module; shared helpers live in `common`.

mod common;
mod roundtrip;
mod crash;
mod faults;
mod keys;
mod config;
mod format;
mod dedup;
