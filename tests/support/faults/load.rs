//! Steady load for the fault suite: a few caller threads, each sending numbered `tools/call`
//! requests with unique ids through the relay's connector endpoint in a loop, one at a time, each
//! bounded by a client-side timeout. Every call is recorded with its latency and its outcome,
//! classified strictly: the answer for *this* id, a clear error (an HTTP status with a JSON error
//! body naming a code), a transport error, the caller's own timeout, or anything else ("unclear").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

/// How long the fault MCP server's `work` tool runs per call: long enough that a fault almost
/// always finds calls in flight, short enough for a steady stream of calls.
pub const TOOL_WORK: Duration = Duration::from_millis(200);

/// A caller's pause after a call that was not answered, as a real MCP host would make before
/// retrying: without it, refused connections turn the callers into a busy loop.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_millis(50);

/// How one call ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// 200 with the JSON-RPC result for this call's id, naming this call.
    Answer,
    /// An error status (or a JSON-RPC error for this id) with a JSON body carrying an error
    /// code: `code` is that code (a relay code such as `tunnel_response_timeout`, or the
    /// JSON-RPC code with `data.tunnel_failure.source` / `data.code` when present).
    ClearError { status: u16, code: String },
    /// No HTTP answer: connection refused or reset.
    Transport(String),
    /// No answer within the caller's own timeout.
    CallerTimeout,
    /// An HTTP answer that is neither of the above (wrong id, no error code, not JSON…).
    Unclear { status: u16, body: String },
}

/// One call as its caller saw it.
#[derive(Clone, Debug)]
pub struct CallRecord {
    /// Unique per call: the JSON-RPC id and `arguments.call`.
    pub key: String,
    pub started: Instant,
    pub finished: Instant,
    /// Wall-clock end, to compare with the executions log's wall-clock times.
    pub finished_wall: SystemTime,
    pub outcome: Outcome,
}

impl CallRecord {
    pub fn latency(&self) -> Duration {
        self.finished - self.started
    }

    pub fn is_answer(&self) -> bool {
        self.outcome == Outcome::Answer
    }
}

#[derive(Default)]
struct Records {
    calls: Vec<CallRecord>,
}

struct Shared {
    records: Mutex<Records>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `ready` gives a value, or `deadline` passes (`None`).
    fn wait_until<R>(&self, deadline: Instant, ready: impl Fn(&Records) -> Option<R>) -> Option<R> {
        let mut records = self.lock();
        loop {
            if let Some(result) = ready(&records) {
                return Some(result);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            records = self
                .changed
                .wait_timeout(records, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// The running caller threads. Dropping it stops them (each finishes its current call, which
/// its timeout bounds).
pub struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// `callers` threads calling `url` with `Authorization: Bearer <connector_key>`; call keys
    /// are `<label>-c<caller>-<n>`; every call gives up after `caller_timeout`.
    pub fn start(
        url: &str,
        connector_key: &str,
        label: &str,
        callers: usize,
        caller_timeout: Duration,
    ) -> Load {
        let shared = Arc::new(Shared {
            records: Mutex::new(Records::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let threads = (0..callers)
            .map(|caller| {
                let shared = Arc::clone(&shared);
                let caller_state = Caller {
                    agent: caller_agent(caller_timeout),
                    url: url.to_string(),
                    authorization: format!("Bearer {connector_key}"),
                };
                let label = label.to_string();
                std::thread::spawn(move || {
                    for n in 0.. {
                        if shared.stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let key = format!("{label}-c{caller}-{n:05}");
                        let record = caller_state.call(key);
                        let answered = record.is_answer();
                        shared.lock().calls.push(record);
                        shared.changed.notify_all();
                        if !answered {
                            std::thread::sleep(PAUSE_AFTER_FAILURE);
                        }
                    }
                })
            })
            .collect();
        Load { shared, threads }
    }

    /// Every call recorded so far, in the order they finished.
    pub fn records(&self) -> Vec<CallRecord> {
        self.shared.lock().calls.clone()
    }

    /// Waits until `count` calls have been answered; false if not within `timeout`.
    pub fn wait_for_answers(&self, count: usize, timeout: Duration) -> bool {
        self.shared
            .wait_until(Instant::now() + timeout, |records| {
                (records.calls.iter().filter(|c| c.is_answer()).count() >= count).then_some(())
            })
            .is_some()
    }

    /// Waits until calls started at or after `since` include `run` consecutive answers (in the
    /// order they finished); returns when the last of them finished, or `None` after `timeout`.
    pub fn wait_for_recovery(
        &self,
        since: Instant,
        run: usize,
        timeout: Duration,
    ) -> Option<Instant> {
        self.shared.wait_until(since + timeout, |records| {
            recovered_at(&records.calls, since, run)
        })
    }

    /// Stops the callers and returns every record.
    pub fn stop(mut self) -> Vec<CallRecord> {
        self.stop_callers();
        self.records()
    }

    fn stop_callers(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop_callers();
    }
}

/// When the first run of `run` consecutive answers among calls started at or after `since`
/// ended.
pub fn recovered_at(calls: &[CallRecord], since: Instant, run: usize) -> Option<Instant> {
    let mut streak = 0;
    for call in calls.iter().filter(|call| call.started >= since) {
        streak = if call.is_answer() { streak + 1 } else { 0 };
        if streak == run {
            return Some(call.finished);
        }
    }
    None
}

fn caller_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

struct Caller {
    agent: ureq::Agent,
    url: String,
    authorization: String,
}

impl Caller {
    fn call(&self, key: String) -> CallRecord {
        let message = json!({
            "jsonrpc": "2.0",
            "id": key,
            "method": "tools/call",
            "params": {
                "name": "work",
                "arguments": {"call": key, "ms": TOOL_WORK.as_millis() as u64},
            },
        });
        let started = Instant::now();
        let outcome = match self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .header("Authorization", &self.authorization)
            .send(message.to_string().as_bytes())
        {
            Ok(response) => {
                let status = response.status().as_u16();
                let is_stream = response
                    .headers()
                    .get("Content-Type")
                    .and_then(|value| value.to_str().ok())
                    .is_some_and(|value| value.starts_with("text/event-stream"));
                match response.into_body().read_to_string() {
                    Ok(body) => classify(status, &body, is_stream, &key),
                    Err(ureq::Error::Timeout(_)) => Outcome::CallerTimeout,
                    Err(e) => Outcome::Transport(format!("reading the body: {e}")),
                }
            }
            Err(ureq::Error::Timeout(_)) => Outcome::CallerTimeout,
            Err(e) => Outcome::Transport(e.to_string()),
        };
        CallRecord {
            key,
            started,
            finished: Instant::now(),
            finished_wall: SystemTime::now(),
            outcome,
        }
    }
}

/// Sorts one HTTP answer into an [`Outcome`].
fn classify(status: u16, body: &str, is_stream: bool, key: &str) -> Outcome {
    let unclear = || Outcome::Unclear {
        status,
        body: body.chars().take(300).collect(),
    };
    // An event stream's answer is its last `data:` line (our messages are one line each).
    let text = if is_stream {
        body.lines()
            .rev()
            .find_map(|line| line.strip_prefix("data:"))
            .unwrap_or_default()
    } else {
        body
    };
    let Ok(message) = serde_json::from_str::<Value>(text.trim()) else {
        return unclear();
    };
    let error = &message["error"];
    if status == 200 && message["id"] == key && message.get("result").is_some() {
        let text = &message["result"]["content"][0]["text"];
        return if text == key {
            Outcome::Answer
        } else {
            unclear()
        };
    }
    // A JSON-RPC error for this very id: from the MCP server, the client or the relay.
    if message["jsonrpc"] == "2.0" && message["id"] == key && error["code"].is_i64() {
        let detail = [
            &error["data"]["tunnel_failure"]["source"],
            &error["data"]["code"],
        ]
        .into_iter()
        .find_map(Value::as_str)
        .map(|detail| format!(" {detail}"))
        .unwrap_or_default();
        return Outcome::ClearError {
            status,
            code: format!("{}{detail}", error["code"]),
        };
    }
    // The relay's own API error (`{"error":{"code":"tunnel_…","message":…}}`), with an error status.
    if status >= 400
        && let Some(code) = error["code"].as_str()
    {
        return Outcome::ClearError {
            status,
            code: code.to_string(),
        };
    }
    unclear()
}
