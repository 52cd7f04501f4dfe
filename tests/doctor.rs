//! End-to-end tests of `mcp-tunnel doctor` (issue 6, item 3) with the real binary and a cleared
//! environment: a good setup passes every check with the tool count; a wrong API key, a control
//! plane whose certificate comes from an unknown CA, an unreachable MCP server and a proxy that
//! wants credentials each fail on the right line with the right fix; `--json` carries the same
//! verdicts; no secret is ever printed; and doctor never polls.
//!
//! Certificates are made at test time with `rcgen`; the TLS control plane is the real
//! `mcp-tunnel relay --tls-cert/--tls-key`. Everything binds or dials loopback only, every wait
//! is bounded, and every process a test starts is killed when its handle drops.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::Value;
use serde_json::json;
use support::{
    API_KEY, ClientBuilder, FakeControlPlane, FakeMcp, McpReply, PROMPTLY, SseEvent, Stub,
    TUNNEL_ID, TempDir, TunnelClient, add_tunnel, as_nobody_if_root, dead_loopback_url,
    fixture_copy, process_gone,
};

/// Longest a whole doctor run may take: each check has a 10 s deadline, and these setups make
/// every check answer at once, so reaching this means something hung.
const DOCTOR_DONE: Duration = Duration::from_secs(40);

/// A key the fake control plane does not accept; it must never be printed either.
const WRONG_KEY: &str = "sk-wrong-key-that-must-stay-secret";

/// Proxy credentials; the password must never be printed.
const PROXY_USER: &str = "alice";
const PROXY_PASSWORD: &str = "s3cret-proxy-password";

// ---------------------------------------------------------------------------------------------
// Running doctor

/// `mcp-tunnel doctor` with a complete configuration in a cleared environment.
fn doctor(control_plane_url: &str, api_key: &str, mcp_url: &str) -> ClientBuilder {
    ClientBuilder::bare()
        .arg("doctor")
        .env("CONTROL_PLANE_BASE_URL", control_plane_url)
        .env("CONTROL_PLANE_TUNNEL_ID", TUNNEL_ID)
        .env("CONTROL_PLANE_API_KEY", api_key)
        .env("MCP_SERVER_URL", mcp_url)
}

/// What one doctor run printed, and how it exited.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// The check lines: (mark, name, detail), in order. A check line is `MARK NAME — DETAIL`.
    fn checks(&self) -> Vec<(String, String, String)> {
        self.stdout
            .lines()
            .filter_map(|line| {
                let (mark, rest) = line.split_once(' ')?;
                if !["✓", "✗", "–"].contains(&mark) {
                    return None;
                }
                let (name, detail) = rest.split_once(" — ")?;
                Some((mark.to_string(), name.to_string(), detail.to_string()))
            })
            .collect()
    }

    /// The line of check `name` and its fix line (if any), joined; panics when there is none.
    fn line(&self, name: &str) -> String {
        let lines: Vec<&str> = self.stdout.lines().collect();
        let at = lines
            .iter()
            .position(|line| {
                line.split_once(' ')
                    .is_some_and(|(_, rest)| rest.starts_with(&format!("{name} — ")))
            })
            .unwrap_or_else(|| panic!("no check {name:?} in:\n{}", self.stdout));
        let mut text = lines[at].to_string();
        if let Some(fix) = lines
            .get(at + 1)
            .filter(|l| l.trim_start().starts_with("fix:"))
        {
            text.push('\n');
            text.push_str(fix);
        }
        text
    }

    fn assert_passed(&self, name: &str) -> String {
        let line = self.line(name);
        assert!(
            line.starts_with("✓ "),
            "{name} should pass:\n{}",
            self.stdout
        );
        line
    }

    fn assert_failed(&self, name: &str) -> String {
        let line = self.line(name);
        assert!(
            line.starts_with("✗ "),
            "{name} should fail:\n{}",
            self.stdout
        );
        assert!(
            line.contains("\n    fix: "),
            "a failure names its fix: {line}"
        );
        line
    }

    fn has_check(&self, name: &str) -> bool {
        self.checks().iter().any(|(_, n, _)| n == name)
    }

    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Neither `secret` nor anything that obviously carries it was printed.
    fn assert_never_shows(&self, secret: &str) {
        assert!(
            !self.all().contains(secret),
            "a secret was printed:\n{}",
            self.all()
        );
    }
}

fn run(builder: ClientBuilder) -> Outcome {
    let mut process: TunnelClient = builder.spawn();
    let status = process
        .wait_exit(DOCTOR_DONE)
        .unwrap_or_else(|| panic!("doctor did not finish within {DOCTOR_DONE:?}"));
    Outcome {
        code: status.code(),
        stdout: process.stdout(),
        stderr: process.stderr(),
    }
}

fn run_json(builder: ClientBuilder) -> (Option<i32>, Value, String) {
    let outcome = run(builder.arg("--json"));
    let doc: Value = serde_json::from_str(&outcome.stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{}", outcome.stdout));
    (outcome.code, doc, outcome.all())
}

/// The fake control plane answered the metadata call and saw no poll at all.
fn assert_metadata_only(control_plane: &FakeControlPlane) {
    let requests = control_plane.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "GET" && r.path() == format!("/v1/tunnels/{TUNNEL_ID}")),
        "doctor did not ask for the tunnel's metadata: {requests:#?}"
    );
    assert_eq!(
        control_plane.poll_count(),
        0,
        "doctor polled: {requests:#?}"
    );
    assert!(
        requests.iter().all(|r| r.method == "GET"),
        "doctor posted to the control plane: {requests:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// A private CA

/// A CA and a server certificate for `localhost` from it, as PEM files.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn generate() -> Pki {
        let dir = TempDir::new("doctor-pki");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "doctor test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a CA key"))
            .expect("self-sign the CA");

        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("a server key");
        let cert = params
            .signed_by(&key, &ca)
            .expect("sign the server certificate");

        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write the CA");
        std::fs::write(dir.path().join("server.pem"), cert.pem()).expect("write the cert");
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("write the key");
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        path_string(&self.dir.path().join(name))
    }
}

fn path_string(path: &Path) -> String {
    path.to_str()
        .expect("temporary paths are UTF-8")
        .to_string()
}

/// The real relay serving HTTPS with the private CA's `localhost` certificate.
struct TlsRelay {
    _process: TunnelClient,
    port: u16,
}

impl TlsRelay {
    fn start(tunnels_file: &Path, pki: &Pki) -> TlsRelay {
        const LISTENING: &str = "relay listening on https://127.0.0.1:";
        let process = ClientBuilder::bare()
            .arg("relay")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--tunnels-file")
            .arg(&path_string(tunnels_file))
            .arg("--tls-cert")
            .arg(&pki.path("server.pem"))
            .arg("--tls-key")
            .arg(&pki.path("server.key"))
            .spawn();
        assert!(
            process.wait_for_stderr(LISTENING, PROMPTLY),
            "the TLS relay did not start within {PROMPTLY:?}:\n{}",
            process.stderr()
        );
        let stderr = process.stderr();
        let after = &stderr[stderr.find(LISTENING).expect("the marker") + LISTENING.len()..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        TlsRelay {
            port: digits.parse().expect("the relay's port"),
            _process: process,
        }
    }

    /// Under the name its certificate carries.
    fn base_url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
}

// ---------------------------------------------------------------------------------------------
// A CONNECT proxy

/// A small HTTP CONNECT proxy on loopback: with the right Basic credentials it opens the tunnel
/// (to loopback targets only) and splices bytes both ways; without them it answers 407.
struct FakeProxy {
    port: u16,
    connects: Arc<Mutex<Vec<String>>>,
    stopping: Arc<AtomicBool>,
}

impl FakeProxy {
    fn start() -> FakeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake proxy");
        let port = listener.local_addr().expect("its address").port();
        let connects = Arc::new(Mutex::new(Vec::new()));
        let stopping = Arc::new(AtomicBool::new(false));
        let (seen, stop) = (Arc::clone(&connects), Arc::clone(&stopping));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || serve_proxy(stream, &seen));
            }
        });
        FakeProxy {
            port,
            connects,
            stopping,
        }
    }

    fn url_with_credentials(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// The credential-free form doctor must show.
    fn shown(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connects(&self) -> Vec<String> {
        self.connects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for FakeProxy {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve_proxy(stream: TcpStream, seen: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(PROMPTLY));
    let mut reader = BufReader::new(stream.try_clone().expect("clone the proxy stream"));
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => head.push(line.trim_end().to_string()),
        }
    }
    let Some(target) = head
        .first()
        .and_then(|l| l.strip_prefix("CONNECT "))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
    else {
        return;
    };
    seen.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(target.clone());
    let expected = format!(
        "proxy-authorization: basic {}",
        base64(&format!("{PROXY_USER}:{PROXY_PASSWORD}"))
    )
    .to_ascii_lowercase();
    let authorized = head
        .iter()
        .any(|h| h.to_ascii_lowercase() == expected.as_str());
    let mut client = stream;
    if !authorized {
        let _ = client.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\n\
              Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
        );
        return;
    }
    if !target.starts_with("127.0.0.1:") && !target.starts_with("localhost:") {
        let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let Ok(upstream) = TcpStream::connect(&target) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    // Bytes the client sent after the head are still in the reader's buffer.
    let buffered = reader.buffer().to_vec();
    let mut up_writer = upstream.try_clone().expect("clone upstream");
    if up_writer.write_all(&buffered).is_err() {
        return;
    }
    let mut client_reader = reader.into_inner();
    let _ = client_reader.set_read_timeout(None);
    let mut down_reader = upstream;
    let mut client_writer = client.try_clone().expect("clone client");
    let upload = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_reader, &mut up_writer);
        let _ = up_writer.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut down_reader, &mut client_writer);
    let _ = client_writer.shutdown(Shutdown::Write);
    let _ = upload.join();
}

/// Standard base64 with padding (for the expected `Proxy-Authorization`).
fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn good_setup_passes_every_check_with_the_tool_count() {
    let control_plane = FakeControlPlane::start();
    let stub = Stub::start();
    let outcome = run(doctor(control_plane.base_url(), API_KEY, stub.url()));

    assert_eq!(outcome.code, Some(0), "{}", outcome.all());
    let checks = outcome.checks();
    assert!(
        checks.iter().all(|(mark, _, _)| mark != "✗"),
        "{}",
        outcome.stdout
    );
    outcome.assert_passed("configuration");
    outcome.assert_passed("control plane: TCP");
    let auth = outcome.assert_passed("control plane: auth");
    assert!(auth.contains(TUNNEL_ID), "{auth}");
    let init = outcome.assert_passed("channel main: MCP initialize");
    assert!(init.contains("mcp-tunnel-stub"), "{init}");
    let tools = outcome.assert_passed("channel main: MCP tools/list");
    assert!(tools.contains("6 tools"), "{tools}");
    // The poll is skipped, said so, and does not fail the run.
    let poll = outcome.line("control plane: poll");
    assert!(poll.starts_with("– ") && poll.contains("skipped"), "{poll}");
    assert!(outcome.stdout.contains("All "), "{}", outcome.stdout);
    // A server without OAuth is said so, informationally.
    let oauth = outcome.line("channel main: OAuth");
    assert_eq!(oauth, "– channel main: OAuth — main: no OAuth metadata");

    assert_metadata_only(&control_plane);
    outcome.assert_never_shows(API_KEY);
}

#[test]
fn wrong_api_key_fails_the_auth_line_naming_control_plane_api_key() {
    let control_plane = FakeControlPlane::start();
    let stub = Stub::start();
    let outcome = run(doctor(control_plane.base_url(), WRONG_KEY, stub.url()));

    assert_eq!(outcome.code, Some(1), "{}", outcome.all());
    let auth = outcome.assert_failed("control plane: auth");
    assert!(auth.contains("API key rejected"), "{auth}");
    assert!(auth.contains("check CONTROL_PLANE_API_KEY"), "{auth}");
    // The other hop is still checked.
    outcome.assert_passed("channel main: MCP tools/list");
    assert_metadata_only(&control_plane);
    outcome.assert_never_shows(WRONG_KEY);
    outcome.assert_never_shows(API_KEY);
}

#[test]
fn unknown_ca_fails_tls_naming_ca_bundle_and_passes_with_it() {
    let pki = Pki::generate();
    let dir = TempDir::new("doctor-tls");
    let tunnel = add_tunnel(&dir.tunnels_file(), "doctor");
    let relay = TlsRelay::start(&dir.tunnels_file(), &pki);
    let stub = Stub::start();
    let configured = || {
        doctor(&relay.base_url(), &tunnel.runtime_key, stub.url())
            .env("CONTROL_PLANE_TUNNEL_ID", &tunnel.id)
    };

    let untrusted = run(configured());
    assert_eq!(untrusted.code, Some(1), "{}", untrusted.all());
    untrusted.assert_passed("control plane: TCP");
    let tls = untrusted.assert_failed("control plane: TLS");
    assert!(
        tls.contains("certificate not trusted — add the issuing CA with CA_BUNDLE"),
        "{tls}"
    );
    assert!(
        !untrusted.has_check("control plane: auth"),
        "{}",
        untrusted.stdout
    );
    untrusted.assert_never_shows(&tunnel.runtime_key);

    let trusted = run(configured().env("CA_BUNDLE", &pki.path("ca.pem")));
    assert_eq!(trusted.code, Some(0), "{}", trusted.all());
    let tls = trusted.assert_passed("control plane: TLS");
    assert!(tls.contains("localhost"), "{tls}");
    let auth = trusted.assert_passed("control plane: auth");
    assert!(
        auth.contains(&tunnel.id) && auth.contains("doctor"),
        "{auth}"
    );
    trusted.assert_never_shows(&tunnel.runtime_key);
    let pem = std::fs::read_to_string(pki.path("server.key")).expect("the key file");
    let key_body = pem.lines().nth(1).expect("a PEM body line");
    trusted.assert_never_shows(key_body);
}

#[test]
fn unreachable_mcp_server_fails_naming_the_channel_and_connection_refused() {
    let control_plane = FakeControlPlane::start();
    let stub = Stub::start();
    let dead = dead_loopback_url("/mcp");
    let outcome = run(doctor(control_plane.base_url(), API_KEY, stub.url()).env(
        "MCP_SERVER_URL",
        &format!("{}\nchannel=analytics,url={dead}", stub.url()),
    ));

    assert_eq!(outcome.code, Some(1), "{}", outcome.all());
    outcome.assert_passed("control plane: auth");
    outcome.assert_passed("channel main: MCP tools/list");
    let tcp = outcome.assert_failed("channel analytics: TCP");
    assert!(tcp.contains("connection refused"), "{tcp}");
    let port = dead.trim_start_matches("http://").trim_end_matches("/mcp");
    assert!(tcp.contains(port), "{tcp}");
    assert!(tcp.contains("MCP_SERVER_URL"), "{tcp}");
    assert!(
        !outcome.has_check("channel analytics: MCP initialize"),
        "{}",
        outcome.stdout
    );
}

#[test]
fn json_output_parses_and_matches_the_text_verdicts() {
    let control_plane = FakeControlPlane::start();
    let stub = Stub::start();
    let dead = dead_loopback_url("/mcp");
    let setup = || {
        doctor(control_plane.base_url(), WRONG_KEY, stub.url()).env(
            "MCP_SERVER_URL",
            &format!("{}\nchannel=down,url={dead}", stub.url()),
        )
    };

    let text = run(setup());
    let (code, doc, everything) = run_json(setup());
    assert_eq!(code, text.code);
    assert_eq!(code, Some(1));
    assert_eq!(doc["ok"], false, "{doc:#}");
    let checks = doc["checks"].as_array().expect("a checks array");
    let from_json: Vec<(String, bool)> = checks
        .iter()
        .map(|c| {
            for field in ["name", "ok", "detail", "fix"] {
                assert!(c.get(field).is_some(), "{field} missing in {c}");
            }
            assert_eq!(c["fix"].is_string(), c["ok"] == false, "{c}");
            (
                c["name"].as_str().expect("name").to_string(),
                c["ok"] == true,
            )
        })
        .collect();
    let from_text: Vec<(String, bool)> = text
        .checks()
        .into_iter()
        .map(|(mark, name, _)| (name, mark != "✗"))
        .collect();
    assert_eq!(from_json, from_text, "{doc:#}\n{}", text.stdout);
    let auth = checks
        .iter()
        .find(|c| c["name"] == "control plane: auth")
        .expect("an auth check");
    assert!(
        auth["detail"]
            .as_str()
            .is_some_and(|d| d.contains("check CONTROL_PLANE_API_KEY")),
        "{auth}"
    );
    let poll = checks
        .iter()
        .find(|c| c["name"] == "control plane: poll")
        .expect("a poll line");
    assert_eq!(poll["ok"], true);
    assert_eq!(poll["skipped"], true);
    assert!(!everything.contains(WRONG_KEY), "{everything}");
    assert_eq!(control_plane.poll_count(), 0);

    // A passing setup: ok true, exit 0.
    let (code, doc, _) = run_json(doctor(control_plane.base_url(), API_KEY, stub.url()));
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["ok"], true, "{doc:#}");
}

#[test]
fn stdio_channel_is_started_asked_for_its_tools_and_stopped() {
    let control_plane = FakeControlPlane::start();
    let server = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stdio_edge_server.py"
    );
    let outcome = run(doctor(control_plane.base_url(), API_KEY, "unused")
        .without_env("MCP_SERVER_URL")
        .env("MCP_COMMAND", &format!("python3 '{server}'")));

    assert_eq!(outcome.code, Some(0), "{}", outcome.all());
    outcome.assert_passed("channel main: start");
    let init = outcome.assert_passed("channel main: MCP initialize");
    assert!(init.contains("stdio-edge-server"), "{init}");
    let tools = outcome.assert_passed("channel main: MCP tools/list");
    assert!(tools.contains("8 tools"), "{tools}");

    let missing = run(doctor(control_plane.base_url(), API_KEY, "unused")
        .without_env("MCP_SERVER_URL")
        .env("MCP_COMMAND", "no-such-mcp-server-program --token=hidden"));
    assert_eq!(missing.code, Some(1), "{}", missing.all());
    let start = missing.assert_failed("channel main: start");
    assert!(start.contains("no-such-mcp-server-program"), "{start}");
    missing.assert_never_shows("hidden");
}

/// Doctor starts a stdio server as `run` does: the key neither in its environment nor readable
/// from doctor's `/proc/<pid>/environ`, and the helpers it forked ended with it.
#[test]
fn stdio_server_started_by_doctor_cannot_reach_the_key_and_its_helpers_end() {
    let control_plane = FakeControlPlane::start();
    let dir = TempDir::new("doctor-stdio");
    std::fs::write(dir.path().join("secret"), API_KEY).unwrap();
    // The secret file must stay readable once the wrapper makes us `nobody`.
    let read = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    std::fs::set_permissions(dir.path().join("secret"), read).unwrap();
    let wrapper = as_nobody_if_root(dir.path());
    let server = fixture_copy(
        dir.path(),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/stdio_lifecycle_server.py"
        ),
    );
    let mut process = doctor(control_plane.base_url(), API_KEY, "unused")
        .without_env("MCP_SERVER_URL")
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env(
            "MCP_COMMAND",
            &format!("python3 '{server}' report '{}'", dir.path().display()),
        )
        .spawn_wrapped(wrapper);
    process
        .wait_exit(DOCTOR_DONE)
        .unwrap_or_else(|| panic!("doctor did not finish within {DOCTOR_DONE:?}"));
    let report = std::fs::read_to_string(dir.path().join("environ.json")).unwrap_or_else(|e| {
        panic!(
            "the stdio server wrote no report ({e}):\n{}",
            process.stderr()
        )
    });
    let seen: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        seen["own_env_has_secret"], false,
        "inherited the key: {seen}"
    );
    assert_eq!(
        seen["has_secret"], false,
        "read the key from doctor's environ: {seen}"
    );
    assert_eq!(seen["error"], "PermissionError", "{seen}");
    let helper: u32 = std::fs::read_to_string(dir.path().join("grandchildren"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = std::time::Instant::now() + PROMPTLY;
    while !process_gone(helper) {
        assert!(
            std::time::Instant::now() < deadline,
            "helper {helper} outlived doctor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn proxy_is_checked_and_named_without_its_credentials() {
    let control_plane = FakeControlPlane::start();
    let stub = Stub::start();
    let proxy = FakeProxy::start();
    let through = |user: &str, password: &str| {
        doctor(control_plane.base_url(), API_KEY, stub.url()).env(
            "CONTROL_PLANE_HTTP_PROXY",
            &proxy.url_with_credentials(user, password),
        )
    };

    let refused = run(through(PROXY_USER, "wrong-password"));
    assert_eq!(refused.code, Some(1), "{}", refused.all());
    // The proxy's own reachability replaces the control plane's DNS/TCP lines.
    assert!(
        !refused.has_check("control plane: TCP"),
        "{}",
        refused.stdout
    );
    let tcp = refused.assert_passed("control plane: proxy TCP");
    assert!(tcp.contains(&proxy.shown()), "{tcp}");
    let connect = refused.assert_failed("control plane: proxy CONNECT");
    assert!(connect.contains("407"), "{connect}");
    assert!(connect.contains(&proxy.shown()), "{connect}");
    assert!(connect.contains("CONTROL_PLANE_HTTP_PROXY"), "{connect}");
    refused.assert_never_shows("wrong-password");
    // The MCP hop has no proxy and still passes.
    refused.assert_passed("channel main: MCP tools/list");

    let admitted = run(through(PROXY_USER, PROXY_PASSWORD));
    assert_eq!(admitted.code, Some(0), "{}", admitted.all());
    let connect = admitted.assert_passed("control plane: proxy CONNECT");
    assert!(connect.contains(&proxy.shown()), "{connect}");
    admitted.assert_passed("control plane: auth");
    admitted.assert_never_shows(PROXY_PASSWORD);
    let authority = control_plane.base_url().trim_start_matches("http://");
    assert!(
        proxy.connects().iter().any(|t| t == authority),
        "{:?}",
        proxy.connects()
    );
    assert_eq!(control_plane.poll_count(), 0);
}

#[test]
fn event_stream_answers_are_read_and_the_session_is_used_then_ended() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let progress = json!({"jsonrpc": "2.0", "method": "notifications/message",
                          "params": {"level": "info", "data": "starting"}});
    mcp.on_method(
        "initialize",
        McpReply::sse(vec![
            SseEvent::message(Duration::ZERO, &progress),
            SseEvent::result(
                Duration::from_millis(50),
                json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                       "serverInfo": {"name": "sse-server", "version": "9.9"}}),
            ),
        ])
        .header("Mcp-Session-Id", "session-from-the-server"),
    );
    mcp.on_method(
        "tools/list",
        McpReply::sse(vec![SseEvent::result(
            Duration::ZERO,
            json!({"tools": [{"name": "a"}, {"name": "b"}]}),
        )]),
    );
    let outcome = run(doctor(control_plane.base_url(), API_KEY, mcp.url()));

    assert_eq!(outcome.code, Some(0), "{}", outcome.all());
    let init = outcome.assert_passed("channel main: MCP initialize");
    assert!(
        init.contains("sse-server") && init.contains("session issued"),
        "{init}"
    );
    let tools = outcome.assert_passed("channel main: MCP tools/list");
    assert!(tools.contains("2 tools"), "{tools}");

    let calls = mcp.calls();
    let steps: Vec<(String, Option<String>)> = calls
        .iter()
        .map(|c| (c.request.method.clone(), c.rpc_method()))
        .collect();
    let expected = [
        ("POST", Some("initialize")),
        ("POST", Some("notifications/initialized")),
        ("POST", Some("tools/list")),
        ("DELETE", None),
    ]
    .map(|(m, r)| (m.to_string(), r.map(str::to_string)));
    assert_eq!(steps, expected);
    let initialize = calls[0].request.body_json().expect("a JSON body");
    assert_eq!(initialize["params"]["protocolVersion"], "2025-06-18");
    assert_eq!(
        initialize["params"]["clientInfo"]["name"],
        "mcp-tunnel-doctor"
    );
    assert_eq!(
        calls[0].request.header("Accept"),
        Some("application/json, text/event-stream")
    );
    assert!(!calls[0].request.has_header("Mcp-Session-Id"));
    for call in &calls[1..] {
        assert_eq!(
            call.request.header("Mcp-Session-Id"),
            Some("session-from-the-server"),
            "{call:?}"
        );
        assert_eq!(
            call.request.header("MCP-Protocol-Version"),
            Some("2025-06-18")
        );
    }
}

/// `mcp-tunnel stub` that requires `Authorization: Bearer <token>`; returns it and its URL.
fn stub_requiring_bearer(token: &str) -> (TunnelClient, String) {
    const SERVING: &str = "mcp-tunnel stub serving ";
    let process = ClientBuilder::bare()
        .arg("stub")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("STUB_REQUIRE_BEARER", token)
        .spawn();
    assert!(
        process.wait_for_stdout(SERVING, PROMPTLY),
        "the stub did not start within {PROMPTLY:?}:\n{}",
        process.stderr()
    );
    let stdout = process.stdout();
    let url = stdout[stdout.find(SERVING).expect("the marker") + SERVING.len()..]
        .split_whitespace()
        .next()
        .expect("the stub's URL")
        .to_string();
    (process, url)
}

#[test]
fn mcp_extra_headers_are_sent_and_a_refusal_names_them_without_values() {
    const TOKEN: &str = "mcp-server-token-never-printed";
    let control_plane = FakeControlPlane::start();
    let (_stub, url) = stub_requiring_bearer(TOKEN);

    let refused = run(doctor(control_plane.base_url(), API_KEY, &url));
    assert_eq!(refused.code, Some(1), "{}", refused.all());
    let init = refused.assert_failed("channel main: MCP initialize");
    assert!(init.contains("401"), "{init}");
    assert!(init.contains("MCP_EXTRA_HEADERS"), "{init}");

    let wrong = run(doctor(control_plane.base_url(), API_KEY, &url)
        .env("MCP_EXTRA_HEADERS", "Authorization: Bearer not-the-token"));
    let init = wrong.assert_failed("channel main: MCP initialize");
    assert!(init.contains("Authorization"), "{init}");
    wrong.assert_never_shows("not-the-token");

    let admitted = run(doctor(control_plane.base_url(), API_KEY, &url).env(
        "MCP_EXTRA_HEADERS",
        &format!("Authorization: Bearer {TOKEN}"),
    ));
    assert_eq!(admitted.code, Some(0), "{}", admitted.all());
    let tools = admitted.assert_passed("channel main: MCP tools/list");
    assert!(tools.contains("6 tools"), "{tools}");
    admitted.assert_never_shows(TOKEN);
}

#[test]
fn an_oauth_protected_main_is_reported_with_its_metadata_and_authorization_server() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let metadata_url = format!("{}/.well-known/oauth-protected-resource/mcp", mcp.origin());
    let challenge = format!("Bearer resource_metadata=\"{metadata_url}\"");
    mcp.on_path(
        "/mcp",
        McpReply::text(401, "unauthorized").header("WWW-Authenticate", &challenge),
    );
    let prmd = json!({"resource": mcp.url(), "authorization_servers": ["https://idp.example/"]});
    mcp.on_path(
        "/.well-known/oauth-protected-resource/mcp",
        McpReply::raw_json(&prmd.to_string()),
    );
    let outcome = run(doctor(control_plane.base_url(), API_KEY, mcp.url()));

    let oauth = outcome.assert_passed("channel main: OAuth");
    assert_eq!(
        oauth,
        format!(
            "✓ channel main: OAuth — main is OAuth-protected: PRMD at {metadata_url}, \
             authorization server https://idp.example/"
        )
    );
    // Without a token the MCP checks themselves are refused (401).
    outcome.assert_failed("channel main: MCP initialize");
}

#[test]
fn required_oauth_discovery_fails_doctor_on_a_server_without_metadata() {
    let control_plane = FakeControlPlane::start();
    let stub = Stub::start();
    let outcome = run(doctor(control_plane.base_url(), API_KEY, stub.url())
        .env("MCP_REQUIRE_OAUTH_DISCOVERY", "true"));

    assert_eq!(outcome.code, Some(1), "{}", outcome.all());
    outcome.assert_passed("channel main: MCP tools/list");
    let oauth = outcome.assert_failed("channel main: OAuth");
    assert!(oauth.contains("main: no OAuth metadata"), "{oauth}");
    assert!(oauth.contains("MCP_REQUIRE_OAUTH_DISCOVERY"), "{oauth}");
}

#[test]
fn help_and_configuration_errors() {
    let help = run(ClientBuilder::bare().arg("doctor").arg("--help"));
    assert_eq!(help.code, Some(0), "{}", help.all());
    assert!(help.stdout.contains("mcp-tunnel doctor"), "{}", help.stdout);
    assert!(
        help.stdout.contains("mcp-tunnel run --help"),
        "{}",
        help.stdout
    );

    let control_plane = FakeControlPlane::start();
    let missing_id = doctor(control_plane.base_url(), API_KEY, "http://127.0.0.1:1/mcp")
        .without_env("CONTROL_PLANE_TUNNEL_ID");
    let outcome = run(missing_id);
    assert_eq!(outcome.code, Some(2), "{}", outcome.all());
    assert!(
        outcome.stderr.contains("CONTROL_PLANE_TUNNEL_ID"),
        "{}",
        outcome.stderr
    );

    let (code, doc, everything) = run_json(
        doctor(control_plane.base_url(), API_KEY, "http://127.0.0.1:1/mcp")
            .without_env("CONTROL_PLANE_TUNNEL_ID"),
    );
    assert_eq!(code, Some(2));
    assert_eq!(doc["ok"], false);
    assert!(everything.contains("CONTROL_PLANE_TUNNEL_ID"));
    assert!(control_plane.requests().is_empty());
}
