//! The permission audit: what rum created is the user's alone.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Every entry at or under `root` that someone other than its owner may
/// read, write or enter, or that another user owns: one line each.
pub fn exposed(root: &Path) -> Vec<String> {
    let uid = nix::unistd::getuid().as_raw();
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            continue;
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 || meta.uid() != uid {
            let what = if kind.is_dir() {
                "dir"
            } else if kind.is_socket() {
                "socket"
            } else {
                "file"
            };
            found.push(format!(
                "{what} {} mode {mode:04o} uid {}",
                path.display(),
                meta.uid()
            ));
        }
        if kind.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            pending.extend(entries.flatten().map(|e| e.path()));
        }
    }
    found.sort();
    found
}
