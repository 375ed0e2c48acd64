//! The one place that names every file of an instance.

use super::dirs::BaseDirs;
use super::dirs::{create_owned_private_dir, create_private_dir};
use super::error::InstanceError;
use super::id::InstanceId;
use super::lock::{InstanceLock, LockWait};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// `sun_path` holds 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;
/// The longest socket file name rum uses (virtiofs sockets are numbered).
const LONGEST_SOCKET_NAME: &str = "fs999.sock";
/// The disk overlay's name in an instance's data directory.
pub const OVERLAY_FILE: &str = "disk.qcow2";
/// The record of a provisioning attempt, in its log directory.
pub const ATTEMPT_RESULT: &str = "result.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstancePaths {
    pub id: InstanceId,
    /// Kept until `rum destroy`: disks, seed, NVRAM, state, logs, keys.
    pub data: PathBuf,
    /// Gone on reboot: sockets and pid files.
    pub runtime: PathBuf,
}

impl InstancePaths {
    /// Picks the directories without creating anything. The runtime directory
    /// is the first candidate whose socket paths fit the Unix socket limit:
    /// `$XDG_RUNTIME_DIR/rum/<id>`, then the same with the short id, then the
    /// `/tmp/rum-<uid>` fallback with each.
    pub fn resolve(id: InstanceId, dirs: &BaseDirs) -> Result<Self, InstanceError> {
        let roots = dirs
            .runtime
            .iter()
            .chain(std::iter::once(&dirs.runtime_fallback));
        let candidates: Vec<PathBuf> = roots
            .flat_map(|root| [root.join(id.as_str()), root.join(id.short())])
            .collect();
        let fits = |dir: &PathBuf| socket_len(dir) <= MAX_SOCKET_PATH;
        let runtime = match candidates.iter().find(|d| fits(d)) {
            Some(dir) => dir.clone(),
            None => {
                let shortest = candidates
                    .last()
                    .expect("at least the fallback")
                    .join(LONGEST_SOCKET_NAME);
                let len = shortest.as_os_str().len();
                return Err(InstanceError::SocketPathTooLong {
                    path: shortest,
                    len,
                    limit: MAX_SOCKET_PATH,
                });
            }
        };
        Ok(Self {
            data: dirs.data.join(id.as_str()),
            id,
            runtime,
        })
    }

    /// Creates the data directory (0700) if missing.
    /// Space set aside for a snapshot delete on a full disk (`fsutil::reserve`).
    pub fn reserve(&self) -> PathBuf {
        self.data.join("reserve")
    }

    pub fn ensure_data_dir(&self) -> Result<(), InstanceError> {
        create_private_dir(&self.data)
    }

    /// Creates the runtime directory (0700), checking ownership of a shared parent.
    pub fn ensure_runtime_dir(&self, dirs: &BaseDirs) -> Result<(), InstanceError> {
        if self.runtime.starts_with(&dirs.runtime_fallback) {
            create_owned_private_dir(&dirs.runtime_fallback)?;
        }
        create_private_dir(&self.runtime)
    }

    pub fn exists(&self) -> bool {
        self.data.is_dir()
    }

    /// Whether the data directory holds nothing but the lock file: nothing of
    /// a VM has been made yet. Only the lock's holder may ask.
    pub fn is_fresh(&self) -> Result<bool, InstanceError> {
        let lock = self.lock_file();
        let entries = std::fs::read_dir(&self.data).map_err(|source| InstanceError::ReadDir {
            path: self.data.clone(),
            source,
        })?;
        Ok(entries.flatten().all(|e| e.path() == lock))
    }

    pub fn lock_file(&self) -> PathBuf {
        self.data.join("lock")
    }

    /// Takes the instance's lock for `command` (e.g. "rum up").
    pub fn lock(&self, command: &str, wait: LockWait) -> Result<InstanceLock, InstanceError> {
        InstanceLock::acquire(&self.lock_file(), self.id.as_str(), command, wait)
    }

    /// What rum.toml stated when each fact was applied (`drift::Applied`).
    pub fn applied(&self) -> PathBuf {
        self.data.join("applied.json")
    }

    pub fn state_file(&self) -> PathBuf {
        self.data.join("state.json")
    }

    pub fn overlay(&self) -> PathBuf {
        self.data.join(OVERLAY_FILE)
    }

    pub fn drives_dir(&self) -> PathBuf {
        self.data.join("drives")
    }

    pub fn drive(&self, name: &str) -> PathBuf {
        self.drives_dir().join(format!("{name}.qcow2"))
    }

    pub fn seed_iso(&self) -> PathBuf {
        self.data.join("seed.iso")
    }

    pub fn nvram(&self) -> PathBuf {
        self.data.join("nvram.fd")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.data.join("logs")
    }

    /// Where each provisioning attempt keeps its logs.
    pub fn attempts_dir(&self) -> PathBuf {
        self.logs_dir().join("provision")
    }

    pub fn attempt_dir(&self, number: u32) -> PathBuf {
        self.attempts_dir().join(format!("{number:04}"))
    }

    /// What attempt `number` did, written once it is over.
    pub fn attempt_result(&self, number: u32) -> PathBuf {
        self.attempt_dir(number).join(ATTEMPT_RESULT)
    }

    pub fn serial_log(&self) -> PathBuf {
        self.logs_dir().join("serial.log")
    }

    /// What QEMU printed: its errors, and who stopped it.
    pub fn qemu_log(&self) -> PathBuf {
        self.logs_dir().join("qemu.log")
    }

    pub fn ssh_dir(&self) -> PathBuf {
        self.data.join("ssh")
    }

    pub fn ssh_key(&self) -> PathBuf {
        self.ssh_dir().join("id_ed25519")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.ssh_dir().join("known_hosts")
    }

    /// The guest's SSH host key (private half; `.pub` beside it).
    pub fn ssh_host_key(&self) -> PathBuf {
        self.ssh_dir().join("host_ed25519")
    }

    pub fn cloud_init_instance_id(&self) -> PathBuf {
        self.data.join("instance-id")
    }

    /// The identity of the seed in `seed_iso`, written after the image.
    pub fn seed_identity(&self) -> PathBuf {
        self.data.join("seed.iso.id")
    }

    /// Which rum.toml the instance belongs to (`rum list`).
    pub fn project_record(&self) -> PathBuf {
        self.data.join("project.json")
    }

    /// The rum.toml `rum up` recorded for the instance, if it did.
    pub fn recorded_config(&self) -> Option<PathBuf> {
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.project_record()).ok()?).ok()?;
        Some(PathBuf::from(record["config"].as_str()?))
    }

    /// A copy of that rum.toml, for `--instance` once the project is gone.
    pub fn saved_config(&self) -> PathBuf {
        self.data.join("rum.toml")
    }

    /// Where a snapshot keeps the guest's RAM when the VM's RAM is a file.
    pub fn ram_checkpoint(&self, tag: &str) -> PathBuf {
        self.data.join("ram").join(format!("{tag}.ram"))
    }

    /// Present while rum holds the VM paused to copy its RAM: a rum killed
    /// meanwhile leaves it, and the next snapshot command lets the VM go on.
    pub fn paused_marker(&self) -> PathBuf {
        self.runtime.join("paused-by-rum")
    }

    /// The guest's serial console, for `rum console` (also logged to
    /// `serial_log`).
    pub fn console_socket(&self) -> PathBuf {
        self.runtime.join("tty.sock")
    }

    pub fn qmp_socket(&self) -> PathBuf {
        self.runtime.join("qmp.sock")
    }

    pub fn agent_socket(&self) -> PathBuf {
        self.runtime.join("agent.sock")
    }

    pub fn qemu_pid(&self) -> PathBuf {
        self.runtime.join("qemu.pid")
    }

    pub fn virtiofs_socket(&self, index: usize) -> PathBuf {
        self.runtime.join(format!("fs{index}.sock"))
    }

    pub fn virtiofsd_pid(&self, index: usize) -> PathBuf {
        self.runtime.join(format!("fs{index}.pid"))
    }

    /// The virtiofsd pid files in the runtime dir, however many mounts the
    /// VM was started with.
    pub fn virtiofsd_pid_files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.runtime) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.strip_prefix("fs")
                    .and_then(|n| n.strip_suffix(".pid"))
                    .is_some_and(|n| n.parse::<usize>().is_ok())
            })
            .collect()
    }

    pub fn virtiofsd_log(&self, index: usize) -> PathBuf {
        self.logs_dir().join(format!("virtiofsd-{index}.log"))
    }

    /// What the running VM was started with (ports, accelerator, …).
    /// The QMP socket of a QEMU started only to change a stopped VM's
    /// snapshots; in the runtime dir (short paths; the data disk may be full).
    pub fn offline_qmp_socket(&self) -> PathBuf {
        self.runtime.join("offline-qmp.sock")
    }

    pub fn runtime_info(&self) -> PathBuf {
        self.runtime.join("vm.json")
    }
}

fn socket_len(dir: &Path) -> usize {
    dir.join(LONGEST_SOCKET_NAME).as_os_str().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(runtime: Option<&str>) -> BaseDirs {
        BaseDirs {
            data: "/home/u/.local/share/rum".into(),
            runtime: runtime.map(PathBuf::from),
            runtime_fallback: "/tmp/rum-1000".into(),
            cache: "/home/u/.cache/rum".into(),
        }
    }

    fn id() -> InstanceId {
        InstanceId::new(&"a".repeat(64), Path::new("/p/rum.toml"))
    }

    #[test]
    fn prefers_the_xdg_runtime_dir() {
        let paths = InstancePaths::resolve(id(), &dirs(Some("/run/user/1000/rum"))).unwrap();
        assert_eq!(
            paths.runtime,
            Path::new("/run/user/1000/rum").join(id().as_str())
        );
        assert_eq!(
            paths.data,
            Path::new("/home/u/.local/share/rum").join(id().as_str())
        );
    }

    #[test]
    fn long_runtime_dirs_fall_back_to_short_paths() {
        let long = format!("/{}", "r".repeat(60));
        let paths = InstancePaths::resolve(id(), &dirs(Some(&long))).unwrap();
        assert_eq!(paths.runtime, Path::new(&long).join(id().short()));
        let longer = format!("/{}", "r".repeat(100));
        let paths = InstancePaths::resolve(id(), &dirs(Some(&longer))).unwrap();
        assert!(paths.runtime.starts_with("/tmp/rum-1000"));
        for socket in [
            paths.qmp_socket(),
            paths.agent_socket(),
            paths.virtiofs_socket(999),
        ] {
            assert!(
                socket.as_os_str().len() <= MAX_SOCKET_PATH,
                "{}",
                socket.display()
            );
        }
    }

    #[test]
    fn hopeless_lengths_are_reported() {
        let mut d = dirs(None);
        d.runtime_fallback = PathBuf::from(format!("/{}", "t".repeat(110)));
        let err = InstancePaths::resolve(id(), &d).unwrap_err();
        assert!(err.to_string().contains("XDG_RUNTIME_DIR"));
    }
}
