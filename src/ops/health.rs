//! The health server of `mcp-tunnel run`: `GET /healthz` (alive), `GET /readyz` (polling works and
//! every channel's MCP server is reachable; otherwise 503 with the reason) and `GET /metrics`
//! (Prometheus text). `?format=json` gives `/healthz` and `/readyz` as JSON; the latter also
//! reports the start-up OAuth discovery of an HTTP `main` under `"oauth"`.
//!
//! It listens on loopback by default: it tells anyone who asks how the tunnel is doing, and it is
//! meant for the host's own probes and scrapers.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use super::{OAuthStatus, Readiness};
use crate::http_server::{Limits, Request, Response, Server};

/// What the server reports on; implemented by the running client.
pub trait Report: Send + Sync + 'static {
    fn readiness(&self) -> Readiness;
    fn metrics(&self) -> String;
}

/// Limits for a server that only ever answers tiny GETs.
fn limits() -> Limits {
    Limits {
        max_connections: 64,
        max_body_bytes: 0,
        ..Limits::default()
    }
}

/// A running health server and the URL file it wrote, removed when it stops.
pub struct HealthServer {
    server: Server,
    url_file: Option<PathBuf>,
}

impl HealthServer {
    /// Binds `addr` and serves; writes `http://ADDR` to `url_file` (atomically) when given.
    pub fn start(
        addr: &str,
        url_file: Option<&Path>,
        report: Arc<dyn Report>,
    ) -> Result<HealthServer, String> {
        let listener =
            TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let server = Server::start(listener, None, limits(), move |req| handle(&*report, &req))
            .map_err(|e| format!("cannot start the health server: {e}"))?;
        if let Some(path) = url_file {
            write_atomically(path, &format!("http://{}\n", server.local_addr()))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(HealthServer {
            server,
            url_file: url_file.map(Path::to_path_buf),
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    pub fn stop(self) {
        if let Some(path) = &self.url_file {
            let _ = std::fs::remove_file(path);
        }
        self.server.shutdown();
    }
}

fn handle(report: &dyn Report, req: &Request) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return Response::new(405, "method not allowed\n").with_header("Allow", "GET, HEAD");
    }
    let json = req.query_param("format").as_deref() == Some("json");
    match req.path() {
        "/healthz" if json => Response::json(200, json!({"status": "alive"}).to_string()),
        "/healthz" => text(200, "ok\n".to_string()),
        "/readyz" => {
            let r = report.readiness();
            let status = if r.ready { 200 } else { 503 };
            if json {
                let mut body = json!({
                    "status": if r.ready { "ready" } else { "not_ready" },
                    "reason": r.reason,
                    "checks": r.checks.iter().map(|(k, v)| (k.clone(), json!({
                        "ok": v.is_none(),
                        "reason": v,
                    }))).collect::<serde_json::Map<_, _>>(),
                });
                if let Some(oauth) = &r.oauth {
                    body["oauth"] = oauth_json(oauth);
                }
                Response::json(status, body.to_string())
            } else {
                text(status, format!("{}\n", r.reason))
            }
        }
        "/metrics" => Response::new(200, report.metrics())
            .with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
        _ => text(
            404,
            "not found: try /healthz, /readyz or /metrics\n".to_string(),
        ),
    }
}

/// `{"state": "protected" | "none" | "pending" | "failed", …}`.
fn oauth_json(status: &OAuthStatus) -> serde_json::Value {
    match status {
        OAuthStatus::Pending => json!({"state": "pending"}),
        OAuthStatus::None => json!({"state": "none"}),
        OAuthStatus::Failed(why) => json!({"state": "failed", "error": why}),
        OAuthStatus::Protected {
            metadata_url,
            authorization_server,
        } => json!({
            "state": "protected",
            "metadata_url": metadata_url,
            "authorization_server": authorization_server,
        }),
    }
}

fn text(status: u16, body: String) -> Response {
    Response::new(status, body).with_header("Content-Type", "text/plain; charset=utf-8")
}

/// Writes through a temporary file in the same directory and a rename, so a reader never sees
/// half a URL.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
