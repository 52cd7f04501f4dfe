//! A real `redis-server` for the tests of the relay's Redis store: on a free `127.0.0.1` port,
//! without persistence (`--save "" --appendonly no`), ready once it answers `PING` (waited for with
//! a deadline), killed when dropped. [`RedisServer::stop`] and [`RedisServer::restart`] take it
//! away and bring it back on the same port (a Redis outage). Without `redis-server` on `PATH` the
//! tests print "skipped: redis-server not installed" ([`redis_installed`]) and pass.
//! [`RedisServer::start_tls`] serves TLS only (`rediss://localhost:PORT`), ready once its port
//! accepts connections.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::PROMPTLY;

/// Whether a real `redis-server` can be run.
pub fn redis_installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A running `redis-server`. Killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// `--tls-cert-file`, `--tls-key-file`: TLS only.
    tls: Option<(String, String)>,
}

impl RedisServer {
    /// Starts one on a free loopback port (another port if that one was taken meanwhile).
    pub fn start() -> RedisServer {
        for _attempt in 0..3 {
            let port = free_port();
            if let Some(child) = launch(port, None) {
                return RedisServer {
                    child: Some(child),
                    port,
                    tls: None,
                };
            }
        }
        panic!("redis-server could not listen on a free loopback port");
    }

    /// One that speaks TLS only, with this certificate chain and key (PEM files).
    pub fn start_tls(cert: &str, key: &str) -> RedisServer {
        let tls = Some((cert.to_string(), key.to_string()));
        for _attempt in 0..3 {
            let port = free_port();
            if let Some(child) = launch(port, tls.as_ref()) {
                return RedisServer {
                    child: Some(child),
                    port,
                    tls,
                };
            }
        }
        panic!("redis-server could not listen on a free loopback port");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(_) => format!("rediss://localhost:{}", self.port),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it (all data is lost: there is no persistence) and waits until the port refuses.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + PROMPTLY;
        loop {
            if let Some(child) = launch(self.port, self.tls.as_ref()) {
                self.child = Some(child);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {} within {PROMPTLY:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one inline command and returns the raw reply (e.g. `DBSIZE`, `KEYS *`, `TTL k`).
    pub fn command(&self, line: &str) -> String {
        command(self.port, line).expect("a reply from redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts redis-server on `port` and waits for it to answer PING (with `tls`: to accept
/// connections); `None` if it exited.
fn launch(port: u16, tls: Option<&(String, String)>) -> Option<Child> {
    let port_text = port.to_string();
    let mut server = Command::new("redis-server");
    match tls {
        None => server.args(["--port", &port_text]),
        Some((cert, key)) => server
            .args([
                "--port",
                "0",
                "--tls-port",
                &port_text,
                "--tls-auth-clients",
                "no",
            ])
            .args(["--tls-cert-file", cert, "--tls-key-file", key]),
    };
    let mut child = server
        .args(["--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let ready = match tls {
            None => command(port, "PING").is_some_and(|r| r.starts_with("+PONG")),
            Some(_) => TcpStream::connect(("127.0.0.1", port)).is_ok(),
        };
        if ready {
            return Some(child);
        }
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server did not answer PING on port {port} within {PROMPTLY:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One inline command on a fresh connection; the reply as read within a short bound.
fn command(port: u16, line: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("{line}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 64 * 1024];
    let n = stream.read(&mut buf).ok()?;
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener.local_addr().expect("local address").port()
}
