//! Provisioning runs: a host's `provision` call, the agent's own run of the
//! cached boot scripts at boot, and the script runner both share (ordered
//! `sh -c`, stop at the first failure, output streamed to the host and the
//! run's log, the sentinel once every system script succeeded).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rum_agent::protocol::{
    ErrorKind, Event, ExitStatus, FailedScript, OutputStream, ProvisionRequest, ProvisionResult,
    RunOn, RunRecord, Script, ScriptOutcome, ScriptState, Trigger,
};
use tokio::sync::mpsc;

use super::store::{LogFile, ProvisionStore};
use crate::server::call::{Ctx, Outbox, error};
use crate::server::exec::{self, Spec, Stream};
use crate::server::{Agent, log, system};

/// What serialises runs, and whether one is going on.
pub struct Runs {
    lock: tokio::sync::Mutex<()>,
    running: AtomicBool,
}

impl Runs {
    pub fn new() -> Runs {
        Runs {
            lock: tokio::sync::Mutex::new(()),
            running: AtomicBool::new(false),
        }
    }

    pub fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
}

/// A `provision` call: cache the scripts, run them, report as they go.
pub async fn host_run(ctx: &mut Ctx, req: ProvisionRequest) -> Event {
    let _guard = tokio::select! {
        guard = ctx.agent.runs.lock.lock() => guard,
        () = ctx.cancelled() => return error(ErrorKind::Cancelled, "cancelled while waiting for another run"),
    };
    let mut scripts = req.scripts;
    scripts.sort_by_key(|s| s.order);
    if let Err(e) = ctx.agent.store.cache(&scripts) {
        return error(ErrorKind::Failed, format!("cannot cache the scripts: {e}"));
    }
    let explicit = req.run.is_some();
    let run = req.run.unwrap_or(0..scripts.len());
    if run.start > run.end || run.end > scripts.len() {
        return error(
            ErrorKind::Failed,
            format!("cannot run scripts {run:?} of {}", scripts.len()),
        );
    }
    // The host chose these steps: they run even on a system-provisioned VM
    // (a step added after the last), which is then provisioned again only
    // once the last system step has succeeded.
    let redo = scripts[run.clone()]
        .iter()
        .any(|s| s.run_on == RunOn::System);
    if explicit
        && redo
        && let Err(e) = ctx.agent.store.remove_sentinel()
    {
        return error(ErrorKind::Failed, format!("cannot reset the sentinel: {e}"));
    }
    let result = run_list(&ctx.agent, Some(ctx), &scripts, run, Trigger::Host).await;
    Event::Provisioned(result)
}

/// At agent start: run the cached boot scripts if this boot has not had them.
pub async fn boot_run(agent: &Agent) {
    let store = &agent.store;
    let _guard = agent.runs.lock.lock().await;
    let boot_id = &agent.version.boot_id;
    if store.boot_scripts_ran_for().as_deref() == Some(boot_id.as_str()) {
        return;
    }
    let manifest = store.manifest();
    let has_system = manifest.scripts.iter().any(|s| s.run_on == RunOn::System);
    if !manifest.scripts.iter().any(|s| s.run_on == RunOn::Boot) {
        return;
    }
    if has_system && !store.system_provisioned() {
        log!("boot scripts not run: system provisioning has not completed");
        return;
    }
    let scripts = match store.cached_scripts(&manifest, RunOn::Boot) {
        Ok(s) => s,
        Err(e) => {
            log!("cannot read the cached boot scripts: {e}");
            return;
        }
    };
    log!("running {} cached boot scripts", scripts.len());
    let all = 0..scripts.len();
    let result = run_list(agent, None, &scripts, all, Trigger::Boot).await;
    match &result.failed {
        None => log!("boot scripts succeeded (log {})", result.log),
        Some(f) => log!(
            "boot script {} failed: {} (log {})",
            f.name,
            f.exit,
            result.log
        ),
    }
}

/// Runs `scripts[run]` in order, stopping at the first failure; writes the
/// sentinel once every system script succeeded (those before `run` did on
/// earlier calls); records the run.
async fn run_list(
    agent: &Agent,
    ctx: Option<&Ctx>,
    scripts: &[Script],
    run: std::ops::Range<usize>,
    trigger: Trigger,
) -> ProvisionResult {
    let store = &agent.store;
    agent.runs.running.store(true, Ordering::SeqCst);
    let started_ms = system::now_unix_ms();
    let kind = match trigger {
        Trigger::Host => "host",
        Trigger::Boot => "boot",
    };
    let (log_path, mut log_file) = store.create_log(kind, started_ms);
    let out = ctx.map(|c| c.out.clone());
    let sentinel_present = store.system_provisioned();
    let total_system = scripts.iter().filter(|s| s.run_on == RunOn::System).count();
    let mut system_ok = scripts[..run.start]
        .iter()
        .filter(|s| s.run_on == RunOn::System)
        .count();
    let mut sentinel_written = sentinel_present;
    let mut failed: Option<FailedScript> = None;
    let mut outcomes = Vec::new();

    for (index, script) in scripts.iter().enumerate() {
        if !run.contains(&index) {
            continue;
        }
        let state_of = if failed.is_some() {
            ScriptState::NotRun
        } else if script.run_on == RunOn::System && sentinel_present {
            log_file.line(&format!(
                "--- {} ({:?}) skipped: already system-provisioned",
                script.name, script.run_on
            ));
            ScriptState::Skipped
        } else {
            if let Some(out) = &out {
                out.send(
                    Event::ScriptStarted {
                        index,
                        name: script.name.clone(),
                    },
                    &[],
                )
                .await;
            }
            log_file.line(&format!(
                "==> {} ({:?}, order {})",
                script.name, script.run_on, script.order
            ));
            let t = Instant::now();
            let exit = run_script(ctx, out.clone(), index, script, &mut log_file).await;
            log_file.line(&format!(
                "<== {}: {exit} after {:.1} s",
                script.name,
                t.elapsed().as_secs_f64()
            ));
            if exit.success() {
                ScriptState::Succeeded
            } else {
                failed = Some(FailedScript {
                    name: script.name.clone(),
                    exit,
                });
                ScriptState::Failed { exit }
            }
        };
        if state_of == ScriptState::Succeeded && script.run_on == RunOn::System {
            system_ok += 1;
        }
        if trigger == Trigger::Host
            && !sentinel_written
            && system_ok == total_system
            && total_system > 0
        {
            sentinel_written = write_sentinel(store, &agent.version.boot_id, &mut log_file);
        }
        if let Some(out) = &out {
            out.send(
                Event::ScriptFinished {
                    index,
                    name: script.name.clone(),
                    state: state_of.clone(),
                },
                &[],
            )
            .await;
        }
        outcomes.push(ScriptOutcome {
            name: script.name.clone(),
            run_on: script.run_on,
            order: script.order,
            state: state_of,
        });
    }
    if trigger == Trigger::Host && !sentinel_written && total_system == 0 && failed.is_none() {
        write_sentinel(store, &agent.version.boot_id, &mut log_file);
    }
    let result = ProvisionResult {
        ok: failed.is_none(),
        scripts: outcomes,
        failed,
        log: log_path.display().to_string(),
    };
    let record = RunRecord {
        trigger,
        boot_id: agent.version.boot_id.clone(),
        started_unix_ms: started_ms,
        finished_unix_ms: system::now_unix_ms(),
        result: result.clone(),
    };
    if let Err(e) = store.record(record) {
        log!("cannot record the run: {e}");
    }
    // Every boot script has now run on this boot (a host run runs them all
    // unless one failed).
    if result.ok
        && let Err(e) = store.mark_boot_scripts_ran(&agent.version.boot_id)
    {
        log!("cannot record the boot run: {e}");
    }
    store.prune_logs(kind);
    agent.runs.running.store(false, Ordering::SeqCst);
    result
}

fn write_sentinel(store: &ProvisionStore, boot_id: &str, log_file: &mut LogFile) -> bool {
    match store.write_sentinel(system::now_unix_ms(), boot_id) {
        Ok(()) => {
            log_file.line("--- system provisioning complete");
            true
        }
        Err(e) => {
            log!("cannot write {}: {e}", store.sentinel().display());
            false
        }
    }
}

async fn run_script(
    ctx: Option<&Ctx>,
    out: Option<Outbox>,
    index: usize,
    script: &Script,
    log_file: &mut LogFile,
) -> ExitStatus {
    let spec = Spec {
        program: "/bin/sh".to_string(),
        args: vec!["-c".to_string(), script.content.clone()],
        env: vec![("RUM_SCRIPT".to_string(), script.name.clone())],
        cwd: None,
        user: None,
        stdin: false,
    };
    let mut child = match exec::spawn(&spec) {
        Ok(c) => c,
        Err(e) => {
            log_file.line(&format!("cannot start /bin/sh: {e}"));
            return ExitStatus {
                code: Some(127),
                ..Default::default()
            };
        }
    };
    let pid = child.id().unwrap_or(0);
    let (log_tx, mut log_rx) = mpsc::unbounded_channel();
    let pumps = vec![
        exec::pump(
            child.stdout.take(),
            out.clone(),
            Stream::Script {
                index,
                stream: OutputStream::Stdout,
            },
            Some(log_tx.clone()),
        ),
        exec::pump(
            child.stderr.take(),
            out,
            Stream::Script {
                index,
                stream: OutputStream::Stderr,
            },
            Some(log_tx),
        ),
    ];
    let cancelled = async {
        match ctx {
            Some(ctx) => ctx.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let status = {
        let wait = exec::wait(&mut child, pid, None, pumps, cancelled);
        tokio::pin!(wait);
        // Write the log while the script runs.
        loop {
            tokio::select! {
                status = &mut wait => break status,
                Some(data) = log_rx.recv() => log_file.write(&data),
            }
        }
    };
    while let Ok(data) = log_rx.try_recv() {
        log_file.write(&data);
    }
    status
}
