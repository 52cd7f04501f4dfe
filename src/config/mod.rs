//! Configuration: raw flags, environment variables, env files and the YAML config file in, validated, immutable
//! settings out — [`RunConfig`] for `mcp-tunnel run`, and the shared machinery every other
//! subcommand's options are parsed with.
//!
//! Split the way ripgrep splits its flags:
//!
//! | file | what it holds |
//! |---|---|
//! | [`table`] | the option table ([`Opt`]) and the generic parser: flags + environment + env file → [`Raw`] values |
//! | [`values`] | value parsers: booleans, durations, counts, header lists, secret references, URLs |
//! | [`log_options`] | the `--log.*` options every long-running command shares, and [`LogConfig`] |
//! | [`run_options`] | `run`'s option table, in `--help` order (the official-only rows in `official_options`) |
//! | [`provenance`] | where each effective setting came from, secrets masked (for `doctor`) |
//! | [`yaml`] | the official YAML config file → a [`Layer`] beneath the environment (`profile` picks the file) |
//! | [`run`] | building and validating [`RunConfig`] from that table |
//! | [`network`] | `run`'s outbound networking: CA roots, proxies, client certificates per hop |
//! | [`channels`] | the `--mcp.server-url` / `--mcp.command` channel-entry grammar |
//! | [`harpoon`] | the `--harpoon.*` targets and limits of the embedded server on channel `harpoon` |
//!
//! Every error is a [`ConfigError`] naming the flag or variable at fault, never a secret's value.
//! This module sits below everything that consumes its settings and imports none of them.

pub mod channels;
pub mod harpoon;
pub mod log_options;
pub mod network;
mod official_options;
mod profile;
pub mod provenance;
pub mod run;
pub mod run_options;
pub mod table;
pub mod values;
pub mod yaml;

pub use channels::{
    ChannelConfig, ChannelTransport, MAX_CHANNELS, StdioOptions, StdioSessions, fuzz_channel_entry,
};
pub use harpoon::{HarpoonConfig, HarpoonTarget};
pub use log_options::{
    LOG_FILE, LOG_FORMAT, LOG_LEVEL, LogConfig, LogFormat, log_config, parse_log_level,
};
pub use run::{
    ControlPlaneConfig, DiscoveryConfig, MAX_POLL_LIMIT, McpConfig, OpsConfig, Parsed, RunConfig,
    parse_run,
};
pub use run_options::{RUN_OPTIONS, run_help};
pub use table::{
    ArgError, ConfigError, ENV_FILE, Layer, Opt, Origin, Raw, Sources, YamlShape, err, help_text,
};
pub use values::{
    any_duration, count, is_loopback_host, is_reference, origin_of, parse_bool, parse_headers,
    positive_duration, resolve_secret,
};
