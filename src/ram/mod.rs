//! Guest RAM in a named shared file on tmpfs, left out of a snapshot's
//! migration stream (QEMU's `x-ignore-shared`) and checkpointed by packed
//! copies beside the disks: where the live file lives, a copy's record, and
//! a checkpoint's save, check and load. tmpfs because a RAM file on a disk filesystem is
//! written back by the kernel while the VM merely runs (`scripts/bench --ram`).

mod copy;
mod packed;
mod sparse;
mod sums;

pub use copy::Copied;

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A snapshot's RAM, copied out of the VM's RAM file beside its disks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamCopy {
    pub file: PathBuf,
    /// Bytes the copy wrote to disk (the rest is holes, or shared blocks).
    pub written: u64,
    /// How the file lays the pages out; records from before say none.
    #[serde(default)]
    pub layout: Layout,
}

/// How a RAM copy lays out the guest's pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// The guest's own: page n at n × 4 KiB, zero pages holes. rum made
    /// these before packed copies; they still load, and a save against one
    /// makes a whole packed copy.
    #[default]
    Guest,
    /// Slots and a map (`packed.rs`): every copy rum makes now.
    Packed,
}

/// Where a VM's RAM lives while it runs, fixed when the VM is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamFile {
    /// The file QEMU maps, shared (virtiofsd maps it too).
    pub live: PathBuf,
    /// Whether the data directory shares blocks between copies (reflink):
    /// each checkpoint is then a copy of the one before plus what changed.
    pub reflink: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RamError {
    #[error(
        "The `{tag}` snapshot's RAM file {} is gone, so the snapshot cannot be restored; the VM was left as it was. `rum snapshot delete {tag}` forgets it", .path.display()
    )]
    Missing { tag: String, path: PathBuf },
    #[error(
        "The `{tag}` snapshot's RAM file {} holds {actual} bytes, not the {expected} it was made with: it was truncated or replaced, so the snapshot cannot be restored; the VM was left as it was. `rum snapshot delete {tag}` forgets it", .path.display()
    )]
    WrongSize {
        tag: String,
        path: PathBuf,
        actual: u64,
        expected: u64,
    },
    #[error(
        "The `{tag}` snapshot's RAM file {} is damaged ({source}): it was truncated, overwritten or replaced, so the snapshot cannot be restored; the VM was left as it was. `rum snapshot delete {tag}` forgets it", .path.display()
    )]
    Damaged {
        tag: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Cannot copy the guest's RAM to {}: {source}", .path.display())]
    Save {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Cannot copy the `{tag}` snapshot's RAM from {}: {source}; the VM is paused with part of it, so restore again or `rum down`", .path.display())]
    Load {
        tag: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} has {free_mib} MiB free, and the VM's RAM ({need_mib} MiB) lives there while it runs; stop another VM or make /dev/shm larger", .dir.display()
    )]
    NoRoom {
        dir: PathBuf,
        free_mib: u64,
        need_mib: u64,
    },
    #[error(transparent)]
    Dir(#[from] crate::instance::InstanceError),
    #[error("Cannot prepare the VM's RAM file {}: {source}", .path.display())]
    Prepare {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where RAM files live: tmpfs, so only memory holds them.
const SHM: &str = "/dev/shm";

/// The RAM file for a new VM `id` of `memory_mb`, or `None` where there is
/// no tmpfs with room for it (its snapshots then hold RAM in the qcow2).
pub fn choose(id: &str, memory_mb: u64, data: &Path) -> Option<RamFile> {
    let dir = Path::new(SHM);
    let stat = nix::sys::statfs::statfs(dir).ok()?;
    if stat.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return None;
    }
    if crate::fsutil::free_bytes(dir)? < memory_mb << 20 {
        return None;
    }
    let uid = nix::unistd::getuid();
    Some(RamFile {
        live: dir.join(format!("rum-{uid}")).join(format!("{id}.ram")),
        reflink: reflinks(data),
    })
}

/// Whether `dir`'s filesystem shares blocks between copies; asked once,
/// when a VM is made, of `cp` (FICLONE needs an ioctl this crate would
/// have to declare unsafely).
fn reflinks(dir: &Path) -> bool {
    let probe = dir.join(".reflink-probe");
    let copy = dir.join(".reflink-probe.copy");
    let made = std::fs::write(&probe, [0u8; 4096]).is_ok();
    let shared = made
        && std::process::Command::new("cp")
            .arg("--reflink=always")
            .args([&probe, &copy])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let _ = std::fs::remove_file(&probe);
    let _ = std::fs::remove_file(&copy);
    shared
}

impl RamError {
    /// A copy that ran out of disk (its half-made file is gone already).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, RamError::Save { source, .. } if source.kind() == io::ErrorKind::StorageFull)
    }
}

impl RamFile {
    /// An empty file of the RAM's size, mode 0600 in a 0700 directory of the
    /// user's, before QEMU starts: no earlier run's memory is left in it.
    pub fn prepare(&self, memory_mb: u64) -> Result<(), RamError> {
        let err = |source| RamError::Prepare {
            path: self.live.clone(),
            source,
        };
        let dir = self.live.parent().expect("a RAM file has a directory");
        crate::instance::dirs::create_owned_private_dir(dir)?;
        let size = memory_mb << 20;
        let held = std::fs::metadata(&self.live).map_or(0, |m| m.blocks() * 512);
        let free = crate::fsutil::free_bytes(dir).unwrap_or(u64::MAX) + held;
        if free < size {
            return Err(RamError::NoRoom {
                dir: dir.to_owned(),
                free_mib: free >> 20,
                need_mib: memory_mb,
            });
        }
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.live)
            .map_err(err)?;
        file.set_len(size).map_err(err)
    }

    /// Frees the memory the file holds (the VM has stopped).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.live);
    }

    /// Bytes the guest has touched: an upper bound on a checkpoint's cost.
    pub fn touched(&self) -> u64 {
        std::fs::metadata(&self.live).map_or(0, |m| m.blocks() * 512)
    }

    /// Copies the live RAM (the VM stopped) to `to.part`, packed;
    /// `Unsynced::finish` (the VM may run again by then) makes it durable
    /// and gives it the name, so no half-made copy ever has it. With
    /// `base`, an earlier packed copy on a filesystem that shares blocks,
    /// the copy shares all its slots and appends the pages that differ.
    pub fn save(&self, to: &Path, base: Option<&RamCopy>) -> Result<Unsynced, RamError> {
        let part = partial(to);
        let copied = (|| {
            let live = File::open(&self.live)?;
            let target = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&part)?;
            let base = base.and_then(|b| packed_base(b, live.metadata().ok()?.len()));
            let copied = packed::save(&live, &target, base, sums::PageHash::fresh())?;
            Ok((target, copied))
        })();
        let unsynced = |(file, (copied, sums))| Unsynced {
            file,
            part: part.clone(),
            to: to.to_owned(),
            copied,
            sums,
        };
        match copied {
            Ok(done) => Ok(unsynced(done)),
            Err(source) => {
                let _ = std::fs::remove_file(&part);
                Err(RamError::Save {
                    path: to.to_owned(),
                    source,
                })
            }
        }
    }

    /// `load` into the empty file of a QEMU about to start, on a thread of
    /// its own: the copy is read while QEMU starts, the whole file asked of
    /// the disk at once so that it is read ahead at the disk's pace.
    pub fn fill(&self, tag: &str, from: &RamCopy) -> Filling {
        let (live, tag, from) = (self.clone(), tag.to_owned(), from.clone());
        Filling(Some(std::thread::spawn(move || {
            if let Ok(file) = File::open(&from.file) {
                let _ = nix::fcntl::posix_fadvise(
                    &file,
                    0,
                    0,
                    nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
                );
            }
            live.load(&tag, &from)
        })))
    }

    /// Puts checkpoint `from` of `tag` back into the live file (the VM
    /// stopped); QEMU's mapping sees it at once.
    pub fn load(&self, tag: &str, from: &RamCopy) -> Result<(), RamError> {
        let path = &from.file;
        let err = |source| RamError::Load {
            tag: tag.to_owned(),
            path: path.clone(),
            source,
        };
        let source = File::open(path).map_err(err)?;
        let live = File::options()
            .read(true)
            .write(true)
            .open(&self.live)
            .map_err(err)?;
        match from.layout {
            Layout::Packed => {
                let map = packed::Map::read(&source).map_err(err)?;
                let sums = sums::Sums::read(path, map.pages() * sparse::PAGE as u64);
                packed::load(&source, &map, sums.as_ref(), &live)
            }
            Layout::Guest => {
                let len = source.metadata().map_err(err)?.len();
                match sums::Sums::read(path, len) {
                    Some(sums) => copy::load_by_sums(&source, &sums, &live),
                    // A copy from before rum kept hashes: compared page by page.
                    None => copy::copy_into(&source, &live, true),
                }
            }
        }
        .map_err(err)?;
        Ok(())
    }
}

/// The packed copy `copy` as the base of the next save of a RAM of `len`
/// bytes, unless it is in the guest's layout, lacks whole hashes, or
/// carries so many dead slots that a fresh copy is due.
fn packed_base(copy: &RamCopy, len: u64) -> Option<packed::Base> {
    if copy.layout != Layout::Packed {
        return None;
    }
    let file = File::open(&copy.file).ok()?;
    let map = packed::Map::read(&file).ok()?;
    if map.wants_compacting() {
        return None;
    }
    let sums = sums::Sums::read(&copy.file, len)?;
    Some(packed::Base { file, map, sums })
}

/// A checkpoint on its way into a new VM's RAM file (`RamFile::fill`).
pub struct Filling(Option<std::thread::JoinHandle<Result<(), RamError>>>);

impl Filling {
    /// Once the file holds the whole checkpoint.
    pub fn wait(mut self) -> Result<(), RamError> {
        let thread = self.0.take().expect("a fill is waited for once");
        thread.join().expect("a RAM fill does not panic")
    }
}

impl Drop for Filling {
    /// A fill not waited for (QEMU failed to start) ends before the file goes.
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

/// A RAM copy made but not yet on disk for certain, under its `.part`
/// name; dropped unfinished, it is removed.
pub struct Unsynced {
    file: File,
    part: PathBuf,
    to: PathBuf,
    copied: Copied,
    sums: sums::Sums,
}

impl Unsynced {
    /// Syncs the copy, then names it: its name always means a whole copy.
    /// Its hashes are named after it, so they never describe another copy;
    /// their cost on disk is added to the copy's.
    pub fn finish(mut self) -> Result<RamCopy, RamError> {
        let synced = (|| {
            self.file.sync_all()?;
            let sums = partial(&sums::path_of(&self.to));
            self.sums.write(&sums)?;
            std::fs::rename(&self.part, &self.to)?;
            std::fs::rename(&sums, sums::path_of(&self.to))?;
            if let Some(dir) = self.to.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(std::fs::metadata(sums::path_of(&self.to))?.blocks() * 512)
        })();
        let sums = synced.map_err(|source| RamError::Save {
            path: self.to.clone(),
            source,
        })?;
        Ok(RamCopy {
            file: self.to.clone(),
            written: self.copied.written + sums,
            layout: Layout::Packed,
        })
    }
}

impl Drop for Unsynced {
    fn drop(&mut self) {
        // After `finish` the parts have their names and this finds nothing.
        let _ = std::fs::remove_file(&self.part);
        let _ = std::fs::remove_file(partial(&sums::path_of(&self.to)));
    }
}

/// A checkpoint `tag` can be loaded only if its file is whole: asked before
/// the VM is touched.
pub fn check(tag: &str, copy: &RamCopy, memory_mb: u64) -> Result<(), RamError> {
    let path = &copy.file;
    let missing = || RamError::Missing {
        tag: tag.to_owned(),
        path: path.clone(),
    };
    let wrong_size = |actual, expected| RamError::WrongSize {
        tag: tag.to_owned(),
        path: path.clone(),
        actual,
        expected,
    };
    let ram = memory_mb << 20;
    match copy.layout {
        Layout::Guest => match std::fs::metadata(path) {
            Ok(m) if m.len() == ram => Ok(()),
            Ok(m) => Err(wrong_size(m.len(), ram)),
            Err(_) => Err(missing()),
        },
        Layout::Packed => {
            let file = File::open(path).map_err(|_| missing())?;
            let actual = file.metadata().map_err(|_| missing())?.len();
            let damaged = |source| RamError::Damaged {
                tag: tag.to_owned(),
                path: path.clone(),
                source,
            };
            let header = packed::Header::read(&file).map_err(damaged)?;
            if header.pages != ram / sparse::PAGE as u64 {
                return Err(damaged(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "it describes {} MiB of RAM",
                        (header.pages * sparse::PAGE as u64) >> 20
                    ),
                )));
            }
            if actual != header.len() {
                return Err(wrong_size(actual, header.len()));
            }
            packed::Map::read(&file).map_err(damaged)?;
            Ok(())
        }
    }
}

/// Removes checkpoint `path` and its hashes.
pub fn remove_copy(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(sums::path_of(path));
}

/// Removes copies in `dir` that a killed rum left half-made.
pub fn remove_partial(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "part") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The name a copy has until it is whole.
pub fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_packed_copy_cut_short_damaged_or_of_another_ram_is_refused_by_name() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ram = RamFile {
            live: shm.path().join("rum").join("live.ram"),
            reflink: false,
        };
        ram.prepare(4).unwrap();
        File::options()
            .write(true)
            .open(&ram.live)
            .unwrap()
            .write_all_at(&[7; 4096], 1 << 20)
            .unwrap();
        let copy = ram.save(&dir.path().join("a.ram"), None).unwrap();
        let copy = copy.finish().unwrap();
        assert_eq!(copy.layout, Layout::Packed);
        check("a", &copy, 4).unwrap();
        let refused = |memory_mb| check("a", &copy, memory_mb).unwrap_err().to_string();
        assert!(
            refused(8).contains("describes 4 MiB of RAM"),
            "{}",
            refused(8)
        );
        let file = File::options().write(true).open(&copy.file).unwrap();
        // A map that is not the one written.
        file.write_all_at(&[1], 4096 + 4).unwrap();
        assert!(refused(4).contains("is damaged"), "{}", refused(4));
        file.set_len(4096 * 2).unwrap();
        let message = refused(4);
        assert!(
            message.contains("truncated") && message.contains(copy.file.to_str().unwrap()),
            "{message}"
        );
        std::fs::remove_file(&copy.file).unwrap();
        assert!(refused(4).contains("is gone"), "{}", refused(4));
        ram.remove();
    }
}
