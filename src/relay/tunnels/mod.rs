//! The relay's tunnel registry: the tunnels file, its records and the rules they obey. The
//! `mcp-tunnel relay tunnel …` command that manages it is `cli`.
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
//! organization_ids = ["org_123"]  # optional, as in the official admin API
//! created_at = 1767225600         # optional, Unix seconds
//! ```
//!
//! A top-level `admin_key_sha256` (before the first `[[tunnel]]`) holds the digest of the relay's
//! admin key, which opens the admin API ([`crate::relay::admin`]); without it that API is closed.
//!
//! It holds only SHA-256 digests of the keys (see [`super::keys`]); the keys themselves are printed
//! once by `add` and `rotate-key` and never stored or logged. Unknown keys are errors: a typo such
//! as `conector_auth` silently falling back to a default would weaken security. Writes are atomic
//! (temporary file, `fsync`, rename), so the relay never reads half a file, and `modify` holds an
//! exclusive lock on `<file>.lock` across load-modify-save, so two concurrent `add`s cannot lose
//! one another's tunnel.

mod admin_key;
mod cli;
pub mod edit;

pub use admin_key::admin_key_command;
pub use cli::tunnel_command;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::keys;

/// The environment variable naming the tunnels file.
pub const TUNNELS_FILE_ENV: &str = "RELAY_TUNNELS_FILE";
/// The tunnels file when neither `--tunnels-file` nor [`TUNNELS_FILE_ENV`] is given.
pub const DEFAULT_TUNNELS_FILE: &str = "/etc/mcp-tunnel/tunnels.toml";

/// Written above the tunnels on every save, so a hand editor knows the rules.
const HEADER: &str = "\
# mcp-tunnel relay tunnels. Managed by `mcp-tunnel relay tunnel ...`; hand edits are fine.
# Keys are stored only as SHA-256 hex digests: printf %s \"$KEY\" | sha256sum
# connector_auth: \"relay-key\" (the relay checks the connector key) or \"passthrough\" (it does not).
# admin_key_sha256: the digest of the admin key (`mcp-tunnel relay admin-key`), which opens /v1/tunnels.
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Scopes of the official admin API, kept and shown, not enforced: a self-hosted relay has
    /// no organizations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organization_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspace_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenant_ids: Vec<String>,
    /// When the tunnel was created, Unix seconds; absent for tunnels from older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
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

    /// The official admin API's scope lists, by field name.
    pub fn scopes(&self) -> [(&'static str, &Vec<String>); 3] {
        [
            ("organization_ids", &self.organization_ids),
            ("workspace_ids", &self.workspace_ids),
            ("tenant_ids", &self.tenant_ids),
        ]
    }
}

/// Every tunnel the relay serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// The SHA-256 digest of the admin key; `None`: the admin API is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_key_sha256: Option<String>,
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

    /// Whether `presented` is the admin key (constant-time on the digests); never without one.
    pub fn admin_key_matches(&self, presented: &str) -> bool {
        self.admin_key_sha256
            .as_deref()
            .is_some_and(|digest| keys::matches(presented, digest))
    }
}

/// Reads and validates the tunnels file. A missing file is an empty registry, so a fresh relay
/// starts; every other failure is an error naming the file (and, for syntax and unknown keys, the
/// line).
pub fn load(path: &Path) -> Result<Registry, String> {
    read_registry(path).map_err(FileError::message)
}

/// Parses and validates the text of a tunnels file, as [`load`] does; errors name `tunnels file`
/// where `load` names the path.
pub fn parse_text(text: &str) -> Result<Registry, String> {
    parse(Path::new("tunnels file"), text).map_err(FileError::message)
}

/// Why the tunnels file could not be used. The kind decides the CLI's exit code; each message
/// names the file.
#[derive(Debug)]
pub enum FileError {
    /// The file is not a valid tunnels file (or would not be after the change).
    Invalid(String),
    /// The file, its directory or its lock could not be read or written.
    Io(String),
}

impl FileError {
    fn message(self) -> String {
        match self {
            FileError::Invalid(m) | FileError::Io(m) => m,
        }
    }
}

/// [`load`] keeping the kind of failure: the validated registry, empty if the file is missing.
fn read_registry(path: &Path) -> Result<Registry, FileError> {
    match read(path)? {
        None => Ok(Registry::default()),
        Some(text) => parse(path, &text),
    }
}

/// The file's text; `None` if it does not exist.
fn read(path: &Path) -> Result<Option<String>, FileError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(FileError::Invalid(format!(
            "{}: not UTF-8 text, so not a tunnels file",
            path.display()
        ))),
        Err(e) => Err(FileError::Io(format!(
            "{}: cannot read: {e}",
            path.display()
        ))),
    }
}

fn parse(path: &Path, text: &str) -> Result<Registry, FileError> {
    // toml's message starts "TOML parse error at line L, column C" and quotes the line.
    let reg: Registry = toml::from_str(text).map_err(|e| {
        FileError::Invalid(format!("{}: {}", path.display(), e.to_string().trim_end()))
    })?;
    validate(&reg).map_err(|e| FileError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(reg)
}

/// The rules `load` enforces and `save` refuses to break.
fn validate(reg: &Registry) -> Result<(), String> {
    let mut ids = HashSet::new();
    let mut digests = HashSet::new();
    if let Some(digest) = &reg.admin_key_sha256 {
        if !keys::is_sha256_hex(digest) {
            return Err(
                "admin_key_sha256 must be 64 lowercase hex characters, the admin key's \
                 SHA-256 digest (not the key itself)"
                    .into(),
            );
        }
        digests.insert(digest.as_str());
    }
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
        for (field, list) in t.scopes() {
            edit::check_scope_ids(list).map_err(|m| format!("{at}: {field}: {m}"))?;
        }
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
fn lock(path: &Path) -> Result<File, FileError> {
    let lp = lock_path(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lp)
        .map_err(|e| FileError::Io(format!("{}: cannot open lock file: {e}", lp.display())))?;
    file.lock()
        .map_err(|e| FileError::Io(format!("{}: cannot lock: {e}", lp.display())))?;
    Ok(file)
}

/// Load, change, save, under the lock. Nothing is written if `change` fails.
fn modify<T, E: From<FileError>>(
    path: &Path,
    change: impl FnOnce(&mut Registry) -> Result<T, E>,
) -> Result<T, E> {
    let dir = parent_dir(path);
    fs::create_dir_all(dir)
        .map_err(|e| FileError::Io(format!("{}: cannot create directory: {e}", dir.display())))?;
    let _lock = lock(path)?;
    let mut reg = read_registry(path)?;
    let value = change(&mut reg)?;
    save(path, &reg)
        .map_err(|e| FileError::Io(format!("{}: cannot write: {e}", path.display())))?;
    Ok(value)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::keys::Role;
    use std::os::unix::fs::PermissionsExt;

    /// A unique directory under the system temp dir, removed on drop.
    pub(super) struct TempDir(pub(super) PathBuf);

    impl TempDir {
        pub(super) fn new() -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "mcpt-tunnels-test-{}-{}",
                std::process::id(),
                crate::crypto::random_hex(8)
            ));
            fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
        pub(super) fn file(&self) -> PathBuf {
            self.0.join("tunnels.toml")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    pub(super) fn record(id: &str, name: &str) -> TunnelRecord {
        TunnelRecord {
            id: id.to_string(),
            name: name.to_string(),
            description: String::new(),
            runtime_key_sha256: keys::hash(keys::generate(Role::Runtime).expose()),
            connector_key_sha256: keys::hash(keys::generate(Role::Connector).expose()),
            connector_auth: ConnectorAuth::RelayKey,
            ..TunnelRecord::default()
        }
    }

    pub(super) const ID_A: &str = "tunnel_0123456789abcdef0123456789abcdef";

    pub(super) const ID_B: &str = "tunnel_fedcba9876543210fedcba9876543210";

    const HASH_1: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    const HASH_2: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    pub(super) fn write(path: &Path, text: &str) {
        fs::write(path, text).expect("write test file");
    }

    fn load_err(text: &str) -> String {
        let dir = TempDir::new();
        write(&dir.file(), text);
        let e = load(&dir.file()).expect_err("should be rejected");
        assert!(e.contains(&dir.file().display().to_string()), "{e}");
        e
    }

    #[test]
    fn save_load_round_trip() {
        let dir = TempDir::new();
        let mut a = record(ID_A, "production");
        a.description = "Private MCP for the analytics team\nsecond line \"quoted\"".into();
        let mut b = record(ID_B, "staging");
        b.connector_auth = ConnectorAuth::Passthrough;
        let reg = Registry {
            admin_key_sha256: None,
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
    fn admin_key_and_scopes_round_trip_and_are_checked() {
        let dir = TempDir::new();
        let admin = keys::generate_admin();
        let mut a = record(ID_A, "p");
        a.organization_ids = vec!["org_a".into()];
        a.created_at = Some(1_767_225_600);
        let reg = Registry {
            admin_key_sha256: Some(keys::hash(admin.expose())),
            tunnels: vec![a],
        };
        save(&dir.file(), &reg).expect("save");
        let loaded = load(&dir.file()).expect("load");
        assert_eq!(loaded, reg);
        assert!(loaded.admin_key_matches(admin.expose()));
        assert!(!loaded.admin_key_matches(keys::generate_admin().expose()));
        assert!(!Registry::default().admin_key_matches(admin.expose()));

        let e = load_err("admin_key_sha256 = \"mcpt_ad_abc\"\n");
        assert!(
            e.contains("admin_key_sha256 must be 64 lowercase hex"),
            "{e}"
        );
        assert!(!e.contains("mcpt_ad_abc"), "{e}");
        // The admin key's digest reused as a tunnel's key would let one key open two roles.
        let t = record(ID_A, "p");
        let text = toml::to_string(&Registry {
            admin_key_sha256: Some(t.runtime_key_sha256.clone()),
            tunnels: vec![t],
        })
        .expect("serialize");
        assert!(load_err(&text).contains("repeats a digest"));
        let mut t = record(ID_A, "p");
        t.workspace_ids = vec!["two words".into()];
        let text = toml::to_string(&Registry {
            admin_key_sha256: None,
            tunnels: vec![t],
        })
        .expect("serialize");
        assert!(load_err(&text).contains("workspace_ids: \"two words\" is not an id"));
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let a = record(ID_A, "one");
        let b = record(ID_A, "two");
        let text = toml::to_string(&Registry {
            admin_key_sha256: None,
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
            admin_key_sha256: None,
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
            admin_key_sha256: None,
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
}
