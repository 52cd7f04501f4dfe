//! The fuzzer's way in: the request reader driven from memory, exactly as a connection drives it
//! (the head, then the body as framed, with no admission step and default [`Limits`]), with no
//! sockets or threads. Hidden from the docs; `fuzz/src/lib.rs` and the fuzz regression tests are
//! its only callers.

use std::time::Instant;

use super::limits::{Limits, later};
use super::request_reader::{Incoming, Reject, Untimed, body_framing};

/// What [`fuzz_read_request`] made of its input.
#[doc(hidden)]
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FuzzSummary {
    /// Requests read completely (head and body), one after another as if pipelined.
    pub requests: usize,
    /// Body bytes of those requests.
    pub body_bytes: usize,
    /// The status a bad request is answered with; `None` when the input ended (cleanly or
    /// mid-request).
    pub rejected: Option<u16>,
}

/// For the fuzzer: reads requests (head, then a `Content-Length` or chunked body, default
/// [`Limits`]) from `data` as the server reads them off a connection, without sockets or threads.
#[doc(hidden)]
pub fn fuzz_read_request(data: &[u8]) -> FuzzSummary {
    let limits = Limits::default();
    let mut incoming = Incoming::new(Untimed(data));
    // In-memory input never times out; the deadline only satisfies the reader's signature.
    let deadline = later(Instant::now(), limits.read_timeout);
    let mut summary = FuzzSummary::default();
    loop {
        if incoming.buf.is_empty() && !matches!(incoming.fill(deadline), Ok(n) if n > 0) {
            return summary;
        }
        let read = incoming
            .read_head(limits.max_header_bytes, deadline)
            .and_then(|head| {
                let framing = body_framing(&head.headers)?;
                incoming.read_body(
                    framing,
                    limits.max_body_bytes,
                    limits.max_header_bytes,
                    deadline,
                )
            });
        match read {
            Ok(body) => {
                summary.requests += 1;
                summary.body_bytes += body.len();
            }
            Err(Reject::Status(status)) => {
                summary.rejected = Some(status);
                return summary;
            }
            Err(Reject::Gone) => return summary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_entry_reads_in_memory_requests() {
        let ok = fuzz_read_request(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX: y\r\n\r\n",
        );
        assert_eq!((ok.requests, ok.body_bytes, ok.rejected), (2, 5, None));
        assert_eq!(fuzz_read_request(b"").requests, 0);
        let bad = fuzz_read_request(b"GET / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx");
        assert_eq!(bad.rejected, Some(400));
        let huge = fuzz_read_request(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        );
        assert_eq!(huge.rejected, Some(400));
        let too_big =
            fuzz_read_request(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffff\r\n");
        assert_eq!(too_big.rejected, Some(413));
        let cut = fuzz_read_request(b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc");
        assert_eq!((cut.requests, cut.rejected), (0, None));
    }
}
