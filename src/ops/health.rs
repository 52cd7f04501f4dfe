//! The health server of `mcp-tunnel run`: `GET /healthz` (alive), `GET /readyz` (polling works and
//! every channel's MCP server is reachable; otherwise 503 with the reason) and `GET /metrics`
//! (Prometheus text). `?format=json` gives `/healthz` and `/readyz` as JSON; the latter also
//! reports the start-up OAuth discovery of an HTTP `main` under `"oauth"`.
//!
//! It listens on loopback by default: it tells anyone who asks how the tunnel is doing, and it is
//! meant for the host's own probes and scrapers. With `--health.unix-socket` it listens on a
//! Unix-domain socket instead (mode 0600: only our user may ask) and binds no TCP port; the URL
//! file then holds `http+unix://` and the socket path in unpadded base64url, as the official
//! client writes it. A stale socket left by a crash is replaced; a live one, or any other file at
//! that path, is an error. The socket is removed on a clean exit.

use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use super::{OAuthStatus, Readiness};
use crate::http_server::{Limits, Request, Response, Server};

/// What the server reports on; implemented by the running client.
pub trait Report: Send + Sync + 'static {
    fn readiness(&self) -> Readiness;
    fn metrics(&self) -> String;
    /// Routes served before the health routes (the relay's status page); `None`: not one.
    fn route(&self, _req: &Request) -> Option<Response> {
        None
    }
    /// Largest request body accepted; 0 (the default) refuses any.
    fn max_body(&self) -> usize {
        0
    }
}

/// Limits for a server that answers tiny requests only.
fn limits(max_body_bytes: usize) -> Limits {
    Limits {
        max_connections: 64,
        max_body_bytes,
        ..Limits::default()
    }
}

/// A running health server and the URL file it wrote, removed when it stops.
pub struct HealthServer {
    server: Server,
    url_file: Option<PathBuf>,
    /// The Unix socket it listens on, removed when it stops.
    socket: Option<PathBuf>,
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
        let server = Server::start(listener, None, limits(report.max_body()), move |req| {
            handle(&*report, &req)
        })
        .map_err(|e| format!("cannot start the health server: {e}"))?;
        if let Some(path) = url_file {
            write_atomically(path, &format!("http://{}\n", server.local_addr()))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(HealthServer {
            server,
            url_file: url_file.map(Path::to_path_buf),
            socket: None,
        })
    }

    /// Listens on a Unix socket at `socket` (mode 0600) and serves; writes
    /// `http+unix://<base64url(path)>` to `url_file` when given.
    pub fn start_unix(
        socket: &Path,
        url_file: Option<&Path>,
        report: Arc<dyn Report>,
    ) -> Result<HealthServer, String> {
        let shown = socket.display();
        remove_stale_socket(socket)?;
        let listener =
            UnixListener::bind(socket).map_err(|e| format!("cannot listen on {shown}: {e}"))?;
        let mut server = HealthServer {
            server: Server::start_unix(
                listener,
                socket.to_path_buf(),
                limits(report.max_body()),
                move |req| handle(&*report, &req),
            )
            .map_err(|e| format!("cannot start the health server: {e}"))?,
            url_file: None,
            socket: Some(socket.to_path_buf()),
        };
        let ready = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot make {shown} private: {e}"))
            .and_then(|()| match url_file {
                None => Ok(()),
                Some(path) => write_atomically(path, &format!("{}\n", unix_url(socket)))
                    .map_err(|e| format!("cannot write {}: {e}", path.display())),
            });
        if let Err(e) = ready {
            server.stop(); // removes the socket
            return Err(e);
        }
        server.url_file = url_file.map(Path::to_path_buf);
        Ok(server)
    }

    /// Where it listens, for the log: `http://ADDR`, or the socket path.
    pub fn describe(&self) -> String {
        match &self.socket {
            Some(path) => format!("unix socket {}", path.display()),
            None => format!("http://{}", self.server.local_addr()),
        }
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    pub fn stop(self) {
        if let Some(path) = &self.url_file {
            let _ = std::fs::remove_file(path);
        }
        self.server.shutdown();
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Makes room for the socket: nothing there is fine; a socket nobody answers on (left by a
/// crash) is removed; a socket in use, or any other kind of file, is an error.
fn remove_stale_socket(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot inspect {shown}: {e}")),
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{shown} exists and is not a socket; remove it or choose another path"
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(format!(
            "{shown} is in use: another process accepts connections on it"
        ));
    }
    std::fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket {shown}: {e}"))
}

/// `http+unix://` and the path in base64url without padding (RFC 4648 §5), as the official
/// client's health URL file holds it.
pub fn unix_url(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = path.as_os_str().as_bytes();
    let mut out = String::from("http+unix://");
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn handle(report: &dyn Report, req: &Request) -> Response {
    if let Some(resp) = report.route(req) {
        return resp;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_urls_are_unpadded_base64url() {
        // RFC 4648 test vectors, and a path whose encoding needs the URL-safe letters.
        let url = |p: &str| unix_url(Path::new(p));
        assert_eq!(url("f"), "http+unix://Zg");
        assert_eq!(url("fo"), "http+unix://Zm8");
        assert_eq!(url("foo"), "http+unix://Zm9v");
        assert_eq!(url("foob"), "http+unix://Zm9vYg");
        assert_eq!(
            url("/run/t/health.sock"),
            "http+unix://L3J1bi90L2hlYWx0aC5zb2Nr"
        );
        assert_eq!(url("/??>"), "http+unix://Lz8_Pg");
        assert_eq!(url("/~~~"), "http+unix://L35-fg");
    }
}
