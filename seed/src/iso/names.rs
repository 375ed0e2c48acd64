//! File names: what a seed may contain, and the names each directory tree
//! of the image records for it.

use super::error::IsoError;

/// Joliet records at most 64 UCS-2 characters; rum keeps every name within
/// it so the Rock Ridge and Joliet trees show the same names.
pub const MAX_NAME_CHARS: usize = 64;
/// Characters Joliet forbids in names.
const JOLIET_FORBIDDEN: &[char] = &['*', '/', ':', ';', '?', '\\'];

pub fn check(name: &str) -> Result<(), IsoError> {
    let bad = |why: &str| {
        Err(IsoError::BadName {
            name: name.to_owned(),
            why: why.to_owned(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` name directories");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return bad("it is longer than 64 characters, the most Joliet can record");
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return bad(&format!("it contains the control character {c:?}"));
    }
    if let Some(c) = name.chars().find(|c| JOLIET_FORBIDDEN.contains(c)) {
        return bad(&format!(
            "it contains {c:?}, which Joliet forbids (no subdirectories either)"
        ));
    }
    if let Some(c) = name.chars().find(|c| u32::from(*c) > 0xFFFF) {
        return bad(&format!(
            "it contains {c:?}, outside the UCS-2 range Joliet records"
        ));
    }
    Ok(())
}

/// The Joliet identifier: the name in UCS-2 big-endian.
pub fn joliet(name: &str) -> Vec<u8> {
    name.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// ISO 9660 level 1 identifiers (`NAME.EXT;1`, d-characters) for readers
/// that know neither Rock Ridge nor Joliet; unique within the directory.
pub fn primary(names: &[&str]) -> Vec<String> {
    let mut taken = std::collections::HashSet::new();
    names
        .iter()
        .map(|name| {
            let (stem, ext) = match name.rsplit_once('.') {
                Some((stem, ext)) if !stem.is_empty() => (stem, ext),
                _ => (*name, ""),
            };
            let stem = d_chars(stem, 8);
            let ext = d_chars(ext, 3);
            let mut candidate = join(&stem, &ext);
            let mut n = 1u32;
            while !taken.insert(candidate.clone()) {
                let suffix = format!("~{n}");
                let keep = 8 - suffix.len().min(8);
                candidate = join(&format!("{}{suffix}", &stem[..stem.len().min(keep)]), &ext);
                n += 1;
            }
            candidate
        })
        .collect()
}

fn join(stem: &str, ext: &str) -> String {
    let stem = if stem.is_empty() { "_" } else { stem };
    format!("{stem}.{ext};1")
}

fn d_chars(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| match c.to_ascii_uppercase() {
            u @ ('A'..='Z' | '0'..='9' | '_') => u,
            _ => '_',
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_both_trees_can_record() {
        for ok in [
            "user-data",
            "a",
            "ünïcödé name.txt",
            &"x".repeat(64),
            "#hash",
            "-lead",
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a;1",
            "tab\t",
            &"x".repeat(65),
            "emoji😀",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn primary_names_are_unique_d_characters() {
        let names = primary(&[
            "user-data",
            "user-data.txt",
            "user_data",
            "meta-data",
            ".hidden",
        ]);
        assert_eq!(names[0], "USER_DAT.;1");
        assert_eq!(names[1], "USER_DAT.TXT;1");
        assert_eq!(names[2], "USER_D~1.;1");
        assert_eq!(names[3], "META_DAT.;1");
        assert_eq!(names[4], "_HIDDEN.;1");
        let set: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(set.len(), names.len());
    }

    #[test]
    fn joliet_is_ucs2_big_endian() {
        assert_eq!(joliet("aé"), vec![0, b'a', 0, 0xE9]);
    }
}
