//! The four promises every fault scenario checks, over what the callers recorded and what the MCP
//! server executed: (1) no caller waits longer than the scenario's bound; (2) no call executes
//! twice (and no call is answered without executing, or executed after its caller was told it
//! failed); (3) every caller gets its answer or a clear error; (4) the system serves normally
//! again within the scenario's recovery bound. Each broken promise becomes one line naming the
//! scenario, the bound and what was observed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::load::{CallRecord, Outcome};

/// How far after its caller's error answer an execution may start and still count as "not
/// late": the two clocks are read by different processes a few milliseconds apart.
const LATE_EXECUTION_SLACK: Duration = Duration::from_millis(500);

/// Violations listed per promise before the rest are only counted.
const SHOWN_PER_PROMISE: usize = 5;

/// What one scenario promises.
pub struct Bounds {
    pub scenario: &'static str,
    /// Longest any call may take, from sending to the end of the answer.
    pub max_wait: Duration,
    /// Why `max_wait` is what it is (from the configured timeouts).
    pub max_wait_why: &'static str,
    /// Longest from the end of the fault until a run of `recovery_run` consecutive answers.
    pub recovery: Duration,
    pub recovery_run: usize,
    /// Connection errors are a clear answer only when the relay itself was killed.
    pub transport_errors_allowed: bool,
}

/// What happened in one scenario.
pub struct Observation {
    pub calls: Vec<CallRecord>,
    pub executions: BTreeMap<String, Vec<SystemTime>>,
    pub fault_started: Instant,
    pub fault_ended: Instant,
    pub recovered_at: Option<Instant>,
}

/// The executions log of `tests/fixtures/fault_mcp_server.py`: call key → start times.
pub fn read_executions(path: &Path) -> BTreeMap<String, Vec<SystemTime>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut executions: BTreeMap<String, Vec<SystemTime>> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(key), Some(at)) = (words.next(), words.next()) else {
            panic!("a malformed executions line: {line:?}");
        };
        let seconds: f64 = at
            .parse()
            .unwrap_or_else(|_| panic!("bad time in {line:?}"));
        executions
            .entry(key.to_string())
            .or_default()
            .push(UNIX_EPOCH + Duration::from_secs_f64(seconds));
    }
    executions
}

/// Every broken promise, one line each (empty: all kept).
pub fn violations(bounds: &Bounds, seen: &Observation) -> Vec<String> {
    let name = bounds.scenario;
    let mut found = Vec::new();

    // The fault must have hit calls in flight, or the scenario proved nothing.
    let spanning = seen
        .calls
        .iter()
        .filter(|c| c.started <= seen.fault_started && c.finished >= seen.fault_started)
        .count();
    if spanning == 0 {
        found.push(format!(
            "{name}: no call was in flight when the fault began ({} calls in all)",
            seen.calls.len()
        ));
    }

    // (1) Bounded waits.
    let slow: Vec<String> = seen
        .calls
        .iter()
        .filter(|call| call.latency() > bounds.max_wait)
        .map(|call| {
            format!(
                "{} waited {:.2?} ({:?})",
                call.key,
                call.latency(),
                call.outcome
            )
        })
        .collect();
    push_all(
        &mut found,
        &format!(
            "{name}: (1) bound {:?} on every wait ({}) broken; observed",
            bounds.max_wait, bounds.max_wait_why
        ),
        slow,
    );

    // (2) At most once; answered means executed; never executed after the caller's error.
    let twice: Vec<String> = seen
        .executions
        .iter()
        .filter(|(_, runs)| runs.len() > 1)
        .map(|(key, runs)| format!("{key} executed {} times", runs.len()))
        .collect();
    push_all(&mut found, &format!("{name}: (2) executed twice"), twice);
    let unexecuted: Vec<String> = seen
        .calls
        .iter()
        .filter(|call| call.is_answer() && !seen.executions.contains_key(&call.key))
        .map(|call| call.key.clone())
        .collect();
    push_all(
        &mut found,
        &format!("{name}: (2) answered although the MCP server never executed"),
        unexecuted,
    );
    let late: Vec<String> = seen
        .calls
        .iter()
        .filter(|call| matches!(call.outcome, Outcome::ClearError { .. }))
        .filter_map(|call| {
            let runs = seen.executions.get(&call.key)?;
            let after = runs
                .iter()
                .filter_map(|at| at.duration_since(call.finished_wall).ok())
                .find(|after| *after > LATE_EXECUTION_SLACK)?;
            Some(format!(
                "{} executed {after:.2?} after its caller got {:?}",
                call.key, call.outcome
            ))
        })
        .collect();
    push_all(
        &mut found,
        &format!(
            "{name}: (2) bound: no execution later than {LATE_EXECUTION_SLACK:?} after the caller's error; observed"
        ),
        late,
    );

    // (3) Each caller got its answer or a clear error.
    let unclear: Vec<String> = seen
        .calls
        .iter()
        .filter(|call| match &call.outcome {
            Outcome::Answer | Outcome::ClearError { .. } => false,
            Outcome::Transport(_) => !bounds.transport_errors_allowed,
            Outcome::CallerTimeout | Outcome::Unclear { .. } => true,
        })
        .map(|call| {
            format!(
                "{}: {:?} after {:.2?}",
                call.key,
                call.outcome,
                call.latency()
            )
        })
        .collect();
    push_all(
        &mut found,
        &format!(
            "{name}: (3) neither the answer nor a clear error (connection errors allowed: {})",
            bounds.transport_errors_allowed
        ),
        unclear,
    );

    // (4) Serving again.
    let recovery = seen
        .recovered_at
        .map(|at| at.saturating_duration_since(seen.fault_ended));
    if recovery.is_none_or(|took| took > bounds.recovery) {
        found.push(format!(
            "{name}: (4) bound {:?} to serve {} calls in a row after the fault broken; observed: {}",
            bounds.recovery,
            bounds.recovery_run,
            recovery.map_or("no such run".to_string(), |took| format!("{took:.2?}")),
        ));
    }
    found
}

fn push_all(found: &mut Vec<String>, heading: &str, items: Vec<String>) {
    if items.is_empty() {
        return;
    }
    let shown: Vec<&str> = items
        .iter()
        .take(SHOWN_PER_PROMISE)
        .map(String::as_str)
        .collect();
    let more = items.len().saturating_sub(SHOWN_PER_PROMISE);
    let rest = if more > 0 {
        format!(" (and {more} more)")
    } else {
        String::new()
    };
    found.push(format!("{heading}: {}{rest}", shown.join("; ")));
}

/// One line summing up a scenario's calls: counts per outcome kind and the longest wait.
pub fn summary(bounds: &Bounds, seen: &Observation) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for call in &seen.calls {
        let kind = match &call.outcome {
            Outcome::Answer => "answer".to_string(),
            Outcome::ClearError { status, code } => format!("{status} {code}"),
            Outcome::Transport(_) => "connection error".to_string(),
            Outcome::CallerTimeout => "caller timeout".to_string(),
            Outcome::Unclear { status, .. } => format!("unclear {status}"),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    let longest = seen.calls.iter().map(CallRecord::latency).max();
    let recovery = seen
        .recovered_at
        .map(|at| at.saturating_duration_since(seen.fault_ended));
    format!(
        "{}: {} calls {kinds:?}; longest wait {longest:.2?} (bound {:?}); recovered after {recovery:.2?} (bound {:?}); {} keys executed",
        bounds.scenario,
        seen.calls.len(),
        bounds.max_wait,
        bounds.recovery,
        seen.executions.len()
    )
}
