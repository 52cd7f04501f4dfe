//! mcp-tunnel (crate docs: to be written)
#![forbid(unsafe_code)]

pub mod http_server;
