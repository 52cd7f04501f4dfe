//! The stub's tool catalogue: what `tools/list` describes and what `tools/call` runs.
//!
//! Six tools, each exercising one path of a client or of the tunnel: `echo` and `add` (plain
//! results), `slow` (a long call, for timeouts), `progress` (notifications before the result,
//! streamed as SSE when the client accepts it), `fail` (a tool-level error result) and `fail_rpc`
//! (a JSON-RPC error). A call's arguments are validated before anything runs; a bad one is a
//! `-32602` message naming the tool and argument. Every wait is capped, so no call holds a
//! connection thread for long.

use std::io;
use std::thread;
use std::time::Duration;

use serde_json::{Map, Number, Value, json};

use super::protocol::{Reply, SERVER_ERROR, rpc_reply};
use crate::http_server::{ChunkWriter, Response};

/// Longest sleep of the `slow` tool: long enough for any timeout test, short enough that a stray
/// call does not hold a connection thread for long.
const MAX_SLOW_MS: u64 = 60_000;

/// `progress` tool defaults and caps. The caps bound one call to 100 × 5 s.
const DEFAULT_PROGRESS_STEPS: u64 = 3;
const MAX_PROGRESS_STEPS: u64 = 100;
const DEFAULT_PROGRESS_DELAY_MS: u64 = 100;
const MAX_PROGRESS_DELAY_MS: u64 = 5_000;

/// Message of the `fail` and `fail_rpc` tools when the caller gives none.
const DEFAULT_FAILURE_MESSAGE: &str = "failure requested";

/// A validated `tools/call`.
pub(super) enum Call {
    Echo(String),
    /// The sum, already formatted.
    Add(String),
    Slow(u64),
    Progress {
        steps: u64,
        delay_ms: u64,
        token: Option<Value>,
    },
    Fail(String),
    FailRpc(String),
}

pub(super) fn tools_list() -> Value {
    json!({ "tools": [
        {
            "name": "echo",
            "description": "Returns the given text unchanged.",
            "inputSchema": {
                "type": "object",
                "properties": { "text": { "type": "string", "description": "Text to send back." } },
                "required": ["text"],
            },
        },
        {
            "name": "add",
            "description": "Adds two numbers and returns the sum as text.",
            "inputSchema": {
                "type": "object",
                "properties": { "a": { "type": "number" }, "b": { "type": "number" } },
                "required": ["a", "b"],
            },
        },
        {
            "name": "slow",
            "description": "Sleeps for `ms` milliseconds (at most 60000), then answers.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "ms": { "type": "integer", "minimum": 0, "description": "Milliseconds to sleep; capped at 60000." },
                },
                "required": ["ms"],
            },
        },
        {
            "name": "progress",
            "description": "Works in `steps` steps, `delay_ms` apart. When the request carries a progress token and accepts an event stream, each step is reported as notifications/progress before the result.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "steps": { "type": "integer", "minimum": 0, "default": DEFAULT_PROGRESS_STEPS, "description": "Number of steps; capped at 100." },
                    "delay_ms": { "type": "integer", "minimum": 0, "default": DEFAULT_PROGRESS_DELAY_MS, "description": "Milliseconds before each step; capped at 5000." },
                },
            },
        },
        {
            "name": "fail",
            "description": "Always fails with a tool error result (isError) carrying `message`.",
            "inputSchema": {
                "type": "object",
                "properties": { "message": { "type": "string", "default": DEFAULT_FAILURE_MESSAGE } },
            },
        },
        {
            "name": "fail_rpc",
            "description": "Always fails with a JSON-RPC error (-32000) carrying `message`.",
            "inputSchema": {
                "type": "object",
                "properties": { "message": { "type": "string", "default": DEFAULT_FAILURE_MESSAGE } },
            },
        },
    ]})
}

/// Validates a `tools/call`'s params; the error is the `-32602` message.
pub(super) fn parse_call(params: Option<&Value>) -> Result<Call, String> {
    let Some(Value::Object(params)) = params else {
        return Err("tools/call: params must be an object with a `name`".to_string());
    };
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err("tools/call: `name` must be a string".to_string());
    };
    let empty = Map::new();
    let args = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(args)) => args,
        Some(_) => return Err(format!("{name}: `arguments` must be an object")),
    };
    match name {
        "echo" => match args.get("text") {
            Some(Value::String(text)) => Ok(Call::Echo(text.clone())),
            _ => Err("echo: `text` is required and must be a string".to_string()),
        },
        "add" => {
            let a = number_arg(args, "a")?;
            let b = number_arg(args, "b")?;
            sum_text(a, b)
                .map(Call::Add)
                .ok_or_else(|| "add: the sum is too large for a 64-bit float".to_string())
        }
        "slow" => Ok(Call::Slow(int_arg(args, name, "ms", None, MAX_SLOW_MS)?)),
        "progress" => {
            let token = params
                .get("_meta")
                .and_then(|meta| meta.get("progressToken"))
                // The spec's ProgressToken is a string or a number; anything else is no token.
                .filter(|t| t.is_string() || t.is_number())
                .cloned();
            Ok(Call::Progress {
                steps: int_arg(
                    args,
                    name,
                    "steps",
                    Some(DEFAULT_PROGRESS_STEPS),
                    MAX_PROGRESS_STEPS,
                )?,
                delay_ms: int_arg(
                    args,
                    name,
                    "delay_ms",
                    Some(DEFAULT_PROGRESS_DELAY_MS),
                    MAX_PROGRESS_DELAY_MS,
                )?,
                token,
            })
        }
        "fail" => Ok(Call::Fail(message_arg(args, name)?)),
        "fail_rpc" => Ok(Call::FailRpc(message_arg(args, name)?)),
        other => Err(format!("unknown tool: {other}")),
    }
}

fn number_arg<'a>(args: &'a Map<String, Value>, name: &str) -> Result<&'a Number, String> {
    match args.get(name) {
        Some(Value::Number(n)) => Ok(n),
        _ => Err(format!("add: `{name}` is required and must be a number")),
    }
}

/// An optional message argument of `fail` / `fail_rpc`.
fn message_arg(args: &Map<String, Value>, tool: &str) -> Result<String, String> {
    match args.get("message") {
        None | Some(Value::Null) => Ok(DEFAULT_FAILURE_MESSAGE.to_string()),
        Some(Value::String(message)) => Ok(message.clone()),
        Some(_) => Err(format!("{tool}: `message` must be a string")),
    }
}

/// A non-negative integer argument, capped at `cap`. Whole floats (`5.0`) count as integers, as in
/// JSON Schema; absent or null means `default`, or an error when there is none.
fn int_arg(
    args: &Map<String, Value>,
    tool: &str,
    name: &str,
    default: Option<u64>,
    cap: u64,
) -> Result<u64, String> {
    let value = match args.get(name) {
        None | Some(Value::Null) => {
            return default.ok_or_else(|| {
                format!("{tool}: `{name}` is required and must be a non-negative integer")
            });
        }
        Some(value) => value,
    };
    let whole_float = || {
        value
            .as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            // Saturates for huge values; the cap applies right after.
            .map(|f| f as u64)
    };
    match value.as_u64().or_else(whole_float) {
        Some(n) => Ok(n.min(cap)),
        None => Err(format!("{tool}: `{name}` must be a non-negative integer")),
    }
}

/// The sum as text, integers without a fractional part. Integer inputs are added exactly (in
/// i128, which no two 64-bit integers overflow); `None` when a float sum overflows.
fn sum_text(a: &Number, b: &Number) -> Option<String> {
    let exact = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    if let (Some(x), Some(y)) = (exact(a), exact(b)) {
        return Some((x + y).to_string());
    }
    let sum = a.as_f64()? + b.as_f64()?;
    if !sum.is_finite() {
        return None;
    }
    // f64's Display prints whole values without ".0"; only the sign of zero needs tidying.
    Some(if sum == 0.0 {
        "0".to_string()
    } else {
        sum.to_string()
    })
}

/// Runs a call and builds its reply (for `progress`, the plain-JSON form without notifications).
pub(super) fn run_call(call: Call) -> Reply {
    match call {
        Call::Echo(text) => Reply::Result(text_result(text)),
        Call::Add(sum) => Reply::Result(text_result(sum)),
        Call::Slow(ms) => {
            thread::sleep(Duration::from_millis(ms));
            Reply::Result(text_result(format!("slept {ms} ms")))
        }
        Call::Progress {
            steps, delay_ms, ..
        } => {
            // Same work and duration as the streamed form; there is just nowhere to report it.
            for _ in 0..steps {
                thread::sleep(Duration::from_millis(delay_ms));
            }
            Reply::Result(text_result(format!("done after {steps} steps")))
        }
        Call::Fail(message) => Reply::Result(json!({
            "content": [{ "type": "text", "text": message }],
            "isError": true,
        })),
        Call::FailRpc(message) => Reply::Error {
            code: SERVER_ERROR,
            message,
        },
    }
}

/// The `progress` tool as an event stream: one `notifications/progress` per step (when the client
/// gave a token), each sent as its step completes, then the result.
pub(super) fn progress_stream(
    id: Value,
    steps: u64,
    delay_ms: u64,
    token: Option<Value>,
) -> Response {
    let headers = vec![
        ("Content-Type".to_string(), "text/event-stream".to_string()),
        ("Cache-Control".to_string(), "no-cache".to_string()),
    ];
    Response::stream(
        200,
        headers,
        Box::new(move |w: &mut ChunkWriter<'_>| {
            for step in 1..=steps {
                thread::sleep(Duration::from_millis(delay_ms));
                if let Some(token) = &token {
                    let notification = json!({
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {
                            "progressToken": token,
                            "progress": step,
                            "total": steps,
                            "message": format!("step {step} of {steps}"),
                        },
                    });
                    send_event(w, &notification)?;
                }
            }
            let result = text_result(format!("done after {steps} steps"));
            send_event(w, &rpc_reply(&id, Reply::Result(result)))
        }),
    )
}

/// One SSE event. Compact JSON never contains a raw newline, so one `data:` line holds it.
fn send_event(w: &mut ChunkWriter<'_>, message: &Value) -> io::Result<()> {
    w.send(format!("event: message\ndata: {message}\n\n").as_bytes())
}

fn text_result(text: impl Into<String>) -> Value {
    json!({ "content": [{ "type": "text", "text": text.into() }] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_arguments_are_capped_and_never_panic() {
        let args = |v: Value| v.as_object().unwrap().clone();
        let cap = |v: Value| int_arg(&args(json!({"n": v})), "t", "n", Some(3), 100);
        assert_eq!(cap(json!(5)), Ok(5));
        assert_eq!(cap(json!(u64::MAX)), Ok(100));
        assert_eq!(cap(json!(1e300)), Ok(100));
        assert_eq!(cap(json!(7.0)), Ok(7));
        assert_eq!(cap(Value::Null), Ok(3));
        assert!(cap(json!(-1)).is_err());
        assert!(cap(json!(i64::MIN)).is_err());
        assert!(cap(json!(-1e300)).is_err());
        assert!(cap(json!(true)).is_err());
        assert!(int_arg(&Map::new(), "t", "n", None, 100).is_err());
    }
}
