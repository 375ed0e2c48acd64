//! Volume descriptors (ECMA-119 8.4/8.5, Joliet) and path tables (9.4).

use super::encode::{SECTOR, both_u16, both_u32, no_time, padded, padded_ucs2, volume_time};
use super::record::Record;

/// A root-only path table is one 10-byte entry.
const PATH_TABLE_LEN: u32 = 10;
const APPLICATION: &str = "RUM";

/// The primary volume descriptor; its path tables are at `l_table` and `l_table + 1`.
pub fn primary(volume_id: &str, total_sectors: u32, root: &Record, l_table: u32) -> Vec<u8> {
    let mut d = common(1, total_sectors, root, l_table);
    padded(&mut d[8..40], b"LINUX");
    padded(&mut d[40..72], volume_id.as_bytes());
    for range in [190..318, 318..446, 446..574, 702..739, 739..776, 776..813] {
        padded(&mut d[range], b"");
    }
    padded(&mut d[574..702], APPLICATION.as_bytes());
    d
}

/// The Joliet supplementary volume descriptor (UCS-2 level 3).
pub fn joliet(volume_id: &str, total_sectors: u32, root: &Record, l_table: u32) -> Vec<u8> {
    let mut d = common(2, total_sectors, root, l_table);
    padded_ucs2(&mut d[8..40], "LINUX");
    padded_ucs2(&mut d[40..72], volume_id);
    d[88..91].copy_from_slice(b"%/E");
    for range in [190..318, 318..446, 446..574, 702..738, 739..775, 776..812] {
        padded_ucs2(&mut d[range], "");
    }
    padded_ucs2(&mut d[574..702], APPLICATION);
    d
}

fn common(kind: u8, total_sectors: u32, root: &Record, l_table: u32) -> Vec<u8> {
    let mut d = vec![0u8; SECTOR];
    d[0] = kind;
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    d[80..88].copy_from_slice(&both_u32(total_sectors));
    d[120..124].copy_from_slice(&both_u16(1));
    d[124..128].copy_from_slice(&both_u16(1));
    d[128..132].copy_from_slice(&both_u16(SECTOR as u16));
    d[132..140].copy_from_slice(&both_u32(PATH_TABLE_LEN));
    d[140..144].copy_from_slice(&l_table.to_le_bytes());
    d[148..152].copy_from_slice(&(l_table + 1).to_be_bytes());
    let root = root.encode();
    d[156..156 + root.len()].copy_from_slice(&root);
    d[813..830].copy_from_slice(&volume_time());
    d[830..847].copy_from_slice(&volume_time());
    d[847..864].copy_from_slice(&no_time());
    d[864..881].copy_from_slice(&volume_time());
    d[881] = 1;
    d
}

pub fn terminator() -> Vec<u8> {
    let mut d = vec![0u8; SECTOR];
    d[0] = 255;
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    d
}

/// The path table of a single root directory at `root`.
pub fn path_table(root: u32, big_endian: bool) -> Vec<u8> {
    let mut t = vec![1, 0];
    if big_endian {
        t.extend(root.to_be_bytes());
        t.extend(1u16.to_be_bytes());
    } else {
        t.extend(root.to_le_bytes());
        t.extend(1u16.to_le_bytes());
    }
    t.extend([0, 0]);
    debug_assert_eq!(t.len() as u32, PATH_TABLE_LEN);
    t
}
