//! Telling qcow2 from raw by content, never by file name.

use super::error::DiskError;
use std::io::Read;
use std::path::Path;

pub(super) const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Qcow2,
    Raw,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: ImageFormat,
    /// The size the guest sees, in bytes.
    pub virtual_size: u64,
    /// Internal snapshots (qcow2 only).
    pub snapshots: u32,
}

/// Reads the header of `path`: qcow2 if it starts with the qcow2 magic, else raw.
pub fn inspect(path: &Path) -> Result<ImageInfo, DiskError> {
    let read = |source| DiskError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read)?;
    let mut header = [0u8; 72];
    let len = read_up_to(&mut file, &mut header).map_err(read)?;
    if len >= 72 && header[..4] == QCOW2_MAGIC {
        let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
        let version = be32(4);
        if !(2..=3).contains(&version) {
            return Err(DiskError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        let virtual_size = u64::from_be_bytes(header[24..32].try_into().expect("8 bytes"));
        return Ok(ImageInfo {
            format: ImageFormat::Qcow2,
            virtual_size,
            snapshots: be32(60),
        });
    }
    let size = file.metadata().map_err(read)?.len();
    Ok(ImageInfo {
        format: ImageFormat::Raw,
        virtual_size: size,
        snapshots: 0,
    })
}

/// The backing file a qcow2 image records, if any (raw images have none).
pub fn backing_file(path: &Path) -> Result<Option<std::path::PathBuf>, DiskError> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::ffi::OsStringExt;
    let read = |source| DiskError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read)?;
    let mut header = [0u8; 20];
    if read_up_to(&mut file, &mut header).map_err(read)? < 20 || header[..4] != QCOW2_MAGIC {
        return Ok(None);
    }
    let offset = u64::from_be_bytes(header[8..16].try_into().expect("8 bytes"));
    let len = u32::from_be_bytes(header[16..20].try_into().expect("4 bytes"));
    // The format caps the name at 1023 bytes.
    if offset == 0 || len == 0 || len > 1023 {
        return Ok(None);
    }
    let mut name = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(offset)).map_err(read)?;
    file.read_exact(&mut name).map_err(read)?;
    Ok(Some(std::ffi::OsString::from_vec(name).into()))
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        match file.read(&mut buf[total..])? {
            0 => break,
            n => total += n,
        }
    }
    Ok(total)
}

/// One internal snapshot of a qcow2 image, from its snapshot table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotInfo {
    pub name: String,
    /// Unix time (seconds) it was taken.
    pub date: u64,
    /// Bytes of saved VM state (0 for a disk-only snapshot).
    pub vm_state_size: u64,
}

/// The snapshot table of a qcow2 image (qcow2.txt, "Snapshot table entry").
pub fn snapshots(path: &Path) -> Result<Vec<SnapshotInfo>, DiskError> {
    use std::io::{Seek, SeekFrom};
    let read = |source| DiskError::Read {
        path: path.to_path_buf(),
        source,
    };
    let info = inspect(path)?;
    if info.format != ImageFormat::Qcow2 || info.snapshots == 0 {
        return Ok(Vec::new());
    }
    let mut file = std::fs::File::open(path).map_err(read)?;
    let mut header = [0u8; 72];
    file.read_exact(&mut header).map_err(read)?;
    let offset = u64::from_be_bytes(header[64..72].try_into().expect("8 bytes"));
    file.seek(SeekFrom::Start(offset)).map_err(read)?;
    let mut out = Vec::new();
    for _ in 0..info.snapshots {
        let mut fixed = [0u8; 40];
        file.read_exact(&mut fixed).map_err(read)?;
        let be16 =
            |at: usize| u16::from_be_bytes(fixed[at..at + 2].try_into().expect("2 bytes")) as usize;
        let be32 = |at: usize| u32::from_be_bytes(fixed[at..at + 4].try_into().expect("4 bytes"));
        let (id_len, name_len) = (be16(12), be16(14));
        let date = u64::from(be32(16));
        let mut vm_state_size = u64::from(be32(32));
        let extra_len = be32(36) as usize;
        let mut extra = vec![0u8; extra_len];
        file.read_exact(&mut extra).map_err(read)?;
        if extra_len >= 8 {
            vm_state_size = u64::from_be_bytes(extra[..8].try_into().expect("8 bytes"));
        }
        let mut strings = vec![0u8; id_len + name_len];
        file.read_exact(&mut strings).map_err(read)?;
        let name = String::from_utf8_lossy(&strings[id_len..]).into_owned();
        let entry = 40 + extra_len + id_len + name_len;
        let pad = entry.next_multiple_of(8) - entry;
        file.seek(SeekFrom::Current(pad as i64)).map_err(read)?;
        out.push(SnapshotInfo {
            name,
            date,
            vm_state_size,
        });
    }
    Ok(out)
}
