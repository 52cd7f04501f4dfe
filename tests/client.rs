//! End-to-end tests of `mcp-tunnel run`: the real binary between a loopback fake control plane and a
//! loopback fake MCP server. Each test proves one acceptance criterion of the client (issue 2).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    API_KEY, ClientBuilder, Command, FakeControlPlane, FakeMcp, McpReply, PROMPTLY, PostedResponse,
    Scripted, SseEvent, TUNNEL_ID, TunnelClient, dead_loopback_url, let_time_pass, notification,
    rpc_request, secs, tool_call,
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn start_client(control_plane: &FakeControlPlane, mcp: &FakeMcp) -> TunnelClient {
    ClientBuilder::for_fakes(control_plane, mcp.url()).spawn()
}

/// A client with a single MCP worker: commands are then served strictly one after another, so the
/// response to a later command proves the client has finished with every earlier one.
fn start_single_worker_client(control_plane: &FakeControlPlane, mcp: &FakeMcp) -> TunnelClient {
    ClientBuilder::for_fakes(control_plane, mcp.url())
        .env("MCP_MAX_CONCURRENT_REQUESTS", "1")
        .spawn()
}

/// Queues `command` and waits for its terminal response, as a connector would.
fn exchange(control_plane: &FakeControlPlane, command: &Command) -> PostedResponse {
    control_plane.push(command.clone());
    control_plane.wait_for_terminal_response(command.request_id(), PROMPTLY)
}

/// Serves one trivial `ping` end to end. Used after a negative check ("nothing else was posted"),
/// so that check is made only once the client has demonstrably moved on.
fn serve_marker(control_plane: &FakeControlPlane, marker: &str) {
    let ping = Command::jsonrpc(marker, rpc_request(marker, "ping", json!({})));
    let posted = exchange(control_plane, &ping);
    assert_eq!(
        posted.resp_code(),
        Some(200),
        "marker {marker}: {posted:#?}"
    );
}

/// How many requests with JSON-RPC `id` the MCP server received.
fn mcp_calls_with_id(mcp: &FakeMcp, id: &Value) -> usize {
    mcp.calls()
        .iter()
        .filter(|call| call.rpc_id().as_ref() == Some(id))
        .count()
}

/// The `{"jsonrpc":"2.0","id":..,"result":..}` that `McpReply::result` sends.
fn result_message(id: &Value, result: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// `resp_json.error.data.tunnel_failure` of a synthesized failure.
fn tunnel_failure(posted: &PostedResponse) -> &Value {
    &posted.json["resp_json"]["error"]["data"]["tunnel_failure"]
}

fn assert_successful_response(posted: &PostedResponse) {
    assert_eq!(posted.resp_type(), "jsonrpc_response", "{posted:#?}");
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    assert_eq!(posted.json["channel"], "main", "{posted:#?}");
}

fn is_lowercase_hex(text: &str, length: usize) -> bool {
    text.len() == length
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------------------------------------
// Forwarding

#[test]
fn round_trip_carries_the_mcp_session_id_both_ways() {
    const SESSION: &str = "sess-1f2e3d4c";
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let init_result = json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                             "serverInfo": {"name": "fake-mcp", "version": "1.0.0"}});
    let list_result = json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]});
    let call_result = json!({"content": [{"type": "text", "text": "hello"}]});
    mcp.on_method(
        "initialize",
        McpReply::result(init_result.clone()).header("Mcp-Session-Id", SESSION),
    );
    mcp.on_method("tools/list", McpReply::result(list_result.clone()));
    mcp.on_tool("echo", McpReply::result(call_result.clone()));
    let _client = start_client(&control_plane, &mcp);

    let initialize = Command::jsonrpc(
        "req-initialize",
        rpc_request(
            1,
            "initialize",
            json!({"protocolVersion": "2025-06-18",
            "capabilities": {}, "clientInfo": {"name": "connector", "version": "1"}}),
        ),
    );
    let posted = exchange(&control_plane, &initialize);
    assert_successful_response(&posted);
    assert_eq!(
        posted.resp_json(),
        Some(&result_message(&json!(1), &init_result))
    );
    assert_eq!(posted.resp_header("Mcp-Session-Id"), Some(vec![SESSION]));
    let call = mcp.wait_for_call(&json!(1), PROMPTLY);
    assert!(!call.request.has_header("Mcp-Session-Id"));

    let list = Command::jsonrpc("req-list", rpc_request(2, "tools/list", json!({})))
        .header("Mcp-Session-Id", SESSION);
    let posted = exchange(&control_plane, &list);
    assert_successful_response(&posted);
    assert_eq!(
        posted.resp_json(),
        Some(&result_message(&json!(2), &list_result))
    );

    let tool = Command::jsonrpc("req-call", tool_call(3, "echo")).header("Mcp-Session-Id", SESSION);
    let posted = exchange(&control_plane, &tool);
    assert_successful_response(&posted);
    assert_eq!(
        posted.resp_json(),
        Some(&result_message(&json!(3), &call_result))
    );

    for (command, id) in [(&list, 2), (&tool, 3)] {
        let call = mcp.wait_for_call(&json!(id), PROMPTLY);
        assert_eq!(call.request.header("Mcp-Session-Id"), Some(SESSION));
        assert_eq!(call.request.method, "POST");
        assert_eq!(call.request.body_json().as_ref(), Some(command.message()));
        assert!(
            call.request
                .header("Content-Type")
                .is_some_and(|value| value.starts_with("application/json")),
            "{:?}",
            call.request.headers
        );
        let accept = call.request.header("Accept").unwrap_or_default();
        assert!(
            accept.contains("application/json") && accept.contains("text/event-stream"),
            "Accept: {accept:?}"
        );
    }
}

#[test]
fn sse_notifications_are_posted_as_they_arrive_before_the_terminal_response() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let progress = |step: u64| {
        json!({"jsonrpc": "2.0", "method": "notifications/progress",
               "params": {"progressToken": "tok-2", "progress": step, "total": 2}})
    };
    let pause = Duration::from_millis(400);
    mcp.on_tool(
        "long",
        McpReply::sse(vec![
            SseEvent::message(pause, &progress(1)),
            SseEvent::message(pause, &progress(2)),
            SseEvent::result(pause, json!({"content": []})),
        ]),
    );
    let _client = start_client(&control_plane, &mcp);

    let command = Command::jsonrpc("req-sse", tool_call(20, "long"));
    let terminal = exchange(&control_plane, &command);
    assert_successful_response(&terminal);
    assert_eq!(
        terminal.resp_json(),
        Some(&result_message(&json!(20), &json!({"content": []})))
    );

    let posts = control_plane.responses_for("req-sse");
    let types: Vec<&str> = posts.iter().map(PostedResponse::resp_type).collect();
    assert_eq!(
        types,
        ["jsonrpc_notify", "jsonrpc_notify", "jsonrpc_response"]
    );
    assert_eq!(posts[0].resp_json(), Some(&progress(1)));
    assert_eq!(posts[1].resp_json(), Some(&progress(2)));
    assert!(posts[0].request.at <= posts[1].request.at);
    assert!(posts[1].request.at <= posts[2].request.at);
    // Streamed, not buffered: the first notification was posted before MCP had sent the result.
    let call = mcp.wait_until_answered(&json!(20), PROMPTLY);
    let result_sent_at = *call.sse_events_sent.last().expect("events were sent");
    assert!(
        posts[0].request.at < result_sent_at,
        "first notification arrived {:?} after MCP sent the final result",
        posts[0].request.at - result_sent_at
    );
}

#[test]
fn forwarded_notification_gets_a_notify_ack_with_the_upstream_status() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let _client = start_client(&control_plane, &mcp);

    let command = Command::jsonrpc("req-notify", notification("notifications/initialized"));
    let posted = exchange(&control_plane, &command);
    assert_eq!(posted.resp_type(), "notify_ack", "{posted:#?}");
    assert_eq!(posted.resp_code(), Some(202));
    assert!(posted.resp_json().is_none(), "{posted:#?}");

    serve_marker(&control_plane, "marker-notify");
    assert_eq!(control_plane.responses_for("req-notify").len(), 1);
    let forwarded: Vec<_> = mcp
        .calls()
        .into_iter()
        .filter(|call| call.rpc_method().as_deref() == Some("notifications/initialized"))
        .collect();
    assert_eq!(forwarded.len(), 1);
    assert_eq!(
        forwarded[0].request.body_json().as_ref(),
        Some(command.message())
    );
}

#[test]
fn session_termination_sends_one_delete_and_posts_its_status() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let _client = start_client(&control_plane, &mcp);

    let command = Command::session_termination("req-end", "sess-to-close");
    let posted = exchange(&control_plane, &command);
    assert_eq!(
        posted.resp_type(),
        "session_termination_response",
        "{posted:#?}"
    );
    assert_eq!(posted.resp_code(), Some(204));

    serve_marker(&control_plane, "marker-end");
    let deletes: Vec<_> = mcp
        .calls()
        .into_iter()
        .filter(|call| call.request.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:#?}");
    assert_eq!(
        deletes[0].request.header("Mcp-Session-Id"),
        Some("sess-to-close")
    );
    assert_eq!(control_plane.responses_for("req-end").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Deadlines and skipped commands

#[test]
fn zero_response_timeout_drops_the_command_without_contacting_mcp() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let _client = start_single_worker_client(&control_plane, &mcp);

    let expired = Command::jsonrpc("req-expired", tool_call(50, "echo")).response_timeout("0s");
    control_plane.push(expired);
    control_plane.wait_until_handed_out("req-expired", PROMPTLY);
    let later = exchange(
        &control_plane,
        &Command::jsonrpc("req-later", tool_call(51, "echo")),
    );
    assert_successful_response(&later);

    assert!(control_plane.responses_for("req-expired").is_empty());
    let seen: Vec<Option<Value>> = mcp.calls().iter().map(|call| call.rpc_id()).collect();
    assert_eq!(seen, [Some(json!(51))], "MCP saw only the later command");
}

#[test]
fn deadline_expiring_during_a_slow_call_posts_nothing() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    mcp.on_tool(
        "slow",
        McpReply::result(json!({"content": []})).after(secs(3.0)),
    );
    let _client = start_single_worker_client(&control_plane, &mcp);

    let slow = Command::jsonrpc("req-expires", tool_call(60, "slow")).response_timeout("1s");
    control_plane.push(slow);
    control_plane.wait_until_handed_out("req-expires", PROMPTLY);
    let later = exchange(
        &control_plane,
        &Command::jsonrpc("req-next", tool_call(61, "echo")),
    );
    assert_successful_response(&later);

    // The one worker was freed at the deadline, not when MCP finally answered.
    let slow_call = mcp.wait_until_answered(&json!(60), PROMPTLY);
    let later_call = mcp.wait_for_call(&json!(61), PROMPTLY);
    let slow_finished = slow_call.finished_at.expect("answered");
    assert!(
        later_call.request.at < slow_finished,
        "the slow call was awaited past its deadline"
    );
    // MCP has now answered the abandoned call; a client still reading it would post right away.
    serve_marker(&control_plane, "marker-after-slow");
    assert!(
        control_plane.responses_for("req-expires").is_empty(),
        "{:#?}",
        control_plane.responses_for("req-expires")
    );
}

#[test]
fn unknown_command_type_is_skipped_and_the_next_command_is_served() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let client = start_client(&control_plane, &mcp);

    let unknown = Command::jsonrpc("req-frob", tool_call(70, "echo")).command_type("frobnicate");
    let next = Command::jsonrpc("req-served", tool_call(71, "echo"));
    control_plane.push_batch(vec![unknown.into(), next.clone().into()]);
    let posted = control_plane.wait_for_terminal_response(next.request_id(), PROMPTLY);
    assert_successful_response(&posted);

    assert!(client.wait_for_stderr("frobnicate", PROMPTLY));
    assert!(
        client
            .stderr()
            .lines()
            .any(|line| line.contains("frobnicate") && line.contains("req-frob")),
        "the skipped type is logged with its request id"
    );
    serve_marker(&control_plane, "marker-frob");
    assert!(control_plane.responses_for("req-frob").is_empty());
    assert_eq!(mcp_calls_with_id(&mcp, &json!(70)), 0);
}

// ---------------------------------------------------------------------------------------------
// Response payloads

#[test]
fn shard_token_travels_only_in_the_header() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let _client = start_client(&control_plane, &mcp);

    let command = Command::jsonrpc("req-shard", tool_call(80, "echo"));
    let posted = exchange(&control_plane, &command);
    assert_successful_response(&posted);
    assert_eq!(
        posted.header("X-Tunnel-Shard-Token"),
        Some(command.shard_token())
    );
    let body = posted.raw_body();
    assert!(!body.contains("shard_token"), "{body}");
    assert!(!body.contains(command.shard_token()), "{body}");
}

/// A valid JSON-RPC error with unusual key order and number formatting.
const UNUSUAL_ERROR: &str =
    r#"{"id":7,"jsonrpc":"2.0","error":{"message":"nope","code":-32004,"data":{"z":1,"a":1.50}}}"#;

fn forward_unusual_error(reply: McpReply) -> PostedResponse {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    mcp.on_tool("fails", reply);
    let _client = start_client(&control_plane, &mcp);
    let posted = exchange(
        &control_plane,
        &Command::jsonrpc("req-error", tool_call(7, "fails")),
    );
    assert_eq!(posted.resp_type(), "jsonrpc_response", "{posted:#?}");
    let body = posted.raw_body();
    assert!(body.contains(UNUSUAL_ERROR), "not byte-exact: {body}");
    posted
}

#[test]
fn jsonrpc_error_with_http_200_passes_through_byte_exact() {
    let posted = forward_unusual_error(McpReply::raw_json(UNUSUAL_ERROR));
    assert_eq!(posted.resp_code(), Some(200));
}

#[test]
fn jsonrpc_error_with_http_401_keeps_its_status_and_www_authenticate() {
    const CHALLENGE: &str =
        r#"Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource""#;
    let posted = forward_unusual_error(
        McpReply::raw_json(UNUSUAL_ERROR)
            .status(401)
            .header("WWW-Authenticate", CHALLENGE),
    );
    assert_eq!(posted.resp_code(), Some(401));
    assert_eq!(
        posted.resp_header("WWW-Authenticate"),
        Some(vec![CHALLENGE])
    );
}

#[test]
fn unreachable_mcp_server_yields_a_connect_failure_with_502() {
    let control_plane = FakeControlPlane::start();
    let _client = ClientBuilder::for_fakes(&control_plane, &dead_loopback_url("/mcp")).spawn();

    let command = Command::jsonrpc("req-down", tool_call("rpc-down-1", "echo"));
    let posted = exchange(&control_plane, &command);
    assert_eq!(posted.resp_type(), "jsonrpc_response", "{posted:#?}");
    assert_eq!(posted.resp_code(), Some(502));
    let message = posted.resp_json().expect("a synthesized error");
    assert_eq!(message["jsonrpc"], "2.0");
    assert_eq!(message["id"], "rpc-down-1");
    assert_eq!(message["error"]["code"], -32603);
    let failure = tunnel_failure(&posted);
    assert_eq!(failure["version"], 1, "{failure}");
    assert_eq!(failure["source"], "connect", "{failure}");
    assert_eq!(failure["upstream_response_received"], false, "{failure}");
}

#[test]
fn plain_text_503_becomes_target_http_failure_without_the_body() {
    const UPSTREAM_TEXT: &str = "secret upstream text";
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    mcp.on_tool("busy", McpReply::text(503, UPSTREAM_TEXT));
    let _client = start_client(&control_plane, &mcp);

    let posted = exchange(
        &control_plane,
        &Command::jsonrpc("req-503", tool_call(11, "busy")),
    );
    assert_eq!(posted.resp_code(), Some(503), "{posted:#?}");
    let message = posted.resp_json().expect("a synthesized error");
    assert_eq!(message["id"], 11);
    assert_eq!(message["error"]["code"], -32603);
    assert_eq!(message["error"]["message"], "Service Unavailable");
    let failure = tunnel_failure(&posted);
    assert_eq!(failure["source"], "target_http", "{failure}");
    assert_eq!(failure["upstream_status"], 503, "{failure}");
    assert_eq!(failure["upstream_response_received"], true, "{failure}");
    assert!(!posted.raw_body().contains(UPSTREAM_TEXT));
}

// ---------------------------------------------------------------------------------------------
// Control-plane behaviour: headers, retries, back-off

#[test]
fn control_plane_requests_identify_the_client() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let _client = start_client(&control_plane, &mcp);

    let command =
        Command::jsonrpc("req-ident", tool_call(90, "echo")).header("X-Request-Id", "conn-42");
    let posted = exchange(&control_plane, &command);
    assert_eq!(posted.header("X-Client-Request-Id"), Some("conn-42"));
    assert!(
        posted
            .header("Content-Type")
            .is_some_and(|value| value.starts_with("application/json"))
    );

    let requests = control_plane.requests();
    let tunnel_path = format!("/v1/tunnels/{TUNNEL_ID}");
    let metadata_fetches = requests
        .iter()
        .filter(|request| request.method == "GET" && request.path() == tunnel_path)
        .count();
    assert_eq!(metadata_fetches, 1, "metadata is fetched once at startup");
    let poll = requests
        .iter()
        .find(|request| request.path() == format!("{tunnel_path}/poll"))
        .expect("a poll");
    let limit: usize = poll
        .query("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    assert!((1..=25).contains(&limit), "poll target {}", poll.target);
    assert_eq!(
        poll.query("timeout_ms"),
        Some("1000"),
        "poll target {}",
        poll.target
    );

    let instance_id = posted
        .header("X-Tunnel-Client-Instance-Id")
        .unwrap_or_default();
    assert!(
        is_lowercase_hex(instance_id, 32),
        "instance id {instance_id:?}"
    );
    let bearer = format!("Bearer {API_KEY}");
    for request in &requests {
        let context = format!("{} {}", request.method, request.target);
        assert_eq!(
            request.header("Authorization"),
            Some(bearer.as_str()),
            "{context}"
        );
        assert_eq!(
            request.header("X-Tunnel-Client-Name"),
            Some("mcp-tunnel"),
            "{context}"
        );
        assert_eq!(
            request.header("X-Tunnel-Client-Instance-Id"),
            Some(instance_id),
            "{context}"
        );
        assert!(request.has_header("X-Tunnel-Client-Version"), "{context}");
        assert!(
            request
                .header("User-Agent")
                .is_some_and(|agent| agent.starts_with("mcp-tunnel/")),
            "{context}"
        );
        let server_info: Option<Value> = request
            .header("X-Tunnel-MCP-Server-Info")
            .and_then(|info| serde_json::from_str(info).ok());
        assert_eq!(
            server_info,
            Some(json!({"version": 1, "channels": [{"name": "main"}]})),
            "{context}"
        );
    }
}

#[test]
fn poll_429_with_retry_after_delays_the_next_poll() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    control_plane.script_polls(1, Scripted::status(429).header("Retry-After", "2"));
    let _client = start_client(&control_plane, &mcp);

    let polls = control_plane.wait_for_polls(2, PROMPTLY);
    let gap = polls[1] - polls[0];
    // Retry-After is a minimum; the slack only absorbs timer granularity.
    assert!(gap >= secs(1.9), "next poll after {gap:?}");
}

#[test]
fn poll_401_backs_off_instead_of_looping() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    control_plane.script_polls(1000, Scripted::status(401));
    let client = start_client(&control_plane, &mcp);

    let first_poll = control_plane.wait_for_polls(1, PROMPTLY)[0];
    assert!(
        client.wait_for_stderr("401", PROMPTLY),
        "an actionable log line mentions 401"
    );
    let window_end = first_poll + secs(3.0);
    let_time_pass(window_end.saturating_duration_since(Instant::now()));
    let polls = control_plane.poll_count();
    assert!(polls <= 3, "{polls} polls in 3 s of 401s");
}

#[test]
fn response_post_503_is_retried_and_delivered_once() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    control_plane.script_response_posts(1, 503);
    let _client = start_client(&control_plane, &mcp);

    control_plane.push(Command::jsonrpc("req-retry", tool_call(14, "echo")));
    control_plane.wait_for_posts_for("req-retry", 2, PROMPTLY);
    serve_marker(&control_plane, "marker-retry");

    let posts = control_plane.responses_for("req-retry");
    let answers: Vec<u16> = posts.iter().map(|post| post.answered_status).collect();
    assert_eq!(answers, [503, 200], "retried once, then accepted");
    assert_eq!(
        posts[0].raw_body(),
        posts[1].raw_body(),
        "same body on retry"
    );
    assert_eq!(
        posts[0].header("X-Tunnel-Shard-Token"),
        posts[1].header("X-Tunnel-Shard-Token")
    );
    assert_eq!(mcp_calls_with_id(&mcp, &json!(14)), 1, "MCP contacted once");
}

#[test]
fn response_post_404_is_terminal_and_never_replays_the_mcp_call() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    control_plane.script_response_posts(1, 404);
    let _client = start_client(&control_plane, &mcp);

    control_plane.push(Command::jsonrpc("req-gone", tool_call(15, "echo")));
    let first = control_plane.wait_for_posts_for("req-gone", 1, PROMPTLY);
    assert_eq!(first[0].answered_status, 404);
    // Long enough for any retry back-off to have fired, then prove the client moved on.
    let_time_pass(secs(2.0));
    serve_marker(&control_plane, "marker-gone");

    assert_eq!(
        control_plane.responses_for("req-gone").len(),
        1,
        "never retried"
    );
    assert_eq!(mcp_calls_with_id(&mcp, &json!(15)), 1, "never replayed");
}

// ---------------------------------------------------------------------------------------------
// Concurrency, header hygiene, shutdown

#[test]
fn slow_commands_in_one_batch_run_concurrently() {
    const COMMANDS: u64 = 8;
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    mcp.on_tool(
        "slow",
        McpReply::result(json!({"content": []})).after(secs(1.5)),
    );
    let _client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("MCP_MAX_CONCURRENT_REQUESTS", "10")
        .spawn();

    let commands: Vec<Command> = (0..COMMANDS)
        .map(|i| Command::jsonrpc(&format!("req-slow-{i}"), tool_call(i, "slow")))
        .collect();
    control_plane.push_batch(commands.iter().cloned().map(Value::from).collect());
    for command in &commands {
        let posted = control_plane.wait_for_terminal_response(command.request_id(), PROMPTLY);
        assert_successful_response(&posted);
    }
    assert_eq!(
        mcp.max_in_flight(),
        COMMANDS as usize,
        "all calls in flight at once"
    );
}

#[test]
fn blocked_headers_and_the_api_key_never_reach_the_mcp_server_or_the_logs() {
    const KEY: &str = "sk-proj-TUNNELKEY-7d3f9a2c41b8e605-do-not-leak";
    const KEY_MIDDLE: &str = "7d3f9a2c41b8e605";
    let control_plane = FakeControlPlane::start_with_key(KEY);
    let mcp = FakeMcp::start();
    let mut client = start_client(&control_plane, &mcp);

    let command = Command::jsonrpc("req-headers", tool_call(17, "echo"))
        .header("Cookie", "session=abc")
        .header("X-Forwarded-For", "203.0.113.9")
        .header("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0")
        .header("OpenAI-Organization", "org-123")
        .header("X-OpenAI-Foo", "bar")
        .header("Connection", "x-custom-hop")
        .header("X-Custom-Hop", "hop-value")
        .header("Host", "evil.example")
        .header("User-Agent", "connector/1.0")
        .header("Authorization", "Bearer mcp-user-token")
        .header("Mcp-Session-Id", "sess-17")
        .header("X-Trace", "trace-17");
    let posted = exchange(&control_plane, &command);
    assert_successful_response(&posted);

    let call = mcp.wait_for_call(&json!(17), PROMPTLY).request;
    for blocked in [
        "Cookie",
        "X-Forwarded-For",
        "Proxy-Authorization",
        "OpenAI-Organization",
        "X-OpenAI-Foo",
        "X-Custom-Hop",
    ] {
        assert!(
            !call.has_header(blocked),
            "{blocked} reached MCP: {:?}",
            call.headers
        );
    }
    let connection = call
        .header_values("Connection")
        .join(",")
        .to_ascii_lowercase();
    assert!(
        !connection.contains("x-custom-hop"),
        "Connection: {connection}"
    );
    assert_eq!(call.header_values("Host"), [mcp.authority()]);
    assert!(!call.header_values("User-Agent").contains(&"connector/1.0"));
    assert_eq!(
        call.header_values("Authorization"),
        ["Bearer mcp-user-token"]
    );
    assert_eq!(call.header("Mcp-Session-Id"), Some("sess-17"));
    assert_eq!(call.header("X-Trace"), Some("trace-17"));

    for seen in mcp.calls() {
        assert!(!seen.request.mentions(KEY) && !seen.request.mentions(KEY_MIDDLE));
    }
    client.kill_and_collect();
    let logs = client.stderr();
    assert!(!logs.is_empty(), "debug logging produced output");
    assert!(
        !logs.contains(KEY) && !logs.contains(KEY_MIDDLE),
        "API key in logs"
    );
}

#[test]
fn operator_mcp_headers_reach_only_mcp_and_command_headers_win() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let _client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env(
            "MCP_EXTRA_HEADERS",
            "X-Operator: op-1, X-Trace: operator-default",
        )
        .spawn();

    let command =
        Command::jsonrpc("req-extra", tool_call(21, "echo")).header("X-Trace", "from-command");
    assert_successful_response(&exchange(&control_plane, &command));

    let call = mcp.wait_for_call(&json!(21), PROMPTLY).request;
    assert_eq!(call.header_values("X-Operator"), ["op-1"]);
    assert_eq!(call.header_values("X-Trace"), ["from-command"]);
    for request in control_plane.requests() {
        assert!(!request.has_header("X-Operator"), "{}", request.target);
    }
}

#[test]
fn sigterm_during_an_in_flight_call_still_posts_and_exits_zero() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    mcp.on_tool(
        "slow",
        McpReply::result(json!({"content": []})).after(secs(2.0)),
    );
    let mut client = start_client(&control_plane, &mcp);

    control_plane.push(Command::jsonrpc("req-drain", tool_call(18, "slow")));
    mcp.wait_for_call(&json!(18), PROMPTLY);
    let sigterm_at = Instant::now();
    client.send_sigterm();

    // SHUTDOWN_DRAIN_TIMEOUT is 10 s.
    let status = client
        .wait_exit(secs(10.0))
        .expect("exited within the drain timeout");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    let posts = control_plane.responses_for("req-drain");
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_successful_response(&posts[0]);
    let polls_after_signal = control_plane
        .poll_instants()
        .into_iter()
        .filter(|at| *at > sigterm_at)
        .count();
    assert!(
        polls_after_signal <= 1,
        "{polls_after_signal} polls after SIGTERM"
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// A valid configuration pointing at ports where nothing listens; each test breaks one piece.
fn valid_config() -> ClientBuilder {
    ClientBuilder::run(&dead_loopback_url(""), API_KEY, &dead_loopback_url("/mcp"))
}

/// Runs the client to completion (it must exit promptly) and returns its exit code.
fn exit_code(client: &mut TunnelClient) -> Option<i32> {
    client
        .wait_exit(PROMPTLY)
        .expect("exits promptly instead of running")
        .code()
}

#[test]
fn missing_tunnel_id_is_a_config_error_naming_the_key() {
    let mut client = valid_config()
        .without_env("CONTROL_PLANE_TUNNEL_ID")
        .spawn();
    assert_eq!(exit_code(&mut client), Some(2));
    assert!(client.stderr().contains("CONTROL_PLANE_TUNNEL_ID"));
}

#[test]
fn plain_http_control_plane_off_loopback_is_a_config_error() {
    let mut client = valid_config()
        .env("CONTROL_PLANE_BASE_URL", "http://example.com")
        .spawn();
    assert_eq!(exit_code(&mut client), Some(2));
    assert!(client.stderr().contains("CONTROL_PLANE_BASE_URL"));
}

#[test]
fn api_key_literal_on_the_command_line_is_refused_without_echoing_it() {
    const LITERAL: &str = "sk-literal-on-argv-5e8c1b";
    let mut client = valid_config()
        .arg("--control-plane.api-key")
        .arg(LITERAL)
        .spawn();
    assert_eq!(exit_code(&mut client), Some(2));
    let stderr = client.stderr();
    assert!(
        stderr.contains("--control-plane.api-key") || stderr.contains("CONTROL_PLANE_API_KEY"),
        "the error names the key: {stderr}"
    );
    assert!(!stderr.contains(LITERAL) && !client.stdout().contains(LITERAL));
}

#[test]
fn run_help_documents_options_env_names_and_defaults() {
    let mut client = ClientBuilder::bare().arg("run").arg("--help").spawn();
    assert_eq!(exit_code(&mut client), Some(0));
    let help = client.stdout() + &client.stderr();
    for expected in [
        "--control-plane.base-url",
        "CONTROL_PLANE_BASE_URL",
        "https://api.openai.com",
    ] {
        assert!(help.contains(expected), "help lacks {expected}:\n{help}");
    }
}
