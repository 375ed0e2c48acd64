//! `[drives]` and `[[fs.*]]`: extra disks and the filesystems made on them.

use super::{Checker, size};
use crate::config::model::{Drive, Filesystem, FsKind, Mount, VIRTIO_SERIAL_LEN};
use crate::config::names::{self, paths_overlap};
use crate::config::raw::{RawDrive, RawFilesystems, RawFs};
use crate::config::size::MIB;
use crate::config::span::KeyPath;
use crate::config::suggest::closest;
use std::collections::{BTreeMap, HashMap, HashSet};

pub(super) fn drives(c: &mut Checker, raw: BTreeMap<String, RawDrive>) -> Vec<Drive> {
    let mut out = Vec::new();
    for (name, drive) in raw {
        let path = KeyPath::root().key("drives").key(&name);
        if let Err(why) = names::check_name(&name) {
            c.problem(path.clone(), format!("has a bad name: {why}"));
            continue;
        }
        let Some(text) = drive.size else {
            c.problem(path.key("size"), "is missing; give a size such as \"10G\"");
            continue;
        };
        let size = size(c, path.key("size"), &text, MIB, "1M");
        // The guest tells drives apart by their virtio serial: the name's first 20 characters.
        let drive = Drive { name, size };
        let serial = drive.serial();
        if let Some(other) = out.iter().find(|d: &&Drive| d.serial() == serial) {
            c.problem(
                path,
                format!(
                    "shares its first {VIRTIO_SERIAL_LEN} characters (`{serial}`) with drive `{}`; the guest tells drives apart by a serial of at most {VIRTIO_SERIAL_LEN} characters, so make the names differ within them",
                    other.name
                ),
            );
        }
        out.push(drive);
    }
    out
}

pub(super) fn filesystems(
    c: &mut Checker,
    raw: RawFilesystems,
    drives: &[Drive],
    mounts: &[Mount],
) -> Vec<Filesystem> {
    let by_kind = [
        (FsKind::Ext4, raw.ext4),
        (FsKind::Xfs, raw.xfs),
        (FsKind::Btrfs, raw.btrfs),
        (FsKind::Zfs, raw.zfs),
    ];
    let defined: HashSet<&str> = drives.iter().map(|d| d.name.as_str()).collect();
    let mut used: HashMap<String, KeyPath> = HashMap::new();
    let mut targets: Vec<(KeyPath, String)> = mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                KeyPath::root().key("mounts").index(i).key("target"),
                m.target.clone(),
            )
        })
        .collect();
    let mut out = Vec::new();
    for (kind, entries) in by_kind {
        for (i, fs) in entries.into_iter().enumerate() {
            let path = KeyPath::root().key("fs").key(kind.as_str()).index(i);
            if let Some(fs) = filesystem(c, kind, fs, &path, &defined, &mut used, &mut targets) {
                out.push(fs);
            }
        }
    }
    out
}

fn filesystem(
    c: &mut Checker,
    kind: FsKind,
    raw: RawFs,
    path: &KeyPath,
    defined: &HashSet<&str>,
    used: &mut HashMap<String, KeyPath>,
    targets: &mut Vec<(KeyPath, String)>,
) -> Option<Filesystem> {
    let (names, names_path) = match (raw.drive, raw.drives) {
        (Some(_), Some(_)) => {
            c.problem(
                path.key("drives"),
                "is given together with `drive`; use one of them",
            );
            return None;
        }
        (Some(one), None) => (vec![one], path.key("drive")),
        (None, Some(many)) if !kind.multi_drive() && many.len() != 1 => {
            c.problem(
                path.key("drives"),
                format!(
                    "lists {} drives, but {} uses exactly one; use `drive`",
                    many.len(),
                    kind.as_str()
                ),
            );
            return None;
        }
        (None, Some(many)) if many.is_empty() => {
            c.problem(path.key("drives"), "is empty; list at least one drive");
            return None;
        }
        (None, Some(many)) => (many, path.key("drives")),
        (None, None) => {
            c.problem(path.key("drive"), "is missing; name a drive from [drives]");
            return None;
        }
    };
    let mut ok = true;
    for name in &names {
        if !defined.contains(name.as_str()) {
            let hint = closest(name, defined.iter().copied())
                .map(|d| format!("did you mean `{d}`? "))
                .unwrap_or_default();
            c.problem_with_help(
                names_path.clone(),
                format!("names drive `{name}`, which is not defined"),
                format!("{hint}add it:\n    [drives.{name}]\n    size = \"10G\""),
            );
            ok = false;
        } else if let Some(first) = used.get(name) {
            c.problem(
                names_path.clone(),
                format!("uses drive `{name}`, which {first} already uses"),
            );
            ok = false;
        } else {
            used.insert(name.clone(), names_path.clone());
        }
    }
    let target = match raw.target.as_deref() {
        None => {
            c.problem(
                path.key("target"),
                "is missing; give a guest mount point such as \"/mnt/data\"",
            );
            None
        }
        Some(text) => {
            match names::normalize_guest_target(text) {
                Err(why) => {
                    c.problem(path.key("target"), why);
                    None
                }
                Ok(target) => {
                    if let Some((other, _)) =
                        targets.iter().find(|(_, t)| paths_overlap(t, &target))
                    {
                        c.problem(path.key("target"), format!("`{target}` overlaps {other}; mount points must not contain each other"));
                        None
                    } else {
                        targets.push((path.key("target"), target.clone()));
                        Some(target)
                    }
                }
            }
        }
    };
    if let Some(mode) = &raw.mode
        && !kind.modes().contains(&mode.as_str())
    {
        if kind.modes().is_empty() {
            c.problem(
                path.key("mode"),
                format!("is set, but {} has no modes; remove it", kind.as_str()),
            );
        } else {
            c.not_allowed(path.key("mode"), mode, kind.modes());
        }
        ok = false;
    }
    let pool = match (kind, raw.pool) {
        (FsKind::Zfs, pool) => {
            let pool = pool.unwrap_or_else(|| names[0].clone());
            if let Err(why) = names::check_name(&pool) {
                c.problem(path.key("pool"), why);
                ok = false;
            }
            Some(pool)
        }
        (_, Some(_)) => {
            c.problem(
                path.key("pool"),
                format!("is only for zfs, not {}", kind.as_str()),
            );
            ok = false;
            None
        }
        (_, None) => None,
    };
    let target = target?;
    ok.then_some(Filesystem {
        kind,
        drives: names,
        target,
        mode: raw.mode,
        pool,
    })
}
