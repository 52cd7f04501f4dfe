//! The connection's byte stream, plain TCP or TLS, behind one [`Transport`] so that everything
//! above shares one code path.
//!
//! Every read is bounded by a deadline, re-applied before each socket read (rustls' own reads
//! included), so a peer trickling bytes cannot stretch it. Closing is careful: an orderly close
//! sends TLS close_notify and FIN, then lingers (discarding what the peer still sends, bounded
//! in time and bytes) so that the kernel does not answer late bytes with a reset that would
//! destroy our last response or TLS alert; an abort cuts the stream short on purpose.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConnection, StreamOwned};

use super::request_reader::Source;

/// After an error response we half-close and keep reading (discarding) for at most this long, so
/// the kernel does not answer the peer's still-arriving bytes with a RST that would destroy the
/// response before the peer reads it.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// ... and for at most this many discarded bytes. Many HTTP clients (httpx, the Python MCP SDK's)
/// send the whole body before they read the answer, so a 413 reaches them only if we read past
/// what they send; 64 MiB covers any body a host would try, and [`LINGER_TIME`] bounds the cost.
const LINGER_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The connection's socket, one descriptor shared by the connection's reads and writes, the
/// shutdown registry and the request being handled (which asks whether its peer is gone): no
/// `dup` per connection or per request.
pub(super) struct SharedTcp(pub Arc<TcpStream>);

impl Read for SharedTcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for SharedTcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

/// The connection's byte stream, plain or TLS, so that everything above shares one code path.
pub(super) enum Transport {
    Plain(SharedTcp),
    Tls(Box<StreamOwned<ServerConnection, SharedTcp>>),
}

impl Transport {
    /// Whether the TLS peer presented a certificate the verifier accepted; rustls only keeps
    /// peer certificates that passed verification.
    pub(super) fn client_cert_verified(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.conn.peer_certificates().is_some_and(|c| !c.is_empty()),
        }
    }

    pub(super) fn tcp(&self) -> &Arc<TcpStream> {
        match self {
            Transport::Plain(s) => &s.0,
            Transport::Tls(t) => &t.sock.0,
        }
    }

    /// Orderly close: TLS close_notify, FIN, then discard what the peer still sends for a while
    /// (see `LINGER_TIME`).
    pub(super) fn close(mut self) {
        if let Transport::Tls(t) = &mut self {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
        linger(self.tcp());
    }

    /// Abrupt close: no close_notify, so a TLS peer also sees the stream cut short.
    pub(super) fn abort(self) {
        let _ = self.tcp().shutdown(Shutdown::Both);
    }
}

impl Source for Transport {
    /// Reads some bytes, failing with a timeout error once `deadline` has passed. The deadline is
    /// re-applied before every socket read (also those rustls makes internally), so a peer
    /// trickling bytes cannot stretch it.
    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => {
                set_timeout_until(&s.0, deadline)?;
                s.read(buf)
            }
            Transport::Tls(t) => {
                let t = &mut **t;
                let mut sock = DeadlineIo {
                    sock: &mut t.sock,
                    deadline,
                };
                match rustls::Stream::new(&mut t.conn, &mut sock).read(buf) {
                    // A TCP close without close_notify: for a request stream that is plain EOF.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                    other => other,
                }
            }
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.flush(),
        }
    }
}

/// A socket whose every read is bounded by a deadline; handed to rustls.
struct DeadlineIo<'a> {
    sock: &'a mut SharedTcp,
    deadline: Instant,
}

impl Read for DeadlineIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        set_timeout_until(&self.sock.0, self.deadline)?;
        self.sock.read(buf)
    }
}

impl Write for DeadlineIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// Sets the socket read timeout to the time left until `deadline`, or fails if none is left
/// (a zero timeout would mean "block forever").
fn set_timeout_until(sock: &TcpStream, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    sock.set_read_timeout(Some(left))
}

/// Half-closes and reads (and discards) what the peer still sends, for at most `LINGER_TIME` and
/// `LINGER_MAX_BYTES`: closing with unread data would make the kernel send a reset, and the peer
/// could lose what we sent last (a response, or a TLS alert) before reading it.
fn linger(tcp: &TcpStream) {
    let _ = tcp.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER_TIME;
    let mut sink = [0u8; 4096];
    let mut discarded = 0;
    while discarded < LINGER_MAX_BYTES {
        if set_timeout_until(tcp, deadline).is_err() {
            break;
        }
        match (&*tcp).read(&mut sink) {
            Ok(n) if n > 0 => discarded += n,
            _ => break,
        }
    }
}

/// Runs the TLS handshake. A failed one lingers before closing, so the alert rustls sent (an
/// unknown CA, a missing client certificate) reaches the peer instead of a reset.
pub(super) fn tls_handshake(
    tcp: SharedTcp,
    config: &Arc<rustls::ServerConfig>,
    deadline: Instant,
) -> io::Result<StreamOwned<ServerConnection, SharedTcp>> {
    let conn = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        let mut sock = DeadlineIo {
            sock: &mut tls.sock,
            deadline,
        };
        let result = tls.conn.complete_io(&mut sock);
        match result {
            Ok((0, 0)) if tls.conn.is_handshaking() => {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(_) => {}
            Err(e) => {
                // The alert may still sit in rustls' buffer: send it, then linger.
                let mut sock = DeadlineIo {
                    sock: &mut tls.sock,
                    deadline,
                };
                let _ = tls.conn.write_tls(&mut sock);
                linger(&tls.sock.0);
                return Err(e);
            }
        }
    }
    Ok(tls)
}

/// Whether the peer has closed its side: reading without blocking finds end-of-stream or a reset
/// (bytes still unread are discarded; the connection is ending anyway). Bounded: a peer that
/// keeps sending is not closed.
pub(super) fn peer_closed(tcp: &TcpStream) -> bool {
    if tcp.set_nonblocking(true).is_err() {
        return false;
    }
    let mut sink = [0u8; 4096];
    let mut closed = false;
    for _ in 0..16 {
        match (&*tcp).read(&mut sink) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                closed = e.kind() != io::ErrorKind::WouldBlock;
                break;
            }
        }
    }
    let _ = tcp.set_nonblocking(false);
    closed
}
