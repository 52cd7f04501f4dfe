//! The `--log.*` options every long-running command shares (`run`, `relay`), declared once, and
//! [`LogConfig`], what they parse into.
//!
//! A command puts [`LOG_LEVEL`], [`LOG_FORMAT`] and [`LOG_FILE`] into its option table where its
//! `--help` lists them and reads them back with [`log_config`], so flags, variables, defaults, help
//! lines and errors are the same everywhere.

use std::path::PathBuf;

use super::table::{ConfigError, Opt, Raw, Sources, err};

/// `--log.level`: how much is logged.
pub const LOG_LEVEL: Opt = Opt {
    flag: "--log.level",
    env: &["LOG_LEVEL"],
    default: Some("info"),
    help: "error, warn, info, debug or trace. Secrets are never logged at any level.",
    ..Opt::BASE
};

/// `--log.format`: the line format.
pub const LOG_FORMAT: Opt = Opt {
    flag: "--log.format",
    env: &["LOG_FORMAT"],
    default: Some("text"),
    help: "text (also spelled struct-text), or json (one object per line: ts, level, target, msg \
           and fields).",
    ..Opt::BASE
};

/// `--log.file`: where the log goes instead of stderr.
pub const LOG_FILE: Opt = Opt {
    flag: "--log.file",
    env: &["LOG_FILE"],
    default: Some(""),
    help: "Append logs to this file (mode 0600, reopened on SIGHUP for logrotate) instead of stderr.",
    ..Opt::BASE
};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line.
    Json,
}

/// Level, format and destination of the log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: log::LevelFilter,
    pub format: LogFormat,
    /// Append here instead of stderr.
    pub file: Option<PathBuf>,
}

impl LogConfig {
    /// Text to stderr at `level`.
    pub fn stderr(level: log::LevelFilter) -> LogConfig {
        LogConfig {
            level,
            format: LogFormat::Text,
            file: None,
        }
    }
}

/// Reads the three `--log.*` options of a table that holds them.
pub fn log_config(src: &Sources<'_>) -> Result<LogConfig, ConfigError> {
    let level = src.get(LOG_LEVEL.flag);
    let format = src.get(LOG_FORMAT.flag);
    let file = src.get(LOG_FILE.flag);
    let format = match format.value.trim() {
        // The official client's name for its text format.
        "text" | "struct-text" => LogFormat::Text,
        "json" => LogFormat::Json,
        _ => return Err(err(&format.source, "must be text (or struct-text) or json")),
    };
    let file = file.value.trim();
    Ok(LogConfig {
        level: parse_log_level(&level)?,
        format,
        file: (!file.is_empty()).then(|| PathBuf::from(file)),
    })
}

/// A log level name (`off` included).
pub fn parse_log_level(raw: &Raw) -> Result<log::LevelFilter, ConfigError> {
    raw.value.trim().parse().map_err(|_| {
        err(
            &raw.source,
            "must be one of off, error, warn, info, debug, trace",
        )
    })
}
