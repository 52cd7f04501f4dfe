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

/// Turns a check's message into the error naming `field`.
fn invalid(field: &'static str) -> impl Fn(String) -> EditError {
    move |m| EditError::Invalid(format!("{field}: {m}"))
}

fn check_new(t: &NewTunnel) -> Result<(), EditError> {
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

/// Replaces the fields `patch` names; the keys stay. Only the fields given are checked, so a
/// hand-edited field the API would not accept does not block changing another.
pub fn update(file: &Path, id: &str, patch: TunnelPatch) -> Result<TunnelRecord, EditError> {
    if let Some(name) = &patch.name {
        check_new_name(name).map_err(invalid("name"))?;
    }
    if let Some(description) = &patch.description {
        check_description(description).map_err(invalid("description"))?;
    }
    for (field, ids) in [
        ("organization_ids", &patch.organization_ids),
        ("workspace_ids", &patch.workspace_ids),
        ("tenant_ids", &patch.tenant_ids),
    ] {
        if let Some(ids) = ids {
            check_scope_ids(ids).map_err(invalid(field))?;
        }
    }
    require_file(file, id)?;
    modify::<_, EditError>(file, |reg| {
        let t = reg.get_mut(id).ok_or_else(|| not_found(id))?;
        let TunnelPatch {
            name,
            description,
            organization_ids,
            workspace_ids,
            tenant_ids,
            connector_auth,
        } = patch;
        t.name = name.unwrap_or_else(|| std::mem::take(&mut t.name));
        t.description = description.unwrap_or_else(|| std::mem::take(&mut t.description));
        t.organization_ids =
            organization_ids.unwrap_or_else(|| std::mem::take(&mut t.organization_ids));
        t.workspace_ids = workspace_ids.unwrap_or_else(|| std::mem::take(&mut t.workspace_ids));
        t.tenant_ids = tenant_ids.unwrap_or_else(|| std::mem::take(&mut t.tenant_ids));
        t.connector_auth = connector_auth.unwrap_or(t.connector_auth);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::tunnels::load;
    use crate::relay::tunnels::tests::TempDir;

    fn new(name: &str) -> NewTunnel {
        NewTunnel {
            name: name.into(),
            ..NewTunnel::default()
        }
    }

    fn invalid_message(r: Result<impl Sized, EditError>) -> String {
        match r {
            Err(EditError::Invalid(m)) => m,
            Err(other) => panic!("not Invalid: {other:?}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn create_update_delete_keep_keys_and_fields() {
        let dir = TempDir::new();
        let file = dir.file();
        let mut n = new("one");
        n.organization_ids = vec!["org_a".into()];
        let c = create(&file, n).expect("create");
        assert!(keys::is_tunnel_id(&c.record.id));
        assert!(c.record.created_at.is_some());
        assert!(c.record.runtime_key_matches(c.runtime_key.expose()));
        assert!(c.record.connector_key_matches(c.connector_key.expose()));
        assert_eq!(
            load(&file).expect("load").get(&c.record.id),
            Some(&c.record)
        );

        let patch = TunnelPatch {
            description: Some("d".into()),
            workspace_ids: Some(vec!["ws".into()]),
            ..TunnelPatch::default()
        };
        let u = update(&file, &c.record.id, patch).expect("update");
        assert_eq!((u.name.as_str(), u.description.as_str()), ("one", "d"));
        assert_eq!(u.organization_ids, vec!["org_a".to_string()]);
        assert_eq!(u.workspace_ids, vec!["ws".to_string()]);
        assert_eq!(u.runtime_key_sha256, c.record.runtime_key_sha256);
        assert_eq!(u.created_at, c.record.created_at);

        let d = delete(&file, &c.record.id).expect("delete");
        assert_eq!(d, u);
        assert!(load(&file).expect("load").tunnels.is_empty());
        for r in [
            delete(&file, &c.record.id).map(drop),
            update(&file, &c.record.id, TunnelPatch::default()).map(drop),
        ] {
            assert!(matches!(r, Err(EditError::NotFound(_))), "{r:?}");
        }
    }

    #[test]
    fn bad_fields_are_refused_before_anything_is_written() {
        let dir = TempDir::new();
        let file = dir.file();
        let long = |n: usize| "é".repeat(n);
        let cases: Vec<(NewTunnel, &str)> = vec![
            (new(""), "name: must not be empty"),
            (new("a\tb"), "name: must not contain control characters"),
            (new(&long(NAME_MAX_CHARS + 1)), "name: must be at most 255"),
            (
                NewTunnel {
                    description: long(DESCRIPTION_MAX_CHARS + 1),
                    ..new("x")
                },
                "description: must be at most 1024",
            ),
            (
                NewTunnel {
                    tenant_ids: vec!["t".into(), "t".into()],
                    ..new("x")
                },
                "tenant_ids: \"t\" appears more than once",
            ),
            (
                NewTunnel {
                    organization_ids: vec!["mcpt_rt_secret key".into()],
                    ..new("x")
                },
                "organization_ids: (a value that looks like a key, not shown)",
            ),
            (
                NewTunnel {
                    workspace_ids: vec![String::new()],
                    ..new("x")
                },
                "workspace_ids: \"\" is not an id",
            ),
        ];
        for (n, expected) in cases {
            let m = invalid_message(create(&file, n));
            assert!(m.contains(expected), "{m}");
            assert!(!m.contains("mcpt_rt_secret"), "{m}");
        }
        // Exactly at the limits is fine.
        create(
            &file,
            NewTunnel {
                description: long(DESCRIPTION_MAX_CHARS),
                organization_ids: (0..SCOPE_MAX_IDS).map(|i| format!("org_{i}")).collect(),
                ..new(&long(NAME_MAX_CHARS))
            },
        )
        .expect("at the limits");
        let too_many: Vec<String> = (0..=SCOPE_MAX_IDS).map(|i| format!("o{i}")).collect();
        assert!(
            invalid_message(check_scope_ids(&too_many).map_err(EditError::Invalid))
                .contains("at most 100")
        );
        assert_eq!(load(&file).expect("load").tunnels.len(), 1);
    }

    #[test]
    fn update_checks_only_the_fields_given() {
        let dir = TempDir::new();
        let file = dir.file();
        let c = create(&file, new("x")).expect("create");
        // A hand edit longer than the API allows does not block changing the name.
        let text = std::fs::read_to_string(&file).expect("read").replace(
            "description = \"\"",
            &format!(
                "description = \"{}\"",
                "d".repeat(DESCRIPTION_MAX_CHARS + 5)
            ),
        );
        std::fs::write(&file, text).expect("write");
        let patch = TunnelPatch {
            name: Some("y".into()),
            ..TunnelPatch::default()
        };
        assert_eq!(
            update(&file, &c.record.id, patch).expect("update").name,
            "y"
        );
        let bad = TunnelPatch {
            name: Some(" ".into()),
            ..TunnelPatch::default()
        };
        assert!(invalid_message(update(&file, &c.record.id, bad)).starts_with("name:"));
    }

    #[test]
    fn admin_key_create_rotate_remove() {
        let dir = TempDir::new();
        let file = dir.file();
        let first = admin_key(&file, AdminKeyChange::Create)
            .expect("create")
            .expect("a key");
        assert!(first.expose().starts_with(keys::ADMIN_KEY_PREFIX));
        assert!(invalid_message(admin_key(&file, AdminKeyChange::Create)).contains("rotate"));
        let second = admin_key(&file, AdminKeyChange::Rotate)
            .expect("rotate")
            .expect("a key");
        let reg = load(&file).expect("load");
        assert!(reg.admin_key_matches(second.expose()));
        assert!(!reg.admin_key_matches(first.expose()));
        assert!(
            admin_key(&file, AdminKeyChange::Remove)
                .expect("remove")
                .is_none()
        );
        let reg = load(&file).expect("load");
        assert!(reg.admin_key_sha256.is_none() && !reg.admin_key_matches(second.expose()));
    }
}
