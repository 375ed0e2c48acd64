//! `rum image pull | list | delete | clear | export | import`: the shared base-image cache.

use crate::image::archive;
use crate::image::cache::{self, Listed, ListedState};
use crate::image::shown::Shown;
use crate::image::{self, Cache, Checksum, Downloader, ImageError, ImageSource, Policy, Remote};
use crate::instance::BaseDirs;
use crate::output::Reporter;
use crate::{Error, Exit};
use indicatif::HumanBytes;
use serde_json::json;
use std::fmt::Write;
use std::path::Path;

pub fn pull(base: &str, sha256: Option<&str>, reporter: &Reporter) -> Result<Exit, Error> {
    let sha256 = sha256
        .map(|text| Checksum::sha256(text).ok_or_else(|| ImageError::BadSha256(text.to_owned())))
        .transpose()?;
    // Read as `[image] base` is, relative paths from here: a path is refused
    // below, since rum uses a local file where it is.
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let source = ImageSource::classify(base, &cwd).map_err(ImageError::from)?;
    let remote =
        Remote::from_source(&source)?.ok_or_else(|| ImageError::LocalPath(base.to_owned()))?;
    let cache = Cache::new(&BaseDirs::from_env()?);
    let name = remote.entry_name();
    let step = reporter.step(format!("Fetching {name}"));
    let mut shown = Shown {
        step: &step,
        record: |_: u32, _: std::time::Duration, _: &str| {},
    };
    let mut downloader = Downloader::new(Policy::default(), &mut shown);
    match crate::image::fetch(&remote, sha256.as_ref(), &cache, &mut downloader) {
        Ok(image::Resolved { path, .. }) => {
            step.done();
            let meta = cache.get(&name).expect("fetch leaves a verified entry");
            reporter.result(
                &format!(
                    "`{name}` is cached at {} ({}, sha256 {})",
                    path.display(),
                    HumanBytes(meta.size),
                    meta.sha256
                ),
                &json!({ "name": name, "path": path, "meta": meta }),
            );
            Ok(Exit::Success)
        }
        Err(e) => {
            step.fail_with(&e);
            Err(e.into())
        }
    }
}

pub fn list(reporter: &Reporter) -> Result<Exit, Error> {
    let dirs = BaseDirs::from_env()?;
    let cache = Cache::new(&dirs);
    let listed = cache.list();
    let mut rows = Vec::new();
    let mut text = String::new();
    for entry in &listed {
        let users = users(&dirs, &cache, entry);
        describe(&mut text, entry, &users);
        rows.push(json!({ "image": entry, "used_by": users }));
    }
    if listed.is_empty() {
        let _ = writeln!(
            text,
            "No cached images in {}; `rum up` or `rum image pull NAME` downloads one",
            cache.root().display()
        );
    }
    reporter.result(text.trim_end(), &rows);
    Ok(Exit::Success)
}

pub fn delete(name: &str, force: bool, reporter: &Reporter) -> Result<Exit, Error> {
    let dirs = BaseDirs::from_env()?;
    let cache = Cache::new(&dirs);
    let Some(entry) = cache.list().into_iter().find(|e| e.name == name) else {
        return Err(ImageError::NotCached {
            name: name.to_owned(),
        }
        .into());
    };
    let _lock = cache.try_lock(name)?.map_err(|holder| ImageError::Busy {
        name: name.to_owned(),
        holder,
    })?;
    let users = users(&dirs, &cache, &entry);
    if !users.is_empty() && !force {
        return Err(ImageError::InUse {
            name: name.to_owned(),
            users,
        }
        .into());
    }
    cache.remove(name)?;
    if !users.is_empty() {
        reporter.warn(&format!(
            "{} used `{name}` and cannot start again; `rum destroy` them",
            users.join(", ")
        ));
    }
    reporter.result(
        &format!("Deleted `{name}` ({} freed)", HumanBytes(size(&entry))),
        &json!({ "deleted": name, "bytes": size(&entry), "orphaned": users }),
    );
    Ok(Exit::Success)
}

pub fn export(name: &str, file: &Path, reporter: &Reporter) -> Result<Exit, Error> {
    let cache = Cache::new(&BaseDirs::from_env()?);
    let step = reporter.step(format!("Exporting `{name}` to {}", file.display()));
    let meta = match archive::export(&cache, name, file) {
        Ok(meta) => meta,
        Err(e) => {
            step.fail_with(&e);
            return Err(e.into());
        }
    };
    step.done();
    reporter.result(
        &format!(
            "Exported `{name}` to {} ({}, sha256 {}); `rum image import {}` adds it to another machine's cache",
            file.display(),
            HumanBytes(meta.size),
            meta.sha256,
            file.display()
        ),
        &json!({ "name": name, "file": file, "meta": meta }),
    );
    Ok(Exit::Success)
}

pub fn import(
    file: &Path,
    name: Option<&str>,
    force: bool,
    reporter: &Reporter,
) -> Result<Exit, Error> {
    let dirs = BaseDirs::from_env()?;
    let cache = Cache::new(&dirs);
    let step = reporter.step(format!("Importing {}", file.display()));
    let meta = match archive::import(&cache, &dirs, file, name, force) {
        Ok(meta) => meta,
        Err(e) => {
            step.fail_with(&e);
            return Err(e.into());
        }
    };
    step.done();
    let path = cache.image_path(&meta.name);
    reporter.result(
        &format!(
            "Imported `{}` ({}, sha256 {} verified); `base = \"{}\"` in [image] starts VMs from it",
            meta.name,
            HumanBytes(meta.size),
            meta.sha256,
            meta.name
        ),
        &json!({ "name": meta.name, "path": path, "meta": meta }),
    );
    Ok(Exit::Success)
}

pub fn clear(reporter: &Reporter) -> Result<Exit, Error> {
    let dirs = BaseDirs::from_env()?;
    let cache = Cache::new(&dirs);
    let mut deleted = Vec::new();
    let mut kept = Vec::new();
    let mut freed = 0;
    for entry in cache.list() {
        let Ok(_lock) = cache.try_lock(&entry.name)? else {
            kept.push(json!({ "name": entry.name, "why": "busy" }));
            continue;
        };
        let users = users(&dirs, &cache, &entry);
        if !users.is_empty() {
            reporter.note(&format!(
                "Kept `{}`: used by {}",
                entry.name,
                users.join(", ")
            ));
            kept.push(json!({ "name": entry.name, "why": "in use", "used_by": users }));
            continue;
        }
        cache.remove(&entry.name)?;
        freed += size(&entry);
        deleted.push(entry.name);
    }
    // What a killed bake left: its throwaway QEMU and work files.
    for name in cache.bake_work_names() {
        if let Ok(Ok(_lock)) = cache.try_lock(&name) {
            crate::lifecycle::bake::clear_leftover(&cache.work_dir(&name));
        }
    }
    reporter.result(
        &format!(
            "Deleted {} cached image(s), {} freed; kept {} in use",
            deleted.len(),
            HumanBytes(freed),
            kept.len()
        ),
        &json!({ "deleted": deleted, "bytes": freed, "kept": kept }),
    );
    Ok(Exit::Success)
}

fn users(dirs: &BaseDirs, cache: &Cache, entry: &Listed) -> Vec<String> {
    match entry.state {
        ListedState::Verified { .. } => cache::users(dirs, &cache.image_path(&entry.name)),
        ListedState::Partial { .. } => Vec::new(),
    }
}

fn size(entry: &Listed) -> u64 {
    match &entry.state {
        ListedState::Verified { meta, .. } => meta.size,
        ListedState::Partial { bytes, .. } => *bytes,
    }
}

fn describe(s: &mut String, entry: &Listed, users: &[String]) {
    match &entry.state {
        ListedState::Verified { meta, path } => {
            let _ = writeln!(
                s,
                "{}  ({}, {})",
                entry.name,
                HumanBytes(meta.size),
                meta.format
            );
            let _ = writeln!(s, "  source    {}", meta.source);
            if let Some(baked) = &meta.baked {
                let at = baked.snapshot.as_deref().unwrap_or("its disk as it was");
                let steps: Vec<&str> = baked.steps.iter().map(|s| s.name.as_str()).collect();
                let _ = writeln!(s, "  baked     at {at}, from {}", baked.config.display());
                let _ = writeln!(
                    s,
                    "  steps     {}",
                    if steps.is_empty() {
                        "none".to_owned()
                    } else {
                        steps.join(", ")
                    }
                );
            }
            let _ = writeln!(
                s,
                "  verified  {} against {}",
                meta.verified, meta.verified_against
            );
            let _ = writeln!(s, "  sha256    {}", meta.sha256);
            let _ = writeln!(s, "  file      {}", path.display());
            let used = if users.is_empty() {
                "no VM".to_owned()
            } else {
                users.join(", ")
            };
            let _ = writeln!(s, "  used by   {used}");
        }
        ListedState::Partial {
            source,
            bytes,
            total,
        } => {
            let of = total
                .map(|t| format!(" of {}", HumanBytes(t)))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "{}  (unfinished download: {}{of}; the next `rum up` resumes it)",
                entry.name,
                HumanBytes(*bytes)
            );
            if let Some(source) = source {
                let _ = writeln!(s, "  source    {source}");
            }
        }
    }
}
