//! KEY=VALUE files in the format of `/etc/default/*`, `/etc/sysconfig/*` and systemd's
//! `EnvironmentFile=`, so one file serves the init system and `--env-file` alike.
//!
//! One assignment per line; blank lines and lines starting with `#` or `;` are ignored; an
//! `export ` prefix is allowed; a value may be wrapped in single or double quotes (inside double
//! quotes `\"` and `\\` are escapes). No variable expansion and no command substitution: the
//! file is data, never run.

use std::collections::HashMap;
use std::path::Path;

/// Reads a file; errors name the file and the line, never a value (values may be secrets).
pub fn load(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // A YAML file given as an env file (--env-file, ENV_FILE): say where it belongs.
    let yaml = text
        .lines()
        .any(|l| l.trim_start().starts_with("config_version:"));
    parse(&text).map_err(|(line, why)| match yaml {
        true => format!(
            "{} is a YAML config file (config_version:), not a KEY=VALUE env file; give it \
             with --config or TUNNEL_CLIENT_CONFIG",
            path.display()
        ),
        false => format!("{} line {line}: {why}", path.display()),
    })
}

/// Parses the text of a file; `Err((line number, reason))`.
pub fn parse(text: &str) -> Result<HashMap<String, String>, (usize, String)> {
    let mut vars = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err((i + 1, "expected KEY=VALUE".into()));
        };
        let key = key.trim();
        let valid_key = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err((i + 1, format!("{key:?} is not a variable name")));
        }
        let value = unquote(value.trim()).ok_or((i + 1, format!("{key}: unterminated quote")))?;
        vars.insert(key.to_string(), value);
    }
    Ok(vars)
}

fn unquote(value: &str) -> Option<String> {
    if let Some(inner) = value.strip_prefix('\'') {
        return inner.strip_suffix('\'').map(str::to_string);
    }
    if let Some(inner) = value.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match (c, chars.clone().next()) {
                ('\\', Some(next @ ('"' | '\\'))) => {
                    out.push(next);
                    chars.next();
                }
                _ => out.push(c),
            }
        }
        return Some(out);
    }
    Some(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_init_system_format() {
        let vars = parse(
            "# comment\n; also\n\nCONTROL_PLANE_TUNNEL_ID=tunnel_x\nexport LOG_LEVEL=debug\n\
             MCP_EXTRA_HEADERS=\"X-A: 1, X-B: \\\"two\\\"\"\nSINGLE='a $b'\nEMPTY=\n",
        )
        .unwrap();
        assert_eq!(vars["CONTROL_PLANE_TUNNEL_ID"], "tunnel_x");
        assert_eq!(vars["LOG_LEVEL"], "debug");
        assert_eq!(vars["MCP_EXTRA_HEADERS"], "X-A: 1, X-B: \"two\"");
        assert_eq!(vars["SINGLE"], "a $b");
        assert_eq!(vars["EMPTY"], "");
    }

    #[test]
    fn errors_name_the_line_not_the_value() {
        assert_eq!(parse("A=1\nno equals").unwrap_err().0, 2);
        let (line, why) = parse("KEY=\"sk-secret").unwrap_err();
        assert_eq!(line, 1);
        assert!(!why.contains("sk-secret"));
        assert!(parse("1BAD=x").is_err());
    }
}
