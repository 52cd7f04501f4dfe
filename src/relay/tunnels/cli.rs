//! `mcp-tunnel relay tunnel add|list|remove|rotate-key`: the operator's command for the tunnels
//! file, parsed with the same option machinery as every other command ([`crate::config`]).
//!
//! Each subcommand has its own option table; what is left over are positional arguments (a
//! tunnel id) or mistakes, named in the error. Keys go to stdout only, exactly once, never to a
//! log or the file. Exit codes: 0 done, 1 I/O error, 2 usage error or invalid tunnels file.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::Path;

use super::edit::{self, EditError, NewTunnel};
use super::{
    ConnectorAuth, DEFAULT_TUNNELS_FILE, FileError, TUNNELS_FILE_ENV, modify, read_registry, shown,
};
use crate::config::{ArgError, Opt, Sources};
use crate::relay::keys::{self, Role};
use crate::secret::Secret;

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

// The options of each subcommand; `--help` prints [`USAGE`], written by hand for its layout.

/// Every subcommand's: which tunnels file to work on.
pub(super) const TUNNELS_FILE: Opt = Opt {
    flag: "--tunnels-file",
    env: &[TUNNELS_FILE_ENV],
    default: Some(DEFAULT_TUNNELS_FILE),
    help: "the tunnels file",
    os_path: true,
    ..Opt::BASE
};
const NAME: Opt = Opt {
    flag: "--name",
    help: "(add) the tunnel's name, shown by `list`; required",
    ..Opt::BASE
};
const DESCRIPTION: Opt = Opt {
    flag: "--description",
    default: Some(""),
    help: "(add) free text for operators",
    ..Opt::BASE
};
const CONNECTOR_AUTH: Opt = Opt {
    flag: "--connector-auth",
    default: Some("relay-key"),
    help: "(add) relay-key or passthrough",
    ..Opt::BASE
};
const ROLE: Opt = Opt {
    flag: "--role",
    default: Some("both"),
    help: "(rotate-key) runtime, connector or both",
    ..Opt::BASE
};

const ADD_OPTIONS: &[Opt] = &[TUNNELS_FILE, NAME, DESCRIPTION, CONNECTOR_AUTH];
const ROTATE_OPTIONS: &[Opt] = &[TUNNELS_FILE, ROLE];
/// `list`, `remove`, and an unknown command (whose `--tunnels-file` is still checked first).
const FILE_OPTIONS: &[Opt] = &[TUNNELS_FILE];

/// Why a command failed; each message names the flag, id or file at fault.
#[derive(Debug)]
pub(super) enum Fail {
    Usage(String),
    Config(String),
    Io(String),
}

impl Fail {
    pub(super) fn message(self) -> String {
        match self {
            Fail::Usage(m) | Fail::Config(m) | Fail::Io(m) => m,
        }
    }
}

impl From<FileError> for Fail {
    fn from(e: FileError) -> Fail {
        match e {
            FileError::Invalid(m) => Fail::Config(m),
            FileError::Io(m) => Fail::Io(m),
        }
    }
}

impl From<ArgError> for Fail {
    fn from(e: ArgError) -> Fail {
        match e {
            ArgError::Repeated(flag) => Fail::Usage(format!("{flag}: given more than once")),
            ArgError::Invalid(e) => Fail::Usage(e.to_string()),
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
    if matches!(command, "help" | "-h" | "--help") {
        return print(out, USAGE);
    }
    let options = match command {
        "add" => ADD_OPTIONS,
        "rotate-key" => ROTATE_OPTIONS,
        _ => FILE_OPTIONS,
    };
    let Some((src, rest)) = Sources::parse_known(options, args, env)? else {
        return print(out, USAGE);
    };
    let file = src.path(TUNNELS_FILE.flag).expect("has a default");
    if file.as_os_str().is_empty() {
        return Err(Fail::Usage("--tunnels-file: must not be empty".into()));
    }
    match command {
        "add" => {
            let name = src
                .lookup(NAME.flag)
                .ok_or_else(|| Fail::Usage("add: --name is required".into()))?
                .value;
            let description = src.get(DESCRIPTION.flag).value;
            edit::check_new_name(&name).map_err(|m| Fail::Usage(format!("--name: {m}")))?;
            edit::check_description(&description)
                .map_err(|m| Fail::Usage(format!("--description: {m}")))?;
            let auth = src
                .get(CONNECTOR_AUTH.flag)
                .value
                .parse()
                .map_err(|m| Fail::Usage(format!("--connector-auth: {m}")))?;
            positionals::<0>(rest, command)?;
            add(&file, name, description, auth, out)
        }
        "list" => {
            positionals::<0>(rest, command)?;
            list(&file, out, err)
        }
        "remove" => {
            let [id] = positionals::<1>(rest, command)?;
            remove(&file, &tunnel_id_arg(&id)?, out)
        }
        "rotate-key" => {
            let role = match src.get(ROLE.flag).value.as_str() {
                "both" => None,
                "runtime" => Some(Role::Runtime),
                "connector" => Some(Role::Connector),
                other => {
                    return Err(Fail::Usage(format!(
                        "--role: {other:?} is not a role; use runtime, connector or both"
                    )));
                }
            };
            let [id] = positionals::<1>(rest, command)?;
            rotate(&file, &tunnel_id_arg(&id)?, role, out)
        }
        other => Err(Fail::Usage(format!(
            "unknown command {other:?}; use add, list, remove or rotate-key"
        ))),
    }
}

/// What is left after the command's flags: exactly `N` positional arguments, or an error naming
/// the first unknown flag or surplus argument.
pub(super) fn positionals<const N: usize>(
    rest: Vec<OsString>,
    command: &str,
) -> Result<[String; N], Fail> {
    let mut free = Vec::new();
    for arg in rest {
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

pub(super) fn print(out: &mut dyn Write, text: &str) -> Result<(), Fail> {
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
    let new = NewTunnel {
        name,
        description,
        connector_auth,
        ..NewTunnel::default()
    };
    let created = edit::create(file, new).map_err(|e| edit_failure(file, e))?;
    let (id, name) = (&created.record.id, &created.record.name);
    let mut text = format!(
        "Added tunnel {name:?} to {}\n  id:             {id}\n                  \
         (CONTROL_PLANE_TUNNEL_ID of `mcp-tunnel run`)\n  connector auth: {}\n  \
         connector path: /v1/mcp/{id}\n                  (after the relay's public URL)\n",
        file.display(),
        connector_auth.as_str(),
    );
    text.push_str(&key_lines(
        Some(&created.runtime_key),
        Some(&created.connector_key),
        connector_auth,
    ));
    print_keys(out, &text)
}

/// A failed [`edit`] as the CLI reports it: bad input is a usage error, an unknown id or an
/// invalid file a configuration error (both exit 2), I/O exit 1.
pub(super) fn edit_failure(file: &Path, e: EditError) -> Fail {
    match e {
        EditError::Invalid(m) => Fail::Usage(m),
        EditError::NotFound(m) if m.contains("does not exist") => Fail::Config(m),
        EditError::NotFound(m) => Fail::Config(format!("{m} in {}", file.display())),
        EditError::File(e) => e.into(),
    }
}

fn list(file: &Path, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Fail> {
    let reg = read_registry(file)?;
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
    let removed = edit::delete(file, id).map_err(|e| edit_failure(file, e))?;
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
    let (name, auth) = modify::<_, Fail>(file, |reg| {
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
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::super::tests::{ID_A, TempDir, record, write};
    use super::super::{Registry, load, save};
    use super::*;

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
        for o in ADD_OPTIONS.iter().chain(ROTATE_OPTIONS) {
            assert!(USAGE.contains(o.flag), "{}", o.flag);
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
                admin_key_sha256: None,
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

    #[test]
    fn tunnels_file_resolution() {
        let file = |argv: &[&str], env: &dyn Fn(&str) -> Option<String>| {
            let (src, _) = Sources::parse_known(FILE_OPTIONS, args(argv), env)
                .expect("parses")
                .expect("not help");
            src.path(TUNNELS_FILE.flag).expect("has a default")
        };
        assert_eq!(
            file(&[], &|_| None),
            PathBuf::from("/etc/mcp-tunnel/tunnels.toml")
        );
        let env = |k: &str| (k == "RELAY_TUNNELS_FILE").then(|| "/srv/t.toml".to_string());
        assert_eq!(file(&[], &env), PathBuf::from("/srv/t.toml"));
        assert_eq!(
            file(&["--tunnels-file", "/flag.toml"], &env),
            PathBuf::from("/flag.toml")
        );
        assert_eq!(
            file(&[], &|_| Some(String::new())),
            PathBuf::from(DEFAULT_TUNNELS_FILE)
        );
    }
}
