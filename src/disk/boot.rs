//! Which firmware an image boots with, from its partition table: a BIOS
//! boot partition or an MBR with boot code means BIOS works; a GPT with only
//! an EFI system partition needs UEFI.

use super::error::DiskError;
use super::image::ImageFormat;
use super::image::QCOW2_MAGIC;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootNeeds {
    /// Boots through legacy BIOS (it may boot through UEFI too).
    Bios,
    Uefi,
    /// Nothing recognisable (or compressed clusters): leave the default.
    Unknown,
}

/// GPT type GUIDs in their on-disk (mixed-endian) byte order.
const BIOS_BOOT: [u8; 16] = [
    0x48, 0x61, 0x68, 0x21, 0x49, 0x64, 0x6F, 0x6E, 0x74, 0x4E, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49,
];
const ESP: [u8; 16] = [
    0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B,
];
/// The MBR, the GPT header and 128 partition entries.
const HEAD: usize = 64 * 1024;

pub fn boot_needs(path: &Path, format: ImageFormat) -> Result<BootNeeds, DiskError> {
    let head = match format {
        ImageFormat::Raw => read_raw(path)?,
        ImageFormat::Qcow2 => match read_qcow2_head(path)? {
            Some(head) => head,
            None => return Ok(BootNeeds::Unknown),
        },
    };
    Ok(classify(&head))
}

pub fn classify(head: &[u8]) -> BootNeeds {
    if head.len() < 1024 || head[510..512] != [0x55, 0xAA] {
        return BootNeeds::Unknown;
    }
    let boot_code = head[..440].iter().any(|b| *b != 0);
    let protective = (0..4).any(|i| head[446 + i * 16 + 4] == 0xEE);
    if !protective {
        return if boot_code {
            BootNeeds::Bios
        } else {
            BootNeeds::Unknown
        };
    }
    if &head[512..520] != b"EFI PART" {
        return BootNeeds::Unknown;
    }
    let le32 =
        |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes")) as usize;
    let entries_lba =
        u64::from_le_bytes(head[512 + 72..512 + 80].try_into().expect("8 bytes")) as usize;
    let (count, size) = (le32(512 + 80), le32(512 + 84));
    let (mut bios, mut esp) = (false, false);
    for i in 0..count.min(128) {
        let at = entries_lba * 512 + i * size;
        let Some(kind) = head.get(at..at + 16) else {
            break;
        };
        bios |= kind == BIOS_BOOT;
        esp |= kind == ESP;
    }
    match (bios && boot_code, esp) {
        (true, _) => BootNeeds::Bios,
        (false, true) => BootNeeds::Uefi,
        (false, false) => BootNeeds::Unknown,
    }
}

fn read_raw(path: &Path) -> Result<Vec<u8>, DiskError> {
    let mut head = Vec::with_capacity(HEAD);
    std::fs::File::open(path)
        .and_then(|f| f.take(HEAD as u64).read_to_end(&mut head))
        .map_err(|source| DiskError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(head)
}

/// The guest's first bytes through the L1/L2 tables; `None` when they are
/// compressed or in a backing file.
fn read_qcow2_head(path: &Path) -> Result<Option<Vec<u8>>, DiskError> {
    let err = |source| DiskError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let mut header = [0u8; 48];
    file.read_exact(&mut header).map_err(err)?;
    if header[..4] != QCOW2_MAGIC {
        return Ok(None);
    }
    let cluster_bits = u32::from_be_bytes(header[20..24].try_into().expect("4 bytes"));
    let l1_offset = u64::from_be_bytes(header[40..48].try_into().expect("8 bytes"));
    let mut read_u64 = |at: u64| -> Result<u64, DiskError> {
        let mut word = [0u8; 8];
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut word))
            .map_err(err)?;
        Ok(u64::from_be_bytes(word))
    };
    const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
    const COMPRESSED: u64 = 1 << 62;
    let l2_offset = read_u64(l1_offset)? & OFFSET_MASK;
    if l2_offset == 0 {
        return Ok(None);
    }
    let entry = read_u64(l2_offset)?;
    let data = entry & OFFSET_MASK;
    if entry & COMPRESSED != 0 || data == 0 {
        return Ok(None);
    }
    let take = HEAD.min(1 << cluster_bits) as u64;
    let mut head = Vec::with_capacity(take as usize);
    file.seek(SeekFrom::Start(data)).map_err(err)?;
    file.take(take).read_to_end(&mut head).map_err(err)?;
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpt(types: &[[u8; 16]], boot_code: bool) -> Vec<u8> {
        let mut head = vec![0u8; HEAD];
        if boot_code {
            head[0] = 0xEB;
        }
        head[446 + 4] = 0xEE;
        head[510] = 0x55;
        head[511] = 0xAA;
        head[512..520].copy_from_slice(b"EFI PART");
        head[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        head[512 + 80..512 + 84].copy_from_slice(&128u32.to_le_bytes());
        head[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        for (i, kind) in types.iter().enumerate() {
            head[1024 + i * 128..1024 + i * 128 + 16].copy_from_slice(kind);
        }
        head
    }

    #[test]
    fn hybrid_images_boot_with_bios_and_esp_only_needs_uefi() {
        assert_eq!(classify(&gpt(&[BIOS_BOOT, ESP], true)), BootNeeds::Bios);
        assert_eq!(classify(&gpt(&[ESP], false)), BootNeeds::Uefi);
        assert_eq!(classify(&gpt(&[ESP], true)), BootNeeds::Uefi);
        assert_eq!(classify(&gpt(&[], true)), BootNeeds::Unknown);
        assert_eq!(classify(&[0u8; 2048]), BootNeeds::Unknown);
        let mut mbr = vec![0u8; 2048];
        mbr[0] = 0xEB;
        mbr[446 + 4] = 0x83;
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert_eq!(classify(&mbr), BootNeeds::Bios);
    }
}
