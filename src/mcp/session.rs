//! The steps of an MCP client session — `initialize`, `notifications/initialized`, `tools/list`
//! over every page, and the session's end — spoken through the same transports that forward a
//! host's messages in `run`: the same agent, header decoration, event-stream reading, stdio child
//! and its isolation. `doctor` drives them, so "doctor passed" means `run`'s code reached the server.
//!
//! A [`Session`] carries what a host sends back on each later request: `Mcp-Session-Id` once the
//! server issued one, `MCP-Protocol-Version` once negotiated. Each step returns what the server
//! said, or a [`StepError`] saying how the exchange failed; wording for people is the caller's.

use std::time::Instant;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{Headers, Outcome, Reply, Transport};
use crate::failure::{Failure, Source};

/// One exchange with the MCP server, as a [`Session`] needs it.
pub trait Exchange {
    /// Sends one JSON-RPC message with `headers` (as a command would carry them).
    fn send(
        &mut self,
        message: &RawValue,
        headers: &[(String, String)],
        deadline: Instant,
    ) -> Outcome;
    /// Ends the MCP session (`DELETE` over HTTP).
    fn terminate(&mut self, headers: &[(String, String)], deadline: Instant) -> Outcome;
}

impl Exchange for &Transport {
    fn send(
        &mut self,
        message: &RawValue,
        headers: &[(String, String)],
        deadline: Instant,
    ) -> Outcome {
        self.call(message, headers, Some(deadline), &mut |_, _| {})
    }

    fn terminate(&mut self, headers: &[(String, String)], deadline: Instant) -> Outcome {
        self.terminate_session(headers, Some(deadline))
    }
}

/// Who is asking: `initialize`'s `clientInfo` and requested protocol version.
pub struct Hello<'a> {
    pub client_name: &'a str,
    pub client_version: &'a str,
    pub protocol_version: &'a str,
}

/// What the server said of itself in its `initialize` result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    pub name: Option<String>,
    pub version: Option<String>,
    /// The protocol version it chose.
    pub protocol: Option<String>,
    /// Whether it declares the tools capability (true when it declares no capabilities at all:
    /// then asking is the only way to know).
    pub has_tools: bool,
}

/// How a step failed.
#[derive(Debug, Clone, PartialEq)]
pub enum StepError {
    /// No usable answer: the transport failed, or the server's answer broke the protocol.
    Failed(Failure),
    /// The server answered with a status that is not 2xx; its JSON-RPC error when it sent one.
    Refused {
        status: u16,
        error: Option<Value>,
        headers: Headers,
    },
    /// The server answered with a JSON-RPC error (its `error` object).
    Rpc(Value),
    /// The answer is JSON-RPC but not what the step asked for.
    Unusable(&'static str),
    /// The deadline passed before the answer.
    Expired,
}

/// Most `tools/list` pages [`Session::list_tools`] follows: a server whose cursor never ends
/// cannot hold the caller.
pub const MAX_TOOL_PAGES: usize = 20;

/// One MCP session over an [`Exchange`].
pub struct Session<E> {
    exchange: E,
    /// Headers every later request carries: the issued session id, the negotiated version.
    headers: Vec<(String, String)>,
    next_id: u64,
}

impl<E: Exchange> Session<E> {
    pub fn new(exchange: E) -> Session<E> {
        Session {
            exchange,
            headers: Vec::new(),
            next_id: 1,
        }
    }

    /// The exchange, for a caller that observes it.
    pub fn exchange_mut(&mut self) -> &mut E {
        &mut self.exchange
    }

    /// The session id the server issued, if it did.
    pub fn session_id(&self) -> Option<&str> {
        self.header("mcp-session-id")
    }

    /// `initialize`; keeps the issued session id and the negotiated version for later steps.
    pub fn initialize(
        &mut self,
        hello: &Hello<'_>,
        deadline: Instant,
    ) -> Result<ServerHello, StepError> {
        let request = json!({
            "jsonrpc": "2.0",
            "id": self.take_id(),
            "method": "initialize",
            "params": {
                "protocolVersion": hello.protocol_version,
                "capabilities": {},
                "clientInfo": {"name": hello.client_name, "version": hello.client_version},
            },
        });
        let (result, headers) = self.request(&request, deadline)?;
        if let Some(id) = first(&headers, "mcp-session-id") {
            self.headers.push(("Mcp-Session-Id".to_string(), id));
        }
        let text = |v: &Value| v.as_str().map(str::to_string);
        let protocol = text(&result["protocolVersion"]);
        if let Some(version) = &protocol {
            self.headers
                .push(("MCP-Protocol-Version".to_string(), version.clone()));
        }
        Ok(ServerHello {
            name: text(&result["serverInfo"]["name"]),
            version: text(&result["serverInfo"]["version"]),
            protocol,
            has_tools: match result.get("capabilities") {
                Some(Value::Object(caps)) => caps.contains_key("tools"),
                _ => true,
            },
        })
    }

    /// `notifications/initialized`; the status the server acknowledged it with.
    pub fn initialized(&mut self, deadline: Instant) -> Result<u16, StepError> {
        let message = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let reply = self.exchange(&message, deadline, |e, m, h, d| e.send(m, h, d))?;
        Ok(reply.resp_code)
    }

    /// `tools/list`, following `nextCursor` for at most [`MAX_TOOL_PAGES`] pages (and not past
    /// `deadline`); the number of tools.
    pub fn list_tools(&mut self, deadline: Instant) -> Result<usize, StepError> {
        let mut count = 0;
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_TOOL_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let request = json!({
                "jsonrpc": "2.0", "id": self.take_id(), "method": "tools/list", "params": params,
            });
            let (result, _) = self.request(&request, deadline)?;
            let tools = result["tools"].as_array().ok_or(StepError::Unusable(
                "the tools/list answer has no tools array",
            ))?;
            count += tools.len();
            match result["nextCursor"].as_str() {
                Some(next) if !next.is_empty() => cursor = Some(next.to_string()),
                _ => return Ok(count),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Ok(count)
    }

    /// Ends the session the server issued (`DELETE`); `None` when it issued none. The status is
    /// the server's (it may refuse client-ended sessions with 405).
    pub fn end(&mut self, deadline: Instant) -> Option<Result<u16, StepError>> {
        self.session_id()?;
        let headers = self.headers.clone();
        Some(match self.exchange.terminate(&headers, deadline) {
            Outcome::Reply(reply) => Ok(reply.resp_code),
            Outcome::Expired | Outcome::Cancelled => Err(StepError::Expired),
        })
    }

    /// A request and its `result` (with the answer's headers).
    fn request(
        &mut self,
        request: &Value,
        deadline: Instant,
    ) -> Result<(Value, Headers), StepError> {
        let reply = self.exchange(request, deadline, |e, m, h, d| e.send(m, h, d))?;
        let answer: Value = reply
            .resp_json
            .as_deref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .ok_or(StepError::Unusable("the answer has no JSON body"))?;
        if let Some(error) = answer.get("error") {
            return Err(StepError::Rpc(error.clone()));
        }
        match answer.get("result") {
            Some(result) if answer.get("id") == request.get("id") => {
                Ok((result.clone(), reply.resp_headers))
            }
            _ => Err(StepError::Unusable(
                "the answer is not a JSON-RPC result for the request",
            )),
        }
    }

    /// Sends `message` through `send`; a reply that is not 2xx, a synthesized failure or a passed
    /// deadline becomes the step's error.
    fn exchange(
        &mut self,
        message: &Value,
        deadline: Instant,
        send: impl FnOnce(&mut E, &RawValue, &[(String, String)], Instant) -> Outcome,
    ) -> Result<Reply, StepError> {
        let raw = RawValue::from_string(message.to_string())
            .map_err(|_| StepError::Failed(Failure::new(Source::ClientInternal, "unknown")))?;
        let reply = match send(&mut self.exchange, &raw, &self.headers, deadline) {
            Outcome::Reply(reply) => reply,
            Outcome::Expired | Outcome::Cancelled => return Err(StepError::Expired),
        };
        if let Some(failure) = &reply.failure {
            return Err(match failure.upstream_status {
                Some(status) => StepError::Refused {
                    status,
                    error: None,
                    headers: reply.resp_headers,
                },
                None => StepError::Failed(failure.clone()),
            });
        }
        if !(200..300).contains(&reply.resp_code) {
            let error = reply
                .resp_json
                .as_deref()
                .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
                .and_then(|v| v.get("error").cloned());
            return Err(StepError::Refused {
                status: reply.resp_code,
                error,
                headers: reply.resp_headers,
            });
        }
        Ok(reply)
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The first value of response header `name` (any case).
fn first(headers: &Headers, name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, values)| values.first().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RespType;
    use std::collections::VecDeque;

    /// Answers from a script; records what was sent, with its headers.
    #[derive(Default)]
    struct Scripted {
        answers: VecDeque<Outcome>,
        sent: Vec<(Value, Vec<(String, String)>)>,
        terminated: Vec<Vec<(String, String)>>,
    }

    impl Exchange for &mut Scripted {
        fn send(&mut self, m: &RawValue, h: &[(String, String)], _: Instant) -> Outcome {
            self.sent
                .push((serde_json::from_str(m.get()).unwrap(), h.to_vec()));
            self.answers.pop_front().expect("a scripted answer")
        }
        fn terminate(&mut self, h: &[(String, String)], _: Instant) -> Outcome {
            self.terminated.push(h.to_vec());
            self.answers.pop_front().expect("a scripted answer")
        }
    }

    fn answer(status: u16, body: Value, headers: &[(&str, &str)]) -> Outcome {
        let mut reply = Reply::upstream(
            RawValue::from_string(body.to_string()).unwrap(),
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), vec![v.to_string()]))
                .collect(),
            status,
        );
        if body.is_null() {
            reply.resp_json = None;
            reply.resp_type = RespType::NotifyAck;
        }
        Outcome::Reply(reply)
    }

    fn later() -> Instant {
        Instant::now() + std::time::Duration::from_secs(5)
    }

    const HELLO: Hello<'static> = Hello {
        client_name: "test",
        client_version: "1",
        protocol_version: "2025-06-18",
    };

    #[test]
    fn a_session_carries_its_id_and_version_and_counts_tools_over_pages() {
        let mut script = Scripted::default();
        let init = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
            "serverInfo": {"name": "s", "version": "9"}}});
        script.answers.extend([
            answer(200, init, &[("Mcp-Session-Id", "abc")]),
            answer(202, Value::Null, &[]),
            answer(
                200,
                json!({"jsonrpc": "2.0", "id": 2,
                "result": {"tools": [{}, {}], "nextCursor": "n"}}),
                &[],
            ),
            answer(
                200,
                json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": [{}]}}),
                &[],
            ),
            answer(204, Value::Null, &[]),
        ]);
        let mut session = Session::new(&mut script);
        let server = session.initialize(&HELLO, later()).unwrap();
        assert_eq!(server.name.as_deref(), Some("s"));
        assert_eq!(server.protocol.as_deref(), Some("2025-06-18"));
        assert!(server.has_tools);
        assert_eq!(session.session_id(), Some("abc"));
        assert_eq!(session.initialized(later()), Ok(202));
        assert_eq!(session.list_tools(later()), Ok(3));
        assert_eq!(session.end(later()), Some(Ok(204)));
        let sent = &script.sent;
        assert_eq!(sent[0].0["params"]["clientInfo"]["name"], "test");
        assert!(sent[0].1.is_empty(), "the first request carries no session");
        assert_eq!(sent[1].0["method"], "notifications/initialized");
        assert_eq!(sent[3].0["params"]["cursor"], "n");
        for (_, headers) in &sent[1..] {
            assert!(headers.contains(&("Mcp-Session-Id".into(), "abc".into())));
            assert!(headers.contains(&("MCP-Protocol-Version".into(), "2025-06-18".into())));
        }
        assert_eq!(script.terminated.len(), 1);
    }

    #[test]
    fn refusals_errors_and_odd_answers_are_told_apart() {
        let mut script = Scripted::default();
        let rpc_error = json!({"jsonrpc": "2.0", "id": 1,
            "error": {"code": -32601, "message": "nope"}});
        script.answers.extend([
            answer(401, rpc_error.clone(), &[]),
            answer(200, rpc_error, &[]),
            answer(200, json!({"jsonrpc": "2.0", "id": 99, "result": {}}), &[]),
            Outcome::Reply(Reply::failure(&Failure::target_http(503), &json!(4))),
            Outcome::Expired,
            answer(200, json!({"jsonrpc": "2.0", "id": 6, "result": {}}), &[]),
        ]);
        let mut session = Session::new(&mut script);
        match session.initialize(&HELLO, later()) {
            Err(StepError::Refused {
                status: 401,
                error: Some(e),
                ..
            }) => {
                assert_eq!(e["code"], -32601)
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            session.initialize(&HELLO, later()),
            Err(StepError::Rpc(_))
        ));
        assert!(matches!(
            session.initialize(&HELLO, later()),
            Err(StepError::Unusable(_))
        ));
        assert!(matches!(
            session.list_tools(later()),
            Err(StepError::Refused {
                status: 503,
                error: None,
                ..
            })
        ));
        assert_eq!(session.list_tools(later()), Err(StepError::Expired));
        assert!(matches!(
            session.list_tools(later()),
            Err(StepError::Unusable(_))
        ));
        assert_eq!(session.end(later()), None, "no session was issued");
    }
}
