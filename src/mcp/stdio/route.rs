//! The multiplexer's return path: each line the child writes goes to the call it answers
//! (by internal id), a progress notification to the call that owns its token, a notification
//! tagged `io.modelcontextprotocol/subscriptionId` to the `subscriptions/listen` it belongs to
//! (the one whose internal id the tag names, the tag then set back to the caller's id, else the
//! only listen in flight), another
//! notification to every stream held on the child ([`super::listen`]) when there is one, else to
//! the one call in flight (or nowhere), and a server→client request goes to the host when our
//! extension is on and a call or stream can carry it ([`crate::mcp::server_requests`]), else
//! is refused, so the server never waits for an answer that cannot come.

use std::sync::Arc;

use serde_json::Value;

use super::object::Object;
use super::process::{Event, Shared};
use crate::mcp::server_requests;
use crate::wire::RpcShape;

/// The `_meta` key a 2026-07-28 server tags a listen's notifications with.
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

impl Shared {
    /// Routes one line the child wrote.
    pub(super) fn route(self: &Arc<Self>, line: &[u8]) {
        let text = match std::str::from_utf8(line) {
            Ok(t) if !t.trim().is_empty() => t.trim(),
            Ok(_) => return,
            Err(_) => {
                log::warn!(
                    "[{}] stdio server wrote a line that is not UTF-8; skipped",
                    self.channel
                );
                return;
            }
        };
        let (Some(shape), Some(object)) = (RpcShape::of(text), Object::parse(text)) else {
            log::warn!(
                "[{}] stdio server wrote a line that is not a JSON-RPC object; skipped",
                self.channel
            );
            return;
        };
        match (&shape.method, &shape.id) {
            (Some(method), Some(id)) => {
                if !self.forward_request(method, id, &object) {
                    self.refuse_request(method, id);
                }
            }
            (Some(method), None) => self.route_notification(method, object),
            (None, Some(id)) => {
                let state = self.lock();
                match id.as_u64().and_then(|n| state.calls.get(&n)) {
                    Some(call) => {
                        let _ = call.events.send(Event::Response(object.to_raw()));
                    }
                    None => log::debug!(
                        "[{}] answer for a retired or unknown id discarded",
                        self.channel
                    ),
                }
            }
            (None, None) => {
                log::warn!(
                    "[{}] stdio server wrote a message with neither id nor method; skipped",
                    self.channel
                )
            }
        }
    }

    fn route_notification(&self, method: &str, mut object: Object) {
        let state = self.lock();
        let tag = subscription_tag(&object);
        if method != "notifications/progress" && tag.is_none() && !state.listeners.is_empty() {
            // Not tied to a request: every stream held on this child gets it.
            for listener in state.listeners.values() {
                let _ = listener.send(Event::Notification(object.to_raw()));
            }
            return;
        }
        let mut tagged_by_id = false;
        let target = if let Some(tag) = &tag {
            let mut listens = state.calls.iter().filter(|(_, c)| c.listen);
            let by_id = tag
                .as_u64()
                .or_else(|| tag.as_str().and_then(|t| t.parse().ok()))
                .filter(|id| state.calls.get(id).is_some_and(|c| c.listen));
            match (by_id, listens.next(), listens.next()) {
                (Some(id), _, _) => {
                    tagged_by_id = true;
                    Some(id)
                }
                (None, Some((id, _)), None) => Some(*id),
                _ => None,
            }
        } else if method == "notifications/progress" {
            object
                .get("params")
                .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                .and_then(|p| {
                    p.get("progressToken")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .and_then(|token| state.tokens.get(&token).copied())
        } else if state.calls.len() == 1 {
            state.calls.keys().next().copied()
        } else {
            None
        };
        let Some(call) = target.and_then(|id| state.calls.get(&id)) else {
            log::debug!(
                "[{}] notification {method} has no call to go to; dropped",
                self.channel
            );
            return;
        };
        if let Some((original, _)) = &call.progress
            && method == "notifications/progress"
            && let Some(mut params) = object.get("params").and_then(|p| Object::parse(p.get()))
        {
            params.set("progressToken", original);
            object.set_raw("params", params.to_raw());
        }
        if tagged_by_id {
            // The tag names the id the child saw; the host knows its own.
            retag(&mut object, &call.original_id);
        }
        let _ = call.events.send(Event::Notification(object.to_raw()));
    }

    /// A server→client request, with our extension on ([`server_requests`]): to the one call in
    /// flight on this child, else to one stream held on it, with an id of ours; `false` when
    /// there is neither (or the extension is off), and it must be refused.
    fn forward_request(&self, method: &str, id: &Value, object: &Object) -> bool {
        if !server_requests::is_on() {
            return false;
        }
        let state = self.lock();
        let to = match (state.calls.len(), state.listeners.values().next()) {
            (1, _) => state.calls.values().next().map(|c| &c.events),
            (_, Some(listener)) => Some(listener),
            _ => None,
        };
        let Some(to) = to else {
            return false;
        };
        let forwarded = self.asked.tunnel(&object.to_raw(), id, None);
        let sent = to.send(Event::Notification(forwarded)).is_ok();
        if sent {
            log::info!(
                "[{}] stdio server sent a {method} request; forwarded to the host",
                self.channel
            );
        }
        sent
    }

    /// A server→client request (sampling, roots, elicitation) that cannot cross the tunnel:
    /// answer it with an error so the server does not wait forever.
    fn refuse_request(&self, method: &str, id: &Value) {
        log::info!(
            "[{}] stdio server sent a {method} request; answered 'not supported through tunnel'",
            self.channel
        );
        let reply = server_requests::refusal(id);
        let _ = self.write_line(&reply.to_string());
    }
}

/// Sets `params._meta["io.modelcontextprotocol/subscriptionId"]` to `id`, the rest untouched.
fn retag(object: &mut Object, id: &Value) {
    let Some(mut params) = object.get("params").and_then(|p| Object::parse(p.get())) else {
        return;
    };
    let Some(mut meta) = params.get("_meta").and_then(|m| Object::parse(m.get())) else {
        return;
    };
    meta.set(SUBSCRIPTION_ID, id);
    params.set_raw("_meta", meta.to_raw());
    object.set_raw("params", params.to_raw());
}

/// `params._meta["io.modelcontextprotocol/subscriptionId"]` of a notification, if present.
fn subscription_tag(object: &Object) -> Option<Value> {
    let params: Value = serde_json::from_str(object.get("params")?.get()).ok()?;
    params.get("_meta")?.get(SUBSCRIPTION_ID).cloned()
}
