//! Panic containment. No input should reach a panic (the fuzz targets and the fault suite are how
//! we look for one); this file says what happens if a bug does anyway, so that one bad byte costs
//! one answer, never the process, a hung caller, or a secret in the log.
//!
//! - [`report_panics`] replaces the default panic message: it logs the thread and source
//!   location, and the message only when it is a string literal of ours. A formatted message can
//!   quote data (a string-slicing panic prints the whole string, which may be a token), so it is
//!   withheld.
//! - [`contained`] runs a unit of work and turns its panic into `None`. The client's workers run
//!   each command inside it and, when the command had not been answered yet ([`Settled`]), answer
//!   it with a `-32603` whose provenance is `client_internal`/`panic`; the worker then takes the
//!   next command. A panic in the poll or probe thread stops the client, which drains what it
//!   holds and exits with [`EXIT_INTERNAL`] so its supervisor restarts it.
//! - The relay's HTTP server contains handler panics the same way (a 500, the connection closed).
//!
//! All of it needs `panic = "unwind"`, the release profile's setting (`Cargo.toml`).

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe, PanicHookInfo};
use std::thread;

/// Exit code after a contained panic stopped the client (`EX_SOFTWARE`, sysexits.h).
pub const EXIT_INTERNAL: i32 = 70;

/// Installs the panic reporter for the whole process. Idempotent enough: a second call replaces
/// the first with the same hook.
pub fn report_panics() {
    panic::set_hook(Box::new(|info| {
        let line = describe(info);
        if log::log_enabled!(log::Level::Error) {
            log::error!("{line}");
        } else {
            eprintln!("mcp-tunnel: {line}");
        }
    }));
}

/// One line about a panic: thread, location, and the message when it is safe to show.
fn describe(info: &PanicHookInfo<'_>) -> String {
    let thread = thread::current();
    let name = thread.name().unwrap_or("unnamed");
    let location = info
        .location()
        .map_or_else(|| "an unknown location".to_string(), |l| l.to_string());
    format!(
        "internal error (a bug; please report it): thread {name} panicked at {location}: {}",
        shown_message(info.payload())
    )
}

/// The panic message if it is a literal (`panic!("...")`, `unwrap()` on `None`, `expect`): those
/// are our words. A formatted message may carry data and is withheld.
fn shown_message(payload: &(dyn Any + Send)) -> &str {
    match payload.downcast_ref::<&'static str>() {
        Some(literal) => literal,
        None => "(message withheld: it may quote data)",
    }
}

/// Runs `work`; a panic in it is reported (by the hook) and becomes `None`.
pub fn contained<R>(work: impl FnOnce() -> R) -> Option<R> {
    // Unwind safety: callers only share state behind locks that tolerate poisoning, and a
    // command's own state is dropped with it.
    panic::catch_unwind(AssertUnwindSafe(work)).ok()
}

/// Whether a command's terminal answer was posted (or deliberately withheld, as for an expired
/// deadline). A worker whose command panicked answers it only when this is still unset.
#[derive(Debug, Default)]
pub struct Settled(Cell<bool>);

impl Settled {
    pub fn mark(&self) {
        self.0.set(true);
    }

    pub fn is_marked(&self) -> bool {
        self.0.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_none_and_work_goes_on() {
        assert_eq!(contained(|| 7), Some(7));
        let settled = Settled::default();
        let result: Option<()> = contained(|| {
            settled.mark();
            panic!("a bug");
        });
        assert!(result.is_none());
        assert!(
            settled.is_marked(),
            "what ran before the panic still counts"
        );
    }

    #[test]
    fn formatted_messages_are_withheld() {
        let literal: Box<dyn Any + Send> = Box::new("called `Option::unwrap()` on a `None` value");
        assert_eq!(
            shown_message(literal.as_ref()),
            "called `Option::unwrap()` on a `None` value"
        );
        let formatted: Box<dyn Any + Send> = Box::new(format!("byte index 3 of `{}`", "s3cret"));
        assert!(!shown_message(formatted.as_ref()).contains("s3cret"));
    }
}
