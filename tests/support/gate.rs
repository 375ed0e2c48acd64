//! Finds what end-to-end tests need and decides between running, skipping
//! (no `RUM_E2E`) and failing loudly (`RUM_E2E=1`).

use std::env;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Host tools and the guest image an e2e test runs with.
pub struct Tools {
    pub qemu: PathBuf,
    pub qemu_img: PathBuf,
    pub virtiofsd: PathBuf,
    /// The cached test guest image (`RUM_TEST_IMAGE`), never written.
    pub image: PathBuf,
    /// `RUM_ACCEL`, else `tcg`: `/dev/kvm` here hangs ordinary guests.
    pub accel: String,
}

const HOW: &str = "run `bash scripts/test` (installs prerequisites, builds the image, sets the variables), \
or `scripts/install-prereqs` and `export RUM_TEST_IMAGE=$(tests/image/build)`";

/// The tools, or `None` after printing why the test is skipped.
pub(crate) fn tools() -> Option<Tools> {
    let strict = env::var("RUM_E2E").is_ok_and(|v| v == "1");
    let qemu = in_path("qemu-system-x86_64");
    let qemu_img = in_path("qemu-img");
    let virtiofsd = virtiofsd();
    let image = env::var_os("RUM_TEST_IMAGE")
        .map(PathBuf::from)
        .filter(|p| p.is_file());

    let mut missing = Vec::new();
    if qemu.is_none() {
        missing.push("qemu-system-x86_64 (not in PATH)".to_string());
    }
    if qemu_img.is_none() {
        missing.push("qemu-img (not in PATH)".to_string());
    }
    if virtiofsd.is_none() {
        missing.push(
            "virtiofsd (not in PATH, /usr/libexec, /usr/lib/qemu or ~/.cargo/bin)".to_string(),
        );
    }
    if image.is_none() {
        missing.push(match env::var_os("RUM_TEST_IMAGE") {
            Some(p) => format!(
                "the test guest image (RUM_TEST_IMAGE={} is not a file)",
                Path::new(&p).display()
            ),
            None => "the test guest image (RUM_TEST_IMAGE is unset)".to_string(),
        });
    }
    if !missing.is_empty() {
        let what = missing.join(", ");
        if strict {
            panic!("RUM_E2E=1 but this end-to-end test cannot run: missing {what}; {HOW}");
        }
        // Straight to stderr: the test harness captures eprintln! of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: end-to-end test needs {what}; {HOW}, then set RUM_E2E=1"
        );
        return None;
    }
    Some(Tools {
        qemu: qemu?,
        qemu_img: qemu_img?,
        virtiofsd: virtiofsd?,
        image: image?,
        accel: env::var("RUM_ACCEL").unwrap_or_else(|_| "tcg".to_string()),
    })
}

pub(crate) fn in_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn virtiofsd() -> Option<PathBuf> {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    in_path("virtiofsd").or_else(|| {
        [
            Some(PathBuf::from("/usr/libexec/virtiofsd")),
            Some(PathBuf::from("/usr/lib/qemu/virtiofsd")),
            cargo_home.map(|h| h.join("bin/virtiofsd")),
        ]
        .into_iter()
        .flatten()
        .find(|p| is_executable(p))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
