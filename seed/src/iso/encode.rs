//! Field encodings of ECMA-119 (ISO 9660).

pub const SECTOR: usize = 2048;

/// "Both-byte order" 32-bit field: little-endian, then big-endian.
pub fn both_u32(value: u32) -> [u8; 8] {
    let mut out = [0; 8];
    out[..4].copy_from_slice(&value.to_le_bytes());
    out[4..].copy_from_slice(&value.to_be_bytes());
    out
}

pub fn both_u16(value: u16) -> [u8; 4] {
    let mut out = [0; 4];
    out[..2].copy_from_slice(&value.to_le_bytes());
    out[2..].copy_from_slice(&value.to_be_bytes());
    out
}

/// The fixed time every record carries, so equal inputs give equal bytes:
/// 2000-01-01 00:00:00 UTC.
const YEAR: u16 = 2000;

/// 7-byte directory record time.
pub fn record_time() -> [u8; 7] {
    [(YEAR - 1900) as u8, 1, 1, 0, 0, 0, 0]
}

/// 17-byte volume descriptor time ("YYYYMMDDHHMMSScc" + UTC offset).
pub fn volume_time() -> [u8; 17] {
    let mut out = [0u8; 17];
    out[..16].copy_from_slice(format!("{YEAR:04}0101000000{:02}", 0).as_bytes());
    out
}

/// An unset volume descriptor time: sixteen '0' digits and a zero offset.
pub fn no_time() -> [u8; 17] {
    let mut out = [b'0'; 17];
    out[16] = 0;
    out
}

/// Copies `text` into a space-padded field.
pub fn padded(field: &mut [u8], text: &[u8]) {
    field.fill(b' ');
    field[..text.len()].copy_from_slice(text);
}

/// Copies `text` as UCS-2 big-endian into a field padded with UCS-2 spaces.
pub fn padded_ucs2(field: &mut [u8], text: &str) {
    for pair in field.chunks_mut(2) {
        pair.copy_from_slice(&[0, b' ']);
    }
    let encoded = super::names::joliet(text);
    field[..encoded.len()].copy_from_slice(&encoded);
}

pub fn sectors(bytes: usize) -> usize {
    bytes.div_ceil(SECTOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_byte_orders() {
        assert_eq!(both_u32(0x01020304), [4, 3, 2, 1, 1, 2, 3, 4]);
        assert_eq!(both_u16(0x0102), [2, 1, 1, 2]);
    }

    #[test]
    fn times() {
        assert_eq!(&volume_time()[..16], b"2000010100000000");
        assert_eq!(record_time()[0], 100);
    }
}
