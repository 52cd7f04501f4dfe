//! `--audit-log`: one JSON line per connector request, session termination, OAuth discovery and
//! event stream open/close, for a SIEM.
//!
//! A line says who called which tool through which tunnel, when, and how it ended: time,
//! tunnel name and id, channel, HTTP and JSON-RPC method, the tool/resource/prompt name (the
//! `Mcp-Name` header, else the body's `params.name` or `params.uri` without query or fragment),
//! the tunnel's connector auth mode, the caller's address, the client instance that served it
//! (the `X-Tunnel-Client-Instance-Id` of the poll it was delivered to; null when it reached no
//! client), status, outcome, latency and sizes.
//! Never arguments, results, keys, tokens or session ids: the body is read for `method` and
//! `params.name`/`params.uri` only, and no header but `Mcp-Name` is looked at.
//!
//! The file is created 0600 and appended to (one `write` per line, so concurrent lines never
//! interleave); SIGHUP reopens it, for logrotate. `-` is standard output.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::http_server::Request;

/// Longest name or method kept; longer ones are cut on a character boundary.
const MAX_TEXT: usize = 256;

enum Sink {
    Stdout,
    File(PathBuf, Option<File>),
}

/// The open audit log.
pub struct AuditLog {
    sink: Mutex<Sink>,
}

fn open_file(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl AuditLog {
    /// `-` for standard output, else a file path (created 0600 if missing).
    pub fn open(spec: &str) -> Result<AuditLog, String> {
        let sink = if spec == "-" {
            Sink::Stdout
        } else {
            let path = PathBuf::from(spec);
            let file = open_file(&path).map_err(|e| format!("cannot open {spec}: {e}"))?;
            Sink::File(path, Some(file))
        };
        Ok(AuditLog {
            sink: Mutex::new(sink),
        })
    }

    /// Reopens the file (after logrotate moved it); a failure is logged and the lines are lost
    /// until the next successful reopen.
    pub fn reopen(&self) {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Sink::File(path, file) = &mut *sink {
            *file = match open_file(path) {
                Ok(f) => Some(f),
                Err(e) => {
                    log::error!("audit log {}: cannot reopen: {e}", path.display());
                    None
                }
            };
        }
    }

    /// Writes one event as one line.
    pub fn write(&self, event: &Value) {
        let mut line = event.to_string();
        line.push('\n');
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let written = match &mut *sink {
            Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Sink::File(_, Some(f)) => f.write_all(line.as_bytes()),
            Sink::File(_, None) => Ok(()),
        };
        if let Err(e) = written {
            log::warn!("audit log: cannot write: {e}");
        }
    }
}

/// What is known of a request when it arrives, for its metrics and audit line.
#[derive(Debug, Clone)]
pub struct Call {
    pub event: &'static str,
    pub tunnel_id: String,
    /// The tunnel's name; `None` for an id the tunnels file does not have.
    pub tunnel: Option<String>,
    pub channel: Option<String>,
    pub http_method: String,
    pub rpc_method: Option<String>,
    /// A JSON-RPC response (no method, a result or an error).
    pub is_response: bool,
    /// Tool, resource or prompt name.
    pub name: Option<String>,
    /// The tunnel's connector auth mode (`relay-key` or `passthrough`).
    pub auth: Option<&'static str>,
    pub peer: SocketAddr,
    pub bytes_in: usize,
    pub started: Instant,
    /// The client instance the call's command was delivered to, set by its ticket when it ends
    /// ([`crate::relay::hub::Ticket::report_to`]).
    pub served_by: Arc<OnceLock<String>>,
}

/// The few members of a body read for the audit line.
#[derive(Deserialize)]
struct Peek {
    method: Option<String>,
    params: Option<PeekParams>,
    #[serde(default)]
    result: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct PeekParams {
    name: Option<String>,
    uri: Option<String>,
}

fn cut(text: &str) -> String {
    let mut text = text.to_string();
    crate::text::truncate_on_char_boundary(&mut text, MAX_TEXT);
    text
}

/// What a call is made from: a request, or only its head (a refusal at admission).
pub struct Head<'a> {
    pub method: &'a str,
    pub mcp_name: Option<&'a str>,
    pub body: &'a [u8],
    pub peer: SocketAddr,
}

impl<'a> Head<'a> {
    pub fn of(req: &'a Request) -> Head<'a> {
        Head {
            method: &req.method,
            mcp_name: req.header("Mcp-Name"),
            body: &req.body,
            peer: req.peer,
        }
    }
}

impl Call {
    /// A request to `/v1/mcp/{tunnel_id}…`, before it is handled.
    pub fn of(req: &Head<'_>, event: &'static str, tunnel_id: &str) -> Call {
        let peek: Option<Peek> = (req.method == "POST")
            .then(|| serde_json::from_slice(req.body).ok())
            .flatten();
        let header_name = req.mcp_name.map(str::to_string);
        let (rpc_method, is_response, body_name) = match peek {
            Some(p) => {
                let is_response = p.method.is_none() && (p.result.is_some() || p.error.is_some());
                let name = p.params.and_then(|params| {
                    params.name.or_else(|| {
                        // A resource URI without its query or fragment, which may carry tokens.
                        params
                            .uri
                            .map(|u| u.split(['?', '#']).next().unwrap_or_default().to_string())
                    })
                });
                (p.method, is_response, name)
            }
            None => (None, false, None),
        };
        Call {
            event,
            tunnel_id: cut(tunnel_id),
            tunnel: None,
            channel: None,
            http_method: cut(req.method),
            rpc_method: rpc_method.as_deref().map(cut),
            is_response,
            name: header_name.or(body_name).as_deref().map(cut),
            auth: None,
            peer: req.peer,
            bytes_in: req.body.len(),
            started: Instant::now(),
            served_by: Arc::default(),
        }
    }

    /// The audit line of this call as it ended.
    pub fn line(
        &self,
        status: u16,
        outcome: &str,
        took: Duration,
        bytes_out: Option<usize>,
    ) -> Value {
        json!({
            "ts": super::hub::now_rfc3339(),
            "event": self.event,
            "tunnel": self.tunnel,
            "tunnel_id": self.tunnel_id,
            "channel": self.channel,
            "http_method": self.http_method,
            "rpc_method": self.rpc_method,
            "name": self.name,
            "auth": self.auth,
            "peer": self.peer.to_string(),
            "client_instance": self.served_by.get().map(|i| cut(i)),
            "status": status,
            "outcome": outcome,
            "latency_ms": took.as_secs_f64() * 1000.0,
            "bytes_in": self.bytes_in,
            "bytes_out": bytes_out,
        })
    }
}
