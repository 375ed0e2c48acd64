//! Size strings such as "20G", "512M" or "1.5T" (binary units, as QEMU reads them).

use serde::{Serialize, Serializer};
use std::fmt;

/// A size in bytes, parsed from a size string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(u64);

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;

impl ByteSize {
    pub const fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Parses "20G", "20GiB", "20GB", "512M", "1.5T" or a plain byte count.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let multiplier = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => KIB,
            "M" | "MB" | "MIB" => MIB,
            "G" | "GB" | "GIB" => GIB,
            "T" | "TB" | "TIB" => TIB,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{text}`; use K, M, G or T, e.g. \"20G\""
                ));
            }
        };
        if number.is_empty() {
            return Err(format!("`{text}` has no number; write a size like \"20G\""));
        }
        let bytes = if let Some((whole, fraction)) = number.split_once('.') {
            let value: f64 = format!(
                "{}.{}",
                if whole.is_empty() { "0" } else { whole },
                fraction
            )
            .parse()
            .map_err(|_| format!("`{text}` is not a number with a unit, e.g. \"20G\""))?;
            let bytes = value * multiplier as f64;
            if !bytes.is_finite() || bytes >= u64::MAX as f64 {
                return Err(format!("`{text}` is too large"));
            }
            bytes.round() as u64
        } else {
            number
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(multiplier))
                .ok_or_else(|| format!("`{text}` is too large"))?
        };
        Ok(Self(bytes))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [(TIB, "T"), (GIB, "G"), (MIB, "M"), (KIB, "K")];
        for (size, suffix) in units {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{suffix}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_fractions() {
        assert_eq!(ByteSize::parse("20G").unwrap().bytes(), 20 * GIB);
        assert_eq!(ByteSize::parse("20GiB").unwrap().bytes(), 20 * GIB);
        assert_eq!(ByteSize::parse("512m").unwrap().bytes(), 512 * MIB);
        assert_eq!(ByteSize::parse("1.5T").unwrap().bytes(), 3 * TIB / 2);
        assert_eq!(ByteSize::parse("4096").unwrap().bytes(), 4096);
    }

    #[test]
    fn rejects_nonsense() {
        assert!(ByteSize::parse("20X").unwrap_err().contains("unknown unit"));
        assert!(ByteSize::parse("G").unwrap_err().contains("no number"));
        assert!(ByteSize::parse("").unwrap_err().contains("no number"));
        assert!(ByteSize::parse("1.2.3G").is_err());
        assert!(
            ByteSize::parse("99999999999T")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        assert_eq!(ByteSize::parse("20G").unwrap().to_string(), "20G");
        assert_eq!(ByteSize::parse("1536M").unwrap().to_string(), "1536M");
        assert_eq!(ByteSize::from_bytes(1000).to_string(), "1000");
    }
}
