//! The official client's `run` settings for parts this build does not have (Harpoon,
//! cloudflared, the admin UI, …), as option rows appended to [`RUN_OPTIONS`](super::RUN_OPTIONS):
//! each is refused or ignored by name when given — by a flag, the environment or its key in the
//! YAML config file. A switch given as false is simply honoured: the part is off.

use super::table::{Opt, Unsupported, YamlShape};

use Unsupported::{Ignored, Refused};
use YamlShape::{List, Scalar};

pub(super) const OFFICIAL_ONLY: &[Opt] = &[
    Opt {
        repeatable: true,
        ..unsupported(
            Refused,
            "--harpoon.target",
            &["HARPOON_TARGETS"],
            false,
            HARPOON,
        )
        .in_yaml("harpoon.targets", HARPOON_TARGET)
    },
    unsupported(
        Ignored,
        "--harpoon.allow-plaintext-http",
        &["HARPOON_ALLOW_PLAINTEXT_HTTP"],
        true,
        NO_TARGETS,
    )
    .in_yaml("harpoon.allow_plaintext_http", Scalar),
    unsupported(
        Ignored,
        "--harpoon.max-response-bytes",
        &["HARPOON_MAX_RESPONSE_BYTES"],
        false,
        NO_TARGETS,
    )
    .in_yaml("harpoon.max_response_bytes", Scalar),
    unsupported(
        Ignored,
        "--harpoon.max-redirects",
        &["HARPOON_MAX_REDIRECTS"],
        false,
        NO_TARGETS,
    )
    .in_yaml("harpoon.max_redirects", Scalar),
    unsupported(
        Ignored,
        "--harpoon.http-proxy",
        &["HARPOON_HTTP_PROXY"],
        false,
        NO_TARGETS,
    )
    .in_yaml("harpoon.http_proxy", Scalar),
    Opt {
        repeatable: true,
        ..unsupported(
            Ignored,
            "--harpoon.additional-transport",
            &["HARPOON_ADDITIONAL_TRANSPORTS"],
            false,
            NO_TARGETS,
        )
        .in_yaml("harpoon.additional_transports", List)
    },
    unsupported(
        Ignored,
        "--harpoon.capture-payloads",
        &["HARPOON_CAPTURE_PAYLOADS"],
        true,
        NO_TARGETS,
    )
    .in_yaml("harpoon.capture_payloads", Scalar),
    Opt {
        repeatable: true,
        ..unsupported(
            Ignored,
            "--harpoon.hosts-include-suffix",
            &["HARPOON_HOSTS_INCLUDE_SUFFIX"],
            false,
            NO_TARGETS,
        )
        .in_yaml("harpoon.hosts_include_suffix", List)
    },
    Opt {
        repeatable: true,
        ..unsupported(
            Ignored,
            "--harpoon.hosts-include-regex",
            &["HARPOON_HOSTS_INCLUDE_REGEX"],
            false,
            NO_TARGETS,
        )
        .in_yaml("harpoon.hosts_include_regex", List)
    },
    unsupported(
        Ignored,
        "--harpoon.hosts-include-loopback",
        &["HARPOON_HOSTS_INCLUDE_LOOPBACK"],
        true,
        NO_TARGETS,
    )
    .in_yaml("harpoon.hosts_include_loopback", Scalar),
    unsupported(
        Ignored,
        "--harpoon.hosts-include-private",
        &["HARPOON_HOSTS_INCLUDE_PRIVATE"],
        true,
        NO_TARGETS,
    )
    .in_yaml("harpoon.hosts_include_private", Scalar),
    unsupported(
        Refused,
        "--cloudflared.managed",
        &["CLOUDFLARED_MANAGED"],
        true,
        CLOUDFLARED,
    )
    .in_yaml("cloudflared.managed", Scalar),
    unsupported(
        Refused,
        "--cloudflared.token",
        &["CLOUDFLARED_TUNNEL_TOKEN"],
        false,
        CLOUDFLARED,
    )
    .in_yaml("cloudflared.token", Scalar),
    unsupported(
        Ignored,
        "--cloudflared.path",
        &["CLOUDFLARED_PATH"],
        false,
        CLOUDFLARED,
    )
    .in_yaml("cloudflared.path", Scalar),
    unsupported(
        Ignored,
        "--cloudflared.ready-timeout",
        &["CLOUDFLARED_READY_TIMEOUT"],
        false,
        CLOUDFLARED,
    )
    .in_yaml("cloudflared.ready_timeout", Scalar),
    unsupported(
        Refused,
        "--embedded-mcp-stub",
        &[],
        true,
        "the embedded demo MCP + OAuth stub; run `mcp-tunnel stub` (or `mcp-tunnel demo`) beside the client instead",
    ),
    unsupported(
        Refused,
        "--mcp.stdio-send-initialized-notification",
        &["MCP_STDIO_SEND_INITIALIZED_NOTIFICATION"],
        true,
        "the stdio initialized-notification shim; a stdio channel forwards the host's own notifications/initialized, once per child",
    ),
    unsupported(
        Ignored,
        "--allow-remote-ui",
        &["ALLOW_REMOTE_UI"],
        true,
        ADMIN_UI,
    )
    .in_yaml("admin_ui.allow_remote", Scalar),
    unsupported(Ignored, "--open-web-ui", &["OPEN_WEB_UI"], true, ADMIN_UI)
        .in_yaml("admin_ui.open_browser", Scalar),
    unsupported(
        Ignored,
        "--admin-ui.log-buffer-events",
        &["ADMIN_UI_LOG_BUFFER_EVENTS"],
        false,
        ADMIN_UI,
    )
    .in_yaml("admin_ui.log_buffer_events", Scalar),
    unsupported(
        Ignored,
        "--proxy.check-interval",
        &["PROXY_CHECK_INTERVAL"],
        false,
        "periodic proxy health checks; a proxy failure shows in the logs and /readyz when it happens",
    )
    .in_yaml("proxy.check_interval", Scalar),
    unsupported(
        Ignored,
        "--health.show-details",
        &["HEALTH_SHOW_DETAILS"],
        true,
        "the /health detail routes; /healthz, /readyz (?format=json) and /metrics are served",
    ),
];

/// `harpoon.targets[]` as `label=…,url=…,unix-socket=…,desc=…` entries.
const HARPOON_TARGET: YamlShape = YamlShape::Entries(
    &[
        ("label", "label"),
        ("url", "url"),
        ("unix_socket", "unix-socket"),
        ("description", "desc"),
    ],
    "label",
    "",
);

const HARPOON: &str = "Harpoon (the embedded MCP server on channel harpoon) is not built in yet";
const NO_TARGETS: &str = "Harpoon is not built in yet, and without targets this has no effect";
const CLOUDFLARED: &str = "the cloudflared companion is not shipped";
const ADMIN_UI: &str = "the embedded admin web UI is not shipped";

/// An official client's option this build lacks (see [`Unsupported`]); `why` is its help line.
const fn unsupported(
    kind: Unsupported,
    flag: &'static str,
    env: &'static [&'static str],
    switch: bool,
    why: &'static str,
) -> Opt {
    Opt {
        flag,
        env,
        default: Some(""),
        help: why,
        switch,
        unsupported: Some(kind),
        ..Opt::BASE
    }
}
