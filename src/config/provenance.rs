//! Where each of `run`'s effective settings came from — a flag, the environment, the env file,
//! the YAML file (with its line) or the default — for `mcp-tunnel doctor`.
//!
//! The settings are read exactly as [`parse_run`](super::parse_run) reads them, and validated
//! the same way first, so what is shown is what `run` would use. Secret values never appear:
//! a literal key, client key or header value is shown as `<redacted>` (a reference such as
//! `env:VAR` as written), a proxy with credentials in full as `<redacted>`, URL queries as `?…`,
//! a command as its program without its arguments; the settings of parts we do not ship only
//! as given.

use std::ffi::OsString;

use super::run::{ConfigFiles, SECRET_OPTIONS, with_run_sources};
use super::run_options::{
    CP_EXTRA_HEADERS, MCP_COMMAND, MCP_DISCOVERY_HEADERS, MCP_EXTRA_HEADERS, RUN_OPTIONS,
};
use super::table::{ConfigError, Origin, Raw, Sources};
use super::values::is_reference;

/// One effective setting.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Setting {
    pub flag: &'static str,
    /// The value, secrets masked; repeated values joined with ` | `; `(none)` when empty.
    pub value: String,
    /// `flag`, `env VAR`, `env file PATH (VAR)`, `yaml FILE:LINE KEY` or `default`.
    pub origin: String,
    #[serde(skip)]
    pub from_default: bool,
}

const REDACTED: &str = "<redacted>";

/// `run`'s settings for `args` and the environment; `Ok(None)` for `--help`. A configuration
/// `run` would refuse is the same error here.
pub fn run_settings(
    args: Vec<OsString>,
    process_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Vec<Setting>>, ConfigError> {
    with_run_sources(args, process_env, |src, files| {
        super::run::validate(src)?;
        Ok(RUN_OPTIONS
            .iter()
            .filter_map(|o| setting(src, &files, process_env, o.flag))
            .collect())
    })
}

fn setting(
    src: &Sources<'_>,
    files: &ConfigFiles<'_>,
    process_env: &dyn Fn(&str) -> Option<String>,
    flag: &'static str,
) -> Option<Setting> {
    let o = RUN_OPTIONS.iter().find(|o| o.flag == flag)?;
    let origin = src.origin(flag)?;
    if o.unsupported.is_some() && origin == Origin::Default {
        return None;
    }
    let raws = if o.repeatable {
        src.values(flag)
    } else {
        src.lookup(flag).into_iter().collect()
    };
    let first = raws.first().map(|r| r.source.clone()).unwrap_or_default();
    let origin_text = match origin {
        Origin::Flag => "flag".to_string(),
        Origin::Default => "default".to_string(),
        Origin::Env => match files.env_file {
            Some((path, _)) if process_env(&first).is_none_or(|v| v.is_empty()) => {
                format!("env file {path} ({first})")
            }
            _ => format!("env {first}"),
        },
        Origin::File => match first.split_once(": ") {
            Some((at, key)) => format!("yaml {at} {key}"),
            None => format!("yaml {first}"),
        },
    };
    let value = if o.unsupported.is_some() {
        "(given)".to_string()
    } else {
        let shown: Vec<String> = raws.iter().map(|r| masked(flag, r)).collect();
        match shown.join(" | ") {
            v if v.is_empty() => "(none)".to_string(),
            v => v,
        }
    };
    Some(Setting {
        flag,
        value,
        origin: origin_text,
        from_default: origin == Origin::Default,
    })
}

/// `raw`'s value as it may be shown.
fn masked(flag: &str, raw: &Raw) -> String {
    let v = raw.value.as_str();
    if [CP_EXTRA_HEADERS, MCP_EXTRA_HEADERS, MCP_DISCOVERY_HEADERS].contains(&flag) {
        if is_reference(v) {
            return v.to_string();
        }
        let names: Vec<String> = (v.split(','))
            .filter_map(|h| h.split_once(':'))
            .map(|(name, value)| match value.trim() {
                r if is_reference(r) => format!("{}: {r}", name.trim()),
                _ => format!("{}: {REDACTED}", name.trim()),
            })
            .collect();
        return names.join(", ");
    }
    if flag == MCP_COMMAND {
        // Arguments may carry tokens: the program only, as doctor's checks name it.
        let (prefix, line) = match v.split_once("command=") {
            Some((prefix, line)) if v.starts_with("channel=") => {
                (format!("{prefix}command="), line)
            }
            _ => (String::new(), v),
        };
        let mut words = line.split_whitespace();
        let program = words.next().unwrap_or_default();
        return match words.count() {
            0 => format!("{prefix}{program}"),
            n => format!("{prefix}{program} <{n} arguments not shown>"),
        };
    }
    if SECRET_OPTIONS.contains(&flag) {
        let plain_proxy = flag.ends_with("http-proxy") && !v.contains('@');
        return if v.is_empty() || is_reference(v) || plain_proxy {
            v.to_string()
        } else {
            REDACTED.to_string()
        };
    }
    // A URL query may carry a token; so may a channel's proxy credentials.
    let mut parts: Vec<String> = Vec::new();
    for part in v.split(',') {
        let part = match part.split_once('?') {
            Some((before, _)) if before.contains("://") => format!("{before}?…"),
            _ => part.to_string(),
        };
        match part.split_once('=') {
            Some((k, val)) if k == "http-proxy" && val.contains('@') => {
                parts.push(format!("{k}={REDACTED}"));
            }
            Some((k, val)) if k == "client-key" && !is_reference(val) && val.contains("BEGIN") => {
                parts.push(format!("{k}={REDACTED}"));
            }
            _ => parts.push(part),
        }
    }
    parts.join(",")
}

/// The settings as text lines, `FLAG = VALUE   (ORIGIN)`; with `all`, the defaults too.
pub fn settings_text(settings: &[Setting], all: bool) -> String {
    let shown: Vec<&Setting> = settings.iter().filter(|s| all || !s.from_default).collect();
    let width = shown.iter().map(|s| s.flag.len()).max().unwrap_or(0);
    let mut out = String::new();
    for s in shown {
        out.push_str(&format!(
            "  {:width$} = {}   ({})\n",
            s.flag, s.value, s.origin
        ));
    }
    out
}
