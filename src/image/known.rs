//! Names that stand for current official cloud images, with the sums file
//! each distro publishes beside them.

/// A distro's cloud image for this host's architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub name: &'static str,
    pub url: String,
    /// The distro's published sums file listing `file`.
    pub sums_url: String,
    /// The image's name in that sums file.
    pub file: String,
}

/// (name, directory, file name with `{arch}`, sums file in that directory).
const TABLE: &[(&str, &str, &str, &str)] = &[
    (
        "ubuntu-24.04",
        "https://cloud-images.ubuntu.com/releases/24.04/release/",
        "ubuntu-24.04-server-cloudimg-{arch}.img",
        "SHA256SUMS",
    ),
    (
        "ubuntu-22.04",
        "https://cloud-images.ubuntu.com/releases/22.04/release/",
        "ubuntu-22.04-server-cloudimg-{arch}.img",
        "SHA256SUMS",
    ),
    (
        "debian-13",
        "https://cloud.debian.org/images/cloud/trixie/latest/",
        "debian-13-genericcloud-{arch}.qcow2",
        "SHA512SUMS",
    ),
    (
        "debian-12",
        "https://cloud.debian.org/images/cloud/bookworm/latest/",
        "debian-12-genericcloud-{arch}.qcow2",
        "SHA512SUMS",
    ),
];

pub fn names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|(name, ..)| *name)
}

pub fn lookup(name: &str) -> Option<Known> {
    lookup_for(name, std::env::consts::ARCH)
}

/// Both distros name architectures the Debian way.
fn lookup_for(name: &str, rust_arch: &str) -> Option<Known> {
    let arch = match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let (name, dir, file, sums) = TABLE.iter().find(|(n, ..)| *n == name)?;
    let file = file.replace("{arch}", arch);
    Some(Known {
        name,
        url: format!("{dir}{file}"),
        sums_url: format!("{dir}{sums}"),
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_urls_and_sums_files() {
        let d = lookup_for("debian-12", "x86_64").unwrap();
        assert_eq!(
            d.url,
            "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
        );
        assert_eq!(
            d.sums_url,
            "https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS"
        );
        let u = lookup_for("ubuntu-24.04", "aarch64").unwrap();
        assert_eq!(
            u.url,
            "https://cloud-images.ubuntu.com/releases/24.04/release/ubuntu-24.04-server-cloudimg-arm64.img"
        );
        assert_eq!(u.file, "ubuntu-24.04-server-cloudimg-arm64.img");
        assert!(lookup_for("debian-13", "x86_64").is_some());
        assert!(lookup_for("ubuntu-22.04", "x86_64").is_some());
        assert_eq!(lookup("fedora-40"), None);
        assert_eq!(names().count(), 4);
    }
}
