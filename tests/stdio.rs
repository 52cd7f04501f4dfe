//! End-to-end tests of stdio MCP servers and channels (issue 4): the real `mcp-tunnel run` binary
//! between the loopback fake control plane and `tests/fixtures/stdio_edge_server.py`, a small
//! stdlib-only stdio MCP server that handles every request on its own thread and offers tools for
//! the edge cases (id and progress-token rewriting, slow, crashing and late answers, server→client
//! requests, garbage lines). The script logs to stderr with an `edge-server:` prefix, which the
//! client forwards to its own log; tests wait on those lines instead of sleeping.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    API_KEY, ClientBuilder, Command, FakeControlPlane, FakeMcp, McpReply, PROMPTLY, PostedResponse,
    TunnelClient, dead_loopback_url, notification, rpc_request, secs,
};

// ---------------------------------------------------------------------------------------------
// Helpers

const EDGE_SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/stdio_edge_server.py"
);

/// The command line that runs the edge server, quoted for the client's tokenizer.
fn edge_command() -> String {
    format!("python3 '{EDGE_SERVER}'")
}

/// `mcp-tunnel run` wired to the fake control plane with `MCP_COMMAND` only.
fn stdio_builder(control_plane: &FakeControlPlane, mcp_command: &str) -> ClientBuilder {
    ClientBuilder::run(control_plane.base_url(), control_plane.api_key(), "unused")
        .without_env("MCP_SERVER_URL")
        .env("MCP_COMMAND", mcp_command)
}

/// Spawns the client and waits until each of `channels` has started its stdio server, so no
/// command races the first start of a child.
fn spawn_ready(builder: ClientBuilder, channels: &[&str]) -> TunnelClient {
    let client = builder.spawn();
    for channel in channels {
        let started = format!("[{channel}] stdio server started (pid ");
        assert!(
            client.wait_for_stderr(&started, PROMPTLY),
            "channel {channel} never started its server:\n{}",
            client.stderr()
        );
    }
    client
}

/// A client whose channel `main` is the edge server.
fn start_edge_client(control_plane: &FakeControlPlane) -> TunnelClient {
    spawn_ready(stdio_builder(control_plane, &edge_command()), &["main"])
}

/// A `tools/call` request for `tool` with `arguments`.
fn call(id: impl Into<Value>, tool: &str, arguments: Value) -> Value {
    rpc_request(
        id,
        "tools/call",
        json!({"name": tool, "arguments": arguments}),
    )
}

/// The command as JSON, moved to `channel`.
fn on_channel(command: Command, channel: &str) -> Value {
    let mut value: Value = command.into();
    value["channel"] = json!(channel);
    value
}

/// Queues `command` and waits for its terminal response.
fn exchange(control_plane: &FakeControlPlane, command: &Command) -> PostedResponse {
    control_plane.push(command.clone());
    control_plane.wait_for_terminal_response(command.request_id(), PROMPTLY)
}

/// `resp_json.result.structuredContent` of a successful tool call: what the edge server reports.
fn structured(posted: &PostedResponse) -> &Value {
    &posted.json["resp_json"]["result"]["structuredContent"]
}

/// `resp_json.error.data.tunnel_failure` of a synthesized failure.
fn tunnel_failure(posted: &PostedResponse) -> &Value {
    &posted.json["resp_json"]["error"]["data"]["tunnel_failure"]
}

fn assert_tool_result(posted: &PostedResponse, id: &Value) {
    assert_eq!(posted.resp_type(), "jsonrpc_response", "{posted:#?}");
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    let message = posted.resp_json().expect("a JSON-RPC answer");
    assert_eq!(message["jsonrpc"], "2.0", "{posted:#?}");
    assert_eq!(
        &message["id"], id,
        "the caller's id is restored: {posted:#?}"
    );
    assert!(message.get("error").is_none(), "{posted:#?}");
    assert!(structured(posted).is_object(), "{posted:#?}");
}

/// Asks the channel's edge server for its pid (and the arguments it was started with).
fn server_pid(
    control_plane: &FakeControlPlane,
    request_id: &str,
    channel: &str,
) -> (u64, Vec<String>) {
    let command = Command::jsonrpc(request_id, call(request_id, "pid", json!({})));
    control_plane.push(on_channel(command, channel));
    let posted = control_plane.wait_for_terminal_response(request_id, PROMPTLY);
    assert_tool_result(&posted, &json!(request_id));
    assert_eq!(posted.json["channel"], channel, "{posted:#?}");
    let report = structured(&posted);
    let pid = report["pid"].as_u64().expect("a pid");
    let argv = report["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .map(|word| word.as_str().expect("a string").to_owned())
        .collect();
    (pid, argv)
}

/// The number in `edge-server: <prefix><number>` in the client's log.
fn logged_number(client: &TunnelClient, prefix: &str) -> u64 {
    let stderr = client.stderr();
    let start = stderr
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} not logged:\n{stderr}"))
        + prefix.len();
    let digits: String = stderr[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {prefix:?}"))
}

/// Every number logged right after `prefix`, in log order.
fn logged_numbers(client: &TunnelClient, prefix: &str) -> Vec<u64> {
    client
        .stderr()
        .match_indices(prefix)
        .filter_map(|(at, _)| {
            let rest = &client.stderr()[at + prefix.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

fn kill_process(pid: u64) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {pid} failed");
}

/// A fresh directory under the system temp dir, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> ScratchDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "mcp-tunnel-stdio-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        ScratchDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("UTF-8 path").to_owned()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A valid configuration pointing at ports where nothing listens; each test breaks one piece.
fn valid_config() -> ClientBuilder {
    ClientBuilder::run(&dead_loopback_url(""), API_KEY, &dead_loopback_url("/mcp"))
}

/// Runs a client that must refuse its configuration; returns its stderr.
fn config_error(builder: ClientBuilder) -> String {
    let mut client = builder.spawn();
    let status = client
        .wait_exit(PROMPTLY)
        .expect("exits promptly instead of running");
    let stderr = client.stderr();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        !stderr.contains("stdio server started"),
        "no server is started for a refused configuration: {stderr}"
    );
    stderr
}

// ---------------------------------------------------------------------------------------------
// Forwarding and id rewriting

#[test]
fn initialize_list_and_call_round_trip_with_the_callers_ids_restored() {
    let control_plane = FakeControlPlane::start();
    let client = start_edge_client(&control_plane);

    let initialize = Command::jsonrpc(
        "req-init",
        rpc_request(
            "init-1",
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "connector", "version": "1"}}),
        ),
    );
    let posted = exchange(&control_plane, &initialize);
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    assert_eq!(posted.json["channel"], "main");
    assert_eq!(
        posted.resp_header("Content-Type"),
        Some(vec!["application/json"])
    );
    let message = posted.resp_json().expect("an answer");
    assert_eq!(message["id"], "init-1", "{posted:#?}");
    assert_eq!(message["result"]["serverInfo"]["name"], "stdio-edge-server");
    assert_eq!(message["result"]["protocolVersion"], "2025-06-18");

    let initialized =
        Command::jsonrpc("req-initialized", notification("notifications/initialized"));
    let posted = exchange(&control_plane, &initialized);
    assert_eq!(posted.resp_type(), "notify_ack", "{posted:#?}");
    assert_eq!(posted.resp_code(), Some(202));
    assert!(posted.resp_json().is_none(), "{posted:#?}");
    assert!(client.wait_for_stderr(
        "edge-server: notification notifications/initialized",
        PROMPTLY
    ));

    let list = Command::jsonrpc("req-list", rpc_request(2, "tools/list", json!({})));
    let posted = exchange(&control_plane, &list);
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    assert_eq!(posted.resp_json().expect("an answer")["id"], 2);
    let tools: Vec<&str> = posted.json["resp_json"]["result"]["tools"]
        .as_array()
        .expect("a tool list")
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    for expected in ["echo", "slow", "progress", "crash", "late", "ask", "pid"] {
        assert!(tools.contains(&expected), "{expected} not in {tools:?}");
    }

    // A string id; the server also sends a log notification, which goes to the one call in flight.
    let arguments = json!({"text": "hello", "notify": true});
    let echo = Command::jsonrpc("req-abc", call("abc", "echo", arguments.clone()));
    let posted = exchange(&control_plane, &echo);
    assert_tool_result(&posted, &json!("abc"));
    assert_eq!(structured(&posted)["arguments"], arguments);
    let seen_abc = structured(&posted)["seen_id"].clone();
    assert!(
        seen_abc.is_u64(),
        "the server saw an internal id, not the caller's: {seen_abc}"
    );
    let posts = control_plane.responses_for("req-abc");
    let types: Vec<&str> = posts.iter().map(PostedResponse::resp_type).collect();
    assert_eq!(types, ["jsonrpc_notify", "jsonrpc_response"], "{posts:#?}");
    assert_eq!(
        posts[0].json["resp_json"]["method"],
        "notifications/message"
    );
    assert_eq!(
        posts[0].json["resp_json"]["params"]["data"]["echo_seen_id"],
        seen_abc
    );

    // A number id.
    let arguments = json!({"n": 7, "nested": {"list": [1, "two", null]}});
    let echo = Command::jsonrpc("req-seven", call(7, "echo", arguments.clone()));
    let posted = exchange(&control_plane, &echo);
    assert_tool_result(&posted, &json!(7));
    assert_eq!(structured(&posted)["arguments"], arguments);
    let seen_seven = structured(&posted)["seen_id"].clone();
    assert!(seen_seven.is_u64(), "{seen_seven}");
    assert_ne!(
        seen_seven,
        json!(7),
        "the server saw the caller's id unchanged"
    );
    assert_ne!(seen_seven, seen_abc, "internal ids are unique");
}

#[test]
fn progress_notifications_reach_their_own_call_with_the_callers_token_before_the_answer() {
    let control_plane = FakeControlPlane::start();
    let _client = start_edge_client(&control_plane);

    // Two sessions both using token "tok-1", and a number token, all in flight at once.
    let progress = |request_id: &str, session: &str, token: Value, steps: u64| {
        let message = rpc_request(
            request_id,
            "tools/call",
            json!({"name": "progress", "arguments": {"steps": steps, "ms": 150},
                   "_meta": {"progressToken": token}}),
        );
        Command::jsonrpc(request_id, message).header("Mcp-Session-Id", session)
    };
    let calls = [
        (
            progress("req-p-a", "sess-a", json!("tok-1"), 2),
            json!("tok-1"),
            2,
        ),
        (
            progress("req-p-b", "sess-b", json!("tok-1"), 3),
            json!("tok-1"),
            3,
        ),
        (progress("req-p-c", "sess-c", json!(42), 1), json!(42), 1),
    ];
    control_plane.push_batch(calls.iter().map(|(c, _, _)| c.clone().into()).collect());

    let mut seen_tokens = Vec::new();
    for (command, token, steps) in &calls {
        let request_id = command.request_id();
        let terminal = control_plane.wait_for_terminal_response(request_id, PROMPTLY);
        assert_tool_result(&terminal, &json!(request_id));
        let posts = control_plane.responses_for(request_id);
        assert_eq!(
            posts.len(),
            *steps as usize + 1,
            "{steps} notifications and the answer for {request_id}: {posts:#?}"
        );
        for (index, notify) in posts[..*steps as usize].iter().enumerate() {
            assert_eq!(notify.resp_type(), "jsonrpc_notify", "{notify:#?}");
            assert_eq!(notify.resp_code(), Some(200));
            let message = notify.resp_json().expect("a notification");
            assert_eq!(message["method"], "notifications/progress");
            assert_eq!(
                &message["params"]["progressToken"], token,
                "the caller's token is restored: {notify:#?}"
            );
            assert_eq!(message["params"]["progress"], index as u64 + 1);
            assert_eq!(message["params"]["total"], *steps);
            assert!(notify.request.at <= terminal.request.at);
        }
        assert!(posts.last().expect("the answer").is_terminal());
        let seen = structured(&terminal)["seen_token"].clone();
        assert_ne!(&seen, token, "the server saw the caller's token unchanged");
        seen_tokens.push(seen);
    }
    assert_ne!(
        seen_tokens[0], seen_tokens[1],
        "tokens are rewritten per call"
    );
}

#[test]
fn eight_slow_calls_on_one_child_finish_in_about_the_time_of_one() {
    const CALLS: usize = 8;
    const SLOW_MS: u64 = 1500;
    let control_plane = FakeControlPlane::start();
    let _client = spawn_ready(
        stdio_builder(&control_plane, &edge_command()).env("MCP_MAX_CONCURRENT_REQUESTS", "10"),
        &["main"],
    );
    control_plane.wait_for_polls(1, PROMPTLY);

    let commands: Vec<Command> = (0..CALLS)
        .map(|i| {
            Command::jsonrpc(
                &format!("req-slow-{i}"),
                call(i as u64, "slow", json!({"ms": SLOW_MS})),
            )
        })
        .collect();
    let pushed = Instant::now();
    control_plane.push_batch(commands.iter().cloned().map(Value::from).collect());
    let mut arrivals = Vec::new();
    let mut seen_ids = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        let posted = control_plane.wait_for_terminal_response(command.request_id(), PROMPTLY);
        assert_tool_result(&posted, &json!(i as u64));
        assert_eq!(structured(&posted)["slept_ms"], SLOW_MS);
        arrivals.push(posted.request.at);
        seen_ids.push(structured(&posted)["seen_id"].clone());
    }
    let first = *arrivals.iter().min().expect("answers");
    let last = *arrivals.iter().max().expect("answers");
    let slow = Duration::from_millis(SLOW_MS);
    assert!(
        first - pushed >= slow,
        "an answer came before the server could have slept: {:?}",
        first - pushed
    );
    assert!(
        last - pushed < 2 * slow,
        "8 calls of {slow:?} took {:?} from push to the last answer (first to last {:?})",
        last - pushed,
        last - first
    );
    seen_ids.sort_by_key(|id| id.as_u64());
    seen_ids.dedup();
    assert_eq!(seen_ids.len(), CALLS, "one internal id per call");
}

#[test]
fn two_sessions_with_the_same_id_each_get_their_own_answer() {
    let control_plane = FakeControlPlane::start();
    let _client = start_edge_client(&control_plane);

    let echo = |request_id: &str, session: &str| {
        let arguments = json!({"who": session, "ms": 500});
        Command::jsonrpc(request_id, call(1, "echo", arguments)).header("Mcp-Session-Id", session)
    };
    let a = echo("req-sess-a", "sess-a");
    let b = echo("req-sess-b", "sess-b");
    control_plane.push_batch(vec![a.clone().into(), b.clone().into()]);

    let posted_a = control_plane.wait_for_terminal_response(a.request_id(), PROMPTLY);
    let posted_b = control_plane.wait_for_terminal_response(b.request_id(), PROMPTLY);
    assert_tool_result(&posted_a, &json!(1));
    assert_tool_result(&posted_b, &json!(1));
    assert_eq!(structured(&posted_a)["arguments"]["who"], "sess-a");
    assert_eq!(structured(&posted_b)["arguments"]["who"], "sess-b");
    assert_ne!(
        structured(&posted_a)["seen_id"],
        structured(&posted_b)["seen_id"],
        "both calls reached the server with one id"
    );
    // Both were in the server at the same time: it counted two requests in hand.
    let most_active = [&posted_a, &posted_b]
        .iter()
        .filter_map(|posted| structured(posted)["active"].as_u64())
        .max();
    assert_eq!(most_active, Some(2), "the two calls did not overlap");
    assert_eq!(control_plane.responses_for(a.request_id()).len(), 1);
    assert_eq!(control_plane.responses_for(b.request_id()).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Supervision

/// A `slow` call is in the child; `kill_child` makes the child go away. The in-flight call must
/// fail at once with `transport_closed`, and a restarted child (new pid) must serve again.
fn in_flight_call_fails_fast_and_the_child_comes_back(
    kill_child: impl FnOnce(&FakeControlPlane, u64),
) -> TunnelClient {
    let control_plane = FakeControlPlane::start();
    let client = start_edge_client(&control_plane);
    let (first_pid, _) = server_pid(&control_plane, "req-pid-1", "main");

    control_plane.push(Command::jsonrpc(
        "req-inflight",
        call(50, "slow", json!({"ms": 10_000})),
    ));
    assert!(client.wait_for_stderr("edge-server: request tools/call slow", PROMPTLY));
    let killed_at = Instant::now();
    kill_child(&control_plane, first_pid);

    let posted = control_plane.wait_for_terminal_response("req-inflight", PROMPTLY);
    let waited = posted.request.at - killed_at;
    assert!(
        waited < secs(3.0),
        "the in-flight call was answered {waited:?} after the child died"
    );
    assert_eq!(posted.resp_type(), "jsonrpc_response", "{posted:#?}");
    assert_eq!(posted.resp_code(), Some(502), "{posted:#?}");
    let message = posted.resp_json().expect("a synthesized error");
    assert_eq!(message["id"], 50, "{posted:#?}");
    assert_eq!(message["error"]["code"], -32603, "{posted:#?}");
    assert_eq!(
        tunnel_failure(&posted)["source"],
        "transport_closed",
        "{posted:#?}"
    );

    assert!(
        client.wait_for_stderr("restart #1", PROMPTLY),
        "the restart is logged"
    );
    assert!(client.wait_for_stderr_count("[main] stdio server started (pid ", 2, PROMPTLY));
    let (second_pid, _) = server_pid(&control_plane, "req-pid-2", "main");
    assert_ne!(first_pid, second_pid, "the child was restarted");
    assert!(
        killed_at.elapsed() < secs(5.0),
        "serving again took {:?}",
        killed_at.elapsed()
    );
    let started = format!("[main] stdio server started (pid {second_pid})");
    assert!(client.stderr().contains(&started), "{}", client.stderr());
    client
}

#[test]
fn child_crashing_mid_call_fails_the_call_fast_and_is_restarted() {
    let client = in_flight_call_fails_fast_and_the_child_comes_back(|control_plane, _| {
        let crash = Command::jsonrpc("req-crash", call(51, "crash", json!({})));
        let posted = exchange(control_plane, &crash);
        assert_eq!(posted.resp_code(), Some(502), "{posted:#?}");
        assert_eq!(posted.resp_json().expect("an error")["id"], 51);
        assert_eq!(tunnel_failure(&posted)["source"], "transport_closed");
    });
    assert!(client.stderr().contains("edge-server: crash requested"));
}

#[test]
fn child_killed_from_outside_mid_call_fails_the_call_fast_and_is_restarted() {
    let client = in_flight_call_fails_fast_and_the_child_comes_back(|_, pid| kill_process(pid));
    assert!(client.stderr().contains("stdio server exited"));
}

// ---------------------------------------------------------------------------------------------
// No shell

#[test]
fn shell_metacharacters_in_the_command_never_run_a_shell() {
    let scratch = ScratchDir::new("shell");
    let semicolon = scratch.file("semicolon");
    let substitution = scratch.file("substitution");
    let pipe = scratch.file("pipe");
    let commands = [
        format!("{} ; touch '{semicolon}'", edge_command()),
        format!(
            "channel=subst,command={} $(touch '{substitution}')",
            edge_command()
        ),
        format!("channel=pipe,command={} | touch '{pipe}'", edge_command()),
    ];
    let control_plane = FakeControlPlane::start();
    let mut client = spawn_ready(
        stdio_builder(&control_plane, &commands.join("\n")),
        &["main", "subst", "pipe"],
    );

    let expected: [(&str, Vec<String>); 3] = [
        ("main", vec![";".into(), "touch".into(), semicolon.clone()]),
        ("subst", vec!["$(touch".into(), format!("{substitution})")]),
        ("pipe", vec!["|".into(), "touch".into(), pipe.clone()]),
    ];
    for (channel, argv) in &expected {
        let (pid, seen_argv) = server_pid(&control_plane, &format!("req-pid-{channel}"), channel);
        assert_eq!(
            &seen_argv, argv,
            "channel {channel}: the words are plain arguments"
        );
        // The child the client started is the script itself, not a shell around it.
        let started = format!("[{channel}] stdio server started (pid {pid})");
        assert!(client.stderr().contains(&started), "{}", client.stderr());
    }

    // A shell would run `; touch` only once the server exits: stop the client gracefully, which
    // waits for its children, before looking.
    client.send_sigterm();
    let status = client.wait_exit(PROMPTLY).expect("the client stops");
    assert_eq!(status.code(), Some(0), "{}", client.stderr());
    for marker in [&semicolon, &substitution, &pipe] {
        assert!(
            !Path::new(marker).exists(),
            "{marker} was created by a shell"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("read the scratch directory")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// ---------------------------------------------------------------------------------------------
// Channels

#[test]
fn commands_are_routed_by_channel_between_an_http_and_a_stdio_server() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    mcp.on_tool(
        "http-only",
        McpReply::result(json!({"content": [{"type": "text", "text": "from http"}]})),
    );
    let _client = spawn_ready(
        ClientBuilder::for_fakes(&control_plane, mcp.url()).env(
            "MCP_COMMAND",
            &format!("channel=tools,command={}", edge_command()),
        ),
        &["tools"],
    );

    let to_tools = Command::jsonrpc("req-tools", call("t-1", "echo", json!({"to": "tools"})));
    control_plane.push(on_channel(to_tools, "tools"));
    let posted = control_plane.wait_for_terminal_response("req-tools", PROMPTLY);
    assert_tool_result(&posted, &json!("t-1"));
    assert_eq!(posted.json["channel"], "tools");
    assert_eq!(structured(&posted)["arguments"], json!({"to": "tools"}));

    let to_main = Command::jsonrpc("req-main", call("m-1", "http-only", json!({})));
    let posted = exchange(&control_plane, &to_main);
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    assert_eq!(posted.json["channel"], "main");
    assert_eq!(
        posted.json["resp_json"],
        json!({"jsonrpc": "2.0", "id": "m-1",
               "result": {"content": [{"type": "text", "text": "from http"}]}})
    );
    mcp.wait_for_call(&json!("m-1"), PROMPTLY);

    let to_nowhere = Command::jsonrpc("req-nope", call("n-1", "echo", json!({})));
    control_plane.push(on_channel(to_nowhere, "nope"));
    let posted = control_plane.wait_for_terminal_response("req-nope", PROMPTLY);
    assert_eq!(posted.resp_type(), "jsonrpc_response", "{posted:#?}");
    assert_eq!(posted.resp_code(), Some(400), "{posted:#?}");
    assert_eq!(posted.json["channel"], "nope");
    let message = posted.resp_json().expect("an error");
    assert_eq!(message["id"], "n-1");
    assert_eq!(message["error"]["code"], -32603);
    assert_eq!(message["error"]["message"], "unsupported channel");

    let http_ids: Vec<Option<Value>> = mcp.calls().iter().map(|call| call.rpc_id()).collect();
    assert_eq!(
        http_ids,
        [Some(json!("m-1"))],
        "only main's call reached HTTP"
    );

    let polls: Vec<_> = control_plane
        .requests()
        .into_iter()
        .filter(|request| request.path().ends_with("/poll"))
        .collect();
    assert!(!polls.is_empty());
    for poll in polls {
        let mut info: Value = poll
            .header("X-Tunnel-MCP-Server-Info")
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_else(|| panic!("no server info on {}", poll.target));
        info["channels"]
            .as_array_mut()
            .expect("a channel list")
            .sort_by_key(|channel| channel["name"].as_str().unwrap_or_default().to_owned());
        assert_eq!(
            info,
            json!({"version": 1, "channels": [
                {"name": "main"},
                {"name": "tools", "proc_affinity": true},
            ]})
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Deadlines, sessions, server→client requests, garbage

#[test]
fn late_answer_after_the_deadline_is_discarded() {
    let control_plane = FakeControlPlane::start();
    let client = start_edge_client(&control_plane);

    let late =
        Command::jsonrpc("req-late", call(1, "late", json!({"ms": 2000}))).response_timeout("1s");
    control_plane.push(late);
    assert!(client.wait_for_stderr("edge-server: late id=", PROMPTLY));
    let internal = logged_number(&client, "edge-server: late id=");
    // At the deadline the call is cancelled in the child, by its internal id...
    let cancelled =
        format!("edge-server: notification notifications/cancelled requestId={internal}");
    assert!(
        client.wait_for_stderr(&cancelled, PROMPTLY),
        "{}",
        client.stderr()
    );
    // ...which still answers later; the client reads that answer and throws it away.
    let answered = format!("edge-server: late id={internal} answered");
    assert!(client.wait_for_stderr(&answered, PROMPTLY));
    assert!(client.wait_for_stderr("answer for a retired or unknown id discarded", PROMPTLY));

    // The same caller id again: it gets its own answer, not the late one.
    let echo = Command::jsonrpc("req-after-late", call(1, "echo", json!({"after": "late"})));
    let posted = exchange(&control_plane, &echo);
    assert_tool_result(&posted, &json!(1));
    assert_eq!(structured(&posted)["arguments"], json!({"after": "late"}));
    assert_ne!(structured(&posted)["seen_id"], internal);
    assert!(
        control_plane.responses_for("req-late").is_empty(),
        "{:#?}",
        control_plane.responses_for("req-late")
    );
}

#[test]
fn session_termination_on_a_stdio_channel_is_405_and_the_channel_keeps_serving() {
    let control_plane = FakeControlPlane::start();
    let client = start_edge_client(&control_plane);
    let (pid_before, _) = server_pid(&control_plane, "req-pid-before", "main");

    let terminate = Command::session_termination("req-end", "sess-1");
    let posted = exchange(&control_plane, &terminate);
    assert_eq!(
        posted.resp_type(),
        "session_termination_response",
        "{posted:#?}"
    );
    assert_eq!(posted.resp_code(), Some(405), "{posted:#?}");

    let (pid_after, _) = server_pid(&control_plane, "req-pid-after", "main");
    assert_eq!(pid_before, pid_after, "the child was not restarted");
    assert!(!client.stderr().contains("stdio server exited"));
    assert_eq!(control_plane.responses_for("req-end").len(), 1);
}

#[test]
fn server_to_client_request_is_refused_and_the_call_completes() {
    let control_plane = FakeControlPlane::start();
    let client = start_edge_client(&control_plane);

    let ask = Command::jsonrpc("req-ask", call("ask-1", "ask", json!({})));
    let posted = exchange(&control_plane, &ask);
    assert_tool_result(&posted, &json!("ask-1"));
    let report = structured(&posted);
    assert_eq!(report["answered"], true, "{report}");
    let reply = &report["reply"];
    assert_eq!(reply["id"], report["asked"], "{report}");
    assert_eq!(
        reply["error"]["message"], "not supported through tunnel",
        "{report}"
    );
    assert!(reply["error"]["code"].is_i64(), "{report}");
    assert!(reply.get("result").is_none(), "{report}");
    assert!(client.stderr().contains("sampling/createMessage"));
    assert_eq!(control_plane.responses_for("req-ask").len(), 1);
}

#[test]
fn lines_that_are_not_json_rpc_objects_are_skipped() {
    let control_plane = FakeControlPlane::start();
    let client = start_edge_client(&control_plane);

    let arguments = json!({"garbage": true});
    let echo = Command::jsonrpc("req-garbage", call(3, "echo", arguments.clone()));
    let posted = exchange(&control_plane, &echo);
    assert_tool_result(&posted, &json!(3));
    assert_eq!(structured(&posted)["arguments"], arguments);
    assert!(structured(&posted).get("bogus").is_none());
    let stderr = client.stderr();
    assert!(
        stderr.contains("not a JSON-RPC object; skipped"),
        "{stderr}"
    );
    assert!(stderr.contains("not UTF-8; skipped"), "{stderr}");
    assert!(
        stderr.contains("neither id nor method; skipped"),
        "{stderr}"
    );
    assert!(!stderr.contains("stdio server exited"), "{stderr}");
    assert_eq!(control_plane.responses_for("req-garbage").len(), 1);
}

#[test]
fn a_line_over_32_mib_is_skipped() {
    let control_plane = FakeControlPlane::start();
    let client = start_edge_client(&control_plane);

    // The oversized line is a complete answer for this very call; it must not be taken.
    let arguments = json!({"oversized_mib": 33});
    let echo = Command::jsonrpc("req-oversized", call(4, "echo", arguments.clone()));
    let started = Instant::now();
    let posted = exchange(&control_plane, &echo);
    let took = started.elapsed();
    assert_tool_result(&posted, &json!(4));
    assert_eq!(structured(&posted)["arguments"], arguments);
    assert!(
        posted.json["resp_json"]["result"]
            .get("oversized")
            .is_none(),
        "the oversized line was taken as the answer"
    );
    assert!(
        client
            .stderr()
            .contains("edge-server: oversized line written")
    );
    assert!(client.stderr().contains("over 33554432 bytes; skipped"));
    assert!(!client.stderr().contains("stdio server exited"));
    eprintln!("the 33 MiB line took {took:?} end to end");
}

// ---------------------------------------------------------------------------------------------
// Regressions for bugs this suite found (cancellation routing, shutdown of a child that ignores
// stdin EOF, writes to a child that stopped reading).

#[test]
fn a_callers_cancellation_never_reaches_another_sessions_call() {
    let control_plane = FakeControlPlane::start();
    let client = start_edge_client(&control_plane);
    const SLOW_STARTED: &str = "edge-server: request tools/call slow id=";

    // Session A's call gets some internal id in the child...
    let a = Command::jsonrpc("req-a", call("a-1", "slow", json!({"ms": 3000})))
        .header("Mcp-Session-Id", "sess-a");
    control_plane.push(a);
    assert!(client.wait_for_stderr(SLOW_STARTED, PROMPTLY));
    let internal_a = logged_numbers(&client, SLOW_STARTED)[0];
    // ...which session B happens to use as its own request id.
    let b = Command::jsonrpc("req-b", call(internal_a, "slow", json!({"ms": 3000})))
        .header("Mcp-Session-Id", "sess-b");
    control_plane.push(b);
    assert!(client.wait_for_stderr_count(SLOW_STARTED, 2, PROMPTLY));
    let internal_b = logged_numbers(&client, SLOW_STARTED)[1];
    assert_ne!(internal_a, internal_b);

    // Session B cancels its own request.
    let cancel = Command::jsonrpc(
        "req-cancel-b",
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
               "params": {"requestId": internal_a, "reason": "user pressed stop"}}),
    )
    .header("Mcp-Session-Id", "sess-b");
    let posted = exchange(&control_plane, &cancel);
    assert_eq!(posted.resp_type(), "notify_ack", "{posted:#?}");
    // The child reads stdin in order: once it has logged a later request, it has logged the
    // cancellation too (if it got one).
    server_pid(&control_plane, "req-pid-after-cancel", "main");
    assert!(client.wait_for_stderr("edge-server: request tools/call pid", PROMPTLY));

    let cancelled = logged_numbers(&client, "notifications/cancelled requestId=");
    assert!(
        !cancelled.contains(&internal_a),
        "session B's cancellation of its request {internal_a} reached the child as a \
         cancellation of session A's call (internal id {internal_a}); the child saw {cancelled:?}"
    );
    assert!(
        cancelled.iter().all(|id| *id == internal_b),
        "a forwarded cancellation must name B's internal id {internal_b}: {cancelled:?}"
    );
}

/// A client whose edge server has answered, then stopped reading stdin for 20 s (a real hang is
/// forever) while keeping stdout open, like a wedged server. Returns the client and the child's pid.
fn client_with_a_hung_child(control_plane: &FakeControlPlane) -> (TunnelClient, u64) {
    let client = spawn_ready(
        stdio_builder(control_plane, &edge_command()).env("SHUTDOWN_DRAIN_TIMEOUT", "1s"),
        &["main"],
    );
    let (pid, _) = server_pid(control_plane, "req-pid", "main");
    let stall = Command::jsonrpc("req-stall", call(1, "stall_stdin", json!({"ms": 20_000})));
    assert_tool_result(&exchange(control_plane, &stall), &json!(1));
    assert!(client.wait_for_stderr("edge-server: not reading stdin", PROMPTLY));
    (client, pid)
}

/// After SIGTERM with nothing in flight: stdin is closed at once, SIGTERM follows 3 s later (and
/// ends the script), so the client is gone in about 3 s; 8 s is generous.
const STOP_BOUND: Duration = Duration::from_secs(8);

#[test]
fn sigterm_stops_a_child_that_ignores_stdin_eof() {
    let control_plane = FakeControlPlane::start();
    let (mut client, child) = client_with_a_hung_child(&control_plane);

    let signalled = Instant::now();
    client.send_sigterm();
    let status = client.wait_exit(STOP_BOUND);
    let still_there = Path::new(&format!("/proc/{child}")).exists();
    assert!(
        status.is_some(),
        "the client was still running {:?} after SIGTERM:\n{}",
        signalled.elapsed(),
        client.stderr()
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(!still_there, "the stdio server {child} outlived the client");
}

#[test]
fn sigterm_stops_the_client_while_a_write_to_a_hung_child_is_blocked() {
    let control_plane = FakeControlPlane::start();
    let (mut client, _) = client_with_a_hung_child(&control_plane);

    // A request larger than a pipe's buffer: its write cannot complete while the child hangs.
    let big = Command::jsonrpc(
        "req-big",
        call(2, "echo", json!({"pad": "x".repeat(1 << 20)})),
    )
    .response_timeout("2s");
    control_plane.push(big);
    // Received means run: a worker takes it now, or during the drain at the latest.
    assert!(client.wait_for_stderr_count("received 1 command(s)", 3, PROMPTLY));

    // Drain 1 s, then stopping the child as in the test above: about 4 s. Today the client
    // blocks on the stdin lock the stuck write holds, until the child reads again (20 s here).
    let signalled = Instant::now();
    client.send_sigterm();
    let status = client.wait_exit(STOP_BOUND + secs(1.0));
    assert!(
        status.is_some(),
        "the client was still running {:?} after SIGTERM:\n{}",
        signalled.elapsed(),
        client.stderr()
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[test]
fn unterminated_quote_in_mcp_command_is_a_config_error() {
    let stderr = config_error(
        valid_config()
            .without_env("MCP_SERVER_URL")
            .env("MCP_COMMAND", "python3 'unterminated"),
    );
    assert!(stderr.contains("MCP_COMMAND"), "{stderr}");
}

#[test]
fn two_servers_for_channel_main_are_a_config_error() {
    // A URL and a command both for main.
    let stderr = config_error(valid_config().env("MCP_COMMAND", &edge_command()));
    assert!(stderr.contains("main"), "{stderr}");
    // Two command entries for main, one of them qualified.
    let stderr = config_error(valid_config().without_env("MCP_SERVER_URL").env(
        "MCP_COMMAND",
        &format!(
            "{}\nchannel=main,command={}",
            edge_command(),
            edge_command()
        ),
    ));
    assert!(
        stderr.contains("MCP_COMMAND") && stderr.contains("main"),
        "{stderr}"
    );
}

#[test]
fn channels_without_main_are_a_config_error() {
    let stderr = config_error(valid_config().without_env("MCP_SERVER_URL").env(
        "MCP_COMMAND",
        &format!("channel=tools,command={}", edge_command()),
    ));
    assert!(stderr.contains("main"), "{stderr}");
}
