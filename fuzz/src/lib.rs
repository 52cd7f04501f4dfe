//! The bodies of the fuzz targets. Each takes arbitrary bytes, drives one parser of mcp-tunnel
//! through its public entry point and asserts an invariant beyond "no panic"; a panic is a
//! finding. Shared by the libFuzzer targets in `fuzz_targets/` (nightly, `make fuzz`) and by
//! `tests/fuzz_regressions.rs`, which replays every saved crash input through these same functions
//! on stable, so a crash found by fuzzing stays fixed in `cargo test`.

use std::io::{self, BufRead, BufReader};

use mcp_tunnel::config::{self, Raw};
use mcp_tunnel::http_server;
use mcp_tunnel::mcp::sse::{Event, SseReader};
use mcp_tunnel::mcp::stdio;
use mcp_tunnel::relay::tunnels;
use mcp_tunnel::wire::{self, Command, CommandKind, PollEnvelope, RpcShape};
use mcp_tunnel::{duration, envfile};
use serde_json::value::RawValue;

/// A target's body: the bytes libFuzzer (or a saved input) provides; a panic is a finding.
pub type Check = fn(&[u8]);

/// Every target by name: the directory names under `tests/fuzz/regressions/` and `fuzz/seeds/`,
/// and the file names in `fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("poll_answer", poll_answer),
    ("duration", duration),
    ("sse", sse),
    ("envfile", envfile),
    ("channel_entry", channel_entry),
    ("tunnels_file", tunnels_file),
    ("http_request", http_request),
    ("stdio_framing", stdio_framing),
];

/// The client's decode of a 200 poll answer: the envelope, then each command on its own
/// (`Command::from_json`). Input that is not an envelope is tried as one command.
/// Invariants: a JSON-RPC body is the sender's bytes, unchanged; the shard token never prints.
pub fn poll_answer(data: &[u8]) {
    let commands = match serde_json::from_slice::<PollEnvelope>(data) {
        Ok(envelope) => envelope.commands,
        Err(_) => match serde_json::from_slice::<Box<RawValue>>(data) {
            Ok(one) => vec![one],
            Err(_) => return,
        },
    };
    let text = std::str::from_utf8(data).ok();
    for raw in &commands {
        let Ok(command) = Command::from_json(raw) else {
            continue;
        };
        if let CommandKind::JsonRpc(body) = &command.kind {
            assert!(body.get().trim_start().starts_with('{'));
            if let Some(text) = text {
                assert!(text.contains(body.get()), "the JSON-RPC body was rewritten");
            }
            let _ = RpcShape::of(body.get());
        }
        let token = command.shard_token.expose();
        if !token.is_empty() && !"***".contains(token) {
            assert!(!format!("{:?}", command.shard_token).contains(token));
        }
        let _ = wire::canonical_channel(command.raw_channel.as_deref());
        let _ = command.header("mcp-session-id");
    }
}

/// The `response_timeout` / configuration duration grammar. Invariants: only
/// `<digits><unit>` is accepted, and `parse(format(d)) == d` for every accepted `d`.
pub fn duration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(d) = duration::parse(text) else {
        return;
    };
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .expect("an accepted duration has a unit");
    assert!(unit_at > 0, "{text:?} accepted without digits");
    assert!(
        ["ns", "us", "ms", "s", "m", "h"].contains(&&text[unit_at..]),
        "{text:?} accepted with an unknown unit"
    );
    let shown = duration::format(d);
    assert_eq!(
        duration::parse(&shown),
        Some(d),
        "{text:?} formats as {shown:?}, which does not read back"
    );
}

/// The event-stream reader. The first byte sets the per-event limit (0..=1020 bytes), the rest is
/// the body. Invariants: reading ends within one call per input byte; the events do not depend on
/// how the body arrives (whole, or one byte per read); an event stays within its limit.
pub fn sse(data: &[u8]) {
    let Some((&limit, body)) = data.split_first() else {
        return;
    };
    let max_event = usize::from(limit) * 4;
    let whole = read_events(body, max_event, body.len());
    let bytewise = read_events(BufReader::with_capacity(1, body), max_event, body.len());
    assert_eq!(whole, bytewise, "events depend on how the body was chunked");
    for event in whole.iter().flatten() {
        // The limit counts raw bytes of the event's lines; lossy UTF-8 decoding may triple them.
        let bound = 3 * (max_event + 2);
        assert!(event.data.len() <= bound, "event over its limit");
    }
}

/// Every `next_event` result until the end, an error, or (a failure) more calls than bytes.
fn read_events(
    reader: impl BufRead,
    max_event: usize,
    len: usize,
) -> Vec<Result<Event, io::ErrorKind>> {
    let mut sse = SseReader::new(reader, max_event);
    let mut out = Vec::new();
    for _ in 0..=len + 1 {
        match sse.next_event() {
            Ok(Some(event)) => out.push(Ok(event)),
            Ok(None) => return out,
            Err(e) => {
                out.push(Err(e.kind()));
                return out;
            }
        }
    }
    panic!("the event-stream reader did not end after {len} bytes");
}

/// The `--env-file` parser. Invariants: every key is a variable name; an error names a line of
/// the input and never quotes the value (values may be secrets).
pub fn envfile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match envfile::parse(text) {
        Ok(vars) => {
            for key in vars.keys() {
                assert!(is_variable_name(key), "{key:?} accepted as a name");
            }
        }
        Err((line, why)) => {
            let lines: Vec<&str> = text.lines().collect();
            assert!(line >= 1 && line <= lines.len(), "error names line {line}");
            let bad = lines[line - 1].trim();
            let bad = bad.strip_prefix("export ").unwrap_or(bad);
            if let Some((key, value)) = bad.split_once('=') {
                let value = value.trim();
                if is_variable_name(key.trim()) && value.len() >= 2 {
                    assert!(!why.contains(value), "the error quotes the value");
                }
            }
        }
    }
}

fn is_variable_name(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One MCP channel declaration (`--mcp.server-url` when the first byte is even, `--mcp.command`
/// when odd). Invariants: an accepted channel name is canonical; an error names the option; an
/// unqualified URL's error never echoes it (it may carry credentials).
pub fn channel_entry(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let command = mode & 1 == 1;
    let source = if command {
        "--mcp.command"
    } else {
        "--mcp.server-url"
    };
    let raw = Raw {
        source: source.to_string(),
        value: text.to_string(),
    };
    match config::fuzz_channel_entry(&raw, command) {
        Ok(name) => assert_eq!(
            wire::canonical_channel(Some(&name)).as_deref(),
            Some(name.as_str()),
            "accepted a channel name that is not canonical"
        ),
        Err(e) => {
            assert_eq!(e.key, source, "the error names another option");
            if !command && !text.trim().starts_with("channel=") && text.contains('@') {
                assert!(!e.message.contains('@'), "the error echoes the URL");
            }
        }
    }
}

/// The relay's tunnels file. Invariants: errors name the file; a registry that loads is written
/// (as `save` writes it) to text that loads back equal.
pub fn tunnels_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match tunnels::parse_text(text) {
        Ok(registry) => {
            let saved = toml::to_string(&registry).expect("a valid registry serializes");
            assert_eq!(
                tunnels::parse_text(&saved),
                Ok(registry),
                "saved as {saved:?}, which loads differently"
            );
        }
        Err(message) => assert!(message.starts_with("tunnels file: "), "{message}"),
    }
}

/// The relay's HTTP/1.1 reader: request heads and `Content-Length` or chunked bodies, pipelined
/// one after another as they would arrive on one connection. Invariants: a bad request gets a
/// status the server documents (400, 413, 431, 501); no body passes the default body limit; every
/// request read consumed input (no request out of nothing).
pub fn http_request(data: &[u8]) {
    let summary = http_server::fuzz_read_request(data);
    if let Some(status) = summary.rejected {
        assert!(
            [400, 413, 431, 501].contains(&status),
            "rejected with an undocumented status {status}"
        );
    }
    let max_body = http_server::Limits::default().max_body_bytes;
    assert!(summary.body_bytes <= summary.requests.saturating_mul(max_body));
    assert!(
        summary.requests <= data.len(),
        "more requests than input bytes"
    );
}

/// The stdio transport's line framing and id rewriting, with no child process: `data` is both
/// what a child writes on stdout and, line by line, what callers send. Invariant: no panic and no
/// blocking on any input (libFuzzer's timeout catches a hang).
pub fn stdio_framing(data: &[u8]) {
    stdio::fuzz_framing(data);
}
