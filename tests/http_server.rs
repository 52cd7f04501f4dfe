//! Black-box tests of our HTTP/1.1 server (`mcp_tunnel::http_server`) over loopback sockets:
//! request parsing and body framing (`Content-Length`, chunked with extensions and trailers),
//! keep-alive and pipelining, the error answers (400, 413, 431), `HEAD` and bodiless statuses,
//! `100 Continue`, streamed and HTTP/1.0 responses, admission before the body, and TLS.
//!
//! The connection's life (caps, timeouts, shutdown, panics) is in `http_server_connections.rs`.

mod support;

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use mcp_tunnel::http_server::{Limits, Request, RequestHead, Response, Server};
use support::PROMPTLY;
use support::http_wire::{
    closed_by_server, connect, echo, exchange, is_timeout, more, read_reply, read_reply_from,
    read_until_closed, small_limits, start,
};

#[test]
fn get_and_post_with_content_length() {
    let server = start(small_limits(), echo);
    let (reply, _) = exchange(
        &server,
        b"GET /hello?name=a%20b+c HTTP/1.1\r\nHost: x\r\nX-TEST: v\r\n\r\n",
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        r#"GET /hello q=Some("a b c") h=Some("v") body="#
    );
    assert_eq!(reply.header("x-reply"), Some("yes"));
    let length = reply.body.len().to_string();
    assert_eq!(reply.header("content-length"), Some(length.as_str()));
    let lengths = reply
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    assert_eq!(lengths.count(), 1);
    assert_eq!(reply.header("transfer-encoding"), None);

    let (reply, _) = exchange(
        &server,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "POST /echo q=None h=None body=hello");
    server.shutdown();
}

#[test]
fn chunked_request_body_with_extensions_and_trailers() {
    let server = start(small_limits(), echo);
    let mut stream = connect(&server);
    stream
        .write_all(
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        )
        .unwrap();
    let mut buf = Vec::new();
    let reply = read_reply(&mut stream, &mut buf);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "POST /c q=None h=None body=hello world");
    // The trailer section was consumed exactly: the next request parses cleanly.
    stream.write_all(b"GET /after HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut stream, &mut buf).status, 200);
    server.shutdown();
}

#[test]
fn keep_alive_pipelining_and_close() {
    let server = start(small_limits(), echo);
    let mut stream = connect(&server);
    let mut buf = Vec::new();
    stream.write_all(b"GET /one HTTP/1.1\r\n\r\n").unwrap();
    let first = read_reply(&mut stream, &mut buf);
    assert_eq!((first.status, first.header("connection")), (200, None));
    // Two requests in one write.
    stream
        .write_all(b"GET /two HTTP/1.1\r\n\r\nGET /three HTTP/1.1\r\n\r\n")
        .unwrap();
    assert!(
        read_reply(&mut stream, &mut buf)
            .text()
            .starts_with("GET /two ")
    );
    assert!(
        read_reply(&mut stream, &mut buf)
            .text()
            .starts_with("GET /three ")
    );
    stream
        .write_all(b"GET /last HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let last = read_reply(&mut stream, &mut buf);
    assert_eq!(last.header("connection"), Some("close"));
    assert!(closed_by_server(&mut stream));

    // HTTP/1.0 closes by default.
    let (reply, mut stream) = exchange(&server, b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(reply.status, 200);
    assert!(closed_by_server(&mut stream));
    server.shutdown();
}

#[test]
fn head_and_no_content_have_no_body() {
    let server = start(small_limits(), |req: Request| {
        if req.path() == "/empty" {
            Response::new(204, "ignored")
        } else {
            Response::new(200, "some body")
        }
    });
    let mut stream = connect(&server);
    let mut buf = Vec::new();
    stream.write_all(b"HEAD /x HTTP/1.1\r\n\r\n").unwrap();
    let head = read_reply_from(&mut stream, &mut buf, true);
    assert_eq!((head.status, head.header("content-length")), (200, None));
    stream.write_all(b"GET /empty HTTP/1.1\r\n\r\n").unwrap();
    let empty = read_reply(&mut stream, &mut buf);
    assert_eq!((empty.status, empty.header("content-length")), (204, None));
    // No stray body bytes were sent: the next response starts right at the status line.
    stream.write_all(b"GET /x HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut stream, &mut buf).text(), "some body");
    server.shutdown();
}

#[test]
fn expect_100_continue() {
    let server = start(small_limits(), echo);
    let mut stream = connect(&server);
    stream
        .write_all(b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .unwrap();
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut buf = Vec::new();
    while buf.len() < interim.len() {
        more(&mut stream, &mut buf);
    }
    assert_eq!(&buf[..interim.len()], interim);
    buf.drain(..interim.len());
    stream.write_all(b"body").unwrap();
    assert!(
        read_reply(&mut stream, &mut buf)
            .text()
            .ends_with("body=body")
    );
    server.shutdown();
}

#[test]
fn oversize_body_gets_413() {
    let server = start(small_limits(), echo);
    let expected = r#"{"error":{"message":"request body too large","type":"invalid_request_error","code":"request_body_too_large"}}"#;
    let (reply, mut stream) = exchange(
        &server,
        b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n12345678901234567",
    );
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.text(), expected);
    assert!(closed_by_server(&mut stream));

    let (reply, mut stream) = exchange(
        &server,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n9\r\n123456789\r\n0\r\n\r\n",
    );
    assert_eq!((reply.status, reply.text().as_str()), (413, expected));
    assert!(closed_by_server(&mut stream));
    server.shutdown();
}

#[test]
fn oversize_headers_get_431() {
    let server = start(small_limits(), echo);
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(1000));
    let (reply, mut stream) = exchange(&server, big.as_bytes());
    assert_eq!(reply.status, 431);
    assert!(closed_by_server(&mut stream));
    server.shutdown();
}

#[test]
fn malformed_requests_get_400() {
    let server = start(small_limits(), echo);
    for raw in [
        &b"\x01\x02 garbage\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let (reply, mut stream) = exchange(&server, raw);
        assert_eq!(reply.status, 400, "for {:?}", String::from_utf8_lossy(raw));
        assert!(closed_by_server(&mut stream));
    }
    server.shutdown();
}

#[test]
fn streamed_response_arrives_chunk_by_chunk() {
    // The producer waits for the test between chunks: the first chunk can only be read in
    // time if it was flushed on its own.
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(Some(go_rx));
    let server = start(small_limits(), move |req: Request| {
        let Some(go) = go_rx
            .lock()
            .unwrap()
            .take()
            .filter(|_| req.path() == "/events")
        else {
            return Response::new(200, "plain");
        };
        Response::stream(
            200,
            vec![
                ("Content-Type".into(), "text/event-stream".into()),
                ("Content-Length".into(), "999".into()),
            ],
            Box::new(move |w| {
                w.send(b"data: one\n\n")?;
                w.send(b"")?;
                go.recv_timeout(PROMPTLY).map_err(io::Error::other)?;
                w.send(b"data: two\n\n")
            }),
        )
    });
    let mut stream = connect(&server);
    stream.write_all(b"GET /events HTTP/1.1\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let first_chunk = b"b\r\ndata: one\n\n\r\n";
    while !raw.ends_with(first_chunk) {
        more(&mut stream, &mut raw);
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(head.contains("Transfer-Encoding: chunked\r\n"));
    assert!(!head.to_ascii_lowercase().contains("content-length"));
    go_tx.send(()).unwrap();
    let rest = b"b\r\ndata: two\n\n\r\n0\r\n\r\n";
    let before = raw.len();
    while raw.len() < before + rest.len() {
        more(&mut stream, &mut raw);
    }
    assert_eq!(&raw[before..], rest);
    // Kept alive after the stream.
    stream.write_all(b"GET /again HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let reply = read_reply(&mut stream, &mut buf);
    assert_eq!(reply.status, 200);
    server.shutdown();
}

#[test]
fn large_body_and_http10_stream() {
    let server = start(Limits::default(), |req: Request| {
        if req.method == "POST" {
            let sum: u64 = req.body.iter().map(|&b| u64::from(b)).sum();
            return Response::new(200, format!("{} {sum}", req.body.len()));
        }
        Response::stream(200, Vec::new(), Box::new(|w| w.send(b"raw bytes")))
    });
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let expected_sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    let mut stream = connect(&server);
    let head = format!(
        "POST /big HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let reply = read_reply(&mut stream, &mut Vec::new());
    assert_eq!(reply.text(), format!("{} {expected_sum}", body.len()));

    // HTTP/1.0 has no chunked coding: the body is raw and ends with the connection.
    let (reply, _) = exchange(&server, b"GET /s HTTP/1.0\r\n\r\n");
    assert_eq!(reply.header("transfer-encoding"), None);
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.text(), "raw bytes");
    server.shutdown();
}

#[test]
fn stream_error_truncates_the_body() {
    let server = start(small_limits(), |_req: Request| {
        Response::stream(
            200,
            Vec::new(),
            Box::new(|w| {
                w.send(b"partial")?;
                Err(io::Error::other("upstream gone"))
            }),
        )
    });
    let mut stream = connect(&server);
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let text = read_until_closed(&mut stream);
    assert!(text.ends_with("\r\n\r\n7\r\npartial\r\n"), "got {text:?}");
    assert!(!text.contains("\r\n0\r\n"));
    server.shutdown();
}

/// Admits `/open` with a 4-byte body limit; refuses everything else with 401 before its body.
fn admit_open_only(head: &RequestHead<'_>) -> Result<usize, Response> {
    match head.path() {
        "/open" => Ok(4),
        "/boom" => panic!("test admission panic (expected)"),
        _ => Err(Response::new(401, "no key")),
    }
}

fn start_admitting(limits: Limits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    Server::start_with_admission(listener, None, limits, admit_open_only, echo).unwrap()
}

#[test]
fn refused_admission_answers_before_the_body_and_closes() {
    let server = start_admitting(small_limits());
    // Only the head of a huge body is sent: the answer must come without waiting for it.
    let (reply, mut stream) = exchange(
        &server,
        b"POST /x HTTP/1.1\r\nContent-Length: 30000000\r\n\r\n",
    );
    assert_eq!((reply.status, reply.text().as_str()), (401, "no key"));
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(closed_by_server(&mut stream));
    // No 100 Continue for a refused request: the first bytes are the 401.
    let (reply, _) = exchange(
        &server,
        b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    assert_eq!(reply.status, 401);
    // Without a body the connection may stay open.
    let mut stream = connect(&server);
    let mut buf = Vec::new();
    stream.write_all(b"GET /x HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut stream, &mut buf).status, 401);
    stream.write_all(b"GET /open HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut stream, &mut buf).status, 200);
    server.shutdown();
}

#[test]
fn admitted_limit_gives_413_before_reading_and_while_chunked() {
    let server = start_admitting(small_limits());
    let (reply, mut stream) = exchange(
        &server,
        b"POST /open HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    assert_eq!(reply.status, 413);
    assert!(closed_by_server(&mut stream));
    let (reply, _) = exchange(
        &server,
        b"POST /open HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    assert_eq!(reply.status, 413);
    let (reply, _) = exchange(
        &server,
        b"POST /open HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd",
    );
    assert_eq!(
        (reply.status, reply.text().ends_with("body=abcd")),
        (200, true)
    );
    // A panicking admission is a 500, and the server carries on.
    let (reply, mut stream) = exchange(&server, b"GET /boom HTTP/1.1\r\n\r\n");
    assert_eq!(reply.status, 500);
    assert!(closed_by_server(&mut stream));
    let (reply, _) = exchange(&server, b"GET /open HTTP/1.1\r\n\r\n");
    assert_eq!(reply.status, 200);
    server.shutdown();
}

/// Test-only self-signed certificate for `localhost`/127.0.0.1 (P-256, valid 2000-2999).
/// Its key protects nothing.
const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBfjCCASOgAwIBAgIUQVp1FEIcvul967iK5XxJluMW70UwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTAwMDEwMTAwMDAwMFoYDzI5OTkxMjMx
MDAwMDAwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQToM4d6oo9jLxhf7Fay/WNQbrRaWK91+a3Fk61YMNHgckIrErj0Rup
uVRvIyQ/ESlgphYa6v60XTadf+fHAazTo1EwTzAaBgNVHREEEzARgglsb2NhbGhv
c3SHBH8AAAEwDAYDVR0TAQH/BAIwADAOBgNVHQ8BAf8EBAMCB4AwEwYDVR0lBAww
CgYIKwYBBQUHAwEwCgYIKoZIzj0EAwIDSQAwRgIhAMCm5OG7Q+GROeKN9fR5MbhC
TqQO2LuOh0Q+CxQq1SaWAiEAhyeJv326KDu6lCyK7t7gPJsCB46jYf3WKnaP4+pN
K+w=
-----END CERTIFICATE-----
";
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgF5WsE/x+khkYOXgH
ok/kQvF0FryzmjaaP21Y6uSMpSuhRANCAAQToM4d6oo9jLxhf7Fay/WNQbrRaWK9
1+a3Fk61YMNHgckIrErj0RupuVRvIyQ/ESlgphYa6v60XTadf+fHAazT
-----END PRIVATE KEY-----
";

#[test]
fn tls_requests_and_failed_handshake() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Server::start(
        listener,
        Some(Arc::new(server_config)),
        small_limits(),
        echo,
    )
    .unwrap();

    // A client that does not speak TLS is dropped, and the server carries on.
    let mut plain = connect(&server);
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut sink = Vec::new();
    match plain.read_to_end(&mut sink) {
        Ok(_) => {}
        Err(e) => assert!(!is_timeout(&e), "server kept a failed handshake open"),
    }

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        Arc::new(client_config),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(&server));
    let mut buf = Vec::new();
    tls.write_all(b"POST /a?name=x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
        .unwrap();
    let reply = read_reply_from(&mut tls, &mut buf, false);
    assert_eq!(reply.text(), r#"POST /a q=Some("x") h=None body=hi"#);
    // Keep-alive over TLS.
    tls.write_all(b"GET /b HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let reply = read_reply_from(&mut tls, &mut buf, false);
    assert_eq!(reply.status, 200);
    assert!(reply.text().starts_with("GET /b "));
    server.shutdown();
}
