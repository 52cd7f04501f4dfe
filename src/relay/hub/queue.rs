//! One tunnel's command queue: what a queued command carries, which poll may take it, and how a
//! taken command is written into a poll answer.
//!
//! Commands leave in order. A poll takes only commands its instance may serve (process
//! affinity), never more than its limit, and at most [`POLL_ANSWER_BUDGET`] bytes of them, the
//! first always; expired commands are dropped on the way, since their connectors gave up.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use serde_json::value::RawValue;

/// Most bytes of commands one poll answer carries (estimated: bodies and headers plus a fixed
/// overhead each). Well under the client's 64 MiB limit on a poll answer; the first command
/// always goes, so one command larger than this (the connector limit allows up to 33 MiB)
/// travels alone.
pub const POLL_ANSWER_BUDGET: usize = 16 * 1024 * 1024;

/// Fixed per-command allowance in [`POLL_ANSWER_BUDGET`] for the envelope fields (ids, token,
/// channel, timestamps).
const COMMAND_OVERHEAD: usize = 512;

/// A command waiting in the queue.
pub(super) struct Queued {
    pub(super) request_id: String,
    /// The client must be done (MCP call and response POST) by then.
    pub(super) deadline: Instant,
    /// Only this instance may take it (process affinity).
    pub(super) affinity: Option<String>,
    pub(super) body: CommandBody,
    /// A `stream` command (our extension): only for instances that announced
    /// [`crate::wire::FEATURE_STREAMS`].
    pub(super) stream: Option<StreamSpec>,
}

/// What a queued `stream` command adds: its kind (the `stream` field) and when the stream must
/// end at the latest (its `response_timeout` is the time left until then).
pub(super) struct StreamSpec {
    pub(super) kind: &'static str,
    pub(super) ends: Instant,
    /// `--stream.max-per-tunnel`: with the Redis store, checked cluster-wide when it is queued.
    pub(super) max_open: usize,
}

impl Queued {
    /// Bytes this command adds to a poll answer, roughly (see [`POLL_ANSWER_BUDGET`]).
    fn answer_bytes(&self) -> usize {
        let headers: usize = self
            .body
            .headers
            .iter()
            .map(|(n, vs)| vs.iter().map(|v| n.len() + v.len() + 8).sum::<usize>())
            .sum();
        self.body.jsonrpc.as_ref().map_or(0, |j| j.get().len()) + headers + COMMAND_OVERHEAD
    }
}

/// What a poll hands out, less the parts computed at delivery (`response_timeout`). The
/// JSON-RPC message is the connector's text itself, the only copy the relay keeps.
pub struct CommandBody {
    pub command_type: &'static str,
    pub channel: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub jsonrpc: Option<Box<RawValue>>,
    pub created_at: String,
}

/// A command taken by a poll, to be written into its answer ([`Delivered::to_json`]). If the
/// answer cannot be written, [`super::TunnelHub::requeue`] puts it back.
pub struct Delivered {
    pub(super) item: Item,
}

/// What a [`Delivered`] carries.
pub(super) enum Item {
    Work {
        queued: Queued,
        shard_token: String,
    },
    /// Our extension: the caller of this instance's command left ([`CancelOrder`]).
    Cancel(CancelOrder),
}

/// A `cancel` command waiting for the poll of the instance that holds the cancelled command.
pub struct CancelOrder {
    /// The cancelled command's request id and shard token.
    pub(super) request_id: String,
    pub(super) shard_token: String,
    pub(super) channel: String,
    /// `host_closed` or `notifications_cancelled`, for the client's log.
    pub(super) reason: &'static str,
    pub(super) instance: String,
}

/// A `cancel` command as it appears in a poll answer.
#[derive(Serialize)]
struct WireCancel<'a> {
    request_id: &'a str,
    shard_token: &'a str,
    command_type: &'a str,
    channel: &'a str,
    created_at: String,
    headers: BTreeMap<String, Vec<String>>,
    reason: &'a str,
}

/// A command as it appears in a poll answer; `jsonrpc` is written as the raw text.
#[derive(Serialize)]
struct WireCommand<'a> {
    request_id: &'a str,
    shard_token: &'a str,
    command_type: &'a str,
    channel: &'a str,
    created_at: &'a str,
    response_timeout: String,
    headers: &'a BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<&'a str>,
}

impl Delivered {
    pub fn request_id(&self) -> &str {
        match &self.item {
            Item::Work { queued, .. } => &queued.request_id,
            Item::Cancel(order) => &order.request_id,
        }
    }

    /// The command's JSON object; `response_timeout` is the time left now.
    pub fn to_json(&self) -> String {
        let (q, shard_token) = match &self.item {
            Item::Work {
                queued,
                shard_token,
            } => (queued, shard_token),
            Item::Cancel(order) => {
                let wire = WireCancel {
                    request_id: &order.request_id,
                    shard_token: &order.shard_token,
                    command_type: crate::wire::COMMAND_CANCEL,
                    channel: &order.channel,
                    created_at: now_rfc3339(),
                    headers: BTreeMap::new(),
                    reason: order.reason,
                };
                return serde_json::to_string(&wire).unwrap_or_default();
            }
        };
        let ends = q.stream.as_ref().map_or(q.deadline, |s| s.ends);
        let left = ends.saturating_duration_since(Instant::now());
        let wire = WireCommand {
            request_id: &q.request_id,
            shard_token,
            command_type: q.body.command_type,
            channel: &q.body.channel,
            created_at: &q.body.created_at,
            response_timeout: format!("{}ms", left.as_millis()),
            headers: &q.body.headers,
            jsonrpc: q.body.jsonrpc.as_deref(),
            stream: q.stream.as_ref().map(|s| s.kind),
        };
        // Plain strings, a string map and already-valid raw JSON: serializing cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

/// Takes up to `limit` commands `instance` may serve, within [`POLL_ANSWER_BUDGET`] (the first
/// always), dropping expired ones on the way (their connectors have already given up). Order is
/// kept: once one command does not fit, later ones wait too. `stream` commands go only to an
/// instance that `streams`.
pub(super) fn take_eligible(
    queue: &mut VecDeque<Queued>,
    instance: &str,
    streams: bool,
    limit: usize,
) -> Vec<Queued> {
    let now = Instant::now();
    let mut taken = Vec::new();
    let mut bytes = 0usize;
    let mut full = false;
    let mut kept = VecDeque::with_capacity(queue.len());
    while let Some(q) = queue.pop_front() {
        if q.deadline <= now {
            continue;
        }
        let eligible =
            q.affinity.as_deref().is_none_or(|a| a == instance) && (streams || q.stream.is_none());
        if eligible && !full && taken.len() < limit {
            let size = q.answer_bytes();
            if taken.is_empty() || bytes.saturating_add(size) <= POLL_ANSWER_BUDGET {
                bytes = bytes.saturating_add(size);
                taken.push(q);
                continue;
            }
            full = true;
        }
        kept.push_back(q);
    }
    *queue = kept;
    taken
}

/// `created_at` for a command queued now.
pub fn now_rfc3339() -> String {
    crate::logging::utc_timestamp(SystemTime::now())
}
