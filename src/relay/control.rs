//! The control-plane side of the relay: what tunnel clients call.
//!
//! `GET /v1/tunnels/{id}` (metadata), `GET …/poll` (long-poll) and `POST …/response`, each
//! authorised by the tunnel's runtime key and nothing else: a connector key or another tunnel's
//! runtime key gets 401.
//!
//! Our extension ([`wire::EXTENSIONS_HEADER`]): every answer here names the features the relay
//! speaks; a poll's own announcement is recorded for its client instance, and the relay uses a
//! feature with that instance only when it announced it. A poll may ask for `cancel` commands
//! only ([`wire::POLL_ONLY_HEADER`]).

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::hub::{Delivered, PollAsk, RespondError, TunnelHub};
use super::tunnels::TunnelRecord;
use super::{api_error, bearer};
use crate::config::MAX_POLL_LIMIT;
use crate::http_server::{ChunkWriter, Request, Response};
use crate::wire::{self, Extensions, ResponsePayload, TunnelMetadata};

/// Names the features the relay speaks on a control-plane answer.
fn announce(resp: Response) -> Response {
    resp.with_header(wire::EXTENSIONS_HEADER, &Extensions::ours().to_header())
}

/// Checks the runtime key; the error response is ready to send.
fn authorize(record: &TunnelRecord, req: &Request) -> Result<(), Response> {
    match bearer(req) {
        Some(key) if record.runtime_key_matches(key) => Ok(()),
        _ => Err(api_error(
            401,
            "invalid_request_error",
            "tunnel_use_forbidden",
            "missing or invalid runtime key for this tunnel",
        )
        .with_header("WWW-Authenticate", "Bearer realm=\"mcp-tunnel\"")),
    }
}

pub fn metadata(record: &TunnelRecord, req: &Request) -> Response {
    if let Err(denied) = authorize(record, req) {
        return denied;
    }
    let meta = TunnelMetadata {
        id: record.id.clone(),
        name: record.name.clone(),
        description: record.description.clone(),
    };
    announce(Response::json(
        200,
        serde_json::to_vec(&meta).unwrap_or_default(),
    ))
}

/// Channels the polling instance declared process-affine.
fn affine_channels(req: &Request) -> HashSet<String> {
    req.header(wire::SERVER_INFO_HEADER)
        .and_then(wire::ServerInfo::from_header)
        .map(|info| {
            info.channels
                .into_iter()
                .filter(|c| c.proc_affinity)
                .map(|c| c.name)
                .collect()
        })
        .unwrap_or_default()
}

/// The client instance a request comes from. Clients without an instance id share one
/// identity; affinity and gone-client detection then cannot tell them apart.
fn instance_of(req: &Request) -> &str {
    req.header("X-Tunnel-Client-Instance-Id")
        .unwrap_or("anonymous")
}

/// A long-poll; `stop` (the relay is draining) ends a held one at once, with no commands.
pub fn poll(
    record: &TunnelRecord,
    hub: &Arc<TunnelHub>,
    req: &Request,
    max_wait: Duration,
    stop: &dyn Fn() -> bool,
) -> Response {
    if let Err(denied) = authorize(record, req) {
        return denied;
    }
    let limit = match req.query_param("limit") {
        None => 1,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_POLL_LIMIT).contains(&n) => n,
            _ => {
                return api_error(
                    400,
                    "invalid_request_error",
                    "invalid_limit",
                    "limit must be a whole number from 1 to 25",
                );
            }
        },
    };
    let wait = match req.query_param("timeout_ms") {
        None => max_wait,
        Some(v) => match v.parse::<u64>() {
            Ok(ms) => Duration::from_millis(ms).min(max_wait),
            Err(_) => {
                return api_error(
                    400,
                    "invalid_request_error",
                    "invalid_timeout",
                    "timeout_ms must be a whole number of milliseconds",
                );
            }
        },
    };
    let instance = instance_of(req);
    hub.seen(instance, &req.connection);
    // A poller that disconnected (a client that died or restarted) must take nothing.
    let ask = PollAsk {
        affine_channels: affine_channels(req),
        extensions: Extensions::from_header(req.header(wire::EXTENSIONS_HEADER)),
        cancels_only: req.header(wire::POLL_ONLY_HEADER).is_some_and(|only| {
            only.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(wire::COMMAND_CANCEL))
        }),
    };
    let commands = hub.poll_with(instance, ask, limit, wait, &|| req.peer_gone() || stop());
    if commands.is_empty() {
        return announce(Response::new(204, Vec::new()));
    }
    let batch = Unwritten {
        hub: Arc::clone(hub),
        commands,
    };
    announce(Response::stream(
        200,
        vec![("Content-Type".into(), "application/json".into())],
        Box::new(move |w: &mut ChunkWriter<'_>| write_commands(batch, w)),
    ))
}

/// Commands taken by a poll whose answer has not been written yet. Dropped unwritten (the
/// write failed, the head could not be sent, the producer never ran), they go back to the
/// front of the queue for the next poller: the client holds at most an incomplete JSON text,
/// which it cannot act on.
struct Unwritten {
    hub: Arc<TunnelHub>,
    commands: Vec<Delivered>,
}

impl Drop for Unwritten {
    fn drop(&mut self) {
        if !self.commands.is_empty() {
            log::debug!(
                "poll answer not written; requeueing {} command(s)",
                self.commands.len()
            );
            self.hub.requeue(std::mem::take(&mut self.commands));
        }
    }
}

/// Writes a poll answer one command per chunk, so no second copy of the batch is built. Once
/// the last chunk is being written the commands count as delivered (the client may have it
/// all); if that client is gone, gone-client detection fails them.
fn write_commands(mut batch: Unwritten, w: &mut ChunkWriter<'_>) -> io::Result<()> {
    let mut opening = String::from("{\"commands\":[");
    for (i, command) in batch.commands.iter().enumerate() {
        let mut chunk = if i == 0 {
            std::mem::take(&mut opening)
        } else {
            String::from(",")
        };
        chunk.push_str(&command.to_json());
        // On failure, dropping `batch` requeues.
        w.send(chunk.as_bytes())?;
    }
    let delivered = std::mem::take(&mut batch.commands);
    // The closing bracket and the end of the chunked body leave in one write.
    let result = w.finish(b"]}");
    drop(delivered);
    result
}

pub fn respond(record: &TunnelRecord, hub: &TunnelHub, req: &Request) -> Response {
    if let Err(denied) = authorize(record, req) {
        return denied;
    }
    hub.seen(instance_of(req), &req.connection);
    let Some(shard_token) = req.header("X-Tunnel-Shard-Token") else {
        return api_error(
            400,
            "invalid_request_error",
            "missing_shard_token",
            "the X-Tunnel-Shard-Token header is required",
        );
    };
    let payload: ResponsePayload = match serde_json::from_slice(&req.body) {
        Ok(p) => p,
        Err(_) => {
            return api_error(
                400,
                "invalid_request_error",
                "invalid_json_payload",
                "the body is not a tunnel response payload",
            );
        }
    };
    match hub.respond(shard_token, payload) {
        Ok(()) => Response::json(200, r#"{"status":"ok"}"#),
        Err(RespondError::NotPending) => api_error(
            404,
            "invalid_request_error",
            "pending_request_not_found",
            "the request was already answered, expired, or never existed for this tunnel",
        ),
        Err(RespondError::StoreUnavailable) => api_error(
            503,
            "api_error",
            "tunnel_transport_unavailable",
            "the relay's shared store is unavailable; retry",
        )
        .with_header("Retry-After", "1"),
    }
}
