//! The stdio channel check: the server started as `run` starts it (secrets scrubbed from its
//! environment, its own process group), asked `initialize` and `tools/list`, then stopped.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;

/// A stdio server started for the checks: killed when dropped, after its stdin closed and a
/// short grace.
pub(super) struct StdioServer {
    pub(super) child: Child,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) lines: Receiver<Value>,
}

impl StdioServer {
    pub(super) fn send(&mut self, message: &Value) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin is closed")?;
        let mut line = message.to_string();
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot write to its stdin: {e}"))
    }

    /// The answer to `id`, skipping everything else, until `deadline`.
    pub(super) fn answer(&mut self, id: &Value, deadline: Instant) -> Result<Value, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(message) if is_answer(&message, id) => return Ok(message),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("timed out after {}s", CHECK_TIMEOUT.as_secs()));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.exit_status(Duration::from_millis(500));
                    return Err(format!("the server closed its stdout{status}"));
                }
            }
        }
    }

    /// `" and exited (…)"` once the child has exited, waiting at most `wait`; else nothing.
    pub(super) fn exit_status(&mut self, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return format!(" and exited ({status})"),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => return String::new(),
            }
        }
    }
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        // The MCP stdio convention: closing stdin asks the server to exit.
        drop(self.stdin.take());
        let deadline = Instant::now() + STDIO_GRACE;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of its process group (its pid, kept while any member lives): helpers
        // it forked, and the server itself if it ignored the hint.
        if let Some(group) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server as `run` would: without our secrets in its environment, in its own process
/// group (so its helpers end with it).
pub(super) fn check_stdio_channel(
    label: &str,
    argv: &[String],
    scrub: &[String],
    report: &mut Report,
) {
    let name = |check: &str| format!("{label}: {check}");
    let Some(program) = argv.first() else {
        report.fail(name("start"), "the command is empty", "set MCP_COMMAND");
        return;
    };
    let mut command = Command::new(program);
    for name in scrub {
        command.env_remove(name);
    }
    let spawned = command
        .args(&argv[1..])
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let fix = if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "install {program} or give its full path in MCP_COMMAND (it is run without a \
                     shell, with this PATH)"
                )
            } else {
                "check MCP_COMMAND and the program's permissions".to_string()
            };
            report.fail(name("start"), format!("cannot start {program}: {e}"), fix);
            return;
        }
    };
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        let _ = thread::Builder::new()
            .name("doctor-stdio".into())
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match (&mut reader)
                        .take(MAX_ANSWER as u64)
                        .read_until(b'\n', &mut line)
                    {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if let Ok(message) = serde_json::from_slice::<Value>(&line)
                        && tx.send(message).is_err()
                    {
                        break;
                    }
                }
            });
    }
    let stdin = child.stdin.take();
    let mut server = StdioServer {
        child,
        stdin,
        lines: rx,
    };
    report.pass(name("start"), format!("started {program} (pid {pid})"));

    let fix_init = format!(
        "run the command by hand ({program} …) to see its errors; it must speak MCP as \
         newline-delimited JSON-RPC on stdin/stdout"
    );
    let init_name = name("MCP initialize");
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let init = server
        .send(&initialize_request())
        .and_then(|()| server.answer(&json!(1), deadline));
    let init = match init {
        Ok(answer) => answer,
        Err(problem) => {
            report.fail(
                init_name,
                format!("no answer to initialize: {problem}"),
                fix_init,
            );
            return;
        }
    };
    let Some(summary) = initialize_summary(&init, &init_name, report) else {
        return;
    };
    report.pass(init_name, summary.text);
    let tools_name = name("MCP tools/list");
    if let Err(problem) = server.send(&initialized_notification()) {
        report.fail(tools_name, format!("after initialize: {problem}"), fix_init);
        return;
    }
    if !summary.has_tools {
        report.skip(
            tools_name,
            "not asked: the server declares no tools capability",
        );
        return;
    }
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let outcome = list_tools(deadline, |message, deadline| {
        server.send(message)?;
        server.answer(&message["id"], deadline)
    });
    match outcome {
        Ok(count) => report.pass(tools_name, tool_count(count)),
        Err(problem) => report.fail(tools_name, problem, fix_init),
    }
}
