//! Writing rum's own files: private (0600) and atomic (a temporary file,
//! synced, then renamed), so a crash never leaves a half-written one.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let written = replace_with(path, Path::new(&tmp), bytes);
    if written.is_err() {
        // A full disk must not leave a torn `.tmp` behind, taking more space.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn replace_with(path: &Path, tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

/// Creates `dir` and its missing parents, each 0700: what rum keeps is the
/// user's alone, whatever the umask.
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Opens `path` for writing (created 0600 if missing): `append`, or
/// truncated.
pub fn open_private(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .mode(0o600)
        .open(path)
}

/// What a data dir keeps aside: QEMU needs a few clusters to delete an
/// internal snapshot, so on a disk filled to the last byte the delete that
/// would free space fails without them.
const RESERVE: i64 = 8 << 20;

/// Allocates the reserve at `path` unless it is there; best effort.
pub fn reserve(path: &Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == RESERVE as u64) {
        return;
    }
    let made = open_private(path, false).and_then(|file| {
        nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, RESERVE)
            .map_err(std::io::Error::from)
    });
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// Gives the reserve back to the filesystem; whether there was one.
pub fn release_reserve(path: &Path) -> bool {
    std::fs::remove_file(path).is_ok()
}

/// Bytes an unprivileged user may still write on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_reserve_takes_real_blocks_and_is_given_back() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reserve");
        reserve(&path);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), RESERVE as u64);
        assert!(
            meta.blocks() * 512 >= RESERVE as u64,
            "allocated, not sparse"
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(release_reserve(&path));
        assert!(!release_reserve(&path));
    }

    #[test]
    fn replaces_the_file_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file is left"
        );
    }
}
