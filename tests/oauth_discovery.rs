//! Acceptance tests of the `oauth_discovery` command (issue 15 item 1) at the wire: the real
//! `mcp-tunnel run` between the loopback fake control plane and a fake OAuth-protected MCP server
//! (the fake MCP server with fixed replies on its `/mcp` challenge and metadata paths). A command
//! goes in, one `oauth_discovery_response` POST comes out; its code, body bytes and headers are
//! checked, and what the MCP server saw. The discovery steps themselves (candidate order, retries,
//! metadata validation) are unit-tested in `src/mcp/oauth_discovery.rs`.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{
    ClientBuilder, Command, FakeControlPlane, FakeMcp, McpReply, PROMPTLY, PostedResponse,
    TunnelClient, rpc_request,
};

// ---------------------------------------------------------------------------------------------
// Helpers

const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";
const WELL_KNOWN_MCP: &str = "/.well-known/oauth-protected-resource/mcp";

/// Response headers an `oauth_discovery_response` may carry: the MCP allowlist plus
/// `Cache-Control`.
const RETURNABLE: &[&str] = &[
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "access-control-expose-headers",
    "www-authenticate",
    "cache-control",
];

/// Metadata with odd spacing and key order, so any re-serialisation would show.
fn prmd_text(resource: &str) -> String {
    format!(
        "{{ \"resource\" : \"{resource}\",\n  \"authorization_servers\":[\"http://127.0.0.1:9/as\"],\
         \"zeta\":1, \"alpha\" :[ 1 ,2 ] }}"
    )
}

/// A `200 application/json` metadata reply with a few headers the tunnel must not pass on.
fn prmd_reply(body: &str) -> McpReply {
    McpReply::raw_json(body)
        .header("Cache-Control", "max-age=300")
        .header("Set-Cookie", "session=internal")
        .header("X-Internal-Route", "pod-7")
}

/// `/mcp` answers every request `401` with a `Bearer` challenge naming `metadata_url`.
fn challenge_with(mcp: &FakeMcp, metadata_url: &str) {
    let challenge = format!("Bearer realm=\"mcp\", resource_metadata=\"{metadata_url}\"");
    mcp.on_path(
        "/mcp",
        McpReply::text(401, "unauthorized").header("WWW-Authenticate", &challenge),
    );
}

fn start_client(control_plane: &FakeControlPlane, mcp: &FakeMcp) -> TunnelClient {
    spawn_discovered(ClientBuilder::for_fakes(control_plane, mcp.url()), &[mcp])
}

/// Spawns a client with an HTTP main and waits until its own start-up discovery is over; then
/// `fakes` forget it, so that what they record is the command's discovery alone.
fn spawn_discovered(builder: ClientBuilder, fakes: &[&FakeMcp]) -> TunnelClient {
    let client = builder.spawn();
    assert!(
        client.wait_for_stderr("start-up OAuth discovery: ", PROMPTLY),
        "no start-up discovery: {}",
        client.stderr()
    );
    for fake in fakes {
        fake.forget_requests();
    }
    client
}

/// Queues `command` and waits for its terminal response.
fn exchange(control_plane: &FakeControlPlane, command: Command) -> PostedResponse {
    let request_id = command.request_id().to_owned();
    control_plane.push(command);
    control_plane.wait_for_terminal_response(&request_id, PROMPTLY)
}

/// The error object of a JSON answer: `{"message","type","code"}`.
fn error_of(posted: &PostedResponse) -> &Value {
    &posted.json["resp_json"]["error"]
}

fn assert_discovery_failed(posted: &PostedResponse) {
    assert_eq!(
        posted.resp_type(),
        "oauth_discovery_response",
        "{posted:#?}"
    );
    assert_eq!(posted.resp_code(), Some(502), "{posted:#?}");
    assert_eq!(error_of(posted)["type"], "server_error", "{posted:#?}");
    assert_eq!(
        error_of(posted)["code"],
        "oauth_discovery_failed",
        "{posted:#?}"
    );
    assert!(error_of(posted)["message"].is_string(), "{posted:#?}");
}

/// Asserts a successful answer carrying `body` byte for byte.
fn assert_metadata(posted: &PostedResponse, body: &str) {
    assert_eq!(
        posted.resp_type(),
        "oauth_discovery_response",
        "{posted:#?}"
    );
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    assert_eq!(posted.json["channel"], "main", "{posted:#?}");
    let raw = posted.raw_body();
    assert!(
        raw.contains(&format!("\"resp_json\":{body}")),
        "resp_json is not the metadata byte for byte:\n{raw}\nexpected:\n{body}"
    );
}

fn resp_header_names(posted: &PostedResponse) -> Vec<String> {
    posted.json["resp_headers"]
        .as_object()
        .map(|headers| headers.keys().map(|k| k.to_ascii_lowercase()).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Success

#[test]
fn a_challenge_leads_to_the_metadata_answered_byte_exact_with_allowlisted_headers() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let metadata_url = format!("{}{WELL_KNOWN_MCP}", mcp.origin());
    let body = prmd_text(mcp.url());
    challenge_with(&mcp, &metadata_url);
    mcp.on_path(WELL_KNOWN_MCP, prmd_reply(&body));
    let _client = start_client(&control_plane, &mcp);

    let posted = exchange(&control_plane, Command::oauth_discovery("disc-1"));

    assert_metadata(&posted, &body);
    assert_eq!(posted.request_id(), "disc-1");
    assert_eq!(
        posted.resp_header("Content-Type"),
        Some(vec!["application/json"]),
        "{posted:#?}"
    );
    assert_eq!(
        posted.resp_header("Cache-Control"),
        Some(vec!["max-age=300"]),
        "{posted:#?}"
    );
    for name in resp_header_names(&posted) {
        assert!(
            RETURNABLE.contains(&name.as_str()),
            "{name} is not returnable: {posted:#?}"
        );
    }
    // The probe: an empty POST to the MCP URL, asking for JSON, under our name.
    let probes = mcp.requests_to("/mcp");
    let probe = probes.first().expect("a probe of /mcp");
    assert_eq!(probe.method, "POST", "{probes:#?}");
    assert!(probe.body.is_empty(), "{probe:#?}");
    for request in probes.iter().chain(&mcp.requests_to(WELL_KNOWN_MCP)) {
        assert_eq!(
            request.header("Accept"),
            Some("application/json"),
            "{request:#?}"
        );
        let agent = request.header("User-Agent").unwrap_or_default();
        assert!(agent.starts_with("mcp-tunnel/"), "{request:#?}");
    }
    // The challenge was enough: the probe's URL is the first candidate, so nothing else was asked.
    assert!(mcp.requests_to(WELL_KNOWN).is_empty(), "{:#?}", mcp.calls());

    // An empty channel is `main`.
    let posted = exchange(
        &control_plane,
        Command::oauth_discovery("disc-2").channel(""),
    );
    assert_metadata(&posted, &body);
}

#[test]
fn without_a_challenge_the_well_known_location_is_found() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let body = prmd_text(mcp.url());
    mcp.on_path(WELL_KNOWN_MCP, prmd_reply(&body));
    let _client = start_client(&control_plane, &mcp);

    let posted = exchange(&control_plane, Command::oauth_discovery("disc-1"));

    assert_metadata(&posted, &body);
    let methods: Vec<String> = mcp
        .requests_to("/mcp")
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(methods, ["POST", "GET"], "the probe tries POST, then GET");
}

// ---------------------------------------------------------------------------------------------
// Unsupported channels

#[test]
fn discovery_on_a_stdio_main_is_400_unsupported_channel() {
    let control_plane = FakeControlPlane::start();
    let stdio_server = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stdio_edge_server.py"
    );
    let _client = ClientBuilder::run(control_plane.base_url(), control_plane.api_key(), "unused")
        .without_env("MCP_SERVER_URL")
        .env("MCP_COMMAND", &format!("python3 '{stdio_server}'"))
        .spawn();

    let posted = exchange(&control_plane, Command::oauth_discovery("disc-stdio"));

    assert_unsupported(&posted, "main");
}

#[test]
fn discovery_on_a_channel_other_than_main_is_400_unsupported_channel() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let other = FakeMcp::start();
    challenge_with(&other, &format!("{}{WELL_KNOWN_MCP}", other.origin()));
    other.on_path(WELL_KNOWN_MCP, prmd_reply(&prmd_text(other.url())));
    let _client = spawn_discovered(
        ClientBuilder::for_fakes(&control_plane, mcp.url()).env(
            "MCP_SERVER_URL",
            &format!("{}\nchannel=other,url={}", mcp.url(), other.url()),
        ),
        &[&mcp],
    );

    let posted = exchange(
        &control_plane,
        Command::oauth_discovery("disc-other").channel("other"),
    );
    assert_unsupported(&posted, "other");
    let posted = exchange(
        &control_plane,
        Command::oauth_discovery("disc-nowhere").channel("nowhere"),
    );
    assert_unsupported(&posted, "nowhere");
    assert!(other.calls().is_empty(), "{:#?}", other.calls());
}

fn assert_unsupported(posted: &PostedResponse, channel: &str) {
    assert_eq!(
        posted.resp_type(),
        "oauth_discovery_response",
        "{posted:#?}"
    );
    assert_eq!(posted.resp_code(), Some(400), "{posted:#?}");
    let expected = json!({"error": {
        "message": format!("unsupported channel \"{channel}\""),
        "type": "invalid_request_error",
        "code": "unsupported_channel",
    }});
    assert_eq!(posted.resp_json(), Some(&expected), "{posted:#?}");
    assert!(resp_header_names(posted).is_empty(), "{posted:#?}");
}

// ---------------------------------------------------------------------------------------------
// Failures are answered, promptly

#[test]
fn no_metadata_anywhere_is_answered_502_promptly() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let _client = start_client(&control_plane, &mcp);

    control_plane.push(Command::oauth_discovery("disc-none"));
    control_plane.wait_until_handed_out("disc-none", PROMPTLY);
    let handed_out = std::time::Instant::now();
    let posted = control_plane.wait_for_terminal_response("disc-none", PROMPTLY);

    assert_discovery_failed(&posted);
    // The probe and three 404s on loopback: well under the overall 15 s bound.
    let took = posted.request.at.saturating_duration_since(handed_out);
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    for path in [WELL_KNOWN_MCP, WELL_KNOWN] {
        assert_eq!(mcp.requests_to(path).len(), 1, "{path}: {:#?}", mcp.calls());
    }
}

#[test]
fn a_hanging_metadata_server_is_answered_502_within_the_response_timeout() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    for path in ["/mcp", WELL_KNOWN_MCP, WELL_KNOWN] {
        mcp.on_path(path, McpReply::empty(404).after(Duration::from_secs(30)));
    }
    // Its start-up discovery hangs as well, alongside: not waited for.
    let _client = ClientBuilder::for_fakes(&control_plane, mcp.url()).spawn();

    control_plane.push(Command::oauth_discovery("disc-slow").response_timeout("4s"));
    control_plane.wait_until_handed_out("disc-slow", PROMPTLY);
    let handed_out = std::time::Instant::now();
    let posted = control_plane.wait_for_terminal_response("disc-slow", PROMPTLY);

    assert_discovery_failed(&posted);
    let took = posted.request.at.saturating_duration_since(handed_out);
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
}

// ---------------------------------------------------------------------------------------------
// Origins and redirects

#[test]
fn metadata_on_another_origin_needs_the_operators_allowance() {
    let mcp = FakeMcp::start();
    let metadata = FakeMcp::start();
    let body = prmd_text(mcp.url());
    challenge_with(&mcp, &format!("{}{WELL_KNOWN_MCP}", metadata.origin()));
    metadata.on_path(WELL_KNOWN_MCP, prmd_reply(&body));
    let secret = "discovery-secret-not-for-other-origins";
    // One control plane per client, so no command is handed to the first one's last poll.
    let configured = |control_plane: &FakeControlPlane| {
        ClientBuilder::for_fakes(control_plane, mcp.url()).env(
            "MCP_DISCOVERY_EXTRA_HEADERS",
            &format!("X-Discovery-Key: {secret}"),
        )
    };

    let control_plane = FakeControlPlane::start();
    let _refusing = spawn_discovered(configured(&control_plane), &[&mcp, &metadata]);
    let posted = exchange(&control_plane, Command::oauth_discovery("disc-refused"));
    assert_discovery_failed(&posted);
    assert!(metadata.calls().is_empty(), "{:#?}", metadata.calls());

    let control_plane = FakeControlPlane::start();
    let _allowing = spawn_discovered(
        configured(&control_plane).env("MCP_DISCOVERY_ALLOW_ORIGIN", &metadata.origin()),
        &[&mcp, &metadata],
    );
    let posted = exchange(&control_plane, Command::oauth_discovery("disc-allowed"));
    assert_metadata(&posted, &body);
    // The operator's headers are for main's origin only.
    let fetched = metadata.wait_for_request_to(WELL_KNOWN_MCP, PROMPTLY);
    assert!(!fetched.mentions(secret), "{fetched:#?}");
    assert!(!fetched.has_header("X-Discovery-Key"), "{fetched:#?}");
}

#[test]
fn a_same_origin_redirect_is_followed() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let body = prmd_text(mcp.url());
    challenge_with(&mcp, &format!("{}/old-metadata", mcp.origin()));
    mcp.on_path(
        "/old-metadata",
        McpReply::empty(302).header("Location", "/metadata/v2"),
    );
    mcp.on_path("/metadata/v2", prmd_reply(&body));
    let _client = start_client(&control_plane, &mcp);

    let posted = exchange(&control_plane, Command::oauth_discovery("disc-moved"));

    assert_metadata(&posted, &body);
    assert_eq!(
        mcp.requests_to("/metadata/v2").len(),
        1,
        "{:#?}",
        mcp.calls()
    );
}

#[test]
fn a_cross_origin_redirect_is_refused() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let elsewhere = FakeMcp::start();
    challenge_with(&mcp, &format!("{}/old-metadata", mcp.origin()));
    mcp.on_path(
        "/old-metadata",
        McpReply::empty(302).header("Location", &format!("{}/metadata", elsewhere.origin())),
    );
    elsewhere.on_path("/metadata", prmd_reply(&prmd_text(mcp.url())));
    // Allowing the origin for a probe's URL does not open it to redirects.
    let _client = spawn_discovered(
        ClientBuilder::for_fakes(&control_plane, mcp.url())
            .env("MCP_DISCOVERY_ALLOW_ORIGIN", &elsewhere.origin()),
        &[&mcp, &elsewhere],
    );

    let posted = exchange(&control_plane, Command::oauth_discovery("disc-away"));

    assert_discovery_failed(&posted);
    assert_eq!(
        mcp.requests_to("/old-metadata").len(),
        1,
        "{:#?}",
        mcp.calls()
    );
    assert!(elsewhere.calls().is_empty(), "{:#?}", elsewhere.calls());
}

// ---------------------------------------------------------------------------------------------
// Headers

#[test]
fn discovery_headers_reach_discovery_requests_and_override_static_headers() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let body = prmd_text(mcp.url());
    mcp.on_path(WELL_KNOWN_MCP, prmd_reply(&body));
    let static_key = "static-key-for-mcp-calls";
    let discovery_key = "discovery-key-for-metadata";
    let mut client = spawn_discovered(
        ClientBuilder::for_fakes(&control_plane, mcp.url())
            .env(
                "MCP_EXTRA_HEADERS",
                &format!("X-Api-Key: {static_key}, X-Team: blue"),
            )
            .env(
                "MCP_DISCOVERY_EXTRA_HEADERS",
                &format!("X-Api-Key: {discovery_key}"),
            ),
        &[&mcp],
    );

    let posted = exchange(&control_plane, Command::oauth_discovery("disc-headers"));
    assert_metadata(&posted, &body);
    let discovery_requests = mcp.requests();
    // The probe's POST and GET, then the first well-known candidate.
    assert_eq!(discovery_requests.len(), 3, "{discovery_requests:#?}");
    for request in &discovery_requests {
        assert_eq!(
            request.header_values("X-Api-Key"),
            [discovery_key],
            "{request:#?}"
        );
        assert_eq!(request.header("X-Team"), Some("blue"), "{request:#?}");
    }

    // MCP traffic keeps the static value.
    let ping = Command::jsonrpc("ping-1", rpc_request("p-1", "ping", json!({})));
    let posted = exchange(&control_plane, ping);
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    let call = mcp.wait_for_call(&json!("p-1"), PROMPTLY);
    assert_eq!(call.request.header_values("X-Api-Key"), [static_key]);

    client.kill_and_collect();
    let logs = format!("{}{}", client.stderr(), client.stdout());
    assert!(!logs.contains(discovery_key), "{logs}");
    assert!(!logs.contains(static_key), "{logs}");
}
