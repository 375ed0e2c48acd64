//! `rum image bake NAME`: the VM's disk, as it is or at one of its
//! snapshots, flattened with its backing chain into a standalone qcow2,
//! generalised on a throwaway copy, and committed to the image cache as a
//! base image other VMs start from. The user's VM keeps running untouched:
//! a running VM is baked from a disk-only snapshot taken for the bake.

mod qemu_img;
mod throwaway;

use super::agent::connect_agent;
use super::checkpoints::{POST_SYSTEM, PRE_PROVISION, STEP_PREFIX};
use super::error::{BakeError, LifecycleError, SnapshotError};
use super::{Instance, snapshots};
use crate::exit::Exit;
use crate::image::baked::{BakedStep, Provenance};
use crate::image::{Cache, Checksum, Meta, cache, checksum};
use crate::instance::LockWait;
use crate::output::Reporter;
use crate::provision::scripts::scripts;
use crate::vm::spec::ROOT_NODE;
use rum_agent::protocol::{ExecRequest, RunOn, Script};
use rum_qmp::{Qmp, qmp};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

pub use throwaway::{clear_leftover, generalise_script};

/// The disk-only snapshot a running VM is baked from, deleted afterwards.
const BAKE_TAG: &str = "rum-bake";

/// What `rum image bake` was asked for.
pub struct Request<'a> {
    pub name: &'a str,
    pub snapshot: Option<&'a str>,
    pub keep_agent: bool,
    pub compress: bool,
    pub force: bool,
}

/// The work dir, removed however the bake ends; nothing half-made enters
/// the cache.
struct Work(std::path::PathBuf);

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bake(
    instance: &Instance,
    request: &Request<'_>,
    reporter: &Reporter,
) -> Result<Exit, LifecycleError> {
    let name = request.name;
    crate::image::baked::check_name(name).map_err(BakeError::from)?;
    let cache = Cache::new(&instance.dirs);
    let _entry = cache.lock(name, |holder| {
        reporter.note(&format!(
            "Waiting for {holder}, which holds the image `{name}`"
        ))
    })?;
    if cache.get(name).is_some() {
        if !request.force {
            return Err(BakeError::Exists(name.to_owned()).into());
        }
        in_use(&instance.dirs, &cache, name)?;
    }
    let paths = &instance.paths;
    let id = paths.id.to_string();
    if !paths.overlay().exists() {
        return Err(BakeError::NoDisk(id).into());
    }
    let _lock = paths.lock("rum image bake", LockWait::No)?;
    let state = snapshots::load_state(instance)?;
    if let Some(tag) = request.snapshot
        && !state.snapshots.contains_key(tag)
    {
        return Err(SnapshotError::Unknown {
            name: tag.to_owned(),
            known: state.snapshots.keys().cloned().collect(),
        }
        .into());
    }
    let running = instance.running()?;
    let rt = super::runtime();
    let qemu_img = qemu_img::binary(instance.config.advanced.qemu.as_deref());
    let overlay = paths.overlay();

    // A running VM's disk, as it is now: a disk-only snapshot to read from.
    let temporary = request.snapshot.is_none() && running.is_some();
    if temporary {
        let step = reporter.step("Taking a disk snapshot of the running VM");
        if let Err(e) = rt.block_on(disk_snapshot(instance)) {
            step.fail(&e.to_string());
            return Err(e);
        }
        step.done();
    }
    let source = request.snapshot.or(temporary.then_some(BAKE_TAG));
    let flattened = flatten(&cache, request, &qemu_img, source, &overlay, reporter);
    if temporary {
        let _ = rt.block_on(delete_disk_snapshot(instance));
    }
    let (work, flat) = flattened?;

    throwaway::generalise(
        instance,
        state.kvm_hangs,
        &flat,
        &work.0,
        request.keep_agent,
        &rt,
        reporter,
    )?;

    let step = reporter.step(if request.compress {
        "Writing the image, compressed"
    } else {
        "Writing the image"
    });
    let image = work.0.join("image");
    let written = qemu_img::run(
        &qemu_img,
        &qemu_img::convert_args(&flat, None, &image, request.compress),
    )
    .and_then(|_| qemu_img::run(&qemu_img, &qemu_img::check_args(&image)));
    if let Err(e) = written {
        step.fail(&e.to_string());
        return Err(e.into());
    }
    let digests =
        checksum::digest_file(&image, false, |_| {}).map_err(|source| LifecycleError::Write {
            path: image.clone(),
            source,
        })?;
    step.done();
    let sha256 = digests.sha256.clone();
    let size = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
    let meta = Meta {
        name: name.to_owned(),
        source: format!("baked from {id}"),
        size,
        format: "qcow2".into(),
        sha256: sha256.clone(),
        verified: Checksum::sha256(&sha256).expect("a SHA-256 digest"),
        verified_against: "its own digest, taken as it was baked".into(),
        downloaded: crate::clock::unix_now(),
        baked: Some(Box::new(Provenance {
            instance: id.clone(),
            snapshot: request.snapshot.map(str::to_owned),
            config: instance.config.file.clone(),
            steps: steps_in(instance, request.snapshot)?,
            keep_agent: request.keep_agent,
        })),
    };
    if cache.get(name).is_some() {
        in_use(&instance.dirs, &cache, name)?;
        cache.remove(name)?;
    }
    cache.commit_file(name, &image, &meta)?;
    let path = cache.image_path(name);
    reporter.result(
        &format!(
            "Baked `{name}` from {}{} ({}, sha256 {sha256}); `base = \"{name}\"` in [image] starts VMs from it{}",
            id,
            request
                .snapshot
                .map(|t| format!(" at `{t}`"))
                .unwrap_or_default(),
            indicatif::HumanBytes(size),
            if instance.config.drives.is_empty() {
                ""
            } else {
                "; the VM's [[drives]] are not part of it"
            }
        ),
        &serde_json::json!({ "name": name, "path": path, "meta": meta }),
    );
    Ok(Exit::Success)
}

/// Refuses while a VM's overlay stands on the image.
fn in_use(dirs: &crate::instance::BaseDirs, cache: &Cache, name: &str) -> Result<(), BakeError> {
    let users = cache::users(dirs, &cache.image_path(name));
    if users.is_empty() {
        Ok(())
    } else {
        Err(BakeError::InUse(name.to_owned(), users.join(", ")))
    }
}

/// Measures, checks the space, and flattens `overlay` at `source` into the
/// work dir; the work dir and the flattened file.
fn flatten(
    cache: &Cache,
    request: &Request<'_>,
    qemu_img: &Path,
    source: Option<&str>,
    overlay: &Path,
    reporter: &Reporter,
) -> Result<(Work, std::path::PathBuf), LifecycleError> {
    let measured = qemu_img::run(qemu_img, &qemu_img::measure_args(overlay, source))?;
    let need = qemu_img::required(&measured).unwrap_or(0);
    let dir = cache.work_dir(request.name);
    throwaway::clear_leftover(&dir);
    crate::fsutil::create_private_dir_all(&dir).map_err(|source| LifecycleError::Write {
        path: dir.clone(),
        source,
    })?;
    let work = Work(dir);
    // The flattened copy, then the image written from it.
    let free = crate::fsutil::free_bytes(&work.0).unwrap_or(u64::MAX);
    if free < need.saturating_mul(2) {
        return Err(BakeError::NoSpace {
            dir: cache.root().to_path_buf(),
            free_mib: free >> 20,
            need_mib: need.saturating_mul(2) >> 20,
        }
        .into());
    }
    let step = reporter.step(format!(
        "Flattening the disk{} ({} MiB)",
        source
            .filter(|t| *t != BAKE_TAG)
            .map(|t| format!(" at `{t}`"))
            .unwrap_or_default(),
        need >> 20
    ));
    let flat = work.0.join("flat.qcow2");
    match qemu_img::run(
        qemu_img,
        &qemu_img::convert_args(overlay, source, &flat, false),
    ) {
        Ok(_) => step.done(),
        Err(e) => {
            step.fail(&e.to_string());
            return Err(e.into());
        }
    }
    Ok((work, flat))
}

/// Takes `rum-bake`, disk only, once the guest has written out its caches.
async fn disk_snapshot(instance: &Instance) -> Result<(), LifecycleError> {
    if let Ok(client) = connect_agent(instance, Duration::from_secs(10)).await {
        let _ = tokio::time::timeout(
            Duration::from_secs(60),
            client.exec_output(ExecRequest::shell("sync")),
        )
        .await;
    }
    let qmp = Qmp::connect(&instance.paths.qmp_socket(), Duration::from_secs(10))
        .await
        .map_err(SnapshotError::from)?;
    // One a killed bake left behind goes first.
    let _ = qmp
        .execute(qmp::blockdev_snapshot_delete_internal_sync {
            device: ROOT_NODE.into(),
            name: Some(BAKE_TAG.into()),
            id: None,
        })
        .await;
    qmp.execute(qmp::blockdev_snapshot_internal_sync(
        qmp::BlockdevSnapshotInternal {
            device: ROOT_NODE.into(),
            name: BAKE_TAG.into(),
        },
    ))
    .await
    .map_err(SnapshotError::from)?;
    qmp.disconnect().await;
    Ok(())
}

async fn delete_disk_snapshot(instance: &Instance) -> Result<(), LifecycleError> {
    let qmp = Qmp::connect(&instance.paths.qmp_socket(), Duration::from_secs(10))
        .await
        .map_err(SnapshotError::from)?;
    qmp.execute(qmp::blockdev_snapshot_delete_internal_sync {
        device: ROOT_NODE.into(),
        name: Some(BAKE_TAG.into()),
        id: None,
    })
    .await
    .map_err(SnapshotError::from)?;
    qmp.disconnect().await;
    Ok(())
}

/// The system steps the baked state holds: none at `pre-provision`, those
/// up to a step checkpoint, else all of rum.toml's.
fn steps_in(instance: &Instance, snapshot: Option<&str>) -> Result<Vec<BakedStep>, LifecycleError> {
    let system: Vec<Script> = scripts(&instance.config)?
        .into_iter()
        .filter(|s| s.run_on == RunOn::System)
        .collect();
    let upto = match snapshot {
        Some(PRE_PROVISION) => 0,
        Some(tag) if tag != POST_SYSTEM && tag.starts_with(STEP_PREFIX) => system
            .iter()
            .position(|s| format!("{STEP_PREFIX}{}", s.name) == tag)
            .map_or(system.len(), |i| i + 1),
        _ => system.len(),
    };
    Ok(system[..upto]
        .iter()
        .map(|s| BakedStep {
            name: s.name.clone(),
            sha256: checksum::hex(&Sha256::digest(s.content.as_bytes())),
        })
        .collect())
}
