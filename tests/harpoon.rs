//! Harpoon end to end (issue 20): an MCP host calls channel `harpoon` of a tunnel through the
//! real `mcp-tunnel relay` and the real `mcp-tunnel run`, whose embedded server calls loopback
//! HTTP targets of this test. Each test proves one rule: the tools, an allowed call and the
//! headers it loses, refusals, truncation, redirects only to allowlisted targets and their limit,
//! plaintext only with the switch, and no channel at all without targets. The declaration in
//! `X-Tunnel-MCP-Server-Info` is checked against the fake control plane.

mod support;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use mcp_tunnel::http_server::{Limits, Response, Server};
use serde_json::{Value, json};
use support::{
    ClientBuilder, Connector, FakeControlPlane, FakeMcp, McpReply, PROMPTLY, Relay, RelayBuilder,
    TempDir, Tunnel, TunnelClient, add_tunnel, rpc_request, tunnel_client,
};

// ---------------------------------------------------------------------------------------------
// A loopback HTTP target

/// One request the target saw.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP server with a few fixed routes, recording every request.
struct Target {
    _server: Server,
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

const BIG: usize = 5000;

impl Target {
    fn start() -> Target {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the target");
        let server = Server::start(listener, None, Limits::default(), move |req| {
            let path = req.target.clone();
            record.lock().unwrap().push(Seen {
                method: req.method.clone(),
                path: path.clone(),
                headers: req.headers.clone(),
                body: req.body.clone(),
            });
            let redirect = |code, to: &str| Response::new(code, "").with_header("Location", to);
            match path.as_str() {
                "/token" => {
                    Response::json(200, r#"{"access_token":"t"}"#).with_header("X-Answer", "yes")
                }
                "/big" => Response::new(200, vec![b'x'; BIG]),
                "/to-token" => redirect(302, "/token"),
                "/to-token-303" => redirect(303, "token"),
                "/to-away" => redirect(302, "/not-listed"),
                "/to-query" => redirect(302, "/token?extra=1"),
                "/to-https" => redirect(307, "https://127.0.0.1:1/token"),
                "/chain" => redirect(302, "/to-token"),
                // A slow server (not synchronisation: the call must give up before it answers).
                "/slow" => {
                    std::thread::sleep(std::time::Duration::from_secs(3));
                    Response::new(200, "late")
                }
                _ => Response::new(404, "no such route"),
            }
        })
        .expect("start the target");
        let base = format!("http://{}", server.local_addr());
        Target {
            _server: server,
            base,
            seen,
        }
    }

    /// The `HARPOON_TARGETS` value allowlisting every route but `/not-listed`.
    fn targets(&self) -> String {
        let b = &self.base;
        [
            format!("label=token,url={b}/token,desc=Token endpoint"),
            format!("label=big,url={b}/big"),
            format!("label=hop,url={b}/to-token"),
            format!("label=hop303,url={b}/to-token-303"),
            format!("label=away,url={b}/to-away"),
            format!("label=query,url={b}/to-query"),
            format!("label=https,url={b}/to-https"),
            format!("label=chain,url={b}/chain"),
            format!("label=slow,url={b}/slow"),
        ]
        .join(";\n")
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.path).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Relay, client, main server

struct Setup {
    // Dropped first: the client, then the relay, then their files.
    client: TunnelClient,
    _relay_and_tunnel: (Relay, Tunnel),
    _dir: TempDir,
    main: FakeMcp,
    harpoon: Connector,
}

/// A relay, a fake main MCP server and a client configured with `env`, connected.
fn setup(env: &[(&str, &str)]) -> Setup {
    let dir = TempDir::new("harpoon");
    let tunnel = add_tunnel(&dir.tunnels_file(), "harpoon");
    let relay = RelayBuilder::new(&dir.tunnels_file()).start();
    let main = FakeMcp::start();
    main.on_method("ping", McpReply::result(json!({})));
    let mut builder = tunnel_client(&relay, &tunnel, main.url());
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    let client = builder.spawn();
    let connector = Connector::new(&relay, &tunnel);
    let ready = connector.wait_until_client_connected();
    assert_eq!(ready.status, 200, "{ready:#?}\n{}", client.stderr());
    let harpoon = connector.on_channel("harpoon");
    Setup {
        client,
        _relay_and_tunnel: (relay, tunnel),
        _dir: dir,
        main,
        harpoon,
    }
}

fn with_targets(target: &Target, extra: &[(&str, &str)]) -> Setup {
    let targets = target.targets();
    let mut env = vec![
        ("HARPOON_TARGETS", targets.as_str()),
        ("HARPOON_ALLOW_PLAINTEXT_HTTP", "true"),
    ];
    env.extend_from_slice(extra);
    setup(&env)
}

/// `tools/call` of `tool` on channel harpoon: the JSON-RPC result.
fn tool(s: &Setup, tool: &str, arguments: Value) -> Value {
    let call = rpc_request(
        7,
        "tools/call",
        json!({"name": tool, "arguments": arguments}),
    );
    let answer = s.harpoon.post(&call);
    assert_eq!(answer.status, 200, "{answer:#?}\n{}", s.client.stderr());
    let body = answer.json();
    assert_eq!(body["id"], 7, "{body}");
    body["result"].clone()
}

/// A successful `call_target`: its structured result.
fn call(s: &Setup, arguments: Value) -> Value {
    let result = tool(s, "call_target", arguments);
    assert_eq!(result["isError"], false, "{result}");
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, result["structuredContent"]);
    result["structuredContent"].clone()
}

/// A refused `call_target`: its error text.
fn refused(s: &Setup, arguments: Value) -> String {
    let result = tool(s, "call_target", arguments);
    assert_eq!(result["isError"], true, "{result}");
    result["content"][0]["text"].as_str().unwrap().to_string()
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                char::from(A[(n >> (18 - 6 * i) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn the_server_initializes_and_lists_its_tools_and_targets_without_urls() {
    let target = Target::start();
    let s = with_targets(&target, &[]);
    let init = s.harpoon.post(&rpc_request(
        1,
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "test", "version": "1"}}),
    ));
    assert_eq!(init.status, 200, "{init:#?}");
    let init = init.json();
    assert_eq!(init["result"]["serverInfo"]["name"], "harpoon", "{init}");
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );

    let initialized = s
        .harpoon
        .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    assert_eq!(initialized.status, 202, "{initialized:#?}");

    let tools = s
        .harpoon
        .post(&rpc_request(2, "tools/list", json!({})))
        .json();
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["list_targets", "call_target"], "{tools}");

    let listed = tool(&s, "list_targets", json!({}));
    let targets = listed["structuredContent"]["targets"]
        .as_array()
        .expect("targets")
        .clone();
    let labels: Vec<&str> = targets.iter().filter_map(|t| t["label"].as_str()).collect();
    assert_eq!(
        labels,
        [
            "token", "big", "hop", "hop303", "away", "query", "https", "chain", "slow"
        ]
    );
    assert_eq!(targets[0]["description"], "Token endpoint");
    assert_eq!(targets[0]["allowed_methods"], json!(["GET", "POST", "PUT"]));
    assert!(!listed.to_string().contains("127.0.0.1"), "{listed}");
    // A filter that no configured target matches.
    let none = tool(&s, "list_targets", json!({"tags": ["token-endpoint"]}));
    assert_eq!(none["structuredContent"]["targets"], json!([]));
    assert!(target.seen().is_empty(), "listing calls nothing");
    // Nothing of it reached main.
    assert!(
        s.main.calls().iter().all(|c| c.rpc_id() != Some(json!(1))
            && c.rpc_id() != Some(json!(2))
            && c.rpc_id() != Some(json!(7))),
        "harpoon traffic reached main"
    );
}

#[test]
fn an_allowed_call_reaches_its_target_without_hop_by_hop_proxy_or_identity_headers() {
    let target = Target::start();
    let s = with_targets(&target, &[]);
    let result = call(
        &s,
        json!({
            "label": "token",
            "method": "POST",
            "body": "grant_type=client_credentials",
            "headers": {
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": "Basic Y2xpZW50OnNlY3JldA==",
                "X-Custom": "kept",
                "Connection": "X-Nominated",
                "X-Nominated": "dropped",
                "Keep-Alive": "timeout=5",
                "Proxy-Authorization": "Basic eDp5",
                "X-Forwarded-For": "203.0.113.9",
                "Forwarded": "for=203.0.113.9",
                "X-Real-IP": "203.0.113.9",
                "Cookie": "session=1",
                "User-Agent": "impostor/1",
                "OpenAI-Organization": "org-x",
                "X-OpenAI-Authorization": "x",
                "X-Tunnel-Traffic-Source": "x",
            },
        }),
    );
    let body = br#"{"access_token":"t"}"#;
    assert_eq!(result["status_code"], 200, "{result}");
    assert_eq!(result["body_base64"], base64(body));
    assert_eq!(result["body_size_bytes"], body.len());
    assert_eq!(result["truncated"], false);
    assert_eq!(result["headers"]["X-Answer"], json!(["yes"]), "{result}");
    assert_eq!(
        result["headers"]["Content-Type"],
        json!(["application/json"])
    );

    let seen = target.seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let seen = &seen[0];
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/token")
    );
    assert_eq!(seen.body, b"grant_type=client_credentials");
    assert_eq!(
        seen.header("Authorization"),
        Some("Basic Y2xpZW50OnNlY3JldA==")
    );
    assert_eq!(
        seen.header("Content-Type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(seen.header("X-Custom"), Some("kept"));
    for dropped in [
        "X-Nominated",
        "Keep-Alive",
        "Proxy-Authorization",
        "X-Forwarded-For",
        "Forwarded",
        "X-Real-IP",
        "Cookie",
        "OpenAI-Organization",
        "X-OpenAI-Authorization",
        "X-Tunnel-Traffic-Source",
    ] {
        assert_eq!(seen.header(dropped), None, "{dropped} reached the target");
    }
    assert!(
        seen.header("User-Agent")
            .is_some_and(|ua| ua.starts_with("mcp-tunnel/")),
        "{seen:#?}"
    );
    // The dropped names are logged; their values never are.
    assert!(
        s.client
            .wait_for_stderr("dropped caller headers that are not forwarded", PROMPTLY),
        "{}",
        s.client.stderr()
    );
    assert!(!s.client.stderr().contains("Y2xpZW50OnNlY3JldA=="));
}

#[test]
fn unknown_labels_other_methods_and_limits_beyond_the_ceilings_are_refused_without_a_call() {
    let target = Target::start();
    let s = with_targets(&target, &[("HARPOON_MAX_RESPONSE_BYTES", "2000")]);
    for (arguments, why) in [
        (
            json!({"label": "nope", "method": "GET"}),
            "label nope: unknown target",
        ),
        (
            json!({"label": "token", "method": "DELETE"}),
            "label token: invalid method",
        ),
        (
            json!({"label": "token", "method": "PATCH"}),
            "invalid method",
        ),
        (json!({"method": "GET"}), "label unknown: label is required"),
        (
            json!({"label": "token", "method": "GET", "max_response_bytes": 2001}),
            "max_response_bytes must be less than or equal to 2000",
        ),
        (
            json!({"label": "token", "method": "GET", "max_redirects": 6}),
            "max_redirects must be less than or equal to 5",
        ),
        (
            json!({"label": "token", "method": "GET", "timeout_ms": 10}),
            "timeout_ms must be from 100",
        ),
        (
            json!({"label": "token", "method": "POST", "body": "x".repeat(2001)}),
            "request body exceeds size limit",
        ),
        (
            json!({"label": "token", "method": "GET", "headers": {"X-Bad": "a\r\nb"}}),
            "line break",
        ),
    ] {
        let text = refused(&s, arguments.clone());
        assert!(text.contains(why), "{arguments}: {text}");
    }
    assert!(target.seen().is_empty(), "{:#?}", target.seen());
    // An unknown tool is a protocol error.
    let answer = s
        .harpoon
        .post(&rpc_request(
            9,
            "tools/call",
            json!({"name": "fetch_anything"}),
        ))
        .json();
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
}

#[test]
fn a_response_larger_than_the_limit_is_truncated() {
    let target = Target::start();
    let s = with_targets(&target, &[("HARPOON_MAX_RESPONSE_BYTES", "2000")]);
    let capped = call(&s, json!({"label": "big", "method": "GET"}));
    assert_eq!(capped["status_code"], 200);
    assert_eq!(capped["body_size_bytes"], 2000, "{capped}");
    assert_eq!(capped["truncated"], true);
    assert_eq!(capped["body_base64"], base64(&[b'x'; 2000]));
    let smaller = call(
        &s,
        json!({"label": "big", "method": "GET", "max_response_bytes": 10}),
    );
    assert_eq!(smaller["body_size_bytes"], 10, "{smaller}");
    assert_eq!(smaller["truncated"], true);
    assert_eq!(smaller["body_base64"], base64(b"xxxxxxxxxx"));
}

#[test]
fn redirects_are_followed_only_to_allowlisted_targets_and_within_the_limit() {
    let target = Target::start();
    let s = with_targets(&target, &[]);

    // To an allowlisted target: followed.
    let followed = call(&s, json!({"label": "hop", "method": "GET"}));
    assert_eq!(followed["status_code"], 200, "{followed}");
    assert_eq!(followed["body_base64"], base64(br#"{"access_token":"t"}"#));
    assert_eq!(target.paths(), ["/to-token", "/token"]);

    // A 303 turns the POST into a bodiless GET.
    let posted = call(
        &s,
        json!({"label": "hop303", "method": "POST", "body": "a=1"}),
    );
    assert_eq!(posted["status_code"], 200, "{posted}");
    let seen = target.seen();
    let last = seen.last().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("GET", "/token")
    );
    assert!(last.body.is_empty());

    // Anywhere else: refused with the reason, and not called.
    let before = target.seen().len();
    let away = refused(&s, json!({"label": "away", "method": "GET"}));
    assert!(
        away.contains("label away: redirect blocked: path /not-listed"),
        "{away}"
    );
    let query = refused(&s, json!({"label": "query", "method": "GET"}));
    assert!(query.contains("redirect blocked: the query"), "{query}");
    assert!(!query.contains("extra=1"), "{query}");
    let https = refused(&s, json!({"label": "https", "method": "GET"}));
    assert!(
        https.contains("redirect blocked: scheme mismatch (allowlisted http, redirected to https)"),
        "{https}"
    );
    assert_eq!(
        target.paths()[before..],
        ["/to-away", "/to-query", "/to-https"],
        "no refused redirect was followed"
    );

    // Over the limit: refused; within it, followed.
    let over = refused(
        &s,
        json!({"label": "chain", "method": "GET", "max_redirects": 1}),
    );
    assert!(over.contains("redirect limit exceeded (1)"), "{over}");
    let within = call(
        &s,
        json!({"label": "chain", "method": "GET", "max_redirects": 2}),
    );
    assert_eq!(within["status_code"], 200, "{within}");

    // Not following: the redirect itself is the answer.
    let kept = call(
        &s,
        json!({"label": "away", "method": "GET", "follow_redirects": false}),
    );
    assert_eq!(kept["status_code"], 302, "{kept}");
    assert_eq!(kept["headers"]["Location"], json!(["/not-listed"]));
    assert!(!target.paths().contains(&"/not-listed".to_string()));
}

#[test]
fn a_call_ends_at_its_timeout_and_a_unix_socket_target_is_dialled_by_path() {
    let target = Target::start();
    let dir = TempDir::new("harpoon-unix");
    let socket = dir.path().join("idp.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind the socket");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let _unix = Server::start_unix(listener, socket.clone(), Limits::default(), move |req| {
        record
            .lock()
            .unwrap()
            .push((req.target.clone(), req.header("Host").map(str::to_string)));
        Response::new(200, "over the socket")
    })
    .expect("serve the socket");
    let targets = format!(
        "{};label=sock,url=https://idp.internal/oauth/token,unix-socket={},desc=via socket",
        target.targets(),
        socket.display()
    );
    // An https:// URL over a Unix socket would need TLS there; plaintext keeps the test small.
    let targets = targets.replace("url=https://idp.internal", "url=http://idp.internal");
    let s = setup(&[
        ("HARPOON_TARGETS", &targets),
        ("HARPOON_ALLOW_PLAINTEXT_HTTP", "true"),
    ]);

    let started = std::time::Instant::now();
    let late = refused(
        &s,
        json!({"label": "slow", "method": "GET", "timeout_ms": 300}),
    );
    assert!(late.contains("label slow: timeout"), "{late}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let over_socket = call(&s, json!({"label": "sock", "method": "GET"}));
    assert_eq!(over_socket["status_code"], 200, "{over_socket}");
    assert_eq!(over_socket["body_base64"], base64(b"over the socket"));
    assert_eq!(
        *seen.lock().unwrap(),
        [("/oauth/token".to_string(), Some("idp.internal".to_string()))]
    );
}

#[test]
fn the_configured_redirect_ceiling_applies() {
    let target = Target::start();
    let s = with_targets(&target, &[("HARPOON_MAX_REDIRECTS", "1")]);
    let over = refused(&s, json!({"label": "chain", "method": "GET"}));
    assert!(over.contains("redirect limit exceeded (1)"), "{over}");
    let too_many = refused(
        &s,
        json!({"label": "chain", "method": "GET", "max_redirects": 2}),
    );
    assert!(too_many.contains("less than or equal to 1"), "{too_many}");
}

#[test]
fn without_targets_channel_harpoon_is_unsupported_and_never_reaches_main() {
    let s = setup(&[]);
    let answer = s.harpoon.post(&rpc_request("h-1", "tools/list", json!({})));
    assert_eq!(answer.status, 400, "{answer:#?}");
    assert!(answer.body.contains("unsupported channel"), "{answer:#?}");
    assert!(
        s.main
            .calls()
            .iter()
            .all(|c| c.rpc_id() != Some(json!("h-1"))),
        "the harpoon command reached main"
    );
}

#[test]
fn bad_targets_stop_the_client_naming_the_key() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    for (env, why) in [
        (
            vec![("HARPOON_TARGETS", "label=a,url=http://127.0.0.1:9/token")],
            "HARPOON_TARGETS: target a: key url is plaintext http://, which needs \
             --harpoon.allow-plaintext-http",
        ),
        (
            vec![(
                "HARPOON_TARGETS",
                "label=a,url=https://a.example;label=a,url=https://b.example",
            )],
            "HARPOON_TARGETS: label a is given twice",
        ),
        (
            vec![("HARPOON_TARGETS", "label=a,url=auth.example/token")],
            "HARPOON_TARGETS: target a: key url ",
        ),
        (
            vec![
                ("HARPOON_TARGETS", "label=a,url=https://a.example"),
                ("HARPOON_MAX_RESPONSE_BYTES", "102401"),
            ],
            "HARPOON_MAX_RESPONSE_BYTES: \"102401\" is not a whole number from 1 to 102400",
        ),
        (
            vec![
                ("HARPOON_TARGETS", "label=a,url=https://a.example"),
                ("HARPOON_MAX_REDIRECTS", "6"),
            ],
            "HARPOON_MAX_REDIRECTS: \"6\" is not a whole number from 0 to 5",
        ),
        (
            vec![("MCP_COMMAND", "channel=harpoon,command=/bin/cat")],
            "channel harpoon is reserved",
        ),
    ] {
        let mut builder = ClientBuilder::for_fakes(&control_plane, mcp.url());
        for (key, value) in &env {
            builder = builder.env(key, value);
        }
        let mut client = builder.spawn();
        let status = client
            .wait_exit(PROMPTLY)
            .expect("a bad setting exits at once");
        assert_eq!(status.code(), Some(2), "{env:?}: {}", client.stderr());
        assert!(
            client.stderr().contains(why),
            "{env:?}: {}",
            client.stderr()
        );
    }
    // As a flag too.
    let mut client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .arg("--harpoon.target=label=a,url=http://127.0.0.1:9/")
        .spawn();
    assert_eq!(client.wait_exit(PROMPTLY).and_then(|s| s.code()), Some(2));
    assert!(
        client
            .stderr()
            .contains("--harpoon.target: target a: key url is plaintext"),
        "{}",
        client.stderr()
    );
}

/// The channels the first poll declared: name → proc_affinity.
fn declared(control_plane: &FakeControlPlane) -> Vec<(String, Option<bool>)> {
    control_plane.wait_for_polls(1, PROMPTLY);
    let poll = control_plane
        .requests()
        .into_iter()
        .find(|r| r.path().ends_with("/poll"))
        .expect("a poll");
    let info: Value =
        serde_json::from_str(poll.header("X-Tunnel-MCP-Server-Info").expect("the header")).unwrap();
    info["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["proc_affinity"].as_bool(),
            )
        })
        .collect()
}

#[test]
fn harpoon_is_declared_with_proc_affinity_only_while_it_has_a_target() {
    let mcp = FakeMcp::start();
    let with = FakeControlPlane::start();
    let _a = ClientBuilder::for_fakes(&with, mcp.url())
        .arg("--harpoon.target=label=auth,url=https://auth.example/token")
        .spawn();
    assert_eq!(
        declared(&with),
        [
            ("main".to_string(), None),
            ("harpoon".to_string(), Some(true))
        ]
    );

    let without = FakeControlPlane::start();
    let _b = ClientBuilder::for_fakes(&without, mcp.url()).spawn();
    assert_eq!(declared(&without), [("main".to_string(), None)]);

    // A poll-channel allowlist without harpoon turns it off; with it, harpoon is polled.
    let main_only = FakeControlPlane::start();
    let _c = ClientBuilder::for_fakes(&main_only, mcp.url())
        .env(
            "HARPOON_TARGETS",
            "label=auth,url=https://auth.example/token",
        )
        .env("CONTROL_PLANE_POLL_CHANNELS", "main")
        .spawn();
    assert_eq!(declared(&main_only), [("main".to_string(), None)]);
    let both = FakeControlPlane::start();
    let _d = ClientBuilder::for_fakes(&both, mcp.url())
        .env(
            "HARPOON_TARGETS",
            "label=auth,url=https://auth.example/token",
        )
        .env("CONTROL_PLANE_POLL_CHANNELS", "main,harpoon")
        .spawn();
    assert_eq!(declared(&both).len(), 2);
    let poll = both
        .requests()
        .into_iter()
        .find(|r| r.path().ends_with("/poll"))
        .unwrap();
    assert!(
        poll.target.contains("channel=harpoon&channel=main"),
        "{}",
        poll.target
    );
}
