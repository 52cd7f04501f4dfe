//! Counters and histograms of the client, rendered in the Prometheus text exposition format
//! (version 0.0.4) by hand: a few dozen lines beat a metrics crate for this handful of series.
//!
//! Labels stay low-cardinality: outcome, command type and channel name (at most 32 channels). No
//! tunnel ids, URLs or request ids ever become labels.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Latency buckets in seconds: from a fast local call to a long tool run.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A cumulative histogram (also the relay's, [`crate::relay`]'s metrics reuse it).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Per bucket (non-cumulative), plus one for +Inf.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len() + 1];
        }
        let i = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += seconds;
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines; `labels` is `k="v",…` or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts.get(BUCKETS.len()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// How a poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PollOutcome {
    Commands,
    Empty,
    /// 400/401/403/404: the configuration is rejected.
    Rejected,
    /// Network trouble, 429 or 5xx.
    Failed,
}

impl PollOutcome {
    fn label(self) -> &'static str {
        match self {
            PollOutcome::Commands => "commands",
            PollOutcome::Empty => "empty",
            PollOutcome::Rejected => "rejected",
            PollOutcome::Failed => "failed",
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommandOutcome {
    /// The MCP server's own answer was delivered.
    Answered,
    /// A synthesized failure (the MCP server could not be reached or answered badly) was delivered.
    Failed,
    /// Its deadline passed; nothing was posted.
    Expired,
    /// The caller cancelled it; nothing was posted.
    Cancelled,
    /// The control plane did not accept the answer (404 included).
    NotDelivered,
    /// Malformed, unknown channel or unknown type.
    Rejected,
}

impl CommandOutcome {
    fn label(self) -> &'static str {
        match self {
            CommandOutcome::Answered => "answered",
            CommandOutcome::Failed => "failed",
            CommandOutcome::Expired => "expired",
            CommandOutcome::Cancelled => "cancelled",
            CommandOutcome::NotDelivered => "not_delivered",
            CommandOutcome::Rejected => "rejected",
        }
    }
}

/// Gauges read from the running client when the metrics are rendered.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub queued: usize,
    pub running: usize,
    pub workers: usize,
    pub max_inflight: usize,
    /// Per channel: (up, restarts so far; restarts only for stdio channels).
    pub channels: BTreeMap<String, (bool, Option<u64>)>,
}

#[derive(Default)]
pub struct Metrics {
    polls: Mutex<BTreeMap<PollOutcome, u64>>,
    commands: Mutex<BTreeMap<(&'static str, String, CommandOutcome), u64>>,
    mcp_latency: Mutex<BTreeMap<String, Histogram>>,
    command_latency: Mutex<Histogram>,
    post_retries: AtomicU64,
    /// `cancel` commands received (our extension), by what they found: `running`, `queued`
    /// (not started yet) or `none` (already finished, or never here).
    cancels: Mutex<BTreeMap<&'static str, u64>>,
    /// Unix time of the last successful poll, in milliseconds (0: none yet).
    last_poll_ok_ms: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn poll(&self, outcome: PollOutcome) {
        *lock(&self.polls).entry(outcome).or_default() += 1;
        if matches!(outcome, PollOutcome::Commands | PollOutcome::Empty) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.last_poll_ok_ms
                .store(now.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// `kind` is `jsonrpc`, `session_termination` or `invalid`.
    pub fn command(&self, kind: &'static str, channel: &str, outcome: CommandOutcome) {
        *lock(&self.commands)
            .entry((kind, channel.to_string(), outcome))
            .or_default() += 1;
    }

    pub fn mcp_latency(&self, channel: &str, took: Duration) {
        lock(&self.mcp_latency)
            .entry(channel.to_string())
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Poll receipt to response posted.
    pub fn command_latency(&self, took: Duration) {
        lock(&self.command_latency).observe(took.as_secs_f64());
    }

    /// `count` more retried response POSTs (each wait between two attempts counts one).
    pub fn post_retries(&self, count: u32) {
        self.post_retries
            .fetch_add(u64::from(count), Ordering::Relaxed);
    }

    /// One `cancel` command received; `found` is `running`, `queued` or `none`.
    pub fn cancel_command(&self, found: &'static str) {
        *lock(&self.cancels).entry(found).or_default() += 1;
    }

    /// The exposition text.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "mcp_tunnel_build_info",
            "gauge",
            "Version, commit and target of this binary.",
        );
        let _ = writeln!(
            out,
            "mcp_tunnel_build_info{{version=\"{}\",commit=\"{}\",target=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            crate::build::GIT_COMMIT,
            crate::build::TARGET
        );

        head(
            &mut out,
            "mcp_tunnel_polls_total",
            "counter",
            "Control-plane polls by outcome.",
        );
        let polls = lock(&self.polls).clone();
        for outcome in [
            PollOutcome::Commands,
            PollOutcome::Empty,
            PollOutcome::Rejected,
            PollOutcome::Failed,
        ] {
            let n = polls.get(&outcome).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "mcp_tunnel_polls_total{{outcome=\"{}\"}} {n}",
                outcome.label()
            );
        }

        head(
            &mut out,
            "mcp_tunnel_cancel_commands_total",
            "counter",
            "Cancel commands from the relay by what they found: running, queued or none.",
        );
        let cancels = lock(&self.cancels).clone();
        for found in ["running", "queued", "none"] {
            let n = cancels.get(found).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "mcp_tunnel_cancel_commands_total{{found=\"{found}\"}} {n}"
            );
        }

        head(
            &mut out,
            "mcp_tunnel_last_successful_poll_timestamp_seconds",
            "gauge",
            "Unix time of the last poll the control plane answered normally (0: none yet).",
        );
        let ms = self.last_poll_ok_ms.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "mcp_tunnel_last_successful_poll_timestamp_seconds {}",
            ms as f64 / 1000.0
        );

        head(
            &mut out,
            "mcp_tunnel_commands_total",
            "counter",
            "Commands by type, channel and outcome.",
        );
        for ((kind, channel, outcome), n) in lock(&self.commands).iter() {
            let _ = writeln!(
                out,
                "mcp_tunnel_commands_total{{type=\"{kind}\",channel=\"{}\",outcome=\"{}\"}} {n}",
                escape(channel),
                outcome.label()
            );
        }

        head(
            &mut out,
            "mcp_tunnel_queued_commands",
            "gauge",
            "Commands received and waiting for a worker.",
        );
        let _ = writeln!(out, "mcp_tunnel_queued_commands {}", gauges.queued);
        head(
            &mut out,
            "mcp_tunnel_inflight_commands",
            "gauge",
            "Commands being worked on.",
        );
        let _ = writeln!(out, "mcp_tunnel_inflight_commands {}", gauges.running);
        head(
            &mut out,
            "mcp_tunnel_worker_capacity",
            "gauge",
            "Worker threads (MCP calls at once).",
        );
        let _ = writeln!(out, "mcp_tunnel_worker_capacity {}", gauges.workers);
        head(
            &mut out,
            "mcp_tunnel_max_inflight",
            "gauge",
            "Commands held at once at most.",
        );
        let _ = writeln!(out, "mcp_tunnel_max_inflight {}", gauges.max_inflight);

        head(
            &mut out,
            "mcp_tunnel_channel_up",
            "gauge",
            "1 when the channel's MCP server is reachable.",
        );
        for (channel, (up, _)) in &gauges.channels {
            let _ = writeln!(
                out,
                "mcp_tunnel_channel_up{{channel=\"{}\"}} {}",
                escape(channel),
                u8::from(*up)
            );
        }
        head(
            &mut out,
            "mcp_tunnel_stdio_restarts_total",
            "counter",
            "Restarts of stdio MCP servers.",
        );
        for (channel, (_, restarts)) in &gauges.channels {
            if let Some(n) = restarts {
                let _ = writeln!(
                    out,
                    "mcp_tunnel_stdio_restarts_total{{channel=\"{}\"}} {n}",
                    escape(channel)
                );
            }
        }

        head(
            &mut out,
            "mcp_tunnel_response_post_retries_total",
            "counter",
            "Response POSTs retried after a transient failure.",
        );
        let _ = writeln!(
            out,
            "mcp_tunnel_response_post_retries_total {}",
            self.post_retries.load(Ordering::Relaxed)
        );

        head(
            &mut out,
            "mcp_tunnel_mcp_request_duration_seconds",
            "histogram",
            "Time the MCP server took per command, by channel.",
        );
        for (channel, h) in lock(&self.mcp_latency).iter() {
            h.render(
                &mut out,
                "mcp_tunnel_mcp_request_duration_seconds",
                &format!("channel=\"{}\"", escape(channel)),
            );
        }
        head(
            &mut out,
            "mcp_tunnel_command_duration_seconds",
            "histogram",
            "Poll receipt to response posted, per answered command.",
        );
        lock(&self.command_latency).render(&mut out, "mcp_tunnel_command_duration_seconds", "");
        out
    }
}

/// Label values escape backslash, quote and newline (channel names never need it, but a label
/// is no place to trust that).
/// A label value escaped for the exposition format.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::default();
        m.poll(PollOutcome::Commands);
        m.poll(PollOutcome::Failed);
        m.command("jsonrpc", "main", CommandOutcome::Answered);
        m.mcp_latency("main", Duration::from_millis(30));
        m.mcp_latency("main", Duration::from_secs(200));
        m.post_retries(1);
        let mut gauges = Gauges {
            queued: 2,
            running: 1,
            workers: 10,
            max_inflight: 20,
            ..Gauges::default()
        };
        gauges.channels.insert("main".into(), (true, None));
        gauges.channels.insert("tools".into(), (false, Some(3)));
        let text = m.render(&gauges);
        for line in [
            "mcp_tunnel_polls_total{outcome=\"commands\"} 1",
            "mcp_tunnel_polls_total{outcome=\"rejected\"} 0",
            "mcp_tunnel_commands_total{type=\"jsonrpc\",channel=\"main\",outcome=\"answered\"} 1",
            "mcp_tunnel_queued_commands 2",
            "mcp_tunnel_channel_up{channel=\"tools\"} 0",
            "mcp_tunnel_stdio_restarts_total{channel=\"tools\"} 3",
            "mcp_tunnel_mcp_request_duration_seconds_bucket{channel=\"main\",le=\"0.05\"} 1",
            "mcp_tunnel_mcp_request_duration_seconds_bucket{channel=\"main\",le=\"+Inf\"} 2",
            "mcp_tunnel_mcp_request_duration_seconds_count{channel=\"main\"} 2",
            "mcp_tunnel_response_post_retries_total 1",
            "mcp_tunnel_command_duration_seconds_count 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("stdio_restarts_total{channel=\"main\"}"));
    }
}
