//! The relay's admin API for tunnels (issue 20 item 4), against the real binary: the official
//! routes and field names (`GET`/`POST /v1/tunnels`, `GET`/`POST`/`DELETE /v1/tunnels/{id}`), the
//! keys a create answers working at once, the admin key's protection of every route (and its
//! absence from the logs), bad input, and concurrent creates.

mod support;

use std::collections::BTreeSet;
use std::thread;

use serde_json::{Value, json};
use support::{
    Connector, HttpAnswer, PROMPTLY, Poller, Relay, RelayBuilder, Stub, TempDir, Tunnel,
    add_tunnel, http_get, http_send, rotate_admin_key, rpc_request, tunnel_client,
};

/// A tunnels file with an admin key, and a relay serving it.
struct Setup {
    relay: Relay,
    admin_key: String,
    dir: TempDir,
}

impl Setup {
    fn start() -> Setup {
        let dir = TempDir::new("relay-admin");
        let admin_key = rotate_admin_key(&dir.tunnels_file());
        Setup {
            relay: RelayBuilder::new(&dir.tunnels_file()).start(),
            admin_key,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.relay.base_url())
    }

    /// `method path` with `key` as the bearer token (none: no `Authorization`).
    fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> HttpAnswer {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let body = body.map(Value::to_string);
        http_send(method, &self.url(path), &headers, body.as_deref())
    }

    fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> HttpAnswer {
        self.call(method, path, Some(&self.admin_key), body)
    }

    /// An admin call that must answer 200; its JSON.
    fn admin_ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let answer = self.admin(method, path, body);
        assert_eq!(answer.status, 200, "{method} {path}: {answer:#?}");
        answer.json()
    }

    fn tunnels_text(&self) -> String {
        std::fs::read_to_string(self.dir.tunnels_file()).expect("read the tunnels file")
    }
}

fn ids(list: &Value) -> BTreeSet<String> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list:#}"))
        .iter()
        .map(|t| t["id"].as_str().expect("an id").to_string())
        .collect()
}

/// The control plane's error shape, with `code`; returns the message.
fn assert_error(answer: &HttpAnswer, status: u16, code: &str) -> String {
    assert_eq!(answer.status, status, "{answer:#?}");
    let body = answer.json();
    assert_eq!(body["error"]["code"], code, "{body:#}");
    assert!(body["error"]["type"].is_string(), "{body:#}");
    body["error"]["message"]
        .as_str()
        .expect("a message")
        .to_string()
}

#[test]
fn create_list_get_update_delete_with_the_official_fields() {
    let mut setup = Setup::start();
    // A tunnel the CLI added shows in the API: one registry, one implementation.
    let by_cli = add_tunnel(&setup.dir.tunnels_file(), "from-cli");

    let created = setup.admin_ok(
        "POST",
        "/v1/tunnels",
        Some(&json!({
            "name": "analytics",
            "description": "Private MCP for the analytics team",
            "organization_ids": ["org_a"],
            "workspace_ids": ["ws_1"],
        })),
    );
    let id = created["id"].as_str().expect("an id").to_string();
    assert!(id.starts_with("tunnel_") && id.len() == 39, "{created:#}");
    assert_eq!(created["object"], "tunnel");
    assert_eq!(created["name"], "analytics");
    assert_eq!(created["description"], "Private MCP for the analytics team");
    assert_eq!(created["organization_ids"], json!(["org_a"]));
    assert_eq!(created["workspace_ids"], json!(["ws_1"]));
    assert_eq!(created["tenant_ids"], json!([]));
    assert!(
        created["created_at"]
            .as_u64()
            .is_some_and(|t| t > 1_700_000_000)
    );
    assert_eq!(created["connector_auth"], "relay-key");
    assert_eq!(created["connector_path"], format!("/v1/mcp/{id}"));
    let runtime_key = created["runtime_key"].as_str().expect("runtime_key");
    let connector_key = created["connector_key"].as_str().expect("connector_key");
    assert!(runtime_key.starts_with("mcpt_rt_") && connector_key.starts_with("mcpt_cn_"));
    let text = setup.tunnels_text();
    assert!(text.contains(&id) && !text.contains(runtime_key) && !text.contains(connector_key));

    // The view without the keys: what list and get answer.
    let mut view = created.clone();
    view.as_object_mut().expect("object").remove("runtime_key");
    view.as_object_mut()
        .expect("object")
        .remove("connector_key");

    let list = setup.admin_ok("GET", "/v1/tunnels", None);
    assert_eq!(list["object"], "list");
    assert_eq!(
        list["tunnels"], list["data"],
        "the official client reads `tunnels`"
    );
    assert_eq!(ids(&list), BTreeSet::from([id.clone(), by_cli.id.clone()]));
    assert!(list["data"].as_array().expect("data").contains(&view));
    assert!(
        !list.to_string().contains("mcpt_"),
        "no key in a list: {list:#}"
    );
    let filtered = setup.admin_ok("GET", "/v1/tunnels?organization_id=org_a", None);
    assert_eq!(ids(&filtered), BTreeSet::from([id.clone()]));
    let none = setup.admin_ok("GET", "/v1/tunnels?workspace_id=ws_other", None);
    assert!(ids(&none).is_empty());

    assert_eq!(
        setup.admin_ok("GET", &format!("/v1/tunnels/{id}"), None),
        view
    );

    // Update: the fields given are replaced (an empty list too), the others kept.
    let updated = setup.admin_ok(
        "POST",
        &format!("/v1/tunnels/{id}"),
        Some(&json!({"name": "analytics-2", "organization_ids": [], "connector_auth": "passthrough"})),
    );
    assert_eq!(updated["name"], "analytics-2");
    assert_eq!(updated["organization_ids"], json!([]));
    assert_eq!(updated["workspace_ids"], json!(["ws_1"]));
    assert_eq!(updated["description"], view["description"]);
    assert_eq!(updated["connector_auth"], "passthrough");
    assert_eq!(updated["created_at"], view["created_at"]);
    assert!(updated.get("runtime_key").is_none(), "{updated:#}");
    assert_eq!(
        setup.admin_ok("GET", &format!("/v1/tunnels/{id}"), None),
        updated
    );
    // The keys survive an update: the runtime key still reads the metadata.
    let meta = http_get(
        &setup.relay.tunnel_url(&id),
        &[("Authorization", &format!("Bearer {runtime_key}"))],
    );
    assert_eq!(meta.status, 200, "{meta:#?}");
    assert_eq!(meta.json()["name"], "analytics-2");

    let deleted = setup.admin_ok("DELETE", &format!("/v1/tunnels/{id}"), None);
    assert_eq!(deleted["id"], id.as_str());
    assert_eq!(deleted["deleted"], true);
    assert_error(
        &setup.admin("GET", &format!("/v1/tunnels/{id}"), None),
        404,
        "tunnel_not_found",
    );
    assert_error(
        &setup.admin("DELETE", &format!("/v1/tunnels/{id}"), None),
        404,
        "tunnel_not_found",
    );
    // Its runtime key stopped working with the answer.
    let meta = http_get(
        &setup.relay.tunnel_url(&id),
        &[("Authorization", &format!("Bearer {runtime_key}"))],
    );
    assert_eq!(meta.status, 404, "{meta:#?}");
    assert_eq!(
        ids(&setup.admin_ok("GET", "/v1/tunnels", None)),
        BTreeSet::from([by_cli.id.clone()])
    );
    assert!(!setup.tunnels_text().contains(&id));

    let log = setup.relay.stop_and_collect_output();
    assert!(
        log.contains(&format!("admin API: created tunnel {id}")),
        "{log}"
    );
    for secret in [setup.admin_key.as_str(), runtime_key, connector_key] {
        assert!(!log.contains(secret), "a key in the relay's log:\n{log}");
    }
}

#[test]
fn the_keys_of_a_create_work_at_once() {
    let setup = Setup::start();
    let created = setup.admin_ok("POST", "/v1/tunnels", Some(&json!({"name": "fresh"})));
    let tunnel = Tunnel {
        id: created["id"].as_str().expect("id").to_string(),
        runtime_key: created["runtime_key"].as_str().expect("key").to_string(),
        connector_key: created["connector_key"].as_str().expect("key").to_string(),
    };
    // The runtime key reads today's metadata (not the admin view) and polls.
    let meta = http_get(
        &setup.relay.tunnel_url(&tunnel.id),
        &[("Authorization", &format!("Bearer {}", tunnel.runtime_key))],
    );
    assert_eq!(meta.status, 200, "{meta:#?}");
    assert_eq!(meta.json()["name"], "fresh");
    assert!(meta.json().get("object").is_none(), "{meta:#?}");
    let poll = Poller::new(&setup.relay, &tunnel.id, &tunnel.runtime_key, "probe").poll(1, 1);
    assert_eq!(poll.status, 204, "{poll:#?}");

    // A real client polls with it, and an MCP host calls through with the connector key.
    let stub = Stub::start();
    let _client = tunnel_client(&setup.relay, &tunnel, stub.url()).spawn();
    let init = Connector::new(&setup.relay, &tunnel).post(&rpc_request(
        1,
        "initialize",
        json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "relay-admin-test", "version": "0"},
        }),
    ));
    assert_eq!(init.status, 200, "{init:#?}");
    assert!(init.elapsed < PROMPTLY * 2, "{init:#?}");
}

#[test]
fn every_admin_route_needs_the_admin_key() {
    let mut setup = Setup::start();
    let tunnel = add_tunnel(&setup.dir.tunnels_file(), "guarded");
    let other_dir = TempDir::new("relay-admin-other");
    let foreign_admin = rotate_admin_key(&other_dir.tunnels_file());
    let made_up = format!("mcpt_ad_{}", "0".repeat(64));
    let before = setup.tunnels_text();
    let one = format!("/v1/tunnels/{}", tunnel.id);
    let create = json!({"name": "intruder"});
    let routes: [(&str, &str, Option<&Value>); 5] = [
        ("GET", "/v1/tunnels", None),
        ("POST", "/v1/tunnels", Some(&create)),
        ("GET", &one, None),
        ("POST", &one, Some(&create)),
        ("DELETE", &one, None),
    ];
    let keys: [(&str, Option<&str>); 5] = [
        ("no key", None),
        ("runtime key", Some(&tunnel.runtime_key)),
        ("connector key", Some(&tunnel.connector_key)),
        ("another relay's admin key", Some(&foreign_admin)),
        ("a made-up admin key", Some(&made_up)),
    ];
    for (method, path, body) in routes {
        for (what, key) in keys {
            if method == "GET" && path == one && what == "runtime key" {
                continue; // the tunnel client's metadata read, below
            }
            let answer = setup.call(method, path, key, body);
            assert!(
                matches!(answer.status, 401 | 403),
                "{method} {path} with {what}: {answer:#?}"
            );
            let body = answer.json();
            assert!(body["error"]["code"].is_string(), "{body:#}");
            assert!(!answer.body.contains(&tunnel.id) || path == one, "{body:#}");
        }
    }
    // The runtime key on its own tunnel: metadata only, and 403 on the writes.
    let meta = setup.call("GET", &one, Some(&tunnel.runtime_key), None);
    assert_eq!(meta.status, 200, "{meta:#?}");
    assert!(meta.json().get("object").is_none(), "{meta:#?}");
    for method in ["POST", "DELETE"] {
        let answer = setup.call(method, &one, Some(&tunnel.runtime_key), Some(&create));
        assert_error(&answer, 403, "admin_key_required");
    }
    // Nothing changed.
    assert_eq!(setup.tunnels_text(), before);

    // The admin key is no runtime or connector key: it cannot poll, respond or call MCP.
    let admin = setup.admin_key.clone();
    let poll = Poller::new(&setup.relay, &tunnel.id, &admin, "admin").poll(1, 1);
    assert_error(&poll, 401, "tunnel_use_forbidden");
    let respond = setup.call(
        "POST",
        &format!("{one}/response"),
        Some(&admin),
        Some(&json!({})),
    );
    assert_error(&respond, 401, "tunnel_use_forbidden");
    let mcp = Connector::new(&setup.relay, &tunnel)
        .bearer(&admin)
        .post(&rpc_request(1, "tools/list", json!({})));
    assert_eq!(mcp.status, 401, "{mcp:#?}");

    let log = setup.relay.stop_and_collect_output();
    for secret in [&setup.admin_key, &foreign_admin, &made_up] {
        assert!(
            !log.contains(secret.as_str()),
            "a key in the relay's log:\n{log}"
        );
    }
}

#[test]
fn an_admin_key_made_or_rotated_while_the_relay_runs_counts_at_once() {
    let dir = TempDir::new("relay-admin-late");
    add_tunnel(&dir.tunnels_file(), "one");
    let relay = RelayBuilder::new(&dir.tunnels_file()).start();
    let list = |key: &str| {
        http_get(
            &format!("{}/v1/tunnels", relay.base_url()),
            &[("Authorization", &format!("Bearer {key}"))],
        )
        .status
    };
    let made_up = format!("mcpt_ad_{}", "1".repeat(64));
    assert_eq!(list(&made_up), 401, "no admin key yet: the API is closed");
    let first = rotate_admin_key(&dir.tunnels_file());
    assert_eq!(list(&first), 200);
    let second = rotate_admin_key(&dir.tunnels_file());
    assert_eq!(list(&second), 200);
    assert_eq!(list(&first), 401, "a rotated key stops at once");
}

#[test]
fn bad_input_is_400_with_a_clear_message() {
    let setup = Setup::start();
    let long = "x".repeat(1025);
    let cases: [(Value, &str); 9] = [
        (
            json!({"name": "a", "colour": "red"}),
            "unknown field `colour`",
        ),
        (json!({"description": "no name"}), "missing field `name`"),
        (json!({"name": ""}), "name: must not be empty"),
        (
            json!({"name": "two\nlines"}),
            "name: must not contain control characters",
        ),
        (
            json!({"name": "a", "description": long}),
            "description: must be at most 1024",
        ),
        (
            json!({"name": "a", "organization_ids": ["org_a", "org_a"]}),
            "appears more than once",
        ),
        (
            json!({"name": "a", "workspace_ids": ["has space"]}),
            "workspace_ids",
        ),
        (
            json!({"name": "a", "connector_auth": "open"}),
            "unknown variant `open`, expected `relay-key` or `passthrough`",
        ),
        (json!({"name": 7}), "invalid type"),
    ];
    for (body, expected) in &cases {
        let answer = setup.admin("POST", "/v1/tunnels", Some(body));
        assert_eq!(answer.status, 400, "{body}: {answer:#?}");
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(expected), "{body}: {message}");
        assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
    }
    let raw = http_send(
        "POST",
        &setup.url("/v1/tunnels"),
        &[("Authorization", &format!("Bearer {}", setup.admin_key))],
        Some("{not json"),
    );
    assert_error(&raw, 400, "invalid_json");
    assert_error(
        &setup.admin("POST", "/v1/tunnels", None),
        400,
        "invalid_json",
    );
    assert_error(
        &setup.admin("PUT", "/v1/tunnels", None),
        405,
        "method_not_allowed",
    );

    let id = setup.admin_ok("POST", "/v1/tunnels", Some(&json!({"name": "kept"})))["id"]
        .as_str()
        .expect("id")
        .to_string();
    let one = format!("/v1/tunnels/{id}");
    for (body, expected) in [
        (json!({"id": "tunnel_other"}), "unknown field `id`"),
        (json!({"name": " "}), "name: must not be empty"),
        (
            json!({"description": long}),
            "description: must be at most 1024",
        ),
    ] {
        let answer = setup.admin("POST", &one, Some(&body));
        assert_eq!(answer.status, 400, "{body}: {answer:#?}");
        let message = answer.json()["error"]["message"].to_string();
        assert!(message.contains(expected), "{body}: {message}");
    }
    // Nothing but the one good create reached the file.
    let list = setup.admin_ok("GET", "/v1/tunnels", None);
    assert_eq!(ids(&list), BTreeSet::from([id]));
    assert_eq!(list["data"][0]["name"], "kept");
}

#[test]
fn concurrent_creates_do_not_lose_each_other() {
    let setup = Setup::start();
    let file = setup.dir.tunnels_file();
    let created: Vec<String> = thread::scope(|s| {
        let api: Vec<_> = (0..6)
            .map(|t| {
                let setup = &setup;
                s.spawn(move || {
                    (0..3)
                        .map(|i| {
                            let name = format!("api-{t}-{i}");
                            setup.admin_ok("POST", "/v1/tunnels", Some(&json!({"name": name})))
                                    ["id"]
                                    .as_str()
                                    .expect("id")
                                    .to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // The CLI writes the same file at the same time, under the same lock.
        let cli = s.spawn(|| {
            (0..2)
                .map(|i| add_tunnel(&file, &format!("cli-{i}")).id)
                .collect::<Vec<_>>()
        });
        api.into_iter()
            .chain([cli])
            .flat_map(|h| h.join().expect("no panic"))
            .collect()
    });
    assert_eq!(created.len(), 20);
    let unique: BTreeSet<String> = created.into_iter().collect();
    assert_eq!(unique.len(), 20);
    assert_eq!(ids(&setup.admin_ok("GET", "/v1/tunnels", None)), unique);
    let text = setup.tunnels_text();
    assert!(unique.iter().all(|id| text.contains(id.as_str())));
}

#[test]
fn a_tunnels_file_the_relay_cannot_write_is_a_500_and_reads_still_work() {
    let setup = Setup::start();
    // The lock file replaced by a directory: opening it fails, even for root.
    let lock = setup.dir.path().join("tunnels.toml.lock");
    let _ = std::fs::remove_file(&lock);
    std::fs::create_dir(&lock).expect("a directory where the lock file goes");
    let answer = setup.admin("POST", "/v1/tunnels", Some(&json!({"name": "unwritten"})));
    let message = assert_error(&answer, 500, "tunnels_file_error");
    assert!(
        !message.contains(setup.dir.path().to_str().expect("UTF-8")),
        "{message}"
    );
    assert!(
        setup
            .relay
            .wait_for_log("admin API: the tunnels file was not changed", PROMPTLY),
        "{}",
        setup.relay.output()
    );
    assert!(ids(&setup.admin_ok("GET", "/v1/tunnels", None)).is_empty());
}
