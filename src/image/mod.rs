//! Base images: a local file used in place, or a URL or well-known name
//! downloaded once into the cache, verified against a checksum, and never
//! written again.

pub mod archive;
pub mod baked;
pub mod cache;
pub mod checksum;
pub mod download;
mod error;
pub mod known;
pub mod shown;
pub mod source;

pub use cache::{Cache, CacheLock, Meta};
pub use checksum::Checksum;
pub use download::{Downloader, Observer, Policy};
pub use error::{ExportError, ImageError};
pub use known::Known;
pub use source::{ImageSource, SourceError};

use crate::disk;
use checksum::SUMS_FILES;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Something to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Known(Known),
    Url(String),
}

impl Remote {
    pub fn from_source(source: &ImageSource) -> Result<Option<Self>, ImageError> {
        Ok(match source {
            ImageSource::Path(_) => None,
            ImageSource::Url(url) => Some(Remote::Url(url.clone())),
            ImageSource::Baked(name) => return Err(ImageError::Baked(name.clone())),
            ImageSource::Shorthand(name) => {
                Some(Remote::Known(known::lookup(name).ok_or_else(|| {
                    ImageError::UnknownName { name: name.clone() }
                })?))
            }
        })
    }

    pub fn url(&self) -> &str {
        match self {
            Remote::Known(k) => &k.url,
            Remote::Url(url) => url,
        }
    }

    /// The cache entry: a known image by its name, a URL by its file name
    /// and a hash of the whole URL (two URLs may end alike).
    pub fn entry_name(&self) -> String {
        match self {
            Remote::Known(k) => k.name.to_owned(),
            Remote::Url(url) => {
                let file: String = file_name(url)
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let file = file.trim_start_matches('.');
                let file = if file.is_empty() { "image" } else { file };
                let hash = Sha256::digest(url.as_bytes());
                format!("{file}-{}", checksum::hex(&hash[..4]))
            }
        }
    }
}

/// The last path segment of a URL, without query or fragment.
pub fn file_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

/// A base image as a local file. A cached one stays locked (no `rum image
/// delete`) until this is dropped.
pub struct Resolved {
    pub path: PathBuf,
    pub lock: Option<CacheLock>,
}

/// The local file to use as the base of `source`, downloading it first if needed.
pub fn resolve(
    source: &ImageSource,
    sha256: Option<&Checksum>,
    cache: &Cache,
    downloader: &mut Downloader,
) -> Result<Resolved, ImageError> {
    if let ImageSource::Baked(name) = source {
        let lock = cache.lock(name, |holder| downloader.observer().waiting(holder))?;
        let meta = cache
            .get(name)
            .ok_or_else(|| ImageError::UnknownName { name: name.clone() })?;
        check_cached(&meta, sha256)?;
        return Ok(Resolved {
            path: cache.image_path(name),
            lock: Some(lock),
        });
    }
    match Remote::from_source(source)? {
        None => {
            let ImageSource::Path(path) = source else {
                unreachable!("only paths have no remote")
            };
            verify_local(path, sha256, downloader.observer())?;
            Ok(Resolved {
                path: path.clone(),
                lock: None,
            })
        }
        Some(remote) => fetch(&remote, sha256, cache, downloader),
    }
}

/// The cached image of `remote`, downloaded and verified if not cached yet.
/// One process downloads an entry at a time; the others wait, then reuse it.
pub fn fetch(
    remote: &Remote,
    sha256: Option<&Checksum>,
    cache: &Cache,
    downloader: &mut Downloader,
) -> Result<Resolved, ImageError> {
    let name = remote.entry_name();
    let lock = cache.lock(&name, |holder| downloader.observer().waiting(holder))?;
    let resolved = |lock| Resolved {
        path: cache.image_path(&name),
        lock: Some(lock),
    };
    if let Some(meta) = cache.get(&name) {
        check_cached(&meta, sha256)?;
        return Ok(resolved(lock));
    }
    cache.unstage(&name);
    let (expected, against) = expected_checksum(remote, sha256, downloader)?;
    let url = remote.url();
    let size = downloader.file(url, cache, &name)?;
    let partial = cache.partial_path(&name);
    let observer = downloader.observer();
    crate::testhook::pause("image_verify");
    let digests = checksum::digest_file(
        &partial,
        expected.algorithm == checksum::Algorithm::Sha512,
        |done| observer.verifying(done, size),
    )
    .map_err(|source| ImageError::Read {
        path: partial.clone(),
        source,
    })?;
    if !digests.matches(&expected) {
        cache.discard_partial(&name);
        return Err(ImageError::Mismatch {
            url: url.to_owned(),
            actual: digests
                .get(expected.algorithm)
                .unwrap_or_default()
                .to_owned(),
            expected,
            against,
        });
    }
    if let Err(e) = reject_compressed(&partial, url) {
        cache.discard_partial(&name);
        return Err(e);
    }
    let format = match disk::inspect(&partial) {
        Ok(info) => info.format,
        Err(e) => {
            cache.discard_partial(&name);
            return Err(e.into());
        }
    };
    let downloaded = crate::clock::unix_now();
    cache.commit(
        &name,
        &Meta {
            name: name.clone(),
            source: url.to_owned(),
            size,
            format: format.as_str().to_owned(),
            sha256: digests.sha256,
            verified: expected,
            verified_against: against,
            downloaded,
            baked: None,
        },
    )?;
    Ok(resolved(lock))
}

/// What the download must hash to, and where that came from.
fn expected_checksum(
    remote: &Remote,
    sha256: Option<&Checksum>,
    downloader: &mut Downloader,
) -> Result<(Checksum, String), ImageError> {
    if let Some(sum) = sha256 {
        return Ok((sum.clone(), "`[image] sha256` in rum.toml".to_owned()));
    }
    match remote {
        Remote::Known(known) => {
            let text = downloader
                .text(&known.sums_url)?
                .ok_or_else(|| ImageError::NotFound {
                    url: known.sums_url.clone(),
                })?;
            let sum =
                Checksum::from_sums(&text, &known.file).ok_or_else(|| ImageError::NotInSums {
                    file: known.file.clone(),
                    sums_url: known.sums_url.clone(),
                })?;
            Ok((sum, known.sums_url.clone()))
        }
        Remote::Url(url) => {
            let file = file_name(url);
            let path = url.split(['?', '#']).next().unwrap_or(url);
            let dir = &path[..path.len() - file.len()];
            for sums in SUMS_FILES {
                let sums_url = format!("{dir}{sums}");
                if let Some(text) = downloader.text(&sums_url)?
                    && let Some(sum) = Checksum::from_sums(&text, file)
                {
                    return Ok((sum, sums_url));
                }
            }
            Err(ImageError::NoChecksum { url: url.clone() })
        }
    }
}

fn check_cached(meta: &Meta, sha256: Option<&Checksum>) -> Result<(), ImageError> {
    match sha256 {
        Some(expected) if expected.hex != meta.sha256 => Err(ImageError::CachedMismatch {
            name: meta.name.clone(),
            expected: expected.hex.clone(),
            actual: meta.sha256.clone(),
        }),
        _ => Ok(()),
    }
}

fn verify_local(
    path: &Path,
    sha256: Option<&Checksum>,
    observer: &mut dyn Observer,
) -> Result<(), ImageError> {
    reject_compressed(path, &path.display().to_string())?;
    let Some(expected) = sha256 else {
        return Ok(());
    };
    let read = |source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read)?.len();
    let digests =
        checksum::digest_file(path, false, |done| observer.verifying(done, size)).map_err(read)?;
    if digests.sha256 != expected.hex {
        return Err(ImageError::LocalMismatch {
            path: path.to_path_buf(),
            expected: expected.hex.clone(),
            actual: digests.sha256,
        });
    }
    Ok(())
}

/// Compressed files would otherwise pass for raw disks.
fn reject_compressed(path: &Path, what: &str) -> Result<(), ImageError> {
    use std::io::Read;
    let mut magic = [0u8; 6];
    let mut file = std::fs::File::open(path).map_err(|source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let n = file.read(&mut magic).unwrap_or(0);
    let kind = match &magic[..n] {
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "xz",
        [0x1f, 0x8b, ..] => "gzip",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd",
        [b'B', b'Z', b'h', ..] => "bzip2",
        _ => return Ok(()),
    };
    Err(ImageError::Compressed {
        what: what.to_owned(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        let known = Remote::Known(known::lookup("debian-12").unwrap());
        assert_eq!(known.entry_name(), "debian-12");
        let a = Remote::Url("http://127.0.0.1:8/a/disk.qcow2?x=1".into()).entry_name();
        let b = Remote::Url("http://127.0.0.1:8/b/disk.qcow2".into()).entry_name();
        assert!(
            a.starts_with("disk.qcow2-") && b.starts_with("disk.qcow2-"),
            "{a} {b}"
        );
        assert_ne!(a, b);
        let odd = Remote::Url("http://h/../we ird/".into()).entry_name();
        assert!(odd.starts_with("image-"), "{odd}");
    }

    #[test]
    fn compressed_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.img");
        std::fs::write(&path, [0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2]).unwrap();
        let err = reject_compressed(&path, "x.img").unwrap_err();
        assert!(err.to_string().contains("xz-compressed"), "{err}");
        std::fs::write(&path, b"QFI\xfb....").unwrap();
        reject_compressed(&path, "x.img").unwrap();
    }
}
