//! The official client's YAML config file and profiles (issue 20), with the real binary: configs
//! written here from the documented schema (`config_version: 1`, `control_plane.*`, `mcp.*`,
//! `log.*`, `health.*`, `process.*`) give the same settings as the equivalent environment
//! (compared through `doctor --show-config`) and the same requests on the wire; flags beat the
//! environment, which beats the env file, which beats the YAML file, which beats the defaults;
//! every bad input exits 2 with an error naming the key (and its line) and never a secret;
//! profiles are found where the official client looks for them.

mod support;

use std::path::Path;

use support::{
    ClientBuilder, Command, FakeControlPlane, FakeMcp, PROMPTLY, TUNNEL_ID, TempDir, TunnelClient,
    dead_loopback_url, tool_call,
};

/// A literal key that must never be printed.
const LITERAL_KEY: &str = "sk-yaml-literal-DO-NOT-PRINT-4242";
/// A header value that must never be printed.
const HEADER_SECRET: &str = "header-secret-DO-NOT-PRINT-77";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Runs to its exit (it must exit promptly) and returns (code, stdout, stderr).
fn finish(mut process: TunnelClient) -> (Option<i32>, String, String) {
    let status = process.wait_exit(PROMPTLY).expect("exits promptly");
    (status.code(), process.stdout(), process.stderr())
}

/// `doctor --show-config` with `builder`'s arguments: each setting as (flag, value, origin).
fn show_config(builder: ClientBuilder) -> Vec<(String, String, String)> {
    let (code, stdout, stderr) = finish(builder.spawn());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for secret in [LITERAL_KEY, HEADER_SECRET] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}"
        );
    }
    stdout
        .lines()
        .filter_map(|line| {
            let (flag, rest) = line.trim().split_once(" = ")?;
            let (value, origin) = rest.rsplit_once("   (")?;
            let origin = origin.strip_suffix(')')?;
            Some((flag.trim().into(), value.into(), origin.into()))
        })
        .collect()
}

fn doctor() -> ClientBuilder {
    ClientBuilder::bare().arg("doctor").arg("--show-config")
}

fn origin_of<'a>(settings: &'a [(String, String, String)], flag: &str) -> (&'a str, &'a str) {
    let (_, value, origin) = settings
        .iter()
        .find(|(f, _, _)| f == flag)
        .unwrap_or_else(|| panic!("{flag} not shown: {settings:#?}"));
    (value, origin)
}

/// A config of the documented schema, in the official client's key names.
fn full_config(base_url: &str, mcp_url: &str) -> String {
    format!(
        "# written from the official schema\n\
         config_version: 1\n\
         control_plane:\n\
         \x20 base_url: {base_url}\n\
         \x20 url_path: /gateway\n\
         \x20 tunnel_id: {TUNNEL_ID}\n\
         \x20 api_key: env:THE_KEY\n\
         \x20 organization_id: org-Yaml123\n\
         \x20 max_inflight_requests: 7\n\
         \x20 poll_timeout: 1s\n\
         \x20 poll_deadline_guardrail: 2s\n\
         \x20 poll_channels:\n\
         \x20   - main\n\
         \x20   - tools\n\
         \x20 extra_headers:\n\
         \x20   X-Gateway: \"{HEADER_SECRET}\"\n\
         log:\n\
         \x20 level: debug\n\
         \x20 format: struct-text\n\
         health:\n\
         \x20 listen_addr: \":0\"\n\
         mcp:\n\
         \x20 server_urls:\n\
         \x20   - url: {mcp_url}\n\
         \x20 commands:\n\
         \x20   - channel: tools\n\
         \x20     command: /bin/cat -u\n\
         \x20 extra_headers:\n\
         \x20   X-Mcp: env:MCP_HEADER\n\
         \x20 connection_max_ttl: 5m\n\
         \x20 max_concurrent_requests: 4\n\
         \x20 startup_wait_timeout: 3s\n\
         harpoon:\n\
         \x20 targets:\n\
         \x20   - label: idp\n\
         \x20     url: https://idp.internal/token\n\
         \x20     description: the token endpoint\n\
         \x20 max_redirects: 2\n"
    )
}

/// The same settings as environment variables.
fn full_env(builder: ClientBuilder, base_url: &str, mcp_url: &str) -> ClientBuilder {
    [
        ("CONTROL_PLANE_BASE_URL", base_url),
        ("CONTROL_PLANE_URL_PATH", "/gateway"),
        ("CONTROL_PLANE_TUNNEL_ID", TUNNEL_ID),
        ("CONTROL_PLANE_API_KEY", "env:THE_KEY"),
        ("CONTROL_PLANE_ORGANIZATION_ID", "org-Yaml123"),
        ("CONTROL_PLANE_MAX_INFLIGHT_REQUESTS", "7"),
        ("CONTROL_PLANE_POLL_TIMEOUT", "1s"),
        ("CONTROL_PLANE_POLL_DEADLINE_GUARDRAIL", "2s"),
        ("CONTROL_PLANE_POLL_CHANNELS", "main,tools"),
        (
            "CONTROL_PLANE_EXTRA_HEADERS",
            &format!("X-Gateway: {HEADER_SECRET}"),
        ),
        ("LOG_LEVEL", "debug"),
        ("LOG_FORMAT", "struct-text"),
        ("HEALTH_LISTEN_ADDR", ":0"),
        ("MCP_SERVER_URL", mcp_url),
        ("MCP_COMMAND", "channel=tools,command=/bin/cat -u"),
        ("MCP_EXTRA_HEADERS", "X-Mcp: env:MCP_HEADER"),
        ("MCP_CONNECTION_MAX_TTL", "5m"),
        ("MCP_MAX_CONCURRENT_REQUESTS", "4"),
        ("MCP_STARTUP_WAIT_TIMEOUT", "3s"),
        (
            "HARPOON_TARGETS",
            "label=idp,url=https://idp.internal/token,desc=the token endpoint",
        ),
        ("HARPOON_MAX_REDIRECTS", "2"),
    ]
    .into_iter()
    .fold(builder, |b, (k, v)| b.env(k, v))
}

/// A list setting's values, however they were split (YAML list items or a comma list).
fn items(value: &str) -> Vec<String> {
    let mut items: Vec<String> = value
        .split([',', '|'])
        .map(|s| s.trim().to_string())
        .collect();
    items.sort();
    items
}

#[test]
fn a_config_of_the_documented_schema_gives_the_same_settings_as_the_environment() {
    let dir = TempDir::new("yaml-roundtrip");
    let (base, mcp) = ("http://127.0.0.1:9", "http://127.0.0.1:3000/mcp");
    let file = write(dir.path(), "tunnel-client.yaml", &full_config(base, mcp));
    let refs = |b: ClientBuilder| b.env("THE_KEY", LITERAL_KEY).env("MCP_HEADER", "v");
    let from_yaml = show_config(refs(doctor()).env("TUNNEL_CLIENT_CONFIG", &file));
    let from_env = show_config(full_env(refs(doctor()), base, mcp));
    assert_eq!(from_yaml.len(), from_env.len(), "{from_yaml:#?}");
    let mut from_file = 0;
    for ((flag, yaml_value, origin), (env_flag, env_value, env_origin)) in
        from_yaml.iter().zip(&from_env)
    {
        assert_eq!(flag, env_flag);
        if flag == "--config" {
            continue;
        }
        assert_eq!(items(yaml_value), items(env_value), "{flag}");
        assert_eq!(
            origin.starts_with("yaml "),
            env_origin.starts_with("env "),
            "{flag}: {origin} vs {env_origin}"
        );
        from_file += usize::from(origin.starts_with("yaml "));
    }
    assert_eq!(from_file, 21, "{from_yaml:#?}");
    // The origin names the file, the line and the key.
    let (_, origin) = origin_of(&from_yaml, "--control-plane.max-inflight");
    assert_eq!(
        origin,
        format!("yaml {file}:9 control_plane.max_inflight_requests")
    );
    let (value, _) = origin_of(&from_yaml, "--control-plane.extra-headers");
    assert_eq!(value, "X-Gateway: <redacted>");
    let (value, _) = origin_of(&from_yaml, "--control-plane.api-key");
    assert_eq!(value, "env:THE_KEY");
}

#[test]
fn a_yaml_config_alone_drives_run_on_the_wire() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let dir = TempDir::new("yaml-wire");
    let config = format!(
        "config_version: 1\n\
         control_plane:\n\
         \x20 base_url: {}\n\
         \x20 tunnel_id: {TUNNEL_ID}\n\
         \x20 api_key: {}\n\
         \x20 organization_id: org-Yaml123\n\
         \x20 poll_timeout: 1s\n\
         \x20 extra_headers:\n\
         \x20   X-Gateway: gw-1\n\
         mcp:\n\
         \x20 server_urls:\n\
         \x20   - channel: main\n\
         \x20     url: {}\n\
         \x20 extra_headers:\n\
         \x20   X-Mcp: mcp-1\n\
         log:\n\
         \x20 level: debug\n\
         health:\n\
         \x20 listen_addr: \":0\"\n\
         admin_ui:\n\
         \x20 allow_remote: true\n\
         proxy:\n\
         \x20 check_interval: 30s\n",
        control_plane.base_url(),
        control_plane.api_key(),
        mcp.url()
    );
    let file = write(dir.path(), "official.yaml", &config);
    let client = ClientBuilder::bare()
        .arg("run")
        .arg("--config")
        .arg(&file)
        .spawn();
    control_plane.push(Command::jsonrpc("req-yaml", tool_call(1, "echo")));
    let posted = control_plane.wait_for_terminal_response("req-yaml", PROMPTLY);
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    for request in control_plane.requests() {
        assert_eq!(request.header("OpenAI-Organization"), Some("org-Yaml123"));
        assert_eq!(request.header("X-Gateway"), Some("gw-1"));
    }
    let mcp_requests = mcp.requests();
    assert!(!mcp_requests.is_empty());
    assert!(
        mcp_requests
            .iter()
            .all(|r| r.header("X-Mcp") == Some("mcp-1"))
    );
    // The literal key is accepted with a warning naming the line, never the key; each ignored
    // setting is reported once, by file, line and key.
    let stderr = client.stderr();
    assert!(!stderr.contains(control_plane.api_key()), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:5: control_plane.api_key holds the API key itself"
        )),
        "{stderr}"
    );
    for key in [
        ":21: admin_ui.allow_remote is ignored",
        ":23: proxy.check_interval is ignored",
    ] {
        assert_eq!(stderr.matches(key).count(), 1, "{key}: {stderr}");
    }
}

#[test]
fn flags_beat_the_environment_which_beats_the_env_file_which_beats_yaml_and_defaults() {
    let dir = TempDir::new("yaml-precedence");
    let yaml = write(
        dir.path(),
        "c.yaml",
        &format!(
            "config_version: 1\ncontrol_plane:\n  tunnel_id: {TUNNEL_ID}\n  api_key: env:K\n  \
             poll_timeout: 20s\nmcp:\n  server_urls:\n    - url: http://127.0.0.1:3000/mcp\n"
        ),
    );
    let env_file = write(dir.path(), "env", "CONTROL_PLANE_POLL_TIMEOUT=9s\n");
    let base = || doctor().env("K", "key").arg(&format!("--config={yaml}"));
    let timeout = |b: ClientBuilder| {
        let settings = show_config(b);
        let (value, origin) = origin_of(&settings, "--control-plane.poll-timeout");
        (value.to_string(), origin.to_string())
    };
    let with_env_file = || base().env("ENV_FILE", &env_file);
    let with_env = || with_env_file().env("CONTROL_PLANE_POLL_TIMEOUT", "7s");
    assert_eq!(
        timeout(with_env().arg("--control-plane.poll-timeout=3s")),
        ("3s".into(), "flag".into())
    );
    assert_eq!(
        timeout(with_env()),
        ("7s".into(), "env CONTROL_PLANE_POLL_TIMEOUT".into())
    );
    assert_eq!(
        timeout(with_env_file()),
        (
            "9s".into(),
            format!("env file {env_file} (CONTROL_PLANE_POLL_TIMEOUT)")
        )
    );
    assert_eq!(
        timeout(base()),
        (
            "20s".into(),
            format!("yaml {yaml}:5 control_plane.poll_timeout")
        )
    );
    let settings = show_config(base());
    assert_eq!(
        origin_of(&settings, "--control-plane.max-inflight"),
        ("20", "default")
    );
}

/// Runs `builder` and expects exit 2 with every one of `needles` in stderr and no secret.
fn refused(builder: ClientBuilder, needles: &[&str]) {
    let (code, stdout, stderr) = finish(builder.spawn());
    assert_eq!(code, Some(2), "{needles:?}: {stdout}{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
    for secret in [LITERAL_KEY, HEADER_SECRET] {
        assert!(
            !stderr.contains(secret) && !stdout.contains(secret),
            "{stderr}"
        );
    }
}

#[test]
fn every_bad_config_exits_2_naming_the_key_and_line_and_never_a_secret() {
    let dir = TempDir::new("yaml-bad");
    let head = format!(
        "config_version: 1\ncontrol_plane:\n  tunnel_id: {TUNNEL_ID}\n  api_key: {LITERAL_KEY}\n"
    );
    let server = "mcp:\n  server_urls:\n    - url: http://127.0.0.1:3000/mcp\n";
    let cases: &[(&str, String, &[&str])] = &[
        (
            "unknown-key",
            format!("{head}  tunel_id: x\n{server}"),
            &[":5: control_plane.tunel_id: unknown key"],
        ),
        (
            "unknown-section",
            format!("{head}{server}metrics:\n  port: 1\n"),
            &[":8: metrics: unknown key"],
        ),
        (
            "unknown-entry-key",
            format!("{head}{server}      uri: x\n"),
            &[":8: mcp.server_urls[0].uri: unknown key"],
        ),
        (
            "list-for-a-value",
            format!("{head}  poll_timeout: [1s]\n{server}"),
            &[":5: control_plane.poll_timeout: must be a single value"],
        ),
        (
            "value-for-a-map",
            format!("{head}  extra_headers: \"X-A: {HEADER_SECRET}\"\n{server}"),
            &[":5: control_plane.extra_headers: must be a map"],
        ),
        (
            "not-a-number",
            format!("{head}  max_inflight_requests: lots\n{server}"),
            &[":5: control_plane.max_inflight_requests:"],
        ),
        (
            "value-for-a-section",
            format!("{head}log: debug\n{server}"),
            &[":5: log: must be a map of settings"],
        ),
        (
            "version-2",
            format!("config_version: 2\n{}", &head[18..]),
            &[":1: config_version: must be 1"],
        ),
        (
            "no-version",
            format!("{}{server}", &head[18..]),
            &["has no config_version"],
        ),
        (
            "bad-yaml",
            format!("{head}  poll_timeout: \"1s\n{server}"),
            &["is not valid YAML"],
        ),
        (
            "missing-env-reference",
            format!(
                "config_version: 1\ncontrol_plane:\n  tunnel_id: {TUNNEL_ID}\n  \
                 api_key: env:NO_SUCH_VAR\n{server}"
            ),
            &[":4: control_plane.api_key", "NO_SUCH_VAR"],
        ),
        (
            "missing-file-reference",
            format!("{head}  base_url: file:/no/such/file\n{server}"),
            &[":5: control_plane.base_url", "/no/such/file"],
        ),
        (
            "harpoon-target",
            format!("{head}{server}harpoon:\n  targets:\n    - label: idp\n      url: ftp://i\n"),
            &[":10: harpoon.targets[0]: target idp: key url must be an absolute https:// URL"],
        ),
    ];
    for (name, text, needles) in cases {
        let file = write(dir.path(), &format!("{name}.yaml"), text);
        let mut all = needles.to_vec();
        all.push(&file);
        refused(
            ClientBuilder::bare().arg("run").arg("--config").arg(&file),
            &all,
        );
        // doctor reads the same file the same way.
        refused(
            ClientBuilder::bare()
                .arg("doctor")
                .env("TUNNEL_CLIENT_CONFIG", &file),
            needles,
        );
    }
    refused(
        ClientBuilder::bare()
            .arg("run")
            .env("TUNNEL_CLIENT_CONFIG", "/no/such/config.yaml"),
        &["/no/such/config.yaml: cannot read it"],
    );
    let ok = write(dir.path(), "ok.yaml", &format!("{head}{server}"));
    refused(
        ClientBuilder::bare()
            .arg("run")
            .arg(&format!("--config={ok}"))
            .arg("--profile=prod"),
        &["--config: and --profile both choose a config file"],
    );
    refused(
        ClientBuilder::bare()
            .arg("run")
            .env("TUNNEL_CLIENT_CONFIG", &ok)
            .env("TUNNEL_CLIENT_PROFILE_FILE", &ok),
        &["TUNNEL_CLIENT_CONFIG: and TUNNEL_CLIENT_PROFILE_FILE both choose"],
    );
}

#[test]
fn profiles_are_found_where_the_official_client_looks() {
    let dir = TempDir::new("yaml-profiles");
    let profile = |timeout: &str| {
        format!(
            "config_version: 1\ncontrol_plane:\n  tunnel_id: {TUNNEL_ID}\n  api_key: env:K\n  \
             poll_timeout: {timeout}\nmcp:\n  server_urls:\n    - url: http://127.0.0.1:3000/mcp\n"
        )
    };
    let explicit = write(dir.path(), "profiles/prod.yaml", &profile("11s"));
    let xdg = write(dir.path(), "xdg/tunnel-client/prod.yaml", &profile("12s"));
    let home = write(
        dir.path(),
        "home/.config/tunnel-client/prod.yaml",
        &profile("13s"),
    );
    let file = write(dir.path(), "elsewhere/staging.yaml", &profile("14s"));
    let timeout = |b: ClientBuilder| {
        let settings = show_config(b.env("K", "key"));
        let (value, origin) = origin_of(&settings, "--control-plane.poll-timeout");
        (value.to_string(), origin.to_string())
    };
    let at = |path: &str| format!("yaml {path}:5 control_plane.poll_timeout");
    let dir_of = |sub: &str| dir.path().join(sub).display().to_string();
    let home_env = || doctor().env("HOME", &dir_of("home"));
    assert_eq!(
        timeout(
            home_env()
                .arg("--profile=prod")
                .arg(&format!("--profile-dir={}", dir_of("profiles")))
        ),
        ("11s".into(), at(&explicit))
    );
    assert_eq!(
        timeout(
            home_env()
                .env("TUNNEL_CLIENT_PROFILE", "prod")
                .env("TUNNEL_CLIENT_PROFILE_DIR", &dir_of("profiles"))
        ),
        ("11s".into(), at(&explicit))
    );
    assert_eq!(
        timeout(
            home_env()
                .env("TUNNEL_CLIENT_PROFILE", "prod")
                .env("XDG_CONFIG_HOME", &dir_of("xdg"))
        ),
        ("12s".into(), at(&xdg))
    );
    assert_eq!(
        timeout(home_env().arg("--profile").arg("prod")),
        ("13s".into(), at(&home))
    );
    // A flag wins over every variable.
    assert_eq!(
        timeout(
            home_env()
                .env("TUNNEL_CLIENT_PROFILE", "prod")
                .arg(&format!("--profile-file={file}"))
        ),
        ("14s".into(), at(&file))
    );
    refused(
        home_env().arg("--profile=../prod"),
        &["--profile: \"../prod\" is not a profile name"],
    );
    refused(
        home_env().arg("--profile=absent"),
        &["home/.config/tunnel-client/absent.yaml: cannot read it"],
    );
    refused(
        home_env().env(
            "TUNNEL_CLIENT_PROFILE_FILE",
            &dir_of("elsewhere/staging.yml"),
        ),
        &["TUNNEL_CLIENT_PROFILE_FILE: must name a .yaml file"],
    );
}

#[test]
fn doctor_checks_what_the_yaml_file_says_and_reports_where_each_setting_came_from() {
    let dir = TempDir::new("yaml-doctor");
    let (control_plane, mcp) = (dead_loopback_url(""), dead_loopback_url("/mcp"));
    let file = write(
        dir.path(),
        "c.yaml",
        &format!(
            "config_version: 1\ncontrol_plane:\n  base_url: {control_plane}\n  tunnel_id: \
             {TUNNEL_ID}\n  api_key: {LITERAL_KEY}\nmcp:\n  server_urls:\n    - url: {mcp}\n"
        ),
    );
    let run = |json: bool| {
        let mut b = ClientBuilder::bare()
            .arg("doctor")
            .env("TUNNEL_CLIENT_CONFIG", &file);
        if json {
            b = b.arg("--json");
        }
        let (code, stdout, stderr) = finish(b.spawn());
        assert_eq!(code, Some(1), "nothing answers: {stdout}{stderr}");
        assert!(!stdout.contains(LITERAL_KEY) && !stderr.contains(LITERAL_KEY));
        stdout
    };
    let text = run(false);
    assert!(
        text.contains(&format!(
            "= <redacted>   (yaml {file}:5 control_plane.api_key)"
        )),
        "{text}"
    );
    assert!(text.contains("✗ control plane"), "{text}");
    let doc: serde_json::Value = serde_json::from_str(&run(true)).expect("one JSON document");
    let settings = doc["settings"].as_array().expect("settings");
    let base = settings
        .iter()
        .find(|s| s["flag"] == "--control-plane.base-url")
        .expect("base URL listed");
    assert_eq!(base["value"], control_plane.as_str());
    assert_eq!(
        base["origin"],
        format!("yaml {file}:3 control_plane.base_url").as_str()
    );
    assert!(settings.iter().all(|s| s["origin"] != "default"), "{doc}");
}
