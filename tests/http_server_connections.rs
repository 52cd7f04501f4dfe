//! Black-box tests of our HTTP/1.1 server's connections over loopback sockets: the connection
//! caps (in all, per peer, the reserve), the header and read timeouts, who closed a connection,
//! surviving panics in handlers and stream producers, and shutdown.
//!
//! Request and response handling is in `http_server.rs`.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mcp_tunnel::http_server::{ConnectionHandle, Limits, Request, Response};
use support::PROMPTLY;
use support::http_wire::{
    closed_by_server, connect, echo, exchange, read_reply, read_until_closed, small_limits, start,
};

/// The connection handle a request carries tells a peer's close from the server's own.
#[test]
fn connection_handle_tells_who_closed() {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start(limits, move |req: Request| {
        let _ = tx.lock().unwrap().send(req.connection.clone());
        Response::new(200, "ok")
    });
    let wait_closed = |handle: &ConnectionHandle| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while handle.is_open() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        handle.end().expect("the connection ended")
    };
    // The peer closes.
    let mut peer = connect(&server);
    peer.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut peer, &mut Vec::new()).status, 200);
    let handle = rx.recv().unwrap();
    assert!(handle.is_open());
    drop(peer);
    assert!(wait_closed(&handle).by_peer);
    // The server closes an idle connection itself.
    let mut idle = connect(&server);
    idle.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut idle, &mut Vec::new()).status, 200);
    let handle = rx.recv().unwrap();
    assert!(!wait_closed(&handle).by_peer);
    assert!(closed_by_server(&mut idle));
}

#[test]
fn connection_cap_gives_503() {
    let limits = Limits {
        max_connections: 1,
        ..small_limits()
    };
    let server = start(limits, echo);
    // A proves it holds the only slot by getting an answer, then stays open.
    let mut a = connect(&server);
    a.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut a, &mut Vec::new()).status, 200);

    let mut b = connect(&server);
    let busy = read_reply(&mut b, &mut Vec::new());
    assert_eq!(busy.status, 503);
    assert!(busy.text().contains("server_busy"));
    assert!(closed_by_server(&mut b));

    // Once A leaves, its slot is released. The slot frees asynchronously, so poll for it
    // under a deadline.
    drop(a);
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let (reply, _) = exchange(&server, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503);
        assert!(Instant::now() < deadline, "slot never released");
        thread::sleep(Duration::from_millis(10));
    }
    server.shutdown();
}

#[test]
fn per_peer_cap_gives_503() {
    let limits = Limits {
        max_connections_per_peer: 1,
        ..small_limits()
    };
    let server = start(limits, echo);
    let mut a = connect(&server);
    a.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut a, &mut Vec::new()).status, 200);
    let mut b = connect(&server);
    let busy = read_reply(&mut b, &mut Vec::new());
    assert_eq!(busy.status, 503);
    server.shutdown();
}

#[test]
fn reserved_slots_serve_only_the_reserved_route() {
    let limits = Limits {
        max_connections: 2,
        reserved_connections: 1,
        reserved_route: |path| path.starts_with("/ctl"),
        ..small_limits()
    };
    let server = start(limits, echo);
    // A takes the only general slot and proves it by an answer.
    let mut a = connect(&server);
    a.write_all(b"GET /any HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut a, &mut Vec::new()).status, 200);
    // B lands in the reserve: another route is refused.
    let (reply, mut b) = exchange(&server, b"GET /any HTTP/1.1\r\n\r\n");
    assert_eq!(reply.status, 503);
    assert!(closed_by_server(&mut b));
    // C lands in the reserve too (B's slot frees asynchronously: retry under a deadline).
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let (reply, _) = exchange(
            &server,
            b"GET /ctl/poll HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503);
        assert!(Instant::now() < deadline, "reserve slot never served /ctl");
        thread::sleep(Duration::from_millis(10));
    }
    drop(a);
    server.shutdown();
}

#[test]
fn slow_request_gets_408() {
    let limits = Limits {
        read_timeout: Duration::from_millis(300),
        ..small_limits()
    };
    let server = start(limits, echo);
    // Never finishes its header block.
    let (reply, mut stream) = exchange(&server, b"GET / HTTP/1.1\r\nHost:");
    assert_eq!(reply.status, 408);
    assert!(closed_by_server(&mut stream));
    server.shutdown();
}

#[test]
fn header_timeout_closes_silent_connections_and_408s_slow_heads() {
    let limits = Limits {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(60),
        ..small_limits()
    };
    let server = start(limits, echo);
    let started = Instant::now();
    let mut silent = connect(&server);
    assert!(closed_by_server(&mut silent), "silent connection kept open");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (reply, _) = exchange(&server, b"GET / HTTP/1.1\r\nHost:");
    assert_eq!(reply.status, 408);
    // A kept-alive connection may idle longer than the header timeout between requests.
    let mut stream = connect(&server);
    let mut buf = Vec::new();
    stream.write_all(b"GET /a HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut stream, &mut buf).status, 200);
    thread::sleep(Duration::from_millis(600));
    stream.write_all(b"GET /b HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut stream, &mut buf).status, 200);
    server.shutdown();
}

#[test]
fn handler_panic_gets_500_and_server_survives() {
    let server = start(small_limits(), |req: Request| {
        if req.path() == "/panic" {
            panic!("test handler panic (expected)");
        }
        Response::new(200, "fine")
    });
    let (reply, mut stream) = exchange(&server, b"GET /panic HTTP/1.1\r\n\r\n");
    assert_eq!(reply.status, 500);
    assert!(closed_by_server(&mut stream));
    let (reply, _) = exchange(&server, b"GET /ok HTTP/1.1\r\n\r\n");
    assert_eq!((reply.status, reply.text().as_str()), (200, "fine"));
    server.shutdown();
}

#[test]
fn stream_producer_panic_cuts_the_stream_and_server_survives() {
    let server = start(small_limits(), |req: Request| {
        if req.path() != "/panic" {
            return Response::new(200, "fine");
        }
        Response::stream(
            200,
            Vec::new(),
            Box::new(|w| {
                w.send(b"partial")?;
                panic!("test stream producer panic (expected)");
            }),
        )
    });
    let mut stream = connect(&server);
    stream.write_all(b"GET /panic HTTP/1.1\r\n\r\n").unwrap();
    let text = read_until_closed(&mut stream);
    assert!(text.ends_with("\r\n\r\n7\r\npartial\r\n"), "got {text:?}");
    let (reply, _) = exchange(&server, b"GET /ok HTTP/1.1\r\n\r\n");
    assert_eq!((reply.status, reply.text().as_str()), (200, "fine"));
    server.shutdown();
}

/// The panic promises above only hold in release builds if they unwind: `panic = "abort"`
/// would end the whole process at the first panic.
#[test]
fn release_profile_unwinds_on_panic() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let manifest: toml::Table = text.parse().unwrap();
    let panic = manifest
        .get("profile")
        .and_then(|p| p.get("release"))
        .and_then(|r| r.get("panic"))
        .and_then(|p| p.as_str());
    // Unset means the default, which is unwind.
    assert!(
        matches!(panic, None | Some("unwind")),
        "[profile.release] panic = {panic:?}: the server's panic guarantees need unwind"
    );
}

#[test]
fn shutdown_is_prompt_and_closes_idle_connections() {
    let limits = Limits {
        idle_timeout: Duration::from_secs(600),
        ..small_limits()
    };
    let server = start(limits, echo);
    let addr = server.local_addr();
    let mut idle = connect(&server);
    idle.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut idle, &mut Vec::new()).status, 200);

    let (done_tx, done_rx) = mpsc::channel();
    let started = Instant::now();
    thread::spawn(move || {
        server.shutdown();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("shutdown did not return promptly");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The listener is gone...
    assert!(TcpStream::connect(addr).is_err());
    // ...and the idle keep-alive connection is closed (long before its idle timeout).
    assert!(closed_by_server(&mut idle));
}

/// Shutdown wakes only the connections waiting for a request (issue 21): one whose request the
/// handler is still working on gets its answer, marked as the connection's last.
#[test]
fn shutdown_lets_a_request_in_progress_finish() {
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let entered_tx = std::sync::Mutex::new(entered_tx);
    let release_rx = std::sync::Mutex::new(release_rx);
    let limits = Limits {
        idle_timeout: Duration::from_secs(600),
        ..small_limits()
    };
    let server = start(limits, move |_req: Request| {
        let _ = entered_tx.lock().unwrap().send(());
        let _ = release_rx.lock().unwrap().recv_timeout(PROMPTLY);
        Response::new(200, "done")
    });
    let mut busy = connect(&server);
    busy.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    entered_rx.recv_timeout(PROMPTLY).expect("the handler ran");
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        server.shutdown();
        let _ = done_tx.send(());
    });
    done_rx.recv_timeout(PROMPTLY).expect("shutdown returned");
    release_tx.send(()).unwrap();
    let reply = read_reply(&mut busy, &mut Vec::new());
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"done");
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(closed_by_server(&mut busy));
}

#[test]
fn drop_stops_the_server() {
    let server = start(small_limits(), echo);
    let addr = server.local_addr();
    drop(server);
    assert!(TcpStream::connect(addr).is_err());
}
