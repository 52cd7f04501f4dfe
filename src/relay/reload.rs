//! When the relay re-reads its tunnels file: on SIGHUP, when a watcher sees the file change
//! (woken by an inotify watch of its directory, or every [`RELOAD_CHECK_INTERVAL`] where there
//! is none), and at once when a request names a well-formed tunnel id
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
use super::dir_watch::DirEvents;
use super::keys;

/// How often the tunnels file is looked at for a change where its directory cannot be watched.
pub(super) const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The longest the watcher sleeps on its directory watch before it looks at the file anyway:
/// inotify does not see a network filesystem changed from another host (SIGHUP reloads at once).
const RELOAD_SAFETY_CHECK: Duration = Duration::from_secs(60);

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

/// Reloads the tunnels file whenever it changes, so `relay tunnel add` takes effect without a
/// signal even for tunnels nobody has asked for yet. The watcher sleeps on an inotify watch of
/// the file's directory (no wake-up while nothing changes; at most one a
/// [`RELOAD_SAFETY_CHECK`]); where that is not available it looks every
/// [`RELOAD_CHECK_INTERVAL`].
pub(super) fn watch_tunnels_file(relay: Arc<Relay>) {
    let path = &relay.cfg.tunnels_file;
    if path.as_os_str().is_empty() {
        return; // the demo's relay keeps its tunnel in memory
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let mut events = match DirEvents::watch(&dir) {
        Ok(e) => {
            log::debug!("watching {} for changes of the tunnels file", dir.display());
            Some(e)
        }
        Err(e) => {
            log::info!(
                "cannot watch {} for changes ({e}); looking at the tunnels file every {:?}",
                dir.display(),
                RELOAD_CHECK_INTERVAL
            );
            None
        }
    };
    let spawned = thread::Builder::new()
        .name("tunnels-watch".into())
        .spawn(move || {
            loop {
                match &events {
                    Some(watch) => {
                        if let Err(e) = watch.wait(RELOAD_SAFETY_CHECK) {
                            log::warn!(
                                "watching the tunnels file's directory failed ({e}); looking \
                                 at the file every {RELOAD_CHECK_INTERVAL:?} instead"
                            );
                            events = None;
                        }
                    }
                    None => thread::sleep(RELOAD_CHECK_INTERVAL),
                }
                relay.reload_if_changed();
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
