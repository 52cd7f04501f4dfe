//! `Watched<T>`: state behind a mutex plus a condition variable, so test code and fake handlers can
//! wait for "this predicate holds" with a deadline instead of sleeping and hoping.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

pub struct Watched<T> {
    state: Mutex<T>,
    changed: Condvar,
}

impl<T> Watched<T> {
    pub fn new(initial: T) -> Self {
        Watched {
            state: Mutex::new(initial),
            changed: Condvar::new(),
        }
    }

    /// Changes the state and wakes every waiter.
    pub fn update<R>(&self, change: impl FnOnce(&mut T) -> R) -> R {
        let result = change(&mut self.lock());
        self.changed.notify_all();
        result
    }

    /// Reads the state without waiting.
    pub fn read<R>(&self, look: impl FnOnce(&T) -> R) -> R {
        look(&self.lock())
    }

    /// Waits until `ready` returns `Some`, or until `deadline`; `None` means the deadline passed.
    /// `ready` may change the state (e.g. take commands off a queue); waiters are then woken.
    pub fn wait_until<R>(
        &self,
        deadline: Instant,
        mut ready: impl FnMut(&mut T) -> Option<R>,
    ) -> Option<R> {
        let mut state = self.lock();
        loop {
            if let Some(result) = ready(&mut state) {
                drop(state);
                self.changed.notify_all();
                return Some(result);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// A panicking handler thread must not turn every later assertion into a poison error.
    fn lock(&self) -> MutexGuard<'_, T> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
