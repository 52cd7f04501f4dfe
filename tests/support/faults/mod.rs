//! Helpers of the fault suite (`tests/faults.rs`) only, kept out of `tests/support/mod.rs` so the
//! other test binaries do not compile them: restartable processes, the steady load, the system
//! under test and the verdict over what callers and the MCP server recorded.

pub mod load;
pub mod processes;
pub mod system;
pub mod verdict;
