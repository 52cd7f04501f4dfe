//! The OAuth check of an HTTP `main`: `run`'s own discovery (the one behind the
//! `oauth_discovery` command and the start-up report), on the channel's transport, worded as
//! "main is OAuth-protected: PRMD at …, authorization server …" or "main: no OAuth metadata".
//! Informational unless `--mcp.require-oauth-discovery` is set, when finding no metadata fails.

use std::time::Instant;

use crate::config::RunConfig;
use crate::mcp::http::HttpTransport;
use crate::mcp::oauth_discovery::NotFound;
use crate::net::HopNet;

use super::*;

/// The check's name.
const NAME: &str = "channel main: OAuth";

pub(super) fn check_oauth(cfg: &RunConfig, url: &str, net: &HopNet, report: &mut Report) {
    let Ok(transport) = HttpTransport::new(url, net, &cfg.mcp) else {
        return; // the channel's own checks reported it
    };
    let required = cfg.mcp.discovery.required;
    let found = transport
        .oauth_discovery(&cfg.mcp.discovery)
        .run(Instant::now() + CHECK_TIMEOUT);
    let fix = "see \"OAuth-protected MCP servers\" in the README; or unset \
               MCP_REQUIRE_OAUTH_DISCOVERY";
    match found {
        Ok(found) => report.pass(
            NAME,
            format!(
                "main is OAuth-protected: PRMD at {}, authorization server {}",
                shown_url(&found.prmd_url),
                found
                    .authorization_server
                    .as_deref()
                    .map_or("(none named)".to_string(), shown_url)
            ),
        ),
        Err(NotFound::NoMetadata(_)) if !required => report.skip(NAME, "main: no OAuth metadata"),
        Err(NotFound::NoMetadata(_)) => report.fail(NAME, "main: no OAuth metadata", fix),
        Err(NotFound::Failed(why)) => {
            let detail = format!("main: OAuth discovery failed: {}", shorten(&why));
            if required {
                report.fail(NAME, detail, fix);
            } else {
                report.skip(NAME, detail);
            }
        }
    }
}
