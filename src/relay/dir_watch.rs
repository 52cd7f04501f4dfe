//! Waiting for a change in one directory (Linux inotify), so the tunnels-file watcher sleeps
//! until there is something to look at instead of waking every few seconds.
//!
//! The directory is watched rather than the file: an atomic save (`relay tunnel add`, most
//! editors) renames a new file into place, and a Kubernetes ConfigMap volume swaps a symlink
//! beside it; a watch on the old file would see neither. Any event only means "look again": the
//! caller compares the file's stamp, so events of other files in the directory cost one `stat`.
//! [`DirEvents::wait`] is bounded by a timeout, because inotify does not see every change (a
//! network filesystem changed from another host).

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::inotify::{self, CreateFlags, WatchFlags};

/// An inotify watch of one directory.
pub(super) struct DirEvents {
    fd: OwnedFd,
}

impl DirEvents {
    /// Watches `dir` for files written, created, renamed, removed or changed in their attributes.
    pub fn watch(dir: &Path) -> io::Result<DirEvents> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        inotify::add_watch(
            &fd,
            dir,
            WatchFlags::CLOSE_WRITE
                | WatchFlags::CREATE
                | WatchFlags::DELETE
                | WatchFlags::MOVED_FROM
                | WatchFlags::MOVED_TO
                | WatchFlags::ATTRIB
                | WatchFlags::DELETE_SELF
                | WatchFlags::MOVE_SELF,
        )?;
        Ok(DirEvents { fd })
    }

    /// Waits until something changed in the directory or `timeout` passed, and takes every
    /// pending event. An error means the watch can no longer be trusted (the caller falls back
    /// to looking at the file on a timer): a descriptor left readable would spin.
    pub fn wait(&self, timeout: Duration) -> io::Result<()> {
        let timeout = Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        // The events themselves do not matter, only that there were some.
        let mut buf = [0u8; 4096];
        loop {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn scratch_dir(label: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mcp-tunnel-dirwatch-{label}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_rename_into_the_directory_ends_the_wait_and_quiet_times_out() {
        let dir = scratch_dir("rename");
        let events = DirEvents::watch(&dir).unwrap();
        // Nothing happened: the wait lasts its timeout.
        let started = Instant::now();
        events.wait(Duration::from_millis(200)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(190));
        // An atomic save: written beside, renamed into place.
        std::fs::write(dir.join(".tunnels.toml.tmp"), "x").unwrap();
        std::fs::rename(dir.join(".tunnels.toml.tmp"), dir.join("tunnels.toml")).unwrap();
        let started = Instant::now();
        events.wait(Duration::from_secs(20)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        // Every event was taken: the next wait is quiet again.
        let started = Instant::now();
        events.wait(Duration::from_millis(200)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(190));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_directory_cannot_be_watched() {
        let dir = scratch_dir("missing").join("absent");
        assert!(DirEvents::watch(&dir).is_err());
    }
}
