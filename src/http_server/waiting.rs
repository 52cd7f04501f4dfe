//! Live connections, so that shutdown can wake the ones waiting for a request without any of
//! them polling: an idle connection blocks in one read bounded only by its idle timeout, and
//! [`Waiting::shut_idle`] ends that read by shutting the socket's read side down.
//!
//! Each connection registers its shared socket handle (no second descriptor) once, when its
//! thread starts, and is removed when the thread ends (by dropping its [`Registered`]); so the
//! registry holds at most one entry per connection slot. Between exchanges a connection marks itself idle, then checks
//! the shutdown flag; shutdown raises the flag, then shuts down every connection marked idle. All
//! four steps are sequentially consistent, so either the connection sees the flag or shutdown
//! sees the mark: none is left waiting. A connection busy with an exchange is not touched; it
//! sees the flag after its response, as before. Leaving the idle mark is a compare-and-swap that
//! fails once shutdown has claimed the connection, which then closes without reading on.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Serving a request, or between reading and answering: shutdown waits for it.
const BUSY: u8 = 0;
/// Waiting for the next request's first byte: shutdown may end the wait.
const IDLE: u8 = 1;
/// Shutdown shut the socket down while it was idle.
const STOPPED: u8 = 2;

struct Entry {
    sock: Arc<TcpStream>,
    state: AtomicU8,
}

/// The registry of one server's live connections.
#[derive(Default)]
pub(super) struct Waiting {
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Arc<Entry>>>,
}

/// One connection's place in the registry; dropping it removes the entry.
pub(super) struct Registered<'w> {
    waiting: &'w Waiting,
    id: u64,
    entry: Arc<Entry>,
}

impl Waiting {
    /// Registers a connection by its shared socket handle.
    pub fn register(&self, sock: Arc<TcpStream>) -> Registered<'_> {
        let entry = Arc::new(Entry {
            sock,
            state: AtomicU8::new(BUSY),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Arc::clone(&entry));
        Registered {
            waiting: self,
            id,
            entry,
        }
    }

    /// After `shutdown` was raised: wakes every connection waiting for a request (its read
    /// returns end-of-stream). Returns how many were woken.
    pub fn shut_idle(&self) -> usize {
        let entries = self.lock();
        let mut woken = 0;
        for entry in entries.values() {
            let claimed = entry
                .state
                .compare_exchange(IDLE, STOPPED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            if claimed {
                // The read side only: a TLS connection can still send its close_notify.
                let _ = entry.sock.shutdown(Shutdown::Read);
                woken += 1;
            }
        }
        woken
    }

    /// How many connections are registered (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Registered<'_> {
    /// Marks the connection idle before it blocks for its next request; false if `shutdown` is
    /// already raised (the connection should close instead of waiting).
    pub fn go_idle(&self, shutdown: &AtomicBool) -> bool {
        self.entry.state.store(IDLE, Ordering::SeqCst);
        if shutdown.load(Ordering::SeqCst) {
            self.entry.state.store(STOPPED, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Marks the connection busy after its wait; false if shutdown claimed it meanwhile (its
    /// socket is shut down; the connection should close).
    pub fn go_busy(&self) -> bool {
        self.entry
            .state
            .compare_exchange(IDLE, BUSY, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.waiting.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (server, client)
    }

    #[test]
    fn shutdown_ends_a_blocked_idle_read_and_spares_busy_ones() {
        let waiting = Waiting::default();
        let flag = AtomicBool::new(false);
        let (idle, _idle_peer) = pair();
        let (busy, _busy_peer) = pair();
        let (idle, busy) = (Arc::new(idle), Arc::new(busy));
        let idle_reg = waiting.register(Arc::clone(&idle));
        let busy_reg = waiting.register(Arc::clone(&busy));
        assert_eq!(waiting.len(), 2);
        assert!(idle_reg.go_idle(&flag));
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                // Blocks with no timeout but the test's own bound: only the shutdown ends it.
                idle.set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                let started = Instant::now();
                let n = (&*idle).read(&mut [0u8; 16]).unwrap();
                (n, started.elapsed())
            });
            flag.store(true, Ordering::SeqCst);
            // The reader may not have blocked yet; a read after the shutdown returns 0 too.
            assert_eq!(waiting.shut_idle(), 1);
            let (n, took) = reader.join().unwrap();
            assert_eq!(n, 0);
            assert!(took < Duration::from_secs(10));
        });
        assert!(!idle_reg.go_busy(), "shutdown claimed the idle connection");
        // The busy one was not touched, and may not go idle any more.
        assert!(!busy_reg.go_idle(&flag));
        busy.set_nonblocking(true).unwrap();
        let e = (&*busy).read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        drop(idle_reg);
        drop(busy_reg);
        assert_eq!(waiting.len(), 0);
    }

    #[test]
    fn an_idle_connection_that_got_its_request_is_busy_again() {
        let waiting = Waiting::default();
        let flag = AtomicBool::new(false);
        let (conn, _peer) = pair();
        let reg = waiting.register(Arc::new(conn));
        assert!(reg.go_idle(&flag));
        assert!(reg.go_busy());
        flag.store(true, Ordering::SeqCst);
        assert_eq!(waiting.shut_idle(), 0);
    }
}
