//! A queued command's handle for the connector thread ([`Ticket`]): its answers, its
//! cancellation, whether the client that took it is gone, and which client instance served it.
//!
//! Dropping a ticket withdraws the command wherever it is (queued or delivered), so nothing
//! outlives the caller who asked. Just before, it tells the slot given to [`Ticket::report_to`]
//! which instance the command was delivered to, for the call's audit line: the one this node
//! handed it to (kept when its pending entry went, as its answer removes it), else, with the
//! shared store, the one Redis recorded when a poll on any node took it (`mcpt:d:`, which lives
//! until the withdrawal). Nothing when it never reached a client.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::{Cancelled, Inner, Pending, TunnelHub, Wait, payload_bytes};
use crate::wire::ResponsePayload;

/// A queued command's handle for the connector thread. Dropping it withdraws the command
/// wherever it is (queued or delivered), so nothing outlives the caller who asked.
pub struct Ticket {
    pub(super) hub: Arc<TunnelHub>,
    pub request_id: String,
    pub(super) answers: Receiver<ResponsePayload>,
    pub(super) buffered: Arc<AtomicUsize>,
    pub(super) cancelled: Arc<AtomicBool>,
    /// The instance its pending entry named when that was removed ([`Inner::remove_pending`]).
    pub(super) served: Arc<OnceLock<String>>,
    /// Where [`Ticket::served_by`] is reported when the ticket ends.
    pub(super) report: Option<Arc<OnceLock<String>>>,
}

impl Inner {
    /// Removes a pending command, keeping for its ticket the instance it was delivered to.
    pub(super) fn remove_pending(&mut self, request_id: &str) -> Option<Pending> {
        let pending = self.pending.remove(request_id)?;
        if let Some(instance) = &pending.instance {
            let _ = pending.served.set(instance.clone());
        }
        Some(pending)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(slot) = &self.report
            && let Some(instance) = self.served_by()
        {
            let _ = slot.set(instance);
        }
        self.hub.withdraw(&self.request_id);
    }
}

impl Ticket {
    /// The next payload for this command, waiting at most `wait`.
    pub fn next(&self, wait: Duration) -> Wait {
        match self.answers.recv_timeout(wait) {
            Ok(payload) => {
                if !payload.resp_type.is_terminal() {
                    self.buffered
                        .fetch_sub(payload_bytes(&payload), Ordering::SeqCst);
                }
                Wait::Payload(payload)
            }
            Err(RecvTimeoutError::Timeout) => Wait::Timeout,
            Err(RecvTimeoutError::Disconnected) if self.cancelled.load(Ordering::SeqCst) => {
                Wait::Cancelled
            }
            Err(RecvTimeoutError::Disconnected) => Wait::Dropped,
        }
    }

    /// The caller left: withdraw the command, or tell the client that holds it.
    pub fn cancel(&self, reason: &'static str) -> Cancelled {
        self.hub.cancel(&self.request_id, reason)
    }

    /// Whether the command was delivered to a client instance that is gone (see
    /// [`super::CLIENT_GONE_GRACE`]): no answer will come.
    pub fn client_gone(&self) -> bool {
        let inner = self.hub.lock();
        let now = Instant::now();
        match inner.pending.get(&self.request_id).map(|p| &p.instance) {
            Some(Some(i)) => inner.instances.get(i).is_some_and(|i| i.gone(now)),
            Some(None) if self.hub.shared.is_some() => {
                drop(inner); // delivered by another node, perhaps
                self.hub.remote_gone(&self.request_id)
            }
            _ => false,
        }
    }

    /// The client instance (its `X-Tunnel-Client-Instance-Id`, `anonymous` without one) the
    /// command was delivered to, on whichever node; `None` while it has reached none.
    pub fn served_by(&self) -> Option<String> {
        let inner = self.hub.lock();
        let here = inner.pending.get(&self.request_id);
        let local = here.and_then(|p| p.instance.clone());
        drop(inner);
        local
            .or_else(|| self.served.get().cloned())
            .or_else(|| self.hub.shared.as_ref()?.delivered_to(&self.request_id))
    }

    /// Reports [`Ticket::served_by`] to `slot` when this ticket ends (the call's audit line).
    pub fn report_to(mut self, slot: &Arc<OnceLock<String>>) -> Ticket {
        self.report = Some(Arc::clone(slot));
        self
    }
}
