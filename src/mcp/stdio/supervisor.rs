//! The child process of a stdio channel: its supervisor (start, watch, restart with backoff,
//! stop), its process group, the bounded queue to its stdin and the thread that writes it, and
//! the readers of its stdout (framed into lines, routed by [`Shared::route`]) and stderr (logged).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::ChildStatus;
use super::process::{Event, Shared};
use crate::backoff::Backoff;

/// Longest line read from the child; a longer one is skipped (and logged), not buffered.
const MAX_LINE: usize = 32 * 1024 * 1024;
/// First restart delay after the child exits; doubles per quick failure.
const RESTART_BASE: Duration = Duration::from_millis(200);
/// Longest restart delay in a crash loop.
const RESTART_CAP: Duration = Duration::from_secs(30);
/// A child that ran at least this long was healthy: the next restart starts from the base delay.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// On shutdown, time the child gets to exit after its stdin closes (the MCP stdio convention),
/// then again after SIGTERM, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(3);
/// Longest stderr line forwarded to our log.
const MAX_STDERR_LINE: usize = 2000;
/// Most bytes waiting for a child that does not read its stdin (beyond the pipe's own ~64 KiB).
/// A message larger than this is still taken when nothing else waits, so one big call always
/// goes through; a reading child drains the queue as fast as it reads.
pub const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;
/// Most messages waiting for the child, whatever their size (many tiny notifications).
pub const MAX_QUEUED_MESSAGES: usize = 1024;

/// Why a message could not be queued for the child.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum QueueError {
    /// No child is running.
    Down,
    /// The child is not reading: [`MAX_QUEUED_BYTES`] or [`MAX_QUEUED_MESSAGES`] are waiting.
    Full,
}

/// What became of a queued line that a caller tracks ([`Line::fate`]): a line the child never got
/// may be sent again to its successor, one it may have read must not (it could run twice).
pub(super) mod fate {
    pub const QUEUED: u8 = 0;
    pub const WRITING: u8 = 1;
    pub const WRITTEN: u8 = 2;
    /// The write failed (the child was gone) or was never tried: the child did not get it.
    pub const UNDELIVERED: u8 = 3;
}

/// One line for the child, and where the writer records its fate when a caller asks.
pub(super) struct Line {
    pub(super) text: String,
    pub(super) fate: Option<Arc<AtomicU8>>,
}

/// The sending end of one child's bounded stdin queue.
#[derive(Clone)]
pub(super) struct StdinQueue {
    pub(super) lines: SyncSender<Line>,
    /// Bytes queued and not yet written to the pipe (the writer subtracts what it wrote).
    pub(super) queued_bytes: Arc<AtomicUsize>,
}

impl StdinQueue {
    pub(super) fn new() -> (StdinQueue, Receiver<Line>) {
        let (lines, receiver) = mpsc::sync_channel(MAX_QUEUED_MESSAGES);
        let queue = StdinQueue {
            lines,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
        };
        (queue, receiver)
    }

    pub(super) fn push(&self, line: Line) -> Result<(), QueueError> {
        let len = line.text.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::SeqCst);
        if before > 0 && before + len > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(len, Ordering::SeqCst);
            return Err(QueueError::Full);
        }
        match self.lines.try_send(line) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.queued_bytes.fetch_sub(len, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => QueueError::Full,
                    TrySendError::Disconnected(_) => QueueError::Down,
                })
            }
        }
    }
}

/// How often the supervisor checks whether its child has exited while waiting for the reader or
/// a stop (the standard library cannot wait for a child with a timeout).
const EXIT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The supervisor: start, watch until the child goes away (or we stop), fail its calls, back off,
/// repeat.
pub(super) fn supervise(shared: &Arc<Shared>) {
    let mut backoff = Backoff::new(RESTART_BASE, RESTART_CAP);
    while !shared.stopping.load(Ordering::SeqCst) {
        let started = Instant::now();
        match spawn_child(shared) {
            Ok(mut child) => {
                log::info!(
                    "[{}] stdio server started (pid {})",
                    shared.channel,
                    child.id()
                );
                shared.set_status(ChildStatus::Running(child.id()));
                if prepare(shared) {
                    watch(shared, &mut child);
                } else {
                    log::warn!(
                        "[{}] server/discover not answered within {:?}: the server counts as \
                         legacy, and this child is replaced before it serves anything (a late \
                         answer would have committed it to the modern era)",
                        shared.channel,
                        super::era::PROBE_TIMEOUT
                    );
                }
                go_down(shared);
                let status = stop_child(shared, &mut child);
                shared.set_status(ChildStatus::Exited(status.clone()));
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                if started.elapsed() >= HEALTHY_RUN {
                    backoff.reset();
                }
                let delay = backoff.next_delay().max(RESTART_BASE);
                let restarts = {
                    let mut state = shared.lock();
                    state.restarts += 1;
                    state.restarts
                };
                log::warn!(
                    "[{}] stdio server exited ({status}); restart #{restarts} in {delay:?}",
                    shared.channel
                );
                if !shared.pause(delay) {
                    break;
                }
            }
            Err(e) => {
                shared.set_status(ChildStatus::NotStarted {
                    error: e.to_string(),
                    not_found: e.kind() == io::ErrorKind::NotFound,
                });
                let delay = backoff.next_delay().max(RESTART_BASE);
                log::error!(
                    "[{}] cannot start stdio server {:?}: {e}; retrying in {delay:?}",
                    shared.channel,
                    shared.argv[0]
                );
                if !shared.pause(delay) {
                    break;
                }
            }
        }
    }
    go_down(shared);
    *shared
        .supervisor_done
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = true;
    shared.changed.notify_all();
}

/// Makes a new child ready: the channel's era probe when this process owes it one, the cached
/// handshake replayed; only then may calls go to it (they wait for `ready`). `false`: the probe
/// went unanswered and the child must be replaced instead.
fn prepare(shared: &Shared) -> bool {
    if let Some(slot) = &shared.probe
        && !slot.probe_once(shared)
    {
        return false;
    }
    shared.replay_handshake();
    let gone = shared.reader_lock().done;
    let mut state = shared.lock();
    state.ready = state.up && !gone;
    drop(state);
    shared.status_changed.notify_all();
    true
}

/// Returns when the current child closed its stdout, exited, or we are stopping.
fn watch(shared: &Shared, child: &mut Child) {
    let mut reader = shared.reader_lock();
    while !reader.done && !shared.stopping.load(Ordering::SeqCst) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        reader = shared
            .wake
            .wait_timeout(reader, EXIT_CHECK_INTERVAL)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn spawn_child(shared: &Arc<Shared>) -> io::Result<Child> {
    let mut command = Command::new(&shared.argv[0]);
    for name in &shared.scrub {
        command.env_remove(name);
    }
    let mut child = command
        .args(&shared.argv[1..])
        // Its own process group (id = its pid), so stop and restart can end its helpers too.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let channel = shared.channel.clone();
    if let Some(stderr) = child.stderr.take() {
        let channel = channel.clone();
        thread::Builder::new()
            .name(format!("stdio-{channel}-stderr"))
            .spawn(move || forward_stderr(&channel, stderr))?;
    }
    let (queue, lines) = StdinQueue::new();
    shared.stdin_full.store(false, Ordering::SeqCst);
    if let Some(stdin) = child.stdin.take() {
        let queued_bytes = Arc::clone(&queue.queued_bytes);
        let full = Arc::clone(&shared.stdin_full);
        thread::Builder::new()
            .name(format!("stdio-{channel}-stdin"))
            .spawn(move || write_stdin(stdin, lines, &queued_bytes, &full))?;
    }
    let generation = {
        let mut reader = shared.reader_lock();
        reader.generation += 1;
        reader.done = false;
        reader.generation
    };
    if let Some(stdout) = child.stdout.take() {
        let reader = Arc::clone(shared);
        let pid = child.id();
        thread::Builder::new()
            .name(format!("stdio-{channel}-stdout"))
            .spawn(move || {
                read_stdout(&reader, stdout);
                log::debug!(
                    "[{}] stdout of stdio server pid {pid} closed",
                    reader.channel
                );
                // A helper of an older child may hold its stdout open long after a restart:
                // its end says nothing about the current child.
                let mut state = reader.reader_lock();
                if state.generation == generation {
                    state.done = true;
                    reader.wake.notify_all();
                }
            })?;
    }
    *shared.stdin_lock() = Some(queue);
    shared.lock().up = true;
    Ok(child)
}

/// The writer thread: writes queued lines until the queue closes (then the pipe closes, which
/// tells the child to exit) or the pipe breaks. Once the queue is empty again the channel takes
/// calls again (`full` cleared).
fn write_stdin(
    mut stdin: ChildStdin,
    lines: Receiver<Line>,
    queued_bytes: &AtomicUsize,
    full: &AtomicBool,
) {
    for line in lines {
        let claimed = line.fate.as_ref().is_none_or(|f| {
            f.compare_exchange(fate::QUEUED, fate::WRITING, SeqCst, SeqCst)
                .is_ok()
        });
        let written = if claimed {
            stdin
                .write_all(line.text.as_bytes())
                .and_then(|()| stdin.flush())
        } else {
            Ok(()) // its caller gave it up: the child went away before it was written
        };
        if let Some(f) = &line.fate
            && claimed
        {
            let state = if written.is_ok() {
                fate::WRITTEN
            } else {
                fate::UNDELIVERED
            };
            f.store(state, SeqCst);
        }
        if queued_bytes.fetch_sub(line.text.len(), SeqCst) == line.text.len() {
            full.store(false, SeqCst);
        }
        if written.is_err() {
            return;
        }
    }
}

/// Reads lines until the child closes stdout, routing each.
pub(super) fn read_stdout(shared: &Arc<Shared>, stdout: impl Read) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return,
            Ok(_) if line.len() > MAX_LINE => {
                log::warn!(
                    "[{}] stdio server wrote a line over {MAX_LINE} bytes; skipped",
                    shared.channel
                );
                if skip_rest_of_line(&mut reader).is_err() {
                    return;
                }
            }
            Ok(_) => shared.route(&line),
            Err(_) => return,
        }
    }
}

fn skip_rest_of_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(pos + 1);
            return Ok(());
        }
        let len = buf.len();
        reader.consume(len);
    }
}

/// Marks the channel down and fails every call in flight at once.
fn go_down(shared: &Shared) {
    shared.stdin_lock().take();
    let mut state = shared.lock();
    state.up = false;
    state.ready = false;
    state.handshake.child_gone();
    for call in state.calls.values() {
        let _ = call.events.send(Event::Closed);
    }
}

/// Ends the child: stdin is already closed; wait, then SIGTERM its group, wait, then SIGKILL it;
/// then ends whatever helpers are left in its group.
fn stop_child(shared: &Shared, child: &mut Child) -> String {
    let group = child.id();
    let status = match wait_for_exit(child, EXIT_GRACE) {
        Some(status) => status,
        None => {
            signal_group(group, Signal::TERM);
            match wait_for_exit(child, EXIT_GRACE) {
                Some(status) => status,
                None => {
                    log::warn!(
                        "[{}] stdio server ignored stdin close and SIGTERM; killing it",
                        shared.channel
                    );
                    signal_group(group, Signal::KILL);
                    let _ = child.kill();
                    child
                        .wait()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|e| format!("wait failed: {e}"))
                }
            }
        }
    };
    end_group(shared, group);
    status
}

/// Helpers the server forked (its process group, which outlives it while any member lives):
/// SIGTERM, then SIGKILL after [`EXIT_GRACE`]. The group id cannot be reused while the group
/// exists, so this never signals strangers.
fn end_group(shared: &Shared, group: u32) {
    if !signal_group(group, Signal::TERM) {
        return; // no member left
    }
    let deadline = Instant::now() + EXIT_GRACE;
    while group_exists(group) {
        if Instant::now() >= deadline {
            log::warn!(
                "[{}] helpers of the stdio server ignored SIGTERM; killing its process group",
                shared.channel
            );
            signal_group(group, Signal::KILL);
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` to process group `group`; false when the group no longer exists.
fn signal_group(group: u32, signal: Signal) -> bool {
    group_pid(group).is_some_and(|pid| rustix::process::kill_process_group(pid, signal).is_ok())
}

fn group_exists(group: u32) -> bool {
    group_pid(group).is_some_and(|pid| rustix::process::test_kill_process_group(pid).is_ok())
}

fn group_pid(group: u32) -> Option<Pid> {
    i32::try_from(group).ok().and_then(Pid::from_raw)
}

fn wait_for_exit(child: &mut Child, grace: Duration) -> Option<String> {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.to_string()),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

fn forward_stderr(channel: &str, stderr: impl Read) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader
            .by_ref()
            .take(MAX_STDERR_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                if !text.is_empty() {
                    log::info!("[{channel}] {text}");
                }
                if !line.ends_with(b"\n") && skip_rest_of_line(&mut reader).is_err() {
                    return;
                }
            }
        }
    }
}
