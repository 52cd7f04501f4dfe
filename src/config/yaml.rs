//! The official client's YAML config file (`--config`, `TUNNEL_CLIENT_CONFIG`, profiles), read
//! into a [`Layer`] of raw option values beneath the environment.
//!
//! The schema is the option table itself: each [`Opt::yaml`] key path (`control_plane.base_url`)
//! is a leaf, every prefix of one a section, anything else an unknown key — an error naming the
//! key and its line, as the official client's strict decoding refuses it. [`Opt::yaml_shape`]
//! says how a value becomes raw values in the option's own grammar (a header map becomes
//! `Name: value` entries, a list of servers becomes `channel=…,url=…` entries), so everything after
//! this file validates a YAML value exactly as it validates the same setting from the environment.
//! The file must say `config_version: 1`. `env:VAR` / `file:/path` values are references: options
//! that resolve references themselves (secrets, proxies, certificates, header values) get them as
//! written, so they stay out of memory until used and their variables are scrubbed from stdio
//! children; every other reference is resolved here. No error or notice repeats a value.

use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::run_options::{API_KEY, REFERENCE_OPTIONS};
use super::table::{ConfigError, Layer, Opt, Raw, YamlShape, err};
use super::values::{is_reference, resolve_secret};

/// The only `config_version` there is.
const CONFIG_VERSION: &str = "1";
/// Entry fields whose references the channel grammar resolves itself.
const REFERENCE_FIELDS: &[&str] = &["client_cert", "client_key", "http_proxy"];
/// The largest config file read (a config is a few kilobytes).
const MAX_FILE: u64 = 1024 * 1024;

/// A config file read into raw values, and the warnings it deserves.
#[derive(Default)]
pub struct Loaded {
    pub layer: Layer,
    pub notices: Vec<String>,
}

/// Reads `path` against `options`; `env` resolves references. Errors are keyed `FILE:LINE: key`.
pub fn load(
    path: &Path,
    options: &'static [Opt],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let file = path.display().to_string();
    let text = read(path).map_err(|e| err(&file, &e))?;
    let mut opts = serde_saphyr::Options::default();
    // The snippet would quote the file's text, which may hold a key.
    opts.with_snippet = false;
    let root: Spanned<Node> = serde_saphyr::from_str_with_options(&text, opts).map_err(|e| {
        let key = match e.location() {
            Some(at) => format!("{file}:{}", at.line()),
            None => file.clone(),
        };
        err(
            &key,
            "is not valid YAML; check the indentation and quoting on this line",
        )
    })?;
    let Node::Map(entries) = root.value else {
        return Err(err(
            &file,
            "is not a YAML config file: expected a map starting with config_version: 1",
        ));
    };
    let mut reader = Reader {
        file,
        options,
        env,
        loaded: Loaded::default(),
        version: false,
    };
    reader.section("", entries)?;
    if !reader.version {
        return Err(err(
            &reader.file,
            "has no config_version; the official schema's files start with config_version: 1",
        ));
    }
    Ok(reader.loaded)
}

/// Whether `--config PATH` names a YAML file rather than a KEY=VALUE env file: a `.yaml`/`.yml`
/// name, or text that is not an env file and reads like YAML (`key:` before any `=`).
pub fn looks_like_yaml(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
    {
        return true;
    }
    let Ok(text) = read(path) else {
        return false;
    };
    let mut lines = text.lines().map(str::trim);
    let first = lines.find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'));
    crate::envfile::parse(&text).is_err()
        && first.is_some_and(|l| match (l.find(':'), l.find('=')) {
            (Some(colon), Some(eq)) => colon < eq,
            (colon, _) => colon.is_some() || l.starts_with("---"),
        })
}

fn read(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if meta.len() > MAX_FILE {
        return Err(format!("is larger than {MAX_FILE} bytes"));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))
}

struct Reader<'e> {
    file: String,
    options: &'static [Opt],
    env: &'e dyn Fn(&str) -> Option<String>,
    loaded: Loaded,
    version: bool,
}

impl Reader<'_> {
    fn at(&self, line: u64, key: &str) -> String {
        format!("{}:{line}: {key}", self.file)
    }

    /// The entries of a section (`prefix` empty for the top level).
    fn section(&mut self, prefix: &str, entries: Vec<Entry>) -> Result<(), ConfigError> {
        for (key, value) in entries {
            let line = key.referenced.line();
            let Node::Scalar(name) = key.value else {
                return Err(err(&self.at(line, prefix), "has a key that is not a name"));
            };
            let path = match prefix {
                "" => name,
                _ => format!("{prefix}.{name}"),
            };
            if path == "config_version" {
                self.version = true;
                if !matches!(&value.value, Node::Scalar(v) if v == CONFIG_VERSION) {
                    return Err(err(
                        &self.at(value.referenced.line(), &path),
                        "must be 1, the only version of the official schema",
                    ));
                }
            } else if let Some(o) = self.options.iter().find(|o| o.yaml == path) {
                self.leaf(o, &path, value)?;
            } else if (self.options.iter()).any(|o| o.yaml.starts_with(&format!("{path}."))) {
                match value.value {
                    Node::Map(inner) => self.section(&path, inner)?,
                    Node::Null => {}
                    _ => return Err(err(&self.at(line, &path), "must be a map of settings")),
                }
            } else {
                return Err(err(
                    &self.at(line, &path),
                    "unknown key: neither the official schema nor mcp-tunnel has it (YAML keys are \
                     listed in `mcp-tunnel run --help`)",
                ));
            }
        }
        Ok(())
    }

    /// One option's value, as raw values in the option's own grammar.
    fn leaf(
        &mut self,
        o: &'static Opt,
        path: &str,
        value: Spanned<Node>,
    ) -> Result<(), ConfigError> {
        let line = value.referenced.line();
        let source = self.at(line, path);
        let wrong = |what: &str| err(&source, &format!("must be {what}"));
        let raws = match (o.yaml_shape, value.value) {
            (_, Node::Null) => return Ok(()),
            (YamlShape::Scalar, Node::Scalar(v)) => {
                let raw = Raw { source, value: v };
                if o.flag == API_KEY && !is_reference(&raw.value) {
                    self.loaded.notices.push(format!(
                        "{} holds the API key itself; anyone who can read the file has it — prefer \
                         env:VAR or file:/path",
                        raw.source
                    ));
                }
                vec![self.resolved(raw, REFERENCE_OPTIONS.contains(&o.flag))?]
            }
            (YamlShape::Scalar, _) => return Err(wrong("a single value")),
            (YamlShape::List, Node::Seq(items)) => {
                let mut raws = Vec::new();
                for item in items {
                    let Node::Scalar(v) = item.value else {
                        return Err(err(
                            &self.at(item.referenced.line(), path),
                            "must be a list of single values",
                        ));
                    };
                    let raw = Raw {
                        source: self.at(item.referenced.line(), path),
                        value: v,
                    };
                    raws.push(self.resolved(raw, false)?);
                }
                raws
            }
            (YamlShape::List, _) => return Err(wrong("a list")),
            (YamlShape::Headers, Node::Map(entries)) => {
                let mut raws = Vec::new();
                for (name, v) in entries {
                    let at = name.referenced.line();
                    let (Node::Scalar(name), Node::Scalar(v)) = (name.value, v.value) else {
                        return Err(wrong("a map of header names to values"));
                    };
                    let source = self.at(at, &format!("{path}.{name}"));
                    raws.push(Raw {
                        source,
                        value: format!("{name}: {v}"),
                    });
                }
                raws
            }
            (YamlShape::Headers, _) => return Err(wrong("a map of header names to values")),
            (YamlShape::Entries(fields, required, bare_unless), Node::Seq(items)) => {
                let mut raws = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    let path = format!("{path}[{i}]");
                    raws.push(self.entry(&path, fields, (required, bare_unless), item)?);
                }
                raws
            }
            (YamlShape::Entries(..), _) => return Err(wrong("a list of maps")),
        };
        self.loaded.layer.values.insert(o.flag, raws);
        Ok(())
    }

    /// One map of a list of entries, as `key=value,…` (see [`YamlShape::Entries`]).
    fn entry(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        (required, bare_unless): (&str, &str),
        item: Spanned<Node>,
    ) -> Result<Raw, ConfigError> {
        let source = self.at(item.referenced.line(), path);
        let Node::Map(entries) = item.value else {
            return Err(err(&source, "must be a map"));
        };
        let mut given: Vec<(&str, String)> = Vec::new();
        for (key, value) in entries {
            let line = key.referenced.line();
            let name = match key.value {
                Node::Scalar(name) => name,
                _ => String::new(),
            };
            let Some(&(field, entry_key)) = fields.iter().find(|(f, _)| *f == name) else {
                return Err(err(
                    &self.at(line, &format!("{path}.{name}")),
                    "unknown key",
                ));
            };
            let at = self.at(value.referenced.line(), &format!("{path}.{name}"));
            let value = match value.value {
                Node::Null => continue,
                Node::Scalar(v) => v,
                _ => return Err(err(&at, "must be a single value")),
            };
            let raw =
                self.resolved(Raw { source: at, value }, REFERENCE_FIELDS.contains(&field))?;
            given.push((entry_key, raw.value));
        }
        let key_of = |field: &str| fields.iter().find(|(f, _)| *f == field).map(|(_, e)| *e);
        let (required_key, bare_key) = (key_of(required), key_of(bare_unless));
        if !given.iter().any(|(k, _)| Some(*k) == required_key) {
            return Err(err(&source, &format!("needs {required}")));
        }
        let bare = bare_key.is_some_and(|b| !given.iter().any(|(k, _)| *k == b));
        // The entry grammar's order: fields as listed (a command comes last: it may hold commas).
        let text: Vec<String> = (fields.iter())
            .filter_map(|(_, e)| given.iter().find(|(k, _)| k == e))
            .map(|(k, v)| match bare && Some(*k) == required_key {
                true => v.clone(),
                false => format!("{k}={v}"),
            })
            .collect();
        Ok(Raw {
            source,
            value: text.join(","),
        })
    }

    /// `raw` with an `env:`/`file:` reference resolved, unless its option resolves it itself.
    fn resolved(&self, raw: Raw, keep_reference: bool) -> Result<Raw, ConfigError> {
        if keep_reference || !is_reference(&raw.value) {
            return Ok(raw);
        }
        let value = resolve_secret(&raw, self.env)?.expose().trim().to_string();
        Ok(Raw { value, ..raw })
    }
}

type Entry = (Spanned<Node>, Spanned<Node>);

/// A YAML value with the position of every key and value in it.
enum Node {
    Null,
    /// A string, number or boolean, as text.
    Scalar(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<Entry>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RUN_OPTIONS;

    fn load_text(text: &str) -> Result<Loaded, ConfigError> {
        let path = std::env::temp_dir().join(format!(
            "mcp-tunnel-yaml-{}-{}.yaml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        let env = |name: &str| (name == "REF").then(|| "from-env".to_string());
        let out = load(&path, RUN_OPTIONS, &env);
        std::fs::remove_file(&path).unwrap();
        out
    }

    fn value(l: &Loaded, flag: &str) -> Vec<String> {
        l.layer.values[flag]
            .iter()
            .map(|r| r.value.clone())
            .collect()
    }

    #[test]
    fn shapes_become_the_options_own_grammar() {
        let l = load_text(
            "config_version: 1\ncontrol_plane:\n  tunnel_id: t\n  max_inflight_requests: 7\n  \
             extra_headers:\n    X-A: one\n  poll_channels: [main, b]\n  base_url: env:REF\n\
             mcp:\n  server_urls:\n    - url: http://h/mcp\n      channel: b\n  commands:\n    \
             - command: srv --a,b\n",
        )
        .unwrap();
        assert_eq!(value(&l, "--control-plane.max-inflight"), ["7"]);
        assert_eq!(value(&l, "--control-plane.extra-headers"), ["X-A: one"]);
        assert_eq!(value(&l, "--control-plane.poll-channel"), ["main", "b"]);
        assert_eq!(value(&l, "--control-plane.base-url"), ["from-env"]);
        assert_eq!(
            value(&l, "--mcp.server-url"),
            ["channel=b,url=http://h/mcp"]
        );
        assert_eq!(value(&l, "--mcp.command"), ["srv --a,b"]);
        let src = &l.layer.values["--control-plane.max-inflight"][0].source;
        assert!(
            src.ends_with(":4: control_plane.max_inflight_requests"),
            "{src}"
        );
    }

    #[test]
    fn unknown_keys_and_versions_are_named_with_their_line() {
        let e = load_text("config_version: 1\ncontrol_plane:\n  tunel_id: x\n")
            .err()
            .unwrap();
        assert!(e.key.ends_with(":3: control_plane.tunel_id"), "{e}");
        let e = load_text("config_version: 2\n").err().unwrap();
        assert!(e.key.ends_with(":1: config_version"), "{e}");
        let e = load_text("control_plane:\n  tunnel_id: x\n").err().unwrap();
        assert!(e.message.contains("config_version"), "{e}");
        let e = load_text("config_version: 1\nlog:\n  level: [a]\n")
            .err()
            .unwrap();
        assert!(e.key.ends_with(":3: log.level"), "{e}");
    }
}
