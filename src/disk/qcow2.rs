//! Writing new qcow2 (version 3) images: the header, one refcount table and
//! block, and an empty L1 table, laid out as QEMU's qcow2 specification
//! (docs/interop/qcow2.txt) describes. QEMU allocates everything else.

use super::error::DiskError;
use super::image::ImageFormat;
use super::image::QCOW2_MAGIC;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// 16-bit refcounts.
const REFCOUNT_ORDER: u32 = 4;
const HEADER_LEN: u32 = 104;
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
const EXT_END: u32 = 0;
/// One L1 entry maps CLUSTER / 8 L2 entries of one cluster each.
const L1_ENTRY_COVERS: u64 = CLUSTER * (CLUSTER / 8);
/// Clusters one refcount block counts.
const REFCOUNT_BLOCK_ENTRIES: u64 = CLUSTER * 8 / (1 << REFCOUNT_ORDER);

/// Creates a qcow2 overlay of `size` bytes whose reads fall through to
/// `backing` (recorded with its format). Fails if `path` exists.
pub fn create_overlay(
    path: &Path,
    size: u64,
    backing: &Path,
    backing_format: ImageFormat,
) -> Result<(), DiskError> {
    let name = backing.as_os_str().as_encoded_bytes();
    create(path, size, Some((name, backing_format)))
}

/// Creates an empty qcow2 image of `size` bytes. Fails if `path` exists.
pub fn create_drive(path: &Path, size: u64) -> Result<(), DiskError> {
    create(path, size, None)
}

fn create(path: &Path, size: u64, backing: Option<(&[u8], ImageFormat)>) -> Result<(), DiskError> {
    let image = layout(size, backing).ok_or(DiskError::TooLarge { size })??;
    let write = |source| DiskError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => DiskError::Exists(path.to_path_buf()),
            _ => write(e),
        })?;
    if let Err(e) = file.write_all(&image).and_then(|()| file.sync_all()) {
        let _ = std::fs::remove_file(path);
        return Err(write(e));
    }
    Ok(())
}

/// The whole initial file; `None` when the size overflows the format.
fn layout(size: u64, backing: Option<(&[u8], ImageFormat)>) -> Option<Result<Vec<u8>, DiskError>> {
    let l1_entries = size.div_ceil(L1_ENTRY_COVERS);
    let l1_size = u32::try_from(l1_entries).ok()?;
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER).max(1);
    // Cluster 0 header, 1 refcount table, 2 refcount block, 3.. L1 table.
    let clusters = 3 + l1_clusters;
    if clusters > REFCOUNT_BLOCK_ENTRIES {
        return None;
    }
    let mut image = vec![0u8; (clusters * CLUSTER) as usize];

    let mut header = Vec::with_capacity(CLUSTER as usize);
    header.extend(QCOW2_MAGIC);
    header.extend(3u32.to_be_bytes());
    let backing_offset_at = header.len();
    header.extend(0u64.to_be_bytes()); // backing file offset, set below
    header.extend(0u32.to_be_bytes()); // backing file size, set below
    header.extend(CLUSTER_BITS.to_be_bytes());
    header.extend(size.to_be_bytes());
    header.extend(0u32.to_be_bytes()); // no encryption
    header.extend(l1_size.to_be_bytes());
    header.extend((3 * CLUSTER).to_be_bytes()); // L1 table
    header.extend(CLUSTER.to_be_bytes()); // refcount table
    header.extend(1u32.to_be_bytes()); // refcount table clusters
    header.extend(0u32.to_be_bytes()); // snapshots
    header.extend(0u64.to_be_bytes()); // snapshots offset
    header.extend(0u64.to_be_bytes()); // incompatible features
    header.extend(0u64.to_be_bytes()); // compatible features
    header.extend(0u64.to_be_bytes()); // autoclear features
    header.extend(REFCOUNT_ORDER.to_be_bytes());
    header.extend(HEADER_LEN.to_be_bytes());
    debug_assert_eq!(header.len(), HEADER_LEN as usize);

    if let Some((name, format)) = backing {
        extension(&mut header, EXT_BACKING_FORMAT, format.as_str().as_bytes());
        extension(&mut header, EXT_END, &[]);
        let offset = header.len() as u64;
        if offset + name.len() as u64 > CLUSTER || name.len() > 1023 {
            return Some(Err(DiskError::BackingPathTooLong(
                std::path::PathBuf::from(String::from_utf8_lossy(name).into_owned()),
            )));
        }
        header[backing_offset_at..backing_offset_at + 8].copy_from_slice(&offset.to_be_bytes());
        header[backing_offset_at + 8..backing_offset_at + 12]
            .copy_from_slice(&(name.len() as u32).to_be_bytes());
        header.extend(name);
    } else {
        extension(&mut header, EXT_END, &[]);
    }
    image[..header.len()].copy_from_slice(&header);

    // The refcount table points at the one refcount block.
    let table = CLUSTER as usize;
    image[table..table + 8].copy_from_slice(&(2 * CLUSTER).to_be_bytes());
    // Every cluster of the initial file is in use once.
    let block = 2 * CLUSTER as usize;
    for cluster in 0..clusters as usize {
        image[block + cluster * 2..block + cluster * 2 + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    Some(Ok(image))
}

fn extension(header: &mut Vec<u8>, kind: u32, data: &[u8]) {
    header.extend(kind.to_be_bytes());
    header.extend((data.len() as u32).to_be_bytes());
    header.extend(data);
    header.resize(header.len().next_multiple_of(8), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_map_to_l1_entries() {
        let image = layout(20 << 30, None).unwrap().unwrap();
        assert_eq!(image.len() as u64, 4 * CLUSTER);
        assert_eq!(u32::from_be_bytes(image[36..40].try_into().unwrap()), 40);
        let huge = layout(64 << 40, None).unwrap().unwrap();
        assert_eq!(u32::from_be_bytes(huge[36..40].try_into().unwrap()), 131072);
        assert_eq!(huge.len() as u64, (3 + 16) * CLUSTER);
        assert!(layout(u64::MAX, None).is_none());
    }
}
