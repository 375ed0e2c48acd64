//! `rum retry`: restore the snapshot taken before provisioning (live on a
//! running VM, into a fresh paused QEMU on a stopped one), set the guest
//! clock, re-read rum.toml and the scripts, and provision again (the body
//! is `rollback`); `--reset` starts over from the base image.

use super::Instance;
use super::checkpoints::PRE_PROVISION;
use super::error::{LifecycleError, SnapshotError};
pub use super::rollback::RetryMode;
use super::rollback::retry_locked;
use crate::exit::Exit;
use crate::instance::LockWait;
use crate::output::Reporter;
use crate::state::State;

pub fn retry(
    instance: &Instance,
    mode: RetryMode,
    strict: bool,
    reporter: &Reporter,
) -> Result<Exit, LifecycleError> {
    let paths = &instance.paths;
    if !paths.exists() {
        return Err(SnapshotError::NotRecorded(PRE_PROVISION.into()).into());
    }
    if mode == RetryMode::Reset {
        reset(instance, reporter)?;
        return super::up::up(instance, reporter);
    }
    let _lock = paths.lock("rum retry", LockWait::No)?;
    retry_locked(instance, mode, strict, reporter)
}

/// `--reset`: the root disk starts over from the base image and cloud-init
/// runs again with a rebuilt seed and a new instance-id. Keys, drives and
/// the provisioning history stay.
fn reset(instance: &Instance, reporter: &Reporter) -> Result<(), LifecycleError> {
    let paths = &instance.paths;
    let _lock = paths.lock("rum retry --reset", LockWait::No)?;
    let step = reporter.step("Resetting the VM to its base image (a reboot, not a restore)");
    super::stop::stop(instance, true);
    for file in [
        paths.overlay(),
        paths.seed_iso(),
        paths.seed_identity(),
        paths.cloud_init_instance_id(),
    ] {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                step.fail(&e.to_string());
                return Err(LifecycleError::Write {
                    path: file,
                    source: e,
                });
            }
            _ => {}
        }
    }
    let mut state = State::load(&paths.state_file())?;
    state.milestones.clear();
    // They lived in the overlay that is gone.
    state.snapshots.clear();
    state.save(&paths.state_file())?;
    step.done();
    Ok(())
}
