//! The exclusive per-instance lock that mutating commands hold. The lock file
//! records who holds it, so a second command can say who is in the way.

use super::InstanceError;
use serde::Serialize;
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Who holds a lock, as recorded in the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Holder {
    Process {
        pid: u32,
        command: String,
    },
    /// The file was empty or unreadable: taken a moment ago, or by an old rum.
    Unknown,
}

impl Holder {
    pub fn pid(&self) -> Option<u32> {
        match self {
            Holder::Process { pid, .. } => Some(*pid),
            Holder::Unknown => None,
        }
    }

    fn parse(text: &str) -> Self {
        let mut parts = text.trim().splitn(2, ' ');
        match (parts.next().and_then(|p| p.parse().ok()), parts.next()) {
            (Some(pid), Some(command)) => Holder::Process {
                pid,
                command: command.to_owned(),
            },
            _ => Holder::Unknown,
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Process { pid, command } => write!(f, "`{command}` (pid {pid})"),
            Holder::Unknown => f.write_str("another rum command"),
        }
    }
}

/// How long to wait for a held lock.
#[derive(Debug, Clone, Copy)]
pub enum LockWait {
    No,
    Up(Duration),
}

/// Held until dropped; the kernel releases it if the process dies.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

const POLL: Duration = Duration::from_millis(100);

impl InstanceLock {
    /// Takes the lock at `path` for `command` (e.g. "rum up").
    pub fn acquire(
        path: &Path,
        instance: &str,
        command: &str,
        wait: LockWait,
    ) -> Result<Self, InstanceError> {
        let open_error = |source| InstanceError::LockFile {
            path: path.to_path_buf(),
            source,
        };
        let mut file = loop {
            let file = Self::take(path, wait, open_error, instance)?;
            // A lock on a file that was removed meanwhile (an `up` rolled back
            // and deleted the instance directory) guards nothing: start again.
            let same = |f: &File| -> std::io::Result<bool> {
                Ok(f.metadata()?.ino() == std::fs::metadata(path)?.ino())
            };
            if same(&file).unwrap_or(false) {
                break file;
            }
        };
        let record = format!("{} {command}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(record.as_bytes()))
            .and_then(|()| file.flush())
            .map_err(open_error)?;
        Ok(Self { _file: file })
    }

    fn take(
        path: &Path,
        wait: LockWait,
        open_error: impl Fn(std::io::Error) -> InstanceError,
        instance: &str,
    ) -> Result<File, InstanceError> {
        // std opens with O_CLOEXEC, so QEMU and other children never inherit the lock.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(&open_error)?;
        let deadline = match wait {
            LockWait::No => Instant::now(),
            LockWait::Up(limit) => Instant::now() + limit,
        };
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(POLL)
                }
                Err(TryLockError::WouldBlock) => {
                    let holder = Self::holder(&mut file);
                    return Err(InstanceError::Busy {
                        instance: instance.to_owned(),
                        holder,
                    });
                }
                Err(TryLockError::Error(source)) => return Err(open_error(source)),
            }
        }
    }

    /// Who holds the lock at `path` right now, if anyone.
    pub fn current_holder(path: &Path) -> Option<Holder> {
        let mut file = File::open(path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(_) => Some(Self::holder(&mut file)),
        }
    }

    fn holder(file: &mut File) -> Holder {
        let mut text = String::new();
        match file.rewind().and_then(|()| file.read_to_string(&mut text)) {
            Ok(_) => Holder::parse(&text),
            Err(_) => Holder::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_learns_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = InstanceLock::acquire(&path, "web-1", "rum up", LockWait::No).unwrap();
        let err = InstanceLock::acquire(&path, "web-1", "rum down", LockWait::No).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`rum up`"), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("web-1"), "{text}");
        assert_eq!(
            InstanceLock::current_holder(&path),
            Some(Holder::Process {
                pid: std::process::id(),
                command: "rum up".into()
            })
        );
        drop(held);
        assert_eq!(InstanceLock::current_holder(&path), None);
        InstanceLock::acquire(&path, "web-1", "rum down", LockWait::No).unwrap();
    }

    #[test]
    fn waiting_takes_the_lock_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = InstanceLock::acquire(&path, "x", "rum up", LockWait::No).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        InstanceLock::acquire(
            &path,
            "x",
            "rum retry",
            LockWait::Up(Duration::from_secs(30)),
        )
        .unwrap();
        releaser.join().unwrap();
    }

    #[test]
    fn unreadable_records_are_unknown() {
        assert_eq!(Holder::parse(""), Holder::Unknown);
        assert_eq!(
            Holder::parse("12 rum up"),
            Holder::Process {
                pid: 12,
                command: "rum up".into()
            }
        );
    }
}
