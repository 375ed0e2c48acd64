//! Overlays and drives rum writes natively, checked by QEMU's own tools:
//! `qemu-img check` and `info`, and `qemu-io` reading and writing through them.

use rum::disk::{ImageFormat, backing_file, create_drive, create_overlay, inspect};
use std::path::Path;
use std::process::Command;

fn tools_present() -> bool {
    let ok = ["qemu-img", "qemu-io"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        assert!(
            std::env::var("RUM_E2E").as_deref() != Ok("1"),
            "qemu-img/qemu-io missing: install qemu-utils (scripts/install-prereqs)"
        );
        eprintln!("skipped: qemu-img or qemu-io is not installed (package qemu-utils)");
    }
    ok
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu_io(image: &Path, format: &str, command: &str) -> String {
    run(Command::new("qemu-io")
        .args(["-f", format, "-c", command])
        .arg(image))
}

fn info(image: &Path) -> serde_json::Value {
    serde_json::from_str(&run(Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(image)))
    .unwrap()
}

fn check(image: &Path) {
    run(Command::new("qemu-img").args(["check", "-q"]).arg(image));
}

#[test]
fn overlays_on_qcow2_and_raw_bases_read_through_and_check_clean() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (format, base_name) in [("qcow2", "base.qcow2"), ("raw", "base.img")] {
        let base = dir.path().join(base_name);
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", format])
            .arg(&base)
            .arg("1G"));
        qemu_io(&base, format, "write -P 0xab 1M 64k");
        let detected = inspect(&base).unwrap();
        assert_eq!(detected.format.as_str(), format, "detected by content");
        assert_eq!(detected.virtual_size, 1 << 30);

        let overlay = dir.path().join(format!("overlay-{format}.qcow2"));
        create_overlay(&overlay, 20 << 30, &base, detected.format).unwrap();
        check(&overlay);
        let info = info(&overlay);
        assert_eq!(info["virtual-size"], 20u64 << 30);
        assert_eq!(info["backing-filename"], base.to_str().unwrap());
        assert_eq!(info["backing-filename-format"], format);
        assert_eq!(
            backing_file(&overlay).unwrap().as_deref(),
            Some(base.as_path())
        );
        assert_eq!(
            backing_file(&base).unwrap(),
            None,
            "{format} base has no backing"
        );

        // Reads fall through to the base; writes land in the overlay only.
        let read = qemu_io(&overlay, "qcow2", "read -P 0xab 1M 64k");
        assert!(read.contains("read 65536/65536"), "{read}");
        qemu_io(&overlay, "qcow2", "write -P 0xcd 1M 4k");
        qemu_io(&overlay, "qcow2", "write -P 0xef 19G 1M");
        check(&overlay);
        qemu_io(&base, format, "read -P 0xab 1M 64k");
        let read = qemu_io(&overlay, "qcow2", "read -P 0xcd 1M 4k");
        assert!(read.contains("read 4096/4096"), "{read}");
        assert_eq!(inspect(&overlay).unwrap().format, ImageFormat::Qcow2);
    }
}

#[test]
fn drives_are_empty_qcow2_and_never_overwritten() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let drive = dir.path().join("data.qcow2");
    create_drive(&drive, 10 << 30).unwrap();
    check(&drive);
    let info = info(&drive);
    assert_eq!(info["virtual-size"], 10u64 << 30);
    assert!(info.get("backing-filename").is_none());
    qemu_io(&drive, "qcow2", "write -P 0x11 9G 1M");
    check(&drive);
    let err = create_drive(&drive, 1 << 30).unwrap_err();
    assert!(err.to_string().contains("never overwrites"), "{err}");
    assert_eq!(inspect(&drive).unwrap().virtual_size, 10 << 30);
}

#[test]
fn snapshot_tables_are_read() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("snap.qcow2");
    create_drive(&disk, 64 << 20).unwrap();
    for name in ["first", "a-longer-second-name"] {
        run(Command::new("qemu-img")
            .args(["snapshot", "-c", name])
            .arg(&disk));
    }
    let found = rum::disk::snapshots(&disk).unwrap();
    let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["first", "a-longer-second-name"]);
    assert!(
        found
            .iter()
            .all(|s| s.vm_state_size == 0 && s.date > 1_600_000_000)
    );
    assert!(rum::disk::snapshots(&dir.path().join("snap.qcow2")).is_ok());
}

/// The test guest image is a hybrid GPT image (BIOS boot partition and ESP).
#[test]
fn the_test_image_boots_with_bios() {
    let Some(image) = std::env::var_os("RUM_TEST_IMAGE") else {
        eprintln!("skipped: RUM_TEST_IMAGE is unset");
        return;
    };
    let image = std::path::PathBuf::from(image);
    let info = inspect(&image).unwrap();
    assert_eq!(
        rum::disk::boot_needs(&image, info.format).unwrap(),
        rum::disk::BootNeeds::Bios
    );
}
