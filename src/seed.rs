//! The instance's NoCloud seed: arguments from the config and the guest
//! identity, and the ISO on disk, rebuilt only when its identity changes.

use crate::config::Config;
use crate::identity::{GuestIdentity, IdentityError, write_private};
use crate::instance::InstancePaths;
use rum_seed::{HostKey, MountArgs, Seed, SeedArgs};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Render(#[from] rum_seed::RenderError),
    #[error("Cannot build the seed image")]
    Iso(#[from] rum_seed::iso::IsoError),
    #[error("Cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not empty; give a new or empty directory", .0.display())]
    NotEmpty(PathBuf),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl SeedError {
    pub fn is_usage(&self) -> bool {
        matches!(self, SeedError::NotEmpty(_))
    }
}

/// The seed's inputs for this config and guest.
pub fn args<'a>(config: &Config, guest: &GuestIdentity, agent: &'a [u8]) -> SeedArgs<'a> {
    let mut authorized_keys = vec![guest.client_public.clone()];
    authorized_keys.extend(config.ssh.authorized_keys.iter().cloned());
    SeedArgs {
        instance_id: guest.instance_id.clone(),
        hostname: config.network.hostname.clone(),
        user: config.user.name.clone(),
        groups: config.user.groups.clone(),
        authorized_keys,
        host_key: HostKey {
            private: guest.host_private.clone(),
            public: guest.host_public.clone(),
        },
        mac_address: guest.mac_address.clone(),
        mounts: config
            .mounts
            .iter()
            .map(|m| MountArgs {
                tag: m.tag.clone(),
                target: m.target.clone(),
                readonly: m.readonly,
            })
            .collect(),
        autologin: config.advanced.autologin.then(|| config.user.name.clone()),
        agent: Cow::Borrowed(agent),
    }
}

/// What `ensure_iso` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedImage {
    pub identity: String,
    pub rebuilt: bool,
}

/// Whether `seed.iso` is missing or was built from other inputs than `args`.
pub fn is_stale(paths: &InstancePaths, args: &SeedArgs<'_>) -> Result<bool, SeedError> {
    let seed = Seed::render(args)?;
    let recorded = std::fs::read_to_string(paths.seed_identity()).ok();
    Ok(!paths.seed_iso().is_file()
        || recorded.as_deref().map(str::trim) != Some(seed.identity.as_str()))
}

/// Makes `seed.iso` match `args`, writing it only when its identity differs
/// from the one recorded beside it. The image is replaced atomically.
pub fn ensure_iso(paths: &InstancePaths, args: &SeedArgs<'_>) -> Result<SeedImage, SeedError> {
    let seed = Seed::render(args)?;
    let iso = paths.seed_iso();
    let recorded = std::fs::read_to_string(paths.seed_identity()).ok();
    if iso.is_file() && recorded.as_deref().map(str::trim) == Some(seed.identity.as_str()) {
        return Ok(SeedImage {
            identity: seed.identity,
            rebuilt: false,
        });
    }
    let tmp = iso.with_extension("iso.tmp");
    let write = |path: &Path| -> Result<(), SeedError> {
        let io = |source| SeedError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut file = crate::fsutil::open_private(path, false).map_err(io)?;
        seed.write_iso(&mut file)?;
        file.sync_all().map_err(io)
    };
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &iso).map_err(|source| SeedError::Write {
        path: iso.clone(),
        source,
    })?;
    write_private(&paths.seed_identity(), seed.identity.as_bytes())?;
    Ok(SeedImage {
        identity: seed.identity,
        rebuilt: true,
    })
}

/// Writes the seed's files into `dir` (new or empty) with their modes.
pub fn dump(args: &SeedArgs<'_>, dir: &Path) -> Result<(String, Vec<PathBuf>), SeedError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SeedError::Write { path, source }
    };
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(SeedError::NotEmpty(dir.to_path_buf()));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let seed = Seed::render(args)?;
    let mut written = Vec::new();
    for file in &seed.files {
        let path = dir.join(&file.name);
        std::fs::write(&path, &file.data).map_err(io(&path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
            .map_err(io(&path))?;
        written.push(path);
    }
    Ok((seed.identity, written))
}
