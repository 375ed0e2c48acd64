//! One provisioning attempt: the agent runs the scripts; their output streams
//! to the terminal as it comes and into one host log per script; the phases
//! are shown as steps.

use crate::output::Reporter;
use rum_agent::protocol::{OutputStream, ProvisionResult, RunOn, Script, ScriptState};
use rum_agent::{Client, ProvisionEvent};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What one attempt did, as kept in `result.json` beside its logs (written
/// by the caller once every phase of the attempt has run).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    /// Unix time (seconds) it started.
    pub started: u64,
    pub ok: bool,
    pub scripts: Vec<ScriptResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScriptResult {
    pub name: String,
    pub phase: String,
    /// "succeeded", "failed", "skipped" or "not_run".
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub log: PathBuf,
}

/// Runs `scripts` through `client`, streaming and logging; `Ok` carries the
/// agent's result also when a script failed.
pub async fn run(
    client: &Client,
    scripts: Vec<Script>,
    number: u32,
    dir: &Path,
    reporter: &Reporter,
) -> Result<(ProvisionResult, Attempt), super::ProvisionError> {
    std::fs::create_dir_all(dir).map_err(|source| super::ProvisionError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let log_path = |s: &Script| dir.join(format!("{:03}-{}.log", s.order.clamp(0, 999), s.name));
    let mut files: Vec<Option<std::fs::File>> = scripts
        .iter()
        .map(|s| std::fs::File::create(log_path(s)).ok())
        .collect();
    let mut phases = Phases::new(&scripts, reporter);
    let started = crate::clock::unix_now();
    let names: Vec<String> = scripts.iter().map(|s| s.name.clone()).collect();
    let listing = scripts.clone();

    let result = client
        .provision(scripts, |event| match event {
            ProvisionEvent::ScriptStarted { index, .. } => phases.started(index),
            ProvisionEvent::Output {
                index,
                stream,
                data,
            } => {
                if let Some(Some(file)) = files.get_mut(index) {
                    let _ = file.write_all(&data);
                }
                phases.output(&names[index], stream, &data);
            }
            ProvisionEvent::ScriptFinished { index, state, .. } => phases.finished(index, &state),
        })
        .await?;
    phases.close(&result);

    let attempt = Attempt {
        number,
        started,
        ok: result.ok,
        scripts: result
            .scripts
            .iter()
            .map(|outcome| {
                let script = listing
                    .iter()
                    .find(|s| s.name == outcome.name)
                    .expect("a script we sent");
                let (state, exit_code) = match &outcome.state {
                    ScriptState::Succeeded => ("succeeded", Some(0)),
                    ScriptState::Failed { exit } => ("failed", exit.code),
                    ScriptState::Skipped => ("skipped", None),
                    ScriptState::NotRun => ("not_run", None),
                };
                ScriptResult {
                    name: outcome.name.clone(),
                    phase: phase_name(outcome.run_on).into(),
                    state: state.into(),
                    exit_code,
                    log: log_path(script),
                }
            })
            .collect(),
    };
    Ok((result, attempt))
}

fn phase_name(run_on: RunOn) -> &'static str {
    match run_on {
        RunOn::System => "system",
        RunOn::Boot => "boot",
    }
}

fn phase_title(run_on: RunOn) -> String {
    format!("Running {} provisioning", phase_name(run_on))
}

/// The phase lines: each phase's start, its scripts' output, its outcome.
struct Phases<'r> {
    reporter: &'r Reporter,
    run_on: Vec<RunOn>,
    current: Option<RunOn>,
    failed: Option<(RunOn, Option<i32>)>,
}

impl<'r> Phases<'r> {
    fn new(scripts: &[Script], reporter: &'r Reporter) -> Self {
        Self {
            reporter,
            run_on: scripts.iter().map(|s| s.run_on).collect(),
            current: None,
            failed: None,
        }
    }

    fn started(&mut self, index: usize) {
        let phase = self.run_on[index];
        if self.current != Some(phase) {
            self.current = Some(phase);
            self.reporter.phase_started(&phase_title(phase));
        }
    }

    fn output(&self, script: &str, stream: OutputStream, data: &[u8]) {
        let stream = match stream {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        };
        self.reporter.script_output(script, stream, data);
    }

    fn finished(&mut self, index: usize, state: &ScriptState) {
        if let ScriptState::Failed { exit } = state {
            self.failed = Some((self.run_on[index], exit.code));
        }
    }

    /// Prints every phase's outcome, in order, once the run is over.
    fn close(&self, result: &ProvisionResult) {
        let mut seen = Vec::new();
        for outcome in &result.scripts {
            if !seen.contains(&outcome.run_on) {
                seen.push(outcome.run_on);
            }
        }
        for phase in seen {
            let title = phase_title(phase);
            let ran = result.scripts.iter().any(|o| {
                o.run_on == phase
                    && matches!(o.state, ScriptState::Succeeded | ScriptState::Failed { .. })
            });
            match self.failed {
                Some((failed, code)) if failed == phase => {
                    let detail = code
                        .map(|c| format!("exit code {c}"))
                        .unwrap_or_else(|| "killed".into());
                    self.reporter.phase_finished(&title, Some(false), &detail);
                }
                _ if !ran => self.reporter.phase_finished(&title, None, "skipped"),
                _ => self.reporter.phase_finished(&title, Some(true), ""),
            }
        }
    }
}
