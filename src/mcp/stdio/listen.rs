//! Long-lived streams on a stdio child (a session's `GET`, our relay extension): the stream is a
//! listener on the child's return path, and every message not tied to a request (see
//! [`super::route`]) goes to every listener of that child, so with shared children every session
//! on it hears it. A listener lives until its caller cancels it, its deadline passes or the
//! stream's sink stops taking messages; a restart of the child does not end it (its sessions
//! carry on after the handshake is replayed).

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

use super::process::{Event, Process};
use crate::http_client::{CANCEL_CHECK, CancelFlag};
use crate::mcp::{Headers, Outcome, Reply, StreamSink};
use crate::wire::RespType;

impl Process {
    /// Holds a stream on this child until it ends; every message for it goes to `sink`.
    pub(super) fn hold_stream(
        &self,
        deadline: Option<Instant>,
        sink: &mut StreamSink<'_>,
        cancel: &CancelFlag,
    ) -> Outcome {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (events, inbox) = mpsc::channel();
        self.shared.lock().listeners.insert(id, events);
        let outcome = self.listen(&inbox, deadline, sink, cancel);
        self.shared.lock().listeners.remove(&id);
        outcome
    }

    fn listen(
        &self,
        inbox: &mpsc::Receiver<Event>,
        deadline: Option<Instant>,
        sink: &mut StreamSink<'_>,
        cancel: &CancelFlag,
    ) -> Outcome {
        let headers = Headers::new();
        if !sink(None, &headers) {
            return Outcome::Cancelled;
        }
        loop {
            if cancel.is_cancelled() {
                return Outcome::Cancelled;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Outcome::Expired;
            }
            match inbox.recv_timeout(CANCEL_CHECK) {
                Ok(Event::Notification(raw)) => {
                    if !sink(Some(raw), &headers) {
                        return Outcome::Cancelled;
                    }
                }
                Ok(Event::Cancelled) => return Outcome::Cancelled,
                Ok(Event::Response(_)) | Err(RecvTimeoutError::Timeout) => {}
                Ok(Event::Closed) | Err(RecvTimeoutError::Disconnected) => {
                    return Outcome::Reply(Reply {
                        resp_json: None,
                        resp_headers: Headers::new(),
                        resp_code: 200,
                        resp_type: RespType::JsonrpcResponse,
                        failure: None,
                    });
                }
            }
        }
    }
}
