//! When the relay re-reads its tunnels file: on SIGHUP, when a watcher sees the file change
//! (every [`RELOAD_CHECK_INTERVAL`]), and at once when a request names a well-formed tunnel id
//! the relay does not know ([`Relay::reload_on_miss`]), so a tunnel added a moment ago works on
//! its very first request instead of after a 404 and the client's backoff.
//!
//! Every reload goes through one lock ([`ReloadGate`]), so two of them never interleave and an
//! older file cannot replace a newer one.

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::Relay;
use super::keys;

/// How often the tunnels file's modification time is checked for a reload.
pub(super) const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// While the tunnels file looks unchanged, an unknown tunnel id re-reads it at most this often.
/// A changed file (another modification time, size or inode) is read at once whatever this says;
/// the interval only matters where timestamps are too coarse to show a change. So a scan of
/// made-up ids costs at most four small file reads a second, and a new tunnel's first request
/// waits for one file read, never for this.
pub(super) const ON_MISS_RELOAD_INTERVAL: Duration = Duration::from_millis(250);

/// What identifies one version of the file cheaply: modification time, size and inode (an
/// atomic save renames a new file into place).
type Stamp = (Option<SystemTime>, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok(), meta.len(), meta.ino()))
}

/// Serialises reloads and remembers what the last one read.
#[derive(Default)]
pub(super) struct ReloadGate {
    /// The file as last read (`None`: not read since start, or absent).
    loaded: Option<Stamp>,
    /// When an unknown id last caused a reload.
    last_on_miss: Option<Instant>,
}

impl Relay {
    /// Re-reads the tunnels file. Hubs of tunnels that still exist keep their queues; a removed
    /// tunnel's waiting requests end by their deadline.
    pub fn reload(&self) -> Result<usize, String> {
        let mut gate = self.reload_gate.lock().unwrap_or_else(|e| e.into_inner());
        self.reload_locked(&mut gate)
    }

    fn reload_locked(&self, gate: &mut ReloadGate) -> Result<usize, String> {
        // Stamped before reading: a change made during the read shows as a new stamp next time.
        // A broken file counts as read too: it is not worth reading again until it changes.
        gate.loaded = stamp(&self.cfg.tunnels_file);
        let registry = super::tunnels::load(&self.cfg.tunnels_file)?;
        Ok(self.install(registry))
    }

    /// Re-reads the file if it changed since the last read (an admin key made a moment ago by
    /// `relay admin-key`); says whether it did. Never with no file (the demo's relay).
    pub(super) fn reload_if_changed(&self) -> bool {
        if self.cfg.tunnels_file.as_os_str().is_empty() {
            return false;
        }
        let mut gate = self.reload_gate.lock().unwrap_or_else(|e| e.into_inner());
        if stamp(&self.cfg.tunnels_file) == gate.loaded {
            return false;
        }
        report_reload(self.reload_locked(&mut gate), "tunnels file changed");
        true
    }

    /// After `id` was not found: re-reads the file if `id` could be a tunnel id and the file
    /// changed or was not read on a miss within [`ON_MISS_RELOAD_INTERVAL`]. Says whether it did.
    pub(super) fn reload_on_miss(&self, id: &str) -> bool {
        // No file (the demo's relay holds its one tunnel in memory): nothing to read.
        if !keys::is_tunnel_id(id) || self.cfg.tunnels_file.as_os_str().is_empty() {
            return false;
        }
        let mut gate = self.reload_gate.lock().unwrap_or_else(|e| e.into_inner());
        let changed = stamp(&self.cfg.tunnels_file) != gate.loaded;
        let due = gate
            .last_on_miss
            .is_none_or(|t| t.elapsed() >= ON_MISS_RELOAD_INTERVAL);
        if !changed && !due {
            return false;
        }
        gate.last_on_miss = Some(Instant::now());
        report_reload(self.reload_locked(&mut gate), "unknown tunnel id");
        true
    }
}

/// Reloads the tunnels file whenever its modification time changes, so `relay tunnel add`
/// takes effect without a signal even for tunnels nobody has asked for yet.
pub(super) fn watch_tunnels_file(relay: Arc<Relay>) {
    let modified = |relay: &Relay| -> Option<SystemTime> {
        std::fs::metadata(&relay.cfg.tunnels_file)
            .and_then(|m| m.modified())
            .ok()
    };
    let mut last = modified(&relay);
    let spawned = thread::Builder::new()
        .name("tunnels-watch".into())
        .spawn(move || {
            loop {
                thread::sleep(RELOAD_CHECK_INTERVAL);
                let now = modified(&relay);
                if now != last {
                    last = now;
                    report_reload(relay.reload(), "file change");
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot watch the tunnels file ({e}); reload with SIGHUP");
    }
}

pub(super) fn report_reload(result: Result<usize, String>, why: &str) {
    match result {
        Ok(n) => log::info!("tunnels reloaded ({why}): {n} tunnel(s)"),
        Err(e) => log::error!("tunnels not reloaded ({why}), keeping the previous set: {e}"),
    }
}
