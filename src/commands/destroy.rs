//! `rum destroy`.

use crate::disk;
use crate::instance::LockWait;
use crate::lifecycle::{Instance, stop};
use crate::output::Reporter;
use crate::{Error, Exit};

pub fn run(
    target: &crate::lifecycle::Target,
    force: bool,
    reporter: &Reporter,
) -> Result<Exit, Error> {
    let instance = Instance::open_target(target)?;
    let id = instance.paths.id.to_string();
    if !instance.paths.exists() {
        reporter.result(
            &format!("`{id}` does not exist; nothing to destroy"),
            &serde_json::json!({ "instance": id, "destroyed": false }),
        );
        return Ok(Exit::Success);
    }
    // Held while the files go: the lock file may vanish under it, but no one else gets in.
    let _lock = instance.paths.lock("rum destroy", LockWait::No)?;
    let snapshots = disk::inspect(&instance.paths.overlay())
        .map(|i| i.snapshots)
        .unwrap_or(0);
    if snapshots > 0 && !force {
        stop::confirm_destroy(&instance, snapshots, reporter)?;
    }
    let step = reporter.step("Stopping the VM");
    stop::stop(&instance, true);
    step.done();
    let step = reporter.step("Removing the instance's files");
    crate::testhook::pause("removing_files");
    stop::remove(&instance)?;
    step.done();
    reporter.result(
        &format!("Destroyed `{id}`"),
        &serde_json::json!({ "instance": id, "destroyed": true }),
    );
    Ok(Exit::Success)
}
