//! Directory records (ECMA-119 9.1).

use super::encode::{both_u16, both_u32, record_time};

/// One directory record before encoding.
#[derive(Debug, Clone)]
pub struct Record {
    pub extent: u32,
    pub size: u32,
    pub is_dir: bool,
    /// File identifier: `[0]` for ".", `[1]` for "..", else the name bytes.
    pub id: Vec<u8>,
    pub system_use: Vec<u8>,
}

/// A record may not be longer than its one-byte length field allows.
pub const MAX_LEN: usize = 255;

impl Record {
    /// Encoded length: fixed part, identifier, pad to even, system use, pad to even.
    pub fn len(&self) -> usize {
        let head = 33 + self.id.len();
        let head = head + head % 2;
        let total = head + self.system_use.len();
        total + total % 2
    }

    pub fn encode(&self) -> Vec<u8> {
        let len = self.len();
        debug_assert!(len <= MAX_LEN);
        let mut out = Vec::with_capacity(len);
        out.push(len as u8);
        out.push(0);
        out.extend(both_u32(self.extent));
        out.extend(both_u32(self.size));
        out.extend(record_time());
        out.push(if self.is_dir { 0x02 } else { 0x00 });
        out.push(0);
        out.push(0);
        out.extend(both_u16(1));
        out.push(self.id.len() as u8);
        out.extend(&self.id);
        if out.len() % 2 == 1 {
            out.push(0);
        }
        out.extend(&self.system_use);
        out.resize(len, 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_record_is_34_bytes() {
        let root = Record {
            extent: 23,
            size: 2048,
            is_dir: true,
            id: vec![0],
            system_use: vec![],
        };
        let bytes = root.encode();
        assert_eq!(bytes.len(), 34);
        assert_eq!(bytes[0], 34);
        assert_eq!(&bytes[2..6], &23u32.to_le_bytes());
        assert_eq!(bytes[25], 2);
    }

    #[test]
    fn system_use_starts_on_an_even_offset() {
        let r = Record {
            extent: 0,
            size: 0,
            is_dir: false,
            id: b"AB.;1".to_vec(),
            system_use: vec![9],
        };
        let bytes = r.encode();
        assert_eq!(bytes.len() % 2, 0);
        assert_eq!(
            bytes[33 + 5],
            9,
            "an odd identifier length needs no pad byte"
        );
    }
}
