//! End-to-end tests of corporate networking (issue 5) with the real binary: private CAs, mutual
//! TLS on both hops (and the relay's side of it), HTTP CONNECT proxies with Basic auth and their
//! precedence, `NO_PROXY`, and MCP servers behind Unix sockets.
//!
//! Certificates are generated at test time with `rcgen`: a private CA with a server certificate
//! for `localhost` and a client certificate, a second, unrelated CA with its own client
//! certificate, and a stray key that belongs to no certificate. Proxy tests run a real
//! `tinyproxy` on loopback (installed by `make test`'s set-up) and read its log to see which
//! `CONNECT`s went through it; without `tinyproxy` on `PATH` they print "skipped" and pass.
//!
//! Everything binds or dials loopback only, every wait is bounded, and every process a test
//! starts (client, relay, stub, tinyproxy) is killed when its handle drops.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mcp_tunnel::http_server::{Limits, Request, Response, Server};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use support::{
    API_KEY, ClientBuilder, Command, FakeControlPlane, FakeMcp, PROMPTLY, PostedResponse,
    RelayBuilder, Stub, TempDir, Tunnel, TunnelClient, add_tunnel, dead_loopback_url, rpc_request,
    tool_call, tunnel_client,
};

/// Pause between attempts of a bounded polling loop (a log file, a process start).
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// What the TLS fake MCP server answers every request with.
const TLS_REPLY: &str = "served over TLS";

/// What the stub MCP server is asked to echo through the tunnel.
const ECHO_TEXT: &str = "hello through the corporate network";

/// Proxy credentials; the password must never show in a log.
const PROXY_USER: &str = "alice";
const PROXY_PASSWORD: &str = "s3cret";
/// `base64("alice:s3cret")`, as it would appear in a logged `Proxy-Authorization` header.
const PROXY_CREDENTIALS_BASE64: &str = "YWxpY2U6czNjcmV0";

// ---------------------------------------------------------------------------------------------
// Certificates

/// A private PKI written to a temporary directory as PEM files.
struct Pki {
    dir: TempDir,
}

/// File names inside the PKI directory.
const CA: &str = "ca.pem";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key";
const CLIENT_CERT: &str = "client.pem";
const CLIENT_KEY: &str = "client.key";
const OTHER_CA: &str = "other-ca.pem";
const OTHER_CLIENT_CERT: &str = "other-client.pem";
const OTHER_CLIENT_KEY: &str = "other-client.key";
/// A key that belongs to no certificate here.
const STRAY_KEY: &str = "stray.key";
/// A text file that is not PEM at all.
const NOT_PEM: &str = "not-pem.txt";

impl Pki {
    fn generate() -> Pki {
        let dir = TempDir::new("pki");
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("write a PEM file");
        };

        let ca = certificate_authority("mcp-tunnel test private CA");
        write(CA, ca.pem());
        let (server, server_key) = leaf(&ca, "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        write(SERVER_CERT, server);
        write(SERVER_KEY, server_key);
        let (client, client_key) = leaf(&ca, "tunnel-client", ExtendedKeyUsagePurpose::ClientAuth);
        write(CLIENT_CERT, client);
        write(CLIENT_KEY, client_key);

        let other = certificate_authority("an unrelated CA");
        write(OTHER_CA, other.pem());
        let (other_client, other_key) =
            leaf(&other, "tunnel-client", ExtendedKeyUsagePurpose::ClientAuth);
        write(OTHER_CLIENT_CERT, other_client);
        write(OTHER_CLIENT_KEY, other_key);

        let stray = KeyPair::generate().expect("generate a key");
        write(STRAY_KEY, stray.serialize_pem());
        write(NOT_PEM, "this is not a certificate\n".to_string());
        Pki { dir }
    }

    /// The path of one of the files above, as a string for the environment.
    fn path(&self, name: &str) -> String {
        path_string(&self.dir.path().join(name))
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("generate a CA key");
    CertifiedIssuer::self_signed(params, key).expect("self-sign the CA")
}

/// A certificate for `name` (a DNS name only: an `https://127.0.0.1` URL does not match it)
/// signed by `issuer`; returns the certificate and key as PEM.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(vec![name.to_string()]).expect("leaf parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("generate a leaf key");
    let cert = params.signed_by(&key, issuer).expect("sign the leaf");
    (cert.pem(), key.serialize_pem())
}

fn path_string(path: &Path) -> String {
    path.to_str()
        .expect("temporary paths are UTF-8")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// A TLS fake MCP server

/// What the TLS fake saw of one request.
#[derive(Clone, Debug)]
struct TlsCall {
    host: Option<String>,
    client_cert_verified: bool,
}

/// A Streamable HTTP MCP server over HTTPS with a certificate for `localhost` from the private
/// CA, optionally requiring a client certificate from that CA. Every JSON-RPC request gets a text
/// result, [`TLS_REPLY`].
struct TlsMcp {
    _server: Server,
    port: u16,
    calls: Arc<Mutex<Vec<TlsCall>>>,
}

impl TlsMcp {
    fn start(pki: &Pki, require_client_cert: bool) -> TlsMcp {
        let config = if require_client_cert {
            requiring_client_certs(pki)
        } else {
            mcp_tunnel::tls::server_config(
                Path::new(&pki.path(SERVER_CERT)),
                Path::new(&pki.path(SERVER_KEY)),
                None,
            )
            .expect("a TLS server configuration")
        };
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&calls);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the TLS fake MCP server");
        let server = Server::start(listener, Some(config), Limits::default(), move |request| {
            serve_tls_mcp(&recorded, request)
        })
        .expect("start the TLS fake MCP server");
        let port = server.local_addr().port();
        TlsMcp {
            _server: server,
            port,
            calls,
        }
    }

    /// `https://localhost:PORT/mcp`: the name its certificate carries.
    fn url(&self) -> String {
        format!("https://localhost:{}/mcp", self.port)
    }

    /// The same server under its IP address, which its certificate does not name.
    fn ip_url(&self) -> String {
        format!("https://127.0.0.1:{}/mcp", self.port)
    }

    fn calls(&self) -> Vec<TlsCall> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A server configuration that refuses the handshake unless the client presents a certificate
/// signed by the private CA.
fn requiring_client_certs(pki: &Pki) -> Arc<rustls::ServerConfig> {
    let provider = mcp_tunnel::tls::provider;
    let mut roots = rustls::RootCertStore::empty();
    for cert in mcp_tunnel::tls::load_certs(Path::new(&pki.path(CA))).expect("the CA") {
        roots.add(cert).expect("a usable CA certificate");
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("a client verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            mcp_tunnel::tls::load_certs(Path::new(&pki.path(SERVER_CERT))).expect("server cert"),
            mcp_tunnel::tls::load_key(Path::new(&pki.path(SERVER_KEY))).expect("server key"),
        )
        .expect("a TLS server configuration");
    Arc::new(config)
}

fn serve_tls_mcp(calls: &Mutex<Vec<TlsCall>>, request: Request) -> Response {
    // The client's start-up OAuth discovery is not an MCP call.
    if support::is_oauth_discovery(&request) {
        return Response::new(404, Vec::new());
    }
    calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(TlsCall {
            host: request.header("Host").map(str::to_string),
            client_cert_verified: request.client_cert_verified,
        });
    let message: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    match message.get("id") {
        Some(id) => Response::json(
            200,
            json!({"jsonrpc": "2.0", "id": id,
                   "result": {"content": [{"type": "text", "text": TLS_REPLY}]}})
            .to_string(),
        ),
        None => Response::new(202, Vec::new()),
    }
}

// ---------------------------------------------------------------------------------------------
// The fake control plane's side

/// Queues `command` and waits for its terminal response.
fn exchange(control_plane: &FakeControlPlane, command: &Command) -> PostedResponse {
    control_plane.push(command.clone());
    control_plane.wait_for_terminal_response(command.request_id(), PROMPTLY)
}

/// One `tools/call` through the tunnel, answered by the TLS fake.
fn call_through(control_plane: &FakeControlPlane, request_id: &str) -> PostedResponse {
    exchange(
        control_plane,
        &Command::jsonrpc(request_id, tool_call(request_id, "anything")),
    )
}

fn assert_tls_reply(posted: &PostedResponse) {
    assert_eq!(posted.resp_type(), "jsonrpc_response", "{posted:#?}");
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    let message = posted.resp_json().expect("an answer");
    assert_eq!(
        message["result"]["content"][0]["text"], TLS_REPLY,
        "{posted:#?}"
    );
}

/// A synthesized `-32603` whose provenance says where the call failed.
fn assert_tunnel_failure(posted: &PostedResponse, source: &str) {
    assert_refused_before_any_answer(posted);
    let failure = &posted.resp_json().expect("an answer")["error"]["data"]["tunnel_failure"];
    assert_eq!(failure["source"], source, "{posted:#?}");
}

/// A synthesized `-32603` for a call the MCP server never answered (whatever the connection
/// failure was called).
fn assert_refused_before_any_answer(posted: &PostedResponse) {
    assert_eq!(posted.resp_type(), "jsonrpc_response", "{posted:#?}");
    assert_eq!(posted.resp_code(), Some(502), "{posted:#?}");
    let message = posted.resp_json().expect("an answer");
    assert_eq!(message["error"]["code"], -32603, "{posted:#?}");
    let failure = &message["error"]["data"]["tunnel_failure"];
    assert_eq!(failure["upstream_response_received"], false, "{posted:#?}");
}

/// Like [`call_through`], with a request of about `size` bytes: the client is still writing
/// it when a server that refused the handshake has already given up on the connection.
fn call_with_large_body(
    control_plane: &FakeControlPlane,
    request_id: &str,
    size: usize,
) -> PostedResponse {
    let message = rpc_request(
        request_id,
        "tools/call",
        json!({"name": "anything", "arguments": {"pad": "x".repeat(size)}}),
    );
    exchange(control_plane, &Command::jsonrpc(request_id, message))
}

/// Runs the client to completion (it must exit promptly) and returns its exit code.
fn exit_code(client: &mut TunnelClient) -> Option<i32> {
    client
        .wait_exit(PROMPTLY)
        .expect("exits promptly instead of running")
        .code()
}

/// A valid configuration pointing at ports where nothing listens; each test adds one piece.
fn valid_config() -> ClientBuilder {
    ClientBuilder::run(&dead_loopback_url(""), API_KEY, &dead_loopback_url("/mcp"))
}

/// Asserts a start-up failure: exit code 2, a message naming one of `keys` (a variable or its
/// flag) and containing `fragment`, never a panic.
fn assert_config_error(builder: ClientBuilder, keys: &[&str], fragment: &str) {
    let mut client = builder.spawn();
    let code = exit_code(&mut client);
    let stderr = client.stderr();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        keys.iter().any(|key| stderr.contains(key)),
        "the error names one of {keys:?}: {stderr}"
    );
    assert!(
        stderr.contains(fragment),
        "the error says {fragment:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// An MCP host calling a relay (plain or TLS)

/// One answer of the relay's MCP endpoint.
#[derive(Debug)]
struct Answer {
    status: u16,
    session: Option<String>,
    content_type: String,
    body: String,
}

impl Answer {
    /// The JSON-RPC message: the body, or the last `data:` of an event stream.
    fn message(&self) -> Value {
        let text = if self.content_type.starts_with("text/event-stream") {
            self.body
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .next_back()
                .unwrap_or_default()
        } else {
            &self.body
        };
        serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("not a JSON-RPC answer ({e}): {self:#?}"))
    }

    fn error_code(&self) -> Option<String> {
        let body: Value = serde_json::from_str(&self.body).ok()?;
        // The MCP endpoint's JSON-RPC errors carry it in `error.data.code`, the control plane's
        // contract shape in `error.code`.
        body["error"]["data"]["code"]
            .as_str()
            .or_else(|| body["error"]["code"].as_str())
            .map(str::to_string)
    }

    fn is_not_connected(&self) -> bool {
        self.status == 503 && self.error_code().as_deref() == Some("tunnel_client_not_connected")
    }
}

/// An MCP host: POSTs JSON-RPC to one tunnel's MCP endpoint with its connector key.
struct McpHost {
    agent: ureq::Agent,
    url: String,
    connector_key: String,
}

impl McpHost {
    fn new(mcp_url: String, tunnel: &Tunnel, tls: Option<ureq::tls::TlsConfig>) -> McpHost {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(20)));
        if let Some(tls) = tls {
            config = config.tls_config(tls);
        }
        McpHost {
            agent: config.build().into(),
            url: mcp_url,
            connector_key: tunnel.connector_key.clone(),
        }
    }

    fn post(&self, message: &Value, session: Option<&str>) -> Answer {
        let mut request = self
            .agent
            .post(&self.url)
            .header("Authorization", format!("Bearer {}", self.connector_key))
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json");
        if let Some(session) = session {
            request = request.header("Mcp-Session-Id", session);
        }
        let response = request
            .send(message.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("the MCP host got no HTTP answer: {e}"));
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = response.status().as_u16();
        let session = header("Mcp-Session-Id");
        let content_type = header("Content-Type").unwrap_or_default();
        let body = response
            .into_body()
            .read_to_string()
            .unwrap_or_else(|e| panic!("reading the MCP answer: {e}"));
        Answer {
            status,
            session,
            content_type,
            body,
        }
    }

    /// Pings until the relay stops answering "not connected": a tunnel client has polled and
    /// the ping crossed the tunnel. Returns that answer.
    fn wait_until_client_connected(&self) -> Answer {
        let deadline = Instant::now() + PROMPTLY;
        for attempt in 0.. {
            let answer = self.post(
                &rpc_request(format!("ready-{attempt}"), "ping", json!({})),
                None,
            );
            if !answer.is_not_connected() {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "no tunnel client polled within {PROMPTLY:?}: {answer:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        unreachable!("the loop returns or panics")
    }

    /// `initialize`, then an `echo` tool call in the new session, against the stub MCP server.
    fn full_session(&self) {
        let ready = self.wait_until_client_connected();
        assert_eq!(ready.status, 200, "{ready:#?}");
        let init = self.post(
            &rpc_request(
                1,
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "net-test", "version": "0"}}),
            ),
            None,
        );
        assert_eq!(init.status, 200, "{init:#?}");
        assert_eq!(
            init.message()["result"]["protocolVersion"],
            "2025-06-18",
            "{init:#?}"
        );
        let session = init.session.clone().expect("initialize names a session");
        let echo = self.post(
            &rpc_request(
                2,
                "tools/call",
                json!({"name": "echo", "arguments": {"text": ECHO_TEXT}}),
            ),
            Some(&session),
        );
        assert_eq!(echo.status, 200, "{echo:#?}");
        let message = echo.message();
        assert_eq!(message["id"], 2, "{echo:#?}");
        assert_eq!(
            message["result"]["content"][0]["text"], ECHO_TEXT,
            "{echo:#?}"
        );
    }

    /// A request while no tunnel client serves: it must not succeed (503 not connected, or 504
    /// if it was queued and nobody answered).
    fn assert_not_served(&self) {
        let answer = self.post(&rpc_request("unserved", "ping", json!({})), None);
        assert!(
            answer.is_not_connected() || answer.status == 504,
            "a request was served although no client should be: {answer:#?}"
        );
    }
}

/// TLS settings of an MCP host or other test-side client: trusts the private CA, presents
/// `identity` (certificate, key) if given.
fn tls_trusting(pki: &Pki, identity: Option<(&str, &str)>) -> ureq::tls::TlsConfig {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    let read = |name: &str| std::fs::read(pki.path(name)).expect("read a PEM file");
    let ca = Certificate::from_pem(&read(CA)).expect("the CA certificate");
    let client_cert = identity.map(|(cert, key)| {
        let cert = Certificate::from_pem(&read(cert)).expect("a client certificate");
        let key = PrivateKey::from_pem(&read(key)).expect("a client key");
        ClientCert::new_with_certs(&[cert], key)
    });
    TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        // ureq is built without a provider of its own (rustls-no-provider).
        .unversioned_rustls_crypto_provider(mcp_tunnel::tls::provider())
        .root_certs(RootCerts::new_with_certs(&[ca]))
        .client_cert(client_cert)
        .build()
}

// ---------------------------------------------------------------------------------------------
// A relay serving HTTPS with client certificates

/// The real relay with `--tls-cert`/`--tls-key` from the private CA and `--tls-client-ca` set to
/// it. Killed when dropped.
struct TlsRelay {
    process: TunnelClient,
    port: u16,
}

impl TlsRelay {
    fn start(tunnels_file: &Path, pki: &Pki, extra: &[&str]) -> TlsRelay {
        const LISTENING: &str = "relay listening on https://127.0.0.1:";
        let mut builder = ClientBuilder::bare()
            .arg("relay")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--tunnels-file")
            .arg(&path_string(tunnels_file))
            .arg("--tls-cert")
            .arg(&pki.path(SERVER_CERT))
            .arg("--tls-key")
            .arg(&pki.path(SERVER_KEY))
            .arg("--tls-client-ca")
            .arg(&pki.path(CA))
            .env("LOG_LEVEL", "debug");
        for arg in extra {
            builder = builder.arg(arg);
        }
        let process = builder.spawn();
        assert!(
            process.wait_for_stderr(LISTENING, PROMPTLY),
            "the TLS relay did not report its address within {PROMPTLY:?}:\n{}",
            process.stderr()
        );
        let stderr = process.stderr();
        let after = &stderr[stderr.find(LISTENING).expect("the marker") + LISTENING.len()..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        let port = digits.parse().expect("the relay's port");
        TlsRelay { process, port }
    }

    /// The control-plane base URL under the name its certificate carries.
    fn base_url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn mcp_host(&self, tunnel: &Tunnel, tls: ureq::tls::TlsConfig) -> McpHost {
        McpHost::new(
            format!("{}/v1/mcp/{}", self.base_url(), tunnel.id),
            tunnel,
            Some(tls),
        )
    }

    /// A tunnel client for this relay trusting the private CA, serving `mcp_url`.
    fn client(&self, tunnel: &Tunnel, pki: &Pki, mcp_url: &str) -> ClientBuilder {
        ClientBuilder::run(&self.base_url(), &tunnel.runtime_key, mcp_url)
            .env("CONTROL_PLANE_TUNNEL_ID", &tunnel.id)
            .env("CA_BUNDLE", &pki.path(CA))
    }

    fn output(&self) -> String {
        self.process.stderr()
    }
}

/// A temporary directory with one tunnel in its tunnels file.
fn tunnel_dir(label: &str) -> (TempDir, Tunnel) {
    let dir = TempDir::new(label);
    let tunnel = add_tunnel(&dir.tunnels_file(), label);
    (dir, tunnel)
}

// ---------------------------------------------------------------------------------------------
// tinyproxy

/// Whether a real `tinyproxy` can be run; the proxy tests are skipped without one.
fn tinyproxy_installed() -> bool {
    Process::new("tinyproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

macro_rules! require_tinyproxy {
    () => {
        if !tinyproxy_installed() {
            println!("skipped: tinyproxy not installed");
            return;
        }
    };
}

/// A real `tinyproxy` in the foreground on a loopback port, logging every request to its own
/// file. Killed when dropped.
struct TinyProxy {
    child: Child,
    port: u16,
    log: PathBuf,
    /// Requires `alice`/`s3cret`.
    basic_auth: bool,
    _dir: TempDir,
}

impl TinyProxy {
    /// No authentication.
    fn start() -> TinyProxy {
        TinyProxy::launch(false)
    }

    /// Requires Basic credentials `alice`/`s3cret`.
    fn with_basic_auth() -> TinyProxy {
        TinyProxy::launch(true)
    }

    fn launch(basic_auth: bool) -> TinyProxy {
        let dir = TempDir::new("tinyproxy");
        // The port is chosen by binding and releasing it; if something grabs it in between,
        // tinyproxy exits and we try another one.
        for _attempt in 0..3 {
            let port = free_port();
            let log = dir.path().join(format!("tp-{port}.log"));
            let conf = dir.path().join(format!("tp-{port}.conf"));
            let mut text = format!(
                "Port {port}\nListen 127.0.0.1\nLogFile \"{}\"\nLogLevel Info\n\
                 PidFile \"{}\"\nMaxClients 50\nTimeout 60\n",
                path_string(&log),
                path_string(&dir.path().join(format!("tp-{port}.pid"))),
            );
            if basic_auth {
                text.push_str(&format!("BasicAuth {PROXY_USER} {PROXY_PASSWORD}\n"));
            }
            std::fs::write(&conf, text).expect("write the tinyproxy configuration");
            let mut child = Process::new("tinyproxy")
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start tinyproxy");
            let deadline = Instant::now() + PROMPTLY;
            loop {
                if read_lossy(&log).contains("Accepting connections") {
                    return TinyProxy {
                        child,
                        port,
                        log,
                        basic_auth,
                        _dir: dir,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // could not listen: try another port
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "tinyproxy did not start within {PROMPTLY:?}:\n{}",
                        read_lossy(&log)
                    );
                }
                std::thread::sleep(RETRY_PAUSE);
            }
        }
        panic!("tinyproxy could not listen on a free loopback port");
    }

    /// `http://127.0.0.1:PORT`, no credentials.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://alice:s3cret@127.0.0.1:PORT`.
    fn url_with_credentials(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    /// Every `host:port` a `CONNECT` asked for, in log order. The log lines read
    /// `Request (file descriptor 5): CONNECT 127.0.0.1:18999 HTTP/1.1`.
    fn connect_targets(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|line| {
                let at = line.find("): CONNECT ")? + "): CONNECT ".len();
                line[at..].split_whitespace().next().map(str::to_string)
            })
            .collect()
    }

    /// Sends a `CONNECT` of our own to a dead port and waits until the proxy has logged it, so
    /// every request the proxy received before is in the log too. Returns the `CONNECT`s logged
    /// before that marker.
    fn connects_so_far(&self) -> Vec<String> {
        let marker = format!("127.0.0.1:{}", free_port());
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.port)).expect("connect to tinyproxy");
        stream
            .set_read_timeout(Some(PROMPTLY))
            .expect("set a read timeout");
        let mut request = format!("CONNECT {marker} HTTP/1.1\r\nHost: {marker}\r\n");
        if self.basic_auth {
            request.push_str(&format!(
                "Proxy-Authorization: Basic {PROXY_CREDENTIALS_BASE64}\r\n"
            ));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .expect("send the marker CONNECT");
        let mut answer = [0u8; 256];
        let _ = stream.read(&mut answer);
        drop(stream);
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let targets = self.connect_targets();
            if let Some(at) = targets.iter().position(|t| *t == marker) {
                return targets[..at].to_vec();
            }
            assert!(
                Instant::now() < deadline,
                "tinyproxy did not log the marker CONNECT within {PROMPTLY:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(RETRY_PAUSE);
        }
    }
}

impl Drop for TinyProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- tinyproxy log ----\n{}\n---- end of tinyproxy log ----",
                self.log_text()
            );
        }
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// `127.0.0.1:PORT` of an `http://127.0.0.1:PORT[/path]` URL.
fn authority_of(url: &str) -> String {
    let rest = url.split_once("://").expect("a URL").1;
    rest.split('/').next().expect("an authority").to_string()
}

/// A plain-HTTP relay on loopback with one tunnel, and the stub MCP server.
struct PlainSetup {
    relay: support::Relay,
    stub: Stub,
    tunnel: Tunnel,
    _dir: TempDir,
}

impl PlainSetup {
    fn start(label: &str) -> PlainSetup {
        let (dir, tunnel) = tunnel_dir(label);
        let relay = RelayBuilder::new(&dir.tunnels_file()).start();
        let stub = Stub::start();
        PlainSetup {
            relay,
            stub,
            tunnel,
            _dir: dir,
        }
    }

    /// A tunnel client for the relay serving the stub; tests add the proxy settings.
    fn client(&self) -> ClientBuilder {
        tunnel_client(&self.relay, &self.tunnel, self.stub.url())
    }

    fn mcp_host(&self) -> McpHost {
        McpHost::new(self.relay.mcp_url(&self.tunnel.id), &self.tunnel, None)
    }

    fn relay_authority(&self) -> String {
        authority_of(self.relay.base_url())
    }

    fn stub_authority(&self) -> String {
        authority_of(self.stub.url())
    }
}

fn sorted_unique(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items.dedup();
    items
}

// ---------------------------------------------------------------------------------------------
// 1. Private CA

#[test]
fn private_ca_mcp_server_needs_the_ca_bundle_and_a_matching_name() {
    let pki = Pki::generate();
    let mcp = TlsMcp::start(&pki, false);

    // Without the bundle the private CA is unknown: a TLS failure, the server never answers.
    let control_plane = FakeControlPlane::start();
    let _client = ClientBuilder::for_fakes(&control_plane, &mcp.url()).spawn();
    let posted = call_through(&control_plane, "req-no-bundle");
    assert_tunnel_failure(&posted, "tls");
    assert!(mcp.calls().is_empty(), "{:?}", mcp.calls());

    // With it, the same server is trusted.
    let control_plane = FakeControlPlane::start();
    let _client = ClientBuilder::for_fakes(&control_plane, &mcp.url())
        .env("CA_BUNDLE", &pki.path(CA))
        .spawn();
    assert_tls_reply(&call_through(&control_plane, "req-bundle"));
    let calls = mcp.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].host.as_deref(), Some(&*authority_of(&mcp.url())));

    // Trusting the CA does not switch off name checks: its certificate names localhost only.
    let control_plane = FakeControlPlane::start();
    let _client = ClientBuilder::for_fakes(&control_plane, &mcp.ip_url())
        .env("CA_BUNDLE", &pki.path(CA))
        .spawn();
    assert_tunnel_failure(&call_through(&control_plane, "req-wrong-name"), "tls");
    assert_eq!(mcp.calls().len(), 1, "{:?}", mcp.calls());
}

#[test]
fn unusable_ca_bundle_is_a_config_error_naming_ca_bundle() {
    let pki = Pki::generate();
    for bundle in [
        "/nonexistent/ca.pem".to_string(),
        pki.path(NOT_PEM),
        // A key is PEM, but holds no certificate.
        pki.path(CLIENT_KEY),
    ] {
        let mut client = valid_config().env("CA_BUNDLE", &bundle).spawn();
        let code = exit_code(&mut client);
        let stderr = client.stderr();
        assert_eq!(code, Some(2), "CA_BUNDLE={bundle}: {stderr}");
        assert!(stderr.contains("CA_BUNDLE"), "CA_BUNDLE={bundle}: {stderr}");
        assert!(
            stderr.contains(&bundle),
            "names the file {bundle}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Control-plane mutual TLS against the real relay

#[test]
fn relay_serves_a_client_presenting_a_certificate_from_its_ca() {
    let pki = Pki::generate();
    let (dir, tunnel) = tunnel_dir("mtls-ok");
    let relay = TlsRelay::start(&dir.tunnels_file(), &pki, &[]);
    let stub = Stub::start();
    let _client = relay
        .client(&tunnel, &pki, stub.url())
        .env("CONTROL_PLANE_CLIENT_CERT", &pki.path(CLIENT_CERT))
        .env("CONTROL_PLANE_CLIENT_KEY", &pki.path(CLIENT_KEY))
        .spawn();

    // In the default `control-plane` mode the MCP host needs no certificate of its own.
    let host = relay.mcp_host(&tunnel, tls_trusting(&pki, None));
    host.full_session();
}

#[test]
fn relay_refuses_a_client_without_a_certificate() {
    let pki = Pki::generate();
    let (dir, tunnel) = tunnel_dir("mtls-none");
    let relay = TlsRelay::start(&dir.tunnels_file(), &pki, &[]);
    let stub = Stub::start();
    let client = relay.client(&tunnel, &pki, stub.url()).spawn();

    assert!(
        client.wait_for_stderr("client_certificate_required", PROMPTLY),
        "the client does not report the refusal:\n{}",
        client.stderr()
    );
    let stderr = client.stderr();
    assert!(stderr.contains("403"), "{stderr}");
    relay
        .mcp_host(&tunnel, tls_trusting(&pki, None))
        .assert_not_served();
}

#[test]
fn relay_refuses_a_client_certificate_from_another_ca() {
    let pki = Pki::generate();
    let (dir, tunnel) = tunnel_dir("mtls-other");
    let relay = TlsRelay::start(&dir.tunnels_file(), &pki, &[]);
    let stub = Stub::start();
    let client = relay
        .client(&tunnel, &pki, stub.url())
        .env("CONTROL_PLANE_CLIENT_CERT", &pki.path(OTHER_CLIENT_CERT))
        .env("CONTROL_PLANE_CLIENT_KEY", &pki.path(OTHER_CLIENT_KEY))
        .spawn();

    // The handshake fails: the client reports a network/TLS error (not an HTTP status).
    assert!(
        client.wait_for_stderr("poll failed", PROMPTLY),
        "the client does not report the failed poll:\n{}",
        client.stderr()
    );
    let stderr = client.stderr();
    let poll_line = stderr
        .lines()
        .find(|line| line.contains("poll failed"))
        .expect("the poll failure line");
    let lower = poll_line.to_ascii_lowercase();
    assert!(
        lower.contains("certificate") || lower.contains("alert") || lower.contains("tls"),
        "not a TLS error: {poll_line}"
    );
    assert!(!poll_line.contains("HTTP 403"), "{poll_line}");
    relay
        .mcp_host(&tunnel, tls_trusting(&pki, None))
        .assert_not_served();
}

#[test]
fn relay_with_client_auth_all_requires_certificates_of_mcp_hosts_too() {
    let pki = Pki::generate();
    let (dir, tunnel) = tunnel_dir("mtls-all");
    let relay = TlsRelay::start(&dir.tunnels_file(), &pki, &["--tls-client-auth", "all"]);
    let stub = Stub::start();
    let _client = relay
        .client(&tunnel, &pki, stub.url())
        .env("CONTROL_PLANE_CLIENT_CERT", &pki.path(CLIENT_CERT))
        .env("CONTROL_PLANE_CLIENT_KEY", &pki.path(CLIENT_KEY))
        .spawn();

    let with_cert = relay.mcp_host(&tunnel, tls_trusting(&pki, Some((CLIENT_CERT, CLIENT_KEY))));
    with_cert.full_session();

    let without = relay.mcp_host(&tunnel, tls_trusting(&pki, None));
    let refused = without.post(&rpc_request("no-cert", "ping", json!({})), None);
    assert_eq!(refused.status, 403, "{refused:#?}");
    assert_eq!(
        refused.error_code().as_deref(),
        Some("client_certificate_required"),
        "{refused:#?}"
    );
    // Still served for the host that has one: the refusal was about the certificate.
    let again = with_cert.post(&rpc_request("with-cert", "ping", json!({})), None);
    assert_eq!(again.status, 200, "{again:#?}");
}

#[test]
fn mcp_client_certificate_is_never_offered_to_the_control_plane() {
    // The relay would accept any certificate from the private CA, including the MCP one: a 403
    // proves the client kept it for the MCP origin.
    let pki = Pki::generate();
    let (dir, tunnel) = tunnel_dir("mtls-scoped");
    let relay = TlsRelay::start(&dir.tunnels_file(), &pki, &[]);
    let stub = Stub::start();
    let client = relay
        .client(&tunnel, &pki, stub.url())
        .env("MCP_CLIENT_CERT", &pki.path(CLIENT_CERT))
        .env("MCP_CLIENT_KEY", &pki.path(CLIENT_KEY))
        .spawn();
    assert!(
        client.wait_for_stderr("client_certificate_required", PROMPTLY),
        "the control plane should have seen no client certificate:\n{}\n---- relay ----\n{}",
        client.stderr(),
        relay.output()
    );
    relay
        .mcp_host(&tunnel, tls_trusting(&pki, None))
        .assert_not_served();
}

// ---------------------------------------------------------------------------------------------
// 3. MCP-side mutual TLS

/// Size of the request sent to a server that refuses the client's certificate: large enough
/// that the client is still writing it when the server is done with the connection.
const LARGE_REQUEST: usize = 256 * 1024;

/// How many refused calls a test makes when the outcome of one could be luck.
const REFUSED_CALLS: usize = 5;

#[test]
fn mcp_mtls_works_with_mcp_client_cert_and_is_a_tls_failure_without() {
    let pki = Pki::generate();
    let mcp = TlsMcp::start(&pki, true);

    let control_plane = FakeControlPlane::start();
    let _client = ClientBuilder::for_fakes(&control_plane, &mcp.url())
        .env("CA_BUNDLE", &pki.path(CA))
        .env("MCP_CLIENT_CERT", &pki.path(CLIENT_CERT))
        .env("MCP_CLIENT_KEY", &pki.path(CLIENT_KEY))
        .spawn();
    assert_tls_reply(&call_through(&control_plane, "req-with-cert"));
    assert_tls_reply(&call_with_large_body(
        &control_plane,
        "req-large-with-cert",
        LARGE_REQUEST,
    ));
    let calls = mcp.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|c| c.client_cert_verified), "{calls:?}");
    // That this certificate is never offered to the control plane is proved against a relay
    // that would accept it: mcp_client_certificate_is_never_offered_to_the_control_plane.

    // Without a certificate the server refuses the handshake: a `tls` failure, as for an
    // unknown server CA. The refusal comes from the crate's own TLS server here; whether its
    // alert reaches the client is a race unless the server lets it (see the test below, whose
    // server does), so several calls are made and every one must come out as `tls`.
    let control_plane = FakeControlPlane::start();
    let _client = ClientBuilder::for_fakes(&control_plane, &mcp.url())
        .env("CA_BUNDLE", &pki.path(CA))
        .spawn();
    let sources: Vec<Value> = (0..REFUSED_CALLS)
        .map(|i| {
            let posted =
                call_with_large_body(&control_plane, &format!("req-no-cert-{i}"), LARGE_REQUEST);
            assert_refused_before_any_answer(&posted);
            posted.resp_json().expect("an answer")["error"]["data"]["tunnel_failure"]["source"]
                .clone()
        })
        .collect();
    assert_eq!(mcp.calls().len(), 2, "{:?}", mcp.calls());
    assert!(
        sources.iter().all(|source| source == "tls"),
        "refused handshakes were reported as {sources:?}"
    );
}

/// A TLS server that only ever refuses: it requires a client certificate from the private CA,
/// and after a failed handshake closes its sending side and reads what the client still sends
/// before closing, so its TLS alert reaches the client instead of being lost to a reset.
struct RefusingTlsServer {
    port: u16,
    refusals: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl RefusingTlsServer {
    fn start(pki: &Pki) -> RefusingTlsServer {
        let config = requiring_client_certs(pki);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the refusing TLS server");
        let port = listener.local_addr().expect("its address").port();
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (refusals, stop) = (Arc::clone(&refusals), Arc::clone(&stop));
            std::thread::spawn(move || {
                for tcp in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(tcp) = tcp else { continue };
                    let config = Arc::clone(&config);
                    let refusals = Arc::clone(&refusals);
                    std::thread::spawn(move || refuse(tcp, config, &refusals));
                }
            })
        };
        RefusingTlsServer {
            port,
            refusals,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}/mcp", self.port)
    }

    fn refusals(&self) -> Vec<String> {
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn refuse(mut tcp: TcpStream, config: Arc<rustls::ServerConfig>, refusals: &Mutex<Vec<String>>) {
    // Bounds the handshake and the draining after a refusal.
    if tcp.set_read_timeout(Some(PROMPTLY)).is_err() {
        return;
    }
    let Ok(mut conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    while conn.is_handshaking() {
        match conn.complete_io(&mut tcp) {
            Ok((0, 0)) => return,
            Ok(_) => {}
            Err(e) => {
                refusals
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(e.to_string());
                // complete_io already sent the alert; let it arrive before the connection ends.
                let _ = tcp.shutdown(Shutdown::Write);
                let mut sink = [0u8; 16 * 1024];
                while matches!(tcp.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
        }
    }
    // A handshake that succeeded is not what this server is for: close at once.
}

impl Drop for RefusingTlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

#[test]
fn mcp_server_refusing_the_client_certificate_is_a_tls_failure() {
    let pki = Pki::generate();
    let server = RefusingTlsServer::start(&pki);

    // No certificate at all.
    let control_plane = FakeControlPlane::start();
    let _client = ClientBuilder::for_fakes(&control_plane, &server.url())
        .env("CA_BUNDLE", &pki.path(CA))
        .spawn();
    let posted = call_with_large_body(&control_plane, "req-no-cert", LARGE_REQUEST);
    assert_tunnel_failure(&posted, "tls");

    // A certificate from a CA the server does not trust.
    let control_plane = FakeControlPlane::start();
    let _client = ClientBuilder::for_fakes(&control_plane, &server.url())
        .env("CA_BUNDLE", &pki.path(CA))
        .env("MCP_CLIENT_CERT", &pki.path(OTHER_CLIENT_CERT))
        .env("MCP_CLIENT_KEY", &pki.path(OTHER_CLIENT_KEY))
        .spawn();
    assert_tunnel_failure(&call_through(&control_plane, "req-other-ca"), "tls");

    // Each client's start-up OAuth discovery is refused alongside its call, so the server saw
    // more handshakes than calls, each refused for one of the two reasons.
    let refusals = server.refusals();
    let no_cert = refusals.iter().filter(|r| r.contains("no certificates"));
    let unknown = refusals.iter().filter(|r| r.contains("UnknownIssuer"));
    assert!(no_cert.count() >= 1, "{refusals:?}");
    assert!(unknown.count() >= 1, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .all(|r| r.contains("no certificates") || r.contains("UnknownIssuer")),
        "{refusals:?}"
    );
}

#[test]
fn per_channel_client_cert_is_presented_and_wins_over_the_mcp_default() {
    let pki = Pki::generate();
    let mcp = TlsMcp::start(&pki, true);
    let qualified = format!(
        "channel=main,url={},client-cert={},client-key={}",
        mcp.url(),
        pki.path(CLIENT_CERT),
        pki.path(CLIENT_KEY)
    );

    let control_plane = FakeControlPlane::start();
    let _client = ClientBuilder::for_fakes(&control_plane, &qualified)
        .env("CA_BUNDLE", &pki.path(CA))
        .spawn();
    assert_tls_reply(&call_through(&control_plane, "req-channel-cert"));

    // The MCP-wide default is a certificate the server refuses; the channel's own one wins.
    let control_plane = FakeControlPlane::start();
    let _client = ClientBuilder::for_fakes(&control_plane, &qualified)
        .env("CA_BUNDLE", &pki.path(CA))
        .env("MCP_CLIENT_CERT", &pki.path(OTHER_CLIENT_CERT))
        .env("MCP_CLIENT_KEY", &pki.path(OTHER_CLIENT_KEY))
        .spawn();
    assert_tls_reply(&call_through(&control_plane, "req-channel-wins"));

    // The refused default alone fails, so the case above did depend on the channel's option.
    let control_plane = FakeControlPlane::start();
    let _client = ClientBuilder::for_fakes(&control_plane, &mcp.url())
        .env("CA_BUNDLE", &pki.path(CA))
        .env("MCP_CLIENT_CERT", &pki.path(OTHER_CLIENT_CERT))
        .env("MCP_CLIENT_KEY", &pki.path(OTHER_CLIENT_KEY))
        .spawn();
    assert_refused_before_any_answer(&call_through(&control_plane, "req-default-refused"));
    let calls = mcp.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|c| c.client_cert_verified), "{calls:?}");
}

#[test]
fn control_plane_certificate_is_never_offered_to_the_mcp_server() {
    let pki = Pki::generate();
    let mcp = TlsMcp::start(&pki, true);
    let control_plane = FakeControlPlane::start();
    let _client = ClientBuilder::for_fakes(&control_plane, &mcp.url())
        .env("CA_BUNDLE", &pki.path(CA))
        .env("CONTROL_PLANE_CLIENT_CERT", &pki.path(CLIENT_CERT))
        .env("CONTROL_PLANE_CLIENT_KEY", &pki.path(CLIENT_KEY))
        .spawn();
    assert_refused_before_any_answer(&call_through(&control_plane, "req-cp-cert-only"));
    assert!(mcp.calls().is_empty(), "{:?}", mcp.calls());
}

// ---------------------------------------------------------------------------------------------
// 4. Client certificates that cannot work stop the start

#[test]
fn unusable_client_certificates_are_exit_2_with_a_readable_message() {
    let pki = Pki::generate();
    let (cert, key, stray) = (
        pki.path(CLIENT_CERT),
        pki.path(CLIENT_KEY),
        pki.path(STRAY_KEY),
    );

    // A key that belongs to another certificate, for each place a certificate can be set.
    assert_config_error(
        valid_config()
            .env("MCP_CLIENT_CERT", &cert)
            .env("MCP_CLIENT_KEY", &stray),
        &["MCP_CLIENT_CERT"],
        "does not belong",
    );
    assert_config_error(
        valid_config()
            .env("CONTROL_PLANE_CLIENT_CERT", &cert)
            .env("CONTROL_PLANE_CLIENT_KEY", &stray),
        &["CONTROL_PLANE_CLIENT_CERT"],
        "does not belong",
    );
    let qualified = format!(
        "channel=main,url={},client-cert={cert},client-key={stray}",
        dead_loopback_url("/mcp")
    );
    assert_config_error(
        valid_config().env("MCP_SERVER_URL", &qualified),
        &["MCP_SERVER_URL"],
        "does not belong",
    );
    // Half a pair, an unreadable key, and a certificate file holding no certificate.
    assert_config_error(
        valid_config().env("MCP_CLIENT_CERT", &cert),
        &["MCP_CLIENT_KEY", "--mcp.client-key"],
        "required",
    );
    assert_config_error(
        valid_config()
            .env("MCP_CLIENT_CERT", &cert)
            .env("MCP_CLIENT_KEY", "/nonexistent/client.key"),
        &["MCP_CLIENT_CERT"],
        "/nonexistent/client.key",
    );
    assert_config_error(
        valid_config()
            .env("MCP_CLIENT_CERT", &key)
            .env("MCP_CLIENT_KEY", &key),
        &["MCP_CLIENT_CERT"],
        "CERTIFICATE",
    );
}

// ---------------------------------------------------------------------------------------------
// 5-8. Proxies

#[test]
fn proxy_with_basic_auth_carries_both_hops() {
    require_tinyproxy!();
    let proxy = TinyProxy::with_basic_auth();
    let setup = PlainSetup::start("proxy-both");
    let client = setup
        .client()
        .env(
            "TUNNEL_CLIENT_HTTP_PROXY",
            &proxy.url_with_credentials(PROXY_USER, PROXY_PASSWORD),
        )
        .spawn();

    setup.mcp_host().full_session();

    let targets = sorted_unique(proxy.connects_so_far());
    let mut expected = vec![setup.relay_authority(), setup.stub_authority()];
    expected.sort();
    assert_eq!(targets, expected, "CONNECTs through the proxy");
    let stderr = client.stderr();
    assert!(stderr.contains("MCP answered"), "{stderr}");
    assert!(!stderr.contains(PROXY_PASSWORD), "{stderr}");
    assert!(!stderr.contains(PROXY_CREDENTIALS_BASE64), "{stderr}");
}

/// The client's log lines that mention `needle`.
fn lines_with(text: &str, needle: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn refused_proxy_credentials_are_a_clear_error_naming_the_proxy() {
    require_tinyproxy!();
    const WRONG: &str = "n0t-the-pa55word";
    let proxy = TinyProxy::with_basic_auth();
    let setup = PlainSetup::start("proxy-refused");

    // A wrong password. tinyproxy 1.11 answers it with 401 (407 only when credentials are
    // missing), so either status is the proxy's refusal.
    let wrong = setup
        .client()
        .env("LOG_LEVEL", "trace")
        .env(
            "TUNNEL_CLIENT_HTTP_PROXY",
            &proxy.url_with_credentials(PROXY_USER, WRONG),
        )
        .spawn();
    assert!(
        wrong.wait_for_stderr("poll failed", PROMPTLY),
        "the client does not report the failed poll:\n{}",
        wrong.stderr()
    );
    setup.mcp_host().assert_not_served();
    let stderr = wrong.stderr();
    let refusals = lines_with(&stderr, "poll failed");
    assert!(
        refusals
            .iter()
            .all(|l| l.contains("responded 407") || l.contains("responded 401")),
        "the poll failure does not carry the proxy's status: {refusals:#?}"
    );
    assert!(!stderr.contains(WRONG), "{stderr}");
    assert!(
        refusals.iter().all(|l| l.contains(&proxy.url())),
        "the error does not name the proxy {}: {refusals:#?}",
        proxy.url()
    );
    drop(wrong);

    // No credentials at all: 407.
    let missing = setup
        .client()
        .env("TUNNEL_CLIENT_HTTP_PROXY", &proxy.url())
        .spawn();
    assert!(
        missing.wait_for_stderr("responded 407", PROMPTLY),
        "the client does not report the 407:\n{}",
        missing.stderr()
    );
    setup.mcp_host().assert_not_served();
    // "responded 407", not a bare "407": an ephemeral port number may contain those digits.
    let refusals = lines_with(&missing.stderr(), "responded 407");
    assert!(
        refusals.iter().all(|l| l.contains(&proxy.url())),
        "the error does not name the proxy {}: {refusals:#?}",
        proxy.url()
    );
}

#[test]
fn refused_mcp_proxy_fails_the_call_and_the_log_names_the_proxy() {
    require_tinyproxy!();
    let proxy = TinyProxy::with_basic_auth();
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("MCP_HTTP_PROXY", &proxy.url())
        .spawn();

    let posted = exchange(
        &control_plane,
        &Command::jsonrpc("req-407", tool_call("rpc-407", "echo")),
    );
    assert_tunnel_failure(&posted, "connect");
    assert!(mcp.calls().is_empty(), "{:?}", mcp.calls());
    assert_eq!(
        sorted_unique(proxy.connects_so_far()),
        [authority_of(mcp.url())],
        "the call went to the proxy"
    );
    let stderr = client.stderr();
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("responded 407") && line.contains(&proxy.url())),
        "no log line names the proxy {} and its 407:\n{stderr}",
        proxy.url()
    );
}

#[test]
fn per_hop_proxies_carry_only_their_own_hop() {
    require_tinyproxy!();
    let control_plane_proxy = TinyProxy::start();
    let mcp_proxy = TinyProxy::start();
    let setup = PlainSetup::start("proxy-per-hop");
    let _client = setup
        .client()
        // Both narrower settings must win over the global one, which leads nowhere.
        .env("TUNNEL_CLIENT_HTTP_PROXY", &dead_loopback_url(""))
        .env("CONTROL_PLANE_HTTP_PROXY", "env:CORP_CP_PROXY")
        .env("CORP_CP_PROXY", &control_plane_proxy.url())
        .env("MCP_HTTP_PROXY", &mcp_proxy.url())
        .spawn();

    setup.mcp_host().full_session();

    assert_eq!(
        sorted_unique(control_plane_proxy.connects_so_far()),
        [setup.relay_authority()],
        "the control-plane proxy"
    );
    assert_eq!(
        sorted_unique(mcp_proxy.connects_so_far()),
        [setup.stub_authority()],
        "the MCP proxy"
    );
}

#[test]
fn channel_http_proxy_wins_over_mcp_http_proxy() {
    require_tinyproxy!();
    let channel_proxy = TinyProxy::start();
    let setup = PlainSetup::start("proxy-channel");
    let qualified = format!(
        "channel=main,url={},http-proxy={}",
        setup.stub.url(),
        channel_proxy.url()
    );
    let _client = setup
        .client()
        .env("MCP_SERVER_URL", &qualified)
        .env("MCP_HTTP_PROXY", &dead_loopback_url(""))
        .spawn();

    setup.mcp_host().full_session();

    assert_eq!(
        sorted_unique(channel_proxy.connects_so_far()),
        [setup.stub_authority()]
    );
}

#[test]
fn environment_proxy_is_bypassed_for_no_proxy_hosts() {
    require_tinyproxy!();
    let proxy = TinyProxy::start();
    let setup = PlainSetup::start("proxy-no-proxy");
    let _client = setup
        .client()
        .env("HTTPS_PROXY", &proxy.url())
        .env("HTTP_PROXY", &proxy.url())
        .env("NO_PROXY", "127.0.0.1")
        .spawn();

    setup.mcp_host().full_session();

    assert_eq!(proxy.connects_so_far(), Vec::<String>::new());
}

#[test]
fn environment_proxy_is_used_without_no_proxy() {
    require_tinyproxy!();
    let proxy = TinyProxy::start();
    let setup = PlainSetup::start("proxy-env");
    let _client = setup
        .client()
        .env("HTTPS_PROXY", &proxy.url())
        .env("HTTP_PROXY", &proxy.url())
        .spawn();

    setup.mcp_host().full_session();

    let mut expected = vec![setup.relay_authority(), setup.stub_authority()];
    expected.sort();
    assert_eq!(sorted_unique(proxy.connects_so_far()), expected);
}

#[test]
fn explicit_proxy_ignores_no_proxy() {
    require_tinyproxy!();
    let proxy = TinyProxy::start();
    let setup = PlainSetup::start("proxy-explicit");
    let _client = setup
        .client()
        .env("TUNNEL_CLIENT_HTTP_PROXY", &proxy.url())
        .env("NO_PROXY", "127.0.0.1")
        .spawn();

    setup.mcp_host().full_session();

    let mut expected = vec![setup.relay_authority(), setup.stub_authority()];
    expected.sort();
    assert_eq!(sorted_unique(proxy.connects_so_far()), expected);
}

// ---------------------------------------------------------------------------------------------
// 9. Unix sockets

/// Accepts on a Unix socket and copies each connection both ways to a TCP address: an MCP
/// server reachable only through the socket (nothing else knows the TCP port's purpose, and the
/// URL's host does not resolve).
struct UnixPump {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<UnixStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl UnixPump {
    fn start(path: &Path, target: SocketAddr) -> UnixPump {
        let listener = UnixListener::bind(path).expect("bind the Unix socket");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (stop, accepted, open) = (stop.clone(), accepted.clone(), open.clone());
            std::thread::spawn(move || {
                for unix in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(unix) = unix else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let Ok(tcp) = TcpStream::connect(target) else {
                        continue;
                    };
                    if let Ok(clone) = unix.try_clone() {
                        open.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(clone);
                    }
                    pump(unix, tcp);
                }
            })
        };
        UnixPump {
            path: path.to_path_buf(),
            stop,
            accepted,
            open,
            acceptor: Some(acceptor),
        }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Copies both directions on their own threads; each ends at end of stream or an error, and
/// passes the end on with a half-close.
fn pump(unix: UnixStream, tcp: TcpStream) {
    let (Ok(mut unix_in), Ok(mut tcp_in)) = (unix.try_clone(), tcp.try_clone()) else {
        return;
    };
    let (mut unix_out, mut tcp_out) = (unix, tcp);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut unix_in, &mut tcp_out);
        let _ = tcp_out.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut tcp_in, &mut unix_out);
        let _ = unix_out.shutdown(Shutdown::Write);
    });
}

impl Drop for UnixPump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for stream in self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn unix_socket_channel_reaches_the_mcp_server() {
    let dir = TempDir::new("unix");
    let socket = dir.path().join("mcp.sock");
    let mcp = FakeMcp::start();
    let target: SocketAddr = mcp.authority().parse().expect("the fake's address");
    let pump = UnixPump::start(&socket, target);
    let control_plane = FakeControlPlane::start();
    let qualified = format!(
        "channel=main,url=http://mcp.internal/mcp,unix-socket={}",
        path_string(&socket)
    );
    let _client = ClientBuilder::for_fakes(&control_plane, &qualified).spawn();

    let posted = exchange(
        &control_plane,
        &Command::jsonrpc("req-unix", tool_call("rpc-unix", "echo")),
    );
    assert_eq!(posted.resp_type(), "jsonrpc_response", "{posted:#?}");
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    assert_eq!(
        posted.resp_json(),
        Some(&json!({"jsonrpc": "2.0", "id": "rpc-unix", "result": {}})),
        "{posted:#?}"
    );
    let call = mcp.wait_for_call(&json!("rpc-unix"), PROMPTLY);
    assert_eq!(call.request.header("Host"), Some("mcp.internal"));
    assert!(pump.connections() >= 1, "nothing came through the socket");
}

#[test]
fn unix_socket_together_with_a_proxy_is_a_config_error() {
    let qualified = "channel=main,url=http://mcp.internal/mcp,unix-socket=/run/mcp.sock,\
                     http-proxy=http://127.0.0.1:3128";
    assert_config_error(
        valid_config().env("MCP_SERVER_URL", qualified),
        &["MCP_SERVER_URL"],
        "unix-socket",
    );
}
