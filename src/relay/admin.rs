//! The admin API for tunnels, with the official control plane's routes and field names (as the
//! official client's `tunnel-client admin tunnels …` speaks them), behind the relay's admin key
//! (`mcp-tunnel relay admin-key`, stored hashed in the tunnels file):
//!
//! | route | does |
//! |---|---|
//! | `GET /v1/tunnels[?organization_id=…\|workspace_id=…\|tenant_id=…]` | list |
//! | `POST /v1/tunnels` | create; answers the new `runtime_key` and `connector_key`, once |
//! | `GET /v1/tunnels/{id}` | read (with the runtime key instead: the client's metadata, [`super::control`]) |
//! | `POST /v1/tunnels/{id}` | update the fields given |
//! | `DELETE /v1/tunnels/{id}` | delete |
//!
//! A tunnel is `{id, object: "tunnel", name, description, organization_ids, workspace_ids,
//! tenant_ids, created_at}` plus our `connector_auth` and `connector_path`; a list is
//! `{object: "list", data: […], tunnels: […]}` (`tunnels` is what the official client reads).
//! Requests with unknown fields are refused. Every change goes through
//! [`super::tunnels::edit`], the code `relay tunnel add|remove` runs too, and the registry is
//! reloaded before the answer, so the change is in force when the caller sees it. Errors are the
//! control plane's `{"error":{"message","type","code"}}`; the admin key is never logged.

use serde::Deserialize;
use serde_json::{Value, json};

use super::tunnels::edit::{self, EditError, NewTunnel, TunnelPatch};
use super::tunnels::{ConnectorAuth, FileError, TunnelRecord};
use super::{Relay, api_error, bearer, keys, report_reload};
use crate::http_server::{Request, Response};

/// The body of `POST /v1/tunnels`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    organization_ids: Vec<String>,
    #[serde(default)]
    workspace_ids: Vec<String>,
    #[serde(default)]
    tenant_ids: Vec<String>,
    #[serde(default)]
    connector_auth: ConnectorAuth,
}

/// The body of `POST /v1/tunnels/{id}`: absent (or `null`) fields stay as they are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    name: Option<String>,
    description: Option<String>,
    organization_ids: Option<Vec<String>>,
    workspace_ids: Option<Vec<String>>,
    tenant_ids: Option<Vec<String>>,
    connector_auth: Option<ConnectorAuth>,
}

/// The admin API's view of a tunnel: the official fields, then ours. Never a key or digest.
fn view(t: &TunnelRecord) -> Value {
    let mut v = json!({
        "id": t.id,
        "object": "tunnel",
        "name": t.name,
        "description": t.description,
        "organization_ids": t.organization_ids,
        "workspace_ids": t.workspace_ids,
        "tenant_ids": t.tenant_ids,
        "connector_auth": t.connector_auth.as_str(),
        "connector_path": format!("/v1/mcp/{}", t.id),
    });
    if let Some(at) = t.created_at {
        v["created_at"] = json!(at);
    }
    v
}

fn ok(body: &Value) -> Response {
    Response::json(200, body.to_string())
}

/// The answer to a missing or wrong admin key.
pub fn admin_key_refused() -> Response {
    api_error(
        401,
        "invalid_request_error",
        "invalid_api_key",
        "missing or invalid admin key (create one with `mcp-tunnel relay admin-key`)",
    )
    .with_header("WWW-Authenticate", "Bearer realm=\"mcp-tunnel\"")
}

/// The answer to a tunnel's runtime key on a route that changes the tunnel.
pub fn admin_key_required() -> Response {
    api_error(
        403,
        "invalid_request_error",
        "admin_key_required",
        "this route needs the relay's admin key; a runtime key only reads its tunnel's metadata",
    )
}

fn method_not_allowed(allow: &str) -> Response {
    api_error(
        405,
        "invalid_request_error",
        "method_not_allowed",
        &format!("this route takes {allow}"),
    )
    .with_header("Allow", allow)
}

fn bad_request(code: &str, message: &str) -> Response {
    api_error(400, "invalid_request_error", code, message)
}

/// A JSON body of type `T`, or the 400 naming what is wrong (serde names an unknown field and
/// the fields expected).
fn parse<T: for<'de> Deserialize<'de>>(req: &Request) -> Result<T, Response> {
    if req.body.is_empty() {
        return Err(bad_request(
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| bad_request("invalid_json", &format!("invalid request body: {e}")))
}

impl Relay {
    /// Whether `key` is the admin key. A changed tunnels file is re-read first, so a key made or
    /// rotated a moment ago by `relay admin-key` works, and the old one stops, at once. Only
    /// keys with the admin prefix get that far: a poll's runtime key costs no file check.
    pub(super) fn is_admin(&self, key: Option<&str>) -> bool {
        let Some(key) = key.filter(|k| k.starts_with(keys::ADMIN_KEY_PREFIX)) else {
            return false;
        };
        self.reload_if_changed();
        let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
        registry.admin_key_matches(key)
    }

    /// Whether the relay has an admin key at all (the status page is 404 without one). A
    /// changed tunnels file is re-read first, like [`Relay::is_admin`] does.
    pub(super) fn admin_key_configured(&self) -> bool {
        self.reload_if_changed();
        let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
        registry.admin_key_sha256.is_some()
    }

    /// `/v1/tunnels`: list or create.
    pub(super) fn admin_collection(&self, req: &Request) -> Response {
        if let Err(denied) = self.admin_guard(req) {
            return denied;
        }
        match req.method.as_str() {
            "GET" => self.admin_list(req),
            "POST" => self.admin_create(req),
            _ => method_not_allowed("GET, POST"),
        }
    }

    /// `/v1/tunnels/{id}` with the admin key: read, update or delete.
    pub(super) fn admin_tunnel(&self, id: &str, req: &Request) -> Response {
        if let Err(denied) = self.admin_guard(req) {
            return denied;
        }
        match req.method.as_str() {
            "GET" => match self.record(id) {
                Some(t) => ok(&view(&t)),
                None => super::unknown_tunnel(),
            },
            "POST" => {
                let body: UpdateBody = match parse(req) {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                let patch = TunnelPatch {
                    name: body.name,
                    description: body.description,
                    organization_ids: body.organization_ids,
                    workspace_ids: body.workspace_ids,
                    tenant_ids: body.tenant_ids,
                    connector_auth: body.connector_auth,
                };
                self.written(edit::update(&self.cfg.tunnels_file, id, patch), "updated")
                    .map_or_else(|e| e, |t| ok(&view(&t)))
            }
            "DELETE" => self
                .written(edit::delete(&self.cfg.tunnels_file, id), "deleted")
                .map_or_else(
                    |e| e,
                    |t| {
                        let mut v = view(&t);
                        v["deleted"] = json!(true);
                        ok(&v)
                    },
                ),
            _ => method_not_allowed("GET, POST, DELETE"),
        }
    }

    /// The client certificate (as on the control plane), then the admin key.
    fn admin_guard(&self, req: &Request) -> Result<(), Response> {
        self.require_client_cert(req.client_cert_verified, true)?;
        if self.is_admin(bearer(req)) {
            Ok(())
        } else {
            Err(admin_key_refused())
        }
    }

    fn admin_list(&self, req: &Request) -> Response {
        let filters: Vec<(&str, String)> = [
            ("organization_ids", "organization_id"),
            ("workspace_ids", "workspace_id"),
            ("tenant_ids", "tenant_id"),
        ]
        .into_iter()
        .filter_map(|(field, param)| req.query_param(param).map(|v| (field, v)))
        .collect();
        let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
        let data: Vec<Value> = registry
            .tunnels
            .iter()
            .filter(|t| {
                filters.iter().all(|(field, wanted)| {
                    t.scopes()
                        .iter()
                        .any(|(f, ids)| f == field && ids.contains(wanted))
                })
            })
            .map(view)
            .collect();
        ok(&json!({ "object": "list", "data": data, "tunnels": data }))
    }

    fn admin_create(&self, req: &Request) -> Response {
        let body: CreateBody = match parse(req) {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let new = NewTunnel {
            name: body.name,
            description: body.description,
            organization_ids: body.organization_ids,
            workspace_ids: body.workspace_ids,
            tenant_ids: body.tenant_ids,
            connector_auth: body.connector_auth,
        };
        let created = match self.written(edit::create(&self.cfg.tunnels_file, new), "created") {
            Ok(c) => c,
            Err(resp) => return resp,
        };
        let mut v = view(&created.record);
        // Shown once: only their digests are stored.
        v["runtime_key"] = json!(created.runtime_key.expose());
        v["connector_key"] = json!(created.connector_key.expose());
        ok(&v)
    }

    /// After a change to the tunnels file: reloads it, so the change is in force before the
    /// answer, and logs what changed; a failure becomes its error answer.
    fn written<T: Named>(&self, result: Result<T, EditError>, what: &str) -> Result<T, Response> {
        match result {
            Ok(value) => {
                let (id, name) = value.id_and_name();
                log::info!("admin API: {what} tunnel {id} ({name:?})");
                report_reload(self.reload(), "admin API");
                Ok(value)
            }
            Err(EditError::Invalid(m)) => Err(bad_request("invalid_request", &m)),
            Err(EditError::NotFound(_)) => Err(super::unknown_tunnel()),
            Err(EditError::File(e)) => {
                let detail = match e {
                    FileError::Invalid(m) | FileError::Io(m) => m,
                };
                log::error!("admin API: the tunnels file was not changed: {detail}");
                Err(api_error(
                    500,
                    "api_error",
                    "tunnels_file_error",
                    "the relay could not change its tunnels file; its log says why",
                ))
            }
        }
    }
}

/// What the log line of a change names.
trait Named {
    fn id_and_name(&self) -> (&str, &str);
}

impl Named for TunnelRecord {
    fn id_and_name(&self) -> (&str, &str) {
        (&self.id, &self.name)
    }
}

impl Named for edit::Created {
    fn id_and_name(&self) -> (&str, &str) {
        (&self.record.id, &self.record.name)
    }
}
