//! The image cache, `$XDG_CACHE_HOME/rum/images/`:
//!
//! - `<name>/image` and `<name>/meta.json`: a verified image, read-only, never
//!   written again. The directory appears by one rename, so it is whole or absent.
//! - `.partial/<name>` and `.partial/<name>.json`: a download in progress,
//!   kept across runs so that the next one resumes it.
//! - `.locks/<name>`: held by whoever downloads or deletes `<name>`.

use super::checksum::Checksum;
use super::error::ImageError;
use crate::instance::BaseDirs;
use crate::lock::{FileLock, Holder, Wait};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What rum knows of a verified image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub name: String,
    /// The URL it came from.
    pub source: String,
    pub size: u64,
    pub format: String,
    /// Always computed, whatever the image was verified against.
    pub sha256: String,
    /// The checksum it matched.
    pub verified: Checksum,
    /// Where that checksum came from: a sums file's URL, or `rum.toml`.
    pub verified_against: String,
    /// Unix time (seconds).
    pub downloaded: u64,
    /// For an image rum baked from a VM: where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baked: Option<Box<super::baked::Provenance>>,
}

/// Resume information of a partial download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialMeta {
    pub source: String,
    /// ETag or Last-Modified of the response the bytes came from.
    pub validator: Option<String>,
    pub total: Option<u64>,
}

pub struct Cache {
    root: PathBuf,
}

/// One line of `rum image list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub name: String,
    #[serde(flatten)]
    pub state: ListedState,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ListedState {
    Verified {
        #[serde(flatten)]
        meta: Meta,
        path: PathBuf,
    },
    Partial {
        source: Option<String>,
        bytes: u64,
        total: Option<u64>,
    },
}

/// Held while one process downloads, commits or deletes an entry.
pub struct CacheLock {
    _lock: FileLock,
}

impl Cache {
    pub fn new(dirs: &BaseDirs) -> Self {
        Self {
            root: dirs.cache.join("images"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn image_path(&self, name: &str) -> PathBuf {
        self.root.join(name).join("image")
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.root.join(name).join("meta.json")
    }

    pub fn partial_path(&self, name: &str) -> PathBuf {
        self.root.join(".partial").join(name)
    }

    fn partial_meta_path(&self, name: &str) -> PathBuf {
        self.root.join(".partial").join(format!("{name}.json"))
    }

    fn lock_path(&self, name: &str) -> PathBuf {
        self.root.join(".locks").join(name)
    }

    /// A verified entry; `None` when absent or incomplete.
    pub fn get(&self, name: &str) -> Option<Meta> {
        let meta: Meta = serde_json::from_slice(&std::fs::read(self.meta_path(name)).ok()?).ok()?;
        self.image_path(name).is_file().then_some(meta)
    }

    /// A partial download's resume information and its length so far.
    pub fn partial(&self, name: &str) -> Option<(PartialMeta, u64)> {
        let bytes = std::fs::metadata(self.partial_path(name)).ok()?.len();
        Some((self.partial_meta(name)?, bytes))
    }

    fn partial_meta(&self, name: &str) -> Option<PartialMeta> {
        serde_json::from_slice(&std::fs::read(self.partial_meta_path(name)).ok()?).ok()
    }

    /// Starts (or continues) a partial download: the file opened for appending.
    pub fn open_partial(
        &self,
        name: &str,
        meta: &PartialMeta,
        keep: bool,
    ) -> Result<File, ImageError> {
        let path = self.partial_path(name);
        create_dir(path.parent().expect("under .partial"))?;
        let write = |source| ImageError::CacheWrite {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(write)?;
        if !keep {
            file.set_len(0).map_err(write)?;
        }
        let json = serde_json::to_vec_pretty(meta).expect("partial meta serializes");
        crate::fsutil::write_private(&self.partial_meta_path(name), &json).map_err(|source| {
            ImageError::CacheWrite {
                path: self.partial_meta_path(name),
                source,
            }
        })?;
        Ok(file)
    }

    /// A whole download a killed rum left staged half-way into the cache
    /// goes back to being the partial download, to be verified again
    /// rather than fetched again.
    pub fn unstage(&self, name: &str) {
        let stage = self.stage_path(name);
        let image = stage.join("image");
        let partial = self.partial_path(name);
        if image.exists() && !partial.exists() {
            let _ = std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o600));
            let _ = std::fs::rename(&image, &partial);
        }
        let _ = std::fs::remove_dir_all(&stage);
    }

    fn stage_path(&self, name: &str) -> PathBuf {
        self.root.join(".partial").join(format!("{name}.entry"))
    }

    pub fn discard_partial(&self, name: &str) {
        let _ = std::fs::remove_file(self.partial_path(name));
        let _ = std::fs::remove_file(self.partial_meta_path(name));
    }

    /// Moves a verified partial download into the cache: staged beside it,
    /// made read-only, then renamed into place in one step.
    pub fn commit(&self, name: &str, meta: &Meta) -> Result<(), ImageError> {
        self.commit_file(name, &self.partial_path(name), meta)?;
        let _ = std::fs::remove_file(self.partial_meta_path(name));
        Ok(())
    }

    /// Where `rum image bake` works on `name` before it commits it; on the
    /// cache's filesystem, so the image moves in by rename.
    pub fn work_dir(&self, name: &str) -> PathBuf {
        self.root.join(".partial").join(format!("{name}.bake"))
    }

    /// Names of the images whose bake work dirs are on disk (a bake at work,
    /// or one a killed rum left).
    pub fn bake_work_names(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join(".partial"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".bake").map(str::to_owned))
            .collect()
    }

    /// Moves the finished image `file` into the cache as `name`: staged
    /// beside it, made read-only, then renamed into place in one step.
    pub fn commit_file(&self, name: &str, file: &Path, meta: &Meta) -> Result<(), ImageError> {
        let stage = self.stage_path(name);
        let write = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ImageError::CacheWrite { path, source }
        };
        let _ = std::fs::remove_dir_all(&stage);
        create_dir(&stage)?;
        let image = stage.join("image");
        std::fs::rename(file, &image).map_err(write(&image))?;
        crate::testhook::pause("image_commit");
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o400))
            .map_err(write(&image))?;
        let json = serde_json::to_vec_pretty(meta).expect("meta serializes");
        crate::fsutil::write_private(&stage.join("meta.json"), &json)
            .map_err(write(&stage.join("meta.json")))?;
        let dest = self.root.join(name);
        std::fs::rename(&stage, &dest).map_err(write(&dest))?;
        Ok(())
    }

    /// Removes an entry and any partial download of it.
    pub fn remove(&self, name: &str) -> Result<(), ImageError> {
        let dir = self.root.join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ImageError::CacheWrite { path: dir, source }),
        }
        self.discard_partial(name);
        let _ = std::fs::remove_dir_all(self.stage_path(name));
        Ok(())
    }

    /// Every verified entry and every partial download, by name.
    pub fn list(&self) -> Vec<Listed> {
        let mut names: Vec<String> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        let partials = std::fs::read_dir(self.root.join(".partial"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                ![".json", ".entry", ".tmp", ".bake"]
                    .iter()
                    .any(|ext| n.ends_with(ext))
            });
        names.extend(partials);
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|name| {
                let state = if let Some(meta) = self.get(&name) {
                    ListedState::Verified {
                        meta,
                        path: self.image_path(&name),
                    }
                } else {
                    let bytes = std::fs::metadata(self.partial_path(&name)).ok()?.len();
                    let partial = self.partial_meta(&name);
                    ListedState::Partial {
                        source: partial.as_ref().map(|m| m.source.clone()),
                        bytes,
                        total: partial.and_then(|m| m.total),
                    }
                };
                Some(Listed { name, state })
            })
            .collect()
    }

    /// Takes the entry's lock, waiting for another holder; `waiting` is told
    /// who holds it before the wait starts.
    pub fn lock(&self, name: &str, waiting: impl FnOnce(&str)) -> Result<CacheLock, ImageError> {
        let path = self.lock_path(name);
        create_dir(path.parent().expect("under .locks"))?;
        let lock = FileLock::acquire_blocking(&path, HOLDER, |h| waiting(&holder_text(h)))
            .map_err(|source| ImageError::CacheWrite { path, source })?;
        Ok(CacheLock { _lock: lock })
    }

    /// Takes the entry's lock if free; otherwise says who holds it.
    pub fn try_lock(&self, name: &str) -> Result<Result<CacheLock, String>, ImageError> {
        let path = self.lock_path(name);
        create_dir(path.parent().expect("under .locks"))?;
        match FileLock::acquire(&path, HOLDER, Wait::No) {
            Ok(Ok(lock)) => Ok(Ok(CacheLock { _lock: lock })),
            Ok(Err(holder)) => Ok(Err(holder_text(&holder))),
            Err(source) => Err(ImageError::CacheWrite { path, source }),
        }
    }
}

/// What an image lock's holder record names: any rum command may hold it.
const HOLDER: &str = "rum";

/// How an image's holder is named to the user.
fn holder_text(holder: &Holder) -> String {
    match holder.pid() {
        Some(pid) => format!("another rum (pid {pid})"),
        None => "another rum".to_owned(),
    }
}

fn create_dir(path: &Path) -> Result<(), ImageError> {
    crate::instance::dirs::create_private_dir(path).map_err(|e| match e {
        crate::instance::InstanceError::CreateDir { path, source } => {
            ImageError::CacheWrite { path, source }
        }
        other => ImageError::CacheWrite {
            path: path.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}

/// Instances whose disk overlay is backed by `image`, by instance id.
pub fn users(dirs: &BaseDirs, image: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(&dirs.data)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let overlay = e.path().join(crate::instance::OVERLAY_FILE);
            matches!(crate::disk::backing_file(&overlay), Ok(Some(b)) if b == image)
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    found.sort();
    found
}
