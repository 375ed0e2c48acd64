//! A small filesystem on a loop device (ext4, XFS, …) for rum's data,
//! unmounted on drop. Needs root; as non-root the test is skipped, but
//! never under `RUM_E2E=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct LoopFs {
    pub mount: PathBuf,
}

impl LoopFs {
    /// A `kind` filesystem of `mib` MiB under `root`.
    pub fn new(root: &Path, kind: &str, mib: u64) -> Self {
        let file = root.join(format!("{kind}.img"));
        let mount = root.join(kind);
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::File::create(&file)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let force = if kind == "ext4" { "-F" } else { "-f" };
        let made = Command::new(format!("mkfs.{kind}"))
            .args(["-q", force])
            .arg(&file)
            .status()
            .unwrap_or_else(|e| panic!("mkfs.{kind}: {e} (scripts/install-prereqs installs it)"));
        assert!(made.success(), "mkfs.{kind} failed");
        let mounted = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&file)
            .arg(&mount)
            .status()
            .unwrap();
        assert!(mounted.success(), "loop mount failed (root needed)");
        Self { mount }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// Whether the test may loop-mount.
pub fn may_mount() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("RUM_E2E").as_deref() != Ok("1"),
        "this test loop-mounts a filesystem: run it as root"
    );
    eprintln!("skipped: needs root for a loop mount");
    false
}
