//! The `qemu-img` runs of a bake: measuring and flattening the overlay (or
//! one of its snapshots) with its backing chain into one standalone qcow2,
//! and checking the result. QEMU's own tool, as flattening a backing chain
//! and an internal snapshot is QEMU's knowledge of its format; the image
//! files of a running VM are read shared (`-U`), from a snapshot that does
//! not change.

use super::super::error::BakeError;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `qemu-img` beside the configured QEMU binary, else from PATH.
pub fn binary(qemu: Option<&Path>) -> PathBuf {
    qemu.and_then(Path::parent)
        .map(|dir| dir.join("qemu-img"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("qemu-img"))
}

/// The snapshot to read `source` at, as `-l` takes it.
fn snapshot_arg(snapshot: Option<&str>) -> Vec<OsString> {
    snapshot
        .map(|tag| vec!["-l".into(), format!("snapshot.name={tag}").into()])
        .unwrap_or_default()
}

pub fn measure_args(source: &Path, snapshot: Option<&str>) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["measure", "--output=json", "-U", "-O", "qcow2"]
        .map(OsString::from)
        .into();
    args.extend(snapshot_arg(snapshot));
    args.push(source.into());
    args
}

pub fn convert_args(
    source: &Path,
    snapshot: Option<&str>,
    target: &Path,
    compress: bool,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["convert", "-U", "-f", "qcow2", "-O", "qcow2"]
        .map(OsString::from)
        .into();
    if compress {
        args.push("-c".into());
    }
    args.extend(snapshot_arg(snapshot));
    args.push(source.into());
    args.push(target.into());
    args
}

pub fn check_args(image: &Path) -> Vec<OsString> {
    vec!["check".into(), "-q".into(), image.into()]
}

/// Runs `qemu-img ARGS`; its stdout, or its own words on failure.
pub fn run(binary: &Path, args: &[OsString]) -> Result<String, BakeError> {
    let what = || {
        format!(
            "qemu-img {}",
            args.first()
                .map(|a| a.to_string_lossy())
                .unwrap_or_default()
        )
    };
    let out = Command::new(binary)
        .args(args)
        .output()
        .map_err(|e| BakeError::Tool {
            tool: what(),
            message: format!("cannot run {}: {e}", binary.display()),
        })?;
    if !out.status.success() {
        return Err(BakeError::Tool {
            tool: what(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Bytes the flattened qcow2 needs, from `qemu-img measure`'s JSON.
pub fn required(measure_json: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(measure_json)
        .ok()?
        .get("required")?
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_read_with_l_and_a_running_vm_shared() {
        let args = convert_args(
            Path::new("/d/disk.qcow2"),
            Some("pre-provision"),
            Path::new("/c/out.qcow2"),
            true,
        );
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "convert",
                "-U",
                "-f",
                "qcow2",
                "-O",
                "qcow2",
                "-c",
                "-l",
                "snapshot.name=pre-provision",
                "/d/disk.qcow2",
                "/c/out.qcow2"
            ]
        );
        let measure = measure_args(Path::new("/d/disk.qcow2"), None);
        assert!(!measure.iter().any(|a| a == "-l"));
        assert_eq!(
            required(r#"{"bitmaps": 0, "required": 499056640, "fully-allocated": 2148073472}"#),
            Some(499056640)
        );
    }
}
