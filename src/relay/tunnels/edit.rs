//! Every change to the tunnels file that both the CLI (`relay tunnel add|remove`, `relay
//! admin-key`) and the admin API (`/v1/tunnels`, [`crate::relay::admin`]) make: one
//! implementation, so the two cannot drift. Each change is one locked load-modify-save
//! ([`super::modify`]): concurrent creates from several processes or threads never lose one
//! another, and the file is replaced atomically.
//!
//! New keys come back as [`Secret`]s for the caller to show once; only their digests are stored.
//! Input is checked here (names, description length, scope ids) and refused with a message
//! that names the field and never quotes a key.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{ConnectorAuth, FileError, Registry, TunnelRecord, check_name, modify, shown};
use crate::relay::keys::{self, Role};
use crate::secret::Secret;

/// Longest tunnel name, in characters.
pub const NAME_MAX_CHARS: usize = 255;
/// Longest description, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 1024;
/// Most ids in one scope list (`organization_ids`, …), and the longest id, in characters.
pub const SCOPE_MAX_IDS: usize = 100;
pub const SCOPE_ID_MAX_CHARS: usize = 128;

/// Why a change was not made.
#[derive(Debug)]
pub enum EditError {
    /// The request itself is wrong (a bad field, a key that exists): 400, exit 2.
    Invalid(String),
    /// No tunnel with that id: 404, exit 2.
    NotFound(String),
    /// The tunnels file is invalid (exit 2) or could not be read or written (exit 1): the
    /// server's problem, 500.
    File(FileError),
}

impl From<FileError> for EditError {
    fn from(e: FileError) -> EditError {
        EditError::File(e)
    }
}

/// A tunnel to create.
#[derive(Debug, Clone, Default)]
pub struct NewTunnel {
    pub name: String,
    pub description: String,
    pub organization_ids: Vec<String>,
    pub workspace_ids: Vec<String>,
    pub tenant_ids: Vec<String>,
    pub connector_auth: ConnectorAuth,
}

/// A created tunnel and its two new keys, shown once.
pub struct Created {
    pub record: TunnelRecord,
    pub runtime_key: Secret,
    pub connector_key: Secret,
}

/// The fields an update replaces; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TunnelPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub organization_ids: Option<Vec<String>>,
    pub workspace_ids: Option<Vec<String>>,
    pub tenant_ids: Option<Vec<String>>,
    pub connector_auth: Option<ConnectorAuth>,
}

/// A tunnel name as `create` and `update` accept it.
pub fn check_new_name(name: &str) -> Result<(), String> {
    check_name(name)?;
    if name.chars().count() > NAME_MAX_CHARS {
        return Err(format!("must be at most {NAME_MAX_CHARS} characters"));
    }
    Ok(())
}

pub fn check_description(description: &str) -> Result<(), String> {
    if description.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(format!(
            "must be at most {DESCRIPTION_MAX_CHARS} characters"
        ));
    }
    Ok(())
}

/// A scope list: at most [`SCOPE_MAX_IDS`] distinct ids of letters, digits and `_-.:`.
pub fn check_scope_ids(ids: &[String]) -> Result<(), String> {
    if ids.len() > SCOPE_MAX_IDS {
        return Err(format!("at most {SCOPE_MAX_IDS} ids"));
    }
    for (i, id) in ids.iter().enumerate() {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.:".contains(c);
        if id.is_empty() || id.chars().count() > SCOPE_ID_MAX_CHARS || !id.chars().all(allowed) {
            return Err(format!(
                "{} is not an id (1 to {SCOPE_ID_MAX_CHARS} letters, digits, `_`, `-`, `.`, `:`)",
                shown(id)
            ));
        }
        if ids[..i].contains(id) {
            return Err(format!("{} appears more than once", shown(id)));
        }
    }
    Ok(())
}

fn check_new(t: &NewTunnel) -> Result<(), EditError> {
    fn invalid(field: &'static str) -> impl Fn(String) -> EditError {
        move |m| EditError::Invalid(format!("{field}: {m}"))
    }
    check_new_name(&t.name).map_err(invalid("name"))?;
    check_description(&t.description).map_err(invalid("description"))?;
    for (field, ids) in [
        ("organization_ids", &t.organization_ids),
        ("workspace_ids", &t.workspace_ids),
        ("tenant_ids", &t.tenant_ids),
    ] {
        check_scope_ids(ids).map_err(invalid(field))?;
    }
    Ok(())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Adds a tunnel with a new id and new keys.
pub fn create(file: &Path, new: NewTunnel) -> Result<Created, EditError> {
    check_new(&new)?;
    let runtime_key = keys::generate(Role::Runtime);
    // Stored for passthrough tunnels too, so switching to relay-key later needs no new key.
    let connector_key = keys::generate(Role::Connector);
    let record = modify::<_, EditError>(file, |reg| {
        let id = loop {
            let id = keys::generate_tunnel_id();
            if reg.get(&id).is_none() {
                break id;
            }
        };
        let record = TunnelRecord {
            id,
            name: new.name,
            description: new.description,
            runtime_key_sha256: keys::hash(runtime_key.expose()),
            connector_key_sha256: keys::hash(connector_key.expose()),
            connector_auth: new.connector_auth,
            organization_ids: new.organization_ids,
            workspace_ids: new.workspace_ids,
            tenant_ids: new.tenant_ids,
            created_at: Some(now_unix()),
        };
        reg.tunnels.push(record.clone());
        Ok(record)
    })?;
    Ok(Created {
        record,
        runtime_key,
        connector_key,
    })
}

/// Replaces the fields `patch` names; the keys stay.
pub fn update(file: &Path, id: &str, patch: TunnelPatch) -> Result<TunnelRecord, EditError> {
    require_file(file, id)?;
    modify::<_, EditError>(file, |reg| {
        let t = reg.get_mut(id).ok_or_else(|| not_found(id))?;
        let next = NewTunnel {
            name: patch.name.unwrap_or_else(|| t.name.clone()),
            description: patch.description.unwrap_or_else(|| t.description.clone()),
            organization_ids: patch
                .organization_ids
                .unwrap_or_else(|| t.organization_ids.clone()),
            workspace_ids: patch
                .workspace_ids
                .unwrap_or_else(|| t.workspace_ids.clone()),
            tenant_ids: patch.tenant_ids.unwrap_or_else(|| t.tenant_ids.clone()),
            connector_auth: patch.connector_auth.unwrap_or(t.connector_auth),
        };
        check_new(&next)?;
        t.name = next.name;
        t.description = next.description;
        t.organization_ids = next.organization_ids;
        t.workspace_ids = next.workspace_ids;
        t.tenant_ids = next.tenant_ids;
        t.connector_auth = next.connector_auth;
        Ok(t.clone())
    })
}

/// Removes a tunnel; its keys stop working at the relay's next reload.
pub fn delete(file: &Path, id: &str) -> Result<TunnelRecord, EditError> {
    require_file(file, id)?;
    modify::<_, EditError>(file, |reg| {
        let at = reg
            .tunnels
            .iter()
            .position(|t| t.id == id)
            .ok_or_else(|| not_found(id))?;
        Ok(reg.tunnels.remove(at))
    })
}

/// What [`admin_key`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminKeyChange {
    /// Make one; refused if the file already has one (it would lock out whoever holds it).
    Create,
    /// Replace the existing one (or make the first).
    Rotate,
    /// Remove it: the admin API closes.
    Remove,
}

/// Creates, rotates or removes the admin key; the new key, to show once.
pub fn admin_key(file: &Path, change: AdminKeyChange) -> Result<Option<Secret>, EditError> {
    let key = (change != AdminKeyChange::Remove).then(keys::generate_admin);
    modify::<_, EditError>(file, |reg: &mut Registry| {
        match change {
            AdminKeyChange::Create if reg.admin_key_sha256.is_some() => {
                return Err(EditError::Invalid(format!(
                    "{} already has an admin key; `rotate` replaces it",
                    file.display()
                )));
            }
            AdminKeyChange::Remove if reg.admin_key_sha256.is_none() => {
                return Err(EditError::Invalid(format!(
                    "{} has no admin key to remove",
                    file.display()
                )));
            }
            _ => {}
        }
        reg.admin_key_sha256 = key.as_ref().map(|k| keys::hash(k.expose()));
        Ok(())
    })?;
    Ok(key)
}

/// `update` and `delete` on a file that does not exist fail without creating its directory.
fn require_file(file: &Path, id: &str) -> Result<(), EditError> {
    if file.exists() {
        Ok(())
    } else {
        Err(EditError::NotFound(format!(
            "no tunnel {id}: {} does not exist",
            file.display()
        )))
    }
}

fn not_found(id: &str) -> EditError {
    EditError::NotFound(format!("no tunnel {id}"))
}
