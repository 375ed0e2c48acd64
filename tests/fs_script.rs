//! The generated drives/filesystems script end to end on the test guest image
//! under TCG: ext4, xfs and btrfs (raid1 over two drives) on hostile mount
//! points, a second run that changes nothing, a drive that already holds data
//! left alone, and zfs failing with the package to install. One boot.

mod support;

use std::path::Path;
use support::{E2e, RumRun};

/// `rum exec --user root -- ARGS`.
fn root(env: &E2e, args: &[&str]) -> RumRun {
    let mut all = vec!["exec", "--user", "root", "--"];
    all.extend_from_slice(args);
    env.rum(&all)
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Renders the script for the config at `file` and copies it into the guest as `guest_path`.
fn push_script(env: &E2e, file: &Path, guest_path: &str) -> String {
    let config = rum::config::load(file)
        .unwrap_or_else(|e| panic!("load {}: {e}", file.display()))
        .config;
    let script = rum::provision::fs_script::fs_script(&config.drives, &config.filesystems)
        .expect("the config has filesystems");
    let local = env
        .root
        .join(guest_path.trim_start_matches('/').replace('/', "-"));
    std::fs::write(&local, &script).unwrap();
    env.rum(&["cp", local.to_str().unwrap(), &format!(":{guest_path}")])
        .assert_success();
    script
}

/// rum's fstab lines for the drives, in order.
fn rum_fstab_lines(env: &E2e) -> Vec<String> {
    let fstab = root(env, &["cat", "/etc/fstab"]);
    fstab.assert_success();
    fstab
        .stdout
        .lines()
        .filter(|l| l.ends_with("# rum-managed fs"))
        .map(str::to_owned)
        .collect()
}

const EXT4: &str = "/mnt/ext4 it's \"quoted\" $HOME `id`; echo pwned";
const XFS: &str = "/srv/xfs ünï ✓ back\\slash";
const BTRFS: &str = "/mnt/btr fs;$(touch /tmp/pwned)'";

#[test]
fn drives_are_formatted_once_and_mounted_on_hostile_targets() {
    let Some(env) = support::e2e() else { return };
    let mut toml = String::new();
    for drive in ["e4", "xf", "b1", "b2", "z1"] {
        toml += &format!("[drives.{drive}]\nsize = \"1G\"\n\n");
    }
    toml += &format!(
        "[[fs.ext4]]\ndrive = \"e4\"\ntarget = {}\n\n\
         [[fs.xfs]]\ndrive = \"xf\"\ntarget = {}\n\n\
         [[fs.btrfs]]\ndrives = [\"b1\", \"b2\"]\nmode = \"raid1\"\ntarget = {}\n",
        toml_string(EXT4),
        toml_string(XFS),
        toml_string(BTRFS)
    );
    let main = env.write_rum_toml(&toml);
    // Configs that are only rendered, never booted: zfs on z1, and xfs over ext4's drive.
    let image = toml_string(env.tools.image.to_str().unwrap());
    let zfs = env.dir("zfs").join("rum.toml");
    std::fs::write(
        &zfs,
        format!(
            "[image]\nbase = {image}\n[drives.z1]\nsize = \"1G\"\n\
             [[fs.zfs]]\ndrive = \"z1\"\ntarget = \"/mnt/tank\"\nmode = \"stripe\"\n"
        ),
    )
    .unwrap();
    let clash = env.dir("clash").join("rum.toml");
    std::fs::write(
        &clash,
        format!(
            "[image]\nbase = {image}\n[drives.e4]\nsize = \"1G\"\n\
             [[fs.xfs]]\ndrive = \"e4\"\ntarget = \"/mnt/other\"\n"
        ),
    )
    .unwrap();

    env.rum(&["up", "-d"]).assert_success();
    push_script(&env, &main, "/tmp/fs.sh");

    let first = root(&env, &["sh", "/tmp/fs.sh"]);
    first.assert_success();
    assert!(
        !first.stdout.lines().any(|l| l == "pwned"),
        "a target ran as code: {first}"
    );
    for (target, kind) in [(EXT4, "ext4"), (XFS, "xfs"), (BTRFS, "btrfs")] {
        let found = root(&env, &["findmnt", "-no", "FSTYPE", "--mountpoint", target]);
        assert_eq!(found.stdout.trim(), kind, "{target}: {found}");
        root(
            &env,
            &[
                "sh",
                "-c",
                "printf '%s\\n' \"$2\" > \"$1/marker\"",
                "sh",
                target,
                kind,
            ],
        )
        .assert_success();
    }
    root(&env, &["test", "!", "-e", "/tmp/pwned"]).assert_success();
    let df = root(&env, &["btrfs", "filesystem", "df", BTRFS]);
    assert!(
        df.stdout.contains("Data, RAID1") && df.stdout.contains("Metadata, RAID1"),
        "{df}"
    );
    let fstab = rum_fstab_lines(&env);
    assert_eq!(fstab.len(), 3, "{fstab:#?}");
    assert!(
        fstab.iter().any(|l| l.contains(
            r#" /mnt/ext4\040it's\040"quoted"\040$HOME\040`id`;\040echo\040pwned ext4 defaults,nofail 0 2 "#
        )),
        "{fstab:#?}"
    );
    assert!(fstab.iter().all(|l| l.starts_with("UUID=")), "{fstab:#?}");

    // A second run (as after a snapshot restore) formats nothing and adds no line.
    let second = root(&env, &["sh", "/tmp/fs.sh"]);
    second.assert_success();
    for (target, kind) in [(EXT4, "ext4"), (XFS, "xfs"), (BTRFS, "btrfs")] {
        let marker = root(&env, &["cat", &format!("{target}/marker")]);
        assert_eq!(marker.stdout, format!("{kind}\n"), "{target}: {marker}");
    }
    assert_eq!(rum_fstab_lines(&env), fstab, "the second run changed fstab");

    // The seed's every-boot setup rewrites its own fstab lines and keeps these.
    root(
        &env,
        &[
            "sh",
            "-c",
            "m=$(mktemp -d) && mount -o ro LABEL=cidata \"$m\" && sh \"$m/rum-setup.sh\"; s=$?; umount \"$m\"; exit $s",
        ],
    )
    .assert_success();
    assert_eq!(
        rum_fstab_lines(&env),
        fstab,
        "rum-setup.sh dropped the lines"
    );

    // A drive that holds a filesystem is never formatted as another one.
    push_script(&env, &clash, "/tmp/clash.sh");
    let refused = root(&env, &["sh", "/tmp/clash.sh"]);
    refused.assert_code(1);
    assert!(
        refused
            .stderr
            .contains("drive e4 (/dev/disk/by-id/virtio-e4) already holds ext4, not xfs"),
        "{refused}"
    );
    let kept = root(&env, &["cat", &format!("{EXT4}/marker")]);
    assert_eq!(kept.stdout, "ext4\n", "{kept}");

    // zfs is not installable on the image: the script says which package to get.
    push_script(&env, &zfs, "/tmp/zfs.sh");
    let no_zfs = root(&env, &["sh", "/tmp/zfs.sh"]);
    no_zfs.assert_code(1);
    assert!(
        no_zfs
            .stderr
            .contains("zpool not found: [[fs.zfs]] needs the zfsutils-linux package"),
        "{no_zfs}"
    );

    env.rum(&["destroy", "-f"]).assert_success();
    let strays = env.procs.strays();
    assert!(strays.is_empty(), "QEMU/virtiofsd left running: {strays:?}");
}
