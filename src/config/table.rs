//! The one command-line machinery: an option table ([`Opt`]) and the generic parser that turns
//! flags, the environment and an env file into raw values ([`Sources`], [`Raw`]).
//!
//! Every subcommand (`run`, `relay`, `stub`, `demo`, `relay tunnel …`) declares its options as a
//! `&[Opt]` table written `Opt { flag, env, default, help, ..Opt::BASE }`; the same table drives
//! parsing and `--help`, so they cannot drift. Precedence: flag > environment variable (first
//! non-empty one of the option's list) > the env file > a config-file [`Layer`] (the YAML file,
//! keyed by [`Opt::yaml`]) > the table's default. Errors are
//! [`ConfigError`]s naming the key (flag or variable) a value came from; this file never looks at
//! what a value means, so it never echoes one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// One option: its flag, the environment variables it is read from (first set wins), its default
/// and its help line.
#[derive(Clone, Copy)]
pub struct Opt {
    pub flag: &'static str,
    pub env: &'static [&'static str],
    /// `None` for a required option; `Some("")` for one that is simply unset by default.
    pub default: Option<&'static str>,
    pub help: &'static str,
    /// May be given several times (flags repeated, or one entry per line in the variable).
    pub repeatable: bool,
    /// A true/false option: the bare flag means true; `--flag=false` also works.
    pub switch: bool,
    /// A path whose flag value may be any bytes, not only UTF-8; read it with [`Sources::path`].
    pub os_path: bool,
    /// Other spellings of the flag (e.g. an older name), rewritten to `flag` before parsing.
    pub aliases: &'static [&'static str],
    /// A setting of the official client that this build does not implement; `help` says why.
    /// Such an option is parsed only to be judged (see [`Unsupported`]).
    pub unsupported: Option<Unsupported>,
    /// The option's key in the YAML config file (`control_plane.poll_timeout`); `""` for none.
    pub yaml: &'static str,
    /// What the YAML value looks like and how it becomes the option's raw values.
    pub yaml_shape: YamlShape,
}

/// The shape of an option's value in the YAML config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YamlShape {
    /// One scalar: a string, number or boolean, read as its text.
    Scalar,
    /// A list of scalars, one raw value each.
    List,
    /// A map of header names to values, one `Name: value` raw value each.
    Headers,
    /// A list of maps, each entry written `key=value,…` in the option's own grammar:
    /// `(YAML field, entry key)` pairs in output order, then the required field, then a field
    /// (the channel) without which the required one is written bare, without its key.
    Entries(
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
    ),
}

/// What becomes of an official client's setting that this build lacks, when it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// A configuration error naming it: running without it would behave differently.
    Refused,
    /// Accepted with a warning: it configures a part we do not ship and changes nothing on the
    /// wire.
    Ignored,
}

impl Opt {
    /// A starting point for option tables: `Opt { flag, help, ..Opt::BASE }`.
    pub const BASE: Opt = Opt {
        flag: "",
        env: &[],
        default: None,
        help: "",
        repeatable: false,
        switch: false,
        os_path: false,
        aliases: &[],
        unsupported: None,
        yaml: "",
        yaml_shape: YamlShape::Scalar,
    };

    /// This option with its key (and value shape) in the YAML config file.
    pub const fn in_yaml(self, key: &'static str, shape: YamlShape) -> Opt {
        Opt {
            yaml: key,
            yaml_shape: shape,
            ..self
        }
    }
}

/// A configuration problem, naming the key it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A [`ConfigError`] for `key`.
pub fn err(key: &str, message: &str) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: message.to_string(),
    }
}

/// Why [`Sources::parse_known`] could not read the command line. Kept apart from
/// [`ConfigError`] so each front end words a repeat its own way.
#[derive(Debug)]
pub enum ArgError {
    /// A flag that is not repeatable was given more than once.
    Repeated(&'static str),
    /// A flag's value could not be read (missing, or not UTF-8).
    Invalid(ConfigError),
}

/// A raw value and the key it was read from (a flag, an environment variable, or
/// `FILE:LINE: yaml.key`), for messages.
#[derive(Clone)]
pub struct Raw {
    pub source: String,
    pub value: String,
}

/// Option values read from a config file: per flag, its raw values, each with a source
/// `FILE:LINE: yaml.key`. Sits below the environment.
#[derive(Default)]
pub struct Layer {
    pub values: HashMap<&'static str, Vec<Raw>>,
}

/// Where an option's effective value came from (see [`Sources::origin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag,
    /// An environment variable (the process's or the env file's).
    Env,
    /// The config file [`Layer`].
    File,
    Default,
}

/// Where option values come from: parsed flags, then the environment, then a config-file
/// layer, then the table's defaults.
pub struct Sources<'a> {
    options: &'static [Opt],
    flags: HashMap<&'static str, Vec<OsString>>,
    env: &'a dyn Fn(&str) -> Option<String>,
    layer: Option<&'a Layer>,
}

impl<'a> Sources<'a> {
    /// Parses `args` against `options`. `Ok(None)` means `-h`/`--help` was asked for. Each flag
    /// may be given once (unless repeatable); anything else is an error naming it and pointing
    /// at `mcp-tunnel {command} --help`.
    pub fn parse(
        options: &'static [Opt],
        args: Vec<OsString>,
        env: &'a dyn Fn(&str) -> Option<String>,
        command: &str,
    ) -> Result<Option<Sources<'a>>, ConfigError> {
        let parsed = Sources::parse_known(options, args, env).map_err(|e| match e {
            ArgError::Repeated(flag) => err(flag, "given more than once; give it once"),
            ArgError::Invalid(e) => e,
        })?;
        let Some((sources, rest)) = parsed else {
            return Ok(None);
        };
        if let Some(extra) = rest.first() {
            return Err(ConfigError {
                key: extra.to_string_lossy().into_owned(),
                message: format!("unknown argument; see `mcp-tunnel {command} --help`"),
            });
        }
        Ok(Some(sources))
    }

    /// Takes every option of `options` out of `args` and hands back what is left (positional
    /// arguments, unknown flags) for the caller to judge. `Ok(None)` means `-h`/`--help`.
    pub fn parse_known(
        options: &'static [Opt],
        args: Vec<OsString>,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<(Sources<'a>, Vec<OsString>)>, ArgError> {
        // An alias becomes its flag, and a bare switch means true, before the parser sees them.
        let args = args
            .into_iter()
            .map(|a| canonical_spelling(options, a))
            .map(|a| match options.iter().find(|o| o.switch && a == o.flag) {
                Some(o) => OsString::from(format!("{}=true", o.flag)),
                None => a,
            })
            .collect();
        let mut pargs = pico_args::Arguments::from_vec(args);
        if pargs.contains(["-h", "--help"]) {
            return Ok(None);
        }
        let mut flags = HashMap::new();
        for o in options {
            let invalid = |e: pico_args::Error| {
                ArgError::Invalid(ConfigError {
                    key: o.flag.to_string(),
                    message: format!("{e}"),
                })
            };
            let values: Vec<OsString> = if o.os_path {
                pargs
                    .values_from_os_str(o.flag, |s| Ok::<_, Infallible>(s.to_owned()))
                    .map_err(invalid)?
            } else {
                let values: Vec<String> = pargs.values_from_str(o.flag).map_err(invalid)?;
                values.into_iter().map(OsString::from).collect()
            };
            if values.len() > 1 && !o.repeatable {
                return Err(ArgError::Repeated(o.flag));
            }
            if !values.is_empty() {
                flags.insert(o.flag, values);
            }
        }
        let sources = Sources {
            options,
            flags,
            env,
            layer: None,
        };
        Ok(Some((sources, pargs.finish())))
    }

    /// These sources with a config-file layer beneath the environment.
    pub fn with_layer(self, layer: &'a Layer) -> Sources<'a> {
        Sources {
            layer: Some(layer),
            ..self
        }
    }

    /// The layer's values for `flag`, if it has any.
    fn layered(&self, flag: &str) -> Option<&'a [Raw]> {
        let values = self.layer?.values.get(flag)?;
        (!values.is_empty()).then_some(values.as_slice())
    }

    /// Where the effective value of `flag` comes from; `None` when it is unset.
    pub fn origin(&self, flag: &str) -> Option<Origin> {
        let o = self.option(flag);
        if self.flags.contains_key(flag) {
            Some(Origin::Flag)
        } else if (o.env.iter()).any(|var| (self.env)(var).is_some_and(|v| !v.is_empty())) {
            Some(Origin::Env)
        } else if self.layered(flag).is_some() {
            Some(Origin::File)
        } else {
            o.default.map(|_| Origin::Default)
        }
    }

    /// The value given on the command line, if any.
    pub fn flag(&self, flag: &str) -> Option<&str> {
        self.flags
            .get(flag)
            .and_then(|v| v.first())
            .and_then(|v| v.to_str())
    }

    /// Every value of a repeatable option: all its flags if given, else one per non-empty line
    /// of the first set environment variable.
    pub fn values(&self, flag: &str) -> Vec<Raw> {
        if let Some(values) = self.flags.get(flag) {
            return values
                .iter()
                .map(|v| Raw {
                    source: flag.to_string(),
                    value: v.to_string_lossy().into_owned(),
                })
                .collect();
        }
        for var in self.option(flag).env {
            if let Some(v) = (self.env)(var).filter(|v| !v.trim().is_empty()) {
                return v
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| Raw {
                        source: (*var).to_string(),
                        value: l.to_string(),
                    })
                    .collect();
            }
        }
        self.layered(flag).map(<[Raw]>::to_vec).unwrap_or_default()
    }

    /// The environment lookup, for following `env:` references.
    pub fn env(&self) -> &'a dyn Fn(&str) -> Option<String> {
        self.env
    }

    /// Flag, else the first non-empty environment variable, else the default.
    pub fn lookup(&self, flag: &str) -> Option<Raw> {
        if let Some(v) = self.flags.get(flag).and_then(|v| v.first()) {
            return Some(Raw {
                source: flag.to_string(),
                value: v.to_string_lossy().into_owned(),
            });
        }
        let o = self.option(flag);
        for var in o.env {
            if let Some(v) = (self.env)(var).filter(|v| !v.is_empty()) {
                return Some(Raw {
                    source: (*var).to_string(),
                    value: v,
                });
            }
        }
        if let Some(values) = self.layered(flag) {
            return values.first().cloned();
        }
        o.default.map(|d| Raw {
            source: flag.to_string(),
            value: d.to_string(),
        })
    }

    /// Like [`lookup`](Self::lookup) for an [`Opt::os_path`] option: the flag's bytes exactly as
    /// given, else the environment or the default.
    pub fn path(&self, flag: &str) -> Option<PathBuf> {
        match self.flags.get(flag).and_then(|v| v.first()) {
            Some(v) => Some(PathBuf::from(v)),
            None => self.lookup(flag).map(|raw| PathBuf::from(raw.value)),
        }
    }

    /// Like [`lookup`](Self::lookup), but only a value actually given (flag or variable), never
    /// the default.
    pub fn given(&self, flag: &str) -> Option<Raw> {
        let given = self.flags.contains_key(flag)
            || (self.option(flag).env.iter())
                .any(|var| (self.env)(var).is_some_and(|v| !v.is_empty()))
            || self.layered(flag).is_some();
        if given { self.lookup(flag) } else { None }
    }

    /// Like [`lookup`](Self::lookup), with an error naming the variable when nothing is set.
    pub fn required(&self, flag: &str) -> Result<Raw, ConfigError> {
        self.lookup(flag).ok_or_else(|| {
            let o = self.option(flag);
            let var = o.env.first().copied().unwrap_or(o.flag);
            ConfigError {
                key: var.to_string(),
                message: format!("is required; set {var} or pass {flag}"),
            }
        })
    }

    /// For options that have a default.
    pub fn get(&self, flag: &str) -> Raw {
        self.lookup(flag).expect("option with a default")
    }

    fn option(&self, flag: &str) -> &'static Opt {
        self.options
            .iter()
            .find(|o| o.flag == flag)
            .expect("flag is in this command's option table")
    }
}

/// `arg` with an alias spelling (`--alias` or `--alias=value`) replaced by its option's flag.
fn canonical_spelling(options: &[Opt], arg: OsString) -> OsString {
    let Some(text) = arg.to_str() else {
        return arg;
    };
    let (name, value) = match text.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (text, None),
    };
    match options.iter().find(|o| o.aliases.contains(&name)) {
        Some(o) => match value {
            Some(v) => OsString::from(format!("{}={v}", o.flag)),
            None => OsString::from(o.flag),
        },
        None => arg,
    }
}

/// The flag of the env-file option, and the spelling `--config` that is rewritten to it when the
/// file it names is not YAML.
pub const ENV_FILE: &str = "--env-file";
const ENV_FILE_ALIAS: &str = "--config";
/// The variable naming the env file when no flag does.
const ENV_FILE_VAR: &str = "ENV_FILE";

/// The environment with an env file beneath it: finds `--env-file`/`--config` (or `ENV_FILE`)
/// before anything else and loads that KEY=VALUE file, whose variables then fill in what the
/// process environment lacks. A `--config` naming a YAML file (the official client's) is left
/// for the YAML layer; any other is rewritten to `--env-file` so the option table knows one
/// name. Returns the rewritten arguments, the file's variables and the file's path.
pub fn env_file_layer(
    args: Vec<OsString>,
    process_env: &dyn Fn(&str) -> Option<String>,
) -> Result<EnvFile, ConfigError> {
    let mut path: Option<(String, String)> = None;
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy().into_owned();
        let (flag, inline) = match text.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (text.clone(), None),
        };
        if flag == ENV_FILE_ALIAS || flag == ENV_FILE {
            let value = match inline {
                Some(v) => v,
                None => match iter.next() {
                    Some(v) => v.to_string_lossy().into_owned(),
                    None => return Err(err(&flag, "needs a file path")),
                },
            };
            if flag == ENV_FILE_ALIAS && super::yaml::looks_like_yaml(std::path::Path::new(&value))
            {
                out.push(OsString::from(format!("{ENV_FILE_ALIAS}={value}")));
                continue;
            }
            out.push(OsString::from(format!("{ENV_FILE}={value}")));
            path = Some((flag, value));
        } else {
            out.push(arg);
        }
    }
    let path = path.or_else(|| {
        process_env(ENV_FILE_VAR)
            .filter(|v| !v.is_empty())
            .map(|v| (ENV_FILE_VAR.to_string(), v))
    });
    let vars = match &path {
        Some((source, file)) => {
            crate::envfile::load(std::path::Path::new(file)).map_err(|e| err(source, &e))?
        }
        None => HashMap::new(),
    };
    Ok(EnvFile {
        args: out,
        vars,
        path: path.map(|(_, file)| file),
    })
}

/// What [`env_file_layer`] found.
pub struct EnvFile {
    /// The arguments, `--config` rewritten to `--env-file` unless it names a YAML file.
    pub args: Vec<OsString>,
    /// The env file's variables (empty without one).
    pub vars: HashMap<String, String>,
    pub path: Option<String>,
}

/// `--help` text for any option table: each option with its variables and default.
pub fn help_text(title: &str, usage: &str, options: &[Opt]) -> String {
    let mut out = format!(
        "{title}\n\nUsage: {usage}\n\n\
         Every option is also read from the environment variable shown; a flag wins over the\n\
         environment, which wins over the default. Durations: <integer><ns|us|ms|s|m|h>.\n\n\
         Options:\n"
    );
    for o in options {
        if o.unsupported.is_some() {
            let yaml = match o.yaml {
                "" => String::new(),
                key => format!("   yaml: {key}"),
            };
            out.push_str(&format!(
                "  {}   env: {}{yaml}\n      not supported: {}\n",
                o.flag,
                o.env.join(", "),
                o.help
            ));
            continue;
        }
        if o.switch {
            out.push_str(&format!("  {}[=true|false]\n", o.flag));
        } else {
            out.push_str(&format!("  {} <value>\n", o.flag));
        }
        if !o.aliases.is_empty() {
            out.push_str(&format!("      (also spelled {})\n", o.aliases.join(", ")));
        }
        out.push_str(&format!("      {}\n", o.help));
        let default = match o.default {
            None => "(required)".to_string(),
            Some("") => "(none)".to_string(),
            Some(d) => d.to_string(),
        };
        if !o.yaml.is_empty() {
            out.push_str(&format!("      yaml: {}\n", o.yaml));
        }
        out.push_str(&format!(
            "      env: {}   default: {default}\n",
            o.env.join(", ")
        ));
    }
    out.push_str("  -h, --help\n      Print this help.\n");
    out
}
