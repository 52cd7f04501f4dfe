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

use std::collections::HashMap;

use granit_parser::{Event, Parser, ScalarStyle};

use super::run_options::{API_KEY, REFERENCE_OPTIONS};
use super::table::{ConfigError, Layer, Opt, Raw, YamlShape, err};
use super::values::{is_reference, resolve_secret};

/// The only `config_version` there is.
const CONFIG_VERSION: &str = "1";
/// Entry fields whose references the channel grammar resolves itself.
const REFERENCE_FIELDS: &[&str] = &["client_cert", "client_key", "http_proxy"];
/// The largest config file read (a config is a few kilobytes).
const MAX_FILE: u64 = 1024 * 1024;
/// The most values one file may hold once aliases are expanded (no "billion laughs").
const MAX_NODES: usize = 100_000;

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
    let root = parse(&text).map_err(|(line, why)| {
        err(
            &format!("{file}:{line}"),
            &format!("is not valid YAML ({why}); check the indentation and quoting"),
        )
    })?;
    let Some(Spanned {
        value: Node::Map(entries),
        ..
    }) = root
    else {
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
    fn at(&self, line: usize, key: &str) -> String {
        format!("{}:{line}: {key}", self.file)
    }

    /// The entries of a section (`prefix` empty for the top level).
    fn section(&mut self, prefix: &str, entries: Vec<Entry>) -> Result<(), ConfigError> {
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in entries {
            let line = key.line;
            let Node::Scalar(name) = key.value else {
                return Err(err(&self.at(line, prefix), "has a key that is not a name"));
            };
            let path = match prefix {
                "" => name,
                _ => format!("{prefix}.{name}"),
            };
            if seen.contains(&path) {
                return Err(err(&self.at(line, &path), "is given twice; give it once"));
            }
            seen.push(path.clone());
            if path == "config_version" {
                self.version = true;
                if !matches!(&value.value, Node::Scalar(v) if v == CONFIG_VERSION) {
                    return Err(err(
                        &self.at(value.line, &path),
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
    fn leaf(&mut self, o: &'static Opt, path: &str, value: Spanned) -> Result<(), ConfigError> {
        let line = value.line;
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
                            &self.at(item.line, path),
                            "must be a list of single values",
                        ));
                    };
                    let raw = Raw {
                        source: self.at(item.line, path),
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
                    let at = name.line;
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
        item: Spanned,
    ) -> Result<Raw, ConfigError> {
        let source = self.at(item.line, path);
        let Node::Map(entries) = item.value else {
            return Err(err(&source, "must be a map"));
        };
        let mut given: Vec<(&str, String)> = Vec::new();
        for (key, value) in entries {
            let line = key.line;
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
            let at = self.at(value.line, &format!("{path}.{name}"));
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

type Entry = (Spanned, Spanned);

/// A YAML value and the line it starts on.
#[derive(Clone)]
struct Spanned {
    value: Node,
    line: usize,
}

/// A YAML value with the position of every key and value in it.
#[derive(Clone)]
enum Node {
    Null,
    /// A scalar (string, number or boolean) as written.
    Scalar(String),
    Seq(Vec<Spanned>),
    Map(Vec<Entry>),
}

impl Node {
    fn size(&self) -> usize {
        match self {
            Node::Null | Node::Scalar(_) => 1,
            Node::Seq(items) => 1 + items.iter().map(|i| i.value.size()).sum::<usize>(),
            Node::Map(entries) => {
                1 + (entries.iter())
                    .map(|(k, v)| k.value.size() + v.value.size())
                    .sum::<usize>()
            }
        }
    }
}

/// A collection being read: its line, anchor id (0 for none) and what it holds so far.
struct Open {
    line: usize,
    anchor: usize,
    items: Vec<Spanned>,
    map: bool,
}

/// The one document of `text` as a tree (`None` when empty), from the parser's events; aliases
/// are expanded. `Err((line, why))`.
fn parse(text: &str) -> Result<Option<Spanned>, (usize, String)> {
    let mut anchors: HashMap<usize, Spanned> = HashMap::new();
    let mut open: Vec<Open> = Vec::new();
    let mut root = None;
    let (mut documents, mut nodes) = (0, 0);
    for next in Parser::new_from_str(text) {
        let (event, span) = next.map_err(|e| (e.marker().line(), e.info()))?;
        let line = span.start.line();
        let (done, anchor) = match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err((line, "a second document; a config file holds one".into()));
                }
                continue;
            }
            Event::Scalar(v, style, anchor, _) => {
                let null = style == ScalarStyle::Plain
                    && matches!(&*v, "" | "~" | "null" | "Null" | "NULL");
                let value = if null {
                    Node::Null
                } else {
                    Node::Scalar(v.into_owned())
                };
                (Spanned { value, line }, anchor)
            }
            Event::Alias(id) => {
                let Some(target) = anchors.get(&id) else {
                    return Err((line, "an alias to an unknown anchor".into()));
                };
                nodes += target.value.size();
                (
                    Spanned {
                        line,
                        ..target.clone()
                    },
                    0,
                )
            }
            Event::SequenceStart(_, anchor, _) | Event::MappingStart(_, anchor, _) => {
                let map = matches!(event, Event::MappingStart(..));
                open.push(Open {
                    line,
                    anchor,
                    items: Vec::new(),
                    map,
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(done) = open.pop() else {
                    return Err((line, "an unbalanced collection".into()));
                };
                let value = match done.map {
                    false => Node::Seq(done.items),
                    true => {
                        let mut items = done.items.into_iter();
                        let mut entries = Vec::new();
                        while let (Some(k), Some(v)) = (items.next(), items.next()) {
                            entries.push((k, v));
                        }
                        Node::Map(entries)
                    }
                };
                (
                    Spanned {
                        value,
                        line: done.line,
                    },
                    done.anchor,
                )
            }
            _ => continue,
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err((line, format!("more than {MAX_NODES} values")));
        }
        if anchor != 0 {
            anchors.insert(anchor, done.clone());
        }
        match open.last_mut() {
            Some(parent) => parent.items.push(done),
            None => root = Some(done),
        }
    }
    Ok(root)
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
