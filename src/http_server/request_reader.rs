//! Reading one HTTP/1.1 request off a byte source: the head with `httparse`, then a body framed
//! by `Content-Length` or `Transfer-Encoding: chunked` (sizes via `httparse::parse_chunk_size`).
//!
//! It knows nothing of sockets or threads: the source is anything that can read with a deadline
//! ([`Source`]; a plain [`Read`] through [`Untimed`]), so the same code serves connections and
//! the fuzzer. Every failure is a [`Reject`] (a status to answer with, or "peer gone"); no input
//! can make it panic, and it never buffers more than the limits it is given plus one read.

use std::io::{self, Read};
use std::time::Instant;

/// Header slots offered to `httparse`; more header fields than this is answered with 431, like an
/// oversized header block. Generous for API clients, small enough to live on the stack.
const MAX_HEADERS: usize = 100;

/// Bytes asked of the source per read. Big enough for a typical request in one read.
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// Longest chunk-size line (size plus extensions) we buffer before calling the body malformed;
/// extensions are ignored, so there is no reason to hold more.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Something requests are read from: each read fails with a timeout error once `deadline` passed.
pub(super) trait Source {
    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize>;
}

/// Whether a read failed by running out of time (the deadline of a [`Source`], or a socket
/// timeout).
pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A plain reader as a [`Source`] that never times out (in-memory input).
pub(super) struct Untimed<R>(pub R);

impl<R: Read> Source for Untimed<R> {
    fn read_until(&mut self, buf: &mut [u8], _deadline: Instant) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// Why reading a request stopped short.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reject {
    /// Answer with this status, then close.
    Status(u16),
    /// Peer closed or the source failed: close without a word.
    Gone,
}

/// The request line and headers, copied out of the read buffer.
pub(super) struct Head {
    pub method: String,
    pub target: String,
    pub http10: bool,
    pub headers: Vec<(String, String)>,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(usize),
    Chunked,
}

impl Framing {
    /// Whether the request carries body bytes (or may: a chunked body can be empty).
    pub fn announces_body(self) -> bool {
        self != Framing::Length(0)
    }

    /// 413 when a declared length is already over `limit` (a chunked body is checked as it comes).
    pub fn check_length(self, limit: usize) -> Result<(), Reject> {
        match self {
            Framing::Length(len) if len > limit => Err(Reject::Status(413)),
            _ => Ok(()),
        }
    }
}

/// A source and the bytes received from it that nobody consumed yet (possibly the start of a
/// pipelined next request).
pub(super) struct Incoming<S> {
    pub src: S,
    pub buf: Vec<u8>,
    /// What each read lands in, zeroed once (when first needed) instead of zero-filling
    /// `READ_CHUNK` bytes of `buf` before every read; only the bytes read are copied on.
    scratch: Vec<u8>,
}

impl<S: Source> Incoming<S> {
    pub fn new(src: S) -> Self {
        Incoming {
            src,
            buf: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Appends what the source has (at least one byte, or 0 at EOF) to `buf`.
    pub fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        if self.scratch.is_empty() {
            self.scratch = vec![0; READ_CHUNK];
        }
        let n = self.src.read_until(&mut self.scratch, deadline)?;
        self.buf.extend_from_slice(&self.scratch[..n]);
        Ok(n)
    }

    /// `fill` for the middle of a request, where EOF and timeouts are failures.
    fn need_more(&mut self, deadline: Instant) -> Result<(), Reject> {
        match self.fill(deadline) {
            Ok(0) => Err(Reject::Gone),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => Err(Reject::Status(408)),
            Err(e) => {
                log::debug!("read failed: {e}");
                Err(Reject::Gone)
            }
        }
    }

    /// The request line and headers (at most `max_header` bytes), consumed from the buffer.
    pub fn read_head(&mut self, max_header: usize, deadline: Instant) -> Result<Head, Reject> {
        self.read_header_block(max_header, deadline, |buf| {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut slots);
            Ok(match parsed.parse(buf)? {
                httparse::Status::Complete(len) => {
                    httparse::Status::Complete((len, owned_head(&parsed)))
                }
                httparse::Status::Partial => httparse::Status::Partial,
            })
        })?
    }

    /// One block of header fields — a request head, or a chunked body's trailer section — read
    /// until `parse` finds it complete, then consumed from the buffer; `parse` gives its length and
    /// what it made of it. A block over `max` bytes, or with more than `MAX_HEADERS` fields, is
    /// 431; one `httparse` refuses is 400.
    fn read_header_block<T>(
        &mut self,
        max: usize,
        deadline: Instant,
        parse: impl Fn(&[u8]) -> httparse::Result<(usize, T)>,
    ) -> Result<T, Reject> {
        loop {
            match parse(&self.buf) {
                Ok(httparse::Status::Complete((len, parsed))) => {
                    if len > max {
                        return Err(Reject::Status(431));
                    }
                    self.buf.drain(..len);
                    return Ok(parsed);
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Err(Reject::Status(431)),
                Err(_) => return Err(Reject::Status(400)),
            }
            if self.buf.len() >= max {
                return Err(Reject::Status(431));
            }
            self.need_more(deadline)?;
        }
    }

    /// The body as `framing` delimits it: at most `max_body` bytes (413 beyond), trailers of a
    /// chunked body at most `max_header` bytes.
    pub fn read_body(
        &mut self,
        framing: Framing,
        max_body: usize,
        max_header: usize,
        deadline: Instant,
    ) -> Result<Vec<u8>, Reject> {
        framing.check_length(max_body)?;
        match framing {
            Framing::Length(len) => self.read_exact_body(len, deadline),
            Framing::Chunked => self.read_chunked_body(max_body, max_header, deadline),
        }
    }

    fn read_exact_body(&mut self, len: usize, deadline: Instant) -> Result<Vec<u8>, Reject> {
        // No body (every GET, every held long-poll): no allocation. `split_off(0)` below would
        // hand the read buffer's whole capacity to the empty body and allocate it again.
        if len == 0 {
            return Ok(Vec::new());
        }
        // The length was admitted: hold it in one allocation instead of letting the buffer grow by
        // doubling (which could take twice the body's size). Only an optimisation: if the
        // allocator refuses, the buffer grows as it goes (and never panics here).
        if self.buf.len() < len {
            let _ = self
                .buf
                .try_reserve_exact((len - self.buf.len()).saturating_add(READ_CHUNK));
        }
        while self.buf.len() < len {
            self.need_more(deadline)?;
        }
        let rest = self.buf.split_off(len);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    fn read_chunked_body(
        &mut self,
        max: usize,
        max_header: usize,
        deadline: Instant,
    ) -> Result<Vec<u8>, Reject> {
        let mut body = Vec::new();
        loop {
            let (line_len, size) = loop {
                // httparse takes an empty size ("\r\n") as 0; we insist on at least one digit.
                if self.buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
                    return Err(Reject::Status(400));
                }
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) if self.buf.len() < MAX_CHUNK_LINE => {
                        self.need_more(deadline)?;
                    }
                    _ => return Err(Reject::Status(400)),
                }
            };
            self.buf.drain(..line_len);
            if size == 0 {
                break;
            }
            let size = match usize::try_from(size) {
                Ok(s) if s <= max.saturating_sub(body.len()) => s,
                _ => return Err(Reject::Status(413)),
            };
            // The data and its CRLF.
            while self.buf.len() < size + 2 {
                self.need_more(deadline)?;
            }
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(Reject::Status(400));
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
        self.skip_trailers(max_header, deadline)?;
        Ok(body)
    }

    /// Reads and discards the trailer section (we give trailer fields no meaning), up to and
    /// including the final empty line.
    fn skip_trailers(&mut self, max: usize, deadline: Instant) -> Result<(), Reject> {
        self.read_header_block(max, deadline, |buf| {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            Ok(match httparse::parse_headers(buf, &mut slots)? {
                httparse::Status::Complete((len, _)) => httparse::Status::Complete((len, ())),
                httparse::Status::Partial => httparse::Status::Partial,
            })
        })
    }
}

/// Copies the parsed request line and headers out of the buffer they borrow.
fn owned_head(parsed: &httparse::Request<'_, '_>) -> Result<Head, Reject> {
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Reject::Status(400));
    };
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        // Non-UTF-8 header values have no use in our protocols; refuse rather than mangle.
        let value = std::str::from_utf8(h.value).map_err(|_| Reject::Status(400))?;
        headers.push((h.name.to_string(), value.to_string()));
    }
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        http10: version == 0,
        headers,
    })
}

/// Works out how the body is delimited (RFC 9112 section 6), refusing anything ambiguous: both
/// framings at once, conflicting or non-numeric lengths, codings other than plain `chunked`.
pub(super) fn body_framing(headers: &[(String, String)]) -> Result<Framing, Reject> {
    let mut length: Option<u64> = None;
    let mut codings: Vec<String> = Vec::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-length") {
            for item in value.split(',') {
                let item = item.trim();
                // str::parse would accept a leading '+'.
                if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Reject::Status(400));
                }
                // All digits but beyond u64: certainly too large.
                let n = item.parse::<u64>().map_err(|_| Reject::Status(413))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Reject::Status(400));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings.extend(
                value
                    .split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty()),
            );
        }
    }
    let has_te = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    match (length, has_te) {
        (Some(_), true) => Err(Reject::Status(400)),
        (Some(n), false) => Ok(Framing::Length(
            usize::try_from(n).map_err(|_| Reject::Status(413))?,
        )),
        (None, false) => Ok(Framing::Length(0)),
        (None, true) => match codings.last().map(String::as_str) {
            Some("chunked") if codings.len() == 1 => Ok(Framing::Chunked),
            // chunked last, but wrapped around a coding we do not decode.
            Some("chunked") => Err(Reject::Status(501)),
            // Without chunked last the body length cannot be known.
            _ => Err(Reject::Status(400)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one request from `data`: the head, then the body with `max_header` also bounding the
    /// trailers. Gives the body, or why reading stopped.
    fn read_one(data: &[u8], max_header: usize) -> Result<Vec<u8>, Reject> {
        let mut incoming = Incoming::new(Untimed(data));
        let deadline = Instant::now();
        let head = incoming.read_head(max_header, deadline)?;
        let framing = body_framing(&head.headers)?;
        incoming.read_body(framing, 1024, max_header, deadline)
    }

    /// The head and the trailer section go through the same header-block reader: the same size
    /// bound, field-count bound and grammar.
    #[test]
    fn head_and_trailers_share_one_header_block_reader() {
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n";
        let with_trailers = |trailers: &str| format!("{chunked}{trailers}\r\n");
        assert_eq!(
            read_one(with_trailers("X: y\r\n").as_bytes(), 64),
            Ok(b"hi".to_vec())
        );
        // Over the size bound: complete, or still partial.
        let long = format!("X: {}\r\n", "y".repeat(80));
        assert_eq!(
            read_one(with_trailers(&long).as_bytes(), 64),
            Err(Reject::Status(431))
        );
        let cut = format!("{chunked}{long}");
        assert_eq!(read_one(cut.as_bytes(), 64), Err(Reject::Status(431)));
        // More fields than MAX_HEADERS.
        let many = "X: y\r\n".repeat(MAX_HEADERS + 1);
        assert_eq!(
            read_one(with_trailers(&many).as_bytes(), 4096),
            Err(Reject::Status(431))
        );
        // Not a header field.
        assert_eq!(
            read_one(with_trailers("no colon\r\n").as_bytes(), 64),
            Err(Reject::Status(400))
        );
        // A head over the bound is 431 even when it would also be malformed (non-UTF-8 value).
        let head = b"GET / HTTP/1.1\r\nX: \xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\r\n\r\n";
        assert_eq!(read_one(head, 16), Err(Reject::Status(431)));
        assert_eq!(read_one(head, 64), Err(Reject::Status(400)));
        // Input that ends mid-block is the peer gone.
        assert_eq!(
            read_one(b"GET / HTTP/1.1\r\nX: y\r\n", 64),
            Err(Reject::Gone)
        );
    }
}
