//! Advisory file locks with a holder record: the lock file says which
//! process took it and for what, so whoever finds it taken can say who is in
//! the way. The kernel drops a lock when its process dies; a lock on a file
//! that was removed meanwhile guards nothing and is taken again.

use serde::Serialize;
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(100);

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

/// How long to wait for a lock that is taken.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    No,
    Up(Duration),
}

/// Held until dropped.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock at `path` for `command`, waiting as `wait` says;
    /// `Ok(Err(holder))` when someone else still holds it.
    pub fn acquire(path: &Path, command: &str, wait: Wait) -> io::Result<Result<Self, Holder>> {
        let deadline = match wait {
            Wait::No => Instant::now(),
            Wait::Up(limit) => Instant::now() + limit,
        };
        loop {
            let mut file = open(path)?;
            loop {
                match file.try_lock() {
                    Ok(()) => break,
                    Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                        std::thread::sleep(POLL)
                    }
                    Err(TryLockError::WouldBlock) => return Ok(Err(holder(&mut file))),
                    Err(TryLockError::Error(e)) => return Err(e),
                }
            }
            if let Some(lock) = Self::take(file, path, command)? {
                return Ok(Ok(lock));
            }
        }
    }

    /// Waits as long as it takes; `waiting` hears who holds it, once, before
    /// the wait starts.
    pub fn acquire_blocking(
        path: &Path,
        command: &str,
        waiting: impl FnOnce(&Holder),
    ) -> io::Result<Self> {
        let mut waiting = Some(waiting);
        loop {
            let mut file = open(path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    if let Some(tell) = waiting.take() {
                        tell(&holder(&mut file));
                    }
                    file.lock()?;
                }
                Err(TryLockError::Error(e)) => return Err(e),
            }
            if let Some(lock) = Self::take(file, path, command)? {
                return Ok(lock);
            }
        }
    }

    /// Who holds the lock at `path` right now, if anyone.
    pub fn holder_of(path: &Path) -> Option<Holder> {
        let mut file = File::open(path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(_) => Some(holder(&mut file)),
        }
    }

    /// Records the holder in a locked file, unless the file was removed or
    /// replaced meanwhile (then `None`: lock the new one).
    fn take(mut file: File, path: &Path, command: &str) -> io::Result<Option<Self>> {
        let same = match std::fs::metadata(path) {
            Ok(now) => now.ino() == file.metadata()?.ino(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if !same {
            return Ok(None);
        }
        let record = format!("{} {command}\n", std::process::id());
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(record.as_bytes())?;
        file.flush()?;
        Ok(Some(Self { _file: file }))
    }
}

/// std opens with O_CLOEXEC, so QEMU and other children never inherit a lock.
fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

fn holder(file: &mut File) -> Holder {
    let mut text = String::new();
    match file.rewind().and_then(|()| file.read_to_string(&mut text)) {
        Ok(_) => Holder::parse(&text),
        Err(_) => Holder::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_learns_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = FileLock::acquire(&path, "rum up", Wait::No)
            .unwrap()
            .unwrap();
        let holder = FileLock::acquire(&path, "rum down", Wait::No)
            .unwrap()
            .unwrap_err();
        let me = Holder::Process {
            pid: std::process::id(),
            command: "rum up".into(),
        };
        assert_eq!(holder, me);
        assert_eq!(FileLock::holder_of(&path), Some(me));
        drop(held);
        assert_eq!(FileLock::holder_of(&path), None);
        FileLock::acquire(&path, "rum down", Wait::No)
            .unwrap()
            .unwrap();
    }

    #[test]
    fn waiting_takes_the_lock_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = FileLock::acquire(&path, "rum up", Wait::No)
            .unwrap()
            .unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let within = Wait::Up(Duration::from_secs(30));
        FileLock::acquire(&path, "rum retry", within)
            .unwrap()
            .unwrap();
        releaser.join().unwrap();
    }

    #[test]
    fn a_blocking_taker_is_told_who_it_waits_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = FileLock::acquire(&path, "rum image pull", Wait::No)
            .unwrap()
            .unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let mut told = None;
        FileLock::acquire_blocking(&path, "rum up", |h| told = Some(h.clone())).unwrap();
        assert_eq!(told.and_then(|h| h.pid()), Some(std::process::id()));
        releaser.join().unwrap();
    }

    #[test]
    fn a_removed_lock_file_is_not_taken_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let file = open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(FileLock::take(file, &path, "rum up").unwrap().is_none());
    }

    #[test]
    fn unreadable_records_are_unknown() {
        assert_eq!(Holder::parse(""), Holder::Unknown);
        assert_eq!(Holder::parse("pid 12"), Holder::Unknown);
        assert_eq!(
            Holder::parse("12 rum up"),
            Holder::Process {
                pid: 12,
                command: "rum up".into()
            }
        );
    }
}
