//! systemd's readiness protocol (`sd_notify`): a datagram to `$NOTIFY_SOCKET` saying `READY=1`,
//! `STOPPING=1` or `WATCHDOG=1`. A few lines over a Unix datagram socket; no crate needed.
//! Without `$NOTIFY_SOCKET` (not started by systemd as `Type=notify`) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one state line; failures are logged at debug and otherwise ignored (notification is
/// advisory, never a reason to stop serving).
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        log::debug!("sd_notify {state:?} failed: {e}");
    }
}

/// Sends `state` to the notification socket `path` (`@name` is an abstract socket).
pub fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    UnixDatagram::unbound().and_then(|socket| {
        let path = path.to_string_lossy();
        match path.strip_prefix('@') {
            // An abstract socket: the name after '@' in the Linux abstract namespace.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
            None => socket.send_to(state.as_bytes(), path.as_ref()),
        }
        .map(|_| ())
    })
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, as systemd recommends; `None` when
/// no watchdog is configured for this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        && pid != std::process::id()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_the_socket() {
        let dir = std::env::temp_dir().join(format!("mcp-tunnel-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
