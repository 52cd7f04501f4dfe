//! # mcp-tunnel
//!
//! Reach private MCP (Model Context Protocol) servers without opening an inbound port. A client
//! inside the private network makes only outbound HTTP(S) calls to a control plane, long-polls it
//! for queued MCP JSON-RPC work, forwards each message to the private MCP server and posts the
//! answer back the same way. The control-plane contract is the public Secure MCP Tunnel one, so
//! `mcp-tunnel run` can stand in for the official client.
//!
//! ## Architecture of the client
//!
//! ```text
//!  poll thread ──► bounded queue ──► worker pool ──► MCP transport ──► response POST
//!   (limit = free slots, ≤25)        (max_concurrent)     │ notifications ──► jsonrpc_notify POSTs
//!   ▲ backoff / Retry-After                               └ failures ──► synthesized -32603
//! ```
//!
//! Data flows one way. Blocking I/O on a few plain threads: one poll thread, a fixed pool of
//! workers, one signal thread; no async runtime.
//!
//! ## Module map
//!
//! One concept per module. The layer number is a rule, not a hint: a module uses only modules of
//! a strictly lower layer (so there is no import cycle), and `tests/layering.rs` reads this table
//! and the `use crate::` edges of every file and fails on any edge against it, or on a module the
//! table does not name.
//!
//! | layer | module | what it holds |
//! |---|---|---|
//! | 0 | [`build`] | the version string every command reports |
//! | 0 | [`text`] | truncating foreign text on a character boundary |
//! | 0 | [`secret`] | the masked [`secret::Secret`] type: secrets never print; non-dumpable process |
//! | 0 | [`duration`] | the one `<integer><unit>` duration grammar (wire and config) |
//! | 0 | [`crypto`] | OS randomness and constant-time comparison (through ring) |
//! | 0 | [`argv`] | a command line split into argv without a shell |
//! | 0 | [`headers`] | header grammar, and which headers cross the tunnel in each direction |
//! | 0 | [`signals`] | the one place signal handlers are installed |
//! | 0 | [`envfile`] | the `--env-file` format |
//! | 0 | [`contain`] | panic containment: a bug costs one answer, never the process |
//! | 0 | [`unix_socket`] | HTTP over a Unix socket for the outbound agents |
//! | 1 | [`wire`] | control-plane JSON types; JSON-RPC bodies kept byte-exact |
//! | 1 | [`deadline`] | checked deadline arithmetic; the `created_at` bound |
//! | 1 | [`failure`] | errors → `-32603` with `tunnel_failure` provenance |
//! | 1 | [`backoff`] | exponential backoff with full jitter, `Retry-After` |
//! | 1 | [`tls`] | PEM loading and the rustls configurations |
//! | 1 | [`http_server`] | the one small synchronous HTTP/1.1 server (relay, stub, health, fakes) |
//! | 2 | [`net`] | one hop's network settings: proxy choice, CA bundle, client identity |
//! | 2 | [`http_log`] | `--log.http-raw-unsafe`: outbound exchange heads at debug, credentials redacted |
//! | 3 | [`http_client`] | the one place outbound HTTP agents are built (TLS, proxy, pooling) |
//! | 4 | [`config`] | flags + environment → one validated, immutable [`config::RunConfig`] |
//! | 5 | [`logging`] | log format; third-party crates capped so nothing secret is logged |
//! | 5 | [`control_plane`] | metadata, poll and response calls with their retries |
//! | 5 | [`mcp`] | transports to the MCP server (Streamable HTTP, SSE, stdio), its session steps, and the embedded Harpoon server |
//! | 5 | [`ops`] | readiness, metrics, health server, systemd notification, pid file |
//! | 6 | [`dispatch`] | poll loop, queue, workers (admit → call → settle), deadlines, drain |
//! | 7 | [`client`] | `mcp-tunnel run`: wiring and signals |
//! | 7 | [`doctor`] | `mcp-tunnel doctor`: each hop tried for real, on `run`'s own code |
//! | 7 | [`relay`] | `mcp-tunnel relay`: self-hosted control plane + public MCP endpoint |
//! | 7 | [`stub`] | `mcp-tunnel stub`: a tiny Streamable HTTP MCP server for demos and tests |
//! | 8 | [`demo`] | `mcp-tunnel demo`: relay, client and stub in one process, one scripted session |
//!
//! Transports know nothing of the control plane (notifications leave through a callback), and
//! the control-plane client knows nothing of MCP.
//!
//! ## Architecture of the relay
//!
//! ```text
//!  MCP host ── POST /v1/mcp/{id} ──► connector ──► hub (per tunnel: queue, pending, sessions)
//!     ▲                                  │ waits on a channel        ▲ poll takes, response fills
//!     └──── JSON or event stream ◄───────┘                  control ◄── tunnel clients
//! ```
//!
//! One [`http_server`] serves both sides; [`relay::hub`] is the only shared state. The relay
//! shares [`wire`] and [`headers`] with the client and nothing else of it.
//!
//! ## Guarantees
//!
//! - Every command ends with exactly one terminal POST, or a documented drop: its
//!   `response_timeout` passed (before or during the MCP call), or the process was stopped and the
//!   drain timeout ran out.
//! - The MCP server's valid JSON-RPC errors pass through byte-exact; every other failure becomes a
//!   `-32603` whose provenance carries no URL, body, error text or secret.
//! - Secrets (API key, extra header values, shard tokens) are [`secret::Secret`]s: `Debug` and
//!   `Display` print `***`, and third-party debug logging is capped.
//! - TLS verification is always on.
//! - A panic (a bug) in a worker answers its command with a `-32603` (`client_internal`/`panic`)
//!   and the worker goes on; one in the poll thread stops the client with exit code 70 so that
//!   its supervisor restarts it. Panic messages that could quote data are withheld from the log.

#![forbid(unsafe_code)]

pub mod argv;
pub mod backoff;
pub mod build;
pub mod client;
pub mod config;
pub mod contain;
pub mod control_plane;
pub mod crypto;
pub mod deadline;
pub mod demo;
pub mod dispatch;
pub mod doctor;
pub mod duration;
pub mod envfile;
pub mod failure;
pub mod headers;
pub mod http_client;
pub mod http_log;
pub mod http_server;
pub mod logging;
pub mod mcp;
pub mod net;
pub mod ops;
pub mod relay;
pub mod secret;
pub mod signals;
pub mod stub;
pub mod text;
pub mod tls;
pub mod unix_socket;
pub mod wire;
