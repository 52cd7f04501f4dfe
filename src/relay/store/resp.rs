//! A minimal synchronous Redis client: RESP2 framing over one blocking TCP (or TLS) connection.
//!
//! Commands go out as arrays of bulk strings; replies are read into [`Reply`]. Only what the
//! relay's store needs: no pipelining beyond one command at a time, no pub/sub, no cluster
//! redirects. Every read and write is bounded by the socket timeouts the caller sets, so a Redis
//! that stops answering costs one error, never a stuck thread. Error texts name the failing step,
//! never a password (AUTH's arguments are not echoed).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// Largest bulk string or array accepted in a reply (a poll answer is far smaller).
const MAX_BULK: usize = 64 * 1024 * 1024;
const MAX_ARRAY: usize = 1_000_000;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    /// An `-ERR …` reply: the command was refused, the connection is still fine.
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// A bulk string's bytes (`None` for nil or another type).
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Reply::Bulk(b) => b,
            _ => None,
        }
    }

    pub fn into_array(self) -> Vec<Reply> {
        match self {
            Reply::Array(Some(items)) => items,
            _ => Vec::new(),
        }
    }
}

/// What a command sends: each argument as a bulk string.
pub type Args<'a> = &'a [&'a [u8]];

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One connection to Redis.
pub struct Conn {
    io: BufReader<Box<dyn Stream>>,
    tcp: TcpStream,
}

impl Conn {
    /// Connects within `timeout`; with `tls`, speaks TLS to `host` with `config`.
    pub fn connect(
        host: &str,
        port: u16,
        timeout: Duration,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> io::Result<Conn> {
        let addr = (host, port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other("the Redis host has no address"))?;
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp.try_clone()?),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|_| io::Error::other("the Redis host is not a valid TLS name"))?;
                let session = rustls::ClientConnection::new(Arc::clone(config), name)
                    .map_err(io::Error::other)?;
                Box::new(rustls::StreamOwned::new(session, tcp.try_clone()?))
            }
        };
        Ok(Conn {
            io: BufReader::new(stream),
            tcp,
        })
    }

    /// How long a reply may take (a blocking pop sets more than its block time).
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.tcp.set_read_timeout(Some(timeout))
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: Args) -> io::Result<Reply> {
        let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        let writer = self.io.get_mut();
        writer.write_all(&out)?;
        writer.flush()?;
        read_reply(&mut self.io, 0)
    }
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("Redis protocol: {what}"),
    )
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    r.by_ref().take(64 * 1024).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(if line.is_empty() {
            io::Error::new(io::ErrorKind::UnexpectedEof, "Redis closed the connection")
        } else {
            protocol("line without CRLF")
        });
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| protocol("line is not UTF-8"))
}

fn read_reply(r: &mut impl BufRead, depth: usize) -> io::Result<Reply> {
    if depth > 8 {
        return Err(protocol("nested too deep"));
    }
    let line = read_line(r)?;
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| protocol("empty line"))?;
    let number = || rest.parse::<i64>().map_err(|_| protocol("bad number"));
    match kind {
        "+" => Ok(Reply::Status(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => Ok(Reply::Int(number()?)),
        "$" => {
            let n = number()?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            let n = usize::try_from(n).map_err(|_| protocol("bad length"))?;
            if n > MAX_BULK {
                return Err(protocol("bulk string too large"));
            }
            let mut buf = vec![0u8; n + 2];
            r.read_exact(&mut buf)?;
            if !buf.ends_with(b"\r\n") {
                return Err(protocol("bulk string without CRLF"));
            }
            buf.truncate(n);
            Ok(Reply::Bulk(Some(buf)))
        }
        "*" => {
            let n = number()?;
            if n < 0 {
                return Ok(Reply::Array(None));
            }
            let n = usize::try_from(n).map_err(|_| protocol("bad length"))?;
            if n > MAX_ARRAY {
                return Err(protocol("array too large"));
            }
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                items.push(read_reply(r, depth + 1)?);
            }
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(protocol("unknown reply type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> io::Result<Reply> {
        read_reply(&mut BufReader::new(text.as_bytes()), 0)
    }

    #[test]
    fn replies_of_every_type_parse() {
        assert_eq!(parse("+OK\r\n").unwrap(), Reply::Status("OK".into()));
        assert_eq!(parse("-ERR x\r\n").unwrap(), Reply::Error("ERR x".into()));
        assert_eq!(parse(":-3\r\n").unwrap(), Reply::Int(-3));
        assert_eq!(parse("$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(
            parse("$5\r\na\r\nbc\r\n").unwrap(),
            Reply::Bulk(Some(b"a\r\nbc".to_vec()))
        );
        assert_eq!(
            parse("*2\r\n:1\r\n$1\r\nx\r\n").unwrap(),
            Reply::Array(Some(vec![Reply::Int(1), Reply::Bulk(Some(b"x".to_vec()))]))
        );
    }

    #[test]
    fn truncated_or_malformed_replies_are_errors() {
        for bad in ["", "+OK", "$5\r\nab\r\n", "?x\r\n", ":x\r\n", "*1\r\n"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
