//! lifeboat: a backup and disaster-recovery orchestrator.
//!
//! The binary is glue; this library does the work. [`config`] parses lifeboat.toml,
//! [`storage`] turns regions into repository backends, [`source`] reads what is backed up,
//! [`engine`] runs operations over the repository engine (`lifeboat-repo`), [`drill`] runs DR
//! drills from runbooks over the engine, and [`cli`]
//! maps command lines onto engine calls and errors onto exit codes.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod drill;
pub mod engine;
pub mod host;
pub mod objectives;
pub mod outcome;
pub mod rds;
pub mod source;
pub mod storage;
