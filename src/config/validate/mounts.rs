//! `[[mounts]]`: host directories shared into the guest over virtiofs.

use super::Checker;
use crate::config::model::Mount;
use crate::config::names::{self, paths_overlap};
use crate::config::raw::RawMount;
use crate::config::span::KeyPath;
use crate::image::source::resolve_host_path;
use std::path::{Path, PathBuf};

pub(super) fn mounts(c: &mut Checker, raw: Vec<RawMount>, dir: &Path) -> Vec<Mount> {
    let mut out: Vec<(usize, Mount)> = Vec::new();
    let mut defaults = 0;
    for (i, mount) in raw.into_iter().enumerate() {
        let path = KeyPath::root().key("mounts").index(i);
        c.ignored(
            &mount.inotify,
            path.key("inotify"),
            "inotify bridging is not supported",
        );
        if mount.default == Some(true) {
            defaults += 1;
            if defaults > 1 {
                c.problem(
                    path.key("default"),
                    "is set on more than one mount; mark at most one",
                );
            }
        }
        let source = match mount.source.as_deref() {
            None => {
                c.problem(
                    path.key("source"),
                    "is missing; give a host directory such as \".\"",
                );
                None
            }
            Some(text) => mount_source(c, path.key("source"), text, dir),
        };
        let target = match mount.target.as_deref() {
            None => {
                c.problem(
                    path.key("target"),
                    "is missing; give a guest path such as \"/mnt/project\"",
                );
                None
            }
            Some(text) => names::normalize_guest_target(text)
                .map_err(|why| c.problem(path.key("target"), why))
                .ok(),
        };
        let Some(target) = target else { continue };
        if let Some((j, _)) = out.iter().find(|(_, m)| paths_overlap(&m.target, &target)) {
            c.problem(path.key("target"), format!("`{target}` overlaps mounts[{j}].target; mount points must not contain each other"));
            continue;
        }
        let tag = match mount.tag {
            Some(tag) => {
                if let Err(why) = names::check_tag(&tag) {
                    c.problem(path.key("tag"), why);
                }
                tag
            }
            None => names::tag_from_target(&target),
        };
        if let Some((j, _)) = out.iter().find(|(_, m)| m.tag == tag) {
            c.problem(
                path.key("tag"),
                format!("`{tag}` is also the tag of mounts[{j}]; tags must be unique"),
            );
            continue;
        }
        if let Some(source) = source {
            out.push((
                i,
                Mount {
                    source,
                    target,
                    readonly: mount.readonly,
                    tag,
                    default: mount.default == Some(true),
                },
            ));
        }
    }
    out.into_iter().map(|(_, m)| m).collect()
}

fn mount_source(c: &mut Checker, path: KeyPath, text: &str, dir: &Path) -> Option<PathBuf> {
    let source = if text == "git" && c.trust_host_paths {
        dir.to_path_buf()
    } else if text == "git" {
        match dir.ancestors().find(|d| d.join(".git").exists()) {
            Some(top) => top.to_path_buf(),
            None => {
                c.problem(
                    path,
                    format!(
                        "is \"git\", but {} is not inside a git repository",
                        dir.display()
                    ),
                );
                return None;
            }
        }
    } else {
        resolve_host_path(text, dir)
    };
    if c.trust_host_paths {
        return Some(source);
    }
    match std::fs::canonicalize(&source) {
        Ok(real) if real.is_dir() => Some(real),
        Ok(real) => {
            c.problem(path, format!("`{}` is not a directory", real.display()));
            None
        }
        Err(_) => {
            c.problem_with_help(
                path,
                format!("`{}` does not exist", source.display()),
                "create the directory or fix the path (relative paths start at the config file's directory)",
            );
            None
        }
    }
}
