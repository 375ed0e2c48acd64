//! `rum wait`: blocks until the VM is up and provisioned, for CI jobs and
//! coding agents that started `rum up` elsewhere. It only reads: the state
//! file, the instance lock (who is working on the VM) and QEMU's pid.

use super::Instance;
use super::error::{AgentError, LifecycleError};
use crate::exit::Exit;
use crate::instance::InstanceLock;
use crate::output::Reporter;
use crate::state::{Milestone, State, Status};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(250);
/// A `rum up` started a moment before may not have made anything yet.
const GRACE: Duration = Duration::from_secs(5);

/// What the VM's files say, at one moment.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// Up, and every provisioning phase completed.
    Provisioned,
    /// A phase failed: its error (which names the step).
    Failed(String),
    /// A rum command holds the VM's lock: the holder, the latest milestone.
    Working(String, Option<Milestone>),
    /// Up, provisioning unfinished, and no rum at work on it.
    Stalled,
    NotRunning,
}

fn seen(state: &State, running: bool, holder: Option<String>) -> Seen {
    if let Some(holder) = holder {
        let latest = state.history.last().map(|h| h.milestone);
        return Seen::Working(holder, latest);
    }
    let phases = [Milestone::SystemProvisioned, Milestone::BootProvisioned];
    for phase in phases {
        if let Some(m) = state.milestones.get(&phase)
            && m.status == Status::Failed
        {
            return Seen::Failed(m.error.clone().unwrap_or_else(|| phase.title().to_owned()));
        }
    }
    match (running, phases.iter().all(|p| state.is_completed(*p))) {
        (false, _) => Seen::NotRunning,
        (true, true) => Seen::Provisioned,
        (true, false) => Seen::Stalled,
    }
}

pub fn wait(
    instance: &Instance,
    timeout: Option<Duration>,
    reporter: &Reporter,
) -> Result<Exit, LifecycleError> {
    let paths = &instance.paths;
    let id = paths.id.to_string();
    let started = Instant::now();
    let mut shown = None;
    loop {
        let holder = InstanceLock::current_holder(&paths.lock_file()).map(|h| h.to_string());
        let state = State::load(&paths.state_file())?;
        let now = seen(&state, instance.qemu_pid().is_some(), holder);
        match now {
            Seen::Provisioned => {
                reporter.result(
                    &format!("`{id}` is up and provisioned"),
                    &serde_json::json!({ "instance": id, "provisioned": true }),
                );
                return Ok(Exit::Success);
            }
            Seen::Failed(error) => {
                reporter.result(
                    &format!("Provisioning of `{id}` failed: {error}; `rum log --failed` shows its output, `rum retry` runs it again"),
                    &serde_json::json!({ "instance": id, "provisioned": false, "error": error }),
                );
                return Ok(Exit::Failure);
            }
            Seen::Working(ref holder, milestone) => {
                let line = match milestone {
                    Some(m) => format!("Waiting for {holder} ({})", m.title()),
                    None => format!("Waiting for {holder}"),
                };
                if shown.as_ref() != Some(&line) {
                    reporter.line(&line);
                    shown = Some(line);
                }
            }
            Seen::NotRunning if !paths.exists() && started.elapsed() < GRACE => {}
            Seen::NotRunning => return Err(AgentError::NotRunning(id).into()),
            Seen::Stalled => {
                reporter.result(
                    &format!("`{id}` runs, but its provisioning did not finish and no rum is working on it; `rum up` goes on with it"),
                    &serde_json::json!({ "instance": id, "provisioned": false }),
                );
                return Ok(Exit::Failure);
            }
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            reporter.result(
                &format!(
                    "`{id}` was not provisioned within {:?}",
                    timeout.unwrap_or_default()
                ),
                &serde_json::json!({ "instance": id, "provisioned": false, "timed_out": true }),
            );
            return Ok(Exit::TimedOut);
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_files_say() {
        let mut state = State::default();
        assert_eq!(seen(&state, false, None), Seen::NotRunning);
        state.start(Milestone::Booted);
        assert_eq!(
            seen(&state, true, Some("`rum up` (pid 7)".into())),
            Seen::Working("`rum up` (pid 7)".into(), Some(Milestone::Booted))
        );
        assert_eq!(seen(&state, true, None), Seen::Stalled);
        state.fail(
            Milestone::SystemProvisioned,
            "step `one` failed (exit code 3)",
        );
        assert_eq!(
            seen(&state, true, None),
            Seen::Failed("step `one` failed (exit code 3)".into())
        );
        state.complete(Milestone::SystemProvisioned);
        state.complete(Milestone::BootProvisioned);
        assert_eq!(seen(&state, true, None), Seen::Provisioned);
        assert_eq!(seen(&state, false, None), Seen::NotRunning);
    }
}
