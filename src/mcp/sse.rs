//! An incremental reader of `text/event-stream` bodies: yields each event as soon as its blank
//! line arrives, so notifications can be forwarded while the stream is still open.
//!
//! Follows the WHATWG event-stream rules we need: `event:` names, multi-line `data:` joined with
//! `\n`, comment lines (`:`) and unknown fields ignored, `\n` or `\r\n` line ends. One deviation:
//! an event still pending when the stream ends is delivered rather than dropped, because some
//! servers close right after the final message without the blank line.

use std::io::{self, BufRead, Read};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `None` when the event had no `event:` field (which means `message`).
    pub name: Option<String>,
    pub data: String,
}

impl Event {
    /// Whether this is a `message` event, the only kind that carries JSON-RPC.
    pub fn is_message(&self) -> bool {
        self.name.as_deref().is_none_or(|n| n == "message")
    }
}

pub struct SseReader<R> {
    reader: R,
    /// Bytes one event may hold; a larger event is an error, not an unbounded buffer.
    max_event: usize,
    done: bool,
}

impl<R: BufRead> SseReader<R> {
    pub fn new(reader: R, max_event: usize) -> Self {
        SseReader {
            reader,
            max_event,
            done: false,
        }
    }

    /// The next event with data, `Ok(None)` at the end of the stream.
    pub fn next_event(&mut self) -> io::Result<Option<Event>> {
        let mut name: Option<String> = None;
        let mut data: Option<String> = None;
        let mut size = 0usize;
        let mut line = Vec::new();
        while !self.done {
            line.clear();
            let room = (self.max_event - size.min(self.max_event)) as u64 + 2;
            let n = self
                .reader
                .by_ref()
                .take(room)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                self.done = true;
                break;
            }
            if !line.ends_with(b"\n") && n as u64 == room {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "event-stream event exceeds the size limit",
                ));
            }
            size += n;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches('\n').trim_end_matches('\r');
            if text.is_empty() {
                if let Some(data) = data.take() {
                    return Ok(Some(Event { name, data }));
                }
                name = None;
                size = 0;
                continue;
            }
            if text.starts_with(':') {
                continue;
            }
            let (field, value) = match text.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (text, ""),
            };
            match field {
                "data" => match data.as_mut() {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_string()),
                },
                "event" => name = Some(value.to_string()),
                _ => {}
            }
        }
        Ok(data.map(|data| Event { name, data }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(input: &str) -> Vec<Event> {
        let mut r = SseReader::new(input.as_bytes(), 1024);
        let mut out = Vec::new();
        while let Some(e) = r.next_event().unwrap() {
            out.push(e);
        }
        out
    }

    #[test]
    fn reads_events_names_comments_and_multiline_data() {
        let got = events(
            ": keep-alive\n\nevent: ping\ndata: x\n\ndata: {\"a\":\r\ndata:1}\r\nid: 7\r\n\r\ndata: last",
        );
        assert_eq!(
            got,
            [
                Event {
                    name: Some("ping".into()),
                    data: "x".into()
                },
                Event {
                    name: None,
                    data: "{\"a\":\n1}".into()
                },
                Event {
                    name: None,
                    data: "last".into()
                },
            ]
        );
        assert!(!got[0].is_message());
        assert!(got[1].is_message());
    }

    #[test]
    fn oversized_event_is_an_error() {
        let big = format!("data: {}\n\n", "x".repeat(2000));
        let mut r = SseReader::new(big.as_bytes(), 1024);
        assert_eq!(
            r.next_event().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
