//! Checks for the names and paths rum.toml may contain. Each returns the
//! reason a value is refused, phrased to follow the key name.

/// Longest instance or drive name: it becomes part of file and socket paths.
pub const MAX_NAME_LEN: usize = 64;
/// virtiofs tags are at most 36 bytes (the virtio-fs config field).
pub const MAX_TAG_LEN: usize = 36;

/// Instance and drive names: they become directory and file names.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty; use letters, digits, `.`, `_` or `-`".into());
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(format!(
            "is {} characters long; the limit is {MAX_NAME_LEN}",
            name.chars().count()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!("contains the control character {c:?}"));
    }
    if name.contains('/') || name.contains('\\') {
        return Err(format!(
            "`{name}` contains a path separator; use letters, digits, `.`, `_` or `-`"
        ));
    }
    if name == "." || name == ".." || name.contains("..") {
        return Err(format!("`{name}` contains `..`"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{name}` contains {c:?}; use letters, digits, `.`, `_` or `-`"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("`{name}` must start with a letter or digit"));
    }
    Ok(())
}

/// Turns a directory or file stem into a valid instance name.
pub fn sanitize_name(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    let mut name: String = trimmed.chars().take(MAX_NAME_LEN).collect();
    if name.is_empty() {
        name = "vm".into();
    }
    name
}

/// RFC 1123 host names: dot-separated labels of letters, digits and `-`.
pub fn check_hostname(host: &str) -> Result<(), String> {
    if host.is_empty() || host.len() > 253 {
        return Err(format!("`{host}` must be 1 to 253 characters long"));
    }
    for label in host.split('.') {
        let valid_chars = label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if label.is_empty() || label.len() > 63 || !valid_chars {
            return Err(format!(
                "`{host}` is not a valid host name; use labels of letters, digits and `-`, up to 63 characters each"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("`{host}` has a label that starts or ends with `-`"));
        }
    }
    Ok(())
}

/// A host name derived from the instance name.
pub fn hostname_from(name: &str) -> String {
    let mapped: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let label: String = mapped.trim_matches('-').chars().take(63).collect();
    let label = label.trim_end_matches('-');
    if label.is_empty() {
        "rum".into()
    } else {
        label.into()
    }
}

/// Linux user and group names as useradd accepts them by default.
pub fn check_unix_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name; start with a lowercase letter or `_`, then lowercase letters, digits, `_` or `-` (32 at most)"
        ))
    }
}

/// Guest directories that must not be hidden by a mount.
const SYSTEM_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin", "/sys",
    "/usr", "/var",
];

/// An absolute guest path for a mount point, normalised (no `.`, `..`, `//`).
pub fn normalize_guest_target(target: &str) -> Result<String, String> {
    if !target.starts_with('/') {
        return Err(format!(
            "`{target}` is relative; give an absolute guest path such as `/mnt/project`"
        ));
    }
    if let Some(c) = target.chars().find(|c| c.is_control()) {
        return Err(format!("`{target}` contains the control character {c:?}"));
    }
    let mut parts = Vec::new();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "`{target}` contains `..`; write the path without it"
                ));
            }
            other => parts.push(other),
        }
    }
    let normalized = format!("/{}", parts.join("/"));
    if SYSTEM_DIRS.contains(&normalized.as_str()) {
        return Err(format!(
            "`{normalized}` would hide a system directory of the guest; mount under /mnt or /srv instead"
        ));
    }
    Ok(normalized)
}

/// Whether one guest path is the other or lies inside it.
pub fn paths_overlap(a: &str, b: &str) -> bool {
    let inside = |outer: &str, inner: &str| {
        inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    inside(a, b) || inside(b, a)
}

/// A virtiofs tag derived from a mount target, e.g. `/mnt/project` → `mnt-project`.
pub fn tag_from_target(target: &str) -> String {
    let mapped: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let tag: String = mapped.trim_matches('-').chars().take(MAX_TAG_LEN).collect();
    if tag.is_empty() { "root".into() } else { tag }
}

pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() || tag.len() > MAX_TAG_LEN {
        return Err(format!("`{tag}` must be 1 to {MAX_TAG_LEN} bytes long"));
    }
    if !tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "`{tag}` may only contain letters, digits, `_`, `-` and `.`"
        ));
    }
    Ok(())
}

/// An OpenSSH public key line: `type base64 [comment]`.
pub fn check_public_key(key: &str) -> Result<(), String> {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let short: String = key.chars().take(24).collect();
    if key.contains('\n') || key.contains('\r') {
        return Err(format!(
            "`{short}…` spans several lines; give one key per array entry"
        ));
    }
    let mut fields = key.split_whitespace();
    let (Some(kind), Some(body)) = (fields.next(), fields.next()) else {
        return Err(format!(
            "`{short}` is not a public key; paste the line from your `~/.ssh/*.pub`"
        ));
    };
    if !TYPES.contains(&kind) {
        return Err(format!(
            "`{kind}` is not a known key type; expected one of {}",
            TYPES.join(", ")
        ));
    }
    let base64 = body
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
    if !base64 || body.len() < 16 {
        return Err(format!(
            "the `{kind}` key's data is not base64; paste the whole line from your `.pub` file"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("web-1.dev_x").is_ok());
        assert!(check_name("a/b").unwrap_err().contains("path separator"));
        assert!(check_name("..").unwrap_err().contains(".."));
        assert!(check_name("a\u{7}").unwrap_err().contains("control"));
        assert!(
            check_name(&"x".repeat(65))
                .unwrap_err()
                .contains("limit is 64")
        );
        assert!(check_name("-x").unwrap_err().contains("start with"));
        assert_eq!(sanitize_name("My Project!"), "My-Project");
        assert_eq!(sanitize_name("..."), "vm");
    }

    #[test]
    fn hostnames() {
        assert!(check_hostname("dev.example").is_ok());
        assert!(check_hostname("bad_host").is_err());
        assert!(check_hostname("-x").is_err());
        assert_eq!(hostname_from("My_Project.1"), "my-project-1");
    }

    #[test]
    fn guest_targets() {
        assert_eq!(normalize_guest_target("/mnt//x/./y/").unwrap(), "/mnt/x/y");
        assert!(
            normalize_guest_target("mnt")
                .unwrap_err()
                .contains("relative")
        );
        assert!(
            normalize_guest_target("/mnt/../etc")
                .unwrap_err()
                .contains("..")
        );
        assert!(
            normalize_guest_target("/etc/")
                .unwrap_err()
                .contains("system directory")
        );
        assert!(paths_overlap("/mnt/a", "/mnt/a/b"));
        assert!(paths_overlap("/mnt/a", "/mnt/a"));
        assert!(!paths_overlap("/mnt/a", "/mnt/ab"));
        assert_eq!(tag_from_target("/mnt/project"), "mnt-project");
    }

    #[test]
    fn public_keys() {
        assert!(check_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB me@host").is_ok());
        assert!(check_public_key("hello").is_err());
        assert!(check_public_key("ssh-foo AAAAC3NzaC1lZDI1NTE5AAAAIB").is_err());
    }
}
