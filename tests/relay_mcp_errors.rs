//! End-to-end tests of the relay's public MCP endpoint as MCP hosts of both eras and browsers
//! meet it (issue 13): every relay-made error is a JSON-RPC error object, 401s follow RFC 6750,
//! GET/DELETE follow the era, a tunnel added to a running relay works on its first request,
//! CORS for listed origins only, a trailing slash is the same endpoint, and the 2026-07-28
//! request headers reach the tunnel command untouched. The real relay binary on loopback; the
//! test plays host (raw HTTP, so every header and method is under its control) and tunnel
//! client.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::http_wire::{Reply, read_reply};
use support::{
    PROMPTLY, Poller, Relay, RelayBuilder, TempDir, Tunnel, add_tunnel, let_time_pass,
    request_id_of, result_payload, rpc_request, shard_token_of,
};

/// A well-formed tunnel id no tunnels file of these tests holds.
const UNKNOWN_ID: &str = "tunnel_00000000000000000000000000000000";

const ORIGIN: &str = "http://localhost:6274";

/// One relay with one tunnel (its directory kept alive as long as the relay).
struct Setup {
    relay: Relay,
    tunnel: Tunnel,
    dir: TempDir,
}

impl Setup {
    fn start(options: &[(&str, &str)]) -> Setup {
        let dir = TempDir::new("relay-mcp");
        let tunnel = add_tunnel(&dir.tunnels_file(), "mcp-errors");
        let mut builder = RelayBuilder::new(&dir.tunnels_file());
        for (flag, value) in options {
            builder = builder.option(flag, value);
        }
        Setup {
            relay: builder.start(),
            tunnel,
            dir,
        }
    }

    fn mcp_path(&self) -> String {
        format!("/v1/mcp/{}", self.tunnel.id)
    }

    fn key(&self) -> String {
        format!("Bearer {}", self.tunnel.connector_key)
    }

    fn poller(&self) -> Poller {
        Poller::new(
            &self.relay,
            &self.tunnel.id,
            &self.tunnel.runtime_key,
            "mcp-errors-client",
        )
    }

    /// `127.0.0.1:PORT`.
    fn addr(&self) -> String {
        let url = self.relay.base_url();
        url.strip_prefix("http://").expect("plain HTTP").to_string()
    }

    /// A request without the connector key.
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        send(&self.addr(), method, path, headers, body)
    }

    /// A request with the connector key plus `headers`.
    fn keyed(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let key = self.key();
        let mut all = vec![("Authorization", key.as_str())];
        all.extend_from_slice(headers);
        self.send(method, path, &all, body)
    }

    /// [`Setup::keyed`] on its own thread, for requests that wait while the test plays the
    /// tunnel client. Bounded: every read has the socket timeout.
    fn in_background(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> thread::JoinHandle<Reply> {
        let (addr, method, path) = (self.addr(), method.to_string(), path.to_string());
        let mut all = vec![("Authorization".to_string(), self.key())];
        all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        thread::spawn(move || {
            let headers: Vec<(&str, &str)> =
                all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            send(&addr, &method, &path, &headers, &body)
        })
    }
}

/// One raw HTTP/1.1 exchange on a fresh connection (closed after it).
fn send(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect to the relay");
    stream.set_read_timeout(Some(PROMPTLY)).unwrap();
    stream.set_write_timeout(Some(PROMPTLY)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    read_reply(&mut stream, &mut Vec::new())
}

fn ping(id: impl Into<Value>) -> Vec<u8> {
    rpc_request(id, "ping", json!({})).to_string().into_bytes()
}

/// `reply` is the relay's JSON-RPC error `rpc_code` / `code` for the request `id`, with `status`.
fn assert_rpc_error(reply: &Reply, status: u16, rpc_code: i64, code: &str, id: Value) -> Value {
    let shown = || format!("{} {:?} {}", reply.status, reply.headers, reply.text());
    assert_eq!(reply.status, status, "{}", shown());
    assert!(
        reply
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{}",
        shown()
    );
    let body: Value = serde_json::from_slice(&reply.body).unwrap_or_else(|_| panic!("{}", shown()));
    assert_eq!(body["jsonrpc"], "2.0", "{}", shown());
    assert_eq!(body["id"], id, "{}", shown());
    assert_eq!(body["error"]["code"], rpc_code, "{}", shown());
    assert_eq!(body["error"]["data"]["code"], code, "{}", shown());
    for text in [&body["error"]["message"], &body["error"]["data"]["fix"]] {
        assert!(text.as_str().is_some_and(|t| t.len() > 10), "{}", shown());
    }
    body
}

fn has_cors_headers(reply: &Reply) -> bool {
    reply
        .headers
        .iter()
        .any(|(n, _)| n.to_ascii_lowercase().starts_with("access-control-"))
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn every_relay_error_on_the_mcp_endpoint_is_a_json_rpc_error_object() {
    let setup = Setup::start(&[
        ("--connector.timeout", "2s"),
        ("--connector.max-body", "1000"),
        ("--queue-capacity", "1"),
    ]);
    let path = setup.mcp_path();

    // 401: no credentials at all, so the challenge is the bare realm (RFC 6750 §3.1).
    let missing = setup.send("POST", &path, &[], &ping(1));
    let body = assert_rpc_error(&missing, 401, -32080, "invalid_connector_key", Value::Null);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer")
    );
    assert!(
        body["error"]["data"]["fix"]
            .as_str()
            .unwrap()
            .contains("no OAuth")
    );
    assert_eq!(
        missing.header("WWW-Authenticate"),
        Some(r#"Bearer realm="mcp-tunnel""#)
    );
    let basic = setup.send("POST", &path, &[("Authorization", "Basic eDp5")], &ping(1));
    assert_rpc_error(&basic, 401, -32080, "invalid_connector_key", Value::Null);
    assert_eq!(
        basic.header("WWW-Authenticate"),
        Some(r#"Bearer realm="mcp-tunnel""#)
    );
    // A wrong token: invalid_token, with a description.
    let wrong = setup.send(
        "POST",
        &path,
        &[("Authorization", "Bearer mcpt_cn_wrong")],
        &ping(1),
    );
    assert_rpc_error(&wrong, 401, -32080, "invalid_connector_key", Value::Null);
    let challenge = wrong.header("WWW-Authenticate").unwrap();
    assert!(
        challenge.starts_with(
            r#"Bearer realm="mcp-tunnel", error="invalid_token", error_description=""#
        ) && challenge.ends_with('"'),
        "{challenge}"
    );

    let unknown = setup.keyed("POST", &format!("/v1/mcp/{UNKNOWN_ID}"), &[], &ping(1));
    assert_rpc_error(&unknown, 404, -32082, "tunnel_not_found", Value::Null);
    let deeper = setup.keyed("POST", &format!("{path}/main/extra"), &[], &ping(1));
    assert_rpc_error(&deeper, 404, -32083, "not_found", Value::Null);
    let channel = setup.keyed("POST", &format!("{path}/bad.channel"), &[], &ping(1));
    assert_rpc_error(&channel, 400, -32084, "invalid_channel_format", Value::Null);
    // Refused from its Content-Length, before the body is read: no id to give.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":9,"method":"ping","params":{{"p":"{}"}}}}"#,
        "x".repeat(1000)
    );
    let too_big = setup.keyed("POST", &path, &[], big.as_bytes());
    assert_rpc_error(&too_big, 413, -32086, "request_body_too_large", Value::Null);

    // 503 before any client polled: the request's own id, and what to do.
    let not_connected = setup.keyed("POST", &path, &[], &ping("first-call"));
    let body = assert_rpc_error(
        &not_connected,
        503,
        -32088,
        "tunnel_client_not_connected",
        json!("first-call"),
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("start mcp-tunnel run")
    );

    let client = setup.poller();
    client.register_as_connected();
    let not_json = setup.keyed("POST", &path, &[], b"{not json");
    assert_rpc_error(&not_json, 400, -32700, "invalid_json_payload", Value::Null);
    let batch = format!("[{}]", String::from_utf8(ping(3)).unwrap());
    let batch = setup.keyed("POST", &path, &[], batch.as_bytes());
    assert_rpc_error(&batch, 400, -32600, "invalid_json_payload", Value::Null);
    let no_method = setup.keyed("POST", &path, &[], br#"{"jsonrpc":"2.0","id":4}"#);
    assert_rpc_error(&no_method, 400, -32600, "invalid_json_payload", Value::Null);

    // Queue full (capacity 1, nobody takes): 503 with Retry-After; the queued one ends in 504.
    let queued = setup.in_background("POST", &path, &[], ping("queued"));
    setup.relay.wait_until_queued(&setup.tunnel.id, 1);
    let full = setup.keyed("POST", &path, &[], &ping(42));
    assert_rpc_error(&full, 503, -32089, "tunnel_queue_full", json!(42));
    assert_eq!(full.header("Retry-After"), Some("1"));
    let timed_out = queued.join().unwrap();
    assert_rpc_error(
        &timed_out,
        504,
        -32090,
        "tunnel_response_timeout",
        json!("queued"),
    );

    // The control plane keeps the contract's shape, shared with the official client.
    let refused =
        Poller::new(&setup.relay, &setup.tunnel.id, "mcpt_rt_wrong", "intruder").poll(1, 1);
    assert_eq!(refused.status, 401, "{refused:#?}");
    let body = refused.json();
    assert_eq!(body["error"]["code"], "tunnel_use_forbidden", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(body.get("jsonrpc").is_none(), "{body}");
}

/// Raw bytes on a fresh connection, one reply read back.
fn send_raw(addr: &str, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect to the relay");
    stream.set_read_timeout(Some(PROMPTLY)).unwrap();
    stream.set_write_timeout(Some(PROMPTLY)).unwrap();
    stream.write_all(raw).unwrap();
    read_reply(&mut stream, &mut Vec::new())
}

#[test]
fn the_http_servers_own_refusals_on_the_mcp_endpoint_are_json_rpc_errors_too() {
    let setup = Setup::start(&[("--connector.max-body", "100")]);
    let (addr, path, key) = (setup.addr(), setup.mcp_path(), setup.key());
    let head = |extra: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {key}\r\n{extra}\r\n")
    };

    // A chunked body has no length to refuse up front: the server's 413 as chunks arrive.
    let mut chunked = head("Transfer-Encoding: chunked\r\n").into_bytes();
    chunked.extend_from_slice(format!("c8\r\n{}\r\n0\r\n\r\n", "x".repeat(200)).as_bytes());
    let too_large = send_raw(&addr, &chunked);
    assert_rpc_error(
        &too_large,
        413,
        -32086,
        "request_body_too_large",
        Value::Null,
    );

    // Both framings at once: the server's 400, before the relay ever sees the request.
    let both = head("Content-Length: 2\r\nTransfer-Encoding: chunked\r\n") + "{}";
    let malformed = send_raw(&addr, both.as_bytes());
    assert_rpc_error(
        &malformed,
        400,
        -32092,
        "malformed_http_request",
        Value::Null,
    );

    // A transfer coding the server does not speak.
    let gzip = head("Transfer-Encoding: gzip, chunked\r\n") + "0\r\n\r\n";
    let unsupported = send_raw(&addr, gzip.as_bytes());
    assert_rpc_error(&unsupported, 501, -32095, "not_implemented", Value::Null);

    // A head over the header limit is refused before it is whole; its request line names the
    // endpoint, so the answer still takes the endpoint's shape.
    let huge = head(&format!("X-Padding: {}\r\n", "p".repeat(20 * 1024)));
    let oversized = send_raw(&addr, huge.as_bytes());
    assert_rpc_error(
        &oversized,
        431,
        -32094,
        "request_header_fields_too_large",
        Value::Null,
    );

    // Other routes keep the server's plain shape: the control plane's is the contract's.
    let control = format!(
        "POST /v1/tunnels/x HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{{}}"
    );
    let plain = send_raw(&addr, control.as_bytes());
    assert_eq!(plain.status, 400, "{}", plain.text());
    let body: Value = serde_json::from_slice(&plain.body).unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert!(body.get("jsonrpc").is_none(), "{body}");
}

// ---------------------------------------------------------------------------------------------
// GET and DELETE by era

#[test]
fn get_and_delete_follow_the_era_of_the_host() {
    let setup = Setup::start(&[]);
    let path = setup.mcp_path();
    // A stateless (2026-07-28) host has no session: only POST means something.
    for method in ["GET", "DELETE"] {
        let refused = setup.keyed(method, &path, &[], b"");
        assert_rpc_error(&refused, 405, -32085, "method_not_allowed", Value::Null);
        assert_eq!(refused.header("Allow"), Some("POST"), "{method}");
    }
    // A 2025 host asking for the standalone stream: still no stream, DELETE is allowed.
    let stream = setup.keyed("GET", &path, &[("Mcp-Session-Id", "s-1")], b"");
    assert_rpc_error(&stream, 405, -32085, "method_not_allowed", Value::Null);
    assert_eq!(stream.header("Allow"), Some("POST, DELETE"));

    // DELETE with a session ends it through the tunnel, as before.
    let client = setup.poller();
    client.register_as_connected();
    let ending = setup.in_background("DELETE", &path, &[("Mcp-Session-Id", "s-1")], Vec::new());
    let command = client.take_one_command();
    assert_eq!(
        command["command_type"], "session_termination",
        "{command:#}"
    );
    let session = header_of_command(&command, "mcp-session-id");
    assert_eq!(session, [json!("s-1")], "{command:#}");
    let payload = json!({
        "request_id": request_id_of(&command),
        "channel": command["channel"],
        "resp_code": 200,
        "resp_type": "session_termination_response",
    });
    let posted = client.post_response(shard_token_of(&command), &payload);
    assert_eq!(posted.status, 200, "{posted:#?}");
    assert_eq!(ending.join().unwrap().status, 200);
}

/// The values of a command header, its name matched case-insensitively.
fn header_of_command(command: &Value, name: &str) -> Vec<Value> {
    command["headers"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.as_array().cloned().unwrap_or_default())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Headers of the 2026-07-28 protocol, and the trailing slash

#[test]
fn mcp_request_headers_reach_the_command_untouched() {
    let setup = Setup::start(&[]);
    let client = setup.poller();
    client.register_as_connected();
    let call = rpc_request(
        "modern-1",
        "tools/call",
        json!({"name": "weather", "arguments": {"city": "Paris"}, "_meta": {}}),
    );
    let sent = [
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", "weather"),
        ("Mcp-Param-City", "Paris"),
    ];
    let waiting = setup.in_background(
        "POST",
        &setup.mcp_path(),
        &sent,
        call.to_string().into_bytes(),
    );
    let command = client.take_one_command();
    for (name, value) in sent {
        assert_eq!(
            header_of_command(&command, name),
            [json!(value)],
            "{name}: {command:#}"
        );
    }
    assert_eq!(command["jsonrpc"], call);
    let answered = client.answer_with_result(&command, json!({"content": []}));
    assert_eq!(answered.status, 200, "{answered:#?}");
    assert_eq!(waiting.join().unwrap().status, 200);
}

#[test]
fn a_trailing_slash_names_the_same_endpoint() {
    let setup = Setup::start(&[]);
    let client = setup.poller();
    client.register_as_connected();
    let base = setup.mcp_path();
    for (path, channel) in [
        (format!("{base}/"), "main"),
        (format!("{base}/main/"), "main"),
        (format!("{base}/other/"), "other"),
    ] {
        let waiting = setup.in_background("POST", &path, &[], ping(path.clone()));
        let command = client.take_one_command();
        assert_eq!(command["channel"], channel, "{path}: {command:#}");
        assert_eq!(client.answer_with_result(&command, json!({})).status, 200);
        let reply = waiting.join().unwrap();
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
}

// ---------------------------------------------------------------------------------------------
// A tunnel added to a running relay

#[test]
fn a_tunnel_added_to_a_running_relay_works_on_its_first_request() {
    let setup = Setup::start(&[]);
    let file = setup.dir.tunnels_file();

    // The first request of each new tunnel, of each kind, right after `tunnel add`: no retry.
    let metadata_tunnel = add_tunnel(&file, "added-for-metadata");
    let added = Instant::now();
    let poller = Poller::new(
        &setup.relay,
        &metadata_tunnel.id,
        &metadata_tunnel.runtime_key,
        "new-client",
    );
    let metadata = poller.metadata();
    assert_eq!(metadata.status, 200, "{metadata:#?}");
    assert_eq!(metadata.json()["name"], "added-for-metadata");
    assert!(
        added.elapsed() < Duration::from_secs(1),
        "{:?}",
        added.elapsed()
    );

    // Within the rate limit of the previous miss: the file changed, so it is read again (by the
    // watch, or on the miss).
    let poll_tunnel = add_tunnel(&file, "added-for-poll");
    let added = Instant::now();
    let poll = Poller::new(&setup.relay, &poll_tunnel.id, &poll_tunnel.runtime_key, "c").poll(1, 1);
    assert_eq!(poll.status, 204, "{poll:#?}");
    assert!(
        added.elapsed() < Duration::from_secs(1),
        "{:?}",
        added.elapsed()
    );

    let host_tunnel = add_tunnel(&file, "added-for-host");
    let added = Instant::now();
    let key = format!("Bearer {}", host_tunnel.connector_key);
    let call = setup.send(
        "POST",
        &format!("/v1/mcp/{}", host_tunnel.id),
        &[("Authorization", &key)],
        &ping("first"),
    );
    // Found, authorised, and refused only because no client polls it yet.
    assert_rpc_error(
        &call,
        503,
        -32088,
        "tunnel_client_not_connected",
        json!("first"),
    );
    assert!(
        added.elapsed() < Duration::from_secs(1),
        "{:?}",
        added.elapsed()
    );
    // Whichever saw the new tunnel first: the directory watch (inotify, usually at once), or the
    // request naming an id the relay did not know yet (the rate limit of that path is tested
    // below with made-up ids, which no watch can serve).
    let log = setup.relay.output();
    assert!(
        log.contains("tunnels reloaded (unknown tunnel id)")
            || log.contains("tunnels reloaded (tunnels file changed)"),
        "{log}"
    );
}

#[test]
fn unknown_tunnel_ids_reread_an_unchanged_file_at_most_four_times_a_second() {
    let setup = Setup::start(&[]);
    let reloads = || {
        setup
            .relay
            .output()
            .matches("tunnels reloaded (unknown tunnel id)")
            .count()
    };
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(600) {
        let unknown = setup.keyed("POST", &format!("/v1/mcp/{UNKNOWN_ID}"), &[], &ping(sent));
        assert_rpc_error(&unknown, 404, -32082, "tunnel_not_found", Value::Null);
        sent += 1;
    }
    let elapsed = started.elapsed();
    // Reading the relay's log lags its writes; the last request's reload is logged before its
    // answer, so every reload so far is in the log once the stderr reader caught up.
    let deadline = Instant::now() + PROMPTLY;
    while reloads() == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let count = reloads();
    let bound = (elapsed.as_millis() / 250) as usize + 1;
    assert!(sent > bound, "too few requests ({sent}) to test the bound");
    assert!(
        (1..=bound).contains(&count),
        "{count} reloads for {sent} requests in {elapsed:?}"
    );
    // Ids that cannot be tunnel ids read nothing at all. (Past the interval first, and the
    // log caught up.)
    let_time_pass(Duration::from_millis(300));
    let before = reloads();
    let junk = setup.keyed("POST", "/v1/mcp/not-an-id", &[], &ping(1));
    assert_rpc_error(&junk, 404, -32082, "tunnel_not_found", Value::Null);
    let again = setup.keyed("POST", &format!("/v1/mcp/{UNKNOWN_ID}"), &[], &ping(2));
    assert_rpc_error(&again, 404, -32082, "tunnel_not_found", Value::Null);
    let deadline = Instant::now() + PROMPTLY;
    while reloads() == before && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let_time_pass(Duration::from_millis(100));
    assert_eq!(
        reloads(),
        before + 1,
        "only the well-formed id re-read the file"
    );
}

// ---------------------------------------------------------------------------------------------
// Browsers (CORS)

/// A preflight from `origin` asking to send `headers`, with no key (browsers send none).
fn preflight(setup: &Setup, path: &str, origin: &str, headers: &str) -> Reply {
    setup.send(
        "OPTIONS",
        path,
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", headers),
        ],
        b"",
    )
}

#[test]
fn listed_origins_get_preflights_answered_before_auth_and_cors_headers_on_every_answer() {
    let setup = Setup::start(&[(
        "--cors-origin",
        "http://LOCALHOST:6274, https://inspector.example.com",
    )]);
    let path = setup.mcp_path();
    let asked = "authorization, content-type, mcp-protocol-version, mcp-method, mcp-name, \
                 mcp-param-city, mcp-session-id, last-event-id";
    for target in [path.clone(), format!("{path}/"), format!("{path}/main")] {
        let ok = preflight(&setup, &target, ORIGIN, asked);
        assert_eq!(ok.status, 204, "{target}: {} {:?}", ok.status, ok.headers);
        assert_eq!(ok.header("Access-Control-Allow-Origin"), Some(ORIGIN));
        assert_eq!(ok.header("Vary"), Some("Origin"));
        let methods = ok.header("Access-Control-Allow-Methods").unwrap();
        for method in ["POST", "GET", "DELETE", "OPTIONS"] {
            assert!(methods.contains(method), "{methods}");
        }
        assert_eq!(ok.header("Access-Control-Allow-Headers"), Some(asked));
        assert!(
            ok.header("Access-Control-Max-Age")
                .is_some_and(|a| a.parse::<u32>().is_ok())
        );
    }
    // A header outside the list is not echoed: the browser then refuses to send it.
    let odd = preflight(&setup, &path, ORIGIN, "authorization, x-not-mcp");
    let allowed = odd
        .header("Access-Control-Allow-Headers")
        .unwrap()
        .to_string();
    assert!(
        !allowed.contains("x-not-mcp") && allowed.contains("mcp-session-id"),
        "{allowed}"
    );
    // An unlisted origin: 403 with the reason, and nothing a browser would accept.
    let refused = preflight(&setup, &path, "http://evil.example", "authorization");
    assert_rpc_error(
        &refused,
        403,
        -32091,
        "cors_origin_not_allowed",
        Value::Null,
    );
    assert!(!has_cors_headers(&refused), "{:?}", refused.headers);

    // Actual answers to a listed origin can be read by the page: a 401 and its challenge…
    let origin = [("Origin", ORIGIN)];
    let unauthorised = setup.send("POST", &path, &origin, &ping(1));
    assert_rpc_error(
        &unauthorised,
        401,
        -32080,
        "invalid_connector_key",
        Value::Null,
    );
    assert_eq!(
        unauthorised.header("Access-Control-Allow-Origin"),
        Some(ORIGIN)
    );
    let exposed = unauthorised
        .header("Access-Control-Expose-Headers")
        .unwrap();
    for name in ["Mcp-Session-Id", "MCP-Protocol-Version", "WWW-Authenticate"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    // …a 405 (OPTIONS is one more allowed method now)…
    let get = setup.keyed("GET", &path, &origin, b"");
    assert_eq!(get.status, 405);
    assert_eq!(get.header("Allow"), Some("POST, OPTIONS"));
    assert_eq!(get.header("Access-Control-Allow-Origin"), Some(ORIGIN));
    // …and a served call with the MCP server's session id, whose own CORS header is replaced.
    let client = setup.poller();
    client.register_as_connected();
    let waiting = setup.in_background("POST", &path, &origin, ping("browser"));
    let command = client.take_one_command();
    let mut payload = result_payload(&command, json!({}));
    payload["resp_headers"]["Mcp-Session-Id"] = json!(["s-browser"]);
    payload["resp_headers"]["Access-Control-Expose-Headers"] = json!(["X-Upstream"]);
    assert_eq!(
        client
            .post_response(shard_token_of(&command), &payload)
            .status,
        200
    );
    let served = waiting.join().unwrap();
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.header("Mcp-Session-Id"), Some("s-browser"));
    assert_eq!(served.header("Access-Control-Allow-Origin"), Some(ORIGIN));
    let exposed: Vec<&str> = served
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Access-Control-Expose-Headers"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(exposed.len(), 1, "{exposed:?}");
    assert!(exposed[0].contains("Mcp-Session-Id"), "{exposed:?}");

    // Another origin's actual requests are answered but get no CORS headers (only Vary).
    let other = setup.keyed("GET", &path, &[("Origin", "http://evil.example")], b"");
    assert_eq!(other.status, 405);
    assert_eq!(other.header("Access-Control-Allow-Origin"), None);
    assert_eq!(other.header("Vary"), Some("Origin"));
}

#[test]
fn without_cors_origins_no_cors_header_is_ever_sent() {
    let setup = Setup::start(&[]);
    let path = setup.mcp_path();
    let refused = preflight(&setup, &path, ORIGIN, "authorization");
    assert_rpc_error(
        &refused,
        403,
        -32091,
        "cors_origin_not_allowed",
        Value::Null,
    );
    assert!(!has_cors_headers(&refused), "{:?}", refused.headers);
    let origin = [("Origin", ORIGIN)];
    for reply in [
        setup.send("POST", &path, &origin, &ping(1)),
        setup.keyed("POST", &path, &origin, &ping(2)),
        setup.keyed("GET", &path, &origin, b""),
    ] {
        assert!(reply.status >= 400, "{}", reply.status);
        assert!(!has_cors_headers(&reply), "{:?}", reply.headers);
        assert_eq!(reply.header("Vary"), None);
    }
    // A plain OPTIONS (no preflight) learns the methods, without a key.
    let plain = setup.send("OPTIONS", &path, &[], b"");
    assert_eq!(plain.status, 204);
    assert_eq!(plain.header("Allow"), Some("POST, DELETE, OPTIONS"));
}
