//! `--pid-file`: at most one copy of the client per pid file, for cron entries and init scripts.
//!
//! The file is held with an exclusive advisory lock for the life of the process, so "is it
//! running?" never depends on a pid that may have been reused: a stale file (its process gone)
//! carries no lock and is simply taken over. The file holds our pid for humans and scripts.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A held pid file; removed when dropped (at a clean exit).
pub struct PidFile {
    path: PathBuf,
    /// Kept open: the lock lives as long as this handle.
    _file: File,
}

/// The outcome of trying to take the pid file.
pub enum Acquired {
    Held(PidFile),
    /// Another process holds it; its pid as the file says.
    Busy(String),
}

impl PidFile {
    pub fn acquire(path: &Path) -> Result<Acquired, String> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(|e| format!("cannot open pid file {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Ok(Acquired::Busy(pid.trim().to_string()));
            }
            Err(TryLockError::Error(e)) => {
                return Err(format!("cannot lock pid file {}: {e}", path.display()));
            }
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush());
        written.map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        Ok(Acquired::Held(PidFile {
            path: path.to_path_buf(),
            _file: file,
        }))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Removed while still locked, so no other copy can take it in between and lose it.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_stale_files_are_taken_over() {
        let dir = std::env::temp_dir().join(format!("mcp-tunnel-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.pid");
        std::fs::write(&path, "99999999\n").unwrap(); // stale: nobody holds a lock on it
        let Acquired::Held(held) = PidFile::acquire(&path).unwrap() else {
            panic!("a stale pid file must be taken over");
        };
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        match PidFile::acquire(&path).unwrap() {
            Acquired::Busy(pid) => assert_eq!(pid, std::process::id().to_string()),
            Acquired::Held(_) => panic!("a held pid file must not be taken twice"),
        }
        drop(held);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
