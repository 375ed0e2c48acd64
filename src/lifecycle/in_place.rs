//! `rum provision`: the steps again on the running VM as it is, with no
//! rollback (for idempotent scripts and quick tweaks). It takes and
//! restores no snapshots, so the checkpoints `rum retry` uses stay valid.

use super::agent::connect_agent;
use super::error::{AgentError, LifecycleError};
use super::provisioning::{self, Run};
use super::{Instance, runtime};
use crate::exit::Exit;
use crate::instance::LockWait;
use crate::output::Reporter;
use crate::provision::scripts::scripts;
use crate::state::State;
use rum_agent::protocol::{RunOn, Script};
use std::time::Duration;

/// Which steps `rum provision` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    All,
    System,
    Boot,
    /// One system step, by name.
    Step(String),
}

impl Which {
    pub fn from_flags(system: bool, boot: bool, step: Option<&str>) -> Self {
        match (system, boot, step) {
            // As in `rum retry --from boot`.
            (_, _, Some("boot")) => Which::Boot,
            (_, _, Some(name)) => Which::Step(name.to_owned()),
            (true, false, None) => Which::System,
            (false, true, None) => Which::Boot,
            _ => Which::All,
        }
    }

    /// The steps of `all` it names; an unknown step is a usage error.
    fn select(&self, all: &[Script]) -> Result<Vec<Script>, LifecycleError> {
        let on = |run_on| all.iter().filter(move |s| s.run_on == run_on).cloned();
        Ok(match self {
            Which::All => all.to_vec(),
            Which::System => on(RunOn::System).collect(),
            Which::Boot => on(RunOn::Boot).collect(),
            Which::Step(name) => {
                let step: Vec<_> = on(RunOn::System).filter(|s| &s.name == name).collect();
                if step.is_empty() {
                    return Err(LifecycleError::UnknownStep {
                        name: name.clone(),
                        known: on(RunOn::System).map(|s| s.name).collect(),
                    });
                }
                step
            }
        })
    }
}

pub fn provision(
    instance: &Instance,
    which: &Which,
    reporter: &Reporter,
) -> Result<Exit, LifecycleError> {
    let paths = &instance.paths;
    let id = paths.id.to_string();
    // Read first: a bad step name or a missing script file changes nothing.
    let selected = which.select(&scripts(&instance.config)?)?;
    let info = instance
        .running()
        .map_err(AgentError::from)?
        .ok_or_else(|| AgentError::NotRunning(id.clone()))?;
    let _lock = paths.lock("rum provision", LockWait::No)?;
    let mut state = State::load(&paths.state_file())?;
    reporter.note(
        "Provisioning the VM as it is now, with no rollback; `rum retry` runs the steps on a clean checkpoint instead",
    );
    let rt = runtime();
    let client = rt.block_on(connect_agent(instance, Duration::from_secs(30)))?;
    let run = Run {
        all: &selected,
        first: 0,
        in_place: true,
    };
    let status = provisioning::provision(instance, &mut state, &info, client, run, &rt, reporter)?;
    let ok = status == Exit::Success;
    reporter.result(
        if ok {
            "Provisioned in place"
        } else {
            "Provisioning failed"
        },
        &serde_json::json!({
            "instance": id,
            "provisioned": ok,
            "attempt": state.provision_attempts,
            "steps": selected.iter().map(|s| &s.name).collect::<Vec<_>>(),
        }),
    );
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_step_is_named_with_the_closest() {
        let err = LifecycleError::UnknownStep {
            name: "thre".into(),
            known: vec!["one".into(), "three".into()],
        };
        assert!(err.is_usage());
        assert_eq!(
            err.to_string(),
            "There is no system step `thre`; there are: one, three, or `boot` for the boot steps (did you mean `three`?)"
        );
        assert_eq!(Which::from_flags(false, false, Some("boot")), Which::Boot);
        assert_eq!(Which::from_flags(true, false, None), Which::System);
        assert_eq!(Which::from_flags(false, false, None), Which::All);
    }
}
