//! The milestone runner: a step is shown while it runs, recorded in
//! `state.json` as started, then completed only once it has finished (or
//! failed, with the error), and followed by the tests' failure injection.
//! What is completed is not done again by the next command.

use super::error::Injected;
use super::error::LifecycleError;
use crate::instance::InstancePaths;
use crate::output::{Reporter, Step};
use crate::state::{Milestone, State};

pub struct Milestones<'a> {
    pub state: &'a mut State,
    paths: &'a InstancePaths,
    reporter: &'a Reporter,
    fail_after: Option<String>,
}

impl<'a> Milestones<'a> {
    pub fn new(state: &'a mut State, paths: &'a InstancePaths, reporter: &'a Reporter) -> Self {
        Self {
            state,
            paths,
            reporter,
            fail_after: crate::testhook::fail_after(),
        }
    }

    /// Runs `work` as `milestone` under `title`. The work gets its step (for
    /// progress and warnings) and the state (for the retries it records).
    pub fn run<T>(
        &mut self,
        milestone: Milestone,
        title: &str,
        work: impl FnOnce(&Step, &mut State) -> Result<T, LifecycleError>,
    ) -> Result<T, LifecycleError> {
        let shown = self.reporter.step(title);
        self.state.start(milestone);
        self.save();
        crate::testhook::pause(&format!("milestone:{}", milestone.key()));
        let result = work(&shown, self.state).and_then(|value| match &self.fail_after {
            Some(name) if name == milestone.key() => Err(Injected(name.clone()).into()),
            _ => Ok(value),
        });
        match result {
            Ok(value) => {
                self.state.complete(milestone);
                self.save();
                shown.done();
                Ok(value)
            }
            Err(e) => {
                self.state.fail(milestone, &e.to_string());
                self.save();
                shown.fail_with(&e);
                Err(e)
            }
        }
    }

    /// Writes the state; a failure is a warning, as the VM itself is fine.
    pub fn save(&self) {
        super::ledger::record(self.paths, self.state, self.reporter);
    }
}
