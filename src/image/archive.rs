//! `rum image export | import`: a baked image handed to another machine as
//! one tar file, its metadata first (`rum-image.json`, with the SHA-256)
//! and the qcow2 after (`image`). An import streams the image into the
//! cache's work area, checks it against that SHA-256 and against what a
//! baked image is (a qcow2 with no backing file), and only then commits it.

use super::cache::{Cache, Meta};
use super::checksum::Checksum;
use super::error::{ExportError, ImageError};
use crate::instance::BaseDirs;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const META_ENTRY: &str = "rum-image.json";
pub const IMAGE_ENTRY: &str = "image";
/// A metadata entry is a few KiB; anything larger is not one rum wrote.
const META_MAX: u64 = 1 << 20;

/// Writes the cached baked image `name` and its metadata to `file`, which
/// must not exist; written beside it and renamed, so it is whole or absent.
pub fn export(cache: &Cache, name: &str, file: &Path) -> Result<Meta, ImageError> {
    let meta = cache.get(name).ok_or_else(|| ImageError::NotCached {
        name: name.to_owned(),
    })?;
    if meta.baked.is_none() {
        return Err(ExportError::NotBaked(name.to_owned()).into());
    }
    if file.symlink_metadata().is_ok() {
        return Err(ExportError::Exists(file.to_path_buf()).into());
    }
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let needed = meta.size + META_MAX;
    let free = crate::fsutil::free_bytes(&dir).unwrap_or(u64::MAX);
    if free < needed {
        return Err(ImageError::DiskFull { dir, needed, free });
    }
    let partial = dir.join(format!(
        ".{}.partial",
        file.file_name().unwrap_or_default().to_string_lossy()
    ));
    let written = write_archive(&partial, &meta, &cache.image_path(name)).and_then(|()| {
        crate::testhook::pause("export_commit");
        std::fs::rename(&partial, file)
    });
    if let Err(source) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(ImageError::CacheWrite {
            path: file.to_path_buf(),
            source,
        });
    }
    Ok(meta)
}

/// Imports the export `file` into the cache as `name` (else the name it
/// was exported under); an image of that name is replaced only with
/// `force`, and never while a VM stands on it.
pub fn import(
    cache: &Cache,
    dirs: &BaseDirs,
    file: &Path,
    name: Option<&str>,
    force: bool,
) -> Result<Meta, ImageError> {
    let mut meta = read_meta(file)?;
    let name = name.unwrap_or(&meta.name).to_owned();
    super::baked::check_name(&name).map_err(ExportError::from)?;
    let _lock = cache.try_lock(&name)?.map_err(|holder| ImageError::Busy {
        name: name.clone(),
        holder,
    })?;
    let replacing = cache.get(&name).is_some();
    if replacing {
        if !force {
            return Err(ExportError::Taken(name).into());
        }
        let users = super::cache::users(dirs, &cache.image_path(&name));
        if !users.is_empty() {
            return Err(ImageError::InUse { name, users });
        }
    }
    let work = Work(cache.work_dir(&name));
    let _ = std::fs::remove_dir_all(&work.0);
    crate::fsutil::create_private_dir_all(&work.0).map_err(|source| ImageError::CacheWrite {
        path: work.0.clone(),
        source,
    })?;
    let needed = meta.size;
    let free = crate::fsutil::free_bytes(&work.0).unwrap_or(u64::MAX);
    if free < needed {
        return Err(ImageError::DiskFull {
            dir: cache.root().to_path_buf(),
            needed,
            free,
        });
    }
    let image = work.0.join("image");
    unpack_image(file, &meta, &image)?;
    standalone(file, &image)?;
    meta.name = name.clone();
    meta.source = format!("{}, imported from {}", meta.source, file.display());
    meta.verified_against = format!("the SHA-256 in {}", file.display());
    meta.downloaded = crate::clock::unix_now();
    crate::testhook::pause("import_commit");
    if replacing {
        cache.remove(&name)?;
    }
    cache.commit_file(&name, &image, &meta)?;
    Ok(meta)
}

/// The work dir, removed however the import ends.
struct Work(PathBuf);

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A baked image is a qcow2 that stands alone: a backing file named in an
/// imported image would let a guest read a host file.
fn standalone(file: &Path, image: &Path) -> Result<(), ImageError> {
    let refuse = |why: String| -> ImageError {
        ExportError::NotStandalone {
            path: file.to_path_buf(),
            why,
        }
        .into()
    };
    let info = crate::disk::inspect(image)?;
    if info.format != crate::disk::ImageFormat::Qcow2 {
        return Err(refuse(format!("it is {}", info.format.as_str())));
    }
    if let Some(backing) = crate::disk::backing_file(image)? {
        return Err(refuse(format!(
            "it names {} as its backing file",
            backing.display()
        )));
    }
    Ok(())
}

fn write_archive(path: &Path, meta: &Meta, image: &Path) -> io::Result<()> {
    // Private like the cache: the image holds whatever the VM held.
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, out));
    let json = serde_json::to_vec_pretty(meta).expect("meta serializes");
    tar.append_data(&mut header(json.len() as u64, meta), META_ENTRY, &json[..])?;
    let mut source = File::open(image)?;
    let size = source.metadata()?.len();
    tar.append_data(&mut header(size, meta), IMAGE_ENTRY, &mut source)?;
    let out = tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()
}

fn header(size: u64, meta: &Meta) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(meta.downloaded);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// Reads the metadata at the head of an export, without the image.
pub fn read_meta(file: &Path) -> Result<Meta, ImageError> {
    let mut archive = open(file)?;
    let mut entries = archive.entries().map_err(read_error(file))?;
    meta_entry(file, &mut entries)
}

/// Streams the image of the export `file` into `dest` (a new file in the
/// cache's work area), checking it is the image its metadata names.
pub fn unpack_image(file: &Path, meta: &Meta, dest: &Path) -> Result<(), ImageError> {
    let mut archive = open(file)?;
    let mut entries = archive.entries().map_err(read_error(file))?;
    meta_entry(file, &mut entries)?;
    let not_export = |why: &str| ExportError::NotAnExport {
        path: file.to_path_buf(),
        why: why.to_owned(),
    };
    let mut entry = entries
        .next()
        .ok_or_else(|| not_export("it ends after its metadata"))?
        .map_err(read_error(file))?;
    if entry.path_bytes().as_ref() != IMAGE_ENTRY.as_bytes() {
        return Err(not_export("its second entry is not `image`").into());
    }
    if entry.size() != meta.size {
        return Err(ExportError::Damaged {
            path: file.to_path_buf(),
            what: format!(
                "its image has {} bytes, its metadata says {}",
                entry.size(),
                meta.size
            ),
        }
        .into());
    }
    let write = |source| ImageError::CacheWrite {
        path: dest.to_path_buf(),
        source,
    };
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(write)?;
    let mut sha256 = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(file)(e)),
        };
        sha256.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(write)?;
    }
    out.sync_all().map_err(write)?;
    let actual = hex(&sha256.finalize());
    let expected = Checksum::sha256(&meta.sha256);
    if expected.as_ref().is_none_or(|c| c.hex != actual) {
        return Err(ExportError::Damaged {
            path: file.to_path_buf(),
            what: format!(
                "its image has SHA-256 {actual}, its metadata says {}",
                meta.sha256
            ),
        }
        .into());
    }
    Ok(())
}

fn open(file: &Path) -> Result<tar::Archive<File>, ImageError> {
    let f = File::open(file).map_err(read_error(file))?;
    Ok(tar::Archive::new(f))
}

fn read_error(file: &Path) -> impl Fn(io::Error) -> ImageError + '_ {
    move |source| ImageError::Read {
        path: file.to_path_buf(),
        source,
    }
}

fn meta_entry<R: Read>(file: &Path, entries: &mut tar::Entries<'_, R>) -> Result<Meta, ImageError> {
    let not_export = |why: String| -> ImageError {
        ExportError::NotAnExport {
            path: file.to_path_buf(),
            why,
        }
        .into()
    };
    let mut entry = match entries.next() {
        Some(Ok(entry)) => entry,
        Some(Err(e)) => return Err(not_export(format!("not a tar file: {e}"))),
        None => return Err(not_export("it is empty".into())),
    };
    if entry.path_bytes().as_ref() != META_ENTRY.as_bytes() || entry.size() > META_MAX {
        return Err(not_export(format!("it does not begin with `{META_ENTRY}`")));
    }
    let mut json = Vec::new();
    entry.read_to_end(&mut json).map_err(read_error(file))?;
    let meta: Meta = serde_json::from_slice(&json)
        .map_err(|e| not_export(format!("its `{META_ENTRY}` does not parse: {e}")))?;
    if meta.baked.is_none() {
        return Err(not_export("it holds no baked image".into()));
    }
    Ok(meta)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::baked::Provenance;

    fn meta(image: &[u8]) -> Meta {
        let sha256 = hex(&Sha256::digest(image));
        Meta {
            name: "golden".into(),
            source: "baked from x".into(),
            size: image.len() as u64,
            format: "qcow2".into(),
            verified: Checksum::sha256(&sha256).unwrap(),
            sha256,
            verified_against: "its own digest".into(),
            downloaded: 1,
            baked: Some(Box::new(Provenance {
                instance: "x".into(),
                snapshot: None,
                config: "/p/rum.toml".into(),
                steps: vec![],
                keep_agent: false,
            })),
        }
    }

    #[test]
    fn an_export_reads_back_and_a_changed_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&image, &bytes).unwrap();
        let meta = meta(&bytes);
        let file = dir.path().join("golden.tar");
        write_archive(&file, &meta, &image).unwrap();

        assert_eq!(read_meta(&file).unwrap(), meta);
        let dest = dir.path().join("out");
        unpack_image(&file, &meta, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);

        // One byte of the image changed in transit.
        let mut archive = std::fs::read(&file).unwrap();
        let at = archive.len() - 2048;
        archive[at] ^= 1;
        std::fs::write(&file, &archive).unwrap();
        let dest = dir.path().join("out2");
        let err = unpack_image(&file, &meta, &dest).unwrap_err();
        assert!(err.to_string().contains("is damaged"), "{err}");
    }

    #[test]
    fn other_files_are_not_exports() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x");
        std::fs::write(&file, b"hello").unwrap();
        let err = read_meta(&file).unwrap_err();
        assert!(err.to_string().contains("is not an image"), "{err}");
        std::fs::write(&file, b"").unwrap();
        assert!(read_meta(&file).is_err());
    }
}
