//! Checksums: what a download must hash to, read from `[image] sha256` or
//! from a distro's published sums file, and the hashing itself.

use sha2::{Digest, Sha256, Sha512};
use std::io::Read;
use std::path::Path;

/// Sums files looked for beside a URL that has no `[image] sha256`.
pub const SUMS_FILES: [&str; 2] = ["SHA256SUMS", "SHA512SUMS"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Told apart by length: sums files do not always name their algorithm.
    fn of_hex(hex: &str) -> Option<Self> {
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        match hex.len() {
            64 => Some(Algorithm::Sha256),
            128 => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// An expected digest, lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub hex: String,
}

impl Checksum {
    /// A SHA-256 written by a user: 64 hex digits, any case.
    pub fn sha256(text: &str) -> Option<Self> {
        let hex = text.trim().to_ascii_lowercase();
        (Algorithm::of_hex(&hex) == Some(Algorithm::Sha256)).then_some(Self {
            algorithm: Algorithm::Sha256,
            hex,
        })
    }

    /// The entry for `file` in a sums file, in GNU (`HEX  name`, `HEX *name`)
    /// or BSD (`SHA256 (name) = HEX`) form.
    pub fn from_sums(text: &str, file: &str) -> Option<Self> {
        text.lines().find_map(|line| {
            let line = line.trim();
            let (name, hex) = if let Some((head, hex)) = line.split_once(") = ") {
                (head.split_once(" (")?.1, hex.trim())
            } else {
                let (hex, name) = line.split_once(char::is_whitespace)?;
                (name.trim_start().trim_start_matches('*'), hex)
            };
            let name = name.strip_prefix("./").unwrap_or(name);
            if name != file {
                return None;
            }
            let hex = hex.to_ascii_lowercase();
            Some(Self {
                algorithm: Algorithm::of_hex(&hex)?,
                hex,
            })
        })
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

/// What a file hashes to: always SHA-256 (what `rum image list` shows and
/// `[image] sha256` compares with), and SHA-512 when that is what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub sha512: Option<String>,
}

impl Digests {
    pub fn matches(&self, expected: &Checksum) -> bool {
        match expected.algorithm {
            Algorithm::Sha256 => self.sha256 == expected.hex,
            Algorithm::Sha512 => self.sha512.as_deref() == Some(expected.hex.as_str()),
        }
    }

    pub fn get(&self, algorithm: Algorithm) -> Option<&str> {
        match algorithm {
            Algorithm::Sha256 => Some(&self.sha256),
            Algorithm::Sha512 => self.sha512.as_deref(),
        }
    }
}

/// Hashes `path`, calling `progress` with the bytes read so far.
pub fn digest_file(
    path: &Path,
    with_sha512: bool,
    mut progress: impl FnMut(u64),
) -> std::io::Result<Digests> {
    let mut file = std::fs::File::open(path)?;
    let mut sha256 = Sha256::new();
    let mut sha512 = with_sha512.then(Sha512::new);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha256.update(&buf[..n]);
        if let Some(h) = sha512.as_mut() {
            h.update(&buf[..n]);
        }
        total += n as u64;
        progress(total);
    }
    Ok(Digests {
        sha256: hex(&sha256.finalize()),
        sha512: sha512.map(|h| hex(&h.finalize())),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn gnu_and_bsd_sums_lines() {
        let gnu = format!("{}  other.img\n{A256} *ubuntu.img\n", "0".repeat(64));
        assert_eq!(
            Checksum::from_sums(&gnu, "ubuntu.img"),
            Some(Checksum {
                algorithm: Algorithm::Sha256,
                hex: A256.into()
            })
        );
        let bsd = format!("SHA512 (disk.qcow2) = {}\n", "AB".repeat(64));
        let found = Checksum::from_sums(&bsd, "disk.qcow2").unwrap();
        assert_eq!(found.algorithm, Algorithm::Sha512);
        assert_eq!(found.hex, "ab".repeat(64));
        assert_eq!(Checksum::from_sums(&gnu, "missing.img"), None);
        assert_eq!(Checksum::from_sums("zz  a.img", "a.img"), None);
    }

    #[test]
    fn user_sha256_is_64_hex_digits() {
        assert_eq!(Checksum::sha256(&A256.to_uppercase()).unwrap().hex, A256);
        assert!(Checksum::sha256("abc").is_none());
        assert!(Checksum::sha256(&"g".repeat(64)).is_none());
        assert!(Checksum::sha256(&"a".repeat(128)).is_none());
    }

    #[test]
    fn digests_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        let mut seen = 0;
        let d = digest_file(&path, true, |n| seen = n).unwrap();
        assert_eq!(seen, 3);
        assert_eq!(d.sha256, A256);
        assert!(d.sha512.as_deref().unwrap().starts_with("ddaf35a193617aba"));
        assert!(d.matches(&Checksum::sha256(A256).unwrap()));
    }
}
