//! The relay's tunnel registry: the tunnels file and `mcp-tunnel relay tunnel …`, which manages it.
//!
//! The file is TOML so an operator can read and hand-edit it:
//!
//! ```toml
//! [[tunnel]]
//! id = "tunnel_0123456789abcdef0123456789abcdef"
//! name = "production"
//! description = "Private MCP for the analytics team"
//! runtime_key_sha256 = "<64 hex>"
//! connector_key_sha256 = "<64 hex>"
//! connector_auth = "relay-key"   # or "passthrough"
//! ```
//!
//! It holds only SHA-256 digests of the keys (see [`super::keys`]); the keys themselves are printed
//! once by `add` and `rotate-key` and never stored or logged. Unknown keys are errors: a typo such
//! as `conector_auth` silently falling back to a default would weaken security. Writes are atomic
//! (temporary file, `fsync`, rename), so the relay never reads half a file, and the CLI holds an
//! exclusive lock on `<file>.lock` across load-modify-save, so two concurrent `add`s cannot lose
//! one another's tunnel.

use std::collections::HashSet;
use std::convert::Infallible;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::keys::{self, Role};
use crate::secret::Secret;

/// The environment variable naming the tunnels file.
pub const TUNNELS_FILE_ENV: &str = "RELAY_TUNNELS_FILE";
/// The tunnels file when neither `--tunnels-file` nor [`TUNNELS_FILE_ENV`] is given.
pub const DEFAULT_TUNNELS_FILE: &str = "/etc/mcp-tunnel/tunnels.toml";

/// Written above the tunnels on every save, so a hand editor knows the rules.
const HEADER: &str = "\
# mcp-tunnel relay tunnels. Managed by `mcp-tunnel relay tunnel ...`; hand edits are fine.
# Keys are stored only as SHA-256 hex digests: printf %s \"$KEY\" | sha256sum
# connector_auth: \"relay-key\" (the relay checks the connector key) or \"passthrough\" (it does not).
";

/// How the relay authenticates MCP hosts calling a tunnel's connector URL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectorAuth {
    /// The caller must present the tunnel's connector key as `Authorization: Bearer …`.
    #[default]
    RelayKey,
    /// The relay checks no connector key; authenticating callers is left to the MCP server.
    Passthrough,
}

impl ConnectorAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorAuth::RelayKey => "relay-key",
            ConnectorAuth::Passthrough => "passthrough",
        }
    }
}

impl FromStr for ConnectorAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "relay-key" => Ok(ConnectorAuth::RelayKey),
            "passthrough" => Ok(ConnectorAuth::Passthrough),
            other => Err(format!(
                "{other:?} is not a connector auth mode; use relay-key or passthrough"
            )),
        }
    }
}

/// One tunnel as stored in the tunnels file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelRecord {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub runtime_key_sha256: String,
    pub connector_key_sha256: String,
    #[serde(default)]
    pub connector_auth: ConnectorAuth,
}

impl TunnelRecord {
    /// Whether `presented` is this tunnel's runtime key (constant-time on the digests).
    pub fn runtime_key_matches(&self, presented: &str) -> bool {
        keys::matches(presented, &self.runtime_key_sha256)
    }

    /// Whether `presented` is this tunnel's connector key (constant-time on the digests). Callers
    /// decide from [`TunnelRecord::connector_auth`] whether the connector key is checked at all.
    pub fn connector_key_matches(&self, presented: &str) -> bool {
        keys::matches(presented, &self.connector_key_sha256)
    }
}

/// Every tunnel the relay serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    #[serde(rename = "tunnel", default, skip_serializing_if = "Vec::is_empty")]
    pub tunnels: Vec<TunnelRecord>,
}

impl Registry {
    pub fn get(&self, id: &str) -> Option<&TunnelRecord> {
        self.tunnels.iter().find(|t| t.id == id)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut TunnelRecord> {
        self.tunnels.iter_mut().find(|t| t.id == id)
    }
}

/// The tunnels file: `RELAY_TUNNELS_FILE` if set and non-empty, else [`DEFAULT_TUNNELS_FILE`].
/// `env` is injected so tests need not touch the process environment.
pub fn default_tunnels_file(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    env(TUNNELS_FILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TUNNELS_FILE))
}

/// Reads and validates the tunnels file. A missing file is an empty registry, so a fresh relay
/// starts; every other failure is an error naming the file (and, for syntax and unknown keys, the
/// line).
pub fn load(path: &Path) -> Result<Registry, String> {
    match read(path) {
        Ok(None) => Ok(Registry::default()),
        Ok(Some(text)) => parse(path, &text).map_err(Fail::message),
        Err(e) => Err(e.message()),
    }
}

/// Parses and validates the text of a tunnels file, as [`load`] does; errors name `tunnels file`
/// where `load` names the path.
pub fn parse_text(text: &str) -> Result<Registry, String> {
    parse(Path::new("tunnels file"), text).map_err(Fail::message)
}

/// The file's text; `None` if it does not exist.
fn read(path: &Path) -> Result<Option<String>, Fail> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(Fail::Config(format!(
            "{}: not UTF-8 text, so not a tunnels file",
            path.display()
        ))),
        Err(e) => Err(Fail::Io(format!("{}: cannot read: {e}", path.display()))),
    }
}

fn parse(path: &Path, text: &str) -> Result<Registry, Fail> {
    // toml's message starts "TOML parse error at line L, column C" and quotes the line.
    let reg: Registry = toml::from_str(text)
        .map_err(|e| Fail::Config(format!("{}: {}", path.display(), e.to_string().trim_end())))?;
    validate(&reg).map_err(|e| Fail::Config(format!("{}: {e}", path.display())))?;
    Ok(reg)
}

/// The rules `load` enforces and `save` refuses to break.
fn validate(reg: &Registry) -> Result<(), String> {
    let mut ids = HashSet::new();
    let mut digests = HashSet::new();
    for (i, t) in reg.tunnels.iter().enumerate() {
        let at = if keys::is_tunnel_id(&t.id) {
            format!("tunnel #{} ({})", i + 1, t.id)
        } else {
            format!("tunnel #{}", i + 1)
        };
        if !keys::is_tunnel_id(&t.id) {
            return Err(format!(
                "{at}: id {} is not `tunnel_` and 32 lowercase hex characters",
                shown(&t.id)
            ));
        }
        if !ids.insert(t.id.as_str()) {
            return Err(format!("{at}: id appears more than once"));
        }
        check_name(&t.name).map_err(|m| format!("{at}: name {m}"))?;
        for (key, digest) in [
            ("runtime_key_sha256", &t.runtime_key_sha256),
            ("connector_key_sha256", &t.connector_key_sha256),
        ] {
            if !keys::is_sha256_hex(digest) {
                return Err(format!(
                    "{at}: {key} must be 64 lowercase hex characters, the key's SHA-256 digest \
                     (not the key itself)"
                ));
            }
            // Generated keys never repeat; a repeat is a copy-paste that lets one key open two
            // roles or two tunnels.
            if !digests.insert(digest.as_str()) {
                return Err(format!(
                    "{at}: {key} repeats a digest used elsewhere in the file; every key must be distinct"
                ));
            }
        }
    }
    Ok(())
}

/// Names show up one per line in `list`, so they must be visible and single-line.
fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters (newlines, tabs, escapes)".into());
    }
    Ok(())
}

/// Writes `reg` to `path` atomically: a temporary file in the same directory, `fsync`, rename.
/// The file gets mode 0600 and keeps the owner and group of the file it replaces, so a
/// `sudo … tunnel add` does not leave a root-owned file the relay's user cannot read. The parent
/// directory is created if missing. Errors do not name the file; callers add it.
pub fn save(path: &Path, reg: &Registry) -> io::Result<()> {
    validate(reg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let body = toml::to_string(reg).map_err(io::Error::other)?;
    let text = format!("{HEADER}\n{body}");
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let dir = parent_dir(path);
    fs::create_dir_all(dir)?;
    let previous_owner = fs::metadata(path).ok().map(|m| (m.uid(), m.gid()));

    let mut tmp_name = OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        crate::crypto::random_hex(4)
    ));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some((uid, gid)) = previous_owner {
            // Only root may give a file to another user; for anyone else it stays theirs.
            let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    // Makes the rename itself durable. Some filesystems refuse to fsync a directory; the new file
    // is complete either way, so that is not worth failing the command for.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Holds an exclusive lock on `<file>.lock` until dropped. The lock file stays on disk: deleting
/// it would let a waiting process lock a file no newcomer sees.
fn lock(path: &Path) -> Result<File, Fail> {
    let lp = lock_path(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lp)
        .map_err(|e| Fail::Io(format!("{}: cannot open lock file: {e}", lp.display())))?;
    file.lock()
        .map_err(|e| Fail::Io(format!("{}: cannot lock: {e}", lp.display())))?;
    Ok(file)
}

/// Load, change, save, under the lock. Nothing is written if `change` fails.
fn modify<T>(
    path: &Path,
    change: impl FnOnce(&mut Registry) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let dir = parent_dir(path);
    fs::create_dir_all(dir)
        .map_err(|e| Fail::Io(format!("{}: cannot create directory: {e}", dir.display())))?;
    let _lock = lock(path)?;
    let mut reg = match read(path)? {
        None => Registry::default(),
        Some(text) => parse(path, &text)?,
    };
    let value = change(&mut reg)?;
    save(path, &reg).map_err(|e| Fail::Io(format!("{}: cannot write: {e}", path.display())))?;
    Ok(value)
}

// ---- the `mcp-tunnel relay tunnel` command ----

const USAGE: &str = "\
mcp-tunnel relay tunnel: manage the relay's tunnels

Usage: mcp-tunnel relay tunnel <COMMAND> [OPTIONS]

Commands:
  add --name NAME [--description TEXT] [--connector-auth MODE]
      Create a tunnel with new keys; print its id, both keys and its connector path, once
  list
      One line per tunnel: id, connector auth mode, name
  remove ID
      Delete a tunnel; its keys stop working
  rotate-key ID [--role ROLE]
      Replace a tunnel's key(s); print the new key(s), once

Options:
  --name NAME            (add) the tunnel's name, shown by `list`; required
  --description TEXT     (add) free text for operators [default: empty]
  --connector-auth MODE  (add) relay-key: MCP hosts must send the connector key as
                         `Authorization: Bearer <key>`; passthrough: the relay checks no
                         connector key [default: relay-key]
  --role ROLE            (rotate-key) runtime, connector or both [default: both]
  --tunnels-file PATH    the tunnels file [env: RELAY_TUNNELS_FILE]
                         [default: /etc/mcp-tunnel/tunnels.toml]
  -h, --help             print this help

Keys are stored only as SHA-256 digests, so they can be shown only when created. The file is
written atomically with mode 0600, keeping the owner of the file it replaces.

Exit codes: 0 done, 1 I/O error, 2 usage error or invalid tunnels file.
";

/// Why a command failed; each message names the flag, id or file at fault.
#[derive(Debug)]
enum Fail {
    Usage(String),
    Config(String),
    Io(String),
}

impl Fail {
    fn message(self) -> String {
        match self {
            Fail::Usage(m) | Fail::Config(m) | Fail::Io(m) => m,
        }
    }
}

/// `mcp-tunnel relay tunnel <COMMAND> …` (arguments after `tunnel`). Returns the exit code: 0 done,
/// 1 I/O error, 2 usage error or invalid tunnels file. Keys go to stdout only, never to the log.
pub fn tunnel_command(args: Vec<OsString>) -> i32 {
    let env = |name: &str| std::env::var(name).ok();
    run(
        args,
        &env,
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )
}

fn run(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let (message, code) = match dispatch(args, env, out, err) {
        Ok(()) => return 0,
        Err(Fail::Usage(m)) => (format!("{m}\nsee `mcp-tunnel relay tunnel --help`"), 2),
        Err(Fail::Config(m)) => (m, 2),
        Err(Fail::Io(m)) => (m, 1),
    };
    let _ = writeln!(err, "mcp-tunnel relay tunnel: {message}");
    code
}

fn dispatch(
    mut args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Fail> {
    if args.is_empty() {
        return Err(Fail::Usage(
            "missing command: add, list, remove or rotate-key".into(),
        ));
    }
    let command_os = args.remove(0);
    let Some(command) = command_os.to_str() else {
        return Err(Fail::Usage("the command is not UTF-8".into()));
    };
    let mut p = pico_args::Arguments::from_vec(args);
    if matches!(command, "help" | "-h" | "--help") || p.contains(["-h", "--help"]) {
        return print(out, USAGE);
    }
    let file = match once_os(&mut p, "--tunnels-file")? {
        Some(f) if f.as_os_str().is_empty() => {
            return Err(Fail::Usage("--tunnels-file: must not be empty".into()));
        }
        Some(f) => f,
        None => default_tunnels_file(env),
    };
    match command {
        "add" => {
            let name = once(&mut p, "--name")?
                .ok_or_else(|| Fail::Usage("add: --name is required".into()))?;
            check_name(&name).map_err(|m| Fail::Usage(format!("--name: {m}")))?;
            let description = once(&mut p, "--description")?.unwrap_or_default();
            let auth = match once(&mut p, "--connector-auth")? {
                Some(v) => v
                    .parse()
                    .map_err(|m| Fail::Usage(format!("--connector-auth: {m}")))?,
                None => ConnectorAuth::default(),
            };
            positionals::<0>(p, command)?;
            add(&file, name, description, auth, out)
        }
        "list" => {
            positionals::<0>(p, command)?;
            list(&file, out, err)
        }
        "remove" => {
            let [id] = positionals::<1>(p, command)?;
            remove(&file, &tunnel_id_arg(&id)?, out)
        }
        "rotate-key" => {
            let role = match once(&mut p, "--role")?.as_deref() {
                None | Some("both") => None,
                Some("runtime") => Some(Role::Runtime),
                Some("connector") => Some(Role::Connector),
                Some(other) => {
                    return Err(Fail::Usage(format!(
                        "--role: {other:?} is not a role; use runtime, connector or both"
                    )));
                }
            };
            let [id] = positionals::<1>(p, command)?;
            rotate(&file, &tunnel_id_arg(&id)?, role, out)
        }
        other => Err(Fail::Usage(format!(
            "unknown command {other:?}; use add, list, remove or rotate-key"
        ))),
    }
}

/// A flag's value, refusing repeats (the second would otherwise be silently ignored).
fn once(p: &mut pico_args::Arguments, flag: &'static str) -> Result<Option<String>, Fail> {
    let mut values: Vec<String> = p
        .values_from_str(flag)
        .map_err(|e| Fail::Usage(format!("{flag}: {e}")))?;
    if values.len() > 1 {
        return Err(Fail::Usage(format!("{flag}: given more than once")));
    }
    Ok(values.pop())
}

/// [`once`] for paths, which need not be UTF-8.
fn once_os(p: &mut pico_args::Arguments, flag: &'static str) -> Result<Option<PathBuf>, Fail> {
    let mut values: Vec<PathBuf> = p
        .values_from_os_str(flag, |s| Ok::<_, Infallible>(PathBuf::from(s)))
        .map_err(|e| Fail::Usage(format!("{flag}: {e}")))?;
    if values.len() > 1 {
        return Err(Fail::Usage(format!("{flag}: given more than once")));
    }
    Ok(values.pop())
}

/// What is left after the command's flags: exactly `N` positional arguments, or an error naming
/// the first unknown flag or surplus argument.
fn positionals<const N: usize>(
    p: pico_args::Arguments,
    command: &str,
) -> Result<[String; N], Fail> {
    let mut free = Vec::new();
    for arg in p.finish() {
        let arg = arg.to_string_lossy().into_owned();
        if arg.starts_with('-') && arg != "-" {
            // Only the flag's name: a value after `=` could be a key typed in the wrong place.
            let flag = arg.split('=').next().unwrap_or(&arg);
            return Err(Fail::Usage(format!("unknown flag {flag} for `{command}`")));
        }
        free.push(arg);
    }
    let count = free.len();
    free.try_into().map_err(|free: Vec<String>| {
        if count > N {
            Fail::Usage(format!(
                "unexpected argument {} for `{command}`",
                shown(&free[N])
            ))
        } else {
            Fail::Usage(format!("`{command}` needs a tunnel id"))
        }
    })
}

fn tunnel_id_arg(id: &str) -> Result<String, Fail> {
    if keys::is_tunnel_id(id) {
        Ok(id.to_string())
    } else {
        Err(Fail::Usage(format!(
            "{} is not a tunnel id (`tunnel_` and 32 lowercase hex characters)",
            shown(id)
        )))
    }
}

/// Quotes a user-supplied value for a message, unless it looks like one of our keys pasted in the
/// wrong place: messages may end up in logs, keys must not.
fn shown(value: &str) -> String {
    if value.starts_with("mcpt_") {
        "(a value that looks like a key, not shown)".into()
    } else {
        format!("{value:?}")
    }
}

fn print(out: &mut dyn Write, text: &str) -> Result<(), Fail> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Fail::Io(format!("cannot write to stdout: {e}")))
}

fn add(
    file: &Path,
    name: String,
    description: String,
    connector_auth: ConnectorAuth,
    out: &mut dyn Write,
) -> Result<(), Fail> {
    let runtime = keys::generate(Role::Runtime);
    // Stored for passthrough tunnels too, so switching to relay-key later needs no new key.
    let connector = keys::generate(Role::Connector);
    let id = modify(file, |reg| {
        let id = loop {
            let id = keys::generate_tunnel_id();
            if reg.get(&id).is_none() {
                break id;
            }
        };
        reg.tunnels.push(TunnelRecord {
            id: id.clone(),
            name: name.clone(),
            description,
            runtime_key_sha256: keys::hash(runtime.expose()),
            connector_key_sha256: keys::hash(connector.expose()),
            connector_auth,
        });
        Ok(id)
    })?;
    let mut text = format!(
        "Added tunnel {name:?} to {}\n  id:             {id}\n                  \
         (CONTROL_PLANE_TUNNEL_ID of `mcp-tunnel run`)\n  connector auth: {}\n  \
         connector path: /v1/mcp/{id}\n                  (after the relay's public URL)\n",
        file.display(),
        connector_auth.as_str(),
    );
    text.push_str(&key_lines(Some(&runtime), Some(&connector), connector_auth));
    print_keys(out, &text)
}

fn list(file: &Path, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Fail> {
    let reg = match read(file)? {
        None => Registry::default(),
        Some(text) => parse(file, &text)?,
    };
    if reg.tunnels.is_empty() {
        let _ = writeln!(err, "no tunnels in {}", file.display());
        return Ok(());
    }
    let mut text = String::new();
    for t in &reg.tunnels {
        text.push_str(&format!(
            "{}  {:<11}  {}\n",
            t.id,
            t.connector_auth.as_str(),
            t.name
        ));
    }
    print(out, &text)
}

fn remove(file: &Path, id: &str, out: &mut dyn Write) -> Result<(), Fail> {
    require_file(file, id)?;
    let removed = modify(file, |reg| {
        let at = reg
            .tunnels
            .iter()
            .position(|t| t.id == id)
            .ok_or_else(|| unknown_id(file, id))?;
        Ok(reg.tunnels.remove(at))
    })?;
    print(
        out,
        &format!(
            "Removed tunnel {} ({:?}) from {}\n",
            removed.id,
            removed.name,
            file.display()
        ),
    )
}

/// `role` `None` rotates both keys.
fn rotate(file: &Path, id: &str, role: Option<Role>, out: &mut dyn Write) -> Result<(), Fail> {
    require_file(file, id)?;
    let runtime = (role != Some(Role::Connector)).then(|| keys::generate(Role::Runtime));
    let connector = (role != Some(Role::Runtime)).then(|| keys::generate(Role::Connector));
    let (name, auth) = modify(file, |reg| {
        let t = reg.get_mut(id).ok_or_else(|| unknown_id(file, id))?;
        if let Some(k) = &runtime {
            t.runtime_key_sha256 = keys::hash(k.expose());
        }
        if let Some(k) = &connector {
            t.connector_key_sha256 = keys::hash(k.expose());
        }
        Ok((t.name.clone(), t.connector_auth))
    })?;
    let mut text = format!(
        "Replaced the {} of tunnel {id} ({name:?}) in {}\n",
        match role {
            None => "runtime and connector keys",
            Some(Role::Runtime) => "runtime key",
            Some(Role::Connector) => "connector key",
        },
        file.display()
    );
    text.push_str(&key_lines(runtime.as_ref(), connector.as_ref(), auth));
    print_keys(out, &text)
}

/// `remove` and `rotate-key` on a file that does not exist fail without creating its directory.
fn require_file(file: &Path, id: &str) -> Result<(), Fail> {
    if file.exists() {
        Ok(())
    } else {
        Err(Fail::Config(format!(
            "no tunnel {id}: {} does not exist",
            file.display()
        )))
    }
}

fn unknown_id(file: &Path, id: &str) -> Fail {
    Fail::Config(format!("no tunnel {id} in {}", file.display()))
}

/// The lines showing new keys, with what each is for and the show-once warning.
fn key_lines(runtime: Option<&Secret>, connector: Option<&Secret>, auth: ConnectorAuth) -> String {
    let mut text = String::new();
    if let Some(k) = runtime {
        text.push_str(&format!(
            "  runtime key:    {}\n                  (CONTROL_PLANE_API_KEY of `mcp-tunnel run`)\n",
            k.expose()
        ));
    }
    if let Some(k) = connector {
        let use_ = match auth {
            ConnectorAuth::RelayKey => "(MCP hosts send `Authorization: Bearer <connector key>`)",
            ConnectorAuth::Passthrough => {
                "(unused while connector_auth is passthrough: the relay does not check it;\n                  \
                 kept so the tunnel can switch to relay-key later)"
            }
        };
        text.push_str(&format!(
            "  connector key:  {}\n                  {use_}\n",
            k.expose()
        ));
    }
    text.push_str(
        "WARNING: the keys are shown only now; the relay stores only their SHA-256 digests. \
         Keep them in a secret store; `rotate-key` replaces a lost key.\n",
    );
    text
}

/// The keys are already saved: if they cannot be shown, say how to recover.
fn print_keys(out: &mut dyn Write, text: &str) -> Result<(), Fail> {
    print(out, text).map_err(|e| {
        Fail::Io(format!(
            "{}; the tunnels file was updated but the new keys were not shown: \
             run `rotate-key` to issue new ones",
            e.message()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "mcpt-tunnels-test-{}-{}",
                std::process::id(),
                crate::crypto::random_hex(8)
            ));
            fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
        fn file(&self) -> PathBuf {
            self.0.join("tunnels.toml")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn record(id: &str, name: &str) -> TunnelRecord {
        TunnelRecord {
            id: id.to_string(),
            name: name.to_string(),
            description: String::new(),
            runtime_key_sha256: keys::hash(keys::generate(Role::Runtime).expose()),
            connector_key_sha256: keys::hash(keys::generate(Role::Connector).expose()),
            connector_auth: ConnectorAuth::RelayKey,
        }
    }

    const ID_A: &str = "tunnel_0123456789abcdef0123456789abcdef";
    const ID_B: &str = "tunnel_fedcba9876543210fedcba9876543210";
    const HASH_1: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const HASH_2: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn write(path: &Path, text: &str) {
        fs::write(path, text).expect("write test file");
    }

    fn load_err(text: &str) -> String {
        let dir = TempDir::new();
        write(&dir.file(), text);
        let e = load(&dir.file()).expect_err("should be rejected");
        assert!(e.contains(&dir.file().display().to_string()), "{e}");
        e
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    /// Runs the command with the given tunnels file; returns (exit code, stdout, stderr).
    fn cmd(file: &Path, list: &[&str]) -> (i32, String, String) {
        let mut a = args(list);
        a.push("--tunnels-file".into());
        a.push(file.into());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(a, &|_| None, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).expect("utf-8"),
            String::from_utf8(err).expect("utf-8"),
        )
    }

    /// The value printed after `label` in the command's output.
    fn printed(out: &str, label: &str) -> String {
        out.lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .unwrap_or_else(|| panic!("{label} in {out}"))
            .trim()
            .to_string()
    }

    #[test]
    fn save_load_round_trip() {
        let dir = TempDir::new();
        let mut a = record(ID_A, "production");
        a.description = "Private MCP for the analytics team\nsecond line \"quoted\"".into();
        let mut b = record(ID_B, "staging");
        b.connector_auth = ConnectorAuth::Passthrough;
        let reg = Registry {
            tunnels: vec![a, b],
        };
        save(&dir.file(), &reg).expect("save");
        assert_eq!(load(&dir.file()).expect("load"), reg);
        let text = fs::read_to_string(dir.file()).expect("read");
        assert!(text.starts_with(HEADER), "{text}");
        assert!(text.contains("[[tunnel]]"), "{text}");
        assert!(text.contains("connector_auth = \"passthrough\""), "{text}");

        // Saving again over an existing file, and saving an empty registry.
        save(&dir.file(), &Registry::default()).expect("save empty");
        assert_eq!(load(&dir.file()).expect("load"), Registry::default());
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(&dir.0)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("tunnels.toml")]);
    }

    #[test]
    fn hand_written_file_with_comments_and_defaults_loads() {
        let dir = TempDir::new();
        write(
            &dir.file(),
            &format!(
                "# ours\n[[tunnel]]\nid = \"{ID_A}\"   # prod\nname = \"production\"\n\
                 runtime_key_sha256 = \"{HASH_1}\"\nconnector_key_sha256 = \"{HASH_2}\"\n"
            ),
        );
        let reg = load(&dir.file()).expect("load");
        let t = reg.get(ID_A).expect("tunnel");
        assert_eq!(t.description, "");
        assert_eq!(t.connector_auth, ConnectorAuth::RelayKey);
        assert!(t.runtime_key_matches("abc"));
        assert!(!t.connector_key_matches("abc"));
        assert!(t.connector_key_matches(""));
        assert!(reg.get(ID_B).is_none());
    }

    #[test]
    fn missing_file_is_an_empty_registry() {
        let dir = TempDir::new();
        assert_eq!(
            load(&dir.0.join("absent.toml")).expect("load"),
            Registry::default()
        );
        // A file of comments only, too.
        write(&dir.file(), HEADER);
        assert_eq!(load(&dir.file()).expect("load"), Registry::default());
    }

    #[test]
    fn bad_toml_names_file_and_line() {
        let e = load_err("# fine\n[[tunnel]]\nid = \"unterminated\n");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = load_err(&format!(
            "[[tunnel]]\nid = \"{ID_A}\"\nname = \"p\"\nruntime_key_sha256 = \"{HASH_1}\"\n\
             connector_key_sha256 = \"{HASH_2}\"\nconector_auth = \"passthrough\"\n"
        ));
        assert!(e.contains("conector_auth"), "{e}");
        assert!(e.contains("line 6"), "{e}");
        let e = load_err("tunnels = []\n");
        assert!(e.contains("tunnels"), "{e}");
        let e = load_err(&format!(
            "[[tunnel]]\nid = \"{ID_A}\"\nname = \"p\"\nruntime_key_sha256 = \"{HASH_1}\"\n\
             connector_key_sha256 = \"{HASH_2}\"\nconnector_auth = \"none\"\n"
        ));
        assert!(e.contains("none"), "{e}");
    }

    #[test]
    fn invalid_records_are_rejected_naming_the_key() {
        let body = |id: &str, name: &str, rt: &str, cn: &str| {
            format!(
                "[[tunnel]]\nid = \"{id}\"\nname = \"{name}\"\nruntime_key_sha256 = \"{rt}\"\n\
                 connector_key_sha256 = \"{cn}\"\n"
            )
        };
        let e = load_err(&body("tunnel_123", "p", HASH_1, HASH_2));
        assert!(
            e.contains("tunnel #1") && e.contains("id \"tunnel_123\""),
            "{e}"
        );
        let e = load_err(&body(ID_A, " ", HASH_1, HASH_2));
        assert!(e.contains("name must not be empty"), "{e}");
        let e = load_err(&body(ID_A, "a\\nb", HASH_1, HASH_2));
        assert!(e.contains("name must not contain control"), "{e}");
        let e = load_err(&body(ID_A, "p", &HASH_1.to_uppercase(), HASH_2));
        assert!(e.contains("runtime_key_sha256"), "{e}");
        let e = load_err(&body(ID_A, "p", HASH_1, "mcpt_cn_00"));
        assert!(e.contains("connector_key_sha256"), "{e}");
        assert!(
            !e.contains("mcpt_cn_00"),
            "a pasted key must not be echoed: {e}"
        );
        let e = load_err(&body(ID_A, "p", HASH_1, HASH_1));
        assert!(e.contains("connector_key_sha256 repeats"), "{e}");
        let e = load_err(&body("mcpt_rt_secret", "p", HASH_1, HASH_2));
        assert!(!e.contains("mcpt_rt_secret"), "{e}");
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let a = record(ID_A, "one");
        let b = record(ID_A, "two");
        let text = toml::to_string(&Registry {
            tunnels: vec![a, b],
        })
        .expect("serialize");
        let e = load_err(&text);
        assert!(
            e.contains(&format!("tunnel #2 ({ID_A}): id appears more than once")),
            "{e}"
        );
    }

    #[test]
    fn save_refuses_what_load_would_reject() {
        let dir = TempDir::new();
        let reg = Registry {
            tunnels: vec![record("nope", "x")],
        };
        assert!(save(&dir.file(), &reg).is_err());
        assert!(!dir.file().exists());
    }

    #[test]
    fn file_mode_is_0600_and_parent_is_created() {
        let dir = TempDir::new();
        let file = dir.0.join("nested/deeper/tunnels.toml");
        let reg = Registry {
            tunnels: vec![record(ID_A, "p")],
        };
        save(&file, &reg).expect("save");
        let mode = fs::metadata(&file).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A loosened file is tightened again by the next save.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        save(&file, &reg).expect("save");
        let mode = fs::metadata(&file).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn default_tunnels_file_resolution() {
        assert_eq!(
            default_tunnels_file(&|_| None),
            PathBuf::from("/etc/mcp-tunnel/tunnels.toml")
        );
        assert_eq!(
            default_tunnels_file(&|k| (k == "RELAY_TUNNELS_FILE").then(|| "/srv/t.toml".into())),
            PathBuf::from("/srv/t.toml")
        );
        assert_eq!(
            default_tunnels_file(&|_| Some(String::new())),
            PathBuf::from(DEFAULT_TUNNELS_FILE)
        );
    }

    #[test]
    fn add_list_rotate_remove() {
        let dir = TempDir::new();
        let file = dir.0.join("etc/tunnels.toml");

        let (code, out, err) = cmd(
            &file,
            &[
                "add",
                "--name",
                "production",
                "--description=Analytics team",
            ],
        );
        assert_eq!(code, 0, "{err}");
        let id = printed(&out, "id:");
        let runtime = printed(&out, "runtime key:");
        let connector = printed(&out, "connector key:");
        assert!(keys::is_tunnel_id(&id), "{out}");
        assert!(runtime.starts_with("mcpt_rt_") && connector.starts_with("mcpt_cn_"));
        assert!(out.contains(&format!("/v1/mcp/{id}")), "{out}");
        assert!(out.contains("shown only now"), "{out}");
        // Each key printed exactly once.
        assert_eq!(out.matches(&runtime).count(), 1);
        assert_eq!(out.matches(&connector).count(), 1);

        let text = fs::read_to_string(&file).expect("read");
        assert!(!text.contains(&runtime) && !text.contains(&connector));
        let reg = load(&file).expect("load");
        let t = reg.get(&id).expect("added");
        assert_eq!(
            (t.name.as_str(), t.description.as_str()),
            ("production", "Analytics team")
        );
        assert_eq!(t.connector_auth, ConnectorAuth::RelayKey);
        assert!(t.runtime_key_matches(&runtime));
        assert!(t.connector_key_matches(&connector));
        assert!(!t.runtime_key_matches(&connector));

        let (code, out2, err) = cmd(
            &file,
            &[
                "add",
                "--name",
                "staging",
                "--connector-auth",
                "passthrough",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(
            out2.contains("unused while connector_auth is passthrough"),
            "{out2}"
        );
        let id2 = printed(&out2, "id:");

        let (code, listed, _) = cmd(&file, &["list"]);
        assert_eq!(code, 0);
        assert_eq!(
            listed,
            format!("{id}  relay-key    production\n{id2}  passthrough  staging\n")
        );

        // Rotating only the runtime key leaves the connector key alone.
        let (code, out, err) = cmd(&file, &["rotate-key", &id, "--role", "runtime"]);
        assert_eq!(code, 0, "{err}");
        assert!(!out.contains("connector key:"), "{out}");
        let runtime2 = printed(&out, "runtime key:");
        let t = load(&file)
            .expect("load")
            .get(&id)
            .cloned()
            .expect("still there");
        assert!(!t.runtime_key_matches(&runtime));
        assert!(t.runtime_key_matches(&runtime2));
        assert!(t.connector_key_matches(&connector));

        // Default: both.
        let (code, out, err) = cmd(&file, &["rotate-key", &id]);
        assert_eq!(code, 0, "{err}");
        let runtime3 = printed(&out, "runtime key:");
        let connector3 = printed(&out, "connector key:");
        let t = load(&file)
            .expect("load")
            .get(&id)
            .cloned()
            .expect("still there");
        assert!(!t.runtime_key_matches(&runtime2) && !t.connector_key_matches(&connector));
        assert!(t.runtime_key_matches(&runtime3) && t.connector_key_matches(&connector3));

        let (code, out, err) = cmd(&file, &["remove", &id]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&id), "{out}");
        let reg = load(&file).expect("load");
        assert!(reg.get(&id).is_none());
        assert!(reg.get(&id2).is_some());

        // Unknown ids are errors naming the id; nothing changes.
        let before = fs::read_to_string(&file).expect("read");
        for sub in ["remove", "rotate-key"] {
            let (code, _, err) = cmd(&file, &[sub, &id]);
            assert_eq!(code, 2, "{sub}");
            assert!(err.contains(&id), "{err}");
        }
        assert_eq!(fs::read_to_string(&file).expect("read"), before);
        let mode = fs::metadata(&file).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn usage_errors_exit_2_naming_the_problem() {
        let dir = TempDir::new();
        let file = dir.file();
        let cases: &[(&[&str], &str)] = &[
            (&["add"], "--name is required"),
            (
                &["add", "--name", "x", "--bogus=secret"],
                "unknown flag --bogus",
            ),
            (
                &["add", "--name", "x", "--name", "y"],
                "--name: given more than once",
            ),
            (&["add", "--name", ""], "--name: must not be empty"),
            (
                &["add", "--name", "x", "--connector-auth", "open"],
                "--connector-auth",
            ),
            (&["list", "--name", "x"], "unknown flag --name for `list`"),
            (&["list", "extra"], "unexpected argument \"extra\""),
            (&["remove"], "needs a tunnel id"),
            (&["remove", "tunnel_x"], "\"tunnel_x\" is not a tunnel id"),
            (&["rotate-key", ID_A, "--role", "admin"], "--role"),
            (&["frobnicate"], "unknown command \"frobnicate\""),
            (&["remove", "mcpt_rt_abc"], "looks like a key"),
        ];
        for (argv, expected) in cases {
            let (code, out, err) = cmd(&file, argv);
            assert_eq!(code, 2, "{argv:?}: {err}");
            assert!(out.is_empty(), "{argv:?}: {out}");
            assert!(err.contains(expected), "{argv:?}: {err}");
            assert!(
                !err.contains("secret") && !err.contains("mcpt_rt_abc"),
                "{err}"
            );
        }
        // Nothing was created by failing commands.
        assert!(!file.exists());

        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(Vec::new(), &|_| None, &mut out, &mut err), 2);
        assert!(String::from_utf8_lossy(&err).contains("missing command"));
    }

    #[test]
    fn remove_on_missing_file_creates_nothing() {
        let dir = TempDir::new();
        let file = dir.0.join("absent/tunnels.toml");
        let (code, _, err) = cmd(&file, &["remove", ID_A]);
        assert_eq!(code, 2);
        assert!(
            err.contains(ID_A) && err.contains("does not exist"),
            "{err}"
        );
        assert!(!dir.0.join("absent").exists());
    }

    #[test]
    fn help_lists_every_option_and_default() {
        for argv in [&["--help"][..], &["add", "-h"], &["help"]] {
            let (code, out, _) = cmd(Path::new("/nonexistent"), argv);
            assert_eq!(code, 0);
            assert_eq!(out, USAGE);
        }
        for needle in [
            "--name",
            "--description",
            "--connector-auth",
            "--role",
            "--tunnels-file",
            "--help",
            TUNNELS_FILE_ENV,
            DEFAULT_TUNNELS_FILE,
            "[default: relay-key]",
            "[default: both]",
        ] {
            assert!(USAGE.contains(needle), "{needle}");
        }
    }

    #[test]
    fn bad_tunnels_file_exits_2_and_io_errors_exit_1() {
        let dir = TempDir::new();
        write(&dir.file(), "not toml at all [");
        let (code, _, err) = cmd(&dir.file(), &["list"]);
        assert_eq!(code, 2);
        assert!(err.contains(&dir.file().display().to_string()), "{err}");
        let (code, _, _) = cmd(&dir.file(), &["add", "--name", "x"]);
        assert_eq!(code, 2);
        assert_eq!(
            fs::read_to_string(dir.file()).expect("read"),
            "not toml at all ["
        );

        // A directory where the file should be: an I/O error.
        let (code, _, err) = cmd(&dir.0, &["list"]);
        assert_eq!(code, 1, "{err}");
    }

    #[test]
    fn tunnel_command_reads_the_file_given() {
        let dir = TempDir::new();
        save(
            &dir.file(),
            &Registry {
                tunnels: vec![record(ID_A, "p")],
            },
        )
        .expect("save");
        let file = dir.file().into_os_string();
        assert_eq!(
            tunnel_command(vec!["list".into(), "--tunnels-file".into(), file.clone()]),
            0
        );
        assert_eq!(
            tunnel_command(vec![
                "list".into(),
                "--tunnels-file".into(),
                file,
                "--x".into()
            ]),
            2
        );
    }
}
