//! The relay's status page and JSON API on `--metrics-listen` (issue 18, item 3): off (404)
//! without an admin key, 401 without the key or with a wrong one, a login form that sets an
//! HttpOnly SameSite=Strict session cookie, a strict CSP; the JSON follows a tunnel from "no
//! client" to "connected" and shows a call, never a key, token, session id, id or argument; and
//! a real headless Chromium logs in through the form and watches the same happen live.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mcp_tunnel::relay::keys;
use serde_json::{Value, json};
use support::{
    Browser, Connector, PROMPTLY, Relay, RelayBuilder, Stub, TempDir, Tunnel, TunnelClient,
    add_tunnel, chromium, http_get, rpc_request, tunnel_client,
};

const NAME: &str = "status-one";
const ADMIN_KEY: &str = "mcpt_ad_status-page-test-key";
const ARGUMENT: &str = "an-argument-nobody-may-see";
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

fn relay(dir: &TempDir, with_key: bool) -> Relay {
    let builder = RelayBuilder::new(&dir.tunnels_file()).option("--metrics-listen", "127.0.0.1:0");
    if with_key {
        // The relay's admin key (`relay admin-key`), as a fixed test key: its digest heads the
        // tunnels file, which `relay tunnel add` keeps.
        let file = dir.tunnels_file();
        let rest = std::fs::read_to_string(&file).unwrap_or_default();
        let head = format!("admin_key_sha256 = \"{}\"\n", keys::hash(ADMIN_KEY));
        std::fs::write(&file, head + &rest).expect("write the tunnels file");
    }
    builder.start()
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// `/status.json` with the admin key.
fn status_json(relay: &Relay) -> Value {
    let answer = http_get(
        &format!("{}/status.json", relay.metrics_url()),
        &[("Authorization", &bearer(ADMIN_KEY))],
    );
    assert_eq!(answer.status, 200, "{answer:#?}");
    answer.json()
}

fn tunnel_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["tunnels"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no tunnel {name} in {status:#}"))
}

/// Fetches `/status.json` until `done` holds (bounded); returns that snapshot.
fn wait_for_status(relay: &Relay, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let status = status_json(relay);
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {PROMPTLY:?}:\n{status:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A stub MCP server and a tunnel client serving it.
fn start_client(relay: &Relay, tunnel: &Tunnel) -> (Stub, TunnelClient) {
    let stub = Stub::start();
    let client = tunnel_client(relay, tunnel, stub.url()).spawn();
    (stub, client)
}

/// An `echo` call with an argument that must never show.
fn call_echo(connector: &Connector) {
    let answer = connector.post(&rpc_request(
        41,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": ARGUMENT}}),
    ));
    assert_eq!(answer.status, 200, "{answer:#?}");
}

fn has_call(status: &Value) -> bool {
    status["recent_calls"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["rpc_method"] == "tools/call" && c["name"] == "echo")
    })
}

/// A run of 16 or more hex digits: an id, a key or a session id.
fn long_hex_run(text: &str) -> Option<String> {
    let mut run = String::new();
    for c in text.chars().chain([' ']) {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else if run.len() >= 16 {
            return Some(run);
        } else {
            run.clear();
        }
    }
    None
}

fn assert_no_secrets(what: &str, text: &str, tunnel: &Tunnel) {
    for secret in [
        ADMIN_KEY,
        ARGUMENT,
        tunnel.runtime_key.as_str(),
        tunnel.connector_key.as_str(),
        tunnel.id.as_str(),
    ] {
        assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
    }
    assert_eq!(
        long_hex_run(text),
        None,
        "{what} shows an id or key:\n{text}"
    );
}

/// A POST of a form to the metrics listener, redirects not followed.
fn post_form(url: &str, body: &str, cookie: Option<&str>) -> (u16, Vec<(String, String)>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(PROMPTLY))
        .build()
        .into();
    let mut request = agent
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie);
    }
    let mut answer = request.send(body).expect("an HTTP answer");
    let headers = answer
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let status = answer.status().as_u16();
    let text = answer.body_mut().read_to_string().unwrap_or_default();
    (status, headers, text)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn without_an_admin_key_there_is_no_status_page() {
    let dir = TempDir::new("relay-status-off");
    add_tunnel(&dir.tunnels_file(), NAME);
    let relay = relay(&dir, false);
    let base = relay.metrics_url();
    for path in ["/status", "/status.json", "/status/assets/status.js"] {
        let answer = http_get(
            &format!("{base}{path}"),
            &[("Authorization", &bearer(ADMIN_KEY))],
        );
        assert_eq!(answer.status, 404, "{path}: {answer:#?}");
    }
    assert_eq!(http_get(&format!("{base}/metrics"), &[]).status, 200);
}

#[test]
fn the_page_and_the_api_want_the_admin_key_or_a_login() {
    let dir = TempDir::new("relay-status-auth");
    add_tunnel(&dir.tunnels_file(), NAME);
    let relay = relay(&dir, true);
    let base = relay.metrics_url();
    for path in ["/status", "/status.json"] {
        let url = format!("{base}{path}");
        for auth in [
            None,
            Some(bearer("mcpt_ad_wrong")),
            Some(ADMIN_KEY.to_string()),
        ] {
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            let answer = http_get(&url, &headers);
            assert_eq!(answer.status, 401, "{path} with {auth:?}: {answer:#?}");
            assert_eq!(answer.header("Content-Security-Policy"), Some(CSP));
            assert!(
                !answer.body.contains(NAME),
                "{path} told a stranger: {}",
                answer.body
            );
        }
        let answer = http_get(&url, &[("Authorization", &bearer(ADMIN_KEY))]);
        assert_eq!(answer.status, 200, "{path}: {answer:#?}");
        assert_eq!(answer.header("Content-Security-Policy"), Some(CSP));
        assert_eq!(answer.header("X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(answer.header("Cache-Control"), Some("no-store"));
        assert!(answer.body.contains(NAME), "{path}: {}", answer.body);
    }
    let page = http_get(
        &format!("{base}/status"),
        &[("Authorization", &bearer(ADMIN_KEY))],
    );
    assert!(page.content_type().starts_with("text/html"), "{page:#?}");
    assert!(page.body.contains("no client"), "{}", page.body);
    assert!(
        page.body.contains("src=\"/status/assets/status.js\""),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "nothing fetched from elsewhere"
    );
    let login = http_get(&format!("{base}/status"), &[]);
    assert!(
        login.body.contains("action=\"/status/login\""),
        "{}",
        login.body
    );
    for (asset, kind) in [("status.css", "text/css"), ("status.js", "text/javascript")] {
        let answer = http_get(&format!("{base}/status/assets/{asset}"), &[]);
        assert_eq!(answer.status, 200, "{answer:#?}");
        assert!(answer.content_type().starts_with(kind), "{answer:#?}");
    }
    // The public listener serves none of it.
    let public = http_get(
        &format!("{}/status.json", relay.base_url()),
        &[("Authorization", &bearer(ADMIN_KEY))],
    );
    assert_ne!(public.status, 200, "{public:#?}");

    // The login form: a wrong key gets the form again, the right one a session cookie.
    let login_url = format!("{base}/status/login");
    let (status, headers, body) = post_form(&login_url, "key=mcpt_ad_wrong", None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(header(&headers, "Set-Cookie"), None);
    assert!(body.contains("not the admin key"), "{body}");
    let (status, headers, body) = post_form(&login_url, &format!("key={ADMIN_KEY}"), None);
    assert_eq!(status, 303, "{body}");
    assert_eq!(header(&headers, "Location"), Some("/status"));
    let set_cookie = header(&headers, "Set-Cookie")
        .expect("a session cookie")
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let session = cookie.split_once('=').unwrap().1.to_string();
    assert!(session.len() >= 32, "{cookie}");
    let with_cookie = http_get(&format!("{base}/status.json"), &[("Cookie", &cookie)]);
    assert_eq!(with_cookie.status, 200, "{with_cookie:#?}");
    assert!(
        !with_cookie.body.contains(&session),
        "the session id is not shown"
    );
    let page = http_get(&format!("{base}/status"), &[("Cookie", &cookie)]);
    assert!(!page.body.contains(&session) && page.body.contains("/status/logout"));
    let forged = http_get(
        &format!("{base}/status.json"),
        &[("Cookie", "mcpt_status=00ff")],
    );
    assert_eq!(forged.status, 401);

    // Logout forgets the session.
    let (status, headers, _) = post_form(&format!("{base}/status/logout"), "", Some(&cookie));
    assert_eq!(status, 303);
    assert!(header(&headers, "Set-Cookie").is_some_and(|c| c.contains("Max-Age=0")));
    let after = http_get(&format!("{base}/status.json"), &[("Cookie", &cookie)]);
    assert_eq!(after.status, 401, "{after:#?}");
}

#[test]
fn the_json_follows_a_client_connecting_and_a_call_without_secrets() {
    let dir = TempDir::new("relay-status-live");
    let tunnel = add_tunnel(&dir.tunnels_file(), NAME);
    let relay = relay(&dir, true);

    let before = status_json(&relay);
    let t = tunnel_of(&before, NAME);
    assert_eq!(t["state"], "no client", "{before:#}");
    assert_eq!(t["instances"], json!([]), "{before:#}");
    assert_eq!(t["queue"]["capacity"], 256, "{before:#}");

    let (_stub, _client) = start_client(&relay, &tunnel);
    let connected = wait_for_status(&relay, "the client connected", |s| {
        tunnel_of(s, NAME)["state"] == "connected"
    });
    let t = tunnel_of(&connected, NAME);
    let instance = &t["instances"][0];
    assert_eq!(instance["state"], "connected", "{connected:#}");
    assert_eq!(
        instance["id_prefix"].as_str().map(str::len),
        Some(8),
        "{connected:#}"
    );
    assert_eq!(instance["version"], 1, "{connected:#}");
    assert_eq!(instance["channels"][0]["name"], "main", "{connected:#}");
    assert!(
        instance["first_poll"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{connected:#}"
    );

    let connector = Connector::new(&relay, &tunnel);
    connector.wait_until_client_connected();
    call_echo(&connector);
    let after = wait_for_status(&relay, "the call shown", has_call);
    let call = after["recent_calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["rpc_method"] == "tools/call")
        .unwrap();
    assert_eq!(call["tunnel"], NAME);
    assert_eq!(call["status"], 200);
    assert_eq!(call["channel"], "main");
    // The instance that served it, as the instances table names it.
    assert_eq!(call["instance_prefix"], instance["id_prefix"], "{after:#}");
    // A refused call is an error.
    let refused = Connector::new(&relay, &tunnel)
        .bearer("mcpt_cn_wrong")
        .post(&rpc_request(
            42,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": ARGUMENT}}),
        ));
    assert_eq!(refused.status, 401, "{refused:#?}");
    let after = wait_for_status(&relay, "the refusal listed as an error", |s| {
        s["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|c| c["status"] == 401))
    });

    assert_no_secrets("/status.json", &after.to_string(), &tunnel);
    let page = http_get(
        &format!("{}/status", relay.metrics_url()),
        &[("Authorization", &bearer(ADMIN_KEY))],
    );
    assert!(
        page.body.contains("connected") && page.body.contains("tools/call"),
        "{}",
        page.body
    );
    assert_no_secrets("/status", &page.body, &tunnel);
}

/// Where the browser test keeps its screenshot.
fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("test-artifacts").join(name)
}

/// The text of a table body of the page.
fn table_text(id: &str) -> String {
    format!("((document.getElementById('{id}') || {{}}).innerText || '')")
}

#[test]
fn a_browser_logs_in_and_watches_a_client_connect_and_a_call_arrive() {
    let Some(binary) = chromium() else {
        println!("skipped: chromium not installed (tests/setup-deps.sh installs it)");
        return;
    };
    let dir = TempDir::new("relay-status-browser");
    let tunnel = add_tunnel(&dir.tunnels_file(), NAME);
    let relay = relay(&dir, true);
    let mut browser = Browser::start(&binary);

    // The login form.
    browser.navigate(&format!("{}/status", relay.metrics_url()));
    browser.wait_for("the login form", "document.getElementById('login')");
    browser.eval("document.getElementById('key').focus()");
    browser.type_text(ADMIN_KEY);
    browser.eval("document.querySelector('#login button').click()");
    browser.wait_for("the status page", "document.getElementById('tunnels')");
    let tunnels = table_text("tunnels");
    browser.wait_for(
        "no client yet",
        &format!("{tunnels}.includes('{NAME}') && {tunnels}.includes('no client')"),
    );
    assert_eq!(
        browser.eval("document.cookie"),
        json!(""),
        "the session cookie is HttpOnly"
    );

    // The page refreshes itself: a marker set now survives, so no reload happened.
    browser.eval("window.__notReloaded = true");
    let (_stub, _client) = start_client(&relay, &tunnel);
    browser.wait_for(
        "the client connected",
        &format!("{tunnels}.includes('connected') && !{tunnels}.includes('no client')"),
    );
    let instances = table_text("instances");
    browser.wait_for("its instance", &format!("{instances}.includes('main')"));

    let connector = Connector::new(&relay, &tunnel);
    connector.wait_until_client_connected();
    call_echo(&connector);
    let calls = table_text("calls");
    browser.wait_for(
        "the call",
        &format!("{calls}.includes('tools/call') && {calls}.includes('echo')"),
    );
    assert_eq!(browser.eval("window.__notReloaded === true"), json!(true));
    let shown = browser.eval("document.documentElement.outerHTML");
    assert_no_secrets(
        "the page in the browser",
        shown.as_str().unwrap_or_default(),
        &tunnel,
    );

    let shot = artifact("relay-status.png");
    browser.screenshot(&shot);
    println!("screenshot: {}", shot.display());
}
