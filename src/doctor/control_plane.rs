//! The control-plane check: `GET /v1/tunnels/{id}` with the headers `run` sends, which proves the
//! path, TLS and the API key without polling (a poll could take a real command).

use std::time::Duration;

use crate::config::{ChannelTransport, RunConfig};
use crate::control_plane;
use crate::http_client::{self, AgentOptions};
use crate::wire::TunnelMetadata;
use crate::wire::{ChannelInfo, SERVER_INFO_HEADER, ServerInfo};

use super::*;

pub(super) fn check_control_plane(cfg: &RunConfig, report: &mut Report) {
    let cp = &cfg.control_plane;
    if let Some(hop) = hop(
        "control plane",
        &cp.base_url,
        &cp.net,
        &CONTROL_PLANE_KEYS,
        report,
    ) && reach(&hop, report)
    {
        check_metadata(cfg, &hop, report);
    }
    report.skip(
        "control plane: poll",
        "skipped on purpose: a poll can hand out a real queued command, which doctor could not \
         answer, and the contract has no side-effect-free poll (`run` polls as soon as it starts)",
    );
}

/// `GET /v1/tunnels/{id}` with the headers `run` sends: proves the path, TLS and the key.
pub(super) fn check_metadata(cfg: &RunConfig, hop: &Hop<'_>, report: &mut Report) {
    let cp = &cfg.control_plane;
    let agent = match http_client::build_agent(
        &AgentOptions {
            max_idle_age: Duration::from_secs(90),
            max_idle_per_host: 1,
        },
        &cp.net,
    ) {
        Ok(agent) => agent,
        Err(e) => {
            report.fail(
                hop.name("HTTP client"),
                e,
                format!("correct {}", CONTROL_PLANE_KEYS.proxy),
            );
            return;
        }
    };
    let mut channels: Vec<ChannelInfo> = cfg
        .mcp
        .channels
        .iter()
        .map(|c| ChannelInfo {
            name: c.name.clone(),
            proc_affinity: matches!(c.transport, ChannelTransport::Stdio { .. }),
        })
        .collect();
    // As `run` declares it: the embedded server, while it has a target.
    if !cfg.mcp.harpoon.targets.is_empty() {
        channels.push(ChannelInfo {
            name: crate::config::harpoon::CHANNEL.to_string(),
            proc_affinity: true,
        });
    }
    let url = cp.tunnel_url();
    let mut req = agent.get(&url);
    for (name, value) in &cp.extra_headers {
        req = req.header(name.as_str(), value.expose());
    }
    let req = req
        .header("Authorization", format!("Bearer {}", cp.api_key.expose()))
        .header("Accept", "application/json")
        .header("X-Tunnel-Client-Name", control_plane::CLIENT_NAME)
        .header("X-Tunnel-Client-Version", env!("CARGO_PKG_VERSION"))
        .header("X-Tunnel-Client-Instance-Id", crate::crypto::random_hex(16))
        .header(SERVER_INFO_HEADER, ServerInfo::new(channels).to_header());
    let result = http_client::with_timeout(req, CHECK_TIMEOUT).call();
    let answered = first_answer(hop, result.as_ref().map(|_| ()), "auth", report);
    let (true, Ok(mut resp)) = (answered, result) else {
        return;
    };
    let status = resp.status().as_u16();
    let location = header(&resp, "location");
    let body = read_body(&mut resp);
    let path = format!("{}/v1/tunnels/{}", cp.url_path, cp.tunnel_id);
    let service = service_error(&body);
    let name = hop.name("auth");
    match status {
        200 => match serde_json::from_slice::<TunnelMetadata>(&body) {
            Ok(meta) => report.pass(
                name,
                format!(
                    "API key accepted for tunnel {} (name {:?}; GET {path} → 200)",
                    cp.tunnel_id,
                    shorten(&meta.name)
                ),
            ),
            Err(_) => report.fail(
                name,
                format!("GET {path} answered 200 but not with tunnel metadata"),
                "CONTROL_PLANE_BASE_URL or CONTROL_PLANE_URL_PATH points at something that is \
                 not the control plane",
            ),
        },
        401 => report.fail(
            name,
            format!("API key rejected: check CONTROL_PLANE_API_KEY (HTTP 401{service})"),
            "put this tunnel's runtime key in CONTROL_PLANE_API_KEY (or in OPENAI_API_KEY or \
             --control-plane.api-key, whichever you use); it may have been rotated",
        ),
        403 => report.fail(
            name,
            format!(
                "API key not allowed to use tunnel {} (HTTP 403{service})",
                cp.tunnel_id
            ),
            "check that CONTROL_PLANE_API_KEY belongs to the tunnel in CONTROL_PLANE_TUNNEL_ID \
             and may use it",
        ),
        404 => report.fail(
            name,
            format!("tunnel not found: GET {path} answered 404{service}"),
            "check CONTROL_PLANE_TUNNEL_ID, and behind an API gateway CONTROL_PLANE_URL_PATH",
        ),
        300..=399 => report.fail(
            name,
            format!(
                "GET {path} was redirected (HTTP {status}){}",
                location
                    .map(|l| format!(" to {}", shown_url(&l)))
                    .unwrap_or_default()
            ),
            "put the control plane's final origin in CONTROL_PLANE_BASE_URL (redirects are not \
             followed)",
        ),
        407 => report.fail(
            name,
            format!("a proxy asked for credentials (HTTP 407{service})"),
            format!(
                "give the proxy's credentials in {}",
                CONTROL_PLANE_KEYS.proxy
            ),
        ),
        429 | 500..=599 => report.fail(
            name,
            format!("the control plane answered HTTP {status}{service}"),
            "the service (or a gateway before it) has a problem or is rate limiting; try again \
             later",
        ),
        _ => report.fail(
            name,
            format!("GET {path} answered HTTP {status}{service}"),
            "check CONTROL_PLANE_BASE_URL, CONTROL_PLANE_URL_PATH and \
             CONTROL_PLANE_EXTRA_HEADERS",
        ),
    }
}

/// `: code: message` from a service error body, or nothing.
pub(super) fn service_error(body: &[u8]) -> String {
    serde_json::from_slice::<crate::wire::ApiErrorResponse>(body)
        .ok()
        .map(|e| {
            let message = shorten(&e.error.message);
            match e.error.code {
                Some(code) => format!(": {}: {message}", shorten(&code)),
                None => format!(": {message}"),
            }
        })
        .unwrap_or_default()
}
