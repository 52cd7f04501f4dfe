//! `mcp-tunnel stub` from outside: the built-in MCP server started on 127.0.0.1 and spoken to
//! over HTTP with ureq, as an MCP client would. Sessions, version negotiation, every tool (the
//! progress tool over SSE too), the error codes of malformed and unknown messages, and the
//! optional bearer token.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use mcp_tunnel::http_server::Server;
use mcp_tunnel::secret::Secret;
use mcp_tunnel::stub::{StubOptions, start};
use serde_json::{Value, json};

// What the stub puts on the wire, spelled out: these tests pin it from outside.
const SESSION_HEADER: &str = "Mcp-Session-Id";
/// The revision the stub answers when asked for one it does not know.
const LATEST_PROTOCOL: &str = "2025-06-18";
/// Session ids are 16 random bytes in hex.
const SESSION_ID_BYTES: usize = 16;
/// Message of `fail` and `fail_rpc` when the caller gives none.
const DEFAULT_FAILURE_MESSAGE: &str = "failure requested";
// JSON-RPC 2.0 error codes, and the two the stub uses from the server range.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const SERVER_ERROR: i64 = -32000;
const SESSION_NOT_FOUND: i64 = -32001;

/// Bound on every exchange, so a broken server fails the test instead of hanging it.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

struct Stubbed {
    server: Server,
    agent: ureq::Agent,
    url: String,
}

/// What the tests look at in an answer.
struct Answer {
    status: u16,
    content_type: Option<String>,
    session: Option<String>,
    headers: ureq::http::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

fn stub(opts: StubOptions) -> Stubbed {
    let server = start(TcpListener::bind("127.0.0.1:0").unwrap(), opts).unwrap();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(TEST_TIMEOUT))
        .build()
        .into();
    let url = format!("http://{}/mcp", server.local_addr());
    Stubbed { server, agent, url }
}

fn answer(mut resp: ureq::http::Response<ureq::Body>) -> Answer {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (content_type, session) = (header("content-type"), header("mcp-session-id"));
    let headers = resp.headers().clone();
    Answer {
        status: resp.status().as_u16(),
        content_type,
        session,
        headers,
        text: resp.body_mut().read_to_string().unwrap(),
    }
}

impl Stubbed {
    fn send(&self, body: &str, accept: &str, session: Option<&str>) -> Answer {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", accept);
        if let Some(session) = session {
            req = req.header(SESSION_HEADER, session);
        }
        answer(req.send(body).unwrap())
    }

    fn post(&self, body: Value) -> Answer {
        self.send(&body.to_string(), "application/json", None)
    }

    /// A request with id 1; returns the JSON-RPC response.
    fn rpc(&self, method: &str, params: Value) -> Value {
        let reply =
            self.post(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}));
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
        reply.json()
    }

    fn call(&self, tool: &str, arguments: Value) -> Value {
        self.rpc("tools/call", json!({"name": tool, "arguments": arguments}))
    }

    fn initialize(&self) -> String {
        let reply = self.post(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": LATEST_PROTOCOL, "capabilities": {},
                       "clientInfo": {"name": "test", "version": "0"}}}));
        assert_eq!(reply.status, 200);
        reply.session.expect("initialize names a session")
    }
}

fn text_of(response: &Value) -> &str {
    response["result"]["content"][0]["text"].as_str().unwrap()
}

fn error_of(response: &Value) -> (i64, &str) {
    let error = &response["error"];
    (
        error["code"].as_i64().unwrap(),
        error["message"].as_str().unwrap(),
    )
}

#[test]
fn initialize_hands_out_a_session_and_negotiates_the_version() {
    let s = stub(StubOptions {
        name: "demo".into(),
        ..StubOptions::default()
    });
    for (asked, expected) in [
        (json!("2025-06-18"), "2025-06-18"),
        (json!("2025-03-26"), "2025-03-26"),
        (json!("2024-11-05"), "2024-11-05"),
        (json!("1999-01-01"), LATEST_PROTOCOL),
        (json!(42), LATEST_PROTOCOL),
    ] {
        let reply = s.post(
            json!({"jsonrpc": "2.0", "id": "init", "method": "initialize",
            "params": {"protocolVersion": asked, "capabilities": {}}}),
        );
        assert_eq!(reply.status, 200);
        let session = reply.session.clone().unwrap();
        assert_eq!(session.len(), 2 * SESSION_ID_BYTES);
        assert!(session.bytes().all(|b| b.is_ascii_hexdigit()));
        let body = reply.json();
        assert_eq!(body["id"], "init");
        let result = &body["result"];
        assert_eq!(result["protocolVersion"], expected);
        assert_eq!(result["capabilities"]["tools"]["listChanged"], false);
        assert_eq!(result["serverInfo"]["name"], "demo");
        assert_eq!(result["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
    }
    assert_ne!(s.initialize(), s.initialize());
    s.server.shutdown();
}

#[test]
fn tools_list_describes_every_tool_with_a_schema() {
    let s = stub(StubOptions::default());
    let reply = s.rpc("tools/list", json!({}));
    let tools = reply["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["echo", "add", "slow", "progress", "fail", "fail_rpc"]
    );
    for tool in tools {
        assert!(tool["description"].is_string());
        assert_eq!(tool["inputSchema"]["type"], "object");
        assert!(tool["inputSchema"]["properties"].is_object());
    }
    assert_eq!(tools[0]["inputSchema"]["required"], json!(["text"]));
    assert_eq!(tools[1]["inputSchema"]["properties"]["a"]["type"], "number");
    assert_eq!(
        tools[2]["inputSchema"]["properties"]["ms"]["type"],
        "integer"
    );
    assert_eq!(s.rpc("ping", Value::Null)["result"], json!({}));
    s.server.shutdown();
}

#[test]
fn echo_add_and_slow() {
    let s = stub(StubOptions::default());
    let reply = s.call("echo", json!({"text": "héllo\nworld"}));
    assert_eq!(reply["id"], 1);
    assert_eq!(reply["result"]["content"][0]["type"], "text");
    assert_eq!(text_of(&reply), "héllo\nworld");
    assert!(reply["result"].get("isError").is_none());

    for (a, b, sum) in [
        (json!(2), json!(3), "5"),
        (json!(-7), json!(2), "-5"),
        (json!(1.5), json!(2), "3.5"),
        (json!(2.5), json!(0.5), "3"),
        (json!(-0.5), json!(0.5), "0"),
        (json!(u64::MAX), json!(1), "18446744073709551616"),
        (json!(i64::MIN), json!(-1), "-9223372036854775809"),
    ] {
        assert_eq!(text_of(&s.call("add", json!({"a": a, "b": b}))), sum);
    }
    let overflow = s.call("add", json!({"a": 1e308, "b": 1e308}));
    assert_eq!(error_of(&overflow).0, INVALID_PARAMS);

    assert_eq!(text_of(&s.call("slow", json!({"ms": 5}))), "slept 5 ms");
    assert_eq!(text_of(&s.call("slow", json!({"ms": 0.0}))), "slept 0 ms");
    s.server.shutdown();
}

#[test]
fn bad_calls_get_invalid_params_and_unknown_methods_method_not_found() {
    let s = stub(StubOptions::default());
    for (params, needle) in [
        (json!({"name": "nope"}), "unknown tool: nope"),
        (json!({"name": "echo", "arguments": {}}), "echo: `text`"),
        (
            json!({"name": "echo", "arguments": {"text": 5}}),
            "echo: `text`",
        ),
        (
            json!({"name": "echo", "arguments": [1]}),
            "`arguments` must be an object",
        ),
        (
            json!({"name": "add", "arguments": {"a": "1", "b": 2}}),
            "add: `a`",
        ),
        (json!({"name": "add", "arguments": {"a": 1}}), "add: `b`"),
        (
            json!({"name": "slow", "arguments": {}}),
            "slow: `ms` is required",
        ),
        (
            json!({"name": "slow", "arguments": {"ms": -1}}),
            "slow: `ms`",
        ),
        (
            json!({"name": "slow", "arguments": {"ms": 1.5}}),
            "slow: `ms`",
        ),
        (
            json!({"name": "progress", "arguments": {"steps": "x"}}),
            "progress: `steps`",
        ),
        (
            json!({"name": "fail", "arguments": {"message": {}}}),
            "fail: `message`",
        ),
        (json!({"name": 7}), "`name` must be a string"),
        (json!([1, 2]), "params must be an object"),
    ] {
        let reply = s.rpc("tools/call", params.clone());
        let (code, message) = error_of(&reply);
        assert_eq!(code, INVALID_PARAMS, "for {params}");
        assert!(message.contains(needle), "for {params}: {message}");
    }
    let reply = s.rpc("resources/list", json!({}));
    assert_eq!(error_of(&reply).0, METHOD_NOT_FOUND);
    s.server.shutdown();
}

/// Reads one SSE event's JSON from the stream (skipping `event:` lines), or None at its end.
fn next_event(reader: &mut impl BufRead) -> Option<Value> {
    let mut data = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            assert!(data.is_none(), "stream ended inside an event");
            return None;
        }
        let line = line.trim_end_matches('\n');
        if line.is_empty() {
            if let Some(data) = data {
                return Some(data);
            }
        } else if let Some(json) = line.strip_prefix("data: ") {
            data = Some(serde_json::from_str(json).unwrap());
        } else {
            assert_eq!(line, "event: message");
        }
    }
}

#[test]
fn progress_over_sse_reports_each_step_then_the_result() {
    let s = stub(StubOptions::default());
    let session = s.initialize();
    let delay = Duration::from_millis(150);
    let body = json!({"jsonrpc": "2.0", "id": "p1", "method": "tools/call",
        "params": {"name": "progress", "arguments": {"steps": 3, "delay_ms": 150},
                   "_meta": {"progressToken": "tok-1"}}});
    let resp = s
        .agent
        .post(&s.url)
        .header("Accept", "application/json, text/event-stream")
        .header(SESSION_HEADER, &session)
        .send(body.to_string())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["mcp-session-id"], session.as_str());
    let mut reader = BufReader::new(resp.into_body().into_reader());

    let mut arrivals = Vec::new();
    let mut events = Vec::new();
    while let Some(event) = next_event(&mut reader) {
        arrivals.push(Instant::now());
        events.push(event);
    }
    assert_eq!(events.len(), 4, "{events:?}");
    for (i, event) in events[..3].iter().enumerate() {
        let step = i as u64 + 1;
        assert_eq!(event["method"], "notifications/progress");
        assert!(event.get("id").is_none());
        let params = &event["params"];
        assert_eq!(params["progressToken"], "tok-1");
        assert_eq!(params["progress"], step);
        assert_eq!(params["total"], 3);
        assert_eq!(params["message"], format!("step {step} of 3"));
    }
    assert_eq!(events[3]["id"], "p1");
    assert_eq!(text_of(&events[3]), "done after 3 steps");
    // Flushed one by one: the first notification arrived while two more steps (2 × delay) were
    // still due. Only half of that is asserted, so a client thread scheduled late cannot fail it.
    assert!(arrivals[3] - arrivals[0] >= delay, "{arrivals:?}");
    s.server.shutdown();
}

#[test]
fn progress_with_a_json_accept_answers_only_the_result() {
    let s = stub(StubOptions::default());
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "progress", "arguments": {"steps": 2, "delay_ms": 1},
                   "_meta": {"progressToken": 5}}});
    let reply = s.send(&body.to_string(), "application/json", None);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let reply = reply.json();
    assert_eq!(reply["id"], 9);
    assert_eq!(text_of(&reply), "done after 2 steps");

    // An event-stream accept only matters for progress: other calls stay plain JSON.
    let echo = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x"}}});
    let reply = s.send(
        &echo.to_string(),
        "application/json, text/event-stream",
        None,
    );
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    assert_eq!(text_of(&reply.json()), "x");
    s.server.shutdown();
}

#[test]
fn notifications_and_client_responses_get_202() {
    let s = stub(StubOptions::default());
    let session = s.initialize();
    for message in [
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}),
        json!({"jsonrpc": "2.0", "id": 4, "result": {}}),
    ] {
        let reply = s.send(&message.to_string(), "application/json", Some(&session));
        assert_eq!(reply.status, 202, "for {message}");
        assert_eq!(reply.text, "");
        assert_eq!(reply.session.as_deref(), Some(session.as_str()));
    }
    s.server.shutdown();
}

#[test]
fn sessions_unknown_absent_and_deleted() {
    let s = stub(StubOptions::default());
    let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}).to_string();

    let unknown = s.send(&list, "application/json", Some("not-a-session"));
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.session, None);
    assert_eq!(error_of(&unknown.json()).0, SESSION_NOT_FOUND);
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    assert_eq!(s.send(&note, "application/json", Some("nope")).status, 404);

    // Lenient: no session header at all is served.
    assert_eq!(s.send(&list, "application/json", None).status, 200);

    let session = s.initialize();
    let known = s.send(&list, "application/json", Some(&session));
    assert_eq!(known.status, 200);
    assert_eq!(known.session.as_deref(), Some(session.as_str()));

    let delete = |id: Option<&str>| {
        let mut req = s.agent.delete(&s.url);
        if let Some(id) = id {
            req = req.header(SESSION_HEADER, id);
        }
        answer(req.call().unwrap()).status
    };
    assert_eq!(delete(Some(&session)), 204);
    assert_eq!(
        s.send(&list, "application/json", Some(&session)).status,
        404
    );
    assert_eq!(delete(Some(&session)), 404);
    // Nothing to end without a session (and MCP 2026-07-28 has none).
    assert_eq!(delete(None), 405);
    // initialize with a stale session id starts a new one.
    let fresh = s.initialize();
    assert_ne!(fresh, session);

    let get = answer(s.agent.get(&s.url).call().unwrap());
    assert_eq!(get.status, 405);
    assert_eq!(get.headers["allow"], "POST, DELETE");
    let elsewhere = s
        .agent
        .get(format!("http://{}/other", s.server.local_addr()));
    assert_eq!(answer(elsewhere.call().unwrap()).status, 404);
    s.server.shutdown();
}

#[test]
fn fail_is_a_tool_error_and_fail_rpc_a_jsonrpc_error() {
    let s = stub(StubOptions::default());
    let reply = s.call("fail", json!({"message": "boom"}));
    assert!(reply.get("error").is_none());
    assert_eq!(reply["result"]["isError"], true);
    assert_eq!(text_of(&reply), "boom");
    let reply = s.call("fail", Value::Null);
    assert_eq!(text_of(&reply), DEFAULT_FAILURE_MESSAGE);

    let reply = s.call("fail_rpc", json!({"message": "kaput"}));
    assert_eq!(reply["id"], 1);
    assert!(reply.get("result").is_none());
    assert_eq!(error_of(&reply), (SERVER_ERROR, "kaput"));
    s.server.shutdown();
}

#[test]
fn malformed_messages_get_400() {
    let s = stub(StubOptions::default());
    for (body, code, id) in [
        ("{not json", PARSE_ERROR, Value::Null),
        ("", PARSE_ERROR, Value::Null),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            INVALID_REQUEST,
            Value::Null,
        ),
        ("42", INVALID_REQUEST, Value::Null),
        (
            r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#,
            INVALID_REQUEST,
            json!(7),
        ),
        (
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            INVALID_REQUEST,
            Value::Null,
        ),
        (
            r#"{"jsonrpc":"2.0","id":"x","method":5}"#,
            INVALID_REQUEST,
            json!("x"),
        ),
        (r#"{"jsonrpc":"2.0","id":"x"}"#, INVALID_REQUEST, json!("x")),
    ] {
        let reply = s.send(body, "application/json", None);
        assert_eq!(reply.status, 400, "for {body}");
        let reply = reply.json();
        assert_eq!(error_of(&reply).0, code, "for {body}");
        assert_eq!(reply["id"], id, "for {body}");
    }
    s.server.shutdown();
}

#[test]
fn bearer_is_required_when_configured() {
    let s = stub(StubOptions {
        require_bearer: Some(Secret::new("s3cret")),
        ..StubOptions::default()
    });
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let post = |auth: Option<&str>| {
        let mut req = s.agent.post(&s.url);
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        answer(req.send(&ping).unwrap())
    };
    let refused = post(None);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.headers["www-authenticate"], "Bearer");
    assert_eq!(post(Some("Bearer wrong")).status, 401);
    assert_eq!(post(Some("Bearer s3cre")).status, 401);
    assert_eq!(post(Some("Basic s3cret")).status, 401);
    let ok = post(Some("Bearer s3cret"));
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["result"], json!({}));
    assert_eq!(post(Some("bearer s3cret")).status, 200);
    s.server.shutdown();
}
