//! Provisioning: ordered `sh -c` scripts, the system-provisioned sentinel,
//! the script cache, logs, and the boot run.
//!
//! The state root (default `/var/lib/rum`):
//!
//! ```text
//! .system-provisioned   written once every system script has succeeded
//! scripts/manifest.json the last provisioned list, in run order
//! scripts/NNN-name.sh   each script's content
//! logs/host-<ms>.log    one log per run (host = a provision call,
//! logs/boot-<ms>.log      boot = the agent's own run at boot)
//! results.json          the last run of each kind
//! boot-scripts-ran      the boot id whose boot scripts have run
//! ```
//!
//! At start the agent runs the cached boot scripts once per boot (unless a
//! run already covered this boot), with or without a host — provided
//! system provisioning completed (or there are no system scripts).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rum_agent::protocol::{
    CachedScript, ErrorKind, Event, ExitStatus, FailedScript, OutputStream, ProvisionRequest,
    ProvisionResult, RunOn, RunRecord, Script, ScriptOutcome, ScriptState, Status, Trigger,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::call::{Ctx, Outbox, error};
use super::exec::{self, Spec, Stream};
use super::{Agent, log, system};

/// Logs kept per trigger.
const KEEP_LOGS: usize = 20;

/// The state root and what serialises runs.
pub struct State {
    root: PathBuf,
    lock: tokio::sync::Mutex<()>,
    running: AtomicBool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    scripts: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestEntry {
    name: String,
    order: i64,
    run_on: RunOn,
    /// File name under `scripts/`.
    file: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Results {
    last_provision: Option<RunRecord>,
    last_boot_run: Option<RunRecord>,
}

impl State {
    pub fn open(root: &Path) -> io::Result<State> {
        for dir in [root.to_path_buf(), root.join("scripts"), root.join("logs")] {
            fs::create_dir_all(&dir)?;
        }
        fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
        Ok(State {
            root: root.to_path_buf(),
            lock: tokio::sync::Mutex::new(()),
            running: AtomicBool::new(false),
        })
    }

    fn sentinel(&self) -> PathBuf {
        self.root.join(".system-provisioned")
    }

    fn scripts_dir(&self) -> PathBuf {
        self.root.join("scripts")
    }

    fn manifest(&self) -> Manifest {
        fs::read(self.scripts_dir().join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn results(&self) -> Results {
        fs::read(self.root.join("results.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn boot_scripts_ran_for(&self) -> Option<String> {
        fs::read_to_string(self.root.join("boot-scripts-ran"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    fn record(&self, record: RunRecord) -> io::Result<()> {
        let mut results = self.results();
        match record.trigger {
            Trigger::Host => results.last_provision = Some(record),
            Trigger::Boot => results.last_boot_run = Some(record),
        }
        let json = serde_json::to_vec_pretty(&results).expect("results serialize");
        write_atomic(&self.root.join("results.json"), &json, 0o644)
    }

    /// Replaces the cache with `scripts` (already in run order).
    fn cache(&self, scripts: &[Script]) -> io::Result<()> {
        let dir = self.scripts_dir();
        let mut manifest = Manifest::default();
        for (i, s) in scripts.iter().enumerate() {
            let file = format!("{i:03}-{}.sh", sanitize(&s.name));
            write_atomic(&dir.join(&file), s.content.as_bytes(), 0o700)?;
            manifest.scripts.push(ManifestEntry {
                name: s.name.clone(),
                order: s.order,
                run_on: s.run_on,
                file,
            });
        }
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        write_atomic(&dir.join("manifest.json"), &json, 0o644)?;
        for entry in fs::read_dir(&dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name != "manifest.json" && !manifest.scripts.iter().any(|s| s.file == name) {
                let _ = fs::remove_file(dir.join(name));
            }
        }
        Ok(())
    }

    fn cached_boot_scripts(&self, manifest: &Manifest) -> io::Result<Vec<Script>> {
        manifest
            .scripts
            .iter()
            .filter(|e| e.run_on == RunOn::Boot)
            .map(|e| {
                Ok(Script {
                    name: e.name.clone(),
                    content: fs::read_to_string(self.scripts_dir().join(&e.file))?,
                    order: e.order,
                    run_on: e.run_on,
                })
            })
            .collect()
    }
}

/// A `provision` call: cache the scripts, run them, report as they go.
pub async fn host_run(ctx: &mut Ctx, req: ProvisionRequest) -> Event {
    let state = &ctx.agent.state;
    let _guard = tokio::select! {
        guard = state.lock.lock() => guard,
        () = ctx.cancelled() => return error(ErrorKind::Cancelled, "cancelled while waiting for another run"),
    };
    let mut scripts = req.scripts;
    scripts.sort_by_key(|s| s.order);
    if let Err(e) = state.cache(&scripts) {
        return error(ErrorKind::Failed, format!("cannot cache the scripts: {e}"));
    }
    let result = run_list(&ctx.agent, Some(ctx), &scripts, Trigger::Host).await;
    Event::Provisioned(result)
}

/// At agent start: run the cached boot scripts if this boot has not had them.
pub async fn boot_run(agent: &Agent) {
    let state = &agent.state;
    let _guard = state.lock.lock().await;
    let boot_id = &agent.version.boot_id;
    if state.boot_scripts_ran_for().as_deref() == Some(boot_id.as_str()) {
        return;
    }
    let manifest = state.manifest();
    let has_system = manifest.scripts.iter().any(|s| s.run_on == RunOn::System);
    if !manifest.scripts.iter().any(|s| s.run_on == RunOn::Boot) {
        return;
    }
    if has_system && !state.sentinel().exists() {
        log!("boot scripts not run: system provisioning has not completed");
        return;
    }
    let scripts = match state.cached_boot_scripts(&manifest) {
        Ok(s) => s,
        Err(e) => {
            log!("cannot read the cached boot scripts: {e}");
            return;
        }
    };
    log!("running {} cached boot scripts", scripts.len());
    let result = run_list(agent, None, &scripts, Trigger::Boot).await;
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

/// Runs `scripts` in order, stopping at the first failure; writes the
/// sentinel once every system script succeeded; records the run.
async fn run_list(
    agent: &Agent,
    ctx: Option<&Ctx>,
    scripts: &[Script],
    trigger: Trigger,
) -> ProvisionResult {
    let state = &agent.state;
    state.running.store(true, Ordering::SeqCst);
    let started_ms = system::now_unix_ms();
    let kind = match trigger {
        Trigger::Host => "host",
        Trigger::Boot => "boot",
    };
    let log_path = state
        .root
        .join("logs")
        .join(format!("{kind}-{started_ms}.log"));
    let mut log_file = LogFile::create(&log_path);
    let out = ctx.map(|c| c.out.clone());
    let sentinel_present = state.sentinel().exists();
    let total_system = scripts.iter().filter(|s| s.run_on == RunOn::System).count();
    let mut system_ok = 0;
    let mut sentinel_written = sentinel_present;
    let mut failed: Option<FailedScript> = None;
    let mut outcomes = Vec::new();

    for (index, script) in scripts.iter().enumerate() {
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
            sentinel_written = write_sentinel(state, &agent.version.boot_id, &mut log_file);
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
        write_sentinel(state, &agent.version.boot_id, &mut log_file);
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
    if let Err(e) = state.record(record) {
        log!("cannot record the run: {e}");
    }
    // Every boot script has now run on this boot (a host run runs them all
    // unless one failed).
    if result.ok
        && let Err(e) = write_atomic(
            &state.root.join("boot-scripts-ran"),
            agent.version.boot_id.as_bytes(),
            0o644,
        )
    {
        log!("cannot record the boot run: {e}");
    }
    prune_logs(&state.root.join("logs"), kind);
    state.running.store(false, Ordering::SeqCst);
    result
}

fn write_sentinel(state: &State, boot_id: &str, log_file: &mut LogFile) -> bool {
    let content = format!("{} {boot_id}\n", system::now_unix_ms());
    match write_atomic(&state.sentinel(), content.as_bytes(), 0o644) {
        Ok(()) => {
            log_file.line("--- system provisioning complete");
            true
        }
        Err(e) => {
            log!("cannot write {}: {e}", state.sentinel().display());
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

/// Provisioning state for the `status` call.
pub fn status(agent: &Agent) -> Event {
    let state = &agent.state;
    let manifest = state.manifest();
    let results = state.results();
    Event::Status(Box::new(Status {
        agent: agent.version.clone(),
        state_dir: state.root.display().to_string(),
        system_provisioned: state.sentinel().exists(),
        scripts: manifest
            .scripts
            .into_iter()
            .map(|e| CachedScript {
                path: state.scripts_dir().join(&e.file).display().to_string(),
                name: e.name,
                order: e.order,
                run_on: e.run_on,
            })
            .collect(),
        running: state.running.load(Ordering::SeqCst),
        boot_scripts_ran_for: state.boot_scripts_ran_for(),
        last_provision: results.last_provision,
        last_boot_run: results.last_boot_run,
    }))
}

/// A run's log; write errors are reported once and otherwise ignored.
struct LogFile {
    file: Option<fs::File>,
}

impl LogFile {
    fn create(path: &Path) -> LogFile {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path);
        LogFile {
            file: match file {
                Ok(f) => Some(f),
                Err(e) => {
                    log!("cannot write {}: {e}", path.display());
                    None
                }
            },
        }
    }

    fn write(&mut self, data: &[u8]) {
        if let Some(f) = &mut self.file
            && f.write_all(data).is_err()
        {
            self.file = None;
        }
    }

    fn line(&mut self, text: &str) {
        self.write(format!("{text}\n").as_bytes());
    }
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("rum-tmp");
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A file-name-safe version of a script name.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() {
        "script".to_string()
    } else {
        s
    }
}

fn prune_logs(dir: &Path, kind: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{kind}-");
    let mut logs: Vec<(i64, PathBuf)> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let ms = name
                .strip_prefix(&prefix)?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((ms, path))
        })
        .collect();
    logs.sort();
    let excess = logs.len().saturating_sub(KEEP_LOGS);
    for (_, path) in logs.into_iter().take(excess) {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_safe_file_names() {
        assert_eq!(sanitize("drives & fs/0"), "drives___fs_0");
        assert_eq!(sanitize(""), "script");
    }
}
