//! Where rum keeps data, runtime files and cached images, per the XDG base
//! directory spec (relative values are ignored, as the spec says).

use super::error::InstanceError;
use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseDirs {
    /// `$XDG_DATA_HOME/rum`: instance data, kept until `rum destroy`.
    pub data: PathBuf,
    /// `$XDG_RUNTIME_DIR/rum`, or `None` when unset: sockets and pid files.
    pub runtime: Option<PathBuf>,
    /// `/tmp/rum-<uid>`: runtime files when there is no usable runtime dir.
    pub runtime_fallback: PathBuf,
    /// `$XDG_CACHE_HOME/rum`: base images shared by all instances.
    pub cache: PathBuf,
}

impl BaseDirs {
    /// The instances that have a directory under `data`, in no order.
    pub fn instance_ids(&self) -> Vec<super::InstanceId> {
        std::fs::read_dir(&self.data)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| super::InstanceId::parse(e.file_name().to_str()?))
            .collect()
    }

    pub fn from_env() -> Result<Self, InstanceError> {
        Self::from_vars(|name| std::env::var_os(name), current_uid())
    }

    pub fn from_vars(
        var: impl Fn(&str) -> Option<OsString>,
        uid: u32,
    ) -> Result<Self, InstanceError> {
        let absolute = |name: &str| var(name).map(PathBuf::from).filter(|p| p.is_absolute());
        let home = absolute("HOME");
        let under_home = |rel: &str| home.as_ref().map(|h| h.join(rel));
        let data = absolute("XDG_DATA_HOME")
            .or_else(|| under_home(".local/share"))
            .ok_or(InstanceError::NoHome)?;
        let cache = absolute("XDG_CACHE_HOME")
            .or_else(|| under_home(".cache"))
            .ok_or(InstanceError::NoHome)?;
        Ok(Self {
            data: data.join("rum"),
            runtime: absolute("XDG_RUNTIME_DIR").map(|d| d.join("rum")),
            runtime_fallback: PathBuf::from(format!("/tmp/rum-{uid}")),
            cache: cache.join("rum"),
        })
    }
}

pub fn current_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Creates `path` and any missing parents with mode 0700.
pub fn create_private_dir(path: &Path) -> Result<(), InstanceError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| InstanceError::CreateDir {
            path: path.to_path_buf(),
            source,
        })?;
    // DirBuilder leaves an existing directory's mode alone; ours must be private.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
        InstanceError::CreateDir {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Creates a directory in a shared place (such as /tmp) and checks that it
/// is a real directory owned by us with mode 0700, not one planted by another user.
pub fn create_owned_private_dir(path: &Path) -> Result<(), InstanceError> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(InstanceError::CreateDir {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    let meta = std::fs::symlink_metadata(path).map_err(|source| InstanceError::CreateDir {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.mode() & 0o7777;
    if !meta.is_dir() || meta.uid() != current_uid() || mode != 0o700 {
        return Err(InstanceError::UnsafeDir {
            path: path.to_path_buf(),
            owner: meta.uid(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.into())
    }

    #[test]
    fn xdg_vars_win_over_home() {
        let dirs = BaseDirs::from_vars(
            vars(&[
                ("HOME", "/home/u"),
                ("XDG_DATA_HOME", "/d"),
                ("XDG_RUNTIME_DIR", "/run/user/5"),
            ]),
            5,
        )
        .unwrap();
        assert_eq!(dirs.data, Path::new("/d/rum"));
        assert_eq!(dirs.cache, Path::new("/home/u/.cache/rum"));
        assert_eq!(dirs.runtime.as_deref(), Some(Path::new("/run/user/5/rum")));
        assert_eq!(dirs.runtime_fallback, Path::new("/tmp/rum-5"));
    }

    #[test]
    fn relative_xdg_values_are_ignored() {
        let dirs = BaseDirs::from_vars(
            vars(&[
                ("HOME", "/h"),
                ("XDG_DATA_HOME", "rel"),
                ("XDG_RUNTIME_DIR", "x"),
            ]),
            1,
        )
        .unwrap();
        assert_eq!(dirs.data, Path::new("/h/.local/share/rum"));
        assert_eq!(dirs.runtime, None);
    }

    #[test]
    fn no_home_is_an_error() {
        assert!(matches!(
            BaseDirs::from_vars(vars(&[]), 1),
            Err(InstanceError::NoHome)
        ));
    }

    #[test]
    fn private_dirs_are_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn shared_place_dirs_refuse_wrong_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rum-x");
        create_owned_private_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            create_owned_private_dir(&dir),
            Err(InstanceError::UnsafeDir { mode: 0o755, .. })
        ));
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(matches!(
            create_owned_private_dir(&link),
            Err(InstanceError::UnsafeDir { .. })
        ));
    }
}
