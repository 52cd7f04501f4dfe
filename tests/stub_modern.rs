//! `mcp-tunnel stub` speaking MCP 2026-07-28 (issue 13, item 7), from outside over HTTP on
//! 127.0.0.1: `server/discover`, stateless `tools/list` and `tools/call` told apart by `_meta` or
//! the `MCP-Protocol-Version` header, the `Mcp-Method` / `Mcp-Name` checks against the body
//! (`400`, `-32020`), version refusal (`-32022`), unknown methods (`404`, `-32601`), `GET` and
//! `DELETE` without a session (`405`) — and a 2025 session still served beside them.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::time::Duration;

use mcp_tunnel::http_server::Server;
use mcp_tunnel::stub::{StubOptions, start};
use serde_json::{Value, json};

const MODERN: &str = "2026-07-28";
const HEADER_MISMATCH: i64 = -32020;
const UNSUPPORTED_VERSION: i64 = -32022;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// Bound on every exchange, so a broken server fails the test instead of hanging it.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

struct Stubbed {
    server: Server,
    agent: ureq::Agent,
    url: String,
}

struct Answer {
    status: u16,
    session: Option<String>,
    content_type: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    fn error_code(&self) -> i64 {
        self.json()["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("not an error: {}", self.text))
    }
}

fn stub() -> Stubbed {
    let server = start(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        StubOptions {
            name: "modern-stub".into(),
            ..StubOptions::default()
        },
    )
    .unwrap();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(TEST_TIMEOUT))
        .build()
        .into();
    let url = format!("http://{}/mcp", server.local_addr());
    Stubbed { server, agent, url }
}

/// The `_meta` every modern request carries.
fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// A modern request: `params` gets the `_meta`.
fn request(id: Value, method: &str, mut params: Value) -> Value {
    params["_meta"] = meta();
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

impl Stubbed {
    fn send(&self, body: &Value, headers: &[(&str, &str)]) -> Answer {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let mut resp = req.send(body.to_string().as_str()).unwrap();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (session, content_type) = (header("mcp-session-id"), header("content-type"));
        Answer {
            status: resp.status().as_u16(),
            session,
            content_type,
            text: resp.body_mut().read_to_string().unwrap(),
        }
    }

    /// A modern request with all the headers a conforming client sends.
    fn modern(&self, body: &Value) -> Answer {
        let method = body["method"].as_str().unwrap();
        let mut headers = vec![("MCP-Protocol-Version", MODERN), ("Mcp-Method", method)];
        if let Some(name) = body["params"]["name"].as_str() {
            headers.push(("Mcp-Name", name));
        }
        self.send(body, &headers)
    }
}

#[test]
fn server_discover_answers_a_discover_result() {
    let s = stub();
    let reply = s.modern(&request(
        json!("openai-mcp-discover"),
        "server/discover",
        json!({}),
    ));
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    assert_eq!(reply.session, None, "a modern answer names no session");
    let body = reply.json();
    assert_eq!(body["id"], "openai-mcp-discover");
    let result = &body["result"];
    assert_eq!(result["resultType"], "complete");
    let versions: Vec<&str> = result["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(versions[0], MODERN, "{versions:?}");
    assert!(versions.contains(&"2025-06-18"), "{versions:?}");
    assert!(result["capabilities"]["tools"].is_object(), "{result}");
    assert_eq!(result["serverInfo"]["name"], "modern-stub");
    assert_eq!(result["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(result["instructions"].as_str().unwrap().contains("echo"));
    assert!(result["ttlMs"].as_u64().is_some(), "{result}");
    assert!(result["cacheScope"].is_string(), "{result}");

    // A bare discover (no _meta, no headers) is answered too: it is how a client learns versions.
    let bare = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover"});
    let reply = s.send(&bare, &[]);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["result"]["supportedVersions"][0], MODERN);
    s.server.shutdown();
}

#[test]
fn tools_list_and_call_need_no_session() {
    let s = stub();
    let list = s.modern(&request(json!(1), "tools/list", json!({})));
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.session, None);
    let result = &list.json()["result"];
    assert_eq!(result["resultType"], "complete");
    let names: Vec<&str> = result["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["echo", "add", "slow", "progress", "fail", "fail_rpc"]
    );

    let call = s.modern(&request(
        json!("c1"),
        "tools/call",
        json!({"name": "add", "arguments": {"a": 2, "b": 40}}),
    ));
    assert_eq!(call.status, 200, "{}", call.text);
    let body = call.json();
    assert_eq!(body["id"], "c1");
    assert_eq!(body["result"]["content"][0]["text"], "42");
    assert_eq!(body["result"]["resultType"], "complete");

    // `_meta` alone makes a request modern: a session id it carries is ignored, even an unknown
    // one (a legacy request naming it would get 404).
    let echo = request(
        json!(2),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "hi"}}),
    );
    let reply = s.send(&echo, &[("Mcp-Session-Id", "no-such-session")]);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.session, None);
    assert_eq!(reply.json()["result"]["content"][0]["text"], "hi");

    // So does the header alone.
    let plain = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
    let reply = s.send(&plain, &[("MCP-Protocol-Version", MODERN)]);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["result"]["resultType"], "complete");

    // Argument errors are the legacy ones.
    let bad = s.modern(&request(json!(4), "tools/call", json!({"name": "add"})));
    assert_eq!(bad.status, 200);
    assert_eq!(bad.error_code(), INVALID_PARAMS);
    s.server.shutdown();
}

#[test]
fn progress_streams_in_the_modern_era_too() {
    let s = stub();
    let mut call = request(
        json!(9),
        "tools/call",
        json!({"name": "progress", "arguments": {"steps": 2, "delay_ms": 1}}),
    );
    call["params"]["_meta"]["progressToken"] = json!("p");
    let resp = s
        .agent
        .post(&s.url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", MODERN)
        .header("Mcp-Method", "tools/call")
        .header("Mcp-Name", "progress")
        .send(call.to_string().as_str())
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reader = BufReader::new(resp.into_body().into_reader());
    let messages: Vec<Value> = reader
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| line.strip_prefix("data:").map(str::trim).map(String::from))
        .map(|data| serde_json::from_str(&data).unwrap())
        .collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[0]["method"], "notifications/progress");
    assert_eq!(messages[2]["id"], 9);
    s.server.shutdown();
}

#[test]
fn headers_that_disagree_with_the_body_get_400_header_mismatch() {
    let s = stub();
    let echo = request(
        json!(5),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "x"}}),
    );
    for headers in [
        vec![("Mcp-Method", "tools/list")],
        vec![("Mcp-Method", "tools/call"), ("Mcp-Name", "add")],
        vec![("Mcp-Name", "ECHO")],
        vec![("Mcp-Name", "=?base64?not base64!?=")],
        vec![("MCP-Protocol-Version", "2026-12-01")],
    ] {
        let reply = s.send(&echo, &headers);
        assert_eq!(reply.status, 400, "{headers:?}: {}", reply.text);
        assert_eq!(reply.error_code(), HEADER_MISMATCH, "{headers:?}");
        assert_eq!(reply.json()["id"], 5, "{headers:?}");
    }
    // The Base64 sentinel form of the right name matches ("echo").
    let reply = s.send(&echo, &[("Mcp-Name", "=?base64?ZWNobw==?=")]);
    assert_eq!(reply.status, 200, "{}", reply.text);
    // Mcp-Name on a method without a name is not compared.
    let list = request(json!(6), "tools/list", json!({}));
    let reply = s.send(&list, &[("Mcp-Method", "tools/list"), ("Mcp-Name", "x")]);
    assert_eq!(reply.status, 200, "{}", reply.text);
    s.server.shutdown();
}

#[test]
fn unsupported_versions_and_unknown_methods() {
    let s = stub();
    let mut old = request(json!(7), "tools/list", json!({}));
    old["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("1900-01-01");
    let reply = s.send(&old, &[]);
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.error_code(), UNSUPPORTED_VERSION);
    let data = &reply.json()["error"]["data"];
    assert_eq!(data["requested"], "1900-01-01");
    assert_eq!(data["supported"][0], MODERN);
    // A version header of an unknown revision is modern, and refused the same way.
    let plain = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list"});
    let reply = s.send(&plain, &[("MCP-Protocol-Version", "2027-01-01")]);
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_code(), UNSUPPORTED_VERSION);

    let unknown = s.modern(&request(json!(9), "resources/list", json!({})));
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    assert_eq!(unknown.error_code(), METHOD_NOT_FOUND);
    assert_eq!(unknown.json()["id"], 9);
    s.server.shutdown();
}

#[test]
fn get_and_delete_without_a_session_are_405() {
    let s = stub();
    for method in ["GET", "DELETE"] {
        let req = match method {
            "GET" => s.agent.get(&s.url),
            _ => s.agent.delete(&s.url),
        };
        let resp = req.header("MCP-Protocol-Version", MODERN).call().unwrap();
        assert_eq!(resp.status(), 405, "{method}");
        assert_eq!(resp.headers()["allow"], "POST, DELETE", "{method}");
    }
    s.server.shutdown();
}

#[test]
fn a_legacy_session_works_beside_modern_requests() {
    let s = stub();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "legacy", "version": "0"}}});
    let reply = s.send(&init, &[]);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["result"]["protocolVersion"], "2025-06-18");
    let session = reply.session.expect("initialize names a session");

    let modern = s.modern(&request(json!(1), "server/discover", json!({})));
    assert_eq!(modern.status, 200);

    // The session's requests carry its negotiated version header and stay legacy: no
    // resultType, the session echoed back.
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let reply = s.send(
        &list,
        &[
            ("Mcp-Session-Id", &session),
            ("MCP-Protocol-Version", "2025-06-18"),
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.session.as_deref(), Some(session.as_str()));
    assert!(reply.json()["result"].get("resultType").is_none());
    // An unknown session is still the legacy 404.
    let reply = s.send(&list, &[("Mcp-Session-Id", "gone")]);
    assert_eq!(reply.status, 404);
    let delete = s
        .agent
        .delete(&s.url)
        .header("Mcp-Session-Id", &session)
        .call()
        .unwrap();
    assert_eq!(delete.status(), 204);
    s.server.shutdown();
}
