//! What makes a guest this instance and nothing else: its SSH client key,
//! its SSH host key (generated here so rum can pin it), the cloud-init
//! instance-id and the NIC's MAC address. Created once, kept until destroy.

use crate::instance::{InstancePaths, dirs::create_private_dir};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("Cannot run ssh-keygen to create the VM's SSH keys; install openssh-client")]
    NoKeygen(#[source] std::io::Error),
    #[error("ssh-keygen failed for {}: {stderr}", .path.display())]
    Keygen { path: PathBuf, stderr: String },
    #[error("Cannot read or write {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Instance(#[from] crate::instance::InstanceError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestIdentity {
    /// cloud-init's instance-id: a new one makes cloud-init start over.
    pub instance_id: String,
    pub mac_address: String,
    /// `ssh-ed25519 …` line of the key `rum ssh` logs in with.
    pub client_public: String,
    /// OpenSSH private host key the guest's sshd is given.
    pub host_private: String,
    pub host_public: String,
}

impl GuestIdentity {
    /// Loads the identity, creating whatever part of it is missing.
    pub fn ensure(paths: &InstancePaths) -> Result<Self, IdentityError> {
        create_private_dir(&paths.ssh_dir())?;
        let client = paths.ssh_key();
        let host = paths.ssh_host_key();
        for key in [&client, &host] {
            if !key.exists() {
                keygen(key, &format!("rum@{}", paths.id))?;
            }
        }
        let host_public = read(&public_of(&host))?.trim().to_owned();
        let alias = host_key_alias(paths);
        let known_hosts = format!("{alias} {host_public}\n");
        if read(&paths.known_hosts()).ok().as_deref() != Some(known_hosts.as_str()) {
            write_private(&paths.known_hosts(), known_hosts.as_bytes())?;
        }
        let instance_id_file = paths.cloud_init_instance_id();
        let instance_id = match read(&instance_id_file) {
            Ok(text) => text.trim().to_owned(),
            Err(_) => {
                let fresh = format!("{}-{}", paths.id, random_hex(4)?);
                write_private(&instance_id_file, fresh.as_bytes())?;
                fresh
            }
        };
        Ok(Self {
            instance_id,
            mac_address: mac_address(paths.id.as_str()),
            client_public: read(&public_of(&client))?.trim().to_owned(),
            host_private: read(&host)?,
            host_public,
        })
    }
}

/// The name the pinned host key is filed under in known_hosts, so the pin
/// holds whatever port the SSH forward gets.
pub fn host_key_alias(paths: &InstancePaths) -> String {
    format!("rum-{}", paths.id)
}

/// A locally administered unicast MAC in QEMU's 52:54:00 range, from the instance id.
pub fn mac_address(instance_id: &str) -> String {
    let digest = Sha256::digest(instance_id.as_bytes());
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        digest[0], digest[1], digest[2]
    )
}

fn public_of(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Generates an ed25519 key pair under a temporary name, then renames both
/// halves into place, so a crash never leaves half a pair.
fn keygen(path: &Path, comment: &str) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(public_of(&tmp));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(&tmp)
        .output()
        .map_err(IdentityError::NoKeygen)?;
    if !out.status.success() {
        return Err(IdentityError::Keygen {
            path: path.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    // ssh-keygen leaves the public half 0644; rum's files are the user's alone.
    std::fs::set_permissions(public_of(&tmp), std::fs::Permissions::from_mode(0o600)).map_err(
        |source| IdentityError::Io {
            path: public_of(&tmp),
            source,
        },
    )?;
    rename(&public_of(&tmp), &public_of(path))?;
    rename(&tmp, path)
}

fn rename(from: &Path, to: &Path) -> Result<(), IdentityError> {
    std::fs::rename(from, to).map_err(|source| IdentityError::Io {
        path: to.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a 0600 file atomically.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    crate::fsutil::write_private(path, bytes).map_err(|source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn random_hex(bytes: usize) -> Result<String, IdentityError> {
    let mut buf = vec![0u8; bytes];
    let path = Path::new("/dev/urandom");
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{BaseDirs, InstanceId};
    use std::os::unix::fs::PermissionsExt;

    fn paths(root: &Path) -> InstancePaths {
        let dirs = BaseDirs {
            data: root.join("data"),
            runtime: Some(root.join("run")),
            runtime_fallback: root.join("fallback"),
            cache: root.join("cache"),
        };
        InstancePaths::resolve(InstanceId::new("vm", Path::new("/p/rum.toml")), &dirs).unwrap()
    }

    #[test]
    fn is_created_once_then_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = paths(tmp.path());
        paths.ensure_data_dir().unwrap();
        let first = GuestIdentity::ensure(&paths).unwrap();
        assert!(first.client_public.starts_with("ssh-ed25519 "));
        assert!(first.host_private.contains("BEGIN OPENSSH PRIVATE KEY"));
        assert_ne!(first.client_public, first.host_public);
        assert!(first.instance_id.starts_with(paths.id.as_str()));
        assert_eq!(GuestIdentity::ensure(&paths).unwrap(), first);
        for file in [
            paths.ssh_key(),
            paths.ssh_host_key(),
            paths.known_hosts(),
            paths.cloud_init_instance_id(),
        ] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        let pinned = std::fs::read_to_string(paths.known_hosts()).unwrap();
        assert_eq!(
            pinned,
            format!("{} {}\n", host_key_alias(&paths), first.host_public)
        );
    }

    #[test]
    fn macs_are_stable_and_in_qemus_range() {
        let mac = mac_address("web-12345678");
        assert_eq!(mac, mac_address("web-12345678"));
        assert_ne!(mac, mac_address("web-87654321"));
        assert!(mac.starts_with("52:54:00:") && mac.len() == 17);
    }
}
