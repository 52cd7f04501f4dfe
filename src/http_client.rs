//! The one place outbound HTTP clients are built, for both hops.
//!
//! Each hop gets its own [`ureq::Agent`] so connections are pooled and reused per destination
//! (no fresh TCP/TLS handshake per command). Common to every agent:
//! - TLS by rustls with the ring provider; the hop's trust roots (the built-in Mozilla roots,
//!   plus any configured CA bundle) and client certificate; verification is always on.
//! - The hop's proxy (an explicit one, or the environment's with `NO_PROXY`), or its Unix socket.
//! - Status codes are values, not errors: the callers map every status themselves.
//! - No redirects: a redirected POST would silently drop or replay a JSON-RPC call.
//! - No automatic `Accept`/`Accept-Encoding`: callers set exactly what the contract asks for.
//! - Per-request deadlines are set by the callers with [`with_timeout`].
//! - Cancellable reads: an exchange run under [`cancellable`] ends soon after its
//!   [`CancelFlag`] is set, even while it waits for the server ([`CANCEL_CHECK`]); its connection
//!   is then closed, never pooled, which is how the server learns of it.

use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ureq::config::AutoHeaderValue;
use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
use ureq::{Agent, Proxy};

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, DefaultConnector, NextTimeout, Transport,
};

use crate::net::{HopNet, ProxyChoice};
use crate::unix_socket::{NoResolve, UnixConnector};

/// `User-Agent` on every request we make.
pub fn user_agent() -> String {
    format!("mcp-tunnel/{}", env!("CARGO_PKG_VERSION"))
}

/// What differs between the hops.
pub struct AgentOptions {
    /// Longest time an idle pooled connection is kept.
    pub max_idle_age: Duration,
    /// Idle connections kept per host; sized to the concurrency that will use them.
    pub max_idle_per_host: usize,
}

/// An agent for one hop. Fails only for a proxy URL the HTTP client cannot use (validated at
/// startup, so in practice never).
pub fn build_agent(opts: &AgentOptions, net: &HopNet) -> Result<Agent, String> {
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        // ureq is built without a provider of its own (rustls-no-provider): always ours.
        .unversioned_rustls_crypto_provider(crate::tls::provider())
        .root_certs(match &net.roots {
            // ureq's own Mozilla roots are not compiled in (its use would panic): ours instead.
            RootCerts::WebPki => crate::tls::mozilla_roots(),
            roots => roots.clone(),
        })
        .client_cert(net.identity.as_ref().map(|i| i.to_client_cert()))
        .build();
    let proxy = match (&net.unix_socket, &net.proxy) {
        (Some(_), _) => None,
        (None, ProxyChoice::Explicit(url)) => {
            Some(Proxy::new(url.expose()).map_err(|e| format!("proxy {url} is not usable: {e}"))?)
        }
        (None, ProxyChoice::FromEnvironment) => Proxy::try_from_env(),
        (None, ProxyChoice::Direct) => None,
    };
    let config = Agent::config_builder()
        .tls_config(tls)
        .proxy(proxy)
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .user_agent(user_agent())
        .accept(AutoHeaderValue::None)
        .accept_encoding(AutoHeaderValue::None)
        .max_idle_age(opts.max_idle_age)
        .max_idle_connections(opts.max_idle_per_host.max(1) * 2)
        .max_idle_connections_per_host(opts.max_idle_per_host.max(1))
        .middleware(crate::http_log::middleware)
        .build();
    Ok(match &net.unix_socket {
        Some(path) => Agent::with_parts(
            config,
            UnixConnector(path.clone()).chain(CancelPoint),
            NoResolve,
        ),
        None => Agent::with_parts(
            config,
            DefaultConnector::new().chain(CancelPoint),
            InlineResolver,
        ),
    })
}

/// Name resolution on the calling thread. ureq's default resolver starts a thread for every
/// lookup of a request that has a timeout (all of ours do) — even for an IP address, even when a
/// pooled connection is then reused: measurably the largest cost per command. Here an IP
/// literal needs no lookup at all, and a name goes to the system resolver directly, whose own
/// timeouts (resolv.conf) bound it.
#[derive(Debug)]
struct InlineResolver;

impl Resolver for InlineResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let bad = || ureq::Error::BadUri(uri.to_string());
        let (scheme, authority) = (
            uri.scheme().ok_or_else(bad)?,
            uri.authority().ok_or_else(bad)?,
        );
        let host_port = DefaultResolver::host_and_port(scheme, authority).ok_or_else(bad)?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = host_port
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .ok_or_else(bad)?;
        let found: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            // A failed lookup is "host not found" whatever the resolver's reason.
            Err(_) => (host, port)
                .to_socket_addrs()
                .map_err(|_| ureq::Error::HostNotFound)?
                .collect(),
        };
        let mut addrs = self.empty();
        for addr in config.ip_family().keep_wanted(found.into_iter()).take(16) {
            addrs.push(addr);
        }
        if addrs.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(addrs)
    }
}

/// The timeout for a whole exchange (connect, send, headers and body), never zero: ureq treats a
/// zero timeout as "already expired", which is what an exhausted budget should mean anyway, but
/// we keep one millisecond so the error is a clean timeout rather than a surprise.
pub fn clamp_timeout(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

/// Applies a whole-exchange timeout to one request.
pub fn with_timeout<B>(req: ureq::RequestBuilder<B>, timeout: Duration) -> ureq::RequestBuilder<B> {
    req.config()
        .timeout_global(Some(clamp_timeout(timeout)))
        .build()
}

/// How often a read waiting for the server looks at its thread's [`CancelFlag`]. Only reads
/// run under [`cancellable`] wake up this often; all others wait as before.
pub const CANCEL_CHECK: Duration = Duration::from_millis(100);

/// Set once to end the exchange of the thread running under it ([`cancellable`]).
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

thread_local! {
    /// The flag of the exchange this thread runs, if any. ureq hands a transport no per-request
    /// context, and a blocking exchange runs on the calling thread, so the thread is the context.
    static CURRENT: RefCell<Option<CancelFlag>> = const { RefCell::new(None) };
}

/// Runs `exchange` (ureq calls and body reads) so that setting `flag` ends its waits for the
/// server within [`CANCEL_CHECK`], with an I/O error, closing the connection.
pub fn cancellable<T>(flag: &CancelFlag, exchange: impl FnOnce() -> T) -> T {
    struct Restore(Option<CancelFlag>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = CURRENT.with(|c| c.borrow_mut().replace(flag.clone()));
    let _restore = Restore(previous);
    exchange()
}

fn current_flag() -> Option<CancelFlag> {
    CURRENT.with(|c| c.borrow().clone())
}

/// The last link of every connector chain: wraps the connection in [`Watched`].
#[derive(Debug)]
struct CancelPoint;

impl<In: Transport> Connector<In> for CancelPoint {
    type Out = Watched<In>;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Watched<In>>, ureq::Error> {
        Ok(chained.map(|inner| Watched { inner }))
    }
}

/// A connection whose reads, under [`cancellable`], wait in slices of [`CANCEL_CHECK`] and stop
/// once the flag is set. A slice that ends without data has consumed nothing (the socket read
/// timed out), so the next slice carries on where it left off, TLS included.
#[derive(Debug)]
struct Watched<T> {
    inner: T,
}

impl<T: Transport> Transport for Watched<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let Some(flag) = current_flag() else {
            return self.inner.await_input(timeout);
        };
        let started = Instant::now();
        loop {
            if flag.is_cancelled() {
                return Err(ureq::Error::Io(io::Error::other("cancelled by the caller")));
            }
            let left = (!timeout.after.is_not_happening())
                .then(|| timeout.after.saturating_sub(started.elapsed()));
            let last = left.is_some_and(|l| l <= CANCEL_CHECK);
            let mut slice = timeout;
            slice.after = left.map_or(CANCEL_CHECK, |l| l.min(CANCEL_CHECK)).into();
            match self.inner.await_input(slice) {
                Err(e) if !last && is_timeout(&e) => continue,
                other => return other,
            }
        }
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

/// A read that only ran out of its (sliced) time.
fn is_timeout(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ),
        _ => false,
    }
}
