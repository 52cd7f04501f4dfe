//! The poll side of the Redis store: a long-poll takes its instance's `cancel` orders and
//! commands from Redis (its own list first, then the tunnel's), waiting in `BLPOP` between
//! checks that the poller is still there; an answer that could not be written goes back to the
//! head of the lists it came from.

use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::super::queue::{Delivered, Item, Queued};
use super::super::{GONE_CHECK, Inner, PollAsk, SubmitError, Ticket, TunnelHub};
use super::{MIN_BLOCK, Shared};
use crate::wire::FEATURE_STREAMS;

/// How long after its last sign of life a gone instance is still announced to other nodes.
const ANNOUNCE_GONE_FOR: Duration = Duration::from_secs(60);

impl TunnelHub {
    /// The end of [`TunnelHub::submit`] with the queue in Redis: `inner` holds the new pending
    /// command; on refusal the ticket's drop forgets it again.
    pub(in crate::relay::hub) fn enqueue_shared(
        &self,
        shared: &Shared,
        inner: MutexGuard<'_, Inner>,
        queued: &Queued,
        ticket: Ticket,
    ) -> Result<Ticket, SubmitError> {
        let token = inner.pending[&ticket.request_id].shard_token.clone();
        drop(inner);
        if let Some(spec) = &queued.stream {
            let slot = (
                queued.request_id.as_str(),
                token.as_str(),
                queued.body.channel.as_str(),
            );
            shared.take_stream_slot(slot, spec.max_open)?;
        }
        shared.enqueue(queued, &token, self.limits.queue_capacity)?;
        Ok(ticket)
    }

    /// Whether the instance that took `request_id` on another node is gone (that node
    /// announced it: [`TunnelHub::announce_gone`]).
    pub(in crate::relay::hub) fn remote_gone(&self, request_id: &str) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.instance_gone(request_id))
    }

    /// Tells the other nodes which of the instances polling here are gone (see
    /// [`super::super::CLIENT_GONE_GRACE`]), so connectors waiting there stop waiting too.
    pub fn announce_gone(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let now = Instant::now();
        let gone: Vec<String> = self
            .lock()
            .instances
            .iter()
            .filter(|(_, i)| i.last_seen.is_some_and(|t| t.elapsed() < ANNOUNCE_GONE_FOR))
            .filter(|(_, i)| i.gone(now))
            .map(|(id, _)| id.clone())
            .collect();
        for instance in gone {
            shared.mark_gone(&instance, ANNOUNCE_GONE_FOR);
        }
    }

    /// Whether a command not delivered from this node can still be cancelled: always with the
    /// memory store (it is queued), else as [`Shared::cancellable`] says.
    pub(in crate::relay::hub) fn remote_cancellable(&self, request_id: &str) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|s| s.cancellable(request_id))
    }

    /// [`TunnelHub::requeue`] with the queue in Redis: back at the head of the list each came
    /// from, in order.
    pub(in crate::relay::hub) fn requeue_shared(&self, shared: &Shared, commands: Vec<Delivered>) {
        let mut inner = self.lock();
        let mut back = Vec::new();
        for d in commands {
            match d.item {
                Item::Work {
                    queued,
                    shard_token,
                } => {
                    if let Some(pending) = inner.pending.get_mut(&queued.request_id) {
                        pending.instance = None;
                    }
                    back.push((queued, shard_token));
                }
                Item::Cancel(order) => {
                    if let Some(me) = inner.instances.get_mut(&order.instance) {
                        me.cancels.push_back(order);
                    }
                }
            }
        }
        drop(inner);
        shared.put_back(back);
        self.queued.notify_all();
    }

    /// [`TunnelHub::poll_with`] with the queue in Redis.
    pub(in crate::relay::hub) fn poll_shared(
        &self,
        shared: &Shared,
        instance: &str,
        ask: PollAsk,
        limit: usize,
        wait: Duration,
        gone: &dyn Fn() -> bool,
    ) -> Vec<Delivered> {
        let deadline = Instant::now().checked_add(wait);
        let affine: Vec<String> = ask.affine_channels.iter().cloned().collect();
        // What other nodes need to know of it: the extension features it announced.
        let features = match ask.extensions.to_header() {
            f if f.is_empty() => "-".to_string(),
            f => f,
        };
        let streams = ask.extensions.has(FEATURE_STREAMS);
        {
            let mut inner = self.lock();
            let me = inner.instances.entry(instance.to_string()).or_default();
            me.waiting_polls += 1;
            me.affine_channels = ask.affine_channels;
            me.extensions = ask.extensions;
            me.last_seen = Some(Instant::now());
        }
        let (mut cancels, mut taken) = (Vec::new(), Vec::new());
        loop {
            if gone() {
                break;
            }
            shared.touch_alive(instance, &affine, &features, self.limits.client_timeout);
            cancels = self
                .lock()
                .instances
                .get_mut(instance)
                .map(|me| me.cancels.drain(..).collect())
                .unwrap_or_default();
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let block = if cancels.is_empty() {
                left.unwrap_or(GONE_CHECK).min(GONE_CHECK)
            } else {
                Duration::ZERO
            };
            // Whether this round still has to wait: it took nothing without blocking in Redis
            // (only cancels asked for, a block too short for BLPOP, or Redis down).
            let room = if ask.cancels_only { 0 } else { limit };
            let wait_here = match shared.take(instance, streams, room, block) {
                Ok((orders, t)) => {
                    cancels.extend(orders);
                    taken = t;
                    block < MIN_BLOCK
                }
                Err(_) => true,
            };
            if !cancels.is_empty() || !taken.is_empty() || left == Some(Duration::ZERO) {
                break;
            }
            if wait_here && !block.is_zero() {
                let inner = self.lock();
                drop(self.queued.wait_timeout(inner, block));
            }
        }
        shared.touch_alive(instance, &affine, &features, self.limits.client_timeout);
        let mut inner = self.lock();
        let mut out = inner.poll_ended(instance, cancels);
        for (queued, shard_token) in taken {
            if let Some(pending) = inner.pending.get_mut(&queued.request_id) {
                pending.instance = Some(instance.to_string());
            }
            out.push(Delivered {
                item: Item::Work {
                    queued,
                    shard_token,
                },
            });
        }
        out
    }
}
