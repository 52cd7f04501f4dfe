//! A fake Streamable HTTP MCP server at `/mcp`. Replies are programmable per JSON-RPC method or per
//! tool name, and whole paths can be given a fixed reply (an OAuth challenge, metadata documents,
//! redirects); everything it receives is recorded, with arrival and completion instants and the number
//! of requests it was serving at once.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_tunnel::http_server::{Body, ChunkWriter, Limits, Request, Response, Server};
use serde_json::{Value, json};

use super::{SeenRequest, watched::Watched};

const MCP_PATH: &str = "/mcp";

/// The JSON text of one message the fake sends.
#[derive(Clone, Debug)]
enum Payload {
    /// Sent exactly as given.
    Raw(String),
    /// `{"jsonrpc":"2.0","id":<the request's id>,"result":<value>}`.
    ResultForRequest(Value),
}

impl Payload {
    fn render(&self, request_id: &Value) -> String {
        match self {
            Payload::Raw(text) => text.clone(),
            Payload::ResultForRequest(result) => {
                json!({"jsonrpc": "2.0", "id": request_id, "result": result}).to_string()
            }
        }
    }
}

/// One `message` event of an SSE reply, sent after `delay`.
#[derive(Clone, Debug)]
pub struct SseEvent {
    delay: Duration,
    payload: Payload,
}

impl SseEvent {
    /// A message sent verbatim (e.g. a progress notification).
    pub fn message(delay: Duration, message: &Value) -> SseEvent {
        SseEvent {
            delay,
            payload: Payload::Raw(message.to_string()),
        }
    }

    /// A message whose `data:` is exactly `text` (one line), for byte-exactness checks.
    pub fn raw(delay: Duration, text: &str) -> SseEvent {
        SseEvent {
            delay,
            payload: Payload::Raw(text.to_string()),
        }
    }

    /// The final response to the request, with its id.
    pub fn result(delay: Duration, result: Value) -> SseEvent {
        SseEvent {
            delay,
            payload: Payload::ResultForRequest(result),
        }
    }
}

#[derive(Clone, Debug)]
enum ReplyBody {
    Empty,
    Single(Payload),
    Sse(Vec<SseEvent>),
}

/// What the fake answers to one request.
#[derive(Clone, Debug)]
pub struct McpReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: ReplyBody,
    delay: Duration,
}

impl McpReply {
    /// `200 application/json` with a result for the request's id.
    pub fn result(result: Value) -> McpReply {
        McpReply::with_body(
            200,
            "application/json",
            ReplyBody::Single(Payload::ResultForRequest(result)),
        )
    }

    /// `200 application/json` with `body` sent byte for byte.
    pub fn raw_json(body: &str) -> McpReply {
        McpReply::with_body(
            200,
            "application/json",
            ReplyBody::Single(Payload::Raw(body.into())),
        )
    }

    /// A `text/plain` body (e.g. a proxy's error page).
    pub fn text(status: u16, body: &str) -> McpReply {
        McpReply::with_body(
            status,
            "text/plain",
            ReplyBody::Single(Payload::Raw(body.into())),
        )
    }

    /// `200 text/event-stream`, one chunk per event, each after its delay.
    pub fn sse(events: Vec<SseEvent>) -> McpReply {
        McpReply::with_body(200, "text/event-stream", ReplyBody::Sse(events))
    }

    /// A status with no body (`202` for notifications, `204` for DELETE).
    pub fn empty(status: u16) -> McpReply {
        McpReply {
            status,
            headers: Vec::new(),
            body: ReplyBody::Empty,
            delay: Duration::ZERO,
        }
    }

    pub fn status(mut self, status: u16) -> McpReply {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> McpReply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Answers only after `delay` (a slow server).
    pub fn after(mut self, delay: Duration) -> McpReply {
        self.delay = delay;
        self
    }

    fn with_body(status: u16, content_type: &str, body: ReplyBody) -> McpReply {
        McpReply::empty(status)
            .header("Content-Type", content_type)
            .with_reply_body(body)
    }

    fn with_reply_body(mut self, body: ReplyBody) -> McpReply {
        self.body = body;
        self
    }
}

/// One request the fake received and how serving it went.
#[derive(Clone, Debug)]
pub struct McpCall {
    pub request: SeenRequest,
    /// When the fake finished answering (after the last SSE event for streams).
    pub finished_at: Option<Instant>,
    /// When each SSE event was written to the connection.
    pub sse_events_sent: Vec<Instant>,
}

impl McpCall {
    /// The JSON-RPC id of the request, if the body is a JSON-RPC request.
    pub fn rpc_id(&self) -> Option<Value> {
        self.request.body_json()?.get("id").cloned()
    }

    pub fn rpc_method(&self) -> Option<String> {
        Some(
            self.request
                .body_json()?
                .get("method")?
                .as_str()?
                .to_owned(),
        )
    }
}

#[derive(Default)]
struct State {
    replies: HashMap<String, McpReply>,
    /// Fixed replies by path, for every method; they win over the MCP handling of `/mcp`.
    paths: HashMap<String, McpReply>,
    /// Discovery-shaped requests no path reply matched (see [`super::is_oauth_discovery`]).
    discovery: Vec<SeenRequest>,
    calls: Vec<McpCall>,
    in_flight: usize,
    max_in_flight: usize,
    closing: bool,
}

pub struct FakeMcp {
    state: Arc<Watched<State>>,
    server: Option<Server>,
    url: String,
}

impl FakeMcp {
    pub fn start() -> FakeMcp {
        let state = Arc::new(Watched::new(State::default()));
        let handler_state = Arc::clone(&state);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake MCP server");
        let server = Server::start(listener, None, Limits::default(), move |request| {
            serve(&handler_state, request)
        })
        .expect("start fake MCP server");
        let url = format!("http://{}{MCP_PATH}", server.local_addr());
        FakeMcp {
            state,
            server: Some(server),
            url,
        }
    }

    /// The URL to configure as `MCP_SERVER_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host:port`, as a client must send it in `Host`.
    pub fn authority(&self) -> &str {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches(MCP_PATH)
    }

    /// Replies to JSON-RPC requests with this `method` (unless a tool reply matches first).
    pub fn on_method(&self, method: &str, reply: McpReply) {
        self.set_reply(format!("method:{method}"), reply);
    }

    /// Replies to `GET` (a 2025 session's standalone stream); without this, GET is 405.
    pub fn on_get(&self, reply: McpReply) {
        self.set_reply("get".to_string(), reply);
    }

    /// Waits until the fake has received a `GET`; panics after `timeout`.
    pub fn wait_for_get(&self, timeout: Duration) -> McpCall {
        self.wait_for(timeout, |call| call.request.method == "GET")
            .unwrap_or_else(|| panic!("MCP saw no GET within {timeout:?}"))
    }

    /// Waits until the fake finished serving the first `GET` (its stream ended or was closed).
    pub fn wait_until_get_finished(&self, timeout: Duration) -> Option<McpCall> {
        self.wait_for(timeout, |call| {
            call.request.method == "GET" && call.finished_at.is_some()
        })
    }

    /// Replies to `tools/call` requests for this tool.
    pub fn on_tool(&self, tool: &str, reply: McpReply) {
        self.set_reply(format!("tool:{tool}"), reply);
    }

    /// Answers every request to `path` (any method, any body) with `reply`.
    pub fn on_path(&self, path: &str, reply: McpReply) {
        self.state
            .update(|state| state.paths.insert(path.to_owned(), reply));
    }

    /// `http://host:port`, the fake's origin.
    pub fn origin(&self) -> String {
        format!("http://{}", self.authority())
    }

    /// Every request that arrived, MCP calls and discovery requests, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        let mut all: Vec<SeenRequest> = self.state.read(|state| {
            let calls = state.calls.iter().map(|call| call.request.clone());
            calls.chain(state.discovery.iter().cloned()).collect()
        });
        all.sort_by_key(|request| request.at);
        all
    }

    /// The requests that arrived for `path`, in order.
    pub fn requests_to(&self, path: &str) -> Vec<SeenRequest> {
        let mut requests = self.requests();
        requests.retain(|request| request.path() == path);
        requests
    }

    /// Waits until a request for `path` arrived; panics after `timeout`.
    pub fn wait_for_request_to(&self, path: &str, timeout: Duration) -> SeenRequest {
        let deadline = Instant::now() + timeout;
        self.state
            .wait_until(deadline, |state| {
                let calls = state.calls.iter().map(|call| &call.request);
                calls
                    .chain(&state.discovery)
                    .find(|request| request.path() == path)
                    .cloned()
            })
            .unwrap_or_else(|| panic!("MCP saw no request for {path} within {timeout:?}"))
    }

    /// Forgets every request seen so far (e.g. the client's start-up discovery). Only while
    /// nothing is being served.
    pub fn forget_requests(&self) {
        self.state.update(|state| {
            assert_eq!(state.in_flight, 0, "forget_requests while serving");
            state.calls.clear();
            state.discovery.clear();
        });
    }

    fn set_reply(&self, key: String, reply: McpReply) {
        self.state.update(|state| state.replies.insert(key, reply));
    }

    pub fn calls(&self) -> Vec<McpCall> {
        self.state.read(|state| state.calls.clone())
    }

    /// The highest number of requests the fake was serving at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state.read(|state| state.max_in_flight)
    }

    /// Waits until the request with JSON-RPC `id` arrived; panics after `timeout`.
    pub fn wait_for_call(&self, id: &Value, timeout: Duration) -> McpCall {
        self.wait_for(timeout, |call| call.rpc_id().as_ref() == Some(id))
            .unwrap_or_else(|| panic!("MCP saw no request with id {id} within {timeout:?}"))
    }

    /// Waits until the fake finished answering the request with JSON-RPC `id`.
    pub fn wait_until_answered(&self, id: &Value, timeout: Duration) -> McpCall {
        self.wait_for(timeout, |call| {
            call.rpc_id().as_ref() == Some(id) && call.finished_at.is_some()
        })
        .unwrap_or_else(|| panic!("MCP did not finish request {id} within {timeout:?}"))
    }

    fn wait_for(&self, timeout: Duration, wanted: impl Fn(&McpCall) -> bool) -> Option<McpCall> {
        self.state.wait_until(Instant::now() + timeout, |state| {
            state.calls.iter().find(|call| wanted(call)).cloned()
        })
    }
}

impl Drop for FakeMcp {
    fn drop(&mut self) {
        // Cut slow replies short, then stop accepting.
        self.state.update(|state| state.closing = true);
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

/// Marks one call as being served; dropping it records completion. Moved into a streamed body so a
/// stream counts as in flight until its last event is sent.
struct InFlight {
    state: Arc<Watched<State>>,
    index: usize,
}

impl InFlight {
    fn begin(state: &Arc<Watched<State>>, request: Request) -> (InFlight, SeenRequest) {
        let seen = SeenRequest::record(request, Instant::now());
        let index = state.update(|state| {
            state.calls.push(McpCall {
                request: seen.clone(),
                finished_at: None,
                sse_events_sent: Vec::new(),
            });
            state.in_flight += 1;
            state.max_in_flight = state.max_in_flight.max(state.in_flight);
            state.calls.len() - 1
        });
        let guard = InFlight {
            state: Arc::clone(state),
            index,
        };
        (guard, seen)
    }

    /// Waits `delay`, or less if the fake is shutting down. Returns false when shutting down.
    fn pause(&self, delay: Duration) -> bool {
        if delay.is_zero() {
            return true;
        }
        let closing = self
            .state
            .wait_until(Instant::now() + delay, |state| state.closing.then_some(()));
        closing.is_none()
    }

    fn event_sent(&self) {
        self.state
            .update(|state| state.calls[self.index].sse_events_sent.push(Instant::now()));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.update(|state| {
            state.in_flight -= 1;
            state.calls[self.index].finished_at = Some(Instant::now());
        });
    }
}

fn serve(state: &Arc<Watched<State>>, request: Request) -> Response {
    let route = state.read(|state| state.paths.get(request.path()).cloned());
    if route.is_none() && super::is_oauth_discovery(&request) {
        let seen = SeenRequest::record(request, Instant::now());
        let status = if seen.path() == MCP_PATH { 405 } else { 404 };
        state.update(|state| state.discovery.push(seen));
        return Response::new(status, Vec::new());
    }
    let (in_flight, seen) = InFlight::begin(state, request);
    if let Some(reply) = route {
        if !in_flight.pause(reply.delay) {
            return Response::new(503, "shutting down");
        }
        return respond(reply, Value::Null, in_flight);
    }
    if seen.path() != MCP_PATH {
        return Response::new(404, "not found");
    }
    match seen.method.as_str() {
        "DELETE" => Response::new(204, Vec::new()),
        "GET" => match state.read(|state| state.replies.get("get").cloned()) {
            Some(reply) => respond(reply, Value::Null, in_flight),
            None => Response::new(405, Vec::new()),
        },
        "POST" => {
            let Some(message) = seen.body_json() else {
                return Response::new(400, "body is not JSON");
            };
            let reply = state.read(|state| reply_for(&state.replies, &message));
            if !in_flight.pause(reply.delay) {
                return Response::new(503, "shutting down");
            }
            respond(
                reply,
                message.get("id").cloned().unwrap_or(Value::Null),
                in_flight,
            )
        }
        _ => Response::new(405, Vec::new()),
    }
}

/// The programmed reply: by tool name, then by method; otherwise an empty result for requests and
/// `202 Accepted` for notifications.
fn reply_for(replies: &HashMap<String, McpReply>, message: &Value) -> McpReply {
    let tool = message["params"]["name"].as_str().unwrap_or_default();
    let method = message["method"].as_str().unwrap_or_default();
    let by_tool = (method == "tools/call")
        .then(|| replies.get(&format!("tool:{tool}")))
        .flatten();
    if let Some(reply) = by_tool.or_else(|| replies.get(&format!("method:{method}"))) {
        return reply.clone();
    }
    if message.get("id").is_some() {
        McpReply::result(json!({}))
    } else {
        McpReply::empty(202)
    }
}

fn respond(reply: McpReply, request_id: Value, in_flight: InFlight) -> Response {
    let body = match reply.body {
        ReplyBody::Empty => Body::Full(Vec::new()),
        ReplyBody::Single(payload) => Body::Full(payload.render(&request_id).into_bytes()),
        ReplyBody::Sse(events) => Body::Stream(Box::new(move |writer: &mut ChunkWriter<'_>| {
            stream_events(&events, &request_id, &in_flight, writer)
        })),
    };
    Response {
        status: reply.status,
        headers: reply.headers,
        body,
    }
}

fn stream_events(
    events: &[SseEvent],
    request_id: &Value,
    in_flight: &InFlight,
    writer: &mut ChunkWriter<'_>,
) -> std::io::Result<()> {
    writer.send(b": stream open\n\n")?;
    for event in events {
        if !in_flight.pause(event.delay) {
            return Err(std::io::Error::other("fake MCP shutting down"));
        }
        let data = event.payload.render(request_id);
        writer.send(format!("event: message\ndata: {data}\n\n").as_bytes())?;
        in_flight.event_sent();
    }
    Ok(())
}
