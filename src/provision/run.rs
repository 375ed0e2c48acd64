//! One provisioning attempt: the agent runs the scripts; their output streams
//! to the terminal as it comes and into one host log per script; the phases
//! are shown as steps.

use crate::output::Reporter;
use rum_agent::protocol::{OutputStream, ProvisionResult, RunOn, Script, ScriptState};
use rum_agent::{Client, ProvisionEvent};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::ops::Range;
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

/// Runs `scripts[run]` through `client` (the ones before ran on an earlier
/// call), streaming and logging (`try_number` above 1: a run again of a
/// step that failed); `Ok` carries the agent's result also when
/// a script failed.
pub async fn run(
    client: &Client,
    scripts: &[Script],
    run: Range<usize>,
    number: u32,
    try_number: u32,
    dir: &Path,
    reporter: &Reporter,
) -> Result<(ProvisionResult, Attempt), super::ProvisionError> {
    // Logs are not worth a provisioning run: without room for them the
    // steps still run, with live output only.
    if let Err(e) = crate::fsutil::create_private_dir_all(dir) {
        reporter.warn(&format!(
            "Cannot keep the step logs in {} ({e}); the output shows only here",
            dir.display()
        ));
    }
    // A step run again within one attempt keeps each run's log.
    let again = match try_number {
        0 | 1 => String::new(),
        n => format!(".try{n}"),
    };
    let log_path = |s: &Script| {
        dir.join(format!(
            "{:03}-{}{again}.log",
            s.order.clamp(0, 999),
            s.name
        ))
    };
    let mut files: Vec<Option<std::fs::File>> = scripts
        .iter()
        .enumerate()
        .map(|(i, s)| {
            run.contains(&i)
                .then(|| crate::fsutil::open_private(&log_path(s), false).ok())
                .flatten()
        })
        .collect();
    let mut lines = Lines::new(scripts, reporter);
    let started = crate::clock::unix_now();

    let result = client
        .provision_some(scripts.to_vec(), Some(run), |event| match event {
            ProvisionEvent::ScriptStarted { index, .. } => lines.started(index),
            ProvisionEvent::Output {
                index,
                stream,
                data,
            } => {
                if let Some(Some(file)) = files.get_mut(index) {
                    let _ = file.write_all(&data);
                }
                lines.output(&scripts[index].name, stream, &data);
            }
            ProvisionEvent::ScriptFinished { index, state, .. } => lines.finished(index, &state),
        })
        .await?;
    lines.close(&result);

    let attempt = Attempt {
        number,
        started,
        ok: result.ok,
        scripts: result
            .scripts
            .iter()
            .map(|outcome| {
                let script = scripts
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

/// The line a script runs under: its phase's when the phase is that one
/// script, else its own name (each step of several is shown by itself).
pub fn title(scripts: &[Script], index: usize) -> String {
    let script = &scripts[index];
    let alone = scripts.iter().filter(|s| s.run_on == script.run_on).count() == 1;
    if alone {
        format!("Running {} provisioning", phase_name(script.run_on))
    } else {
        script.name.clone()
    }
}

/// The step lines: each one's start, its scripts' output, its outcome.
struct Lines<'r> {
    reporter: &'r Reporter,
    titles: Vec<String>,
    names: Vec<String>,
    current: Option<usize>,
    failed: Option<(usize, Option<i32>)>,
}

impl<'r> Lines<'r> {
    fn new(scripts: &[Script], reporter: &'r Reporter) -> Self {
        Self {
            reporter,
            titles: (0..scripts.len()).map(|i| title(scripts, i)).collect(),
            names: scripts.iter().map(|s| s.name.clone()).collect(),
            current: None,
            failed: None,
        }
    }

    fn started(&mut self, index: usize) {
        let same = self
            .current
            .is_some_and(|c| self.titles[c] == self.titles[index]);
        if !same {
            self.reporter.phase_started(&self.titles[index]);
            crate::testhook::pause(&format!("step:{}", self.titles[index]));
        }
        self.current = Some(index);
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
            self.failed = Some((index, exit.code));
        }
    }

    /// Prints every line's outcome, in order, once the run is over.
    fn close(&self, result: &ProvisionResult) {
        let index_of = |name: &str| self.names.iter().position(|n| n == name);
        let mut seen: Vec<&str> = Vec::new();
        for outcome in &result.scripts {
            let Some(i) = index_of(&outcome.name) else {
                continue;
            };
            if !seen.contains(&self.titles[i].as_str()) {
                seen.push(&self.titles[i]);
            }
        }
        for title in seen {
            let of_title = |name: &str| index_of(name).is_some_and(|i| self.titles[i] == title);
            let ran = result.scripts.iter().any(|o| {
                of_title(&o.name)
                    && matches!(o.state, ScriptState::Succeeded | ScriptState::Failed { .. })
            });
            match self.failed {
                Some((failed, code)) if self.titles[failed] == title => {
                    let detail = code
                        .map(|c| format!("exit code {c}"))
                        .unwrap_or_else(|| "killed".into());
                    self.reporter.phase_finished(title, Some(false), &detail);
                }
                _ if !ran => self.reporter.phase_finished(title, None, "skipped"),
                _ => self.reporter.phase_finished(title, Some(true), ""),
            }
        }
    }
}
