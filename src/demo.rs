//! `mcp-tunnel demo`: the whole system in one process on loopback.
//!
//! Starts the relay (with a tunnel and keys made up for this run), the built-in stub MCP server and
//! a tunnel client between them, then plays an MCP host: one real 2025 session (initialize →
//! tools/list → a progress-notifying tool call → another call → session end), then one stateless
//! MCP 2026-07-28 exchange (`server/discover`, a `tools/call` with `_meta` and the `Mcp-Method` /
//! `Mcp-Name` headers, and the same call with a wrong `Mcp-Name`, which the stub refuses: proof
//! that the headers crossed untouched), each crossing MCP host → relay → client → MCP server and
//! back, printing what came back. Then it keeps serving until Ctrl-C so any MCP client can be
//! pointed at the printed URL and key.

use std::ffi::OsString;
use std::io::BufReader;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::{
    self, ChannelConfig, ChannelTransport, ControlPlaneConfig, McpConfig, Opt, RunConfig, Sources,
};
use crate::dispatch::Tunnel;
use crate::http_client::{self, AgentOptions};
use crate::mcp::sse::SseReader;
use crate::net::HopNet;
use crate::relay::keys::{self, Role};
use crate::relay::tunnels::{ConnectorAuth, Registry, TunnelRecord};
use crate::relay::{self, Relay, RelayConfig};
use crate::secret::Secret;
use crate::stub::{self, StubOptions};

/// Time allowed for the client's first poll to reach the relay.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for each step of the scripted session.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest event the scripted session reads.
const MAX_EVENT: usize = 1024 * 1024;
/// The stateless revision the second part of the script speaks.
const MODERN_PROTOCOL: &str = "2026-07-28";

const LISTEN: &str = "--listen";
const LOG_LEVEL: &str = "--log.level";

pub const DEMO_OPTIONS: &[Opt] = &[
    Opt {
        flag: LISTEN,
        env: &["DEMO_LISTEN"],
        default: Some("127.0.0.1:8000"),
        help: "Relay address (loopback); if taken, a free port is used instead.",
        ..Opt::BASE
    },
    Opt {
        flag: LOG_LEVEL,
        env: &["LOG_LEVEL"],
        default: Some("warn"),
        help: "error, warn, info, debug or trace.",
        ..Opt::BASE
    },
];

pub fn help() -> String {
    let mut text = config::help_text(
        "mcp-tunnel demo: relay + tunnel client + stub MCP server on loopback, with one real MCP \
         session and one stateless MCP 2026-07-28 exchange through the tunnel",
        "mcp-tunnel demo [--once] [OPTIONS]",
        DEMO_OPTIONS,
    );
    text.push_str(
        "  --once\n      Exit after the scripted exchanges instead of serving until Ctrl-C.\n",
    );
    text
}

/// Runs the demo; returns the exit code.
pub fn main(mut args: Vec<OsString>) -> i32 {
    let before = args.len();
    args.retain(|a| a != "--once");
    let once = args.len() != before;
    let env = |name: &str| std::env::var(name).ok();
    let (listen, level) = match Sources::parse(DEMO_OPTIONS, args, &env, "demo") {
        Ok(Some(src)) => match config::parse_log_level(&src.get(LOG_LEVEL)) {
            Ok(level) => (src.get(LISTEN).value, level),
            Err(e) => return config_error(&e),
        },
        Ok(None) => {
            print!("{}", help());
            return 0;
        }
        Err(e) => return config_error(&e),
    };
    crate::logging::init(&config::LogConfig::stderr(level));
    match run(&listen, once, level) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mcp-tunnel demo: {e}");
            1
        }
    }
}

fn config_error(e: &config::ConfigError) -> i32 {
    eprintln!("mcp-tunnel demo: configuration error: {e}");
    2
}

fn run(listen: &str, once: bool, level: log::LevelFilter) -> Result<(), String> {
    let runtime_key = keys::generate(Role::Runtime);
    let connector_key = keys::generate(Role::Connector);
    let tunnel_id = keys::generate_tunnel_id();
    let registry = Registry {
        tunnels: vec![TunnelRecord {
            id: tunnel_id.clone(),
            name: "demo".into(),
            description: "mcp-tunnel demo tunnel".into(),
            runtime_key_sha256: keys::hash(runtime_key.expose()),
            connector_key_sha256: keys::hash(connector_key.expose()),
            connector_auth: ConnectorAuth::RelayKey,
            ..TunnelRecord::default()
        }],
        ..Registry::default()
    };
    let listener = TcpListener::bind(listen)
        .or_else(|_| TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("cannot listen on loopback: {e}"))?;
    let relay = Relay::new(
        RelayConfig {
            listen: listen.to_string(),
            tunnels_file: PathBuf::new(),
            tls: None,
            client_ca: None,
            client_auth_all: false,
            poll_max_wait: Duration::from_secs(25),
            connector_timeout: Duration::from_secs(60),
            connector_max_body: 4 * 1024 * 1024,
            streams: Default::default(),
            client_timeout: Duration::from_secs(60),
            queue_capacity: 256,
            max_connections: 256,
            max_connections_per_peer: usize::MAX,
            control_plane_reserve_percent: 10,
            header_timeout: Duration::from_secs(5),
            cors: Default::default(),
            public_url: None,
            store: relay::store::StoreSpec::Memory,
            store_ca: None,
            store_lease: std::time::Duration::from_secs(30),
            metrics_listen: None,
            audit_log: None,
            pid_file: None,
            drain_timeout: Duration::ZERO,
            log: config::LogConfig::stderr(level),
        },
        registry,
    );
    let relay_server = relay::serve(&relay, listener)?;
    let relay_addr = relay_server.local_addr();
    let stub_listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen on loopback: {e}"))?;
    let stub_server = stub::start(stub_listener, StubOptions::default())
        .map_err(|e| format!("cannot start the stub MCP server: {e}"))?;

    let client_cfg = RunConfig {
        secret_env_vars: Vec::new(),
        control_plane: ControlPlaneConfig {
            base_url: format!("http://{relay_addr}"),
            url_path: String::new(),
            tunnel_id: tunnel_id.clone(),
            api_key: runtime_key,
            poll_timeout: Duration::from_secs(25),
            poll_deadline_guardrail: Duration::from_secs(5),
            max_inflight: 20,
            extra_headers: Vec::new(),
            organization_id: None,
            poll_channels: Vec::new(),
            net: HopNet::direct(),
        },
        mcp: McpConfig {
            channels: vec![ChannelConfig {
                name: "main".into(),
                transport: ChannelTransport::Http {
                    url: format!("http://{}/mcp", stub_server.local_addr()),
                    net: HopNet::direct(),
                },
            }],
            max_concurrent: 10,
            max_streams: 16,
            extra_headers: Vec::new(),
            connection_max_ttl: Duration::from_secs(600),
            startup_wait_timeout: Duration::ZERO,
            discovery: Default::default(),
            harpoon: Default::default(),
        },
        drain_timeout: Duration::from_secs(5),
        log: config::LogConfig::stderr(level),
        ops: config::OpsConfig::default(),
        notices: Vec::new(),
    };
    let tunnel =
        Tunnel::new(&client_cfg).map_err(|e| format!("cannot start the tunnel client: {e}"))?;
    tunnel
        .start(client_cfg.mcp.max_concurrent)
        .map_err(|e| format!("cannot start the tunnel client: {e}"))?;
    wait_until_connected(&relay, &tunnel_id)?;

    let mcp_url = format!("http://{relay_addr}/v1/mcp/{tunnel_id}");
    println!("mcp-tunnel demo: relay, tunnel client and stub MCP server, all on loopback\n");
    println!("  MCP endpoint   {mcp_url}");
    println!(
        "  connector key  {}   (send as Authorization: Bearer <key>)\n",
        connector_key.expose()
    );
    println!("One MCP session through the tunnel (MCP host → relay → tunnel client → MCP server):");
    let host = DemoHost::new(mcp_url.clone(), connector_key.clone());
    host.session()?;
    println!(
        "\nOne stateless MCP {MODERN_PROTOCOL} exchange (no session; version in _meta, Mcp-Method/Mcp-Name headers):"
    );
    host.modern_exchange()?;

    if once {
        stop(&tunnel, relay_server, stub_server);
        return Ok(());
    }
    println!("\nTry it yourself (serving until Ctrl-C):");
    println!(
        "  curl -s {mcp_url} -H 'Authorization: Bearer {}' \\\n    \
         -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\\n    \
         -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"text\":\"hi\"}}}}}}'",
        connector_key.expose()
    );
    println!(
        "  or statelessly (MCP {MODERN_PROTOCOL}):\n  \
         curl -s {mcp_url} -H 'Authorization: Bearer {}' \\\n    \
         -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\\n    \
         -H 'MCP-Protocol-Version: {MODERN_PROTOCOL}' -H 'Mcp-Method: server/discover' \\\n    \
         -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server/discover\"}}'",
        connector_key.expose()
    );
    println!("  or point any MCP client (Streamable HTTP) at the endpoint with that bearer token.");
    crate::signals::wait_for_stop();
    stop(&tunnel, relay_server, stub_server);
    Ok(())
}

fn wait_until_connected(relay: &Relay, tunnel_id: &str) -> Result<(), String> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while !relay.client_connected(tunnel_id) {
        if Instant::now() >= deadline {
            return Err("the tunnel client did not reach the relay in time".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn stop(tunnel: &Arc<Tunnel>, relay: crate::http_server::Server, stub: crate::http_server::Server) {
    tunnel.stop();
    tunnel.drain(Duration::from_secs(5));
    relay.shutdown();
    stub.shutdown();
}

/// The scripted MCP host.
struct DemoHost {
    agent: ureq::Agent,
    url: String,
    key: Secret,
    session: std::cell::RefCell<Option<String>>,
}

/// One answer: status, session header and the JSON-RPC messages (several for an event stream).
struct Answer {
    status: u16,
    session: Option<String>,
    messages: Vec<Value>,
}

impl DemoHost {
    fn new(url: String, key: Secret) -> DemoHost {
        DemoHost {
            agent: http_client::build_agent(
                &AgentOptions {
                    max_idle_age: Duration::from_secs(30),
                    max_idle_per_host: 2,
                },
                &HopNet::direct(),
            )
            .expect("no proxy URL to reject"),
            url,
            key,
            session: std::cell::RefCell::new(None),
        }
    }

    fn session(&self) -> Result<(), String> {
        let init = self.post(
            json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
                "protocolVersion":"2025-06-18","capabilities":{},
                "clientInfo":{"name":"mcp-tunnel-demo","version":env!("CARGO_PKG_VERSION")}}}),
            &mut |_| {},
        )?;
        let result = final_result(&init, "initialize")?;
        *self.session.borrow_mut() = init.session.clone();
        println!(
            "  → initialize                    ← {} {}, protocol {}, session {}",
            result["serverInfo"]["name"].as_str().unwrap_or("?"),
            result["serverInfo"]["version"].as_str().unwrap_or("?"),
            result["protocolVersion"].as_str().unwrap_or("?"),
            init.session.as_deref().unwrap_or("(none)")
        );
        let ack = self.post(
            json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
            &mut |_| {},
        )?;
        println!("  → notifications/initialized     ← HTTP {}", ack.status);

        let list = self.post(
            json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
            &mut |_| {},
        )?;
        let tools: Vec<&str> = final_result(&list, "tools/list")?["tools"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        println!("  → tools/list                    ← {}", tools.join(", "));

        println!("  → tools/call progress");
        let progress = self.post(
            json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{
                "name":"progress","arguments":{"steps":3,"delay_ms":300},
                "_meta":{"progressToken":"demo-progress"}}}),
            &mut |note| {
                println!(
                    "                                  ← notification: progress {}/{}",
                    note["params"]["progress"], note["params"]["total"]
                )
            },
        )?;
        println!(
            "                                  ← result: {}",
            text_of(final_result(&progress, "tools/call progress")?)
        );

        let add = self.post(
            json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{
                "name":"add","arguments":{"a":2,"b":40}}}),
            &mut |_| {},
        )?;
        println!(
            "  → tools/call add 2 + 40         ← result: {}",
            text_of(final_result(&add, "tools/call add")?)
        );

        let status = self.delete()?;
        println!("  → DELETE (end session)          ← HTTP {status}");
        *self.session.borrow_mut() = None;
        Ok(())
    }

    /// The 2026-07-28 part: every request self-contained, no session.
    fn modern_exchange(&self) -> Result<(), String> {
        let discover = self.post_with(
            modern_request("discover-1", "server/discover", json!({})),
            &[
                ("MCP-Protocol-Version", MODERN_PROTOCOL),
                ("Mcp-Method", "server/discover"),
            ],
            &mut |_| {},
        )?;
        let result = final_result(&discover, "server/discover")?;
        let versions: Vec<&str> = result["supportedVersions"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "  → server/discover               ← {} {}, versions {}",
            result["serverInfo"]["name"].as_str().unwrap_or("?"),
            result["serverInfo"]["version"].as_str().unwrap_or("?"),
            versions.join(", ")
        );

        let echo = json!({"name": "echo", "arguments": {"text": "hello, stateless"}});
        let call = self.post_with(
            modern_request("call-1", "tools/call", echo.clone()),
            &[
                ("MCP-Protocol-Version", MODERN_PROTOCOL),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "echo"),
            ],
            &mut |_| {},
        )?;
        println!(
            "  → tools/call echo               ← result: {}",
            text_of(final_result(&call, "tools/call echo")?)
        );

        let wrong = self.post_with(
            modern_request("call-2", "tools/call", echo),
            &[
                ("MCP-Protocol-Version", MODERN_PROTOCOL),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "add"),
            ],
            &mut |_| {},
        )?;
        let error = wrong
            .messages
            .last()
            .and_then(|m| m.get("error"))
            .ok_or_else(|| format!("tools/call with a wrong Mcp-Name: HTTP {}", wrong.status))?;
        println!(
            "  → tools/call, Mcp-Name: add     ← HTTP {}, {}: {}",
            wrong.status,
            error["code"],
            error["message"].as_str().unwrap_or("?")
        );
        Ok(())
    }

    fn request<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let mut req = http_client::with_timeout(req, STEP_TIMEOUT)
            .header("Authorization", format!("Bearer {}", self.key.expose()))
            .header("Accept", "application/json, text/event-stream");
        if let Some(s) = self.session.borrow().as_deref() {
            req = req.header("Mcp-Session-Id", s);
        }
        req
    }

    /// POSTs one message; notifications in an event-stream answer go to `on_note` as they arrive.
    fn post(&self, message: Value, on_note: &mut dyn FnMut(&Value)) -> Result<Answer, String> {
        self.post_with(message, &[], on_note)
    }

    /// [`post`](Self::post) with extra request headers (the modern era's `Mcp-*`).
    fn post_with(
        &self,
        message: Value,
        headers: &[(&str, &str)],
        on_note: &mut dyn FnMut(&Value),
    ) -> Result<Answer, String> {
        let mut req = self
            .request(self.agent.post(&self.url))
            .header("Content-Type", "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req
            .send(message.to_string().as_str())
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let is_stream = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut body = resp.into_body();
        let mut messages = Vec::new();
        if is_stream {
            let mut events = SseReader::new(BufReader::new(body.as_reader()), MAX_EVENT);
            while let Some(event) = events.next_event().map_err(|e| format!("stream: {e}"))? {
                let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
                    continue;
                };
                if value.get("id").is_none() {
                    on_note(&value);
                }
                messages.push(value);
            }
        } else {
            let text = body
                .read_to_string()
                .map_err(|e| format!("reading the answer: {e}"))?;
            if !text.trim().is_empty() {
                messages.push(serde_json::from_str(&text).map_err(|e| format!("answer: {e}"))?);
            }
        }
        Ok(Answer {
            status,
            session,
            messages,
        })
    }

    fn delete(&self) -> Result<u16, String> {
        let resp = self
            .request(self.agent.delete(&self.url))
            .call()
            .map_err(|e| format!("request failed: {e}"))?;
        Ok(resp.status().as_u16())
    }
}

/// A 2026-07-28 request: `params` with the `_meta` that makes it self-contained.
fn modern_request(id: &str, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN_PROTOCOL,
        "io.modelcontextprotocol/clientInfo": {"name": "mcp-tunnel-demo", "version": env!("CARGO_PKG_VERSION")},
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// The `result` of the answer's final message, or an error describing what came instead.
fn final_result<'a>(answer: &'a Answer, what: &str) -> Result<&'a Value, String> {
    let last = answer
        .messages
        .iter()
        .rev()
        .find(|m| m.get("id").is_some())
        .ok_or_else(|| format!("{what}: HTTP {} without a JSON-RPC answer", answer.status))?;
    last.get("result")
        .ok_or_else(|| format!("{what}: HTTP {}: {last}", answer.status))
}

/// The first text content of a tool result.
fn text_of(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or("(no text)")
        .to_string()
}
