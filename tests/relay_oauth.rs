//! The relay's OAuth support (issue 15, the relay side), against the real relay binary with the
//! test playing the tunnel client: a host's GET of a tunnel's protected-resource metadata becomes
//! an `oauth_discovery` command, the scripted client answers it, and the host gets the metadata
//! with `resource` rewritten to the tunnel's public URL; a 401 from the MCP server has its
//! `resource_metadata` pointed at the relay; relay-key tunnels and relays without `--public-url`
//! are refused with their codes; a bad `--public-url` stops the relay at start.

mod support;

use std::thread;

use serde_json::{Value, json};
use support::{
    ClientBuilder, Connector, HttpAnswer, PROMPTLY, Poller, Relay, RelayBuilder, TempDir, Tunnel,
    add_tunnel, add_tunnel_with_auth, http_get, request_id_of, rpc_request, shard_token_of,
};

const PUBLIC: &str = "https://relay.example.test";

/// The MCP server's own metadata, as the tunnel client would fetch it inside the network.
fn upstream_prmd() -> Value {
    json!({
        "resource": "http://10.0.0.5:3000/mcp",
        "authorization_servers": ["https://login.example.test/"],
        "scopes_supported": ["tools.read"],
        "bearer_methods_supported": ["header"],
    })
}

fn prmd_path(tunnel_id: &str, channel: Option<&str>) -> String {
    match channel {
        Some(c) => format!("/.well-known/oauth-protected-resource/v1/mcp/{tunnel_id}/{c}"),
        None => format!("/.well-known/oauth-protected-resource/v1/mcp/{tunnel_id}"),
    }
}

struct Setup {
    _dir: TempDir,
    relay: Relay,
    tunnel: Tunnel,
    poller: Poller,
}

fn setup(auth: &str, public_url: Option<&str>) -> Setup {
    let dir = TempDir::new("relay-oauth");
    let tunnel = if auth == "relay-key" {
        add_tunnel(&dir.tunnels_file(), "oauth")
    } else {
        add_tunnel_with_auth(&dir.tunnels_file(), "oauth", auth)
    };
    let mut builder = RelayBuilder::new(&dir.tunnels_file()).option("--connector.timeout", "8s");
    if let Some(url) = public_url {
        builder = builder.option("--public-url", url);
    }
    let relay = builder.start();
    let poller = Poller::new(&relay, &tunnel.id, &tunnel.runtime_key, "inst-oauth");
    Setup {
        _dir: dir,
        relay,
        tunnel,
        poller,
    }
}

/// The host GETs `path` while the scripted client takes the one command it causes and answers
/// it with `payload(command)`; returns the command and the host's answer.
fn discover_with(
    s: &Setup,
    path: &str,
    payload: impl FnOnce(&Value) -> Value,
) -> (Value, HttpAnswer) {
    s.poller.register_as_connected();
    let url = format!("{}{path}", s.relay.base_url());
    let host = thread::spawn(move || http_get(&url, &[("Accept", "application/json")]));
    let command = s.poller.take_one_command();
    let posted = s
        .poller
        .post_response(shard_token_of(&command), &payload(&command));
    assert_eq!(posted.status, 200, "{posted:#?}");
    (command, host.join().expect("the host thread"))
}

fn discovery_answer(command: &Value, code: u16, body: Value) -> Value {
    json!({
        "request_id": request_id_of(command),
        "channel": "main",
        "resp_json": body,
        "resp_headers": {"Content-Type": ["application/json"], "Cache-Control": ["max-age=60"]},
        "resp_code": code,
        "resp_type": "oauth_discovery_response",
    })
}

#[test]
fn prmd_becomes_an_oauth_discovery_command_and_its_resource_the_tunnel_url() {
    let s = setup("passthrough", Some(PUBLIC));
    let (command, answer) = discover_with(&s, &prmd_path(&s.tunnel.id, None), |c| {
        discovery_answer(c, 200, upstream_prmd())
    });
    assert_eq!(command["command_type"], "oauth_discovery", "{command:#}");
    assert_eq!(command["channel"], "main", "{command:#}");
    assert!(command.get("jsonrpc").is_none(), "{command:#}");
    assert_eq!(answer.status, 200, "{answer:#?}");
    assert!(
        answer.content_type().starts_with("application/json"),
        "{answer:#?}"
    );
    assert_eq!(answer.header("Cache-Control"), Some("max-age=60"));
    let body = answer.json();
    let mut want = upstream_prmd();
    want["resource"] = json!(format!("{PUBLIC}/v1/mcp/{}", s.tunnel.id));
    assert_eq!(body, want, "only the resource changes");
}

#[test]
fn a_channel_path_asks_for_that_channel_and_names_it_in_the_resource() {
    let s = setup("passthrough", Some(PUBLIC));
    let path = prmd_path(&s.tunnel.id, Some("tools"));
    let (command, answer) = discover_with(&s, &path, |c| discovery_answer(c, 200, upstream_prmd()));
    assert_eq!(command["channel"], "tools", "{command:#}");
    assert_eq!(answer.status, 200, "{answer:#?}");
    assert_eq!(
        answer.json()["resource"],
        format!("{PUBLIC}/v1/mcp/{}/tools", s.tunnel.id)
    );
}

#[test]
fn the_clients_error_answer_passes_through_as_json() {
    let s = setup("passthrough", Some(PUBLIC));
    let failure = json!({"error": {
        "message": "no OAuth metadata found for main",
        "type": "server_error",
        "code": "oauth_discovery_failed",
    }});
    let sent = failure.clone();
    let (_, answer) = discover_with(&s, &prmd_path(&s.tunnel.id, None), move |c| {
        discovery_answer(c, 502, sent)
    });
    assert_eq!(answer.status, 502, "{answer:#?}");
    assert!(
        answer.content_type().starts_with("application/json"),
        "{answer:#?}"
    );
    assert_eq!(answer.json(), failure);
    let (_, answer) = discover_with(&s, &prmd_path(&s.tunnel.id, Some("other")), |c| {
        discovery_answer(
            c,
            400,
            json!({"error": {"message": "unsupported channel \"other\"",
                "type": "invalid_request_error", "code": "unsupported_channel"}}),
        )
    });
    assert_eq!(answer.status, 400, "{answer:#?}");
    assert_eq!(answer.error_code().as_deref(), Some("unsupported_channel"));
}

#[test]
fn relay_key_tunnels_are_refused_without_asking_the_client() {
    let s = setup("relay-key", Some(PUBLIC));
    s.poller.register_as_connected();
    let url = format!("{}{}", s.relay.base_url(), prmd_path(&s.tunnel.id, None));
    let answer = http_get(&url, &[]);
    assert_eq!(answer.status, 404, "{answer:#?}");
    assert_eq!(answer.error_code().as_deref(), Some("oauth_not_available"));
    assert!(answer.body.contains("passthrough"), "{answer:#?}");
    // Nothing was queued: the next (short) poll finds the queue empty.
    s.poller.register_as_connected();
    assert_eq!(s.relay.queued_count(&s.tunnel.id), 0);
}

#[test]
fn without_public_url_the_routes_are_refused_and_challenges_untouched() {
    let s = setup("passthrough", None);
    s.poller.register_as_connected();
    let url = format!("{}{}", s.relay.base_url(), prmd_path(&s.tunnel.id, None));
    let answer = http_get(&url, &[]);
    assert_eq!(answer.status, 404, "{answer:#?}");
    assert_eq!(
        answer.error_code().as_deref(),
        Some("public_url_not_configured")
    );
    assert!(answer.body.contains("--public-url"), "{answer:#?}");
    let challenge = r#"Bearer resource_metadata="http://10.0.0.5:3000/.well-known/oauth-protected-resource/mcp""#;
    let answer = unauthorized_call(&s, challenge);
    assert_eq!(answer.header("WWW-Authenticate"), Some(challenge));
}

#[test]
fn unknown_tunnels_and_absent_clients_get_the_existing_answers() {
    let s = setup("passthrough", Some(PUBLIC));
    let base = s.relay.base_url();
    let answer = http_get(&format!("{base}{}", prmd_path("tunnel_nope", None)), &[]);
    assert_eq!(answer.status, 404, "{answer:#?}");
    assert_eq!(answer.error_code().as_deref(), Some("tunnel_not_found"));
    // No client has polled yet.
    let answer = http_get(&format!("{base}{}", prmd_path(&s.tunnel.id, None)), &[]);
    assert_eq!(answer.status, 503, "{answer:#?}");
    assert_eq!(
        answer.error_code().as_deref(),
        Some("tunnel_client_not_connected")
    );
}

/// A tokenless `tools/list` whose command the scripted client answers with the MCP server's
/// 401 carrying `challenge`.
fn unauthorized_call(s: &Setup, challenge: &str) -> HttpAnswer {
    unauthorized_call_on(s, &Connector::new(&s.relay, &s.tunnel), challenge)
}

fn unauthorized_call_on(s: &Setup, connector: &Connector, challenge: &str) -> HttpAnswer {
    s.poller.register_as_connected();
    let host = connector.clone().without_authorization();
    let caller = thread::spawn(move || host.post(&rpc_request(1, "tools/list", json!({}))));
    let command = s.poller.take_one_command();
    assert_eq!(command["command_type"], "jsonrpc", "{command:#}");
    let payload = json!({
        "request_id": request_id_of(&command),
        "channel": command["channel"],
        "resp_json": {"jsonrpc": "2.0", "id": 1, "error": {"code": -32001, "message": "unauthorized"}},
        "resp_headers": {"Content-Type": ["application/json"], "WWW-Authenticate": [challenge]},
        "resp_code": 401,
        "resp_type": "jsonrpc_response",
    });
    let posted = s.poller.post_response(shard_token_of(&command), &payload);
    assert_eq!(posted.status, 200, "{posted:#?}");
    let answer = caller.join().expect("the caller thread");
    assert_eq!(answer.status, 401, "{answer:#?}");
    answer
}

#[test]
fn a_401_through_a_passthrough_tunnel_points_resource_metadata_at_the_relay() {
    let s = setup("passthrough", Some(PUBLIC));
    let challenge = r#"Bearer error="invalid_token", resource_metadata="http://10.0.0.5:3000/.well-known/oauth-protected-resource/mcp", scope="tools.read""#;
    let answer = unauthorized_call(&s, challenge);
    let want = format!(
        r#"Bearer error="invalid_token", resource_metadata="{PUBLIC}{}", scope="tools.read""#,
        prmd_path(&s.tunnel.id, None)
    );
    assert_eq!(answer.header("WWW-Authenticate"), Some(want.as_str()));
    // On a channel endpoint the metadata URL names the channel.
    let channel = Connector::new(&s.relay, &s.tunnel).on_channel("tools");
    let answer = unauthorized_call_on(&s, &channel, challenge);
    let want = format!(
        r#"Bearer error="invalid_token", resource_metadata="{PUBLIC}{}", scope="tools.read""#,
        prmd_path(&s.tunnel.id, Some("tools"))
    );
    assert_eq!(answer.header("WWW-Authenticate"), Some(want.as_str()));
}

#[test]
fn a_bad_public_url_stops_the_relay_naming_the_key() {
    let dir = TempDir::new("relay-oauth-bad");
    add_tunnel(&dir.tunnels_file(), "x");
    let tunnels = dir.tunnels_file().to_string_lossy().into_owned();
    let start = |extra: &[&str], env: &[(&str, &str)]| {
        let mut builder = ClientBuilder::bare()
            .arg("relay")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--tunnels-file")
            .arg(&tunnels);
        for arg in extra {
            builder = builder.arg(arg);
        }
        for (key, value) in env {
            builder = builder.env(key, value);
        }
        let mut process = builder.spawn();
        let status = process
            .wait_exit(PROMPTLY)
            .expect("the relay exits on a bad --public-url");
        (status.code(), process.stderr())
    };
    let (code, stderr) = start(&["--public-url=http://relay.example.com"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--public-url"), "{stderr}");
    assert!(stderr.contains("https"), "{stderr}");
    let (code, stderr) = start(
        &[],
        &[("RELAY_PUBLIC_URL", "https://relay.example.com/prefix")],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("RELAY_PUBLIC_URL"), "{stderr}");
}
