//! Synthesized JSON-RPC errors for failures that are not the MCP server's own answer.
//!
//! Every such failure becomes `-32603` with bounded provenance at `error.data.tunnel_failure`
//! (`source`, `upstream_response_received`, optional `upstream_status` and
//! `transport_error_kind`). The provenance never carries URLs, bodies, error text or secrets: it
//! crosses to the connector, a party outside the private network.

use std::io;

use serde_json::{Value, json};

/// Where a failure happened, as the contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A real 4xx/5xx from the MCP server that was not a valid JSON-RPC error.
    TargetHttp,
    Dns,
    Tls,
    Connect,
    /// The connection or stream ended before the answer was complete.
    TransportClosed,
    Timeout,
    /// The MCP server answered, but not in a way the protocol allows.
    Protocol,
    ClientInternal,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::TargetHttp => "target_http",
            Source::Dns => "dns",
            Source::Tls => "tls",
            Source::Connect => "connect",
            Source::TransportClosed => "transport_closed",
            Source::Timeout => "timeout",
            Source::Protocol => "protocol",
            Source::ClientInternal => "client_internal",
        }
    }
}

/// One failure, ready to be turned into a JSON-RPC error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub source: Source,
    /// The MCP server's HTTP status, when one was received (only for `TargetHttp`).
    pub upstream_status: Option<u16>,
    /// A value from the contract's `transport_error_kind` list.
    pub kind: Option<&'static str>,
}

impl Failure {
    pub fn new(source: Source, kind: &'static str) -> Failure {
        Failure {
            source,
            upstream_status: None,
            kind: Some(kind),
        }
    }

    /// A 4xx/5xx status whose body was not a usable JSON-RPC error.
    pub fn target_http(status: u16) -> Failure {
        Failure {
            source: Source::TargetHttp,
            upstream_status: Some(status),
            kind: Some("http_status"),
        }
    }

    /// Classifies an error from the HTTP client, raised before the response headers arrived.
    pub fn from_ureq(e: &ureq::Error) -> Failure {
        match e {
            ureq::Error::HostNotFound => Failure::new(Source::Dns, "dns"),
            ureq::Error::Timeout(_) => Failure::new(Source::Timeout, "timeout"),
            ureq::Error::Tls(_) | ureq::Error::Pem(_) | ureq::Error::Rustls(_) => {
                Failure::new(Source::Tls, "tls")
            }
            ureq::Error::ConnectionFailed | ureq::Error::ConnectProxyFailed(_) => {
                Failure::new(Source::Connect, "dial")
            }
            ureq::Error::Protocol(_)
            | ureq::Error::LargeResponseHeader(..)
            | ureq::Error::TooManyRedirects
            | ureq::Error::RedirectFailed => {
                Failure::new(Source::Protocol, "invalid_protocol_response")
            }
            ureq::Error::Io(io) => Failure::from_io(io),
            _ => Failure::new(Source::ClientInternal, "unknown"),
        }
    }

    /// Classifies an I/O error (connecting, or reading a response body).
    pub fn from_io(e: &io::Error) -> Failure {
        if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
            return Failure::new(Source::Tls, "tls");
        }
        use io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => Failure::new(Source::Connect, "connection_refused"),
            K::HostUnreachable => Failure::new(Source::Connect, "host_unreachable"),
            K::NetworkUnreachable => Failure::new(Source::Connect, "network_unreachable"),
            K::AddrNotAvailable => Failure::new(Source::Connect, "dial"),
            K::TimedOut | K::WouldBlock => Failure::new(Source::Timeout, "timeout"),
            K::ConnectionReset => Failure::new(Source::TransportClosed, "connection_reset"),
            K::ConnectionAborted => Failure::new(Source::TransportClosed, "connection_aborted"),
            K::BrokenPipe => Failure::new(Source::TransportClosed, "closed_pipe"),
            K::UnexpectedEof => Failure::new(Source::TransportClosed, "unexpected_eof"),
            K::InvalidData => Failure::new(Source::Protocol, "invalid_protocol_response"),
            _ => Failure::new(Source::TransportClosed, "response_body_unreadable"),
        }
    }

    /// A few words for operators (logs, `/readyz`), e.g. "connection refused".
    pub fn describe(&self) -> String {
        if let Some(status) = self.upstream_status {
            return format!("HTTP {status}");
        }
        match self.kind {
            Some("connection_refused") => "connection refused".into(),
            Some("dns") => "DNS lookup failed".into(),
            Some("tls") => "TLS handshake failed (check the CA bundle)".into(),
            Some("timeout") => "timed out".into(),
            Some(kind) => format!("{} ({kind})", self.source.as_str().replace('_', " ")),
            None => self.source.as_str().replace('_', " "),
        }
    }

    /// `resp_code` for the posted answer: the upstream status if one was received, else 502.
    pub fn resp_code(&self) -> u16 {
        self.upstream_status.unwrap_or(502)
    }

    /// The `tunnel_failure` object.
    pub fn provenance(&self) -> Value {
        let mut p = json!({
            "version": 1,
            "source": self.source.as_str(),
            "upstream_response_received": self.upstream_status.is_some(),
        });
        if let Some(status) = self.upstream_status {
            p["upstream_status"] = json!(status);
        }
        if let Some(kind) = self.kind {
            p["transport_error_kind"] = json!(kind);
        }
        p
    }

    /// The full `-32603` JSON-RPC error for the request `id` (null when the id is unknown).
    pub fn to_jsonrpc(&self, id: &Value) -> String {
        error_response(
            id,
            reason_phrase(self.resp_code()),
            Some(json!({ "tunnel_failure": self.provenance() })),
        )
    }
}

/// A `-32603` JSON-RPC error response with an optional `data` member, members in the usual
/// order (`jsonrpc`, `id`, `error`) for people reading it.
pub fn error_response(id: &Value, message: &str, data: Option<Value>) -> String {
    #[derive(serde::Serialize)]
    struct Response<'a> {
        jsonrpc: &'static str,
        id: &'a Value,
        error: Error<'a>,
    }
    #[derive(serde::Serialize)]
    struct Error<'a> {
        code: i32,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
    }
    let response = Response {
        jsonrpc: "2.0",
        id,
        error: Error {
            code: -32603,
            message,
            data,
        },
    };
    serde_json::to_string(&response).expect("strings and JSON values always serialize")
}

/// The standard reason phrase for an HTTP status, e.g. 502 → "Bad Gateway".
pub fn reason_phrase(status: u16) -> &'static str {
    ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Upstream Error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_refused_is_502_without_upstream() {
        let f = Failure::from_io(&io::Error::from(io::ErrorKind::ConnectionRefused));
        let body: Value = serde_json::from_str(&f.to_jsonrpc(&json!(7))).unwrap();
        assert_eq!(f.resp_code(), 502);
        assert_eq!(body["id"], 7);
        assert_eq!(body["error"]["code"], -32603);
        assert_eq!(body["error"]["message"], "Bad Gateway");
        let p = &body["error"]["data"]["tunnel_failure"];
        assert_eq!(p["source"], "connect");
        assert_eq!(p["upstream_response_received"], false);
        assert_eq!(p["transport_error_kind"], "connection_refused");
        assert!(p.get("upstream_status").is_none());
    }

    #[test]
    fn target_http_carries_the_status() {
        let f = Failure::target_http(503);
        let body: Value = serde_json::from_str(&f.to_jsonrpc(&json!("a"))).unwrap();
        assert_eq!(f.resp_code(), 503);
        assert_eq!(body["error"]["message"], "Service Unavailable");
        let p = &body["error"]["data"]["tunnel_failure"];
        assert_eq!(p["source"], "target_http");
        assert_eq!(p["upstream_status"], 503);
        assert_eq!(p["upstream_response_received"], true);
    }

    #[test]
    fn dns_and_timeout_are_classified() {
        assert_eq!(
            Failure::from_ureq(&ureq::Error::HostNotFound).source,
            Source::Dns
        );
        let t = Failure::from_io(&io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(t.source, Source::Timeout);
        let eof = Failure::from_io(&io::Error::from(io::ErrorKind::UnexpectedEof));
        assert_eq!(eof.source, Source::TransportClosed);
    }
}
