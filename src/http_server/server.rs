//! The server's lifecycle: start on a bound listener, accept on one thread, hand each connection
//! its own thread within the connection caps, shut down on request or drop.
//!
//! The accept thread never waits on a peer: a connection over a cap is answered `503` with a
//! non-blocking write and closed (over TLS, closed without a word, since answering would need a
//! handshake). Shutdown raises the flag every connection checks between exchanges, shuts down the
//! read side of the connections waiting for a request (they block on their sockets, never poll),
//! wakes the blocked `accept` with a connection of its own, and returns once the accept thread
//! has ended.
//!
//! [`Server::start_unix`] serves a Unix-domain socket the same way (the health server's
//! `--health.unix-socket`): each accepted stream is handed on as a `TcpStream` built from its file
//! descriptor (safe `OwnedFd` conversion). Everything the connection code does with it — read,
//! write, timeouts, non-blocking peeks, shutdown — is a plain socket call that means
//! the same on both families; only `set_nodelay` fails, and its result is ignored. Its peer
//! address is given as `127.0.0.1:0` (a Unix peer has none); TLS is not offered there.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::connection::{Admit, Handler, Service, serve_connection};
use super::limits::Limits;
use super::request::RequestHead;
use super::response::{Response, error_response, render_full};
use super::slots::{Refusal, Slots, Taken};

/// Pause after an unexpected `accept` error (e.g. out of file descriptors) so the accept thread
/// does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Time allowed for the self-connect that wakes the blocked accept thread on shutdown.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Self-connect attempts before shutdown gives up on joining the accept thread.
const WAKE_ATTEMPTS: usize = 3;

/// The admission of [`Server::start`]: every request, up to `Limits::max_body_bytes`.
fn admit_all(_head: &RequestHead<'_>) -> Result<usize, Response> {
    Ok(usize::MAX)
}

/// State shared by the accept thread, the connection threads and the `Server` handle.
struct Shared {
    service: Service,
    /// Connections currently holding a thread (or about to get one), by pool and peer.
    slots: Slots,
}

/// A running server. Dropping it shuts it down like [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    /// Set for a server on a Unix socket: the path its accept thread is woken through.
    unix_path: Option<PathBuf>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts serving on an already-bound listener (bind `127.0.0.1:0` for an ephemeral port).
    /// Every request is admitted with a body of up to `Limits::max_body_bytes`.
    pub fn start(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
        handler: impl Handler,
    ) -> io::Result<Server> {
        Server::start_with_admission(listener, tls, limits, admit_all, handler)
    }

    /// [`Server::start`], with `admit` deciding each request's body limit before its body is read.
    pub fn start_with_admission(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
        admit: impl Admit,
        handler: impl Handler,
    ) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        // The accept loop relies on blocking accepts (shutdown wakes it by connecting).
        listener.set_nonblocking(false)?;
        Server::serve(
            addr,
            None,
            move || listener.accept(),
            tls,
            limits,
            admit,
            handler,
        )
    }

    /// [`Server::start`] on a bound Unix-domain socket at `path` (plain HTTP; see the module
    /// docs). [`local_addr`](Self::local_addr) then answers `127.0.0.1:0`.
    pub fn start_unix(
        listener: UnixListener,
        path: PathBuf,
        limits: Limits,
        handler: impl Handler,
    ) -> io::Result<Server> {
        listener.set_nonblocking(false)?;
        let peer = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0);
        let accept = move || {
            let (stream, _) = listener.accept()?;
            Ok((TcpStream::from(OwnedFd::from(stream)), peer))
        };
        let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0);
        Server::serve(addr, Some(path), accept, None, limits, admit_all, handler)
    }

    fn serve(
        addr: SocketAddr,
        unix_path: Option<PathBuf>,
        accept: impl FnMut() -> io::Result<(TcpStream, SocketAddr)> + Send + 'static,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
        admit: impl Admit,
        handler: impl Handler,
    ) -> io::Result<Server> {
        let slots = Slots::new(
            limits.max_connections,
            limits.reserved_connections,
            limits.max_connections_per_peer,
        );
        let shared = Arc::new(Shared {
            service: Service {
                handler: Box::new(handler),
                admit: Box::new(admit),
                tls,
                limits,
                shutdown: AtomicBool::new(false),
                waiting: Default::default(),
            },
            slots,
        });
        let accept_shared = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(accept, accept_shared))?;
        debug!("http server listening on {addr}");
        Ok(Server {
            addr,
            unix_path,
            shared,
            accept: Some(accept),
        })
    }
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// Stops accepting new connections; returns when the accept thread has ended. Connections
    /// already open finish their current request and close.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(handle) = self.accept.take() else {
            return;
        };
        self.shared.service.shutdown.store(true, Ordering::SeqCst);
        let woken = self.shared.service.waiting.shut_idle();
        debug!("shutdown: {woken} idle connection(s) closed");
        // The accept thread is blocked in accept(); a connection of our own wakes it up, and it
        // then sees the flag. A listener on the unspecified address is reached over loopback.
        let target = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.addr.port())
            }
            _ => self.addr,
        };
        let woken = (0..WAKE_ATTEMPTS).any(|_| {
            if let Some(path) = &self.unix_path {
                return handle.is_finished() || UnixStream::connect(path).is_ok();
            }
            handle.is_finished()
                || match TcpStream::connect_timeout(&target, WAKE_TIMEOUT) {
                    Ok(_) => true,
                    Err(e) => {
                        debug!("shutdown wake-up connect to {target} failed: {e}");
                        false
                    }
                }
        });
        if woken || handle.is_finished() {
            if handle.join().is_err() {
                warn!("http accept thread panicked");
            }
        } else {
            // Joining now could block forever; the thread exits at its next accepted connection.
            warn!("could not wake the http accept thread on {target}; not waiting for it");
        }
        debug!("http server on {} stopped", self.addr);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Releases a connection slot when the connection's thread ends (even by panic), or when the
/// thread could not be spawned.
struct Slot(Arc<Shared>, Taken);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slots.release(self.1);
    }
}

fn accept_loop(
    mut accept: impl FnMut() -> io::Result<(TcpStream, SocketAddr)>,
    shared: Arc<Shared>,
) {
    loop {
        let (tcp, peer) = match accept() {
            Ok(conn) => conn,
            Err(e) => {
                if shared.service.shutdown.load(Ordering::SeqCst) {
                    break;
                }
                match e.kind() {
                    // The peer gave up before we got to it, or a signal: nothing to wait out.
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted => {}
                    _ => {
                        warn!("http accept failed: {e}");
                        thread::sleep(ACCEPT_ERROR_BACKOFF);
                    }
                }
                continue;
            }
        };
        // Either the wake-up connection from `stop`, or a client that arrived too late.
        if shared.service.shutdown.load(Ordering::SeqCst) {
            break;
        }
        let taken = match shared.slots.take(peer.ip()) {
            Ok(taken) => taken,
            Err(refusal) => {
                match refusal {
                    Refusal::Full => debug!(
                        "{peer}: connection refused, at the cap of {}",
                        shared.service.limits.max_connections
                    ),
                    Refusal::PeerCap => debug!(
                        "{peer}: connection refused, at the per-peer cap of {}",
                        shared.service.limits.max_connections_per_peer
                    ),
                }
                refuse_busy(tcp, shared.service.tls.is_some());
                continue;
            }
        };
        // The header deadline counts from here, so a thread that starts late costs the peer.
        let accepted = Instant::now();
        let slot = Slot(Arc::clone(&shared), taken);
        let spawned = thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || {
                let slot = slot;
                serve_connection(tcp, peer, accepted, slot.1.pool, &slot.0.service);
            });
        // On failure the closure, and with it the slot, has been dropped: the count is restored.
        if let Err(e) = spawned {
            warn!("could not spawn a connection thread: {e}");
        }
    }
    debug!("http accept thread ending");
}

/// Answers a connection over the cap with 503 from the accept thread, without ever blocking it.
fn refuse_busy(tcp: TcpStream, tls: bool) {
    if tls {
        // A response would need a TLS handshake first, which can block; just close.
        return;
    }
    if tcp.set_nonblocking(true).is_err() {
        return;
    }
    // A fresh socket's send buffer takes this small response whole; if not, the peer loses it.
    let _ = (&tcp).write_all(&render_full(error_response(503), true));
    let _ = tcp.shutdown(Shutdown::Write);
    // Discard whatever the peer already sent, so closing with unread data does not send a RST
    // that could destroy the 503 before the peer reads it. Bounded: never wait here.
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match (&tcp).read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}
