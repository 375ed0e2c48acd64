//! System Use Sharing Protocol entries and the Rock Ridge entries rum writes:
//! SP, CE and ER (SUSP), PX and NM (RRIP 1.10).

/// SP: marks SUSP in use; lives first in the root's "." record.
pub fn sp() -> Vec<u8> {
    vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0]
}

pub const CE_LEN: usize = 28;

/// CE: the rest of this record's entries are at `block`/`offset`, `len` bytes.
pub fn ce(block: u32, offset: u32, len: u32) -> Vec<u8> {
    let mut out = vec![b'C', b'E', CE_LEN as u8, 1];
    out.extend(super::encode::both_u32(block));
    out.extend(super::encode::both_u32(offset));
    out.extend(super::encode::both_u32(len));
    out
}

pub const PX_LEN: usize = 36;

/// PX: POSIX mode, link count, uid and gid (all root-owned here).
pub fn px(mode: u32, links: u32) -> Vec<u8> {
    let mut out = vec![b'P', b'X', PX_LEN as u8, 1];
    out.extend(super::encode::both_u32(mode));
    out.extend(super::encode::both_u32(links));
    out.extend(super::encode::both_u32(0));
    out.extend(super::encode::both_u32(0));
    out
}

/// NM: the file's real name. Names are at most 64 characters (≤ 192 bytes),
/// so one entry always holds a whole name.
pub fn nm(name: &str) -> Vec<u8> {
    let mut out = vec![b'N', b'M', (5 + name.len()) as u8, 1, 0];
    out.extend(name.as_bytes());
    out
}

/// ER: declares Rock Ridge (RRIP_1991A). Linux only prefers Rock Ridge over
/// Joliet once it has seen this entry.
pub fn er() -> Vec<u8> {
    const ID: &[u8] = b"RRIP_1991A";
    const DESCRIPTION: &[u8] =
        b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
    const SOURCE: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";
    let len = 8 + ID.len() + DESCRIPTION.len() + SOURCE.len();
    let mut out = vec![
        b'E',
        b'R',
        len as u8,
        1,
        ID.len() as u8,
        DESCRIPTION.len() as u8,
        SOURCE.len() as u8,
        1,
    ];
    out.extend(ID);
    out.extend(DESCRIPTION);
    out.extend(SOURCE);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_lengths_match_their_length_fields() {
        for entry in [sp(), ce(1, 2, 3), px(0o100644, 1), nm("user-data"), er()] {
            assert_eq!(
                entry[2] as usize,
                entry.len(),
                "{}",
                String::from_utf8_lossy(&entry[..2])
            );
        }
    }
}
