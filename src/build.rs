//! Facts about this binary, fixed at build time by `build.rs`.

/// The git commit the binary was built from (`unknown` outside a checkout).
pub const GIT_COMMIT: &str = env!("MCP_TUNNEL_GIT_COMMIT");
/// The target triple, e.g. `x86_64-unknown-linux-musl`.
pub const TARGET: &str = env!("MCP_TUNNEL_TARGET");

/// `mcp-tunnel 0.1.0 (commit 0123abcd4567, x86_64-unknown-linux-musl)`.
pub fn version_line() -> String {
    format!(
        "mcp-tunnel {} (commit {GIT_COMMIT}, {TARGET})",
        env!("CARGO_PKG_VERSION")
    )
}
