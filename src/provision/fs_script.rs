//! The generated drives/filesystems script (order 0): formats and mounts the
//! `[drives]` as `[[fs.*]]` says.
//!
//! The guest finds a drive by the serial QEMU gives it
//! (`/dev/disk/by-id/virtio-<serial>`). The script runs again after every
//! snapshot restore and `rum retry`, so each step checks first: a drive is
//! formatted only while it holds nothing, an fstab line is added only when it
//! is missing, and a filesystem is mounted only when it is not. Every value
//! from rum.toml reaches the script as one single-quoted word.

use crate::config::{Drive, Filesystem, FsKind};
use rum_seed::shell::{fstab_field, quote};

/// Ends every fstab line the script writes. Not the seed's bare
/// `# rum-managed`: `rum-setup.sh` drops lines ending in that on every boot
/// and writes back only the virtiofs ones.
pub const FSTAB_MARKER: &str = "# rum-managed fs";

/// Seconds the script waits for a drive's device node to appear.
const DEVICE_WAIT_SECS: u32 = 30;

/// The guest's device node for `drive`, as udev names it.
pub fn device_path(drive: &Drive) -> String {
    format!("/dev/disk/by-id/virtio-{}", drive.serial())
}

/// The `[drives]` entries `fs` is made of, in its order.
fn members<'a>(fs: &Filesystem, drives: &'a [Drive]) -> Vec<&'a Drive> {
    fs.drives
        .iter()
        .map(|name| {
            drives
                .iter()
                .find(|d| &d.name == name)
                .expect("validation lets only defined drives through")
        })
        .collect()
}

/// The script that formats and mounts `filesystems`, run as root with `sh`;
/// `None` when there are none.
pub fn fs_script(drives: &[Drive], filesystems: &[Filesystem]) -> Option<String> {
    if filesystems.is_empty() {
        return None;
    }
    let members: Vec<Vec<&Drive>> = filesystems.iter().map(|fs| members(fs, drives)).collect();
    let mut s = String::from(PRELUDE);
    // Every tool first: a missing one stops the script before it touches a drive.
    let mut tools = Vec::new();
    for tool in filesystems.iter().flat_map(|fs| needs(fs.kind)) {
        if !tools.contains(&tool) {
            tools.push(tool);
        }
    }
    for (tool, package, kind) in tools {
        s += &format!(
            "need {tool} {package} {}\n",
            quote(&format!("[[fs.{kind}]]"))
        );
    }
    for (fs, members) in filesystems.iter().zip(&members) {
        s += "\n";
        s += &match fs.kind {
            FsKind::Zfs => zfs(fs, members),
            _ => block_fs(fs, members),
        };
    }
    Some(s)
}

/// Shell functions every script starts with.
const PRELUDE: &str = r#"#!/bin/sh
# rum: formats and mounts the [drives] as rum.toml's [[fs.*]] says. It runs
# again after every snapshot restore and `rum retry`: it formats only empty
# drives, adds each fstab line once and mounts only what is not mounted.
set -eu
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
marker='# rum-managed fs'

fail() {
  printf 'rum: %s\n' "$1" >&2
  exit 1
}

need() { # TOOL PACKAGE WHO
  command -v "$1" >/dev/null 2>&1 ||
    fail "$1 not found: $3 needs the $2 package (Debian/Ubuntu: apt-get install $2)"
}

wait_drive() { # NAME DEVICE SECONDS
  waited=0
  until [ -b "$2" ]; do
    [ "$waited" -lt "$3" ] ||
      fail "drive $1 did not appear as $2 within $3 s"
    udevadm settle --timeout=1 >/dev/null 2>&1 || true
    sleep 1
    waited=$((waited + 1))
  done
}

# Prints what DEVICE holds: a filesystem type, "a partition table", or nothing.
fs_type() { # DEVICE
  probe=0
  info=$(blkid -p -o export "$1" 2>/dev/null) || probe=$?
  case $probe in
    0) ;;
    2) return 0 ;;
    *) fail "cannot tell what $1 holds (blkid -p exit status $probe)" ;;
  esac
  found=$(printf '%s\n' "$info" | sed -n 's/^TYPE=//p')
  if [ -z "$found" ] && printf '%s\n' "$info" | grep -q '^PTTYPE='; then
    found='a partition table'
  fi
  printf '%s\n' "${found:-data blkid cannot name}"
}

# Prints "new" when every drive is empty, "old" when every one holds TYPE;
# fails otherwise: rum never formats a drive that holds anything.
drives_state() { # TYPE NAME DEVICE [NAME DEVICE]...
  want=$1
  shift
  empty=0
  formatted=0
  while [ "$#" -gt 0 ]; do
    held=$(fs_type "$2") || exit 1
    if [ -z "$held" ]; then
      empty=$((empty + 1))
    elif [ "$held" = "$want" ]; then
      formatted=$((formatted + 1))
    else
      fail "drive $1 ($2) already holds $held, not $want; rum formats only empty drives"
    fi
    shift 2
  done
  if [ "$formatted" -eq 0 ]; then
    echo new
  elif [ "$empty" -eq 0 ]; then
    echo old
  else
    fail "some drives of this $want filesystem are empty and some are not; rum formats only when all are empty"
  fi
}

# Adds the fstab line (UUID=<uuid> REST) unless it is there, replacing a
# line of rum's for the same filesystem, then mounts TARGET.
mount_fs() { # DEVICE TARGET REST
  uuid=$(blkid -p -s UUID -o value "$1") || fail "cannot read the UUID of $1"
  [ -n "$uuid" ] || fail "$1 has no filesystem UUID"
  line="UUID=$uuid $3"
  if ! grep -qxF -e "$line" /etc/fstab 2>/dev/null; then
    grep -v -e "^UUID=$uuid .*$marker\$" /etc/fstab >/etc/fstab.rum-fs 2>/dev/null || true
    printf '%s\n' "$line" >>/etc/fstab.rum-fs
    mv /etc/fstab.rum-fs /etc/fstab
    if command -v systemctl >/dev/null 2>&1; then
      systemctl daemon-reload >/dev/null 2>&1 || true
    fi
  fi
  mkdir -p "$2"
  mountpoint -q "$2" || mount "$2"
}
"#;

/// `(tool, package, kind)` a kind of filesystem needs besides util-linux.
fn needs(kind: FsKind) -> Vec<(&'static str, &'static str, &'static str)> {
    let k = kind.as_str();
    match kind {
        FsKind::Ext4 => vec![("mkfs.ext4", "e2fsprogs", k)],
        FsKind::Xfs => vec![("mkfs.xfs", "xfsprogs", k)],
        FsKind::Btrfs => vec![
            ("mkfs.btrfs", "btrfs-progs", k),
            ("btrfs", "btrfs-progs", k),
        ],
        FsKind::Zfs => vec![("zpool", "zfsutils-linux", k), ("zfs", "zfsutils-linux", k)],
    }
}

/// `# [[fs.KIND]] a, b -> TARGET` with every drive waited for; returns the
/// `NAME DEVICE` arguments of `drives_state`.
fn header_and_wait(s: &mut String, fs: &Filesystem, members: &[&Drive]) -> String {
    // A comment holds any text but a newline, and targets have none (config validation).
    *s += &format!(
        "# [[fs.{}]] {} -> {}\n",
        fs.kind.as_str(),
        fs.drives.join(", "),
        fs.target
    );
    let mut pairs = Vec::new();
    for drive in members {
        let (name, device) = (quote(&drive.name), quote(&device_path(drive)));
        *s += &format!("wait_drive {name} {device} {DEVICE_WAIT_SECS}\n");
        pairs.push(format!("{name} {device}"));
    }
    pairs.join(" ")
}

/// ext4, xfs and btrfs: mkfs on empty drives, an fstab line by UUID, mount.
fn block_fs(fs: &Filesystem, members: &[&Drive]) -> String {
    let mut s = String::new();
    let pairs = header_and_wait(&mut s, fs, members);
    let kind = fs.kind.as_str();
    let devices: Vec<String> = members.iter().map(|d| quote(&device_path(d))).collect();
    let mkfs = match fs.kind {
        FsKind::Ext4 => format!("mkfs.ext4 -q {}", devices.join(" ")),
        FsKind::Xfs => format!("mkfs.xfs -q {}", devices.join(" ")),
        FsKind::Btrfs => {
            let mode = fs
                .mode
                .as_deref()
                .map(|m| format!("-d {m} -m {m} ", m = quote(m)))
                .unwrap_or_default();
            format!("mkfs.btrfs -q {mode}{}", devices.join(" "))
        }
        FsKind::Zfs => unreachable!("zfs has its own script"),
    };
    s += &format!(
        "state=$(drives_state {kind} {pairs}) || exit 1\n\
         if [ \"$state\" = new ]; then\n  {mkfs}\n  udevadm settle --timeout=10 >/dev/null 2>&1 || true\nfi\n"
    );
    if fs.kind == FsKind::Btrfs {
        // The kernel must know every device of a multi-device btrfs before it mounts.
        s += "btrfs device scan >/dev/null 2>&1 || true\n";
    }
    // fsck at boot: ext4 only (xfs and btrfs check themselves on mount).
    let pass = if fs.kind == FsKind::Ext4 { 2 } else { 0 };
    let rest = format!(
        "{} {kind} defaults,nofail 0 {pass} {FSTAB_MARKER}",
        fstab_field(&fs.target)
    );
    s += &format!(
        "mount_fs {} {} {}\n",
        devices[0],
        quote(&fs.target),
        quote(&rest)
    );
    s
}

/// zfs: the pool is kept if it exists or can be imported, else created on
/// empty drives with the target as its mountpoint; zfs mounts it itself.
fn zfs(fs: &Filesystem, members: &[&Drive]) -> String {
    let mut s = String::new();
    let pairs = header_and_wait(&mut s, fs, members);
    let pool = quote(fs.pool.as_deref().unwrap_or(&fs.drives[0]));
    let target = quote(&fs.target);
    let vdev = match fs.mode.as_deref() {
        None | Some("stripe") => String::new(),
        Some(mode) => format!("{} ", quote(mode)),
    };
    let devices: Vec<String> = members.iter().map(|d| quote(&device_path(d))).collect();
    let not_empty = quote(&format!(
        "zfs pool {} is not imported and cannot be; its drives are not empty, so rum leaves them alone",
        fs.pool.as_deref().unwrap_or(&fs.drives[0])
    ));
    s += &format!(
        "if ! zpool list -H -o name {pool} >/dev/null 2>&1 &&\n  \
         ! zpool import -d /dev/disk/by-id {pool} >/dev/null 2>&1; then\n  \
         state=$(drives_state zfs_member {pairs}) || exit 1\n  \
         [ \"$state\" = new ] || fail {not_empty}\n  \
         zpool create -m {target} {pool} {vdev}{}\n\
         fi\n\
         mountpoint -q {target} || zfs mount {pool}\n",
        devices.join(" ")
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ByteSize;
    use std::io::Write;
    use std::process::{Command, Stdio};

    const HOSTILE: &str = "/mnt/it's a \"dir\" $HOME `id`; echo pwned \\ ünï ✓";

    fn drives(names: &[&str]) -> Vec<Drive> {
        names
            .iter()
            .map(|name| Drive {
                name: (*name).to_owned(),
                size: ByteSize::from_bytes(1 << 30),
            })
            .collect()
    }

    fn fs(kind: FsKind, drives: &[&str], target: &str) -> Filesystem {
        Filesystem {
            kind,
            drives: drives.iter().map(|d| (*d).to_owned()).collect(),
            target: target.to_owned(),
            mode: None,
            pool: (kind == FsKind::Zfs).then(|| drives[0].to_owned()),
        }
    }

    fn script(filesystems: &[Filesystem]) -> String {
        let names: Vec<&str> = filesystems
            .iter()
            .flat_map(|f| f.drives.iter().map(String::as_str))
            .collect();
        let script = fs_script(&drives(&names), filesystems).expect("a script");
        assert_syntax_ok(&script);
        script
    }

    /// `sh -n` (and bash, when there is one) parse the whole script.
    fn assert_syntax_ok(script: &str) {
        for shell in ["sh", "dash", "bash"] {
            let Ok(mut child) = Command::new(shell)
                .arg("-n")
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
            else {
                assert_ne!(shell, "sh", "sh must exist");
                continue;
            };
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{shell} -n rejects the script: {}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The words `sh` makes of `line`'s arguments, with the command replaced by a printer.
    fn words(line: &str) -> Vec<String> {
        let (command, args) = line.split_once(' ').unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{command}() {{ printf '%s\\0' \"$@\"; }}\n{command} {args}"
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}");
        String::from_utf8(out.stdout)
            .unwrap()
            .split_terminator('\0')
            .map(str::to_owned)
            .collect()
    }

    fn line_starting<'a>(script: &'a str, start: &str) -> &'a str {
        script
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line starting with {start:?} in\n{script}"))
            .trim_start()
    }

    #[test]
    fn no_filesystems_means_no_script() {
        assert_eq!(fs_script(&drives(&["data"]), &[]), None);
    }

    #[test]
    fn serial_is_the_first_20_characters_of_the_name() {
        let [short, long] =
            <[Drive; 2]>::try_from(drives(&["data", "a-very-long-drive-name-indeed"])).unwrap();
        assert_eq!(short.serial(), "data");
        assert_eq!(long.serial(), "a-very-long-drive-na");
        assert_eq!(
            device_path(&long),
            "/dev/disk/by-id/virtio-a-very-long-drive-na"
        );
    }

    #[test]
    fn ext4_waits_formats_when_empty_and_mounts_by_uuid() {
        let s = script(&[fs(FsKind::Ext4, &["data"], "/mnt/data")]);
        assert!(s.starts_with("#!/bin/sh\n"), "{s}");
        assert!(s.contains("\nset -eu\n"), "{s}");
        assert!(
            s.contains("need mkfs.ext4 e2fsprogs '[[fs.ext4]]'\n"),
            "{s}"
        );
        assert!(
            s.contains(
                "wait_drive data /dev/disk/by-id/virtio-data 30\n\
             state=$(drives_state ext4 data /dev/disk/by-id/virtio-data) || exit 1\n\
             if [ \"$state\" = new ]; then\n  mkfs.ext4 -q /dev/disk/by-id/virtio-data\n"
            ),
            "{s}"
        );
        assert!(s.contains(
            "mount_fs /dev/disk/by-id/virtio-data /mnt/data '/mnt/data ext4 defaults,nofail 0 2 # rum-managed fs'\n"
        ), "{s}");
        assert!(!s.contains("btrfs") && !s.contains("zpool"), "{s}");
    }

    #[test]
    fn xfs_uses_mkfs_xfs_and_names_its_package() {
        let s = script(&[fs(FsKind::Xfs, &["logs"], "/srv/logs")]);
        assert!(s.contains("need mkfs.xfs xfsprogs '[[fs.xfs]]'\n"), "{s}");
        assert!(
            s.contains("state=$(drives_state xfs logs /dev/disk/by-id/virtio-logs)"),
            "{s}"
        );
        assert!(
            s.contains("  mkfs.xfs -q /dev/disk/by-id/virtio-logs\n"),
            "{s}"
        );
        assert!(
            s.contains("'/srv/logs xfs defaults,nofail 0 0 # rum-managed fs'"),
            "{s}"
        );
    }

    #[test]
    fn btrfs_spans_its_drives_with_the_mode_for_data_and_metadata() {
        let mut btrfs = fs(FsKind::Btrfs, &["b1", "b2"], "/mnt/pool");
        btrfs.mode = Some("raid1".into());
        let s = script(&[btrfs]);
        assert!(s.contains("need btrfs btrfs-progs '[[fs.btrfs]]'\n"), "{s}");
        assert!(
            s.contains("need mkfs.btrfs btrfs-progs '[[fs.btrfs]]'\n"),
            "{s}"
        );
        assert!(s.contains("wait_drive b1 /dev/disk/by-id/virtio-b1 30\nwait_drive b2 /dev/disk/by-id/virtio-b2 30\n"), "{s}");
        assert!(s.contains(
            "state=$(drives_state btrfs b1 /dev/disk/by-id/virtio-b1 b2 /dev/disk/by-id/virtio-b2)"
        ), "{s}");
        assert!(s.contains(
            "  mkfs.btrfs -q -d raid1 -m raid1 /dev/disk/by-id/virtio-b1 /dev/disk/by-id/virtio-b2\n"
        ), "{s}");
        assert!(s.contains("btrfs device scan"), "{s}");
        // The filesystem UUID is on every device; the first one names it.
        assert!(s.contains("mount_fs /dev/disk/by-id/virtio-b1 /mnt/pool '/mnt/pool btrfs defaults,nofail 0 0 # rum-managed fs'"), "{s}");

        let plain = script(&[fs(FsKind::Btrfs, &["b1"], "/mnt/one")]);
        assert!(
            plain.contains("  mkfs.btrfs -q /dev/disk/by-id/virtio-b1\n"),
            "{plain}"
        );
    }

    #[test]
    fn zfs_keeps_or_imports_the_pool_before_creating_it_with_the_target_as_mountpoint() {
        let mut mirror = fs(FsKind::Zfs, &["z1", "z2"], "/mnt/tank");
        mirror.mode = Some("mirror".into());
        let s = script(&[mirror]);
        assert!(
            s.contains("need zpool zfsutils-linux '[[fs.zfs]]'\n"),
            "{s}"
        );
        assert!(s.contains("need zfs zfsutils-linux '[[fs.zfs]]'\n"), "{s}");
        // zpool first: the one a user knows the package by.
        assert!(s.find("need zpool") < s.find("need zfs "), "{s}");
        let list = s.find("zpool list -H -o name z1").expect("pool check");
        let import = s
            .find("zpool import -d /dev/disk/by-id z1")
            .expect("import");
        let create = s
            .find("zpool create -m /mnt/tank z1 mirror /dev/disk/by-id/virtio-z1 /dev/disk/by-id/virtio-z2\n")
            .unwrap_or_else(|| panic!("{s}"));
        assert!(list < import && import < create, "{s}");
        assert!(s.contains("state=$(drives_state zfs_member z1 /dev/disk/by-id/virtio-z1 z2 /dev/disk/by-id/virtio-z2)"), "{s}");
        assert!(
            s.contains("mountpoint -q /mnt/tank || zfs mount z1\n"),
            "{s}"
        );
        assert!(!s.contains("mount_fs /"), "zfs has no fstab line: {s}");

        let mut stripe = fs(FsKind::Zfs, &["z1", "z2"], "/mnt/tank");
        stripe.mode = Some("stripe".into());
        stripe.pool = Some("tank".into());
        let s = script(&[stripe]);
        assert!(s.contains(
            "zpool create -m /mnt/tank tank /dev/disk/by-id/virtio-z1 /dev/disk/by-id/virtio-z2\n"
        ), "{s}");
    }

    #[test]
    fn tools_are_checked_once_before_any_drive_is_touched() {
        let s = script(&[
            fs(FsKind::Ext4, &["a"], "/mnt/a"),
            fs(FsKind::Ext4, &["b"], "/mnt/b"),
            fs(FsKind::Zfs, &["c"], "/mnt/c"),
        ]);
        assert_eq!(s.matches("need mkfs.ext4 ").count(), 1, "{s}");
        let last_need = s.rfind("\nneed ").unwrap();
        let first_wait = s.find("\nwait_drive ").unwrap();
        assert!(last_need < first_wait, "{s}");
    }

    #[test]
    fn every_step_is_guarded_for_a_rerun() {
        let s = script(&[fs(FsKind::Ext4, &["data"], "/mnt/data")]);
        // mkfs only on drives that hold nothing; blkid -p probes the device itself.
        assert!(
            s.contains("info=$(blkid -p -o export \"$1\" 2>/dev/null)"),
            "{s}"
        );
        assert!(
            s.contains("if [ \"$state\" = new ]; then\n  mkfs.ext4"),
            "{s}"
        );
        // The fstab line is added only when missing, the mount made only when absent.
        assert!(s.contains("if ! grep -qxF -e \"$line\" /etc/fstab"), "{s}");
        assert!(s.contains("mountpoint -q \"$2\" || mount \"$2\""), "{s}");
        // Not the seed's marker, which rum-setup.sh strips on every boot.
        assert!(s.contains("marker='# rum-managed fs'"), "{s}");
        assert!(!s.contains("# rum-managed'"), "{s}");
    }

    #[test]
    fn hostile_targets_stay_one_word() {
        let s = script(&[
            fs(FsKind::Ext4, &["data"], HOSTILE),
            fs(FsKind::Zfs, &["z"], "/mnt/z f's"),
        ]);
        let quoted = r#"'/mnt/it'\''s a "dir" $HOME `id`; echo pwned \ ünï ✓'"#;
        let fstab =
            r#"/mnt/it'\''s\040a\040"dir"\040$HOME\040`id`;\040echo\040pwned\040\134\040ünï\040✓"#;
        let mount = line_starting(&s, "mount_fs ");
        assert_eq!(
            mount,
            format!(
                "mount_fs /dev/disk/by-id/virtio-data {quoted} '{fstab} ext4 defaults,nofail 0 2 # rum-managed fs'"
            )
        );
        assert_eq!(
            words(mount),
            [
                "/dev/disk/by-id/virtio-data",
                HOSTILE,
                r#"/mnt/it's\040a\040"dir"\040$HOME\040`id`;\040echo\040pwned\040\134\040ünï\040✓ ext4 defaults,nofail 0 2 # rum-managed fs"#,
            ]
        );
        let create = line_starting(&s, "zpool create ");
        assert_eq!(
            create,
            r"zpool create -m '/mnt/z f'\''s' z /dev/disk/by-id/virtio-z"
        );
        assert_eq!(
            words(create),
            [
                "create",
                "-m",
                "/mnt/z f's",
                "z",
                "/dev/disk/by-id/virtio-z"
            ]
        );
        assert_eq!(
            line_starting(&s, "mountpoint -q '/mnt/z"),
            r"mountpoint -q '/mnt/z f'\''s' || zfs mount z"
        );
    }

    #[test]
    fn the_fstab_field_survives_the_round_trip_through_octal() {
        assert_eq!(fstab_field("/mnt/a b\\c\td"), r"/mnt/a\040b\134c\011d");
        assert_eq!(quote("plain/path-1.0"), "plain/path-1.0");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
