//! Which YAML config file `run` reads, as the official client chooses it: `--config FILE`,
//! `--profile NAME` (`NAME.yaml` in the profile directory) or `--profile-file FILE.yaml`; without
//! any of those flags, `TUNNEL_CLIENT_CONFIG`, `TUNNEL_CLIENT_PROFILE` or
//! `TUNNEL_CLIENT_PROFILE_FILE`. The three are mutually exclusive among the flags, and among the
//! variables; a flag wins over every variable.
//!
//! The profile directory is `--profile-dir`, else `TUNNEL_CLIENT_PROFILE_DIR`, else
//! `$XDG_CONFIG_HOME/tunnel-client`, else `~/.config/tunnel-client`. A leading `~/` is expanded
//! with `HOME`. Profile names are letters, digits, `.`, `_` and `-` (no path separators).

use std::path::PathBuf;

use super::table::{ConfigError, Sources, err};

pub(super) const CONFIG: &str = "--config";
pub(super) const PROFILE: &str = "--profile";
pub(super) const PROFILE_DIR: &str = "--profile-dir";
pub(super) const PROFILE_FILE: &str = "--profile-file";
pub(super) const CONFIG_VAR: &str = "TUNNEL_CLIENT_CONFIG";
pub(super) const PROFILE_VAR: &str = "TUNNEL_CLIENT_PROFILE";
pub(super) const PROFILE_DIR_VAR: &str = "TUNNEL_CLIENT_PROFILE_DIR";
pub(super) const PROFILE_FILE_VAR: &str = "TUNNEL_CLIENT_PROFILE_FILE";
/// The directory below the user's config directory that holds named profiles.
const PROFILE_SUBDIR: &str = "tunnel-client";

/// How a config file was chosen: `(key, value)`, e.g. `("--profile", "prod")`.
type Choice = (&'static str, String);

/// The YAML config file chosen by the flags or the environment, if any.
pub(super) fn config_file(
    src: &Sources<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<PathBuf>, ConfigError> {
    let flag = |name: &'static str| src.flag(name).map(|v| (name, v.trim().to_string()));
    let var = |name: &'static str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(|v| (name, v))
    };
    let profile_dir = flag(PROFILE_DIR);
    if let Some((key, dir)) = &profile_dir
        && dir.is_empty()
    {
        return Err(err(key, "needs a directory"));
    }
    let flags = [flag(CONFIG), flag(PROFILE), flag(PROFILE_FILE)];
    let chosen = match one_of(flags)? {
        Some(choice) => Some(choice),
        None => one_of([var(CONFIG_VAR), var(PROFILE_VAR), var(PROFILE_FILE_VAR)])?,
    };
    let Some((key, value)) = chosen else {
        return Ok(None);
    };
    if value.is_empty() {
        return Err(err(key, "needs a value"));
    }
    let path = match key {
        CONFIG | CONFIG_VAR => PathBuf::from(value),
        PROFILE | PROFILE_VAR => {
            valid_name(key, &value)?;
            let dir = match profile_dir.or_else(|| var(PROFILE_DIR_VAR)) {
                Some((dir_key, dir)) => expand_home(dir_key, &dir, env)?,
                None => default_dir(env)?,
            };
            dir.join(format!("{value}.yaml"))
        }
        _ => {
            let path = expand_home(key, &value, env)?;
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if path.extension().is_none_or(|e| e != "yaml") {
                return Err(err(key, "must name a .yaml file"));
            }
            valid_name(key, stem)?;
            path
        }
    };
    Ok(Some(path))
}

/// The one choice given among `choices`; two are an error naming both.
fn one_of(choices: [Option<Choice>; 3]) -> Result<Option<Choice>, ConfigError> {
    let mut given = choices.into_iter().flatten();
    let first = given.next();
    if let (Some((a, _)), Some((b, _))) = (&first, given.next()) {
        return Err(err(
            a,
            &format!("and {b} both choose a config file; give one"),
        ));
    }
    Ok(first)
}

fn valid_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && (name.chars()).all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(err(
            key,
            &format!(
                "{name:?} is not a profile name: letters, digits, '.', '_' and '-', starting with \
                 a letter or digit, no path separators"
            ),
        ))
    }
}

fn expand_home(
    key: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf, ConfigError> {
    let rest = match path {
        "~" => "",
        _ => match path.strip_prefix("~/") {
            Some(rest) => rest,
            None => return Ok(PathBuf::from(path)),
        },
    };
    match env("HOME").filter(|h| !h.trim().is_empty()) {
        Some(home) => Ok(PathBuf::from(home.trim()).join(rest)),
        None => Err(err(
            key,
            &format!("cannot expand {path:?}: HOME is not set"),
        )),
    }
}

fn default_dir(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, ConfigError> {
    let set = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(xdg) = set("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(xdg).join(PROFILE_SUBDIR));
    }
    match set("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".config").join(PROFILE_SUBDIR)),
        None => Err(err(
            PROFILE,
            "has no profile directory: set --profile-dir, TUNNEL_CLIENT_PROFILE_DIR, \
             XDG_CONFIG_HOME or HOME",
        )),
    }
}
