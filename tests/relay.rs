//! End-to-end tests of `mcp-tunnel relay` (issue 3): the real relay binary on loopback, with the
//! real client (`mcp-tunnel run`) or the test itself as the tunnel client, the stub or the fake MCP
//! server behind it, and the test as the MCP host ("connector"). Each test proves one relay
//! acceptance point; every wait is bounded, and every process is killed when its test ends.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    ClientBuilder, Connector, FakeMcp, HttpAnswer, McpReply, PROMPTLY, Poller, Relay, RelayBuilder,
    Stub, TempDir, Tunnel, add_tunnel, add_tunnel_with_auth, notification, remove_tunnel,
    request_id_of, result_payload, rpc_request, secs, shard_token_of, tunnel_client,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// A temporary tunnels file with the tunnels a test needs, and a relay serving it. The relay is
/// declared first so it is killed before its directory is removed.
struct Setup {
    relay: Relay,
    tunnels: Vec<Tunnel>,
    dir: TempDir,
}

impl Setup {
    /// `names.len()` relay-key tunnels, then a relay started with `options`.
    fn start(names: &[&str], options: &[(&str, &str)]) -> Setup {
        let dir = TempDir::new("relay");
        let tunnels = names
            .iter()
            .map(|name| add_tunnel(&dir.tunnels_file(), name))
            .collect();
        let mut builder = RelayBuilder::new(&dir.tunnels_file());
        for (flag, value) in options {
            builder = builder.option(flag, value);
        }
        Setup {
            relay: builder.start(),
            tunnels,
            dir,
        }
    }

    fn tunnel(&self) -> &Tunnel {
        &self.tunnels[0]
    }

    fn connector(&self) -> Connector {
        Connector::new(&self.relay, self.tunnel())
    }

    /// The test acting as a tunnel client of the first tunnel, as client instance `instance`.
    fn poller(&self, instance: &str) -> Poller {
        let tunnel = self.tunnel();
        Poller::new(&self.relay, &tunnel.id, &tunnel.runtime_key, instance)
    }
}

fn ping(id: &str) -> Value {
    rpc_request(id, "ping", json!({}))
}

fn tool_call(id: impl Into<Value>, tool: &str, arguments: Value) -> Value {
    rpc_request(
        id,
        "tools/call",
        json!({"name": tool, "arguments": arguments}),
    )
}

/// A `progress` tool call asking for progress notifications under `token`.
fn progress_call(id: i64, steps: u64, delay_ms: u64, token: &str) -> Value {
    rpc_request(
        id,
        "tools/call",
        json!({
            "name": "progress",
            "arguments": {"steps": steps, "delay_ms": delay_ms},
            "_meta": {"progressToken": token},
        }),
    )
}

/// The text of the first content item of a tool result.
fn tool_text(message: &Value) -> &str {
    message["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a text tool result: {message:#}"))
}

/// A relay error answer: `status` with `{"error":{"code":<code>,…}}`.
fn assert_relay_error(answer: &HttpAnswer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{answer:#?}");
    assert_eq!(answer.error_code().as_deref(), Some(code), "{answer:#?}");
}

/// Refused for want of the right key: 401 or 403.
fn assert_key_refused(answer: &HttpAnswer, what: &str) {
    assert!(
        matches!(answer.status, 401 | 403),
        "{what} should be refused with 401/403: {answer:#?}"
    );
}

/// A connector request refused for its missing or wrong connector key.
fn assert_connector_key_refused(answer: &HttpAnswer, what: &str) {
    assert_relay_error(answer, 401, "invalid_connector_key");
    let challenge = answer.header("WWW-Authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "{what}: 401 without a Bearer challenge: {answer:#?}"
    );
}

/// A successful JSON answer to the JSON-RPC request with `id`.
fn assert_json_result(answer: &HttpAnswer, id: &Value) -> Value {
    assert_eq!(answer.status, 200, "{answer:#?}");
    assert!(
        answer.content_type().starts_with("application/json"),
        "{answer:#?}"
    );
    let message = answer.json();
    assert_eq!(&message["id"], id, "{answer:#?}");
    assert!(message.get("result").is_some(), "{answer:#?}");
    message
}

/// Runs `work` on its own thread: for connector requests that must wait while the test plays the
/// tunnel client. Every request is bounded by the HTTP agent's timeout, so joining is bounded too.
fn in_background<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Background<T> {
    Background(thread::spawn(work))
}

struct Background<T>(thread::JoinHandle<T>);

impl<T> Background<T> {
    fn join(self) -> T {
        self.0.join().expect("the background request panicked")
    }
}

/// The substrings of `secret` that must not appear in logs: all of it, and a distinctive middle
/// slice (so a truncated or partly masked key is caught too).
fn secret_fragments(secret: &str) -> [&str; 2] {
    let third = secret.len() / 3;
    [secret, &secret[third..2 * third]]
}

/// Request ids the client logged as served (`command <request_id> on <channel>: MCP answered …`).
fn served_request_ids(client_log: &str) -> BTreeSet<String> {
    client_log
        .lines()
        .filter(|line| line.contains(": MCP answered "))
        .filter_map(|line| line.split("command ").nth(1)?.split(' ').next())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A full MCP session through relay → client → stub

/// initialize → notifications/initialized → tools/list → echo → progress (streamed and not) →
/// DELETE, with the assertions that make each step count.
fn play_full_session(connector: &Connector) {
    let init = connector.post(&rpc_request(
        1,
        "initialize",
        json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "relay-test", "version": "0"},
        }),
    ));
    let init_message = assert_json_result(&init, &json!(1));
    assert_eq!(
        init_message["result"]["protocolVersion"], "2025-06-18",
        "{init:#?}"
    );
    let session = init
        .header("Mcp-Session-Id")
        .unwrap_or_else(|| panic!("initialize answered without Mcp-Session-Id: {init:#?}"))
        .to_string();
    let connector = connector.clone().in_session(&session);

    let initialized = connector.post(&notification("notifications/initialized"));
    assert_eq!(initialized.status, 202, "{initialized:#?}");
    assert!(initialized.body.is_empty(), "{initialized:#?}");

    let tools = assert_json_result(
        &connector.post(&rpc_request(2, "tools/list", json!({}))),
        &json!(2),
    );
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .expect("a tools array")
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    assert!(names.contains(&"echo"), "{tools:#}");

    let echo = connector.post(&tool_call(
        3,
        "echo",
        json!({"text": "hello through the relay"}),
    ));
    assert_eq!(
        tool_text(&assert_json_result(&echo, &json!(3))),
        "hello through the relay"
    );

    // Progress, accepting an event stream: each step's notification, then the result, read as
    // they arrive. The stub waits 300 ms before each step.
    let streamed = connector.post(&progress_call(4, 3, 300, "progress-4"));
    assert_eq!(streamed.status, 200, "{streamed:#?}");
    assert!(streamed.is_event_stream(), "{streamed:#?}");
    let messages: Vec<&Value> = streamed.events.iter().map(|e| &e.message).collect();
    assert_eq!(messages.len(), 4, "{streamed:#?}");
    for (step, message) in messages[..3].iter().enumerate() {
        assert_eq!(message["method"], "notifications/progress", "{streamed:#?}");
        assert_eq!(message["params"]["progressToken"], "progress-4");
        assert_eq!(message["params"]["progress"], step as u64 + 1);
    }
    assert_eq!(messages[3]["id"], 4, "{streamed:#?}");
    assert_eq!(tool_text(messages[3]), "done after 3 steps");
    // Streamed, not buffered: the first notification arrived while later steps were still running.
    let first_to_last = streamed.events[3].at - streamed.events[0].at;
    assert!(
        first_to_last >= Duration::from_millis(300),
        "all events arrived together ({first_to_last:?} apart): the relay buffered the stream"
    );

    // The same call from a host that accepts only JSON: one JSON answer, notifications dropped.
    let plain = connector
        .clone()
        .accepting("application/json")
        .post(&progress_call(5, 3, 10, "progress-5"));
    let plain_message = assert_json_result(&plain, &json!(5));
    assert_eq!(tool_text(&plain_message), "done after 3 steps");
    assert!(plain.events.is_empty(), "{plain:#?}");

    let deleted = connector.delete();
    assert_eq!(deleted.status, 204, "{deleted:#?}");
    // The DELETE reached the stub: the session is gone there.
    let after = connector.post(&tool_call(6, "echo", json!({"text": "too late"})));
    assert_eq!(after.status, 404, "{after:#?}");
}

#[test]
fn full_mcp_session_crosses_relay_client_and_stub() {
    let setup = Setup::start(&["session"], &[]);
    let stub = Stub::start();
    let _client = tunnel_client(&setup.relay, setup.tunnel(), stub.url()).spawn();
    let connector = setup.connector();
    let first = connector.wait_until_client_connected();
    assert_eq!(first.status, 200, "{first:#?}");

    play_full_session(&connector);
}

#[test]
fn keys_never_appear_in_relay_client_or_stub_logs() {
    let mut setup = Setup::start(&["secrets"], &[]);
    let tunnel = setup.tunnel().clone();
    let mut stub = Stub::start();
    let mut client = tunnel_client(&setup.relay, &tunnel, stub.url()).spawn();
    let connector = setup.connector();
    connector.wait_until_client_connected();

    play_full_session(&connector);
    // Keys in the wrong places: each refused, and none of them may be echoed into a log.
    let connector_key_as_runtime_key =
        Poller::new(&setup.relay, &tunnel.id, &tunnel.connector_key, "misuse");
    assert_key_refused(
        &connector_key_as_runtime_key.poll(1, 1),
        "connector key poll",
    );
    assert_key_refused(
        &connector_key_as_runtime_key.metadata(),
        "connector key metadata",
    );
    let runtime_key_as_connector_key = connector.clone().bearer(&tunnel.runtime_key);
    assert_connector_key_refused(
        &runtime_key_as_connector_key.post(&ping("misuse")),
        "runtime key",
    );

    let relay_log = setup.relay.stop_and_collect_output();
    client.kill_and_collect();
    let client_log = format!("{}{}", client.stdout(), client.stderr());
    let stub_log = stub.stop_and_collect_output();
    // The logs were written at debug level and describe the session, so the check below has
    // something to look at.
    assert!(relay_log.contains(": queued req_"), "{relay_log}");
    assert!(client_log.contains("MCP answered"), "{client_log}");
    for (process, log) in [
        ("relay", &relay_log),
        ("client", &client_log),
        ("stub", &stub_log),
    ] {
        for key in [&tunnel.runtime_key, &tunnel.connector_key] {
            for fragment in secret_fragments(key) {
                assert!(
                    !log.contains(fragment),
                    "the {process} log contains {fragment:?} of a key:\n{log}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Access roles and keys

#[test]
fn runtime_key_of_one_tunnel_cannot_poll_respond_or_read_another() {
    let setup = Setup::start(&["tunnel-a", "tunnel-b"], &[]);
    let (a, b) = (&setup.tunnels[0], &setup.tunnels[1]);
    let a_key_on_b = Poller::new(&setup.relay, &b.id, &a.runtime_key, "intruder");
    let b_poller = Poller::new(&setup.relay, &b.id, &b.runtime_key, "tunnel-b-client");
    let a_poller = Poller::new(&setup.relay, &a.id, &a.runtime_key, "tunnel-a-client");

    // A real command waits in B's queue, so a wrongly accepted poll would have something to take.
    b_poller.register_as_connected();
    let b_connector = Connector::new(&setup.relay, b);
    let waiting = in_background(move || b_connector.post(&ping("for-tunnel-b")));
    setup.relay.wait_until_queued(&b.id, 1);

    assert_key_refused(&a_key_on_b.poll(1, 1), "A's key polling B");
    assert_key_refused(&a_key_on_b.metadata(), "A's key reading B's metadata");

    // B's own client still gets the command: the refused poll took nothing.
    let command = b_poller.take_one_command();
    assert_eq!(command["jsonrpc"]["id"], "for-tunnel-b", "{command:#}");

    // A's key cannot answer it, even with the right request id and shard token...
    let forged = result_payload(&command, json!({"answered_by": "tunnel A"}));
    assert_key_refused(
        &a_key_on_b.post_response(shard_token_of(&command), &forged),
        "A's key responding for B",
    );
    // ...nor with any other shard token.
    assert_key_refused(
        &a_key_on_b.post_response("shard-token-guess", &forged),
        "A's key responding for B with a guessed token",
    );
    // B's client answers, and that is what the connector receives.
    let accepted = b_poller.answer_with_result(&command, json!({"answered_by": "tunnel B"}));
    assert_eq!(accepted.status, 200, "{accepted:#?}");
    let answer = waiting.join();
    let message = assert_json_result(&answer, &json!("for-tunnel-b"));
    assert_eq!(message["result"]["answered_by"], "tunnel B", "{answer:#?}");

    // Positive controls: each key works for its own tunnel.
    let own_poll = a_poller.poll(1, 1);
    assert_eq!(own_poll.status, 204, "{own_poll:#?}");
    assert!(own_poll.elapsed < Duration::from_secs(1), "{own_poll:#?}");
    let own_metadata = a_poller.metadata();
    assert_eq!(own_metadata.status, 200, "{own_metadata:#?}");
    assert_eq!(
        own_metadata.json()["id"],
        a.id.as_str(),
        "{own_metadata:#?}"
    );
    assert_eq!(own_metadata.json()["name"], "tunnel-a", "{own_metadata:#?}");
    assert_eq!(b_poller.metadata().status, 200);
}

#[test]
fn connector_key_cannot_poll_and_runtime_key_cannot_call_mcp() {
    let setup = Setup::start(&["roles"], &[]);
    let tunnel = setup.tunnel();
    let client = setup.poller("real-client");
    let connector_key_poller = Poller::new(&setup.relay, &tunnel.id, &tunnel.connector_key, "x");

    client.register_as_connected();
    let connector = setup.connector();
    let waiting = in_background(move || connector.post(&ping("queued-for-the-client")));
    setup.relay.wait_until_queued(&tunnel.id, 1);

    assert_relay_error(
        &connector_key_poller.poll(25, 1),
        401,
        "tunnel_use_forbidden",
    );
    assert_relay_error(
        &connector_key_poller.metadata(),
        401,
        "tunnel_use_forbidden",
    );
    // The runtime key is no connector key.
    let runtime_key_connector = setup.connector().bearer(&tunnel.runtime_key);
    assert_connector_key_refused(
        &runtime_key_connector.post(&ping("with-runtime-key")),
        "runtime key on the MCP endpoint",
    );

    // The refused poll took nothing, and the refused MCP call queued nothing: the runtime key's
    // poll finds exactly the one authorised command.
    let commands = client.take_commands(25, 2000);
    assert_eq!(commands.len(), 1, "{commands:#?}");
    assert_eq!(commands[0]["jsonrpc"]["id"], "queued-for-the-client");
    assert_eq!(
        client.answer_with_result(&commands[0], json!({})).status,
        200
    );
    assert_json_result(&waiting.join(), &json!("queued-for-the-client"));
    assert_eq!(setup.relay.queued_count(&tunnel.id), 1);
}

#[test]
fn missing_or_wrong_connector_key_is_refused_without_queueing() {
    let setup = Setup::start(&["guarded", "other"], &[]);
    let (tunnel, other) = (&setup.tunnels[0], &setup.tunnels[1]);
    let client = setup.poller("only-client");
    client.register_as_connected();

    let connector = setup.connector();
    let refused = [
        (
            "no Authorization",
            connector.clone().without_authorization(),
        ),
        (
            "another tunnel's connector key",
            connector.clone().bearer(&other.connector_key),
        ),
        (
            "a made-up key",
            connector.clone().bearer("mcpt_cn_0000000000000000000000"),
        ),
        (
            "the key under another scheme",
            connector
                .clone()
                .authorization(&format!("Basic {}", tunnel.connector_key)),
        ),
    ];
    for (what, intruder) in &refused {
        assert_connector_key_refused(&intruder.post(&ping(&format!("refused: {what}"))), what);
        let delete = intruder.clone().in_session("some-session").delete();
        assert_connector_key_refused(&delete, &format!("DELETE with {what}"));
    }

    // Nothing was queued: the first poll after an authorised request returns only that request.
    let waiting = in_background(move || connector.post(&ping("authorised")));
    setup.relay.wait_until_queued(&tunnel.id, 1);
    let commands = client.take_commands(25, 2000);
    let ids: Vec<&Value> = commands.iter().map(|c| &c["jsonrpc"]["id"]).collect();
    assert_eq!(ids, [&json!("authorised")], "{commands:#?}");
    assert_eq!(
        client.answer_with_result(&commands[0], json!({})).status,
        200
    );
    assert_json_result(&waiting.join(), &json!("authorised"));
    // And nothing is left behind it.
    assert!(client.take_commands(25, 1).is_empty());
    assert_eq!(setup.relay.queued_count(&tunnel.id), 1);
}

// ---------------------------------------------------------------------------------------------
// Several clients on one tunnel

const CONCURRENT_REQUESTS: usize = 20;

/// One command as a manual poller received it, and how its response POST went.
#[derive(Clone, Debug)]
struct Delivery {
    poller: usize,
    request_id: String,
    rpc_id: Value,
    response_status: u16,
}

#[test]
fn two_pollers_share_one_queue_and_each_command_is_delivered_once() {
    let setup = Setup::start(&["shared"], &[("--connector.timeout", "10s")]);
    let pollers = [setup.poller("poller-one"), setup.poller("poller-two")];
    for poller in &pollers {
        poller.register_as_connected();
    }

    let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let poller_threads: Vec<_> = pollers
        .iter()
        .cloned()
        .enumerate()
        .map(|(index, poller)| {
            let deliveries = Arc::clone(&deliveries);
            in_background(move || {
                let deadline = Instant::now() + PROMPTLY;
                while deliveries.lock().unwrap().len() < CONCURRENT_REQUESTS
                    && Instant::now() < deadline
                {
                    for command in poller.take_commands(2, 500) {
                        let rpc_id = command["jsonrpc"]["id"].clone();
                        // Some work, during which the other poller takes the next commands.
                        thread::sleep(Duration::from_millis(30));
                        let result = json!({"served_by": index, "for": rpc_id});
                        let posted = poller.answer_with_result(&command, result);
                        deliveries.lock().unwrap().push(Delivery {
                            poller: index,
                            request_id: request_id_of(&command).to_string(),
                            rpc_id,
                            response_status: posted.status,
                        });
                    }
                }
            })
        })
        .collect();

    let requests: Vec<_> = (0..CONCURRENT_REQUESTS)
        .map(|i| {
            let connector = setup.connector();
            in_background(move || connector.post(&ping(&format!("concurrent-{i}"))))
        })
        .collect();
    let answers: Vec<HttpAnswer> = requests.into_iter().map(Background::join).collect();
    for poller in poller_threads {
        poller.join();
    }

    let deliveries = deliveries.lock().unwrap().clone();
    let request_ids: BTreeSet<&str> = deliveries.iter().map(|d| d.request_id.as_str()).collect();
    assert_eq!(
        request_ids.len(),
        deliveries.len(),
        "a command was delivered twice: {deliveries:#?}"
    );
    assert_eq!(deliveries.len(), CONCURRENT_REQUESTS, "{deliveries:#?}");
    let rpc_ids: BTreeSet<String> = deliveries.iter().map(|d| d.rpc_id.to_string()).collect();
    assert_eq!(rpc_ids.len(), CONCURRENT_REQUESTS, "{deliveries:#?}");
    assert!(
        deliveries.iter().all(|d| d.response_status == 200),
        "{deliveries:#?}"
    );
    for (i, answer) in answers.iter().enumerate() {
        let id = json!(format!("concurrent-{i}"));
        let message = assert_json_result(answer, &id);
        assert_eq!(message["result"]["for"], id, "{message:#}");
    }
    for index in 0..2 {
        assert!(
            deliveries.iter().any(|d| d.poller == index),
            "poller {index} got no command: {deliveries:#?}"
        );
    }
}

#[test]
fn two_real_clients_answer_every_request_exactly_once() {
    let setup = Setup::start(&["two-clients"], &[("--connector.timeout", "10s")]);
    let mcp = FakeMcp::start();
    mcp.on_tool(
        "echo",
        McpReply::result(json!({"content": []})).after(Duration::from_millis(100)),
    );
    // One command at a time per client, so neither can take the whole burst.
    let one_at_a_time = |builder: ClientBuilder| {
        builder
            .env("CONTROL_PLANE_MAX_INFLIGHT_REQUESTS", "1")
            .env("MCP_MAX_CONCURRENT_REQUESTS", "1")
    };
    let mut first = one_at_a_time(tunnel_client(&setup.relay, setup.tunnel(), mcp.url())).spawn();
    assert_eq!(setup.connector().wait_until_client_connected().status, 200);
    let mut second = one_at_a_time(tunnel_client(&setup.relay, setup.tunnel(), mcp.url())).spawn();
    assert!(
        second.wait_for_stderr("polling;", PROMPTLY),
        "{}",
        second.stderr()
    );

    let requests: Vec<_> = (0..CONCURRENT_REQUESTS)
        .map(|i| {
            let connector = setup.connector();
            in_background(move || {
                connector.post(&tool_call(format!("burst-{i}"), "echo", json!({})))
            })
        })
        .collect();
    for (i, request) in requests.into_iter().enumerate() {
        assert_json_result(&request.join(), &json!(format!("burst-{i}")));
    }

    // The MCP server saw every request exactly once.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for call in mcp.calls() {
        if call.rpc_method().as_deref() == Some("tools/call") {
            *seen
                .entry(call.rpc_id().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(seen.len(), CONCURRENT_REQUESTS, "{seen:#?}");
    assert!(seen.values().all(|&count| count == 1), "{seen:#?}");

    // Both clients worked, never on the same command.
    first.kill_and_collect();
    second.kill_and_collect();
    let served_by_first = served_request_ids(&first.stderr());
    let served_by_second = served_request_ids(&second.stderr());
    assert!(!served_by_first.is_empty() && !served_by_second.is_empty());
    assert!(
        served_by_first.is_disjoint(&served_by_second),
        "{served_by_first:?} / {served_by_second:?}"
    );
    // The burst plus the readiness ping, all served.
    assert_eq!(
        served_by_first.len() + served_by_second.len(),
        CONCURRENT_REQUESTS + 1
    );
}

// ---------------------------------------------------------------------------------------------
// Failures end promptly: killed client, full queue

#[test]
fn killed_client_ends_in_flight_requests_by_deadline_and_new_ones_fail_fast() {
    let connector_timeout = secs(3.0);
    let setup = Setup::start(
        &["killed"],
        &[
            ("--connector.timeout", "3s"),
            ("--client-timeout", "2s"),
            ("--poll-max-wait", "1s"),
        ],
    );
    let mcp = FakeMcp::start();
    mcp.on_tool(
        "slow",
        McpReply::result(json!({"content": []})).after(Duration::from_secs(10)),
    );
    let mut client = tunnel_client(&setup.relay, setup.tunnel(), mcp.url()).spawn();
    let connector = setup.connector();
    assert_eq!(connector.wait_until_client_connected().status, 200);

    let in_flight = {
        let connector = connector.clone();
        in_background(move || connector.post(&tool_call("slow-call", "slow", json!({}))))
    };
    mcp.wait_for_call(&json!("slow-call"), PROMPTLY);
    client.kill_and_collect();
    let killed_at = Instant::now();

    let answer = in_flight.join();
    assert_relay_error(&answer, 504, "tunnel_response_timeout");
    assert!(
        answer.elapsed >= connector_timeout - secs(0.1)
            && answer.elapsed < connector_timeout + secs(2.0),
        "the in-flight request should end at the 3 s connector timeout: {answer:#?}"
    );

    // Once the client's last poll is older than --client-timeout, new requests fail at once.
    // Until then a request may still be queued (and end with 504 at its deadline). Its last poll
    // ended at most --poll-max-wait after the kill; allow one more queued request, and slack.
    let deadline = killed_at + secs(1.0 + 2.0) + connector_timeout + secs(3.0);
    loop {
        let answer = connector.post(&ping("after-the-kill"));
        if answer.status == 503 {
            assert_relay_error(&answer, 503, "tunnel_client_not_connected");
            assert!(
                answer.elapsed < secs(1.0),
                "not connected should be answered at once: {answer:#?}"
            );
            break;
        }
        assert_relay_error(&answer, 504, "tunnel_response_timeout");
        assert!(
            Instant::now() < deadline,
            "still no 503 long after the client's last poll expired: {answer:#?}"
        );
    }
}

#[test]
fn full_queue_answers_503_with_retry_after_and_queued_requests_end_with_504() {
    let setup = Setup::start(
        &["small-queue"],
        &[("--queue-capacity", "2"), ("--connector.timeout", "2s")],
    );
    let tunnel = setup.tunnel();
    let client = setup.poller("idle-client");
    client.register_as_connected();

    let queued: Vec<_> = (0..2)
        .map(|i| {
            let connector = setup.connector();
            in_background(move || connector.post(&ping(&format!("queued-{i}"))))
        })
        .collect();
    setup.relay.wait_until_queued(&tunnel.id, 2);

    let third = setup.connector().post(&ping("third"));
    assert_relay_error(&third, 503, "tunnel_queue_full");
    let retry_after = third
        .header("Retry-After")
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|seconds| seconds >= 1),
        "{third:#?}"
    );
    assert!(third.elapsed < secs(1.0), "{third:#?}");

    for request in queued {
        let answer = request.join();
        assert_relay_error(&answer, 504, "tunnel_response_timeout");
        assert!(
            answer.elapsed >= secs(1.9) && answer.elapsed < secs(4.0),
            "{answer:#?}"
        );
    }

    // The expired commands left the queue: a new request is accepted and is the only one delivered.
    let connector = setup.connector();
    let fourth = in_background(move || connector.post(&ping("fourth")));
    setup.relay.wait_until_queued(&tunnel.id, 3);
    let commands = client.take_commands(25, 1000);
    let ids: Vec<&Value> = commands.iter().map(|c| &c["jsonrpc"]["id"]).collect();
    assert_eq!(ids, [&json!("fourth")], "{commands:#?}");
    assert_eq!(
        client.answer_with_result(&commands[0], json!({})).status,
        200
    );
    assert_json_result(&fourth.join(), &json!("fourth"));
}

// ---------------------------------------------------------------------------------------------
// Malformed connector requests

/// A JSON-RPC ping whose serialisation is exactly `size` bytes.
fn ping_of_size(id: &str, size: usize) -> Vec<u8> {
    let empty = json!({"jsonrpc": "2.0", "id": id, "method": "ping", "params": {"pad": ""}});
    let padding = size - empty.to_string().len();
    let padded = json!({
        "jsonrpc": "2.0", "id": id, "method": "ping", "params": {"pad": "x".repeat(padding)},
    });
    let bytes = padded.to_string().into_bytes();
    assert_eq!(bytes.len(), size);
    bytes
}

#[test]
fn connector_body_limit_malformed_bodies_and_get_are_refused() {
    let setup = Setup::start(&["limits"], &[("--connector.max-body", "1000")]);
    let tunnel = setup.tunnel();
    let client = setup.poller("limits-client");
    client.register_as_connected();
    let connector = setup.connector();

    assert_relay_error(
        &connector.post_raw(&ping_of_size("too-big", 5000)),
        413,
        "request_body_too_large",
    );
    assert_relay_error(
        &connector.post_raw(&ping_of_size("one-byte-over", 1001)),
        413,
        "request_body_too_large",
    );
    assert_relay_error(
        &connector.post_raw(b"this is not JSON"),
        400,
        "invalid_json_payload",
    );
    let batch = json!([ping("in-a-batch")]).to_string();
    assert_relay_error(
        &connector.post_raw(batch.as_bytes()),
        400,
        "invalid_json_payload",
    );
    let get = connector.get();
    assert_eq!(get.status, 405, "{get:#?}");
    assert!(
        get.header("Allow")
            .is_some_and(|allow| allow.contains("POST")),
        "{get:#?}"
    );
    assert_eq!(setup.relay.queued_count(&tunnel.id), 0);

    // A body exactly at the limit is accepted and crosses the tunnel intact.
    let at_limit = ping_of_size("at-the-limit", 1000);
    let sender = connector.clone();
    let sent = at_limit.clone();
    let waiting = in_background(move || sender.post_raw(&sent));
    let command = client.take_one_command();
    let expected: Value = serde_json::from_slice(&at_limit).unwrap();
    assert_eq!(command["jsonrpc"], expected);
    assert_eq!(client.answer_with_result(&command, json!({})).status, 200);
    assert_json_result(&waiting.join(), &json!("at-the-limit"));
}

// ---------------------------------------------------------------------------------------------
// Response POSTs the relay no longer waits for

#[test]
fn late_duplicate_and_forged_response_posts_get_404() {
    let setup = Setup::start(&["late"], &[("--connector.timeout", "2s")]);
    let client = setup.poller("late-client");
    client.register_as_connected();

    let connector = setup.connector();
    let waiting = in_background(move || connector.post(&ping("answered-once")));
    let command = client.take_one_command();
    // The client is given the connector's remaining budget (2 s, less the relay's margin for the
    // response POST), so it never works for a caller who has gone.
    let budget_ms: u64 = command["response_timeout"]
        .as_str()
        .and_then(|t| t.strip_suffix("ms")?.parse().ok())
        .unwrap_or_else(|| panic!("response_timeout is not \"<n>ms\": {command:#}"));
    assert!((1..2000).contains(&budget_ms), "{command:#}");
    let payload = result_payload(&command, json!({"attempt": "first"}));

    let forged = client.post_response("not-the-shard-token", &payload);
    assert_relay_error(&forged, 404, "pending_request_not_found");
    let first = client.post_response(shard_token_of(&command), &payload);
    assert_eq!(first.status, 200, "{first:#?}");
    assert_eq!(first.json(), json!({"status": "ok"}));
    let duplicate = client.post_response(
        shard_token_of(&command),
        &result_payload(&command, json!({"attempt": "second"})),
    );
    assert_relay_error(&duplicate, 404, "pending_request_not_found");
    let answer = waiting.join();
    assert_eq!(
        assert_json_result(&answer, &json!("answered-once"))["result"]["attempt"],
        "first"
    );

    // Late: the connector gave up (504) before the client answered.
    let connector = setup.connector();
    let abandoned = in_background(move || connector.post(&ping("abandoned")));
    let command = client.take_one_command();
    assert_relay_error(&abandoned.join(), 504, "tunnel_response_timeout");
    let late = client.answer_with_result(&command, json!({}));
    assert_relay_error(&late, 404, "pending_request_not_found");
}

// ---------------------------------------------------------------------------------------------
// Tunnels file management while the relay runs

/// Reads `tunnel`'s metadata with its own runtime key until the status is `wanted` (the relay
/// checks the tunnels file every 2 s) and returns that answer; panics if it does not come within
/// `PROMPTLY`.
fn wait_for_metadata_status(relay: &Relay, tunnel: &Tunnel, wanted: u16) -> HttpAnswer {
    let poller = Poller::new(relay, &tunnel.id, &tunnel.runtime_key, "metadata-check");
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let answer = poller.metadata();
        if answer.status == wanted {
            return answer;
        }
        assert!(
            matches!(answer.status, 200 | 404),
            "unexpected metadata answer: {answer:#?}"
        );
        assert!(
            Instant::now() < deadline,
            "metadata still {} after {PROMPTLY:?}: {answer:#?}",
            answer.status
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tunnels_added_and_removed_while_running_take_effect_without_restart() {
    let setup = Setup::start(&["original"], &[]);
    let original = setup.tunnel();
    let added = add_tunnel(&setup.dir.tunnels_file(), "added-later");
    let found = wait_for_metadata_status(&setup.relay, &added, 200);
    assert_eq!(found.json()["name"], "added-later", "{found:#?}");
    wait_for_metadata_status(&setup.relay, original, 200);

    remove_tunnel(&setup.dir.tunnels_file(), &added.id);
    let gone = wait_for_metadata_status(&setup.relay, &added, 404);
    assert_relay_error(&gone, 404, "tunnel_not_found");
    // The remaining tunnel is untouched.
    wait_for_metadata_status(&setup.relay, original, 200);
    // Seen by the directory watch (inotify), not by a timer.
    let log = setup.relay.output();
    assert!(log.contains("for changes of the tunnels file"), "{log}");
    assert!(
        log.contains("tunnels reloaded (tunnels file changed)"),
        "{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Connector auth modes

#[test]
fn passthrough_forwards_authorization_and_relay_key_strips_it() {
    let dir = TempDir::new("passthrough");
    let keyed = add_tunnel(&dir.tunnels_file(), "keyed");
    let passthrough = add_tunnel_with_auth(&dir.tunnels_file(), "open", "passthrough");
    let relay = RelayBuilder::new(&dir.tunnels_file()).start();
    let mcp = FakeMcp::start();
    let _keyed_client = tunnel_client(&relay, &keyed, mcp.url()).spawn();
    let _passthrough_client = tunnel_client(&relay, &passthrough, mcp.url()).spawn();

    // Passthrough: the relay checks nothing and the host's Authorization reaches the MCP server.
    let open = Connector::new(&relay, &passthrough).bearer("upstream-oauth-token");
    assert_eq!(open.wait_until_client_connected().status, 200);
    assert_json_result(&open.post(&ping("with-oauth")), &json!("with-oauth"));
    let call = mcp.wait_for_call(&json!("with-oauth"), PROMPTLY);
    assert_eq!(
        call.request.header_values("Authorization"),
        ["Bearer upstream-oauth-token"],
        "{call:#?}"
    );
    let anonymous = open.without_authorization();
    assert_json_result(&anonymous.post(&ping("anonymous")), &json!("anonymous"));
    let call = mcp.wait_for_call(&json!("anonymous"), PROMPTLY);
    assert!(!call.request.has_header("Authorization"), "{call:#?}");

    // Relay-key: the connector key is checked, then stripped before the command is queued.
    let guarded = Connector::new(&relay, &keyed);
    assert_eq!(guarded.wait_until_client_connected().status, 200);
    assert_json_result(&guarded.post(&ping("with-key")), &json!("with-key"));
    let call = mcp.wait_for_call(&json!("with-key"), PROMPTLY);
    assert!(!call.request.has_header("Authorization"), "{call:#?}");
    for fragment in secret_fragments(&keyed.connector_key) {
        assert!(!call.request.mentions(fragment), "{call:#?}");
    }
    // The MCP server never saw any key of the relay-key tunnel.
    for call in mcp.calls() {
        for key in [&keyed.connector_key, &keyed.runtime_key] {
            assert!(!call.request.mentions(key), "{call:#?}");
        }
    }
}

/// A client that dies (or restarts) leaves its long-poll open at the relay until the poll's wait
/// ends. The relay must notice that the poller is gone instead of handing it the next command,
/// which would then be lost until its caller's timeout.
#[test]
fn a_poll_left_by_a_vanished_client_takes_no_command() {
    let setup = Setup::start(
        &["vanished"],
        &[("--connector.timeout", "10s"), ("--poll-max-wait", "20s")],
    );
    let tunnel = setup.tunnel();
    let stub = Stub::start();

    // The old client: a long-poll that the relay holds, then the connection closes.
    let poll_url = format!(
        "{}/poll?limit=1&timeout_ms=20000",
        setup.relay.tunnel_url(&tunnel.id)
    );
    let path = poll_url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, path)| format!("/{path}"))
        .expect("a path in the poll URL");
    let addr = setup
        .relay
        .base_url()
        .trim_start_matches("http://")
        .to_string();
    let mut old_client = std::net::TcpStream::connect(&addr).expect("connect to the relay");
    use std::io::{Read, Write};
    write!(
        old_client,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         X-Tunnel-Client-Instance-Id: old-client\r\n\r\n",
        tunnel.runtime_key
    )
    .expect("send the poll");
    // The relay answers a refused poll at once; silence for a moment means it is holding it.
    old_client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let held = matches!(old_client.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut);
    assert!(held, "the relay should hold the old client's poll");
    drop(old_client);

    // The new client: its first commands must reach it, not the vanished poll.
    let _client = tunnel_client(&setup.relay, tunnel, stub.url()).spawn();
    let started = Instant::now();
    let answer = setup.connector().wait_until_client_connected();
    assert_eq!(answer.status, 200, "{answer:#?}");
    assert!(
        started.elapsed() < secs(5.0),
        "the first request took {:?}: it went to the vanished poll",
        started.elapsed()
    );
}
