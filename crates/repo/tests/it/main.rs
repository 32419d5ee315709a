//! The repository engine's integration tests: one binary, one module per area, so the crate
//! and its dependencies are linked once (see STYLE.md).

mod backend;
mod drills;
mod fixture;
mod format_v2;
mod integrity;
mod malicious;
mod meta_cache;
mod pipeline;
mod replicate;
mod restore_bounds;
mod restore_lookup;
mod rewrap;
mod stream;
mod upgrade;
