//! Telling qcow2 from raw by content, never by file name.

use super::DiskError;
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
