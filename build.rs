//! Embeds the git commit and the target triple, for `--version` and the build-info metric.
//! Needs nothing but git (optional: without it, or outside a checkout, the commit is "unknown").

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=MCP_TUNNEL_GIT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=MCP_TUNNEL_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    // Rebuild when HEAD moves (a commit or a checkout), not on every source change.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
