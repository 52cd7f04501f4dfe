//! The official client's `run` settings for parts this build does not have (Harpoon's extras,
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
            Ignored,
            "--harpoon.additional-transport",
            &["HARPOON_ADDITIONAL_TRANSPORTS"],
            false,
            NO_TRANSPORTS,
        )
        .in_yaml("harpoon.additional_transports", List)
    },
    unsupported(
        Ignored,
        "--harpoon.capture-payloads",
        &["HARPOON_CAPTURE_PAYLOADS"],
        true,
        ADMIN_UI,
    )
    .in_yaml("harpoon.capture_payloads", Scalar),
    Opt {
        repeatable: true,
        ..unsupported(
            Ignored,
            "--harpoon.hosts-include-suffix",
            &["HARPOON_HOSTS_INCLUDE_SUFFIX"],
            false,
            AUTO_TARGETS,
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
            AUTO_TARGETS,
        )
        .in_yaml("harpoon.hosts_include_regex", List)
    },
    unsupported(
        Ignored,
        "--harpoon.hosts-include-loopback",
        &["HARPOON_HOSTS_INCLUDE_LOOPBACK"],
        true,
        AUTO_TARGETS,
    )
    .in_yaml("harpoon.hosts_include_loopback", Scalar),
    unsupported(
        Ignored,
        "--harpoon.hosts-include-private",
        &["HARPOON_HOSTS_INCLUDE_PRIVATE"],
        true,
        AUTO_TARGETS,
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

const NO_TRANSPORTS: &str =
    "Harpoon over the admin/health HTTP server; it is served on channel harpoon only";
const AUTO_TARGETS: &str = "which hosts count as private when OAuth discovery registers Harpoon \
                            targets by itself; targets are only the --harpoon.target ones here";
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
