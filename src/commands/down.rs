//! `rum down`.

use crate::instance::LockWait;
use crate::lifecycle::{Instance, stop};
use crate::output::Reporter;
use crate::vm::qemu::Stopped;
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
            &format!("`{id}` does not exist; nothing to stop"),
            &serde_json::json!({ "instance": id, "stopped": false }),
        );
        return Ok(Exit::Success);
    }
    let _lock = instance.paths.lock("rum down", LockWait::No)?;
    let step = reporter.step(if force {
        "Stopping the VM (quit)"
    } else {
        "Stopping the VM (ACPI power-off)"
    });
    let result = stop::stop(&instance, force);
    let how = match result.stopped {
        None => "was not running",
        Some(Stopped::PoweredOff) => "powered off",
        Some(Stopped::Quit) => "quit",
        Some(Stopped::Killed) => "killed",
    };
    step.done();
    reporter.result(
        &format!("`{id}` {how}; `rum up` starts it again with its disks as they are"),
        &serde_json::json!({ "instance": id, "stopped": result.stopped.is_some(), "how": how, "virtiofsd_stopped": result.virtiofsd }),
    );
    Ok(Exit::Success)
}
