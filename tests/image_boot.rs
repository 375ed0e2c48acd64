//! The test guest image boots like a distro cloud image, independently of
//! rum's own seed and QEMU code: a NoCloud seed made with genisoimage, plain
//! QEMU under SeaBIOS, cloud-init runs runcmd, creates the user with the
//! seed's key, DHCP configures the NIC and growpart fills the disk. (Its
//! OVMF boot is `lifecycle.rs`'s UEFI VM: a boot less in every run.)

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{Firmware, SshKey};

/// Generous: under TCG runcmd came after 90 s alone and 265 s beside other VMs and builds.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const SSH_TIMEOUT: Duration = Duration::from_secs(120);
/// Larger than the image's 2 GiB, so growpart has something to grow into.
const DISK_SIZE: &str = "4G";
const USER: &str = "tester";

#[test]
fn boots_under_seabios() {
    boot_and_check(Firmware::Bios);
}

fn boot_and_check(firmware: Firmware) {
    let Some(env) = support::e2e() else { return };
    let name = match firmware {
        Firmware::Bios => "bios",
        Firmware::Uefi => "uefi",
    };
    let work = env.dir("seed");
    let key = SshKey::generate(&work, "id_ed25519");
    let token = unique_token();
    // The guest computes the marker, so the seed text itself never matches it.
    let marker = format!("image-boot-runcmd-{token}-ok-42");
    let seed = genisoimage_seed(&work, &key, &token);

    let guest = env
        .guest(name, firmware)
        .seed(&seed)
        .disk_size(DISK_SIZE)
        .boot();
    let to_runcmd = guest.wait_for_serial(&marker, BOOT_TIMEOUT);
    eprintln!(
        "[e2e] {name}: runcmd marker on the serial console {to_runcmd:.1?} after QEMU started"
    );

    let ssh = guest.ssh(USER, &key);
    let to_ssh = guest.wait_for_ssh(&ssh, SSH_TIMEOUT);
    eprintln!("[e2e] {name}: SSH login works {to_ssh:.1?} after QEMU started");

    assert_eq!(ssh.check("id -un").trim(), USER);
    assert_eq!(ssh.check("sudo -n id -u").trim(), "0", "passwordless sudo");

    let addr = ssh.check("ip -4 -o addr show scope global");
    assert!(
        addr.contains("inet 10.0.2.15/24") && addr.contains("dynamic"),
        "expected a DHCP lease of 10.0.2.15 from user-mode networking, got:\n{addr}"
    );

    let booted_via = ssh.check("if [ -d /sys/firmware/efi ]; then echo uefi; else echo bios; fi");
    assert_eq!(booted_via.trim(), name, "firmware the guest booted through");

    let root_bytes: u64 = ssh
        .check("df -B1 --output=size / | tail -n1")
        .trim()
        .parse()
        .expect("df prints the root filesystem size");
    assert!(
        root_bytes > 3 << 30,
        "growpart/resize2fs did not grow / to the {DISK_SIZE} disk: {root_bytes} bytes"
    );

    let passwords = ssh.check(&format!("sudo -n passwd -S root; sudo -n passwd -S {USER}"));
    for line in passwords.lines() {
        let status = line.split_whitespace().nth(1).unwrap_or_default();
        assert_eq!(status, "L", "password logins must be impossible: {line}");
    }
}

/// A NoCloud seed made with the standard tool, not rum's ISO writer.
fn genisoimage_seed(dir: &Path, key: &SshKey, token: &str) -> PathBuf {
    let user_data = format!(
        "#cloud-config
users:
  - name: {USER}
    shell: /bin/bash
    sudo: ALL=(ALL) NOPASSWD:ALL
    lock_passwd: true
    ssh_authorized_keys:
      - {}
runcmd:
  - echo \"image-boot-runcmd-{token}-ok-$((40 + 2))\" > /dev/ttyS0
",
        key.public
    );
    let meta_data = format!("instance-id: image-boot-{token}\nlocal-hostname: image-boot\n");
    fs::write(dir.join("user-data"), user_data).expect("write user-data");
    fs::write(dir.join("meta-data"), meta_data).expect("write meta-data");

    let iso = dir.join("seed.iso");
    let out = Command::new("genisoimage")
        .current_dir(dir)
        .args(["-quiet", "-output"])
        .arg(&iso)
        .args([
            "-volid",
            "cidata",
            "-joliet",
            "-rock",
            "user-data",
            "meta-data",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("run genisoimage ({e}); install it with scripts/install-prereqs")
        });
    assert!(
        out.status.success(),
        "genisoimage failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}

/// Distinguishes this boot's marker from any other test's.
fn unique_token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}
