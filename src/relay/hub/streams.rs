//! Long-lived streams' bookkeeping (our extension, [`crate::wire::FEATURE_STREAMS`]): what kind
//! of stream a `stream` command opens, whether one can be handed out, how many a tunnel has
//! open, and the bound on what a slow reader leaves unread at the relay.
//!
//! An open stream is a pending command marked `stream`; the count of them is the per-tunnel
//! figure `--stream.max-per-tunnel` caps, derived from the pending table so that it can never
//! drift from it. With the Redis store the cap is also checked cluster-wide when a stream is
//! queued (`shared::streams`: a leased member per open stream). A stream's notifications wait
//! for its host in the same buffer as any request's, bounded by [`STREAM_BUFFER_BYTES`]: when a message would pass that, the stream is ended (the
//! client's next POST gets 404 and it closes the upstream request), counted in
//! [`slow_readers_cut`] and logged. Dropping the oldest messages instead would hand the host a
//! stream with holes in it that nothing tells it about; an ended stream it reopens.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::instance::Instance;
use super::queue::{CommandBody, StreamSpec};
use super::{SubmitError, Ticket, TunnelHub};
use crate::wire::FEATURE_STREAMS;

/// Most bytes of a stream's messages held at the relay for a host that does not read them. The
/// host's socket buffers come on top; memory per stream stays bounded by both.
pub const STREAM_BUFFER_BYTES: usize = 1024 * 1024;

/// Streams ended at the relay because their host did not read (since start, all tunnels).
static SLOW_READERS_CUT: AtomicU64 = AtomicU64::new(0);

/// What a `stream` command opens at the MCP server (its `stream` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A 2025 session's standalone `GET` stream.
    Get,
    /// A 2026-07-28 `subscriptions/listen` request.
    Listen,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Get => "get",
            StreamKind::Listen => "listen",
        }
    }
}

/// How many of the pending commands (`true` for each stream) are open streams.
fn open(pending: impl Iterator<Item = bool>) -> usize {
    pending.filter(|s| *s).count()
}

impl TunnelHub {
    /// Queues a `stream` command (our extension, [`FEATURE_STREAMS`]) for an instance that
    /// announced it, unless `max_open` streams of this tunnel are open already. It must be taken
    /// by `deadline`; the stream may stay open until `ends`.
    pub fn submit_stream(
        self: &Arc<Self>,
        body: CommandBody,
        kind: StreamKind,
        deadline: Instant,
        ends: Instant,
        session: Option<&str>,
        max_open: usize,
    ) -> Result<Ticket, SubmitError> {
        if open(self.lock().pending.values().map(|p| p.stream)) >= max_open {
            return Err(SubmitError::StreamLimit);
        }
        let spec = StreamSpec {
            kind: kind.as_str(),
            ends,
            max_open,
        };
        self.enqueue(body, deadline, (session, false, None), Some(spec), None)
    }

    /// Whether a stream for `session` could be handed out now: the instance holding the session
    /// (or, for an unbound one, any live instance) announced [`FEATURE_STREAMS`]. Without one the
    /// connector keeps the contract's behaviour.
    pub fn streams_available(&self, session: Option<&str>) -> bool {
        if let Some(shared) = &self.shared {
            return shared.streams_available(session);
        }
        let inner = self.lock();
        let now = Instant::now();
        let streams = |i: &Instance| self.alive(i, now) && i.extensions.has(FEATURE_STREAMS);
        match session.and_then(|s| inner.sessions.owner(s)) {
            Some(owner) => inner.instances.get(owner).is_some_and(streams),
            None => inner.instances.values().any(streams),
        }
    }
}

/// Counts and logs a stream ended because its host left `held` bytes unread.
pub(super) fn cut_slow_reader(request_id: &str, held: usize) {
    let total = SLOW_READERS_CUT.fetch_add(1, Ordering::Relaxed) + 1;
    log::warn!(
        "stream {request_id}: the MCP host is not reading it ({held} bytes waiting, at most \
         {STREAM_BUFFER_BYTES}); ending the stream ({total} ended so far for slow readers)"
    );
}

/// Streams ended for slow readers since start.
pub fn slow_readers_cut() -> u64 {
    SLOW_READERS_CUT.load(Ordering::Relaxed)
}
