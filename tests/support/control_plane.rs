//! A fake control plane: hands out queued commands through an honest long-poll, records every
//! request and every posted response, and can be scripted to answer polls or response POSTs badly.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_tunnel::http_server::{Limits, Request, Response, Server};
use serde_json::{Value, json};

use super::{SeenRequest, watched::Watched};

pub const TUNNEL_ID: &str = "tunnel_0123456789abcdef0123456789abcdef";
pub const API_KEY: &str = "sk-fake-control-plane-runtime-key";

/// The fake never holds a poll longer than this, whatever `timeout_ms` asks for (unless a test
/// says otherwise with [`FakeControlPlane::hold_polls_up_to`]).
const MAX_POLL_WAIT: Duration = Duration::from_secs(5);

/// A canned answer for the next poll(s).
#[derive(Clone, Debug)]
pub struct Scripted {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Scripted {
    /// `status` with a service-style JSON error body.
    pub fn status(status: u16) -> Scripted {
        Scripted {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: service_error_body(status),
        }
    }

    /// `status` with `body` sent as given (`Content-Type: application/json`).
    pub fn json(status: u16, body: &str) -> Scripted {
        Scripted {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Scripted {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn to_response(&self) -> Response {
        let mut response = Response::new(self.status, self.body.clone());
        response.headers = self.headers.clone();
        response
    }
}

/// One POST to `/response`, as the fake received it, and the status the fake answered with.
#[derive(Clone, Debug)]
pub struct PostedResponse {
    pub request: SeenRequest,
    /// The body parsed as JSON (`Null` if it was not JSON).
    pub json: Value,
    pub answered_status: u16,
}

impl PostedResponse {
    pub fn request_id(&self) -> &str {
        self.json["request_id"].as_str().unwrap_or_default()
    }

    pub fn resp_type(&self) -> &str {
        self.json["resp_type"].as_str().unwrap_or_default()
    }

    pub fn resp_code(&self) -> Option<u64> {
        self.json["resp_code"].as_u64()
    }

    pub fn resp_json(&self) -> Option<&Value> {
        self.json.get("resp_json")
    }

    /// Values of a header in `resp_headers`, name matched case-insensitively.
    pub fn resp_header(&self, name: &str) -> Option<Vec<&str>> {
        let headers = self.json.get("resp_headers")?.as_object()?;
        let (_, values) = headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))?;
        Some(
            values
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect(),
        )
    }

    /// The raw posted body, exactly as sent.
    pub fn raw_body(&self) -> String {
        self.request.body_text()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.request.header(name)
    }

    pub fn accepted(&self) -> bool {
        self.answered_status == 200
    }

    /// Every response type but `jsonrpc_notify` ends its command.
    pub fn is_terminal(&self) -> bool {
        self.resp_type() != "jsonrpc_notify"
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Value>,
    requests: Vec<SeenRequest>,
    responses: Vec<PostedResponse>,
    handed_out: Vec<String>,
    poll_script: VecDeque<Scripted>,
    response_post_script: VecDeque<u16>,
    /// Overrides [`MAX_POLL_WAIT`].
    max_poll_wait: Option<Duration>,
    closing: bool,
}

pub struct FakeControlPlane {
    state: Arc<Watched<State>>,
    server: Option<Server>,
    base_url: String,
    api_key: String,
}

impl FakeControlPlane {
    pub fn start() -> FakeControlPlane {
        FakeControlPlane::start_with_key(API_KEY)
    }

    /// A fake that only accepts `Authorization: Bearer <api_key>`.
    pub fn start_with_key(api_key: &str) -> FakeControlPlane {
        let state = Arc::new(Watched::new(State::default()));
        let routes = Routes {
            state: Arc::clone(&state),
            tunnel: format!("/v1/tunnels/{TUNNEL_ID}"),
            authorization: format!("Bearer {api_key}"),
        };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake control plane");
        let server = Server::start(listener, None, Limits::default(), move |request| {
            routes.handle(request)
        })
        .expect("start fake control plane");
        let base_url = format!("http://{}", server.local_addr());
        FakeControlPlane {
            state,
            server: Some(server),
            base_url,
            api_key: api_key.to_owned(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Queues one command; a waiting long-poll picks it up at once.
    pub fn push(&self, command: impl Into<Value>) {
        self.push_batch(vec![command.into()]);
    }

    /// Queues several commands atomically, so one poll hands them all out together.
    pub fn push_batch(&self, commands: Vec<Value>) {
        self.state.update(|state| state.queue.extend(commands));
    }

    /// The next `count` polls get `answer` instead of commands.
    pub fn script_polls(&self, count: usize, answer: Scripted) {
        self.state
            .update(|state| state.poll_script.extend(std::iter::repeat_n(answer, count)));
    }

    /// From now on an empty poll is held for up to `wait` (still no longer than its `timeout_ms`).
    pub fn hold_polls_up_to(&self, wait: Duration) {
        self.state.update(|state| state.max_poll_wait = Some(wait));
    }

    /// The next `count` response POSTs are answered with `status` (and not accepted).
    pub fn script_response_posts(&self, count: usize, status: u16) {
        self.state.update(|state| {
            state
                .response_post_script
                .extend(std::iter::repeat_n(status, count))
        });
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state.read(|state| state.requests.clone())
    }

    /// Every response POST received so far, in arrival order.
    pub fn responses(&self) -> Vec<PostedResponse> {
        self.state.read(|state| state.responses.clone())
    }

    pub fn responses_for(&self, request_id: &str) -> Vec<PostedResponse> {
        self.state
            .read(|state| responses_for(&state.responses, request_id))
    }

    pub fn poll_instants(&self) -> Vec<Instant> {
        self.state.read(poll_instants)
    }

    pub fn poll_count(&self) -> usize {
        self.poll_instants().len()
    }

    /// Waits until at least `count` response POSTs arrived; panics after `timeout`.
    pub fn wait_for_responses(&self, count: usize, timeout: Duration) -> Vec<PostedResponse> {
        self.state
            .wait_until(Instant::now() + timeout, |state| {
                (state.responses.len() >= count).then(|| state.responses.clone())
            })
            .unwrap_or_else(|| {
                panic!(
                    "expected {count} response POSTs within {timeout:?}, got: {:#?}",
                    self.responses()
                )
            })
    }

    /// Waits until at least `count` POSTs for `request_id` arrived; panics after `timeout`.
    pub fn wait_for_posts_for(
        &self,
        request_id: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<PostedResponse> {
        self.state
            .wait_until(Instant::now() + timeout, |state| {
                let posts = responses_for(&state.responses, request_id);
                (posts.len() >= count).then_some(posts)
            })
            .unwrap_or_else(|| {
                panic!(
                    "expected {count} POSTs for {request_id} within {timeout:?}, got: {:#?}",
                    self.responses()
                )
            })
    }

    /// Waits for the first terminal (non-`jsonrpc_notify`) response for `request_id`.
    pub fn wait_for_terminal_response(
        &self,
        request_id: &str,
        timeout: Duration,
    ) -> PostedResponse {
        self.state
            .wait_until(Instant::now() + timeout, |state| {
                responses_for(&state.responses, request_id)
                    .into_iter()
                    .find(PostedResponse::is_terminal)
            })
            .unwrap_or_else(|| {
                panic!(
                    "no terminal response for {request_id} within {timeout:?}; posts: {:#?}",
                    self.responses()
                )
            })
    }

    /// Waits until at least `count` polls arrived; returns their arrival instants.
    pub fn wait_for_polls(&self, count: usize, timeout: Duration) -> Vec<Instant> {
        self.state
            .wait_until(Instant::now() + timeout, |state| {
                let polls = poll_instants(state);
                (polls.len() >= count).then_some(polls)
            })
            .unwrap_or_else(|| {
                panic!(
                    "expected {count} polls within {timeout:?}, got {}",
                    self.poll_count()
                )
            })
    }

    /// Waits until a poll has handed out the command `request_id`.
    pub fn wait_until_handed_out(&self, request_id: &str, timeout: Duration) {
        self.state
            .wait_until(Instant::now() + timeout, |state| {
                state
                    .handed_out
                    .iter()
                    .any(|id| id == request_id)
                    .then_some(())
            })
            .unwrap_or_else(|| panic!("{request_id} was not polled within {timeout:?}"));
    }
}

impl Drop for FakeControlPlane {
    fn drop(&mut self) {
        // Release held long-polls at once, then stop accepting.
        self.state.update(|state| state.closing = true);
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

fn poll_instants(state: &State) -> Vec<Instant> {
    state
        .requests
        .iter()
        .filter(|request| request.method == "GET" && request.path().ends_with("/poll"))
        .map(|request| request.at)
        .collect()
}

fn responses_for(responses: &[PostedResponse], request_id: &str) -> Vec<PostedResponse> {
    responses
        .iter()
        .filter(|posted| posted.request_id() == request_id)
        .cloned()
        .collect()
}

/// The request handler, running on the server's connection threads.
struct Routes {
    state: Arc<Watched<State>>,
    tunnel: String,
    authorization: String,
}

impl Routes {
    fn handle(&self, request: Request) -> Response {
        let seen = self.state.update(|state| {
            let seen = SeenRequest::record(request, Instant::now());
            state.requests.push(seen.clone());
            seen
        });
        if seen.header("Authorization") != Some(self.authorization.as_str()) {
            return error_response(401);
        }
        let path = seen.path();
        match seen.method.as_str() {
            "GET" if path == self.tunnel => Response::json(
                200,
                json!({"id": TUNNEL_ID, "name": "t", "description": "d"}).to_string(),
            ),
            "GET" if path == format!("{}/poll", self.tunnel) => self.poll(&seen),
            "POST" if path == format!("{}/response", self.tunnel) => self.response(seen),
            _ => error_response(404),
        }
    }

    /// Long-poll: scripted answer if any; else hand out up to `limit` queued commands, waiting up to
    /// `timeout_ms` (capped) for one to be pushed; `204` when none came.
    fn poll(&self, seen: &SeenRequest) -> Response {
        if let Some(scripted) = self.state.update(|state| state.poll_script.pop_front()) {
            return scripted.to_response();
        }
        let limit: usize = query_number(seen, "limit").unwrap_or(usize::MAX);
        let max_wait = self
            .state
            .read(|state| state.max_poll_wait)
            .unwrap_or(MAX_POLL_WAIT);
        let wait = query_number(seen, "timeout_ms")
            .map(Duration::from_millis)
            .unwrap_or_default()
            .min(max_wait);
        let commands = self
            .state
            .wait_until(Instant::now() + wait, |state| {
                if state.closing {
                    return Some(Vec::new());
                }
                if state.queue.is_empty() {
                    return None;
                }
                let count = limit.min(state.queue.len());
                let commands: Vec<Value> = state.queue.drain(..count).collect();
                state.handed_out.extend(
                    commands
                        .iter()
                        .map(|command| command["request_id"].as_str().unwrap_or("").to_owned()),
                );
                Some(commands)
            })
            .unwrap_or_default();
        if commands.is_empty() {
            Response::new(204, Vec::new())
        } else {
            Response::json(200, json!({ "commands": commands }).to_string())
        }
    }

    fn response(&self, seen: SeenRequest) -> Response {
        let Some(json) = seen.body_json() else {
            return error_response(400);
        };
        let status = self.state.update(|state| {
            let status = state.response_post_script.pop_front().unwrap_or(200);
            state.responses.push(PostedResponse {
                request: seen,
                json,
                answered_status: status,
            });
            status
        });
        if status == 200 {
            Response::json(200, r#"{"status":"ok"}"#)
        } else {
            error_response(status)
        }
    }
}

fn query_number<T: std::str::FromStr>(request: &SeenRequest, name: &str) -> Option<T> {
    request.query(name)?.parse().ok()
}

fn error_response(status: u16) -> Response {
    Response::json(status, service_error_body(status))
}

/// A body shaped like the service's `APIErrorResponse`.
fn service_error_body(status: u16) -> String {
    let code = match status {
        401 => "invalid_api_key",
        404 => "pending_request_not_found",
        429 => "rate_limit_exceeded",
        _ => "tunnel_transport_unavailable",
    };
    json!({"error": {"message": format!("fake control plane answered {status}"),
                     "type": "invalid_request_error", "code": code}})
    .to_string()
}
